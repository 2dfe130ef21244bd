/*
 * proj_int.h - what the files of projections/ share among themselves.
 *
 * No other module includes this header. proj.h describes the layout on disk
 * and the threads; this file gives the in-memory objects and who locks what.
 *
 * Lock order: mgr->admin_mu, then mgr->mu, then mgr->cat_mu, then p->mu.
 * mgr->wake_mu is taken alone (never with another lock held), so
 * proj_notify() never waits behind a worker's work.
 */
#ifndef PROJ_INT_H
#define PROJ_INT_H

#include <assert.h>
#include <jansson.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "proj.h"

#define PROJ__FORMAT "annals-view-1"
#define PROJ__CAT_HDR 16u           /* catalog value: cur gen, next gen */
#define PROJ__VIEW_MAP_DEFAULT (8ull << 30)

/* ---- small helpers (proj_view.c) ---- */

uint64_t proj__be64_get(const uint8_t *p);
void proj__be64_put(uint8_t *p, uint64_t v);
void proj__detail(char *detail, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An LMDB code as an AN_E* code, with `what` and the reason in detail. */
int proj__from_mdb(int mdb_rc, const char *what, char *detail);
/* Removes a directory tree; 0 or AN_EIO (errno logged in detail). */
int proj__rm_rf(const char *dir);
void proj__say(proj_mgr *mgr, enum proj_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int64_t proj__now_ns(void);
/* Tells the server that waiting queries may now be answered (on_advance). */
void proj__advanced(proj_mgr *mgr);

/* ---- a compiled definition (proj_def.c) ---- */

enum proj__key_mode {
    PROJ__KEY_NONE = 0,       /* STREAM_STATE, STREAMS: the stream name */
    PROJ__KEY_TYPE,
    PROJ__KEY_STREAM,
    PROJ__KEY_CATEGORY,
    PROJ__KEY_POINTER,
};

struct proj__def {
    Annals__V1__ProjectionKind kind;
    enum proj__key_mode key_mode;
    const char *key_ptr;      /* PROJ__KEY_POINTER: into the definition */
    const char *sum_ptr;      /* NULL: no sum */
    bool latest_only;
    struct log_filter filter; /* arrays into the definition */
    bool dollar_prefix;       /* some prefix starts with '$' */
};

/* Fills cd from a validated def; cd points into def (which must outlive it). */
void proj__compile(const Annals__V1__ProjectionDefinition *def, struct proj__def *cd);

/*
 * A copy of def with only its known fields, packed. *out is malloc'd
 * (caller frees). Returns 0 or AN_ENOMEM.
 */
int proj__def_pack(const Annals__V1__ProjectionDefinition *def, uint8_t **out,
                   size_t *len_out);

/*
 * RFC 6901: the value at ptr in doc (borrowed from doc), or NULL.
 * ptr is a validated, non-empty pointer.
 */
json_t *proj__pointer_get(json_t *doc, const char *ptr);

/* ---- a view env, one generation (proj_view.c) ---- */

/*
 * Refcounted: the projection holds one reference on cur and one on next;
 * a query holds one while it reads. The last release closes the env, and
 * removes its directory if it was doomed (replaced or deleted).
 */
#define PROJ__POOL 16u

/* A read txn and its cursor, reset between uses. */
struct proj__rtxn {
    MDB_txn *txn;
    MDB_cursor *c;
};

struct proj_view {
    MDB_env *env;
    MDB_dbi dbi_view;
    MDB_dbi dbi_meta;
    uint64_t gen;
    char *dir;
    atomic_int refs;
    atomic_bool doomed;
    bool latest_only;
    /* Reset read txns that queries renew instead of beginning new ones.
     * Access to n_pool and pool is protected by pool_mu. */
    pthread_mutex_t pool_mu;
    unsigned n_pool;
    struct proj__rtxn pool[PROJ__POOL];
    /* Access to these is protected by the owning proj's mu (the worker
     * writes them after each commit). */
    uint64_t checkpoint;
    uint64_t applied;
};

/*
 * Opens (creating if needed) DIR/views/NAME.GEN and reads its checkpoint.
 * fresh: remove whatever is there first. Returns 0 or an AN_E* code.
 */
int proj__view_open(proj_mgr *mgr, const char *name, uint64_t gen, bool latest_only,
                    bool fresh, struct proj_view **out, char *detail);
void proj__view_ref(struct proj_view *v);
void proj__view_release(struct proj_view *v);
/* Key || position into out (PROJ_KEY_MAX + 8 bytes). */
void proj__vkey(uint8_t *out, const void *key, size_t len, uint64_t pos);
/*
 * The newest version of key at a position <= bound, through c (any txn).
 * Returns 0 (*val, *pos set; val borrowed from the txn), AN_ENOTFOUND, or
 * an AN_E* code.
 */
int proj__view_seek(MDB_cursor *c, const void *key, size_t len, uint64_t bound,
                    MDB_val *val, uint64_t *pos);

/*
 * The read side: one entry as of bound (UINT64_MAX: the newest), or a scan
 * as of as_of (present: as of the checkpoint the read txn sees). Each runs
 * in its own read txn. Returns as proj_get / proj_scan.
 */
int proj__view_get(struct proj_view *v, const char *key, size_t key_len, uint64_t bound,
                   Annals__V1__ViewEntry **out);
int proj__view_scan(struct proj_view *v, const struct proj_scan *q, bool present,
                    uint64_t as_of, proj_entry_fn fn, void *arg, uint64_t *at_out,
                    bool *more_out);

/* ---- a projection ---- */

struct proj {
    char name[PROJ_NAME_MAX + 1];
    proj_mgr *mgr;
    Annals__V1__ProjectionDefinition *def;  /* owned (protobuf-c default allocator) */
    uint8_t *def_packed;                    /* owned; what the catalog holds */
    size_t def_len;
    struct proj__def cd;                    /* points into def */
    atomic_int refs;          /* the manager's list, each query, each admin call */
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;         /* the worker returns at its next check */
    atomic_uint kick;         /* bumped by proj_rebuild */
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* checkpoint advanced, or deleted/closing (MONOTONIC) */
    /* Access to the fields below is protected by mu. cur and next change
     * only on the worker (swap, drop) or with the worker stopped, except
     * that proj_rebuild sets next while it is NULL. */
    struct proj_view *cur;
    struct proj_view *next;   /* the view being rebuilt; NULL: none */
    bool cur_faulted;         /* the worker stopped applying to cur */
    bool deleted;             /* waiting queries return AN_ENOTFOUND */
    uint64_t gen_cur;         /* the catalog's generations */
    uint64_t gen_next;
    char error[PROJ_DETAIL_MAX];
    struct proj *link;        /* the manager's list (under mgr->mu) */
};

void proj__ref(struct proj *p);
void proj__release(struct proj *p);

struct proj_mgr {
    struct proj_cfg cfg;      /* cfg.dir points at dir */
    char *dir;
    log_env *log;
    MDB_env *cat;
    MDB_dbi dbi_defs;
    pthread_mutex_t admin_mu; /* serializes create, rebuild, delete */
    pthread_mutex_t mu;       /* protects list, n, calls; closing is set under it */
    pthread_cond_t calls_cv;  /* calls dropped to 0 (proj_close waits) */
    struct proj *list;
    unsigned n;
    unsigned calls;
    atomic_bool closing;      /* read without mu by waiting queries */
    pthread_mutex_t cat_mu;   /* catalog write txns */
    pthread_mutex_t wake_mu;  /* with wake_cv: the workers' sleep */
    pthread_cond_t wake_cv;
    _Atomic uint64_t head;    /* the newest durable head notified */
};

/* ---- the catalog (proj_mgr.c) ---- */

/* Generations are 1.. below this (a rebuild takes the highest plus one). */
#define PROJ__GEN_LIMIT (1ull << 62)

/*
 * One catalog entry read back (key: the name; value: be64 current
 * generation, be64 rebuild generation or 0, the packed definition) as a
 * new projection with one reference, no view open and no worker. Nothing
 * is trusted: 0, or AN_ECORRUPT with detail (PROJ_DETAIL_MAX) when the
 * value is short, the definition does not decode or is not valid, names
 * another projection, or the generations are out of range or equal;
 * AN_ENOMEM. tests/fuzz/fuzz_proj_catalog.c drives it.
 */
int proj__cat_decode(proj_mgr *mgr, const void *key, size_t klen, const void *val, size_t vlen,
                     struct proj **out, char *detail);

/* Sets NAME's generations in the catalog (synced). 0 or an AN_E* code. */
int proj__cat_set_gens(proj_mgr *mgr, struct proj *p, uint64_t cur, uint64_t next,
                       char *detail);

/* ---- the worker (proj_worker.c) ---- */

/* Starts p's worker thread. 0 or AN_ENOMEM. */
int proj__worker_start(struct proj *p);
/* Sets stop, wakes and joins the worker. Accepts a never-started one. */
void proj__worker_stop(struct proj *p);
/* Wakes every worker (wake_mu + broadcast). */
void proj__wake_all(proj_mgr *mgr);

#endif /* PROJ_INT_H */

/*
 * log_int.h - what the files of server/log/ share among themselves.
 *
 * No other module includes this header. log.h describes the on-disk layout;
 * this file gives its byte-level form and the env's private state.
 */
#ifndef LOG_INT_H
#define LOG_INT_H

#include <assert.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "log.h"

/* ---- byte order ---- */

uint64_t log__be64_get(const uint8_t *p);
void log__be64_put(uint8_t *p, uint64_t v);
uint64_t log__le64_get(const uint8_t *p);
void log__le64_put(uint8_t *p, uint64_t v);

/* ---- the stream index (log_index.c) ---- */

/* streams: name -> head */
#define LOG__HEAD_BYTES 32u
struct log__head {
    uint64_t sid;             /* the position of the stream's first event */
    uint64_t last_version;    /* last version ever written */
    uint64_t last_run;        /* position of its latest run */
    uint64_t last_del;        /* position of its latest deletion; 0: none */
};

/*
 * A stored event: events[position] = [u8 h][h bytes: the run record when
 * the event starts a run, else none (h == 0)][packed RecordedEvent].
 */
#define LOG__RUN_BYTES 52u
struct log__run {
    uint64_t position;        /* of its first event (the key) */
    uint64_t sid;
    uint64_t first_version;
    uint32_t count;
    uint64_t depth;           /* 0 for the stream's first run */
    uint64_t parent;          /* position of the run before; 0: none */
    uint64_t jump;            /* skew-binary jump target; 0: none */
    uint64_t jump_depth;
};

/* dels: (sid BE, position BE) -> (last_version LE, tombstone u8) */
#define LOG__DEL_BYTES 9u
struct log__del {
    uint64_t position;
    uint64_t last_version;    /* versions <= this are hidden */
    bool tombstone;
};

/* A stream's state as of a position bound. */
struct log__sstate {
    bool exists;              /* has an event at or before the bound */
    uint64_t sid;
    struct log__head head;    /* latest, whatever the bound */
    int64_t last_version;     /* as of the bound; -1: none */
    uint64_t last_position;   /* position of last_version */
    struct log__run run;      /* the run holding last_version */
    bool has_del;             /* a deletion at or before the bound */
    struct log__del del;
    bool tombstoned;
};

void log__head_decode(const MDB_val *v, struct log__head *h);
void log__head_encode(const struct log__head *h, uint8_t out[LOG__HEAD_BYTES]);
void log__run_encode(const struct log__run *r, uint8_t out[LOG__RUN_BYTES]);

/* The head of a stream: 0, AN_ENOTFOUND, AN_ECORRUPT. */
int log__head_get(const log_env *env, MDB_txn *txn, const char *name, size_t len,
                  struct log__head *h);
/* The run starting at pos (read from the header of the event there): 0,
 * AN_ECORRUPT (missing, or that event starts no run). */
int log__run_get(const log_env *env, MDB_txn *txn, uint64_t pos, struct log__run *r);
/* Fills r's depth, parent and jump for a run appended after `parent` (NULL:
 * the stream's first run). */
int log__run_link(const log_env *env, MDB_txn *txn, const struct log__run *parent,
                  struct log__run *r);
/* The last run in from's chain whose first version (or first position) is
 * <= target: 0, AN_ENOTFOUND (none), AN_ECORRUPT. */
int log__run_find(const log_env *env, MDB_txn *txn, const struct log__run *from, bool by_position,
                  uint64_t target, struct log__run *out);
/* The deletion record of sid at pos. */
int log__del_get(const log_env *env, MDB_txn *txn, uint64_t sid, uint64_t pos,
                 struct log__del *d);
/* A stream's state as of bound (UINT64_MAX: latest): 0, AN_ENOTFOUND, ... */
int log__stream_state(const log_env *env, MDB_txn *txn, const char *name, size_t len,
                      uint64_t bound, struct log__sstate *out);
/* The position of a version visible in st. */
int log__version_position(const log_env *env, MDB_txn *txn, const struct log__sstate *st,
                          uint64_t version, uint64_t *pos);

/* ---- the env ---- */

struct log_env {
    MDB_env *mdb;
    MDB_dbi dbi_events;
    MDB_dbi dbi_streams;
    MDB_dbi dbi_dels;
    MDB_dbi dbi_ids;
    char *dir;
    uint64_t max_size_bytes;      /* 0: no cap */
    uint32_t max_event_bytes;
    uint32_t max_request_bytes;
    unsigned page_bytes;

    /*
     * Readers hold map_lock shared between log_reader_begin and _end; the
     * writer holds it exclusive only while it resizes the map, since
     * mdb_env_set_mapsize must not run under a live read transaction.
     */
    pthread_rwlock_t map_lock;
    _Atomic uint64_t map_bytes;

    /* ---- writer state: touched by the writer thread only ---- */
    uint64_t w_head;              /* last committed position */
    int64_t w_last_ts;            /* recorded_at of w_head's event */
    uint64_t w_seq;               /* last commit's sequence number */
    uint64_t w_pending_head;      /* head of the last commit, maybe not durable */
    bool w_durable;               /* log_commit_durable is running */
    uint64_t w_uuid_ms;           /* UUIDv7 monotonic state */
    unsigned w_uuid_seq;
    uint64_t w_rng;               /* xorshift state for UUID randomness */
    uint8_t *w_state;             /* per-op scratch for log_commit */
    size_t w_state_cap;
    struct log__sstate *w_streams;  /* per-stream scratch for one append */
    size_t w_streams_cap;
    /* preallocation (log_prealloc): an O_DIRECT descriptor of data.mdb
     * (-1: none, or given up), its aligned chunk of zeros, the file's size
     * as last seen, and when to try again after a failure */
    int pre_fd;
    void *pre_zeros;
    uint64_t pre_end;
    int64_t pre_retry_ms;

    /* ---- published by the writer (release), read by anyone (acquire);
     * the durable pair also by log_sync_through on any thread, so they
     * are only ever raised, the head first (log__raise_durable) ---- */
    _Atomic uint64_t durable_head;
    _Atomic uint64_t durable_seq;
    _Atomic uint64_t committed_seq;
    _Atomic uint64_t committed_head;
};

/* A reader: one read txn handle, renewed per batch, and its cursors. */
struct log_reader {
    log_env *env;
    MDB_txn *txn;
    MDB_cursor *c_events;
    bool active;
    uint64_t head;                /* durable head loaded at begin */
    char detail[LOG_DETAIL_MAX];
};

/* Grows the map; no transaction of this process may be live. 0, or AN_EFULL
 * at the cap with a detail naming it. Writer thread only. */
int log__grow(log_env *env, char *detail);

/* Raises *a to v if it is below (compare-and-swap; release). */
void log__raise(_Atomic uint64_t *a, uint64_t v);
/* Commit seq, whose head is head, is durable: raises durable_head, then
 * durable_seq (log_env.c says why in that order). Any thread. */
void log__raise_durable(log_env *env, uint64_t seq, uint64_t head);

/* Converts an LMDB or errno code into an AN_E* code, with a detail. */
int log__from_mdb(int mdb_rc, const char *what, char *detail);

/* Writes a printf-style message into a LOG_DETAIL_MAX buffer (NULL: no-op). */
void log__detail(char *detail, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- codec (log_codec.c) ---- */

/* log_event_peek of a stored events value (skips its run header). */
int log__peek_value(const void *data, size_t size, struct log_event *out);

/* Fresh UUIDv7 into out[16]; writer state. */
void log__uuid7(log_env *env, uint8_t out[16]);
uint64_t log__rng_next(uint64_t *state);
void log__rng_seed(uint64_t *state);
int64_t log__now_ns(void);

/* Writes JSON-escaped s into buf; returns bytes written, or -1 if cap is short. */
long log__json_escape(char *buf, size_t cap, const char *s, size_t len);


#endif /* LOG_INT_H */

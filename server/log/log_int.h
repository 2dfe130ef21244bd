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

/* ---- sindex keys and values ---- */

#define LOG__KIND_RUN 0u
#define LOG__KIND_DEL 1u
#define LOG__SKEY_BYTES 17u

/* (sid BE, kind, number BE): one cursor walks a stream's runs in version
 * order, then its deletions in position order. */
struct log__skey {
    uint8_t b[LOG__SKEY_BYTES];
};

/* run value: first_position (u64 LE), count (u32 LE) */
#define LOG__RUN_BYTES 12u
/* deletion value: last_version (u64 LE), tombstone (u8) */
#define LOG__DEL_BYTES 9u

void log__skey_pack(struct log__skey *k, uint64_t sid, unsigned kind, uint64_t num);
uint64_t log__be64_get(const uint8_t *p);
void log__be64_put(uint8_t *p, uint64_t v);
uint64_t log__le64_get(const uint8_t *p);
void log__le64_put(uint8_t *p, uint64_t v);

/* ---- the env ---- */

struct log_env {
    MDB_env *mdb;
    MDB_dbi dbi_events;
    MDB_dbi dbi_streams;
    MDB_dbi dbi_sindex;
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
    uint64_t w_uuid_ms;           /* UUIDv7 monotonic state */
    unsigned w_uuid_seq;
    uint64_t w_rng;               /* xorshift state for UUID randomness */
    uint8_t *w_state;             /* per-op scratch for log_commit */
    size_t w_state_cap;
    struct log__wstream *w_streams; /* per-stream scratch for one append */
    size_t w_streams_cap;

    /* ---- published by the writer (release), read by anyone (acquire) ---- */
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
    MDB_cursor *c_sindex;
    bool active;
    uint64_t head;                /* durable head loaded at begin */
    char detail[LOG_DETAIL_MAX];
};

/* Grows the map; no transaction of this process may be live. 0, or AN_EFULL
 * at the cap with a detail naming it. Writer thread only. */
int log__grow(log_env *env, char *detail);

/* Converts an LMDB or errno code into an AN_E* code, with a detail. */
int log__from_mdb(int mdb_rc, const char *what, char *detail);

/* Writes a printf-style message into a LOG_DETAIL_MAX buffer (NULL: no-op). */
void log__detail(char *detail, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the stream index (log_read.c), used by reads and the writer ---- */

/* A stream's state as of a position bound. */
struct log__sstate {
    bool exists;                  /* has an event at or before the bound */
    uint64_t sid;
    int64_t last_version;         /* -1: none as of the bound */
    uint64_t last_position;       /* position of last_version */
    bool has_del;                 /* a deletion at or before the bound */
    uint64_t del_position;
    uint64_t del_version;         /* versions <= this are hidden */
    bool tombstoned;
};

/* Looks a stream name up: 0 and *sid, or AN_ENOTFOUND. */
int log__stream_sid(const log_env *env, MDB_txn *txn, const char *name, size_t len,
                    uint64_t *sid);

/* A stream's state as of `bound` (UINT64_MAX: latest), via cursor `c` on sindex. */
int log__stream_state(const log_env *env, MDB_txn *txn, MDB_cursor *c, const char *name,
                      size_t len, uint64_t bound, struct log__sstate *out);

/* The position of (sid, version): 0 and *pos, or AN_ENOTFOUND. */
int log__version_position(MDB_cursor *c, uint64_t sid, uint64_t version, uint64_t *pos);

/* ---- codec (log_codec.c) ---- */

/* Fresh UUIDv7 into out[16]; writer state. */
void log__uuid7(log_env *env, uint8_t out[16]);
uint64_t log__rng_next(uint64_t *state);
void log__rng_seed(uint64_t *state);
int64_t log__now_ns(void);

/* Writes JSON-escaped s into buf; returns bytes written, or -1 if cap is short. */
long log__json_escape(char *buf, size_t cap, const char *s, size_t len);

/* Percent-encodes bytes outside 0x20..0x7E and '%' (for details and metadata). */
void log__printable(char *out, size_t cap, const char *s, size_t len);

#endif /* LOG_INT_H */

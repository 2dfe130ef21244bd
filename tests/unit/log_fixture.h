/*
 * log_fixture.h - shared helpers for the log engine's Criterion tests.
 *
 * Each test runs against a real LMDB environment in a fresh directory made
 * with mkdtemp under /tmp and removed afterwards (no mocks). The fixture
 * keeps one env and one reader per test process (Criterion forks each test),
 * builds AppendRequests from protobuf-c structs, commits single ops with
 * their rc asserted, and collects read results into unpacked copies that
 * stay valid after log_reader_end().
 *
 * Ownership: everything an fx_* / rq_* constructor returns is owned by the
 * caller and freed with the matching *_free. Criterion asserts abort the
 * test process, so a failing test may leak; a passing one frees everything.
 */
#ifndef LOG_FIXTURE_H
#define LOG_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define FX_EXPECT_ANY ANNALS__V1__EXPECTATION__EXPECT_ANY
#define FX_EXPECT_NO_STREAM ANNALS__V1__EXPECTATION__EXPECT_NO_STREAM
#define FX_EXPECT_EXISTS ANNALS__V1__EXPECTATION__EXPECT_STREAM_EXISTS
#define FX_EXPECT_VERSION ANNALS__V1__EXPECTATION__EXPECT_VERSION

/* Read bound meaning "the reader's head", resolved inside the snapshot. */
#define FX_HEAD UINT64_MAX

/* Max streams per request the fixture's result arrays hold. */
#define FX_MAX_STREAMS 64

/* ---- the env under test ---- */

struct fx {
    char dir[64];             /* the mkdtemp directory */
    struct log_cfg cfg;       /* cfg.dir points at dir */
    log_env *env;
    log_reader *rd;
};

/* The current test's env (one per test process). */
extern struct fx fx;

/* Criterion .init/.fini: a fresh env with default limits / close and rm -r. */
void fx_setup(void);
void fx_teardown(void);

/* Opens the env with these limits (cfg->dir is ignored); asserts success. */
void fx_open_cfg(const struct log_cfg *cfg);
/* Closes the reader and the env (the directory stays). */
void fx_close(void);
/* Drops the current env and its directory, then opens cfg in a new one
 * (limits such as initial_map_bytes and max_readers apply only to a new
 * env: LMDB sizes an existing map and lock file from the files). */
void fx_fresh(const struct log_cfg *cfg);
/* fx_close then open again with the same cfg. */
void fx_reopen(void);
/* Removes a directory tree (used by fx_teardown). */
void fx_rm_rf(const char *dir);

/* ---- building requests ---- */

/* An empty AppendRequest (n_streams 0). */
Annals__V1__AppendRequest *rq_new(void);
/* Adds a stream to r; name is copied (any bytes; len given for odd names). */
Annals__V1__StreamAppend *rq_stream(Annals__V1__AppendRequest *r, const char *name,
                                    Annals__V1__Expectation expect, uint64_t version);
Annals__V1__StreamAppend *rq_stream_n(Annals__V1__AppendRequest *r, const char *name,
                                      size_t len);
/*
 * Adds an event to s: type copied; id_seed 0 gives an empty id (the server
 * assigns one), otherwise the 16-byte fx_id(id_seed); data copied (NULL: none).
 */
Annals__V1__EventData *rq_event(Annals__V1__StreamAppend *s, const char *type,
                                uint64_t id_seed, const char *data);
/* Replaces an event's data with n bytes of a pattern derived from seed. */
void rq_set_data(Annals__V1__EventData *e, size_t n, uint64_t seed);
/* Replaces an event's id with len raw bytes (len 0: empty). */
void rq_set_id(Annals__V1__EventData *e, const uint8_t *id, size_t len);
/* Replaces an event's type with len raw bytes. */
void rq_set_type(Annals__V1__EventData *e, const char *type, size_t len);
/* Frees r and everything the rq_* functions put in it. Accepts NULL. */
void rq_free(Annals__V1__AppendRequest *r);

/* One stream with n events of type `type`, ids fx_id(seed0 + i) (seed0 0: empty). */
Annals__V1__AppendRequest *rq_simple(const char *stream, Annals__V1__Expectation expect,
                                     uint64_t version, size_t n, const char *type,
                                     uint64_t seed0);

/* The deterministic 16-byte id for a seed. */
void fx_id(uint8_t out[16], uint64_t seed);
/* The deterministic data pattern rq_set_data writes. */
void fx_pattern(uint8_t *out, size_t n, uint64_t seed);

/* ---- committing ---- */

/* One op and the stream results it points at. */
struct fx_op {
    struct log_op op;
    struct log_stream_result sr[FX_MAX_STREAMS];
};

/* Fills o as an append op (principal "tester"). */
void fx_op_append(struct fx_op *o, const Annals__V1__AppendRequest *req);
/* Fills o as a delete op; del must outlive the commit. */
void fx_op_delete(struct fx_op *o, const Annals__V1__DeleteStreamRequest *del);

/*
 * Commits the ops in one log_commit, asserts it returned 0, then log_sync
 * (asserted) so the results are visible. Returns the commit's seq.
 */
uint64_t fx_commit(struct fx_op *ops, size_t n);

/*
 * Commits one append op alone and asserts op.rc == want_rc (with the detail
 * in the failure message). Syncs. Returns o->op.rc.
 */
int fx_append(const Annals__V1__AppendRequest *req, struct fx_op *o, int want_rc);

/* Appends n events (empty ids, EXPECT_ANY) to stream; asserts success;
 * returns the first position. */
uint64_t fx_put(const char *stream, size_t n, const char *type);

/* Deletes (or tombstones) a stream as one op and asserts op.rc == want_rc. */
int fx_delete(const char *stream, bool tombstone, Annals__V1__Expectation expect,
              uint64_t version, struct fx_op *o, int want_rc);

/* ---- reading ---- */

/* An event read back, unpacked (owned by the list). */
struct fx_ev {
    uint64_t position;
    uint64_t version;
    int64_t recorded_at_ns;
    Annals__V1__RecordedEvent *rec;
};

struct fx_evs {
    size_t n;
    size_t cap;
    struct fx_ev *v;
    size_t stop_after;        /* 0: take everything; k: callback stops at k */
    int bad;                  /* set when log_event disagreed with its bytes */
    char why[256];
};

/* A log_event_fn that unpacks into an fx_evs and checks the log_event's
 * fields against the packed bytes. */
bool fx_collect(void *arg, const struct log_event *ev);
void fx_evs_free(struct fx_evs *e);

/* Begin/read/end wrappers on fx.rd. as_of FX_HEAD: the snapshot's head.
 * Assert that every handed event matched its bytes. Return the read's rc. */
int fx_read_stream(struct log_stream_read q, struct fx_evs *out, uint64_t *next_version,
                   bool *done);
int fx_read_all(struct log_all_read q, struct fx_evs *out, uint64_t *next_position,
                bool *done);
/* log_get_stream / log_get_event in a snapshot. */
int fx_get_stream(const char *stream, uint64_t as_of, struct log_stream_info *out);
/* The unpacked event at a position (NULL if log_get_event failed; *rc gets it). */
Annals__V1__RecordedEvent *fx_get_event(uint64_t position, int *rc);

/* The whole log, positions 1..head, asserted gap-free and time-ordered. */
void fx_read_everything(struct fx_evs *out);

/* Whether the event's stream and type equal the given strings. */
bool fx_rec_is(const Annals__V1__RecordedEvent *rec, const char *stream, const char *type);

/* ---- small JSON reading for deletion events ---- */

/* Extracts a top-level string value by key into out (decoded, NUL-terminated). */
bool fx_json_str(const uint8_t *json, size_t len, const char *key, char *out, size_t cap);
/* Extracts a top-level unsigned integer value by key. */
bool fx_json_u64(const uint8_t *json, size_t len, const char *key, uint64_t *out);

#endif /* LOG_FIXTURE_H */

/*
 * log.h - the Annals event log: an append-only global log of events on LMDB.
 *
 * This is the public header of server/log/. Everything the rest of Annals
 * does with the log (the writer's group commit, every read, time travel)
 * goes through the functions below.
 *
 * ---- What it stores ----
 *
 * One LMDB environment (DIR/data.mdb) with these sub-databases:
 *
 *   events   u64 global position (MDB_INTEGERKEY) -> the packed RecordedEvent,
 *            exactly the bytes a read hands to gRPC, behind a small header
 *            (the run record, for the first event of a run). Always written
 *            with MDB_APPEND: positions are 1-based and gap-free.
 *   ids      16-byte event id -> u64 position. Ids are unique forever. The
 *            server makes UUIDv7 ids (time-ordered), so their inserts stay
 *            near the right edge of the tree instead of dirtying a random
 *            page per event.
 *   streams  stream name -> its head (32 bytes): stream id (the position
 *            of its first event), last version, latest run, latest deletion.
 *   (runs)   a run is the events one append gave one stream (consecutive
 *            versions at consecutive positions); its record, in the header
 *            of its first event, links it to the stream's earlier runs by a
 *            parent and a skew-binary jump, so any version is found in
 *            O(log n) lookups.
 *   dels     (stream id, position) -> one soft delete or tombstone, so reads
 *            as of any point know which versions were visible then.
 *   meta     the format name.
 *
 * What an append to an existing stream writes: the sequential tails of
 * `events` and `ids`, and one 32-byte row of `streams`, a table with
 * one small row per stream and so far denser than any per-event index. A
 * naive layout instead dirties a random leaf of a per-event index and one of
 * a stream table for each event. log_index.c has the details.
 *
 * ---- How an append is applied ----
 *
 * log_commit() takes a batch of requests (group commit) and runs them in one
 * write transaction. Each request is checked completely before it writes
 * anything: validation, ids (exact retry or conflict), tombstones,
 * expectations. Only when every check passes are its puts made, and puts can
 * then fail only for reasons that fail the whole transaction (map full, I/O).
 * So one request's failure never touches another's, without nested
 * transactions. On MDB_MAP_FULL the transaction is dropped, the map grown
 * (up to max_size_bytes) and the batch re-run from scratch; at the cap the
 * request that did not fit gets AN_EFULL and the others are committed.
 *
 * ---- Durability argument ----
 *
 * LMDB's default commit costs two syncs: the data pages, then the meta page
 * that makes them current. The env is opened with MDB_NOMETASYNC: a commit
 * writes and fdatasyncs its data pages, then writes its meta page without a
 * sync. LMDB stays consistent on power loss (the data pages a meta page
 * points to are always durable before it; at worst the last meta page is
 * lost and the env opens at the commit before it), but the last commit may
 * be rolled back. Commit k's meta page becomes durable with the next
 * fdatasync of the file: that of commit k+1's data pages, or log_sync().
 *
 * So a commit is acknowledged only when it is durable: log_commit() reports
 * each commit's sequence number and log_durable_seq() the latest durable
 * one. A writer under load hands commit k to another thread, which calls
 * log_sync_through(k): an fdatasync begun after k's meta page was written,
 * so it covers it, running while the writer makes commit k+1 (whose own
 * data sync would make k durable too; whichever ends first raises the
 * durable sequence). Pages the writer writes during that sync belong to
 * k+1, which no durable meta page points to until k+1's own data sync has
 * finished, so a sync that catches some of them proves nothing wrong. A
 * writer with nothing else queued commits with
 * log_commit_durable(), which switches MDB_NOMETASYNC off for that one
 * commit (LMDB allows it between transactions and keeps its O_DSYNC meta
 * descriptor open for it), and acknowledges at once: two syncs, as LMDB's
 * default. Readers are
 * bounded by the durable head as well (log_reader_head), so no client ever
 * sees an event that a power loss could take back.
 *
 * kill -9 loses nothing that write() reached; the crash tests in
 * tests/unit/test_log_crash.c check every acknowledged append after SIGKILL.
 *
 * ---- Threads ----
 *
 * One thread at a time calls the writing functions (log_commit, log_sync;
 * "the writer"). Any number of threads read, each with its own log_reader.
 * log_env itself may be shared by all of them. The writer must not hold a
 * begun reader of its own while it commits: growing the map waits until no
 * reader is between log_reader_begin and log_reader_end.
 */
#ifndef LOG_H
#define LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "an_err.h"
#include "annals/v1/commands.pb-c.h"
#include "annals/v1/event.pb-c.h"

typedef struct log_env log_env;
typedef struct log_reader log_reader;

/* ---- limits and configuration ---- */

#define LOG_NAME_MAX 255u                  /* stream name and event type, bytes */
#define LOG_ID_BYTES 16u                   /* event id: empty or exactly this */
#define LOG_EVENT_MAX_DEFAULT (1u << 20)   /* one event's data + metadata */
#define LOG_REQUEST_MAX_DEFAULT (4u << 20) /* one request (packed AppendRequest) */
#define LOG_DETAIL_MAX 256u                /* detail messages, with NUL */
#define LOG_DELETED_STREAM "$streams"      /* where deletions are recorded */

struct log_cfg {
    const char *dir;           /* the env's directory; created if missing */
    uint64_t max_size_bytes;   /* cap on the map (and so the file); 0: none */
    uint64_t initial_map_bytes;/* first map size of a new env; 0: 64 MiB. An
                                  existing env starts at its file size + 16 MiB */
    uint32_t max_event_bytes;  /* 0: LOG_EVENT_MAX_DEFAULT */
    uint32_t max_request_bytes;/* 0: LOG_REQUEST_MAX_DEFAULT */
    unsigned max_readers;      /* concurrent log_readers; 0: 1024. LMDB keeps
                                  the reader table of an existing lock file */
};

/* ---- opening ---- */

/*
 * log_open - opens (creating if needed) the log in cfg->dir.
 * @cfg: borrowed; copied.
 * @out: set to the new env on success only.
 * @detail: if not NULL, receives a message on failure (LOG_DETAIL_MAX bytes).
 * Returns 0, AN_EINVAL (bad cfg), AN_EIO (cannot create or open; detail has
 * errno's text), AN_ECORRUPT (not an Annals log), AN_ENOMEM.
 * Any thread; once per directory per process.
 */
int log_open(const struct log_cfg *cfg, log_env **out, char *detail);

/*
 * log_close - closes the env. Every log_reader must be closed first and the
 * writer must be idle. Commits not yet made durable are synced first.
 * Accepts NULL.
 */
void log_close(log_env *env);

/* ---- writing (writer thread only) ---- */

enum log_op_kind {
    LOG_OP_APPEND = 0,
    LOG_OP_DELETE = 1,
};

/* The result of one StreamAppend of an append, in request order. */
struct log_stream_result {
    uint64_t first_version;
    uint64_t last_version;
};

/*
 * One request in a batch. The caller fills the inputs, log_commit() the
 * outputs. Everything it points to is borrowed and must stay valid until
 * log_commit() returns; nothing is kept after it.
 */
struct log_op {
    /* inputs */
    enum log_op_kind kind;
    const Annals__V1__AppendRequest *append;     /* LOG_OP_APPEND */
    const Annals__V1__DeleteStreamRequest *del;  /* LOG_OP_DELETE */
    const char *principal;     /* stamped on each event; NULL: "" */
    bool allow_reserved;       /* server-owned '$' streams may be written */
    bool validated;            /* log_validate_* already passed: skip it */
    struct log_stream_result *streams; /* caller's array of append->n_streams */

    /* outputs */
    int rc;                    /* 0 or an AN_E* code */
    uint64_t first_position;   /* append: first event; delete: its position */
    uint64_t last_position;
    int64_t recorded_at_ns;
    /* Acknowledge the op once log_durable_seq() >= seq: the commit that
     * holds its writes, or for an op that wrote nothing (a failed check, an
     * exact retry) the newest commit, whose state its answer reflects. */
    uint64_t seq;
    /* AN_ECONFLICT: which stream and its last version (-1: never written) */
    size_t conflict_stream;    /* index into append->streams (0 for delete) */
    int64_t actual_version;
    char detail[LOG_DETAIL_MAX];
};

/*
 * log_validate_append - checks a request against the contract's rules and
 * the env's limits without touching the log: at least one stream, each with
 * events; names and types 1..255 bytes of valid UTF-8; no '$' name unless
 * allow_reserved; ids empty or 16 bytes; no stream or id twice in the
 * request; event and request sizes.
 * Returns 0, AN_EINVAL or AN_ETOOBIG, with `detail` naming the field and the
 * limit ("streams[1].events[3]: data+metadata 2097152 bytes > limit 1048576").
 * Any thread (touches only `env`'s immutable limits).
 */
int log_validate_append(const log_env *env, const Annals__V1__AppendRequest *req,
                        bool allow_reserved, char *detail);

/* log_validate_delete - the same for a DeleteStreamRequest. */
int log_validate_delete(const log_env *env, const Annals__V1__DeleteStreamRequest *req,
                        char *detail);

/*
 * log_commit - applies a batch of ops in one write transaction (group
 * commit). Each op succeeds or fails on its own; its outputs say which.
 * Events with an empty id are stored with a fresh UUIDv7 (the request is
 * not modified).
 *
 * Returns 0 when the batch was processed (see each op->rc), or a negative
 * code when the whole transaction failed (AN_EIO, AN_EFULL at the cap on
 * commit, AN_ENOMEM): then every op has that rc and nothing was written.
 * *seq_out (optional) gets the commit's sequence number (0 if nothing was
 * written). Commits are NOT durable on return: see log_durable_seq().
 * Writer thread only.
 */
int log_commit(log_env *env, struct log_op *ops, size_t n_ops, uint64_t *seq_out);

/*
 * log_commit_durable - log_commit whose commit is durable on return, at
 * LMDB's default cost (data sync, then the meta page written with O_DSYNC)
 * instead of a commit plus a log_sync (two fdatasyncs). For a writer whose
 * queue holds nothing else, e.g. a lone client: its ops can be answered at
 * once. Writer thread only.
 */
int log_commit_durable(log_env *env, struct log_op *ops, size_t n_ops, uint64_t *seq_out);

/*
 * log_prealloc - writes one chunk (1 MiB) of zeros past the end of the log
 * file if it is less than 4 MiB ahead of the pages LMDB uses, so that
 * commits overwrite blocks instead of growing the file (an fdatasync that
 * must also write the inode: log_env.c has the figures). Bounded: one
 * chunk, about 0.6 ms on this machine. log_prealloc_due tells whether a
 * call would write (cheap). A failure only skips it for a second.
 * Writer thread only, between commits; for a writer about to wait.
 */
bool log_prealloc_due(log_env *env);
void log_prealloc(log_env *env);

/*
 * log_sync - makes every commit so far durable (one fdatasync) and advances
 * the durable head. Returns 0 or AN_EIO. Writer thread only.
 */
int log_sync(log_env *env);

/*
 * log_sync_through - makes commit `seq` and every one before it durable (one
 * fdatasync of the file) and advances the durable head to `head`, that
 * commit's last position. Any thread, also while the writer commits: the
 * writer hands seq and head over (log_commit's seq_out and
 * log_committed_head, read right after it returned), so the meta page of
 * seq was written before the sync starts, and the sync covers it; pages
 * the writer writes meanwhile belong to a commit no durable meta page
 * points to yet. Nothing to do when seq is already durable. Returns 0 or
 * AN_EIO.
 */
int log_sync_through(log_env *env, uint64_t seq, uint64_t head);

/* log_committed_head - the last position committed (durable or not). Any
 * thread. */
uint64_t log_committed_head(const log_env *env);

/* log_durable_seq - the newest commit known durable. Any thread. */
uint64_t log_durable_seq(const log_env *env);

/* log_committed_seq - the newest commit made (durable or not). Any thread. */
uint64_t log_committed_seq(const log_env *env);

/*
 * log_head - the last global position that is durable, and so visible to
 * readers (0: empty log). Acquire load; any thread.
 */
uint64_t log_head(const log_env *env);

/* ---- facts ---- */

struct log_stats {
    uint64_t head;             /* durable head position */
    uint64_t committed_head;   /* last committed position */
    uint64_t streams;          /* entries in the streams table */
    uint64_t map_bytes;        /* current map size */
    uint64_t used_bytes;       /* the file's high-water mark: pages ever used */
    uint64_t live_bytes;       /* pages the trees hold now (the rest is free, for
                                  reuse once no reader needs them) */
    uint64_t max_size_bytes;   /* 0: no cap */
    unsigned readers;          /* reader slots in use */
};
int log_stats(log_env *env, struct log_stats *out);

/* ---- reading ---- */

/*
 * log_reader_open - a reader: one LMDB read transaction handle that is
 * renewed per use. Each reading thread (or each call, if it moves between
 * threads) uses its own. Returns 0, AN_EBUSY (no reader slot), AN_ENOMEM.
 */
int log_reader_open(log_env *env, log_reader **out);

/* log_reader_close - accepts NULL. Must not be inside begin/end. */
void log_reader_close(log_reader *rd);

/*
 * log_reader_begin/end - bracket one batch of reads: begin takes a fresh
 * snapshot, end releases it (so LMDB can reuse pages). Never hold a reader
 * begun across a wait. Every read function below must be called between
 * them, and the bytes it lends are valid only until end.
 * begin returns 0, AN_EIO.
 */
int log_reader_begin(log_reader *rd);
void log_reader_end(log_reader *rd);

/* log_reader_head - the head this snapshot may show (durable head). */
uint64_t log_reader_head(const log_reader *rd);

/* log_reader_detail - the message of the last failed read on this reader. */
const char *log_reader_detail(const log_reader *rd);

/*
 * log_resolve_as_of - turns an AsOf into a position bound: the last global
 * position visible through it (never above the reader's head). NULL or no
 * point chosen: the head. A position above the head: the head. An instant:
 * the last position recorded at or before it (0 if none), found by binary
 * search over positions (O(log n) lookups; timestamps never decrease).
 * Returns 0 or AN_ECORRUPT.
 */
int log_resolve_as_of(log_reader *rd, const Annals__V1__AsOf *as_of, uint64_t *pos_out);

/* log_time_to_position - the instant half of log_resolve_as_of. */
int log_time_to_position(log_reader *rd, int64_t unix_nanos, uint64_t *pos_out);

/*
 * An event handed to a read callback. All pointers are borrowed from the
 * reader's snapshot: valid until log_reader_end(). `packed` is the stored
 * RecordedEvent exactly as it goes on the wire.
 */
struct log_event {
    uint64_t position;
    uint64_t version;
    int64_t recorded_at_ns;
    const char *stream;
    size_t stream_len;
    const char *type;
    size_t type_len;
    const uint8_t *id;         /* 16 bytes */
    size_t id_len;
    const uint8_t *packed;
    size_t packed_len;
};

/* A read callback: return true to go on, false to stop after this event. */
typedef bool (*log_event_fn)(void *arg, const struct log_event *ev);

struct log_stream_read {
    const char *stream;        /* NUL-terminated */
    uint64_t from_version;     /* inclusive; ignored with from_end */
    bool backwards;
    bool from_end;             /* start at the last visible event */
    uint64_t max_count;        /* 0: no limit */
    uint64_t as_of;            /* position bound (log_resolve_as_of) */
};

/*
 * log_read_stream - hands the stream's visible events, as of q->as_of, to
 * fn in version order (or reverse), at most max_count of them. Visible: at a
 * position <= as_of and after the stream's last deletion as of that point.
 * *next_version (optional) gets where a continuation would start, and
 * *done (optional) whether the stream has nothing more in that direction.
 * Returns 0, AN_ENOTFOUND (no visible events as of that point: never
 * written, or deleted), AN_EINVAL (bad name), AN_ECORRUPT.
 */
int log_read_stream(log_reader *rd, const struct log_stream_read *q, log_event_fn fn,
                    void *arg, uint64_t *next_version, bool *done);

/* A filter over the global log, with the contract's semantics (Filter). */
struct log_filter {
    const char *const *stream_prefixes; /* OR'd; n == 0: no filter */
    size_t n_stream_prefixes;
    const char *const *event_types;     /* OR'd; n == 0: no filter */
    size_t n_event_types;
};

/* log_filter_match - whether the filter selects the event (only its stream
 * and type are looked at): log_read_all's rule, for callers that keep
 * events' names themselves. */
bool log_filter_match(const struct log_filter *f, const struct log_event *ev);

struct log_all_read {
    uint64_t from_position;    /* inclusive; 0 and 1: the first (BACKWARDS 0: the end) */
    bool backwards;
    bool from_end;
    uint64_t max_count;        /* selected events; 0: no limit */
    uint64_t max_scan;         /* positions looked at; 0: no limit */
    const struct log_filter *filter; /* NULL: everything */
    uint64_t as_of;            /* position bound */
};

/*
 * log_read_all - hands the global log's events in position order (or
 * reverse) to fn, those the filter selects, from from_position to as_of.
 * *next_position (optional) gets the position a continuation would start at
 * (past everything scanned, selected or not), and *done whether nothing
 * more is there up to as_of (or down to 1).
 * Returns 0 or AN_ECORRUPT.
 */
int log_read_all(log_reader *rd, const struct log_all_read *q, log_event_fn fn, void *arg,
                 uint64_t *next_position, bool *done);

/*
 * log_get_event - the event at one position (<= the reader's head).
 * Returns 0, AN_ENOTFOUND, AN_ECORRUPT.
 */
int log_get_event(log_reader *rd, uint64_t position, struct log_event *out);

/* Facts about one stream as of a point (StreamInfo). */
struct log_stream_info {
    int64_t last_version;      /* last ever written as of the point; -1: none */
    uint64_t event_count;      /* visible events */
    uint64_t first_position;   /* of the first visible event; 0: none */
    uint64_t last_position;    /* of the last visible event; 0: none */
    int64_t created_ns;
    int64_t updated_ns;        /* last event or deletion */
    bool deleted;
    bool tombstoned;
};

/*
 * log_get_stream - stream facts as of a position bound.
 * Returns 0, AN_ENOTFOUND (never written as of that point), AN_EINVAL,
 * AN_ECORRUPT.
 */
int log_get_stream(log_reader *rd, const char *stream, uint64_t as_of,
                   struct log_stream_info *out);

/*
 * log_list_streams - the streams whose names start with `prefix` (NULL or
 * "": all) and sort after `after` (NULL or "": from the first), in byte
 * order, at most `limit` (0: no limit), each with its facts as of the
 * reader's head (names first written after it are left out). fn returns
 * false to stop. *more (optional): whether another may follow the limit.
 * The name handed to fn is NUL-terminated and borrowed for the call.
 * Returns 0, AN_EIO, AN_ECORRUPT.
 */
typedef bool (*log_stream_fn)(void *arg, const char *name, size_t len,
                              const struct log_stream_info *info);
int log_list_streams(log_reader *rd, const char *prefix, const char *after, unsigned limit,
                     log_stream_fn fn, void *arg, bool *more);

/*
 * log_backup - a consistent, compacted copy of the log (mdb_env_copy2) into
 * DEST, which must not exist, while writers go on; *head_out gets the last
 * position the copy holds and *bytes_out its size. The copy holds a read
 * transaction for its duration, and the map cannot grow meanwhile (a
 * writer that fills it waits for the copy). Any thread.
 * Returns 0, AN_EIO (detail names the path), AN_ECORRUPT.
 */
int log_backup(log_env *env, const char *dest, uint64_t *head_out, uint64_t *bytes_out,
               char *detail);

/* ---- helpers shared with the server ---- */

/*
 * log_event_peek - reads the fields a filter or a read needs from a packed
 * RecordedEvent without unpacking it. Returns 0 or AN_ECORRUPT.
 */
int log_event_peek(const uint8_t *packed, size_t len, struct log_event *out);

/*
 * log_percent_encode - [s, s+len) as printable ASCII: every byte outside
 * 0x20..0x7E, and '%', becomes %XX (upper-case hex), as the contract wants
 * for text metadata; what does not fit in cap (with its NUL) is cut and
 * ends in "...". Used for names in details and in trailers.
 */
void log_percent_encode(char *out, size_t cap, const char *s, size_t len);

/*
 * log_key_text - a stored record's key (any bytes) for a log line or a
 * detail: every byte outside [A-Za-z0-9_.-] as %XX, so that no quote,
 * space or '=' of the key can pass for the line's own, cut at about 80
 * bytes (or cap) with "...". Used by the groups' and the projections'
 * loaders.
 */
void log_key_text(char *out, size_t cap, const void *key, size_t len);

/* log_utf8_valid - whether [s, s+len) is well-formed UTF-8. */
bool log_utf8_valid(const char *s, size_t len);

/*
 * log_verify - walks the whole log and checks its invariants: positions
 * 1..head gap-free, times never decreasing, each event decodable and found
 * by its id and by its stream's index, stream versions gap-free.
 * progress (optional) is called every 100k events. Returns 0, AN_ECORRUPT
 * (detail names the first broken thing), AN_EIO.
 */
typedef void (*log_progress_fn)(void *arg, uint64_t done, uint64_t total);
int log_verify(log_env *env, log_progress_fn progress, void *arg, char *detail);

#endif /* LOG_H */

/*
 * proj.h - the projection engine: folds the event log into views that
 * Queries.GetView / ScanView answer from, also as of any past position.
 *
 * This is the public header of projections/. It has no gRPC in it: the
 * server maps annals.v1.Projections and Queries.GetView/ScanView onto the
 * functions below, and calls proj_notify() when the log's durable head
 * moves. Messages are the generated protobuf-c types of
 * annals/v1/projections.proto and queries.proto; errors are AN_E* codes
 * (client/an_err.h), which the server's table maps to gRPC statuses.
 *
 * ---- On disk (DIR = proj_cfg.dir, e.g. DATA/projections) ----
 *
 *   DIR/catalog/        LMDB env, db "defs": name -> [u64 BE current
 *                       generation][u64 BE rebuilding generation, 0: none]
 *                       [packed ProjectionDefinition]. Written only by the
 *                       admin calls and by a worker swapping in a rebuilt
 *                       view, always with a synced commit.
 *   DIR/views/NAME.GEN/ one LMDB env per generation of a view:
 *     db "view"   key bytes || u64 BE position -> value (JSON text) of the
 *                 entry after the event at that position. Ordered by key
 *                 bytes, then shorter key first, then position (a custom
 *                 comparator, so keys may hold any bytes, NUL included).
 *                 Unless latest_only every version is kept, so "K as of P"
 *                 is one MDB_SET_RANGE on (K, P+1) and one step back:
 *                 O(log n) whatever the number of versions of K. A zero-
 *                 length value marks a deletion (no kind writes one yet).
 *                 latest_only keeps only the newest version of each key.
 *     db "meta"   "checkpoint" -> u64 BE, "applied" -> u64 BE (events
 *                 applied), "format". The checkpoint is written in the same
 *                 write transaction as the view changes of its batch, so a
 *                 restart or kill -9 neither skips nor applies an event
 *                 twice: the worker goes on from checkpoint + 1.
 *
 * Why generations (NAME.GEN) rather than DESIGN.md's NAME/ + NAME.next/:
 * a swap is then one catalog commit and a pointer store, with no rename of
 * a directory whose env queries in flight still have open; a crash at any
 * point leaves the catalog naming complete envs only, and the rest is
 * swept at the next proj_open().
 *
 * Keys are at most PROJ_KEY_MAX bytes (LMDB's key limit minus the
 * position); an event whose key is longer does not fit and is skipped.
 *
 * ---- Threads ----
 *
 * One worker thread per projection reads the committed log in order with
 * its own log_reader (begun and ended per batch, never across a wait) and
 * applies batches to its view env, the only writer of that env. It sleeps
 * on the manager's condition variable; proj_notify() wakes it. Queries run
 * on the caller's thread in their own read transaction; a query that must
 * wait (min_position, or an as_of beyond the checkpoint) waits on the
 * projection's checkpoint condition, holding no transaction. Every other
 * function may be called from any thread, concurrently.
 *
 * Each worker holds one of the log's reader slots (log_cfg.max_readers)
 * for its lifetime, and keeps it begun for one batch at a time (at most
 * batch_events positions, a few ms), never across its view commit: a log
 * map resize waits at most that long. Each view env has 1024 reader slots.
 *
 * ---- Rebuild ----
 *
 * proj_rebuild() opens a fresh generation beside the current one; the worker
 * builds it from position 1 while keeping the current view up to date, and
 * queries keep reading the current one. When the fresh view has caught up
 * with the head (and with the current view) the catalog is switched to it in
 * one synced commit and the in-memory pointer in one step; queries in flight
 * finish on the old env (views are refcounted), the last one closes it and
 * removes its files. A rebuild interrupted by a restart RESUMES: the catalog
 * remembers the rebuilding generation, whose checkpoint is as durable as any
 * view's, and the worker goes on from it.
 *
 * ---- Faults ----
 *
 * Events that do not fit a projection (data not JSON, no key, key too long)
 * are skipped and count as processed. A real failure (map full at
 * view_max_bytes, I/O, a log event that cannot be decoded) stops the worker
 * on that view: state FAULTED with `error`; queries still answer from what
 * was applied. proj_rebuild() or a restart retries.
 *
 * A view whose checkpoint is past the log's head at proj_open() was folded
 * from another history (a log restored without its projections): it is
 * replaced at once by a fresh generation folded from position 1 (a rebuild
 * in progress that is past the head starts again), with a warning logged.
 */
#ifndef PROJ_H
#define PROJ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "an_err.h"
#include "annals/v1/projections.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "log.h"

typedef struct proj_mgr proj_mgr;

#define PROJ_NAME_MAX 64u          /* projection name, bytes */
#define PROJ_KEY_MAX 503u          /* view key, bytes (511 - 8) */
#define PROJ_DETAIL_MAX 256u       /* detail messages, with NUL */
#define PROJ_FILTER_MAX 64u        /* entries per filter list */
#define PROJ_POINTER_MAX 1024u     /* key / sum JSON Pointer, bytes */
#define PROJ_CONTENT_TYPE "application/json"

/* Levels of the optional logging callback (the same order as say.h's). */
enum proj_log_level {
    PROJ_LOG_DEBUG = 0,
    PROJ_LOG_INFO = 1,
    PROJ_LOG_WARN = 2,
    PROJ_LOG_ERROR = 3,
};

/*
 * A logging callback: `line` is key=value text without ts/lvl/mod, e.g.
 *   msg="rebuild progress" proj=orders done=120000 head=1000000 rate=412000/s eta_s=2
 * Borrowed for the call. Called from worker threads and from the admin
 * calls, so it must be thread-safe (say.h's macros are).
 */
typedef void (*proj_log_fn)(void *arg, enum proj_log_level level, const char *line);

struct proj_cfg {
    const char *dir;              /* DATA/projections; created if missing */
    uint64_t view_max_bytes;      /* map size (and so cap) of each view env;
                                     0: 8 GiB. The file grows as needed */
    unsigned max_projections;     /* 0: 256 */
    unsigned batch_events;        /* log positions per worker txn; 0: 4096 */
    proj_log_fn log;              /* NULL: silent */
    void *log_arg;
    /* Called whenever a query that had to wait may now be answered: a
     * checkpoint moved, a rebuilt view was swapped in, a projection was
     * deleted. From a worker or an admin call, with no lock of this module
     * held; must not block (e.g. bump a counter and signal). Lets a server
     * park waiting queries instead of blocking a thread in proj_get. NULL:
     * none. */
    void (*on_advance)(void *arg);
    void *advance_arg;
};

/* ---- the manager ---- */

/*
 * proj_open - opens (creating if needed) DIR/catalog, removes view files
 * the catalog does not name (left by a crash in Delete or a swap), opens
 * each projection's view(s) and starts its worker, which goes on from its
 * checkpoint.
 * @cfg: borrowed; copied.
 * @log: borrowed; must stay open until proj_close() returns.
 * @out: set to the new manager on success only.
 * @detail: if not NULL, receives a message on failure (PROJ_DETAIL_MAX).
 * Returns 0, AN_EINVAL (bad cfg), AN_EIO, AN_ECORRUPT (catalog unreadable),
 * AN_ENOMEM. A projection whose view cannot be opened does not fail the
 * manager: it is listed as FAULTED. A catalog entry that does not decode
 * is skipped and logged. Any thread; once per directory per process.
 */
int proj_open(const struct proj_cfg *cfg, log_env *log, proj_mgr **out, char *detail);

/*
 * proj_close - stops every worker (each finishes its current batch, which
 * commits or not as a whole), wakes every waiting query (they return
 * AN_EUNAVAIL), waits for calls in flight to return, closes the envs.
 * No call may start after proj_close() has started. Accepts NULL.
 */
void proj_close(proj_mgr *mgr);

/*
 * proj_notify - the log's durable head is now `head`: wakes the workers that
 * are behind. Never blocks on a worker (an atomic max and a broadcast under
 * a mutex no worker holds while working). Call it from the writer after it
 * publishes the head. Any thread.
 */
void proj_notify(proj_mgr *mgr, uint64_t head);

/* ---- Projections service ---- */

/*
 * proj_validate - checks a definition against projections.proto without
 * touching anything: name 1..64 of [a-z0-9_-]; kind one of the four; key
 * required for COUNT and INDEX ("$type", "$stream", "$category" or a
 * non-empty JSON Pointer), absent otherwise; sum only for COUNT, a
 * non-empty JSON Pointer; at most PROJ_FILTER_MAX entries per filter list.
 * Returns 0 or AN_EINVAL with `detail` naming the field and the rule
 * ("key: must be \"$type\", ..."). Any thread.
 */
int proj_validate(const Annals__V1__ProjectionDefinition *def, char *detail);

/*
 * proj_create - validates, stores and starts a projection (from position 1).
 * @def: borrowed. Only its known fields are kept (unknown fields dropped).
 * @out: (optional) its status as it starts; caller owns, frees with
 *       proj_status_free().
 * Returns 0 (also for a definition identical to the stored one: idempotent),
 * AN_EINVAL (detail names the field), AN_EEXIST (the name holds a different
 * definition), AN_ETOOBIG (max_projections reached), AN_EIO, AN_EFULL,
 * AN_ENOMEM, AN_EUNAVAIL (closing).
 */
int proj_create(proj_mgr *mgr, const Annals__V1__ProjectionDefinition *def,
                Annals__V1__ProjectionStatus **out, char *detail);

/*
 * proj_status - one projection's status (Projections.Get): definition,
 * state, checkpoint, head (log_head), events_applied, error,
 * rebuild_checkpoint.
 * @out: caller owns; free with proj_status_free().
 * Returns 0, AN_ENOTFOUND, AN_ENOMEM, AN_EUNAVAIL.
 */
int proj_status(proj_mgr *mgr, const char *name, Annals__V1__ProjectionStatus **out);

/* proj_status_free - frees a status from this module. Accepts NULL. */
void proj_status_free(Annals__V1__ProjectionStatus *st);

/*
 * proj_list - every projection's status, by name (Projections.List).
 * @out: caller owns; free with proj_list_free().
 * Returns 0, AN_ENOMEM, AN_EUNAVAIL.
 */
int proj_list(proj_mgr *mgr, Annals__V1__ListProjectionsResponse **out);
void proj_list_free(Annals__V1__ListProjectionsResponse *resp);

/*
 * proj_rebuild - starts a rebuild (see the top of this file) and returns the
 * status as it starts (REBUILDING). A rebuild already running goes on
 * (nothing restarts). Clears a FAULTED state.
 * @out: optional; as in proj_create.
 * Returns 0, AN_ENOTFOUND, AN_EIO, AN_EFULL, AN_ENOMEM, AN_EUNAVAIL.
 */
int proj_rebuild(proj_mgr *mgr, const char *name, Annals__V1__ProjectionStatus **out,
                 char *detail);

/*
 * proj_delete - stops the worker, removes the definition (synced) and the
 * view files (those still read by queries in flight are removed when the
 * last of them finishes; waiting queries return AN_ENOTFOUND).
 * Returns 0, AN_ENOTFOUND, AN_EIO, AN_EUNAVAIL.
 */
int proj_delete(proj_mgr *mgr, const char *name, char *detail);

/* ---- backup ---- */

/* Called after each projection is copied: its name, how many are done. */
typedef void (*proj_backup_fn)(void *arg, const char *name, unsigned done, unsigned total);

/*
 * proj_backup - a consistent copy of every projection into DEST (created if
 * missing; DEST/views must not exist): each view env (and a rebuild's
 * fresh one) copied compacted with mdb_env_copy2 while its worker goes on,
 * then a catalog naming exactly those views. A server opened on the copy
 * goes on from each copied checkpoint (a rebuild resumes). No create,
 * rebuild or delete runs meanwhile. Copy the log after this, so that
 * every copied checkpoint is at most the copied log's head.
 * Returns 0, AN_EIO, AN_ENOMEM, AN_EUNAVAIL (closing), with detail.
 */
int proj_backup(proj_mgr *mgr, const char *dest, proj_backup_fn progress, void *arg,
                char *detail);

/*
 * proj_check_dir - checks, offline, the projections of a data directory
 * (DIR = DATA/projections) against a log head: for each catalog entry's
 * view (and a rebuild's fresh one), that it opens, that its checkpoint is
 * at most head, and that no entry is past its checkpoint. fn (optional)
 * gets each view: name, generation, whether it is a rebuild's, its
 * checkpoint and entries, and the problem found (NULL: none). Opens
 * nothing for writing: run it on a stopped server's directory or a copy.
 * Returns 0, AN_ECORRUPT (some view failed; detail counts them), or the
 * code of a catalog that cannot be read.
 */
typedef void (*proj_check_fn)(void *arg, const char *name, uint64_t gen, bool rebuilding,
                              uint64_t checkpoint, uint64_t entries, const char *problem);
int proj_check_dir(const char *dir, uint64_t head, proj_check_fn fn, void *arg, char *detail);

/* ---- Queries.GetView / ScanView ---- */

/*
 * Where in history to read. The server resolves an AsOf instant to a
 * position with log_time_to_position() first.
 */
struct proj_read {
    bool has_as_of;           /* read as of as_of, not the present */
    uint64_t as_of;           /* position bound; waits until the checkpoint
                                 reaches it (so an answer never changes) */
    uint64_t min_position;    /* 0: none; else wait for checkpoint >= it */
    int64_t deadline_ns;      /* absolute CLOCK_MONOTONIC; 0: wait forever */
};

/*
 * proj_get - one entry of a view (GetView).
 * @key: borrowed, key_len bytes (any bytes).
 * @out: caller owns; free with proj_entry_free(). key is set; found = false
 *       when the key has no value as of that point (value empty, position 0);
 *       content_type PROJ_CONTENT_TYPE when found.
 * Returns 0, AN_ENOTFOUND (no such view), AN_EPRECOND (as_of on a
 * latest_only view: FAILED_PRECONDITION), AN_EDEADLINE (the checkpoint did
 * not reach as_of / min_position in time), AN_EUNAVAIL (closing, the view
 * could not be opened at start, or it is FAULTED short of as_of /
 * min_position: it would never get there before a Rebuild or restart), AN_EBUSY (the view env's
 * 1024 reader slots are all in use), AN_EIO, AN_ECORRUPT, AN_ENOMEM.
 * Any thread; may block until the deadline. An as_of or min_position past
 * the log's head waits for it as the contract says: resolve instants with
 * log_time_to_position (never past the head) before calling.
 */
int proj_get(proj_mgr *mgr, const char *view, const char *key, size_t key_len,
             const struct proj_read *q, Annals__V1__ViewEntry **out);
void proj_entry_free(Annals__V1__ViewEntry *e);

/*
 * An entry handed to a scan callback: every pointer is borrowed from the
 * read transaction and valid only during the call (copy what you keep).
 * Return true to go on, false to stop.
 */
typedef bool (*proj_entry_fn)(void *arg, const Annals__V1__ViewEntry *e);

struct proj_scan {
    const char *prefix;       /* NULL or "": every key */
    size_t prefix_len;
    const char *start_after;  /* NULL: from the first key; else keys > it */
    size_t start_after_len;
    uint32_t limit;           /* entries handed out; 0: no limit */
    struct proj_read read;
};

/*
 * proj_scan - the view's entries in key order (ScanView), each as of the
 * point; keys without a value at that point are left out.
 * @at_out: (optional) the position the scan read at: as_of, or the view's
 *          checkpoint for the present. A scan sent in several batches
 *          passes it as as_of to the next ones (not latest_only views) so
 *          the batches agree; each call holds its read txn only while it
 *          runs, so never wait (e.g. on a send) inside fn.
 * @more_out: (optional) whether a later key may follow (stopped by limit or
 *          by fn); resume with start_after = the last key handed out.
 * Returns as proj_get. Any thread.
 */
int proj_scan(proj_mgr *mgr, const char *view, const struct proj_scan *q, proj_entry_fn fn,
              void *arg, uint64_t *at_out, bool *more_out);

/* proj_deadline_after - CLOCK_MONOTONIC now + timeout_ns (a deadline_ns). */
int64_t proj_deadline_after(int64_t timeout_ns);

#endif /* PROJ_H */

/*
 * fuzz_fixture.h - what the libFuzzer targets that need a live engine share:
 * a real log env and a real projection manager on it, in one mkdtemp
 * directory, set up once per process (or again, to start afresh), and
 * appends through log_commit + log_sync + proj_notify as the server's
 * writer does. Everything aborts on a failure of its own (not of the
 * input): a fuzz target cannot report one otherwise.
 */
#ifndef FUZZ_FIXTURE_H
#define FUZZ_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "proj.h"

struct ffx {
    char dir[64];            /* the temp directory (removed by ffx_close) */
    log_env *env;
    log_reader *rd;
    proj_mgr *mgr;
};
extern struct ffx ffx;

/* Opens a log and a manager (max_projections as given) in a new temp dir
 * under base ("/tmp", "/dev/shm"). */
void ffx_open(const char *base, unsigned max_projections);
/* Closes both and removes the directory. */
void ffx_close(void);

/* Commits req (allow_reserved false), durably, and notifies the manager.
 * Returns the op's rc (0 or the refusal of a request that did not pass
 * its checks). */
int ffx_append(const Annals__V1__AppendRequest *req);
/* One event of `type` on `stream` with data (len bytes). Aborts if refused. */
void ffx_put(const char *stream, const char *type, const char *data);
/* Deletes a stream (EXPECT_ANY). Aborts if refused. */
void ffx_delete(const char *stream, bool tombstone);

/* Creates a projection; aborts if refused. key, sum: NULL for none. */
void ffx_create(const char *name, Annals__V1__ProjectionKind kind, const char *key,
                const char *sum, bool latest_only);
/* Waits (up to 30 s) until view has applied the log's head. 0, or the
 * code proj_get returned (AN_EDEADLINE: it did not get there). */
int ffx_wait(const char *view);

#endif /* FUZZ_FIXTURE_H */

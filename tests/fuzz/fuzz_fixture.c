/*
 * fuzz_fixture.c - see fuzz_fixture.h.
 */
#include "fuzz_fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ffx ffx;

static void die(const char *what, int rc, const char *detail)
{
    fprintf(stderr, "fuzz fixture: %s: %s (%s)\n", what, an_errname(rc), detail ? detail : "");
    abort();
}

void ffx_open(const char *base, unsigned max_projections)
{
    char detail[LOG_DETAIL_MAX] = "";
    char pdir[128];
    snprintf(ffx.dir, sizeof(ffx.dir), "%s/annals-fuzz-XXXXXX", base);
    if (!mkdtemp(ffx.dir)) {
        die("mkdtemp", AN_EIO, ffx.dir);
    }
    char ldir[128];
    snprintf(ldir, sizeof(ldir), "%s/log", ffx.dir);
    struct log_cfg cfg = {.dir = ldir};
    int rc = log_open(&cfg, &ffx.env, detail);
    if (rc) {
        die("log_open", rc, detail);
    }
    if ((rc = log_reader_open(ffx.env, &ffx.rd))) {
        die("log_reader_open", rc, NULL);
    }
    snprintf(pdir, sizeof(pdir), "%s/projections", ffx.dir);
    struct proj_cfg pc = {.dir = pdir, .max_projections = max_projections,
                          .view_max_bytes = 256ull << 20};
    if ((rc = proj_open(&pc, ffx.env, &ffx.mgr, detail))) {
        die("proj_open", rc, detail);
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ffx_close(void)
{
    proj_close(ffx.mgr);
    log_reader_close(ffx.rd);
    log_close(ffx.env);
    nftw(ffx.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    memset(&ffx, 0, sizeof(ffx));
}

int ffx_append(const Annals__V1__AppendRequest *req)
{
    struct log_stream_result sr[16];
    struct log_op op = {.kind = LOG_OP_APPEND, .append = req, .principal = "fuzz",
                        .streams = sr};
    if (req->n_streams > 16) {
        die("ffx_append", AN_EINVAL, "more than 16 streams");
    }
    uint64_t seq = 0;
    int rc = log_commit(ffx.env, &op, 1, &seq);
    if (rc == 0) {
        rc = log_sync(ffx.env);
    }
    if (rc) {
        die("log_commit", rc, op.detail);
    }
    proj_notify(ffx.mgr, log_head(ffx.env));
    return op.rc;
}

void ffx_put(const char *stream, const char *type, const char *data)
{
    Annals__V1__EventData e = ANNALS__V1__EVENT_DATA__INIT;
    Annals__V1__EventData *ep = &e;
    Annals__V1__StreamAppend s = ANNALS__V1__STREAM_APPEND__INIT;
    Annals__V1__StreamAppend *sp = &s;
    Annals__V1__AppendRequest r = ANNALS__V1__APPEND_REQUEST__INIT;
    e.type = (char *)type;
    e.data.data = (uint8_t *)data;
    e.data.len = strlen(data);
    s.stream = (char *)stream;
    s.n_events = 1;
    s.events = &ep;
    r.n_streams = 1;
    r.streams = &sp;
    int rc = ffx_append(&r);
    if (rc) {
        die("ffx_put", rc, stream);
    }
}

void ffx_delete(const char *stream, bool tombstone)
{
    Annals__V1__DeleteStreamRequest d = ANNALS__V1__DELETE_STREAM_REQUEST__INIT;
    d.stream = (char *)stream;
    d.tombstone = tombstone;
    struct log_op op = {.kind = LOG_OP_DELETE, .del = &d, .principal = "fuzz"};
    int rc = log_commit(ffx.env, &op, 1, NULL);
    if (rc == 0) {
        rc = log_sync(ffx.env);
    }
    if (rc || op.rc) {
        die("ffx_delete", rc ? rc : op.rc, op.detail);
    }
    proj_notify(ffx.mgr, log_head(ffx.env));
}

void ffx_create(const char *name, Annals__V1__ProjectionKind kind, const char *key,
                const char *sum, bool latest_only)
{
    char detail[PROJ_DETAIL_MAX] = "";
    Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
    d.name = (char *)name;
    d.kind = kind;
    d.key = (char *)(key ? key : "");
    d.sum = (char *)(sum ? sum : "");
    d.latest_only = latest_only;
    int rc = proj_create(ffx.mgr, &d, NULL, detail);
    if (rc) {
        die("proj_create", rc, detail);
    }
}

int ffx_wait(const char *view)
{
    struct proj_read q = {.min_position = log_head(ffx.env),
                          .deadline_ns = proj_deadline_after(30ll * 1000000000)};
    Annals__V1__ViewEntry *e = NULL;
    int rc = proj_get(ffx.mgr, view, "", 0, &q, &e);
    proj_entry_free(e);
    return rc;
}

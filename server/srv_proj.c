/*
 * srv_proj.c - annals.v1.Projections and Queries.GetView / ScanView, on
 * the projection engine (projections/proj.h).
 *
 * The admin calls (Create, List, Get, Rebuild, Delete) run on the CQ
 * thread: they are rare, and at worst one synced catalog commit long.
 *
 * A view query never blocks a CQ thread. It first asks the engine without
 * waiting (a deadline already passed). When the view has not yet applied
 * what the query needs (min_position, or an as_of beyond its checkpoint),
 * the call parks on the view-waiter list, holding nothing but a reference.
 * Each time a projection worker moves a checkpoint, the engine calls
 * on_advance, which bumps a generation and signals the view-waiter thread;
 * that thread takes every parked call and asks again. A call still short
 * parks again, unless the generation moved while it was being asked (then
 * it is asked once more, so no advance is missed). The call's own gRPC
 * deadline ends a parked call: its CLOSE takes it off the list and answers
 * DEADLINE_EXCEEDED (CANCELLED if the client went away first).
 *
 * ScanView sends entries in messages of about 64 KiB, one in flight at a
 * time. Every message after the first reads the view as of the position
 * the first one read at, so the batches make one consistent answer (views
 * that keep only the latest value cannot be read as of a point: their
 * batches each read the present).
 */
#include "srv_int.h"

#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_BATCH_BYTES (64u << 10)

/* ---- the engine's log lines ---- */

static void proj_say(void *arg, enum proj_log_level level, const char *line)
{
    (void)arg;
    switch (level) {
    case PROJ_LOG_DEBUG:
        say_debug("proj", "%s", line);
        break;
    case PROJ_LOG_INFO:
        say_info("proj", "%s", line);
        break;
    case PROJ_LOG_WARN:
        say_warn("proj", "%s", line);
        break;
    case PROJ_LOG_ERROR:
        say_error("proj", "%s", line);
        break;
    }
}

/* ---- parked view calls (under s->vw_mu) ---- */

static void vw_link(struct srv *s, struct srv_call *c)
{
    c->vw.prev = NULL;
    c->vw.next = s->vw_parked;
    if (s->vw_parked) {
        s->vw_parked->vw.prev = c;
    }
    s->vw_parked = c;
    c->vw.parked = true;
}

static void vw_unlink(struct srv *s, struct srv_call *c)
{
    if (c->vw.prev) {
        c->vw.prev->vw.next = c->vw.next;
    } else {
        s->vw_parked = c->vw.next;
    }
    if (c->vw.next) {
        c->vw.next->vw.prev = c->vw.prev;
    }
    c->vw.prev = c->vw.next = NULL;
    c->vw.parked = false;
}

/* The engine moved a checkpoint (a worker thread; must not block). */
static void on_advance(void *arg)
{
    struct srv *s = arg;
    pthread_mutex_lock(&s->vw_mu);
    s->vw_gen++;
    pthread_cond_signal(&s->vw_cond);
    pthread_mutex_unlock(&s->vw_mu);
}

/* ---- requests ---- */

int srv_view_read_point(log_reader *rd, const Annals__V1__AsOf *as_of, uint64_t min_position,
                        struct proj_read *out)
{
    *out = (struct proj_read){.min_position = min_position,
                              .deadline_ns = proj_deadline_after(0)};
    if (!as_of || as_of->point_case == ANNALS__V1__AS_OF__POINT__NOT_SET) {
        return 0;
    }
    out->has_as_of = true;
    if (as_of->point_case == ANNALS__V1__AS_OF__POINT_POSITION) {
        out->as_of = as_of->position;
        return 0;
    }
    int rc = log_reader_begin(rd);
    if (rc) {
        return rc;
    }
    rc = log_time_to_position(rd, as_of->unix_nanos, &out->as_of);
    log_reader_end(rd);
    return rc;
}

int srv_view_check(const char *view, char *detail)
{
    if (!view || !view[0]) {
        snprintf(detail, LOG_DETAIL_MAX, "view: a projection's name is required");
        return AN_EINVAL;
    }
    return 0;
}

static void reply_view_error(struct srv_call *c, int rc, const char *view)
{
    char detail[LOG_DETAIL_MAX];
    char nm[80];
    log_percent_encode(nm, sizeof(nm), view, strlen(view));
    switch (rc) {
    case AN_ENOTFOUND:
        snprintf(detail, sizeof(detail), "view '%s' does not exist", nm);
        break;
    case AN_EPRECOND:
        snprintf(detail, sizeof(detail),
                 "view '%s' keeps only the latest values (latest_only): it cannot be read as of "
                 "a point", nm);
        break;
    case AN_EUNAVAIL:
        snprintf(detail, sizeof(detail), "view '%s' is not available (FAULTED or closing)", nm);
        break;
    default:
        snprintf(detail, sizeof(detail), "view '%s': %s", nm, an_strerror(rc));
        break;
    }
    srv_reply_code(c, rc, detail);
}

/* ---- GetView ---- */

/* One attempt; AN_EDEADLINE means "not yet" (nothing was answered). */
static int get_view_try(struct srv_call *c)
{
    Annals__V1__GetViewRequest *r = (Annals__V1__GetViewRequest *)c->req;
    Annals__V1__ViewEntry *e = NULL;
    c->vw.q.deadline_ns = proj_deadline_after(0);
    int rc = proj_get(c->srv->proj, r->view, r->key, strlen(r->key), &c->vw.q, &e);
    if (rc == AN_EDEADLINE) {
        return rc;
    }
    if (rc) {
        reply_view_error(c, rc, r->view);
        return 0;
    }
    srv_reply(c, srv_pack(&e->base), GRPC_STATUS_OK, NULL, NULL, 0);
    proj_entry_free(e);
    return 0;
}

/* ---- ScanView ---- */

struct scan_batch {
    struct srv_batch b;
    struct srv_scan *sc;
    int rc;
};

static bool scan_add(void *arg, const Annals__V1__ViewEntry *e)
{
    struct scan_batch *sb = arg;
    struct srv_batch *b = &sb->b;
    size_t n = annals__v1__view_entry__get_packed_size(e);
    if (b->len + n + 11 > b->cap) {
        size_t cap = b->cap ? b->cap : SCAN_BATCH_BYTES + 1024;
        while (cap < b->len + n + 11) {
            cap *= 2;
        }
        uint8_t *p = realloc(b->buf, cap);
        if (!p) {
            sb->rc = AN_ENOMEM;
            return false;
        }
        b->buf = p;
        b->cap = cap;
    }
    b->buf[b->len++] = 0x0a; /* ScanViewResponse.entries = 1 */
    uint64_t l = n;
    while (l >= 0x80) {
        b->buf[b->len++] = (uint8_t)(l | 0x80);
        l >>= 7;
    }
    b->buf[b->len++] = (uint8_t)l;
    b->len += annals__v1__view_entry__pack(e, b->buf + b->len);
    b->n++;
    size_t kl = e->key ? strlen(e->key) : 0;
    char *k = realloc(sb->sc->after, kl + 1);
    if (!k) {
        sb->rc = AN_ENOMEM;
        return false;
    }
    memcpy(k, e->key ? e->key : "", kl + 1);
    sb->sc->after = k;
    sb->sc->after_len = kl;
    return b->len < SCAN_BATCH_BYTES;
}

/* Whether a view keeps only its latest values (cannot be read as of). */
static bool latest_only(struct srv *s, const char *view)
{
    Annals__V1__ProjectionStatus *st = NULL;
    bool lo = proj_status(s->proj, view, &st) == 0 && st->definition &&
              st->definition->latest_only;
    proj_status_free(st);
    return lo;
}

/* Reads and sends the next batch, or ends the call. AN_EDEADLINE: the
 * first batch must wait (nothing answered). */
static int scan_next(struct srv_call *c)
{
    Annals__V1__ScanViewRequest *r = (Annals__V1__ScanViewRequest *)c->req;
    struct srv_scan *sc = &c->scan;
    if (sc->done || atomic_load(&c->closed)) {
        srv_reply(c, NULL, GRPC_STATUS_OK, NULL, NULL, 0);
        return 0;
    }
    struct proj_scan q = {
        .prefix = r->key_prefix,
        .prefix_len = r->key_prefix ? strlen(r->key_prefix) : 0,
        .start_after = sc->after ? sc->after : (r->start_after && r->start_after[0]
                                                    ? r->start_after : NULL),
        .limit = sc->left,
        .read = c->vw.q,
    };
    q.start_after_len = q.start_after ? strlen(q.start_after) : 0;
    if (sc->started && !sc->latest_only) {
        q.read.has_as_of = true;
        q.read.as_of = sc->at;
        q.read.min_position = 0;
    }
    if (sc->started && sc->latest_only) {
        q.read.has_as_of = false;
        q.read.min_position = 0;
    }
    q.read.deadline_ns = proj_deadline_after(0);
    struct scan_batch sb = {.sc = sc};
    bool more = false;
    uint64_t at = 0;
    int rc = proj_scan(c->srv->proj, r->view, &q, scan_add, &sb, &at, &more);
    if (rc == AN_EDEADLINE && !sc->started) {
        free(sb.b.buf);
        return rc;
    }
    if (!rc) {
        rc = sb.rc;
    }
    if (rc) {
        free(sb.b.buf);
        reply_view_error(c, rc, r->view);
        return 0;
    }
    if (!sc->started) {
        sc->started = true;
        sc->at = at;
        sc->latest_only = !c->vw.q.has_as_of && latest_only(c->srv, r->view);
    }
    if (sc->left) {
        sc->left -= sb.b.n < sc->left ? (uint32_t)sb.b.n : sc->left;
        if (!sc->left) {
            more = false;
        }
    }
    sc->done = !more;
    if (sb.b.n == 0) {
        free(sb.b.buf);
        srv_reply(c, NULL, GRPC_STATUS_OK, NULL, NULL, 0);
        return 0;
    }
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)sb.b.buf, sb.b.len);
    free(sb.b.buf);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    if (srv_send(c, bb)) {
        srv_reply_code(c, AN_EINTERNAL, "send failed");
    }
    return 0;
}

/* ---- waiting ---- */

static int view_try(struct srv_call *c)
{
    return c->method == SRV_M_GET_VIEW ? get_view_try(c) : scan_next(c);
}

/* Asks again, parking the call when it must still wait. Whoever calls it
 * has the call (not parked). */
static void view_attempt(struct srv_call *c)
{
    struct srv *s = c->srv;
    for (;;) {
        pthread_mutex_lock(&s->vw_mu);
        uint64_t gen = s->vw_gen;
        bool stop = s->vw_stop;
        pthread_mutex_unlock(&s->vw_mu);
        if (stop) {
            srv_reply_code(c, AN_EUNAVAIL, "the server is shutting down");
            return;
        }
        if (view_try(c) != AN_EDEADLINE) {
            return;
        }
        pthread_mutex_lock(&s->vw_mu);
        bool park = s->vw_gen == gen && !s->vw_stop && !atomic_load(&c->closed);
        if (park) {
            vw_link(s, c);
        }
        pthread_mutex_unlock(&s->vw_mu);
        if (park) {
            return;
        }
        if (atomic_load(&c->closed)) {
            srv_reply_code(c, AN_ECANCELLED, "the client went away");
            return;
        }
    }
}

static void *view_waiter_main(void *arg)
{
    struct srv *s = arg;
    pthread_setname_np(pthread_self(), "an-viewwait");
    uint64_t seen = 0;
    pthread_mutex_lock(&s->vw_mu);
    for (;;) {
        while (!s->vw_stop && s->vw_gen == seen) {
            pthread_cond_wait(&s->vw_cond, &s->vw_mu);
        }
        if (s->vw_stop) {
            break;
        }
        seen = s->vw_gen;
        struct srv_call *take = NULL;
        while (s->vw_parked) {
            struct srv_call *c = s->vw_parked;
            vw_unlink(s, c);
            c->vw.next = take;
            take = c;
        }
        pthread_mutex_unlock(&s->vw_mu);
        while (take) {
            struct srv_call *c = take;
            take = c->vw.next;
            c->vw.next = NULL;
            view_attempt(c);
        }
        pthread_mutex_lock(&s->vw_mu);
    }
    pthread_mutex_unlock(&s->vw_mu);
    return NULL;
}

void srv_view_on_close(struct srv_call *c)
{
    struct srv *s = c->srv;
    pthread_mutex_lock(&s->vw_mu);
    bool parked = c->vw.parked;
    if (parked) {
        vw_unlink(s, c);
    }
    pthread_mutex_unlock(&s->vw_mu);
    if (parked) {
        bool late = gpr_time_cmp(c->deadline, gpr_now(GPR_CLOCK_MONOTONIC)) <= 0;
        srv_reply_code(c, late ? AN_EDEADLINE : AN_ECANCELLED,
                       late ? "the view did not reach the requested position within the "
                              "call's deadline"
                            : "the client went away");
    }
}

/* ---- the calls ---- */

void srv_view_begin(struct srv_call *c)
{
    const Annals__V1__AsOf *as_of;
    uint64_t min_position;
    const char *view;
    if (c->method == SRV_M_GET_VIEW) {
        Annals__V1__GetViewRequest *r = (Annals__V1__GetViewRequest *)c->req;
        as_of = r->as_of;
        min_position = r->min_position;
        view = r->view;
    } else {
        Annals__V1__ScanViewRequest *r = (Annals__V1__ScanViewRequest *)c->req;
        as_of = r->as_of;
        min_position = r->min_position;
        view = r->view;
        c->scan.left = r->limit;
    }
    char detail[LOG_DETAIL_MAX];
    int rc = srv_view_check(view, detail);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    rc = srv_view_read_point(c->q->rd, as_of, min_position, &c->vw.q);
    if (rc) {
        srv_reply_code(c, rc, "cannot map as_of to a position");
        return;
    }
    view_attempt(c);
}

void srv_view_on_write(struct srv_call *c, bool ok)
{
    if (!ok) {
        srv_reply(c, NULL, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
        return;
    }
    scan_next(c);
}

/* Replies with a status message, or the error. */
static void reply_status(struct srv_call *c, int rc, Annals__V1__ProjectionStatus *st,
                         const char *detail)
{
    if (rc) {
        srv_reply_code(c, rc, detail);
    } else {
        srv_reply(c, srv_pack(&st->base), GRPC_STATUS_OK, NULL, NULL, 0);
    }
    proj_status_free(st);
}

static const char *not_found(char *buf, size_t cap, const char *name)
{
    char nm[80];
    log_percent_encode(nm, sizeof(nm), name ? name : "", name ? strlen(name) : 0);
    snprintf(buf, cap, "projection '%s' does not exist", nm);
    return buf;
}

void srv_proj_call(struct srv_call *c)
{
    struct srv *s = c->srv;
    char detail[PROJ_DETAIL_MAX > LOG_DETAIL_MAX ? PROJ_DETAIL_MAX : LOG_DETAIL_MAX] = "";
    Annals__V1__ProjectionStatus *st = NULL;
    int rc;
    if (c->method == SRV_M_PROJ_CREATE) {
        rc = proj_create(s->proj, (Annals__V1__ProjectionDefinition *)c->req, &st, detail);
        reply_status(c, rc, st, detail);
    } else if (c->method == SRV_M_PROJ_GET) {
        Annals__V1__GetProjectionRequest *r = (Annals__V1__GetProjectionRequest *)c->req;
        rc = proj_status(s->proj, r->name, &st);
        reply_status(c, rc, st, rc == AN_ENOTFOUND ? not_found(detail, sizeof(detail), r->name)
                                                   : NULL);
    } else if (c->method == SRV_M_PROJ_REBUILD) {
        Annals__V1__RebuildProjectionRequest *r = (Annals__V1__RebuildProjectionRequest *)c->req;
        rc = proj_rebuild(s->proj, r->name, &st, detail);
        if (rc == AN_ENOTFOUND) {
            not_found(detail, sizeof(detail), r->name);
        }
        reply_status(c, rc, st, detail);
    } else if (c->method == SRV_M_PROJ_DELETE) {
        Annals__V1__DeleteProjectionRequest *r = (Annals__V1__DeleteProjectionRequest *)c->req;
        rc = proj_delete(s->proj, r->name, detail);
        if (rc == AN_ENOTFOUND) {
            not_found(detail, sizeof(detail), r->name);
        }
        if (rc) {
            srv_reply_code(c, rc, detail);
            return;
        }
        Annals__V1__DeleteProjectionResponse res = ANNALS__V1__DELETE_PROJECTION_RESPONSE__INIT;
        srv_reply(c, srv_pack(&res.base), GRPC_STATUS_OK, NULL, NULL, 0);
    } else if (c->method == SRV_M_PROJ_LIST) {
        Annals__V1__ListProjectionsResponse *res = NULL;
        rc = proj_list(s->proj, &res);
        if (rc) {
            srv_reply_code(c, rc, NULL);
            return;
        }
        srv_reply(c, srv_pack(&res->base), GRPC_STATUS_OK, NULL, NULL, 0);
        proj_list_free(res);
    } else {
        srv_reply_code(c, AN_EUNIMPL, NULL);
    }
}

/* ---- start and stop ---- */

int srv_proj_start(struct srv *s, char *detail)
{
    char dir[4096];
    pthread_mutex_init(&s->vw_mu, NULL);
    pthread_cond_init(&s->vw_cond, NULL);
    snprintf(dir, sizeof(dir), "%s/projections", s->cfg.data_dir);
    struct proj_cfg pc = {
        .dir = dir,
        .view_max_bytes = s->cfg.max_view_bytes,
        .log = proj_say,
        .on_advance = on_advance,
        .advance_arg = s,
    };
    int rc = proj_open(&pc, s->log, &s->proj, detail);
    if (rc) {
        return rc;
    }
    if (pthread_create(&s->vw_thread, NULL, view_waiter_main, s)) {
        proj_close(s->proj);
        s->proj = NULL;
        snprintf(detail, LOG_DETAIL_MAX, "cannot start the view-waiter thread");
        return AN_EINTERNAL;
    }
    s->vw_running = true;
    return 0;
}

void srv_proj_stop(struct srv *s)
{
    if (!s->vw_running) {
        return;
    }
    pthread_mutex_lock(&s->vw_mu);
    s->vw_stop = true;
    struct srv_call *take = NULL;
    while (s->vw_parked) {
        struct srv_call *c = s->vw_parked;
        vw_unlink(s, c);
        c->vw.next = take;
        take = c;
    }
    pthread_cond_signal(&s->vw_cond);
    pthread_mutex_unlock(&s->vw_mu);
    while (take) {
        struct srv_call *c = take;
        take = c->vw.next;
        srv_reply_code(c, AN_EUNAVAIL, "the server is shutting down");
    }
    pthread_join(s->vw_thread, NULL);
    s->vw_running = false;
}

void srv_proj_free(struct srv *s)
{
    proj_close(s->proj);
    s->proj = NULL;
    pthread_mutex_destroy(&s->vw_mu);
    pthread_cond_destroy(&s->vw_cond);
}

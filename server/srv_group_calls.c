/*
 * srv_group_calls.c - the Consumers service on the groups' engine
 * (srv_group.c): Consume calls (join, settles, sends, the end), the group
 * calls (CreateGroup, GetGroup, ListGroups, DeleteGroup), ReplayParked,
 * and the groups' part of Admin.Backup and of the admin page.
 *
 * A Consume call is a consumer once its first message, a join, names a
 * group it may consume: from then on its receives carry settles, applied
 * under the group's mutex, after which the group hands out what it can.
 * Each receive and each send holds a reference on the call; the call ends
 * (srv__consumer_maybe_end) once it has left its group and no send is in
 * flight. The group calls run on the CQ thread: they are rare, and a
 * create or delete is one synced commit of DATA/groups.
 */
#include "srv_group_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <grpc/byte_buffer_reader.h>

/* Before the join: ends the call at once. */
static void refuse(struct srv_call *c, int code, const char *detail)
{
    c->cons.left = true;
    c->cons.ended = true;
    srv_reply_code(c, code, detail);
}

static void join(struct srv_call *c, const Annals__V1__Join *j)
{
    struct srv *s = c->srv;
    char detail[LOG_DETAIL_MAX];
    if (!j->group || !j->group[0]) {
        refuse(c, AN_EINVAL, "join.group: empty");
        return;
    }
    if (j->prefetch > PREFETCH_MAX) {
        snprintf(detail, sizeof(detail), "join.prefetch: %u > limit %u", j->prefetch,
                 PREFETCH_MAX);
        refuse(c, AN_EINVAL, detail);
        return;
    }
    int rc = srv_authorize_group(c, j->group, false, detail);
    if (rc) {
        refuse(c, rc, detail);
        return;
    }
    struct srv_group *g = srv__group_get(s->groups, j->group);
    if (!g) {
        char enc[200];
        log_percent_encode(enc, sizeof(enc), j->group, strlen(j->group));
        snprintf(detail, sizeof(detail), "group '%s' not found", enc);
        refuse(c, AN_ENOTFOUND, detail);
        return;
    }
    pthread_mutex_lock(&g->mu);
    if (g->deleted) {
        pthread_mutex_unlock(&g->mu);
        srv__group_unref(g);
        refuse(c, AN_ENOTFOUND, "the group was deleted");
        return;
    }
    struct srv_consumer *k = &c->cons;
    pthread_mutex_lock(&c->mu); /* srv_consume_end reads k->g on the main thread */
    k->g = g; /* the reference */
    pthread_mutex_unlock(&c->mu);
    k->prefetch = j->prefetch ? j->prefetch : 16;
    k->prev = NULL;
    k->next = g->consumers;
    if (g->consumers) {
        g->consumers->cons.prev = c;
    }
    g->consumers = c;
    g->n_consumers++;
    srv__pump(g, c->q->rd);
    pthread_mutex_unlock(&g->mu);
}

static void recv_next(struct srv_call *c)
{
    srv_call_ref(c);
    c->cons.reading = srv_recv(c) == 0;
    if (!c->cons.reading) {
        srv_call_unref(c);
    }
}

void srv_consume_on_read(struct srv_call *c, bool ok)
{
    struct srv_consumer *k = &c->cons;
    struct srv_group *g = k->g;
    if (!g) {
        k->reading = false; /* not joined: no other thread looks at k */
    }
    Annals__V1__ConsumeRequest *req = NULL;
    if (ok && c->recv) {
        grpc_byte_buffer_reader r;
        if (grpc_byte_buffer_reader_init(&r, c->recv)) {
            grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            req = annals__v1__consume_request__unpack(NULL, GRPC_SLICE_LENGTH(sl),
                                                      GRPC_SLICE_START_PTR(sl));
            grpc_slice_unref(sl);
        }
        grpc_byte_buffer_destroy(c->recv);
        c->recv = NULL;
        if (!req) {
            ok = false;
            if (!g) {
                refuse(c, AN_EINVAL, "malformed ConsumeRequest");
            } else {
                pthread_mutex_lock(&g->mu);
                k->reading = false;
                srv__consumer_leave(g, c, AN_EINVAL, "malformed ConsumeRequest");
                pthread_mutex_unlock(&g->mu);
            }
            srv_call_unref(c);
            return;
        }
    }
    if (!g) {
        /* the first message */
        if (k->ended) {
            /* shut down before it came */
        } else if (!req) {
            refuse(c, AN_EINVAL, "the call carried no join");
        } else if (atomic_load(&c->srv->shutting_down)) {
            refuse(c, AN_EUNAVAIL, "the server is shutting down");
        } else if (req->msg_case != ANNALS__V1__CONSUME_REQUEST__MSG_JOIN) {
            refuse(c, AN_EINVAL, "the first ConsumeRequest must carry join");
        } else {
            join(c, req->join);
            if (k->g) {
                pthread_mutex_lock(&k->g->mu);
                recv_next(c);
                pthread_mutex_unlock(&k->g->mu);
            }
        }
        if (req) {
            annals__v1__consume_request__free_unpacked(req, NULL);
        }
        srv_call_unref(c);
        return;
    }
    pthread_mutex_lock(&g->mu);
    k->reading = false;
    if (!req) {
        /* half-closed or gone: leave; the others take its events */
        srv__consumer_leave(g, c, 0, NULL);
        srv__pump(g, c->q->rd);
    } else if (!k->left) {
        if (req->msg_case == ANNALS__V1__CONSUME_REQUEST__MSG_SETTLE) {
            srv__settle(g, c, req->settle);
            srv__pump(g, c->q->rd);
            recv_next(c);
        } else {
            srv__consumer_leave(g, c, AN_EINVAL, "join may come only once; then settle");
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (req) {
        annals__v1__consume_request__free_unpacked(req, NULL);
    }
    srv_call_unref(c);
}

void srv_consume_on_write(struct srv_call *c, bool ok)
{
    struct srv_group *g = c->cons.g;
    pthread_mutex_lock(&g->mu);
    c->cons.sending = false;
    if (!ok) {
        srv__consumer_leave(g, c, AN_ECANCELLED, "the client went away");
    }
    if (c->cons.left) {
        srv__consumer_maybe_end(c);
    }
    srv__pump(g, c->q->rd);
    pthread_mutex_unlock(&g->mu);
    srv_call_unref(c);
}

void srv_consume_end(struct srv_call *c, int code, const char *detail)
{
    pthread_mutex_lock(&c->mu); /* join sets it on the call's CQ thread */
    struct srv_group *g = c->cons.g;
    pthread_mutex_unlock(&c->mu);
    if (!g) {
        /* not joined yet: its first read ends it */
        grpc_call_cancel_with_status(c->call, srv_status_of(code), detail, NULL);
        return;
    }
    pthread_mutex_lock(&g->mu);
    bool sending = c->cons.sending;
    srv__consumer_leave(g, c, code, detail);
    pthread_mutex_unlock(&g->mu);
    if (sending) {
        /* a send held back by a client that stopped reading */
        grpc_call_cancel_with_status(c->call, srv_status_of(code), detail, NULL);
    }
}

/* Frees what a Consume call holds (its CLOSE, from call_free's side). */
static void consume_release(struct srv_call *c)
{
    if (c->cons.g) {
        srv__group_unref(c->cons.g);
        c->cons.g = NULL;
    }
}

/* ---- the unary calls ---- */

static void status_of(struct srv_group *g, uint64_t head, Annals__V1__GroupStatus *st)
{
    annals__v1__group_status__init(st);
    st->group = g->def;
    st->checkpoint = g->checkpoint;
    st->head = head;
    st->consumers = g->n_consumers;
    st->in_flight = g->in_flight;
    st->delivered = g->delivered;
    st->acked = g->acked;
    st->redelivered = g->redelivered;
    st->parked = g->parked;
}

static void reply_status(struct srv_call *c, struct srv_group *g)
{
    Annals__V1__GroupStatus st;
    pthread_mutex_lock(&g->mu);
    status_of(g, log_head(c->srv->log), &st);
    grpc_byte_buffer *bb = srv_pack(&st.base);
    pthread_mutex_unlock(&g->mu);
    srv_reply(c, bb, GRPC_STATUS_OK, NULL, NULL, 0);
}

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len < 1 || len > 64) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = n[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-')) {
            return false;
        }
    }
    return true;
}

static int check_names(const char *what, char *const *v, size_t n, char *detail)
{
    if (n > FILTER_MAX) {
        snprintf(detail, LOG_DETAIL_MAX, "filter.%s: %zu entries > limit %u", what, n,
                 FILTER_MAX);
        return AN_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        if (len == 0 || len > LOG_NAME_MAX || !log_utf8_valid(v[i], len)) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "filter.%s[%zu]: must be 1..%u bytes of UTF-8", what, i, LOG_NAME_MAX);
            return AN_EINVAL;
        }
    }
    return 0;
}

int srv_group_check_def(const Annals__V1__ConsumerGroup *d, char *detail)
{
    if (!name_ok(d->name)) {
        snprintf(detail, LOG_DETAIL_MAX, "name: must be 1..64 of [a-z0-9_-]");
        return AN_EINVAL;
    }
    bool has_filter = d->filter && (d->filter->n_stream_prefixes || d->filter->n_event_types);
    size_t slen = strlen(d->stream);
    if (slen) {
        if (slen > LOG_NAME_MAX || !log_utf8_valid(d->stream, slen)) {
            snprintf(detail, LOG_DETAIL_MAX, "stream: must be 1..%u bytes of UTF-8",
                     LOG_NAME_MAX);
            return AN_EINVAL;
        }
        if (has_filter) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "filter: applies to all-streams groups only (stream is set)");
            return AN_EINVAL;
        }
    }
    if (d->from_end && d->from_position) {
        snprintf(detail, LOG_DETAIL_MAX, "from_end and from_position: choose one");
        return AN_EINVAL;
    }
    if (d->filter) {
        int rc = check_names("stream_prefixes", d->filter->stream_prefixes,
                             d->filter->n_stream_prefixes, detail);
        if (!rc) {
            rc = check_names("event_types", d->filter->event_types, d->filter->n_event_types,
                             detail);
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static void on_create(struct srv_call *c)
{
    struct srv_groups *gs = c->srv->groups;
    const Annals__V1__ConsumerGroup *d = (const Annals__V1__ConsumerGroup *)c->req;
    char detail[LOG_DETAIL_MAX];
    int rc = srv_group_check_def(d, detail);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    size_t len = annals__v1__consumer_group__get_packed_size(d);
    uint8_t *bytes = malloc(len ? len : 1);
    if (!bytes) {
        srv_reply_code(c, AN_ENOMEM, NULL);
        return;
    }
    annals__v1__consumer_group__pack(d, bytes);
    pthread_mutex_lock(&gs->pmu);
    pthread_mutex_lock(&gs->mu);
    struct srv_group *old = srv__group_find(gs, d->name);
    if (old) {
        bool same = old->def_len == len && memcmp(old->def_bytes, bytes, len) == 0;
        atomic_fetch_add(&old->refs, 1);
        pthread_mutex_unlock(&gs->mu);
        pthread_mutex_unlock(&gs->pmu);
        free(bytes);
        if (same) {
            reply_status(c, old);
        } else {
            snprintf(detail, sizeof(detail),
                     "group '%s' exists with a different definition", d->name);
            srv_reply_code(c, AN_EEXIST, detail);
        }
        srv__group_unref(old);
        return;
    }
    pthread_mutex_unlock(&gs->mu);
    struct srv_group *g;
    if ((rc = srv__group_new(gs, bytes, len, &g))) {
        pthread_mutex_unlock(&gs->pmu);
        srv_reply_code(c, rc, NULL);
        return;
    }
    uint64_t head = log_head(c->srv->log);
    g->scanned = d->from_end ? head : d->from_position ? d->from_position - 1 : 0;
    g->checkpoint = g->ckpt_stored = g->scanned;
    /* the definition and the starting point, durably, before the answer */
    MDB_txn *txn;
    struct gstate_rec st = {.checkpoint = g->checkpoint};
    MDB_val k = {strlen(g->name), g->name};
    MDB_val v = {len, g->def_bytes};
    MDB_val sv = {sizeof(st), &st};
    int mrc = mdb_txn_begin(gs->env, NULL, 0, &txn);
    if (!mrc && !(mrc = mdb_put(txn, gs->defs, &k, &v, 0)) &&
        !(mrc = mdb_put(txn, gs->state, &k, &sv, 0))) {
        mrc = mdb_txn_commit(txn);
    } else if (!mrc || txn) {
        mdb_txn_abort(txn);
    }
    if (mrc) {
        pthread_mutex_unlock(&gs->pmu);
        srv__group_unref(g);
        snprintf(detail, sizeof(detail), "cannot store the group: %s", mdb_strerror(mrc));
        srv_reply_code(c, srv__mdb_code(mrc), detail);
        return;
    }
    pthread_mutex_lock(&gs->mu);
    g->next = gs->list;
    gs->list = g;
    gs->n++;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&gs->mu);
    pthread_mutex_unlock(&gs->pmu);
    say_info("groups", "msg=created group=%s from=%llu", g->name,
             (unsigned long long)g->scanned + 1);
    reply_status(c, g);
    srv__group_unref(g);
}

static void not_found(struct srv_call *c, const char *name)
{
    char enc[200], detail[LOG_DETAIL_MAX];
    log_percent_encode(enc, sizeof(enc), name, strlen(name));
    snprintf(detail, sizeof(detail), "group '%s' not found", enc);
    srv_reply_code(c, AN_ENOTFOUND, detail);
}

static void on_delete(struct srv_call *c)
{
    struct srv_groups *gs = c->srv->groups;
    const char *name = ((Annals__V1__DeleteGroupRequest *)c->req)->name;
    pthread_mutex_lock(&gs->pmu);
    pthread_mutex_lock(&gs->mu);
    struct srv_group **pp = &gs->list;
    while (*pp && strcmp((*pp)->name, name) != 0) {
        pp = &(*pp)->next;
    }
    struct srv_group *g = *pp;
    if (g) {
        *pp = g->next;
        gs->n--;
    }
    pthread_mutex_unlock(&gs->mu);
    if (!g) {
        pthread_mutex_unlock(&gs->pmu);
        not_found(c, name);
        return;
    }
    pthread_mutex_lock(&g->mu);
    g->deleted = true;
    while (g->consumers) {
        struct srv_call *k = g->consumers;
        bool sending = k->cons.sending;
        srv__consumer_leave(g, k, AN_ENOTFOUND, "the group was deleted");
        if (sending) {
            grpc_call_cancel_with_status(k->call, GRPC_STATUS_NOT_FOUND,
                                         "the group was deleted", NULL);
        }
    }
    pthread_mutex_unlock(&g->mu);
    int rc = srv__drop_records(gs, g->name);
    pthread_mutex_unlock(&gs->pmu);
    say_info("groups", "msg=deleted group=%s", g->name);
    srv__group_unref(g); /* the list's */
    if (rc) {
        srv_reply_code(c, rc, "cannot delete the group's records");
        return;
    }
    Annals__V1__DeleteGroupResponse r = ANNALS__V1__DELETE_GROUP_RESPONSE__INIT;
    srv_reply(c, srv_pack(&r.base), GRPC_STATUS_OK, NULL, NULL, 0);
}

static void on_list(struct srv_call *c)
{
    struct srv_groups *gs = c->srv->groups;
    uint64_t head = log_head(c->srv->log);
    pthread_mutex_lock(&gs->mu);
    size_t n = gs->n;
    Annals__V1__GroupStatus *st = calloc(n ? n : 1, sizeof(*st));
    Annals__V1__GroupStatus **stp = calloc(n ? n : 1, sizeof(*stp));
    if (!st || !stp) {
        pthread_mutex_unlock(&gs->mu);
        free(st);
        free(stp);
        srv_reply_code(c, AN_ENOMEM, NULL);
        return;
    }
    size_t i = 0;
    for (struct srv_group *g = gs->list; g && i < n; g = g->next, i++) {
        pthread_mutex_lock(&g->mu);
        status_of(g, head, &st[i]);
        pthread_mutex_unlock(&g->mu);
        stp[i] = &st[i];
    }
    Annals__V1__ListGroupsResponse r = ANNALS__V1__LIST_GROUPS_RESPONSE__INIT;
    r.n_groups = i;
    r.groups = stp;
    grpc_byte_buffer *bb = srv_pack(&r.base); /* defs live while the list is locked */
    pthread_mutex_unlock(&gs->mu);
    free(st);
    free(stp);
    srv_reply(c, bb, GRPC_STATUS_OK, NULL, NULL, 0);
}

/* ---- ReplayParked ---- */

struct replay_ctx {
    uint64_t *pos;
    size_t n, cap;
    uint64_t last_version;
    bool any;
};

static bool replay_collect(void *arg, const struct log_event *ev)
{
    struct replay_ctx *r = arg;
    r->any = true;
    r->last_version = ev->version;
    Annals__V1__RecordedEvent *re =
        annals__v1__recorded_event__unpack(NULL, ev->packed_len, ev->packed);
    if (!re) {
        return true;
    }
    json_t *j = json_loadb((const char *)re->data.data, re->data.len, 0, NULL);
    json_t *p = j ? json_object_get(j, "original_position") : NULL;
    if (json_is_integer(p) && json_integer_value(p) > 0) {
        srv__vec_push(&r->pos, &r->n, &r->cap, (uint64_t)json_integer_value(p));
    }
    json_decref(j);
    annals__v1__recorded_event__free_unpacked(re, NULL);
    return true;
}

struct replay_req {
    struct srv_group *g;
    struct srv_call *call;
    Annals__V1__DeleteStreamRequest del;
    char stream[80];
    size_t n;
};

static void replay_done(struct srv_wreq *w)
{
    struct replay_req *p = w->arg;
    struct srv_call *c = p->call;
    if (w->op.rc == AN_ECONFLICT) {
        srv_reply_code(c, AN_EUNAVAIL,
                       "events were parked while the replay ran; they are not replayed yet: "
                       "call ReplayParked again");
    } else if (w->op.rc) {
        srv_reply_code(c, w->op.rc, w->op.detail);
    } else {
        say_info("groups", "msg=\"parked events replayed\" group=%s events=%zu", p->g->name,
                 p->n);
        reply_status(c, p->g);
    }
    srv__wake_thread(p->g->gs);
    srv__group_unref(p->g);
    srv_call_unref(c);
    free(p);
    srv_wreq_free(w);
}

static void on_replay(struct srv_call *c)
{
    struct srv *s = c->srv;
    const char *name = ((Annals__V1__ReplayParkedRequest *)c->req)->name;
    struct srv_group *g = srv__group_get(s->groups, name);
    if (!g) {
        not_found(c, name);
        return;
    }
    struct replay_req *p = calloc(1, sizeof(*p));
    struct srv_wreq *w = calloc(1, sizeof(*w));
    if (!p || !w) {
        free(p);
        free(w);
        srv__group_unref(g);
        srv_reply_code(c, AN_ENOMEM, NULL);
        return;
    }
    snprintf(p->stream, sizeof(p->stream), "$parked-%s", g->name);
    struct replay_ctx r = {0};
    log_reader *rd = c->q->rd;
    int rc = log_reader_begin(rd);
    if (!rc) {
        struct log_stream_read q = {.stream = p->stream, .as_of = log_reader_head(rd)};
        rc = log_read_stream(rd, &q, replay_collect, &r, NULL, NULL);
        rc = rc == AN_ENOTFOUND ? 0 : rc;
        log_reader_end(rd);
    }
    bool oom = false;
    if (!rc) {
        /* the group's mutex before the log's map lock, as srv__pump takes
         * them: a writer waiting to grow the map would otherwise close a
         * cycle (the map lock prefers writers) */
        pthread_mutex_lock(&g->mu);
        rc = log_reader_begin(rd);
        for (size_t i = 0; !rc && i < r.n && !oom; i++) {
            oom = !srv__replay_one(g, rd, r.pos[i]);
        }
        if (!rc) {
            g->parked = g->parked > r.n ? g->parked - r.n : 0;
            g->state_dirty = true;
            log_reader_end(rd);
        }
        pthread_mutex_unlock(&g->mu);
    }
    free(r.pos);
    if (rc || oom) {
        free(p);
        free(w);
        srv__group_unref(g);
        srv_reply_code(c, rc ? rc : AN_ENOMEM, "cannot read the parked events");
        return;
    }
    /* the replayed positions are stored before the parked stream goes */
    srv__store(s->groups, g);
    srv__wake_thread(s->groups);
    if (!r.any) {
        free(p);
        free(w);
        reply_status(c, g);
        srv__group_unref(g);
        return;
    }
    p->n = r.n;
    p->g = g;
    p->call = c;
    annals__v1__delete_stream_request__init(&p->del);
    p->del.stream = p->stream;
    p->del.expect = ANNALS__V1__EXPECTATION__EXPECT_VERSION;
    p->del.expected_version = r.last_version;
    srv_call_ref(c);
    w->op.kind = LOG_OP_DELETE;
    w->op.del = &p->del;
    w->op.allow_reserved = true;
    w->op.validated = true; /* the server's own name and expectation: valid */
    w->done = replay_done;
    w->arg = p;
    rc = srv_writer_submit(s, w);
    if (rc) {
        srv_call_unref(c);
        free(p);
        free(w);
        srv__group_unref(g);
        srv_reply_code(c, rc == AN_EBUSY ? AN_EUNAVAIL : rc, "the writer cannot take the request");
    }
}

void srv_group_call(struct srv_call *c)
{
    if (c->method == SRV_M_GRP_CREATE) {
        on_create(c);
    } else if (c->method == SRV_M_GRP_GET) {
        const char *name = ((Annals__V1__GetGroupRequest *)c->req)->name;
        struct srv_group *g = srv__group_get(c->srv->groups, name);
        if (!g) {
            not_found(c, name);
            return;
        }
        reply_status(c, g);
        srv__group_unref(g);
    } else if (c->method == SRV_M_GRP_LIST) {
        on_list(c);
    } else if (c->method == SRV_M_GRP_DELETE) {
        on_delete(c);
    } else if (c->method == SRV_M_GRP_REPLAY) {
        on_replay(c);
    } else {
        srv_reply_code(c, AN_EINTERNAL, "not a Consumers method");
    }
}

/* ---- backup and the admin page ---- */

int srv_group_backup(struct srv *s, const char *dest, char *detail)
{
    struct srv_groups *gs = s->groups;
    if (mkdir(dest, 0755) != 0) {
        snprintf(detail, LOG_DETAIL_MAX, "%.200s: cannot create it: %s", dest, strerror(errno));
        return AN_EIO;
    }
    srv__store(gs, NULL);
    int rc = mdb_env_copy2(gs->env, dest, MDB_CP_COMPACT);
    if (rc) {
        snprintf(detail, LOG_DETAIL_MAX, "copying the groups to %.180s: %s", dest,
                 mdb_strerror(rc));
        return srv__mdb_code(rc);
    }
    return 0;
}

json_t *srv_group_json(struct srv *s)
{
    struct srv_groups *gs = s->groups;
    uint64_t head = log_head(s->log);
    json_t *arr = json_array();
    pthread_mutex_lock(&gs->mu);
    for (struct srv_group *g = gs->list; arr && g; g = g->next) {
        pthread_mutex_lock(&g->mu);
        json_array_append_new(
            arr, json_pack("{s:s,s:I,s:I,s:I,s:i,s:i,s:I,s:I,s:I,s:I}", "name", g->name,
                           "checkpoint", (json_int_t)g->checkpoint, "head", (json_int_t)head,
                           "lag", (json_int_t)(head > g->checkpoint ? head - g->checkpoint : 0),
                           "consumers", (int)g->n_consumers, "in_flight", (int)g->in_flight,
                           "delivered", (json_int_t)g->delivered, "acked",
                           (json_int_t)g->acked, "redelivered", (json_int_t)g->redelivered,
                           "parked", (json_int_t)g->parked));
        pthread_mutex_unlock(&g->mu);
    }
    pthread_mutex_unlock(&gs->mu);
    return json_pack("{s:o}", "groups", arr ? arr : json_array());
}

/* The call is being freed: a Consume call drops its group. */
void srv_consume_free(struct srv_call *c)
{
    if (c->method == SRV_M_CONSUME) {
        consume_release(c);
    }
}

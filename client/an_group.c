/*
 * an_group.c - libannals: consumer groups (annals.v1.Consumers): the group
 * calls, and a consumer as a pull iterator over Consume.
 *
 * A consumer owns one bidirectional call and a pluck completion queue of
 * its own, like a subscription (an_sub.c). an_consumer_open sends the join
 * in the call's first batch and returns. an_consumer_next first sends the
 * settles queued since the last call (one Settle message; one send in
 * flight at a time), then hands out the deliveries of the message it
 * holds, one per call, receiving the next message when it has none left.
 * The server sends only while this consumer holds fewer than its prefetch
 * unsettled events, so a caller that stops calling holds nothing but its
 * prefetch.
 *
 * Reconnect. When the call ends with a transient code (UNAVAILABLE: the
 * server restarted or the connection broke) and the consumer was not
 * closed, an_consumer_next joins again on a new call, with the client's
 * backoff between attempts, while the client's timeout has not passed
 * since the cut; within one an_consumer_next it tries until its own
 * timeout, then returns AN_SUB_TIMEOUT and goes on at the next call. The
 * deliveries and settles of the old call are dropped: the server hands
 * the unsettled events out again. Past the client's timeout the consumer
 * ends with the last code.
 *
 * Tags: START, MSG, SEND and STATUS, at most one of each in flight; every
 * batch started is plucked exactly once, by the wait that needs it or by
 * reap, before the call is released.
 */
#include "an_int.h"
#include "an_tsan.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>

#define AN__M_CREATE_GROUP "/annals.v1.Consumers/CreateGroup"
#define AN__M_GET_GROUP "/annals.v1.Consumers/GetGroup"
#define AN__M_LIST_GROUPS "/annals.v1.Consumers/ListGroups"
#define AN__M_DELETE_GROUP "/annals.v1.Consumers/DeleteGroup"
#define AN__M_REPLAY_PARKED "/annals.v1.Consumers/ReplayParked"
#define AN__M_CONSUME "/annals.v1.Consumers/Consume"

#define SETTLE_FLUSH_AT 4096u   /* queued settles sent without waiting for next */

/* ---- the group calls ---- */

static bool arrays_ok(const char *const *v, size_t n)
{
    if (n && !v) return false;
    for (size_t i = 0; i < n; i++) {
        if (!v[i]) return false;
    }
    return true;
}

int an_group_create(an_client *c, const struct an_group_def *def,
                    Annals__V1__GroupStatus **out, struct an_error *err)
{
    if (!c || !def) return an__err_set(err, AN_EINVAL, 0, "client or definition is NULL");
    if (!arrays_ok(def->stream_prefixes, def->n_stream_prefixes) ||
        !arrays_ok(def->event_types, def->n_event_types)) {
        return an__err_set(err, AN_EINVAL, 0, "a NULL filter array or entry");
    }
    Annals__V1__ConsumerGroup g = ANNALS__V1__CONSUMER_GROUP__INIT;
    Annals__V1__Filter f = ANNALS__V1__FILTER__INIT;
    /* protobuf-c only reads the strings; the casts drop const */
    g.name = (char *)(uintptr_t)(def->name ? def->name : "");
    g.stream = (char *)(uintptr_t)(def->stream ? def->stream : "");
    if (def->n_stream_prefixes || def->n_event_types) {
        f.n_stream_prefixes = def->n_stream_prefixes;
        f.stream_prefixes = (char **)(uintptr_t)def->stream_prefixes;
        f.n_event_types = def->n_event_types;
        f.event_types = (char **)(uintptr_t)def->event_types;
        g.filter = &f;
    }
    g.from_position = def->from_position;
    g.from_end = def->from_end;
    g.max_deliveries = def->max_deliveries;
    g.ack_timeout_ms = def->ack_timeout_ms;
    g.ordered_per_stream = def->ordered_per_stream;
    ProtobufCMessage *res = NULL;
    int rc = an__unary_msg(c, AN__M_CREATE_GROUP, &g.base, true,
                           &annals__v1__group_status__descriptor, &res, err);
    if (rc) return rc;
    if (out) {
        *out = (Annals__V1__GroupStatus *)res;
    } else {
        protobuf_c_message_free_unpacked(res, NULL);
    }
    return 0;
}

/* GetGroup and ReplayParked share their shape: a name in, a status out. */
static int name_call(an_client *c, const char *method, const char *name, bool retry,
                     Annals__V1__GroupStatus **out, struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    Annals__V1__GetGroupRequest req = ANNALS__V1__GET_GROUP_REQUEST__INIT;
    req.name = (char *)(uintptr_t)(name ? name : "");
    ProtobufCMessage *res = NULL;
    int rc = an__unary_msg(c, method, &req.base, retry, &annals__v1__group_status__descriptor,
                           &res, err);
    if (rc) return rc;
    if (out) {
        *out = (Annals__V1__GroupStatus *)res;
    } else {
        protobuf_c_message_free_unpacked(res, NULL);
    }
    return 0;
}

int an_group_get(an_client *c, const char *name, Annals__V1__GroupStatus **out,
                 struct an_error *err)
{
    return name_call(c, AN__M_GET_GROUP, name, true, out, err);
}

int an_group_replay_parked(an_client *c, const char *name, Annals__V1__GroupStatus **out,
                           struct an_error *err)
{
    /* ReplayParkedRequest has GetGroupRequest's one field: the same bytes */
    return name_call(c, AN__M_REPLAY_PARKED, name, false, out, err);
}

int an_group_delete(an_client *c, const char *name, struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    Annals__V1__DeleteGroupRequest req = ANNALS__V1__DELETE_GROUP_REQUEST__INIT;
    req.name = (char *)(uintptr_t)(name ? name : "");
    ProtobufCMessage *res = NULL;
    int rc = an__unary_msg(c, AN__M_DELETE_GROUP, &req.base, false,
                           &annals__v1__delete_group_response__descriptor, &res, err);
    if (rc) return rc;
    protobuf_c_message_free_unpacked(res, NULL);
    return 0;
}

int an_group_list(an_client *c, Annals__V1__ListGroupsResponse **out, struct an_error *err)
{
    if (!c || !out) return an__err_set(err, AN_EINVAL, 0, "client or out is NULL");
    Annals__V1__ListGroupsRequest req = ANNALS__V1__LIST_GROUPS_REQUEST__INIT;
    ProtobufCMessage *res = NULL;
    int rc = an__unary_msg(c, AN__M_LIST_GROUPS, &req.base, true,
                           &annals__v1__list_groups_response__descriptor, &res, err);
    if (rc) return rc;
    *out = (Annals__V1__ListGroupsResponse *)res;
    return 0;
}

void an_group_status_free(Annals__V1__GroupStatus *s)
{
    if (s) annals__v1__group_status__free_unpacked(s, NULL);
}

void an_group_list_free(Annals__V1__ListGroupsResponse *l)
{
    if (l) annals__v1__list_groups_response__free_unpacked(l, NULL);
}

/* ---- a consumer ---- */

enum { TAG_START = 0, TAG_MSG, TAG_SEND, TAG_STATUS, TAG_COUNT };

#define TAG(t) ((void *)(uintptr_t)((t) + 1))

struct settles {
    uint64_t *v;
    size_t n, cap;
};

struct an_consumer {
    an_client *c;                   /* borrowed; outlives the consumer */
    char *group;
    uint32_t prefetch;
    grpc_completion_queue *cq;      /* pluck, ours alone */
    grpc_call *call;                /* NULL between calls (reconnecting) */
    struct an__lease lease;
    bool leased;
    bool pending[TAG_COUNT];
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_byte_buffer *rbuf;
    grpc_status_code status;
    grpc_slice details;
    Annals__V1__ConsumeResponse *msg; /* being handed out (in arena) */
    struct an__arena arena;           /* holds msg (an_arena.c) */
    size_t next;
    struct settles ack, nack, park;
    char *reason;                   /* of the queued nacks and parks */
    bool cut;                       /* the call ended; joining again */
    int64_t cut_at_ms;              /* when the cut began */
    int64_t joined_at_ms;           /* the last join after a cut (0: none since a message) */
    int attempt;                    /* joins since the cut */
    int cut_rc;
    struct an_error cut_err;
    bool done;                      /* over for good: rc, err */
    int rc;
    struct an_error err;
};

static bool k_start(an_consumer *k, grpc_op *ops, size_t n, int tag)
{
    AN_TSAN_RELEASE(&k->pending[tag]);
    if (grpc_call_start_batch(k->call, ops, n, TAG(tag), NULL) != GRPC_CALL_OK) return false;
    k->pending[tag] = true;
    return true;
}

static bool k_wait(an_consumer *k, int tag, gpr_timespec deadline)
{
    grpc_event ev = grpc_completion_queue_pluck(k->cq, TAG(tag), deadline, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) return false;
    AN_TSAN_ACQUIRE(&k->pending[tag]);
    k->pending[tag] = false;
    return true;
}

static void k_reap(an_consumer *k)
{
    for (int t = 0; t < TAG_COUNT; t++) {
        if (k->pending[t]) {
            k_wait(k, t, gpr_inf_future(GPR_CLOCK_MONOTONIC));
        }
    }
}

static void k_lease_end(an_consumer *k, int rc)
{
    if (!k->leased) return;
    k->leased = false;
    an__ep_release(k->c, &k->lease, rc);
}

static void settles_clear(an_consumer *k)
{
    k->ack.n = k->nack.n = k->park.n = 0;
    free(k->reason);
    k->reason = NULL;
}

/* Ends the current call (already over, or cancelled here) and frees it. */
static void call_drop(an_consumer *k)
{
    if (!k->call) return;
    grpc_call_cancel(k->call, NULL);
    k_reap(k);
    grpc_call_unref(k->call);
    k->call = NULL;
    grpc_byte_buffer_destroy(k->rbuf);
    k->rbuf = NULL;
    grpc_slice_unref(k->details);
    k->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&k->md_initial);
    grpc_metadata_array_destroy(&k->md_trailing);
    grpc_metadata_array_init(&k->md_initial);
    grpc_metadata_array_init(&k->md_trailing);
    k->msg = NULL;
    an__arena_reset(&k->arena);
    settles_clear(k);
}

static void k_finish(an_consumer *k, int rc, const struct an_error *err)
{
    k->done = true;
    k->rc = rc;
    if (err) {
        k->err = *err;
    } else {
        an__err_set(&k->err, rc, 0, "%s", an_strerror(rc));
    }
}

/* Starts a call on the leased endpoint and sends the join. 0 or AN_E*. */
static int join_call(an_consumer *k)
{
    Annals__V1__ConsumeRequest req = ANNALS__V1__CONSUME_REQUEST__INIT;
    Annals__V1__Join j = ANNALS__V1__JOIN__INIT;
    j.group = k->group;
    j.prefetch = k->prefetch;
    req.msg_case = ANNALS__V1__CONSUME_REQUEST__MSG_JOIN;
    req.join = &j;
    k->call = an__call_new_ep(k->lease.ep, k->cq, AN__M_CONSUME,
                              gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (!k->call) return AN_EINTERNAL;
    grpc_byte_buffer *bb = an__pack(&req.base);
    if (!bb) return AN_ENOMEM;
    /* The join is a send like the settles after it: gRPC core takes the
     * next SEND_MESSAGE only once the batch that carried this one has
     * completed, so the join goes in the TAG_SEND batch (which
     * send_settles waits for), not with RECV_INITIAL_METADATA, whose batch
     * may complete after the first deliveries are in. */
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(k->lease.ep, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    bool ok = k_start(k, ops, 2, TAG_SEND);
    grpc_byte_buffer_destroy(bb);
    if (ok) {
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[0].data.recv_initial_metadata.recv_initial_metadata = &k->md_initial;
        ok = k_start(k, ops, 1, TAG_START);
    }
    return ok ? 0 : AN_EINTERNAL;
}

/* A new call after a cut. 0, or the code of this attempt. */
static int rejoin(an_consumer *k)
{
    call_drop(k);
    k_lease_end(k, AN__ABANDONED);
    int rc = an__ep_acquire(k->c, &k->lease);
    if (rc) return rc;
    k->leased = true;
    rc = join_call(k);
    if (rc) {
        call_drop(k);
        k_lease_end(k, AN__ABANDONED);
    }
    return rc;
}

/* The server ended the call: its status decides between the end and a cut. */
static void on_end(an_consumer *k, bool closing)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &k->md_trailing;
    op.data.recv_status_on_client.status = &k->status;
    op.data.recv_status_on_client.status_details = &k->details;
    struct an_error err;
    int rc;
    if (!k->pending[TAG_STATUS] && !k_start(k, &op, 1, TAG_STATUS)) {
        rc = an__err_set(&err, AN_EINTERNAL, 0, "cannot start RECV_STATUS_ON_CLIENT");
    } else {
        k_wait(k, TAG_STATUS, gpr_inf_future(GPR_CLOCK_MONOTONIC));
        rc = an__err_from_status(&err, k->status, k->details, &k->md_trailing);
        if (rc == 0) {
            rc = an__err_set(&err, AN_EUNAVAIL, 0, "the server ended the consumer's call");
        }
    }
    k_lease_end(k, rc);
    if (closing || !an__transient(rc)) {
        call_drop(k);
        k_finish(k, rc, &err);
        return;
    }
    int64_t now = an__now_ms();
    if (!k->joined_at_ms || now - k->joined_at_ms > 2000) {
        /* a new cut (not the quick end of a join that just went out) */
        k->cut_at_ms = now;
        k->attempt = 0;
    }
    k->cut = true;
    k->cut_rc = rc;
    k->cut_err = err;
    call_drop(k);
}

/* ---- settles ---- */

static int settles_push(struct settles *s, uint64_t pos)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        uint64_t *p = realloc(s->v, nc * sizeof(*p));
        if (!p) return AN_ENOMEM;
        s->v = p;
        s->cap = nc;
    }
    s->v[s->n++] = pos;
    return 0;
}

/* Sends the queued settles as one message (waiting for the previous send). */
static int send_settles(an_consumer *k)
{
    if (!k->ack.n && !k->nack.n && !k->park.n) return 0;
    if (!k->call || k->cut) {
        settles_clear(k); /* the old call's: the server hands those out again */
        return 0;
    }
    if (k->pending[TAG_SEND]) {
        k_wait(k, TAG_SEND, an__deadline(k->c->timeout_ms));
        if (k->pending[TAG_SEND]) return AN_EDEADLINE; /* the server stopped reading */
    }
    Annals__V1__ConsumeRequest req = ANNALS__V1__CONSUME_REQUEST__INIT;
    Annals__V1__Settle st = ANNALS__V1__SETTLE__INIT;
    st.n_ack = k->ack.n;
    st.ack = k->ack.v;
    st.n_nack = k->nack.n;
    st.nack = k->nack.v;
    st.n_park = k->park.n;
    st.park = k->park.v;
    st.reason = k->reason ? k->reason : "";
    req.msg_case = ANNALS__V1__CONSUME_REQUEST__MSG_SETTLE;
    req.settle = &st;
    grpc_byte_buffer *bb = an__pack(&req.base);
    if (!bb) return AN_ENOMEM;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    bool ok = k_start(k, &op, 1, TAG_SEND);
    grpc_byte_buffer_destroy(bb);
    if (!ok) return AN_EINTERNAL; /* kept: they go with the next flush */
    settles_clear(k);
    return 0;
}

static int queue_settle(an_consumer *k, struct settles *s, uint64_t pos, const char *reason)
{
    if (!k) return AN_EINVAL;
    if (k->done) return k->rc;
    if (s != &k->ack) {
        const char *want = reason ? reason : "";
        const char *have = k->reason ? k->reason : "";
        if ((k->nack.n || k->park.n) && strcmp(want, have) != 0) {
            int rc = send_settles(k);
            if (rc) return rc;
        }
        if (!k->nack.n && !k->park.n && want[0]) {
            free(k->reason);
            k->reason = strdup(want);
            if (!k->reason) return AN_ENOMEM;
        }
    }
    int rc = settles_push(s, pos);
    if (rc) return rc;
    if (k->ack.n + k->nack.n + k->park.n >= SETTLE_FLUSH_AT) {
        return send_settles(k);
    }
    return 0;
}

int an_consumer_ack(an_consumer *k, uint64_t position)
{
    return queue_settle(k, k ? &k->ack : NULL, position, NULL);
}

int an_consumer_nack(an_consumer *k, uint64_t position, const char *reason)
{
    return queue_settle(k, k ? &k->nack : NULL, position, reason);
}

int an_consumer_park(an_consumer *k, uint64_t position, const char *reason)
{
    return queue_settle(k, k ? &k->park : NULL, position, reason);
}

int an_consumer_flush(an_consumer *k, struct an_error *err)
{
    if (!k) return an__err_set(err, AN_EINVAL, 0, "consumer is NULL");
    if (k->done) {
        if (err) *err = k->err;
        return k->rc;
    }
    int rc = send_settles(k);
    if (rc) return an__err_set(err, rc, 0, "cannot send the settles");
    return 0;
}

/* ---- receiving ---- */

/* Waits until deadline for the next message: true when the wait ended
 * (k->msg set, or the call over), false on timeout. */
static bool k_recv(an_consumer *k, gpr_timespec deadline)
{
    if (!k->pending[TAG_MSG]) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &k->rbuf;
        if (!k_start(k, &op, 1, TAG_MSG)) {
            on_end(k, false);
            return true;
        }
    }
    if (!k_wait(k, TAG_MSG, deadline)) return false;
    if (!k->rbuf) {
        on_end(k, false);
        return true;
    }
    k_lease_end(k, 0);
    k->joined_at_ms = 0;
    k->msg = (Annals__V1__ConsumeResponse *)an__unpack_with(
        &annals__v1__consume_response__descriptor, &k->arena.alloc, k->rbuf);
    grpc_byte_buffer_destroy(k->rbuf);
    k->rbuf = NULL;
    k->next = 0;
    if (!k->msg) {
        call_drop(k);
        struct an_error e;
        an__err_set(&e, AN_EINTERNAL, 0, "malformed ConsumeResponse");
        k_finish(k, AN_EINTERNAL, &e);
    }
    return true;
}

/* While cut: tries to join again until deadline. true: joined. */
static bool k_reconnect(an_consumer *k, gpr_timespec deadline)
{
    for (;;) {
        int64_t now = an__now_ms();
        if (now - k->cut_at_ms > k->c->timeout_ms) {
            k_finish(k, k->cut_rc, &k->cut_err);
            return false;
        }
        int64_t until = now + gpr_time_to_millis(gpr_time_sub(
                                  deadline, gpr_now(GPR_CLOCK_MONOTONIC)));
        if (k->attempt > 0 && !an__backoff(k->c, k->attempt, until)) return false;
        k->attempt++;
        int rc = rejoin(k);
        if (rc == 0) {
            k->cut = false;
            k->joined_at_ms = an__now_ms();
            return true;
        }
        k->cut_rc = rc;
        an__err_set(&k->cut_err, rc, 0, "joining again: %s", an_strerror(rc));
        if (gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), deadline) >= 0) return false;
    }
}

int an_consumer_next(an_consumer *k, int timeout_ms, struct an_delivery *out,
                     struct an_error *err)
{
    if (!k || !out) return an__err_set(err, AN_EINVAL, 0, "consumer or out is NULL");
    gpr_timespec deadline = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                            : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                           gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    if (!k->done) {
        send_settles(k);
    }
    for (;;) {
        if (k->msg) {
            if (k->next < k->msg->n_deliveries) {
                const Annals__V1__Delivery *d = k->msg->deliveries[k->next++];
                if (d->event) {
                    out->event = d->event;
                    out->attempt = d->attempt;
                    return 1;
                }
                continue;
            }
            k->msg = NULL;
            an__arena_reset(&k->arena);
        }
        if (k->done) {
            if (err) *err = k->err;
            return k->rc;
        }
        if (k->cut && !k_reconnect(k, deadline)) {
            if (k->done) continue;
            return AN_SUB_TIMEOUT;
        }
        if (!k_recv(k, deadline)) return AN_SUB_TIMEOUT;
    }
}

int an_consumer_open(an_client *c, const char *name, uint32_t prefetch, an_consumer **out)
{
    if (!c || !name || !out) return AN_EINVAL;
    an_consumer *k = calloc(1, sizeof(*k));
    if (!k) return AN_ENOMEM;
    k->c = c;
    an__arena_init(&k->arena);
    k->prefetch = prefetch;
    k->details = grpc_empty_slice();
    grpc_metadata_array_init(&k->md_initial);
    grpc_metadata_array_init(&k->md_trailing);
    k->group = strdup(name);
    k->cq = grpc_completion_queue_create_for_pluck(NULL);
    int rc = k->group && k->cq ? 0 : AN_ENOMEM;
    if (!rc) {
        rc = an__ep_acquire(c, &k->lease);
    }
    if (!rc) {
        k->leased = true;
        rc = join_call(k);
    }
    if (rc) {
        k->done = true;
        an_consumer_close(k);
        return rc;
    }
    *out = k;
    return 0;
}

void an_consumer_close(an_consumer *k)
{
    if (!k) return;
    if (k->call && !k->done && !k->cut) {
        /* the settles, then half-close: the server hands the rest to others */
        send_settles(k);
        if (k->pending[TAG_SEND]) {
            k_wait(k, TAG_SEND, an__deadline(1000));
        }
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (!k->pending[TAG_SEND]) {
            k_start(k, &op, 1, TAG_SEND);
        }
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op.data.recv_status_on_client.trailing_metadata = &k->md_trailing;
        op.data.recv_status_on_client.status = &k->status;
        op.data.recv_status_on_client.status_details = &k->details;
        if (!k->pending[TAG_STATUS] && k_start(k, &op, 1, TAG_STATUS)) {
            k_wait(k, TAG_STATUS, an__deadline(1000));
        }
    }
    k_lease_end(k, AN__ABANDONED);
    call_drop(k);
    an__arena_destroy(&k->arena);
    free(k->ack.v);
    free(k->nack.v);
    free(k->park.v);
    free(k->reason);
    free(k->group);
    grpc_slice_unref(k->details);
    grpc_metadata_array_destroy(&k->md_initial);
    grpc_metadata_array_destroy(&k->md_trailing);
    if (k->cq) {
        an__cq_free(k->cq, true);
    }
    free(k);
}

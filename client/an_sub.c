/*
 * an_sub.c - libannals: catch-up subscriptions (Queries.Subscribe) as a
 * pull iterator.
 *
 * A subscription owns one server-streaming call and a pluck completion
 * queue of its own, like a read (an_read.c): an_subscribe sends the request
 * in one batch (initial metadata, the message, half-close, the receipt of
 * the server's initial metadata) and returns at once. an_sub_next then
 * receives one SubscribeResponse at a time and hands out what it holds,
 * one item per call: its events in order, then its signal (caught up, or a
 * checkpoint alone). The server sends the next message only when this one
 * has been received (gRPC flow control), so a caller that stops calling
 * holds the server back without any memory piling up on either side.
 *
 * Waiting. The call has no deadline: a subscription lives until it is
 * closed. Each an_sub_next waits at most its timeout_ms for the next
 * message; when none comes it returns AN_SUB_TIMEOUT and leaves the
 * receive in flight, so the next call goes on waiting for the same
 * message. Nothing is lost or reordered by a timeout.
 *
 * Checkpoints. Events come in global_position order, so once an event at
 * position p has been handed out, every selected event up to p has been.
 * A message's own `checkpoint` (how far the server has looked) applies
 * once its last event has been handed out; a message without events
 * (caught up, or a checkpoint alone) applies at once. s->checkpoint keeps
 * the highest of these, so it never moves back and never claims an event
 * the caller has not had.
 *
 * Breaker. an_subscribe leases an endpoint as a read does; the lease ends
 * with the first message (a success) or the call's end. A later end by
 * UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED that an_sub_close did not
 * cause counts as a failure of that endpoint (an__ep_report). There are no
 * retries: see annals.h.
 *
 * Tags: START, MSG and STATUS, at most one of each in flight; every batch
 * started is plucked exactly once, by the wait that needs it or by
 * sub_reap, before the queue is destroyed.
 */
#include "an_int.h"
#include "an_tsan.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>

enum { TAG_START = 1, TAG_MSG = 2, TAG_STATUS = 3, TAG_COUNT = 4 };

#define TAG(t) ((void *)(uintptr_t)(t))

struct an_sub {
    an_client *c;                   /* borrowed; outlives the subscription */
    grpc_call *call;
    grpc_completion_queue *cq;      /* pluck, ours alone */
    struct an__lease lease;         /* held while `leased` */
    bool leased;
    bool pending[TAG_COUNT];        /* batch started and not yet plucked */
    grpc_metadata_array md_initial; /* filled by START */
    grpc_metadata_array md_trailing;
    grpc_byte_buffer *rbuf;         /* filled by MSG */
    grpc_status_code status;        /* filled by STATUS */
    grpc_slice details;
    Annals__V1__SubscribeResponse *msg; /* being handed out (in arena) */
    struct an__arena arena;             /* holds msg (an_arena.c) */
    size_t next;                    /* index into msg->events */
    bool signalled;                 /* msg's caught-up / checkpoint item went out */
    uint64_t checkpoint;            /* see the top comment */
    bool done;                      /* the call is over: rc and err hold the outcome */
    int rc;
    struct an_error err;
};

/* ---- batches ---- */

static bool sub_start(an_sub *s, grpc_op *ops, size_t n, int tag)
{
    AN_TSAN_RELEASE(&s->pending[tag]);
    if (grpc_call_start_batch(s->call, ops, n, TAG(tag), NULL) != GRPC_CALL_OK) return false;
    s->pending[tag] = true;
    return true;
}

/* Waits for tag's batch until `deadline`; false on timeout (still pending). */
static bool sub_wait(an_sub *s, int tag, gpr_timespec deadline)
{
    grpc_event ev;

    assert(s->pending[tag]);
    ev = grpc_completion_queue_pluck(s->cq, TAG(tag), deadline, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) return false;
    assert(ev.type == GRPC_OP_COMPLETE);
    AN_TSAN_ACQUIRE(&s->pending[tag]);
    s->pending[tag] = false;
    return true;
}

/* Takes every batch still in flight off the queue; the call must be over
 * (or cancelled). */
static void sub_reap(an_sub *s)
{
    for (int t = 0; t < TAG_COUNT; t++) {
        if (s->pending[t]) {
            sub_wait(s, t, gpr_inf_future(GPR_CLOCK_MONOTONIC));
        }
    }
}

static void sub_lease_end(an_sub *s, int rc)
{
    if (!s->leased) return;
    s->leased = false;
    an__ep_release(s->c, &s->lease, rc);
}

/* The code of the call's end. The server refuses a subscription beyond
 * its limit with RESOURCE_EXHAUSTED, which for Subscribe can only mean
 * that (no size limit applies to its request), so it is AN_EBUSY. */
static int sub_code(an_sub *s)
{
    int rc = an__err_from_status(&s->err, s->status, s->details, &s->md_trailing);

    if (s->status == GRPC_STATUS_RESOURCE_EXHAUSTED) {
        rc = AN_EBUSY;
        s->err.code = rc;
    }
    if (rc == 0) {
        /* annalsd never ends a subscription OK */
        rc = an__err_set(&s->err, AN_EINTERNAL, 0, "the server ended the subscription");
    }
    return rc;
}

/* The server has no more messages: receive the status, end. */
static void sub_finish(an_sub *s)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->md_trailing;
    op.data.recv_status_on_client.status = &s->status;
    op.data.recv_status_on_client.status_details = &s->details;
    s->done = true;
    if (!sub_start(s, &op, 1, TAG_STATUS)) {
        grpc_call_cancel(s->call, NULL);
        sub_reap(s);
        s->rc = an__err_set(&s->err, AN_EINTERNAL, 0, "cannot start RECV_STATUS_ON_CLIENT");
        sub_lease_end(s, AN__ABANDONED);
        return;
    }
    sub_reap(s);
    s->rc = sub_code(s);
    if (s->leased) {
        sub_lease_end(s, s->rc);
    } else if (an__transient(s->rc)) {
        an__ep_report(s->c, s->lease.ep, s->rc);
    }
}

/* Ends the subscription with a client-side failure, cancelling the call. */
static void sub_fail(an_sub *s, int code, const char *what)
{
    grpc_call_cancel(s->call, NULL);
    sub_reap(s);
    s->done = true;
    s->rc = an__err_set(&s->err, code, 0, "%s", what);
    sub_lease_end(s, AN__ABANDONED);
}

/*
 * sub_recv - waits until `deadline` for the next message. Returns true
 * when the wait ended (s->msg set, or the subscription over), false on
 * timeout (the receive stays in flight).
 */
static bool sub_recv(an_sub *s, gpr_timespec deadline)
{
    grpc_op op;

    if (!s->pending[TAG_MSG]) {
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->rbuf;
        if (!sub_start(s, &op, 1, TAG_MSG)) {
            sub_fail(s, AN_EINTERNAL, "cannot start RECV_MESSAGE");
            return true;
        }
    }
    if (!sub_wait(s, TAG_MSG, deadline)) return false;
    if (!s->rbuf) {
        sub_finish(s);
        return true;
    }
    sub_lease_end(s, 0);
    s->msg = (Annals__V1__SubscribeResponse *)an__unpack_with(
        &annals__v1__subscribe_response__descriptor, &s->arena.alloc, s->rbuf);
    grpc_byte_buffer_destroy(s->rbuf);
    s->rbuf = NULL;
    s->next = 0;
    s->signalled = false;
    if (!s->msg) {
        an__arena_reset(&s->arena); /* what the failed unpack took */
        sub_fail(s, AN_EINTERNAL, "malformed SubscribeResponse");
    }
    return true;
}

/* ---- handing out ---- */

static void sub_advance(an_sub *s, uint64_t to)
{
    if (to > s->checkpoint) {
        s->checkpoint = to;
    }
}

/* The next item of s->msg into *out: true, or false when it has none. */
static bool sub_item(an_sub *s, struct an_sub_item *out)
{
    Annals__V1__SubscribeResponse *m = s->msg;

    if (s->next < m->n_events) {
        const Annals__V1__RecordedEvent *ev = m->events[s->next++];
        sub_advance(s, ev->global_position);
        if (s->next == m->n_events) {
            sub_advance(s, m->checkpoint);
        }
        out->kind = AN_SUB_EVENT;
        out->event = ev;
        out->checkpoint = s->checkpoint;
        return true;
    }
    if (s->signalled) return false;
    s->signalled = true;
    if (m->caught_up) {
        sub_advance(s, m->checkpoint);
        out->kind = AN_SUB_CAUGHT_UP;
    } else if (m->n_events == 0) {
        sub_advance(s, m->checkpoint);
        out->kind = AN_SUB_CHECKPOINT;
    } else {
        return false;
    }
    out->event = NULL;
    out->checkpoint = s->checkpoint;
    return true;
}

/* ---- the API ---- */

int an_sub_next(an_sub *s, int timeout_ms, struct an_sub_item *out, struct an_error *err)
{
    gpr_timespec deadline;

    if (!s || !out) return an__err_set(err, AN_EINVAL, 0, "subscription or out is NULL");
    deadline = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
               : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                              gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    for (;;) {
        if (s->msg) {
            if (sub_item(s, out)) return 1;
            s->msg = NULL;
            an__arena_reset(&s->arena);
        }
        if (s->done) {
            if (err) {
                *err = s->err;
            }
            return s->rc;
        }
        if (!sub_recv(s, deadline)) return AN_SUB_TIMEOUT;
    }
}

uint64_t an_sub_checkpoint(const an_sub *s)
{
    return s ? s->checkpoint : 0;
}

void an_sub_close(an_sub *s)
{
    if (!s) return;
    sub_lease_end(s, AN__ABANDONED);
    if (s->call) {
        if (!s->done) {
            grpc_call_cancel(s->call, NULL);
        }
        sub_reap(s);
        grpc_call_unref(s->call);
    }
    an__arena_destroy(&s->arena);
    grpc_byte_buffer_destroy(s->rbuf);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->md_initial);
    grpc_metadata_array_destroy(&s->md_trailing);
    an__cq_free(s->cq, true);
    free(s);
}

/* Checks the options' arrays (the server judges the rest). */
static bool opts_ok(const struct an_subscribe_opts *o)
{
    if ((o->n_stream_prefixes && !o->stream_prefixes) || (o->n_event_types && !o->event_types)) {
        return false;
    }
    for (size_t i = 0; i < o->n_stream_prefixes; i++) {
        if (!o->stream_prefixes[i]) return false;
    }
    for (size_t i = 0; i < o->n_event_types; i++) {
        if (!o->event_types[i]) return false;
    }
    return true;
}

/* Sends the request on a new call to the leased endpoint. 0 or AN_E*. */
static int sub_call(an_sub *s, const Annals__V1__SubscribeRequest *req)
{
    grpc_byte_buffer *bb;
    grpc_op ops[4];
    bool ok;

    s->call = an__call_new_ep(s->lease.ep, s->cq, AN__M_SUBSCRIBE,
                              gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (!s->call) return AN_EINTERNAL;
    bb = an__pack(&req->base);
    if (!bb) return AN_ENOMEM;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(s->lease.ep, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_initial;
    ok = sub_start(s, ops, 4, TAG_START);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : AN_EINTERNAL;
}

int an_subscribe(an_client *c, const struct an_subscribe_opts *o, an_sub **out)
{
    Annals__V1__SubscribeRequest req = ANNALS__V1__SUBSCRIBE_REQUEST__INIT;
    Annals__V1__Filter filter = ANNALS__V1__FILTER__INIT;
    an_sub *s;
    int rc;

    if (!c || !o || !out || !opts_ok(o)) return AN_EINVAL;
    req.stream = (char *)(uintptr_t)(o->stream ? o->stream : "");
    req.from_position = o->from_position;
    req.from_version = o->from_version;
    req.from_end = o->from_end;
    if (o->n_stream_prefixes || o->n_event_types) {
        /* protobuf-c only reads the strings; the casts drop const. */
        filter.n_stream_prefixes = o->n_stream_prefixes;
        filter.stream_prefixes = (char **)(uintptr_t)o->stream_prefixes;
        filter.n_event_types = o->n_event_types;
        filter.event_types = (char **)(uintptr_t)o->event_types;
        req.filter = &filter;
    }

    s = calloc(1, sizeof(*s));
    if (!s) return AN_ENOMEM;
    s->c = c;
    an__arena_init(&s->arena);
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->md_initial);
    grpc_metadata_array_init(&s->md_trailing);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!s->cq) {
        rc = AN_ENOMEM;
        goto out_close;
    }
    rc = an__ep_acquire(c, &s->lease);
    if (rc) goto out_close;
    s->leased = true;
    rc = sub_call(s, &req);
    if (rc) goto out_close;
    *out = s;
    return 0;

out_close:
    s->done = true;             /* nothing to cancel: no batch went out */
    an_sub_close(s);
    return rc;
}

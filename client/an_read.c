/*
 * an_read.c - libannals: the iterator over Queries.ReadStream / ReadAll.
 *
 * An iterator owns one server-streaming call and a pluck completion queue
 * of its own. Starting the read sends the request in one batch (initial
 * metadata, the message, half-close, and the receipt of the server's
 * initial metadata) and returns at once. an_iter_next then receives one
 * ReadResponse at a time (a batch of events the server chose) and hands
 * its events out one by one; when the server has no more messages it
 * receives the status, which ends the read with 0 or an error.
 *
 * Deadlines: a read may legitimately take far longer than the client's
 * default deadline (a full ReadAll of a large store), so the call itself
 * has none. Instead each wait inside an_iter_next, for the next message or
 * for the status, is bounded by the client's timeout: when the server
 * sends nothing for that long the call is cancelled with
 * DEADLINE_EXCEEDED, and the read fails with AN_EDEADLINE. Time the caller
 * spends between an_iter_next calls does not count (gRPC flow control
 * holds the server back meanwhile).
 *
 * Retries: while no event has been handed out, a read that fails
 * UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED is started again (a fresh call with the
 * same request, after a backoff), as an_client_opts allows; until then
 * each wait is bounded by the attempt timeout rather than the client's.
 * The call's endpoint is leased from the breaker when it starts, and the
 * lease ends with the first message (a success) or with the call's
 * outcome; while no breaker admits a read it fails fast with AN_ECIRCUIT.
 *
 * Fallback: a read that would end AN_ECIRCUIT with nothing handed out
 * calls the client's read_fallback once (iter_fallback), which may supply
 * events (an_iter_supply copies them into it->fb); they are handed out
 * like a batch, and the fallback's return ends the read.
 *
 * Memory: each ReadResponse (a few hundred events) is unpacked into the
 * iterator's arena (an_arena.c), reset for the next batch.
 *
 * Tags: START, MSG and STATUS are the only batches, at most one of each in
 * flight; every batch started is plucked exactly once (a pluck queue must
 * be empty when it is destroyed), by the wait that needs it or by
 * iter_reap.
 */
#include "an_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "annals/v1/queries.pb-c.h"

enum { TAG_START = 1, TAG_MSG = 2, TAG_STATUS = 3, TAG_COUNT = 4 };

#define TAG(t) ((void *)(uintptr_t)(t))


struct an_iter {
    an_client *c;                   /* borrowed; outlives the iterator */
    grpc_call *call;                /* the current attempt's; NULL before one */
    grpc_completion_queue *cq;
    grpc_slice req;                 /* the packed request, for every attempt */
    struct an__lease lease;         /* held while `leased` */
    bool leased;
    bool handed_out;                /* an event went to the caller: no retry */
    int attempt;                    /* 0: the first */
    int64_t start_ms;               /* monotonic, when the read started */
    const char *method;             /* static (AN__M_*) */
    int64_t timeout_ms;             /* per wait for the server */
    bool pending[TAG_COUNT];        /* batch started and not yet plucked */
    grpc_metadata_array md_initial; /* filled by START */
    grpc_metadata_array md_trailing;
    grpc_byte_buffer *rbuf;         /* filled by MSG */
    grpc_status_code status;        /* filled by STATUS */
    grpc_slice details;
    Annals__V1__ReadResponse *batch; /* the events being handed out (in arena) */
    struct an__arena arena;         /* holds batch */
    size_t next;                    /* index into batch->events */
    bool done;                      /* the call is over: rc and err hold the outcome */
    int rc;
    struct an_error err;
    bool in_fallback;               /* read_fallback is running */
    bool fell_back;                 /* read_fallback has run */
    Annals__V1__RecordedEvent **fb; /* the events it supplied (owned) */
    size_t fb_n;
    size_t fb_cap;
    size_t fb_next;                 /* the next one to hand out */
};

/* Waits for tag's batch; cancels the call if the server is silent too long. */
static void iter_wait(an_iter *it, int tag, bool bounded)
{
    grpc_event ev;

    assert(it->pending[tag]);
    ev = grpc_completion_queue_pluck(it->cq, TAG(tag),
                                     bounded ? an__deadline(it->handed_out
                                                                ? it->timeout_ms
                                                                : it->c->attempt_timeout_ms)
                                             : gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                     NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_call_cancel_with_status(it->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                     "libannals: no reply within the client's timeout", NULL);
        ev = grpc_completion_queue_pluck(it->cq, TAG(tag), gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                         NULL);
    }
    assert(ev.type == GRPC_OP_COMPLETE);
    it->pending[tag] = false;
}

/* Takes every batch still in flight off the queue; the call must be over. */
static void iter_reap(an_iter *it)
{
    for (int t = 0; t < TAG_COUNT; t++) {
        if (it->pending[t]) {
            iter_wait(it, t, false);
        }
    }
}

static bool iter_start(an_iter *it, grpc_op *ops, size_t n, int tag)
{
    if (grpc_call_start_batch(it->call, ops, n, TAG(tag), NULL) != GRPC_CALL_OK) return false;
    it->pending[tag] = true;
    return true;
}

/* Gives the endpoint back to the breaker with the attempt's outcome. */
static void iter_lease_end(an_iter *it, int rc)
{
    if (!it->leased) return;
    an__ep_release(it->c, &it->lease, rc);
    it->leased = false;
}

/* Ends the read with a client-side failure, cancelling the call. */
static void iter_fail(an_iter *it, int code, const char *what)
{
    if (it->call) {
        grpc_call_cancel(it->call, NULL);
        iter_reap(it);
    }
    it->done = true;
    it->rc = an__err_set(&it->err, code, 0, "%s", what);
    iter_lease_end(it, AN__ABANDONED);
}

/* The server has no more messages: receive the status. */
static void iter_finish(an_iter *it)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &it->md_trailing;
    op.data.recv_status_on_client.status = &it->status;
    op.data.recv_status_on_client.status_details = &it->details;
    if (!iter_start(it, &op, 1, TAG_STATUS)) {
        iter_fail(it, AN_EINTERNAL, "cannot start RECV_STATUS_ON_CLIENT");
        return;
    }
    iter_wait(it, TAG_STATUS, true);
    iter_reap(it);
    it->done = true;
    it->rc = an__err_from_status(&it->err, it->status, it->details, &it->md_trailing);
    iter_lease_end(it, it->rc);
}

/* Receives the next ReadResponse into it->batch, or finishes the read. */
static void iter_recv(an_iter *it)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &it->rbuf;
    if (!iter_start(it, &op, 1, TAG_MSG)) {
        iter_fail(it, AN_EINTERNAL, "cannot start RECV_MESSAGE");
        return;
    }
    iter_wait(it, TAG_MSG, true);
    if (!it->rbuf) {
        iter_finish(it);
        return;
    }
    iter_lease_end(it, 0);
    it->batch = (Annals__V1__ReadResponse *)an__unpack_with(
        &annals__v1__read_response__descriptor, &it->arena.alloc, it->rbuf);
    grpc_byte_buffer_destroy(it->rbuf);
    it->rbuf = NULL;
    it->next = 0;
    if (!it->batch) {
        an__arena_reset(&it->arena); /* what the failed unpack took */
        iter_fail(it, AN_EINTERNAL, "malformed ReadResponse");
    }
}

/*
 * iter_call - starts an attempt: leases an endpoint and sends the request
 * in one batch. When no endpoint admits it, the read ends with that code.
 * Returns 0 or AN_EINTERNAL (gRPC refused; nothing in flight).
 */
static int iter_call(an_iter *it)
{
    grpc_byte_buffer *bb;
    grpc_op ops[4];
    int rc;

    rc = an__ep_acquire(it->c, &it->lease);
    if (rc) {
        it->done = true;
        it->rc = an__err_set(&it->err, rc, 0, "%s",
                             rc == AN_ECIRCUIT ? "circuit open on every endpoint"
                                               : "no endpoint is up");
        return 0;
    }
    it->leased = true;
    it->call = an__call_new_ep(it->lease.ep, it->cq, it->method,
                               gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (!it->call) goto out_lease;
    bb = grpc_raw_byte_buffer_create(&it->req, 1);
    if (!bb) goto out_lease;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(it->lease.ep, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &it->md_initial;
    rc = iter_start(it, ops, 4, TAG_START) ? 0 : AN_EINTERNAL;
    grpc_byte_buffer_destroy(bb);
    if (rc) goto out_lease;
    return 0;

out_lease:
    iter_lease_end(it, AN__ABANDONED);
    return AN_EINTERNAL;
}

/*
 * iter_retry - after a transient failure with nothing handed out, starts
 * the read again when the retry budget allows (after the backoff).
 * Returns whether it did; the read may have ended again at once.
 */
static bool iter_retry(an_iter *it)
{
    an_client *c = it->c;
    int64_t end = it->start_ms + c->timeout_ms;
    int64_t retry_end = it->start_ms + c->retry_max_total_ms;

    if (it->handed_out || it->fell_back || !an__transient(it->rc) ||
        it->attempt >= c->max_retries) {
        return false;
    }
    if (!an__backoff(c, it->attempt, retry_end < end ? retry_end : end)) return false;
    it->attempt++;
    if (it->call) {
        grpc_call_unref(it->call);
        it->call = NULL;
    }
    grpc_slice_unref(it->details);
    it->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&it->md_initial);
    grpc_metadata_array_destroy(&it->md_trailing);
    grpc_metadata_array_init(&it->md_initial);
    grpc_metadata_array_init(&it->md_trailing);
    it->status = GRPC_STATUS_UNKNOWN;
    it->done = false;
    it->rc = 0;
    if (iter_call(it)) {
        it->done = true;
        it->rc = an__err_set(&it->err, AN_EINTERNAL, 0, "cannot start the read again");
    }
    return true;
}

int an_iter_supply(an_iter *it, const Annals__V1__RecordedEvent *ev)
{
    Annals__V1__RecordedEvent *copy;
    uint8_t *buf;
    size_t n;

    if (!it || !ev || !it->in_fallback) return AN_EINVAL;
    if (it->fb_n == it->fb_cap) {
        size_t cap = it->fb_cap ? it->fb_cap * 2 : 16;
        Annals__V1__RecordedEvent **p = realloc(it->fb, cap * sizeof(*p));
        if (!p) return AN_ENOMEM;
        it->fb = p;
        it->fb_cap = cap;
    }
    /* A deep copy the simple way: through the wire format. */
    n = protobuf_c_message_get_packed_size(&ev->base);
    buf = malloc(n ? n : 1);
    if (!buf) return AN_ENOMEM;
    protobuf_c_message_pack(&ev->base, buf);
    copy = annals__v1__recorded_event__unpack(NULL, n, buf);
    free(buf);
    if (!copy) return AN_ENOMEM;
    it->fb[it->fb_n++] = copy;
    return 0;
}

/*
 * iter_fallback - a read ending AN_ECIRCUIT with nothing handed out asks
 * the client's read_fallback, once. Returns whether it did; the read is
 * then over with the fallback's outcome, after its events.
 */
static bool iter_fallback(an_iter *it)
{
    struct an_read_req req = {0};
    ProtobufCMessage *m;
    const ProtobufCMessageDescriptor *desc;
    int rc;

    if (it->fell_back || it->handed_out || it->rc != AN_ECIRCUIT || !it->c->read_fallback) {
        return false;
    }
    it->fell_back = true;
    desc = strcmp(it->method, AN__M_READ_STREAM) == 0 ? &annals__v1__read_stream_request__descriptor
                                                      : &annals__v1__read_all_request__descriptor;
    m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(it->req),
                                  GRPC_SLICE_START_PTR(it->req));
    if (!m) return false;
    if (desc == &annals__v1__read_stream_request__descriptor) {
        req.stream = (const Annals__V1__ReadStreamRequest *)m;
    } else {
        req.all = (const Annals__V1__ReadAllRequest *)m;
    }
    it->in_fallback = true;
    rc = it->c->read_fallback(it->c->cb_arg, &req, it);
    it->in_fallback = false;
    protobuf_c_message_free_unpacked(m, NULL);
    it->rc = rc ? an__err_set(&it->err, rc, 0, "read fallback: %s", an_strerror(rc)) : 0;
    return true;
}

int an_iter_next(an_iter *it, const Annals__V1__RecordedEvent **ev, struct an_error *err)
{
    if (!it || !ev) return an__err_set(err, AN_EINVAL, 0, "iterator or ev is NULL");
    for (;;) {
        if (it->batch && it->next < it->batch->n_events) {
            *ev = it->batch->events[it->next++];
            it->handed_out = true;
            return 1;
        }
        if (it->fb_next < it->fb_n) {
            /* Not handed_out: these are not the server's. */
            *ev = it->fb[it->fb_next++];
            return 1;
        }
        if (it->batch) {
            it->batch = NULL;
            an__arena_reset(&it->arena);
        }
        if (it->done && iter_retry(it)) continue;
        if (it->done && iter_fallback(it)) continue;
        if (it->done) {
            if (it->rc && err) {
                *err = it->err;
            }
            return it->rc;
        }
        iter_recv(it);
    }
}

void an_iter_free(an_iter *it)
{
    if (!it) return;
    iter_lease_end(it, AN__ABANDONED);
    if (it->call) {
        if (!it->done) {
            grpc_call_cancel(it->call, NULL);
        }
        iter_reap(it);
        grpc_call_unref(it->call);
    }
    an__arena_destroy(&it->arena);
    for (size_t i = 0; i < it->fb_n; i++) {
        annals__v1__recorded_event__free_unpacked(it->fb[i], NULL);
    }
    free(it->fb);
    grpc_byte_buffer_destroy(it->rbuf);
    grpc_slice_unref(it->req);
    grpc_slice_unref(it->details);
    grpc_metadata_array_destroy(&it->md_initial);
    grpc_metadata_array_destroy(&it->md_trailing);
    an__cq_free(it->cq, true);
    free(it);
}

/*
 * iter_open - starts `method` with the request `req` and returns the
 * iterator. The request is packed before return (borrowed).
 */
static int iter_open(an_client *c, const char *method, const ProtobufCMessage *req, an_iter **out)
{
    an_iter *it;
    grpc_byte_buffer *bb = NULL;
    grpc_byte_buffer_reader r;
    int rc;

    it = calloc(1, sizeof(*it));
    if (!it) return AN_ENOMEM;
    it->c = c;
    it->method = method;
    an__arena_init(&it->arena);
    it->start_ms = an__now_ms();
    it->timeout_ms = c->timeout_ms;
    it->req = grpc_empty_slice();
    it->details = grpc_empty_slice();
    grpc_metadata_array_init(&it->md_initial);
    grpc_metadata_array_init(&it->md_trailing);
    it->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!it->cq) {
        rc = AN_ENOMEM;
        goto out_free;
    }
    bb = an__pack(req);
    if (!bb || !grpc_byte_buffer_reader_init(&r, bb)) {
        rc = AN_ENOMEM;
        goto out_free;
    }
    it->req = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(bb);
    bb = NULL;
    rc = iter_call(it);
    if (rc) goto out_free;
    *out = it;
    return 0;

out_free:
    grpc_byte_buffer_destroy(bb);
    an_iter_free(it);
    return rc;
}

int an_read_stream(an_client *c, const struct an_read_stream_opts *o, an_iter **out)
{
    Annals__V1__ReadStreamRequest req = ANNALS__V1__READ_STREAM_REQUEST__INIT;
    Annals__V1__AsOf as_of;

    if (!c || !o || !out) return AN_EINVAL;
    req.stream = (char *)(uintptr_t)(o->stream ? o->stream : "");
    req.from_version = o->from_version;
    req.direction = o->backwards ? ANNALS__V1__DIRECTION__BACKWARDS
                                 : ANNALS__V1__DIRECTION__FORWARDS;
    req.max_count = o->max_count;
    req.as_of = an__as_of(&o->as_of, &as_of);
    req.from_end = o->from_end;
    return iter_open(c, AN__M_READ_STREAM, &req.base, out);
}

int an_read_all(an_client *c, const struct an_read_all_opts *o, an_iter **out)
{
    Annals__V1__ReadAllRequest req = ANNALS__V1__READ_ALL_REQUEST__INIT;
    Annals__V1__Filter filter = ANNALS__V1__FILTER__INIT;
    Annals__V1__AsOf as_of;

    if (!c || !o || !out) return AN_EINVAL;
    if ((o->n_stream_prefixes && !o->stream_prefixes) || (o->n_event_types && !o->event_types)) {
        return AN_EINVAL;
    }
    for (size_t i = 0; i < o->n_stream_prefixes; i++) {
        if (!o->stream_prefixes[i]) return AN_EINVAL;
    }
    for (size_t i = 0; i < o->n_event_types; i++) {
        if (!o->event_types[i]) return AN_EINVAL;
    }
    req.from_position = o->from_position;
    req.direction = o->backwards ? ANNALS__V1__DIRECTION__BACKWARDS
                                 : ANNALS__V1__DIRECTION__FORWARDS;
    req.max_count = o->max_count;
    req.from_end = o->from_end;
    req.as_of = an__as_of(&o->as_of, &as_of);
    if (o->n_stream_prefixes || o->n_event_types) {
        /* protobuf-c only reads the strings; the casts drop const. */
        filter.n_stream_prefixes = o->n_stream_prefixes;
        filter.stream_prefixes = (char **)(uintptr_t)o->stream_prefixes;
        filter.n_event_types = o->n_event_types;
        filter.event_types = (char **)(uintptr_t)o->event_types;
        req.filter = &filter;
    }
    return iter_open(c, AN__M_READ_ALL, &req.base, out);
}

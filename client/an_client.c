/*
 * an_client.c - libannals: the channels, the unary calls (Append,
 * DeleteStream, GetStream, Health/Check, raw calls) and the helpers the
 * streaming parts share (error filling, packing, unpacking).
 *
 * Every unary call runs the same way: a call on its own pluck completion
 * queue, one batch with all six client ops, one pluck. The call carries the
 * attempt's deadline, so gRPC itself guarantees that the batch completes
 * (DEADLINE_EXCEEDED at worst) and the pluck needs no deadline of its own.
 * A queue per call costs one small allocation and keeps concurrent callers
 * on one client from ever touching each other's completions.
 *
 * Each unary call goes through unary(), which leases an endpoint from the
 * breaker (an_resilience.c), runs attempts with a per-attempt deadline and
 * retries transient failures of safe calls with backoff.
 *
 * The channel connects lazily and calls are fail-fast (no wait-for-ready):
 * while the server is unreachable a call fails at once with UNAVAILABLE.
 * Reconnect backoff is capped at one second and gRPC's backup poller runs
 * every 100 ms (init_grpc), so a client created before the server is up,
 * or kept across a server restart, finds it within about a second.
 *
 * gRPC is initialised once, at the first an_connect, and never shut down:
 * its memory stays reachable from globals, which LeakSanitizer accepts
 * (NOTES-grpc-core.md), and a library cannot know when the process is done
 * with gRPC.
 */
#include "an_int.h"
#include "an_absl.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "annals/v1/queries.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define AN__DEFAULT_TIMEOUT_MS 10000
#define AN__MAX_RECV_BYTES (64 * 1024 * 1024)
#define AN__DEFAULT_RETRIES 3
#define AN__DEFAULT_BACKOFF_MS 25
#define AN__DEFAULT_RETRY_TOTAL_MS 2000
#define AN__DEFAULT_BREAKER_THRESHOLD 5
#define AN__DEFAULT_BREAKER_COOLDOWN_MS 1000
#define AN__DEFAULT_HEALTH_INTERVAL_MS 500

/* ---- errors ---- */

int an_code_from_status(int grpc_status)
{
    switch (grpc_status) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_ABORTED:
        return AN_ECONFLICT;
    case GRPC_STATUS_ALREADY_EXISTS:
        return AN_EEXIST;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return AN_ETOMBSTONED;
    case GRPC_STATUS_NOT_FOUND:
        return AN_ENOTFOUND;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return AN_EINVAL;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return AN_ETOOBIG;
    case GRPC_STATUS_UNAVAILABLE:
        return AN_EUNAVAIL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return AN_EDEADLINE;
    case GRPC_STATUS_CANCELLED:
        return AN_ECANCELLED;
    case GRPC_STATUS_UNIMPLEMENTED:
        return AN_EUNIMPL;
    case GRPC_STATUS_PERMISSION_DENIED:
        return AN_EPERM;
    case GRPC_STATUS_UNAUTHENTICATED:
        return AN_EAUTH;
    case GRPC_STATUS_DATA_LOSS:
        return AN_ECORRUPT;
    default:
        return AN_EINTERNAL;
    }
}

static void err_clear(struct an_error *err, int code, int grpc_status)
{
    err->code = code;
    err->grpc_status = grpc_status;
    err->detail[0] = '\0';
    err->stream[0] = '\0';
    err->actual_version = -1;
}

int an__err_set(struct an_error *err, int code, int grpc_status, const char *fmt, ...)
{
    va_list ap;

    if (!err) return code;
    err_clear(err, code, grpc_status);
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return code;
}

/* Copies a slice into a NUL-terminated buffer, truncating. */
static void slice_copy(char *dst, size_t cap, grpc_slice s)
{
    size_t n = GRPC_SLICE_LENGTH(s);

    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, GRPC_SLICE_START_PTR(s), n);
    dst[n] = '\0';
}

static int hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/*
 * Decodes the contract's %XX escapes of "annals-stream"; a '%' not followed
 * by two hex digits is kept as is. Truncates to cap - 1 bytes.
 */
static void percent_decode(char *dst, size_t cap, grpc_slice s)
{
    const uint8_t *p = GRPC_SLICE_START_PTR(s);
    size_t n = GRPC_SLICE_LENGTH(s);
    size_t o = 0;

    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        int hi;
        int lo;

        if (p[i] == '%' && i + 2 < n && (hi = hex_val(p[i + 1])) >= 0 &&
            (lo = hex_val(p[i + 2])) >= 0) {
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = (char)p[i];
        }
    }
    dst[o] = '\0';
}

static const grpc_slice *find_md(const grpc_metadata_array *md, const char *key)
{
    for (size_t i = 0; md && i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, key) == 0) return &md->metadata[i].value;
    }
    return NULL;
}

int an__err_from_status(struct an_error *err, grpc_status_code status, grpc_slice details,
                        const grpc_metadata_array *trailers)
{
    int code = an_code_from_status(status);
    const grpc_slice *v;

    if (code == 0 || !err) return code;
    err_clear(err, code, status);
    if (GRPC_SLICE_LENGTH(details) > 0) {
        slice_copy(err->detail, sizeof(err->detail), details);
    } else {
        snprintf(err->detail, sizeof(err->detail), "%s", an_strerror(code));
    }
    if (status != GRPC_STATUS_ABORTED) return code;
    v = find_md(trailers, "annals-stream");
    if (v) {
        percent_decode(err->stream, sizeof(err->stream), *v);
    }
    v = find_md(trailers, "annals-actual-version");
    if (v) {
        char buf[32];
        char *end;
        long long x;

        slice_copy(buf, sizeof(buf), *v);
        errno = 0;
        x = strtoll(buf, &end, 10);
        if (errno == 0 && end != buf && *end == '\0') {
            err->actual_version = x;
        }
    }
    return code;
}

/* ---- time ---- */

gpr_timespec an__deadline(int64_t ms)
{
    if (ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ---- messages ---- */

grpc_byte_buffer *an__pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *an__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    return an__unpack_with(desc, NULL, bb);
}

ProtobufCMessage *an__unpack_with(const ProtobufCMessageDescriptor *desc,
                                  ProtobufCAllocator *alloc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    grpc_slice s;
    ProtobufCMessage *m;

    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    m = protobuf_c_message_unpack(desc, alloc, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

grpc_slice an__bb_slice(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    grpc_slice s;

    if (!grpc_byte_buffer_reader_init(&r, bb)) return grpc_empty_slice();
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return s;
}

/* The strings the API takes as const; protobuf-c only reads them. */
static char *str_arg(const char *s)
{
    return (char *)(uintptr_t)(s ? s : "");
}

static ProtobufCBinaryData bin_arg(const void *p, size_t len)
{
    ProtobufCBinaryData b = {.len = p ? len : 0, .data = (uint8_t *)(uintptr_t)p};
    return b;
}

int an__pack_append(const struct an_stream_append *streams, size_t n_streams,
                    uint64_t correlation_id, grpc_byte_buffer **out, struct an_error *err)
{
    return an__pack_append_ids(streams, n_streams, correlation_id, NULL, out, err);
}

int an__pack_append_ids(const struct an_stream_append *streams, size_t n_streams,
                        uint64_t correlation_id, const uint8_t *gen_ids,
                        grpc_byte_buffer **out, struct an_error *err)
{
    Annals__V1__AppendRequest req = ANNALS__V1__APPEND_REQUEST__INIT;
    Annals__V1__AppendStreamRequest wrap = ANNALS__V1__APPEND_STREAM_REQUEST__INIT;
    Annals__V1__StreamAppend *sa;
    Annals__V1__StreamAppend **sap;
    Annals__V1__EventData *ed;
    Annals__V1__EventData **edp;
    size_t n_events = 0;
    size_t k = 0;
    size_t sz;
    void *mem;
    grpc_byte_buffer *bb;

    if (n_streams && !streams) return an__err_set(err, AN_EINVAL, 0, "streams is NULL");
    for (size_t i = 0; i < n_streams; i++) {
        if (streams[i].n_events && !streams[i].events) {
            return an__err_set(err, AN_EINVAL, 0, "stream %zu: events is NULL", i);
        }
        if (streams[i].n_events > SIZE_MAX / 2 / sizeof(*ed) - n_events) {
            return an__err_set(err, AN_EINVAL, 0, "too many events");
        }
        n_events += streams[i].n_events;
    }
    if (n_streams > SIZE_MAX / 2 / sizeof(*sa)) {
        return an__err_set(err, AN_EINVAL, 0, "too many streams");
    }

    /* One block: the structs first (pointer-aligned), then the arrays of
     * pointers to them that protobuf-c wants. */
    sz = n_streams * (sizeof(*sa) + sizeof(*sap)) + n_events * (sizeof(*ed) + sizeof(*edp));
    mem = malloc(sz ? sz : 1);
    if (!mem) return an__err_set(err, AN_ENOMEM, 0, "out of memory packing an append");
    sa = mem;
    ed = (Annals__V1__EventData *)(sa + n_streams);
    sap = (Annals__V1__StreamAppend **)(ed + n_events);
    edp = (Annals__V1__EventData **)(sap + n_streams);

    for (size_t i = 0; i < n_streams; i++) {
        const struct an_stream_append *s = &streams[i];

        annals__v1__stream_append__init(&sa[i]);
        sa[i].stream = str_arg(s->stream);
        sa[i].expect = (Annals__V1__Expectation)s->expect;
        sa[i].expected_version = s->expected_version;
        sa[i].n_events = s->n_events;
        sa[i].events = &edp[k];
        sap[i] = &sa[i];
        for (size_t j = 0; j < s->n_events; j++, k++) {
            const struct an_event *e = &s->events[j];

            annals__v1__event_data__init(&ed[k]);
            ed[k].id = bin_arg(e->id ? e->id : gen_ids ? gen_ids + 16 * k : NULL, 16);
            ed[k].type = str_arg(e->type);
            ed[k].schema_version = e->schema_version;
            ed[k].content_type = str_arg(e->content_type);
            ed[k].data = bin_arg(e->data, e->data_len);
            ed[k].metadata = bin_arg(e->metadata, e->metadata_len);
            edp[k] = &ed[k];
        }
    }
    req.n_streams = n_streams;
    req.streams = sap;
    if (correlation_id) {
        wrap.correlation_id = correlation_id;
        wrap.append = &req;
        bb = an__pack(&wrap.base);
    } else {
        bb = an__pack(&req.base);
    }
    free(mem);
    if (!bb) return an__err_set(err, AN_ENOMEM, 0, "out of memory packing an append");
    *out = bb;
    return 0;
}

void an__result_from(const Annals__V1__AppendResponse *r, struct an_append_result *res)
{
    size_t n = r->n_streams < AN_APPEND_MAX_STREAMS ? r->n_streams : AN_APPEND_MAX_STREAMS;

    memset(res, 0, sizeof(*res));
    res->first_position = r->first_position;
    res->last_position = r->last_position;
    res->recorded_at_ns = r->recorded_at_unix_nanos;
    res->n_streams = n;
    for (size_t i = 0; i < n; i++) {
        res->streams[i].first_version = r->streams[i]->first_version;
        res->streams[i].last_version = r->streams[i]->last_version;
    }
}

Annals__V1__AsOf *an__as_of(const struct an_as_of *a, Annals__V1__AsOf *m)
{
    annals__v1__as_of__init(m);
    if (!a) return NULL;
    if (a->has_position) {
        m->point_case = ANNALS__V1__AS_OF__POINT_POSITION;
        m->position = a->position;
    } else if (a->has_time) {
        m->point_case = ANNALS__V1__AS_OF__POINT_UNIX_NANOS;
        m->unix_nanos = a->unix_nanos;
    } else {
        return NULL;
    }
    return m;
}

/* ---- calls ---- */

static grpc_call *call_on(grpc_channel *ch, grpc_completion_queue *cq, const char *method,
                          gpr_timespec deadline)
{
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                               deadline, NULL);

    grpc_slice_unref(m);
    return call;
}

grpc_call *an__call_new_ep(const struct an__ep *ep, grpc_completion_queue *cq,
                           const char *method, gpr_timespec deadline)
{
    return call_on(ep->channel, cq, method, deadline);
}

/* A tag no batch uses, to ask a pluck queue whether it has shut down. */
static char drain_tag;

void an__cq_free(grpc_completion_queue *cq, bool pluck)
{
    gpr_timespec inf = gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_event ev;

    if (!cq) return;
    grpc_completion_queue_shutdown(cq);
    /* A next queue hands out what is left, then SHUTDOWN; a pluck queue
     * answers SHUTDOWN to a tag it does not hold once nothing is pending
     * (its owner has plucked every tag it started). */
    do {
        ev = pluck ? grpc_completion_queue_pluck(cq, &drain_tag, inf, NULL)
                   : grpc_completion_queue_next(cq, inf, NULL);
    } while (ev.type != GRPC_QUEUE_SHUTDOWN);
    grpc_completion_queue_destroy(cq);
}

/*
 * unary_once - one attempt of a unary call of `method` on ep with the
 * request payload `payload` (borrowed), ending by `deadline`. On 0, *reply
 * gets the reply payload (caller owns); a reply missing after OK is
 * AN_EINTERNAL. reply NULL: the payload is dropped, none is needed.
 */
/* A pluck queue with nothing on it: one a finished call left, or new. */
static grpc_completion_queue *cq_take(struct an__ep *ep)
{
    grpc_completion_queue *cq = NULL;

    pthread_mutex_lock(&ep->cq_mu);
    if (ep->n_cqs) cq = ep->cqs[--ep->n_cqs];
    pthread_mutex_unlock(&ep->cq_mu);
    return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

/* Keeps cq, whose one batch has been plucked, for the next call. */
static void cq_give(struct an__ep *ep, grpc_completion_queue *cq)
{
    if (!cq) return;
    pthread_mutex_lock(&ep->cq_mu);
    if (ep->n_cqs < AN__CQ_POOL) {
        ep->cqs[ep->n_cqs++] = cq;
        cq = NULL;
    }
    pthread_mutex_unlock(&ep->cq_mu);
    an__cq_free(cq, true);
}

static int unary_once(struct an__ep *ep, const char *method, grpc_slice payload,
                      gpr_timespec deadline, grpc_byte_buffer **reply, struct an_error *err)
{
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_completion_queue *cq = NULL;
    grpc_call *call = NULL;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_byte_buffer *rbuf = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    grpc_call_error ce;
    grpc_event ev;
    bool started = false;       /* its batch ran and was plucked */
    int rc;

    grpc_metadata_array_init(&md_initial);
    grpc_metadata_array_init(&md_trailing);
    memset(ops, 0, sizeof(ops));

    cq = cq_take(ep);
    if (!cq) {
        rc = an__err_set(err, AN_ENOMEM, 0, "cannot create a completion queue");
        goto out;
    }
    if (!req) {
        rc = an__err_set(err, AN_ENOMEM, 0, "out of memory for a request");
        goto out;
    }
    call = an__call_new_ep(ep, cq, method, deadline);
    if (!call) {
        rc = an__err_set(err, AN_EINTERNAL, 0, "cannot create a call for %s", method);
        goto out;
    }
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(ep, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &rbuf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md_trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ce = grpc_call_start_batch(call, ops, 6, (void *)1, NULL);
    if (ce != GRPC_CALL_OK) {
        rc = an__err_set(err, AN_EINTERNAL, 0, "grpc_call_start_batch: error %d", (int)ce);
        goto out;
    }
    ev = grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert(ev.type == GRPC_OP_COMPLETE);
    started = true;
    /* With RECV_STATUS_ON_CLIENT in the batch, success is 1 and the status
     * tells what happened (grpc.h). */
    rc = an__err_from_status(err, status, details, &md_trailing);
    if (rc) goto out;
    if (!reply) goto out;
    if (!rbuf) {
        rc = an__err_set(err, AN_EINTERNAL, status, "%s: OK without a reply", method);
        goto out;
    }
    *reply = rbuf;
    rbuf = NULL;

out:
    grpc_byte_buffer_destroy(rbuf);
    grpc_byte_buffer_destroy(req);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_initial);
    grpc_metadata_array_destroy(&md_trailing);
    if (call) {
        grpc_call_unref(call);
    }
    if (started) {
        cq_give(ep, cq); /* its one batch was plucked: nothing is left on it */
    } else {
        an__cq_free(cq, true);
    }
    return rc;
}

static gpr_timespec deadline_at(int64_t at_ms)
{
    return an__deadline(at_ms - an__now_ms() > 0 ? at_ms - an__now_ms() : 1);
}

/*
 * unary - runs a unary call of `method` with the request payload `payload`
 * (consumed) through the breaker, retrying transient failures when
 * `retry` says the call is safe to repeat (an_client_opts in annals.h).
 * Each attempt ends by the earlier of the attempt timeout and the call's
 * deadline. *reply as for unary_once.
 */
static int unary(an_client *c, const char *method, grpc_slice payload, bool retry,
                 grpc_byte_buffer **reply, struct an_error *err)
{
    int64_t start = an__now_ms();
    int64_t end = start + c->timeout_ms;
    int64_t retry_end = start + (c->retry_max_total_ms < c->timeout_ms ? c->retry_max_total_ms
                                                                       : c->timeout_ms);
    int max_retries = retry ? c->max_retries : 0;
    struct an_error first_unsure;
    int unsure_rc = 0;
    int rc;

    for (int attempt = 0;; attempt++) {
        struct an__lease l;
        int64_t now;

        rc = an__ep_acquire(c, &l);
        if (rc == AN_ECIRCUIT) {
            rc = an__err_set(err, rc, 0, "%s: circuit open on every endpoint", method);
            break;
        }
        if (rc) {
            rc = an__err_set(err, rc, 0, "%s: no endpoint is up", method);
            break;
        }
        now = an__now_ms();
        rc = unary_once(l.ep, method, payload,
                        deadline_at(now + c->attempt_timeout_ms < end
                                        ? now + c->attempt_timeout_ms : end),
                        reply, err);
        an__ep_release(c, &l, rc);
        if ((rc == AN_ECANCELLED || rc == AN_EDEADLINE) && !unsure_rc) {
            unsure_rc = rc;
            if (err) {
                first_unsure = *err;
            }
        }
        if (!an__transient(rc) || attempt >= max_retries) break;
        if (!an__backoff(c, attempt, retry_end < end ? retry_end : end)) break;
    }
    grpc_slice_unref(payload);
    /* An attempt cut off midway may have taken effect. If the retries then
     * failed (e.g. UNAVAILABLE: refused), report the first such attempt,
     * so that a failure that says "not done" is never wrong. */
    if (rc && rc != unsure_rc && unsure_rc) {
        rc = unsure_rc;
        if (err) {
            *err = first_unsure;
        }
    }
    return rc;
}

/* Takes the payload out of a packed request (which is destroyed). */
/* an__bb_slice, and bb destroyed. */
static grpc_slice bb_slice(grpc_byte_buffer *bb)
{
    grpc_slice s = an__bb_slice(bb);

    grpc_byte_buffer_destroy(bb);
    return s;
}

/*
 * unary_bb - unary() with the reply unpacked as `out_desc`: *out gets the
 * message (caller frees with protobuf_c_message_free_unpacked). req is
 * consumed.
 */
static int unary_bb(an_client *c, const char *method, grpc_byte_buffer *req, bool retry,
                    const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out,
                    struct an_error *err)
{
    grpc_byte_buffer *reply = NULL;
    ProtobufCMessage *m;
    int rc;

    rc = unary(c, method, bb_slice(req), retry, &reply, err);
    if (rc) return rc;
    m = an__unpack(out_desc, reply);
    grpc_byte_buffer_destroy(reply);
    if (!m) return an__err_set(err, AN_EINTERNAL, 0, "%s: malformed %s", method, out_desc->name);
    *out = m;
    return 0;
}

/* unary_msg - unary_bb() with a message to send. */
static int unary_msg(an_client *c, const char *method, const ProtobufCMessage *in, bool retry,
                     const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out,
                     struct an_error *err)
{
    grpc_byte_buffer *req = an__pack(in);

    if (!req) return an__err_set(err, AN_ENOMEM, 0, "out of memory packing a request");
    return unary_bb(c, method, req, retry, out_desc, out, err);
}

int an__unary_msg(an_client *c, const char *method, const ProtobufCMessage *in, bool retry,
                  const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out,
                  struct an_error *err)
{
    return unary_msg(c, method, in, retry, out_desc, out, err);
}

/* ---- connecting ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/*
 * While a channel is in backoff after a failed connect, its calls fail at
 * once, so no call polls for its next connect attempt; only gRPC's backup
 * poller does, every 5 s by default. A server that comes up (or back)
 * would then go unnoticed for seconds, and a restart test would see
 * AN_EUNAVAIL long after the server is listening again. Polling every
 * 100 ms costs nothing measurable. The environment variable is the only
 * knob gRPC 1.51 offers; a value set by the user is kept.
 */
static void init_grpc(void)
{
    setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", 0);
    an_absl_no_deadlock_detection();
    grpc_init();
}

/* Checks the options and fills the client's settings with the defaults. */
static int client_settings(an_client *c, const struct an_client_opts *opts)
{
    struct an_client_opts o = {0};

    if (opts) {
        o = *opts;
    }
    if (o.timeout_ms < 0 || o.attempt_timeout_ms < 0 || o.backoff_base_ms < 0 ||
        o.retry_max_total_ms < 0 || o.breaker_cooldown_ms < 0 || o.breaker_probes < 0) {
        return AN_EINVAL;
    }
    c->timeout_ms = o.timeout_ms ? o.timeout_ms : AN__DEFAULT_TIMEOUT_MS;
    c->max_retries = o.max_retries == 0 ? AN__DEFAULT_RETRIES : o.max_retries < 0 ? 0
                                                                                  : o.max_retries;
    c->attempt_timeout_ms = o.attempt_timeout_ms ? o.attempt_timeout_ms
                                                 : c->timeout_ms / (c->max_retries + 1);
    if (c->attempt_timeout_ms < 1) {
        c->attempt_timeout_ms = 1;
    }
    c->backoff_base_ms = o.backoff_base_ms ? o.backoff_base_ms : AN__DEFAULT_BACKOFF_MS;
    c->retry_max_total_ms = o.retry_max_total_ms ? o.retry_max_total_ms
                                                 : AN__DEFAULT_RETRY_TOTAL_MS;
    c->breaker_threshold = o.breaker_threshold ? o.breaker_threshold
                                               : AN__DEFAULT_BREAKER_THRESHOLD;
    c->breaker_cooldown_ms = o.breaker_cooldown_ms ? o.breaker_cooldown_ms
                                                   : AN__DEFAULT_BREAKER_COOLDOWN_MS;
    c->breaker_probes = o.breaker_probes ? o.breaker_probes : 1;
    c->health_interval_ms = o.health_interval_ms ? o.health_interval_ms
                                                 : AN__DEFAULT_HEALTH_INTERVAL_MS;
    c->on_breaker = o.on_breaker;
    c->get_stream_fallback = o.get_stream_fallback;
    c->read_fallback = o.read_fallback;
    c->cb_arg = o.arg;
    return 0;
}

/* The health thread's timed waits use the monotonic clock. */
static int client_sync_init(an_client *c)
{
    pthread_condattr_t ca;
    int rc;

    if (pthread_mutex_init(&c->mu, NULL) != 0) return AN_ENOMEM;
    if (pthread_condattr_init(&ca) != 0) goto out_mutex;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) goto out_mutex;
    return 0;

out_mutex:
    pthread_mutex_destroy(&c->mu);
    return AN_ENOMEM;
}

/* Reads a PEM file whole (NUL-terminated, malloc'd); NULL if it cannot. */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n >= (1 << 20) - 1) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* The channels' credentials: TLS when a CA is given (with a client
 * certificate for mTLS), else plaintext. AN_EINVAL when a file cannot be
 * read or the cert comes without its key. */
static int channel_creds(const struct an_client_opts *o, grpc_channel_credentials **out)
{
    if (!o || !o->tls_ca_file) {
        if (o && (o->tls_cert_file || o->tls_key_file)) return AN_EINVAL;
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    if (!o->tls_cert_file != !o->tls_key_file) return AN_EINVAL;
    char *ca = read_pem(o->tls_ca_file);
    char *cert = o->tls_cert_file ? read_pem(o->tls_cert_file) : NULL;
    char *key = o->tls_key_file ? read_pem(o->tls_key_file) : NULL;
    int rc = 0;
    if (!ca || (o->tls_cert_file && (!cert || !key))) {
        rc = AN_EINVAL;
    } else {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        *out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        rc = *out ? 0 : AN_EINVAL;
    }
    free(ca);
    free(cert);
    free(key);
    return rc;
}

int an_connect(const char *target, const struct an_client_opts *opts, an_client **out)
{
    grpc_channel_credentials *creds = NULL;
    grpc_arg args[6];
    grpc_channel_args cargs = {.num_args = 6, .args = args};
    an_client *c;
    int rc;

    if (!target || !*target || !out) return AN_EINVAL;
    pthread_once(&init_once, init_grpc);

    c = calloc(1, sizeof(*c));
    if (!c) return AN_ENOMEM;
    rc = client_settings(c, opts);
    if (rc) goto out_free;
    rc = an__eps_parse(target, &c->eps, &c->n_eps);
    if (rc) goto out_free;
    rc = client_sync_init(c);
    if (rc) goto out_free;

    args[0] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = AN__MAX_RECV_BYTES};
    args[1] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                         .value.integer = -1};
    args[2] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                         .value.integer = 100};
    args[3] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                         .value.integer = 1000};
    args[4] = (grpc_arg){.type = GRPC_ARG_STRING,
                         .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
                         .value.string = (char *)"libannals/0.1"};
    /* Each client gets its own connection, so that tests and benchmarks
     * that open several clients really get several. */
    args[5] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                         .value.integer = 1};

    rc = channel_creds(opts, &creds);
    if (rc) goto out_sync;
    const char *token = opts && opts->token ? opts->token : getenv("ANNALS_TOKEN");
    if (token && token[0]) {
        size_t tl = strlen(token);
        char *v = malloc(tl + 8);
        if (!v) {
            rc = AN_ENOMEM;
            goto out_sync;
        }
        memcpy(v, "Bearer ", 7);
        memcpy(v + 7, token, tl + 1);
        c->auth_md.key = grpc_slice_from_static_string("authorization");
        c->auth_md.value = grpc_slice_from_copied_string(v);
        free(v);
        c->has_auth_md = true;
    }
    for (size_t i = 0; i < c->n_eps; i++) {
        c->eps[i].md = c->has_auth_md ? &c->auth_md : NULL;
        c->eps[i].n_md = c->has_auth_md ? 1 : 0;
        c->eps[i].channel = grpc_channel_create(c->eps[i].target, creds, &cargs);
        if (!c->eps[i].channel) {
            rc = AN_ENOMEM;
            goto out_sync;
        }
    }
    grpc_channel_credentials_release(creds);
    creds = NULL;
    rc = an__health_start(c);
    if (rc) goto out_sync;
    *out = c;
    return 0;

out_sync:
    if (creds) {
        grpc_channel_credentials_release(creds);
    }
    if (c->has_auth_md) {
        grpc_slice_unref(c->auth_md.value);
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
out_free:
    an__eps_free(c->eps, c->n_eps);
    free(c);
    return rc;
}

void an_close(an_client *c)
{
    if (!c) return;
    an__health_stop(c);
    an__eps_free(c->eps, c->n_eps);
    if (c->has_auth_md) {
        grpc_slice_unref(c->auth_md.value);
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- unary calls ---- */

int an_append(an_client *c, const struct an_stream_append *streams, size_t n_streams,
              struct an_append_result *res, struct an_error *err)
{
    grpc_byte_buffer *req;
    uint8_t *ids = NULL;
    size_t n_events = 0;
    ProtobufCMessage *m;
    int rc;

    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    /* Every event gets an id, so that a retry is an exact repeat, which
     * the server answers with the original positions instead of storing
     * the events twice. an__pack_append_ids checks the arrays first. */
    for (size_t i = 0; streams && i < n_streams; i++) {
        if (streams[i].events) {
            n_events += streams[i].n_events;
        }
    }
    if (n_events && n_events <= SIZE_MAX / 16) {
        ids = malloc(n_events * 16);
        if (!ids) return an__err_set(err, AN_ENOMEM, 0, "out of memory for event ids");
        for (size_t k = 0; k < n_events; k++) {
            an__uuid7(ids + 16 * k);
        }
    }
    rc = an__pack_append_ids(streams, n_streams, 0, ids, &req, err);
    free(ids);
    if (rc) return rc;
    rc = unary_bb(c, AN__M_APPEND, req, true, &annals__v1__append_response__descriptor, &m, err);
    if (rc) return rc;
    if (res) {
        an__result_from((Annals__V1__AppendResponse *)m, res);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int an_delete_stream(an_client *c, const char *stream, enum an_expect expect,
                     uint64_t expected_version, bool tombstone, uint64_t *position,
                     struct an_error *err)
{
    Annals__V1__DeleteStreamRequest req = ANNALS__V1__DELETE_STREAM_REQUEST__INIT;
    ProtobufCMessage *m;
    int rc;

    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    req.stream = str_arg(stream);
    req.expect = (Annals__V1__Expectation)expect;
    req.expected_version = expected_version;
    req.tombstone = tombstone;
    rc = unary_msg(c, AN__M_DELETE_STREAM, &req.base, false,
                   &annals__v1__delete_stream_response__descriptor, &m, err);
    if (rc) return rc;
    if (position) {
        *position = ((Annals__V1__DeleteStreamResponse *)m)->position;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int an_get_stream(an_client *c, const char *stream, const struct an_as_of *as_of,
                  struct an_stream_info *out, struct an_error *err)
{
    Annals__V1__GetStreamRequest req = ANNALS__V1__GET_STREAM_REQUEST__INIT;
    Annals__V1__AsOf as_of_m;
    Annals__V1__StreamInfo *si;
    ProtobufCMessage *m;
    int rc;

    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    req.stream = str_arg(stream);
    req.as_of = an__as_of(as_of, &as_of_m);
    rc = unary_msg(c, AN__M_GET_STREAM, &req.base, true, &annals__v1__stream_info__descriptor,
                   &m, err);
    if (rc == AN_ECIRCUIT && c->get_stream_fallback) {
        return c->get_stream_fallback(c->cb_arg, stream, out);
    }
    if (rc) return rc;
    si = (Annals__V1__StreamInfo *)m;
    if (out) {
        out->last_version = si->last_version;
        out->event_count = si->event_count;
        out->first_position = si->first_position;
        out->last_position = si->last_position;
        out->created_unix_nanos = si->created_unix_nanos;
        out->updated_unix_nanos = si->updated_unix_nanos;
        out->deleted = si->deleted;
        out->tombstoned = si->tombstoned;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int an_health(an_client *c, bool *serving, struct an_error *err)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *m;
    int rc;

    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    rc = unary_msg(c, AN__M_HEALTH_CHECK, &req.base, true,
                   &grpc__health__v1__health_check_response__descriptor, &m, err);
    if (rc) return rc;
    if (serving) {
        *serving = ((Grpc__Health__V1__HealthCheckResponse *)m)->status ==
                   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int an_call_raw(an_client *c, const char *method, const void *payload, size_t len,
                struct an_error *err)
{
    if (!c || !method || (len && !payload)) {
        return an__err_set(err, AN_EINVAL, 0, "client, method or payload is NULL");
    }
    return unary(c, method, grpc_slice_from_copied_buffer(len ? payload : "", len), false, NULL,
                 err);
}

/* Starts one batch on a pluck queue and waits for it; its success. */
static bool raw_batch(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n, void *tag)
{
    grpc_event ev;

    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK) return false;
    ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

int an_call_raw_stream(an_client *c, const char *method, const char *md_key, const char *md_value,
                       const void *const *msgs, const size_t *lens, size_t n,
                       an_raw_reply_cb on_reply, void *arg, const char *reply_md_key,
                       char *reply_md_value, size_t cap, struct an_error *err)
{
    struct an__lease lease;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata md[AN__EP_MD_MAX + 1];
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op[2];
    size_t n_md;
    int rc;

    if (!c || !method || (n && (!msgs || !lens)) || (md_key && !md_value)) {
        return an__err_set(err, AN_EINVAL, 0, "client, method, messages or header is NULL");
    }
    rc = an__ep_acquire(c, &lease);
    if (rc) return an__err_set(err, rc, 0, "no endpoint admits a call");
    cq = grpc_completion_queue_create_for_pluck(NULL);
    call = cq ? an__call_new_ep(lease.ep, cq, method, an__deadline(c->timeout_ms)) : NULL;
    if (!call) {
        an__cq_free(cq, true);
        an__ep_release(c, &lease, AN__ABANDONED);
        return an__err_set(err, AN_EINTERNAL, 0, "cannot create a call for %s", method);
    }
    grpc_metadata_array_init(&md_initial);
    grpc_metadata_array_init(&md_trailing);
    memset(op, 0, sizeof(op));
    op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(lease.ep, &op[0]);
    n_md = op[0].data.send_initial_metadata.count;
    if (n_md) memcpy(md, op[0].data.send_initial_metadata.metadata, n_md * sizeof(md[0]));
    if (md_key) {
        md[n_md].key = grpc_slice_from_static_string(md_key);
        md[n_md++].value = grpc_slice_from_static_string(md_value);
    }
    op[0].data.send_initial_metadata.count = n_md;
    op[0].data.send_initial_metadata.metadata = md;
    op[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op[1].data.recv_status_on_client.trailing_metadata = &md_trailing;
    op[1].data.recv_status_on_client.status = &status;
    op[1].data.recv_status_on_client.status_details = &details;
    /* the status batch stays in flight until the end (tag 2) */
    if (!raw_batch(call, cq, &op[0], 1, (void *)1) ||
        grpc_call_start_batch(call, &op[1], 1, (void *)2, NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(call, NULL);
    }
    /* a failed send means the server ended the call: the status says why */
    for (size_t i = 0; i < n; i++) {
        grpc_slice sl = grpc_slice_from_copied_buffer(lens[i] ? msgs[i] : "", lens[i]);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);

        grpc_slice_unref(sl);
        memset(op, 0, sizeof(op));
        op[0].op = GRPC_OP_SEND_MESSAGE;
        op[0].data.send_message.send_message = bb;
        bool sent = raw_batch(call, cq, op, 1, (void *)3);
        grpc_byte_buffer_destroy(bb);
        if (!sent) break;
    }
    memset(op, 0, sizeof(op));
    op[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    raw_batch(call, cq, op, 1, (void *)4);
    for (bool first = true;; first = false) {
        grpc_byte_buffer *rbuf = NULL;
        size_t k = 0;

        memset(op, 0, sizeof(op));
        if (first) {
            op[k].op = GRPC_OP_RECV_INITIAL_METADATA;
            op[k++].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
        }
        op[k].op = GRPC_OP_RECV_MESSAGE;
        op[k++].data.recv_message.recv_message = &rbuf;
        if (!raw_batch(call, cq, op, k, (void *)5) || !rbuf) break;
        if (on_reply) {
            grpc_slice sl = an__bb_slice(rbuf);

            on_reply(arg, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
            grpc_slice_unref(sl);
        }
        grpc_byte_buffer_destroy(rbuf);
    }
    grpc_completion_queue_pluck(cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (reply_md_key && cap) {
        reply_md_value[0] = '\0';
        for (size_t i = 0; i < md_initial.count; i++) {
            const grpc_metadata *m = &md_initial.metadata[i];

            if (grpc_slice_str_cmp(m->key, reply_md_key) == 0) {
                snprintf(reply_md_value, cap, "%.*s", (int)GRPC_SLICE_LENGTH(m->value),
                         (const char *)GRPC_SLICE_START_PTR(m->value));
            }
        }
    }
    rc = an__err_from_status(err, status, details, &md_trailing);
    an__ep_release(c, &lease, rc);
    grpc_call_unref(call);
    an__cq_free(cq, true);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_initial);
    grpc_metadata_array_destroy(&md_trailing);
    return rc;
}

int an__health_once(an_client *c, struct an__ep *ep, int64_t timeout_ms, bool *serving)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    grpc_byte_buffer *bb = an__pack(&req.base);
    grpc_byte_buffer *reply = NULL;
    Grpc__Health__V1__HealthCheckResponse *m;
    grpc_slice payload;
    int rc;

    (void)c;
    if (!bb) return AN_ENOMEM;
    payload = bb_slice(bb);
    rc = unary_once(ep, AN__M_HEALTH_CHECK, payload, an__deadline(timeout_ms), &reply, NULL);
    grpc_slice_unref(payload);
    if (rc) return rc;
    m = (Grpc__Health__V1__HealthCheckResponse *)an__unpack(
        &grpc__health__v1__health_check_response__descriptor, reply);
    grpc_byte_buffer_destroy(reply);
    if (!m) return AN_EINTERNAL;
    *serving = m->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    grpc__health__v1__health_check_response__free_unpacked(m, NULL);
    return 0;
}

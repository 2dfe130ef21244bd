/*
 * an_appender.c - libannals: the pipelined appender over one
 * Commands.AppendStream call.
 *
 * Threads. The appender has a thread of its own that loops on the call's
 * completion queue (a `next` queue nobody else reads). The submitting
 * thread (the owner) packs each append, with correlation ids 1, 2, ...,
 * and hands it over under the mutex. gRPC allows one batch of each op type
 * in flight per call, so sends go out strictly one after another: the
 * submitter starts a SEND_MESSAGE itself when none is in flight (gRPC has
 * no way to wake a thread blocked on a completion queue, and
 * grpc_call_start_batch is thread-safe), else it queues the message and
 * the appender thread starts the next one on each WRITE completion. One
 * RECV_MESSAGE is always in flight; each AppendResult that arrives runs
 * the callback, on the appender thread, outside the mutex.
 *
 * Batches (tags): START (SEND_INITIAL_METADATA, awaited by open), WRITE
 * (SEND_MESSAGE), READ (RECV_MESSAGE, the first with
 * RECV_INITIAL_METADATA), CLOSE (SEND_CLOSE_FROM_CLIENT), STATUS
 * (RECV_STATUS_ON_CLIENT, started at open so a failure is seen at once).
 *
 * Batched messages (commands.proto). The call's headers say this client
 * reads AppendResult.more ("annals-batch: 1"), so the server may answer
 * several appends in one message. Once the server's initial metadata
 * (with the first result) says how many appends one message may carry
 * ("annals-batch: N"), the appends queued behind a send in flight leave
 * together, as AppendStreamRequest.more of the first, up to N and
 * AN__BATCH_BYTES. Under load that is most of them: a gRPC message costs
 * tens of microseconds of CPU on each side, an append in it a fraction.
 * Before that header, and with a server without it, one append goes per
 * message.
 *
 * Flow control. `outstanding` counts appends submitted and not yet
 * answered (queued ones included); submit blocks while it is
 * max_in_flight. The ids without a result are kept in a small hash set,
 * so that when the call fails each of them gets the failure exactly once.
 *
 * Deadline. The call has none: an appender may live for hours. Instead the
 * thread watches progress: while something is awaited from the server (an
 * append without a result, or the status after close), a gap of more than
 * the client's timeout without a result cancels the call with
 * DEADLINE_EXCEEDED, which fails every append left (AN_EDEADLINE).
 *
 * Breaker. Opening leases an endpoint from the breaker (an__ep_acquire):
 * round-robin over the endpoints that are up and admit a call, so an
 * appender never starts on an endpoint whose circuit is open, and with
 * none admitting it open fails at once with AN_ECIRCUIT (or AN_EUNAVAIL
 * when all are down), without touching the network. The lease is given
 * back with the first proof either way: the first AppendResult (the
 * server answered: a success, which closes a half-open breaker when this
 * appender was its probe), or the call's end. A failed open counts as a
 * failure. After the lease has ended, a call that ends UNAVAILABLE,
 * DEADLINE_EXCEEDED or CANCELLED (cut off by the server or the
 * connection; libannals only cancels for a silent server, which is
 * DEADLINE_EXCEEDED) counts as one more failure of its endpoint
 * (an__ep_report), so a server that dies under a long-lived appender opens
 * the breaker like failing unary calls do. The appender keeps its
 * endpoint for its whole life; it is never moved.
 *
 * End. The call ends when STATUS completes (OK after close, or a failure).
 * From then on submit refuses (the caller keeps its append; no callback).
 * The thread leaves once all its batches have completed, after failing the
 * appends left without a result; close joins it and frees everything.
 */
#include "an_int.h"
#include "an_tsan.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>

#include "pb_wire.h"

enum { TAG_START = 1, TAG_WRITE, TAG_READ, TAG_CLOSE, TAG_STATUS };

#define TAG(t) ((void *)(uintptr_t)(t))
#define AN__APPENDER_MAX_IN_FLIGHT 65536u
/* Results one message may carry besides its first (AppendResult.more):
 * annalsd sends at most its stream window (256 by default). */
#define AN__APPENDER_MAX_RESULTS 4096u

struct out_msg {
    struct out_msg *next;
    grpc_slice packed;          /* one packed AppendStreamRequest */
};

/* Batched messages: the most bytes one coalesced message carries (a single
 * bigger append goes alone). */
#define AN__BATCH_BYTES (1u << 20)

struct an_appender {
    an_client *c;               /* borrowed; outlives the appender */
    struct an__lease lease;     /* the endpoint's; open, then the thread only */
    bool leased;                /* the lease is not yet given back */
    grpc_call *call;
    grpc_completion_queue *cq;  /* a next queue, read only by the thread */
    pthread_t thread;
    an_append_cb cb;
    void *arg;
    unsigned max_in_flight;
    int64_t timeout_ms;
    uint64_t next_id;           /* owner thread only: the next correlation id */

    /* Thread only. */
    grpc_byte_buffer *rbuf;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
    uint64_t *scratch;          /* max_in_flight ids, for failing them */

    /* Access to everything below is protected by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* broadcast: room for a submit, the call ended, the thread left */
    unsigned batch_max;         /* appends one message may carry: the
                                   server's "annals-batch" (0: one) */
    struct out_msg *q_head;     /* sends waiting for the one in flight */
    struct out_msg *q_tail;
    unsigned outstanding;       /* appends submitted without a result */
    uint64_t *ids;              /* the set of their ids: open addressing, 0 = empty */
    size_t ids_mask;            /* capacity - 1 (a power of two >= 2 * max_in_flight) */
    gpr_timespec progress;      /* last result, or when waiting began (monotonic) */
    bool write_busy;            /* a WRITE batch is in flight */
    bool read_busy;
    bool close_busy;
    bool status_busy;
    bool closing;               /* an_appender_close was called */
    bool close_sent;
    bool md_seen;               /* the server's initial metadata was read */
    bool ended;                 /* STATUS arrived: submit refuses with end_rc */
    int end_rc;
    bool thread_done;           /* every callback has run */
    int final_rc;               /* what close returns */
};

/* ---- the set of ids awaiting a result ---- */

/* Ids are consecutive, so the identity hash spreads them perfectly. */
static void ids_add(an_appender *a, uint64_t id)
{
    size_t i = id & a->ids_mask;

    while (a->ids[i]) {
        i = (i + 1) & a->ids_mask;
    }
    a->ids[i] = id;
}

/* Removes id; false if it was not there. Backward-shift deletion. */
static bool ids_del(an_appender *a, uint64_t id)
{
    size_t m = a->ids_mask;
    size_t i = id & m;
    size_t j;

    while (a->ids[i] != id) {
        if (!a->ids[i]) return false;
        i = (i + 1) & m;
    }
    for (j = (i + 1) & m; a->ids[j]; j = (j + 1) & m) {
        size_t home = a->ids[j] & m;

        /* Move ids[j] into the hole at i unless its home lies in (i, j]. */
        if (((j - home) & m) >= ((j - i) & m)) {
            a->ids[i] = a->ids[j];
            i = j;
        }
    }
    a->ids[i] = 0;
    return true;
}

/* ---- batches ---- */

/* Starts a batch; a failure here is a bug, so the call is cancelled. */
static bool start(an_appender *a, grpc_op *ops, size_t n, int tag)
{
    grpc_call_error ce;

    AN_TSAN_RELEASE(a); /* the tags are small integers: a stands for them */
    ce = grpc_call_start_batch(a->call, ops, n, TAG(tag), NULL);
    if (ce == GRPC_CALL_OK) return true;
    grpc_call_cancel_with_status(a->call, GRPC_STATUS_INTERNAL,
                                 "libannals: grpc_call_start_batch failed", NULL);
    return false;
}

/* Sends bb (consumed). Caller holds mu and has checked !write_busy. */
static void start_write_locked(an_appender *a, grpc_byte_buffer *bb)
{
    grpc_op op;

    assert(!a->write_busy);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    a->write_busy = start(a, &op, 1, TAG_WRITE);
    grpc_byte_buffer_destroy(bb);
}

/* Half-closes once everything queued has gone. Caller holds mu. */
static void maybe_close_locked(an_appender *a)
{
    grpc_op op;

    if (!a->closing || a->close_sent || a->ended || a->write_busy || a->q_head) return;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    a->close_sent = true;
    a->close_busy = start(a, &op, 1, TAG_CLOSE);
    a->progress = gpr_now(GPR_CLOCK_MONOTONIC);
}

static void start_read(an_appender *a, bool with_initial_metadata)
{
    grpc_op ops[2];
    size_t n = 0;
    bool ok;

    memset(ops, 0, sizeof(ops));
    if (with_initial_metadata) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &a->md_initial;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &a->rbuf;
    ok = start(a, ops, n, TAG_READ);
    pthread_mutex_lock(&a->mu);
    a->read_busy = ok;
    pthread_mutex_unlock(&a->mu);
}

static bool start_status(an_appender *a)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &a->md_trailing;
    op.data.recv_status_on_client.status = &a->status;
    op.data.recv_status_on_client.status_details = &a->details;
    return start(a, &op, 1, TAG_STATUS);
}

/* ---- the appender thread ---- */

/* Runs the callback for one AppendResult. */
static void deliver(an_appender *a, const Annals__V1__AppendResult *r)
{
    struct an_append_result res;
    struct an_error err;
    const Annals__V1__AppendError *e;

    switch (r->outcome_case) {
    case ANNALS__V1__APPEND_RESULT__OUTCOME_OK:
        an__result_from(r->ok, &res);
        a->cb(a->arg, r->correlation_id, 0, &res, NULL);
        return;
    case ANNALS__V1__APPEND_RESULT__OUTCOME_ERROR:
        e = r->error;
        memset(&err, 0, sizeof(err));
        err.code = an_code_from_status(e->code);
        if (err.code == 0) err.code = AN_EINTERNAL; /* an error that says OK */
        err.grpc_status = e->code;
        snprintf(err.detail, sizeof(err.detail), "%s",
                 e->message[0] ? e->message : an_strerror(err.code));
        err.actual_version = -1;
        if (e->code == GRPC_STATUS_ABORTED) {
            snprintf(err.stream, sizeof(err.stream), "%s", e->stream);
            err.actual_version = e->actual_version;
        }
        a->cb(a->arg, r->correlation_id, err.code, NULL, &err);
        return;
    case ANNALS__V1__APPEND_RESULT__OUTCOME__NOT_SET:
    case _ANNALS__V1__APPEND_RESULT__OUTCOME__CASE_IS_INT_SIZE:
        break;
    }
    an__err_set(&err, AN_EINTERNAL, 0, "AppendResult %llu has no outcome",
                (unsigned long long)r->correlation_id);
    a->cb(a->arg, r->correlation_id, err.code, NULL, &err);
}

/* Gives the endpoint back to the breaker with the first proof either way
 * (the appender thread, or open before the thread runs). */
static void appender_lease_end(an_appender *a, int rc)
{
    if (!a->leased) return;
    a->leased = false;
    an__ep_release(a->c, &a->lease, rc);
}

/* Takes one result off the set of awaited ids; false if it was not
 * awaited. Caller holds mu. */
static bool settle_locked(an_appender *a, const Annals__V1__AppendResult *r)
{
    if (!r->correlation_id || !ids_del(a, r->correlation_id)) return false;
    a->outstanding--;
    return true;
}

/* The server's "annals-batch" header: how many appends one message may
 * carry (batched messages, commands.proto); 0 without it. */
static unsigned batch_of(const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        char v[16];
        size_t len = GRPC_SLICE_LENGTH(md->metadata[i].value);
        unsigned long n;
        char *end;

        if (grpc_slice_str_cmp(md->metadata[i].key, "annals-batch") != 0) continue;
        if (len == 0 || len >= sizeof(v)) return 0;
        memcpy(v, GRPC_SLICE_START_PTR(md->metadata[i].value), len);
        v[len] = '\0';
        n = strtoul(v, &end, 10);
        return *end || n > AN__APPENDER_MAX_IN_FLIGHT ? 0 : (unsigned)n;
    }
    return 0;
}

/* READ completed: a result (or several: AppendResult.more), or the end of
 * the server's messages. */
static void on_read(an_appender *a)
{
    Annals__V1__AppendResult *r;
    bool known[1 + AN__APPENDER_MAX_RESULTS];
    size_t n_more;
    bool any = false;

    if (!a->rbuf) {
        pthread_mutex_lock(&a->mu);
        a->read_busy = false;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    r = (Annals__V1__AppendResult *)an__unpack(&annals__v1__append_result__descriptor, a->rbuf);
    grpc_byte_buffer_destroy(a->rbuf);
    a->rbuf = NULL;
    if (!r || r->n_more > AN__APPENDER_MAX_RESULTS) {
        /* Ids can no longer be matched to results: give up on the call. */
        grpc_call_cancel_with_status(a->call, GRPC_STATUS_INTERNAL,
                                     "libannals: malformed AppendResult", NULL);
        if (r) annals__v1__append_result__free_unpacked(r, NULL);
        start_read(a, false);
        return;
    }
    n_more = r->n_more;
    pthread_mutex_lock(&a->mu);
    if (!a->md_seen) {
        /* the first message came with the server's initial metadata */
        a->md_seen = true;
        a->batch_max = batch_of(&a->md_initial);
    }
    known[0] = settle_locked(a, r);
    any = known[0];
    for (size_t i = 0; i < n_more; i++) {
        known[1 + i] = settle_locked(a, r->more[i]);
        any = any || known[1 + i];
    }
    if (any) {
        a->progress = gpr_now(GPR_CLOCK_MONOTONIC);
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    /* A result for an id not awaited (a server bug) is dropped, so that
     * each append still gets exactly one callback. */
    if (any) {
        appender_lease_end(a, 0);
    }
    if (known[0]) {
        deliver(a, r);
    }
    for (size_t i = 0; i < n_more; i++) {
        if (known[1 + i]) {
            deliver(a, r->more[i]);
        }
    }
    annals__v1__append_result__free_unpacked(r, NULL);
    start_read(a, false);
}

/*
 * Takes the next message off the queue: the first append, and, once the
 * server has said it reads them (batched messages, commands.proto), the
 * appends queued behind it, up to its "annals-batch" and AN__BATCH_BYTES,
 * as AppendStreamRequest.more (field 3) of the first. Caller holds mu; the
 * queue is not empty.
 */
static grpc_byte_buffer *take_queued_locked(an_appender *a)
{
    struct out_msg *m = a->q_head;
    size_t bytes = GRPC_SLICE_LENGTH(m->packed);
    unsigned n = 1;
    grpc_slice sl;
    grpc_byte_buffer *bb;

    for (struct out_msg *x = m->next; x && n < a->batch_max; x = x->next) {
        size_t add = pb_field_len(GRPC_SLICE_LENGTH(x->packed));

        if (bytes + add > AN__BATCH_BYTES) break;
        bytes += add;
        n++;
    }
    if (n == 1) {
        sl = m->packed;
        a->q_head = m->next;
        free(m);
    } else {
        uint8_t *p;

        sl = grpc_slice_malloc(bytes);
        p = GRPC_SLICE_START_PTR(sl);
        for (unsigned i = 0; i < n; i++) {
            struct out_msg *next = m->next;
            const uint8_t *d = GRPC_SLICE_START_PTR(m->packed);
            size_t len = GRPC_SLICE_LENGTH(m->packed);

            if (i) {
                p += pb_put_field(p, 0x1a, d, len); /* AppendStreamRequest.more = 3 */
            } else {
                memcpy(p, d, len);
                p += len;
            }
            grpc_slice_unref(m->packed);
            free(m);
            m = next;
        }
        a->q_head = m;
    }
    if (!a->q_head) {
        a->q_tail = NULL;
    }
    bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

static void on_write(an_appender *a, bool success)
{

    pthread_mutex_lock(&a->mu);
    a->write_busy = false;
    /* A failed send means the call is broken; STATUS will say why. */
    if (success && !a->ended && a->q_head) {
        start_write_locked(a, take_queued_locked(a));
    }
    if (success) {
        maybe_close_locked(a);
    }
    pthread_mutex_unlock(&a->mu);
}

static void on_status(an_appender *a)
{
    struct out_msg *m;
    int code = an_code_from_status(a->status);

    if (a->leased) {
        appender_lease_end(a, code);
    } else if (an__transient(code)) {
        an__ep_report(a->c, a->lease.ep, code);
    }

    pthread_mutex_lock(&a->mu);
    a->status_busy = false;
    a->ended = true;
    a->end_rc = code ? code : AN_ECANCELLED;
    a->final_rc = code;
    while ((m = a->q_head)) {
        a->q_head = m->next;
        grpc_slice_unref(m->packed);
        free(m);
    }
    a->q_tail = NULL;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x;
    uint64_t b = *(const uint64_t *)y;

    return (a > b) - (a < b);
}

/* The call is over: every append still without a result gets the failure. */
static void fail_outstanding(an_appender *a)
{
    struct an_error err;
    size_t n = 0;
    int code;

    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i <= a->ids_mask; i++) {
        if (a->ids[i]) {
            assert(n < a->max_in_flight);
            a->scratch[n++] = a->ids[i];
            a->ids[i] = 0;
        }
    }
    a->outstanding = 0;
    pthread_mutex_unlock(&a->mu);
    if (!n) return;

    code = an__err_from_status(&err, a->status, a->details, &a->md_trailing);
    if (code == 0) {
        code = an__err_set(&err, AN_EINTERNAL, a->status,
                           "AppendStream ended OK without a result for this append");
        a->final_rc = code;
    }
    qsort(a->scratch, n, sizeof(*a->scratch), cmp_u64);
    for (size_t i = 0; i < n; i++) {
        a->cb(a->arg, a->scratch[i], code, NULL, &err);
    }
}

/* The wait for the next completion: bounded while the server owes us. */
static gpr_timespec next_deadline(an_appender *a, bool *awaiting)
{
    gpr_timespec d;

    pthread_mutex_lock(&a->mu);
    *awaiting = !a->ended && (a->outstanding > 0 || a->close_sent);
    d = *awaiting ? a->progress : gpr_now(GPR_CLOCK_MONOTONIC);
    pthread_mutex_unlock(&a->mu);
    return gpr_time_add(d, gpr_time_from_millis(a->timeout_ms, GPR_TIMESPAN));
}

static bool busy(an_appender *a)
{
    bool b;

    pthread_mutex_lock(&a->mu);
    b = a->write_busy || a->read_busy || a->close_busy || a->status_busy;
    pthread_mutex_unlock(&a->mu);
    return b;
}

static void *appender_main(void *p)
{
    an_appender *a = p;
    bool cancelled = false;

    while (busy(a)) {
        bool awaiting;
        gpr_timespec d = next_deadline(a, &awaiting);
        grpc_event ev = grpc_completion_queue_next(a->cq, d, NULL);

        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            /* Recheck: a result may have moved the deadline meanwhile. */
            d = next_deadline(a, &awaiting);
            if (awaiting && !cancelled && gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), d) >= 0) {
                grpc_call_cancel_with_status(a->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                             "libannals: no AppendResult within the client's "
                                             "timeout",
                                             NULL);
                cancelled = true;
            }
            continue;
        }
        assert(ev.type == GRPC_OP_COMPLETE);
        AN_TSAN_ACQUIRE(a);
        switch ((uintptr_t)ev.tag) {
        case TAG_WRITE:
            on_write(a, ev.success);
            break;
        case TAG_READ:
            on_read(a);
            break;
        case TAG_CLOSE:
            pthread_mutex_lock(&a->mu);
            a->close_busy = false;
            pthread_mutex_unlock(&a->mu);
            break;
        case TAG_STATUS:
            on_status(a);
            break;
        default:
            assert(!"unexpected tag on the appender's queue");
        }
    }
    fail_outstanding(a);
    pthread_mutex_lock(&a->mu);
    a->thread_done = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the API ---- */

/* Frees what open made; the thread is not running, no batch is in flight. */
static void appender_free(an_appender *a)
{
    struct out_msg *m;

    while ((m = a->q_head)) {
        a->q_head = m->next;
        grpc_slice_unref(m->packed);
        free(m);
    }
    if (a->call) {
        grpc_call_unref(a->call);
    }
    an__cq_free(a->cq, false);
    grpc_byte_buffer_destroy(a->rbuf);
    grpc_slice_unref(a->details);
    grpc_metadata_array_destroy(&a->md_initial);
    grpc_metadata_array_destroy(&a->md_trailing);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a->ids);
    free(a->scratch);
    free(a);
}

/*
 * open_call - starts the call and waits, up to the client's timeout, until
 * its headers are on their way, so that an unreachable server shows here.
 */
static int open_call(an_appender *a)
{
    grpc_op op;
    grpc_event ev;

    grpc_metadata md[AN__EP_MD_MAX + 1];
    size_t n_md;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(a->lease.ep, &op);
    /* batched messages (commands.proto): this client reads AppendResult.more */
    n_md = op.data.send_initial_metadata.count;
    assert(n_md <= AN__EP_MD_MAX);
    if (n_md) memcpy(md, op.data.send_initial_metadata.metadata, n_md * sizeof(md[0]));
    md[n_md].key = grpc_slice_from_static_string("annals-batch");
    md[n_md].value = grpc_slice_from_static_string("1");
    op.data.send_initial_metadata.count = n_md + 1;
    op.data.send_initial_metadata.metadata = md;
    if (grpc_call_start_batch(a->call, &op, 1, TAG(TAG_START), NULL) != GRPC_CALL_OK) {
        return AN_EINTERNAL;
    }
    ev = grpc_completion_queue_next(a->cq, an__deadline(a->timeout_ms), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_call_cancel_with_status(a->call, GRPC_STATUS_UNAVAILABLE,
                                     "libannals: cannot reach the server", NULL);
        ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    assert(ev.type == GRPC_OP_COMPLETE && ev.tag == TAG(TAG_START));
    if (ev.success) {
        a->status_busy = start_status(a);
        if (!a->status_busy) return AN_EINTERNAL;
        start_read(a, true);
        return 0;
    }
    /* The call failed before it started: its status tells why. */
    if (!start_status(a)) return AN_EINTERNAL;
    ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert(ev.type == GRPC_OP_COMPLETE && ev.tag == TAG(TAG_STATUS));
    return a->status == GRPC_STATUS_OK ? AN_EUNAVAIL : an_code_from_status(a->status);
}

int an_appender_open(an_client *c, unsigned max_in_flight, an_append_cb cb, void *arg,
                     an_appender **out)
{
    an_appender *a;
    size_t cap = 2;
    int rc;

    if (!c || !cb || !out) return AN_EINVAL;
    if (max_in_flight == 0) {
        max_in_flight = 64;
    }
    if (max_in_flight > AN__APPENDER_MAX_IN_FLIGHT) {
        max_in_flight = AN__APPENDER_MAX_IN_FLIGHT;
    }
    while (cap < 2 * (size_t)max_in_flight) {
        cap *= 2;
    }

    a = calloc(1, sizeof(*a));
    if (!a) return AN_ENOMEM;
    a->c = c;
    a->cb = cb;
    a->arg = arg;
    a->max_in_flight = max_in_flight;
    a->timeout_ms = c->timeout_ms;
    a->next_id = 1;
    a->details = grpc_empty_slice();
    grpc_metadata_array_init(&a->md_initial);
    grpc_metadata_array_init(&a->md_trailing);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->ids_mask = cap - 1;
    a->ids = calloc(cap, sizeof(*a->ids));
    a->scratch = calloc(max_in_flight, sizeof(*a->scratch));
    a->cq = grpc_completion_queue_create_for_next(NULL);
    if (!a->ids || !a->scratch || !a->cq) {
        rc = AN_ENOMEM;
        goto out_free;
    }
    rc = an__ep_acquire(c, &a->lease);
    if (rc) goto out_free;
    a->leased = true;
    a->call = an__call_new_ep(a->lease.ep, a->cq, AN__M_APPEND_STREAM,
                              gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (!a->call) {
        rc = AN_EINTERNAL;
        goto out_free;
    }
    rc = open_call(a);
    if (rc) {
        appender_lease_end(a, rc);
        goto out_cancel;
    }
    if (pthread_create(&a->thread, NULL, appender_main, a) != 0) {
        rc = AN_ENOMEM;
        goto out_cancel;
    }
    *out = a;
    return 0;

out_cancel:
    /* Take every batch that was started off the queue before freeing. */
    grpc_call_cancel(a->call, NULL);
    while (a->read_busy || a->status_busy) {
        grpc_event ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                                   NULL);

        assert(ev.type == GRPC_OP_COMPLETE);
        if (ev.tag == TAG(TAG_READ)) {
            a->read_busy = false;
        }
        if (ev.tag == TAG(TAG_STATUS)) {
            a->status_busy = false;
        }
    }
out_free:
    appender_lease_end(a, AN__ABANDONED);
    appender_free(a);
    return rc;
}

int an_appender_submit(an_appender *a, const struct an_stream_append *streams, size_t n_streams,
                       uint64_t *correlation_id)
{
    grpc_byte_buffer *bb;
    struct out_msg *m = NULL;
    uint64_t id;
    int rc;

    if (!a) return AN_EINVAL;
    id = a->next_id;
    rc = an__pack_append(streams, n_streams, id, &bb, NULL);
    if (rc) return rc;

    pthread_mutex_lock(&a->mu);
    while (!a->ended && a->outstanding >= a->max_in_flight) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    if (a->ended) {
        rc = a->end_rc;
        goto out_unlock;
    }
    if (a->write_busy) {
        m = malloc(sizeof(*m));
        if (!m) {
            rc = AN_ENOMEM;
            goto out_unlock;
        }
        m->next = NULL;
        m->packed = an__bb_slice(bb);
        if (a->q_tail) {
            a->q_tail->next = m;
        } else {
            a->q_head = m;
        }
        a->q_tail = m;
    } else {
        start_write_locked(a, bb);
        bb = NULL;
    }
    if (a->outstanding++ == 0) {
        a->progress = gpr_now(GPR_CLOCK_MONOTONIC);
    }
    ids_add(a, id);
    a->next_id++;
    if (correlation_id) {
        *correlation_id = id;
    }

out_unlock:
    pthread_mutex_unlock(&a->mu);
    grpc_byte_buffer_destroy(bb);
    return rc;
}

int an_appender_close(an_appender *a)
{
    int rc;

    if (!a) return 0;
    pthread_mutex_lock(&a->mu);
    a->closing = true;
    maybe_close_locked(a);
    while (!a->thread_done) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    rc = a->final_rc;
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    appender_free(a);
    return rc;
}

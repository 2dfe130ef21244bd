/*
 * srv_calls.c - the services: what each method does with its messages.
 *
 * Commands.Append and DeleteStream are decoded and validated on the CQ
 * thread, then queued to the writer, which answers them (srv_writer.c).
 * Commands.AppendStream does the same per append, keeping at most
 * stream_window requests of the call in progress (in the writer or
 * waiting to be sent back) and reading no further message until it has
 * room. A message may carry several appends (AppendStreamRequest.more,
 * "batched messages" in commands.proto), and for a client that asks for
 * it ("annals-batch: 1") the results queued while a send is in flight go
 * out together in the next message (AppendResult.more): one gRPC message
 * costs tens of microseconds of CPU, an append in it a fraction of that.
 * Queries.ReadStream and ReadAll send batches of about 64 KiB made of the
 * stored wire bytes, one message in flight at a time: each send
 * completion reads the next batch in a fresh read snapshot bounded by the
 * position fixed when the call started. Queries.Subscribe is in srv_sub.c,
 * Projections.* and Queries.GetView/ScanView in srv_proj.c.
 * GetStream and Health/Check answer at once.
 */
#include "srv_int.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annals/v1/admin.pb-c.h"
#include "annals/v1/consumers.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define READ_BATCH_BYTES (64u << 10)

/* ---- decoding ---- */

/* Unpacks the received message with desc; NULL if malformed. */
static ProtobufCMessage *unpack(struct srv_call *c, const ProtobufCMessageDescriptor *desc)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, c->recv)) {
        return NULL;
    }
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    return m;
}

static struct srv_wreq *wreq_new(struct srv_call *c, size_t n_streams)
{
    struct srv_wreq *w = calloc(1, sizeof(*w) + n_streams * sizeof(w->results[0]));
    if (!w) {
        return NULL;
    }
    srv_call_ref(c);
    w->call = c;
    w->bytes = c->recv_bytes;
    w->op.streams = w->results;
    w->op.validated = true;
    return w;
}

/* ---- Append / DeleteStream ---- */

/* Why the writer's queue refused a request: shutdown, or full. */
static const char *queue_refusal(const struct srv *s, int rc, char *buf, size_t cap)
{
    if (rc == AN_EBUSY) {
        snprintf(buf, cap, "the writer's queue is full (limit %llu bytes of requests waiting, "
                 "--max-queue); nothing was written, retry later",
                 (unsigned long long)s->cfg.max_queue_bytes);
    } else {
        snprintf(buf, cap, "the server is shutting down; nothing was written");
    }
    return buf;
}

/* Validates a unary Append or DeleteStream on this thread and queues it for
 * the writer, which answers it; or answers the failure now. */
static void on_write_request(struct srv_call *c)
{
    char detail[LOG_DETAIL_MAX] = "";
    bool del = c->method == SRV_M_DELETE_STREAM;
    Annals__V1__AppendRequest *ar = del ? NULL : (Annals__V1__AppendRequest *)c->req;
    Annals__V1__DeleteStreamRequest *dr = del ? (Annals__V1__DeleteStreamRequest *)c->req : NULL;
    int rc = del ? log_validate_delete(c->srv->log, dr, detail)
                 : log_validate_append(c->srv->log, ar, false, detail);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    struct srv_wreq *w = wreq_new(c, del ? 0 : ar->n_streams);
    if (!w) {
        srv_reply_code(c, AN_ENOMEM, "out of memory queueing the request");
        return;
    }
    w->op.kind = del ? LOG_OP_DELETE : LOG_OP_APPEND;
    w->op.append = ar;
    w->op.del = dr;
    w->op.principal = c->principal;
    if ((rc = srv_writer_submit(c->srv, w))) {
        srv_wreq_free(w);
        srv_reply_code(c, rc, queue_refusal(c->srv, rc, detail, sizeof(detail)));
    }
}

/* ---- AppendStream ---- */

/*
 * With c->mu held: takes the next message to send off the queue of
 * results: the first, and (batched messages, commands.proto) for a client
 * that reads AppendResult.more, every one queued behind it up to the
 * stream window or SRV_BATCH_BYTES, as field 4 of the first. Sets *k to
 * the number of results taken.
 */
static grpc_byte_buffer *astream_take(struct srv_call *c, unsigned *k)
{
    struct srv_astream *as = &c->as;
    struct srv_out *o = as->out_head;
    size_t bytes = GRPC_SLICE_LENGTH(o->packed);
    unsigned n = 1;
    if (as->batch_out) {
        for (struct srv_out *x = o->next; x && n < c->srv->cfg.stream_window; x = x->next) {
            size_t add = pb_field_len(GRPC_SLICE_LENGTH(x->packed));
            if (bytes + add > SRV_BATCH_BYTES) {
                break;
            }
            bytes += add;
            n++;
        }
    }
    grpc_slice sl;
    if (n == 1) {
        sl = o->packed;
        as->out_head = o->next;
        free(o);
    } else {
        sl = grpc_slice_malloc(bytes);
        uint8_t *p = GRPC_SLICE_START_PTR(sl);
        for (unsigned i = 0; i < n; i++) {
            const uint8_t *d = GRPC_SLICE_START_PTR(o->packed);
            size_t len = GRPC_SLICE_LENGTH(o->packed);
            if (i) {
                p += pb_put_field(p, 0x22, d, len); /* AppendResult.more = 4 */
            } else {
                memcpy(p, d, len);
                p += len;
            }
            struct srv_out *next = o->next;
            grpc_slice_unref(o->packed);
            free(o);
            o = next;
        }
        as->out_head = o;
    }
    if (!as->out_head) {
        as->out_tail = NULL;
    }
    *k = n;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* With c->mu held: start what can be started. */
static void astream_pump(struct srv_call *c)
{
    struct srv_astream *as = &c->as;
    if (as->finished) {
        return;
    }
    if (!as->sending && as->out_head) {
        unsigned k = 0;
        grpc_byte_buffer *bb = astream_take(c, &k);
        as->sending = true;
        if (srv_send(c, bb)) {
            as->sending = false;
        }
        as->in_progress -= k;
        atomic_fetch_add_explicit(&c->srv->metrics.astream_msgs_out, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->srv->metrics.astream_results_out, k,
                                  memory_order_relaxed);
    }
    if (!as->reading && !as->half_closed && as->in_progress < c->srv->cfg.stream_window) {
        as->reading = srv_recv(c) == 0;
    }
    if (as->reading && !as->half_closed && !as->sending && !as->out_head &&
        as->in_progress == 0 && !as->stop_sent && atomic_load(&c->srv->w_stopped)) {
        /* shutdown, and everything owed is out: a client that sends nothing
         * more would hold the call until the grace period ends. Cancelling
         * completes the read, which then finishes the call. */
        as->stop_sent = true;
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE,
                                     "the server is shutting down", NULL);
    }
    if (as->half_closed && !as->sending && !as->out_head && as->in_progress == 0 &&
        !as->reading) {
        as->finished = true;
        if (as->end_code) {
            srv_reply_code(c, as->end_code,
                           "the server is shutting down; requests without a result were not "
                           "written");
        } else {
            srv_reply(c, NULL, GRPC_STATUS_OK, NULL, NULL, 0);
        }
    }
}

/* With c->mu held: queue one AppendResult for sending. */
static void astream_push(struct srv_call *c, Annals__V1__AppendResult *res)
{
    struct srv_out *o = malloc(sizeof(*o));
    if (!o) {
        c->as.in_progress--;
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(&res->base);
    o->packed = grpc_slice_malloc(n);
    protobuf_c_message_pack(&res->base, GRPC_SLICE_START_PTR(o->packed));
    o->next = NULL;
    if (c->as.out_tail) {
        c->as.out_tail->next = o;
    } else {
        c->as.out_head = o;
    }
    c->as.out_tail = o;
}

static void astream_error(struct srv_call *c, uint64_t corr, int code, const char *detail,
                          const char *stream, int64_t actual)
{
    Annals__V1__AppendResult res = ANNALS__V1__APPEND_RESULT__INIT;
    Annals__V1__AppendError err = ANNALS__V1__APPEND_ERROR__INIT;
    res.correlation_id = corr;
    res.outcome_case = ANNALS__V1__APPEND_RESULT__OUTCOME_ERROR;
    res.error = &err;
    err.code = (int32_t)srv_status_of(code);
    err.message = (char *)(detail && detail[0] ? detail : an_strerror(code));
    err.stream = (char *)(stream ? stream : "");
    err.actual_version = actual;
    astream_push(c, &res);
}

void srv_astream_result(struct srv_call *c, struct srv_wreq *w, bool pump)
{
    const struct log_op *op = &w->op;
    pthread_mutex_lock(&c->mu);
    if (c->as.finished) {
        c->as.in_progress--;
    } else if (op->rc == AN_EUNAVAIL) {
        /* refused at shutdown, nothing written: no result, the call ends
         * UNAVAILABLE once the results owed are out */
        c->as.in_progress--;
        c->as.end_code = AN_EUNAVAIL;
        c->as.half_closed = true;
    } else if (op->rc) {
        const char *stream =
            op->rc == AN_ECONFLICT ? op->append->streams[op->conflict_stream]->stream : NULL;
        astream_error(c, w->correlation_id, op->rc, op->detail, stream,
                      op->rc == AN_ECONFLICT ? op->actual_version : 0);
    } else {
        size_t n = op->append->n_streams;
        Annals__V1__AppendResult res = ANNALS__V1__APPEND_RESULT__INIT;
        Annals__V1__AppendResponse ok;
        Annals__V1__StreamResult *sr = malloc(n * (sizeof(*sr) + sizeof(sr)));
        if (sr) {
            srv_append_response(op, n, &ok, sr, (Annals__V1__StreamResult **)(sr + n));
            res.correlation_id = w->correlation_id;
            res.outcome_case = ANNALS__V1__APPEND_RESULT__OUTCOME_OK;
            res.ok = &ok;
            astream_push(c, &res);
            free(sr);
        } else {
            astream_error(c, w->correlation_id, AN_ENOMEM, "out of memory", NULL, 0);
        }
    }
    if (pump) {
        astream_pump(c);
    }
    pthread_mutex_unlock(&c->mu);
    srv_wreq_free(w);
}

/* How many appends of one message are handed to the writer at once. */
#define ASTREAM_CHUNK 64

/*
 * With c->mu held: checks one append of the call. Returns its request for
 * the writer (which then owns req), or NULL with its failure queued as a
 * result (req freed).
 */
static struct srv_wreq *astream_check(struct srv_call *c, Annals__V1__AppendStreamRequest *req,
                                      size_t bytes)
{
    char detail[LOG_DETAIL_MAX] = "";
    c->as.in_progress++;
    int rc = log_validate_append(c->srv->log, req->append, false, detail);
    if (!rc) {
        rc = srv_authorize_append(c, req->append, detail);
    }
    struct srv_wreq *w = NULL;
    if (!rc) {
        w = wreq_new(c, req->append->n_streams);
        rc = w ? 0 : AN_ENOMEM;
    }
    if (rc) {
        astream_error(c, req->correlation_id, rc, detail, NULL, 0);
        annals__v1__append_stream_request__free_unpacked(req, NULL);
        return NULL;
    }
    w->bytes = bytes;
    w->op.kind = LOG_OP_APPEND;
    w->op.append = req->append;
    w->op.principal = c->principal;
    w->correlation_id = req->correlation_id;
    w->stream_req = req;
    return w;
}

/*
 * With c->mu held: hands a message's checked appends to the writer, all at
 * once. What the writer's queue has no room for gets its refusal as a
 * result. False when the writer refused them for shutdown: the call then
 * ends.
 */
static bool astream_submit(struct srv_call *c, struct srv_wreq **ws, size_t n)
{
    char detail[LOG_DETAIL_MAX];
    size_t taken = 0;
    int rc = n ? srv_writer_submit_many(c->srv, ws, n, &taken) : 0;
    if (rc) {
        queue_refusal(c->srv, rc, detail, sizeof(detail));
    }
    for (size_t i = taken; i < n; i++) {
        struct srv_wreq *w = ws[i];
        Annals__V1__AppendStreamRequest *req = w->stream_req;
        w->stream_req = NULL;
        srv_wreq_free(w);
        if (rc == AN_EBUSY) {
            astream_error(c, req->correlation_id, rc, detail, NULL, 0);
        } else {
            c->as.in_progress--;
        }
        annals__v1__append_stream_request__free_unpacked(req, NULL);
    }
    if (rc && rc != AN_EBUSY) {
        c->as.end_code = AN_EUNAVAIL;
        c->as.half_closed = true;
        return false;
    }
    return true;
}

/* With c->mu held: ends the call for a message it cannot take. */
static void astream_refuse(struct srv_call *c, Annals__V1__AppendStreamRequest *req, int code,
                           const char *detail)
{
    if (req) {
        annals__v1__append_stream_request__free_unpacked(req, NULL);
    }
    c->as.finished = true;
    c->as.half_closed = true;
    srv_reply_code(c, code, detail);
}

static void astream_on_read(struct srv_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    c->as.reading = false;
    if (!ok || !c->recv) {
        c->as.half_closed = true;
        astream_pump(c);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->recv_bytes = grpc_byte_buffer_length(c->recv);
    Annals__V1__AppendStreamRequest *req = (Annals__V1__AppendStreamRequest *)unpack(
        c, &annals__v1__append_stream_request__descriptor);
    if (!req) {
        astream_refuse(c, NULL, AN_EINVAL, "malformed AppendStreamRequest");
        pthread_mutex_unlock(&c->mu);
        return;
    }
    /* batched messages (commands.proto): the appends after this one,
     * checked whole before any of them is taken */
    size_t n_more = req->n_more;
    unsigned window = c->srv->cfg.stream_window;
    char detail[LOG_DETAIL_MAX];
    if (n_more >= window) {
        snprintf(detail, sizeof(detail),
                 "an AppendStreamRequest carries %zu appends; the limit is %u (annals-batch); "
                 "nothing of it was written",
                 n_more + 1, window);
        astream_refuse(c, req, AN_ETOOBIG, detail);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    for (size_t i = 0; i < n_more; i++) {
        if (req->more[i]->n_more) {
            snprintf(detail, sizeof(detail),
                     "AppendStreamRequest.more[%zu] carries a 'more' of its own; nothing of the "
                     "message was written",
                     i);
            astream_refuse(c, req, AN_EINVAL, detail);
            pthread_mutex_unlock(&c->mu);
            return;
        }
    }
    /* each element is an allocation of its own (protobuf-c, default
     * allocator: malloc): take the array from the request, and each element
     * is freed with its own append */
    Annals__V1__AppendStreamRequest **more = req->more;
    req->more = NULL;
    req->n_more = 0;
    atomic_fetch_add_explicit(&c->srv->metrics.astream_msgs_in, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->srv->metrics.astream_appends_in, n_more + 1,
                              memory_order_relaxed);
    size_t bytes = c->recv_bytes / (n_more + 1);
    /* checked first, then handed over together, ASTREAM_CHUNK at a time */
    struct srv_wreq *ws[ASTREAM_CHUNK];
    size_t n = 0;
    bool go = true;
    for (size_t i = 0; i <= n_more; i++) {
        Annals__V1__AppendStreamRequest *r = i ? more[i - 1] : req;
        if (!go) {
            annals__v1__append_stream_request__free_unpacked(r, NULL);
            continue;
        }
        struct srv_wreq *w = astream_check(c, r, bytes);
        if (w) {
            ws[n++] = w;
        }
        if (n == ASTREAM_CHUNK || (i == n_more && n)) {
            go = astream_submit(c, ws, n);
            n = 0;
        }
    }
    free(more);
    astream_pump(c);
    pthread_mutex_unlock(&c->mu);
}

static void astream_on_write(struct srv_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    c->as.sending = false;
    if (!ok) {
        /* the client is gone: CLOSE ends the call; stop sending */
        c->as.finished = true;
        if (!c->as.reading && !c->as.half_closed) {
            c->as.half_closed = true;
        }
        srv_reply(c, NULL, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
    } else {
        astream_pump(c);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- reads ---- */

bool srv_batch_add(void *arg, const struct log_event *ev)
{
    struct srv_batch *b = arg;
    size_t need = b->len + ev->packed_len + 11;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : READ_BATCH_BYTES + 1024;
        while (cap < need) {
            cap *= 2;
        }
        uint8_t *p = realloc(b->buf, cap);
        if (!p) {
            return false;
        }
        b->buf = p;
        b->cap = cap;
    }
    /* field 1 (events), length-delimited: the stored bytes */
    b->len += pb_put_field(b->buf + b->len, 0x0a, ev->packed, ev->packed_len);
    b->n++;
    b->last_position = ev->position;
    return b->len < (b->max_bytes ? b->max_bytes : READ_BATCH_BYTES) && b->n < b->want;
}

/* Reads the next batch of a ReadStream/ReadAll and sends it, or ends the
 * call. Runs on the call's CQ thread (its reader). */
static void read_next(struct srv_call *c)
{
    struct srv_rstream *rs = &c->rs;
    log_reader *rd = c->q->rd;
    struct srv_batch b;
    int rc = 0;
again:
    b = (struct srv_batch){.want = rs->left};
    if (rs->done || rs->left == 0 || atomic_load(&c->closed)) {
        srv_reply(c, NULL, GRPC_STATUS_OK, NULL, NULL, 0);
        return;
    }
    if ((rc = log_reader_begin(rd))) {
        srv_reply_code(c, rc, "cannot open a read snapshot");
        return;
    }
    if (rs->all) {
        struct log_all_read q = {
            .from_position = rs->next,
            .backwards = rs->backwards,
            .max_count = rs->left == UINT64_MAX ? 0 : rs->left,
            .max_scan = 1u << 16,
            .filter = &rs->filter,
            .as_of = rs->as_of,
        };
        rc = log_read_all(rd, &q, srv_batch_add, &b, &rs->next, &rs->done);
        if (!rc && rs->backwards && rs->next == 0) {
            rs->done = true;
        }
    } else {
        struct log_stream_read q = {
            .stream = rs->stream,
            .from_version = rs->next,
            .backwards = rs->backwards,
            .max_count = rs->left == UINT64_MAX ? 0 : rs->left,
            .as_of = rs->as_of,
        };
        rc = log_read_stream(rd, &q, srv_batch_add, &b, &rs->next, &rs->done);
    }
    char detail[LOG_DETAIL_MAX];
    snprintf(detail, sizeof(detail), "%s", log_reader_detail(rd));
    log_reader_end(rd);
    if (rc) {
        free(b.buf);
        srv_reply_code(c, rc, detail);
        return;
    }
    if (rs->left != UINT64_MAX) {
        rs->left -= b.n;
    }
    if (b.n == 0) {
        free(b.buf);
        if (rs->done || rs->left == 0) {
            srv_reply(c, NULL, GRPC_STATUS_OK, NULL, NULL, 0);
            return;
        }
        goto again; /* a filter skipped a whole scan window */
    }
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)b.buf, b.len);
    free(b.buf);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    if (srv_send(c, bb)) {
        srv_reply_code(c, AN_EINTERNAL, "send failed");
    }
}

static void start_read(struct srv_call *c)
{
    struct srv_rstream *rs = &c->rs;
    log_reader *rd = c->q->rd;
    const Annals__V1__AsOf *as_of;
    int rc;
    if (c->method == SRV_M_READ_ALL) {
        Annals__V1__ReadAllRequest *r = (Annals__V1__ReadAllRequest *)c->req;
        rs->all = true;
        rs->backwards = r->direction == ANNALS__V1__DIRECTION__BACKWARDS;
        rs->left = r->max_count ? r->max_count : UINT64_MAX;
        as_of = r->as_of;
        if (r->filter) {
            rs->filter.stream_prefixes = (const char *const *)r->filter->stream_prefixes;
            rs->filter.n_stream_prefixes = r->filter->n_stream_prefixes;
            rs->filter.event_types = (const char *const *)r->filter->event_types;
            rs->filter.n_event_types = r->filter->n_event_types;
        }
    } else {
        Annals__V1__ReadStreamRequest *r = (Annals__V1__ReadStreamRequest *)c->req;
        rs->backwards = r->direction == ANNALS__V1__DIRECTION__BACKWARDS;
        rs->left = r->max_count ? r->max_count : UINT64_MAX;
        as_of = r->as_of;
        rs->stream = strdup(r->stream ? r->stream : "");
        if (!rs->stream) {
            srv_reply_code(c, AN_ENOMEM, NULL);
            return;
        }
    }
    if ((rc = log_reader_begin(rd))) {
        srv_reply_code(c, rc, "cannot open a read snapshot");
        return;
    }
    rc = log_resolve_as_of(rd, as_of, &rs->as_of);
    struct log_stream_info info;
    char nf[LOG_DETAIL_MAX] = "";
    if (!rc && !rs->all) {
        Annals__V1__ReadStreamRequest *r = (Annals__V1__ReadStreamRequest *)c->req;
        rc = log_get_stream(rd, rs->stream, rs->as_of, &info);
        if (!rc && info.event_count == 0) {
            rc = AN_ENOTFOUND;
            snprintf(nf, sizeof(nf), "stream '%.200s' has no visible events%s", rs->stream,
                     info.deleted ? " (deleted)" : "");
        }
        if (!rc) {
            uint64_t first = (uint64_t)info.last_version + 1 - info.event_count;
            if (r->from_end) {
                rs->next = (uint64_t)info.last_version;
            } else if (rs->backwards) {
                rs->next = r->from_version < (uint64_t)info.last_version
                               ? r->from_version
                               : (uint64_t)info.last_version;
                rs->done = r->from_version < first;
            } else {
                rs->next = r->from_version;
            }
        }
    } else if (!rc) {
        Annals__V1__ReadAllRequest *r = (Annals__V1__ReadAllRequest *)c->req;
        uint64_t head = rs->as_of;
        if (r->from_end || (rs->backwards && r->from_position == 0)) {
            rs->next = head;
        } else if (rs->backwards) {
            rs->next = r->from_position < head ? r->from_position : head;
        } else {
            rs->next = r->from_position ? r->from_position : 1;
        }
        rs->done = head == 0 || (!rs->backwards && rs->next > head) || rs->next == 0;
    }
    char detail[LOG_DETAIL_MAX];
    snprintf(detail, sizeof(detail), "%s", nf[0] ? nf : log_reader_detail(rd));
    log_reader_end(rd);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    read_next(c);
}

/* ---- GetStream, Health ---- */

static void on_get_stream(struct srv_call *c)
{
    Annals__V1__GetStreamRequest *r = (Annals__V1__GetStreamRequest *)c->req;
    log_reader *rd = c->q->rd;
    struct log_stream_info info;
    uint64_t as_of;
    int rc = log_reader_begin(rd);
    if (rc) {
        srv_reply_code(c, rc, "cannot open a read snapshot");
        return;
    }
    rc = log_resolve_as_of(rd, r->as_of, &as_of);
    if (!rc) {
        rc = log_get_stream(rd, r->stream, as_of, &info);
    }
    char detail[LOG_DETAIL_MAX];
    snprintf(detail, sizeof(detail), "%s", log_reader_detail(rd));
    log_reader_end(rd);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    Annals__V1__StreamInfo si = ANNALS__V1__STREAM_INFO__INIT;
    si.stream = r->stream;
    si.last_version = info.last_version < 0 ? 0 : (uint64_t)info.last_version;
    si.event_count = info.event_count;
    si.first_position = info.first_position;
    si.last_position = info.last_position;
    si.created_unix_nanos = info.created_ns;
    si.updated_unix_nanos = info.updated_ns;
    si.deleted = info.deleted;
    si.tombstoned = info.tombstoned;
    srv_reply(c, srv_pack(&si.base), GRPC_STATUS_OK, NULL, NULL, 0);
}

static void on_health(struct srv_call *c)
{
    Grpc__Health__V1__HealthCheckRequest *r = (Grpc__Health__V1__HealthCheckRequest *)c->req;
    if (r->service && r->service[0] && strcmp(r->service, "annals.v1.Commands") != 0 &&
        strcmp(r->service, "annals.v1.Queries") != 0) {
        srv_reply(c, NULL, GRPC_STATUS_NOT_FOUND, "unknown service", NULL, 0);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse res = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    res.status = atomic_load(&c->srv->shutting_down)
                     ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    srv_reply(c, srv_pack(&res.base), GRPC_STATUS_OK, NULL, NULL, 0);
}

/* ---- dispatch ---- */

static const ProtobufCMessageDescriptor *request_desc(enum srv_method m)
{
    switch (m) {
    case SRV_M_APPEND:
        return &annals__v1__append_request__descriptor;
    case SRV_M_DELETE_STREAM:
        return &annals__v1__delete_stream_request__descriptor;
    case SRV_M_READ_STREAM:
        return &annals__v1__read_stream_request__descriptor;
    case SRV_M_READ_ALL:
        return &annals__v1__read_all_request__descriptor;
    case SRV_M_GET_STREAM:
        return &annals__v1__get_stream_request__descriptor;
    case SRV_M_HEALTH_CHECK:
        return &grpc__health__v1__health_check_request__descriptor;
    case SRV_M_SUBSCRIBE:
        return &annals__v1__subscribe_request__descriptor;
    case SRV_M_GET_VIEW:
        return &annals__v1__get_view_request__descriptor;
    case SRV_M_SCAN_VIEW:
        return &annals__v1__scan_view_request__descriptor;
    case SRV_M_PROJ_CREATE:
        return &annals__v1__projection_definition__descriptor;
    case SRV_M_PROJ_LIST:
        return &annals__v1__list_projections_request__descriptor;
    case SRV_M_PROJ_GET:
        return &annals__v1__get_projection_request__descriptor;
    case SRV_M_PROJ_REBUILD:
        return &annals__v1__rebuild_projection_request__descriptor;
    case SRV_M_PROJ_DELETE:
        return &annals__v1__delete_projection_request__descriptor;
    case SRV_M_BACKUP:
        return &annals__v1__backup_request__descriptor;
    case SRV_M_GRP_CREATE:
        return &annals__v1__consumer_group__descriptor;
    case SRV_M_GRP_GET:
        return &annals__v1__get_group_request__descriptor;
    case SRV_M_GRP_LIST:
        return &annals__v1__list_groups_request__descriptor;
    case SRV_M_GRP_DELETE:
        return &annals__v1__delete_group_request__descriptor;
    case SRV_M_GRP_REPLAY:
        return &annals__v1__replay_parked_request__descriptor;
    case SRV_M_CONSUME:
    case SRV_M_APPEND_STREAM:
    case SRV_M_UNKNOWN:
        break;
    }
    return NULL;
}

void srv_end_streams(struct srv *s)
{
    for (unsigned i = 0; i < s->n_cqs; i++) {
        struct srv_cq *q = &s->cqs[i];
        pthread_mutex_lock(&q->mu);
        for (struct srv_call *c = q->open; c; c = c->open_next) {
            if (c->method == SRV_M_APPEND_STREAM) {
                pthread_mutex_lock(&c->mu);
                astream_pump(c);
                pthread_mutex_unlock(&c->mu);
            } else if (c->method == SRV_M_CONSUME) {
                srv_consume_end(c, AN_EUNAVAIL, "the server is shutting down");
            } else {
                /* A subscription still listed has a message in flight (the
                 * parked ones have ended), which a subscriber that stopped
                 * reading may never take. The status goes out in a HEADERS
                 * frame, which flow control does not hold back, after
                 * what was sent before it. */
                grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE,
                                             "the server is shutting down", NULL);
            }
        }
        pthread_mutex_unlock(&q->mu);
    }
}

void srv_on_new(struct srv_call *c)
{
    if (c->method != SRV_M_HEALTH_CHECK && c->method != SRV_M_UNKNOWN) {
        char detail[LOG_DETAIL_MAX] = "";
        int rc = srv_auth_identify(c, detail);
        if (rc) {
            char *m = grpc_slice_to_c_string(c->details.method);
            srv_auth_refused(c->principal, rc, strrchr(m, '/') ? strrchr(m, '/') + 1 : m, "",
                             detail);
            gpr_free(m);
            c->as.finished = true;
            srv_reply_code(c, rc, detail);
            return;
        }
    }
    if (c->method == SRV_M_APPEND_STREAM || c->method == SRV_M_SUBSCRIBE ||
        c->method == SRV_M_CONSUME) {
        srv_call_list(c);
    }
    switch (c->method) {
    case SRV_M_UNKNOWN: {
        char detail[300];
        char *m = grpc_slice_to_c_string(c->details.method);
        snprintf(detail, sizeof(detail), "method %.200s is not implemented", m);
        gpr_free(m);
        srv_reply(c, NULL, GRPC_STATUS_UNIMPLEMENTED, detail, NULL, 0);
        return;
    }
    case SRV_M_APPEND_STREAM:
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < c->md.count; i++) {
            if (grpc_slice_str_cmp(c->md.metadata[i].key, "annals-batch") == 0 &&
                grpc_slice_str_cmp(c->md.metadata[i].value, "1") == 0) {
                c->as.batch_out = true; /* it reads AppendResult.more */
            }
        }
        c->as.reading = srv_recv(c) == 0;
        if (!c->as.reading) {
            c->as.finished = true;
            srv_reply_code(c, AN_EINTERNAL, "cannot read the call");
        }
        pthread_mutex_unlock(&c->mu);
        return;
    case SRV_M_CONSUME:
        srv_call_ref(c); /* the receive's */
        c->cons.reading = srv_recv(c) == 0;
        if (!c->cons.reading) {
            srv_call_unref(c);
            c->cons.ended = true;
            srv_reply_code(c, AN_EINTERNAL, "cannot read the call");
        }
        return;
    case SRV_M_APPEND:
    case SRV_M_DELETE_STREAM:
    case SRV_M_READ_STREAM:
    case SRV_M_READ_ALL:
    case SRV_M_GET_STREAM:
    case SRV_M_SUBSCRIBE:
    case SRV_M_GET_VIEW:
    case SRV_M_SCAN_VIEW:
    case SRV_M_PROJ_CREATE:
    case SRV_M_PROJ_LIST:
    case SRV_M_PROJ_GET:
    case SRV_M_PROJ_REBUILD:
    case SRV_M_PROJ_DELETE:
    case SRV_M_BACKUP:
    case SRV_M_GRP_CREATE:
    case SRV_M_GRP_GET:
    case SRV_M_GRP_LIST:
    case SRV_M_GRP_DELETE:
    case SRV_M_GRP_REPLAY:
    case SRV_M_HEALTH_CHECK:
        if (srv_recv(c)) {
            srv_reply_code(c, AN_EINTERNAL, "cannot read the call");
        }
        return;
    }
}

void srv_on_read(struct srv_call *c, bool ok)
{
    if (c->method == SRV_M_APPEND_STREAM) {
        astream_on_read(c, ok);
        return;
    }
    if (c->method == SRV_M_CONSUME) {
        srv_consume_on_read(c, ok);
        return;
    }
    if (!ok || !c->recv) {
        srv_reply_code(c, AN_EINVAL, "the call carried no request message");
        return;
    }
    const ProtobufCMessageDescriptor *desc = request_desc(c->method);
    c->recv_bytes = grpc_byte_buffer_length(c->recv);
    c->req = desc ? unpack(c, desc) : NULL;
    grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;
    if (!c->req) {
        char detail[160];
        snprintf(detail, sizeof(detail), "malformed %s", desc ? desc->short_name : "request");
        srv_reply_code(c, AN_EINVAL, detail);
        return;
    }
    if (atomic_load(&c->srv->shutting_down) && c->method != SRV_M_HEALTH_CHECK) {
        srv_reply_code(c, AN_EUNAVAIL, "the server is shutting down");
        return;
    }
    char adetail[LOG_DETAIL_MAX] = "";
    int arc = srv_authorize(c, adetail);
    if (arc) {
        srv_reply_code(c, arc, adetail);
        return;
    }
    switch (c->method) {
    case SRV_M_APPEND:
    case SRV_M_DELETE_STREAM:
        on_write_request(c);
        return;
    case SRV_M_READ_STREAM:
    case SRV_M_READ_ALL:
        start_read(c);
        return;
    case SRV_M_GET_STREAM:
        on_get_stream(c);
        return;
    case SRV_M_HEALTH_CHECK:
        on_health(c);
        return;
    case SRV_M_SUBSCRIBE:
        srv_sub_begin(c);
        return;
    case SRV_M_GET_VIEW:
    case SRV_M_SCAN_VIEW:
        srv_view_begin(c);
        return;
    case SRV_M_PROJ_CREATE:
    case SRV_M_PROJ_LIST:
    case SRV_M_PROJ_GET:
    case SRV_M_PROJ_REBUILD:
    case SRV_M_PROJ_DELETE:
        srv_proj_call(c);
        return;
    case SRV_M_BACKUP:
        srv_backup_begin(c);
        return;
    case SRV_M_GRP_CREATE:
    case SRV_M_GRP_GET:
    case SRV_M_GRP_LIST:
    case SRV_M_GRP_DELETE:
    case SRV_M_GRP_REPLAY:
        srv_group_call(c);
        return;
    case SRV_M_APPEND_STREAM:
    case SRV_M_CONSUME:
    case SRV_M_UNKNOWN:
        break;
    }
    srv_reply_code(c, AN_EUNIMPL, NULL);
}

void srv_on_write(struct srv_call *c, bool ok)
{
    if (c->method == SRV_M_APPEND_STREAM) {
        astream_on_write(c, ok);
        return;
    }
    if (c->method == SRV_M_SUBSCRIBE) {
        srv_sub_on_write(c, ok);
        return;
    }
    if (c->method == SRV_M_SCAN_VIEW) {
        srv_view_on_write(c, ok);
        return;
    }
    if (c->method == SRV_M_BACKUP) {
        srv_backup_on_write(c, ok);
        return;
    }
    if (c->method == SRV_M_CONSUME) {
        srv_consume_on_write(c, ok);
        return;
    }
    if (!ok || atomic_load(&c->closed)) {
        /* the client went away: end the chain */
        srv_reply(c, NULL, GRPC_STATUS_CANCELLED, "the client went away", NULL, 0);
        return;
    }
    read_next(c);
}

/*
 * srv_rpc.c - gRPC core glue: the server's life cycle, the
 * completion-queue threads, a call's life cycle, and the reply helpers.
 *
 * Each CQ thread owns one completion queue and keeps SRV_POSTED
 * grpc_server_request_call()s posted on it; every completion of a call
 * taken from it comes back to that thread (NOTES-grpc-core.md). A call
 * holds two references: one for its RECV_CLOSE_ON_SERVER batch, one for
 * its reply chain, which ends with the final status batch. The last unref
 * frees it.
 *
 * Shutdown order (srv_shutdown): health NOT_SERVING and no new posts; the
 * writer drains (in-hand appends answered, queued ones UNAVAILABLE);
 * grpc_server_shutdown_and_notify, and after the grace period
 * grpc_server_cancel_all_calls; once the notification arrives every call
 * is over, so the queues shut down, the threads are joined and the log is
 * closed.
 *
 * Every batch is started through start_batch() and every tag taken off a
 * queue is acquired (AN_TSAN_RELEASE / AN_TSAN_ACQUIRE, an_tsan.h), so
 * that ThreadSanitizer sees the hand-off of a call through gRPC's
 * completion queue, which it cannot see inside the uninstrumented libgrpc.
 */
#include "srv_int.h"

#include "an_absl.h"
#include "an_tsan.h"
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define SRV_POSTED 32

/* ---- statuses ---- */

grpc_status_code srv_status_of(int code)
{
    switch ((an_err)code) {
    case AN_OK:
        return GRPC_STATUS_OK;
#define SRV__STATUS(name, val, status, text) \
    case name:                               \
        return GRPC_STATUS_##status;
        AN_ERRNO_MAP(SRV__STATUS)
#undef SRV__STATUS
    }
    return GRPC_STATUS_INTERNAL;
}

/* ---- calls ---- */

static void call_free(struct srv_call *c)
{
    if (c->listed) {
        pthread_mutex_lock(&c->q->mu);
        if (c->open_prev) {
            c->open_prev->open_next = c->open_next;
        } else {
            c->q->open = c->open_next;
        }
        if (c->open_next) {
            c->open_next->open_prev = c->open_prev;
        }
        pthread_mutex_unlock(&c->q->mu);
    }
    srv_consume_free(c);
    if (c->call) {
        grpc_call_unref(c->call);
    }
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv) {
        grpc_byte_buffer_destroy(c->recv);
    }
    if (c->req) {
        protobuf_c_message_free_unpacked(c->req, NULL);
    }
    for (struct srv_out *o = c->as.out_head; o;) {
        struct srv_out *n = o->next;
        grpc_slice_unref(o->packed);
        free(o);
        o = n;
    }
    free(c->rs.stream);
    srv_sub_release(c);
    free(c->sub.stream);
    free(c->scan.after);
    if (c->bk.pending) {
        grpc_byte_buffer_destroy(c->bk.pending);
    }
    srv_auth_unref(c->auth);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void srv_call_ref(struct srv_call *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void srv_call_unref(struct srv_call *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        call_free(c);
    }
}

/* Starts a batch on c with tag t. The release for TSan (an_tsan.h) comes
 * after every read of c: once the batch is started, its completion may
 * free c on another thread. */
static grpc_call_error start_batch(struct srv_call *c, const grpc_op *ops, size_t n,
                                   struct srv_tag *t)
{
    grpc_call *call = c->call;
    AN_TSAN_RELEASE(t);
    return grpc_call_start_batch(call, ops, n, t, NULL);
}

static void post_request(struct srv_cq *q)
{
    struct srv *s = q->srv;
    if (atomic_load(&s->shutting_down)) {
        return;
    }
    struct srv_call *c = calloc(1, sizeof(*c));
    if (!c) {
        say_error("rpc", "msg=\"out of memory posting a call\"");
        return;
    }
    c->srv = s;
    c->q = q;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    pthread_mutex_init(&c->mu, NULL);
    c->t_new = (struct srv_tag){c, SRV_TAG_NEW};
    c->t_read = (struct srv_tag){c, SRV_TAG_READ};
    c->t_write = (struct srv_tag){c, SRV_TAG_WRITE};
    c->t_final = (struct srv_tag){c, SRV_TAG_FINAL};
    c->t_close = (struct srv_tag){c, SRV_TAG_CLOSE};
    AN_TSAN_RELEASE(&c->t_new);
    grpc_call_error e =
        grpc_server_request_call(s->server, &c->call, &c->details, &c->md, q->cq, q->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        say_error("rpc", "msg=\"grpc_server_request_call failed\" err=%d", (int)e);
        call_free(c);
    }
}

static enum srv_method method_of(grpc_slice m)
{
    static const struct {
        const char *path;
        enum srv_method m;
    } table[] = {
        {"/annals.v1.Commands/Append", SRV_M_APPEND},
        {"/annals.v1.Commands/AppendStream", SRV_M_APPEND_STREAM},
        {"/annals.v1.Commands/DeleteStream", SRV_M_DELETE_STREAM},
        {"/annals.v1.Queries/ReadStream", SRV_M_READ_STREAM},
        {"/annals.v1.Queries/ReadAll", SRV_M_READ_ALL},
        {"/annals.v1.Queries/GetStream", SRV_M_GET_STREAM},
        {"/annals.v1.Queries/Subscribe", SRV_M_SUBSCRIBE},
        {"/annals.v1.Queries/GetView", SRV_M_GET_VIEW},
        {"/annals.v1.Queries/ScanView", SRV_M_SCAN_VIEW},
        {"/annals.v1.Projections/Create", SRV_M_PROJ_CREATE},
        {"/annals.v1.Projections/List", SRV_M_PROJ_LIST},
        {"/annals.v1.Projections/Get", SRV_M_PROJ_GET},
        {"/annals.v1.Projections/Rebuild", SRV_M_PROJ_REBUILD},
        {"/annals.v1.Projections/Delete", SRV_M_PROJ_DELETE},
        {"/annals.v1.Admin/Backup", SRV_M_BACKUP},
        {"/annals.v1.Consumers/CreateGroup", SRV_M_GRP_CREATE},
        {"/annals.v1.Consumers/GetGroup", SRV_M_GRP_GET},
        {"/annals.v1.Consumers/ListGroups", SRV_M_GRP_LIST},
        {"/annals.v1.Consumers/DeleteGroup", SRV_M_GRP_DELETE},
        {"/annals.v1.Consumers/ReplayParked", SRV_M_GRP_REPLAY},
        {"/annals.v1.Consumers/Consume", SRV_M_CONSUME},
        {"/grpc.health.v1.Health/Check", SRV_M_HEALTH_CHECK},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (grpc_slice_str_cmp(m, table[i].path) == 0) {
            return table[i].m;
        }
    }
    return SRV_M_UNKNOWN;
}

static void on_new(struct srv_call *c, bool ok)
{
    post_request(c->q);
    if (!ok) {
        call_free(c); /* shutting down: no call was made */
        return;
    }
    atomic_store(&c->refs, 2); /* CLOSE batch + reply chain */
    c->method = method_of(c->details.method);
    c->started = gpr_now(GPR_CLOCK_MONOTONIC);
    c->deadline = gpr_convert_clock_type(c->details.deadline, GPR_CLOCK_MONOTONIC);

    grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (start_batch(c, &op, 1, &c->t_close) != GRPC_CALL_OK) {
        srv_call_unref(c);
    }
    srv_on_new(c);
}

static void dispatch(struct srv_tag *t, bool ok)
{
    struct srv_call *c = t->call;
    switch (t->kind) {
    case SRV_TAG_NEW:
        on_new(c, ok);
        break;
    case SRV_TAG_READ:
        srv_on_read(c, ok);
        break;
    case SRV_TAG_WRITE:
        srv_on_write(c, ok);
        break;
    case SRV_TAG_FINAL:
        srv_call_unref(c);
        break;
    case SRV_TAG_CLOSE:
        atomic_store(&c->closed, true);
        if (c->method == SRV_M_SUBSCRIBE) {
            srv_sub_on_close(c);
        } else if (c->method == SRV_M_GET_VIEW || c->method == SRV_M_SCAN_VIEW) {
            srv_view_on_close(c);
        }
        srv_call_unref(c);
        break;
    case SRV_TAG_SHUTDOWN:
        break;
    }
}

/*
 * A CQ thread. At the end, the queue must be shut down by its own thread:
 * completions of calls already over may still be queued, and handling one
 * may start a batch (a final status), which gRPC refuses with an abort on
 * a queue already shut down. So srv_shutdown only raises cqs_stop; each
 * thread sees it within CQ_STOP_POLL_MS, shuts its queue down, and drains
 * it with `closing` set, which makes every batch start a no-op.
 */
#define CQ_STOP_POLL_MS 100

static void *cq_main(void *arg)
{
    struct srv_cq *q = arg;
    char name[16];
    snprintf(name, sizeof(name), "an-cq%u", q->index);
    pthread_setname_np(pthread_self(), name);
    for (unsigned i = 0; i < SRV_POSTED; i++) {
        post_request(q);
    }
    for (;;) {
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(CQ_STOP_POLL_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(q->cq, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            AN_TSAN_ACQUIRE(ev.tag);
            dispatch(ev.tag, ev.success != 0);
        }
        if (!q->closing && atomic_load(&q->srv->cqs_stop)) {
            q->closing = true;
            grpc_completion_queue_shutdown(q->cq);
        }
    }
    return NULL;
}

void srv_call_list(struct srv_call *c)
{
    struct srv_cq *q = c->q;
    pthread_mutex_lock(&q->mu);
    c->open_prev = NULL;
    c->open_next = q->open;
    if (q->open) {
        q->open->open_prev = c;
    }
    q->open = c;
    c->listed = true;
    pthread_mutex_unlock(&q->mu);
}

/* ---- replies ---- */

grpc_byte_buffer *srv_pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

void srv_reply(struct srv_call *c, grpc_byte_buffer *bb, grpc_status_code status,
               const char *detail, const grpc_metadata *trailers, size_t n_trailers)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_slice det = grpc_slice_from_copied_string(detail ? detail : "");
    memset(ops, 0, sizeof(ops));
    if (!c->initial_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_sent = true;
    }
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    srv_metrics_call_done(c, status);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = status == GRPC_STATUS_OK ? NULL : &det;
    ops[n].data.send_status_from_server.trailing_metadata_count = n_trailers;
    ops[n++].data.send_status_from_server.trailing_metadata = (grpc_metadata *)trailers;
    grpc_call_error e = c->q->closing ? GRPC_CALL_ERROR : start_batch(c, ops, n, &c->t_final);
    grpc_slice_unref(det);
    if (bb) {
        grpc_byte_buffer_destroy(bb);
    }
    if (e != GRPC_CALL_OK) {
        if (!c->q->closing) {
            say_warn("rpc", "msg=\"final batch not started\" err=%d", (int)e);
        }
        srv_call_unref(c);
    }
}

void srv_reply_code(struct srv_call *c, int code, const char *detail)
{
    srv_reply(c, NULL, srv_status_of(code), detail && detail[0] ? detail : an_strerror(code),
              NULL, 0);
}

int srv_send(struct srv_call *c, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    size_t n = 0;
    char win[16];
    grpc_metadata md = {.value = grpc_empty_slice()};
    memset(ops, 0, sizeof(ops));
    if (!c->initial_sent) {
        if (c->method == SRV_M_APPEND_STREAM) {
            /* batched messages (commands.proto): the most appends one
             * AppendStreamRequest may carry */
            snprintf(win, sizeof(win), "%u", c->srv->cfg.stream_window);
            md.key = grpc_slice_from_static_string("annals-batch");
            md.value = grpc_slice_from_copied_string(win);
            ops[n].data.send_initial_metadata.count = 1;
            ops[n].data.send_initial_metadata.metadata = &md;
        }
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_sent = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
    grpc_call_error e = c->q->closing ? GRPC_CALL_ERROR : start_batch(c, ops, n, &c->t_write);
    grpc_slice_unref(md.value);
    grpc_byte_buffer_destroy(bb);
    return e == GRPC_CALL_OK ? 0 : -1;
}

int srv_recv(struct srv_call *c)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    if (c->recv) {
        grpc_byte_buffer_destroy(c->recv);
        c->recv = NULL;
    }
    op.data.recv_message.recv_message = &c->recv;
    if (c->q->closing) {
        return -1;
    }
    return start_batch(c, &op, 1, &c->t_read) == GRPC_CALL_OK ? 0 : -1;
}

/* ---- start and stop ---- */

/* Reads a whole (PEM) file into a NUL-terminated string; NULL on error
 * with detail naming the file and the flag. */
static char *read_pem(const char *path, const char *flag, char *detail)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    if (f) {
        buf = malloc(1 << 20);
        len = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
        fclose(f);
    }
    if (!buf || len == 0 || len >= (1 << 20) - 1) {
        snprintf(detail, LOG_DETAIL_MAX, "--%s %s: cannot read it (%s)", flag, path,
                 !f ? strerror(errno) : len ? "larger than 1 MiB" : "empty");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

bool srv_loopback(const char *listen)
{
    static const char *const names[] = {"127.", "localhost:", "[::1]:", "::1:"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strncmp(listen, names[i], strlen(names[i])) == 0) {
            return true;
        }
    }
    return false;
}

/* The server's credentials: TLS (and mTLS) from the flags, else plaintext,
 * which a non-loopback address gets only with --insecure. */
static int server_creds(const struct srv_cfg *cfg, grpc_server_credentials **out, char *detail)
{
    if (!cfg->tls_cert_file != !cfg->tls_key_file) {
        snprintf(detail, LOG_DETAIL_MAX, "--tls-cert and --tls-key go together");
        return AN_EINVAL;
    }
    if (!cfg->tls_cert_file) {
        if (cfg->tls_client_ca_file) {
            snprintf(detail, LOG_DETAIL_MAX, "--tls-client-ca needs --tls-cert and --tls-key");
            return AN_EINVAL;
        }
        if (!srv_loopback(cfg->listen) && !cfg->insecure) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "refusing to serve plaintext on %s, which is not a loopback address: give "
                     "--tls-cert and --tls-key, or --insecure to accept it",
                     cfg->listen);
            return AN_EINVAL;
        }
        *out = grpc_insecure_server_credentials_create();
        return 0;
    }
    char *cert = read_pem(cfg->tls_cert_file, "tls-cert", detail);
    char *key = cert ? read_pem(cfg->tls_key_file, "tls-key", detail) : NULL;
    char *ca = NULL;
    if (key && cfg->tls_client_ca_file) {
        ca = read_pem(cfg->tls_client_ca_file, "tls-client-ca", detail);
    }
    if (!cert || !key || (cfg->tls_client_ca_file && !ca)) {
        free(cert);
        free(key);
        return AN_EINVAL;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    *out = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    free(cert);
    free(key);
    free(ca);
    if (!*out) {
        snprintf(detail, LOG_DETAIL_MAX, "the TLS certificate or key was refused (--tls-cert %s, "
                 "--tls-key %s)", cfg->tls_cert_file, cfg->tls_key_file);
        return AN_EINVAL;
    }
    return 0;
}

int srv_reload_auth(srv *s)
{
    return srv_auth_reload(s);
}

static int parse_listen(const char *listen, char *detail)
{
    const char *colon = strrchr(listen ? listen : "", ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == listen || !colon[1] || *end || port < 0 || port > 65535) {
        snprintf(detail, LOG_DETAIL_MAX, "--listen '%s': want HOST:PORT, port 0..65535",
                 listen ? listen : "");
        return AN_EINVAL;
    }
    return 0;
}

/* --max-connections, kept below the descriptor limit: each connection is
 * a descriptor, and the log, the views, backups and gRPC's own wakeups
 * need some too (SRV_FD_RESERVE). */
#define SRV_FD_RESERVE 256

static int conns_start(struct srv *s, char *detail)
{
    struct rlimit nofile;
    size_t fds = 1024;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
        fds = (size_t)nofile.rlim_cur;
    } else if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        fds = 1u << 20;
    }
    size_t room = fds > 2 * SRV_FD_RESERVE ? fds - SRV_FD_RESERVE : fds / 2;
    size_t max = s->cfg.max_connections ? s->cfg.max_connections : 10000;
    if (max > room) {
        say_warn("conns",
                 "msg=\"--max-connections lowered to the descriptor limit\" asked=%zu "
                 "max_connections=%zu nofile=%zu reserved=%zu",
                 max, room, fds, fds - room);
        max = room;
    }
    s->cfg.max_connections = (unsigned)max;
    if (srv_conns_init(&s->conns, max, fds)) {
        snprintf(detail, LOG_DETAIL_MAX, "no memory for the connection table (%zu descriptors)",
                 fds);
        return AN_ENOMEM;
    }
    return 0;
}

int srv_start(const struct srv_cfg *cfg, srv **out, char *detail)
{
    struct srv *s = NULL;
    char logdir[4096];
    int rc = parse_listen(cfg->listen, detail);
    if (rc) {
        return rc;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        return AN_ENOMEM;
    }
    s->cfg = *cfg;
    if (!s->cfg.threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->cfg.threads = n > 0 ? (unsigned)n : 2;
    }
    if (!s->cfg.max_batch) {
        s->cfg.max_batch = 1024;
    }
    if (!s->cfg.stream_window) {
        s->cfg.stream_window = 256;
    }
    if (!s->cfg.max_subscriptions) {
        s->cfg.max_subscriptions = 10000;
    }
    if (!s->cfg.checkpoint_rate) {
        s->cfg.checkpoint_rate = 100;
    }
    if (!s->cfg.max_queue_bytes) {
        s->cfg.max_queue_bytes = 256u << 20;
    }
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->wcond, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcond, NULL);
    pthread_mutex_init(&s->smu, NULL);
    pthread_cond_init(&s->scond, NULL);
    pthread_mutex_init(&s->auth_mu, NULL);
    srv_metrics_init(&s->metrics);
    if ((rc = conns_start(s, detail))) {
        goto out_free;
    }
    if (cfg->auth_file && (rc = srv_auth_load(cfg->auth_file, &s->auth, detail))) {
        goto out_free;
    }

    snprintf(logdir, sizeof(logdir), "%s/log", cfg->data_dir);
    struct log_cfg lc = {
        .dir = logdir,
        .max_size_bytes = cfg->max_size_bytes,
        .max_event_bytes = cfg->max_event_bytes,
        .max_request_bytes = cfg->max_request_bytes,
    };
    if ((rc = log_open(&lc, &s->log, detail))) {
        goto out_free;
    }

    an_absl_no_deadlock_detection();
    grpc_init();
    uint32_t max_req = cfg->max_request_bytes ? cfg->max_request_bytes : LOG_REQUEST_MAX_DEFAULT;
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)(max_req + (64u << 10))},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
         .value.integer = (int)(cfg->max_streams_per_conn ? cfg->max_streams_per_conn : 10000)},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_CONNECTION_IDLE_MS,
         .value.integer = cfg->idle_timeout_s ? (int)cfg->idle_timeout_s * 1000 : INT_MAX},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_KEEPALIVE_TIME_MS,
         .value.integer = (int)(cfg->keepalive_s ? cfg->keepalive_s : 60) * 1000},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 20000},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
         .value.integer = (int)(cfg->handshake_timeout_s ? cfg->handshake_timeout_s : 10) * 1000},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_METADATA_SIZE,
         .value.integer = (int)(cfg->max_metadata_bytes ? cfg->max_metadata_bytes : 16384)},
        srv_conns_arg(&s->conns),
    };
    grpc_channel_args ca = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
    s->server = grpc_server_create(&ca, NULL);
    s->shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
    s->n_cqs = s->cfg.threads;
    s->cqs = calloc(s->n_cqs, sizeof(*s->cqs));
    if (!s->cqs) {
        rc = AN_ENOMEM;
        goto out_grpc;
    }
    for (unsigned i = 0; i < s->n_cqs; i++) {
        s->cqs[i] = (struct srv_cq){.srv = s, .index = i};
        pthread_mutex_init(&s->cqs[i].mu, NULL);
        s->cqs[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(s->server, s->cqs[i].cq, NULL);
        if ((rc = log_reader_open(s->log, &s->cqs[i].rd))) {
            snprintf(detail, LOG_DETAIL_MAX, "no log reader for thread %u", i);
            goto out_grpc;
        }
    }
    /* Everything that can fail starts before the listener is added: gRPC
     * refuses to destroy a server with listeners that never shut down. */
    grpc_server_credentials *creds = NULL;
    if ((rc = server_creds(&s->cfg, &creds, detail))) {
        goto out_grpc;
    }
    if ((rc = srv_proj_start(s, detail)) || (rc = srv_group_start(s, detail)) ||
        (rc = srv_http_start(s, detail))) {
        grpc_server_credentials_release(creds);
        goto out_grpc;
    }
    if ((rc = srv_sub_start(s))) {
        grpc_server_credentials_release(creds);
        snprintf(detail, LOG_DETAIL_MAX, "cannot start the fan-out thread");
        goto out_grpc;
    }
    if ((rc = srv_writer_start(s))) {
        grpc_server_credentials_release(creds);
        snprintf(detail, LOG_DETAIL_MAX, "cannot start the writer thread");
        srv_sub_stop(s);
        goto out_grpc;
    }
    s->port = grpc_server_add_http2_port(s->server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        snprintf(detail, LOG_DETAIL_MAX, "cannot listen on %s (address in use or invalid)",
                 cfg->listen);
        srv_writer_stop(s);
        srv_sub_stop(s);
        rc = AN_EINVAL;
        goto out_grpc;
    }
    grpc_server_start(s->server);
    s->started_at = gpr_now(GPR_CLOCK_MONOTONIC);
    for (unsigned i = 0; i < s->n_cqs; i++) {
        pthread_create(&s->cqs[i].thread, NULL, cq_main, &s->cqs[i]);
    }
    *out = s;
    return 0;

out_grpc:
    for (unsigned i = 0; s->cqs && i < s->n_cqs; i++) {
        log_reader_close(s->cqs[i].rd);
    }
    /* the server was never started: destroying it releases the queues */
    grpc_server_destroy(s->server);
    for (unsigned i = 0; s->cqs && i < s->n_cqs; i++) {
        if (s->cqs[i].cq) {
            grpc_completion_queue_shutdown(s->cqs[i].cq);
            grpc_completion_queue_destroy(s->cqs[i].cq);
        }
    }
    grpc_completion_queue_shutdown(s->shutdown_cq);
    grpc_completion_queue_destroy(s->shutdown_cq);
    free(s->cqs);
    srv_http_stop(s);
    srv_http_free(s);
    srv_sub_free(s);
    srv_proj_stop(s);
    srv_proj_free(s);
    srv_group_stop(s);
    srv_group_free(s);
    log_close(s->log);
out_free:
    srv_conns_free(&s->conns);
    srv_auth_unref(s->auth);
    pthread_mutex_destroy(&s->auth_mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->wcond);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcond);
    pthread_mutex_destroy(&s->smu);
    pthread_cond_destroy(&s->scond);
    free(s);
    return rc;
}

const struct srv_cfg *srv_config(const srv *s)
{
    return &s->cfg;
}

int srv_port(const srv *s)
{
    return s->port;
}

void srv_shutdown(srv *s, int grace_ms)
{
    struct srv_tag tag = {NULL, SRV_TAG_SHUTDOWN};
    atomic_store(&s->shutting_down, true);
    say_info("server", "msg=\"shutting down\" grace_ms=%d", grace_ms);
    srv_http_stop(s);
    srv_writer_stop(s);
    srv_sub_stop(s);
    srv_proj_stop(s);
    srv_group_stop(s);
    srv_end_streams(s);
    grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &tag);
    grpc_event ev = grpc_completion_queue_pluck(
        s->shutdown_cq, &tag,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(grace_ms, GPR_TIMESPAN)),
        NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        say_info("server", "msg=\"cancelling the calls still open\"");
        grpc_server_cancel_all_calls(s->server);
        grpc_completion_queue_pluck(s->shutdown_cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
    }
    atomic_store(&s->cqs_stop, true);
    for (unsigned i = 0; i < s->n_cqs; i++) {
        pthread_join(s->cqs[i].thread, NULL);
    }
}

void srv_free(srv *s)
{
    if (!s) {
        return;
    }
    grpc_server_destroy(s->server);
    for (unsigned i = 0; i < s->n_cqs; i++) {
        grpc_completion_queue_destroy(s->cqs[i].cq);
        log_reader_close(s->cqs[i].rd);
        pthread_mutex_destroy(&s->cqs[i].mu);
    }
    grpc_completion_queue_shutdown(s->shutdown_cq);
    grpc_completion_queue_destroy(s->shutdown_cq);
    free(s->cqs);
    srv_sub_free(s);
    srv_proj_free(s);
    srv_group_free(s);
    srv_http_free(s);
    srv_conns_free(&s->conns);
    log_close(s->log);
    srv_auth_unref(s->auth);
    pthread_mutex_destroy(&s->auth_mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->wcond);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcond);
    pthread_mutex_destroy(&s->smu);
    pthread_cond_destroy(&s->scond);
    free(s);
    grpc_shutdown();
}

void srv_log_stats(srv *s)
{
    /* main thread only: the previous sample */
    static unsigned long long last_appends;
    static unsigned long long last_events;
    static unsigned long long last_commits;
    static unsigned long long last_batched;
    static gpr_timespec last_at;
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    unsigned long long a = atomic_load(&s->st_appends);
    unsigned long long e = atomic_load(&s->st_events);
    unsigned long long c = atomic_load(&s->st_commits);
    unsigned long long b = atomic_load(&s->st_batched);
    struct log_stats st;
    if (log_stats(s->log, &st)) {
        return;
    }
    if (!last_at.tv_sec) {
        last_at = s->started_at;
    }
    double secs = gpr_timespec_to_micros(gpr_time_sub(now, last_at)) / 1e6;
    if (secs <= 0) {
        secs = 1;
    }
    double batch = c > last_commits ? (double)(b - last_batched) / (double)(c - last_commits) : 0;
    pthread_mutex_lock(&s->rate_mu);
    s->rate[s->rate_i] = (struct srv_rate){
        .at_s = (double)gpr_timespec_to_micros(gpr_time_sub(now, s->started_at)) / 1e6,
        .events_per_s = (double)(e - last_events) / secs,
    };
    s->rate_i = (s->rate_i + 1) % SRV_RATE_POINTS;
    s->rate_n += s->rate_n < SRV_RATE_POINTS;
    pthread_mutex_unlock(&s->rate_mu);
    say_info("stats",
             "appends_per_s=%.0f events_per_s=%.0f commits_per_s=%.0f mean_batch=%.1f "
             "head=%llu readers=%u subscriptions=%u used_bytes=%llu map_bytes=%llu",
             (double)(a - last_appends) / secs, (double)(e - last_events) / secs,
             (double)(c - last_commits) / secs, batch, (unsigned long long)st.head, st.readers,
             srv_sub_active(s),
             (unsigned long long)st.used_bytes, (unsigned long long)st.map_bytes);
    last_appends = a;
    last_events = e;
    last_commits = c;
    last_batched = b;
    last_at = now;
}

void srv_log_totals(srv *s)
{
    unsigned long long a = atomic_load(&s->st_appends);
    unsigned long long c = atomic_load(&s->st_commits);
    say_info("stats", "msg=\"totals\" appends=%llu events=%llu commits=%llu mean_batch=%.2f",
             a, (unsigned long long)atomic_load(&s->st_events), c,
             c ? (double)atomic_load(&s->st_batched) / (double)c : 0.0);
}

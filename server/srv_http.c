/*
 * srv_http.c - annalsd --http HOST:PORT: Prometheus metrics, the admin page
 * and the JSON it reads, on libmicrohttpd (one internal polling thread).
 *
 *   GET /metrics          Prometheus text exposition (version 0.0.4)
 *   GET /                 the admin page (server/admin.html, embedded)
 *   GET /api/summary      health, head, counters, sizes, write rate history
 *   GET /api/streams?prefix=P&after=NAME&limit=N   streams by prefix, paged
 *   GET /api/projections  every projection's status
 *   GET /api/groups       consumer groups: progress, lag, in flight, parked
 *
 * Plaintext, and like gRPC only on a loopback address unless --insecure.
 * With --auth on, every request needs an admin principal's bearer token
 * (`Authorization: Bearer T`): 401 without a known token, 403 without
 * admin. Nothing here writes; every read takes its own short snapshot.
 *
 * srv_http_handle answers a request from its method, path, Authorization
 * header and query arguments, with no connection (tests/fuzz/
 * fuzz_http_request.c drives it); the MHD callback only looks those up
 * and queues the answer.
 */
#include "srv_int.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

extern const unsigned char srv_admin_html[];
extern const size_t srv_admin_html_len;

/* ---- a growing text buffer ---- */

struct buf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
};

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bprintf(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = b->oom ? 0 : vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (b->oom || n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap - b->len <= (size_t)n) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* ---- /metrics ---- */

static void hist_write(struct buf *b, const char *name, const char *labels,
                       const struct srv_hist *h)
{
    unsigned long long cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (unsigned i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < h->n) {
            bprintf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i], cum);
        } else {
            bprintf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, cum);
        }
    }
    double sum = (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / h->sum_scale;
    bprintf(b, "%s_sum%s%s%s %.9g\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
            sum);
    bprintf(b, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels,
            labels[0] ? "}" : "", (unsigned long long)atomic_load(&h->count));
}

static const char *state_name(int state)
{
    switch (state) {
    case ANNALS__V1__PROJECTION_STATE__RUNNING:
        return "RUNNING";
    case ANNALS__V1__PROJECTION_STATE__REBUILDING:
        return "REBUILDING";
    case ANNALS__V1__PROJECTION_STATE__FAULTED:
        return "FAULTED";
    case ANNALS__V1__PROJECTION_STATE__PAUSED:
        return "PAUSED";
    default:
        return "UNSPECIFIED";
    }
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case ANNALS__V1__PROJECTION_KIND__STREAM_STATE:
        return "STREAM_STATE";
    case ANNALS__V1__PROJECTION_KIND__COUNT:
        return "COUNT";
    case ANNALS__V1__PROJECTION_KIND__INDEX:
        return "INDEX";
    case ANNALS__V1__PROJECTION_KIND__STREAMS:
        return "STREAMS";
    default:
        return "UNSPECIFIED";
    }
}

/* Consumer groups: one series per group and figure of /api/groups. */
static void groups_write(struct srv *s, struct buf *b)
{
    static const struct {
        const char *key;
        const char *name;
        const char *type;
        const char *help;
    } figs[] = {
        {"checkpoint", "annals_group_checkpoint_position", "gauge",
         "Every selected event up to here is acked or parked."},
        {"lag", "annals_group_lag_events", "gauge", "Head minus checkpoint."},
        {"consumers", "annals_group_consumers", "gauge", "Consumers connected."},
        {"in_flight", "annals_group_in_flight", "gauge", "Handed out, not yet settled."},
        {"delivered", "annals_group_delivered_total", "counter", "Hand-outs."},
        {"acked", "annals_group_acked_total", "counter", "Acks."},
        {"redelivered", "annals_group_redelivered_total", "counter", "Hand-outs after the first."},
        {"parked", "annals_group_parked", "gauge", "Events in the group's $parked stream."},
    };
    if (!s->groups) {
        return;
    }
    json_t *j = srv_group_json(s);
    json_t *arr = json_object_get(j, "groups");
    for (size_t f = 0; f < sizeof(figs) / sizeof(figs[0]) && json_array_size(arr); f++) {
        bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", figs[f].name, figs[f].help, figs[f].name,
                figs[f].type);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *g = json_array_get(arr, i);
            bprintf(b, "%s{group=\"%s\"} %lld\n", figs[f].name,
                    json_string_value(json_object_get(g, "name")),
                    (long long)json_integer_value(json_object_get(g, figs[f].key)));
        }
    }
    json_decref(j);
}

static void metrics_write(struct srv *s, struct buf *b)
{
    struct srv_metrics *m = &s->metrics;
    struct log_stats st = {0};
    log_stats(s->log, &st);
    double up = (double)gpr_timespec_to_micros(
                    gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), s->started_at)) / 1e6;

    bprintf(b, "# HELP annals_build_info The running annalsd.\n# TYPE annals_build_info gauge\n"
               "annals_build_info{version=\"%s\"} 1\n", SRV_VERSION);
    bprintf(b, "# HELP annals_uptime_seconds Seconds since annalsd started.\n"
               "# TYPE annals_uptime_seconds gauge\nannals_uptime_seconds %.3f\n", up);
    bprintf(b, "# HELP annals_appends_total Append requests the writer processed (any outcome).\n"
               "# TYPE annals_appends_total counter\nannals_appends_total %llu\n",
            (unsigned long long)atomic_load(&s->st_appends));
    bprintf(b, "# HELP annals_events_total Events committed.\n"
               "# TYPE annals_events_total counter\nannals_events_total %llu\n",
            (unsigned long long)atomic_load(&s->st_events));
    bprintf(b, "# HELP annals_commits_total Group commits of the log.\n"
               "# TYPE annals_commits_total counter\nannals_commits_total %llu\n",
            (unsigned long long)atomic_load(&s->st_commits));
    bprintf(b, "# HELP annals_syncs_total fdatasyncs of the log file.\n"
               "# TYPE annals_syncs_total counter\nannals_syncs_total %llu\n",
            (unsigned long long)atomic_load(&m->syncs));
    bprintf(b, "# HELP annals_append_stream_messages_total AppendStream messages received "
               "(in) and sent (out).\n"
               "# TYPE annals_append_stream_messages_total counter\n"
               "annals_append_stream_messages_total{dir=\"in\"} %llu\n"
               "annals_append_stream_messages_total{dir=\"out\"} %llu\n",
            (unsigned long long)atomic_load(&m->astream_msgs_in),
            (unsigned long long)atomic_load(&m->astream_msgs_out));
    bprintf(b, "# HELP annals_append_stream_items_total Appends those messages carried (in) "
               "and results (out); above the messages when they were batched.\n"
               "# TYPE annals_append_stream_items_total counter\n"
               "annals_append_stream_items_total{dir=\"in\"} %llu\n"
               "annals_append_stream_items_total{dir=\"out\"} %llu\n",
            (unsigned long long)atomic_load(&m->astream_appends_in),
            (unsigned long long)atomic_load(&m->astream_results_out));
    bprintf(b, "# HELP annals_commit_seconds Time of one group commit, its sync included.\n"
               "# TYPE annals_commit_seconds histogram\n");
    hist_write(b, "annals_commit_seconds", "", &m->commit_seconds);
    bprintf(b, "# HELP annals_commit_batch_size Requests per group commit.\n"
               "# TYPE annals_commit_batch_size histogram\n");
    hist_write(b, "annals_commit_batch_size", "", &m->batch_size);
    bprintf(b, "# HELP annals_log_head_position Last durable global position.\n"
               "# TYPE annals_log_head_position gauge\nannals_log_head_position %llu\n",
            (unsigned long long)st.head);
    bprintf(b, "# HELP annals_log_streams Streams in the log.\n"
               "# TYPE annals_log_streams gauge\nannals_log_streams %llu\n",
            (unsigned long long)st.streams);
    bprintf(b, "# HELP annals_log_used_bytes The log file's high-water mark.\n"
               "# TYPE annals_log_used_bytes gauge\nannals_log_used_bytes %llu\n",
            (unsigned long long)st.used_bytes);
    bprintf(b, "# HELP annals_log_live_bytes Pages the log's trees hold now.\n"
               "# TYPE annals_log_live_bytes gauge\nannals_log_live_bytes %llu\n",
            (unsigned long long)st.live_bytes);
    bprintf(b, "# HELP annals_log_map_bytes The log's current map size.\n"
               "# TYPE annals_log_map_bytes gauge\nannals_log_map_bytes %llu\n",
            (unsigned long long)st.map_bytes);
    bprintf(b, "# HELP annals_log_max_bytes The cap on the log's size (0: none).\n"
               "# TYPE annals_log_max_bytes gauge\nannals_log_max_bytes %llu\n",
            (unsigned long long)st.max_size_bytes);
    bprintf(b, "# HELP annals_log_readers Read transaction slots in use.\n"
               "# TYPE annals_log_readers gauge\nannals_log_readers %u\n", st.readers);
    bprintf(b, "# HELP annals_connections_open Client connections open.\n"
               "# TYPE annals_connections_open gauge\nannals_connections_open %zu\n",
            srv_conns_open(&s->conns));
    bprintf(b, "# HELP annals_connections_max The connection limit (--max-connections).\n"
               "# TYPE annals_connections_max gauge\nannals_connections_max %zu\n",
            s->conns.max);
    bprintf(b, "# HELP annals_connections_refused_total Connections closed on arrival: the "
               "limit was reached.\n"
               "# TYPE annals_connections_refused_total counter\n"
               "annals_connections_refused_total %llu\n",
            (unsigned long long)atomic_load(&s->conns.refused_total));
    bprintf(b, "# HELP annals_subscriptions_active Subscribe calls open.\n"
               "# TYPE annals_subscriptions_active gauge\nannals_subscriptions_active %u\n",
            srv_sub_active(s));
    bprintf(b, "# HELP annals_subscriptions_catching_up Subscriptions far behind the head, "
               "waiting for the catch-up thread.\n"
               "# TYPE annals_subscriptions_catching_up gauge\n"
               "annals_subscriptions_catching_up %zu\n",
            srv_sub_catching_up(s));

    bprintf(b, "# HELP annals_grpc_calls_total Finished gRPC calls by method and status.\n"
               "# TYPE annals_grpc_calls_total counter\n");
    for (unsigned i = 0; i < SRV_M_COUNT; i++) {
        for (unsigned k = 0; k < SRV_STATUS_COUNT; k++) {
            unsigned long long n = atomic_load_explicit(&m->calls[i][k], memory_order_relaxed);
            if (n) {
                bprintf(b, "annals_grpc_calls_total{method=\"%s\",code=\"%s\"} %llu\n",
                        srv_method_name((enum srv_method)i), srv_status_name(k), n);
            }
        }
    }
    bprintf(b, "# HELP annals_grpc_call_seconds Duration of finished gRPC calls.\n"
               "# TYPE annals_grpc_call_seconds histogram\n");
    for (unsigned i = 0; i < SRV_M_COUNT; i++) {
        if (!atomic_load(&m->call_seconds[i].count)) {
            continue;
        }
        char labels[96];
        snprintf(labels, sizeof(labels), "method=\"%s\"", srv_method_name((enum srv_method)i));
        hist_write(b, "annals_grpc_call_seconds", labels, &m->call_seconds[i]);
    }

    Annals__V1__ListProjectionsResponse *pl = NULL;
    if (s->proj && proj_list(s->proj, &pl) == 0) {
        bprintf(b, "# HELP annals_projection_checkpoint_position Last position applied.\n"
                   "# TYPE annals_projection_checkpoint_position gauge\n");
        for (size_t i = 0; i < pl->n_projections; i++) {
            const Annals__V1__ProjectionStatus *p = pl->projections[i];
            bprintf(b, "annals_projection_checkpoint_position{projection=\"%s\"} %llu\n",
                    p->definition->name, (unsigned long long)p->checkpoint);
        }
        bprintf(b, "# HELP annals_projection_lag_events Head minus checkpoint.\n"
                   "# TYPE annals_projection_lag_events gauge\n");
        for (size_t i = 0; i < pl->n_projections; i++) {
            const Annals__V1__ProjectionStatus *p = pl->projections[i];
            bprintf(b, "annals_projection_lag_events{projection=\"%s\"} %llu\n",
                    p->definition->name,
                    (unsigned long long)(p->head > p->checkpoint ? p->head - p->checkpoint : 0));
        }
        bprintf(b, "# HELP annals_projection_events_applied_total Events applied to the view.\n"
                   "# TYPE annals_projection_events_applied_total counter\n");
        for (size_t i = 0; i < pl->n_projections; i++) {
            const Annals__V1__ProjectionStatus *p = pl->projections[i];
            bprintf(b, "annals_projection_events_applied_total{projection=\"%s\"} %llu\n",
                    p->definition->name, (unsigned long long)p->events_applied);
        }
        bprintf(b, "# HELP annals_projection_state 1 for the projection's state.\n"
                   "# TYPE annals_projection_state gauge\n");
        for (size_t i = 0; i < pl->n_projections; i++) {
            const Annals__V1__ProjectionStatus *p = pl->projections[i];
            bprintf(b, "annals_projection_state{projection=\"%s\",state=\"%s\"} 1\n",
                    p->definition->name, state_name(p->state));
        }
        proj_list_free(pl);
    }
    groups_write(s, b);
}

/* ---- /api ---- */

static json_t *summary(struct srv *s)
{
    struct log_stats st = {0};
    log_stats(s->log, &st);
    double up = (double)gpr_timespec_to_micros(
                    gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), s->started_at)) / 1e6;
    json_t *rate = json_array();
    pthread_mutex_lock(&s->rate_mu);
    for (unsigned i = 0; i < s->rate_n; i++) {
        const struct srv_rate *r = &s->rate[(s->rate_i + SRV_RATE_POINTS - s->rate_n + i) %
                                            SRV_RATE_POINTS];
        json_array_append_new(rate, json_pack("{s:f,s:f}", "uptime_s", r->at_s, "events_per_s",
                                              r->events_per_s));
    }
    pthread_mutex_unlock(&s->rate_mu);
    return json_pack("{s:s,s:s,s:f,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:I,s:o}", "version",
                     SRV_VERSION, "health",
                     atomic_load(&s->shutting_down) ? "NOT_SERVING" : "SERVING", "uptime_s", up,
                     "head", (json_int_t)st.head, "streams", (json_int_t)st.streams,
                     "appends_total", (json_int_t)atomic_load(&s->st_appends), "events_total",
                     (json_int_t)atomic_load(&s->st_events), "commits_total",
                     (json_int_t)atomic_load(&s->st_commits), "subscriptions",
                     (int)srv_sub_active(s), "used_bytes", (json_int_t)st.used_bytes,
                     "map_bytes", (json_int_t)st.map_bytes, "max_bytes",
                     (json_int_t)st.max_size_bytes, "rate", rate);
}

static bool add_stream(void *arg, const char *name, size_t len, const struct log_stream_info *i)
{
    json_t *arr = arg;
    json_array_append_new(
        arr, json_pack("{s:s%,s:I,s:I,s:I,s:I,s:b,s:b}", "name", name, len, "last_version",
                       (json_int_t)i->last_version, "event_count", (json_int_t)i->event_count,
                       "last_position", (json_int_t)i->last_position, "updated_unix_nanos",
                       (json_int_t)i->updated_ns, "deleted", i->deleted, "tombstoned",
                       i->tombstoned));
    return true;
}

/* A limit of /api/streams: 1..4 decimal digits, 1..1000 (absent: 100). */
static bool limit_parse(const char *lim, unsigned *out)
{
    if (!lim) {
        *out = 100;
        return true;
    }
    unsigned v = 0;
    size_t i = 0;
    for (; i < 4 && lim[i] >= '0' && lim[i] <= '9'; i++) {
        v = v * 10 + (unsigned)(lim[i] - '0');
    }
    if (i == 0 || lim[i] || v < 1 || v > 1000) {
        return false;
    }
    *out = v;
    return true;
}

static json_t *streams(struct srv *s, const struct srv_http_req *q, unsigned *status)
{
    unsigned limit;
    if (!limit_parse(q->limit, &limit)) {
        *status = MHD_HTTP_BAD_REQUEST;
        return json_pack("{s:s}", "error", "limit: want 1..1000");
    }
    const char *prefix = q->prefix;
    const char *after = q->after;
    json_t *arr = json_array();
    bool more = false;
    pthread_mutex_lock(&s->http_mu);
    int rc = log_reader_begin(s->http_rd);
    if (!rc) {
        rc = log_list_streams(s->http_rd, prefix, after, limit, add_stream, arr, &more);
        log_reader_end(s->http_rd);
    }
    pthread_mutex_unlock(&s->http_mu);
    if (rc) {
        json_decref(arr);
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return json_pack("{s:s}", "error", an_strerror(rc));
    }
    size_t n = json_array_size(arr);
    json_t *last = n ? json_object_get(json_array_get(arr, n - 1), "name") : NULL;
    return json_pack("{s:o,s:b,s:O?}", "streams", arr, "more", more, "next_after",
                     more ? last : NULL);
}

static json_t *projections(struct srv *s)
{
    json_t *arr = json_array();
    Annals__V1__ListProjectionsResponse *pl = NULL;
    if (s->proj && proj_list(s->proj, &pl) == 0) {
        for (size_t i = 0; i < pl->n_projections; i++) {
            const Annals__V1__ProjectionStatus *p = pl->projections[i];
            json_array_append_new(
                arr, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:s}", "name",
                               p->definition->name, "kind", kind_name(p->definition->kind),
                               "state", state_name(p->state), "checkpoint",
                               (json_int_t)p->checkpoint, "head", (json_int_t)p->head, "lag",
                               (json_int_t)(p->head > p->checkpoint ? p->head - p->checkpoint
                                                                    : 0),
                               "events_applied", (json_int_t)p->events_applied,
                               "rebuild_checkpoint", (json_int_t)p->rebuild_checkpoint, "error",
                               p->error ? p->error : ""));
        }
        proj_list_free(pl);
    }
    return json_pack("{s:o}", "projections", arr);
}

/* ---- requests ---- */

static void answer(struct srv_http_resp *out, unsigned status, const char *type, char *body,
                   size_t len, bool owned)
{
    *out = (struct srv_http_resp){.status = status, .type = type, .body = body, .len = len,
                                  .owned = owned};
}

static void answer_static(struct srv_http_resp *out, unsigned status, const char *text)
{
    answer(out, status, "text/plain", (char *)text, strlen(text), false);
}

static void answer_json(struct srv_http_resp *out, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        answer_static(out, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return;
    }
    answer(out, status, "application/json", text, strlen(text), true);
}

void srv_http_handle(struct srv *s, const struct srv_http_req *q, struct srv_http_resp *out)
{
    const char *url = q->url;
    if (strcmp(q->method, "GET") != 0 && strcmp(q->method, "HEAD") != 0) {
        answer_static(out, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET is served here\n");
        return;
    }
    char detail[LOG_DETAIL_MAX] = "";
    int arc = srv_auth_http(s, q->authorization, url, detail);
    if (arc) {
        struct buf b = {0};
        bprintf(&b, "%s\n", detail);
        if (b.oom) {
            free(b.p);
            answer_static(out, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
            return;
        }
        answer(out, arc == AN_EAUTH ? MHD_HTTP_UNAUTHORIZED : MHD_HTTP_FORBIDDEN, "text/plain",
               b.p, b.len, true);
        return;
    }
    if (strcmp(url, "/metrics") == 0) {
        struct buf b = {0};
        metrics_write(s, &b);
        if (b.oom) {
            free(b.p);
            answer_static(out, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
            return;
        }
        answer(out, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len, true);
    } else if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
        answer(out, MHD_HTTP_OK, "text/html; charset=utf-8", (char *)srv_admin_html,
               srv_admin_html_len, false);
    } else if (strcmp(url, "/api/summary") == 0) {
        answer_json(out, MHD_HTTP_OK, summary(s));
    } else if (strcmp(url, "/api/streams") == 0) {
        unsigned status = MHD_HTTP_OK;
        json_t *j = streams(s, q, &status);
        answer_json(out, status, j);
    } else if (strcmp(url, "/api/projections") == 0) {
        answer_json(out, MHD_HTTP_OK, projections(s));
    } else if (strcmp(url, "/api/groups") == 0) {
        answer_json(out, MHD_HTTP_OK, srv_group_json(s));
    } else {
        answer_static(out, MHD_HTTP_NOT_FOUND, "not found\n");
    }
}

/* The MHD callback: srv_http_handle over the connection's values. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **state)
{
    struct srv *s = cls;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)state;
    struct srv_http_req q = {
        .method = method,
        .url = url,
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
        .prefix = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "prefix"),
        .after = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "after"),
        .limit = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit"),
    };
    struct srv_http_resp a;
    srv_http_handle(s, &q, &a);
    struct MHD_Response *r = MHD_create_response_from_buffer(
        a.len, a.body, a.owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (a.owned) {
            free(a.body);
        }
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", a.type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, a.status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- start and stop ---- */

int srv_http_start(struct srv *s, char *detail)
{
    const char *listen = s->cfg.http_listen;
    pthread_mutex_init(&s->http_mu, NULL);
    pthread_mutex_init(&s->rate_mu, NULL);
    if (!listen) {
        return 0;
    }
    const char *colon = strrchr(listen, ':');
    char host[256];
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host)) {
        snprintf(detail, LOG_DETAIL_MAX, "--http '%s': want HOST:PORT", listen);
        return AN_EINVAL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    if (!srv_loopback(listen) && !s->cfg.insecure) {
        snprintf(detail, LOG_DETAIL_MAX,
                 "refusing to serve --http on %s, which is not a loopback address, without "
                 "--insecure", listen);
        return AN_EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    const char *h = host;
    char h6[256];
    if (host[0] == '[') { /* [::1] */
        snprintf(h6, sizeof(h6), "%.*s", (int)strlen(host) - 2, host + 1);
        h = h6;
    }
    if (getaddrinfo(h, colon + 1, &hints, &ai) != 0 || !ai) {
        snprintf(detail, LOG_DETAIL_MAX, "--http '%s': cannot resolve the address", listen);
        return AN_EINVAL;
    }
    int rc = log_reader_open(s->log, &s->http_rd);
    if (rc) {
        freeaddrinfo(ai);
        snprintf(detail, LOG_DETAIL_MAX, "no log reader for the HTTP thread");
        return rc;
    }
    /* not select(): past 1 024 descriptors (a server holding many gRPC
     * connections) it cannot watch the HTTP connection, which MHD then drops */
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    s->http = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                               ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, 64u,
                               MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->http) {
        log_reader_close(s->http_rd);
        s->http_rd = NULL;
        snprintf(detail, LOG_DETAIL_MAX, "--http %s: cannot listen (address in use or invalid)",
                 listen);
        return AN_EINVAL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->http, MHD_DAEMON_INFO_BIND_PORT);
    s->http_port = info ? info->port : 0;
    return 0;
}

void srv_http_stop(struct srv *s)
{
    if (s->http) {
        MHD_stop_daemon(s->http);
        s->http = NULL;
    }
    log_reader_close(s->http_rd);
    s->http_rd = NULL;
}

void srv_http_free(struct srv *s)
{
    pthread_mutex_destroy(&s->http_mu);
    pthread_mutex_destroy(&s->rate_mu);
}

int srv_http_port(const srv *s)
{
    return s->http_port;
}

/*
 * drv_annals.c - the Annals driver: libannals against the annalsd that
 * compare.c started. Unary Append with EXPECT_VERSION (or NO_STREAM),
 * AppendStream for the pipelined workload, ReadAll for the read,
 * Health/Check for gRPC's floor.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annals.h"
#include "cmp.h"

bool cmp_annals_shared;
const char *cmp_annals_addr;

static an_client *shared;       /* cmp_annals_shared: every client's */
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t fill_first;     /* the global position of the first filled event */

static an_client *connect_one(void)
{
    struct an_client_opts o = {.timeout_ms = 30000};
    an_client *c;
    int rc = an_connect(cmp_annals_addr, &o, &c);
    if (rc) {
        cmp_die("annals connect", an_strerror(rc));
    }
    return c;
}

static void a_setup(const char *addr)
{
    cmp_annals_addr = addr;
}

static void *a_open(void)
{
    if (!cmp_annals_shared) {
        return connect_one();
    }
    pthread_mutex_lock(&shared_mu);
    if (!shared) {
        shared = connect_one();
    }
    pthread_mutex_unlock(&shared_mu);
    return shared;
}

static void a_close(void *c)
{
    if (c != shared) {
        an_close(c);
    }
}

static int a_append(void *c, const char *stream, int64_t expect, int64_t *next)
{
    struct an_event e = {.type = CMP_TYPE, .data = cmp_payload, .data_len = CMP_PAYLOAD,
                         .content_type = "application/json"};
    struct an_stream_append sa = {
        .stream = stream,
        .expect = expect < 0 ? AN_EXPECT_NO_STREAM : AN_EXPECT_VERSION,
        .expected_version = expect < 0 ? 0 : (uint64_t)expect,
        .events = &e,
        .n_events = 1,
    };
    struct an_error err;
    int rc = an_append(c, &sa, 1, NULL, &err);
    if (rc == AN_ECONFLICT) {
        return CMP_CONFLICT;
    }
    if (rc) {
        cmp_die("annals append", err.detail);
    }
    *next = expect + 1;
    return CMP_OK;
}

static void a_ping(void *c)
{
    bool serving = false;
    struct an_error err;
    if (an_health(c, &serving, &err) || !serving) {
        cmp_die("annals health", serving ? err.detail : "not serving");
    }
}

static void a_current(void *c, const char *stream, int64_t *token)
{
    struct an_stream_info info;
    struct an_error err;
    int rc = an_get_stream(c, stream, NULL, &info, &err);
    if (rc == AN_ENOTFOUND) {
        *token = -1;
        return;
    }
    if (rc) {
        cmp_die("annals get stream", err.detail);
    }
    *token = (int64_t)info.last_version;
}

/* ---- AppendStream ---- */

struct pipe {
    pthread_mutex_t mu;
    double *sent;               /* submit time by correlation id (1, 2, ...) */
    size_t cap;
    struct bu_lat lat;
    uint64_t done;              /* mu */
    atomic_int failed;
    atomic_ullong first;        /* the fill's first position */
};

static void on_result(void *arg, uint64_t id, int rc, const struct an_append_result *res,
                      const struct an_error *err)
{
    struct pipe *p = arg;
    if (rc) {
        if (atomic_fetch_add(&p->failed, 1) == 0) {
            fprintf(stderr, "compare: annals append %llu: %s (%s)\n", (unsigned long long)id,
                    an_strerror(rc), err ? err->detail : "");
        }
        return;
    }
    if (id == 1) {
        atomic_store(&p->first, res->first_position);
    }
    double now = bu_now();
    pthread_mutex_lock(&p->mu);
    if (p->sent && id < p->cap) {
        bu_lat_add(&p->lat, now - p->sent[id]);
    }
    p->done++;
    pthread_mutex_unlock(&p->mu);
}

#define PIPE_STREAMS 256        /* more than in flight: a stream's last append is settled */

static void a_pipe(struct cmp_meas *m, const char *tag)
{
    an_client *c = connect_one();
    an_appender *ap;
    struct pipe p = {.cap = 4000000};
    int64_t ver[PIPE_STREAMS];
    pthread_mutex_init(&p.mu, NULL);
    p.sent = calloc(p.cap, sizeof(*p.sent));
    if (!p.sent) {
        cmp_die("annals pipe", "no memory");
    }
    for (int i = 0; i < PIPE_STREAMS; i++) {
        ver[i] = -1;
    }
    int rc = an_appender_open(c, cmp_lim.pipe_depth, on_result, &p, &ap);
    if (rc) {
        cmp_die("annals appender", an_strerror(rc));
    }
    struct an_event e = {.type = CMP_TYPE, .data = cmp_payload, .data_len = CMP_PAYLOAD,
                         .content_type = "application/json"};
    double t0 = bu_now();
    for (uint64_t i = 1; i < p.cap && !cmp_time_up(t0); i++) {
        char stream[96];
        int s = (int)(i % PIPE_STREAMS);
        snprintf(stream, sizeof(stream), "%s-%d", tag, s);
        struct an_stream_append sa = {
            .stream = stream,
            .expect = ver[s] < 0 ? AN_EXPECT_NO_STREAM : AN_EXPECT_VERSION,
            .expected_version = ver[s] < 0 ? 0 : (uint64_t)ver[s],
            .events = &e,
            .n_events = 1,
        };
        ver[s]++;
        pthread_mutex_lock(&p.mu);
        p.sent[i] = bu_now(); /* the appender's ids are 1, 2, ... in submit order */
        pthread_mutex_unlock(&p.mu);
        if ((rc = an_appender_submit(ap, &sa, 1, NULL))) {
            cmp_die("annals submit", an_strerror(rc));
        }
    }
    rc = an_appender_close(ap);
    m->secs = bu_now() - t0;
    if (rc || atomic_load(&p.failed)) {
        cmp_die("annals pipe", "appends failed");
    }
    m->n = p.done;
    m->lat = p.lat;
    free(p.sent);
    an_close(c);
}

/* ---- read ---- */

#define FILL_BATCH 100

static void a_fill(void)
{
    an_client *c = connect_one();
    an_appender *ap;
    struct pipe p = {0};
    struct an_event ev[FILL_BATCH];
    pthread_mutex_init(&p.mu, NULL);
    for (int i = 0; i < FILL_BATCH; i++) {
        ev[i] = (struct an_event){.type = CMP_TYPE, .data = cmp_payload,
                                  .data_len = CMP_PAYLOAD, .content_type = "application/json"};
    }
    int rc = an_appender_open(c, 64, on_result, &p, &ap);
    if (rc) {
        cmp_die("annals appender", an_strerror(rc));
    }
    double t0 = bu_now();
    for (unsigned i = 0; i < cmp_lim.read_events / FILL_BATCH; i++) {
        if ((i & 63) == 63 && cmp_fill_up(t0, i * FILL_BATCH)) {
            break;
        }
        char stream[32];
        snprintf(stream, sizeof(stream), "fill-%u", i % 1000);
        struct an_stream_append sa = {.stream = stream, .events = ev, .n_events = FILL_BATCH};
        if ((rc = an_appender_submit(ap, &sa, 1, NULL))) {
            cmp_die("annals fill", an_strerror(rc));
        }
    }
    if (an_appender_close(ap) || atomic_load(&p.failed)) {
        cmp_die("annals fill", "appends failed");
    }
    fill_first = atomic_load(&p.first);
    an_close(c);
}

static void a_read(struct cmp_meas *m)
{
    an_client *c = connect_one();
    struct an_read_all_opts o = {.from_position = fill_first, .max_count = cmp_lim.read_events};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    struct an_error err;
    uint64_t bytes = 0;
    int rc;
    double t0 = bu_now();
    if ((rc = an_read_all(c, &o, &it))) {
        cmp_die("annals read all", an_strerror(rc));
    }
    while (!((m->n & 1023) == 0 && cmp_time_up(t0)) && (rc = an_iter_next(it, &e, &err)) == 1) {
        bytes += e->data.len;
        m->n++;
    }
    an_iter_free(it);
    m->secs = bu_now() - t0;
    if (rc < 0) {
        cmp_die("annals read all", err.detail);
    }
    if (bytes < m->n * CMP_PAYLOAD) {
        cmp_die("annals read all", "short events");
    }
    an_close(c);
}

const struct cmp_driver cmp_annals = {
    .name = "annals",
    .setup = a_setup,
    .open = a_open,
    .close = a_close,
    .append = a_append,
    .current = a_current,
    .pipe = a_pipe,
    .fill = a_fill,
    .read = a_read,
    .ping = a_ping,
};

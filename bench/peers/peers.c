/*
 * peers.c - one load generator for Annals and the stores users would pick
 * instead (PostgreSQL, Redis, NATS JetStream), so that client overhead is
 * comparable: the same threads, the same payload, the same timing. Driven
 * by bench/peers/compare, which starts each server; see its header.
 *
 *   peers SYSTEM ADDR WORKLOAD [--reps 3] [--seconds 3]
 *   peers ceiling fsync|lmdb DIR [--reps 3] [--seconds 2]
 *
 * SYSTEM: annals (HOST:PORT; annals-shared: the threads share one client,
 * one HTTP/2 connection), pg (a libpq conninfo), redis (HOST:PORT), nats
 * (nats://HOST:PORT). WORKLOAD:
 *   append1    1 client, durable append of one ~200-byte event with an
 *              expected-version check, its own 16 streams;
 *   append64   64 clients (threads, a connection each), each its own streams;
 *   pipe64     1 connection, 64 appends in flight (Annals AppendStream,
 *              Redis pipelining, PostgreSQL pipeline mode);
 *   hot64      64 clients on 8 shared streams: each appends at the version
 *              it believes current; a conflict teaches it the actual one
 *              (counted, then it goes on);
 *   read       fill 1 000 000 events (untimed, the fastest bulk path), then
 *              read them all back in global order (Annals ReadAll,
 *              PostgreSQL binary COPY of the table ordered by position).
 * Each measurement runs --reps times, each bounded by a count and by
 * --seconds; it prints one CSV line:
 *   system,workload,clients,eps_median,eps_min,eps_max,p50_ms,p99_ms,conflicts
 * (latency: of the median run; per append, submit to acknowledgement).
 * Progress goes to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "annals.h"
#include "bench_util.h"

#ifdef HAVE_PQ
#include <libpq-fe.h>
#endif
#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif
#ifdef HAVE_NATS
#include <nats/nats.h>
#endif

#define PAYLOAD 200
#define OWN_STREAMS 16
#define HOT_STREAMS 8
#define MAX_CLIENTS 64
#define PIPE_DEPTH 64
#define READ_EVENTS 1000000u

static const char *g_addr;
static const char *g_wl = "";
static double g_seconds = 3;
static int g_reps = 3;
static char payload[PAYLOAD + 1];

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "peers: %s: %s\n", what, detail ? detail : "");
    exit(1);
}

/* ---- one append, per system ---- */

enum { OK = 0, CONFLICT = 1 };

/* A connection; `actual` receives a conflict's actual version (-1: none). */
struct conn {
    void *h;
    void *h2;
};

struct driver {
    const char *name;
    void (*open)(struct conn *c);
    /* expected: the stream's last version, -1 for a new stream */
    int (*append)(struct conn *c, const char *stream, int64_t expected, int64_t *actual);
    void (*close)(struct conn *c);
};

/* -- annals -- */

/* System "annals-shared": every thread uses one client (one channel, one
 * HTTP/2 connection), as the threads of one service usually do with gRPC. */
static bool g_share;
static an_client *g_shared;
static pthread_mutex_t g_shared_mu = PTHREAD_MUTEX_INITIALIZER;

static void an_open_(struct conn *c)
{
    an_client *cl;
    if (g_share) {
        pthread_mutex_lock(&g_shared_mu);
        if (!g_shared) {
            struct an_client_opts o = {.timeout_ms = 30000};
            int rc = an_connect(g_addr, &o, &g_shared);
            if (rc) die("annals connect", an_strerror(rc));
        }
        pthread_mutex_unlock(&g_shared_mu);
        c->h = g_shared;
        c->h2 = (void *)1;
        return;
    }
    struct an_client_opts o = {.timeout_ms = 30000};
    int rc = an_connect(g_addr, &o, &cl);
    if (rc) die("annals connect", an_strerror(rc));
    c->h = cl;
}

static int an_append_(struct conn *c, const char *stream, int64_t expected, int64_t *actual)
{
    struct an_event e = {.type = "OrderPlaced", .data = payload, .data_len = PAYLOAD,
                         .content_type = "application/json"};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1,
                                  .expect = expected < 0 ? AN_EXPECT_NO_STREAM : AN_EXPECT_VERSION,
                                  .expected_version = expected < 0 ? 0 : (uint64_t)expected};
    struct an_error err;
    int rc = an_append(c->h, &sa, 1, NULL, &err);
    if (rc == AN_ECONFLICT) {
        *actual = err.actual_version;
        return CONFLICT;
    }
    if (rc) die("annals append", err.detail);
    return OK;
}

static void an_close_(struct conn *c)
{
    if (!c->h2) an_close(c->h); /* the shared one stays */
}

static const struct driver d_annals = {"annals", an_open_, an_append_, an_close_};

/* -- PostgreSQL -- */

#ifdef HAVE_PQ
static void pg_open(struct conn *c)
{
    PGconn *pg = PQconnectdb(g_addr);
    if (PQstatus(pg) != CONNECTION_OK) die("pg connect", PQerrorMessage(pg));
    PGresult *r = PQprepare(pg, "app",
                            "INSERT INTO events(stream, version, type, data) "
                            "VALUES ($1, $2::int, 'OrderPlaced', $3::bytea)",
                            3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) die("pg prepare", PQerrorMessage(pg));
    PQclear(r);
    c->h = pg;
}

static int pg_current(PGconn *pg, const char *stream, int64_t *actual)
{
    const char *v[1] = {stream};
    PGresult *r = PQexecParams(pg, "SELECT coalesce(max(version), -1) FROM events WHERE stream=$1",
                               1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) die("pg select", PQerrorMessage(pg));
    *actual = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return CONFLICT;
}

static int pg_append(struct conn *c, const char *stream, int64_t expected, int64_t *actual)
{
    char ver[24];
    snprintf(ver, sizeof(ver), "%lld", (long long)expected + 1);
    const char *v[3] = {stream, ver, payload};
    PGresult *r = PQexecPrepared(c->h, "app", 3, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK) {
        PQclear(r);
        return OK;
    }
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "23505") == 0) { /* unique_violation */
        PQclear(r);
        return pg_current(c->h, stream, actual);
    }
    die("pg insert", PQerrorMessage(c->h));
    return -1;
}

static void pg_close(struct conn *c)
{
    PQfinish(c->h);
}

static const struct driver d_pg = {"pg", pg_open, pg_append, pg_close};
#endif

/* -- Redis -- */

#ifdef HAVE_HIREDIS
/* KEYS[1] stream; ARGV[1] expected length (-1: new), ARGV[2] type, ARGV[3] data */
static const char *redis_lua =
    "local n = redis.call('XLEN', KEYS[1]) "
    "if n ~= tonumber(ARGV[1]) + 1 then return {err='CONFLICT ' .. (n - 1)} end "
    "return redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'data', ARGV[3])";
static char redis_sha[64];

static void redis_open(struct conn *c)
{
    char host[128];
    snprintf(host, sizeof(host), "%s", g_addr);
    char *colon = strrchr(host, ':');
    if (!colon) die("redis address", g_addr);
    *colon = 0;
    redisContext *r = redisConnect(host, atoi(colon + 1));
    if (!r || r->err) die("redis connect", r ? r->errstr : "no memory");
    /* loaded once (threads connect at the same time; the sha is shared) */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    if (!redis_sha[0]) {
        redisReply *rep = redisCommand(r, "SCRIPT LOAD %s", redis_lua);
        if (!rep || rep->type != REDIS_REPLY_STRING) die("redis script load", r->errstr);
        snprintf(redis_sha, sizeof(redis_sha), "%s", rep->str);
        freeReplyObject(rep);
    }
    pthread_mutex_unlock(&mu);
    c->h = r;
}

static int redis_reply(redisReply *rep, int64_t *actual)
{
    if (!rep) die("redis", "no reply");
    int rc = OK;
    if (rep->type == REDIS_REPLY_ERROR) {
        const char *p = strstr(rep->str, "CONFLICT ");
        if (!p) die("redis evalsha", rep->str);
        *actual = atoll(p + 9);
        rc = CONFLICT;
    }
    freeReplyObject(rep);
    return rc;
}

static int redis_append(struct conn *c, const char *stream, int64_t expected, int64_t *actual)
{
    redisReply *rep = redisCommand(c->h, "EVALSHA %s 1 %s %lld OrderPlaced %b", redis_sha,
                                   stream, (long long)expected, payload, (size_t)PAYLOAD);
    return redis_reply(rep, actual);
}

static void redis_close(struct conn *c)
{
    redisFree(c->h);
}

static const struct driver d_redis = {"redis", redis_open, redis_append, redis_close};
#endif

/* -- NATS JetStream -- */

#ifdef HAVE_NATS
static void nats_open(struct conn *c)
{
    natsConnection *nc;
    jsCtx *js;
    natsStatus s = natsConnection_ConnectTo(&nc, g_addr);
    if (s != NATS_OK) die("nats connect", natsStatus_GetText(s));
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = 30000;
    s = natsConnection_JetStream(&js, nc, &o);
    if (s != NATS_OK) die("nats jetstream", natsStatus_GetText(s));
    c->h = nc;
    c->h2 = js;
}

static void nats_close(struct conn *c);

/* NATS versions are the subject's last sequence in the stream, not a
 * count: the client keeps those (expected is a sequence, -1: none). */
static int nats_append(struct conn *c, const char *stream, int64_t expected, int64_t *actual)
{
    char subj[160];
    snprintf(subj, sizeof(subj), "ev.%s", stream);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    if (expected < 0) {
        po.ExpectNoMessage = true;
    } else {
        po.ExpectLastSubjectSeq = (uint64_t)expected;
    }
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&ack, c->h2, subj, payload, PAYLOAD, &po, &jerr);
    if (s == NATS_OK) {
        *actual = (int64_t)ack->Sequence;
        jsPubAck_Destroy(ack);
        return OK;
    }
    if (jerr == JSStreamWrongLastSequenceErr) {
        natsMsg *m = NULL;
        if (js_GetLastMsg(&m, c->h2, "EV", subj, NULL, NULL) == NATS_OK) {
            *actual = (int64_t)natsMsg_GetSequence(m);
            natsMsg_Destroy(m);
        } else {
            *actual = -1;
        }
        return CONFLICT;
    }
    die("nats publish", natsStatus_GetText(s));
    return -1;
}

/* The stream EV over subjects ev.>, file storage (once; again is fine). */
static void nats_setup(void)
{
    struct conn c = {0};
    nats_open(&c);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "EV";
    const char *subjects[1] = {"ev.>"};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, c.h2, &sc, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
    } else if (jerr != JSStreamNameExistErr) {
        die("nats add stream", natsStatus_GetText(s));
    }
    nats_close(&c);
}

static void nats_close(struct conn *c)
{
    jsCtx_Destroy(c->h2);
    natsConnection_Destroy(c->h);
}

static const struct driver d_nats = {"nats", nats_open, nats_append, nats_close};
#endif

/* ---- the append workloads ---- */

struct worker {
    pthread_t t;
    const struct driver *d;
    int id;
    int rep;
    bool hot;
    uint64_t quota;             /* appends to make */
    double until;
    uint64_t done;
    uint64_t conflicts;
    struct bu_lat lat;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct conn c = {0};
    w->d->open(&c);
    int64_t known[OWN_STREAMS];
    char names[OWN_STREAMS][48];
    int n = w->hot ? HOT_STREAMS : OWN_STREAMS;
    for (int i = 0; i < n; i++) {
        known[i] = -1;
        if (w->hot) {
            snprintf(names[i], sizeof(names[i]), "%s-r%d-%d", g_wl, w->rep, i);
        } else {
            snprintf(names[i], sizeof(names[i]), "%s-r%d-c%d-%d", g_wl, w->rep, w->id, i);
        }
    }
    bool nats = strcmp(w->d->name, "nats") == 0;
    int64_t seq[OWN_STREAMS];
    for (int i = 0; i < n; i++) seq[i] = -1;
    for (uint64_t i = 0; w->done < w->quota; i++) {
        if ((i & 15) == 0 && bu_now() > w->until) break;
        int s = (int)((i + (uint64_t)w->id) % (uint64_t)n);
        int64_t actual = -1;
        double t0 = bu_now();
        int rc = w->d->append(&c, names[s], nats ? seq[s] : known[s], &actual);
        if (rc == OK) {
            bu_lat_add(&w->lat, bu_now() - t0);
            w->done++;
            known[s]++;
            if (nats) seq[s] = actual;
        } else {
            w->conflicts++;
            if (nats) {
                seq[s] = actual;
            } else {
                known[s] = actual;
            }
        }
    }
    w->d->close(&c);
    return NULL;
}

struct run_result {
    double eps;
    double p50, p99;            /* ms */
    uint64_t conflicts;
};

static struct run_result run_clients(const struct driver *d, int clients, bool hot, int rep)
{
    struct worker *w = calloc((size_t)clients, sizeof(*w));
    uint64_t total = clients == 1 ? 20000 : 400000;
    double t0 = bu_now();
    for (int i = 0; i < clients; i++) {
        w[i] = (struct worker){.d = d, .id = i, .rep = rep, .hot = hot,
                               .quota = total / (uint64_t)clients, .until = t0 + g_seconds};
        pthread_create(&w[i].t, NULL, worker_main, &w[i]);
    }
    struct bu_lat all = {0};
    struct run_result r = {0};
    uint64_t done = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(w[i].t, NULL);
        done += w[i].done;
        r.conflicts += w[i].conflicts;
        bu_lat_merge(&all, &w[i].lat);
        bu_lat_free(&w[i].lat);
    }
    double secs = bu_now() - t0;
    bu_lat_sort(&all);
    r.eps = (double)done / secs;
    r.p50 = bu_pct(&all, 0.50);
    r.p99 = bu_pct(&all, 0.99);
    bu_lat_free(&all);
    free(w);
    return r;
}

/* ---- pipelined: one connection, 64 in flight ---- */

struct pipe_state {
    double *sent;               /* by correlation id */
    size_t cap;
    struct bu_lat lat;
    atomic_ullong done;
    atomic_ullong failed;
    pthread_mutex_t mu;
};

static void an_pipe_cb(void *arg, uint64_t id, int rc, const struct an_append_result *res,
                       const struct an_error *err)
{
    (void)res, (void)err;
    struct pipe_state *p = arg;
    if (rc) {
        atomic_fetch_add(&p->failed, 1);
        return;
    }
    double now = bu_now();
    pthread_mutex_lock(&p->mu);
    if (id < p->cap) bu_lat_add(&p->lat, now - p->sent[id]);
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->done, 1);
}

static struct run_result pipe_annals(int rep)
{
    struct conn c = {0};
    an_open_(&c);
    struct pipe_state p = {.cap = 2000001};
    pthread_mutex_init(&p.mu, NULL);
    p.sent = calloc(p.cap, sizeof(double));
    an_appender *a;
    int rc = an_appender_open(c.h, PIPE_DEPTH, an_pipe_cb, &p, &a);
    if (rc) die("annals appender", an_strerror(rc));
    int64_t ver[256];
    for (int i = 0; i < 256; i++) ver[i] = -1;
    double t0 = bu_now();
    uint64_t n = 0;
    for (; n < 2000000 && bu_now() - t0 < g_seconds; n++) {
        char stream[48];
        int s = (int)(n % 256);
        snprintf(stream, sizeof(stream), "pipe-r%d-%d", rep, s);
        struct an_event e = {.type = "OrderPlaced", .data = payload, .data_len = PAYLOAD,
                             .content_type = "application/json"};
        struct an_stream_append sa = {
            .stream = stream, .events = &e, .n_events = 1,
            .expect = ver[s] < 0 ? AN_EXPECT_NO_STREAM : AN_EXPECT_VERSION,
            .expected_version = ver[s] < 0 ? 0 : (uint64_t)ver[s]};
        ver[s]++;
        pthread_mutex_lock(&p.mu);
        p.sent[n + 1] = bu_now(); /* ids are 1, 2, ... */
        pthread_mutex_unlock(&p.mu);
        if ((rc = an_appender_submit(a, &sa, 1, NULL))) die("annals submit", an_strerror(rc));
    }
    an_appender_close(a);
    double secs = bu_now() - t0;
    if (atomic_load(&p.failed)) die("annals pipe", "appends failed");
    struct run_result r = {.eps = (double)atomic_load(&p.done) / secs};
    bu_lat_sort(&p.lat);
    r.p50 = bu_pct(&p.lat, 0.5);
    r.p99 = bu_pct(&p.lat, 0.99);
    bu_lat_free(&p.lat);
    free(p.sent);
    an_close_(&c);
    return r;
}

#ifdef HAVE_HIREDIS
static struct run_result pipe_redis(int rep)
{
    struct conn c = {0};
    redis_open(&c);
    struct bu_lat lat = {0};
    int64_t ver[256];
    for (int i = 0; i < 256; i++) ver[i] = -1;
    double t0 = bu_now();
    uint64_t n = 0;
    while (n < 2000000 && bu_now() - t0 < g_seconds) {
        double sent[PIPE_DEPTH];
        for (int k = 0; k < PIPE_DEPTH; k++, n++) {
            int s = (int)(n % 256);
            char stream[48];
            snprintf(stream, sizeof(stream), "pipe-r%d-%d", rep, s);
            redisAppendCommand(c.h, "EVALSHA %s 1 %s %lld OrderPlaced %b", redis_sha, stream,
                               (long long)ver[s], payload, (size_t)PAYLOAD);
            ver[s]++;
            sent[k] = bu_now();
        }
        for (int k = 0; k < PIPE_DEPTH; k++) {
            redisReply *rep_ = NULL;
            if (redisGetReply(c.h, (void **)&rep_) != REDIS_OK) die("redis pipe", "no reply");
            int64_t actual;
            if (redis_reply(rep_, &actual) != OK) die("redis pipe", "unexpected conflict");
            bu_lat_add(&lat, bu_now() - sent[k]);
        }
    }
    double secs = bu_now() - t0;
    struct run_result r = {.eps = (double)n / secs};
    bu_lat_sort(&lat);
    r.p50 = bu_pct(&lat, 0.5);
    r.p99 = bu_pct(&lat, 0.99);
    bu_lat_free(&lat);
    redis_close(&c);
    return r;
}
#endif

#ifdef HAVE_PQ
static struct run_result pipe_pg(int rep)
{
    struct conn c = {0};
    pg_open(&c);
    PGconn *pg = c.h;
    if (!PQenterPipelineMode(pg)) die("pg pipeline", PQerrorMessage(pg));
    struct bu_lat lat = {0};
    int64_t ver[256];
    for (int i = 0; i < 256; i++) ver[i] = -1;
    double t0 = bu_now();
    uint64_t n = 0;
    while (n < 2000000 && bu_now() - t0 < g_seconds) {
        double sent[PIPE_DEPTH];
        for (int k = 0; k < PIPE_DEPTH; k++, n++) {
            int s = (int)(n % 256);
            char stream[48], v[24];
            snprintf(stream, sizeof(stream), "pipe-r%d-%d", rep, s);
            ver[s]++;
            snprintf(v, sizeof(v), "%lld", (long long)ver[s]);
            const char *vals[3] = {stream, v, payload};
            if (!PQsendQueryPrepared(pg, "app", 3, vals, NULL, NULL, 0)) {
                die("pg send", PQerrorMessage(pg));
            }
            /* each insert its own transaction, committed durably: a sync
             * point after each, as a client acknowledging each one would */
            if (!PQpipelineSync(pg)) die("pg sync", PQerrorMessage(pg));
            sent[k] = bu_now();
        }
        for (int k = 0; k < PIPE_DEPTH; k++) {
            PGresult *r;
            while ((r = PQgetResult(pg)) != NULL) {
                if (PQresultStatus(r) != PGRES_COMMAND_OK) die("pg pipe", PQerrorMessage(pg));
                PQclear(r);
            }
            r = PQgetResult(pg); /* the sync */
            if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) die("pg pipe sync", PQerrorMessage(pg));
            PQclear(r);
            bu_lat_add(&lat, bu_now() - sent[k]);
        }
    }
    double secs = bu_now() - t0;
    PQexitPipelineMode(pg);
    struct run_result r = {.eps = (double)n / secs};
    bu_lat_sort(&lat);
    r.p50 = bu_pct(&lat, 0.5);
    r.p99 = bu_pct(&lat, 0.99);
    bu_lat_free(&lat);
    pg_close(&c);
    return r;
}
#endif

/* ---- read all ---- */

static struct run_result read_annals(int rep)
{
    struct conn c = {0};
    an_open_(&c);
    if (rep == 0) {
        /* fill: 100 events per append over AppendStream */
        an_appender *a;
        struct pipe_state p = {0};
        pthread_mutex_init(&p.mu, NULL);
        int rc = an_appender_open(c.h, 64, an_pipe_cb, &p, &a);
        if (rc) die("annals appender", an_strerror(rc));
        struct an_event ev[100];
        for (int i = 0; i < 100; i++) {
            ev[i] = (struct an_event){.type = "OrderPlaced", .data = payload,
                                      .data_len = PAYLOAD, .content_type = "application/json"};
        }
        for (unsigned i = 0; i < READ_EVENTS / 100; i++) {
            char stream[32];
            snprintf(stream, sizeof(stream), "fill-%u", i % 1000);
            struct an_stream_append sa = {.stream = stream, .events = ev, .n_events = 100};
            if ((rc = an_appender_submit(a, &sa, 1, NULL))) die("fill", an_strerror(rc));
        }
        an_appender_close(a);
        fprintf(stderr, "peers: annals: filled %u events\n", READ_EVENTS);
    }
    double t0 = bu_now();
    struct an_read_all_opts o = {0};
    an_iter *it;
    int rc = an_read_all(c.h, &o, &it);
    if (rc) die("read all", an_strerror(rc));
    const Annals__V1__RecordedEvent *e;
    uint64_t n = 0, bytes = 0;
    while ((rc = an_iter_next(it, &e, NULL)) == 1) {
        n++;
        bytes += e->data.len;
    }
    an_iter_free(it);
    double secs = bu_now() - t0;
    an_close_(&c);
    if (n < READ_EVENTS) die("read all", "short read");
    return (struct run_result){.eps = (double)n / secs};
}

#ifdef HAVE_PQ
static struct run_result read_pg(int rep)
{
    struct conn c = {0};
    pg_open(&c);
    PGconn *pg = c.h;
    if (rep == 0) {
        PGresult *r = PQexec(pg, "COPY events(stream, version, type, data) FROM STDIN");
        if (PQresultStatus(r) != PGRES_COPY_IN) die("pg copy in", PQerrorMessage(pg));
        PQclear(r);
        char line[512];
        for (unsigned i = 0; i < READ_EVENTS; i++) {
            int len = snprintf(line, sizeof(line), "fill-%u\t%u\tOrderPlaced\t%s\n", i % 1000,
                               i / 1000, payload);
            if (PQputCopyData(pg, line, len) != 1) die("pg copy", PQerrorMessage(pg));
        }
        if (PQputCopyEnd(pg, NULL) != 1) die("pg copy end", PQerrorMessage(pg));
        r = PQgetResult(pg);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) die("pg copy", PQerrorMessage(pg));
        PQclear(r);
        fprintf(stderr, "peers: pg: filled %u events\n", READ_EVENTS);
    }
    double t0 = bu_now();
    PGresult *r = PQexec(pg, "COPY (SELECT global, stream, version, type, data FROM events "
                             "WHERE stream LIKE 'fill-%' ORDER BY global) TO STDOUT (FORMAT binary)");
    if (PQresultStatus(r) != PGRES_COPY_OUT) die("pg copy out", PQerrorMessage(pg));
    PQclear(r);
    char *buf;
    int len;
    uint64_t rows = 0;
    while ((len = PQgetCopyData(pg, &buf, 0)) > 0) {
        rows++;
        PQfreemem(buf);
    }
    r = PQgetResult(pg);
    PQclear(r);
    double secs = bu_now() - t0;
    pg_close(&c);
    /* the binary format's header and trailer arrive with the first and last rows */
    if (rows < READ_EVENTS) die("pg read", "short read");
    return (struct run_result){.eps = (double)READ_EVENTS / secs};
}
#endif

/* ---- ceilings ---- */

static struct run_result ceiling_fsync(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("fsync probe", strerror(errno));
    char b[512] = {0};
    struct bu_lat lat = {0};
    double t0 = bu_now();
    uint64_t n = 0;
    for (; n < 100000 && bu_now() - t0 < g_seconds; n++) {
        double t = bu_now();
        if (pwrite(fd, b, sizeof(b), (off_t)((n % 64) * sizeof(b))) != (ssize_t)sizeof(b) ||
            fdatasync(fd)) {
            die("fsync probe", strerror(errno));
        }
        bu_lat_add(&lat, bu_now() - t);
    }
    double secs = bu_now() - t0;
    close(fd);
    unlink(path);
    struct run_result r = {.eps = (double)n / secs};
    bu_lat_sort(&lat);
    r.p50 = bu_pct(&lat, 0.5);
    r.p99 = bu_pct(&lat, 0.99);
    bu_lat_free(&lat);
    return r;
}

/* Raw LMDB group commit: 64 events per durable commit, each event a get
 * (the expected version) and three puts (event, stream, stream index). */
static struct run_result ceiling_lmdb(const char *dir, int rep)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/lmdb-%d", dir, rep);
    mkdir(path, 0755);
    MDB_env *env;
    MDB_dbi ev, st, ix;
    MDB_txn *txn;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 4) ||
        mdb_env_set_mapsize(env, 4ull << 30) || mdb_env_open(env, path, 0, 0644)) {
        die("lmdb", "cannot open");
    }
    mdb_txn_begin(env, NULL, 0, &txn);
    mdb_dbi_open(txn, "events", MDB_CREATE | MDB_INTEGERKEY, &ev);
    mdb_dbi_open(txn, "streams", MDB_CREATE, &st);
    mdb_dbi_open(txn, "index", MDB_CREATE, &ix);
    mdb_txn_commit(txn);
    struct bu_lat lat = {0};
    uint64_t pos = 0, vers[1000] = {0};
    double t0 = bu_now();
    while (pos < 2000000 && bu_now() - t0 < g_seconds) {
        double t = bu_now();
        if (mdb_txn_begin(env, NULL, 0, &txn)) die("lmdb", "begin");
        for (int k = 0; k < 64; k++) {
            pos++;
            unsigned s = (unsigned)(pos * 2654435761u % 1000);
            char name[32];
            int nl = snprintf(name, sizeof(name), "acct-%04u", s);
            MDB_val key = {(size_t)nl, name}, val;
            mdb_get(txn, st, &key, &val);
            val = (MDB_val){sizeof(vers[s]), &vers[s]};
            vers[s]++;
            mdb_put(txn, st, &key, &val, 0);
            MDB_val pk = {sizeof(pos), &pos}, pv = {PAYLOAD + 72, payload};
            mdb_put(txn, ev, &pk, &pv, MDB_APPEND);
            char ik[48];
            memcpy(ik, name, (size_t)nl);
            memcpy(ik + nl, &vers[s], 8);
            MDB_val ikey = {(size_t)nl + 8, ik}, ival = {sizeof(pos), &pos};
            mdb_put(txn, ix, &ikey, &ival, 0);
        }
        if (mdb_txn_commit(txn)) die("lmdb", "commit");
        bu_lat_add(&lat, bu_now() - t);
    }
    double secs = bu_now() - t0;
    mdb_env_close(env);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "peers: cannot remove %s\n", path);
    struct run_result r = {.eps = (double)pos / secs};
    bu_lat_sort(&lat);
    r.p50 = bu_pct(&lat, 0.5);
    r.p99 = bu_pct(&lat, 0.99);
    bu_lat_free(&lat);
    return r;
}

/* ---- main ---- */

static int cmp_run(const void *a, const void *b)
{
    double x = ((const struct run_result *)a)->eps, y = ((const struct run_result *)b)->eps;
    return x < y ? -1 : x > y;
}

static void report(const char *sys, const char *wl, int clients, struct run_result *r, int n)
{
    uint64_t conflicts = 0;
    for (int i = 0; i < n; i++) conflicts += r[i].conflicts;
    qsort(r, (size_t)n, sizeof(*r), cmp_run);
    const struct run_result *m = &r[n / 2];
    printf("%s,%s,%d,%.0f,%.0f,%.0f,%.3f,%.3f,%llu\n", sys, wl, clients, m->eps, r[0].eps,
           r[n - 1].eps, m->p50, m->p99, (unsigned long long)conflicts);
    fflush(stdout);
}

static const struct driver *find_driver(const char *name)
{
    if (!strcmp(name, "annals")) return &d_annals;
    if (!strcmp(name, "annals-shared")) {
        g_share = true;
        return &d_annals;
    }
#ifdef HAVE_PQ
    if (!strcmp(name, "pg")) return &d_pg;
#endif
#ifdef HAVE_HIREDIS
    if (!strcmp(name, "redis")) return &d_redis;
#endif
#ifdef HAVE_NATS
    if (!strcmp(name, "nats")) return &d_nats;
#endif
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: peers SYSTEM ADDR WORKLOAD [--reps N] [--seconds S]\n"
                        "       peers ceiling fsync|lmdb DIR [--reps N] [--seconds S]\n");
        return 2;
    }
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            g_reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            g_seconds = atof(argv[++i]);
        } else {
            fprintf(stderr, "peers: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (g_reps < 1 || g_reps > 9 || g_seconds <= 0) {
        fprintf(stderr, "peers: --reps 1..9, --seconds > 0\n");
        return 2;
    }
    memset(payload, 'x', PAYLOAD);
    memcpy(payload, "{\"pad\":\"", 8);
    memcpy(payload + PAYLOAD - 2, "\"}", 2);
    struct run_result r[9];
    if (!strcmp(argv[1], "ceiling")) {
        bool fs = !strcmp(argv[2], "fsync");
        for (int i = 0; i < g_reps; i++) {
            r[i] = fs ? ceiling_fsync(argv[3]) : ceiling_lmdb(argv[3], i);
            fprintf(stderr, "peers: ceiling %s rep %d: %.0f/s\n", argv[2], i + 1, r[i].eps);
        }
        report(fs ? "fsync" : "lmdb", fs ? "fdatasync" : "group64", 1, r, g_reps);
        return 0;
    }
    const char *sys = argv[1], *wl = argv[3];
    g_addr = argv[2];
    static char tag[64];
    snprintf(tag, sizeof(tag), "%s-%s", sys, wl);
    g_wl = tag; /* stream names: each system and workload its own */
    const struct driver *d = find_driver(sys);
    if (!d) {
        fprintf(stderr, "peers: system %s is not built in (missing client library?)\n", sys);
        return 3;
    }
    int clients = !strcmp(wl, "append1") ? 1 : !strcmp(wl, "read") ? 1 : 64;
#ifdef HAVE_NATS
    if (d == &d_nats) nats_setup();
#endif
    for (int i = 0; i < g_reps; i++) {
        if (!strcmp(wl, "append1") || !strcmp(wl, "append64") || !strcmp(wl, "hot64")) {
            r[i] = run_clients(d, clients, !strcmp(wl, "hot64"), i);
        } else if (!strcmp(wl, "pipe64")) {
            if (d == &d_annals) {
                r[i] = pipe_annals(i);
#ifdef HAVE_HIREDIS
            } else if (d == &d_redis) {
                r[i] = pipe_redis(i);
#endif
#ifdef HAVE_PQ
            } else if (d == &d_pg) {
                r[i] = pipe_pg(i);
#endif
            } else {
                fprintf(stderr, "peers: %s has no pipelined driver\n", sys);
                return 3;
            }
        } else if (!strcmp(wl, "read")) {
            if (d == &d_annals) {
                r[i] = read_annals(i);
#ifdef HAVE_PQ
            } else if (d == &d_pg) {
                r[i] = read_pg(i);
#endif
            } else {
                fprintf(stderr, "peers: %s has no read-all driver\n", sys);
                return 3;
            }
        } else {
            fprintf(stderr, "peers: unknown workload %s\n", wl);
            return 2;
        }
        fprintf(stderr, "peers: %s %s rep %d/%d: %.0f events/s p50 %.2f ms p99 %.2f ms%s\n",
                sys, wl, i + 1, g_reps, r[i].eps, r[i].p50, r[i].p99,
                r[i].conflicts ? " (conflicts counted)" : "");
    }
    report(sys, wl, clients, r, g_reps);
    if (g_shared) an_close(g_shared);
    return 0;
}

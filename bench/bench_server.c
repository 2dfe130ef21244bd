/*
 * bench_server.c - annalsd over gRPC, measured against its own engine in
 * one run on the same disk.
 *
 *   build/bench/bench_server [--quick] [--clients N] [--count N] [--read N] [--dir DIR]
 *
 * Each write phase starts a fresh annalsd (temp data dir, loopback, free
 * port), drives it through libannals and stops it with SIGTERM; annalsd's
 * closing "totals" line gives the writer's mean group-commit batch.
 *   A. unary Append, 1 client, one ~200-byte event per request, EXPECT_VERSION
 *   B. unary Append, N clients (own connection and stream each), same requests
 *   C. AppendStream, one call with 64 requests in flight, chained EXPECT_VERSION
 *   D. ReadAll of R events over loopback (loaded with 256-event appends)
 *   E. the engine in process (log_commit, no gRPC) at the mean batch sizes
 *      the server reached in A, B and C: what the server could do at best
 *   F. Health/Check instead of Append, 1 client and N clients (unless
 *      --no-grpc-floor): gRPC, libannals and the server's dispatch alone,
 *      no writer and no disk: what unary calls can do at best on these cores
 * Progress lines go to stderr; the table to stdout.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "annals.h"
#include "bench_util.h"
#include "log.h"

#define EVENT_BYTES 200

static char payload[EVENT_BYTES];

/* --tls: the server's extra flags and the clients' options, once the
 * plaintext phases are done */
static const char *const *g_flags;
static struct an_client_opts g_opts;
static const struct an_client_opts *g_copts;
/* appends in flight on the AppendStream call (--inflight) */
static unsigned g_inflight = 64;

static void die(const char *what, int rc, const char *detail)
{
    bu_die("bench_server", what, rc, detail);
}

struct result {
    const char *name;
    double events_s;
    double p50_ms;
    double p99_ms;
    double p999_ms;
    double batch;
};

static void finish(struct result *r, struct bu_lat *l, uint64_t events, double secs)
{
    bu_lat_sort(l);
    r->events_s = (double)events / secs;
    r->p50_ms = bu_pct(l, 0.50);
    r->p99_ms = bu_pct(l, 0.99);
    r->p999_ms = bu_pct(l, 0.999);
    bu_lat_free(l);
}

/* ---- unary clients ---- */

struct uclient {
    const char *addr;
    int index;
    uint64_t count;
    bool health;                /* Health/Check instead of Append */
    struct bu_lat lat;
};

static void *unary_main(void *arg)
{
    struct uclient *u = arg;
    an_client *c;
    char stream[32];
    struct an_error err;
    if (an_connect(u->addr, g_copts, &c)) {
        die("connect", AN_EUNAVAIL, u->addr);
    }
    snprintf(stream, sizeof(stream), "bench-%d", u->index);
    for (uint64_t i = 0; u->health && i < u->count; i++) {
        bool serving = false;
        double t0 = bu_now();
        int rc = an_health(c, &serving, &err);
        bu_lat_add(&u->lat, bu_now() - t0);
        if (rc || !serving) {
            die("health", rc ? rc : AN_EUNAVAIL, rc ? err.detail : "not serving");
        }
    }
    for (uint64_t i = 0; !u->health && i < u->count; i++) {
        struct an_event e = {.type = "Deposited", .data = payload, .data_len = EVENT_BYTES,
                             .content_type = "application/json"};
        struct an_stream_append sa = {.stream = stream,
                                      .expect = i ? AN_EXPECT_VERSION : AN_EXPECT_NO_STREAM,
                                      .expected_version = i - 1,
                                      .events = &e,
                                      .n_events = 1};
        double t0 = bu_now();
        int rc = an_append(c, &sa, 1, NULL, &err);
        bu_lat_add(&u->lat, bu_now() - t0);
        if (rc) {
            die("append", rc, err.detail);
        }
        if (u->index == 0 && i % 2000 == 1999) {
            fprintf(stderr, "bench: unary client 0: %llu/%llu\n", (unsigned long long)i + 1,
                    (unsigned long long)u->count);
        }
    }
    an_close(c);
    return NULL;
}

/* Unary Appends (or, with health, Health/Checks: gRPC, libannals and the
 * server's dispatch alone, no writer and no disk) from `clients` threads. */
static void run_unary(const char *base, struct result *r, int clients, uint64_t total,
                      bool health)
{
    struct bu_server s;
    struct uclient *u = calloc((size_t)clients, sizeof(*u));
    pthread_t *t = calloc((size_t)clients, sizeof(*t));
    struct bu_lat all = {0};
    bu_server_start(&s, base, g_flags);
    fprintf(stderr, "bench: %s: %d clients, %llu appends\n", r->name, clients,
            (unsigned long long)total);
    double t0 = bu_now();
    for (int i = 0; i < clients; i++) {
        u[i] = (struct uclient){
            .addr = s.addr, .index = i, .count = total / (uint64_t)clients, .health = health};
        pthread_create(&t[i], NULL, unary_main, &u[i]);
    }
    uint64_t done = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(t[i], NULL);
        done += u[i].count;
        bu_lat_merge(&all, &u[i].lat);
    }
    double secs = bu_now() - t0;
    r->batch = bu_server_stop(&s);
    finish(r, &all, done, secs);
    free(u);
    free(t);
}

/* ---- the appender ---- */

struct astate {
    double *sent;               /* submit time by correlation id */
    struct bu_lat lat;
    atomic_ullong failed;
    pthread_mutex_t mu;
};

static void on_result(void *arg, uint64_t corr, int rc, const struct an_append_result *res,
                      const struct an_error *err)
{
    struct astate *a = arg;
    (void)res;
    if (rc) {
        if (atomic_fetch_add(&a->failed, 1) == 0) {
            fprintf(stderr, "bench: append %llu failed: %s (%s)\n", (unsigned long long)corr,
                    an_strerror(rc), err ? err->detail : "");
        }
        return;
    }
    if (a->sent) {
        pthread_mutex_lock(&a->mu);
        bu_lat_add(&a->lat, bu_now() - a->sent[corr]);
        pthread_mutex_unlock(&a->mu);
    }
}

/* Appends `total` requests of `per` events over one AppendStream call with
 * `inflight` in flight, chained EXPECT_VERSION over 64 streams. */
static double stream_load(an_client *c, uint64_t total, unsigned per, unsigned inflight,
                          struct astate *st, const char *label)
{
    an_appender *ap;
    int64_t versions[64];
    struct an_event *ev = calloc(per, sizeof(*ev));
    memset(versions, 0xff, sizeof(versions));
    for (unsigned k = 0; k < per; k++) {
        ev[k] = (struct an_event){.type = "Deposited", .data = payload, .data_len = EVENT_BYTES};
    }
    int rc = an_appender_open(c, inflight, on_result, st, &ap);
    if (rc) {
        die("appender", rc, NULL);
    }
    double t0 = bu_now();
    for (uint64_t i = 0; i < total; i++) {
        char stream[32];
        unsigned k = (unsigned)(i % 64);
        snprintf(stream, sizeof(stream), "%s-%u", label, k);
        struct an_stream_append sa = {
            .stream = stream,
            .expect = versions[k] < 0 ? AN_EXPECT_NO_STREAM : AN_EXPECT_VERSION,
            .expected_version = (uint64_t)versions[k],
            .events = ev,
            .n_events = per,
        };
        versions[k] += per;
        if (st->sent) {
            st->sent[i + 1] = bu_now();
        }
        if ((rc = an_appender_submit(ap, &sa, 1, NULL))) {
            die("submit", rc, NULL);
        }
        if (i % 20000 == 19999) {
            fprintf(stderr, "bench: %s: %llu/%llu requests\n", label, (unsigned long long)i + 1,
                    (unsigned long long)total);
        }
    }
    if ((rc = an_appender_close(ap))) {
        die("appender close", rc, NULL);
    }
    free(ev);
    return bu_now() - t0;
}

static void run_stream(const char *base, struct result *r, uint64_t total, uint64_t read_n,
                       struct result *rr)
{
    struct bu_server s;
    an_client *c;
    struct astate st = {.sent = calloc(total + 1, sizeof(double))};
    pthread_mutex_init(&st.mu, NULL);
    bu_server_start(&s, base, g_flags);
    if (an_connect(s.addr, g_copts, &c)) {
        die("connect", AN_EUNAVAIL, s.addr);
    }
    fprintf(stderr, "bench: %s: %llu appends, %u in flight\n", r->name,
            (unsigned long long)total, g_inflight);
    double secs = stream_load(c, total, 1, g_inflight, &st, "stream");
    if (atomic_load(&st.failed)) {
        die("appender", AN_EINTERNAL, "some appends failed");
    }
    finish(r, &st.lat, total, secs);
    free(st.sent);

    /* D: load up to read_n events with 256-event appends, then read them */
    uint64_t have = total;
    if (read_n > have) {
        struct astate st2 = {0};
        uint64_t reqs = (read_n - have + 255) / 256;
        fprintf(stderr, "bench: loading %llu more events for the read\n",
                (unsigned long long)(reqs * 256));
        stream_load(c, reqs, 256, 16, &st2, "load");
        have += reqs * 256;
    }
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    struct an_read_all_opts o = {0};
    uint64_t n = 0;
    size_t bytes = 0;
    fprintf(stderr, "bench: ReadAll of %llu events\n", (unsigned long long)have);
    double t0 = bu_now();
    if (an_read_all(c, &o, &it)) {
        die("read all", AN_EINTERNAL, NULL);
    }
    int rc;
    struct an_error err;
    while ((rc = an_iter_next(it, &e, &err)) == 1) {
        n++;
        bytes += e->data.len;
        if (n % 250000 == 0) {
            fprintf(stderr, "bench: read %llu/%llu\n", (unsigned long long)n,
                    (unsigned long long)have);
        }
    }
    double rsecs = bu_now() - t0;
    if (rc) {
        die("read all", rc, err.detail);
    }
    an_iter_free(it);
    rr->events_s = (double)n / rsecs;
    an_close(c);
    r->batch = bu_server_stop(&s);
    (void)bytes;
}

/* ---- the engine in process ---- */

static double engine_rate(const char *base, double batch, uint64_t events)
{
    char dir[300];
    char detail[LOG_DETAIL_MAX];
    log_env *env;
    unsigned b = batch < 1 ? 1 : (unsigned)(batch + 0.5);
    snprintf(dir, sizeof(dir), "%s/annals-engine-XXXXXX", base);
    if (!mkdtemp(dir)) {
        die("mkdtemp", AN_EIO, dir);
    }
    struct log_cfg cfg = {.dir = dir};
    int rc = log_open(&cfg, &env, detail);
    if (rc) {
        die("log_open", rc, detail);
    }
    /* one op per request, each to its own stream with EXPECT_VERSION, as
     * the server's clients send them */
    Annals__V1__EventData e = ANNALS__V1__EVENT_DATA__INIT;
    Annals__V1__EventData *ep = &e;
    e.type = "Deposited";
    e.data.data = (uint8_t *)payload;
    e.data.len = EVENT_BYTES;
    e.content_type = "application/json";
    Annals__V1__StreamAppend *sa = calloc(b, sizeof(*sa));
    Annals__V1__StreamAppend **sp = calloc(b, sizeof(*sp));
    Annals__V1__AppendRequest *rq = calloc(b, sizeof(*rq));
    struct log_op *ops = calloc(b, sizeof(*ops));
    struct log_stream_result *res = calloc(b, sizeof(*res));
    char (*names)[32] = calloc(b, 32);
    int64_t *ver = calloc(b, sizeof(*ver));
    for (unsigned i = 0; i < b; i++) {
        annals__v1__stream_append__init(&sa[i]);
        annals__v1__append_request__init(&rq[i]);
        snprintf(names[i], 32, "engine-%u", i);
        sa[i].stream = names[i];
        sa[i].n_events = 1;
        sa[i].events = &ep;
        sp[i] = &sa[i];
        rq[i].n_streams = 1;
        rq[i].streams = &sp[i];
        ver[i] = -1;
    }
    uint64_t commits = events / b + 1;
    double t0 = bu_now();
    for (uint64_t k = 0; k < commits; k++) {
        for (unsigned i = 0; i < b; i++) {
            sa[i].expect = ver[i] < 0 ? ANNALS__V1__EXPECTATION__EXPECT_NO_STREAM
                                      : ANNALS__V1__EXPECTATION__EXPECT_VERSION;
            sa[i].expected_version = (uint64_t)ver[i];
            ops[i] = (struct log_op){.append = &rq[i], .streams = &res[i]};
        }
        rc = b == 1 ? log_commit_durable(env, ops, b, NULL) : log_commit(env, ops, b, NULL);
        if (rc) {
            die("log_commit", rc, ops[0].detail);
        }
        for (unsigned i = 0; i < b; i++) {
            if (ops[i].rc) {
                die("append", ops[i].rc, ops[i].detail);
            }
            ver[i]++;
        }
        /* as annalsd's writer does between commits (log.h) */
        while (log_prealloc_due(env)) {
            log_prealloc(env);
        }
    }
    log_sync(env);
    double secs = bu_now() - t0;
    log_close(env);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_server: could not remove %s\n", dir);
    }
    free(sa);
    free(sp);
    free(rq);
    free(ops);
    free(res);
    free(names);
    free(ver);
    return (double)(commits * b) / secs;
}

/* ---- TLS ---- */

/* Runs A, B, C (and a read of what C wrote) again over TLS and prints them
 * beside the plaintext figures. */
static void run_tls(const char *base, int clients, uint64_t count, struct result **plain,
                    const struct result *plain_read)
{
    char dir[300];
    char cmd[2048];
    static char cert[400], key[400], ca[400];
    snprintf(dir, sizeof(dir), "%s/annals-bench-tls-XXXXXX", base);
    if (!mkdtemp(dir)) {
        die("mkdtemp", AN_EIO, dir);
    }
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null && "
             "printf 'subjectAltName=IP:127.0.0.1\\n' > srv.ext && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null && "
             "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out srv.pem -days 2 -extfile srv.ext 2>/dev/null",
             dir);
    if (system(cmd) != 0) {
        die("making TLS certificates with openssl", AN_EIO, dir);
    }
    snprintf(cert, sizeof(cert), "%s/srv.pem", dir);
    snprintf(key, sizeof(key), "%s/srv.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    static const char *flags[5];
    flags[0] = "--tls-cert";
    flags[1] = cert;
    flags[2] = "--tls-key";
    flags[3] = key;
    flags[4] = NULL;
    g_flags = flags;
    g_opts = (struct an_client_opts){.tls_ca_file = ca};
    g_copts = &g_opts;
    fprintf(stderr, "bench: the write phases again over TLS (ECDSA P-256 certificate)\n");
    struct result a = {.name = "TLS unary, 1 client"};
    struct result b = {.name = "TLS unary, N clients"};
    static char c_name[48];
    snprintf(c_name, sizeof(c_name), "TLS AppendStream, %u in flight", g_inflight);
    struct result c = {.name = c_name};
    struct result d = {.name = "TLS ReadAll over loopback"};
    run_unary(base, &a, 1, count / 20 < 500 ? 500 : count / 20, false);
    run_unary(base, &b, clients, count, false);
    run_stream(base, &c, count, 0, &d);
    printf("\n%-32s %12s %9s %9s %14s %14s\n", "over TLS", "events/s", "p50 ms", "p99 ms",
           "plaintext ev/s", "TLS/plaintext");
    struct result *rs[] = {&a, &b, &c};
    for (int i = 0; i < 3; i++) {
        printf("%-32s %12.0f %9.3f %9.3f %14.0f %13.2fx\n", rs[i]->name, rs[i]->events_s,
               rs[i]->p50_ms, rs[i]->p99_ms, plain[i]->events_s,
               rs[i]->events_s / plain[i]->events_s);
    }
    printf("%-32s %12.0f %9s %9s %14.0f %13s\n", d.name, d.events_s, "", "", plain_read->events_s,
           "(fewer events)");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_server: could not remove %s\n", dir);
    }
}

/* ---- main ---- */

static void usage(void)
{
    printf("usage: bench_server [--quick] [--clients N] [--count N] [--read N] [--dir DIR] "
           "[--tls] [--no-grpc-floor]\n"
           "  --clients N  concurrent unary clients in phase B (default 64)\n"
           "  --count N    appends per write phase (default 60000; A uses N/20)\n"
           "  --read N     events read back by ReadAll (default 1000000)\n"
           "  --dir DIR    where temp data dirs go (default /var/tmp)\n"
           "  --tls        then the same write phases and a read over TLS (certificates made\n"
           "               with the openssl command), with the ratio TLS / plaintext\n"
           "  --no-grpc-floor  skip the Health/Check phases (gRPC alone, 1 and N clients)\n"
           "  --inflight N     appends in flight in the AppendStream phase (default 64;\n"
           "               the target is set at 64)\n"
           "  --phases LIST    which write phases to run, of abc (default abc): a unary\n"
           "               1 client, b unary N clients, c AppendStream and ReadAll\n"
           "  --quick      tiny sizes, for a smoke run\n");
}

int main(int argc, char **argv)
{
    int clients = 64;
    uint64_t count = 60000;
    uint64_t read_n = 1000000;
    const char *base = "/var/tmp";
    bool tls = false;
    bool grpc_floor = true;
    const char *phases = "abc";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--quick") == 0) {
            count = 2000;
            read_n = 20000;
            clients = 8;
        } else if (strcmp(argv[i], "--clients") == 0 && v) {
            clients = atoi(v);
            i++;
        } else if (strcmp(argv[i], "--count") == 0 && v) {
            count = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--read") == 0 && v) {
            read_n = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            base = v;
            i++;
        } else if (strcmp(argv[i], "--tls") == 0) {
            tls = true;
        } else if (strcmp(argv[i], "--inflight") == 0 && v && atoi(v) >= 1 && atoi(v) <= 1024) {
            g_inflight = (unsigned)atoi(v);
            i++;
        } else if (strcmp(argv[i], "--no-grpc-floor") == 0) {
            grpc_floor = false;
        } else if (strcmp(argv[i], "--phases") == 0 && v && v[strspn(v, "abc")] == 0 && *v) {
            phases = v;
            i++;
        } else {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (clients < 1 || clients > 1024 || count < 100) {
        fprintf(stderr, "bench_server: --clients 1..1024 and --count >= 100\n");
        return 2;
    }
    memset(payload, 'x', sizeof(payload));
    memcpy(payload, "{\"amount\":42,\"note\":\"", 21);
    payload[EVENT_BYTES - 2] = '"';
    payload[EVENT_BYTES - 1] = '}';
    signal(SIGPIPE, SIG_IGN);

    struct result a = {.name = "unary, 1 client"};
    struct result b = {.name = "unary, N clients"};
    char c_name[40];
    snprintf(c_name, sizeof(c_name), "AppendStream, %u in flight", g_inflight);
    struct result c = {.name = c_name};
    struct result d = {.name = "ReadAll over loopback"};
    struct result ha = {.name = "Health/Check, 1 client"};
    struct result hb = {.name = "Health/Check, N clients"};
    uint64_t count_a = count / 20 < 500 ? 500 : count / 20;
    bool pa = strchr(phases, 'a'), pb = strchr(phases, 'b'), pc = strchr(phases, 'c');
    if (pa) {
        run_unary(base, &a, 1, count_a, false);
    }
    if (pb) {
        run_unary(base, &b, clients, count, false);
    }
    if (pc) {
        run_stream(base, &c, count, read_n, &d);
    }
    if (grpc_floor) {
        /* the same unary calls without the writer and the disk: what gRPC,
         * libannals and the server's dispatch cost on these cores */
        run_unary(base, &ha, 1, count_a, true);
        run_unary(base, &hb, clients, count, true);
    }
    fprintf(stderr, "bench: the engine in process at the same batch sizes\n");
    double ea = pa ? engine_rate(base, a.batch, count_a) : 0;
    double eb = pb ? engine_rate(base, b.batch, count) : 0;
    double ec = pc ? engine_rate(base, c.batch, count) : 0;

    printf("\n%-30s %12s %9s %9s %9s %10s %14s %7s\n", "phase", "events/s", "p50 ms", "p99 ms",
           "p99.9 ms", "mean batch", "engine ev/s", "ratio");
    struct result *rs[] = {&a, &b, &c};
    double eng[] = {ea, eb, ec};
    for (int i = 0; i < 3; i++) {
        if (eng[i] == 0) {
            continue; /* not run */
        }
        printf("%-30s %12.0f %9.3f %9.3f %9.3f %10.1f %14.0f %6.2fx\n", rs[i]->name,
               rs[i]->events_s, rs[i]->p50_ms, rs[i]->p99_ms, rs[i]->p999_ms, rs[i]->batch,
               eng[i], rs[i]->events_s / eng[i]);
    }
    if (pc) {
        printf("%-30s %12.0f\n", d.name, d.events_s);
    }
    if (grpc_floor) {
        struct result *hs[] = {&ha, &hb};
        for (int i = 0; i < 2; i++) {
            printf("%-30s %12.0f %9.3f %9.3f %9.3f   (calls/s; no writer, no disk)\n",
                   hs[i]->name, hs[i]->events_s, hs[i]->p50_ms, hs[i]->p99_ms, hs[i]->p999_ms);
        }
    }
    if (pa && pb && pc) {
        printf("\ntargets: unary N clients >= 0.60x the engine at its batch (%.2fx); "
               "AppendStream >= 60000 ev/s, 2x Redis AOF-always (%.0f); 1 client p50 <= 0.5 ms "
               "(%.3f); ReadAll >= 1000000 ev/s (%.0f)\n",
               b.events_s / eb, c.events_s, a.p50_ms, d.events_s);
    }
    if (grpc_floor && pa && pb) {
        printf("gRPC alone (Health/Check): N clients reach %.0f calls/s, so unary appends can "
               "reach at most %.2fx the engine at their batch; they reach %.2fx of gRPC alone. "
               "1 client: a call's round trip is %.3f ms of the append's %.3f ms (p50)\n",
               hb.events_s, hb.events_s / eb, b.events_s / hb.events_s, ha.p50_ms, a.p50_ms);
    }
    printf("(N = %d clients; %llu appends per write phase; %d-byte events)\n", clients,
           (unsigned long long)count, EVENT_BYTES);
    if (tls && pa && pb && pc) {
        run_tls(base, clients, count, rs, &d);
    }
    return 0;
}

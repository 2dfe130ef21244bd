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
#include "log.h"

#define EVENT_BYTES 200

static char payload[EVENT_BYTES];

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, int rc, const char *detail)
{
    fprintf(stderr, "bench_server: %s: %s (%s)\n", what, an_strerror(rc), detail ? detail : "");
    exit(1);
}

/* ---- a server of our own ---- */

struct server {
    char dir[256];
    char addr[64];
    pid_t pid;
};

static const char *annalsd_path(void)
{
    const char *p = getenv("ANNALSD");
    return p ? p : ANNALSD_PATH;
}

static void server_start(struct server *s, const char *base)
{
    char data[300];
    char log[300];
    snprintf(s->dir, sizeof(s->dir), "%s/annals-bench-XXXXXX", base);
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "bench_server: mkdtemp in %s: %s\n", base, strerror(errno));
        exit(1);
    }
    snprintf(data, sizeof(data), "%s/data", s->dir);
    snprintf(log, sizeof(log), "%s/annalsd.log", s->dir);
    s->pid = fork();
    if (s->pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execl(annalsd_path(), annalsd_path(), "--data", data, "--listen", "127.0.0.1:0",
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(log, "r");
        char line[2048];
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, "msg=\"started\"");
            const char *q = p ? strstr(p, " port=") : NULL;
            if (q) {
                snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", atoi(q + 6));
                fclose(f);
                return;
            }
        }
        if (f) {
            fclose(f);
        }
        usleep(10000);
    }
    fprintf(stderr, "bench_server: annalsd (%s) did not start; see %s\n", annalsd_path(), log);
    exit(1);
}

/* Stops the server; returns the writer's mean batch from its totals line. */
static double server_stop(struct server *s)
{
    char log[300];
    char line[2048];
    double batch = 0;
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    snprintf(log, sizeof(log), "%s/annalsd.log", s->dir);
    FILE *f = fopen(log, "r");
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "msg=\"totals\"");
        const char *q = p ? strstr(p, "mean_batch=") : NULL;
        if (q) {
            batch = atof(q + 11);
        }
    }
    if (f) {
        fclose(f);
    }
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_server: could not remove %s\n", s->dir);
    }
    return batch;
}

/* ---- latencies ---- */

struct lat {
    uint32_t *us;
    size_t n;
    size_t cap;
};

static void lat_add(struct lat *l, double seconds)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->us = realloc(l->us, l->cap * sizeof(*l->us));
    }
    double us = seconds * 1e6;
    l->us[l->n++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(struct lat *l, double p)
{
    if (!l->n) {
        return 0;
    }
    size_t i = (size_t)(p * (double)(l->n - 1));
    return l->us[i] / 1000.0;
}

struct result {
    const char *name;
    double events_s;
    double p50_ms;
    double p99_ms;
    double p999_ms;
    double batch;
};

static void finish(struct result *r, struct lat *l, uint64_t events, double secs)
{
    qsort(l->us, l->n, sizeof(*l->us), cmp_u32);
    r->events_s = (double)events / secs;
    r->p50_ms = pct(l, 0.50);
    r->p99_ms = pct(l, 0.99);
    r->p999_ms = pct(l, 0.999);
    free(l->us);
}

/* ---- unary clients ---- */

struct uclient {
    const char *addr;
    int index;
    uint64_t count;
    struct lat lat;
};

static void *unary_main(void *arg)
{
    struct uclient *u = arg;
    an_client *c;
    char stream[32];
    struct an_error err;
    if (an_connect(u->addr, NULL, &c)) {
        die("connect", AN_EUNAVAIL, u->addr);
    }
    snprintf(stream, sizeof(stream), "bench-%d", u->index);
    for (uint64_t i = 0; i < u->count; i++) {
        struct an_event e = {.type = "Deposited", .data = payload, .data_len = EVENT_BYTES,
                             .content_type = "application/json"};
        struct an_stream_append sa = {.stream = stream,
                                      .expect = i ? AN_EXPECT_VERSION : AN_EXPECT_NO_STREAM,
                                      .expected_version = i - 1,
                                      .events = &e,
                                      .n_events = 1};
        double t0 = now_s();
        int rc = an_append(c, &sa, 1, NULL, &err);
        lat_add(&u->lat, now_s() - t0);
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

static void run_unary(const char *base, struct result *r, int clients, uint64_t total)
{
    struct server s;
    struct uclient *u = calloc((size_t)clients, sizeof(*u));
    pthread_t *t = calloc((size_t)clients, sizeof(*t));
    struct lat all = {0};
    server_start(&s, base);
    fprintf(stderr, "bench: %s: %d clients, %llu appends\n", r->name, clients,
            (unsigned long long)total);
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        u[i] = (struct uclient){.addr = s.addr, .index = i, .count = total / (uint64_t)clients};
        pthread_create(&t[i], NULL, unary_main, &u[i]);
    }
    uint64_t done = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(t[i], NULL);
        done += u[i].count;
        for (size_t k = 0; k < u[i].lat.n; k++) {
            lat_add(&all, u[i].lat.us[k] / 1e6);
        }
        free(u[i].lat.us);
    }
    double secs = now_s() - t0;
    r->batch = server_stop(&s);
    finish(r, &all, done, secs);
    free(u);
    free(t);
}

/* ---- the appender ---- */

struct astate {
    double *sent;               /* submit time by correlation id */
    struct lat lat;
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
        lat_add(&a->lat, now_s() - a->sent[corr]);
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
    double t0 = now_s();
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
            st->sent[i + 1] = now_s();
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
    return now_s() - t0;
}

static void run_stream(const char *base, struct result *r, uint64_t total, uint64_t read_n,
                       struct result *rr)
{
    struct server s;
    an_client *c;
    struct astate st = {.sent = calloc(total + 1, sizeof(double))};
    pthread_mutex_init(&st.mu, NULL);
    server_start(&s, base);
    if (an_connect(s.addr, NULL, &c)) {
        die("connect", AN_EUNAVAIL, s.addr);
    }
    fprintf(stderr, "bench: %s: %llu appends, 64 in flight\n", r->name,
            (unsigned long long)total);
    double secs = stream_load(c, total, 1, 64, &st, "stream");
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
    double t0 = now_s();
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
    double rsecs = now_s() - t0;
    if (rc) {
        die("read all", rc, err.detail);
    }
    an_iter_free(it);
    rr->events_s = (double)n / rsecs;
    an_close(c);
    r->batch = server_stop(&s);
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
    double t0 = now_s();
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
    }
    log_sync(env);
    double secs = now_s() - t0;
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

/* ---- main ---- */

static void usage(void)
{
    printf("usage: bench_server [--quick] [--clients N] [--count N] [--read N] [--dir DIR]\n"
           "  --clients N  concurrent unary clients in phase B (default 64)\n"
           "  --count N    appends per write phase (default 60000; A uses N/20)\n"
           "  --read N     events read back by ReadAll (default 1000000)\n"
           "  --dir DIR    where temp data dirs go (default /var/tmp)\n"
           "  --quick      tiny sizes, for a smoke run\n");
}

int main(int argc, char **argv)
{
    int clients = 64;
    uint64_t count = 60000;
    uint64_t read_n = 1000000;
    const char *base = "/var/tmp";
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
    struct result c = {.name = "AppendStream, 64 in flight"};
    struct result d = {.name = "ReadAll over loopback"};
    run_unary(base, &a, 1, count / 20 < 500 ? 500 : count / 20);
    run_unary(base, &b, clients, count);
    run_stream(base, &c, count, read_n, &d);
    fprintf(stderr, "bench: the engine in process at the same batch sizes\n");
    double ea = engine_rate(base, a.batch, count / 20 < 500 ? 500 : count / 20);
    double eb = engine_rate(base, b.batch, count);
    double ec = engine_rate(base, c.batch, count);

    printf("\n%-30s %12s %9s %9s %9s %10s %14s %7s\n", "phase", "events/s", "p50 ms", "p99 ms",
           "p99.9 ms", "mean batch", "engine ev/s", "ratio");
    struct result *rs[] = {&a, &b, &c};
    double eng[] = {ea, eb, ec};
    for (int i = 0; i < 3; i++) {
        printf("%-30s %12.0f %9.3f %9.3f %9.3f %10.1f %14.0f %6.2fx\n", rs[i]->name,
               rs[i]->events_s, rs[i]->p50_ms, rs[i]->p99_ms, rs[i]->p999_ms, rs[i]->batch,
               eng[i], rs[i]->events_s / eng[i]);
    }
    printf("%-30s %12.0f\n", d.name, d.events_s);
    printf("\ntargets: unary N clients >= 0.60x the engine at its batch (%.2fx); "
           "AppendStream >= 60000 ev/s, 2x Redis AOF-always (%.0f); 1 client p50 <= 0.5 ms "
           "(%.3f); ReadAll >= 1000000 ev/s (%.0f)\n",
           b.events_s / eb, c.events_s, a.p50_ms, d.events_s);
    printf("(N = %d clients; %llu appends per write phase; %d-byte events)\n", clients,
           (unsigned long long)count, EVENT_BYTES);
    return 0;
}

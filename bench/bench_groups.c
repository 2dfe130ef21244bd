/*
 * bench_groups.c - consumer groups: delivered-and-acked events/s with 1, 4
 * and 16 consumers at prefetch 16 and 256, and with ordered_per_stream;
 * the server's RSS per group.
 *
 *   build/bench/bench_groups [--events N] [--streams S] [--limit SECONDS]
 *
 * One annalsd on a temp dir. The log is filled once with N events (~200
 * bytes, over S streams, through AppendStream). Each measurement creates a
 * fresh group over the whole log and starts C consumer threads, each with
 * its own connection and an_consumer, which ack every delivery at once;
 * the figure is events acked / seconds from the first join to the last
 * ack (the log is already written: this is the group's own rate). Every
 * measurement stops at N events or --limit seconds, whichever comes first.
 * Then 1000 idle groups are created to measure RSS per group.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "annals.h"
#include "bench_util.h"

static const char *addr;
static uint64_t n_events = 200000;
static unsigned n_streams = 64;
static double limit_s = 20;

#define IDLE_GROUPS 1000

/* ---- filling the log ---- */

static atomic_ullong fill_ok, fill_err;

static void fill_cb(void *arg, uint64_t id, int rc, const struct an_append_result *res,
                    const struct an_error *err)
{
    (void)arg, (void)id, (void)res, (void)err;
    atomic_fetch_add(rc ? &fill_err : &fill_ok, 1);
}

static void fill(an_client *c)
{
    an_appender *a;
    int rc = an_appender_open(c, 256, fill_cb, NULL, &a);
    if (rc) bu_die("bench_groups", "appender", rc, NULL);
    char data[200];
    memset(data, 'x', sizeof(data));
    memcpy(data, "{\"pad\":\"", 8);
    memcpy(data + sizeof(data) - 2, "\"}", 2);
    double t0 = bu_now();
    for (uint64_t i = 0; i < n_events; i++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "order-%u", (unsigned)(i % n_streams));
        struct an_event e = {.type = "OrderPlaced", .data = data, .data_len = sizeof(data)};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        if ((rc = an_appender_submit(a, &sa, 1, NULL))) bu_die("bench_groups", "submit", rc, NULL);
        if ((i + 1) % 50000 == 0) {
            fprintf(stderr, "bench_groups: filling %llu/%llu (%.0f ev/s)\n",
                    (unsigned long long)(i + 1), (unsigned long long)n_events,
                    (double)(i + 1) / (bu_now() - t0));
        }
    }
    an_appender_close(a);
    if (atomic_load(&fill_err)) {
        fprintf(stderr, "bench_groups: %llu appends failed\n",
                (unsigned long long)atomic_load(&fill_err));
        exit(1);
    }
}

/* ---- one measurement ---- */

struct run {
    const char *group;
    uint32_t prefetch;
    atomic_ullong acked;
    atomic_ullong redelivered;
    atomic_bool stop;
    double deadline;
};

static void *consumer_main(void *arg)
{
    struct run *r = arg;
    an_client *c;
    int rc = an_connect(addr, NULL, &c);
    if (rc) bu_die("bench_groups", "connect", rc, NULL);
    an_consumer *k;
    if ((rc = an_consumer_open(c, r->group, r->prefetch, &k))) {
        bu_die("bench_groups", "consumer", rc, NULL);
    }
    while (!atomic_load(&r->stop)) {
        struct an_delivery d;
        struct an_error err;
        rc = an_consumer_next(k, 50, &d, &err);
        if (rc < 0) bu_die("bench_groups", "consume", rc, err.detail);
        if (rc == 0) {
            if (bu_now() > r->deadline) break;
            continue;
        }
        an_consumer_ack(k, d.event->global_position);
        if (d.attempt > 1) atomic_fetch_add(&r->redelivered, 1);
        if (atomic_fetch_add(&r->acked, 1) + 1 >= n_events) {
            atomic_store(&r->stop, true);
        }
    }
    an_consumer_flush(k, NULL);
    an_consumer_close(k);
    an_close(c);
    return NULL;
}

static double measure(an_client *c, unsigned consumers, uint32_t prefetch, bool ordered,
                      unsigned *seq)
{
    char name[32];
    snprintf(name, sizeof(name), "bench-%u", (*seq)++);
    struct an_group_def d = {.name = name, .ordered_per_stream = ordered};
    struct an_error err;
    int rc = an_group_create(c, &d, NULL, &err);
    if (rc) bu_die("bench_groups", "create group", rc, err.detail);
    struct run r = {.group = name, .prefetch = prefetch};
    pthread_t t[64];
    double t0 = bu_now();
    r.deadline = t0 + limit_s;
    for (unsigned i = 0; i < consumers; i++) {
        pthread_create(&t[i], NULL, consumer_main, &r);
    }
    uint64_t last = 0;
    while (!atomic_load(&r.stop) && bu_now() < r.deadline) {
        usleep(200000);
        uint64_t now = atomic_load(&r.acked);
        if (now / 50000 != last / 50000) {
            fprintf(stderr, "bench_groups:   %s %llu acked (%.0f ev/s)\n", name,
                    (unsigned long long)now, (double)now / (bu_now() - t0));
        }
        last = now;
    }
    atomic_store(&r.stop, true);
    double secs = bu_now() - t0;
    for (unsigned i = 0; i < consumers; i++) {
        pthread_join(t[i], NULL);
    }
    uint64_t acked = atomic_load(&r.acked);
    if (atomic_load(&r.redelivered)) {
        fprintf(stderr, "bench_groups:   note: %llu redeliveries\n",
                (unsigned long long)atomic_load(&r.redelivered));
    }
    return (double)acked / secs;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            n_events = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--streams") && i + 1 < argc) {
            n_streams = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            limit_s = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_groups [--events N] [--streams S] [--limit SECONDS]\n");
            return 2;
        }
    }
    if (!n_events || !n_streams) {
        fprintf(stderr, "bench_groups: --events and --streams must be > 0\n");
        return 2;
    }
    struct bu_server srv;
    bu_server_start(&srv, "/tmp", NULL);
    addr = srv.addr;
    an_client *c;
    int rc = an_connect(addr, NULL, &c);
    if (rc) bu_die("bench_groups", "connect", rc, NULL);
    fill(c);

    static const struct {
        unsigned consumers;
        uint32_t prefetch;
        bool ordered;
    } cases[] = {
        {1, 16, false},  {4, 16, false},  {16, 16, false},
        {1, 256, false}, {4, 256, false}, {16, 256, false},
        {4, 256, true},  {16, 256, true},
    };
    double rate[sizeof(cases) / sizeof(cases[0])];
    unsigned seq = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fprintf(stderr, "bench_groups: %u consumers, prefetch %u%s\n", cases[i].consumers,
                cases[i].prefetch, cases[i].ordered ? ", ordered per stream" : "");
        rate[i] = measure(c, cases[i].consumers, cases[i].prefetch, cases[i].ordered, &seq);
    }
    long rss_before = bu_server_rss_kib(&srv);
    for (int i = 0; i < IDLE_GROUPS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "idle-%d", i);
        struct an_group_def d = {.name = name};
        if ((rc = an_group_create(c, &d, NULL, NULL))) bu_die("bench_groups", "idle", rc, NULL);
    }
    long rss_after = bu_server_rss_kib(&srv);

    printf("\nconsumer groups: %llu events of ~200 bytes over %u streams, acked at once\n\n",
           (unsigned long long)n_events, n_streams);
    printf("| consumers | prefetch | ordered per stream | acked events/s |\n");
    printf("|---:|---:|:---:|---:|\n");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        printf("| %u | %u | %s | %.0f |\n", cases[i].consumers, cases[i].prefetch,
               cases[i].ordered ? "yes" : "no", rate[i]);
    }
    printf("\nserver RSS: %ld KiB after the runs; %d idle groups added %ld KiB (%.1f KiB "
           "each)\n",
           rss_before, IDLE_GROUPS, rss_after - rss_before,
           (double)(rss_after - rss_before) / IDLE_GROUPS);
    an_close(c);
    bu_server_stop(&srv);
    return 0;
}

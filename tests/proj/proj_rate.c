/*
 * proj_rate.c - a quick measurement, not a test (meson does not run it):
 * fills a log in a temp dir with N events (default 200 000; 100 appends of
 * 10 events per commit, streams acct-0..acct-9999, 4 types, small JSON),
 * then for COUNT $type, STREAM_STATE and COUNT $type + sum, one at a time:
 * the catch-up rate of a new projection, the rate of a Rebuild (until the
 * swap), and for STREAM_STATE the GetView latency (latest and as of a
 * random position, p50/p99 over 50 000 calls). Prints one line each.
 *
 *   build-p/tests/proj/proj_rate [N [batch_events]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proj.h"

#define APPENDS 100
#define EVENTS 10
#define CALLS 50000

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

static const char *const TYPES[] = {"Opened", "Deposited", "Withdrawn", "Closed"};

/* One commit of APPENDS appends of EVENTS events. */
static int fill_batch(log_env *env, unsigned *seed)
{
    static struct log_op ops[APPENDS];
    static Annals__V1__AppendRequest reqs[APPENDS];
    static Annals__V1__StreamAppend sa[APPENDS];
    static Annals__V1__StreamAppend *sap[APPENDS];
    static Annals__V1__EventData ev[APPENDS][EVENTS];
    static Annals__V1__EventData *evp[APPENDS][EVENTS];
    static char names[APPENDS][32];
    static char data[APPENDS][EVENTS][64];
    static struct log_stream_result sr[APPENDS];
    for (int i = 0; i < APPENDS; i++) {
        reqs[i] = (Annals__V1__AppendRequest)ANNALS__V1__APPEND_REQUEST__INIT;
        sa[i] = (Annals__V1__StreamAppend)ANNALS__V1__STREAM_APPEND__INIT;
        snprintf(names[i], sizeof(names[i]), "acct-%d", rand_r(seed) % 10000);
        sa[i].stream = names[i];
        sa[i].n_events = EVENTS;
        sa[i].events = evp[i];
        for (int j = 0; j < EVENTS; j++) {
            ev[i][j] = (Annals__V1__EventData)ANNALS__V1__EVENT_DATA__INIT;
            ev[i][j].type = (char *)TYPES[rand_r(seed) % 4];
            int n = snprintf(data[i][j], sizeof(data[i][j]), "{\"amount\": %d, \"n%d\": true}",
                             rand_r(seed) % 1000, j);
            ev[i][j].data.data = (uint8_t *)data[i][j];
            ev[i][j].data.len = (size_t)n;
            evp[i][j] = &ev[i][j];
        }
        sap[i] = &sa[i];
        reqs[i].n_streams = 1;
        reqs[i].streams = &sap[i];
        ops[i] = (struct log_op){.kind = LOG_OP_APPEND, .append = &reqs[i], .streams = &sr[i]};
    }
    return log_commit(env, ops, APPENDS, NULL) || log_sync(env) ? -1 : 0;
}

static void latency(proj_mgr *mgr, uint64_t head, unsigned *seed)
{
    static double lat[CALLS];
    char key[32];
    for (int as_of = 0; as_of < 2; as_of++) {
        for (int i = 0; i < CALLS; i++) {
            snprintf(key, sizeof(key), "acct-%d", rand_r(seed) % 10000);
            struct proj_read q = {.has_as_of = as_of, .as_of = 1 + (uint64_t)rand_r(seed) % head};
            Annals__V1__ViewEntry *e = NULL;
            double t = now_s();
            if (proj_get(mgr, "state", key, strlen(key), &q, &e) != 0) {
                fprintf(stderr, "proj_get failed\n");
                exit(1);
            }
            lat[i] = now_s() - t;
            proj_entry_free(e);
        }
        qsort(lat, CALLS, sizeof(*lat), cmp_double);
        printf("GetView %-7s p50 %.1f us  p99 %.1f us\n", as_of ? "as-of" : "latest",
               lat[CALLS / 2] * 1e6, lat[CALLS * 99 / 100] * 1e6);
    }
}

static void wait_rebuilt(proj_mgr *mgr, const char *name)
{
    for (;;) {
        Annals__V1__ProjectionStatus *st = NULL;
        if (proj_status(mgr, name, &st) != 0) {
            exit(1);
        }
        bool done = st->state != ANNALS__V1__PROJECTION_STATE__REBUILDING;
        proj_status_free(st);
        if (done) {
            return;
        }
        usleep(2000);
    }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    char dir[] = "/tmp/annals-proj-rate-XXXXXX";
    char logdir[64];
    char pdir[64];
    char detail[PROJ_DETAIL_MAX];
    log_env *env = NULL;
    proj_mgr *mgr = NULL;
    unsigned seed = 1;
    if (!mkdtemp(dir)) {
        return 1;
    }
    snprintf(logdir, sizeof(logdir), "%s/log", dir);
    snprintf(pdir, sizeof(pdir), "%s/projections", dir);
    struct log_cfg lc = {.dir = logdir};
    if (log_open(&lc, &env, detail) != 0) {
        fprintf(stderr, "log_open: %s\n", detail);
        return 1;
    }
    double t = now_s();
    for (size_t done = 0; done < n; done += APPENDS * EVENTS) {
        if (fill_batch(env, &seed)) {
            fprintf(stderr, "append failed\n");
            return 1;
        }
    }
    uint64_t head = log_head(env);
    printf("log: %llu events appended in %.2f s\n", (unsigned long long)head, now_s() - t);
    struct proj_cfg pc = {.dir = pdir, .batch_events = argc > 2 ? (unsigned)atoi(argv[2]) : 0};
    if (proj_open(&pc, env, &mgr, detail) != 0) {
        fprintf(stderr, "proj_open: %s\n", detail);
        return 1;
    }
    const char *names[] = {"count", "state", "count-sum"};
    for (int k = 0; k < 3; k++) {
        Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
        d.name = (char *)names[k];
        d.kind = k == 1 ? ANNALS__V1__PROJECTION_KIND__STREAM_STATE
                        : ANNALS__V1__PROJECTION_KIND__COUNT;
        d.key = k == 1 ? "" : "$type";
        d.sum = k == 2 ? "/amount" : "";
        t = now_s();
        Annals__V1__ViewEntry *e = NULL;
        struct proj_read q = {.min_position = head};
        if (proj_create(mgr, &d, NULL, detail) != 0 ||
            proj_get(mgr, names[k], "x", 1, &q, &e) != 0) {
            fprintf(stderr, "%s: %s\n", names[k], detail);
            return 1;
        }
        proj_entry_free(e);
        double s = now_s() - t;
        printf("%-10s catch-up %llu events in %.2f s: %.0f events/s\n", names[k],
               (unsigned long long)head, s, (double)head / s);
        if (k == 1) {
            latency(mgr, head, &seed);
        }
        t = now_s();
        if (proj_rebuild(mgr, names[k], NULL, detail) != 0) {
            return 1;
        }
        wait_rebuilt(mgr, names[k]);
        s = now_s() - t;
        printf("%-10s rebuild  %llu events in %.2f s: %.0f events/s\n", names[k],
               (unsigned long long)head, s, (double)head / s);
        proj_delete(mgr, names[k], NULL); /* one at a time */
    }
    proj_close(mgr);
    log_close(env);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}

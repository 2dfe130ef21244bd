/*
 * bench_proj.c - projections: how fast views are built and rebuilt, how a
 * lookup's cost grows with history, and how far views lag behind writers.
 *
 *   build/bench/bench_proj [--quick] [--sizes 100000,1000000,10000000]
 *                          [--lookups N] [--writers 64] [--secs 10] [--dir DIR]
 *
 * A. The engine in process (projections/proj.h on a log made with
 *    log_commit, no gRPC). The log grows in steps to each --sizes value:
 *    events of ~100 bytes of JSON on 10 000 streams (acct-NNNNN), four
 *    types, 1000 appends per commit. A COUNT projection keyed by $stream
 *    follows it, so at 10 M events each of its 10 000 keys has ~1 000
 *    versions. At each size, once the view has caught up: --lookups
 *    GetViews of a random key now ("latest") and of a random key as of a
 *    random position ("as-of"), each timed alone. A lookup is one B-tree
 *    seek and one step back whatever the number of versions, so the
 *    figures should grow with log n (the tree's depth), not with n.
 *    At the size nearest 1 M (or the largest below it), a rebuild of a
 *    COUNT ($type) and of a STREAM_STATE projection is timed from
 *    proj_rebuild until the fresh view is swapped in.
 * B. annalsd over gRPC: a COUNT ($type) projection while --writers unary
 *    clients append for --secs; the lag (log head - checkpoint, from
 *    Projections.Get) is sampled every 50 ms. Then GetView over loopback,
 *    latest and as of random positions.
 * Progress lines go to stderr, the tables to stdout.
 */
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "annals.h"
#include "annals/v1/projections.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "bench_util.h"
#include "log.h"
#include "proj.h"

#define STREAMS 10000u
#define PER_COMMIT 1000u
#define MAX_SIZES 8

static const char *const types[] = {"Deposited", "Deposited", "Withdrawn", "Audited"};

static void die(const char *what, int rc, const char *detail)
{
    bu_die("bench_proj", what, rc, detail);
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* ---- A. the engine in process ---- */

/* Appends events to the log until it holds `upto`, PER_COMMIT per commit. */
static void grow(log_env *log, proj_mgr *mgr, uint64_t upto)
{
    Annals__V1__EventData ev[PER_COMMIT];
    Annals__V1__EventData *evp[PER_COMMIT];
    Annals__V1__StreamAppend sa[PER_COMMIT];
    Annals__V1__StreamAppend *sap[PER_COMMIT];
    Annals__V1__AppendRequest req[PER_COMMIT];
    struct log_stream_result res[PER_COMMIT];
    struct log_op ops[PER_COMMIT];
    char names[PER_COMMIT][16];
    char data[PER_COMMIT][96];
    uint64_t head = log_head(log);
    uint64_t start = head;
    double t0 = bu_now();
    double last = t0;
    while (head < upto) {
        size_t n = upto - head < PER_COMMIT ? (size_t)(upto - head) : PER_COMMIT;
        for (size_t i = 0; i < n; i++) {
            uint64_t k = head + i;
            snprintf(names[i], sizeof(names[i]), "acct-%05u", (unsigned)(rnd() % STREAMS));
            int len = snprintf(data[i], sizeof(data[i]),
                               "{\"amount\":%u,\"customer\":{\"id\":\"c%03u\"},\"note\":\"bench\"}",
                               (unsigned)(k % 1000), (unsigned)(k % 997));
            ev[i] = (Annals__V1__EventData)ANNALS__V1__EVENT_DATA__INIT;
            ev[i].type = (char *)types[k % 4];
            ev[i].content_type = (char *)"application/json";
            ev[i].data.data = (uint8_t *)data[i];
            ev[i].data.len = (size_t)len;
            evp[i] = &ev[i];
            sa[i] = (Annals__V1__StreamAppend)ANNALS__V1__STREAM_APPEND__INIT;
            sa[i].stream = names[i];
            sa[i].n_events = 1;
            sa[i].events = &evp[i];
            sap[i] = &sa[i];
            req[i] = (Annals__V1__AppendRequest)ANNALS__V1__APPEND_REQUEST__INIT;
            req[i].n_streams = 1;
            req[i].streams = &sap[i];
            ops[i] = (struct log_op){.kind = LOG_OP_APPEND, .append = &req[i], .streams = &res[i]};
        }
        int rc = log_commit(log, ops, n, NULL);
        for (size_t i = 0; !rc && i < n; i++) {
            rc = ops[i].rc;
        }
        if (rc || (rc = log_sync(log))) {
            die("appending to the log", rc, ops[0].detail);
        }
        head = log_head(log);
        proj_notify(mgr, head);
        if (bu_now() - last > 2) {
            last = bu_now();
            fprintf(stderr, "bench: log at %llu events (%.0f ev/s)\n", (unsigned long long)head,
                    (double)(head - start) / (last - t0));
        }
    }
}

static Annals__V1__ProjectionStatus *status_of(proj_mgr *mgr, const char *name)
{
    Annals__V1__ProjectionStatus *st = NULL;
    int rc = proj_status(mgr, name, &st);
    if (rc) {
        die("proj_status", rc, name);
    }
    return st;
}

/* Waits until projection `name` has applied the whole log. */
static void catch_up(proj_mgr *mgr, log_env *log, const char *name)
{
    uint64_t head = log_head(log);
    double t0 = bu_now();
    double last = t0;
    for (;;) {
        Annals__V1__ProjectionStatus *st = status_of(mgr, name);
        uint64_t ck = st->checkpoint;
        bool faulted = st->state == ANNALS__V1__PROJECTION_STATE__FAULTED;
        if (faulted) {
            die("projection faulted", AN_EIO, st->error);
        }
        proj_status_free(st);
        if (ck >= head) {
            return;
        }
        if (bu_now() - last > 2) {
            last = bu_now();
            fprintf(stderr, "bench: %s at %llu of %llu\n", name, (unsigned long long)ck,
                    (unsigned long long)head);
        }
        usleep(2000);
    }
}

static void create(proj_mgr *mgr, const char *name, Annals__V1__ProjectionKind kind,
                   const char *key)
{
    Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
    char detail[PROJ_DETAIL_MAX];
    d.name = (char *)name;
    d.kind = kind;
    d.key = (char *)key;
    int rc = proj_create(mgr, &d, NULL, detail);
    if (rc) {
        die("proj_create", rc, detail);
    }
}

/* Times a rebuild of `name`: events/s of the fresh view. */
static double rebuild_rate(proj_mgr *mgr, log_env *log, const char *name)
{
    char detail[PROJ_DETAIL_MAX];
    uint64_t head = log_head(log);
    double t0 = bu_now();
    double last = t0;
    int rc = proj_rebuild(mgr, name, NULL, detail);
    if (rc) {
        die("proj_rebuild", rc, detail);
    }
    for (;;) {
        Annals__V1__ProjectionStatus *st = status_of(mgr, name);
        bool rebuilding = st->state == ANNALS__V1__PROJECTION_STATE__REBUILDING;
        uint64_t at = st->rebuild_checkpoint;
        if (st->state == ANNALS__V1__PROJECTION_STATE__FAULTED) {
            die("rebuild faulted", AN_EIO, st->error);
        }
        proj_status_free(st);
        if (!rebuilding) {
            break;
        }
        if (bu_now() - last > 2) {
            last = bu_now();
            fprintf(stderr, "bench: rebuilding %s: %llu of %llu (%.0f ev/s)\n", name,
                    (unsigned long long)at, (unsigned long long)head,
                    (double)at / (last - t0));
        }
        usleep(1000);
    }
    return (double)head / (bu_now() - t0);
}

struct lookup_result {
    uint64_t size;
    double latest_p50_us;
    double latest_p99_us;
    double asof_p50_us;
    double asof_p99_us;
    uint64_t found;
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The p-quantile of n nanosecond samples, in microseconds (sorts them). */
static double pct_us(uint32_t *ns, size_t n, double p)
{
    qsort(ns, n, sizeof(*ns), cmp_u32);
    return n ? ns[(size_t)(p * (double)(n - 1))] / 1000.0 : 0;
}

static void lookups(proj_mgr *mgr, log_env *log, unsigned n, struct lookup_result *r)
{
    uint32_t *latest = calloc(n, sizeof(*latest));
    uint32_t *asof = calloc(n, sizeof(*asof));
    uint64_t head = log_head(log);
    if (!latest || !asof) {
        die("allocating samples", AN_ENOMEM, NULL);
    }
    r->size = head;
    r->found = 0;
    for (unsigned i = 0; i < 2 * n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "acct-%05u", (unsigned)(rnd() % STREAMS));
        struct proj_read q = {0};
        if (i & 1) {
            q.has_as_of = true;
            q.as_of = 1 + rnd() % head;
        }
        Annals__V1__ViewEntry *e = NULL;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = proj_get(mgr, "by_stream", key, strlen(key), &q, &e);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc) {
            die("proj_get", rc, key);
        }
        r->found += e->found;
        proj_entry_free(e);
        int64_t ns = (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
        (i & 1 ? asof : latest)[i / 2] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    }
    r->latest_p50_us = pct_us(latest, n, 0.5);
    r->latest_p99_us = pct_us(latest, n, 0.99);
    r->asof_p50_us = pct_us(asof, n, 0.5);
    r->asof_p99_us = pct_us(asof, n, 0.99);
    free(latest);
    free(asof);
}

struct engine_result {
    struct lookup_result look[MAX_SIZES];
    size_t n_sizes;
    uint64_t rebuild_events;
    double count_rate;
    double state_rate;
};

static void run_engine(const char *base, const uint64_t *sizes, size_t n_sizes, unsigned n_look,
                       struct engine_result *r)
{
    char dir[300];
    char sub[400];
    char detail[PROJ_DETAIL_MAX > LOG_DETAIL_MAX ? PROJ_DETAIL_MAX : LOG_DETAIL_MAX];
    snprintf(dir, sizeof(dir), "%s/annals-bench-proj-XXXXXX", base);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_proj: mkdtemp in %s: %s\n", base, strerror(errno));
        exit(1);
    }
    snprintf(sub, sizeof(sub), "%s/log", dir);
    struct log_cfg lc = {.dir = sub};
    log_env *log;
    int rc = log_open(&lc, &log, detail);
    if (rc) {
        die("log_open", rc, detail);
    }
    snprintf(sub, sizeof(sub), "%s/projections", dir);
    struct proj_cfg pc = {.dir = sub};
    proj_mgr *mgr;
    if ((rc = proj_open(&pc, log, &mgr, detail))) {
        die("proj_open", rc, detail);
    }
    create(mgr, "by_stream", ANNALS__V1__PROJECTION_KIND__COUNT, "$stream");
    /* the rebuild is timed at the largest size <= 1 M (else the first) */
    size_t at = 0;
    for (size_t i = 0; i < n_sizes; i++) {
        if (sizes[i] <= 1000000) {
            at = i;
        }
    }
    r->n_sizes = n_sizes;
    for (size_t i = 0; i < n_sizes; i++) {
        fprintf(stderr, "bench: growing the log to %llu events\n", (unsigned long long)sizes[i]);
        grow(log, mgr, sizes[i]);
        catch_up(mgr, log, "by_stream");
        fprintf(stderr, "bench: %u lookups at %llu events\n", 2 * n_look,
                (unsigned long long)sizes[i]);
        lookups(mgr, log, n_look, &r->look[i]);
        if (i == at) {
            create(mgr, "count_type", ANNALS__V1__PROJECTION_KIND__COUNT, "$type");
            create(mgr, "state", ANNALS__V1__PROJECTION_KIND__STREAM_STATE, NULL);
            catch_up(mgr, log, "count_type");
            catch_up(mgr, log, "state");
            r->rebuild_events = log_head(log);
            fprintf(stderr, "bench: rebuilding COUNT over %llu events\n",
                    (unsigned long long)r->rebuild_events);
            r->count_rate = rebuild_rate(mgr, log, "count_type");
            fprintf(stderr, "bench: rebuilding STREAM_STATE over %llu events\n",
                    (unsigned long long)r->rebuild_events);
            r->state_rate = rebuild_rate(mgr, log, "state");
            /* the others need not follow the log further */
            proj_delete(mgr, "count_type", detail);
            proj_delete(mgr, "state", detail);
        }
    }
    proj_close(mgr);
    log_close(log);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_proj: could not remove %s\n", dir);
    }
}

/* ---- B. annalsd over gRPC ---- */

struct writer {
    const char *addr;
    int index;
    double until;
    uint64_t count;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    an_client *c;
    char stream[32];
    struct an_error err;
    if (an_connect(w->addr, NULL, &c)) {
        die("connect", AN_EUNAVAIL, w->addr);
    }
    snprintf(stream, sizeof(stream), "acct-%d", w->index);
    while (bu_now() < w->until) {
        const char *data = "{\"amount\":42,\"customer\":{\"id\":\"c001\"}}";
        struct an_event e = {.type = types[w->count % 4], .data = data, .data_len = strlen(data),
                             .content_type = "application/json"};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        int rc = an_append(c, &sa, 1, NULL, &err);
        if (rc) {
            die("append", rc, err.detail);
        }
        w->count++;
    }
    an_close(c);
    return NULL;
}

struct server_result {
    double appends_s;
    uint64_t lag_p50;
    uint64_t lag_p99;
    uint64_t lag_max;
    uint64_t lag_end;           /* right as the writers stop */
    double catch_up_ms;         /* from then until the checkpoint reaches the head */
    double get_p50_ms;
    double get_p99_ms;
    double asof_p50_ms;
    double asof_p99_ms;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Projections.Get of "count_type": its checkpoint and the head. */
static void proj_lag(grpc_channel *ch, uint64_t *checkpoint, uint64_t *head)
{
    Annals__V1__GetProjectionRequest g = ANNALS__V1__GET_PROJECTION_REQUEST__INIT;
    g.name = (char *)"count_type";
    uint8_t *out;
    size_t len;
    int st = bu_unary(ch, "/annals.v1.Projections/Get", &g.base, &out, &len);
    if (st) {
        die("Projections.Get", AN_EINTERNAL, "status not OK");
    }
    Annals__V1__ProjectionStatus *ps = annals__v1__projection_status__unpack(NULL, len, out);
    free(out);
    if (!ps) {
        die("a malformed ProjectionStatus", AN_ECORRUPT, NULL);
    }
    *checkpoint = ps->checkpoint;
    *head = ps->head;
    annals__v1__projection_status__free_unpacked(ps, NULL);
}

static void run_server(const char *base, int writers, double secs, unsigned n_look,
                       struct server_result *r)
{
    struct bu_server s;
    bu_server_start(&s, base, NULL);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(s.addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
    d.name = (char *)"count_type";
    d.kind = ANNALS__V1__PROJECTION_KIND__COUNT;
    d.key = (char *)"$type";
    uint8_t *out;
    size_t len;
    if (bu_unary(ch, "/annals.v1.Projections/Create", &d.base, &out, &len)) {
        die("Projections.Create", AN_EINTERNAL, "status not OK");
    }
    free(out);
    fprintf(stderr, "bench: %d writers for %.0f s against annalsd, lag sampled every 50 ms\n",
            writers, secs);
    struct writer *w = calloc((size_t)writers, sizeof(*w));
    pthread_t *t = calloc((size_t)writers, sizeof(*t));
    double t0 = bu_now();
    for (int i = 0; i < writers; i++) {
        w[i] = (struct writer){.addr = s.addr, .index = i, .until = t0 + secs};
        pthread_create(&t[i], NULL, writer_main, &w[i]);
    }
    size_t cap = (size_t)(secs * 40) + 16;
    uint64_t *lag = calloc(cap, sizeof(*lag));
    size_t n = 0;
    while (bu_now() < t0 + secs && n < cap) {
        uint64_t ck;
        uint64_t head;
        proj_lag(ch, &ck, &head);
        lag[n++] = head > ck ? head - ck : 0;
        usleep(50000);
    }
    uint64_t total = 0;
    for (int i = 0; i < writers; i++) {
        pthread_join(t[i], NULL);
        total += w[i].count;
    }
    r->appends_s = (double)total / (bu_now() - t0);
    double t1 = bu_now();
    uint64_t ck;
    uint64_t head;
    proj_lag(ch, &ck, &head);
    r->lag_end = head - ck;
    while (ck < head) {
        usleep(1000);
        proj_lag(ch, &ck, &head);
    }
    r->catch_up_ms = (bu_now() - t1) * 1000;
    qsort(lag, n, sizeof(*lag), cmp_u64);
    r->lag_p50 = n ? lag[n / 2] : 0;
    r->lag_p99 = n ? lag[(size_t)(0.99 * (double)(n - 1))] : 0;
    r->lag_max = n ? lag[n - 1] : 0;

    fprintf(stderr, "bench: %u GetView calls over loopback\n", 2 * n_look);
    struct bu_lat latest = {0};
    struct bu_lat asof = {0};
    for (unsigned i = 0; i < 2 * n_look; i++) {
        Annals__V1__GetViewRequest g = ANNALS__V1__GET_VIEW_REQUEST__INIT;
        Annals__V1__AsOf a = ANNALS__V1__AS_OF__INIT;
        g.view = (char *)"count_type";
        g.key = (char *)types[rnd() % 4];
        if (i & 1) {
            a.point_case = ANNALS__V1__AS_OF__POINT_POSITION;
            a.position = 1 + rnd() % head;
            g.as_of = &a;
        }
        double ts = bu_now();
        int st = bu_unary(ch, "/annals.v1.Queries/GetView", &g.base, &out, &len);
        bu_lat_add(i & 1 ? &asof : &latest, bu_now() - ts);
        if (st) {
            die("GetView", AN_EINTERNAL, "status not OK");
        }
        free(out);
    }
    bu_lat_sort(&latest);
    bu_lat_sort(&asof);
    r->get_p50_ms = bu_pct(&latest, 0.5);
    r->get_p99_ms = bu_pct(&latest, 0.99);
    r->asof_p50_ms = bu_pct(&asof, 0.5);
    r->asof_p99_ms = bu_pct(&asof, 0.99);
    bu_lat_free(&latest);
    bu_lat_free(&asof);
    grpc_channel_destroy(ch);
    bu_server_stop(&s);
    free(lag);
    free(w);
    free(t);
}

/* ---- main ---- */

static size_t parse_list(const char *s, uint64_t *out, size_t cap)
{
    size_t n = 0;
    char *end;
    while (*s && n < cap) {
        out[n++] = strtoull(s, &end, 10);
        if (*end && *end != ',') {
            return 0;
        }
        s = *end ? end + 1 : end;
    }
    return n;
}

static void usage(void)
{
    printf("usage: bench_proj [--quick] [--sizes LIST] [--lookups N] [--writers N] [--secs S] "
           "[--dir DIR]\n"
           "  --sizes LIST  log sizes for the engine phase (default 100000,1000000,10000000)\n"
           "  --lookups N   lookups of each kind per size (default 20000)\n"
           "  --writers N   appending clients in the server phase (default 64)\n"
           "  --secs S      seconds of appends in the server phase (default 10)\n"
           "  --dir DIR     where temp data dirs go (default /var/tmp)\n"
           "  --quick       tiny sizes, for a smoke run\n");
}

int main(int argc, char **argv)
{
    uint64_t sizes[MAX_SIZES] = {100000, 1000000, 10000000};
    size_t n_sizes = 3;
    unsigned n_look = 20000;
    int writers = 64;
    double secs = 10;
    const char *base = "/var/tmp";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--quick") == 0) {
            sizes[0] = 5000;
            sizes[1] = 20000;
            n_sizes = 2;
            n_look = 500;
            writers = 4;
            secs = 1;
        } else if (strcmp(argv[i], "--sizes") == 0 && v) {
            n_sizes = parse_list(v, sizes, MAX_SIZES);
            i++;
        } else if (strcmp(argv[i], "--lookups") == 0 && v) {
            n_look = (unsigned)atoi(v);
            i++;
        } else if (strcmp(argv[i], "--writers") == 0 && v) {
            writers = atoi(v);
            i++;
        } else if (strcmp(argv[i], "--secs") == 0 && v) {
            secs = atof(v);
            i++;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            base = v;
            i++;
        } else {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    for (size_t i = 1; i < n_sizes; i++) {
        if (sizes[i] <= sizes[i - 1]) {
            n_sizes = 0;
        }
    }
    if (!n_sizes || n_look < 1 || writers < 1 || writers > 1024 || secs <= 0) {
        fprintf(stderr, "bench_proj: --sizes increasing, --lookups >= 1, --writers 1..1024, "
                        "--secs > 0\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    grpc_init();

    struct engine_result er = {0};
    struct server_result sr = {0};
    run_engine(base, sizes, n_sizes, n_look, &er);
    run_server(base, writers, secs, n_look / 4 ? n_look / 4 : 1, &sr);

    printf("\nA. engine in process: GetView on a COUNT view by $stream (10 000 keys), %u "
           "lookups each\n",
           n_look);
    printf("%-12s %14s %14s %14s %14s %8s\n", "log events", "latest p50 us", "latest p99 us",
           "as-of p50 us", "as-of p99 us", "found");
    for (size_t i = 0; i < er.n_sizes; i++) {
        struct lookup_result *l = &er.look[i];
        printf("%-12llu %14.2f %14.2f %14.2f %14.2f %7.0f%%\n", (unsigned long long)l->size,
               l->latest_p50_us, l->latest_p99_us, l->asof_p50_us, l->asof_p99_us,
               100.0 * (double)l->found / (2.0 * n_look));
    }
    printf("\nrebuild over %llu events: COUNT ($type) %.0f events/s, STREAM_STATE %.0f events/s\n",
           (unsigned long long)er.rebuild_events, er.count_rate, er.state_rate);
    printf("\nB. annalsd, COUNT ($type), %d writers for %.0f s: %.0f appends/s\n", writers, secs,
           sr.appends_s);
    printf("lag (head - checkpoint, events): p50 %llu, p99 %llu, max %llu; at the end %llu, "
           "caught up %.1f ms later\n",
           (unsigned long long)sr.lag_p50, (unsigned long long)sr.lag_p99,
           (unsigned long long)sr.lag_max, (unsigned long long)sr.lag_end, sr.catch_up_ms);
    printf("GetView over loopback: latest p50 %.3f ms p99 %.3f ms; as-of p50 %.3f ms p99 %.3f "
           "ms\n",
           sr.get_p50_ms, sr.get_p99_ms, sr.asof_p50_ms, sr.asof_p99_ms);
    printf("\ntargets: rebuild >= 500000 events/s for COUNT; as-of GetView p99 < 1 ms at 10 M "
           "events\n");
    grpc_shutdown();
    return 0;
}

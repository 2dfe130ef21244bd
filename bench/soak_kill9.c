/*
 * soak_kill9.c - kill -9 under load, many times: nothing acknowledged may
 * be lost, the log may have no gap or duplicate, and views must equal a
 * fold of the log after each restart.
 *
 *   build/bench/soak_kill9 [--trials 200] [--writers 16] [--dir DIR] [--seed N]
 *
 * One data directory for the whole run. Each trial starts annalsd on it,
 * runs --writers writers (half unary Append, half one AppendStream each;
 * every event with its own id, EXPECT_ANY) and a subscriber following the
 * log, kills annalsd with SIGKILL at a random moment (100-600 ms in), then
 * restarts it and checks, through libannals and the server's answers:
 *   - every append a writer saw acknowledged is in the log (by id);
 *   - positions run 1..head with no gap, ids appear once, and each stream's
 *     versions run 0..n-1;
 *   - the subscriber saw positions in order with no gap while it ran;
 *   - the COUNT projection by $stream (created on the first trial), once
 *     caught up, holds for every stream its number of events in the log.
 * It reports the time from restart to the first successful read (p50,
 * p99). Exit 0 when every trial passed, 1 at the first violation (named).
 * A short run (--trials 10) is in CI as a test (tests/meson.build).
 */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "annals.h"
#include "annals/v1/projections.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "bench_util.h"

#define MAX_WRITERS 64
#define MAX_STREAMS 1024

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak_kill9: FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- acknowledged ids ---- */

struct acked {
    uint8_t (*ids)[16];
    size_t n;
    size_t cap;
    pthread_mutex_t mu;
};

static struct acked acked = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void ack_add(const uint8_t id[16])
{
    pthread_mutex_lock(&acked.mu);
    if (acked.n == acked.cap) {
        acked.cap = acked.cap ? acked.cap * 2 : 65536;
        acked.ids = realloc(acked.ids, acked.cap * 16);
        if (!acked.ids) {
            bu_die("soak_kill9", "memory", AN_ENOMEM, NULL);
        }
    }
    memcpy(acked.ids[acked.n++], id, 16);
    pthread_mutex_unlock(&acked.mu);
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

/* ---- writers ---- */

struct writer {
    const char *addr;
    int index;
    int trial;
    bool stream_mode;           /* AppendStream, else unary */
    atomic_int *stop;
    uint64_t seq;
    /* AppendStream: the ids by correlation id */
    uint8_t (*pending)[16];
    size_t pending_cap;
    pthread_mutex_t mu;         /* pending, with the appender's thread */
};

static void make_id(uint8_t id[16], int trial, int writer, uint64_t seq)
{
    memset(id, 0, 16);
    id[0] = 0xA5;
    memcpy(id + 1, &trial, sizeof(trial));
    memcpy(id + 5, &writer, sizeof(writer));
    memcpy(id + 8, &seq, sizeof(seq));
}

static void on_stream_result(void *arg, uint64_t corr, int rc, const struct an_append_result *res,
                             const struct an_error *err)
{
    struct writer *w = arg;
    (void)res;
    (void)err;
    pthread_mutex_lock(&w->mu);
    if (rc == 0 && corr < w->pending_cap) {
        ack_add(w->pending[corr]);
    }
    pthread_mutex_unlock(&w->mu);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct an_client_opts o = {.timeout_ms = 2000, .max_retries = -1, .breaker_threshold = -1};
    an_client *c;
    char stream[32];
    snprintf(stream, sizeof(stream), "soak-%d", w->index);
    if (an_connect(w->addr, &o, &c)) {
        return NULL;
    }
    an_appender *ap = NULL;
    if (w->stream_mode && an_appender_open(c, 32, on_stream_result, w, &ap) != 0) {
        an_close(c);
        return NULL;
    }
    while (!atomic_load(w->stop)) {
        uint8_t id[16];
        uint64_t mine = w->seq++;
        make_id(id, w->trial, w->index, mine);
        struct an_event e = {.id = id, .type = "Soaked", .data = "{\"x\":1}", .data_len = 7};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        if (!ap) {
            if (an_append(c, &sa, 1, NULL, NULL) == 0) {
                ack_add(id);
            } else {
                usleep(5000);
            }
            continue;
        }
        uint64_t corr = 0;
        /* correlation ids start at 1 and go up by one per submit */
        if (mine >= w->pending_cap) {
            /* grown before the submit: the appender's thread reads it only
             * for correlation ids already handed out */
            pthread_mutex_lock(&w->mu);
            w->pending_cap = w->pending_cap ? w->pending_cap * 2 : 4096;
            w->pending = realloc(w->pending, w->pending_cap * 16);
            pthread_mutex_unlock(&w->mu);
        }
        pthread_mutex_lock(&w->mu);
        memcpy(w->pending[mine], id, 16);
        pthread_mutex_unlock(&w->mu);
        if (an_appender_submit(ap, &sa, 1, &corr) != 0) {
            break;
        }
        if (corr != mine) {
            fail("writer %s: correlation id %llu, expected %llu", stream,
                 (unsigned long long)corr, (unsigned long long)mine);
        }
    }
    if (ap) {
        an_appender_close(ap);
    }
    an_close(c);
    return NULL;
}

/* ---- the subscriber ---- */

struct follower {
    const char *addr;
    atomic_int *stop;
    uint64_t from;
    uint64_t last;
    uint64_t events;
};

static void *follower_main(void *arg)
{
    struct follower *f = arg;
    struct an_client_opts o = {.timeout_ms = 2000, .max_retries = -1, .breaker_threshold = -1};
    an_client *c;
    an_sub *sub;
    if (an_connect(f->addr, &o, &c)) {
        return NULL;
    }
    struct an_subscribe_opts so = {.from_position = f->from};
    if (an_subscribe(c, &so, &sub) == 0) {
        while (!atomic_load(f->stop)) {
            struct an_sub_item it;
            int rc = an_sub_next(sub, 100, &it, NULL);
            if (rc < 0) {
                break; /* the server was killed */
            }
            if (rc == 1 && it.kind == AN_SUB_EVENT) {
                uint64_t p = it.event->global_position;
                if (p != (f->last ? f->last + 1 : f->from)) {
                    fail("subscriber: position %llu after %llu", (unsigned long long)p,
                     (unsigned long long)f->last);
                }
                f->last = p;
                f->events++;
            }
        }
        an_sub_close(sub);
    }
    an_close(c);
    return NULL;
}

/* ---- checks ---- */

struct stream_count {
    char name[32];
    uint64_t n;
};

/* Reads the whole log: checks positions, ids, versions; counts streams. */
static uint64_t check_log(an_client *c, struct stream_count *sc, size_t *n_sc, uint8_t (**ids)[16])
{
    struct an_read_all_opts o = {0};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    uint64_t n = 0;
    size_t cap = 65536;
    uint8_t (*all)[16] = malloc(cap * 16);
    if (an_read_all(c, &o, &it)) {
        fail("ReadAll did not start");
    }
    int rc;
    *n_sc = 0;
    while ((rc = an_iter_next(it, &e, NULL)) == 1) {
        if (e->global_position != n + 1) {
            fail("gap: position %llu after %llu", (unsigned long long)e->global_position,
                 (unsigned long long)n);
        }
        if (n == cap) {
            cap *= 2;
            all = realloc(all, cap * 16);
        }
        if (e->id.len == 16) {
            memcpy(all[n], e->id.data, 16);
        } else {
            memset(all[n], 0, 16);
        }
        n++;
        size_t k = 0;
        while (k < *n_sc && strcmp(sc[k].name, e->stream) != 0) {
            k++;
        }
        if (k == *n_sc) {
            if (*n_sc == MAX_STREAMS) {
                continue;
            }
            snprintf(sc[k].name, sizeof(sc[k].name), "%s", e->stream);
            sc[k].n = 0;
            (*n_sc)++;
        }
        if (e->stream_version != sc[k].n) {
            fail("stream %s: version %llu where %llu was due", e->stream,
                 (unsigned long long)e->stream_version, (unsigned long long)sc[k].n);
        }
        sc[k].n++;
    }
    if (rc < 0) {
        fail("ReadAll failed at %llu", (unsigned long long)n);
    }
    an_iter_free(it);
    qsort(all, n, 16, cmp_id);
    for (uint64_t i = 1; i < n; i++) {
        if (all[i][0] == 0xA5 && memcmp(all[i], all[i - 1], 16) == 0) {
            fail("an id appears twice (%llu events)", (unsigned long long)n);
        }
    }
    *ids = all;
    return n;
}

/* The projection's checkpoint and head (Projections.Get). */
static void proj_state(grpc_channel *ch, uint64_t *ck, uint64_t *head)
{
    Annals__V1__GetProjectionRequest g = ANNALS__V1__GET_PROJECTION_REQUEST__INIT;
    g.name = (char *)"soak_count";
    uint8_t *out;
    size_t len;
    if (bu_unary(ch, "/annals.v1.Projections/Get", &g.base, &out, &len)) {
        fail("Projections.Get failed");
    }
    Annals__V1__ProjectionStatus *st = annals__v1__projection_status__unpack(NULL, len, out);
    free(out);
    if (!st) {
        fail("a malformed ProjectionStatus");
    }
    if (st->state == ANNALS__V1__PROJECTION_STATE__FAULTED) {
        fail("the projection faulted: %s", st->error);
    }
    *ck = st->checkpoint;
    *head = st->head;
    annals__v1__projection_status__free_unpacked(st, NULL);
}

static uint64_t view_count(grpc_channel *ch, const char *stream)
{
    Annals__V1__GetViewRequest g = ANNALS__V1__GET_VIEW_REQUEST__INIT;
    g.view = (char *)"soak_count";
    g.key = (char *)stream;
    uint8_t *out;
    size_t len;
    if (bu_unary(ch, "/annals.v1.Queries/GetView", &g.base, &out, &len)) {
        fail("GetView %s failed", stream);
    }
    Annals__V1__ViewEntry *e = annals__v1__view_entry__unpack(NULL, len, out);
    free(out);
    uint64_t n = 0;
    if (e && e->found) {
        const char *p = strstr((const char *)e->value.data, "\"count\":");
        n = p ? strtoull(p + 8, NULL, 10) : 0;
    }
    annals__v1__view_entry__free_unpacked(e, NULL);
    return n;
}

/* ---- main ---- */

static double now_s(void)
{
    return bu_now();
}

int main(int argc, char **argv)
{
    int trials = 200;
    int writers = 16;
    unsigned seed = (unsigned)time(NULL);
    const char *base = "/var/tmp";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--trials") == 0 && v) {
            trials = atoi(v);
            i++;
        } else if (strcmp(argv[i], "--writers") == 0 && v) {
            writers = atoi(v);
            i++;
        } else if (strcmp(argv[i], "--seed") == 0 && v) {
            seed = (unsigned)strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            base = v;
            i++;
        } else {
            printf("usage: soak_kill9 [--trials N] [--writers N] [--seed N] [--dir DIR]\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (trials < 1 || writers < 2 || writers > MAX_WRITERS) {
        fprintf(stderr, "soak_kill9: --trials >= 1, --writers 2..%d\n", MAX_WRITERS);
        return 2;
    }
    srand(seed);
    signal(SIGPIPE, SIG_IGN);
    grpc_init();
    fprintf(stderr, "soak_kill9: %d trials, %d writers, seed %u\n", trials, writers, seed);

    struct bu_server s;
    bu_server_start(&s, base, NULL);
    double *restart = calloc((size_t)trials, sizeof(double));
    static struct stream_count sc[MAX_STREAMS];
    uint64_t head = 0;
    for (int t = 0; t < trials; t++) {
        if (t == 0) {
            grpc_channel_credentials *cr = grpc_insecure_credentials_create();
            grpc_channel *ch = grpc_channel_create(s.addr, cr, NULL);
            grpc_channel_credentials_release(cr);
            Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
            d.name = (char *)"soak_count";
            d.kind = ANNALS__V1__PROJECTION_KIND__COUNT;
            d.key = (char *)"$stream";
            uint8_t *out;
            size_t len;
            if (bu_unary(ch, "/annals.v1.Projections/Create", &d.base, &out, &len)) {
                fail("Projections.Create failed");
            }
            free(out);
            grpc_channel_destroy(ch);
        }
        atomic_int stop = 0;
        struct writer w[MAX_WRITERS];
        pthread_t tw[MAX_WRITERS];
        for (int i = 0; i < writers; i++) {
            w[i] = (struct writer){.addr = s.addr, .index = i, .trial = t,
                                   .stream_mode = i % 2 == 1, .stop = &stop, .seq = 1};
            pthread_mutex_init(&w[i].mu, NULL);
            pthread_create(&tw[i], NULL, writer_main, &w[i]);
        }
        struct follower f = {.addr = s.addr, .stop = &stop, .from = head + 1};
        pthread_t tf;
        pthread_create(&tf, NULL, follower_main, &f);
        usleep((useconds_t)(100000 + rand() % 500000));
        kill(s.pid, SIGKILL);
        waitpid(s.pid, NULL, 0);
        atomic_store(&stop, 1);
        for (int i = 0; i < writers; i++) {
            pthread_join(tw[i], NULL);
            free(w[i].pending);
            pthread_mutex_destroy(&w[i].mu);
        }
        pthread_join(tf, NULL);

        double t0 = now_s();
        bu_server_restart(&s, NULL);
        an_client *c;
        struct an_client_opts o = {.timeout_ms = 5000, .max_retries = -1, .breaker_threshold = -1};
        if (an_connect(s.addr, &o, &c)) {
            fail("cannot connect after restart");
        }
        bool serving = false;
        while (an_health(c, &serving, NULL) != 0 || !serving) {
            usleep(1000);
        }
        restart[t] = now_s() - t0;

        size_t n_sc = 0;
        uint8_t (*ids)[16];
        head = check_log(c, sc, &n_sc, &ids);
        /* every acknowledged id is there */
        for (size_t i = 0; i < acked.n; i++) {
            if (!bsearch(acked.ids[i], ids, head, 16, cmp_id)) {
                fail("an acknowledged append is missing (trial %d, %zu acked)", t, acked.n);
            }
        }
        free(ids);
        /* the view equals the fold once caught up */
        grpc_channel_credentials *cr = grpc_insecure_credentials_create();
        grpc_channel *ch = grpc_channel_create(s.addr, cr, NULL);
        grpc_channel_credentials_release(cr);
        uint64_t ck = 0;
        uint64_t ph = 0;
        double w0 = now_s();
        do {
            proj_state(ch, &ck, &ph);
            if (ck < head) {
                usleep(2000);
            }
        } while (ck < head && now_s() - w0 < 60);
        if (ck < head) {
            fail("the projection did not catch up: %llu of %llu", (unsigned long long)ck,
                 (unsigned long long)head);
        }
        for (size_t k = 0; k < n_sc; k++) {
            uint64_t v = view_count(ch, sc[k].name);
            if (v != sc[k].n) {
                fail("view: stream %s counts %llu, the log holds %llu", sc[k].name,
                     (unsigned long long)v, (unsigned long long)sc[k].n);
            }
        }
        grpc_channel_destroy(ch);
        an_close(c);
        fprintf(stderr,
                "soak_kill9: trial %d/%d ok: head %llu, %zu acknowledged, subscriber saw %llu, "
                "restart %.1f ms\n",
                t + 1, trials, (unsigned long long)head, acked.n,
                (unsigned long long)f.events, restart[t] * 1000);
    }
    bu_server_stop(&s);
    struct bu_lat l = {0};
    for (int t = 0; t < trials; t++) {
        bu_lat_add(&l, restart[t]);
    }
    bu_lat_sort(&l);
    printf("soak_kill9: %d trials passed: %zu acknowledged appends, 0 lost, 0 gaps, 0 "
           "duplicates, views equal the fold; restart to serving p50 %.1f ms, p99 %.1f ms "
           "(seed %u)\n",
           trials, acked.n, bu_pct(&l, 0.5), bu_pct(&l, 0.99), seed);
    bu_lat_free(&l);
    free(restart);
    free(acked.ids);
    grpc_shutdown();
    return 0;
}

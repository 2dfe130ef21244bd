/*
 * test_server_load.c - the server under concurrent writers, long reads,
 * the pipelined appender, graceful shutdown and kill -9: what was
 * acknowledged is stored, what was refused is not, positions and versions
 * stay gap-free.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WRITERS 16

static struct harness h;

static void setup(void)
{
    h_start(&h, NULL);
}

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(server_load, .init = setup, .fini = teardown, .timeout = 240);

/* ---- reading everything back ---- */

struct seen {
    uint64_t n;
    uint64_t cap;
    uint8_t (*ids)[16];
    char (*streams)[32];
    uint64_t *versions;
};

/* Reads the whole log: asserts positions 1..n in order; keeps ids, streams
 * and versions of the events not in '$' streams. */
static void read_all(an_client *c, struct seen *s)
{
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    struct an_error err;
    uint64_t expect = 1;
    struct an_read_all_opts o = {0};
    memset(s, 0, sizeof(*s));
    cr_assert_eq(an_read_all(c, &o, &it), 0);
    int rc;
    while ((rc = an_iter_next(it, &e, &err)) == 1) {
        cr_assert_eq(e->global_position, expect, "gap or disorder at %llu",
                     (unsigned long long)expect);
        expect++;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->ids = realloc(s->ids, s->cap * sizeof(*s->ids));
            s->streams = realloc(s->streams, s->cap * sizeof(*s->streams));
            s->versions = realloc(s->versions, s->cap * sizeof(*s->versions));
        }
        cr_assert_eq(e->id.len, 16);
        memcpy(s->ids[s->n], e->id.data, 16);
        snprintf(s->streams[s->n], sizeof(s->streams[0]), "%s", e->stream);
        s->versions[s->n] = e->stream_version;
        s->n++;
    }
    cr_assert_eq(rc, 0, "read all failed: %s", err.detail);
    an_iter_free(it);
}

static void seen_free(struct seen *s)
{
    free(s->ids);
    free(s->streams);
    free(s->versions);
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static bool has_id(const struct seen *sorted, const uint8_t id[16])
{
    return bsearch(id, sorted->ids, sorted->n, 16, cmp_id) != NULL;
}

/* Per-stream versions 0.. without gaps (events in log order). */
static void check_versions(const struct seen *s)
{
    for (uint64_t i = 0; i < s->n; i++) {
        uint64_t want = 0;
        for (uint64_t j = 0; j < i; j++) {
            if (strcmp(s->streams[j], s->streams[i]) == 0) {
                want++;
            }
        }
        cr_assert_eq(s->versions[i], want, "stream %s: version %llu where %llu was due",
                     s->streams[i], (unsigned long long)s->versions[i],
                     (unsigned long long)want);
    }
}

/* ---- concurrent writers ---- */

struct writer {
    int index;
    int appends;
    atomic_int *stop;           /* optional: stop early */
    /* outcome log: ids and the rc each got */
    uint8_t (*ids)[16];
    int *rcs;
    int done;
};

static void make_id(uint8_t id[16], int writer, int n)
{
    memset(id, 0, 16);
    id[0] = 0xa1;
    id[1] = (uint8_t)writer;
    memcpy(id + 4, &n, sizeof(n));
    id[6] = 0x40 | (id[6] & 0x0f);
}

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    an_client *c = h_client(&h);
    char priv[32];
    int64_t priv_v = -1;
    snprintf(priv, sizeof(priv), "private-%d", w->index);
    for (int i = 0; i < w->appends && !(w->stop && atomic_load(w->stop)); i++) {
        struct an_event e = {.type = "Counted", .data = "{\"n\":1}", .data_len = 7};
        make_id(w->ids[i], w->index, i);
        e.id = w->ids[i];
        struct an_stream_append sa;
        struct an_error err;
        if (i % 2 == 0) {
            /* a private stream: the writer knows its version exactly */
            sa = (struct an_stream_append){.stream = priv,
                                           .expect = priv_v < 0 ? AN_EXPECT_NO_STREAM
                                                                : AN_EXPECT_VERSION,
                                           .expected_version = (uint64_t)priv_v,
                                           .events = &e,
                                           .n_events = 1};
        } else {
            sa = (struct an_stream_append){.stream = "shared", .events = &e, .n_events = 1};
        }
        int rc = an_append(c, &sa, 1, NULL, &err);
        w->rcs[i] = rc;
        if (rc == 0 && i % 2 == 0) {
            priv_v++;
        }
        if (rc && !w->stop) {
            cr_log_error("writer %d append %d: %s (%s)", w->index, i, an_strerror(rc), err.detail);
        }
        w->done = i + 1;
    }
    an_close(c);
    return NULL;
}

static void writers_run(struct writer *ws, int n, int appends, atomic_int *stop, pthread_t *t)
{
    for (int i = 0; i < n; i++) {
        ws[i] = (struct writer){.index = i, .appends = appends, .stop = stop};
        ws[i].ids = calloc((size_t)appends, 16);
        ws[i].rcs = calloc((size_t)appends, sizeof(int));
        pthread_create(&t[i], NULL, write_loop, &ws[i]);
    }
}

Test(server_load, sixteen_writers_with_expectations_leave_no_gaps)
{
    struct writer ws[WRITERS];
    pthread_t t[WRITERS];
    struct seen s;
    writers_run(ws, WRITERS, 200, NULL, t);
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
    }
    read_all(h.client, &s);
    uint64_t ok = 0;
    for (int i = 0; i < WRITERS; i++) {
        for (int j = 0; j < ws[i].appends; j++) {
            cr_assert_eq(ws[i].rcs[j], 0, "writer %d append %d failed", i, j);
            ok++;
        }
    }
    cr_assert_eq(s.n, ok);
    check_versions(&s);
    for (int i = 0; i < WRITERS; i++) {
        free(ws[i].ids);
        free(ws[i].rcs);
    }
    seen_free(&s);
}

/* ---- the pipelined appender and a long read ---- */

struct counts {
    atomic_ullong ok;
    atomic_ullong failed;
    atomic_ullong corr_sum;
};

static void on_result(void *arg, uint64_t corr, int rc, const struct an_append_result *res,
                      const struct an_error *err)
{
    struct counts *c = arg;
    (void)res;
    (void)err;
    if (rc == 0) {
        atomic_fetch_add(&c->ok, 1);
    } else {
        atomic_fetch_add(&c->failed, 1);
    }
    atomic_fetch_add(&c->corr_sum, corr);
}

Test(server_load, appender_writes_a_hundred_thousand_and_read_all_returns_them_in_order)
{
    const uint64_t n = 100000;
    struct counts cnt = {0};
    an_appender *a;
    char data[200];
    memset(data, 'x', sizeof(data));
    cr_assert_eq(an_appender_open(h.client, 64, on_result, &cnt, &a), 0);
    for (uint64_t i = 0; i < n; i++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "acct-%llu", (unsigned long long)(i % 1000));
        struct an_event e = {.type = "Deposited", .data = data, .data_len = sizeof(data)};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        cr_assert_eq(an_appender_submit(a, &sa, 1, NULL), 0);
    }
    cr_assert_eq(an_appender_close(a), 0);
    cr_assert_eq(atomic_load(&cnt.ok), n);
    cr_assert_eq(atomic_load(&cnt.failed), 0);
    cr_assert_eq(atomic_load(&cnt.corr_sum), n * (n + 1) / 2, "every correlation id once");

    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    struct an_read_all_opts o = {0};
    uint64_t expect = 1;
    cr_assert_eq(an_read_all(h.client, &o, &it), 0);
    int rc;
    while ((rc = an_iter_next(it, &e, NULL)) == 1) {
        cr_assert_eq(e->global_position, expect);
        cr_assert_eq(e->data.len, sizeof(data));
        expect++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(expect - 1, n);
    an_iter_free(it);
}

/*
 * Batched messages (commands.proto, AppendStreamRequest.more and
 * AppendResult.more): with 256 in flight the appender and the server put
 * several appends, and several results, in one message; each append still
 * gets its own checks and outcome. Expectations are chained without
 * waiting (the requests of a call apply in the order sent), and every 97th
 * append expects a version far ahead: exactly those are ABORTED, each with
 * its stream's version at that point.
 */
#define CHAIN_N 20000u
#define CHAIN_STREAMS 50u

struct chain {
    int rc[CHAIN_N + 1];        /* by correlation id */
    int64_t actual[CHAIN_N + 1];
    uint64_t first_version[CHAIN_N + 1];
    atomic_uint answered;
};

static void on_chain(void *arg, uint64_t corr, int rc, const struct an_append_result *res,
                     const struct an_error *err)
{
    struct chain *ch = arg;
    if (corr == 0 || corr > CHAIN_N) {
        return; /* caught below: that id stays unanswered */
    }
    ch->rc[corr] = rc;
    ch->actual[corr] = rc == AN_ECONFLICT ? err->actual_version : -2;
    ch->first_version[corr] = rc == 0 ? res->streams[0].first_version : UINT64_MAX;
    atomic_fetch_add(&ch->answered, 1);
}

static double metric(const char *text, const char *name)
{
    const char *p = strstr(text, name);
    cr_assert_not_null(p, "no %s in /metrics", name);
    return atof(p + strlen(name) + 1);
}

Test(server_load, appender_batches_messages_and_each_append_keeps_its_own_outcome)
{
    const char *flags[] = {"--http", "127.0.0.1:0", NULL};
    h_cleanup(&h);
    h_start(&h, flags);
    static struct chain ch;
    memset(&ch, 0, sizeof(ch));
    static uint64_t want[CHAIN_N + 1];  /* the version it must get, or UINT64_MAX */
    static int64_t want_actual[CHAIN_N + 1];
    uint64_t next[CHAIN_STREAMS] = {0};
    an_appender *a;
    cr_assert_eq(an_appender_open(h.client, 256, on_chain, &ch, &a), 0);
    for (uint64_t i = 1; i <= CHAIN_N; i++) {
        unsigned k = (unsigned)(i % CHAIN_STREAMS);
        char stream[32];
        snprintf(stream, sizeof(stream), "chain-%u", k);
        struct an_event e = {.type = "Chained", .data = "{}", .data_len = 2};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        bool wrong = i % 97 == 0 && next[k] > 0;
        if (wrong) {
            sa.expect = AN_EXPECT_VERSION;
            sa.expected_version = next[k] + 1000;
            want[i] = UINT64_MAX;
            want_actual[i] = (int64_t)next[k] - 1;
        } else {
            sa.expect = next[k] ? AN_EXPECT_VERSION : AN_EXPECT_NO_STREAM;
            sa.expected_version = next[k] ? next[k] - 1 : 0;
            want[i] = next[k]++;
        }
        uint64_t corr;
        cr_assert_eq(an_appender_submit(a, &sa, 1, &corr), 0);
        cr_assert_eq(corr, i);
    }
    cr_assert_eq(an_appender_close(a), 0);
    cr_assert_eq(atomic_load(&ch.answered), CHAIN_N, "every append answered once");
    unsigned conflicts = 0;
    for (uint64_t i = 1; i <= CHAIN_N; i++) {
        if (want[i] == UINT64_MAX) {
            conflicts++;
            cr_assert_eq(ch.rc[i], AN_ECONFLICT, "append %llu: rc %d", (unsigned long long)i,
                         ch.rc[i]);
            cr_assert_eq(ch.actual[i], want_actual[i], "append %llu: actual version",
                         (unsigned long long)i);
        } else {
            cr_assert_eq(ch.rc[i], 0, "append %llu: rc %d", (unsigned long long)i, ch.rc[i]);
            cr_assert_eq(ch.first_version[i], want[i], "append %llu: version",
                         (unsigned long long)i);
        }
    }
    cr_assert_gt(conflicts, 100);

    /* the stored streams hold exactly the appends that succeeded */
    for (unsigned k = 0; k < CHAIN_STREAMS; k++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "chain-%u", k);
        struct an_stream_info si;
        cr_assert_eq(an_get_stream(h.client, stream, NULL, &si, NULL), 0);
        cr_assert_eq(si.last_version + 1, next[k], "%s", stream);
    }

    /* and they went over fewer messages than appends, both ways */
    static char body[1 << 20];
    cr_assert_eq(h_http_get(h_http_port(&h), "/metrics", NULL, body, sizeof(body)), 200);
    double msgs_in = metric(body, "annals_append_stream_messages_total{dir=\"in\"}");
    double items_in = metric(body, "annals_append_stream_items_total{dir=\"in\"}");
    double msgs_out = metric(body, "annals_append_stream_messages_total{dir=\"out\"}");
    double items_out = metric(body, "annals_append_stream_items_total{dir=\"out\"}");
    cr_log_info("appends %.0f in %.0f messages, results %.0f in %.0f messages", items_in,
                msgs_in, items_out, msgs_out);
    cr_assert_eq(items_in, CHAIN_N);
    cr_assert_eq(items_out, CHAIN_N);
    cr_assert_lt(msgs_in, items_in, "no message carried more than one append");
    cr_assert_lt(msgs_out, items_out, "no message carried more than one result");
}

/* ---- shutdown and kill ---- */

static void sleep_ms(int ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Every append answered OK is stored; with `refused_absent`, every one
 * refused UNAVAILABLE is not. */
static void check_outcomes(struct writer *ws, int n, bool refused_absent)
{
    struct seen s;
    read_all(h.client, &s);
    qsort(s.ids, s.n, 16, cmp_id);
    uint64_t ok = 0;
    uint64_t refused = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < ws[i].done; j++) {
            if (ws[i].rcs[j] == 0) {
                ok++;
                cr_assert(has_id(&s, ws[i].ids[j]), "acknowledged append %d/%d is missing", i,
                          j);
            } else if (ws[i].rcs[j] == AN_EUNAVAIL && refused_absent) {
                refused++;
                cr_assert(!has_id(&s, ws[i].ids[j]), "append %d/%d refused UNAVAILABLE is stored",
                          i, j);
            }
        }
    }
    cr_assert_gt(ok, 0);
    cr_log_info("acknowledged %llu, refused %llu, stored %llu", (unsigned long long)ok,
                (unsigned long long)refused, (unsigned long long)s.n);
    seen_free(&s);
}

/* Runs 16 writers, stops the server under them (SIGTERM, or SIGKILL),
 * restarts it and checks what each writer was told against what is stored. */
static void interrupt_writers(bool graceful)
{
    struct writer ws[WRITERS];
    pthread_t t[WRITERS];
    atomic_int stop = 0;
    writers_run(ws, WRITERS, 100000, &stop, t);
    if (graceful) {
        sleep_ms(400);
        cr_assert_eq(h_stop(&h), 0, "annalsd did not exit 0 on SIGTERM");
    } else {
        sleep_ms(300 + rand() % 300);
        h_kill(&h);
    }
    sleep_ms(200);
    atomic_store(&stop, 1);
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
    }
    h_restart(&h);
    an_close(h.client);
    cr_assert_eq(an_connect(h.addr, NULL, &h.client), 0);
    check_outcomes(ws, WRITERS, graceful);
    for (int i = 0; i < WRITERS; i++) {
        free(ws[i].ids);
        free(ws[i].rcs);
    }
}

Test(server_load, graceful_shutdown_answers_what_it_wrote_and_refuses_the_rest)
{
    interrupt_writers(true);
}

Test(server_load, kill_9_under_sixteen_writers_loses_no_acknowledged_append)
{
    interrupt_writers(false);
}

/*
 * An AppendStream whose client sends nothing more holds its call open; at
 * shutdown, once everything owed to it is out, the server ends it with
 * UNAVAILABLE at once instead of waiting out the grace period.
 */
Test(server_load, shutdown_ends_an_idle_appendstream_at_once)
{
    struct counts cnt = {0};
    an_appender *a;
    cr_assert_eq(an_appender_open(h.client, 64, on_result, &cnt, &a), 0);
    for (int i = 0; i < 10; i++) {
        struct an_event e = {.type = "Deposited", .data = "{}", .data_len = 2};
        struct an_stream_append sa = {.stream = "idle-appender", .events = &e, .n_events = 1};
        cr_assert_eq(an_appender_submit(a, &sa, 1, NULL), 0);
    }
    for (int i = 0; i < 1000 && atomic_load(&cnt.ok) < 10; i++) {
        sleep_ms(5);
    }
    cr_assert_eq(atomic_load(&cnt.ok), 10);
    sleep_ms(100); /* idle now: the server waits on its next message */

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(h_stop(&h), 0, "annalsd did not exit 0 on SIGTERM");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    cr_assert_lt(ms, 2500, "shutdown took %ld ms: it waited for the idle call (grace 3000)", ms);
    cr_assert_eq(an_appender_close(a), AN_EUNAVAIL);
    cr_assert_eq(atomic_load(&cnt.failed), 0, "every append had its result before the end");
}

/* ---- a full writer's queue ---- */

#define BIG_N 48
#define BIG_BYTES (400 * 1024)

struct big {
    pthread_mutex_t mu;
    int rc[BIG_N + 1];          /* by correlation id; 1: not answered */
    char detail[BIG_N + 1][600];
};

static void on_big(void *arg, uint64_t corr, int rc, const struct an_append_result *res,
                   const struct an_error *err)
{
    struct big *b = arg;
    (void)res;
    cr_assert(corr >= 1 && corr <= BIG_N);
    pthread_mutex_lock(&b->mu);
    cr_assert_eq(b->rc[corr], 1, "append %llu answered twice", (unsigned long long)corr);
    b->rc[corr] = rc;
    snprintf(b->detail[corr], sizeof(b->detail[corr]), "%s", rc && err ? err->detail : "");
    pthread_mutex_unlock(&b->mu);
}

/* --max-queue 1M with 400 KiB appends, 16 in flight over AppendStream:
 * the writer's queue holds two at most, so some are refused
 * RESOURCE_EXHAUSTED naming the flag; each append is either stored (OK)
 * or not at all (refused), and the call goes on after a refusal. */
Test(server_load, a_full_writer_queue_refuses_appends_which_write_nothing)
{
    const char *flags[] = {"--max-queue", "1M", NULL};
    h_cleanup(&h);
    h_start(&h, flags);
    static struct big b;
    static char data[BIG_BYTES];
    pthread_mutex_init(&b.mu, NULL);
    for (int i = 0; i <= BIG_N; i++) {
        b.rc[i] = 1;
    }
    memset(data, 'q', sizeof(data));
    an_appender *a;
    cr_assert_eq(an_appender_open(h.client, 16, on_big, &b, &a), 0);
    for (int i = 1; i <= BIG_N; i++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "big-%d", i);
        struct an_event e = {.type = "Big", .data = data, .data_len = sizeof(data)};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        cr_assert_eq(an_appender_submit(a, &sa, 1, NULL), 0);
    }
    cr_assert_eq(an_appender_close(a), 0);
    int ok = 0, refused = 0;
    for (int i = 1; i <= BIG_N; i++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "big-%d", i);
        struct an_stream_info info;
        int grc = an_get_stream(h.client, stream, NULL, &info, NULL);
        if (b.rc[i] == 0) {
            ok++;
            cr_assert_eq(grc, 0, "append %d was acknowledged: its stream exists", i);
        } else {
            refused++;
            /* RESOURCE_EXHAUSTED, which libannals reads as AN_ETOOBIG */
            cr_assert(b.rc[i] == AN_ETOOBIG || b.rc[i] == AN_EBUSY, "append %d: %s", i,
                      an_errname(b.rc[i]));
            cr_assert(strstr(b.detail[i], "--max-queue") != NULL, "detail: %s", b.detail[i]);
            cr_assert_eq(grc, AN_ENOTFOUND, "append %d was refused: nothing written", i);
        }
    }
    cr_log_info("%d stored, %d refused", ok, refused);
    cr_assert_gt(refused, 0, "1 MiB of queue and 16 appends of 400 KiB in flight");
    cr_assert_gt(ok, 0);
}

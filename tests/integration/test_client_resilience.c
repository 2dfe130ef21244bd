/*
 * test_client_resilience.c - libannals against a real annalsd that goes
 * away: the circuit breaker's transitions (stop, SIGSTOP, restart),
 * fail-fast AN_ECIRCUIT, retries that do not duplicate appends, reads that
 * retry, two endpoints with one killed, the GetStream and read fallbacks,
 * and the AppendStream appender under the breaker.
 *
 * Timing bounds are generous: CI is a noisy 2-core VM, and the suite also
 * runs under ASan+UBSan.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;
static struct harness h2;

static void setup(void)
{
    h_start(&h, NULL);
}

static void teardown(void)
{
    h_cleanup(&h);
    if (h2.dir[0]) {
        h_cleanup(&h2);
    }
}

TestSuite(client_resilience, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ---- */

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* kill(SIGSTOP) only queues the signal: waits until the process is
 * stopped ('T' in /proc/PID/stat). */
static void stop_process(pid_t pid)
{
    char path[64];
    int64_t until = now_ms() + 5000;

    cr_assert_eq(kill(pid, SIGSTOP), 0);
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    for (;;) {
        char buf[512] = "";
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'T') return;
        cr_assert_lt(now_ms(), until, "annalsd did not stop");
        sleep_ms(5);
    }
}

/* Breaker transitions seen by the callback, in order. */
struct seen {
    pthread_mutex_t mu;
    int n;
    int from[64];
    int to[64];
    char endpoint[64][64];
};

static struct seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_breaker(void *arg, const char *endpoint, int from, int to)
{
    struct seen *s = arg;
    pthread_mutex_lock(&s->mu);
    if (s->n < 64) {
        s->from[s->n] = from;
        s->to[s->n] = to;
        snprintf(s->endpoint[s->n], sizeof(s->endpoint[0]), "%s", endpoint);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Index of the first transition from -> to at or after `after`, or -1. */
static int seen_find(int from, int to, int after)
{
    int at = -1;
    pthread_mutex_lock(&seen.mu);
    for (int i = after; i < seen.n; i++) {
        if (seen.from[i] == from && seen.to[i] == to) {
            at = i;
            break;
        }
    }
    pthread_mutex_unlock(&seen.mu);
    return at;
}

static an_client *client(const char *target, struct an_client_opts o)
{
    an_client *c = NULL;
    o.on_breaker = on_breaker;
    if (!o.arg) {
        o.arg = &seen;
    }
    cr_assert_eq(an_connect(target, &o, &c), 0);
    return c;
}

static int append1(an_client *c, const char *stream, struct an_append_result *res)
{
    struct an_event e = {.type = "T", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    return an_append(c, &sa, 1, res, NULL);
}

/* Calls until one succeeds; fails the test after limit_ms. */
static void wait_ok(an_client *c, int limit_ms)
{
    int64_t until = now_ms() + limit_ms;
    int rc;
    bool serving = false;
    while ((rc = an_health(c, &serving, NULL)) != 0 || !serving) {
        cr_assert_lt(now_ms(), until, "no success within %d ms (last %s)", limit_ms,
                     an_errname(rc));
        sleep_ms(20);
    }
}

/* ---- the breaker ---- */

Test(client_resilience, stopped_server_opens_breaker_fails_fast_then_probe_closes_it)
{
    struct an_client_opts o = {.timeout_ms = 2000, .max_retries = -1, .breaker_threshold = 3,
                               .breaker_cooldown_ms = 500};
    an_client *c = client(h.addr, o);
    struct an_stream_info si;
    struct an_error err;
    int rc;

    cr_assert_eq(append1(c, "b-1", NULL), 0);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_CLOSED);
    cr_assert_eq(an_breaker_state(c, "nowhere:1"), AN_EINVAL);

    cr_assert_eq(h_stop(&h), 0);
    int failures = 0;
    while ((rc = an_get_stream(c, "b-1", NULL, &si, &err)) != AN_ECIRCUIT) {
        cr_assert(rc == AN_EUNAVAIL || rc == AN_EDEADLINE, "got %s", an_errname(rc));
        failures++;
        cr_assert_leq(failures, 3, "breaker still closed after %d failures", failures);
    }
    cr_assert_eq(failures, 3);
    cr_assert_eq(err.code, AN_ECIRCUIT);
    int opened = seen_find(AN_BREAKER_CLOSED, AN_BREAKER_OPEN, 0);
    cr_assert_geq(opened, 0, "no CLOSED -> OPEN callback");
    cr_assert_str_eq(seen.endpoint[opened], h.addr);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);
    cr_assert_eq(an_breaker_state(c, NULL), AN_BREAKER_OPEN);

    /* Open: every kind of call fails at once, without the network. */
    int64_t worst = 0;
    int64_t t0 = now_ms();
    for (int i = 0; i < 30; i++) {
        int64_t t = now_ms();
        const Annals__V1__RecordedEvent *ev;
        an_iter *it;
        cr_assert_eq(an_get_stream(c, "b-1", NULL, &si, NULL), AN_ECIRCUIT);
        cr_assert_eq(append1(c, "b-1", NULL), AN_ECIRCUIT);
        cr_assert_eq(an_health(c, NULL, NULL), AN_ECIRCUIT);
        struct an_read_stream_opts ro = {.stream = "b-1"};
        cr_assert_eq(an_read_stream(c, &ro, &it), 0);
        cr_assert_eq(an_iter_next(it, &ev, NULL), AN_ECIRCUIT);
        an_iter_free(it);
        if (now_ms() - t > worst) {
            worst = now_ms() - t;
        }
    }
    cr_log_info("open: 120 calls in %lld ms, worst 4 in %lld ms", (long long)(now_ms() - t0),
                (long long)worst);
    /* fast: far less than the 2 s call timeout they would wait out */
    cr_assert_lt(worst, 1000, "four fail-fast calls took %lld ms", (long long)worst);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN, "reopened or closed meanwhile");

    /* Back: after the cool-down a probe goes through and closes it. */
    h_restart(&h);
    wait_ok(c, 15000);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_CLOSED);
    cr_assert_geq(seen_find(AN_BREAKER_OPEN, AN_BREAKER_HALF_OPEN, opened), 0);
    cr_assert_geq(seen_find(AN_BREAKER_HALF_OPEN, AN_BREAKER_CLOSED, opened), 0);
    cr_assert_eq(an_get_stream(c, "b-1", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 1);
    cr_assert_eq(append1(c, "b-1", NULL), 0);
    an_close(c);
}

Test(client_resilience, stopped_process_deadlines_count_as_failures_and_sigcont_recovers)
{
    struct an_client_opts o = {.timeout_ms = 1000, .attempt_timeout_ms = 250, .max_retries = 1,
                               .breaker_threshold = 3, .breaker_cooldown_ms = 300};
    an_client *c = client(h.addr, o);
    struct an_stream_info si;
    int rc;

    cr_assert_eq(append1(c, "s-1", NULL), 0);
    stop_process(h.pid);
    int deadlines = 0;
    int64_t until = now_ms() + 10000;
    while ((rc = an_get_stream(c, "s-1", NULL, &si, NULL)) != AN_ECIRCUIT) {
        cr_assert_eq(rc, AN_EDEADLINE, "got %s", an_errname(rc));
        deadlines++;
        cr_assert_lt(now_ms(), until);
    }
    cr_assert_geq(deadlines, 1);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);
    cr_assert_geq(seen_find(AN_BREAKER_CLOSED, AN_BREAKER_OPEN, 0), 0);

    /* Still stopped after the cool-down: the probe times out and the
     * breaker opens again. */
    sleep_ms(400);
    rc = an_get_stream(c, "s-1", NULL, &si, NULL);
    cr_assert(rc == AN_EDEADLINE || rc == AN_ECIRCUIT, "got %s", an_errname(rc));
    cr_assert_geq(seen_find(AN_BREAKER_HALF_OPEN, AN_BREAKER_OPEN, 0), 0);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);

    cr_assert_eq(kill(h.pid, SIGCONT), 0);
    wait_ok(c, 10000);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_CLOSED);
    cr_assert_eq(an_get_stream(c, "s-1", NULL, &si, NULL), 0);
    an_close(c);
}

/* ---- retries ---- */

struct writer {
    an_client *c;
    const char *stream;
    atomic_int stop;
    int acked;
    int failed;
    int last_rc;
    char last_detail[AN_DETAIL_MAX];
    int64_t slowest_ms;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    while (!atomic_load(&w->stop)) {
        int64_t t = now_ms();
        struct an_error err;
        struct an_event e = {.type = "T", .data = "{}", .data_len = 2};
        struct an_stream_append sa = {.stream = w->stream, .events = &e, .n_events = 1};
        int rc = an_append(w->c, &sa, 1, NULL, &err);
        if (now_ms() - t > w->slowest_ms) {
            w->slowest_ms = now_ms() - t;
        }
        if (rc == 0) {
            w->acked++;
        } else {
            w->failed++;
            w->last_rc = rc;
            snprintf(w->last_detail, sizeof(w->last_detail), "%s", err.detail);
        }
        sleep_ms(5);
    }
    return NULL;
}

Test(client_resilience, exact_repeat_of_an_append_returns_the_original_positions)
{
    static const uint8_t id[16] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x47, 0x88,
                                   0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01};
    struct an_event e = {.id = id, .type = "T", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = "rep-1", .events = &e, .n_events = 1};
    struct an_append_result r1;
    struct an_append_result r2;
    struct an_stream_info si;

    cr_assert_eq(an_append(h.client, &sa, 1, &r1, NULL), 0);
    cr_assert_eq(an_append(h.client, &sa, 1, &r2, NULL), 0);
    cr_assert_eq(r1.first_position, r2.first_position);
    cr_assert_eq(an_get_stream(h.client, "rep-1", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 1);
}

static void writer_round(an_client *c, const char *stream, bool kill9)
{
    struct writer w = {.c = c, .stream = stream};
    pthread_t t;
    struct an_stream_info si;

    cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
    sleep_ms(300);
    if (kill9) {
        h_kill(&h);
    } else {
        cr_assert_eq(h_stop(&h), 0);
    }
    sleep_ms(150);
    h_restart(&h);
    sleep_ms(600);
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    cr_log_info("%s: acked %d, failed %d, slowest %lld ms", stream, w.acked, w.failed,
                (long long)w.slowest_ms);
    cr_assert_eq(w.failed, 0, "an append failed: %s (%s)", an_errname(w.last_rc), w.last_detail);
    cr_assert_gt(w.acked, 0);
    cr_assert_eq(an_get_stream(c, stream, NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, (uint64_t)w.acked, "%llu stored, %d acknowledged",
                 (unsigned long long)si.event_count, w.acked);
}

Test(client_resilience, appends_retried_across_a_restart_are_stored_exactly_once)
{
    struct an_client_opts o = {.timeout_ms = 10000, .attempt_timeout_ms = 2000,
                               .max_retries = 12, .backoff_base_ms = 50,
                               .retry_max_total_ms = 8000, .breaker_threshold = -1};
    an_client *c = client(h.addr, o);

    writer_round(c, "dup-stop", false);
    writer_round(c, "dup-kill", true);
    an_close(c);
}

struct reader {
    an_client *c;
    int rc;
    int n;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    struct an_read_stream_opts o = {.stream = "rd-1"};
    const Annals__V1__RecordedEvent *ev;
    an_iter *it;
    r->rc = an_read_stream(r->c, &o, &it);
    if (r->rc) return NULL;
    while ((r->rc = an_iter_next(it, &ev, NULL)) == 1) {
        r->n++;
    }
    an_iter_free(it);
    return NULL;
}

Test(client_resilience, read_started_while_down_is_retried_until_the_server_is_back)
{
    struct an_client_opts o = {.timeout_ms = 10000, .attempt_timeout_ms = 2000,
                               .max_retries = 12, .backoff_base_ms = 50,
                               .retry_max_total_ms = 8000, .breaker_threshold = -1};
    an_client *c = client(h.addr, o);
    struct reader r = {.c = c};
    pthread_t t;

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(append1(c, "rd-1", NULL), 0);
    }
    cr_assert_eq(h_stop(&h), 0);
    cr_assert_eq(pthread_create(&t, NULL, reader_main, &r), 0);
    sleep_ms(300);
    h_restart(&h);
    pthread_join(t, NULL);
    cr_assert_eq(r.rc, 0, "read ended with %s", an_errname(r.rc));
    cr_assert_eq(r.n, 3);

    /* Without retries the same read fails. */
    struct an_client_opts o1 = {.timeout_ms = 2000, .max_retries = -1};
    an_client *c1 = client(h.addr, o1);
    struct reader r1 = {.c = c1};
    wait_ok(c1, 10000);
    cr_assert_eq(h_stop(&h), 0);
    reader_main(&r1);
    cr_assert_eq(r1.rc, AN_EUNAVAIL, "got %s", an_errname(r1.rc));
    an_close(c1);
    an_close(c);
}

/* ---- endpoints ---- */

Test(client_resilience, two_endpoints_one_killed_calls_keep_succeeding_on_the_other)
{
    char target[160];
    struct an_client_opts o = {.timeout_ms = 2000, .health_interval_ms = 100};

    h_start(&h2, NULL);
    snprintf(target, sizeof(target), "%s,%s", h.addr, h2.addr);
    an_client *c = client(target, o);
    for (int i = 0; i < 10; i++) {
        bool serving = false;
        cr_assert_eq(an_health(c, &serving, NULL), 0);
        cr_assert(serving);
    }
    /* Both take calls: each server stores some of these appends. */
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(append1(c, "ep-1", NULL), 0);
    }
    struct an_stream_info s1;
    struct an_stream_info s2;
    cr_assert_eq(an_get_stream(h.client, "ep-1", NULL, &s1, NULL), 0);
    cr_assert_eq(an_get_stream(h2.client, "ep-1", NULL, &s2, NULL), 0);
    cr_assert_eq(s1.event_count + s2.event_count, 10);

    h_kill(&h2);
    int64_t t0 = now_ms();
    for (int i = 0; i < 200; i++) {
        bool serving = false;
        int rc = an_health(c, &serving, NULL);
        cr_assert_eq(rc, 0, "call %d after the kill: %s", i, an_errname(rc));
        cr_assert_eq(append1(c, "ep-2", NULL), 0, "append %d after the kill", i);
        if (i % 20 == 0) {
            sleep_ms(20);
        }
    }
    cr_log_info("400 calls with one endpoint dead in %lld ms", (long long)(now_ms() - t0));
    cr_assert_eq(an_get_stream(h.client, "ep-2", NULL, &s1, NULL), 0);
    cr_assert_eq(s1.event_count, 200, "every append went to the live server");

    /* Both down: once the health thread has seen it (every 100 ms), calls
     * fail fast with AN_EUNAVAIL. */
    h_kill(&h);
    sleep_ms(800);
    for (int i = 0; i < 10; i++) {
        int64_t t = now_ms();
        int rc = an_health(c, NULL, NULL);
        cr_assert_eq(rc, AN_EUNAVAIL, "got %s", an_errname(rc));
        /* fast: far less than the 2 s call timeout it would wait out */
        cr_assert_lt(now_ms() - t, 1000, "took %lld ms", (long long)(now_ms() - t));
    }
    an_close(c);
}

/* ---- fallback ---- */

static atomic_int fallback_calls;

static int fallback(void *arg, const char *stream, struct an_stream_info *out)
{
    (void)arg;
    atomic_fetch_add(&fallback_calls, 1);
    if (strcmp(stream, "fb-1") != 0) return AN_ENOTFOUND;
    memset(out, 0, sizeof(*out));
    out->event_count = 42;
    return 0;
}

Test(client_resilience, get_stream_fallback_answers_while_open)
{
    struct an_client_opts o = {.timeout_ms = 2000, .max_retries = -1, .breaker_threshold = 2,
                               .breaker_cooldown_ms = 10000, .get_stream_fallback = fallback};
    an_client *c = client(h.addr, o);
    struct an_stream_info si;

    cr_assert_eq(append1(c, "fb-1", NULL), 0);
    cr_assert_eq(an_get_stream(c, "fb-1", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 1);
    cr_assert_eq(atomic_load(&fallback_calls), 0, "fallback used while closed");

    cr_assert_eq(h_stop(&h), 0);
    cr_assert_eq(an_get_stream(c, "fb-1", NULL, &si, NULL), AN_EUNAVAIL);
    cr_assert_eq(an_get_stream(c, "fb-1", NULL, &si, NULL), AN_EUNAVAIL);
    cr_assert_eq(atomic_load(&fallback_calls), 0, "fallback used before the breaker opened");
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);

    memset(&si, 0, sizeof(si));
    cr_assert_eq(an_get_stream(c, "fb-1", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 42);
    cr_assert_eq(an_get_stream(c, "other", NULL, &si, NULL), AN_ENOTFOUND);
    cr_assert_eq(atomic_load(&fallback_calls), 2);
    /* Only GetStream has a fallback. */
    cr_assert_eq(an_health(c, NULL, NULL), AN_ECIRCUIT);
    an_close(c);
}

/* An event the read fallback supplies (as from a cache). */
static void fb_event(an_iter *it, const char *stream, uint64_t version, uint64_t position)
{
    Annals__V1__RecordedEvent ev = ANNALS__V1__RECORDED_EVENT__INIT;
    ev.stream = (char *)stream;
    ev.stream_version = version;
    ev.global_position = position;
    ev.type = (char *)"Cached";
    cr_assert_eq(an_iter_supply(it, &ev), 0);
}

static atomic_int read_fb_calls;

static int read_fb(void *arg, const struct an_read_req *req, an_iter *it)
{
    (void)arg;
    atomic_fetch_add(&read_fb_calls, 1);
    if (req->stream) {
        cr_assert_null(req->all);
        if (strcmp(req->stream->stream, "rf-1") != 0) return AN_ENOTFOUND;
        cr_assert_eq(req->stream->from_version, 1, "the request as sent");
        fb_event(it, "rf-1", 1, 11);
        fb_event(it, "rf-1", 2, 12);
        return 0;
    }
    cr_assert_not_null(req->all);
    cr_assert_eq(req->all->filter->n_stream_prefixes, 1);
    cr_assert_str_eq(req->all->filter->stream_prefixes[0], "rf-");
    fb_event(it, "rf-1", 0, 10);
    return AN_EUNAVAIL; /* then the read fails: the cache may be partial */
}

/* Reads everything; returns the end code, *n the events, *last the last
 * event's version. */
static int read_count(an_iter *it, int *n, uint64_t *last, struct an_error *err)
{
    const Annals__V1__RecordedEvent *ev;
    int rc;
    *n = 0;
    while ((rc = an_iter_next(it, &ev, err)) == 1) {
        (*n)++;
        *last = ev->stream_version;
    }
    return rc;
}

Test(client_resilience, read_fallback_supplies_events_while_open_and_only_then)
{
    struct an_client_opts o = {.timeout_ms = 2000, .max_retries = -1, .breaker_threshold = 2,
                               .breaker_cooldown_ms = 10000, .read_fallback = read_fb};
    an_client *c = client(h.addr, o);
    struct an_read_stream_opts so = {.stream = "rf-1", .from_version = 1};
    const char *prefixes[] = {"rf-"};
    struct an_read_all_opts ao = {.stream_prefixes = prefixes, .n_stream_prefixes = 1};
    struct an_error err;
    uint64_t last = 0;
    an_iter *it;
    int n;

    for (int i = 0; i < 4; i++) {
        cr_assert_eq(append1(c, "rf-1", NULL), 0);
    }
    cr_assert_eq(an_read_stream(c, &so, &it), 0);
    cr_assert_eq(read_count(it, &n, &last, &err), 0);
    cr_assert_eq(n, 3);
    an_iter_free(it);
    cr_assert_eq(an_iter_supply(NULL, NULL), AN_EINVAL);

    /* Down but still closed: reads fail as they are, no fallback. */
    cr_assert_eq(h_stop(&h), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(an_read_stream(c, &so, &it), 0);
        cr_assert_eq(read_count(it, &n, &last, &err), AN_EUNAVAIL);
        an_iter_free(it);
    }
    cr_assert_eq(atomic_load(&read_fb_calls), 0, "fallback used before the breaker opened");
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);

    /* Open: the fallback answers, with the request as it would be sent. */
    cr_assert_eq(an_read_stream(c, &so, &it), 0);
    cr_assert_eq(read_count(it, &n, &last, &err), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(last, 2);
    an_iter_free(it);
    struct an_read_stream_opts other = {.stream = "rf-2"};
    cr_assert_eq(an_read_stream(c, &other, &it), 0);
    cr_assert_eq(read_count(it, &n, &last, &err), AN_ENOTFOUND);
    cr_assert_eq(n, 0);
    cr_assert_not_null(strstr(err.detail, "read fallback"), "detail: %s", err.detail);
    an_iter_free(it);
    /* Events, then the fallback's error: the read is not retried. */
    cr_assert_eq(an_read_all(c, &ao, &it), 0);
    cr_assert_eq(read_count(it, &n, &last, &err), AN_EUNAVAIL);
    cr_assert_eq(n, 1);
    cr_assert_eq(err.code, AN_EUNAVAIL);
    an_iter_free(it);
    cr_assert_eq(atomic_load(&read_fb_calls), 3);
    an_close(c);
}

/* ---- the appender under the breaker ---- */

struct acks {
    atomic_int ok;
    atomic_int failed;
    atomic_int last_rc;
};

static void on_ack(void *arg, uint64_t id, int rc, const struct an_append_result *res,
                   const struct an_error *err)
{
    struct acks *k = arg;
    (void)id;
    (void)res;
    (void)err;
    if (rc == 0) {
        atomic_fetch_add(&k->ok, 1);
    } else {
        atomic_fetch_add(&k->failed, 1);
        atomic_store(&k->last_rc, rc);
    }
}

static int submit1(an_appender *a, const char *stream)
{
    struct an_event e = {.type = "T", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    return an_appender_submit(a, &sa, 1, NULL);
}

Test(client_resilience, appender_fails_fast_while_open_and_its_failures_open_the_breaker)
{
    struct an_client_opts o = {.timeout_ms = 2000, .max_retries = -1, .breaker_threshold = 1,
                               .breaker_cooldown_ms = 400};
    an_client *c = client(h.addr, o);
    struct acks k = {0};
    an_appender *a = NULL;

    cr_assert_eq(an_appender_open(c, 8, on_ack, &k, &a), 0);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(submit1(a, "ap-1"), 0);
    }
    int64_t until = now_ms() + 5000;
    while (atomic_load(&k.ok) < 5) {
        cr_assert_lt(now_ms(), until);
        sleep_ms(5);
    }
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_CLOSED);

    /* The server dies under a live appender: the call's end (a transport
     * failure, UNAVAILABLE) counts, and with a threshold of 1 opens the
     * breaker. (SIGKILL, not SIGTERM: annalsd waits out its 3 s grace for
     * an idle AppendStream and then aborts in grpc_server_cancel_all_calls;
     * see the report of issue 5.) */
    h_kill(&h);
    cr_assert_neq(an_appender_close(a), 0);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);
    cr_assert_geq(seen_find(AN_BREAKER_CLOSED, AN_BREAKER_OPEN, 0), 0);

    /* Open: opening fails at once, nothing is sent. */
    for (int i = 0; i < 20; i++) {
        int64_t t = now_ms();
        a = NULL;
        cr_assert_eq(an_appender_open(c, 8, on_ack, &k, &a), AN_ECIRCUIT);
        cr_assert_null(a);
        /* fast: far less than the 2 s call timeout it would wait out */
        cr_assert_lt(now_ms() - t, 1000, "took %lld ms", (long long)(now_ms() - t));
    }

    /* Still down after the cool-down: the appender is the probe and its
     * failed open reopens the breaker. */
    sleep_ms(500);
    cr_assert_eq(an_appender_open(c, 8, on_ack, &k, &a), AN_EUNAVAIL);
    cr_assert_geq(seen_find(AN_BREAKER_HALF_OPEN, AN_BREAKER_OPEN, 0), 0);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_OPEN);

    /* Back: after the cool-down the appender probes; its first result
     * closes the breaker. */
    h_restart(&h);
    sleep_ms(500);
    int rc;
    until = now_ms() + 10000;
    while ((rc = an_appender_open(c, 8, on_ack, &k, &a)) != 0) {
        cr_assert(rc == AN_EUNAVAIL || rc == AN_ECIRCUIT, "got %s", an_errname(rc));
        cr_assert_lt(now_ms(), until, "no appender after the restart");
        sleep_ms(50);
    }
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_HALF_OPEN, "the open is the probe");
    cr_assert_eq(submit1(a, "ap-1"), 0);
    cr_assert_eq(an_appender_close(a), 0);
    cr_assert_eq(atomic_load(&k.ok), 6);
    cr_assert_eq(an_breaker_state(c, h.addr), AN_BREAKER_CLOSED);
    cr_assert_geq(seen_find(AN_BREAKER_HALF_OPEN, AN_BREAKER_CLOSED, 0), 0);
    an_close(c);
}

Test(client_resilience, appenders_open_on_the_live_endpoint_of_two)
{
    char target[160];
    struct an_client_opts o = {.timeout_ms = 2000, .health_interval_ms = 100};
    struct acks k = {0};

    h_start(&h2, NULL);
    snprintf(target, sizeof(target), "%s,%s", h2.addr, h.addr);
    an_client *c = client(target, o);
    h_kill(&h2);
    sleep_ms(500); /* the health thread marks it down */
    for (int i = 0; i < 6; i++) {
        an_appender *a = NULL;
        int rc = an_appender_open(c, 8, on_ack, &k, &a);
        cr_assert_eq(rc, 0, "open %d: %s", i, an_errname(rc));
        cr_assert_eq(submit1(a, "ap-2"), 0);
        cr_assert_eq(an_appender_close(a), 0);
    }
    cr_assert_eq(atomic_load(&k.ok), 6);
    struct an_stream_info si;
    cr_assert_eq(an_get_stream(h.client, "ap-2", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 6);
    an_close(c);
}

/* The ids libannals gives events without one (for exact retries) are UUID
 * v7: the unix milliseconds of the call, so that the server's id index
 * takes them at its right edge; two appends later in time sort after. */
Test(client_resilience, ids_the_client_makes_are_time_ordered_uuid_v7)
{
    struct an_event e = {.type = "T", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = "ids-v7", .events = &e, .n_events = 1};
    int64_t t0 = (int64_t)time(NULL) * 1000;
    cr_assert_eq(an_append(h.client, &sa, 1, NULL, NULL), 0);
    sleep_ms(5);
    cr_assert_eq(an_append(h.client, &sa, 1, NULL, NULL), 0);
    int64_t t1 = (int64_t)time(NULL) * 1000 + 1000;
    an_iter *it;
    const Annals__V1__RecordedEvent *ev;
    struct an_read_stream_opts o = {.stream = "ids-v7"};
    cr_assert_eq(an_read_stream(h.client, &o, &it), 0);
    uint8_t ids[2][16];
    int n = 0;
    while (an_iter_next(it, &ev, NULL) == 1) {
        cr_assert_lt(n, 2);
        cr_assert_eq(ev->id.len, 16);
        memcpy(ids[n++], ev->id.data, 16);
    }
    an_iter_free(it);
    cr_assert_eq(n, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ids[i][6] >> 4, 7, "version nibble %x", ids[i][6] >> 4);
        cr_assert_eq(ids[i][8] >> 6, 2, "variant");
        int64_t ms = 0;
        for (int k = 0; k < 6; k++) {
            ms = ms << 8 | ids[i][k];
        }
        cr_assert(ms >= t0 && ms <= t1, "id %d: %lld ms is not the call's time", i, (long long)ms);
    }
    cr_assert_lt(memcmp(ids[0], ids[1], 16), 0, "the later id sorts after");
}

/*
 * test_consumers.c - consumer groups (annals.v1.Consumers) against a real
 * annalsd: the edges of the contract that test_groups.c does not reach.
 * The prefetch limits (0 means 16, above 10 000 is refused); what a
 * definition selects (one stream, a filter, from_position, from_end, and
 * never a "$" stream); a settle of another consumer's event; settles
 * queued at close; exact counters through ack, nack, park, the ack
 * timeout and max_deliveries (with each $Parked reason), across a replay
 * and a restart; one of four consumers leaving while four writers append;
 * a graceful restart under four consumers; a consumer that gives up
 * reconnecting after the client's timeout; ordered_per_stream holding a
 * stream behind a nack; a group deleted and created again; an event whose
 * consumers keep dying, parked after max_deliveries; the name and
 * definition checks; an event parked and replayed round after round.
 *
 * Counts are small and waits bounded so that the binary runs well under a
 * minute.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

static struct harness h;

static void setup(void)
{
    h_start(&h, NULL);
}

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(consumers, .init = setup, .fini = teardown, .timeout = 90);

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

static uint64_t append_c(an_client *c, const char *stream, const char *type, int i)
{
    char data[64];
    int n = snprintf(data, sizeof(data), "{\"i\":%d}", i);
    struct an_event e = {.type = type, .data = data, .data_len = (size_t)n};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    struct an_append_result r;
    struct an_error err;
    int rc = an_append(c, &sa, 1, &r, &err);
    cr_assert_eq(rc, 0, "append: %s (%s)", an_strerror(rc), err.detail);
    return r.last_position;
}

static uint64_t append(const char *stream, const char *type, int i)
{
    return append_c(h.client, stream, type, i);
}

static void create(const char *name, const struct an_group_def *d0)
{
    struct an_group_def d = *d0;
    d.name = name;
    struct an_error err;
    int rc = an_group_create(h.client, &d, NULL, &err);
    cr_assert_eq(rc, 0, "create %s: %s (%s)", name, an_strerror(rc), err.detail);
}

static Annals__V1__GroupStatus *status(const char *name)
{
    Annals__V1__GroupStatus *st = NULL;
    struct an_error err;
    int rc = an_group_get(h.client, name, &st, &err);
    cr_assert_eq(rc, 0, "get %s: %s (%s)", name, an_strerror(rc), err.detail);
    return st;
}

/* The status once nothing is in flight and the checkpoint is >= ckpt. */
static Annals__V1__GroupStatus *status_settled(const char *name, uint64_t ckpt)
{
    for (int i = 0; i < 200; i++) {
        Annals__V1__GroupStatus *st = status(name);
        if (st->in_flight == 0 && st->checkpoint >= ckpt) return st;
        an_group_status_free(st);
        sleep_ms(20);
    }
    return status(name);
}

static an_consumer *consumer(const char *group, uint32_t prefetch)
{
    an_consumer *k;
    cr_assert_eq(an_consumer_open(h.client, group, prefetch, &k), 0);
    return k;
}

/* The next delivery within timeout_ms; false when none came. */
static bool next(an_consumer *k, int timeout_ms, struct an_delivery *d)
{
    struct an_error err;
    int rc = an_consumer_next(k, timeout_ms, d, &err);
    cr_assert_geq(rc, 0, "consumer ended: %s (%s)", an_errname(rc), err.detail);
    return rc == 1;
}

/* Takes deliveries until none comes for quiet_ms; their count. */
static int drain(an_consumer *k, int quiet_ms, uint64_t *pos, int cap)
{
    struct an_delivery d;
    int n = 0;
    while (next(k, quiet_ms, &d)) {
        if (n < cap && pos) pos[n] = d.event->global_position;
        n++;
    }
    return n;
}

/* Every event of a stream, as JSON data texts (up to cap). */
static int read_data(const char *stream, char out[][512], int cap)
{
    struct an_read_stream_opts ro = {.stream = stream};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    cr_assert_eq(an_read_stream(h.client, &ro, &it), 0);
    int n = 0;
    int rc;
    while ((rc = an_iter_next(it, &e, NULL)) == 1) {
        cr_assert_str_eq(e->type, "$Parked");
        if (n < cap) {
            snprintf(out[n], 512, "%.*s", (int)e->data.len, (const char *)e->data.data);
        }
        n++;
    }
    cr_assert(rc == 0 || rc == AN_ENOTFOUND, "read %s: %s", stream, an_errname(rc));
    an_iter_free(it);
    return n;
}

/* ---- prefetch ---- */

Test(consumers, prefetch_zero_means_16_and_above_10000_is_refused)
{
    create("pf", &(struct an_group_def){0});
    for (int i = 0; i < 40; i++) {
        append("pf-s", "E", i);
    }
    an_consumer *k = consumer("pf", 0);
    int n = drain(k, 400, NULL, 0);
    cr_assert_eq(n, 16, "prefetch 0 holds 16, got %d", n);
    Annals__V1__GroupStatus *st = status("pf");
    cr_assert_eq(st->in_flight, 16);
    cr_assert_eq(st->consumers, 1);
    an_group_status_free(st);
    an_consumer_close(k);

    an_consumer *big = consumer("pf", 10001);
    struct an_delivery d;
    struct an_error err;
    int rc = an_consumer_next(big, 3000, &d, &err);
    cr_assert_eq(rc, AN_EINVAL, "prefetch 10001: %s", an_errname(rc));
    cr_assert_eq(an_consumer_next(big, 0, &d, NULL), AN_EINVAL, "the same code again");
    an_consumer_close(big);

    an_consumer *max = consumer("pf", 10000);
    n = drain(max, 400, NULL, 0);
    cr_assert_eq(n, 40, "prefetch 10000 is accepted and takes all 40: %d", n);
    an_consumer_close(max);
}

/* ---- what a definition selects ---- */

Test(consumers, a_definition_selects_its_stream_filter_and_start_but_no_dollar_stream)
{
    uint64_t p[8];
    p[0] = append("sel-a", "Keep", 0);
    p[1] = append("sel-b", "Keep", 1);
    p[2] = append("sel-a", "Drop", 2);
    p[3] = append("other", "Keep", 3);
    create("one", &(struct an_group_def){.stream = "sel-a"});
    create("filt", &(struct an_group_def){.stream_prefixes = (const char *const[]){"sel-"},
                                          .n_stream_prefixes = 1,
                                          .event_types = (const char *const[]){"Keep"},
                                          .n_event_types = 1});
    create("from", &(struct an_group_def){.from_position = p[2]});
    create("end", &(struct an_group_def){.from_end = true});
    create("parkall", &(struct an_group_def){.max_deliveries = 1});
    p[4] = append("sel-a", "Keep", 4);

    struct {
        const char *group;
        int n;
        uint64_t want[5];
    } cases[] = {
        {"one", 3, {p[0], p[2], p[4]}},
        {"filt", 3, {p[0], p[1], p[4]}},
        {"from", 3, {p[2], p[3], p[4]}},
        {"end", 1, {p[4]}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        an_consumer *k = consumer(cases[c].group, 0);
        uint64_t got[8];
        int n = drain(k, 400, got, 8);
        cr_assert_eq(n, cases[c].n, "%s: %d events", cases[c].group, n);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(got[i], cases[c].want[i], "%s: event %d is %llu", cases[c].group, i,
                         (unsigned long long)got[i]);
        }
        an_consumer_close(k);
    }

    /* a park appends to "$parked-parkall"; an all-streams group ignores it */
    an_consumer *k = consumer("parkall", 0);
    struct an_delivery d;
    cr_assert(next(k, 3000, &d));
    cr_assert_eq(d.event->global_position, p[0]);
    an_consumer_nack(k, p[0], "no");
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = NULL;
    for (int i = 0; i < 100; i++) {
        an_group_status_free(st);
        st = status("parkall");
        if (st->parked == 1) break;
        sleep_ms(20);
    }
    cr_assert_eq(st->parked, 1, "max_deliveries 1: the first nack parks");
    uint64_t head = st->head;
    an_group_status_free(st);
    cr_assert_gt(head, p[4], "the $Parked event is in the log");
    int n = 0;
    while (next(k, 400, &d)) {
        cr_assert_str_neq(d.event->stream, "$parked-parkall", "a $ stream was selected");
        an_consumer_ack(k, d.event->global_position);
        n++;
    }
    cr_assert_eq(n, 4, "the other four events");
    an_consumer_close(k);
}

/* ---- settles that belong elsewhere, settles queued at close ---- */

Test(consumers, a_settle_of_another_consumers_event_is_ignored)
{
    create("foreign", &(struct an_group_def){0});
    append("f-s", "E", 0);
    append("f-s", "E", 1);
    an_consumer *a = consumer("foreign", 1);
    an_consumer *b = consumer("foreign", 1);
    struct an_delivery d;
    cr_assert(next(a, 3000, &d));
    uint64_t pa = d.event->global_position;
    cr_assert(next(b, 3000, &d));
    uint64_t pb = d.event->global_position;
    cr_assert_neq(pa, pb);

    an_consumer_ack(a, pb);
    an_consumer_park(a, pb, "not mine");
    an_consumer_flush(a, NULL);
    sleep_ms(200);
    Annals__V1__GroupStatus *st = status("foreign");
    cr_assert_eq(st->acked, 0, "a's settles of b's event did not count");
    cr_assert_eq(st->parked, 0);
    cr_assert_eq(st->in_flight, 2);
    an_group_status_free(st);

    an_consumer_ack(b, pb);
    an_consumer_ack(a, pa);
    an_consumer_flush(b, NULL);
    an_consumer_flush(a, NULL);
    st = status_settled("foreign", 2);
    cr_assert_eq(st->acked, 2);
    cr_assert_eq(st->delivered, 2);
    cr_assert_eq(st->redelivered, 0);
    an_group_status_free(st);
    an_consumer_close(a);
    an_consumer_close(b);
}

Test(consumers, close_sends_the_queued_settles_first)
{
    create("closing", &(struct an_group_def){0});
    for (int i = 0; i < 8; i++) {
        append("cl-s", "E", i);
    }
    an_consumer *k = consumer("closing", 8);
    struct an_delivery d;
    for (int i = 0; i < 5; i++) {
        cr_assert(next(k, 3000, &d));
        an_consumer_ack(k, d.event->global_position); /* queued, not flushed */
    }
    an_consumer_close(k); /* 5 acked, 3 held and handed back */
    k = consumer("closing", 8);
    int n = 0;
    while (next(k, 400, &d)) {
        cr_assert_eq(d.attempt, 2, "only the unsettled ones come again");
        an_consumer_ack(k, d.event->global_position);
        n++;
    }
    cr_assert_eq(n, 3);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("closing", 8);
    cr_assert_eq(st->acked, 8);
    cr_assert_eq(st->delivered, 11);
    cr_assert_eq(st->redelivered, 3);
    an_group_status_free(st);
    an_consumer_close(k);
}

/* ---- exact counters ---- */

static void check_counters(const Annals__V1__GroupStatus *st, uint64_t delivered,
                           uint64_t acked, uint64_t redelivered, uint64_t parked)
{
    cr_assert_eq(st->delivered, delivered, "delivered %llu", (unsigned long long)st->delivered);
    cr_assert_eq(st->acked, acked, "acked %llu", (unsigned long long)st->acked);
    cr_assert_eq(st->redelivered, redelivered, "redelivered %llu",
                 (unsigned long long)st->redelivered);
    cr_assert_eq(st->parked, parked, "parked %llu", (unsigned long long)st->parked);
    cr_assert_eq(st->in_flight, 0);
}

/*
 * Six events of stream "cnt", max_deliveries 2, ack timeout 300 ms:
 *   v0 acked;                        1 delivery
 *   v1 nacked, then acked;           2 deliveries, 1 redelivery
 *   v2 parked ("explicit");          1 delivery
 *   v3 nacked twice: parked ("nack-2"); 2 deliveries, 1 redelivery
 *   v4 left to time out, then acked; 2 deliveries, 1 redelivery
 *   v5 never settled: parked ("max_deliveries"); 2 deliveries, 1 redelivery
 */
Test(consumers, counters_are_exact_through_ack_nack_park_timeout_replay_and_restart)
{
    create("cnt", &(struct an_group_def){.max_deliveries = 2, .ack_timeout_ms = 300});
    uint64_t pos[6];
    for (int i = 0; i < 6; i++) {
        pos[i] = append("cnt", "E", i);
    }
    an_consumer *k = consumer("cnt", 16);
    int seen[6] = {0};
    int64_t until = now_ms() + 10000;
    Annals__V1__GroupStatus *st = NULL;
    while (now_ms() < until) {
        struct an_delivery d;
        if (next(k, 100, &d)) {
            int v = (int)d.event->stream_version;
            cr_assert(v >= 0 && v < 6);
            seen[v]++;
            cr_assert_eq(d.attempt, (uint32_t)seen[v], "v%d attempt %u", v, d.attempt);
            char why[16];
            switch (v) {
            case 0: an_consumer_ack(k, pos[v]); break;
            case 1:
                if (d.attempt == 1) {
                    an_consumer_nack(k, pos[v], "nack-1");
                } else {
                    an_consumer_ack(k, pos[v]);
                }
                break;
            case 2: an_consumer_park(k, pos[v], "explicit"); break;
            case 3:
                snprintf(why, sizeof(why), "nack-%u", d.attempt);
                an_consumer_nack(k, pos[v], why);
                break;
            case 4:
                if (d.attempt == 2) an_consumer_ack(k, pos[v]);
                break;
            default: break;
            }
            an_consumer_flush(k, NULL);
            continue;
        }
        an_group_status_free(st);
        st = status("cnt");
        if (st->parked == 3 && st->in_flight == 0 && st->acked == 3) break;
    }
    int want_seen[6] = {1, 2, 1, 2, 2, 2};
    for (int v = 0; v < 6; v++) {
        cr_assert_eq(seen[v], want_seen[v], "v%d handed out %d times", v, seen[v]);
    }
    an_group_status_free(st);
    st = status_settled("cnt", pos[5]);
    check_counters(st, 10, 3, 4, 3);
    an_group_status_free(st);

    char data[4][512];
    int n = read_data("$parked-cnt", data, 4);
    cr_assert_eq(n, 3, "three $Parked events");
    const char *want_reason[3] = {"\"reason\":\"explicit\"", "\"reason\":\"nack-2\"",
                                  "\"reason\":\"max_deliveries\""};
    const char *want_attempts[3] = {"\"attempts\":1", "\"attempts\":2", "\"attempts\":2"};
    int order[3] = {2, 3, 5};
    for (int i = 0; i < 3; i++) {
        char p[64];
        snprintf(p, sizeof(p), "\"original_position\":%llu", (unsigned long long)pos[order[i]]);
        cr_assert_not_null(strstr(data[i], p), "%s", data[i]);
        char v[64];
        snprintf(v, sizeof(v), "\"original_version\":%d", order[i]);
        cr_assert_not_null(strstr(data[i], v), "%s", data[i]);
        cr_assert_not_null(strstr(data[i], want_reason[i]), "%s", data[i]);
        cr_assert_not_null(strstr(data[i], want_attempts[i]), "%s", data[i]);
    }

    /* replay: the three come again at attempt 1; acked, nothing is parked */
    cr_assert_eq(an_group_replay_parked(h.client, "cnt", &st, NULL), 0);
    cr_assert_eq(st->parked, 0);
    an_group_status_free(st);
    int replayed = 0;
    struct an_delivery d;
    while (next(k, 500, &d)) {
        cr_assert_eq(d.attempt, 1);
        int v = (int)d.event->stream_version;
        cr_assert(v == 2 || v == 3 || v == 5, "v%d replayed", v);
        an_consumer_ack(k, d.event->global_position);
        an_consumer_flush(k, NULL);
        replayed++;
    }
    cr_assert_eq(replayed, 3);
    st = status_settled("cnt", pos[5]);
    check_counters(st, 13, 6, 4, 0);
    an_group_status_free(st);
    cr_assert_eq(read_data("$parked-cnt", data, 4), 0, "the dead-letter stream is emptied");

    /* a second replay has nothing to hand out */
    cr_assert_eq(an_group_replay_parked(h.client, "cnt", NULL, NULL), 0);
    cr_assert_eq(next(k, 500, &d), false, "nothing replayed twice");
    an_consumer_close(k);

    /* the counters are stored */
    sleep_ms(100);
    cr_assert_eq(h_stop(&h), 0);
    h_restart(&h);
    st = status("cnt");
    check_counters(st, 13, 6, 4, 0);
    cr_assert_geq(st->checkpoint, pos[5]);
    cr_assert_eq(st->consumers, 0);
    an_group_status_free(st);
    k = consumer("cnt", 0);
    cr_assert_eq(next(k, 500, &d), false, "nothing is handed out again after the restart");
    an_consumer_close(k);
}

/* ---- one of four consumers leaves while four writers append ---- */

#define W_EVENTS 250
#define N_W 4
#define N_C 4
#define TOTAL (W_EVENTS * N_W)
#define LEAVER_PREFETCH 8

struct share {
    atomic_int acked_by[TOTAL + 1];
    atomic_int second[TOTAL + 1];   /* attempt-2 deliveries */
    atomic_int other_attempts;      /* attempts other than 1 and 2 */
    atomic_int acked;
    uint64_t held[LEAVER_PREFETCH]; /* what the leaver had when it left */
    atomic_int n_held;
};

static struct share S;

static void *writer_main(void *arg)
{
    intptr_t w = (intptr_t)arg;
    an_client *c = h_client(&h);
    char stream[32];
    for (int i = 0; i < W_EVENTS; i++) {
        snprintf(stream, sizeof(stream), "lw-%d-%d", (int)w, i % 3);
        append_c(c, stream, "Job", i);
    }
    an_close(c);
    return NULL;
}

/* Consumer 0 acks 50 events, then takes its prefetch and leaves. */
static void *share_main(void *arg)
{
    intptr_t id = (intptr_t)arg;
    an_client *c = h_client(&h);
    an_consumer *k;
    cr_assert_eq(an_consumer_open(c, "leave4", id == 0 ? LEAVER_PREFETCH : 16, &k), 0);
    int mine = 0;
    int64_t until = now_ms() + 40000;
    while (atomic_load(&S.acked) < TOTAL && now_ms() < until) {
        struct an_delivery d;
        struct an_error err;
        int rc = an_consumer_next(k, 100, &d, &err);
        cr_assert_geq(rc, 0, "consumer %d ended: %s (%s)", (int)id, an_errname(rc), err.detail);
        if (rc == 0) continue;
        uint64_t p = d.event->global_position;
        cr_assert(p >= 1 && p <= TOTAL);
        if (d.attempt == 2) {
            atomic_fetch_add(&S.second[p], 1);
        } else if (d.attempt != 1) {
            atomic_fetch_add(&S.other_attempts, 1);
        }
        if (id == 0 && mine >= 50) {
            int n = atomic_fetch_add(&S.n_held, 1);
            cr_assert_lt(n, LEAVER_PREFETCH);
            S.held[n] = p;
            if (n + 1 == LEAVER_PREFETCH) break;
            continue;
        }
        mine++;
        atomic_fetch_add(&S.acked_by[p], 1);
        cr_assert_eq(an_consumer_ack(k, p), 0);
        atomic_fetch_add(&S.acked, 1);
    }
    if (id == 0) {
        an_consumer_flush(k, NULL); /* the 50 acks; the held ones stay unsettled */
    }
    an_consumer_close(k);
    an_close(c);
    return NULL;
}

Test(consumers, one_of_four_consumers_leaves_while_four_writers_append)
{
    create("leave4", &(struct an_group_def){0});
    memset(&S, 0, sizeof(S));
    pthread_t w[N_W];
    pthread_t k[N_C];
    for (intptr_t i = 0; i < N_C; i++) {
        pthread_create(&k[i], NULL, share_main, (void *)i);
    }
    for (intptr_t i = 0; i < N_W; i++) {
        pthread_create(&w[i], NULL, writer_main, (void *)i);
    }
    for (int i = 0; i < N_W; i++) {
        pthread_join(w[i], NULL);
    }
    for (int i = 0; i < N_C; i++) {
        pthread_join(k[i], NULL);
    }
    int held = atomic_load(&S.n_held);
    cr_assert_eq(held, LEAVER_PREFETCH, "the leaver left holding %d", held);
    int twice = 0;
    for (int p = 1; p <= TOTAL; p++) {
        cr_assert_eq(atomic_load(&S.acked_by[p]), 1, "position %d acked %d times", p,
                     atomic_load(&S.acked_by[p]));
        twice += atomic_load(&S.second[p]);
    }
    for (int i = 0; i < held; i++) {
        cr_assert_eq(atomic_load(&S.second[S.held[i]]), 1, "held %llu came again at attempt 2",
                     (unsigned long long)S.held[i]);
    }
    cr_assert_eq(atomic_load(&S.other_attempts), 0);
    Annals__V1__GroupStatus *st = status_settled("leave4", TOTAL);
    /* the leaver may also have left deliveries it had received but not
     * taken (still in its message): those came again at attempt 2 too */
    cr_assert_eq(st->redelivered, (uint64_t)twice);
    cr_assert_eq(st->delivered, (uint64_t)(TOTAL + twice));
    cr_assert_eq(st->acked, TOTAL);
    cr_assert_eq(st->checkpoint, TOTAL);
    an_group_status_free(st);
}

/* ---- a graceful restart under four consumers ---- */

#define R_EVENTS 600
#define R_PREFETCH 8

struct restart {
    atomic_int seen[R_EVENTS + 1];
    atomic_int acked_once;          /* positions acked at least once */
    atomic_int handled;
    atomic_bool stop;
};

static struct restart R;

/* arg: its client, connected by the test before the restart rewrites h */
static void *restart_main(void *arg)
{
    an_client *c = arg;
    an_consumer *k;
    cr_assert_eq(an_consumer_open(c, "rs4", R_PREFETCH, &k), 0);
    while (!atomic_load(&R.stop)) {
        struct an_delivery d;
        struct an_error err;
        int rc = an_consumer_next(k, 100, &d, &err);
        cr_assert_geq(rc, 0, "consumer ended: %s (%s)", an_errname(rc), err.detail);
        if (rc == 0) continue;
        uint64_t p = d.event->global_position;
        cr_assert(p >= 1 && p <= R_EVENTS);
        if (atomic_fetch_add(&R.seen[p], 1) == 0) {
            atomic_fetch_add(&R.acked_once, 1);
        }
        atomic_fetch_add(&R.handled, 1);
        sleep_ms(1);
        an_consumer_ack(k, p);
    }
    an_consumer_close(k);
    an_close(c);
    return NULL;
}

Test(consumers, a_graceful_restart_under_four_consumers_loses_nothing)
{
    create("rs4", &(struct an_group_def){0});
    for (int i = 0; i < R_EVENTS; i++) {
        append("rs4-s", "E", i);
    }
    memset(&R, 0, sizeof(R));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, restart_main, h_client(&h));
    }
    while (atomic_load(&R.handled) < R_EVENTS / 3) {
        sleep_ms(5);
    }
    cr_assert_eq(h_stop(&h), 0, "SIGTERM: a clean exit");
    h_restart(&h);
    int64_t until = now_ms() + 30000;
    while (atomic_load(&R.acked_once) < R_EVENTS && now_ms() < until) {
        sleep_ms(20);
    }
    Annals__V1__GroupStatus *st = status_settled("rs4", R_EVENTS);
    atomic_store(&R.stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    int again = 0;
    for (int p = 1; p <= R_EVENTS; p++) {
        cr_assert_gt(atomic_load(&R.seen[p]), 0, "position %d never handed out", p);
        again += atomic_load(&R.seen[p]) - 1;
    }
    /* only what was in flight at the stop comes again: 4 x prefetch */
    cr_assert_leq(again, 4 * R_PREFETCH, "%d handed out again", again);
    cr_assert_eq(st->checkpoint, R_EVENTS);
    an_group_status_free(st);
    cr_log_info("graceful restart: %d handed out again", again);
}

/* ---- reconnecting gives up ---- */

Test(consumers, a_consumer_gives_up_reconnecting_after_the_client_timeout)
{
    create("gone", &(struct an_group_def){0});
    append("gone-s", "E", 0);
    struct an_client_opts o = {.timeout_ms = 1500};
    an_client *c;
    cr_assert_eq(an_connect(h.addr, &o, &c), 0);
    an_consumer *k;
    cr_assert_eq(an_consumer_open(c, "gone", 0, &k), 0);
    struct an_delivery d;
    cr_assert_eq(an_consumer_next(k, 3000, &d, NULL), 1);
    cr_assert_eq(h_stop(&h), 0);
    int64_t t0 = now_ms();
    int rc;
    int timeouts = 0;
    struct an_error err;
    while ((rc = an_consumer_next(k, 200, &d, &err)) == AN_SUB_TIMEOUT && now_ms() - t0 < 8000) {
        timeouts++;
    }
    int64_t took = now_ms() - t0;
    cr_assert(rc == AN_EUNAVAIL || rc == AN_ECIRCUIT, "ended with %s", an_errname(rc));
    cr_assert_geq(took, 1300, "gave up after %lld ms, before the timeout", (long long)took);
    cr_assert_leq(took, 4000, "gave up after %lld ms", (long long)took);
    cr_assert_gt(timeouts, 0, "it kept trying meanwhile");
    cr_assert_eq(an_consumer_next(k, 0, &d, NULL), rc, "the same code again");
    an_consumer_close(k);
    an_close(c);
}

/* ---- ordered per stream behind a nack ---- */

Test(consumers, ordered_per_stream_holds_a_stream_behind_its_nacked_event)
{
    create("ord", &(struct an_group_def){.ordered_per_stream = true});
    uint64_t s0 = append("ord-s", "E", 0);
    uint64_t s1 = append("ord-s", "E", 1);
    uint64_t t0 = append("ord-t", "E", 0);
    an_consumer *k = consumer("ord", 10);
    uint64_t got[4];
    int n = drain(k, 400, got, 4);
    cr_assert_eq(n, 2, "one event per stream in flight: %d", n);
    cr_assert_eq(got[0], s0);
    cr_assert_eq(got[1], t0);
    an_consumer_nack(k, s0, "later");
    an_consumer_ack(k, t0);
    struct an_delivery d;
    cr_assert(next(k, 3000, &d));
    cr_assert_eq(d.event->global_position, s0, "the nacked event again, not its successor");
    cr_assert_eq(d.attempt, 2);
    cr_assert_eq(next(k, 300, &d), false, "s1 waits for s0");
    an_consumer_ack(k, s0);
    cr_assert(next(k, 3000, &d));
    cr_assert_eq(d.event->global_position, s1);
    an_consumer_ack(k, s1);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("ord", s1);
    check_counters(st, 4, 3, 1, 0);
    an_group_status_free(st);
    an_consumer_close(k);
}

/* ---- deleted and created again ---- */

Test(consumers, a_group_deleted_and_created_again_starts_afresh_and_its_parked_stream_stays)
{
    struct an_group_def def = {.stream = "dc-s", .max_deliveries = 1};
    create("dc", &def);
    uint64_t p0 = append("dc-s", "E", 0);
    uint64_t p1 = append("dc-s", "E", 1);
    an_consumer *k = consumer("dc", 0);
    struct an_delivery d;
    cr_assert(next(k, 3000, &d));
    an_consumer_park(k, p0, "gone");
    cr_assert(next(k, 3000, &d));
    an_consumer_ack(k, p1);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("dc", p1);
    check_counters(st, 2, 1, 0, 1);
    an_group_status_free(st);

    cr_assert_eq(an_group_delete(h.client, "dc", NULL), 0);
    struct an_error err;
    int rc;
    int64_t until = now_ms() + 5000;
    while ((rc = an_consumer_next(k, 200, &d, &err)) >= 0 && now_ms() < until) {
    }
    cr_assert_eq(rc, AN_ENOTFOUND, "got %s", an_errname(rc));
    an_consumer_close(k);
    char data[2][512];
    cr_assert_eq(read_data("$parked-dc", data, 2), 1, "the parked stream stays");

    create("dc", &def);
    st = status("dc");
    check_counters(st, 0, 0, 0, 0);
    an_group_status_free(st);
    k = consumer("dc", 0);
    uint64_t got[4];
    int n = drain(k, 400, got, 4);
    cr_assert_eq(n, 2, "both events again: %d", n);
    cr_assert_eq(got[0], p0);
    cr_assert_eq(got[1], p1);
    an_consumer_close(k);
}

/* ---- a poison event that kills its consumer ---- */

Test(consumers, an_event_whose_consumers_keep_dying_is_parked_after_max_deliveries)
{
    create("crash", &(struct an_group_def){.max_deliveries = 2});
    uint64_t p = append("crash-s", "E", 0);
    struct an_delivery d;
    for (uint32_t attempt = 1; attempt <= 2; attempt++) {
        an_consumer *k = consumer("crash", 0);
        cr_assert(next(k, 3000, &d));
        cr_assert_eq(d.event->global_position, p);
        cr_assert_eq(d.attempt, attempt);
        an_consumer_close(k); /* "crashes": leaves without settling */
    }
    Annals__V1__GroupStatus *st = status_settled("crash", p);
    check_counters(st, 2, 0, 1, 1);
    an_group_status_free(st);
    an_consumer *k = consumer("crash", 0);
    cr_assert_eq(next(k, 400, &d), false, "not handed out a third time");
    an_consumer_close(k);
    char data[2][512];
    cr_assert_eq(read_data("$parked-crash", data, 2), 1);
    cr_assert_not_null(strstr(data[0], "\"reason\":\"max_deliveries\""), "%s", data[0]);
    cr_assert_not_null(strstr(data[0], "\"attempts\":2"), "%s", data[0]);
}

/* ---- names and definitions ---- */

Test(consumers, names_and_definitions_are_checked)
{
    char n64[65];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    create(n64, &(struct an_group_def){0});
    create("a_b-9", &(struct an_group_def){0});
    char n65[66];
    memset(n65, 'a', 65);
    n65[65] = '\0';
    const char *bad_names[] = {n65, "", "UPPER", "dot.ted", "sp ace", "$parked"};
    struct an_error err;
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        struct an_group_def d = {.name = bad_names[i]};
        int rc = an_group_create(h.client, &d, NULL, &err);
        cr_assert_eq(rc, AN_EINVAL, "name \"%s\": %s", bad_names[i], an_errname(rc));
        cr_assert_eq(err.grpc_status, 3, "INVALID_ARGUMENT");
    }
    struct an_group_def d = {.name = "st", .stream = "s",
                             .event_types = (const char *const[]){"T"}, .n_event_types = 1};
    cr_assert_eq(an_group_create(h.client, &d, NULL, &err), AN_EINVAL, "a stream with types");
    d = (struct an_group_def){.name = "nul", .n_stream_prefixes = 1};
    cr_assert_eq(an_group_create(h.client, &d, NULL, &err), AN_EINVAL, "a NULL array");
    cr_assert_eq(err.grpc_status, 0, "refused by the client");
    Annals__V1__ListGroupsResponse *l;
    cr_assert_eq(an_group_list(h.client, &l, NULL), 0);
    cr_assert_eq(l->n_groups, 2, "only the two good ones exist");
    an_group_list_free(l);
}

/* ---- parked, replayed, parked again ---- */

Test(consumers, a_replayed_event_can_be_parked_and_replayed_again)
{
    create("again", &(struct an_group_def){.max_deliveries = 1});
    uint64_t p = append("again-s", "E", 0);
    an_consumer *k = consumer("again", 0);
    struct an_delivery d;
    char data[3][512];
    for (int round = 1; round <= 3; round++) {
        cr_assert(next(k, 3000, &d), "round %d: handed out", round);
        cr_assert_eq(d.event->global_position, p);
        cr_assert_eq(d.attempt, 1);
        char why[16];
        snprintf(why, sizeof(why), "round-%d", round);
        an_consumer_nack(k, p, why);
        an_consumer_flush(k, NULL);
        Annals__V1__GroupStatus *st = NULL;
        for (int i = 0; i < 100; i++) {
            an_group_status_free(st);
            st = status("again");
            if (st->parked == 1 && st->in_flight == 0) break;
            sleep_ms(20);
        }
        cr_assert_eq(st->parked, 1, "round %d: parked", round);
        cr_assert_eq(st->delivered, (uint64_t)round);
        an_group_status_free(st);
        cr_assert_eq(read_data("$parked-again", data, 3), 1,
                     "round %d: the dead-letter stream holds this round's event", round);
        cr_assert_not_null(strstr(data[0], why), "round %d: %s", round, data[0]);
        cr_assert_eq(an_group_replay_parked(h.client, "again", &st, NULL), 0);
        cr_assert_eq(st->parked, 0);
        an_group_status_free(st);
    }
    cr_assert(next(k, 3000, &d), "replayed a third time");
    an_consumer_ack(k, p);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("again", p);
    check_counters(st, 4, 1, 0, 0);
    an_group_status_free(st);
    an_consumer_close(k);
}

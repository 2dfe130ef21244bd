/*
 * test_groups.c - consumer groups (annals.v1.Consumers) through libannals
 * against a real annalsd: the group calls and their errors; 4 consumers
 * sharing a group while 4 writers append, each event acked exactly once;
 * a consumer that leaves with events unsettled; a server restart in the
 * middle (the same consumer reconnects); a poison event parked after
 * max_deliveries into "$parked-<group>" while the rest flows; ordered
 * per stream with 4 consumers; the ack timeout; ReplayParked; deleting a
 * group under its consumers.
 */
#include <criterion/criterion.h>
#include <lmdb.h>
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

TestSuite(groups, .init = setup, .fini = teardown, .timeout = 90);

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

static uint64_t append(an_client *c, const char *stream, const char *type, int i)
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

/* The group's status once nothing is in flight and its checkpoint is at
 * least `ckpt` (the server's own view settles a moment after the acks). */
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

/* ---- the group calls ---- */

Test(groups, create_get_list_delete_and_their_errors)
{
    struct an_group_def d = {.stream_prefixes = (const char *const[]){"order-"},
                             .n_stream_prefixes = 1, .max_deliveries = 3};
    create("orders", &d);
    create("orders", &d); /* identical: accepted again */
    struct an_error err;
    struct an_group_def other = d;
    other.name = "orders";
    other.max_deliveries = 4;
    cr_assert_eq(an_group_create(h.client, &other, NULL, &err), AN_EEXIST);
    cr_assert_eq(err.grpc_status, 6, "ALREADY_EXISTS");

    struct an_group_def bad = {.name = "Bad Name"};
    cr_assert_eq(an_group_create(h.client, &bad, NULL, &err), AN_EINVAL);
    cr_assert_not_null(strstr(err.detail, "name"), "%s", err.detail);
    bad = (struct an_group_def){.name = "both", .stream = "s",
                                .stream_prefixes = (const char *const[]){"x"},
                                .n_stream_prefixes = 1};
    cr_assert_eq(an_group_create(h.client, &bad, NULL, &err), AN_EINVAL);
    cr_assert_not_null(strstr(err.detail, "filter"), "%s", err.detail);
    bad = (struct an_group_def){.name = "both2", .from_end = true, .from_position = 5};
    cr_assert_eq(an_group_create(h.client, &bad, NULL, &err), AN_EINVAL);

    Annals__V1__GroupStatus *st = status("orders");
    cr_assert_str_eq(st->group->name, "orders");
    cr_assert_eq(st->group->max_deliveries, 3);
    cr_assert_eq(st->consumers, 0);
    an_group_status_free(st);
    create("audit", &(struct an_group_def){.from_end = true});
    Annals__V1__ListGroupsResponse *l;
    cr_assert_eq(an_group_list(h.client, &l, NULL), 0);
    cr_assert_eq(l->n_groups, 2);
    an_group_list_free(l);

    cr_assert_eq(an_group_get(h.client, "nope", &st, &err), AN_ENOTFOUND);
    cr_assert_eq(an_group_delete(h.client, "nope", &err), AN_ENOTFOUND);
    cr_assert_eq(an_group_replay_parked(h.client, "nope", NULL, &err), AN_ENOTFOUND);
    cr_assert_eq(an_group_delete(h.client, "audit", &err), 0);
    cr_assert_eq(an_group_get(h.client, "audit", &st, &err), AN_ENOTFOUND);

    /* joining a group that does not exist */
    an_consumer *k = consumer("nope", 0);
    struct an_delivery dv;
    int rc = an_consumer_next(k, 3000, &dv, &err);
    cr_assert_eq(rc, AN_ENOTFOUND, "got %s", an_errname(rc));
    an_consumer_close(k);

    /* the definitions survive a restart */
    cr_assert_eq(h_stop(&h), 0);
    h_restart(&h);
    st = status("orders");
    cr_assert_not_null(st->group->filter);
    cr_assert_str_eq(st->group->filter->stream_prefixes[0], "order-");
    an_group_status_free(st);
}

/* ---- 4 consumers, 4 writers ---- */

#define W_EVENTS 400
#define N_W 4
#define N_C 4
#define TOTAL (W_EVENTS * N_W)

struct share {
    atomic_int seen[TOTAL + 1];
    atomic_int acked;
    atomic_bool writers_done;
    const char *group;
    uint32_t prefetch;
};

static void *writer_main(void *arg)
{
    intptr_t w = (intptr_t)arg;
    an_client *c;
    cr_assert_eq(an_connect(h.addr, NULL, &c), 0);
    char stream[32];
    for (int i = 0; i < W_EVENTS; i++) {
        snprintf(stream, sizeof(stream), "job-%d-%d", (int)w, i % 5);
        append(c, stream, "Job", i);
    }
    an_close(c);
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct share *s = arg;
    an_client *c;
    cr_assert_eq(an_connect(h.addr, NULL, &c), 0);
    an_consumer *k;
    cr_assert_eq(an_consumer_open(c, s->group, s->prefetch, &k), 0);
    int64_t until = now_ms() + 60000;
    while (atomic_load(&s->acked) < TOTAL && now_ms() < until) {
        struct an_delivery d;
        int rc = an_consumer_next(k, 100, &d, NULL);
        cr_assert_geq(rc, 0, "consumer ended: %s", an_errname(rc));
        if (rc == 0) continue;
        uint64_t p = d.event->global_position;
        cr_assert(p >= 1 && p <= TOTAL);
        atomic_fetch_add(&s->seen[p], 1);
        cr_assert_eq(an_consumer_ack(k, p), 0);
        atomic_fetch_add(&s->acked, 1);
    }
    an_consumer_close(k);
    an_close(c);
    return NULL;
}

Test(groups, four_consumers_share_the_work_and_each_event_is_acked_once)
{
    create("work", &(struct an_group_def){0});
    static struct share s;
    memset(&s, 0, sizeof(s));
    s.group = "work";
    s.prefetch = 32;
    pthread_t w[N_W], k[N_C];
    for (int i = 0; i < N_C; i++) {
        pthread_create(&k[i], NULL, consumer_main, &s);
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
    for (int p = 1; p <= TOTAL; p++) {
        cr_assert_eq(atomic_load(&s.seen[p]), 1, "position %d handed out %d times", p,
                     atomic_load(&s.seen[p]));
    }
    Annals__V1__GroupStatus *st = status_settled("work", TOTAL);
    cr_assert_eq(st->checkpoint, TOTAL);
    cr_assert_eq(st->delivered, TOTAL);
    cr_assert_eq(st->acked, TOTAL);
    cr_assert_eq(st->redelivered, 0);
    cr_assert_eq(st->parked, 0);
    cr_assert_eq(st->in_flight, 0);
    an_group_status_free(st);
}

/* ---- a consumer leaves with events unsettled ---- */

Test(groups, a_consumer_that_leaves_hands_its_events_to_the_others)
{
    create("leave", &(struct an_group_def){0});
    for (int i = 0; i < 30; i++) {
        append(h.client, "leave-s", "E", i);
    }
    an_consumer *a = consumer("leave", 10);
    struct an_delivery d;
    uint64_t held[10];
    int n = 0;
    while (n < 10 && next(a, 2000, &d)) {
        cr_assert_eq(d.attempt, 1);
        held[n++] = d.event->global_position;
    }
    cr_assert_eq(n, 10, "a got its prefetch");
    cr_assert_eq(next(a, 300, &d), false, "no more than the prefetch unsettled");
    Annals__V1__GroupStatus *st = status("leave");
    cr_assert_eq(st->in_flight, 10);
    cr_assert_eq(st->consumers, 1);
    an_group_status_free(st);

    an_consumer *b = consumer("leave", 100);
    an_consumer_close(a); /* leaves without settling */
    int again = 0, fresh = 0;
    int64_t until = now_ms() + 10000;
    while (again + fresh < 30 && now_ms() < until) {
        if (!next(b, 500, &d)) continue;
        uint64_t p = d.event->global_position;
        bool was_held = false;
        for (int i = 0; i < n; i++) {
            was_held |= held[i] == p;
        }
        cr_assert_eq(d.attempt, was_held ? 2u : 1u, "position %llu attempt %u",
                     (unsigned long long)p, d.attempt);
        again += was_held;
        fresh += !was_held;
        an_consumer_ack(b, p);
    }
    cr_assert_eq(again, 10);
    cr_assert_eq(fresh, 20);
    an_consumer_flush(b, NULL);
    st = status_settled("leave", 30);
    cr_assert_eq(st->acked, 30);
    cr_assert_eq(st->delivered, 40);
    cr_assert_eq(st->redelivered, 10);
    cr_assert_eq(st->consumers, 1);
    an_group_status_free(st);
    an_consumer_close(b);
}

/* ---- a server restart mid-run ---- */

Test(groups, a_restart_loses_nothing_and_redelivers_only_unsettled_events)
{
    create("restart", &(struct an_group_def){0});
    for (int i = 0; i < 300; i++) {
        append(h.client, "rs", "E", i);
    }
    an_consumer *k = consumer("restart", 16);
    struct an_delivery d;
    static int seen[301];
    memset(seen, 0, sizeof(seen));
    int acked = 0;
    while (acked < 150) {
        cr_assert(next(k, 3000, &d));
        seen[d.event->global_position]++;
        an_consumer_ack(k, d.event->global_position);
        acked++;
    }
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("restart", 0);
    an_group_status_free(st);
    sleep_ms(300); /* the settles are stored (every 20 ms) */
    h_kill(&h);
    h_restart(&h);
    /* the same consumer joins again by itself */
    int64_t until = now_ms() + 20000;
    int after = 0, redelivered = 0;
    while (now_ms() < until) {
        int done = 1;
        for (int p = 1; p <= 300; p++) {
            done &= seen[p] > 0;
        }
        if (done) break;
        if (!next(k, 500, &d)) continue;
        uint64_t p = d.event->global_position;
        cr_assert(p >= 1 && p <= 300);
        redelivered += seen[p] > 0;
        seen[p]++;
        after++;
        an_consumer_ack(k, p);
    }
    for (int p = 1; p <= 300; p++) {
        cr_assert_gt(seen[p], 0, "position %d never handed out", p);
    }
    /* only what was in flight when the server died comes again: at most
     * the prefetch (16) */
    cr_assert_leq(redelivered, 16, "%d redelivered", redelivered);
    an_consumer_flush(k, NULL);
    st = status_settled("restart", 300);
    cr_assert_eq(st->checkpoint, 300);
    an_group_status_free(st);
    an_consumer_close(k);
    cr_log_info("restart: %d events after the restart, %d of them again", after, redelivered);
}

/* ---- poison, parking, replay ---- */

Test(groups, a_poison_event_is_parked_and_the_rest_flows_then_replayed)
{
    create("poison", &(struct an_group_def){.max_deliveries = 3});
    uint64_t poison = 0;
    for (int i = 0; i < 20; i++) {
        uint64_t p = append(h.client, "p-s", i == 4 ? "Poison" : "Fine", i);
        if (i == 4) poison = p;
    }
    an_consumer *k = consumer("poison", 4);
    struct an_delivery d;
    int fine = 0, attempts = 0;
    int64_t until = now_ms() + 20000;
    while (fine < 19 && now_ms() < until) {
        if (!next(k, 500, &d)) continue;
        if (strcmp(d.event->type, "Poison") == 0) {
            attempts++;
            cr_assert_eq(d.attempt, (uint32_t)attempts);
            an_consumer_nack(k, d.event->global_position, "bad data");
        } else {
            fine++;
            an_consumer_ack(k, d.event->global_position);
        }
    }
    cr_assert_eq(fine, 19);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("poison", 20);
    cr_assert_eq(attempts, 3);
    cr_assert_eq(st->parked, 1);
    cr_assert_eq(st->acked, 19);
    /* 21: the $Parked event itself, scanned and not selected */
    cr_assert_geq(st->checkpoint, 20, "parked counts as settled: %llu",
                  (unsigned long long)st->checkpoint);
    an_group_status_free(st);

    /* the dead-letter stream reads like any stream */
    struct an_read_stream_opts ro = {.stream = "$parked-poison"};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    cr_assert_eq(an_read_stream(h.client, &ro, &it), 0);
    cr_assert_eq(an_iter_next(it, &e, NULL), 1);
    cr_assert_str_eq(e->type, "$Parked");
    char json[512];
    snprintf(json, sizeof(json), "%.*s", (int)e->data.len, (const char *)e->data.data);
    char want[64];
    snprintf(want, sizeof(want), "\"original_position\":%llu", (unsigned long long)poison);
    cr_assert_not_null(strstr(json, want), "%s", json);
    cr_assert_not_null(strstr(json, "\"reason\":\"bad data\""), "%s", json);
    cr_assert_not_null(strstr(json, "\"attempts\":3"), "%s", json);
    cr_assert_not_null(strstr(json, "\"original_type\":\"Poison\""), "%s", json);
    cr_assert_not_null(strstr(json, "\"original_stream\":\"p-s\""), "%s", json);
    cr_assert_eq(an_iter_next(it, &e, NULL), 0, "one parked event");
    an_iter_free(it);

    /* replay: it comes again, attempt 1, and the parked stream is emptied */
    struct an_error err;
    int rrc = an_group_replay_parked(h.client, "poison", &st, &err);
    cr_assert_eq(rrc, 0, "replay: %s (%s)", an_errname(rrc), err.detail);
    cr_assert_eq(st->parked, 0);
    an_group_status_free(st);
    bool got = false;
    for (int i = 0; i < 20 && !got; i++) {
        if (!next(k, 500, &d)) continue;
        cr_assert_eq(d.event->global_position, poison);
        cr_assert_eq(d.attempt, 1);
        an_consumer_ack(k, poison);
        got = true;
    }
    cr_assert(got, "the replayed event was handed out");
    an_consumer_flush(k, NULL);
    cr_assert_eq(an_read_stream(h.client, &ro, &it), 0);
    int rc = an_iter_next(it, &e, NULL);
    cr_assert(rc == 0 || rc == AN_ENOTFOUND, "the parked stream is empty now: %d", rc);
    an_iter_free(it);
    st = status_settled("poison", 20);
    cr_assert_eq(st->acked, 20);
    an_group_status_free(st);
    an_consumer_close(k);
}

Test(groups, an_explicit_park_carries_its_reason)
{
    create("parkit", &(struct an_group_def){0});
    uint64_t p = append(h.client, "pk", "E", 1);
    an_consumer *k = consumer("parkit", 0);
    struct an_delivery d;
    cr_assert(next(k, 3000, &d));
    cr_assert_eq(an_consumer_park(k, p, "schema v0 not supported"), 0);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("parkit", 1);
    cr_assert_eq(st->parked, 1);
    an_group_status_free(st);
    struct an_read_stream_opts ro = {.stream = "$parked-parkit"};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    cr_assert_eq(an_read_stream(h.client, &ro, &it), 0);
    cr_assert_eq(an_iter_next(it, &e, NULL), 1);
    cr_assert_not_null(memmem(e->data.data, e->data.len, "schema v0 not supported", 23));
    cr_assert_not_null(memmem(e->data.data, e->data.len, "\"attempts\":1", 12));
    an_iter_free(it);
    an_consumer_close(k);
}

/* ---- ordered per stream ---- */

#define O_STREAMS 4
#define O_EVENTS 60

struct ordered {
    pthread_mutex_t mu;
    int64_t last_acked[O_STREAMS];
    int in_flight[O_STREAMS];
    atomic_int acked;
    atomic_int violations;
};

static void *ordered_main(void *arg)
{
    struct ordered *o = arg;
    an_client *c;
    cr_assert_eq(an_connect(h.addr, NULL, &c), 0);
    an_consumer *k;
    cr_assert_eq(an_consumer_open(c, "ordered", 8, &k), 0);
    int64_t until = now_ms() + 30000;
    while (atomic_load(&o->acked) < O_STREAMS * O_EVENTS && now_ms() < until) {
        struct an_delivery d;
        int rc = an_consumer_next(k, 100, &d, NULL);
        cr_assert_geq(rc, 0);
        if (rc == 0) continue;
        int s = d.event->stream[2] - '0';
        int64_t v = (int64_t)d.event->stream_version;
        pthread_mutex_lock(&o->mu);
        if (o->last_acked[s] != v - 1 || o->in_flight[s] != 0) {
            atomic_fetch_add(&o->violations, 1);
        }
        o->in_flight[s]++;
        pthread_mutex_unlock(&o->mu);
        sleep_ms(1); /* work, so that others would overtake if they could */
        pthread_mutex_lock(&o->mu);
        o->in_flight[s]--;
        o->last_acked[s] = v;
        pthread_mutex_unlock(&o->mu);
        an_consumer_ack(k, d.event->global_position);
        an_consumer_flush(k, NULL);
        atomic_fetch_add(&o->acked, 1);
    }
    an_consumer_close(k);
    an_close(c);
    return NULL;
}

Test(groups, ordered_per_stream_keeps_each_streams_order_across_four_consumers)
{
    create("ordered", &(struct an_group_def){.ordered_per_stream = true});
    for (int i = 0; i < O_EVENTS; i++) {
        for (int s = 0; s < O_STREAMS; s++) {
            char stream[8];
            snprintf(stream, sizeof(stream), "o-%d", s);
            append(h.client, stream, "E", i);
        }
    }
    static struct ordered o;
    memset(&o, 0, sizeof(o));
    pthread_mutex_init(&o.mu, NULL);
    for (int s = 0; s < O_STREAMS; s++) {
        o.last_acked[s] = -1;
    }
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, ordered_main, &o);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    cr_assert_eq(atomic_load(&o.acked), O_STREAMS * O_EVENTS);
    cr_assert_eq(atomic_load(&o.violations), 0, "%d events out of their stream's order",
                 atomic_load(&o.violations));
    for (int s = 0; s < O_STREAMS; s++) {
        cr_assert_eq(o.last_acked[s], O_EVENTS - 1);
    }
}

/* ---- the ack timeout ---- */

Test(groups, an_unsettled_event_is_handed_out_again_after_the_ack_timeout)
{
    create("slow", &(struct an_group_def){.ack_timeout_ms = 300});
    uint64_t p = append(h.client, "slow-s", "E", 1);
    an_consumer *k = consumer("slow", 0);
    struct an_delivery d;
    cr_assert(next(k, 3000, &d));
    cr_assert_eq(d.attempt, 1);
    int64_t t0 = now_ms();
    cr_assert(next(k, 3000, &d), "handed out again");
    int64_t waited = now_ms() - t0;
    cr_assert_eq(d.event->global_position, p);
    cr_assert_eq(d.attempt, 2);
    cr_assert_geq(waited, 250, "not before the timeout: %lld ms", (long long)waited);
    an_consumer_ack(k, p);
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("slow", 1);
    cr_assert_eq(st->redelivered, 1);
    cr_assert_eq(st->acked, 1);
    an_group_status_free(st);
    an_consumer_close(k);
}

/* ---- settles that do not count, a deleted group ---- */

Test(groups, foreign_and_repeated_settles_are_ignored_and_delete_ends_consumers)
{
    create("idem", &(struct an_group_def){0});
    for (int i = 0; i < 4; i++) {
        append(h.client, "idem-s", "E", i);
    }
    an_consumer *a = consumer("idem", 2);
    struct an_delivery d;
    cr_assert(next(a, 3000, &d));
    uint64_t first = d.event->global_position;
    /* acks of positions a does not hold, twice the same, one never read */
    an_consumer_ack(a, 999);
    an_consumer_ack(a, first);
    an_consumer_ack(a, first);
    an_consumer_nack(a, first, "too late");
    an_consumer_flush(a, NULL);
    Annals__V1__GroupStatus *st = status_settled("idem", 0);
    for (int i = 0; i < 100 && st->acked < 1; i++) {
        an_group_status_free(st);
        sleep_ms(20);
        st = status("idem");
    }
    cr_assert_eq(st->acked, 1);
    cr_assert_eq(st->redelivered, 0, "the nack after the ack did not count");
    an_group_status_free(st);

    cr_assert_eq(an_group_delete(h.client, "idem", NULL), 0);
    struct an_error err;
    int rc;
    int64_t until = now_ms() + 5000;
    while ((rc = an_consumer_next(a, 200, &d, &err)) >= 0 && now_ms() < until) {
    }
    cr_assert_eq(rc, AN_ENOTFOUND, "got %s", an_errname(rc));
    an_consumer_close(a);
}

/* ---- the admin page's and /metrics' figures ---- */

Test(groups, metrics_and_the_admin_api_show_each_group)
{
    h_cleanup(&h);
    const char *flags[] = {"--http", "127.0.0.1:0", NULL};
    h_start(&h, flags);
    create("shown", &(struct an_group_def){0});
    for (int i = 0; i < 5; i++) {
        append(h.client, "shown-s", "E", i);
    }
    an_consumer *k = consumer("shown", 0);
    struct an_delivery d;
    for (int i = 0; i < 5; i++) {
        cr_assert(next(k, 3000, &d));
        an_consumer_ack(k, d.event->global_position);
    }
    an_consumer_flush(k, NULL);
    Annals__V1__GroupStatus *st = status_settled("shown", 5);
    an_group_status_free(st);
    static char text[1 << 16];
    int port = h_http_port(&h);
    cr_assert_eq(h_http_get(port, "/metrics", NULL, text, sizeof(text)), 200);
    cr_assert_not_null(strstr(text, "annals_group_acked_total{group=\"shown\"} 5"), "%s", text);
    cr_assert_not_null(strstr(text, "annals_group_consumers{group=\"shown\"} 1"));
    cr_assert_not_null(strstr(text, "annals_group_checkpoint_position{group=\"shown\"} 5"));
    cr_assert_eq(h_http_get(port, "/api/groups", NULL, text, sizeof(text)), 200);
    cr_assert_not_null(strstr(text, "\"name\":\"shown\""), "%s", text);
    cr_assert_not_null(strstr(text, "\"acked\":5"), "%s", text);
    an_consumer_close(k);
}

/* ---- records read back ---- */

/* Puts (val) or deletes (val NULL) one record of table db in DATA/groups
 * (the server stopped). */
static void groups_put(const char *db, const void *key, size_t klen, const void *val,
                       size_t vlen)
{
    char path[400];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    snprintf(path, sizeof(path), "%s/data/groups", h.dir);
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 1ull << 30);
    cr_assert_eq(mdb_env_open(env, path, 0, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key};
    MDB_val v = {vlen, (void *)val};
    cr_assert_eq(val ? mdb_put(txn, dbi, &k, &v, 0) : mdb_del(txn, dbi, &k, NULL), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A mark whose key is a byte too long once ended the loading of the
 * group's marks without a word (those after it were lost: settled events
 * handed out again, replayed ones not); a state record of the wrong size
 * was ignored (the group started again from position 0). Now each refuses
 * the start, naming the group and the record. */
Test(groups, a_corrupt_record_refuses_the_start_and_names_the_group_and_record)
{
    create("g1", &(struct an_group_def){0});
    cr_assert_eq(h_stop(&h), 0);
    char data[400];
    char out[4096];
    snprintf(data, sizeof(data), "%s/data", h.dir);
    const char *args[] = {"--data", data, "--listen", "127.0.0.1:0", NULL};

    static const uint8_t long_key[12] = {'g', '1', 0, 0, 0, 0, 0, 0, 0, 0, 4, 1};
    uint8_t mark[16] = {0};
    groups_put("marks", long_key, sizeof(long_key), mark, sizeof(mark));
    cr_assert_eq(h_run_annalsd(args, out, sizeof(out)), 1);
    cr_assert(strstr(out, "group 'g1'") && strstr(out, "a mark of 12+16 bytes"), "%s", out);
    groups_put("marks", long_key, sizeof(long_key), NULL, 0);

    uint8_t state[39] = {0};
    groups_put("state", "g1", 2, state, sizeof(state));
    cr_assert_eq(h_run_annalsd(args, out, sizeof(out)), 1);
    cr_assert(strstr(out, "group 'g1'") && strstr(out, "state record has 39 bytes"), "%s", out);
    groups_put("state", "g1", 2, NULL, 0);

    /* without them it starts, the group intact */
    h_restart(&h);
    Annals__V1__GroupStatus *st = status("g1");
    an_group_status_free(st);
}

/* ---- an event that cannot be read ---- */

/* Overwrites, in DATA/log/data.mdb (the server stopped), every copy of
 * `from` with `to` (same length); returns how many there were. */
static int patch_log(const void *from, const void *to, size_t len)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/data/log/data.mdb", h.dir);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    cr_assert_gt(size, 0);
    uint8_t *buf = malloc((size_t)size);
    cr_assert_not_null(buf);
    rewind(f);
    cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    int n = 0;
    for (long i = 0; i + (long)len <= size; i++) {
        if (memcmp(buf + i, from, len) == 0) {
            cr_assert_eq(fseek(f, i, SEEK_SET), 0);
            cr_assert_eq(fwrite(to, 1, len, f), len);
            n++;
        }
    }
    fclose(f);
    free(buf);
    return n;
}

/* Counts the lines of annalsd.log that hold both strings. */
static int log_lines(const char *a, const char *b)
{
    char path[400];
    char line[4096];
    int n = 0;
    snprintf(path, sizeof(path), "%s/annalsd.log", h.dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f)) {
        n += strstr(line, a) && strstr(line, b);
    }
    fclose(f);
    return n;
}

/* A stored event that no longer decodes (its stream name's length made
 * to run past its end) stops the group's hand-out there: the events
 * before it are handed out, none after it, the server goes on serving,
 * and the failure, retried on every pump (every commit and every 20 ms),
 * is logged once, not once per pump. */
Test(groups, an_unreadable_event_stops_the_hand_out_and_is_logged_once)
{
    create("gp", &(struct an_group_def){0});
    append(h.client, "ok-1", "Fine", 1);
    append(h.client, "ok-2", "Fine", 2);
    uint64_t bad = append(h.client, "poison-1", "Fine", 3);
    append(h.client, "ok-3", "Fine", 4);
    cr_assert_eq(h_stop(&h), 0);
    /* RecordedEvent.stream (field 2): tag 0x12, length 8, the name */
    static const uint8_t good[] = {0x12, 8, 'p', 'o', 'i', 's', 'o', 'n', '-', '1'};
    static const uint8_t evil[] = {0x12, 0x7f, 'p', 'o', 'i', 's', 'o', 'n', '-', '1'};
    cr_assert_gt(patch_log(good, evil, sizeof(good)), 0, "the event's bytes are in the file");
    h_restart(&h);

    an_consumer *k = consumer("gp", 16);
    struct an_delivery d;
    uint64_t got[8];
    int n = 0;
    int64_t until = now_ms() + 1500;
    while (now_ms() < until) {
        if (next(k, 100, &d)) {
            cr_assert_lt(n, 8);
            got[n++] = d.event->global_position;
            cr_assert_eq(an_consumer_ack(k, d.event->global_position), 0);
        }
        if (n == 2) {
            append(h.client, "ok-4", "Fine", 5); /* commits: pumps that retry it */
        }
    }
    cr_assert_eq(n, 2, "the two events before it, nothing after");
    cr_assert_eq(got[0], bad - 2);
    cr_assert_eq(got[1], bad - 1);
    char pos[40];
    snprintf(pos, sizeof(pos), "position=%llu ", (unsigned long long)bad);
    cr_assert_eq(log_lines("group=gp position=", pos), 1, "logged once over 1.5 s of pumps");
    cr_assert_eq(log_lines("group=gp", "err=AN_ECORRUPT"), 1);
    bool serving = false;
    cr_assert_eq(an_health(h.client, &serving, NULL), 0);
    cr_assert(serving);
    struct an_stream_info info;
    cr_assert_eq(an_get_stream(h.client, "ok-3", NULL, &info, NULL), 0);
    an_consumer_close(k);
}

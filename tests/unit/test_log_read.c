/*
 * test_log_read.c - the log engine's read path: stream and global reads
 * (directions, bounds, limits, filters), stream facts, reads as of a point
 * around deletions, as-of resolution, durability of the head, concurrent
 * readers during commits, log_verify, log_open errors and the codec helpers.
 *
 * Every test runs on a real env in a fresh temp directory (log_fixture.c).
 */
#include "log_fixture.h"

#include <criterion/criterion.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One timeout for every suite of a binary: Criterion 2.4 leaks a timer
 * record (LeakSanitizer reports it) when suites of one binary differ. */
TestSuite(log_read_stream, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_read_all, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_get_stream, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_as_of, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_durability, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_concurrency, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_verify, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_list_streams, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_open, .timeout = 60);
TestSuite(log_codec, .timeout = 60);

/* ---- helpers ---- */

static struct log_stream_read sq(const char *stream)
{
    return (struct log_stream_read){.stream = stream, .as_of = FX_HEAD};
}

static struct log_all_read aq(uint64_t from)
{
    return (struct log_all_read){.from_position = from, .as_of = FX_HEAD};
}

/* Asserts the versions read, in order. */
static void assert_versions(const struct fx_evs *e, const uint64_t *want, size_t n)
{
    cr_assert_eq(e->n, n, "read %zu events, want %zu", e->n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(e->v[i].version, want[i], "event %zu: version %llu, want %llu", i,
                     (unsigned long long)e->v[i].version, (unsigned long long)want[i]);
    }
}

static void assert_positions(const struct fx_evs *e, const uint64_t *want, size_t n)
{
    cr_assert_eq(e->n, n, "read %zu events, want %zu", e->n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(e->v[i].position, want[i], "event %zu: position %llu, want %llu", i,
                     (unsigned long long)e->v[i].position, (unsigned long long)want[i]);
    }
}

/* Reads a stream, asserts rc 0 and the versions; returns next/done. */
static void read_stream_expect(struct log_stream_read q, const uint64_t *want, size_t n,
                               uint64_t *next, bool *done)
{
    struct fx_evs e = {0};
    int rc = fx_read_stream(q, &e, next, done);
    cr_assert_eq(rc, 0, "read_stream(%s) = %s (%s)", q.stream, an_errname(rc),
                 log_reader_detail(fx.rd));
    assert_versions(&e, want, n);
    for (size_t i = 0; i < e.n; i++) {
        cr_assert_str_eq(e.v[i].rec->stream, q.stream);
    }
    fx_evs_free(&e);
}

static void read_all_expect(struct log_all_read q, const uint64_t *want, size_t n,
                            uint64_t *next, bool *done)
{
    struct fx_evs e = {0};
    int rc = fx_read_all(q, &e, next, done);
    cr_assert_eq(rc, 0, "read_all = %s (%s)", an_errname(rc), log_reader_detail(fx.rd));
    assert_positions(&e, want, n);
    fx_evs_free(&e);
}

static int read_stream_rc(struct log_stream_read q)
{
    struct fx_evs e = {0};
    int rc = fx_read_stream(q, &e, NULL, NULL);
    if (rc) {
        cr_assert_eq(e.n, 0, "read_stream failed with %s after handing out %zu events",
                     an_errname(rc), e.n);
    }
    fx_evs_free(&e);
    return rc;
}

/* recorded_at of every position, index 0 unused. Caller frees. */
static int64_t *all_times(uint64_t *n_out)
{
    struct fx_evs e = {0};
    fx_read_everything(&e);
    int64_t *ts = calloc(e.n + 1, sizeof(*ts));
    for (size_t i = 0; i < e.n; i++) {
        ts[i + 1] = e.v[i].recorded_at_ns;
    }
    *n_out = e.n;
    fx_evs_free(&e);
    return ts;
}

static void sleep_ms(long ms)
{
    struct timespec t = {0, ms * 1000000L};
    nanosleep(&t, NULL);
}

/* "s" at positions 1-3 and 6-8 (versions 0..5), "o" at 4-5. */
static void six_in_s(void)
{
    fx_put("s", 3, "T");
    fx_put("o", 2, "T");
    fx_put("s", 3, "T");
}

/* ---- log_read_stream ---- */

Test(log_read_stream, reads_forwards_in_version_order)
{
    six_in_s();
    uint64_t next = 0;
    bool done = false;
    uint64_t want[] = {0, 1, 2, 3, 4, 5};
    read_stream_expect(sq("s"), want, 6, &next, &done);
    cr_assert_eq(next, 6);
    cr_assert(done);

    struct fx_evs e = {0};
    cr_assert_eq(fx_read_stream(sq("s"), &e, NULL, NULL), 0);
    uint64_t want_pos[] = {1, 2, 3, 6, 7, 8};
    assert_positions(&e, want_pos, 6);
    fx_evs_free(&e);
}

Test(log_read_stream, reads_from_version_with_max_count)
{
    six_in_s();
    struct log_stream_read q = sq("s");
    q.from_version = 2;
    q.max_count = 2;
    uint64_t next = 0;
    bool done = true;
    uint64_t want[] = {2, 3};
    read_stream_expect(q, want, 2, &next, &done);
    cr_assert_eq(next, 4);
    cr_assert_not(done);

    q.from_version = next;
    uint64_t want2[] = {4, 5};
    read_stream_expect(q, want2, 2, &next, &done);
    cr_assert_eq(next, 6);
    cr_assert(done, "read up to the last version but done is false");
}

Test(log_read_stream, from_version_past_the_end_reads_nothing_and_is_done)
{
    six_in_s();
    struct log_stream_read q = sq("s");
    q.from_version = 6;
    uint64_t next = 0;
    bool done = false;
    read_stream_expect(q, NULL, 0, &next, &done);
    cr_assert(done);
    cr_assert_eq(next, 6);
}

Test(log_read_stream, reads_backwards_from_end)
{
    six_in_s();
    struct log_stream_read q = sq("s");
    q.backwards = true;
    q.from_end = true;
    q.from_version = 1; /* ignored with from_end */
    uint64_t next = 0;
    bool done = false;
    uint64_t want[] = {5, 4, 3, 2, 1, 0};
    read_stream_expect(q, want, 6, &next, &done);
    cr_assert(done);

    q.max_count = 2;
    uint64_t want2[] = {5, 4};
    read_stream_expect(q, want2, 2, &next, &done);
    cr_assert_eq(next, 3);
    cr_assert_not(done);
}

Test(log_read_stream, reads_backwards_from_version)
{
    six_in_s();
    struct log_stream_read q = sq("s");
    q.backwards = true;
    q.from_version = 2;
    bool done = false;
    uint64_t want[] = {2, 1, 0};
    read_stream_expect(q, want, 3, NULL, &done);
    cr_assert(done);

    q.from_version = 4;
    q.max_count = 3;
    uint64_t next = 0;
    uint64_t want2[] = {4, 3, 2};
    read_stream_expect(q, want2, 3, &next, &done);
    cr_assert_eq(next, 1);
    cr_assert_not(done);
}

Test(log_read_stream, from_end_forwards_starts_at_the_last_event)
{
    six_in_s();
    struct log_stream_read q = sq("s");
    q.from_end = true;
    bool done = false;
    uint64_t want[] = {5};
    read_stream_expect(q, want, 1, NULL, &done);
    cr_assert(done);
}

Test(log_read_stream, callback_returning_false_stops_after_that_event)
{
    six_in_s();
    struct fx_evs e = {.stop_after = 2};
    uint64_t next = 0;
    bool done = true;
    cr_assert_eq(fx_read_stream(sq("s"), &e, &next, &done), 0);
    uint64_t want[] = {0, 1};
    assert_versions(&e, want, 2);
    cr_assert_eq(next, 2);
    cr_assert_not(done);
    fx_evs_free(&e);
}

Test(log_read_stream, never_written_stream_is_enotfound)
{
    fx_put("s", 1, "T");
    cr_assert_eq(read_stream_rc(sq("nope")), AN_ENOTFOUND);
    cr_assert_eq(read_stream_rc(sq("s-")), AN_ENOTFOUND);
}

Test(log_read_stream, bad_stream_name_is_einval)
{
    fx_put("s", 1, "T");
    cr_assert_eq(read_stream_rc(sq("")), AN_EINVAL);
    cr_assert_neq(log_reader_detail(fx.rd)[0], '\0', "no detail for a bad name");
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    cr_assert_eq(read_stream_rc(sq(long_name)), AN_EINVAL);
}

Test(log_read_stream, invalid_utf8_stream_name_is_einval)
{
    fx_put("s", 1, "T");
    cr_assert_eq(read_stream_rc(sq("\xff")), AN_EINVAL);
    cr_assert_eq(read_stream_rc(sq("s\xc3")), AN_EINVAL);
}

Test(log_read_stream, reads_only_up_to_the_as_of_bound)
{
    six_in_s();
    struct log_stream_read q = sq("s");
    q.as_of = 3;
    bool done = false;
    uint64_t next = 0;
    uint64_t want[] = {0, 1, 2};
    read_stream_expect(q, want, 3, &next, &done);
    cr_assert(done, "nothing more is visible as of 3");
    cr_assert_eq(next, 3);
    q.as_of = 5; /* "o" events do not matter */
    read_stream_expect(q, want, 3, NULL, &done);
    q.as_of = 1;
    uint64_t want1[] = {0};
    read_stream_expect(q, want1, 1, NULL, &done);
    q.backwards = true;
    q.from_end = true;
    q.as_of = 7;
    uint64_t want7[] = {4, 3, 2, 1, 0};
    read_stream_expect(q, want7, 5, NULL, &done);
}

Test(log_read_stream, stream_is_enotfound_as_of_before_its_first_event)
{
    fx_put("o", 2, "T");
    fx_put("s", 1, "T");
    struct log_stream_read q = sq("s");
    q.as_of = 2;
    cr_assert_eq(read_stream_rc(q), AN_ENOTFOUND);
    q.as_of = 0;
    cr_assert_eq(read_stream_rc(q), AN_ENOTFOUND);
}

/* ---- log_read_all ---- */

/* positions: 1 a, 2 b, 3 a, 4 c, 5 b */
static void five_events(void)
{
    fx_put("a", 1, "T");
    fx_put("b", 1, "T");
    fx_put("a", 1, "T");
    fx_put("c", 1, "T");
    fx_put("b", 1, "T");
}

Test(log_read_all, reads_forwards_from_0_and_from_1_alike)
{
    five_events();
    uint64_t want[] = {1, 2, 3, 4, 5};
    for (uint64_t from = 0; from <= 1; from++) {
        uint64_t next = 0;
        bool done = false;
        read_all_expect(aq(from), want, 5, &next, &done);
        cr_assert_eq(next, 6);
        cr_assert(done);
    }
    struct fx_evs e = {0};
    cr_assert_eq(fx_read_all(aq(1), &e, NULL, NULL), 0);
    const char *streams[] = {"a", "b", "a", "c", "b"};
    uint64_t versions[] = {0, 0, 1, 0, 1};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_str_eq(e.v[i].rec->stream, streams[i]);
        cr_assert_eq(e.v[i].version, versions[i]);
    }
    fx_evs_free(&e);
}

Test(log_read_all, reads_forwards_from_a_position_with_max_count)
{
    five_events();
    struct log_all_read q = aq(3);
    uint64_t want[] = {3, 4, 5};
    read_all_expect(q, want, 3, NULL, NULL);

    q = aq(1);
    q.max_count = 2;
    uint64_t next = 0;
    bool done = true;
    uint64_t want12[] = {1, 2};
    read_all_expect(q, want12, 2, &next, &done);
    cr_assert_eq(next, 3);
    cr_assert_not(done);
    q.from_position = next;
    uint64_t want34[] = {3, 4};
    read_all_expect(q, want34, 2, &next, &done);
    cr_assert_eq(next, 5);
    cr_assert_not(done);
    q.from_position = next;
    uint64_t want5[] = {5};
    read_all_expect(q, want5, 1, &next, &done);
    cr_assert_eq(next, 6);
    cr_assert(done);
}

Test(log_read_all, from_past_the_head_reads_nothing_and_is_done)
{
    five_events();
    bool done = false;
    read_all_expect(aq(6), NULL, 0, NULL, &done);
    cr_assert(done);
    read_all_expect(aq(1000), NULL, 0, NULL, &done);
    cr_assert(done);
}

Test(log_read_all, reads_backwards)
{
    five_events();
    struct log_all_read q = aq(0);
    q.backwards = true;
    q.from_end = true;
    bool done = false;
    uint64_t want[] = {5, 4, 3, 2, 1};
    read_all_expect(q, want, 5, NULL, &done);
    cr_assert(done);

    q.from_end = false; /* BACKWARDS from 0: from the end */
    read_all_expect(q, want, 5, NULL, &done);
    cr_assert(done);

    q.from_position = 3;
    uint64_t want3[] = {3, 2, 1};
    read_all_expect(q, want3, 3, NULL, &done);
    cr_assert(done);

    q.max_count = 2;
    uint64_t next = 0;
    uint64_t want32[] = {3, 2};
    read_all_expect(q, want32, 2, &next, &done);
    cr_assert_eq(next, 1);
    cr_assert_not(done);
}

Test(log_read_all, callback_returning_false_stops_after_that_event)
{
    five_events();
    struct fx_evs e = {.stop_after = 3};
    uint64_t next = 0;
    bool done = true;
    cr_assert_eq(fx_read_all(aq(1), &e, &next, &done), 0);
    uint64_t want[] = {1, 2, 3};
    assert_positions(&e, want, 3);
    cr_assert_eq(next, 4);
    cr_assert_not(done);
    fx_evs_free(&e);
}

Test(log_read_all, reads_only_up_to_the_as_of_bound)
{
    five_events();
    struct log_all_read q = aq(1);
    q.as_of = 3;
    uint64_t next = 0;
    bool done = false;
    uint64_t want[] = {1, 2, 3};
    read_all_expect(q, want, 3, &next, &done);
    cr_assert_eq(next, 4);
    cr_assert(done, "nothing more up to as_of, yet not done");

    q.backwards = true;
    q.from_end = true;
    uint64_t want_b[] = {3, 2, 1};
    read_all_expect(q, want_b, 3, NULL, &done);

    q = aq(1);
    q.as_of = 0;
    read_all_expect(q, NULL, 0, NULL, &done);
    cr_assert(done);
}

/* 1 order-1 A, 2 order-2 B, 3 user-1 A, 4 order-1 C, 5 user-2 C,
 * 6 $streams (deletion of user-2), 7 orders-x A */
static void filter_data(void)
{
    fx_put("order-1", 1, "A");
    fx_put("order-2", 1, "B");
    fx_put("user-1", 1, "A");
    fx_put("order-1", 1, "C");
    fx_put("user-2", 1, "C");
    struct fx_op d;
    fx_delete("user-2", false, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 6);
    fx_put("orders-x", 1, "A");
}

static void filtered(const char *const *prefixes, size_t np, const char *const *types,
                     size_t nt, const uint64_t *want, size_t n)
{
    struct log_filter f = {prefixes, np, types, nt};
    struct log_all_read q = aq(1);
    q.filter = &f;
    uint64_t next = 0;
    bool done = false;
    read_all_expect(q, want, n, &next, &done);
    cr_assert_eq(next, 8, "next_position should be past everything scanned");
    cr_assert(done);
}

Test(log_read_all, filter_by_stream_prefixes_ors_them)
{
    filter_data();
    const char *p1[] = {"order-"};
    uint64_t w1[] = {1, 2, 4};
    filtered(p1, 1, NULL, 0, w1, 3);
    const char *p2[] = {"order-1", "user-"};
    uint64_t w2[] = {1, 3, 4, 5};
    filtered(p2, 2, NULL, 0, w2, 4);
    const char *p3[] = {"order"};
    uint64_t w3[] = {1, 2, 4, 7};
    filtered(p3, 1, NULL, 0, w3, 4);
    const char *p4[] = {"$"};
    uint64_t w4[] = {6};
    filtered(p4, 1, NULL, 0, w4, 1);
    const char *p5[] = {"nothing-"};
    filtered(p5, 1, NULL, 0, NULL, 0);
}

Test(log_read_all, filter_by_event_types_ors_them)
{
    filter_data();
    const char *t1[] = {"A"};
    uint64_t w1[] = {1, 3, 7};
    filtered(NULL, 0, t1, 1, w1, 3);
    const char *t2[] = {"A", "C"};
    uint64_t w2[] = {1, 3, 4, 5, 7};
    filtered(NULL, 0, t2, 2, w2, 5);
    const char *t3[] = {"$StreamDeleted"};
    uint64_t w3[] = {6};
    filtered(NULL, 0, t3, 1, w3, 1);
    const char *t4[] = {"a"}; /* types match exactly */
    filtered(NULL, 0, t4, 1, NULL, 0);
}

Test(log_read_all, filter_ands_prefixes_with_types)
{
    filter_data();
    const char *p[] = {"order-"};
    const char *t[] = {"C"};
    uint64_t w[] = {4};
    filtered(p, 1, t, 1, w, 1);
    const char *p2[] = {"order-", "user-"};
    const char *t2[] = {"A", "B"};
    uint64_t w2[] = {1, 2, 3};
    filtered(p2, 2, t2, 2, w2, 3);
    uint64_t all[] = {1, 2, 3, 4, 5, 6, 7};
    filtered(NULL, 0, NULL, 0, all, 7); /* empty lists filter nothing */
}

Test(log_read_all, max_count_counts_selected_events)
{
    filter_data();
    const char *p[] = {"user-"};
    struct log_filter f = {p, 1, NULL, 0};
    struct log_all_read q = aq(1);
    q.filter = &f;
    q.max_count = 1;
    uint64_t next = 0;
    bool done = true;
    uint64_t w[] = {3};
    read_all_expect(q, w, 1, &next, &done);
    cr_assert_eq(next, 4);
    cr_assert_not(done);
    q.from_position = next;
    uint64_t w2[] = {5};
    read_all_expect(q, w2, 1, &next, &done);
    cr_assert_eq(next, 6);
}

Test(log_read_all, max_scan_bounds_positions_looked_at)
{
    fx_put("a", 9, "T");
    fx_put("b", 1, "T"); /* position 10 */
    const char *p[] = {"b"};
    struct log_filter f = {p, 1, NULL, 0};
    struct log_all_read q = aq(1);
    q.filter = &f;
    q.max_scan = 4;
    uint64_t next = 0;
    bool done = true;
    read_all_expect(q, NULL, 0, &next, &done);
    cr_assert_eq(next, 5, "next_position %llu, want 5 (past the 4 scanned)",
                 (unsigned long long)next);
    cr_assert_not(done);
    q.from_position = next;
    q.max_scan = 0;
    uint64_t w[] = {10};
    read_all_expect(q, w, 1, &next, &done);
    cr_assert(done);
    cr_assert_eq(next, 11);
}

Test(log_read_all, keeps_events_of_deleted_streams)
{
    fx_put("s", 2, "T");
    struct fx_op d;
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, 0);
    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, 3);
    cr_assert(fx_rec_is(e.v[0].rec, "s", "T"));
    cr_assert(fx_rec_is(e.v[1].rec, "s", "T"));
    cr_assert(fx_rec_is(e.v[2].rec, LOG_DELETED_STREAM, "$StreamTombstoned"));
    fx_evs_free(&e);
}

Test(log_read_all, get_event_finds_positions_up_to_the_head)
{
    five_events();
    int rc;
    Annals__V1__RecordedEvent *ev = fx_get_event(4, &rc);
    cr_assert_eq(rc, 0);
    cr_assert(fx_rec_is(ev, "c", "T"));
    annals__v1__recorded_event__free_unpacked(ev, NULL);
    cr_assert_null(fx_get_event(0, &rc));
    cr_assert_eq(rc, AN_ENOTFOUND);
    cr_assert_null(fx_get_event(6, &rc));
    cr_assert_eq(rc, AN_ENOTFOUND);
}

/* ---- log_get_stream ---- */

Test(log_get_stream, reports_stream_facts)
{
    fx_put("s", 1, "T"); /* 1 */
    fx_put("o", 1, "T"); /* 2 */
    fx_put("s", 2, "T"); /* 3, 4 */
    fx_put("o", 1, "T"); /* 5 */
    uint64_t n;
    int64_t *ts = all_times(&n);
    struct log_stream_info si;
    int rc = fx_get_stream("s", FX_HEAD, &si);
    cr_assert_eq(rc, 0, "%s", an_errname(rc));
    cr_assert_eq(si.last_version, 2);
    cr_assert_eq(si.event_count, 3);
    cr_assert_eq(si.first_position, 1);
    cr_assert_eq(si.last_position, 4);
    cr_assert_eq(si.created_ns, ts[1]);
    cr_assert_eq(si.updated_ns, ts[4]);
    cr_assert_not(si.deleted);
    cr_assert_not(si.tombstoned);

    rc = fx_get_stream("s", 3, &si);
    cr_assert_eq(rc, 0);
    cr_assert_eq(si.last_version, 1);
    cr_assert_eq(si.event_count, 2);
    cr_assert_eq(si.last_position, 3);
    cr_assert_eq(si.updated_ns, ts[3]);
    free(ts);
}

Test(log_get_stream, never_written_stream_is_enotfound)
{
    fx_put("o", 1, "T");
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("s", FX_HEAD, &si), AN_ENOTFOUND);
    fx_put("s", 1, "T");
    cr_assert_eq(fx_get_stream("s", 1, &si), AN_ENOTFOUND);
    cr_assert_eq(fx_get_stream("s", 2, &si), 0);
    cr_assert_eq(fx_get_stream("", FX_HEAD, &si), AN_EINVAL);
}

Test(log_get_stream, invalid_utf8_stream_name_is_einval)
{
    fx_put("s", 1, "T");
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("\xc3", FX_HEAD, &si), AN_EINVAL);
    cr_assert_eq(fx_get_stream("s\xff", FX_HEAD, &si), AN_EINVAL);
}

Test(log_get_stream, soft_deleted_stream_keeps_last_version_and_shows_no_events)
{
    fx_put("s", 3, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    uint64_t n;
    int64_t *ts = all_times(&n);
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("s", FX_HEAD, &si), 0);
    cr_assert(si.deleted);
    cr_assert_not(si.tombstoned);
    cr_assert_eq(si.last_version, 2);
    cr_assert_eq(si.event_count, 0);
    cr_assert_eq(si.first_position, 0);
    cr_assert_eq(si.last_position, 0);
    cr_assert_eq(si.created_ns, ts[1]);
    cr_assert_eq(si.updated_ns, ts[4], "updated_ns should be the deletion's time");
    free(ts);
}

Test(log_get_stream, tombstoned_stream_is_reported_tombstoned)
{
    fx_put("s", 2, "T");
    struct fx_op d;
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, 0);
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("s", FX_HEAD, &si), 0);
    cr_assert(si.tombstoned);
    cr_assert_eq(si.last_version, 1);
    cr_assert_eq(si.event_count, 0);
    cr_assert_eq(si.first_position, 0);
    cr_assert_eq(read_stream_rc(sq("s")), AN_ENOTFOUND);
}

Test(log_get_stream, append_after_delete_shows_only_new_events)
{
    fx_put("s", 3, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    fx_put("s", 2, "T"); /* 5, 6 */
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("s", FX_HEAD, &si), 0);
    cr_assert_eq(si.last_version, 4);
    cr_assert_eq(si.event_count, 2);
    cr_assert_eq(si.first_position, 5);
    cr_assert_eq(si.last_position, 6);
}

/* ---- reads as of points around deletions ---- */

/* s v0..2 at 1..3, o at 4, delete s at 5, s v3 at 6,
 * t v0..1 at 7..8, tombstone t at 9. */
static void delete_timeline(void)
{
    fx_put("s", 3, "T");
    fx_put("o", 1, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 5);
    fx_put("s", 1, "T");
    fx_put("t", 2, "T");
    fx_delete("t", true, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 9);
}

Test(log_as_of, read_stream_sees_events_before_delete_and_only_new_ones_after)
{
    delete_timeline();
    struct log_stream_read q = sq("s");
    uint64_t v012[] = {0, 1, 2};
    q.as_of = 4;
    read_stream_expect(q, v012, 3, NULL, NULL);
    q.as_of = 2;
    read_stream_expect(q, v012, 2, NULL, NULL);
    q.as_of = 5;
    cr_assert_eq(read_stream_rc(q), AN_ENOTFOUND, "deleted as of its deletion");
    q.as_of = 6;
    uint64_t v3[] = {3};
    read_stream_expect(q, v3, 1, NULL, NULL);
    q.from_version = 1; /* hidden versions are skipped, not returned */
    read_stream_expect(q, v3, 1, NULL, NULL);
    q.from_version = 0;
    q.as_of = FX_HEAD;
    read_stream_expect(q, v3, 1, NULL, NULL);

    q.backwards = true;
    q.from_end = true;
    q.as_of = 6;
    read_stream_expect(q, v3, 1, NULL, NULL);
    q.as_of = 4;
    uint64_t v210[] = {2, 1, 0};
    read_stream_expect(q, v210, 3, NULL, NULL);
    q.as_of = 5;
    cr_assert_eq(read_stream_rc(q), AN_ENOTFOUND);
}

Test(log_as_of, read_stream_of_tombstoned_stream_before_and_after)
{
    delete_timeline();
    struct log_stream_read q = sq("t");
    q.as_of = 8;
    uint64_t v01[] = {0, 1};
    read_stream_expect(q, v01, 2, NULL, NULL);
    q.as_of = 9;
    cr_assert_eq(read_stream_rc(q), AN_ENOTFOUND);
    q.as_of = FX_HEAD;
    cr_assert_eq(read_stream_rc(q), AN_ENOTFOUND);
}

Test(log_as_of, get_stream_before_and_after_delete)
{
    delete_timeline();
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("s", 4, &si), 0);
    cr_assert_not(si.deleted);
    cr_assert_eq(si.event_count, 3);
    cr_assert_eq(si.last_version, 2);
    cr_assert_eq(si.first_position, 1);
    cr_assert_eq(si.last_position, 3);

    cr_assert_eq(fx_get_stream("s", 5, &si), 0);
    cr_assert(si.deleted);
    cr_assert_eq(si.event_count, 0);
    cr_assert_eq(si.last_version, 2);
    cr_assert_eq(si.first_position, 0);
    cr_assert_eq(si.last_position, 0);

    cr_assert_eq(fx_get_stream("s", 6, &si), 0);
    cr_assert_eq(si.event_count, 1);
    cr_assert_eq(si.last_version, 3);
    cr_assert_eq(si.first_position, 6);
    cr_assert_eq(si.last_position, 6);

    cr_assert_eq(fx_get_stream("t", 8, &si), 0);
    cr_assert_not(si.tombstoned);
    cr_assert_eq(si.event_count, 2);
    cr_assert_eq(fx_get_stream("t", 9, &si), 0);
    cr_assert(si.tombstoned);
    cr_assert_eq(si.event_count, 0);
    cr_assert_eq(si.last_version, 1);
}

Test(log_as_of, read_all_as_of_a_delete_keeps_the_global_log)
{
    delete_timeline();
    struct log_all_read q = aq(1);
    q.as_of = 4;
    uint64_t w4[] = {1, 2, 3, 4};
    read_all_expect(q, w4, 4, NULL, NULL);
    q.as_of = 5;
    uint64_t w5[] = {1, 2, 3, 4, 5};
    read_all_expect(q, w5, 5, NULL, NULL);
    const char *p[] = {"s"};
    struct log_filter f = {p, 1, NULL, 0};
    q.filter = &f;
    q.as_of = FX_HEAD;
    uint64_t ws[] = {1, 2, 3, 6};
    read_all_expect(q, ws, 4, NULL, NULL);
}

/* ---- resolving AsOf ---- */

static uint64_t resolve(const Annals__V1__AsOf *a)
{
    uint64_t pos = 12345;
    cr_assert_eq(log_reader_begin(fx.rd), 0);
    int rc = log_resolve_as_of(fx.rd, a, &pos);
    log_reader_end(fx.rd);
    cr_assert_eq(rc, 0, "log_resolve_as_of = %s", an_errname(rc));
    return pos;
}

static uint64_t resolve_pos(uint64_t p)
{
    Annals__V1__AsOf a = ANNALS__V1__AS_OF__INIT;
    a.point_case = ANNALS__V1__AS_OF__POINT_POSITION;
    a.position = p;
    return resolve(&a);
}

static uint64_t resolve_time(int64_t t)
{
    Annals__V1__AsOf a = ANNALS__V1__AS_OF__INIT;
    a.point_case = ANNALS__V1__AS_OF__POINT_UNIX_NANOS;
    a.unix_nanos = t;
    uint64_t via_as_of = resolve(&a);
    uint64_t pos = 12345;
    cr_assert_eq(log_reader_begin(fx.rd), 0);
    int rc = log_time_to_position(fx.rd, t, &pos);
    log_reader_end(fx.rd);
    cr_assert_eq(rc, 0, "log_time_to_position = %s", an_errname(rc));
    cr_assert_eq(pos, via_as_of, "time_to_position(%lld) = %llu but resolve gives %llu",
                 (long long)t, (unsigned long long)pos, (unsigned long long)via_as_of);
    return pos;
}

/* The last position recorded at or before t, by brute force. */
static uint64_t expected_at(const int64_t *ts, uint64_t n, int64_t t)
{
    uint64_t best = 0;
    for (uint64_t p = 1; p <= n; p++) {
        if (ts[p] <= t) {
            best = p;
        }
    }
    return best;
}

Test(log_as_of, resolve_position_is_clamped_to_the_head)
{
    five_events();
    Annals__V1__AsOf unset = ANNALS__V1__AS_OF__INIT;
    cr_assert_eq(resolve(NULL), 5);
    cr_assert_eq(resolve(&unset), 5);
    cr_assert_eq(resolve_pos(3), 3);
    cr_assert_eq(resolve_pos(5), 5);
    cr_assert_eq(resolve_pos(6), 5, "a position above the head resolves to the head");
    cr_assert_eq(resolve_pos(UINT64_MAX), 5);
    cr_assert_eq(resolve_pos(0), 0, "position 0 shows nothing");
    cr_assert_eq(resolve_pos(1), 1);
}

Test(log_as_of, resolve_instant_gives_last_position_recorded_at_or_before_it)
{
    for (int i = 0; i < 6; i++) {
        fx_put(i % 2 ? "a" : "b", 1 + (size_t)i % 2, "T");
        sleep_ms(2);
    }
    uint64_t n;
    int64_t *ts = all_times(&n);
    cr_assert_eq(n, 9);
    cr_assert_eq(resolve_time(ts[1] - 1), 0, "before the first event");
    cr_assert_eq(resolve_time(0), 0);
    cr_assert_eq(resolve_time(-5), 0);
    cr_assert_eq(resolve_time(INT64_MIN), 0);
    for (uint64_t p = 1; p <= n; p++) {
        cr_assert_eq(resolve_time(ts[p]), expected_at(ts, n, ts[p]),
                     "exactly at position %llu's time", (unsigned long long)p);
        cr_assert_eq(resolve_time(ts[p] + 1), expected_at(ts, n, ts[p] + 1),
                     "just after position %llu's time", (unsigned long long)p);
        cr_assert_eq(resolve_time(ts[p] - 1), expected_at(ts, n, ts[p] - 1),
                     "just before position %llu's time", (unsigned long long)p);
        if (p < n && ts[p + 1] - ts[p] > 2) {
            int64_t mid = ts[p] + (ts[p + 1] - ts[p]) / 2;
            cr_assert_eq(resolve_time(mid), p, "between positions %llu and %llu",
                         (unsigned long long)p, (unsigned long long)p + 1);
        }
    }
    cr_assert_eq(resolve_time(ts[n]), n, "exactly at the last event");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t future = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + 3600ll * 1000000000;
    cr_assert_eq(resolve_time(future), n, "an instant in the future reads as the present");
    cr_assert_eq(resolve_time(INT64_MAX), n);
    free(ts);
}

Test(log_as_of, resolve_on_an_empty_log_is_zero)
{
    cr_assert_eq(resolve(NULL), 0);
    cr_assert_eq(resolve_pos(10), 0);
    cr_assert_eq(resolve_time(INT64_MAX), 0);
    cr_assert_eq(resolve_time(0), 0);
    bool done = false;
    read_all_expect(aq(1), NULL, 0, NULL, &done);
    cr_assert(done);
}

/* ---- durability and the head ---- */

/* Commits r without syncing; returns the op (caller keeps r alive). */
static uint64_t commit_nosync(const Annals__V1__AppendRequest *r, struct fx_op *o)
{
    fx_op_append(o, r);
    uint64_t seq = 0;
    int rc = log_commit(fx.env, &o->op, 1, &seq);
    cr_assert_eq(rc, 0, "log_commit = %s", an_errname(rc));
    cr_assert_eq(o->op.rc, 0, "%s", o->op.detail);
    return seq;
}

Test(log_durability, head_advances_only_after_sync)
{
    fx_put("s", 2, "T");
    uint64_t seq0 = log_committed_seq(fx.env);
    cr_assert_eq(log_durable_seq(fx.env), seq0);
    Annals__V1__AppendRequest *r = rq_simple("new", FX_EXPECT_ANY, 0, 3, "T", 0);
    struct fx_op o;
    uint64_t seq = commit_nosync(r, &o);
    cr_assert_gt(seq, seq0);
    cr_assert_eq(o.op.seq, seq);
    cr_assert_eq(log_committed_seq(fx.env), seq);
    cr_assert_lt(log_durable_seq(fx.env), seq, "durable before any sync");
    cr_assert_eq(log_head(fx.env), 2, "head covers a commit that is not durable");
    struct log_stats st;
    cr_assert_eq(log_stats(fx.env, &st), 0);
    cr_assert_eq(st.head, 2);
    cr_assert_eq(st.committed_head, 5);

    /* readers are bounded by the durable head */
    cr_assert_eq(log_reader_begin(fx.rd), 0);
    cr_assert_eq(log_reader_head(fx.rd), 2);
    struct log_event ev;
    cr_assert_eq(log_get_event(fx.rd, 3, &ev), AN_ENOTFOUND);
    uint64_t pos = 0;
    cr_assert_eq(log_resolve_as_of(fx.rd, NULL, &pos), 0);
    cr_assert_eq(pos, 2);
    cr_assert_eq(log_time_to_position(fx.rd, INT64_MAX, &pos), 0);
    cr_assert_eq(pos, 2);
    log_reader_end(fx.rd);
    bool done = false;
    uint64_t w12[] = {1, 2};
    read_all_expect(aq(1), w12, 2, NULL, &done);
    cr_assert(done);
    cr_assert_eq(read_stream_rc(sq("new")), AN_ENOTFOUND);
    struct log_stream_info si;
    cr_assert_eq(fx_get_stream("new", FX_HEAD, &si), AN_ENOTFOUND);

    cr_assert_eq(log_sync(fx.env), 0);
    cr_assert_eq(log_durable_seq(fx.env), seq);
    cr_assert_eq(log_head(fx.env), 5);
    uint64_t w[] = {1, 2, 3, 4, 5};
    read_all_expect(aq(1), w, 5, NULL, NULL);
    uint64_t v[] = {0, 1, 2};
    read_stream_expect(sq("new"), v, 3, NULL, NULL);
    rq_free(r);
}

Test(log_durability, next_commit_makes_the_previous_durable)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    struct fx_op a;
    struct fx_op b;
    uint64_t seq_a = commit_nosync(r, &a);
    uint64_t seq_b = commit_nosync(r, &b);
    cr_assert_gt(seq_b, seq_a);
    cr_assert_geq(log_durable_seq(fx.env), seq_a,
                  "commit %llu's sync should make commit %llu durable (durable_seq %llu)",
                  (unsigned long long)seq_b, (unsigned long long)seq_a,
                  (unsigned long long)log_durable_seq(fx.env));
    cr_assert_lt(log_durable_seq(fx.env), seq_b);
    cr_assert_geq(log_head(fx.env), a.op.last_position);
    cr_assert_lt(log_head(fx.env), b.op.first_position);
    cr_assert_eq(log_sync(fx.env), 0);
    cr_assert_eq(log_durable_seq(fx.env), seq_b);
    cr_assert_eq(log_head(fx.env), b.op.last_position);
    rq_free(r);
}

Test(log_durability, commit_that_writes_nothing_leaves_seqs_alone)
{
    fx_put("s", 1, "T");
    uint64_t c = log_committed_seq(fx.env);
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 1, "T", 0);
    struct fx_op o;
    fx_op_append(&o, r);
    uint64_t seq = 99;
    cr_assert_eq(log_commit(fx.env, &o.op, 1, &seq), 0);
    cr_assert_eq(o.op.rc, AN_ECONFLICT);
    cr_assert_eq(seq, 0);
    cr_assert_eq(log_committed_seq(fx.env), c);
    cr_assert_eq(log_durable_seq(fx.env), c);
    rq_free(r);
}

/* A reader thread holds one snapshot across a commit made by the writer
 * (the writer itself never holds a begun reader while it commits). */
struct snap {
    log_env *env;
    atomic_int stage;          /* 1: snapshot begun, 2: writer committed */
    uint64_t head_before;
    uint64_t head_after;
    size_t n_read;
    int rc;
};

static bool count_event(void *arg, const struct log_event *ev)
{
    (void)ev;
    (*(size_t *)arg)++;
    return true;
}

static void *snap_main(void *arg)
{
    struct snap *s = arg;
    log_reader *rd = NULL;
    s->rc = log_reader_open(s->env, &rd);
    if (s->rc == 0) {
        s->rc = log_reader_begin(rd);
    }
    if (s->rc) {
        log_reader_close(rd);
        atomic_store(&s->stage, 1);
        return NULL;
    }
    s->head_before = log_reader_head(rd);
    atomic_store(&s->stage, 1);
    for (int i = 0; i < 5000 && atomic_load(&s->stage) != 2; i++) {
        sleep_ms(1);
    }
    s->head_after = log_reader_head(rd);
    struct log_all_read q = {.from_position = 1, .as_of = s->head_after};
    s->rc = log_read_all(rd, &q, count_event, &s->n_read, NULL, NULL);
    log_reader_end(rd);
    log_reader_close(rd);
    return NULL;
}

Test(log_durability, a_snapshot_does_not_change_while_it_is_open)
{
    fx_put("s", 2, "T");
    struct snap s = {.env = fx.env};
    atomic_init(&s.stage, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, snap_main, &s), 0);
    while (atomic_load(&s.stage) == 0) {
        sleep_ms(1);
    }
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    struct fx_op o;
    commit_nosync(r, &o);
    cr_assert_eq(log_sync(fx.env), 0);
    cr_assert_eq(log_head(fx.env), 4);
    atomic_store(&s.stage, 2);
    pthread_join(th, NULL);
    cr_assert_eq(s.rc, 0, "%s", an_errname(s.rc));
    cr_assert_eq(s.head_before, 2);
    cr_assert_eq(s.head_after, 2, "the snapshot's head moved");
    cr_assert_eq(s.n_read, 2, "the snapshot showed %zu events", s.n_read);
    uint64_t w[] = {1, 2, 3, 4};
    read_all_expect(aq(1), w, 4, NULL, NULL);
    rq_free(r);
}

Test(log_durability, close_keeps_commits_not_yet_synced)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 3, "T", 0);
    struct fx_op o;
    commit_nosync(r, &o);
    fx_reopen();
    cr_assert_eq(log_head(fx.env), 3);
    uint64_t v[] = {0, 1, 2};
    read_stream_expect(sq("s"), v, 3, NULL, NULL);
    rq_free(r);
}

/* ---- concurrent readers ---- */

#define CC_STREAMS 8
#define CC_READERS 4

struct cc_shared {
    atomic_bool stop;
    log_env *env;
};

struct cc_reader {
    struct cc_shared *sh;
    pthread_t th;
    unsigned long snapshots;
    unsigned long distinct_heads;
    char err[256];
    /* per-snapshot scan state */
    uint64_t expect_pos;
    int64_t last_ts;
    uint64_t next_version[CC_STREAMS];
};

static bool cc_event(void *arg, const struct log_event *ev)
{
    struct cc_reader *r = arg;
    if (ev->position != r->expect_pos) {
        snprintf(r->err, sizeof(r->err), "position %llu where %llu was due",
                 (unsigned long long)ev->position, (unsigned long long)r->expect_pos);
        return false;
    }
    if (ev->recorded_at_ns < r->last_ts) {
        snprintf(r->err, sizeof(r->err), "time went back at %llu",
                 (unsigned long long)ev->position);
        return false;
    }
    if (ev->stream_len != 3 || memcmp(ev->stream, "cc", 2) != 0 || ev->stream[2] < '0' ||
        ev->stream[2] >= '0' + CC_STREAMS) {
        snprintf(r->err, sizeof(r->err), "unexpected stream at %llu",
                 (unsigned long long)ev->position);
        return false;
    }
    int s = ev->stream[2] - '0';
    if (ev->version != r->next_version[s]) {
        snprintf(r->err, sizeof(r->err), "stream %d: version %llu where %llu was due", s,
                 (unsigned long long)ev->version, (unsigned long long)r->next_version[s]);
        return false;
    }
    Annals__V1__RecordedEvent *rec =
        annals__v1__recorded_event__unpack(NULL, ev->packed_len, ev->packed);
    if (!rec || rec->global_position != ev->position || rec->stream_version != ev->version) {
        snprintf(r->err, sizeof(r->err), "event %llu does not match its bytes",
                 (unsigned long long)ev->position);
        if (rec) {
            annals__v1__recorded_event__free_unpacked(rec, NULL);
        }
        return false;
    }
    annals__v1__recorded_event__free_unpacked(rec, NULL);
    r->next_version[s]++;
    r->expect_pos++;
    r->last_ts = ev->recorded_at_ns;
    return true;
}

static void *cc_reader_main(void *arg)
{
    struct cc_reader *r = arg;
    log_reader *rd = NULL;
    int rc = log_reader_open(r->sh->env, &rd);
    if (rc) {
        snprintf(r->err, sizeof(r->err), "log_reader_open = %s", an_errname(rc));
        return NULL;
    }
    uint64_t prev_head = 0;
    bool last_round = false;
    while (!r->err[0]) {
        last_round = atomic_load(&r->sh->stop);
        rc = log_reader_begin(rd);
        if (rc) {
            snprintf(r->err, sizeof(r->err), "log_reader_begin = %s", an_errname(rc));
            break;
        }
        uint64_t h = log_reader_head(rd);
        if (h < prev_head) {
            snprintf(r->err, sizeof(r->err), "head went back %llu -> %llu",
                     (unsigned long long)prev_head, (unsigned long long)h);
        }
        r->distinct_heads += h != prev_head;
        prev_head = h;
        r->expect_pos = 1;
        r->last_ts = 0;
        memset(r->next_version, 0, sizeof(r->next_version));
        struct log_all_read q = {.from_position = 1, .as_of = h};
        bool done = false;
        rc = log_read_all(rd, &q, cc_event, r, NULL, &done);
        if (!r->err[0] && rc) {
            snprintf(r->err, sizeof(r->err), "log_read_all = %s (%s)", an_errname(rc),
                     log_reader_detail(rd));
        }
        if (!r->err[0] && (r->expect_pos != h + 1 || !done)) {
            snprintf(r->err, sizeof(r->err), "snapshot at head %llu gave %llu events",
                     (unsigned long long)h, (unsigned long long)r->expect_pos - 1);
        }
        /* the stream facts agree with what the scan counted */
        for (int s = 0; s < CC_STREAMS && !r->err[0] && h; s++) {
            char name[4] = {'c', 'c', (char)('0' + s), 0};
            struct log_stream_info si;
            rc = log_get_stream(rd, name, h, &si);
            if (r->next_version[s] == 0) {
                if (rc != AN_ENOTFOUND) {
                    snprintf(r->err, sizeof(r->err), "%s: %s but the scan saw none", name,
                             an_errname(rc));
                }
            } else if (rc || si.event_count != r->next_version[s] ||
                       si.last_version != (int64_t)r->next_version[s] - 1) {
                snprintf(r->err, sizeof(r->err), "%s: get_stream %s count %llu, scan %llu",
                         name, an_errname(rc), (unsigned long long)si.event_count,
                         (unsigned long long)r->next_version[s]);
            }
        }
        log_reader_end(rd);
        r->snapshots++;
        if (last_round) {
            break;
        }
    }
    log_reader_close(rd);
    return NULL;
}

Test(log_concurrency, readers_see_gap_free_snapshots_while_the_writer_commits)
{
    struct log_cfg cfg = {.initial_map_bytes = 1u << 20}; /* grows under the readers */
    fx_fresh(&cfg);
    struct cc_shared sh = {.env = fx.env};
    atomic_init(&sh.stop, false);
    struct cc_reader rs[CC_READERS];
    memset(rs, 0, sizeof(rs));
    for (int i = 0; i < CC_READERS; i++) {
        rs[i].sh = &sh;
        cr_assert_eq(pthread_create(&rs[i].th, NULL, cc_reader_main, &rs[i]), 0);
    }

    enum { batches = 120, ops_per_batch = 3 };
    Annals__V1__AppendRequest *reqs[ops_per_batch];
    struct fx_op ops[ops_per_batch];
    uint64_t written = 0;
    bool writer_ok = true;
    char why[256] = "";
    for (int b = 0; b < batches && writer_ok; b++) {
        struct log_op arr[ops_per_batch];
        for (int k = 0; k < ops_per_batch; k++) {
            char name[4] = {'c', 'c', (char)('0' + (b * ops_per_batch + k) % CC_STREAMS), 0};
            reqs[k] = rq_simple(name, FX_EXPECT_ANY, 0, 2, "T", 0);
            rq_set_data(reqs[k]->streams[0]->events[0], 4096, (uint64_t)b);
            fx_op_append(&ops[k], reqs[k]);
            arr[k] = ops[k].op;
        }
        uint64_t seq = 0;
        int rc = log_commit(fx.env, arr, ops_per_batch, &seq);
        for (int k = 0; k < ops_per_batch; k++) {
            if (rc == 0 && arr[k].rc) {
                snprintf(why, sizeof(why), "batch %d op %d: %s (%s)", b, k,
                         an_errname(arr[k].rc), arr[k].detail);
                writer_ok = false;
            }
            rq_free(reqs[k]);
        }
        if (rc) {
            snprintf(why, sizeof(why), "batch %d: log_commit = %s", b, an_errname(rc));
            writer_ok = false;
        }
        written += 2 * ops_per_batch;
        /* a loaded writer syncs only some batches; the next commit covers the rest */
        if (b % 3 == 0 && log_sync(fx.env) != 0) {
            snprintf(why, sizeof(why), "log_sync failed");
            writer_ok = false;
        }
    }
    cr_assert_eq(log_sync(fx.env), 0);
    atomic_store(&sh.stop, true);
    for (int i = 0; i < CC_READERS; i++) {
        pthread_join(rs[i].th, NULL);
    }
    cr_assert(writer_ok, "%s", why);
    for (int i = 0; i < CC_READERS; i++) {
        cr_assert_eq(rs[i].err[0], '\0', "reader %d: %s", i, rs[i].err);
        cr_assert_gt(rs[i].snapshots, 0);
    }
    cr_assert_eq(log_head(fx.env), written);
    struct log_stats st;
    cr_assert_eq(log_stats(fx.env, &st), 0);
    cr_assert_gt(st.map_bytes, 1u << 20, "the map never grew");
    char detail[LOG_DETAIL_MAX] = "";
    cr_assert_eq(log_verify(fx.env, NULL, NULL, detail), 0, "%s", detail);
}

Test(log_concurrency, reader_slots_are_limited_and_reusable)
{
    struct log_cfg cfg = {.max_readers = 2};
    fx_fresh(&cfg);
    log_reader *extra[512];
    size_t n = 0;
    int rc = 0;
    while (n < 512) {
        rc = log_reader_open(fx.env, &extra[n]);
        if (rc) {
            break;
        }
        n++;
    }
    cr_assert_eq(rc, AN_EBUSY, "reader %zu: %s, want AN_EBUSY", n, an_errname(rc));
    log_reader_close(extra[--n]);
    cr_assert_eq(log_reader_open(fx.env, &extra[n]), 0, "a freed slot is not reused");
    n++;
    while (n) {
        log_reader_close(extra[--n]);
    }
}

/* ---- log_verify ---- */

Test(log_verify, passes_on_an_empty_log)
{
    char detail[LOG_DETAIL_MAX] = "";
    cr_assert_eq(log_verify(fx.env, NULL, NULL, detail), 0, "%s", detail);
}

Test(log_verify, passes_on_a_mixed_log_and_after_reopen)
{
    Annals__V1__AppendRequest *r = rq_new();
    rq_event(rq_stream(r, "a", FX_EXPECT_NO_STREAM, 0), "T", 1, NULL);
    rq_event(rq_stream(r, "b", FX_EXPECT_NO_STREAM, 0), "T", 2, NULL);
    struct fx_op o;
    fx_append(r, &o, 0);
    fx_put("a", 5, "T");
    struct fx_op d;
    fx_delete("a", false, FX_EXPECT_ANY, 0, &d, 0);
    fx_put("a", 2, "T");
    fx_delete("b", true, FX_EXPECT_ANY, 0, &d, 0);
    fx_put("c", 3, "T");
    char detail[LOG_DETAIL_MAX] = "";
    cr_assert_eq(log_verify(fx.env, NULL, NULL, detail), 0, "%s", detail);
    fx_reopen();
    cr_assert_eq(log_verify(fx.env, NULL, NULL, detail), 0, "%s", detail);
    rq_free(r);
}

/* ---- log_open ---- */

Test(log_open, rejects_a_missing_directory_argument)
{
    log_env *env = NULL;
    char detail[LOG_DETAIL_MAX] = "";
    struct log_cfg cfg = {0};
    cr_assert_eq(log_open(&cfg, &env, detail), AN_EINVAL);
    cr_assert_null(env);
    cfg.dir = "";
    cr_assert_eq(log_open(&cfg, &env, detail), AN_EINVAL);
    cr_assert_null(env);
}

Test(log_open, reports_eio_when_the_directory_cannot_be_made)
{
    log_env *env = NULL;
    char detail[LOG_DETAIL_MAX] = "";
    struct log_cfg cfg = {.dir = "/dev/null/annals"};
    cr_assert_eq(log_open(&cfg, &env, detail), AN_EIO);
    cr_assert_null(env);
    cr_assert_neq(detail[0], '\0');
}

Test(log_open, creates_the_directory_and_reopens_it)
{
    char base[] = "/tmp/annals-test-XXXXXX";
    cr_assert_not_null(mkdtemp(base));
    char dir[64];
    snprintf(dir, sizeof(dir), "%s/log", base);
    struct log_cfg cfg = {.dir = dir};
    log_env *env = NULL;
    char detail[LOG_DETAIL_MAX] = "";
    cr_assert_eq(log_open(&cfg, &env, detail), 0, "%s", detail);
    cr_assert_eq(log_head(env), 0);
    log_close(env);
    env = NULL;
    cr_assert_eq(log_open(&cfg, &env, detail), 0, "%s", detail);
    log_close(env);
    log_close(NULL);
    fx_rm_rf(base);
}

Test(log_open, rejects_an_lmdb_env_that_is_not_an_annals_log)
{
    char dir[] = "/tmp/annals-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    MDB_env *m = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&m), 0);
    cr_assert_eq(mdb_env_open(m, dir, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(m, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    MDB_val k = {5, "hello"};
    MDB_val v = {5, "world"};
    cr_assert_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(m);

    struct log_cfg cfg = {.dir = dir};
    log_env *env = NULL;
    char detail[LOG_DETAIL_MAX] = "";
    int rc = log_open(&cfg, &env, detail);
    cr_assert_eq(rc, AN_ECORRUPT, "%s (%s)", an_errname(rc), detail);
    cr_assert_null(env);
    cr_assert_neq(detail[0], '\0');
    fx_rm_rf(dir);
}

/* ---- codec helpers ---- */

Test(log_codec, utf8_valid_accepts_well_formed_text_only)
{
    static const struct {
        const char *s;
        size_t len;
        bool ok;
    } cases[] = {
        {"", 0, true},
        {"plain ascii", 11, true},
        {"\xc3\xa9", 2, true},
        {"\xe6\x97\xa5", 3, true},
        {"\xf0\x9f\x98\x80", 4, true},
        {"\xef\xbf\xbf", 3, true},
        {"\xf4\x8f\xbf\xbf", 4, true}, /* U+10FFFF */
        {"a\0b", 3, true},             /* NUL is well-formed */
        {"\xff", 1, false},
        {"\x80", 1, false},
        {"\xc0\xaf", 2, false},
        {"\xc1\xbf", 2, false},
        {"\xe0\x80\xaf", 3, false},
        {"\xf0\x80\x80\xaf", 4, false},
        {"\xed\xa0\x80", 3, false},
        {"\xed\xbf\xbf", 3, false},
        {"\xf4\x90\x80\x80", 4, false},
        {"\xf5\x80\x80\x80", 4, false},
        {"\xe2\x82", 2, false},
        {"\xc3\xa9", 1, false}, /* cut short by len */
        {"\xc3\x28", 2, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(log_utf8_valid(cases[i].s, cases[i].len), cases[i].ok, "case %zu", i);
    }
}

Test(log_codec, event_peek_reads_a_packed_recorded_event)
{
    Annals__V1__RecordedEvent rec = ANNALS__V1__RECORDED_EVENT__INIT;
    uint8_t id[16];
    uint8_t data[300];
    fx_id(id, 7);
    fx_pattern(data, sizeof(data), 7);
    rec.id = (ProtobufCBinaryData){16, id};
    rec.stream = "orders-9";
    rec.stream_version = 41;
    rec.global_position = 1000000007ull;
    rec.type = "OrderShipped";
    rec.content_type = "application/json";
    rec.data = (ProtobufCBinaryData){sizeof(data), data};
    rec.recorded_at_unix_nanos = 1700000000123456789ll;
    rec.principal = "bob";
    size_t len = annals__v1__recorded_event__get_packed_size(&rec);
    uint8_t *buf = malloc(len);
    cr_assert_eq(annals__v1__recorded_event__pack(&rec, buf), len);

    struct log_event ev;
    memset(&ev, 0, sizeof(ev));
    cr_assert_eq(log_event_peek(buf, len, &ev), 0);
    cr_assert_eq(ev.position, rec.global_position);
    cr_assert_eq(ev.version, 41);
    cr_assert_eq(ev.recorded_at_ns, rec.recorded_at_unix_nanos);
    cr_assert_eq(ev.stream_len, 8);
    cr_assert_eq(memcmp(ev.stream, "orders-9", 8), 0);
    cr_assert_eq(ev.type_len, 12);
    cr_assert_eq(memcmp(ev.type, "OrderShipped", 12), 0);
    cr_assert_eq(ev.packed, buf);
    cr_assert_eq(ev.packed_len, len);

    /* cut inside the data field: the length runs past the end */
    cr_assert_eq(log_event_peek(buf, len - 200, &ev), AN_ECORRUPT);
    uint8_t junk[12];
    memset(junk, 0xff, sizeof(junk));
    cr_assert_eq(log_event_peek(junk, sizeof(junk), &ev), AN_ECORRUPT);
    free(buf);
}

/* ---- listing streams ---- */

struct listed {
    char names[16][32];
    uint64_t counts[16];
    size_t n;
};

static bool on_stream(void *arg, const char *name, size_t len, const struct log_stream_info *info)
{
    struct listed *l = arg;
    cr_assert_lt(l->n, 16);
    cr_assert_eq(strlen(name), len);
    snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
    l->counts[l->n++] = info->event_count;
    return true;
}

static struct listed list(const char *prefix, const char *after, unsigned limit, bool *more)
{
    struct listed l = {0};
    cr_assert_eq(log_reader_begin(fx.rd), 0);
    int rc = log_list_streams(fx.rd, prefix, after, limit, on_stream, &l, more);
    log_reader_end(fx.rd);
    cr_assert_eq(rc, 0, "%s", an_errname(rc));
    return l;
}

Test(log_list_streams, lists_by_prefix_in_order_and_pages_with_after)
{
    fx_put("orders-2", 2, "T");
    fx_put("orders-1", 1, "T");
    fx_put("payments-1", 3, "T");
    fx_put("orders-10", 1, "T");
    fx_put("order", 1, "T");
    bool more = true;
    struct listed l = list("orders-", NULL, 0, &more);
    cr_assert_eq(l.n, 3);
    cr_assert_str_eq(l.names[0], "orders-1");
    cr_assert_str_eq(l.names[1], "orders-10");
    cr_assert_str_eq(l.names[2], "orders-2");
    cr_assert_eq(l.counts[2], 2);
    cr_assert(!more);
    /* pages of two */
    l = list("orders-", NULL, 2, &more);
    cr_assert_eq(l.n, 2);
    cr_assert(more);
    l = list("orders-", "orders-10", 2, &more);
    cr_assert_eq(l.n, 1);
    cr_assert_str_eq(l.names[0], "orders-2");
    cr_assert(!more);
    /* `after` below the prefix starts at the prefix; above it, after it */
    l = list("orders-", "a", 0, NULL);
    cr_assert_eq(l.n, 3);
    l = list("orders-", "orders-0zzz", 0, NULL);
    cr_assert_eq(l.n, 3);
    /* everything, including the server-owned ones there are none of here */
    l = list(NULL, NULL, 0, NULL);
    cr_assert_eq(l.n, 5);
    cr_assert_str_eq(l.names[0], "order");
    cr_assert_str_eq(l.names[4], "payments-1");
    cr_assert_eq(l.counts[4], 3);
}

Test(log_list_streams, a_deleted_stream_is_listed_with_no_visible_events)
{
    fx_put("gone-1", 2, "T");
    struct fx_op o;
    fx_delete("gone-1", false, FX_EXPECT_ANY, 0, &o, 0);
    struct listed l = list("gone-", NULL, 0, NULL);
    cr_assert_eq(l.n, 1);
    cr_assert_eq(l.counts[0], 0);
}

/*
 * test_log_append.c - the log engine's write path: appends (expectations,
 * multi-stream atomicity, positions, batches, idempotency, validation),
 * deletions and tombstones, and map growth up to the size cap.
 *
 * Every test runs on a real env in a fresh temp directory (log_fixture.c).
 * "Nothing written" is checked by the durable and committed heads and by
 * reading the streams back, never by trusting an rc alone.
 */
#include "log_fixture.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(log_append, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_idempotency, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_validate, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_delete, .init = fx_setup, .fini = fx_teardown, .timeout = 60);
TestSuite(log_map, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

/* ---- helpers ---- */

struct marks {
    uint64_t head;
    uint64_t committed_seq;
    uint64_t committed_head;
};

static struct marks mark(void)
{
    struct log_stats st;
    cr_assert_eq(log_stats(fx.env, &st), 0);
    return (struct marks){log_head(fx.env), log_committed_seq(fx.env), st.committed_head};
}

/* Asserts that nothing was written since m. */
static void assert_unchanged(struct marks m, const char *what)
{
    struct marks now = mark();
    cr_assert_eq(now.head, m.head, "%s: head moved %llu -> %llu", what,
                 (unsigned long long)m.head, (unsigned long long)now.head);
    cr_assert_eq(now.committed_head, m.committed_head, "%s: committed head moved", what);
    cr_assert_eq(now.committed_seq, m.committed_seq, "%s: a commit was made", what);
}

/* The stream's visible versions, in order, as a count; asserts 0-based runs. */
static size_t stream_count(const char *stream)
{
    struct fx_evs e = {0};
    int rc = fx_read_stream((struct log_stream_read){.stream = stream, .as_of = FX_HEAD}, &e,
                            NULL, NULL);
    size_t n = rc == AN_ENOTFOUND ? 0 : e.n;
    cr_assert(rc == 0 || rc == AN_ENOTFOUND, "read_stream(%s) = %s", stream, an_errname(rc));
    fx_evs_free(&e);
    return n;
}

static int64_t last_version(const char *stream)
{
    struct log_stream_info si;
    int rc = fx_get_stream(stream, FX_HEAD, &si);
    if (rc == AN_ENOTFOUND) {
        return -1;
    }
    cr_assert_eq(rc, 0, "get_stream(%s) = %s", stream, an_errname(rc));
    return si.last_version;
}

/* Commits r and asserts ECONFLICT at stream index idx with this actual version,
 * and that nothing was written. */
static void expect_conflict(const Annals__V1__AppendRequest *r, size_t idx, int64_t actual)
{
    struct marks m = mark();
    struct fx_op o;
    uint64_t seq;
    fx_op_append(&o, r);
    seq = fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, AN_ECONFLICT, "rc = %s, want AN_ECONFLICT (%s)", an_errname(o.op.rc),
                 o.op.detail);
    cr_assert_eq(o.op.conflict_stream, idx, "conflict_stream = %zu, want %zu",
                 o.op.conflict_stream, idx);
    cr_assert_eq(o.op.actual_version, actual, "actual_version = %lld, want %lld",
                 (long long)o.op.actual_version, (long long)actual);
    cr_assert_eq(seq, 0, "a failed append reported commit %llu", (unsigned long long)seq);
    assert_unchanged(m, "failed expectation");
}

static bool id_is(const ProtobufCBinaryData *id, uint64_t seed)
{
    uint8_t want[16];
    fx_id(want, seed);
    return id->len == 16 && memcmp(id->data, want, 16) == 0;
}

/* ---- appending ---- */

Test(log_append, appends_first_events_at_position_one)
{
    Annals__V1__AppendRequest *r = rq_simple("orders-1", FX_EXPECT_NO_STREAM, 0, 3,
                                             "OrderPlaced", 100);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.op.first_position, 1);
    cr_assert_eq(o.op.last_position, 3);
    cr_assert_eq(o.sr[0].first_version, 0);
    cr_assert_eq(o.sr[0].last_version, 2);
    cr_assert_gt(o.op.seq, 0);
    cr_assert_gt(o.op.recorded_at_ns, 0);
    cr_assert_eq(log_head(fx.env), 3);
    for (uint64_t p = 1; p <= 3; p++) {
        int rc;
        Annals__V1__RecordedEvent *ev = fx_get_event(p, &rc);
        cr_assert_eq(rc, 0, "get_event(%llu) = %s", (unsigned long long)p, an_errname(rc));
        cr_assert(fx_rec_is(ev, "orders-1", "OrderPlaced"));
        cr_assert_eq(ev->stream_version, p - 1);
        cr_assert(id_is(&ev->id, 100 + p - 1), "event %llu has the wrong id",
                  (unsigned long long)p);
        cr_assert_eq(ev->data.len, 2);
        cr_assert_eq(memcmp(ev->data.data, "{}", 2), 0);
        cr_assert_str_eq(ev->content_type, "application/json");
        cr_assert_str_eq(ev->principal, "tester");
        if (p == 1) {
            cr_assert_eq(ev->recorded_at_unix_nanos, o.op.recorded_at_ns);
        }
        annals__v1__recorded_event__free_unpacked(ev, NULL);
    }
    rq_free(r);
}

Test(log_append, stores_event_fields_and_principal_as_given)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *s = rq_stream(r, "user-7", FX_EXPECT_ANY, 0);
    Annals__V1__EventData *e = rq_event(s, "UserRenamed", 42, "{\"name\":\"x\"}");
    e->schema_version = 3;
    e->metadata.data = malloc(4);
    memcpy(e->metadata.data, "meta", 4);
    e->metadata.len = 4;
    struct fx_op o;
    fx_op_append(&o, r);
    o.op.principal = "alice";
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, 0, "%s", o.op.detail);
    int rc;
    Annals__V1__RecordedEvent *ev = fx_get_event(1, &rc);
    cr_assert_eq(rc, 0);
    cr_assert(fx_rec_is(ev, "user-7", "UserRenamed"));
    cr_assert_eq(ev->schema_version, 3);
    cr_assert(id_is(&ev->id, 42));
    cr_assert_eq(ev->data.len, 12);
    cr_assert_eq(memcmp(ev->data.data, "{\"name\":\"x\"}", 12), 0);
    cr_assert_eq(ev->metadata.len, 4);
    cr_assert_eq(memcmp(ev->metadata.data, "meta", 4), 0);
    cr_assert_str_eq(ev->principal, "alice");
    annals__v1__recorded_event__free_unpacked(ev, NULL);
    rq_free(r);
}

Test(log_append, null_principal_is_stored_as_empty)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 1, "T", 0);
    struct fx_op o;
    fx_op_append(&o, r);
    o.op.principal = NULL;
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, 0, "%s", o.op.detail);
    int rc;
    Annals__V1__RecordedEvent *ev = fx_get_event(1, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(ev->principal, "");
    annals__v1__recorded_event__free_unpacked(ev, NULL);
    rq_free(r);
}

Test(log_append, expect_any_appends_to_new_and_existing_streams)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 0);
    cr_assert_eq(o.sr[0].last_version, 1);
    fx_append(r, &o, 0); /* empty ids: not a retry */
    cr_assert_eq(o.sr[0].first_version, 2);
    cr_assert_eq(o.sr[0].last_version, 3);
    cr_assert_eq(o.op.first_position, 3);
    cr_assert_eq(stream_count("s"), 4);
    rq_free(r);
}

Test(log_append, expect_no_stream_creates_stream)
{
    Annals__V1__AppendRequest *r = rq_simple("fresh", FX_EXPECT_NO_STREAM, 0, 1, "T", 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 0);
    cr_assert_eq(last_version("fresh"), 0);
    rq_free(r);
}

Test(log_append, rejects_no_stream_when_stream_has_events)
{
    fx_put("s", 2, "T");
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 1, "T", 0);
    expect_conflict(r, 0, 1);
    cr_assert_eq(stream_count("s"), 2);
    rq_free(r);
}

Test(log_append, rejects_stream_exists_on_never_written_stream)
{
    fx_put("other", 1, "T");
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_EXISTS, 0, 1, "T", 0);
    expect_conflict(r, 0, -1);
    cr_assert_eq(last_version("s"), -1);
    rq_free(r);
}

Test(log_append, stream_exists_appends_to_existing_stream)
{
    fx_put("s", 1, "T");
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_EXISTS, 0, 1, "T", 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 1);
    rq_free(r);
}

Test(log_append, expect_version_appends_when_it_equals_last_version)
{
    fx_put("s", 3, "T");
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_VERSION, 2, 2, "T", 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 3);
    cr_assert_eq(o.sr[0].last_version, 4);
    cr_assert_eq(o.op.first_position, 4);
    rq_free(r);
}

Test(log_append, rejects_stale_expected_version)
{
    fx_put("s", 3, "T");
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_VERSION, 1, 1, "T", 0);
    expect_conflict(r, 0, 2);
    r->streams[0]->expected_version = 3; /* ahead of the stream */
    expect_conflict(r, 0, 2);
    cr_assert_eq(stream_count("s"), 3);
    rq_free(r);
}

Test(log_append, rejects_expected_version_on_never_written_stream)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_VERSION, 0, 1, "T", 0);
    expect_conflict(r, 0, -1);
    cr_assert_eq(log_head(fx.env), 0);
    rq_free(r);
}

Test(log_append, failed_expectation_names_failing_stream_and_writes_no_stream)
{
    fx_put("a", 1, "T");
    fx_put("b", 2, "T");
    Annals__V1__AppendRequest *r = rq_new();
    rq_event(rq_stream(r, "a", FX_EXPECT_VERSION, 0), "T", 0, NULL);
    rq_event(rq_stream(r, "b", FX_EXPECT_VERSION, 0), "T", 0, NULL); /* b is at 1 */
    rq_event(rq_stream(r, "c", FX_EXPECT_NO_STREAM, 0), "T", 0, NULL);
    expect_conflict(r, 1, 1);
    cr_assert_eq(last_version("a"), 0);
    cr_assert_eq(last_version("b"), 1);
    cr_assert_eq(last_version("c"), -1);
    rq_free(r);

    r = rq_new();
    rq_event(rq_stream(r, "a", FX_EXPECT_ANY, 0), "T", 0, NULL);
    rq_event(rq_stream(r, "b", FX_EXPECT_EXISTS, 0), "T", 0, NULL);
    rq_event(rq_stream(r, "c", FX_EXPECT_EXISTS, 0), "T", 0, NULL); /* never written */
    expect_conflict(r, 2, -1);
    cr_assert_eq(last_version("a"), 0);
    cr_assert_eq(last_version("b"), 1);
    rq_free(r);
}

Test(log_append, multi_stream_append_takes_consecutive_positions_in_request_order)
{
    fx_put("x", 1, "T");
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *b = rq_stream(r, "b", FX_EXPECT_NO_STREAM, 0);
    rq_event(b, "B", 10, NULL);
    rq_event(b, "B", 11, NULL);
    Annals__V1__StreamAppend *a = rq_stream(r, "a", FX_EXPECT_NO_STREAM, 0);
    rq_event(a, "A", 20, NULL);
    rq_event(a, "A", 21, NULL);
    rq_event(a, "A", 22, NULL);
    rq_event(rq_stream(r, "x", FX_EXPECT_VERSION, 0), "X", 30, NULL);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.op.first_position, 2);
    cr_assert_eq(o.op.last_position, 7);
    cr_assert_eq(o.sr[0].first_version, 0);
    cr_assert_eq(o.sr[0].last_version, 1);
    cr_assert_eq(o.sr[1].first_version, 0);
    cr_assert_eq(o.sr[1].last_version, 2);
    cr_assert_eq(o.sr[2].first_version, 1);
    cr_assert_eq(o.sr[2].last_version, 1);

    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, 7);
    const char *want_stream[] = {"x", "b", "b", "a", "a", "a", "x"};
    uint64_t want_version[] = {0, 0, 1, 0, 1, 2, 1};
    uint64_t want_id[] = {0, 10, 11, 20, 21, 22, 30};
    for (size_t i = 0; i < 7; i++) {
        cr_assert_str_eq(e.v[i].rec->stream, want_stream[i], "position %zu", i + 1);
        cr_assert_eq(e.v[i].version, want_version[i], "position %zu", i + 1);
        if (want_id[i]) {
            cr_assert(id_is(&e.v[i].rec->id, want_id[i]), "position %zu id", i + 1);
        }
    }
    fx_evs_free(&e);
    rq_free(r);
}

Test(log_append, batch_with_failing_middle_ops_commits_the_others_gap_free)
{
    fx_put("s", 1, "T"); /* position 1 */
    fx_put("dup", 1, "T");
    Annals__V1__AppendRequest *ids = rq_simple("dup", FX_EXPECT_ANY, 0, 1, "T", 77);
    struct fx_op tmp;
    fx_append(ids, &tmp, 0); /* stores id 77 at position 3 */
    struct marks m = mark();

    Annals__V1__AppendRequest *r0 = rq_simple("a", FX_EXPECT_NO_STREAM, 0, 2, "T", 0);
    Annals__V1__AppendRequest *r1 = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 1, "T", 0);
    Annals__V1__AppendRequest *r2 = rq_simple("b", FX_EXPECT_ANY, 0, 2, "T", 0);
    Annals__V1__AppendRequest *r3 = rq_simple("", FX_EXPECT_ANY, 0, 1, "T", 0);
    Annals__V1__AppendRequest *r4 = rq_simple("c", FX_EXPECT_ANY, 0, 1, "T", 77);
    Annals__V1__AppendRequest *r5 = rq_simple("a", FX_EXPECT_VERSION, 1, 1, "T", 0);
    struct fx_op ops[6];
    fx_op_append(&ops[0], r0);
    fx_op_append(&ops[1], r1);
    fx_op_append(&ops[2], r2);
    fx_op_append(&ops[3], r3);
    fx_op_append(&ops[4], r4);
    fx_op_append(&ops[5], r5);
    uint64_t seq = fx_commit(ops, 6);

    cr_assert_eq(ops[0].op.rc, 0, "%s", ops[0].op.detail);
    cr_assert_eq(ops[1].op.rc, AN_ECONFLICT);
    cr_assert_eq(ops[2].op.rc, 0, "%s", ops[2].op.detail);
    cr_assert_eq(ops[3].op.rc, AN_EINVAL);
    cr_assert_eq(ops[4].op.rc, AN_EEXIST);
    cr_assert_eq(ops[5].op.rc, 0, "%s", ops[5].op.detail);
    cr_assert_eq(ops[0].op.first_position, m.head + 1);
    cr_assert_eq(ops[2].op.first_position, ops[0].op.last_position + 1);
    cr_assert_eq(ops[5].op.first_position, ops[2].op.last_position + 1);
    cr_assert_eq(ops[5].op.last_position, m.head + 5);
    cr_assert_eq(ops[5].sr[0].first_version, 2);
    cr_assert_gt(seq, m.committed_seq);
    cr_assert_eq(ops[0].op.seq, seq);
    cr_assert_eq(ops[2].op.seq, seq);
    cr_assert_eq(ops[5].op.seq, seq);
    cr_assert_eq(last_version("c"), -1);
    cr_assert_eq(last_version("s"), 0);

    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, m.head + 5);
    fx_evs_free(&e);
    rq_free(ids);
    rq_free(r0);
    rq_free(r1);
    rq_free(r2);
    rq_free(r3);
    rq_free(r4);
    rq_free(r5);
}

Test(log_append, large_batch_commits_ops_in_order)
{
    enum { N = 300 };
    Annals__V1__AppendRequest **reqs = calloc(N, sizeof(*reqs));
    struct fx_op *ops = calloc(N, sizeof(*ops));
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "bulk-%d", i % 7);
        reqs[i] = rq_simple(name, FX_EXPECT_ANY, 0, 1 + (size_t)(i % 2), "T", 0);
        fx_op_append(&ops[i], reqs[i]);
    }
    uint64_t seq = fx_commit(ops, N);
    cr_assert_gt(seq, 0);
    uint64_t next = 1;
    uint64_t versions[7] = {0};
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ops[i].op.rc, 0, "op %d: %s", i, ops[i].op.detail);
        cr_assert_eq(ops[i].op.first_position, next, "op %d", i);
        cr_assert_eq(ops[i].sr[0].first_version, versions[i % 7], "op %d", i);
        next = ops[i].op.last_position + 1;
        versions[i % 7] = ops[i].sr[0].last_version + 1;
        cr_assert_eq(ops[i].op.seq, seq);
        rq_free(reqs[i]);
    }
    cr_assert_eq(log_head(fx.env), next - 1);
    struct fx_evs e = {0};
    fx_read_everything(&e);
    fx_evs_free(&e);
    free(reqs);
    free(ops);
}

Test(log_append, later_op_in_batch_sees_earlier_ops_writes)
{
    Annals__V1__AppendRequest *r0 = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 2, "T", 0);
    Annals__V1__AppendRequest *r1 = rq_simple("s", FX_EXPECT_VERSION, 1, 1, "T", 0);
    Annals__V1__AppendRequest *r2 = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 1, "T", 0);
    struct fx_op ops[3];
    fx_op_append(&ops[0], r0);
    fx_op_append(&ops[1], r1);
    fx_op_append(&ops[2], r2);
    fx_commit(ops, 3);
    cr_assert_eq(ops[0].op.rc, 0, "%s", ops[0].op.detail);
    cr_assert_eq(ops[1].op.rc, 0, "%s", ops[1].op.detail);
    cr_assert_eq(ops[1].sr[0].first_version, 2);
    cr_assert_eq(ops[1].op.first_position, 3);
    cr_assert_eq(ops[2].op.rc, AN_ECONFLICT);
    cr_assert_eq(ops[2].op.actual_version, 2);
    cr_assert_eq(log_head(fx.env), 3);
    rq_free(r0);
    rq_free(r1);
    rq_free(r2);
}

Test(log_append, positions_stay_gap_free_across_failures)
{
    size_t ok_events = 0;
    for (int i = 0; i < 30; i++) {
        char name[32];
        snprintf(name, sizeof(name), "s-%d", i % 4);
        Annals__V1__AppendRequest *r;
        struct fx_op o;
        switch (i % 3) {
        case 0:
            r = rq_simple(name, FX_EXPECT_ANY, 0, 1 + (size_t)i % 3, "T", 0);
            fx_append(r, &o, 0);
            ok_events += 1 + (size_t)i % 3;
            break;
        case 1:
            r = rq_simple(name, FX_EXPECT_VERSION, 1000, 2, "T", 0);
            fx_append(r, &o, AN_ECONFLICT);
            break;
        default:
            r = rq_simple(name, FX_EXPECT_ANY, 0, 0, "T", 0); /* no events */
            fx_append(r, &o, AN_EINVAL);
            break;
        }
        rq_free(r);
    }
    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, ok_events);
    fx_evs_free(&e);
}

Test(log_append, positions_versions_and_ids_survive_reopen)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 3, "T", 900);
    struct fx_op first;
    fx_append(r, &first, 0);
    int64_t t_before = first.op.recorded_at_ns;

    fx_reopen();
    cr_assert_eq(log_head(fx.env), 3);
    Annals__V1__AppendRequest *r2 = rq_simple("s", FX_EXPECT_VERSION, 2, 2, "T", 0);
    struct fx_op o;
    fx_append(r2, &o, 0);
    cr_assert_eq(o.op.first_position, 4);
    cr_assert_eq(o.sr[0].first_version, 3);
    cr_assert_geq(o.op.recorded_at_ns, t_before);

    /* the ids are still known: an exact retry returns the original result */
    struct fx_op retry;
    fx_append(r, &retry, 0);
    cr_assert_eq(retry.op.first_position, 1);
    cr_assert_eq(retry.op.last_position, 3);

    fx_reopen();
    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, 5);
    fx_evs_free(&e);
    rq_free(r);
    rq_free(r2);
}

Test(log_append, recorded_at_never_decreases)
{
    int64_t prev = 0;
    for (int i = 0; i < 40; i++) {
        Annals__V1__AppendRequest *r = rq_simple(i % 2 ? "a" : "b", FX_EXPECT_ANY, 0, 2, "T", 0);
        struct fx_op o;
        fx_append(r, &o, 0);
        cr_assert_geq(o.op.recorded_at_ns, prev, "append %d went back in time", i);
        prev = o.op.recorded_at_ns;
        rq_free(r);
    }
    struct fx_evs e = {0};
    fx_read_everything(&e); /* asserts the order along positions */
    cr_assert_eq(e.n, 80);
    fx_evs_free(&e);
}

/* ---- idempotency ---- */

Test(log_idempotency, exact_retry_returns_original_result_and_writes_nothing)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 3, "T", 500);
    struct fx_op o;
    fx_append(r, &o, 0);
    fx_put("other", 2, "T");
    struct marks m = mark();

    struct fx_op again;
    fx_op_append(&again, r);
    uint64_t seq = fx_commit(&again, 1);
    cr_assert_eq(again.op.rc, 0, "retry rc = %s: %s", an_errname(again.op.rc),
                 again.op.detail);
    cr_assert_eq(again.op.first_position, o.op.first_position);
    cr_assert_eq(again.op.last_position, o.op.last_position);
    cr_assert_eq(again.op.recorded_at_ns, o.op.recorded_at_ns);
    cr_assert_eq(again.sr[0].first_version, 0);
    cr_assert_eq(again.sr[0].last_version, 2);
    cr_assert_eq(seq, 0, "a retry made commit %llu", (unsigned long long)seq);
    /* acknowledging the retry must still wait for the original to be durable */
    cr_assert_geq(again.op.seq, o.op.seq);
    assert_unchanged(m, "exact retry");
    cr_assert_eq(stream_count("s"), 3);
    rq_free(r);
}

Test(log_idempotency, exact_retry_of_multi_stream_append_ignores_stale_expectations)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *a = rq_stream(r, "a", FX_EXPECT_NO_STREAM, 0);
    rq_event(a, "T", 1, NULL);
    rq_event(a, "T", 2, NULL);
    rq_event(rq_stream(r, "b", FX_EXPECT_NO_STREAM, 0), "T", 3, NULL);
    struct fx_op o;
    fx_append(r, &o, 0);
    fx_put("a", 2, "T");
    fx_put("b", 1, "T");
    struct marks m = mark();

    struct fx_op again;
    fx_append(r, &again, 0);
    cr_assert_eq(again.op.first_position, 1);
    cr_assert_eq(again.op.last_position, 3);
    cr_assert_eq(again.op.recorded_at_ns, o.op.recorded_at_ns);
    cr_assert_eq(again.sr[0].first_version, 0);
    cr_assert_eq(again.sr[0].last_version, 1);
    cr_assert_eq(again.sr[1].first_version, 0);
    cr_assert_eq(again.sr[1].last_version, 0);
    assert_unchanged(m, "multi-stream retry");
    rq_free(r);
}

Test(log_idempotency, exact_retry_succeeds_on_tombstoned_stream)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 600);
    struct fx_op o;
    fx_append(r, &o, 0);
    struct fx_op d;
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, 0);
    struct marks m = mark();

    struct fx_op again;
    fx_append(r, &again, 0);
    cr_assert_eq(again.op.first_position, 1);
    cr_assert_eq(again.op.last_position, 2);
    cr_assert_eq(again.sr[0].last_version, 1);
    assert_unchanged(m, "retry on a tombstoned stream");
    rq_free(r);
}

Test(log_idempotency, exact_retry_succeeds_on_soft_deleted_stream)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 2, "T", 650);
    struct fx_op o;
    fx_append(r, &o, 0);
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    struct marks m = mark();
    struct fx_op again;
    fx_append(r, &again, 0);
    cr_assert_eq(again.op.first_position, 1);
    cr_assert_eq(again.op.last_position, 2);
    assert_unchanged(m, "retry on a soft-deleted stream");
    rq_free(r);
}

Test(log_idempotency, same_request_twice_in_one_batch_is_applied_once)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 2, "T", 700);
    struct fx_op ops[2];
    fx_op_append(&ops[0], r);
    fx_op_append(&ops[1], r);
    fx_commit(ops, 2);
    cr_assert_eq(ops[0].op.rc, 0, "%s", ops[0].op.detail);
    cr_assert_eq(ops[1].op.rc, 0, "second copy: %s (%s)", an_errname(ops[1].op.rc),
                 ops[1].op.detail);
    cr_assert_eq(ops[1].op.first_position, ops[0].op.first_position);
    cr_assert_eq(ops[1].op.last_position, ops[0].op.last_position);
    cr_assert_eq(log_head(fx.env), 2);
    rq_free(r);
}

Test(log_idempotency, exact_retry_of_an_append_batched_with_others)
{
    Annals__V1__AppendRequest *a = rq_simple("a", FX_EXPECT_NO_STREAM, 0, 2, "T", 810);
    Annals__V1__AppendRequest *b = rq_simple("a", FX_EXPECT_VERSION, 1, 2, "T", 820);
    Annals__V1__AppendRequest *c = rq_simple("c", FX_EXPECT_ANY, 0, 1, "T", 830);
    struct fx_op ops[3];
    fx_op_append(&ops[0], a);
    fx_op_append(&ops[1], b);
    fx_op_append(&ops[2], c);
    fx_commit(ops, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ops[i].op.rc, 0, "op %d: %s", i, ops[i].op.detail);
    }
    fx_put("a", 1, "T");
    struct marks m = mark();
    Annals__V1__AppendRequest *reqs[3] = {a, b, c};
    for (int i = 2; i >= 0; i--) {
        struct fx_op again;
        fx_op_append(&again, reqs[i]);
        fx_commit(&again, 1);
        cr_assert_eq(again.op.rc, 0, "retry of op %d: %s (%s)", i, an_errname(again.op.rc),
                     again.op.detail);
        cr_assert_eq(again.op.first_position, ops[i].op.first_position, "op %d", i);
        cr_assert_eq(again.op.last_position, ops[i].op.last_position, "op %d", i);
        cr_assert_eq(again.op.recorded_at_ns, ops[i].op.recorded_at_ns, "op %d", i);
        cr_assert_eq(again.sr[0].first_version, ops[i].sr[0].first_version, "op %d", i);
    }
    assert_unchanged(m, "retries of batched appends");
    /* two batched appends together are not a retry of either */
    Annals__V1__AppendRequest *ab = rq_simple("a", FX_EXPECT_ANY, 0, 2, "T", 810);
    rq_event(ab->streams[0], "T", 820, NULL);
    rq_event(ab->streams[0], "T", 821, NULL);
    struct fx_op x;
    fx_append(ab, &x, AN_EEXIST);
    assert_unchanged(m, "a merged retry");
    rq_free(ab);
    rq_free(a);
    rq_free(b);
    rq_free(c);
}

Test(log_idempotency, id_stored_by_an_earlier_op_of_the_same_batch_is_eexist)
{
    Annals__V1__AppendRequest *a = rq_simple("a", FX_EXPECT_ANY, 0, 1, "T", 840);
    Annals__V1__AppendRequest *b = rq_simple("b", FX_EXPECT_ANY, 0, 1, "T", 840);
    struct fx_op ops[2];
    fx_op_append(&ops[0], a);
    fx_op_append(&ops[1], b);
    fx_commit(ops, 2);
    cr_assert_eq(ops[0].op.rc, 0, "%s", ops[0].op.detail);
    cr_assert_eq(ops[1].op.rc, AN_EEXIST, "%s (%s)", an_errname(ops[1].op.rc),
                 ops[1].op.detail);
    cr_assert_eq(log_head(fx.env), 1);
    cr_assert_eq(last_version("b"), -1);
    rq_free(a);
    rq_free(b);
}

/* Each shape reuses stored ids without being the original append. */
Test(log_idempotency, reused_id_in_any_other_shape_is_eexist)
{
    Annals__V1__AppendRequest *orig = rq_simple("s", FX_EXPECT_ANY, 0, 3, "T", 1);
    struct fx_op o;
    fx_append(orig, &o, 0); /* ids 1, 2, 3 */
    struct marks m = mark();

    Annals__V1__AppendRequest *shapes[7];
    Annals__V1__StreamAppend *s;
    /* 0: the same ids in another order */
    shapes[0] = rq_new();
    s = rq_stream(shapes[0], "s", FX_EXPECT_ANY, 0);
    rq_event(s, "T", 2, NULL);
    rq_event(s, "T", 1, NULL);
    rq_event(s, "T", 3, NULL);
    /* 1: the same ids on another stream */
    shapes[1] = rq_simple("t", FX_EXPECT_ANY, 0, 3, "T", 1);
    /* 2: a prefix of them */
    shapes[2] = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 1);
    /* 3: all of them plus a new one */
    shapes[3] = rq_simple("s", FX_EXPECT_ANY, 0, 4, "T", 1);
    /* 4: one stored id among new ones */
    shapes[4] = rq_new();
    s = rq_stream(shapes[4], "s", FX_EXPECT_ANY, 0);
    rq_event(s, "T", 90, NULL);
    rq_event(s, "T", 2, NULL);
    /* 5: the same ids split over two streams */
    shapes[5] = rq_new();
    s = rq_stream(shapes[5], "s", FX_EXPECT_ANY, 0);
    rq_event(s, "T", 1, NULL);
    rq_event(s, "T", 2, NULL);
    rq_event(rq_stream(shapes[5], "t", FX_EXPECT_ANY, 0), "T", 3, NULL);
    /* 6: the original ids with an empty-id event added */
    shapes[6] = rq_simple("s", FX_EXPECT_ANY, 0, 3, "T", 1);
    rq_event(shapes[6]->streams[0], "T", 0, NULL);

    for (int i = 0; i < 7; i++) {
        struct fx_op x;
        fx_op_append(&x, shapes[i]);
        fx_commit(&x, 1);
        cr_assert_eq(x.op.rc, AN_EEXIST, "shape %d: rc = %s, want AN_EEXIST (%s)", i,
                     an_errname(x.op.rc), x.op.detail);
        cr_assert_neq(x.op.detail[0], '\0', "shape %d: no detail", i);
        assert_unchanged(m, "reused id");
        rq_free(shapes[i]);
    }
    cr_assert_eq(last_version("t"), -1);
    cr_assert_eq(stream_count("s"), 3);

    /* ids 4 and 90 were never stored by the failed shapes */
    Annals__V1__AppendRequest *fresh = rq_new();
    s = rq_stream(fresh, "s", FX_EXPECT_VERSION, 2);
    rq_event(s, "T", 4, NULL);
    rq_event(s, "T", 90, NULL);
    fx_append(fresh, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 3);
    rq_free(fresh);
    rq_free(orig);
}

Test(log_idempotency, duplicate_id_inside_one_request_is_einval)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *s = rq_stream(r, "s", FX_EXPECT_ANY, 0);
    rq_event(s, "T", 5, NULL);
    rq_event(s, "T", 5, NULL);
    struct fx_op o;
    fx_append(r, &o, AN_EINVAL);
    cr_assert_neq(o.op.detail[0], '\0');
    rq_free(r);

    r = rq_new();
    rq_event(rq_stream(r, "a", FX_EXPECT_ANY, 0), "T", 6, NULL);
    rq_event(rq_stream(r, "b", FX_EXPECT_ANY, 0), "T", 6, NULL);
    fx_append(r, &o, AN_EINVAL);
    cr_assert_neq(o.op.detail[0], '\0');
    cr_assert_eq(log_head(fx.env), 0);
    rq_free(r);
}

Test(log_idempotency, same_stream_twice_in_one_request_is_einval)
{
    Annals__V1__AppendRequest *r = rq_new();
    rq_event(rq_stream(r, "s", FX_EXPECT_ANY, 0), "T", 0, NULL);
    rq_event(rq_stream(r, "t", FX_EXPECT_ANY, 0), "T", 0, NULL);
    rq_event(rq_stream(r, "s", FX_EXPECT_ANY, 0), "T", 0, NULL);
    struct fx_op o;
    fx_append(r, &o, AN_EINVAL);
    cr_assert_neq(o.op.detail[0], '\0');
    cr_assert_eq(log_head(fx.env), 0);
    rq_free(r);
}

Test(log_idempotency, empty_ids_get_distinct_server_uuidv7_ids)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *a = rq_stream(r, "a", FX_EXPECT_ANY, 0);
    Annals__V1__StreamAppend *b = rq_stream(r, "b", FX_EXPECT_ANY, 0);
    for (int i = 0; i < 4; i++) {
        rq_event(a, "T", 0, NULL);
        rq_event(b, "T", 0, NULL);
    }
    struct fx_op o;
    fx_append(r, &o, 0);
    fx_append(r, &o, 0); /* empty ids: appended again, with new ids */
    for (size_t i = 0; i < r->n_streams; i++) {
        for (size_t j = 0; j < r->streams[i]->n_events; j++) {
            cr_assert_eq(r->streams[i]->events[j]->id.len, 0, "the request was modified");
        }
    }
    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, 16);
    for (size_t i = 0; i < e.n; i++) {
        const ProtobufCBinaryData *id = &e.v[i].rec->id;
        cr_assert_eq(id->len, 16, "position %zu: id of %zu bytes", i + 1, id->len);
        cr_assert_eq(id->data[6] >> 4, 7, "position %zu: version nibble %u", i + 1,
                     id->data[6] >> 4);
        cr_assert_eq(id->data[8] & 0xc0, 0x80, "position %zu: not an RFC 4122 variant",
                     i + 1);
        for (size_t k = 0; k < i; k++) {
            cr_assert_neq(memcmp(id->data, e.v[k].rec->id.data, 16), 0,
                          "positions %zu and %zu share an id", k + 1, i + 1);
        }
    }
    fx_evs_free(&e);
    rq_free(r);
}

Test(log_idempotency, given_and_empty_ids_mix_in_one_request)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *s = rq_stream(r, "s", FX_EXPECT_ANY, 0);
    rq_event(s, "T", 31, NULL);
    rq_event(s, "T", 0, NULL);
    rq_event(s, "T", 32, NULL);
    struct fx_op o;
    fx_append(r, &o, 0);
    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, 3);
    cr_assert(id_is(&e.v[0].rec->id, 31));
    cr_assert_eq(e.v[1].rec->id.len, 16);
    cr_assert(id_is(&e.v[2].rec->id, 32));
    fx_evs_free(&e);
    rq_free(r);
}

/* ---- validation ---- */

/* Commits r (allow_reserved as given) and asserts want_rc, a detail, and
 * that nothing was written; log_validate_append must agree. */
static void expect_rejected(const Annals__V1__AppendRequest *r, bool allow_reserved,
                            int want_rc, const char *what)
{
    struct marks m = mark();
    char detail[LOG_DETAIL_MAX] = "";
    int vrc = log_validate_append(fx.env, r, allow_reserved, detail);
    cr_assert_eq(vrc, want_rc, "%s: log_validate_append = %s, want %s (%s)", what,
                 an_errname(vrc), an_errname(want_rc), detail);
    cr_assert_neq(detail[0], '\0', "%s: log_validate_append gave no detail", what);

    struct fx_op o;
    fx_op_append(&o, r);
    o.op.allow_reserved = allow_reserved;
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, want_rc, "%s: rc = %s, want %s (%s)", what, an_errname(o.op.rc),
                 an_errname(want_rc), o.op.detail);
    cr_assert_neq(o.op.detail[0], '\0', "%s: no detail", what);
    assert_unchanged(m, what);
}

static void expect_accepted(const Annals__V1__AppendRequest *r, bool allow_reserved,
                            const char *what)
{
    char detail[LOG_DETAIL_MAX] = "";
    int vrc = log_validate_append(fx.env, r, allow_reserved, detail);
    cr_assert_eq(vrc, 0, "%s: log_validate_append = %s (%s)", what, an_errname(vrc), detail);
    struct fx_op o;
    fx_op_append(&o, r);
    o.op.allow_reserved = allow_reserved;
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, 0, "%s: rc = %s (%s)", what, an_errname(o.op.rc), o.op.detail);
}

Test(log_validate, rejects_empty_request)
{
    Annals__V1__AppendRequest *r = rq_new();
    expect_rejected(r, false, AN_EINVAL, "no streams");
    rq_free(r);
}

Test(log_validate, rejects_stream_without_events)
{
    Annals__V1__AppendRequest *r = rq_new();
    rq_event(rq_stream(r, "a", FX_EXPECT_ANY, 0), "T", 0, NULL);
    rq_stream(r, "b", FX_EXPECT_ANY, 0);
    expect_rejected(r, false, AN_EINVAL, "a stream with no events");
    cr_assert_eq(last_version("a"), -1);
    rq_free(r);
}

Test(log_validate, rejects_empty_and_overlong_stream_names)
{
    char name[300];
    memset(name, 'n', sizeof(name));
    Annals__V1__AppendRequest *r = rq_new();
    rq_event(rq_stream_n(r, name, 0), "T", 0, NULL);
    expect_rejected(r, false, AN_EINVAL, "empty stream name");
    rq_free(r);

    r = rq_new();
    rq_event(rq_stream_n(r, name, LOG_NAME_MAX + 1), "T", 0, NULL);
    expect_rejected(r, false, AN_EINVAL, "256-byte stream name");
    rq_free(r);

    r = rq_new();
    rq_event(rq_stream_n(r, name, LOG_NAME_MAX), "T", 0, NULL);
    expect_accepted(r, false, "255-byte stream name");
    name[LOG_NAME_MAX] = '\0';
    cr_assert_eq(last_version(name), 0);
    rq_free(r);
}

static const char *const bad_utf8[] = {
    "\xff",              /* never valid */
    "ab\x80",            /* stray continuation byte */
    "\xc0\xaf",          /* overlong '/' */
    "\xe0\x80\xaf",      /* overlong, three bytes */
    "\xed\xa0\x80",      /* UTF-16 surrogate */
    "\xe2\x82",          /* truncated */
    "\xf4\x90\x80\x80",  /* above U+10FFFF */
    "x\xc3",             /* truncated at the end */
};

Test(log_validate, rejects_invalid_utf8_stream_names)
{
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        Annals__V1__AppendRequest *r = rq_new();
        rq_event(rq_stream(r, bad_utf8[i], FX_EXPECT_ANY, 0), "T", 0, NULL);
        char what[64];
        snprintf(what, sizeof(what), "bad UTF-8 stream name #%zu", i);
        expect_rejected(r, false, AN_EINVAL, what);
        rq_free(r);
    }
}

Test(log_validate, accepts_multibyte_utf8_names_and_types)
{
    const char *name = "ordres-\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x98\x80";
    Annals__V1__AppendRequest *r = rq_new();
    rq_event(rq_stream(r, name, FX_EXPECT_ANY, 0), "Cr\xc3\xa9\xc3\xa9", 0, NULL);
    expect_accepted(r, false, "multi-byte UTF-8");
    cr_assert_eq(last_version(name), 0);
    rq_free(r);
}

Test(log_validate, rejects_bad_event_types)
{
    char type[300];
    memset(type, 't', sizeof(type));
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    rq_set_type(r->streams[0]->events[1], type, 0);
    expect_rejected(r, false, AN_EINVAL, "empty type");
    rq_set_type(r->streams[0]->events[1], type, LOG_NAME_MAX + 1);
    expect_rejected(r, false, AN_EINVAL, "256-byte type");
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        rq_set_type(r->streams[0]->events[1], bad_utf8[i], strlen(bad_utf8[i]));
        char what[64];
        snprintf(what, sizeof(what), "bad UTF-8 type #%zu", i);
        expect_rejected(r, false, AN_EINVAL, what);
    }
    rq_set_type(r->streams[0]->events[1], type, LOG_NAME_MAX);
    expect_accepted(r, false, "255-byte type");
    rq_free(r);
}

Test(log_validate, rejects_reserved_stream_names_unless_allowed)
{
    Annals__V1__AppendRequest *r = rq_simple("$system", FX_EXPECT_ANY, 0, 1, "T", 0);
    expect_rejected(r, false, AN_EINVAL, "'$' stream");
    expect_accepted(r, true, "'$' stream with allow_reserved");
    cr_assert_eq(last_version("$system"), 0);
    rq_free(r);
}

Test(log_validate, rejects_ids_that_are_not_0_or_16_bytes)
{
    static const size_t lens[] = {1, 8, 15, 17, 32};
    uint8_t raw[32];
    fx_pattern(raw, sizeof(raw), 3);
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        rq_set_id(r->streams[0]->events[1], raw, lens[i]);
        char what[64];
        snprintf(what, sizeof(what), "%zu-byte id", lens[i]);
        expect_rejected(r, false, AN_EINVAL, what);
    }
    rq_set_id(r->streams[0]->events[1], raw, 16);
    expect_accepted(r, false, "16-byte id");
    rq_free(r);
}

static void open_small_limits(uint32_t max_event, uint32_t max_request)
{
    struct log_cfg cfg = {.max_event_bytes = max_event, .max_request_bytes = max_request};
    fx_fresh(&cfg);
}

Test(log_validate, rejects_event_over_max_event_bytes)
{
    open_small_limits(1024, 0);
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    rq_set_data(r->streams[0]->events[1], 2048, 1);
    expect_rejected(r, false, AN_ETOOBIG, "2 KiB data");
    struct fx_op o;
    fx_op_append(&o, r);
    fx_commit(&o, 1);
    cr_assert(strstr(o.op.detail, "1024"), "detail does not name the limit: %s", o.op.detail);

    rq_set_data(r->streams[0]->events[1], 0, 1);
    Annals__V1__EventData *e = r->streams[0]->events[1];
    e->metadata.data = malloc(2048);
    e->metadata.len = 2048;
    fx_pattern(e->metadata.data, 2048, 2);
    expect_rejected(r, false, AN_ETOOBIG, "2 KiB metadata");

    free(e->metadata.data);
    e->metadata.data = NULL;
    e->metadata.len = 0;
    rq_set_data(e, 512, 1);
    expect_accepted(r, false, "512-byte event");
    rq_free(r);
}

Test(log_validate, rejects_request_over_max_request_bytes)
{
    open_small_limits(4096, 16384);
    Annals__V1__AppendRequest *r = rq_new();
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof(name), "s%d", i);
        Annals__V1__StreamAppend *s = rq_stream(r, name, FX_EXPECT_ANY, 0);
        for (int j = 0; j < 3; j++) {
            rq_set_data(rq_event(s, "T", 0, NULL), 1000, (uint64_t)(i * 10 + j));
        }
    }
    cr_assert_lt(annals__v1__append_request__get_packed_size(r), 16384);
    expect_accepted(r, false, "9 KB request");

    for (int j = 0; j < 9; j++) {
        rq_set_data(rq_event(r->streams[2], "T", 0, NULL), 1000, (uint64_t)(100 + j));
    }
    cr_assert_gt(annals__v1__append_request__get_packed_size(r), 16384);
    expect_rejected(r, false, AN_ETOOBIG, "18 KB request");
    struct fx_op o;
    fx_op_append(&o, r);
    fx_commit(&o, 1);
    cr_assert(strstr(o.op.detail, "16384"), "detail does not name the limit: %s", o.op.detail);
    rq_free(r);
}

Test(log_validate, rejects_unknown_expectation)
{
    /* proto3 enums are open: a newer client may send a value we do not know */
    fx_put("s", 1, "T");
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 1, "T", 0);
    r->streams[0]->expect = (Annals__V1__Expectation)7;
    expect_rejected(r, false, AN_EINVAL, "expectation 7");
    rq_free(r);
    struct fx_op d;
    struct marks m = mark();
    fx_delete("s", false, (Annals__V1__Expectation)7, 0, &d, AN_EINVAL);
    assert_unchanged(m, "delete with expectation 7");
}

Test(log_validate, validate_append_accepts_valid_request_without_writing)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 3, "T", 9);
    char detail[LOG_DETAIL_MAX] = "untouched";
    cr_assert_eq(log_validate_append(fx.env, r, false, detail), 0, "%s", detail);
    cr_assert_eq(log_head(fx.env), 0);
    cr_assert_eq(log_committed_seq(fx.env), 0);
    cr_assert_eq(last_version("s"), -1);
    cr_assert_eq(log_validate_append(fx.env, r, false, NULL), 0);
    /* duplicates are a validation matter, stored ids are not */
    rq_event(r->streams[0], "T", 9, NULL);
    cr_assert_eq(log_validate_append(fx.env, r, false, detail), AN_EINVAL);
    rq_free(r);
}

Test(log_validate, op_marked_validated_is_committed)
{
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    struct fx_op o;
    fx_op_append(&o, r);
    o.op.validated = true;
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, 0, "%s", o.op.detail);
    cr_assert_eq(o.op.last_position, 2);
    rq_free(r);
}

Test(log_validate, validate_delete_checks_the_name)
{
    char detail[LOG_DETAIL_MAX];
    char long_name[300];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    Annals__V1__DeleteStreamRequest d = ANNALS__V1__DELETE_STREAM_REQUEST__INIT;
    const char *bad[] = {"", "$streams", "$x", "\xff\xfe", long_name};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        d.stream = (char *)bad[i];
        detail[0] = '\0';
        int rc = log_validate_delete(fx.env, &d, detail);
        cr_assert_eq(rc, AN_EINVAL, "name #%zu: %s", i, an_errname(rc));
        cr_assert_neq(detail[0], '\0', "name #%zu: no detail", i);
    }
    d.stream = "orders-1";
    d.tombstone = true;
    cr_assert_eq(log_validate_delete(fx.env, &d, detail), 0, "%s", detail);
}

/* ---- deletion ---- */

/* The deletion event at pos: its stream, type, version and JSON. */
static void assert_deletion_event(uint64_t pos, const char *type, uint64_t version_in_streams,
                                  const char *stream, uint64_t last_version_v)
{
    int rc;
    Annals__V1__RecordedEvent *ev = fx_get_event(pos, &rc);
    cr_assert_eq(rc, 0, "get_event(%llu) = %s", (unsigned long long)pos, an_errname(rc));
    cr_assert_str_eq(ev->stream, LOG_DELETED_STREAM);
    cr_assert_str_eq(ev->type, type);
    cr_assert_eq(ev->stream_version, version_in_streams);
    char name[LOG_NAME_MAX * 6 + 1];
    uint64_t v = 0;
    cr_assert(fx_json_str(ev->data.data, ev->data.len, "stream", name, sizeof(name)),
              "no \"stream\" string in %.*s", (int)ev->data.len, (const char *)ev->data.data);
    cr_assert_str_eq(name, stream);
    cr_assert(fx_json_u64(ev->data.data, ev->data.len, "last_version", &v),
              "no \"last_version\" number in %.*s", (int)ev->data.len,
              (const char *)ev->data.data);
    cr_assert_eq(v, last_version_v);
    annals__v1__recorded_event__free_unpacked(ev, NULL);
}

Test(log_delete, soft_delete_is_recorded_as_stream_deleted_event)
{
    fx_put("orders-1", 3, "T");
    struct fx_op d;
    fx_delete("orders-1", false, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 4);
    cr_assert_gt(d.op.seq, 0);
    cr_assert_eq(log_head(fx.env), 4);
    assert_deletion_event(4, "$StreamDeleted", 0, "orders-1", 2);
    cr_assert_eq(stream_count("orders-1"), 0);
}

Test(log_delete, tombstone_is_recorded_as_stream_tombstoned_event)
{
    fx_put("orders-1", 2, "T");
    fx_put("x", 1, "T");
    struct fx_op d;
    fx_delete("orders-1", true, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 4);
    assert_deletion_event(4, "$StreamTombstoned", 0, "orders-1", 1);
}

Test(log_delete, deletion_event_escapes_the_stream_name_in_json)
{
    const char *name = "we\"ird\\name\twith\x01" "ctl-\xc3\xa9";
    fx_put(name, 1, "T");
    struct fx_op d;
    fx_delete(name, false, FX_EXPECT_ANY, 0, &d, 0);
    assert_deletion_event(2, "$StreamDeleted", 0, name, 0);
}

Test(log_delete, deletions_take_consecutive_versions_of_streams_stream)
{
    fx_put("a", 1, "T");
    fx_put("b", 1, "T");
    struct fx_op d;
    fx_delete("a", false, FX_EXPECT_ANY, 0, &d, 0);
    fx_delete("b", true, FX_EXPECT_ANY, 0, &d, 0);
    assert_deletion_event(3, "$StreamDeleted", 0, "a", 0);
    assert_deletion_event(4, "$StreamTombstoned", 1, "b", 0);
    struct fx_evs e = {0};
    int rc = fx_read_stream(
        (struct log_stream_read){.stream = LOG_DELETED_STREAM, .as_of = FX_HEAD}, &e, NULL,
        NULL);
    cr_assert_eq(rc, 0, "reading $streams: %s", an_errname(rc));
    cr_assert_eq(e.n, 2);
    fx_evs_free(&e);
}

Test(log_delete, soft_delete_with_nothing_new_returns_previous_position)
{
    fx_put("s", 3, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    uint64_t pos = d.op.first_position;
    struct marks m = mark();

    struct fx_op d2;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d2, 0);
    cr_assert_eq(d2.op.first_position, pos);
    /* acknowledging it must still wait for the deletion to be durable */
    cr_assert_geq(d2.op.seq, d.op.seq);
    assert_unchanged(m, "second soft delete");
}

Test(log_delete, soft_delete_after_new_events_records_a_new_deletion)
{
    fx_put("s", 3, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 4);
    fx_put("s", 1, "T");
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 6);
    assert_deletion_event(6, "$StreamDeleted", 1, "s", 3);
}

Test(log_delete, append_after_soft_delete_continues_versions)
{
    fx_put("s", 3, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 2, "T", 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 3);
    cr_assert_eq(o.sr[0].last_version, 4);
    cr_assert_eq(o.op.first_position, 5);
    struct fx_evs e = {0};
    cr_assert_eq(fx_read_stream((struct log_stream_read){.stream = "s", .as_of = FX_HEAD}, &e,
                                NULL, NULL),
                 0);
    cr_assert_eq(e.n, 2);
    cr_assert_eq(e.v[0].version, 3);
    cr_assert_eq(e.v[1].version, 4);
    fx_evs_free(&e);
    rq_free(r);
}

Test(log_delete, expectations_after_soft_delete_see_last_version_ever_written)
{
    fx_put("s", 3, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);

    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_NO_STREAM, 0, 1, "T", 0);
    expect_conflict(r, 0, 2);
    r->streams[0]->expect = FX_EXPECT_VERSION;
    r->streams[0]->expected_version = 0;
    expect_conflict(r, 0, 2);

    r->streams[0]->expected_version = 2;
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 3);
    rq_free(r);
}

Test(log_delete, stream_exists_expectation_holds_after_soft_delete)
{
    fx_put("s", 2, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_EXISTS, 0, 1, "T", 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    cr_assert_eq(o.sr[0].first_version, 2);
    rq_free(r);
}

Test(log_delete, append_to_tombstoned_stream_is_etombstoned)
{
    fx_put("s", 2, "T");
    struct fx_op d;
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, 0);
    struct marks m = mark();
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 1, "T", 0);
    struct fx_op o;
    fx_append(r, &o, AN_ETOMBSTONED);
    r->streams[0]->expect = FX_EXPECT_VERSION;
    r->streams[0]->expected_version = 1;
    fx_append(r, &o, AN_ETOMBSTONED);
    r->streams[0]->expect = FX_EXPECT_NO_STREAM;
    fx_append(r, &o, AN_ETOMBSTONED);
    assert_unchanged(m, "append to a tombstone");
    rq_free(r);

    /* a multi-stream append that touches it writes nothing at all */
    r = rq_new();
    rq_event(rq_stream(r, "ok", FX_EXPECT_ANY, 0), "T", 0, NULL);
    rq_event(rq_stream(r, "s", FX_EXPECT_ANY, 0), "T", 0, NULL);
    fx_append(r, &o, AN_ETOMBSTONED);
    assert_unchanged(m, "multi-stream append to a tombstone");
    cr_assert_eq(last_version("ok"), -1);
    rq_free(r);
}

Test(log_delete, deleting_tombstoned_stream_again_is_etombstoned)
{
    fx_put("s", 2, "T");
    struct fx_op d;
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, 0);
    struct marks m = mark();
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, AN_ETOMBSTONED);
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, AN_ETOMBSTONED);
    /* the tombstone is reported before a failing expectation */
    fx_delete("s", false, FX_EXPECT_VERSION, 99, &d, AN_ETOMBSTONED);
    assert_unchanged(m, "deleting a tombstone");
}

Test(log_delete, tombstone_after_soft_delete_is_recorded)
{
    fx_put("s", 2, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    fx_delete("s", true, FX_EXPECT_ANY, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 4);
    assert_deletion_event(4, "$StreamTombstoned", 1, "s", 1);
    Annals__V1__AppendRequest *r = rq_simple("s", FX_EXPECT_ANY, 0, 1, "T", 0);
    struct fx_op o;
    fx_append(r, &o, AN_ETOMBSTONED);
    rq_free(r);
}

Test(log_delete, delete_of_never_written_stream_is_enotfound)
{
    fx_put("other", 1, "T");
    struct marks m = mark();
    struct fx_op d;
    fx_delete("ghost", false, FX_EXPECT_ANY, 0, &d, AN_ENOTFOUND);
    fx_delete("ghost", true, FX_EXPECT_ANY, 0, &d, AN_ENOTFOUND);
    assert_unchanged(m, "deleting a stream never written");
}

Test(log_delete, delete_with_bad_or_reserved_name_is_einval)
{
    Annals__V1__AppendRequest *r = rq_simple("$own", FX_EXPECT_ANY, 0, 1, "T", 0);
    struct fx_op o;
    fx_op_append(&o, r);
    o.op.allow_reserved = true;
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, 0, "%s", o.op.detail);
    fx_put("s", 1, "T");
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_ANY, 0, &d, 0);
    struct marks m = mark();

    fx_delete("$streams", false, FX_EXPECT_ANY, 0, &d, AN_EINVAL);
    cr_assert_neq(d.op.detail[0], '\0');
    fx_delete("$own", true, FX_EXPECT_ANY, 0, &d, AN_EINVAL);
    fx_delete("", false, FX_EXPECT_ANY, 0, &d, AN_EINVAL);
    fx_delete("\xc0\xaf", false, FX_EXPECT_ANY, 0, &d, AN_EINVAL);
    assert_unchanged(m, "deleting a bad name");
    rq_free(r);
}

Test(log_delete, delete_with_failed_expectation_is_econflict)
{
    fx_put("s", 3, "T");
    struct marks m = mark();
    struct fx_op d;
    fx_delete("s", false, FX_EXPECT_VERSION, 5, &d, AN_ECONFLICT);
    cr_assert_eq(d.op.conflict_stream, 0);
    cr_assert_eq(d.op.actual_version, 2);
    fx_delete("s", true, FX_EXPECT_NO_STREAM, 0, &d, AN_ECONFLICT);
    cr_assert_eq(d.op.actual_version, 2);
    assert_unchanged(m, "delete with a failed expectation");
    cr_assert_eq(stream_count("s"), 3);

    fx_delete("s", false, FX_EXPECT_VERSION, 2, &d, 0);
    cr_assert_eq(d.op.first_position, 4);
}

Test(log_delete, delete_with_stream_exists_expectation_succeeds)
{
    fx_put("s", 1, "T");
    struct fx_op d;
    fx_delete("s", true, FX_EXPECT_EXISTS, 0, &d, 0);
    cr_assert_eq(d.op.first_position, 2);
}

Test(log_delete, deletes_and_appends_interleave_in_one_batch)
{
    fx_put("s", 3, "T"); /* positions 1..3, versions 0..2 */
    Annals__V1__AppendRequest *r0 = rq_simple("s", FX_EXPECT_VERSION, 2, 1, "T", 0);
    Annals__V1__AppendRequest *r2 = rq_simple("s", FX_EXPECT_VERSION, 3, 1, "T", 0);
    Annals__V1__AppendRequest *r4 = rq_simple("t", FX_EXPECT_ANY, 0, 1, "T", 0);
    Annals__V1__DeleteStreamRequest del = ANNALS__V1__DELETE_STREAM_REQUEST__INIT;
    del.stream = "s";
    Annals__V1__DeleteStreamRequest tomb = ANNALS__V1__DELETE_STREAM_REQUEST__INIT;
    tomb.stream = "t";
    tomb.tombstone = true;
    Annals__V1__AppendRequest *r6 = rq_simple("t", FX_EXPECT_ANY, 0, 1, "T", 0);
    struct fx_op ops[6];
    fx_op_append(&ops[0], r0);
    fx_op_delete(&ops[1], &del);
    fx_op_append(&ops[2], r2);
    fx_op_append(&ops[3], r4);
    fx_op_delete(&ops[4], &tomb);
    fx_op_append(&ops[5], r6);
    fx_commit(ops, 6);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ops[i].op.rc, 0, "op %d: %s (%s)", i, an_errname(ops[i].op.rc),
                     ops[i].op.detail);
    }
    cr_assert_eq(ops[5].op.rc, AN_ETOMBSTONED);
    cr_assert_eq(ops[0].op.first_position, 4);
    cr_assert_eq(ops[1].op.first_position, 5);
    cr_assert_eq(ops[2].op.first_position, 6);
    cr_assert_eq(ops[2].sr[0].first_version, 4);
    cr_assert_eq(ops[3].op.first_position, 7);
    cr_assert_eq(ops[4].op.first_position, 8);
    assert_deletion_event(5, "$StreamDeleted", 0, "s", 3);
    assert_deletion_event(8, "$StreamTombstoned", 1, "t", 0);

    struct fx_evs e = {0};
    cr_assert_eq(fx_read_stream((struct log_stream_read){.stream = "s", .as_of = FX_HEAD}, &e,
                                NULL, NULL),
                 0);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.v[0].version, 4);
    fx_evs_free(&e);
    fx_read_everything(&e);
    cr_assert_eq(e.n, 8);
    fx_evs_free(&e);
    rq_free(r0);
    rq_free(r2);
    rq_free(r4);
    rq_free(r6);
}

/* ---- map growth and the size cap ---- */

/* The log holds exactly n events, event i (from 0) of ev_bytes bytes of
 * fx_pattern(seed0 + i), and verifies. */
static void assert_patterns_and_verify(size_t n, size_t ev_bytes, uint64_t seed0)
{
    struct fx_evs e = {0};
    fx_read_everything(&e);
    cr_assert_eq(e.n, n);
    uint8_t *want = malloc(ev_bytes);
    for (size_t i = 0; i < e.n; i++) {
        fx_pattern(want, ev_bytes, seed0 + i);
        cr_assert_eq(e.v[i].rec->data.len, ev_bytes);
        cr_assert_eq(memcmp(e.v[i].rec->data.data, want, ev_bytes), 0,
                     "data of position %zu differs", i + 1);
    }
    free(want);
    fx_evs_free(&e);
    char detail[LOG_DETAIL_MAX] = "";
    cr_assert_eq(log_verify(fx.env, NULL, NULL, detail), 0, "%s", detail);
}

Test(log_map, map_grows_under_load)
{
    struct log_cfg cfg = {.initial_map_bytes = 1u << 20};
    fx_fresh(&cfg);
    struct log_stats st0;
    cr_assert_eq(log_stats(fx.env, &st0), 0);

    const size_t ev_bytes = 16 * 1024;
    uint64_t seed = 1;
    size_t n_events = 0;
    while (n_events * ev_bytes < (6u << 20)) {
        Annals__V1__AppendRequest *r = rq_simple(n_events % 2 ? "big-a" : "big-b",
                                                 FX_EXPECT_ANY, 0, 4, "Blob", 0);
        for (size_t i = 0; i < 4; i++) {
            rq_set_data(r->streams[0]->events[i], ev_bytes, seed++);
        }
        struct fx_op o;
        fx_append(r, &o, 0);
        cr_assert_eq(o.op.first_position, n_events + 1);
        n_events += 4;
        rq_free(r);
    }
    struct log_stats st;
    cr_assert_eq(log_stats(fx.env, &st), 0);
    cr_assert_gt(st.map_bytes, st0.map_bytes, "map did not grow: %llu",
                 (unsigned long long)st.map_bytes);
    cr_assert_gt(st.map_bytes, 6u << 20);
    cr_assert_geq(st.map_bytes, st.used_bytes);
    cr_assert_eq(st.head, n_events);

    assert_patterns_and_verify(n_events, ev_bytes, 1);
}

/* Commits one op; both ways of failing at the cap are allowed (the op gets
 * AN_EFULL, or the whole commit fails with AN_EFULL). Syncs. */
static int commit_capped(struct fx_op *o, size_t n)
{
    struct log_op *arr = malloc(n * sizeof(*arr));
    for (size_t i = 0; i < n; i++) {
        arr[i] = o[i].op;
        arr[i].streams = o[i].sr;
    }
    uint64_t seq = 0;
    int rc = log_commit(fx.env, arr, n, &seq);
    for (size_t i = 0; i < n; i++) {
        o[i].op = arr[i];
        o[i].op.streams = o[i].sr;
    }
    free(arr);
    cr_assert(rc == 0 || rc == AN_EFULL, "log_commit = %s", an_errname(rc));
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(o[i].op.rc, AN_EFULL, "whole-commit failure: op %zu rc = %s", i,
                         an_errname(o[i].op.rc));
        }
    }
    cr_assert_eq(log_sync(fx.env), 0);
    return rc;
}

struct stored {
    uint64_t pos;
    size_t len;
    uint64_t seed;
};

Test(log_map, appends_fail_with_efull_at_the_size_cap_and_write_nothing_partial)
{
    const uint64_t cap = 2u << 20;
    struct log_cfg cfg = {.max_size_bytes = cap, .initial_map_bytes = 1u << 20};
    fx_fresh(&cfg);

    const size_t ev_bytes = 24 * 1024;
    struct stored *ok = calloc(1024, sizeof(*ok));
    size_t n_ok = 0;
    uint64_t seed = 1000;
    bool full = false;
    char full_detail[LOG_DETAIL_MAX] = "";
    for (int i = 0; i < 200 && !full; i++) {
        Annals__V1__AppendRequest *r =
            rq_simple(i % 3 ? "fill" : "fill-2", FX_EXPECT_ANY, 0, 3, "Blob", 0);
        for (size_t k = 0; k < 3; k++) {
            rq_set_data(r->streams[0]->events[k], ev_bytes, seed + k);
        }
        uint64_t head0 = log_head(fx.env);
        struct fx_op o;
        fx_op_append(&o, r);
        commit_capped(&o, 1);
        if (o.op.rc == 0) {
            cr_assert_eq(o.op.first_position, head0 + 1);
            for (size_t k = 0; k < 3; k++) {
                ok[n_ok++] = (struct stored){o.op.first_position + k, ev_bytes, seed + k};
            }
        } else {
            cr_assert_eq(o.op.rc, AN_EFULL, "rc = %s (%s)", an_errname(o.op.rc), o.op.detail);
            cr_assert_eq(log_head(fx.env), head0, "a failed append moved the head");
            strcpy(full_detail, o.op.detail);
            full = true;
        }
        seed += 3;
        rq_free(r);
    }
    cr_assert(full, "200 appends of 72 KiB never filled a 2 MiB log");
    cr_assert(n_ok > 0, "nothing fit at all");
    cr_assert(strstr(full_detail, "2097152") || strstr(full_detail, "2 MiB"),
              "EFULL detail does not name the limit: '%s'", full_detail);

    struct log_stats st;
    cr_assert_eq(log_stats(fx.env, &st), 0);
    cr_assert_leq(st.map_bytes, cap);
    cr_assert_eq(st.head, ok[n_ok - 1].pos);

    /* a batch of a small, a huge and a small op: each fits or is AN_EFULL,
     * nothing in between; the huge one cannot fit */
    Annals__V1__AppendRequest *small1 = rq_simple("tiny", FX_EXPECT_ANY, 0, 1, "T", 0);
    Annals__V1__AppendRequest *huge = rq_simple("fill", FX_EXPECT_ANY, 0, 2, "Blob", 0);
    rq_set_data(huge->streams[0]->events[0], 900 * 1024, 1);
    rq_set_data(huge->streams[0]->events[1], 900 * 1024, 2);
    Annals__V1__AppendRequest *small2 = rq_simple("tiny", FX_EXPECT_ANY, 0, 1, "T", 0);
    struct fx_op ops[3];
    fx_op_append(&ops[0], small1);
    fx_op_append(&ops[1], huge);
    fx_op_append(&ops[2], small2);
    uint64_t head0 = log_head(fx.env);
    commit_capped(ops, 3);
    cr_assert_eq(ops[1].op.rc, AN_EFULL, "1.8 MiB fit in a full 2 MiB log: %s",
                 an_errname(ops[1].op.rc));
    uint64_t expect_head = head0;
    for (int i = 0; i < 3; i += 2) {
        cr_assert(ops[i].op.rc == 0 || ops[i].op.rc == AN_EFULL, "small op %d: %s", i,
                  an_errname(ops[i].op.rc));
        if (ops[i].op.rc == 0) {
            cr_assert_eq(ops[i].op.first_position, expect_head + 1);
            expect_head = ops[i].op.last_position;
        }
    }
    cr_assert_eq(log_head(fx.env), expect_head);

    /* reads keep working, and every acknowledged event is intact */
    for (int round = 0; round < 2; round++) {
        struct fx_evs e = {0};
        fx_read_everything(&e);
        cr_assert_eq(e.n, expect_head);
        uint8_t *want = malloc(ev_bytes);
        for (size_t i = 0; i < n_ok; i++) {
            const Annals__V1__RecordedEvent *rec = e.v[ok[i].pos - 1].rec;
            fx_pattern(want, ev_bytes, ok[i].seed);
            cr_assert_eq(rec->data.len, ok[i].len, "position %llu",
                         (unsigned long long)ok[i].pos);
            cr_assert_eq(memcmp(rec->data.data, want, ev_bytes), 0, "position %llu differs",
                         (unsigned long long)ok[i].pos);
        }
        free(want);
        fx_evs_free(&e);
        char detail[LOG_DETAIL_MAX] = "";
        cr_assert_eq(log_verify(fx.env, NULL, NULL, detail), 0, "%s", detail);
        fx_reopen(); /* and the same after reopening at the cap */
    }
    free(ok);
    rq_free(small1);
    rq_free(huge);
    rq_free(small2);
}

/* ---- preallocation ---- */

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t data_file_bytes(void)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "%s/data.mdb", fx.dir);
    cr_assert_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* Whether this filesystem takes O_DIRECT (tmpfs before Linux 6.6 does not):
 * without it log_prealloc does nothing, by design. */
static bool direct_io_here(void)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/direct-probe", fx.dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT, 0644);
    if (fd >= 0) {
        close(fd);
    }
    unlink(path);
    return fd >= 0;
}

static void prealloc_while_due(void)
{
    for (int i = 0; i < 64 && log_prealloc_due(fx.env); i++) {
        log_prealloc(fx.env);
    }
    cr_assert(!log_prealloc_due(fx.env), "still due after 64 chunks");
}

/*
 * The writer's preallocation keeps the file 3..4 MiB ahead of the pages
 * LMDB uses, written (zeros), while appends go on; every event reads back
 * the same after a reopen and the log verifies. With a size cap the file
 * never goes past it.
 */
Test(log_map, preallocation_keeps_the_file_ahead_and_changes_nothing_lmdb_keeps)
{
    if (!direct_io_here()) {
        cr_skip_test("no O_DIRECT on this filesystem: nothing is preallocated");
    }
    prealloc_while_due();
    struct log_stats st;
    cr_assert_eq(log_stats(fx.env, &st), 0);
    cr_assert_geq(data_file_bytes(), st.used_bytes + (3u << 20), "file %llu, used %llu",
                  (unsigned long long)data_file_bytes(), (unsigned long long)st.used_bytes);

    const size_t ev_bytes = 16 * 1024;
    uint64_t seed = 77;
    size_t n_events = 0;
    uint64_t grown = 0;
    while (n_events * ev_bytes < (12u << 20)) {
        Annals__V1__AppendRequest *r = rq_simple(n_events % 2 ? "pre-a" : "pre-b",
                                                 FX_EXPECT_ANY, 0, 4, "Blob", 0);
        for (size_t i = 0; i < 4; i++) {
            rq_set_data(r->streams[0]->events[i], ev_bytes, seed + n_events + i);
        }
        struct fx_op o;
        fx_append(r, &o, 0);
        n_events += 4;
        rq_free(r);
        uint64_t before = data_file_bytes();
        prealloc_while_due();
        grown += data_file_bytes() - before;
        cr_assert_eq(log_stats(fx.env, &st), 0);
        uint64_t file = data_file_bytes();
        cr_assert_geq(file, st.used_bytes + (3u << 20), "after %zu events: file %llu, used %llu",
                      n_events, (unsigned long long)file, (unsigned long long)st.used_bytes);
        cr_assert_leq(file, st.used_bytes + (5u << 20) + 4096, "after %zu events: file %llu",
                      n_events, (unsigned long long)file);
    }
    cr_assert_geq(grown, 12u << 20, "the zeros did not follow the log: %llu bytes",
                  (unsigned long long)grown);

    fx_reopen();
    assert_patterns_and_verify(n_events, ev_bytes, seed);

    /* a cap: the zeros stop at it */
    const uint64_t cap = 2u << 20;
    struct log_cfg cfg = {.max_size_bytes = cap, .initial_map_bytes = 1u << 20};
    fx_fresh(&cfg);
    prealloc_while_due();
    cr_assert_leq(data_file_bytes(), cap, "file %llu past the cap",
                  (unsigned long long)data_file_bytes());
}

/*
 * test_server_errors.c - every error path of the contract, through a real
 * annalsd and libannals: the status, the detail, the trailers, and that
 * nothing was written.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "annals/v1/commands.pb-c.h"
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

TestSuite(server_errors, .init = setup, .fini = teardown, .timeout = 60);

static struct an_event ev(const char *type)
{
    return (struct an_event){.type = type, .data = "{}", .data_len = 2,
                             .content_type = "application/json"};
}

static int append1(const char *stream, enum an_expect ex, uint64_t v, struct an_error *err)
{
    struct an_event e = ev("T");
    struct an_stream_append sa = {.stream = stream, .expect = ex, .expected_version = v,
                                  .events = &e, .n_events = 1};
    return an_append(h.client, &sa, 1, NULL, err);
}

static uint64_t head(void)
{
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    uint64_t last = 0;
    struct an_read_all_opts o = {.backwards = true, .from_end = true, .max_count = 1};
    cr_assert_eq(an_read_all(h.client, &o, &it), 0);
    while (an_iter_next(it, &e, NULL) == 1) {
        last = e->global_position;
    }
    an_iter_free(it);
    return last;
}

Test(server_errors, conflict_is_aborted_with_stream_and_actual_version_trailers)
{
    struct an_error err;
    cr_assert_eq(append1("acct-1", AN_EXPECT_NO_STREAM, 0, NULL), 0);
    cr_assert_eq(append1("acct-1", AN_EXPECT_ANY, 0, NULL), 0);
    uint64_t before = head();
    cr_assert_eq(append1("acct-1", AN_EXPECT_VERSION, 0, &err), AN_ECONFLICT);
    cr_assert_eq(err.grpc_status, 10 /* ABORTED */);
    cr_assert_str_eq(err.stream, "acct-1");
    cr_assert_eq(err.actual_version, 1);
    cr_assert_eq(append1("never", AN_EXPECT_STREAM_EXISTS, 0, &err), AN_ECONFLICT);
    cr_assert_str_eq(err.stream, "never");
    cr_assert_eq(err.actual_version, -1);
    cr_assert_eq(head(), before, "a failed expectation wrote something");
}

Test(server_errors, stream_name_in_trailer_is_percent_encoded_and_decoded)
{
    struct an_error err;
    const char *name = "caf\xc3\xa9 100%";
    cr_assert_eq(append1(name, AN_EXPECT_ANY, 0, NULL), 0);
    cr_assert_eq(append1(name, AN_EXPECT_NO_STREAM, 0, &err), AN_ECONFLICT);
    cr_assert_str_eq(err.stream, name);
    cr_assert_eq(err.actual_version, 0);
}

Test(server_errors, invalid_requests_are_invalid_argument_and_write_nothing)
{
    struct an_error err;
    struct an_event e = ev("T");
    struct an_event bad_type = ev("");
    uint8_t short_id[3] = {1, 2, 3};
    struct an_stream_append ok = {.stream = "s", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &ok, 1, NULL, NULL), 0);
    uint64_t before = head();

    cr_assert_eq(an_append(h.client, &ok, 0, NULL, &err), AN_EINVAL, "empty request");
    cr_assert_eq(err.grpc_status, 3);
    struct an_stream_append none = {.stream = "s", .events = &e, .n_events = 0};
    cr_assert_eq(an_append(h.client, &none, 1, NULL, &err), AN_EINVAL, "no events");
    struct an_stream_append dollar = {.stream = "$mine", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &dollar, 1, NULL, &err), AN_EINVAL, "reserved name");
    cr_assert(strstr(err.detail, "reserved") != NULL, "detail: %s", err.detail);
    struct an_stream_append badt = {.stream = "s", .events = &bad_type, .n_events = 1};
    cr_assert_eq(an_append(h.client, &badt, 1, NULL, &err), AN_EINVAL, "empty type");
    struct an_stream_append twice[2] = {ok, ok};
    cr_assert_eq(an_append(h.client, twice, 2, NULL, &err), AN_EINVAL, "same stream twice");
    char longname[300];
    memset(longname, 'x', 256);
    longname[256] = '\0';
    struct an_stream_append toolong = {.stream = longname, .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &toolong, 1, NULL, &err), AN_EINVAL, "256-byte name");
    cr_assert(strstr(err.detail, "255") != NULL, "detail names the limit: %s", err.detail);
    struct an_stream_append notutf = {.stream = "bad\xff", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &notutf, 1, NULL, &err), AN_EINVAL, "not UTF-8");
    uint8_t id[16] = {7};
    struct an_event dup[2] = {ev("A"), ev("B")};
    dup[0].id = id;
    dup[1].id = id;
    struct an_stream_append dupid = {.stream = "s", .events = dup, .n_events = 2};
    cr_assert_eq(an_append(h.client, &dupid, 1, NULL, &err), AN_EINVAL, "same id twice");
    (void)short_id;
    cr_assert_eq(head(), before);
}

Test(server_errors, oversized_event_is_resource_exhausted_naming_the_limit)
{
    struct an_error err;
    size_t big = (1u << 20) + 1;
    char *data = calloc(1, big);
    struct an_event e = ev("Big");
    e.data = data;
    e.data_len = big;
    struct an_stream_append sa = {.stream = "big", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &sa, 1, NULL, &err), AN_ETOOBIG);
    cr_assert_eq(err.grpc_status, 8 /* RESOURCE_EXHAUSTED */);
    cr_assert(strstr(err.detail, "1048576") != NULL, "detail: %s", err.detail);
    free(data);
    cr_assert_eq(head(), 0);
}

Test(server_errors, reused_id_is_already_exists_and_exact_retry_returns_original)
{
    struct an_error err;
    struct an_append_result r1;
    struct an_append_result r2;
    uint8_t id[16];
    for (int i = 0; i < 16; i++) {
        id[i] = (uint8_t)(i * 13 + 1);
    }
    struct an_event e = ev("Paid");
    e.id = id;
    struct an_stream_append sa = {.stream = "order-1", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &sa, 1, &r1, NULL), 0);
    cr_assert_eq(append1("order-1", AN_EXPECT_ANY, 0, NULL), 0);
    sa.expect = AN_EXPECT_NO_STREAM; /* not checked again on an exact retry */
    cr_assert_eq(an_append(h.client, &sa, 1, &r2, NULL), 0);
    cr_assert_eq(r2.first_position, r1.first_position);
    cr_assert_eq(r2.recorded_at_ns, r1.recorded_at_ns);
    cr_assert_eq(r2.streams[0].first_version, 0);
    struct an_stream_append other = {.stream = "order-2", .events = &e, .n_events = 1};
    uint64_t before = head();
    cr_assert_eq(an_append(h.client, &other, 1, NULL, &err), AN_EEXIST);
    cr_assert_eq(err.grpc_status, 6 /* ALREADY_EXISTS */);
    cr_assert_eq(head(), before);
}

Test(server_errors, tombstoned_stream_is_failed_precondition)
{
    struct an_error err;
    uint64_t pos = 0;
    cr_assert_eq(append1("gone", AN_EXPECT_ANY, 0, NULL), 0);
    cr_assert_eq(an_delete_stream(h.client, "gone", AN_EXPECT_ANY, 0, true, &pos, NULL), 0);
    cr_assert_eq(pos, 2);
    cr_assert_eq(append1("gone", AN_EXPECT_ANY, 0, &err), AN_ETOMBSTONED);
    cr_assert_eq(err.grpc_status, 9 /* FAILED_PRECONDITION */);
    cr_assert_eq(an_delete_stream(h.client, "gone", AN_EXPECT_ANY, 0, false, NULL, &err),
                 AN_ETOMBSTONED);
}

Test(server_errors, delete_errors_in_contract_order)
{
    struct an_error err;
    cr_assert_eq(an_delete_stream(h.client, "$streams", AN_EXPECT_ANY, 0, false, NULL, &err),
                 AN_EINVAL);
    cr_assert_eq(an_delete_stream(h.client, "", AN_EXPECT_ANY, 0, false, NULL, &err), AN_EINVAL);
    cr_assert_eq(an_delete_stream(h.client, "nope", AN_EXPECT_ANY, 0, false, NULL, &err),
                 AN_ENOTFOUND);
    cr_assert_eq(err.grpc_status, 5 /* NOT_FOUND */);
    cr_assert_eq(append1("d", AN_EXPECT_ANY, 0, NULL), 0);
    cr_assert_eq(an_delete_stream(h.client, "d", AN_EXPECT_VERSION, 3, false, NULL, &err),
                 AN_ECONFLICT);
    cr_assert_str_eq(err.stream, "d");
    cr_assert_eq(err.actual_version, 0);
    uint64_t p1 = 0;
    uint64_t p2 = 0;
    cr_assert_eq(an_delete_stream(h.client, "d", AN_EXPECT_VERSION, 0, false, &p1, NULL), 0);
    cr_assert_eq(an_delete_stream(h.client, "d", AN_EXPECT_ANY, 0, false, &p2, NULL), 0);
    cr_assert_eq(p1, p2, "a second soft delete with nothing new changes nothing");
}

Test(server_errors, reads_of_missing_or_deleted_streams_are_not_found)
{
    struct an_error err;
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    struct an_stream_info info;
    struct an_read_stream_opts o = {.stream = "missing"};
    cr_assert_eq(an_read_stream(h.client, &o, &it), 0);
    cr_assert_eq(an_iter_next(it, &e, &err), AN_ENOTFOUND);
    an_iter_free(it);
    cr_assert_eq(an_get_stream(h.client, "missing", NULL, &info, &err), AN_ENOTFOUND);

    cr_assert_eq(append1("x", AN_EXPECT_ANY, 0, NULL), 0);
    cr_assert_eq(an_delete_stream(h.client, "x", AN_EXPECT_ANY, 0, false, NULL, NULL), 0);
    o.stream = "x";
    cr_assert_eq(an_read_stream(h.client, &o, &it), 0);
    cr_assert_eq(an_iter_next(it, &e, &err), AN_ENOTFOUND);
    an_iter_free(it);
    /* as of before the deletion it is there */
    o.as_of = (struct an_as_of){.has_position = true, .position = 1};
    cr_assert_eq(an_read_stream(h.client, &o, &it), 0);
    cr_assert_eq(an_iter_next(it, &e, &err), 1);
    cr_assert_str_eq(e->stream, "x");
    cr_assert_eq(an_iter_next(it, &e, &err), 0);
    an_iter_free(it);
    cr_assert_eq(an_get_stream(h.client, "x", NULL, &info, NULL), 0);
    cr_assert(info.deleted);
    cr_assert_eq(info.event_count, 0);
}

Test(server_errors, garbage_and_truncated_messages_are_invalid_argument)
{
    struct an_error err;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    /* a valid AppendRequest cut in the middle of a length-delimited field */
    static const uint8_t truncated[] = {0x0a, 0x20, 0x0a, 0x03, 's', 't'};
    cr_assert_eq(an_call_raw(h.client, "/annals.v1.Commands/Append", garbage, sizeof(garbage),
                             &err),
                 AN_EINVAL);
    cr_assert_eq(an_call_raw(h.client, "/annals.v1.Commands/Append", truncated,
                             sizeof(truncated), &err),
                 AN_EINVAL);
    cr_assert_eq(an_call_raw(h.client, "/annals.v1.Commands/DeleteStream", garbage,
                             sizeof(garbage), &err),
                 AN_EINVAL);
    cr_assert_eq(an_call_raw(h.client, "/annals.v1.Queries/GetStream", garbage, sizeof(garbage),
                             &err),
                 AN_EINVAL);
    /* the server still serves */
    cr_assert_eq(append1("alive", AN_EXPECT_NO_STREAM, 0, NULL), 0);
    cr_assert_eq(head(), 1);
}

Test(server_errors, unknown_and_later_methods_are_unimplemented)
{
    struct an_error err;
    cr_assert_eq(an_call_raw(h.client, "/annals.v1.Nope/Nothing", "", 0, &err), AN_EUNIMPL);
    cr_assert_eq(err.grpc_status, 12);
    cr_assert_eq(an_call_raw(h.client, "/annals.v1.Consumers/Create", "", 0, &err), AN_EUNIMPL);
    bool serving = false;
    cr_assert_eq(an_health(h.client, &serving, NULL), 0);
    cr_assert(serving);
}

Test(server_errors, bad_flags_exit_2_naming_the_flag_and_its_limit)
{
    char out[2048];
    const char *unknown[] = {"--bogus", "1", NULL};
    cr_assert_eq(h_run_annalsd(unknown, out, sizeof(out)), 2);
    cr_assert(strstr(out, "--bogus") != NULL, "%s", out);
    const char *small[] = {"--max-size", "10", NULL};
    cr_assert_eq(h_run_annalsd(small, out, sizeof(out)), 2);
    cr_assert(strstr(out, "--max-size") != NULL && strstr(out, "1M") != NULL, "%s", out);
    const char *threads[] = {"--threads", "9999", NULL};
    cr_assert_eq(h_run_annalsd(threads, out, sizeof(out)), 2);
    cr_assert(strstr(out, "--threads") != NULL && strstr(out, "256") != NULL, "%s", out);
    const char *level[] = {"--log-level", "loud", NULL};
    cr_assert_eq(h_run_annalsd(level, out, sizeof(out)), 2);
    const char *help[] = {"--help", NULL};
    cr_assert_eq(h_run_annalsd(help, out, sizeof(out)), 0);
    cr_assert(strstr(out, "--listen") != NULL && strstr(out, "--max-batch") != NULL, "%s", out);
}

/* --config: the same names and limits as the flags; the command line wins. */
Test(server_errors, config_file_takes_the_flags_and_the_command_line_wins)
{
    char path[300];
    char out[2048];
    snprintf(path, sizeof(path), "%s/annalsd.conf", h.dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# a comment\n\nmax-batch = 7\nmax-size = 10\n");
    fclose(f);
    const char *over[] = {"--config", path, "--data", h.dir, NULL};
    cr_assert_eq(h_run_annalsd(over, out, sizeof(out)), 2);
    cr_assert(strstr(out, "--max-size") != NULL && strstr(out, "1M") != NULL, "%s", out);

    f = fopen(path, "w");
    fprintf(f, "max-batch = 7\nbogus = 1\n");
    fclose(f);
    cr_assert_eq(h_run_annalsd(over, out, sizeof(out)), 2);
    cr_assert(strstr(out, "annalsd.conf:2") != NULL && strstr(out, "bogus") != NULL, "%s", out);

    /* a valid file, one flag of it overridden on the command line */
    f = fopen(path, "w");
    fprintf(f, "max-batch = 7\nmax-event = 2M\n");
    fclose(f);
    h_stop(&h);
    struct harness h2;
    const char *flags[] = {"--config", path, "--max-batch", "9", NULL};
    h_start(&h2, flags);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "grep -q 'msg=\"started\".*max_batch=9 ' %s/annalsd.log", h2.dir);
    cr_assert_eq(system(cmd), 0, "the command line did not win");
    snprintf(cmd, sizeof(cmd), "grep -q 'msg=\"started\".*max_event=2097152 ' %s/annalsd.log",
             h2.dir);
    cr_assert_eq(system(cmd), 0, "the file's max-event was not applied");
    h_cleanup(&h2);
}

/* ---- batched AppendStream messages (commands.proto: AppendStreamRequest.more) ---- */

/* One packed AppendStreamRequest: the append of one event to `stream` with
 * the expectation, correlation id id, and n_more further ones (each to
 * stream "<stream>-<i>", NO_STREAM, ids id+1...), the last of which has a
 * `more` of its own when nested. The caller frees the result. */
static uint8_t *pack_batched(const char *stream, enum an_expect ex, uint64_t v, uint64_t id,
                             size_t n_more, bool nested, size_t *len)
{
    size_t n = 1 + n_more + (nested ? 1 : 0);
    Annals__V1__AppendStreamRequest *rq = calloc(n, sizeof(*rq));
    Annals__V1__AppendRequest *ar = calloc(n, sizeof(*ar));
    Annals__V1__StreamAppend *sa = calloc(n, sizeof(*sa));
    Annals__V1__StreamAppend **sap = calloc(n, sizeof(*sap));
    Annals__V1__EventData ed = ANNALS__V1__EVENT_DATA__INIT;
    Annals__V1__EventData *edp = &ed;
    Annals__V1__AppendStreamRequest **more = calloc(n, sizeof(*more));
    char (*names)[64] = calloc(n, sizeof(*names));
    cr_assert(rq && ar && sa && sap && more && names);
    ed.type = "T";
    ed.content_type = "application/json";
    ed.data.data = (uint8_t *)"{}";
    ed.data.len = 2;
    for (size_t i = 0; i < n; i++) {
        annals__v1__append_stream_request__init(&rq[i]);
        annals__v1__append_request__init(&ar[i]);
        annals__v1__stream_append__init(&sa[i]);
        if (i == 0) {
            snprintf(names[i], sizeof(names[i]), "%s", stream);
            sa[i].expect = (Annals__V1__Expectation)ex;
            sa[i].expected_version = v;
        } else {
            snprintf(names[i], sizeof(names[i]), "%s-%zu", stream, i);
            sa[i].expect = (Annals__V1__Expectation)AN_EXPECT_NO_STREAM;
        }
        sa[i].stream = names[i];
        sa[i].n_events = 1;
        sa[i].events = &edp;
        sap[i] = &sa[i];
        ar[i].n_streams = 1;
        ar[i].streams = &sap[i];
        rq[i].correlation_id = id + i;
        rq[i].append = &ar[i];
    }
    for (size_t i = 0; i < n_more; i++) {
        more[i] = &rq[1 + i];
    }
    rq[0].n_more = n_more;
    rq[0].more = more;
    if (nested) {
        /* the last element carries one of its own */
        rq[n_more].n_more = 1;
        rq[n_more].more = &more[n_more];
        more[n_more] = &rq[n - 1];
    }
    *len = annals__v1__append_stream_request__get_packed_size(&rq[0]);
    uint8_t *buf = malloc(*len);
    cr_assert(buf);
    annals__v1__append_stream_request__pack(&rq[0], buf);
    free(rq);
    free(ar);
    free(sa);
    free(sap);
    free(more);
    free(names);
    return buf;
}

struct replies {
    size_t messages;
    size_t results;
    uint64_t ids[64];           /* correlation ids in the order they came */
    int codes[64];              /* the error's gRPC code, 0 for ok */
    int64_t actual[64];
    size_t with_more;           /* messages that carried AppendResult.more */
};

static void take_result(struct replies *r, const Annals__V1__AppendResult *m)
{
    cr_assert_lt(r->results, 64);
    r->ids[r->results] = m->correlation_id;
    r->codes[r->results] =
        m->outcome_case == ANNALS__V1__APPEND_RESULT__OUTCOME_ERROR ? m->error->code : 0;
    r->actual[r->results] =
        m->outcome_case == ANNALS__V1__APPEND_RESULT__OUTCOME_ERROR ? m->error->actual_version
                                                                    : 0;
    r->results++;
}

static void on_reply(void *arg, const void *p, size_t len)
{
    struct replies *r = arg;
    Annals__V1__AppendResult *m = annals__v1__append_result__unpack(NULL, len, p);
    cr_assert(m, "a reply that is no AppendResult");
    r->messages++;
    take_result(r, m);
    for (size_t i = 0; i < m->n_more; i++) {
        take_result(r, m->more[i]);
    }
    r->with_more += m->n_more > 0;
    annals__v1__append_result__free_unpacked(m, NULL);
}

static int astream_raw(const void *const *msgs, const size_t *lens, size_t n, bool batch_header,
                       struct replies *r, char *hdr, struct an_error *err)
{
    memset(r, 0, sizeof(*r));
    return an_call_raw_stream(h.client, "/annals.v1.Commands/AppendStream",
                              batch_header ? "annals-batch" : NULL, "1", msgs, lens, n,
                              on_reply, r, "annals-batch", hdr, 16, err);
}

Test(server_errors, batched_append_stream_messages_over_the_limit_or_nested_write_nothing)
{
    struct an_error err;
    struct replies r;
    char hdr[16];
    size_t len;
    cr_assert_eq(append1("b", AN_EXPECT_NO_STREAM, 0, NULL), 0);

    /* 257 appends in one message: over the server's 256 (its stream window) */
    uint8_t *big = pack_batched("big", AN_EXPECT_ANY, 0, 1, 256, false, &len);
    const void *m1[] = {big};
    cr_assert_eq(astream_raw(m1, &len, 1, true, &r, hdr, &err), AN_ETOOBIG);
    cr_assert(strstr(err.detail, "257") && strstr(err.detail, "256"), "%s", err.detail);
    cr_assert_eq(r.results, 0);
    free(big);

    /* an element with a `more` of its own */
    uint8_t *nest = pack_batched("nest", AN_EXPECT_ANY, 0, 1, 2, true, &len);
    const void *m2[] = {nest};
    cr_assert_eq(astream_raw(m2, &len, 1, true, &r, hdr, &err), AN_EINVAL);
    cr_assert(strstr(err.detail, "more"), "%s", err.detail);
    free(nest);

    /* nothing of either was written, and the server still serves */
    cr_assert_eq(head(), 1);
    cr_assert_eq(append1("b", AN_EXPECT_VERSION, 0, NULL), 0);
    cr_assert_eq(head(), 2);
}

Test(server_errors, batched_append_stream_message_gets_a_result_per_append)
{
    struct an_error err;
    struct replies r;
    char hdr[16];
    size_t len;
    cr_assert_eq(append1("s", AN_EXPECT_NO_STREAM, 0, NULL), 0);
    cr_assert_eq(append1("s-2", AN_EXPECT_NO_STREAM, 0, NULL), 0);

    /* three appends in one message: "s" at version 0 (ok), "s-1" (new: ok),
     * "s-2" as a new stream (it exists: ABORTED, actual version 0); sent by a
     * client without the header, each result comes in a message of its own */
    uint8_t *m = pack_batched("s", AN_EXPECT_VERSION, 0, 10, 2, false, &len);
    const void *msgs[] = {m};
    cr_assert_eq(astream_raw(msgs, &len, 1, false, &r, hdr, &err), 0, "%s", err.detail);
    cr_assert_str_eq(hdr, "256", "the server says how many appends a message may carry");
    cr_assert_eq(r.results, 3);
    cr_assert_eq(r.messages, 3);
    cr_assert_eq(r.with_more, 0);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(r.ids[i], 10 + i, "results in the order of the appends");
    }
    cr_assert_eq(r.codes[0], 0);
    cr_assert_eq(r.codes[1], 0);
    cr_assert_eq(r.codes[2], 10 /* ABORTED */);
    cr_assert_eq(r.actual[2], 0);
    cr_assert_eq(head(), 4);

    /* with the header, the same appends again (every one conflicts now) come
     * back exactly once each, in one message or several */
    cr_assert_eq(astream_raw(msgs, &len, 1, true, &r, hdr, &err), 0, "%s", err.detail);
    cr_assert_eq(r.results, 3);
    cr_assert_leq(r.messages, 3);
    bool seen[3] = {false, false, false};
    for (size_t i = 0; i < 3; i++) {
        cr_assert(r.ids[i] >= 10 && r.ids[i] < 13 && !seen[r.ids[i] - 10]);
        seen[r.ids[i] - 10] = true;
        cr_assert_eq(r.codes[i], 10 /* ABORTED */);
    }
    free(m);
    cr_assert_eq(head(), 4);
}

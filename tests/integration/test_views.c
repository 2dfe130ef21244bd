/*
 * test_views.c - projections and views through a real annalsd and
 * libannals: each view against a fold of the log computed here from
 * ReadAll, as-of answers at random points, restarts and kill -9, a rebuild
 * under load, read-your-writes, faults and bad definitions.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(views, .fini = teardown, .timeout = 180);

static const char *const types[] = {"Opened", "Deposited", "Withdrawn"};

/* Appends one event; returns its position. */
static uint64_t put(an_client *c, const char *stream, const char *type, const char *data)
{
    struct an_event e = {.type = type, .data = data, .data_len = strlen(data),
                         .content_type = "application/json"};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    struct an_append_result r;
    struct an_error err;
    cr_assert_eq(an_append(c, &sa, 1, &r, &err), 0, "%s", err.detail);
    return r.last_position;
}

/* n events over 5 streams and 3 types; returns the head. */
static uint64_t load(an_client *c, int n, unsigned seed)
{
    uint64_t head = 0;
    for (int i = 0; i < n; i++) {
        char stream[16];
        char data[64];
        unsigned r = (seed + (unsigned)i * 2654435761u) >> 8;
        snprintf(stream, sizeof(stream), "acct-%u", r % 5);
        snprintf(data, sizeof(data), "{\"amount\":%u,\"n\":%d}", r % 100, i);
        head = put(c, stream, types[(r >> 4) % 3], data);
    }
    return head;
}

/* From ReadAll: how many events up to position p have this type (or
 * stream, when by_stream). */
static uint64_t fold_count(an_client *c, const char *key, bool by_stream, uint64_t p)
{
    struct an_read_all_opts o = {.max_count = (uint32_t)p};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    uint64_t n = 0;
    cr_assert_eq(an_read_all(c, &o, &it), 0);
    while (an_iter_next(it, &e, NULL) == 1) {
        if (e->global_position > p) {
            break;
        }
        if (e->stream[0] == '$') {
            continue;
        }
        n += strcmp(by_stream ? e->stream : e->type, key) == 0;
    }
    an_iter_free(it);
    return n;
}

/* The count a COUNT view holds for key (0 when not found). */
static uint64_t view_count(an_client *c, const char *view, const char *key,
                           const struct an_as_of *as_of, uint64_t min_position)
{
    struct an_view_entry e;
    struct an_error err;
    int rc = an_get_view(c, view, key, as_of, min_position, &e, &err);
    cr_assert_eq(rc, 0, "GetView %s/%s: %s (%s)", view, key, an_errname(rc), err.detail);
    uint64_t n = 0;
    if (e.found) {
        const char *p = strstr(e.value, "\"count\":");
        cr_assert_not_null(p, "%s", e.value);
        n = strtoull(p + 8, NULL, 10);
    }
    an_view_entry_free(&e);
    return n;
}

static void create(const char *name, enum an_proj_kind kind, const char *key, bool latest)
{
    struct an_projection_def d = {.name = name, .kind = kind, .key = key, .latest_only = latest};
    struct an_error err;
    cr_assert_eq(an_projection_create(h.client, &d, NULL, &err), 0, "%s", err.detail);
}

Test(views, count_by_type_and_stream_equal_the_fold_now_and_as_of_random_points)
{
    h_start(&h, NULL);
    create("by_type", AN_PROJ_COUNT, "$type", false);
    uint64_t head = load(h.client, 300, 7);
    create("by_stream", AN_PROJ_COUNT, "$stream", false); /* made after: built from history */
    for (int t = 0; t < 3; t++) {
        cr_assert_eq(view_count(h.client, "by_type", types[t], NULL, head),
                     fold_count(h.client, types[t], false, head), "type %s", types[t]);
    }
    for (int s = 0; s < 5; s++) {
        char stream[16];
        snprintf(stream, sizeof(stream), "acct-%d", s);
        cr_assert_eq(view_count(h.client, "by_stream", stream, NULL, head),
                     fold_count(h.client, stream, true, head), "stream %s", stream);
    }
    /* as of random points: the fold up to there */
    srand(11);
    for (int i = 0; i < 25; i++) {
        uint64_t p = 1 + (uint64_t)rand() % head;
        const char *t = types[rand() % 3];
        struct an_as_of a = {.has_position = true, .position = p};
        cr_assert_eq(view_count(h.client, "by_type", t, &a, 0),
                     fold_count(h.client, t, false, p), "%s as of %llu", t,
                     (unsigned long long)p);
    }
}

Test(views, read_your_writes_with_min_position)
{
    h_start(&h, NULL);
    create("rw", AN_PROJ_COUNT, "$stream", false);
    for (int i = 1; i <= 20; i++) {
        uint64_t p = put(h.client, "rw-1", "Tick", "{}");
        cr_assert_eq(view_count(h.client, "rw", "rw-1", NULL, p), (uint64_t)i);
    }
    /* a position not written yet: waits, then DEADLINE_EXCEEDED */
    struct an_client_opts o = {.timeout_ms = 300, .max_retries = -1};
    an_client *c;
    cr_assert_eq(an_connect(h.addr, &o, &c), 0);
    struct an_view_entry e;
    cr_assert_eq(an_get_view(c, "rw", "rw-1", NULL, 1000, &e, NULL), AN_EDEADLINE);
    an_close(c);
}

Test(views, stream_state_merges_patches_and_index_and_streams_answer)
{
    h_start(&h, NULL);
    create("state", AN_PROJ_STREAM_STATE, NULL, false);
    create("by_email", AN_PROJ_INDEX, "/email", false);
    create("streams", AN_PROJ_STREAMS, NULL, false);
    put(h.client, "user-1", "Registered", "{\"email\":\"a@x\",\"name\":\"Ann\",\"tier\":1}");
    put(h.client, "user-2", "Registered", "{\"email\":\"b@x\",\"name\":\"Bob\"}");
    uint64_t p = put(h.client, "user-1", "Changed", "{\"tier\":null,\"name\":\"Anna\"}");
    struct an_view_entry e;
    cr_assert_eq(an_get_view(h.client, "state", "user-1", NULL, p, &e, NULL), 0);
    cr_assert(e.found);
    cr_assert(strstr(e.value, "\"name\":\"Anna\"") && strstr(e.value, "\"email\":\"a@x\"") &&
                  !strstr(e.value, "tier"),
              "merge patch: %s", e.value);
    cr_assert_eq(e.position, p);
    an_view_entry_free(&e);
    struct an_as_of first = {.has_position = true, .position = 1};
    cr_assert_eq(an_get_view(h.client, "state", "user-1", &first, 0, &e, NULL), 0);
    cr_assert(strstr(e.value, "\"tier\":1") && strstr(e.value, "\"name\":\"Ann\""), "%s",
              e.value);
    an_view_entry_free(&e);
    cr_assert_eq(an_get_view(h.client, "by_email", "b@x", NULL, p, &e, NULL), 0);
    cr_assert(e.found && strstr(e.value, "\"stream\":\"user-2\""), "%s", e.value);
    an_view_entry_free(&e);
    cr_assert_eq(an_get_view(h.client, "streams", "user-1", NULL, p, &e, NULL), 0);
    cr_assert(e.found && strstr(e.value, "\"last_version\":1") &&
                  strstr(e.value, "\"event_count\":2"),
              "%s", e.value);
    an_view_entry_free(&e);
    cr_assert_eq(an_get_view(h.client, "state", "nobody", NULL, p, &e, NULL), 0);
    cr_assert(!e.found);
    an_view_entry_free(&e);
}

struct scanned {
    char keys[32][64];
    int n;
};

static bool on_entry(void *arg, const struct an_view_entry *e)
{
    struct scanned *s = arg;
    cr_assert_lt(s->n, 32);
    snprintf(s->keys[s->n++], sizeof(s->keys[0]), "%.60s", e->key);
    return true;
}

Test(views, scan_walks_keys_in_order_with_prefix_start_after_and_limit)
{
    h_start(&h, NULL);
    create("cnt", AN_PROJ_COUNT, "$stream", false);
    const char *names[] = {"b-2", "a-1", "b-1", "c-1", "b-3"};
    uint64_t p = 0;
    for (int i = 0; i < 5; i++) {
        p = put(h.client, names[i], "T", "{}");
    }
    struct scanned s = {0};
    struct an_scan_opts o = {.view = "cnt", .key_prefix = "b-", .min_position = p};
    cr_assert_eq(an_scan_view(h.client, &o, on_entry, &s, NULL), 0);
    cr_assert_eq(s.n, 3);
    cr_assert_str_eq(s.keys[0], "b-1");
    cr_assert_str_eq(s.keys[2], "b-3");
    s.n = 0;
    o = (struct an_scan_opts){.view = "cnt", .start_after = "a-1", .limit = 2};
    cr_assert_eq(an_scan_view(h.client, &o, on_entry, &s, NULL), 0);
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.keys[0], "b-1");
    cr_assert_str_eq(s.keys[1], "b-2");
    /* as of position 2: only the first two streams had values */
    s.n = 0;
    o = (struct an_scan_opts){.view = "cnt", .as_of = {.has_position = true, .position = 2}};
    cr_assert_eq(an_scan_view(h.client, &o, on_entry, &s, NULL), 0);
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.keys[0], "a-1");
    cr_assert_str_eq(s.keys[1], "b-2");
}

Test(views, definitions_are_checked_and_create_is_idempotent)
{
    h_start(&h, NULL);
    struct an_error err;
    struct an_projection_def bad[] = {
        {.name = "Bad Name", .kind = AN_PROJ_COUNT, .key = "$type"},
        {.name = "nokey", .kind = AN_PROJ_COUNT},
        {.name = "keyed-state", .kind = AN_PROJ_STREAM_STATE, .key = "$type"},
        {.name = "sum-index", .kind = AN_PROJ_INDEX, .key = "$type", .sum = "/x"},
        {.name = "nokind", .key = "$type"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(an_projection_create(h.client, &bad[i], NULL, &err), AN_EINVAL, "case %zu",
                     i);
        cr_assert_eq(err.grpc_status, 3);
    }
    struct an_projection_def d = {.name = "ok", .kind = AN_PROJ_COUNT, .key = "$type"};
    cr_assert_eq(an_projection_create(h.client, &d, NULL, &err), 0);
    cr_assert_eq(an_projection_create(h.client, &d, NULL, &err), 0, "identical: idempotent");
    d.key = "$stream";
    cr_assert_eq(an_projection_create(h.client, &d, NULL, &err), AN_EEXIST);
    struct an_view_entry e;
    cr_assert_eq(an_get_view(h.client, "nope", "k", NULL, 0, &e, &err), AN_ENOTFOUND);
    cr_assert_eq(an_projection_get(h.client, "nope", NULL, &err), AN_ENOTFOUND);
    /* latest_only cannot be read as of a point */
    struct an_projection_def lo = {.name = "lo", .kind = AN_PROJ_COUNT, .key = "$type",
                                   .latest_only = true};
    cr_assert_eq(an_projection_create(h.client, &lo, NULL, &err), 0);
    struct an_as_of a = {.has_position = true, .position = 1};
    cr_assert_eq(an_get_view(h.client, "lo", "T", &a, 0, &e, &err), AN_ETOMBSTONED);
    cr_assert_eq(err.grpc_status, 9);
    /* list, then delete */
    struct an_projection_status *all;
    size_t n;
    cr_assert_eq(an_projection_list(h.client, &all, &n, &err), 0);
    cr_assert_eq(n, 2);
    free(all);
    cr_assert_eq(an_projection_delete(h.client, "ok", &err), 0);
    cr_assert_eq(an_get_view(h.client, "ok", "T", NULL, 0, &e, &err), AN_ENOTFOUND);
}

Test(views, restart_and_kill_9_neither_skip_nor_double_count)
{
    h_start(&h, NULL);
    create("c", AN_PROJ_COUNT, "$stream", false);
    load(h.client, 200, 3);
    cr_assert_eq(h_stop(&h), 0);
    h_restart(&h);
    load(h.client, 200, 5);
    h_kill(&h);
    h_restart(&h);
    uint64_t head = load(h.client, 50, 9);
    for (int s = 0; s < 5; s++) {
        char stream[16];
        snprintf(stream, sizeof(stream), "acct-%d", s);
        cr_assert_eq(view_count(h.client, "c", stream, NULL, head),
                     fold_count(h.client, stream, true, head), "stream %s", stream);
    }
}

struct reader {
    atomic_int *stop;
    const char *addr;
    int errors;
    int regressions;
    int reads;
};

static void *read_loop(void *arg)
{
    struct reader *r = arg;
    an_client *c;
    cr_assert_eq(an_connect(r->addr, NULL, &c), 0);
    uint64_t last = 0;
    while (!atomic_load(r->stop)) {
        struct an_view_entry e;
        if (an_get_view(c, "reb", "acct-0", NULL, 0, &e, NULL) != 0) {
            r->errors++;
            continue;
        }
        const char *p = e.found ? strstr(e.value, "\"count\":") : NULL;
        uint64_t n = p ? strtoull(p + 8, NULL, 10) : 0;
        if (n < last) {
            r->regressions++; /* a half-built view would go back */
        }
        last = n;
        r->reads++;
        an_view_entry_free(&e);
    }
    an_close(c);
    return NULL;
}

Test(views, rebuild_under_appends_and_reads_never_errs_or_goes_back)
{
    h_start(&h, NULL);
    create("reb", AN_PROJ_COUNT, "$stream", false);
    uint64_t head = load(h.client, 400, 1);
    atomic_int stop = 0;
    struct reader r = {.stop = &stop, .addr = h.addr};
    pthread_t t;
    pthread_create(&t, NULL, read_loop, &r);
    struct an_projection_status st;
    cr_assert_eq(an_projection_rebuild(h.client, "reb", &st, NULL), 0);
    cr_assert_eq(st.state, AN_PROJ_REBUILDING);
    head = load(h.client, 200, 2);
    for (int i = 0; i < 500; i++) {
        cr_assert_eq(an_projection_get(h.client, "reb", &st, NULL), 0);
        if (st.state == AN_PROJ_RUNNING && st.checkpoint >= head) {
            break;
        }
        usleep(10000);
    }
    cr_assert_eq(st.state, AN_PROJ_RUNNING, "still %d", st.state);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    cr_assert_eq(r.errors, 0);
    cr_assert_eq(r.regressions, 0);
    cr_assert_gt(r.reads, 0);
    cr_assert_eq(view_count(h.client, "reb", "acct-0", NULL, head),
                 fold_count(h.client, "acct-0", true, head));
}

Test(views, a_full_view_faults_and_says_why)
{
    const char *flags[] = {"--max-view-size", "64K", NULL};
    h_start(&h, flags);
    create("big", AN_PROJ_STREAM_STATE, NULL, false);
    static char data[3000];
    uint64_t head = 0;
    for (int i = 0; i < 60; i++) {
        snprintf(data, sizeof(data), "{\"i\":%d,\"pad\":\"%0*d\"}", i, 2900, 0);
        char stream[16];
        snprintf(stream, sizeof(stream), "big-%d", i);
        head = put(h.client, stream, "Big", data);
    }
    struct an_projection_status st;
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(an_projection_get(h.client, "big", &st, NULL), 0);
        if (st.state == AN_PROJ_FAULTED) {
            break;
        }
        usleep(10000);
    }
    cr_assert_eq(st.state, AN_PROJ_FAULTED);
    cr_assert(strstr(st.error, "full") != NULL, "error: %s", st.error);
    cr_assert_lt(st.checkpoint, head);
    /* what was applied still answers; a position it will not reach is refused */
    struct an_view_entry e;
    cr_assert_eq(an_get_view(h.client, "big", "big-0", NULL, 0, &e, NULL), 0);
    cr_assert(e.found);
    an_view_entry_free(&e);
    cr_assert_eq(an_get_view(h.client, "big", "big-0", NULL, head, &e, NULL), AN_EUNAVAIL);
}

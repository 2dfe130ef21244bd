/*
 * test_proj_kinds.c - the four kinds against an independent fold of the
 * log (pm_fold over log_read_all), in the present and as of many random
 * positions; close/reopen and kill -9 mid-way (no event skipped or applied
 * twice); latest_only; ScanView's prefix, start_after and limit.
 */
#include "proj_fixture.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define K_STATE ANNALS__V1__PROJECTION_KIND__STREAM_STATE
#define K_COUNT ANNALS__V1__PROJECTION_KIND__COUNT
#define K_INDEX ANNALS__V1__PROJECTION_KIND__INDEX
#define K_STREAMS ANNALS__V1__PROJECTION_KIND__STREAMS

TestSuite(proj_kinds, .init = pfx_setup, .fini = pfx_teardown, .timeout = 90);

#define N_DEFS 11
static struct pdef defs[N_DEFS];

static void make_defs(void)
{
    pdef_init(&defs[0], "state", K_STATE, NULL, NULL, false);
    pdef_init(&defs[1], "count-type", K_COUNT, "$type", NULL, false);
    pdef_init(&defs[2], "count-cat-sum", K_COUNT, "$category", "/amount", false);
    pdef_init(&defs[3], "count-owner", K_COUNT, "/owner/id", NULL, false);
    pdef_init(&defs[4], "index-owner", K_INDEX, "/owner/id", NULL, false);
    pdef_init(&defs[5], "streams", K_STREAMS, NULL, NULL, false);
    pdef_init(&defs[6], "acct-deposits", K_COUNT, "$stream", "/amount", false);
    pdef_prefix(&defs[6], "acct-");
    pdef_prefix(&defs[6], "cart");
    pdef_type(&defs[6], "Deposited");
    pdef_type(&defs[6], "Opened");
    pdef_init(&defs[7], "sys", K_STREAMS, NULL, NULL, false);
    pdef_prefix(&defs[7], "$");
    pdef_init(&defs[8], "state-latest", K_STATE, NULL, NULL, true);
    pdef_init(&defs[9], "index-latest", K_INDEX, "$category", NULL, true);
    pdef_init(&defs[10], "count-latest", K_COUNT, "/owner/id", "/amount", true);
    for (int i = 0; i < N_DEFS; i++) {
        pfx_create(&defs[i]);
    }
}

static void wait_all(void)
{
    uint64_t head = log_head(fx.env);
    for (int i = 0; i < N_DEFS; i++) {
        pfx_wait(defs[i].d.name, head);
    }
}

/* Every definition's view, as of `at` (UINT64_MAX: present), equals the fold. */
static void check_all(const struct fx_evs *log, uint64_t at, bool skip_latest)
{
    uint64_t upto = at == UINT64_MAX ? log_head(fx.env) : at;
    char what[128];
    for (int i = 0; i < N_DEFS; i++) {
        if (skip_latest && defs[i].d.latest_only) {
            continue;
        }
        json_t *model = pm_fold(log, &defs[i].d, upto);
        json_t *view = pfx_scan_all(defs[i].d.name, at);
        snprintf(what, sizeof(what), "%s as of %llu", defs[i].d.name, (unsigned long long)upto);
        pm_assert_equal(view, model, what);
        /* and GetView agrees with ScanView for every key */
        const char *k;
        json_t *v;
        json_object_foreach(model, k, v) {
            Annals__V1__ViewEntry *e = NULL;
            cr_assert_eq(pfx_get(defs[i].d.name, k, at, &e), 0);
            cr_assert(e->found, "%s: GetView(%s) not found", what, k);
            cr_assert_eq((json_int_t)e->position, json_integer_value(json_array_get(v, 1)),
                         "%s: GetView(%s) position", what, k);
            json_t *got = json_loadb((const char *)e->value.data, e->value.len, 0, NULL);
            cr_assert(json_equal(got, json_array_get(v, 0)), "%s: GetView(%s) value", what, k);
            json_decref(got);
            proj_entry_free(e);
        }
        json_decref(model);
        json_decref(view);
    }
}

Test(proj_kinds, each_kind_equals_the_fold_of_the_log)
{
    unsigned seed = 7;
    make_defs();
    for (int i = 0; i < 12; i++) {
        pfx_append_random(50, &seed);
    }
    wait_all();
    struct fx_evs log;
    pm_load(&log);
    check_all(&log, UINT64_MAX, false);

    /* spot checks written out by hand, against the fold's own mistakes */
    json_t *m = pm_fold(&log, &defs[5].d, log.n);
    cr_assert_null(json_object_get(m, "$sys"), "'$' streams selected without a '$' prefix");
    json_decref(m);
    m = pm_fold(&log, &defs[7].d, log.n);
    cr_assert_eq(json_object_size(m), 1);
    cr_assert_not_null(json_object_get(m, "$sys"));
    json_decref(m);
    Annals__V1__ViewEntry *e = NULL;
    uint64_t p = pfx_append("acct-9", "Deposited", "{\"amount\": 5, \"owner\": {\"id\": 41}}");
    p = pfx_append("acct-9", "Deposited", "{\"amount\": 2.25, \"owner\": {\"id\": true}}");
    pfx_wait("acct-deposits", p);
    pfx_wait("index-owner", p);
    cr_assert_eq(pfx_get("acct-deposits", "acct-9", UINT64_MAX, &e), 0);
    cr_assert(e->found);
    cr_assert_eq(e->value.len, strlen("{\"count\":2,\"sum\":7.25}"));
    cr_assert(!memcmp(e->value.data, "{\"count\":2,\"sum\":7.25}", e->value.len));
    cr_assert_eq(e->position, p);
    proj_entry_free(e);
    cr_assert_eq(pfx_get("index-owner", "41", UINT64_MAX, &e), 0);
    cr_assert(e->found);
    json_t *j = json_loadb((const char *)e->value.data, e->value.len, 0, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(j, "stream")), "acct-9");
    cr_assert_eq(json_integer_value(json_object_get(j, "version")), 0);
    cr_assert_eq(json_integer_value(json_object_get(j, "position")), (json_int_t)p - 1);
    json_decref(j);
    proj_entry_free(e);
    cr_assert_eq(pfx_get("index-owner", "true", UINT64_MAX, &e), 0);
    cr_assert(e->found);
    proj_entry_free(e);
    fx_evs_free(&log);
}

Test(proj_kinds, as_of_random_points_equals_the_fold_up_to_them)
{
    unsigned seed = 11;
    make_defs();
    for (int i = 0; i < 8; i++) {
        pfx_append_random(50, &seed);
    }
    wait_all();
    struct fx_evs log;
    pm_load(&log);
    check_all(&log, 0, true);
    check_all(&log, 1, true);
    for (int i = 0; i < 25; i++) {
        check_all(&log, (uint64_t)(rand_r(&seed) % (log.n + 1)), true);
    }
    check_all(&log, log.n, true);
    fx_evs_free(&log);
}

Test(proj_kinds, close_and_reopen_mid_way_neither_skips_nor_double_counts)
{
    unsigned seed = 23;
    struct proj_cfg cfg = {.batch_events = 7};
    pfx_close();
    pfx_open(&cfg);
    make_defs();
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 6; i++) {
            pfx_append_random(40, &seed);
        }
        /* close at once: the workers are mid-way through their batches */
        pfx_close();
        pfx_open(&cfg);
    }
    wait_all();
    struct fx_evs log;
    pm_load(&log);
    check_all(&log, UINT64_MAX, false);
    for (int i = 0; i < 5; i++) {
        check_all(&log, (uint64_t)(rand_r(&seed) % (log.n + 1)), true);
    }
    Annals__V1__ProjectionStatus *st = pfx_status("streams");
    json_t *m = pm_fold(&log, &defs[5].d, log.n);
    json_int_t total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        total += json_integer_value(json_object_get(json_array_get(v, 0), "event_count"));
    }
    cr_assert_eq((json_int_t)st->events_applied, total, "events_applied %llu, fold %lld",
                 (unsigned long long)st->events_applied, (long long)total);
    json_decref(m);
    proj_status_free(st);
    fx_evs_free(&log);
}

/* The child: appends and projects until killed. No criterion here. */
static void child_run(struct log_cfg lcfg, struct proj_cfg pcfg)
{
    log_env *env = NULL;
    proj_mgr *mgr = NULL;
    char detail[256];
    if (log_open(&lcfg, &env, detail) || proj_open(&pcfg, env, &mgr, detail)) {
        _exit(3);
    }
    unsigned seed = 99;
    char buf[256];
    for (;;) {
        Annals__V1__AppendRequest *r = rq_new();
        Annals__V1__StreamAppend *s = rq_stream(r, "acct-1", FX_EXPECT_ANY, 0);
        for (int i = 0; i < 10; i++) {
            rq_event(s, "Deposited", 0, pfx_random_data(&seed, buf, sizeof(buf)));
        }
        struct log_stream_result sr[1];
        struct log_op op = {.kind = LOG_OP_APPEND, .append = r, .streams = sr};
        if (log_commit(env, &op, 1, NULL) || op.rc || log_sync(env)) {
            _exit(4);
        }
        proj_notify(mgr, log_head(env));
        rq_free(r);
    }
}

Test(proj_kinds, kill_9_mid_batch_then_the_view_equals_the_fold)
{
    unsigned seed = 5;
    make_defs();
    pfx_append_random(100, &seed);
    for (int round = 0; round < 3; round++) {
        struct log_cfg lcfg = fx.cfg;
        struct proj_cfg pcfg = pfx.cfg;
        pcfg.batch_events = 13;
        pfx_close();
        fx_close();
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            child_run(lcfg, pcfg);
        }
        usleep((useconds_t)(200 + 150 * round) * 1000);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "the child exited on its own (%d)", WEXITSTATUS(status));
        fx_open_cfg(&lcfg);
        pfx_open(&pcfg);
    }
    cr_assert_gt(log_head(fx.env), 100, "the child appended nothing");
    wait_all();
    struct fx_evs log;
    pm_load(&log);
    check_all(&log, UINT64_MAX, false);
    check_all(&log, log.n / 2, true);
    fx_evs_free(&log);
}

static bool collect_keys(void *arg, const Annals__V1__ViewEntry *e)
{
    char *out = arg;
    strcat(out, e->key);
    strcat(out, ";");
    return true;
}

Test(proj_kinds, scan_orders_keys_and_honours_prefix_start_after_and_limit)
{
    struct pdef p;
    pdef_init(&p, "streams", K_STREAMS, NULL, NULL, false);
    pfx_create(&p);
    const char *streams[] = {"ab", "a-b", "b", "a", "a-a", "c-1", "a\x7f", "aa"};
    uint64_t pos = 0;
    for (size_t i = 0; i < sizeof(streams) / sizeof(*streams); i++) {
        pos = pfx_append(streams[i], "Opened", "{}");
    }
    pos = pfx_append("a", "Opened", "{}");
    pfx_wait("streams", pos);
    char got[256] = "";
    bool more = true;
    uint64_t at = 0;
    struct proj_scan q = {0};
    cr_assert_eq(proj_scan(pfx.mgr, "streams", &q, collect_keys, got, &at, &more), 0);
    cr_assert_str_eq(got, "a;a-a;a-b;aa;ab;a\x7f;b;c-1;");
    cr_assert_not(more);
    cr_assert_eq(at, pos);

    got[0] = '\0';
    q = (struct proj_scan){.prefix = "a-", .prefix_len = 2};
    cr_assert_eq(proj_scan(pfx.mgr, "streams", &q, collect_keys, got, NULL, &more), 0);
    cr_assert_str_eq(got, "a-a;a-b;");

    got[0] = '\0';
    q = (struct proj_scan){.prefix = "a", .prefix_len = 1, .start_after = "a-a",
                           .start_after_len = 3, .limit = 3};
    cr_assert_eq(proj_scan(pfx.mgr, "streams", &q, collect_keys, got, NULL, &more), 0);
    cr_assert_str_eq(got, "a-b;aa;ab;");
    cr_assert(more);

    got[0] = '\0';
    q = (struct proj_scan){.start_after = "a\x7f", .start_after_len = 2};
    cr_assert_eq(proj_scan(pfx.mgr, "streams", &q, collect_keys, got, NULL, &more), 0);
    cr_assert_str_eq(got, "b;c-1;");

    /* as of a point: keys written later are left out, values are older */
    got[0] = '\0';
    q = (struct proj_scan){.read = {.has_as_of = true, .as_of = 3}};
    cr_assert_eq(proj_scan(pfx.mgr, "streams", &q, collect_keys, got, &at, &more), 0);
    cr_assert_str_eq(got, "a-b;ab;b;");
    cr_assert_eq(at, 3);
    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get("streams", "a", 4, &e), 0);
    cr_assert(e->found);
    cr_assert_eq(e->position, 4);
    proj_entry_free(e);
    cr_assert_eq(pfx_get("streams", "a", 3, &e), 0);
    cr_assert_not(e->found);
    proj_entry_free(e);
}

static void expect_value(const char *view, const char *key, const char *want)
{
    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get(view, key, UINT64_MAX, &e), 0);
    if (!want) {
        cr_assert_not(e->found, "%s[%s] has a value", view, key);
    } else {
        cr_assert(e->found, "%s[%s] not found", view, key);
        json_t *got = json_loadb((const char *)e->value.data, e->value.len, 0, NULL);
        json_t *exp = json_loads(want, 0, NULL);
        cr_assert(json_equal(got, exp), "%s[%s] = %.*s, want %s", view, key,
                  (int)e->value.len, (const char *)e->value.data, want);
        json_decref(got);
        json_decref(exp);
    }
    proj_entry_free(e);
}

Test(proj_kinds, pointer_escapes_array_indexes_sum_overflow_and_long_keys)
{
    struct pdef a;
    struct pdef b;
    struct pdef c;
    pdef_init(&a, "esc", K_COUNT, "/a~1b/~0c", "/n", false);
    pdef_init(&b, "arr", K_INDEX, "/items/1", NULL, false);
    pdef_init(&c, "long", K_COUNT, "/k", NULL, false);
    pfx_create(&a);
    pfx_create(&b);
    pfx_create(&c);
    pfx_append("x-1", "T", "{\"a/b\": {\"~c\": \"K\"}, \"n\": 9000000000000000000}");
    pfx_append("x-1", "T", "{\"a/b\": {\"~c\": \"K\"}, \"n\": 9000000000000000000}");
    pfx_append("x-1", "T", "{\"a/b\": {\"~c\": \"K\"}, \"n\": \"nope\"}");
    pfx_append("x-1", "T", "{\"ab\": {\"c\": \"K\"}}");
    pfx_append("x-2", "T", "{\"items\": [\"zero\", \"one\"]}");
    pfx_append("x-2", "T", "{\"items\": {\"1\": \"obj\"}}");
    pfx_append("x-2", "T", "{\"items\": [\"zero\"]}");
    pfx_append("x-2", "T", "{\"items\": [0, null]}");
    char big[700];
    int n = snprintf(big, sizeof(big), "{\"k\": \"");
    memset(big + n, 'q', 600);
    snprintf(big + n + 600, sizeof(big) - (size_t)n - 600, "\"}");
    pfx_append("x-3", "T", big);
    uint64_t last = pfx_append("x-3", "T", "{\"k\": 1.5}");
    pfx_wait("esc", last);
    pfx_wait("arr", last);
    pfx_wait("long", last);
    /* two integers past INT64_MAX together: the sum turns real; a string adds nothing */
    expect_value("esc", "K", "{\"count\": 3, \"sum\": 1.8e19}");
    expect_value("arr", "one", "{\"stream\": \"x-2\", \"version\": 0, \"position\": 5}");
    expect_value("arr", "obj", "{\"stream\": \"x-2\", \"version\": 1, \"position\": 6}");
    expect_value("arr", "zero", NULL);
    json_t *all = pfx_scan_all("arr", UINT64_MAX);
    cr_assert_eq(json_object_size(all), 2, "arr has keys for no value or null");
    json_decref(all);
    all = pfx_scan_all("long", UINT64_MAX);
    cr_assert_eq(json_object_size(all), 1, "a key longer than PROJ_KEY_MAX was kept");
    json_decref(all);
    expect_value("long", "1.5", "{\"count\": 1}");
    Annals__V1__ProjectionStatus *st = pfx_status("long");
    cr_assert_eq(st->checkpoint, last);
    cr_assert_eq(st->state, ANNALS__V1__PROJECTION_STATE__RUNNING);
    proj_status_free(st);
}

/*
 * test_proj_def.c - the Projections service half of the engine: definitions
 * validated per projections.proto, Create idempotent or ALREADY_EXISTS,
 * List/Get/Delete, definitions surviving a restart, the errors of GetView
 * (unknown view, as_of on latest_only), and read-your-writes waits.
 */
#include "proj_fixture.h"

#include <criterion/criterion.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define K_STATE ANNALS__V1__PROJECTION_KIND__STREAM_STATE
#define K_COUNT ANNALS__V1__PROJECTION_KIND__COUNT
#define K_INDEX ANNALS__V1__PROJECTION_KIND__INDEX
#define K_STREAMS ANNALS__V1__PROJECTION_KIND__STREAMS

TestSuite(proj_def, .init = pfx_setup, .fini = pfx_teardown, .timeout = 60);

static void expect_invalid(struct pdef *p, const char *field)
{
    char detail[PROJ_DETAIL_MAX] = "";
    int rc = proj_create(pfx.mgr, &p->d, NULL, detail);
    cr_assert_eq(rc, AN_EINVAL, "want AN_EINVAL for %s, got %s", field, an_errname(rc));
    cr_assert(strncmp(detail, field, strlen(field)) == 0, "detail '%s' does not start with %s",
              detail, field);
}

Test(proj_def, rejects_bad_definitions_naming_the_field)
{
    struct pdef p;
    char long_name[80];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    const char *bad_names[] = {"", "Orders", "a b", "a.b", "ä", long_name};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(*bad_names); i++) {
        pdef_init(&p, bad_names[i], K_STREAMS, NULL, NULL, false);
        expect_invalid(&p, "name");
    }
    pdef_init(&p, "x", ANNALS__V1__PROJECTION_KIND__PROJECTION_KIND_UNSPECIFIED, NULL, NULL,
              false);
    expect_invalid(&p, "kind");
    pdef_init(&p, "x", (Annals__V1__ProjectionKind)9, NULL, NULL, false);
    expect_invalid(&p, "kind");
    const char *bad_keys[] = {"", "$foo", "type", "/a~2", "/a~", "$Type"};
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(*bad_keys); i++) {
        pdef_init(&p, "x", K_COUNT, bad_keys[i], NULL, false);
        expect_invalid(&p, "key");
        pdef_init(&p, "x", K_INDEX, bad_keys[i], NULL, false);
        expect_invalid(&p, "key");
    }
    pdef_init(&p, "x", K_STATE, "$type", NULL, false);
    expect_invalid(&p, "key");
    pdef_init(&p, "x", K_STREAMS, "/a", NULL, false);
    expect_invalid(&p, "key");
    pdef_init(&p, "x", K_INDEX, "$type", "/total", false);
    expect_invalid(&p, "sum");
    pdef_init(&p, "x", K_STATE, NULL, "/total", false);
    expect_invalid(&p, "sum");
    pdef_init(&p, "x", K_COUNT, "$type", "total", false);
    expect_invalid(&p, "sum");
    pdef_init(&p, "x", K_COUNT, "$type", "/a~3", false);
    expect_invalid(&p, "sum");

    /* and nothing was created */
    Annals__V1__ListProjectionsResponse *l = NULL;
    cr_assert_eq(proj_list(pfx.mgr, &l), 0);
    cr_assert_eq(l->n_projections, 0);
    proj_list_free(l);

    /* the good edges */
    const char *good[][2] = {{"a", "$type"},     {"z-9_", "$stream"}, {"c", "$category"},
                             {"d", "/"},         {"e", "/a~0b~1c"},   {"f", "/items/0"}};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
        pdef_init(&p, good[i][0], K_COUNT, good[i][1], "/n", false);
        cr_assert_eq(proj_validate(&p.d, NULL), 0, "%s rejected", good[i][1]);
    }
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    pdef_init(&p, long_name, K_STREAMS, NULL, NULL, true);
    cr_assert_eq(proj_validate(&p.d, NULL), 0);
}

Test(proj_def, create_is_idempotent_and_a_different_definition_exists)
{
    struct pdef p;
    pdef_init(&p, "orders", K_COUNT, "$type", NULL, false);
    pdef_prefix(&p, "order-");
    pfx_create(&p);
    pfx_create(&p); /* identical: accepted again */

    char detail[PROJ_DETAIL_MAX] = "";
    struct pdef q;
    pdef_init(&q, "orders", K_COUNT, "$type", NULL, true);
    pdef_prefix(&q, "order-");
    cr_assert_eq(proj_create(pfx.mgr, &q.d, NULL, detail), AN_EEXIST);
    pdef_init(&q, "orders", K_COUNT, "$stream", NULL, false);
    pdef_prefix(&q, "order-");
    cr_assert_eq(proj_create(pfx.mgr, &q.d, NULL, detail), AN_EEXIST);

    Annals__V1__ProjectionStatus *st = pfx_status("orders");
    cr_assert_str_eq(st->definition->name, "orders");
    cr_assert_eq(st->definition->kind, K_COUNT);
    cr_assert_str_eq(st->definition->key, "$type");
    cr_assert_eq(st->definition->filter->n_stream_prefixes, 1);
    cr_assert_str_eq(st->definition->filter->stream_prefixes[0], "order-");
    cr_assert(st->state == ANNALS__V1__PROJECTION_STATE__RUNNING);
    proj_status_free(st);
    cr_assert_eq(proj_status(pfx.mgr, "nope", &st), AN_ENOTFOUND);
}

Test(proj_def, list_get_delete_and_definitions_survive_a_restart)
{
    struct pdef a;
    struct pdef b;
    struct pdef c;
    pdef_init(&a, "zeta", K_STREAMS, NULL, NULL, false);
    pdef_init(&b, "alpha", K_INDEX, "/owner/id", NULL, true);
    pdef_init(&c, "mid", K_STATE, NULL, NULL, false);
    pfx_create(&a);
    pfx_create(&b);
    pfx_create(&c);
    uint64_t last = 0;
    for (int i = 0; i < 20; i++) {
        last = pfx_append(i % 2 ? "acct-1" : "acct-2", "Opened", "{\"owner\": {\"id\": \"u1\"}}");
    }
    pfx_wait("zeta", last);
    pfx_wait("alpha", last);

    Annals__V1__ListProjectionsResponse *l = NULL;
    cr_assert_eq(proj_list(pfx.mgr, &l), 0);
    cr_assert_eq(l->n_projections, 3);
    cr_assert_str_eq(l->projections[0]->definition->name, "alpha");
    cr_assert_str_eq(l->projections[1]->definition->name, "mid");
    cr_assert_str_eq(l->projections[2]->definition->name, "zeta");
    proj_list_free(l);

    Annals__V1__ProjectionStatus *st = pfx_status("zeta");
    cr_assert_eq(st->checkpoint, last);
    cr_assert_eq(st->head, last);
    cr_assert_eq(st->events_applied, 20);
    proj_status_free(st);

    cr_assert_eq(proj_delete(pfx.mgr, "mid", NULL), 0);
    cr_assert_eq(proj_delete(pfx.mgr, "mid", NULL), AN_ENOTFOUND);
    char path[256];
    snprintf(path, sizeof(path), "%s/views/mid.1", pfx.dir);
    struct stat sb;
    cr_assert_neq(stat(path, &sb), 0, "%s still exists after delete", path);

    pfx_close();
    struct proj_cfg cfg = {0};
    pfx_open(&cfg);
    cr_assert_eq(proj_list(pfx.mgr, &l), 0);
    cr_assert_eq(l->n_projections, 2);
    cr_assert_str_eq(l->projections[0]->definition->name, "alpha");
    cr_assert(l->projections[0]->definition->latest_only);
    cr_assert_str_eq(l->projections[1]->definition->name, "zeta");
    cr_assert_eq(l->projections[1]->checkpoint, last);
    proj_list_free(l);
    cr_assert_eq(proj_status(pfx.mgr, "mid", &st), AN_ENOTFOUND);

    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get("zeta", "acct-1", UINT64_MAX, &e), 0);
    cr_assert(e->found);
    cr_assert_str_eq(e->content_type, PROJ_CONTENT_TYPE);
    proj_entry_free(e);
    /* a create after a restart of an identical definition is still idempotent */
    pfx_create(&a);
}

Test(proj_def, get_errors_unknown_view_latest_only_as_of_and_missing_keys)
{
    struct pdef p;
    pdef_init(&p, "latest", K_STREAMS, NULL, NULL, true);
    pfx_create(&p);
    uint64_t pos = pfx_append("acct-1", "Opened", "{}");
    pfx_wait("latest", pos);
    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get("nope", "acct-1", UINT64_MAX, &e), AN_ENOTFOUND);
    cr_assert_eq(pfx_get("latest", "acct-1", 1, &e), AN_EPRECOND);
    cr_assert_eq(pfx_get("latest", "acct-9", UINT64_MAX, &e), 0);
    cr_assert_not(e->found);
    cr_assert_str_eq(e->key, "acct-9");
    cr_assert_eq(e->value.len, 0);
    proj_entry_free(e);
    cr_assert_eq(pfx_get("latest", "acct-1", UINT64_MAX, &e), 0);
    cr_assert(e->found);
    cr_assert_eq(e->position, pos);
    proj_entry_free(e);
    struct proj_scan q = {.read = {.has_as_of = true, .as_of = 1}};
    cr_assert_eq(proj_scan(pfx.mgr, "latest", &q, NULL, NULL, NULL, NULL), AN_EPRECOND);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct late {
    int64_t appended_ms;
    uint64_t pos;
};

static void *append_later(void *arg)
{
    struct late *l = arg;
    usleep(300 * 1000);
    /* the writer's part, without criterion asserts (not the test thread) */
    Annals__V1__AppendRequest *r = rq_simple("acct-7", FX_EXPECT_ANY, 0, 1, "Opened", 0);
    struct log_op op = {.kind = LOG_OP_APPEND, .append = r};
    struct log_stream_result sr[1];
    op.streams = sr;
    if (log_commit(fx.env, &op, 1, NULL) == 0 && op.rc == 0 && log_sync(fx.env) == 0) {
        l->pos = op.first_position;
        l->appended_ms = now_ms();
        proj_notify(pfx.mgr, log_head(fx.env));
    }
    rq_free(r);
    return NULL;
}

Test(proj_def, min_position_and_as_of_wake_promptly_after_notify)
{
    struct pdef p;
    pdef_init(&p, "streams", K_STREAMS, NULL, NULL, false);
    pfx_create(&p);
    uint64_t pos = pfx_append("acct-1", "Opened", "{}");
    pfx_wait("streams", pos);

    /* nothing comes: DEADLINE_EXCEEDED at the deadline */
    Annals__V1__ViewEntry *e = NULL;
    struct proj_read q = {.min_position = pos + 1, .deadline_ns = proj_deadline_after(150000000)};
    int64_t t0 = now_ms();
    cr_assert_eq(proj_get(pfx.mgr, "streams", "acct-7", 6, &q, &e), AN_EDEADLINE);
    int64_t waited = now_ms() - t0;
    cr_assert(waited >= 140 && waited < 5000, "waited %lld ms", (long long)waited);

    /* an append 300 ms later wakes both kinds of waits */
    for (int as_of = 0; as_of < 2; as_of++) {
        struct late l = {0};
        pthread_t t;
        pthread_create(&t, NULL, append_later, &l);
        uint64_t want = log_head(fx.env) + 1;
        q = (struct proj_read){.deadline_ns = proj_deadline_after(20000000000)};
        if (as_of) {
            q.has_as_of = true;
            q.as_of = want;
        } else {
            q.min_position = want;
        }
        int rc = proj_get(pfx.mgr, "streams", "acct-7", 6, &q, &e);
        int64_t woke = now_ms();
        pthread_join(t, NULL);
        cr_assert_eq(rc, 0, "%s", an_errname(rc));
        cr_assert_eq(l.pos, want);
        cr_assert(e->found, "the awaited append is not in the answer");
        cr_assert_eq(e->position, want);
        cr_assert(woke - l.appended_ms < 1000, "woke %lld ms after the append",
                  (long long)(woke - l.appended_ms));
        proj_entry_free(e);
    }
}

struct waiter {
    const char *view;
    int rc;
};

static void *wait_forever(void *arg)
{
    struct waiter *w = arg;
    Annals__V1__ViewEntry *e = NULL;
    struct proj_read q = {.min_position = 1000000};
    w->rc = proj_get(pfx.mgr, w->view, "k", 1, &q, &e);
    proj_entry_free(e);
    return NULL;
}

Test(proj_def, delete_wakes_waiters_with_not_found)
{
    struct pdef p;
    pdef_init(&p, "streams", K_STREAMS, NULL, NULL, false);
    pfx_create(&p);
    struct waiter w = {.view = "streams", .rc = 1};
    pthread_t t;
    pthread_create(&t, NULL, wait_forever, &w);
    usleep(100 * 1000);
    cr_assert_eq(proj_delete(pfx.mgr, "streams", NULL), 0);
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, AN_ENOTFOUND, "%s", an_errname(w.rc));
}

Test(proj_def, close_wakes_waiters_with_unavailable)
{
    struct pdef p;
    pdef_init(&p, "streams", K_STREAMS, NULL, NULL, false);
    pfx_create(&p);
    struct waiter w = {.view = "streams", .rc = 1};
    pthread_t t;
    pthread_create(&t, NULL, wait_forever, &w);
    usleep(100 * 1000);
    pfx_close(); /* returns only once the waiter has */
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, AN_EUNAVAIL, "%s", an_errname(w.rc));
    struct proj_cfg cfg = {0};
    pfx_open(&cfg);
}

static bool view_dir(const char *name)
{
    char path[256];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/views/%s", pfx.dir, name);
    return stat(path, &sb) == 0;
}

static void make_view_dir(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/views/%s", pfx.dir, name);
    cr_assert_eq(mkdir(path, 0755), 0);
}

Test(proj_def, open_sweeps_stale_views_and_skips_a_bad_catalog_entry)
{
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
    pfx_close();
    /* debris of crashes: an unknown name, another generation of ct */
    make_view_dir("ghost.3");
    make_view_dir("ct.7");
    /* an entry that does not decode, with its view */
    char cat[256];
    snprintf(cat, sizeof(cat), "%s/catalog", pfx.dir);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 2);
    cr_assert_eq(mdb_env_open(env, cat, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "defs", 0, &dbi), 0);
    MDB_val k = {.mv_size = 3, .mv_data = "bad"};
    MDB_val v = {.mv_size = 20, .mv_data = "0123456789abcdef\xff\xff\xff\xff"};
    cr_assert_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    make_view_dir("bad.1");

    struct proj_cfg cfg = {0};
    pfx_open(&cfg);
    cr_assert_not(view_dir("ghost.3"));
    cr_assert_not(view_dir("ct.7"));
    cr_assert(view_dir("ct.1"));
    cr_assert(view_dir("bad.1"), "the views of an entry that did not load were removed");
    Annals__V1__ListProjectionsResponse *l = NULL;
    cr_assert_eq(proj_list(pfx.mgr, &l), 0);
    cr_assert_eq(l->n_projections, 1);
    cr_assert_str_eq(l->projections[0]->definition->name, "ct");
    proj_list_free(l);
}

/* Rewrites the generations (and with rename, the key) of catalog entry
 * `name`, its definition kept. */
static void cat_rewrite(const char *name, uint64_t cur, uint64_t next, const char *rename)
{
    char cat[256];
    snprintf(cat, sizeof(cat), "%s/catalog", pfx.dir);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 2);
    cr_assert_eq(mdb_env_open(env, cat, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "defs", 0, &dbi), 0);
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val v;
    cr_assert_eq(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t buf[512];
    cr_assert(v.mv_size <= sizeof(buf) && v.mv_size >= 16);
    memcpy(buf, v.mv_data, v.mv_size);
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)(cur >> (56 - 8 * i));
        buf[8 + i] = (uint8_t)(next >> (56 - 8 * i));
    }
    MDB_val nv = {.mv_size = v.mv_size, .mv_data = buf};
    if (rename) {
        cr_assert_eq(mdb_del(txn, dbi, &k, NULL), 0);
        k = (MDB_val){.mv_size = strlen(rename), .mv_data = (void *)rename};
    }
    cr_assert_eq(mdb_put(txn, dbi, &k, &nv, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* An entry whose rebuild generation was its current one opened the same
 * view env twice (which LMDB forbids in one process), and the "rebuild"
 * swapped in over itself and removed the view's directory; one whose key
 * was not its definition's name ran under the definition's name (Delete
 * then left the entry behind). Both are skipped now (ct's view kept: its
 * entry is there under its name). */
Test(proj_def, open_skips_an_entry_with_equal_generations_or_another_name)
{
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
    pdef_init(&p, "st", K_STATE, NULL, NULL, false);
    pfx_create(&p);
    uint64_t pos = pfx_append("acct-1", "Opened", "{}");
    pfx_wait("ct", pos);
    pfx_close();
    cat_rewrite("ct", 1, 1, NULL);
    cat_rewrite("st", 1, 0, "zz");

    struct proj_cfg cfg = {0};
    pfx_open(&cfg);
    Annals__V1__ListProjectionsResponse *l = NULL;
    cr_assert_eq(proj_list(pfx.mgr, &l), 0);
    cr_assert_eq(l->n_projections, 0);
    proj_list_free(l);
    usleep(200000); /* what a worker would have done, it would have by now */
    cr_assert(view_dir("ct.1"), "the view of a skipped entry was removed");

    /* put back as they were, both load again with their views */
    pfx_close();
    cat_rewrite("ct", 1, 0, NULL);
    cat_rewrite("zz", 1, 0, "st");
    pfx_open(&cfg);
    cr_assert_eq(proj_list(pfx.mgr, &l), 0);
    cr_assert_eq(l->n_projections, 2);
    proj_list_free(l);
}

static atomic_int advanced;

static void on_advance(void *arg)
{
    (void)arg;
    atomic_fetch_add(&advanced, 1);
}

/* on_advance runs right after the change is published: give it 2 s. */
static bool advanced_past(int before)
{
    for (int i = 0; i < 200 && atomic_load(&advanced) <= before; i++) {
        usleep(10000);
    }
    return atomic_load(&advanced) > before;
}

Test(proj_def, on_advance_is_called_when_waiting_queries_may_proceed)
{
    struct proj_cfg cfg = {.on_advance = on_advance};
    pfx_close();
    pfx_open(&cfg);
    struct pdef p;
    pdef_init(&p, "streams", K_STREAMS, NULL, NULL, false);
    pfx_create(&p);
    atomic_store(&advanced, 0);
    uint64_t pos = pfx_append("acct-1", "Opened", "{}");
    pfx_wait("streams", pos);
    cr_assert(advanced_past(0), "a checkpoint moved without on_advance");
    /* a try that would wait: AN_EDEADLINE at once, for the server to park */
    Annals__V1__ViewEntry *e = NULL;
    struct proj_read q = {.min_position = pos + 1, .deadline_ns = proj_deadline_after(0)};
    cr_assert_eq(proj_get(pfx.mgr, "streams", "acct-1", 6, &q, &e), AN_EDEADLINE);
    int before = atomic_load(&advanced);
    cr_assert_eq(proj_rebuild(pfx.mgr, "streams", NULL, NULL), 0);
    Annals__V1__ProjectionStatus *st = NULL;
    for (int i = 0; i < 500; i++) {
        st = pfx_status("streams");
        bool done = st->state != ANNALS__V1__PROJECTION_STATE__REBUILDING;
        proj_status_free(st);
        if (done) {
            break;
        }
        usleep(10000);
    }
    cr_assert(advanced_past(before), "a swap without on_advance");
    before = atomic_load(&advanced);
    cr_assert_eq(proj_delete(pfx.mgr, "streams", NULL), 0);
    cr_assert_gt(atomic_load(&advanced), before, "a delete without on_advance");
}

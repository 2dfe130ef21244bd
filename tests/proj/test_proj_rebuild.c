/*
 * test_proj_rebuild.c - Rebuild with zero downtime (concurrent appends and
 * GetView never fail and never see a half-built view; the old generation's
 * files go), a rebuild interrupted by a restart resumes, Delete while
 * rebuilding, and the FAULTED path (a view map too small) with its retries.
 */
#include "proj_fixture.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define K_STATE ANNALS__V1__PROJECTION_KIND__STREAM_STATE
#define K_COUNT ANNALS__V1__PROJECTION_KIND__COUNT
#define K_STREAMS ANNALS__V1__PROJECTION_KIND__STREAMS
#define S_RUNNING ANNALS__V1__PROJECTION_STATE__RUNNING
#define S_REBUILDING ANNALS__V1__PROJECTION_STATE__REBUILDING
#define S_FAULTED ANNALS__V1__PROJECTION_STATE__FAULTED

TestSuite(proj_rebuild, .init = pfx_setup, .fini = pfx_teardown, .timeout = 90);

/* ---- a log whose fold has a closed form ---- */

/* The event at position p has type "t<p % 3>" (one appender only). */
static void type_of(uint64_t pos, char *out)
{
    snprintf(out, 8, "t%d", (int)(pos % 3));
}

/* How many events of type "t<k>" positions 1..p hold. */
static uint64_t count_upto(uint64_t p, int k)
{
    return p / 3 + (k != 0 && (uint64_t)k <= p % 3 ? 1 : 0);
}

/* Appends n events (one request) without criterion asserts: 0 or -1. */
static int append_typed(size_t n)
{
    uint64_t next = log_head(fx.env) + 1;
    char type[8];
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *s = rq_stream(r, next % 2 ? "s-1" : "s-2", FX_EXPECT_ANY, 0);
    for (size_t i = 0; i < n; i++) {
        type_of(next + i, type);
        rq_event(s, type, 0, "{\"n\": 1}");
    }
    struct log_stream_result sr[1];
    struct log_op op = {.kind = LOG_OP_APPEND, .append = r, .streams = sr};
    int rc = log_commit(fx.env, &op, 1, NULL);
    if (!rc) {
        rc = op.rc ? op.rc : log_sync(fx.env);
    }
    rq_free(r);
    if (rc || op.first_position != next) {
        return -1;
    }
    proj_notify(pfx.mgr, log_head(fx.env));
    return 0;
}

struct load {
    atomic_bool stop;
    atomic_int errors;
    atomic_long reads;
    unsigned seed;
    char why[256];
};

static void load_fail(struct load *l, const char *fmt, unsigned long long a,
                      unsigned long long b)
{
    if (atomic_fetch_add(&l->errors, 1) == 0) {
        snprintf(l->why, sizeof(l->why), fmt, a, b);
    }
}

static void *appender(void *arg)
{
    struct load *l = arg;
    while (!atomic_load(&l->stop)) {
        if (append_typed(50)) {
            load_fail(l, "append failed at head %llu%llu", log_head(fx.env), 0);
            break;
        }
        usleep(2000);
    }
    return NULL;
}

static void *reader(void *arg)
{
    struct load *l = arg;
    unsigned seed = l->seed;
    uint64_t last_pos[3] = {0};
    char key[8];
    while (!atomic_load(&l->stop)) {
        int k = rand_r(&seed) % 3;
        snprintf(key, sizeof(key), "t%d", k);
        Annals__V1__ViewEntry *e = NULL;
        /* the present: the entry's position says how many it must count,
         * and it never goes back (a half-built view would) */
        int rc = pfx_get("ct", key, UINT64_MAX, &e);
        if (rc) {
            load_fail(l, "GetView present: rc %llu%llu", (unsigned long long)-rc, 0);
            break;
        }
        json_t *j = e->found ? json_loadb((const char *)e->value.data, e->value.len, 0, NULL)
                             : NULL;
        uint64_t c = (uint64_t)json_integer_value(json_object_get(j, "count"));
        json_decref(j);
        if (!e->found || e->position < last_pos[k] || c != count_upto(e->position, k)) {
            load_fail(l, "GetView present: position %llu count %llu", e->position, c);
        }
        last_pos[k] = e->position;
        proj_entry_free(e);
        /* as of a random point of the history */
        uint64_t head = log_head(fx.env);
        uint64_t p = 1 + (uint64_t)rand_r(&seed) % head;
        rc = pfx_get("ct", key, p, &e);
        if (rc) {
            load_fail(l, "GetView as of %llu: rc %llu", p, (unsigned long long)-rc);
            break;
        }
        j = e->found ? json_loadb((const char *)e->value.data, e->value.len, 0, NULL) : NULL;
        c = (uint64_t)json_integer_value(json_object_get(j, "count"));
        json_decref(j);
        if (c != count_upto(p, k)) {
            load_fail(l, "GetView as of %llu: count %llu", p, c);
        }
        proj_entry_free(e);
        atomic_fetch_add(&l->reads, 1);
    }
    return NULL;
}

static bool dir_exists(const char *name)
{
    char path[256];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/views/%s", pfx.dir, name);
    return stat(path, &sb) == 0;
}

static int count_view_dirs_now(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/views", pfx.dir);
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        n += de->d_name[0] != '.';
    }
    if (d) {
        closedir(d);
    }
    return n;
}

/* The old generation goes right after the swap is visible: give it 2 s. */
static int count_view_dirs(void)
{
    int n = count_view_dirs_now();
    for (int i = 0; i < 200 && n > 1; i++) {
        usleep(10000);
        n = count_view_dirs_now();
    }
    return n;
}

/* Polls Get until the state is not REBUILDING (40 s); returns the last status. */
static Annals__V1__ProjectionStatus *wait_rebuilt(const char *name, uint64_t *max_rb)
{
    for (int i = 0; i < 4000; i++) {
        Annals__V1__ProjectionStatus *st = pfx_status(name);
        if (st->state != S_REBUILDING) {
            return st;
        }
        if (max_rb && st->rebuild_checkpoint > *max_rb) {
            *max_rb = st->rebuild_checkpoint;
        }
        proj_status_free(st);
        usleep(10000);
    }
    cr_assert_fail("rebuild of %s did not finish", name);
    return NULL;
}

static void check_count_view(void)
{
    struct fx_evs log;
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_wait("ct", log_head(fx.env));
    pm_load(&log);
    json_t *model = pm_fold(&log, &p.d, log.n);
    json_t *view = pfx_scan_all("ct", UINT64_MAX);
    pm_assert_equal(view, model, "ct after rebuild");
    json_decref(model);
    json_decref(view);
    fx_evs_free(&log);
}

Test(proj_rebuild, under_appends_and_gets_never_fails_nor_shows_a_half_built_view)
{
    struct proj_cfg cfg = {.batch_events = 64};
    pfx_close();
    pfx_open(&cfg);
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(append_typed(100), 0);
    }
    pfx_wait("ct", log_head(fx.env));

    struct load l = {.seed = 1};
    struct load l2 = {.seed = 2};
    pthread_t ta;
    pthread_t tr;
    pthread_t tr2;
    pthread_create(&ta, NULL, appender, &l);
    pthread_create(&tr, NULL, reader, &l);
    pthread_create(&tr2, NULL, reader, &l2);
    usleep(50000);

    Annals__V1__ProjectionStatus *st = NULL;
    cr_assert_eq(proj_rebuild(pfx.mgr, "ct", &st, NULL), 0);
    cr_assert_eq(st->state, S_REBUILDING);
    proj_status_free(st);
    /* a second Rebuild while one runs goes on with it */
    cr_assert_eq(proj_rebuild(pfx.mgr, "ct", &st, NULL), 0);
    cr_assert_eq(st->state, S_REBUILDING);
    proj_status_free(st);
    uint64_t max_rb = 0; /* progress seen, if the rebuild was slow enough */
    st = wait_rebuilt("ct", &max_rb);
    cr_assert_eq(st->state, S_RUNNING, "state %d error %s", st->state, st->error);
    proj_status_free(st);
    usleep(50000); /* reads on the new view too */
    atomic_store(&l.stop, true);
    atomic_store(&l2.stop, true);
    pthread_join(ta, NULL);
    pthread_join(tr, NULL);
    pthread_join(tr2, NULL);
    l.errors += l2.errors;
    cr_assert_eq(l.errors, 0, "%s %s", l.why, l2.why);
    cr_assert_gt(l.reads + l2.reads, 10);
    cr_log_info("rebuild_checkpoint seen up to %llu", (unsigned long long)max_rb);
    check_count_view();
    cr_assert_eq(count_view_dirs(), 1, "the old generation was not removed");
    cr_assert_not(dir_exists("ct.1"));
    cr_assert(dir_exists("ct.2"));
}

/* Starts a rebuild of `name` and returns its checkpoint once seen mid-way
 * (> 0, still rebuilding); on a fast disk one may end between two looks:
 * then it starts another (50 at most). */
static uint64_t rebuild_caught_midway(const char *name)
{
    uint64_t seen = 0;
    for (int attempt = 0; attempt < 50 && seen == 0; attempt++) {
        cr_assert_eq(proj_rebuild(pfx.mgr, name, NULL, NULL), 0);
        for (int i = 0; i < 5000 && seen == 0; i++) {
            Annals__V1__ProjectionStatus *st = pfx_status(name);
            bool rebuilding = st->state == S_REBUILDING;
            seen = rebuilding ? st->rebuild_checkpoint : 0;
            proj_status_free(st);
            if (!rebuilding) {
                break;
            }
            usleep(200);
        }
    }
    cr_assert_gt(seen, 0, "never saw a rebuild of %s mid-way", name);
    return seen;
}

Test(proj_rebuild, interrupted_by_a_restart_resumes)
{
    struct proj_cfg cfg = {.batch_events = 16};
    pfx_close();
    pfx_open(&cfg);
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(append_typed(100), 0);
    }
    pfx_wait("ct", log_head(fx.env));
    uint64_t before = rebuild_caught_midway("ct");
    pfx_close();
    pfx_open(&cfg);
    Annals__V1__ProjectionStatus *st = pfx_status("ct");
    if (st->state == S_REBUILDING) {
        cr_assert_geq(st->rebuild_checkpoint, before, "the rebuild restarted from scratch");
    }
    proj_status_free(st);
    st = wait_rebuilt("ct", NULL);
    cr_assert_eq(st->state, S_RUNNING, "%s", st->error);
    proj_status_free(st);
    check_count_view();
    cr_assert_eq(count_view_dirs(), 1);
}

/* Opens with 16-event batches, appends 30 events, copies the log (at
 * head 30) to <fx.dir>-older (into copy) and creates COUNT "ct". */
static void ct_over_a_copied_log(const struct proj_cfg *cfg, char *copy, size_t cap)
{
    pfx_close();
    pfx_open(cfg);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(append_typed(10), 0);
    }
    snprintf(copy, cap, "%s-older", fx.dir);
    char detail[LOG_DETAIL_MAX] = "";
    uint64_t head = 0;
    uint64_t bytes = 0;
    cr_assert_eq(log_backup(fx.env, copy, &head, &bytes, detail), 0, "%s", detail);
    cr_assert_eq(head, 30);
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
}

/* Puts the copied log in place of this one (projections closed), then
 * runs `more` (a shell command, may be empty) and opens the log again. */
static void restore_log(const char *copy, const char *more)
{
    struct log_cfg lc = fx.cfg;
    char cmd[1400];
    fx_close();
    snprintf(cmd, sizeof(cmd), "cp '%s/data.mdb' '%s/data.mdb' && rm -f '%s/lock.mdb'%s%s",
             copy, fx.dir, fx.dir, more[0] ? " && " : "", more);
    cr_assert_eq(system(cmd), 0);
    fx_open_cfg(&lc);
    cr_assert_eq(log_head(fx.env), 30);
}

/*
 * The log goes back to an older copy while the view (and a rebuild of it)
 * are past that copy's head, as when a log is restored without its
 * projections: at the next open both are dropped, and one fresh view folds
 * the restored log from position 1.
 */
Test(proj_rebuild, a_view_and_its_rebuild_past_a_restored_logs_head_start_again_from_it)
{
    struct proj_cfg cfg = {.batch_events = 16};
    char copy[200];
    ct_over_a_copied_log(&cfg, copy, sizeof(copy));
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(append_typed(100), 0);
    }
    pfx_wait("ct", log_head(fx.env));
    rebuild_caught_midway("ct");
    pfx_close();

    /* the older log in place of this one; the projections stay */
    restore_log(copy, "");
    pfx_open(&cfg);
    Annals__V1__ProjectionStatus *st = pfx_status("ct");
    cr_assert_neq(st->state, S_REBUILDING, "the rebuild past the head went on");
    cr_assert_leq(st->checkpoint, 30, "checkpoint %llu past the head 30",
                  (unsigned long long)st->checkpoint);
    proj_status_free(st);
    check_count_view();
    cr_assert_eq(count_view_dirs(), 1, "the dropped generations are still there");
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", copy);
    cr_assert_eq(system(cmd), 0);
}

/*
 * The files disagree: the current view comes from a copy taken at the
 * restored log's head (its checkpoint is that head), the rebuild in
 * progress from later (its checkpoint is past it). The view goes on; the
 * rebuild starts again from position 1 instead of resuming a fold of
 * another history (which would swap in counts of events this log does not
 * have), and what is swapped in equals a fold of this log.
 */
Test(proj_rebuild, a_rebuild_past_a_restored_logs_head_starts_again_while_the_view_goes_on)
{
    struct proj_cfg cfg = {.batch_events = 16};
    char copy[200];
    ct_over_a_copied_log(&cfg, copy, sizeof(copy));
    pfx_wait("ct", 30);
    /* the view as of the copy (its environment closed) */
    char cmd[1200];
    pfx_close();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s-views' && cp -a '%s/views' '%s-views'", copy, pfx.dir,
             copy);
    cr_assert_eq(system(cmd), 0);
    pfx_open(&cfg);
    for (int i = 0; i < 25; i++) {
        cr_assert_eq(append_typed(10), 0);
    }
    pfx_wait("ct", log_head(fx.env));
    /* a rebuild caught past position 30 */
    uint64_t seen = 0;
    for (int attempt = 0; attempt < 50 && seen <= 30; attempt++) {
        seen = rebuild_caught_midway("ct");
    }
    cr_assert_gt(seen, 30, "never saw the rebuild past position 30");
    pfx_close();

    /* the older log and, for the current generation only, the older view */
    snprintf(cmd, sizeof(cmd),
             "for d in '%s-views'/*; do rm -rf '%s/views/'\"$(basename \"$d\")\" && "
             "cp -a \"$d\" '%s/views/'; done",
             copy, pfx.dir, pfx.dir);
    restore_log(copy, cmd);
    cr_assert_eq(count_view_dirs_now(), 2, "the view and its rebuild");
    pfx_open(&cfg);
    Annals__V1__ProjectionStatus *st = pfx_status("ct");
    if (st->state == S_REBUILDING) {
        cr_assert_leq(st->rebuild_checkpoint, 30, "the rebuild went on from %llu",
                      (unsigned long long)st->rebuild_checkpoint);
    }
    proj_status_free(st);
    st = wait_rebuilt("ct", NULL);
    cr_assert_eq(st->state, S_RUNNING, "%s", st->error);
    cr_assert_eq(st->checkpoint, 30);
    proj_status_free(st);
    check_count_view();
    cr_assert_eq(count_view_dirs(), 1);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s-views'", copy, copy);
    cr_assert_eq(system(cmd), 0);
}

Test(proj_rebuild, delete_while_rebuilding_removes_both_generations)
{
    struct proj_cfg cfg = {.batch_events = 8};
    pfx_close();
    pfx_open(&cfg);
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(append_typed(100), 0);
    }
    cr_assert_eq(proj_rebuild(pfx.mgr, "ct", NULL, NULL), 0);
    cr_assert_eq(proj_delete(pfx.mgr, "ct", NULL), 0);
    cr_assert_eq(count_view_dirs(), 0);
    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get("ct", "t1", UINT64_MAX, &e), AN_ENOTFOUND);
    pfx_close();
    pfx_open(&cfg);
    Annals__V1__ListProjectionsResponse *list = NULL;
    cr_assert_eq(proj_list(pfx.mgr, &list), 0);
    cr_assert_eq(list->n_projections, 0);
    proj_list_free(list);
}

/* ---- FAULTED ---- */

static uint64_t append_big(int n)
{
    char data[2200];
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        int k = snprintf(data, sizeof(data), "{\"k%d\": \"", i);
        memset(data + k, 'x', 2000);
        snprintf(data + k + 2000, sizeof(data) - (size_t)k - 2000, "\"}");
        char stream[32];
        snprintf(stream, sizeof(stream), "big-%d", i % 7);
        pos = pfx_append(stream, "Grew", data);
    }
    return pos;
}

static Annals__V1__ProjectionStatus *wait_state(const char *name, int state)
{
    for (int i = 0; i < 3000; i++) {
        Annals__V1__ProjectionStatus *st = pfx_status(name);
        if ((int)st->state == state) {
            return st;
        }
        proj_status_free(st);
        usleep(10000);
    }
    cr_assert_fail("%s never reached state %d", name, state);
    return NULL;
}

Test(proj_rebuild, a_full_view_map_faults_and_a_restart_with_room_retries)
{
    struct proj_cfg small = {.view_max_bytes = 512u << 10, .batch_events = 16};
    pfx_close();
    pfx_open(&small);
    struct pdef p;
    pdef_init(&p, "state", K_STATE, NULL, NULL, false);
    pfx_create(&p);
    uint64_t head = append_big(400); /* ~400 versions that grow to 400 keys * 2 KB */
    Annals__V1__ProjectionStatus *st = wait_state("state", S_FAULTED);
    cr_assert(strstr(st->error, "AN_EFULL"), "error: %s", st->error);
    cr_assert_lt(st->checkpoint, head);
    uint64_t ck = st->checkpoint;
    proj_status_free(st);

    /* still answers from what it applied */
    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get("state", "big-1", UINT64_MAX, &e), 0);
    proj_entry_free(e);
    /* a wait it could never end is refused at once, not at its deadline */
    struct proj_read q = {.min_position = head, .deadline_ns = proj_deadline_after(5000000000)};
    int64_t t0 = proj_deadline_after(0);
    cr_assert_eq(proj_get(pfx.mgr, "state", "big-1", 5, &q, &e), AN_EUNAVAIL);
    cr_assert_lt(proj_deadline_after(0) - t0, 1000000000, "it waited for the deadline");

    /* a Rebuild at the same cap fails the same way, and says so */
    cr_assert_eq(proj_rebuild(pfx.mgr, "state", NULL, NULL), 0);
    st = wait_state("state", S_FAULTED);
    cr_assert(strstr(st->error, "rebuild"), "error: %s", st->error);
    cr_assert_eq(st->checkpoint, ck);
    proj_status_free(st);

    /* a restart with room retries and catches up */
    struct proj_cfg big = {.batch_events = 16};
    pfx_close();
    pfx_open(&big);
    pfx_wait("state", head);
    st = pfx_status("state");
    cr_assert_eq(st->state, S_RUNNING, "%s", st->error);
    cr_assert_eq(st->error[0], '\0');
    proj_status_free(st);
    struct fx_evs log;
    pm_load(&log);
    json_t *model = pm_fold(&log, &p.d, log.n);
    json_t *view = pfx_scan_all("state", UINT64_MAX);
    pm_assert_equal(view, model, "state after the retry");
    json_decref(model);
    json_decref(view);
    fx_evs_free(&log);
    /* and a Rebuild with room succeeds */
    cr_assert_eq(proj_rebuild(pfx.mgr, "state", NULL, NULL), 0);
    st = wait_rebuilt("state", NULL);
    cr_assert_eq(st->state, S_RUNNING, "%s", st->error);
    proj_status_free(st);
    cr_assert_eq(count_view_dirs(), 1);
}

/* ---- view lifetime ---- */

struct in_flight {
    bool deleted_during;
    bool dir_during;
    bool recreated;
    int n;
};

static bool delete_mid_scan(void *arg, const Annals__V1__ViewEntry *e)
{
    struct in_flight *f = arg;
    (void)e;
    if (f->n++ == 0) {
        /* the scan holds the view: Delete returns, the files stay until it ends */
        f->deleted_during = proj_delete(pfx.mgr, "ct", NULL) == 0;
        f->dir_during = dir_exists("ct.1");
        /* and the name is taken again at once: its new view must not
         * share a directory with the one still being read */
        struct pdef p;
        pdef_init(&p, "ct", K_STREAMS, NULL, NULL, false);
        f->recreated = proj_create(pfx.mgr, &p.d, NULL, NULL) == 0;
    }
    return true;
}

Test(proj_rebuild, a_read_in_flight_keeps_a_deleted_view_until_it_ends)
{
    struct pdef p;
    pdef_init(&p, "ct", K_COUNT, "$type", NULL, false);
    pfx_create(&p);
    cr_assert_eq(append_typed(30), 0);
    pfx_wait("ct", log_head(fx.env));
    struct in_flight f = {0};
    struct proj_scan q = {0};
    cr_assert_eq(proj_scan(pfx.mgr, "ct", &q, delete_mid_scan, &f, NULL, NULL), 0);
    cr_assert(f.deleted_during);
    cr_assert(f.dir_during, "the view's files went while a scan was reading them");
    cr_assert_eq(f.n, 3, "the scan saw %d of the 3 keys", f.n);
    cr_assert_not(dir_exists("ct.1"), "the deleted view's files outlived the last reader");
    cr_assert(f.recreated);
    cr_assert(dir_exists("ct.2"), "the new ct reused the generation being read");
    /* the new ct (STREAMS) works on its own files */
    pfx_wait("ct", log_head(fx.env));
    Annals__V1__ViewEntry *e = NULL;
    cr_assert_eq(pfx_get("ct", "s-1", UINT64_MAX, &e), 0);
    cr_assert(e->found);
    proj_entry_free(e);
    cr_assert_eq(pfx_get("ct", "t1", UINT64_MAX, &e), 0);
    cr_assert_not(e->found);
    proj_entry_free(e);
    pfx_close();
    struct proj_cfg cfg = {0};
    pfx_open(&cfg);
    pfx_wait("ct", log_head(fx.env));
    cr_assert_eq(count_view_dirs(), 1);
}

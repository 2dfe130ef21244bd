/*
 * test_backup.c - Admin.Backup while writers run, a server started on the
 * copy, and `annals verify` on good and broken copies. A real annalsd,
 * through libannals and the real `annals` binary.
 */
#include <criterion/criterion.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;
static struct harness h2;

static void teardown(void)
{
    h_cleanup(&h);
    h_cleanup(&h2);
}

TestSuite(backup, .fini = teardown, .timeout = 180);

#define WRITERS 8

struct writer {
    const char *addr;
    int index;
    atomic_int *stop;
    atomic_int ok;               /* read by the test while it writes */
};

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    an_client *c;
    char stream[32];
    snprintf(stream, sizeof(stream), "w-%d", w->index);
    cr_assert_eq(an_connect(w->addr, NULL, &c), 0);
    while (!atomic_load(w->stop)) {
        struct an_event e = {.type = "Written", .data = "{\"x\":1}", .data_len = 7};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        if (an_append(c, &sa, 1, NULL, NULL) == 0) {
            atomic_fetch_add(&w->ok, 1);
        }
    }
    an_close(c);
    return NULL;
}

/* Every event up to `upto` of c's log: ids into out (16 bytes each). */
static size_t read_ids(an_client *c, uint64_t upto, uint8_t *out, size_t cap)
{
    struct an_read_all_opts o = {.max_count = (uint32_t)upto};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    size_t n = 0;
    cr_assert_eq(an_read_all(c, &o, &it), 0);
    int rc;
    while ((rc = an_iter_next(it, &e, NULL)) == 1) {
        cr_assert_eq(e->global_position, n + 1, "a gap at %zu", n + 1);
        cr_assert_lt(n, cap);
        memcpy(out + 16 * n, e->id.data, 16);
        n++;
    }
    cr_assert_eq(rc, 0);
    an_iter_free(it);
    return n;
}

static int run_cli(const char *args, char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", ANNALS_CLI_PATH, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void backup_dir(char *dest, size_t cap)
{
    snprintf(dest, cap, "/tmp/annals-backup-%d-%ld", (int)getpid(), (long)random());
}

Test(backup, a_copy_taken_under_writers_holds_every_event_up_to_its_position)
{
    h_start(&h, NULL);
    struct an_projection_def d = {.name = "per_stream", .kind = AN_PROJ_COUNT,
                                  .key = "$stream"};
    cr_assert_eq(an_projection_create(h.client, &d, NULL, NULL), 0);
    atomic_int stop = 0;
    struct writer w[WRITERS];
    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){.addr = h.addr, .index = i, .stop = &stop};
        pthread_create(&t[i], NULL, write_loop, &w[i]);
    }
    usleep(300000);
    char dest[256];
    backup_dir(dest, sizeof(dest));
    uint64_t pos = 0;
    struct an_error err;
    int before = 0;
    for (int i = 0; i < WRITERS; i++) {
        before += atomic_load(&w[i].ok);
    }
    cr_assert_eq(an_backup(h.client, dest, NULL, NULL, &pos, &err), 0, "%s", err.detail);
    usleep(200000);
    atomic_store(&stop, 1);
    int total = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        total += atomic_load(&w[i].ok);
    }
    cr_assert_gt(pos, 0);
    cr_assert_gt(total, before, "the writers went on during the backup");
    cr_assert_geq((uint64_t)total, pos);

    /* the original's first `pos` events, and the copy's, are the same */
    size_t cap = (size_t)total + 16;
    uint8_t *a = malloc(16 * cap);
    uint8_t *b = malloc(16 * cap);
    cr_assert_eq(read_ids(h.client, pos, a, cap), pos);
    char data[300];
    snprintf(data, sizeof(data), "%s", dest);
    const char *flags[] = {"--data", data, NULL};
    h_start(&h2, flags);
    size_t n = read_ids(h2.client, 0, b, cap);
    cr_assert_eq(n, pos, "the copy holds %zu events, the backup said %llu", n,
                 (unsigned long long)pos);
    cr_assert_eq(memcmp(a, b, 16 * n), 0, "the copy's events differ from the original's");
    /* the copied view catches up and equals the copy's log, stream by stream */
    for (int i = 0; i < WRITERS; i++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "w-%d", i);
        struct an_stream_info si;
        uint64_t want = an_get_stream(h2.client, stream, NULL, &si, NULL) == 0
                            ? si.event_count : 0;
        struct an_view_entry e;
        cr_assert_eq(an_get_view(h2.client, "per_stream", stream, NULL, pos, &e, &err), 0, "%s",
                     err.detail);
        const char *cnt = e.found ? strstr(e.value, "\"count\":") : NULL;
        uint64_t got = cnt ? strtoull(cnt + 8, NULL, 10) : 0;
        cr_assert_eq(got, want, "stream %s: the view counts %llu, the copy's log holds %llu",
                     stream, (unsigned long long)got, (unsigned long long)want);
        an_view_entry_free(&e);
    }
    h_stop(&h2);
    free(a);
    free(b);

    char out[8192];
    char args[600];
    snprintf(args, sizeof(args), "verify '%s'", dest);
    cr_assert_eq(run_cli(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, ": ok (") != NULL, "%s", out);
    snprintf(args, sizeof(args), "rm -rf '%s'", dest);
    cr_assert_eq(system(args), 0);
}

Test(backup, verify_names_what_broke_in_a_damaged_copy)
{
    h_start(&h, NULL);
    for (int i = 0; i < 50; i++) {
        struct an_event e = {.type = "Written", .data = "{}", .data_len = 2};
        struct an_stream_append sa = {.stream = "d-1", .events = &e, .n_events = 1};
        cr_assert_eq(an_append(h.client, &sa, 1, NULL, NULL), 0);
    }
    char dest[256];
    backup_dir(dest, sizeof(dest));
    cr_assert_eq(an_backup(h.client, dest, NULL, NULL, NULL, NULL), 0);
    /* take event 20 out of the copy's log, as a lost page would */
    char path[400];
    snprintf(path, sizeof(path), "%s/log", dest);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    cr_assert_eq(mdb_env_open(env, path, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "events", MDB_INTEGERKEY, &dbi), 0);
    uint64_t k = 20;
    MDB_val key = {sizeof(k), &k};
    cr_assert_eq(mdb_del(txn, dbi, &key, NULL), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    char out[8192];
    char args[600];
    snprintf(args, sizeof(args), "verify '%s'", dest);
    cr_assert_eq(run_cli(args, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "failed the check") != NULL, "%s", out);
    cr_assert(strstr(out, "position") != NULL, "the report does not name a position: %s", out);
    snprintf(args, sizeof(args), "rm -rf '%s'", dest);
    cr_assert_eq(system(args), 0);
}

Test(backup, a_bad_destination_is_refused_and_nothing_is_written)
{
    h_start(&h, NULL);
    struct an_error err;
    cr_assert_eq(an_backup(h.client, "relative/dir", NULL, NULL, NULL, &err), AN_EINVAL);
    cr_assert(strstr(err.detail, "absolute") != NULL, "%s", err.detail);
    cr_assert_eq(an_backup(h.client, h.dir, NULL, NULL, NULL, &err), AN_EINVAL);
    cr_assert(strstr(err.detail, "exists") != NULL, "%s", err.detail);
    cr_assert_eq(an_backup(h.client, "/nonexistent-annals-parent/x", NULL, NULL, NULL, &err),
                 AN_EINVAL);
    cr_assert(access("/nonexistent-annals-parent", F_OK) != 0);
}

/* ---- a log restored alone ---- */

static void append_to(an_client *c, int n)
{
    for (int i = 0; i < n; i++) {
        char stream[16];
        snprintf(stream, sizeof(stream), "r-%d", i % 2);
        struct an_event e = {.type = "R", .data = "{}", .data_len = 2};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        cr_assert_eq(an_append(c, &sa, 1, NULL, NULL), 0);
    }
}

static Annals__V1__GroupStatus *group_status(an_client *c)
{
    Annals__V1__GroupStatus *st = NULL;
    struct an_error err;
    cr_assert_eq(an_group_get(c, "g", &st, &err), 0, "%s", err.detail);
    return st;
}

/* Group "g"'s status once it has at least `acked` acks and its checkpoint
 * at least `checkpoint` (5 s at most; NULL then). Caller frees. */
static Annals__V1__GroupStatus *group_until(an_client *c, uint64_t acked, uint64_t checkpoint)
{
    for (int i = 0; i < 500; i++) {
        Annals__V1__GroupStatus *st = group_status(c);
        if (st->acked >= acked && st->checkpoint >= checkpoint) {
            return st;
        }
        an_group_status_free(st);
        usleep(10000);
    }
    return NULL;
}

/*
 * The data directory's log replaced by an older backup's, its views and
 * groups left as they were (ahead of it): the events the log takes next
 * have positions the view and the group had already passed in the other
 * history. The view is folded again from this log, and the group hands
 * out every new event, none skipped for a mark of the old history.
 */
Test(backup, a_log_restored_without_its_views_and_groups_is_folded_and_handed_out_anew)
{
    h_start(&h, NULL);
    append_to(h.client, 10);
    char dest[256];
    backup_dir(dest, sizeof(dest));
    uint64_t pos = 0;
    struct an_error err;
    cr_assert_eq(an_backup(h.client, dest, NULL, NULL, &pos, &err), 0, "%s", err.detail);
    cr_assert_eq(pos, 10);
    append_to(h.client, 20);
    struct an_projection_def d = {.name = "per_stream", .kind = AN_PROJ_COUNT,
                                  .key = "$stream"};
    cr_assert_eq(an_projection_create(h.client, &d, NULL, NULL), 0);
    struct an_view_entry v;
    cr_assert_eq(an_get_view(h.client, "per_stream", "r-0", NULL, 30, &v, &err), 0, "%s",
                 err.detail);
    an_view_entry_free(&v);

    /* the group settles 1..30 but 20: checkpoint 19, marks for 21..30 */
    struct an_group_def gd = {.name = "g"};
    cr_assert_eq(an_group_create(h.client, &gd, NULL, &err), 0, "%s", err.detail);
    an_consumer *k;
    cr_assert_eq(an_consumer_open(h.client, "g", 64, &k), 0);
    for (int got = 0; got < 30;) {
        struct an_delivery dv;
        int rc = an_consumer_next(k, 5000, &dv, &err);
        cr_assert_eq(rc, 1, "delivery %d: %s", got + 1, an_errname(rc));
        got++;
        if (dv.event->global_position != 20) {
            cr_assert_eq(an_consumer_ack(k, dv.event->global_position), 0);
        }
    }
    cr_assert_eq(an_consumer_flush(k, &err), 0, "%s", err.detail);
    Annals__V1__GroupStatus *st = group_until(h.client, 29, 0);
    cr_assert_not_null(st, "the acks did not arrive");
    cr_assert_eq(st->checkpoint, 19);
    an_group_status_free(st);
    cr_assert_eq(h_stop(&h), 0);
    an_consumer_close(k);

    /* the log alone goes back to the backup's, 10 events */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/data/log' && cp -r '%s/log' '%s/data/log'", h.dir,
             dest, h.dir);
    cr_assert_eq(system(cmd), 0);
    h_restart(&h);
    an_close(h.client);
    h.client = h_client(&h);
    append_to(h.client, 25); /* positions 11..35, other events than before */

    /* the view counts this log's events, not the other history's */
    for (int s = 0; s < 2; s++) {
        char stream[16];
        snprintf(stream, sizeof(stream), "r-%d", s);
        struct an_stream_info si;
        cr_assert_eq(an_get_stream(h.client, stream, NULL, &si, NULL), 0);
        cr_assert_eq(an_get_view(h.client, "per_stream", stream, NULL, 35, &v, &err), 0, "%s",
                     err.detail);
        cr_assert(v.found);
        const char *cnt = strstr(v.value, "\"count\":");
        cr_assert_not_null(cnt, "%s", v.value);
        cr_assert_eq(strtoull(cnt + 8, NULL, 10), si.event_count, "stream %s: %s", stream,
                     v.value);
        an_view_entry_free(&v);
    }

    /* the group hands out exactly 11..35 */
    bool seen[36] = {false};
    cr_assert_eq(an_consumer_open(h.client, "g", 64, &k), 0);
    for (int got = 0; got < 25;) {
        struct an_delivery dv;
        int rc = an_consumer_next(k, 5000, &dv, &err);
        cr_assert_eq(rc, 1, "%d of 25 handed out: %s", got, an_errname(rc));
        uint64_t p = dv.event->global_position;
        cr_assert(p >= 11 && p <= 35, "position %llu handed out", (unsigned long long)p);
        cr_assert(!seen[p], "position %llu twice", (unsigned long long)p);
        seen[p] = true;
        got++;
        cr_assert_eq(an_consumer_ack(k, p), 0);
    }
    cr_assert_eq(an_consumer_flush(k, &err), 0, "%s", err.detail);
    struct an_delivery dv;
    cr_assert_eq(an_consumer_next(k, 300, &dv, &err), AN_SUB_TIMEOUT, "a 26th event");
    st = group_until(h.client, 0, 35);
    cr_assert_not_null(st, "the checkpoint did not reach 35");
    an_group_status_free(st);
    an_consumer_close(k);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dest);
    cr_assert_eq(system(cmd), 0);
}

/*
 * log_env.c - opening and closing the event log, its map size, syncs and
 * durability bookkeeping, statistics, and the life cycle of readers.
 *
 * The map: LMDB maps the whole file and needs a map size up front. The env
 * starts with a modest map and grows it when a write transaction reports
 * MDB_MAP_FULL, up to max_size_bytes. mdb_env_set_mapsize must not run
 * while any transaction in the process is live, so readers hold map_lock
 * shared between log_reader_begin and log_reader_end (one short batch), and
 * the writer takes it exclusive for the resize. The lock prefers writers,
 * so a stream of readers cannot starve a resize.
 */
#include "log_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG__MAP_DEFAULT (64ull << 20)
#define LOG__MAP_STEP_MAX (1ull << 30)
#define LOG__FORMAT "annals-log-3"

/* ---- errors ---- */

int log__from_mdb(int mdb_rc, const char *what, char *detail)
{
    switch (mdb_rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return AN_ENOTFOUND;
    case MDB_MAP_FULL:
        log__detail(detail, "%s: log map is full", what);
        return AN_EFULL;
    case MDB_READERS_FULL:
        log__detail(detail, "%s: all LMDB reader slots are in use", what);
        return AN_EBUSY;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_VALSIZE:
        log__detail(detail, "%s: %s", what, mdb_strerror(mdb_rc));
        return AN_ECORRUPT;
    case ENOMEM:
        log__detail(detail, "%s: out of memory", what);
        return AN_ENOMEM;
    case ENOSPC:
        log__detail(detail, "%s: no space left on the device", what);
        return AN_EFULL;
    default:
        log__detail(detail, "%s: %s", what, mdb_strerror(mdb_rc));
        return AN_EIO;
    }
}

/* ---- preallocation ----
 *
 * Most commits put their new pages past the end of data.mdb, and on ext4
 * an fdatasync after a write that grew the file must also write the inode
 * (its size, its new blocks) before the cache flush: one more device round
 * trip per commit. Measured on this machine's disk (ext4 without a
 * journal), 3 pages then fdatasync in a loop: 0.19-0.20 ms growing the
 * file, 0.11-0.12 ms over blocks already written (fallocate's unwritten
 * extents: 0.19, no better, as the first write converts them). So the
 * writer keeps the file ahead of LMDB's last page by PRE_AHEAD bytes of
 * written zeros, one PRE_CHUNK at a time when it has nothing else to do.
 *
 * The zeros go through a descriptor of its own opened O_DIRECT, so they
 * leave no dirty pages for the next commit's fdatasync to write (1 MiB
 * took 0.6 ms here), and only past both the file's end and LMDB's last
 * page, between commits, on the writer thread: nothing LMDB has written
 * or will write before the next commit is touched. LMDB on Linux reads
 * nothing past its last page and never relies on the file's size, so a
 * longer file changes nothing for it, a copy, or a crash. The size change
 * becomes durable with the next commit's fdatasync, as a growing commit's
 * own would. A failure (ENOSPC, a filesystem without O_DIRECT) costs
 * nothing but the gain: LMDB then grows the file itself, as before, and
 * the writer tries again PRE_RETRY_MS later. */

#define PRE_CHUNK (1u << 20)
#define PRE_AHEAD (4ull << 20)
#define PRE_RETRY_MS 1000

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void prealloc_open(log_env *env)
{
    char path[4096];
    struct stat st;
    env->pre_fd = -1;
    snprintf(path, sizeof(path), "%s/data.mdb", env->dir);
    int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0) {
        return; /* no O_DIRECT here: LMDB grows the file itself */
    }
    if (fstat(fd, &st) != 0 || posix_memalign(&env->pre_zeros, 4096, PRE_CHUNK) != 0) {
        env->pre_zeros = NULL;
        close(fd);
        return;
    }
    memset(env->pre_zeros, 0, PRE_CHUNK);
    env->pre_fd = fd;
    env->pre_end = (uint64_t)st.st_size;
}

/* Where LMDB's pages end (the last commit's), and where the zeros may go
 * up to: PRE_AHEAD past it, within the map. */
static uint64_t lmdb_end(log_env *env, uint64_t *target)
{
    MDB_envinfo info;
    mdb_env_info(env->mdb, &info);
    uint64_t end = ((uint64_t)info.me_last_pgno + 1) * env->page_bytes;
    uint64_t map = atomic_load(&env->map_bytes);
    *target = end + PRE_AHEAD < map ? end + PRE_AHEAD : map;
    return end;
}

bool log_prealloc_due(log_env *env)
{
    if (env->pre_fd < 0 || (env->pre_retry_ms && mono_ms() < env->pre_retry_ms)) {
        return false;
    }
    uint64_t target;
    uint64_t end = lmdb_end(env, &target);
    uint64_t have = env->pre_end > end ? env->pre_end : end;
    return have + PRE_CHUNK <= target;
}

void log_prealloc(log_env *env)
{
    if (!log_prealloc_due(env)) {
        return;
    }
    struct stat st;
    if (fstat(env->pre_fd, &st) != 0) {
        env->pre_retry_ms = mono_ms() + PRE_RETRY_MS;
        return;
    }
    uint64_t target;
    uint64_t end = lmdb_end(env, &target);
    uint64_t from = (uint64_t)st.st_size > end ? (uint64_t)st.st_size : end;
    from = (from + 4095) & ~4095ull; /* O_DIRECT: aligned offsets */
    env->pre_end = from;
    if (from + PRE_CHUNK > target) {
        return;
    }
    ssize_t n = pwrite(env->pre_fd, env->pre_zeros, PRE_CHUNK, (off_t)from);
    if (n != (ssize_t)PRE_CHUNK) {
        env->pre_retry_ms = mono_ms() + PRE_RETRY_MS;
        if (n > 0) {
            env->pre_end = from + (uint64_t)n;
        }
        return;
    }
    env->pre_retry_ms = 0;
    env->pre_end = from + PRE_CHUNK;
}

/* ---- opening ---- */

static int open_dbs(log_env *env, char *detail)
{
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    MDB_cursor *c = NULL;
    MDB_val k;
    MDB_val v;
    int rc = mdb_txn_begin(env->mdb, NULL, 0, &txn);
    if (rc) {
        return log__from_mdb(rc, "begin", detail);
    }
    MDB_stat st;
    MDB_dbi main_dbi;
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (!rc) {
        rc = mdb_stat(txn, main_dbi, &st);
    }
    if (rc) {
        goto out_abort;
    }
    bool fresh = st.ms_entries == 0;
    rc = mdb_dbi_open(txn, "meta", fresh ? MDB_CREATE : 0, &meta);
    if (rc == MDB_NOTFOUND) {
        log__detail(detail, "%s holds an LMDB env that is not an Annals log", env->dir);
        mdb_txn_abort(txn);
        return AN_ECORRUPT;
    }
    if (rc) {
        goto out_abort;
    }
    k = (MDB_val){.mv_size = 6, .mv_data = "format"};
    if (fresh) {
        v = (MDB_val){.mv_size = strlen(LOG__FORMAT), .mv_data = LOG__FORMAT};
        rc = mdb_put(txn, meta, &k, &v, 0);
    } else {
        rc = mdb_get(txn, meta, &k, &v);
        if (!rc && (v.mv_size != strlen(LOG__FORMAT) ||
                    memcmp(v.mv_data, LOG__FORMAT, v.mv_size) != 0)) {
            log__detail(detail, "%s: unknown log format '%.*s' (want %s)", env->dir,
                        (int)(v.mv_size > 40 ? 40 : v.mv_size), (const char *)v.mv_data,
                        LOG__FORMAT);
            mdb_txn_abort(txn);
            return AN_ECORRUPT;
        }
    }
    if (rc) {
        goto out_abort;
    }
    unsigned cf = MDB_CREATE;
    if ((rc = mdb_dbi_open(txn, "events", cf | MDB_INTEGERKEY, &env->dbi_events)) ||
        (rc = mdb_dbi_open(txn, "streams", cf, &env->dbi_streams)) ||
        (rc = mdb_dbi_open(txn, "dels", cf, &env->dbi_dels)) ||
        (rc = mdb_dbi_open(txn, "ids", cf, &env->dbi_ids))) {
        goto out_abort;
    }

    /* the writer's starting point: the last event */
    rc = mdb_cursor_open(txn, env->dbi_events, &c);
    if (rc) {
        goto out_abort;
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0) {
        struct log_event ev;
        if (k.mv_size != 8 || log__peek_value(v.mv_data, v.mv_size, &ev)) {
            log__detail(detail, "%s: the last event cannot be decoded", env->dir);
            mdb_cursor_close(c);
            mdb_txn_abort(txn);
            return AN_ECORRUPT;
        }
        memcpy(&env->w_head, k.mv_data, 8);
        env->w_last_ts = ev.recorded_at_ns;
    } else if (rc != MDB_NOTFOUND) {
        goto out_abort;
    }
    mdb_cursor_close(c);
    c = NULL;
    rc = mdb_txn_commit(txn);
    if (rc) {
        return log__from_mdb(rc, "open", detail);
    }
    return 0;

out_abort:
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return log__from_mdb(rc, "open", detail);
}

int log_open(const struct log_cfg *cfg, log_env **out, char *detail)
{
    log_env *env = NULL;
    int rc;
    if (!cfg || !cfg->dir || !cfg->dir[0]) {
        log__detail(detail, "log_open: no directory given");
        return AN_EINVAL;
    }
    if (mkdir(cfg->dir, 0755) != 0 && errno != EEXIST) {
        log__detail(detail, "cannot create %s: %s", cfg->dir, strerror(errno));
        return AN_EIO;
    }
    env = calloc(1, sizeof(*env));
    if (!env || !(env->dir = strdup(cfg->dir))) {
        free(env);
        log__detail(detail, "log_open: out of memory");
        return AN_ENOMEM;
    }
    env->pre_fd = -1;
    env->max_size_bytes = cfg->max_size_bytes;
    env->max_event_bytes = cfg->max_event_bytes ? cfg->max_event_bytes : LOG_EVENT_MAX_DEFAULT;
    env->max_request_bytes =
        cfg->max_request_bytes ? cfg->max_request_bytes : LOG_REQUEST_MAX_DEFAULT;
    log__rng_seed(&env->w_rng);

    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&env->map_lock, &ra);
    pthread_rwlockattr_destroy(&ra);

    uint64_t map = cfg->initial_map_bytes ? cfg->initial_map_bytes : LOG__MAP_DEFAULT;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/data.mdb", cfg->dir);
    if (stat(path, &st) == 0 && (uint64_t)st.st_size + (16ull << 20) > map) {
        map = (uint64_t)st.st_size + (16ull << 20);
    }
    if (env->max_size_bytes && map > env->max_size_bytes) {
        map = env->max_size_bytes;
    }

    rc = mdb_env_create(&env->mdb);
    if (rc) {
        rc = log__from_mdb(rc, "mdb_env_create", detail);
        goto out_free;
    }
    mdb_env_set_maxdbs(env->mdb, 8);
    mdb_env_set_maxreaders(env->mdb, cfg->max_readers ? cfg->max_readers : 1024);
    mdb_env_set_mapsize(env->mdb, (size_t)map);
    rc = mdb_env_open(env->mdb, cfg->dir, MDB_NOTLS | MDB_NOMETASYNC, 0644);
    if (rc) {
        char what[4200];
        snprintf(what, sizeof(what), "cannot open the log in %s", cfg->dir);
        rc = log__from_mdb(rc, what, detail);
        goto out_close;
    }
    MDB_envinfo info;
    MDB_stat mst;
    mdb_env_info(env->mdb, &info);
    mdb_env_stat(env->mdb, &mst);
    atomic_store(&env->map_bytes, (uint64_t)info.me_mapsize);
    env->page_bytes = mst.ms_psize;

    rc = open_dbs(env, detail);
    if (rc) {
        goto out_close;
    }
    /* whatever is in the file now counts as durable from here on */
    rc = mdb_env_sync(env->mdb, 1);
    if (rc) {
        rc = log__from_mdb(rc, "sync", detail);
        goto out_close;
    }
    prealloc_open(env);
    env->w_pending_head = env->w_head;
    atomic_store(&env->committed_head, env->w_head);
    atomic_store(&env->durable_head, env->w_head);
    *out = env;
    return 0;

out_close:
    mdb_env_close(env->mdb);
out_free:
    pthread_rwlock_destroy(&env->map_lock);
    free(env->dir);
    free(env);
    return rc;
}

void log_close(log_env *env)
{
    if (!env) {
        return;
    }
    if (env->w_seq != atomic_load(&env->durable_seq)) {
        log_sync(env);
    }
    mdb_env_close(env->mdb);
    if (env->pre_fd >= 0) {
        close(env->pre_fd);
    }
    free(env->pre_zeros);
    pthread_rwlock_destroy(&env->map_lock);
    free(env->w_state);
    free(env->w_streams);
    free(env->dir);
    free(env);
}

/* ---- map size ---- */

int log__grow(log_env *env, char *detail)
{
    uint64_t cur = atomic_load(&env->map_bytes);
    uint64_t step = cur < LOG__MAP_STEP_MAX ? cur : LOG__MAP_STEP_MAX;
    uint64_t next = cur + step;
    if (env->max_size_bytes && next > env->max_size_bytes) {
        next = env->max_size_bytes;
    }
    if (next <= cur) {
        log__detail(detail, "log is full: it reached its size cap of %llu bytes (max size)",
                    (unsigned long long)env->max_size_bytes);
        return AN_EFULL;
    }
    pthread_rwlock_wrlock(&env->map_lock);
    int rc = mdb_env_set_mapsize(env->mdb, (size_t)next);
    if (rc == 0) {
        MDB_envinfo info;
        mdb_env_info(env->mdb, &info);
        atomic_store(&env->map_bytes, (uint64_t)info.me_mapsize);
    }
    pthread_rwlock_unlock(&env->map_lock);
    if (rc) {
        return log__from_mdb(rc, "growing the map", detail);
    }
    return 0;
}

/* ---- durability ---- */

void log__raise(_Atomic uint64_t *a, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(a, memory_order_relaxed);
    while (cur < v &&
           !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_release,
                                                  memory_order_relaxed)) {
    }
}

/*
 * Commit k's durable head is always raised before the durable sequence is
 * raised to k (log__raise_durable), so a thread that sees the sequence at k
 * (acquire) also sees a head at least k's: a caller that answers appends
 * once log_durable_seq covers them never answers before log_head, which
 * bounds every read, shows them.
 */
void log__raise_durable(log_env *env, uint64_t seq, uint64_t head)
{
    log__raise(&env->durable_head, head);
    log__raise(&env->durable_seq, seq);
}

int log_sync(log_env *env)
{
    int rc = mdb_env_sync(env->mdb, 1);
    if (rc) {
        return log__from_mdb(rc, "sync", NULL);
    }
    log__raise_durable(env, env->w_seq, env->w_head);
    return 0;
}

int log_sync_through(log_env *env, uint64_t seq, uint64_t head)
{
    if (atomic_load_explicit(&env->durable_seq, memory_order_acquire) >= seq) {
        /* made durable by another sync or by a later commit's data sync,
         * whose thread raised the head first; raised here as well, so the
         * caller's own head is in place whoever got there */
        log__raise(&env->durable_head, head);
        return 0;
    }
    /* mdb_env_sync is an fdatasync of the data file; it takes no lock */
    int rc = mdb_env_sync(env->mdb, 1);
    if (rc) {
        return log__from_mdb(rc, "sync", NULL);
    }
    log__raise_durable(env, seq, head);
    return 0;
}

uint64_t log_committed_head(const log_env *env)
{
    return atomic_load_explicit(&env->committed_head, memory_order_acquire);
}

uint64_t log_durable_seq(const log_env *env)
{
    return atomic_load_explicit(&env->durable_seq, memory_order_acquire);
}

uint64_t log_committed_seq(const log_env *env)
{
    return atomic_load_explicit(&env->committed_seq, memory_order_acquire);
}

uint64_t log_head(const log_env *env)
{
    return atomic_load_explicit(&env->durable_head, memory_order_acquire);
}

/* ---- statistics ---- */

int log_stats(log_env *env, struct log_stats *out)
{
    MDB_envinfo info;
    MDB_txn *txn = NULL;
    MDB_stat st;
    mdb_env_info(env->mdb, &info);
    pthread_rwlock_rdlock(&env->map_lock);
    int rc = mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &txn);
    uint64_t live_pages = 2; /* the two meta pages */
    if (!rc) {
        /* pages the trees hold now; the rest of the file is free pages */
        MDB_dbi dbis[] = {env->dbi_events, env->dbi_ids, env->dbi_dels,
                          0 /* the freelist tree */, 1 /* the main db */};
        MDB_stat ds;
        for (size_t i = 0; !rc && i < sizeof(dbis) / sizeof(dbis[0]); i++) {
            rc = mdb_stat(txn, dbis[i], &ds);
            live_pages += ds.ms_branch_pages + ds.ms_leaf_pages + ds.ms_overflow_pages;
        }
        if (!rc) {
            rc = mdb_stat(txn, env->dbi_streams, &st);
            live_pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
        }
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&env->map_lock);
    if (rc) {
        return log__from_mdb(rc, "stats", NULL);
    }
    *out = (struct log_stats){
        .head = log_head(env),
        .committed_head = atomic_load(&env->committed_head),
        .streams = st.ms_entries,
        .map_bytes = atomic_load(&env->map_bytes),
        .used_bytes = ((uint64_t)info.me_last_pgno + 1) * env->page_bytes,
        .live_bytes = live_pages * env->page_bytes,
        .max_size_bytes = env->max_size_bytes,
        .readers = info.me_numreaders,
    };
    return 0;
}

/* ---- readers ---- */

int log_reader_open(log_env *env, log_reader **out)
{
    log_reader *rd = calloc(1, sizeof(*rd));
    if (!rd) {
        return AN_ENOMEM;
    }
    rd->env = env;
    pthread_rwlock_rdlock(&env->map_lock);
    int rc = mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &rd->txn);
    if (!rc) {
        rc = mdb_cursor_open(rd->txn, env->dbi_events, &rd->c_events);
    }
    if (rd->txn) {
        mdb_txn_reset(rd->txn);
    }
    pthread_rwlock_unlock(&env->map_lock);
    if (rc) {
        log_reader_close(rd);
        return log__from_mdb(rc, "reader", NULL);
    }
    *out = rd;
    return 0;
}

void log_reader_close(log_reader *rd)
{
    if (!rd) {
        return;
    }
    assert(!rd->active);
    mdb_cursor_close(rd->c_events);
    if (rd->txn) {
        mdb_txn_abort(rd->txn);
    }
    free(rd);
}

int log_reader_begin(log_reader *rd)
{
    assert(!rd->active);
    pthread_rwlock_rdlock(&rd->env->map_lock);
    /* load the head before the snapshot: the snapshot then holds it all */
    rd->head = log_head(rd->env);
    int rc = mdb_txn_renew(rd->txn);
    if (!rc) {
        rc = mdb_cursor_renew(rd->txn, rd->c_events);
    }
    if (rc) {
        mdb_txn_reset(rd->txn);
        pthread_rwlock_unlock(&rd->env->map_lock);
        return log__from_mdb(rc, "read snapshot", rd->detail);
    }
    rd->active = true;
    rd->detail[0] = '\0';
    return 0;
}

void log_reader_end(log_reader *rd)
{
    if (!rd->active) {
        return;
    }
    mdb_txn_reset(rd->txn);
    rd->active = false;
    pthread_rwlock_unlock(&rd->env->map_lock);
}

uint64_t log_reader_head(const log_reader *rd)
{
    return rd->head;
}

const char *log_reader_detail(const log_reader *rd)
{
    return rd->detail;
}

/* ---- backup ---- */

int log_backup(log_env *env, const char *dest, uint64_t *head_out, uint64_t *bytes_out,
               char *detail)
{
    char path[4096];
    if (mkdir(dest, 0755) != 0) {
        log__detail(detail, "cannot create %s: %s", dest, strerror(errno));
        return AN_EIO;
    }
    /* the copy runs in a read txn: no map growth meanwhile (log__grow) */
    pthread_rwlock_rdlock(&env->map_lock);
    int rc = mdb_env_copy2(env->mdb, dest, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&env->map_lock);
    if (rc) {
        return log__from_mdb(rc, dest, detail);
    }
    /* what the copy holds: open it as a log */
    struct log_cfg cfg = {.dir = dest};
    log_env *copy = NULL;
    if ((rc = log_open(&cfg, &copy, detail))) {
        return rc;
    }
    *head_out = atomic_load(&copy->committed_head);
    log_close(copy);
    struct stat st;
    snprintf(path, sizeof(path), "%s/data.mdb", dest);
    *bytes_out = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

/*
 * proj_view.c - one generation of a view: its LMDB env, its key order, the
 * refcount that lets a rebuilt view replace it while queries still read it,
 * and the read side of GetView and ScanView.
 *
 * Keys of the "view" db are key || u64 BE position. The comparator orders
 * them by key bytes, a key before the longer keys it prefixes, then by
 * position, so all versions of a key are adjacent and ascending, and a key
 * may hold any bytes (with plain memcmp order, "a" || pos could sort after
 * "a\x00..." and split a key's versions).
 *
 * "K as of P" (proj__view_seek): MDB_SET_RANGE to the first entry at or
 * after (K, P+1), then one MDB_PREV: that entry is K's newest version at a
 * position <= P if its key is K. Two cursor steps, one of them a B-tree
 * descent: O(log n) whatever the number of versions.
 *
 * Worked example: versions ("acct-1", 3), ("acct-1", 9), ("acct-2", 5).
 * As of 8: SET_RANGE("acct-1", 9) lands on ("acct-1", 9); PREV gives
 * ("acct-1", 3). As of 2: SET_RANGE("acct-1", 3) lands on ("acct-1", 3);
 * PREV runs off the start: no value.
 */
#include "proj_int.h"

#include <errno.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---- */

uint64_t proj__be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

void proj__be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

void proj__detail(char *detail, const char *fmt, ...)
{
    if (!detail) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, PROJ_DETAIL_MAX, fmt, ap);
    va_end(ap);
}

int proj__from_mdb(int mdb_rc, const char *what, char *detail)
{
    switch (mdb_rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return AN_ENOTFOUND;
    case MDB_MAP_FULL:
        proj__detail(detail, "%s: view map is full (view_max_bytes)", what);
        return AN_EFULL;
    case MDB_READERS_FULL:
        proj__detail(detail, "%s: all LMDB reader slots are in use", what);
        return AN_EBUSY;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_VALSIZE:
        proj__detail(detail, "%s: %s", what, mdb_strerror(mdb_rc));
        return AN_ECORRUPT;
    case ENOMEM:
        proj__detail(detail, "%s: out of memory", what);
        return AN_ENOMEM;
    case ENOSPC:
        proj__detail(detail, "%s: no space left on the device", what);
        return AN_EFULL;
    default:
        proj__detail(detail, "%s: %s", what, mdb_strerror(mdb_rc));
        return AN_EIO;
    }
}

int proj__rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        return errno == ENOENT ? 0 : AN_EIO;
    }
    int rc = 0;
    struct dirent *de;
    char path[4096];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (proj__rm_rf(path)) {
                rc = AN_EIO;
            }
        } else if (unlink(path) != 0 && errno != ENOENT) {
            rc = AN_EIO;
        }
    }
    closedir(d);
    if (rmdir(dir) != 0 && errno != ENOENT) {
        rc = AN_EIO;
    }
    return rc;
}

void proj__say(proj_mgr *mgr, enum proj_log_level lvl, const char *fmt, ...)
{
    if (!mgr->cfg.log) {
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    mgr->cfg.log(mgr->cfg.log_arg, lvl, line);
}

void proj__advanced(proj_mgr *mgr)
{
    if (mgr->cfg.on_advance) {
        mgr->cfg.on_advance(mgr->cfg.advance_arg);
    }
}

int64_t proj__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t proj_deadline_after(int64_t timeout_ns)
{
    return proj__now_ns() + timeout_ns;
}

/* ---- key order ---- */

static int view_cmp(const MDB_val *a, const MDB_val *b)
{
    if (a->mv_size < 8 || b->mv_size < 8) {
        /* never written by us; any total order will do */
        size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
        int c = memcmp(a->mv_data, b->mv_data, n);
        return c ? c : (a->mv_size > b->mv_size) - (a->mv_size < b->mv_size);
    }
    size_t ka = a->mv_size - 8;
    size_t kb = b->mv_size - 8;
    int c = memcmp(a->mv_data, b->mv_data, ka < kb ? ka : kb);
    if (c) {
        return c;
    }
    if (ka != kb) {
        return ka < kb ? -1 : 1;
    }
    return memcmp((const uint8_t *)a->mv_data + ka, (const uint8_t *)b->mv_data + kb, 8);
}

void proj__vkey(uint8_t *out, const void *key, size_t len, uint64_t pos)
{
    assert(len <= PROJ_KEY_MAX);
    if (len) {
        memcpy(out, key, len); /* key may be NULL when len is 0 */
    }
    proj__be64_put(out + len, pos);
}

int proj__view_seek(MDB_cursor *c, const void *key, size_t len, uint64_t bound,
                    MDB_val *val, uint64_t *pos)
{
    uint8_t kb[PROJ_KEY_MAX + 8];
    if (len > PROJ_KEY_MAX) {
        return AN_ENOTFOUND;
    }
    proj__vkey(kb, key, len, bound == UINT64_MAX ? UINT64_MAX : bound + 1);
    MDB_val k = {.mv_size = len + 8, .mv_data = kb};
    MDB_val v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    } else if (rc == 0) {
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    }
    if (rc == MDB_NOTFOUND) {
        return AN_ENOTFOUND;
    }
    if (rc) {
        return proj__from_mdb(rc, "view seek", NULL);
    }
    if (k.mv_size != len + 8 || memcmp(k.mv_data, key, len) != 0) {
        return AN_ENOTFOUND;
    }
    *pos = proj__be64_get((const uint8_t *)k.mv_data + len);
    *val = v;
    return 0;
}

/* ---- life cycle ---- */

static void rtxn_close(struct proj__rtxn *r)
{
    mdb_cursor_close(r->c);
    mdb_txn_abort(r->txn);
}

static int read_meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc) {
        return rc;
    }
    if (v.mv_size != 8) {
        return MDB_CORRUPTED;
    }
    *out = proj__be64_get(v.mv_data);
    return 0;
}

static int open_dbs(struct proj_view *v, char *detail)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(v->env, NULL, 0, &txn);
    if (rc) {
        return proj__from_mdb(rc, "view open", detail);
    }
    if ((rc = mdb_dbi_open(txn, "view", MDB_CREATE, &v->dbi_view)) ||
        (rc = mdb_set_compare(txn, v->dbi_view, view_cmp)) ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &v->dbi_meta))) {
        goto out_abort;
    }
    MDB_val k = {.mv_size = 6, .mv_data = "format"};
    MDB_val fv;
    rc = mdb_get(txn, v->dbi_meta, &k, &fv);
    if (rc == MDB_NOTFOUND) {
        fv = (MDB_val){.mv_size = strlen(PROJ__FORMAT), .mv_data = PROJ__FORMAT};
        rc = mdb_put(txn, v->dbi_meta, &k, &fv, 0);
    } else if (rc == 0 && (fv.mv_size != strlen(PROJ__FORMAT) ||
                           memcmp(fv.mv_data, PROJ__FORMAT, fv.mv_size) != 0)) {
        proj__detail(detail, "%s: not an Annals view (format)", v->dir);
        mdb_txn_abort(txn);
        return AN_ECORRUPT;
    }
    if (rc || (rc = read_meta_u64(txn, v->dbi_meta, "checkpoint", &v->checkpoint)) ||
        (rc = read_meta_u64(txn, v->dbi_meta, "applied", &v->applied))) {
        goto out_abort;
    }
    rc = mdb_txn_commit(txn);
    return rc ? proj__from_mdb(rc, "view open", detail) : 0;

out_abort:
    mdb_txn_abort(txn);
    return proj__from_mdb(rc, "view open", detail);
}

int proj__view_open(proj_mgr *mgr, const char *name, uint64_t gen, bool latest_only,
                    bool fresh, struct proj_view **out, char *detail)
{
    struct proj_view *v = calloc(1, sizeof(*v));
    char path[4096];
    int rc;
    if (!v) {
        return AN_ENOMEM;
    }
    snprintf(path, sizeof(path), "%s/views/%s.%llu", mgr->dir, name, (unsigned long long)gen);
    v->dir = strdup(path);
    if (!v->dir) {
        free(v);
        return AN_ENOMEM;
    }
    v->gen = gen;
    v->latest_only = latest_only;
    atomic_init(&v->refs, 1);
    atomic_init(&v->doomed, false);
    if (fresh && proj__rm_rf(path) != 0) {
        proj__detail(detail, "cannot remove the old %s", path);
        rc = AN_EIO;
        goto out_free;
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        proj__detail(detail, "cannot create %s: %s", path, strerror(errno));
        rc = AN_EIO;
        goto out_free;
    }
    rc = mdb_env_create(&v->env);
    if (rc) {
        v->env = NULL;
        rc = proj__from_mdb(rc, "mdb_env_create", detail);
        goto out_free;
    }
    uint64_t map = mgr->cfg.view_max_bytes ? mgr->cfg.view_max_bytes : PROJ__VIEW_MAP_DEFAULT;
    mdb_env_set_maxdbs(v->env, 4);
    mdb_env_set_maxreaders(v->env, 1024);
    mdb_env_set_mapsize(v->env, (size_t)map);
    /* NOMETASYNC: a crash may roll back the last commit, never tear it,
     * and the checkpoint rolls back with the changes it covers */
    rc = mdb_env_open(v->env, path, MDB_NOTLS | MDB_NOMETASYNC, 0644);
    if (rc) {
        rc = proj__from_mdb(rc, path, detail);
        goto out_close;
    }
    rc = open_dbs(v, detail);
    if (rc) {
        goto out_close;
    }
    pthread_mutex_init(&v->pool_mu, NULL);
    *out = v;
    return 0;

out_close:
    mdb_env_close(v->env);
out_free:
    free(v->dir);
    free(v);
    return rc;
}

void proj__view_ref(struct proj_view *v)
{
    atomic_fetch_add(&v->refs, 1);
}

void proj__view_release(struct proj_view *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1) {
        return;
    }
    for (unsigned i = 0; i < v->n_pool; i++) {
        rtxn_close(&v->pool[i]);
    }
    pthread_mutex_destroy(&v->pool_mu);
    mdb_env_close(v->env);
    if (atomic_load(&v->doomed)) {
        proj__rm_rf(v->dir);
    }
    free(v->dir);
    free(v);
}

/* ---- reading ---- */

/* A read txn on v's latest commit, from the pool or new; *ckpt its checkpoint. */
static int begin_read(struct proj_view *v, struct proj__rtxn *r, uint64_t *ckpt)
{
    bool pooled = false;
    int rc;
    pthread_mutex_lock(&v->pool_mu);
    if (v->n_pool) {
        *r = v->pool[--v->n_pool];
        pooled = true;
    }
    pthread_mutex_unlock(&v->pool_mu);
    if (pooled) {
        rc = mdb_txn_renew(r->txn);
        if (!rc) {
            rc = mdb_cursor_renew(r->txn, r->c);
        }
        if (rc) {
            rtxn_close(r);
            return proj__from_mdb(rc, "view read", NULL);
        }
    } else {
        rc = mdb_txn_begin(v->env, NULL, MDB_RDONLY, &r->txn);
        if (rc) {
            return proj__from_mdb(rc, "view read", NULL);
        }
        rc = mdb_cursor_open(r->txn, v->dbi_view, &r->c);
        if (rc) {
            mdb_txn_abort(r->txn);
            return proj__from_mdb(rc, "view read", NULL);
        }
    }
    rc = read_meta_u64(r->txn, v->dbi_meta, "checkpoint", ckpt);
    if (rc) {
        rtxn_close(r);
        return proj__from_mdb(rc, "view read", NULL);
    }
    return 0;
}

/* Releases the snapshot and keeps the handles for the next query. */
static void end_read(struct proj_view *v, struct proj__rtxn *r)
{
    mdb_txn_reset(r->txn);
    pthread_mutex_lock(&v->pool_mu);
    bool kept = v->n_pool < PROJ__POOL;
    if (kept) {
        v->pool[v->n_pool++] = *r;
    }
    pthread_mutex_unlock(&v->pool_mu);
    if (!kept) {
        rtxn_close(r);
    }
}

int proj__view_get(struct proj_view *v, const char *key, size_t key_len, uint64_t bound,
                   Annals__V1__ViewEntry **out)
{
    struct proj__rtxn r;
    uint64_t ckpt;
    MDB_val val;
    uint64_t pos = 0;
    Annals__V1__ViewEntry *e = malloc(sizeof(*e));
    if (!e) {
        return AN_ENOMEM;
    }
    *e = (Annals__V1__ViewEntry)ANNALS__V1__VIEW_ENTRY__INIT;
    e->key = malloc(key_len + 1);
    if (!e->key) {
        free(e);
        return AN_ENOMEM;
    }
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    int rc = begin_read(v, &r, &ckpt);
    if (rc) {
        goto out_free;
    }
    rc = proj__view_seek(r.c, key, key_len, bound, &val, &pos);
    if (rc == 0 && val.mv_size > 0) {
        e->value.data = malloc(val.mv_size);
        e->content_type = strdup(PROJ_CONTENT_TYPE);
        if (!e->value.data || !e->content_type) {
            rc = AN_ENOMEM;
            goto out_end;
        }
        memcpy(e->value.data, val.mv_data, val.mv_size);
        e->value.len = val.mv_size;
        e->found = true;
        e->position = pos;
    } else if (rc == 0 || rc == AN_ENOTFOUND) {
        rc = 0; /* no value, or a deletion mark */
    } else {
        goto out_end;
    }
    end_read(v, &r);
    *out = e;
    return 0;

out_end:
    end_read(v, &r);
out_free:
    proj_entry_free(e);
    return rc;
}

void proj_entry_free(Annals__V1__ViewEntry *e)
{
    if (e) {
        annals__v1__view_entry__free_unpacked(e, NULL);
    }
}

/* key order as view_cmp has it, on bare keys */
static int key_cmp(const void *a, size_t la, const void *b, size_t lb)
{
    int c = la && lb ? memcmp(a, b, la < lb ? la : lb) : 0;
    return c ? c : (la > lb) - (la < lb);
}

int proj__view_scan(struct proj_view *v, const struct proj_scan *q, bool present,
                    uint64_t as_of, proj_entry_fn fn, void *arg, uint64_t *at_out,
                    bool *more_out)
{
    struct proj__rtxn r;
    uint64_t ckpt;
    uint8_t kb[PROJ_KEY_MAX + 8];
    char key[PROJ_KEY_MAX + 1];
    const char *prefix = q->prefix ? q->prefix : "";
    size_t plen = q->prefix ? q->prefix_len : 0;
    bool more = false;
    uint32_t n = 0;
    MDB_val k;
    MDB_val val;
    int rc = begin_read(v, &r, &ckpt);
    if (rc) {
        return rc;
    }
    MDB_cursor *c = r.c;
    uint64_t bound = present ? ckpt : as_of;
    if (plen > PROJ_KEY_MAX) {
        goto out_done; /* no key can have it */
    }
    /* the first candidate: the first key >= prefix, or > start_after */
    if (q->start_after && key_cmp(q->start_after, q->start_after_len, prefix, plen) >= 0) {
        if (q->start_after_len > PROJ_KEY_MAX) {
            /* longer than any key: compare its first PROJ_KEY_MAX bytes */
            proj__vkey(kb, q->start_after, PROJ_KEY_MAX, UINT64_MAX);
            k = (MDB_val){.mv_size = PROJ_KEY_MAX + 8, .mv_data = kb};
        } else {
            proj__vkey(kb, q->start_after, q->start_after_len, UINT64_MAX);
            k = (MDB_val){.mv_size = q->start_after_len + 8, .mv_data = kb};
        }
    } else {
        proj__vkey(kb, prefix, plen, 0);
        k = (MDB_val){.mv_size = plen + 8, .mv_data = kb};
    }
    rc = mdb_cursor_get(c, &k, &val, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size < 8) {
            rc = AN_ECORRUPT;
            goto out_abort;
        }
        size_t kl = k.mv_size - 8;
        if (kl < plen || memcmp(k.mv_data, prefix, plen) != 0) {
            break;
        }
        memcpy(key, k.mv_data, kl);
        key[kl] = '\0';
        uint64_t pos;
        rc = proj__view_seek(c, key, kl, bound, &val, &pos);
        if (rc == 0 && val.mv_size > 0) {
            Annals__V1__ViewEntry e = ANNALS__V1__VIEW_ENTRY__INIT;
            e.key = key;
            e.value.data = val.mv_data;
            e.value.len = val.mv_size;
            e.found = true;
            e.position = pos;
            e.content_type = (char *)PROJ_CONTENT_TYPE;
            n++;
            if (!fn(arg, &e) || (q->limit && n >= q->limit)) {
                more = true;
                break;
            }
        } else if (rc != 0 && rc != AN_ENOTFOUND) {
            goto out_abort;
        }
        /* past every version of this key */
        proj__vkey(kb, key, kl, UINT64_MAX);
        k = (MDB_val){.mv_size = kl + 8, .mv_data = kb};
        rc = mdb_cursor_get(c, &k, &val, MDB_SET_RANGE);
    }
    if (rc && rc != MDB_NOTFOUND && !more) {
        rc = proj__from_mdb(rc, "view scan", NULL);
        goto out_abort;
    }
out_done:
    end_read(v, &r);
    if (at_out) {
        *at_out = bound;
    }
    if (more_out) {
        *more_out = more;
    }
    return 0;

out_abort:
    end_read(v, &r);
    return rc;
}

/* ---- offline check (annals verify) ---- */

/* Checks one view env: its checkpoint against head, every entry's position
 * against its checkpoint. Fills *ckpt and *entries; a problem goes into
 * why (empty: none). Returns 0 or an LMDB code (cannot read it). */
static int check_view(const char *path, uint64_t head, uint64_t *ckpt, uint64_t *entries,
                      char *why, size_t cap)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_dbi dv;
    MDB_dbi dm;
    why[0] = '\0';
    *entries = 0;
    int rc = mdb_env_create(&env);
    if (!rc) {
        mdb_env_set_maxdbs(env, 4);
        rc = mdb_env_open(env, path, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    }
    if (!rc) {
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    }
    if (!rc && !(rc = mdb_dbi_open(txn, "meta", 0, &dm)) && !(rc = mdb_dbi_open(txn, "view", 0, &dv))) {
        rc = mdb_set_compare(txn, dv, view_cmp);
    }
    if (!rc) {
        rc = read_meta_u64(txn, dm, "checkpoint", ckpt);
    }
    if (!rc) {
        rc = mdb_cursor_open(txn, dv, &c);
    }
    MDB_val k;
    MDB_val v;
    int mrc = rc ? rc : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (!rc && mrc == 0) {
        (*entries)++;
        uint64_t pos = k.mv_size >= 8 ? proj__be64_get((const uint8_t *)k.mv_data + k.mv_size - 8)
                                      : UINT64_MAX;
        if (k.mv_size < 8 && !why[0]) {
            snprintf(why, cap, "an entry's key has no position (%zu bytes)", k.mv_size);
        } else if (pos > *ckpt && !why[0]) {
            snprintf(why, cap, "an entry at position %llu is past the checkpoint %llu",
                     (unsigned long long)pos, (unsigned long long)*ckpt);
        }
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (!rc && mrc != MDB_NOTFOUND) {
        rc = mrc;
    }
    if (!rc && *ckpt > head && !why[0]) {
        snprintf(why, cap, "checkpoint %llu is past the log's head %llu",
                 (unsigned long long)*ckpt, (unsigned long long)head);
    }
    if (c) {
        mdb_cursor_close(c);
    }
    if (txn) {
        mdb_txn_abort(txn);
    }
    if (env) {
        mdb_env_close(env);
    }
    return rc;
}

int proj_check_dir(const char *dir, uint64_t head, proj_check_fn fn, void *arg, char *detail)
{
    char path[4096];
    MDB_env *cat = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_dbi defs;
    unsigned bad = 0;
    snprintf(path, sizeof(path), "%s/catalog", dir);
    int rc = mdb_env_create(&cat);
    if (!rc) {
        mdb_env_set_maxdbs(cat, 2);
        rc = mdb_env_open(cat, path, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    }
    if (!rc) {
        rc = mdb_txn_begin(cat, NULL, MDB_RDONLY, &txn);
    }
    if (!rc) {
        rc = mdb_dbi_open(txn, "defs", 0, &defs);
    }
    if (!rc) {
        rc = mdb_cursor_open(txn, defs, &c);
    }
    if (rc) {
        int code = proj__from_mdb(rc, path, detail);
        if (txn) {
            mdb_txn_abort(txn);
        }
        mdb_env_close(cat);
        return code;
    }
    MDB_val k;
    MDB_val v;
    int mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (mrc == 0) {
        char name[PROJ_NAME_MAX + 1];
        snprintf(name, sizeof(name), "%.*s", (int)(k.mv_size < PROJ_NAME_MAX ? k.mv_size
                                                                              : PROJ_NAME_MAX),
                 (const char *)k.mv_data);
        uint64_t gens[2] = {0, 0};
        if (v.mv_size >= PROJ__CAT_HDR) {
            gens[0] = proj__be64_get(v.mv_data);
            gens[1] = proj__be64_get((const uint8_t *)v.mv_data + 8);
        }
        for (int j = 0; j < 2; j++) {
            if (j == 1 && gens[1] == 0) {
                continue;
            }
            char why[160];
            uint64_t ckpt = 0;
            uint64_t entries = 0;
            snprintf(path, sizeof(path), "%s/views/%s.%llu", dir, name,
                     (unsigned long long)gens[j]);
            int vrc = check_view(path, head, &ckpt, &entries, why, sizeof(why));
            if (vrc) {
                snprintf(why, sizeof(why), "cannot read it: %s", mdb_strerror(vrc));
            }
            bad += why[0] != '\0';
            if (fn) {
                fn(arg, name, gens[j], j == 1, ckpt, entries, why[0] ? why : NULL);
            }
        }
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(cat);
    if (bad) {
        proj__detail(detail, "%u view(s) failed the check", bad);
        return AN_ECORRUPT;
    }
    return 0;
}

/*
 * proj_mgr.c - the projection manager: the catalog of definitions, the
 * projections' life cycle (open, create, rebuild, delete, close), their
 * statuses, and the front of GetView/ScanView (find the view, wait for its
 * checkpoint, take a reference on the current generation).
 *
 * The catalog (DIR/catalog, LMDB, synced commits) is the truth about which
 * projections exist and which view generations they use; view directories
 * it does not name are debris of a crash in Delete or in a swap and are
 * removed at open. Every change to it happens before the change it
 * describes becomes visible in memory (create: catalog, then the view and
 * the worker; swap: catalog, then the pointer), or after the thing it
 * removes has stopped (delete: worker stopped, then catalog, then files).
 *
 * Calls in flight are counted so proj_close can wake the waiting ones and
 * wait for them all before it frees anything.
 */
#include "proj_int.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PROJ__MAX_DEFAULT 256u
#define PROJ__CAT_MAP (64ull << 20)

/* ---- projections ---- */

void proj__ref(struct proj *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void proj__release(struct proj *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1) {
        return;
    }
    assert(!p->thread_started);
    proj__view_release(p->cur);
    proj__view_release(p->next);
    annals__v1__projection_definition__free_unpacked(p->def, NULL);
    free(p->def_packed);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* A projection from its packed definition (taken over on success).
 * AN_ECORRUPT (detail, optional, says why) when it does not decode or is
 * not valid. */
static int proj_new(proj_mgr *mgr, uint8_t *packed, size_t len, struct proj **out,
                    char *detail)
{
    struct proj *p = calloc(1, sizeof(*p));
    if (!p) {
        return AN_ENOMEM;
    }
    p->def = annals__v1__projection_definition__unpack(NULL, len, packed);
    if (!p->def) {
        free(p);
        proj__detail(detail, "its definition (%zu bytes) does not decode", len);
        return AN_ECORRUPT;
    }
    if (proj_validate(p->def, detail) != 0) {
        annals__v1__projection_definition__free_unpacked(p->def, NULL);
        free(p);
        return AN_ECORRUPT;
    }
    snprintf(p->name, sizeof(p->name), "%s", p->def->name);
    p->mgr = mgr;
    p->def_packed = packed;
    p->def_len = len;
    proj__compile(p->def, &p->cd);
    atomic_init(&p->refs, 1);
    atomic_init(&p->stop, false);
    atomic_init(&p->kick, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = p;
    return 0;
}

/* Under mgr->mu. */
static struct proj *find_locked(proj_mgr *mgr, const char *name)
{
    for (struct proj *p = mgr->list; p; p = p->link) {
        if (!strcmp(p->name, name)) {
            return p;
        }
    }
    return NULL;
}

/* The projection named, with a reference the caller drops; NULL: none. */
static struct proj *find_ref(proj_mgr *mgr, const char *name)
{
    pthread_mutex_lock(&mgr->mu);
    struct proj *p = find_locked(mgr, name ? name : "");
    if (p) {
        proj__ref(p);
    }
    pthread_mutex_unlock(&mgr->mu);
    return p;
}

static int call_enter(proj_mgr *mgr)
{
    pthread_mutex_lock(&mgr->mu);
    if (atomic_load(&mgr->closing)) {
        pthread_mutex_unlock(&mgr->mu);
        return AN_EUNAVAIL;
    }
    mgr->calls++;
    pthread_mutex_unlock(&mgr->mu);
    return 0;
}

static void call_exit(proj_mgr *mgr)
{
    pthread_mutex_lock(&mgr->mu);
    if (--mgr->calls == 0 && atomic_load(&mgr->closing)) {
        pthread_cond_broadcast(&mgr->calls_cv);
    }
    pthread_mutex_unlock(&mgr->mu);
}

/* ---- the catalog ---- */

static int cat_put(proj_mgr *mgr, const char *name, const uint8_t *packed, size_t len,
                   uint64_t cur, uint64_t next, char *detail)
{
    MDB_txn *txn = NULL;
    uint8_t *buf = malloc(PROJ__CAT_HDR + len);
    if (!buf) {
        return AN_ENOMEM;
    }
    proj__be64_put(buf, cur);
    proj__be64_put(buf + 8, next);
    memcpy(buf + PROJ__CAT_HDR, packed, len);
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val v = {.mv_size = PROJ__CAT_HDR + len, .mv_data = buf};
    pthread_mutex_lock(&mgr->cat_mu);
    int rc = mdb_txn_begin(mgr->cat, NULL, 0, &txn);
    if (!rc) {
        rc = mdb_put(txn, mgr->dbi_defs, &k, &v, 0);
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    pthread_mutex_unlock(&mgr->cat_mu);
    free(buf);
    return rc ? proj__from_mdb(rc, "catalog", detail) : 0;
}

static int cat_del(proj_mgr *mgr, const char *name, char *detail)
{
    MDB_txn *txn = NULL;
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    pthread_mutex_lock(&mgr->cat_mu);
    int rc = mdb_txn_begin(mgr->cat, NULL, 0, &txn);
    if (!rc) {
        rc = mdb_del(txn, mgr->dbi_defs, &k, NULL);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
        }
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    pthread_mutex_unlock(&mgr->cat_mu);
    return rc ? proj__from_mdb(rc, "catalog", detail) : 0;
}

int proj__cat_set_gens(proj_mgr *mgr, struct proj *p, uint64_t cur, uint64_t next,
                       char *detail)
{
    return cat_put(mgr, p->name, p->def_packed, p->def_len, cur, next, detail);
}

static void list_add(proj_mgr *mgr, struct proj *p)
{
    pthread_mutex_lock(&mgr->mu);
    p->link = mgr->list;
    mgr->list = p;
    mgr->n++;
    pthread_mutex_unlock(&mgr->mu);
}

int proj__cat_decode(proj_mgr *mgr, const void *key, size_t klen, const void *val, size_t vlen,
                     struct proj **out, char *detail)
{
    char why[PROJ_DETAIL_MAX] = "";
    struct proj *p = NULL;
    uint8_t *packed = NULL;
    if (vlen < PROJ__CAT_HDR) {
        proj__detail(detail, "%zu bytes, not even the %u of its generations", vlen,
                     PROJ__CAT_HDR);
        return AN_ECORRUPT;
    }
    size_t len = vlen - PROJ__CAT_HDR;
    if (!(packed = malloc(len ? len : 1))) {
        return AN_ENOMEM;
    }
    memcpy(packed, (const uint8_t *)val + PROJ__CAT_HDR, len);
    int rc = proj_new(mgr, packed, len, &p, why);
    if (rc) {
        free(packed);
        if (rc == AN_ECORRUPT) {
            proj__detail(detail, "%.200s", why);
        }
        return rc;
    }
    uint64_t cur = proj__be64_get(val);
    uint64_t next = proj__be64_get((const uint8_t *)val + 8);
    const char *bad = NULL;
    if (strlen(p->name) != klen || memcmp(p->name, key, klen) != 0) {
        bad = "its definition names another projection";
    } else if (cur == 0 || cur >= PROJ__GEN_LIMIT || next >= PROJ__GEN_LIMIT) {
        bad = "a generation out of range";
    } else if (next == cur) {
        bad = "its rebuild is its current view";
    }
    if (bad) {
        proj__detail(detail, "%s (generations %llu, %llu)", bad, (unsigned long long)cur,
                     (unsigned long long)next);
        proj__release(p);
        return AN_ECORRUPT;
    }
    p->gen_cur = cur;
    p->gen_next = next;
    *out = p;
    return 0;
}

/* Reads every catalog entry into the list (no views opened yet). An entry
 * that does not decode is skipped, logged with its key and the reason. */
static int cat_load(proj_mgr *mgr, char *detail)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k;
    MDB_val v;
    int rc = mdb_txn_begin(mgr->cat, NULL, 0, &txn);
    if (rc) {
        return proj__from_mdb(rc, "catalog", detail);
    }
    if ((rc = mdb_dbi_open(txn, "defs", MDB_CREATE, &mgr->dbi_defs)) ||
        (rc = mdb_cursor_open(txn, mgr->dbi_defs, &c))) {
        goto out_abort;
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        struct proj *p = NULL;
        char why[PROJ_DETAIL_MAX] = "";
        int prc = proj__cat_decode(mgr, k.mv_data, k.mv_size, v.mv_data, v.mv_size, &p, why);
        if (prc) {
            char name[96];
            log_key_text(name, sizeof(name), k.mv_data, k.mv_size);
            proj__say(mgr, PROJ_LOG_ERROR,
                      "msg=\"catalog entry skipped\" proj=%s bytes=%zu err=%s detail=\"%s\"",
                      name, v.mv_size, an_errname(prc), why);
            continue;
        }
        list_add(mgr, p);
    }
    if (rc != MDB_NOTFOUND) {
        goto out_abort;
    }
    mdb_cursor_close(c);
    rc = mdb_txn_commit(txn);
    return rc ? proj__from_mdb(rc, "catalog", detail) : 0;

out_abort:
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return proj__from_mdb(rc, "catalog", detail);
}

/* Whether the catalog has an entry named [name, name+len) (loaded or not). */
static bool cat_has(proj_mgr *mgr, MDB_txn *txn, const char *name, size_t len)
{
    MDB_val k = {.mv_size = len, .mv_data = (void *)name};
    MDB_val v;
    return txn && mdb_get(txn, mgr->dbi_defs, &k, &v) == 0;
}

/*
 * Removes view directories that no catalog entry names, and the other
 * generations of loaded projections. The views of an entry that did not
 * load (undecodable) are kept for a human to look at.
 */
static void sweep_views(proj_mgr *mgr)
{
    char path[4096];
    MDB_txn *txn = NULL;
    snprintf(path, sizeof(path), "%s/views", mgr->dir);
    DIR *d = opendir(path);
    if (!d) {
        return;
    }
    if (mdb_txn_begin(mgr->cat, NULL, MDB_RDONLY, &txn) != 0) {
        closedir(d);
        return; /* sweeping is only tidying: skip it rather than guess */
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        const char *dot = strrchr(de->d_name, '.');
        bool keep = false;
        if (dot) {
            size_t nl = (size_t)(dot - de->d_name);
            unsigned long long gen = strtoull(dot + 1, NULL, 10);
            bool loaded = false;
            for (struct proj *p = mgr->list; p && !keep; p = p->link) {
                if (strlen(p->name) == nl && !memcmp(p->name, de->d_name, nl)) {
                    loaded = true;
                    keep = gen == p->gen_cur || (p->gen_next && gen == p->gen_next);
                }
            }
            keep = keep || (!loaded && cat_has(mgr, txn, de->d_name, nl));
        }
        if (!keep) {
            char sub[4096 + 256];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            proj__say(mgr, PROJ_LOG_INFO, "msg=\"stale view removed\" dir=%s", de->d_name);
            proj__rm_rf(sub);
        }
    }
    mdb_txn_abort(txn);
    closedir(d);
}

static uint64_t next_gen(proj_mgr *mgr, const char *name, uint64_t floor);
static int rebuild_locked(proj_mgr *mgr, struct proj *p, char *detail);

static void view_drop(struct proj_view *v)
{
    atomic_store(&v->doomed, true);
    proj__view_release(v);
}

/*
 * p's current view has a checkpoint past the log's head: it was folded
 * from another history (a log restored without its projections, or one
 * from another data directory), and positions the log will fill again are
 * ones the view says it has applied. Answering from it would be wrong and
 * the worker would skip what comes next, so it is replaced by a fresh,
 * empty generation that folds this log from position 1. If that cannot be
 * made, p is FAULTED without a view rather than answer from the wrong one.
 */
static void reset_ahead(proj_mgr *mgr, struct proj *p, uint64_t head)
{
    char detail[PROJ_DETAIL_MAX] = "";
    uint64_t was = p->cur->checkpoint;
    uint64_t gen = next_gen(mgr, p->name, p->gen_cur > p->gen_next ? p->gen_cur : p->gen_next);
    struct proj_view *v = NULL;
    int rc = proj__view_open(mgr, p->name, gen, p->cd.latest_only, true, &v, detail);
    if (!rc) {
        rc = proj__cat_set_gens(mgr, p, gen, 0, detail);
        if (rc) {
            view_drop(v);
            v = NULL;
        }
    }
    view_drop(p->cur);
    if (p->next) {
        view_drop(p->next);
    }
    p->cur = v;
    p->next = NULL;
    p->gen_next = 0;
    if (rc) {
        p->cur_faulted = true;
        snprintf(p->error, sizeof(p->error),
                 "checkpoint %" PRIu64 " is past the log's head %" PRIu64
                 " and a fresh view could not be made: %s: %.120s",
                 was, head, an_errname(rc), detail);
        proj__say(mgr, PROJ_LOG_ERROR, "msg=\"view reset failed\" proj=%s err=%s detail=\"%s\"",
                  p->name, an_errname(rc), detail);
        return;
    }
    p->gen_cur = gen;
    proj__say(mgr, PROJ_LOG_WARN,
              "msg=\"view reset: its checkpoint is past the log's head (a log restored "
              "without its projections?); folding this log again from position 1\" proj=%s "
              "checkpoint=%" PRIu64 " head=%" PRIu64 " gen=%" PRIu64,
              p->name, was, head, gen);
}

/* Opens p's views; a failure leaves p FAULTED, not the manager. */
static void open_views(proj_mgr *mgr, struct proj *p)
{
    char detail[PROJ_DETAIL_MAX] = "";
    int rc = proj__view_open(mgr, p->name, p->gen_cur, p->cd.latest_only, false, &p->cur,
                             detail);
    if (rc) {
        p->cur = NULL;
        p->cur_faulted = true;
        snprintf(p->error, sizeof(p->error), "%s: %.200s", an_errname(rc), detail);
        proj__say(mgr, PROJ_LOG_ERROR, "msg=\"view open failed\" proj=%s err=%s detail=\"%s\"",
                  p->name, an_errname(rc), detail);
    }
    if (p->gen_next) {
        rc = proj__view_open(mgr, p->name, p->gen_next, p->cd.latest_only, false, &p->next,
                             detail);
        if (rc) {
            p->next = NULL;
            snprintf(p->error, sizeof(p->error), "rebuild: %s: %.200s", an_errname(rc), detail);
        } else {
            proj__say(mgr, PROJ_LOG_INFO,
                      "msg=\"rebuild resumes\" proj=%s gen=%" PRIu64 " from=%" PRIu64,
                      p->name, p->gen_next, p->next->checkpoint);
        }
    }
    uint64_t head = atomic_load(&mgr->head);
    if (p->cur && p->cur->checkpoint > head) {
        reset_ahead(mgr, p, head);
    } else if (p->next && p->next->checkpoint > head) {
        /* the same for a rebuild in progress: it starts again */
        proj__say(mgr, PROJ_LOG_WARN,
                  "msg=\"rebuild restarted: its checkpoint is past the log's head\" proj=%s "
                  "checkpoint=%" PRIu64 " head=%" PRIu64,
                  p->name, p->next->checkpoint, head);
        view_drop(p->next);
        p->next = NULL;
        if (rebuild_locked(mgr, p, detail) != 0) {
            p->gen_next = 0;
            proj__cat_set_gens(mgr, p, p->gen_cur, 0, NULL);
            snprintf(p->error, sizeof(p->error), "rebuild: %.200s", detail);
        }
    }
}

/* ---- opening and closing ---- */

int proj_open(const struct proj_cfg *cfg, log_env *log, proj_mgr **out, char *detail)
{
    char path[4096];
    int rc;
    if (!cfg || !cfg->dir || !cfg->dir[0] || !log) {
        proj__detail(detail, "proj_open: no directory or no log given");
        return AN_EINVAL;
    }
    proj_mgr *mgr = calloc(1, sizeof(*mgr));
    if (!mgr || !(mgr->dir = strdup(cfg->dir))) {
        free(mgr);
        return AN_ENOMEM;
    }
    mgr->cfg = *cfg;
    mgr->cfg.dir = mgr->dir;
    mgr->log = log;
    pthread_mutex_init(&mgr->admin_mu, NULL);
    pthread_mutex_init(&mgr->mu, NULL);
    pthread_mutex_init(&mgr->cat_mu, NULL);
    pthread_mutex_init(&mgr->wake_mu, NULL);
    pthread_cond_init(&mgr->calls_cv, NULL);
    pthread_cond_init(&mgr->wake_cv, NULL);
    atomic_init(&mgr->head, log_head(log));

    snprintf(path, sizeof(path), "%s/catalog", cfg->dir);
    const char *dirs[] = {cfg->dir, path};
    char views[4096];
    snprintf(views, sizeof(views), "%s/views", cfg->dir);
    for (size_t i = 0; i < 2; i++) {
        if (mkdir(dirs[i], 0755) != 0 && errno != EEXIST) {
            proj__detail(detail, "cannot create %s: %s", dirs[i], strerror(errno));
            rc = AN_EIO;
            goto out_free;
        }
    }
    if (mkdir(views, 0755) != 0 && errno != EEXIST) {
        proj__detail(detail, "cannot create %s: %s", views, strerror(errno));
        rc = AN_EIO;
        goto out_free;
    }
    rc = mdb_env_create(&mgr->cat);
    if (rc) {
        mgr->cat = NULL;
        rc = proj__from_mdb(rc, "catalog", detail);
        goto out_free;
    }
    mdb_env_set_maxdbs(mgr->cat, 2);
    mdb_env_set_mapsize(mgr->cat, PROJ__CAT_MAP);
    rc = mdb_env_open(mgr->cat, path, MDB_NOTLS, 0644);
    if (rc) {
        rc = proj__from_mdb(rc, path, detail);
        goto out_free;
    }
    rc = cat_load(mgr, detail);
    if (rc) {
        goto out_free;
    }
    sweep_views(mgr);
    for (struct proj *p = mgr->list; p; p = p->link) {
        open_views(mgr, p);
        if (proj__worker_start(p) != 0) {
            proj__detail(detail, "cannot start the worker of %s", p->name);
            rc = AN_ENOMEM;
            goto out_free;
        }
    }
    proj__say(mgr, PROJ_LOG_INFO, "msg=\"projections open\" dir=%s count=%u head=%" PRIu64,
              mgr->dir, mgr->n, (uint64_t)atomic_load(&mgr->head));
    *out = mgr;
    return 0;

out_free:
    proj_close(mgr);
    return rc;
}

void proj_close(proj_mgr *mgr)
{
    if (!mgr) {
        return;
    }
    pthread_mutex_lock(&mgr->mu);
    atomic_store(&mgr->closing, true);
    pthread_mutex_unlock(&mgr->mu);
    /* wake queries waiting for a checkpoint: they see closing */
    for (struct proj *p = mgr->list; p; p = p->link) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&mgr->mu);
    while (mgr->calls > 0) {
        pthread_cond_wait(&mgr->calls_cv, &mgr->mu);
    }
    pthread_mutex_unlock(&mgr->mu);
    for (struct proj *p = mgr->list; p; p = p->link) {
        proj__worker_stop(p);
    }
    while (mgr->list) {
        struct proj *p = mgr->list;
        mgr->list = p->link;
        proj__release(p);
    }
    if (mgr->cat) {
        mdb_env_close(mgr->cat);
    }
    pthread_cond_destroy(&mgr->wake_cv);
    pthread_cond_destroy(&mgr->calls_cv);
    pthread_mutex_destroy(&mgr->wake_mu);
    pthread_mutex_destroy(&mgr->cat_mu);
    pthread_mutex_destroy(&mgr->mu);
    pthread_mutex_destroy(&mgr->admin_mu);
    free(mgr->dir);
    free(mgr);
}

void proj_notify(proj_mgr *mgr, uint64_t head)
{
    uint64_t cur = atomic_load(&mgr->head);
    while (head > cur && !atomic_compare_exchange_weak(&mgr->head, &cur, head)) {
    }
    proj__wake_all(mgr);
}

/* ---- statuses ---- */

static Annals__V1__ProjectionStatus *status_of(proj_mgr *mgr, struct proj *p)
{
    Annals__V1__ProjectionStatus *st = malloc(sizeof(*st));
    if (!st) {
        return NULL;
    }
    *st = (Annals__V1__ProjectionStatus)ANNALS__V1__PROJECTION_STATUS__INIT;
    st->definition = annals__v1__projection_definition__unpack(NULL, p->def_len, p->def_packed);
    if (!st->definition) {
        free(st);
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    if (p->next) {
        st->state = ANNALS__V1__PROJECTION_STATE__REBUILDING;
        st->rebuild_checkpoint = p->next->checkpoint;
    } else if (p->error[0] || p->cur_faulted) {
        st->state = ANNALS__V1__PROJECTION_STATE__FAULTED;
    } else {
        st->state = ANNALS__V1__PROJECTION_STATE__RUNNING;
    }
    st->checkpoint = p->cur ? p->cur->checkpoint : 0;
    st->events_applied = p->cur ? p->cur->applied : 0;
    char *err = p->error[0] ? strdup(p->error) : NULL;
    pthread_mutex_unlock(&p->mu);
    if (err) {
        st->error = err;
    }
    st->head = log_head(mgr->log);
    return st;
}

void proj_status_free(Annals__V1__ProjectionStatus *st)
{
    if (st) {
        annals__v1__projection_status__free_unpacked(st, NULL);
    }
}

void proj_list_free(Annals__V1__ListProjectionsResponse *resp)
{
    if (resp) {
        annals__v1__list_projections_response__free_unpacked(resp, NULL);
    }
}

int proj_status(proj_mgr *mgr, const char *name, Annals__V1__ProjectionStatus **out)
{
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    struct proj *p = find_ref(mgr, name);
    if (!p) {
        rc = AN_ENOTFOUND;
    } else {
        Annals__V1__ProjectionStatus *st = status_of(mgr, p);
        rc = st ? 0 : AN_ENOMEM;
        if (st) {
            *out = st;
        }
        proj__release(p);
    }
    call_exit(mgr);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    const Annals__V1__ProjectionStatus *x = *(Annals__V1__ProjectionStatus *const *)a;
    const Annals__V1__ProjectionStatus *y = *(Annals__V1__ProjectionStatus *const *)b;
    return strcmp(x->definition->name, y->definition->name);
}

int proj_list(proj_mgr *mgr, Annals__V1__ListProjectionsResponse **out)
{
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    Annals__V1__ListProjectionsResponse *resp = malloc(sizeof(*resp));
    if (!resp) {
        call_exit(mgr);
        return AN_ENOMEM;
    }
    *resp = (Annals__V1__ListProjectionsResponse)ANNALS__V1__LIST_PROJECTIONS_RESPONSE__INIT;
    pthread_mutex_lock(&mgr->mu);
    resp->projections = calloc(mgr->n ? mgr->n : 1, sizeof(*resp->projections));
    if (!resp->projections) {
        rc = AN_ENOMEM;
    }
    for (struct proj *p = mgr->list; p && !rc; p = p->link) {
        Annals__V1__ProjectionStatus *st = status_of(mgr, p);
        if (!st) {
            rc = AN_ENOMEM;
            break;
        }
        resp->projections[resp->n_projections++] = st;
    }
    pthread_mutex_unlock(&mgr->mu);
    call_exit(mgr);
    if (rc) {
        proj_list_free(resp);
        return rc;
    }
    qsort(resp->projections, resp->n_projections, sizeof(*resp->projections), name_cmp);
    *out = resp;
    return 0;
}

/* ---- create, rebuild, delete ---- */

/*
 * A generation for a new view of `name`: above floor and above every
 * NAME.GEN directory still on disk. A replaced or deleted generation stays
 * on disk until its last reader ends, and its release removes the
 * directory by name: a Create after a Delete must not reuse it.
 * Under admin_mu.
 */
static uint64_t next_gen(proj_mgr *mgr, const char *name, uint64_t floor)
{
    char path[4096];
    uint64_t max = floor;
    size_t nl = strlen(name);
    snprintf(path, sizeof(path), "%s/views", mgr->dir);
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!strncmp(de->d_name, name, nl) && de->d_name[nl] == '.') {
            uint64_t g = strtoull(de->d_name + nl + 1, NULL, 10);
            max = g > max ? g : max;
        }
    }
    if (d) {
        closedir(d);
    }
    return max + 1;
}

static int create_locked(proj_mgr *mgr, const Annals__V1__ProjectionDefinition *def,
                         struct proj **out, char *detail)
{
    uint8_t *packed = NULL;
    size_t len = 0;
    struct proj *p = NULL;
    int rc = proj__def_pack(def, &packed, &len);
    if (rc) {
        return rc;
    }
    struct proj *old = find_ref(mgr, def->name);
    if (old) {
        bool same = old->def_len == len && !memcmp(old->def_packed, packed, len);
        free(packed);
        if (!same) {
            proj__release(old);
            proj__detail(detail, "projection '%s' exists with a different definition",
                         def->name);
            return AN_EEXIST;
        }
        *out = old;
        return 0;
    }
    if (mgr->n >= (mgr->cfg.max_projections ? mgr->cfg.max_projections : PROJ__MAX_DEFAULT)) {
        free(packed);
        proj__detail(detail, "projections: %u already, the limit", mgr->n);
        return AN_ETOOBIG;
    }
    rc = proj_new(mgr, packed, len, &p, NULL);
    if (rc) {
        free(packed);
        return rc;
    }
    p->gen_cur = next_gen(mgr, p->name, 0);
    rc = cat_put(mgr, p->name, p->def_packed, p->def_len, p->gen_cur, 0, detail);
    if (rc) {
        goto out_release;
    }
    rc = proj__view_open(mgr, p->name, p->gen_cur, p->cd.latest_only, true, &p->cur, detail);
    if (rc) {
        p->cur = NULL;
        cat_del(mgr, p->name, NULL);
        goto out_release;
    }
    rc = proj__worker_start(p);
    if (rc) {
        cat_del(mgr, p->name, NULL);
        atomic_store(&p->cur->doomed, true);
        goto out_release;
    }
    proj__ref(p); /* the list's and the caller's */
    list_add(mgr, p);
    proj__say(mgr, PROJ_LOG_INFO, "msg=\"projection created\" proj=%s kind=%d", p->name,
              (int)p->cd.kind);
    *out = p;
    return 0;

out_release:
    proj__release(p);
    return rc;
}

int proj_create(proj_mgr *mgr, const Annals__V1__ProjectionDefinition *def,
                Annals__V1__ProjectionStatus **out, char *detail)
{
    struct proj *p = NULL;
    int rc = proj_validate(def, detail);
    if (rc) {
        return rc;
    }
    rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&mgr->admin_mu);
    rc = create_locked(mgr, def, &p, detail);
    pthread_mutex_unlock(&mgr->admin_mu);
    if (!rc && out) {
        *out = status_of(mgr, p);
        rc = *out ? 0 : AN_ENOMEM;
    }
    proj__release(p);
    call_exit(mgr);
    return rc;
}

static int rebuild_locked(proj_mgr *mgr, struct proj *p, char *detail)
{
    struct proj_view *v = NULL;
    pthread_mutex_lock(&p->mu);
    bool running = p->next != NULL;
    uint64_t gen = next_gen(mgr, p->name, p->gen_cur > p->gen_next ? p->gen_cur : p->gen_next);
    pthread_mutex_unlock(&p->mu);
    if (running) {
        return 0;
    }
    int rc = proj__view_open(mgr, p->name, gen, p->cd.latest_only, true, &v, detail);
    if (rc) {
        return rc;
    }
    rc = proj__cat_set_gens(mgr, p, p->gen_cur, gen, detail);
    if (rc) {
        atomic_store(&v->doomed, true);
        proj__view_release(v);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    p->next = v;
    p->gen_next = gen;
    p->error[0] = '\0';
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->kick, 1);
    proj__wake_all(mgr);
    return 0;
}

int proj_rebuild(proj_mgr *mgr, const char *name, Annals__V1__ProjectionStatus **out,
                 char *detail)
{
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&mgr->admin_mu);
    struct proj *p = find_ref(mgr, name);
    if (!p) {
        rc = AN_ENOTFOUND;
        proj__detail(detail, "no projection named '%s'", name ? name : "");
    } else {
        rc = rebuild_locked(mgr, p, detail);
    }
    pthread_mutex_unlock(&mgr->admin_mu);
    if (!rc && out) {
        *out = status_of(mgr, p);
        rc = *out ? 0 : AN_ENOMEM;
    }
    if (p) {
        proj__release(p);
    }
    call_exit(mgr);
    return rc;
}

static int delete_locked(proj_mgr *mgr, const char *name, char *detail)
{
    struct proj *p = find_ref(mgr, name);
    if (!p) {
        proj__detail(detail, "no projection named '%s'", name ? name : "");
        return AN_ENOTFOUND;
    }
    proj__worker_stop(p);
    int rc = cat_del(mgr, p->name, detail);
    if (rc) {
        proj__worker_start(p);
        proj__release(p);
        return rc;
    }
    pthread_mutex_lock(&mgr->mu);
    struct proj **pp = &mgr->list;
    while (*pp != p) {
        pp = &(*pp)->link;
    }
    *pp = p->link;
    mgr->n--;
    pthread_mutex_unlock(&mgr->mu);
    pthread_mutex_lock(&p->mu);
    struct proj_view *cur = p->cur;
    struct proj_view *next = p->next;
    p->cur = p->next = NULL;
    p->deleted = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    proj__advanced(mgr);
    /* queries in flight keep their view open; the last one removes it */
    if (cur) {
        atomic_store(&cur->doomed, true);
    }
    if (next) {
        atomic_store(&next->doomed, true);
    }
    proj__view_release(cur);
    proj__view_release(next);
    proj__say(mgr, PROJ_LOG_INFO, "msg=\"projection deleted\" proj=%s", p->name);
    proj__release(p); /* the list's */
    proj__release(p); /* ours */
    return 0;
}

int proj_delete(proj_mgr *mgr, const char *name, char *detail)
{
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&mgr->admin_mu);
    rc = delete_locked(mgr, name, detail);
    pthread_mutex_unlock(&mgr->admin_mu);
    call_exit(mgr);
    return rc;
}

/* ---- GetView, ScanView ---- */

/*
 * The current view of `name`, referenced, once its checkpoint has reached
 * what q asks for. Holds no transaction while it waits.
 */
static int acquire(proj_mgr *mgr, const char *name, const struct proj_read *q,
                   struct proj **p_out, struct proj_view **v_out)
{
    struct proj *p = find_ref(mgr, name);
    int rc = 0;
    if (!p) {
        return AN_ENOTFOUND;
    }
    if (q && q->has_as_of && p->cd.latest_only) {
        proj__release(p);
        return AN_EPRECOND;
    }
    uint64_t need = q ? q->min_position : 0;
    if (q && q->has_as_of && q->as_of > need) {
        need = q->as_of;
    }
    struct timespec ts = {0};
    if (q && q->deadline_ns) {
        ts.tv_sec = q->deadline_ns / 1000000000;
        ts.tv_nsec = q->deadline_ns % 1000000000;
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        bool closing = atomic_load(&mgr->closing);
        if (p->deleted) {
            rc = AN_ENOTFOUND;
            break;
        }
        if (closing) {
            rc = AN_EUNAVAIL;
            break;
        }
        if (!p->cur) {
            rc = AN_EUNAVAIL; /* its view could not be opened (FAULTED) */
            break;
        }
        if (p->cur->checkpoint >= need) {
            break;
        }
        if (p->cur_faulted) {
            rc = AN_EUNAVAIL; /* it will not get there until Rebuild or a restart */
            break;
        }
        if (q->deadline_ns) {
            if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT &&
                p->cur && p->cur->checkpoint < need && !p->deleted) {
                rc = AN_EDEADLINE;
                break;
            }
        } else {
            pthread_cond_wait(&p->cv, &p->mu);
        }
    }
    struct proj_view *v = rc ? NULL : p->cur;
    if (v) {
        proj__view_ref(v);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc) {
        proj__release(p);
        return rc;
    }
    *p_out = p;
    *v_out = v;
    return 0;
}

int proj_get(proj_mgr *mgr, const char *view, const char *key, size_t key_len,
             const struct proj_read *q, Annals__V1__ViewEntry **out)
{
    struct proj *p;
    struct proj_view *v;
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    rc = acquire(mgr, view, q, &p, &v);
    if (!rc) {
        uint64_t bound = q && q->has_as_of ? q->as_of : UINT64_MAX;
        rc = proj__view_get(v, key, key_len, bound, out);
        proj__view_release(v);
        proj__release(p);
    }
    call_exit(mgr);
    return rc;
}

int proj_scan(proj_mgr *mgr, const char *view, const struct proj_scan *q, proj_entry_fn fn,
              void *arg, uint64_t *at_out, bool *more_out)
{
    struct proj *p;
    struct proj_view *v;
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    rc = acquire(mgr, view, &q->read, &p, &v);
    if (!rc) {
        rc = proj__view_scan(v, q, !q->read.has_as_of, q->read.as_of, fn, arg, at_out,
                             more_out);
        proj__view_release(v);
        proj__release(p);
    }
    call_exit(mgr);
    return rc;
}

/* ---- backup ---- */

/* What a backup copies of one projection, taken in one step. */
struct snap {
    struct proj *p;
    uint64_t gen_cur;
    uint64_t gen_next;
    struct proj_view *v[2];   /* cur, next (either may be NULL) */
};

/* A compacting copy of one view env into DEST/views/NAME.GEN. */
static int copy_view(const char *dest, const char *name, struct proj_view *v, char *detail)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/views/%s.%llu", dest, name, (unsigned long long)v->gen);
    if (mkdir(path, 0755) != 0) {
        proj__detail(detail, "cannot create %s: %s", path, strerror(errno));
        return AN_EIO;
    }
    int rc = mdb_env_copy2(v->env, path, MDB_CP_COMPACT);
    return rc ? proj__from_mdb(rc, path, detail) : 0;
}

/* Writes the backup's catalog: the snapshot's definitions and generations. */
static int write_catalog(const char *dest, const struct snap *s, size_t n, char *detail)
{
    char path[4096];
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    snprintf(path, sizeof(path), "%s/catalog", dest);
    if (mkdir(path, 0755) != 0) {
        proj__detail(detail, "cannot create %s: %s", path, strerror(errno));
        return AN_EIO;
    }
    int rc = mdb_env_create(&env);
    if (!rc) {
        mdb_env_set_maxdbs(env, 2);
        mdb_env_set_mapsize(env, PROJ__CAT_MAP);
        rc = mdb_env_open(env, path, MDB_NOTLS, 0644);
    }
    if (!rc) {
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    }
    if (!rc) {
        rc = mdb_dbi_open(txn, "defs", MDB_CREATE, &dbi);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        const struct proj *p = s[i].p;
        uint8_t *buf = malloc(PROJ__CAT_HDR + p->def_len);
        if (!buf) {
            rc = ENOMEM;
            break;
        }
        proj__be64_put(buf, s[i].gen_cur);
        proj__be64_put(buf + 8, s[i].v[1] ? s[i].gen_next : 0);
        memcpy(buf + PROJ__CAT_HDR, p->def_packed, p->def_len);
        MDB_val k = {.mv_size = strlen(p->name), .mv_data = (void *)p->name};
        MDB_val v = {.mv_size = PROJ__CAT_HDR + p->def_len, .mv_data = buf};
        rc = mdb_put(txn, dbi, &k, &v, 0);
        free(buf);
    }
    if (txn) {
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    if (env) {
        mdb_env_close(env);
    }
    return rc ? proj__from_mdb(rc, path, detail) : 0;
}

int proj_backup(proj_mgr *mgr, const char *dest, proj_backup_fn progress, void *arg,
                char *detail)
{
    int rc = call_enter(mgr);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&mgr->admin_mu); /* no create, rebuild or delete meanwhile */
    pthread_mutex_lock(&mgr->mu);
    size_t n = mgr->n;
    struct snap *s = calloc(n ? n : 1, sizeof(*s));
    size_t k = 0;
    for (struct proj *p = mgr->list; s && p && k < n; p = p->link) {
        proj__ref(p);
        s[k++].p = p;
    }
    pthread_mutex_unlock(&mgr->mu);
    if (!s) {
        pthread_mutex_unlock(&mgr->admin_mu);
        call_exit(mgr);
        return AN_ENOMEM;
    }
    /* each projection's generations and views in one step, so the catalog
     * written below names exactly the views copied */
    for (size_t i = 0; i < k; i++) {
        struct proj *p = s[i].p;
        pthread_mutex_lock(&p->mu);
        s[i].gen_cur = p->gen_cur;
        s[i].gen_next = p->gen_next;
        s[i].v[0] = p->cur;
        s[i].v[1] = p->next;
        for (int j = 0; j < 2; j++) {
            if (s[i].v[j]) {
                proj__view_ref(s[i].v[j]);
            }
        }
        pthread_mutex_unlock(&p->mu);
    }
    char views[4096];
    snprintf(views, sizeof(views), "%s/views", dest);
    if (mkdir(dest, 0755) != 0 && errno != EEXIST) {
        proj__detail(detail, "cannot create %s: %s", dest, strerror(errno));
        rc = AN_EIO;
    } else if (mkdir(views, 0755) != 0) {
        proj__detail(detail, "cannot create %s: %s", views, strerror(errno));
        rc = AN_EIO;
    }
    unsigned done = 0;
    for (size_t i = 0; !rc && i < k; i++) {
        for (int j = 0; !rc && j < 2; j++) {
            if (s[i].v[j]) {
                rc = copy_view(dest, s[i].p->name, s[i].v[j], detail);
            }
        }
        done++;
        if (!rc && progress) {
            progress(arg, s[i].p->name, done, (unsigned)k);
        }
    }
    if (!rc) {
        rc = write_catalog(dest, s, k, detail);
    }
    for (size_t i = 0; i < k; i++) {
        for (int j = 0; j < 2; j++) {
            if (s[i].v[j]) {
                proj__view_release(s[i].v[j]);
            }
        }
        proj__release(s[i].p);
    }
    free(s);
    pthread_mutex_unlock(&mgr->admin_mu);
    call_exit(mgr);
    return rc;
}

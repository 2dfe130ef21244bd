/*
 * fuzz_proj_catalog.c - libFuzzer entry for the projection catalog's
 * entries read back (DATA/projections/catalog, proj_mgr.c): the input is
 * up to 8 entries, each
 *
 *   [key length] [value length] [key] [value]
 *
 * where a value is a big-endian current generation, a big-endian rebuild
 * generation (0: none) and the packed ProjectionDefinition. Each entry is
 * first handed to proj__cat_decode alone (on the fixture's manager), then
 * all of them are written into a real catalog env in a second temp dir
 * and a manager is opened over it on the fixture's log, its real open
 * path (proj_open: the entries, the sweep of stale views, each view
 * opened, each worker started), listed (proj_list) and closed.
 *
 * No input may crash; a refused entry names why; one accepted has the key
 * as its name and generations 1.. and apart; proj_open never fails on a
 * bad entry but skips it with a log line naming it, and lists exactly
 * the entries that decode.
 */
#include <ftw.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_fixture.h"
#include "proj_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_ENTRIES 8

static char pdir[128];
static unsigned skipped; /* "catalog entry skipped" lines of one open */
static bool verbose;     /* FUZZ_VERBOSE=1: those lines on stderr */

static void on_log(void *arg, enum proj_log_level level, const char *line)
{
    (void)arg;
    if (level == PROJ_LOG_ERROR && strstr(line, "catalog entry skipped")) {
        if (!strstr(line, " proj=") || strstr(line, "detail=\"\"")) {
            __builtin_trap(); /* the line names the entry and the reason */
        }
        skipped++;
    }
    if (verbose) {
        fprintf(stderr, "fuzz_proj_catalog: %s\n", line);
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void at_exit(void)
{
    nftw(pdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    ffx_close();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    ffx_open("/dev/shm", 4);
    ffx_put("order-1", "Created", "{\"k\": \"a\", \"n\": 1}");
    ffx_put("order-2", "Created", "{\"k\": \"b\"}");
    ffx_put("user-7", "Named", "{}");
    snprintf(pdir, sizeof(pdir), "%s/p2", ffx.dir);
    if (mkdir(pdir, 0755)) {
        abort();
    }
    atexit(at_exit);
    return 0;
}

struct ent {
    const uint8_t *key;
    size_t klen;
    const uint8_t *val;
    size_t vlen;
};

static void write_catalog(const struct ent *e, size_t n)
{
    char path[256];
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    snprintf(path, sizeof(path), "%s/catalog", pdir);
    mkdir(path, 0755);
    int rc = mdb_env_create(&env);
    if (!rc) {
        mdb_env_set_maxdbs(env, 2);
        mdb_env_set_mapsize(env, 64ull << 20); /* as proj_mgr.c */
        rc = mdb_env_open(env, path, MDB_NOSYNC, 0644);
    }
    if (!rc) {
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    }
    if (!rc) {
        rc = mdb_dbi_open(txn, "defs", MDB_CREATE, &dbi);
    }
    if (!rc) {
        rc = mdb_drop(txn, dbi, 0);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        MDB_val k = {e[i].klen, (void *)e[i].key};
        MDB_val v = {e[i].vlen, (void *)e[i].val};
        rc = mdb_put(txn, dbi, &k, &v, 0);
    }
    if (!rc) {
        rc = mdb_txn_commit(txn);
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    if (rc) {
        fprintf(stderr, "fuzz_proj_catalog: writing %s: %s\n", path, mdb_strerror(rc));
        abort();
    }
    mdb_env_close(env);
}

/* Whether entry i is the last one with its key (the one LMDB keeps). */
static bool last_of_key(const struct ent *e, size_t n, size_t i)
{
    for (size_t j = i + 1; j < n; j++) {
        if (e[j].klen == e[i].klen && !memcmp(e[j].key, e[i].key, e[i].klen)) {
            return false;
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ent e[MAX_ENTRIES];
    size_t n = 0;
    while (n < MAX_ENTRIES && size >= 2) {
        size_t klen = data[0];
        size_t vlen = data[1];
        if (size - 2 < klen + vlen) {
            break;
        }
        e[n] = (struct ent){data + 2, klen, data + 2 + klen, vlen};
        data += 2 + klen + vlen;
        size -= 2 + klen + vlen;
        if (klen > 0) { /* LMDB holds no empty key */
            n++;
        }
    }
    unsigned good = 0;
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        char detail[PROJ_DETAIL_MAX] = "";
        struct proj *p = NULL;
        int rc = proj__cat_decode(ffx.mgr, e[i].key, e[i].klen, e[i].val, e[i].vlen, &p, detail);
        if (rc == 0) {
            if (strlen(p->name) != e[i].klen || memcmp(p->name, e[i].key, e[i].klen) ||
                p->gen_cur == 0 || p->gen_cur == p->gen_next) {
                __builtin_trap();
            }
            proj__release(p);
        } else if (rc != AN_ENOMEM && (rc != AN_ECORRUPT || !detail[0])) {
            __builtin_trap(); /* a bad entry is corruption, and says why */
        }
        if (last_of_key(e, n, i)) {
            good += rc == 0;
            bad += rc != 0;
        }
    }

    write_catalog(e, n);
    char detail[PROJ_DETAIL_MAX] = "";
    struct proj_cfg cfg = {.dir = pdir, .max_projections = 8, .view_max_bytes = 16u << 20,
                           .log = on_log};
    proj_mgr *mgr = NULL;
    skipped = 0;
    int rc = proj_open(&cfg, ffx.env, &mgr, detail);
    if (rc) {
        fprintf(stderr, "fuzz_proj_catalog: proj_open: %s (%s)\n", an_errname(rc), detail);
        __builtin_trap(); /* bad entries are skipped, never fatal */
    }
    Annals__V1__ListProjectionsResponse *l = NULL;
    if (proj_list(mgr, &l) == 0) {
        if (l->n_projections != good) {
            __builtin_trap();
        }
        proj_list_free(l);
    }
    if (skipped != bad) {
        __builtin_trap();
    }
    proj_close(mgr);
    return 0;
}

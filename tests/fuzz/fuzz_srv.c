/*
 * fuzz_srv.c - see fuzz_srv.h.
 */
#include "fuzz_srv.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

struct srv fsrv;
static char data_dir[128];

void fsrv_open(void)
{
    memset(&fsrv, 0, sizeof(fsrv));
    snprintf(data_dir, sizeof(data_dir), "%s", ffx.dir);
    fsrv.cfg.data_dir = data_dir;
    fsrv.log = ffx.env;
    fsrv.proj = ffx.mgr;
    fsrv.started_at = gpr_now(GPR_CLOCK_MONOTONIC);
    srv_metrics_init(&fsrv.metrics);
    pthread_mutex_init(&fsrv.auth_mu, NULL);
    pthread_mutex_init(&fsrv.http_mu, NULL);
    pthread_mutex_init(&fsrv.rate_mu, NULL);
    if (log_reader_open(fsrv.log, &fsrv.http_rd)) {
        abort();
    }
}

void fsrv_close(void)
{
    fsrv_groups_stop();
    log_reader_close(fsrv.http_rd);
    if (fsrv.auth) {
        srv_auth_unref(fsrv.auth);
    }
    pthread_mutex_destroy(&fsrv.auth_mu);
    pthread_mutex_destroy(&fsrv.http_mu);
    pthread_mutex_destroy(&fsrv.rate_mu);
    memset(&fsrv, 0, sizeof(fsrv));
}

void fsrv_groups_write(const struct fsrv_rec *r, size_t n)
{
    static const char *const names[] = {"defs", "state", "marks"};
    char path[256];
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi[3];
    snprintf(path, sizeof(path), "%s/groups", data_dir);
    mkdir(path, 0700);
    int rc = mdb_env_create(&env);
    if (!rc) {
        mdb_env_set_maxdbs(env, 4);
        mdb_env_set_mapsize(env, 1ull << 30); /* as srv_group.c */
        rc = mdb_env_open(env, path, MDB_NOSYNC, 0600);
    }
    if (!rc) {
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    }
    for (unsigned t = 0; !rc && t < 3; t++) {
        rc = mdb_dbi_open(txn, names[t], MDB_CREATE, &dbi[t]);
        if (!rc) {
            rc = mdb_drop(txn, dbi[t], 0);
        }
    }
    for (size_t i = 0; !rc && i < n; i++) {
        MDB_val k = {r[i].klen, (void *)r[i].key};
        MDB_val v = {r[i].vlen, (void *)r[i].val};
        if (r[i].table > 2) {
            abort();
        }
        rc = mdb_put(txn, dbi[r[i].table], &k, &v, 0);
        if (rc == MDB_BAD_VALSIZE) {
            rc = 0; /* an empty or too long key: LMDB holds none */
        }
    }
    if (!rc) {
        rc = mdb_txn_commit(txn);
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    if (rc) {
        fprintf(stderr, "fuzz_srv: writing %s: %s\n", path, mdb_strerror(rc));
        abort();
    }
    mdb_env_close(env);
}

int fsrv_groups_start(char *detail)
{
    return srv_group_start(&fsrv, detail);
}

void fsrv_groups_stop(void)
{
    if (fsrv.groups) {
        srv_group_stop(&fsrv);
        srv_group_free(&fsrv);
    }
}

/*
 * log_index.c - the stream index: how the log finds a stream's head, its
 * versions and its deletions.
 *
 * Three sub-databases (log.h has the overview):
 *
 *   streams  name -> head (32 bytes): stream id, last version, position of
 *            its latest run, position of its latest deletion. One small
 *            row per stream, rewritten on every append to the stream: the
 *            table stays dense (about 70 rows a page), so a commit touching
 *            many random streams dirties few pages of it.
 *   runs     a run is the events one append gave one stream: consecutive
 *            versions at consecutive positions. Its record rides in a small
 *            header of its first event's value in `events` (log_int.h), so
 *            it costs no tree of its own and is written with the event.
 *   dels     (stream id BE, position BE) -> (last version, tombstone), one
 *            per soft delete or tombstone. Rare.
 *
 * A stream's runs form a chain from its latest run back to its first one.
 * Each run links to its parent (the run before it) and to a "jump" run
 * further back, chosen by the skew-binary rule (E. W. Myers, "An
 * applicative random-access stack", 1983): if the parent's jump and the
 * jump's own jump span equal distances, the new run jumps over both,
 * otherwise it jumps to its parent. Depths of jumps then follow the skew
 * binary numbers, and the last run whose first version (or first position)
 * is at or below a target is found in O(log n) hops from the latest run,
 * each hop one lookup in `events`. Appending needs only the parent and the
 * parent's jump, both already near the head.
 */
#include "log_int.h"

#include <string.h>

/* ---- records ---- */

void log__head_decode(const MDB_val *v, struct log__head *h)
{
    const uint8_t *p = v->mv_data;
    h->sid = log__le64_get(p);
    h->last_version = log__le64_get(p + 8);
    h->last_run = log__le64_get(p + 16);
    h->last_del = log__le64_get(p + 24);
}

void log__head_encode(const struct log__head *h, uint8_t out[LOG__HEAD_BYTES])
{
    log__le64_put(out, h->sid);
    log__le64_put(out + 8, h->last_version);
    log__le64_put(out + 16, h->last_run);
    log__le64_put(out + 24, h->last_del);
}

void log__run_encode(const struct log__run *r, uint8_t out[LOG__RUN_BYTES])
{
    log__le64_put(out, r->sid);
    log__le64_put(out + 8, r->first_version);
    log__le64_put(out + 16, r->depth);
    log__le64_put(out + 24, r->parent);
    log__le64_put(out + 32, r->jump);
    log__le64_put(out + 40, r->jump_depth);
    memcpy(out + 48, &r->count, 4);
}

int log__run_get(const log_env *env, MDB_txn *txn, uint64_t pos, struct log__run *r)
{
    MDB_val k = {.mv_size = 8, .mv_data = &pos};
    MDB_val v;
    int rc = mdb_get(txn, env->dbi_events, &k, &v);
    if (rc) {
        return rc == MDB_NOTFOUND ? AN_ECORRUPT : log__from_mdb(rc, "events", NULL);
    }
    if (v.mv_size < 1 + LOG__RUN_BYTES || ((const uint8_t *)v.mv_data)[0] != LOG__RUN_BYTES) {
        return AN_ECORRUPT;
    }
    const uint8_t *p = (const uint8_t *)v.mv_data + 1;
    r->position = pos;
    r->sid = log__le64_get(p);
    r->first_version = log__le64_get(p + 8);
    r->depth = log__le64_get(p + 16);
    r->parent = log__le64_get(p + 24);
    r->jump = log__le64_get(p + 32);
    r->jump_depth = log__le64_get(p + 40);
    memcpy(&r->count, p + 48, 4);
    if (r->count == 0 || (r->depth > 0 && (r->parent == 0 || r->jump == 0))) {
        return AN_ECORRUPT;
    }
    return 0;
}

int log__run_link(const log_env *env, MDB_txn *txn, const struct log__run *parent,
                  struct log__run *r)
{
    if (!parent) {
        r->depth = 0;
        r->parent = 0;
        r->jump = 0;
        r->jump_depth = 0;
        return 0;
    }
    r->depth = parent->depth + 1;
    r->parent = parent->position;
    r->jump = parent->position;
    r->jump_depth = parent->depth;
    if (parent->depth > 0) {
        struct log__run j;
        int rc = log__run_get(env, txn, parent->jump, &j);
        if (rc) {
            return rc;
        }
        if (j.depth > 0 && parent->depth - parent->jump_depth == j.depth - j.jump_depth) {
            r->jump = j.jump;
            r->jump_depth = j.jump_depth;
        }
    }
    return 0;
}

int log__run_find(const log_env *env, MDB_txn *txn, const struct log__run *from, bool by_position,
                  uint64_t target, struct log__run *out)
{
    struct log__run x = *from;
    struct log__run j;
    int rc;
    while ((by_position ? x.position : x.first_version) > target) {
        if (x.depth == 0) {
            return AN_ENOTFOUND;
        }
        if (x.jump != x.parent) {
            if ((rc = log__run_get(env, txn, x.jump, &j))) {
                return rc;
            }
            if ((by_position ? j.position : j.first_version) > target) {
                x = j;
                continue;
            }
        }
        if ((rc = log__run_get(env, txn, x.parent, &x))) {
            return rc;
        }
    }
    *out = x;
    return 0;
}

/* ---- heads ---- */

int log__head_get(const log_env *env, MDB_txn *txn, const char *name, size_t len,
                  struct log__head *h)
{
    MDB_val k = {.mv_size = len, .mv_data = (void *)name};
    MDB_val v;
    if (len == 0 || len > LOG_NAME_MAX) {
        return AN_ENOTFOUND;
    }
    int rc = mdb_get(txn, env->dbi_streams, &k, &v);
    if (rc) {
        return rc == MDB_NOTFOUND ? AN_ENOTFOUND : log__from_mdb(rc, "streams", NULL);
    }
    if (v.mv_size != LOG__HEAD_BYTES) {
        return AN_ECORRUPT;
    }
    log__head_decode(&v, h);
    return 0;
}

/* ---- deletions ---- */

int log__del_get(const log_env *env, MDB_txn *txn, uint64_t sid, uint64_t pos,
                 struct log__del *d)
{
    uint8_t key[16];
    log__be64_put(key, sid);
    log__be64_put(key + 8, pos);
    MDB_val k = {.mv_size = sizeof(key), .mv_data = key};
    MDB_val v;
    int rc = mdb_get(txn, env->dbi_dels, &k, &v);
    if (rc) {
        return rc == MDB_NOTFOUND ? AN_ECORRUPT : log__from_mdb(rc, "dels", NULL);
    }
    if (v.mv_size != LOG__DEL_BYTES) {
        return AN_ECORRUPT;
    }
    d->position = pos;
    d->last_version = log__le64_get(v.mv_data);
    d->tombstone = ((const uint8_t *)v.mv_data)[8] != 0;
    return 0;
}

/* The last deletion of sid at or before bound, when the head's latest one
 * is after it: a cursor step back from (sid, bound + 1). */
static int del_before(const log_env *env, MDB_txn *txn, uint64_t sid, uint64_t bound,
                      struct log__del *d, bool *found)
{
    MDB_cursor *c = NULL;
    uint8_t key[16];
    MDB_val k = {.mv_size = sizeof(key), .mv_data = key};
    MDB_val v;
    *found = false;
    log__be64_put(key, sid);
    log__be64_put(key + 8, bound + 1);
    int rc = mdb_cursor_open(txn, env->dbi_dels, &c);
    if (rc) {
        return log__from_mdb(rc, "dels", NULL);
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    rc = mdb_cursor_get(c, &k, &v, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
    if (rc == 0 && k.mv_size == 16 && log__be64_get(k.mv_data) == sid) {
        if (v.mv_size != LOG__DEL_BYTES) {
            rc = AN_ECORRUPT;
        } else {
            d->position = log__be64_get((const uint8_t *)k.mv_data + 8);
            d->last_version = log__le64_get(v.mv_data);
            d->tombstone = ((const uint8_t *)v.mv_data)[8] != 0;
            *found = true;
        }
    } else if (rc && rc != MDB_NOTFOUND) {
        rc = log__from_mdb(rc, "dels", NULL);
    } else {
        rc = 0;
    }
    mdb_cursor_close(c);
    return rc;
}

/* ---- a stream as of a bound ---- */

int log__stream_state(const log_env *env, MDB_txn *txn, const char *name, size_t len,
                      uint64_t bound, struct log__sstate *out)
{
    struct log__sstate st = {.last_version = -1};
    int rc = log__head_get(env, txn, name, len, &st.head);
    if (rc) {
        return rc;
    }
    st.sid = st.head.sid;
    if (st.sid > bound) {
        *out = st; /* its first event (position == sid) is beyond the bound */
        return 0;
    }
    st.exists = true;
    if ((rc = log__run_get(env, txn, st.head.last_run, &st.run))) {
        return rc;
    }
    if (st.run.position > bound &&
        (rc = log__run_find(env, txn, &st.run, true, bound, &st.run))) {
        return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
    }
    /* a position bound may cut into a run */
    uint64_t in_run = st.run.count - 1;
    if (st.run.position + in_run > bound) {
        in_run = bound - st.run.position;
    }
    st.last_version = (int64_t)(st.run.first_version + in_run);
    st.last_position = st.run.position + in_run;

    if (st.head.last_del && st.head.last_del <= bound) {
        if ((rc = log__del_get(env, txn, st.sid, st.head.last_del, &st.del))) {
            return rc;
        }
        st.has_del = true;
    } else if (st.head.last_del) {
        if ((rc = del_before(env, txn, st.sid, bound, &st.del, &st.has_del))) {
            return rc;
        }
    }
    st.tombstoned = st.has_del && st.del.tombstone;
    *out = st;
    return 0;
}

int log__version_position(const log_env *env, MDB_txn *txn, const struct log__sstate *st,
                          uint64_t version, uint64_t *pos)
{
    struct log__run r;
    int rc = log__run_find(env, txn, &st->run, false, version, &r);
    if (rc) {
        return rc;
    }
    if (version >= r.first_version + r.count) {
        return AN_ENOTFOUND;
    }
    *pos = r.position + (version - r.first_version);
    return 0;
}

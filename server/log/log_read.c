/*
 * log_read.c - reads of the event log: streams, the global log, stream
 * facts, time travel (as of a position or an instant), and log_verify.
 *
 * Every read is bounded by a position: the reader's durable head, or lower
 * for a read "as of" a point. A stream's state as of a bound comes from its
 * sindex entries: the last run at or before the bound gives its last
 * version (found by binary search over versions when the bound cuts into
 * the stream's history), the last deletion at or before the bound says
 * which versions are hidden.
 */
#include "log_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sindex ---- */

struct run {
    uint64_t first_version;
    uint64_t first_position;
    uint32_t count;
};

static void run_decode(const MDB_val *k, const MDB_val *v, struct run *r)
{
    r->first_version = log__be64_get((const uint8_t *)k->mv_data + 9);
    r->first_position = log__le64_get(v->mv_data);
    memcpy(&r->count, (const uint8_t *)v->mv_data + 8, 4);
}

static bool key_is(const MDB_val *k, uint64_t sid, unsigned kind)
{
    const uint8_t *p = k->mv_data;
    return k->mv_size == LOG__SKEY_BYTES && log__be64_get(p) == sid && p[8] == kind;
}

/* Positions the cursor on the last key below (sid, kind, num). */
static int seek_before(MDB_cursor *c, uint64_t sid, unsigned kind, uint64_t num, MDB_val *k,
                       MDB_val *v)
{
    struct log__skey sk;
    log__skey_pack(&sk, sid, kind, num);
    *k = (MDB_val){.mv_size = sizeof(sk.b), .mv_data = sk.b};
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        return mdb_cursor_get(c, k, v, MDB_LAST);
    }
    if (rc) {
        return rc;
    }
    return mdb_cursor_get(c, k, v, MDB_PREV);
}

/* The run holding (sid, version). */
static int run_at(MDB_cursor *c, uint64_t sid, uint64_t version, struct run *r)
{
    struct log__skey sk;
    MDB_val k;
    MDB_val v;
    log__skey_pack(&sk, sid, LOG__KIND_RUN, version);
    k = (MDB_val){.mv_size = sizeof(sk.b), .mv_data = sk.b};
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && k.mv_size == sizeof(sk.b) && memcmp(k.mv_data, sk.b, sizeof(sk.b)) == 0) {
        if (v.mv_size != LOG__RUN_BYTES) {
            return AN_ECORRUPT;
        }
        run_decode(&k, &v, r);
        return 0;
    }
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    } else if (rc == 0) {
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    }
    if (rc == MDB_NOTFOUND || (rc == 0 && !key_is(&k, sid, LOG__KIND_RUN))) {
        return AN_ENOTFOUND;
    }
    if (rc) {
        return log__from_mdb(rc, "sindex", NULL);
    }
    if (v.mv_size != LOG__RUN_BYTES) {
        return AN_ECORRUPT;
    }
    run_decode(&k, &v, r);
    if (version >= r->first_version + r->count) {
        return AN_ENOTFOUND;
    }
    return 0;
}

int log__version_position(MDB_cursor *c, uint64_t sid, uint64_t version, uint64_t *pos)
{
    struct run r;
    int rc = run_at(c, sid, version, &r);
    if (rc) {
        return rc;
    }
    *pos = r.first_position + (version - r.first_version);
    return 0;
}

int log__stream_sid(const log_env *env, MDB_txn *txn, const char *name, size_t len,
                    uint64_t *sid)
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
    if (v.mv_size != 8) {
        return AN_ECORRUPT;
    }
    *sid = log__be64_get(v.mv_data);
    return 0;
}

int log__stream_state(const log_env *env, MDB_txn *txn, MDB_cursor *c, const char *name,
                      size_t len, uint64_t bound, struct log__sstate *out)
{
    struct log__sstate st = {.last_version = -1};
    MDB_val k;
    MDB_val v;
    struct run r;
    int rc = log__stream_sid(env, txn, name, len, &st.sid);
    if (rc) {
        return rc;
    }
    /* the stream's last run: the key just below (sid, DEL, 0) */
    rc = seek_before(c, st.sid, LOG__KIND_DEL, 0, &k, &v);
    if (rc || !key_is(&k, st.sid, LOG__KIND_RUN) || v.mv_size != LOG__RUN_BYTES) {
        return rc && rc != MDB_NOTFOUND ? log__from_mdb(rc, "sindex", NULL) : AN_ECORRUPT;
    }
    run_decode(&k, &v, &r);
    uint64_t last_v = r.first_version + r.count - 1;
    uint64_t last_p = r.first_position + r.count - 1;
    if (st.sid > bound) {
        /* its first event (position == sid) is beyond the bound */
        *out = st;
        return 0;
    }
    st.exists = true;
    if (last_p > bound) {
        /* largest version at or before the bound; version 0 is (sid <= bound) */
        uint64_t lo = 0;
        uint64_t hi = last_v;
        while (hi - lo > 1) {
            uint64_t mid = lo + (hi - lo) / 2;
            uint64_t p;
            if ((rc = log__version_position(c, st.sid, mid, &p))) {
                return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
            }
            if (p <= bound) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        last_v = lo;
        if ((rc = log__version_position(c, st.sid, lo, &last_p))) {
            return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
        }
    }
    st.last_version = (int64_t)last_v;
    st.last_position = last_p;

    /* the last deletion at or before the bound */
    if (bound == UINT64_MAX) {
        rc = seek_before(c, st.sid, LOG__KIND_DEL + 1, 0, &k, &v);
    } else {
        rc = seek_before(c, st.sid, LOG__KIND_DEL, bound + 1, &k, &v);
    }
    if (rc && rc != MDB_NOTFOUND) {
        return log__from_mdb(rc, "sindex", NULL);
    }
    if (rc == 0 && key_is(&k, st.sid, LOG__KIND_DEL)) {
        if (v.mv_size != LOG__DEL_BYTES) {
            return AN_ECORRUPT;
        }
        st.has_del = true;
        st.del_position = log__be64_get((const uint8_t *)k.mv_data + 9);
        st.del_version = log__le64_get(v.mv_data);
        st.tombstoned = ((const uint8_t *)v.mv_data)[8] != 0;
    }
    *out = st;
    return 0;
}

/* ---- events ---- */

/* The event at pos through the events cursor (SET_KEY, or NEXT when the
 * cursor already sits just before it). */
static int event_get(MDB_cursor *c, uint64_t pos, bool next, struct log_event *ev)
{
    MDB_val k = {.mv_size = 8, .mv_data = &pos};
    MDB_val v;
    int rc = mdb_cursor_get(c, &k, &v, next ? MDB_NEXT : MDB_SET_KEY);
    if (rc == MDB_NOTFOUND) {
        return AN_ECORRUPT;
    }
    if (rc) {
        return log__from_mdb(rc, "events", NULL);
    }
    uint64_t got;
    if (k.mv_size != 8) {
        return AN_ECORRUPT;
    }
    memcpy(&got, k.mv_data, 8);
    if (got != pos || log_event_peek(v.mv_data, v.mv_size, ev) || ev->position != pos) {
        return AN_ECORRUPT;
    }
    return 0;
}

int log_get_event(log_reader *rd, uint64_t position, struct log_event *out)
{
    assert(rd->active);
    if (position == 0 || position > rd->head) {
        log__detail(rd->detail, "no event at position %llu (head %llu)",
                    (unsigned long long)position, (unsigned long long)rd->head);
        return AN_ENOTFOUND;
    }
    int rc = event_get(rd->c_events, position, false, out);
    if (rc) {
        log__detail(rd->detail, "event at position %llu cannot be read",
                    (unsigned long long)position);
    }
    return rc;
}

/* ---- time travel ---- */

static int ts_at(log_reader *rd, uint64_t pos, int64_t *ts)
{
    struct log_event ev;
    int rc = event_get(rd->c_events, pos, false, &ev);
    if (rc) {
        log__detail(rd->detail, "event at position %llu cannot be read",
                    (unsigned long long)pos);
        return rc;
    }
    *ts = ev.recorded_at_ns;
    return 0;
}

int log_time_to_position(log_reader *rd, int64_t unix_nanos, uint64_t *pos_out)
{
    assert(rd->active);
    uint64_t head = rd->head;
    int64_t ts;
    int rc;
    if (head == 0) {
        *pos_out = 0;
        return 0;
    }
    if ((rc = ts_at(rd, head, &ts))) {
        return rc;
    }
    if (ts <= unix_nanos) {
        *pos_out = head;
        return 0;
    }
    if ((rc = ts_at(rd, 1, &ts))) {
        return rc;
    }
    if (ts > unix_nanos) {
        *pos_out = 0;
        return 0;
    }
    /* invariant: ts(lo) <= t < ts(hi) */
    uint64_t lo = 1;
    uint64_t hi = head;
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if ((rc = ts_at(rd, mid, &ts))) {
            return rc;
        }
        if (ts <= unix_nanos) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    *pos_out = lo;
    return 0;
}

int log_resolve_as_of(log_reader *rd, const Annals__V1__AsOf *as_of, uint64_t *pos_out)
{
    assert(rd->active);
    if (!as_of) {
        *pos_out = rd->head;
        return 0;
    }
    switch (as_of->point_case) {
    case ANNALS__V1__AS_OF__POINT_POSITION:
        *pos_out = as_of->position < rd->head ? as_of->position : rd->head;
        return 0;
    case ANNALS__V1__AS_OF__POINT_UNIX_NANOS:
        return log_time_to_position(rd, as_of->unix_nanos, pos_out);
    case ANNALS__V1__AS_OF__POINT__NOT_SET:
    case _ANNALS__V1__AS_OF__POINT__CASE_IS_INT_SIZE:
        break;
    }
    *pos_out = rd->head;
    return 0;
}

/* ---- streams ---- */

static uint64_t clamp(const log_reader *rd, uint64_t as_of)
{
    return as_of < rd->head ? as_of : rd->head;
}

/* The visible version range [*vmin, *vmax] of a stream as of bound. */
static int visible_range(log_reader *rd, const char *name, uint64_t bound,
                         struct log__sstate *st, uint64_t *vmin)
{
    size_t len = strlen(name);
    char nm[64];
    log__printable(nm, sizeof(nm), name, len);
    int rc = log__stream_state(rd->env, rd->txn, rd->c_sindex, name, len, bound, st);
    if (rc == AN_ENOTFOUND || (rc == 0 && !st->exists)) {
        log__detail(rd->detail, "stream '%s' not found", nm);
        return AN_ENOTFOUND;
    }
    if (rc) {
        log__detail(rd->detail, "stream '%s': its index cannot be read", nm);
        return rc;
    }
    *vmin = st->has_del ? st->del_version + 1 : 0;
    return 0;
}

int log_read_stream(log_reader *rd, const struct log_stream_read *q, log_event_fn fn,
                    void *arg, uint64_t *next_version, bool *done)
{
    assert(rd->active);
    struct log__sstate st;
    uint64_t vmin;
    size_t len = q->stream ? strlen(q->stream) : 0;
    if (len == 0 || len > LOG_NAME_MAX) {
        log__detail(rd->detail, "stream name must be 1..%u bytes", LOG_NAME_MAX);
        return AN_EINVAL;
    }
    int rc = visible_range(rd, q->stream, clamp(rd, q->as_of), &st, &vmin);
    if (rc) {
        return rc;
    }
    int64_t lv = st.last_version;
    if ((int64_t)vmin > lv) {
        char nm[64];
        log__printable(nm, sizeof(nm), q->stream, len);
        log__detail(rd->detail, "stream '%s' is deleted", nm);
        return AN_ENOTFOUND;
    }
    uint64_t count = 0;
    bool more = true;
    struct log_event ev;
    struct run r;

    if (!q->backwards) {
        uint64_t v = q->from_end ? (uint64_t)lv : (q->from_version > vmin ? q->from_version : vmin);
        while (more && (int64_t)v <= lv && (q->max_count == 0 || count < q->max_count)) {
            if ((rc = run_at(rd->c_sindex, st.sid, v, &r))) {
                goto out_corrupt;
            }
            uint64_t pos = r.first_position + (v - r.first_version);
            uint64_t end = r.first_version + r.count - 1;
            bool next = false;
            for (; more && v <= end && (int64_t)v <= lv; v++, pos++) {
                if ((rc = event_get(rd->c_events, pos, next, &ev))) {
                    goto out_corrupt;
                }
                next = true;
                more = fn(arg, &ev) && (q->max_count == 0 || ++count < q->max_count);
            }
            if (!more && q->max_count && count >= q->max_count) {
                break;
            }
        }
        if (next_version) {
            *next_version = v;
        }
        if (done) {
            *done = (int64_t)v > lv;
        }
        return 0;
    }

    int64_t v = q->from_end ? lv : (q->from_version < (uint64_t)lv ? (int64_t)q->from_version : lv);
    while (more && v >= (int64_t)vmin && (q->max_count == 0 || count < q->max_count)) {
        if ((rc = run_at(rd->c_sindex, st.sid, (uint64_t)v, &r))) {
            goto out_corrupt;
        }
        uint64_t pos = r.first_position + ((uint64_t)v - r.first_version);
        bool prev = false;
        for (; more && v >= (int64_t)r.first_version && v >= (int64_t)vmin; v--, pos--) {
            if (prev) {
                MDB_val k;
                MDB_val val;
                rc = mdb_cursor_get(rd->c_events, &k, &val, MDB_PREV);
                uint64_t got = 0;
                if (rc == 0 && k.mv_size == 8) {
                    memcpy(&got, k.mv_data, 8);
                }
                if (rc || got != pos || log_event_peek(val.mv_data, val.mv_size, &ev)) {
                    rc = AN_ECORRUPT;
                    goto out_corrupt;
                }
            } else if ((rc = event_get(rd->c_events, pos, false, &ev))) {
                goto out_corrupt;
            }
            prev = true;
            more = fn(arg, &ev) && (q->max_count == 0 || ++count < q->max_count);
        }
    }
    if (next_version) {
        *next_version = v < 0 ? 0 : (uint64_t)v;
    }
    if (done) {
        *done = v < (int64_t)vmin;
    }
    return 0;

out_corrupt:
    log__detail(rd->detail, "stream index or events of '%.*s' cannot be read", (int)len,
                q->stream);
    return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
}

int log_get_stream(log_reader *rd, const char *stream, uint64_t as_of,
                   struct log_stream_info *out)
{
    assert(rd->active);
    struct log__sstate st;
    struct log_event ev;
    uint64_t vmin;
    size_t len = stream ? strlen(stream) : 0;
    if (len == 0 || len > LOG_NAME_MAX) {
        log__detail(rd->detail, "stream name must be 1..%u bytes", LOG_NAME_MAX);
        return AN_EINVAL;
    }
    int rc = visible_range(rd, stream, clamp(rd, as_of), &st, &vmin);
    if (rc) {
        return rc;
    }
    struct log_stream_info info = {
        .last_version = st.last_version,
        .deleted = st.has_del,
        .tombstoned = st.tombstoned,
    };
    if ((int64_t)vmin <= st.last_version) {
        info.event_count = (uint64_t)st.last_version - vmin + 1;
        info.last_position = st.last_position;
        if ((rc = log__version_position(rd->c_sindex, st.sid, vmin, &info.first_position))) {
            goto out_corrupt;
        }
    }
    /* created: the first event, whose position is the stream id */
    if ((rc = event_get(rd->c_events, st.sid, false, &ev))) {
        goto out_corrupt;
    }
    info.created_ns = ev.recorded_at_ns;
    if ((rc = event_get(rd->c_events, st.last_position, false, &ev))) {
        goto out_corrupt;
    }
    info.updated_ns = ev.recorded_at_ns;
    if (st.has_del && st.del_position > st.last_position) {
        if ((rc = event_get(rd->c_events, st.del_position, false, &ev))) {
            goto out_corrupt;
        }
        info.updated_ns = ev.recorded_at_ns;
    }
    *out = info;
    return 0;

out_corrupt:
    log__detail(rd->detail, "stream '%.*s': its index or events cannot be read", (int)len,
                stream);
    return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
}

/* ---- the global log ---- */

static bool filter_match(const struct log_filter *f, const struct log_event *ev)
{
    if (f->n_stream_prefixes) {
        bool hit = false;
        for (size_t i = 0; i < f->n_stream_prefixes && !hit; i++) {
            size_t pl = strlen(f->stream_prefixes[i]);
            hit = ev->stream_len >= pl && memcmp(ev->stream, f->stream_prefixes[i], pl) == 0;
        }
        if (!hit) {
            return false;
        }
    }
    if (f->n_event_types) {
        for (size_t i = 0; i < f->n_event_types; i++) {
            size_t tl = strlen(f->event_types[i]);
            if (ev->type_len == tl && memcmp(ev->type, f->event_types[i], tl) == 0) {
                return true;
            }
        }
        return false;
    }
    return true;
}

int log_read_all(log_reader *rd, const struct log_all_read *q, log_event_fn fn, void *arg,
                 uint64_t *next_position, bool *done)
{
    assert(rd->active);
    uint64_t bound = clamp(rd, q->as_of);
    const struct log_filter *f = q->filter;
    bool filtered = f && (f->n_stream_prefixes || f->n_event_types);
    uint64_t pos;
    uint64_t count = 0;
    uint64_t scanned = 0;
    bool more = true;
    struct log_event ev;
    MDB_val k;
    MDB_val v;
    int rc = 0;

    if (!q->backwards) {
        pos = q->from_end ? bound : (q->from_position > 1 ? q->from_position : 1);
        if (pos == 0) {
            pos = 1;
        }
        MDB_cursor_op op = MDB_SET_KEY;
        while (more && pos <= bound) {
            k = (MDB_val){.mv_size = 8, .mv_data = &pos};
            rc = mdb_cursor_get(rd->c_events, &k, &v, op);
            uint64_t got = 0;
            if (rc == 0 && k.mv_size == 8) {
                memcpy(&got, k.mv_data, 8);
            }
            if (rc || got != pos || log_event_peek(v.mv_data, v.mv_size, &ev)) {
                goto out_corrupt;
            }
            op = MDB_NEXT;
            pos++;
            scanned++;
            if (!filtered || filter_match(f, &ev)) {
                more = fn(arg, &ev) && (q->max_count == 0 || ++count < q->max_count);
            }
            if (q->max_scan && scanned >= q->max_scan) {
                break;
            }
        }
        if (next_position) {
            *next_position = pos;
        }
        if (done) {
            *done = pos > bound;
        }
        return 0;
    }

    pos = (q->from_end || q->from_position == 0 || q->from_position > bound) ? bound
                                                                             : q->from_position;
    MDB_cursor_op op = MDB_SET_KEY;
    while (more && pos >= 1) {
        k = (MDB_val){.mv_size = 8, .mv_data = &pos};
        rc = mdb_cursor_get(rd->c_events, &k, &v, op);
        uint64_t got = 0;
        if (rc == 0 && k.mv_size == 8) {
            memcpy(&got, k.mv_data, 8);
        }
        if (rc || got != pos || log_event_peek(v.mv_data, v.mv_size, &ev)) {
            goto out_corrupt;
        }
        op = MDB_PREV;
        pos--;
        scanned++;
        if (!filtered || filter_match(f, &ev)) {
            more = fn(arg, &ev) && (q->max_count == 0 || ++count < q->max_count);
        }
        if (q->max_scan && scanned >= q->max_scan) {
            break;
        }
    }
    if (next_position) {
        *next_position = pos;
    }
    if (done) {
        *done = pos == 0;
    }
    return 0;

out_corrupt:
    log__detail(rd->detail, "event at position %llu cannot be read (%s)",
                (unsigned long long)pos, rc ? mdb_strerror(rc) : "bad bytes");
    return rc && rc != MDB_NOTFOUND ? log__from_mdb(rc, "events", NULL) : AN_ECORRUPT;
}

/* ---- verify ---- */

int log_verify(log_env *env, log_progress_fn progress, void *arg, char *detail)
{
    log_reader *rd = NULL;
    struct log_event ev;
    MDB_val k;
    MDB_val v;
    uint64_t expect = 1;
    int64_t last_ts = INT64_MIN;
    uint64_t runs_total = 0;
    int rc = log_reader_open(env, &rd);
    if (rc) {
        log__detail(detail, "verify: no reader: %s", an_strerror(rc));
        return rc;
    }
    if ((rc = log_reader_begin(rd))) {
        log_reader_close(rd);
        return rc;
    }
    uint64_t head = rd->head;
    MDB_cursor_op op = MDB_FIRST;
    while ((rc = mdb_cursor_get(rd->c_events, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        uint64_t pos;
        memcpy(&pos, k.mv_data, 8);
        if (pos > head) {
            break;
        }
        if (k.mv_size != 8 || pos != expect) {
            log__detail(detail, "position %llu found where %llu was expected (a gap)",
                        (unsigned long long)pos, (unsigned long long)expect);
            rc = AN_ECORRUPT;
            goto out;
        }
        if (log_event_peek(v.mv_data, v.mv_size, &ev) || ev.position != pos ||
            ev.id_len != LOG_ID_BYTES) {
            log__detail(detail, "event at position %llu cannot be decoded",
                        (unsigned long long)pos);
            rc = AN_ECORRUPT;
            goto out;
        }
        if (ev.recorded_at_ns < last_ts) {
            log__detail(detail, "time goes back at position %llu", (unsigned long long)pos);
            rc = AN_ECORRUPT;
            goto out;
        }
        last_ts = ev.recorded_at_ns;
        MDB_val ik = {.mv_size = LOG_ID_BYTES, .mv_data = (void *)ev.id};
        MDB_val iv;
        if (mdb_get(rd->txn, env->dbi_ids, &ik, &iv) || iv.mv_size != 8 ||
            log__le64_get(iv.mv_data) != pos) {
            log__detail(detail, "the id of the event at position %llu does not lead to it",
                        (unsigned long long)pos);
            rc = AN_ECORRUPT;
            goto out;
        }
        uint64_t sid;
        uint64_t ip;
        if (log__stream_sid(env, rd->txn, ev.stream, ev.stream_len, &sid) ||
            log__version_position(rd->c_sindex, sid, ev.version, &ip) || ip != pos) {
            log__detail(detail, "the stream index does not lead to the event at position %llu",
                        (unsigned long long)pos);
            rc = AN_ECORRUPT;
            goto out;
        }
        if (progress && pos % 100000 == 0) {
            progress(arg, pos, head);
        }
        expect++;
    }
    if (rc && rc != MDB_NOTFOUND) {
        rc = log__from_mdb(rc, "verify", detail);
        goto out;
    }
    if (expect - 1 != head) {
        log__detail(detail, "the log ends at %llu but the head is %llu",
                    (unsigned long long)(expect - 1), (unsigned long long)head);
        rc = AN_ECORRUPT;
        goto out;
    }
    /* runs: each stream's versions are 0.. without gaps */
    uint64_t cur_sid = 0;
    uint64_t next_v = 0;
    op = MDB_FIRST;
    while ((rc = mdb_cursor_get(rd->c_sindex, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        const uint8_t *kb = k.mv_data;
        if (k.mv_size != LOG__SKEY_BYTES) {
            rc = AN_ECORRUPT;
            log__detail(detail, "a stream index key has %zu bytes", k.mv_size);
            goto out;
        }
        if (kb[8] != LOG__KIND_RUN) {
            continue;
        }
        struct run r;
        run_decode(&k, &v, &r);
        uint64_t sid = log__be64_get(kb);
        if (sid != cur_sid) {
            cur_sid = sid;
            next_v = 0;
        }
        if (r.first_position > head) {
            continue;
        }
        if (r.first_version != next_v || r.count == 0) {
            log__detail(detail, "stream %llu: versions jump from %llu to %llu",
                        (unsigned long long)sid, (unsigned long long)next_v,
                        (unsigned long long)r.first_version);
            rc = AN_ECORRUPT;
            goto out;
        }
        next_v += r.count;
        runs_total += r.count;
    }
    rc = (rc == MDB_NOTFOUND) ? 0 : log__from_mdb(rc, "verify", detail);
    if (!rc && runs_total != head) {
        log__detail(detail, "stream runs hold %llu events but the log has %llu",
                    (unsigned long long)runs_total, (unsigned long long)head);
        rc = AN_ECORRUPT;
    }
out:
    log_reader_end(rd);
    log_reader_close(rd);
    return rc;
}

/*
 * log_read.c - reads of the event log: streams, the global log, stream
 * facts, time travel (as of a position or an instant), and log_verify.
 *
 * Every read is bounded by a position: the reader's durable head, or lower
 * for a read "as of" a point. A stream's state as of a bound comes from the
 * stream index (log_index.c): the last run at or before the bound gives its
 * last version, the last deletion at or before the bound says which
 * versions are hidden.
 */
#include "log_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (got != pos || log__peek_value(v.mv_data, v.mv_size, ev) || ev->position != pos) {
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
    log_percent_encode(nm, sizeof(nm), name, len);
    int rc = log__stream_state(rd->env, rd->txn, name, len, bound, st);
    if (rc == AN_ENOTFOUND || (rc == 0 && !st->exists)) {
        log__detail(rd->detail, "stream '%s' not found", nm);
        return AN_ENOTFOUND;
    }
    if (rc) {
        log__detail(rd->detail, "stream '%s': its index cannot be read", nm);
        return rc;
    }
    *vmin = st->has_del ? st->del.last_version + 1 : 0;
    return 0;
}

/* Runs gathered for a forward read, newest last. */
#define CHUNK_RUNS 128

/* Hands events [v, end] of run r to fn, forwards; *v advances. */
static int emit_forward(log_reader *rd, const struct log__run *r, uint64_t *v, uint64_t end,
                        log_event_fn fn, void *arg, uint64_t max_count, uint64_t *count,
                        bool *more)
{
    struct log_event ev;
    uint64_t pos = r->position + (*v - r->first_version);
    bool next = false;
    while (*more && *v <= end) {
        int rc = event_get(rd->c_events, pos, next, &ev);
        if (rc) {
            return rc;
        }
        next = true;
        (*v)++;
        pos++;
        *more = fn(arg, &ev) && (max_count == 0 || ++*count < max_count);
    }
    return 0;
}

/*
 * Forwards: runs are linked backwards only, so each chunk of at most
 * CHUNK_RUNS versions is gathered by walking back from the run that holds
 * the chunk's last version (every run holds at least one version, so at
 * most CHUNK_RUNS runs), then emitted oldest first: one O(log n) search and
 * one parent step per run, per chunk.
 */
static int read_forward(log_reader *rd, const struct log__sstate *st, uint64_t v, uint64_t vmax,
                        const struct log_stream_read *q, log_event_fn fn, void *arg,
                        uint64_t *next_version)
{
    struct log__run runs[CHUNK_RUNS];
    uint64_t count = 0;
    bool more = true;
    int rc = 0;
    while (more && v <= vmax) {
        uint64_t last = vmax - v < CHUNK_RUNS - 1 ? vmax : v + CHUNK_RUNS - 1;
        struct log__run r;
        if ((rc = log__run_find(rd->env, rd->txn, &st->run, false, last, &r))) {
            break;
        }
        size_t n = 0;
        runs[n++] = r;
        while (r.first_version > v) {
            if (n == CHUNK_RUNS || (rc = log__run_get(rd->env, rd->txn, r.parent, &r))) {
                rc = rc ? rc : AN_ECORRUPT;
                goto out;
            }
            runs[n++] = r;
        }
        for (size_t i = n; i-- > 0 && more && v <= last;) {
            uint64_t end = runs[i].first_version + runs[i].count - 1;
            if (end > last) {
                end = last;
            }
            if ((rc = emit_forward(rd, &runs[i], &v, end, fn, arg, q->max_count, &count, &more))) {
                goto out;
            }
        }
    }
out:
    *next_version = v;
    return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
}

static int read_backward(log_reader *rd, const struct log__sstate *st, int64_t v, uint64_t vmin,
                         const struct log_stream_read *q, log_event_fn fn, void *arg,
                         int64_t *next_version)
{
    struct log__run r;
    struct log_event ev;
    uint64_t count = 0;
    bool more = true;
    int rc = 0;
    if (v >= (int64_t)vmin) {
        rc = log__run_find(rd->env, rd->txn, &st->run, false, (uint64_t)v, &r);
    }
    while (!rc && more && v >= (int64_t)vmin) {
        uint64_t pos = r.position + ((uint64_t)v - r.first_version);
        bool prev = false;
        for (; more && v >= (int64_t)r.first_version && v >= (int64_t)vmin; v--, pos--) {
            if (prev) {
                MDB_val k;
                MDB_val val;
                uint64_t got = 0;
                rc = mdb_cursor_get(rd->c_events, &k, &val, MDB_PREV);
                if (rc == 0 && k.mv_size == 8) {
                    memcpy(&got, k.mv_data, 8);
                }
                if (rc || got != pos || log__peek_value(val.mv_data, val.mv_size, &ev)) {
                    rc = AN_ECORRUPT;
                    goto out;
                }
            } else if ((rc = event_get(rd->c_events, pos, false, &ev))) {
                goto out;
            }
            prev = true;
            more = fn(arg, &ev) && (q->max_count == 0 || ++count < q->max_count);
        }
        if (more && v >= (int64_t)vmin) {
            rc = log__run_get(rd->env, rd->txn, r.parent, &r);
        }
    }
out:
    *next_version = v;
    return rc == AN_ENOTFOUND ? AN_ECORRUPT : rc;
}

int log_read_stream(log_reader *rd, const struct log_stream_read *q, log_event_fn fn,
                    void *arg, uint64_t *next_version, bool *done)
{
    assert(rd->active);
    struct log__sstate st;
    uint64_t vmin;
    size_t len = q->stream ? strlen(q->stream) : 0;
    if (len == 0 || len > LOG_NAME_MAX || !log_utf8_valid(q->stream, len)) {
        log__detail(rd->detail, "stream name must be 1..%u bytes of UTF-8", LOG_NAME_MAX);
        return AN_EINVAL;
    }
    int rc = visible_range(rd, q->stream, clamp(rd, q->as_of), &st, &vmin);
    if (rc) {
        return rc;
    }
    int64_t lv = st.last_version;
    if ((int64_t)vmin > lv) {
        char nm[64];
        log_percent_encode(nm, sizeof(nm), q->stream, len);
        log__detail(rd->detail, "stream '%s' is deleted", nm);
        return AN_ENOTFOUND;
    }
    if (!q->backwards) {
        uint64_t v = q->from_end ? (uint64_t)lv : (q->from_version > vmin ? q->from_version : vmin);
        uint64_t nv = v;
        if ((int64_t)v <= lv) {
            rc = read_forward(rd, &st, v, (uint64_t)lv, q, fn, arg, &nv);
        }
        if (next_version) {
            *next_version = nv;
        }
        if (done) {
            *done = (int64_t)nv > lv;
        }
    } else {
        int64_t v = q->from_end ? lv
                                : (q->from_version < (uint64_t)lv ? (int64_t)q->from_version : lv);
        int64_t nv = v;
        rc = read_backward(rd, &st, v, vmin, q, fn, arg, &nv);
        if (next_version) {
            *next_version = nv < 0 ? 0 : (uint64_t)nv;
        }
        if (done) {
            *done = nv < (int64_t)vmin;
        }
    }
    if (rc) {
        char nm[64];
        log_percent_encode(nm, sizeof(nm), q->stream, len);
        log__detail(rd->detail, "stream '%s': its runs or events cannot be read", nm);
    }
    return rc;
}

int log_get_stream(log_reader *rd, const char *stream, uint64_t as_of,
                   struct log_stream_info *out)
{
    assert(rd->active);
    struct log__sstate st;
    struct log_event ev;
    uint64_t vmin;
    size_t len = stream ? strlen(stream) : 0;
    if (len == 0 || len > LOG_NAME_MAX || !log_utf8_valid(stream, len)) {
        log__detail(rd->detail, "stream name must be 1..%u bytes of UTF-8", LOG_NAME_MAX);
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
        if ((rc = log__version_position(rd->env, rd->txn, &st, vmin, &info.first_position))) {
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
    if (st.has_del && st.del.position > st.last_position) {
        if ((rc = event_get(rd->c_events, st.del.position, false, &ev))) {
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

bool log_filter_match(const struct log_filter *f, const struct log_event *ev)
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

    bool fwd = !q->backwards;
    if (fwd) {
        pos = q->from_end ? bound : (q->from_position > 1 ? q->from_position : 1);
        if (pos == 0) {
            pos = 1;
        }
    } else {
        pos = (q->from_end || q->from_position == 0 || q->from_position > bound)
                  ? bound
                  : q->from_position;
    }
    MDB_cursor_op op = MDB_SET_KEY;
    while (more && (fwd ? pos <= bound : pos >= 1)) {
        k = (MDB_val){.mv_size = 8, .mv_data = &pos};
        rc = mdb_cursor_get(rd->c_events, &k, &v, op);
        uint64_t got = 0;
        if (rc == 0 && k.mv_size == 8) {
            memcpy(&got, k.mv_data, 8);
        }
        if (rc || got != pos || log__peek_value(v.mv_data, v.mv_size, &ev)) {
            goto out_corrupt;
        }
        op = fwd ? MDB_NEXT : MDB_PREV;
        pos = fwd ? pos + 1 : pos - 1;
        scanned++;
        if (!filtered || log_filter_match(f, &ev)) {
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
        *done = fwd ? pos > bound : pos == 0;
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
        if (log__peek_value(v.mv_data, v.mv_size, &ev) || ev.position != pos ||
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
        struct log__sstate st;
        uint64_t ip;
        if (log__stream_state(env, rd->txn, ev.stream, ev.stream_len, head, &st) ||
            log__version_position(env, rd->txn, &st, ev.version, &ip) || ip != pos) {
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
    /* runs: each stream's chain holds versions 0..last without gaps */
    MDB_cursor *c = NULL;
    if ((rc = mdb_cursor_open(rd->txn, env->dbi_streams, &c))) {
        rc = log__from_mdb(rc, "verify", detail);
        goto out;
    }
    op = MDB_FIRST;
    while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        struct log__sstate st;
        if (log__stream_state(env, rd->txn, k.mv_data, k.mv_size, head, &st)) {
            log__detail(detail, "stream '%.*s': its head or runs cannot be read",
                        (int)(k.mv_size > 64 ? 64 : k.mv_size), (const char *)k.mv_data);
            rc = AN_ECORRUPT;
            break;
        }
        if (!st.exists) {
            continue;
        }
        struct log__run r = st.run;
        uint64_t expect_end = (uint64_t)st.last_version + 1;
        for (;;) {
            uint64_t n = r.first_version + r.count > expect_end ? expect_end - r.first_version
                                                                 : r.count;
            if (r.sid != st.sid || r.first_version + n != expect_end) {
                log__detail(detail, "stream '%.*s': versions jump at %llu",
                            (int)(k.mv_size > 64 ? 64 : k.mv_size), (const char *)k.mv_data,
                            (unsigned long long)r.first_version);
                rc = AN_ECORRUPT;
                goto out_cursor;
            }
            runs_total += n;
            expect_end = r.first_version;
            if (r.depth == 0) {
                break;
            }
            if (log__run_get(env, rd->txn, r.parent, &r)) {
                rc = AN_ECORRUPT;
                log__detail(detail, "a run of stream id %llu cannot be read",
                            (unsigned long long)st.sid);
                goto out_cursor;
            }
        }
        if (expect_end != 0 || r.position != st.sid) {
            log__detail(detail, "stream '%.*s': its first run is not version 0 at its id",
                        (int)(k.mv_size > 64 ? 64 : k.mv_size), (const char *)k.mv_data);
            rc = AN_ECORRUPT;
            goto out_cursor;
        }
    }
    if (rc == MDB_NOTFOUND) {
        rc = 0;
    } else if (rc != AN_ECORRUPT) {
        rc = log__from_mdb(rc, "verify", detail);
    }
    if (!rc && runs_total != head) {
        log__detail(detail, "stream runs hold %llu events but the log has %llu",
                    (unsigned long long)runs_total, (unsigned long long)head);
        rc = AN_ECORRUPT;
    }
out_cursor:
    mdb_cursor_close(c);
out:
    log_reader_end(rd);
    log_reader_close(rd);
    return rc;
}

int log_list_streams(log_reader *rd, const char *prefix, const char *after, unsigned limit,
                     log_stream_fn fn, void *arg, bool *more)
{
    assert(rd->active);
    prefix = prefix ? prefix : "";
    after = after ? after : "";
    size_t plen = strlen(prefix);
    size_t alen = strlen(after);
    MDB_cursor *cur;
    MDB_val k;
    MDB_val v;
    unsigned n = 0;
    bool go = true;
    if (more) {
        *more = false;
    }
    int mrc = mdb_cursor_open(rd->txn, rd->env->dbi_streams, &cur);
    if (mrc) {
        return log__from_mdb(mrc, "opening a cursor on streams", rd->detail);
    }
    /* start at the later of the prefix and the key after `after` */
    bool skip_after = false;
    size_t common = alen < plen ? alen : plen;
    int cmp = common ? memcmp(after, prefix, common) : 0;
    if (cmp == 0) {
        cmp = alen < plen ? -1 : alen > plen;
    }
    if (alen && cmp >= 0) {
        k = (MDB_val){alen, (void *)after};
        skip_after = true;
    } else {
        k = (MDB_val){plen, (void *)(plen ? prefix : "")};
    }
    mrc = k.mv_size ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                    : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    int rc = 0;
    while (mrc == 0 && go) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) {
            break; /* past the prefix */
        }
        if (skip_after && k.mv_size == alen && memcmp(k.mv_data, after, alen) == 0) {
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if (limit && n == limit) {
            if (more) {
                *more = true;
            }
            break;
        }
        char name[LOG_NAME_MAX + 1];
        size_t len = k.mv_size > LOG_NAME_MAX ? LOG_NAME_MAX : k.mv_size;
        memcpy(name, k.mv_data, len);
        name[len] = '\0';
        struct log_stream_info info;
        rc = memchr(name, '\0', len) ? AN_ENOTFOUND : log_get_stream(rd, name, rd->head, &info);
        if (rc == AN_ENOTFOUND || rc == AN_EINVAL) {
            rc = 0; /* not written as of this snapshot, or not listable */
        } else if (rc) {
            break;
        } else {
            n++;
            go = fn(arg, name, len, &info);
        }
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND) {
        rc = log__from_mdb(mrc, "listing streams", rd->detail);
    }
    mdb_cursor_close(cur);
    return rc;
}

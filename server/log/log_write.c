/*
 * log_write.c - validation and the group commit: log_commit applies a batch
 * of appends and deletions in one LMDB write transaction.
 *
 * Each op runs in two phases inside the shared transaction:
 *   1. checks, reading only: event ids (exact retry or conflict), the
 *      streams' tombstones and expectations. A failure sets op->rc and the
 *      op writes nothing.
 *   2. puts: events (MDB_APPEND, packed in place with MDB_RESERVE; a run's
 *      record in its first event's header), ids, and each stream's head row.
 * After phase 1 passes, phase 2 can fail only for reasons that doom the
 * whole transaction (map full, I/O), so one op never leaves another half
 * done. Those reasons abort the transaction and re-run the batch: after
 * growing the map, without the op that did not fit (it gets AN_EFULL), or
 * split in two when LMDB's dirty-page list is full.
 *
 * Times: every op that writes gets a recorded_at strictly above the last
 * one (the clock, or last + 1 if the clock has not moved or stepped back).
 * All events of one append share it, so an append's events are exactly the
 * run of positions with that time; the exact-retry check relies on this.
 */
#include "log_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#define LOW_SPACE_BYTES (8u << 20) /* below this, a short write means the disk is full */

#define OP_TODO 0
#define OP_FINAL 1    /* rc is settled (validation, or it did not fit) */

/* One write transaction's view of the log. */
struct wtxn {
    log_env *env;
    MDB_txn *txn;
    uint64_t head;
    int64_t last_ts;
    bool wrote;
};

/* ---- validation ---- */

/* Names the field of a request: "stream", "streams[i].stream" or
 * "streams[i].events[j].type" (built only when there is an error to report). */
static void field_name(char *out, size_t cap, const char *field, long i, long j)
{
    if (i < 0) {
        snprintf(out, cap, "%s", field);
    } else if (j < 0) {
        snprintf(out, cap, "streams[%ld].%s", i, field);
    } else {
        snprintf(out, cap, "streams[%ld].events[%ld].%s", i, j, field);
    }
}

static int check_name(const char *s, bool allow_reserved, char *detail, const char *field,
                      long i, long j)
{
    char what[96];
    size_t len = s ? strlen(s) : 0;
    if (len > 0 && len <= LOG_NAME_MAX && (s[0] != '$' || allow_reserved) &&
        log_utf8_valid(s, len)) {
        return 0;
    }
    field_name(what, sizeof(what), field, i, j);
    if (len == 0) {
        log__detail(detail, "%s is empty (must be 1..%u bytes)", what, LOG_NAME_MAX);
    } else if (len > LOG_NAME_MAX) {
        log__detail(detail, "%s is %zu bytes > limit %u", what, len, LOG_NAME_MAX);
    } else if (s[0] == '$' && !allow_reserved) {
        char name[64];
        log_percent_encode(name, sizeof(name), s, len);
        log__detail(detail, "%s '%s': names starting with '$' are reserved for the server",
                    what, name);
    } else {
        log__detail(detail, "%s is not valid UTF-8", what);
    }
    return AN_EINVAL;
}

static bool expectation_known(Annals__V1__Expectation e)
{
    switch (e) {
    case ANNALS__V1__EXPECTATION__EXPECT_ANY:
    case ANNALS__V1__EXPECTATION__EXPECT_NO_STREAM:
    case ANNALS__V1__EXPECTATION__EXPECT_STREAM_EXISTS:
    case ANNALS__V1__EXPECTATION__EXPECT_VERSION:
        return true;
    case _ANNALS__V1__EXPECTATION_IS_INT_SIZE:
        break;
    }
    return false;
}

/* Where an event sits in a request, for duplicate-id detection. */
struct idref {
    const uint8_t *id;
    unsigned stream;
    unsigned event;
};

static int cmp_idref(const void *a, const void *b)
{
    const struct idref *x = a;
    const struct idref *y = b;
    int c = memcmp(x->id, y->id, LOG_ID_BYTES);
    if (c) {
        return c;
    }
    return x->stream != y->stream ? (x->stream < y->stream ? -1 : 1)
                                   : (x->event < y->event ? -1 : x->event > y->event);
}

static int cmp_strp(const void *a, const void *b)
{
    const char *const *x = a;
    const char *const *y = b;
    return strcmp(*x, *y);
}

/* No stream twice and no id twice in one request: sorted, so a request of
 * many small streams cannot make this quadratic. */
static int check_duplicates(const Annals__V1__AppendRequest *req, size_t n_ids, char *detail)
{
    size_t n = req->n_streams;
    int rc = 0;
    if (n > 1) {
        const char **names = malloc(n * sizeof(*names));
        if (!names) {
            return AN_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            names[i] = req->streams[i]->stream;
        }
        qsort(names, n, sizeof(*names), cmp_strp);
        for (size_t i = 1; i < n && !rc; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                char nm[64];
                log_percent_encode(nm, sizeof(nm), names[i], strlen(names[i]));
                log__detail(detail, "stream '%s' appears twice in the request", nm);
                rc = AN_EINVAL;
            }
        }
        free(names);
        if (rc) {
            return rc;
        }
    }
    if (n_ids < 2) {
        return 0;
    }
    struct idref *ids = malloc(n_ids * sizeof(*ids));
    if (!ids) {
        return AN_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const Annals__V1__StreamAppend *s = req->streams[i];
        for (size_t j = 0; j < s->n_events; j++) {
            if (s->events[j]->id.len == LOG_ID_BYTES) {
                ids[k++] = (struct idref){s->events[j]->id.data, (unsigned)i, (unsigned)j};
            }
        }
    }
    qsort(ids, k, sizeof(*ids), cmp_idref);
    for (size_t i = 1; i < k; i++) {
        if (memcmp(ids[i - 1].id, ids[i].id, LOG_ID_BYTES) == 0) {
            log__detail(detail,
                        "streams[%u].events[%u] and streams[%u].events[%u] have the same id",
                        ids[i - 1].stream, ids[i - 1].event, ids[i].stream, ids[i].event);
            rc = AN_EINVAL;
            break;
        }
    }
    free(ids);
    return rc;
}

int log_validate_append(const log_env *env, const Annals__V1__AppendRequest *req,
                        bool allow_reserved, char *detail)
{
    size_t n_ids = 0;
    int rc;
    if (!req || req->n_streams == 0) {
        log__detail(detail, "empty request: no streams to append to");
        return AN_EINVAL;
    }
    for (size_t i = 0; i < req->n_streams; i++) {
        const Annals__V1__StreamAppend *s = req->streams[i];
        if ((rc = check_name(s->stream, allow_reserved, detail, "stream", (long)i, -1))) {
            return rc;
        }
        if (!expectation_known(s->expect)) {
            log__detail(detail, "streams[%zu].expect: unknown expectation %d", i, (int)s->expect);
            return AN_EINVAL;
        }
        if (s->expect == ANNALS__V1__EXPECTATION__EXPECT_VERSION &&
            s->expected_version > (uint64_t)INT64_MAX) {
            log__detail(detail, "streams[%zu].expected_version %llu is out of range", i,
                        (unsigned long long)s->expected_version);
            return AN_EINVAL;
        }
        if (s->n_events == 0) {
            log__detail(detail, "streams[%zu]: no events", i);
            return AN_EINVAL;
        }
        for (size_t j = 0; j < s->n_events; j++) {
            const Annals__V1__EventData *e = s->events[j];
            if ((rc = check_name(e->type, true, detail, "type", (long)i, (long)j))) {
                return rc;
            }
            if (e->id.len != 0 && e->id.len != LOG_ID_BYTES) {
                log__detail(detail, "streams[%zu].events[%zu].id is %zu bytes (must be 0 or %u)",
                            i, j, e->id.len, LOG_ID_BYTES);
                return AN_EINVAL;
            }
            n_ids += e->id.len == LOG_ID_BYTES;
            size_t body = e->data.len + e->metadata.len;
            if (body > env->max_event_bytes) {
                log__detail(detail,
                            "streams[%zu].events[%zu]: data+metadata %zu bytes > limit %u", i,
                            j, body, env->max_event_bytes);
                return AN_ETOOBIG;
            }
        }
    }
    size_t total = annals__v1__append_request__get_packed_size(req);
    if (total > env->max_request_bytes) {
        log__detail(detail, "request is %zu bytes > limit %u", total, env->max_request_bytes);
        return AN_ETOOBIG;
    }
    return check_duplicates(req, n_ids, detail);
}

int log_validate_delete(const log_env *env, const Annals__V1__DeleteStreamRequest *req,
                        char *detail)
{
    (void)env;
    if (!req) {
        log__detail(detail, "empty request");
        return AN_EINVAL;
    }
    int rc = check_name(req->stream, false, detail, "stream", -1, -1);
    if (rc) {
        return rc;
    }
    if (!expectation_known(req->expect)) {
        log__detail(detail, "expect: unknown expectation %d", (int)req->expect);
        return AN_EINVAL;
    }
    if (req->expect == ANNALS__V1__EXPECTATION__EXPECT_VERSION &&
        req->expected_version > (uint64_t)INT64_MAX) {
        log__detail(detail, "expected_version %llu is out of range",
                    (unsigned long long)req->expected_version);
        return AN_EINVAL;
    }
    return 0;
}

/* ---- checks inside the transaction ---- */

static bool expectation_holds(Annals__V1__Expectation e, uint64_t expected, int64_t last)
{
    switch (e) {
    case ANNALS__V1__EXPECTATION__EXPECT_ANY:
        return true;
    case ANNALS__V1__EXPECTATION__EXPECT_NO_STREAM:
        return last < 0;
    case ANNALS__V1__EXPECTATION__EXPECT_STREAM_EXISTS:
        return last >= 0;
    case ANNALS__V1__EXPECTATION__EXPECT_VERSION:
        return last >= 0 && (uint64_t)last == expected;
    case _ANNALS__V1__EXPECTATION_IS_INT_SIZE:
        break;
    }
    return false;
}

static void conflict(struct log_op *op, size_t idx, const char *stream, Annals__V1__Expectation e,
                     uint64_t expected, int64_t actual)
{
    char nm[64];
    char want[48];
    log_percent_encode(nm, sizeof(nm), stream, strlen(stream));
    switch (e) {
    case ANNALS__V1__EXPECTATION__EXPECT_NO_STREAM:
        snprintf(want, sizeof(want), "no stream");
        break;
    case ANNALS__V1__EXPECTATION__EXPECT_STREAM_EXISTS:
        snprintf(want, sizeof(want), "an existing stream");
        break;
    case ANNALS__V1__EXPECTATION__EXPECT_ANY:
    case ANNALS__V1__EXPECTATION__EXPECT_VERSION:
    case _ANNALS__V1__EXPECTATION_IS_INT_SIZE:
        snprintf(want, sizeof(want), "version %llu", (unsigned long long)expected);
        break;
    }
    op->rc = AN_ECONFLICT;
    op->conflict_stream = idx;
    op->actual_version = actual;
    log__detail(op->detail, "stream '%s': expected %s, actual version %lld", nm, want,
                (long long)actual);
}

/* Reads the event at `pos` inside the write txn. */
static int event_at(struct wtxn *w, uint64_t pos, struct log_event *ev)
{
    MDB_val k = {.mv_size = 8, .mv_data = &pos};
    MDB_val v;
    int rc = mdb_get(w->txn, w->env->dbi_events, &k, &v);
    if (rc) {
        return rc == MDB_NOTFOUND ? AN_ECORRUPT : log__from_mdb(rc, "read", NULL);
    }
    return log__peek_value(v.mv_data, v.mv_size, ev);
}

/*
 * Some ids of the append are stored already. It is an exact retry when
 * every id is stored, at consecutive positions in request order, in the
 * same streams, and those positions are exactly one earlier append (its
 * events share one recorded_at that its neighbours do not have). Then the
 * op answers with the original results; otherwise AN_EEXIST.
 */
static int check_retry(struct wtxn *w, struct log_op *op, uint64_t first_found, size_t n_events,
                       bool all_found)
{
    const Annals__V1__AppendRequest *req = op->append;
    struct log_event ev;
    uint64_t p0 = 0;
    int64_t ts = 0;
    size_t k = 0;
    int rc;
    bool exact = all_found;

    for (size_t i = 0; exact && i < req->n_streams; i++) {
        const Annals__V1__StreamAppend *s = req->streams[i];
        size_t slen = strlen(s->stream);
        for (size_t j = 0; exact && j < s->n_events; j++, k++) {
            MDB_val key = {.mv_size = LOG_ID_BYTES, .mv_data = s->events[j]->id.data};
            MDB_val val;
            if ((rc = mdb_get(w->txn, w->env->dbi_ids, &key, &val))) {
                return rc == MDB_NOTFOUND ? AN_ECORRUPT : log__from_mdb(rc, "read", NULL);
            }
            uint64_t pos = log__le64_get(val.mv_data);
            if (k == 0) {
                p0 = pos;
            }
            if (pos != p0 + k) {
                exact = false;
                break;
            }
            if ((rc = event_at(w, pos, &ev))) {
                return rc;
            }
            if (k == 0) {
                ts = ev.recorded_at_ns;
                op->first_position = pos;
                op->recorded_at_ns = ts;
            }
            if (ev.stream_len != slen || memcmp(ev.stream, s->stream, slen) != 0 ||
                ev.recorded_at_ns != ts) {
                exact = false;
                break;
            }
            if (j == 0) {
                op->streams[i].first_version = ev.version;
            }
            op->streams[i].last_version = ev.version;
        }
    }
    if (exact && p0 > 1) {
        if ((rc = event_at(w, p0 - 1, &ev))) {
            return rc;
        }
        exact = ev.recorded_at_ns != ts;
    }
    if (exact && p0 + n_events <= w->head) {
        if ((rc = event_at(w, p0 + n_events, &ev))) {
            return rc;
        }
        exact = ev.recorded_at_ns != ts;
    }
    if (exact) {
        op->last_position = p0 + n_events - 1;
        return 0;
    }
    op->first_position = 0;
    op->recorded_at_ns = 0;
    op->rc = AN_EEXIST;
    log__detail(op->detail,
                "an event id of this append is already stored (at position %llu) and the "
                "request is not an exact retry of the append that stored it",
                (unsigned long long)first_found);
    return 0;
}

/* ---- puts ---- */

static int put_head(struct wtxn *w, const char *stream, const struct log__head *h)
{
    uint8_t hb[LOG__HEAD_BYTES];
    log__head_encode(h, hb);
    MDB_val k = {.mv_size = strlen(stream), .mv_data = (void *)stream};
    MDB_val v = {.mv_size = sizeof(hb), .mv_data = hb};
    return mdb_put(w->txn, w->env->dbi_streams, &k, &v, 0);
}

/* Put functions return LMDB's code on failure: the txn is doomed, and
 * run_txn decides (grow the map, split the batch, or fail it). */

static int put_event(struct wtxn *w, const struct log_op *op, const char *stream, uint64_t version,
                     uint64_t pos, int64_t ts, const Annals__V1__EventData *e,
                     const struct log__run *run)
{
    log_env *env = w->env;
    uint8_t fresh[LOG_ID_BYTES];
    const uint8_t *id = e->id.data;
    MDB_val pk = {.mv_size = 8, .mv_data = &pos};
    MDB_val iv = {.mv_size = 8, .mv_data = &pos};
    MDB_val ik;
    int rc;

    if (e->id.len == LOG_ID_BYTES) {
        ik = (MDB_val){.mv_size = LOG_ID_BYTES, .mv_data = e->id.data};
        rc = mdb_put(w->txn, env->dbi_ids, &ik, &iv, MDB_NOOVERWRITE);
    } else {
        do {
            log__uuid7(env, fresh);
            ik = (MDB_val){.mv_size = LOG_ID_BYTES, .mv_data = fresh};
            rc = mdb_put(w->txn, env->dbi_ids, &ik, &iv, MDB_NOOVERWRITE);
        } while (rc == MDB_KEYEXIST);
        id = fresh;
    }
    if (rc) {
        return rc;
    }

    Annals__V1__RecordedEvent rec = ANNALS__V1__RECORDED_EVENT__INIT;
    rec.id.len = LOG_ID_BYTES;
    rec.id.data = (uint8_t *)id;
    rec.stream = (char *)stream;
    rec.stream_version = version;
    rec.global_position = pos;
    rec.type = e->type;
    rec.schema_version = e->schema_version ? e->schema_version : 1;
    rec.content_type = (e->content_type && e->content_type[0]) ? e->content_type
                                                                : "application/octet-stream";
    rec.data = e->data;
    rec.metadata = e->metadata;
    rec.recorded_at_unix_nanos = ts;
    rec.principal = (char *)(op->principal ? op->principal : "");

    size_t h = run ? LOG__RUN_BYTES : 0;
    size_t packed = annals__v1__recorded_event__get_packed_size(&rec);
    MDB_val pv = {.mv_size = 1 + h + packed};
    rc = mdb_put(w->txn, env->dbi_events, &pk, &pv, MDB_APPEND | MDB_RESERVE);
    if (rc) {
        return rc;
    }
    uint8_t *out = pv.mv_data;
    out[0] = (uint8_t)h;
    if (run) {
        log__run_encode(run, out + 1);
    }
    size_t n = annals__v1__recorded_event__pack(&rec, out + 1 + h);
    assert(n == packed);
    (void)n;
    return 0;
}

/*
 * Appends events[0..n) to one stream at the next positions: the events and
 * their ids, one run linked after the stream's latest, and its head row.
 * st is the stream's latest state (exists == false: a new stream) and is
 * updated, so a later call within the same transaction continues from it.
 */
static int put_run(struct wtxn *w, const struct log_op *op, const char *stream,
                   struct log__sstate *st, Annals__V1__EventData *const *events, size_t n,
                   int64_t ts, struct log_stream_result *res)
{
    log_env *env = w->env;
    uint64_t pos = w->head + 1;
    uint64_t fv = (uint64_t)(st->last_version + 1);
    struct log__run run = {.position = pos, .first_version = fv, .count = (uint32_t)n};
    int rc;

    if (!st->exists) {
        st->exists = true;
        st->sid = pos;
        st->head = (struct log__head){.sid = pos};
        rc = log__run_link(env, w->txn, NULL, &run);
    } else {
        rc = log__run_link(env, w->txn, &st->run, &run);
    }
    if (rc) {
        return MDB_CORRUPTED; /* the stream's runs cannot be read */
    }
    run.sid = st->sid;
    for (size_t j = 0; j < n; j++) {
        if ((rc = put_event(w, op, stream, fv + j, pos + j, ts, events[j], j ? NULL : &run))) {
            return rc;
        }
    }
    st->run = run;
    st->last_version = (int64_t)(fv + n - 1);
    st->last_position = pos + n - 1;
    st->head.last_version = fv + n - 1;
    st->head.last_run = pos;
    if ((rc = put_head(w, stream, &st->head))) {
        return rc;
    }
    w->head = pos + n - 1;
    w->last_ts = ts;
    w->wrote = true;
    if (res) {
        res->first_version = fv;
        res->last_version = fv + n - 1;
    }
    return 0;
}

static int64_t next_ts(const struct wtxn *w)
{
    int64_t now = log__now_ns();
    return now > w->last_ts ? now : w->last_ts + 1;
}

static int stream_state(struct wtxn *w, const char *name, struct log__sstate *st)
{
    int rc = log__stream_state(w->env, w->txn, name, strlen(name), UINT64_MAX, st);
    if (rc == AN_ENOTFOUND) {
        *st = (struct log__sstate){.last_version = -1};
        return 0;
    }
    return rc;
}

static int grow_scratch(log_env *env, size_t n_streams)
{
    if (n_streams <= env->w_streams_cap) {
        return 0;
    }
    struct log__sstate *p = realloc(env->w_streams, n_streams * sizeof(*p));
    if (!p) {
        return AN_ENOMEM;
    }
    env->w_streams = p;
    env->w_streams_cap = n_streams;
    return 0;
}

/* ---- ops ---- */

static int apply_append(struct wtxn *w, struct log_op *op)
{
    const Annals__V1__AppendRequest *req = op->append;
    log_env *env = w->env;
    size_t n_events = 0;
    size_t n_found = 0;
    uint64_t first_found = 0;
    int rc;

    for (size_t i = 0; i < req->n_streams; i++) {
        const Annals__V1__StreamAppend *s = req->streams[i];
        for (size_t j = 0; j < s->n_events; j++, n_events++) {
            if (s->events[j]->id.len != LOG_ID_BYTES) {
                continue;
            }
            MDB_val k = {.mv_size = LOG_ID_BYTES, .mv_data = s->events[j]->id.data};
            MDB_val v;
            rc = mdb_get(w->txn, env->dbi_ids, &k, &v);
            if (rc == 0) {
                if (n_found++ == 0) {
                    first_found = log__le64_get(v.mv_data);
                }
            } else if (rc != MDB_NOTFOUND) {
                return rc;
            }
        }
    }
    if (n_found) {
        rc = check_retry(w, op, first_found, n_events, n_found == n_events);
        if (rc) {
            op->rc = rc;
            log__detail(op->detail, "reading the stored events of a retried append failed");
        }
        return 0;
    }

    if ((rc = grow_scratch(env, req->n_streams))) {
        op->rc = rc;
        return 0;
    }
    for (size_t i = 0; i < req->n_streams; i++) {
        const Annals__V1__StreamAppend *s = req->streams[i];
        struct log__sstate *stp = &env->w_streams[i];
        if ((rc = stream_state(w, s->stream, stp))) {
            op->rc = rc;
            log__detail(op->detail, "reading stream state failed");
            return 0;
        }
        if (stp->tombstoned) {
            char nm[64];
            log_percent_encode(nm, sizeof(nm), s->stream, strlen(s->stream));
            op->rc = AN_ETOMBSTONED;
            log__detail(op->detail, "stream '%s' is tombstoned (at position %llu)", nm,
                        (unsigned long long)stp->del.position);
            return 0;
        }
        if (!expectation_holds(s->expect, s->expected_version, stp->last_version)) {
            conflict(op, i, s->stream, s->expect, s->expected_version, stp->last_version);
            return 0;
        }
    }

    int64_t ts = next_ts(w);
    op->first_position = w->head + 1;
    for (size_t i = 0; i < req->n_streams; i++) {
        const Annals__V1__StreamAppend *s = req->streams[i];
        rc = put_run(w, op, s->stream, &env->w_streams[i], s->events, s->n_events, ts,
                     op->streams ? &op->streams[i] : NULL);
        if (rc) {
            return rc;
        }
    }
    op->last_position = w->head;
    op->recorded_at_ns = ts;
    return 0;
}

static int apply_delete(struct wtxn *w, struct log_op *op)
{
    const Annals__V1__DeleteStreamRequest *d = op->del;
    struct log__sstate st;
    char nm[64];
    int rc;

    log_percent_encode(nm, sizeof(nm), d->stream, strlen(d->stream));
    rc = log__stream_state(w->env, w->txn, d->stream, strlen(d->stream), UINT64_MAX, &st);
    if (rc == AN_ENOTFOUND) {
        op->rc = AN_ENOTFOUND;
        log__detail(op->detail, "stream '%s' was never written", nm);
        return 0;
    }
    if (rc) {
        op->rc = rc;
        log__detail(op->detail, "reading stream '%s' failed", nm);
        return 0;
    }
    if (st.tombstoned) {
        op->rc = AN_ETOMBSTONED;
        log__detail(op->detail, "stream '%s' is already tombstoned (at position %llu)", nm,
                    (unsigned long long)st.del.position);
        return 0;
    }
    if (!expectation_holds(d->expect, d->expected_version, st.last_version)) {
        conflict(op, 0, d->stream, d->expect, d->expected_version, st.last_version);
        return 0;
    }
    if (!d->tombstone && st.has_del && (int64_t)st.del.last_version == st.last_version) {
        /* nothing new since the last deletion: it stands */
        struct log_event ev;
        if ((rc = event_at(w, st.del.position, &ev))) {
            op->rc = rc;
            return 0;
        }
        op->first_position = op->last_position = st.del.position;
        op->recorded_at_ns = ev.recorded_at_ns;
        return 0;
    }

    /* the deletion event in "$streams" */
    char data[64 + 6 * LOG_NAME_MAX];
    size_t o = (size_t)snprintf(data, sizeof(data), "{\"stream\":\"");
    long esc = log__json_escape(data + o, sizeof(data) - o - 48, d->stream, strlen(d->stream));
    assert(esc >= 0);
    o += (size_t)esc;
    o += (size_t)snprintf(data + o, sizeof(data) - o, "\",\"last_version\":%lld}",
                          (long long)st.last_version);
    Annals__V1__EventData ev = ANNALS__V1__EVENT_DATA__INIT;
    Annals__V1__EventData *evp = &ev;
    ev.type = d->tombstone ? "$StreamTombstoned" : "$StreamDeleted";
    ev.content_type = "application/json";
    ev.data.data = (uint8_t *)data;
    ev.data.len = o;

    struct log__sstate sys;
    if ((rc = stream_state(w, LOG_DELETED_STREAM, &sys))) {
        op->rc = rc;
        return 0;
    }
    int64_t ts = next_ts(w);
    if ((rc = put_run(w, op, LOG_DELETED_STREAM, &sys, &evp, 1, ts, NULL))) {
        return rc;
    }
    uint8_t key[16];
    uint8_t del[LOG__DEL_BYTES];
    log__be64_put(key, st.sid);
    log__be64_put(key + 8, w->head);
    log__le64_put(del, (uint64_t)st.last_version);
    del[8] = d->tombstone ? 1 : 0;
    MDB_val k = {.mv_size = sizeof(key), .mv_data = key};
    MDB_val v = {.mv_size = sizeof(del), .mv_data = del};
    if ((rc = mdb_put(w->txn, w->env->dbi_dels, &k, &v, 0))) {
        return rc;
    }
    st.head.last_del = w->head;
    if ((rc = put_head(w, d->stream, &st.head))) {
        return rc;
    }
    op->first_position = op->last_position = w->head;
    op->recorded_at_ns = ts;
    return 0;
}

/* ---- the group commit ---- */

static void reset_outputs(struct log_op *op)
{
    op->rc = 0;
    op->first_position = 0;
    op->last_position = 0;
    op->recorded_at_ns = 0;
    op->seq = 0;
    op->conflict_stream = 0;
    op->actual_version = -1;
    op->detail[0] = '\0';
}

/* Every op still open in [from, to) fails with rc. */
static void fail_open_ops(log_env *env, struct log_op *ops, size_t from, size_t to, int rc,
                          const char *detail)
{
    for (size_t i = from; i < to; i++) {
        if (env->w_state[i] == OP_TODO) {
            reset_outputs(&ops[i]);
            ops[i].rc = rc;
            snprintf(ops[i].detail, LOG_DETAIL_MAX, "%s", detail);
            env->w_state[i] = OP_FINAL;
        }
    }
}

/* The commit made the previous one durable (its data sync flushed that
 * commit's meta page): publish it, then the new commit. */
static void publish_commit(log_env *env, uint64_t head)
{
    uint64_t prev_head = env->w_pending_head;
    env->w_seq++;
    env->w_head = head;
    env->w_pending_head = head;
    /* raised, never stored: log_sync_through may run on another thread */
    log__raise_durable(env, env->w_seq - 1, prev_head);
    atomic_store_explicit(&env->committed_head, head, memory_order_release);
    atomic_store_explicit(&env->committed_seq, env->w_seq, memory_order_release);
}

/* Whether the log's filesystem is (nearly) out of space: LMDB reports a
 * short write, which is what a full disk gives, as EIO. */
static bool low_space(const log_env *env)
{
    struct statvfs st;
    if (statvfs(env->dir, &st) != 0) {
        return false;
    }
    return (uint64_t)st.f_bavail * st.f_frsize < LOW_SPACE_BYTES;
}

/*
 * Applies the open ops of [from, *to) in one transaction and commits it.
 * On return *to may be lower: the transaction's dirty pages filled up and
 * the rest must go into another one. Returns 0 or a code for the whole run.
 */
static int run_txn(log_env *env, struct log_op *ops, size_t from, size_t *to)
{
    char detail[LOG_DETAIL_MAX];
    size_t limit = *to;
    int rc;

retry:;
    struct wtxn w = {.env = env, .head = env->w_head, .last_ts = env->w_last_ts};
    rc = mdb_txn_begin(env->mdb, NULL, 0, &w.txn);
    if (rc) {
        rc = log__from_mdb(rc, "begin write", detail);
        fail_open_ops(env, ops, from, limit, rc, detail);
        return rc;
    }
    for (size_t i = from; i < limit; i++) {
        if (env->w_state[i] != OP_TODO) {
            continue;
        }
        reset_outputs(&ops[i]);
        int mrc = ops[i].kind == LOG_OP_DELETE ? apply_delete(&w, &ops[i])
                                               : apply_append(&w, &ops[i]);
        if (mrc == 0) {
            continue;
        }
        mdb_txn_abort(w.txn);
        if (mrc == MDB_MAP_FULL) {
            if (log__grow(env, ops[i].detail) == 0) {
                goto retry;
            }
            ops[i].rc = AN_EFULL;
            env->w_state[i] = OP_FINAL;
            goto retry;
        }
        if (mrc == MDB_TXN_FULL) {
            bool first_open = true;
            for (size_t j = from; j < i; j++) {
                first_open = first_open && env->w_state[j] != OP_TODO;
            }
            if (first_open) {
                ops[i].rc = AN_ETOOBIG;
                log__detail(ops[i].detail, "the request is too large for one transaction");
                env->w_state[i] = OP_FINAL;
            } else {
                limit = i;
            }
            goto retry;
        }
        rc = log__from_mdb(mrc, "append", detail);
        fail_open_ops(env, ops, from, limit, rc, detail);
        return rc;
    }
    if (!w.wrote) {
        /* an empty commit would skip LMDB's sync: do not count it */
        mdb_txn_abort(w.txn);
        *to = limit;
        return 0;
    }
    if (env->w_durable) {
        /* LMDB writes this meta page with O_DSYNC: durable on return */
        mdb_env_set_flags(env->mdb, MDB_NOMETASYNC, 0);
    }
    rc = mdb_txn_commit(w.txn);
    if (env->w_durable) {
        mdb_env_set_flags(env->mdb, MDB_NOMETASYNC, 1);
    }
    if (rc == MDB_MAP_FULL && log__grow(env, detail) == 0) {
        goto retry;
    }
    if (rc) {
        if (rc == EIO && low_space(env)) {
            rc = ENOSPC; /* LMDB says EIO for a short write: the disk is full */
        }
        if (rc != MDB_MAP_FULL) {
            rc = log__from_mdb(rc, "commit", detail);
        } else {
            rc = AN_EFULL;
        }
        fail_open_ops(env, ops, from, limit, rc, detail);
        return rc;
    }
    env->w_last_ts = w.last_ts;
    publish_commit(env, w.head);
    if (env->w_durable) {
        log__raise_durable(env, env->w_seq, w.head);
    }
    *to = limit;
    return 0;
}

int log_commit(log_env *env, struct log_op *ops, size_t n_ops, uint64_t *seq_out)
{
    int rc = 0;
    if (n_ops > env->w_state_cap) {
        uint8_t *p = realloc(env->w_state, n_ops);
        if (!p) {
            for (size_t i = 0; i < n_ops; i++) {
                reset_outputs(&ops[i]);
                ops[i].rc = AN_ENOMEM;
            }
            return AN_ENOMEM;
        }
        env->w_state = p;
        env->w_state_cap = n_ops;
    }
    for (size_t i = 0; i < n_ops; i++) {
        struct log_op *op = &ops[i];
        reset_outputs(op);
        if (!op->validated) {
            op->rc = op->kind == LOG_OP_DELETE
                         ? log_validate_delete(env, op->del, op->detail)
                         : log_validate_append(env, op->append, op->allow_reserved, op->detail);
        }
        env->w_state[i] = op->rc ? OP_FINAL : OP_TODO;
    }
    uint64_t seq_before = env->w_seq;
    size_t from = 0;
    while (from < n_ops) {
        size_t to = n_ops;
        int r = run_txn(env, ops, from, &to);
        if (r) {
            rc = r;
        }
        from = to;
    }
    for (size_t i = 0; i < n_ops; i++) {
        ops[i].seq = env->w_seq;
    }
    if (seq_out) {
        *seq_out = env->w_seq != seq_before ? env->w_seq : 0;
    }
    return rc;
}

int log_commit_durable(log_env *env, struct log_op *ops, size_t n_ops, uint64_t *seq_out)
{
    env->w_durable = true;
    int rc = log_commit(env, ops, n_ops, seq_out);
    env->w_durable = false;
    if (atomic_load(&env->durable_seq) < env->w_seq) {
        /* nothing was committed, but the answers reflect a commit that is
         * not durable yet */
        int src = log_sync(env);
        if (src && !rc) {
            rc = src;
        }
    }
    return rc;
}

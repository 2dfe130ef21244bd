/*
 * proj_worker.c - a projection's worker thread: reads the committed log in
 * order and folds it into the view, batch by batch, with the checkpoint in
 * the same write transaction as the changes; builds a rebuilt view beside
 * the current one and swaps it in.
 *
 * One batch (apply_batch): begin the log reader (a fresh snapshot), begin
 * the view's write txn, hand the next batch_events positions after the
 * checkpoint through the filter to fold_event, end the log reader (so the
 * log's pages are not held across the view's commit), write checkpoint =
 * last position scanned and applied += events folded, commit. Only then is
 * the new checkpoint published (under p->mu, broadcast on p->cv) to the
 * queries waiting for it. A batch that fails is aborted as a whole: the
 * view and its checkpoint stay as they were.
 *
 * The loop: each round applies a batch to the current view and, while
 * rebuilding, one to the fresh view; the fresh view is swapped in once its
 * checkpoint has reached the head its last batch saw and the current
 * view's checkpoint. A round that moved nothing sleeps on mgr->wake_cv
 * until the notified head or the rebuild counter differs from what the
 * round started with, or stop is set (no polling).
 *
 * Allocation: the RecordedEvent is unpacked into a per-worker arena that
 * grows to the largest event and is reset per event; values are dumped
 * into a per-worker buffer. jansson allocates the parsed documents (freed
 * per event); that is the price of not parsing JSON by hand.
 */
#include "proj_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROJ__BATCH_DEFAULT 4096u
#define PROJ__PROGRESS_NS 1000000000ll

/*
 * STREAM_STATE, COUNT and STREAMS keep the values they wrote last in a
 * small direct-mapped cache by key, so an event whose key was just written
 * skips the seek and the parse of the value it replaces. It lives for one
 * batch (one write txn): it is emptied when the batch commits or aborts.
 */
#define PROJ__CACHE_SLOTS 64u

struct state_slot {
    bool used;
    json_t *doc;              /* STREAM_STATE: the document (owned) */
    json_int_t count;         /* COUNT: count; STREAMS: event_count */
    bool sum_real;            /* COUNT: the sum is sum_d, else sum_i */
    json_int_t sum_i;
    double sum_d;
    uint64_t pos;             /* the position of the version cached */
    size_t klen;
    char key[PROJ_KEY_MAX];
};

struct fold {
    struct proj *p;
    proj_mgr *mgr;
    log_reader *rd;
    /* the arena events are unpacked into */
    uint8_t *arena;
    size_t arena_cap;
    size_t arena_used;
    ProtobufCAllocator alloc;
    /* values are dumped here */
    char *vbuf;
    size_t vbuf_cap;
    struct state_slot *cache; /* PROJ__CACHE_SLOTS; NULL: none (no memory) */
    /* the batch in progress */
    struct proj_view *v;
    MDB_txn *txn;
    MDB_cursor *c;
    uint64_t folded;
    int rc;
    char detail[PROJ_DETAIL_MAX];
    /* the event in progress: its data, parsed once when first needed */
    const struct log_event *ev;
    bool doc_loaded;
    json_t *doc;
};

/* ---- the arena ---- */

static void *arena_alloc(void *data, size_t size)
{
    struct fold *f = data;
    size_t at = (f->arena_used + 15) & ~(size_t)15;
    if (at > f->arena_cap || size > f->arena_cap - at) {
        return NULL;
    }
    f->arena_used = at + size;
    return f->arena + at;
}

static void arena_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* reset per event */
}

/* The event's data bytes (borrowed from the arena until the next event). */
static int event_data(struct fold *f, ProtobufCBinaryData *out)
{
    const struct log_event *ev = f->ev;
    size_t need = ev->packed_len * 2 + 1024;
    if (need > f->arena_cap) {
        uint8_t *a = realloc(f->arena, need);
        if (!a) {
            return AN_ENOMEM;
        }
        f->arena = a;
        f->arena_cap = need;
    }
    f->arena_used = 0;
    Annals__V1__RecordedEvent *rec =
        annals__v1__recorded_event__unpack(&f->alloc, ev->packed_len, ev->packed);
    if (!rec) {
        proj__detail(f->detail, "event at position %" PRIu64 " cannot be decoded",
                     ev->position);
        return AN_ECORRUPT;
    }
    *out = rec->data;
    return 0;
}

/* The event's data as JSON (borrowed; NULL: not JSON). Parsed once. */
static int event_doc(struct fold *f, json_t **out)
{
    if (!f->doc_loaded) {
        ProtobufCBinaryData d;
        int rc = event_data(f, &d);
        if (rc) {
            return rc;
        }
        f->doc_loaded = true;
        f->doc = d.len ? json_loadb((const char *)d.data, d.len, JSON_DECODE_ANY, NULL) : NULL;
    }
    *out = f->doc;
    return 0;
}

/* ---- writing versions ---- */

/* Dumps j into f->vbuf; *len_out its length. false: cannot be encoded. */
static bool dump(struct fold *f, const json_t *j, size_t *len_out)
{
    size_t n = json_dumpb(j, f->vbuf, f->vbuf_cap, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n == 0) {
        return false;
    }
    if (n > f->vbuf_cap) {
        size_t cap = n * 2;
        char *b = realloc(f->vbuf, cap);
        if (!b) {
            return false;
        }
        f->vbuf = b;
        f->vbuf_cap = cap;
        n = json_dumpb(j, f->vbuf, f->vbuf_cap, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    *len_out = n;
    return true;
}

/*
 * Writes key's version at the current event: value [val, val+len).
 * prev_pos (0: none) is the version it replaces, dropped when latest_only.
 */
static int put_version(struct fold *f, const void *key, size_t klen, uint64_t prev_pos,
                       const void *val, size_t len)
{
    uint8_t kb[PROJ_KEY_MAX + 8];
    MDB_val k = {.mv_size = klen + 8, .mv_data = kb};
    int rc;
    if (f->p->cd.latest_only && prev_pos) {
        proj__vkey(kb, key, klen, prev_pos);
        rc = mdb_del(f->txn, f->v->dbi_view, &k, NULL);
        if (rc && rc != MDB_NOTFOUND) {
            return proj__from_mdb(rc, "view del", f->detail);
        }
    }
    proj__vkey(kb, key, klen, f->ev->position);
    MDB_val v = {.mv_size = len, .mv_data = (void *)val};
    rc = mdb_put(f->txn, f->v->dbi_view, &k, &v, 0);
    if (rc) {
        return proj__from_mdb(rc, "view put", f->detail);
    }
    f->folded++;
    return 0;
}

/* The newest version of key (parsed), or NULL and *prev_pos 0. */
static int prev_value(struct fold *f, const void *key, size_t klen, json_t **out,
                      uint64_t *prev_pos)
{
    MDB_val v;
    *out = NULL;
    *prev_pos = 0;
    int rc = proj__view_seek(f->c, key, klen, UINT64_MAX, &v, prev_pos);
    if (rc == AN_ENOTFOUND) {
        *prev_pos = 0;
        return 0;
    }
    if (rc) {
        return rc;
    }
    if (v.mv_size == 0) {
        return 0; /* a deletion mark: starts afresh */
    }
    *out = json_loadb(v.mv_data, v.mv_size, 0, NULL);
    if (!*out) {
        proj__detail(f->detail, "a stored value of the view is not JSON");
        return AN_ECORRUPT;
    }
    return 0;
}

/* ---- the kinds ---- */

/* RFC 7396 MergePatch(target, patch); takes target's reference, returns a new one. */
static json_t *merge_patch(json_t *target, json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_incref(patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
        if (!target) {
            return NULL;
        }
    }
    const char *k;
    size_t kl;
    json_t *pv;
    json_object_keylen_foreach(patch, k, kl, pv) {
        if (json_is_null(pv)) {
            json_object_deln(target, k, kl);
            continue;
        }
        json_t *t = json_object_getn(target, k, kl);
        json_t *m = merge_patch(t ? json_incref(t) : NULL, pv);
        if (!m || json_object_setn_new(target, k, kl, m)) {
            json_decref(target);
            return NULL;
        }
    }
    return target;
}

static uint32_t key_hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)k[i]) * 16777619u;
    }
    return h;
}

/* Empties the cache (at the end of every batch). */
static void cache_drop(struct fold *f)
{
    for (size_t i = 0; f->cache && i < PROJ__CACHE_SLOTS; i++) {
        json_decref(f->cache[i].doc);
        f->cache[i].doc = NULL;
        f->cache[i].used = false;
    }
}

/* The slot of a key (NULL: no cache); *hit whether it holds that key. */
static struct state_slot *cache_slot(struct fold *f, const char *key, size_t klen, bool *hit)
{
    *hit = false;
    if (!f->cache) {
        return NULL;
    }
    struct state_slot *slot = &f->cache[key_hash(key, klen) % PROJ__CACHE_SLOTS];
    *hit = slot->used && slot->klen == klen && !memcmp(slot->key, key, klen);
    return slot;
}

/* Marks slot as holding key's version at the current event. */
static void cache_fill(struct fold *f, struct state_slot *slot, const char *key, size_t klen)
{
    slot->used = true;
    slot->pos = f->ev->position;
    slot->klen = klen;
    memcpy(slot->key, key, klen);
}

static int fold_stream_state(struct fold *f)
{
    const struct log_event *ev = f->ev;
    json_t *patch;
    json_t *prev = NULL;
    uint64_t prev_pos;
    size_t len;
    int rc = event_doc(f, &patch);
    if (rc || !json_is_object(patch) || ev->stream_len > PROJ_KEY_MAX) {
        return rc; /* not a JSON object: skipped */
    }
    bool hit;
    struct state_slot *slot = cache_slot(f, ev->stream, ev->stream_len, &hit);
    if (hit) {
        prev = slot->doc; /* taken over: merge_patch edits it in place */
        slot->doc = NULL;
        slot->used = false;
        prev_pos = slot->pos;
    } else {
        rc = prev_value(f, ev->stream, ev->stream_len, &prev, &prev_pos);
        if (rc) {
            return rc;
        }
    }
    json_t *next = merge_patch(prev, patch);
    if (!next) {
        return AN_ENOMEM;
    }
    rc = dump(f, next, &len) ? put_version(f, ev->stream, ev->stream_len, prev_pos, f->vbuf, len)
                             : 0;
    if (!rc && slot) {
        json_decref(slot->doc);
        slot->doc = next;
        cache_fill(f, slot, ev->stream, ev->stream_len);
    } else {
        json_decref(next);
    }
    return rc;
}

/*
 * The key of an event for COUNT and INDEX into kbuf (PROJ_KEY_MAX + 1):
 * *klen set, or *skip when it has none (or too long a one).
 */
static int event_key(struct fold *f, char *kbuf, size_t *klen, bool *skip)
{
    const struct log_event *ev = f->ev;
    const char *k = NULL;
    size_t n = 0;
    json_t *doc;
    json_t *v;
    int rc;
    *skip = true;
    switch (f->p->cd.key_mode) {
    case PROJ__KEY_TYPE:
        k = ev->type;
        n = ev->type_len;
        break;
    case PROJ__KEY_STREAM:
        k = ev->stream;
        n = ev->stream_len;
        break;
    case PROJ__KEY_CATEGORY: {
        const char *dash = memchr(ev->stream, '-', ev->stream_len);
        k = ev->stream;
        n = dash ? (size_t)(dash - ev->stream) : ev->stream_len;
        break;
    }
    case PROJ__KEY_POINTER:
        rc = event_doc(f, &doc);
        if (rc || !doc) {
            return rc;
        }
        v = proj__pointer_get(doc, f->p->cd.key_ptr);
        if (json_is_string(v)) {
            k = json_string_value(v);
            n = json_string_length(v);
        } else if (json_is_number(v) || json_is_boolean(v)) {
            n = json_dumpb(v, kbuf, PROJ_KEY_MAX, JSON_COMPACT | JSON_ENCODE_ANY);
            if (n == 0 || n > PROJ_KEY_MAX) {
                return 0;
            }
            k = kbuf;
        }
        break;
    case PROJ__KEY_NONE:
        break;
    }
    if (!k || n > PROJ_KEY_MAX) {
        return 0;
    }
    if (k != kbuf) {
        memcpy(kbuf, k, n);
    }
    *klen = n;
    *skip = false;
    return 0;
}

static int fold_count(struct fold *f)
{
    char key[PROJ_KEY_MAX + 1];
    char val[128];
    size_t klen;
    bool skip;
    bool hit;
    uint64_t prev_pos;
    json_int_t count = 0;
    bool sum_real = false;
    json_int_t sum_i = 0;
    double sum_d = 0;
    int rc = event_key(f, key, &klen, &skip);
    if (rc || skip) {
        return rc;
    }
    struct state_slot *slot = cache_slot(f, key, klen, &hit);
    if (hit) {
        count = slot->count;
        sum_real = slot->sum_real;
        sum_i = slot->sum_i;
        sum_d = slot->sum_d;
        prev_pos = slot->pos;
    } else {
        json_t *prev;
        rc = prev_value(f, key, klen, &prev, &prev_pos);
        if (rc) {
            return rc;
        }
        json_t *psum = prev ? json_object_get(prev, "sum") : NULL;
        count = prev ? json_integer_value(json_object_get(prev, "count")) : 0;
        sum_real = json_is_real(psum);
        sum_i = json_is_integer(psum) ? json_integer_value(psum) : 0;
        sum_d = json_is_real(psum) ? json_real_value(psum) : 0.0;
        json_decref(prev);
    }
    count++;
    int n;
    if (!f->p->cd.sum_ptr) {
        n = snprintf(val, sizeof(val), "{\"count\":%lld}", (long long)count);
    } else {
        json_t *doc;
        rc = event_doc(f, &doc);
        if (rc) {
            return rc;
        }
        json_t *add = doc ? proj__pointer_get(doc, f->p->cd.sum_ptr) : NULL;
        /* integers add up exactly until one is not an integer or they
         * overflow; from then on the sum is a double. A sum that would
         * overflow to inf adds nothing (JSON has no inf). */
        json_int_t ai = json_is_integer(add) ? json_integer_value(add) : 0;
        json_int_t si;
        if (!sum_real && !json_is_real(add) && !__builtin_add_overflow(sum_i, ai, &si)) {
            sum_i = si;
        } else {
            double ps = sum_real ? sum_d : (double)sum_i;
            double ns = ps + (json_is_number(add) ? json_number_value(add) : 0.0);
            sum_d = isfinite(ns) ? ns : ps;
            sum_real = true;
        }
        if (!sum_real) {
            n = snprintf(val, sizeof(val), "{\"count\":%lld,\"sum\":%lld}", (long long)count,
                         (long long)sum_i);
        } else {
            char num[64];
            json_t *sj = json_real(sum_d);
            size_t sl = sj ? json_dumpb(sj, num, sizeof(num) - 1, JSON_ENCODE_ANY) : 0;
            json_decref(sj);
            if (sl == 0 || sl >= sizeof(num)) {
                return AN_ENOMEM;
            }
            num[sl] = '\0';
            n = snprintf(val, sizeof(val), "{\"count\":%lld,\"sum\":%s}", (long long)count,
                         num);
        }
    }
    assert(n > 0 && (size_t)n < sizeof(val));
    rc = put_version(f, key, klen, prev_pos, val, (size_t)n);
    if (!rc && slot) {
        slot->count = count;
        slot->sum_real = sum_real;
        slot->sum_i = sum_i;
        slot->sum_d = sum_d;
        cache_fill(f, slot, key, klen);
    }
    return rc;
}

static int fold_index(struct fold *f)
{
    const struct log_event *ev = f->ev;
    char key[PROJ_KEY_MAX + 1];
    size_t klen;
    bool skip;
    size_t len;
    uint64_t prev_pos = 0;
    int rc = event_key(f, key, &klen, &skip);
    if (rc || skip) {
        return rc;
    }
    if (f->p->cd.latest_only) {
        MDB_val v;
        rc = proj__view_seek(f->c, key, klen, UINT64_MAX, &v, &prev_pos);
        if (rc && rc != AN_ENOTFOUND) {
            return rc;
        }
    }
    json_t *j = json_pack("{s:s%,s:I,s:I}", "stream", ev->stream, ev->stream_len, "version",
                          (json_int_t)ev->version, "position", (json_int_t)ev->position);
    if (!j) {
        return 0; /* not encodable (not UTF-8): skipped */
    }
    rc = dump(f, j, &len) ? put_version(f, key, klen, prev_pos, f->vbuf, len) : 0;
    json_decref(j);
    return rc;
}

static int fold_streams(struct fold *f)
{
    const struct log_event *ev = f->ev;
    char val[128];
    uint64_t prev_pos;
    json_int_t count;
    bool hit;
    if (ev->stream_len > PROJ_KEY_MAX) {
        return 0;
    }
    struct state_slot *slot = cache_slot(f, ev->stream, ev->stream_len, &hit);
    if (hit) {
        count = slot->count;
        prev_pos = slot->pos;
    } else {
        json_t *prev;
        int rc = prev_value(f, ev->stream, ev->stream_len, &prev, &prev_pos);
        if (rc) {
            return rc;
        }
        count = prev ? json_integer_value(json_object_get(prev, "event_count")) : 0;
        json_decref(prev);
    }
    count++;
    int n = snprintf(val, sizeof(val),
                     "{\"last_version\":%" PRIu64 ",\"event_count\":%lld,\"last_position\":%"
                     PRIu64 "}",
                     ev->version, (long long)count, ev->position);
    assert(n > 0 && (size_t)n < sizeof(val));
    int rc = put_version(f, ev->stream, ev->stream_len, prev_pos, val, (size_t)n);
    if (!rc && slot) {
        slot->count = count;
        cache_fill(f, slot, ev->stream, ev->stream_len);
    }
    return rc;
}

/* ---- batches ---- */

/* Server-owned '$' streams only through a prefix that starts with '$'. */
static bool dollar_selected(const struct proj__def *cd, const struct log_event *ev)
{
    if (!cd->dollar_prefix) {
        return false;
    }
    for (size_t i = 0; i < cd->filter.n_stream_prefixes; i++) {
        const char *pre = cd->filter.stream_prefixes[i];
        size_t pl = strlen(pre);
        if (pre[0] == '$' && ev->stream_len >= pl && memcmp(ev->stream, pre, pl) == 0) {
            return true;
        }
    }
    return false;
}

static bool on_event(void *arg, const struct log_event *ev)
{
    struct fold *f = arg;
    if (ev->stream_len && ev->stream[0] == '$' && !dollar_selected(&f->p->cd, ev)) {
        return true;
    }
    f->ev = ev;
    f->doc_loaded = false;
    f->doc = NULL;
    int rc = 0;
    switch (f->p->cd.kind) {
    case ANNALS__V1__PROJECTION_KIND__STREAM_STATE:
        rc = fold_stream_state(f);
        break;
    case ANNALS__V1__PROJECTION_KIND__COUNT:
        rc = fold_count(f);
        break;
    case ANNALS__V1__PROJECTION_KIND__INDEX:
        rc = fold_index(f);
        break;
    case ANNALS__V1__PROJECTION_KIND__STREAMS:
        rc = fold_streams(f);
        break;
    case ANNALS__V1__PROJECTION_KIND__PROJECTION_KIND_UNSPECIFIED:
    case _ANNALS__V1__PROJECTION_KIND_IS_INT_SIZE:
        break;
    }
    json_decref(f->doc);
    f->doc = NULL;
    f->ev = NULL;
    if (rc) {
        f->rc = rc;
        if (!f->detail[0]) {
            proj__detail(f->detail, "event at position %" PRIu64 ": %s", ev->position,
                         an_strerror(rc));
        }
        return false;
    }
    return true;
}

static int put_meta(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v)
{
    uint8_t b[8];
    proj__be64_put(b, v);
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val d = {.mv_size = 8, .mv_data = b};
    return mdb_put(txn, dbi, &k, &d, 0);
}

/*
 * One batch into v. *head_out gets the log head the batch's snapshot saw,
 * *moved whether v's checkpoint advanced. Returns 0 or an AN_E* code
 * (f->detail says what).
 */
static int apply_batch(struct fold *f, struct proj_view *v, uint64_t *head_out, bool *moved)
{
    struct proj *p = f->p;
    uint64_t next_pos = 0;
    *moved = false;
    f->detail[0] = '\0';
    int rc = log_reader_begin(f->rd);
    if (rc) {
        proj__detail(f->detail, "log reader: %s", an_strerror(rc));
        return rc;
    }
    uint64_t head = log_reader_head(f->rd);
    *head_out = head;
    if (v->checkpoint >= head) {
        log_reader_end(f->rd);
        return 0;
    }
    rc = mdb_txn_begin(v->env, NULL, 0, &f->txn);
    if (!rc) {
        rc = mdb_cursor_open(f->txn, v->dbi_view, &f->c);
        if (rc) {
            mdb_txn_abort(f->txn);
        }
    }
    if (rc) {
        log_reader_end(f->rd);
        f->txn = NULL;
        return proj__from_mdb(rc, "view begin", f->detail);
    }
    f->v = v;
    f->folded = 0;
    f->rc = 0;
    unsigned batch = p->mgr->cfg.batch_events ? p->mgr->cfg.batch_events : PROJ__BATCH_DEFAULT;
    struct log_all_read q = {
        .from_position = v->checkpoint + 1,
        .max_scan = batch,
        .filter = &p->cd.filter,
        .as_of = head,
    };
    rc = log_read_all(f->rd, &q, on_event, f, &next_pos, NULL);
    if (rc) {
        proj__detail(f->detail, "log: %s", log_reader_detail(f->rd));
    }
    log_reader_end(f->rd);
    if (!rc) {
        rc = f->rc;
    }
    uint64_t ckpt = next_pos - 1;
    uint64_t applied = v->applied + f->folded;
    if (!rc && ckpt > v->checkpoint) {
        int mrc = put_meta(f->txn, v->dbi_meta, "checkpoint", ckpt);
        if (!mrc) {
            mrc = put_meta(f->txn, v->dbi_meta, "applied", applied);
        }
        if (!mrc) {
            mrc = mdb_txn_commit(f->txn);
            f->txn = NULL;
        }
        if (mrc) {
            rc = proj__from_mdb(mrc, "view commit", f->detail);
        }
    }
    cache_drop(f);
    if (f->txn) {
        mdb_txn_abort(f->txn); /* closes the cursor too (write txn) */
    }
    f->txn = NULL;
    f->c = NULL;
    f->v = NULL;
    if (rc) {
        return rc;
    }
    if (ckpt > v->checkpoint) {
        pthread_mutex_lock(&p->mu);
        v->checkpoint = ckpt;
        v->applied = applied;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        *moved = true;
        proj__advanced(f->mgr);
    }
    return 0;
}

/* ---- faults, rebuild, swap ---- */

static void fault_cur(struct fold *f, int rc)
{
    struct proj *p = f->p;
    pthread_mutex_lock(&p->mu);
    p->cur_faulted = true;
    snprintf(p->error, sizeof(p->error), "%s: %.200s", an_errname(rc), f->detail);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    proj__advanced(f->mgr);
    proj__say(f->mgr, PROJ_LOG_ERROR, "msg=\"projection faulted\" proj=%s err=%s detail=\"%s\"",
              p->name, an_errname(rc), f->detail);
}

static void fail_rebuild(struct fold *f, struct proj_view *next, int rc)
{
    struct proj *p = f->p;
    char detail[PROJ_DETAIL_MAX];
    proj__cat_set_gens(f->mgr, p, p->gen_cur, 0, detail);
    pthread_mutex_lock(&p->mu);
    p->next = NULL;
    p->gen_next = 0;
    snprintf(p->error, sizeof(p->error), "rebuild: %s: %.200s", an_errname(rc), f->detail);
    pthread_mutex_unlock(&p->mu);
    atomic_store(&next->doomed, true);
    proj__view_release(next);
    proj__say(f->mgr, PROJ_LOG_ERROR, "msg=\"rebuild failed\" proj=%s err=%s detail=\"%s\"",
              p->name, an_errname(rc), f->detail);
}

/* Makes next the current view: catalog first (synced), then memory. */
static int swap_in(struct fold *f, struct proj_view *next)
{
    struct proj *p = f->p;
    int rc = proj__cat_set_gens(f->mgr, p, next->gen, 0, f->detail);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    struct proj_view *old = p->cur;
    p->cur = next;
    p->next = NULL;
    p->gen_cur = next->gen;
    p->gen_next = 0;
    p->cur_faulted = false;
    p->error[0] = '\0';
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    proj__advanced(f->mgr);
    if (old) {
        /* queries in flight keep it open; the last one removes the files */
        atomic_store(&old->doomed, true);
        proj__view_release(old);
    }
    return 0;
}

struct rebuild_clock {
    struct proj_view *view;   /* the view the clock is timing */
    int64_t start_ns;
    int64_t last_ns;
    uint64_t start_ckpt;
};

static void progress(struct fold *f, struct rebuild_clock *rc, struct proj_view *next,
                     uint64_t head, bool done)
{
    int64_t now = proj__now_ns();
    if (rc->view != next) {
        *rc = (struct rebuild_clock){next, now, now, next->checkpoint};
        proj__say(f->mgr, PROJ_LOG_INFO,
                  "msg=\"rebuild started\" proj=%s gen=%" PRIu64 " from=%" PRIu64
                  " head=%" PRIu64,
                  f->p->name, next->gen, next->checkpoint, head);
        return;
    }
    if (!done && now - rc->last_ns < PROJ__PROGRESS_NS) {
        return;
    }
    rc->last_ns = now;
    double secs = (double)(now - rc->start_ns) / 1e9;
    double rate = secs > 0 ? (double)(next->checkpoint - rc->start_ckpt) / secs : 0;
    double eta = rate > 0 && head > next->checkpoint ? (double)(head - next->checkpoint) / rate
                                                      : 0;
    proj__say(f->mgr, PROJ_LOG_INFO,
              "msg=\"%s\" proj=%s done=%" PRIu64 " head=%" PRIu64
              " rate=%.0f/s eta_s=%.0f secs=%.1f",
              done ? "rebuild done" : "rebuild progress", f->p->name, next->checkpoint, head,
              rate, eta, secs);
}

/* ---- the thread ---- */

static void *worker_main(void *arg)
{
    struct proj *p = arg;
    proj_mgr *mgr = p->mgr;
    pthread_setname_np(pthread_self(), "an-proj");
    struct fold *f = calloc(1, sizeof(*f));
    struct rebuild_clock clock = {0};
    int rc;
    if (!f) {
        pthread_mutex_lock(&p->mu);
        snprintf(p->error, sizeof(p->error), "worker: out of memory");
        p->cur_faulted = true;
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    f->p = p;
    f->mgr = mgr;
    f->alloc = (ProtobufCAllocator){arena_alloc, arena_free, f};
    if (p->cd.kind != ANNALS__V1__PROJECTION_KIND__INDEX) {
        f->cache = calloc(PROJ__CACHE_SLOTS, sizeof(*f->cache)); /* NULL: no cache */
    }
    rc = log_reader_open(mgr->log, &f->rd);
    if (rc) {
        proj__detail(f->detail, "cannot open a log reader");
        fault_cur(f, rc);
    }
    while (!atomic_load(&p->stop)) {
        uint64_t h0 = atomic_load(&mgr->head);
        unsigned k0 = atomic_load(&p->kick);
        pthread_mutex_lock(&p->mu);
        struct proj_view *cur = p->cur;
        struct proj_view *next = p->next;
        bool cur_ok = cur && !p->cur_faulted && f->rd;
        pthread_mutex_unlock(&p->mu);
        bool moved = false;
        bool m;
        uint64_t head;
        if (cur_ok) {
            rc = apply_batch(f, cur, &head, &m);
            moved |= m;
            if (rc) {
                fault_cur(f, rc);
                cur_ok = false;
            }
        }
        if (next && f->rd) {
            if (clock.view != next) {
                progress(f, &clock, next, h0, false); /* "rebuild started" */
            }
            rc = apply_batch(f, next, &head, &m);
            moved |= m;
            if (rc) {
                fail_rebuild(f, next, rc);
                continue;
            }
            bool caught_up = next->checkpoint >= head &&
                             (!cur_ok || next->checkpoint >= cur->checkpoint);
            progress(f, &clock, next, head, caught_up);
            if (caught_up) {
                rc = swap_in(f, next);
                if (rc) {
                    fail_rebuild(f, next, rc);
                    continue;
                }
                moved = true;
            }
        }
        if (moved) {
            continue;
        }
        pthread_mutex_lock(&mgr->wake_mu);
        while (!atomic_load(&p->stop) && atomic_load(&mgr->head) == h0 &&
               atomic_load(&p->kick) == k0) {
            pthread_cond_wait(&mgr->wake_cv, &mgr->wake_mu);
        }
        pthread_mutex_unlock(&mgr->wake_mu);
    }
    log_reader_close(f->rd);
    cache_drop(f);
    free(f->cache);
    free(f->arena);
    free(f->vbuf);
    free(f);
    return NULL;
}

void proj__wake_all(proj_mgr *mgr)
{
    pthread_mutex_lock(&mgr->wake_mu);
    pthread_cond_broadcast(&mgr->wake_cv);
    pthread_mutex_unlock(&mgr->wake_mu);
}

int proj__worker_start(struct proj *p)
{
    atomic_store(&p->stop, false);
    if (pthread_create(&p->thread, NULL, worker_main, p) != 0) {
        return AN_ENOMEM;
    }
    p->thread_started = true;
    return 0;
}

void proj__worker_stop(struct proj *p)
{
    if (!p->thread_started) {
        return;
    }
    atomic_store(&p->stop, true);
    proj__wake_all(p->mgr);
    pthread_join(p->thread, NULL);
    p->thread_started = false;
}

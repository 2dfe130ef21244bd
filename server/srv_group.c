/*
 * srv_group.c - consumer groups (annals.v1.Consumers): competing consumers
 * with acks, prefetch, redelivery and a dead-letter stream.
 *
 * A group is a cursor over the log shared by its consumers. In memory it
 * holds a window: an entry for each selected event above the checkpoint
 * that has been scanned (read from the log) and not yet passed by the
 * checkpoint, in position order. An entry is READY (waiting for a
 * consumer), FLIGHT (handed to one consumer), BLOCKED (ordered_per_stream:
 * an earlier event of its stream is not settled), PARKING (its $Parked
 * event is in the writer's hands) or DONE (acked or parked). The
 * checkpoint moves past the DONE entries at the front of the window, so
 * the window holds only what is in flight or ready, the settled entries
 * above the oldest unsettled one, and the blocked ones; it never holds
 * more than WINDOW_MAX entries (scanning pauses at the cap). READY entries
 * sit in a min-heap by position, so events are handed out in position
 * order, redeliveries first where they are older.
 *
 * Entries that ReplayParked brings back from below the checkpoint live
 * beside the window (the replay list), since the checkpoint does not move
 * back for them.
 *
 * Handing out ("pump") runs under the group's mutex on whichever thread
 * made it possible: a CQ thread that received settles or saw a send
 * complete, or the groups thread when the head moved or a timer fired.
 * It reads the events by position with that thread's log reader (one short
 * snapshot per pump) and sends each consumer with credit (prefetch minus
 * its unsettled) and no send in flight one message of deliveries. A
 * consumer thus has at most one message in flight and at most `prefetch`
 * events: a slow consumer holds its prefetch and nothing else.
 *
 * Durability. The groups' state lives in their own LMDB environment,
 * DATA/groups: `defs` (name -> the ConsumerGroup as created), `state`
 * (name -> checkpoint and counters) and `marks` (name, 0, position ->
 * attempts and flags) for what the checkpoint alone cannot say: settled
 * events above it, attempts of events handed out again, replayed events
 * below it. The groups thread stores every change at most STORE_MS after
 * it happened, for all groups in one synced commit, so no ack waits for a
 * write and the log's writer never sees one. After a crash the events
 * settled in the last STORE_MS are handed out again (at-least-once), and
 * nothing unsettled is lost: the cursor starts again at the checkpoint.
 * Attempts are stored when an event is handed back (nack, timeout,
 * disconnect), not on its first delivery, so an event in flight at a
 * crash is handed out again with the attempt count it had stored.
 *
 * Parking appends a $Parked event to "$parked-<group>" through the log's
 * writer (a request of the server's own); the entry is DONE only once that
 * append is durable, so a crash in between hands it out again rather than
 * lose it.
 *
 * Locks: gs->mu (the list of groups) before g->mu; gs->pmu serializes the
 * stores with deletions, so a deleted group's state is never written back.
 */
#include "srv_group_int.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>



static int64_t now_ms(void)
{
    gpr_timespec t = gpr_now(GPR_CLOCK_MONOTONIC);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int srv__mdb_code(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_MAP_FULL:
        return AN_EFULL;
    case ENOMEM:
        return AN_ENOMEM;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return AN_ECORRUPT;
    default:
        return AN_EIO;
    }
}

bool srv__vec_push(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        uint64_t *p = realloc(*v, nc * sizeof(*p));
        if (!p) {
            return false;
        }
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return true;
}

/* ---- the ready heap ---- */

static void heap_swap(struct srv_group *g, size_t a, size_t b)
{
    struct srv_gentry *t = g->heap[a];
    g->heap[a] = g->heap[b];
    g->heap[b] = t;
    g->heap[a]->hidx = (uint32_t)a;
    g->heap[b]->hidx = (uint32_t)b;
}

static void heap_up(struct srv_group *g, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (g->heap[p]->pos <= g->heap[i]->pos) {
            break;
        }
        heap_swap(g, p, i);
        i = p;
    }
}

static void heap_down(struct srv_group *g, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < g->n_heap && g->heap[l]->pos < g->heap[m]->pos) {
            m = l;
        }
        if (r < g->n_heap && g->heap[r]->pos < g->heap[m]->pos) {
            m = r;
        }
        if (m == i) {
            return;
        }
        heap_swap(g, i, m);
        i = m;
    }
}

static bool heap_push(struct srv_group *g, struct srv_gentry *e)
{
    if (g->n_heap == g->cap_heap) {
        size_t nc = g->cap_heap ? g->cap_heap * 2 : 256;
        struct srv_gentry **p = realloc(g->heap, nc * sizeof(*p));
        if (!p) {
            return false;
        }
        g->heap = p;
        g->cap_heap = nc;
    }
    e->hidx = (uint32_t)g->n_heap;
    g->heap[g->n_heap++] = e;
    heap_up(g, e->hidx);
    return true;
}

static void heap_remove(struct srv_group *g, struct srv_gentry *e)
{
    size_t i = e->hidx;
    if (i == UINT32_MAX) {
        return;
    }
    e->hidx = UINT32_MAX;
    g->n_heap--;
    if (i == g->n_heap) {
        return;
    }
    g->heap[i] = g->heap[g->n_heap];
    g->heap[i]->hidx = (uint32_t)i;
    heap_down(g, i);
    heap_up(g, g->heap[i]->hidx);
}

static struct srv_gentry *heap_pop(struct srv_group *g)
{
    if (!g->n_heap) {
        return NULL;
    }
    struct srv_gentry *e = g->heap[0];
    heap_remove(g, e);
    return e;
}

/* ---- the window and the replay list ---- */

static struct srv_gentry *win_at(const struct srv_group *g, size_t i)
{
    return g->win[(g->win_head + i) & (g->win_cap - 1)];
}

static bool win_push(struct srv_group *g, struct srv_gentry *e)
{
    if (g->win_len == g->win_cap) {
        size_t nc = g->win_cap ? g->win_cap * 2 : 1024;
        struct srv_gentry **p = malloc(nc * sizeof(*p));
        if (!p) {
            return false;
        }
        for (size_t i = 0; i < g->win_len; i++) {
            p[i] = win_at(g, i);
        }
        free(g->win);
        g->win = p;
        g->win_cap = nc;
        g->win_head = 0;
    }
    g->win[(g->win_head + g->win_len++) & (g->win_cap - 1)] = e;
    return true;
}

/* Binary search of a sorted sequence of entries by position. */
#define FIND_SORTED(count, at, pos, out)                                                     \
    do {                                                                                     \
        size_t lo_ = 0, hi_ = (count);                                                       \
        (out) = NULL;                                                                        \
        while (lo_ < hi_) {                                                                  \
            size_t mid_ = lo_ + (hi_ - lo_) / 2;                                             \
            struct srv_gentry *x_ = (at);                                                    \
            if (x_->pos == (pos)) {                                                          \
                (out) = x_;                                                                  \
                break;                                                                       \
            }                                                                                \
            if (x_->pos < (pos)) {                                                           \
                lo_ = mid_ + 1;                                                              \
            } else {                                                                         \
                hi_ = mid_;                                                                  \
            }                                                                                \
        }                                                                                    \
    } while (0)

static struct srv_gentry *find_entry(const struct srv_group *g, uint64_t pos)
{
    struct srv_gentry *e;
    if (pos > g->checkpoint) {
        FIND_SORTED(g->win_len, win_at(g, mid_), pos, e);
    } else {
        FIND_SORTED(g->n_rep, g->rep[mid_], pos, e);
    }
    return e;
}

static bool rep_insert(struct srv_group *g, struct srv_gentry *e)
{
    if (g->n_rep == g->cap_rep) {
        size_t nc = g->cap_rep ? g->cap_rep * 2 : 64;
        struct srv_gentry **p = realloc(g->rep, nc * sizeof(*p));
        if (!p) {
            return false;
        }
        g->rep = p;
        g->cap_rep = nc;
    }
    size_t i = g->n_rep;
    while (i > 0 && g->rep[i - 1]->pos > e->pos) {
        g->rep[i] = g->rep[i - 1];
        i--;
    }
    g->rep[i] = e;
    g->n_rep++;
    e->replay = true;
    return true;
}

static void rep_remove(struct srv_group *g, struct srv_gentry *e)
{
    for (size_t i = 0; i < g->n_rep; i++) {
        if (g->rep[i] == e) {
            memmove(&g->rep[i], &g->rep[i + 1], (g->n_rep - i - 1) * sizeof(g->rep[0]));
            g->n_rep--;
            return;
        }
    }
}

/* ---- ordered_per_stream: the streams' lists ---- */

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    }
    return h;
}

static struct gstream *stream_get(struct srv_group *g, const char *name, size_t n)
{
    uint64_t h = name_hash(name, n);
    if (g->n_sbuckets) {
        for (struct gstream *s = g->sbuckets[h & (g->n_sbuckets - 1)]; s; s = s->hnext) {
            if (s->hash == h && strlen(s->name) == n && memcmp(s->name, name, n) == 0) {
                return s;
            }
        }
    }
    if (g->n_streams >= g->n_sbuckets) {
        size_t nb = g->n_sbuckets ? g->n_sbuckets * 2 : 256;
        struct gstream **b = calloc(nb, sizeof(*b));
        if (!b) {
            return NULL;
        }
        for (size_t i = 0; i < g->n_sbuckets; i++) {
            for (struct gstream *s = g->sbuckets[i], *nx; s; s = nx) {
                nx = s->hnext;
                s->hnext = b[s->hash & (nb - 1)];
                b[s->hash & (nb - 1)] = s;
            }
        }
        free(g->sbuckets);
        g->sbuckets = b;
        g->n_sbuckets = nb;
    }
    struct gstream *s = calloc(1, sizeof(*s) + n + 1);
    if (!s) {
        return NULL;
    }
    memcpy(s->name, name, n);
    s->hash = h;
    s->hnext = g->sbuckets[h & (g->n_sbuckets - 1)];
    g->sbuckets[h & (g->n_sbuckets - 1)] = s;
    g->n_streams++;
    return s;
}

static void stream_drop(struct srv_group *g, struct gstream *s)
{
    struct gstream **pp = &g->sbuckets[s->hash & (g->n_sbuckets - 1)];
    while (*pp != s) {
        pp = &(*pp)->hnext;
    }
    *pp = s->hnext;
    g->n_streams--;
    free(s);
}

/* Links e at the end of its stream's list: READY if it is the first. */
static bool stream_link(struct srv_group *g, struct srv_gentry *e, const char *name, size_t n)
{
    struct gstream *s = stream_get(g, name, n);
    if (!s) {
        return false;
    }
    e->st = s;
    e->st_next = NULL;
    if (s->tail) {
        s->tail->st_next = e;
    } else {
        s->head = e;
    }
    s->tail = e;
    s->len++;
    e->state = s->head == e ? GE_READY : GE_BLOCKED;
    return true;
}

/* e (its stream's head) is settled: the next one becomes READY. */
static void stream_advance(struct srv_group *g, struct srv_gentry *e)
{
    struct gstream *s = e->st;
    if (!s) {
        return;
    }
    e->st = NULL;
    /* the head, unless a replayed entry was linked behind others */
    struct srv_gentry **pp = &s->head, *prev = NULL;
    while (*pp && *pp != e) {
        prev = *pp;
        pp = &(*pp)->st_next;
    }
    if (!*pp) {
        return;
    }
    *pp = e->st_next;
    if (s->tail == e) {
        s->tail = prev;
    }
    s->len--;
    if (!s->head) {
        stream_drop(g, s);
        return;
    }
    struct srv_gentry *h = s->head;
    if (h->state == GE_BLOCKED) {
        h->state = GE_READY;
        heap_push(g, h);
    }
}

/* ---- entries ---- */

static void entry_free(struct srv_gentry *e)
{
    free(e->reason);
    free(e);
}

static void mark_dirty(struct srv_group *g, uint64_t pos)
{
    srv__vec_push(&g->dirty, &g->n_dirty, &g->cap_dirty, pos);
}

/* Moves the checkpoint past the DONE entries at the window's front. */
static void advance_checkpoint(struct srv_group *g)
{
    while (g->win_len && win_at(g, 0)->state == GE_DONE) {
        struct srv_gentry *e = win_at(g, 0);
        g->win_head = (g->win_head + 1) & (g->win_cap - 1);
        g->win_len--;
        entry_free(e);
    }
    uint64_t ck = g->win_len ? win_at(g, 0)->pos - 1 : g->scanned;
    if (ck > g->checkpoint) {
        g->checkpoint = ck;
        g->state_dirty = true;
    }
}

/* e is acked or parked. */
static void entry_done(struct srv_group *g, struct srv_gentry *e)
{
    e->state = GE_DONE;
    if (g->ordered) {
        stream_advance(g, e);
    }
    g->state_dirty = true;
    if (e->replay) {
        rep_remove(g, e);
        srv__vec_push(&g->del, &g->n_del, &g->cap_del, e->pos);
        entry_free(e);
        return;
    }
    mark_dirty(g, e->pos);
    advance_checkpoint(g);
}

static void flight_unlink(struct srv_group *g, struct srv_gentry *e)
{
    struct srv_consumer *k = &e->owner->cons;
    if (e->fl_prev) {
        e->fl_prev->fl_next = e->fl_next;
    } else {
        k->fl_head = e->fl_next;
    }
    if (e->fl_next) {
        e->fl_next->fl_prev = e->fl_prev;
    } else {
        k->fl_tail = e->fl_prev;
    }
    e->fl_prev = e->fl_next = NULL;
    e->owner = NULL;
    k->n_flight--;
    g->in_flight--;
}

static void park(struct srv_group *g, struct srv_gentry *e, const char *reason);

/* e came back unsettled (nack, timeout, its consumer left): hand it out
 * again, or park it once it has had max_deliveries attempts. */
static void entry_return(struct srv_group *g, struct srv_gentry *e, const char *nack_reason)
{
    if (g->deleted) {
        return; /* it goes with the group */
    }
    if (nack_reason && nack_reason[0]) {
        free(e->reason);
        e->reason = strdup(nack_reason);
    }
    mark_dirty(g, e->pos); /* its attempts */
    if (e->attempts >= g->max_deliveries) {
        park(g, e, NULL);
        return;
    }
    e->state = GE_READY;
    heap_push(g, e);
}

/* ---- parking ---- */

struct park_req {
    struct srv_group *g;        /* a reference */
    uint64_t pos;
    Annals__V1__AppendRequest req;
    Annals__V1__StreamAppend sa;
    Annals__V1__StreamAppend *sap;
    Annals__V1__EventData ev;
    Annals__V1__EventData *evp;
    char stream[80];
    char *data;
};


static void park_done(struct srv_wreq *w)
{
    struct park_req *p = w->arg;
    struct srv_group *g = p->g;
    pthread_mutex_lock(&g->mu);
    struct srv_gentry *e = g->deleted ? NULL : find_entry(g, p->pos);
    if (e && e->state == GE_PARKING) {
        if (w->op.rc == 0) {
            g->parked++;
            entry_done(g, e);
        } else {
            say_error("groups", "msg=\"cannot park\" group=%s position=%llu err=%s detail=\"%s\"",
                      g->name, (unsigned long long)p->pos, an_errname(w->op.rc), w->op.detail);
            e->state = GE_READY; /* handed out again: it stays in the group */
            heap_push(g, e);
        }
    }
    pthread_mutex_unlock(&g->mu);
    srv__wake_thread(g->gs);
    free(p->data);
    free(p);
    srv__group_unref(g);
    srv_wreq_free(w);
}

/* Appends e's $Parked event to "$parked-<group>" through the writer. */
static void park(struct srv_group *g, struct srv_gentry *e, const char *reason)
{
    const char *why = reason && reason[0] ? reason : e->reason ? e->reason : "max_deliveries";
    struct srv *s = g->gs->srv;
    struct log_event ev;
    json_t *j = NULL;
    struct park_req *p = calloc(1, sizeof(*p));
    struct srv_wreq *w = calloc(1, sizeof(*w) + sizeof(w->results[0]));
    int rc = p && w ? 0 : AN_ENOMEM;
    if (!rc) {
        /* a short snapshot of our own: park runs under any thread's pump */
        log_reader *rd = NULL;
        rc = log_reader_open(s->log, &rd);
        if (!rc && !(rc = log_reader_begin(rd))) {
            rc = log_get_event(rd, e->pos, &ev);
            if (!rc) {
                j = json_pack("{s:I,s:s%,s:I,s:s%,s:I,s:s}", "original_position",
                              (json_int_t)e->pos, "original_stream", ev.stream, ev.stream_len,
                              "original_version", (json_int_t)ev.version, "original_type",
                              ev.type, ev.type_len, "attempts", (json_int_t)e->attempts,
                              "reason", why);
            }
            log_reader_end(rd);
        }
        log_reader_close(rd);
        if (!rc && !j) {
            rc = AN_ENOMEM;
        }
    }
    if (!rc) {
        p->data = json_dumps(j, JSON_COMPACT);
        rc = p->data ? 0 : AN_ENOMEM;
    }
    json_decref(j);
    if (rc) {
        say_error("groups", "msg=\"cannot park\" group=%s position=%llu err=%s", g->name,
                  (unsigned long long)e->pos, an_errname(rc));
        free(p ? p->data : NULL);
        free(p);
        free(w);
        e->state = GE_READY;
        heap_push(g, e);
        return;
    }
    snprintf(p->stream, sizeof(p->stream), "$parked-%s", g->name);
    annals__v1__append_request__init(&p->req);
    annals__v1__stream_append__init(&p->sa);
    annals__v1__event_data__init(&p->ev);
    p->ev.type = "$Parked";
    p->ev.content_type = "application/json";
    p->ev.data.data = (uint8_t *)p->data;
    p->ev.data.len = strlen(p->data);
    p->evp = &p->ev;
    p->sa.stream = p->stream;
    p->sa.n_events = 1;
    p->sa.events = &p->evp;
    p->sap = &p->sa;
    p->req.n_streams = 1;
    p->req.streams = &p->sap;
    p->pos = e->pos;
    p->g = g;
    atomic_fetch_add(&g->refs, 1);
    w->op.kind = LOG_OP_APPEND;
    w->op.append = &p->req;
    w->op.allow_reserved = true;
    w->op.streams = w->results;
    w->bytes = p->ev.data.len;
    w->done = park_done;
    w->arg = p;
    e->state = GE_PARKING;
    rc = srv_writer_submit(s, w);
    if (rc) {
        /* shutting down, or the queue is full: hand it out again later */
        e->state = GE_READY;
        heap_push(g, e);
        free(p->data);
        free(p);
        free(w);
        atomic_fetch_sub(&g->refs, 1);
    }
}

/* ---- filling the window from the log ---- */

struct fill_ctx {
    struct srv_group *g;
    bool oom;
};

static bool selected(const struct srv_group *g, const struct log_event *ev)
{
    if (g->stream) {
        return strlen(g->stream) == ev->stream_len &&
               memcmp(g->stream, ev->stream, ev->stream_len) == 0;
    }
    return ev->stream_len == 0 || ev->stream[0] != '$' || g->dollar_ok;
}

static bool fill_one(void *arg, const struct log_event *ev)
{
    struct fill_ctx *f = arg;
    struct srv_group *g = f->g;
    g->scanned = ev->position;
    if (!selected(g, ev)) {
        return true;
    }
    uint32_t attempts = 0;
    while (g->i_lm < g->n_lm && g->lm[g->i_lm].pos < ev->position) {
        g->i_lm++;
    }
    if (g->i_lm < g->n_lm && g->lm[g->i_lm].pos == ev->position) {
        const struct gmark *m = &g->lm[g->i_lm++];
        if (m->flags & MARK_SETTLED) {
            return true; /* settled before the restart */
        }
        attempts = m->attempts;
    }
    struct srv_gentry *e = calloc(1, sizeof(*e));
    if (!e) {
        f->oom = true;
        return false;
    }
    e->pos = ev->position;
    e->attempts = attempts;
    e->hidx = UINT32_MAX;
    e->state = GE_READY;
    if (g->ordered && !stream_link(g, e, ev->stream, ev->stream_len)) {
        free(e);
        f->oom = true;
        return false;
    }
    if (!win_push(g, e)) {
        stream_advance(g, e);
        free(e);
        f->oom = true;
        return false;
    }
    if (e->state == GE_READY) {
        heap_push(g, e);
    }
    return g->win_len < WINDOW_MAX;
}

#define STUCK_LOG_MS 60000

/* The group cannot go past pos (under g->mu): the event there cannot be
 * read or handed out. Every pump (each commit, each 20 ms) tries again;
 * this logs the first failure at pos, then at most one a minute while it
 * stays there, with how many were not logged. */
static void stuck(struct srv_group *g, const char *what, uint64_t pos, int rc)
{
    int64_t now = now_ms();
    if (pos == g->stuck_pos && now - g->stuck_logged_ms < STUCK_LOG_MS) {
        g->stuck_quiet++;
        return;
    }
    say_error("groups", "msg=\"%s\" group=%s position=%llu err=%s unlogged_failures=%llu",
              what, g->name, (unsigned long long)pos, an_errname(rc),
              (unsigned long long)(pos == g->stuck_pos ? g->stuck_quiet : 0));
    g->stuck_pos = pos;
    g->stuck_logged_ms = now;
    g->stuck_quiet = 0;
}

/* Scans the log past g->scanned until `want` entries are ready (reader
 * begun). */
static void fill(struct srv_group *g, log_reader *rd, size_t want)
{
    uint64_t head = log_reader_head(rd);
    while (g->n_heap < want && g->scanned < head && g->win_len < WINDOW_MAX) {
        struct fill_ctx f = {.g = g};
        struct log_all_read q = {
            .from_position = g->scanned + 1,
            .max_count = want - g->n_heap,
            .max_scan = SCAN_MAX,
            .filter = g->stream ? NULL : &g->filter,
            .as_of = head,
        };
        uint64_t next = 0;
        bool done = false;
        int rc = log_read_all(rd, &q, fill_one, &f, &next, &done);
        if (rc || f.oom) {
            /* fill_one moved scanned past every event it was given */
            stuck(g, "cannot read the log", g->scanned + 1, rc ? rc : AN_ENOMEM);
            return;
        }
        if (next > g->scanned + 1) {
            /* scanned up to next - 1, selected or not */
            g->scanned = next - 1 < head ? next - 1 : head;
        }
        if (done) {
            g->scanned = head;
        }
        advance_checkpoint(g);
        if (q.max_count && f.g->n_heap >= want) {
            break;
        }
    }
    advance_checkpoint(g);
}

/* ---- handing out ---- */

struct msg_buf {
    uint8_t *p;
    size_t len, cap;
};

static bool buf_reserve(struct msg_buf *b, size_t more)
{
    if (b->len + more <= b->cap) {
        return true;
    }
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + more) {
        nc *= 2;
    }
    uint8_t *p = realloc(b->p, nc);
    if (!p) {
        return false;
    }
    b->p = p;
    b->cap = nc;
    return true;
}

/* Adds one Delivery (field 1 of ConsumeResponse) from the stored bytes. */
static bool add_delivery(struct msg_buf *b, const struct log_event *ev, uint32_t attempt)
{
    size_t inner = pb_field_len(ev->packed_len) + 1 + pb_varint_len(attempt);
    if (!buf_reserve(b, 1 + pb_varint_len(inner) + inner)) {
        return false;
    }
    b->p[b->len++] = 0x0a;
    b->len += pb_varint(b->p + b->len, inner);
    b->len += pb_put_field(b->p + b->len, 0x0a, ev->packed, ev->packed_len);
    b->p[b->len++] = 0x10;
    b->len += pb_varint(b->p + b->len, attempt);
    return true;
}


/* Hands out what consumer c may take now (reader begun). */
static void give(struct srv_group *g, struct srv_call *c, log_reader *rd, struct msg_buf *b)
{
    struct srv_consumer *k = &c->cons;
    if (k->left || k->sending || k->n_flight >= k->prefetch || !g->n_heap) {
        return;
    }
    b->len = 0;
    unsigned n = 0;
    int64_t deadline = now_ms() + g->ack_timeout_ms;
    while (k->n_flight < k->prefetch && n < MSG_EVENTS && (n == 0 || b->len < MSG_BYTES)) {
        struct srv_gentry *e = heap_pop(g);
        if (!e) {
            break;
        }
        struct log_event ev;
        int rc = log_get_event(rd, e->pos, &ev);
        if (rc || !add_delivery(b, &ev, e->attempts + 1)) {
            stuck(g, "cannot hand out", e->pos, rc ? rc : AN_ENOMEM);
            heap_push(g, e);
            break;
        }
        e->attempts++;
        e->state = GE_FLIGHT;
        e->owner = c;
        e->deadline_ms = deadline;
        e->fl_next = NULL;
        e->fl_prev = k->fl_tail;
        if (k->fl_tail) {
            k->fl_tail->fl_next = e;
        } else {
            k->fl_head = e;
        }
        k->fl_tail = e;
        k->n_flight++;
        g->in_flight++;
        g->delivered++;
        if (e->attempts > 1) {
            g->redelivered++;
        }
        n++;
    }
    if (!n) {
        return;
    }
    g->state_dirty = true;
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)b->p, b->len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    srv_call_ref(c); /* the send's */
    k->sending = true;
    if (srv_send(c, bb)) {
        /* the call is ending: its events come back when it leaves */
        k->sending = false;
        srv_call_unref(c);
    }
}

/* Fills and hands out to every consumer that has room. */
void srv__pump(struct srv_group *g, log_reader *rd)
{
    if (g->deleted || !g->n_consumers) {
        return;
    }
    size_t credit = 0;
    for (struct srv_call *c = g->consumers; c; c = c->cons.next) {
        if (!c->cons.left && c->cons.n_flight < c->cons.prefetch) {
            credit += c->cons.prefetch - c->cons.n_flight;
        }
    }
    if (!credit) {
        return;
    }
    if (log_reader_begin(rd)) {
        return;
    }
    fill(g, rd, credit);
    struct msg_buf b = {0};
    if (g->n_heap) {
        struct srv_call *start = g->rr ? g->rr : g->consumers;
        struct srv_call *c = start;
        do {
            give(g, c, rd, &b);
            c = c->cons.next ? c->cons.next : g->consumers;
        } while (c != start && g->n_heap);
        g->rr = start->cons.next ? start->cons.next : g->consumers;
    }
    log_reader_end(rd);
    free(b.p);
}

/* ---- settling ---- */

static struct srv_gentry *owned(struct srv_group *g, struct srv_call *c, uint64_t pos)
{
    struct srv_gentry *e = find_entry(g, pos);
    return e && e->state == GE_FLIGHT && e->owner == c ? e : NULL;
}

void srv__settle(struct srv_group *g, struct srv_call *c, const Annals__V1__Settle *st)
{
    for (size_t i = 0; i < st->n_ack; i++) {
        struct srv_gentry *e = owned(g, c, st->ack[i]);
        if (e) {
            flight_unlink(g, e);
            g->acked++;
            entry_done(g, e);
        }
    }
    for (size_t i = 0; i < st->n_nack; i++) {
        struct srv_gentry *e = owned(g, c, st->nack[i]);
        if (e) {
            flight_unlink(g, e);
            entry_return(g, e, st->reason);
        }
    }
    for (size_t i = 0; i < st->n_park; i++) {
        struct srv_gentry *e = owned(g, c, st->park[i]);
        if (e) {
            flight_unlink(g, e);
            mark_dirty(g, e->pos);
            park(g, e, st->reason);
        }
    }
}

/* Ack timeouts (the groups thread). */
static void expire(struct srv_group *g, int64_t now)
{
    for (struct srv_call *c = g->consumers; c; c = c->cons.next) {
        while (c->cons.fl_head && c->cons.fl_head->deadline_ms <= now) {
            struct srv_gentry *e = c->cons.fl_head;
            flight_unlink(g, e);
            entry_return(g, e, NULL);
        }
    }
}

/* ---- groups: lifetime ---- */

static void group_free(struct srv_group *g)
{
    for (size_t i = 0; i < g->win_len; i++) {
        entry_free(win_at(g, i));
    }
    for (size_t i = 0; i < g->n_rep; i++) {
        entry_free(g->rep[i]);
    }
    for (size_t i = 0; i < g->n_sbuckets; i++) {
        for (struct gstream *s = g->sbuckets[i], *nx; s; s = nx) {
            nx = s->hnext;
            free(s);
        }
    }
    free(g->sbuckets);
    free(g->win);
    free(g->heap);
    free(g->rep);
    free(g->dirty);
    free(g->del);
    free(g->lm);
    free(g->def_bytes);
    if (g->def) {
        annals__v1__consumer_group__free_unpacked(g->def, NULL);
    }
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void srv__group_unref(struct srv_group *g)
{
    if (atomic_fetch_sub(&g->refs, 1) == 1) {
        group_free(g);
    }
}

/* A group from its packed definition (def_bytes taken). */
int srv__group_new(struct srv_groups *gs, uint8_t *bytes, size_t len, struct srv_group **out)
{
    struct srv_group *g = calloc(1, sizeof(*g));
    if (!g) {
        free(bytes);
        return AN_ENOMEM;
    }
    g->def_bytes = bytes;
    g->def_len = len;
    g->def = annals__v1__consumer_group__unpack(NULL, len, bytes);
    if (!g->def) {
        free(bytes);
        free(g);
        return AN_ECORRUPT;
    }
    pthread_mutex_init(&g->mu, NULL);
    atomic_store(&g->refs, 1);
    g->gs = gs;
    snprintf(g->name, sizeof(g->name), "%s", g->def->name);
    const Annals__V1__ConsumerGroup *d = g->def;
    g->stream = d->stream && d->stream[0] ? d->stream : NULL;
    if (d->filter) {
        g->filter.stream_prefixes = (const char *const *)d->filter->stream_prefixes;
        g->filter.n_stream_prefixes = d->filter->n_stream_prefixes;
        g->filter.event_types = (const char *const *)d->filter->event_types;
        g->filter.n_event_types = d->filter->n_event_types;
        for (size_t i = 0; i < d->filter->n_stream_prefixes; i++) {
            if (d->filter->stream_prefixes[i][0] == '$') {
                g->dollar_ok = true;
            }
        }
    }
    if (g->stream) {
        /* one stream: the filter scan narrows to names starting with it */
        g->filter.stream_prefixes = &g->stream;
        g->filter.n_stream_prefixes = 1;
    }
    g->max_deliveries = d->max_deliveries ? d->max_deliveries : 5;
    g->ack_timeout_ms = d->ack_timeout_ms ? d->ack_timeout_ms : 30000;
    g->ordered = d->ordered_per_stream;
    *out = g;
    return 0;
}

struct srv_group *srv__group_find(struct srv_groups *gs, const char *name)
{
    for (struct srv_group *g = gs->list; g; g = g->next) {
        if (strcmp(g->name, name) == 0) {
            return g;
        }
    }
    return NULL;
}

/* The group by name with a reference, or NULL. */
struct srv_group *srv__group_get(struct srv_groups *gs, const char *name)
{
    pthread_mutex_lock(&gs->mu);
    struct srv_group *g = srv__group_find(gs, name);
    if (g) {
        atomic_fetch_add(&g->refs, 1);
    }
    pthread_mutex_unlock(&gs->mu);
    return g;
}

/* ---- storing ---- */

/* marks key: name, 0, big-endian position */
static size_t mark_key(uint8_t *k, const char *name, uint64_t pos)
{
    size_t n = strlen(name);
    memcpy(k, name, n);
    k[n++] = 0;
    for (int i = 7; i >= 0; i--) {
        k[n++] = (uint8_t)(pos >> (8 * i));
    }
    return n;
}

static uint64_t mark_pos(const uint8_t *k, size_t len)
{
    uint64_t p = 0;
    for (size_t i = len - 8; i < len; i++) {
        p = p << 8 | k[i];
    }
    return p;
}

struct snap {
    struct srv_group *g;
    struct gstate_rec st;
    uint64_t del_from, del_to;  /* non-replay marks in (from, to] go */
    struct gmark *puts;
    size_t n_puts;
    uint64_t *dels;
    size_t n_dels;
};

/* What g has to store (under g->mu); false: nothing. */
static bool snapshot(struct srv_group *g, struct snap *s)
{
    if (g->deleted || (!g->state_dirty && !g->n_dirty && !g->n_del)) {
        return false;
    }
    memset(s, 0, sizeof(*s));
    s->g = g;
    s->st = (struct gstate_rec){g->checkpoint, g->delivered, g->acked, g->redelivered, g->parked};
    s->del_from = g->ckpt_stored;
    s->del_to = g->checkpoint;
    s->puts = g->n_dirty ? malloc(g->n_dirty * sizeof(*s->puts)) : NULL;
    for (size_t i = 0; s->puts && i < g->n_dirty; i++) {
        struct srv_gentry *e = find_entry(g, g->dirty[i]);
        if (!e || (!e->replay && e->pos <= g->checkpoint)) {
            continue;
        }
        s->puts[s->n_puts++] = (struct gmark){
            e->pos, e->attempts,
            (e->state == GE_DONE ? MARK_SETTLED : 0) | (e->replay ? MARK_REPLAY : 0)};
    }
    s->dels = g->del;
    s->n_dels = g->n_del;
    g->del = NULL;
    g->n_del = g->cap_del = 0;
    g->n_dirty = 0;
    g->state_dirty = false;
    g->ckpt_stored = g->checkpoint;
    return true;
}

static int write_snap(struct srv_groups *gs, MDB_txn *txn, const struct snap *s)
{
    const char *name = s->g->name;
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v = {sizeof(s->st), (void *)&s->st};
    int rc = mdb_put(txn, gs->state, &k, &v, 0);
    uint8_t kb[96];
    if (!rc && s->del_to > s->del_from) {
        MDB_cursor *cur;
        rc = mdb_cursor_open(txn, gs->marks, &cur);
        if (!rc) {
            MDB_val mk = {mark_key(kb, name, s->del_from + 1), kb}, mv;
            size_t plen = strlen(name) + 1;
            int r = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
            while (r == 0 && mk.mv_size == plen + 8 && memcmp(mk.mv_data, kb, plen) == 0 &&
                   mark_pos(mk.mv_data, mk.mv_size) <= s->del_to) {
                struct gmark m; /* LMDB values are not aligned */
                if (mv.mv_size == sizeof(m)) {
                    memcpy(&m, mv.mv_data, sizeof(m));
                }
                if (mv.mv_size == sizeof(m) && !(m.flags & MARK_REPLAY)) {
                    if ((rc = mdb_cursor_del(cur, 0))) {
                        break;
                    }
                    r = mdb_cursor_get(cur, &mk, &mv, MDB_GET_CURRENT);
                    if (r == MDB_NOTFOUND) {
                        break;
                    }
                    continue;
                }
                r = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT);
            }
            mdb_cursor_close(cur);
        }
    }
    for (size_t i = 0; !rc && i < s->n_dels; i++) {
        MDB_val mk = {mark_key(kb, name, s->dels[i]), kb};
        rc = mdb_del(txn, gs->marks, &mk, NULL);
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    for (size_t i = 0; !rc && i < s->n_puts; i++) {
        MDB_val mk = {mark_key(kb, name, s->puts[i].pos), kb};
        MDB_val mv = {sizeof(struct gmark), &s->puts[i]};
        rc = mdb_put(txn, gs->marks, &mk, &mv, 0);
    }
    return rc;
}

/* Stores what every group (or just `only`) has to store, in one commit. */
void srv__store(struct srv_groups *gs, struct srv_group *only)
{
    pthread_mutex_lock(&gs->pmu);
    pthread_mutex_lock(&gs->mu);
    size_t n = only ? 1 : gs->n;
    struct srv_group **gl = calloc(n ? n : 1, sizeof(*gl));
    size_t m = 0;
    for (struct srv_group *g = only ? only : gs->list; gl && g && m < n;
         g = only ? NULL : g->next) {
        atomic_fetch_add(&g->refs, 1);
        gl[m++] = g;
    }
    pthread_mutex_unlock(&gs->mu);
    struct snap *sn = calloc(m ? m : 1, sizeof(*sn));
    size_t k = 0;
    for (size_t i = 0; sn && i < m; i++) {
        pthread_mutex_lock(&gl[i]->mu);
        if (snapshot(gl[i], &sn[k])) {
            k++;
        }
        pthread_mutex_unlock(&gl[i]->mu);
    }
    if (k) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(gs->env, NULL, 0, &txn);
        for (size_t i = 0; !rc && i < k; i++) {
            rc = write_snap(gs, txn, &sn[i]);
        }
        if (!rc) {
            rc = mdb_txn_commit(txn);
        } else {
            mdb_txn_abort(txn);
        }
        if (rc) {
            say_error("groups", "msg=\"cannot store the groups' state\" err=\"%s\"",
                      mdb_strerror(rc));
        }
    }
    for (size_t i = 0; sn && i < k; i++) {
        free(sn[i].puts);
        free(sn[i].dels);
    }
    free(sn);
    for (size_t i = 0; i < m; i++) {
        srv__group_unref(gl[i]);
    }
    free(gl);
    pthread_mutex_unlock(&gs->pmu);
}

/* Deletes a group's records (defs, state, marks) in one synced commit. */
int srv__drop_records(struct srv_groups *gs, const char *name)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(gs->env, NULL, 0, &txn);
    if (rc) {
        return srv__mdb_code(rc);
    }
    MDB_val k = {strlen(name), (void *)name};
    rc = mdb_del(txn, gs->defs, &k, NULL);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    if (!rc) {
        rc = mdb_del(txn, gs->state, &k, NULL);
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (!rc) {
        MDB_cursor *cur;
        uint8_t kb[96];
        size_t plen = strlen(name) + 1;
        rc = mdb_cursor_open(txn, gs->marks, &cur);
        if (!rc) {
            MDB_val mk = {mark_key(kb, name, 0), kb}, mv;
            int r = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
            while (r == 0 && mk.mv_size == plen + 8 && memcmp(mk.mv_data, kb, plen) == 0) {
                if ((rc = mdb_cursor_del(cur, 0))) {
                    break;
                }
                r = mdb_cursor_get(cur, &mk, &mv, MDB_GET_CURRENT);
            }
            mdb_cursor_close(cur);
        }
    }
    if (rc) {
        mdb_txn_abort(txn);
        return srv__mdb_code(rc);
    }
    return srv__mdb_code(mdb_txn_commit(txn));
}

/* ---- loading at start: the records read back ---- */

int srv__group_decode_def(struct srv_groups *gs, const void *key, size_t klen, const void *val,
                          size_t vlen, struct srv_group **out, char *detail)
{
    char kt[96];
    char why[LOG_DETAIL_MAX] = "";
    log_key_text(kt, sizeof(kt), key, klen);
    Annals__V1__ConsumerGroup *d = annals__v1__consumer_group__unpack(NULL, vlen, val);
    if (!d) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its definition (%zu bytes) does not decode",
                 kt, vlen);
        return AN_ECORRUPT;
    }
    int rc = srv_group_check_def(d, why);
    bool named = strlen(d->name) == klen && memcmp(d->name, key, klen) == 0;
    annals__v1__consumer_group__free_unpacked(d, NULL);
    if (rc) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its definition is not valid: %.120s", kt,
                 why);
        return AN_ECORRUPT;
    }
    if (!named) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its definition names another group", kt);
        return AN_ECORRUPT;
    }
    uint8_t *bytes = malloc(vlen ? vlen : 1);
    if (!bytes) {
        return AN_ENOMEM;
    }
    memcpy(bytes, val, vlen);
    return srv__group_new(gs, bytes, vlen, out);
}

int srv__group_decode_state(const char *name, const void *val, size_t vlen,
                            struct gstate_rec *out, char *detail)
{
    if (vlen != sizeof(*out)) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its state record has %zu bytes, not %zu",
                 name, vlen, sizeof(*out));
        return AN_ECORRUPT;
    }
    memcpy(out, val, sizeof(*out)); /* LMDB values are not aligned */
    return 0;
}

int srv__group_decode_mark(const char *name, uint64_t checkpoint, const void *key, size_t klen,
                           const void *val, size_t vlen, struct gmark *out, char *detail)
{
    size_t plen = strlen(name) + 1;
    struct gmark m;
    assert(klen >= plen && memcmp(key, name, plen) == 0);
    if (klen != plen + 8 || vlen != sizeof(m)) {
        snprintf(detail, LOG_DETAIL_MAX,
                 "group '%s': a mark of %zu+%zu bytes, not %zu+%zu (key, value)", name, klen,
                 vlen, plen + 8, sizeof(m));
        return AN_ECORRUPT;
    }
    memcpy(&m, val, sizeof(m));
    uint64_t pos = mark_pos(key, klen);
    const char *bad = NULL;
    if (pos == 0) {
        bad = "position 0";
    } else if (m.pos != pos) {
        bad = "its value is of another position";
    } else if (m.flags & ~(MARK_SETTLED | MARK_REPLAY)) {
        bad = "unknown flags";
    } else if ((m.flags & MARK_REPLAY) && (m.flags & MARK_SETTLED)) {
        bad = "a replayed event marked settled";
    } else if ((m.flags & MARK_REPLAY) && pos > checkpoint) {
        bad = "a replayed event above the checkpoint";
    }
    if (bad) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': the mark of position %llu: %s (flags %#x)",
                 name, (unsigned long long)pos, bad, (unsigned)m.flags);
        return AN_ECORRUPT;
    }
    *out = m;
    return 0;
}

/* One mark loaded into g: a replayed event becomes an entry now, the rest
 * wait for the scan (began: rd has a snapshot). */
static int load_mark(struct srv_group *g, log_reader *rd, bool began, const struct gmark *m)
{
    if (m->flags & MARK_REPLAY) {
        struct srv_gentry *e = calloc(1, sizeof(*e));
        struct log_event ev;
        if (!e) {
            return AN_ENOMEM;
        }
        e->pos = m->pos;
        e->attempts = m->attempts;
        e->hidx = UINT32_MAX;
        e->state = GE_READY;
        if (g->ordered && began && log_get_event(rd, m->pos, &ev) == 0 &&
            !stream_link(g, e, ev.stream, ev.stream_len)) {
            free(e);
            return AN_ENOMEM;
        }
        if (!rep_insert(g, e)) {
            stream_advance(g, e);
            free(e);
            return AN_ENOMEM;
        }
        if (e->state == GE_READY) {
            heap_push(g, e);
        }
    } else if (m->pos > g->checkpoint) {
        if (g->n_lm == g->cap_lm) {
            size_t nc = g->cap_lm ? g->cap_lm * 2 : 16;
            struct gmark *lm = realloc(g->lm, nc * sizeof(*lm));
            if (!lm) {
                return AN_ENOMEM;
            }
            g->lm = lm;
            g->cap_lm = nc;
        }
        g->lm[g->n_lm++] = *m;
    }
    return 0;
}

/* One group from its records: the definition (k, v), its state and its
 * marks. 0, or an AN_E* code with detail naming the group and the record. */
static int load_group(struct srv_groups *gs, MDB_txn *txn, log_reader *rd, MDB_val *k,
                      MDB_val *v, char *detail)
{
    struct srv_group *g;
    int rc = srv__group_decode_def(gs, k->mv_data, k->mv_size, v->mv_data, v->mv_size, &g,
                                   detail);
    if (rc) {
        return rc;
    }
    /* the log's head: what a group from another history is cut back to */
    uint64_t head = log_head(gs->srv->log);
    MDB_val sv;
    int r = mdb_get(txn, gs->state, k, &sv);
    if (r == 0) {
        struct gstate_rec st;
        if ((rc = srv__group_decode_state(g->name, sv.mv_data, sv.mv_size, &st, detail))) {
            goto out_unref;
        }
        g->checkpoint = g->scanned = g->ckpt_stored = st.checkpoint;
        g->delivered = st.delivered;
        g->acked = st.acked;
        g->redelivered = st.redelivered;
        g->parked = st.parked;
    } else if (r != MDB_NOTFOUND) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its state: %s", g->name, mdb_strerror(r));
        rc = srv__mdb_code(r);
        goto out_unref;
    }
    /*
     * A checkpoint or marks past the log's head come from another history
     * (a log restored without its groups, or from another data directory).
     * The positions the log fills next are other events than those the
     * group settled there, so it is cut back to the head and those marks
     * go (at the next store): the new events are handed out, none skipped.
     */
    uint64_t ck_was = g->checkpoint;
    size_t dropped = 0;
    if (g->checkpoint > head) {
        g->checkpoint = g->scanned = g->ckpt_stored = head;
        g->state_dirty = true;
    }
    MDB_cursor *cur;
    if ((r = mdb_cursor_open(txn, gs->marks, &cur))) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its marks: %s", g->name, mdb_strerror(r));
        rc = srv__mdb_code(r);
        goto out_unref;
    }
    uint8_t kb[96];
    size_t plen = strlen(g->name) + 1;
    MDB_val mk = {mark_key(kb, g->name, 0), kb}, mv;
    bool began = log_reader_begin(rd) == 0;
    r = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
    while (!rc && r == 0 && mk.mv_size >= plen && memcmp(mk.mv_data, kb, plen) == 0) {
        struct gmark m;
        rc = srv__group_decode_mark(g->name, ck_was, mk.mv_data, mk.mv_size, mv.mv_data,
                                    mv.mv_size, &m, detail);
        if (!rc && m.pos > head) {
            rc = srv__vec_push(&g->del, &g->n_del, &g->cap_del, m.pos) ? 0 : AN_ENOMEM;
            dropped++;
        } else if (!rc) {
            rc = load_mark(g, rd, began, &m);
        }
        r = rc ? 0 : mdb_cursor_get(cur, &mk, &mv, MDB_NEXT);
    }
    if (!rc && r != 0 && r != MDB_NOTFOUND) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': its marks: %s", g->name, mdb_strerror(r));
        rc = srv__mdb_code(r);
    }
    if (began) {
        log_reader_end(rd);
    }
    mdb_cursor_close(cur);
    if (rc) {
        goto out_unref;
    }
    if (ck_was > g->checkpoint || dropped) {
        say_warn("groups",
                 "msg=\"group cut back: its checkpoint or marks are past the log's head (a log "
                 "restored without its groups?); handing out this log's events from there\" "
                 "group=%s checkpoint=%llu head=%llu marks_dropped=%zu",
                 g->name, (unsigned long long)ck_was, (unsigned long long)head, dropped);
    }
    g->next = gs->list;
    gs->list = g;
    gs->n++;
    return 0;

out_unref:
    if (rc == AN_ENOMEM) {
        snprintf(detail, LOG_DETAIL_MAX, "group '%s': out of memory", g->name);
    }
    srv__group_unref(g);
    return rc;
}

static int load(struct srv_groups *gs, char *detail)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(gs->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        snprintf(detail, LOG_DETAIL_MAX, "groups: %s", mdb_strerror(rc));
        return srv__mdb_code(rc);
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, gs->defs, &cur);
    MDB_val k, v;
    int r = rc ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    int err = rc ? srv__mdb_code(rc) : 0;
    while (!err && r == 0) {
        char why[LOG_DETAIL_MAX] = "";
        if ((err = load_group(gs, txn, gs->rd, &k, &v, why))) {
            snprintf(detail, LOG_DETAIL_MAX, "groups: cannot load: %s (%s)", why,
                     an_errname(err));
            say_error("groups", "msg=\"a stored group does not load\" err=%s detail=\"%s\"",
                      an_errname(err), why);
            break;
        }
        r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (!err && r != MDB_NOTFOUND) {
        snprintf(detail, LOG_DETAIL_MAX, "groups: the definitions: %s", mdb_strerror(r));
        err = srv__mdb_code(r);
    }
    if (!rc) {
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return err;
}

/* ---- the groups thread ---- */

void srv__wake_thread(struct srv_groups *gs)
{
    pthread_mutex_lock(&gs->mu);
    gs->wake = true;
    pthread_cond_signal(&gs->cond);
    pthread_mutex_unlock(&gs->mu);
}

void srv_group_notify(struct srv *s)
{
    struct srv_groups *gs = s->groups;
    if (!gs) {
        return;
    }
    /* without groups the thread has nothing to hand out: not waking it
     * saves a context switch per commit (its 20 ms timer still stores) */
    pthread_mutex_lock(&gs->mu);
    if (gs->n) {
        gs->wake = true;
        pthread_cond_signal(&gs->cond);
    }
    pthread_mutex_unlock(&gs->mu);
}

static void *groups_main(void *arg)
{
    struct srv_groups *gs = arg;
    pthread_setname_np(pthread_self(), "an-groups");
    int64_t last_store = now_ms(), last_tick = 0;
    for (;;) {
        pthread_mutex_lock(&gs->mu);
        if (!gs->wake && !gs->stop) {
            gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                              gpr_time_from_millis(STORE_MS, GPR_TIMESPAN));
            struct timespec ts = {until.tv_sec, until.tv_nsec};
            pthread_cond_timedwait(&gs->cond, &gs->mu, &ts);
        }
        bool stop = gs->stop;
        gs->wake = false;
        size_t n = gs->n;
        struct srv_group **gl = malloc((n ? n : 1) * sizeof(*gl));
        size_t m = 0;
        for (struct srv_group *g = gs->list; gl && g && m < n; g = g->next) {
            atomic_fetch_add(&g->refs, 1);
            gl[m++] = g;
        }
        pthread_mutex_unlock(&gs->mu);
        if (stop) {
            for (size_t i = 0; i < m; i++) {
                srv__group_unref(gl[i]);
            }
            free(gl);
            break;
        }
        int64_t now = now_ms();
        bool tick = now - last_tick >= TICK_MS;
        if (tick) {
            last_tick = now;
        }
        for (size_t i = 0; i < m; i++) {
            struct srv_group *g = gl[i];
            pthread_mutex_lock(&g->mu);
            if (g->n_consumers) {
                if (tick) {
                    expire(g, now);
                }
                srv__pump(g, gs->rd);
            }
            pthread_mutex_unlock(&g->mu);
            srv__group_unref(g);
        }
        free(gl);
        if (now - last_store >= STORE_MS) {
            srv__store(gs, NULL);
            last_store = now;
        }
    }
    return NULL;
}

/* ---- start, stop ---- */

int srv_group_start(struct srv *s, char *detail)
{
    struct srv_groups *gs = calloc(1, sizeof(*gs));
    if (!gs) {
        return AN_ENOMEM;
    }
    gs->srv = s;
    pthread_mutex_init(&gs->mu, NULL);
    pthread_mutex_init(&gs->pmu, NULL);
    pthread_cond_init(&gs->cond, NULL);
    s->groups = gs;
    char path[4096];
    snprintf(path, sizeof(path), "%s/groups", s->cfg.data_dir);
    if (mkdir(path, 0700) && errno != EEXIST) {
        snprintf(detail, LOG_DETAIL_MAX, "cannot create %.180s: %s", path, strerror(errno));
        return AN_EIO;
    }
    int rc = mdb_env_create(&gs->env);
    if (!rc) {
        mdb_env_set_maxdbs(gs->env, 4);
        mdb_env_set_mapsize(gs->env, GROUPS_MAP_BYTES);
        rc = mdb_env_open(gs->env, path, 0, 0600);
    }
    MDB_txn *txn = NULL;
    if (!rc) {
        rc = mdb_txn_begin(gs->env, NULL, 0, &txn);
    }
    if (!rc) {
        rc = mdb_dbi_open(txn, "defs", MDB_CREATE, &gs->defs);
    }
    if (!rc) {
        rc = mdb_dbi_open(txn, "state", MDB_CREATE, &gs->state);
    }
    if (!rc) {
        rc = mdb_dbi_open(txn, "marks", MDB_CREATE, &gs->marks);
    }
    if (!rc) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn) {
        mdb_txn_abort(txn);
    }
    if (rc) {
        snprintf(detail, LOG_DETAIL_MAX, "cannot open %.180s: %s", path, mdb_strerror(rc));
        return srv__mdb_code(rc);
    }
    if ((rc = log_reader_open(s->log, &gs->rd))) {
        snprintf(detail, LOG_DETAIL_MAX, "groups: no log reader");
        return rc;
    }
    if ((rc = load(gs, detail))) {
        return rc;
    }
    if (pthread_create(&gs->thread, NULL, groups_main, gs)) {
        snprintf(detail, LOG_DETAIL_MAX, "cannot start the groups thread");
        return AN_EINTERNAL;
    }
    gs->running = true;
    say_info("groups", "msg=opened groups=%u", gs->n);
    return 0;
}

void srv_group_stop(struct srv *s)
{
    struct srv_groups *gs = s->groups;
    if (!gs || !gs->running) {
        return;
    }
    pthread_mutex_lock(&gs->mu);
    gs->stop = true;
    pthread_cond_signal(&gs->cond);
    pthread_mutex_unlock(&gs->mu);
    pthread_join(gs->thread, NULL);
    gs->running = false;
}

void srv_group_free(struct srv *s)
{
    struct srv_groups *gs = s->groups;
    if (!gs) {
        return;
    }
    if (gs->env) {
        srv__store(gs, NULL);
    }
    for (struct srv_group *g = gs->list, *nx; g; g = nx) {
        nx = g->next;
        srv__group_unref(g);
    }
    log_reader_close(gs->rd);
    if (gs->env) {
        mdb_env_close(gs->env);
    }
    pthread_mutex_destroy(&gs->mu);
    pthread_mutex_destroy(&gs->pmu);
    pthread_cond_destroy(&gs->cond);
    free(gs);
    s->groups = NULL;
}

/* ---- consumers leaving ---- */

/* Ends c's call once it has left its group and nothing is in flight on it
 * (under g->mu, or before the join). */
void srv__consumer_maybe_end(struct srv_call *c)
{
    struct srv_consumer *k = &c->cons;
    if (k->ended || !k->left || k->sending) {
        return;
    }
    k->ended = true;
    if (k->end_code) {
        srv_reply_code(c, k->end_code, k->end_detail);
    } else {
        srv_reply(c, NULL, GRPC_STATUS_OK, NULL, NULL, 0);
    }
}

/* c leaves its group: its unsettled events are handed out again. */
void srv__consumer_leave(struct srv_group *g, struct srv_call *c, int code, const char *detail)
{
    struct srv_consumer *k = &c->cons;
    if (k->left) {
        return;
    }
    k->left = true;
    k->end_code = code;
    snprintf(k->end_detail, sizeof(k->end_detail), "%s", detail ? detail : "");
    while (k->fl_head) {
        struct srv_gentry *e = k->fl_head;
        flight_unlink(g, e);
        entry_return(g, e, NULL);
    }
    if (k->prev) {
        k->prev->cons.next = k->next;
    } else if (g->consumers == c) {
        g->consumers = k->next;
    }
    if (k->next) {
        k->next->cons.prev = k->prev;
    }
    if (g->rr == c) {
        g->rr = k->next;
    }
    k->prev = k->next = NULL;
    g->n_consumers--;
    srv__consumer_maybe_end(c);
}

/* ---- ReplayParked's part ---- */

/* One parked position handed out again (under g->mu); false: out of memory. */
bool srv__replay_one(struct srv_group *g, log_reader *rd, uint64_t pos)
{
    struct srv_gentry *e = find_entry(g, pos);
    if (e) {
        if (e->state != GE_DONE) {
            return true; /* already live */
        }
        /* parked above the checkpoint: still in the window */
        e->attempts = 0;
        mark_dirty(g, pos);
        if (g->ordered) {
            struct log_event ev;
            if (log_get_event(rd, pos, &ev) == 0) {
                stream_link(g, e, ev.stream, ev.stream_len);
            }
        } else {
            e->state = GE_READY;
        }
        if (e->state == GE_READY) {
            heap_push(g, e);
        }
        return true;
    }
    if (pos > g->checkpoint) {
        return true; /* not scanned yet: the scan will find it */
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        return false;
    }
    e->pos = pos;
    e->hidx = UINT32_MAX;
    e->state = GE_READY;
    if (g->ordered) {
        struct log_event ev;
        if (log_get_event(rd, pos, &ev) == 0) {
            stream_link(g, e, ev.stream, ev.stream_len);
        }
    }
    if (!rep_insert(g, e)) {
        stream_advance(g, e);
        free(e);
        return false;
    }
    mark_dirty(g, pos);
    if (e->state == GE_READY) {
        heap_push(g, e);
    }
    return true;
}


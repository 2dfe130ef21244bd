/*
 * srv_sub.c - Queries.Subscribe: catch-up subscriptions, and the fan-out
 * thread that wakes the ones waiting for new events.
 *
 * A subscription is a cursor over the log and at most one message in
 * flight (DESIGN.md, "Streams to clients"). It holds no events: each time
 * it may send, it reads its next batch from LMDB in a short read snapshot,
 * bounded by the durable head, and sends it. So a slow subscriber costs
 * nothing but its cursor, whatever the writers do, and history and live
 * events come out of the same reads: there is no switch from one to the
 * other where an event could be lost or sent twice.
 *
 * Whoever has a subscription moves it on (sub_pump): the CQ thread when
 * its send completes, or a fan-out thread after waking it. When nothing
 * is left to read up to the head, it parks: it goes on the list of its
 * CQ thread's fan-out (under that fan-out's mu, after checking once more
 * that the head has not moved), and the thread lets go of it. The writer,
 * after each durable commit, publishes the head to every fan-out
 * (srv_sub_notify: a short read of what the commit brought, then a store,
 * a short lock and, unless the gate below finds that no subscription
 * selects any of it, a signal each; never a wait on a subscriber); each
 * fan-out thread takes its parked subscriptions
 * behind the new head off its list and pumps them with its own reader.
 * There is one fan-out thread per CQ thread, so a wave to many
 * subscribers uses every core.
 *
 * A subscription that replays history (not caught up yet) more than
 * CATCHUP_LAG positions behind the head is handed to the catch-up thread
 * instead, which pumps those in turn at the lowest priority (SCHED_IDLE).
 * Replaying is mostly copies into sockets, as much as each client's
 * flow-control window takes (4 MiB per connection for libannals): a
 * thousand subscribers starting from the beginning made it gigabytes, and
 * on the CQ threads that starved the appends past their deadlines. On the
 * catch-up thread the replay takes what the appends leave.
 *
 * A subscription is thus always in exactly one place: in flight (its
 * completion will come back), parked (its fan-out, the client's
 * cancellation or shutdown takes it), or queued for the catch-up thread
 * (which takes it, or shutdown does).
 *
 * The fan-out threads run a little below the CQ threads and the writer
 * too (nice FANOUT_NICE): a wave to a thousand subscribers is a thousand
 * sends, and at the same priority it held back the appends that make the
 * next wave. Measured with bench_sub, 1000 subscribers, 64 writers at 100
 * appends/s in all: append p50 21-25 ms at nice 0, 4-5 ms at nice 5, and
 * delivery p50 27 ms to 17 ms with it; at full rate, twice the appends and
 * twice the deliveries per second. The order is thus: appends, live
 * subscribers, subscribers catching up.
 *
 * Before it wakes anyone, a fan-out thread reads the streams and types of
 * the positions the wave brings (a wave index, for waves of up to
 * WAVE_INDEX_MAX positions); a parked subscription whose filter or stream
 * selects none of them only moves its cursor and stays parked, unless a
 * checkpoint is due. Parked subscriptions are kept in buckets by selection
 * (interned: a stream, or a filter), in the order they parked, which is
 * about the order their checkpoints fall due; a wave that selects nothing
 * for a selection moves the whole bucket's cursor at once (applied to each
 * when it leaves the bucket) and wakes only those at the front whose
 * checkpoint is due. So subscriptions that select little cost next to
 * nothing per wave: no read, no pump, no walk. And a commit that no
 * selection in use selects does not wake the fan-out threads at all (the
 * gate, srv_sub_notify): they wake for the next checkpoints due, in rounds
 * CKPT_ROUND_MS apart.
 *
 * Within a wave, all-streams subscriptions without a filter that stand at
 * the same position get the same message: a fan-out thread keeps the
 * last one it built (srv_wave_msg) and sends it again by reference, so a
 * thousand such subscribers cost one read and one encoding per wave, and
 * a gRPC send each.
 *
 * Messages: events (field 1) with `checkpoint` (field 3) set to the last
 * position looked at, so every message says how far the subscriber has
 * been brought; one message with caught_up (field 2) and no events when
 * the history has been delivered; and, for a filter that selects little,
 * a checkpoint alone after CKPT_SCAN positions looked at without one, or
 * after CKPT_MS while the log moves. Those are spaced out further when
 * many subscriptions are open: live, all of them together get at most
 * --checkpoint-rate checkpoints alone a second (ckpt_spacing), so ten
 * thousand filters that select nothing cost the server, and their
 * clients, a hundred small messages a second rather than ten thousand
 * (or, at CKPT_SCAN positions each, several per second per subscription
 * under a fast writer). A checkpoint tells a subscriber where to resume;
 * one every 100 s (10 000 open) bounds what a resume rescans to what the
 * log took in that time. The default was 1 000: a thousand sends a second
 * cost writers on two cores about 5 % of their rate (bench_conns --pairs
 * --soak-unread, 2026-12-07: medians 0.95 at 1 000, 1.00 at 100). A pump
 * scans at most SCAN_MAX positions before it sends something, so a filter
 * that selects nothing never holds a CQ thread for long.
 */
#include "srv_int.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define SCAN_MAX (16u << 10)    /* positions one read looks at */
#define CATCHUP_LAG 4096u       /* positions behind the head: catching up */
#define CATCHUP_CROWD 8u        /* queued for the catch-up thread: a crowd */
#define CATCHUP_MSG_BYTES (16u << 10) /* its messages to a crowd, about */
#define FANOUT_NICE 5           /* the fan-out threads' nice value */
#define CATCHUP_NICE 19         /* the catch-up thread's, if SCHED_IDLE is refused */
#define CKPT_SCAN 10000u        /* positions between checkpoints, at most */
#define CKPT_MS 1000            /* and at most this long while the log moves */
#define CKPT_ROUND_MS 100       /* checkpoints alone go out in rounds this far apart */

/* ---- the parked list (under fan.mu) ---- */

/* A selection's parked subscriptions on one fan-out, in the order they
 * parked (about the order their checkpoints are due). Every one's cursor
 * is at least `brought`, applied when it leaves the list. */
struct sel_park {
    struct srv_call *head;      /* through sub.prev/next */
    struct srv_call *tail;
    size_t n;
    uint64_t brought;
    struct srv_sel *prev_active; /* the fan-out's active selections */
    struct srv_sel *next_active;
};

/* One distinct selection (a stream, or a filter over all streams) shared by
 * every subscription that makes it: the wave index answers once per
 * selection, and a wave that selects nothing for it touches only those of
 * its subscriptions whose checkpoint is due. Owned copies; park has one
 * entry per fan-out. */
struct srv_sel {
    int refs;
    bool all;
    char *stream;
    char **prefixes;
    size_t n_prefixes;
    char **types;
    size_t n_types;
    struct sel_park *park;
};

static unsigned fan_index(const struct srv_fanout *f)
{
    return (unsigned)(f - f->srv->fans);
}

static void park_link(struct srv_fanout *f, struct srv_call *c)
{
    struct srv_sel *x = c->sub.sel;
    c->sub.parked = true;
    f->n_parked++;
    if (!x) {
        c->sub.prev = NULL;
        c->sub.next = f->parked;
        if (f->parked) {
            f->parked->sub.prev = c;
        }
        f->parked = c;
        return;
    }
    struct sel_park *b = &x->park[fan_index(f)];
    c->sub.next = NULL;
    c->sub.prev = b->tail;
    if (b->tail) {
        b->tail->sub.next = c;
    } else {
        b->head = c;
    }
    b->tail = c;
    if (b->n++ == 0) {
        /* the selection's first one parked here: it becomes active */
        b->prev_active = NULL;
        b->next_active = f->active;
        if (f->active) {
            f->active->park[fan_index(f)].prev_active = x;
        }
        f->active = x;
    }
}

static void park_unlink(struct srv_fanout *f, struct srv_call *c)
{
    struct srv_sel *x = c->sub.sel;
    c->sub.parked = false;
    f->n_parked--;
    if (!x) {
        if (c->sub.prev) {
            c->sub.prev->sub.next = c->sub.next;
        } else {
            f->parked = c->sub.next;
        }
        if (c->sub.next) {
            c->sub.next->sub.prev = c->sub.prev;
        }
        c->sub.prev = c->sub.next = NULL;
        return;
    }
    unsigned fi = fan_index(f);
    struct sel_park *b = &x->park[fi];
    if (c->sub.prev) {
        c->sub.prev->sub.next = c->sub.next;
    } else {
        b->head = c->sub.next;
    }
    if (c->sub.next) {
        c->sub.next->sub.prev = c->sub.prev;
    } else {
        b->tail = c->sub.prev;
    }
    c->sub.prev = c->sub.next = NULL;
    if (c->sub.scanned < b->brought) {
        c->sub.scanned = b->brought; /* the waves it slept through selected nothing */
    }
    if (--b->n == 0) {
        if (b->prev_active) {
            b->prev_active->park[fi].next_active = b->next_active;
        } else {
            f->active = b->next_active;
        }
        if (b->next_active) {
            b->next_active->park[fi].prev_active = b->prev_active;
        }
        b->prev_active = b->next_active = NULL;
        b->brought = 0;
    }
}

static void sub_end(struct srv_call *c, int code, const char *detail)
{
    if (c->sub.counted) {
        c->sub.counted = false;
        atomic_fetch_sub(&c->srv->sub_active, 1);
    }
    srv_reply_code(c, code, detail);
}

/* ---- messages ---- */

/* Appends a varint field (wire type 0) to b. */
static int put_varint_field(struct srv_batch *b, uint8_t tag, uint64_t v)
{
    if (b->len + 11 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint8_t *p = realloc(b->buf, cap);
        if (!p) {
            return AN_ENOMEM;
        }
        b->buf = p;
        b->cap = cap;
    }
    b->buf[b->len++] = tag;
    b->len += pb_varint(b->buf + b->len, v);
    return 0;
}

/* Sends a whole message (the reference is ours). 0, or -1 when the send
 * could not start. */
static int sub_send_slice(struct srv_call *c, grpc_slice sl)
{
    c->sub.ckpt_sent = c->sub.scanned;
    c->sub.ckpt_at = gpr_now(GPR_CLOCK_MONOTONIC);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return srv_send(c, bb);
}

/* Sends b's events (maybe none) with caught_up and the checkpoint; frees
 * b's buffer. With `keep`, the message is kept there too, as covering
 * positions from..scanned. 0, or -1 when the send could not start. */
static int sub_send(struct srv_call *c, struct srv_batch *b, bool caught_up,
                    struct srv_wave_msg *keep, uint64_t from)
{
    struct srv_sub *sb = &c->sub;
    int rc = 0;
    if (caught_up) {
        rc = put_varint_field(b, 0x10, 1);        /* caught_up = 2 */
    }
    if (!rc && sb->scanned) {
        rc = put_varint_field(b, 0x18, sb->scanned); /* checkpoint = 3 */
    }
    if (rc) {
        free(b->buf);
        return -1;
    }
    grpc_slice sl = b->len ? grpc_slice_from_copied_buffer((const char *)b->buf, b->len)
                           : grpc_empty_slice();
    free(b->buf);
    if (keep) {
        if (keep->valid) {
            grpc_slice_unref(keep->msg);
        }
        *keep = (struct srv_wave_msg){.valid = true, .from = from, .to = sb->scanned,
                                      .msg = grpc_slice_ref(sl)};
    }
    return sub_send_slice(c, sl);
}

/* The least time, in ms, between two checkpoints alone to one
 * subscription: the open ones share --checkpoint-rate a second. */
static int64_t ckpt_spacing(const struct srv *s)
{
    uint64_t n = atomic_load_explicit(&s->sub_active, memory_order_relaxed);
    return (int64_t)(n * 1000 / s->cfg.checkpoint_rate);
}

/* Whether a checkpoint alone is due: the subscriber has been brought
 * further than it was told, by many positions or a while ago, and its
 * last message is at least `spacing` ms old. */
static bool ckpt_due_at(const struct srv_sub *sb, gpr_timespec now, int64_t spacing)
{
    if (sb->scanned <= sb->ckpt_sent) {
        return false;
    }
    gpr_timespec age = gpr_time_sub(now, sb->ckpt_at);
    if (spacing > 0 && gpr_time_cmp(age, gpr_time_from_millis(spacing, GPR_TIMESPAN)) < 0) {
        return false;
    }
    if (sb->scanned - sb->ckpt_sent >= CKPT_SCAN) {
        return true;
    }
    return gpr_time_cmp(age, gpr_time_from_millis(CKPT_MS, GPR_TIMESPAN)) >= 0;
}

/* The same, for c; a subscription still reading history (behind the head
 * after its read) is not spaced out: it is sent at most one checkpoint
 * alone per read of SCAN_MAX positions, and it is the one place where
 * the position rule saves a restart much rescanning. */
static bool ckpt_due(const struct srv_call *c, bool behind)
{
    return ckpt_due_at(&c->sub, gpr_now(GPR_CLOCK_MONOTONIC), behind ? 0 : ckpt_spacing(c->srv));
}

/* ---- reading ---- */

/* Reads the subscription's next batch with rd into b; advances the cursor.
 * Returns 0 or an AN_E* code (detail filled). */
static int sub_read(struct srv_call *c, log_reader *rd, struct srv_batch *b, char *detail)
{
    struct srv_sub *sb = &c->sub;
    int rc = log_reader_begin(rd);
    if (rc) {
        snprintf(detail, LOG_DETAIL_MAX, "cannot open a read snapshot");
        return rc;
    }
    uint64_t head = log_reader_head(rd);
    if (sb->all) {
        struct log_all_read q = {
            .from_position = sb->scanned + 1,
            .max_scan = SCAN_MAX,
            .filter = &sb->filter,
            .as_of = head,
        };
        uint64_t next = 0;
        rc = log_read_all(rd, &q, srv_batch_add, b, &next, NULL);
        if (!rc && next > sb->scanned + 1) {
            sb->scanned = next - 1;
        }
    } else {
        struct log_stream_read q = {
            .stream = sb->stream,
            .from_version = sb->next_version,
            .as_of = head,
        };
        uint64_t next = sb->next_version;
        bool done = true;
        rc = log_read_stream(rd, &q, srv_batch_add, b, &next, &done);
        if (rc == AN_ENOTFOUND) {
            rc = 0; /* not written yet, or nothing visible: wait for it */
        }
        if (!rc) {
            if (b->n) {
                sb->next_version = next;
            }
            /* everything up to the head, or up to the last event sent */
            sb->scanned = done ? head : b->last_position;
        }
    }
    if (rc) {
        snprintf(detail, LOG_DETAIL_MAX, "%s", log_reader_detail(rd));
    }
    log_reader_end(rd);
    return rc;
}

/* ---- moving a subscription on ---- */

/* Puts c on the fan-out's list unless the head has passed its cursor (or
 * the call is over, or the server stopping). true: parked, no longer ours. */
static bool sub_park(struct srv_call *c)
{
    struct srv_fanout *f = &c->srv->fans[c->q->index];
    pthread_mutex_lock(&f->mu);
    bool park = !f->stop && !atomic_load(&c->closed) && log_head(c->srv->log) <= c->sub.scanned;
    if (park) {
        park_link(f, c);
    }
    pthread_mutex_unlock(&f->mu);
    return park;
}

/* Moves c on with reader rd: sends its next message, parks it or ends it.
 * The calling thread has c (it is neither parked nor in flight). `wave`
 * (fan-out threads only) is the thread's last live message. */
static void sub_pump(struct srv_call *c, log_reader *rd, struct srv_wave_msg *wave,
                     size_t max_bytes)
{
    struct srv_sub *sb = &c->sub;
    char detail[LOG_DETAIL_MAX];
    bool plain = wave && sb->all && !sb->filter.n_stream_prefixes && !sb->filter.n_event_types;
    for (;;) {
        if (atomic_load(&c->closed)) {
            sub_end(c, AN_ECANCELLED, "the client went away");
            return;
        }
        if (atomic_load(&c->srv->shutting_down)) {
            sub_end(c, AN_EUNAVAIL, "the server is shutting down");
            return;
        }
        struct srv_batch b = {.want = UINT64_MAX, .max_bytes = max_bytes};
        if (sb->scanned >= log_head(c->srv->log)) {
            bool first = !sb->caught_up_sent;
            if (first || ckpt_due(c, false)) {
                sb->caught_up_sent = true;
                if (sub_send(c, &b, first, NULL, 0)) {
                    sub_end(c, AN_EINTERNAL, "send failed");
                }
                return;
            }
            if (sub_park(c)) {
                return;
            }
            continue;
        }
        if (plain && wave->valid && wave->from == sb->scanned + 1) {
            /* the same message another subscriber at this cursor got */
            sb->scanned = wave->to;
            if (sub_send_slice(c, grpc_slice_ref(wave->msg))) {
                sub_end(c, AN_EINTERNAL, "send failed");
            }
            return;
        }
        uint64_t from = sb->scanned + 1;
        int rc = sub_read(c, rd, &b, detail);
        if (rc) {
            free(b.buf);
            say_error("sub", "msg=\"read failed\" err=%s detail=\"%s\"", an_errname(rc), detail);
            sub_end(c, rc, detail);
            return;
        }
        if (b.n || ckpt_due(c, sb->scanned < log_head(c->srv->log))) {
            if (sub_send(c, &b, false, plain && b.n ? wave : NULL, from)) {
                sub_end(c, AN_EINTERNAL, "send failed");
            }
            return;
        }
        free(b.buf);
    }
}

/* ---- the catch-up thread ---- */

/* Hands c to the catch-up thread. false: it is stopping (pump c here). */
static bool catchup_put(struct srv *s, struct srv_call *c)
{
    struct srv_catchup *u = &s->catchup;
    pthread_mutex_lock(&u->mu);
    bool ok = u->running && !u->stop;
    if (ok) {
        c->sub.next = NULL;
        if (u->tail) {
            u->tail->sub.next = c;
        } else {
            u->head = c;
        }
        u->tail = c;
        u->n++;
        pthread_cond_signal(&u->cond);
    }
    pthread_mutex_unlock(&u->mu);
    return ok;
}

/* The next message of c, from a CQ thread that has it: pumped here, or by
 * the catch-up thread while c replays history far behind the head. A
 * subscriber that caught up once and fell behind stays here: under a
 * full load the catch-up thread gets nothing, and with 1000 live
 * subscribers behind 64 writers at full rate their delivery p99 was 8.5 s
 * that way against 3.9 s here (bench_sub, one run each). */
static void sub_next(struct srv_call *c)
{
    struct srv_sub *sb = &c->sub;
    uint64_t head = log_head(c->srv->log);
    if (head > sb->scanned + CATCHUP_LAG && !sb->caught_up_sent && !atomic_load(&c->closed) &&
        catchup_put(c->srv, c)) {
        return;
    }
    sub_pump(c, c->q->rd, NULL, 0);
}

/* Lowers the calling thread's priority (Linux: nice is per thread). */
static void nice_self(const char *what, int nice)
{
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), nice) != 0) {
        say_warn("sub", "msg=\"cannot lower a thread's priority\" thread=%s nice=%d err=\"%s\"",
                 what, nice, strerror(errno));
    }
}

/* Pumps the subscriptions behind, one message each in turn (each comes
 * back through sub_next when its send completes). It runs under
 * SCHED_IDLE: any other thread that wakes takes the core from it at once,
 * so the replay gets what the appends leave (the sends' copies into the
 * sockets are most of its cost, and they happen on the thread that starts
 * the send). nice 19 was not enough: on 1000 stalled subscribers the
 * writers kept 0.74-0.89x of their rate, and 0.97-1.04x under SCHED_IDLE
 * (bench_conns --idle 1000 --stalled 1000, two runs each, interleaved).
 *
 * SCHED_IDLE yields the core only where the kernel lets it: this kernel
 * is PREEMPT_NONE, so a thread that wakes waits until the send it
 * interrupts is out of the kernel (its copy of up to 64 KiB, 17 % of all
 * CPU samples in that phase). With a crowd queued (stalled subscribers
 * filling their windows) the messages are 16 KiB: behind 1000 stalled
 * subscribers the writers kept 0.83-0.91x of their unloaded rate, against
 * 0.72-0.84x with 64 KiB (bench_conns --idle 1000 --stalled 1000, five
 * pairs, interleaved). A lone subscriber replaying keeps 64 KiB messages:
 * with 16 KiB it caught up at half the rate (0.74-1.0 M against 1.6-2.3 M
 * events/s). */
static void *catchup_main(void *arg)
{
    struct srv *s = arg;
    struct srv_catchup *u = &s->catchup;
    pthread_setname_np(pthread_self(), "an-catchup");
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0) {
        nice_self("an-catchup", CATCHUP_NICE);
    }
    pthread_mutex_lock(&u->mu);
    for (;;) {
        while (!u->stop && !u->head) {
            pthread_cond_wait(&u->cond, &u->mu);
        }
        if (u->stop) {
            break;
        }
        struct srv_call *c = u->head;
        u->head = c->sub.next;
        if (!u->head) {
            u->tail = NULL;
        }
        u->n--;
        size_t crowd = u->n;
        c->sub.next = NULL;
        pthread_mutex_unlock(&u->mu);
        sub_pump(c, u->rd, NULL, crowd >= CATCHUP_CROWD ? CATCHUP_MSG_BYTES : 0);
        pthread_mutex_lock(&u->mu);
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

size_t srv_sub_catching_up(const struct srv *s)
{
    return atomic_load(&s->catchup.n);
}

/* ---- the fan-out thread ---- */

static int64_t fan_next_due_ms(struct srv_fanout *f);

static void wave_forget(struct srv_wave_msg *w)
{
    if (w->valid) {
        grpc_slice_unref(w->msg);
        w->valid = false;
    }
}

/* ---- selections, interned ---- */


static bool strs_eq(char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i], b[i]) != 0) return false;
    }
    return true;
}

static bool sel_is(const struct srv_sel *x, const struct srv_sub *sb)
{
    if (x->all != sb->all) return false;
    if (!x->all) return strcmp(x->stream, sb->stream) == 0;
    return strs_eq(x->prefixes, x->n_prefixes, sb->filter.stream_prefixes,
                   sb->filter.n_stream_prefixes) &&
           strs_eq(x->types, x->n_types, sb->filter.event_types, sb->filter.n_event_types);
}

static void sel_free(struct srv_sel *x)
{
    for (size_t i = 0; i < x->n_prefixes; i++) free(x->prefixes[i]);
    for (size_t i = 0; i < x->n_types; i++) free(x->types[i]);
    free(x->prefixes);
    free(x->types);
    free(x->stream);
    free(x->park);
    free(x);
}

static char **strs_dup(const char *const *v, size_t n, bool *ok)
{
    char **r = n ? calloc(n, sizeof(*r)) : NULL;
    if (n && !r) {
        *ok = false;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        r[i] = strdup(v[i]);
        *ok = *ok && r[i];
    }
    return r;
}

/* The interned selection of sb, with a reference; NULL when out of memory
 * (the subscription then goes without: it is woken by every wave). */
static struct srv_sel *sel_get(struct srv *s, const struct srv_sub *sb)
{
    pthread_mutex_lock(&s->sel_mu);
    for (size_t i = 0; i < s->n_sels; i++) {
        if (sel_is(s->sels[i], sb)) {
            s->sels[i]->refs++;
            pthread_mutex_unlock(&s->sel_mu);
            return s->sels[i];
        }
    }
    struct srv_sel *x = calloc(1, sizeof(*x));
    bool ok = x != NULL;
    if (ok) {
        x->refs = 1;
        x->all = sb->all;
        x->park = calloc(s->n_cqs, sizeof(*x->park));
        ok = x->park != NULL;
        if (!sb->all) {
            x->stream = strdup(sb->stream);
            ok = ok && x->stream != NULL;
        } else {
            x->n_prefixes = sb->filter.n_stream_prefixes;
            x->prefixes = strs_dup(sb->filter.stream_prefixes, x->n_prefixes, &ok);
            x->n_types = sb->filter.n_event_types;
            x->types = strs_dup(sb->filter.event_types, x->n_types, &ok);
        }
    }
    if (ok && s->n_sels == s->cap_sels) {
        size_t nc = s->cap_sels ? s->cap_sels * 2 : 16;
        struct srv_sel **p = realloc(s->sels, nc * sizeof(*p));
        ok = p != NULL;
        if (ok) {
            s->sels = p;
            s->cap_sels = nc;
        }
    }
    if (!ok) {
        if (x) sel_free(x);
        pthread_mutex_unlock(&s->sel_mu);
        return NULL;
    }
    s->sels[s->n_sels++] = x;
    pthread_mutex_unlock(&s->sel_mu);
    return x;
}

void srv_sub_release(struct srv_call *c)
{
    struct srv_sel *x = c->sub.sel;
    if (!x) return;
    struct srv *s = c->srv;
    c->sub.sel = NULL;
    pthread_mutex_lock(&s->sel_mu);
    if (--x->refs == 0) {
        for (size_t i = 0; i < s->n_sels; i++) {
            if (s->sels[i] == x) {
                s->sels[i] = s->sels[--s->n_sels];
                break;
            }
        }
        sel_free(x);
    }
    pthread_mutex_unlock(&s->sel_mu);
}

/* ---- the wave's index ---- */

/*
 * The streams and types of the positions a wave brings, read once by the
 * fan-out thread before it looks at its parked subscriptions. A parked
 * subscription that none of them concerns (its filter or stream selects
 * none) moves its cursor to the wave's end and stays parked: no read, no
 * send, no trip through sub_pump. Only those with something to deliver, or
 * a checkpoint due, are woken. The answer is computed once per distinct
 * selection in the wave (WAVE_CACHE of them), so ten thousand subscriptions
 * with one filter cost one pass over the wave and a comparison each.
 */
#define WAVE_INDEX_MAX 4096u    /* positions a wave may bring to be indexed */
#define WAVE_CACHE 64u

struct wave_ev {
    uint64_t pos;
    uint32_t s_off, s_len;      /* stream, in buf */
    uint32_t t_off, t_len;      /* type, in buf */
};

struct wave_idx {
    bool valid;
    uint64_t from;              /* the positions from..to */
    uint64_t to;
    struct wave_ev *ev;
    size_t n, cap;
    char *buf;
    size_t len, bcap;
    struct {
        const struct srv_sel *sel;
        uint64_t last;          /* the last position it selects in the wave (0: none) */
    } cache[WAVE_CACHE];
    unsigned n_cache;
};

static bool idx_add(void *arg, const struct log_event *e)
{
    struct wave_idx *x = arg;
    if (x->n == x->cap) {
        size_t nc = x->cap ? x->cap * 2 : 256;
        struct wave_ev *p = realloc(x->ev, nc * sizeof(*p));
        if (!p) return false;
        x->ev = p;
        x->cap = nc;
    }
    size_t need = x->len + e->stream_len + e->type_len;
    if (need > x->bcap) {
        size_t nc = x->bcap ? x->bcap : 16384;
        while (nc < need) nc *= 2;
        char *p = realloc(x->buf, nc);
        if (!p) return false;
        x->buf = p;
        x->bcap = nc;
    }
    struct wave_ev *w = &x->ev[x->n++];
    w->pos = e->position;
    w->s_off = (uint32_t)x->len;
    w->s_len = (uint32_t)e->stream_len;
    memcpy(x->buf + x->len, e->stream, e->stream_len);
    x->len += e->stream_len;
    w->t_off = (uint32_t)x->len;
    w->t_len = (uint32_t)e->type_len;
    memcpy(x->buf + x->len, e->type, e->type_len);
    x->len += e->type_len;
    return true;
}

/* Reads positions from..to into x, but those up to `clean` (the gate found
 * that they select nothing for anyone parked: srv_sub_notify); x->valid
 * only if it got all it read. */
static void idx_build(struct wave_idx *x, log_reader *rd, uint64_t from, uint64_t clean,
                      uint64_t to)
{
    x->valid = false;
    x->n = x->len = 0;
    x->n_cache = 0;
    x->from = from;
    x->to = to;
    uint64_t start = clean >= from ? clean + 1 : from;
    if (to < from) {
        return;
    }
    if (start > to) {
        x->valid = true; /* all of it clean: a wave that selects nothing */
        return;
    }
    if (to - start + 1 > WAVE_INDEX_MAX || log_reader_begin(rd)) {
        return;
    }
    struct log_all_read q = {.from_position = start, .as_of = to};
    uint64_t next = 0;
    int rc = log_read_all(rd, &q, idx_add, x, &next, NULL);
    x->valid = rc == 0 && next == to + 1 && x->n == to - start + 1;
    log_reader_end(rd);
}

/* Whether a selection selects e: one stream (stream, slen long), or
 * every stream through filter f. The wave index and the gate ask this. */
static bool selects(bool all, const char *stream, size_t slen, const struct log_filter *f,
                    const struct log_event *e)
{
    if (all) {
        return log_filter_match(f, e);
    }
    return e->stream_len == slen && memcmp(e->stream, stream, slen) == 0;
}

/* The last position of the wave that sb selects (0: none). */
static uint64_t idx_last(struct wave_idx *x, const struct srv_sub *sb)
{
    for (unsigned i = 0; sb->sel && i < x->n_cache; i++) {
        if (x->cache[i].sel == sb->sel) return x->cache[i].last;
    }
    uint64_t last = 0;
    size_t slen = sb->all ? 0 : strlen(sb->stream);
    for (size_t i = 0; i < x->n; i++) {
        const struct wave_ev *w = &x->ev[i];
        struct log_event e = {.stream = x->buf + w->s_off, .stream_len = w->s_len,
                              .type = x->buf + w->t_off, .type_len = w->t_len};
        if (selects(sb->all, sb->stream, slen, &sb->filter, &e)) last = w->pos;
    }
    if (sb->sel && x->n_cache < WAVE_CACHE) {
        x->cache[x->n_cache].sel = sb->sel;
        x->cache[x->n_cache].last = last;
        x->n_cache++;
    }
    return last;
}

/* ---- the fan-out thread ---- */

static void *fanout_main(void *arg)
{
    struct srv_fanout *f = arg;
    pthread_setname_np(pthread_self(), "an-fanout");
    nice_self("an-fanout", FANOUT_NICE);
    struct wave_idx idx = {0};
    gpr_timespec last_wave = gpr_now(GPR_CLOCK_MONOTONIC);
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!f->stop) {
            bool moved = f->published > f->seen;
            if (moved &&
                (f->clean_upto < f->published || f->published - f->seen >= CKPT_SCAN)) {
                break; /* something to look at, or a checkpoint by positions */
            }
            if (moved && f->active) {
                /* nothing selected since the last wave (the gate let it
                 * be): sleep until the next checkpoint is due, unless a
                 * wave that selects something comes first */
                int64_t ms = fan_next_due_ms(f);
                /* checkpoints come due one subscription after another:
                 * they are sent in rounds, CKPT_ROUND_MS apart */
                int64_t round = CKPT_ROUND_MS - (int64_t)gpr_time_to_millis(gpr_time_sub(
                                                    gpr_now(GPR_CLOCK_MONOTONIC), last_wave));
                if (ms < round) {
                    ms = round;
                }
                if (ms <= 0) {
                    break;
                }
                gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                                  gpr_time_from_millis(ms, GPR_TIMESPAN));
                struct timespec ts = {until.tv_sec, until.tv_nsec};
                pthread_cond_timedwait(&f->cond, &f->mu, &ts);
                continue;
            }
            pthread_cond_wait(&f->cond, &f->mu);
        }
        if (f->stop) {
            break;
        }
        uint64_t upto = f->published;
        uint64_t from = f->seen + 1;
        uint64_t clean = f->clean_upto;
        bool any = f->parked != NULL || f->active != NULL;
        pthread_mutex_unlock(&f->mu);
        /* what the wave brings, read outside the lock */
        if (any) {
            idx_build(&idx, f->rd, from, clean, upto);
        } else {
            idx.valid = false;
        }
        gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
        last_wave = now;
        int64_t spacing = ckpt_spacing(f->srv);
        pthread_mutex_lock(&f->mu);
        /* take every parked subscription the wave concerns */
        struct srv_call *take = NULL;
        for (struct srv_call *c = f->parked, *n; c; c = n) {
            n = c->sub.next;
            struct srv_sub *sb = &c->sub;
            if (sb->scanned >= upto) {
                continue;
            }
            if (idx.valid && sb->scanned + 1 >= idx.from && idx_last(&idx, sb) <= sb->scanned) {
                /* nothing for it: it has been brought to the wave's end */
                sb->scanned = upto;
                if (!ckpt_due_at(sb, now, spacing)) {
                    continue;
                }
            }
            park_unlink(f, c);
            c->sub.next = take;
            take = c;
        }
        unsigned fi = fan_index(f);
        for (struct srv_sel *x = f->active, *nx; x; x = nx) {
            struct sel_park *b = &x->park[fi];
            nx = b->next_active;
            if (idx.valid && idx_last(&idx, &b->head->sub) == 0) {
                /* the wave selects nothing for this selection: every one
                 * parked here is brought to its end at once; only those
                 * whose checkpoint is due (the oldest first) are woken */
                b->brought = upto;
                while (b->n) {
                    struct srv_call *c = b->head;
                    if (c->sub.scanned < upto) {
                        c->sub.scanned = upto;
                    }
                    if (!ckpt_due_at(&c->sub, now, spacing)) {
                        break;
                    }
                    park_unlink(f, c); /* may deactivate x: nx was taken first */
                    c->sub.next = take;
                    take = c;
                }
                continue;
            }
            for (struct srv_call *c = b->head, *n; c; c = n) {
                n = c->sub.next;
                struct srv_sub *sb = &c->sub;
                if (sb->scanned < b->brought) {
                    sb->scanned = b->brought;
                }
                if (sb->scanned >= upto) {
                    continue;
                }
                if (idx.valid && sb->scanned + 1 >= idx.from &&
                    idx_last(&idx, sb) <= sb->scanned) {
                    sb->scanned = upto;
                    if (!ckpt_due_at(sb, now, spacing)) {
                        continue;
                    }
                }
                park_unlink(f, c);
                c->sub.next = take;
                take = c;
            }
        }
        if (f->seen < upto) {
            f->seen = upto;
        }
        if (f->clean_upto < upto) {
            f->clean_upto = upto;
        }
        pthread_mutex_unlock(&f->mu);
        while (take) {
            struct srv_call *c = take;
            take = c->sub.next;
            c->sub.next = NULL;
            sub_pump(c, f->rd, &f->wave, 0);
        }
        wave_forget(&f->wave);
        pthread_mutex_lock(&f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    free(idx.ev);
    free(idx.buf);
    return NULL;
}

/* ---- the gate ---- */

/*
 * Whoever publishes a new head (the writer or the syncer, srv_sub_notify)
 * first reads what it brings, usually a few positions, and asks every
 * selection in use whether it selects any of them. When none does, the
 * fan-out threads are not woken: with ten thousand subscriptions whose
 * filter selects nothing, waking two fan-out threads per commit (to find
 * nothing) cost the writers about a fifth of their rate on these 2 cores
 * (bench_conns --pairs: 0.73-0.80x; 0.92x with the fan-out woken at most
 * every 100 ms; with this gate, a median of 0.87x over 20 pairs against
 * 0.81x over 12 for the build before it). The positions it cleared are
 * marked clean on each fan-out (clean_upto), so a later wave need not read
 * them; a fan-out with subscriptions parked sleeps until the oldest one's
 * checkpoint is due, or CKPT_SCAN positions have passed, instead.
 *
 * Why a selection made after the gate looked cannot miss anything: the
 * head is raised before srv_sub_notify runs, a subscription's selection is
 * interned before it reads, and it parks only at or past the head
 * (sub_park). So one parked behind h had its selection before the gate
 * looked. Subscriptions without an interned selection (f->parked) are not
 * covered: a fan-out with any of them is woken for every wave, and its
 * positions are not marked clean.
 */
#define GATE_SELS_MAX 64u       /* distinct selections the gate will ask */

static bool sel_selects(const struct srv_sel *x, const struct log_event *e)
{
    struct log_filter lf = {.stream_prefixes = (const char *const *)x->prefixes,
                            .n_stream_prefixes = x->n_prefixes,
                            .event_types = (const char *const *)x->types,
                            .n_event_types = x->n_types};
    return selects(x->all, x->stream, x->all ? 0 : strlen(x->stream), &lf, e);
}

struct gate {
    struct srv *s;
    uint64_t n;
    bool hit;
};

static bool gate_add(void *arg, const struct log_event *e)
{
    struct gate *g = arg;
    g->n++;
    for (size_t i = 0; i < g->s->n_sels && !g->hit; i++) {
        g->hit = sel_selects(g->s->sels[i], e);
    }
    return !g->hit;
}

/* Whether positions from..to select nothing for any selection in use.
 * Under notify_mu. */
static bool gate_quiet(struct srv *s, uint64_t from, uint64_t to)
{
    if (to < from) {
        return true;
    }
    if (!s->gate_rd || to - from + 1 > WAVE_INDEX_MAX) {
        return false;
    }
    pthread_mutex_lock(&s->sel_mu);
    bool quiet = false;
    if (s->n_sels <= GATE_SELS_MAX && !log_reader_begin(s->gate_rd)) {
        struct gate g = {.s = s};
        struct log_all_read q = {.from_position = from, .as_of = to};
        uint64_t next = 0;
        int rc = log_read_all(s->gate_rd, &q, gate_add, &g, &next, NULL);
        quiet = rc == 0 && !g.hit && g.n == to - from + 1;
        log_reader_end(s->gate_rd);
    }
    pthread_mutex_unlock(&s->sel_mu);
    return quiet;
}

/* Milliseconds until the first checkpoint due among the subscriptions
 * parked on f (<= 0: now). Under f->mu. */
static int64_t fan_next_due_ms(struct srv_fanout *f)
{
    int64_t per = ckpt_spacing(f->srv);
    if (per < CKPT_MS) {
        per = CKPT_MS;
    }
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    int64_t best = per;
    unsigned fi = fan_index(f);
    for (struct srv_sel *x = f->active; x; x = x->park[fi].next_active) {
        const struct srv_call *c = x->park[fi].head;
        if (!c) {
            continue;
        }
        gpr_timespec age = gpr_time_sub(now, c->sub.ckpt_at);
        int64_t left = per - (int64_t)gpr_time_to_millis(age);
        if (left < best) {
            best = left;
        }
    }
    return best;
}

void srv_sub_notify(struct srv *s)
{
    uint64_t h = log_head(s->log);
    if (h <= atomic_load_explicit(&s->sub_hint, memory_order_relaxed)) {
        return;
    }
    pthread_mutex_lock(&s->notify_mu);
    uint64_t prev = atomic_load_explicit(&s->sub_hint, memory_order_relaxed);
    if (h <= prev) {
        pthread_mutex_unlock(&s->notify_mu);
        return;
    }
    atomic_store_explicit(&s->sub_hint, h, memory_order_relaxed);
    bool quiet = atomic_load(&s->sub_active) > 0 && gate_quiet(s, prev + 1, h);
    for (unsigned i = 0; i < s->n_cqs; i++) {
        struct srv_fanout *f = &s->fans[i];
        pthread_mutex_lock(&f->mu);
        if (h > f->published) {
            f->published = h;
            /* a thread with nobody parked would wake for nothing: a
             * context switch per commit on these cores. A subscription
             * that parks later compares its cursor with the head under
             * this lock, so it parks at or past h. */
            if (!f->parked && !f->active) {
                f->seen = h; /* the next wave starts after it */
                f->clean_upto = h;
            } else if (f->parked || !quiet) {
                pthread_cond_signal(&f->cond);
            } else {
                if (f->clean_upto >= prev) {
                    f->clean_upto = h;
                }
                /* not woken for what it need not look at; but one that had
                 * nothing pending waits without a timeout (fanout_main):
                 * it is woken once, to time its next checkpoints */
                if (f->seen >= prev || h - f->seen >= CKPT_SCAN) {
                    pthread_cond_signal(&f->cond);
                }
            }
        }
        pthread_mutex_unlock(&f->mu);
    }
    pthread_mutex_unlock(&s->notify_mu);
}

int srv_sub_start(struct srv *s)
{
    struct srv_catchup *u = &s->catchup;
    pthread_mutex_init(&s->sel_mu, NULL);
    pthread_mutex_init(&s->notify_mu, NULL);
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cond, NULL);
    s->fans = calloc(s->n_cqs, sizeof(*s->fans));
    if (!s->fans) {
        return AN_ENOMEM;
    }
    int crc = log_reader_open(s->log, &u->rd);
    if (!crc) {
        crc = log_reader_open(s->log, &s->gate_rd);
    }
    if (!crc && pthread_create(&u->thread, NULL, catchup_main, s)) {
        crc = AN_EINTERNAL;
    }
    if (crc) {
        return crc;
    }
    u->running = true;
    uint64_t head = log_head(s->log);
    atomic_store(&s->sub_hint, head);
    for (unsigned i = 0; i < s->n_cqs; i++) {
        struct srv_fanout *f = &s->fans[i];
        f->srv = s;
        pthread_mutex_init(&f->mu, NULL);
        pthread_cond_init(&f->cond, NULL);
        f->published = head;
        f->seen = head;
        f->clean_upto = head;
        int rc = log_reader_open(s->log, &f->rd);
        if (!rc && pthread_create(&f->thread, NULL, fanout_main, f)) {
            rc = AN_EINTERNAL;
        }
        if (rc) {
            srv_sub_stop(s);
            return rc;
        }
        f->running = true;
    }
    return 0;
}

void srv_sub_stop(struct srv *s)
{
    struct srv_catchup *u = &s->catchup;
    if (u->running) {
        pthread_mutex_lock(&u->mu);
        u->stop = true;
        pthread_cond_signal(&u->cond);
        pthread_mutex_unlock(&u->mu);
        pthread_join(u->thread, NULL);
        pthread_mutex_lock(&u->mu);
        u->running = false;
        struct srv_call *take = u->head;
        u->head = u->tail = NULL;
        u->n = 0;
        pthread_mutex_unlock(&u->mu);
        while (take) {
            struct srv_call *c = take;
            take = c->sub.next;
            c->sub.next = NULL;
            sub_end(c, AN_EUNAVAIL, "the server is shutting down");
        }
    }
    for (unsigned i = 0; s->fans && i < s->n_cqs; i++) {
        struct srv_fanout *f = &s->fans[i];
        if (!f->running) {
            continue;
        }
        pthread_mutex_lock(&f->mu);
        f->stop = true;
        struct srv_call *take = NULL;
        while (f->parked) {
            struct srv_call *c = f->parked;
            park_unlink(f, c);
            c->sub.next = take;
            take = c;
        }
        while (f->active) {
            struct srv_call *c = f->active->park[i].head;
            park_unlink(f, c);
            c->sub.next = take;
            take = c;
        }
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->mu);
        while (take) {
            struct srv_call *c = take;
            take = c->sub.next;
            sub_end(c, AN_EUNAVAIL, "the server is shutting down");
        }
        pthread_join(f->thread, NULL);
        f->running = false;
    }
}

void srv_sub_free(struct srv *s)
{
    if (s->fans) {
        /* started: the catch-up thread's parts exist */
        log_reader_close(s->catchup.rd);
        s->catchup.rd = NULL;
        log_reader_close(s->gate_rd);
        s->gate_rd = NULL;
        pthread_mutex_destroy(&s->catchup.mu);
        pthread_cond_destroy(&s->catchup.cond);
    }
    for (unsigned i = 0; s->fans && i < s->n_cqs; i++) {
        struct srv_fanout *f = &s->fans[i];
        log_reader_close(f->rd);
        wave_forget(&f->wave);
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->cond);
    }
    free(s->fans);
    s->fans = NULL;
    for (size_t i = 0; i < s->n_sels; i++) {
        sel_free(s->sels[i]); /* calls still holding one are gone by now */
    }
    free(s->sels);
    s->sels = NULL;
    s->n_sels = s->cap_sels = 0;
    pthread_mutex_destroy(&s->sel_mu);
    pthread_mutex_destroy(&s->notify_mu);
}

unsigned srv_sub_active(const struct srv *s)
{
    return atomic_load(&s->sub_active);
}

/* ---- the call ---- */

int srv_sub_check(const Annals__V1__SubscribeRequest *r, char *detail)
{
    const char *st = r->stream ? r->stream : "";
    size_t len = strlen(st);
    if (len) {
        if (len > LOG_NAME_MAX || !log_utf8_valid(st, len)) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "stream: want 1..%u bytes of UTF-8, got %zu bytes%s", LOG_NAME_MAX, len,
                     len > LOG_NAME_MAX ? "" : " that are not UTF-8");
            return AN_EINVAL;
        }
        if (r->filter && (r->filter->n_stream_prefixes || r->filter->n_event_types)) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "filter: only for all-streams subscriptions (stream is set)");
            return AN_EINVAL;
        }
        if (r->from_position) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "from_position: only for all-streams subscriptions; use from_version");
            return AN_EINVAL;
        }
    } else if (r->from_version) {
        snprintf(detail, LOG_DETAIL_MAX,
                 "from_version: only with a stream; use from_position for all streams");
        return AN_EINVAL;
    }
    if (r->from_end && (r->from_position || r->from_version)) {
        snprintf(detail, LOG_DETAIL_MAX, "from_end: not with from_position or from_version");
        return AN_EINVAL;
    }
    return 0;
}

void srv_sub_begin(struct srv_call *c)
{
    struct srv *s = c->srv;
    struct srv_sub *sb = &c->sub;
    Annals__V1__SubscribeRequest *r = (Annals__V1__SubscribeRequest *)c->req;
    char detail[LOG_DETAIL_MAX];
    int rc = srv_sub_check(r, detail);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    unsigned max = s->cfg.max_subscriptions;
    if (atomic_fetch_add(&s->sub_active, 1) >= max) {
        atomic_fetch_sub(&s->sub_active, 1);
        snprintf(detail, LOG_DETAIL_MAX,
                 "too many subscriptions: %u open, limit %u (--max-subscriptions)", max, max);
        srv_reply_code(c, AN_EBUSY, detail);
        return;
    }
    sb->counted = true;
    sb->ckpt_at = gpr_now(GPR_CLOCK_MONOTONIC);

    sb->all = !r->stream || !r->stream[0];
    if (sb->all) {
        if (r->filter) {
            sb->filter.stream_prefixes = (const char *const *)r->filter->stream_prefixes;
            sb->filter.n_stream_prefixes = r->filter->n_stream_prefixes;
            sb->filter.event_types = (const char *const *)r->filter->event_types;
            sb->filter.n_event_types = r->filter->n_event_types;
        }
        sb->scanned = r->from_end ? log_head(s->log)
                      : r->from_position ? r->from_position - 1 : 0;
    } else {
        sb->stream = strdup(r->stream);
        if (!sb->stream) {
            sub_end(c, AN_ENOMEM, "out of memory");
            return;
        }
        sb->next_version = r->from_version;
        if (r->from_end) {
            log_reader *rd = c->q->rd;
            struct log_stream_info info;
            if ((rc = log_reader_begin(rd))) {
                sub_end(c, rc, "cannot open a read snapshot");
                return;
            }
            uint64_t head = log_reader_head(rd);
            rc = log_get_stream(rd, sb->stream, head, &info);
            log_reader_end(rd);
            if (rc && rc != AN_ENOTFOUND) {
                sub_end(c, rc, "cannot read the stream's head");
                return;
            }
            sb->next_version = rc ? 0 : (uint64_t)(info.last_version + 1);
            sb->scanned = head;
        }
    }
    sb->sel = sel_get(s, sb);
    say_debug("sub", "msg=\"subscription started\" active=%u", srv_sub_active(s));
    sub_next(c);
}

void srv_sub_on_write(struct srv_call *c, bool ok)
{
    if (!ok) {
        sub_end(c, AN_ECANCELLED, "the client went away");
        return;
    }
    sub_next(c);
}

void srv_sub_on_close(struct srv_call *c)
{
    struct srv_fanout *f = &c->srv->fans[c->q->index];
    pthread_mutex_lock(&f->mu);
    bool parked = c->sub.parked;
    if (parked) {
        park_unlink(f, c);
    }
    pthread_mutex_unlock(&f->mu);
    if (parked) {
        sub_end(c, AN_ECANCELLED, "the client went away");
    }
}

/*
 * srv_writer.c - the writer thread: group commit, the syncer, and the
 * replies to appends and deletions.
 *
 * CQ threads validate a request, wrap it in a srv_wreq and queue it here.
 * The writer takes everything queued (up to max_batch), drops requests
 * whose deadline has passed (DEADLINE_EXCEEDED, nothing written) or whose
 * call is already over, and hands the rest to log_commit in one
 * transaction. A request is answered only once its commit is durable
 * (log.h, "Durability argument"): log_commit syncs the batch's data pages
 * and writes its meta page without a sync. The writer then hands the batch
 * to the syncer thread and goes on with the next one; the syncer's
 * fdatasync (log_sync_through) makes the meta page durable, concurrently
 * with the writer's next commit, and the syncer answers the batch. So a
 * loaded writer's batch waits for its own commit and one flush, not for
 * the next commit as well; when the writer's next data sync gets there
 * first, the syncer has nothing to sync. While the syncer holds a batch,
 * the writer waits for as many requests as that batch had, or for the
 * syncer to finish, before it takes the next: none of it could be
 * answered before that sync anyway, and a batch twice as big costs half
 * the commits (measured: the mean batch went from 3.5 to 7-10 with 64
 * unary clients, from 17 to 27 over AppendStream). A lone request (a
 * batch of one, nothing queued behind it, nothing at the syncer) is
 * committed with log_commit_durable (LMDB's own two syncs) and answered
 * at once. Requests that failed (conflicts, tombstones, ...) wrote nothing
 * but are answered with their batch too: what they report may come from a
 * commit not yet durable.
 *
 * Answering (packing each reply and starting its gRPC batch) costs tens of
 * microseconds per request, which on the writer thread would hold up the
 * next commit; so the writer hands what it answers under load, as one
 * list, to the replier thread, which starts the reply batches
 * (grpc_call_start_batch is thread-safe). The syncer answers its batches
 * itself. No thread here ever waits on a client.
 */
#include "srv_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_wreq_free(struct srv_wreq *w)
{
    if (!w) {
        return;
    }
    if (w->stream_req) {
        annals__v1__append_stream_request__free_unpacked(w->stream_req, NULL);
    }
    if (w->call) {
        srv_call_unref(w->call);
    }
    free(w);
}

int srv_writer_submit(struct srv *s, struct srv_wreq *w)
{
    size_t taken;
    return srv_writer_submit_many(s, &w, 1, &taken);
}

/*
 * All of them under one lock and one signal: queued one by one, the writer
 * (woken by the first, on the other core) took a message's first appends
 * while this thread was still checking the rest, and committed a batched
 * message in pieces.
 */
int srv_writer_submit_many(struct srv *s, struct srv_wreq **ws, size_t n, size_t *taken)
{
    size_t i = 0;
    int rc = 0;
    pthread_mutex_lock(&s->wmu);
    if (s->w_draining) {
        rc = AN_EUNAVAIL;
        goto out;
    }
    for (; i < n; i++) {
        struct srv_wreq *w = ws[i];
        if (s->wq_head && s->wq_bytes + w->bytes > s->cfg.max_queue_bytes) {
            rc = AN_EBUSY;
            break;
        }
        s->wq_bytes += w->bytes;
        w->next = NULL;
        if (s->wq_tail) {
            s->wq_tail->next = w;
        } else {
            s->wq_head = w;
        }
        s->wq_tail = w;
        s->wq_len++;
    }
    if (i) {
        atomic_store_explicit(&s->wq_len_hint, s->wq_len, memory_order_relaxed);
        pthread_cond_signal(&s->wcond);
    }
out:
    pthread_mutex_unlock(&s->wmu);
    *taken = i;
    return rc;
}

/* ---- replies ---- */

void srv_append_response(const struct log_op *op, size_t n_streams,
                         Annals__V1__AppendResponse *out, Annals__V1__StreamResult *sr,
                         Annals__V1__StreamResult **srp)
{
    annals__v1__append_response__init(out);
    out->first_position = op->first_position;
    out->last_position = op->last_position;
    out->recorded_at_unix_nanos = op->recorded_at_ns;
    for (size_t i = 0; i < n_streams; i++) {
        annals__v1__stream_result__init(&sr[i]);
        sr[i].stream = op->append->streams[i]->stream;
        sr[i].first_version = op->streams[i].first_version;
        sr[i].last_version = op->streams[i].last_version;
        srp[i] = &sr[i];
    }
    out->n_streams = n_streams;
    out->streams = srp;
}

void srv_reply_op(struct srv_call *c, const struct srv_wreq *w)
{
    const struct log_op *op = &w->op;
    if (op->rc == AN_ECONFLICT) {
        const char *stream = op->kind == LOG_OP_DELETE
                                 ? op->del->stream
                                 : op->append->streams[op->conflict_stream]->stream;
        char enc[3 * LOG_NAME_MAX + 4]; /* room for every byte escaped */
        char ver[24];
        log_percent_encode(enc, sizeof(enc), stream, strlen(stream));
        snprintf(ver, sizeof(ver), "%lld", (long long)op->actual_version);
        grpc_metadata md[2] = {
            {.key = grpc_slice_from_static_string("annals-stream"),
             .value = grpc_slice_from_copied_string(enc)},
            {.key = grpc_slice_from_static_string("annals-actual-version"),
             .value = grpc_slice_from_copied_string(ver)},
        };
        srv_reply(c, NULL, GRPC_STATUS_ABORTED, op->detail, md, 2);
        grpc_slice_unref(md[0].value);
        grpc_slice_unref(md[1].value);
        return;
    }
    if (op->rc) {
        srv_reply_code(c, op->rc, op->detail);
        return;
    }
    if (op->kind == LOG_OP_DELETE) {
        Annals__V1__DeleteStreamResponse r = ANNALS__V1__DELETE_STREAM_RESPONSE__INIT;
        r.position = op->first_position;
        srv_reply(c, srv_pack(&r.base), GRPC_STATUS_OK, NULL, NULL, 0);
        return;
    }
    size_t n = op->append->n_streams;
    Annals__V1__AppendResponse r;
    Annals__V1__StreamResult *sr = malloc(n * (sizeof(*sr) + sizeof(sr)));
    if (!sr) {
        srv_reply_code(c, AN_ENOMEM, "out of memory building the reply");
        return;
    }
    srv_append_response(op, n, &r, sr, (Annals__V1__StreamResult **)(sr + n));
    srv_reply(c, srv_pack(&r.base), GRPC_STATUS_OK, NULL, NULL, 0);
    free(sr);
}

/* Answers one request and frees it; next is the one answered after it. */
static void answer(struct srv_wreq *w, const struct srv_wreq *next)
{
    struct srv_call *c = w->call;
    if (w->done) {
        w->done(w); /* takes w */
        return;
    }
    if (c->method == SRV_M_APPEND_STREAM) {
        /* a run of one call's results leaves in one message */
        bool last = !next || next->done || next->call != c;
        srv_astream_result(c, w, last); /* takes w */
        return;
    }
    srv_reply_op(c, w);
    srv_wreq_free(w);
}

static void answer_now(struct srv_wreq *w)
{
    while (w) {
        struct srv_wreq *n = w->next;
        answer(w, n);
        w = n;
    }
}

/* Appends the list that starts at w to the queue *head ... *tail; returns
 * how many it appended. */
static size_t list_append(struct srv_wreq **head, struct srv_wreq **tail, struct srv_wreq *w)
{
    size_t n = 1;
    struct srv_wreq *last = w;
    while (last->next) {
        last = last->next;
        n++;
    }
    if (*tail) {
        (*tail)->next = w;
    } else {
        *head = w;
    }
    *tail = last;
    return n;
}

/* Gives every request of the list the same failure. */
static void set_outcome(struct srv_wreq *w, int code, const char *detail)
{
    for (; w; w = w->next) {
        w->op.rc = code;
        snprintf(w->op.detail, LOG_DETAIL_MAX, "%s", detail);
    }
}

/* Hands a list of answered requests to the replier thread. */
static void answer_list(struct srv *s, struct srv_wreq *head)
{
    if (!head) {
        return;
    }
    pthread_mutex_lock(&s->rmu);
    list_append(&s->rq_head, &s->rq_tail, head);
    pthread_cond_signal(&s->rcond);
    pthread_mutex_unlock(&s->rmu);
}

static void *replier_main(void *arg)
{
    struct srv *s = arg;
    pthread_setname_np(pthread_self(), "an-replier");
    for (;;) {
        pthread_mutex_lock(&s->rmu);
        while (!s->rq_head && !s->r_stop) {
            pthread_cond_wait(&s->rcond, &s->rmu);
        }
        struct srv_wreq *list = s->rq_head;
        s->rq_head = s->rq_tail = NULL;
        bool stop = s->r_stop;
        pthread_mutex_unlock(&s->rmu);
        answer_now(list);
        if (stop && !list) {
            break;
        }
    }
    return NULL;
}

static void fail_list(struct srv *s, struct srv_wreq *w, int code, const char *detail)
{
    set_outcome(w, code, detail);
    answer_list(s, w);
}

/* ---- the syncer ---- */

/* Hands a committed batch (not yet durable) to the syncer. */
static void syncer_hand(struct srv *s, struct srv_wreq *head, uint64_t seq, uint64_t pos)
{
    pthread_mutex_lock(&s->smu);
    size_t n = list_append(&s->sq_head, &s->sq_tail, head);
    atomic_store_explicit(&s->s_batch, n, memory_order_release);
    s->sq_seq = seq;
    s->sq_head_pos = pos;
    pthread_cond_signal(&s->scond);
    pthread_mutex_unlock(&s->smu);
}

/* Whether the syncer has nothing in hand: a lone request may then make its
 * own commit durable (LMDB's two syncs) and be answered at once. */
static bool syncer_idle(struct srv *s)
{
    return atomic_load_explicit(&s->s_batch, memory_order_acquire) == 0;
}

/* The head readers may see has moved: wake who waits for it. */
static void notify_head(struct srv *s)
{
    srv_sub_notify(s);
    proj_notify(s->proj, log_head(s->log));
    srv_group_notify(s);
}

/*
 * The syncer makes committed batches durable while the writer goes on with
 * the next one: one fdatasync (log_sync_through), which also covers every
 * batch handed over before it started, then it answers them itself (no hop
 * to the replier: it has nothing else to do). When the writer's next commit
 * got there first (its data sync flushed the earlier meta page), there is
 * nothing to sync.
 */
static void *syncer_main(void *arg)
{
    struct srv *s = arg;
    pthread_setname_np(pthread_self(), "an-syncer");
    for (;;) {
        pthread_mutex_lock(&s->smu);
        while (!s->sq_head && !s->s_stop) {
            pthread_cond_wait(&s->scond, &s->smu);
        }
        if (!s->sq_head) {
            pthread_mutex_unlock(&s->smu);
            break;
        }
        struct srv_wreq *list = s->sq_head;
        uint64_t seq = s->sq_seq;
        uint64_t pos = s->sq_head_pos;
        s->sq_head = s->sq_tail = NULL;
        pthread_mutex_unlock(&s->smu);

        bool need = log_durable_seq(s->log) < seq;
        int rc = log_sync_through(s->log, seq, pos);
        if (need) {
            atomic_fetch_add(&s->metrics.syncs, 1);
        }
        if (rc) {
            say_error("writer", "msg=\"sync failed\" err=%s", an_errname(rc));
            set_outcome(list, AN_EIO, "the commit could not be made durable");
        } else {
            notify_head(s);
        }
        answer_now(list);
        pthread_mutex_lock(&s->smu);
        if (!s->sq_head) {
            /* idle again; the writer may be waiting for this sync to take
             * its batch (lock order: smu, then wmu) */
            pthread_mutex_lock(&s->wmu);
            atomic_store_explicit(&s->s_batch, 0, memory_order_release);
            pthread_cond_signal(&s->wcond);
            pthread_mutex_unlock(&s->wmu);
        }
        pthread_mutex_unlock(&s->smu);
    }
    return NULL;
}

/* ---- the loop ---- */

static void *writer_main(void *arg)
{
    struct srv *s = arg;
    pthread_setname_np(pthread_self(), "an-writer");
    struct log_op *ops = calloc(s->cfg.max_batch, sizeof(*ops));
    struct srv_wreq **items = calloc(s->cfg.max_batch, sizeof(*items));
    if (!ops || !items) {
        say_error("writer", "msg=\"out of memory\"");
        abort();
    }

    for (;;) {
        pthread_mutex_lock(&s->wmu);
        /* While the syncer still holds the last batch, wait for as many
         * requests as it had (or for the syncer): a smaller batch now
         * would only cost a commit more per event, since none of it can be
         * answered before that sync anyway */
        for (;;) {
            size_t syncing = atomic_load_explicit(&s->s_batch, memory_order_acquire);
            if (s->w_stop || (s->wq_head && (!syncing || s->wq_len >= syncing))) {
                break;
            }
            if (log_prealloc_due(s->log)) {
                /* about to wait: keep the file ahead of the log (log.h) */
                pthread_mutex_unlock(&s->wmu);
                log_prealloc(s->log);
                pthread_mutex_lock(&s->wmu);
                continue;
            }
            pthread_cond_wait(&s->wcond, &s->wmu);
        }
        if (!s->wq_head) {
            pthread_mutex_unlock(&s->wmu);
            break;
        }
        /* take up to max_batch */
        size_t n = 0;
        while (s->wq_head && n < s->cfg.max_batch) {
            struct srv_wreq *w = s->wq_head;
            s->wq_head = w->next;
            w->next = NULL;
            items[n++] = w;
            s->wq_len--;
            s->wq_bytes -= w->bytes;
        }
        atomic_store_explicit(&s->wq_len_hint, s->wq_len, memory_order_relaxed);
        bool more = s->wq_head != NULL;
        if (!s->wq_head) {
            s->wq_tail = NULL;
        }
        pthread_mutex_unlock(&s->wmu);

        /* drop what cannot be answered usefully: nothing is written for it */
        gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
        size_t m = 0;
        struct srv_wreq *dropped = NULL;
        for (size_t i = 0; i < n; i++) {
            struct srv_wreq *w = items[i];
            if (!w->call) {
                items[m++] = w; /* the server's own: no deadline, no client */
                continue;
            }
            if (gpr_time_cmp(w->call->deadline, now) < 0) {
                w->op.rc = AN_EDEADLINE;
                snprintf(w->op.detail, LOG_DETAIL_MAX,
                         "the deadline passed before the writer took the request");
            } else if (atomic_load(&w->call->closed)) {
                w->op.rc = AN_ECANCELLED;
                snprintf(w->op.detail, LOG_DETAIL_MAX, "the call was cancelled");
            } else {
                items[m++] = w;
                continue;
            }
            w->next = dropped;
            dropped = w;
        }
        answer_list(s, dropped);
        if (m == 0) {
            continue;
        }
        for (size_t i = 0; i < m; i++) {
            ops[i] = items[i]->op;
        }
        uint64_t seq = 0;
        /* one request, nothing else waiting and nothing being synced (a
         * lone client): make its commit durable by itself (LMDB's two
         * syncs) and answer at once, saving the hand-over. Anything more is
         * load: the syncer's flush then overlaps the next batch */
        bool alone = m == 1 && !more && syncer_idle(s);
        gpr_timespec c0 = gpr_now(GPR_CLOCK_MONOTONIC);
        int rc = alone ? log_commit_durable(s->log, ops, m, &seq)
                       : log_commit(s->log, ops, m, &seq);
        if (seq) {
            gpr_timespec cd = gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), c0);
            srv_hist_observe(&s->metrics.commit_seconds, (double)gpr_timespec_to_micros(cd) / 1e6);
            srv_hist_observe(&s->metrics.batch_size, (double)m);
            atomic_fetch_add(&s->metrics.syncs, alone ? 2 : 1);
        }
        if (rc) {
            say_error("writer", "msg=\"commit failed\" err=%s batch=%zu", an_errname(rc), m);
        }
        unsigned long long events = 0;
        for (size_t i = 0; i < m; i++) {
            items[i]->op = ops[i];
            if (ops[i].rc == 0 && ops[i].kind == LOG_OP_APPEND) {
                events += ops[i].last_position - ops[i].first_position + 1;
            }
        }
        atomic_fetch_add(&s->st_appends, m);
        atomic_fetch_add(&s->st_events, events);
        if (seq) {
            atomic_fetch_add(&s->st_commits, 1);
            atomic_fetch_add(&s->st_batched, m);
        }
        /* this commit's data sync made the one before it durable */
        notify_head(s);
        /* What is durable already (a lone commit) is answered now; the
         * rest goes to the syncer. Failures wait too: a conflict's actual
         * version, a tombstone, a reused id may come from a commit not
         * yet durable, and an answer never tells what a read cannot see. */
        struct srv_wreq *ready = NULL;
        struct srv_wreq *later = NULL;
        uint64_t durable = log_durable_seq(s->log);
        for (size_t i = m; i-- > 0;) {
            struct srv_wreq *w = items[i];
            if (durable >= w->op.seq) {
                w->next = ready;
                ready = w;
            } else {
                w->next = later;
                later = w;
            }
        }
        if (later) {
            syncer_hand(s, later, seq ? seq : log_committed_seq(s->log),
                        log_committed_head(s->log));
        }
        if (alone && !atomic_load_explicit(&s->wq_len_hint, memory_order_relaxed)) {
            /* a lone request with nobody behind it: answering it here
             * saves the hop to the replier, and holds up no one */
            answer_now(ready);
        } else {
            answer_list(s, ready);
        }
    }
    free(ops);
    free(items);
    return NULL;
}

static void syncer_stop(struct srv *s)
{
    pthread_mutex_lock(&s->smu);
    s->s_stop = true;
    pthread_cond_signal(&s->scond);
    pthread_mutex_unlock(&s->smu);
    pthread_join(s->syncer, NULL);
}

int srv_writer_start(struct srv *s)
{
    if (pthread_create(&s->replier, NULL, replier_main, s)) {
        return AN_EINTERNAL;
    }
    if (pthread_create(&s->syncer, NULL, syncer_main, s)) {
        pthread_mutex_lock(&s->rmu);
        s->r_stop = true;
        pthread_cond_signal(&s->rcond);
        pthread_mutex_unlock(&s->rmu);
        pthread_join(s->replier, NULL);
        return AN_EINTERNAL;
    }
    if (pthread_create(&s->writer, NULL, writer_main, s)) {
        syncer_stop(s);
        pthread_mutex_lock(&s->rmu);
        s->r_stop = true;
        pthread_cond_signal(&s->rcond);
        pthread_mutex_unlock(&s->rmu);
        pthread_join(s->replier, NULL);
        return AN_EINTERNAL;
    }
    return 0;
}

void srv_writer_stop(struct srv *s)
{
    pthread_mutex_lock(&s->wmu);
    s->w_draining = true;
    struct srv_wreq *q = s->wq_head;
    s->wq_head = s->wq_tail = NULL;
    s->wq_len = 0;
    s->wq_bytes = 0;
    s->w_stop = true;
    pthread_cond_signal(&s->wcond);
    pthread_mutex_unlock(&s->wmu);
    fail_list(s, q, AN_EUNAVAIL, "the server is shutting down; nothing was written");
    pthread_join(s->writer, NULL);
    syncer_stop(s); /* it answers what it holds first */
    pthread_mutex_lock(&s->rmu);
    s->r_stop = true;
    pthread_cond_signal(&s->rcond);
    pthread_mutex_unlock(&s->rmu);
    pthread_join(s->replier, NULL);
    atomic_store(&s->w_stopped, true);
}

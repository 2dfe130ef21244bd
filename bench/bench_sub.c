/*
 * bench_sub.c - Queries.Subscribe: how soon a commit reaches subscribers,
 * and what an idle subscription costs the server.
 *
 *   build/bench/bench_sub [--quick] [--subs 1,100,1000] [--idle 1000,10000]
 *                         [--writers 64] [--rate R] [--secs 10] [--dir DIR]
 *
 * Latency phases (one per --subs value), each on a fresh annalsd: S
 * subscriptions to all streams from the end, spread over two client
 * threads, each with its own completion queue and one connection per 64
 * calls; once every one is caught up, W unary clients append one ~200-byte
 * event per request (own stream each) for the given seconds. For every
 * event a subscriber receives, delivery latency = receive time - the
 * event's recorded_at (the server stamps it as the writer takes the batch,
 * so the figure includes the commit and its fsync; the writers' own append
 * latency is shown beside it). Every subscriber must receive every event
 * appended during the phase, in position order, no gaps: the bench checks
 * that and fails otherwise.
 *
 * Idle phases (one per --idle value): annalsd's RSS before and after
 * opening N idle subscriptions (from the end, caught up), per subscription.
 *
 * The subscribers drive gRPC core directly (not libannals), so that
 * thousands of calls share two threads. Progress lines go to stderr, the
 * table to stdout.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "annals.h"
#include "annals/v1/queries.pb-c.h"
#include "bench_util.h"

#define EVENT_BYTES 200
#define SUBS_PER_CHANNEL 64
#define SUB_THREADS 2

static char payload[EVENT_BYTES];

static void die(const char *what, int rc, const char *detail)
{
    bu_die("bench_sub", what, rc, detail);
}

static int64_t realtime_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- subscribers on gRPC core ---- */

struct sub {
    grpc_call *call;
    grpc_byte_buffer *recv;
    grpc_metadata_array md;
    grpc_metadata_array trailers;
    grpc_status_code status;
    grpc_slice details;
    bool caught_up;
    bool ended;
    uint64_t events;            /* received */
    uint64_t last_pos;          /* position of the last one */
    bool gap;                   /* a position out of order or skipped */
    int64_t *recv_ns;           /* sampled subscribers: receive time by position - 1 */
    size_t recv_cap;
};

/* When each position's append was acknowledged to its writer (realtime
 * ns), for the latency from acknowledgment to delivery. */
#define ACK_MAX (8u << 20)
static _Atomic int64_t *ack_ns;

struct tag {
    struct sub *sub;
    int kind;                   /* 0: start batch, 1: message, 2: status */
};

struct sub_thread {
    grpc_completion_queue *cq;
    grpc_channel **chans;
    size_t n_chans;
    struct sub *subs;
    struct tag *tags;           /* 3 per sub */
    size_t n;
    pthread_t thread;
    atomic_size_t caught_up;
    atomic_size_t ended;
    atomic_bool stop;
    bool record;                /* keep latencies */
    uint64_t first_pos;         /* the first position expected live */
    struct bu_lat lat;
};

static void recv_next(struct sub *s, struct tag *t)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &s->recv;
    if (grpc_call_start_batch(s->call, &op, 1, t, NULL) != GRPC_CALL_OK) {
        die("start RECV_MESSAGE", AN_EINTERNAL, NULL);
    }
}

static void on_message(struct sub_thread *st, struct sub *s, struct tag *t)
{
    int64_t now = realtime_ns();
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, s->recv);
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(s->recv);
    s->recv = NULL;
    Annals__V1__SubscribeResponse *m = annals__v1__subscribe_response__unpack(
        NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    if (!m) {
        die("a malformed SubscribeResponse", AN_ECORRUPT, NULL);
    }
    if (m->caught_up && !s->caught_up) {
        s->caught_up = true;
        atomic_fetch_add(&st->caught_up, 1);
    }
    for (size_t i = 0; i < m->n_events; i++) {
        const Annals__V1__RecordedEvent *e = m->events[i];
        uint64_t want = s->last_pos ? s->last_pos + 1 : st->first_pos;
        if (want && e->global_position != want) {
            s->gap = true;
        }
        s->last_pos = e->global_position;
        s->events++;
        if (s->recv_ns && e->global_position - 1 < s->recv_cap) {
            s->recv_ns[e->global_position - 1] = now;
        }
        if (st->record) {
            bu_lat_add(&st->lat, (double)(now - e->recorded_at_unix_nanos) / 1e9);
        }
    }
    annals__v1__subscribe_response__free_unpacked(m, NULL);
    recv_next(s, t);
}

static void *sub_thread_main(void *arg)
{
    struct sub_thread *st = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            st->cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        struct tag *t = ev.tag;
        struct sub *s = t->sub;
        if (t->kind == 1) {
            if (ev.success && s->recv) {
                on_message(st, s, t);
            }
        } else if (t->kind == 2) {
            s->ended = true;
            atomic_fetch_add(&st->ended, 1);
        }
    }
    return NULL;
}

/* Opens st->n subscriptions from the end on addr. */
static void subs_open(struct sub_thread *st, const char *addr, size_t n)
{
    static const char method[] = "/annals.v1.Queries/Subscribe";
    st->n = n;
    st->cq = grpc_completion_queue_create_for_next(NULL);
    st->n_chans = (n + SUBS_PER_CHANNEL - 1) / SUBS_PER_CHANNEL;
    st->chans = calloc(st->n_chans ? st->n_chans : 1, sizeof(*st->chans));
    st->subs = calloc(n ? n : 1, sizeof(*st->subs));
    st->tags = calloc(3 * (n ? n : 1), sizeof(*st->tags));
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = 1},
    };
    grpc_channel_args ca = {.num_args = 1, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    for (size_t i = 0; i < st->n_chans; i++) {
        st->chans[i] = grpc_channel_create(addr, creds, &ca);
    }
    grpc_channel_credentials_release(creds);

    Annals__V1__SubscribeRequest req = ANNALS__V1__SUBSCRIBE_REQUEST__INIT;
    req.from_end = true;
    size_t len = annals__v1__subscribe_request__get_packed_size(&req);
    uint8_t buf[64];
    annals__v1__subscribe_request__pack(&req, buf);
    grpc_slice msl = grpc_slice_from_static_string(method);
    for (size_t i = 0; i < n; i++) {
        struct sub *s = &st->subs[i];
        struct tag *t = &st->tags[3 * i];
        t[0] = (struct tag){s, 0};
        t[1] = (struct tag){s, 1};
        t[2] = (struct tag){s, 2};
        grpc_metadata_array_init(&s->md);
        grpc_metadata_array_init(&s->trailers);
        s->call = grpc_channel_create_call(st->chans[i / SUBS_PER_CHANNEL], NULL,
                                           GRPC_PROPAGATE_DEFAULTS, st->cq, msl, NULL,
                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_slice ps = grpc_slice_from_copied_buffer((const char *)buf, len);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&ps, 1);
        grpc_slice_unref(ps);
        grpc_op ops[4];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = bb;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md;
        if (grpc_call_start_batch(s->call, ops, 4, &t[0], NULL) != GRPC_CALL_OK) {
            die("start a Subscribe call", AN_EINTERNAL, NULL);
        }
        grpc_byte_buffer_destroy(bb);
        grpc_op so = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
        so.data.recv_status_on_client.trailing_metadata = &s->trailers;
        so.data.recv_status_on_client.status = &s->status;
        so.data.recv_status_on_client.status_details = &s->details;
        if (grpc_call_start_batch(s->call, &so, 1, &t[2], NULL) != GRPC_CALL_OK) {
            die("start RECV_STATUS", AN_EINTERNAL, NULL);
        }
        recv_next(s, &t[1]);
    }
    pthread_create(&st->thread, NULL, sub_thread_main, st);
}

/* Cancels every call, waits for their ends, frees everything. */
static void subs_close(struct sub_thread *st)
{
    for (size_t i = 0; i < st->n; i++) {
        grpc_call_cancel(st->subs[i].call, NULL);
    }
    for (int i = 0; i < 3000 && atomic_load(&st->ended) < st->n; i++) {
        usleep(1000);
    }
    grpc_completion_queue_shutdown(st->cq);
    pthread_join(st->thread, NULL);
    for (size_t i = 0; i < st->n; i++) {
        struct sub *s = &st->subs[i];
        grpc_call_unref(s->call);
        grpc_metadata_array_destroy(&s->md);
        grpc_metadata_array_destroy(&s->trailers);
        grpc_slice_unref(s->details);
        if (s->recv) {
            grpc_byte_buffer_destroy(s->recv);
        }
    }
    for (size_t i = 0; i < st->n_chans; i++) {
        grpc_channel_destroy(st->chans[i]);
    }
    grpc_completion_queue_destroy(st->cq);
    free(st->chans);
    free(st->subs);
    free(st->tags);
}

/* Opens n subscriptions over SUB_THREADS threads and waits until all are
 * caught up. */
static void subs_open_all(struct sub_thread *th, const char *addr, size_t n, bool record)
{
    for (int i = 0; i < SUB_THREADS; i++) {
        th[i] = (struct sub_thread){.record = record};
        subs_open(&th[i], addr, n / SUB_THREADS + (i < (int)(n % SUB_THREADS)));
    }
    double t0 = bu_now();
    for (;;) {
        size_t up = 0;
        size_t ended = 0;
        for (int i = 0; i < SUB_THREADS; i++) {
            up += atomic_load(&th[i].caught_up);
            ended += atomic_load(&th[i].ended);
        }
        if (up == n) {
            break;
        }
        if (ended) {
            die("a subscription ended before it caught up", AN_EUNAVAIL, NULL);
        }
        if (bu_now() - t0 > 120) {
            die("subscriptions did not catch up within 120 s", AN_EDEADLINE, NULL);
        }
        usleep(5000);
    }
    fprintf(stderr, "bench: %zu subscriptions caught up in %.2f s\n", n, bu_now() - t0);
}

/* ---- writers ---- */

struct writer {
    const char *addr;
    int index;
    double until;
    double interval;            /* seconds between appends; 0: none */
    uint64_t count;
    struct bu_lat lat;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    an_client *c;
    char stream[32];
    struct an_error err;
    if (an_connect(w->addr, NULL, &c)) {
        die("connect", AN_EUNAVAIL, w->addr);
    }
    snprintf(stream, sizeof(stream), "bench-%d", w->index);
    double next = bu_now() + w->interval * (double)w->index / 64.0;
    while (bu_now() < w->until) {
        if (w->interval > 0) {
            double wait = next - bu_now();
            if (wait > 0) {
                usleep((useconds_t)(wait * 1e6));
            }
            next += w->interval;
        }
        struct an_event e = {.type = "Deposited", .data = payload, .data_len = EVENT_BYTES,
                             .content_type = "application/json"};
        struct an_stream_append sa = {.stream = stream,
                                      .expect = w->count ? AN_EXPECT_VERSION : AN_EXPECT_NO_STREAM,
                                      .expected_version = w->count - 1,
                                      .events = &e,
                                      .n_events = 1};
        double t0 = bu_now();
        struct an_append_result res;
        int rc = an_append(c, &sa, 1, &res, &err);
        int64_t acked = realtime_ns();
        bu_lat_add(&w->lat, bu_now() - t0);
        if (rc) {
            die("append", rc, err.detail);
        }
        if (res.first_position - 1 < ACK_MAX) {
            atomic_store_explicit(&ack_ns[res.first_position - 1], acked, memory_order_relaxed);
        }
        w->count++;
    }
    an_close(c);
    return NULL;
}

/* ---- phases ---- */

struct lat_result {
    size_t subs;
    double events_s;            /* appended */
    double deliveries_s;        /* received by all subscribers */
    double p50_ms;
    double p99_ms;
    double max_ms;
    double ack_p50_ms;          /* delivery after the writer's acknowledgment */
    double ack_p99_ms;
    double before_ack;          /* share of sampled deliveries before the ack */
    double append_p50_ms;
};

#define SAMPLED 8               /* subscribers per phase whose deliveries are matched to acks */

static void run_latency(const char *base, size_t n_subs, int writers, double rate,
                        double secs, struct lat_result *r)
{
    struct bu_server s;
    const char *flags[] = {"--max-subscriptions", "100000", NULL};
    struct sub_thread th[SUB_THREADS];
    bu_server_start(&s, base, flags);
    fprintf(stderr, "bench: latency with %zu subscribers, %d writers, %.0f s\n", n_subs, writers,
            secs);
    subs_open_all(th, s.addr, n_subs, true);
    size_t cap = (size_t)(secs * 200000);
    cap = cap > ACK_MAX ? ACK_MAX : cap;
    for (int i = 0; i < SUB_THREADS; i++) {
        th[i].first_pos = 1; /* the log is empty: the first event is position 1 */
        for (size_t k = 0; k < SAMPLED / SUB_THREADS && k < th[i].n; k++) {
            struct sub *sb = &th[i].subs[k * th[i].n / (SAMPLED / SUB_THREADS)];
            sb->recv_ns = calloc(cap, sizeof(*sb->recv_ns));
            sb->recv_cap = sb->recv_ns ? cap : 0;
        }
    }
    memset((void *)ack_ns, 0, ACK_MAX * sizeof(*ack_ns));
    struct writer *w = calloc((size_t)writers, sizeof(*w));
    pthread_t *t = calloc((size_t)writers, sizeof(*t));
    double t0 = bu_now();
    for (int i = 0; i < writers; i++) {
        w[i] = (struct writer){.addr = s.addr, .index = i, .until = t0 + secs,
                               .interval = rate > 0 ? writers / rate : 0};
        pthread_create(&t[i], NULL, writer_main, &w[i]);
    }
    struct bu_lat alat = {0};
    uint64_t total = 0;
    for (int i = 0; i < writers; i++) {
        pthread_join(t[i], NULL);
        total += w[i].count;
        bu_lat_merge(&alat, &w[i].lat);
    }
    double wsecs = bu_now() - t0;
    /* wait for every subscriber to get every event */
    double t1 = bu_now();
    for (;;) {
        uint64_t min = UINT64_MAX;
        for (int k = 0; k < SUB_THREADS; k++) {
            for (size_t i = 0; i < th[k].n; i++) {
                uint64_t e = __atomic_load_n(&th[k].subs[i].events, __ATOMIC_RELAXED);
                min = e < min ? e : min;
            }
        }
        if (min >= total) {
            break;
        }
        if (bu_now() - t1 > 60) {
            fprintf(stderr, "bench_sub: a subscriber has %llu of %llu events after 60 s\n",
                    (unsigned long long)min, (unsigned long long)total);
            exit(1);
        }
        usleep(2000);
    }
    double dsecs = bu_now() - t0;
    struct bu_lat dlat = {0};
    struct bu_lat klat = {0};
    uint64_t early = 0;
    for (int k = 0; k < SUB_THREADS; k++) {
        for (size_t i = 0; i < th[k].n; i++) {
            struct sub *sb = &th[k].subs[i];
            for (size_t p = 0; p < sb->recv_cap && p < total; p++) {
                int64_t a = atomic_load(&ack_ns[p]);
                if (!a || !sb->recv_ns[p]) {
                    continue;
                }
                early += sb->recv_ns[p] < a;
                bu_lat_add(&klat, (double)(sb->recv_ns[p] - a) / 1e9);
            }
            free(sb->recv_ns);
            sb->recv_ns = NULL;
        }
    }
    for (int k = 0; k < SUB_THREADS; k++) {
        for (size_t i = 0; i < th[k].n; i++) {
            if (th[k].subs[i].gap || th[k].subs[i].events != total) {
                fprintf(stderr, "bench_sub: subscriber %zu: %llu events (want %llu), %s\n", i,
                        (unsigned long long)th[k].subs[i].events, (unsigned long long)total,
                        th[k].subs[i].gap ? "positions skipped or out of order" : "in order");
                exit(1);
            }
        }
        subs_close(&th[k]);
        bu_lat_merge(&dlat, &th[k].lat);
    }
    bu_server_stop(&s);
    bu_lat_sort(&dlat);
    bu_lat_sort(&alat);
    bu_lat_sort(&klat);
    *r = (struct lat_result){
        .subs = n_subs,
        .events_s = (double)total / wsecs,
        .deliveries_s = (double)total * (double)n_subs / dsecs,
        .p50_ms = bu_pct(&dlat, 0.50),
        .p99_ms = bu_pct(&dlat, 0.99),
        .max_ms = bu_pct(&dlat, 1.0),
        .ack_p50_ms = bu_pct(&klat, 0.50),
        .ack_p99_ms = bu_pct(&klat, 0.99),
        .before_ack = klat.n ? (double)early / (double)klat.n : 0,
        .append_p50_ms = bu_pct(&alat, 0.50),
    };
    bu_lat_free(&klat);
    bu_lat_free(&dlat);
    bu_lat_free(&alat);
    free(w);
    free(t);
}

struct idle_result {
    size_t subs;
    long rss_before_kib;
    long rss_after_kib;
};

static void run_idle(const char *base, size_t n, struct idle_result *r)
{
    struct bu_server s;
    const char *flags[] = {"--max-subscriptions", "100000", NULL};
    struct sub_thread th[SUB_THREADS];
    bu_server_start(&s, base, flags);
    fprintf(stderr, "bench: %zu idle subscriptions\n", n);
    /* warm the server's paths (threads, arenas) with a few first */
    subs_open_all(th, s.addr, 8, false);
    for (int k = 0; k < SUB_THREADS; k++) {
        subs_close(&th[k]);
    }
    sleep(1);
    r->subs = n;
    r->rss_before_kib = bu_server_rss_kib(&s);
    subs_open_all(th, s.addr, n, false);
    sleep(1);
    r->rss_after_kib = bu_server_rss_kib(&s);
    for (int k = 0; k < SUB_THREADS; k++) {
        subs_close(&th[k]);
    }
    bu_server_stop(&s);
}

/* ---- main ---- */

static size_t parse_list(const char *s, size_t *out, size_t cap)
{
    size_t n = 0;
    char *end;
    while (*s && n < cap) {
        out[n++] = strtoull(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            return 0;
        }
    }
    return n;
}

static void usage(void)
{
    printf("usage: bench_sub [--quick] [--subs LIST] [--idle LIST] [--writers N] [--rate R] "
           "[--secs S] [--dir DIR]\n"
           "  --subs LIST   subscriber counts for the latency phases (default 1,100,1000)\n"
           "  --idle LIST   idle subscription counts for the memory phases (default 1000,10000)\n"
           "  --writers N   unary appending clients (default 64)\n"
           "  --rate R      appends per second, all writers together (default 0: as fast as "
           "they can)\n"
           "  --secs S      seconds of appends per latency phase (default 10)\n"
           "  --dir DIR     where temp data dirs go (default /var/tmp)\n"
           "  --quick       tiny sizes, for a smoke run\n");
}

int main(int argc, char **argv)
{
    size_t subs[8] = {1, 100, 1000};
    size_t n_subs = 3;
    size_t idle[8] = {1000, 10000};
    size_t n_idle = 2;
    int writers = 64;
    double secs = 10;
    double rate = 0;
    const char *base = "/var/tmp";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--quick") == 0) {
            subs[0] = 1;
            subs[1] = 20;
            n_subs = 2;
            idle[0] = 100;
            n_idle = 1;
            writers = 4;
            secs = 1;
        } else if (strcmp(argv[i], "--subs") == 0 && v) {
            n_subs = parse_list(v, subs, 8);
            i++;
        } else if (strcmp(argv[i], "--idle") == 0 && v) {
            n_idle = parse_list(v, idle, 8);
            i++;
        } else if (strcmp(argv[i], "--writers") == 0 && v) {
            writers = atoi(v);
            i++;
        } else if (strcmp(argv[i], "--rate") == 0 && v) {
            rate = atof(v);
            i++;
        } else if (strcmp(argv[i], "--secs") == 0 && v) {
            secs = atof(v);
            i++;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            base = v;
            i++;
        } else {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (writers < 1 || writers > 1024 || secs <= 0 || rate < 0 || (!n_subs && !n_idle)) {
        fprintf(stderr, "bench_sub: --writers 1..1024, --secs > 0, --rate >= 0, lists of counts\n");
        return 2;
    }
    memset(payload, 'x', sizeof(payload));
    memcpy(payload, "{\"amount\":42,\"note\":\"", 21);
    payload[EVENT_BYTES - 2] = '"';
    payload[EVENT_BYTES - 1] = '}';
    signal(SIGPIPE, SIG_IGN);
    ack_ns = calloc(ACK_MAX, sizeof(*ack_ns));
    if (!ack_ns) {
        die("allocating the acknowledgment table", AN_ENOMEM, NULL);
    }
    grpc_init();

    struct lat_result lr[8];
    struct idle_result ir[8];
    for (size_t i = 0; i < n_subs; i++) {
        run_latency(base, subs[i], writers, rate, secs, &lr[i]);
    }
    for (size_t i = 0; i < n_idle; i++) {
        run_idle(base, idle[i], &ir[i]);
    }

    printf("\n%-12s %11s %13s %9s %9s %9s %10s %10s %8s %10s\n", "subscribers", "appends/s",
           "deliveries/s", "p50 ms", "p99 ms", "max ms", "ack p50", "ack p99", "pre-ack",
           "append p50");
    for (size_t i = 0; i < n_subs; i++) {
        printf("%-12zu %11.0f %13.0f %9.3f %9.3f %9.3f %10.3f %10.3f %7.0f%% %10.3f\n",
               lr[i].subs, lr[i].events_s, lr[i].deliveries_s, lr[i].p50_ms, lr[i].p99_ms,
               lr[i].max_ms, lr[i].ack_p50_ms, lr[i].ack_p99_ms, lr[i].before_ack * 100,
               lr[i].append_p50_ms);
    }
    if (n_idle) {
        printf("\n%-12s %14s %14s %18s\n", "idle subs", "RSS before KiB", "RSS after KiB",
               "KiB / subscription");
    }
    for (size_t i = 0; i < n_idle; i++) {
        printf("%-12zu %14ld %14ld %18.1f\n", ir[i].subs, ir[i].rss_before_kib,
               ir[i].rss_after_kib,
               (double)(ir[i].rss_after_kib - ir[i].rss_before_kib) / (double)ir[i].subs);
    }
    printf("\np50/p99/max: receive time - recorded_at (the writer stamps it as it takes the "
           "batch: includes the commit and its fsync)\n"
           "ack p50/p99: receive time - the time the append's writer got its acknowledgment "
           "(0 when the subscriber got it first; pre-ack: how often), over %d sampled "
           "subscribers\n%d writers (%s), %.0f s per phase, %d-byte events\n"
           "targets: p99 < 2 ms with 1000 subscribers; < 20 KiB per idle subscription\n",
           SAMPLED, writers, rate > 0 ? "throttled to --rate" : "as fast as they can", secs,
           EVENT_BYTES);
    grpc_shutdown();
    return 0;
}

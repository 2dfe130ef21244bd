/*
 * srv_int.h - what the files of server/ share: the server, its calls, the
 * writer's queue. No other module includes it.
 *
 * A call belongs to the completion-queue thread whose queue its
 * grpc_server_request_call was posted on: every completion of the call
 * comes back there. The writer thread also starts batches on calls (the
 * replies of appends), which gRPC allows from any thread; state the two
 * share is under the call's mutex.
 */
#ifndef SRV_INT_H
#define SRV_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/sync.h>
#include <grpc/support/time.h>
#include <sys/types.h>
#include <pthread.h>
#include <stdatomic.h>

#include "annals/v1/commands.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "log.h"
#include "pb_wire.h"
#include "proj.h"
#include "say.h"
#include "srv.h"

struct srv_call;
struct srv_cq;
struct MHD_Daemon;

#define SRV_RATE_POINTS 60      /* 10 minutes of stats lines */
struct srv_auth;
struct srv_principal;

/* What a grant allows (srv_auth.c). */
enum srv_act {
    SRV_ACT_READ = 0,
    SRV_ACT_WRITE,
    SRV_ACT_DELETE,
    SRV_ACT_CONSUME,
};

/* ---- methods ---- */

enum srv_method {
    SRV_M_UNKNOWN = 0,
    SRV_M_APPEND,
    SRV_M_APPEND_STREAM,
    SRV_M_DELETE_STREAM,
    SRV_M_READ_STREAM,
    SRV_M_READ_ALL,
    SRV_M_GET_STREAM,
    SRV_M_SUBSCRIBE,
    SRV_M_GET_VIEW,
    SRV_M_SCAN_VIEW,
    SRV_M_PROJ_CREATE,
    SRV_M_PROJ_LIST,
    SRV_M_PROJ_GET,
    SRV_M_PROJ_REBUILD,
    SRV_M_PROJ_DELETE,
    SRV_M_BACKUP,
    SRV_M_GRP_CREATE,
    SRV_M_GRP_GET,
    SRV_M_GRP_LIST,
    SRV_M_GRP_DELETE,
    SRV_M_GRP_REPLAY,
    SRV_M_CONSUME,
    SRV_M_HEALTH_CHECK,
};
#define SRV_M_COUNT (SRV_M_HEALTH_CHECK + 1) /* how many there are */

/* ---- the connection limit (srv_conns.c) ---- */

struct grpc_socket_mutator_vtable_151;
/* gRPC core's grpc_socket_mutator as libgrpc 1.51 lays it out (its header
 * is not installed): see srv_conns.c. */
struct grpc_socket_mutator_151 {
    const struct grpc_socket_mutator_vtable_151 *vtable;
    gpr_refcount refcount;
};

struct srv_conns {
    struct grpc_socket_mutator_151 m; /* first: gRPC hands it back to us */
    pthread_mutex_t mu;
    size_t max;                 /* --max-connections, after the descriptor limit */
    size_t cap;                 /* slots: the descriptor limit */
    size_t open;                /* accepted and not known to be closed */
    struct srv_conn_slot {      /* by descriptor; ino 0: none */
        dev_t dev;
        ino_t ino;
    } *slot;
    int64_t swept_at_ns;        /* monotonic */
    int64_t said_at_ns;
    unsigned long long refused_unsaid; /* since the last log line */
    atomic_ullong refused_total;
};

/* srv_conns_init - max connections open at once among fd_limit
 * descriptors: 0 or AN_ENOMEM. Before grpc_server_create. */
int srv_conns_init(struct srv_conns *c, size_t max, size_t fd_limit);
/* The channel argument that puts c on every accepted connection. */
grpc_arg srv_conns_arg(struct srv_conns *c);
/* Connections open now (sweeps: O(descriptor limit)). Any thread. */
size_t srv_conns_open(struct srv_conns *c);
/* After grpc_server_destroy. */
void srv_conns_free(struct srv_conns *c);

/* ---- metrics (srv_metrics.c) ---- */

#define SRV_HIST_MAX 16         /* buckets, +Inf included */
#define SRV_STATUS_COUNT 17     /* gRPC status codes 0..16 */

/* A Prometheus-shaped histogram: bucket[i] counts values <= bounds[i]
 * (not cumulative; bucket[n] is +Inf), sum in 1/sum_scale units. */
struct srv_hist {
    const double *bounds;
    unsigned n;
    double sum_scale;
    atomic_ullong bucket[SRV_HIST_MAX];
    atomic_ullong count;
    atomic_ullong sum;
};

struct srv_metrics {
    struct srv_hist commit_seconds;  /* the writer's commit (with its sync) */
    struct srv_hist batch_size;      /* requests per group commit */
    atomic_ullong syncs;             /* fdatasyncs of the log (2 per durable commit) */
    /* AppendStream: messages received and sent, and the appends and
     * results they carried (batched messages: several per message) */
    atomic_ullong astream_msgs_in;
    atomic_ullong astream_appends_in;
    atomic_ullong astream_msgs_out;
    atomic_ullong astream_results_out;
    atomic_ullong calls[SRV_M_COUNT][SRV_STATUS_COUNT]; /* finished calls */
    struct srv_hist call_seconds[SRV_M_COUNT];
};

void srv_metrics_init(struct srv_metrics *m);
void srv_hist_observe(struct srv_hist *h, double v);
/* Counts a call's end with its status and duration (srv_reply). */
void srv_metrics_call_done(struct srv_call *c, grpc_status_code status);
/* "annals.v1.Commands/Append", ... */
const char *srv_method_name(enum srv_method m);
/* "OK", "CANCELLED", ... */
const char *srv_status_name(unsigned status);

/* ---- tags: what a completion is about ---- */

enum srv_tag_kind {
    SRV_TAG_NEW = 0,    /* a call arrived (grpc_server_request_call) */
    SRV_TAG_READ,       /* a RECV_MESSAGE completed */
    SRV_TAG_WRITE,      /* a SEND_MESSAGE completed */
    SRV_TAG_FINAL,      /* the final status batch completed */
    SRV_TAG_CLOSE,      /* RECV_CLOSE_ON_SERVER completed: the call is over */
    SRV_TAG_SHUTDOWN,   /* the server's shutdown notification */
};

struct srv_tag {
    struct srv_call *call;
    enum srv_tag_kind kind;
};

/* ---- the writer's work items ---- */

struct srv_wreq {
    struct srv_wreq *next;
    struct log_op op;
    struct srv_call *call;      /* holds a reference */
    uint64_t correlation_id;    /* AppendStream: the request's id */
    size_t bytes;               /* the request's size on the wire */
    Annals__V1__AppendStreamRequest *stream_req; /* AppendStream: owned */
    /* a request of the server's own (call NULL): called with the outcome
     * instead of a reply, on the thread that answers it (the writer, the
     * syncer or the replier); it frees w */
    void (*done)(struct srv_wreq *w);
    void *arg;
    struct log_stream_result results[]; /* one per StreamAppend */
};

/* ---- AppendStream state (under call->mu) ---- */

struct srv_out {
    struct srv_out *next;
    grpc_slice packed;          /* one packed AppendResult */
};

/* Batched messages (commands.proto, AppendStreamRequest.more): the most
 * bytes of results one message carries; a single bigger one goes alone. */
#define SRV_BATCH_BYTES (1u << 20)

struct srv_astream {
    unsigned in_progress;       /* requests handed to the writer, unanswered */
    bool reading;               /* a RECV_MESSAGE is in flight */
    bool half_closed;           /* the client closed its side */
    bool sending;               /* a SEND_MESSAGE is in flight */
    bool finished;              /* the final status was started */
    int end_code;               /* end with this status once drained (shutdown) */
    bool stop_sent;             /* shutdown cancelled the idle call */
    bool batch_out;             /* the client reads AppendResult.more
                                   ("annals-batch: 1" in its headers) */
    struct srv_out *out_head;   /* results waiting to be sent */
    struct srv_out *out_tail;
};

/* ---- streaming reads (owned by the call's CQ thread) ---- */

struct srv_rstream {
    bool all;                   /* ReadAll, else ReadStream */
    uint64_t as_of;             /* position bound, fixed at the start */
    uint64_t next;              /* next version / position */
    uint64_t left;              /* events still wanted; UINT64_MAX: no limit */
    bool backwards;
    bool done;
    char *stream;               /* ReadStream: owned */
    struct log_filter filter;   /* ReadAll: points into the request */
};

/* ---- subscriptions (srv_sub.c) ---- */

struct srv_sel;

/* One Subscribe call's cursor. Whoever has the call (srv_sub.c) owns it;
 * `parked`, `prev` and `next` are under its fan-out's mu while parked. */
struct srv_sub {
    bool all;                   /* all streams, else `stream` */
    bool counted;               /* holds one of max_subscriptions */
    bool caught_up_sent;
    bool parked;                /* on the fan-out's list */
    char *stream;               /* one stream: owned */
    uint64_t next_version;      /* one stream: the next version to read */
    uint64_t scanned;           /* every position <= this has been looked at */
    uint64_t ckpt_sent;         /* the last checkpoint sent */
    gpr_timespec ckpt_at;       /* when (monotonic) */
    struct log_filter filter;   /* all streams: points into the request */
    struct srv_sel *sel;        /* its selection, interned (srv_sub.c); NULL: none */
    struct srv_call *prev;      /* the parked list, or a work list */
    struct srv_call *next;
};

/* The last live message a fan-out thread built for an all-streams
 * subscription without a filter: the next one at the same cursor is the
 * same bytes, so it is sent again (a reference, not a copy). */
struct srv_wave_msg {
    bool valid;
    uint64_t from;              /* the first position it covers */
    uint64_t to;                /* its checkpoint: the last one */
    grpc_slice msg;             /* the whole SubscribeResponse */
};

/* A fan-out thread: the subscriptions of one CQ thread that are parked
 * (caught up, waiting for the head to move), and the thread that wakes
 * them. One per CQ thread, so the work of a wave spreads over the cores. */
struct srv_fanout {
    struct srv *srv;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct srv_call *parked;    /* doubly linked through sub.prev/next: those
                                   without an interned selection */
    size_t n_parked;
    struct srv_sel *active;     /* selections with subscriptions parked here */
    uint64_t published;         /* the head the writer last published */
    uint64_t seen;              /* waves are built after it: the last one's
                                   end, or the head published while nobody
                                   was parked (not signalled) */
    uint64_t clean_upto;        /* >= seen: positions up to it select nothing
                                   for any selection parked here (the gate
                                   read them), so waves need not read them */
    bool stop;
    bool running;
    pthread_t thread;
    log_reader *rd;             /* this thread's reader */
    struct srv_wave_msg wave;   /* this thread's last live message */
};

/* The catch-up thread: subscriptions replaying history far behind the
 * head wait here for their next message instead of being pumped on a CQ
 * thread, and it pumps them in turn under SCHED_IDLE, so a crowd
 * replaying the log cannot take the cores from the appends (srv_sub.c). */
struct srv_catchup {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct srv_call *head;      /* FIFO through sub.next */
    struct srv_call *tail;
    atomic_size_t n;            /* changed under mu; read without it */
    bool stop;
    bool running;
    pthread_t thread;
    log_reader *rd;
};

/* ---- view queries (srv_proj.c) ---- */

/* A GetView/ScanView call: what it asks, and its place on the view-waiter
 * list while the view has not applied enough (under srv.vw_mu). */
struct srv_vwait {
    struct proj_read q;         /* as_of resolved to a position */
    bool parked;
    struct srv_call *prev;
    struct srv_call *next;
};

/* A ScanView in progress (owned by whoever has the call). */
struct srv_scan {
    bool started;               /* the first batch went out */
    bool done;
    bool latest_only;           /* the view cannot be read as of a point */
    uint64_t at;                /* the position the first batch read at */
    uint32_t left;              /* entries still wanted; 0: no limit */
    char *after;                /* the last key sent: owned */
    size_t after_len;
};

/* ---- Admin.Backup (srv_backup.c), under call->mu ---- */

struct srv_bk {
    bool sending;               /* a progress message is in flight */
    grpc_byte_buffer *pending;  /* the next one to send */
    bool ended;                 /* the copy is over: rc, detail */
    bool replied;
    int rc;
    char detail[LOG_DETAIL_MAX];
};

/* ---- a Consume call (srv_group.c), under its group's mu once joined ---- */

struct srv_group;
struct srv_gentry;

struct srv_consumer {
    struct srv_group *g;        /* joined: holds a reference; set under the
                                   call's mu (srv_consume_end reads it) */
    uint32_t prefetch;
    uint32_t n_flight;
    struct srv_gentry *fl_head; /* in flight to it, oldest first */
    struct srv_gentry *fl_tail;
    bool reading;               /* a RECV_MESSAGE is in flight */
    bool sending;               /* a SEND_MESSAGE is in flight */
    bool left;                  /* out of the group: nothing more goes out */
    bool ended;                 /* the final status was started */
    int end_code;               /* left: end with this (0: OK) */
    char end_detail[LOG_DETAIL_MAX];
    struct srv_call *prev;      /* the group's consumers */
    struct srv_call *next;
};

/* ---- a call ---- */

struct srv_call {
    struct srv *srv;
    struct srv_cq *q;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv;
    size_t recv_bytes;          /* size of the last message received */
    int cancelled;              /* written by RECV_CLOSE_ON_SERVER */
    atomic_bool closed;         /* CLOSE has fired */
    atomic_int refs;
    enum srv_method method;
    gpr_timespec deadline;      /* monotonic; gpr_inf_future when none */
    gpr_timespec started;       /* monotonic, when it arrived */
    struct srv_tag t_new;
    struct srv_tag t_read;
    struct srv_tag t_write;
    struct srv_tag t_final;
    struct srv_tag t_close;
    bool initial_sent;          /* initial metadata went out */
    pthread_mutex_t mu;         /* guards astream and writes started by others */
    ProtobufCMessage *req;      /* the unpacked request (unary, reads) */
    struct srv_astream as;
    struct srv_rstream rs;
    struct srv_sub sub;
    struct srv_vwait vw;
    struct srv_scan scan;
    struct srv_bk bk;
    struct srv_consumer cons;
    char principal[256];        /* who the call is ("" anonymous) */
    struct srv_auth *auth;      /* the auth table it was checked with; NULL: off */
    const struct srv_principal *who; /* its entry there */
    bool listed;                /* on its CQ's list of streaming calls */
    struct srv_call *open_prev; /* that list (under q->mu) */
    struct srv_call *open_next;
};

/* ---- a completion-queue thread ---- */

struct srv_cq {
    struct srv *srv;
    grpc_completion_queue *cq;
    pthread_t thread;
    log_reader *rd;             /* this thread's reader */
    unsigned index;
    bool closing;               /* its queue is shut down: start no batch
                                   (this thread only) */
    pthread_mutex_t mu;         /* guards `open` */
    struct srv_call *open;      /* its Subscribe and AppendStream calls,
                                   through open_prev/open_next, so that
                                   shutdown can end them */
};

/* ---- the server ---- */

struct srv {
    struct srv_cfg cfg;
    log_env *log;
    grpc_server *server;
    grpc_completion_queue *shutdown_cq;
    struct srv_cq *cqs;
    unsigned n_cqs;
    int port;
    atomic_bool shutting_down;  /* health says NOT_SERVING, no new posts */
    atomic_bool cqs_stop;       /* every call is over: CQ threads shut their
                                   queues down and drain them */

    /* the writer's queue: guarded by wmu */
    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    struct srv_wreq *wq_head;
    struct srv_wreq *wq_tail;
    size_t wq_len;
    size_t wq_bytes;            /* wire bytes of the queued requests */
    atomic_size_t wq_len_hint;  /* wq_len, readable without wmu */
    bool w_draining;            /* shutdown: answer the queue UNAVAILABLE */
    atomic_bool w_stopped;      /* the writer has stopped: nothing more will
                                   be answered by it */
    bool w_stop;
    pthread_t writer;

    /* committed batches waiting for the syncer's fdatasync: guarded by smu */
    pthread_mutex_t smu;
    pthread_cond_t scond;
    struct srv_wreq *sq_head;
    struct srv_wreq *sq_tail;
    uint64_t sq_seq;            /* the newest commit handed over, and its head */
    uint64_t sq_head_pos;
    atomic_size_t s_batch;      /* requests in the last batch handed to the
                                   syncer (set under smu), until it has
                                   answered all it holds (0) */
    bool s_stop;
    pthread_t syncer;

    /* answered requests on their way to the replier: guarded by rmu */
    pthread_mutex_t rmu;
    pthread_cond_t rcond;
    struct srv_wreq *rq_head;
    struct srv_wreq *rq_tail;
    bool r_stop;
    pthread_t replier;

    gpr_timespec started_at;    /* monotonic */

    /* auth (srv_auth.c): the current table, swapped by srv_reload_auth */
    pthread_mutex_t auth_mu;
    struct srv_auth *auth;

    /* projections (srv_proj.c) */
    proj_mgr *proj;
    pthread_mutex_t vw_mu;      /* the view-waiter list */
    pthread_cond_t vw_cond;
    struct srv_call *vw_parked; /* doubly linked through vw.prev/next */
    uint64_t vw_gen;            /* bumped by each on_advance */
    bool vw_stop;
    bool vw_running;
    pthread_t vw_thread;

    /* subscriptions (srv_sub.c) */
    struct srv_fanout *fans;    /* one per CQ thread */
    struct srv_catchup catchup;
    atomic_ullong sub_hint;     /* the head last published to the fans */
    pthread_mutex_t notify_mu;  /* srv_sub_notify, one at a time (writer, syncer) */
    log_reader *gate_rd;        /* its reader: what a wave brings, under notify_mu */
    atomic_uint sub_active;     /* Subscribe calls open */
    pthread_mutex_t sel_mu;     /* the distinct selections of subscriptions */
    struct srv_sel **sels;
    size_t n_sels, cap_sels;

    /* consumer groups (srv_group.c) */
    struct srv_groups *groups;

    struct srv_metrics metrics;
    struct srv_conns conns;     /* --max-connections */
    atomic_bool backup_running; /* one Admin.Backup at a time */

    /* --http (srv_http.c) */
    struct MHD_Daemon *http;
    int http_port;
    log_reader *http_rd;        /* its thread's reader, under http_mu */
    pthread_mutex_t http_mu;
    /* events/s per stats line (10 s), the last SRV_RATE_POINTS, under rate_mu */
    pthread_mutex_t rate_mu;
    struct srv_rate {
        double at_s;            /* seconds since start */
        double events_per_s;
    } rate[SRV_RATE_POINTS];
    unsigned rate_n;
    unsigned rate_i;            /* where the next one goes */

    /* statistics (writer thread writes, stats line reads) */
    atomic_ullong st_appends;
    atomic_ullong st_events;
    atomic_ullong st_commits;
    atomic_ullong st_batched;
};

/* ---- srv_rpc.c: calls and replies ---- */

void srv_call_ref(struct srv_call *c);
void srv_call_unref(struct srv_call *c);

/* Starts the final batch: initial metadata (unless c->initial_sent), the
 * message (optional; bb is destroyed here) and the status with detail and
 * optional trailing metadata. Ends the reply chain: its completion
 * (SRV_TAG_FINAL) drops that reference. Any thread, once per call. */
void srv_reply(struct srv_call *c, grpc_byte_buffer *bb, grpc_status_code status,
               const char *detail, const grpc_metadata *trailers, size_t n_trailers);

/* srv_reply_code - srv_reply of an error code mapped through an_err.h. */
void srv_reply_code(struct srv_call *c, int code, const char *detail);

/* srv_reply_op - the reply of an append or delete op (OK or its error). */
void srv_reply_op(struct srv_call *c, const struct srv_wreq *w);

/* The gRPC status of an AN_E* code. */
grpc_status_code srv_status_of(int code);

/* Packs a protobuf-c message into a new byte buffer (NULL on OOM). */
grpc_byte_buffer *srv_pack(const ProtobufCMessage *m);

/* Starts a SEND_MESSAGE (with initial metadata the first time) on the WRITE
 * tag; bb is destroyed here. Returns 0 or -1 (not started). */
int srv_send(struct srv_call *c, grpc_byte_buffer *bb);

/* Starts a RECV_MESSAGE on the READ tag. */
int srv_recv(struct srv_call *c);

/* Puts a streaming call on its CQ's list (shutdown ends it); CQ thread. */
void srv_call_list(struct srv_call *c);

/* ---- srv_writer.c ---- */

int srv_writer_start(struct srv *s);
/* The writer's queue holds at most cfg.max_queue_bytes of requests (a
 * request alone always fits): past it, appends get RESOURCE_EXHAUSTED. */

/* Queues w for the writer (takes ownership). 0, or (the caller keeps w)
 * AN_EUNAVAIL when shutting down, AN_EBUSY when the queue is full. */
int srv_writer_submit(struct srv *s, struct srv_wreq *w);
/* Queues ws[0..n) in order under one lock and one wake-up; *taken gets how
 * many were queued (each then owned by the writer). 0 when all were, else
 * why the rest were not (the caller keeps them): AN_EUNAVAIL (none was
 * queued) or AN_EBUSY (the queue filled at ws[*taken]). */
int srv_writer_submit_many(struct srv *s, struct srv_wreq **ws, size_t n, size_t *taken);
/* Stops taking work, answers the queue UNAVAILABLE, joins. */
void srv_writer_stop(struct srv *s);
void srv_wreq_free(struct srv_wreq *w);
/* The AppendResponse of an op that succeeded. */
void srv_append_response(const struct log_op *op, size_t n_streams,
                         Annals__V1__AppendResponse *out, Annals__V1__StreamResult *sr,
                         Annals__V1__StreamResult **srp);

/* ---- srv_calls.c: the services ---- */

/* A message of events built from their stored bytes: field 1 of
 * ReadResponse and SubscribeResponse alike. */
struct srv_batch {
    uint8_t *buf;
    size_t len;
    size_t cap;
    uint64_t n;                 /* events in it */
    uint64_t want;              /* stop at this many */
    uint64_t last_position;     /* of the last event in it */
    size_t max_bytes;           /* stop at about this size; 0: 64 KiB */
};
/* A log_event_fn: adds the event; false once about 64 KiB or `want`. */
bool srv_batch_add(void *arg, const struct log_event *ev);

/* A message arrived (or NULL: the client half-closed) for call c. */
void srv_on_read(struct srv_call *c, bool ok);
/* A send completed. */
void srv_on_write(struct srv_call *c, bool ok);
/* A new call: dispatch by method. */
void srv_on_new(struct srv_call *c);
/* AppendStream: the writer finished one of the call's requests (takes w).
 * pump false: more of this call's results follow at once, and the last
 * one sends them all (else the first would go out alone, the rest in a
 * second message behind it). */
void srv_astream_result(struct srv_call *c, struct srv_wreq *w, bool pump);
/* Shutdown, after the writer has stopped: ends the streaming calls that
 * would otherwise wait for their clients (idle AppendStreams, subscriptions
 * with a send in flight) with UNAVAILABLE. */
void srv_end_streams(struct srv *s);

/* ---- srv_sub.c: subscriptions ---- */

/* Starts the fan-out threads (after the CQs exist). 0 or an AN_E* code. */
int srv_sub_start(struct srv *s);
/* Shutdown: parked subscriptions end UNAVAILABLE, no more park; joins. */
void srv_sub_stop(struct srv *s);
void srv_sub_free(struct srv *s);
/* The writer made commits durable: wake what waits for the head. Never
 * blocks for long (a store, a short lock, a signal). Writer thread. */
void srv_sub_notify(struct srv *s);
/* Subscribe calls open. */
unsigned srv_sub_active(const struct srv *s);
/* Subscriptions waiting for the catch-up thread. */
size_t srv_sub_catching_up(const struct srv *s);
/* A Subscribe request's shape (what srv_sub_begin checks first): 0, or
 * AN_EINVAL with detail (LOG_DETAIL_MAX) naming the field. Pure; any
 * thread (tests/fuzz/fuzz_rpc_request.c drives it). */
int srv_sub_check(const Annals__V1__SubscribeRequest *r, char *detail);
/* A Subscribe request arrived (c->req unpacked); CQ thread. */
void srv_sub_begin(struct srv_call *c);
/* A subscription's send completed; CQ thread. */
void srv_sub_on_write(struct srv_call *c, bool ok);
/* A Subscribe call's CLOSE fired; CQ thread. */
void srv_sub_on_close(struct srv_call *c);
/* The call is being freed: its subscription lets go of its selection. */
void srv_sub_release(struct srv_call *c);


/* ---- srv_proj.c: projections and view queries ---- */

/* Opens the engine on DATA/projections and starts the view-waiter thread. */
int srv_proj_start(struct srv *s, char *detail);
/* Shutdown: parked view calls end UNAVAILABLE; joins the waiter. */
void srv_proj_stop(struct srv *s);
/* Closes the engine (after every call is over). */
void srv_proj_free(struct srv *s);
/* A Projections.* request arrived; CQ thread. */
void srv_proj_call(struct srv_call *c);
/* What srv_view_begin checks of a GetView/ScanView request: the view's
 * name is set. 0, or AN_EINVAL with detail (LOG_DETAIL_MAX). Pure. */
int srv_view_check(const char *view, char *detail);
/* The engine's view of a request's as_of and min_position (out, with a
 * deadline of now: each attempt sets its own); an instant is mapped to the
 * last position recorded at or before it through rd (not begun; begun and
 * ended here). 0, or the code of the lookup. The caller's thread. */
int srv_view_read_point(log_reader *rd, const Annals__V1__AsOf *as_of, uint64_t min_position,
                        struct proj_read *out);
/* A GetView/ScanView request arrived; CQ thread. */
void srv_view_begin(struct srv_call *c);
/* A ScanView send completed; CQ thread. */
void srv_view_on_write(struct srv_call *c, bool ok);
/* A GetView/ScanView call's CLOSE fired; CQ thread. */
void srv_view_on_close(struct srv_call *c);

/* ---- srv_group.c: consumer groups ---- */

/* Opens DATA/groups, loads the groups, starts their thread. */
int srv_group_start(struct srv *s, char *detail);
/* Shutdown: stops the thread (after the writer). */
void srv_group_stop(struct srv *s);
/* Stores what is left and closes (after every call is over). */
void srv_group_free(struct srv *s);
/* The head moved (writer thread): wake the groups' thread. */
void srv_group_notify(struct srv *s);
/* A Consumers.* unary request arrived (c->req unpacked); CQ thread. */
void srv_group_call(struct srv_call *c);
/* Consume: a message arrived (or the client half-closed); CQ thread. */
void srv_consume_on_read(struct srv_call *c, bool ok);
/* Consume: a send completed; CQ thread. */
void srv_consume_on_write(struct srv_call *c, bool ok);
/* Shutdown: ends a Consume call UNAVAILABLE. */
void srv_consume_end(struct srv_call *c, int code, const char *detail);
/* The call is being freed: a Consume call drops its group. */
void srv_consume_free(struct srv_call *c);
/* CreateGroup's checks of a definition: 0, or AN_EINVAL with detail
 * naming the field and the rule (srv_group_calls.c). */
struct Annals__V1__ConsumerGroup;
int srv_group_check_def(const struct Annals__V1__ConsumerGroup *d, char *detail);
/* Admin.Backup: stores and copies DATA/groups into dest (a new directory). */
int srv_group_backup(struct srv *s, const char *dest, char *detail);
/* /api/groups: {"groups": [{name, checkpoint, head, lag, consumers, ...}]} */
struct json_t;
struct json_t *srv_group_json(struct srv *s);

/* ---- srv_backup.c: Admin.Backup ---- */

/* What srv_backup_begin checks of a request: dest is an absolute path of
 * at most 3000 bytes that does not exist, in an existing directory. 0, or
 * AN_EINVAL with detail (LOG_DETAIL_MAX). Looks at the file system only
 * (stat); any thread. */
struct Annals__V1__BackupRequest;
int srv_backup_check(const struct Annals__V1__BackupRequest *r, char *detail);
/* A Backup request arrived (c->req unpacked): checks it, starts the copy's
 * thread; CQ thread. */
void srv_backup_begin(struct srv_call *c);
/* A progress message's send completed; CQ thread. */
void srv_backup_on_write(struct srv_call *c, bool ok);

/* ---- srv_auth.c: identity and grants ---- */

/* Loads an auth file. 0, or AN_EINVAL/AN_ENOMEM with detail naming the
 * entry and what was wrong. */
int srv_auth_load(const char *path, struct srv_auth **out, char *detail);
/* Loads cfg.auth_file again and swaps it in (SIGHUP). */
int srv_auth_reload(struct srv *s);
/* The current table with a reference (NULL: auth off). */
struct srv_auth *srv_auth_get(struct srv *s);
void srv_auth_unref(struct srv_auth *a);
/* Sets c->principal (and c->auth, c->who): 0, or AN_EAUTH with detail. */
int srv_auth_identify(struct srv_call *c, char *detail);
/* The same once the client certificate's principal is known (cert: "" for
 * none): from c->srv's table and c->md only, no live call needed
 * (tests/fuzz/fuzz_authorize.c). */
int srv_auth_identify_as(struct srv_call *c, const char *cert, char *detail);
/* Whether the call's request is allowed: 0, or AN_EPERM with detail
 * naming the missing grant (refusal logged). After unpacking c->req. */
int srv_authorize(struct srv_call *c, char *detail);
/* The same for one append request (Append, each AppendStream message). */
int srv_authorize_append(struct srv_call *c, const Annals__V1__AppendRequest *r, char *detail);
bool srv_may_stream(const struct srv_call *c, enum srv_act act, const char *stream);
bool srv_may_prefix(const struct srv_call *c, enum srv_act act, const char *prefix);
bool srv_may_named(const struct srv_call *c, enum srv_act act, const char *name);
bool srv_may_admin(const struct srv_call *c);
/* Consume and GetGroup: 0, or AN_EPERM with detail (refusal logged). */
int srv_authorize_group(struct srv_call *c, const char *group, bool admin_only, char *detail);
/* Logs one refusal (rate-limited; never a token or a payload). */
void srv_auth_refused(const char *principal, int code, const char *method,
                      const char *resource, const char *reason);
/* --http: 0 when auth is off or the Authorization header carries an admin
 * principal's bearer token; else AN_EAUTH or AN_EPERM with detail. */
int srv_auth_http(struct srv *s, const char *authorization, const char *url, char *detail);

/* ---- srv_http.c: metrics, the admin page ---- */

int srv_http_start(struct srv *s, char *detail);
void srv_http_stop(struct srv *s);
void srv_http_free(struct srv *s);
/* Whether HOST of HOST:PORT is a loopback address (srv_rpc.c). */
bool srv_loopback(const char *listen);

/* One --http request as srv_http.c's MHD callback sees it; every string
 * borrowed for the call, NULL where the request has none. */
struct srv_http_req {
    const char *method;         /* "GET", ... */
    const char *url;            /* the path, without the query */
    const char *authorization;  /* the Authorization header */
    const char *prefix;         /* /api/streams' query arguments, decoded */
    const char *after;
    const char *limit;
};

/* Its answer. body is malloc'd when owned (the caller frees it), else
 * static; type is static. */
struct srv_http_resp {
    unsigned status;            /* 200, 400, 401, 403, 404, 405 or 500 */
    const char *type;           /* the Content-Type */
    char *body;
    size_t len;
    bool owned;
};

/* Answers q against s (auth, routing, the bodies) without a connection:
 * the MHD callback is a wrapper over it, and tests/fuzz/fuzz_http_request.c
 * drives it. Needs s->log, s->proj, s->groups, s->http_rd (under
 * s->http_mu), s->rate_mu and s->auth_mu; out is always filled. Any
 * thread (the HTTP thread in annalsd). */
void srv_http_handle(struct srv *s, const struct srv_http_req *q, struct srv_http_resp *out);

#endif /* SRV_INT_H */

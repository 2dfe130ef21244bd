/*
 * an_int.h - what the files of libannals share: the client struct, the
 * error filling, request packing and the gRPC plumbing helpers.
 *
 * Nothing outside client/ includes this header.
 */
#ifndef AN_INT_H
#define AN_INT_H

#include <pthread.h>

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "annals.h"
#include "annals/v1/commands.pb-c.h"

#define AN__CQ_POOL 64

/*
 * One server of the client's target list, with its channel and breaker
 * (an_resilience.c).
 */
struct an__ep {
    char *target;               /* "host:port", owned */
    grpc_channel *channel;      /* thread-safe; destroyed by an_close */

    /* Access to the fields below is protected by the client's mu. */
    bool up;                    /* the last health check said SERVING */
    int state;                  /* enum an_breaker_state */
    int fails;                  /* consecutive failed attempts */
    int probes;                 /* HALF_OPEN: probes out */
    uint64_t gen;               /* bumped on every breaker transition */
    int64_t opened_at_ms;       /* monotonic, when it last went OPEN */

    /* Sent with every call (the client's bearer token): points into the
     * client, fixed after an_connect. */
    grpc_metadata *md;
    size_t n_md;                /* <= AN__EP_MD_MAX */

    /* Pluck queues a finished unary call left behind, for the next one
     * (an__ep_cq_take / _give): making and shutting down a queue per call
     * costs about a tenth of a unary call's instructions. */
    pthread_mutex_t cq_mu;
    grpc_completion_queue *cqs[AN__CQ_POOL];
    unsigned n_cqs;
};

#define AN__EP_MD_MAX 1

/* Puts the endpoint's call metadata (authorization) on a
 * SEND_INITIAL_METADATA op. */
static inline void an__ep_md(const struct an__ep *ep, grpc_op *op)
{
    op->data.send_initial_metadata.count = ep->n_md;
    op->data.send_initial_metadata.metadata = ep->md;
}

struct an_client {
    struct an__ep *eps;         /* n_eps >= 1; fixed after an_connect */
    size_t n_eps;

    /* Settings, fixed after an_connect (all > 0 unless noted). */
    int64_t timeout_ms;         /* deadline of a whole call, retries included */
    int64_t attempt_timeout_ms; /* deadline of one attempt of a unary call */
    int max_retries;            /* >= 0 */
    int64_t backoff_base_ms;
    int64_t retry_max_total_ms; /* no retry starts later than this after the call */
    int breaker_threshold;      /* <= 0: no breaker */
    int64_t breaker_cooldown_ms;
    int breaker_probes;
    int64_t health_interval_ms; /* <= 0: no health thread */
    void (*on_breaker)(void *arg, const char *endpoint, int from_state, int to_state);
    int (*get_stream_fallback)(void *arg, const char *stream, struct an_stream_info *out);
    int (*read_fallback)(void *arg, const struct an_read_req *req, an_iter *it);
    void *cb_arg;
    grpc_metadata auth_md;      /* "authorization: Bearer T" when a token is set */
    bool has_auth_md;

    pthread_mutex_t mu;         /* protects the eps' breaker fields, rr, stop */
    pthread_cond_t cv;          /* wakes the health thread for an_close (monotonic) */
    unsigned rr;                /* round-robin cursor into eps */
    bool stop;                  /* the health thread must leave */
    bool health_running;        /* owner (an_connect / an_close) only */
    pthread_t health;
};

/* A unary attempt's hold on an endpoint (an__ep_acquire / _release). */
struct an__lease {
    struct an__ep *ep;
    bool probe;                 /* a HALF_OPEN probe */
    uint64_t gen;               /* ep->gen when taken */
};

/* Method paths of the contract's services. */
#define AN__M_APPEND "/annals.v1.Commands/Append"
#define AN__M_APPEND_STREAM "/annals.v1.Commands/AppendStream"
#define AN__M_DELETE_STREAM "/annals.v1.Commands/DeleteStream"
#define AN__M_READ_STREAM "/annals.v1.Queries/ReadStream"
#define AN__M_READ_ALL "/annals.v1.Queries/ReadAll"
#define AN__M_GET_STREAM "/annals.v1.Queries/GetStream"
#define AN__M_SUBSCRIBE "/annals.v1.Queries/Subscribe"
#define AN__M_HEALTH_CHECK "/grpc.health.v1.Health/Check"

/* ---- errors ---- */

/*
 * an__err_set - fills *err (NULL ok) with a client-side failure: code, the
 * status (0 when none arrived) and a printf-style detail. Returns code.
 */
int an__err_set(struct an_error *err, int code, int grpc_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * an__err_from_status - the AN_E* code of a finished call's status; fills
 * *err (NULL ok) from the status, its details and, for ABORTED, the
 * "annals-stream" / "annals-actual-version" trailers. OK returns 0 and
 * leaves *err alone.
 */
int an__err_from_status(struct an_error *err, grpc_status_code status, grpc_slice details,
                        const grpc_metadata_array *trailers);

/* ---- time ---- */

/* an__deadline - a monotonic deadline ms from now; ms <= 0: none. */
gpr_timespec an__deadline(int64_t ms);

/* ---- messages ---- */

/*
 * an__pack_append - packs an AppendRequest of the given streams into a
 * byte buffer (caller owns, grpc_byte_buffer_destroy); with
 * correlation_id != 0 it is wrapped in an AppendStreamRequest. Returns 0,
 * AN_EINVAL (NULL array with a non-zero count; detail in err), AN_ENOMEM.
 */
int an__pack_append(const struct an_stream_append *streams, size_t n_streams,
                    uint64_t correlation_id, grpc_byte_buffer **out, struct an_error *err);

/*
 * an__pack_append_ids - an__pack_append, but an event without an id gets
 * the next 16 bytes of gen_ids (one slot per event of the request, in
 * order; NULL: ids stay absent).
 */
int an__pack_append_ids(const struct an_stream_append *streams, size_t n_streams,
                        uint64_t correlation_id, const uint8_t *gen_ids,
                        grpc_byte_buffer **out, struct an_error *err);

/* an__pack - packs any message into a byte buffer (caller owns). NULL: ENOMEM. */
grpc_byte_buffer *an__pack(const ProtobufCMessage *m);

/*
 * an__unpack - unpacks a received buffer as `desc`; the buffer stays the
 * caller's. Returns the message (free with protobuf_c_message_free_unpacked)
 * or NULL when the bytes do not parse.
 */
ProtobufCMessage *an__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);
/* The same with protobuf-c's allocator `alloc` (NULL: malloc); what it
 * allocates is the allocator's to free. */
ProtobufCMessage *an__unpack_with(const ProtobufCMessageDescriptor *desc,
                                  ProtobufCAllocator *alloc, grpc_byte_buffer *bb);

/*
 * An arena for unpacking one received message at a time (an_arena.c):
 * unpack with &arena.alloc; everything it allocated goes at the next
 * an__arena_reset (nothing of the message may be used after it). One
 * thread at a time.
 */
struct an__arena {
    ProtobufCAllocator alloc;   /* allocator_data is the arena itself */
    uint8_t *base;
    size_t cap;
    size_t used;
    void **extra;               /* what did not fit in base */
    size_t n_extra;
    size_t cap_extra;
    size_t extra_bytes;
};

void an__arena_init(struct an__arena *a);
void an__arena_reset(struct an__arena *a);
/* Frees everything; init again before another use. */
void an__arena_destroy(struct an__arena *a);

/* an__bb_slice - the bytes of bb in one slice (a reference of the
 * caller's); bb stays the caller's. */
grpc_slice an__bb_slice(grpc_byte_buffer *bb);

/* an__result_from - copies an AppendResponse into the public result. */
void an__result_from(const Annals__V1__AppendResponse *r, struct an_append_result *res);

/* an__as_of - fills *m from the public as-of; NULL when it names no point. */
Annals__V1__AsOf *an__as_of(const struct an_as_of *a, Annals__V1__AsOf *m);

/* ---- calls ---- */

/*
 * an__unary_msg - one unary call (an_client.c): packs `in`, runs it with
 * the client's deadlines, breaker and (with retry) retries, and unpacks the
 * reply with out_desc into *out (caller frees with
 * protobuf_c_message_free_unpacked). Returns 0 or the call's code (err
 * filled).
 */
int an__unary_msg(an_client *c, const char *method, const ProtobufCMessage *in, bool retry,
                  const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out,
                  struct an_error *err);

/*
 * an__server_stream - one server-streaming call (an_view.c): sends req,
 * hands each message's bytes to fn, each wait for the next message bounded
 * by wait_ms; never retried. fn returns 0 to go on, > 0 to stop (the call
 * is cancelled; not an error), < 0 an error code (err filled by fn).
 * Returns 0, fn's error, or the call's code.
 */
typedef int (*an__msg_fn)(void *arg, const uint8_t *p, size_t len, struct an_error *err);
int an__server_stream(an_client *c, const char *method, const ProtobufCMessage *req,
                      int64_t wait_ms, an__msg_fn fn, void *arg, struct an_error *err);

/*
 * an__call_new_ep - a call on one endpoint's channel, bound to cq, with
 * the given deadline. method is copied. NULL when gRPC refuses.
 */
grpc_call *an__call_new_ep(const struct an__ep *ep, grpc_completion_queue *cq,
                           const char *method, gpr_timespec deadline);

/*
 * an__health_once - one grpc.health.v1 Check on ep, bounded by
 * timeout_ms, bypassing the breaker. Returns 0 (*serving set) or a code.
 */
int an__health_once(an_client *c, struct an__ep *ep, int64_t timeout_ms, bool *serving);

/*
 * an__cq_free - shuts a completion queue down, drains it and destroys it
 * (pluck: made by _create_for_pluck). Every call bound to it must be
 * unref'd first, and every tag started on a pluck queue plucked. NULL ok.
 */
void an__cq_free(grpc_completion_queue *cq, bool pluck);

/* ---- resilience (an_resilience.c) ---- */

/* an__now_ms - monotonic milliseconds. */
int64_t an__now_ms(void);

/* an__uuid7 - a time-ordered (version 7) UUID: the unix milliseconds, then
 * 74 random bits. Ids made close in time sort close together, so the
 * server's id index takes them near its right edge instead of in a random
 * page each (server/log/log.h, "ids"). */
void an__uuid7(uint8_t out[16]);

/* an__transient - whether a code counts as a breaker failure and may be
 * retried: AN_EUNAVAIL (transport failures included), AN_EDEADLINE, and
 * AN_ECANCELLED (a call libannals did not cancel: cut off by the peer). */
bool an__transient(int rc);

/*
 * an__backoff - sleeps a full-jitter backoff before retry `attempt` (0:
 * the first retry) and returns true, or returns false at once when the
 * sleep would end at or after until_ms (monotonic).
 */
bool an__backoff(an_client *c, int attempt, int64_t until_ms);

/*
 * an__eps_parse - splits "h1:p,h2:p" into endpoints (no channels yet; all
 * up and CLOSED). Returns 0, AN_EINVAL (an empty entry), AN_ENOMEM.
 */
int an__eps_parse(const char *targets, struct an__ep **out, size_t *n_out);

/* an__eps_free - destroys the channels and frees the array. NULL ok. */
void an__eps_free(struct an__ep *eps, size_t n);

/*
 * an__ep_acquire - leases the next endpoint (round-robin) that is up and
 * whose breaker admits a call. Returns 0, AN_ECIRCUIT (some are up, all
 * such breakers refuse), AN_EUNAVAIL (all down). Every 0 needs exactly
 * one an__ep_release with the attempt's code.
 * AN__ABANDONED (the caller gave the call up) frees a probe slot and
 * counts neither way.
 */
int an__ep_acquire(an_client *c, struct an__lease *l);
#define AN__ABANDONED 1 /* an__ep_release: the caller gave the call up */
void an__ep_release(an_client *c, const struct an__lease *l, int rc);

/*
 * an__ep_report - counts one outcome of ep outside a lease (a long-lived
 * call that ended after its lease did): as an__ep_release with a lease
 * that is no probe, taken now.
 */
void an__ep_report(an_client *c, struct an__ep *ep, int rc);

/* an__health_start / _stop - the health thread (only with >= 2 endpoints). */
int an__health_start(an_client *c);
void an__health_stop(an_client *c);

#endif /* AN_INT_H */

/*
 * annals.h - libannals, the C client of an Annals server (annalsd), on
 * gRPC core's C API.
 *
 * The tests, the benchmarks and the `annals` CLI talk to annalsd only
 * through this header. Every call is blocking, takes the client's default
 * deadline unless told otherwise, and returns 0 or a negative AN_E* code
 * (an_err.h). A failed call fills the optional `struct an_error` with what
 * the server said: the gRPC status, its detail text, and for a failed
 * expectation (AN_ECONFLICT) the stream and its actual version, as data.
 *
 * Deadlines: a unary call, retries included, ends within the client's
 * timeout; each attempt gets the attempt timeout (an_client_opts) as its
 * gRPC deadline.
 * Streaming calls (reads, the appender) have no deadline of their own, as
 * they may rightly run for long; instead each wait for the server is
 * bounded by the timeout (see an_iter_next, an_appender_open), and a
 * server silent for longer gets the call cancelled with AN_EDEADLINE.
 * A subscription is the exception: silence is normal there, so each wait
 * is bounded by the caller's timeout_ms instead (an_sub_next), and the call
 * lives until it is closed.
 *
 * Strings: a NULL string in a request is sent as "" (which the server
 * rejects where a value is required).
 *
 * Threads: an an_client may be used by any number of threads at once. An
 * an_iter, an an_appender or an an_sub belongs to one thread at a time.
 *
 * Ownership: everything passed in is borrowed for the duration of the call
 * (for an_appender_submit: until the call returns; the request is packed
 * before). Everything handed out is owned by the object that handed it out,
 * and its lifetime is stated at each function.
 */
#ifndef ANNALS_H
#define ANNALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "an_err.h"
#include "annals/v1/event.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "annals/v1/consumers.pb-c.h"

typedef struct an_client an_client;
typedef struct an_iter an_iter;
typedef struct an_appender an_appender;
typedef struct an_sub an_sub;

/* ---- errors ---- */

#define AN_DETAIL_MAX 512u

struct an_error {
    int code;                   /* the AN_E* code the call returned */
    int grpc_status;            /* the server's status (0 when none arrived) */
    char detail[AN_DETAIL_MAX]; /* the server's detail text, or the client's */
    char stream[256];           /* AN_ECONFLICT: the stream, decoded */
    int64_t actual_version;     /* AN_ECONFLICT: its last version, -1: none */
};

/*
 * an_code_from_status - the AN_E* code for a gRPC status code, as the
 * server maps them (an_err.h): ABORTED -> AN_ECONFLICT, ALREADY_EXISTS ->
 * AN_EEXIST, FAILED_PRECONDITION -> AN_ETOMBSTONED, NOT_FOUND ->
 * AN_ENOTFOUND, INVALID_ARGUMENT -> AN_EINVAL, RESOURCE_EXHAUSTED ->
 * AN_ETOOBIG, UNAVAILABLE -> AN_EUNAVAIL, DEADLINE_EXCEEDED -> AN_EDEADLINE,
 * CANCELLED -> AN_ECANCELLED, UNIMPLEMENTED -> AN_EUNIMPL, PERMISSION_DENIED
 * -> AN_EPERM, UNAUTHENTICATED -> AN_EAUTH, DATA_LOSS ->
 * AN_ECORRUPT, anything else -> AN_EINTERNAL. 0 for OK.
 */
int an_code_from_status(int grpc_status);

/* ---- connecting ---- */

/* States of an endpoint's circuit breaker (an_breaker_state). */
enum an_breaker_state {
    AN_BREAKER_CLOSED = 0,      /* calls flow */
    AN_BREAKER_OPEN = 1,        /* calls fail fast with AN_ECIRCUIT */
    AN_BREAKER_HALF_OPEN = 2,   /* after the cool-down: a few probes pass */
};

struct an_stream_info;

/* What a read asked for, as sent (read_fallback): exactly one is set. */
struct an_read_req {
    const Annals__V1__ReadStreamRequest *stream; /* an_read_stream's request */
    const Annals__V1__ReadAllRequest *all;       /* an_read_all's request */
};

/*
 * Client options. All-zero means the defaults, so always start from
 * `struct an_client_opts o = {0};`. Negative durations are AN_EINVAL
 * unless a field says otherwise.
 *
 * Retries (unary calls): an attempt that ends UNAVAILABLE (a transport
 * failure included), DEADLINE_EXCEEDED (the attempt's deadline), or
 * CANCELLED (libannals never cancels a unary call, so the connection or a
 * server shutting down cut it off) is retried after a backoff drawn
 * uniformly from [0, backoff_base_ms * 2^n] (full jitter), at most
 * max_retries times, while the retry would start within
 * retry_max_total_ms of the call's start and the call's timeout_ms has
 * not passed. Only safe calls are retried: an_get_stream, an_health, and
 * an_append (the client gives every event without an id a UUID v7 id,
 * time-ordered with 74 random bits, and the server answers an exact
 * repeat with the original positions). an_delete_stream and an_call_raw are never retried. Reads
 * (an_read_stream / an_read_all) are retried by an_iter_next while no
 * event has been handed out. No other status is ever retried. When the
 * retries of a call that was cut off midway (CANCELLED, DEADLINE_EXCEEDED)
 * fail too, the call reports that first cut-off attempt's code, so an
 * AN_EUNAVAIL append was never stored.
 *
 * Breaker (per endpoint): breaker_threshold consecutive failed attempts
 * (the three statuses above) open it; while open, calls that
 * would go to it fail at once with AN_ECIRCUIT. After breaker_cooldown_ms
 * it lets breaker_probes calls through (half-open): a probe's success
 * closes it, a failure opens it again.
 */
struct an_client_opts {
    int64_t timeout_ms;         /* deadline of a call, retries included; 0: 10 000 */
    int64_t attempt_timeout_ms; /* deadline of one attempt; 0: timeout_ms / (retries + 1) */
    int max_retries;            /* 0: 3; < 0: no retries */
    int64_t backoff_base_ms;    /* 0: 25 */
    int64_t retry_max_total_ms; /* 0: 2000 */
    int breaker_threshold;      /* consecutive failures; 0: 5; < 0: no breaker */
    int64_t breaker_cooldown_ms; /* 0: 1000 */
    int breaker_probes;         /* calls let through while half-open; 0: 1 */
    int64_t health_interval_ms; /* with >= 2 endpoints; 0: 500; < 0: no health checks */

    /*
     * Optional. Called on every breaker transition, with the endpoint as
     * given to an_connect (borrowed, valid while the client lives) and
     * the states (enum an_breaker_state). Runs on the thread whose call
     * caused it, with no lock held: it may call an_breaker_state, and
     * must be thread-safe when the client is shared.
     */
    void (*on_breaker)(void *arg, const char *endpoint, int from_state, int to_state);

    /*
     * Optional. When an_get_stream finds every endpoint's breaker open
     * (it would return AN_ECIRCUIT), it returns this function's result
     * instead, and *out as it leaves it (e.g. from a cache). Same thread
     * rules as on_breaker.
     */
    int (*get_stream_fallback)(void *arg, const char *stream, struct an_stream_info *out);

    /*
     * Optional: the fallback of reads. When a read (an_read_stream,
     * an_read_all) would fail with AN_ECIRCUIT before it has handed out
     * an event (no endpoint's breaker admits it, when it starts or when
     * it would be retried), an_iter_next calls this once instead, with the
     * request as it would have been sent (borrowed for the call) and the
     * iterator. It may supply events with an_iter_supply (e.g. from a
     * cache or a store it knows), which the iterator then hands out in
     * that order, and its return ends the read after them: 0, a normal
     * end (an_iter_next returns 0), or a negative code, which an_iter_next
     * returns with err->detail "read fallback: ..." (AN_ECIRCUIT: decline).
     * A read that has handed out events, or fails any other way, never
     * falls back: the caller would otherwise get two histories spliced.
     * Runs on the thread calling an_iter_next, with no lock held; must be
     * thread-safe when the client is shared. It must not free the iterator.
     */
    int (*read_fallback)(void *arg, const struct an_read_req *req, an_iter *it);

    void *arg;                  /* passed to on_breaker and the fallbacks */

    /*
     * Security (optional). tls_ca_file: PEM roots that verify the server;
     * set, the client speaks TLS (else plaintext). tls_cert_file and
     * tls_key_file: this client's certificate and key, for a server that
     * requires them (mTLS). token: sent with every call as
     * "authorization: Bearer TOKEN"; NULL: the ANNALS_TOKEN environment
     * variable, if set. The files are read by an_connect.
     */
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *token;
};

/*
 * an_connect - a client for `target` ("host:port", or several joined by
 * commas: "h1:7400,h2:7400", one channel each), plaintext. Connects
 * lazily: an unreachable server shows as AN_EUNAVAIL on the first call
 * (calls fail fast; they do not wait for the server to come up). After a
 * failed connect the client retries at most a second later, so polling
 * an_health finds a server that has just started (or restarted). Each
 * client has its own connection. The first call initialises gRPC and sets
 * GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=100 in the environment
 * unless it is set already (see an_client.c). opts may be NULL. Returns 0, AN_EINVAL (NULL or empty
 * target or an empty entry in it, a negative option), AN_ENOMEM. *out on
 * success only.
 *
 * With several endpoints, unary calls go round-robin over the endpoints
 * that are up and whose breaker admits them; a thread checks
 * grpc.health.v1 on each endpoint every health_interval_ms and marks it up
 * or down (an_close stops it). When no endpoint qualifies, a call fails at
 * once: AN_EUNAVAIL when all are down, else AN_ECIRCUIT. An iterator, an
 * appender or a subscription picks one endpoint (the same way) when it
 * opens and keeps it.
 */
int an_connect(const char *target, const struct an_client_opts *opts, an_client **out);

/* an_close - closes the client; every iterator and appender first. Stops
 * and joins the health thread. NULL ok. */
void an_close(an_client *c);

/*
 * an_breaker_state - the breaker state (enum an_breaker_state) of
 * `endpoint`, spelled as in the target given to an_connect; NULL: the
 * first endpoint. Returns AN_EINVAL for an unknown endpoint. Any thread.
 */
int an_breaker_state(an_client *c, const char *endpoint);

/* ---- appending ---- */

enum an_expect {
    AN_EXPECT_ANY = 0,
    AN_EXPECT_NO_STREAM = 1,
    AN_EXPECT_STREAM_EXISTS = 2,
    AN_EXPECT_VERSION = 3,
};

struct an_event {
    const uint8_t *id;          /* 16 bytes, or NULL: an_append makes a random UUID
                                 * v4 (so a retry is exact); the appender lets the
                                 * server make one */
    const char *type;
    const void *data;
    size_t data_len;
    const void *metadata;
    size_t metadata_len;
    const char *content_type;   /* NULL: application/octet-stream */
    uint32_t schema_version;
};

struct an_stream_append {
    const char *stream;
    enum an_expect expect;
    uint64_t expected_version;
    const struct an_event *events;
    size_t n_events;
};

#define AN_APPEND_MAX_STREAMS 64u /* results reported per append */

struct an_append_result {
    uint64_t first_position;
    uint64_t last_position;
    int64_t recorded_at_ns;
    size_t n_streams;           /* min(streams in the request, AN_APPEND_MAX_STREAMS) */
    struct {
        uint64_t first_version;
        uint64_t last_version;
    } streams[AN_APPEND_MAX_STREAMS];
};

/*
 * an_append - Commands.Append: all or nothing across the given streams.
 * res and err may be NULL. Returns 0, or the code of the server's status
 * (AN_ECONFLICT with err->stream / err->actual_version, AN_EEXIST,
 * AN_ETOMBSTONED, AN_EINVAL, AN_ETOOBIG, AN_EUNAVAIL, AN_EDEADLINE, ...),
 * or AN_ECIRCUIT (no endpoint's breaker admits the call; nothing sent).
 * Retried as the options say; an acknowledged append is stored once.
 * The client itself checks only what it cannot encode: AN_EINVAL for a
 * NULL array with a non-zero count (err->grpc_status 0); everything else
 * (no streams, no events, ...) is sent for the server to judge.
 */
int an_append(an_client *c, const struct an_stream_append *streams, size_t n_streams,
              struct an_append_result *res, struct an_error *err);

/*
 * an_delete_stream - Commands.DeleteStream. *position (optional) gets the
 * deletion's global position.
 */
int an_delete_stream(an_client *c, const char *stream, enum an_expect expect,
                     uint64_t expected_version, bool tombstone, uint64_t *position,
                     struct an_error *err);

/* ---- the pipelined appender (Commands.AppendStream) ---- */

/*
 * Called once per submitted append, on the appender's own thread, with the
 * submit's correlation id and the outcome: rc 0 and res, or rc < 0 and err
 * (the AppendError the server sent, or the call's failure). Both pointers
 * are valid only during the callback. Results may come in any order. The
 * callback must not call an_appender_submit or an_appender_close (the
 * thread that would make room for them is the one running it).
 */
typedef void (*an_append_cb)(void *arg, uint64_t correlation_id, int rc,
                             const struct an_append_result *res, const struct an_error *err);

/*
 * an_appender_open - opens one AppendStream call that keeps up to
 * max_in_flight appends in progress (0: 64; at most 65536, larger values
 * are clamped). Waits, up to the client's timeout, until the call's
 * headers are sent, so an unreachable server shows here. The call has no
 * deadline; instead, while an append awaits its result (or close awaits
 * the end), the server must produce a result within the client's timeout
 * of the previous one, else the call is cancelled and every append left
 * gets AN_EDEADLINE. cb is required, arg is passed to it. Returns 0,
 * AN_EINVAL, AN_ECIRCUIT (no endpoint's breaker admits a call: nothing
 * sent, no network wait), AN_EUNAVAIL (every endpoint is down, or the
 * server could not be reached; or the code of the status that ended the
 * call), AN_ENOMEM. *out on success only.
 *
 * Breaker: the appender takes its endpoint as a unary call does (up, and
 * its breaker admits a call; a half-open breaker lets it through as a
 * probe) and keeps it for its life. A failed open counts as a failure of
 * that endpoint; the first AppendResult counts as a success; a call that
 * ends UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED counts as a failure.
 *
 * Under load, appends queued behind a send in flight go out together in
 * one message, and results come back together ("batched messages" in
 * commands.proto), when the server says it takes them; each append keeps
 * its own checks, order, result and callback.
 */
int an_appender_open(an_client *c, unsigned max_in_flight, an_append_cb cb, void *arg,
                     an_appender **out);

/*
 * an_appender_submit - sends one append; blocks while max_in_flight are in
 * progress. *correlation_id (optional) gets its id (1, 2, ...). Returns 0,
 * or AN_EUNAVAIL / AN_ECANCELLED (or the code of the status that ended the
 * call, e.g. AN_EDEADLINE) once the call has failed (then the callback has
 * run, or will run, with that code for every append left without a
 * result), or AN_EINVAL / AN_ENOMEM before anything was sent. On an error
 * the append was not sent, no callback runs for it and no id is used.
 */
int an_appender_submit(an_appender *a, const struct an_stream_append *streams, size_t n_streams,
                       uint64_t *correlation_id);

/*
 * an_appender_close - half-closes the call (after the queued appends are
 * sent), waits until every submitted append has had its callback and the
 * call has ended, joins the appender's thread and frees the appender.
 * Returns 0 when the call ended OK, else its code (AN_EINTERNAL if the
 * server ended it OK while appends still lacked a result). NULL ok.
 */
int an_appender_close(an_appender *a);

/* ---- reading ---- */

/* An as-of point: neither set means the present. */
struct an_as_of {
    bool has_position;
    uint64_t position;
    bool has_time;
    int64_t unix_nanos;
};

struct an_read_stream_opts {
    const char *stream;
    uint64_t from_version;
    bool backwards;
    bool from_end;
    uint32_t max_count;         /* 0: no limit */
    struct an_as_of as_of;
};

struct an_read_all_opts {
    uint64_t from_position;
    bool backwards;
    bool from_end;
    uint32_t max_count;
    const char *const *stream_prefixes;
    size_t n_stream_prefixes;
    const char *const *event_types;
    size_t n_event_types;
    struct an_as_of as_of;
};

/*
 * an_read_stream / an_read_all - start Queries.ReadStream / ReadAll and
 * return an iterator over the events (caller owns; an_iter_free). The
 * request is sent before return; the call's errors (e.g. NOT_FOUND,
 * AN_EUNAVAIL) arrive through an_iter_next. Returns 0, AN_ENOMEM,
 * AN_EINVAL (NULL opts, a NULL filter array or entry), AN_EINTERNAL.
 */
int an_read_stream(an_client *c, const struct an_read_stream_opts *o, an_iter **out);
int an_read_all(an_client *c, const struct an_read_all_opts *o, an_iter **out);

/*
 * an_iter_next - the next event: returns 1 and *ev (owned by the iterator,
 * valid until the next an_iter_next or an_iter_free), 0 at the end of the
 * read (status OK), or a negative code with err filled (optional). After
 * the end it keeps returning the same 0 or code. When the server sends
 * nothing (neither the next message nor the status) within the client's
 * timeout, the call is cancelled and the read fails with AN_EDEADLINE;
 * time spent by the caller between calls does not count. Until the first
 * event is handed out, each wait is bounded by the attempt timeout
 * instead, and a read failing UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED
 * is started again as the retry options allow; with no endpoint admitting
 * it, the read fails at once with AN_ECIRCUIT (or AN_EUNAVAIL).
 */
int an_iter_next(an_iter *it, const Annals__V1__RecordedEvent **ev, struct an_error *err);

/*
 * an_iter_supply - inside read_fallback only (an_client_opts): adds a copy
 * of *ev to the events the iterator hands out. ev is borrowed for the call;
 * the copy lives until an_iter_free. Returns 0, AN_EINVAL (NULL, or `it`
 * is not in its read_fallback), AN_ENOMEM.
 */
int an_iter_supply(an_iter *it, const Annals__V1__RecordedEvent *ev);

/* an_iter_free - cancels the call if it is still running, frees. NULL ok. */
void an_iter_free(an_iter *it);

struct an_stream_info {
    uint64_t last_version;
    uint64_t event_count;
    uint64_t first_position;
    uint64_t last_position;
    int64_t created_unix_nanos;
    int64_t updated_unix_nanos;
    bool deleted;
    bool tombstoned;
};

/*
 * an_get_stream - Queries.GetStream. Returns 0, AN_ENOTFOUND, ...,
 * AN_ECIRCUIT (or get_stream_fallback's result when that is set).
 */
int an_get_stream(an_client *c, const char *stream, const struct an_as_of *as_of,
                  struct an_stream_info *out, struct an_error *err);

/* ---- subscribing (Queries.Subscribe) ---- */

/*
 * What to subscribe to. All-zero (with stream NULL) is every event from
 * the first. The server rejects, with AN_EINVAL, a stream together with a
 * filter or from_position, from_version without a stream, and from_end
 * with a non-zero from_position or from_version.
 *
 * Resuming: an all-streams subscription resumes exactly after what it
 * delivered with from_position = an_sub_checkpoint() + 1 (and the same
 * filter); a single-stream one with from_version = the last event's
 * stream_version + 1.
 */
struct an_subscribe_opts {
    const char *stream;         /* NULL or "": all streams */
    uint64_t from_position;     /* all streams: first position (inclusive); 0 and 1: the first */
    uint64_t from_version;      /* one stream: first version (inclusive, 0-based); a
                                 * stream not yet written is waited for */
    bool from_end;              /* only events committed after the subscription starts */
    const char *const *stream_prefixes; /* all streams: any of these prefixes ... */
    size_t n_stream_prefixes;
    const char *const *event_types;     /* ... and any of these types (none: all) */
    size_t n_event_types;
};

/* What an_sub_next hands out. */
enum an_sub_kind {
    AN_SUB_EVENT = 1,           /* an event */
    AN_SUB_CAUGHT_UP = 2,       /* the stored history has been delivered (once) */
    AN_SUB_CHECKPOINT = 3,      /* no event, but the server has looked this far */
};

/* an_sub_next: the distinct return for "nothing yet, still subscribed". */
#define AN_SUB_TIMEOUT 0

struct an_sub_item {
    enum an_sub_kind kind;
    const Annals__V1__RecordedEvent *event; /* AN_SUB_EVENT, else NULL; owned by the
                                             * an_sub, valid until the next an_sub_next
                                             * or an_sub_close */
    uint64_t checkpoint;        /* an_sub_checkpoint() after this item */
};

/*
 * an_subscribe - starts Queries.Subscribe and returns the subscription
 * (caller owns; an_sub_close). The request is sent before return; the
 * server's refusals arrive through an_sub_next: AN_EINVAL (a bad mix of
 * options, detail names it), AN_EBUSY (the server's --max-subscriptions is
 * reached: RESOURCE_EXHAUSTED). Returns 0, AN_EINVAL (NULL c, o or out, a
 * NULL filter array or entry), AN_ECIRCUIT / AN_EUNAVAIL (no endpoint
 * admits a call, as for unary calls: nothing sent), AN_ENOMEM,
 * AN_EINTERNAL. *out on success only.
 *
 * A subscription that is not read holds data in this process's gRPC
 * transport (up to its flow-control window): a process with a thousand
 * unread subscriptions was measured to slow its own other calls to
 * seconds, while other processes were served normally. Read them, or
 * close them.
 *
 * A subscription has no deadline: it runs until an_sub_close, or until
 * the server or the connection ends it (the server's shutdown:
 * AN_EUNAVAIL). It is never retried or reconnected by libannals, because
 * where to resume is the caller's decision (its own stored checkpoint,
 * maybe on another endpoint): after an error, subscribe again from
 * an_sub_checkpoint() + 1. The endpoint is taken as for a read (breaker:
 * the first message counts as a success; a failed or cut-off call, as a
 * failure).
 */
int an_subscribe(an_client *c, const struct an_subscribe_opts *o, an_sub **out);

/*
 * an_sub_next - the next item, waiting at most timeout_ms for it (< 0:
 * without limit; 0: only what has arrived). Returns 1 with *out filled:
 * the events in global_position order, each selected event exactly once
 * (history, then live, with no gap or repeat between them), and, once, a
 * AN_SUB_CAUGHT_UP item when the history has been delivered (at once for
 * from_end); while live with a filter that selects little, AN_SUB_CHECKPOINT
 * items say how far the server has looked. Returns AN_SUB_TIMEOUT (0) when
 * nothing came within timeout_ms: the subscription goes on, call again.
 * Returns a negative code when the subscription is over (err filled,
 * optional), and the same code on every later call: AN_EINVAL, AN_EBUSY,
 * AN_EUNAVAIL (server shutdown, connection lost), AN_ECANCELLED,
 * AN_EINTERNAL (also a server ending it with OK, which annalsd never
 * does), ...
 *
 * Flow control: the server sends a message only after the previous one
 * was received, and a caller that stops calling holds it back (it keeps
 * reading from disk later; nothing queues up). The timeout is the caller's
 * idle wait; a server that is stopped (not dead) shows as timeouts.
 */
int an_sub_next(an_sub *s, int timeout_ms, struct an_sub_item *out, struct an_error *err);

/*
 * an_sub_checkpoint - a global position up to which every selected event
 * has been handed out by an_sub_next (0: none yet). It never decreases.
 * For an all-streams subscription, resume with from_position = this + 1.
 */
uint64_t an_sub_checkpoint(const an_sub *s);

/* an_sub_close - cancels the call (the server frees its side at once) and
 * frees the subscription. NULL ok. */
void an_sub_close(an_sub *s);

/*
 * an_health - grpc.health.v1.Health/Check for the whole server: *serving
 * gets true for SERVING. Returns 0 or the call's code.
 */
int an_health(an_client *c, bool *serving, struct an_error *err);

/*
 * an_call_raw - a unary call with a raw request payload, for tests that
 * send malformed bytes: method like "/annals.v1.Commands/Append". The reply
 * payload is dropped. Returns the code of the status (AN_EUNIMPL for an
 * unknown method).
 */
int an_call_raw(an_client *c, const char *method, const void *payload, size_t len,
                struct an_error *err);

/*
 * an_call_raw_stream - a streaming call with raw request messages, for
 * tests of the streaming methods: sends the n messages (msgs[i], lens[i]
 * bytes) one after another, with the header md_key: md_value if md_key is
 * not NULL, half-closes, then reads every reply message until the status.
 * on_reply (may be NULL) gets each reply's bytes, borrowed for the
 * callback's duration, on the calling thread. If reply_md_key is not NULL,
 * reply_md_value (cap bytes) gets that header of the server's initial
 * metadata ("" without it). Deadline: the client's timeout. Returns the
 * code of the status.
 */
typedef void (*an_raw_reply_cb)(void *arg, const void *payload, size_t len);
int an_call_raw_stream(an_client *c, const char *method, const char *md_key, const char *md_value,
                       const void *const *msgs, const size_t *lens, size_t n,
                       an_raw_reply_cb on_reply, void *arg, const char *reply_md_key,
                       char *reply_md_value, size_t cap, struct an_error *err);

/* ---- projections and views (annals.v1.Projections, Queries.GetView/ScanView) ---- */

enum an_proj_kind {
    AN_PROJ_STREAM_STATE = 1,   /* key: the stream; value: JSON merge patches folded */
    AN_PROJ_COUNT = 2,          /* key: chosen by `key`; value: {"count": N[, "sum": S]} */
    AN_PROJ_INDEX = 3,          /* key: chosen by `key`; value: the last event carrying it */
    AN_PROJ_STREAMS = 4,        /* key: the stream; value: its version, count, position */
};

enum an_proj_state {
    AN_PROJ_RUNNING = 1,
    AN_PROJ_REBUILDING = 2,
    AN_PROJ_FAULTED = 3,
    AN_PROJ_PAUSED = 4,
};

/* A projection's definition (projections.proto). Strings are borrowed. */
struct an_projection_def {
    const char *name;           /* 1..64 of [a-z0-9_-] */
    enum an_proj_kind kind;
    const char *key;            /* COUNT, INDEX: "$type", "$stream", "$category" or a JSON Pointer */
    const char *sum;            /* COUNT: a JSON Pointer to a number; NULL: none */
    bool latest_only;           /* keep only the newest value (no as-of reads) */
    const char *const *stream_prefixes; /* which events: any of these prefixes ... */
    size_t n_stream_prefixes;
    const char *const *event_types;     /* ... and any of these types (none: all) */
    size_t n_event_types;
};

/* A projection's status (ProjectionStatus), copied out. */
struct an_projection_status {
    char name[65];
    enum an_proj_kind kind;
    char key[256];
    bool latest_only;
    enum an_proj_state state;
    uint64_t checkpoint;        /* last position applied to the view */
    uint64_t head;              /* the log's head */
    uint64_t events_applied;
    uint64_t rebuild_checkpoint; /* REBUILDING: how far the fresh view is */
    char error[256];            /* FAULTED: why */
};

/*
 * an_projection_create / _get / _rebuild / _delete - Projections.Create,
 * Get, Rebuild, Delete; *out (optional) gets the status the server
 * answered. Create is idempotent for an identical definition (and retried
 * like a read); Rebuild and Delete are never retried. Returns 0, AN_EINVAL
 * (a bad definition: err->detail names the field), AN_EEXIST (the name
 * holds another definition), AN_ENOTFOUND, AN_EPERM, or the call's code.
 */
int an_projection_create(an_client *c, const struct an_projection_def *def,
                         struct an_projection_status *out, struct an_error *err);
int an_projection_get(an_client *c, const char *name, struct an_projection_status *out,
                      struct an_error *err);
int an_projection_rebuild(an_client *c, const char *name, struct an_projection_status *out,
                          struct an_error *err);
int an_projection_delete(an_client *c, const char *name, struct an_error *err);

/* an_projection_list - every projection; *out is malloc'd (caller frees),
 * *n its length. */
int an_projection_list(an_client *c, struct an_projection_status **out, size_t *n,
                       struct an_error *err);

/* One entry of a view. value is malloc'd, NUL-terminated (an_view_entry_free). */
struct an_view_entry {
    bool found;                 /* false: no value as of that point */
    uint64_t position;          /* of the last event applied to it */
    char *value;                /* JSON text */
    size_t value_len;
    char key[512];
};

void an_view_entry_free(struct an_view_entry *e);

/*
 * an_get_view - Queries.GetView: view's entry for key, now or as of
 * as_of (NULL: now). min_position (0: none) makes the server answer only
 * once the view has applied that position (read-your-writes: pass an
 * append's last_position), within the client's timeout, else AN_EDEADLINE;
 * an as_of beyond what the view has applied waits the same way. Returns 0,
 * AN_ENOTFOUND (no such view), AN_ETOMBSTONED (FAILED_PRECONDITION: as_of on
 * a latest_only view), AN_EUNAVAIL (the view is FAULTED short of the point),
 * or the call's code. Retried like a read.
 */
int an_get_view(an_client *c, const char *view, const char *key, const struct an_as_of *as_of,
                uint64_t min_position, struct an_view_entry *out, struct an_error *err);

/* Called for each entry of a scan, in key order; e is valid during the
 * call. Return false to stop. */
typedef bool (*an_view_fn)(void *arg, const struct an_view_entry *e);

struct an_scan_opts {
    const char *view;
    const char *key_prefix;     /* NULL: every key */
    const char *start_after;    /* NULL: from the first */
    uint32_t limit;             /* 0: no limit */
    struct an_as_of as_of;      /* none set: now */
    uint64_t min_position;
};

/*
 * an_scan_view - Queries.ScanView: hands the view's entries to fn in key
 * order; all of them read as of one position. Each wait for the next
 * message is bounded by the client's timeout. Returns 0, or as an_get_view.
 */
int an_scan_view(an_client *c, const struct an_scan_opts *o, an_view_fn fn, void *arg,
                 struct an_error *err);

/* ---- operations (annals.v1.Admin, admin.proto) ---- */

struct an_backup_progress {
    const char *step;           /* what was just copied: "projection NAME", "log" */
    unsigned steps_done;
    unsigned steps_total;
    uint64_t bytes_copied;      /* the log's copy (views are not counted) */
    uint64_t log_position;      /* with done: every event up to here is in the copy */
    bool done;
};

/* Called for each progress message, on the calling thread; p is valid
 * during the call. */
typedef void (*an_backup_cb)(void *arg, const struct an_backup_progress *p);

/*
 * an_backup - Admin.Backup: the server copies its data (views, then the
 * log) into `dest`, a new directory on the server's machine (absolute; its
 * parent must exist), without stopping writes. cb (optional) sees the
 * progress; *log_position (optional) gets the last position the copy
 * holds. Restore by starting annalsd with --data on the copy. The call has
 * no deadline; each wait for progress is bounded by 60 times the client's
 * timeout. Never retried. Returns 0, AN_EINVAL (bad dest), AN_EBUSY
 * (another backup runs), AN_EPERM, AN_EIO, or the call's code.
 */
int an_backup(an_client *c, const char *dest, an_backup_cb cb, void *arg,
              uint64_t *log_position, struct an_error *err);

/* ---- consumer groups (annals.v1.Consumers, consumers.proto) ---- */

typedef struct an_consumer an_consumer;

/* A consumer group's definition (ConsumerGroup). Strings are borrowed. */
struct an_group_def {
    const char *name;           /* 1..64 of [a-z0-9_-] */
    const char *stream;         /* NULL or "": all streams (then the filter applies) */
    const char *const *stream_prefixes; /* all streams: any of these prefixes ... */
    size_t n_stream_prefixes;
    const char *const *event_types;     /* ... and any of these types (none: all) */
    size_t n_event_types;
    uint64_t from_position;     /* first global position (inclusive); 0: the first */
    bool from_end;              /* only events committed after the group is created */
    uint32_t max_deliveries;    /* 0: 5 */
    uint32_t ack_timeout_ms;    /* 0: 30000 */
    bool ordered_per_stream;    /* one event of a stream in flight at a time */
};

/*
 * an_group_create / _get / _replay_parked - Consumers.CreateGroup, GetGroup,
 * ReplayParked; *out (optional) gets the server's GroupStatus, malloc'd by
 * protobuf-c: free it with an_group_status_free. Create is idempotent for an
 * identical definition (and retried like a read); ReplayParked is never
 * retried. Returns 0, AN_EINVAL (a bad definition: err->detail names the
 * field), AN_EEXIST (the name holds another definition), AN_ENOTFOUND,
 * AN_EPERM, or the call's code.
 */
int an_group_create(an_client *c, const struct an_group_def *def,
                    Annals__V1__GroupStatus **out, struct an_error *err);
int an_group_get(an_client *c, const char *name, Annals__V1__GroupStatus **out,
                 struct an_error *err);
int an_group_replay_parked(an_client *c, const char *name, Annals__V1__GroupStatus **out,
                           struct an_error *err);
/* an_group_delete - the definition and its state go; connected consumers'
 * calls end (AN_ENOTFOUND). "$parked-<group>" stays. Never retried. */
int an_group_delete(an_client *c, const char *name, struct an_error *err);
/* an_group_list - every group; *out malloc'd by protobuf-c
 * (an_group_list_free). */
int an_group_list(an_client *c, Annals__V1__ListGroupsResponse **out, struct an_error *err);
void an_group_status_free(Annals__V1__GroupStatus *s);
void an_group_list_free(Annals__V1__ListGroupsResponse *l);

/* What an_consumer_next hands out. */
struct an_delivery {
    const Annals__V1__RecordedEvent *event; /* owned by the an_consumer, valid until the
                                             * next an_consumer_next or an_consumer_close */
    uint32_t attempt;           /* 1 on first delivery */
};

/*
 * an_consumer_open - joins group `name` through Consumers.Consume with the
 * given prefetch (0: 16): the server hands this consumer events while it
 * holds fewer than `prefetch` unsettled. Returns 0 with *out (caller owns;
 * an_consumer_close), AN_EINVAL, AN_ECIRCUIT / AN_EUNAVAIL (no endpoint
 * admits a call: nothing sent), AN_ENOMEM. The server's refusal of the join
 * (AN_ENOTFOUND: no such group, AN_EPERM, AN_EINVAL) arrives through
 * an_consumer_next.
 *
 * Reconnect: when the call is cut (a transient end such as AN_EUNAVAIL:
 * server restart, connection lost), an_consumer_next joins again by
 * itself, with the client's backoff and breaker, until the client's
 * timeout has passed since the cut (then it ends with the last code); a
 * call of an_consumer_next that runs out of its own timeout meanwhile
 * returns AN_SUB_TIMEOUT. Deliveries not settled on the old call are the
 * server's to hand out again (to anyone), and settling them afterwards is
 * ignored.
 */
int an_consumer_open(an_client *c, const char *name, uint32_t prefetch, an_consumer **out);

/*
 * an_consumer_next - the next delivery, waiting at most timeout_ms (< 0:
 * without limit; 0: only what has arrived). Sends the settles queued by
 * an_consumer_ack/_nack/_park first. Returns 1 with *out filled,
 * AN_SUB_TIMEOUT (0) when nothing came, or a negative code when the
 * consumer is over (the same code on every later call): AN_ENOTFOUND (no
 * such group, or it was deleted), AN_EINVAL, AN_EPERM, AN_ECANCELLED, ...
 */
int an_consumer_next(an_consumer *k, int timeout_ms, struct an_delivery *out,
                     struct an_error *err);

/*
 * an_consumer_ack / _nack / _park - settle a delivered event by its global
 * position. Settles are queued and sent together by the next
 * an_consumer_next or an_consumer_flush (a nack or park with a reason other
 * than the queued one's flushes first). nack: hand it out again (counts an
 * attempt); park: move it to "$parked-<group>" now. reason: NULL ok.
 * Returns 0 or AN_ENOMEM / the consumer's final code.
 */
int an_consumer_ack(an_consumer *k, uint64_t position);
int an_consumer_nack(an_consumer *k, uint64_t position, const char *reason);
int an_consumer_park(an_consumer *k, uint64_t position, const char *reason);
/* an_consumer_flush - sends the queued settles now. */
int an_consumer_flush(an_consumer *k, struct an_error *err);

/* an_consumer_close - sends the queued settles, ends the call (the server
 * hands this consumer's unsettled events to others) and frees. NULL ok. */
void an_consumer_close(an_consumer *k);

#endif /* ANNALS_H */

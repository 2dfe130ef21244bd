/*
 * an_int.h - what the files of libannals share: the client struct, the
 * error filling, request packing and the gRPC plumbing helpers.
 *
 * Nothing outside client/ includes this header.
 */
#ifndef AN_INT_H
#define AN_INT_H

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "annals.h"
#include "annals/v1/commands.pb-c.h"

struct an_client {
    grpc_channel *channel;      /* thread-safe; destroyed by an_close */
    int64_t timeout_ms;         /* default deadline per call (> 0) */
};

/* Method paths of the contract's services. */
#define AN__M_APPEND "/annals.v1.Commands/Append"
#define AN__M_APPEND_STREAM "/annals.v1.Commands/AppendStream"
#define AN__M_DELETE_STREAM "/annals.v1.Commands/DeleteStream"
#define AN__M_READ_STREAM "/annals.v1.Queries/ReadStream"
#define AN__M_READ_ALL "/annals.v1.Queries/ReadAll"
#define AN__M_GET_STREAM "/annals.v1.Queries/GetStream"
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

/* an__pack - packs any message into a byte buffer (caller owns). NULL: ENOMEM. */
grpc_byte_buffer *an__pack(const ProtobufCMessage *m);

/*
 * an__unpack - unpacks a received buffer as `desc`; the buffer stays the
 * caller's. Returns the message (free with protobuf_c_message_free_unpacked)
 * or NULL when the bytes do not parse.
 */
ProtobufCMessage *an__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/* an__result_from - copies an AppendResponse into the public result. */
void an__result_from(const Annals__V1__AppendResponse *r, struct an_append_result *res);

/* an__as_of - fills *m from the public as-of; NULL when it names no point. */
Annals__V1__AsOf *an__as_of(const struct an_as_of *a, Annals__V1__AsOf *m);

/* ---- calls ---- */

/*
 * an__call_new - a call on the client's channel, bound to cq, with the
 * given deadline. method is copied. NULL when gRPC refuses.
 */
grpc_call *an__call_new(an_client *c, grpc_completion_queue *cq, const char *method,
                        gpr_timespec deadline);

/*
 * an__cq_free - shuts a completion queue down, drains it and destroys it
 * (pluck: made by _create_for_pluck). Every call bound to it must be
 * unref'd first, and every tag started on a pluck queue plucked. NULL ok.
 */
void an__cq_free(grpc_completion_queue *cq, bool pluck);

#endif /* AN_INT_H */

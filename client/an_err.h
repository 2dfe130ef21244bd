/*
 * an_err.h - the one list of Annals error codes.
 *
 * Every module returns 0 or a negative AN_E* code. This file is the single
 * place where a code is named, described, and mapped to the gRPC status the
 * server answers with (the contract's comments decide which status each
 * failure gets). The list is an X-macro so that the enum, an_strerror() and
 * the server's status table can never drift apart:
 *
 *     X(code name, value, gRPC status name, static text)
 *
 * The status column is a bare token; server/ pastes it onto GRPC_STATUS_ and
 * client/ ignores it, so this header needs no gRPC include.
 */
#ifndef AN_ERR_H
#define AN_ERR_H

#define AN_ERRNO_MAP(X)                                                              \
    X(AN_EINVAL,      -1,  INVALID_ARGUMENT,    "invalid argument")                 \
    X(AN_ECONFLICT,   -2,  ABORTED,             "expected version mismatch")        \
    X(AN_EEXIST,      -3,  ALREADY_EXISTS,      "already exists")                   \
    X(AN_ETOMBSTONED, -4,  FAILED_PRECONDITION, "stream is tombstoned")             \
    X(AN_ENOTFOUND,   -5,  NOT_FOUND,           "not found")                        \
    X(AN_ETOOBIG,     -6,  RESOURCE_EXHAUSTED,  "size limit exceeded")              \
    X(AN_EFULL,       -7,  RESOURCE_EXHAUSTED,  "store is full")                    \
    X(AN_EUNAVAIL,    -8,  UNAVAILABLE,         "unavailable")                      \
    X(AN_ENOMEM,      -9,  RESOURCE_EXHAUSTED,  "out of memory")                    \
    X(AN_EIO,         -10, INTERNAL,            "I/O error")                        \
    X(AN_ECORRUPT,    -11, DATA_LOSS,           "stored data is corrupt")           \
    X(AN_EDEADLINE,   -12, DEADLINE_EXCEEDED,   "deadline exceeded")                \
    X(AN_ECANCELLED,  -13, CANCELLED,           "cancelled")                        \
    X(AN_EUNIMPL,     -14, UNIMPLEMENTED,       "not implemented")                  \
    X(AN_EPRECOND,    -15, FAILED_PRECONDITION, "failed precondition")              \
    X(AN_EINTERNAL,   -16, INTERNAL,            "internal error")                   \
    X(AN_EBUSY,       -17, RESOURCE_EXHAUSTED,  "too many concurrent users")        \
    X(AN_ECIRCUIT,    -18, UNAVAILABLE,         "circuit open: failing fast")        \
    X(AN_EPERM,       -19, PERMISSION_DENIED,   "permission denied")                \
    X(AN_EAUTH,       -20, UNAUTHENTICATED,     "unauthenticated")

typedef enum an_err {
    AN_OK = 0,
#define AN__ERR_ENUM(name, val, status, text) name = (val),
    AN_ERRNO_MAP(AN__ERR_ENUM)
#undef AN__ERR_ENUM
} an_err;

/*
 * an_strerror - a static, never NULL, description of an error code.
 * Unknown codes get "unknown error". Safe from any thread.
 */
const char *an_strerror(int code);

/* an_errname - the code's symbolic name ("AN_EINVAL"), for logs. */
const char *an_errname(int code);

#endif /* AN_ERR_H */

/*
 * srv.h - the Annals server: gRPC core glue, the writer, the services.
 *
 * annalsd.c parses flags and signals and drives the server through this
 * header; everything else in server/ (but server/log/) is internal
 * (srv_int.h).
 */
#ifndef SRV_H
#define SRV_H

#include <stdbool.h>
#include <stdint.h>

#include "an_err.h"

typedef struct srv srv;

#define SRV_VERSION "0.1.0"

struct srv_cfg {
    const char *data_dir;       /* the log lives in DATA/log */
    const char *listen;         /* "host:port"; port 0: any free port */
    uint64_t max_size_bytes;    /* cap on the log's size; 0: none */
    uint32_t max_event_bytes;   /* 0: the log's default */
    uint32_t max_request_bytes; /* 0: the log's default */
    unsigned threads;           /* completion-queue threads; 0: the cores */
    unsigned max_batch;         /* appends per group commit; 0: 1024 */
    unsigned stream_window;     /* AppendStream requests in progress per call; 0: 256 */
    unsigned max_subscriptions; /* Subscribe calls open at once; 0: 10000 */
    unsigned checkpoint_rate;   /* checkpoint-only messages a second, all
                                 * subscriptions together; 0: 100 */
    uint64_t max_queue_bytes;   /* requests waiting for the writer; 0: 256 MiB */
    uint64_t max_view_bytes;    /* cap on each view env; 0: the engine's */
    const char *tls_cert_file;  /* PEM; with tls_key_file: serve TLS only */
    const char *tls_key_file;
    const char *tls_client_ca_file; /* PEM: require and verify client certs */
    bool insecure;              /* plaintext on a non-loopback address */
    const char *auth_file;      /* JSON principals and grants; NULL: auth off */
    const char *http_listen;    /* metrics and admin page "host:port"; NULL: off */
    /* connections (0: the default in annalsd.c's flags) */
    unsigned max_connections;   /* open at once; lowered to the descriptor limit */
    unsigned max_streams_per_conn; /* concurrent calls on one connection */
    unsigned idle_timeout_s;    /* close a connection with no call this long; 0: never */
    unsigned keepalive_s;       /* ping a quiet client this often; a dead one is dropped */
    unsigned handshake_timeout_s; /* a connection must say who it is within this */
    uint32_t max_metadata_bytes; /* a call's headers */
};

/*
 * srv_start - opens the log, starts the writer, the completion-queue
 * threads and the gRPC server. Returns 0, or a code with detail filled
 * (LOG_DETAIL_MAX bytes): AN_EINVAL (bad address or config), AN_EIO,
 * AN_ECORRUPT, AN_ENOMEM. Main thread.
 */
int srv_start(const struct srv_cfg *cfg, srv **out, char *detail);

/* srv_config - the effective configuration (defaults filled in). */
const struct srv_cfg *srv_config(const srv *s);

/* srv_port - the port the server listens on (useful with port 0). */
int srv_port(const srv *s);

/* srv_http_port - the --http port (0: off). */
int srv_http_port(const srv *s);

/*
 * srv_shutdown - health turns NOT_SERVING, no new calls are taken, appends
 * already in the writer's hands are committed and answered, queued ones
 * get UNAVAILABLE; calls still open after grace_ms are cancelled
 * (UNAVAILABLE). Then the threads stop and the log closes. Main thread.
 */
void srv_shutdown(srv *s, int grace_ms);

/* srv_reload_auth - loads the auth file again and swaps it in (SIGHUP);
 * a bad file is refused with a log line and the old one stays. Returns 0
 * or the code of the failure. Main thread. */
int srv_reload_auth(srv *s);

/* srv_free - frees a server after srv_shutdown. NULL ok. */
void srv_free(srv *s);

/* srv_log_stats - logs one stats line: appends, events and commits since
 * the last line, the mean group-commit batch, head, readers. Main thread. */
void srv_log_stats(srv *s);

/* srv_log_totals - logs the totals since start (msg="totals"), e.g. for
 * benchmarks that read the writer's mean batch size. */
void srv_log_totals(srv *s);

#endif /* SRV_H */

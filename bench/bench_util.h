/*
 * bench_util.h - what the server benchmarks share: a private annalsd
 * (temp data dir, loopback, a free port, stopped by its pid), latency
 * samples and percentiles, a monotonic clock.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

/* Seconds on the monotonic clock. */
double bu_now(void);

/* Prints "PROG: what: error (detail)" and exits 1. */
void bu_die(const char *prog, const char *what, int rc, const char *detail);

struct bu_server {
    char dir[256];              /* temp dir: data/ and annalsd.log */
    char addr[64];              /* 127.0.0.1:PORT */
    pid_t pid;
};

/*
 * bu_server_start - starts annalsd (ANNALSD env, else the build's) on a
 * fresh temp dir under base, with the extra flags (NULL-terminated, may be
 * NULL), and waits for its "started" line. Exits on failure.
 */
void bu_server_start(struct bu_server *s, const char *base, const char *const *extra);

/* bu_server_restart - starts annalsd again on the same directory (after a
 * kill), waits for its new "started" line; s->addr gets its new port. */
void bu_server_restart(struct bu_server *s, const char *const *extra);

/* bu_server_rss_kib - annalsd's resident set (VmRSS), KiB; 0 if unknown. */
long bu_server_rss_kib(const struct bu_server *s);

/* bu_server_stop - SIGTERM, wait, remove the dir; returns the writer's mean
 * group-commit batch from annalsd's "totals" line (0 if none). */
double bu_server_stop(struct bu_server *s);

/* Latency samples in microseconds. */
struct bu_lat {
    uint32_t *us;
    size_t n;
    size_t cap;
};

void bu_lat_add(struct bu_lat *l, double seconds);
/* Moves every sample of src into dst (src is emptied). */
void bu_lat_merge(struct bu_lat *dst, struct bu_lat *src);
/* Sorts the samples; call before bu_pct. */
void bu_lat_sort(struct bu_lat *l);
/* The p-quantile (0..1) in milliseconds of sorted samples; 0 if none. */
double bu_pct(const struct bu_lat *l, double p);
void bu_lat_free(struct bu_lat *l);

/* bu_unary - one unary call on gRPC core (10 s deadline): the status, and
 * the reply's bytes in *out (malloc'd, caller frees; NULL when none). */
int bu_unary(grpc_channel *ch, const char *method, const ProtobufCMessage *req, uint8_t **out,
             size_t *out_len);

#endif /* BENCH_UTIL_H */

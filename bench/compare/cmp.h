/*
 * cmp.h - what the comparison's load generator (compare.c) shares with its
 * drivers (drv_*.c) and its report writer (report.c). See compare.c's top
 * comment for the workloads and the README for the whole run.
 */
#ifndef CMP_H
#define CMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_util.h"

#define CMP_PAYLOAD 200         /* bytes of data per event */
#define CMP_TYPE "OrderPlaced"

/* The ~200-byte event body every system stores (JSON-looking, no NUL, no
 * backslash, so every text protocol takes it as is). */
extern char cmp_payload[CMP_PAYLOAD + 1];

/* What one timed measurement produced. */
struct cmp_meas {
    uint64_t n;                 /* events appended (acknowledged) or read */
    double secs;                /* wall time of the timed part */
    uint64_t conflicts;         /* expected-version failures (retried) */
    struct bu_lat lat;          /* per event, submit to acknowledgement */
};

/* How long and how much each measurement may run; set by main. */
struct cmp_limits {
    double seconds;             /* every timed loop stops after this */
    unsigned read_events;       /* events filled and read back */
    unsigned pipe_depth;        /* appends in flight on one connection */
};
extern struct cmp_limits cmp_lim;

/* Results of a driver's calls. */
enum { CMP_OK = 0, CMP_CONFLICT = 1 };

/*
 * One system. A "token" is what the next append expects: -1 for a stream
 * not yet written, else whatever the system compares (the last version for
 * Annals, PostgreSQL and Redis; the subject's last stream sequence for
 * NATS). Every function exits the process (cmp_die) on an error other than
 * a conflict: a comparison with a failing peer is not a comparison.
 * Optional functions are NULL when the system has no such path.
 */
struct cmp_driver {
    const char *name;           /* CSV name: annals, pg, redis, nats */
    /* once, before anything: addr as given on the command line */
    void (*setup)(const char *addr);
    void *(*open)(void);        /* one client: its own connection */
    void (*close)(void *c);
    /* appends one event at `expect`; CMP_OK with *next, or CMP_CONFLICT */
    int (*append)(void *c, const char *stream, int64_t expect, int64_t *next);
    /* the stream's token as the system sees it now */
    void (*current)(void *c, const char *stream, int64_t *token);
    /* one connection, cmp_lim.pipe_depth appends in flight, on `tag`-streams */
    void (*pipe)(struct cmp_meas *m, const char *tag);
    /* untimed: store cmp_lim.read_events events for read() */
    void (*fill)(void);
    /* timed: read those events back in the system's global order */
    void (*read)(struct cmp_meas *m);
    /* one round trip that reads and writes nothing (Annals: Health/Check,
     * answered on annalsd's CQ thread): the protocol's floor */
    void (*ping)(void *c);
};

extern const struct cmp_driver cmp_annals;
#ifdef HAVE_PQ
extern const struct cmp_driver cmp_pg;
#endif
#ifdef HAVE_HIREDIS
extern const struct cmp_driver cmp_redis;
#endif
#ifdef HAVE_NATS
extern const struct cmp_driver cmp_nats;
#endif

/* annals: every client shares one an_client (one HTTP/2 connection) */
extern bool cmp_annals_shared;
/* annals: the address of the server compare.c started */
extern const char *cmp_annals_addr;

/* Prints "compare: what: detail" and exits 1 (servers started by
 * bench_util are killed at exit). */
_Noreturn void cmp_die(const char *what, const char *detail);

/* true once the measurement's time is up (started at `t0`) */
bool cmp_time_up(double t0);

/* A fill (untimed) stops after this long; the read then reads what it has. */
#define CMP_FILL_SECONDS 120.0

/* true once a fill started at t0 must stop; then read_events = done */
bool cmp_fill_up(double t0, unsigned done);

/* report.c: `compare_load report DIR`; returns the exit code */
int cmp_report(int argc, char **argv);

#endif /* CMP_H */

/*
 * pl_trace.h - the power-loss trace's records (pl_shim.c writes them for
 * the server, pl_run.c for the acknowledged appends and reads them all).
 */
#ifndef PL_TRACE_H
#define PL_TRACE_H

#include <stdbool.h>
#include <stdint.h>

#define PL_MAGIC 0x504c5452u    /* "PLTR" */

enum pl_type {
    PL_WRITE = 1,               /* off, len, then len bytes written at off */
    PL_SYNC = 2,                /* every write before it is durable */
    PL_ACK = 3,                 /* a client was told: events up to off are stored */
};

struct pl_rec {
    uint32_t magic;
    uint8_t type;
    uint8_t pad[3];
    uint64_t off;
    uint64_t len;
};

#endif /* PL_TRACE_H */

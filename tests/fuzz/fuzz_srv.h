/*
 * fuzz_srv.h - a server struct over fuzz_fixture's log and projection
 * manager, for the targets that drive server/ code without gRPC
 * (fuzz_http_request, fuzz_group_records): the parts srv_http_handle and
 * the groups engine use (the log, the manager, DATA/groups in ffx.dir,
 * the HTTP thread's reader, the locks, the metrics), none of srv_start's
 * threads or listeners. Aborts on a failure of its own, as fuzz_fixture.
 */
#ifndef FUZZ_SRV_H
#define FUZZ_SRV_H

#include "fuzz_fixture.h"
#include "srv_int.h"

extern struct srv fsrv;

/* Sets fsrv up over ffx (opened first), without groups. */
void fsrv_open(void);
/* Stops the groups if started, and frees what fsrv_open made. */
void fsrv_close(void);

/* One record of DATA/groups: table 0 defs, 1 state, 2 marks. */
struct fsrv_rec {
    unsigned table;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
};
/* Replaces every record of DATA/groups by r[0..n) (the groups stopped:
 * the env is opened, written and closed here). */
void fsrv_groups_write(const struct fsrv_rec *r, size_t n);
/* srv_group_start on fsrv: 0, or its code with detail (LOG_DETAIL_MAX). */
int fsrv_groups_start(char *detail);
/* srv_group_stop and srv_group_free (accepts a start that failed). */
void fsrv_groups_stop(void);

#endif /* FUZZ_SRV_H */

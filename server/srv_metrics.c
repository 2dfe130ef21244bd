/*
 * srv_metrics.c - the server's counters and histograms (DESIGN.md: one
 * struct per module, read by an exporter, no locks on hot paths). Every
 * field is an atomic that the thread doing the work bumps; the exporter
 * (srv_http.c) reads them whenever it is asked. Histograms keep Prometheus'
 * shape: fixed upper bounds, a count per bucket, a total count and a sum.
 */
#include "srv_int.h"

/* Latencies, in seconds. */
static const double seconds_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                        5};
/* Group-commit batch sizes, in requests. */
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};

static void hist_init_seconds(struct srv_hist *h)
{
    h->bounds = seconds_bounds;
    h->n = sizeof(seconds_bounds) / sizeof(seconds_bounds[0]);
    h->sum_scale = 1e9; /* the sum is kept in nanoseconds */
}

static void hist_init_batch(struct srv_hist *h)
{
    h->bounds = batch_bounds;
    h->n = sizeof(batch_bounds) / sizeof(batch_bounds[0]);
    h->sum_scale = 1;
}

void srv_hist_observe(struct srv_hist *h, double v)
{
    unsigned i = 0;
    while (i < h->n && v > h->bounds[i]) {
        i++;
    }
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    double scaled = v * h->sum_scale;
    atomic_fetch_add_explicit(&h->sum, scaled > 0 ? (unsigned long long)scaled : 0,
                              memory_order_relaxed);
}

void srv_metrics_init(struct srv_metrics *m)
{
    hist_init_seconds(&m->commit_seconds);
    hist_init_batch(&m->batch_size);
    for (unsigned i = 0; i < SRV_M_COUNT; i++) {
        hist_init_seconds(&m->call_seconds[i]);
    }
}

void srv_metrics_call_done(struct srv_call *c, grpc_status_code status)
{
    struct srv_metrics *m = &c->srv->metrics;
    unsigned st = (unsigned)status < SRV_STATUS_COUNT ? (unsigned)status : GRPC_STATUS_UNKNOWN;
    atomic_fetch_add_explicit(&m->calls[c->method][st], 1, memory_order_relaxed);
    gpr_timespec d = gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), c->started);
    srv_hist_observe(&m->call_seconds[c->method], (double)gpr_timespec_to_micros(d) / 1e6);
}

const char *srv_method_name(enum srv_method m)
{
    switch (m) {
    case SRV_M_UNKNOWN:
        return "unknown";
    case SRV_M_APPEND:
        return "annals.v1.Commands/Append";
    case SRV_M_APPEND_STREAM:
        return "annals.v1.Commands/AppendStream";
    case SRV_M_DELETE_STREAM:
        return "annals.v1.Commands/DeleteStream";
    case SRV_M_READ_STREAM:
        return "annals.v1.Queries/ReadStream";
    case SRV_M_READ_ALL:
        return "annals.v1.Queries/ReadAll";
    case SRV_M_GET_STREAM:
        return "annals.v1.Queries/GetStream";
    case SRV_M_SUBSCRIBE:
        return "annals.v1.Queries/Subscribe";
    case SRV_M_GET_VIEW:
        return "annals.v1.Queries/GetView";
    case SRV_M_SCAN_VIEW:
        return "annals.v1.Queries/ScanView";
    case SRV_M_PROJ_CREATE:
        return "annals.v1.Projections/Create";
    case SRV_M_PROJ_LIST:
        return "annals.v1.Projections/List";
    case SRV_M_PROJ_GET:
        return "annals.v1.Projections/Get";
    case SRV_M_PROJ_REBUILD:
        return "annals.v1.Projections/Rebuild";
    case SRV_M_PROJ_DELETE:
        return "annals.v1.Projections/Delete";
    case SRV_M_BACKUP:
        return "annals.v1.Admin/Backup";
    case SRV_M_GRP_CREATE:
        return "annals.v1.Consumers/CreateGroup";
    case SRV_M_GRP_GET:
        return "annals.v1.Consumers/GetGroup";
    case SRV_M_GRP_LIST:
        return "annals.v1.Consumers/ListGroups";
    case SRV_M_GRP_DELETE:
        return "annals.v1.Consumers/DeleteGroup";
    case SRV_M_GRP_REPLAY:
        return "annals.v1.Consumers/ReplayParked";
    case SRV_M_CONSUME:
        return "annals.v1.Consumers/Consume";
    case SRV_M_HEALTH_CHECK:
        return "grpc.health.v1.Health/Check";
    }
    return "unknown";
}

const char *srv_status_name(unsigned status)
{
    static const char *const names[SRV_STATUS_COUNT] = {
        "OK",           "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",     "ALREADY_EXISTS", "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",          "UNAVAILABLE",    "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return status < SRV_STATUS_COUNT ? names[status] : "UNKNOWN";
}

/*
 * bench_util.c - see bench_util.h.
 */
#include "bench_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>

#include "an_err.h"

double bu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void bu_die(const char *prog, const char *what, int rc, const char *detail)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, an_strerror(rc), detail ? detail : "");
    exit(1);
}

/* Servers still running, killed at exit (a bench that dies mid-run must
 * not leave an annalsd behind). */
static pid_t running[8];

static void kill_running(void)
{
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++) {
        if (running[i] > 0) {
            kill(running[i], SIGKILL);
        }
    }
}

static void track(pid_t pid, pid_t replace)
{
    static int registered;
    if (!registered) {
        atexit(kill_running);
        registered = 1;
    }
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++) {
        if (running[i] == replace) {
            running[i] = pid;
            return;
        }
    }
}

static const char *annalsd_path(void)
{
    const char *p = getenv("ANNALSD");
    return p ? p : ANNALSD_PATH;
}

/* Starts annalsd on s->dir/data (logging to s->dir/annalsd.log) and waits
 * for its "started" line; s->pid and s->addr get the new server's. */
static void spawn(struct bu_server *s, const char *const *extra)
{
    char data[300];
    char log[300];
    const char *argv[32];
    size_t n = 0;
    snprintf(data, sizeof(data), "%s/data", s->dir);
    snprintf(log, sizeof(log), "%s/annalsd.log", s->dir);
    argv[n++] = annalsd_path();
    argv[n++] = "--data";
    argv[n++] = data;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    for (size_t i = 0; extra && extra[i] && n < 31; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid_t old = s->pid;
    unlink(log); /* else an old "started" line could be read before the new one */
    s->pid = fork();
    if (s->pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    track(s->pid, old);
    for (int i = 0; i < 10000; i++) {
        FILE *f = fopen(log, "r");
        char line[2048];
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, "msg=\"started\"");
            const char *q = p ? strstr(p, " port=") : NULL;
            if (q) {
                snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", atoi(q + 6));
                fclose(f);
                return;
            }
        }
        if (f) {
            fclose(f);
        }
        usleep(1000);
    }
    fprintf(stderr, "bench: annalsd (%s) did not start; see %s\n", annalsd_path(), log);
    exit(1);
}

void bu_server_start(struct bu_server *s, const char *base, const char *const *extra)
{
    snprintf(s->dir, sizeof(s->dir), "%s/annals-bench-XXXXXX", base);
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "bench: mkdtemp in %s: %s\n", base, strerror(errno));
        exit(1);
    }
    s->pid = 0;
    spawn(s, extra);
}

void bu_server_restart(struct bu_server *s, const char *const *extra)
{
    spawn(s, extra);
}

long bu_server_rss_kib(const struct bu_server *s)
{
    char path[64];
    char line[256];
    long kib = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = atol(line + 6);
        }
    }
    if (f) {
        fclose(f);
    }
    return kib;
}

double bu_server_stop(struct bu_server *s)
{
    char log[300];
    char line[2048];
    double batch = 0;
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    track(0, s->pid);
    snprintf(log, sizeof(log), "%s/annalsd.log", s->dir);
    FILE *f = fopen(log, "r");
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "msg=\"totals\"");
        const char *q = p ? strstr(p, "mean_batch=") : NULL;
        if (q) {
            batch = atof(q + 11);
        }
    }
    if (f) {
        fclose(f);
    }
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench: could not remove %s\n", s->dir);
    }
    return batch;
}

void bu_lat_add(struct bu_lat *l, double seconds)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *p = realloc(l->us, cap * sizeof(*l->us));
        if (!p) {
            return; /* a sample lost beats a crash mid-run */
        }
        l->us = p;
        l->cap = cap;
    }
    double us = seconds * 1e6;
    l->us[l->n++] = us < 0 ? 0 : us > 4e9 ? 4000000000u : (uint32_t)us;
}

void bu_lat_merge(struct bu_lat *dst, struct bu_lat *src)
{
    for (size_t i = 0; i < src->n; i++) {
        bu_lat_add(dst, src->us[i] / 1e6);
    }
    bu_lat_free(src);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void bu_lat_sort(struct bu_lat *l)
{
    if (l->n) {
        qsort(l->us, l->n, sizeof(*l->us), cmp_u32);
    }
}

double bu_pct(const struct bu_lat *l, double p)
{
    if (!l->n) {
        return 0;
    }
    size_t i = (size_t)(p * (double)(l->n - 1));
    return l->us[i] / 1000.0;
}

void bu_lat_free(struct bu_lat *l)
{
    free(l->us);
    *l = (struct bu_lat){0};
}

/* ---- gRPC ---- */

int bu_unary(grpc_channel *ch, const char *method, const ProtobufCMessage *req,
                 uint8_t **out, size_t *out_len)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    size_t n = protobuf_c_message_get_packed_size(req);
    grpc_slice ps = grpc_slice_malloc(n);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(ps));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&ps, 1);
    grpc_slice_unref(ps);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method), NULL, dl,
                                               NULL);
    grpc_metadata_array md;
    grpc_metadata_array tr;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&tr);
    grpc_byte_buffer *rb = NULL;
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &rb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.trailing_metadata = &tr;
    if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
        bu_die("bench", "start a unary call", AN_EINTERNAL, method);
    }
    grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    *out = NULL;
    *out_len = 0;
    if (rb) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, rb);
        grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        *out_len = GRPC_SLICE_LENGTH(sl);
        *out = malloc(*out_len ? *out_len : 1);
        memcpy(*out, GRPC_SLICE_START_PTR(sl), *out_len);
        grpc_slice_unref(sl);
        grpc_byte_buffer_destroy(rb);
    }
    grpc_slice_unref(details);
    grpc_byte_buffer_destroy(bb);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&tr);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return (int)st;
}


/*
 * pl_run.c - power loss, simulated: records what annalsd writes and syncs
 * while clients append, then builds many crash states from the record and
 * checks each one.
 *
 *   pl_run [--appends N] [--writers W] [--states S] [--seed X] [--dir D]
 *          [--inflight K] [--sync-delay-us U]
 *
 * 1. Starts annalsd with pl_shim.so preloaded (PL_TRACE=DIR/trace): every
 *    write to DATA/log/data.mdb and every sync of it goes to the trace, in
 *    the order they happened.
 * 2. W writers append N events in all (unary Append, or with --inflight K
 *    each over AppendStream with K in flight, which keeps the writer's queue
 *    full and so its syncer busy; one event each, a stream per writer,
 *    EXPECT_ANY); after each acknowledgement the writer appends an ACK
 *    record (the append's last position) to the same trace.
 *    Then annalsd is killed with SIGKILL.
 *    With --sync-delay-us U the shim makes every sync of the log wait U
 *    microseconds first: a server that answered before a sync would have
 *    its clients' ACK records land ahead of that sync in the trace, where
 *    crash points find them (without it the window is a round trip).
 * 3. For S crash points, chosen at random among the trace's records after
 *    the first sync (before it the environment itself is not yet durable:
 *    a crash there is a crash during `annalsd`'s first start): the state is
 *    the data file as of the last sync before the point, plus a random
 *    subset of the writes after that sync up to the point, each write torn
 *    into 512-byte sectors of which a random subset lands (a sector is the
 *    unit a disk writes whole). Each state is opened with log_open, as
 *    annalsd would at restart, and must:
 *      - open without error;
 *      - pass log_verify (positions gap-free, ids and stream indexes whole);
 *      - hold every append acknowledged before the crash point (head >=
 *        the largest acknowledged position, positions being gap-free).
 * Exit 0 when every state passed; 1 at the first failure, named.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "annals.h"
#include "bench_util.h"
#include "log.h"
#include "pl_trace.h"

#define SECTOR 512u

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pl_run: FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- the workload ---- */

struct writer {
    pthread_t t;
    unsigned id;
    unsigned count;
    unsigned inflight;          /* > 0: an appender (AppendStream) with this many */
    const char *addr;
    int trace_fd;
    unsigned acked;             /* unary: the writer's thread; else the appender's */
};

static void ack(struct writer *w, uint64_t last_position)
{
    struct pl_rec r = {.magic = PL_MAGIC, .type = PL_ACK, .off = last_position};
    if (write(w->trace_fd, &r, sizeof(r)) != (ssize_t)sizeof(r)) {
        fail("writer %u: trace: %s", w->id, strerror(errno));
    }
    w->acked++;
}

static void on_result(void *arg, uint64_t corr, int rc, const struct an_append_result *res,
                      const struct an_error *err)
{
    struct writer *w = arg;
    if (rc) {
        fail("writer %u: append %llu: %s (%s)", w->id, (unsigned long long)corr, an_strerror(rc),
             err->detail);
    }
    ack(w, res->last_position);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    an_client *c;
    struct an_client_opts o = {.timeout_ms = 10000};
    int rc = an_connect(w->addr, &o, &c);
    if (rc) {
        fail("writer %u: connect: %s", w->id, an_strerror(rc));
    }
    char stream[32], data[160];
    snprintf(stream, sizeof(stream), "pl-%u", w->id);
    an_appender *a = NULL;
    if (w->inflight && (rc = an_appender_open(c, w->inflight, on_result, w, &a))) {
        fail("writer %u: appender: %s", w->id, an_strerror(rc));
    }
    for (unsigned i = 0; i < w->count; i++) {
        int len = snprintf(data, sizeof(data),
                           "{\"writer\":%u,\"seq\":%u,\"pad\":\"%0100u\"}", w->id, i, i);
        struct an_event ev = {.type = "PowerTest", .data = data, .data_len = (size_t)len};
        struct an_stream_append sa = {.stream = stream, .events = &ev, .n_events = 1};
        struct an_append_result res;
        struct an_error err;
        if (a) {
            if ((rc = an_appender_submit(a, &sa, 1, NULL))) {
                fail("writer %u: submit %u: %s", w->id, i, an_strerror(rc));
            }
            continue;
        }
        rc = an_append(c, &sa, 1, &res, &err);
        if (rc) {
            fail("writer %u: append %u: %s (%s)", w->id, i, an_strerror(rc), err.detail);
        }
        ack(w, res.last_position);
    }
    if (a && (rc = an_appender_close(a))) {
        fail("writer %u: appender ended: %s", w->id, an_strerror(rc));
    }
    an_close(c);
    return NULL;
}

/* ---- the trace ---- */

struct rec {
    uint8_t type;
    uint64_t off;
    uint64_t len;
    const uint8_t *data;        /* into the mapped trace */
};

static struct rec *read_trace(const char *path, size_t *n_out, uint8_t **buf_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail("trace %s: %s", path, strerror(errno));
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fail("trace %s: cannot read", path);
    }
    fclose(f);
    size_t cap = 1024, n = 0;
    struct rec *r = malloc(cap * sizeof(*r));
    for (size_t at = 0; at < (size_t)size;) {
        struct pl_rec h;
        if ((size_t)size - at < sizeof(h)) {
            fail("trace: truncated record header at %zu", at);
        }
        memcpy(&h, buf + at, sizeof(h));
        if (h.magic != PL_MAGIC) {
            fail("trace: bad magic at %zu", at);
        }
        at += sizeof(h);
        if (n == cap) {
            cap *= 2;
            r = realloc(r, cap * sizeof(*r));
        }
        r[n] = (struct rec){h.type, h.off, h.len, buf + at};
        if (h.type == PL_WRITE) {
            if ((size_t)size - at < h.len) {
                fail("trace: truncated write at %zu", at);
            }
            at += h.len;
        }
        n++;
    }
    *n_out = n;
    *buf_out = buf;
    return r;
}

/* ---- crash states ---- */

struct image {
    uint8_t *p;
    size_t len, cap;
};

static void img_write(struct image *im, uint64_t off, const uint8_t *d, uint64_t len)
{
    if (off + len > im->cap) {
        size_t nc = im->cap ? im->cap : 1 << 20;
        while (nc < off + len) {
            nc *= 2;
        }
        im->p = realloc(im->p, nc);
        memset(im->p + im->cap, 0, nc - im->cap);
        im->cap = nc;
    }
    memcpy(im->p + off, d, len);
    if (off + len > im->len) {
        im->len = off + len;
    }
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Writes the state's file and checks it as annalsd's restart would. */
static void check_state(const char *dir, const struct image *im, size_t point,
                        uint64_t acked_max, size_t *opened)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/log", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/log/lock.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/log/data.mdb", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, im->p, im->len) != (ssize_t)im->len) {
        fail("state %zu: cannot write %s", point, path);
    }
    close(fd);
    snprintf(path, sizeof(path), "%s/log", dir);
    struct log_cfg cfg = {.dir = path};
    log_env *env;
    char detail[LOG_DETAIL_MAX] = "";
    int rc = log_open(&cfg, &env, detail);
    if (rc) {
        fail("state at record %zu: log_open: %s (%s)", point, an_strerror(rc), detail);
    }
    (*opened)++;
    rc = log_verify(env, NULL, NULL, detail);
    if (rc) {
        fail("state at record %zu: log_verify: %s (%s)", point, an_strerror(rc), detail);
    }
    uint64_t head = log_head(env);
    if (head < acked_max) {
        fail("state at record %zu: head %llu < acknowledged position %llu: an acknowledged "
             "append is lost",
             point, (unsigned long long)head, (unsigned long long)acked_max);
    }
    log_close(env);
}

int main(int argc, char **argv)
{
    unsigned appends = 2000, writers = 8, states = 10000, inflight = 0;
    const char *sync_delay = NULL;
    uint64_t seed = 1;
    const char *base = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--appends") && i + 1 < argc) {
            appends = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--writers") && i + 1 < argc) {
            writers = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--states") && i + 1 < argc) {
            states = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            base = argv[++i];
        } else if (!strcmp(argv[i], "--inflight") && i + 1 < argc) {
            inflight = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--sync-delay-us") && i + 1 < argc) {
            sync_delay = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: pl_run [--appends N] [--writers W] [--states S] [--seed X] "
                    "[--dir D] [--inflight K] [--sync-delay-us U]\n");
            return 2;
        }
    }
    if (!writers || writers > 64 || !appends || !states) {
        fprintf(stderr, "pl_run: --writers 1..64, --appends and --states > 0\n");
        return 2;
    }
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    double t0 = bu_now();

    /* 1-2: the recorded run */
    char trace[400];
    struct bu_server srv;
    char tdir[300];
    snprintf(tdir, sizeof(tdir), "%s/pl-run-XXXXXX", base);
    if (!mkdtemp(tdir)) {
        fail("mkdtemp %s: %s", tdir, strerror(errno));
    }
    snprintf(trace, sizeof(trace), "%s/trace", tdir);
    setenv("PL_TRACE", trace, 1);
    setenv("LD_PRELOAD", PL_SHIM_PATH, 1);
    if (sync_delay) {
        setenv("PL_SYNC_DELAY_US", sync_delay, 1);
    }
    bu_server_start(&srv, tdir, NULL);
    unsetenv("LD_PRELOAD");
    int tfd = open(trace, O_WRONLY | O_APPEND);
    if (tfd < 0) {
        fail("the shim made no trace at %s (is %s preloaded?)", trace, PL_SHIM_PATH);
    }
    struct writer *w = calloc(writers, sizeof(*w));
    for (unsigned i = 0; i < writers; i++) {
        w[i] = (struct writer){.id = i, .addr = srv.addr, .trace_fd = tfd, .inflight = inflight,
                               .count = appends / writers + (i < appends % writers)};
        pthread_create(&w[i].t, NULL, writer_main, &w[i]);
    }
    unsigned acked = 0;
    for (unsigned i = 0; i < writers; i++) {
        pthread_join(w[i].t, NULL);
        acked += w[i].acked;
    }
    kill(srv.pid, SIGKILL);
    waitpid(srv.pid, NULL, 0);
    close(tfd);
    free(w);
    fprintf(stderr, "pl_run: %u appends acknowledged in %.1f s; building crash states\n",
            acked, bu_now() - t0);

    /* 3: crash states */
    size_t n;
    uint8_t *tbuf;
    struct rec *r = read_trace(trace, &n, &tbuf);
    size_t first_sync = n, n_sync = 0, n_write = 0, n_ack = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].type == PL_SYNC) {
            n_sync++;
            if (first_sync == n) {
                first_sync = i;
            }
        }
        n_write += r[i].type == PL_WRITE;
        n_ack += r[i].type == PL_ACK;
    }
    if (n_ack != acked) {
        fail("trace holds %zu acknowledgements, the writers made %u", n_ack, acked);
    }
    if (first_sync + 1 >= n) {
        fail("the trace has no sync followed by anything (%zu records)", n);
    }
    uint64_t *points = malloc(states * sizeof(*points));
    for (unsigned i = 0; i < states; i++) {
        points[i] = first_sync + 1 + rnd() % (n - first_sync - 1);
    }
    qsort(points, states, sizeof(*points), cmp_u64);

    char sdir[320];
    snprintf(sdir, sizeof(sdir), "%s/state", tdir);
    mkdir(sdir, 0755);
    struct image durable = {0}, crash = {0};
    size_t applied = 0;     /* records folded into `durable` */
    size_t last_sync = 0;   /* index of the last sync folded */
    uint64_t acked_max = 0; /* over the records before the current point */
    size_t acked_upto = 0;
    size_t opened = 0, torn = 0;
    for (unsigned s = 0; s < states; s++) {
        size_t point = points[s];
        /* fold every write before the last sync that precedes point */
        size_t sync_at = last_sync;
        for (size_t i = applied; i < point; i++) {
            if (r[i].type == PL_SYNC) {
                sync_at = i;
            }
        }
        for (size_t i = applied; i < sync_at; i++) {
            if (r[i].type == PL_WRITE) {
                img_write(&durable, r[i].off, r[i].data, r[i].len);
            }
        }
        if (sync_at > applied) {
            applied = sync_at;
        }
        last_sync = sync_at;
        for (; acked_upto < point; acked_upto++) {
            if (r[acked_upto].type == PL_ACK && r[acked_upto].off > acked_max) {
                acked_max = r[acked_upto].off;
            }
        }
        /* the crash image: durable, then some sectors of the writes after */
        crash.len = 0;
        if (durable.len) {
            img_write(&crash, 0, durable.p, durable.len);
        }
        for (size_t i = sync_at + 1; i < point; i++) {
            if (r[i].type != PL_WRITE) {
                continue;
            }
            unsigned mode = (unsigned)(rnd() % 4); /* 0 lost, 1 whole, 2-3 torn */
            if (mode == 1) {
                img_write(&crash, r[i].off, r[i].data, r[i].len);
            } else if (mode >= 2) {
                torn++;
                for (uint64_t at = 0; at < r[i].len;) {
                    uint64_t end = ((r[i].off + at) / SECTOR + 1) * SECTOR - r[i].off;
                    if (end > r[i].len) {
                        end = r[i].len;
                    }
                    if (rnd() & 1) {
                        img_write(&crash, r[i].off + at, r[i].data + at, end - at);
                    }
                    at = end;
                }
            }
        }
        check_state(sdir, &crash, point, acked_max, &opened);
        if ((s + 1) % 1000 == 0 || s + 1 == states) {
            fprintf(stderr, "pl_run: %u/%u states checked (%.1f s)\n", s + 1, states,
                    bu_now() - t0);
        }
    }
    printf("pl_run: PASS: %u crash states from %zu records (%zu writes, %zu syncs, %zu "
           "acknowledgements; %zu torn writes over all states): every state opened, verified, and held every "
           "append acknowledged before its crash point; %.1f s\n",
           states, n, n_write, n_sync, n_ack, torn, bu_now() - t0);
    free(points);
    free(r);
    free(tbuf);
    free(durable.p);
    free(crash.p);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "pl_run: could not remove %s\n", tdir);
    }
    return 0;
}

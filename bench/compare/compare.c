/*
 * compare.c - the load generator of bench/compare/compare: Annals and the
 * stores users would pick instead (PostgreSQL 15, Redis 7, NATS JetStream)
 * driven by the same C program, so that every system pays the same client
 * overhead: the same threads, the same ~200-byte event, an expected-version
 * check on every append, the same clock.
 *
 *   compare_load run SYSTEM ADDR --out DIR [--reps 3] [--seconds 5]
 *                [--read-events 1000000] [--server-pid PID] [--probe-dir DIR]
 *                [--workloads append1,append64,pipe64,hot64,read]
 *   compare_load ceiling DIR --out DIR [--reps 3] [--seconds 3]
 *   compare_load report DIR
 *   compare_load drivers        (the systems this build can drive)
 *
 * SYSTEM and ADDR: annals and a directory (annalsd, ANNALSD_PATH or the
 * ANNALSD environment variable, is started on a temp dir under it, on
 * loopback, with --http for its metrics), pg and a libpq conninfo, redis and
 * HOST:PORT, nats and nats://HOST:PORT. --server-pid: the peer's server
 * process, whose CPU time (its children's included) is recorded.
 * --probe-dir: a directory on the peer's disk, where a 1 s fdatasync probe
 * runs first (for annals: under ADDR), recorded as system "disk@SYSTEM".
 *
 * Workloads, each repeated --reps times, each repetition bounded by a count
 * and by --seconds:
 *   append1   1 client appends one event at a time to its own 16 streams,
 *             each append expecting the stream's current version;
 *   append64  64 clients (threads, a connection each), each its own streams;
 *             annals also as "annals-1ch": the 64 threads share one client
 *             (one HTTP/2 connection), as one service's threads would;
 *   pipe64    one connection, 64 appends in flight (Annals AppendStream,
 *             Redis pipelined EVALSHA, PostgreSQL pipeline mode);
 *   hot64     64 clients on 8 shared streams: read the stream's version,
 *             append at it; a conflict is counted and the client reads again;
 *   read      fill --read-events events (untimed, the system's fastest bulk
 *             path), then read them back in the system's global order.
 * After annals' workloads, "ceiling-grpc" call1 and call64: the append1
 * and append64 crews calling Health/Check instead (gRPC's floor).
 * Output in DIR: compare-raw.csv (a row per repetition) and compare.csv (a
 * row per workload: the median repetition by events/s, with the min and max
 * of events/s over the repetitions), both
 * appended to. For annals each row also carries what annalsd's /metrics
 * said about the repetition (commits, batch, commit time). Progress lines
 * go to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmp.h"

#define MAX_REPS 9
#define OWN_STREAMS 16
#define HOT_STREAMS 8
#define MANY 64

char cmp_payload[CMP_PAYLOAD + 1];
struct cmp_limits cmp_lim = {.seconds = 5, .read_events = 1000000, .pipe_depth = 64};

static int g_reps = 3;
static const char *g_out;
static const char *g_system;    /* the CSV name of what is measured */
static pid_t g_server_pid;      /* the measured server, for its CPU time */
static int g_http_port;         /* annalsd's --http port, 0 for the peers */
static const char *g_probe_dir; /* --probe-dir: the disk probed before a system runs */
static const char *g_only;      /* --workloads: a comma list, NULL: all */

_Noreturn void cmp_die(const char *what, const char *detail)
{
    fprintf(stderr, "compare: %s: %s\n", what, detail ? detail : "");
    exit(1);
}

bool cmp_time_up(double t0)
{
    return bu_now() - t0 >= cmp_lim.seconds;
}

bool cmp_fill_up(double t0, unsigned done)
{
    if (bu_now() - t0 < CMP_FILL_SECONDS) {
        return false;
    }
    fprintf(stderr, "compare: the fill ran out of time after %u events: reading those\n", done);
    cmp_lim.read_events = done;
    return true;
}

/* ---- what a repetition costs: CPU, and annalsd's own figures ---- */

/* CPU seconds of pid and every process below it (PostgreSQL's backends),
 * the ended ones included. */
static double tree_cpu(pid_t root)
{
    enum { MAXP = 4096 };
    static pid_t pid[MAXP], ppid[MAXP];
    static double cpu[MAXP];
    size_t n = 0;
    if (root <= 0) {
        return 0;
    }
    DIR *d = opendir("/proc");
    struct dirent *e;
    long hz = sysconf(_SC_CLK_TCK);
    while (d && (e = readdir(d)) && n < MAXP) {
        char path[300], buf[1024];
        if (e->d_name[0] < '1' || e->d_name[0] > '9') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f) {
            fclose(f);
        }
        buf[len] = 0;
        const char *p = strrchr(buf, ')'); /* the name may hold spaces */
        int pp;
        unsigned long ut, st;
        long cut, cst;
        if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &pp,
                         &ut, &st, &cut, &cst) != 5) {
            continue;
        }
        pid[n] = atoi(e->d_name);
        ppid[n] = pp;
        /* with the reaped children's: a backend that ends between two
         * looks moves its time to the postmaster's, and is not lost */
        cpu[n++] = (double)(ut + st + (unsigned long)cut + (unsigned long)cst) / (double)hz;
    }
    if (d) {
        closedir(d);
    }
    /* mark the tree: a few passes reach any depth PostgreSQL uses */
    static bool in[MAXP];
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        in[i] = pid[i] == root;
    }
    for (int pass = 0; pass < 4; pass++) {
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < n && !in[i]; j++) {
                in[i] = in[j] && ppid[i] == pid[j];
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        sum += in[i] ? cpu[i] : 0;
    }
    return sum;
}

static double self_cpu(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

/* What annalsd's /metrics says; deltas make a repetition's figures. */
struct srv_stats {
    double appends, commits, syncs, commit_s, batch_sum, call_s, calls;
};

/* GET /metrics from annalsd's --http port into a malloc'd string. */
static char *http_metrics(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 4096) {
            char *b2 = realloc(buf, cap * 2);
            if (!b2) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b2;
            cap *= 2;
        }
    }
    close(fd);
    if (buf) {
        buf[len] = 0;
    }
    return buf;
}

/* The value of the sample line that starts with `name` (labels included). */
static double metric(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            return atof(p + nl + 1);
        }
    }
    return 0;
}

static void srv_stats_get(struct srv_stats *s)
{
    *s = (struct srv_stats){0};
    char *t = g_http_port ? http_metrics(g_http_port) : NULL;
    if (!t) {
        return;
    }
    s->appends = metric(t, "annals_appends_total");
    s->commits = metric(t, "annals_commits_total");
    s->syncs = metric(t, "annals_syncs_total");
    s->commit_s = metric(t, "annals_commit_seconds_sum");
    s->batch_sum = metric(t, "annals_commit_batch_size_sum");
    s->call_s = metric(t, "annals_grpc_call_seconds_sum{method=\"annals.v1.Commands/Append\"}");
    s->calls = metric(t, "annals_grpc_call_seconds_count{method=\"annals.v1.Commands/Append\"}");
    free(t);
}

/* Everything measured around one repetition. */
struct snap {
    double t, self, server;
    struct srv_stats st;
};

static void snap_take(struct snap *s)
{
    srv_stats_get(&s->st);
    s->server = tree_cpu(g_server_pid);
    s->self = self_cpu();
    s->t = bu_now();
}

/* One repetition's figures, as the CSV rows carry them. */
struct rep {
    double eps, p50, p99, mean;
    uint64_t n, conflicts;
    double secs;
    double client_cores, server_cores;
    double commits, mean_batch, commit_ms, writer_busy, syncs_per_commit, call_ms;
};

static void rep_fill(struct rep *r, struct cmp_meas *m, const struct snap *a, const struct snap *b)
{
    double wall = b->t - a->t, sum = 0;
    bu_lat_sort(&m->lat);
    for (size_t i = 0; i < m->lat.n; i++) {
        sum += m->lat.us[i] / 1000.0;
    }
    *r = (struct rep){
        .eps = m->secs > 0 ? (double)m->n / m->secs : 0,
        .p50 = bu_pct(&m->lat, 0.50),
        .p99 = bu_pct(&m->lat, 0.99),
        .mean = m->lat.n ? sum / (double)m->lat.n : 0,
        .n = m->n,
        .conflicts = m->conflicts,
        .secs = m->secs,
        .client_cores = wall > 0 ? (b->self - a->self) / wall : 0,
        .server_cores = wall > 0 ? (b->server - a->server) / wall : 0,
    };
    double commits = b->st.commits - a->st.commits;
    if (commits > 0) {
        r->commits = commits;
        r->mean_batch = (b->st.batch_sum - a->st.batch_sum) / commits;
        r->commit_ms = (b->st.commit_s - a->st.commit_s) / commits * 1e3;
        r->writer_busy = wall > 0 ? (b->st.commit_s - a->st.commit_s) / wall : 0;
        r->syncs_per_commit = (b->st.syncs - a->st.syncs) / commits;
    }
    double calls = b->st.calls - a->st.calls;
    if (calls > 0) {
        r->call_ms = (b->st.call_s - a->st.call_s) / calls * 1e3;
    }
    bu_lat_free(&m->lat);
}

/* ---- CSV ---- */

static const char csv_cols[] =
    "events_s,p50_ms,p99_ms,conflicts,client_cores,server_cores,commits,mean_batch,"
    "commit_ms,writer_busy,syncs_per_commit,srv_append_ms,mean_ms,events";

static FILE *csv_open(const char *name, const char *head)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", g_out, name);
    struct stat st;
    bool fresh = stat(path, &st) != 0 || st.st_size == 0;
    FILE *f = fopen(path, "a");
    if (!f) {
        cmp_die(path, strerror(errno));
    }
    if (fresh) {
        fprintf(f, "%s,%s\n", head, csv_cols);
    }
    return f;
}

static void csv_rep(FILE *f, const struct rep *r)
{
    fprintf(f, "%.0f,%.3f,%.3f,%llu,%.2f,%.2f,%.0f,%.1f,%.3f,%.2f,%.2f,%.3f,%.3f,%llu\n",
            r->eps, r->p50, r->p99, (unsigned long long)r->conflicts, r->client_cores,
            r->server_cores, r->commits, r->mean_batch, r->commit_ms, r->writer_busy,
            r->syncs_per_commit, r->call_ms, r->mean, (unsigned long long)r->n);
}

static int cmp_eps(const void *a, const void *b)
{
    double x = ((const struct rep *)a)->eps, y = ((const struct rep *)b)->eps;
    return x < y ? -1 : x > y;
}

/* Writes the repetitions' rows and the workload's summary row. */
static void record(const char *system, const char *wl, int clients, struct rep *r, int n)
{
    FILE *raw = csv_open("compare-raw.csv", "system,workload,clients,rep,seconds");
    for (int i = 0; i < n; i++) {
        fprintf(raw, "%s,%s,%d,%d,%.3f,", system, wl, clients, i + 1, r[i].secs);
        csv_rep(raw, &r[i]);
    }
    fclose(raw);
    qsort(r, (size_t)n, sizeof(*r), cmp_eps);
    struct rep m = r[n / 2];
    FILE *sum = csv_open("compare.csv", "system,workload,clients,eps_min,eps_max");
    fprintf(sum, "%s,%s,%d,%.0f,%.0f,", system, wl, clients, r[0].eps, r[n - 1].eps);
    csv_rep(sum, &m);
    fclose(sum);
}

static void progress(const char *system, const char *wl, int i, int n, const struct rep *r)
{
    fprintf(stderr, "compare: [%s] %s rep %d/%d: %.0f events/s, p50 %.2f ms, p99 %.2f ms", system,
            wl, i + 1, n, r->eps, r->p50, r->p99);
    if (r->conflicts) {
        fprintf(stderr, ", %llu conflicts", (unsigned long long)r->conflicts);
    }
    if (r->commits > 0) {
        fprintf(stderr, " (annalsd: batch %.1f, commit %.2f ms, writer busy %.0f%%)",
                r->mean_batch, r->commit_ms, r->writer_busy * 100);
    }
    fprintf(stderr, "; cores: client %.2f, server %.2f\n", r->client_cores, r->server_cores);
}

/* ---- the client workloads (append1, append64, hot64) ---- */

struct crew;

struct worker {
    pthread_t t;
    struct crew *crew;
    int id;
    uint64_t quota;
    uint64_t done, conflicts;
    struct bu_lat lat;
};

/* What each client of a crew does in its loop. */
enum crew_work {
    CREW_OWN,                   /* appends to streams of its own */
    CREW_HOT,                   /* read, then append, on shared hot streams */
    CREW_PING,                  /* d->ping: a round trip writing nothing */
};

struct crew {
    const struct cmp_driver *d;
    const char *tag;            /* stream names: system, workload, repetition */
    enum crew_work work;
    double t0;                  /* written before `go` */
    pthread_barrier_t ready, go, done, closed;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct crew *c = w->crew;
    void *conn = c->d->open();
    bool hot = c->work == CREW_HOT;
    int n = hot ? HOT_STREAMS : OWN_STREAMS;
    char names[OWN_STREAMS][96];
    int64_t token[OWN_STREAMS];
    for (int i = 0; i < n; i++) {
        if (hot) {
            snprintf(names[i], sizeof(names[i]), "%s-hot-%d", c->tag, i);
        } else {
            snprintf(names[i], sizeof(names[i]), "%s-c%d-%d", c->tag, w->id, i);
        }
        token[i] = -1;
    }
    pthread_barrier_wait(&c->ready);
    pthread_barrier_wait(&c->go);
    for (uint64_t i = 0; w->done < w->quota && !cmp_time_up(c->t0); i++) {
        int s = (int)((i + (uint64_t)w->id) % (uint64_t)n);
        double t = bu_now();
        int64_t next = 0;
        if (c->work == CREW_PING) {
            c->d->ping(conn);
        } else if (hot) {
            /* read the version, append at it; retry from the read */
            for (;;) {
                c->d->current(conn, names[s], &token[s]);
                if (c->d->append(conn, names[s], token[s], &next) == CMP_OK) {
                    break;
                }
                w->conflicts++;
                if (cmp_time_up(c->t0)) {
                    goto out;
                }
            }
        } else if (c->d->append(conn, names[s], token[s], &next) != CMP_OK) {
            cmp_die(c->d->name, "a conflict on a stream of one client's own");
        }
        bu_lat_add(&w->lat, bu_now() - t);
        token[s] = next;
        w->done++;
    }
out:
    pthread_barrier_wait(&c->done);
    pthread_barrier_wait(&c->closed);
    c->d->close(conn);
    return NULL;
}

/* A crew of `clients` threads, each its own connection (d->open), doing
 * `total` of `work` in all. */
static void run_crew(const struct cmp_driver *d, const char *tag, int clients, enum crew_work work,
                     uint64_t total, struct cmp_meas *m, struct snap *a, struct snap *b)
{
    struct crew c = {.d = d, .tag = tag, .work = work};
    struct worker *w = calloc((size_t)clients, sizeof(*w));
    if (!w) {
        cmp_die("workers", "no memory");
    }
    pthread_barrier_init(&c.ready, NULL, (unsigned)clients + 1);
    pthread_barrier_init(&c.go, NULL, (unsigned)clients + 1);
    pthread_barrier_init(&c.done, NULL, (unsigned)clients + 1);
    pthread_barrier_init(&c.closed, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        w[i] = (struct worker){.crew = &c, .id = i, .quota = total / (uint64_t)clients};
        if (pthread_create(&w[i].t, NULL, worker_main, &w[i])) {
            cmp_die("pthread_create", strerror(errno));
        }
    }
    pthread_barrier_wait(&c.ready); /* every client connected */
    snap_take(a);
    c.t0 = a->t;
    pthread_barrier_wait(&c.go);
    pthread_barrier_wait(&c.done);
    snap_take(b);                   /* before the connections close */
    pthread_barrier_wait(&c.closed);
    *m = (struct cmp_meas){.secs = b->t - a->t};
    for (int i = 0; i < clients; i++) {
        pthread_join(w[i].t, NULL);
        m->n += w[i].done;
        m->conflicts += w[i].conflicts;
        bu_lat_merge(&m->lat, &w[i].lat);
    }
    pthread_barrier_destroy(&c.ready);
    pthread_barrier_destroy(&c.go);
    pthread_barrier_destroy(&c.done);
    pthread_barrier_destroy(&c.closed);
    free(w);
}

/* ---- running a workload ---- */

enum wl { WL_APPEND1, WL_APPEND64, WL_PIPE64, WL_HOT64, WL_READ };

static const char *const wl_name[] = {"append1", "append64", "pipe64", "hot64", "read"};

/*
 * With CMP_PERF_DIR set (the script sets it when perf works): one more
 * repetition, not recorded, under `perf record -a -g` for all but its first
 * and last half second, into CMP_PERF_DIR/perf-WORKLOAD.data.
 */
static void profile(const struct cmp_driver *d, const char *system, enum wl wl)
{
    const char *dir = getenv("CMP_PERF_DIR");
    char out[600], secs[32], tag[64];
    struct cmp_meas m = {0};
    struct snap a, b;
    if (!dir || cmp_lim.seconds < 2) {
        return;
    }
    snprintf(out, sizeof(out), "%s/perf-%s.data", dir, wl_name[wl]);
    snprintf(secs, sizeof(secs), "%.1f", cmp_lim.seconds - 1);
    snprintf(tag, sizeof(tag), "%s-%s-profiled", system, wl_name[wl]);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) {
            _exit(127);
        }
        execlp("perf", "perf", "record", "-a", "-g", "-q", "-o", out, "--", "sleep", secs,
               (char *)NULL);
        _exit(127);
    }
    if (pid < 0) {
        return;
    }
    usleep(500000);
    run_crew(d, tag, wl == WL_APPEND1 ? 1 : MANY, CREW_OWN, 2000000, &m, &a, &b);
    waitpid(pid, NULL, 0);
    bu_lat_free(&m.lat);
    fprintf(stderr, "compare: [%s] %s: one more repetition profiled (%s)\n", system,
            wl_name[wl], out);
}

/* --workloads names wl (or is not given) */
static bool wanted(enum wl wl)
{
    size_t n = strlen(wl_name[wl]);
    for (const char *p = g_only; p && *p; p += strcspn(p, ","), p += *p == ',') {
        if (strncmp(p, wl_name[wl], n) == 0 && (p[n] == ',' || p[n] == 0)) {
            return true;
        }
    }
    return !g_only;
}

static void run_workload(const struct cmp_driver *d, const char *system, enum wl wl)
{
    struct rep r[MAX_REPS];
    if (!wanted(wl)) {
        return;
    }
    int clients = wl == WL_APPEND64 || wl == WL_HOT64 ? MANY : 1;
    if (wl == WL_PIPE64) {
        clients = (int)cmp_lim.pipe_depth;
    }
    if (wl == WL_READ) {
        fprintf(stderr, "compare: [%s] read: filling %u events (untimed)\n", system,
                cmp_lim.read_events);
        double t = bu_now();
        d->fill();
        fprintf(stderr, "compare: [%s] read: filled in %.1f s\n", system, bu_now() - t);
    }
    for (int i = 0; i < g_reps; i++) {
        char tag[64];
        struct cmp_meas m = {0};
        struct snap a, b;
        snprintf(tag, sizeof(tag), "%s-%s-r%d", system, wl_name[wl], i + 1);
        switch (wl) {
        case WL_APPEND1:
            run_crew(d, tag, 1, CREW_OWN, 50000, &m, &a, &b);
            break;
        case WL_APPEND64:
            run_crew(d, tag, MANY, CREW_OWN, 2000000, &m, &a, &b);
            break;
        case WL_HOT64:
            run_crew(d, tag, MANY, CREW_HOT, 400000, &m, &a, &b);
            break;
        case WL_PIPE64:
            snap_take(&a);
            d->pipe(&m, tag);
            snap_take(&b);
            break;
        case WL_READ:
            snap_take(&a);
            d->read(&m);
            snap_take(&b);
            break;
        }
        rep_fill(&r[i], &m, &a, &b);
        progress(system, wl_name[wl], i, g_reps, &r[i]);
    }
    record(system, wl_name[wl], clients, r, g_reps);
    if (!strcmp(system, "annals") && (wl == WL_APPEND1 || wl == WL_APPEND64)) {
        profile(d, system, wl);
    }
}

/* ---- ceilings: the disk and raw LMDB, in this run ---- */

/* A 512-byte overwrite + fdatasync in a loop: the disk's sync rate. */
static void ceil_fsync(const char *dir, struct cmp_meas *m)
{
    char path[600];
    char b[512];
    memset(b, 'f', sizeof(b));
    snprintf(path, sizeof(path), "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        cmp_die(path, strerror(errno));
    }
    double t0 = bu_now();
    for (m->n = 0; m->n < 200000 && !cmp_time_up(t0); m->n++) {
        double t = bu_now();
        if (pwrite(fd, b, sizeof(b), (off_t)(m->n % 16) * 512) != (ssize_t)sizeof(b) ||
            fdatasync(fd)) {
            cmp_die("fsync probe", strerror(errno));
        }
        bu_lat_add(&m->lat, bu_now() - t);
    }
    m->secs = bu_now() - t0;
    close(fd);
    unlink(path);
}

/*
 * Raw LMDB, durable commits of `batch` events from one thread, each event
 * what an event store writes: a get and a put of the stream's version, the
 * event under its global position (append), and a (stream, version) index
 * entry. Latency is per commit.
 */
static void ceil_lmdb(const char *dir, unsigned batch, struct cmp_meas *m)
{
    char path[600];
    char cmd[700];
    static uint64_t ver[1000];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi ev, st, ix;
    snprintf(path, sizeof(path), "%s/lmdb-ceiling", dir);
    mkdir(path, 0755);
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 4) ||
        mdb_env_set_mapsize(env, (size_t)8 << 30) || mdb_env_open(env, path, 0, 0644) ||
        mdb_txn_begin(env, NULL, 0, &txn) ||
        mdb_dbi_open(txn, "events", MDB_CREATE | MDB_INTEGERKEY, &ev) ||
        mdb_dbi_open(txn, "streams", MDB_CREATE, &st) ||
        mdb_dbi_open(txn, "index", MDB_CREATE, &ix) || mdb_txn_commit(txn)) {
        cmp_die("lmdb ceiling", path);
    }
    memset(ver, 0, sizeof(ver));
    uint64_t pos = 0;
    double t0 = bu_now();
    while (pos < 3000000 && !cmp_time_up(t0)) {
        double t = bu_now();
        if (mdb_txn_begin(env, NULL, 0, &txn)) {
            cmp_die("lmdb ceiling", "txn begin");
        }
        for (unsigned k = 0; k < batch; k++) {
            char name[32], ik[48];
            pos++;
            unsigned s = (unsigned)((pos * 2654435761u) % 1000u);
            int nl = snprintf(name, sizeof(name), "account-%04u", s);
            MDB_val key = {(size_t)nl, name}, val;
            (void)mdb_get(txn, st, &key, &val); /* the expected-version check */
            ver[s]++;
            val = (MDB_val){sizeof(ver[s]), &ver[s]};
            MDB_val pk = {sizeof(pos), &pos}, pv = {CMP_PAYLOAD + 64, cmp_payload};
            memcpy(ik, name, (size_t)nl);
            memcpy(ik + nl, &ver[s], sizeof(ver[s]));
            MDB_val ikey = {(size_t)nl + sizeof(ver[s]), ik}, ival = {sizeof(pos), &pos};
            if (mdb_put(txn, st, &key, &val, 0) || mdb_put(txn, ev, &pk, &pv, MDB_APPEND) ||
                mdb_put(txn, ix, &ikey, &ival, 0)) {
                cmp_die("lmdb ceiling", "put");
            }
        }
        if (mdb_txn_commit(txn)) {
            cmp_die("lmdb ceiling", "commit");
        }
        bu_lat_add(&m->lat, bu_now() - t);
    }
    m->secs = bu_now() - t0;
    m->n = pos;
    mdb_env_close(env);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "compare: could not remove %s\n", path);
    }
}

static void run_ceilings(const char *dir)
{
    static const struct {
        const char *system, *wl;
        unsigned batch;
    } what[] = {{"ceiling-fsync", "fdatasync", 0},
                {"ceiling-lmdb", "commit1", 1},
                {"ceiling-lmdb", "commit64", 64}};
    for (size_t w = 0; w < sizeof(what) / sizeof(what[0]); w++) {
        struct rep r[MAX_REPS];
        for (int i = 0; i < g_reps; i++) {
            struct cmp_meas m = {0};
            struct snap a, b;
            snap_take(&a);
            if (what[w].batch) {
                ceil_lmdb(dir, what[w].batch, &m);
            } else {
                ceil_fsync(dir, &m);
            }
            snap_take(&b);
            rep_fill(&r[i], &m, &a, &b);
            progress(what[w].system, what[w].wl, i, g_reps, &r[i]);
        }
        record(what[w].system, what[w].wl, (int)(what[w].batch ? what[w].batch : 1), r, g_reps);
    }
}

/*
 * gRPC's floor, in this run: the same crews as append1 and append64, each
 * call a Health/Check that annalsd answers on its CQ thread (no writer, no
 * disk). What unary appends from this load generator can reach at best on
 * these cores, whatever the server does behind the call.
 */
static void run_grpc_floor(const struct cmp_driver *d)
{
    static const struct {
        const char *wl;
        int clients;
    } what[] = {{"call1", 1}, {"call64", MANY}};
    for (size_t w = 0; w < sizeof(what) / sizeof(what[0]); w++) {
        struct rep r[MAX_REPS];
        for (int i = 0; i < g_reps; i++) {
            struct cmp_meas m = {0};
            struct snap a, b;
            run_crew(d, "ping", what[w].clients, CREW_PING, 2000000, &m, &a, &b);
            rep_fill(&r[i], &m, &a, &b);
            progress("ceiling-grpc", what[w].wl, i, g_reps, &r[i]);
        }
        record("ceiling-grpc", what[w].wl, what[w].clients, r, g_reps);
    }
}

/* The disk's fdatasync rate just before a system runs (1 s): on a shared
 * machine it drifts, and every durable figure depends on it. */
static void probe_disk(const char *system, const char *dir)
{
    struct cmp_meas m = {0};
    struct snap a, b;
    struct rep r;
    char name[64];
    double keep = cmp_lim.seconds;
    if (!dir) {
        return;
    }
    cmp_lim.seconds = 1;
    snap_take(&a);
    ceil_fsync(dir, &m);
    snap_take(&b);
    cmp_lim.seconds = keep;
    rep_fill(&r, &m, &a, &b);
    snprintf(name, sizeof(name), "disk@%s", system);
    progress(name, "fdatasync", 0, 1, &r);
    record(name, "fdatasync", 1, &r, 1);
}

/* ---- main ---- */

/* annalsd's --http port from its log's "started" line */
static int annalsd_http_port(const struct bu_server *s)
{
    char path[300], line[2048];
    int port = 0;
    snprintf(path, sizeof(path), "%s/annalsd.log", s->dir);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "msg=\"started\"");
        const char *q = p ? strstr(p, "http_port=") : NULL;
        if (q) {
            port = atoi(q + 10);
        }
    }
    if (f) {
        fclose(f);
    }
    return port;
}

/* Saves annalsd's /metrics after the run next to the report. */
static void save_metrics(void)
{
    char path[600];
    char *t = g_http_port ? http_metrics(g_http_port) : NULL;
    const char *body = t ? strstr(t, "\r\n\r\n") : NULL;
    snprintf(path, sizeof(path), "%s/annals-metrics.txt", g_out);
    FILE *f = body ? fopen(path, "w") : NULL;
    if (f) {
        fputs(body + 4, f);
        fclose(f);
    }
    free(t);
}

static int run_annals(const char *base)
{
    static const char *const flags[] = {"--http", "127.0.0.1:0", NULL};
    struct bu_server s;
    static char addr[64];
    char pidfile[600];
    bu_server_start(&s, base, flags);
    /* for the script, to stop it should this process be killed */
    snprintf(pidfile, sizeof(pidfile), "%s/annalsd.pid", g_out);
    FILE *pf = fopen(pidfile, "w");
    if (pf) {
        fprintf(pf, "%d\n", (int)s.pid);
        fclose(pf);
    }
    snprintf(addr, sizeof(addr), "%s", s.addr);
    cmp_annals_addr = addr;
    g_server_pid = s.pid;
    g_http_port = annalsd_http_port(&s);
    if (!g_http_port) {
        fprintf(stderr, "compare: annalsd's --http port not found: no server figures\n");
    }
    const struct cmp_driver *d = &cmp_annals;
    probe_disk("annals", base);
    d->setup(addr);
    run_workload(d, "annals", WL_APPEND1);
    run_workload(d, "annals", WL_APPEND64);
    cmp_annals_shared = true;
    run_workload(d, "annals-1ch", WL_APPEND64);
    cmp_annals_shared = false;
    run_workload(d, "annals", WL_PIPE64);
    run_workload(d, "annals", WL_HOT64);
    cmp_annals_shared = true;
    run_workload(d, "annals-1ch", WL_HOT64);
    cmp_annals_shared = false;
    run_workload(d, "annals", WL_READ);
    if (wanted(WL_APPEND64) && d->ping) {
        run_grpc_floor(d);
    }
    save_metrics();
    double batch = bu_server_stop(&s);
    unlink(pidfile);
    fprintf(stderr, "compare: [annals] annalsd stopped; mean batch over the run %.1f\n", batch);
    return 0;
}

static const struct cmp_driver *peer(const char *name)
{
#ifdef HAVE_PQ
    if (!strcmp(name, "pg")) {
        return &cmp_pg;
    }
#endif
#ifdef HAVE_HIREDIS
    if (!strcmp(name, "redis")) {
        return &cmp_redis;
    }
#endif
#ifdef HAVE_NATS
    if (!strcmp(name, "nats")) {
        return &cmp_nats;
    }
#endif
    (void)name;
    return NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: compare_load run annals|pg|redis|nats ADDR --out DIR [--reps N] "
            "[--seconds S] [--read-events N] [--server-pid PID] [--probe-dir DIR] "
            "[--workloads append1,append64,pipe64,hot64,read]\n"
            "       compare_load ceiling DIR --out DIR [--reps N] [--seconds S]\n"
            "       compare_load report DIR\n"
            "       compare_load drivers\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "report")) {
        return cmp_report(argc, argv);
    }
    if (argc == 2 && !strcmp(argv[1], "drivers")) {
        const char *const names[] = {"pg", "redis", "nats"};
        printf("annals");
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            printf("%s%s", peer(names[i]) ? " " : "", peer(names[i]) ? names[i] : "");
        }
        printf("\n");
        return 0;
    }
    bool run = argc >= 4 && !strcmp(argv[1], "run");
    bool ceil = argc >= 3 && !strcmp(argv[1], "ceiling");
    if (!run && !ceil) {
        usage();
    }
    for (int i = run ? 4 : 3; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (!strcmp(argv[i], "--reps")) {
            g_reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds")) {
            cmp_lim.seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--read-events")) {
            cmp_lim.read_events = (unsigned)atol(argv[++i]);
        } else if (!strcmp(argv[i], "--server-pid")) {
            g_server_pid = (pid_t)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--workloads")) {
            g_only = argv[++i];
        } else if (!strcmp(argv[i], "--probe-dir")) {
            g_probe_dir = argv[++i];
        } else if (!strcmp(argv[i], "--out")) {
            g_out = argv[++i];
        } else {
            usage();
        }
    }
    if (!g_out || g_reps < 1 || g_reps > MAX_REPS || cmp_lim.seconds <= 0 ||
        cmp_lim.read_events < 1000) {
        usage();
    }
    memset(cmp_payload, 'x', CMP_PAYLOAD);
    memcpy(cmp_payload, "{\"amount\":1250,\"pad\":\"", 22);
    memcpy(cmp_payload + CMP_PAYLOAD - 2, "\"}", 2);
    if (ceil) {
        run_ceilings(argv[2]);
        return 0;
    }
    g_system = argv[2];
    if (!strcmp(g_system, "annals")) {
        return run_annals(argv[3]);
    }
    const struct cmp_driver *d = peer(g_system);
    if (!d) {
        fprintf(stderr, "compare: %s: not built in (its C client library was missing)\n",
                g_system);
        return 3;
    }
    probe_disk(g_system, g_probe_dir);
    d->setup(argv[3]);
    run_workload(d, g_system, WL_APPEND1);
    run_workload(d, g_system, WL_APPEND64);
    if (d->pipe) {
        run_workload(d, g_system, WL_PIPE64);
    }
    run_workload(d, g_system, WL_HOT64);
    if (d->read) {
        run_workload(d, g_system, WL_READ);
    }
    return 0;
}

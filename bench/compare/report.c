/*
 * report.c - `compare_load report DIR`: turns DIR/compare.csv (written by
 * the runs) into DIR/compare.md (machine, table, ratios, ceilings, targets,
 * where Annals' time goes, durability notes) and the gnuplot inputs
 * DIR/compare.gp, DIR/compare-eps.dat, DIR/compare-p50.dat,
 * DIR/compare-p99.dat (the script then runs gnuplot for compare.png).
 *
 * It also reads, when present: DIR/machine.md (lines copied as they are),
 * DIR/status.txt (a line per peer or workload that did not run) and
 * DIR/run.txt ("key value" lines: reps, seconds, read_events, runtime,
 * command, nproc).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmp.h"

#define MAX_ROWS 64

struct row {
    char system[32], workload[32];
    int clients;
    double eps_min, eps_max, eps, p50, p99, conflicts, client_cores, server_cores, commits,
        mean_batch, commit_ms, writer_busy, syncs_per_commit, call_ms, mean, events;
};

static struct row rows[MAX_ROWS];
static int n_rows;
static char run_kv[32][2][256];
static int n_kv;
static const char *g_dir;       /* the directory of the inputs and outputs */

/* ---- input ---- */

static void load_csv(const char *dir)
{
    char path[600], line[1024];
    snprintf(path, sizeof(path), "%s/compare.csv", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        cmp_die(path, strerror(errno));
    }
    while (fgets(line, sizeof(line), f) && n_rows < MAX_ROWS) {
        struct row *r = &rows[n_rows];
        char *save = NULL;
        char *tok[20];
        int n = 0;
        line[strcspn(line, "\r\n")] = 0;
        for (char *t = strtok_r(line, ",", &save); t && n < 20; t = strtok_r(NULL, ",", &save)) {
            tok[n++] = t;
        }
        if (n < 19 || !strcmp(tok[0], "system")) {
            continue;
        }
        snprintf(r->system, sizeof(r->system), "%s", tok[0]);
        snprintf(r->workload, sizeof(r->workload), "%s", tok[1]);
        r->clients = atoi(tok[2]);
        double *v[] = {&r->eps_min,      &r->eps_max,      &r->eps,          &r->p50,
                       &r->p99,          &r->conflicts,    &r->client_cores, &r->server_cores,
                       &r->commits,      &r->mean_batch,   &r->commit_ms,    &r->writer_busy,
                       &r->syncs_per_commit, &r->call_ms, &r->mean, &r->events};
        for (int i = 0; i < 16; i++) {
            *v[i] = atof(tok[3 + i]);
        }
        n_rows++;
    }
    fclose(f);
}

static void load_run(const char *dir)
{
    char path[600], line[600];
    snprintf(path, sizeof(path), "%s/run.txt", dir);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f) && n_kv < 32) {
        line[strcspn(line, "\r\n")] = 0;
        char *sp = strchr(line, ' ');
        if (!sp) {
            continue;
        }
        *sp = 0;
        snprintf(run_kv[n_kv][0], sizeof(run_kv[n_kv][0]), "%.255s", line);
        snprintf(run_kv[n_kv][1], sizeof(run_kv[n_kv][1]), "%.255s", sp + 1);
        n_kv++;
    }
    if (f) {
        fclose(f);
    }
}

static const char *run_get(const char *key, const char *dflt)
{
    for (int i = 0; i < n_kv; i++) {
        if (!strcmp(run_kv[i][0], key)) {
            return run_kv[i][1];
        }
    }
    return dflt;
}

static const struct row *find(const char *system, const char *workload)
{
    for (int i = 0; i < n_rows; i++) {
        if (!strcmp(rows[i].system, system) && !strcmp(rows[i].workload, workload)) {
            return &rows[i];
        }
    }
    return NULL;
}

/* Copies DIR/name into out, line by line; false if there is no such file. */
static bool copy_file(FILE *out, const char *dir, const char *name, const char *prefix)
{
    char path[600], line[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    bool any = false;
    while (fgets(line, sizeof(line), f)) {
        fprintf(out, "%s%s", prefix, line);
        any = true;
    }
    fclose(f);
    return any;
}

/* ---- names ---- */

static const char *const systems[] = {"annals", "annals-1ch", "pg", "redis", "nats"};
enum { N_SYSTEMS = sizeof(systems) / sizeof(systems[0]) };

static const char *system_label(const char *s)
{
    if (!strcmp(s, "annals")) {
        return "**Annals**";
    }
    if (!strcmp(s, "annals-1ch")) {
        return "Annals, the 64 threads sharing one connection";
    }
    if (!strcmp(s, "pg")) {
        return "PostgreSQL 15, synchronous_commit on";
    }
    if (!strcmp(s, "redis")) {
        return "Redis 7, AOF appendfsync always";
    }
    if (!strcmp(s, "nats")) {
        return "NATS JetStream 2.9, **not durable per ack**";
    }
    return s;
}

static const char *const workloads[] = {"append1", "append64", "pipe64", "hot64", "read"};
enum { N_WORKLOADS = sizeof(workloads) / sizeof(workloads[0]) };

static const char *workload_label(const char *w, char *buf, size_t len)
{
    if (!strcmp(w, "append1")) {
        return "durable append, 1 client";
    }
    if (!strcmp(w, "append64")) {
        return "durable append, 64 clients";
    }
    if (!strcmp(w, "pipe64")) {
        return "pipelined: 1 connection, 64 appends in flight";
    }
    if (!strcmp(w, "hot64")) {
        return "64 clients on 8 shared streams (read version, append; conflicts retried)";
    }
    if (!strcmp(w, "read")) {
        snprintf(buf, len, "read back %s events in global order", run_get("read_events", "?"));
        return buf;
    }
    return w;
}

/* 1234567 -> "1,234,567" */
static const char *grouped(double v, char *buf, size_t len)
{
    char raw[32];
    snprintf(raw, sizeof(raw), "%.0f", v);
    size_t n = strlen(raw), o = 0;
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        if (i && (n - i) % 3 == 0 && raw[i - 1] != '-') {
            buf[o++] = ',';
        }
        buf[o++] = raw[i];
    }
    buf[o] = 0;
    return buf;
}

static double ratio(const struct row *a, const struct row *b)
{
    return a && b && b->eps > 0 ? a->eps / b->eps : 0;
}

/* "server + client" CPU µs per event */
static void cpu_us(const struct row *r, char *buf, size_t len)
{
    double s = r->eps > 0 ? r->server_cores / r->eps * 1e6 : 0;
    double c = r->eps > 0 ? r->client_cores / r->eps * 1e6 : 0;
    snprintf(buf, len, s < 10 && c < 10 ? "%.1f + %.1f" : "%.0f + %.0f", s, c);
}

/* ---- the markdown ---- */

static void table(FILE *md)
{
    char b1[32], b2[32], b3[32], wl[96];
    fprintf(md, "| workload | system | events/s (median) | min–max | p50 ms | p99 ms | "
                "conflicts | Annals ÷ system | CPU µs/event: server + client |\n"
                "|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int w = 0; w < N_WORKLOADS; w++) {
        const struct row *an = find("annals", workloads[w]);
        for (int s = 0; s < N_SYSTEMS; s++) {
            const struct row *r = find(systems[s], workloads[w]);
            if (!r) {
                continue;
            }
            bool read = !strcmp(r->workload, "read");
            char p50[32] = "–", p99[32] = "–", conf[32] = "", vs[32] = "", cpu[64];
            if (!read) {
                snprintf(p50, sizeof(p50), "%.2f", r->p50);
                snprintf(p99, sizeof(p99), "%.2f", r->p99);
            }
            if (!strcmp(r->workload, "hot64")) {
                grouped(r->conflicts, conf, sizeof(conf));
            }
            if (r != an && an) {
                snprintf(vs, sizeof(vs), "%.2f×", ratio(an, r));
            }
            cpu_us(r, cpu, sizeof(cpu));
            fprintf(md, "| %s | %s | **%s** | %s–%s | %s | %s | %s | %s | %s |\n",
                    workload_label(r->workload, wl, sizeof(wl)), system_label(r->system),
                    grouped(r->eps, b1, sizeof(b1)), grouped(r->eps_min, b2, sizeof(b2)),
                    grouped(r->eps_max, b3, sizeof(b3)), p50, p99, conf, vs, cpu);
        }
    }
    fprintf(md, "\n\"Annals ÷ system\": Annals' events/s divided by that system's in the same "
                "workload (above 1: Annals is faster). CPU: the server's process tree and the "
                "load generator, CPU µs per event, measured around each repetition "
                "(both share the same cores).\n");
}

static void ceilings(FILE *md)
{
    const struct row *fs = find("ceiling-fsync", "fdatasync");
    const struct row *l1 = find("ceiling-lmdb", "commit1");
    const struct row *l64 = find("ceiling-lmdb", "commit64");
    char b[32];
    fprintf(md, "\n## Ceilings (same run, same disk)\n\n");
    if (fs) {
        fprintf(md, "- 512-byte overwrite + fdatasync in a loop: **%s syncs/s** (p50 %.3f ms, "
                    "p99 %.3f ms).\n",
                grouped(fs->eps, b, sizeof(b)), fs->p50, fs->p99);
    }
    if (l1) {
        fprintf(md, "- raw LMDB, one event per durable commit (one thread; each event a get and "
                    "three puts, as an event store writes): **%s events/s** (p50 %.3f ms per "
                    "commit).\n",
                grouped(l1->eps, b, sizeof(b)), l1->p50);
    }
    if (l64) {
        fprintf(md, "- raw LMDB, 64 events per durable commit (group commit, one thread): "
                    "**%s events/s** (p50 %.3f ms per commit).\n",
                grouped(l64->eps, b, sizeof(b)), l64->p50);
    }
    const struct row *g1 = find("ceiling-grpc", "call1");
    const struct row *g64 = find("ceiling-grpc", "call64");
    if (g1 && g64) {
        fprintf(md, "- gRPC alone: the same load generator's unary calls answered by annalsd "
                    "without its writer or the disk (Health/Check, on its CQ thread): 1 client "
                    "**%s calls/s** (p50 %.3f ms), 64 clients ",
                grouped(g1->eps, b, sizeof(b)), g1->p50);
        fprintf(md, "**%s calls/s** (p50 %.3f ms). No unary append from these clients can "
                    "go faster on these cores.\n",
                grouped(g64->eps, b, sizeof(b)), g64->p50);
    }
    bool any = false;
    for (int s = 0; s < N_SYSTEMS; s++) {
        char name[48];
        snprintf(name, sizeof(name), "disk@%s", systems[s]);
        const struct row *p = find(name, "fdatasync");
        if (p) {
            fprintf(md, "%s%s %s/s (p50 %.3f ms)", any ? ", " : "- the same fdatasync probe "
                    "for 1 s just before each system ran (the disk is shared and drifts): ",
                    systems[s], grouped(p->eps, b, sizeof(b)), p->p50);
            any = true;
        }
    }
    if (any) {
        fprintf(md, ".\n");
    }
    const struct row *a1 = find("annals", "append1"), *a64 = find("annals", "append64");
    const struct row *ap = find("annals", "pipe64");
    fprintf(md, "\nAnnals against the ceilings:\n\n");
    if (a1 && l1) {
        fprintf(md, "- 1 client: **%.2f×** raw LMDB's one-event commit", ratio(a1, l1));
        if (fs) {
            fprintf(md, "; %.2f× the fdatasync rate (LMDB's commit costs two syncs: data, "
                        "then meta page)", ratio(a1, fs));
        }
        fprintf(md, ".\n");
    }
    if (a1 && g1) {
        fprintf(md, "- 1 client: a call's round trip alone is %.3f ms of the append's %.3f ms "
                    "(p50).\n",
                g1->p50, a1->p50);
    }
    if (a64 && l64) {
        fprintf(md, "- 64 clients: **%.2f×** raw LMDB's 64-event group commit", ratio(a64, l64));
        if (g64) {
            fprintf(md, "; **%.2f×** gRPC alone", ratio(a64, g64));
        }
        fprintf(md, ".\n");
    }
    if (ap && l64) {
        fprintf(md, "- pipelined: **%.2f×** raw LMDB's 64-event group commit.\n", ratio(ap, l64));
    }
}

static void target(FILE *md, const char *what, const struct row *a, const struct row *peer,
                   double want)
{
    if (!a || !peer) {
        fprintf(md, "| %s | not measured | %.1f× | – |\n", what, want);
        return;
    }
    double r = ratio(a, peer);
    fprintf(md, "| %s | %.2f× | %.1f× | %s |\n", what, r, want, r >= want ? "met" : "**missed**");
}

static void targets(FILE *md)
{
    fprintf(md, "\n## Targets (issue 8)\n\n| target | measured | wanted | |\n|---|---:|---:|---|\n");
    target(md, "64 clients, durable: Annals ÷ Redis (appendfsync always)",
           find("annals", "append64"), find("redis", "append64"), 2);
    target(md, "64 clients, durable: Annals ÷ PostgreSQL", find("annals", "append64"),
           find("pg", "append64"), 10);
    target(md, "1 client: Annals ÷ PostgreSQL", find("annals", "append1"), find("pg", "append1"),
           1.3);
    target(md, "read all: Annals ReadAll ÷ PostgreSQL binary COPY", find("annals", "read"),
           find("pg", "read"), 1);
    const struct row *s64 = find("annals-1ch", "append64");
    if (s64) {
        fprintf(md, "\nWith the 64 threads sharing one connection (gRPC's usual use), 64 clients "
                    "reach %.2f× Redis and %.2f× PostgreSQL.\n",
                ratio(s64, find("redis", "append64")), ratio(s64, find("pg", "append64")));
    }
    /* what the transport alone allows, measured in this run (ceilings) */
    const struct row *g1 = find("ceiling-grpc", "call1"), *g64 = find("ceiling-grpc", "call64");
    const struct row *r64 = find("redis", "append64"), *pg64 = find("pg", "append64");
    const struct row *pg1 = find("pg", "append1"), *l1 = find("ceiling-lmdb", "commit1");
    char b1[32], b2[32];
    if (g64 && (r64 || pg64)) {
        fprintf(md, "\nWhat gRPC alone allows here: 64 clients of this load generator make "
                    "%s unary calls/s that do nothing (Health/Check).",
                grouped(g64->eps, b1, sizeof(b1)));
        if (r64) {
            fprintf(md, " 2× Redis would need %s appends/s, %.1f× that.",
                    grouped(2 * r64->eps, b2, sizeof(b2)), 2 * r64->eps / g64->eps);
        }
        if (pg64) {
            fprintf(md, " 10× PostgreSQL would need %s appends/s, %.1f× that.",
                    grouped(10 * pg64->eps, b2, sizeof(b2)), 10 * pg64->eps / g64->eps);
        }
        fprintf(md, "\n");
    }
    if (g1 && pg1 && l1) {
        fprintf(md, "\nOne client: 1.3× PostgreSQL would need an append in %.3f ms at p50 "
                    "(PostgreSQL's %.3f ms ÷ 1.3); gRPC's call alone takes %.3f ms and raw "
                    "LMDB's durable one-event commit %.3f ms (p50), %.3f ms together before "
                    "annalsd does anything.\n",
                pg1->p50 / 1.3, pg1->p50, g1->p50, l1->p50, g1->p50 + l1->p50);
    }
}

/* One Annals row's server figures, as a sentence. */
static void where_row(FILE *md, const struct row *r, int ncpu)
{
    char b[32];
    double cores = r->server_cores + r->client_cores;
    fprintf(md, "- **%s %s** (%s events/s): ", r->system, r->workload, grouped(r->eps, b, sizeof(b)));
    if (r->commits > 0) {
        fprintf(md, "the writer made %.0f commits of %.1f requests on average, %.2f ms each "
                    "(%.1f fdatasyncs per commit), committing %.0f%% of the wall time",
                r->commits, r->mean_batch, r->commit_ms, r->syncs_per_commit,
                r->writer_busy * 100);
    } else {
        fprintf(md, "no commits (a read)");
    }
    if (r->call_ms > 0) {
        fprintf(md, "; a unary Append spent %.2f ms inside annalsd, of %.2f ms at the client "
                    "(means)",
                r->call_ms, r->mean);
    }
    fprintf(md, "; CPU: annalsd %.2f cores, load generator %.2f, together %.0f%% of the %d "
                "cores.\n",
            r->server_cores, r->client_cores, cores / ncpu * 100, ncpu);
}

static void where(FILE *md)
{
    int ncpu = atoi(run_get("nproc", "2"));
    if (ncpu < 1) {
        ncpu = 1;
    }
    fprintf(md, "\n## Where Annals' time goes\n\nFrom annalsd's own `/metrics` (`--http`), "
                "read before and after each repetition (median repetition shown), and the CPU "
                "time of annalsd and of the load generator around it. The whole scrape after "
                "the run is in `annals-metrics.txt`.\n\n");
    for (int w = 0; w < N_WORKLOADS; w++) {
        for (int s = 0; s < 2; s++) {
            const struct row *r = find(systems[s], workloads[w]);
            if (r) {
                where_row(md, r, ncpu);
            }
        }
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/profile.md", g_dir);
    FILE *pf = fopen(path, "r");
    bool profiled = pf != NULL;
    if (profiled) {
        fclose(pf);
        fprintf(md, "\nA CPU profile: one more repetition of each, not counted in the table, "
                    "under `perf record -a -g`:\n\n");
        copy_file(md, g_dir, "profile.md", "");
    }
    const struct row *a1 = find("annals", "append1"), *a64 = find("annals", "append64");
    const struct row *s64 = find("annals-1ch", "append64"), *ap = find("annals", "pipe64");
    const struct row *pg1 = find("pg", "append1"), *r64 = find("redis", "append64");
    const struct row *pg64 = find("pg", "append64"), *l1 = find("ceiling-lmdb", "commit1");
    const struct row *l64 = find("ceiling-lmdb", "commit64"), *rp = find("redis", "pipe64");
    const struct row *fs = find("ceiling-fsync", "fdatasync");
    char b[32];
    fprintf(md, "\nReading these figures:\n\n");
    if (a1 && a1->call_ms > 0) {
        fprintf(md, "- **1 client**: an append takes %.2f ms on average at the client. Inside "
                    "annalsd it spends %.2f ms, of which the commit is %.2f ms (%.1f "
                    "fdatasyncs",
                a1->mean, a1->call_ms, a1->commit_ms, a1->syncs_per_commit);
        if (fs) {
            fprintf(md, "; one fdatasync of a small overwrite takes %.3f ms at p50 on this "
                        "disk",
                    fs->p50);
        }
        fprintf(md, "); the other %.2f ms are gRPC, the client library and loopback.",
                a1->mean - a1->call_ms);
        if (pg1) {
            fprintf(md, " PostgreSQL takes %.2f ms on average with one WAL fdatasync per "
                        "commit and a lighter protocol.",
                    pg1->mean);
        }
        fprintf(md, " annalsd burns %.0f µs of CPU per event here",
                a1->server_cores / a1->eps * 1e6);
        if (pg1) {
            fprintf(md, " (PostgreSQL %.0f µs)", pg1->server_cores / pg1->eps * 1e6);
        }
        fprintf(md, "; with one request per commit every event pays the thread hand-offs and "
                    "the syncs' I/O submission alone%s.",
                profiled ? " (the profile above splits it)" : "");
        if (l1) {
            fprintf(md, " Raw LMDB commits one event in %.2f ms at p50 (%s commits/s): that "
                        "is the ceiling of any server on LMDB's default two-sync commit, one "
                        "client, one event per commit.",
                    l1->p50, grouped(l1->eps, b, sizeof(b)));
            fprintf(md, " Annals reaches %.2f× of it.", ratio(a1, l1));
        }
        fprintf(md, "\n");
    }
    if (a64) {
        double cores = a64->server_cores + a64->client_cores;
        fprintf(md, "- **64 clients**: annalsd and the load generator use %.2f of the %d "
                    "cores. annalsd spends %.0f µs of CPU per event",
                cores, ncpu, a64->server_cores / a64->eps * 1e6);
        if (r64) {
            fprintf(md, " (Redis %.0f µs", r64->server_cores / r64->eps * 1e6);
            fprintf(md, pg64 ? ", PostgreSQL %.0f µs)" : ")",
                    pg64 ? pg64->server_cores / pg64->eps * 1e6 : 0);
        }
        fprintf(md, ", and the load generator %.0f µs per Annals event in the gRPC client",
                a64->client_cores / a64->eps * 1e6);
        if (r64) {
            fprintf(md, " against %.0f µs per Redis event in hiredis",
                    r64->client_cores / r64->eps * 1e6);
        }
        fprintf(md, ". The writer commits %.0f%% of the wall time, in batches of %.1f "
                    "requests taking %.2f ms each",
                a64->writer_busy * 100, a64->mean_batch, a64->commit_ms);
        if (l64) {
            fprintf(md, " (raw LMDB commits 64 events in %.2f ms)", l64->p50);
        }
        fprintf(md, ". ");
        if (cores >= 0.85 * ncpu) {
            fprintf(md, "The cores are saturated: requests reach the writer only as fast as "
                        "gRPC's per-call CPU on both sides lets them, so batches stay small "
                        "and each small commit still pays two syncs. ");
        }
        if (a64->writer_busy >= 0.75) {
            fprintf(md, "The writer is busy committing most of the time: while one commit "
                        "syncs, the next batch only queues, so throughput is batch size ÷ "
                        "commit time. ");
        }
        if (s64) {
            fprintf(md, "Sharing one connection among the threads (one HTTP/2 connection, "
                        "%.0f µs + %.0f µs CPU per event) gives %.2f× the throughput.",
                    s64->server_cores / s64->eps * 1e6, s64->client_cores / s64->eps * 1e6,
                    ratio(s64, a64));
        }
        fprintf(md, "\n");
    }
    if (ap) {
        fprintf(md, "- **pipelined**: one AppendStream call reaches %.2f× the 64 unary "
                    "clients; the writer's batches are %.1f requests and it commits %.0f%% of "
                    "the time.",
                ratio(ap, a64), ap->mean_batch, ap->writer_busy * 100);
        if (rp) {
            fprintf(md, " Redis answers a window of pipelined commands with one write and one "
                        "fsync, and spends %.0f µs of CPU per event against annalsd's %.0f µs.",
                    rp->server_cores / rp->eps * 1e6, ap->server_cores / ap->eps * 1e6);
        }
        fprintf(md, "\n");
    }
    bool hot = false;
    for (int s = 0; s < N_SYSTEMS; s++) {
        const struct row *h = find(systems[s], "hot64");
        if (h && h->events > 0) {
            fprintf(md, "%s%s %.1f", hot ? ", " : "- **hot streams**: attempts per appended "
                    "event (1 + conflicts ÷ appends): ",
                    systems[s], 1 + h->conflicts / h->events);
            hot = true;
        }
    }
    if (hot) {
        fprintf(md, ". An attempt is a read of the version and an append at it. Annals' "
                    "reads see only committed events, and every answer, a conflict too, "
                    "leaves with its batch after the commit, so on a hot stream one append "
                    "per commit can win and a loser learns it a commit later. Redis' reads see "
                    "a write before its fsync; PostgreSQL's insert waits for the competing "
                    "transaction and fails as it commits.\n");
    }
}

static void notes(FILE *md)
{
    fprintf(md,
            "\n## How each system was run and what its acknowledgement means\n\n"
            "- **Annals**: annalsd from this build on a private temp data dir, loopback, a free "
            "port; acknowledges after its group commit is on disk (LMDB commit: data pages "
            "synced, then the meta page). Unary `Append` with `EXPECT_VERSION` "
            "(`EXPECT_NO_STREAM` first), one connection per client thread (libannals "
            "`an_connect` per thread); the \"sharing one connection\" rows use one client for "
            "all 64 threads. Pipelined: one `AppendStream` call (`an_appender`) with 64 in "
            "flight. Read: `ReadAll` from the first filled position, every event decoded by "
            "the client library.\n"
            "- **PostgreSQL 15** (Debian's, stock settings apart from the port): "
            "`synchronous_commit = on`, so every commit waits for its WAL fdatasync; run as "
            "the `postgres` user on a private cluster made by initdb. Table `events(global "
            "bigserial primary key, stream text, version int, type text, data bytea, "
            "unique(stream, version))`; an append is an `INSERT` at the expected version + 1 "
            "in its own transaction (a unique violation is the conflict). Pipelined: libpq "
            "pipeline mode, a sync after each insert, so each is still its own durable "
            "transaction, 64 in flight. Read: `COPY (SELECT global, stream, version, type, "
            "data FROM events WHERE global > first ORDER BY global LIMIT n) TO STDOUT (FORMAT "
            "binary)`, each row split into its fields by the client.\n"
            "- **Redis 7**: `--appendonly yes --appendfsync always --save ''` (the AOF is "
            "fsynced before replies are written; automatic AOF rewrites left on, as shipped). "
            "An append is `EVALSHA` of a Lua script that compares `XLEN` with the expected "
            "version and `XADD`s, atomically. Pipelined: 64 `EVALSHA` in flight on one "
            "connection. Redis keeps every event in memory and has no order across streams: "
            "the read fills one stream with all the events (an event store on Redis would "
            "keep such an \"all\" stream) and pages through it with `XRANGE ... COUNT "
            "10000`; the append workloads did not maintain such a stream, which favours "
            "Redis there.\n"
            "- **NATS JetStream 2.9** (Debian's nats-server 2.9.10): one stream `EV` over "
            "`ev.>`, file storage, a subject per event stream; an append is a synchronous "
            "publish with `Nats-Expected-Last-Subject-Sequence`. **Not durable per ack**: "
            "2.9 acknowledges after write(), and syncs on a timer (per-ack sync came with "
            "`sync_interval` in 2.10), so its rows bound what it would do if it synced. No "
            "pipelined driver (the pair asked for is Annals, Redis, PostgreSQL). Read: a pull "
            "consumer without acks on a separate stream `FILL`, batches of 1,000.\n"
            "- **Same client for all**: one C program (`bench/compare/compare.c`), the same "
            "threads, the same %d-byte event, an expected-version check on every append; "
            "latency is per event, submit to acknowledgement; in the hot-stream run it runs "
            "from the version read to the successful append, retries included. Every "
            "measurement is bounded by a count and by time; the figure is the median of the "
            "repetitions, min–max beside it.\n",
            CMP_PAYLOAD);
}

static void write_md(const char *dir)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/compare.md", dir);
    FILE *md = fopen(path, "w");
    if (!md) {
        cmp_die(path, strerror(errno));
    }
    fprintf(md, "# Annals side by side: PostgreSQL 15, Redis 7, NATS JetStream\n\n"
                "Written by `%s` in one run on one machine: every peer was started by the "
                "script on loopback with a private temp data directory and stopped by its pid "
                "afterwards. Each figure is the median of %s repetitions of at most %s s "
                "each (min–max beside it). The load generator runs on the same cores as the "
                "servers. Total runtime: %s s.\n\n## Machine\n\n",
            run_get("command", "bench/compare/compare"), run_get("reps", "3"),
            run_get("seconds", "5"), run_get("runtime", "?"));
    copy_file(md, dir, "machine.md", "");
    fprintf(md, "\n## Results\n\n");
    table(md);
    fprintf(md, "\n![events/s and latency by system and workload](compare.png)\n");
    ceilings(md);
    targets(md);
    where(md);
    fprintf(md, "\n## What did not run\n\n");
    if (!copy_file(md, dir, "status.txt", "- ")) {
        fprintf(md, "Everything ran.\n");
    }
    notes(md);
    fprintf(md, "\nRaw figures: `compare.csv` (the median repetition of each workload, with "
                "min and max), `compare-raw.csv` (every repetition), `annals-metrics.txt`, "
                "`compare.log` (the run's progress lines). Chart: `compare.png` "
                "(`gnuplot compare.gp` redraws it).\n");
    fclose(md);
}

/* ---- the chart ---- */

static const char *const chart_sys[] = {"annals", "annals-1ch", "pg", "redis", "nats"};
static const char *const chart_title[] = {"Annals", "\"Annals, threads on 1 connection\"",
                                          "PostgreSQL", "Redis",
                                          "\"NATS (not durable per ack)\""};
enum { N_CHART = 5 };

/* field 0: events/s, 1: p50, 2: p99 */
static double chart_value(const struct row *r, int field)
{
    return !r ? 0 : field == 0 ? r->eps : field == 1 ? r->p50 : r->p99;
}

/* Writes a .dat with a column per system that has a value; returns the
 * mask of those systems (gnuplot refuses a column with no valid point). */
static unsigned write_dat(const char *dir, const char *name, int field)
{
    static const char *const titles[] = {"\"1 client\"", "\"64 clients\"", "\"pipelined 64\"",
                                         "\"8 hot streams\"", "\"read all\""};
    unsigned mask = 0;
    char path[600];
    for (int c = 0; c < N_CHART; c++) {
        for (int w = 0; w < N_WORKLOADS; w++) {
            if (chart_value(find(chart_sys[c], workloads[w]), field) > 0) {
                mask |= 1u << c;
            }
        }
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        cmp_die(path, strerror(errno));
    }
    fprintf(f, "workload");
    for (int c = 0; c < N_CHART; c++) {
        if (mask & (1u << c)) {
            fprintf(f, " %s", chart_title[c]);
        }
    }
    fprintf(f, "\n");
    for (int w = 0; w < N_WORKLOADS; w++) {
        if (field && !strcmp(workloads[w], "read")) {
            continue; /* no latency per event for a read */
        }
        fprintf(f, "%s", titles[w]);
        for (int c = 0; c < N_CHART; c++) {
            double v = chart_value(find(chart_sys[c], workloads[w]), field);
            if (mask & (1u << c)) {
                fprintf(f, v > 0 ? " %.4g" : " NaN", v);
            }
        }
        fprintf(f, "\n");
    }
    fclose(f);
    return mask;
}

/* One panel's plot command: a bar series per system present, each in its
 * system's colour whatever is missing. */
static void plot_line(FILE *f, const char *dat, unsigned mask)
{
    int col = 2;
    fprintf(f, "plot");
    for (int c = 0; c < N_CHART; c++) {
        if (mask & (1u << c)) {
            fprintf(f, "%s '%s' using %d%s title columnheader(%d) lt %d", col > 2 ? "," : "",
                    dat, col, col == 2 ? ":xtic(1)" : "", col, c + 1);
            col++;
        }
    }
    fprintf(f, "\n");
}

static void write_gp(const char *dir, unsigned eps, unsigned p50, unsigned p99)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/compare.gp", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        cmp_die(path, strerror(errno));
    }
    fprintf(f,
            "# gnuplot compare.gp (in this directory) draws compare.png\n"
            "set terminal pngcairo size 1100,1300 font 'DejaVu Sans,11'\n"
            "set output 'compare.png'\n"
            "set style data histograms\n"
            "set style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\n"
            "set boxwidth 0.9\n"
            "set logscale y\n"
            "set grid ytics mytics\n"
            "set key top left horizontal samplen 2\n"
            "set linetype 1 lc rgb '#1f6fb4'\n"
            "set linetype 2 lc rgb '#9cc3e6'\n"
            "set linetype 3 lc rgb '#5a9e4b'\n"
            "set linetype 4 lc rgb '#d2462f'\n"
            "set linetype 5 lc rgb '#b0b0b0'\n"
            "set multiplot layout 3,1 title 'Annals vs PostgreSQL 15, Redis 7, NATS JetStream "
            "(median of %s runs, log scales)' font ',13'\n"
            "set title 'events/s (higher is better)'\n"
            "set format y '%%.0s%%c'\n"
            "set yrange [100:*]\n",
            run_get("reps", "3"));
    if (eps) {
        plot_line(f, "compare-eps.dat", eps);
    }
    fprintf(f, "set format y '%%g'\n"
               "set yrange [0.05:*]\n"
               "set title 'latency p50, ms (lower is better)'\n");
    if (p50) {
        plot_line(f, "compare-p50.dat", p50);
    }
    fprintf(f, "set title 'latency p99, ms (lower is better)'\n");
    if (p99) {
        plot_line(f, "compare-p99.dat", p99);
    }
    fprintf(f, "unset multiplot\n");
    fclose(f);
}

int cmp_report(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: compare_load report DIR\n");
        return 2;
    }
    const char *dir = argv[2];
    g_dir = dir;
    load_csv(dir);
    load_run(dir);
    write_md(dir);
    unsigned eps = write_dat(dir, "compare-eps.dat", 0);
    unsigned p50 = write_dat(dir, "compare-p50.dat", 1);
    unsigned p99 = write_dat(dir, "compare-p99.dat", 2);
    write_gp(dir, eps, p50, p99);
    fprintf(stderr, "compare: wrote %s/compare.md\n", dir);
    return 0;
}

/*
 * bench_conns.c - hostile connection loads against one annalsd (issue
 * 12): the writer's throughput with nothing else going on, then while the
 * server holds N idle connections, then while M subscriptions sit stalled
 * (opened, never read: the server's send waits on flow control), and the
 * server's RSS and descriptors at each step.
 *
 *   build/bench/bench_conns [--idle 5000] [--stalled 1000] [--seconds 5]
 *                           [--soak N [--soak-seconds S] [--pairs K] [--soak-unread]
 *                            [--twin]]
 *
 * --soak N opens N subscriptions whose filter selects nothing for S
 * seconds, minute by minute (--soak 0: the same minutes without them).
 * --pairs K measures what those N cost with the disk's drift taken out:
 * K times, the writers unloaded, then with the N subscriptions open, each
 * loaded window set against the unloaded windows either side of it.
 * Each pair also shows the CPU the holder process took in its loaded
 * window: it runs on the same cores as the server and the writers.
 * --twin (with --soak-seconds S): for the S seconds the N subscriptions
 * are open, the writers alternate --seconds windows between this server
 * and a twin annalsd on the same disk that has no subscriptions and no
 * idle connections, each window on the first set against the twin's
 * windows either side: the disk's drift over minutes drops out, and the
 * subscriptions stay open the whole time (both logs take the same writes).
 * --soak-unread: the holder opens the N subscriptions and never reads
 * them, so what the server pays for them shows without what receiving
 * costs the holder. The server's work is the same: it sends each message
 * whether or not it is read, and a checkpoint alone (a few bytes) every
 * few seconds per subscription stays far inside gRPC's 64 KiB window for
 * each stream for as long as any run lasts.
 *
 * Writers: 8 threads of unary appends (one ~200-byte event, EXPECT_ANY,
 * own streams), each run bounded by --seconds. The idle connections and the
 * stalled subscriptions are held by a second process (forked before either
 * process starts gRPC), so that what they cost is the server's alone: a
 * client process with 1 000 streams it never reads slows its own other
 * calls (measured: seconds per append), which is the client's problem, not
 * the server's. An idle connection is a client of its own (its own channel,
 * so its own TCP connection) that made one health call and then waits.
 * Stalled subscriptions replay the log the writers wrote, and none of them
 * reads it.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "annals.h"
#include "bench_util.h"

static const char *addr;
static double seconds = 5;

struct wr {
    pthread_t t;
    int id;
    uint64_t done;
};

static void *writer_main(void *arg)
{
    struct wr *w = arg;
    an_client *c;
    int rc = an_connect(addr, NULL, &c);
    if (rc) bu_die("bench_conns", "connect", rc, NULL);
    char data[200], stream[32];
    memset(data, 'x', sizeof(data));
    double until = bu_now() + seconds;
    for (uint64_t i = 0; bu_now() < until; i++) {
        snprintf(stream, sizeof(stream), "w%d-%u", w->id, (unsigned)(i % 16));
        struct an_event e = {.type = "E", .data = data, .data_len = sizeof(data)};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        struct an_error err;
        if ((rc = an_append(c, &sa, 1, NULL, &err))) bu_die("bench_conns", "append", rc, err.detail);
        w->done++;
    }
    an_close(c);
    return NULL;
}

static double writers(void)
{
    struct wr w[8];
    double t0 = bu_now();
    for (int i = 0; i < 8; i++) {
        w[i] = (struct wr){.id = i};
        pthread_create(&w[i].t, NULL, writer_main, &w[i]);
    }
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(w[i].t, NULL);
        n += w[i].done;
    }
    return (double)n / (bu_now() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of r[0..n-1] (n >= 1); sorts r. */
static double median(double *r, int n)
{
    qsort(r, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? r[n / 2] : (r[n / 2 - 1] + r[n / 2]) / 2;
}

static int fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n - 2;
}

/* The holder process: opens what the parent asks for (one byte: 'i'
 * idle connections, 's' stalled subscriptions, 'f' the soak's filtered
 * ones; 'g' closes the filtered ones, 'c' everything), answers one byte
 * when done, and holds them until its pipe closes. */
struct soak {
    an_sub **subs;
    int n;
    int from;
    atomic_ullong items;
};

static atomic_bool soak_stop;
static bool soak_unread;
static bool twin;

static void *soak_reader(void *arg)
{
    struct soak *k = arg;
    while (!atomic_load(&soak_stop)) {
        bool any = false;
        for (int i = k->from; i < k->n; i += 2) {
            struct an_sub_item it;
            int rc = an_sub_next(k->subs[i], 0, &it, NULL);
            if (rc < 0) bu_die("bench_conns", "soak subscription", rc, NULL);
            if (rc == 1) {
                atomic_fetch_add(&k->items, 1);
                any = true;
            }
        }
        if (!any) usleep(2000);
    }
    return NULL;
}

static void holder(int in, int out, int n_idle, int n_stalled, int n_soak)
{
    an_client **idle = calloc((size_t)n_idle, sizeof(*idle));
    an_sub **subs = calloc((size_t)n_stalled, sizeof(*subs));
    struct soak soak[2] = {{0}, {0}};
    pthread_t st[2];
    an_sub **fs = NULL;
    bool soaking = false;
    char cmd;
    while (read(in, &cmd, 1) == 1) {
        if (cmd == 'i') {
            double t0 = bu_now();
            for (int i = 0; i < n_idle; i++) {
                int rc = an_connect(addr, NULL, &idle[i]);
                bool serving = false;
                if (!rc) rc = an_health(idle[i], &serving, NULL);
                if (rc) bu_die("bench_conns", "idle connection", rc, NULL);
                if ((i + 1) % 1000 == 0) {
                    fprintf(stderr, "bench_conns:   %d open (%.1f s)\n", i + 1, bu_now() - t0);
                }
            }
        } else if (cmd == 's') {
            for (int i = 0; i < n_stalled; i++) {
                struct an_subscribe_opts o = {0};
                int rc = an_subscribe(idle[i % n_idle], &o, &subs[i]);
                if (rc) bu_die("bench_conns", "subscribe", rc, NULL);
            }
            usleep(500000);
        } else if (cmd == 'f') {
            fs = calloc((size_t)n_soak, sizeof(*fs));
            const char *none[] = {"zz-selects-nothing-"};
            for (int i = 0; i < n_soak; i++) {
                struct an_subscribe_opts o = {.from_end = true, .stream_prefixes = none,
                                              .n_stream_prefixes = 1};
                int rc = an_subscribe(idle[i % n_idle], &o, &fs[i]);
                if (rc) bu_die("bench_conns", "soak subscribe", rc, NULL);
            }
            for (int t = 0; t < 2 && !soak_unread; t++) {
                soak[t] = (struct soak){.subs = fs, .n = n_soak, .from = t};
                pthread_create(&st[t], NULL, soak_reader, &soak[t]);
            }
            soaking = !soak_unread;
        } else if (cmd == 'c' || cmd == 'g') {
            if (soaking) {
                atomic_store(&soak_stop, true);
                for (int t = 0; t < 2; t++) pthread_join(st[t], NULL);
                atomic_store(&soak_stop, false);
                soaking = false;
            }
            for (int i = 0; fs && i < n_soak; i++) an_sub_close(fs[i]);
            free(fs);
            fs = NULL;
            if (cmd == 'g') {
                usleep(500000);
                if (write(out, &cmd, 1) != 1) break;
                continue;
            }
            for (int i = 0; i < n_stalled; i++) an_sub_close(subs[i]);
            for (int i = 0; i < n_idle; i++) an_close(idle[i]);
            memset(subs, 0, (size_t)n_stalled * sizeof(*subs));
            memset(idle, 0, (size_t)n_idle * sizeof(*idle));
            usleep(500000);
        }
        if (write(out, &cmd, 1) != 1) break;
    }
    _exit(0); /* the server goes away with the parent; nothing to tidy */
}

/* CPU time (user + system) process pid has taken, in clock ticks; 0 when
 * /proc cannot say. */
static long cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
        return 0;
    }
    return (long)(ut + st);
}

/* The share of a core, in %, process pid took since c0 ticks at t0. */
static double cpu_pct_since(pid_t pid, long c0, double t0)
{
    return 100.0 * (double)(cpu_ticks(pid) - c0) / (double)sysconf(_SC_CLK_TCK) / (bu_now() - t0);
}

static void ask(int to, int from, char cmd)
{
    char r;
    if (write(to, &cmd, 1) != 1 || read(from, &r, 1) != 1) {
        fprintf(stderr, "bench_conns: the holder process died\n");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int n_idle = 5000, n_stalled = 1000, n_soak = -1; /* -1: no soak; 0: its control */
    double soak_seconds = 600;
    int n_pairs = 0;
    bool soak_seconds_given = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--idle") && i + 1 < argc) {
            n_idle = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--stalled") && i + 1 < argc) {
            n_stalled = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--soak") && i + 1 < argc) {
            n_soak = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--soak-seconds") && i + 1 < argc) {
            soak_seconds = atof(argv[++i]);
            soak_seconds_given = true;
        } else if (!strcmp(argv[i], "--pairs") && i + 1 < argc) {
            n_pairs = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--soak-unread")) {
            soak_unread = true;
        } else if (!strcmp(argv[i], "--twin")) {
            twin = true;
        } else {
            fprintf(stderr, "usage: bench_conns [--idle N] [--stalled M] [--seconds S] "
                            "[--soak N --soak-seconds S] (--soak 0: the soak's minutes "
                            "without subscriptions) [--pairs K] (K unloaded/loaded pairs of "
                            "--seconds each with --soak N open: set against their neighbours) "
                            "[--soak-unread] (the holder never reads the --soak subscriptions) "
                            "[--twin] (with "
                            "--soak-seconds: alternate with a twin server without them)\n");
            return 2;
        }
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)n_idle + 2000 > rl.rlim_cur) {
        fprintf(stderr, "bench_conns: --idle %d needs more descriptors than the limit %llu\n",
                n_idle, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    if (n_pairs < 0 || n_pairs > 100 || (n_pairs > 0 && n_soak < 1)) {
        fprintf(stderr, "bench_conns: --pairs 0..100, and it needs --soak N with N >= 1\n");
        return 2;
    }
    if (twin && (n_soak < 1 || !soak_seconds_given)) {
        fprintf(stderr, "bench_conns: --twin needs --soak N (N >= 1) and --soak-seconds S\n");
        return 2;
    }
    if (n_pairs > 0 && !soak_seconds_given) {
        soak_seconds = 0; /* the pairs alone */
    }
    if (n_idle < 1 || n_stalled < 0) {
        fprintf(stderr, "bench_conns: --idle >= 1, --stalled >= 0\n");
        return 2;
    }
    struct bu_server srv;
    bu_server_start(&srv, "/tmp", NULL);
    addr = srv.addr;
    int to_h[2], from_h[2];
    if (pipe(to_h) || pipe(from_h)) {
        perror("pipe");
        return 1;
    }
    pid_t hp = fork();
    if (hp == 0) {
        close(to_h[1]);
        close(from_h[0]);
        holder(to_h[0], from_h[1], n_idle, n_stalled, n_soak > 0 ? n_soak : 0);
    }
    close(to_h[0]);
    close(from_h[1]);

    fprintf(stderr, "bench_conns: baseline writers (%.0f s)\n", seconds);
    long rss0 = bu_server_rss_kib(&srv);
    double base = writers();

    fprintf(stderr, "bench_conns: opening %d idle connections\n", n_idle);
    ask(to_h[1], from_h[0], 'i');
    long rss1 = bu_server_rss_kib(&srv);
    int fd1 = fds(srv.pid);
    fprintf(stderr, "bench_conns: writers with %d idle connections\n", n_idle);
    double with_idle = writers();

    fprintf(stderr, "bench_conns: %d stalled subscriptions\n", n_stalled);
    ask(to_h[1], from_h[0], 's');
    long rss2 = bu_server_rss_kib(&srv);
    fprintf(stderr, "bench_conns: writers with them\n");
    double with_stalled = writers();
    long rss3 = bu_server_rss_kib(&srv);

    /* the soak's minutes, printed once the second unloaded run is known */
    int n_min = n_soak >= 0 && !twin ? (int)((soak_seconds + 59) / 60) : 0;
    double *min_rate = calloc((size_t)n_min + 1, sizeof(double));
    long *min_rss = calloc((size_t)n_min + 1, sizeof(long));
    if (!min_rate || !min_rss) {
        bu_die("bench_conns", "out of memory", 0, NULL);
    }
    if (n_min > 0) {
        /* --soak 0 is the soak's control: the same minutes without the
         * subscriptions, so what the log's growth and the disk's drift
         * cost shows apart from what the subscriptions cost */
        fprintf(stderr, "bench_conns: soak: %d subscriptions selecting nothing, %.0f s\n",
                n_soak, soak_seconds);
        if (n_soak > 0) {
            ask(to_h[1], from_h[0], 'f');
        }
        double saved = seconds;
        seconds = 60;
        for (int m = 0; m < n_min; m++) {
            min_rate[m] = writers();
            min_rss[m] = bu_server_rss_kib(&srv);
            fprintf(stderr, "bench_conns: soak minute %d: %.0f events/s\n", m + 1, min_rate[m]);
        }
        seconds = saved;
        if (n_soak > 0) {
            ask(to_h[1], from_h[0], 'g');
        }
    }

    /* The twin: a second annalsd on the same disk, without subscriptions;
     * the writers alternate between the two while the N stay open. */
    int n_tw = 0;
    double *ta = NULL, *tb = NULL, *tt = NULL, *tcpu = NULL;
    long *trss = NULL;
    if (twin) {
        int cap = (int)(soak_seconds / seconds) + 2;
        ta = calloc((size_t)cap, sizeof(double));
        tb = calloc((size_t)cap, sizeof(double));
        tt = calloc((size_t)cap, sizeof(double));
        tcpu = calloc((size_t)cap, sizeof(double));
        trss = calloc((size_t)cap, sizeof(long));
        if (!ta || !tb || !tt || !tcpu || !trss) {
            bu_die("bench_conns", "out of memory", 0, NULL);
        }
        struct bu_server tw;
        bu_server_start(&tw, "/tmp", NULL);
        const char *own = addr;
        fprintf(stderr, "bench_conns: twin at %s; %d subscriptions selecting nothing for %.0f s, "
                        "writers alternating\n", tw.addr, n_soak, soak_seconds);
        ask(to_h[1], from_h[0], 'f');
        sleep(5);
        double t0 = bu_now();
        addr = tw.addr;
        tb[0] = writers();
        while (n_tw + 1 < cap && bu_now() - t0 < soak_seconds) {
            tt[n_tw] = bu_now() - t0;
            addr = own;
            long c0 = cpu_ticks(hp);
            double w0 = bu_now();
            ta[n_tw] = writers();
            tcpu[n_tw] = cpu_pct_since(hp, c0, w0);
            trss[n_tw] = bu_server_rss_kib(&srv);
            addr = tw.addr;
            tb[n_tw + 1] = writers();
            n_tw++;
            fprintf(stderr, "bench_conns: twin window %d (%.0f s): %.0f events/s with the "
                            "subscriptions, %.0f on the twin\n",
                    n_tw, tt[n_tw - 1], ta[n_tw - 1], tb[n_tw]);
        }
        addr = own;
        ask(to_h[1], from_h[0], 'g');
        bu_server_stop(&tw);
    }

    /* Pairs: the disk's rate drifts by more than the subscriptions cost
     * over a minute or two, so the unloaded reference of each loaded window
     * is the mean of the unloaded windows just before and just after it,
     * seconds apart. The subscriptions are opened, left 5 s (opening 10 000
     * at once is its own load: see the soak's first seconds), measured,
     * closed; the idle connections stay open throughout. */
    double *pu = calloc((size_t)n_pairs + 1, sizeof(double));
    double *pl = calloc((size_t)n_pairs + 1, sizeof(double));
    double *pcpu = calloc((size_t)n_pairs + 1, sizeof(double));
    if (!pu || !pl || !pcpu) {
        bu_die("bench_conns", "out of memory", 0, NULL);
    }
    for (int k = 0; k < n_pairs; k++) {
        pu[k] = writers();
        double t0 = bu_now();
        ask(to_h[1], from_h[0], 'f');
        double opened = bu_now() - t0;
        sleep(5);
        long c0 = cpu_ticks(hp);
        t0 = bu_now();
        pl[k] = writers();
        pcpu[k] = cpu_pct_since(hp, c0, t0);
        ask(to_h[1], from_h[0], 'g');
        fprintf(stderr, "bench_conns: pair %d/%d: unloaded %.0f, with %d subscriptions %.0f "
                        "events/s (opened in %.1f s; the holder took %.0f %% of a core)\n",
                k + 1, n_pairs, pu[k], n_soak, pl[k], opened, pcpu[k]);
    }
    if (n_pairs > 0) {
        pu[n_pairs] = writers();
    }

    /* The disk's rate drifts during a run (by a third, at times): the
     * writers run unloaded once more at the end, and each loaded figure is
     * set against the mean of the two unloaded ones. */
    fprintf(stderr, "bench_conns: everything closed; writers unloaded again\n");
    ask(to_h[1], from_h[0], 'c');
    long rss4 = bu_server_rss_kib(&srv);
    double base2 = writers();
    double ref = (base + base2) / 2;

    printf("\nhostile connections: 8 writers, %.0f s each run\n\n", seconds);
    printf("| load | writer events/s | vs unloaded | server RSS |\n|---|---:|---:|---:|\n");
    printf("| none | %.0f | | %ld KiB |\n", base, rss0);
    printf("| %d idle connections (%d descriptors) | %.0f | %.2f | %ld KiB (+%.1f KiB each) |\n",
           n_idle, fd1, with_idle, with_idle / ref, rss1,
           (double)(rss1 - rss0) / (n_idle ? n_idle : 1));
    printf("| + %d stalled subscriptions | %.0f | %.2f | %ld KiB, %ld KiB after the writers |\n",
           n_stalled, with_stalled, with_stalled / ref, rss2, rss3);
    printf("| none again (everything closed) | %.0f | | %ld KiB |\n", base2, rss4);
    printf("\nvs unloaded: against the mean of the two unloaded runs (%.0f); those two differ "
           "by %.0f%%\n", ref, 100.0 * (base2 - base) / base);
    if (n_min > 0) {
        printf("\nsoak: %d idle connections, %d stalled and %d filtered subscriptions "
               "(vs unloaded: as above)\n\n"
               "| minute | writer events/s | vs unloaded | server RSS |\n|---:|---:|---:|---:|\n",
               n_idle, n_stalled, n_soak);
        for (int m = 0; m < n_min; m++) {
            printf("| %d | %.0f | %.2f | %ld KiB |\n", m + 1, min_rate[m], min_rate[m] / ref,
                   min_rss[m]);
        }
    }
    if (n_tw > 0) {
        double *r = calloc((size_t)n_tw, sizeof(double));
        if (!r) {
            bu_die("bench_conns", "out of memory", 0, NULL);
        }
        printf("\ntwin: %d filtered subscriptions (%s) over %d idle connections held %.0f s; "
               "each window against the twin's windows either side (%.0f s each)\n\n"
               "| window | at s | with subscriptions | twin before | twin after | ratio | "
               "holder CPU | server RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
               n_soak, soak_unread ? "never read" : "read", n_idle, soak_seconds, seconds);
        for (int k = 0; k < n_tw; k++) {
            r[k] = ta[k] / ((tb[k] + tb[k + 1]) / 2);
            printf("| %d | %.0f | %.0f | %.0f | %.0f | %.2f | %.0f %% | %ld KiB |\n", k + 1, tt[k],
                   ta[k], tb[k], tb[k + 1], r[k], tcpu[k], trss[k]);
        }
        printf("\nby minute (median of its windows):");
        double *mr = calloc((size_t)n_tw, sizeof(double));
        if (!mr) {
            bu_die("bench_conns", "out of memory", 0, NULL);
        }
        for (int m = 0, k = 0; k < n_tw; m++) {
            int n = 0;
            for (; k < n_tw && tt[k] < 60.0 * (m + 1); k++) mr[n++] = r[k];
            if (!n) continue;
            printf(" %.2f", median(mr, n));
        }
        free(mr);
        double med = median(r, n_tw);
        printf("\nmedian ratio %.2f (range %.2f-%.2f)\n", med, r[0], r[n_tw - 1]);
        free(r);
    }
    free(ta);
    free(tb);
    free(tt);
    free(tcpu);
    free(trss);
    if (n_pairs > 0) {
        double r[100];
        printf("\npairs: %d filtered subscriptions (%s) over %d idle connections, each "
               "loaded window against the unloaded windows either side (%.0f s each)\n\n"
               "| pair | unloaded before | with subscriptions | unloaded after | ratio | "
               "holder CPU |\n|---:|---:|---:|---:|---:|---:|\n",
               n_soak, soak_unread ? "never read" : "read", n_idle, seconds);
        for (int k = 0; k < n_pairs; k++) {
            r[k] = pl[k] / ((pu[k] + pu[k + 1]) / 2);
            printf("| %d | %.0f | %.0f | %.0f | %.2f | %.0f %% |\n", k + 1, pu[k], pl[k],
                   pu[k + 1], r[k], pcpu[k]);
        }
        double med = median(r, n_pairs);
        printf("\nmedian ratio %.2f (range %.2f-%.2f)\n", med, r[0], r[n_pairs - 1]);
    }
    free(pu);
    free(pl);
    free(pcpu);
    free(min_rate);
    free(min_rss);
    close(to_h[1]);
    waitpid(hp, NULL, 0);
    bu_server_stop(&srv);
    return 0;
}

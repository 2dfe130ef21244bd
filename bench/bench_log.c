/*
 * bench_log.c - the log engine's durable append and read rates, measured
 * against raw LMDB doing the naive thing, in one run on one disk.
 *
 * Every figure is taken in fresh environments in one temp dir (made under
 * --dir, removed at the end), so the engine and the baseline see the same
 * disk, the same page cache and the same workload: 10 000 streams
 * ("acct-00001".."acct-10000") created first, outside the timing, with one
 * event each, then appends of one 200-byte JSON event ("OrderPlaced", empty
 * id) to a stream drawn at random among them. Both sides draw the same
 * streams (the same seed) and expect the same version, which the bench
 * tracks (EXPECT_VERSION; several appends of one batch may hit one stream,
 * each expecting the version the one before it wrote).
 *
 *   (a) the engine, through log_commit(), durable as log.h describes:
 *       1/commit     each append is one log_commit_durable(), what a lone
 *                    client gets from an idle writer (two syncs, the meta
 *                    page's with O_DSYNC as LMDB's default);
 *       64/commit    64 appends (requests) per commit, acknowledged as a
 *       1000/commit  loaded writer does: batch k once batch k+1 has
 *                    committed (one sync per batch), and a log_sync() when
 *                    the run (or a round of it) ends. The bench checks that
 *                    log_durable_seq() really covers batch k at that point.
 *                    Between commits it keeps the file ahead with
 *                    log_prealloc(), as the server's writer does when idle
 *                    (timed: its cost is counted).
 *   (b) raw LMDB, naive layout, LMDB's default durable commit (data sync +
 *       meta sync, no MDB_NOMETASYNC), the same three batch sizes. Three
 *       DBs: events (u64 position, MDB_INTEGERKEY, MDB_APPEND -> 272-byte
 *       value), streams (name -> last version), stream_index (name + BE
 *       version -> position). Per event: get streams[name] and compare with
 *       the expected version, put the event, put the version, put the index
 *       entry.
 *   (c) a sequential read of --read events (written first, 1000 per commit
 *       to random streams, untimed): the engine's log_read_all() with no
 *       filter up to log_reader_head(), touching each event (summing
 *       packed_len), versus an LMDB cursor MDB_FIRST/MDB_NEXT over the naive
 *       events DB summing value sizes (it never looks inside a value; the
 *       engine decodes each event's header). Best of --passes passes; the
 *       page cache is warm for both, as they were just written.
 *
 * Both sides of a figure are open at once, and their timed work runs in
 * --rounds rounds (reads: passes) that alternate between them and swap
 * which goes first, so that a neighbour's burst of I/O on a shared VM hits
 * both alike instead of deciding a ratio.
 *
 * The engine's requests are built once, in preallocated arrays of protobuf
 * structs, and only repointed per event: the timed loops allocate nothing.
 * Timed appends run with op->validated set, as the server's writer does
 * (requests are validated on the RPC threads); the untimed setup runs let
 * the engine validate the very same request shapes.
 *
 * Progress goes to stderr, the results table to stdout. Errors name the
 * AN_E code and the engine's detail (or LMDB's message) and exit 1; bad
 * flags exit 2. Ctrl-C stops at the next commit and removes the temp dir.
 */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "log.h"

/* ---- configuration ---- */

struct bench_cfg {
    const char *dir;        /* where the temp dir goes; NULL: /var/tmp or . */
    uint64_t events_small;  /* commits in the 1/commit runs */
    uint64_t events;        /* events in each 64/commit and 1000/commit run */
    uint64_t read;          /* events written and read in (c) */
    uint64_t streams;       /* pre-created streams */
    uint64_t rounds;        /* alternations of the sides in (a)/(b) */
    uint64_t passes;        /* read passes in (c) */
    uint64_t seed;
    bool quick;
    bool help;
};

static struct bench_cfg cfg;

enum flag_type {
    FLAG_U64,
    FLAG_STR,
    FLAG_BOOL,
};

struct flag {
    const char *name;
    enum flag_type type;
    void *dst;
    uint64_t def;
    uint64_t min;
    uint64_t max;
    uint64_t quick;         /* the value under --quick, unless given */
    const char *help;
};

static const struct flag flags[] = {
    {"dir", FLAG_STR, &cfg.dir, 0, 0, 0, 0,
     "directory to make the temp dir in (default: /var/tmp, else .)"},
    {"events-small", FLAG_U64, &cfg.events_small, 3000, 1, 10000000, 50,
     "commits (1 event each, synced) in the 1/commit runs"},
    {"events", FLAG_U64, &cfg.events, 192000, 1, 100000000, 3000,
     "events in each 64/commit and 1000/commit run"},
    {"read", FLAG_U64, &cfg.read, 1000000, 1, 1000000000, 5000,
     "events written, then read sequentially, in (c)"},
    {"streams", FLAG_U64, &cfg.streams, 10000, 1, 10000000, 200,
     "streams created before the append runs"},
    {"rounds", FLAG_U64, &cfg.rounds, 4, 1, 1000, 2,
     "rounds per append figure, alternating engine and naive"},
    {"passes", FLAG_U64, &cfg.passes, 3, 1, 100, 1,
     "read passes in (c); the fastest counts"},
    {"seed", FLAG_U64, &cfg.seed, 1, 0, UINT64_MAX, 1,
     "seed of the random stream choice"},
    {"quick", FLAG_BOOL, &cfg.quick, 0, 0, 1, 0,
     "tiny sizes for a smoke run (explicit flags still win)"},
    {"help", FLAG_BOOL, &cfg.help, 0, 0, 1, 0, "print this and exit"},
};

#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_log [flags]\n\n"
               "Measures the log engine's durable append rate (1, 64 and 1000 appends\n"
               "per commit) and sequential read rate against raw LMDB with a naive\n"
               "layout, on the disk holding --dir. See bench/README.md.\n\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        const struct flag *fl = &flags[i];
        char left[64];
        switch (fl->type) {
        case FLAG_U64:
            snprintf(left, sizeof(left), "--%s N", fl->name);
            fprintf(f, "  %-20s %s\n  %-20s (default %" PRIu64 ", quick %" PRIu64
                       ", %" PRIu64 "..%" PRIu64 ")\n",
                    left, fl->help, "", fl->def, fl->quick, fl->min, fl->max);
            break;
        case FLAG_STR:
            snprintf(left, sizeof(left), "--%s PATH", fl->name);
            fprintf(f, "  %-20s %s\n", left, fl->help);
            break;
        case FLAG_BOOL:
            snprintf(left, sizeof(left), "--%s", fl->name);
            fprintf(f, "  %-20s %s\n", left, fl->help);
            break;
        }
    }
}

_Noreturn static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

_Noreturn static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("bench_log: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see --help)\n", stderr);
    exit(2);
}

static void set_u64(const struct flag *fl, const char *val)
{
    char *end = NULL;
    errno = 0;
    if (val[0] < '0' || val[0] > '9') {
        usage_error("--%s: '%s' is not a number", fl->name, val);
    }
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || *end) {
        usage_error("--%s: '%s' is not a number", fl->name, val);
    }
    if (v < fl->min || v > fl->max) {
        usage_error("--%s: %llu is out of range %" PRIu64 "..%" PRIu64, fl->name, v, fl->min,
                    fl->max);
    }
    *(uint64_t *)fl->dst = v;
}

/* Accepts --name VALUE and --name=VALUE; --quick fills what was not given. */
static void parse_flags(int argc, char **argv)
{
    bool given[N_FLAGS] = {false};

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            usage_error("unexpected argument '%s'", arg);
        }
        arg += 2;
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const struct flag *fl = NULL;
        size_t k;
        for (k = 0; k < N_FLAGS; k++) {
            if (strlen(flags[k].name) == len && strncmp(flags[k].name, arg, len) == 0) {
                fl = &flags[k];
                break;
            }
        }
        if (!fl) {
            usage_error("unknown flag '%s'", argv[i]);
        }
        given[k] = true;
        if (fl->type == FLAG_BOOL) {
            if (eq) {
                usage_error("--%s takes no value", fl->name);
            }
            *(bool *)fl->dst = true;
            continue;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) {
                usage_error("--%s needs a value", fl->name);
            }
            val = argv[++i];
        }
        if (fl->type == FLAG_STR) {
            if (!val[0]) {
                usage_error("--%s: empty value", fl->name);
            }
            *(const char **)fl->dst = val;
        } else {
            set_u64(fl, val);
        }
    }
    for (size_t k = 0; k < N_FLAGS; k++) {
        if (flags[k].type == FLAG_U64 && !given[k]) {
            *(uint64_t *)flags[k].dst = cfg.quick ? flags[k].quick : flags[k].def;
        }
    }
}

/* ---- errors, time, progress ---- */

_Noreturn static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

_Noreturn static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("bench_log: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* An engine failure: the code, its text, and the engine's detail. */
_Noreturn static void die_an(int rc, const char *what, const char *detail)
{
    die("%s: %s (%s)%s%s", what, an_errname(rc), an_strerror(rc),
        detail && detail[0] ? ": " : "", detail ? detail : "");
}

_Noreturn static void die_mdb(int rc, const char *what)
{
    die("%s: %s", what, mdb_strerror(rc));
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        die("out of memory (%zu x %zu bytes)", n, size);
    }
    return p;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define PROGRESS_EVERY_NS 1000000000u

/* One progress line per second at most, for work that may come in parts. */
struct progress {
    char label[96];
    uint64_t total;
    uint64_t done;
    uint64_t timed_ns;      /* the timed parts only */
    uint64_t last_ns;
};

static void progress_start(struct progress *p, uint64_t total, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void progress_start(struct progress *p, uint64_t total, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->label, sizeof(p->label), fmt, ap);
    va_end(ap);
    p->total = total;
    p->done = 0;
    p->timed_ns = 0;
    p->last_ns = now_ns();
    fprintf(stderr, "bench: %s: 0/%" PRIu64 " events\n", p->label, total);
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

/* Called once per commit; the clock read costs ~20 ns. */
static void progress_add(struct progress *p, uint64_t n)
{
    if (interrupted) {
        die("interrupted by signal %d", (int)interrupted);
    }
    p->done += n;
    uint64_t t = now_ns();
    if (t - p->last_ns >= PROGRESS_EVERY_NS) {
        p->last_ns = t;
        fprintf(stderr, "bench: %s: %" PRIu64 "/%" PRIu64 " events\n", p->label, p->done,
                p->total);
    }
}

static void progress_end(const struct progress *p)
{
    fprintf(stderr, "bench: %s: %" PRIu64 "/%" PRIu64 " events in %.2f s\n", p->label,
            p->done, p->total, (double)p->timed_ns / 1e9);
}

static double per_second(uint64_t n, uint64_t elapsed_ns)
{
    return elapsed_ns ? (double)n * 1e9 / (double)elapsed_ns : 0.0;
}

/* ---- the temp dir ---- */

static char root_dir[4096];   /* the temp dir; removed at exit */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) {
        fprintf(stderr, "bench_log: warning: cannot remove %s: %s\n", path, strerror(errno));
    }
    return 0;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static void remove_root(void)
{
    if (root_dir[0]) {
        rm_tree(root_dir);
        root_dir[0] = '\0';
    }
}

static void make_root(void)
{
    const char *base = cfg.dir;
    if (!base) {
        base = access("/var/tmp", W_OK) == 0 ? "/var/tmp" : ".";
    }
    int n = snprintf(root_dir, sizeof(root_dir), "%s/bench_log.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof(root_dir) - 64) {
        root_dir[0] = '\0';
        die("--dir is too long");
    }
    if (!mkdtemp(root_dir)) {
        int e = errno;
        root_dir[0] = '\0';
        die("cannot make a temp dir under %s: %s", base, strerror(e));
    }
    atexit(remove_root);

    /* SA_RESTART: a sync in progress finishes, the next commit stops */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void sub_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", root_dir, name);
}

/* ---- the workload ---- */

#define BENCH_PER_COMMIT_MAX 1000u
#define BENCH_NAME_STRIDE 24u
#define BENCH_TYPE "OrderPlaced"
#define BENCH_CONTENT_TYPE "application/json"

/* 200 bytes of JSON, the data of every event. */
static const char bench_json[] =
    "{\"order_id\":\"ord-7f3a\",\"customer\":\"acct-04217\",\"currency\":\"EUR\","
    "\"amount\":129900,\"lines\":[{\"sku\":\"SKU-1001\",\"qty\":2,\"price_cents\":45000},"
    "{\"sku\":\"SKU-2002\",\"qty\":1,\"price_cents\":39900}],\"channel\":\"web\"}";
_Static_assert(sizeof(bench_json) - 1 == 200, "event data is 200 bytes");

/* The stream names, shared by both sides of a figure. */
struct streams {
    uint32_t n;
    char *names;            /* n * BENCH_NAME_STRIDE, NUL-terminated */
    uint8_t *name_len;
};

static void streams_init(struct streams *st, uint32_t n)
{
    st->n = n;
    st->names = xcalloc(n, BENCH_NAME_STRIDE);
    st->name_len = xcalloc(n, 1);
    for (uint32_t i = 0; i < n; i++) {
        int len = snprintf(st->names + (size_t)i * BENCH_NAME_STRIDE, BENCH_NAME_STRIDE,
                           "acct-%05u", i + 1);
        st->name_len[i] = (uint8_t)len;
    }
}

static void streams_free(struct streams *st)
{
    free(st->names);
    free(st->name_len);
}

static char *stream_name(const struct streams *st, uint32_t s)
{
    return st->names + (size_t)s * BENCH_NAME_STRIDE;
}

/*
 * What one side of a figure knows of the streams: each one's last version,
 * and where its draws are. Both sides start from workload_reset() with the
 * same seed, so they draw the same streams and expect the same versions.
 */
struct workload {
    const struct streams *st;
    int64_t *last_version;  /* -1: not written yet */
    uint64_t rng;           /* xorshift64* state, never 0 */
    uint32_t next_seq;      /* for sequential draws */
};

/* Forgets every stream and restarts the random draws. */
static void workload_reset(struct workload *w)
{
    for (uint32_t i = 0; i < w->st->n; i++) {
        w->last_version[i] = -1;
    }
    w->next_seq = 0;
    /* splitmix64 of the seed, so that seed 0 is fine too */
    uint64_t z = cfg.seed + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    w->rng = z ? z : 1;
}

static void workload_init(struct workload *w, const struct streams *st)
{
    w->st = st;
    w->last_version = xcalloc(st->n, sizeof(int64_t));
    workload_reset(w);
}

static void workload_free(struct workload *w)
{
    free(w->last_version);
    w->last_version = NULL;
}

static uint64_t xorshift64s(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1du;
}

static uint32_t workload_pick(struct workload *w, bool sequential)
{
    if (sequential) {
        uint32_t s = w->next_seq;
        w->next_seq = (w->next_seq + 1) % w->st->n;
        return s;
    }
    return (uint32_t)((xorshift64s(&w->rng) >> 11) % w->st->n);
}

enum ack_mode {
    ACK_SYNC_EACH,          /* commit, log_sync, acknowledge: an idle writer */
    ACK_NEXT_COMMIT,        /* acknowledge batch k after committing k+1 */
};

struct run_spec {
    uint64_t n_events;
    unsigned per_commit;
    enum ack_mode ack;      /* engine only; raw LMDB syncs every commit */
    bool sequential;        /* streams in order (setup), else at random */
    bool engine_validates;  /* op->validated = false */
};

/* ---- (a) and (c): the engine ---- */

/* One batch of single-event appends, built once, repointed per event. */
struct eng_batch {
    Annals__V1__EventData ev[BENCH_PER_COMMIT_MAX];
    Annals__V1__EventData *ev_ptr[BENCH_PER_COMMIT_MAX];
    Annals__V1__StreamAppend sa[BENCH_PER_COMMIT_MAX];
    Annals__V1__StreamAppend *sa_ptr[BENCH_PER_COMMIT_MAX];
    Annals__V1__AppendRequest req[BENCH_PER_COMMIT_MAX];
    struct log_stream_result res[BENCH_PER_COMMIT_MAX];
    struct log_op ops[BENCH_PER_COMMIT_MAX];
    int64_t expected[BENCH_PER_COMMIT_MAX];  /* last version each op saw */
};

static struct eng_batch *eng_batch_new(void)
{
    struct eng_batch *b = xcalloc(1, sizeof(*b));
    for (size_t i = 0; i < BENCH_PER_COMMIT_MAX; i++) {
        b->ev[i] = (Annals__V1__EventData)ANNALS__V1__EVENT_DATA__INIT;
        b->ev[i].type = BENCH_TYPE;
        b->ev[i].content_type = BENCH_CONTENT_TYPE;
        b->ev[i].data.len = sizeof(bench_json) - 1;
        b->ev[i].data.data = (uint8_t *)bench_json;
        b->ev_ptr[i] = &b->ev[i];

        b->sa[i] = (Annals__V1__StreamAppend)ANNALS__V1__STREAM_APPEND__INIT;
        b->sa[i].n_events = 1;
        b->sa[i].events = &b->ev_ptr[i];
        b->sa_ptr[i] = &b->sa[i];

        b->req[i] = (Annals__V1__AppendRequest)ANNALS__V1__APPEND_REQUEST__INIT;
        b->req[i].n_streams = 1;
        b->req[i].streams = &b->sa_ptr[i];

        b->ops[i].kind = LOG_OP_APPEND;
        b->ops[i].append = &b->req[i];
        b->ops[i].streams = &b->res[i];
    }
    return b;
}

static void eng_batch_free(struct eng_batch *b)
{
    free(b);
}

/* Points the first n ops at the next n streams, expecting what we know. */
static void eng_fill(struct eng_batch *b, struct workload *w, size_t n,
                     const struct run_spec *rs)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t s = workload_pick(w, rs->sequential);
        int64_t last = w->last_version[s];
        Annals__V1__StreamAppend *sa = &b->sa[i];
        sa->stream = stream_name(w->st, s);
        if (last < 0) {
            sa->expect = ANNALS__V1__EXPECTATION__EXPECT_NO_STREAM;
            sa->expected_version = 0;
        } else {
            sa->expect = ANNALS__V1__EXPECTATION__EXPECT_VERSION;
            sa->expected_version = (uint64_t)last;
        }
        b->expected[i] = last;
        b->ops[i].validated = !rs->engine_validates;
        w->last_version[s] = last + 1;
    }
}

/* Every op must have succeeded with the version the bench expected. */
static void eng_check(const struct eng_batch *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct log_op *op = &b->ops[i];
        if (op->rc) {
            char what[128];
            snprintf(what, sizeof(what), "log_commit: append to %s (op %zu)", b->sa[i].stream,
                     i);
            die_an(op->rc, what, op->detail);
        }
        uint64_t want = (uint64_t)(b->expected[i] + 1);
        if (b->res[i].first_version != want || b->res[i].last_version != want) {
            die("log_commit: append to %s got versions %" PRIu64 "..%" PRIu64
                ", expected %" PRIu64,
                b->sa[i].stream, b->res[i].first_version, b->res[i].last_version, want);
        }
    }
}

static log_env *eng_open(const char *dir, uint64_t map_bytes)
{
    struct log_cfg c = {.dir = dir, .initial_map_bytes = map_bytes};
    char detail[LOG_DETAIL_MAX] = "";
    log_env *env = NULL;
    int rc = log_open(&c, &env, detail);
    if (rc) {
        die_an(rc, "log_open", detail);
    }
    return env;
}

/*
 * Appends rs->n_events events, rs->per_commit per commit, acknowledged as
 * rs->ack says; a loaded writer's last batch is made durable by a final
 * log_sync(), as when its queue runs dry. Returns the elapsed time, from
 * the first commit to the last acknowledgement, and adds it to p. *late
 * counts batches not durable when a writer would have acknowledged them
 * (log.h promises none).
 */
static uint64_t eng_write(log_env *env, struct eng_batch *b, struct workload *w,
                          const struct run_spec *rs, struct progress *p, uint64_t *late)
{
    uint64_t done = 0;
    uint64_t prev_seq = 0;
    int rc;

    uint64_t t0 = now_ns();
    while (done < rs->n_events) {
        uint64_t left = rs->n_events - done;
        size_t n = left < rs->per_commit ? (size_t)left : rs->per_commit;
        uint64_t seq = 0;
        eng_fill(b, w, n, rs);
        rc = rs->ack == ACK_SYNC_EACH ? log_commit_durable(env, b->ops, n, &seq)
                                      : log_commit(env, b->ops, n, &seq);
        if (rc) {
            die_an(rc, "log_commit", b->ops[0].detail);
        }
        eng_check(b, n);
        if (seq == 0) {
            die("log_commit: %zu appends succeeded but no commit was made", n);
        }
        if (rs->ack == ACK_SYNC_EACH) {
            if (log_durable_seq(env) < seq) {
                (*late)++;
            }
        } else {
            /* batch k is answered now that batch k+1 has committed */
            if (prev_seq && log_durable_seq(env) < prev_seq) {
                (*late)++;
            }
            prev_seq = seq;
        }
        done += n;
        progress_add(p, n);
        /* as the server's writer does between commits (log.h) */
        while (log_prealloc_due(env)) {
            log_prealloc(env);
        }
    }
    if (rs->ack == ACK_NEXT_COMMIT) {
        rc = log_sync(env);
        if (rc) {
            die_an(rc, "log_sync", NULL);
        }
        if (log_durable_seq(env) < prev_seq) {
            (*late)++;
        }
    }
    uint64_t elapsed = now_ns() - t0;
    p->timed_ns += elapsed;
    return elapsed;
}

/* The log must now hold exactly `events` events, all durable, and every
 * stream the workload wrote. */
static void eng_check_head(log_env *env, const struct workload *w, uint64_t events)
{
    struct log_stats st;
    uint64_t streams = 0;
    int rc = log_stats(env, &st);
    if (rc) {
        die_an(rc, "log_stats", NULL);
    }
    for (uint32_t i = 0; i < w->st->n; i++) {
        streams += w->last_version[i] >= 0;
    }
    if (st.head != events || st.committed_head != events || st.streams != streams) {
        die("log_stats: head %" PRIu64 " (committed %" PRIu64 "), %" PRIu64
            " streams; expected %" PRIu64 " events in %" PRIu64 " streams",
            st.head, st.committed_head, st.streams, events, streams);
    }
}

struct read_sum {
    uint64_t events;
    uint64_t bytes;
};

static bool eng_touch(void *arg, const struct log_event *ev)
{
    struct read_sum *s = arg;
    s->events++;
    s->bytes += ev->packed_len;
    return true;
}

/* One pass of log_read_all over everything; returns the elapsed time. */
static uint64_t eng_read(log_env *env, log_reader *rd, uint64_t expect, struct read_sum *sum)
{
    bool done = false;
    uint64_t t0 = now_ns();
    int rc = log_reader_begin(rd);
    if (rc) {
        die_an(rc, "log_reader_begin", log_reader_detail(rd));
    }
    struct log_all_read q = {.from_position = 1, .as_of = log_reader_head(rd)};
    rc = log_read_all(rd, &q, eng_touch, sum, NULL, &done);
    if (rc) {
        die_an(rc, "log_read_all", log_reader_detail(rd));
    }
    log_reader_end(rd);
    uint64_t elapsed = now_ns() - t0;
    if (sum->events != expect || !done) {
        die("log_read_all handed %" PRIu64 " events (done %d), expected %" PRIu64
            " (log head %" PRIu64 ")",
            sum->events, (int)done, expect, log_head(env));
    }
    return elapsed;
}

/* ---- (b) and (c): raw LMDB, the naive layout ---- */

#define RAW_VALUE_MAX 1024u

struct raw_env {
    MDB_env *env;
    MDB_dbi events;         /* u64 position -> event */
    MDB_dbi streams;        /* name -> last version (u64) */
    MDB_dbi index;          /* name + BE u64 version -> position (u64) */
    uint64_t head;          /* last position written */
    uint64_t id_rng;
    uint8_t value[RAW_VALUE_MAX];
};

static void raw_open(struct raw_env *r, const char *dir, uint64_t map_bytes)
{
    MDB_txn *txn = NULL;
    int rc;

    memset(r, 0, sizeof(*r));
    r->id_rng = 0x853c49e6748fea9bu;
    if (mkdir(dir, 0755) != 0) {
        die("cannot create %s: %s", dir, strerror(errno));
    }
    if ((rc = mdb_env_create(&r->env))) {
        die_mdb(rc, "mdb_env_create");
    }
    mdb_env_set_maxdbs(r->env, 3);
    if ((rc = mdb_env_set_mapsize(r->env, (size_t)map_bytes))) {
        die_mdb(rc, "mdb_env_set_mapsize");
    }
    /* flags 0: LMDB's default, fully durable commit */
    if ((rc = mdb_env_open(r->env, dir, 0, 0644))) {
        die_mdb(rc, "mdb_env_open");
    }
    if ((rc = mdb_txn_begin(r->env, NULL, 0, &txn))) {
        die_mdb(rc, "mdb_txn_begin");
    }
    if ((rc = mdb_dbi_open(txn, "events", MDB_CREATE | MDB_INTEGERKEY, &r->events)) ||
        (rc = mdb_dbi_open(txn, "streams", MDB_CREATE, &r->streams)) ||
        (rc = mdb_dbi_open(txn, "stream_index", MDB_CREATE, &r->index))) {
        die_mdb(rc, "mdb_dbi_open");
    }
    if ((rc = mdb_txn_commit(txn))) {
        die_mdb(rc, "mdb_txn_commit");
    }
}

static void raw_close(struct raw_env *r)
{
    mdb_env_close(r->env);
    r->env = NULL;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/*
 * The naive event record: version, time, a 16-byte UUIDv7-like id, then
 * name, type and content type (each length-prefixed), then the data.
 * 272 bytes for the bench's events.
 */
static size_t raw_pack(struct raw_env *r, const char *name, size_t name_len,
                       uint64_t version, int64_t ts_ns)
{
    uint8_t *p = r->value;
    uint64_t ms = (uint64_t)ts_ns / 1000000u;
    uint64_t rnd1 = xorshift64s(&r->id_rng);
    uint64_t rnd2 = xorshift64s(&r->id_rng);

    memcpy(p, &version, 8);
    memcpy(p + 8, &ts_ns, 8);
    p += 16;
    put_be64(p, ms << 16 | 0x7000u | (rnd1 & 0x0fffu));
    put_be64(p + 8, (rnd2 & 0x3fffffffffffffffu) | 0x8000000000000000u);
    p += 16;
    *p++ = (uint8_t)name_len;
    memcpy(p, name, name_len);
    p += name_len;
    *p++ = (uint8_t)(sizeof(BENCH_TYPE) - 1);
    memcpy(p, BENCH_TYPE, sizeof(BENCH_TYPE) - 1);
    p += sizeof(BENCH_TYPE) - 1;
    *p++ = (uint8_t)(sizeof(BENCH_CONTENT_TYPE) - 1);
    memcpy(p, BENCH_CONTENT_TYPE, sizeof(BENCH_CONTENT_TYPE) - 1);
    p += sizeof(BENCH_CONTENT_TYPE) - 1;
    memcpy(p, bench_json, sizeof(bench_json) - 1);
    p += sizeof(bench_json) - 1;
    return (size_t)(p - r->value);
}

/* One naive append: OCC read, then event, stream version, index entry. */
static void raw_append(struct raw_env *r, MDB_txn *txn, const char *name, size_t name_len,
                       int64_t expected, int64_t ts_ns)
{
    uint8_t ikey[LOG_NAME_MAX + 8];
    MDB_val k = {.mv_size = name_len, .mv_data = (void *)name};
    MDB_val v;
    int64_t last = -1;
    int rc = mdb_get(txn, r->streams, &k, &v);

    if (rc == 0) {
        uint64_t u;
        if (v.mv_size != 8) {
            die("naive streams[%s]: %zu-byte value", name, v.mv_size);
        }
        memcpy(&u, v.mv_data, 8);
        last = (int64_t)u;
    } else if (rc != MDB_NOTFOUND) {
        die_mdb(rc, "naive mdb_get streams");
    }
    if (last != expected) {
        die("naive append to %s: version %" PRId64 ", expected %" PRId64, name, last,
            expected);
    }
    uint64_t version = (uint64_t)(last + 1);
    uint64_t pos = ++r->head;

    k = (MDB_val){.mv_size = 8, .mv_data = &pos};
    v = (MDB_val){.mv_size = raw_pack(r, name, name_len, version, ts_ns), .mv_data = r->value};
    if ((rc = mdb_put(txn, r->events, &k, &v, MDB_APPEND))) {
        die_mdb(rc, "naive mdb_put events");
    }
    k = (MDB_val){.mv_size = name_len, .mv_data = (void *)name};
    v = (MDB_val){.mv_size = 8, .mv_data = &version};
    if ((rc = mdb_put(txn, r->streams, &k, &v, 0))) {
        die_mdb(rc, "naive mdb_put streams");
    }
    memcpy(ikey, name, name_len);
    put_be64(ikey + name_len, version);
    k = (MDB_val){.mv_size = name_len + 8, .mv_data = ikey};
    v = (MDB_val){.mv_size = 8, .mv_data = &pos};
    if ((rc = mdb_put(txn, r->index, &k, &v, 0))) {
        die_mdb(rc, "naive mdb_put stream_index");
    }
}

/* Appends rs->n_events events, rs->per_commit per durable commit. */
static uint64_t raw_write(struct raw_env *r, struct workload *w, const struct run_spec *rs,
                          struct progress *p)
{
    uint64_t done = 0;

    uint64_t t0 = now_ns();
    while (done < rs->n_events) {
        uint64_t left = rs->n_events - done;
        size_t n = left < rs->per_commit ? (size_t)left : rs->per_commit;
        MDB_txn *txn = NULL;
        int rc = mdb_txn_begin(r->env, NULL, 0, &txn);
        if (rc) {
            die_mdb(rc, "naive mdb_txn_begin");
        }
        int64_t ts = wall_ns();
        for (size_t i = 0; i < n; i++) {
            uint32_t s = workload_pick(w, rs->sequential);
            int64_t last = w->last_version[s];
            raw_append(r, txn, stream_name(w->st, s), w->st->name_len[s], last, ts);
            w->last_version[s] = last + 1;
        }
        if ((rc = mdb_txn_commit(txn))) {
            die_mdb(rc, "naive mdb_txn_commit");
        }
        done += n;
        progress_add(p, n);
    }
    uint64_t elapsed = now_ns() - t0;
    p->timed_ns += elapsed;
    return elapsed;
}

/* One pass of a cursor over the events DB; returns the elapsed time. */
static uint64_t raw_read(struct raw_env *r, uint64_t expect, struct read_sum *sum)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k;
    MDB_val v;
    uint64_t t0 = now_ns();
    int rc = mdb_txn_begin(r->env, NULL, MDB_RDONLY, &txn);

    if (rc) {
        die_mdb(rc, "naive read mdb_txn_begin");
    }
    if ((rc = mdb_cursor_open(txn, r->events, &c))) {
        die_mdb(rc, "naive mdb_cursor_open");
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        sum->events++;
        sum->bytes += v.mv_size;
    }
    if (rc != MDB_NOTFOUND) {
        die_mdb(rc, "naive mdb_cursor_get");
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    uint64_t elapsed = now_ns() - t0;
    if (sum->events != expect) {
        die("naive cursor saw %" PRIu64 " events, expected %" PRIu64, sum->events, expect);
    }
    return elapsed;
}

/* ---- the figures ---- */

struct figure {
    const char *name;
    uint64_t events;
    double engine_eps;
    double raw_eps;
    double target_ratio;    /* engine/raw at least this; 0: none */
    double target_eps;      /* engine events/s at least this; 0: none */
};

/* Room for events * per_event plus slack: sparse, so generous is free. */
static uint64_t map_bytes_for(uint64_t events)
{
    return events * 2048u + (256ull << 20);
}

/* Both sides of a figure, open at once in sibling dirs. */
struct pair {
    log_env *env;
    struct raw_env *raw;
    struct workload we;
    struct workload wr;
    char engine_dir[4200];
    char raw_dir[4200];
};

static void pair_open(struct pair *pr, const struct streams *st, const char *name,
                      uint64_t map)
{
    char sub[64];
    snprintf(sub, sizeof(sub), "%s-engine", name);
    sub_dir(pr->engine_dir, sizeof(pr->engine_dir), sub);
    snprintf(sub, sizeof(sub), "%s-naive", name);
    sub_dir(pr->raw_dir, sizeof(pr->raw_dir), sub);
    pr->env = eng_open(pr->engine_dir, map);
    pr->raw = xcalloc(1, sizeof(*pr->raw));
    raw_open(pr->raw, pr->raw_dir, map);
    workload_init(&pr->we, st);
    workload_init(&pr->wr, st);
}

static void pair_close(struct pair *pr)
{
    log_close(pr->env);
    raw_close(pr->raw);
    free(pr->raw);
    workload_free(&pr->we);
    workload_free(&pr->wr);
    rm_tree(pr->engine_dir);
    rm_tree(pr->raw_dir);
}

/*
 * (a) and (b) for one batch size. Both envs are fresh; the streams are
 * created first (one event each, untimed). The timed appends then run in
 * --rounds rounds that alternate between the two sides (and which side goes
 * first), so that a disturbance on a shared machine hits both alike.
 */
static void run_append_figure(struct figure *f, unsigned per_commit, enum ack_mode ack,
                              uint64_t n_events, const struct streams *st, struct eng_batch *b,
                              uint64_t *late)
{
    struct pair pr;
    struct progress pe;
    struct progress pn;
    char name[32];
    struct run_spec setup = {
        .n_events = st->n,
        .per_commit = BENCH_PER_COMMIT_MAX,
        .ack = ACK_NEXT_COMMIT,
        .sequential = true,
        .engine_validates = true,
    };
    struct run_spec timed = {
        .per_commit = per_commit,
        .ack = ack,
        .sequential = false,
        .engine_validates = false,
    };
    uint64_t commits = (n_events + per_commit - 1) / per_commit;
    uint64_t done = 0;

    snprintf(name, sizeof(name), "append-%u", per_commit);
    pair_open(&pr, st, name, map_bytes_for(n_events + st->n));
    progress_start(&pe, st->n, "(a) %u/commit: creating streams", per_commit);
    eng_write(pr.env, b, &pr.we, &setup, &pe, late);
    progress_end(&pe);
    progress_start(&pn, st->n, "(b) %u/commit: creating streams", per_commit);
    raw_write(pr.raw, &pr.wr, &setup, &pn);
    progress_end(&pn);

    progress_start(&pe, n_events, "(a) %u/commit", per_commit);
    progress_start(&pn, n_events, "(b) %u/commit", per_commit);
    for (uint64_t r = 0; r < cfg.rounds; r++) {
        uint64_t c = commits * (r + 1) / cfg.rounds - commits * r / cfg.rounds;
        uint64_t left = n_events - done;
        timed.n_events = c * per_commit < left ? c * per_commit : left;
        if (timed.n_events == 0) {
            continue;
        }
        if (r % 2 == 0) {
            eng_write(pr.env, b, &pr.we, &timed, &pe, late);
            raw_write(pr.raw, &pr.wr, &timed, &pn);
        } else {
            raw_write(pr.raw, &pr.wr, &timed, &pn);
            eng_write(pr.env, b, &pr.we, &timed, &pe, late);
        }
        done += timed.n_events;
    }
    progress_end(&pe);
    progress_end(&pn);
    eng_check_head(pr.env, &pr.we, st->n + n_events);
    if (pr.raw->head != st->n + n_events) {
        die("naive head %" PRIu64 ", expected %" PRIu64, pr.raw->head, st->n + n_events);
    }
    pair_close(&pr);

    f->events = n_events;
    f->engine_eps = per_second(n_events, pe.timed_ns);
    f->raw_eps = per_second(n_events, pn.timed_ns);
}

/*
 * (c): n events written 1000 per commit to random streams (untimed), then
 * read in --passes passes that alternate between the sides; the fastest
 * pass of each counts.
 */
static void run_read_figure(struct figure *f, uint64_t n, const struct streams *st,
                            struct eng_batch *b, uint64_t *late, struct read_sum *engine_sum,
                            struct read_sum *raw_sum)
{
    struct pair pr;
    struct progress p;
    struct run_spec write = {
        .n_events = n,
        .per_commit = BENCH_PER_COMMIT_MAX,
        .ack = ACK_NEXT_COMMIT,
        .sequential = false,
        .engine_validates = false,
    };
    uint64_t best_e = UINT64_MAX;
    uint64_t best_n = UINT64_MAX;
    log_reader *rd = NULL;

    pair_open(&pr, st, "read", map_bytes_for(n));
    progress_start(&p, n, "(c) engine: writing (untimed)");
    eng_write(pr.env, b, &pr.we, &write, &p, late);
    progress_end(&p);
    eng_check_head(pr.env, &pr.we, n);
    progress_start(&p, n, "(c) naive: writing (untimed)");
    raw_write(pr.raw, &pr.wr, &write, &p);
    progress_end(&p);

    int rc = log_reader_open(pr.env, &rd);
    if (rc) {
        die_an(rc, "log_reader_open", NULL);
    }
    for (uint64_t i = 0; i < cfg.passes; i++) {
        for (int side = 0; side < 2; side++) {
            bool engine = (side == 0) == (i % 2 == 0);
            struct read_sum sum = {0};
            uint64_t el;
            if (engine) {
                el = eng_read(pr.env, rd, n, &sum);
                best_e = el < best_e ? el : best_e;
                *engine_sum = sum;
            } else {
                el = raw_read(pr.raw, n, &sum);
                best_n = el < best_n ? el : best_n;
                *raw_sum = sum;
            }
            fprintf(stderr,
                    "bench: (c) %s read, pass %" PRIu64 "/%" PRIu64 ": %" PRIu64
                    " events in %.3f s\n",
                    engine ? "engine" : "naive", i + 1, cfg.passes, sum.events,
                    (double)el / 1e9);
        }
    }
    log_reader_close(rd);
    pair_close(&pr);

    f->events = n;
    f->engine_eps = per_second(n, best_e);
    f->raw_eps = per_second(n, best_n);
}

static void print_table(const struct figure *figs, size_t n, uint64_t late,
                        const struct read_sum *engine_sum, const struct read_sum *raw_sum)
{
    printf("\nbench_log: %" PRIu64 " streams, %" PRIu64 " round(s), %" PRIu64
           " read pass(es), seed %" PRIu64 "\n",
           cfg.streams, cfg.rounds, cfg.passes, cfg.seed);
    printf("%-18s %9s %12s %12s %8s  %s\n", "figure", "events", "engine ev/s", "naive ev/s",
           "ratio", "target");
    for (size_t i = 0; i < n; i++) {
        const struct figure *f = &figs[i];
        double ratio = f->raw_eps > 0 ? f->engine_eps / f->raw_eps : 0.0;
        char target[40] = "-";
        if (f->target_ratio > 0) {
            snprintf(target, sizeof(target), ">= %.1fx ratio: %s", f->target_ratio,
                     ratio >= f->target_ratio ? "met" : "MISSED");
        } else if (f->target_eps > 0) {
            snprintf(target, sizeof(target), ">= %.0fM ev/s: %s", f->target_eps / 1e6,
                     f->engine_eps >= f->target_eps ? "met" : "MISSED");
        }
        printf("%-18s %9" PRIu64 " %12.0f %12.0f %7.2fx  %s\n", f->name, f->events,
               f->engine_eps, f->raw_eps, ratio, target);
    }
    printf("stored event: engine %.0f bytes, naive %.0f bytes; "
           "engine batches not durable when acknowledged: %" PRIu64 "\n",
           engine_sum->events ? (double)engine_sum->bytes / (double)engine_sum->events : 0.0,
           raw_sum->events ? (double)raw_sum->bytes / (double)raw_sum->events : 0.0, late);
}

int main(int argc, char **argv)
{
    struct streams st;
    struct figure figs[4];
    struct read_sum engine_sum = {0};
    struct read_sum raw_sum = {0};
    uint64_t late = 0;

    parse_flags(argc, argv);
    if (cfg.help) {
        usage(stdout);
        return 0;
    }
    make_root();
    fprintf(stderr,
            "bench: dir=%s events-small=%" PRIu64 " events=%" PRIu64 " read=%" PRIu64
            " streams=%" PRIu64 " rounds=%" PRIu64 " passes=%" PRIu64 " seed=%" PRIu64 "%s\n",
            root_dir, cfg.events_small, cfg.events, cfg.read, cfg.streams, cfg.rounds,
            cfg.passes, cfg.seed, cfg.quick ? " (quick)" : "");

    streams_init(&st, (uint32_t)cfg.streams);
    struct eng_batch *b = eng_batch_new();

    memset(figs, 0, sizeof(figs));
    figs[0].name = "1/commit, synced";
    figs[0].target_ratio = 1.0;
    run_append_figure(&figs[0], 1, ACK_SYNC_EACH, cfg.events_small, &st, b, &late);
    figs[1].name = "64/commit";
    figs[1].target_ratio = 1.5;
    run_append_figure(&figs[1], 64, ACK_NEXT_COMMIT, cfg.events, &st, b, &late);
    figs[2].name = "1000/commit";
    run_append_figure(&figs[2], 1000, ACK_NEXT_COMMIT, cfg.events, &st, b, &late);
    figs[3].name = "sequential read";
    figs[3].target_eps = 3e6;
    run_read_figure(&figs[3], cfg.read, &st, b, &late, &engine_sum, &raw_sum);

    print_table(figs, 4, late, &engine_sum, &raw_sum);

    eng_batch_free(b);
    streams_free(&st);
    remove_root();
    return 0;
}

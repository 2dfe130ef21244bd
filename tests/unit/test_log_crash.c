/*
 * test_log_crash.c - acknowledged appends survive kill -9.
 *
 * A forked child opens the log and appends in a loop, a few events per op
 * and several ops per commit, syncing now and then as a writer whose queue
 * runs dry would. It acknowledges an op only once log_durable_seq() has
 * reached the op's seq (log.h, "Durability argument"), and for each event of
 * an acknowledged op writes one fixed-size record (position, version,
 * stream, id seed) to a pipe; one write() per record, below PIPE_BUF, so a
 * kill never splits one. A second test does the same with a concurrent
 * syncer thread (log_sync_through), as annalsd's writer has. The parent kills the child with SIGKILL after a
 * random delay, drains the pipe, reopens the log and checks that every
 * acknowledged event is at its position intact, that positions 1..head are
 * gap-free, and that log_verify passes. The rounds continue in the same
 * directory, so later rounds also recover from the earlier kills, and every
 * round re-checks the acknowledgements of all rounds before it.
 */
#include "log_fixture.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CR_ROUNDS 10
#define CR_STREAMS 6
#define CR_MIN_DELAY_MS 10
#define CR_MAX_DELAY_MS 300

TestSuite(log_crash, .timeout = 120);

struct ack {
    uint64_t pos;
    uint64_t version;
    uint64_t seed;     /* id is fx_id(seed); data is fx_pattern(data_len(seed), seed) */
    uint32_t stream;
    uint32_t pad;
};

static size_t data_len(uint64_t seed)
{
    return 16 + (size_t)(seed % 97);
}

static void stream_name(char *out, size_t cap, uint32_t i)
{
    snprintf(out, cap, "crash-%u", i);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- the child: append, sync sometimes, acknowledge what is durable ---- */

struct pending {
    struct ack a;
    uint64_t seq;
};

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            _exit(14);
        }
        p += n;
        len -= (size_t)n;
    }
}

/* The concurrent syncer (as annalsd's): the writer hands it each commit
 * and goes on; it makes the newest one durable with log_sync_through. */
struct syncer {
    log_env *env;
    pthread_mutex_t mu;
    uint64_t seq;              /* the newest commit handed over */
    uint64_t head;             /* its head */
};

static void *syncer_main(void *arg)
{
    struct syncer *sy = arg;
    uint64_t done = 0;
    for (;;) {
        pthread_mutex_lock(&sy->mu);
        uint64_t seq = sy->seq;
        uint64_t head = sy->head;
        pthread_mutex_unlock(&sy->mu);
        if (seq > done) {
            if (log_sync_through(sy->env, seq, head) != 0 || log_durable_seq(sy->env) < seq ||
                log_head(sy->env) < head) {
                _exit(18);
            }
            done = seq;
        } else {
            struct timespec t = {.tv_sec = 0, .tv_nsec = 50000};
            nanosleep(&t, NULL);
        }
    }
    return NULL;
}

static void child_main(const char *dir, int fd, uint64_t round, uint64_t rng, bool with_syncer)
{
    struct log_cfg cfg = {.dir = dir};
    log_env *env = NULL;
    char detail[LOG_DETAIL_MAX];
    if (log_open(&cfg, &env, detail) != 0) {
        _exit(10);
    }
    size_t cap = 4096;
    size_t head = 0;
    size_t tail = 0;
    struct pending *pend = malloc(cap * sizeof(*pend));
    uint64_t next_seed = round << 32;
    struct syncer sy = {.env = env};
    pthread_t sy_thread;
    pthread_mutex_init(&sy.mu, NULL);
    if (with_syncer && pthread_create(&sy_thread, NULL, syncer_main, &sy) != 0) {
        _exit(19);
    }
    uint64_t last_durable = 0;
    enum { MAX_OPS = 4 };
    for (;;) {
        Annals__V1__AppendRequest *reqs[MAX_OPS];
        struct log_stream_result sr[MAX_OPS];
        struct log_op ops[MAX_OPS];
        uint32_t streams[MAX_OPS];
        uint64_t seeds[MAX_OPS];
        size_t n_ops = 1 + xorshift(&rng) % MAX_OPS;
        for (size_t i = 0; i < n_ops; i++) {
            char name[32];
            streams[i] = (uint32_t)(xorshift(&rng) % CR_STREAMS);
            stream_name(name, sizeof(name), streams[i]);
            size_t n_ev = 1 + xorshift(&rng) % 4;
            seeds[i] = next_seed + 1;
            reqs[i] = rq_simple(name, FX_EXPECT_ANY, 0, n_ev, "Crashed", seeds[i]);
            for (size_t k = 0; k < n_ev; k++) {
                rq_set_data(reqs[i]->streams[0]->events[k], data_len(seeds[i] + k),
                            seeds[i] + k);
            }
            next_seed += n_ev;
            memset(&ops[i], 0, sizeof(ops[i]));
            ops[i].kind = LOG_OP_APPEND;
            ops[i].append = reqs[i];
            ops[i].streams = &sr[i];
            ops[i].principal = "crash";
        }
        uint64_t seq = 0;
        if (log_commit(env, ops, n_ops, &seq) != 0) {
            _exit(11);
        }
        for (size_t i = 0; i < n_ops; i++) {
            if (ops[i].rc != 0 || ops[i].seq == 0) {
                _exit(12);
            }
            size_t n_ev = reqs[i]->streams[0]->n_events;
            if (ops[i].last_position - ops[i].first_position + 1 != n_ev) {
                _exit(15);
            }
            for (size_t k = 0; k < n_ev; k++) {
                if (tail == cap) {
                    memmove(pend, pend + head, (tail - head) * sizeof(*pend));
                    tail -= head;
                    head = 0;
                    if (tail == cap) {
                        cap *= 2;
                        pend = realloc(pend, cap * sizeof(*pend));
                        if (!pend) {
                            _exit(16);
                        }
                    }
                }
                pend[tail++] = (struct pending){
                    .a = {.pos = ops[i].first_position + k,
                          .version = sr[i].first_version + k,
                          .seed = seeds[i] + k,
                          .stream = streams[i]},
                    .seq = ops[i].seq,
                };
            }
            rq_free(reqs[i]);
        }
        if (with_syncer) {
            /* hand the commit over and go on at once */
            pthread_mutex_lock(&sy.mu);
            sy.seq = seq ? seq : sy.seq;
            sy.head = log_committed_head(env);
            pthread_mutex_unlock(&sy.mu);
        } else if (xorshift(&rng) % 3 == 0 && log_sync(env) != 0) {
            /* an idle writer syncs and acknowledges at once; a busy one
             * lets the next commit's sync cover this one */
            _exit(13);
        }
        uint64_t durable = log_durable_seq(env);
        if (durable < last_durable) {
            _exit(17); /* the durable sequence went back */
        }
        last_durable = durable;
        while (head < tail && pend[head].seq <= durable) {
            write_all(fd, &pend[head].a, sizeof(pend[head].a));
            head++;
        }
    }
}

/* ---- the parent: kill, reopen, check ---- */

struct acks {
    struct ack *v;
    size_t n;
    size_t cap;
};

static void take(struct acks *acks, const uint8_t *buf, size_t len)
{
    for (size_t off = 0; off + sizeof(struct ack) <= len; off += sizeof(struct ack)) {
        if (acks->n == acks->cap) {
            acks->cap = acks->cap ? 2 * acks->cap : 1024;
            acks->v = realloc(acks->v, acks->cap * sizeof(*acks->v));
            cr_assert_not_null(acks->v);
        }
        memcpy(&acks->v[acks->n++], buf + off, sizeof(struct ack));
    }
}

/* Reads whatever the pipe has until the deadline (or EOF); keeps partial
 * records in rem. Returns false at EOF. */
static bool pump(int fd, struct acks *acks, uint8_t *rem, size_t *rem_len, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms);
    if (pr <= 0) {
        return true;
    }
    uint8_t buf[4096];
    memcpy(buf, rem, *rem_len);
    ssize_t n = read(fd, buf + *rem_len, sizeof(buf) - *rem_len);
    if (n < 0 && errno == EINTR) {
        return true;
    }
    cr_assert_geq(n, 0, "read from the pipe: %s", strerror(errno));
    if (n == 0) {
        return false;
    }
    size_t have = *rem_len + (size_t)n;
    size_t whole = have - have % sizeof(struct ack);
    take(acks, buf, whole);
    *rem_len = have - whole;
    memcpy(rem, buf + whole, *rem_len);
    return true;
}

struct scan {
    uint64_t expect;
    const char *err;
};

static bool scan_event(void *arg, const struct log_event *ev)
{
    struct scan *s = arg;
    if (ev->position != s->expect) {
        s->err = "positions are not gap-free";
        return false;
    }
    s->expect++;
    return true;
}

static void check_log(const char *dir, const struct acks *acks, uint64_t seed, int round)
{
    struct log_cfg cfg = {.dir = dir};
    log_env *env = NULL;
    log_reader *rd = NULL;
    char detail[LOG_DETAIL_MAX] = "";
    int rc = log_open(&cfg, &env, detail);
    cr_assert_eq(rc, 0, "seed %llu round %d: reopen = %s (%s)", (unsigned long long)seed,
                 round, an_errname(rc), detail);
    rc = log_verify(env, NULL, NULL, detail);
    cr_assert_eq(rc, 0, "seed %llu round %d: log_verify = %s (%s)", (unsigned long long)seed,
                 round, an_errname(rc), detail);
    cr_assert_eq(log_reader_open(env, &rd), 0);
    cr_assert_eq(log_reader_begin(rd), 0);
    uint64_t head = log_reader_head(rd);
    cr_assert_eq(head, log_head(env));

    struct scan s = {.expect = 1};
    struct log_all_read q = {.from_position = 1, .as_of = head};
    bool done = false;
    cr_assert_eq(log_read_all(rd, &q, scan_event, &s, NULL, &done), 0);
    cr_assert_null(s.err, "seed %llu round %d: %s at %llu", (unsigned long long)seed, round,
                   s.err, (unsigned long long)s.expect);
    cr_assert_eq(s.expect, head + 1, "seed %llu round %d: read %llu events, head %llu",
                 (unsigned long long)seed, round, (unsigned long long)s.expect - 1,
                 (unsigned long long)head);
    cr_assert(done);

    uint8_t want_data[128];
    for (size_t i = 0; i < acks->n; i++) {
        const struct ack *a = &acks->v[i];
        cr_assert_leq(a->pos, head,
                      "seed %llu round %d: acknowledged position %llu lost (head %llu)",
                      (unsigned long long)seed, round, (unsigned long long)a->pos,
                      (unsigned long long)head);
        struct log_event ev;
        rc = log_get_event(rd, a->pos, &ev);
        cr_assert_eq(rc, 0, "seed %llu round %d: get_event(%llu) = %s",
                     (unsigned long long)seed, round, (unsigned long long)a->pos,
                     an_errname(rc));
        Annals__V1__RecordedEvent *rec =
            annals__v1__recorded_event__unpack(NULL, ev.packed_len, ev.packed);
        cr_assert_not_null(rec, "position %llu does not unpack", (unsigned long long)a->pos);
        char name[32];
        stream_name(name, sizeof(name), a->stream);
        uint8_t want_id[16];
        fx_id(want_id, a->seed);
        size_t dl = data_len(a->seed);
        fx_pattern(want_data, dl, a->seed);
        cr_assert_eq(rec->global_position, a->pos);
        cr_assert_str_eq(rec->stream, name, "seed %llu round %d: position %llu",
                         (unsigned long long)seed, round, (unsigned long long)a->pos);
        cr_assert_eq(rec->stream_version, a->version,
                     "seed %llu round %d: position %llu version %llu, acked %llu",
                     (unsigned long long)seed, round, (unsigned long long)a->pos,
                     (unsigned long long)rec->stream_version,
                     (unsigned long long)a->version);
        cr_assert(rec->id.len == 16 && memcmp(rec->id.data, want_id, 16) == 0,
                  "seed %llu round %d: position %llu has the wrong id",
                  (unsigned long long)seed, round, (unsigned long long)a->pos);
        cr_assert(rec->data.len == dl && memcmp(rec->data.data, want_data, dl) == 0,
                  "seed %llu round %d: position %llu has the wrong data",
                  (unsigned long long)seed, round, (unsigned long long)a->pos);
        cr_assert_str_eq(rec->type, "Crashed");
        annals__v1__recorded_event__free_unpacked(rec, NULL);
    }
    log_reader_end(rd);
    log_reader_close(rd);
    log_close(env);
}

static void kill_rounds(bool with_syncer)
{
    char dir[] = "/tmp/annals-crash-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    const char *env_seed = getenv("ANNALS_CRASH_SEED");
    if (env_seed) {
        seed = strtoull(env_seed, NULL, 10);
    }
    uint64_t rng = seed | 1;
    struct acks acks = {0};
    size_t total_before = 0;
    for (int round = 1; round <= CR_ROUNDS; round++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        uint64_t child_rng = xorshift(&rng) | 1;
        pid_t pid = fork();
        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            close(fds[0]);
            child_main(dir, fds[1], (uint64_t)round, child_rng, with_syncer);
            _exit(1);
        }
        close(fds[1]);
        int delay = CR_MIN_DELAY_MS +
                    (int)(xorshift(&rng) % (CR_MAX_DELAY_MS - CR_MIN_DELAY_MS + 1));
        int64_t deadline = now_ms() + delay;
        uint8_t rem[sizeof(struct ack)];
        size_t rem_len = 0;
        bool open = true;
        for (int64_t left; open && (left = deadline - now_ms()) > 0;) {
            open = pump(fds[0], &acks, rem, &rem_len, (int)left);
        }
        kill(pid, SIGKILL);
        int status = 0;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "seed %llu round %d: the child stopped by itself (exit %d)",
                  (unsigned long long)seed, round, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        while (pump(fds[0], &acks, rem, &rem_len, -1)) {
        }
        close(fds[0]);
        cr_assert_eq(rem_len, 0, "a torn acknowledgement record");
        cr_log_info("round %d: killed after %d ms, %zu events acknowledged", round, delay,
                    acks.n - total_before);
        total_before = acks.n;
        check_log(dir, &acks, seed, round);
    }
    cr_assert_gt(acks.n, 0, "seed %llu: no append was ever acknowledged",
                 (unsigned long long)seed);
    free(acks.v);
    fx_rm_rf(dir);
}

Test(log_crash, acknowledged_appends_survive_sigkill)
{
    kill_rounds(false);
}

/* The same with annalsd's syncer: log_sync_through on another thread while
 * the writer commits; an op is acknowledged once the durable sequence,
 * raised by either thread, has reached it. */
Test(log_crash, acknowledged_appends_survive_sigkill_with_a_concurrent_syncer)
{
    kill_rounds(true);
}

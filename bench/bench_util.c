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

void bu_server_start(struct bu_server *s, const char *base, const char *const *extra)
{
    char data[300];
    char log[300];
    const char *argv[32];
    size_t n = 0;
    snprintf(s->dir, sizeof(s->dir), "%s/annals-bench-XXXXXX", base);
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "bench: mkdtemp in %s: %s\n", base, strerror(errno));
        exit(1);
    }
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
    s->pid = fork();
    if (s->pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    track(s->pid, 0);
    for (int i = 0; i < 1000; i++) {
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
        usleep(10000);
    }
    fprintf(stderr, "bench: annalsd (%s) did not start; see %s\n", annalsd_path(), log);
    exit(1);
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

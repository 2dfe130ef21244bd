/*
 * annalsd.c - the Annals server's entry point.
 *
 * The gRPC service arrives with the server issue. Until then annalsd opens
 * (or creates) the event log of its data directory, checks it with
 * log_verify, prints what it holds, and exits: the engine's self-check.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

#define ANNALSD_VERSION "0.1.0"

struct opts {
    const char *data;
    const char *listen;
    uint64_t max_size;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: annalsd [options]\n"
            "  --data DIR        data directory (default ./annals-data)\n"
            "  --listen ADDR     gRPC address (default 127.0.0.1:7400)\n"
            "  --max-size BYTES  cap on the log's size; suffixes K M G T (default: none)\n"
            "  --help            this text\n"
            "  --version         the version\n");
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return -1;
    }
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'K':
    case 'k':
        shift = 10;
        break;
    case 'M':
    case 'm':
        shift = 20;
        break;
    case 'G':
    case 'g':
        shift = 30;
        break;
    case 'T':
    case 't':
        shift = 40;
        break;
    default:
        return -1;
    }
    if (*end && end[1]) {
        return -1;
    }
    if (shift && v > (UINT64_MAX >> shift)) {
        return -1;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--version") == 0) {
            printf("annalsd %s\n", ANNALSD_VERSION);
            exit(0);
        } else if (strcmp(a, "--data") == 0 && val) {
            o->data = val;
            i++;
        } else if (strcmp(a, "--listen") == 0 && val) {
            o->listen = val;
            i++;
        } else if (strcmp(a, "--max-size") == 0 && val) {
            if (parse_size(val, &o->max_size) || (o->max_size && o->max_size < (1u << 20))) {
                fprintf(stderr,
                        "annalsd: --max-size '%s': want a size of at least 1M (e.g. 512M, 4G)\n",
                        val);
                return -1;
            }
            i++;
        } else {
            fprintf(stderr, "annalsd: unknown or incomplete option '%s' (see --help)\n", a);
            return -1;
        }
    }
    return 0;
}

static void progress(void *arg, uint64_t done, uint64_t total)
{
    (void)arg;
    fprintf(stderr, "ts=- lvl=info mod=verify msg=\"verifying\" done=%llu total=%llu\n",
            (unsigned long long)done, (unsigned long long)total);
}

int main(int argc, char **argv)
{
    struct opts o = {.data = "./annals-data", .listen = "127.0.0.1:7400"};
    char detail[LOG_DETAIL_MAX] = "";
    char logdir[4096];
    log_env *env = NULL;
    struct log_stats st;

    if (parse(argc, argv, &o)) {
        return 2;
    }
    if (mkdir(o.data, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "annalsd: cannot create %s: %s\n", o.data, strerror(errno));
        return 1;
    }
    snprintf(logdir, sizeof(logdir), "%s/log", o.data);
    struct log_cfg cfg = {.dir = logdir, .max_size_bytes = o.max_size};
    int rc = log_open(&cfg, &env, detail);
    if (rc) {
        fprintf(stderr, "annalsd: %s: %s\n", an_strerror(rc), detail);
        return 1;
    }
    rc = log_verify(env, progress, NULL, detail);
    if (rc == 0) {
        rc = log_stats(env, &st);
    }
    if (rc) {
        fprintf(stderr, "annalsd: self-check failed: %s: %s\n", an_strerror(rc), detail);
        log_close(env);
        return 1;
    }
    printf("annalsd %s: log %s: head=%llu streams=%llu used=%llu bytes map=%llu bytes: "
           "self-check passed\n",
           ANNALSD_VERSION, logdir, (unsigned long long)st.head, (unsigned long long)st.streams,
           (unsigned long long)st.used_bytes, (unsigned long long)st.map_bytes);
    printf("annalsd: the gRPC service on %s is not built yet (issue: annalsd server)\n",
           o.listen);
    log_close(env);
    return 0;
}

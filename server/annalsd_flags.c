/*
 * annalsd_flags.c - annalsd's flags: the one table (name, kind, default,
 * min, max, help), --help generated from it, the command line, the
 * --config file and the srv_cfg built from them (a bad value names the
 * flag and its limit). Moved out of annalsd.c unchanged so that a fuzz
 * target (tests/fuzz/fuzz_config.c) can drive the --config parser as
 * annalsd runs it.
 */
#include "annalsd_flags.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "say.h"

#define ANNALSD_VERSION SRV_VERSION

enum flag_kind {
    FLAG_STRING,
    FLAG_SIZE,      /* bytes, with K M G T suffixes */
    FLAG_UINT,
    FLAG_LEVEL,
    FLAG_BOOL,      /* no value: present or not */
};

struct flag {
    const char *name;
    enum flag_kind kind;
    const char *def;
    uint64_t min;
    uint64_t max;
    const char *help;
};

static const struct flag flags[] = {
    {"data", FLAG_STRING, "./annals-data", 0, 0, "data directory (the log is DATA/log)"},
    {"listen", FLAG_STRING, "127.0.0.1:7400", 0, 0, "gRPC address HOST:PORT (port 0: any)"},
    {"max-size", FLAG_SIZE, "0", 0, UINT64_MAX >> 1,
     "cap on the log's size, e.g. 64G (0: none; else at least 1M)"},
    {"max-event", FLAG_SIZE, "1M", 1, 64ull << 20, "largest event (data + metadata)"},
    {"max-request", FLAG_SIZE, "4M", 1024, 256ull << 20, "largest append request"},
    {"threads", FLAG_UINT, "0", 0, 256, "completion-queue threads (0: one per core)"},
    {"max-batch", FLAG_UINT, "1024", 1, 65536, "appends per group commit"},
    {"max-subscriptions", FLAG_UINT, "10000", 1, 1000000, "Subscribe calls open at once"},
    {"checkpoint-rate", FLAG_UINT, "100", 1, 1000000,
     "checkpoint-only messages a second, shared by all subscriptions"},
    {"max-queue", FLAG_SIZE, "256M", 1ull << 20, 16ull << 30,
     "requests waiting for the writer; past it appends get RESOURCE_EXHAUSTED"},
    {"max-view-size", FLAG_SIZE, "8G", 64ull << 10, UINT64_MAX >> 1,
     "cap on each projection's view files"},
    {"tls-cert", FLAG_STRING, "", 0, 0, "PEM certificate chain: serve TLS only"},
    {"tls-key", FLAG_STRING, "", 0, 0, "PEM private key of --tls-cert"},
    {"tls-client-ca", FLAG_STRING, "", 0, 0, "PEM CA: require and verify client certificates"},
    {"insecure", FLAG_BOOL, "", 0, 0, "allow plaintext on a non-loopback address"},
    {"auth", FLAG_STRING, "", 0, 0, "JSON file of principals and grants (SIGHUP reloads)"},
    {"http", FLAG_STRING, "", 0, 0,
     "HOST:PORT for /metrics, the admin page and /api/ (off unless given)"},
    {"max-connections", FLAG_UINT, "10000", 1, 1000000,
     "connections open at once; more are closed as they come (at most the descriptor limit less 256)"},
    {"max-conn-streams", FLAG_UINT, "10000", 1, 1000000,
     "concurrent calls on one connection"},
    {"idle-timeout", FLAG_UINT, "3600", 0, 864000,
     "seconds a connection may stay without a call (0: forever)"},
    {"keepalive", FLAG_UINT, "60", 1, 86400,
     "seconds between pings of a quiet client; one that does not answer in 20 s is dropped"},
    {"handshake-timeout", FLAG_UINT, "10", 1, 600,
     "seconds a new connection has to complete its handshake (slow clients are dropped)"},
    {"max-metadata", FLAG_SIZE, "16K", 1024, 1ull << 20, "largest headers of a call"},
    {"log-level", FLAG_LEVEL, "info", 0, 0, "debug, info, warn or error"},
    {"config", FLAG_STRING, "", 0, 0,
     "file of 'flag = value' lines (these names; # comments); the command line wins"},
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static_assert(N_FLAGS == ANNALSD_N_FLAGS, "ANNALSD_N_FLAGS is the table's size");

static void usage(FILE *f)
{
    fprintf(f, "usage: annalsd [--flag value ...]\n\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        if (flags[i].kind == FLAG_BOOL || !flags[i].def[0]) {
            fprintf(f, "  --%-18s %s\n", flags[i].name, flags[i].help);
        } else {
            fprintf(f, "  --%-18s %s (default %s)\n", flags[i].name, flags[i].help,
                    flags[i].def);
        }
    }
    fprintf(f, "  --%-18s %s\n  --%-18s %s\n", "help", "this text", "version", "the version");
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s[0] || s[0] == '-') {
        return -1;
    }
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
    if ((*end && end[1]) || (shift && v > (UINT64_MAX >> shift))) {
        return -1;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

/* The value of flag i as a number, checked against its limits. */
static int flag_num(const struct annalsd_opts *o, size_t i, uint64_t *out)
{
    const struct flag *f = &flags[i];
    const char *v = o->val[i] ? o->val[i] : f->def;
    uint64_t n;
    int rc = f->kind == FLAG_SIZE ? parse_size(v, &n) : -1;
    if (f->kind == FLAG_UINT) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        rc = (errno || end == v || *end || v[0] == '-') ? -1 : 0;
        n = x;
    }
    if (rc || n < f->min || n > f->max) {
        fprintf(stderr, "annalsd: --%s '%s': want %s from %llu to %llu\n", f->name, v,
                f->kind == FLAG_SIZE ? "a size" : "a whole number",
                (unsigned long long)f->min, (unsigned long long)f->max);
        return -1;
    }
    *out = n;
    return 0;
}

static size_t flag_index(const char *name)
{
    for (size_t i = 0; i < N_FLAGS; i++) {
        if (strcmp(flags[i].name, name) == 0) {
            return i;
        }
    }
    return N_FLAGS;
}

int annalsd_parse_args(int argc, char **argv, struct annalsd_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--version") == 0) {
            printf("annalsd %s\n", ANNALSD_VERSION);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "annalsd: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        snprintf(name, sizeof(name), "%.*s", (int)len, a + 2);
        size_t k = flag_index(name);
        if (k == N_FLAGS) {
            fprintf(stderr, "annalsd: unknown flag '%s' (see --help)\n", a);
            return -1;
        }
        if (flags[k].kind == FLAG_BOOL) {
            if (eq) {
                fprintf(stderr, "annalsd: --%s takes no value\n", name);
                return -1;
            }
            o->val[k] = "1";
        } else if (eq) {
            o->val[k] = eq + 1;
        } else if (i + 1 < argc) {
            o->val[k] = argv[++i];
        } else {
            fprintf(stderr, "annalsd: --%s needs a value (see --help)\n", name);
            return -1;
        }
    }
    return 0;
}

/* Trims spaces at both ends, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

/*
 * Reads --config: 'name = value' per line, names as on the command line
 * without the dashes, '#' starts a comment line; a boolean flag takes true
 * or false. Values set on the command line are kept; those from an earlier
 * read of the file are replaced. 0, or -1 with a message
 * naming the file, the line and what was wrong.
 */
int annalsd_read_config(const char *path, struct annalsd_opts *o)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "annalsd: --config %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int no = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        no++;
        char *l = trim(line);
        if (!l[0] || l[0] == '#') {
            continue;
        }
        char *eq = strchr(l, '=');
        if (!eq) {
            fprintf(stderr, "annalsd: %s:%d: want 'flag = value'\n", path, no);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *name = trim(l);
        char *val = trim(eq + 1);
        size_t k = flag_index(name);
        if (k == N_FLAGS || strcmp(name, "config") == 0) {
            fprintf(stderr, "annalsd: %s:%d: unknown flag '%s' (see --help)\n", path, no, name);
            rc = -1;
            break;
        }
        if (o->val[k] && !o->from_file[k]) {
            continue; /* the command line wins */
        }
        if (flags[k].kind == FLAG_BOOL) {
            if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0) {
                fprintf(stderr, "annalsd: %s:%d: %s: want true or false\n", path, no, name);
                rc = -1;
                break;
            }
            o->val[k] = strcmp(val, "true") == 0 ? "1" : NULL;
            o->from_file[k] = true;
            continue;
        }
        /* one slot per flag, no allocation: read again on SIGHUP */
        static char kept[N_FLAGS][1024];
        if (strlen(val) >= sizeof(kept[k])) {
            fprintf(stderr, "annalsd: %s:%d: %s: longer than %zu bytes\n", path, no, name,
                    sizeof(kept[k]) - 1);
            rc = -1;
            break;
        }
        memcpy(kept[k], val, strlen(val) + 1);
        o->val[k] = kept[k];
        o->from_file[k] = true;
    }
    fclose(f);
    return rc;
}

const char *annalsd_flag(const struct annalsd_opts *o, const char *name)
{
    size_t i = flag_index(name);
    return o->val[i] ? o->val[i] : flags[i].def;
}

int annalsd_build_cfg(const struct annalsd_opts *o, struct srv_cfg *cfg)
{
    uint64_t v;
    *cfg = (struct srv_cfg){
        .data_dir = annalsd_flag(o, "data"),
        .listen = annalsd_flag(o, "listen"),
    };
    if (flag_num(o, flag_index("max-size"), &v)) {
        return -1;
    }
    if (v && v < (1u << 20)) {
        fprintf(stderr, "annalsd: --max-size '%s': want 0 (no cap) or at least 1M\n",
                annalsd_flag(o, "max-size"));
        return -1;
    }
    cfg->max_size_bytes = v;
    if (flag_num(o, flag_index("max-event"), &v)) {
        return -1;
    }
    cfg->max_event_bytes = (uint32_t)v;
    if (flag_num(o, flag_index("max-request"), &v)) {
        return -1;
    }
    cfg->max_request_bytes = (uint32_t)v;
    if (flag_num(o, flag_index("threads"), &v)) {
        return -1;
    }
    cfg->threads = (unsigned)v;
    if (flag_num(o, flag_index("max-batch"), &v)) {
        return -1;
    }
    cfg->max_batch = (unsigned)v;
    if (flag_num(o, flag_index("max-subscriptions"), &v)) {
        return -1;
    }
    cfg->max_subscriptions = (unsigned)v;
    if (flag_num(o, flag_index("checkpoint-rate"), &v)) {
        return -1;
    }
    cfg->checkpoint_rate = (unsigned)v;
    if (flag_num(o, flag_index("max-queue"), &v)) {
        return -1;
    }
    cfg->max_queue_bytes = v;
    if (flag_num(o, flag_index("max-view-size"), &v)) {
        return -1;
    }
    cfg->max_view_bytes = v;
    if (flag_num(o, flag_index("max-connections"), &v)) {
        return -1;
    }
    cfg->max_connections = (unsigned)v;
    if (flag_num(o, flag_index("max-conn-streams"), &v)) {
        return -1;
    }
    cfg->max_streams_per_conn = (unsigned)v;
    if (flag_num(o, flag_index("idle-timeout"), &v)) {
        return -1;
    }
    cfg->idle_timeout_s = (unsigned)v;
    if (flag_num(o, flag_index("keepalive"), &v)) {
        return -1;
    }
    cfg->keepalive_s = (unsigned)v;
    if (flag_num(o, flag_index("handshake-timeout"), &v)) {
        return -1;
    }
    cfg->handshake_timeout_s = (unsigned)v;
    if (flag_num(o, flag_index("max-metadata"), &v)) {
        return -1;
    }
    cfg->max_metadata_bytes = (uint32_t)v;
    const char *tc = annalsd_flag(o, "tls-cert");
    const char *tk = annalsd_flag(o, "tls-key");
    const char *ca = annalsd_flag(o, "tls-client-ca");
    const char *au = annalsd_flag(o, "auth");
    cfg->tls_cert_file = tc[0] ? tc : NULL;
    cfg->tls_key_file = tk[0] ? tk : NULL;
    cfg->tls_client_ca_file = ca[0] ? ca : NULL;
    cfg->auth_file = au[0] ? au : NULL;
    const char *hl = annalsd_flag(o, "http");
    cfg->http_listen = hl[0] ? hl : NULL;
    cfg->insecure = annalsd_flag(o, "insecure")[0] != '\0';
    if (say_set_level(annalsd_flag(o, "log-level"))) {
        fprintf(stderr, "annalsd: --log-level '%s': want debug, info, warn or error\n",
                annalsd_flag(o, "log-level"));
        return -1;
    }
    return 0;
}

const char *annalsd_config_file(const struct annalsd_opts *o)
{
    return o->val[flag_index("config")];
}

/*
 * annals_cli.c - `annals`, the command-line client of annalsd: main(), the
 * command line, --help, and the helpers every subcommand uses.
 *
 * The command line is "annals CMD [ARGS and flags in any order]". Flags are
 * "--name value" or "--name=value"; "--" ends them, and a lone "-" is a
 * positional (append reads its data from stdin). All flags live in one
 * table (cli_flags[]) and each subcommand lists the flags it accepts in its
 * entry of cli_cmds[], from which both the parser and --help work, so the
 * help text cannot drift from what is accepted.
 *
 * Exit statuses (cli_int.h): 0 success, 1 the call or the server failed,
 * 2 the command line was not understood.
 */
#include "cli_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CLI_DEFAULT_SERVER "127.0.0.1:7400"

/* ---- the flag table ---- */

enum cli_flag_kind {
    CLI_BOOL,       /* no value */
    CLI_VALUE,      /* one value; the last one given wins */
    CLI_LIST,       /* repeatable; every value is kept */
};

struct cli_flag_def {
    const char *name;           /* without the leading "--" */
    enum cli_flag_kind kind;
    const char *arg;            /* the value's name in --help */
    const char *help;
};

static const struct cli_flag_def cli_flags[CLI_F_COUNT] = {
    [CLI_F_SERVER] = {"server", CLI_VALUE, "ADDR",
                      "HOST:PORT (default " CLI_DEFAULT_SERVER "), or a list\n"
                      "A,B,...: calls go round-robin over the healthy ones"},
    [CLI_F_TIMEOUT] = {"timeout", CLI_VALUE, "MS",
                       "deadline per call and per wait for a streamed reply\n"
                       "(default 10000)"},
    [CLI_F_JSON] = {"json", CLI_BOOL, NULL, "machine output: one JSON object per line"},
    [CLI_F_HELP] = {"help", CLI_BOOL, NULL, "this text"},
    [CLI_F_EXPECT_VERSION] = {"expect-version", CLI_VALUE, "N",
                              "fail unless the stream's last version is N"},
    [CLI_F_EXPECT_NO_STREAM] = {"expect-no-stream", CLI_BOOL, NULL,
                                "fail if the stream was ever written"},
    [CLI_F_EXPECT_EXISTS] = {"expect-exists", CLI_BOOL, NULL,
                             "fail unless the stream has events"},
    [CLI_F_ID] = {"id", CLI_VALUE, "UUID", "the event's id (idempotency key)"},
    [CLI_F_CONTENT_TYPE] = {"content-type", CLI_VALUE, "T",
                            "content type (default: application/json if DATA\n"
                            "parses as JSON, else application/octet-stream)"},
    [CLI_F_METADATA] = {"metadata", CLI_VALUE, "JSON", "the event's metadata (JSON)"},
    [CLI_F_FROM] = {"from", CLI_VALUE, "N", "start here (inclusive)"},
    [CLI_F_BACK] = {"back", CLI_BOOL, NULL, "read backwards (from the end unless --from)"},
    [CLI_F_LIMIT] = {"limit", CLI_VALUE, "N", "at most N events"},
    [CLI_F_PREFIX] = {"prefix", CLI_LIST, "P",
                      "only streams starting with P (repeatable: any of them)"},
    [CLI_F_TYPE] = {"type", CLI_LIST, "T", "only events of type T (repeatable: any of them)"},
    [CLI_F_AS_OF] = {"as-of", CLI_VALUE, "POS|TIME",
                     "read history as of a position, an RFC 3339 time\n"
                     "or @UNIX_NANOS"},
    [CLI_F_TOMBSTONE] = {"tombstone", CLI_BOOL, NULL,
                         "delete for good: the stream can never be written again"},
    [CLI_F_FROM_END] = {"from-end", CLI_BOOL, NULL, "only events committed from now on"},
    [CLI_F_MAX_EVENTS] = {"count", CLI_VALUE, "N", "exit after N events"},
    [CLI_F_TLS_CA] = {"tls-ca", CLI_VALUE, "FILE",
                      "PEM roots that verify the server: speak TLS"},
    [CLI_F_TLS_CERT] = {"tls-cert", CLI_VALUE, "FILE", "this client's certificate (mTLS)"},
    [CLI_F_TLS_KEY] = {"tls-key", CLI_VALUE, "FILE", "the key of --tls-cert"},
    [CLI_F_TOKEN] = {"token", CLI_VALUE, "T",
                     "bearer token (default: $ANNALS_TOKEN)"},
    [CLI_F_KIND] = {"kind", CLI_VALUE, "K", "count, stream_state, index or streams"},
    [CLI_F_KEY] = {"key", CLI_VALUE, "K",
                   "count, index: $type, $stream, $category or a JSON Pointer"},
    [CLI_F_SUM] = {"sum", CLI_VALUE, "PTR", "count: a JSON Pointer to a number to add up"},
    [CLI_F_LATEST_ONLY] = {"latest-only", CLI_BOOL, NULL,
                           "keep only the newest values (no --as-of reads)"},
    [CLI_F_MIN_POSITION] = {"min-position", CLI_VALUE, "P",
                            "answer once the view has applied position P"},
    [CLI_F_STREAM] = {"stream", CLI_VALUE, "S", "only the events of stream S"},
    [CLI_F_MAX_DELIVERIES] = {"max-deliveries", CLI_VALUE, "N",
                              "attempts before an event is parked (default 5)"},
    [CLI_F_ACK_TIMEOUT] = {"ack-timeout", CLI_VALUE, "MS",
                           "an unsettled event is handed out again after MS\n"
                           "(default 30000)"},
    [CLI_F_ORDERED] = {"ordered", CLI_BOOL, NULL,
                       "one event of a stream at a time, in stream order"},
    [CLI_F_PREFETCH] = {"prefetch", CLI_VALUE, "N",
                        "events the server may hand this consumer ahead (default 1)"},
    [CLI_F_PARK_STATUS] = {"park-status", CLI_VALUE, "N",
                           "the command's exit status that parks the event\n"
                           "(default 3; 0 acks, others nack)"},
};

/* ---- the command table ---- */

#define CLI_BIT(f) (1ull << (f))
#define CLI_SECURITY (CLI_BIT(CLI_F_TLS_CA) | CLI_BIT(CLI_F_TLS_CERT) | \
                      CLI_BIT(CLI_F_TLS_KEY) | CLI_BIT(CLI_F_TOKEN))
#define CLI_COMMON (CLI_BIT(CLI_F_SERVER) | CLI_BIT(CLI_F_TIMEOUT) | CLI_BIT(CLI_F_JSON) | \
                    CLI_BIT(CLI_F_HELP) | CLI_SECURITY)

struct cli_cmd_def {
    const char *name;
    int (*run)(const struct cli_args *a);
    size_t min_pos;
    size_t max_pos;
    uint64_t flags;             /* CLI_BIT()s of the accepted flags */
    const char *synopsis;
    const char *help;
};

static const struct cli_cmd_def cli_cmds[] = {
    {"append", cli__cmd_append, 2, 3,
     CLI_COMMON | CLI_BIT(CLI_F_EXPECT_VERSION) | CLI_BIT(CLI_F_EXPECT_NO_STREAM) |
         CLI_BIT(CLI_F_EXPECT_EXISTS) | CLI_BIT(CLI_F_ID) | CLI_BIT(CLI_F_CONTENT_TYPE) |
         CLI_BIT(CLI_F_METADATA),
     "STREAM TYPE [DATA|-]",
     "Appends one event (DATA, or stdin for '-'; none: empty) and prints its\n"
     "position and version. On a failed expectation, names the stream and its\n"
     "actual version."},
    {"read", cli__cmd_read, 1, 1,
     CLI_COMMON | CLI_BIT(CLI_F_FROM) | CLI_BIT(CLI_F_BACK) | CLI_BIT(CLI_F_LIMIT) |
         CLI_BIT(CLI_F_AS_OF),
     "STREAM",
     "Prints a stream's events, one per line (--from is a version)."},
    {"read-all", cli__cmd_read_all, 0, 0,
     CLI_COMMON | CLI_BIT(CLI_F_FROM) | CLI_BIT(CLI_F_BACK) | CLI_BIT(CLI_F_LIMIT) |
         CLI_BIT(CLI_F_PREFIX) | CLI_BIT(CLI_F_TYPE) | CLI_BIT(CLI_F_AS_OF),
     "",
     "Prints the global log, one event per line (--from is a position)."},
    {"stream", cli__cmd_stream, 1, 1, CLI_COMMON | CLI_BIT(CLI_F_AS_OF),
     "STREAM",
     "Prints the facts about a stream: versions, counts, positions, times."},
    {"delete", cli__cmd_delete, 1, 1,
     CLI_COMMON | CLI_BIT(CLI_F_TOMBSTONE) | CLI_BIT(CLI_F_EXPECT_VERSION),
     "STREAM",
     "Deletes a stream (soft: a later append continues its versions), or\n"
     "tombstones it, and prints the deletion's position."},
    {"health", cli__cmd_health, 0, 0, CLI_COMMON,
     "",
     "Prints SERVING when the server serves (exit 0), else its status (exit 1)."},
    {"import", cli__cmd_import, 1, 1, CLI_COMMON,
     "FILE|-",
     "Appends the events of a JSON-lines file (or stdin for '-'), one object\n"
     "per line, in order:\n"
     "  {\"stream\": S, \"type\": T, \"data\": ANY-JSON, \"id\": UUID, \"metadata\": JSON}\n"
     "(id and metadata optional; data is stored as its compact text, as\n"
     "application/json; other keys are ignored). The input is read once. Its\n"
     "first 16 MiB are checked before anything is sent: a bad line there is\n"
     "named and nothing is sent; a bad line further on stops the import there\n"
     "(the lines before it are stored). Progress goes to stderr."},
    {"subscribe", cli__cmd_subscribe, 0, 1,
     CLI_BIT(CLI_F_SERVER) | CLI_BIT(CLI_F_JSON) | CLI_BIT(CLI_F_HELP) | CLI_SECURITY |
         CLI_BIT(CLI_F_FROM) |
         CLI_BIT(CLI_F_FROM_END) | CLI_BIT(CLI_F_PREFIX) | CLI_BIT(CLI_F_TYPE) |
         CLI_BIT(CLI_F_MAX_EVENTS),
     "[STREAM]",
     "Prints events as they commit, one per line, like tail -f: the stored\n"
     "history first (all streams from --from POSITION, or STREAM from --from\n"
     "VERSION), then live events, until SIGINT/SIGTERM (exit 0) or --count.\n"
     "Each event exactly once, in log order. 'caught up at #P' (once, when\n"
     "the history is delivered) and 'checkpoint #P' (every selected event up\n"
     "to P delivered) go to stderr; with --json they are JSON lines on stdout,\n"
     "{\"caught_up\":true,\"checkpoint\":P} and {\"checkpoint\":P}, in order with\n"
     "the events. Resume all streams with --from P+1."},
    {"backup", cli__cmd_backup, 1, 1, CLI_COMMON,
     "DEST",
     "Asks the server to copy its data (views, then the log) into DEST, a new\n"
     "directory on the server's machine (an absolute path; its parent must\n"
     "exist), while it keeps serving. Progress goes to stderr; the last line\n"
     "gives the log position the copy holds. Restore: annalsd --data DEST.\n"
     "Needs admin when the server runs with --auth."},
    {"verify", cli__cmd_verify, 1, 1, CLI_BIT(CLI_F_JSON) | CLI_BIT(CLI_F_HELP),
     "DIR",
     "Checks a data directory offline (a stopped server's, or a backup):\n"
     "positions gap-free, every index entry pointing at the right event,\n"
     "stream versions gap-free, times never going back, and each view's\n"
     "checkpoint at most the log's head with no entry past it. Exit 0 when\n"
     "everything holds, 1 with what broke."},
    {"projection", cli__cmd_projection, 1, 2,
     CLI_COMMON | CLI_BIT(CLI_F_KIND) | CLI_BIT(CLI_F_KEY) | CLI_BIT(CLI_F_SUM) |
         CLI_BIT(CLI_F_LATEST_ONLY) | CLI_BIT(CLI_F_PREFIX) | CLI_BIT(CLI_F_TYPE),
     "create|list|get|rebuild|delete [NAME]",
     "Manages projections (views folded from the log). create NAME --kind K\n"
     "[--key K] [--sum PTR] [--prefix P]... [--type T]... [--latest-only]\n"
     "defines one (the same definition again is accepted); rebuild NAME\n"
     "rebuilds its view from history while the old one answers, showing\n"
     "progress until it is done; get, list and delete do what they say."},
    {"view", cli__cmd_view, 2, 2,
     CLI_COMMON | CLI_BIT(CLI_F_AS_OF) | CLI_BIT(CLI_F_MIN_POSITION) | CLI_BIT(CLI_F_PREFIX) |
         CLI_BIT(CLI_F_LIMIT),
     "NAME KEY | scan NAME",
     "Prints a view's entry for KEY (its JSON value and the position of the\n"
     "last event applied to it; exit 1 when it has none), now or --as-of\n"
     "POS|TIME; --min-position P waits until the view has applied P\n"
     "(read-your-writes). 'view scan NAME' prints its entries in key order\n"
     "(--prefix K, --limit N, --as-of)."},
    {"group", cli__cmd_group, 1, 2,
     CLI_COMMON | CLI_BIT(CLI_F_STREAM) | CLI_BIT(CLI_F_PREFIX) | CLI_BIT(CLI_F_TYPE) |
         CLI_BIT(CLI_F_FROM) | CLI_BIT(CLI_F_FROM_END) | CLI_BIT(CLI_F_MAX_DELIVERIES) |
         CLI_BIT(CLI_F_ACK_TIMEOUT) | CLI_BIT(CLI_F_ORDERED),
     "create|list|get|delete|replay-parked [NAME]",
     "Manages consumer groups (competing consumers with acks). create NAME\n"
     "[--stream S | --prefix P...] [--type T...] [--from POS|--from-end]\n"
     "[--max-deliveries N] [--ack-timeout MS] [--ordered] defines one (the same\n"
     "definition again is accepted); get and list print progress (checkpoint,\n"
     "in flight, acked, redelivered, parked); replay-parked hands the events\n"
     "parked in $parked-NAME out again; delete removes the group."},
    {"consume", cli__cmd_consume, 1, 1,
     CLI_BIT(CLI_F_SERVER) | CLI_BIT(CLI_F_HELP) | CLI_SECURITY | CLI_BIT(CLI_F_TIMEOUT) |
         CLI_BIT(CLI_F_PREFETCH) | CLI_BIT(CLI_F_PARK_STATUS) | CLI_BIT(CLI_F_MAX_EVENTS),
     "GROUP -- CMD [ARGS...]",
     "Joins GROUP and runs CMD once per event handed to it, with the event as\n"
     "one JSON line on stdin (as read --json prints it, plus \"attempt\"). Exit\n"
     "status 0 acks it, --park-status (3) parks it in $parked-GROUP, any other\n"
     "nacks it (handed out again, to any consumer). Runs until SIGINT/SIGTERM\n"
     "or --count N events, then leaves the group; a summary goes to stderr."},
    {"token", cli__cmd_token, 2, 2, CLI_BIT(CLI_F_JSON) | CLI_BIT(CLI_F_HELP),
     "new NAME",
     "Prints a fresh random token for principal NAME, and the entry to add to\n"
     "annalsd's --auth file (which keeps only the token's SHA-256)."},
};

#define CLI_N_CMDS (sizeof(cli_cmds) / sizeof(cli_cmds[0]))

static void print_main_help(FILE *out)
{
    fprintf(out, "usage: annals CMD [ARGS] [--server ADDR] [--timeout MS] [--json]\n\n"
                 "commands:\n");
    for (size_t i = 0; i < CLI_N_CMDS; i++) {
        if (*cli_cmds[i].synopsis) {
            fprintf(out, "  %-9s %s\n", cli_cmds[i].name, cli_cmds[i].synopsis);
        } else {
            fprintf(out, "  %s\n", cli_cmds[i].name);
        }
    }
    fprintf(out, "\n'annals CMD --help' describes a command. Exit status: 0 ok, "
                 "1 the call failed,\n2 the command line was wrong.\n");
}

static void print_cmd_help(FILE *out, const struct cli_cmd_def *c)
{
    fprintf(out, "usage: annals %s%s%s [flags]\n\n%s\n\nflags:\n", c->name,
            *c->synopsis ? " " : "", c->synopsis, c->help);
    for (int f = 0; f < CLI_F_COUNT; f++) {
        const struct cli_flag_def *d = &cli_flags[f];
        char left[64];
        if (!(c->flags & CLI_BIT(f))) continue;
        snprintf(left, sizeof(left), "--%s%s%s", d->name, d->arg ? " " : "",
                 d->arg ? d->arg : "");
        /* Continuation lines of a flag's help line up under its first. */
        fprintf(out, "  %-22s ", left);
        for (const char *h = d->help; *h; h++) {
            fputc(*h, out);
            if (*h == '\n') fprintf(out, "%25s", "");
        }
        fputc('\n', out);
    }
    if (c->flags & CLI_BIT(CLI_F_AS_OF)) {
        fprintf(out, "\nTimes: 2026-11-23T20:00:00Z, 2026-11-23T21:00:00.25+01:00, "
                     "@1795464000000000000.\n");
    }
}

/* ---- parsing ---- */

static const struct cli_cmd_def *find_cmd(const char *name)
{
    for (size_t i = 0; i < CLI_N_CMDS; i++) {
        if (strcmp(cli_cmds[i].name, name) == 0) return &cli_cmds[i];
    }
    return NULL;
}

static int find_flag(const char *name, size_t len)
{
    for (int f = 0; f < CLI_F_COUNT; f++) {
        if (strlen(cli_flags[f].name) == len && strncmp(cli_flags[f].name, name, len) == 0) {
            return f;
        }
    }
    return -1;
}

static int add_positional(struct cli_args *a, const struct cli_cmd_def *c, const char *s)
{
    if (a->n_pos >= c->max_pos || a->n_pos >= CLI_POS_MAX) {
        cli__errf(a, "unexpected argument '%s' (see annals %s --help)", s, c->name);
        return CLI_EXIT_USAGE;
    }
    a->pos[a->n_pos++] = s;
    return CLI_EXIT_OK;
}

/* One "--name[=value]" at argv[*i]; takes the next argument as its value
 * when needed. */
static int parse_flag(struct cli_args *a, const struct cli_cmd_def *c, int argc,
                      char **argv, int *i)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    int f = find_flag(arg, len);
    const char *v = NULL;

    if (f < 0 || !(c->flags & CLI_BIT(f))) {
        cli__errf(a, "unknown flag '--%.*s' (see annals %s --help)", (int)len, arg, c->name);
        return CLI_EXIT_USAGE;
    }
    if (cli_flags[f].kind == CLI_BOOL) {
        if (eq) {
            cli__errf(a, "flag --%s takes no value", cli_flags[f].name);
            return CLI_EXIT_USAGE;
        }
        a->set[f] = true;
        return CLI_EXIT_OK;
    }
    if (eq) {
        v = eq + 1;
    } else if (*i + 1 < argc) {
        v = argv[++*i];
    } else {
        cli__errf(a, "flag --%s needs a value (%s)", cli_flags[f].name, cli_flags[f].arg);
        return CLI_EXIT_USAGE;
    }
    a->set[f] = true;
    a->val[f] = v;
    if (cli_flags[f].kind == CLI_LIST) {
        /* a->list[f] has room for every argument (see parse_args). */
        a->list[f][a->n_list[f]++] = v;
    }
    return CLI_EXIT_OK;
}

/* Fills a from argv[2..]; the lists it allocates are freed by free_args. */
static int parse_args(struct cli_args *a, const struct cli_cmd_def *c, int argc, char **argv)
{
    bool flags_done = false;
    int rc;

    for (int f = 0; f < CLI_F_COUNT; f++) {
        if (cli_flags[f].kind != CLI_LIST) continue;
        a->list[f] = calloc((size_t)argc, sizeof(*a->list[f]));
        if (!a->list[f]) {
            cli__errf(a, "out of memory");
            return CLI_EXIT_FAIL;
        }
    }
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!flags_done && strcmp(s, "--") == 0) {
            if (c->run == cli__cmd_consume) {
                /* the rest is the worker's command line, untouched */
                a->rest = &argv[i + 1];
                a->n_rest = (size_t)(argc - i - 1);
                break;
            }
            flags_done = true;
            continue;
        }
        if (!flags_done && s[0] == '-' && s[1] == '-') {
            rc = parse_flag(a, c, argc, argv, &i);
        } else if (!flags_done && s[0] == '-' && s[1] != '\0' &&
                   !(s[1] >= '0' && s[1] <= '9')) {
            cli__errf(a, "unknown flag '%s' (see annals %s --help)", s, c->name);
            rc = CLI_EXIT_USAGE;
        } else {
            rc = add_positional(a, c, s);
        }
        if (rc != CLI_EXIT_OK) return rc;
    }
    a->json = a->set[CLI_F_JSON];
    return CLI_EXIT_OK;
}

static void free_args(struct cli_args *a)
{
    for (int f = 0; f < CLI_F_COUNT; f++) {
        free(a->list[f]);
        a->list[f] = NULL;
    }
}

/* ---- helpers for subcommands ---- */

void cli__errf(const struct cli_args *a, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "annals: ");
    if (a && a->cmd) fprintf(stderr, "%s: ", a->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli__call_error(const struct cli_args *a, const char *stream, int rc,
                     const struct an_error *err)
{
    const char *detail = err && err->detail[0] ? err->detail : an_strerror(rc);
    char subject[300] = "";

    if (rc == AN_ECONFLICT && err) {
        cli__errf(a, "conflict on stream '%s': actual version %" PRId64 "%s (%s)",
                  err->stream, err->actual_version,
                  err->actual_version < 0 ? " (the stream has no events)" : "",
                  an_errname(rc));
        return;
    }
    /* The server's detail usually names the stream already. */
    if (stream && !strstr(detail, stream)) {
        snprintf(subject, sizeof(subject), "stream '%s': ", stream);
    }
    cli__errf(a, "%s%s (%s)", subject, detail, an_errname(rc));
}

int cli__flag_u64(const struct cli_args *a, enum cli_flag f, uint64_t max, uint64_t *out)
{
    const char *s = a->val[f];
    char *end = NULL;
    unsigned long long v;

    if (!s || !*s || *s < '0' || *s > '9') goto out_bad;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > max) goto out_bad;
    *out = (uint64_t)v;
    return CLI_EXIT_OK;
out_bad:
    cli__errf(a, "--%s: '%s' is not a whole number from 0 to %" PRIu64, cli_flags[f].name,
              s ? s : "", max);
    return CLI_EXIT_USAGE;
}

int cli__flag_as_of(const struct cli_args *a, struct an_as_of *out)
{
    const char *s = a->val[CLI_F_AS_OF];
    struct an_as_of r = {0};
    char *end = NULL;

    if (!a->set[CLI_F_AS_OF]) {
        *out = r;
        return CLI_EXIT_OK;
    }
    if (s[0] >= '0' && s[0] <= '9' && !strchr(s, '-') && !strchr(s, ':')) {
        uint64_t pos;
        int rc = cli__flag_u64(a, CLI_F_AS_OF, UINT64_MAX, &pos);
        if (rc != CLI_EXIT_OK) return rc;
        r.has_position = true;
        r.position = pos;
    } else if (s[0] == '@') {
        long long ns;
        errno = 0;
        ns = strtoll(s + 1, &end, 10);
        if (errno || end == s + 1 || *end) {
            cli__errf(a, "--as-of: '%s' is not @UNIX_NANOS", s);
            return CLI_EXIT_USAGE;
        }
        r.has_time = true;
        r.unix_nanos = (int64_t)ns;
    } else {
        if (cli__parse_rfc3339(s, &r.unix_nanos) != 0) {
            cli__errf(a, "--as-of: '%s' is neither a position, an RFC 3339 time "
                      "(2026-11-23T20:00:00Z) nor @UNIX_NANOS", s);
            return CLI_EXIT_USAGE;
        }
        r.has_time = true;
    }
    *out = r;
    return CLI_EXIT_OK;
}

int cli__connect(const struct cli_args *a, an_client **out)
{
    char target[1024];
    const char *server = a->set[CLI_F_SERVER] ? a->val[CLI_F_SERVER] : CLI_DEFAULT_SERVER;
    size_t len = strlen(server);
    struct an_client_opts opts = {0};
    uint64_t timeout_ms = 0;
    int rc;

    if (len == 0 || len >= sizeof(target)) {
        cli__errf(a, "--server: '%.100s' is not HOST:PORT[,HOST:PORT...] (at most %zu bytes)",
                  server, sizeof(target) - 1);
        return CLI_EXIT_USAGE;
    }
    memcpy(target, server, len);
    target[len] = '\0';
    if (a->set[CLI_F_TIMEOUT]) {
        rc = cli__flag_u64(a, CLI_F_TIMEOUT, INT64_MAX / 1000000, &timeout_ms);
        if (rc != CLI_EXIT_OK) return rc;
        if (timeout_ms == 0) {
            cli__errf(a, "--timeout: must be at least 1 ms");
            return CLI_EXIT_USAGE;
        }
    }
    opts.timeout_ms = (int64_t)timeout_ms;
    opts.tls_ca_file = a->set[CLI_F_TLS_CA] ? a->val[CLI_F_TLS_CA] : NULL;
    opts.tls_cert_file = a->set[CLI_F_TLS_CERT] ? a->val[CLI_F_TLS_CERT] : NULL;
    opts.tls_key_file = a->set[CLI_F_TLS_KEY] ? a->val[CLI_F_TLS_KEY] : NULL;
    opts.token = a->set[CLI_F_TOKEN] ? a->val[CLI_F_TOKEN] : NULL;
    if ((opts.tls_cert_file || opts.tls_key_file) &&
        (!opts.tls_ca_file || !opts.tls_cert_file || !opts.tls_key_file)) {
        cli__errf(a, "--tls-cert and --tls-key go together, and with --tls-ca");
        return CLI_EXIT_USAGE;
    }
    rc = an_connect(target, &opts, out);
    if (rc != 0) {
        cli__errf(a, "cannot connect to '%s': %s", target, an_strerror(rc));
        return rc == AN_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    struct cli_args a = {0};
    const struct cli_cmd_def *c;
    int rc;

    if (argc < 2) {
        print_main_help(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_main_help(stdout);
        return CLI_EXIT_OK;
    }
    c = find_cmd(argv[1]);
    if (!c) {
        cli__errf(NULL, "unknown command '%s' (see annals --help)", argv[1]);
        return CLI_EXIT_USAGE;
    }
    a.cmd = c->name;
    rc = parse_args(&a, c, argc, argv);
    if (rc != CLI_EXIT_OK) goto out_free_args;
    if (a.set[CLI_F_HELP]) {
        print_cmd_help(stdout, c);
        goto out_free_args;
    }
    if (a.n_pos < c->min_pos) {
        cli__errf(&a, "missing argument: usage: annals %s %s", c->name, c->synopsis);
        rc = CLI_EXIT_USAGE;
        goto out_free_args;
    }
    rc = c->run(&a);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) {
        cli__errf(&a, "writing the output: %s", strerror(errno));
        rc = CLI_EXIT_FAIL;
    }
out_free_args:
    free_args(&a);
    return rc;
}

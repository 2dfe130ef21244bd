/*
 * test_cli.c - the `annals` command-line tool, run as a built binary
 * (ANNALS_CLI_PATH, or the ANNALS_CLI environment variable) against a real
 * annalsd started by the integration harness. Each test gets its own server
 * and data dir; the CLI's stdout and stderr go to files in that dir and are
 * checked as text (and, for --json, parsed with jansson).
 *
 * Under ASan the CLI runs with detect_leaks=1, so a leak shows as a
 * non-zero exit and fails the test that ran it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;

static void setup(void)
{
    h_start(&h, NULL);
}

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 30);

/* ---- running the CLI ---- */

struct run {
    int status;                 /* exit status; -1 if it died of a signal */
    char *out;                  /* stdout, NUL-terminated (caller frees: run_free) */
    char *err;                  /* stderr */
};

static const char *cli_path(void)
{
    const char *p = getenv("ANNALS_CLI");
    return p ? p : ANNALS_CLI_PATH;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;
    size_t len = 0;
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    buf[len] = '\0';
    fclose(f);
    return buf;
}

/* Runs the CLI with argv (NULL-terminated), --server added unless
 * with_server is false, stdin from stdin_path (NULL: /dev/null). */
static struct run run_argv(const char *stdin_path, bool with_server, const char *const *args)
{
    const char *argv[64];
    char out_path[300];
    char err_path[300];
    char asan[512];
    const char *old_asan = getenv("ASAN_OPTIONS");
    int n = 0;
    int status;
    struct run r = {0};

    snprintf(out_path, sizeof(out_path), "%s/cli.out", h.dir);
    snprintf(err_path, sizeof(err_path), "%s/cli.err", h.dir);
    argv[n++] = cli_path();
    for (int i = 0; args[i] && n < 60; i++) {
        argv[n++] = args[i];
    }
    if (with_server) {
        argv[n++] = "--server";
        argv[n++] = h.addr;
    }
    argv[n] = NULL;
    snprintf(asan, sizeof(asan), "%s%sdetect_leaks=1", old_asan ? old_asan : "",
             old_asan && *old_asan ? ":" : "");

    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* it ends with a test that timed out */
        int in = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        setenv("ASAN_OPTIONS", asan, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    return r;
}

#define RUN(...) run_argv(NULL, true, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_NOSRV(...) run_argv(NULL, false, (const char *const[]){__VA_ARGS__, NULL})

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    r->out = NULL;
    r->err = NULL;
}

static void expect_ok(const struct run *r)
{
    cr_assert_eq(r->status, 0, "exit %d; stderr: %s", r->status, r->err);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

/* Appends one JSON event; asserts success. */
static void append(const char *stream, const char *type, const char *data)
{
    struct run r = RUN("append", stream, type, data);
    expect_ok(&r);
    run_free(&r);
}

/* The same event as `annals append STREAM TYPE DATA` (JSON data), through
 * libannals in this process: for appends that must land close together,
 * where starting the CLI for each would take too long (about a second
 * each under ThreadSanitizer). */
static void append_fast(const char *stream, const char *type, const char *data)
{
    struct an_event e = {.type = type, .data = data, .data_len = strlen(data),
                         .content_type = "application/json"};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &sa, 1, NULL, NULL), 0);
}

/* The n-th line (0-based) of s parsed as a JSON object (caller decrefs). */
static json_t *json_line(const char *s, int n)
{
    json_error_t jerr;
    for (int i = 0; i < n; i++) {
        s = strchr(s, '\n');
        cr_assert_not_null(s, "no line %d", n);
        s++;
    }
    size_t len = strcspn(s, "\n");
    json_t *o = json_loadb(s, len, 0, &jerr);
    cr_assert_not_null(o, "line %d is not JSON (%s): %.*s", n, jerr.text, (int)len, s);
    cr_assert(json_is_object(o));
    return o;
}

static json_int_t jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "field %s is not an integer", key);
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "field %s is not a string", key);
    return json_string_value(v);
}

/* ---- append and read ---- */

Test(cli, append_then_read_human)
{
    struct run r = RUN("append", "acct-1", "Opened", "{\"owner\":\"ann\"}");
    expect_ok(&r);
    cr_assert(strncmp(r.out, "#1 acct-1@0 ", 12) == 0, "append printed: %s", r.out);
    run_free(&r);
    append("acct-1", "Deposited", "{\"amount\":5}");

    r = RUN("read", "acct-1");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 2, "read printed: %s", r.out);
    cr_assert(strncmp(r.out, "#1 acct-1@0 Opened 20", 21) == 0, "got: %s", r.out);
    cr_assert_not_null(strstr(r.out, "Z {\"owner\":\"ann\"}\n#2 acct-1@1 Deposited 20"),
                       "got: %s", r.out);
    run_free(&r);

    r = RUN("read", "acct-1", "--back", "--limit", "1");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 1);
    cr_assert(strncmp(r.out, "#2 acct-1@1 Deposited", 21) == 0, "got: %s", r.out);
    run_free(&r);
}

Test(cli, append_then_read_json_has_every_field)
{
    const char *id = "123e4567-e89b-12d3-a456-426614174000";
    struct run r = RUN("append", "acct-1", "Opened", "{\"owner\": \"ann\"}", "--id", id,
                       "--metadata", "{\"by\": \"test\"}", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "first_position"), 1);
    cr_assert_eq(jint(o, "first_version"), 0);
    cr_assert_str_eq(jstr(o, "stream"), "acct-1");
    json_decref(o);
    run_free(&r);

    r = RUN("read", "acct-1", "--json");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 1, "got: %s", r.out);
    o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "position"), 1);
    cr_assert_str_eq(jstr(o, "stream"), "acct-1");
    cr_assert_eq(jint(o, "version"), 0);
    cr_assert_str_eq(jstr(o, "type"), "Opened");
    cr_assert_str_eq(jstr(o, "id"), id);
    const char *at = jstr(o, "recorded_at");
    cr_assert_eq(strlen(at), 30, "recorded_at: %s", at);
    cr_assert_eq(at[10], 'T');
    cr_assert_eq(at[29], 'Z');
    cr_assert_str_eq(jstr(o, "content_type"), "application/json");
    cr_assert_eq(jint(o, "schema_version"), 1);
    json_t *data = json_object_get(o, "data");
    cr_assert(json_is_object(data), "data is not parsed JSON");
    cr_assert_str_eq(jstr(data, "owner"), "ann");
    json_t *meta = json_object_get(o, "metadata");
    cr_assert(json_is_object(meta), "metadata is not parsed JSON");
    cr_assert_str_eq(jstr(meta, "by"), "test");
    json_decref(o);
    run_free(&r);
}

Test(cli, append_from_stdin_binary_is_marked)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/bin", h.dir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite("\x00\x01\xff", 1, 3, f);
    fclose(f);
    struct run r = run_argv(path, true, (const char *const[]){"append", "blob-1", "Raw", "-",
                                                                NULL});
    expect_ok(&r);
    run_free(&r);

    r = RUN("read", "blob-1");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, " base64:AAH/\n"), "got: %s", r.out);
    run_free(&r);
    r = RUN("read", "blob-1", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_str_eq(jstr(o, "data"), "AAH/");
    cr_assert_str_eq(jstr(o, "data_encoding"), "base64");
    cr_assert_str_eq(jstr(o, "content_type"), "application/octet-stream");
    json_decref(o);
    run_free(&r);
}

Test(cli, conflict_exits_1_naming_stream_and_actual_version)
{
    append("acct-7", "Opened", "{}");
    append("acct-7", "Deposited", "{}");
    struct run r = RUN("append", "acct-7", "Deposited", "{}", "--expect-version", "0");
    cr_assert_eq(r.status, 1, "exit %d", r.status);
    cr_assert_not_null(strstr(r.err, "acct-7"), "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "actual version 1"), "stderr: %s", r.err);
    cr_assert_eq(count_lines(r.err), 1, "stderr: %s", r.err);
    run_free(&r);

    r = RUN("append", "acct-7", "Opened", "{}", "--expect-no-stream");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "actual version 1"), "stderr: %s", r.err);
    run_free(&r);

    r = RUN("append", "acct-8", "Opened", "{}", "--expect-exists");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "acct-8"), "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "actual version -1"), "stderr: %s", r.err);
    run_free(&r);
}

Test(cli, usage_errors_exit_2)
{
    const char *const cases[][8] = {
        {"frobnicate", NULL},
        {"read", NULL},
        {"read", "s", "--bogus", NULL},
        {"read", "s", "extra", NULL},
        {"read", "s", "--limit", "ten", NULL},
        {"read", "s", "--limit", NULL},
        {"read", "s", "--as-of", "2026-13-01T00:00:00Z", NULL},
        {"append", "s", "T", "{}", "--id", "not-a-uuid", NULL},
        {"append", "s", "T", "{}", "--expect-version", "1", "--expect-no-stream", NULL},
        {"append", "s", "T", "{}", "--metadata", "{oops", NULL},
        {"delete", "s", "--expect-version", "-1", NULL},
        {"health", "--timeout", "0", NULL},
    };
    struct run r = run_argv(NULL, false, (const char *const[]){NULL});
    cr_assert_eq(r.status, 2, "no arguments: exit %d", r.status);
    run_free(&r);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        r = run_argv(NULL, true, cases[i]);
        cr_assert_eq(r.status, 2, "case %zu (%s): exit %d, stderr: %s", i, cases[i][0],
                     r.status, r.err);
        cr_assert_eq(count_lines(r.err), 1, "case %zu: stderr: %s", i, r.err);
        cr_assert(strncmp(r.err, "annals: ", 8) == 0, "case %zu: stderr: %s", i, r.err);
        run_free(&r);
    }
}

Test(cli, help_exits_0)
{
    struct run r = RUN_NOSRV("--help");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "usage: annals"));
    cr_assert_not_null(strstr(r.out, "import"));
    run_free(&r);
    r = RUN_NOSRV("read-all", "--help");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "--prefix"));
    cr_assert_not_null(strstr(r.out, "--as-of"));
    run_free(&r);
    r = RUN_NOSRV("append", "--help");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "--expect-version"));
    cr_assert_not_null(strstr(r.out, "round-robin"), "help: %s", r.out);
    run_free(&r);
}

Test(cli, read_of_missing_stream_exits_1_naming_it)
{
    struct run r = RUN("read", "ghost-stream");
    cr_assert_eq(r.status, 1, "exit %d", r.status);
    cr_assert_not_null(strstr(r.err, "ghost-stream"), "stderr: %s", r.err);
    cr_assert_eq(count_lines(r.err), 1, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
}

Test(cli, unreachable_server_exits_1)
{
    struct run r = run_argv(NULL, false, (const char *const[]){
        "health", "--server", "127.0.0.1:1,127.0.0.1:2", "--timeout", "2000", NULL});
    cr_assert_eq(r.status, 1, "exit %d", r.status);
    cr_assert_not_null(strstr(r.err, "AN_EUNAVAIL"), "stderr: %s", r.err);
    run_free(&r);
}

Test(cli, read_all_filters_by_prefix_and_type)
{
    append("orders-1", "Placed", "{}");
    append("orders-2", "Shipped", "{}");
    append("users-1", "Placed", "{}");
    append("orders-1", "Paid", "{}");

    struct run r = RUN("read-all");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 4, "got: %s", r.out);
    run_free(&r);

    r = RUN("read-all", "--prefix", "orders-");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 3, "got: %s", r.out);
    cr_assert_null(strstr(r.out, "users-1"));
    run_free(&r);

    r = RUN("read-all", "--type", "Placed", "--json");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 2, "got: %s", r.out);
    json_t *o = json_line(r.out, 1);
    cr_assert_str_eq(jstr(o, "stream"), "users-1");
    json_decref(o);
    run_free(&r);

    r = RUN("read-all", "--prefix", "orders-", "--prefix", "users-", "--type", "Placed",
            "--type", "Paid");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 3, "got: %s", r.out);
    run_free(&r);

    r = RUN("read-all", "--back", "--limit", "1");
    expect_ok(&r);
    cr_assert(strncmp(r.out, "#4 orders-1@1 Paid", 18) == 0, "got: %s", r.out);
    run_free(&r);

    r = RUN("read-all", "--from", "2", "--limit", "2");
    expect_ok(&r);
    cr_assert(strncmp(r.out, "#2 orders-2@0", 13) == 0, "got: %s", r.out);
    cr_assert_eq(count_lines(r.out), 2);
    run_free(&r);
}

Test(cli, as_of_before_a_delete_still_sees_the_events)
{
    struct run r;
    append("cart-1", "Added", "{\"sku\":1}");
    r = RUN("append", "cart-1", "Added", "{\"sku\":2}", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    char *at = strdup(jstr(o, "recorded_at"));
    json_decref(o);
    run_free(&r);

    r = RUN("delete", "cart-1");
    expect_ok(&r);
    cr_assert(strncmp(r.out, "deleted cart-1 at #3", 20) == 0, "got: %s", r.out);
    run_free(&r);

    r = RUN("read", "cart-1");
    cr_assert_eq(r.status, 1, "a deleted stream read: exit %d, out: %s", r.status, r.out);
    cr_assert_not_null(strstr(r.err, "cart-1"), "stderr: %s", r.err);
    run_free(&r);

    r = RUN("read", "cart-1", "--as-of", "2");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 2, "got: %s", r.out);
    run_free(&r);

    r = RUN("read", "cart-1", "--as-of", "1");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 1, "got: %s", r.out);
    run_free(&r);

    /* The recorded time of the second append, as RFC 3339. */
    r = RUN("read", "cart-1", "--as-of", at);
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 2, "as of %s got: %s", at, r.out);
    run_free(&r);

    r = RUN("read-all", "--as-of", "1999-01-01T00:00:00.5+01:00");
    expect_ok(&r);
    cr_assert_str_eq(r.out, "");
    run_free(&r);

    r = RUN("stream", "cart-1", "--as-of", "2", "--json");
    expect_ok(&r);
    o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "event_count"), 2);
    cr_assert(json_is_false(json_object_get(o, "deleted")));
    json_decref(o);
    run_free(&r);
    free(at);
}

Test(cli, stream_prints_facts)
{
    append("acct-9", "A", "{}");
    append("other", "A", "{}");
    append("acct-9", "B", "{}");
    append("acct-9", "C", "{}");

    struct run r = RUN("stream", "acct-9", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_str_eq(jstr(o, "stream"), "acct-9");
    cr_assert_eq(jint(o, "last_version"), 2);
    cr_assert_eq(jint(o, "event_count"), 3);
    cr_assert_eq(jint(o, "first_position"), 1);
    cr_assert_eq(jint(o, "last_position"), 4);
    cr_assert(json_is_false(json_object_get(o, "deleted")));
    cr_assert(json_is_false(json_object_get(o, "tombstoned")));
    json_decref(o);
    run_free(&r);

    r = RUN("stream", "acct-9");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "event_count:    3\n"), "got: %s", r.out);
    run_free(&r);

    r = RUN("stream", "nobody");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "nobody"), "stderr: %s", r.err);
    run_free(&r);
}

Test(cli, delete_and_tombstone)
{
    append("s-1", "A", "{}");
    append("s-1", "B", "{}");

    struct run r = RUN("delete", "s-1", "--expect-version", "0");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "actual version 1"), "stderr: %s", r.err);
    run_free(&r);

    r = RUN("delete", "s-1", "--expect-version", "1", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "position"), 3);
    json_decref(o);
    run_free(&r);

    /* A soft delete: the next append continues the versions. */
    r = RUN("append", "s-1", "C", "{}");
    expect_ok(&r);
    cr_assert(strncmp(r.out, "#4 s-1@2 ", 9) == 0, "got: %s", r.out);
    run_free(&r);

    r = RUN("delete", "s-1", "--tombstone");
    expect_ok(&r);
    cr_assert(strncmp(r.out, "tombstoned s-1 at #5", 20) == 0, "got: %s", r.out);
    run_free(&r);

    r = RUN("append", "s-1", "D", "{}");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "tombstoned"), "stderr: %s", r.err);
    run_free(&r);

    r = RUN("stream", "s-1", "--json");
    expect_ok(&r);
    o = json_line(r.out, 0);
    cr_assert(json_is_true(json_object_get(o, "tombstoned")));
    json_decref(o);
    run_free(&r);

    r = RUN("delete", "never-written");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "never-written"), "stderr: %s", r.err);
    run_free(&r);
}

Test(cli, health_prints_serving)
{
    struct run r = RUN("health");
    expect_ok(&r);
    cr_assert_str_eq(r.out, "SERVING\n");
    run_free(&r);
    r = RUN("health", "--json");
    expect_ok(&r);
    cr_assert_str_eq(r.out, "{\"status\":\"SERVING\"}\n");
    run_free(&r);
}

/* ---- import ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(cli, import_of_2000_lines_then_read_all)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/events.jsonl", h.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 2000; i++) {
        fprintf(f, "{\"stream\": \"imp-%d\", \"type\": \"T%d\", \"data\": {\"i\": %d}%s}\n",
                i % 7, i % 3, i, i == 5 ? ", \"metadata\": {\"m\": true}" : "");
    }
    fclose(f);

    struct run r = RUN("import", path);
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "imported 2000 events"), "got: %s", r.out);
    run_free(&r);

    r = RUN("read-all");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 2000);
    cr_assert(strncmp(r.out, "#1 imp-0@0 T0 ", 14) == 0, "got: %.80s", r.out);
    cr_assert_not_null(strstr(r.out, "Z {\"i\":1999}\n"), "data not compact");
    run_free(&r);

    r = RUN("read-all", "--from", "6", "--limit", "1", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(json_object_get(o, "data"), "i"), 5);
    cr_assert(json_is_true(json_object_get(json_object_get(o, "metadata"), "m")));
    json_decref(o);
    run_free(&r);

    r = RUN("stream", "imp-6", "--json");
    expect_ok(&r);
    o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "event_count"), 285);
    json_decref(o);
    run_free(&r);
}

Test(cli, import_names_a_malformed_line_and_sends_nothing)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/bad.jsonl", h.dir);
    write_file(path, "{\"stream\": \"a\", \"type\": \"T\", \"data\": 1}\n"
                     "{\"stream\": \"a\", \"type\": \"T\", \"data\": [1, 2]}\n"
                     "{\"stream\": \"a\", \"type\": \"T\", \"data\": \n"
                     "{\"stream\": \"a\", \"type\": \"T\", \"data\": 4}\n");
    struct run r = RUN("import", path);
    cr_assert_eq(r.status, 1, "exit %d", r.status);
    cr_assert_not_null(strstr(r.err, "line 3"), "stderr: %s", r.err);
    cr_assert_eq(count_lines(r.err), 1, "stderr: %s", r.err);
    run_free(&r);

    write_file(path, "{\"stream\": \"a\", \"type\": \"T\", \"data\": 1}\n"
                     "\n"
                     "{\"stream\": \"a\", \"type\": \"T\", \"data\": 1, \"id\": \"xyz\"}\n");
    r = RUN("import", path);
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "line 3"), "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "id"), "stderr: %s", r.err);
    run_free(&r);

    r = RUN("read-all");
    expect_ok(&r);
    cr_assert_str_eq(r.out, "", "a failed import wrote: %s", r.out);
    run_free(&r);
}

Test(cli, import_of_empty_file_and_server_side_failure)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/empty.jsonl", h.dir);
    write_file(path, "");
    struct run r = RUN("import", path, "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "imported"), 0);
    json_decref(o);
    run_free(&r);

    /* Line 2 is well-formed but the server refuses it ('$' is reserved). */
    write_file(path, "{\"stream\": \"a\", \"type\": \"T\", \"data\": 1}\n"
                     "{\"stream\": \"$bad\", \"type\": \"T\", \"data\": 2}\n");
    r = RUN("import", path);
    cr_assert_eq(r.status, 1, "exit %d, out: %s", r.status, r.out);
    cr_assert_not_null(strstr(r.err, "line 2"), "stderr: %s", r.err);
    run_free(&r);

    r = RUN("import", "/nonexistent/file.jsonl");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "/nonexistent/file.jsonl"), "stderr: %s", r.err);
    run_free(&r);
}

Test(cli, import_from_stdin_reads_once_and_counts_without_a_total)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/stdin.jsonl", h.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 300; i++) {
        fprintf(f, "{\"stream\": \"in-%d\", \"type\": \"T\", \"data\": %d}\n%s", i % 3, i,
                i % 50 == 0 ? "\n" : "");
    }
    fclose(f);

    struct run r = run_argv(path, true, (const char *const[]){"import", "-", "--json", NULL});
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "imported"), 300);
    json_decref(o);
    run_free(&r);

    r = RUN("read-all", "--json");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 300);
    o = json_line(r.out, 299);
    cr_assert_eq(json_integer_value(json_object_get(o, "data")), 299, "order kept");
    json_decref(o);
    run_free(&r);

    /* A window smaller than the input: the total is unknown while
     * sending, so progress counts without a total; a line refused by the
     * server is still named by its number (blank lines counted). */
    setenv("ANNALS_IMPORT_CHECK_BYTES", "200", 1);
    write_file(path, "{\"stream\": \"w\", \"type\": \"T\", \"data\": 1}\n"
                     "\n"
                     "{\"stream\": \"w\", \"type\": \"T\", \"data\": 2}\n"
                     "{\"stream\": \"w\", \"type\": \"T\", \"data\": 3}\n"
                     "\n"
                     "\n"
                     "{\"stream\": \"w\", \"type\": \"T\", \"data\": 4}\n"
                     "{\"stream\": \"w\", \"type\": \"T\", \"data\": 5}\n"
                     "{\"stream\": \"$w\", \"type\": \"T\", \"data\": 6}\n");
    r = run_argv(path, true, (const char *const[]){"import", "-", NULL});
    unsetenv("ANNALS_IMPORT_CHECK_BYTES");
    cr_assert_eq(r.status, 1, "exit %d, out: %s", r.status, r.out);
    cr_assert_not_null(strstr(r.err, "stdin: line 9"), "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "5 of 6 events imported"), "stderr: %s", r.err);
    run_free(&r);
}

Test(cli, import_from_stdin_bad_line_in_window_sends_nothing_past_it_stops_there)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/bad.jsonl", h.dir);
    write_file(path, "{\"stream\": \"b\", \"type\": \"T\", \"data\": 1}\n"
                     "{\"stream\": \"b\", \"type\": \"T\", \"data\": 2}\n"
                     "{\"stream\": \"b\", \"type\": \"T\", \"data\": 3}\n"
                     "{\"stream\": \"b\", \"type\": \"T\", \"data\": \n"
                     "{\"stream\": \"b\", \"type\": \"T\", \"data\": 5}\n");
    struct run r = run_argv(path, true, (const char *const[]){"import", "-", NULL});
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "stdin: line 4"), "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "nothing imported"), "stderr: %s", r.err);
    run_free(&r);
    r = RUN("read-all");
    expect_ok(&r);
    cr_assert_str_eq(r.out, "", "a failed import wrote: %s", r.out);
    run_free(&r);

    /* Past the check window: lines 1-3 are stored, nothing from line 4. */
    setenv("ANNALS_IMPORT_CHECK_BYTES", "50", 1);
    r = run_argv(path, true, (const char *const[]){"import", "-", NULL});
    unsetenv("ANNALS_IMPORT_CHECK_BYTES");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "stdin: line 4"), "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "3 events before it imported, none after"), "stderr: %s",
                       r.err);
    run_free(&r);
    r = RUN("read-all");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 3, "got: %s", r.out);
    run_free(&r);
}

/* ---- subscribe ---- */

/* Starts the CLI (with --server) in the background, output to bg.out and
 * bg.err in the test dir (RUN uses cli.out); run_wait collects it. */
static pid_t run_start(const char *const *args)
{
    const char *argv[64];
    char out_path[300];
    char err_path[300];
    int n = 0;

    snprintf(out_path, sizeof(out_path), "%s/bg.out", h.dir);
    snprintf(err_path, sizeof(err_path), "%s/bg.err", h.dir);
    argv[n++] = cli_path();
    for (int i = 0; args[i] && n < 60; i++) {
        argv[n++] = args[i];
    }
    argv[n++] = "--server";
    argv[n++] = h.addr;
    argv[n] = NULL;
    /* No output of an earlier run may be taken for this one's. */
    unlink(out_path);
    unlink(err_path);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* it ends with a test that timed out */
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits (at most limit_ms, then SIGKILL and fail) for the CLI to exit. */
static struct run run_wait(pid_t pid, int limit_ms)
{
    char path[300];
    struct run r = {0};
    int status = 0;

    for (int waited = 0; waitpid(pid, &status, WNOHANG) != pid; waited += 10) {
        if (waited > limit_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            cr_assert_fail("the CLI did not exit within %d ms", limit_ms);
        }
        usleep(10000);
    }
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    snprintf(path, sizeof(path), "%s/bg.out", h.dir);
    r.out = slurp(path);
    snprintf(path, sizeof(path), "%s/bg.err", h.dir);
    r.err = slurp(path);
    return r;
}

/* Waits until the running CLI's file (bg.out or bg.err) contains s. */
static void wait_for_output(const char *file, const char *s, int limit_ms)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", h.dir, file);
    for (int waited = 0;; waited += 20) {
        if (access(path, R_OK) == 0) { /* the child may not have made it yet */
            char *text = slurp(path);
            bool found = strstr(text, s) != NULL;
            free(text);
            if (found) return;
        }
        cr_assert_lt(waited, limit_ms, "no '%s' in %s within %d ms", s, file, limit_ms);
        usleep(20000);
    }
}

Test(cli, subscribe_count_prints_history_then_live_events)
{
    append("sub-1", "T0", "{\"i\":1}");
    append("sub-2", "T1", "{\"i\":2}");
    append("sub-1", "T0", "{\"i\":3}");

    struct run r = RUN("subscribe", "--count", "3");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 3, "got: %s", r.out);
    cr_assert(strncmp(r.out, "#1 sub-1@0 T0 ", 14) == 0, "got: %s", r.out);
    cr_assert_not_null(strstr(r.out, "#3 sub-1@1 T0 "), "got: %s", r.out);
    run_free(&r);

    r = RUN("subscribe", "sub-1", "--from", "1", "--count", "1", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "version"), 1);
    cr_assert_eq(jint(json_object_get(o, "data"), "i"), 3);
    json_decref(o);
    run_free(&r);

    /* Live: 3 stored, then caught up, then 2 that commit while it runs.
     * The three appends land within the server's one-second checkpoint
     * interval, so no checkpoint-only message for the filtered-out one
     * comes between them. */
    pid_t pid = run_start((const char *const[]){"subscribe", "--prefix", "sub-", "--json",
                                                "--count", "5", NULL});
    wait_for_output("bg.out", "\"caught_up\":true", 10000);
    append_fast("sub-3", "T0", "{\"i\":4}");
    append_fast("other", "T0", "{\"i\":5}");
    append_fast("sub-1", "T1", "{\"i\":6}");
    r = run_wait(pid, 10000);
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 6, "got: %s", r.out);
    o = json_line(r.out, 3);
    cr_assert(json_is_true(json_object_get(o, "caught_up")), "line 4: %s", r.out);
    cr_assert_eq(jint(o, "checkpoint"), 3);
    cr_assert_null(json_object_get(o, "stream"));
    json_decref(o);
    o = json_line(r.out, 5);
    cr_assert_eq(jint(o, "position"), 6, "the other stream was filtered out");
    cr_assert_str_eq(jstr(o, "stream"), "sub-1");
    json_decref(o);
    run_free(&r);
}

Test(cli, subscribe_ends_cleanly_on_sigint_and_sigterm)
{
    append("sig-1", "T0", "{}");
    int sigs[] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        pid_t pid = run_start((const char *const[]){"subscribe", NULL});
        wait_for_output("bg.err", "caught up at #1", 10000);
        cr_assert_eq(kill(pid, sigs[i]), 0);
        struct run r = run_wait(pid, 5000);
        expect_ok(&r);
        cr_assert_eq(count_lines(r.out), 1, "got: %s", r.out);
        cr_assert(strncmp(r.out, "#1 sig-1@0 T0 ", 14) == 0, "got: %s", r.out);
        run_free(&r);
    }
}

Test(cli, subscribe_usage_errors_and_a_refused_request)
{
    struct run r = RUN("subscribe", "--from", "3", "--from-end");
    cr_assert_eq(r.status, 2, "exit %d", r.status);
    run_free(&r);
    r = RUN("subscribe", "s", "--prefix", "x");
    cr_assert_eq(r.status, 2);
    cr_assert_not_null(strstr(r.err, "--prefix"), "stderr: %s", r.err);
    run_free(&r);
    r = RUN("subscribe", "--count", "0");
    cr_assert_eq(r.status, 2);
    run_free(&r);
    /* The server judges from_end with a version. */
    r = RUN("subscribe", "s", "--from", "2", "--from-end");
    cr_assert_eq(r.status, 2);
    run_free(&r);
    r = RUN("subscribe", "--help");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "--from-end"), "help: %s", r.out);
    run_free(&r);
}

Test(cli, subscribe_ends_quietly_when_its_reader_goes_away)
{
    int fds[2];
    char err_path[300];
    append("ep-1", "T0", "{}");
    snprintf(err_path, sizeof(err_path), "%s/bg.out", h.dir);
    write_file(err_path, ""); /* stdout is the pipe; run_wait reads this */
    snprintf(err_path, sizeof(err_path), "%s/bg.err", h.dir);
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* it ends with a test that timed out */
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err < 0) _exit(126);
        dup2(fds[1], 1);
        dup2(err, 2);
        close(fds[0]);
        execl(cli_path(), cli_path(), "subscribe", "--server", h.addr, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[256];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1); /* the first event: like head -1 */
    cr_assert_gt(n, 0);
    buf[n] = '\0';
    cr_assert(strncmp(buf, "#1 ep-1@0", 9) == 0, "got: %s", buf);
    close(fds[0]);
    /* The next event finds the pipe closed. */
    append("ep-1", "T0", "{}");
    struct run r = run_wait(pid, 10000);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    cr_assert_null(strstr(r.err, "writing"), "stderr: %s", r.err);
    run_free(&r);
}

/* ---- projections and views ---- */

Test(cli, projection_create_view_and_scan)
{
    struct run r = RUN("projection", "create", "by_type", "--kind", "count", "--key", "$type");
    expect_ok(&r);
    cr_assert(strstr(r.out, "by_type count $type") != NULL, "got: %s", r.out);
    run_free(&r);
    append("o-1", "Placed", "{}");
    append("o-2", "Placed", "{}");
    append("o-1", "Paid", "{}");

    r = RUN("view", "by_type", "Placed", "--min-position", "3");
    expect_ok(&r);
    cr_assert(strstr(r.out, "Placed #2 {\"count\":2}") != NULL, "got: %s", r.out);
    run_free(&r);
    r = RUN("view", "by_type", "Placed", "--as-of", "1", "--json");
    expect_ok(&r);
    json_t *j = json_line(r.out, 0);
    cr_assert_eq(jint(json_object_get(j, "value"), "count"), 1);
    json_decref(j);
    run_free(&r);
    r = RUN("view", "scan", "by_type");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 2, "got: %s", r.out);
    cr_assert(strncmp(r.out, "Paid #3", 7) == 0, "key order: %s", r.out);
    run_free(&r);
    r = RUN("view", "by_type", "Nothing");
    cr_assert_eq(r.status, 1);
    run_free(&r);
    r = RUN("projection", "create", "bad", "--kind", "count");
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "key") != NULL, "got: %s", r.err);
    run_free(&r);
    r = RUN("projection", "rebuild", "by_type");
    expect_ok(&r);
    cr_assert(strstr(r.err, "rebuilt by_type") != NULL, "got: %s", r.err);
    run_free(&r);
    r = RUN("projection", "delete", "by_type");
    expect_ok(&r);
    run_free(&r);
    r = RUN("view", "by_type", "Placed");
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, "does not exist") != NULL, "got: %s", r.err);
    run_free(&r);
}

Test(cli, token_new_prints_a_token_and_its_hash)
{
    struct run r = RUN_NOSRV("token", "new", "svc-a", "--json");
    expect_ok(&r);
    json_t *j = json_line(r.out, 0);
    const char *tok = jstr(j, "token");
    json_t *entry = json_object_get(j, "entry");
    cr_assert_eq(strlen(tok), 64);
    const char *hash = json_string_value(json_object_get(entry, "token_sha256"));
    cr_assert_not_null(hash);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "test \"$(printf %%s %s | sha256sum | cut -c1-64)\" = %s", tok,
             hash);
    cr_assert_eq(system(cmd), 0, "the hash is not the token's SHA-256");
    json_decref(j);
    run_free(&r);
}

/* ---- consumer groups ---- */

Test(cli, group_create_get_list_and_a_script_as_consumer)
{
    struct run r = RUN("group", "create", "jobs", "--prefix", "job-", "--max-deliveries", "2");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "jobs prefix job-"), "%s", r.out);
    run_free(&r);
    append("job-1", "Good", "{\"n\":1}");
    append("job-2", "Good", "{\"n\":2}");
    append("job-3", "Bad", "{\"n\":3}");
    append("other", "Good", "{\"n\":4}");

    /* a shell script as the worker: Bad fails (nack), the rest succeed */
    r = run_argv(NULL, false,
                 (const char *const[]){"consume", "jobs", "--count", "4", "--server", h.addr,
                                       "--", "sh", "-c",
                                       "read l; case \"$l\" in *'\"Bad\"'*) exit 9;; esac; "
                                       "case \"$l\" in *'\"attempt\":1'*) exit 0;; esac; exit 5",
                                       NULL});
    expect_ok(&r);
    cr_assert_not_null(strstr(r.err, "4 events: 2 acked, 2 nacked, 0 parked"), "%s", r.err);
    run_free(&r);

    r = RUN("group", "get", "jobs", "--json");
    expect_ok(&r);
    json_t *o = json_line(r.out, 0);
    cr_assert_eq(jint(o, "acked"), 2);
    cr_assert_eq(jint(o, "parked"), 1, "Bad parked after 2 attempts");
    cr_assert_eq(jint(o, "redelivered"), 1);
    cr_assert_eq(jint(o, "in_flight"), 0);
    json_decref(o);
    run_free(&r);

    r = RUN("read", "$parked-jobs", "--json");
    expect_ok(&r);
    o = json_line(r.out, 0);
    json_t *data = json_object_get(o, "data");
    cr_assert_str_eq(json_string_value(json_object_get(data, "reason")), "exit status 9");
    cr_assert_str_eq(json_string_value(json_object_get(data, "original_stream")), "job-3");
    json_decref(o);
    run_free(&r);

    /* replayed, and this time parked by the park status */
    r = RUN("group", "replay-parked", "jobs");
    expect_ok(&r);
    cr_assert_not_null(strstr(r.out, "0 parked"), "%s", r.out);
    run_free(&r);
    r = run_argv(NULL, false,
                 (const char *const[]){"consume", "jobs", "--count", "1", "--park-status", "4",
                                       "--server", h.addr, "--", "sh", "-c",
                                       "cat >/dev/null; exit 4", NULL});
    expect_ok(&r);
    cr_assert_not_null(strstr(r.err, "1 events: 0 acked, 0 nacked, 1 parked"), "%s", r.err);
    run_free(&r);

    r = RUN("group", "list");
    expect_ok(&r);
    cr_assert_eq(count_lines(r.out), 1);
    cr_assert_not_null(strstr(r.out, "1 parked"), "%s", r.out);
    run_free(&r);
    r = RUN("group", "delete", "jobs");
    expect_ok(&r);
    run_free(&r);
    r = RUN("group", "get", "jobs");
    cr_assert_eq(r.status, 1);
    cr_assert_not_null(strstr(r.err, "not found"), "%s", r.err);
    run_free(&r);
}

Test(cli, group_and_consume_usage_errors_exit_2)
{
    struct run r = RUN("group", "frobnicate", "x");
    cr_assert_eq(r.status, 2);
    run_free(&r);
    r = RUN("group", "get");
    cr_assert_eq(r.status, 2);
    run_free(&r);
    r = RUN("group", "create", "g", "--max-deliveries", "many");
    cr_assert_eq(r.status, 2);
    cr_assert_not_null(strstr(r.err, "--max-deliveries"), "%s", r.err);
    run_free(&r);
    r = RUN("consume", "g");
    cr_assert_eq(r.status, 2);
    cr_assert_not_null(strstr(r.err, "no command"), "%s", r.err);
    run_free(&r);
}

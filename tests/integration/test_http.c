/*
 * test_http.c - annalsd --http: /metrics moves with the writes, /api/
 * answers, auth guards it, and the admin page renders real figures in
 * headless Chromium. A real annalsd; writes through libannals, HTTP over a
 * plain socket.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(http, .fini = teardown, .timeout = 120);

/* The value of a metric line that starts with `name` (labels included). */
static double metric(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            return atof(p + nl + 1);
        }
    }
    cr_assert_fail("metric %s not found", name);
    return 0;
}

static void append_to(const char *stream, int n)
{
    for (int i = 0; i < n; i++) {
        struct an_event e = {.type = "Tested", .data = "{\"n\":1}", .data_len = 7};
        struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
        cr_assert_eq(an_append(h.client, &sa, 1, NULL, NULL), 0);
    }
}

static char body[1 << 20];

Test(http, metrics_move_with_the_writes)
{
    const char *flags[] = {"--http", "127.0.0.1:0", NULL};
    h_start(&h, flags);
    int port = h_http_port(&h);
    cr_assert_eq(h_http_get(port, "/metrics", NULL, body, sizeof(body)), 200);
    double e0 = metric(body, "annals_events_total");
    cr_assert_eq(metric(body, "annals_log_head_position"), 0);
    append_to("m-1", 7);
    cr_assert_eq(h_http_get(port, "/metrics", NULL, body, sizeof(body)), 200);
    cr_assert_eq(metric(body, "annals_events_total"), e0 + 7);
    cr_assert_eq(metric(body, "annals_log_head_position"), 7);
    cr_assert_eq(metric(body, "annals_log_streams"), 1);
    cr_assert_eq(
        metric(body, "annals_grpc_calls_total{method=\"annals.v1.Commands/Append\",code=\"OK\"}"),
        7);
    double commits = metric(body, "annals_commits_total");
    cr_assert_geq(commits, 1);
    cr_assert_eq(metric(body, "annals_commit_seconds_count"), commits);
    cr_assert_eq(metric(body, "annals_commit_seconds_bucket{le=\"+Inf\"}"), commits);
    cr_assert_geq(metric(body, "annals_syncs_total"), commits);
    cr_assert(strstr(body, "# TYPE annals_commit_batch_size histogram") != NULL);
    /* an error is counted under its code */
    struct an_event e = {.type = "Tested"};
    struct an_stream_append bad = {.stream = "$nope", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(h.client, &bad, 1, NULL, NULL), AN_EINVAL);
    cr_assert_eq(h_http_get(port, "/metrics", NULL, body, sizeof(body)), 200);
    cr_assert_eq(metric(body, "annals_grpc_calls_total{method=\"annals.v1.Commands/Append\","
                              "code=\"INVALID_ARGUMENT\"}"),
                 1);
    cr_assert_eq(h_http_get(port, "/nothing-here", NULL, body, sizeof(body)), 404);
}

Test(http, api_lists_streams_by_prefix_page_by_page)
{
    const char *flags[] = {"--http", "127.0.0.1:0", NULL};
    h_start(&h, flags);
    int port = h_http_port(&h);
    const char *names[] = {"p-a", "p-b", "p-c", "p-d", "p-e"};
    for (int i = 0; i < 5; i++) {
        append_to(names[i], i + 1);
    }
    append_to("q-1", 1);
    char path[256] = "/api/streams?prefix=p-&limit=2";
    int seen = 0;
    for (int page = 0; page < 5; page++) {
        cr_assert_eq(h_http_get(port, path, NULL, body, sizeof(body)), 200);
        for (int i = seen; i < 5; i++) {
            char want[64];
            snprintf(want, sizeof(want), "\"name\":\"%s\"", names[i]);
            if (strstr(body, want)) {
                seen++;
            }
        }
        cr_assert(strstr(body, "q-1") == NULL, "another prefix listed: %s", body);
        const char *next = strstr(body, "\"next_after\":\"");
        if (!next) {
            cr_assert(strstr(body, "\"more\":false") != NULL, "%s", body);
            break;
        }
        char after[64];
        cr_assert_eq(sscanf(next + 14, "%63[^\"]", after), 1);
        snprintf(path, sizeof(path), "/api/streams?prefix=p-&limit=2&after=%s", after);
    }
    cr_assert_eq(seen, 5, "every stream of the prefix, once, in order");
    cr_assert_eq(h_http_get(port, "/api/streams?limit=0", NULL, body, sizeof(body)), 400);
    /* a limit is digits alone: strtol once served these as 10, 5 and 1000 */
    cr_assert_eq(h_http_get(port, "/api/streams?limit=10x", NULL, body, sizeof(body)), 400);
    cr_assert_eq(h_http_get(port, "/api/streams?limit=+5", NULL, body, sizeof(body)), 400);
    cr_assert_eq(h_http_get(port, "/api/streams?limit=1000.9", NULL, body, sizeof(body)), 400);
    cr_assert_eq(h_http_get(port, "/api/streams?limit=0002", NULL, body, sizeof(body)), 200);
    cr_assert_eq(h_http_get(port, "/api/summary", NULL, body, sizeof(body)), 200);
    cr_assert(strstr(body, "\"head\":16") != NULL, "%s", body);
    cr_assert(strstr(body, "\"health\":\"SERVING\"") != NULL, "%s", body);
    cr_assert_eq(h_http_get(port, "/api/projections", NULL, body, sizeof(body)), 200);
    cr_assert(strstr(body, "\"projections\":[]") != NULL, "%s", body);
}

Test(http, auth_guards_it_with_an_admin_token)
{
    char path[300];
    char cmd[600];
    snprintf(path, sizeof(path), "/tmp/annals-http-auth-%d.json", (int)getpid());
    snprintf(cmd, sizeof(cmd),
             "printf '{\"principals\": [{\"name\": \"ops\", \"token_sha256\": \"%%s\", "
             "\"grants\": [\"admin\"]}, {\"name\": \"app\", \"token_sha256\": \"%%s\", "
             "\"grants\": [\"read stream:\"]}]}' "
             "$(printf %%s tok-ops | sha256sum | cut -c1-64) "
             "$(printf %%s tok-app | sha256sum | cut -c1-64) > %s",
             path);
    cr_assert_eq(system(cmd), 0);
    const char *flags[] = {"--http", "127.0.0.1:0", "--auth", path, NULL};
    h_start(&h, flags);
    int port = h_http_port(&h);
    cr_assert_eq(h_http_get(port, "/metrics", NULL, body, sizeof(body)), 401);
    cr_assert_eq(h_http_get(port, "/metrics", "tok-nobody", body, sizeof(body)), 401);
    cr_assert_eq(h_http_get(port, "/api/summary", "tok-app", body, sizeof(body)), 403);
    cr_assert(strstr(body, "admin") != NULL, "%s", body);
    cr_assert_eq(h_http_get(port, "/metrics", "tok-ops", body, sizeof(body)), 200);
    cr_assert(strstr(body, "annals_events_total") != NULL);
    unlink(path);
}

Test(http, off_loopback_it_needs_insecure)
{
    char out[2048];
    char data[300];
    snprintf(data, sizeof(data), "/tmp/annals-http-nl-%d", (int)getpid());
    const char *args[] = {"--data", data, "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", NULL};
    cr_assert_eq(h_run_annalsd(args, out, sizeof(out)), 1);
    cr_assert(strstr(out, "--insecure") != NULL, "%s", out);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", data);
    cr_assert_eq(system(cmd), 0);
}

Test(http, the_admin_page_renders_the_real_figures_in_chromium)
{
    const char *flags[] = {"--http", "127.0.0.1:0", NULL};
    h_start(&h, flags);
    int port = h_http_port(&h);
    append_to("orders-1", 3);
    append_to("orders-2", 2);
    cr_assert_eq(access("/usr/bin/chromium", X_OK), 0,
                 "chromium is missing: ./dev.sh setup installs it (Debian's chromium)");
    static char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "HOME='%s' /usr/bin/chromium --headless --no-sandbox --disable-gpu "
             "--user-data-dir='%s/chrome' --virtual-time-budget=5000 --dump-dom "
             "http://127.0.0.1:%d/ > '%s/dom.html' 2>/dev/null",
             h.dir, h.dir, port, h.dir);
    cr_assert_eq(system(cmd), 0, "chromium failed: %s", cmd);
    char path[400];
    snprintf(path, sizeof(path), "%s/dom.html", h.dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(body, 1, sizeof(body) - 1, f);
    body[n] = '\0';
    fclose(f);
    cr_assert(strstr(body, "<b id=\"head\">5</b>") != NULL, "head not shown: %.2000s", body);
    cr_assert(strstr(body, "<b id=\"streams\">2</b>") != NULL, "streams not shown");
    cr_assert(strstr(body, "<td>orders-1</td>") != NULL, "stream list not shown");
    cr_assert(strstr(body, "<span id=\"health\" class=\"ok\">SERVING</span>") != NULL,
              "health not shown");
    /* and a screenshot, for a person to look at */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && HOME='%s' /usr/bin/chromium --headless --no-sandbox --disable-gpu "
             "--user-data-dir='%s/chrome' --virtual-time-budget=5000 --window-size=1100,900 "
             "--screenshot='%s/admin.png' http://127.0.0.1:%d/ >/dev/null 2>&1",
             h.dir, h.dir, h.dir, h.dir, port);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/admin.png", h.dir);
    f = fopen(path, "rb");
    cr_assert_not_null(f, "no screenshot");
    fseek(f, 0, SEEK_END);
    cr_assert_gt(ftell(f), 1000);
    fclose(f);
}

/*
 * test_connections.c - hostile connections (issue 12): clients that open
 * a TCP connection and never speak are dropped after --handshake-timeout,
 * a call with oversized headers is refused, connections idle past
 * --idle-timeout are closed without breaking their clients, and through
 * all of it the server keeps serving everyone else. A real annalsd
 * through libannals and raw sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static struct harness h;

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(connections, .fini = teardown, .timeout = 120);

static int append_one(an_client *c, const char *stream)
{
    struct an_event e = {.type = "Conn", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    return an_append(c, &sa, 1, NULL, NULL);
}

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Whether the server closed fd within timeout_ms (EOF or reset). */
static bool closed_within(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0) {
        return false;
    }
    char b[256];
    ssize_t n;
    while ((n = recv(fd, b, sizeof(b), MSG_DONTWAIT)) > 0) {
        /* the server may say something (a GOAWAY) before closing */
        if (poll(&p, 1, timeout_ms) <= 0) {
            return false;
        }
    }
    return n == 0 || (n < 0 && errno != EAGAIN);
}

#define LORIS 200

Test(connections, silent_connections_are_dropped_and_others_are_served)
{
    const char *flags[] = {"--handshake-timeout", "1", NULL};
    h_start(&h, flags);
    int fds[LORIS];
    for (int i = 0; i < LORIS; i++) {
        fds[i] = raw_connect(h.port);
    }
    /* half of them say a little and stop: the start of the HTTP/2 preface */
    for (int i = 0; i < LORIS; i += 2) {
        cr_assert_eq(send(fds[i], "PRI * HTTP", 10, 0), 10);
    }
    /* while they hang, everyone else is served */
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(append_one(h.client, "loris-ok"), 0);
    }
    int dropped = 0;
    for (int i = 0; i < LORIS; i++) {
        dropped += closed_within(fds[i], 5000);
        close(fds[i]);
    }
    cr_assert_eq(dropped, LORIS, "%d of %d silent connections were dropped", dropped, LORIS);
    struct an_stream_info si;
    cr_assert_eq(an_get_stream(h.client, "loris-ok", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 100);
}

Test(connections, oversized_headers_are_refused_and_the_server_goes_on)
{
    const char *flags[] = {"--max-metadata", "8K", NULL};
    h_start(&h, flags);
    static char token[20000];
    memset(token, 'a', sizeof(token) - 1);
    struct an_client_opts o = {.token = token, .timeout_ms = 3000, .max_retries = -1};
    an_client *big;
    cr_assert_eq(an_connect(h.addr, &o, &big), 0);
    struct an_error err;
    for (int i = 0; i < 5; i++) {
        struct an_event e = {.type = "Conn", .data = "{}", .data_len = 2};
        struct an_stream_append sa = {.stream = "too-big", .events = &e, .n_events = 1};
        int rc = an_append(big, &sa, 1, NULL, &err);
        cr_assert_neq(rc, 0, "a call with 20 KB of headers was accepted");
    }
    an_close(big);
    cr_assert_eq(append_one(h.client, "after-big"), 0);
    struct an_stream_info si;
    cr_assert_eq(an_get_stream(h.client, "too-big", NULL, &si, NULL), AN_ENOTFOUND,
                 "nothing of the refused calls was written");
}

Test(connections, idle_connections_are_closed_and_clients_reconnect)
{
    const char *flags[] = {"--idle-timeout", "1", NULL};
    h_start(&h, flags);
    cr_assert_eq(append_one(h.client, "idle"), 0);
    /* a raw HTTP/2 client that finishes its preface and then says nothing */
    int fd = raw_connect(h.port);
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const unsigned char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    cr_assert_eq(send(fd, preface, sizeof(preface) - 1, 0), (ssize_t)sizeof(preface) - 1);
    cr_assert_eq(send(fd, settings, sizeof(settings), 0), (ssize_t)sizeof(settings));
    cr_assert(closed_within(fd, 6000), "an idle HTTP/2 connection was not closed");
    close(fd);
    /* the library's own idle connection went the same way; it reconnects */
    sleep(2);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(append_one(h.client, "idle"), 0);
    }
    struct an_stream_info si;
    cr_assert_eq(an_get_stream(h.client, "idle", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, 11);
}

/* A metric's value from the --http /metrics page, or -1. */
static long long metric(int http_port, const char *name)
{
    static char body[1 << 17];
    cr_assert_eq(h_http_get(http_port, "/metrics", NULL, body, sizeof(body)), 200);
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *at = strstr(body, key);
    return at ? strtoll(at + strlen(key), NULL, 10) : -1;
}

/* A client over a connection of its own, without the library's retries,
 * and whether its health call got through (else its code). */
static int connect_and_check(const char *addr, an_client **out)
{
    struct an_client_opts o = {.timeout_ms = 3000, .max_retries = -1};
    cr_assert_eq(an_connect(addr, &o, out), 0);
    bool serving = false;
    return an_health(*out, &serving, NULL);
}

#define CONN_LIMIT 8

Test(connections, connections_past_the_limit_are_closed_and_the_others_served)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", CONN_LIMIT);
    const char *flags[] = {"--max-connections", limit, "--http", "127.0.0.1:0", NULL};
    h_start(&h, flags);
    int http = h_http_port(&h);
    cr_assert_eq(metric(http, "annals_connections_max"), CONN_LIMIT);

    /* the harness's client holds one (once it has made a call); fill the rest */
    bool serving = false;
    cr_assert_eq(an_health(h.client, &serving, NULL), 0);
    an_client *c[CONN_LIMIT] = {0};
    for (int i = 1; i < CONN_LIMIT; i++) {
        cr_assert_eq(connect_and_check(h.addr, &c[i]), 0, "connection %d of %d refused", i + 1,
                     CONN_LIMIT);
    }
    long long open = metric(http, "annals_connections_open");
    cr_assert_eq(open, CONN_LIMIT, "%lld connections open, want %d", open, CONN_LIMIT);

    /* one more: closed before it can say anything */
    an_client *over;
    int rc = connect_and_check(h.addr, &over);
    cr_assert_eq(rc, AN_EUNAVAIL, "connection %d past a limit of %d: %s", CONN_LIMIT + 1,
                 CONN_LIMIT, an_strerror(rc));
    an_close(over);
    /* raw ones too, and the server keeps no descriptor for them */
    for (int i = 0; i < 50; i++) {
        int fd = raw_connect(h.port);
        cr_assert(closed_within(fd, 3000), "raw connection %d past the limit stayed open", i);
        close(fd);
    }
    cr_assert_geq(metric(http, "annals_connections_refused_total"), 51);
    open = metric(http, "annals_connections_open");
    cr_assert_eq(open, CONN_LIMIT, "%lld connections open after refusals, want %d", open,
                 CONN_LIMIT);

    /* those inside the limit are served throughout */
    for (int i = 1; i < CONN_LIMIT; i++) {
        cr_assert_eq(append_one(c[i], "within-limit"), 0, "connection %d", i + 1);
    }
    cr_assert_eq(append_one(h.client, "within-limit"), 0);

    /* closing three makes room for three, and no more */
    for (int i = 1; i <= 3; i++) {
        an_close(c[i]);
        c[i] = NULL;
    }
    for (int i = 1; i <= 3; i++) {
        /* the server learns of the closes when it reads their end */
        rc = AN_EUNAVAIL;
        for (int t = 0; t < 50 && rc == AN_EUNAVAIL; t++) {
            if (c[i]) {
                an_close(c[i]);
                usleep(100000);
            }
            rc = connect_and_check(h.addr, &c[i]);
        }
        cr_assert_eq(rc, 0, "no room after closing three: %s", an_strerror(rc));
    }
    rc = connect_and_check(h.addr, &over);
    cr_assert_eq(rc, AN_EUNAVAIL, "the limit let in one more after the freed room was taken");
    an_close(over);
    for (int i = 1; i < CONN_LIMIT; i++) {
        an_close(c[i]);
    }
    struct an_stream_info si;
    cr_assert_eq(an_get_stream(h.client, "within-limit", NULL, &si, NULL), 0);
    cr_assert_eq(si.event_count, CONN_LIMIT);
}

/* The --http server is not bound by select()'s 1 024 descriptors: with
 * more gRPC connections than that open, /metrics still answers, and
 * counts them. */
#define MANY 1100

Test(connections, metrics_answer_with_more_connections_than_select_can_watch)
{
    struct rlimit nofile;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &nofile), 0);
    if (nofile.rlim_max < MANY + 200) {
        cr_skip_test("the descriptor limit (%llu) is below %d", (unsigned long long)nofile.rlim_max,
                     MANY + 200);
    }
    nofile.rlim_cur = nofile.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &nofile), 0);
    const char *flags[] = {"--http", "127.0.0.1:0", NULL};
    h_start(&h, flags);
    int http = h_http_port(&h);
    static int fds[MANY];
    for (int i = 0; i < MANY; i++) {
        fds[i] = raw_connect(h.port);
    }
    long long open = -1;
    for (int t = 0; t < 50 && open < MANY; t++) {
        open = metric(http, "annals_connections_open");
        usleep(20000);
    }
    cr_assert_geq(open, MANY, "%lld connections open, want at least %d", open, MANY);
    for (int i = 0; i < MANY; i++) {
        close(fds[i]);
    }
}

/*
 * test_security.c - TLS and mTLS, bearer tokens and grants, the principal
 * stamped on events, the auth file reloaded on SIGHUP, and plaintext
 * refused on a non-loopback address. A real annalsd through libannals;
 * certificates are made for each test with the openssl command.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "annals/v1/projections.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "harness.h"

static struct harness h;
static char auth_path[300];

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(security, .fini = teardown, .timeout = 120);

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

/* ---- helpers ---- */

/* A directory for the test's files (not the harness's, made at start). */
static void make_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/annals-sec-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

/* Runs cmd in dir with the shell; the test fails if it fails. */
static void in_dir(const char *dir, const char *cmd)
{
    char full[4096];
    snprintf(full, sizeof(full), "cd '%s' && %s", dir, cmd);
    cr_assert_eq(system(full), 0, "failed: %s", full);
}

/* A CA, a server certificate for 127.0.0.1 and localhost, and two client
 * certificates: c1 with DNS SAN "svc-one", c2 with only CN "svc-two". */
static void make_pki(const char *dir)
{
    in_dir(dir, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
       "-keyout ca.key -out ca.pem -days 2 -subj /CN=annals-test-ca 2>/dev/null");
    in_dir(dir, "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > srv.ext && "
       "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key "
       "-out srv.csr -subj /CN=localhost 2>/dev/null && "
       "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem "
       "-days 2 -extfile srv.ext 2>/dev/null");
    in_dir(dir, "printf 'subjectAltName=DNS:svc-one\\n' > c1.ext && "
       "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout c1.key "
       "-out c1.csr -subj /CN=cn-one 2>/dev/null && "
       "openssl x509 -req -in c1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out c1.pem "
       "-days 2 -extfile c1.ext 2>/dev/null");
    in_dir(dir, "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
       "-keyout c2.key -out c2.csr -subj /CN=svc-two 2>/dev/null && "
       "openssl x509 -req -in c2.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out c2.pem "
       "-days 2 2>/dev/null");
}

/* The hex SHA-256 of a token, from the sha256sum command. */
static void token_hash(const char *token, char out[65])
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "printf %%s '%s' | sha256sum", token);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    cr_assert_not_null(fgets(out, 65, p));
    pclose(p);
    cr_assert_eq(strlen(out), 64);
}

struct who {
    const char *name;
    const char *token;          /* NULL: none (certificate only) */
    const char *grants;         /* JSON array body */
};

static void write_auth(const char *path, const struct who *w, size_t n)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "{\"principals\": [");
    for (size_t i = 0; i < n; i++) {
        char hash[65];
        fprintf(f, "%s{\"name\": \"%s\", ", i ? ", " : "", w[i].name);
        if (w[i].token) {
            token_hash(w[i].token, hash);
            fprintf(f, "\"token_sha256\": \"%s\", ", hash);
        }
        fprintf(f, "\"grants\": [%s]}", w[i].grants);
    }
    fprintf(f, "]}\n");
    fclose(f);
}

static an_client *client_with(const char *token, const char *ca, const char *cert,
                              const char *key)
{
    struct an_client_opts o = {.timeout_ms = 5000, .max_retries = -1, .breaker_threshold = -1,
                               .token = token, .tls_ca_file = ca, .tls_cert_file = cert,
                               .tls_key_file = key};
    an_client *c = NULL;
    cr_assert_eq(an_connect(h.addr, &o, &c), 0);
    return c;
}

static int append1(an_client *c, const char *stream)
{
    struct an_event e = {.type = "Tested", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    return an_append(c, &sa, 1, NULL, NULL);
}

/* The first event of a stream: its principal into out (""), or the code. */
static int first_principal(an_client *c, const char *stream, char *out, size_t cap)
{
    struct an_read_stream_opts o = {.stream = stream};
    an_iter *it = NULL;
    const Annals__V1__RecordedEvent *e = NULL;
    int rc = an_read_stream(c, &o, &it);
    if (!rc) {
        rc = an_iter_next(it, &e, NULL);
        if (rc == 1) {
            snprintf(out, cap, "%s", e->principal ? e->principal : "");
            rc = 0;
        } else if (rc == 0) {
            rc = AN_ENOTFOUND;
        }
    }
    an_iter_free(it);
    return rc;
}

static int read_all(an_client *c, const char *prefix)
{
    struct an_read_all_opts o = {.stream_prefixes = &prefix, .n_stream_prefixes = prefix ? 1 : 0,
                                 .max_count = 1};
    an_iter *it = NULL;
    const Annals__V1__RecordedEvent *e;
    int rc = an_read_all(c, &o, &it);
    if (!rc) {
        rc = an_iter_next(it, &e, NULL);
        rc = rc == 1 ? 0 : rc;
    }
    an_iter_free(it);
    return rc;
}

static int get_view(an_client *c, const char *view)
{
    Annals__V1__GetViewRequest r = ANNALS__V1__GET_VIEW_REQUEST__INIT;
    uint8_t buf[256];
    r.view = (char *)view;
    r.key = (char *)"k";
    size_t n = annals__v1__get_view_request__pack(&r, buf);
    return an_call_raw(c, "/annals.v1.Queries/GetView", buf, n, NULL);
}

static int create_projection(an_client *c, const char *name)
{
    Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
    uint8_t buf[256];
    d.name = (char *)name;
    d.kind = ANNALS__V1__PROJECTION_KIND__COUNT;
    d.key = (char *)"$type";
    size_t n = annals__v1__projection_definition__pack(&d, buf);
    return an_call_raw(c, "/annals.v1.Projections/Create", buf, n, NULL);
}

static void start_with_auth(const struct who *w, size_t n)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    snprintf(auth_path, sizeof(auth_path), "%s/auth.json", dir);
    write_auth(auth_path, w, n);
    const char *flags[] = {"--auth", auth_path, NULL};
    h_start(&h, flags);
}

/* ---- tokens and grants ---- */

static const struct who principals[] = {
    {"writer", "tok-writer", "\"write stream:orders-\", \"read stream:orders-\""},
    {"reader", "tok-reader", "\"read stream:orders-\", \"read view:*\""},
    {"deleter", "tok-deleter", "\"delete stream:orders-\""},
    {"every", "tok-every", "\"read stream:\""},
    {"dollar", "tok-dollar", "\"read stream:$\""},
    {"viewer", "tok-viewer", "\"read view:totals\""},
    {"ops", "tok-ops", "\"admin\""},
};

enum op { APPEND, READ, DELETE, READ_ALL, VIEW, CREATE };

struct grant_case {
    const char *token;
    enum op op;
    const char *target;         /* stream, prefix (NULL: every stream), view, projection */
    int want;                   /* 0, AN_EPERM, or what an allowed call gets */
};

static int run_op(an_client *c, enum op op, const char *target)
{
    char principal[64];
    switch (op) {
    case APPEND:
        return append1(c, target);
    case READ:
        return first_principal(c, target, principal, sizeof(principal));
    case DELETE:
        return an_delete_stream(c, target, AN_EXPECT_ANY, 0, false, NULL, NULL);
    case READ_ALL:
        return read_all(c, target);
    case VIEW:
        return get_view(c, target);
    case CREATE:
        return create_projection(c, target);
    }
    return AN_EINVAL;
}

Test(security, each_grant_allows_exactly_what_it_says)
{
    start_with_auth(principals, sizeof(principals) / sizeof(principals[0]));
    an_client *ops = client_with("tok-ops", NULL, NULL, NULL);
    cr_assert_eq(append1(ops, "orders-1"), 0);
    cr_assert_eq(append1(ops, "orders-del"), 0);
    cr_assert_eq(append1(ops, "payments-1"), 0);
    an_close(ops);

    static const struct grant_case cases[] = {
        {"tok-writer", APPEND, "orders-2", 0},
        {"tok-writer", APPEND, "payments-2", AN_EPERM},
        {"tok-writer", READ, "orders-1", 0},
        {"tok-writer", READ, "payments-1", AN_EPERM},
        {"tok-writer", DELETE, "orders-1", AN_EPERM},
        {"tok-writer", READ_ALL, "orders-", 0},
        {"tok-writer", READ_ALL, "payments-", AN_EPERM},
        {"tok-writer", READ_ALL, NULL, AN_EPERM},
        {"tok-writer", VIEW, "totals", AN_EPERM},
        {"tok-writer", CREATE, "p1", AN_EPERM},
        {"tok-reader", APPEND, "orders-3", AN_EPERM},
        {"tok-reader", READ, "orders-1", 0},
        {"tok-reader", VIEW, "totals", AN_ENOTFOUND}, /* allowed; no such view */
        {"tok-deleter", DELETE, "orders-del", 0},
        {"tok-deleter", DELETE, "payments-1", AN_EPERM},
        {"tok-deleter", READ, "orders-1", AN_EPERM},
        {"tok-every", READ, "payments-1", 0},
        {"tok-every", READ, "$streams", AN_EPERM}, /* '$' needs an explicit grant */
        {"tok-every", READ_ALL, "pay", 0},
        {"tok-every", READ_ALL, NULL, AN_EPERM},   /* every stream includes '$' ones */
        {"tok-dollar", READ, "$streams", 0},       /* the deletion above is recorded there */
        {"tok-dollar", READ, "orders-1", AN_EPERM},
        {"tok-viewer", VIEW, "totals", AN_ENOTFOUND},
        {"tok-viewer", VIEW, "other", AN_EPERM},
        {"tok-ops", READ_ALL, NULL, 0},
        {"tok-ops", CREATE, "p1", 0},
        {"tok-ops", VIEW, "p1", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct grant_case *k = &cases[i];
        an_client *c = client_with(k->token, NULL, NULL, NULL);
        int rc = run_op(c, k->op, k->target);
        cr_expect_eq(rc, k->want, "case %zu (%s op %d on %s): got %s, want %s", i, k->token,
                     (int)k->op, k->target ? k->target : "(every stream)", an_errname(rc),
                     an_errname(k->want));
        an_close(c);
    }
}

Test(security, a_missing_or_unknown_token_is_unauthenticated_and_health_stays_open)
{
    start_with_auth(principals, sizeof(principals) / sizeof(principals[0]));
    an_client *none = client_with(NULL, NULL, NULL, NULL);
    an_client *bad = client_with("tok-nobody", NULL, NULL, NULL);
    struct an_error err;
    struct an_event e = {.type = "Tested", .data = "{}", .data_len = 2};
    struct an_stream_append sa = {.stream = "orders-1", .events = &e, .n_events = 1};
    cr_assert_eq(an_append(none, &sa, 1, NULL, &err), AN_EAUTH);
    cr_assert_eq(err.grpc_status, 16);
    cr_assert(strstr(err.detail, "Bearer") != NULL, "%s", err.detail);
    cr_assert_eq(an_append(bad, &sa, 1, NULL, &err), AN_EAUTH);
    cr_assert_eq(read_all(bad, "orders-"), AN_EAUTH);
    bool serving = false;
    cr_assert_eq(an_health(none, &serving, NULL), 0);
    cr_assert(serving);
    an_close(none);
    an_close(bad);
    /* nothing was written */
    an_client *ops = client_with("tok-ops", NULL, NULL, NULL);
    char p[64];
    cr_assert_eq(first_principal(ops, "orders-1", p, sizeof(p)), AN_ENOTFOUND);
    an_close(ops);
}

Test(security, the_writer_stamps_the_principal_and_a_client_cannot_forge_it)
{
    start_with_auth(principals, sizeof(principals) / sizeof(principals[0]));
    an_client *w = client_with("tok-writer", NULL, NULL, NULL);
    an_client *o = client_with("tok-ops", NULL, NULL, NULL);
    cr_assert_eq(append1(w, "orders-7"), 0);
    cr_assert_eq(append1(o, "orders-8"), 0);
    char p[64];
    cr_assert_eq(first_principal(o, "orders-7", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "writer");
    cr_assert_eq(first_principal(o, "orders-8", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "ops");
    an_close(w);
    an_close(o);
}

Test(security, sighup_reloads_the_auth_file_and_a_bad_file_keeps_the_old_one)
{
    start_with_auth(principals, 1); /* writer only */
    an_client *w = client_with("tok-writer", NULL, NULL, NULL);
    an_client *late = client_with("tok-late", NULL, NULL, NULL);
    cr_assert_eq(append1(w, "orders-1"), 0);
    cr_assert_eq(append1(late, "orders-1"), AN_EAUTH);

    /* add "late", remove "writer" */
    static const struct who next[] = {{"late", "tok-late", "\"write stream:orders-\""}};
    write_auth(auth_path, next, 1);
    kill(h.pid, SIGHUP);
    int rc = AN_EAUTH;
    for (int i = 0; i < 100 && rc == AN_EAUTH; i++) {
        sleep_ms(20);
        rc = append1(late, "orders-1");
    }
    cr_assert_eq(rc, 0, "the new principal was not loaded");
    cr_assert_eq(append1(w, "orders-1"), AN_EAUTH, "the removed principal still works");

    /* a broken file is refused; the last good one stays */
    FILE *f = fopen(auth_path, "w");
    fprintf(f, "{\"principals\": [{\"name\": \"x\", \"grants\": [\"fly stream:\"]}]}");
    fclose(f);
    kill(h.pid, SIGHUP);
    sleep_ms(300);
    cr_assert_eq(append1(late, "orders-1"), 0);
    char log[400];
    snprintf(log, sizeof(log), "grep -q 'auth file refused.*grants\\[0\\]' %s/annalsd.log", h.dir);
    cr_assert_eq(system(log), 0, "no log line naming the bad entry");
    an_close(w);
    an_close(late);
}

Test(security, a_bad_auth_file_stops_annalsd_at_start_naming_the_entry)
{
    char dir[64];
    char out[2048];
    make_dir(dir, sizeof(dir));
    snprintf(auth_path, sizeof(auth_path), "%s/auth.json", dir);
    FILE *f = fopen(auth_path, "w");
    fprintf(f, "{\"principals\": [{\"name\": \"ok\", \"grants\": [\"admin\"]}, "
               "{\"name\": \"bad\", \"token_sha256\": \"abc\"}]}");
    fclose(f);
    char data[96];
    snprintf(data, sizeof(data), "%s/data", dir);
    const char *args[] = {"--data", data, "--listen", "127.0.0.1:0", "--auth", auth_path, NULL};
    cr_assert_eq(h_run_annalsd(args, out, sizeof(out)), 1);
    cr_assert(strstr(out, "principals[1]") != NULL && strstr(out, "token_sha256") != NULL, "%s",
              out);
}

/* ---- transport ---- */

Test(security, plaintext_on_a_non_loopback_address_needs_insecure)
{
    char dir[64];
    char out[2048];
    char data[96];
    make_dir(dir, sizeof(dir));
    snprintf(data, sizeof(data), "%s/data", dir);
    const char *args[] = {"--data", data, "--listen", "0.0.0.0:0", NULL};
    cr_assert_eq(h_run_annalsd(args, out, sizeof(out)), 1);
    cr_assert(strstr(out, "--insecure") != NULL && strstr(out, "0.0.0.0") != NULL, "%s", out);
    /* with --insecure it serves */
    const char *flags[] = {"--listen", "0.0.0.0:0", "--insecure", NULL};
    h_start(&h, flags);
    cr_assert_eq(append1(h.client, "any-1"), 0);
}

Test(security, tls_serves_tls_only_and_mtls_names_the_principal)
{
    char dir[64];
    char ca[96], cert[96], key[96], c1[96], k1[96], c2[96], k2[96];
    make_dir(dir, sizeof(dir));
    make_pki(dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/srv.pem", dir);
    snprintf(key, sizeof(key), "%s/srv.key", dir);
    snprintf(c1, sizeof(c1), "%s/c1.pem", dir);
    snprintf(k1, sizeof(k1), "%s/c1.key", dir);
    snprintf(c2, sizeof(c2), "%s/c2.pem", dir);
    snprintf(k2, sizeof(k2), "%s/c2.key", dir);
    const char *flags[] = {"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca, NULL};
    h_start(&h, flags);

    /* a plaintext client gets nowhere */
    cr_assert_eq(append1(h.client, "t-1"), AN_EUNAVAIL);
    /* TLS without a client certificate: refused by mTLS */
    an_client *anon = client_with(NULL, ca, NULL, NULL);
    cr_assert_eq(append1(anon, "t-1"), AN_EUNAVAIL);
    an_close(anon);
    /* with one: served, and its name (DNS SAN, else CN) is the principal */
    an_client *one = client_with(NULL, ca, c1, k1);
    an_client *two = client_with(NULL, ca, c2, k2);
    cr_assert_eq(append1(one, "t-1"), 0);
    cr_assert_eq(append1(two, "t-2"), 0);
    char p[64];
    cr_assert_eq(first_principal(one, "t-1", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "svc-one");
    cr_assert_eq(first_principal(one, "t-2", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "svc-two");
    an_close(one);
    an_close(two);
}

Test(security, with_auth_a_certificate_principal_needs_its_entry)
{
    char dir[64];
    char ca[96], cert[96], key[96], c1[96], k1[96], c2[96], k2[96];
    make_dir(dir, sizeof(dir));
    make_pki(dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/srv.pem", dir);
    snprintf(key, sizeof(key), "%s/srv.key", dir);
    snprintf(c1, sizeof(c1), "%s/c1.pem", dir);
    snprintf(k1, sizeof(k1), "%s/c1.key", dir);
    snprintf(c2, sizeof(c2), "%s/c2.pem", dir);
    snprintf(k2, sizeof(k2), "%s/c2.key", dir);
    snprintf(auth_path, sizeof(auth_path), "%s/auth.json", dir);
    static const struct who w[] = {{"svc-one", NULL, "\"write stream:one-\""}};
    write_auth(auth_path, w, 1);
    const char *flags[] = {"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca,
                           "--auth", auth_path, NULL};
    h_start(&h, flags);
    an_client *one = client_with(NULL, ca, c1, k1);
    an_client *two = client_with(NULL, ca, c2, k2);
    cr_assert_eq(append1(one, "one-1"), 0);
    cr_assert_eq(append1(one, "two-1"), AN_EPERM);
    cr_assert_eq(append1(two, "one-2"), AN_EAUTH, "svc-two has no entry");
    an_close(one);
    an_close(two);
}

Test(security, tls_connections_past_the_limit_are_closed_before_the_handshake)
{
    char dir[64];
    char ca[96], cert[96], key[96];
    make_dir(dir, sizeof(dir));
    make_pki(dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/srv.pem", dir);
    snprintf(key, sizeof(key), "%s/srv.key", dir);
    const char *flags[] = {"--tls-cert", cert, "--tls-key", key, "--max-connections", "2", NULL};
    h_start(&h, flags);

    an_client *one = client_with(NULL, ca, NULL, NULL);
    an_client *two = client_with(NULL, ca, NULL, NULL);
    cr_assert_eq(append1(one, "lim-1"), 0);
    cr_assert_eq(append1(two, "lim-2"), 0);
    an_client *three = client_with(NULL, ca, NULL, NULL);
    cr_assert_eq(append1(three, "lim-3"), AN_EUNAVAIL, "a third TLS connection past a limit of 2");
    an_close(three);
    cr_assert_eq(append1(one, "lim-1"), 0);
    cr_assert_eq(append1(two, "lim-2"), 0);
    an_close(one);
    an_close(two);
}

/*
 * fuzz_http_request.c - libFuzzer entry for annalsd --http's requests
 * (srv_http.c): what is ours of a request, past libmicrohttpd's parsing,
 * handed to srv_http_handle as the MHD callback hands it, against a live
 * log (40 streams, one deleted, one with a UTF-8 name), four projections,
 * two consumer groups and, when the input asks, an auth table.
 *
 *   byte 0  method: 0 GET, 1 HEAD, 2 POST, 3 from the input
 *   byte 1  url % 8: /metrics, /, /api/summary, /api/streams,
 *           /api/projections, /api/groups, /index.html, from the input
 *   byte 2  bit 0..2: prefix, after, limit present (from the input);
 *           bit 3: --auth on; bits 4..5: Authorization none, the admin's
 *           token, a non-admin's token, from the input
 *   rest    the strings from the input, NUL-separated, in the order
 *           method, url, authorization, prefix, after, limit
 *
 * Checked beyond "no crash": the status is one the header documents, and
 * never 500 (nothing here runs out of memory); anything but GET and HEAD
 * is 405; with auth on only the admin's bearer token passes (401 without
 * a known token, 403 for the other); a JSON answer parses with jansson;
 * /api/streams lists at most `limit` (default 100) streams, each under
 * the prefix, after `after`, in byte order, and next_after is the last of
 * them when there are more; a limit that is not 1..1000 is 400;
 * /api/projections and /api/groups list every projection and group;
 * a text body is text (no NUL) ending in a newline.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_srv.h"
#include "srv_group_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char auth_file[] =
    "{\"principals\": ["
    "{\"name\": \"ops\", \"token_sha256\": "
    "\"10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a\", "
    "\"grants\": [\"admin\"]},"
    "{\"name\": \"orders\", \"token_sha256\": "
    "\"09dc72c7e34679dca4f27b58144a13c8c100a058c3f2aabbc6d0513634808f24\", "
    "\"grants\": [\"read stream:order-\"]}]}";

static struct srv_auth *table;
static unsigned n_projections;

static void load_auth(void)
{
    char path[64];
    char detail[LOG_DETAIL_MAX] = "";
    snprintf(path, sizeof(path), "/tmp/annals-fuzz-http-%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(auth_file, 1, sizeof(auth_file) - 1, f) != sizeof(auth_file) - 1) {
        abort();
    }
    fclose(f);
    int rc = srv_auth_load(path, &table, detail);
    unlink(path);
    if (rc) {
        fprintf(stderr, "fuzz_http_request: the auth file: %s\n", detail);
        abort();
    }
}

/* Two groups as CreateGroup would have stored them. */
static void make_groups(void)
{
    static const char *const names[] = {"g1", "orders"};
    uint8_t defs[2][256];
    struct gstate_rec st[2] = {{2, 5, 3, 1, 1}, {0, 0, 0, 0, 0}};
    struct fsrv_rec r[4];
    for (int i = 0; i < 2; i++) {
        Annals__V1__ConsumerGroup d = ANNALS__V1__CONSUMER_GROUP__INIT;
        d.name = (char *)names[i];
        d.stream = (char *)(i ? "order-1" : "");
        size_t len = annals__v1__consumer_group__pack(&d, defs[i]);
        r[2 * i] = (struct fsrv_rec){0, names[i], strlen(names[i]), defs[i], len};
        r[2 * i + 1] = (struct fsrv_rec){1, names[i], strlen(names[i]), &st[i], sizeof(st[i])};
    }
    fsrv_groups_write(r, 4);
    char detail[LOG_DETAIL_MAX] = "";
    if (fsrv_groups_start(detail) || fsrv.groups->n != 2) {
        fprintf(stderr, "fuzz_http_request: the groups: %s\n", detail);
        abort();
    }
}

static void at_exit(void)
{
    fsrv.auth = table; /* fsrv_close drops it */
    fsrv_close();
    ffx_close();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    say_level_now = SAY_ERROR + 1; /* each refusal is logged */
    ffx_open("/dev/shm", 4);
    char name[32];
    for (int i = 0; i < 36; i++) {
        snprintf(name, sizeof(name), "p-%03d", i * 7);
        ffx_put(name, "Tested", "{\"n\": 1}");
    }
    ffx_put("order-1", "Created", "{\"k\": \"a\"}");
    ffx_put("order-2", "Created", "{\"k\": \"b\"}");
    ffx_put("\xc3\xbcser-7", "Named", "{}");
    ffx_put("gone", "Created", "{}");
    ffx_delete("gone", false);
    ffx_create("state", ANNALS__V1__PROJECTION_KIND__STREAM_STATE, NULL, NULL, false);
    ffx_create("counts", ANNALS__V1__PROJECTION_KIND__COUNT, "$type", "/n", false);
    ffx_create("idx", ANNALS__V1__PROJECTION_KIND__INDEX, "/k", NULL, false);
    ffx_create("streams", ANNALS__V1__PROJECTION_KIND__STREAMS, NULL, NULL, true);
    n_projections = 4;
    fsrv_open();
    load_auth();
    make_groups();
    atexit(at_exit);
    return 0;
}

/* The next NUL-terminated string of the input (copied into buf). */
static const char *next_str(const uint8_t **data, size_t *size, char *buf, size_t cap)
{
    size_t n = 0;
    while (*size && (*data)[0] != 0) {
        if (n + 1 < cap) {
            buf[n++] = (char)(*data)[0];
        }
        (*data)++;
        (*size)--;
    }
    if (*size) {
        (*data)++;
        (*size)--;
    }
    buf[n] = 0;
    return buf;
}

static bool limit_ok(const char *lim, unsigned *out)
{
    if (!lim) {
        *out = 100;
        return true;
    }
    size_t n = strlen(lim);
    if (n == 0 || n > 4 || strspn(lim, "0123456789") != n) {
        return false;
    }
    unsigned v = (unsigned)atoi(lim);
    *out = v;
    return v >= 1 && v <= 1000;
}

static void check_streams(const struct srv_http_req *q, json_t *j)
{
    unsigned limit = 0;
    bool ok = limit_ok(q->limit, &limit);
    json_t *arr = json_object_get(j, "streams");
    if (!ok) {
        if (arr) {
            __builtin_trap(); /* a bad limit was served */
        }
        return;
    }
    if (!json_is_array(arr) || json_array_size(arr) > limit) {
        __builtin_trap();
    }
    const char *prev = q->after && q->after[0] ? q->after : NULL;
    size_t plen = q->prefix ? strlen(q->prefix) : 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *name = json_string_value(json_object_get(json_array_get(arr, i), "name"));
        if (!name || (plen && strncmp(name, q->prefix, plen) != 0) ||
            (prev && strcmp(name, prev) <= 0)) {
            __builtin_trap(); /* outside the prefix, not after `after`, out of order */
        }
        prev = name;
    }
    json_t *more = json_object_get(j, "more");
    json_t *next = json_object_get(j, "next_after");
    if (!json_is_boolean(more) || (json_is_true(more) && (!json_is_string(next) || !prev ||
                                                        strcmp(json_string_value(next), prev)))) {
        __builtin_trap();
    }
}

static void check(const struct srv_http_req *q, bool auth, const struct srv_http_resp *a)
{
    switch (a->status) {
    case 200:
    case 400:
    case 401:
    case 403:
    case 404:
    case 405:
        break;
    default:
        __builtin_trap(); /* 500: nothing here runs out of memory */
    }
    bool get = !strcmp(q->method, "GET") || !strcmp(q->method, "HEAD");
    if (get != (a->status != 405)) {
        __builtin_trap();
    }
    if (get && auth) {
        const char *h = q->authorization;
        bool admin = h && !strncasecmp(h, "Bearer ", 7) && !strcmp(h + 7, "admin-token");
        bool other = h && !strncasecmp(h, "Bearer ", 7) && !strcmp(h + 7, "orders-token");
        if ((admin && (a->status == 401 || a->status == 403)) ||
            (other && a->status != 403) || (!admin && !other && a->status != 401)) {
            __builtin_trap();
        }
    }
    if (!a->type || (a->len && !a->body)) {
        __builtin_trap();
    }
    if (!strncmp(a->type, "text/plain", 10)) {
        if (a->len == 0 || memchr(a->body, 0, a->len) || a->body[a->len - 1] != '\n') {
            __builtin_trap();
        }
    }
    if (strcmp(a->type, "application/json") != 0) {
        return;
    }
    json_error_t err;
    json_t *j = json_loadb(a->body, a->len, 0, &err);
    if (!json_is_object(j)) {
        __builtin_trap(); /* not JSON */
    }
    if (!strcmp(q->url, "/api/streams")) {
        check_streams(q, j);
    } else if (a->status == 200 && !strcmp(q->url, "/api/projections")) {
        if (json_array_size(json_object_get(j, "projections")) != n_projections) {
            __builtin_trap();
        }
    } else if (a->status == 200 && !strcmp(q->url, "/api/groups")) {
        if (json_array_size(json_object_get(j, "groups")) != fsrv.groups->n) {
            __builtin_trap();
        }
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const urls[] = {"/metrics", "/", "/api/summary", "/api/streams",
                                       "/api/projections", "/api/groups", "/index.html"};
    static const char *const auths[] = {NULL, "Bearer admin-token", "bearer orders-token"};
    char method[64];
    char url[256];
    char authz[256];
    char prefix[512];
    char after[512];
    char limit[64];
    if (size < 3) {
        return 0;
    }
    unsigned m = data[0] & 3;
    unsigned u = data[1] % 8;
    unsigned f = data[2];
    data += 3;
    size -= 3;
    next_str(&data, &size, method, sizeof(method));
    next_str(&data, &size, url, sizeof(url));
    next_str(&data, &size, authz, sizeof(authz));
    next_str(&data, &size, prefix, sizeof(prefix));
    next_str(&data, &size, after, sizeof(after));
    next_str(&data, &size, limit, sizeof(limit));
    struct srv_http_req q = {
        .method = m == 0 ? "GET" : m == 1 ? "HEAD" : m == 2 ? "POST" : method,
        .url = u < 7 ? urls[u] : url,
        .authorization = ((f >> 4) & 3) == 3 ? authz : auths[(f >> 4) & 3],
        .prefix = f & 1 ? prefix : NULL,
        .after = f & 2 ? after : NULL,
        .limit = f & 4 ? limit : NULL,
    };
    bool auth = f & 8;
    fsrv.auth = auth ? table : NULL;
    struct srv_http_resp a;
    srv_http_handle(&fsrv, &q, &a);
    fsrv.auth = NULL;
    check(&q, auth, &a);
    if (a.owned) {
        free(a.body);
    }
    return 0;
}

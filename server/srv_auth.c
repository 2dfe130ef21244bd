/*
 * srv_auth.c - who a call is, and what it may do.
 *
 * Identity. With --auth FILE on, a call is the principal whose token
 * (`authorization: Bearer T`, its SHA-256 compared in constant time with
 * every entry's) it carries, or else the principal named by its verified
 * client certificate (mTLS: the first DNS SAN, else the first URI SAN, else
 * the CN); anything else is UNAUTHENTICATED. With auth off every call is
 * allowed, and its principal is its certificate's name under mTLS, else ""
 * (anonymous). The principal is stamped by the writer on every event the
 * call appends; nothing in a request can set it.
 *
 * The auth file:
 *   {"principals": [{"name": "orders-svc", "token_sha256": "<64 hex>",
 *                    "grants": ["read stream:orders-", "write stream:orders-",
 *                               "read view:*"]},
 *                   {"name": "ops", "grants": ["admin", "read stream:"]}]}
 * Grants are "ACTION RESOURCE": read / write / delete on "stream:PREFIX"
 * ("stream:" alone: every stream), read on "view:NAME" or "view:*",
 * consume on "group:NAME" or "group:*", or "admin" alone, which allows
 * everything. Deny by default. Server-owned '$' streams are covered only by
 * admin or by a grant whose prefix itself starts with '$' ("stream:" does
 * not reach them). The table is immutable once loaded; SIGHUP loads a new
 * one and swaps it in (srv_auth_reload), calls in flight keep a reference
 * to the one they started with.
 */
#include "srv_int.h"

#include "annals/v1/consumers.pb-c.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REFUSALS_PER_S 20       /* refusal log lines per second, at most */

enum grant_kind { GK_STREAM = 0, GK_VIEW, GK_GROUP };

struct grant {
    enum srv_act act;
    enum grant_kind kind;
    bool any;                   /* view:* or group:* */
    char *name;                 /* stream prefix, view or group name */
    size_t len;
};

struct srv_principal {
    char *name;
    bool has_token;
    uint8_t token_hash[32];
    bool admin;
    struct grant *grants;
    size_t n_grants;
};

struct srv_auth {
    atomic_int refs;
    struct srv_principal *p;
    size_t n;
};

/* ---- the table ---- */

static void auth_free(struct srv_auth *a)
{
    for (size_t i = 0; i < a->n; i++) {
        for (size_t k = 0; k < a->p[i].n_grants; k++) {
            free(a->p[i].grants[k].name);
        }
        free(a->p[i].grants);
        free(a->p[i].name);
    }
    free(a->p);
    free(a);
}

void srv_auth_unref(struct srv_auth *a)
{
    if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
        auth_free(a);
    }
}

static int hex_nibble(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Parses one grant string; 0, or -1 with what was wrong in why. */
static int grant_parse(const char *s, struct srv_principal *p, struct grant *g, char *why,
                       size_t cap)
{
    static const struct {
        const char *word;
        enum srv_act act;
    } acts[] = {
        {"read ", SRV_ACT_READ},
        {"write ", SRV_ACT_WRITE},
        {"delete ", SRV_ACT_DELETE},
        {"consume ", SRV_ACT_CONSUME},
    };
    if (strcmp(s, "admin") == 0) {
        p->admin = true;
        return 1; /* not a resource grant */
    }
    for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
        size_t wl = strlen(acts[i].word);
        if (strncmp(s, acts[i].word, wl) != 0) {
            continue;
        }
        const char *r = s + wl;
        g->act = acts[i].act;
        if (strncmp(r, "stream:", 7) == 0 && acts[i].act != SRV_ACT_CONSUME) {
            g->kind = GK_STREAM;
            r += 7;
        } else if (strncmp(r, "view:", 5) == 0 && acts[i].act == SRV_ACT_READ && r[5]) {
            g->kind = GK_VIEW;
            r += 5;
        } else if (strncmp(r, "group:", 6) == 0 && acts[i].act == SRV_ACT_CONSUME && r[6]) {
            g->kind = GK_GROUP;
            r += 6;
        } else {
            snprintf(why, cap,
                     "want read|write|delete stream:PREFIX, read view:NAME|*, "
                     "consume group:NAME|* or admin");
            return -1;
        }
        g->any = g->kind != GK_STREAM && strcmp(r, "*") == 0;
        g->name = strdup(r);
        g->len = strlen(r);
        if (!g->name) {
            snprintf(why, cap, "out of memory");
            return -1;
        }
        return 0;
    }
    snprintf(why, cap,
             "want read|write|delete stream:PREFIX, read view:NAME|*, consume group:NAME|* "
             "or admin");
    return -1;
}

/* Parses principals[i] into p. 0 or -1 with detail naming the entry. */
static int principal_parse(json_t *e, size_t i, struct srv_principal *p, char *detail)
{
    char why[200];
    json_t *name = json_object_get(e, "name");
    json_t *tok = json_object_get(e, "token_sha256");
    json_t *grants = json_object_get(e, "grants");
    if (!json_is_object(e) || !json_is_string(name) || !json_string_length(name)) {
        snprintf(detail, LOG_DETAIL_MAX, "principals[%zu]: want an object with a non-empty "
                 "\"name\"", i);
        return -1;
    }
    p->name = strdup(json_string_value(name));
    if (!p->name) {
        snprintf(detail, LOG_DETAIL_MAX, "out of memory");
        return -1;
    }
    if (tok) {
        const char *h = json_is_string(tok) ? json_string_value(tok) : "";
        if (strlen(h) != 64) {
            snprintf(detail, LOG_DETAIL_MAX,
                     "principals[%zu] (%.64s): token_sha256 must be 64 hex digits", i, p->name);
            return -1;
        }
        for (size_t k = 0; k < 32; k++) {
            int a = hex_nibble(h[2 * k]);
            int b = hex_nibble(h[2 * k + 1]);
            if (a < 0 || b < 0) {
                snprintf(detail, LOG_DETAIL_MAX,
                         "principals[%zu] (%.64s): token_sha256 must be 64 hex digits", i,
                         p->name);
                return -1;
            }
            p->token_hash[k] = (uint8_t)(a << 4 | b);
        }
        p->has_token = true;
    }
    if (grants && !json_is_array(grants)) {
        snprintf(detail, LOG_DETAIL_MAX, "principals[%zu] (%.64s): grants must be an array", i,
                 p->name);
        return -1;
    }
    size_t n = json_array_size(grants);
    p->grants = calloc(n ? n : 1, sizeof(*p->grants));
    if (!p->grants) {
        snprintf(detail, LOG_DETAIL_MAX, "out of memory");
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        json_t *g = json_array_get(grants, k);
        const char *s = json_is_string(g) ? json_string_value(g) : NULL;
        int rc = s ? grant_parse(s, p, &p->grants[p->n_grants], why, sizeof(why)) : -1;
        if (!s) {
            snprintf(why, sizeof(why), "want a string");
        }
        if (rc < 0) {
            snprintf(detail, LOG_DETAIL_MAX, "principals[%zu] (%.40s): grants[%zu] '%.40s': %.120s",
                     i, p->name, k, s ? s : "", why);
            return -1;
        }
        if (rc == 0) {
            p->n_grants++;
        }
    }
    return 0;
}

int srv_auth_load(const char *path, struct srv_auth **out, char *detail)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(detail, LOG_DETAIL_MAX, "%s: line %d: %s", path, je.line, je.text);
        return AN_EINVAL;
    }
    int rc = 0;
    json_t *ps = json_object_get(root, "principals");
    struct srv_auth *a = calloc(1, sizeof(*a));
    if (!a) {
        json_decref(root);
        return AN_ENOMEM;
    }
    atomic_init(&a->refs, 1);
    if (!json_is_array(ps)) {
        snprintf(detail, LOG_DETAIL_MAX, "%s: want {\"principals\": [...]}", path);
        rc = AN_EINVAL;
        goto out;
    }
    a->p = calloc(json_array_size(ps) ? json_array_size(ps) : 1, sizeof(*a->p));
    if (!a->p) {
        rc = AN_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(ps); i++) {
        a->n++;
        if (principal_parse(json_array_get(ps, i), i, &a->p[i], detail)) {
            rc = AN_EINVAL;
            goto out;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(a->p[k].name, a->p[i].name) == 0) {
                snprintf(detail, LOG_DETAIL_MAX, "principals[%zu]: name '%.64s' appears twice",
                         i, a->p[i].name);
                rc = AN_EINVAL;
                goto out;
            }
        }
    }
out:
    json_decref(root);
    if (rc) {
        auth_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

struct srv_auth *srv_auth_get(struct srv *s)
{
    pthread_mutex_lock(&s->auth_mu);
    struct srv_auth *a = s->auth;
    if (a) {
        atomic_fetch_add(&a->refs, 1);
    }
    pthread_mutex_unlock(&s->auth_mu);
    return a;
}

int srv_auth_reload(struct srv *s)
{
    char detail[LOG_DETAIL_MAX] = "";
    struct srv_auth *a = NULL;
    if (!s->cfg.auth_file) {
        say_warn("auth", "msg=\"SIGHUP: no --auth file to reload\"");
        return 0;
    }
    int rc = srv_auth_load(s->cfg.auth_file, &a, detail);
    if (rc) {
        say_error("auth", "msg=\"auth file refused; the previous one stays\" err=%s detail=\"%s\"",
                  an_errname(rc), detail);
        return rc;
    }
    pthread_mutex_lock(&s->auth_mu);
    struct srv_auth *old = s->auth;
    s->auth = a;
    pthread_mutex_unlock(&s->auth_mu);
    srv_auth_unref(old);
    say_info("auth", "msg=\"auth file loaded\" file=%s principals=%zu", s->cfg.auth_file, a->n);
    return 0;
}

/* ---- identity ---- */

/* The principal whose token this is (by its SHA-256), or NULL. Every entry
 * is compared, so the time says nothing of which one matched. */
static const struct srv_principal *by_token(const struct srv_auth *a, const char *tok,
                                            size_t len)
{
    uint8_t h[32];
    unsigned hl = 0;
    const struct srv_principal *found = NULL;
    EVP_Digest(tok, len, h, &hl, EVP_sha256(), NULL);
    for (size_t i = 0; i < a->n; i++) {
        bool eq = a->p[i].has_token && CRYPTO_memcmp(a->p[i].token_hash, h, 32) == 0;
        if (eq && !found) {
            found = &a->p[i];
        }
    }
    return found;
}

/* The verified client certificate's name (mTLS) into out, or "". */
static void cert_name(grpc_call *call, char *out, size_t cap)
{
    static const char *const props[] = {GRPC_PEER_DNS_PROPERTY_NAME, GRPC_PEER_URI_PROPERTY_NAME,
                                        GRPC_X509_CN_PROPERTY_NAME};
    out[0] = '\0';
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx) {
        return;
    }
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]) && !out[0]; i++) {
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, props[i]);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p && p->value_length) {
            snprintf(out, cap, "%.*s", (int)p->value_length, p->value);
        }
    }
    grpc_auth_context_release(ctx);
}

/* The token of an "authorization: Bearer T" header, or NULL. */
static const grpc_slice *bearer(const grpc_metadata_array *md, size_t *off)
{
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "authorization") != 0) {
            continue;
        }
        const grpc_slice *v = &md->metadata[i].value;
        const char *p = (const char *)GRPC_SLICE_START_PTR(*v);
        size_t len = GRPC_SLICE_LENGTH(*v);
        if (len > 7 && strncasecmp(p, "Bearer ", 7) == 0) {
            *off = 7;
            return v;
        }
        *off = len; /* present but not a bearer token: an empty one */
        return v;
    }
    return NULL;
}

int srv_auth_identify(struct srv_call *c, char *detail)
{
    char cert[sizeof(c->principal)];
    cert_name(c->call, cert, sizeof(cert));
    return srv_auth_identify_as(c, cert, detail);
}

int srv_auth_identify_as(struct srv_call *c, const char *cert, char *detail)
{
    struct srv *s = c->srv;
    c->auth = srv_auth_get(s);
    if (!c->auth) {
        snprintf(c->principal, sizeof(c->principal), "%s", cert);
        return 0;
    }
    size_t off = 0;
    const grpc_slice *tok = bearer(&c->md, &off);
    const struct srv_principal *found = NULL;
    if (tok) {
        found = by_token(c->auth, (const char *)GRPC_SLICE_START_PTR(*tok) + off,
                         GRPC_SLICE_LENGTH(*tok) - off);
        if (!found) {
            snprintf(detail, LOG_DETAIL_MAX, "unknown token");
        }
    } else if (cert[0]) {
        for (size_t i = 0; i < c->auth->n && !found; i++) {
            if (strcmp(c->auth->p[i].name, cert) == 0) {
                found = &c->auth->p[i];
            }
        }
        if (!found) {
            char nm[80];
            log_percent_encode(nm, sizeof(nm), cert, strlen(cert));
            snprintf(detail, LOG_DETAIL_MAX,
                     "the client certificate's principal '%s' is not in the auth file", nm);
        }
    } else {
        snprintf(detail, LOG_DETAIL_MAX,
                 "authentication required: an 'authorization: Bearer TOKEN' header or a client "
                 "certificate");
    }
    if (!found) {
        return AN_EAUTH;
    }
    c->who = found;
    snprintf(c->principal, sizeof(c->principal), "%s", found->name);
    return 0;
}

/* ---- grants ---- */

bool srv_may_stream(const struct srv_call *c, enum srv_act act, const char *stream)
{
    if (!c->auth || c->who->admin) {
        return true;
    }
    const struct srv_principal *p = c->who;
    for (size_t i = 0; i < p->n_grants; i++) {
        const struct grant *g = &p->grants[i];
        if (g->kind != GK_STREAM || g->act != act || strncmp(stream, g->name, g->len) != 0) {
            continue;
        }
        if (stream[0] == '$' && (g->len == 0 || g->name[0] != '$')) {
            continue; /* '$' streams: explicit grants only */
        }
        return true;
    }
    return false;
}

bool srv_may_prefix(const struct srv_call *c, enum srv_act act, const char *prefix)
{
    if (!c->auth || c->who->admin) {
        return true;
    }
    if (!prefix[0]) {
        return false; /* every stream includes the '$' ones: admin only */
    }
    return srv_may_stream(c, act, prefix);
}

bool srv_may_named(const struct srv_call *c, enum srv_act act, const char *name)
{
    if (!c->auth || c->who->admin) {
        return true;
    }
    enum grant_kind kind = act == SRV_ACT_CONSUME ? GK_GROUP : GK_VIEW;
    const struct srv_principal *p = c->who;
    for (size_t i = 0; i < p->n_grants; i++) {
        const struct grant *g = &p->grants[i];
        if (g->kind == kind && g->act == act && (g->any || strcmp(g->name, name) == 0)) {
            return true;
        }
    }
    return false;
}

bool srv_may_admin(const struct srv_call *c)
{
    return !c->auth || c->who->admin;
}

/* ---- refusals ---- */

void srv_auth_refused(const char *principal, int code, const char *method,
                      const char *resource, const char *reason)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t window;
    static unsigned in_window;
    static unsigned suppressed;
    int64_t now = (int64_t)gpr_now(GPR_CLOCK_MONOTONIC).tv_sec;
    unsigned dropped = 0;
    bool say = false;
    pthread_mutex_lock(&mu);
    if (now != window) {
        window = now;
        in_window = 0;
    }
    if (in_window < REFUSALS_PER_S) {
        in_window++;
        say = true;
        dropped = suppressed;
        suppressed = 0;
    } else {
        suppressed++;
    }
    pthread_mutex_unlock(&mu);
    if (!say) {
        return;
    }
    char who[80];
    char res[160];
    log_percent_encode(who, sizeof(who), principal, strlen(principal));
    log_percent_encode(res, sizeof(res), resource ? resource : "", resource ? strlen(resource) : 0);
    say_warn("auth", "msg=\"refused\" status=%s principal=\"%s\" method=%s resource=\"%s\" "
             "reason=\"%s\" suppressed=%u",
             code == AN_EAUTH ? "UNAUTHENTICATED" : "PERMISSION_DENIED", who, method, res,
             reason, dropped);
}

/* ---- per method ---- */

/* PERMISSION_DENIED naming the missing grant. */
static int deny(struct srv_call *c, const char *method, const char *grant, const char *res,
                char *detail)
{
    char r[160];
    log_percent_encode(r, sizeof(r), res, strlen(res));
    snprintf(detail, LOG_DETAIL_MAX, "permission denied: needs grant '%s%s'", grant, r);
    srv_auth_refused(c->principal, AN_EPERM, method, res, "no grant");
    return AN_EPERM;
}

/* A ReadAll or all-streams Subscribe filter: read on every prefix. */
static int check_filter(struct srv_call *c, const char *method, const Annals__V1__Filter *f,
                        char *detail)
{
    size_t n = f ? f->n_stream_prefixes : 0;
    if (n == 0 && !srv_may_prefix(c, SRV_ACT_READ, "")) {
        snprintf(detail, LOG_DETAIL_MAX,
                 "permission denied: reading every stream includes the server-owned '$' ones "
                 "and needs 'admin'; give filter.stream_prefixes your read grants cover");
        srv_auth_refused(c->principal, AN_EPERM, method, "stream:", "every stream");
        return AN_EPERM;
    }
    for (size_t i = 0; i < n; i++) {
        if (!srv_may_prefix(c, SRV_ACT_READ, f->stream_prefixes[i])) {
            return deny(c, method, "read stream:", f->stream_prefixes[i], detail);
        }
    }
    return 0;
}

int srv_authorize(struct srv_call *c, char *detail)
{
    if (!c->auth) {
        return 0;
    }
    char *m = grpc_slice_to_c_string(c->details.method);
    const char *method = strrchr(m, '/') ? strrchr(m, '/') + 1 : m;
    int rc = 0;
    switch (c->method) {
    case SRV_M_APPEND: {
        Annals__V1__AppendRequest *r = (Annals__V1__AppendRequest *)c->req;
        rc = srv_authorize_append(c, r, detail);
        break;
    }
    case SRV_M_DELETE_STREAM: {
        Annals__V1__DeleteStreamRequest *r = (Annals__V1__DeleteStreamRequest *)c->req;
        if (!srv_may_stream(c, SRV_ACT_DELETE, r->stream)) {
            rc = deny(c, method, "delete stream:", r->stream, detail);
        }
        break;
    }
    case SRV_M_READ_STREAM: {
        Annals__V1__ReadStreamRequest *r = (Annals__V1__ReadStreamRequest *)c->req;
        if (!srv_may_stream(c, SRV_ACT_READ, r->stream)) {
            rc = deny(c, method, "read stream:", r->stream, detail);
        }
        break;
    }
    case SRV_M_GET_STREAM: {
        Annals__V1__GetStreamRequest *r = (Annals__V1__GetStreamRequest *)c->req;
        if (!srv_may_stream(c, SRV_ACT_READ, r->stream)) {
            rc = deny(c, method, "read stream:", r->stream, detail);
        }
        break;
    }
    case SRV_M_READ_ALL:
        rc = check_filter(c, method, ((Annals__V1__ReadAllRequest *)c->req)->filter, detail);
        break;
    case SRV_M_SUBSCRIBE: {
        Annals__V1__SubscribeRequest *r = (Annals__V1__SubscribeRequest *)c->req;
        if (r->stream && r->stream[0]) {
            if (!srv_may_stream(c, SRV_ACT_READ, r->stream)) {
                rc = deny(c, method, "read stream:", r->stream, detail);
            }
        } else {
            rc = check_filter(c, method, r->filter, detail);
        }
        break;
    }
    case SRV_M_GET_VIEW: {
        Annals__V1__GetViewRequest *r = (Annals__V1__GetViewRequest *)c->req;
        if (!srv_may_named(c, SRV_ACT_READ, r->view)) {
            rc = deny(c, method, "read view:", r->view, detail);
        }
        break;
    }
    case SRV_M_SCAN_VIEW: {
        Annals__V1__ScanViewRequest *r = (Annals__V1__ScanViewRequest *)c->req;
        if (!srv_may_named(c, SRV_ACT_READ, r->view)) {
            rc = deny(c, method, "read view:", r->view, detail);
        }
        break;
    }
    case SRV_M_GRP_GET:
        if (!srv_may_named(c, SRV_ACT_CONSUME,
                           ((Annals__V1__GetGroupRequest *)c->req)->name)) {
            rc = deny(c, method, "consume group:", ((Annals__V1__GetGroupRequest *)c->req)->name,
                      detail);
        }
        break;
    case SRV_M_PROJ_CREATE:
    case SRV_M_PROJ_LIST:
    case SRV_M_PROJ_GET:
    case SRV_M_PROJ_REBUILD:
    case SRV_M_PROJ_DELETE:
    case SRV_M_BACKUP:
    case SRV_M_GRP_CREATE:
    case SRV_M_GRP_LIST:
    case SRV_M_GRP_DELETE:
    case SRV_M_GRP_REPLAY:
        if (!srv_may_admin(c)) {
            rc = deny(c, method, "admin", "", detail);
        }
        break;
    case SRV_M_HEALTH_CHECK:
    case SRV_M_APPEND_STREAM:
    case SRV_M_CONSUME: /* srv_authorize_group at the join */
    case SRV_M_UNKNOWN:
        break;
    }
    gpr_free(m);
    return rc;
}

int srv_authorize_group(struct srv_call *c, const char *group, bool admin_only, char *detail)
{
    if (!c->auth) {
        return 0;
    }
    if (admin_only ? srv_may_admin(c) : srv_may_named(c, SRV_ACT_CONSUME, group)) {
        return 0;
    }
    char *m = grpc_slice_to_c_string(c->details.method);
    const char *method = strrchr(m, '/') ? strrchr(m, '/') + 1 : m;
    int rc = admin_only ? deny(c, method, "admin", "", detail)
                        : deny(c, method, "consume group:", group, detail);
    gpr_free(m);
    return rc;
}

int srv_authorize_append(struct srv_call *c, const Annals__V1__AppendRequest *r, char *detail)
{
    for (size_t i = 0; c->auth && r && i < r->n_streams; i++) {
        const char *st = r->streams[i] && r->streams[i]->stream ? r->streams[i]->stream : "";
        if (!srv_may_stream(c, SRV_ACT_WRITE, st)) {
            return deny(c, c->method == SRV_M_APPEND ? "Append" : "AppendStream",
                        "write stream:", st, detail);
        }
    }
    return 0;
}

int srv_auth_http(struct srv *s, const char *authorization, const char *url, char *detail)
{
    struct srv_auth *a = srv_auth_get(s);
    if (!a) {
        return 0;
    }
    const struct srv_principal *found = NULL;
    if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
        found = by_token(a, authorization + 7, strlen(authorization + 7));
    }
    int rc = 0;
    if (!found) {
        snprintf(detail, LOG_DETAIL_MAX,
                 "authentication required: 'Authorization: Bearer TOKEN' of an admin principal");
        srv_auth_refused("", AN_EAUTH, "http", url, "no known token");
        rc = AN_EAUTH;
    } else if (!found->admin) {
        snprintf(detail, LOG_DETAIL_MAX, "permission denied: needs grant 'admin'");
        srv_auth_refused(found->name, AN_EPERM, "http", url, "no grant");
        rc = AN_EPERM;
    }
    srv_auth_unref(a);
    return rc;
}

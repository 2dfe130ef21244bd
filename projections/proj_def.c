/*
 * proj_def.c - projection definitions: validation against projections.proto,
 * the compiled form the worker folds with, the packed form the catalog
 * stores (and compares, for idempotent Create), and RFC 6901 JSON Pointers.
 *
 * The rules (projections.proto is the spec): name 1..64 of [a-z0-9_-];
 * kind one of the four; `key` required for COUNT and INDEX, where it is
 * "$type", "$stream", "$category" or a non-empty JSON Pointer, and absent
 * for STREAM_STATE and STREAMS; `sum` only for COUNT, a non-empty pointer.
 * A pointer is "" or a sequence of '/'-prefixed reference tokens in which
 * '~' is always followed by '0' or '1'; the empty pointer (the whole
 * document) is not allowed here.
 */
#include "proj_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- validation ---- */

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PROJ_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

static bool pointer_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PROJ_POINTER_MAX || s[0] != '/') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '~' && (i + 1 == n || (s[i + 1] != '0' && s[i + 1] != '1'))) {
            return false;
        }
    }
    return log_utf8_valid(s, n);
}

static bool is_special_key(const char *k)
{
    return !strcmp(k, "$type") || !strcmp(k, "$stream") || !strcmp(k, "$category");
}

int proj_validate(const Annals__V1__ProjectionDefinition *def, char *detail)
{
    if (!def) {
        proj__detail(detail, "definition: missing");
        return AN_EINVAL;
    }
    const char *name = def->name ? def->name : "";
    if (!name_ok(name)) {
        proj__detail(detail, "name: must be 1..%u characters of [a-z0-9_-] (got %zu bytes)",
                     PROJ_NAME_MAX, strlen(name));
        return AN_EINVAL;
    }
    bool needs_key = false;
    switch (def->kind) {
    case ANNALS__V1__PROJECTION_KIND__COUNT:
    case ANNALS__V1__PROJECTION_KIND__INDEX:
        needs_key = true;
        break;
    case ANNALS__V1__PROJECTION_KIND__STREAM_STATE:
    case ANNALS__V1__PROJECTION_KIND__STREAMS:
        break;
    case ANNALS__V1__PROJECTION_KIND__PROJECTION_KIND_UNSPECIFIED:
    case _ANNALS__V1__PROJECTION_KIND_IS_INT_SIZE:
    default:
        proj__detail(detail, "kind: must be STREAM_STATE, COUNT, INDEX or STREAMS (got %d)",
                     (int)def->kind);
        return AN_EINVAL;
    }
    const char *key = def->key ? def->key : "";
    if (needs_key && !key[0]) {
        proj__detail(detail, "key: required for COUNT and INDEX");
        return AN_EINVAL;
    }
    if (!needs_key && key[0]) {
        proj__detail(detail, "key: must be empty for STREAM_STATE and STREAMS");
        return AN_EINVAL;
    }
    if (needs_key && !is_special_key(key) && !pointer_ok(key)) {
        proj__detail(detail,
                     "key: must be \"$type\", \"$stream\", \"$category\" or a non-empty "
                     "JSON Pointer (RFC 6901, at most %u bytes) such as \"/customer/id\"",
                     PROJ_POINTER_MAX);
        return AN_EINVAL;
    }
    const char *sum = def->sum ? def->sum : "";
    if (sum[0] && def->kind != ANNALS__V1__PROJECTION_KIND__COUNT) {
        proj__detail(detail, "sum: allowed only for COUNT");
        return AN_EINVAL;
    }
    if (sum[0] && !pointer_ok(sum)) {
        proj__detail(detail,
                     "sum: must be a non-empty JSON Pointer (RFC 6901, at most %u bytes) "
                     "such as \"/total\"",
                     PROJ_POINTER_MAX);
        return AN_EINVAL;
    }
    const Annals__V1__Filter *f = def->filter;
    if (f) {
        if (f->n_stream_prefixes > PROJ_FILTER_MAX) {
            proj__detail(detail, "filter.stream_prefixes: %zu entries > limit %u",
                         f->n_stream_prefixes, PROJ_FILTER_MAX);
            return AN_EINVAL;
        }
        if (f->n_event_types > PROJ_FILTER_MAX) {
            proj__detail(detail, "filter.event_types: %zu entries > limit %u",
                         f->n_event_types, PROJ_FILTER_MAX);
            return AN_EINVAL;
        }
        for (size_t i = 0; i < f->n_stream_prefixes; i++) {
            if (strlen(f->stream_prefixes[i]) > LOG_NAME_MAX) {
                proj__detail(detail, "filter.stream_prefixes[%zu]: longer than %u bytes", i,
                             LOG_NAME_MAX);
                return AN_EINVAL;
            }
        }
        for (size_t i = 0; i < f->n_event_types; i++) {
            if (strlen(f->event_types[i]) > LOG_NAME_MAX) {
                proj__detail(detail, "filter.event_types[%zu]: longer than %u bytes", i,
                             LOG_NAME_MAX);
                return AN_EINVAL;
            }
        }
    }
    return 0;
}

/* ---- the compiled form ---- */

void proj__compile(const Annals__V1__ProjectionDefinition *def, struct proj__def *cd)
{
    memset(cd, 0, sizeof(*cd));
    cd->kind = def->kind;
    cd->latest_only = def->latest_only;
    const char *key = def->key ? def->key : "";
    if (!strcmp(key, "$type")) {
        cd->key_mode = PROJ__KEY_TYPE;
    } else if (!strcmp(key, "$stream")) {
        cd->key_mode = PROJ__KEY_STREAM;
    } else if (!strcmp(key, "$category")) {
        cd->key_mode = PROJ__KEY_CATEGORY;
    } else if (key[0]) {
        cd->key_mode = PROJ__KEY_POINTER;
        cd->key_ptr = key;
    }
    cd->sum_ptr = def->sum && def->sum[0] ? def->sum : NULL;
    if (def->filter) {
        cd->filter.stream_prefixes = (const char *const *)def->filter->stream_prefixes;
        cd->filter.n_stream_prefixes = def->filter->n_stream_prefixes;
        cd->filter.event_types = (const char *const *)def->filter->event_types;
        cd->filter.n_event_types = def->filter->n_event_types;
        for (size_t i = 0; i < cd->filter.n_stream_prefixes; i++) {
            if (cd->filter.stream_prefixes[i][0] == '$') {
                cd->dollar_prefix = true;
            }
        }
    }
}

int proj__def_pack(const Annals__V1__ProjectionDefinition *def, uint8_t **out,
                   size_t *len_out)
{
    /* Rebuilt field by field so unknown fields never reach the catalog and
     * two equal definitions pack to the same bytes. */
    Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
    Annals__V1__Filter f = ANNALS__V1__FILTER__INIT;
    d.name = def->name;
    d.kind = def->kind;
    d.key = def->key;
    d.sum = def->sum;
    d.latest_only = def->latest_only;
    if (def->filter && (def->filter->n_stream_prefixes || def->filter->n_event_types)) {
        f.n_stream_prefixes = def->filter->n_stream_prefixes;
        f.stream_prefixes = def->filter->stream_prefixes;
        f.n_event_types = def->filter->n_event_types;
        f.event_types = def->filter->event_types;
        d.filter = &f;
    }
    size_t n = annals__v1__projection_definition__get_packed_size(&d);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        return AN_ENOMEM;
    }
    annals__v1__projection_definition__pack(&d, buf);
    *out = buf;
    *len_out = n;
    return 0;
}

/* ---- JSON Pointer ---- */

/* An array index token: "0" or digits without a leading zero. */
static bool array_index(const char *tok, size_t len, size_t *out)
{
    if (len == 0 || len > 18 || (len > 1 && tok[0] == '0')) {
        return false;
    }
    size_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9') {
            return false;
        }
        v = v * 10 + (size_t)(tok[i] - '0');
    }
    *out = v;
    return true;
}

json_t *proj__pointer_get(json_t *doc, const char *ptr)
{
    char tok[PROJ_POINTER_MAX + 1];
    const char *p = ptr;
    json_t *cur = doc;
    assert(p[0] == '/');
    while (cur && *p == '/') {
        p++;
        size_t n = 0;
        /* unescape: ~1 is '/', ~0 is '~' (validated at create) */
        while (*p && *p != '/') {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
                tok[n++] = p[1] == '1' ? '/' : '~';
                p += 2;
            } else {
                tok[n++] = *p++;
            }
        }
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok, n);
        } else if (json_is_array(cur)) {
            size_t i;
            cur = array_index(tok, n, &i) ? json_array_get(cur, i) : NULL;
        } else {
            cur = NULL;
        }
    }
    return cur;
}

/*
 * proj_fixture.c - the projection tests' fixture: a log and a manager in a
 * temp dir, appends that notify, definitions, reads, and the model: an
 * independent fold of the log into the view each definition should hold.
 * See proj_fixture.h.
 */
#include "proj_fixture.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pfx pfx;

/* ---- the manager ---- */

static void say_stderr(void *arg, enum proj_log_level level, const char *line)
{
    (void)arg;
    if (level >= PROJ_LOG_WARN || getenv("PROJ_TEST_VERBOSE")) {
        fprintf(stderr, "proj lvl=%d %s\n", (int)level, line);
    }
}

void pfx_open(const struct proj_cfg *cfg)
{
    char detail[PROJ_DETAIL_MAX] = "";
    pfx.cfg = *cfg;
    snprintf(pfx.dir, sizeof(pfx.dir), "%s/projections", fx.dir);
    pfx.cfg.dir = pfx.dir;
    if (!pfx.cfg.log) {
        pfx.cfg.log = say_stderr;
    }
    int rc = proj_open(&pfx.cfg, fx.env, &pfx.mgr, detail);
    cr_assert_eq(rc, 0, "proj_open = %s: %s", an_errname(rc), detail);
}

void pfx_close(void)
{
    proj_close(pfx.mgr);
    pfx.mgr = NULL;
}

void pfx_setup(void)
{
    struct proj_cfg cfg = {0};
    fx_setup();
    memset(&pfx, 0, sizeof(pfx));
    pfx_open(&cfg);
}

void pfx_teardown(void)
{
    pfx_close();
    fx_teardown();
}

/* ---- appending ---- */

uint64_t pfx_append(const char *stream, const char *type, const char *data)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *s = rq_stream(r, stream, FX_EXPECT_ANY, 0);
    rq_event(s, type, 0, data);
    struct fx_op o;
    fx_op_append(&o, r);
    o.op.allow_reserved = true;
    fx_commit(&o, 1);
    cr_assert_eq(o.op.rc, 0, "append: %s", o.op.detail);
    rq_free(r);
    proj_notify(pfx.mgr, log_head(fx.env));
    return o.op.first_position;
}

static const char *const STREAMS[] = {"acct-1", "acct-2", "acct-3", "order-1",
                                      "order-2", "cart",   "$sys"};
static const char *const TYPES[] = {"Opened", "Deposited", "Closed", "Tagged"};

const char *pfx_random_data(unsigned *seed, char *buf, size_t cap)
{
    int r = rand_r(seed) % 10;
    int a = rand_r(seed) % 100 - 20;
    int u = rand_r(seed) % 4;
    switch (r) {
    case 0:
        return "not json";
    case 1:
        return "[1, 2]";
    case 2:
        snprintf(buf, cap, "{\"amount\": %d.5, \"owner\": {\"id\": \"u%d\"}}", a, u);
        return buf;
    case 3:
        snprintf(buf, cap, "{\"owner\": {\"id\": %d, \"name\": null}, \"note\": null}", u);
        return buf;
    case 4:
        snprintf(buf, cap, "{\"owner\": null, \"flag\": %s}", a % 2 ? "true" : "false");
        return buf;
    case 5:
        return "{}";
    case 6:
        snprintf(buf, cap, "{\"amount\": \"%d\", \"owner\": {\"name\": \"n%d\"}}", a, u);
        return buf;
    default:
        snprintf(buf, cap, "{\"amount\": %d, \"owner\": {\"id\": \"u%d\", \"a\": [%d]}}", a,
                 u, a);
        return buf;
    }
}

void pfx_append_random(size_t n, unsigned *seed)
{
    Annals__V1__AppendRequest **reqs = calloc(n, sizeof(*reqs));
    struct fx_op *ops = calloc(n, sizeof(*ops));
    char buf[256];
    cr_assert(reqs && ops);
    for (size_t i = 0; i < n; i++) {
        const char *st = STREAMS[rand_r(seed) % 7];
        const char *ty = TYPES[rand_r(seed) % 4];
        reqs[i] = rq_new();
        Annals__V1__StreamAppend *s = rq_stream(reqs[i], st, FX_EXPECT_ANY, 0);
        rq_event(s, ty, 0, pfx_random_data(seed, buf, sizeof(buf)));
        fx_op_append(&ops[i], reqs[i]);
        ops[i].op.allow_reserved = true;
    }
    fx_commit(ops, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(ops[i].op.rc, 0, "append: %s", ops[i].op.detail);
        rq_free(reqs[i]);
    }
    free(reqs);
    free(ops);
    proj_notify(pfx.mgr, log_head(fx.env));
}

/* ---- definitions ---- */

void pdef_init(struct pdef *p, const char *name, Annals__V1__ProjectionKind kind,
               const char *key, const char *sum, bool latest_only)
{
    memset(p, 0, sizeof(*p));
    p->d = (Annals__V1__ProjectionDefinition)ANNALS__V1__PROJECTION_DEFINITION__INIT;
    p->f = (Annals__V1__Filter)ANNALS__V1__FILTER__INIT;
    p->d.name = (char *)name;
    p->d.kind = kind;
    p->d.key = (char *)(key ? key : "");
    p->d.sum = (char *)(sum ? sum : "");
    p->d.latest_only = latest_only;
    p->f.stream_prefixes = p->prefixes;
    p->f.event_types = p->types;
    p->d.filter = &p->f;
}

void pdef_prefix(struct pdef *p, const char *prefix)
{
    p->prefixes[p->f.n_stream_prefixes++] = (char *)prefix;
}

void pdef_type(struct pdef *p, const char *type)
{
    p->types[p->f.n_event_types++] = (char *)type;
}

void pfx_create(struct pdef *p)
{
    char detail[PROJ_DETAIL_MAX] = "";
    Annals__V1__ProjectionStatus *st = NULL;
    int rc = proj_create(pfx.mgr, &p->d, &st, detail);
    cr_assert_eq(rc, 0, "proj_create(%s) = %s: %s", p->d.name, an_errname(rc), detail);
    cr_assert_not_null(st);
    proj_status_free(st);
}

/* ---- reading ---- */

void pfx_wait(const char *view, uint64_t pos)
{
    Annals__V1__ViewEntry *e = NULL;
    struct proj_read q = {.min_position = pos, .deadline_ns = proj_deadline_after(30000000000)};
    int rc = proj_get(pfx.mgr, view, "", 0, &q, &e);
    cr_assert_eq(rc, 0, "waiting for %s to reach %" PRIu64 ": %s", view, pos, an_errname(rc));
    proj_entry_free(e);
}

int pfx_get(const char *view, const char *key, uint64_t as_of, Annals__V1__ViewEntry **out)
{
    struct proj_read q = {
        .has_as_of = as_of != UINT64_MAX,
        .as_of = as_of,
        .deadline_ns = proj_deadline_after(30000000000),
    };
    return proj_get(pfx.mgr, view, key, strlen(key), &q, out);
}

static bool scan_collect(void *arg, const Annals__V1__ViewEntry *e)
{
    json_t *obj = arg;
    json_t *v = json_loadb((const char *)e->value.data, e->value.len, JSON_DECODE_ANY, NULL);
    if (!v) {
        v = json_string("<not json>");
    }
    json_object_set_new(obj, e->key, json_pack("[o,I]", v, (json_int_t)e->position));
    return true;
}

json_t *pfx_scan_all(const char *view, uint64_t as_of)
{
    json_t *obj = json_object();
    struct proj_scan q = {
        .read = {.has_as_of = as_of != UINT64_MAX, .as_of = as_of,
                 .deadline_ns = proj_deadline_after(30000000000)},
    };
    bool more = true;
    int rc = proj_scan(pfx.mgr, view, &q, scan_collect, obj, NULL, &more);
    cr_assert_eq(rc, 0, "proj_scan(%s) = %s", view, an_errname(rc));
    cr_assert(!more);
    return obj;
}

Annals__V1__ProjectionStatus *pfx_status(const char *view)
{
    Annals__V1__ProjectionStatus *st = NULL;
    int rc = proj_status(pfx.mgr, view, &st);
    cr_assert_eq(rc, 0, "proj_status(%s) = %s", view, an_errname(rc));
    return st;
}

/* ---- the model ---- */

void pm_load(struct fx_evs *out)
{
    memset(out, 0, sizeof(*out));
    fx_read_everything(out);
}

/* RFC 7396, written from the RFC's pseudo code (returns a new reference). */
static json_t *model_merge(json_t *target, json_t *patch)
{
    if (!json_is_object(patch)) {
        return json_deep_copy(patch);
    }
    json_t *out = json_is_object(target) ? json_deep_copy(target) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v) {
        if (json_is_null(v)) {
            json_object_del(out, k);
        } else {
            json_object_set_new(out, k, model_merge(json_object_get(out, k), v));
        }
    }
    return out;
}

static bool selected(const Annals__V1__ProjectionDefinition *d, const char *stream,
                     const char *type)
{
    const Annals__V1__Filter *f = d->filter;
    size_t np = f ? f->n_stream_prefixes : 0;
    size_t nt = f ? f->n_event_types : 0;
    bool by_prefix = np == 0 && stream[0] != '$';
    for (size_t i = 0; i < np; i++) {
        const char *p = f->stream_prefixes[i];
        if (!strncmp(stream, p, strlen(p)) && (stream[0] != '$' || p[0] == '$')) {
            by_prefix = true;
        }
    }
    bool by_type = nt == 0;
    for (size_t i = 0; i < nt; i++) {
        by_type |= !strcmp(type, f->event_types[i]);
    }
    return by_prefix && by_type;
}

/* The key of an event for COUNT/INDEX into buf; false: none. */
static bool model_key(const char *key, const Annals__V1__RecordedEvent *r, json_t *doc,
                      char *buf, size_t cap)
{
    if (!strcmp(key, "$type")) {
        snprintf(buf, cap, "%s", r->type);
        return true;
    }
    if (!strcmp(key, "$stream")) {
        snprintf(buf, cap, "%s", r->stream);
        return true;
    }
    if (!strcmp(key, "$category")) {
        snprintf(buf, cap, "%.*s", (int)strcspn(r->stream, "-"), r->stream);
        return true;
    }
    /* the tests use pointers of plain tokens: "/a/b" */
    json_t *v = doc;
    char tok[64];
    const char *p = key;
    while (v && *p == '/') {
        size_t n = strcspn(p + 1, "/");
        snprintf(tok, sizeof(tok), "%.*s", (int)n, p + 1);
        v = json_is_object(v) ? json_object_get(v, tok) : NULL;
        p += 1 + n;
    }
    if (json_is_string(v)) {
        snprintf(buf, cap, "%s", json_string_value(v));
        return true;
    }
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return true;
    }
    if (json_is_boolean(v)) {
        snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
        return true;
    }
    if (json_is_real(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(buf, cap, "%s", s);
        free(s);
        return true;
    }
    return false;
}

static json_t *model_pointer(json_t *doc, const char *ptr)
{
    json_t *v = doc;
    char tok[64];
    const char *p = ptr;
    while (v && *p == '/') {
        size_t n = strcspn(p + 1, "/");
        snprintf(tok, sizeof(tok), "%.*s", (int)n, p + 1);
        v = json_is_object(v) ? json_object_get(v, tok) : NULL;
        p += 1 + n;
    }
    return v;
}

json_t *pm_fold(const struct fx_evs *log, const Annals__V1__ProjectionDefinition *d,
                uint64_t upto)
{
    json_t *m = json_object();
    char key[512];
    for (size_t i = 0; i < log->n && log->v[i].position <= upto; i++) {
        const Annals__V1__RecordedEvent *r = log->v[i].rec;
        if (!selected(d, r->stream, r->type)) {
            continue;
        }
        json_t *doc = r->data.len ? json_loadb((const char *)r->data.data, r->data.len,
                                               JSON_DECODE_ANY, NULL)
                                  : NULL;
        json_t *prev_entry = NULL;
        json_t *val = NULL;
        switch (d->kind) {
        case ANNALS__V1__PROJECTION_KIND__STREAM_STATE:
            if (json_is_object(doc)) {
                snprintf(key, sizeof(key), "%s", r->stream);
                prev_entry = json_object_get(m, key);
                val = model_merge(prev_entry ? json_array_get(prev_entry, 0) : NULL, doc);
            }
            break;
        case ANNALS__V1__PROJECTION_KIND__COUNT:
            if (model_key(d->key, r, doc, key, sizeof(key))) {
                prev_entry = json_object_get(m, key);
                json_t *pv = prev_entry ? json_array_get(prev_entry, 0) : NULL;
                json_int_t c = pv ? json_integer_value(json_object_get(pv, "count")) : 0;
                val = json_pack("{s:I}", "count", c + 1);
                if (d->sum[0]) {
                    json_t *ps = pv ? json_object_get(pv, "sum") : NULL;
                    json_t *add = model_pointer(doc, d->sum);
                    json_t *s;
                    if (json_is_real(ps) || json_is_real(add)) {
                        s = json_real(json_number_value(ps) +
                                      (json_is_number(add) ? json_number_value(add) : 0));
                    } else {
                        s = json_integer(json_integer_value(ps) +
                                         (json_is_integer(add) ? json_integer_value(add) : 0));
                    }
                    json_object_set_new(val, "sum", s);
                }
            }
            break;
        case ANNALS__V1__PROJECTION_KIND__INDEX:
            if (model_key(d->key, r, doc, key, sizeof(key))) {
                val = json_pack("{s:s,s:I,s:I}", "stream", r->stream, "version",
                                (json_int_t)r->stream_version, "position",
                                (json_int_t)r->global_position);
            }
            break;
        case ANNALS__V1__PROJECTION_KIND__STREAMS: {
            snprintf(key, sizeof(key), "%s", r->stream);
            prev_entry = json_object_get(m, key);
            json_t *pv = prev_entry ? json_array_get(prev_entry, 0) : NULL;
            json_int_t c = pv ? json_integer_value(json_object_get(pv, "event_count")) : 0;
            val = json_pack("{s:I,s:I,s:I}", "last_version", (json_int_t)r->stream_version,
                            "event_count", c + 1, "last_position",
                            (json_int_t)r->global_position);
            break;
        }
        case ANNALS__V1__PROJECTION_KIND__PROJECTION_KIND_UNSPECIFIED:
        case _ANNALS__V1__PROJECTION_KIND_IS_INT_SIZE:
            cr_assert_fail("bad kind");
        }
        if (val) {
            json_object_set_new(m, key, json_pack("[o,I]", val, (json_int_t)r->global_position));
        }
        json_decref(doc);
    }
    return m;
}

void pm_assert_equal(json_t *view, json_t *model, const char *what)
{
    const char *k;
    json_t *v;
    json_object_foreach(model, k, v) {
        json_t *got = json_object_get(view, k);
        if (!json_equal(got, v)) {
            char *a = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            char *b = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("(none)");
            cr_assert_fail("%s: key '%s': want %s, view has %s", what, k, a, b);
        }
    }
    json_object_foreach(view, k, v) {
        if (!json_object_get(model, k)) {
            char *b = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            cr_assert_fail("%s: key '%s' in the view, not in the model: %s", what, k, b);
        }
    }
}

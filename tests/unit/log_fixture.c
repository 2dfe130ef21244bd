/*
 * log_fixture.c - the shared test fixture for the log engine's tests: a real
 * env in a mkdtemp directory, request builders over the protobuf-c structs,
 * single-op commits with asserted rc, and readers that unpack what the
 * engine hands to callbacks. See log_fixture.h.
 */
#include "log_fixture.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fx fx;

/* ---- the env ---- */

void fx_rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    struct dirent *de;
    char path[512];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            fx_rm_rf(path);
        } else {
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

void fx_open_cfg(const struct log_cfg *cfg)
{
    char detail[LOG_DETAIL_MAX] = "";
    if (!fx.dir[0]) {
        strcpy(fx.dir, "/tmp/annals-test-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp failed");
    }
    fx.cfg = *cfg;
    fx.cfg.dir = fx.dir;
    int rc = log_open(&fx.cfg, &fx.env, detail);
    cr_assert_eq(rc, 0, "log_open(%s) = %s: %s", fx.dir, an_errname(rc), detail);
    rc = log_reader_open(fx.env, &fx.rd);
    cr_assert_eq(rc, 0, "log_reader_open = %s", an_errname(rc));
}

void fx_setup(void)
{
    struct log_cfg cfg = {0};
    memset(&fx, 0, sizeof(fx));
    fx_open_cfg(&cfg);
}

void fx_close(void)
{
    log_reader_close(fx.rd);
    fx.rd = NULL;
    log_close(fx.env);
    fx.env = NULL;
}

void fx_fresh(const struct log_cfg *cfg)
{
    struct log_cfg copy = *cfg;
    fx_teardown();
    fx_open_cfg(&copy);
}

void fx_reopen(void)
{
    struct log_cfg cfg = fx.cfg;
    fx_close();
    fx_open_cfg(&cfg);
}

void fx_teardown(void)
{
    fx_close();
    if (fx.dir[0]) {
        fx_rm_rf(fx.dir);
        fx.dir[0] = '\0';
    }
}

/* ---- building requests ---- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    cr_assert_not_null(p, "out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

Annals__V1__AppendRequest *rq_new(void)
{
    Annals__V1__AppendRequest *r = xmalloc(sizeof(*r));
    *r = (Annals__V1__AppendRequest)ANNALS__V1__APPEND_REQUEST__INIT;
    return r;
}

Annals__V1__StreamAppend *rq_stream_n(Annals__V1__AppendRequest *r, const char *name,
                                      size_t len)
{
    Annals__V1__StreamAppend *s = xmalloc(sizeof(*s));
    *s = (Annals__V1__StreamAppend)ANNALS__V1__STREAM_APPEND__INIT;
    s->stream = xstrndup(name, len);
    r->streams = realloc(r->streams, (r->n_streams + 1) * sizeof(*r->streams));
    cr_assert_not_null(r->streams);
    r->streams[r->n_streams++] = s;
    return s;
}

Annals__V1__StreamAppend *rq_stream(Annals__V1__AppendRequest *r, const char *name,
                                    Annals__V1__Expectation expect, uint64_t version)
{
    Annals__V1__StreamAppend *s = rq_stream_n(r, name, strlen(name));
    s->expect = expect;
    s->expected_version = version;
    return s;
}

void fx_id(uint8_t out[16], uint64_t seed)
{
    /* splitmix64 twice: distinct seeds give distinct ids */
    uint64_t x = seed;
    for (int half = 0; half < 2; half++) {
        x += 0x9e3779b97f4a7c15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        memcpy(out + 8 * half, &z, 8);
    }
    memcpy(out, &seed, 8); /* keeps them unique whatever the mixing does */
}

void fx_pattern(uint8_t *out, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (uint8_t)x;
    }
}

void rq_set_id(Annals__V1__EventData *e, const uint8_t *id, size_t len)
{
    free(e->id.data);
    e->id.data = NULL;
    e->id.len = 0;
    if (len) {
        e->id.data = xmalloc(len);
        memcpy(e->id.data, id, len);
        e->id.len = len;
    }
}

void rq_set_type(Annals__V1__EventData *e, const char *type, size_t len)
{
    free(e->type);
    e->type = xstrndup(type, len);
}

void rq_set_data(Annals__V1__EventData *e, size_t n, uint64_t seed)
{
    free(e->data.data);
    e->data.data = xmalloc(n);
    e->data.len = n;
    fx_pattern(e->data.data, n, seed);
}

Annals__V1__EventData *rq_event(Annals__V1__StreamAppend *s, const char *type,
                                uint64_t id_seed, const char *data)
{
    Annals__V1__EventData *e = xmalloc(sizeof(*e));
    *e = (Annals__V1__EventData)ANNALS__V1__EVENT_DATA__INIT;
    e->type = xstrndup(type, strlen(type));
    e->content_type = xstrndup("application/json", 16);
    if (id_seed) {
        uint8_t id[16];
        fx_id(id, id_seed);
        rq_set_id(e, id, 16);
    }
    if (data) {
        size_t n = strlen(data);
        e->data.data = xmalloc(n);
        memcpy(e->data.data, data, n);
        e->data.len = n;
    }
    s->events = realloc(s->events, (s->n_events + 1) * sizeof(*s->events));
    cr_assert_not_null(s->events);
    s->events[s->n_events++] = e;
    return e;
}

void rq_free(Annals__V1__AppendRequest *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n_streams; i++) {
        Annals__V1__StreamAppend *s = r->streams[i];
        for (size_t j = 0; j < s->n_events; j++) {
            Annals__V1__EventData *e = s->events[j];
            free(e->id.data);
            free(e->type);
            free(e->content_type);
            free(e->data.data);
            free(e->metadata.data);
            free(e);
        }
        free(s->events);
        free(s->stream);
        free(s);
    }
    free(r->streams);
    free(r);
}

Annals__V1__AppendRequest *rq_simple(const char *stream, Annals__V1__Expectation expect,
                                     uint64_t version, size_t n, const char *type,
                                     uint64_t seed0)
{
    Annals__V1__AppendRequest *r = rq_new();
    Annals__V1__StreamAppend *s = rq_stream(r, stream, expect, version);
    for (size_t i = 0; i < n; i++) {
        rq_event(s, type, seed0 ? seed0 + i : 0, "{}");
    }
    return r;
}

/* ---- committing ---- */

void fx_op_append(struct fx_op *o, const Annals__V1__AppendRequest *req)
{
    memset(o, 0, sizeof(*o));
    cr_assert(req->n_streams <= FX_MAX_STREAMS, "fixture holds %d streams", FX_MAX_STREAMS);
    o->op.kind = LOG_OP_APPEND;
    o->op.append = req;
    o->op.principal = "tester";
    o->op.streams = o->sr;
    o->op.rc = 12345; /* must be overwritten */
}

void fx_op_delete(struct fx_op *o, const Annals__V1__DeleteStreamRequest *del)
{
    memset(o, 0, sizeof(*o));
    o->op.kind = LOG_OP_DELETE;
    o->op.del = del;
    o->op.principal = "tester";
    o->op.rc = 12345;
}

uint64_t fx_commit(struct fx_op *ops, size_t n)
{
    struct log_op *arr = xmalloc(n * sizeof(*arr));
    for (size_t i = 0; i < n; i++) {
        arr[i] = ops[i].op;
        arr[i].streams = ops[i].sr;
    }
    uint64_t seq = 0;
    int rc = log_commit(fx.env, arr, n, &seq);
    for (size_t i = 0; i < n; i++) {
        ops[i].op = arr[i];
        ops[i].op.streams = ops[i].sr;
    }
    free(arr);
    cr_assert_eq(rc, 0, "log_commit = %s", an_errname(rc));
    rc = log_sync(fx.env);
    cr_assert_eq(rc, 0, "log_sync = %s", an_errname(rc));
    return seq;
}

int fx_append(const Annals__V1__AppendRequest *req, struct fx_op *o, int want_rc)
{
    fx_op_append(o, req);
    fx_commit(o, 1);
    cr_assert_eq(o->op.rc, want_rc, "append rc = %s (%d), want %s; detail: %s",
                 an_errname(o->op.rc), o->op.rc, an_errname(want_rc), o->op.detail);
    return o->op.rc;
}

uint64_t fx_put(const char *stream, size_t n, const char *type)
{
    Annals__V1__AppendRequest *r = rq_simple(stream, FX_EXPECT_ANY, 0, n, type, 0);
    struct fx_op o;
    fx_append(r, &o, 0);
    rq_free(r);
    cr_assert_eq(o.op.last_position - o.op.first_position + 1, n);
    return o.op.first_position;
}

int fx_delete(const char *stream, bool tombstone, Annals__V1__Expectation expect,
              uint64_t version, struct fx_op *o, int want_rc)
{
    Annals__V1__DeleteStreamRequest d = ANNALS__V1__DELETE_STREAM_REQUEST__INIT;
    d.stream = (char *)stream;
    d.expect = expect;
    d.expected_version = version;
    d.tombstone = tombstone;
    fx_op_delete(o, &d);
    fx_commit(o, 1);
    o->op.del = NULL; /* d dies here */
    cr_assert_eq(o->op.rc, want_rc, "delete(%s) rc = %s (%d), want %s; detail: %s", stream,
                 an_errname(o->op.rc), o->op.rc, an_errname(want_rc), o->op.detail);
    return o->op.rc;
}

/* ---- reading ---- */

static bool fail_ev(struct fx_evs *e, const char *why, const struct log_event *ev)
{
    if (!e->bad) {
        e->bad = 1;
        snprintf(e->why, sizeof(e->why), "event at position %llu: %s",
                 (unsigned long long)ev->position, why);
    }
    return false;
}

bool fx_collect(void *arg, const struct log_event *ev)
{
    struct fx_evs *e = arg;
    Annals__V1__RecordedEvent *rec =
        annals__v1__recorded_event__unpack(NULL, ev->packed_len, ev->packed);
    if (!rec) {
        return fail_ev(e, "packed bytes do not unpack", ev);
    }
    const char *why = NULL;
    if (rec->global_position != ev->position) {
        why = "global_position differs from log_event.position";
    } else if (rec->stream_version != ev->version) {
        why = "stream_version differs from log_event.version";
    } else if (rec->recorded_at_unix_nanos != ev->recorded_at_ns) {
        why = "recorded_at differs from log_event.recorded_at_ns";
    } else if (strlen(rec->stream) != ev->stream_len ||
               memcmp(rec->stream, ev->stream, ev->stream_len) != 0) {
        why = "stream differs from log_event.stream";
    } else if (strlen(rec->type) != ev->type_len ||
               memcmp(rec->type, ev->type, ev->type_len) != 0) {
        why = "type differs from log_event.type";
    }
    if (why) {
        annals__v1__recorded_event__free_unpacked(rec, NULL);
        return fail_ev(e, why, ev);
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 16;
        e->v = realloc(e->v, e->cap * sizeof(*e->v));
        if (!e->v) {
            annals__v1__recorded_event__free_unpacked(rec, NULL);
            return fail_ev(e, "out of memory", ev);
        }
    }
    e->v[e->n++] = (struct fx_ev){
        .position = ev->position,
        .version = ev->version,
        .recorded_at_ns = ev->recorded_at_ns,
        .rec = rec,
    };
    return !(e->stop_after && e->n >= e->stop_after);
}

void fx_evs_free(struct fx_evs *e)
{
    for (size_t i = 0; i < e->n; i++) {
        annals__v1__recorded_event__free_unpacked(e->v[i].rec, NULL);
    }
    free(e->v);
    e->v = NULL;
    e->n = e->cap = 0;
}

static void begin(void)
{
    int rc = log_reader_begin(fx.rd);
    cr_assert_eq(rc, 0, "log_reader_begin = %s", an_errname(rc));
}

int fx_read_stream(struct log_stream_read q, struct fx_evs *out, uint64_t *next_version,
                   bool *done)
{
    begin();
    if (q.as_of == FX_HEAD) {
        q.as_of = log_reader_head(fx.rd);
    }
    int rc = log_read_stream(fx.rd, &q, fx_collect, out, next_version, done);
    log_reader_end(fx.rd);
    cr_assert(!out->bad, "read_stream(%s): %s", q.stream, out->why);
    return rc;
}

int fx_read_all(struct log_all_read q, struct fx_evs *out, uint64_t *next_position, bool *done)
{
    begin();
    if (q.as_of == FX_HEAD) {
        q.as_of = log_reader_head(fx.rd);
    }
    int rc = log_read_all(fx.rd, &q, fx_collect, out, next_position, done);
    log_reader_end(fx.rd);
    cr_assert(!out->bad, "read_all: %s", out->why);
    return rc;
}

int fx_get_stream(const char *stream, uint64_t as_of, struct log_stream_info *out)
{
    begin();
    if (as_of == FX_HEAD) {
        as_of = log_reader_head(fx.rd);
    }
    int rc = log_get_stream(fx.rd, stream, as_of, out);
    log_reader_end(fx.rd);
    return rc;
}

Annals__V1__RecordedEvent *fx_get_event(uint64_t position, int *rc_out)
{
    struct log_event ev;
    Annals__V1__RecordedEvent *rec = NULL;
    begin();
    int rc = log_get_event(fx.rd, position, &ev);
    if (rc == 0) {
        rec = annals__v1__recorded_event__unpack(NULL, ev.packed_len, ev.packed);
        cr_assert_not_null(rec, "event at %llu does not unpack", (unsigned long long)position);
        cr_assert_eq(ev.position, position);
        cr_assert_eq(rec->global_position, position);
        cr_assert_eq(rec->stream_version, ev.version);
        cr_assert_eq(rec->recorded_at_unix_nanos, ev.recorded_at_ns);
    }
    log_reader_end(fx.rd);
    if (rc_out) {
        *rc_out = rc;
    }
    return rec;
}

void fx_read_everything(struct fx_evs *out)
{
    uint64_t next = 0;
    bool done = false;
    int rc = fx_read_all((struct log_all_read){.from_position = 1, .as_of = FX_HEAD}, out,
                         &next, &done);
    cr_assert_eq(rc, 0, "read_all = %s", an_errname(rc));
    cr_assert(done, "read_all without limits did not report done");
    uint64_t head = log_head(fx.env);
    cr_assert_eq(out->n, head, "read_all gave %zu events, head is %llu", out->n,
                 (unsigned long long)head);
    for (size_t i = 0; i < out->n; i++) {
        cr_assert_eq(out->v[i].position, i + 1, "position gap at index %zu", i);
        if (i) {
            cr_assert_geq(out->v[i].recorded_at_ns, out->v[i - 1].recorded_at_ns,
                          "recorded_at decreased at position %zu", i + 1);
        }
    }
}

bool fx_rec_is(const Annals__V1__RecordedEvent *rec, const char *stream, const char *type)
{
    return rec && !strcmp(rec->stream, stream) && !strcmp(rec->type, type);
}

/* ---- small JSON reading ---- */

struct jp {
    const uint8_t *p;
    const uint8_t *end;
};

static void jp_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
        j->p++;
    }
}

static int hexv(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static bool jp_u4(struct jp *j, unsigned *out)
{
    if (j->end - j->p < 4) {
        return false;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexv(j->p[i]);
        if (h < 0) {
            return false;
        }
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return true;
}

/* Parses a JSON string at j->p into out (may be NULL); false if malformed. */
static bool jp_str(struct jp *j, char *out, size_t cap)
{
    size_t n = 0;
#define PUT(c)                                                                             \
    do {                                                                                   \
        if (out) {                                                                         \
            if (n + 1 >= cap) {                                                            \
                return false;                                                              \
            }                                                                              \
            out[n] = (char)(c);                                                            \
        }                                                                                  \
        n++;                                                                               \
    } while (0)
    if (j->p >= j->end || *j->p != '"') {
        return false;
    }
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        uint8_t c = *j->p++;
        if (c < 0x20) {
            return false; /* control characters must be escaped */
        }
        if (c != '\\') {
            PUT(c);
            continue;
        }
        if (j->p >= j->end) {
            return false;
        }
        c = *j->p++;
        switch (c) {
        case '"': PUT('"'); break;
        case '\\': PUT('\\'); break;
        case '/': PUT('/'); break;
        case 'b': PUT('\b'); break;
        case 'f': PUT('\f'); break;
        case 'n': PUT('\n'); break;
        case 'r': PUT('\r'); break;
        case 't': PUT('\t'); break;
        case 'u': {
            unsigned cp;
            if (!jp_u4(j, &cp)) {
                return false;
            }
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') {
                    return false;
                }
                j->p += 2;
                if (!jp_u4(j, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    return false;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp < 0x80) {
                PUT(cp);
            } else if (cp < 0x800) {
                PUT(0xc0 | (cp >> 6));
                PUT(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                PUT(0xe0 | (cp >> 12));
                PUT(0x80 | ((cp >> 6) & 0x3f));
                PUT(0x80 | (cp & 0x3f));
            } else {
                PUT(0xf0 | (cp >> 18));
                PUT(0x80 | ((cp >> 12) & 0x3f));
                PUT(0x80 | ((cp >> 6) & 0x3f));
                PUT(0x80 | (cp & 0x3f));
            }
            break;
        }
        default:
            return false;
        }
    }
#undef PUT
    if (j->p >= j->end) {
        return false;
    }
    j->p++;
    if (out) {
        out[n] = '\0';
    }
    return true;
}

/* Finds key in a flat JSON object and leaves j->p at its value. */
static bool jp_find(struct jp *j, const char *key)
{
    char k[256];
    jp_ws(j);
    if (j->p >= j->end || *j->p != '{') {
        return false;
    }
    j->p++;
    for (;;) {
        jp_ws(j);
        if (!jp_str(j, k, sizeof(k))) {
            return false;
        }
        jp_ws(j);
        if (j->p >= j->end || *j->p != ':') {
            return false;
        }
        j->p++;
        jp_ws(j);
        if (!strcmp(k, key)) {
            return true;
        }
        /* skip a string or a number */
        if (j->p < j->end && *j->p == '"') {
            if (!jp_str(j, NULL, 0)) {
                return false;
            }
        } else {
            while (j->p < j->end && *j->p != ',' && *j->p != '}') {
                j->p++;
            }
        }
        jp_ws(j);
        if (j->p >= j->end || *j->p != ',') {
            return false;
        }
        j->p++;
    }
}

bool fx_json_str(const uint8_t *json, size_t len, const char *key, char *out, size_t cap)
{
    struct jp j = {json, json + len};
    return jp_find(&j, key) && jp_str(&j, out, cap);
}

bool fx_json_u64(const uint8_t *json, size_t len, const char *key, uint64_t *out)
{
    struct jp j = {json, json + len};
    if (!jp_find(&j, key) || j.p >= j.end || *j.p < '0' || *j.p > '9') {
        return false;
    }
    uint64_t v = 0;
    while (j.p < j.end && *j.p >= '0' && *j.p <= '9') {
        v = v * 10 + (uint64_t)(*j.p++ - '0');
    }
    jp_ws(&j);
    if (j.p >= j.end || (*j.p != ',' && *j.p != '}')) {
        return false;
    }
    *out = v;
    return true;
}

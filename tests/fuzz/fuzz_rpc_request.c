/*
 * fuzz_rpc_request.c - libFuzzer entry for the requests the server decodes
 * that the other targets do not: the first byte picks the method, the rest
 * is its request message, unpacked with protobuf-c and then handed to the
 * functions srv_*.c hand it to after unpacking, against a real log and a
 * real projection manager (tests/fuzz/fuzz_fixture.c) with a few streams
 * (one deleted) and four projections:
 *
 * first byte % 16:
 *   0      DeleteStream  log_validate_delete
 *   1, 2   ReadStream,   log_resolve_as_of, log_get_stream, log_read_stream
 *          ReadAll       or log_read_all into srv_batch_add (the reply's
 *                        bytes), with the request's direction, bounds,
 *                        as_of and filter, as start_read/read_next do
 *   3      GetStream     log_resolve_as_of, log_get_stream
 *   4      Subscribe     srv_sub_check, then log_get_stream or the filter
 *                        over the log (log_read_all, log_filter_match)
 *   5, 6   GetView,      srv_view_check, srv_view_read_point, proj_get or
 *          ScanView      proj_scan, each entry packed
 *   7..11  Projections   Create (proj_create; at most 4 projections, so a
 *                        new name is refused after its checks), Get
 *                        (proj_status), Rebuild (proj_rebuild), Delete
 *                        (proj_delete, not of the four), List (proj_list)
 *   12     Admin.Backup  srv_backup_check
 *   13     Health.Check  the service name
 *   14, 15 AppendStream  an AppendStreamRequest; log_validate_append on it
 *
 * Nothing here waits: view reads get a deadline of now, as the server's
 * first attempt does. No input may crash, and a refusal names its reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annals/v1/admin.pb-c.h"
#include "annals/v1/commands.pb-c.h"
#include "annals/v1/projections.pb-c.h"
#include "annals/v1/queries.pb-c.h"
#include "fuzz_fixture.h"
#include "grpc/health/v1/health.pb-c.h"
#include "srv_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *const fixed[] = {"state", "counts", "idx", "latest"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ffx_open("/tmp", 4);
    atexit(ffx_close); /* libFuzzer exits when its time is up */
    ffx_put("order-1", "Created", "{\"k\": \"a\", \"n\": 1}");
    ffx_put("order-1", "Paid", "{\"k\": \"b\", \"n\": 2.5}");
    ffx_put("user-7", "Named", "{\"name\": \"x\"}");
    ffx_put("order-2", "Created", "not json");
    ffx_put("gone", "Created", "{}");
    ffx_delete("gone", false);
    ffx_put("order-1", "Shipped", "[1, 2]");
    ffx_create("state", ANNALS__V1__PROJECTION_KIND__STREAM_STATE, NULL, NULL, false);
    ffx_create("counts", ANNALS__V1__PROJECTION_KIND__COUNT, "$type", "/n", false);
    ffx_create("idx", ANNALS__V1__PROJECTION_KIND__INDEX, "/k", NULL, false);
    ffx_create("latest", ANNALS__V1__PROJECTION_KIND__STREAM_STATE, NULL, NULL, true);
    for (size_t i = 0; i < 4; i++) {
        if (ffx_wait(fixed[i])) {
            fprintf(stderr, "fuzz_rpc_request: view %s did not catch up\n", fixed[i]);
            abort();
        }
    }
    return 0;
}

static void need_detail(int rc, const char *detail)
{
    if (rc && rc != AN_ENOMEM && !detail[0]) {
        __builtin_trap(); /* a refusal always says why */
    }
}

/* ---- Commands ---- */

static void delete_stream(const uint8_t *data, size_t size)
{
    char detail[LOG_DETAIL_MAX] = "";
    Annals__V1__DeleteStreamRequest *r =
        annals__v1__delete_stream_request__unpack(NULL, size, data);
    if (!r) {
        return;
    }
    int rc = log_validate_delete(ffx.env, r, detail);
    need_detail(rc, detail);
    if (rc == 0 && (!r->stream[0] || r->stream[0] == '$')) {
        __builtin_trap(); /* accepted: a name of a client's stream */
    }
    annals__v1__delete_stream_request__free_unpacked(r, NULL);
}

static void append_stream(const uint8_t *data, size_t size)
{
    char detail[LOG_DETAIL_MAX] = "";
    Annals__V1__AppendStreamRequest *r =
        annals__v1__append_stream_request__unpack(NULL, size, data);
    if (!r) {
        return;
    }
    int rc = log_validate_append(ffx.env, r->append, false, detail);
    need_detail(rc, detail);
    if (rc == 0 && (!r->append || r->append->n_streams == 0)) {
        __builtin_trap();
    }
    annals__v1__append_stream_request__free_unpacked(r, NULL);
}

/* ---- Queries: the log ---- */

/* What start_read and read_next (srv_calls.c) do with a ReadStream or
 * ReadAll request, with at most four batches. */
static void read_events(const uint8_t *data, size_t size, bool all)
{
    Annals__V1__ReadStreamRequest *rs = NULL;
    Annals__V1__ReadAllRequest *ra = NULL;
    const Annals__V1__AsOf *as_of;
    struct log_filter filter = {0};
    bool backwards;
    uint64_t left;
    if (all) {
        if (!(ra = annals__v1__read_all_request__unpack(NULL, size, data))) {
            return;
        }
        backwards = ra->direction == ANNALS__V1__DIRECTION__BACKWARDS;
        left = ra->max_count ? ra->max_count : UINT64_MAX;
        as_of = ra->as_of;
        if (ra->filter) {
            filter.stream_prefixes = (const char *const *)ra->filter->stream_prefixes;
            filter.n_stream_prefixes = ra->filter->n_stream_prefixes;
            filter.event_types = (const char *const *)ra->filter->event_types;
            filter.n_event_types = ra->filter->n_event_types;
        }
    } else {
        if (!(rs = annals__v1__read_stream_request__unpack(NULL, size, data))) {
            return;
        }
        backwards = rs->direction == ANNALS__V1__DIRECTION__BACKWARDS;
        left = rs->max_count ? rs->max_count : UINT64_MAX;
        as_of = rs->as_of;
    }
    log_reader *rd = ffx.rd;
    uint64_t bound = 0;
    uint64_t next = 0;
    bool done = false;
    if (log_reader_begin(rd)) {
        abort();
    }
    int rc = log_resolve_as_of(rd, as_of, &bound);
    if (!rc && !all) {
        struct log_stream_info info;
        rc = log_get_stream(rd, rs->stream, bound, &info);
        if (!rc && info.event_count == 0) {
            rc = AN_ENOTFOUND;
        }
        if (!rc) {
            uint64_t first = (uint64_t)info.last_version + 1 - info.event_count;
            if (rs->from_end) {
                next = (uint64_t)info.last_version;
            } else if (backwards) {
                next = rs->from_version < (uint64_t)info.last_version
                           ? rs->from_version : (uint64_t)info.last_version;
                done = rs->from_version < first;
            } else {
                next = rs->from_version;
            }
        }
    } else if (!rc) {
        uint64_t head = bound;
        if (ra->from_end || (backwards && ra->from_position == 0)) {
            next = head;
        } else if (backwards) {
            next = ra->from_position < head ? ra->from_position : head;
        } else {
            next = ra->from_position ? ra->from_position : 1;
        }
        done = head == 0 || (!backwards && next > head) || next == 0;
    }
    if (rc && !log_reader_detail(rd)[0] && rc != AN_ENOTFOUND) {
        __builtin_trap();
    }
    log_reader_end(rd);
    for (int batch = 0; !rc && !done && left && batch < 4; batch++) {
        struct srv_batch b = {.want = left};
        if (log_reader_begin(rd)) {
            abort();
        }
        if (all) {
            struct log_all_read q = {.from_position = next, .backwards = backwards,
                                     .max_count = left == UINT64_MAX ? 0 : left,
                                     .max_scan = 1u << 16, .filter = &filter, .as_of = bound};
            rc = log_read_all(rd, &q, srv_batch_add, &b, &next, &done);
            if (!rc && backwards && next == 0) {
                done = true;
            }
        } else {
            struct log_stream_read q = {.stream = rs->stream, .from_version = next,
                                        .backwards = backwards,
                                        .max_count = left == UINT64_MAX ? 0 : left,
                                        .as_of = bound};
            rc = log_read_stream(rd, &q, srv_batch_add, &b, &next, &done);
        }
        log_reader_end(rd);
        if (!rc && left != UINT64_MAX) {
            if (b.n > left) {
                __builtin_trap(); /* more than max_count */
            }
            left -= b.n;
        }
        if (b.n) {
            /* what goes on the wire decodes as a ReadResponse */
            Annals__V1__ReadResponse *m = annals__v1__read_response__unpack(NULL, b.len, b.buf);
            if (!m || m->n_events != b.n) {
                __builtin_trap();
            }
            annals__v1__read_response__free_unpacked(m, NULL);
        }
        free(b.buf);
    }
    if (ra) {
        annals__v1__read_all_request__free_unpacked(ra, NULL);
    }
    if (rs) {
        annals__v1__read_stream_request__free_unpacked(rs, NULL);
    }
}

static void get_stream(const uint8_t *data, size_t size)
{
    Annals__V1__GetStreamRequest *r = annals__v1__get_stream_request__unpack(NULL, size, data);
    if (!r) {
        return;
    }
    uint64_t as_of;
    struct log_stream_info info;
    if (log_reader_begin(ffx.rd)) {
        abort();
    }
    int rc = log_resolve_as_of(ffx.rd, r->as_of, &as_of);
    if (!rc) {
        rc = log_get_stream(ffx.rd, r->stream, as_of, &info);
    }
    if (rc == 0 && (info.event_count > (uint64_t)info.last_version + 1 ||
                    info.first_position > info.last_position)) {
        __builtin_trap();
    }
    log_reader_end(ffx.rd);
    annals__v1__get_stream_request__free_unpacked(r, NULL);
}

static bool count_match(void *arg, const struct log_event *ev)
{
    struct log_filter *f = arg;
    volatile bool m = log_filter_match(f, ev);
    (void)m;
    return true;
}

static void subscribe(const uint8_t *data, size_t size)
{
    char detail[LOG_DETAIL_MAX] = "";
    Annals__V1__SubscribeRequest *r = annals__v1__subscribe_request__unpack(NULL, size, data);
    if (!r) {
        return;
    }
    int rc = srv_sub_check(r, detail);
    need_detail(rc, detail);
    if (rc == 0) {
        if (log_reader_begin(ffx.rd)) {
            abort();
        }
        if (r->stream && r->stream[0]) {
            struct log_stream_info info;
            (void)log_get_stream(ffx.rd, r->stream, log_reader_head(ffx.rd), &info);
        } else {
            struct log_filter f = {0};
            if (r->filter) {
                f.stream_prefixes = (const char *const *)r->filter->stream_prefixes;
                f.n_stream_prefixes = r->filter->n_stream_prefixes;
                f.event_types = (const char *const *)r->filter->event_types;
                f.n_event_types = r->filter->n_event_types;
            }
            struct log_all_read q = {.from_position = r->from_position,
                                     .as_of = log_reader_head(ffx.rd), .filter = &f};
            (void)log_read_all(ffx.rd, &q, count_match, &f, NULL, NULL);
        }
        log_reader_end(ffx.rd);
    }
    annals__v1__subscribe_request__free_unpacked(r, NULL);
}

/* ---- Queries: views ---- */

static bool scan_pack(void *arg, const Annals__V1__ViewEntry *e)
{
    size_t *n = arg;
    size_t len = annals__v1__view_entry__get_packed_size(e);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        return false;
    }
    if (annals__v1__view_entry__pack(e, buf) != len) {
        __builtin_trap();
    }
    free(buf);
    return ++*n < 64;
}

static void view_read(const uint8_t *data, size_t size, bool scan)
{
    char detail[LOG_DETAIL_MAX] = "";
    Annals__V1__GetViewRequest *g = NULL;
    Annals__V1__ScanViewRequest *s = NULL;
    const char *view;
    const Annals__V1__AsOf *as_of;
    uint64_t min_position;
    if (scan) {
        if (!(s = annals__v1__scan_view_request__unpack(NULL, size, data))) {
            return;
        }
        view = s->view;
        as_of = s->as_of;
        min_position = s->min_position;
    } else {
        if (!(g = annals__v1__get_view_request__unpack(NULL, size, data))) {
            return;
        }
        view = g->view;
        as_of = g->as_of;
        min_position = g->min_position;
    }
    struct proj_read q;
    int rc = srv_view_check(view, detail);
    need_detail(rc, detail);
    if (!rc) {
        rc = srv_view_read_point(ffx.rd, as_of, min_position, &q);
    }
    if (!rc) {
        q.deadline_ns = proj_deadline_after(0);
        if (g) {
            Annals__V1__ViewEntry *e = NULL;
            rc = proj_get(ffx.mgr, view, g->key, strlen(g->key), &q, &e);
            if (rc == 0) {
                size_t n = 0;
                scan_pack(&n, e);
            }
            proj_entry_free(e);
        } else {
            struct proj_scan sq = {
                .prefix = s->key_prefix,
                .prefix_len = s->key_prefix ? strlen(s->key_prefix) : 0,
                .start_after = s->start_after && s->start_after[0] ? s->start_after : NULL,
                .limit = s->limit,
                .read = q,
            };
            sq.start_after_len = sq.start_after ? strlen(sq.start_after) : 0;
            size_t n = 0;
            uint64_t at = 0;
            bool more = false;
            (void)proj_scan(ffx.mgr, view, &sq, scan_pack, &n, &at, &more);
        }
    }
    if (g) {
        annals__v1__get_view_request__free_unpacked(g, NULL);
    }
    if (s) {
        annals__v1__scan_view_request__free_unpacked(s, NULL);
    }
}

/* ---- Projections, Admin, Health ---- */

static bool is_fixed(const char *name)
{
    for (size_t i = 0; i < 4; i++) {
        if (name && strcmp(name, fixed[i]) == 0) {
            return true;
        }
    }
    return false;
}

static void projections(const uint8_t *data, size_t size, unsigned which)
{
    char detail[PROJ_DETAIL_MAX] = "";
    Annals__V1__ProjectionStatus *st = NULL;
    int rc;
    switch (which) {
    case 0: {
        Annals__V1__ProjectionDefinition *d =
            annals__v1__projection_definition__unpack(NULL, size, data);
        if (!d) {
            return;
        }
        rc = proj_create(ffx.mgr, d, &st, detail);
        if (rc && rc != AN_ETOOBIG && rc != AN_EEXIST) {
            need_detail(rc, detail);
        }
        if (rc == 0 && !is_fixed(d->name)) {
            __builtin_trap(); /* max_projections is 4 */
        }
        annals__v1__projection_definition__free_unpacked(d, NULL);
        break;
    }
    case 1: {
        Annals__V1__GetProjectionRequest *r =
            annals__v1__get_projection_request__unpack(NULL, size, data);
        if (!r) {
            return;
        }
        rc = proj_status(ffx.mgr, r->name, &st);
        annals__v1__get_projection_request__free_unpacked(r, NULL);
        break;
    }
    case 2: {
        Annals__V1__RebuildProjectionRequest *r =
            annals__v1__rebuild_projection_request__unpack(NULL, size, data);
        if (!r) {
            return;
        }
        rc = proj_rebuild(ffx.mgr, r->name, &st, detail);
        annals__v1__rebuild_projection_request__free_unpacked(r, NULL);
        break;
    }
    case 3: {
        Annals__V1__DeleteProjectionRequest *r =
            annals__v1__delete_projection_request__unpack(NULL, size, data);
        if (!r) {
            return;
        }
        if (!is_fixed(r->name)) {
            if (proj_delete(ffx.mgr, r->name, detail) == 0) {
                __builtin_trap(); /* only the four exist */
            }
        }
        annals__v1__delete_projection_request__free_unpacked(r, NULL);
        break;
    }
    default: {
        Annals__V1__ListProjectionsRequest *r =
            annals__v1__list_projections_request__unpack(NULL, size, data);
        if (!r) {
            return;
        }
        Annals__V1__ListProjectionsResponse *res = NULL;
        if (proj_list(ffx.mgr, &res) == 0) {
            proj_list_free(res);
        }
        annals__v1__list_projections_request__free_unpacked(r, NULL);
        break;
    }
    }
    proj_status_free(st);
}

static void backup(const uint8_t *data, size_t size)
{
    char detail[LOG_DETAIL_MAX] = "";
    Annals__V1__BackupRequest *r = annals__v1__backup_request__unpack(NULL, size, data);
    if (!r) {
        return;
    }
    int rc = srv_backup_check(r, detail);
    need_detail(rc, detail);
    if (rc == 0 && r->dest[0] != '/') {
        __builtin_trap();
    }
    annals__v1__backup_request__free_unpacked(r, NULL);
}

static void health(const uint8_t *data, size_t size)
{
    Grpc__Health__V1__HealthCheckRequest *r =
        grpc__health__v1__health_check_request__unpack(NULL, size, data);
    if (!r) {
        return;
    }
    /* on_health (srv_calls.c): the service is "", Commands or Queries */
    volatile bool known = !r->service || !r->service[0] ||
                          strcmp(r->service, "annals.v1.Commands") == 0 ||
                          strcmp(r->service, "annals.v1.Queries") == 0;
    (void)known;
    grpc__health__v1__health_check_request__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    unsigned m = data[0] % 16;
    data++;
    size--;
    if (m == 0) {
        delete_stream(data, size);
    } else if (m <= 2) {
        read_events(data, size, m == 2);
    } else if (m == 3) {
        get_stream(data, size);
    } else if (m == 4) {
        subscribe(data, size);
    } else if (m <= 6) {
        view_read(data, size, m == 6);
    } else if (m <= 11) {
        projections(data, size, m - 7);
    } else if (m == 12) {
        backup(data, size);
    } else if (m == 13) {
        health(data, size);
    } else {
        append_stream(data, size);
    }
    return 0;
}

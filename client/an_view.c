/*
 * an_view.c - projections and views: annals.v1.Projections (Create, Get,
 * List, Rebuild, Delete) and Queries.GetView / ScanView.
 *
 * The unary calls go through an__unary_msg (deadlines, breaker, retries
 * where safe). ScanView is server-streaming: one call, its messages read
 * one after another, each wait bounded by the client's timeout, and never
 * retried once an entry has been handed out.
 */
#include "an_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>

#include "annals/v1/projections.pb-c.h"
#include "annals/v1/queries.pb-c.h"

#define AN__M_PROJ_CREATE "/annals.v1.Projections/Create"
#define AN__M_PROJ_GET "/annals.v1.Projections/Get"
#define AN__M_PROJ_LIST "/annals.v1.Projections/List"
#define AN__M_PROJ_REBUILD "/annals.v1.Projections/Rebuild"
#define AN__M_PROJ_DELETE "/annals.v1.Projections/Delete"
#define AN__M_GET_VIEW "/annals.v1.Queries/GetView"
#define AN__M_SCAN_VIEW "/annals.v1.Queries/ScanView"

static char *s_or_empty(const char *s)
{
    return (char *)(s ? s : "");
}

static void status_from(const Annals__V1__ProjectionStatus *m, struct an_projection_status *o)
{
    memset(o, 0, sizeof(*o));
    if (m->definition) {
        snprintf(o->name, sizeof(o->name), "%s", s_or_empty(m->definition->name));
        snprintf(o->key, sizeof(o->key), "%s", s_or_empty(m->definition->key));
        o->kind = (enum an_proj_kind)m->definition->kind;
        o->latest_only = m->definition->latest_only;
    }
    o->state = (enum an_proj_state)m->state;
    o->checkpoint = m->checkpoint;
    o->head = m->head;
    o->events_applied = m->events_applied;
    o->rebuild_checkpoint = m->rebuild_checkpoint;
    snprintf(o->error, sizeof(o->error), "%s", s_or_empty(m->error));
}

/* A status-returning call; *out optional. */
static int status_call(an_client *c, const char *method, const ProtobufCMessage *req, bool retry,
                       struct an_projection_status *out, struct an_error *err)
{
    ProtobufCMessage *m;
    int rc = an__unary_msg(c, method, req, retry, &annals__v1__projection_status__descriptor, &m,
                           err);
    if (rc) return rc;
    if (out) {
        status_from((const Annals__V1__ProjectionStatus *)m, out);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int an_projection_create(an_client *c, const struct an_projection_def *def,
                         struct an_projection_status *out, struct an_error *err)
{
    if (!c || !def) return an__err_set(err, AN_EINVAL, 0, "client or definition is NULL");
    Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
    Annals__V1__Filter f = ANNALS__V1__FILTER__INIT;
    d.name = s_or_empty(def->name);
    d.kind = (Annals__V1__ProjectionKind)def->kind;
    d.key = s_or_empty(def->key);
    d.sum = s_or_empty(def->sum);
    d.latest_only = def->latest_only;
    if (def->n_stream_prefixes || def->n_event_types) {
        f.stream_prefixes = (char **)def->stream_prefixes;
        f.n_stream_prefixes = def->n_stream_prefixes;
        f.event_types = (char **)def->event_types;
        f.n_event_types = def->n_event_types;
        d.filter = &f;
    }
    /* idempotent for an identical definition: safe to retry */
    return status_call(c, AN__M_PROJ_CREATE, &d.base, true, out, err);
}

int an_projection_get(an_client *c, const char *name, struct an_projection_status *out,
                      struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    Annals__V1__GetProjectionRequest r = ANNALS__V1__GET_PROJECTION_REQUEST__INIT;
    r.name = s_or_empty(name);
    return status_call(c, AN__M_PROJ_GET, &r.base, true, out, err);
}

int an_projection_rebuild(an_client *c, const char *name, struct an_projection_status *out,
                          struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    Annals__V1__RebuildProjectionRequest r = ANNALS__V1__REBUILD_PROJECTION_REQUEST__INIT;
    r.name = s_or_empty(name);
    return status_call(c, AN__M_PROJ_REBUILD, &r.base, false, out, err);
}

int an_projection_delete(an_client *c, const char *name, struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    Annals__V1__DeleteProjectionRequest r = ANNALS__V1__DELETE_PROJECTION_REQUEST__INIT;
    ProtobufCMessage *m;
    r.name = s_or_empty(name);
    int rc = an__unary_msg(c, AN__M_PROJ_DELETE, &r.base, false,
                           &annals__v1__delete_projection_response__descriptor, &m, err);
    if (!rc) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

int an_projection_list(an_client *c, struct an_projection_status **out, size_t *n,
                       struct an_error *err)
{
    if (!c || !out || !n) return an__err_set(err, AN_EINVAL, 0, "NULL argument");
    Annals__V1__ListProjectionsRequest r = ANNALS__V1__LIST_PROJECTIONS_REQUEST__INIT;
    ProtobufCMessage *m;
    int rc = an__unary_msg(c, AN__M_PROJ_LIST, &r.base, true,
                           &annals__v1__list_projections_response__descriptor, &m, err);
    if (rc) return rc;
    const Annals__V1__ListProjectionsResponse *l = (const Annals__V1__ListProjectionsResponse *)m;
    *out = calloc(l->n_projections ? l->n_projections : 1, sizeof(**out));
    if (!*out) {
        protobuf_c_message_free_unpacked(m, NULL);
        return an__err_set(err, AN_ENOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < l->n_projections; i++) {
        status_from(l->projections[i], &(*out)[i]);
    }
    *n = l->n_projections;
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* ---- views ---- */

void an_view_entry_free(struct an_view_entry *e)
{
    if (e) {
        free(e->value);
        e->value = NULL;
        e->value_len = 0;
    }
}

/* Copies a ViewEntry out (value malloc'd). 0 or AN_ENOMEM. */
static int entry_from(const Annals__V1__ViewEntry *m, struct an_view_entry *o)
{
    memset(o, 0, sizeof(*o));
    o->found = m->found;
    o->position = m->position;
    snprintf(o->key, sizeof(o->key), "%s", s_or_empty(m->key));
    o->value = malloc(m->value.len + 1);
    if (!o->value) return AN_ENOMEM;
    if (m->value.len) {
        memcpy(o->value, m->value.data, m->value.len);
    }
    o->value[m->value.len] = '\0';
    o->value_len = m->value.len;
    return 0;
}

int an_get_view(an_client *c, const char *view, const char *key, const struct an_as_of *as_of,
                uint64_t min_position, struct an_view_entry *out, struct an_error *err)
{
    if (!c || !out) return an__err_set(err, AN_EINVAL, 0, "client or out is NULL");
    Annals__V1__GetViewRequest r = ANNALS__V1__GET_VIEW_REQUEST__INIT;
    Annals__V1__AsOf a;
    ProtobufCMessage *m;
    r.view = s_or_empty(view);
    r.key = s_or_empty(key);
    r.as_of = an__as_of(as_of, &a);
    r.min_position = min_position;
    int rc = an__unary_msg(c, AN__M_GET_VIEW, &r.base, true, &annals__v1__view_entry__descriptor,
                           &m, err);
    if (rc) return rc;
    rc = entry_from((const Annals__V1__ViewEntry *)m, out);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc ? an__err_set(err, rc, 0, "out of memory") : 0;
}

/* ---- server-streaming calls ---- */

static bool wait_tag(grpc_completion_queue *cq, void *tag, gpr_timespec until, bool *ok)
{
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, until, NULL);
    if (ev.type != GRPC_OP_COMPLETE) return false;
    *ok = ev.success != 0;
    return true;
}

int an__server_stream(an_client *c, const char *method, const ProtobufCMessage *req,
                      int64_t wait_ms, an__msg_fn fn, void *arg, struct an_error *err)
{
    struct an__lease lease;
    int rc = an__ep_acquire(c, &lease);
    if (rc) return an__err_set(err, rc, 0, "no endpoint admits the call");
    grpc_byte_buffer *bb = an__pack(req);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = bb ? an__call_new_ep(lease.ep, cq, method,
                                           gpr_inf_future(GPR_CLOCK_REALTIME))
                         : NULL;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_metadata_array_init(&md_initial);
    grpc_metadata_array_init(&md_trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *recv = NULL;
    bool ok = false;
    bool stopped = false;
    if (!call) {
        rc = an__err_set(err, bb ? AN_EINTERNAL : AN_ENOMEM, 0, "cannot start the call");
        goto out;
    }
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    an__ep_md(lease.ep, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
    if (grpc_call_start_batch(call, ops, 4, (void *)1, NULL) != GRPC_CALL_OK) {
        rc = an__err_set(err, AN_EINTERNAL, 0, "cannot start the call");
        goto out_call;
    }
    if (!wait_tag(cq, (void *)1, an__deadline(wait_ms), &ok)) {
        grpc_call_cancel(call, NULL);
        wait_tag(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
        rc = an__err_set(err, AN_EDEADLINE, 0, "no answer within %lld ms", (long long)wait_ms);
    }
    while (!rc && !stopped) {
        grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
        op.data.recv_message.recv_message = &recv;
        if (grpc_call_start_batch(call, &op, 1, (void *)2, NULL) != GRPC_CALL_OK) {
            rc = an__err_set(err, AN_EINTERNAL, 0, "cannot read the call");
            break;
        }
        if (!wait_tag(cq, (void *)2, an__deadline(wait_ms), &ok)) {
            grpc_call_cancel(call, NULL);
            wait_tag(cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
            rc = an__err_set(err, AN_EDEADLINE, 0, "nothing from the server within %lld ms",
                             (long long)wait_ms);
            break;
        }
        if (!recv) {
            break; /* the end: the status follows */
        }
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, recv);
        grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        grpc_byte_buffer_destroy(recv);
        recv = NULL;
        int frc = fn(arg, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), err);
        grpc_slice_unref(sl);
        if (frc < 0) {
            rc = frc;
        }
        if (frc) {
            stopped = true;
            grpc_call_cancel(call, NULL);
        }
    }
    grpc_op so = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    so.data.recv_status_on_client.status = &status;
    so.data.recv_status_on_client.status_details = &details;
    so.data.recv_status_on_client.trailing_metadata = &md_trailing;
    if (grpc_call_start_batch(call, &so, 1, (void *)3, NULL) == GRPC_CALL_OK) {
        wait_tag(cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
        if (!rc && !stopped) {
            rc = an__err_from_status(err, status, details, &md_trailing);
        }
    }
out_call:
    grpc_call_unref(call);
out:
    if (bb) {
        grpc_byte_buffer_destroy(bb);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_initial);
    grpc_metadata_array_destroy(&md_trailing);
    an__cq_free(cq, true);
    an__ep_release(c, &lease, rc);
    return rc;
}

/* ---- ScanView ---- */

struct scan_state {
    an_view_fn fn;
    void *arg;
};

static int on_scan_msg(void *arg, const uint8_t *p, size_t len, struct an_error *err)
{
    struct scan_state *st = arg;
    Annals__V1__ScanViewResponse *m = annals__v1__scan_view_response__unpack(NULL, len, p);
    if (!m) return an__err_set(err, AN_ECORRUPT, 0, "a malformed ScanViewResponse");
    int rc = 0;
    for (size_t i = 0; i < m->n_entries && !rc; i++) {
        struct an_view_entry e;
        if (entry_from(m->entries[i], &e)) {
            rc = an__err_set(err, AN_ENOMEM, 0, "out of memory");
            break;
        }
        if (!st->fn(st->arg, &e)) {
            rc = 1; /* the caller stopped: not an error */
        }
        an_view_entry_free(&e);
    }
    annals__v1__scan_view_response__free_unpacked(m, NULL);
    return rc;
}

int an_scan_view(an_client *c, const struct an_scan_opts *o, an_view_fn fn, void *arg,
                 struct an_error *err)
{
    if (!c || !o || !fn) return an__err_set(err, AN_EINVAL, 0, "NULL argument");
    Annals__V1__ScanViewRequest r = ANNALS__V1__SCAN_VIEW_REQUEST__INIT;
    Annals__V1__AsOf a;
    r.view = s_or_empty(o->view);
    r.key_prefix = s_or_empty(o->key_prefix);
    r.start_after = s_or_empty(o->start_after);
    r.limit = o->limit;
    r.as_of = an__as_of(&o->as_of, &a);
    r.min_position = o->min_position;
    struct scan_state st = {.fn = fn, .arg = arg};
    return an__server_stream(c, AN__M_SCAN_VIEW, &r.base, c->timeout_ms, on_scan_msg, &st, err);
}

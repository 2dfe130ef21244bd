/*
 * an_admin.c - annals.v1.Admin (admin.proto): an online backup.
 *
 * Backup is a server-streaming call that runs as long as the copy does, so
 * it has no deadline; instead each wait for the next progress message is
 * bounded by the client's timeout times BACKUP_WAIT_FACTOR (a large log
 * copies for a while between two messages). It is never retried: the
 * copy's directory would exist the second time.
 */
#include "an_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>

#include "annals/v1/admin.pb-c.h"

#define BACKUP_WAIT_FACTOR 60
#define AN__M_BACKUP "/annals.v1.Admin/Backup"

/* Waits for tag on cq until the deadline; false on timeout. */
static bool wait_tag(grpc_completion_queue *cq, void *tag, gpr_timespec until, bool *ok)
{
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, until, NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        return false;
    }
    *ok = ev.success != 0;
    return true;
}

int an_backup(an_client *c, const char *dest, an_backup_cb cb, void *arg,
              uint64_t *log_position, struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    struct an__lease lease;
    int rc = an__ep_acquire(c, &lease);
    if (rc) return an__err_set(err, rc, 0, "no endpoint admits the call");
    Annals__V1__BackupRequest req = ANNALS__V1__BACKUP_REQUEST__INIT;
    req.dest = (char *)(dest ? dest : "");
    grpc_byte_buffer *bb = an__pack(&req.base);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = bb ? an__call_new_ep(lease.ep, cq, AN__M_BACKUP,
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
    int64_t wait_ms = c->timeout_ms * BACKUP_WAIT_FACTOR;
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
    if (grpc_call_start_batch(call, ops, 4, (void *)1, NULL) != GRPC_CALL_OK ||
        !wait_tag(cq, (void *)1, an__deadline(wait_ms), &ok)) {
        grpc_call_cancel(call, NULL);
        wait_tag(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
        rc = an__err_set(err, AN_EDEADLINE, 0, "the server did not answer within %lld ms",
                         (long long)wait_ms);
        goto out_call;
    }
    for (;;) {
        grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
        op.data.recv_message.recv_message = &recv;
        if (grpc_call_start_batch(call, &op, 1, (void *)2, NULL) != GRPC_CALL_OK) {
            rc = an__err_set(err, AN_EINTERNAL, 0, "cannot read the call");
            break;
        }
        if (!wait_tag(cq, (void *)2, an__deadline(wait_ms), &ok)) {
            grpc_call_cancel(call, NULL);
            wait_tag(cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
            rc = an__err_set(err, AN_EDEADLINE, 0, "no progress from the server within %lld ms",
                             (long long)wait_ms);
            break;
        }
        if (!recv) {
            break; /* the end: the status follows */
        }
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, recv);
        grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        grpc_byte_buffer_destroy(recv);
        recv = NULL;
        Annals__V1__BackupProgress *p = annals__v1__backup_progress__unpack(
            NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);
        if (!p) {
            rc = an__err_set(err, AN_ECORRUPT, 0, "a malformed BackupProgress");
            grpc_call_cancel(call, NULL);
            break;
        }
        struct an_backup_progress bp = {
            .step = p->step ? p->step : "",
            .steps_done = p->steps_done,
            .steps_total = p->steps_total,
            .bytes_copied = p->bytes_copied,
            .log_position = p->log_position,
            .done = p->done,
        };
        if (p->done && log_position) {
            *log_position = p->log_position;
        }
        if (cb) {
            cb(arg, &bp);
        }
        annals__v1__backup_progress__free_unpacked(p, NULL);
    }
    grpc_op so = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    so.data.recv_status_on_client.status = &status;
    so.data.recv_status_on_client.status_details = &details;
    so.data.recv_status_on_client.trailing_metadata = &md_trailing;
    if (grpc_call_start_batch(call, &so, 1, (void *)3, NULL) == GRPC_CALL_OK) {
        wait_tag(cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME), &ok);
        if (!rc) {
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

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

#include "annals/v1/admin.pb-c.h"

#define BACKUP_WAIT_FACTOR 60
#define AN__M_BACKUP "/annals.v1.Admin/Backup"

struct backup_state {
    an_backup_cb cb;
    void *arg;
    uint64_t *log_position;
};

static int on_progress_msg(void *arg, const uint8_t *p, size_t len, struct an_error *err)
{
    struct backup_state *st = arg;
    Annals__V1__BackupProgress *m = annals__v1__backup_progress__unpack(NULL, len, p);
    if (!m) return an__err_set(err, AN_ECORRUPT, 0, "a malformed BackupProgress");
    struct an_backup_progress bp = {
        .step = m->step ? m->step : "",
        .steps_done = m->steps_done,
        .steps_total = m->steps_total,
        .bytes_copied = m->bytes_copied,
        .log_position = m->log_position,
        .done = m->done,
    };
    if (m->done && st->log_position) {
        *st->log_position = m->log_position;
    }
    if (st->cb) {
        st->cb(st->arg, &bp);
    }
    annals__v1__backup_progress__free_unpacked(m, NULL);
    return 0;
}

int an_backup(an_client *c, const char *dest, an_backup_cb cb, void *arg,
              uint64_t *log_position, struct an_error *err)
{
    if (!c) return an__err_set(err, AN_EINVAL, 0, "client is NULL");
    Annals__V1__BackupRequest req = ANNALS__V1__BACKUP_REQUEST__INIT;
    req.dest = (char *)(dest ? dest : "");
    struct backup_state st = {.cb = cb, .arg = arg, .log_position = log_position};
    return an__server_stream(c, AN__M_BACKUP, &req.base, c->timeout_ms * BACKUP_WAIT_FACTOR,
                             on_progress_msg, &st, err);
}

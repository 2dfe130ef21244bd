/*
 * srv_backup.c - annals.v1.Admin/Backup: a consistent copy of the data
 * directory while the server runs (admin.proto).
 *
 * The copy takes seconds to minutes, so it runs on a thread of its own,
 * which holds a reference on the call. It copies the projections first
 * (proj_backup), then the log (log_backup), so every copied checkpoint is
 * at most the copied log's head. Progress goes to the client as it goes,
 * one message in flight: a step finished while a send is out replaces the
 * one waiting (only the newest matters), and the last message and the
 * status go out once the sends before them have completed. One backup at
 * a time.
 */
#include "srv_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "annals/v1/admin.pb-c.h"

/* ---- messages (under c->mu) ---- */

/* Sends bb now if nothing is in flight, else keeps it as the next one
 * (dropping an older one waiting). */
static void bk_push(struct srv_call *c, grpc_byte_buffer *bb)
{
    struct srv_bk *b = &c->bk;
    if (atomic_load(&c->closed)) {
        grpc_byte_buffer_destroy(bb); /* nobody to tell */
        return;
    }
    if (!b->sending) {
        b->sending = srv_send(c, bb) == 0;
        return;
    }
    if (b->pending) {
        grpc_byte_buffer_destroy(b->pending);
    }
    b->pending = bb;
}

/* Ends the call once nothing is in flight. */
static void bk_try_finish(struct srv_call *c)
{
    struct srv_bk *b = &c->bk;
    if (b->sending || b->pending || !b->ended || b->replied) {
        return;
    }
    b->replied = true;
    srv_reply_code(c, b->rc, b->detail);
}

static void progress(struct srv_call *c, const char *step, unsigned done, unsigned total,
                     uint64_t bytes, uint64_t position, bool last)
{
    Annals__V1__BackupProgress p = ANNALS__V1__BACKUP_PROGRESS__INIT;
    p.step = (char *)step;
    p.steps_done = done;
    p.steps_total = total;
    p.bytes_copied = bytes;
    p.log_position = position;
    p.done = last;
    grpc_byte_buffer *bb = srv_pack(&p.base);
    pthread_mutex_lock(&c->mu);
    if (bb) {
        bk_push(c, bb);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- the copy ---- */

struct bk_views {
    struct srv_call *c;
    unsigned total;
};

static void on_view(void *arg, const char *name, unsigned done, unsigned total)
{
    struct bk_views *v = arg;
    char step[PROJ_NAME_MAX + 16];
    snprintf(step, sizeof(step), "projection %s", name);
    /* the views, then the log: one step more than the projections */
    progress(v->c, step, done, total + 1, 0, 0, false);
    v->total = total;
}

static void *backup_main(void *arg)
{
    struct srv_call *c = arg;
    struct srv *s = c->srv;
    Annals__V1__BackupRequest *r = (Annals__V1__BackupRequest *)c->req;
    char path[4096];
    char detail[LOG_DETAIL_MAX] = "";
    uint64_t head = 0;
    uint64_t bytes = 0;
    gpr_timespec t0 = gpr_now(GPR_CLOCK_MONOTONIC);
    say_info("backup", "msg=\"backup started\" dest=%s", r->dest);
    int rc = 0;
    if (mkdir(r->dest, 0755) != 0) {
        snprintf(detail, sizeof(detail), "dest %.200s: cannot create it: %s", r->dest,
                 strerror(errno));
        rc = AN_EINVAL;
    }
    struct bk_views v = {.c = c};
    if (!rc && s->proj) {
        snprintf(path, sizeof(path), "%s/projections", r->dest);
        rc = proj_backup(s->proj, path, on_view, &v, detail);
    }
    if (!rc && s->groups) {
        snprintf(path, sizeof(path), "%s/groups", r->dest);
        rc = srv_group_backup(s, path, detail);
    }
    if (!rc) {
        snprintf(path, sizeof(path), "%s/log", r->dest);
        rc = log_backup(s->log, path, &head, &bytes, detail);
    }
    double secs = (double)gpr_timespec_to_micros(
                      gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), t0)) / 1e6;
    if (rc) {
        say_error("backup", "msg=\"backup failed\" dest=%s err=%s detail=\"%s\"", r->dest,
                  an_errname(rc), detail);
    } else {
        say_info("backup",
                 "msg=\"backup done\" dest=%s log_position=%llu log_bytes=%llu projections=%u "
                 "seconds=%.3f mb_per_s=%.1f",
                 r->dest, (unsigned long long)head, (unsigned long long)bytes, v.total, secs,
                 secs > 0 ? (double)bytes / 1048576.0 / secs : 0.0);
        progress(c, "log", v.total + 1, v.total + 1, bytes, head, true);
    }
    pthread_mutex_lock(&c->mu);
    c->bk.ended = true;
    c->bk.rc = rc;
    snprintf(c->bk.detail, sizeof(c->bk.detail), "%s", detail);
    bk_try_finish(c);
    pthread_mutex_unlock(&c->mu);
    atomic_store(&s->backup_running, false);
    srv_call_unref(c);
    return NULL;
}

/* ---- the call ---- */

int srv_backup_check(const Annals__V1__BackupRequest *r, char *detail)
{
    const char *dest = r->dest ? r->dest : "";
    struct stat st;
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", dest);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
    }
    if (dest[0] != '/' || strlen(dest) > 3000) {
        snprintf(detail, LOG_DETAIL_MAX, "dest '%.200s': want an absolute path on the server's "
                 "machine (at most 3000 bytes)", dest);
    } else if (stat(dest, &st) == 0) {
        snprintf(detail, LOG_DETAIL_MAX, "dest %.200s exists: a backup goes into a new directory",
                 dest);
    } else if (parent[0] && (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(detail, LOG_DETAIL_MAX, "dest %.200s: its parent is not a directory", dest);
    } else {
        return 0;
    }
    return AN_EINVAL;
}

void srv_backup_begin(struct srv_call *c)
{
    struct srv *s = c->srv;
    char detail[LOG_DETAIL_MAX];
    int rc = srv_backup_check((const Annals__V1__BackupRequest *)c->req, detail);
    if (rc) {
        srv_reply_code(c, rc, detail);
        return;
    }
    bool busy = false;
    if (!atomic_compare_exchange_strong(&s->backup_running, &busy, true)) {
        srv_reply_code(c, AN_EBUSY, "another backup is running (one at a time)");
        return;
    }
    pthread_t t;
    srv_call_ref(c);
    if (pthread_create(&t, NULL, backup_main, c) != 0) {
        srv_call_unref(c);
        atomic_store(&s->backup_running, false);
        srv_reply_code(c, AN_EINTERNAL, "cannot start the backup thread");
        return;
    }
    pthread_detach(t);
}

void srv_backup_on_write(struct srv_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    struct srv_bk *b = &c->bk;
    b->sending = false;
    if (ok && b->pending && !atomic_load(&c->closed)) {
        grpc_byte_buffer *bb = b->pending;
        b->pending = NULL;
        b->sending = srv_send(c, bb) == 0;
    } else if (b->pending) {
        grpc_byte_buffer_destroy(b->pending);
        b->pending = NULL;
    }
    bk_try_finish(c);
    pthread_mutex_unlock(&c->mu);
}

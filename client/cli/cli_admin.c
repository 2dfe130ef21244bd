/*
 * cli_admin.c - `annals backup DEST`, `annals verify DIR` and
 * `annals token new NAME`.
 *
 * backup asks a running server for a copy (an_backup) and prints its
 * progress on stderr. verify opens a data directory itself, offline: the
 * log through server/log (log_verify) and the views through projections/
 * (proj_check_dir); it must not run against a directory a live annalsd is
 * writing (use a backup). token draws 32 random bytes from the kernel.
 */
#include "cli_int.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "proj.h"

/* ---- backup ---- */

static void on_progress(void *arg, const struct an_backup_progress *p)
{
    const struct cli_args *a = arg;
    if (a->json) {
        json_t *j = json_pack("{s:s,s:i,s:i,s:I,s:I,s:b}", "step", p->step, "steps_done",
                              (int)p->steps_done, "steps_total", (int)p->steps_total,
                              "bytes_copied", (json_int_t)p->bytes_copied, "log_position",
                              (json_int_t)p->log_position, "done", p->done);
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (t) {
            printf("%s\n", t);
            fflush(stdout);
        }
        free(t);
        json_decref(j);
        return;
    }
    fprintf(stderr, "annals: backup: [%u/%u] %s copied%s\n", p->steps_done, p->steps_total,
            p->step, p->done ? "" : "");
}

int cli__cmd_backup(const struct cli_args *a)
{
    an_client *c;
    struct an_error err;
    uint64_t pos = 0;
    struct timespec t0, t1;
    int rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = an_backup(c, a->pos[0], on_progress, (void *)a, &pos, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    an_close(c);
    if (rc) {
        cli__call_error(a, NULL, rc, &err);
        return rc == AN_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (!a->json) {
        printf("backup of every event up to position %llu in %s (%.2f s)\n",
               (unsigned long long)pos, a->pos[0], secs);
    }
    return CLI_EXIT_OK;
}

/* ---- verify ---- */

static void on_log_progress(void *arg, uint64_t done, uint64_t total)
{
    const struct cli_args *a = arg;
    if (!a->json) {
        fprintf(stderr, "annals: verify: log %llu/%llu events\n", (unsigned long long)done,
                (unsigned long long)total);
    }
}

struct check_state {
    const struct cli_args *a;
    unsigned views;
};

static void on_view(void *arg, const char *name, uint64_t gen, bool rebuilding,
                    uint64_t checkpoint, uint64_t entries, const char *problem)
{
    struct check_state *st = arg;
    st->views++;
    if (st->a->json) {
        json_t *j = json_pack("{s:s,s:s,s:I,s:b,s:I,s:I,s:s?}", "check", "view", "name", name,
                              "generation", (json_int_t)gen, "rebuilding", rebuilding,
                              "checkpoint", (json_int_t)checkpoint, "entries",
                              (json_int_t)entries, "problem", problem);
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (t) {
            printf("%s\n", t);
        }
        free(t);
        json_decref(j);
        return;
    }
    printf("view %s (generation %llu%s): checkpoint %llu, %llu entries: %s\n", name,
           (unsigned long long)gen, rebuilding ? ", rebuilding" : "",
           (unsigned long long)checkpoint, (unsigned long long)entries,
           problem ? problem : "ok");
}

int cli__cmd_verify(const struct cli_args *a)
{
    char path[4096];
    char detail[LOG_DETAIL_MAX] = "";
    struct stat sb;
    snprintf(path, sizeof(path), "%s/log/data.mdb", a->pos[0]);
    if (stat(path, &sb) != 0) {
        cli__errf(a, "%s: no Annals log there (%s: %s)", a->pos[0], path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "%s/log", a->pos[0]);
    struct log_cfg cfg = {.dir = path};
    log_env *log = NULL;
    int rc = log_open(&cfg, &log, detail);
    if (rc) {
        cli__errf(a, "%s: cannot open the log: %s (%s)", path, detail, an_errname(rc));
        return CLI_EXIT_FAIL;
    }
    uint64_t head = log_head(log);
    rc = log_verify(log, on_log_progress, (void *)a, detail);
    log_close(log);
    bool ok = rc == 0;
    if (a->json) {
        json_t *j = json_pack("{s:s,s:I,s:b,s:s?}", "check", "log", "head", (json_int_t)head,
                              "ok", ok, "problem", ok ? NULL : detail);
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (t) {
            printf("%s\n", t);
        }
        free(t);
        json_decref(j);
    } else {
        printf("log: %llu events: %s\n", (unsigned long long)head, ok ? "ok" : detail);
    }
    snprintf(path, sizeof(path), "%s/projections/catalog/data.mdb", a->pos[0]);
    struct check_state st = {.a = a};
    if (stat(path, &sb) == 0) {
        snprintf(path, sizeof(path), "%s/projections", a->pos[0]);
        char pdetail[PROJ_DETAIL_MAX] = "";
        int prc = proj_check_dir(path, head, on_view, &st, pdetail);
        if (prc) {
            ok = false;
            if (!a->json) {
                printf("projections: %s\n", pdetail);
            }
        }
    }
    if (!ok) {
        cli__errf(a, "%s failed the check", a->pos[0]);
        return CLI_EXIT_FAIL;
    }
    if (!a->json) {
        printf("%s: ok (%llu events, %u views)\n", a->pos[0], (unsigned long long)head,
               st.views);
    }
    return CLI_EXIT_OK;
}

/* ---- token ---- */

int cli__cmd_token(const struct cli_args *a)
{
    uint8_t raw[32];
    char tok[2 * sizeof(raw) + 1];
    char hex[65];
    uint8_t h[32];
    unsigned hl = 0;
    if (strcmp(a->pos[0], "new") != 0) {
        cli__errf(a, "want 'token new NAME'");
        return CLI_EXIT_USAGE;
    }
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        cli__errf(a, "no randomness from the kernel: %s", strerror(errno));
        return CLI_EXIT_FAIL;
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        snprintf(tok + 2 * i, 3, "%02x", raw[i]);
    }
    EVP_Digest(tok, strlen(tok), h, &hl, EVP_sha256(), NULL);
    for (size_t i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    }
    json_t *entry = json_pack("{s:s,s:s,s:[]}", "name", a->pos[1], "token_sha256", hex,
                              "grants");
    char *e = entry ? json_dumps(entry, JSON_COMPACT) : NULL;
    json_decref(entry);
    if (!e) {
        cli__errf(a, "out of memory");
        return CLI_EXIT_FAIL;
    }
    if (a->json) {
        printf("{\"token\":\"%s\",\"entry\":%s}\n", tok, e);
    } else {
        printf("token: %s\n", tok);
        printf("add to the auth file's \"principals\" (then fill in its grants and send "
               "annalsd SIGHUP):\n%s\n", e);
    }
    free(e);
    return CLI_EXIT_OK;
}

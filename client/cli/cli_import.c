/*
 * cli_import.c - `annals import FILE`: appends the events of a JSON-lines
 * file over one pipelined AppendStream call (an_appender_*).
 *
 * The file is read twice. The first pass checks every line and counts the
 * events, so a malformed line is reported by number before anything is
 * sent, and the progress display knows the total for its ETA. The second
 * pass parses each line again and submits it as one append of one event
 * (EXPECT_ANY), so that the log keeps the file's order and a failure names
 * exactly one line. Blank lines are skipped.
 *
 * Results arrive on the appender's thread (import_done); the counters they
 * update are protected by import_state.lock, and the main thread reads them
 * to draw progress: a bar with rate and ETA, redrawn at most every 100 ms,
 * when stderr is a terminal, else a plain line every CLI_IMPORT_EVERY
 * events.
 */
#include "cli_int.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CLI_IMPORT_IN_FLIGHT 256u
#define CLI_IMPORT_EVERY 10000u
#define CLI_IMPORT_REDRAW_NS 100000000LL
#define CLI_IMPORT_BAR 30

/* One line, parsed. The strings are owned: import_line_free. */
struct import_line {
    const char *stream;         /* borrowed from root */
    const char *type;           /* borrowed from root */
    char *data;                 /* compact JSON text */
    char *metadata;             /* compact JSON text, or NULL */
    bool has_id;
    uint8_t id[16];
    json_t *root;
};

struct import_state {
    pthread_mutex_t lock;
    uint64_t n_ok;              /* lock: appends that succeeded */
    uint64_t n_failed;          /* lock: appends that failed */
    uint64_t first_fail_line;   /* lock: line of the first failure seen (0: none) */
    int first_fail_rc;          /* lock */
    struct an_error first_fail; /* lock */
    const uint64_t *line_of;    /* correlation id - 1 -> line number; read-only */
    uint64_t n_lines;           /* entries in line_of */
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- parsing a line ---- */

static void import_line_free(struct import_line *l)
{
    free(l->data);
    free(l->metadata);
    json_decref(l->root);
    memset(l, 0, sizeof(*l));
}

static bool blank(const char *s)
{
    for (; *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return false;
    }
    return true;
}

/* Parses one line; on failure writes why into why (and returns AN_EINVAL or
 * AN_ENOMEM). *out on success only. */
static int import_line_parse(const char *text, size_t len, struct import_line *out,
                             char *why, size_t why_len)
{
    struct import_line l = {0};
    json_error_t jerr;
    json_t *v;

    l.root = json_loadb(text, len, 0, &jerr);
    if (!l.root) {
        snprintf(why, why_len, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
        return AN_EINVAL;
    }
    if (!json_is_object(l.root)) {
        snprintf(why, why_len, "not a JSON object");
        goto out_invalid;
    }
    v = json_object_get(l.root, "stream");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        snprintf(why, why_len, "\"stream\" must be a non-empty string");
        goto out_invalid;
    }
    l.stream = json_string_value(v);
    v = json_object_get(l.root, "type");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        snprintf(why, why_len, "\"type\" must be a non-empty string");
        goto out_invalid;
    }
    l.type = json_string_value(v);
    v = json_object_get(l.root, "data");
    if (!v) {
        snprintf(why, why_len, "\"data\" is missing");
        goto out_invalid;
    }
    l.data = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!l.data) goto out_nomem;
    v = json_object_get(l.root, "id");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || cli__parse_uuid(json_string_value(v), l.id) != 0) {
            snprintf(why, why_len, "\"id\" must be a UUID (8-4-4-4-12 hex digits)");
            goto out_invalid;
        }
        l.has_id = true;
    }
    v = json_object_get(l.root, "metadata");
    if (v && !json_is_null(v)) {
        l.metadata = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!l.metadata) goto out_nomem;
    }
    *out = l;
    return 0;
out_nomem:
    snprintf(why, why_len, "out of memory");
    import_line_free(&l);
    return AN_ENOMEM;
out_invalid:
    import_line_free(&l);
    return AN_EINVAL;
}

/* First pass: checks every line, counts the events. CLI_EXIT_* */
static int import_check(const struct cli_args *a, FILE *f, uint64_t *n_events)
{
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t line_no = 0;
    uint64_t n = 0;
    char why[256];
    int rc = CLI_EXIT_OK;

    while ((len = getline(&buf, &cap, f)) >= 0) {
        struct import_line l;
        line_no++;
        if (blank(buf)) continue;
        if (import_line_parse(buf, (size_t)len, &l, why, sizeof(why)) != 0) {
            cli__errf(a, "%s: line %llu: %s", a->pos[0], (unsigned long long)line_no, why);
            rc = CLI_EXIT_FAIL;
            goto out_free;
        }
        import_line_free(&l);
        n++;
    }
    if (ferror(f)) {
        cli__errf(a, "%s: %s", a->pos[0], strerror(errno));
        rc = CLI_EXIT_FAIL;
        goto out_free;
    }
    *n_events = n;
out_free:
    free(buf);
    return rc;
}

/* ---- results and progress ---- */

static void import_done(void *arg, uint64_t correlation_id, int rc,
                        const struct an_append_result *res, const struct an_error *err)
{
    struct import_state *st = arg;
    (void)res;
    pthread_mutex_lock(&st->lock);
    if (rc == 0) {
        st->n_ok++;
    } else {
        uint64_t line = correlation_id >= 1 && correlation_id <= st->n_lines
                            ? st->line_of[correlation_id - 1]
                            : 0;
        st->n_failed++;
        /* Results may come in any order: report the earliest line. */
        if (!st->first_fail_line || (line && line < st->first_fail_line)) {
            st->first_fail_line = line ? line : UINT64_MAX;
            st->first_fail_rc = rc;
            if (err) {
                st->first_fail = *err;
            } else {
                memset(&st->first_fail, 0, sizeof(st->first_fail));
            }
        }
    }
    pthread_mutex_unlock(&st->lock);
}

struct progress {
    bool tty;
    int64_t start_ns;
    int64_t last_draw_ns;
    uint64_t next_line;         /* plain mode: the next count to report */
    uint64_t total;
};

static void progress_draw(struct progress *p, uint64_t done, bool final)
{
    int64_t now = now_ns();
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0;

    if (p->tty) {
        if (!final && now - p->last_draw_ns < CLI_IMPORT_REDRAW_NS) return;
        p->last_draw_ns = now;
        int fill = p->total ? (int)(done * CLI_IMPORT_BAR / p->total) : CLI_IMPORT_BAR;
        double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
        char bar[CLI_IMPORT_BAR + 1];
        for (int i = 0; i < CLI_IMPORT_BAR; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[CLI_IMPORT_BAR] = '\0';
        char eta_text[32] = "-:--";
        if (rate > 0) {
            snprintf(eta_text, sizeof(eta_text), "%d:%02d", (int)eta / 60, (int)eta % 60);
        }
        fprintf(stderr, "\r[%s] %3d%% %llu/%llu %.0f ev/s ETA %s   ", bar,
                p->total ? (int)(done * 100 / p->total) : 100, (unsigned long long)done,
                (unsigned long long)p->total, rate, eta_text);
        if (final) fputc('\n', stderr);
        return;
    }
    if (!final && done >= p->next_line) {
        p->next_line = (done / CLI_IMPORT_EVERY + 1) * CLI_IMPORT_EVERY;
        fprintf(stderr, "annals: import: %llu/%llu events, %.0f ev/s\n",
                (unsigned long long)done, (unsigned long long)p->total, rate);
    }
}

static uint64_t import_finished(struct import_state *st, bool *failed)
{
    uint64_t n;
    pthread_mutex_lock(&st->lock);
    n = st->n_ok + st->n_failed;
    *failed = st->n_failed > 0;
    pthread_mutex_unlock(&st->lock);
    return n;
}

/* ---- sending ---- */

static int submit_line(an_appender *ap, const struct import_line *l)
{
    struct an_event ev = {
        .id = l->has_id ? l->id : NULL,
        .type = l->type,
        .data = l->data,
        .data_len = strlen(l->data),
        .metadata = l->metadata,
        .metadata_len = l->metadata ? strlen(l->metadata) : 0,
        .content_type = "application/json",
    };
    struct an_stream_append sa = {.stream = l->stream, .events = &ev, .n_events = 1};
    return an_appender_submit(ap, &sa, 1, NULL);
}

/* Second pass: submits every line. Stops at the first failure seen.
 * Returns 0 or the submit's code. */
static int import_send(FILE *f, an_appender *ap, struct import_state *st, uint64_t *line_of,
                       struct progress *p)
{
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t line_no = 0;
    uint64_t n = 0;
    char why[256];
    bool failed = false;
    int rc = 0;

    while (!failed && n < st->n_lines && (len = getline(&buf, &cap, f)) >= 0) {
        struct import_line l;
        line_no++;
        if (blank(buf)) continue;
        rc = import_line_parse(buf, (size_t)len, &l, why, sizeof(why));
        if (rc != 0) break;         /* the file changed since the check */
        line_of[n++] = line_no;
        rc = submit_line(ap, &l);
        import_line_free(&l);
        if (rc != 0) break;
        progress_draw(p, import_finished(st, &failed), false);
    }
    free(buf);
    return rc;
}

/* Prints the outcome of an import. CLI_EXIT_* */
static int import_report(const struct cli_args *a, struct import_state *st, int rc,
                         uint64_t total, int64_t start_ns)
{
    double secs = (double)(now_ns() - start_ns) / 1e9;
    char where[320];

    if (st->n_failed) {
        const struct an_error *e = &st->first_fail;
        int frc = st->first_fail_rc;
        if (st->first_fail_line == UINT64_MAX) {
            snprintf(where, sizeof(where), "%s", a->pos[0]);
        } else {
            snprintf(where, sizeof(where), "%s: line %llu", a->pos[0],
                     (unsigned long long)st->first_fail_line);
        }
        if (frc == AN_ECONFLICT) {
            cli__errf(a, "%s: conflict on stream '%s': actual version %lld (%s); "
                      "%llu of %llu events imported", where, e->stream,
                      (long long)e->actual_version, an_errname(frc),
                      (unsigned long long)st->n_ok, (unsigned long long)total);
        } else {
            cli__errf(a, "%s: %s (%s); %llu of %llu events imported", where,
                      e->detail[0] ? e->detail : an_strerror(frc), an_errname(frc),
                      (unsigned long long)st->n_ok, (unsigned long long)total);
        }
        return CLI_EXIT_FAIL;
    }
    if (rc != 0) {
        cli__errf(a, "%s: %s (%s); %llu of %llu events imported", a->pos[0], an_strerror(rc),
                  an_errname(rc), (unsigned long long)st->n_ok, (unsigned long long)total);
        return CLI_EXIT_FAIL;
    }
    if (a->json) {
        json_t *o = json_pack("{s:I,s:f}", "imported", (json_int_t)st->n_ok, "seconds", secs);
        if (!o || json_dumpf(o, stdout, JSON_COMPACT) != 0) {
            json_decref(o);
            cli__errf(a, "cannot write the JSON output");
            return CLI_EXIT_FAIL;
        }
        json_decref(o);
        fputc('\n', stdout);
    } else {
        printf("imported %llu event%s in %.2f s\n", (unsigned long long)st->n_ok,
               st->n_ok == 1 ? "" : "s", secs);
    }
    return CLI_EXIT_OK;
}

int cli__cmd_import(const struct cli_args *a)
{
    struct import_state st = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct progress p = {.tty = isatty(STDERR_FILENO) == 1, .next_line = CLI_IMPORT_EVERY};
    uint64_t *line_of = NULL;
    an_client *c = NULL;
    an_appender *ap = NULL;
    bool failed;
    FILE *f;
    int rc;

    f = fopen(a->pos[0], "r");
    if (!f) {
        cli__errf(a, "%s: %s", a->pos[0], strerror(errno));
        return CLI_EXIT_FAIL;
    }
    rc = import_check(a, f, &p.total);
    if (rc != CLI_EXIT_OK) goto out_close_file;
    rewind(f);
    line_of = malloc((p.total ? p.total : 1) * sizeof(*line_of));
    if (!line_of) {
        cli__errf(a, "out of memory");
        rc = CLI_EXIT_FAIL;
        goto out_close_file;
    }
    st.line_of = line_of;
    st.n_lines = p.total;
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) goto out_free;
    rc = an_appender_open(c, CLI_IMPORT_IN_FLIGHT, import_done, &st, &ap);
    if (rc != 0) {
        cli__errf(a, "cannot start the import: %s (%s)", an_strerror(rc), an_errname(rc));
        rc = CLI_EXIT_FAIL;
        goto out_close_client;
    }
    p.start_ns = now_ns();
    rc = import_send(f, ap, &st, line_of, &p);
    int close_rc = an_appender_close(ap);
    if (rc == 0) rc = close_rc;
    progress_draw(&p, import_finished(&st, &failed), true);
    rc = import_report(a, &st, rc, p.total, p.start_ns);
out_close_client:
    an_close(c);
out_free:
    free(line_of);
out_close_file:
    fclose(f);
    return rc;
}

/*
 * cli_import.c - `annals import FILE|-`: appends the events of a JSON-lines
 * file, or of stdin, over one pipelined AppendStream call (an_appender_*).
 *
 * The input is read once, so it may be a pipe (`zcat x.gz | annals import
 * -`) and memory stays bounded whatever its size. Reading goes in two
 * phases:
 *
 *   1. The check window. Lines are read and checked, and their text is
 *     kept, until the input ends or CLI_IMPORT_CHECK_BYTES of it have been
 *     read. A malformed line here is reported by number and nothing is
 *     sent, so a small file (the common case) is all or nothing as far as
 *     the CLI can make it. When the input ends inside the window, the
 *     total is known and progress shows a percentage and an ETA.
 *   2. Streaming. The kept lines are sent, then the rest of the input is
 *     read, checked and sent line by line. A malformed line past the window
 *     stops the import there: the lines before it are stored, none after,
 *     and the report says so (line number and the count imported).
 *
 * Each line is sent as one append of one event (EXPECT_ANY), so the log
 * keeps the input's order and a failure names exactly one line. Blank lines
 * are skipped. The environment variable ANNALS_IMPORT_CHECK_BYTES
 * overrides the window (a test hook: it lets a test reach phase 2 with a
 * small input).
 *
 * Line numbers of results. Results arrive on the appender's thread
 * (import_done) with the correlation id, which is the event's ordinal
 * (1, 2, ...); its line is the ordinal plus the blank lines before it. Only
 * the blank lines are remembered (struct import_skips: one entry per run of
 * them), so memory does not grow with the number of events.
 *
 * The counters the callback updates are protected by import_state.lock,
 * and the main thread reads them to draw progress: a bar with rate and
 * ETA (or, total unknown, a count and rate), redrawn at most every 100 ms,
 * when stderr is a terminal, else a plain line every CLI_IMPORT_EVERY
 * events.
 */
#include "cli_int.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLI_IMPORT_IN_FLIGHT 256u
#define CLI_IMPORT_EVERY 10000u
#define CLI_IMPORT_REDRAW_NS 100000000LL
#define CLI_IMPORT_BAR 30
#define CLI_IMPORT_CHECK_BYTES (16u << 20)

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

/* One kept line of the check window. */
struct kept_line {
    char *text;                 /* owned */
    size_t len;
    uint64_t line_no;
};

/*
 * Blank lines seen before events: entry i says that from event ordinal
 * first[i] on, skipped[i] blank lines precede (first[] ascending).
 */
struct import_skips {
    uint64_t *first;
    uint64_t *skipped;
    size_t n;
    size_t cap;
};

struct import_state {
    pthread_mutex_t lock;
    uint64_t n_ok;              /* lock: appends that succeeded */
    uint64_t n_failed;          /* lock: appends that failed */
    uint64_t first_fail_line;   /* lock: line of the first failure seen (0: none) */
    int first_fail_rc;          /* lock */
    struct an_error first_fail; /* lock */
    struct import_skips skips;  /* lock: grows on the main thread */
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

/* ---- line numbers ---- */

/* Notes that `skipped` blank lines (in all) precede event `ordinal`.
 * Caller holds st->lock. 0 or AN_ENOMEM. */
static int skips_note(struct import_skips *s, uint64_t ordinal, uint64_t skipped)
{
    if (s->n && s->first[s->n - 1] == ordinal) {
        s->skipped[s->n - 1] = skipped;
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        uint64_t *f = realloc(s->first, cap * sizeof(*f));
        if (!f) return AN_ENOMEM;
        s->first = f;
        uint64_t *k = realloc(s->skipped, cap * sizeof(*k));
        if (!k) return AN_ENOMEM;
        s->skipped = k;
        s->cap = cap;
    }
    s->first[s->n] = ordinal;
    s->skipped[s->n] = skipped;
    s->n++;
    return 0;
}

/* The line number of event `ordinal` (1-based). Caller holds st->lock. */
static uint64_t skips_line(const struct import_skips *s, uint64_t ordinal)
{
    size_t lo = 0;
    size_t hi = s->n;

    /* the last entry with first <= ordinal */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->first[mid] <= ordinal) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return ordinal + (lo ? s->skipped[lo - 1] : 0);
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
        uint64_t line = correlation_id ? skips_line(&st->skips, correlation_id) : 0;
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
    bool total_known;           /* the input ended inside the check window */
    int64_t start_ns;
    int64_t last_draw_ns;
    uint64_t next_line;         /* plain mode: the next count to report */
    uint64_t total;
    FILE *f;                    /* the input, when a regular file: */
    uint64_t file_bytes;        /* its size (0: unknown, e.g. stdin) */
    const uint64_t *n_read;     /* events read from it so far */
};

static void progress_draw_tty(struct progress *p, uint64_t done, double rate, bool final)
{
    if (!p->total_known && p->file_bytes && !final) {
        /* the events are not counted yet, but the file's bytes are: a bar
         * by bytes read, and the ETA the byte rate gives */
        /* the file's event count, estimated from the bytes per event read
         * so far; the bar is the share of it sent */
        long at = ftell(p->f);
        double est = at > 0 && *p->n_read
                         ? (double)*p->n_read * (double)p->file_bytes / (double)at : 0;
        double frac = est > 0 ? (double)done / est : 0;
        frac = frac > 1 ? 1 : frac;
        int fill = (int)(frac * CLI_IMPORT_BAR);
        char bar[CLI_IMPORT_BAR + 1];
        for (int i = 0; i < CLI_IMPORT_BAR; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[CLI_IMPORT_BAR] = '\0';
        double secs = (double)(now_ns() - p->start_ns) / 1e9;
        char eta_text[32] = "-:--";
        if (frac > 0.001 && secs > 0) {
            double eta = secs * (1 - frac) / frac;
            snprintf(eta_text, sizeof(eta_text), "%d:%02d", (int)eta / 60, (int)eta % 60);
        }
        fprintf(stderr, "\r\033[K[%s] %3d%% %llu events %.0f ev/s ETA %s", bar, (int)(frac * 100),
                (unsigned long long)done, rate, eta_text);
        return;
    }
    if (!p->total_known) {
        fprintf(stderr, "\r\033[K%llu events %.0f ev/s", (unsigned long long)done, rate);
        if (final) fputc('\n', stderr);
        return;
    }
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
}

static void progress_draw(struct progress *p, uint64_t done, bool final)
{
    int64_t now = now_ns();
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0;

    if (p->tty) {
        if (!final && now - p->last_draw_ns < CLI_IMPORT_REDRAW_NS) return;
        p->last_draw_ns = now;
        progress_draw_tty(p, done, rate, final);
        return;
    }
    if (!final && done >= p->next_line) {
        p->next_line = (done / CLI_IMPORT_EVERY + 1) * CLI_IMPORT_EVERY;
        if (p->total_known) {
            fprintf(stderr, "annals: import: %llu/%llu events, %.0f ev/s\n",
                    (unsigned long long)done, (unsigned long long)p->total, rate);
        } else {
            fprintf(stderr, "annals: import: %llu events, %.0f ev/s\n",
                    (unsigned long long)done, rate);
        }
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

/* ---- reading ---- */

/* The input: a file or stdin, and where it stands. */
struct import_src {
    FILE *f;
    const char *name;           /* for messages: the path, or "stdin" */
    char *buf;                  /* getline's buffer */
    size_t cap;
    uint64_t line_no;           /* of the last line read */
    uint64_t n_events;          /* non-blank lines read so far */
    uint64_t n_blank;           /* blank lines read so far */
    struct kept_line *kept;     /* the check window */
    size_t n_kept;
    size_t kept_cap;
    bool eof;
    uint64_t bad_line;          /* a malformed line was read (0: none) */
    char why[256];              /* and why */
};

/* Reads the next non-blank line into src->buf and notes blank lines
 * before it. Returns its length, 0 at the end of the input, -1 on a read
 * error (errno set) or out of memory (ENOMEM). */
static ssize_t src_next(struct import_src *src, struct import_state *st)
{
    ssize_t len;

    while ((len = getline(&src->buf, &src->cap, src->f)) >= 0) {
        src->line_no++;
        if (blank(src->buf)) {
            src->n_blank++;
            continue;
        }
        src->n_events++;
        if (src->n_blank) {
            pthread_mutex_lock(&st->lock);
            int rc = skips_note(&st->skips, src->n_events, src->n_blank);
            pthread_mutex_unlock(&st->lock);
            if (rc) {
                errno = ENOMEM;
                return -1;
            }
        }
        return len;
    }
    if (ferror(src->f)) return -1;
    src->eof = true;
    return 0;
}

static size_t check_window_bytes(void)
{
    const char *s = getenv("ANNALS_IMPORT_CHECK_BYTES");
    char *end = NULL;
    unsigned long long v;

    if (!s || !*s) return CLI_IMPORT_CHECK_BYTES;
    v = strtoull(s, &end, 10);
    return *end || v == 0 ? CLI_IMPORT_CHECK_BYTES : (size_t)v;
}

/* Phase 1: reads and checks lines until the input ends or the window is
 * full, keeping their text. CLI_EXIT_* (a bad line is reported). */
static int import_check_window(const struct cli_args *a, struct import_src *src,
                               struct import_state *st)
{
    size_t window = check_window_bytes();
    size_t bytes = 0;
    ssize_t len;

    while (bytes < window && (len = src_next(src, st)) > 0) {
        struct import_line l;
        if (import_line_parse(src->buf, (size_t)len, &l, src->why, sizeof(src->why)) != 0) {
            cli__errf(a, "%s: line %llu: %s; nothing imported", src->name,
                      (unsigned long long)src->line_no, src->why);
            return CLI_EXIT_FAIL;
        }
        import_line_free(&l);
        if (src->n_kept == src->kept_cap) {
            size_t cap = src->kept_cap ? src->kept_cap * 2 : 256;
            struct kept_line *k = realloc(src->kept, cap * sizeof(*k));
            if (!k) goto out_nomem;
            src->kept = k;
            src->kept_cap = cap;
        }
        struct kept_line *k = &src->kept[src->n_kept];
        k->text = malloc((size_t)len);
        if (!k->text) goto out_nomem;
        memcpy(k->text, src->buf, (size_t)len);
        k->len = (size_t)len;
        k->line_no = src->line_no;
        src->n_kept++;
        bytes += (size_t)len;
    }
    if (!src->eof && bytes < window) {
        cli__errf(a, "%s: %s", src->name, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
out_nomem:
    cli__errf(a, "out of memory");
    return CLI_EXIT_FAIL;
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

/* Parses and submits one line that was checked already (or is checked
 * now: a bad line sets src->bad_line). Returns 0, AN_EINVAL (bad line) or
 * the submit's code. */
static int send_text(struct import_src *src, an_appender *ap, const char *text, size_t len,
                     uint64_t line_no)
{
    struct import_line l;
    int rc = import_line_parse(text, len, &l, src->why, sizeof(src->why));

    if (rc != 0) {
        src->bad_line = line_no;
        return rc;
    }
    rc = submit_line(ap, &l);
    import_line_free(&l);
    return rc;
}

/* Phase 2: sends the kept lines, then streams the rest. Stops at the first
 * failure seen. Returns 0, AN_EINVAL (src->bad_line set), AN_EIO (a read
 * error, errno logged by the caller) or the submit's code. */
static int import_send(struct import_src *src, an_appender *ap, struct import_state *st,
                       struct progress *p)
{
    bool failed = false;
    ssize_t len;
    int rc = 0;

    for (size_t i = 0; i < src->n_kept && !failed; i++) {
        struct kept_line *k = &src->kept[i];
        rc = send_text(src, ap, k->text, k->len, k->line_no);
        free(k->text);
        k->text = NULL;
        if (rc != 0) return rc;
        progress_draw(p, import_finished(st, &failed), false);
    }
    while (!failed && !src->eof) {
        len = src_next(src, st);
        if (len < 0) return AN_EIO;
        if (len == 0) break;
        rc = send_text(src, ap, src->buf, (size_t)len, src->line_no);
        if (rc != 0) return rc;
        progress_draw(p, import_finished(st, &failed), false);
    }
    return 0;
}

/* Prints the outcome of an import. CLI_EXIT_* */
static int import_report(const struct cli_args *a, const struct import_src *src,
                         struct import_state *st, int rc, int64_t start_ns)
{
    double secs = (double)(now_ns() - start_ns) / 1e9;
    unsigned long long n_ok = (unsigned long long)st->n_ok;
    char where[320];

    if (st->n_failed) {
        const struct an_error *e = &st->first_fail;
        int frc = st->first_fail_rc;
        if (st->first_fail_line == UINT64_MAX) {
            snprintf(where, sizeof(where), "%s", src->name);
        } else {
            snprintf(where, sizeof(where), "%s: line %llu", src->name,
                     (unsigned long long)st->first_fail_line);
        }
        if (frc == AN_ECONFLICT) {
            cli__errf(a, "%s: conflict on stream '%s': actual version %lld (%s); "
                      "%llu of %llu events imported", where, e->stream,
                      (long long)e->actual_version, an_errname(frc), n_ok,
                      (unsigned long long)src->n_events);
        } else {
            cli__errf(a, "%s: %s (%s); %llu of %llu events imported", where,
                      e->detail[0] ? e->detail : an_strerror(frc), an_errname(frc), n_ok,
                      (unsigned long long)src->n_events);
        }
        return CLI_EXIT_FAIL;
    }
    if (src->bad_line) {
        cli__errf(a, "%s: line %llu: %s; %llu events before it imported, none after",
                  src->name, (unsigned long long)src->bad_line, src->why, n_ok);
        return CLI_EXIT_FAIL;
    }
    if (rc == AN_EIO) {
        cli__errf(a, "%s: reading: %s; %llu events imported", src->name, strerror(errno), n_ok);
        return CLI_EXIT_FAIL;
    }
    if (rc != 0) {
        cli__errf(a, "%s: %s (%s); %llu events imported", src->name, an_strerror(rc),
                  an_errname(rc), n_ok);
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
        printf("imported %llu event%s in %.2f s\n", n_ok, st->n_ok == 1 ? "" : "s", secs);
    }
    return CLI_EXIT_OK;
}

static void src_free(struct import_src *src)
{
    for (size_t i = 0; i < src->n_kept; i++) {
        free(src->kept[i].text);
    }
    free(src->kept);
    free(src->buf);
    if (src->f && src->f != stdin) {
        fclose(src->f);
    }
}

int cli__cmd_import(const struct cli_args *a)
{
    struct import_state st = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct progress p = {.tty = isatty(STDERR_FILENO) == 1, .next_line = CLI_IMPORT_EVERY};
    struct import_src src = {.name = a->pos[0]};
    an_client *c = NULL;
    an_appender *ap = NULL;
    bool failed;
    int rc;

    if (strcmp(a->pos[0], "-") == 0) {
        src.f = stdin;
        src.name = "stdin";
    } else {
        src.f = fopen(a->pos[0], "r");
        if (!src.f) {
            cli__errf(a, "%s: %s", a->pos[0], strerror(errno));
            return CLI_EXIT_FAIL;
        }
    }
    rc = import_check_window(a, &src, &st);
    if (rc != CLI_EXIT_OK) goto out_free;
    p.total_known = src.eof;
    p.total = src.n_events;
    struct stat sb;
    if (src.f != stdin && fstat(fileno(src.f), &sb) == 0 && S_ISREG(sb.st_mode)) {
        p.f = src.f;
        p.file_bytes = (uint64_t)sb.st_size;
        p.n_read = &src.n_events;
    }
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) goto out_free;
    rc = an_appender_open(c, CLI_IMPORT_IN_FLIGHT, import_done, &st, &ap);
    if (rc != 0) {
        cli__errf(a, "cannot start the import: %s (%s)", an_strerror(rc), an_errname(rc));
        rc = CLI_EXIT_FAIL;
        goto out_close_client;
    }
    p.start_ns = now_ns();
    rc = import_send(&src, ap, &st, &p);
    int saved_errno = errno;
    int close_rc = an_appender_close(ap);
    if (rc == 0) rc = close_rc;
    p.total = src.n_events;
    progress_draw(&p, import_finished(&st, &failed), true);
    errno = saved_errno;
    rc = import_report(a, &src, &st, rc, p.start_ns);
out_close_client:
    an_close(c);
out_free:
    src_free(&src);
    free(st.skips.first);
    free(st.skips.skipped);
    return rc;
}

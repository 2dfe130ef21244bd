/*
 * cli_proj.c - `annals projection create|list|get|rebuild|delete` and
 * `annals view NAME KEY` / `annals view scan NAME`.
 *
 * A status prints as one line (name, kind, state, checkpoint of head,
 * applied, error), or with --json as one object. `projection rebuild`
 * starts the rebuild, then follows it until the state leaves REBUILDING:
 * a bar with events/s on a terminal, plain lines otherwise. `view` prints
 * the entry's value (the JSON text) and its position; a key without a
 * value prints "not found" and exits 1.
 */
#include "cli_int.h"

#include <inttypes.h>
#include <jansson.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *kind_name(enum an_proj_kind k)
{
    switch (k) {
    case AN_PROJ_STREAM_STATE:
        return "stream_state";
    case AN_PROJ_COUNT:
        return "count";
    case AN_PROJ_INDEX:
        return "index";
    case AN_PROJ_STREAMS:
        return "streams";
    }
    return "unspecified";
}

static const char *state_name(enum an_proj_state s)
{
    switch (s) {
    case AN_PROJ_RUNNING:
        return "RUNNING";
    case AN_PROJ_REBUILDING:
        return "REBUILDING";
    case AN_PROJ_FAULTED:
        return "FAULTED";
    case AN_PROJ_PAUSED:
        return "PAUSED";
    }
    return "UNSPECIFIED";
}

static void print_status(const struct cli_args *a, const struct an_projection_status *s)
{
    if (a->json) {
        json_t *j = json_pack("{s:s,s:s,s:s,s:b,s:s,s:I,s:I,s:I,s:I,s:s}", "name", s->name,
                              "kind", kind_name(s->kind), "key", s->key, "latest_only",
                              s->latest_only, "state", state_name(s->state), "checkpoint",
                              (json_int_t)s->checkpoint, "head", (json_int_t)s->head,
                              "events_applied", (json_int_t)s->events_applied,
                              "rebuild_checkpoint", (json_int_t)s->rebuild_checkpoint, "error",
                              s->error);
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (t) {
            printf("%s\n", t);
        }
        free(t);
        json_decref(j);
        return;
    }
    printf("%s %s%s%s %s checkpoint %" PRIu64 " of %" PRIu64 ", %" PRIu64 " applied%s%s\n",
           s->name, kind_name(s->kind), s->key[0] ? " " : "", s->key, state_name(s->state),
           s->checkpoint, s->head, s->events_applied, s->error[0] ? ": " : "", s->error);
}

static int parse_kind(const struct cli_args *a, enum an_proj_kind *out)
{
    static const struct {
        const char *name;
        enum an_proj_kind kind;
    } kinds[] = {{"count", AN_PROJ_COUNT},
                 {"stream_state", AN_PROJ_STREAM_STATE},
                 {"index", AN_PROJ_INDEX},
                 {"streams", AN_PROJ_STREAMS}};
    const char *v = a->set[CLI_F_KIND] ? a->val[CLI_F_KIND] : "";
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(v, kinds[i].name) == 0) {
            *out = kinds[i].kind;
            return CLI_EXIT_OK;
        }
    }
    cli__errf(a, "--kind '%s': want count, stream_state, index or streams", v);
    return CLI_EXIT_USAGE;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Follows a rebuild until it leaves REBUILDING. */
static int follow_rebuild(const struct cli_args *a, an_client *c, const char *name)
{
    bool tty = isatty(STDERR_FILENO) == 1;
    int64_t t0 = now_ms();
    int64_t last_line = 0;
    struct an_projection_status st;
    struct an_error err;
    for (;;) {
        int rc = an_projection_get(c, name, &st, &err);
        if (rc) {
            cli__call_error(a, NULL, rc, &err);
            return CLI_EXIT_FAIL;
        }
        double secs = (double)(now_ms() - t0) / 1000;
        double rate = secs > 0 ? (double)st.rebuild_checkpoint / secs : 0;
        if (st.state != AN_PROJ_REBUILDING) {
            if (tty) {
                fprintf(stderr, "\r\033[K");
            }
            fprintf(stderr, "annals: projection: rebuilt %s in %.1f s\n", name, secs);
            print_status(a, &st);
            return st.state == AN_PROJ_FAULTED ? CLI_EXIT_FAIL : CLI_EXIT_OK;
        }
        double frac = st.head ? (double)st.rebuild_checkpoint / (double)st.head : 0;
        if (tty) {
            char bar[31];
            for (int i = 0; i < 30; i++) {
                bar[i] = i < (int)(frac * 30) ? '#' : '.';
            }
            bar[30] = '\0';
            fprintf(stderr, "\r\033[K[%s] %3d%% %" PRIu64 "/%" PRIu64 " %.0f events/s", bar,
                    (int)(frac * 100), st.rebuild_checkpoint, st.head, rate);
        } else if (now_ms() - last_line >= 1000) {
            last_line = now_ms();
            fprintf(stderr, "annals: projection: rebuilding %s: %" PRIu64 "/%" PRIu64
                            ", %.0f events/s\n",
                    name, st.rebuild_checkpoint, st.head, rate);
        }
        usleep(100000);
    }
}

int cli__cmd_projection(const struct cli_args *a)
{
    const char *sub = a->pos[0];
    const char *name = a->n_pos > 1 ? a->pos[1] : NULL;
    struct an_projection_status st;
    struct an_error err;
    an_client *c = NULL;
    int rc;
    bool needs_name = strcmp(sub, "list") != 0;
    if (strcmp(sub, "create") != 0 && strcmp(sub, "list") != 0 && strcmp(sub, "get") != 0 &&
        strcmp(sub, "rebuild") != 0 && strcmp(sub, "delete") != 0) {
        cli__errf(a, "'%s': want create, list, get, rebuild or delete", sub);
        return CLI_EXIT_USAGE;
    }
    if (needs_name != (name != NULL)) {
        cli__errf(a, needs_name ? "%s needs a NAME" : "%s takes no NAME", sub);
        return CLI_EXIT_USAGE;
    }
    struct an_projection_def d = {.name = name};
    if (strcmp(sub, "create") == 0) {
        rc = parse_kind(a, &d.kind);
        if (rc != CLI_EXIT_OK) return rc;
        d.key = a->set[CLI_F_KEY] ? a->val[CLI_F_KEY] : NULL;
        d.sum = a->set[CLI_F_SUM] ? a->val[CLI_F_SUM] : NULL;
        d.latest_only = a->set[CLI_F_LATEST_ONLY];
        d.stream_prefixes = (const char *const *)a->list[CLI_F_PREFIX];
        d.n_stream_prefixes = a->n_list[CLI_F_PREFIX];
        d.event_types = (const char *const *)a->list[CLI_F_TYPE];
        d.n_event_types = a->n_list[CLI_F_TYPE];
    }
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    if (strcmp(sub, "create") == 0) {
        rc = an_projection_create(c, &d, &st, &err);
    } else if (strcmp(sub, "get") == 0) {
        rc = an_projection_get(c, name, &st, &err);
    } else if (strcmp(sub, "rebuild") == 0) {
        rc = an_projection_rebuild(c, name, &st, &err);
    } else if (strcmp(sub, "delete") == 0) {
        rc = an_projection_delete(c, name, &err);
    } else {
        struct an_projection_status *all = NULL;
        size_t n = 0;
        rc = an_projection_list(c, &all, &n, &err);
        for (size_t i = 0; !rc && i < n; i++) {
            print_status(a, &all[i]);
        }
        free(all);
    }
    if (rc) {
        cli__call_error(a, NULL, rc, &err);
        an_close(c);
        return rc == AN_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    if (strcmp(sub, "rebuild") == 0) {
        rc = follow_rebuild(a, c, name);
    } else if (strcmp(sub, "delete") == 0) {
        if (!a->json) {
            printf("deleted %s\n", name);
        }
        rc = CLI_EXIT_OK;
    } else if (strcmp(sub, "list") != 0) {
        print_status(a, &st);
        rc = CLI_EXIT_OK;
    }
    an_close(c);
    return rc;
}

/* ---- views ---- */

static void print_entry(const struct cli_args *a, const struct an_view_entry *e)
{
    if (a->json) {
        json_error_t je;
        json_t *v = e->found ? json_loadb(e->value, e->value_len, JSON_DECODE_ANY, &je) : NULL;
        json_t *j = json_pack("{s:s,s:b,s:I,s:o?}", "key", e->key, "found", e->found,
                              "position", (json_int_t)e->position, "value", v);
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (t) {
            printf("%s\n", t);
        }
        free(t);
        json_decref(j);
        return;
    }
    if (!e->found) {
        printf("%s: not found\n", e->key);
        return;
    }
    printf("%s #%" PRIu64 " %s\n", e->key, e->position, e->value);
}

static bool on_scan(void *arg, const struct an_view_entry *e)
{
    print_entry(arg, e);
    return true;
}

int cli__cmd_view(const struct cli_args *a)
{
    struct an_as_of as_of;
    uint64_t min_position = 0;
    uint64_t limit = 0;
    struct an_error err;
    an_client *c = NULL;
    bool scan = strcmp(a->pos[0], "scan") == 0;
    int rc;
    if (scan ? a->n_pos != 2 : a->n_pos != 2) {
        cli__errf(a, scan ? "want 'view scan NAME'" : "want 'view NAME KEY'");
        return CLI_EXIT_USAGE;
    }
    rc = cli__flag_as_of(a, &as_of);
    if (rc != CLI_EXIT_OK) return rc;
    if (a->set[CLI_F_MIN_POSITION]) {
        rc = cli__flag_u64(a, CLI_F_MIN_POSITION, UINT64_MAX, &min_position);
        if (rc != CLI_EXIT_OK) return rc;
    }
    if (a->set[CLI_F_LIMIT]) {
        rc = cli__flag_u64(a, CLI_F_LIMIT, UINT32_MAX, &limit);
        if (rc != CLI_EXIT_OK) return rc;
    }
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    if (scan) {
        struct an_scan_opts o = {
            .view = a->pos[1],
            .key_prefix = a->n_list[CLI_F_PREFIX] ? a->list[CLI_F_PREFIX][0] : NULL,
            .limit = (uint32_t)limit,
            .as_of = as_of,
            .min_position = min_position,
        };
        rc = an_scan_view(c, &o, on_scan, (void *)a, &err);
        if (rc) {
            cli__call_error(a, NULL, rc, &err);
        }
        an_close(c);
        return rc ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    }
    struct an_view_entry e;
    rc = an_get_view(c, a->pos[0], a->pos[1], &as_of, min_position, &e, &err);
    an_close(c);
    if (rc) {
        cli__call_error(a, NULL, rc, &err);
        return CLI_EXIT_FAIL;
    }
    print_entry(a, &e);
    bool found = e.found;
    an_view_entry_free(&e);
    return found ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

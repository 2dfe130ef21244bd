/*
 * cli_cmds.c - the one-call subcommands of `annals`: append, read,
 * read-all, stream, delete and health. Each parses its flags (usage
 * errors first, before connecting), makes its call through libannals and
 * prints the outcome, as text or, with --json, as one JSON object per line.
 */
#include "cli_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- output ---- */

/* Prints a JSON object on one line and frees it. CLI_EXIT_* */
static int print_json_obj(const struct cli_args *a, json_t *o)
{
    int rc = CLI_EXIT_OK;
    if (!o || json_dumpf(o, stdout, JSON_COMPACT) != 0 || fputc('\n', stdout) == EOF) {
        cli__errf(a, "cannot write the JSON output");
        rc = CLI_EXIT_FAIL;
    }
    json_decref(o);
    return rc;
}

/* ---- append ---- */

/* Reads all of stdin into a malloc'd buffer. 0, AN_ENOMEM or AN_EIO. */
static int read_stdin(uint8_t **out, size_t *out_len)
{
    size_t cap = 4096;
    size_t len = 0;
    uint8_t *buf = malloc(cap);

    if (!buf) return AN_ENOMEM;
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, stdin);
        len += n;
        if (n == 0) break;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return AN_ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(stdin)) {
        free(buf);
        return AN_EIO;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* The expectation flags of append (at most one of them). */
static int append_expect(const struct cli_args *a, struct an_stream_append *sa)
{
    int n = a->set[CLI_F_EXPECT_VERSION] + a->set[CLI_F_EXPECT_NO_STREAM] +
            a->set[CLI_F_EXPECT_EXISTS];
    if (n > 1) {
        cli__errf(a, "--expect-version, --expect-no-stream and --expect-exists "
                  "exclude each other");
        return CLI_EXIT_USAGE;
    }
    if (a->set[CLI_F_EXPECT_NO_STREAM]) sa->expect = AN_EXPECT_NO_STREAM;
    if (a->set[CLI_F_EXPECT_EXISTS]) sa->expect = AN_EXPECT_STREAM_EXISTS;
    if (a->set[CLI_F_EXPECT_VERSION]) {
        sa->expect = AN_EXPECT_VERSION;
        return cli__flag_u64(a, CLI_F_EXPECT_VERSION, UINT64_MAX, &sa->expected_version);
    }
    return CLI_EXIT_OK;
}

static int print_append(const struct cli_args *a, const char *stream,
                        const struct an_append_result *r)
{
    char when[48];
    uint64_t first_v = r->n_streams ? r->streams[0].first_version : 0;
    uint64_t last_v = r->n_streams ? r->streams[0].last_version : 0;

    cli__format_time(r->recorded_at_ns, when, sizeof(when));
    if (a->json) {
        return print_json_obj(a, json_pack("{s:I,s:I,s:s,s:I,s:I,s:s}",
                                           "first_position", (json_int_t)r->first_position,
                                           "last_position", (json_int_t)r->last_position,
                                           "stream", stream,
                                           "first_version", (json_int_t)first_v,
                                           "last_version", (json_int_t)last_v,
                                           "recorded_at", when));
    }
    printf("#%" PRIu64 " %s@%" PRIu64 " %s\n", r->first_position, stream, first_v, when);
    return CLI_EXIT_OK;
}

int cli__cmd_append(const struct cli_args *a)
{
    struct an_event ev = {.type = a->pos[1]};
    struct an_stream_append sa = {.stream = a->pos[0], .events = &ev, .n_events = 1};
    struct an_append_result res;
    struct an_error err;
    uint8_t id[16];
    uint8_t *stdin_data = NULL;
    json_t *meta = NULL;
    char *meta_text = NULL;
    an_client *c = NULL;
    int rc;

    rc = append_expect(a, &sa);
    if (rc != CLI_EXIT_OK) return rc;
    if (a->set[CLI_F_ID]) {
        if (cli__parse_uuid(a->val[CLI_F_ID], id) != 0) {
            cli__errf(a, "--id: '%s' is not a UUID (8-4-4-4-12 hex digits)", a->val[CLI_F_ID]);
            return CLI_EXIT_USAGE;
        }
        ev.id = id;
    }
    if (a->set[CLI_F_METADATA]) {
        json_error_t jerr;
        meta = json_loads(a->val[CLI_F_METADATA], JSON_DECODE_ANY, &jerr);
        if (!meta) {
            cli__errf(a, "--metadata: not JSON: %s", jerr.text);
            return CLI_EXIT_USAGE;
        }
        meta_text = json_dumps(meta, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(meta);
        if (!meta_text) {
            cli__errf(a, "out of memory");
            return CLI_EXIT_FAIL;
        }
        ev.metadata = meta_text;
        ev.metadata_len = strlen(meta_text);
    }
    if (a->n_pos > 2 && strcmp(a->pos[2], "-") == 0) {
        size_t len = 0;
        rc = read_stdin(&stdin_data, &len);
        if (rc != 0) {
            cli__errf(a, "reading the data from stdin: %s", an_strerror(rc));
            rc = CLI_EXIT_FAIL;
            goto out_free;
        }
        ev.data = stdin_data;
        ev.data_len = len;
    } else if (a->n_pos > 2) {
        ev.data = a->pos[2];
        ev.data_len = strlen(a->pos[2]);
    }
    if (a->set[CLI_F_CONTENT_TYPE]) {
        ev.content_type = a->val[CLI_F_CONTENT_TYPE];
    } else if (ev.data_len) {
        json_t *probe = json_loadb(ev.data, ev.data_len, JSON_DECODE_ANY, NULL);
        ev.content_type = probe ? "application/json" : NULL;
        json_decref(probe);
    }
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) goto out_free;
    rc = an_append(c, &sa, 1, &res, &err);
    if (rc != 0) {
        cli__call_error(a, sa.stream, rc, &err);
        rc = CLI_EXIT_FAIL;
        goto out_close;
    }
    rc = print_append(a, sa.stream, &res);
out_close:
    an_close(c);
out_free:
    free(stdin_data);
    free(meta_text);
    return rc;
}

/* ---- read, read-all ---- */

/* Prints every event of the iterator; names the stream (NULL: none) in an
 * error. Frees the iterator. */
static int drain(const struct cli_args *a, an_iter *it, const char *stream)
{
    const Annals__V1__RecordedEvent *ev;
    struct an_error err;
    int rc;

    while ((rc = an_iter_next(it, &ev, &err)) == 1) {
        if (cli__print_event(stdout, ev, a->json) != 0) {
            cli__errf(a, "writing the output: %s", strerror(errno));
            an_iter_free(it);
            return CLI_EXIT_FAIL;
        }
    }
    an_iter_free(it);
    if (rc < 0) {
        cli__call_error(a, stream, rc, &err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* --limit, --back and --from shared by read and read-all; the out-params
 * are written on success only. */
static int read_common(const struct cli_args *a, uint32_t *max_count, bool *back,
                       bool *from_end, uint64_t *from)
{
    uint64_t limit = 0;
    uint64_t start = 0;
    int rc;

    if (a->set[CLI_F_LIMIT]) {
        rc = cli__flag_u64(a, CLI_F_LIMIT, UINT32_MAX, &limit);
        if (rc != CLI_EXIT_OK) return rc;
        if (limit == 0) {
            cli__errf(a, "--limit: must be at least 1");
            return CLI_EXIT_USAGE;
        }
    }
    if (a->set[CLI_F_FROM]) {
        rc = cli__flag_u64(a, CLI_F_FROM, UINT64_MAX, &start);
        if (rc != CLI_EXIT_OK) return rc;
    }
    *max_count = (uint32_t)limit;
    *from = start;
    *back = a->set[CLI_F_BACK];
    *from_end = *back && !a->set[CLI_F_FROM];
    return CLI_EXIT_OK;
}

int cli__cmd_read(const struct cli_args *a)
{
    struct an_read_stream_opts o = {.stream = a->pos[0]};
    an_client *c = NULL;
    an_iter *it = NULL;
    int rc;

    rc = read_common(a, &o.max_count, &o.backwards, &o.from_end, &o.from_version);
    if (rc != CLI_EXIT_OK) return rc;
    rc = cli__flag_as_of(a, &o.as_of);
    if (rc != CLI_EXIT_OK) return rc;
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    rc = an_read_stream(c, &o, &it);
    if (rc != 0) {
        cli__errf(a, "stream '%s': %s", o.stream, an_strerror(rc));
        rc = CLI_EXIT_FAIL;
        goto out_close;
    }
    rc = drain(a, it, o.stream);
out_close:
    an_close(c);
    return rc;
}

int cli__cmd_read_all(const struct cli_args *a)
{
    struct an_read_all_opts o = {
        .stream_prefixes = a->list[CLI_F_PREFIX],
        .n_stream_prefixes = a->n_list[CLI_F_PREFIX],
        .event_types = a->list[CLI_F_TYPE],
        .n_event_types = a->n_list[CLI_F_TYPE],
    };
    an_client *c = NULL;
    an_iter *it = NULL;
    int rc;

    rc = read_common(a, &o.max_count, &o.backwards, &o.from_end, &o.from_position);
    if (rc != CLI_EXIT_OK) return rc;
    rc = cli__flag_as_of(a, &o.as_of);
    if (rc != CLI_EXIT_OK) return rc;
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    rc = an_read_all(c, &o, &it);
    if (rc != 0) {
        cli__errf(a, "read-all: %s", an_strerror(rc));
        rc = CLI_EXIT_FAIL;
        goto out_close;
    }
    rc = drain(a, it, NULL);
out_close:
    an_close(c);
    return rc;
}

/* ---- stream ---- */

static int print_stream_info(const struct cli_args *a, const char *name,
                             const struct an_stream_info *si)
{
    char created[48];
    char updated[48];

    cli__format_time(si->created_unix_nanos, created, sizeof(created));
    cli__format_time(si->updated_unix_nanos, updated, sizeof(updated));
    if (a->json) {
        return print_json_obj(a, json_pack("{s:s,s:I,s:I,s:I,s:I,s:s,s:s,s:b,s:b}",
                                           "stream", name,
                                           "last_version", (json_int_t)si->last_version,
                                           "event_count", (json_int_t)si->event_count,
                                           "first_position", (json_int_t)si->first_position,
                                           "last_position", (json_int_t)si->last_position,
                                           "created_at", created,
                                           "updated_at", updated,
                                           "deleted", si->deleted,
                                           "tombstoned", si->tombstoned));
    }
    printf("stream:         %s\n"
           "last_version:   %" PRIu64 "\n"
           "event_count:    %" PRIu64 "\n"
           "first_position: %" PRIu64 "\n"
           "last_position:  %" PRIu64 "\n"
           "created_at:     %s\n"
           "updated_at:     %s\n"
           "deleted:        %s\n"
           "tombstoned:     %s\n",
           name, si->last_version, si->event_count, si->first_position, si->last_position,
           created, updated, si->deleted ? "yes" : "no", si->tombstoned ? "yes" : "no");
    return CLI_EXIT_OK;
}

int cli__cmd_stream(const struct cli_args *a)
{
    struct an_as_of as_of;
    struct an_stream_info si;
    struct an_error err;
    an_client *c = NULL;
    int rc;

    rc = cli__flag_as_of(a, &as_of);
    if (rc != CLI_EXIT_OK) return rc;
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    rc = an_get_stream(c, a->pos[0], &as_of, &si, &err);
    if (rc != 0) {
        cli__call_error(a, a->pos[0], rc, &err);
        rc = CLI_EXIT_FAIL;
    } else {
        rc = print_stream_info(a, a->pos[0], &si);
    }
    an_close(c);
    return rc;
}

/* ---- delete ---- */

int cli__cmd_delete(const struct cli_args *a)
{
    enum an_expect expect = AN_EXPECT_ANY;
    uint64_t expected = 0;
    uint64_t position = 0;
    bool tomb = a->set[CLI_F_TOMBSTONE];
    struct an_error err;
    an_client *c = NULL;
    int rc;

    if (a->set[CLI_F_EXPECT_VERSION]) {
        rc = cli__flag_u64(a, CLI_F_EXPECT_VERSION, UINT64_MAX, &expected);
        if (rc != CLI_EXIT_OK) return rc;
        expect = AN_EXPECT_VERSION;
    }
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    rc = an_delete_stream(c, a->pos[0], expect, expected, tomb, &position, &err);
    if (rc != 0) {
        cli__call_error(a, a->pos[0], rc, &err);
        rc = CLI_EXIT_FAIL;
    } else if (a->json) {
        rc = print_json_obj(a, json_pack("{s:s,s:I,s:b}", "stream", a->pos[0], "position",
                                         (json_int_t)position, "tombstone", tomb));
    } else {
        printf("%s %s at #%" PRIu64 "\n", tomb ? "tombstoned" : "deleted", a->pos[0],
               position);
        rc = CLI_EXIT_OK;
    }
    an_close(c);
    return rc;
}

/* ---- health ---- */

int cli__cmd_health(const struct cli_args *a)
{
    bool serving = false;
    struct an_error err;
    an_client *c = NULL;
    const char *status;
    int rc;

    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    rc = an_health(c, &serving, &err);
    an_close(c);
    if (rc != 0) {
        cli__call_error(a, NULL, rc, &err);
        return CLI_EXIT_FAIL;
    }
    status = serving ? "SERVING" : "NOT_SERVING";
    if (a->json) {
        rc = print_json_obj(a, json_pack("{s:s}", "status", status));
    } else {
        printf("%s\n", status);
        rc = CLI_EXIT_OK;
    }
    return serving ? rc : CLI_EXIT_FAIL;
}

/*
 * cli_int.h - what the files of the `annals` command-line tool share.
 *
 * The tool is one module in client/cli/: annals_cli.c parses the command
 * line (one flag table, from which --help is generated) and dispatches;
 * cli_fmt.c turns values into text and back (times, UUIDs, events as
 * human lines or JSON objects); cli_cmds.c holds the simple subcommands;
 * cli_import.c the bulk import over the pipelined appender; cli_sub.c
 * the subscription that prints events as they commit; cli_admin.c the
 * operations (backup, verify, token); cli_proj.c projections and views;
 * cli_consume.c consumer groups and the `consume` worker runner.
 *
 * A subcommand returns a process exit status, not an AN_E* code: that is
 * what it hands to main(), and two different AN_EINVALs (a bad flag, or the
 * server refusing a value) must end differently. CLI_EXIT_USAGE (2) is for
 * a command line that could not be understood, CLI_EXIT_FAIL (1) for
 * anything that went wrong afterwards. Every failure prints one line on
 * stderr, "annals: CMD: what went wrong", before returning.
 */
#ifndef CLI_INT_H
#define CLI_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "annals.h"

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,
    CLI_EXIT_USAGE = 2,
};

/* Every flag of every subcommand; which ones a subcommand takes is in its
 * entry of the command table (annals_cli.c). */
enum cli_flag {
    CLI_F_SERVER,
    CLI_F_TIMEOUT,
    CLI_F_JSON,
    CLI_F_HELP,
    CLI_F_EXPECT_VERSION,
    CLI_F_EXPECT_NO_STREAM,
    CLI_F_EXPECT_EXISTS,
    CLI_F_ID,
    CLI_F_CONTENT_TYPE,
    CLI_F_METADATA,
    CLI_F_FROM,
    CLI_F_BACK,
    CLI_F_LIMIT,
    CLI_F_PREFIX,
    CLI_F_TYPE,
    CLI_F_AS_OF,
    CLI_F_TOMBSTONE,
    CLI_F_FROM_END,
    CLI_F_MAX_EVENTS,
    CLI_F_TLS_CA,
    CLI_F_TLS_CERT,
    CLI_F_TLS_KEY,
    CLI_F_TOKEN,
    CLI_F_KIND,
    CLI_F_KEY,
    CLI_F_SUM,
    CLI_F_LATEST_ONLY,
    CLI_F_MIN_POSITION,
    CLI_F_STREAM,
    CLI_F_MAX_DELIVERIES,
    CLI_F_ACK_TIMEOUT,
    CLI_F_ORDERED,
    CLI_F_PREFETCH,
    CLI_F_PARK_STATUS,
    CLI_F_COUNT
};

#define CLI_POS_MAX 4u

/* A parsed command line. Every string is borrowed from argv. */
struct cli_args {
    const char *cmd;                    /* "append", "read", ... */
    const char *pos[CLI_POS_MAX];       /* positional arguments */
    size_t n_pos;
    bool set[CLI_F_COUNT];              /* the flag was given */
    const char *val[CLI_F_COUNT];       /* its (last) value */
    const char **list[CLI_F_COUNT];     /* repeatable flags: every value */
    size_t n_list[CLI_F_COUNT];
    bool json;                          /* --json */
    char *const *rest;                  /* consume: the command after "--" */
    size_t n_rest;
};

/* ---- annals_cli.c: shared helpers for subcommands ---- */

/* Prints "annals: CMD: <message>" on stderr. */
void cli__errf(const struct cli_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints a call's failure: "annals: CMD: [stream 'S': ]<detail> (AN_E...)",
 * with the stream of a conflict and its actual version. stream may be NULL;
 * it is named unless the server's detail names it already. */
void cli__call_error(const struct cli_args *a, const char *stream, int rc,
                     const struct an_error *err);

/* Connects to the --server (its first entry). CLI_EXIT_* */
int cli__connect(const struct cli_args *a, an_client **out);

/* Parses a flag's value as an unsigned integer; on failure prints a usage
 * error naming the flag. CLI_EXIT_OK or CLI_EXIT_USAGE. */
int cli__flag_u64(const struct cli_args *a, enum cli_flag f, uint64_t max, uint64_t *out);

/* Parses --as-of (absent: the present). CLI_EXIT_OK or CLI_EXIT_USAGE. */
int cli__flag_as_of(const struct cli_args *a, struct an_as_of *out);

/* ---- cli_fmt.c ---- */

/* Parses "2026-11-23T20:00:00.5+01:00" (RFC 3339) into Unix nanoseconds.
 * Returns 0 or AN_EINVAL. */
int cli__parse_rfc3339(const char *s, int64_t *out_ns);

/* Formats Unix nanoseconds as RFC 3339 UTC with nanoseconds:
 * "2026-11-23T20:00:00.000000000Z". buf holds at least 40 bytes. */
void cli__format_time(int64_t unix_ns, char *buf, size_t len);

/* Parses an 8-4-4-4-12 hex UUID into 16 bytes. 0 or AN_EINVAL. */
int cli__parse_uuid(const char *s, uint8_t out[16]);

/* Formats 16 bytes as a UUID (buf at least 37 bytes); other lengths are
 * written as plain hex (buf at least 2 * len + 1 bytes). */
void cli__format_uuid(const uint8_t *id, size_t len, char *buf, size_t buf_len);

/* True if the bytes are valid UTF-8 with no control characters. */
bool cli__printable_utf8(const uint8_t *p, size_t len);

/* True if the bytes are valid UTF-8. */
bool cli__valid_utf8(const uint8_t *p, size_t len);

/* Base64 of the bytes into a malloc'd string (caller frees). 0 or AN_ENOMEM. */
int cli__base64(const uint8_t *p, size_t len, char **out);

/* Prints one recorded event on out: a human line, or a JSON object on one
 * line. 0, AN_ENOMEM or AN_EIO. */
int cli__print_event(FILE *out, const Annals__V1__RecordedEvent *ev, bool json);

/* ---- subcommands: cli_cmds.c, cli_import.c ---- */

int cli__cmd_append(const struct cli_args *a);
int cli__cmd_read(const struct cli_args *a);
int cli__cmd_read_all(const struct cli_args *a);
int cli__cmd_stream(const struct cli_args *a);
int cli__cmd_delete(const struct cli_args *a);
int cli__cmd_health(const struct cli_args *a);
int cli__cmd_import(const struct cli_args *a);
int cli__cmd_subscribe(const struct cli_args *a);

/* ---- cli_admin.c: operations ---- */

int cli__cmd_backup(const struct cli_args *a);
int cli__cmd_verify(const struct cli_args *a);
int cli__cmd_token(const struct cli_args *a);

/* ---- cli_proj.c: projections and views ---- */

int cli__cmd_projection(const struct cli_args *a);
int cli__cmd_view(const struct cli_args *a);

/* ---- cli_consume.c: consumer groups ---- */
int cli__cmd_group(const struct cli_args *a);
int cli__cmd_consume(const struct cli_args *a);

#endif /* CLI_INT_H */

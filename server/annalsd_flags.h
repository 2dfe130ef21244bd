/*
 * annalsd_flags.h - annalsd's flags (annalsd_flags.c): the command line,
 * the --config file, and the srv_cfg they make. Only annalsd.c and the
 * fuzz target of the --config parser include it.
 *
 * Values are borrowed: from argv, from the flag table's defaults, or from
 * one static slot per flag that annalsd_read_config fills (so a SIGHUP
 * re-read allocates nothing, and a value read from the file lives until
 * the next read). One thread (main) at a time.
 */
#ifndef ANNALSD_FLAGS_H
#define ANNALSD_FLAGS_H

#include <stdbool.h>

#include "srv.h"

#define ANNALSD_N_FLAGS 25 /* entries of the table in annalsd_flags.c */

/* The values given, by the table's index (NULL: not given). Zero it first. */
struct annalsd_opts {
    const char *val[ANNALSD_N_FLAGS];
    bool from_file[ANNALSD_N_FLAGS]; /* the value came from --config */
};

/* Parses argv (--flag value, --flag=value, boolean --flag). --help and
 * --version print and exit(0). 0, or -1 with a message on stderr. */
int annalsd_parse_args(int argc, char **argv, struct annalsd_opts *o);

/*
 * annalsd_read_config - reads the --config file at path: 'name = value' per
 * line, names as on the command line without the dashes, '#' starts a
 * comment line; a boolean flag takes true or false. Values set on the
 * command line are kept; those from an earlier read of the file are
 * replaced. 0, or -1 with a message on stderr naming the file, the line
 * and what was wrong (o may then hold the lines before it).
 */
int annalsd_read_config(const char *path, struct annalsd_opts *o);

/* Fills cfg from o and the defaults, checking each value against its
 * flag's limits, and sets the log level. 0, or -1 with a message on
 * stderr naming the flag and its limit. cfg borrows o's strings. */
int annalsd_build_cfg(const struct annalsd_opts *o, struct srv_cfg *cfg);

/* The value of flag `name` (as in the table), or its default. */
const char *annalsd_flag(const struct annalsd_opts *o, const char *name);

/* The --config path given, or NULL. */
const char *annalsd_config_file(const struct annalsd_opts *o);

#endif /* ANNALSD_FLAGS_H */

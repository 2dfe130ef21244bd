/*
 * cli_consume.c - `annals group create|list|get|delete|replay-parked` and
 * `annals consume GROUP -- CMD ARGS...`.
 *
 * A group's status prints as one line (name, what it selects, checkpoint
 * of head, consumers, in flight, delivered, acked, redelivered, parked),
 * or with --json as one object.
 *
 * `consume` makes any program a worker: for each delivery it runs CMD with
 * the event as one JSON line on its stdin (the shape `read --json`
 * prints, plus "attempt"), waits for it, and settles by its exit status:
 * 0 acks, --park-status (default 3) parks, anything else (a signal too)
 * nacks with reason "exit status N". One event at a time; --prefetch only
 * says how many the server may hand this consumer ahead. SIGINT/SIGTERM
 * finish the current event, then leave the group (its events go to the
 * others); --count N leaves after N events. A summary goes to stderr.
 */
#include "cli_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- group ---- */

static json_t *strings_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_array_append_new(a, json_string(v[i]));
    }
    return a;
}

static void print_group(const struct cli_args *a, const Annals__V1__GroupStatus *s)
{
    const Annals__V1__ConsumerGroup *g = s->group;
    const Annals__V1__Filter *f = g ? g->filter : NULL;
    if (a->json) {
        json_t *j = json_pack(
            "{s:s,s:s,s:o,s:o,s:I,s:I,s:I,s:b,s:I,s:I,s:i,s:i,s:I,s:I,s:I,s:I}", "name",
            g ? g->name : "", "stream", g ? g->stream : "", "prefixes",
            strings_json(f ? f->stream_prefixes : NULL, f ? f->n_stream_prefixes : 0), "types",
            strings_json(f ? f->event_types : NULL, f ? f->n_event_types : 0), "from_position",
            (json_int_t)(g ? g->from_position : 0), "max_deliveries",
            (json_int_t)(g && g->max_deliveries ? g->max_deliveries : 5), "ack_timeout_ms",
            (json_int_t)(g && g->ack_timeout_ms ? g->ack_timeout_ms : 30000),
            "ordered_per_stream", g ? g->ordered_per_stream : 0, "checkpoint",
            (json_int_t)s->checkpoint, "head", (json_int_t)s->head, "consumers",
            (int)s->consumers, "in_flight", (int)s->in_flight, "delivered",
            (json_int_t)s->delivered, "acked", (json_int_t)s->acked, "redelivered",
            (json_int_t)s->redelivered, "parked", (json_int_t)s->parked);
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (t) printf("%s\n", t);
        free(t);
        json_decref(j);
        return;
    }
    char what[300] = "all streams";
    if (g && g->stream[0]) {
        snprintf(what, sizeof(what), "stream %s", g->stream);
    } else if (f && f->n_stream_prefixes) {
        snprintf(what, sizeof(what), "prefix %s%s", f->stream_prefixes[0],
                 f->n_stream_prefixes > 1 ? ",..." : "");
    }
    printf("%s %s%s checkpoint %" PRIu64 " of %" PRIu64 ", %u consumers, %u in flight, "
           "%" PRIu64 " delivered, %" PRIu64 " acked, %" PRIu64 " redelivered, %" PRIu64
           " parked\n",
           g ? g->name : "?", what, g && g->ordered_per_stream ? " ordered" : "", s->checkpoint,
           s->head, s->consumers, s->in_flight, s->delivered, s->acked, s->redelivered,
           s->parked);
}

static int group_create(const struct cli_args *a, an_client *c, const char *name)
{
    struct an_group_def d = {.name = name};
    uint64_t v;
    int rc;
    if (a->set[CLI_F_STREAM]) d.stream = a->val[CLI_F_STREAM];
    d.stream_prefixes = a->list[CLI_F_PREFIX];
    d.n_stream_prefixes = a->n_list[CLI_F_PREFIX];
    d.event_types = a->list[CLI_F_TYPE];
    d.n_event_types = a->n_list[CLI_F_TYPE];
    d.from_end = a->set[CLI_F_FROM_END];
    d.ordered_per_stream = a->set[CLI_F_ORDERED];
    if (a->set[CLI_F_FROM]) {
        if ((rc = cli__flag_u64(a, CLI_F_FROM, UINT64_MAX, &v)) != CLI_EXIT_OK) return rc;
        d.from_position = v;
    }
    if (a->set[CLI_F_MAX_DELIVERIES]) {
        if ((rc = cli__flag_u64(a, CLI_F_MAX_DELIVERIES, UINT32_MAX, &v)) != CLI_EXIT_OK) {
            return rc;
        }
        d.max_deliveries = (uint32_t)v;
    }
    if (a->set[CLI_F_ACK_TIMEOUT]) {
        if ((rc = cli__flag_u64(a, CLI_F_ACK_TIMEOUT, UINT32_MAX, &v)) != CLI_EXIT_OK) {
            return rc;
        }
        d.ack_timeout_ms = (uint32_t)v;
    }
    Annals__V1__GroupStatus *st;
    struct an_error err;
    rc = an_group_create(c, &d, &st, &err);
    if (rc) {
        cli__call_error(a, NULL, rc, &err);
        return CLI_EXIT_FAIL;
    }
    print_group(a, st);
    an_group_status_free(st);
    return CLI_EXIT_OK;
}

int cli__cmd_group(const struct cli_args *a)
{
    const char *op = a->pos[0];
    const char *name = a->n_pos > 1 ? a->pos[1] : NULL;
    bool list = strcmp(op, "list") == 0;
    if (!list && strcmp(op, "create") && strcmp(op, "get") && strcmp(op, "delete") &&
        strcmp(op, "replay-parked")) {
        cli__errf(a, "'%s': want create, list, get, delete or replay-parked", op);
        return CLI_EXIT_USAGE;
    }
    if (list ? name != NULL : name == NULL) {
        cli__errf(a, list ? "list takes no NAME" : "%s needs a group NAME", op);
        return CLI_EXIT_USAGE;
    }
    an_client *c;
    int rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    struct an_error err;
    Annals__V1__GroupStatus *st = NULL;
    if (strcmp(op, "create") == 0) {
        rc = group_create(a, c, name);
    } else if (list) {
        Annals__V1__ListGroupsResponse *l;
        rc = an_group_list(c, &l, &err);
        if (rc == 0) {
            for (size_t i = 0; i < l->n_groups; i++) {
                print_group(a, l->groups[i]);
            }
            an_group_list_free(l);
        }
    } else if (strcmp(op, "get") == 0 || strcmp(op, "replay-parked") == 0) {
        rc = op[0] == 'g' ? an_group_get(c, name, &st, &err)
                          : an_group_replay_parked(c, name, &st, &err);
        if (rc == 0) {
            print_group(a, st);
            an_group_status_free(st);
        }
    } else {
        rc = an_group_delete(c, name, &err);
        if (rc == 0 && !a->json) printf("deleted %s\n", name);
    }
    an_close(c);
    if (rc > 0) return rc; /* a CLI_EXIT_* from group_create */
    if (rc < 0) {
        cli__call_error(a, NULL, rc, &err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* ---- consume ---- */

static volatile sig_atomic_t consume_stop;

static void on_signal(int sig)
{
    (void)sig;
    consume_stop = 1;
}

/* The event as one JSON line with its attempt, malloc'd. */
static char *event_line(const struct an_delivery *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return NULL;
    int rc = cli__print_event(m, d->event, true);
    fclose(m);
    if (rc || !buf || !len) {
        free(buf);
        return NULL;
    }
    /* "...}\n" -> "...,"attempt":N}\n" */
    char *out = malloc(len + 32);
    if (out) {
        size_t k = len;
        while (k > 0 && buf[k - 1] != '}') k--;
        snprintf(out, len + 32, "%.*s,\"attempt\":%u}\n", (int)(k - 1), buf, d->attempt);
    }
    free(buf);
    return out;
}

/* Runs the command with line on its stdin; its exit status, or 128 + the
 * signal that ended it, or -1 when it could not be started. */
static int run_cmd(char *const *argv, const char *line)
{
    int p[2];
    if (pipe(p)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], STDIN_FILENO);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[0]);
    if (rc) {
        close(p[1]);
        errno = rc;
        return -1;
    }
    size_t left = strlen(line);
    while (left) {
        ssize_t n = write(p[1], line, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* it does not read its stdin: fine */
        line += n;
        left -= (size_t)n;
    }
    close(p[1]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int cli__cmd_consume(const struct cli_args *a)
{
    uint64_t prefetch = 1, park_status = 3, max = 0;
    int rc;
    if (a->n_rest == 0) {
        cli__errf(a, "no command: annals consume GROUP -- CMD [ARGS...]");
        return CLI_EXIT_USAGE;
    }
    if (a->set[CLI_F_PREFETCH] &&
        (rc = cli__flag_u64(a, CLI_F_PREFETCH, 10000, &prefetch)) != CLI_EXIT_OK) {
        return rc;
    }
    if (a->set[CLI_F_PARK_STATUS] &&
        (rc = cli__flag_u64(a, CLI_F_PARK_STATUS, 255, &park_status)) != CLI_EXIT_OK) {
        return rc;
    }
    if (a->set[CLI_F_MAX_EVENTS] &&
        (rc = cli__flag_u64(a, CLI_F_MAX_EVENTS, UINT64_MAX, &max)) != CLI_EXIT_OK) {
        return rc;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    an_client *c;
    if ((rc = cli__connect(a, &c)) != CLI_EXIT_OK) return rc;
    an_consumer *k;
    rc = an_consumer_open(c, a->pos[0], (uint32_t)prefetch, &k);
    if (rc) {
        cli__errf(a, "%s (%s)", an_strerror(rc), an_errname(rc));
        an_close(c);
        return CLI_EXIT_FAIL;
    }
    uint64_t done = 0, acked = 0, nacked = 0, parked = 0;
    int exit_code = CLI_EXIT_OK;
    while (!consume_stop && (!max || done < max)) {
        struct an_delivery d;
        struct an_error err;
        rc = an_consumer_next(k, 500, &d, &err);
        if (rc == 0) continue;
        if (rc < 0) {
            cli__call_error(a, NULL, rc, &err);
            exit_code = CLI_EXIT_FAIL;
            break;
        }
        uint64_t pos = d.event->global_position;
        char *line = event_line(&d);
        int st = line ? run_cmd(a->rest, line) : -1;
        free(line);
        char reason[64];
        if (st < 0) {
            cli__errf(a, "cannot run %s: %s", a->rest[0], strerror(errno));
            an_consumer_nack(k, pos, "the worker could not be started");
            exit_code = CLI_EXIT_FAIL;
            break;
        }
        if (st == 0) {
            an_consumer_ack(k, pos);
            acked++;
        } else if ((uint64_t)st == park_status) {
            snprintf(reason, sizeof(reason), "exit status %d", st);
            an_consumer_park(k, pos, reason);
            parked++;
        } else {
            snprintf(reason, sizeof(reason), "exit status %d", st);
            an_consumer_nack(k, pos, reason);
            nacked++;
        }
        done++;
        an_consumer_flush(k, NULL);
    }
    an_consumer_close(k);
    an_close(c);
    fprintf(stderr,
            "annals: consume: %" PRIu64 " events: %" PRIu64 " acked, %" PRIu64
            " nacked, %" PRIu64 " parked\n",
            done, acked, nacked, parked);
    return exit_code;
}

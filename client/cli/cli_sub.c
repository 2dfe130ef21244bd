/*
 * cli_sub.c - `annals subscribe [STREAM]`: prints events as they commit,
 * like `tail -f`, over one Queries.Subscribe call (an_subscribe).
 *
 * Output. Each event is one line on stdout (the human line of `read`, or
 * with --json the same JSON object), flushed at once so that a pipe sees it
 * when it happens. The signals go where they cannot be mistaken for
 * events: on stderr as "annals: subscribe: caught up at #P" and
 * "annals: subscribe: checkpoint #P" lines, or, with --json, as JSON lines
 * on stdout in their place in the sequence, {"caught_up":true,
 * "checkpoint":P} and {"checkpoint":P} (no "stream" key, unlike an
 * event), so that a script can store the checkpoint it has processed up to
 * and resume with --from CHECKPOINT+1.
 *
 * Ending. SIGINT and SIGTERM end it cleanly (exit 0, the output flushed):
 * the handler only sets a flag, and the loop waits for at most
 * CLI_SUB_POLL_MS at a time, so it notices within that. A closed stdout
 * (EPIPE, e.g. `annals subscribe | head`) ends it quietly with exit 0;
 * SIGPIPE is ignored so that the write fails instead of killing us.
 * --count N exits 0 after N events. The server ending the subscription
 * (shutdown: AN_EUNAVAIL) is a failure: exit 1 with the reason.
 */
#include "cli_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <string.h>

#define CLI_SUB_POLL_MS 200

static volatile sig_atomic_t sub_stop;

static void on_signal(int sig)
{
    (void)sig;
    sub_stop = 1;
}

static void sub_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* Checks the flags and fills o (o's arrays are borrowed from a). */
static int sub_opts(const struct cli_args *a, struct an_subscribe_opts *o, uint64_t *max_events)
{
    uint64_t from = 0;
    int rc;

    o->stream = a->n_pos ? a->pos[0] : NULL;
    o->stream_prefixes = a->list[CLI_F_PREFIX];
    o->n_stream_prefixes = a->n_list[CLI_F_PREFIX];
    o->event_types = a->list[CLI_F_TYPE];
    o->n_event_types = a->n_list[CLI_F_TYPE];
    o->from_end = a->set[CLI_F_FROM_END];
    if (o->stream && (o->n_stream_prefixes || o->n_event_types)) {
        cli__errf(a, "--prefix and --type are for all streams, not with STREAM");
        return CLI_EXIT_USAGE;
    }
    if (a->set[CLI_F_FROM]) {
        if (o->from_end) {
            cli__errf(a, "--from and --from-end exclude each other");
            return CLI_EXIT_USAGE;
        }
        rc = cli__flag_u64(a, CLI_F_FROM, UINT64_MAX, &from);
        if (rc != CLI_EXIT_OK) return rc;
    }
    if (o->stream) {
        o->from_version = from;
    } else {
        o->from_position = from;
    }
    *max_events = 0;
    if (a->set[CLI_F_MAX_EVENTS]) {
        rc = cli__flag_u64(a, CLI_F_MAX_EVENTS, UINT64_MAX, max_events);
        if (rc != CLI_EXIT_OK) return rc;
        if (*max_events == 0) {
            cli__errf(a, "--count: must be at least 1");
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

/* Prints a caught-up or checkpoint signal. 0 or AN_EIO. */
static int print_signal(const struct cli_args *a, const struct an_sub_item *it)
{
    bool caught_up = it->kind == AN_SUB_CAUGHT_UP;

    if (!a->json) {
        fprintf(stderr, "annals: subscribe: %s #%" PRIu64 "\n",
                caught_up ? "caught up at" : "checkpoint", it->checkpoint);
        return 0;
    }
    json_t *o = caught_up ? json_pack("{s:b,s:I}", "caught_up", 1, "checkpoint",
                                      (json_int_t)it->checkpoint)
                          : json_pack("{s:I}", "checkpoint", (json_int_t)it->checkpoint);
    int rc = o && json_dumpf(o, stdout, JSON_COMPACT) == 0 && fputc('\n', stdout) != EOF
                 ? 0 : AN_EIO;
    json_decref(o);
    return rc;
}

/* The loop: items until a signal, --count, a closed stdout or an error.
 * CLI_EXIT_* */
static int sub_loop(const struct cli_args *a, an_sub *s, uint64_t max_events)
{
    struct an_sub_item it;
    struct an_error err;
    uint64_t n = 0;
    int rc;

    while (!sub_stop) {
        rc = an_sub_next(s, CLI_SUB_POLL_MS, &it, &err);
        if (rc == AN_SUB_TIMEOUT) continue;
        if (rc < 0) {
            cli__call_error(a, a->n_pos ? a->pos[0] : NULL, rc, &err);
            return CLI_EXIT_FAIL;
        }
        rc = it.kind == AN_SUB_EVENT ? cli__print_event(stdout, it.event, a->json)
                                     : print_signal(a, &it);
        if (rc == 0 && fflush(stdout) != 0) {
            rc = AN_EIO;
        }
        if (rc != 0) {
            if (errno == EPIPE) {
                /* The reader is gone: done. Drop what stdout still holds,
                 * so that the final flush in main() does not fail too. */
                if (!freopen("/dev/null", "w", stdout)) return CLI_EXIT_FAIL;
                return CLI_EXIT_OK;
            }
            cli__errf(a, "writing the output: %s", strerror(errno));
            return CLI_EXIT_FAIL;
        }
        if (it.kind == AN_SUB_EVENT && ++n == max_events) break;
    }
    return CLI_EXIT_OK;
}

int cli__cmd_subscribe(const struct cli_args *a)
{
    struct an_subscribe_opts o = {0};
    uint64_t max_events;
    an_client *c = NULL;
    an_sub *s = NULL;
    int rc;

    rc = sub_opts(a, &o, &max_events);
    if (rc != CLI_EXIT_OK) return rc;
    sub_signals();
    rc = cli__connect(a, &c);
    if (rc != CLI_EXIT_OK) return rc;
    rc = an_subscribe(c, &o, &s);
    if (rc != 0) {
        cli__errf(a, "%s (%s)", an_strerror(rc), an_errname(rc));
        rc = CLI_EXIT_FAIL;
        goto out_close;
    }
    rc = sub_loop(a, s, max_events);
    an_sub_close(s);
out_close:
    an_close(c);
    return rc;
}

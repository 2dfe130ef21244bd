/*
 * harness.h - starts a real annalsd for integration tests: a temp data
 * directory, an ephemeral loopback port (read back from annalsd's
 * "started" log line), and a libannals client connected to it.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "annals.h"

struct harness {
    char dir[256];              /* temp dir: data in dir/data, log in dir/annalsd.log */
    char addr[64];              /* "127.0.0.1:PORT" */
    int port;
    pid_t pid;                  /* 0 when not running */
    an_client *client;
};

/* Creates the temp dir and starts annalsd with the extra flags (NULL-
 * terminated list, may be NULL). Aborts the test on failure. */
void h_start(struct harness *h, const char *const *extra_flags);

/* Starts annalsd again on the same data dir and port (after a stop). */
void h_restart(struct harness *h);

/* SIGTERM and wait; returns the exit status (or -1). */
int h_stop(struct harness *h);

/* SIGKILL and wait. */
void h_kill(struct harness *h);

/* Stops if running, closes the client, removes the temp dir. */
void h_cleanup(struct harness *h);

/* A fresh client of the running server (caller closes), returned once a
 * health check over it has answered (up to 5 s), so that a test's first
 * call does not meet a connection still being made: a connect that fails
 * once puts gRPC's channel in a backoff that the client's quick retries
 * can use up (seen twice under meson right after a build, not explained). */
an_client *h_client(const struct harness *h);

/* Runs annalsd with args (NULL-terminated) to its end and returns its exit
 * status; what it printed (stdout and stderr) goes to out. For flags that
 * make it exit at once. */
int h_run_annalsd(const char *const *args, char *out, size_t cap);

/* The --http port from annalsd's "started" line (annalsd started with
 * --http HOST:0). Fails the test when there is none. */
int h_http_port(const struct harness *h);

/* GET path on 127.0.0.1:port (Authorization: Bearer token unless NULL):
 * the status code; the body in out (NUL-terminated, cut at cap). */
int h_http_get(int port, const char *path, const char *token, char *out, size_t cap);

/* Path of build/server/annalsd (ANNALSD env, or next to the test binary). */
const char *h_annalsd_path(void);

#endif /* HARNESS_H */

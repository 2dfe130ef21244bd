/*
 * annalsd.c - the Annals server's entry point: flags, signals, and the
 * order of start and shutdown.
 *
 * All flags live in one table (annalsd_flags.c: name, kind, default, min,
 * max, help); --help is generated from it and a bad value names the flag
 * and its limit; --config FILE takes the same names, one 'flag = value'
 * per line, and the command line wins over it. SIGINT, SIGTERM and SIGHUP are
 * blocked before gRPC starts its threads, so only the main thread takes
 * them (sigwait). The first SIGINT or SIGTERM shuts down gracefully
 * (srv_shutdown); a second one exits at once, which is safe because LMDB
 * needs no recovery. SIGHUP reloads the log level from --config and the
 * auth file.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "say.h"
#include "annalsd_flags.h"
#include "srv.h"

#define ANNALSD_VERSION SRV_VERSION
#define STATS_EVERY_S 10

/* ---- signals ---- */

static sigset_t stop_signals;

static void *second_signal(void *arg)
{
    (void)arg;
    int sig;
    while (sigwait(&stop_signals, &sig) == 0) {
        if (sig != SIGHUP) {
            say_warn("main", "msg=\"second signal: exiting now\" signal=%d", sig);
            _exit(1);
        }
    }
    return NULL;
}

/* SIGHUP: what can change live (the log level from --config, the auth
 * file), and a line saying what was reloaded. */
static void reload(struct annalsd_opts *o, srv *s)
{
    const char *config = annalsd_config_file(o);
    const char *level = "unchanged";
    if (config) {
        if (annalsd_read_config(config, o) == 0 &&
            say_set_level(annalsd_flag(o, "log-level")) == 0) {
            level = annalsd_flag(o, "log-level");
        } else {
            level = "refused";
        }
    }
    const char *auth = "off";
    if (srv_config(s)->auth_file) {
        auth = srv_reload_auth(s) ? "refused (the previous one stays)" : "reloaded";
    }
    say_info("main", "msg=\"SIGHUP\" config=%s log_level=\"%s\" auth=\"%s\"",
             config ? config : "none", level, auth);
}

int main(int argc, char **argv)
{
    struct annalsd_opts o;
    memset(&o, 0, sizeof(o));
    struct srv_cfg cfg;
    char detail[LOG_DETAIL_MAX] = "";
    srv *s = NULL;

    if (annalsd_parse_args(argc, argv, &o)) {
        return 2;
    }
    const char *config = annalsd_config_file(&o);
    if (config && annalsd_read_config(config, &o)) {
        return 2;
    }
    if (annalsd_build_cfg(&o, &cfg)) {
        return 2;
    }
    if (mkdir(cfg.data_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "annalsd: cannot create the data directory %s: %s\n", cfg.data_dir,
                strerror(errno));
        return 1;
    }
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* one descriptor per connection: take what the hard limit allows */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (!getenv("GRPC_VERBOSITY")) {
        setenv("GRPC_VERBOSITY", "ERROR", 1);
    }

    int rc = srv_start(&cfg, &s, detail);
    if (rc) {
        say_error("main", "msg=\"cannot start\" err=%s detail=\"%s\"", an_errname(rc), detail);
        return 1;
    }
    say_info("main",
             "msg=\"started\" version=%s data=%s listen=%s port=%d max_size=%llu "
             "max_event=%u max_request=%u threads=%u max_batch=%u tls=%s auth=%s http_port=%d "
             "pid=%d",
             ANNALSD_VERSION, cfg.data_dir, cfg.listen, srv_port(s),
             (unsigned long long)cfg.max_size_bytes, cfg.max_event_bytes, cfg.max_request_bytes,
             srv_config(s)->threads, cfg.max_batch,
             cfg.tls_client_ca_file ? "mtls" : cfg.tls_cert_file ? "on" : "off",
             cfg.auth_file ? "on" : "off", srv_http_port(s), (int)getpid());

    int sig = 0;
    for (;;) {
        struct timespec t = {.tv_sec = STATS_EVERY_S};
        siginfo_t si;
        sig = sigtimedwait(&stop_signals, &si, &t);
        if (sig == SIGHUP) {
            reload(&o, s);
            continue;
        }
        if (sig > 0) {
            break;
        }
        srv_log_stats(s);
    }
    pthread_t t2;
    pthread_create(&t2, NULL, second_signal, NULL);
    pthread_detach(t2);
    say_info("main", "msg=\"stopping\" signal=%d", sig);
    srv_shutdown(s, 3000);
    srv_log_totals(s);
    srv_free(s);
    say_info("main", "msg=\"stopped\"");
    return 0;
}

/*
 * harness.c - a real annalsd per test (harness.h).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *h_annalsd_path(void)
{
    const char *p = getenv("ANNALSD");
    return p ? p : ANNALSD_PATH;
}

static void sleep_ms(int ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Finds "port=N" in a "msg=\"started\"" line of the log written after offset. */
static int read_port(const char *log, long from)
{
    FILE *f = fopen(log, "r");
    char line[2048];
    int port = 0;
    if (!f) {
        return 0;
    }
    fseek(f, from, SEEK_SET);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "msg=\"started\"");
        const char *q = p ? strstr(p, " port=") : NULL;
        if (q) {
            port = atoi(q + 6);
            break;
        }
    }
    fclose(f);
    return port;
}

static void spawn(struct harness *h, const char *const *extra)
{
    char data[300];
    char log[300];
    char listen[80];
    const char *argv[32];
    int n = 0;
    struct stat st;
    snprintf(data, sizeof(data), "%s/data", h->dir);
    snprintf(log, sizeof(log), "%s/annalsd.log", h->dir);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", h->port);
    long from = stat(log, &st) == 0 ? (long)st.st_size : 0;
    argv[n++] = h_annalsd_path();
    argv[n++] = "--data";
    argv[n++] = data;
    argv[n++] = "--listen";
    argv[n++] = listen;
    for (int i = 0; extra && extra[i] && n < 30; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* A test that times out is killed by Criterion: its server goes
         * with it, and holds none of the runner's pipes meanwhile. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    h->pid = pid;
    for (int i = 0; i < 1000; i++) {
        int port = read_port(log, from);
        if (port > 0) {
            h->port = port;
            snprintf(h->addr, sizeof(h->addr), "127.0.0.1:%d", port);
            return;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            h->pid = 0;
            cr_assert_fail("annalsd (%s) exited before it started; see %s", argv[0], log);
        }
        sleep_ms(10);
    }
    cr_assert_fail("annalsd did not start within 10 s; see %s", log);
}

static const char *const *saved_extra;

void h_start(struct harness *h, const char *const *extra)
{
    saved_extra = extra;
    memset(h, 0, sizeof(*h));
    snprintf(h->dir, sizeof(h->dir), "/tmp/annals-it-XXXXXX");
    cr_assert_not_null(mkdtemp(h->dir));
    spawn(h, extra);
    cr_assert_eq(an_connect(h->addr, NULL, &h->client), 0);
}

void h_restart(struct harness *h)
{
    cr_assert_eq(h->pid, 0, "annalsd is still running");
    spawn(h, saved_extra);
}

int h_stop(struct harness *h)
{
    int status = 0;
    if (!h->pid) {
        return -1;
    }
    kill(h->pid, SIGTERM);
    waitpid(h->pid, &status, 0);
    h->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void h_kill(struct harness *h)
{
    if (!h->pid) {
        return;
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    h->pid = 0;
}

void h_cleanup(struct harness *h)
{
    char cmd[400];
    h_kill(h);
    an_close(h->client);
    h->client = NULL;
    if (h->dir[0] && !getenv("KEEP_TEST_DIRS")) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "harness: could not remove %s\n", h->dir);
        }
    }
}

an_client *h_client(const struct harness *h)
{
    an_client *c = NULL;
    cr_assert_eq(an_connect(h->addr, NULL, &c), 0);
    for (int i = 0; i < 250; i++) {
        bool serving = false;
        if (an_health(c, &serving, NULL) == 0 && serving) {
            break;
        }
        struct timespec t = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return c;
}

int h_run_annalsd(const char *const *args, char *out, size_t cap)
{
    char cmd[2048];
    size_t o = (size_t)snprintf(cmd, sizeof(cmd), "'%s'", h_annalsd_path());
    for (int i = 0; args[i] && o < sizeof(cmd); i++) {
        o += (size_t)snprintf(cmd + o, sizeof(cmd) - o, " '%s'", args[i]);
    }
    if (o < sizeof(cmd)) {
        snprintf(cmd + o, sizeof(cmd) - o, " 2>&1");
    }
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The --http port from annalsd's "started" line. */
int h_http_port(const struct harness *h)
{
    char path[400];
    char line[4096];
    int port = 0;
    snprintf(path, sizeof(path), "%s/annalsd.log", h->dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, " http_port=");
        if (p && strstr(line, "msg=\"started\"")) {
            port = atoi(p + 11);
        }
    }
    fclose(f);
    cr_assert_gt(port, 0, "no http_port in the started line");
    return port;
}

/* GET path; returns the status code, the body in out (NUL-terminated). */
int h_http_get(int port, const char *path, const char *token, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s\r\n", path,
                     token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "");
    cr_assert_eq(write(fd, req, (size_t)n), n);
    static char resp[1 << 20];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(resp) - 1 && (r = read(fd, resp + len, sizeof(resp) - 1 - len)) > 0) {
        len += (size_t)r;
    }
    close(fd);
    resp[len] = '\0';
    int status = 0;
    cr_assert_eq(sscanf(resp, "HTTP/1.%*d %d", &status), 1, "not HTTP: %.80s", resp);
    const char *body = strstr(resp, "\r\n\r\n");
    snprintf(out, cap, "%s", body ? body + 4 : "");
    return status;
}


/*
 * pl_shim.c - an LD_PRELOAD library for the power-loss test (pl_run.c):
 * records every write to, and every sync of, the log's data file
 * (".../log/data.mdb") of the process it is loaded into.
 *
 * Each record goes to the trace file named by PL_TRACE, opened O_APPEND,
 * in one write(2): a struct pl_rec, then for a write its bytes. A write is
 * recorded after it returned (what it wrote), a sync after it succeeded;
 * a write through a descriptor opened O_DSYNC is a write then a sync.
 * Another process appends its own records (acknowledged appends) to the
 * same file, so the trace holds one order of what the server made durable
 * and what the clients were told.
 *
 * Intercepted: open/open64/openat/openat64, close, write, pwrite/pwrite64,
 * writev, pwritev, fsync, fdatasync (LMDB's calls on Linux).
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pl_trace.h"

#define MAX_FDS 4096

static int trace_fd = -1;
static unsigned char watched[MAX_FDS]; /* 1: the log's file, 2: opened O_DSYNC */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* PL_SYNC_DELAY_US: each sync of the log waits this long before it starts
 * (writes wait too: they take mu), so that a client told of an append
 * before a sync made it durable has time to say so in the trace ahead of
 * the sync that would have covered it. */
static long sync_delay_us;

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

/* Resolved on first use too: other libraries' constructors (gRPC's) may
 * call close() before ours has run. */
static void resolve(void)
{
    if (real_fdatasync) {
        return;
    }
    *(void **)&real_open = dlsym(RTLD_NEXT, "open");
    *(void **)&real_openat = dlsym(RTLD_NEXT, "openat");
    *(void **)&real_close = dlsym(RTLD_NEXT, "close");
    *(void **)&real_write = dlsym(RTLD_NEXT, "write");
    *(void **)&real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    *(void **)&real_writev = dlsym(RTLD_NEXT, "writev");
    *(void **)&real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    *(void **)&real_fsync = dlsym(RTLD_NEXT, "fsync");
    *(void **)&real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
}

__attribute__((constructor)) static void pl_init(void)
{
    resolve();
    const char *t = getenv("PL_TRACE");
    if (t) {
        trace_fd = real_open(t, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    }
    const char *d = getenv("PL_SYNC_DELAY_US");
    if (d) {
        sync_delay_us = atol(d);
    }
}

static bool is_log_file(const char *path)
{
    size_t n = strlen(path);
    const char *suffix = "/log/data.mdb";
    size_t m = strlen(suffix);
    return n >= m && strcmp(path + n - m, suffix) == 0;
}

static void note_open(int fd, const char *path, int flags)
{
    if (fd >= 0 && fd < MAX_FDS && trace_fd >= 0) {
        watched[fd] = is_log_file(path) ? ((flags & O_DSYNC) ? 2 : 1) : 0;
    }
}

/* One record: header and data in one write, so records never interleave. */
static void emit(uint8_t type, uint64_t off, const struct iovec *iov, int iovcnt, size_t len)
{
    struct pl_rec h = {.magic = PL_MAGIC, .type = type, .off = off, .len = len};
    size_t total = sizeof(h) + (type == PL_WRITE ? len : 0);
    uint8_t *buf = malloc(total);
    if (!buf) {
        abort(); /* a trace with a hole would prove nothing */
    }
    memcpy(buf, &h, sizeof(h));
    size_t at = sizeof(h), left = type == PL_WRITE ? len : 0;
    for (int i = 0; i < iovcnt && left; i++) {
        size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
        memcpy(buf + at, iov[i].iov_base, k);
        at += k;
        left -= k;
    }
    if (real_write(trace_fd, buf, total) != (ssize_t)total) {
        abort();
    }
    free(buf);
}

static void record_write(int fd, uint64_t off, const struct iovec *iov, int iovcnt, ssize_t n)
{
    if (n <= 0) {
        return;
    }
    emit(PL_WRITE, off, iov, iovcnt, (size_t)n);
    if (watched[fd] == 2) {
        emit(PL_SYNC, 0, NULL, 0, 0);
    }
}

static bool is_watched(int fd)
{
    return fd >= 0 && fd < MAX_FDS && watched[fd];
}

int open(const char *path, int flags, ...)
{
    resolve();
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    int fd = real_open(path, flags, mode);
    note_open(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    resolve();
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    int fd = real_openat(dirfd, path, flags, mode);
    note_open(fd, path, flags);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int close(int fd)
{
    resolve();
    if (fd >= 0 && fd < MAX_FDS) {
        watched[fd] = 0;
    }
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    resolve();
    if (!is_watched(fd)) {
        return real_write(fd, buf, len);
    }
    pthread_mutex_lock(&mu);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t n = real_write(fd, buf, len);
    struct iovec v = {(void *)buf, len};
    record_write(fd, (uint64_t)off, &v, 1, n);
    pthread_mutex_unlock(&mu);
    return n;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    resolve();
    if (!is_watched(fd)) {
        return real_pwrite(fd, buf, len, off);
    }
    pthread_mutex_lock(&mu);
    ssize_t n = real_pwrite(fd, buf, len, off);
    struct iovec v = {(void *)buf, len};
    record_write(fd, (uint64_t)off, &v, 1, n);
    pthread_mutex_unlock(&mu);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    resolve();
    if (!is_watched(fd)) {
        return real_writev(fd, iov, iovcnt);
    }
    pthread_mutex_lock(&mu);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t n = real_writev(fd, iov, iovcnt);
    record_write(fd, (uint64_t)off, iov, iovcnt, n);
    pthread_mutex_unlock(&mu);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    resolve();
    if (!is_watched(fd)) {
        return real_pwritev(fd, iov, iovcnt, off);
    }
    pthread_mutex_lock(&mu);
    ssize_t n = real_pwritev(fd, iov, iovcnt, off);
    record_write(fd, (uint64_t)off, iov, iovcnt, n);
    pthread_mutex_unlock(&mu);
    return n;
}

static int sync_common(int fd, int (*real)(int))
{
    resolve();
    if (!is_watched(fd)) {
        return real(fd);
    }
    pthread_mutex_lock(&mu);
    if (sync_delay_us > 0) {
        struct timespec t = {.tv_sec = sync_delay_us / 1000000,
                             .tv_nsec = (sync_delay_us % 1000000) * 1000};
        nanosleep(&t, NULL);
    }
    int rc = real(fd);
    if (rc == 0) {
        emit(PL_SYNC, 0, NULL, 0, 0);
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

int fsync(int fd)
{
    resolve();
    return sync_common(fd, real_fsync);
}

int fdatasync(int fd)
{
    resolve();
    return sync_common(fd, real_fdatasync);
}

/*
 * srv_conns.c - the connection limit (--max-connections).
 *
 * gRPC core 1.51 has no quota on incoming connections, and its listener
 * is its own: we never see accept(). What it does offer is a socket
 * mutator (channel argument "grpc.socket_mutator"), called on every
 * accepted descriptor before the transport is built on it. The mutator's
 * struct is not in libgrpc-dev's headers (it is gRPC's
 * src/core/lib/iomgr/socket_mutator.h, the same for 1.2x through 1.5x),
 * so its layout is declared here; tests/test_server's connection-limit
 * test fails if it ever stops matching.
 *
 * The mutator must not refuse a descriptor: gRPC takes a refusal as a
 * listener error and stops accepting for good. So a connection over the
 * limit is accepted and shut down at once (both ways): the transport
 * reads end-of-file and closes it before any handshake, and the client
 * sees UNAVAILABLE ("Socket closed") and backs off before it tries
 * again. The server logs refusals (at most one line a second, with how
 * many since the last line). Writing an HTTP/2 GOAWAY naming the limit
 * before the shutdown was tried and dropped: gRPC's client took the
 * connection as made, never showed the text, and reconnected at once,
 * about 2 000 times a second per client (and it cannot be done under TLS).
 *
 * Counting open connections without a close hook: each accepted
 * descriptor's socket identity (st_dev, st_ino) is kept in a table
 * indexed by the descriptor. The kernel hands out the lowest free number,
 * so a closed connection's slot is usually taken again by the next
 * accepted one, which replaces the stale entry. Only when the count
 * reaches the limit does a sweep fstat() every entry and drop those whose
 * descriptor now names something else (or nothing); sweeps are at most
 * one per 50 ms so that a flood of refused connections costs little.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/support/sync.h>

#include "srv_int.h"

/* gRPC core's socket mutator, as libgrpc 1.51 lays it out. */
enum grpc_fd_usage_151 {
    FD_CLIENT_CONNECTION = 0,
    FD_SERVER_LISTENER = 1,
    FD_SERVER_CONNECTION = 2,
};
struct grpc_mutate_socket_info_151 {
    int fd;
    enum grpc_fd_usage_151 usage;
};
struct grpc_socket_mutator_vtable_151 {
    bool (*mutate_fd)(int fd, struct grpc_socket_mutator_151 *m);
    int (*compare)(struct grpc_socket_mutator_151 *a, struct grpc_socket_mutator_151 *b);
    void (*destroy)(struct grpc_socket_mutator_151 *m);
    bool (*mutate_fd_2)(const struct grpc_mutate_socket_info_151 *info,
                        struct grpc_socket_mutator_151 *m);
};

#define SWEEP_EVERY_NS 50000000ll /* at most one sweep per 50 ms */
#define REFUSAL_SAY_NS 1000000000ll

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Drops entries whose descriptor no longer names the socket accepted on
 * it. Under mu. */
static void sweep(struct srv_conns *c)
{
    struct stat st;
    for (size_t fd = 0; fd < c->cap; fd++) {
        if (!c->slot[fd].ino) {
            continue;
        }
        if (fstat((int)fd, &st) != 0 || st.st_ino != c->slot[fd].ino ||
            st.st_dev != c->slot[fd].dev) {
            c->slot[fd].ino = 0;
            c->open--;
        }
    }
    c->swept_at_ns = mono_ns();
}

/* Under mu: records fd as an open connection, or says why it can't be. */
static bool admit(struct srv_conns *c, int fd, const struct stat *st)
{
    if (fd < 0 || (size_t)fd >= c->cap) {
        return true; /* cannot happen below the descriptor limit; let it be */
    }
    if (c->slot[fd].ino) {
        /* the number was free again, so the connection once on it is gone */
        c->slot[fd].ino = 0;
        c->open--;
    }
    if (c->open >= c->max && mono_ns() - c->swept_at_ns >= SWEEP_EVERY_NS) {
        sweep(c);
    }
    if (c->open >= c->max) {
        return false;
    }
    c->slot[fd].dev = st->st_dev;
    c->slot[fd].ino = st->st_ino;
    c->open++;
    return true;
}

static bool mutate_fd_2(const struct grpc_mutate_socket_info_151 *info,
                        struct grpc_socket_mutator_151 *m)
{
    struct srv_conns *c = (struct srv_conns *)m;
    if (info->usage != FD_SERVER_CONNECTION) {
        return true;
    }
    struct stat st;
    if (fstat(info->fd, &st) != 0) {
        return true; /* gRPC finds out for itself */
    }
    pthread_mutex_lock(&c->mu);
    bool ok = admit(c, info->fd, &st);
    unsigned long long refused = 0;
    size_t open = c->open;
    if (!ok) {
        atomic_fetch_add(&c->refused_total, 1);
        c->refused_unsaid++;
        int64_t now = mono_ns();
        if (now - c->said_at_ns >= REFUSAL_SAY_NS) {
            refused = c->refused_unsaid;
            c->refused_unsaid = 0;
            c->said_at_ns = now;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        shutdown(info->fd, SHUT_RDWR);
        if (refused) {
            say_warn("conns",
                     "msg=\"connections refused: the limit is reached\" refused=%llu open=%zu "
                     "limit=%zu flag=--max-connections",
                     refused, open, c->max);
        }
    }
    return true; /* false would stop gRPC's listener for good */
}

static bool mutate_fd(int fd, struct grpc_socket_mutator_151 *m)
{
    (void)fd;
    (void)m;
    return true; /* not called: mutate_fd_2 is set */
}

static int mutator_compare(struct grpc_socket_mutator_151 *a, struct grpc_socket_mutator_151 *b)
{
    return (a > b) - (a < b);
}

static void mutator_destroy(struct grpc_socket_mutator_151 *m)
{
    (void)m; /* srv_conns_free releases it; our reference is never dropped */
}

static const struct grpc_socket_mutator_vtable_151 mutator_vtable = {
    .mutate_fd = mutate_fd,
    .compare = mutator_compare,
    .destroy = mutator_destroy,
    .mutate_fd_2 = mutate_fd_2,
};

/* The channel argument's pointer vtable: the mutator lives as long as the
 * server, so copies are the pointer itself. */
static void *arg_copy(void *p)
{
    return p;
}

static void arg_destroy(void *p)
{
    (void)p;
}

static int arg_cmp(void *a, void *b)
{
    return (a > b) - (a < b);
}

static const grpc_arg_pointer_vtable arg_vtable = {arg_copy, arg_destroy, arg_cmp};

int srv_conns_init(struct srv_conns *c, size_t max, size_t fd_limit)
{
    memset(c, 0, sizeof(*c));
    c->m.vtable = &mutator_vtable;
    gpr_ref_init(&c->m.refcount, 1); /* ours, never dropped */
    c->max = max;
    c->cap = fd_limit;
    c->slot = calloc(fd_limit ? fd_limit : 1, sizeof(*c->slot));
    if (!c->slot) {
        return AN_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->said_at_ns = mono_ns() - REFUSAL_SAY_NS;
    c->swept_at_ns = mono_ns() - SWEEP_EVERY_NS;
    return 0;
}

grpc_arg srv_conns_arg(struct srv_conns *c)
{
    return (grpc_arg){.type = GRPC_ARG_POINTER,
                      .key = GRPC_ARG_SOCKET_MUTATOR,
                      .value.pointer = {.p = &c->m, .vtable = &arg_vtable}};
}

size_t srv_conns_open(struct srv_conns *c)
{
    pthread_mutex_lock(&c->mu);
    sweep(c);
    size_t n = c->open;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void srv_conns_free(struct srv_conns *c)
{
    if (c->slot) {
        pthread_mutex_destroy(&c->mu);
        free(c->slot);
        c->slot = NULL;
    }
}

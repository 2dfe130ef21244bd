/*
 * an_resilience.c - libannals: what keeps a client useful while servers
 * come and go: the endpoint list, the circuit breaker of each endpoint,
 * the health thread, retry backoff and client-made event ids.
 *
 * Endpoints. an_connect takes "host1:port,host2:port"; each endpoint has
 * its own channel (an_client.c makes them). A unary call takes a *lease*
 * on one endpoint (an__ep_acquire), round-robin over the endpoints that
 * are up and whose breaker lets the call through, and gives it back with
 * the attempt's outcome (an__ep_release), which drives the breaker.
 *
 * Breaker (per endpoint):
 *
 *     CLOSED --threshold consecutive failures--> OPEN
 *     OPEN --cool-down elapsed, next call--> HALF_OPEN (that call probes)
 *     HALF_OPEN --a probe succeeds--> CLOSED
 *     HALF_OPEN --any failure--> OPEN (the cool-down starts again)
 *
 * A failure is an attempt that ended UNAVAILABLE (which is how gRPC
 * reports most transport failures), DEADLINE_EXCEEDED, or CANCELLED
 * (libannals never cancels a unary call, so that status means the
 * connection or the server cut the call off, e.g. a server shutting down). Any other
 * status, errors included, proves the server answered and counts as a
 * success. While OPEN, and in HALF_OPEN once its probes are out, the
 * endpoint takes no calls; with no endpoint left a call fails at once
 * with AN_ECIRCUIT, without touching the network. Each transition bumps
 * the endpoint's generation, so a probe that ends after its round is over
 * cannot change the next round's count.
 *
 * Health. With two or more endpoints a thread calls grpc.health.v1 Check
 * on each every health_interval_ms and marks it up (SERVING) or down;
 * calls skip endpoints that are down, and fail with AN_EUNAVAIL when all
 * are. With one endpoint there is nothing to route around, so no thread
 * runs and the breaker alone decides (a down mark would only turn the
 * breaker's failures into AN_EUNAVAIL and hide a restart for up to an
 * interval).
 *
 * The breaker callback runs on the thread whose call caused the
 * transition, after the client's lock is released, so it may call
 * an_breaker_state.
 */
#include "an_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- time and randomness ---- */

int64_t an__now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Fills buf with random bytes; getrandom cannot fail for small sizes
 * once the pool is up, but fall back to rand() rather than leave zeros. */
static void random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        got += (size_t)r;
    }
    for (; got < n; got++) {
        p[got] = (uint8_t)rand();
    }
}

void an__uuid7(uint8_t out[16])
{
    struct timespec ts;
    uint64_t ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    random_bytes(out + 6, 10);
    for (int i = 0; i < 6; i++) {
        out[i] = (uint8_t)(ms >> (40 - 8 * i)); /* unix milliseconds, big-endian */
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x70); /* version 7 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* RFC 9562 variant */
}

bool an__transient(int rc)
{
    return rc == AN_EUNAVAIL || rc == AN_EDEADLINE || rc == AN_ECANCELLED;
}

/*
 * Full jitter (the AWS architecture blog's "Exponential Backoff And
 * Jitter"): a uniform draw from [0, base * 2^attempt], so that clients
 * failing together do not retry together.
 */
bool an__backoff(an_client *c, int attempt, int64_t until_ms)
{
    int64_t cap = c->backoff_base_ms;
    uint64_t r;
    int64_t wait;

    for (int i = 0; i < attempt && cap < c->retry_max_total_ms; i++) {
        cap *= 2;
    }
    random_bytes(&r, sizeof(r));
    wait = (int64_t)(r % (uint64_t)(cap + 1));
    if (an__now_ms() + wait >= until_ms) return false;
    sleep_ms(wait);
    return true;
}

/* ---- endpoints ---- */

int an__eps_parse(const char *targets, struct an__ep **out, size_t *n_out)
{
    struct an__ep *eps;
    size_t n = 1;
    size_t k = 0;
    const char *p = targets;

    for (const char *q = targets; *q; q++) {
        n += *q == ',';
    }
    eps = calloc(n, sizeof(*eps));
    if (!eps) return AN_ENOMEM;
    for (;;) {
        size_t len = strcspn(p, ",");

        if (len == 0) goto out_inval;
        eps[k].target = strndup(p, len);
        if (!eps[k].target) {
            an__eps_free(eps, k);
            return AN_ENOMEM;
        }
        eps[k].up = true;
        eps[k].state = AN_BREAKER_CLOSED;
        pthread_mutex_init(&eps[k].cq_mu, NULL);
        k++;
        if (p[len] == '\0') break;
        p += len + 1;
    }
    assert(k == n);
    *out = eps;
    *n_out = n;
    return 0;

out_inval:
    an__eps_free(eps, k);
    return AN_EINVAL;
}

void an__eps_free(struct an__ep *eps, size_t n)
{
    if (!eps) return;
    for (size_t i = 0; i < n; i++) {
        for (unsigned k = 0; k < eps[i].n_cqs; k++) {
            an__cq_free(eps[i].cqs[k], true);
        }
        pthread_mutex_destroy(&eps[i].cq_mu);
        if (eps[i].channel) {
            grpc_channel_destroy(eps[i].channel);
        }
        free(eps[i].target);
    }
    free(eps);
}

/* ---- the breaker ---- */

struct transition {
    const struct an__ep *ep;
    int from;
    int to;
};

/* Moves ep to `to`; the caller holds c->mu. */
static void breaker_move(struct an__ep *ep, int to, struct transition *t)
{
    t->ep = ep;
    t->from = ep->state;
    t->to = to;
    ep->state = to;
    ep->gen++;
    ep->probes = 0;
    if (to == AN_BREAKER_OPEN) {
        ep->opened_at_ms = an__now_ms();
    }
    if (to == AN_BREAKER_CLOSED) {
        ep->fails = 0;
    }
}

static void notify(an_client *c, const struct transition *t)
{
    if (t->ep && c->on_breaker) {
        c->on_breaker(c->cb_arg, t->ep->target, t->from, t->to);
    }
}

/* Whether ep takes a call now; sets l->probe for a half-open probe. */
static bool ep_admits(an_client *c, struct an__ep *ep, struct an__lease *l, struct transition *t,
                      int64_t now)
{
    if (c->breaker_threshold <= 0) return true;
    switch ((enum an_breaker_state)ep->state) {
    case AN_BREAKER_CLOSED:
        return true;
    case AN_BREAKER_OPEN:
        if (now - ep->opened_at_ms < c->breaker_cooldown_ms) return false;
        breaker_move(ep, AN_BREAKER_HALF_OPEN, t);
        break;
    case AN_BREAKER_HALF_OPEN:
        if (ep->probes >= c->breaker_probes) return false;
        break;
    }
    ep->probes++;
    l->probe = true;
    return true;
}

int an__ep_acquire(an_client *c, struct an__lease *l)
{
    struct transition t = {0};
    int64_t now = an__now_ms();
    bool any_up = false;
    int rc = AN_EUNAVAIL;

    memset(l, 0, sizeof(*l));
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_eps; i++) {
        struct an__ep *ep = &c->eps[(c->rr + i) % c->n_eps];

        if (!ep->up) continue;
        any_up = true;
        if (ep_admits(c, ep, l, &t, now)) {
            l->ep = ep;
            l->gen = ep->gen;
            c->rr = (unsigned)((c->rr + i + 1) % c->n_eps);
            rc = 0;
            break;
        }
    }
    if (rc && any_up) {
        rc = AN_ECIRCUIT;
    }
    pthread_mutex_unlock(&c->mu);
    notify(c, &t);
    return rc;
}

void an__ep_release(an_client *c, const struct an__lease *l, int rc)
{
    struct transition t = {0};
    struct an__ep *ep = l->ep;
    bool current;

    if (!ep || c->breaker_threshold <= 0) return;
    pthread_mutex_lock(&c->mu);
    current = l->gen == ep->gen;
    if (l->probe && current && ep->probes > 0) {
        ep->probes--;
    }
    if (rc == AN__ABANDONED) {
        /* Given up by the caller: proves nothing either way. */
    } else if (an__transient(rc)) {
        ep->fails++;
        if (ep->state == AN_BREAKER_HALF_OPEN && current) {
            breaker_move(ep, AN_BREAKER_OPEN, &t);
        } else if (ep->state == AN_BREAKER_CLOSED && ep->fails >= c->breaker_threshold) {
            breaker_move(ep, AN_BREAKER_OPEN, &t);
        }
    } else {
        ep->fails = 0;
        if (ep->state == AN_BREAKER_HALF_OPEN && l->probe && current) {
            breaker_move(ep, AN_BREAKER_CLOSED, &t);
        }
    }
    pthread_mutex_unlock(&c->mu);
    notify(c, &t);
}

int an_breaker_state(an_client *c, const char *endpoint)
{
    int state = AN_EINVAL;

    if (!c) return AN_EINVAL;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_eps; i++) {
        if (!endpoint || strcmp(c->eps[i].target, endpoint) == 0) {
            state = c->eps[i].state;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return state;
}

void an__ep_report(an_client *c, struct an__ep *ep, int rc)
{
    struct an__lease l = {.ep = ep};

    if (!ep) return;
    pthread_mutex_lock(&c->mu);
    l.gen = ep->gen;
    pthread_mutex_unlock(&c->mu);
    an__ep_release(c, &l, rc);
}

/* ---- the health thread ---- */

static void *health_main(void *arg)
{
    an_client *c = arg;
    struct timespec until;

    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        for (size_t i = 0; i < c->n_eps && !c->stop; i++) {
            bool serving = false;
            int rc;

            pthread_mutex_unlock(&c->mu);
            rc = an__health_once(c, &c->eps[i], c->health_interval_ms, &serving);
            pthread_mutex_lock(&c->mu);
            c->eps[i].up = rc == 0 && serving;
        }
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += c->health_interval_ms / 1000;
        until.tv_nsec += (long)(c->health_interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int an__health_start(an_client *c)
{
    if (c->n_eps < 2 || c->health_interval_ms <= 0) return 0;
    if (pthread_create(&c->health, NULL, health_main, c) != 0) return AN_ENOMEM;
    c->health_running = true;
    return 0;
}

void an__health_stop(an_client *c)
{
    if (!c->health_running) return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->health, NULL);
    c->health_running = false;
}

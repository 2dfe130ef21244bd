/*
 * drv_redis.c - the Redis driver (hiredis). A stream per event stream; an
 * append is EVALSHA of a Lua script that compares XLEN with the expected
 * version and XADDs, atomically (a script runs alone). Durability is the
 * server's: appendonly yes, appendfsync always (the reply is written after
 * the AOF's fsync). The pipelined workload keeps 64 EVALSHA in flight on
 * one connection. Redis has no order across streams, so the read fills one
 * stream with every event (as an event store on Redis would keep an "all"
 * stream) and pages through it with XRANGE.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmp.h"

/* KEYS[1] the stream; ARGV[1] the expected last version (-1: none),
 * ARGV[2] the type, ARGV[3] the data */
static const char script[] =
    "local n = redis.call('XLEN', KEYS[1]) "
    "if n ~= tonumber(ARGV[1]) + 1 then return redis.error_reply('CONFLICT ' .. (n - 1)) end "
    "return redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'data', ARGV[3])";

static char host[128];
static int port;
static char sha[48];            /* the loaded script's, set by setup */

#define FILL_STREAM "fill-all"
#define PAGE 10000

static void *r_open(void)
{
    redisContext *r = redisConnect(host, port);
    if (!r || r->err) {
        cmp_die("redis connect", r ? r->errstr : "no memory");
    }
    return r;
}

static void r_close(void *c)
{
    redisFree(c);
}

static redisReply *cmd_reply(redisContext *r, redisReply *rep, const char *what)
{
    if (!rep) {
        cmp_die(what, r->errstr);
    }
    return rep;
}

static void r_setup(const char *addr)
{
    snprintf(host, sizeof(host), "%s", addr);
    char *colon = strrchr(host, ':');
    if (!colon) {
        cmp_die("redis address (HOST:PORT)", addr);
    }
    *colon = 0;
    port = atoi(colon + 1);
    redisContext *r = r_open();
    redisReply *rep = cmd_reply(r, redisCommand(r, "CONFIG GET appendfsync"), "redis config");
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        strcmp(rep->element[1]->str, "always") != 0) {
        cmp_die("redis", "appendfsync is not always");
    }
    freeReplyObject(rep);
    rep = cmd_reply(r, redisCommand(r, "SCRIPT LOAD %s", script), "redis script load");
    if (rep->type != REDIS_REPLY_STRING) {
        cmp_die("redis script load", rep->str);
    }
    snprintf(sha, sizeof(sha), "%s", rep->str);
    freeReplyObject(rep);
    r_close(r);
}

/* CMP_OK, or CMP_CONFLICT: an EVALSHA's reply */
static int settle(redisContext *r, redisReply *rep)
{
    cmd_reply(r, rep, "redis evalsha");
    int rc = CMP_OK;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strncmp(rep->str, "CONFLICT", 8) != 0) {
            cmp_die("redis evalsha", rep->str);
        }
        rc = CMP_CONFLICT;
    }
    freeReplyObject(rep);
    return rc;
}

static int r_append(void *c, const char *stream, int64_t expect, int64_t *next)
{
    redisReply *rep = redisCommand(c, "EVALSHA %s 1 %s %lld " CMP_TYPE " %b", sha, stream,
                                   (long long)expect, cmp_payload, (size_t)CMP_PAYLOAD);
    if (settle(c, rep) != CMP_OK) {
        return CMP_CONFLICT;
    }
    *next = expect + 1;
    return CMP_OK;
}

static void r_current(void *c, const char *stream, int64_t *token)
{
    redisReply *rep = cmd_reply(c, redisCommand(c, "XLEN %s", stream), "redis xlen");
    if (rep->type != REDIS_REPLY_INTEGER) {
        cmp_die("redis xlen", rep->str);
    }
    *token = (int64_t)rep->integer - 1;
    freeReplyObject(rep);
}

/* ---- pipelined ---- */

#define PIPE_STREAMS 256

static void r_pipe(struct cmp_meas *m, const char *tag)
{
    redisContext *r = r_open();
    unsigned depth = cmp_lim.pipe_depth;
    double *sent = calloc(depth, sizeof(*sent));
    int64_t ver[PIPE_STREAMS];
    uint64_t submitted = 0;
    if (!sent) {
        cmp_die("redis pipe", "no memory");
    }
    for (int i = 0; i < PIPE_STREAMS; i++) {
        ver[i] = -1;
    }
    double t0 = bu_now();
    /* a sliding window: hiredis sends what is queued when it waits for a
     * reply, so the commands queued meanwhile go out together */
    while (submitted < 4000000 && !cmp_time_up(t0)) {
        while (submitted - m->n < depth) {
            char stream[96];
            int s = (int)(submitted % PIPE_STREAMS);
            snprintf(stream, sizeof(stream), "%s-%d", tag, s);
            redisAppendCommand(r, "EVALSHA %s 1 %s %lld " CMP_TYPE " %b", sha, stream,
                               (long long)ver[s]++, cmp_payload, (size_t)CMP_PAYLOAD);
            sent[submitted++ % depth] = bu_now();
        }
        redisReply *rep = NULL;
        if (redisGetReply(r, (void **)&rep) != REDIS_OK || settle(r, rep) != CMP_OK) {
            cmp_die("redis pipe", "an append failed");
        }
        bu_lat_add(&m->lat, bu_now() - sent[m->n++ % depth]);
    }
    while (m->n < submitted) {
        redisReply *rep = NULL;
        if (redisGetReply(r, (void **)&rep) != REDIS_OK || settle(r, rep) != CMP_OK) {
            cmp_die("redis pipe", "an append failed");
        }
        bu_lat_add(&m->lat, bu_now() - sent[m->n++ % depth]);
    }
    m->secs = bu_now() - t0;
    free(sent);
    r_close(r);
}

/* ---- read ---- */

/* Waits while an AOF rewrite runs (the fill's growth starts one), so that
 * no fork competes with the timed reads. */
static void wait_rewrite(redisContext *r)
{
    for (int i = 0; i < 600; i++) {
        redisReply *rep = cmd_reply(r, redisCommand(r, "INFO persistence"), "redis info");
        bool busy = rep->type == REDIS_REPLY_STRING &&
                    (strstr(rep->str, "aof_rewrite_in_progress:1") ||
                     strstr(rep->str, "aof_rewrite_scheduled:1"));
        freeReplyObject(rep);
        if (!busy) {
            return;
        }
        usleep(100000);
    }
}

static void r_fill(void)
{
    redisContext *r = r_open();
    unsigned batch = 1000;
    double t0 = bu_now();
    for (unsigned i = 0; i < cmp_lim.read_events && !cmp_fill_up(t0, i); i += batch) {
        for (unsigned k = 0; k < batch; k++) {
            redisAppendCommand(r, "XADD " FILL_STREAM " * stream fill-%u type " CMP_TYPE
                                  " data %b",
                               (i + k) % 1000, cmp_payload, (size_t)CMP_PAYLOAD);
        }
        for (unsigned k = 0; k < batch; k++) {
            redisReply *rep = NULL;
            if (redisGetReply(r, (void **)&rep) != REDIS_OK || rep->type != REDIS_REPLY_STRING) {
                cmp_die("redis fill", rep ? rep->str : r->errstr);
            }
            freeReplyObject(rep);
        }
    }
    wait_rewrite(r);
    r_close(r);
}

static void r_read(struct cmp_meas *m)
{
    redisContext *r = r_open();
    char from[64] = "-";
    uint64_t bytes = 0;
    wait_rewrite(r);
    double t0 = bu_now();
    while (m->n < cmp_lim.read_events && !cmp_time_up(t0)) {
        redisReply *rep = cmd_reply(
            r, redisCommand(r, "XRANGE " FILL_STREAM " %s + COUNT %d", from, PAGE), "xrange");
        if (rep->type != REDIS_REPLY_ARRAY) {
            cmp_die("redis xrange", rep->str);
        }
        if (rep->elements == 0) {
            freeReplyObject(rep);
            break;
        }
        for (size_t i = 0; i < rep->elements; i++) {
            redisReply *e = rep->element[i];     /* [id, [field, value, ...]] */
            redisReply *f = e->element[1];
            bytes += f->element[f->elements - 1]->len;
            m->n++;
        }
        /* the next page starts after this one's last id (exclusive) */
        snprintf(from, sizeof(from), "(%s", rep->element[rep->elements - 1]->element[0]->str);
        freeReplyObject(rep);
    }
    m->secs = bu_now() - t0;
    if (bytes < m->n * CMP_PAYLOAD) {
        cmp_die("redis read", "short events");
    }
    r_close(r);
}

const struct cmp_driver cmp_redis = {
    .name = "redis",
    .setup = r_setup,
    .open = r_open,
    .close = r_close,
    .append = r_append,
    .current = r_current,
    .pipe = r_pipe,
    .fill = r_fill,
    .read = r_read,
};

/*
 * drv_pg.c - the PostgreSQL driver (libpq). The table is the event store a
 * user would write:
 *   events(global bigserial primary key, stream text, version int,
 *          type text, data bytea, unique(stream, version))
 * An append is one INSERT at the expected version + 1 in its own
 * transaction (autocommit; synchronous_commit on, so the commit waits for
 * the WAL's fdatasync); a unique violation is the conflict. The pipelined
 * workload uses libpq's pipeline mode with a sync after each insert, so each
 * is still its own durable transaction. The read is a binary COPY of the
 * filled rows in global order.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmp.h"

static const char *conninfo;
static long long fill_after;    /* the largest global before the fill */

static PGresult *must(PGconn *pg, PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) != want) {
        cmp_die(what, PQerrorMessage(pg));
    }
    return r;
}

static void *pg_open(void)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        cmp_die("pg connect", PQerrorMessage(pg));
    }
    PQclear(must(pg,
                 PQprepare(pg, "append",
                           "INSERT INTO events(stream, version, type, data) "
                           "VALUES ($1, $2::int, '" CMP_TYPE "', $3::bytea)",
                           3, NULL),
                 PGRES_COMMAND_OK, "pg prepare"));
    PQclear(must(pg,
                 PQprepare(pg, "current",
                           "SELECT coalesce(max(version), -1) FROM events WHERE stream = $1", 1,
                           NULL),
                 PGRES_COMMAND_OK, "pg prepare"));
    return pg;
}

static void pg_close(void *c)
{
    PQfinish(c);
}

static void pg_setup(const char *addr)
{
    conninfo = addr;
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        cmp_die("pg connect", PQerrorMessage(pg));
    }
    PQclear(must(pg,
                 PQexec(pg, "SET client_min_messages = warning; "
                            "CREATE TABLE IF NOT EXISTS events(global bigserial PRIMARY KEY, "
                            "stream text NOT NULL, version int NOT NULL, type text NOT NULL, "
                            "data bytea, UNIQUE (stream, version))"),
                 PGRES_COMMAND_OK, "pg create table"));
    PGresult *r = must(pg, PQexec(pg, "SHOW synchronous_commit"), PGRES_TUPLES_OK, "pg show");
    if (strcmp(PQgetvalue(r, 0, 0), "on") != 0) {
        cmp_die("pg", "synchronous_commit is not on");
    }
    PQclear(r);
    PQfinish(pg);
}

/* Sends (or, with `send`, queues) the insert of one event at version v. */
static int pg_insert(PGconn *pg, const char *stream, int64_t v, bool send)
{
    char ver[24];
    snprintf(ver, sizeof(ver), "%lld", (long long)v);
    const char *vals[3] = {stream, ver, cmp_payload};
    const int lens[3] = {0, 0, CMP_PAYLOAD};
    const int fmts[3] = {0, 0, 1}; /* data in binary: no bytea escaping */
    if (send) {
        return PQsendQueryPrepared(pg, "append", 3, vals, lens, fmts, 0);
    }
    PGresult *r = PQexecPrepared(pg, "append", 3, vals, lens, fmts, 0);
    int rc = CMP_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (!state || strcmp(state, "23505") != 0) { /* unique_violation */
            cmp_die("pg insert", PQerrorMessage(pg));
        }
        rc = CMP_CONFLICT;
    }
    PQclear(r);
    return rc;
}

static int pg_append(void *c, const char *stream, int64_t expect, int64_t *next)
{
    if (pg_insert(c, stream, expect + 1, false) != CMP_OK) {
        return CMP_CONFLICT;
    }
    *next = expect + 1;
    return CMP_OK;
}

static void pg_current(void *c, const char *stream, int64_t *token)
{
    const char *vals[1] = {stream};
    PGresult *r = must(c, PQexecPrepared(c, "current", 1, vals, NULL, NULL, 0), PGRES_TUPLES_OK,
                       "pg current");
    *token = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- pipeline mode ---- */

#define PIPE_STREAMS 256

/* Reads one insert's result and its sync. */
static void pipe_settle(PGconn *pg)
{
    PGresult *r = PQgetResult(pg);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        cmp_die("pg pipeline insert", PQerrorMessage(pg));
    }
    PQclear(r);
    if ((r = PQgetResult(pg)) != NULL) { /* the end of the insert's results */
        cmp_die("pg pipeline", "more than one result");
    }
    r = PQgetResult(pg);
    if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        cmp_die("pg pipeline sync", PQerrorMessage(pg));
    }
    PQclear(r);
}

static void pg_pipe(struct cmp_meas *m, const char *tag)
{
    PGconn *pg = pg_open();
    unsigned depth = cmp_lim.pipe_depth;
    double *sent = calloc(depth, sizeof(*sent));
    int64_t ver[PIPE_STREAMS];
    if (!sent || !PQenterPipelineMode(pg)) {
        cmp_die("pg pipeline mode", PQerrorMessage(pg));
    }
    for (int i = 0; i < PIPE_STREAMS; i++) {
        ver[i] = -1;
    }
    uint64_t submitted = 0;
    double t0 = bu_now();
    /* a sliding window: keep `depth` inserts in flight, each with a sync
     * after it (its own transaction, acknowledged on its own) */
    while (submitted < 4000000 && !cmp_time_up(t0)) {
        while (submitted - m->n < depth) {
            char stream[96];
            int s = (int)(submitted % PIPE_STREAMS);
            snprintf(stream, sizeof(stream), "%s-%d", tag, s);
            if (!pg_insert(pg, stream, ++ver[s], true) || !PQpipelineSync(pg)) {
                cmp_die("pg pipeline send", PQerrorMessage(pg));
            }
            sent[submitted++ % depth] = bu_now();
        }
        pipe_settle(pg);
        bu_lat_add(&m->lat, bu_now() - sent[m->n++ % depth]);
    }
    while (m->n < submitted) {
        pipe_settle(pg);
        bu_lat_add(&m->lat, bu_now() - sent[m->n++ % depth]);
    }
    m->secs = bu_now() - t0;
    PQexitPipelineMode(pg);
    free(sent);
    PQfinish(pg);
}

/* ---- read: binary COPY in global order ---- */

static void pg_fill(void)
{
    PGconn *pg = pg_open();
    PGresult *r = must(pg, PQexec(pg, "SELECT coalesce(max(global), 0) FROM events"),
                       PGRES_TUPLES_OK, "pg max");
    fill_after = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQclear(must(pg, PQexec(pg, "COPY events(stream, version, type, data) FROM STDIN"),
                 PGRES_COPY_IN, "pg copy in"));
    double t0 = bu_now();
    for (unsigned i = 0; i < cmp_lim.read_events; i++) {
        char line[400];
        if ((i & 4095) == 4095 && cmp_fill_up(t0, i)) {
            break;
        }
        int len = snprintf(line, sizeof(line), "fill-%u\t%u\t" CMP_TYPE "\t%s\n", i % 1000,
                           i / 1000, cmp_payload);
        if (PQputCopyData(pg, line, len) != 1) {
            cmp_die("pg copy in", PQerrorMessage(pg));
        }
    }
    if (PQputCopyEnd(pg, NULL) != 1) {
        cmp_die("pg copy end", PQerrorMessage(pg));
    }
    PQclear(must(pg, PQgetResult(pg), PGRES_COMMAND_OK, "pg copy in"));
    PQclear(must(pg, PQexec(pg, "ANALYZE events"), PGRES_COMMAND_OK, "pg analyze"));
    PQfinish(pg);
}

/* Walks one binary COPY row (int16 field count, then int32 length + bytes
 * per field); returns the data field's length, -1 for the trailer. */
static int copy_row(const char *row, int len)
{
    if (len < 2) {
        cmp_die("pg copy out", "short row");
    }
    int16_t nf;
    memcpy(&nf, row, 2);
    nf = (int16_t)ntohs((uint16_t)nf);
    if (nf == -1) {
        return -1;
    }
    int off = 2, last = 0;
    for (int f = 0; f < nf; f++) {
        int32_t fl;
        if (off + 4 > len) {
            cmp_die("pg copy out", "short field");
        }
        memcpy(&fl, row + off, 4);
        fl = (int32_t)ntohl((uint32_t)fl);
        off += 4 + (fl > 0 ? fl : 0);
        last = fl;
    }
    return last;
}

static void pg_read(struct cmp_meas *m)
{
    PGconn *pg = pg_open();
    char sql[400];
    char *buf;
    int len;
    uint64_t bytes = 0;
    snprintf(sql, sizeof(sql),
             "COPY (SELECT global, stream, version, type, data FROM events WHERE global > %lld "
             "ORDER BY global LIMIT %u) TO STDOUT (FORMAT binary)",
             fill_after, cmp_lim.read_events);
    double t0 = bu_now();
    PQclear(must(pg, PQexec(pg, sql), PGRES_COPY_OUT, "pg copy out"));
    bool first = true, cancelled = false;
    while ((len = PQgetCopyData(pg, &buf, 0)) > 0) {
        if (!cancelled && (m->n & 4095) == 4095 && cmp_time_up(t0)) {
            char err[256];
            PGcancel *cn = PQgetCancel(pg); /* out of time: stop the server, count what came */
            cancelled = cn && PQcancel(cn, err, sizeof(err));
            PQfreeCancel(cn);
        }
        /* the first message also carries the 19-byte file header */
        int d = copy_row(first ? buf + 19 : buf, first ? len - 19 : len);
        first = false;
        if (d >= 0) {
            bytes += (uint64_t)d;
            m->n++;
        }
        PQfreemem(buf);
    }
    PGresult *r = PQgetResult(pg);
    if (!cancelled) {
        must(pg, r, PGRES_COMMAND_OK, "pg copy out");
    }
    PQclear(r);
    m->secs = bu_now() - t0;
    if (bytes < m->n * CMP_PAYLOAD) {
        cmp_die("pg read", "short events");
    }
    PQfinish(pg);
}

const struct cmp_driver cmp_pg = {
    .name = "pg",
    .setup = pg_setup,
    .open = pg_open,
    .close = pg_close,
    .append = pg_append,
    .current = pg_current,
    .pipe = pg_pipe,
    .fill = pg_fill,
    .read = pg_read,
};

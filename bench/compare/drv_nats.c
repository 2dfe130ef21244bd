/*
 * drv_nats.c - the NATS JetStream driver (nats.c). One JetStream stream
 * "EV" over the subjects "ev.>", file storage, a subject per event stream;
 * an append is a synchronous publish with Nats-Expected-Last-Subject-
 * Sequence (ExpectNoMessage for a new stream), a wrong-last-sequence error
 * is the conflict. The token is the subject's last stream sequence.
 * Debian's nats-server 2.9 acknowledges after write(), not after fsync
 * (sync_interval came in 2.10): its figures are not durable per ack.
 * The read fills a stream "FILL" over "fill.>" and reads it in stream order
 * with a pull consumer (no acks), in batches.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmp.h"

static const char *url;

struct nconn {
    natsConnection *nc;
    jsCtx *js;
};

#define JS_NO_MESSAGE 10037     /* JSNoMessageFoundErr */

static void *n_open(void)
{
    struct nconn *c = calloc(1, sizeof(*c));
    jsOptions o;
    natsStatus s;
    if (!c) {
        cmp_die("nats", "no memory");
    }
    if ((s = natsConnection_ConnectTo(&c->nc, url)) != NATS_OK) {
        cmp_die("nats connect", natsStatus_GetText(s));
    }
    jsOptions_Init(&o);
    o.Wait = 30000;
    o.PublishAsync.MaxPending = 4096;
    if ((s = natsConnection_JetStream(&c->js, c->nc, &o)) != NATS_OK) {
        cmp_die("nats jetstream", natsStatus_GetText(s));
    }
    return c;
}

static void n_close(void *p)
{
    struct nconn *c = p;
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    free(c);
}

static void add_stream(jsCtx *js, const char *name, const char *subject)
{
    jsStreamConfig sc;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    const char *subjects[1] = {subject};
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK) {
        cmp_die("nats add stream", natsStatus_GetText(s));
    }
    jsStreamInfo_Destroy(si);
}

static void n_setup(const char *addr)
{
    url = addr;
    struct nconn *c = n_open();
    add_stream(c->js, "EV", "ev.>");
    add_stream(c->js, "FILL", "fill.>");
    n_close(c);
}

static int n_append(void *p, const char *stream, int64_t expect, int64_t *next)
{
    struct nconn *c = p;
    char subj[160];
    jsPubOptions po;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    snprintf(subj, sizeof(subj), "ev.%s", stream);
    jsPubOptions_Init(&po);
    if (expect < 0) {
        po.ExpectNoMessage = true;
    } else {
        po.ExpectLastSubjectSeq = (uint64_t)expect;
    }
    natsStatus s = js_Publish(&ack, c->js, subj, cmp_payload, CMP_PAYLOAD, &po, &jerr);
    if (s != NATS_OK) {
        if (jerr == JSStreamWrongLastSequenceErr) {
            return CMP_CONFLICT;
        }
        cmp_die("nats publish", natsStatus_GetText(s));
    }
    *next = (int64_t)ack->Sequence;
    jsPubAck_Destroy(ack);
    return CMP_OK;
}

static void n_current(void *p, const char *stream, int64_t *token)
{
    struct nconn *c = p;
    char subj[160];
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    snprintf(subj, sizeof(subj), "ev.%s", stream);
    natsStatus s = js_GetLastMsg(&m, c->js, "EV", subj, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JS_NO_MESSAGE) {
        *token = -1;
        return;
    }
    if (s != NATS_OK) {
        cmp_die("nats get last", natsStatus_GetText(s));
    }
    *token = (int64_t)natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
}

/* ---- read ---- */

static void n_fill(void)
{
    struct nconn *c = n_open();
    natsStatus s;
    double t0 = bu_now();
    for (unsigned i = 0; i < cmp_lim.read_events; i++) {
        char subj[32];
        if ((i & 4095) == 4095 && cmp_fill_up(t0, i)) {
            break;
        }
        snprintf(subj, sizeof(subj), "fill.%u", i % 1000);
        if ((s = js_PublishAsync(c->js, subj, cmp_payload, CMP_PAYLOAD, NULL)) != NATS_OK) {
            cmp_die("nats fill", natsStatus_GetText(s));
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 120000;
    if ((s = js_PublishAsyncComplete(c->js, &po)) != NATS_OK) {
        cmp_die("nats fill complete", natsStatus_GetText(s));
    }
    n_close(c);
}

static void n_read(struct cmp_meas *m)
{
    static int serial;
    struct nconn *c = n_open();
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsErrCode jerr = 0;
    char durable[32];
    uint64_t bytes = 0;
    natsStatus s;
    snprintf(durable, sizeof(durable), "reader-%d", ++serial);
    jsSubOptions_Init(&so);
    so.Stream = "FILL";
    so.Config.AckPolicy = js_AckNone;
    so.Config.DeliverPolicy = js_DeliverAll;
    double t0 = bu_now();
    if ((s = js_PullSubscribe(&sub, c->js, "fill.>", durable, NULL, &so, &jerr)) != NATS_OK) {
        cmp_die("nats pull subscribe", natsStatus_GetText(s));
    }
    while (m->n < cmp_lim.read_events && !cmp_time_up(t0)) {
        natsMsgList list = {0};
        s = natsSubscription_Fetch(&list, sub, 1000, 5000, &jerr);
        if (s != NATS_OK && s != NATS_TIMEOUT) {
            cmp_die("nats fetch", natsStatus_GetText(s));
        }
        for (int i = 0; i < list.Count; i++) {
            bytes += (uint64_t)natsMsg_GetDataLength(list.Msgs[i]);
            m->n++;
        }
        natsMsgList_Destroy(&list);
        if (s == NATS_TIMEOUT) {
            break;
        }
    }
    m->secs = bu_now() - t0;
    natsSubscription_Unsubscribe(sub); /* deletes the consumer it made */
    natsSubscription_Destroy(sub);
    if (bytes < m->n * CMP_PAYLOAD) {
        cmp_die("nats read", "short events");
    }
    n_close(c);
}

const struct cmp_driver cmp_nats = {
    .name = "nats",
    .setup = n_setup,
    .open = n_open,
    .close = n_close,
    .append = n_append,
    .current = n_current,
    .pipe = NULL,
    .fill = n_fill,
    .read = n_read,
};

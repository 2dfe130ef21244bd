/*
 * fuzz_proj_fold.c - libFuzzer entry for the projection engine over event
 * data from clients: the input is cut at 0xff bytes (never in UTF-8 JSON)
 * into up to 16 events; each piece's first byte picks its stream and type,
 * the rest is its data. They are appended in one request to a real log
 * and folded by the real workers (proj_worker.c) into seven views, one of
 * each way a key or value is made from event data:
 *
 *   state      STREAM_STATE: JSON Merge Patch (RFC 7396) onto the last value
 *   latest     the same, latest_only
 *   by_ptr     COUNT by the JSON Pointer /k, summing /n
 *   by_type    COUNT by $type, summing /a/0 (an array index)
 *   by_cat     INDEX by $category
 *   by_esc     INDEX by /a~1b/~0c (escaped pointer tokens)
 *   streams    STREAMS
 *
 * then waits until every view has applied them. A view that faults (a
 * fold must skip data it cannot use, never stop on it) or does not catch
 * up in 30 s is a crash. The last piece is also used as a JSON Pointer
 * into the first piece's document (proj__pointer_get), so pointers from
 * definitions meet arbitrary documents too.
 *
 * The log and views live in /dev/shm (syncs are cheap there); every 20000
 * inputs they are dropped and made afresh, so a long campaign neither
 * fills memory nor folds ever larger documents only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_fixture.h"
#include "proj_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_EVENTS 16
#define N_STREAMS 4
#define RESET_EVERY 20000

static const char *const views[] = {"state", "latest", "by_ptr", "by_type",
                                    "by_cat", "by_esc", "streams"};
static const char *const streams[N_STREAMS] = {"acct-1", "acct-2", "ord-1", "x"};
static const char *const types[] = {"Opened", "Moved", "Closed", "T"};
static unsigned runs;

static void start(void)
{
    ffx_open("/dev/shm", 0);
    ffx_create("state", ANNALS__V1__PROJECTION_KIND__STREAM_STATE, NULL, NULL, false);
    ffx_create("latest", ANNALS__V1__PROJECTION_KIND__STREAM_STATE, NULL, NULL, true);
    ffx_create("by_ptr", ANNALS__V1__PROJECTION_KIND__COUNT, "/k", "/n", false);
    ffx_create("by_type", ANNALS__V1__PROJECTION_KIND__COUNT, "$type", "/a/0", false);
    ffx_create("by_cat", ANNALS__V1__PROJECTION_KIND__INDEX, "$category", NULL, false);
    ffx_create("by_esc", ANNALS__V1__PROJECTION_KIND__INDEX, "/a~1b/~0c", NULL, false);
    ffx_create("streams", ANNALS__V1__PROJECTION_KIND__STREAMS, NULL, NULL, false);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    start();
    atexit(ffx_close); /* libFuzzer exits when its time is up */
    return 0;
}

/* Checks every view caught up and none faulted. */
static void check_views(void)
{
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
        int rc = ffx_wait(views[i]);
        Annals__V1__ProjectionStatus *st = NULL;
        if (proj_status(ffx.mgr, views[i], &st) || rc ||
            st->state == ANNALS__V1__PROJECTION_STATE__FAULTED) {
            fprintf(stderr, "fuzz_proj_fold: view %s: wait %s, state %d, error %s\n", views[i],
                    an_errname(rc), st ? (int)st->state : -1,
                    st && st->error ? st->error : "");
            __builtin_trap();
        }
        proj_status_free(st);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Annals__V1__EventData ev[MAX_EVENTS];
    Annals__V1__EventData *evp[N_STREAMS][MAX_EVENTS];
    Annals__V1__StreamAppend sa[N_STREAMS];
    Annals__V1__StreamAppend *sap[N_STREAMS];
    Annals__V1__AppendRequest req = ANNALS__V1__APPEND_REQUEST__INIT;
    const uint8_t *piece[MAX_EVENTS];
    size_t piece_len[MAX_EVENTS];
    size_t n = 0;

    if (++runs % RESET_EVERY == 0) {
        ffx_close();
        start();
    }
    /* cut into pieces */
    size_t from = 0;
    for (size_t i = 0; i <= size && n < MAX_EVENTS; i++) {
        if (i == size || data[i] == 0xff) {
            piece[n] = data + from;
            piece_len[n] = i - from;
            n++;
            from = i + 1;
        }
    }
    for (size_t s = 0; s < N_STREAMS; s++) {
        sa[s] = (Annals__V1__StreamAppend)ANNALS__V1__STREAM_APPEND__INIT;
        sa[s].stream = (char *)streams[s];
        sa[s].events = evp[s];
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t pick = piece_len[i] ? piece[i][0] : 0;
        Annals__V1__StreamAppend *s = &sa[pick % N_STREAMS];
        ev[i] = (Annals__V1__EventData)ANNALS__V1__EVENT_DATA__INIT;
        ev[i].type = (char *)types[(pick >> 2) % 4];
        ev[i].data.data = (uint8_t *)(piece_len[i] ? piece[i] + 1 : piece[i]);
        ev[i].data.len = piece_len[i] ? piece_len[i] - 1 : 0;
        s->events[s->n_events++] = &ev[i];
    }
    for (size_t s = 0; s < N_STREAMS; s++) {
        if (sa[s].n_events) {
            sap[req.n_streams++] = &sa[s];
        }
    }
    req.streams = sap;
    if (ffx_append(&req) == 0) {
        check_views();
    }

    /* a pointer (the last piece) into a document (the first one) */
    if (n >= 2 && piece_len[0] > 1) {
        json_t *doc = json_loadb((const char *)piece[0] + 1, piece_len[0] - 1, 0, NULL);
        char ptr[PROJ_POINTER_MAX + 1];
        size_t pl = piece_len[n - 1] < PROJ_POINTER_MAX ? piece_len[n - 1] : PROJ_POINTER_MAX;
        memcpy(ptr, piece[n - 1], pl);
        ptr[pl] = '\0';
        /* only pointers a definition may hold (proj_validate) */
        char detail[PROJ_DETAIL_MAX] = "";
        Annals__V1__ProjectionDefinition d = ANNALS__V1__PROJECTION_DEFINITION__INIT;
        d.name = (char *)"p";
        d.kind = ANNALS__V1__PROJECTION_KIND__COUNT;
        d.key = ptr;
        if (doc && ptr[0] == '/' && proj_validate(&d, detail) == 0) {
            json_t *v = proj__pointer_get(doc, ptr);
            if (v) {
                json_incref(v);
                json_decref(v);
            }
        }
        json_decref(doc);
    }
    return 0;
}

/*
 * test_faults.c - a log that reaches its --max-size cap: appends are
 * refused with RESOURCE_EXHAUSTED naming the cap, nothing acknowledged is
 * lost, reads, subscriptions and views keep working, the server stays
 * healthy, and a restart with a larger cap writes again. A real annalsd
 * through libannals.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct harness h;

static void teardown(void)
{
    h_cleanup(&h);
}

TestSuite(faults, .fini = teardown, .timeout = 180);

static int append_kb(an_client *c, int i, struct an_error *err)
{
    static char data[1024];
    snprintf(data, sizeof(data), "{\"i\":%d,\"pad\":\"%0*d\"}", i, 990, 0);
    char stream[32];
    snprintf(stream, sizeof(stream), "full-%d", i % 8);
    struct an_event e = {.type = "Filled", .data = data, .data_len = strlen(data)};
    struct an_stream_append sa = {.stream = stream, .events = &e, .n_events = 1};
    return an_append(c, &sa, 1, NULL, err);
}

Test(faults, a_full_log_refuses_appends_and_keeps_serving_reads)
{
    const char *flags[] = {"--max-size", "4M", NULL};
    h_start(&h, flags);
    struct an_projection_def d = {.name = "per_stream", .kind = AN_PROJ_COUNT, .key = "$stream"};
    cr_assert_eq(an_projection_create(h.client, &d, NULL, NULL), 0);
    an_sub *sub;
    struct an_subscribe_opts so = {0};
    cr_assert_eq(an_subscribe(h.client, &so, &sub), 0);

    struct an_error err;
    int acked = 0;
    int rc = 0;
    for (int i = 0; i < 20000 && rc == 0; i++) {
        rc = append_kb(h.client, i, &err);
        acked += rc == 0;
    }
    cr_assert_eq(rc, AN_ETOOBIG, "got %s: %s", an_errname(rc), err.detail);
    cr_assert_eq(err.grpc_status, 8, "RESOURCE_EXHAUSTED");
    cr_assert(strstr(err.detail, "max size") != NULL || strstr(err.detail, "cap") != NULL,
              "the detail names the limit: %s", err.detail);
    cr_assert_gt(acked, 100);
    /* still full, still the same answer: no panic, no INTERNAL */
    cr_assert_eq(append_kb(h.client, 99999, &err), AN_ETOOBIG);
    bool serving = false;
    cr_assert_eq(an_health(h.client, &serving, NULL), 0);
    cr_assert(serving);

    /* every acknowledged append reads back, in order */
    struct an_read_all_opts o = {0};
    an_iter *it;
    const Annals__V1__RecordedEvent *e;
    uint64_t n = 0;
    cr_assert_eq(an_read_all(h.client, &o, &it), 0);
    while ((rc = an_iter_next(it, &e, NULL)) == 1) {
        cr_assert_eq(e->global_position, ++n);
    }
    cr_assert_eq(rc, 0);
    an_iter_free(it);
    cr_assert_eq(n, (uint64_t)acked);

    /* the subscription got them all */
    uint64_t seen = 0;
    for (int i = 0; i < 200000 && seen < n; i++) {
        struct an_sub_item item;
        rc = an_sub_next(sub, 2000, &item, NULL);
        cr_assert_geq(rc, 0, "the subscription ended: %s", an_errname(rc));
        if (rc == 0) {
            break;
        }
        seen += item.kind == AN_SUB_EVENT;
    }
    cr_assert_eq(seen, n);
    an_sub_close(sub);

    /* the view caught up with everything stored */
    struct an_view_entry v;
    cr_assert_eq(an_get_view(h.client, "per_stream", "full-0", NULL, n, &v, &err), 0, "%s",
                 err.detail);
    cr_assert(v.found);
    an_view_entry_free(&v);

    /* a larger cap: writes again, nothing lost */
    cr_assert_eq(h_stop(&h), 0);
    const char *bigger[] = {"--max-size", "64M", NULL};
    struct harness h2;
    /* same data directory, larger cap */
    char data[300];
    snprintf(data, sizeof(data), "%s/data", h.dir);
    const char *flags2[] = {"--data", data, bigger[0], bigger[1], NULL};
    h_start(&h2, flags2);
    cr_assert_eq(append_kb(h2.client, 123456, &err), 0, "%s", err.detail);
    struct an_stream_info si;
    uint64_t total = 0;
    for (int s = 0; s < 8; s++) {
        char stream[32];
        snprintf(stream, sizeof(stream), "full-%d", s);
        if (an_get_stream(h2.client, stream, NULL, &si, NULL) == 0) {
            total += si.event_count;
        }
    }
    cr_assert_eq(total, n + 1);
    h_cleanup(&h2);
}

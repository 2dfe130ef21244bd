/*
 * test_log_codec.c - the stored-event decoder and the UTF-8 validator on
 * hostile bytes: a generated corpus of valid events, each truncated at every
 * length, bit-flipped and overwritten at random (a fixed seed, so a failure
 * replays). The libFuzzer entry tests/fuzz/fuzz_event_peek.c does the same
 * checks guided by coverage.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annals/v1/event.pb-c.h"
#include "log.h"

static size_t pack_event(uint8_t *buf, size_t cap, unsigned seed)
{
    Annals__V1__RecordedEvent e = ANNALS__V1__RECORDED_EVENT__INIT;
    uint8_t id[16];
    char stream[40];
    char data[64];
    for (int i = 0; i < 16; i++) {
        id[i] = (uint8_t)(seed * 31 + (unsigned)i);
    }
    snprintf(stream, sizeof(stream), "stream-%u", seed);
    memset(data, 'a' + (int)(seed % 26), sizeof(data));
    e.id.data = id;
    e.id.len = 16;
    e.stream = stream;
    e.stream_version = seed * 7;
    e.global_position = seed + 1;
    e.type = "Type\xc3\xa9";
    e.schema_version = 1;
    e.content_type = "application/json";
    e.data.data = (uint8_t *)data;
    e.data.len = seed % sizeof(data);
    e.recorded_at_unix_nanos = (int64_t)seed * 1000003;
    e.principal = seed % 2 ? "svc" : "";
    size_t n = annals__v1__recorded_event__get_packed_size(&e);
    cr_assert_leq(n, cap);
    return annals__v1__recorded_event__pack(&e, buf);
}

/* Decodes; when it succeeds, every borrowed field lies inside the input. */
static void check(const uint8_t *p, size_t len)
{
    struct log_event ev;
    if (log_event_peek(p, len, &ev) != 0) {
        return;
    }
    if (ev.stream_len) {
        cr_assert((const uint8_t *)ev.stream >= p &&
                  (const uint8_t *)ev.stream + ev.stream_len <= p + len);
    }
    if (ev.type_len) {
        cr_assert((const uint8_t *)ev.type >= p && (const uint8_t *)ev.type + ev.type_len <= p + len);
    }
    if (ev.id_len) {
        cr_assert(ev.id >= p && ev.id + ev.id_len <= p + len);
    }
    cr_assert_neq(ev.position, 0);
}

Test(log_codec, peek_reads_back_what_protobuf_c_packed)
{
    uint8_t buf[512];
    for (unsigned s = 0; s < 50; s++) {
        size_t n = pack_event(buf, sizeof(buf), s);
        struct log_event ev;
        cr_assert_eq(log_event_peek(buf, n, &ev), 0);
        cr_assert_eq(ev.position, s + 1);
        cr_assert_eq(ev.version, s * 7);
        cr_assert_eq(ev.recorded_at_ns, (int64_t)s * 1000003);
        char want[40];
        snprintf(want, sizeof(want), "stream-%u", s);
        cr_assert_eq(ev.stream_len, strlen(want));
        cr_assert(memcmp(ev.stream, want, ev.stream_len) == 0);
        cr_assert_eq(ev.id_len, 16);
    }
}

Test(log_codec, peek_survives_truncation_bit_flips_and_random_bytes)
{
    uint8_t buf[512];
    uint8_t m[512];
    unsigned rng = 12345;
    for (unsigned s = 0; s < 40; s++) {
        size_t n = pack_event(buf, sizeof(buf), s);
        for (size_t cut = 0; cut <= n; cut++) {
            memcpy(m, buf, cut);
            check(m, cut);
        }
        for (int k = 0; k < 2000; k++) {
            memcpy(m, buf, n);
            int flips = 1 + (int)(rng % 4);
            for (int f = 0; f < flips; f++) {
                rng = rng * 1103515245u + 12345u;
                m[(rng >> 8) % n] ^= (uint8_t)(1u << ((rng >> 4) & 7));
            }
            check(m, n);
        }
    }
    for (int k = 0; k < 20000; k++) {
        size_t len = (size_t)(k % 300);
        for (size_t i = 0; i < len; i++) {
            rng = rng * 1103515245u + 12345u;
            m[i] = (uint8_t)(rng >> 16);
        }
        check(m, len);
        (void)log_utf8_valid((const char *)m, len);
    }
}

Test(log_codec, utf8_validator_rejects_overlongs_surrogates_and_truncation)
{
    cr_assert(log_utf8_valid("plain", 5));
    cr_assert(log_utf8_valid("caf\xc3\xa9", 5));
    cr_assert(log_utf8_valid("\xf0\x9f\x98\x80", 4));
    cr_assert_not(log_utf8_valid("\xc0\xaf", 2), "overlong '/'");
    cr_assert_not(log_utf8_valid("\xe0\x80\xaf", 3), "overlong 3-byte");
    cr_assert_not(log_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    cr_assert_not(log_utf8_valid("\xf4\x90\x80\x80", 4), "beyond U+10FFFF");
    cr_assert_not(log_utf8_valid("\xc3", 1), "truncated");
    cr_assert_not(log_utf8_valid("\x80", 1), "lone continuation");
}

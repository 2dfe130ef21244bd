/*
 * log_codec.c - byte-level helpers of the event log: key packing, a reader
 * of packed RecordedEvents that pulls out single fields without unpacking
 * the message, UTF-8 validation, UUIDv7 generation, and text escaping.
 *
 * log_event_peek is on every read's hot path (filters look at the stream
 * and type of each event), so it walks the protobuf wire format itself:
 * a varint tag, then a varint or a length-delimited payload per field.
 * Stored bytes are never trusted: every length is checked against the end.
 */
#include "log_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- integers ---- */

uint64_t log__be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

void log__be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t log__le64_get(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void log__le64_put(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* ---- packed RecordedEvent ---- */

static inline int get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    if (p < end && *p < 0x80) {
        /* tags and small lengths: one byte */
        *out = *p;
        *pp = p + 1;
        return 0;
    }
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p == end) {
            return AN_ECORRUPT;
        }
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return AN_ECORRUPT;
}

int log_event_peek(const uint8_t *packed, size_t len, struct log_event *out)
{
    const uint8_t *p = packed;
    const uint8_t *end = packed + len;
    struct log_event ev = {.packed = packed, .packed_len = len, .stream = "", .type = ""};

    while (p < end) {
        uint64_t tag;
        uint64_t v;
        if (get_varint(&p, end, &tag)) {
            return AN_ECORRUPT;
        }
        switch (tag & 7) {
        case 0: /* varint */
            if (get_varint(&p, end, &v)) {
                return AN_ECORRUPT;
            }
            if ((tag >> 3) == 3) {
                ev.version = v;
            } else if ((tag >> 3) == 4) {
                ev.position = v;
            } else if ((tag >> 3) == 10) {
                ev.recorded_at_ns = (int64_t)v;
            }
            break;
        case 2: /* length-delimited */
            if (get_varint(&p, end, &v) || v > (uint64_t)(end - p)) {
                return AN_ECORRUPT;
            }
            if ((tag >> 3) == 1) {
                ev.id = p;
                ev.id_len = (size_t)v;
            } else if ((tag >> 3) == 2) {
                ev.stream = (const char *)p;
                ev.stream_len = (size_t)v;
            } else if ((tag >> 3) == 5) {
                ev.type = (const char *)p;
                ev.type_len = (size_t)v;
            }
            p += v;
            break;
        case 1: /* fixed64 */
            if (end - p < 8) {
                return AN_ECORRUPT;
            }
            p += 8;
            break;
        case 5: /* fixed32 */
            if (end - p < 4) {
                return AN_ECORRUPT;
            }
            p += 4;
            break;
        default:
            return AN_ECORRUPT;
        }
    }
    if (ev.position == 0) {
        return AN_ECORRUPT;
    }
    *out = ev;
    return 0;
}

int log__peek_value(const void *data, size_t size, struct log_event *out)
{
    const uint8_t *p = data;
    if (size < 1 || (p[0] != 0 && p[0] != LOG__RUN_BYTES) || size < 1u + p[0]) {
        return AN_ECORRUPT;
    }
    return log_event_peek(p + 1 + p[0], size - 1 - p[0], out);
}

/* ---- UTF-8 ---- */

bool log_utf8_valid(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    const uint8_t *end = p + len;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n) {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        p += n + 1;
    }
    return true;
}

/* ---- time and ids ---- */

int64_t log__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t log__rng_next(uint64_t *state)
{
    /* xorshift64*: ids need uniqueness, not secrecy; seeded from getrandom */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/*
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, a 12-bit counter
 * that keeps ids from one writer strictly increasing within a millisecond
 * (and carries into the millisecond if it wraps or the clock steps back),
 * variant 10, 62 random bits.
 */
void log__uuid7(log_env *env, uint8_t out[16])
{
    uint64_t ms = (uint64_t)(log__now_ns() / 1000000);
    if (ms > env->w_uuid_ms) {
        env->w_uuid_ms = ms;
        env->w_uuid_seq = 0;
    } else if (++env->w_uuid_seq > 0xfff) {
        env->w_uuid_ms++;
        env->w_uuid_seq = 0;
    }
    uint64_t r = log__rng_next(&env->w_rng);
    for (int i = 5; i >= 0; i--) {
        out[i] = (uint8_t)(env->w_uuid_ms >> (8 * (5 - i)));
    }
    out[6] = (uint8_t)(0x70 | ((env->w_uuid_seq >> 8) & 0x0f));
    out[7] = (uint8_t)env->w_uuid_seq;
    out[8] = (uint8_t)(0x80 | (r & 0x3f));
    for (int i = 9; i < 16; i++) {
        r >>= 8;
        if (i == 12) {
            r = log__rng_next(&env->w_rng);
        }
        out[i] = (uint8_t)r;
    }
}

/* ---- text ---- */

long log__json_escape(char *buf, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        char tmp[6];
        size_t n = 0;
        if (c == '"' || c == '\\') {
            tmp[n++] = '\\';
            tmp[n++] = (char)c;
        } else if (c < 0x20) {
            tmp[n++] = '\\';
            tmp[n++] = 'u';
            tmp[n++] = '0';
            tmp[n++] = '0';
            tmp[n++] = hex[c >> 4];
            tmp[n++] = hex[c & 15];
        } else {
            tmp[n++] = (char)c;
        }
        if (o + n > cap) {
            return -1;
        }
        memcpy(buf + o, tmp, n);
        o += n;
    }
    return (long)o;
}

void log_key_text(char *out, size_t cap, const void *key, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const uint8_t *k = key;
    size_t o = 0;
    size_t max = cap < 84 ? cap : 84;
    for (size_t i = 0; i < len; i++) {
        bool plain = (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
                     (k[i] >= '0' && k[i] <= '9') || k[i] == '_' || k[i] == '-' || k[i] == '.';
        if (o + (plain ? 1 : 3) + 4 > max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            out[o++] = (char)k[i];
        } else {
            out[o++] = '%';
            out[o++] = hex[k[i] >> 4];
            out[o++] = hex[k[i] & 15];
        }
    }
    out[o] = '\0';
}

void log_percent_encode(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (cap == 0) {
        return;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        bool plain = c >= 0x20 && c <= 0x7e && c != '%';
        size_t need = plain ? 1 : 3;
        if (o + need + 4 > cap) {
            if (o + 4 <= cap) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

void log__detail(char *detail, const char *fmt, ...)
{
    if (!detail) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, LOG_DETAIL_MAX, fmt, ap);
    va_end(ap);
}

void log__rng_seed(uint64_t *state)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        seed = (uint64_t)log__now_ns() ^ (uint64_t)(uintptr_t)state;
    }
    *state = seed ? seed : 0x9e3779b97f4a7c15ull;
}

/*
 * cli_fmt.c - text in and out for the `annals` CLI: RFC 3339 times, UUIDs,
 * UTF-8 checks, base64, and a recorded event as a human line or a JSON
 * object.
 *
 * Times are converted with the days-from-civil arithmetic of the proleptic
 * Gregorian calendar rather than timegm()/gmtime_r(), so that nothing
 * depends on the TZ environment and nanoseconds stay exact.
 *
 * A human event line is
 *
 *     #<position> <stream>@<version> <type> <recorded_at> <data>
 *
 * where data is the text itself when it is printable UTF-8 (no control
 * characters, so one event stays one line), else "base64:" and its base64.
 * Empty data prints nothing after the time.
 */
#include "cli_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- times ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (m 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Reads exactly n digits at *p. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9') return false;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool expect_char(const char **p, const char *set)
{
    if (**p == '\0' || !strchr(set, **p)) return false;
    (*p)++;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

int cli__parse_rfc3339(const char *s, int64_t *out_ns)
{
    int y, mo, d, h, mi, sec;
    int64_t frac_ns = 0;
    int64_t offset_s = 0;

    if (!digits(&s, 4, &y) || !expect_char(&s, "-") || !digits(&s, 2, &mo) ||
        !expect_char(&s, "-") || !digits(&s, 2, &d) || !expect_char(&s, "Tt ") ||
        !digits(&s, 2, &h) || !expect_char(&s, ":") || !digits(&s, 2, &mi) ||
        !expect_char(&s, ":") || !digits(&s, 2, &sec)) {
        return AN_EINVAL;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
        sec > 60) {
        return AN_EINVAL;
    }
    if (*s == '.') {
        int n = 0;
        s++;
        if (*s < '0' || *s > '9') return AN_EINVAL;
        for (; *s >= '0' && *s <= '9'; s++, n++) {
            if (n < 9) frac_ns = frac_ns * 10 + (*s - '0');
        }
        for (; n < 9; n++) {
            frac_ns *= 10;
        }
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1;
        int oh, om;
        s++;
        if (!digits(&s, 2, &oh) || !expect_char(&s, ":") || !digits(&s, 2, &om) ||
            oh > 23 || om > 59) {
            return AN_EINVAL;
        }
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return AN_EINVAL;
    }
    if (*s != '\0') return AN_EINVAL;
    /* A leap second (:60) reads as the first instant of the next minute. */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    if (secs > INT64_MAX / 1000000000 - 1 || secs < INT64_MIN / 1000000000 + 1) {
        return AN_EINVAL;
    }
    *out_ns = secs * 1000000000 + frac_ns;
    return 0;
}

void cli__format_time(int64_t unix_ns, char *buf, size_t len)
{
    int64_t secs = unix_ns / 1000000000;
    int64_t ns = unix_ns % 1000000000;
    int64_t y;
    int m, d;

    if (ns < 0) {
        ns += 1000000000;
        secs -= 1;
    }
    int64_t days = secs / 86400;
    int64_t sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    civil_from_days(days, &y, &m, &d);
    snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d.%09lldZ", (long long)y, m, d,
             (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), (long long)ns);
}

/* ---- UUIDs ---- */

static int hex_val(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int cli__parse_uuid(const char *s, uint8_t out[16])
{
    uint8_t b[16];
    size_t n = 0;

    if (strlen(s) != 36) return AN_EINVAL;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return AN_EINVAL;
            i++;
            continue;
        }
        int hi = hex_val(s[i]);
        int lo = hex_val(s[i + 1]);
        if (hi < 0 || lo < 0) return AN_EINVAL;
        b[n++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    memcpy(out, b, sizeof(b));
    return 0;
}

void cli__format_uuid(const uint8_t *id, size_t len, char *buf, size_t buf_len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < len && o + 3 < buf_len; i++) {
        if (len == 16 && (i == 4 || i == 6 || i == 8 || i == 10)) buf[o++] = '-';
        buf[o++] = hex[id[i] >> 4];
        buf[o++] = hex[id[i] & 15];
    }
    if (buf_len) buf[o < buf_len ? o : buf_len - 1] = '\0';
}

/* ---- bytes as text ---- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t c = p[0];
    uint32_t min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        c &= 0x1f;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        c &= 0x0f;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        c &= 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

bool cli__valid_utf8(const uint8_t *p, size_t len)
{
    uint32_t cp;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i, &cp);
        if (!n) return false;
        i += n;
    }
    return true;
}

bool cli__printable_utf8(const uint8_t *p, size_t len)
{
    uint32_t cp;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i, &cp);
        if (!n || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return false;
        i += n;
    }
    return true;
}

int cli__base64(const uint8_t *p, size_t len, char **out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;

    if (!s) return AN_ENOMEM;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len) v |= p[i + 2];
        s[o++] = tab[v >> 18 & 63];
        s[o++] = tab[v >> 12 & 63];
        s[o++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        s[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    s[o] = '\0';
    *out = s;
    return 0;
}

/* ---- events ---- */

static int print_human(FILE *out, const Annals__V1__RecordedEvent *ev)
{
    char when[48];
    char *b64 = NULL;

    cli__format_time(ev->recorded_at_unix_nanos, when, sizeof(when));
    fprintf(out, "#%llu %s@%llu %s %s", (unsigned long long)ev->global_position,
            ev->stream, (unsigned long long)ev->stream_version, ev->type, when);
    if (ev->data.len == 0) {
        /* nothing more */
    } else if (cli__printable_utf8(ev->data.data, ev->data.len)) {
        fputc(' ', out);
        fwrite(ev->data.data, 1, ev->data.len, out);
    } else {
        if (cli__base64(ev->data.data, ev->data.len, &b64) != 0) return AN_ENOMEM;
        fprintf(out, " base64:%s", b64);
        free(b64);
    }
    fputc('\n', out);
    return ferror(out) ? AN_EIO : 0;
}

/*
 * Bytes as a JSON value: the parsed JSON when as_json and it parses, else a
 * string when valid UTF-8, else a base64 string (and *is_b64 set). Empty
 * bytes are null unless as_json says they must be JSON (then a string "").
 */
static json_t *bytes_value(const ProtobufCBinaryData *b, bool as_json, bool *is_b64)
{
    json_t *v;
    char *s = NULL;

    *is_b64 = false;
    if (b->len == 0) return json_null();
    if (as_json) {
        v = json_loadb((const char *)b->data, b->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (v) return v;
    }
    if (cli__valid_utf8(b->data, b->len)) {
        return json_stringn((const char *)b->data, b->len);
    }
    if (cli__base64(b->data, b->len, &s) != 0) return NULL;
    v = json_string(s);
    free(s);
    *is_b64 = true;
    return v;
}

static int set_new(json_t *o, const char *key, json_t *v)
{
    return v && json_object_set_new(o, key, v) == 0 ? 0 : AN_ENOMEM;
}

static int print_json(FILE *out, const Annals__V1__RecordedEvent *ev)
{
    char id[40];
    char when[48];
    bool data_b64;
    bool meta_b64;
    bool is_json = ev->content_type && strcmp(ev->content_type, "application/json") == 0;
    json_t *o = json_object();
    int rc = AN_ENOMEM;

    if (!o) return AN_ENOMEM;
    cli__format_uuid(ev->id.data, ev->id.len, id, sizeof(id));
    cli__format_time(ev->recorded_at_unix_nanos, when, sizeof(when));
    if (set_new(o, "position", json_integer((json_int_t)ev->global_position)) ||
        set_new(o, "stream", json_string(ev->stream)) ||
        set_new(o, "version", json_integer((json_int_t)ev->stream_version)) ||
        set_new(o, "type", json_string(ev->type)) ||
        set_new(o, "id", json_string(id)) ||
        set_new(o, "recorded_at", json_string(when)) ||
        set_new(o, "content_type", json_string(ev->content_type ? ev->content_type : "")) ||
        set_new(o, "schema_version", json_integer(ev->schema_version)) ||
        set_new(o, "data", bytes_value(&ev->data, is_json, &data_b64)) ||
        set_new(o, "metadata", bytes_value(&ev->metadata, true, &meta_b64))) {
        goto out_free;
    }
    if (data_b64 && set_new(o, "data_encoding", json_string("base64"))) goto out_free;
    if (meta_b64 && set_new(o, "metadata_encoding", json_string("base64"))) goto out_free;
    if (ev->principal && *ev->principal &&
        set_new(o, "principal", json_string(ev->principal))) {
        goto out_free;
    }
    rc = json_dumpf(o, out, JSON_COMPACT) == 0 && fputc('\n', out) != EOF ? 0 : AN_EIO;
out_free:
    json_decref(o);
    return rc;
}

int cli__print_event(FILE *out, const Annals__V1__RecordedEvent *ev, bool json)
{
    return json ? print_json(out, ev) : print_human(out, ev);
}

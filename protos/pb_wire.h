/*
 * pb_wire.h - protobuf wire bytes, for messages put together from packed
 * parts (stored events, packed results, queued requests) rather than
 * packed whole by protobuf-c. Shared by the server and libannals.
 *
 * A length-delimited field with a field number below 16 is one tag byte
 * ((number << 3) | 2), the length as a varint, then the bytes; repeated
 * fields are just such fields one after another, in any place of the
 * message.
 */
#ifndef PB_WIRE_H
#define PB_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Writes v as a varint at out (room for 10 bytes); returns its length. */
static inline size_t pb_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static inline size_t pb_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* The bytes a length-delimited field of len bytes takes (one-byte tag). */
static inline size_t pb_field_len(size_t len)
{
    return 1 + pb_varint_len(len) + len;
}

/* Writes a length-delimited field at out; returns pb_field_len(len). */
static inline size_t pb_put_field(uint8_t *out, uint8_t tag, const void *data, size_t len)
{
    size_t n = 1;
    out[0] = tag;
    n += pb_varint(out + 1, len);
    memcpy(out + n, data, len);
    return n + len;
}

#endif

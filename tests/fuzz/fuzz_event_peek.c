/*
 * fuzz_event_peek.c - libFuzzer entry for the stored-event decoder
 * (log_event_peek) and the UTF-8 validator: bytes read back from disk must
 * never crash a read. Built with -Dfuzz=true and clang:
 *   CC=clang meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
 *   build-fuzz/tests/fuzz_event_peek -max_total_time=60
 * The same checks run on a generated corpus in tests/unit/test_log_codec.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct log_event ev;
    if (log_event_peek(data, size, &ev) == 0) {
        /* every borrowed field lies inside the input */
        const uint8_t *end = data + size;
        if ((const uint8_t *)ev.stream < data || (const uint8_t *)ev.stream + ev.stream_len > end) {
            if (ev.stream_len) {
                __builtin_trap();
            }
        }
        if (ev.type_len && ((const uint8_t *)ev.type < data ||
                            (const uint8_t *)ev.type + ev.type_len > end)) {
            __builtin_trap();
        }
        if (ev.id_len && (ev.id < data || ev.id + ev.id_len > end)) {
            __builtin_trap();
        }
    }
    (void)log_utf8_valid((const char *)data, size);
    return 0;
}

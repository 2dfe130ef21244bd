/*
 * an_arena.c - libannals: the arena a streaming call unpacks each received
 * message into (read iterators, subscriptions, consumers).
 *
 * protobuf-c unpacks a message with an allocation per sub-message, per
 * repeated field and per string or bytes field, and free_unpacked gives
 * each back; for a ReadResponse of a few hundred events that is a
 * thousand mallocs and frees per message, and glibc trims the heap's top
 * and faults it in again between messages. With malloc, those were about
 * a third of a reading client's CPU (perf, ReadAll of 3 M events over
 * loopback). Here one buffer is bumped through while a message is handed
 * out and reset when the next one comes; protobuf-c's frees are no-ops.
 *
 * What does not fit in `base` during a message is malloc'd on its own and
 * listed in `extra`; at the reset `base` grows to hold it all (and half as
 * much again), so after the first message or two every message of that
 * size fits in it. `base` never shrinks while the call lives: it is about
 * twice the largest message's unpacked size, which the message size limit
 * bounds.
 */
#include "an_int.h"

#include <stdlib.h>

#define ARENA_ALIGN 16u
#define ARENA_MIN (64u << 10)

static void *arena_alloc(void *data, size_t size)
{
    struct an__arena *a = data;
    size_t sz = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    void *p;

    if (sz >= size && sz <= a->cap - a->used) {
        p = a->base + a->used;
        a->used += sz;
        return p;
    }
    if (a->n_extra == a->cap_extra) {
        size_t cap = a->cap_extra ? a->cap_extra * 2 : 64;
        void **x = realloc(a->extra, cap * sizeof(*x));

        if (!x) return NULL;
        a->extra = x;
        a->cap_extra = cap;
    }
    p = malloc(size);
    if (!p) return NULL;
    a->extra[a->n_extra++] = p;
    a->extra_bytes += sz;
    return p;
}

static void arena_free(void *data, void *p)
{
    (void)data; /* everything goes at the reset */
    (void)p;
}

void an__arena_init(struct an__arena *a)
{
    *a = (struct an__arena){0};
    a->alloc = (ProtobufCAllocator){.alloc = arena_alloc, .free = arena_free,
                                    .allocator_data = a};
}

void an__arena_reset(struct an__arena *a)
{
    for (size_t i = 0; i < a->n_extra; i++) {
        free(a->extra[i]);
    }
    if (a->extra_bytes) {
        size_t want = a->used + a->extra_bytes;
        size_t cap = want < ARENA_MIN ? ARENA_MIN : want + want / 2;
        uint8_t *b = malloc(cap);

        if (b) {
            free(a->base);
            a->base = b;
            a->cap = cap;
        }
    }
    a->n_extra = 0;
    a->extra_bytes = 0;
    a->used = 0;
}

void an__arena_destroy(struct an__arena *a)
{
    an__arena_reset(a);
    free(a->base);
    free(a->extra);
    a->base = NULL;
    a->extra = NULL;
    a->cap = a->cap_extra = 0;
}

/*
 * an_tsan.h - tells ThreadSanitizer about hand-offs it cannot see.
 *
 * Shared by every module like an_err.h (server/ and client/ include it);
 * not installed.
 *
 * Debian's libgrpc is not instrumented, so TSan does not see the
 * synchronisation inside a completion queue: a batch started on one
 * thread (the writer starting an append's reply) completes on another
 * (the call's CQ thread, which may then free the call), and TSan would
 * call every access on each side a race. The hand-off is real, and
 * documented by gRPC: a tag comes out of the queue after its batch was
 * started. So whoever hands memory to gRPC with a tag releases on that
 * tag first, and whoever takes the tag out of the queue acquires it:
 *
 *     AN_TSAN_RELEASE(&c->t_write);
 *     grpc_call_start_batch(c->call, ops, n, &c->t_write, NULL);
 *     ...
 *     ev = grpc_completion_queue_next(q->cq, until, NULL);
 *     AN_TSAN_ACQUIRE(ev.tag);
 *
 * The address must be real memory that outlives the batch (a tag field,
 * or the object a small-integer tag belongs to). Without -fsanitize=thread
 * (gcc's __SANITIZE_THREAD__, clang's __has_feature(thread_sanitizer)) the
 * macros expand to nothing but the evaluation of their argument.
 */
#ifndef AN_TSAN_H
#define AN_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define AN__TSAN_ON 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AN__TSAN_ON 1
#endif
#endif

#ifdef AN__TSAN_ON
#include <sanitizer/tsan_interface.h>
#define AN_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#define AN_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#else
#define AN_TSAN_RELEASE(addr) ((void)(addr))
#define AN_TSAN_ACQUIRE(addr) ((void)(addr))
#endif

#endif /* AN_TSAN_H */

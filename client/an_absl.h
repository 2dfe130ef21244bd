/*
 * an_absl.h - switches off abseil's mutex deadlock detection in the gRPC
 * libraries of this process, if their abseil has it on.
 *
 * Debian 12's abseil (20220623) is built without NDEBUG, so every
 * absl::Mutex that gRPC core locks also records the lock order in a
 * process-wide graph (absl::synchronization_internal::GraphCycles) under
 * one global lock: with 64 unary clients (bench_server, client and server
 * on this machine's 2 cores) perf put 2.8 % of all CPU samples in
 * libabsl_graphcycles_internal, and none once this is called. abseil's own
 * switch is the C++ function absl::SetMutexDeadlockDetectionMode(kIgnore)
 * (absl/synchronization/mutex.h); C reaches it by its symbol, looked up
 * at run time so that an abseil without it (another version or inline
 * namespace) only means the detection stays as it was. Call before
 * grpc_init(), from one thread: abseil reads the mode without a lock.
 */
#ifndef AN_ABSL_H
#define AN_ABSL_H

#include <dlfcn.h>

static inline void an_absl_no_deadlock_detection(void)
{
    /* absl::debian3::SetMutexDeadlockDetectionMode(OnDeadlockCycle); the
     * enum is an int: kIgnore = 0, kReport, kAbort */
    void *sym = dlsym(RTLD_DEFAULT,
                      "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE");
    if (sym) {
        void (*set_mode)(int);
        *(void **)&set_mode = sym;
        set_mode(0);
    }
}

#endif /* AN_ABSL_H */

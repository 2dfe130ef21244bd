/*
 * tsan_criterion.c - lets Criterion start under ThreadSanitizer. Linked
 * into every Criterion test, only in a -Db_sanitize=thread build
 * (tests/meson.build).
 *
 * Criterion's BoxFort maps its inheritable arena with MAP_FIXED at an
 * address it draws with rand_r(): 0x2000_0000_0000 plus a random multiple
 * of 16 MiB, up to about 0x6000_0000_0000, ten tries. TSan keeps all of
 * that range for its shadow and meta memory except the middle
 * application range [0x5500_0000_0000, 0x5680_0000_0000), so the arena
 * fails nearly every time and the test binary aborts with "Could not
 * initialize inheritable arena" (Snaipe/Criterion issue 274).
 *
 * This rand_r is the executable's, so it is found before libc's. Called
 * from libcriterion, it returns offsets that put the arena in the top of
 * that application range, above where the kernel loads a PIE binary
 * (0x5555... plus at most 1 TiB of randomisation), a different one on
 * each call so that BoxFort's retries try different places. Called from
 * anywhere else (the tests draw their own random numbers with it) it is
 * libc's rand_r.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static int (*libc_rand_r)(unsigned *); /* set before main, read-only after */

__attribute__((constructor)) static void find_libc_rand_r(void)
{
    *(void **)&libc_rand_r = dlsym(RTLD_NEXT, "rand_r");
}

int rand_r(unsigned *seed)
{
    static unsigned calls; /* BoxFort draws from the main thread only */
    Dl_info di;

    if (dladdr(__builtin_return_address(0), &di) && di.dli_fname &&
        strstr(di.dli_fname, "libcriterion")) {
        /* 0x2000_0000_0000 + r * 16 MiB lands in [0x5660.., 0x567f..) */
        return 0x366000 + (int)(calls++ * 0x101u % 0x1f00u);
    }
    return libc_rand_r(seed);
}

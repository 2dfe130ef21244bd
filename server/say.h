/*
 * say.h - diagnostics: one key=value line per event on stderr.
 *
 *   say_info("writer", "msg=\"commit failed\" err=%s batch=%zu", an_errname(rc), n);
 *
 * prints
 *
 *   ts=2026-11-23T20:50:01.123Z lvl=info mod=writer msg="commit failed" err=AN_EIO batch=3
 *
 * The macros test the level before evaluating their arguments, so a
 * disabled debug line costs one compare. Never log payloads: ids, sizes and
 * positions only. Any thread.
 */
#ifndef SAY_H
#define SAY_H

enum say_level {
    SAY_DEBUG = 0,
    SAY_INFO = 1,
    SAY_WARN = 2,
    SAY_ERROR = 3,
};

extern int say_level_now;

/* say_set_level - from a name ("debug", "info", "warn", "error"): 0 or -1. */
int say_set_level(const char *name);

void say__line(int level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define say_at(level, mod, ...)                  \
    do {                                         \
        if ((level) >= say_level_now) {          \
            say__line((level), (mod), __VA_ARGS__); \
        }                                        \
    } while (0)

#define say_debug(mod, ...) say_at(SAY_DEBUG, mod, __VA_ARGS__)
#define say_info(mod, ...) say_at(SAY_INFO, mod, __VA_ARGS__)
#define say_warn(mod, ...) say_at(SAY_WARN, mod, __VA_ARGS__)
#define say_error(mod, ...) say_at(SAY_ERROR, mod, __VA_ARGS__)

#endif /* SAY_H */

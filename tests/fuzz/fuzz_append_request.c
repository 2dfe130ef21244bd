/*
 * fuzz_append_request.c - libFuzzer entry for what a client sends to
 * Commands.Append: bytes unpacked as an AppendRequest (protobuf-c), then
 * checked by log_validate_append against a real env's limits, as the
 * server does before anything reaches the writer. No input may crash it,
 * and a request it accepts must have what validation promises.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "annals/v1/commands.pb-c.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static log_env *env;
static char dir[] = "/tmp/annals-fuzz-XXXXXX";

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* libFuzzer exits when its time is up: leave no log behind */
static void remove_log(void)
{
    log_close(env);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char detail[LOG_DETAIL_MAX];
    struct log_cfg cfg = {.dir = mkdtemp(dir)};
    if (!cfg.dir || log_open(&cfg, &env, detail)) {
        fprintf(stderr, "fuzz_append_request: cannot open a log in %s: %s\n", dir, detail);
        abort();
    }
    atexit(remove_log);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char detail[LOG_DETAIL_MAX];
    Annals__V1__AppendRequest *r = annals__v1__append_request__unpack(NULL, size, data);
    if (!r) {
        return 0;
    }
    if (log_validate_append(env, r, false, detail) == 0) {
        /* accepted: at least one stream, each named and with events */
        if (r->n_streams == 0) {
            __builtin_trap();
        }
        for (size_t i = 0; i < r->n_streams; i++) {
            if (!r->streams[i]->stream || !r->streams[i]->stream[0] ||
                r->streams[i]->n_events == 0 || r->streams[i]->stream[0] == '$') {
                __builtin_trap();
            }
        }
    } else if (!detail[0]) {
        __builtin_trap(); /* a refusal always says why */
    }
    annals__v1__append_request__free_unpacked(r, NULL);
    return 0;
}

/*
 * fuzz_config.c - libFuzzer entry for annalsd's --config file: any bytes
 * written as the file must be read by annalsd_read_config (the parser
 * annalsd runs at start and on SIGHUP) and, if it takes them, turned into
 * a srv_cfg by annalsd_build_cfg (every value checked against its flag's
 * limits) or refused, never crash. Each input is read as at start (the
 * command line having set --data), then again over the same options, as a
 * SIGHUP re-read does. One file per process, rewritten per input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "annalsd_flags.h"
#include "say.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void remove_file(void)
{
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof(path), "/tmp/annals-fuzz-config-%d.conf", (int)getpid());
        atexit(remove_file); /* libFuzzer exits when its time is up */
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        return 0;
    }
    fwrite(data, 1, size, f);
    fclose(f);
    char *argv[] = {"annalsd", "--data", "/tmp/annals-fuzz-data", NULL};
    struct annalsd_opts o;
    memset(&o, 0, sizeof(o));
    if (annalsd_parse_args(3, argv, &o)) {
        __builtin_trap();
    }
    for (int round = 0; round < 2; round++) {
        if (annalsd_read_config(path, &o) != 0) {
            break;
        }
        struct srv_cfg cfg;
        if (annalsd_build_cfg(&o, &cfg) == 0 && strcmp(cfg.data_dir, argv[2]) != 0) {
            __builtin_trap(); /* the command line wins */
        }
    }
    say_set_level("error"); /* build_cfg set the file's level: keep the runs quiet */
    return 0;
}

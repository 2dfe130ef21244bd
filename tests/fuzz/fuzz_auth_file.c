/*
 * fuzz_auth_file.c - libFuzzer entry for annalsd's --auth file: any bytes
 * written as the file must load or be refused with a detail, never crash
 * (an operator's typo must not take the server down on SIGHUP).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "srv_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void remove_file(void)
{
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof(path), "/tmp/annals-fuzz-auth-%d.json", (int)getpid());
        atexit(remove_file); /* libFuzzer exits when its time is up */
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        return 0;
    }
    fwrite(data, 1, size, f);
    fclose(f);
    char detail[LOG_DETAIL_MAX] = "";
    struct srv_auth *a = NULL;
    int rc = srv_auth_load(path, &a, detail);
    if (rc == 0) {
        srv_auth_unref(a);
    } else if (!detail[0] && rc != AN_ENOMEM) {
        __builtin_trap();
    }
    return 0;
}

/*
 * fuzz_proj_def.c - libFuzzer entry for a projection definition from a
 * client (Projections.Create): bytes unpacked as a ProjectionDefinition,
 * then proj_validate. No input may crash it; a refusal names its field.
 */
#include <stdlib.h>
#include <string.h>

#include "annals/v1/projections.pb-c.h"
#include "proj.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char detail[PROJ_DETAIL_MAX] = "";
    Annals__V1__ProjectionDefinition *d =
        annals__v1__projection_definition__unpack(NULL, size, data);
    if (!d) {
        return 0;
    }
    if (proj_validate(d, detail) != 0 && !detail[0]) {
        __builtin_trap();
    }
    annals__v1__projection_definition__free_unpacked(d, NULL);
    return 0;
}

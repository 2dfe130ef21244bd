/*
 * fuzz_group_def.c - libFuzzer entry for the Consumers service's decoders:
 * any bytes as a ConsumerGroup (CreateGroup) must decode and pass or fail
 * srv_group_check_def with a detail, and as a ConsumeRequest (join or
 * settles) must decode or be refused, never crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annals/v1/consumers.pb-c.h"
#include "srv_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Annals__V1__ConsumerGroup *g = annals__v1__consumer_group__unpack(NULL, size, data);
    if (g) {
        char detail[LOG_DETAIL_MAX] = "";
        int rc = srv_group_check_def(g, detail);
        if (rc && !detail[0]) {
            __builtin_trap(); /* a refusal always says why */
        }
        annals__v1__consumer_group__free_unpacked(g, NULL);
    }
    Annals__V1__ConsumeRequest *r = annals__v1__consume_request__unpack(NULL, size, data);
    if (r) {
        /* what the server reads of it */
        if (r->msg_case == ANNALS__V1__CONSUME_REQUEST__MSG_JOIN && r->join->group) {
            volatile size_t n = strlen(r->join->group);
            (void)n;
        } else if (r->msg_case == ANNALS__V1__CONSUME_REQUEST__MSG_SETTLE) {
            volatile uint64_t sum = 0;
            for (size_t i = 0; i < r->settle->n_ack; i++) sum += r->settle->ack[i];
            for (size_t i = 0; i < r->settle->n_nack; i++) sum += r->settle->nack[i];
            for (size_t i = 0; i < r->settle->n_park; i++) sum += r->settle->park[i];
            (void)sum;
        }
        annals__v1__consume_request__free_unpacked(r, NULL);
    }
    return 0;
}

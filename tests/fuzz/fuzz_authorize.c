/*
 * fuzz_authorize.c - libFuzzer entry for who a call is and what it may do
 * (srv_auth.c) with --auth on: an authorization header from the input, or
 * one of the table's tokens, or a client certificate's name, resolved by
 * srv_auth_identify_as as srv_auth_identify does once it has the
 * certificate; then the request (the rest of the input, unpacked as the
 * method's message) checked by srv_authorize as srv_on_read does right
 * after unpacking, and a Consume join by srv_authorize_group.
 *
 * Input: byte 0 picks the method, byte 1 the identity (& 3: 0 the header
 * value is the next byte's count of bytes, 1 the admin's token, 2 a
 * principal with grants on order- streams, 3 a certificate name with read
 * grants), then the request. No input may crash; a refusal names the
 * grant it lacks; the admin is refused nothing.
 */
#include <grpc/slice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "annals/v1/admin.pb-c.h"
#include "annals/v1/consumers.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "srv_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char auth_file[] =
    "{\"principals\": ["
    "{\"name\": \"ops\", \"token_sha256\": "
    "\"10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a\", "
    "\"grants\": [\"admin\"]},"
    "{\"name\": \"orders\", \"token_sha256\": "
    "\"09dc72c7e34679dca4f27b58144a13c8c100a058c3f2aabbc6d0513634808f24\", "
    "\"grants\": [\"read stream:order-\", \"write stream:order-\", \"delete stream:order-\", "
    "\"read stream:$audit\", \"read view:state\", \"consume group:g1\"]},"
    "{\"name\": \"reader\", \"grants\": [\"read stream:\", \"read view:*\", "
    "\"consume group:*\"]}]}";

static const struct {
    enum srv_method m;
    const char *path;
    const ProtobufCMessageDescriptor *desc;
} methods[] = {
    {SRV_M_APPEND, "/annals.v1.Commands/Append", &annals__v1__append_request__descriptor},
    {SRV_M_DELETE_STREAM, "/annals.v1.Commands/DeleteStream",
     &annals__v1__delete_stream_request__descriptor},
    {SRV_M_READ_STREAM, "/annals.v1.Queries/ReadStream",
     &annals__v1__read_stream_request__descriptor},
    {SRV_M_READ_ALL, "/annals.v1.Queries/ReadAll", &annals__v1__read_all_request__descriptor},
    {SRV_M_GET_STREAM, "/annals.v1.Queries/GetStream",
     &annals__v1__get_stream_request__descriptor},
    {SRV_M_SUBSCRIBE, "/annals.v1.Queries/Subscribe", &annals__v1__subscribe_request__descriptor},
    {SRV_M_GET_VIEW, "/annals.v1.Queries/GetView", &annals__v1__get_view_request__descriptor},
    {SRV_M_SCAN_VIEW, "/annals.v1.Queries/ScanView", &annals__v1__scan_view_request__descriptor},
    {SRV_M_PROJ_CREATE, "/annals.v1.Projections/Create",
     &annals__v1__projection_definition__descriptor},
    {SRV_M_PROJ_LIST, "/annals.v1.Projections/List",
     &annals__v1__list_projections_request__descriptor},
    {SRV_M_PROJ_GET, "/annals.v1.Projections/Get",
     &annals__v1__get_projection_request__descriptor},
    {SRV_M_PROJ_REBUILD, "/annals.v1.Projections/Rebuild",
     &annals__v1__rebuild_projection_request__descriptor},
    {SRV_M_PROJ_DELETE, "/annals.v1.Projections/Delete",
     &annals__v1__delete_projection_request__descriptor},
    {SRV_M_BACKUP, "/annals.v1.Admin/Backup", &annals__v1__backup_request__descriptor},
    {SRV_M_GRP_CREATE, "/annals.v1.Consumers/CreateGroup",
     &annals__v1__consumer_group__descriptor},
    {SRV_M_GRP_GET, "/annals.v1.Consumers/GetGroup", &annals__v1__get_group_request__descriptor},
    {SRV_M_GRP_LIST, "/annals.v1.Consumers/ListGroups",
     &annals__v1__list_groups_request__descriptor},
    {SRV_M_GRP_DELETE, "/annals.v1.Consumers/DeleteGroup",
     &annals__v1__delete_group_request__descriptor},
    {SRV_M_GRP_REPLAY, "/annals.v1.Consumers/ReplayParked",
     &annals__v1__replay_parked_request__descriptor},
    {SRV_M_HEALTH_CHECK, "/grpc.health.v1.Health/Check",
     &grpc__health__v1__health_check_request__descriptor},
    {SRV_M_CONSUME, "/annals.v1.Consumers/Consume", &annals__v1__consume_request__descriptor},
};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

static struct srv s;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[64];
    char detail[LOG_DETAIL_MAX] = "";
    snprintf(path, sizeof(path), "/tmp/annals-fuzz-authz-%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(auth_file, 1, sizeof(auth_file) - 1, f) != sizeof(auth_file) - 1) {
        abort();
    }
    fclose(f);
    int rc = srv_auth_load(path, &s.auth, detail);
    unlink(path);
    if (rc) {
        fprintf(stderr, "fuzz_authorize: the auth file: %s\n", detail);
        abort();
    }
    pthread_mutex_init(&s.auth_mu, NULL);
    say_set_level("error"); /* no refusal lines */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    unsigned mi = data[0] % N_METHODS;
    unsigned who = data[1] & 3;
    data += 2;
    size -= 2;
    const char *header = NULL;
    size_t header_len = 0;
    const char *cert = "";
    if (who == 0) {
        if (size < 1) {
            return 0;
        }
        header_len = data[0] < size - 1 ? data[0] : size - 1;
        header = (const char *)data + 1;
        data += 1 + header_len;
        size -= 1 + header_len;
    } else if (who == 1) {
        header = "Bearer admin-token";
        header_len = strlen(header);
    } else if (who == 2) {
        header = "bearer orders-token";
        header_len = strlen(header);
    } else {
        cert = "reader";
    }

    struct srv_call c;
    memset(&c, 0, sizeof(c));
    grpc_metadata md;
    memset(&md, 0, sizeof(md));
    c.srv = &s;
    c.method = methods[mi].m;
    c.details.method = grpc_slice_from_static_string(methods[mi].path);
    if (header) {
        md.key = grpc_slice_from_static_string("authorization");
        md.value = grpc_slice_from_copied_buffer(header, header_len);
        c.md.metadata = &md;
        c.md.count = 1;
    }
    char detail[LOG_DETAIL_MAX] = "";
    int rc = srv_auth_identify_as(&c, cert, detail);
    if (rc && !detail[0]) {
        __builtin_trap();
    }
    if (rc == 0) {
        c.req = protobuf_c_message_unpack(methods[mi].desc, NULL, size, data);
    }
    if (c.req) {
        if (c.method == SRV_M_CONSUME) {
            Annals__V1__ConsumeRequest *r = (Annals__V1__ConsumeRequest *)c.req;
            if (r->msg_case == ANNALS__V1__CONSUME_REQUEST__MSG_JOIN && r->join->group &&
                r->join->group[0]) {
                rc = srv_authorize_group(&c, r->join->group, false, detail);
            }
        } else {
            rc = srv_authorize(&c, detail);
        }
        if (rc && (!detail[0] || who == 1)) {
            __builtin_trap(); /* a refusal names the grant; the admin has them all */
        }
        protobuf_c_message_free_unpacked(c.req, NULL);
    }
    if (header) {
        grpc_slice_unref(md.value);
    }
    srv_auth_unref(c.auth);
    return 0;
}

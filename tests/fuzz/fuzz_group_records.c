/*
 * fuzz_group_records.c - libFuzzer entry for the consumer groups' records
 * read back from DATA/groups (srv_group.c): the input is up to 16 records,
 * each
 *
 *   [table % 3: 0 defs, 1 state, 2 marks] [key length] [value length]
 *   [key] [value]
 *
 * Each record is first handed to its decoder alone
 * (srv__group_decode_def, _state, _mark), then all of them are written
 * into a real DATA/groups env in a temp dir (on a real log with a few
 * events) and the groups engine is started over it, its real open path
 * (srv_group_start: every definition, its state, its marks), read through
 * /api/groups' JSON (srv_group_json), stopped and freed.
 *
 * No input may crash; a record refused, or a start refused, names why;
 * a definition the decoder accepts has the key as its name; a start that
 * succeeds had only definitions that decode (of those LMDB kept: the last
 * record of each key), and lists each once.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_srv.h"
#include "srv_group_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_RECS 16

static bool verbose; /* FUZZ_VERBOSE=1: each start's outcome on stderr */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    say_level_now = verbose ? SAY_ERROR : SAY_ERROR + 1; /* each refusal is logged: keep libFuzzer's output readable */
    ffx_open("/dev/shm", 4);
    ffx_put("order-1", "Created", "{}");
    ffx_put("order-2", "Created", "{}");
    ffx_put("order-1", "Paid", "{}");
    ffx_put("user-7", "Named", "{}");
    fsrv_open();
    atexit(ffx_close);
    atexit(fsrv_close); /* runs first */
    return 0;
}

static void need_detail(int rc, const char *detail)
{
    if (rc && rc != AN_ENOMEM && !detail[0]) {
        __builtin_trap(); /* a refusal always says why */
    }
}

/* Whether record i is the last of its table with its key (the one LMDB
 * keeps). */
static bool last_of_key(const struct fsrv_rec *r, size_t n, size_t i)
{
    for (size_t j = i + 1; j < n; j++) {
        if (r[j].table == r[i].table && r[j].klen == r[i].klen &&
            !memcmp(r[j].key, r[i].key, r[i].klen)) {
            return false;
        }
    }
    return true;
}

/* Each record alone. Returns how many of the definitions kept decoded. */
static size_t decode_each(const struct fsrv_rec *r, size_t n, bool *all_defs_ok)
{
    static struct srv_groups gs; /* srv__group_new only keeps the pointer */
    size_t ok = 0;
    *all_defs_ok = true;
    for (size_t i = 0; i < n; i++) {
        bool kept = last_of_key(r, n, i);
        char detail[LOG_DETAIL_MAX] = "";
        int rc;
        if (r[i].table == 0) {
            struct srv_group *g = NULL;
            rc = srv__group_decode_def(&gs, r[i].key, r[i].klen, r[i].val, r[i].vlen, &g, detail);
            if (rc == 0) {
                if (strlen(g->name) != r[i].klen || memcmp(g->name, r[i].key, r[i].klen)) {
                    __builtin_trap(); /* accepted under another name */
                }
                srv__group_unref(g);
                ok += kept;
            } else if (kept) {
                *all_defs_ok = false;
            }
        } else if (r[i].table == 1) {
            struct gstate_rec st;
            rc = srv__group_decode_state("g", r[i].val, r[i].vlen, &st, detail);
        } else {
            const char *z = memchr(r[i].key, 0, r[i].klen);
            if (!z) {
                continue; /* not under any group's name: never read */
            }
            struct gmark m;
            rc = srv__group_decode_mark(r[i].key, UINT64_MAX / 2, r[i].key, r[i].klen, r[i].val,
                                        r[i].vlen, &m, detail);
            if (rc == 0 && (m.pos == 0 || (m.flags & ~3u))) {
                __builtin_trap();
            }
        }
        need_detail(rc, detail);
    }
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fsrv_rec r[MAX_RECS];
    size_t n = 0;
    while (n < MAX_RECS && size >= 3) {
        size_t klen = data[1];
        size_t vlen = data[2];
        if (size - 3 < klen + vlen) {
            break;
        }
        r[n] = (struct fsrv_rec){data[0] % 3, data + 3, klen, data + 3 + klen, vlen};
        data += 3 + klen + vlen;
        size -= 3 + klen + vlen;
        if (klen > 0) { /* LMDB holds no empty key */
            n++;
        }
    }
    bool all_defs_ok;
    size_t defs_ok = decode_each(r, n, &all_defs_ok);

    char detail[LOG_DETAIL_MAX] = "";
    fsrv_groups_write(r, n);
    int rc = fsrv_groups_start(detail);
    need_detail(rc, detail);
    if (verbose) {
        fprintf(stderr, "fuzz_group_records: %zu records, %zu definitions decode: %s %s\n", n,
                defs_ok, rc ? an_errname(rc) : "started", detail);
    }
    if (rc == 0) {
        if (!all_defs_ok) {
            __builtin_trap(); /* a definition that does not decode was loaded */
        }
        json_t *j = srv_group_json(&fsrv);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (!text) {
            __builtin_trap();
        }
        json_t *back = json_loads(text, 0, NULL);
        json_t *arr = json_object_get(back, "groups");
        if (!back || json_array_size(arr) != fsrv.groups->n || fsrv.groups->n > defs_ok) {
            __builtin_trap();
        }
        json_decref(back);
        free(text);
        json_decref(j);
    } else if (rc != AN_ECORRUPT && rc != AN_ENOMEM) {
        __builtin_trap(); /* a bad record is corruption, not an I/O error */
    }
    fsrv_groups_stop();
    return 0;
}

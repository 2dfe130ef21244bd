/*
 * srv_group_int.h - what srv_group.c (the groups' engine: windows,
 * handing out, settling, parking, storing, the groups thread) and
 * srv_group_calls.c (the Consumers service: Consume calls, the group
 * calls, ReplayParked) share. No other file includes it; the design is
 * described at the top of srv_group.c.
 */
#ifndef SRV_GROUP_INT_H
#define SRV_GROUP_INT_H

#include <lmdb.h>

#include "annals/v1/consumers.pb-c.h"
#include "srv_int.h"

#define WINDOW_MAX (1u << 18)       /* entries per group */
#define MSG_EVENTS 256u             /* deliveries per message */
#define MSG_BYTES (1u << 20)        /* a message's size, beyond its first event */
#define SCAN_MAX 16384u             /* positions looked at per fill */
#define PREFETCH_MAX 10000u
#define STORE_MS 20                 /* the most a settle waits to be stored */
#define TICK_MS 50                  /* ack timeouts are looked at this often */
#define FILTER_MAX 64u              /* prefixes, types */
#define GROUPS_MAP_BYTES (1ull << 30)

#define MARK_SETTLED 1u
#define MARK_REPLAY 2u

enum { GE_READY = 0, GE_FLIGHT, GE_BLOCKED, GE_PARKING, GE_DONE };

struct gstream;

struct srv_gentry {
    uint64_t pos;
    uint32_t attempts;          /* hand-outs so far */
    uint8_t state;
    bool replay;                /* on the replay list (below the checkpoint) */
    uint32_t hidx;              /* index in the ready heap; UINT32_MAX: none */
    int64_t deadline_ms;        /* FLIGHT: when the ack timeout passes */
    struct srv_call *owner;     /* FLIGHT */
    struct srv_gentry *fl_prev; /* the owner's in-flight list */
    struct srv_gentry *fl_next;
    struct gstream *st;         /* ordered: its stream */
    struct srv_gentry *st_next; /* ordered: the stream's next entry */
    char *reason;               /* the last nack's reason (malloc'd) */
};

/* ordered_per_stream: the unsettled entries of one stream, oldest first */
struct gstream {
    struct gstream *hnext;
    struct srv_gentry *head;
    struct srv_gentry *tail;
    uint64_t hash;
    size_t len;
    char name[];
};

struct gmark {
    uint64_t pos;
    uint32_t attempts;
    uint32_t flags;
};

struct gstate_rec {
    uint64_t checkpoint;
    uint64_t delivered;
    uint64_t acked;
    uint64_t redelivered;
    uint64_t parked;
};

struct srv_group {
    struct srv_groups *gs;
    atomic_int refs;
    pthread_mutex_t mu;
    struct srv_group *next;     /* gs->list */
    char name[65];
    Annals__V1__ConsumerGroup *def; /* as created (owned) */
    uint8_t *def_bytes;         /* its packed form: an identical create matches */
    size_t def_len;
    struct log_filter filter;   /* points into def */
    const char *stream;         /* one stream, else NULL (points into def) */
    bool dollar_ok;             /* '$' streams may be selected */
    uint32_t max_deliveries;
    uint32_t ack_timeout_ms;
    bool ordered;
    bool deleted;

    uint64_t scanned;           /* every position <= this has been looked at */
    uint64_t checkpoint;
    uint64_t delivered, acked, redelivered, parked;
    uint32_t in_flight;

    struct srv_gentry **win;    /* the window: a ring, ordered by position */
    size_t win_cap;             /* a power of two */
    size_t win_head;
    size_t win_len;
    struct srv_gentry **heap;   /* READY entries, min-heap by position */
    size_t n_heap, cap_heap;
    struct srv_gentry **rep;    /* the replay list, sorted by position */
    size_t n_rep, cap_rep;
    struct gstream **sbuckets;  /* ordered: streams by name */
    size_t n_sbuckets, n_streams;

    struct srv_call *consumers; /* through cons.prev/next */
    unsigned n_consumers;
    struct srv_call *rr;        /* where the next pump starts */

    /* to store */
    uint64_t *dirty;            /* positions whose mark changed */
    size_t n_dirty, cap_dirty;
    uint64_t *del;              /* replay marks to delete */
    size_t n_del, cap_del;
    bool state_dirty;
    uint64_t ckpt_stored;
    /* marks loaded at start, consulted as the scan passes them */
    struct gmark *lm;
    size_t n_lm, cap_lm, i_lm;
    /* an event it cannot read or hand out (AN_ECORRUPT) stops it there and
     * is tried again on every pump; logged when it first fails, then once
     * a minute, with how many failures were not logged (srv_group.c) */
    uint64_t stuck_pos;
    int64_t stuck_logged_ms;
    uint64_t stuck_quiet;
};

struct srv_groups {
    struct srv *srv;
    MDB_env *env;
    MDB_dbi defs, state, marks;
    pthread_mutex_t mu;         /* list, wake, stop */
    pthread_cond_t cond;
    struct srv_group *list;
    unsigned n;
    bool wake;
    bool stop;
    bool running;
    pthread_t thread;
    pthread_mutex_t pmu;        /* stores and deletions of records */
    log_reader *rd;             /* the groups thread's reader */
};

/* ---- srv_group.c, for srv_group_calls.c ---- */

/* An LMDB code as an AN_E* code. */
int srv__mdb_code(int rc);
bool srv__vec_push(uint64_t **v, size_t *n, size_t *cap, uint64_t x);
/* Fills the window and hands out to every consumer with room (reader not
 * begun; under g->mu). */
void srv__pump(struct srv_group *g, log_reader *rd);
/* Applies one Settle message of consumer c (under g->mu). */
void srv__settle(struct srv_group *g, struct srv_call *c, const Annals__V1__Settle *st);
/* c leaves its group: its unsettled events are handed out again; its call
 * ends with code (0: OK) once no send is in flight (under g->mu). */
void srv__consumer_leave(struct srv_group *g, struct srv_call *c, int code, const char *detail);
/* Ends a call that has left, once its send is over (under g->mu). */
void srv__consumer_maybe_end(struct srv_call *c);
/* A parked position handed out again (under g->mu, reader begun); false: OOM. */
bool srv__replay_one(struct srv_group *g, log_reader *rd, uint64_t pos);
/* Groups by name: find (under gs->mu), get (with a reference), unref. */
struct srv_group *srv__group_find(struct srv_groups *gs, const char *name);
struct srv_group *srv__group_get(struct srv_groups *gs, const char *name);
void srv__group_unref(struct srv_group *g);
/* A group from its packed definition (bytes taken). */
int srv__group_new(struct srv_groups *gs, uint8_t *bytes, size_t len, struct srv_group **out);
/* The records of DATA/groups read back at start (tests/fuzz/
 * fuzz_group_records.c drives them). Each returns 0, or AN_ECORRUPT with
 * detail (LOG_DETAIL_MAX) naming the group and what is wrong, or
 * AN_ENOMEM; nothing is trusted, out is written only on success.
 *
 * defs: key the group's name, value its packed ConsumerGroup, which must
 * decode, pass CreateGroup's checks and carry the key as its name; *out
 * is a new group (a copy of the bytes) with one reference. */
int srv__group_decode_def(struct srv_groups *gs, const void *key, size_t klen, const void *val,
                          size_t vlen, struct srv_group **out, char *detail);
/* state: key the name, value a struct gstate_rec in native byte order. */
int srv__group_decode_state(const char *name, const void *val, size_t vlen,
                            struct gstate_rec *out, char *detail);
/* marks: key the name, 0, a big-endian position (>= 1); value a struct
 * gmark of the same position with flags MARK_SETTLED or MARK_REPLAY (not
 * both), a replayed one at or below the group's checkpoint. The caller has
 * checked that the key starts with name and its 0. */
int srv__group_decode_mark(const char *name, uint64_t checkpoint, const void *key, size_t klen,
                           const void *val, size_t vlen, struct gmark *out, char *detail);
/* Stores what every group (or just `only`) has to store, in one commit. */
void srv__store(struct srv_groups *gs, struct srv_group *only);
/* Deletes a group's records in one synced commit (under gs->pmu). */
int srv__drop_records(struct srv_groups *gs, const char *name);
/* Wakes the groups thread (not under any g->mu). */
void srv__wake_thread(struct srv_groups *gs);

#endif /* SRV_GROUP_INT_H */

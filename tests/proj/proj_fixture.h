/*
 * proj_fixture.h - shared helpers for the projection engine's tests.
 *
 * Each test has a real log (tests/unit/log_fixture: fx) and a real manager
 * on fx.dir/projections. Appends go through log_commit (fx_commit) and are
 * followed by proj_notify, as the server's writer does. The expected views
 * are computed here, independently of the engine, by folding the log as
 * read back with log_read_all (pm_fold).
 *
 * Ownership: pm_* results are caller-owned (json_decref / free as noted).
 */
#ifndef PROJ_FIXTURE_H
#define PROJ_FIXTURE_H

#include <jansson.h>

#include "log_fixture.h"
#include "proj.h"

struct pfx {
    proj_mgr *mgr;
    struct proj_cfg cfg;
    char dir[128];            /* fx.dir/projections */
};
extern struct pfx pfx;

/* .init / .fini: a log and a manager with default cfg / close both, rm -r. */
void pfx_setup(void);
void pfx_teardown(void);
/* proj_open with this cfg (dir and log filled in); asserts success. */
void pfx_open(const struct proj_cfg *cfg);
void pfx_close(void);

/* ---- appending ---- */

/* One event; data may be NULL. allow '$' names. Notifies. Returns its position. */
uint64_t pfx_append(const char *stream, const char *type, const char *data);
/* n random events in one commit (streams, types and data from rnd). */
void pfx_append_random(size_t n, unsigned *seed);
/* The data pfx_append_random uses for a seed, into buf. */
const char *pfx_random_data(unsigned *seed, char *buf, size_t cap);

/* ---- definitions ---- */

struct pdef {
    Annals__V1__ProjectionDefinition d;
    Annals__V1__Filter f;
    char *prefixes[4];
    char *types[4];
};
/* kind, key, sum ("" or NULL: none), latest_only; filter empty. */
void pdef_init(struct pdef *p, const char *name, Annals__V1__ProjectionKind kind,
               const char *key, const char *sum, bool latest_only);
void pdef_prefix(struct pdef *p, const char *prefix);
void pdef_type(struct pdef *p, const char *type);

/* proj_create asserted 0. */
void pfx_create(struct pdef *p);

/* ---- reading ---- */

/* Waits (proj_get min_position, 30 s) until the view has applied `pos`. */
void pfx_wait(const char *view, uint64_t pos);
/* proj_get; as_of UINT64_MAX: the present. Returns rc; *out owned. */
int pfx_get(const char *view, const char *key, uint64_t as_of, Annals__V1__ViewEntry **out);
/* The whole view as of (UINT64_MAX: present) as a JSON object
 * key -> [value, position]. Asserts the scan succeeds. */
json_t *pfx_scan_all(const char *view, uint64_t as_of);
/* Status asserted found; caller frees with proj_status_free. */
Annals__V1__ProjectionStatus *pfx_status(const char *view);

/* ---- the model ---- */

/* The log, positions 1..head, unpacked (fx_read_everything). */
void pm_load(struct fx_evs *out);
/* The view a definition should hold as of position upto: key -> [value, position]. */
json_t *pm_fold(const struct fx_evs *log, const Annals__V1__ProjectionDefinition *d,
                uint64_t upto);
/* Asserts that view (as pfx_scan_all gives it) equals model, naming the first difference. */
void pm_assert_equal(json_t *view, json_t *model, const char *what);

#endif /* PROJ_FIXTURE_H */

/*
 * The per-worker subscription table: session id -> the connections of this
 * worker subscribed to it, so a TOKENS record for CHAN_SLOT_ALL reaches each
 * of them. Open addressing (linear probing, backward-shift deletion) over a
 * table sized at creation for max_conns sessions, and an intrusive list of
 * connection slots per session: nothing is allocated after app_subs_create().
 * A connection is in at most one session's list.
 */
#ifndef SLUICE_APP_SUBS_H
#define SLUICE_APP_SUBS_H

#include <stdint.h>

#include "sluice/chan_proto.h"

#define APP_SUBS_NONE 0xffffffffu

struct app_subs;

struct app_subs *app_subs_create(uint32_t max_conns);
void app_subs_destroy(struct app_subs *t);

/* Subscribes slot to session sid (a CHAN_ID_LEN array, NUL-padded); a slot
 * already subscribed elsewhere is moved. Returns 0, or -1 for a bad slot or
 * an empty id. */
int app_subs_add(struct app_subs *t, const char *sid, uint32_t slot);
/* Unsubscribes slot; nothing happens when it is not subscribed. */
void app_subs_remove(struct app_subs *t, uint32_t slot);

/* Iteration: first slot subscribed to sid, then app_subs_next() until APP_SUBS_NONE.
 * Fetch the next slot before doing anything that may remove the current one. */
uint32_t app_subs_first(const struct app_subs *t, const char *sid);
uint32_t app_subs_next(const struct app_subs *t, uint32_t slot);

/* Sessions with at least one subscriber. */
uint32_t app_subs_sessions(const struct app_subs *t);

#endif

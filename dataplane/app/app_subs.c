/* The per-worker subscription table (see app_subs.h). */
#include "app/app_subs.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"

struct app_subs_entry {
	char sid[CHAN_ID_LEN];
	uint32_t head; /* first slot, APP_SUBS_NONE when the entry is free */
};

struct app_subs_link {
	uint32_t next, prev;
	bool on;
};

struct app_subs {
	struct app_subs_entry *tab;
	uint32_t mask;
	uint32_t nsessions;
	uint32_t max_conns;
	struct app_subs_link *link;        /* by slot */
	char (*slot_sid)[CHAN_ID_LEN]; /* by slot: the session it is in */
};

static uint32_t sid_hash(const char *sid)
{
	uint64_t h = sluice_fnv1a64(sid, strnlen(sid, CHAN_ID_LEN));
	return (uint32_t)(h ^ (h >> 32));
}

struct app_subs *app_subs_create(uint32_t max_conns)
{
	struct app_subs *t = calloc(1, sizeof(*t));
	uint32_t cap = 16;

	if (!t || max_conns == 0 || max_conns > (1u << 29))
		goto fail;
	/* At most max_conns sessions live at once; a load factor <= 1/2 keeps
	 * probe runs short. */
	while (cap < 2 * max_conns)
		cap <<= 1;
	t->tab = malloc((size_t)cap * sizeof(*t->tab));
	t->link = calloc(max_conns, sizeof(*t->link));
	t->slot_sid = calloc(max_conns, sizeof(*t->slot_sid));
	if (!t->tab || !t->link || !t->slot_sid)
		goto fail;
	for (uint32_t i = 0; i < cap; i++)
		t->tab[i].head = APP_SUBS_NONE;
	t->mask = cap - 1;
	t->max_conns = max_conns;
	return t;
fail:
	app_subs_destroy(t);
	return NULL;
}

void app_subs_destroy(struct app_subs *t)
{
	if (!t)
		return;
	free(t->tab);
	free(t->link);
	free(t->slot_sid);
	free(t);
}

/* Index of sid's entry, or of the free entry where it would go. */
static uint32_t find(const struct app_subs *t, const char *sid)
{
	uint32_t i = sid_hash(sid) & t->mask;

	while (t->tab[i].head != APP_SUBS_NONE && strncmp(t->tab[i].sid, sid, CHAN_ID_LEN) != 0)
		i = (i + 1) & t->mask;
	return i;
}

/* Backward-shift deletion: entries displaced past the hole move back into
 * it, so lookups never need tombstones. */
static void entry_delete(struct app_subs *t, uint32_t hole)
{
	uint32_t i = hole;

	t->tab[hole].head = APP_SUBS_NONE;
	for (;;) {
		uint32_t home;

		i = (i + 1) & t->mask;
		if (t->tab[i].head == APP_SUBS_NONE)
			return;
		home = sid_hash(t->tab[i].sid) & t->mask;
		/* Entry i may fill the hole when its home is not in (hole, i]. */
		if (((i - home) & t->mask) >= ((i - hole) & t->mask)) {
			t->tab[hole] = t->tab[i];
			t->tab[i].head = APP_SUBS_NONE;
			hole = i;
		}
	}
}

int app_subs_add(struct app_subs *t, const char *sid, uint32_t slot)
{
	uint32_t e;

	if (slot >= t->max_conns || sid[0] == '\0')
		return -1;
	app_subs_remove(t, slot);
	e = find(t, sid);
	if (t->tab[e].head == APP_SUBS_NONE) {
		memcpy(t->tab[e].sid, sid, CHAN_ID_LEN);
		t->nsessions++;
	} else {
		t->link[t->tab[e].head].prev = slot;
	}
	t->link[slot].next = t->tab[e].head;
	t->link[slot].prev = APP_SUBS_NONE;
	t->link[slot].on = true;
	t->tab[e].head = slot;
	memcpy(t->slot_sid[slot], sid, CHAN_ID_LEN);
	return 0;
}

void app_subs_remove(struct app_subs *t, uint32_t slot)
{
	struct app_subs_link *l;

	if (slot >= t->max_conns || !t->link[slot].on)
		return;
	l = &t->link[slot];
	if (l->next != APP_SUBS_NONE)
		t->link[l->next].prev = l->prev;
	if (l->prev != APP_SUBS_NONE) {
		t->link[l->prev].next = l->next;
	} else {
		uint32_t e = find(t, t->slot_sid[slot]);

		t->tab[e].head = l->next;
		if (l->next == APP_SUBS_NONE) {
			entry_delete(t, e);
			t->nsessions--;
		}
	}
	l->on = false;
}

uint32_t app_subs_first(const struct app_subs *t, const char *sid)
{
	return t->tab[find(t, sid)].head;
}

uint32_t app_subs_next(const struct app_subs *t, uint32_t slot)
{
	return t->link[slot].next;
}

uint32_t app_subs_sessions(const struct app_subs *t)
{
	return t->nsessions;
}

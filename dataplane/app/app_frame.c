/* The worker's shared token frames (see app_frame.h). */
#include "app/app_frame.h"

#include <string.h>

#include "sluice/common.h"

/* Ids are zero-padded by app_frame_key_set: whole arrays compare. */
static bool key_eq(const struct app_frame_key *a, const struct app_frame_key *b)
{
	return a->last_seq == b->last_seq && a->first_seq == b->first_seq &&
	       a->variant == b->variant && memcmp(a->mid, b->mid, CHAN_ID_LEN) == 0;
}

_Static_assert((APP_FRAME_SLOTS & (APP_FRAME_SLOTS - 1)) == 0, "APP_FRAME_SLOTS is a power of two");

/* Consecutive seqs of one variant take consecutive slots; the variants of
 * one seq lie APP_FRAME_RUN apart, so a run that long never collides with
 * itself in another variant. */
static uint32_t slot_of(const struct app_frame_key *key)
{
	return (key->last_seq + key->variant * APP_FRAME_RUN) & (APP_FRAME_SLOTS - 1);
}

struct app_frame_slot *app_frame_find(struct app_frame_cache *fc, const struct app_frame_key *key)
{
	struct app_frame_slot *s = &fc->slot[slot_of(key)];

	return s->used && key_eq(&s->key, key) ? s : NULL;
}

struct app_frame_slot *app_frame_put(struct app_frame_cache *fc, const struct app_frame_key *key,
				     const void *bytes, size_t len)
{
	struct app_frame_slot *s;

	if (unlikely(len > APP_FRAME_MAX))
		return NULL;
	s = &fc->slot[slot_of(key)];
	s->key = *key;
	s->len = (uint32_t)len;
	s->used = true;
	s->gen++;
	memset(&s->hint, 0, sizeof(s->hint));
	memcpy(s->bytes, bytes, len);
	return s;
}

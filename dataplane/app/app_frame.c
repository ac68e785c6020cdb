/* The worker's shared token frames (see app_frame.h). */
#include "app/app_frame.h"

#include <string.h>

#include "sluice/common.h"

static bool key_eq(const struct app_frame_key *a, const struct app_frame_key *b)
{
	return a->last_seq == b->last_seq && a->first_seq == b->first_seq &&
	       a->variant == b->variant && strncmp(a->mid, b->mid, CHAN_ID_LEN) == 0;
}

const struct app_frame_slot *app_frame_find(const struct app_frame_cache *fc,
					    const struct app_frame_key *key)
{
	for (uint32_t i = 0; i < APP_FRAME_SLOTS; i++) {
		const struct app_frame_slot *s = &fc->slot[i];

		if (s->used && key_eq(&s->key, key))
			return s;
	}
	return NULL;
}

void app_frame_put(struct app_frame_cache *fc, const struct app_frame_key *key, const void *bytes,
		   size_t len)
{
	struct app_frame_slot *s;

	if (unlikely(len > APP_FRAME_MAX))
		return;
	s = &fc->slot[fc->next];
	fc->next = (fc->next + 1) % APP_FRAME_SLOTS;
	s->key = *key;
	s->len = (uint32_t)len;
	s->used = true;
	memcpy(s->bytes, bytes, len);
}

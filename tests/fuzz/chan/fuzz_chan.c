/*
 * libFuzzer target for the channel's record decoders. Input: two bytes of
 * record type (little-endian), then the payload. The payload is copied into
 * a heap block of exactly its size, 8-byte aligned as in a ring, so ASan
 * flags any read past the record.
 *
 * Oracle: a record chan_rec_valid() accepts must then walk cleanly in full
 * (fields to their end without `bad`, every token delivered), since a
 * consumer relies on validation to make the later decoding safe.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/chan_proto.h"

struct walk {
	uint32_t tokens;
	uint64_t sum;
};

static void on_token(void *arg, const struct chan_token *t)
{
	struct walk *w = arg;
	w->tokens++;
	for (uint32_t i = 0; i < t->len; i++)
		w->sum += t->text[i];
}

/* Walks the field run after a fixed part of `fixed` bytes; aborts if a
 * validated record turns out malformed. */
static uint64_t walk_fields(const uint8_t *payload, size_t len, size_t fixed)
{
	const uint8_t *p = payload + fixed;
	const uint8_t *end = payload + len;
	bool bad = false;
	uint64_t sum = 0;
	const struct chan_field *f;
	while ((f = chan_field_next(&p, end, &bad))) {
		for (uint32_t i = 0; i < f->len; i++)
			sum += f->data[i];
		sum += f->tag;
	}
	if (bad || p != end)
		abort();
	return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size - 2 > UINT32_MAX)
		return 0;
	uint16_t type = (uint16_t)(data[0] | (data[1] << 8));
	uint32_t len = (uint32_t)(size - 2);
	uint8_t *payload = malloc(len ? len : 1);
	if (!payload)
		return 0;
	if (len)
		memcpy(payload, data + 2, len);

	/* The decoders must be safe on anything, valid or not. */
	struct walk any = { 0, 0 };
	(void)chan_tokens_walk(payload, len, on_token, &any);
	const uint8_t *p = payload;
	bool bad = false;
	while (chan_field_next(&p, payload + len, &bad))
		;

	if (chan_rec_valid(type, payload, len)) {
		volatile uint64_t sink = 0;
		switch (type) {
		case CHAN_REC_REQUEST:
			sink = walk_fields(payload, len, sizeof(struct chan_request));
			break;
		case CHAN_REC_RESPONSE:
			sink = walk_fields(payload, len, sizeof(struct chan_response));
			break;
		case CHAN_REC_DONE:
			sink = walk_fields(payload, len, sizeof(struct chan_done));
			break;
		case CHAN_REC_TOKENS: {
			struct walk w = { 0, 0 };
			const struct chan_tokens *t = (const struct chan_tokens *)payload;
			if (!chan_tokens_walk(payload, len, on_token, &w) || w.tokens != t->count)
				abort();
			sink = w.sum;
			break;
		}
		default:
			break;
		}
		(void)sink;
	}
	free(payload);
	return 0;
}

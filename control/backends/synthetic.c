/*
 * The synthetic backend on the backend interface: a loop timer emits each
 * token when docs/api.md's schedule says it is due.
 */
#include "backends/synthetic.h"

#include <string.h>

#include "backends/bk_int.h"

#include "sluice/common.h"

#include "backends/synthetic_words.h"

_Static_assert(SLUICE_ARRAY_LEN(synthetic_words) == 64, "vocabulary must have 64 words");

uint64_t syn_seed(const char *prompt, size_t len)
{
	return sluice_fnv1a64(prompt, len);
}

uint64_t syn_splitmix64(uint64_t x)
{
	uint64_t z = x + 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int syn_token(uint64_t seed, uint32_t k, char *buf)
{
	const char *w = synthetic_words[syn_splitmix64(seed + k) % 64];
	size_t wl = strlen(w);
	size_t off = k > 1 ? 1 : 0;
	/* The vocabulary is fixed at build time; this only guards a bad edit. */
	if (wl + off > SYN_TOKEN_MAX)
		return -1;
	if (off)
		buf[0] = ' ';
	memcpy(buf + off, w, wl);
	return (int)(wl + off);
}

uint32_t syn_prompt_tokens(const char *prompt, size_t len)
{
	uint32_t n = 0;
	int in_word = 0;
	for (size_t i = 0; i < len; i++) {
		char c = prompt[i];
		int ws = c == ' ' || c == '\t' || c == '\r' || c == '\n';
		if (!ws && !in_word)
			n++;
		in_word = !ws;
	}
	return n;
}

uint64_t syn_due_offset_ns(const struct conf_backend *cfg, uint32_t k)
{
	uint64_t t = (uint64_t)cfg->ttft_ms * 1000000ull;
	/* A zero rate would divide by zero; the config rejects it, treat it
	 * as "everything at ttft" rather than crash on a hand-built config. */
	if (cfg->tokens_per_s)
		t += (uint64_t)(k - 1) * 1000000000ull / cfg->tokens_per_s;
	return t;
}

double syn_cost(const struct conf_backend *cfg, uint32_t prompt_tokens, uint32_t completion_tokens)
{
	return ((double)prompt_tokens * cfg->cost_in_per_mtok +
		(double)completion_tokens * cfg->cost_out_per_mtok) / 1e6;
}

/* The due tokens of a synthetic call, at most BK_SYN_TURN_TOKENS per turn
 * (a timer re-armed into the past waits for the loop's next turn); after
 * the last: its usage, then the end. */
static void syn_due(void *arg, uint64_t now_ns)
{
	struct bk_call *c = arg;
	const struct conf_backend *cfg = &c->be->cfg;
	char buf[SYN_TOKEN_MAX];
	uint32_t n = 0;
	while (c->next_k <= c->total && n < BK_SYN_TURN_TOKENS &&
	       c->start_ns + syn_due_offset_ns(cfg, c->next_k) <= now_ns) {
		int len = syn_token(c->seed, c->next_k, buf);
		if (len < 0) {
			bk_fail(c, false, 500, "internal", "synthetic token %u does not fit", c->next_k);
			return;
		}
		c->next_k++;
		n++;
		if (!bk_emit_token(c, buf, (size_t)len)) {
			bk_reap(c->m);
			return;
		}
	}
	if (c->next_k > c->total) {
		bk_emit_usage(c, syn_prompt_tokens(c->prompt, c->prompt_len), c->total);
		if (c->cancelled) {
			bk_reap(c->m);
			return;
		}
		bk_emit_complete(c, "stop");
		return;
	}
	uint64_t due = n == BK_SYN_TURN_TOKENS ? now_ns : c->start_ns + syn_due_offset_ns(cfg, c->next_k);
	if (cpl_timer_arm(c->m->loop, &c->timer, due) < 0)
		bk_fail(c, false, 500, "internal", "the timer heap is full");
}

int bk_syn_start(struct bk_call *c)
{
	const struct conf_backend *cfg = &c->be->cfg;
	const char *p = c->prompt ? c->prompt : "";
	c->seed = syn_seed(p, c->prompt_len);
	c->next_k = 1;
	c->total = cfg->answer_tokens;
	cpl_timer_init(&c->timer, syn_due, c);
	return cpl_timer_arm(c->m->loop, &c->timer, c->start_ns + syn_due_offset_ns(cfg, 1));
}

#include "backends/synthetic.h"

#include <string.h>

#include "sluice/common.h"

#include "backends/synthetic_words.h"

_Static_assert(SLUICE_ARRAY_LEN(synthetic_words) == 64, "vocabulary must have 64 words");

uint64_t syn_seed(const char *prompt, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)prompt[i];
		h *= 0x100000001b3ull;
	}
	return h;
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
	if (wl + off > BACKEND_TOKEN_MAX)
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

static int syn_start(struct backend_answer *a, const struct conf_backend *cfg,
		     const char *prompt, size_t len, uint64_t now_ns)
{
	a->ops = &syn_ops;
	a->cfg = cfg;
	a->start_ns = now_ns;
	a->seed = syn_seed(prompt, len);
	a->next_k = 1;
	a->total = cfg->answer_tokens;
	a->prompt_tokens = syn_prompt_tokens(prompt, len);
	return 0;
}

static uint64_t syn_next_due(const struct backend_answer *a)
{
	if (a->next_k > a->total)
		return UINT64_MAX;
	return a->start_ns + syn_due_offset_ns(a->cfg, a->next_k);
}

static int syn_next(struct backend_answer *a, uint64_t now_ns, char *buf)
{
	if (syn_next_due(a) > now_ns)
		return -1;
	int n = syn_token(a->seed, a->next_k, buf);
	if (n >= 0)
		a->next_k++;
	return n;
}

static double syn_answer_cost(const struct backend_answer *a, uint32_t completion_tokens)
{
	return syn_cost(a->cfg, a->prompt_tokens, completion_tokens);
}

const struct backend_ops syn_ops = {
	.type = "synthetic",
	.start = syn_start,
	.next_due = syn_next_due,
	.next = syn_next,
	.cost = syn_answer_cost,
};

/*
 * The synthetic backend against docs/api.md. Expected tokens were computed
 * once, outside this code, from the definition (FNV-1a seed, splitmix64,
 * the vocabulary in synthetic_words.h) and are hard-coded here. Its timing
 * runs through the backend manager on a real loop, in virtual time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "backends/backends.h"
#include "backends/synthetic.h"
#include "../fixture.h"
#include "sluice/conf.h"

struct expect {
	const char *prompt;
	uint64_t seed;
	const char *tokens[6];
};

static const struct expect cases[] = {
	{ "hello", 0xa430d84680aabd0bull,
	  { "its", " \"quoted\"", " memory", " stream", " it's", " gates" } },
	{ "What is the capital of France?", 0xf3be19d1e424be73ull,
	  { "answer", " \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", " when", " core", " latency", " slash/path" } },
	{ "", 0xcbf29ce484222325ull,
	  { "through", " worker", " flows", " queue", " slash/path", " the" } },
	{ "sluice", 0xf9a02fd5dc574c88ull,
	  { "and", " memory", " sluice", " receives", " and", " sluice" } },
};

static void test_seed_and_tokens(void **state)
{
	(void)state;
	char buf[SYN_TOKEN_MAX];
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct expect *e = &cases[c];
		uint64_t seed = syn_seed(e->prompt, strlen(e->prompt));
		assert_int_equal(seed, e->seed);
		for (uint32_t k = 1; k <= 6; k++) {
			int n = syn_token(seed, k, buf);
			assert_int_equal(n, (int)strlen(e->tokens[k - 1]));
			assert_memory_equal(buf, e->tokens[k - 1], (size_t)n);
		}
	}
}

static void test_prompt_tokens(void **state)
{
	(void)state;
	assert_int_equal(syn_prompt_tokens("", 0), 0);
	assert_int_equal(syn_prompt_tokens("   \t\r\n", 6), 0);
	assert_int_equal(syn_prompt_tokens("hello", 5), 1);
	assert_int_equal(syn_prompt_tokens("  a  b\tc\r\nd ", 12), 4);
	/* Only space, tab, CR and LF separate: other bytes are word bytes. */
	assert_int_equal(syn_prompt_tokens("a\vb,c", 5), 1);
}

/* What the backend reported to its caller. */
struct seen {
	int tokens;
	int streaming;
	char text[1024];
	bool ended;
	enum bk_end_kind end_kind;
	uint32_t prompt, completion;
};
static struct seen got;

static void on_status(void *arg, enum bk_status st, const char *backend)
{
	struct seen *g = arg;
	(void)backend;
	g->streaming += st == BK_STATUS_STREAMING;
}

static void on_token(void *arg, const char *text, size_t len)
{
	struct seen *g = arg;
	g->tokens++;
	strncat(g->text, text, len);
}

static void on_delta(void *arg, const char *json, size_t len)
{
	(void)arg;
	(void)json;
	(void)len;
	fail_msg("the synthetic backend sends no deltas");
}

static void on_usage(void *arg, uint32_t p, uint32_t c)
{
	struct seen *g = arg;
	g->prompt = p;
	g->completion = c;
}

static void on_end(void *arg, const struct bk_end *e)
{
	struct seen *g = arg;
	g->ended = true;
	g->end_kind = e->kind;
}

static const struct bk_events syn_events = { on_status, on_token, on_delta, on_usage, on_end };

static void test_timing_usage_cost(void **state)
{
	(void)state;
	struct sluice_conf conf;
	conf_defaults(&conf);
	struct conf_backend be;
	memset(&be, 0, sizeof(be));
	be.ttft_ms = 200;
	be.tokens_per_s = 20;
	be.answer_tokens = 3;
	be.cost_in_per_mtok = 2.0;
	be.cost_out_per_mtok = 10.0;
	assert_int_equal(syn_due_offset_ns(&be, 1), 200000000ull);
	assert_int_equal(syn_due_offset_ns(&be, 2), 250000000ull);
	assert_int_equal(syn_due_offset_ns(&be, 3), 300000000ull);
	assert_true(syn_cost(&be, 4, 3) == (4 * 2.0 + 3 * 10.0) / 1e6);

	/* The same answer through the backend interface: tokens are pushed when
	 * the loop's timers say they are due. */
	strcpy(be.name, "syn");
	strcpy(be.models[0], "m");
	be.nmodels = 1;
	be.type = CONF_BACKEND_SYNTHETIC;
	be.weight = 1;
	conf.backends[0] = be;
	conf.nbackends = 1;
	struct cfx_loop l;
	cfx_loop_open(&l);
	char err[256];
	struct bk_mgr *m = bk_create(&conf, l.loop, err, sizeof(err));
	assert_non_null(m);
	const uint64_t t0 = 1000000000ull;
	struct bk_msg msg = { .role = BK_ROLE_USER, .content = "hello world", .len = 11 };
	struct bk_request req = { .model = "m", .msgs = &msg, .nmsgs = 1, .start_ns = t0 };
	memset(&got, 0, sizeof(got));
	int rc = 0;
	struct bk_call *call = bk_call_start(m, &req, &syn_events, &got, &rc);
	assert_non_null(call);
	cpl_run_due(l.loop, t0 + 199999999ull);
	assert_int_equal(got.tokens, 0); /* not yet */
	cpl_run_due(l.loop, t0 + 200000000ull);
	assert_int_equal(got.tokens, 1);
	assert_int_equal(got.streaming, 1);
	cpl_run_due(l.loop, t0 + 200000000ull);
	assert_int_equal(got.tokens, 1);
	assert_false(got.ended);
	cpl_run_due(l.loop, t0 + 300000000ull);
	assert_int_equal(got.tokens, 3); /* all 3 produced */
	assert_true(got.ended);
	assert_int_equal(got.end_kind, BK_END_COMPLETE);
	assert_int_equal(got.prompt, 2);
	assert_int_equal(got.completion, 3);
	char want[3 * SYN_TOKEN_MAX] = "", tok[SYN_TOKEN_MAX + 1];
	uint64_t seed = syn_seed("hello world", 11);
	for (uint32_t k = 1; k <= 3; k++) {
		int n = syn_token(seed, k, tok);
		tok[n] = 0;
		strcat(want, tok);
	}
	assert_string_equal(got.text, want);
	assert_int_equal(cpl_run_due(l.loop, UINT64_MAX - 1), UINT64_MAX);
	assert_true(conf_model_cost(&conf, "m", 2, 3) == (2 * 2.0 + 3 * 10.0) / 1e6);

	/* A cancelled call stops at once and reports nothing more. */
	memset(&got, 0, sizeof(got));
	call = bk_call_start(m, &req, &syn_events, &got, &rc);
	assert_non_null(call);
	cpl_run_due(l.loop, t0 + 200000000ull);
	assert_int_equal(got.tokens, 1);
	bk_call_cancel(call);
	assert_int_equal(cpl_run_due(l.loop, UINT64_MAX - 1), UINT64_MAX);
	assert_int_equal(got.tokens, 1);
	assert_false(got.ended);
	bk_destroy(m);
	cfx_loop_close(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seed_and_tokens),
		cmocka_unit_test(test_prompt_tokens),
		cmocka_unit_test(test_timing_usage_cost),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The synthetic backend against docs/api.md. Expected tokens were computed
 * once, outside this code, from the definition (FNV-1a seed, splitmix64,
 * the vocabulary in synthetic_words.h) and are hard-coded here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "backends/synthetic.h"
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
	char buf[BACKEND_TOKEN_MAX];
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

	struct backend_answer a;
	char buf[BACKEND_TOKEN_MAX];
	const uint64_t t0 = 1000000000ull;
	assert_int_equal(syn_ops.start(&a, &be, "hello world", 11, t0), 0);
	assert_int_equal(a.prompt_tokens, 2);
	assert_int_equal(syn_ops.next_due(&a), t0 + 200000000ull);
	assert_int_equal(syn_ops.next(&a, t0 + 199999999ull, buf), -1); /* not yet */
	assert_true(syn_ops.next(&a, t0 + 200000000ull, buf) > 0);
	assert_int_equal(syn_ops.next(&a, t0 + 200000000ull, buf), -1);
	assert_true(syn_ops.next(&a, t0 + 300000000ull, buf) > 0);
	assert_true(syn_ops.next(&a, t0 + 300000000ull, buf) > 0);
	assert_int_equal(syn_ops.next_due(&a), UINT64_MAX); /* all 3 produced */
	assert_int_equal(syn_ops.next(&a, UINT64_MAX - 1, buf), -1);
	assert_true(syn_ops.cost(&a, 3) == (2 * 2.0 + 3 * 10.0) / 1e6);
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

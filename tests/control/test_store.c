/* The in-memory store through the store interface. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"

static int done_calls;
static int done_err;

static void on_done(void *arg, int err)
{
	assert_ptr_equal(arg, &done_calls);
	done_calls++;
	done_err = err;
}

static struct store_session sess(const char *id)
{
	struct store_session s;
	memset(&s, 0, sizeof(s));
	strcpy(s.id, id);
	strcpy(s.agent_id, "assistant");
	strcpy(s.model_id, "m1");
	strcpy(s.title, "t");
	s.created_at = 1234;
	return s;
}

static void test_sessions(void **state)
{
	(void)state;
	struct store *st = store_mem_open();
	assert_non_null(st);
	struct store_session s = sess("s_0001"), got;
	done_calls = 0;
	done_err = -1;
	assert_int_equal(store_session_create(st, &s, on_done, &done_calls), 0);
	assert_int_equal(done_calls, 1);
	assert_int_equal(done_err, 0);
	assert_int_equal(store_session_create(st, &s, on_done, &done_calls), -EEXIST);
	assert_int_equal(done_calls, 1); /* a refused write never calls back */
	assert_int_equal(store_session_get(st, "s_0001", &got), 0);
	assert_string_equal(got.model_id, "m1");
	assert_int_equal(got.created_at, 1234);
	assert_int_equal(store_session_get(st, "s_0002", &got), -ENOENT);
	store_close(st);
}

static void test_messages_and_tokens(void **state)
{
	(void)state;
	struct store *st = store_mem_open();
	assert_non_null(st);
	struct store_session s = sess("s_1");
	assert_int_equal(store_session_create(st, &s, NULL, NULL), 0);
	done_calls = 0;
	assert_int_equal(store_message_add(st, "s_1", "m_u", "hi there", 8, "m_a", 2, on_done, &done_calls), 0);
	assert_int_equal(done_calls, 1);
	assert_int_equal(store_message_add(st, "s_x", "m_u2", "x", 1, "m_a2", 2, NULL, NULL), -ENOENT);
	assert_int_equal(store_message_count(st, "s_1"), 2);
	assert_int_equal(store_message_find(st, "s_1", "m_a"), 1);
	assert_int_equal(store_message_find(st, "s_1", "m_zz"), -1);

	struct store_message m;
	assert_int_equal(store_message_get(st, "s_1", 0, &m), 0);
	assert_int_equal(m.role, STORE_ROLE_USER);
	assert_int_equal(m.content_len, 8);
	assert_memory_equal(m.content, "hi there", 8);
	assert_int_equal(store_message_get(st, "s_1", 1, &m), 0);
	assert_int_equal(m.role, STORE_ROLE_ASSISTANT);
	assert_int_equal(m.status, STORE_MSG_QUEUED);
	assert_int_equal(m.ntokens, 0);

	/* More tokens than the hint: the log must grow. */
	struct store_token t[5] = {
		{ "a", 1, 10 }, { " bb", 3, 20 }, { " ccc", 4, 30 }, { " d", 2, 40 }, { " e", 2, 50 },
	};
	assert_int_equal(store_tokens_append(st, "s_1", "m_a", t, 2), 0);
	assert_int_equal(store_tokens_append(st, "s_1", "m_a", t + 2, 3), 0);
	struct store_token g;
	assert_int_equal(store_token_get(st, "s_1", "m_a", 3, &g), 0);
	assert_int_equal(g.len, 4);
	assert_memory_equal(g.text, " ccc", 4);
	assert_int_equal(g.offset_ns, 30);
	assert_int_equal(store_token_get(st, "s_1", "m_a", 0, &g), -ENOENT);
	assert_int_equal(store_token_get(st, "s_1", "m_a", 6, &g), -ENOENT);

	struct store_usage u = { .prompt_tokens = 2, .completion_tokens = 5, .cost_usd = 0.5 };
	assert_int_equal(store_message_status(st, "s_1", "m_a", STORE_MSG_COMPLETE, &u), 0);
	assert_int_equal(store_message_get(st, "s_1", 1, &m), 0);
	assert_int_equal(m.status, STORE_MSG_COMPLETE);
	assert_int_equal(m.ntokens, 5);
	assert_int_equal(m.usage.completion_tokens, 5);
	assert_int_equal(m.content_len, 12);
	assert_memory_equal(m.content, "a bb ccc d e", 12);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sessions),
		cmocka_unit_test(test_messages_and_tokens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* app_event.c: stream events byte-exact against docs/api.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "app/app_event.h"
#include "sluice/chan_proto.h"

static char buf[4096];

static const char *fmt_done(struct app_buf *b)
{
	assert_false(b->overflow);
	buf[b->len] = '\0';
	return buf;
}

static void test_sse_token(void **state)
{
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_token(&b, APP_EVENT_SSE, "s_00000000000000aa", "m_00000000000000bb", 7, 3,
			"a\\\"b c", 6, NULL, 0);
	assert_string_equal(fmt_done(&b),
			    "id: m_00000000000000bb:7\nevent: token\n"
			    "data: {\"session_id\":\"s_00000000000000aa\",\"message_id\":\"m_00000000000000bb\","
			    "\"seq\":7,\"n\":3,\"text\":\"a\\\"b c\"}\n\n");
}

/* X-Sluice-Timing: each token's creation time after the text, in order. */
static void test_token_stamps(void **state)
{
	static const uint64_t stamps[] = { 5, 123456789012345ull };
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_token(&b, APP_EVENT_SSE, "s_1", "m_2", 2, 2, "a b", 3, stamps, 2);
	assert_string_equal(fmt_done(&b),
			    "id: m_2:2\nevent: token\n"
			    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"seq\":2,\"n\":2,"
			    "\"text\":\"a b\",\"created_ns\":[5,123456789012345]}\n\n");
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_token(&b, APP_EVENT_WS, "s_1", "m_2", 1, 1, "hi", 2, stamps, 1);
	assert_string_equal(fmt_done(&b),
			    "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":\"m_2\","
			    "\"seq\":1,\"n\":1,\"text\":\"hi\",\"created_ns\":[5]}");
}

static void test_ws_token(void **state)
{
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_token(&b, APP_EVENT_WS, "s_1", "m_2", 1, 1, "hi", 2, NULL, 0);
	assert_string_equal(fmt_done(&b),
			    "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":\"m_2\","
			    "\"seq\":1,\"n\":1,\"text\":\"hi\"}");
}

static void test_status(void **state)
{
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_status(&b, APP_EVENT_SSE, "s_1", "m_2", 0, "queued");
	assert_string_equal(fmt_done(&b),
			    "id: m_2:0\nevent: status_update\n"
			    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"status\":\"queued\"}\n\n");
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_status(&b, APP_EVENT_WS, "s_1", "m_2", 5, "streaming");
	assert_string_equal(fmt_done(&b),
			    "{\"type\":\"status_update\",\"session_id\":\"s_1\",\"message_id\":\"m_2\","
			    "\"status\":\"streaming\"}");
}

static void test_usage(void **state)
{
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_usage(&b, APP_EVENT_SSE, "s_1", "m_2", 3, 32, 35, 0.000125);
	assert_string_equal(fmt_done(&b),
			    "id: m_2:u\nevent: usage\n"
			    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"prompt_tokens\":3,"
			    "\"completion_tokens\":32,\"total_tokens\":35,\"cost_usd\":0.000125}\n\n");
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_usage(&b, APP_EVENT_WS, "s_1", "m_2", 0, 0, 0, 0);
	assert_string_equal(fmt_done(&b),
			    "{\"type\":\"usage\",\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"prompt_tokens\":0,"
			    "\"completion_tokens\":0,\"total_tokens\":0,\"cost_usd\":0}");
}

static void test_done(void **state)
{
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_done(&b, APP_EVENT_SSE, "s_1", "m_2", app_event_done_status_name(CHAN_DONE_COMPLETE),
		       NULL, 0, NULL, 0);
	assert_string_equal(fmt_done(&b),
			    "id: m_2:d\nevent: done\n"
			    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"status\":\"complete\"}\n\n");
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_done(&b, APP_EVENT_WS, "s_1", "m_2", app_event_done_status_name(CHAN_DONE_ERROR),
		       "backend_error", 13, "it \"broke\"\n", 11);
	assert_string_equal(fmt_done(&b),
			    "{\"type\":\"done\",\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"status\":\"error\","
			    "\"error\":{\"code\":\"backend_error\",\"message\":\"it \\\"broke\\\"\\n\"}}");
	assert_string_equal(app_event_done_status_name(CHAN_DONE_CANCELLED), "cancelled");
	assert_string_equal(app_event_done_status_name(CHAN_DONE_INTERRUPTED), "interrupted");
	assert_null(app_event_done_status_name(99));
}

static void test_errors(void **state)
{
	struct app_buf b;

	(void)state;
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_sse_error(&b, "slow_consumer", "too slow");
	assert_string_equal(fmt_done(&b),
			    "event: error\ndata: {\"error\":{\"code\":\"slow_consumer\",\"message\":\"too slow\"}}\n\n");
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_error_json(&b, APP_EVENT_WS, "invalid_json", "bad");
	assert_string_equal(fmt_done(&b),
			    "{\"type\":\"error\",\"error\":{\"code\":\"invalid_json\",\"message\":\"bad\"}}");
}

/* A full 32-byte id (no NUL in the record array) is read to its end only. */
static void test_full_width_id(void **state)
{
	char sid[CHAN_ID_LEN + 4];
	struct app_buf b;

	(void)state;
	memset(sid, 'x', sizeof(sid));
	sid[CHAN_ID_LEN] = 'Y'; /* past the id: must not appear */
	app_buf_init(&b, buf, sizeof(buf) - 1);
	app_event_status(&b, APP_EVENT_WS, sid, "m", 0, "queued");
	fmt_done(&b);
	assert_null(strchr(buf, 'Y'));
}

static void test_overflow_is_sticky(void **state)
{
	char small[20];
	struct app_buf b;

	(void)state;
	app_buf_init(&b, small, sizeof(small));
	app_event_token(&b, APP_EVENT_WS, "s_1", "m_2", 1, 1, "hi", 2, NULL, 0);
	assert_true(b.overflow);
	assert_true(b.len <= sizeof(small));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sse_token),
		cmocka_unit_test(test_ws_token),
		cmocka_unit_test(test_token_stamps),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_usage),
		cmocka_unit_test(test_done),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_full_width_id),
		cmocka_unit_test(test_overflow_is_sticky),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The OpenAI-compatible API (control/api/api_v1.c) over the synthetic
 * backend, in virtual time: /v1/models, a completion not streamed and
 * streamed (head at once, one part per turn, the final chunk, the usage
 * chunk, [DONE]), OpenAI's error shape, a closed connection cancelling the
 * call, the recording of /v1 conversations (and store: false), and the
 * limits of chat messages applied to /v1 (429 in OpenAI's shape).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../fixture.h"

#define ANSWER "its \"quoted\" memory stream it's"

static int fx_setup(void **state)
{
	*state = cfx_open(NULL, 0);
	return 0;
}

static int fx_teardown(void **state)
{
	cfx_close(*state);
	return 0;
}

static void completion(struct cfx *f, uint32_t slot, const char *body)
{
	cfx_http(f, 0, slot, CHAN_M_POST, "/v1/chat/completions", body);
}

static void run_all(struct cfx *f)
{
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
}

static void expect_v1_error(struct cfx *f, uint16_t status, const char *type, const char *code)
{
	json_t *j = cfx_expect_resp(f, 0, status);
	json_t *e = json_object_get(j, "error");
	assert_string_equal(json_string_value(json_object_get(e, "type")), type);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	assert_non_null(json_string_value(json_object_get(e, "message")));
	assert_true(json_is_null(json_object_get(e, "param")));
	json_decref(j);
}

static void test_models_and_errors(void **state)
{
	struct cfx *f = *state;
	cfx_http(f, 0, 1, CHAN_M_GET, "/v1/models", NULL);
	json_t *j = cfx_expect_resp(f, 0, 200);
	assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
	json_t *m = json_array_get(json_object_get(j, "data"), 0);
	assert_string_equal(json_string_value(json_object_get(m, "id")), "synth-1");
	assert_string_equal(json_string_value(json_object_get(m, "owned_by")), "syn");
	json_decref(j);

	completion(f, 1, "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
	expect_v1_error(f, 404, "invalid_request_error", "model_not_found");
	completion(f, 1, "not json");
	expect_v1_error(f, 400, "invalid_request_error", "invalid_json");
	completion(f, 1, "{\"model\":\"synth-1\"}");
	expect_v1_error(f, 400, "invalid_request_error", "invalid_request");
	completion(f, 1, "{\"model\":\"synth-1\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
	expect_v1_error(f, 400, "invalid_request_error", "invalid_request");
	cfx_http(f, 0, 1, CHAN_M_GET, "/v1/chat/completions", NULL);
	expect_v1_error(f, 405, "api_error", "method_not_allowed");
	cfx_http(f, 0, 1, CHAN_M_GET, "/v1/embeddings", NULL);
	expect_v1_error(f, 404, "invalid_request_error", "not_found");
	/* Authentication errors in the same shape, on /v1 only. */
	cfx_http_as(f, 0, 1, CHAN_M_GET, "/v1/models", NULL, "");
	expect_v1_error(f, 401, "authentication_error", "unauthenticated");
	assert_false(cfx_next(f, 0));
}

static void test_not_streamed(void **state)
{
	struct cfx *f = *state;
	completion(f, 2, "{\"model\":\"synth-1\",\"temperature\":0.1,"
			 "\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hello\"}]}");
	assert_false(cfx_next(f, 0)); /* nothing until the answer ended */
	run_all(f);
	json_t *j = cfx_expect_resp(f, 0, 200);
	assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
	assert_string_equal(json_string_value(json_object_get(j, "model")), "synth-1");
	assert_int_equal(strncmp(json_string_value(json_object_get(j, "id")), "chatcmpl-", 9), 0);
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(c, "message"), "content")), ANSWER);
	assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
	json_t *u = json_object_get(j, "usage");
	/* The synthetic backend counts the words of the user message. */
	assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 1);
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 5);
	assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 6);
	assert_true(json_real_value(json_object_get(u, "cost_usd")) == (1 * 2.0 + 5 * 10.0) / 1e6);
	json_decref(j);
	assert_false(cfx_next(f, 0));
	/* Recorded: a conversation of the caller, agent openai-api. */
	cfx_http(f, 1, 1, CHAN_M_GET, "/api/chat/sessions?archived=any", NULL);
	j = cfx_expect_resp(f, 1, 200);
	json_t *ss = json_object_get(j, "sessions");
	assert_int_equal(json_array_size(ss), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(ss, 0), "agent_id")), "openai-api");
	char path[96];
	snprintf(path, sizeof(path), "/api/chat/sessions/%s",
		 json_string_value(json_object_get(json_array_get(ss, 0), "id")));
	json_decref(j);
	cfx_http(f, 1, 1, CHAN_M_GET, path, NULL);
	j = cfx_expect_resp(f, 1, 200);
	json_t *msgs = json_object_get(j, "messages");
	assert_int_equal(json_array_size(msgs), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "hello");
	assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), ANSWER);
	assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 1), "status")), "complete");
	json_decref(j);
	/* store: false records nothing. */
	completion(f, 2, "{\"model\":\"synth-1\",\"store\":false,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
	run_all(f);
	json_decref(cfx_expect_resp(f, 0, 200));
	cfx_http(f, 1, 1, CHAN_M_GET, "/api/chat/sessions?archived=any", NULL);
	j = cfx_expect_resp(f, 1, 200);
	assert_int_equal(json_array_size(json_object_get(j, "sessions")), 1);
	json_decref(j);
}

/* The next RESPONSE part on worker 0: its body (static, "" when none) and
 * whether more follow. */
static const char *part(struct cfx *f, bool *more)
{
	static char body[64 * 1024];
	assert_true(cfx_next(f, 0));
	assert_int_equal(cfx_got.type, CHAN_REC_RESPONSE);
	const struct chan_response *h = (const void *)cfx_got.p;
	assert_int_equal(h->action, CHAN_RESP_HTTP_STREAM);
	assert_int_equal(h->status, 200);
	assert_int_equal(h->req_id, CFX_REQ_ID);
	*more = h->flags & CHAN_RESP_MORE;
	const struct chan_field *b = cfx_field(CHAN_F_BODY);
	size_t n = b ? b->len : 0;
	assert_true(n < sizeof(body));
	memcpy(body, b ? (const char *)b->data : "", n);
	body[n] = 0;
	return body;
}

static void test_streamed(void **state)
{
	struct cfx *f = *state;
	completion(f, 3, "{\"model\":\"synth-1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
			 "\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}");
	/* The head at once, before any token. */
	bool more;
	assert_string_equal(part(f, &more), "");
	assert_true(more);
	const struct chan_field *ct = cfx_field(CHAN_F_CONTENT_TYPE);
	assert_non_null(ct);
	assert_memory_equal(ct->data, "text/event-stream", ct->len);
	assert_false(cfx_next(f, 0));
	/* Every token due by now is in one part, with the end. */
	run_all(f);
	const char *b = part(f, &more);
	assert_false(more);
	assert_non_null(strstr(b, "\"delta\":{\"role\":\"assistant\",\"content\":\"its\"}"));
	assert_non_null(strstr(b, "\"delta\":{\"content\":\" \\\"quoted\\\"\"}"));
	assert_non_null(strstr(b, "\"delta\":{},\"finish_reason\":\"stop\"}]}"));
	assert_non_null(strstr(b, "\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":5,"
				  "\"total_tokens\":6"));
	size_t n = strlen(b);
	assert_true(n > 14 && strcmp(b + n - 14, "data: [DONE]\n\n") == 0);
	int chunks = 0;
	for (const char *p = b; (p = strstr(p, "data: {")); p++)
		chunks++;
	assert_int_equal(chunks, 7); /* 5 tokens, the finish, the usage */
	assert_false(cfx_next(f, 0));
}

static void test_closed_conn_cancels(void **state)
{
	struct cfx *f = *state;
	completion(f, 4, "{\"model\":\"synth-1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}");
	bool more;
	part(f, &more);
	assert_int_equal(idmap_count(&f->api.v1_reqs), 1);
	struct chan_conn_closed cl = { .conn = { .worker = 0, .slot = 4, .gen = 1 } };
	cfx_dispatch(f, CHAN_REC_CONN_CLOSED, &cl, sizeof(cl));
	assert_int_equal(idmap_count(&f->api.v1_reqs), 0);
	struct bk_stats bs;
	bk_totals(f->bk, &bs);
	assert_int_equal(bs.cancels, 1);
	assert_int_equal(bs.inflight, 0);
	/* Nothing more is produced for it, whatever the time. */
	assert_int_equal(cpl_run_due(f->loop, UINT64_MAX - 1), UINT64_MAX);
	co_flush(&f->out);
	assert_false(cfx_next(f, 0));
}

/* Limits on, at no limit but what each case sets, on a test clock 30 s
 * into a minute. */
static int lim_setup(void **state)
{
	struct sluice_conf c;
	cfx_conf_default(&c);
	memset(c.role_limits[CONF_ROLE_USER].v, 0, sizeof(c.role_limits[CONF_ROLE_USER].v));
	struct cfx *f = cfx_open(&c, 0);
	cfx_limits_clock(f);
	*state = f;
	return 0;
}

/* A 429 of the limits in OpenAI's shape, with its Retry-After. */
static void expect_v1_limit(struct cfx *f, const char *type, const char *code, const char *retry_after)
{
	json_t *j = cfx_expect_resp(f, 0, 429);
	const struct chan_field *ra = cfx_field(CHAN_F_HEADER);
	assert_non_null(ra);
	assert_int_equal(ra->len, strlen(retry_after));
	assert_memory_equal(ra->data, retry_after, ra->len);
	json_t *e = json_object_get(j, "error");
	assert_string_equal(json_string_value(json_object_get(e, "type")), type);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "limit of this user"));
	assert_true(json_is_null(json_object_get(e, "param")));
	json_decref(j);
}

static size_t session_count(struct cfx *f)
{
	cfx_http(f, 1, 1, CHAN_M_GET, "/api/chat/sessions?archived=any", NULL);
	json_t *j = cfx_expect_resp(f, 1, 200);
	size_t n = json_array_size(json_object_get(j, "sessions"));
	json_decref(j);
	return n;
}

#define V1_HELLO "{\"model\":\"synth-1\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}"
#define V1_HELLO_STREAM "{\"model\":\"synth-1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}"
#define V1_HELLO_NOSTORE "{\"model\":\"synth-1\",\"store\":false,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}"

/* /v1 runs into the limits of chat messages: tokens per minute (each
 * answer is 5 tokens), messages per minute, answers at once (a closed
 * connection gives its place back), conversations (a recorded completion
 * is one; store: false is not); a refusal stores nothing. */
static void test_v1_limits(void **state)
{
	struct cfx *f = *state;
	uint32_t *v = f->conf.role_limits[CONF_ROLE_USER].v;
	v[CONF_LIM_TOKENS_PER_MIN] = 8;
	for (int i = 0; i < 2; i++) {
		completion(f, 2, V1_HELLO);
		run_all(f);
		json_decref(cfx_expect_resp(f, 0, 200));
	}
	completion(f, 2, V1_HELLO);
	expect_v1_limit(f, "rate_limit_exceeded", "limit_tokens_per_min", "Retry-After: 30");
	assert_int_equal(idmap_count(&f->api.v1_reqs), 0);
	assert_int_equal(session_count(f), 2);
	struct lim_view lv;
	char key[STORE_USER_MAX + 2];
	snprintf(key, sizeof(key), "u:%s", f->user);
	assert_int_equal(lim_view(&f->limits, key, STORE_USER_ROLE_USER, f->uid, &lv), 0);
	assert_int_equal(lv.used[CONF_LIM_TOKENS_PER_MIN], 10);

	cfx_clock_s += 60;
	v[CONF_LIM_TOKENS_PER_MIN] = 0;
	v[CONF_LIM_MESSAGES_PER_MIN] = 1;
	completion(f, 2, V1_HELLO_NOSTORE);
	run_all(f);
	json_decref(cfx_expect_resp(f, 0, 200));
	completion(f, 2, V1_HELLO);
	expect_v1_limit(f, "rate_limit_exceeded", "limit_messages_per_min", "Retry-After: 30");

	cfx_clock_s += 60;
	v[CONF_LIM_MESSAGES_PER_MIN] = 0;
	v[CONF_LIM_CONCURRENT] = 1;
	completion(f, 3, V1_HELLO_STREAM);
	bool more;
	part(f, &more);
	assert_true(more);
	completion(f, 2, V1_HELLO);
	expect_v1_limit(f, "rate_limit_exceeded", "limit_concurrent_answers", "Retry-After: 5");
	struct chan_conn_closed cl = { .conn = { .worker = 0, .slot = 3, .gen = 1 } };
	cfx_dispatch(f, CHAN_REC_CONN_CLOSED, &cl, sizeof(cl));
	completion(f, 2, V1_HELLO);
	run_all(f);
	json_decref(cfx_expect_resp(f, 0, 200));
	assert_int_equal(session_count(f), 4);

	v[CONF_LIM_CONCURRENT] = 0;
	v[CONF_LIM_SESSIONS] = 4;
	completion(f, 2, V1_HELLO);
	expect_v1_limit(f, "insufficient_quota", "limit_sessions", "Retry-After: 60");
	completion(f, 2, V1_HELLO_NOSTORE);
	run_all(f);
	json_decref(cfx_expect_resp(f, 0, 200));
	assert_int_equal(session_count(f), 4);
	assert_false(cfx_next(f, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_models_and_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_not_streamed, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_streamed, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_closed_conn_cancels, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_v1_limits, lim_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * A running answer cut at its owner's daily token budget (docs/api.md
 * "Limits"), over the synthetic backend in virtual time, one token per loop
 * turn: on chat, the backend call is cancelled in the turn whose tokens
 * go past the budget (one token past it here), the subscribers get the tokens so far, usage, then done
 * error limit_tokens_per_day, the store keeps the tokens and usage, and
 * another user's answer streams on; on /v1 a stream ends with the usage
 * chunk, OpenAI's error event and [DONE], a completion not streamed gets
 * 429 in OpenAI's shape.
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

#define BUDGET 10u
#define LONG_ANSWER 40u
#define CUT (BUDGET + 1) /* the answer's tokens when it is cut */

/* 40-token answers, 50 ms apart; users may spend 10 tokens a day. */
static int fx_setup(void **state)
{
	struct sluice_conf c;
	cfx_conf_default(&c);
	c.backends[0].answer_tokens = LONG_ANSWER;
	memset(c.role_limits[CONF_ROLE_USER].v, 0, sizeof(c.role_limits[CONF_ROLE_USER].v));
	c.role_limits[CONF_ROLE_USER].v[CONF_LIM_TOKENS_PER_DAY] = BUDGET;
	struct cfx *f = cfx_open(&c, 0);
	cfx_limits_clock(f);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	cfx_close(*state);
	return 0;
}

/* One loop turn: the earliest timers, then the output flush. */
static void step(struct cfx *f)
{
	cpl_run_due(f->loop, cpl_next_deadline(f->loop));
	co_flush(&f->out);
}

static uint64_t cancels(struct cfx *f)
{
	struct bk_stats bs;
	bk_totals(f->bk, &bs);
	return bs.cancels;
}

/* What one message's subscribers received. */
struct seen {
	char mid[CHAN_ID_LEN];
	uint32_t tokens;
	bool usage, done;
	uint32_t usage_completion, done_status, done_last;
	char code[64], msg[256];
};

static void field_copy(char *out, size_t cap, const struct chan_field *fl)
{
	size_t n = fl->len < cap - 1 ? fl->len : cap - 1;
	memcpy(out, fl->data, n);
	out[n] = 0;
}

/* Reads every record worker w has, into the seen entry of its message. */
static void drain(struct cfx *f, uint32_t w, struct seen *v, size_t nv)
{
	while (cfx_next(f, w)) {
		const char *mid = NULL;
		if (cfx_got.type == CHAN_REC_TOKENS)
			mid = ((const struct chan_tokens *)cfx_got.p)->message_id;
		else if (cfx_got.type == CHAN_REC_USAGE)
			mid = ((const struct chan_usage *)cfx_got.p)->message_id;
		else if (cfx_got.type == CHAN_REC_DONE)
			mid = ((const struct chan_done *)cfx_got.p)->message_id;
		else
			continue;
		struct seen *s = NULL;
		for (size_t i = 0; i < nv; i++)
			if (strcmp(v[i].mid, mid) == 0)
				s = &v[i];
		assert_non_null(s);
		assert_false(s->done); /* nothing after done */
		if (cfx_got.type == CHAN_REC_TOKENS) {
			const struct chan_tokens *t = (const void *)cfx_got.p;
			assert_int_equal(t->first_seq, s->tokens + 1);
			s->tokens += t->count;
		} else if (cfx_got.type == CHAN_REC_USAGE) {
			assert_false(s->usage);
			s->usage = true;
			s->usage_completion = ((const struct chan_usage *)cfx_got.p)->completion_tokens;
		} else {
			const struct chan_done *d = (const void *)cfx_got.p;
			assert_true(s->usage); /* usage comes first */
			s->done = true;
			s->done_status = d->status;
			s->done_last = d->last_seq;
			const uint8_t *p = cfx_got.p + sizeof(*d), *end = cfx_got.p + cfx_got.len;
			bool bad = false;
			const struct chan_field *fl;
			while ((fl = chan_field_next(&p, end, &bad)) != NULL) {
				if (fl->tag == CHAN_F_ERROR_CODE)
					field_copy(s->code, sizeof(s->code), fl);
				else if (fl->tag == CHAN_F_ERROR_MESSAGE)
					field_copy(s->msg, sizeof(s->msg), fl);
			}
			assert_false(bad);
		}
	}
}

static void new_session(struct cfx *f, const char *token, char sid[CHAN_ID_LEN])
{
	cfx_http_as(f, 0, 5, CHAN_M_POST, "/api/chat/sessions", "{\"model_id\":\"synth-1\"}", token);
	json_t *j = cfx_expect_resp(f, 0, 201);
	snprintf(sid, CHAN_ID_LEN, "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
}

/* Subscribes worker 1's conn slot to sid. */
static void subscribe(struct cfx *f, const char *token, uint32_t slot, const char *sid)
{
	char path[128];
	snprintf(path, sizeof(path), "/api/chat/stream/%s", sid);
	cfx_http_as(f, 1, slot, CHAN_M_GET, path, NULL, token);
	struct chan_response h;
	assert_null(cfx_read_resp(f, 1, &h, NULL));
	assert_int_equal(h.action, CHAN_RESP_SSE_SUBSCRIBE);
}

static void post(struct cfx *f, const char *token, const char *sid, char mid[CHAN_ID_LEN])
{
	char body[128];
	snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"content\":\"tell me more\"}", sid);
	cfx_http_as(f, 0, 5, CHAN_M_POST, "/api/chat/message", body, token);
	json_t *j = cfx_expect_resp(f, 0, 202);
	snprintf(mid, CHAN_ID_LEN, "%s", json_string_value(json_object_get(j, "message_id")));
	json_decref(j);
}

static void put_done(void *arg, int err)
{
	*(int *)arg = err;
}

/* Another user whose budget an override lifts: its answers run whole. */
static void rich_user(struct cfx *f, char token[AUTH_TOKEN_LEN + 1])
{
	cfx_add_user(f, "rich");
	cfx_login(f, "rich", token);
	struct store_limits o;
	int err = 1;
	memset(&o, 0, sizeof(o));
	for (int i = 0; i < CONF_LIM_N; i++)
		o.v[i] = STORE_LIMIT_UNSET;
	strcpy(o.key, "u:rich");
	o.v[CONF_LIM_TOKENS_PER_DAY] = 0;
	assert_int_equal(lim_override_put(&f->limits, &o, put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
}

static void test_chat_answer_cut(void **state)
{
	struct cfx *f = *state;
	char rich[AUTH_TOKEN_LEN + 1], sid[CHAN_ID_LEN], sid2[CHAN_ID_LEN];
	rich_user(f, rich);
	new_session(f, f->token, sid);
	new_session(f, rich, sid2);
	subscribe(f, f->token, 7, sid);
	subscribe(f, rich, 8, sid2);
	struct seen v[2];
	memset(v, 0, sizeof(v));
	post(f, f->token, sid, v[0].mid);
	post(f, rich, sid2, v[1].mid);
	struct chat_session *s = chat_session_get(&f->chat, sid, strlen(sid));
	assert_non_null(s);
	/* Turn by turn: the turn whose token goes past the budget ends the
	 * answer, and its backend call with it. */
	while (!v[0].done) {
		step(f);
		drain(f, 1, v, 2);
		if (!v[0].done) {
			assert_true(s->ans.running);
			assert_int_equal(cancels(f), 0);
			assert_true(v[0].tokens <= BUDGET);
		}
	}
	assert_int_equal(v[0].tokens, CUT);
	assert_int_equal(cancels(f), 1);
	assert_false(s->ans.running);
	assert_null(s->ans.call);
	assert_int_equal(v[0].done_status, CHAN_DONE_ERROR);
	assert_int_equal(v[0].done_last, CUT);
	assert_int_equal(v[0].usage_completion, CUT);
	assert_string_equal(v[0].code, "limit_tokens_per_day");
	assert_non_null(strstr(v[0].msg, "tokens_per_day limit of this user (10)"));
	assert_int_equal(f->chat.stats.answers_cut, 1);
	/* The other user's answer streams on to its end. */
	assert_false(v[1].done);
	while (!v[1].done) {
		step(f);
		drain(f, 1, v, 2);
	}
	assert_int_equal(v[1].tokens, LONG_ANSWER);
	assert_int_equal(v[1].done_status, CHAN_DONE_COMPLETE);
	assert_int_equal(v[1].usage_completion, LONG_ANSWER);
	assert_int_equal(cancels(f), 1);
	/* The store keeps the tokens up to the cut and their usage. */
	char path[160];
	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid);
	cfx_http(f, 0, 5, CHAN_M_GET, path, NULL);
	json_t *j = cfx_expect_resp(f, 0, 200);
	json_t *m = json_array_get(json_object_get(j, "messages"), 1);
	assert_string_equal(json_string_value(json_object_get(m, "status")), "error");
	assert_true(json_string_length(json_object_get(m, "content")) > 0);
	json_t *u = json_object_get(m, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), CUT);
	json_decref(j);
	struct store_message sm;
	assert_int_equal(store_message_get(f->st, sid, 1, &sm), 0);
	assert_int_equal(sm.ntokens, CUT);
	/* And the next message is refused until the day ends. */
	char body[128];
	snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"content\":\"more\"}", sid);
	cfx_http(f, 0, 5, CHAN_M_POST, "/api/chat/message", body);
	cfx_expect_error(f, 0, 429, "limit_tokens_per_day");
}

/* The body of the streamed /v1 part in cfx_got, as text; *more: not the
 * last part. */
static const char *part_text(bool *more)
{
	static char body[64 * 1024];
	assert_int_equal(cfx_got.type, CHAN_REC_RESPONSE);
	const struct chan_response *h = (const void *)cfx_got.p;
	assert_int_equal(h->action, CHAN_RESP_HTTP_STREAM);
	*more = h->flags & CHAN_RESP_MORE;
	const struct chan_field *b = cfx_field(CHAN_F_BODY);
	size_t n = b ? b->len : 0;
	assert_true(n < sizeof(body));
	memcpy(body, b ? (const char *)b->data : "", n);
	body[n] = 0;
	return body;
}

static int count(const char *s, const char *what)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, what)); p++)
		n++;
	return n;
}

static void test_v1_cut(void **state)
{
	struct cfx *f = *state;
	cfx_http(f, 0, 3, CHAN_M_POST, "/v1/chat/completions",
		 "{\"model\":\"synth-1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
		 "\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}");
	bool more;
	assert_true(cfx_next(f, 0));
	assert_string_equal(part_text(&more), "");
	assert_true(more);
	int tokens = 0;
	const char *last = NULL;
	/* Turn by turn until the part that ends the stream: the backend call
	 * is cancelled in that turn, not before. */
	while (more) {
		step(f);
		uint64_t c = cancels(f);
		while (more && cfx_next(f, 0)) {
			last = part_text(&more);
			tokens += count(last, "\"content\":");
		}
		assert_int_equal(c, more ? 0 : 1);
	}
	assert_int_equal(tokens, CUT);
	assert_int_equal(cancels(f), 1);
	assert_int_equal(idmap_count(&f->api.v1_reqs), 0);
	assert_non_null(strstr(last, "\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":11,"));
	assert_non_null(strstr(last, "data: {\"error\":{\"message\":\"the answer reached the tokens_per_day limit"));
	assert_non_null(strstr(last, "\"type\":\"rate_limit_exceeded\",\"param\":null,"
				     "\"code\":\"limit_tokens_per_day\"}}\n\n"));
	assert_null(strstr(last, "finish_reason\":\"stop"));
	size_t n = strlen(last);
	assert_true(n > 14 && strcmp(last + n - 14, "data: [DONE]\n\n") == 0);
	/* Recorded with its tokens up to the cut. */
	cfx_http(f, 1, 1, CHAN_M_GET, "/api/chat/sessions", NULL);
	json_t *j = cfx_expect_resp(f, 1, 200);
	char path[160];
	snprintf(path, sizeof(path), "/api/chat/sessions/%s",
		 json_string_value(json_object_get(json_array_get(json_object_get(j, "sessions"), 0), "id")));
	json_decref(j);
	cfx_http(f, 1, 1, CHAN_M_GET, path, NULL);
	j = cfx_expect_resp(f, 1, 200);
	json_t *m = json_array_get(json_object_get(j, "messages"), 1);
	assert_string_equal(json_string_value(json_object_get(m, "status")), "error");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(m, "usage"), "completion_tokens")),
			 CUT);
	json_decref(j);

	/* A new day; not streamed, nothing was sent: 429 in OpenAI's shape. */
	cfx_clock_s += 86400;
	cfx_http(f, 0, 4, CHAN_M_POST, "/v1/chat/completions",
		 "{\"model\":\"synth-1\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}");
	assert_false(cfx_next(f, 0));
	while (idmap_count(&f->api.v1_reqs))
		step(f);
	assert_int_equal(cancels(f), 2);
	j = cfx_expect_resp(f, 0, 429);
	const struct chan_field *ra = cfx_field(CHAN_F_HEADER);
	assert_non_null(ra);
	assert_memory_equal(ra->data, "Retry-After: ", 13);
	json_t *e = json_object_get(j, "error");
	assert_string_equal(json_string_value(json_object_get(e, "type")), "rate_limit_exceeded");
	assert_string_equal(json_string_value(json_object_get(e, "code")), "limit_tokens_per_day");
	assert_true(json_is_null(json_object_get(e, "param")));
	json_decref(j);
	assert_false(cfx_next(f, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chat_answer_cut, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_v1_cut, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

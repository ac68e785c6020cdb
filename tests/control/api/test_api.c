/*
 * The request handlers end to end over a real channel region (the shared
 * control fixture): requests are built as REQUEST records, authenticated
 * with the fixture user's token, and handed to the loop (or pushed through
 * a d2c ring and a loop turn), and what control wrote is read back from the
 * c2d rings by a dataplane-role attachment of the same region.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "api_cases.h"

/* The event trail as it reached the store (which records it too). */
struct ev_seen {
	char sid[CHAN_ID_LEN];
	char kind[16];
	char detail[128];
};
static struct ev_seen events[64];
static uint32_t nevents;
static struct store_ops shim_ops;

static int (*real_event_add)(struct store *st, const char *sid, const char *kind, const char *detail);

static int shim_event_add(struct store *st, const char *sid, const char *kind, const char *detail)
{
	assert_int_equal(real_event_add(st, sid, kind, detail), 0);
	assert_true(nevents < SLUICE_ARRAY_LEN(events));
	struct ev_seen *e = &events[nevents++];
	snprintf(e->sid, sizeof(e->sid), "%s", sid);
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	snprintf(e->detail, sizeof(e->detail), "%s", detail ? detail : "");
	return 0;
}

static int fx_setup(void **state)
{
	struct cfx *f = cfx_open(NULL, 0);
	shim_ops = *f->st->ops;
	real_event_add = shim_ops.event_add;
	shim_ops.event_add = shim_event_add;
	f->st->ops = &shim_ops;
	nevents = 0;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	cfx_close(*state);
	return 0;
}

static void test_routing_and_models(void **state)
{
	struct cfx *f = *state;
	http(f, 0, CHAN_M_GET, "/api/models", NULL);
	json_t *j = expect_resp(f, 0, 200);
	json_t *m = json_array_get(json_object_get(j, "models"), 0);
	assert_string_equal(json_string_value(json_object_get(m, "id")), "synth-1");
	assert_string_equal(json_string_value(json_object_get(m, "backend")), "syn");
	assert_int_equal(json_integer_value(json_object_get(m, "context_window")), 8192);
	assert_true(json_real_value(json_object_get(m, "cost_out_per_mtok")) == 10.0);
	json_decref(j);

	http(f, 1, CHAN_M_POST, "/api/models", "{}");
	expect_error(f, 1, 405, "method_not_allowed");
	const struct chan_field *h = find_field(CHAN_F_HEADER);
	assert_non_null(h);
	assert_int_equal(h->len, strlen("Allow: GET, HEAD"));
	assert_memory_equal(h->data, "Allow: GET, HEAD", h->len);
	/* HEAD is answered like GET (the dataplane drops the body). */
	http(f, 1, CHAN_M_HEAD, "/api/models", NULL);
	j = expect_resp(f, 1, 200);
	assert_non_null(json_object_get(j, "models"));
	json_decref(j);

	http(f, 0, CHAN_M_PUT, "/api/chat/sessions", NULL);
	expect_error(f, 0, 405, "method_not_allowed");
	h = find_field(CHAN_F_HEADER);
	assert_non_null(h);
	assert_int_equal(h->len, strlen("Allow: GET, HEAD, POST"));
	assert_memory_equal(h->data, "Allow: GET, HEAD, POST", h->len);
	http(f, 0, CHAN_M_POST, "/api/chat/sessions/s_0000000000000000", NULL);
	expect_error(f, 0, 405, "method_not_allowed");
	h = find_field(CHAN_F_HEADER);
	assert_non_null(h);
	assert_int_equal(h->len, strlen("Allow: GET, HEAD, PATCH, DELETE"));
	assert_memory_equal(h->data, "Allow: GET, HEAD, PATCH, DELETE", h->len);
	http(f, 0, CHAN_M_HEAD, "/api/chat/sessions/s_0000000000000000", NULL);
	expect_error(f, 0, 404, "not_found");
	http(f, 0, CHAN_M_HEAD, "/api/chat/message", NULL);
	expect_error(f, 0, 405, "method_not_allowed");
	h = find_field(CHAN_F_HEADER);
	assert_non_null(h);
	assert_int_equal(h->len, strlen("Allow: POST"));
	assert_memory_equal(h->data, "Allow: POST", h->len);

	http(f, 0, CHAN_M_GET, "/api/nope", NULL);
	expect_error(f, 0, 404, "not_found");
	http(f, 0, CHAN_M_GET, "/api/chat/sessions/a/b", NULL);
	expect_error(f, 0, 404, "not_found");
	assert_false(next_rec(f, 0));
	assert_false(next_rec(f, 1));

	/* A request stamped with a previous control's epoch is dropped (the
	 * worker answers it 503 when it sees the new epoch); the current
	 * epoch is served. */
	static _Alignas(8) uint8_t buf[1024];
	uint32_t len = build_req(f, buf, 0, 3, CHAN_REQ_HTTP, CHAN_M_GET, "/api/models", NULL, 0, NULL);
	uint32_t epoch = f->api.cp_epoch;
	f->api.cp_epoch = 9;
	((struct chan_request *)buf)->cp_epoch = 8;
	cpl_dispatch(f->loop, CHAN_REC_REQUEST, buf, len);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));
	assert_int_equal(f->api.stats.stale_requests, 1);
	((struct chan_request *)buf)->cp_epoch = 9;
	cpl_dispatch(f->loop, CHAN_REC_REQUEST, buf, len);
	co_flush(&f->out);
	json_decref(expect_resp(f, 0, 200));
	f->api.cp_epoch = epoch;
}

static void test_sessions(void **state)
{
	struct cfx *f = *state;
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{bad");
	expect_error(f, 0, 400, "invalid_json");
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{}");
	expect_error(f, 0, 400, "invalid_request");
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"model_id\":7}");
	expect_error(f, 0, 400, "invalid_request");
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"model_id\":\"gpt-9\"}");
	expect_error(f, 0, 400, "unknown_model");
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"nobody\"}");
	expect_error(f, 0, 400, "unknown_agent");
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":1}");
	expect_error(f, 0, 400, "invalid_request");
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"coder\",\"model_id\":\"gpt-9\"}");
	expect_error(f, 0, 400, "unknown_model");
	assert_int_equal(nevents, 0);

	/* agent_id alone: the model is the agent's. */
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"coder\"}");
	json_t *c = expect_resp(f, 0, 201);
	assert_string_equal(json_string_value(json_object_get(c, "agent_id")), "coder");
	assert_string_equal(json_string_value(json_object_get(c, "model_id")), "synth-1");
	assert_true(json_is_false(json_object_get(c, "archived")));
	assert_int_equal(nevents, 1);
	assert_string_equal(events[0].kind, "created");
	assert_string_equal(events[0].sid, json_string_value(json_object_get(c, "id")));
	json_decref(c);

	char sid[CHAN_ID_LEN];
	create_session(f, sid);
	char path[128];
	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid);
	http(f, 1, CHAN_M_GET, path, NULL);
	json_t *j = expect_resp(f, 1, 200);
	assert_string_equal(json_string_value(json_object_get(j, "id")), sid);
	assert_string_equal(json_string_value(json_object_get(j, "agent_id")), "assistant");
	assert_string_equal(json_string_value(json_object_get(j, "model_id")), "synth-1");
	assert_string_equal(json_string_value(json_object_get(j, "title")), "T");
	assert_true(json_integer_value(json_object_get(j, "created_at")) > 0);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 0);
	json_decref(j);
	/* HEAD gets GET's answer; on a stream, its head without the stream. */
	http(f, 1, CHAN_M_HEAD, path, NULL);
	j = expect_resp(f, 1, 200);
	assert_string_equal(json_string_value(json_object_get(j, "id")), sid);
	json_decref(j);
	snprintf(path, sizeof(path), "/api/chat/stream/%s", sid);
	http(f, 1, CHAN_M_HEAD, path, NULL);
	struct chan_response hr;
	assert_null(read_resp(f, 1, &hr, NULL));
	assert_int_equal(hr.status, 200);
	assert_int_equal(hr.action, CHAN_RESP_PLAIN);
	const struct chan_field *ct = find_field(CHAN_F_CONTENT_TYPE);
	assert_non_null(ct);
	assert_memory_equal(ct->data, "text/event-stream", ct->len);
	struct chat_session *hs = chat_session_get(&f->chat, sid, strlen(sid));
	assert_non_null(hs);
	assert_int_equal(hs->refs[1], 0);
	http(f, 1, CHAN_M_HEAD, "/api/chat/stream/s_0000000000000000", NULL);
	expect_error(f, 1, 404, "not_found");
	snprintf(path, sizeof(path), "/api/replay/session/%s", sid);
	http(f, 1, CHAN_M_HEAD, path, NULL);
	expect_error(f, 1, 404, "not_found"); /* nothing ended to replay */
	assert_false(next_rec(f, 1));

	http(f, 0, CHAN_M_GET, "/api/chat/sessions/s_0000000000000000", NULL);
	expect_error(f, 0, 404, "not_found");
	http(f, 0, CHAN_M_GET, "/api/chat/stream/s_0000000000000000", NULL);
	expect_error(f, 0, 404, "not_found");
	http(f, 0, CHAN_M_POST, "/api/chat/message", "{\"session_id\":\"s_0000000000000000\",\"content\":\"x\"}");
	expect_error(f, 0, 404, "not_found");
	snprintf(path, sizeof(path), "{\"session_id\":\"%s\",\"content\":\"\"}", sid);
	http(f, 0, CHAN_M_POST, "/api/chat/message", path);
	expect_error(f, 0, 400, "invalid_request");
}

static void test_message_stream_and_resume(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN], path[160];
	create_session(f, sid);
	subscribe_sse(f, 1, 7, sid, NULL, "", 0);
	assert_false(next_rec(f, 1)); /* nothing running: no backlog */

	post_message(f, sid, "hello", mid);
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "queued");
	assert_false(next_rec(f, 0)); /* no subscriber there */

	snprintf(path, sizeof(path), "{\"session_id\":\"%s\",\"content\":\"again\"}", sid);
	http(f, 0, CHAN_M_POST, "/api/chat/message", path);
	expect_error(f, 0, 409, "busy");

	/* Every token is due: they leave as one TOKENS record. */
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	const char *answer = "its \"quoted\" memory stream it's";
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "streaming");
	expect_tokens(f, 1, CHAN_SLOT_ALL, mid, 1, 5, answer);
	expect_usage(f, 1, mid, 1, 5);
	expect_done(f, 1, mid, CHAN_DONE_COMPLETE, 5);
	assert_false(next_rec(f, 1));
	assert_false(next_rec(f, 0));

	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	json_t *j = expect_resp(f, 0, 200);
	json_t *msgs = json_object_get(j, "messages");
	assert_int_equal(json_array_size(msgs), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "hello");
	assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
	json_t *a = json_array_get(msgs, 1);
	assert_string_equal(json_string_value(json_object_get(a, "id")), mid);
	assert_string_equal(json_string_value(json_object_get(a, "role")), "assistant");
	assert_string_equal(json_string_value(json_object_get(a, "content")), answer);
	assert_string_equal(json_string_value(json_object_get(a, "status")), "complete");
	json_decref(j);

	/* Resume after token 2: tokens 3..5 to that conn only, then usage and done. */
	char lei[64];
	snprintf(lei, sizeof(lei), "%s:2", mid);
	subscribe_sse(f, 0, 3, sid, lei, mid, 2);
	expect_tokens(f, 0, 3, mid, 3, 3, " memory stream it's");
	expect_usage(f, 0, mid, 1, 5);
	expect_done(f, 0, mid, CHAN_DONE_COMPLETE, 5);
	assert_false(next_rec(f, 0));

	snprintf(lei, sizeof(lei), "%s:u", mid);
	subscribe_sse(f, 0, 4, sid, lei, mid, 5);
	expect_done(f, 0, mid, CHAN_DONE_COMPLETE, 5);
	assert_false(next_rec(f, 0));

	snprintf(lei, sizeof(lei), "%s:d", mid);
	subscribe_sse(f, 0, 5, sid, lei, mid, 5);
	assert_false(next_rec(f, 0));

	/* A later message reaches every subscriber: 1 conn on worker 1, 3 on worker 0,
	 * one record per worker. */
	char mid2[CHAN_ID_LEN];
	post_message(f, sid, "sluice", mid2);
	expect_status(f, 0, CHAN_SLOT_ALL, mid2, "queued");
	expect_status(f, 1, CHAN_SLOT_ALL, mid2, "queued");
	assert_false(next_rec(f, 0));

	/* Resuming from the first message's done delivers all of the second. */
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	for (uint32_t w = 0; w < 2; w++) {
		expect_status(f, w, CHAN_SLOT_ALL, mid2, "streaming");
		expect_tokens(f, w, CHAN_SLOT_ALL, mid2, 1, 5, "and memory sluice receives and");
		expect_usage(f, w, mid2, 1, 5);
		expect_done(f, w, mid2, CHAN_DONE_COMPLETE, 5);
	}
	snprintf(lei, sizeof(lei), "%s:d", mid);
	subscribe_sse(f, 1, 9, sid, lei, mid, 5);
	expect_status(f, 1, 9, mid2, "queued");
	expect_status(f, 1, 9, mid2, "streaming");
	expect_tokens(f, 1, 9, mid2, 1, 5, "and memory sluice receives and");
	expect_usage(f, 1, mid2, 1, 5);
	expect_done(f, 1, mid2, CHAN_DONE_COMPLETE, 5);
	assert_false(next_rec(f, 1));
}

static void test_cancel_and_running_backlog(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN], path[160];
	create_session(f, sid);
	post_message(f, sid, "hello", mid);
	struct chat_session *s = chat_session_get(&f->chat, sid, strlen(sid));
	assert_non_null(s);
	/* Tokens 1 and 2 are due 200 and 250 ms after acceptance. */
	cpl_run_due(f->loop, s->ans.start_ns + 250000000ull);
	co_flush(&f->out);
	assert_int_equal(s->ans.seq, 2);

	/* Subscribing while it runs: the answer from its first token. */
	subscribe_sse(f, 0, 9, sid, NULL, "", 0);
	expect_status(f, 0, 9, mid, "queued");
	expect_status(f, 0, 9, mid, "streaming");
	expect_tokens(f, 0, 9, mid, 1, 2, "its \"quoted\"");
	assert_false(next_rec(f, 0));

	snprintf(path, sizeof(path), "/api/chat/sessions/%s/cancel", sid);
	http(f, 1, CHAN_M_GET, path, NULL);
	expect_error(f, 1, 405, "method_not_allowed");
	http(f, 1, CHAN_M_POST, path, NULL);
	json_t *j = expect_resp(f, 1, 200);
	assert_true(json_is_true(json_object_get(j, "cancelled")));
	assert_string_equal(json_string_value(json_object_get(j, "message_id")), mid);
	json_decref(j);
	expect_usage(f, 0, mid, 1, 2);
	expect_done(f, 0, mid, CHAN_DONE_CANCELLED, 2);
	assert_false(next_rec(f, 0));

	/* The generator stopped: no more tokens, whatever the time. */
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));

	http(f, 1, CHAN_M_POST, path, NULL);
	expect_error(f, 1, 409, "not_streaming");
	http(f, 1, CHAN_M_POST, "/api/chat/sessions/s_0000000000000000/cancel", NULL);
	expect_error(f, 1, 404, "not_found");
}

static void ws(struct cfx *f, const char *text)
{
	req(f, 1, 11, CHAN_REQ_WS, CHAN_M_OTHER, NULL, text, NULL);
}

static json_t *ws_reply(struct cfx *f, const char *type, uint8_t action)
{
	struct chan_response h;
	json_t *j = read_resp(f, 1, &h, NULL);
	assert_non_null(j);
	assert_int_equal(h.action, action);
	assert_string_equal(json_string_value(json_object_get(j, "type")), type);
	/* "type" is the first member. */
	assert_string_equal(json_object_iter_key(json_object_iter(j)), "type");
	return j;
}

static void expect_ws_error(struct cfx *f, const char *code)
{
	json_t *j = ws_reply(f, "error", CHAN_RESP_PLAIN);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), code);
	json_decref(j);
}

static void test_websocket(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], msg[256];
	create_session(f, sid);

	ws(f, "{not json");
	expect_ws_error(f, "invalid_json");
	ws(f, "{\"type\":\"dance\",\"id\":3}");
	json_t *j = ws_reply(f, "error", CHAN_RESP_PLAIN);
	assert_int_equal(json_integer_value(json_object_get(j, "id")), 3);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "unknown_type");
	json_decref(j);
	ws(f, "{\"type\":\"send\",\"session_id\":\"s_0000000000000000\",\"content\":\"x\"}");
	expect_ws_error(f, "not_found");
	ws(f, "{\"type\":\"subscribe\"}");
	expect_ws_error(f, "invalid_request");

	ws(f, "{\"type\":\"ping\"}");
	json_decref(ws_reply(f, "pong", CHAN_RESP_PLAIN));

	snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"session_id\":\"%s\",\"id\":\"a1\"}", sid);
	ws(f, msg);
	j = ws_reply(f, "response", CHAN_RESP_WS_SUBSCRIBE);
	assert_string_equal(json_string_value(json_object_get(j, "request")), "subscribe");
	assert_string_equal(json_string_value(json_object_get(j, "session_id")), sid);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "a1");
	json_decref(j);

	snprintf(msg, sizeof(msg), "{\"type\":\"send\",\"session_id\":\"%s\",\"content\":\"hello\",\"id\":9}", sid);
	ws(f, msg);
	j = ws_reply(f, "response", CHAN_RESP_PLAIN);
	assert_string_equal(json_string_value(json_object_get(j, "request")), "send");
	assert_int_equal(json_integer_value(json_object_get(j, "id")), 9);
	char mid[CHAN_ID_LEN];
	strcpy(mid, json_string_value(json_object_get(j, "message_id")));
	assert_id(mid, 'm');
	json_decref(j);
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "queued");

	ws(f, msg);
	expect_ws_error(f, "busy");

	snprintf(msg, sizeof(msg), "{\"type\":\"cancel\",\"session_id\":\"%s\"}", sid);
	ws(f, msg);
	expect_usage(f, 1, mid, 1, 0);
	expect_done(f, 1, mid, CHAN_DONE_CANCELLED, 0);
	j = ws_reply(f, "response", CHAN_RESP_PLAIN);
	assert_string_equal(json_string_value(json_object_get(j, "request")), "cancel");
	assert_string_equal(json_string_value(json_object_get(j, "message_id")), mid);
	json_decref(j);
	assert_false(next_rec(f, 1));
}

/* Posts a message and runs its answer to the end (no subscribers). */
static void answered(struct cfx *f, const char *sid, const char *content, char mid[CHAN_ID_LEN])
{
	post_message(f, sid, content, mid);
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));
	assert_false(next_rec(f, 1));
}

static void test_agents_and_events(void **state)
{
	struct cfx *f = *state;
	http(f, 0, CHAN_M_GET, "/api/agents", NULL);
	json_t *j = expect_resp(f, 0, 200);
	json_t *arr = json_object_get(j, "agents");
	assert_int_equal(json_array_size(arr), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "id")), "coder");
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "description")),
			    "Writes code");
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "model")), "synth-1");
	json_decref(j);
	http(f, 0, CHAN_M_DELETE, "/api/agents", NULL);
	expect_error(f, 0, 405, "method_not_allowed");

	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN];
	create_session(f, sid);
	answered(f, sid, "hello", mid);
	static const char *const want[] = { "queued", "streaming", "complete" };
	assert_int_equal(nevents, 4);
	assert_string_equal(events[0].kind, "created");
	for (uint32_t i = 0; i < 3; i++) {
		char d[128];
		snprintf(d, sizeof(d), "{\"message_id\":\"%s\",\"status\":\"%s\"}", mid, want[i]);
		assert_string_equal(events[i + 1].sid, sid);
		assert_string_equal(events[i + 1].kind, "message");
		assert_string_equal(events[i + 1].detail, d);
	}
}

/* Reads a one-record response and copies its raw body into out. */
static void raw_resp(struct cfx *f, uint32_t w, uint16_t status, char *out, size_t cap, const char *ctype)
{
	assert_true(next_rec(f, w));
	assert_int_equal(g.type, CHAN_REC_RESPONSE);
	const struct chan_response *h = (const void *)g.p;
	assert_int_equal(h->status, status);
	assert_int_equal(h->flags & CHAN_RESP_MORE, 0);
	const struct chan_field *b = find_field(CHAN_F_BODY);
	assert_non_null(b);
	assert_true(b->len < cap);
	memcpy(out, b->data, b->len);
	out[b->len] = 0;
	const struct chan_field *ct = find_field(CHAN_F_CONTENT_TYPE);
	assert_non_null(ct);
	assert_int_equal(ct->len, strlen(ctype));
	assert_memory_equal(ct->data, ctype, ct->len);
}

static void test_export(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN], path[160];
	create_session(f, sid);
	answered(f, sid, "hello", mid);
	const char *answer = "its \"quoted\" memory stream it's";
	/* The ended answer, kept for reads, holds its own size, not the
	 * running answer's reservation. */
	struct chat_session *cs = chat_session_get(&f->chat, sid, strlen(sid));
	assert_int_equal(cs->ans.seq, 5);
	assert_int_equal(cs->ans.tok_cap, 5);
	assert_int_equal(cs->ans.text_len, strlen(answer));
	assert_int_equal(cs->ans.text_cap, strlen(answer));

	snprintf(path, sizeof(path), "/api/chat/sessions/%s/export?format=json", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	json_t *j = expect_resp(f, 0, 200);
	assert_string_equal(json_string_value(json_object_get(j, "title")), "T");
	json_t *a = json_array_get(json_object_get(j, "messages"), 1);
	assert_string_equal(json_string_value(json_object_get(a, "content")), answer);
	json_t *u = json_object_get(a, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 5);
	assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 6);
	assert_true(json_is_null(json_object_get(json_array_get(json_object_get(j, "messages"), 0), "usage")));
	json_decref(j);

	static char md[4096];
	snprintf(path, sizeof(path), "/api/chat/sessions/%s/export?format=markdown", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	raw_resp(f, 0, 200, md, sizeof(md), "text/markdown; charset=utf-8");
	assert_true(strncmp(md, "# T\n", 4) == 0);
	assert_non_null(strstr(md, sid));
	char want[512];
	snprintf(want, sizeof(want), "\n## User\n\nhello\n\n## Assistant\n\n%s\n", answer);
	assert_non_null(strstr(md, want));

	/* The next answer grows the fitted buffers again; both answers read
	 * back whole, the first from the store, the second from memory. */
	char mid2[CHAN_ID_LEN];
	post_message(f, sid, "again", mid2);
	/* Reserved for the synthetic model's 5 tokens, not for 64: the fitted
	 * token array already holds them, the text grows to 5 x 16 bytes. */
	assert_int_equal(cs->ans.tok_cap, 5);
	assert_true(cs->ans.text_cap >= 80 && cs->ans.text_cap < 1024);
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));
	assert_false(next_rec(f, 1));
	snprintf(path, sizeof(path), "/api/chat/sessions/%s/export?format=json", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	j = expect_resp(f, 0, 200);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 4);
	a = json_array_get(json_object_get(j, "messages"), 1);
	assert_string_equal(json_string_value(json_object_get(a, "content")), answer);
	char second[256] = "";
	for (uint32_t k = 1; k <= cs->ans.seq; k++) {
		struct store_token t;
		assert_int_equal(chat_token_get(&f->chat, cs, mid2, k, &t), 0);
		strncat(second, t.text, t.len);
	}
	assert_true(strlen(second) > 0);
	assert_int_equal(cs->ans.tok_cap, cs->ans.seq);
	a = json_array_get(json_object_get(j, "messages"), 3);
	assert_string_equal(json_string_value(json_object_get(a, "content")), second);
	json_decref(j);

	snprintf(path, sizeof(path), "/api/chat/sessions/%s/export?format=pdf", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	expect_error(f, 0, 400, "invalid_request");
	http(f, 0, CHAN_M_GET, "/api/chat/sessions/s_0000000000000000/export?format=json", NULL);
	expect_error(f, 0, 404, "not_found");
	snprintf(path, sizeof(path), "/api/chat/sessions/%s/export", sid);
	http(f, 0, CHAN_M_POST, path, NULL);
	expect_error(f, 0, 405, "method_not_allowed");
}

/* Due times of the replayed tokens, computed from the stored offsets. */
static void replay_dues(struct cfx *f, const char *sid, const char *mid, uint64_t start, double speed,
			uint64_t due[6])
{
	for (uint32_t k = 1; k <= 5; k++) {
		struct store_token t;
		struct chat_session *s = chat_session_get(&f->chat, sid, strlen(sid));
		assert_int_equal(chat_token_get(&f->chat, s, mid, k, &t), 0);
		due[k] = start + (uint64_t)((double)t.offset_ns / speed);
	}
}

static void test_replay_sse(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN], path[200];
	create_session(f, sid);
	snprintf(path, sizeof(path), "/api/replay/session/%s", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	expect_error(f, 0, 404, "not_found"); /* nothing recorded yet */

	post_message(f, sid, "hello", mid);
	snprintf(path, sizeof(path), "/api/replay/session/%s?message_id=%s", sid, mid);
	http(f, 0, CHAN_M_GET, path, NULL);
	expect_error(f, 0, 409, "not_ended");
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);

	static const char *const bad[] = { "0", "0.05", "101", "abc", "", "1e400" };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
		snprintf(path, sizeof(path), "/api/replay/session/%s?speed=%s", sid, bad[i]);
		http(f, 0, CHAN_M_GET, path, NULL);
		expect_error(f, 0, 400, "invalid_request");
	}
	snprintf(path, sizeof(path), "/api/replay/session/%s?message_id=m_0000000000000000", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	expect_error(f, 0, 404, "not_found");

	snprintf(path, sizeof(path), "/api/replay/session/%s?speed=4", sid);
	req(f, 0, 6, CHAN_REQ_HTTP, CHAN_M_GET, path, NULL, NULL);
	struct chan_response h;
	assert_null(read_resp(f, 0, &h, NULL));
	assert_int_equal(h.status, 200);
	assert_int_equal(h.action, CHAN_RESP_SSE_SUBSCRIBE);
	assert_string_equal(h.session_id, sid);
	assert_string_equal(h.resume_message_id, "");
	expect_status(f, 0, 6, mid, "queued");
	assert_false(next_rec(f, 0));
	assert_int_equal(idmap_count(&f->chat.sessions), 1);
	struct chan_conn conn = { .worker = 0, .slot = 6, .gen = 1 };
	struct chat_conn *cc = chat_conn_get(&f->chat, conn, false);
	assert_non_null(cc);
	uint64_t due[6];
	replay_dues(f, sid, mid, cc->rp->start_ns, 4, due);

	/* Nothing before the first token's scaled offset. */
	uint64_t next = cpl_run_due(f->loop, due[1] - 1);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));
	assert_int_equal(next, due[1]);
	/* At token 3's time: every token due by then, in one record. */
	uint32_t n = 0;
	while (n < 5 && due[n + 1] <= due[3])
		n++;
	cpl_run_due(f->loop, due[3]);
	co_flush(&f->out);
	expect_status(f, 0, 6, mid, "streaming");
	static const char *const words[] = { "its", " \"quoted\"", " memory", " stream", " it's" };
	char text[128] = "";
	for (uint32_t k = 0; k < n; k++)
		strcat(text, words[k]);
	expect_tokens(f, 0, 6, mid, 1, n, text);
	if (n < 5) {
		cpl_run_due(f->loop, due[5]);
		co_flush(&f->out);
		text[0] = 0;
		for (uint32_t k = n; k < 5; k++)
			strcat(text, words[k]);
		expect_tokens(f, 0, 6, mid, n + 1, 5 - n, text);
	}
	expect_usage(f, 0, mid, 1, 5);
	expect_done(f, 0, mid, CHAN_DONE_COMPLETE, 5);
	assert_false(next_rec(f, 0));
	assert_false(next_rec(f, 1));
	/* The replay conn counts as a subscriber of the session (its
	 * UNSUBSCRIBE will balance it). */
	struct chat_session *s = chat_session_get(&f->chat, sid, strlen(sid));
	assert_int_equal(s->refs[0], 1);

	/* A closed conn's replay stops. */
	req(f, 0, 6, CHAN_REQ_HTTP, CHAN_M_GET, path, NULL, NULL);
	assert_null(read_resp(f, 0, &h, NULL));
	expect_status(f, 0, 6, mid, "queued");
	struct chan_conn_closed cl = { .conn = conn };
	cpl_dispatch(f->loop, CHAN_REC_CONN_CLOSED, &cl, sizeof(cl));
	assert_null(chat_conn_get(&f->chat, conn, false));
	assert_int_equal(cpl_run_due(f->loop, UINT64_MAX - 1), UINT64_MAX);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));
}

static void test_ws_replay_pause_state(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN], msg[256];
	create_session(f, sid);
	answered(f, sid, "hello", mid);

	ws(f, "{\"type\":\"pause\"}");
	expect_ws_error(f, "no_replay");
	snprintf(msg, sizeof(msg), "{\"type\":\"replay\",\"session_id\":\"%s\",\"speed\":500}", sid);
	ws(f, msg);
	expect_ws_error(f, "invalid_request");

	ws(f, "{\"type\":\"get_state\",\"id\":1}");
	json_t *j = ws_reply(f, "state", CHAN_RESP_PLAIN);
	assert_int_equal(json_array_size(json_object_get(j, "subscriptions")), 0);
	assert_true(json_is_null(json_object_get(j, "replay")));
	assert_int_equal(json_integer_value(json_object_get(j, "id")), 1);
	json_decref(j);

	snprintf(msg, sizeof(msg), "{\"type\":\"replay\",\"session_id\":\"%s\",\"speed\":2,\"id\":5}", sid);
	ws(f, msg);
	j = ws_reply(f, "response", CHAN_RESP_WS_SUBSCRIBE);
	assert_string_equal(json_string_value(json_object_get(j, "request")), "replay");
	assert_string_equal(json_string_value(json_object_get(j, "message_id")), mid);
	assert_int_equal(json_integer_value(json_object_get(j, "id")), 5);
	json_decref(j);
	expect_status(f, 1, 11, mid, "queued");

	ws(f, "{\"type\":\"pause\"}");
	j = ws_reply(f, "response", CHAN_RESP_PLAIN);
	assert_true(json_is_true(json_object_get(j, "paused")));
	json_decref(j);
	ws(f, "{\"type\":\"get_state\"}");
	j = ws_reply(f, "state", CHAN_RESP_PLAIN);
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "subscriptions"), 0)), sid);
	json_t *rp = json_object_get(j, "replay");
	assert_true(json_is_true(json_object_get(rp, "paused")));
	assert_int_equal(json_integer_value(json_object_get(rp, "sent")), 0);
	assert_int_equal(json_integer_value(json_object_get(rp, "total")), 5);
	assert_true(json_real_value(json_object_get(rp, "speed")) == 2.0);
	json_decref(j);

	/* Paused: nothing is due however late it is. */
	assert_int_equal(cpl_run_due(f->loop, UINT64_MAX - 1), UINT64_MAX);
	co_flush(&f->out);
	assert_false(next_rec(f, 1));

	ws(f, "{\"type\":\"resume\"}");
	j = ws_reply(f, "response", CHAN_RESP_PLAIN);
	assert_true(json_is_false(json_object_get(j, "paused")));
	json_decref(j);
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	expect_status(f, 1, 11, mid, "streaming");
	expect_tokens(f, 1, 11, mid, 1, 5, "its \"quoted\" memory stream it's");
	expect_usage(f, 1, mid, 1, 5);
	expect_done(f, 1, mid, CHAN_DONE_COMPLETE, 5);
	assert_false(next_rec(f, 1));

	ws(f, "{\"type\":\"get_state\"}");
	j = ws_reply(f, "state", CHAN_RESP_PLAIN);
	assert_true(json_is_null(json_object_get(j, "replay")));
	json_decref(j);
	ws(f, "{\"type\":\"resume\"}");
	expect_ws_error(f, "no_replay");

	/* A new dataplane: the old conns and their replays are gone. */
	snprintf(msg, sizeof(msg), "{\"type\":\"replay\",\"session_id\":\"%s\"}", sid);
	ws(f, msg);
	json_decref(ws_reply(f, "response", CHAN_RESP_WS_SUBSCRIBE));
	expect_status(f, 1, 11, mid, "queued");
	cfx_dataplane_restart(f);
	struct chan_conn conn = { .worker = 1, .slot = 11, .gen = 1 };
	assert_null(chat_conn_get(&f->chat, conn, false));
	assert_int_equal(connmap_count(&f->chat.conns), 0);
	assert_int_equal(cpl_run_due(f->loop, UINT64_MAX - 1), UINT64_MAX);
	co_flush(&f->out);
	assert_false(next_rec(f, 1));
}

/* GET /api/chat/sessions?query: the ids of one page, next_cursor into cursor. */
static size_t list_page(struct cfx *f, const char *query, char ids[][CHAN_ID_LEN], size_t cap,
			char *cursor, size_t ccap)
{
	char path[512];
	snprintf(path, sizeof(path), "/api/chat/sessions?%s", query);
	http(f, 0, CHAN_M_GET, path, NULL);
	json_t *j = expect_resp(f, 0, 200);
	json_t *arr = json_object_get(j, "sessions");
	size_t n = json_array_size(arr);
	assert_true(n <= cap);
	for (size_t i = 0; i < n; i++)
		strcpy(ids[i], json_string_value(json_object_get(json_array_get(arr, i), "id")));
	json_t *nc = json_object_get(j, "next_cursor");
	assert_true(json_is_null(nc) || json_is_string(nc));
	snprintf(cursor, ccap, "%s", json_is_string(nc) ? json_string_value(nc) : "");
	json_decref(j);
	return n;
}

static void test_list_patch_delete(void **state)
{
	struct cfx *f = *state;
	char sid[3][CHAN_ID_LEN], ids[8][CHAN_ID_LEN], cursor[256], q[400], path[160];
	for (int i = 0; i < 3; i++)
		create_session(f, sid[i]);
	size_t n = list_page(f, "limit=2", ids, 8, cursor, sizeof(cursor));
	assert_int_equal(n, 2);
	assert_true(cursor[0] != 0);
	snprintf(q, sizeof(q), "limit=2&cursor=%s", cursor);
	n += list_page(f, q, ids + 2, 6, cursor, sizeof(cursor));
	assert_int_equal(n, 3);
	assert_string_equal(cursor, "");
	for (int i = 0; i < 3; i++) {
		int seen = 0;
		for (size_t k = 0; k < n; k++)
			seen += strcmp(ids[k], sid[i]) == 0;
		assert_int_equal(seen, 1);
	}
	static const char *const bad[] = { "limit=0", "limit=101", "limit=2x", "archived=no", "q=%zz" };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
		snprintf(path, sizeof(path), "/api/chat/sessions?%s", bad[i]);
		http(f, 0, CHAN_M_GET, path, NULL);
		expect_error(f, 0, 400, "invalid_request");
	}

	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid[1]);
	http(f, 0, CHAN_M_PATCH, path, "{\"title\":\"Needle in a stack\",\"archived\":true}");
	json_t *j = expect_resp(f, 0, 200);
	assert_string_equal(json_string_value(json_object_get(j, "title")), "Needle in a stack");
	assert_true(json_is_true(json_object_get(j, "archived")));
	json_decref(j);
	http(f, 0, CHAN_M_PATCH, path, "{\"archived\":1}");
	expect_error(f, 0, 400, "invalid_request");
	http(f, 0, CHAN_M_PATCH, path, "{\"title\":5}");
	expect_error(f, 0, 400, "invalid_request");
	assert_string_equal(events[nevents - 1].kind, "patched");

	assert_int_equal(list_page(f, "", ids, 8, cursor, sizeof(cursor)), 2);
	assert_int_equal(list_page(f, "archived=true", ids, 8, cursor, sizeof(cursor)), 1);
	assert_string_equal(ids[0], sid[1]);
	assert_int_equal(list_page(f, "archived=any&q=NEEDLE+in", ids, 8, cursor, sizeof(cursor)), 1);
	assert_string_equal(ids[0], sid[1]);
	assert_int_equal(list_page(f, "archived=any&q=hay", ids, 8, cursor, sizeof(cursor)), 0);

	/* Delete while an answer runs: its subscribers see it cancelled. */
	char mid[CHAN_ID_LEN];
	subscribe_sse(f, 1, 7, sid[2], NULL, "", 0);
	post_message(f, sid[2], "hello", mid);
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "queued");
	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid[2]);
	http(f, 0, CHAN_M_DELETE, path, NULL);
	expect_usage(f, 1, mid, 1, 0);
	expect_done(f, 1, mid, CHAN_DONE_CANCELLED, 0);
	struct chan_response h;
	assert_null(read_resp(f, 0, &h, NULL));
	assert_int_equal(h.status, 204);
	assert_string_equal(events[nevents - 1].kind, "deleted");
	http(f, 0, CHAN_M_GET, path, NULL);
	expect_error(f, 0, 404, "not_found");
	http(f, 0, CHAN_M_DELETE, path, NULL);
	expect_error(f, 0, 404, "not_found");
	assert_int_equal(list_page(f, "archived=any", ids, 8, cursor, sizeof(cursor)), 2);
	assert_int_equal(cpl_run_due(f->loop, UINT64_MAX - 1), UINT64_MAX);
	co_flush(&f->out);
	assert_false(next_rec(f, 0));
	assert_false(next_rec(f, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_routing_and_models, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sessions, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_message_stream_and_resume, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_and_running_backlog, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_websocket, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_agents_and_events, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_export, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_list_patch_delete, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_replay_sse, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ws_replay_pause_state, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

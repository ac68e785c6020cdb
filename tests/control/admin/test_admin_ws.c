/*
 * The dashboard in control (admin_ws.c, admin_metrics.c) over the shared
 * fixture with its event bus: /ws/admin upgrades (admin role, else 403
 * before any 101), the hello and replies, events pushed as BROADCAST
 * records to subscribed sockets only, snapshots on the loop timer at the
 * client's period, heartbeats, the role re-check (1008 forbidden once the
 * user is no admin any more, even without a revocation), CONN_CLOSED, and
 * the /api/admin routes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../fixture.h"

#define W 1u /* the worker the admin socket is on */
#define SLOT 7u

static uint64_t vclock;

static int fx_setup(void **state)
{
	struct sluice_conf c;
	vclock = 0;
	cfx_conf_default(&c);
	c.dash_heartbeat_ms = 1000;
	c.dash_max_pending = 8192;
	*state = cfx_open(&c, CFX_DASH);
	return 0;
}

static int fx_teardown(void **state)
{
	cfx_close(*state);
	return 0;
}

static const struct chan_conn conn = { .worker = W, .slot = SLOT, .gen = 3 };

static void put_done(void *arg, int err)
{
	*(int *)arg = err;
}

/* Writes user `name` with `role` straight into the store (as cfx_add_user). */
static void put_role(struct cfx *f, const char *name, uint8_t role, int create)
{
	int err = 1;
	struct store_user u;
	memset(&u, 0, sizeof(u));
	if (!create)
		assert_int_equal(store_user_get(f->st, name, &u), 0);
	snprintf(u.name, sizeof(u.name), "%s", name);
	strcpy(u.pwhash, "not-a-hash");
	u.role = role;
	u.created_at = f->auth.now(f->auth.now_arg);
	assert_int_equal(store_user_put(f->st, &u, create, put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
}

static void ws_open(struct cfx *f, const char *token)
{
	char authz[128];
	snprintf(authz, sizeof(authz), "Bearer %s", token);
	const struct cfx_field fl[] = { { CHAN_F_PATH, "/ws/admin", 0 }, { CHAN_F_AUTHORIZATION, authz, 0 } };
	uint32_t len = cfx_build(f, conn, CHAN_REQ_WS_OPEN, CHAN_M_GET, fl, 2);
	cfx_dispatch(f, CHAN_REC_REQUEST, cfx_reqbuf(), len);
}

static void ws_msg(struct cfx *f, const char *token, const char *text)
{
	char authz[128];
	snprintf(authz, sizeof(authz), "Bearer %s", token);
	const struct cfx_field fl[] = { { CHAN_F_PATH, "/ws/admin", 0 }, { CHAN_F_BODY, text, 0 },
					{ CHAN_F_AUTHORIZATION, authz, 0 } };
	uint32_t len = cfx_build(f, conn, CHAN_REQ_WS, CHAN_M_OTHER, fl, 3);
	cfx_dispatch(f, CHAN_REC_REQUEST, cfx_reqbuf(), len);
}

/* The next record on W is a BROADCAST to conn: its text, parsed. */
static json_t *expect_push(struct cfx *f)
{
	assert_true(cfx_next(f, W));
	assert_int_equal(cfx_got.type, CHAN_REC_BROADCAST);
	const struct chan_broadcast *b = (const void *)cfx_got.p;
	assert_int_equal(b->conn.slot, SLOT);
	assert_int_equal(b->max_pending, 8192);
	const uint8_t *p = cfx_got.p + sizeof(*b);
	bool bad = false;
	const struct chan_field *fl = chan_field_next(&p, cfx_got.p + cfx_got.len, &bad);
	assert_non_null(fl);
	assert_int_equal(fl->tag, CHAN_F_BODY);
	json_t *j = json_loadb((const char *)fl->data, fl->len, 0, NULL);
	assert_non_null(j);
	return j;
}

static const char *type_of(json_t *j)
{
	return json_string_value(json_object_get(j, "type"));
}

/* Runs the dashboard's timer as if `ms` more had passed: a virtual clock
 * that only moves on (the loop acts at the time it was last run at). */
static void later(struct cfx *f, uint64_t ms)
{
	uint64_t now = sluice_now_ns();
	if (vclock < now)
		vclock = now;
	vclock += ms * 1000000u;
	cpl_run_due(f->loop, vclock);
	co_flush(&f->out);
}

static void test_upgrade_roles(void **state)
{
	struct cfx *f = *state;
	/* The fixture's user "u" is a plain user. */
	ws_open(f, f->token);
	cfx_expect_error(f, W, 403, "forbidden");
	assert_false(cfx_next(f, W));
	put_role(f, "boss", STORE_USER_ROLE_ADMIN, 1);
	char tok[AUTH_TOKEN_LEN + 1];
	cfx_login(f, "boss", tok);
	ws_open(f, tok);
	assert_true(cfx_next(f, W));
	assert_int_equal(cfx_got.type, CHAN_REC_RESPONSE);
	assert_int_equal(((const struct chan_response *)cfx_got.p)->action, CHAN_RESP_WS_ACCEPT);
	json_t *h = expect_push(f);
	assert_string_equal(type_of(h), "hello");
	assert_string_equal(json_string_value(json_object_get(h, "user")), "boss");
	assert_int_equal(json_integer_value(json_object_get(h, "heartbeat_ms")), 1000);
	json_decref(h);
	/* The fallback routes: admin only. */
	cfx_http(f, 0, 1, CHAN_M_GET, "/api/admin/metrics", NULL);
	cfx_expect_error(f, 0, 403, "forbidden");
	cfx_http_as(f, 0, 1, CHAN_M_GET, "/api/admin/metrics", NULL, tok);
	json_t *m = cfx_expect_resp(f, 0, 200);
	assert_string_equal(type_of(m), "metrics");
	assert_int_equal(json_array_size(json_object_get(m, "workers")), CFX_WORKERS);
	assert_non_null(json_object_get(m, "backends"));
	json_decref(m);
	cfx_http_as(f, 0, 1, CHAN_M_DELETE, "/api/admin/metrics", NULL, tok);
	cfx_expect_error(f, 0, 405, "method_not_allowed");
	cfx_http_as(f, 0, 1, CHAN_M_GET, "/api/admin/nothing", NULL, tok);
	cfx_expect_error(f, 0, 404, "not_found");
}

static void test_topics_events_and_role_lost(void **state)
{
	struct cfx *f = *state;
	put_role(f, "boss", STORE_USER_ROLE_ADMIN, 1);
	char tok[AUTH_TOKEN_LEN + 1];
	cfx_login(f, "boss", tok);
	ws_open(f, tok);
	assert_true(cfx_next(f, W));
	json_decref(expect_push(f)); /* hello */
	/* Nothing is pushed before a subscription. */
	cfx_http(f, 0, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}");
	json_decref(cfx_expect_resp(f, 0, 201));
	assert_false(cfx_next(f, W));

	ws_msg(f, tok, "{\"type\":\"subscribe\",\"topics\":[\"session_events\",\"heartbeat\"],\"id\":5}");
	json_t *r = cfx_expect_resp(f, W, 200);
	assert_string_equal(type_of(r), "subscribed");
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 5);
	assert_int_equal(json_array_size(json_object_get(r, "topics")), 2);
	json_decref(r);
	cfx_http(f, 0, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}");
	json_t *s = cfx_expect_resp(f, 0, 201);
	json_t *e = expect_push(f);
	assert_string_equal(type_of(e), "session_event");
	assert_string_equal(json_string_value(json_object_get(e, "kind")), "created");
	assert_string_equal(json_string_value(json_object_get(e, "user")), "u");
	assert_string_equal(json_string_value(json_object_get(e, "session_id")),
			    json_string_value(json_object_get(s, "id")));
	json_t *ch = json_object_get(e, "change");
	assert_string_equal(json_string_value(json_object_get(ch, "what")), "conversations");
	assert_int_equal(json_integer_value(json_object_get(ch, "to")), 2);
	assert_int_equal(json_integer_value(json_object_get(ch, "from")), 1);
	json_decref(e);
	json_decref(s);

	/* A heartbeat after heartbeat_ms, metrics only when asked for. */
	later(f, 1100);
	json_t *hb = expect_push(f);
	assert_string_equal(type_of(hb), "heartbeat");
	json_decref(hb);
	assert_false(cfx_next(f, W));
	ws_msg(f, tok, "{\"type\":\"subscribe\",\"topics\":[\"metrics\"],\"interval_s\":2}");
	json_decref(cfx_expect_resp(f, W, 200));
	later(f, 1);
	json_t *m = expect_push(f);
	assert_string_equal(type_of(m), "metrics");
	json_decref(m);
	later(f, 1000); /* the period is 2 s */
	assert_false(cfx_next(f, W));
	later(f, 1000);
	m = expect_push(f);
	assert_string_equal(type_of(m), "metrics");
	json_decref(m);
	ws_msg(f, tok, "{\"type\":\"subscribe\",\"interval_s\":0.2}");
	json_t *err = cfx_expect_resp(f, W, 400);
	assert_string_equal(type_of(err), "error");
	json_decref(err);

	/* The user stays but loses the admin role (no revocation): at the next
	 * tick the socket is closed 1008 forbidden, and nothing more comes. */
	put_role(f, "boss", STORE_USER_ROLE_USER, 0);
	later(f, 2000);
	assert_true(cfx_next(f, W));
	assert_int_equal(cfx_got.type, CHAN_REC_KICK);
	const struct chan_kick *k = (const void *)cfx_got.p;
	assert_int_equal(k->conn.slot, SLOT);
	assert_int_equal(k->code, 1008);
	assert_string_equal(k->reason_code, "forbidden");
	later(f, 5000);
	cfx_http(f, 0, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}");
	json_decref(cfx_expect_resp(f, 0, 201));
	assert_false(cfx_next(f, W));
}

static void test_conn_closed(void **state)
{
	struct cfx *f = *state;
	put_role(f, "boss", STORE_USER_ROLE_ADMIN, 1);
	char tok[AUTH_TOKEN_LEN + 1];
	cfx_login(f, "boss", tok);
	ws_open(f, tok);
	assert_true(cfx_next(f, W));
	json_decref(expect_push(f));
	ws_msg(f, tok, "{\"type\":\"subscribe\"}");
	json_decref(cfx_expect_resp(f, W, 200));
	later(f, 1);
	json_decref(expect_push(f)); /* the first snapshot */
	struct chan_conn_closed cc = { .conn = conn };
	cfx_dispatch(f, CHAN_REC_CONN_CLOSED, &cc, sizeof(cc));
	later(f, 60000);
	cfx_http(f, 0, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}");
	json_decref(cfx_expect_resp(f, 0, 201));
	assert_false(cfx_next(f, W));
	/* The event was kept for the fallback all the same, its strings copied
	 * from the bus (which owned them only while publishing) and its count
	 * change read when it happened. */
	cfx_http_as(f, 0, 1, CHAN_M_GET, "/api/admin/events", NULL, tok);
	json_t *ev = cfx_expect_resp(f, 0, 200);
	json_t *arr = json_object_get(ev, "events");
	assert_true(json_array_size(arr) >= 1);
	json_t *last = json_array_get(arr, json_array_size(arr) - 1);
	assert_string_equal(json_string_value(json_object_get(last, "kind")), "created");
	assert_string_equal(json_string_value(json_object_get(last, "user")), "u"); /* cfx_http's user */
	const char *sid = json_string_value(json_object_get(last, "session_id"));
	assert_non_null(sid);
	assert_int_equal(strncmp(sid, "s_", 2), 0);
	json_t *chg = json_object_get(last, "change");
	assert_string_equal(json_string_value(json_object_get(chg, "what")), "conversations");
	assert_int_equal(json_integer_value(json_object_get(chg, "to")),
			 json_integer_value(json_object_get(chg, "from")) + 1);
	assert_int_equal(json_integer_value(json_object_get(last, "seq")),
			 json_integer_value(json_object_get(ev, "seq")));
	json_decref(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_upgrade_roles, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_topics_events_and_role_lost, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_conn_closed, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

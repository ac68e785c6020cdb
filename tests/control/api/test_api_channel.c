/*
 * The api under channel pressure (the shared control fixture): the
 * subscription table's counts per worker, a response body split over
 * records, a full c2d ring's backlog and the kicks of subscribers dropped
 * when their worker's ring stayed full, and what one loop turn does.
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

#include "api_cases.h"

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

static void sub_rec(struct cfx *f, uint16_t type, uint16_t worker, const char *sid)
{
	struct chan_sub s;
	memset(&s, 0, sizeof(s));
	s.conn.worker = worker;
	s.conn.slot = 1;
	strcpy(s.session_id, sid);
	cpl_dispatch(f->loop, type, &s, sizeof(s));
}

static void test_subscription_table(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN];
	create_session(f, sid);
	sub_rec(f, CHAN_REC_SUBSCRIBE, 1, sid);
	sub_rec(f, CHAN_REC_SUBSCRIBE, 1, sid);
	sub_rec(f, CHAN_REC_SUBSCRIBE, 1, "s_0000000000000000"); /* unknown: ignored */
	post_message(f, sid, "hello", mid);
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "queued");
	assert_false(next_rec(f, 1)); /* one record per worker, not per conn */

	sub_rec(f, CHAN_REC_UNSUBSCRIBE, 1, sid);
	struct chat_session *s = chat_session_get(&f->chat, sid, strlen(sid));
	cpl_run_due(f->loop, s->ans.start_ns + 200000000ull);
	co_flush(&f->out);
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "streaming");
	expect_tokens(f, 1, CHAN_SLOT_ALL, mid, 1, 1, "its");

	/* A dataplane restart drops every subscription. */
	cfx_dataplane_restart(f);
	cpl_run_due(f->loop, UINT64_MAX - 1);
	co_flush(&f->out);
	assert_false(next_rec(f, 1));

	/* A malformed record is refused, not trusted. */
	struct chan_sub bad;
	memset(&bad, 'x', sizeof(bad));
	uint64_t before = cpl_stats(f->loop)->invalid_records;
	cpl_dispatch(f->loop, CHAN_REC_SUBSCRIBE, &bad, sizeof(bad));
	cpl_dispatch(f->loop, CHAN_REC_REQUEST, &bad, 4);
	assert_int_equal(cpl_stats(f->loop)->invalid_records, before + 2);
}

static void test_large_body_is_split(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN];
	create_session(f, sid);
	static char big[40001];
	memset(big, 'a', 40000);
	big[40000] = 0;
	post_message(f, sid, big, mid);
	char path[128];
	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid);
	http(f, 0, CHAN_M_GET, path, NULL);
	struct chan_response h;
	int parts = 0;
	json_t *j = read_resp(f, 0, &h, &parts);
	assert_int_equal(h.status, 200);
	assert_true(parts >= 3); /* 40 KB through records of at most 16 KB */
	json_t *m0 = json_array_get(json_object_get(j, "messages"), 0);
	assert_int_equal(strlen(json_string_value(json_object_get(m0, "content"))), 40000);
	json_decref(j);
}

static void test_ring_full_backlog(void **state)
{
	struct cfx *f = *state;
	struct chan_conn c = { .worker = 0, .slot = 1 };
	char mid[CHAN_ID_LEN];
	uint32_t sent = 0;
	/* Nobody reads worker 0's ring: fill it, then queue behind it. */
	while (f->out.w[0].deferred == 0) {
		snprintf(mid, sizeof(mid), "m_%u", sent++);
		assert_true(co_status(&f->out, c, "s_x", mid, "queued"));
	}
	for (int i = 0; i < 20; i++) {
		snprintf(mid, sizeof(mid), "m_%u", sent++);
		assert_true(co_status(&f->out, c, "s_x", mid, "queued"));
	}
	co_flush(&f->out);
	assert_true(co_backlog_bytes(&f->out, 0) > 0);
	/* The dataplane catches up: everything arrives once, in order. */
	uint32_t seen = 0;
	while (seen < sent) {
		bool any = false;
		while (next_rec(f, 0)) {
			const struct chan_status *s = (const void *)g.p;
			snprintf(mid, sizeof(mid), "m_%u", seen++);
			assert_string_equal(s->message_id, mid);
			any = true;
		}
		assert_true(any);
		co_flush(&f->out);
	}
	assert_int_equal(co_backlog_bytes(&f->out, 0), 0);
	assert_false(next_rec(f, 0));

	/* Ring and backlog full: the record is refused and counted. */
	uint64_t dropped = f->out.w[0].dropped;
	while (co_status(&f->out, c, "s_x", "m_y", "queued"))
		;
	assert_int_equal(f->out.w[0].dropped, dropped + 1);
	assert_true(co_backlog_bytes(&f->out, 0) > 0);
	co_reset(&f->out);
	assert_int_equal(co_backlog_bytes(&f->out, 0), 0);
}

/* A worker whose ring and backlog stay full loses its subscriptions to a
 * session; once the ring has room its clients get KICK "overloaded" (1013),
 * after every record sent before the drop, and the count stays right for a
 * conn that subscribes meanwhile. */
static void test_ring_full_kicks_dropped_subscribers(void **state)
{
	struct cfx *f = *state;
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN], omid[CHAN_ID_LEN];
	create_session(f, sid);
	subscribe_sse(f, 1, 7, sid, NULL, "", 0);
	post_message(f, sid, "hello", mid);
	expect_status(f, 1, CHAN_SLOT_ALL, mid, "queued");
	assert_false(next_rec(f, 1));
	struct chat_session *s = chat_session_get(&f->chat, sid, strlen(sid));
	assert_non_null(s);

	/* Nobody reads worker 1: fill its ring and its backlog. */
	struct chan_conn other = { .worker = 1, .slot = 3 };
	uint32_t filler = 0;
	for (;;) {
		snprintf(omid, sizeof(omid), "m_f%u", filler);
		if (!co_status(&f->out, other, "s_other", omid, "queued"))
			break;
		filler++;
	}
	uint64_t drops = f->chat.stats.sub_drops;
	cpl_run_due(f->loop, s->ans.start_ns + 200000000ull);
	assert_int_equal(f->chat.stats.sub_drops, drops + 1);
	assert_int_equal(s->refs[1], 0);
	/* Still full: the KICK waits (not counted as a dropped record), and
	 * the loop is asked to come back soon. */
	uint64_t dropped = f->out.w[1].dropped;
	uint64_t now = s->ans.start_ns + 200000000ull;
	uint64_t next = cpl_run_due(f->loop, now);
	assert_true(next <= now + 1000000ull);
	assert_int_equal(f->chat.stats.overload_kicks, 0);
	assert_int_equal(f->out.w[1].dropped, dropped);

	/* A conn subscribing meanwhile is counted apart from the dropped one. */
	sub_rec(f, CHAN_REC_SUBSCRIBE, 1, sid);
	assert_int_equal(s->refs[1], 1);

	/* The dataplane catches up: the fillers arrive, then the KICK. */
	uint32_t seen = 0;
	bool kicked = false;
	for (int round = 0; round < 40 && !kicked; round++) {
		/* Each round is the loop coming back a retry period later. */
		cpl_run_due(f->loop, now + (uint64_t)round * CHAT_KICK_RETRY_NS);
		co_flush(&f->out);
		while (next_rec(f, 1)) {
			assert_false(kicked);
			if (g.type == CHAN_REC_STATUS) {
				const struct chan_status *st = (const void *)g.p;
				snprintf(omid, sizeof(omid), "m_f%u", seen++);
				assert_string_equal(st->message_id, omid);
				continue;
			}
			assert_int_equal(g.type, CHAN_REC_KICK);
			const struct chan_kick *k = (const void *)g.p;
			assert_int_equal(k->conn.worker, 1);
			assert_int_equal(k->conn.slot, CHAN_SLOT_ALL);
			assert_string_equal(k->session_id, sid);
			assert_int_equal(k->code, 1013);
			assert_string_equal(k->reason_code, "overloaded");
			assert_string_equal(k->reason,
					    "stream dropped: the appliance is overloaded; resume with Last-Event-ID");
			kicked = true;
		}
	}
	assert_true(kicked);
	assert_int_equal(seen, filler);
	assert_int_equal(f->chat.stats.overload_kicks, 1);
	assert_false(next_rec(f, 1));
	/* Sent once. */
	cpl_run_due(f->loop, s->ans.start_ns + 200000000ull);
	co_flush(&f->out);
	assert_false(next_rec(f, 1));

	/* The kicked conn's UNSUBSCRIBE does not take the new subscriber's
	 * count: the next tokens still reach worker 1. */
	struct chan_sub u;
	memset(&u, 0, sizeof(u));
	u.conn.worker = 1;
	u.conn.slot = 7;
	u.conn.gen = 1;
	strcpy(u.session_id, sid);
	cpl_dispatch(f->loop, CHAN_REC_UNSUBSCRIBE, &u, sizeof(u));
	assert_int_equal(s->refs[1], 1);
	cpl_run_due(f->loop, s->ans.start_ns + 250000000ull);
	co_flush(&f->out);
	expect_tokens(f, 1, CHAN_SLOT_ALL, mid, 2, 1, " \"quoted\"");
}

static void test_loop_turn(void **state)
{
	struct cfx *f = *state;
	static _Alignas(8) uint8_t buf[4096];
	uint32_t len = build_req(f, buf, 1, 2, CHAN_REQ_HTTP, CHAN_M_GET, "/api/models", NULL, 0, NULL);
	struct chan_prod *p = chan_producer(f->dp, 1);
	void *dst = chan_reserve(p, CHAN_REC_REQUEST, len);
	assert_non_null(dst);
	memcpy(dst, buf, len);
	chan_commit(p, len);
	chan_publish(p);
	assert_int_equal(cpl_turn(f->loop, false), 1);
	json_t *j = expect_resp(f, 1, 200);
	assert_non_null(json_object_get(j, "models"));
	json_decref(j);
	/* The turn stamped control's heartbeat. */
	assert_true(chan_peer_alive(f->dp, sluice_now_ns(), 1000000000ull));
	assert_int_equal(cpl_turn(f->loop, false), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_subscription_table, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_large_body_is_split, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ring_full_backlog, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ring_full_kicks_dropped_subscribers, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_loop_turn, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The limits layer over a real LMDB store (the control fixture): values
 * from the role or an override, fixed windows that roll over on a test
 * clock, a key's limits on top of its user's, undo of refused writes,
 * stored text and conversations read from the store on first use, and the
 * daily token budget that cuts a running answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../fixture.h"
#include "limits/limits.h"

static int fx_setup(void **state)
{
	struct sluice_conf c;
	cfx_conf_default(&c);
	uint32_t *v = c.role_limits[CONF_ROLE_USER].v;
	memset(v, 0, sizeof(c.role_limits[CONF_ROLE_USER].v));
	v[CONF_LIM_MESSAGES_PER_MIN] = 2;
	v[CONF_LIM_CONCURRENT] = 3;
	v[CONF_LIM_TOKENS_PER_MIN] = 100;
	v[CONF_LIM_TOKENS_PER_DAY] = 250;
	v[CONF_LIM_STORED_MB] = 1;
	v[CONF_LIM_SESSIONS] = 2;
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

static void put_done(void *arg, int err)
{
	*(int *)arg = err;
}

/* Messages per minute and answers at once: refused without counting,
 * counted again in the next minute; an ended answer frees its place. */
static void test_rates_and_windows(void **state)
{
	struct cfx *f = *state;
	struct limits *l = &f->limits;
	struct lim_who w = { .user = "ann", .uid = 1, .role = STORE_USER_ROLE_USER };
	struct lim_refusal why;
	assert_true(lim_message_begin(l, &w, 10, &why));
	assert_true(lim_message_begin(l, &w, 10, &why));
	assert_false(lim_message_begin(l, &w, 10, &why));
	assert_int_equal(why.limit, CONF_LIM_MESSAGES_PER_MIN);
	assert_false(why.by_key);
	assert_int_equal(why.value, 2);
	assert_int_equal(why.retry_after, 30);
	assert_int_equal(l->stats.refused[CONF_LIM_MESSAGES_PER_MIN], 1);
	cfx_clock_s += 30;
	assert_true(lim_message_begin(l, &w, 10, &why));
	/* Three answers run now: the concurrency limit. */
	assert_false(lim_message_begin(l, &w, 10, &why));
	assert_int_equal(why.limit, CONF_LIM_CONCURRENT);
	assert_int_equal(why.retry_after, 5);
	lim_answer_end(l, "ann", NULL, 0);
	assert_true(lim_message_begin(l, &w, 10, &why));
	assert_false(lim_message_begin(l, &w, 10, &why));
	assert_int_equal(why.limit, CONF_LIM_MESSAGES_PER_MIN);
	/* A message that was not stored after all gives its answer's place
	 * back (the minute still counts it: it was tried). */
	cfx_clock_s += 60;
	lim_message_failed(l, "ann", NULL, 10);
	assert_true(lim_message_begin(l, &w, 10, &why));
	/* Another user is not affected. */
	struct lim_who b = { .user = "bea", .uid = 2, .role = STORE_USER_ROLE_USER };
	assert_true(lim_message_begin(l, &b, 10, &why));
}

/* A backend's usage report corrects the tokens counted from its events, up
 * (it billed more than it streamed as events) or down, never below 0. */
static void test_backend_count(void **state)
{
	struct cfx *f = *state;
	struct limits *l = &f->limits;
	struct lim_who w = { .user = "eve", .uid = 5, .role = STORE_USER_ROLE_USER };
	struct lim_refusal why;
	assert_true(lim_message_begin(l, &w, 1, &why));
	lim_answer_tokens(l, "eve", NULL, 3, 12, NULL);
	lim_answer_end(l, "eve", NULL, 97);
	assert_false(lim_message_begin(l, &w, 1, &why));
	assert_int_equal(why.limit, CONF_LIM_TOKENS_PER_MIN);
	cfx_clock_s += 60;
	assert_true(lim_message_begin(l, &w, 1, &why));
	lim_answer_tokens(l, "eve", NULL, 120, 12, NULL);
	lim_answer_end(l, "eve", NULL, -30);
	assert_true(lim_message_begin(l, &w, 1, &why));
	lim_answer_end(l, "eve", NULL, -1000);
	struct lim_view v;
	assert_int_equal(lim_view(l, "u:eve", STORE_USER_ROLE_USER, 5, &v), 0);
	assert_int_equal(v.used[CONF_LIM_TOKENS_PER_MIN], 0);
	assert_int_equal(v.used[CONF_LIM_TOKENS_PER_DAY], 0);
}

/* Tokens per minute and per day; admins have no limits unless configured. */
static void test_tokens(void **state)
{
	struct cfx *f = *state;
	struct limits *l = &f->limits;
	struct lim_who w = { .user = "cid", .uid = 3, .role = STORE_USER_ROLE_USER };
	struct lim_refusal why;
	for (int m = 0; m < 3; m++) {
		cfx_clock_s += 60;
		assert_true(lim_message_begin(l, &w, 1, &why));
		lim_answer_tokens(l, "cid", NULL, 100, 400, NULL);
		lim_answer_end(l, "cid", NULL, 0);
		if (m < 2) {
			assert_false(lim_message_begin(l, &w, 1, &why));
			assert_int_equal(why.limit, CONF_LIM_TOKENS_PER_MIN);
			assert_true(why.retry_after >= 1 && why.retry_after <= 60);
		}
	}
	cfx_clock_s += 60;
	assert_false(lim_message_begin(l, &w, 1, &why));
	assert_int_equal(why.limit, CONF_LIM_TOKENS_PER_DAY);
	assert_true(why.retry_after > 60 && why.retry_after <= 86400);
	cfx_clock_s += 86400;
	assert_true(lim_message_begin(l, &w, 1, &why));
	struct lim_who adm = { .user = "root", .uid = 4, .role = STORE_USER_ROLE_ADMIN };
	for (int i = 0; i < 10; i++)
		assert_true(lim_message_begin(l, &adm, 1, &why));
}

/* Overrides: a user's replaces the role's value by value; a key has its
 * own on top of its user's, and the user's still holds for the key. */
static void test_overrides_and_keys(void **state)
{
	struct cfx *f = *state;
	struct limits *l = &f->limits;
	struct store_limits o;
	int err = 1;
	memset(&o, 0, sizeof(o));
	for (int i = 0; i < CONF_LIM_N; i++)
		o.v[i] = STORE_LIMIT_UNSET;
	strcpy(o.key, "u:dan");
	o.v[CONF_LIM_MESSAGES_PER_MIN] = 5;
	assert_int_equal(lim_override_put(l, &o, put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
	strcpy(o.key, "k:k_dan1");
	o.v[CONF_LIM_MESSAGES_PER_MIN] = 1;
	assert_int_equal(lim_override_put(l, &o, put_done, &err), 0);
	cfx_settle(f);
	struct lim_who w = { .user = "dan", .uid = 5, .role = STORE_USER_ROLE_USER };
	struct lim_who wk = w;
	wk.key_id = "k_dan1";
	struct lim_refusal why;
	assert_true(lim_message_begin(l, &wk, 1, &why));
	assert_false(lim_message_begin(l, &wk, 1, &why));
	assert_true(why.by_key);
	assert_int_equal(why.value, 1);
	for (int i = 0; i < 4; i++) {
		assert_true(lim_message_begin(l, &w, 1, &why));
		lim_answer_end(l, "dan", NULL, 0);
	}
	assert_false(lim_message_begin(l, &w, 1, &why));
	assert_false(why.by_key);
	assert_int_equal(why.value, 5);
	struct lim_view v;
	assert_int_equal(lim_view(l, "k:k_dan1", STORE_USER_ROLE_USER, 5, &v), 0);
	assert_int_equal(v.value[CONF_LIM_MESSAGES_PER_MIN], 1);
	assert_true(v.overridden[CONF_LIM_MESSAGES_PER_MIN]);
	assert_false(v.overridden[CONF_LIM_TOKENS_PER_DAY]);
	assert_int_equal(v.value[CONF_LIM_TOKENS_PER_DAY], 250);
	assert_int_equal(v.used[CONF_LIM_MESSAGES_PER_MIN], 1);
	/* A fresh limits layer reads the overrides back from the store. */
	struct limits l2;
	char errbuf[64];
	assert_int_equal(lim_init(&l2, &f->conf, f->st, errbuf, sizeof(errbuf)), 0);
	assert_int_equal(lim_view(&l2, "u:dan", STORE_USER_ROLE_USER, 5, &v), 0);
	assert_int_equal(v.value[CONF_LIM_MESSAGES_PER_MIN], 5);
	lim_free(&l2);
}

/* Stored text and conversations: counted from the store on first use. */
static void test_stored_and_sessions(void **state)
{
	struct cfx *f = *state;
	struct limits *l = &f->limits;
	/* The fixture's user owns no conversation yet: make two, one with a
	 * 600 KB message. */
	static char big[600000];
	memset(big, 'z', sizeof(big));
	const char *sids[2] = { "s_lim0000000000001", "s_lim0000000000002" };
	for (int i = 0; i < 2; i++) {
		struct store_session ss;
		memset(&ss, 0, sizeof(ss));
		strcpy(ss.id, sids[i]);
		strcpy(ss.user, f->user);
		ss.owner_uid = f->uid;
		strcpy(ss.agent_id, "assistant");
		strcpy(ss.model_id, "synth-1");
		ss.created_at = ss.updated_at = 100 + i;
		int err = 1;
		assert_int_equal(store_session_create(f->st, &ss, put_done, &err), 0);
		cfx_settle(f);
		assert_int_equal(err, 0);
	}
	int err = 1;
	assert_int_equal(store_message_add(f->st, sids[0], "m_u1", big, sizeof(big), "m_a1", 1, NULL, put_done,
					   &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
	struct lim_who w = { .user = f->user, .uid = f->uid, .role = STORE_USER_ROLE_USER };
	struct lim_refusal why;
	assert_false(lim_session_begin(l, &w, &why));
	assert_int_equal(why.limit, CONF_LIM_SESSIONS);
	assert_false(lim_message_begin(l, &w, sizeof(big), &why));
	assert_int_equal(why.limit, CONF_LIM_STORED_MB);
	assert_true(lim_message_begin(l, &w, 1000, &why));
	lim_answer_end(l, f->user, NULL, 0);
	/* Deleting a conversation gives its text and its place back. */
	lim_session_deleting(l, f->user, sids[0]);
	assert_true(lim_session_begin(l, &w, &why));
	lim_session_failed(l, f->user);
	assert_true(lim_message_begin(l, &w, sizeof(big), &why));
}

/* A running answer is told to stop when its tokens go past the daily
 * budget of its user or its key (ending at it exactly is not over), and
 * only then: tokens per minute refuse the next message but never cut one
 * that runs. */
static void test_day_budget_cuts(void **state)
{
	struct cfx *f = *state;
	struct limits *l = &f->limits;
	struct lim_who w = { .user = "fay", .uid = 6, .role = STORE_USER_ROLE_USER };
	struct lim_refusal why, cut;
	assert_true(lim_message_begin(l, &w, 1, &why));
	assert_false(lim_answer_tokens(l, "fay", NULL, 90, 0, &cut));
	assert_false(lim_answer_tokens(l, "fay", NULL, 20, 0, &cut));
	cfx_clock_s += 60;
	assert_false(lim_answer_tokens(l, "fay", NULL, 100, 0, &cut));
	/* Another user's answer goes on. */
	struct lim_who g = { .user = "gus", .uid = 7, .role = STORE_USER_ROLE_USER };
	assert_true(lim_message_begin(l, &g, 1, &why));
	assert_false(lim_answer_tokens(l, "gus", NULL, 10, 0, &cut));
	assert_false(lim_answer_tokens(l, "fay", NULL, 40, 0, &cut));
	memset(&cut, 0, sizeof(cut));
	assert_true(lim_answer_tokens(l, "fay", NULL, 1, 0, &cut));
	assert_int_equal(cut.limit, CONF_LIM_TOKENS_PER_DAY);
	assert_false(cut.by_key);
	assert_int_equal(cut.value, 250);
	assert_true(cut.retry_after > 0 && cut.retry_after <= 86400);
	assert_string_equal(lim_code(cut.limit), "limit_tokens_per_day");
	assert_true(lim_answer_tokens(l, "fay", NULL, 1, 0, NULL));
	lim_answer_end(l, "fay", NULL, 0);
	assert_false(lim_answer_tokens(l, "gus", NULL, 10, 0, &cut));
	/* A key's own budget cuts its answers; its user's still has room. */
	struct store_limits o;
	int err = 1;
	memset(&o, 0, sizeof(o));
	for (int i = 0; i < CONF_LIM_N; i++)
		o.v[i] = STORE_LIMIT_UNSET;
	strcpy(o.key, "k:k_hal1");
	o.v[CONF_LIM_TOKENS_PER_DAY] = 30;
	assert_int_equal(lim_override_put(l, &o, put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
	struct lim_who wk = { .user = "hal", .uid = 8, .role = STORE_USER_ROLE_USER, .key_id = "k_hal1" };
	assert_true(lim_message_begin(l, &wk, 1, &why));
	assert_false(lim_answer_tokens(l, "hal", "k_hal1", 30, 0, &cut));
	assert_true(lim_answer_tokens(l, "hal", "k_hal1", 1, 0, &cut));
	assert_true(cut.by_key);
	assert_int_equal(cut.value, 30);
	lim_answer_end(l, "hal", "k_hal1", 0);
	/* A new day: the budget is back. */
	cfx_clock_s += 86400;
	assert_true(lim_message_begin(l, &w, 1, &why));
	assert_false(lim_answer_tokens(l, "fay", NULL, 1, 0, &cut));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rates_and_windows, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tokens, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_backend_count, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_overrides_and_keys, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stored_and_sessions, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_day_budget_cuts, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

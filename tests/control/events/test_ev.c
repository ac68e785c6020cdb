/*
 * The event bus: topics select what a subscriber hears, delivery is in
 * subscription order and synchronous, a callback may unsubscribe itself or
 * another and may publish (delivered depth-first), the table is bounded, a
 * NULL bus is a no-op and every kind has its name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "events/ev.h"

struct rec {
	char log[256];
	struct ev_bus *bus;
	int unsub_after; /* calls before this subscriber leaves, -1 never */
	int republish;   /* publish an alert from inside once */
};

static struct rec recs[4];

static void note(struct rec *r, char who, const struct ev *e)
{
	size_t n = strlen(r->log);
	r->log[n] = who;
	r->log[n + 1] = (char)('0' + e->kind);
	r->log[n + 2] = 0;
}

static void sub_a(void *arg, const struct ev *e)
{
	note(arg, 'a', e);
}

static void sub_b(void *arg, const struct ev *e)
{
	struct rec *r = arg;
	note(r, 'b', e);
	if (r->unsub_after > 0 && --r->unsub_after == 0)
		ev_unsubscribe(r->bus, sub_b, r);
	if (r->republish) {
		r->republish = 0;
		ev_publish(r->bus, &(struct ev){ .kind = EV_ALERT, .alert = { .name = "x", .raised = true } });
	}
}

static void sub_c(void *arg, const struct ev *e)
{
	note(arg, 'c', e);
}

static void test_topics_and_order(void **state)
{
	(void)state;
	struct ev_bus b;
	ev_init(&b);
	memset(recs, 0, sizeof(recs));
	struct rec *log = &recs[0];
	log->bus = &b;
	assert_int_equal(ev_subscribe(&b, EV_T_SESSION, sub_a, log), 0);
	assert_int_equal(ev_subscribe(&b, EV_T_SESSION | EV_T_ALERT, sub_b, log), 0);
	assert_int_equal(ev_subscribe(&b, EV_T_ALERT, sub_c, log), 0);
	ev_publish(&b, &(struct ev){ .kind = EV_CREATED, .session_id = "s_1" });
	ev_publish(&b, &(struct ev){ .kind = EV_ALERT });
	ev_publish(&b, &(struct ev){ .kind = EV_LOGOUT });
	/* created: a b; alert: b c; logout: a b */
	assert_string_equal(log->log, "a0b0b7c7a5b5");
	assert_int_equal(b.published[EV_CREATED], 1);
	assert_int_equal(b.published[EV_ALERT], 1);
	/* An unknown kind is ignored; a NULL bus is a no-op. */
	ev_publish(&b, &(struct ev){ .kind = EV_KIND_COUNT });
	ev_publish(NULL, &(struct ev){ .kind = EV_CREATED });
	assert_string_equal(log->log, "a0b0b7c7a5b5");
}

static void test_unsubscribe_while_delivering(void **state)
{
	(void)state;
	struct ev_bus b;
	ev_init(&b);
	memset(recs, 0, sizeof(recs));
	struct rec *log = &recs[0];
	log->bus = &b;
	log->unsub_after = 1;
	ev_subscribe(&b, EV_T_SESSION, sub_a, log);
	ev_subscribe(&b, EV_T_SESSION, sub_b, log);
	ev_subscribe(&b, EV_T_SESSION | EV_T_ALERT, sub_c, log);
	/* b leaves during the first event: c still gets it, b gets no more. */
	ev_publish(&b, &(struct ev){ .kind = EV_CREATED });
	ev_publish(&b, &(struct ev){ .kind = EV_DELETED });
	assert_string_equal(log->log, "a0b0c0a1c1");
	ev_unsubscribe(&b, sub_a, log);
	ev_unsubscribe(&b, sub_a, log); /* not subscribed any more: no-op */
	ev_publish(&b, &(struct ev){ .kind = EV_LOGIN });
	assert_string_equal(log->log, "a0b0c0a1c1c4");
}

static void test_nested_publish(void **state)
{
	(void)state;
	struct ev_bus b;
	ev_init(&b);
	memset(recs, 0, sizeof(recs));
	struct rec *log = &recs[0];
	log->bus = &b;
	log->unsub_after = -1;
	log->republish = 1;
	ev_subscribe(&b, EV_T_SESSION | EV_T_ALERT, sub_b, log);
	ev_subscribe(&b, EV_T_SESSION | EV_T_ALERT, sub_c, log);
	ev_publish(&b, &(struct ev){ .kind = EV_ANSWER_ENDED });
	/* b publishes an alert before c heard of the answer: depth-first. */
	assert_string_equal(log->log, "b3b7c7c3");
}

static void test_bounded_and_names(void **state)
{
	(void)state;
	struct ev_bus b;
	ev_init(&b);
	for (uint32_t i = 0; i < EV_MAX_SUBS; i++)
		assert_int_equal(ev_subscribe(&b, EV_T_SESSION, sub_a, &recs[0]), 0);
	assert_int_equal(ev_subscribe(&b, EV_T_SESSION, sub_a, &recs[0]), -1);
	static const char *const names[] = { "created", "deleted", "answer_started", "answer_ended",
					     "login", "logout", "kicked", "alert" };
	for (int k = 0; k < EV_KIND_COUNT; k++)
		assert_string_equal(ev_kind_name((enum ev_kind)k), names[k]);
	assert_string_equal(ev_kind_name(EV_KIND_COUNT), "unknown");
	assert_int_equal(ev_topic(EV_ALERT), EV_T_ALERT);
	assert_int_equal(ev_topic(EV_KICKED), EV_T_SESSION);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topics_and_order),
		cmocka_unit_test(test_unsubscribe_while_delivering),
		cmocka_unit_test(test_nested_publish),
		cmocka_unit_test(test_bounded_and_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

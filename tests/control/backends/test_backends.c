/*
 * The backend manager's routing over synthetic backends, in virtual time:
 * least outstanding per weight, max_concurrency with a bounded queue (a
 * full one refuses with -EAGAIN), a queued call started when a slot frees,
 * drain / enable / remove, unknown models, and shutdown ending every call
 * as interrupted. (Network clients, timeouts, failover and the breaker run
 * against real servers in tests/integration/test_backends.py.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../fixture.h"
#include "backends/backends.h"

struct seen {
	int waiting, streaming, tokens;
	bool ended;
	enum bk_end_kind kind;
};

static void on_status(void *arg, enum bk_status st, const char *backend)
{
	struct seen *g = arg;
	(void)backend;
	if (st == BK_STATUS_WAITING)
		g->waiting++;
	else
		g->streaming++;
}

static void on_token(void *arg, const char *t, size_t n)
{
	(void)t;
	(void)n;
	((struct seen *)arg)->tokens++;
}

static void on_delta(void *arg, const char *j, size_t n)
{
	(void)arg;
	(void)j;
	(void)n;
}

static void on_usage(void *arg, uint32_t p, uint32_t c)
{
	(void)arg;
	(void)p;
	(void)c;
}

static void on_end(void *arg, const struct bk_end *e)
{
	struct seen *g = arg;
	g->ended = true;
	g->kind = e->kind;
}

static const struct bk_events ev = { on_status, on_token, on_delta, on_usage, on_end };

static void add_syn(struct sluice_conf *c, const char *name, uint32_t weight, uint32_t conc, uint32_t queue)
{
	struct conf_backend *be = &c->backends[c->nbackends++];
	conf_backend_defaults(be);
	snprintf(be->name, sizeof(be->name), "%s", name);
	strcpy(be->models[0], "m");
	be->nmodels = 1;
	be->weight = weight;
	be->max_concurrency = conc;
	be->max_queue = queue;
	be->ttft_ms = 100;
	be->answer_tokens = 3;
}

struct backend_of {
	const char *name;
	uint32_t inflight, queued;
	const char *state;
};

static void find_each(void *arg, const struct bk_info *b)
{
	struct backend_of *x = arg;
	static const char *const states[] = { "enabled", "draining", "removing" };
	if (strcmp(b->cfg->name, x->name) == 0) {
		x->inflight = b->inflight;
		x->queued = b->queued;
		x->state = states[b->admin];
	}
}

static struct backend_of backend_of(struct bk_mgr *m, const char *name)
{
	struct backend_of x = { .name = name, .state = "gone" };
	bk_foreach(m, find_each, &x);
	return x;
}

static void test_routing_and_queues(void **state)
{
	(void)state;
	struct sluice_conf conf;
	conf_defaults(&conf);
	add_syn(&conf, "a", 1, 1, 1);
	add_syn(&conf, "b", 2, 2, 0);
	struct cfx_loop l;
	cfx_loop_open(&l);
	char err[256];
	struct bk_mgr *m = bk_create(&conf, l.loop, err, sizeof(err));
	assert_non_null(m);
	struct bk_msg msg = { .role = BK_ROLE_USER, .content = "hi", .len = 2 };
	const uint64_t t0 = 1000000000ull;
	struct bk_request req = { .model = "m", .msgs = &msg, .nmsgs = 1, .start_ns = t0 };
	struct seen s[6];
	struct bk_call *c[6];
	int rc;
	memset(s, 0, sizeof(s));
	/* Least outstanding per weight: a (weight 1) gets the first, b (weight
	 * 2) the next two, then a is full and b is at 2/2: the fourth waits in
	 * a's queue; a fifth finds every queue full. */
	static const uint32_t a_load[] = { 1, 1, 1, 2 }, b_load[] = { 0, 1, 2, 2 };
	for (int i = 0; i < 4; i++) {
		c[i] = bk_call_start(m, &req, &ev, &s[i], &rc);
		assert_non_null(c[i]);
		struct backend_of a = backend_of(m, "a"), b = backend_of(m, "b");
		assert_int_equal(a.inflight + a.queued, a_load[i]);
		assert_int_equal(b.inflight + b.queued, b_load[i]);
	}
	assert_int_equal(s[3].waiting, 1); /* queued calls say so */
	assert_int_equal(s[0].waiting, 0); /* the synthetic backend never waits */
	assert_int_equal(backend_of(m, "a").queued, 1);
	assert_false(bk_has_room(m, "m")); /* what POST /api/chat/message checks */
	assert_null(bk_call_start(m, &req, &ev, &s[4], &rc));
	assert_int_equal(rc, -EAGAIN);
	req.model = "other";
	assert_null(bk_call_start(m, &req, &ev, &s[4], &rc));
	assert_int_equal(rc, -ENOENT);
	req.model = "m";
	/* The first answers end; the queued one starts on a's freed slot. */
	cpl_run_due(l.loop, t0 + 100000000ull * 2);
	for (int i = 0; i < 3; i++)
		assert_true(s[i].ended && s[i].kind == BK_END_COMPLETE && s[i].tokens == 3);
	assert_int_equal(backend_of(m, "a").queued, 0);
	assert_true(bk_has_room(m, "m"));
	cpl_run_due(l.loop, UINT64_MAX - 1);
	assert_true(s[3].ended && s[3].tokens == 3);

	/* Drained, a gets nothing new; enabled again, it does. */
	assert_int_equal(bk_backend_drain(m, "a"), 0);
	assert_string_equal(backend_of(m, "a").state, "draining");
	memset(s, 0, sizeof(s));
	c[0] = bk_call_start(m, &req, &ev, &s[0], &rc);
	assert_int_equal(backend_of(m, "b").inflight, 1);
	assert_int_equal(backend_of(m, "a").inflight, 0);
	assert_int_equal(bk_backend_enable(m, "a"), 0);
	c[1] = bk_call_start(m, &req, &ev, &s[1], &rc);
	assert_int_equal(backend_of(m, "a").inflight, 1);
	/* Removed while a call runs on it: out of routing now, gone after. */
	assert_int_equal(bk_backend_remove(m, "a"), 0);
	assert_string_equal(backend_of(m, "a").state, "removing");
	c[2] = bk_call_start(m, &req, &ev, &s[2], &rc);
	assert_int_equal(backend_of(m, "b").inflight, 2);
	cpl_run_due(l.loop, UINT64_MAX - 1);
	assert_true(s[1].ended);
	assert_string_equal(backend_of(m, "a").state, "gone");
	assert_int_equal(bk_backend_drain(m, "a"), -ENOENT);

	/* Shutdown ends what runs as interrupted. */
	memset(s, 0, sizeof(s));
	c[0] = bk_call_start(m, &req, &ev, &s[0], &rc);
	assert_non_null(c[0]);
	bk_shutdown(m);
	assert_true(s[0].ended);
	assert_int_equal(s[0].kind, BK_END_INTERRUPTED);
	assert_null(bk_call_start(m, &req, &ev, &s[1], &rc));
	bk_destroy(m);
	cfx_loop_close(&l);
}

/* A backend added at run time takes requests at once; a definition the
 * file would refuse is refused with the file's reason. */
static void test_add_checked(void **state)
{
	(void)state;
	struct sluice_conf conf;
	conf_defaults(&conf);
	add_syn(&conf, "a", 1, 0, 0);
	struct cfx_loop l;
	cfx_loop_open(&l);
	char err[256];
	struct bk_mgr *m = bk_create(&conf, l.loop, err, sizeof(err));
	assert_non_null(m);
	struct conf_backend be;
	conf_backend_defaults(&be);
	strcpy(be.name, "x");
	assert_int_equal(conf_backend_key(&be, "url", "ftp://nope", err, sizeof(err)), -1);
	assert_string_equal(err, "url: expected http(s)://host[:port][/path] without a trailing '/': 'ftp://nope'");
	assert_int_equal(conf_backend_key(&be, "models", "m2, m3", err, sizeof(err)), 0);
	assert_int_equal(conf_backend_key(&be, "weight", "0", err, sizeof(err)), -1);
	assert_string_equal(err, "weight: out of range 1..1000: '0'");
	assert_int_equal(conf_backend_key(&be, "colour", "red", err, sizeof(err)), -1);
	assert_int_equal(conf_backend_check(&be, err, sizeof(err)), 0);
	assert_false(bk_model_served(m, "m3"));
	assert_int_equal(bk_backend_add(m, &be, err, sizeof(err)), 0);
	assert_true(bk_model_served(m, "m3"));
	assert_int_equal(bk_backend_add(m, &be, err, sizeof(err)), -EEXIST);
	conf_backend_defaults(&be);
	strcpy(be.name, "y");
	assert_int_equal(conf_backend_key(&be, "type", "openai", err, sizeof(err)), 0);
	assert_int_equal(conf_backend_check(&be, err, sizeof(err)), -1);
	assert_string_equal(err, "backend 'y' has no url");
	bk_destroy(m);
	cfx_loop_close(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routing_and_queues),
		cmocka_unit_test(test_add_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The configuration keys of issue 11 ([log] level and format) and the
 * walks a reload builds on: conf_show (every key as the file says it,
 * header values redacted) and conf_diff (what changed, and whether live).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sluice/conf.h"
#include "sluice/log.h"

#define MIN_BACKEND "[backend.b]\ntype = synthetic\nmodels = m\n"

/* Loads text from a temp file into c; returns conf_load's result. */
static int load_text(const char *text, struct sluice_conf *c, char *err, size_t errlen)
{
	char path[] = "/tmp/sluice-conf-reload-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(close(fd), 0);
	int rc = conf_load(path, c, err, errlen);
	unlink(path);
	return rc;
}

/* The reason of a refused load, without the "FILE:LINE: " part. */
static const char *load_reason(const char *text, char *err, size_t errlen)
{
	struct sluice_conf *c = malloc(sizeof(*c));
	assert_non_null(c);
	assert_int_equal(load_text(text, c, err, errlen), -1);
	free(c);
	const char *r = strstr(err, ": ");
	assert_non_null(r);
	return r + 2;
}

static void test_log_keys(void **state)
{
	(void)state;
	struct sluice_conf *c = malloc(sizeof(*c));
	char err[512];
	assert_non_null(c);
	conf_defaults(c);
	assert_int_equal(c->log_level, LOG_LVL_INFO);
	assert_int_equal(c->log_format, LOG_FMT_PLAIN);
	assert_int_equal(load_text("[log]\nlevel = debug\nformat = json\n" MIN_BACKEND, c, err, sizeof(err)), 0);
	assert_int_equal(c->log_level, LOG_LVL_DEBUG);
	assert_int_equal(c->log_format, LOG_FMT_JSON);
	assert_int_equal(load_text("[log]\nlevel = warn\n" MIN_BACKEND, c, err, sizeof(err)), 0);
	assert_int_equal(c->log_level, LOG_LVL_WARN);
	assert_int_equal(c->log_format, LOG_FMT_PLAIN);
	free(c);
	assert_string_equal(load_reason("[log]\nlevel = Debug\n" MIN_BACKEND, err, sizeof(err)),
			    "level: expected debug, info, warn or error: 'Debug'");
	assert_string_equal(load_reason("[log]\nformat = xml\n" MIN_BACKEND, err, sizeof(err)),
			    "format: expected plain or json: 'xml'");
	assert_string_equal(load_reason("[log]\nfile = /x\n" MIN_BACKEND, err, sizeof(err)),
			    "unknown key 'file' in [log]");
}

struct seen {
	char text[8192];
	size_t len;
};

static void show_cb(void *arg, const char *section, const char *key, const char *value, bool live)
{
	struct seen *x = arg;
	int n = snprintf(x->text + x->len, sizeof(x->text) - x->len, "[%s] %s = %s%s\n", section, key, value,
			 live ? " (live)" : "");
	assert_true(n > 0 && (size_t)n < sizeof(x->text) - x->len);
	x->len += (size_t)n;
}

static void diff_cb(void *arg, const char *section, const char *key, bool live)
{
	struct seen *x = arg;
	int n = snprintf(x->text + x->len, sizeof(x->text) - x->len, "[%s]%s%s%s\n", section, key ? " " : "",
			 key ? key : "", live ? " live" : "");
	assert_true(n > 0 && (size_t)n < sizeof(x->text) - x->len);
	x->len += (size_t)n;
}

#define NET_BACKEND                                                                                  \
	"[backend.up]\ntype = openai\nurl = http://10.0.0.1:8000\napi_key_env = UP_KEY\n"             \
	"headers = OpenAI-Organization: org-secret | X-Team: t1\n"

static void test_show(void **state)
{
	(void)state;
	struct sluice_conf *c = malloc(sizeof(*c));
	char err[512];
	static struct seen x;
	assert_non_null(c);
	assert_int_equal(load_text("[batching]\nmode = off\n[auth]\nallowed_origins = http://a.example,http://b.example\n"
				   MIN_BACKEND NET_BACKEND, c, err, sizeof(err)), 0);
	memset(&x, 0, sizeof(x));
	conf_show(c, show_cb, &x);
	const char *want[] = {
		"[dataplane] transport = kernel\n", "[dataplane] listen = 127.0.0.1:8080\n",
		"[dataplane] idle_timeout_s = 60 (live)\n", "[batching] mode = off (live)\n",
		"[auth] allowed_origins = http://a.example,http://b.example (live)\n",
		"[control] admin_socket_mode = 0600\n", "[log] level = info (live)\n",
		"[backend.b] models = m (live)\n", "[backend.b] type = synthetic\n",
		"[backend.up] api_key_env = UP_KEY (live)\n",
		"[backend.up] headers = OpenAI-Organization: <redacted> | X-Team: <redacted> (live)\n",
		"[agent.assistant] model = m\n", "[limits.admin] sessions = 0 (live)\n",
		"[limits.user] messages_per_min = 120 (live)\n",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(x.text, want[i]))
			fail_msg("no '%s' in:\n%s", want[i], x.text);
	assert_null(strstr(x.text, "org-secret"));
	assert_null(strstr(x.text, "redirect_listen"));
	free(c);
}

/* conf_diff of two files: what it reports and its result. */
static int diff_text(const char *a, const char *b, struct seen *x)
{
	struct sluice_conf *ca = malloc(sizeof(*ca)), *cb = malloc(sizeof(*cb));
	char err[512];
	assert_true(ca && cb);
	assert_int_equal(load_text(a, ca, err, sizeof(err)), 0);
	assert_int_equal(load_text(b, cb, err, sizeof(err)), 0);
	memset(x, 0, sizeof(*x));
	int rc = conf_diff(ca, cb, diff_cb, x);
	free(ca);
	free(cb);
	return rc;
}

static void test_diff(void **state)
{
	(void)state;
	static struct seen x;
	assert_int_equal(diff_text(MIN_BACKEND, MIN_BACKEND, &x), 0);
	assert_string_equal(x.text, "");
	assert_int_equal(diff_text(MIN_BACKEND, "[batching]\nmode = off\nmax_delay_us = 10\n"
				   "[auth]\nallowed_origins = http://x.example\n" MIN_BACKEND, &x), 0);
	assert_string_equal(x.text, "[auth] allowed_origins live\n[batching] mode live\n"
				    "[batching] max_delay_us live\n");
	assert_int_equal(diff_text(MIN_BACKEND, "[dataplane]\nworkers = 2\n[channel]\npath = /dev/shm/x\n"
				   "[batching]\nmode = off\n" MIN_BACKEND, &x), 3);
	/* lcores follows workers when unset: it changes too. */
	assert_string_equal(x.text, "[dataplane] workers\n[dataplane] lcores\n[channel] path\n[batching] mode live\n");
	/* Backends come and go live; an agent needs a restart. */
	assert_int_equal(diff_text(MIN_BACKEND NET_BACKEND, MIN_BACKEND "[backend.c]\ntype = synthetic\nmodels = m2\n"
				   "[agent.a]\nmodel = m2\n", &x), 2);
	assert_string_equal(x.text, "[backend.up] live\n[agent.assistant]\n[backend.c] live\n[agent.a]\n");
	/* Quotas and the dataplane's limits are live; permessage-deflate's setup is not. */
	assert_int_equal(diff_text(MIN_BACKEND, "[limits.user]\nmessages_per_min = 7\n[limits]\nconns_per_ip = 9\n"
				   "[dataplane]\nws_deflate = false\n" MIN_BACKEND, &x), 1);
	assert_string_equal(x.text, "[dataplane] ws_deflate\n[limits] conns_per_ip live\n"
				    "[limits.user] messages_per_min live\n");
	/* A changed key of a backend, and one set on one side only. */
	assert_int_equal(diff_text("[backend.b]\ntype = synthetic\nmodels = m\nweight = 2\n",
				   "[backend.b]\ntype = synthetic\nmodels = m,n\nttft_ms = 5\n", &x), 0);
	assert_string_equal(x.text, "[backend.b] models live\n[backend.b] ttft_ms live\n[backend.b] weight live\n");
	assert_int_equal(diff_text(MIN_BACKEND, "[backend.b]\ntype = openai\nurl = http://h\nmodels = m\n", &x), 1);
	assert_string_equal(x.text, "[backend.b] type\n[backend.b] url live\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_keys),
		cmocka_unit_test(test_show),
		cmocka_unit_test(test_diff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

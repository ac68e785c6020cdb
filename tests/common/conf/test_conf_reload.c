/*
 * The configuration keys of issue 11: [log] level and format, their
 * defaults and their errors.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

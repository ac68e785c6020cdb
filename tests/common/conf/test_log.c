/*
 * log.c: line format, level filter, SLUICE_LOG override, escaping of control
 * bytes, visible truncation, whole lines under concurrent writers, JSON lines
 * (valid objects also when cut or fed bad UTF-8) and audit lines.
 * stderr is pointed at a temp file for each capture.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "sluice/log.h"

#define PREFIX_RE "^[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{3}Z "

static int saved_stderr = -1;
static char cap_path[64];

static void capture_begin(void)
{
	strcpy(cap_path, "/tmp/sluice-log-test-XXXXXX");
	int fd = mkstemp(cap_path);
	assert_true(fd >= 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	assert_int_equal(close(fd), 0);
}

/* Restores stderr and returns what was logged (caller frees). */
static char *capture_end(size_t *len_out)
{
	assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
	assert_int_equal(close(saved_stderr), 0);
	FILE *f = fopen(cap_path, "r");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	char *buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	unlink(cap_path);
	if (len_out)
		*len_out = (size_t)n;
	return buf;
}

static void assert_matches(const char *text, const char *re)
{
	regex_t rx;
	assert_int_equal(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
	int rc = regexec(&rx, text, 0, NULL, 0);
	regfree(&rx);
	if (rc != 0)
		fail_msg("'%s' does not match /%s/", text, re);
}

static void test_line_format(void **state)
{
	(void)state;
	unsetenv("SLUICE_LOG");
	log_init("testproc", LOG_LVL_INFO);
	capture_begin();
	LOG_INFO("hello %d %s", 42, "world");
	LOG_ERROR("bad thing");
	char *out = capture_end(NULL);
	char want[256];
	snprintf(want, sizeof(want),
		 PREFIX_RE "testproc\\[%ld\\] INFO hello 42 world\n" "[^\n]*"
			   "testproc\\[%ld\\] ERROR bad thing\n$",
		 (long)getpid(), (long)getpid());
	assert_matches(out, want);
	free(out);
}

static void test_level_filter(void **state)
{
	(void)state;
	unsetenv("SLUICE_LOG");
	log_init("lvl", LOG_LVL_WARN);
	capture_begin();
	LOG_DEBUG("d");
	LOG_INFO("i");
	LOG_WARN("w");
	LOG_ERROR("e");
	log_set_level(LOG_LVL_DEBUG);
	LOG_DEBUG("d2");
	log_set_level(LOG_LVL_ERROR);
	LOG_WARN("w2");
	char *out = capture_end(NULL);
	assert_matches(out, PREFIX_RE "lvl\\[[0-9]+\\] WARN w\n"
				      "[^\n]* ERROR e\n"
				      "[^\n]* DEBUG d2\n$");
	free(out);
}

static void test_env_override(void **state)
{
	(void)state;
	setenv("SLUICE_LOG", "debug", 1);
	log_init("env", LOG_LVL_ERROR);
	capture_begin();
	LOG_DEBUG("visible");
	char *out = capture_end(NULL);
	assert_matches(out, " DEBUG visible\n$");
	free(out);

	setenv("SLUICE_LOG", "ERROR", 1);
	log_init("env", LOG_LVL_DEBUG);
	capture_begin();
	LOG_WARN("hidden");
	LOG_ERROR("shown");
	out = capture_end(NULL);
	assert_matches(out, PREFIX_RE "env\\[[0-9]+\\] ERROR shown\n$");
	free(out);

	/* An unknown value is reported and the programmed level stays. */
	setenv("SLUICE_LOG", "loud", 1);
	capture_begin();
	log_init("env", LOG_LVL_INFO);
	LOG_DEBUG("hidden");
	LOG_INFO("kept");
	out = capture_end(NULL);
	assert_matches(out, PREFIX_RE "env\\[[0-9]+\\] WARN SLUICE_LOG=loud not understood"
				      "[^\n]*\n[^\n]* INFO kept\n$");
	free(out);
	unsetenv("SLUICE_LOG");
}

/* A newline in a message must not start a forged log line. */
static void test_control_bytes_escaped(void **state)
{
	(void)state;
	unsetenv("SLUICE_LOG");
	log_init("esc", LOG_LVL_INFO);
	capture_begin();
	LOG_INFO("user=%s", "bob\n2099-01-01T00:00:00.000Z esc[1] ERROR forged\x7f\t");
	char *out = capture_end(NULL);
	assert_matches(out, " INFO user=bob\\\\x0a2099-01-01T00:00:00\\.000Z esc\\[1\\] ERROR "
			    "forged\\\\x7f\\\\x09\n$");
	free(out);
}

static void test_errno_preserved(void **state)
{
	(void)state;
	log_init("errno", LOG_LVL_INFO);
	capture_begin();
	errno = ENOENT;
	LOG_INFO("open: %m");
	int after = errno;
	char *out = capture_end(NULL);
	assert_int_equal(after, ENOENT);
	assert_matches(out, " INFO open: No such file or directory\n$");
	free(out);
}

/* A message too long for one line is cut and marked, never cut silently. */
static void test_truncation_marked(void **state)
{
	(void)state;
	log_init("trunc", LOG_LVL_INFO);
	char *big = malloc(10001);
	assert_non_null(big);
	memset(big, 'x', 10000);
	big[10000] = '\0';
	capture_begin();
	LOG_INFO("%s", big);
	LOG_INFO("%.4000s\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
		 "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01",
		 big);
	size_t len;
	char *out = capture_end(&len);
	assert_true(len <= 2 * 4096);
	char *nl = strchr(out, '\n');
	assert_non_null(nl);
	assert_true(nl - out < 4096);
	assert_memory_equal(nl - 12, " [truncated]", 12);
	assert_non_null(strstr(nl + 1, "\\x01 [truncated]\n"));
	assert_true(strlen(nl + 1) <= 4096);
	free(out);
	free(big);
}

#define THREADS 4
#define LINES_PER_THREAD 500

static void *writer(void *arg)
{
	long id = (long)(intptr_t)arg;
	for (int i = 0; i < LINES_PER_THREAD; i++)
		LOG_INFO("thread %ld line %d %s", id, i,
			 "padding padding padding padding padding padding padding padding");
	return NULL;
}

/* Concurrent writers produce whole lines: every line parses and every
 * (thread, line) pair appears exactly once. */
static void test_threads_whole_lines(void **state)
{
	(void)state;
	log_init("mt", LOG_LVL_INFO);
	capture_begin();
	pthread_t th[THREADS];
	for (long t = 0; t < THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t), 0);
	for (int t = 0; t < THREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	char *out = capture_end(NULL);

	static unsigned char seen[THREADS][LINES_PER_THREAD];
	memset(seen, 0, sizeof(seen));
	regex_t rx;
	assert_int_equal(regcomp(&rx, PREFIX_RE "mt\\[[0-9]+\\] INFO thread [0-9]+ line [0-9]+ "
					       "(padding ?){8}$",
				 REG_EXTENDED | REG_NOSUB),
			 0);
	int lines = 0;
	for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (regexec(&rx, l, 0, NULL, 0) != 0)
			fail_msg("mangled line: %s", l);
		long t;
		int i;
		const char *p = strstr(l, "thread ");
		assert_non_null(p);
		assert_int_equal(sscanf(p, "thread %ld line %d", &t, &i), 2);
		assert_true(t >= 0 && t < THREADS && i >= 0 && i < LINES_PER_THREAD);
		assert_int_equal(seen[t][i], 0);
		seen[t][i] = 1;
		lines++;
	}
	regfree(&rx);
	assert_int_equal(lines, THREADS * LINES_PER_THREAD);
	free(out);
}

/* Every line of out parses as one JSON object; returns them as an array. */
static json_t *json_lines(const char *out)
{
	json_t *arr = json_array();
	for (const char *p = out; *p;) {
		const char *nl = strchr(p, '\n');
		assert_non_null(nl);
		json_error_t jerr;
		json_t *o = json_loadb(p, (size_t)(nl - p), 0, &jerr);
		if (!json_is_object(o))
			fail_msg("not a JSON object: %.*s (%s)", (int)(nl - p), p, jerr.text);
		json_array_append_new(arr, o);
		p = nl + 1;
	}
	return arr;
}

static void test_json_lines(void **state)
{
	(void)state;
	unsetenv("SLUICE_LOG");
	log_init("jp", LOG_LVL_INFO);
	log_set_format(LOG_FMT_JSON);
	char big[6000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	capture_begin();
	LOG_INFO("quote \" back \\ tab\t bad \xff\xfe ok \xc3\xa9");
	LOG_DEBUG("filtered");
	LOG_WARN("%s", big);
	log_audit("login", "result", "ok", "user", "al\"ice", "peer", NULL, NULL);
	log_audit("big", "a", big, "b", "short", NULL);
	char *out = capture_end(NULL);
	log_set_format(LOG_FMT_PLAIN);
	json_t *arr = json_lines(out);
	assert_int_equal(json_array_size(arr), 4);
	json_t *o = json_array_get(arr, 0);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "INFO");
	assert_string_equal(json_string_value(json_object_get(o, "proc")), "jp");
	assert_int_equal(json_integer_value(json_object_get(o, "pid")), getpid());
	assert_string_equal(json_string_value(json_object_get(o, "msg")),
			    "quote \" back \\ tab\t bad \xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9");
	assert_non_null(strstr(json_string_value(json_object_get(o, "ts")), "Z"));
	o = json_array_get(arr, 1);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "WARN");
	assert_true(json_is_true(json_object_get(o, "truncated")));
	o = json_array_get(arr, 2);
	assert_string_equal(json_string_value(json_object_get(o, "cat")), "audit");
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "login");
	json_t *f = json_object_get(o, "fields");
	assert_string_equal(json_string_value(json_object_get(f, "result")), "ok");
	assert_string_equal(json_string_value(json_object_get(f, "user")), "al\"ice");
	assert_string_equal(json_string_value(json_object_get(f, "peer")), "-");
	o = json_array_get(arr, 3);
	assert_true(json_is_true(json_object_get(o, "truncated")));
	f = json_object_get(o, "fields");
	assert_null(json_object_get(f, "a"));
	assert_string_equal(json_string_value(json_object_get(f, "b")), "short");
	json_decref(arr);
	free(out);
}

static void test_audit_plain(void **state)
{
	(void)state;
	unsetenv("SLUICE_LOG");
	log_init("au", LOG_LVL_ERROR);
	capture_begin();
	log_audit("key_create", "user", "bob", "label", "my \"ci\" key", "empty", "", "ctl", "a\nb",
		  NULL);
	char *out = capture_end(NULL);
	char want[256];
	snprintf(want, sizeof(want),
		 PREFIX_RE "au\\[%ld\\] INFO audit key_create user=bob label=\"my \\\\\"ci\\\\\" key\" "
			   "empty=\"\" ctl=a\\\\x0ab\n$",
		 (long)getpid());
	assert_matches(out, want);
	free(out);
	assert_int_equal(log_get_level(), LOG_LVL_ERROR);
	enum log_level l;
	assert_true(log_level_parse("Warning", &l));
	assert_int_equal(l, LOG_LVL_WARN);
	assert_false(log_level_parse("loud", &l));
	assert_string_equal(log_level_name(LOG_LVL_DEBUG), "debug");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_format),
		cmocka_unit_test(test_level_filter),
		cmocka_unit_test(test_env_override),
		cmocka_unit_test(test_control_bytes_escaped),
		cmocka_unit_test(test_errno_preserved),
		cmocka_unit_test(test_truncation_marked),
		cmocka_unit_test(test_threads_whole_lines),
		cmocka_unit_test(test_json_lines),
		cmocka_unit_test(test_audit_plain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * conf_load(): a full valid file, defaults, the shipped firmware-config/sluice.conf,
 * and invalid files, each checked for its exact "FILE:LINE: reason".
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

#ifndef SLUICE_FIRMWARE_CONF
#error "meson passes SLUICE_FIRMWARE_CONF, the path of firmware-config/sluice.conf"
#endif

#define MIN_BACKEND "[backend.b]\ntype = synthetic\nmodels = m\n"

static char tmp_path[64];

/* Writes len bytes to a fresh temp file whose path is left in tmp_path. */
static void write_tmp_n(const char *content, size_t len)
{
	strcpy(tmp_path, "/tmp/sluice-conf-test-XXXXXX");
	int fd = mkstemp(tmp_path);
	assert_true(fd >= 0);
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, content + off, len - off);
		assert_true(w > 0);
		off += (size_t)w;
	}
	assert_int_equal(close(fd), 0);
}

static void write_tmp(const char *content)
{
	write_tmp_n(content, strlen(content));
}

static struct sluice_conf *new_conf(void)
{
	struct sluice_conf *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	return c;
}

/* Loads content and expects failure with exactly "TMPFILE:line: reason"
 * (line 0: "TMPFILE: reason"). The caller's struct must stay untouched. */
static void expect_error_n(const char *content, size_t len, unsigned line, const char *reason)
{
	write_tmp_n(content, len);
	struct sluice_conf *c = new_conf();
	memset(c, 0xa5, sizeof(*c));
	struct sluice_conf *before = malloc(sizeof(*before));
	assert_non_null(before);
	memcpy(before, c, sizeof(*c));

	char err[512], want[512];
	if (line)
		snprintf(want, sizeof(want), "%s:%u: %s", tmp_path, line, reason);
	else
		snprintf(want, sizeof(want), "%s: %s", tmp_path, reason);
	int rc = conf_load(tmp_path, c, err, sizeof(err));
	unlink(tmp_path);
	assert_int_equal(rc, -1);
	assert_string_equal(err, want);
	assert_memory_equal(c, before, sizeof(*c));
	free(before);
	free(c);
}

static void expect_error(const char *content, unsigned line, const char *reason)
{
	expect_error_n(content, strlen(content), line, reason);
}

/* Loads content that must be valid; returns the result (caller frees). */
static struct sluice_conf *load_ok(const char *content)
{
	write_tmp(content);
	struct sluice_conf *c = new_conf();
	char err[512] = "";
	int rc = conf_load(tmp_path, c, err, sizeof(err));
	unlink(tmp_path);
	if (rc != 0)
		fail_msg("unexpected error: %s", err);
	assert_string_equal(c->path, tmp_path);
	return c;
}

static void test_defaults(void **state)
{
	(void)state;
	struct sluice_conf *c = new_conf();
	memset(c, 0x5a, sizeof(*c));
	conf_defaults(c);
	assert_int_equal(c->transport, CONF_TRANSPORT_KERNEL);
	assert_int_equal(c->workers, 1);
	assert_string_equal(c->listen_addr, "127.0.0.1");
	assert_int_equal(c->listen_port, 8080);
	assert_int_equal(c->max_conns, 16384);
	assert_int_equal(c->idle_timeout_s, 60);
	assert_int_equal(c->header_timeout_s, 10);
	assert_int_equal(c->sse_keepalive_s, 15);
	assert_int_equal(c->ws_max_message, 65536);
	assert_int_equal(c->max_pending_bytes, 1048576);
	assert_true(c->pin_workers);
	assert_string_equal(c->chan_path, "/dev/shm/sluice");
	assert_int_equal(c->ring_bytes, 4194304);
	assert_string_equal(c->admin_socket, "/tmp/sluice-admin.sock");
	assert_string_equal(c->store, "/tmp/sluice-store");
	assert_int_equal(c->batch_mode, CONF_BATCH_ADAPTIVE);
	assert_int_equal(c->max_delay_us, 2000);
	assert_int_equal(c->max_bytes, 16384);
	assert_int_equal(c->nbackends, 0);
	free(c);
}

/* A file with only a backend gets every default, the backend's included. */
static void test_minimal_file_gets_defaults(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok(MIN_BACKEND);
	struct sluice_conf *d = new_conf();
	conf_defaults(d);
	assert_int_equal(c->workers, d->workers);
	assert_int_equal(c->listen_port, d->listen_port);
	assert_string_equal(c->chan_path, d->chan_path);
	assert_int_equal(c->ring_bytes, d->ring_bytes);
	assert_int_equal(c->max_delay_us, d->max_delay_us);
	assert_int_equal(c->nbackends, 1);
	const struct conf_backend *b = &c->backends[0];
	assert_string_equal(b->name, "b");
	assert_int_equal(b->type, CONF_BACKEND_SYNTHETIC);
	assert_int_equal(b->nmodels, 1);
	assert_string_equal(b->models[0], "m");
	assert_int_equal(b->ttft_ms, 200);
	assert_int_equal(b->tokens_per_s, 20);
	assert_int_equal(b->answer_tokens, 32);
	assert_int_equal(b->max_concurrency, 0);
	assert_int_equal(b->context_window, 8192);
	assert_true(b->cost_in_per_mtok == 0.0);
	assert_true(b->cost_out_per_mtok == 0.0);
	free(d);
	free(c);
}

static const char full_file[] =
	"# full configuration, every key set away from its default\n"
	"; semicolon comment\n"
	"\n"
	"[dataplane]\n"
	"  transport   =   dpdk   \n"
	"workers=8\n"
	"listen = 10.0.0.7:443 # trailing comment\n"
	"max_conns = 1000 ; other trailing comment\n"
	"idle_timeout_s = 30\n"
	"header_timeout_s = 5\n"
	"sse_keepalive_s = 20\n"
	"ws_max_message = 1048576\n"
	"max_pending_bytes = 65536\n"
	"pin_workers = false\n"
	"\t[channel]\t\n"
	"path = /dev/hugepages/sluice#1\n"
	"ring_bytes = 268435456\n"
	"[control]\r\n"
	"admin_socket = /run/sluice/admin.sock\r\n"
	"store = /var/lib/sluice\r\n"
	"[batching]\n"
	"mode = off\n"
	"max_delay_us = 0\n"
	"max_bytes = 64\n"
	"[backend.fast-1]\n"
	"type = synthetic\n"
	"models = synthetic-fast , synthetic-tiny,x:7b\n"
	"ttft_ms = 0\n"
	"tokens_per_s = 1000\n"
	"answer_tokens = 5\n"
	"max_concurrency = 4\n"
	"context_window = 32768\n"
	"cost_in_per_mtok = 0.15\n"
	"cost_out_per_mtok = 12\n"
	"[ backend.Slow_2 ]\n"
	"models = synthetic-slow\n"
	"type = synthetic\n"
	"tokens_per_s = 1\n";

static void test_full_file(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok(full_file);
	assert_int_equal(c->transport, CONF_TRANSPORT_DPDK);
	assert_int_equal(c->workers, 8);
	assert_string_equal(c->listen_addr, "10.0.0.7");
	assert_int_equal(c->listen_port, 443);
	assert_int_equal(c->max_conns, 1000);
	assert_int_equal(c->idle_timeout_s, 30);
	assert_int_equal(c->header_timeout_s, 5);
	assert_int_equal(c->sse_keepalive_s, 20);
	assert_int_equal(c->ws_max_message, 1048576);
	assert_int_equal(c->max_pending_bytes, 65536);
	assert_false(c->pin_workers);
	assert_string_equal(c->chan_path, "/dev/hugepages/sluice#1");
	assert_int_equal(c->ring_bytes, 268435456);
	assert_string_equal(c->admin_socket, "/run/sluice/admin.sock");
	assert_string_equal(c->store, "/var/lib/sluice");
	assert_int_equal(c->batch_mode, CONF_BATCH_OFF);
	assert_int_equal(c->max_delay_us, 0);
	assert_int_equal(c->max_bytes, 64);
	assert_int_equal(c->nbackends, 2);

	const struct conf_backend *a = &c->backends[0];
	assert_string_equal(a->name, "fast-1");
	assert_int_equal(a->nmodels, 3);
	assert_string_equal(a->models[0], "synthetic-fast");
	assert_string_equal(a->models[1], "synthetic-tiny");
	assert_string_equal(a->models[2], "x:7b");
	assert_int_equal(a->ttft_ms, 0);
	assert_int_equal(a->tokens_per_s, 1000);
	assert_int_equal(a->answer_tokens, 5);
	assert_int_equal(a->max_concurrency, 4);
	assert_int_equal(a->context_window, 32768);
	assert_true(a->cost_in_per_mtok > 0.1499 && a->cost_in_per_mtok < 0.1501);
	assert_true(a->cost_out_per_mtok == 12.0);

	const struct conf_backend *b = &c->backends[1];
	assert_string_equal(b->name, "Slow_2");
	assert_int_equal(b->nmodels, 1);
	assert_string_equal(b->models[0], "synthetic-slow");
	assert_int_equal(b->tokens_per_s, 1);
	assert_int_equal(b->answer_tokens, 32);

	assert_ptr_equal(conf_backend_for_model(c, "synthetic-tiny"), a);
	assert_ptr_equal(conf_backend_for_model(c, "x:7b"), a);
	assert_ptr_equal(conf_backend_for_model(c, "synthetic-slow"), b);
	assert_null(conf_backend_for_model(c, "synthetic"));
	assert_null(conf_backend_for_model(c, "synthetic-slo"));
	assert_null(conf_backend_for_model(c, NULL));
	free(c);
}

/* The limits themselves are accepted: 16 backends, 16 models, a 4096-byte
 * line, a 255-byte path, a 107-byte socket path, 63-byte names. */
static void test_limits_accepted(void **state)
{
	(void)state;
	size_t cap = 64 * 1024;
	char *s = calloc(1, cap);
	assert_non_null(s);
	size_t n = 0;
	n += (size_t)snprintf(s + n, cap - n, "#%04095d\n", 0); /* "#" + 4095 digits */
	n += (size_t)snprintf(s + n, cap - n, "[channel]\npath = /%0254d\n", 0);
	n += (size_t)snprintf(s + n, cap - n, "[control]\nadmin_socket = /%0106d\n", 0);
	for (int b = 0; b < CONF_MAX_BACKENDS; b++) {
		n += (size_t)snprintf(s + n, cap - n, "[backend.b%02d%060d]\ntype = synthetic\nmodels = ",
				      b, 0);
		for (int m = 0; m < CONF_MAX_MODELS; m++)
			n += (size_t)snprintf(s + n, cap - n, "%sm%02d-%02d%057d", m ? "," : "", b, m,
					      0);
		n += (size_t)snprintf(s + n, cap - n, "\n");
	}
	assert_true(n < cap - 1);
	struct sluice_conf *c = load_ok(s);
	assert_int_equal(strlen(c->chan_path), 255);
	assert_int_equal(strlen(c->admin_socket), 107);
	assert_int_equal(c->nbackends, CONF_MAX_BACKENDS);
	assert_int_equal(strlen(c->backends[15].name), 63);
	assert_int_equal(c->backends[15].nmodels, CONF_MAX_MODELS);
	assert_int_equal(strlen(c->backends[15].models[15]), 63);
	char want[64];
	snprintf(want, sizeof(want), "m15-07%057d", 0);
	assert_ptr_equal(conf_backend_for_model(c, want), &c->backends[15]);
	free(c);
	free(s);
}

static void test_firmware_conf_loads(void **state)
{
	(void)state;
	struct sluice_conf *c = new_conf();
	char err[512] = "";
	int rc = conf_load(SLUICE_FIRMWARE_CONF, c, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	assert_int_equal(c->transport, CONF_TRANSPORT_KERNEL);
	assert_int_equal(c->workers, 2);
	assert_string_equal(c->listen_addr, "127.0.0.1");
	assert_int_equal(c->listen_port, 8080);
	assert_string_equal(c->chan_path, "/dev/shm/sluice");
	assert_string_equal(c->admin_socket, "/tmp/sluice-admin.sock");
	assert_string_equal(c->store, "/tmp/sluice-store");
	assert_int_equal(c->batch_mode, CONF_BATCH_ADAPTIVE);
	assert_int_equal(c->max_delay_us, 2000);
	assert_int_equal(c->max_bytes, 16384);
	assert_int_equal(c->nbackends, 1);
	const struct conf_backend *b = conf_backend_for_model(c, "synthetic");
	assert_non_null(b);
	assert_string_equal(b->name, "synthetic");
	assert_int_equal(b->ttft_ms, 200);
	assert_int_equal(b->tokens_per_s, 20);
	assert_int_equal(b->answer_tokens, 32);
	free(c);
}

static void test_err_structure(void **state)
{
	(void)state;
	expect_error("[foo]\n" MIN_BACKEND, 1, "unknown section [foo]");
	expect_error("[backend]\n", 1, "unknown section [backend]");
	expect_error("[dataplane]\n[channel]\n[dataplane]\n" MIN_BACKEND, 3,
		     "duplicate section [dataplane]");
	expect_error(MIN_BACKEND "[backend.b]\n", 4, "duplicate section [backend.b]");
	expect_error("[dataplane\nworkers = 1\n", 1, "bad section header '[dataplane'");
	expect_error("[dataplane] x\n", 1, "bad section header '[dataplane] x'");
	expect_error("[dataplane]#x\n", 1, "bad section header '[dataplane]#x'");
	expect_error("[backend.a b]\n", 1, "bad backend name 'a b' (1..63 of A-Z a-z 0-9 _ -)");
	expect_error("[backend.]\n", 1, "bad backend name '' (1..63 of A-Z a-z 0-9 _ -)");
	expect_error("workers = 2\n[dataplane]\n", 1, "key 'workers' outside a section");
	expect_error("\n# c\n[dataplane]\nworkers 2\n", 4, "missing '=' in 'workers 2'");
	expect_error("[dataplane]\n = 2\n", 2, "missing key before '='");
	expect_error("[dataplane]\nworker = 2\n", 2, "unknown key 'worker' in [dataplane]");
	expect_error("[channel]\nWorkers = 2\n", 2, "unknown key 'Workers' in [channel]");
	expect_error(MIN_BACKEND "url = http://x\n", 4, "unknown key 'url' in [backend.b]");
	expect_error("[dataplane]\nworkers = 2\n# again\nworkers = 2\n", 4,
		     "duplicate key 'workers'");
	expect_error(MIN_BACKEND "models = n\n", 4, "duplicate key 'models'");
	expect_error("[dataplane]\nworkers =\n", 2, "workers: empty value");
	expect_error("[dataplane]\nworkers = # nothing\n", 2, "workers: empty value");
}

static void test_err_numbers(void **state)
{
	(void)state;
	expect_error("[dataplane]\nworkers = 2x\n", 2, "workers: not a number: '2x'");
	expect_error("[dataplane]\nworkers = 2#x\n", 2, "workers: not a number: '2#x'");
	expect_error("[dataplane]\nworkers = 0x10\n", 2, "workers: not a number: '0x10'");
	expect_error("[dataplane]\nworkers = +2\n", 2, "workers: not a number: '+2'");
	expect_error("[dataplane]\nworkers = 2 3\n", 2, "workers: not a number: '2 3'");
	expect_error("[dataplane]\nworkers = -1\n", 2, "workers: must not be negative: '-1'");
	expect_error("[dataplane]\nworkers = 0\n", 2, "workers: out of range 1..64: '0'");
	expect_error("[dataplane]\nworkers = 65\n", 2, "workers: out of range 1..64: '65'");
	expect_error("[dataplane]\nmax_conns = 99999999999999999999999\n", 2,
		     "max_conns: out of range 1..1048576: '99999999999999999999999'");
	expect_error("[dataplane]\nidle_timeout_s = 4294967296\n", 2,
		     "idle_timeout_s: out of range 1..86400: '4294967296'");
	expect_error("[channel]\nring_bytes = 100000\n", 2,
		     "ring_bytes: not a power of two: '100000'");
	expect_error("[channel]\nring_bytes = 32768\n", 2,
		     "ring_bytes: out of range 65536..268435456: '32768'");
	expect_error("[channel]\nring_bytes = 536870912\n", 2,
		     "ring_bytes: out of range 65536..268435456: '536870912'");
	expect_error(MIN_BACKEND "tokens_per_s = 0\n", 4,
		     "tokens_per_s: out of range 1..1000000: '0'");
	expect_error(MIN_BACKEND "cost_in_per_mtok = -0.5\n", 4,
		     "cost_in_per_mtok: must not be negative: '-0.5'");
	expect_error(MIN_BACKEND "cost_out_per_mtok = 1e3\n", 4,
		     "cost_out_per_mtok: not a number: '1e3'");
	expect_error(MIN_BACKEND "cost_out_per_mtok = nan\n", 4,
		     "cost_out_per_mtok: not a number: 'nan'");
	expect_error(MIN_BACKEND "cost_out_per_mtok = 3.\n", 4,
		     "cost_out_per_mtok: not a number: '3.'");
	expect_error(MIN_BACKEND "cost_in_per_mtok = 1000000.5\n", 4,
		     "cost_in_per_mtok: out of range 0..1000000: '1000000.5'");
}

static void test_err_enums_and_listen(void **state)
{
	(void)state;
	expect_error("[dataplane]\ntransport = tap\n", 2,
		     "transport: expected kernel or dpdk: 'tap'");
	expect_error("[dataplane]\ntransport = Kernel\n", 2,
		     "transport: expected kernel or dpdk: 'Kernel'");
	expect_error("[batching]\nmode = on\n", 2, "mode: expected adaptive or off: 'on'");
	expect_error("[dataplane]\npin_workers = yes\n", 2,
		     "pin_workers: expected true or false: 'yes'");
	expect_error("[backend.b]\ntype = ollama\n", 2, "type: expected synthetic: 'ollama'");
	expect_error("[dataplane]\nlisten = 127.0.0.1\n", 2,
		     "listen: expected A.B.C.D:PORT: '127.0.0.1'");
	expect_error("[dataplane]\nlisten = :8080\n", 2, "listen: expected A.B.C.D:PORT: ':8080'");
	expect_error("[dataplane]\nlisten = 256.0.0.1:80\n", 2,
		     "listen: bad IPv4 address: '256.0.0.1:80'");
	expect_error("[dataplane]\nlisten = 10.0.1:80\n", 2, "listen: bad IPv4 address: '10.0.1:80'");
	expect_error("[dataplane]\nlisten = localhost:8080\n", 2,
		     "listen: bad IPv4 address: 'localhost:8080'");
	expect_error("[dataplane]\nlisten = 127.0.0.1:0\n", 2,
		     "listen: port out of range 1..65535: '127.0.0.1:0'");
	expect_error("[dataplane]\nlisten = 127.0.0.1:65536\n", 2,
		     "listen: port out of range 1..65535: '127.0.0.1:65536'");
	expect_error("[dataplane]\nlisten = 127.0.0.1:http\n", 2,
		     "listen: port not a number: '127.0.0.1:http'");
}

static void test_err_paths(void **state)
{
	(void)state;
	char buf[1024];
	snprintf(buf, sizeof(buf), "[channel]\npath = /%0255d\n", 0);
	expect_error(buf, 2, "path: longer than 255 bytes");
	snprintf(buf, sizeof(buf), "[control]\nadmin_socket = /%0107d\n", 0);
	expect_error(buf, 2, "admin_socket: longer than 107 bytes");
	expect_error("[control]\nstore = sluice-store\n", 2,
		     "store: not an absolute path: 'sluice-store'");

	char err[512], want[512];
	struct sluice_conf *c = new_conf();
	char longpath[300];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(conf_load(longpath, c, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: path longer than 255 bytes", longpath);
	assert_string_equal(err, want);
	assert_int_equal(conf_load("/nonexistent/sluice.conf", c, err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/sluice.conf: cannot open: No such file or directory");
	/* A message longer than the caller's buffer is cut visibly. */
	char small[16];
	assert_int_equal(conf_load("/nonexistent/sluice.conf", c, small, sizeof(small)), -1);
	assert_string_equal(small, "/nonexistent...");
	free(c);
}

static void test_err_backends(void **state)
{
	(void)state;
	expect_error("[dataplane]\nworkers = 1\n", 0, "no [backend.NAME] section");
	expect_error("", 0, "no [backend.NAME] section");
	expect_error("[backend.a]\nmodels = x\n[dataplane]\n", 1, "backend 'a' has no type");
	expect_error("[dataplane]\n[backend.a]\ntype = synthetic\n", 2, "backend 'a' has no models");
	expect_error("[backend.a]\ntype = synthetic\nmodels = x, y\n"
		     "[backend.b]\ntype = synthetic\nmodels = z,y\n",
		     6, "models: model 'y' is already served by backend 'a'");
	expect_error("[backend.a]\nmodels = x, y, x\n", 2, "models: model 'x' listed twice");
	expect_error("[backend.a]\nmodels = x,,y\n", 2, "models: empty model name");
	expect_error("[backend.a]\nmodels = x,\n", 2, "models: empty model name");
	expect_error("[backend.a]\nmodels = a b\n", 2, "models: bad model name 'a b'");

	char buf[8192];
	snprintf(buf, sizeof(buf), "[backend.a]\nmodels = %064d\n", 0);
	expect_error(buf, 2, "models: model name longer than 63 bytes");
	snprintf(buf, sizeof(buf), "[backend.%064d]\n", 0);
	char want[256];
	snprintf(want, sizeof(want), "bad backend name '%064d' (1..63 of A-Z a-z 0-9 _ -)", 0);
	expect_error(buf, 1, want);

	size_t n = (size_t)snprintf(buf, sizeof(buf), "[backend.a]\nmodels = m0");
	for (int i = 1; i <= CONF_MAX_MODELS; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",m%d", i);
	snprintf(buf + n, sizeof(buf) - n, "\n");
	expect_error(buf, 2, "models: more than 16 models");

	n = 0;
	for (int i = 0; i <= CONF_MAX_BACKENDS; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
				      "[backend.b%d]\ntype = synthetic\nmodels = m%d\n", i, i);
	expect_error(buf, 3 * CONF_MAX_BACKENDS + 1, "more than 16 backends");
}

static void test_err_lines(void **state)
{
	(void)state;
	char *buf = malloc(8192);
	assert_non_null(buf);
	int n = snprintf(buf, 8192, "[dataplane]\n#%04096d\n", 0);
	expect_error(buf, 2, "line longer than 4096 bytes");
	/* Also when the long line is the last one and has no newline. */
	buf[n - 1] = '\0';
	expect_error(buf, 2, "line longer than 4096 bytes");
	free(buf);

	static const char with_nul[] = "[dataplane]\nworkers = 2\0junk\n";
	expect_error_n(with_nul, sizeof(with_nul) - 1, 2, "NUL byte in line");
}

/* Comment rules in values: '#' or ';' glued to a word is data. */
static void test_semicolon_glued_is_data(void **state)
{
	(void)state;
	expect_error("[backend.a]  ; comment after header\ntype = synthetic;x\n", 2,
		     "type: expected synthetic: 'synthetic;x'");
	struct sluice_conf *c = load_ok("[backend.a]\t# c\ntype = synthetic\t;c\n"
					"models = a#b , c;d\t# models\n");
	assert_int_equal(c->backends[0].nmodels, 2);
	assert_string_equal(c->backends[0].models[0], "a#b");
	assert_string_equal(c->backends[0].models[1], "c;d");
	free(c);
}

/* A failed load must leave a previously loaded configuration intact. */
static void test_failed_reload_keeps_old(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok("[dataplane]\nworkers = 3\n" MIN_BACKEND);
	write_tmp("[dataplane]\nworkers = 4\n" MIN_BACKEND "[batching]\nmode = fast\n");
	char err[256];
	assert_int_equal(conf_load(tmp_path, c, err, sizeof(err)), -1);
	unlink(tmp_path);
	assert_int_equal(c->workers, 3);
	assert_int_equal(c->nbackends, 1);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_minimal_file_gets_defaults),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_limits_accepted),
		cmocka_unit_test(test_firmware_conf_loads),
		cmocka_unit_test(test_err_structure),
		cmocka_unit_test(test_err_numbers),
		cmocka_unit_test(test_err_enums_and_listen),
		cmocka_unit_test(test_err_paths),
		cmocka_unit_test(test_err_backends),
		cmocka_unit_test(test_err_lines),
		cmocka_unit_test(test_semicolon_glued_is_data),
		cmocka_unit_test(test_failed_reload_keeps_old),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

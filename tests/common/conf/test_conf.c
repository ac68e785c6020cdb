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

#include <arpa/inet.h>
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
	assert_int_equal(c->kernel_send, CONF_KSEND_AUTO);
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
	assert_int_equal(c->worker_slice_us, 100);
	assert_string_equal(c->chan_path, "/dev/shm/sluice");
	assert_int_equal(c->ring_bytes, 8388608);
	assert_string_equal(c->admin_socket, "/tmp/sluice-admin.sock");
	assert_string_equal(c->store, "/tmp/sluice-store");
	assert_int_equal(c->batch_mode, CONF_BATCH_ADAPTIVE);
	assert_int_equal(c->max_delay_us, 2000);
	assert_int_equal(c->max_bytes, 16384);
	assert_int_equal(c->nbackends, 0);
	assert_false(c->ws_echo);
	assert_string_equal(c->lcores, "1");
	assert_string_equal(c->eal_args, "");
	assert_int_equal(c->tcp_snd_buf, 65536);
	assert_int_equal(c->tcp_rcv_buf, 65536);
	assert_int_equal(c->tcp_syn_backlog, 1024);
	assert_int_equal(c->tcp_time_wait_max, 4096);
	assert_int_equal(c->tcp_keepalive_s, 75);
	for (int i = 0; i < CONF_MAX_PORTS; i++) {
		const struct conf_port *port = &c->ports[i];
		assert_false(port->present);
		assert_string_equal(port->device, "");
		assert_int_equal(port->ipv4, 0);
		assert_int_equal(port->prefix, 0);
		assert_int_equal(port->gateway, 0);
		assert_int_equal(port->mtu, 1500);
		assert_int_equal(port->rx_desc, 1024);
		assert_int_equal(port->tx_desc, 1024);
		assert_int_equal(port->mbufs, 16383);
	}
	assert_int_equal(c->admin_socket_mode, 0600);
	assert_string_equal(c->admin_socket_owner, "");
	assert_string_equal(c->admin_socket_group, "");
	assert_int_equal(c->token_commit_ms, 50);
	assert_int_equal(c->store_map_mb, 1024);
	assert_int_equal(c->session_ttl_s, 86400);
	assert_int_equal(c->norigins, 2);
	assert_string_equal(c->allowed_origins[0], "http://127.0.0.1:8080");
	assert_string_equal(c->allowed_origins[1], "http://localhost:8080");
	assert_int_equal(c->login_max_inflight, 4);
	assert_int_equal(c->login_fail_user, 5);
	assert_int_equal(c->login_fail_ip, 20);
	assert_int_equal(c->login_window_s, 300);
	assert_int_equal(c->pwhash_ops, 2);
	assert_int_equal(c->pwhash_mem_kib, 65536);
	assert_false(c->cookie_secure);
	assert_int_equal(c->nagents, 0);
	assert_null(conf_agent_find(c, "assistant"));
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
	assert_string_equal(c->lcores, "1");
	assert_int_equal(c->admin_socket_mode, d->admin_socket_mode);
	assert_int_equal(c->token_commit_ms, d->token_commit_ms);
	assert_int_equal(c->session_ttl_s, d->session_ttl_s);
	assert_int_equal(c->norigins, d->norigins);
	assert_int_equal(c->pwhash_mem_kib, d->pwhash_mem_kib);
	assert_false(c->ports[0].present);
	free(d);
	free(c);
}

/* No [agent.*]: one agent "assistant" on the first model of the first backend. */
static void test_default_agent(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok("[backend.a]\ntype = synthetic\nmodels = first, second\n"
					"[backend.b]\ntype = synthetic\nmodels = third\n");
	assert_int_equal(c->nagents, 1);
	const struct conf_agent *ag = conf_agent_find(c, "assistant");
	assert_non_null(ag);
	assert_ptr_equal(ag, &c->agents[0]);
	assert_string_equal(ag->model, "first");
	assert_string_equal(ag->description, "General-purpose assistant");
	assert_string_equal(ag->system_prompt, "");
	assert_null(conf_agent_find(c, "Assistant"));
	assert_null(conf_agent_find(c, "assistan"));
	assert_null(conf_agent_find(c, NULL));
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
	"kernel_send = sendmsg\n"
	"worker_slice_us = 0\n"
	"ws_echo = true\n"
	"lcores = 2-5, 7,9-10 ,12\n"
	"eal_args = --huge-dir /dev/hugepages -n 4 --file-prefix=sl#1\n"
	"[tcp]\n"
	"snd_buf = 4096\n"
	"rcv_buf = 16777216\n"
	"syn_backlog = 1\n"
	"time_wait_max = 1048576\n"
	"keepalive_s = 86400\n"
	"[port.0]\n"
	"device = 0000:01:00.0\n"
	"ipv4 = 10.0.0.7/24\n"
	"gateway = 10.0.0.1\n"
	"mtu = 9000\n"
	"rx_desc = 64\n"
	"tx_desc = 16384\n"
	"mbufs = 16449\n"
	"[port.7]\n"
	"ipv4 = 192.168.7.1/32\n"
	"device = net_tap0,iface=sl0\n"
	"\t[channel]\t\n"
	"path = /dev/hugepages/sluice#1\n"
	"ring_bytes = 268435456\n"
	"[control]\r\n"
	"admin_socket = /run/sluice/admin.sock\r\n"
	"store = /var/lib/sluice\r\n"
	"admin_socket_mode = 0660\n"
	"admin_socket_owner = _sluice\n"
	"admin_socket_group = sluice-ops$\n"
	"token_commit_ms = 10000\n"
	"store_map_mb = 16\n"
	"[auth]\n"
	"session_ttl_s = 60\n"
	"allowed_origins = https://chat.example.com , http://10.0.0.7:8080,https://[::1]:8443\n"
	"login_max_inflight = 64\n"
	"login_fail_user = 1\n"
	"login_fail_ip = 10000\n"
	"login_window_s = 86400\n"
	"pwhash_ops = 1\n"
	"pwhash_mem_kib = 8\n"
	"cookie_secure = true\n"
	"[agent.coder]\n"
	"model = synthetic-slow\n"
	"description = Writes C#, reviews it; # trailing comment\n"
	"system_prompt = You are terse. Answer in \xc3\xa9l\xc3\xa9gant C11.\tNo C# or C++.\n"
	"[agent.t]\n"
	"model = x:7b\n"
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
	assert_int_equal(c->kernel_send, CONF_KSEND_SENDMSG);
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
	assert_int_equal(c->worker_slice_us, 0);
	assert_true(c->ws_echo);
	assert_string_equal(c->lcores, "2-5, 7,9-10 ,12");
	assert_string_equal(c->eal_args, "--huge-dir /dev/hugepages -n 4 --file-prefix=sl#1");
	assert_int_equal(c->tcp_snd_buf, 4096);
	assert_int_equal(c->tcp_rcv_buf, 16777216);
	assert_int_equal(c->tcp_syn_backlog, 1);
	assert_int_equal(c->tcp_time_wait_max, 1048576);
	assert_int_equal(c->tcp_keepalive_s, 86400);

	const struct conf_port *p0 = &c->ports[0];
	assert_true(p0->present);
	assert_string_equal(p0->device, "0000:01:00.0");
	assert_int_equal(p0->ipv4, htonl(0x0a000007));
	assert_int_equal(p0->prefix, 24);
	assert_int_equal(p0->gateway, htonl(0x0a000001));
	assert_int_equal(p0->mtu, 9000);
	assert_int_equal(p0->rx_desc, 64);
	assert_int_equal(p0->tx_desc, 16384);
	assert_int_equal(p0->mbufs, 16449);
	const struct conf_port *p7 = &c->ports[7];
	assert_true(p7->present);
	assert_string_equal(p7->device, "net_tap0,iface=sl0");
	assert_int_equal(p7->ipv4, htonl(0xc0a80701));
	assert_int_equal(p7->prefix, 32);
	assert_int_equal(p7->gateway, 0);
	assert_int_equal(p7->mtu, 1500);
	assert_int_equal(p7->rx_desc, 1024);
	assert_int_equal(p7->tx_desc, 1024);
	assert_int_equal(p7->mbufs, 16383);
	for (int i = 1; i < 7; i++)
		assert_false(c->ports[i].present);

	assert_string_equal(c->chan_path, "/dev/hugepages/sluice#1");
	assert_int_equal(c->ring_bytes, 268435456);
	assert_string_equal(c->admin_socket, "/run/sluice/admin.sock");
	assert_string_equal(c->store, "/var/lib/sluice");
	assert_int_equal(c->admin_socket_mode, 0660);
	assert_string_equal(c->admin_socket_owner, "_sluice");
	assert_string_equal(c->admin_socket_group, "sluice-ops$");
	assert_int_equal(c->token_commit_ms, 10000);
	assert_int_equal(c->store_map_mb, 16);
	assert_int_equal(c->session_ttl_s, 60);
	assert_int_equal(c->norigins, 3);
	assert_string_equal(c->allowed_origins[0], "https://chat.example.com");
	assert_string_equal(c->allowed_origins[1], "http://10.0.0.7:8080");
	assert_string_equal(c->allowed_origins[2], "https://[::1]:8443");
	assert_int_equal(c->login_max_inflight, 64);
	assert_int_equal(c->login_fail_user, 1);
	assert_int_equal(c->login_fail_ip, 10000);
	assert_int_equal(c->login_window_s, 86400);
	assert_int_equal(c->pwhash_ops, 1);
	assert_int_equal(c->pwhash_mem_kib, 8);
	assert_true(c->cookie_secure);

	/* Agents may name models of backends defined further down. */
	assert_int_equal(c->nagents, 2);
	const struct conf_agent *coder = conf_agent_find(c, "coder");
	assert_ptr_equal(coder, &c->agents[0]);
	assert_string_equal(coder->model, "synthetic-slow");
	assert_string_equal(coder->description, "Writes C#, reviews it;");
	assert_string_equal(coder->system_prompt,
			    "You are terse. Answer in \xc3\xa9l\xc3\xa9gant C11.\tNo C# or C++.");
	const struct conf_agent *t = conf_agent_find(c, "t");
	assert_ptr_equal(t, &c->agents[1]);
	assert_string_equal(t->model, "x:7b");
	assert_string_equal(t->description, "");
	assert_null(conf_agent_find(c, "assistant"));

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
	assert_int_equal(c->admin_socket_mode, 0600);
	assert_int_equal(c->token_commit_ms, 50);
	assert_int_equal(c->store_map_mb, 1024);
	assert_int_equal(c->session_ttl_s, 86400);
	assert_int_equal(c->norigins, 2);
	assert_string_equal(c->allowed_origins[0], "http://127.0.0.1:8080");
	assert_string_equal(c->allowed_origins[1], "http://localhost:8080");
	assert_int_equal(c->login_max_inflight, 4);
	assert_int_equal(c->pwhash_ops, 2);
	assert_int_equal(c->pwhash_mem_kib, 65536);
	assert_false(c->cookie_secure);
	assert_string_equal(c->lcores, "1-2");
	assert_int_equal(c->nagents, 1);
	const struct conf_agent *ag = conf_agent_find(c, "assistant");
	assert_non_null(ag);
	assert_string_equal(ag->model, "synthetic");
	assert_string_equal(ag->description, "General-purpose assistant");
	assert_string_equal(ag->system_prompt,
			    "You are a helpful assistant. Answer clearly and briefly.");
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
	expect_error(MIN_BACKEND "uri = http://x\n", 4, "unknown key 'uri' in [backend.b]");
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
	/* Records must carry a 1 MiB body plus 64 KiB of fields. */
	expect_error("[control]\n[channel]\nring_bytes = 4194304\n", 3,
		     "ring_bytes: records of a 4194304-byte ring carry at most 1048568 bytes, less than "
		     "a 1 MiB request body plus 64 KiB of fields; use 8388608 or more");
	expect_error("[channel]\nring_bytes = 65536\n", 2,
		     "ring_bytes: records of a 65536-byte ring carry at most 16376 bytes, less than "
		     "a 1 MiB request body plus 64 KiB of fields; use 8388608 or more");
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
	expect_error("[dataplane]\nkernel_send = io_uring\n", 2,
		     "kernel_send: expected auto, uring or sendmsg: 'io_uring'");
	expect_error("[dataplane]\npin_workers = yes\n", 2,
		     "pin_workers: expected true or false: 'yes'");
	/* 0 or the kernel's range of custom slices; 1..99 µs is neither. */
	expect_error("[dataplane]\nworker_slice_us = 50\n", 2,
		     "worker_slice_us: expected 0 or 100..100000: '50'");
	expect_error("[dataplane]\nworker_slice_us = 100001\n", 2,
		     "worker_slice_us: expected 0 or 100..100000: '100001'");
	expect_error("[dataplane]\nworker_slice_us = -1\n", 2,
		     "worker_slice_us: expected 0 or 100..100000: '-1'");
	expect_error("[backend.b]\ntype = vllm\n", 2, "type: expected synthetic, openai or ollama: 'vllm'");
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


/* Network backends (openai, ollama), several backends per model, [model.NAME]
 * prices, and their errors. */
static void test_network_backends(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok(
		"[backend.up]\ntype = openai\nurl = https://api.example.com/v1x\nmodels = gpt-x, shared\n"
		"api_key_env = UP_KEY\nheaders = X-Org: acme | X-Team:  blue team \n"
		"ca_file = /etc/ssl/ca.pem\nweight = 3\nmax_concurrency = 2\nmax_queue = 5\n"
		"connect_timeout_ms = 100\nfirst_token_timeout_ms = 200\nidle_timeout_ms = 300\n"
		"health_interval_ms = 0\nbreaker_failures = 2\nbreaker_open_ms = 400\n"
		"[backend.local]\ntype = ollama\nurl = http://127.0.0.1:11434\nmodels = shared\n"
		"[backend.any]\ntype = openai\nurl = http://[::1]:8000\n"
		"[model.shared]\ncost_in_per_mtok = 1.5\ncost_out_per_mtok = 3\ncontext_window = 4096\n"
		"[agent.a]\nmodel = discovered-later\n");
	const struct conf_backend *up = &c->backends[0];
	assert_int_equal(up->type, CONF_BACKEND_OPENAI);
	assert_string_equal(up->url, "https://api.example.com/v1x");
	assert_string_equal(up->api_key_env, "UP_KEY");
	assert_string_equal(up->headers, "X-Org: acme | X-Team:  blue team");
	assert_string_equal(up->ca_file, "/etc/ssl/ca.pem");
	assert_int_equal(up->weight, 3);
	assert_int_equal(up->max_queue, 5);
	assert_int_equal(up->connect_timeout_ms, 100);
	assert_int_equal(up->first_token_timeout_ms, 200);
	assert_int_equal(up->idle_timeout_ms, 300);
	assert_int_equal(up->health_interval_ms, 0);
	assert_int_equal(up->breaker_failures, 2);
	assert_int_equal(up->breaker_open_ms, 400);
	assert_int_equal(c->backends[1].type, CONF_BACKEND_OLLAMA);
	assert_int_equal(c->backends[1].weight, 1);
	assert_int_equal(c->backends[1].max_queue, 64);
	assert_int_equal(c->backends[1].connect_timeout_ms, 5000);
	assert_int_equal(c->backends[2].nmodels, 0);
	assert_ptr_equal(conf_backend_for_model(c, "shared"), up);
	struct conf_model m;
	conf_model_terms(c, "shared", &m);
	assert_int_equal(m.context_window, 4096);
	assert_true(m.cost_in_per_mtok == 1.5 && m.cost_out_per_mtok == 3.0);
	assert_true(conf_model_cost(c, "shared", 1000000, 2000000) == 7.5);
	conf_model_terms(c, "gpt-x", &m);
	assert_int_equal(m.context_window, 8192);
	assert_true(conf_model_cost(c, "gpt-x", 10, 10) == 0.0);
	free(c);

	expect_error("[backend.a]\ntype = openai\nmodels = m\n", 1, "backend 'a' has no url");
	expect_error("[backend.a]\ntype = openai\nurl = ftp://x\n", 3,
		     "url: expected http(s)://host[:port][/path] without a trailing '/': 'ftp://x'");
	expect_error("[backend.a]\ntype = openai\nurl = http://x/\n", 3,
		     "url: expected http(s)://host[:port][/path] without a trailing '/': 'http://x/'");
	expect_error("[backend.a]\ntype = openai\nurl = http://x:0\n", 3,
		     "url: expected http(s)://host[:port][/path] without a trailing '/': 'http://x:0'");
	expect_error("[backend.a]\nurl = http://x?q=1\n", 2,
		     "url: expected http(s)://host[:port][/path] without a trailing '/': 'http://x?q=1'");
	expect_error("[backend.a]\napi_key_env = 9KEY\n", 2,
		     "api_key_env: bad variable name '9KEY' (1..63 of A-Z a-z 0-9 _, not first a digit)");
	expect_error("[backend.a]\napi_key_env = A-B\n", 2,
		     "api_key_env: bad variable name 'A-B' (1..63 of A-Z a-z 0-9 _, not first a digit)");
	expect_error("[backend.a]\nheaders = X-A 1\n", 2,
		     "headers: bad header 'X-A 1' (Name: value, separated by |)");
	expect_error("[backend.a]\nheaders = X-A: 1 | : 2\n", 2,
		     "headers: bad header ': 2' (Name: value, separated by |)");
	expect_error("[backend.a]\nweight = 0\n", 2, "weight: out of range 1..1000: '0'");
	expect_error("[model.a b]\n", 1, "bad model name 'a b' (1..63 printable bytes, no blanks)");
	expect_error(MIN_BACKEND "[model.m]\n[model.m]\n", 5, "duplicate section [model.m]");
	expect_error(MIN_BACKEND "[model.m]\ncost = 1\n", 5, "unknown key 'cost' in [model.m]");
	expect_error("[backend.a]\ntype = openai\nurl = http://x\n", 0,
		     "no [agent.NAME] and no backend lists models: give one of them a model");
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
		     "type: expected synthetic, openai or ollama: 'synthetic;x'");
	struct sluice_conf *c = load_ok("[backend.a]\t# c\ntype = synthetic\t;c\n"
					"models = a#b , c;d\t# models\n");
	assert_int_equal(c->backends[0].nmodels, 2);
	assert_string_equal(c->backends[0].models[0], "a#b");
	assert_string_equal(c->backends[0].models[1], "c;d");
	free(c);
}

static void test_err_dataplane_new(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok("[dataplane]\nworkers = 3\n" MIN_BACKEND);
	assert_string_equal(c->lcores, "1-3");
	free(c);
	c = load_ok("[dataplane]\nworkers = 64\n" MIN_BACKEND);
	assert_string_equal(c->lcores, "1-64");
	free(c);
	c = load_ok("[dataplane]\nlcores = 127,0\nworkers = 2\n" MIN_BACKEND);
	assert_string_equal(c->lcores, "127,0");
	free(c);

	expect_error("[dataplane]\nlcores = 1,2\n" MIN_BACKEND, 2, "lcores: 2 lcores for 1 workers");
	expect_error("[dataplane]\nlcores = 1-4\nworkers = 3\n" MIN_BACKEND, 2,
		     "lcores: 4 lcores for 3 workers");
	expect_error("[dataplane]\nlcores = 1,2-3,3\n", 2, "lcores: lcore 3 listed twice");
	static const char *const bad_lcores[] = { "128", "1-128", "3-1", "1-", "-1", "1,,2", "1,",
						  "a", "1 2", "0x1", "1-2-3" };
	for (size_t i = 0; i < sizeof(bad_lcores) / sizeof(bad_lcores[0]); i++) {
		char buf[128], want[160];
		snprintf(buf, sizeof(buf), "[dataplane]\nlcores = %s\n", bad_lcores[i]);
		snprintf(want, sizeof(want),
			 "lcores: bad lcore list '%s' (N or N-M, comma separated, 0..127)",
			 bad_lcores[i]);
		expect_error(buf, 2, want);
	}
	char buf[1024];
	snprintf(buf, sizeof(buf), "[dataplane]\nlcores = 1%0127d\n", 0);
	expect_error(buf, 2, "lcores: longer than 127 bytes");
	snprintf(buf, sizeof(buf), "[dataplane]\neal_args = -%0511d\n", 0);
	expect_error(buf, 2, "eal_args: longer than 511 bytes");
	snprintf(buf, sizeof(buf), "[dataplane]\neal_args = -%0510d\n" MIN_BACKEND, 0);
	c = load_ok(buf);
	assert_int_equal(strlen(c->eal_args), 511);
	free(c);
	expect_error("[dataplane]\neal_args = a\x01" "b\n", 2, "eal_args: control byte in text");
	expect_error("[dataplane]\neal_args =\n", 2, "eal_args: empty value");
}

static void test_err_tcp(void **state)
{
	(void)state;
	expect_error("[tcp]\nsnd_buf = 4095\n", 2, "snd_buf: out of range 4096..16777216: '4095'");
	expect_error("[tcp]\nrcv_buf = 16777217\n", 2,
		     "rcv_buf: out of range 4096..16777216: '16777217'");
	expect_error("[tcp]\nsyn_backlog = 0\n", 2, "syn_backlog: out of range 1..1048576: '0'");
	expect_error("[tcp]\ntime_wait_max = 1048577\n", 2,
		     "time_wait_max: out of range 1..1048576: '1048577'");
	expect_error("[tcp]\nkeepalive_s = 86401\n", 2, "keepalive_s: out of range 1..86400: '86401'");
	expect_error("[tcp]\nkeepalive_s = 5m\n", 2, "keepalive_s: not a number: '5m'");
	expect_error("[tcp]\nmss = 1460\n", 2, "unknown key 'mss' in [tcp]");
	expect_error("[tcp]\n[tcp]\n", 2, "duplicate section [tcp]");
}

#define DPDK_PORT0 "[dataplane]\ntransport = dpdk\n[port.0]\ndevice = net_null0\nipv4 = 10.0.0.2/24\n"

static void test_ports(void **state)
{
	(void)state;
	/* A port is accepted (and ignored by the dataplane) with the kernel transport. */
	struct sluice_conf *c = load_ok("[port.3]\ndevice = 0000:03:00.1\nipv4 = 10.1.2.3/8\n"
					"gateway = 10.255.255.254\n" MIN_BACKEND);
	assert_int_equal(c->transport, CONF_TRANSPORT_KERNEL);
	assert_true(c->ports[3].present);
	assert_false(c->ports[0].present);
	assert_int_equal(c->ports[3].prefix, 8);
	assert_int_equal(c->ports[3].gateway, htonl(0x0afffffe));
	free(c);

	c = load_ok(DPDK_PORT0 MIN_BACKEND);
	assert_int_equal(c->transport, CONF_TRANSPORT_DPDK);
	assert_string_equal(c->ports[0].device, "net_null0");
	assert_int_equal(c->ports[0].ipv4, htonl(0x0a000002));
	free(c);

	expect_error("[dataplane]\nworkers = 1\ntransport = dpdk\n" MIN_BACKEND, 3,
		     "transport = dpdk needs a [port.0] section");
	expect_error("[dataplane]\ntransport = dpdk\n[port.1]\ndevice = d\nipv4 = 1.2.3.4/24\n"
		     MIN_BACKEND, 2, "transport = dpdk needs a [port.0] section");
	expect_error("[port.0]\nipv4 = 10.0.0.2/24\n[dataplane]\n", 1, "port '0' has no device");
	expect_error("[port.0]\ndevice = d\n", 1, "port '0' has no ipv4");
	expect_error("[port.8]\n", 1, "bad port number '8' (0..7)");
	expect_error("[port.00]\n", 1, "bad port number '00' (0..7)");
	expect_error("[port.x]\n", 1, "bad port number 'x' (0..7)");
	expect_error("[port.]\n", 1, "bad port number '' (0..7)");
	expect_error("[port]\n", 1, "unknown section [port]");
	expect_error("[port.1]\ndevice = d\nipv4 = 1.2.3.4/24\n[port.1]\n", 4,
		     "duplicate section [port.1]");
	expect_error("[port.1]\nmtu = 1500\nspeed = 10g\n", 3, "unknown key 'speed' in [port.1]");
	expect_error("[port.1]\ndevice = a b\n", 2, "device: bad device 'a b' (printable, no blanks)");
	char buf[512];
	snprintf(buf, sizeof(buf), "[port.1]\ndevice = d%0255d\n", 0);
	expect_error(buf, 2, "device: longer than 255 bytes");
	expect_error("[port.1]\nipv4 = 10.0.0.2\n", 2, "ipv4: expected A.B.C.D/PREFIX: '10.0.0.2'");
	expect_error("[port.1]\nipv4 = /24\n", 2, "ipv4: expected A.B.C.D/PREFIX: '/24'");
	expect_error("[port.1]\nipv4 = 10.0.0.256/24\n", 2,
		     "ipv4: bad IPv4 address: '10.0.0.256/24'");
	expect_error("[port.1]\nipv4 = 10.0.0.2/0\n", 2, "ipv4: prefix out of range 1..32: '10.0.0.2/0'");
	expect_error("[port.1]\nipv4 = 10.0.0.2/33\n", 2,
		     "ipv4: prefix out of range 1..32: '10.0.0.2/33'");
	expect_error("[port.1]\nipv4 = 10.0.0.2/\n", 2, "ipv4: prefix out of range 1..32: '10.0.0.2/'");
	expect_error("[port.1]\ngateway = 10.0.0.1/24\n", 2,
		     "gateway: bad IPv4 address: '10.0.0.1/24'");
	/* The gateway is checked against the subnet when the section ends. */
	expect_error("[port.2]\ngateway = 10.0.1.1\ndevice = d\nipv4 = 10.0.0.2/24\n" MIN_BACKEND, 2,
		     "gateway: 10.0.1.1 is outside 10.0.0.2/24");
	expect_error("[port.2]\ndevice = d\nipv4 = 10.0.0.2/32\ngateway = 10.0.0.3\n", 4,
		     "gateway: 10.0.0.3 is outside 10.0.0.2/32");
	expect_error("[port.1]\nmtu = 575\n", 2, "mtu: out of range 576..9000: '575'");
	expect_error("[port.1]\nmtu = 9001\n", 2, "mtu: out of range 576..9000: '9001'");
	expect_error("[port.1]\nrx_desc = 1000\n", 2, "rx_desc: not a power of two: '1000'");
	expect_error("[port.1]\nrx_desc = 32\n", 2, "rx_desc: out of range 64..16384: '32'");
	expect_error("[port.1]\ntx_desc = 32768\n", 2, "tx_desc: out of range 64..16384: '32768'");
	expect_error("[port.1]\nmbufs = 254\n", 2, "mbufs: out of range 255..16777215: '254'");
	expect_error("[port.1]\ndevice = d\nipv4 = 1.2.3.4/24\nmbufs = 2048\n" MIN_BACKEND, 1,
		     "port '1': mbufs 2048 must exceed rx_desc + tx_desc (2048)");
	c = load_ok("[port.1]\ndevice = d\nipv4 = 1.2.3.4/24\nmbufs = 2049\n" MIN_BACKEND);
	assert_int_equal(c->ports[1].mbufs, 2049);
	free(c);
}

static void test_err_control_new(void **state)
{
	(void)state;
	static const struct {
		const char *v;
		uint32_t mode;
	} good[] = { { "0600", 0600 }, { "660", 0660 }, { "0", 0 }, { "0775", 0775 }, { "0644", 0644 } };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char buf[128];
		snprintf(buf, sizeof(buf), "[control]\nadmin_socket_mode = %s\n" MIN_BACKEND, good[i].v);
		struct sluice_conf *c = load_ok(buf);
		assert_int_equal(c->admin_socket_mode, good[i].mode);
		free(c);
	}
	expect_error("[control]\nadmin_socket_mode = 0666\n", 2,
		     "admin_socket_mode: must not be writable by others: '0666'");
	expect_error("[control]\nadmin_socket_mode = 0602\n", 2,
		     "admin_socket_mode: must not be writable by others: '0602'");
	expect_error("[control]\nadmin_socket_mode = 1770\n", 2,
		     "admin_socket_mode: out of range 0..0777: '1770'");
	expect_error("[control]\nadmin_socket_mode = 4750\n", 2,
		     "admin_socket_mode: out of range 0..0777: '4750'");
	static const char *const bad_modes[] = { "0o600", "0680", "00600", "rw", "-600", "0x1ff" };
	for (size_t i = 0; i < sizeof(bad_modes) / sizeof(bad_modes[0]); i++) {
		char buf[128], want[128];
		snprintf(buf, sizeof(buf), "[control]\nadmin_socket_mode = %s\n", bad_modes[i]);
		snprintf(want, sizeof(want),
			 "admin_socket_mode: expected an octal mode like 0660: '%s'", bad_modes[i]);
		expect_error(buf, 2, want);
	}

	struct sluice_conf *c = load_ok("[control]\nadmin_socket_owner = www-data\n"
					"admin_socket_group = G.1_x\n" MIN_BACKEND);
	assert_string_equal(c->admin_socket_owner, "www-data");
	assert_string_equal(c->admin_socket_group, "G.1_x");
	free(c);
	char name32[64];
	snprintf(name32, sizeof(name32), "u%031d", 0);
	char buf[256];
	snprintf(buf, sizeof(buf), "[control]\nadmin_socket_owner = %s\n" MIN_BACKEND, name32);
	c = load_ok(buf);
	assert_string_equal(c->admin_socket_owner, name32);
	free(c);
	static const char *const bad_names[] = { "-root", "1abc", "a b", "ro$ot", "$", "a/b",
						 "u000000000000000000000000000000000" };
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		char want[160];
		snprintf(buf, sizeof(buf), "[control]\nadmin_socket_group = %s\n", bad_names[i]);
		snprintf(want, sizeof(want),
			 "admin_socket_group: bad name '%s' (1..32 of A-Z a-z 0-9 _ . -, first a "
			 "letter or _)",
			 bad_names[i]);
		expect_error(buf, 2, want);
	}
	expect_error("[control]\nadmin_socket_owner = 0\n", 2,
		     "admin_socket_owner: bad name '0' (1..32 of A-Z a-z 0-9 _ . -, first a letter "
		     "or _)");
	expect_error("[control]\ntoken_commit_ms = 0\n", 2,
		     "token_commit_ms: out of range 1..10000: '0'");
	expect_error("[control]\ntoken_commit_ms = 10001\n", 2,
		     "token_commit_ms: out of range 1..10000: '10001'");
	expect_error("[control]\nstore_map_mb = 15\n", 2, "store_map_mb: out of range 16..1048576: '15'");
	expect_error("[control]\nstore_map_mb = 1048577\n", 2,
		     "store_map_mb: out of range 16..1048576: '1048577'");
}

static void test_err_auth(void **state)
{
	(void)state;
	expect_error("[auth]\nsession_ttl_s = 59\n", 2,
		     "session_ttl_s: out of range 60..31536000: '59'");
	expect_error("[auth]\nsession_ttl_s = 31536001\n", 2,
		     "session_ttl_s: out of range 60..31536000: '31536001'");
	expect_error("[auth]\nlogin_max_inflight = 0\n", 2,
		     "login_max_inflight: out of range 1..64: '0'");
	expect_error("[auth]\nlogin_max_inflight = 65\n", 2,
		     "login_max_inflight: out of range 1..64: '65'");
	expect_error("[auth]\nlogin_fail_user = 1001\n", 2,
		     "login_fail_user: out of range 1..1000: '1001'");
	expect_error("[auth]\nlogin_fail_ip = 0\n", 2, "login_fail_ip: out of range 1..10000: '0'");
	expect_error("[auth]\nlogin_fail_ip = 10001\n", 2,
		     "login_fail_ip: out of range 1..10000: '10001'");
	expect_error("[auth]\nlogin_window_s = 86401\n", 2,
		     "login_window_s: out of range 1..86400: '86401'");
	expect_error("[auth]\npwhash_ops = 0\n", 2, "pwhash_ops: out of range 1..10: '0'");
	expect_error("[auth]\npwhash_ops = 11\n", 2, "pwhash_ops: out of range 1..10: '11'");
	expect_error("[auth]\npwhash_mem_kib = 7\n", 2, "pwhash_mem_kib: out of range 8..4194304: '7'");
	expect_error("[auth]\npwhash_mem_kib = 4194305\n", 2,
		     "pwhash_mem_kib: out of range 8..4194304: '4194305'");
	expect_error("[auth]\ncookie_secure = 1\n", 2, "cookie_secure: expected true or false: '1'");
	expect_error("[auth]\nsession_ttl = 60\n", 2, "unknown key 'session_ttl' in [auth]");

	struct sluice_conf *c = load_ok("[auth]\nallowed_origins = http://a\n" MIN_BACKEND);
	assert_int_equal(c->norigins, 1);
	assert_string_equal(c->allowed_origins[0], "http://a");
	free(c);
	c = load_ok("[auth]\nallowed_origins = http://a:443, https://a:80,http://1.2.3.4:65535\n"
		    MIN_BACKEND);
	assert_int_equal(c->norigins, 3);
	assert_string_equal(c->allowed_origins[1], "https://a:80");
	assert_string_equal(c->allowed_origins[2], "http://1.2.3.4:65535");
	free(c);

	static const char *const bad[] = { "ftp://a", "http:/a", "http://", "http://a/",
					   "http://a/x", "HTTP://a", "http://A.example", "http://a:",
					   "http://a:0", "http://a:080", "http://a:65536", "http://a:x",
					   "http://a b", "http://[::1", "http://[]", "http://[::g]",
					   "http://a?x", "http://u@a", "a", "*" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char buf[128], want[192];
		snprintf(buf, sizeof(buf), "[auth]\nallowed_origins = http://ok, %s\n", bad[i]);
		snprintf(want, sizeof(want),
			 "allowed_origins: bad origin '%s' (http or https://host[:port], lowercase, "
			 "no path)",
			 bad[i]);
		expect_error(buf, 2, want);
	}
	expect_error("[auth]\nallowed_origins = http://a:80\n", 2,
		     "allowed_origins: 'http://a:80' never matches: browsers leave out the default "
		     "port");
	expect_error("[auth]\nallowed_origins = https://a:443\n", 2,
		     "allowed_origins: 'https://a:443' never matches: browsers leave out the default "
		     "port");
	expect_error("[auth]\nallowed_origins = http://a,,http://b\n", 2,
		     "allowed_origins: empty origin");
	expect_error("[auth]\nallowed_origins = http://a,\n", 2, "allowed_origins: empty origin");
	expect_error("[auth]\nallowed_origins = http://a, http://b,http://a\n", 2,
		     "allowed_origins: origin 'http://a' listed twice");
	char buf[4096];
	snprintf(buf, sizeof(buf), "[auth]\nallowed_origins = http://%0121d\n", 0);
	expect_error(buf, 2, "allowed_origins: origin longer than 127 bytes");
	snprintf(buf, sizeof(buf), "[auth]\nallowed_origins = http://%0120d\n" MIN_BACKEND, 0);
	c = load_ok(buf);
	assert_int_equal(strlen(c->allowed_origins[0]), 127);
	free(c);
	size_t n = (size_t)snprintf(buf, sizeof(buf), "[auth]\nallowed_origins = http://o0");
	for (int i = 1; i <= CONF_MAX_ORIGINS; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",http://o%d", i);
	snprintf(buf + n, sizeof(buf) - n, "\n");
	expect_error(buf, 2, "allowed_origins: more than 16 origins");
}

static void test_err_agents(void **state)
{
	(void)state;
	expect_error("[agent.a]\ndescription = x\n" MIN_BACKEND, 1, "agent 'a' has no model");
	expect_error(MIN_BACKEND "[agent.a]\nmodel = n\n", 5,
		     "agent 'a': model 'n' is not served by any backend");
	expect_error("[agent.a]\nmodel = m\n[agent.b]\n\nmodel = M\n" MIN_BACKEND, 5,
		     "agent 'b': model 'M' is not served by any backend");
	expect_error("[agent.a b]\n", 1, "bad agent name 'a b' (1..63 of A-Z a-z 0-9 _ -)");
	expect_error("[agent.]\n", 1, "bad agent name '' (1..63 of A-Z a-z 0-9 _ -)");
	expect_error("[agent.a]\nmodel = m\n[agent.a]\n", 3, "duplicate section [agent.a]");
	expect_error("[agent.a]\nmodel = m\nmodel = m\n", 3, "duplicate key 'model'");
	expect_error("[agent.a]\nmodels = m\n", 2, "unknown key 'models' in [agent.a]");
	expect_error("[agent.a]\nmodel = a b\n", 2, "model: bad model name 'a b'");
	char buf[8192];
	snprintf(buf, sizeof(buf), "[agent.a]\nmodel = %064d\n", 0);
	expect_error(buf, 2, "model: model name longer than 63 bytes");

	snprintf(buf, sizeof(buf), "[agent.a]\nmodel = m\ndescription = %0256d\n", 0);
	expect_error(buf, 3, "description: longer than 255 bytes");
	snprintf(buf, sizeof(buf), "[agent.a]\nmodel = m\nsystem_prompt = %01024d\n", 0);
	expect_error(buf, 3, "system_prompt: longer than 1023 bytes");
	snprintf(buf, sizeof(buf),
		 "[agent.a]\nmodel = m\ndescription = %0255d\nsystem_prompt = %01023d\n" MIN_BACKEND,
		 0, 0);
	struct sluice_conf *c = load_ok(buf);
	assert_int_equal(strlen(c->agents[0].description), 255);
	assert_int_equal(strlen(c->agents[0].system_prompt), 1023);
	free(c);

	expect_error("[agent.a]\ndescription = a\x1b[31m\n", 2, "description: control byte in text");
	expect_error("[agent.a]\ndescription = a\x7f\n", 2, "description: control byte in text");
	static const char *const bad_utf8[] = {
		"\xc3",             /* truncated */
		"\xc0\xaf",         /* overlong '/' */
		"\xe0\x80\xaf",     /* overlong, 3 bytes */
		"\xed\xa0\x80",     /* surrogate */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"\xff",
		"\x80",
		"a\xe2\x82",        /* truncated euro sign */
	};
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		snprintf(buf, sizeof(buf), "[agent.a]\nsystem_prompt = x%s\n", bad_utf8[i]);
		expect_error(buf, 2, "system_prompt: not valid UTF-8");
	}
	c = load_ok("[agent.a]\nmodel = m\nsystem_prompt = \xe2\x82\xac \xf0\x9f\x98\x80 "
		    "\xf4\x8f\xbf\xbf\n" MIN_BACKEND);
	assert_string_equal(c->agents[0].system_prompt, "\xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf");
	free(c);

	size_t n = 0;
	for (int i = 0; i <= CONF_MAX_AGENTS; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[agent.a%d]\nmodel = m\n", i);
	expect_error(buf, 2 * CONF_MAX_AGENTS + 1, "more than 16 agents");
	n = 0;
	for (int i = 0; i < CONF_MAX_AGENTS; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[agent.a%d]\nmodel = m\n", i);
	snprintf(buf + n, sizeof(buf) - n, MIN_BACKEND);
	c = load_ok(buf);
	assert_int_equal(c->nagents, CONF_MAX_AGENTS);
	assert_ptr_equal(conf_agent_find(c, "a15"), &c->agents[15]);
	free(c);
}

/* A failed load must leave a previously loaded configuration intact. */
/* tls, redirect_listen, [tls] and [cert.NAME]: values, defaults, and the
 * whole-file checks (docs/tls.md). */
static void test_tls_keys(void **state)
{
	(void)state;
	struct sluice_conf *c = load_ok(MIN_BACKEND);
	assert_false(c->tls);
	assert_false(c->cookie_secure);
	assert_int_equal(c->redirect_port, 0);
	assert_int_equal(c->tls_handshake_budget_us, 2000);
	assert_int_equal(c->tls_ticket_rotate_s, 3600);
	assert_true(c->tls_ocsp_stapling);
	free(c);
	c = load_ok("[dataplane]\ntls = on\nredirect_listen = 0.0.0.0:80\nlisten = 127.0.0.1:443\n"
		    "[tls]\nmin_version = 1.3\nhsts_max_age_s = 600\nhandshakes_per_addr = 4\n"
		    "[cert.a]\nchain = /x/a.pem\nkey = /x/a.key\n[cert.b-2]\nkey = /x/b.key\n"
		    "chain = /x/b.pem\n" MIN_BACKEND);
	assert_true(c->tls);
	assert_true(c->cookie_secure); /* follows tls when not set */
	assert_string_equal(c->redirect_addr, "0.0.0.0");
	assert_int_equal(c->redirect_port, 80);
	assert_int_equal(c->tls_min_version, CONF_TLS_1_3);
	assert_int_equal(c->tls_hsts_max_age_s, 600);
	assert_int_equal(c->tls_handshakes_per_addr, 4);
	assert_int_equal(c->ncerts, 2);
	assert_string_equal(c->certs[0].name, "a");
	assert_string_equal(c->certs[0].chain, "/x/a.pem");
	assert_string_equal(c->certs[1].name, "b-2");
	assert_string_equal(c->certs[1].key, "/x/b.key");
	free(c);
	c = load_ok("[dataplane]\ntls = on\n[auth]\ncookie_secure = false\n"
		    "[cert.a]\nchain = /a\nkey = /b\n" MIN_BACKEND);
	assert_false(c->cookie_secure);
	free(c);

	expect_error("[dataplane]\ntls = yes\n", 2, "tls: expected on or off: 'yes'");
	expect_error("[dataplane]\ntls = on\n" MIN_BACKEND, 2, "tls = on needs a [cert.NAME] section");
	expect_error("[dataplane]\nredirect_listen = 127.0.0.1:80\n" MIN_BACKEND, 2,
		     "redirect_listen needs tls = on");
	expect_error("[dataplane]\ntls = on\nredirect_listen = 127.0.0.1:8080\n[cert.a]\n"
		     "chain = /a\nkey = /b\n" MIN_BACKEND, 3, "redirect_listen: port 8080 is the listen port");
	expect_error("[dataplane]\nredirect_listen = 1.2.3:80\n", 2,
		     "redirect_listen: bad IPv4 address: '1.2.3:80'");
	expect_error("[tls]\nmin_version = 1.1\n", 2, "min_version: expected 1.2 or 1.3: '1.1'");
	expect_error("[tls]\nhandshake_budget_us = 99\n", 2,
		     "handshake_budget_us: out of range 100..1000000: '99'");
	expect_error("[cert.a]\nchain = /a\n" MIN_BACKEND, 1, "cert 'a' has no key");
	expect_error("[cert.a]\nchain = a.pem\n", 2, "chain: not an absolute path: 'a.pem'");
	expect_error("[cert.a b]\n", 1, "bad cert name 'a b' (1..63 of A-Z a-z 0-9 _ -)");
	expect_error("[cert.a]\nchain = /a\nkey = /b\n[cert.a]\n", 4, "duplicate section [cert.a]");
	expect_error("[cert.a]\nbogus = 1\n", 2, "unknown key 'bogus' in [cert.a]");
}

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
		cmocka_unit_test(test_network_backends),
		cmocka_unit_test(test_err_lines),
		cmocka_unit_test(test_semicolon_glued_is_data),
		cmocka_unit_test(test_failed_reload_keeps_old),
		cmocka_unit_test(test_default_agent),
		cmocka_unit_test(test_err_dataplane_new),
		cmocka_unit_test(test_err_tcp),
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_err_control_new),
		cmocka_unit_test(test_err_auth),
		cmocka_unit_test(test_err_agents),
		cmocka_unit_test(test_tls_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

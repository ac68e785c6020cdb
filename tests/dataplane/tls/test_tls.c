/*
 * The TLS layer over the real kernel transport on 127.0.0.1: a small test app
 * on top, OpenSSL clients on nonblocking sockets stepped in the same loop as
 * the server's poll()+flush() (no second thread, nothing can deadlock).
 * Certificates are made here with OpenSSL's API in a temporary directory.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sluice/common.h"
#include "sluice/conf.h"
#include "tls/tls.h"
#include "tls/tls_int.h"
#include "transport/tp_kernel.h"

#define LOOP_LIMIT_NS (20ull * 1000000000ull)
#define MAXC 32

enum mode {
	M_ECHO,  /* send back what arrives */
	M_HOLD,  /* consume nothing until `release` */
	M_BURST, /* on each byte: `burst_n` frames of `burst_len` bytes */
	M_GREEDY, /* claim one byte more than offered */
};

struct tconn {
	struct tp_conn *c;
	struct tp_peer peer;
	size_t offered_max;
	bool closed;
};

struct tapp {
	struct tp *tp;
	enum mode mode;
	bool release;
	uint32_t burst_n, burst_len;
	/* M_BURST: the per-send view right after the frames were queued, and
	 * the getsockopt calls it took. */
	uint64_t burst_queued, burst_state_queued;
	int burst_sockopts;
	int opens, closes;
	struct tconn conns[MAXC];
	int nconns;
};

/* Every getsockopt of this program, the transport's included: the view the
 * per-token path reads (tx_state, tx_queued) must take none. */
static int getsockopt_calls;

int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	getsockopt_calls++;
	return (int)syscall(SYS_getsockopt, fd, level, name, val, len);
}

static char dir[64];
static char chain_path[128], key_path[128], key2_path[128], bad_path[128];
static SSL_CTX *cctx; /* the clients' context: trusts our certificate */

/* ---- certificates -------------------------------------------------------------- */

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	return k;
}

static void write_key(const char *path, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	chmod(path, 0600);
}

/* A self-signed certificate for 127.0.0.1 and localhost. */
static void make_cert(void)
{
	EVP_PKEY *k = new_key();
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
						"DNS:localhost,IP:127.0.0.1");
	assert_non_null(e);
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	FILE *f = fopen(chain_path, "w");
	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
	write_key(key_path, k);
	EVP_PKEY *k2 = new_key();
	write_key(key2_path, k2);
	f = fopen(bad_path, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", f);
	fclose(f);

	cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cctx);
	X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), x);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	X509_free(x);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sluice-tls-unit-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(chain_path, sizeof(chain_path), "%s/chain.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	snprintf(key2_path, sizeof(key2_path), "%s/key2.pem", dir);
	snprintf(bad_path, sizeof(bad_path), "%s/bad.pem", dir);
	make_cert();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	SSL_CTX_free(cctx);
	unlink(chain_path);
	unlink(key_path);
	unlink(key2_path);
	unlink(bad_path);
	rmdir(dir);
	return 0;
}

static void conf_init(struct sluice_conf *conf)
{
	conf_defaults(conf);
	conf->tls = true;
	conf->ncerts = 1;
	memcpy(conf->certs[0].name, "t", 2);
	snprintf(conf->certs[0].chain, sizeof(conf->certs[0].chain), "%s", chain_path);
	snprintf(conf->certs[0].key, sizeof(conf->certs[0].key), "%s", key_path);
	conf->tls_ocsp_stapling = false;
}

/* ---- the test app ----------------------------------------------------------------- */

static void *a_open(void *app, struct tp_conn *c, const struct tp_peer *peer)
{
	struct tapp *a = app;
	assert_true(a->nconns < MAXC);
	struct tconn *t = &a->conns[a->nconns++];
	memset(t, 0, sizeof(*t));
	t->c = c;
	t->peer = *peer;
	a->opens++;
	return t;
}

static size_t a_data(void *app, void *ctx, const uint8_t *data, size_t len)
{
	struct tapp *a = app;
	struct tconn *t = ctx;
	if (len > t->offered_max)
		t->offered_max = len;
	switch (a->mode) {
	case M_ECHO:
		assert_true(tp_send(a->tp, t->c, data, len));
		return len;
	case M_HOLD:
		return a->release ? len : 0;
	case M_BURST: {
		uint8_t *frame = malloc(a->burst_len);
		assert_non_null(frame);
		for (size_t b = 0; b < len; b++)
			for (uint32_t i = 0; i < a->burst_n; i++) {
				memset(frame, 'a' + (int)(i % 26), a->burst_len);
				assert_true(tp_send(a->tp, t->c, frame, a->burst_len));
			}
		free(frame);
		int before = getsockopt_calls;
		struct tp_conn_info ti;
		tp_tx_state(a->tp, t->c, &ti);
		a->burst_state_queued = ti.tx_queued;
		a->burst_queued = tp_tx_queued(a->tp, t->c);
		a->burst_sockopts += getsockopt_calls - before;
		return len;
	}
	case M_GREEDY:
		return len + 1;
	}
	return len;
}

static void a_eof(void *app, void *ctx)
{
	struct tapp *a = app;
	struct tconn *t = ctx;
	tp_close(a->tp, t->c, false);
}

static void a_drained(void *app, void *ctx)
{
	(void)app;
	(void)ctx;
}

static void a_close(void *app, void *ctx)
{
	struct tapp *a = app;
	struct tconn *t = ctx;
	t->closed = true;
	a->closes++;
}

static const struct tp_upcalls app_up = {
	.on_open = a_open, .on_data = a_data, .on_eof = a_eof, .on_drained = a_drained,
	.on_close = a_close,
};

struct server {
	struct sluice_conf conf;
	struct tls_shared *s;
	struct tp *tp;
	uint16_t port;
	struct tapp app;
};

static void server_start(struct server *sv, enum mode mode)
{
	char err[512];
	sv->app.mode = mode;
	sv->s = tls_shared_create(&sv->conf, err, sizeof(err));
	if (!sv->s)
		fail_msg("tls_shared_create: %s", err);
	struct tls *t = tls_create(sv->s, 0, &app_up, &sv->app, err, sizeof(err));
	assert_non_null(t);
	struct tp *inner = tp_kernel_listen("127.0.0.1", 0, &tls_inner_upcalls, t, err, sizeof(err));
	assert_non_null(inner);
	sv->port = tp_kernel_port(inner);
	sv->tp = tls_start(t, inner);
	sv->app.tp = sv->tp;
}

static void server_stop(struct server *sv)
{
	sv->tp->ops->destroy(sv->tp);
	tls_shared_destroy(sv->s);
}

static void server_turn(struct server *sv)
{
	assert_true(sv->tp->ops->poll(sv->tp, 1, -1) >= 0);
	sv->tp->ops->flush(sv->tp);
}

/* One counter of this process's TLS layer, by its name and labels. */
static uint64_t counter(struct server *sv, const char *name, const char *labels)
{
	uint64_t v[TP_COUNTERS_MAX];
	const struct tp_ops *ops = sv->tp->ops;
	assert_true(ops->counters(v) > 0);
	for (uint32_t i = 0; i < ops->ncounters; i++)
		if (strcmp(ops->counter_defs[i].name, name) == 0 &&
		    strcmp(ops->counter_defs[i].labels, labels) == 0)
			return v[i];
	fail_msg("no counter %s%s", name, labels);
	return 0;
}

/* ---- clients ------------------------------------------------------------------------ */

struct client {
	int fd;
	SSL *ssl;
	bool connected, failed, eof, reset;
	uint8_t *out;
	size_t out_len, out_off;
	uint8_t in[256 * 1024];
	size_t in_len;
};

static void client_open(struct client *cl, uint16_t port, int version, SSL_SESSION *sess)
{
	memset(cl, 0, sizeof(*cl));
	cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(cl->fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int r = connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa));
	assert_true(r == 0 || errno == EINPROGRESS);
	cl->ssl = SSL_new(cctx);
	assert_non_null(cl->ssl);
	SSL_set_fd(cl->ssl, cl->fd);
	SSL_set_tlsext_host_name(cl->ssl, "localhost");
	SSL_set1_host(cl->ssl, "localhost");
	static const unsigned char alpn[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1', 2, 'h', '2' };
	SSL_set_alpn_protos(cl->ssl, alpn, sizeof(alpn));
	if (version) {
		SSL_set_min_proto_version(cl->ssl, version);
		SSL_set_max_proto_version(cl->ssl, version);
	}
	if (sess)
		SSL_set_session(cl->ssl, sess);
	SSL_set_connect_state(cl->ssl);
}

static void client_close(struct client *cl)
{
	SSL_free(cl->ssl);
	close(cl->fd);
	cl->ssl = NULL;
}

static void client_step(struct client *cl)
{
	if (cl->failed || cl->eof || !cl->ssl)
		return;
	ERR_clear_error();
	if (!cl->connected) {
		int r = SSL_do_handshake(cl->ssl);
		if (r == 1) {
			cl->connected = true;
		} else {
			int e = SSL_get_error(cl->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				cl->failed = true;
				cl->reset = errno == ECONNRESET || e == SSL_ERROR_SYSCALL;
			}
			return;
		}
	}
	while (cl->out_off < cl->out_len) {
		int r = SSL_write(cl->ssl, cl->out + cl->out_off, (int)(cl->out_len - cl->out_off));
		if (r <= 0)
			break;
		cl->out_off += (size_t)r;
	}
	for (;;) {
		if (cl->in_len == sizeof(cl->in))
			return;
		int r = SSL_read(cl->ssl, cl->in + cl->in_len, (int)(sizeof(cl->in) - cl->in_len));
		if (r > 0) {
			cl->in_len += (size_t)r;
			continue;
		}
		int e = SSL_get_error(cl->ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN)
			cl->eof = true;
		else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			cl->failed = true;
		return;
	}
}

/* Runs server and clients until cond(arg) holds. */
static void run_until(struct server *sv, struct client *cls, int n, bool (*cond)(void *), void *arg)
{
	uint64_t end = sluice_now_ns() + LOOP_LIMIT_NS;
	while (!cond(arg)) {
		if (sluice_now_ns() > end)
			fail_msg("condition not reached in time");
		for (int i = 0; i < n; i++)
			client_step(&cls[i]);
		server_turn(sv);
	}
}

struct want_in {
	struct client *cl;
	size_t len;
};

static bool got_in(void *arg)
{
	struct want_in *w = arg;
	return w->cl->in_len >= w->len || w->cl->failed;
}

struct want_opens {
	struct server *sv;
	struct client *cls;
	int n;
};

/* Every client connected and the server's side done (the app has them). */
static bool all_open(void *arg)
{
	struct want_opens *w = arg;
	for (int i = 0; i < w->n; i++)
		if (!w->cls[i].connected && !w->cls[i].failed)
			return false;
	return w->sv->app.opens == w->n;
}

/* ---- tests --------------------------------------------------------------------------- */

/* TLS 1.3 and 1.2: handshake, ALPN http/1.1, the app's peer says tls, echo
 * in both directions, graceful close with close_notify. */
static void test_echo_versions(void **state)
{
	(void)state;
	static const int versions[] = { TLS1_3_VERSION, TLS1_2_VERSION };
	for (size_t v = 0; v < 2; v++) {
		struct server sv;
		memset(&sv, 0, sizeof(sv));
		conf_init(&sv.conf);
		server_start(&sv, M_ECHO);
		struct client cl;
		client_open(&cl, sv.port, versions[v], NULL);
		uint8_t msg[40000];
		for (size_t i = 0; i < sizeof(msg); i++)
			msg[i] = (uint8_t)(i * 7);
		cl.out = msg;
		cl.out_len = sizeof(msg);
		struct want_in w = { &cl, sizeof(msg) };
		run_until(&sv, &cl, 1, got_in, &w);
		assert_false(cl.failed);
		assert_int_equal(SSL_version(cl.ssl), versions[v]);
		const unsigned char *proto;
		unsigned plen;
		SSL_get0_alpn_selected(cl.ssl, &proto, &plen);
		assert_int_equal(plen, 8);
		assert_memory_equal(proto, "http/1.1", 8);
		assert_memory_equal(cl.in, msg, sizeof(msg));
		assert_int_equal(sv.app.opens, 1);
		assert_true(sv.app.conns[0].peer.tls);
		assert_int_equal(sv.app.conns[0].peer.local_port, sv.port);
		assert_int_equal(counter(&sv, "sluice_tls_handshakes_total", "{kind=\"full\"}"), 1);
		/* The app closes on EOF; the client sees close_notify after its data. */
		SSL_shutdown(cl.ssl);
		uint64_t end = sluice_now_ns() + LOOP_LIMIT_NS;
		while (!cl.eof && !cl.failed && sluice_now_ns() < end) {
			client_step(&cl);
			server_turn(&sv);
		}
		assert_true(cl.eof);
		client_close(&cl);
		server_stop(&sv);
		assert_int_equal(sv.app.closes, 1);
	}
}

/* Frames committed in one turn share records; a frame never straddles two
 * records while it fits one. */
static void test_records_coalesce(void **state)
{
	(void)state;
	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	server_start(&sv, M_BURST);
	struct client cl;
	client_open(&cl, sv.port, 0, NULL);
	uint8_t one = 'x';
	cl.out = &one;
	cl.out_len = 1;
	sv.app.burst_n = 10;
	sv.app.burst_len = 1000;
	struct want_in w = { &cl, 10000 };
	run_until(&sv, &cl, 1, got_in, &w);
	/* Ten 1000-byte frames of one turn: one record. */
	assert_int_equal(counter(&sv, "sluice_tls_records_out_total", ""), 1);
	/* Before the flush they were plaintext queued in the layer, and the
	 * per-send view said so without asking the kernel. */
	assert_int_equal(sv.app.burst_queued, 10000);
	assert_int_equal(sv.app.burst_state_queued, 10000);
	assert_int_equal(sv.app.burst_sockopts, 0);
	/* Four 5000-byte frames: 3 fit one record, the 4th starts the next. */
	sv.app.burst_n = 4;
	sv.app.burst_len = 5000;
	cl.out_off = 0;
	w.len = 30000;
	run_until(&sv, &cl, 1, got_in, &w);
	assert_int_equal(counter(&sv, "sluice_tls_records_out_total", ""), 3);
	/* One 40000-byte frame: two full records and the rest. */
	sv.app.burst_n = 1;
	sv.app.burst_len = 40000;
	cl.out_off = 0;
	w.len = 70000;
	run_until(&sv, &cl, 1, got_in, &w);
	assert_int_equal(counter(&sv, "sluice_tls_records_out_total", ""), 6);
	assert_int_equal(counter(&sv, "sluice_tls_plain_bytes_out_total", ""), 70000);
	assert_false(cl.failed);
	client_close(&cl);
	server_stop(&sv);
}

/* An app that consumes nothing is offered at most TP_RX_STASH_MAX; after
 * it consumes again and asks rx_resume, everything arrives in order. */
static void test_rx_stash_bound(void **state)
{
	(void)state;
	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	server_start(&sv, M_HOLD);
	struct client cl;
	client_open(&cl, sv.port, 0, NULL);
	size_t total = 300 * 1024;
	uint8_t *msg = malloc(total);
	assert_non_null(msg);
	memset(msg, 'q', total);
	cl.out = msg;
	cl.out_len = total;
	for (int i = 0; i < 400; i++) {
		client_step(&cl);
		server_turn(&sv);
	}
	assert_int_equal(sv.app.opens, 1);
	assert_int_equal(sv.app.conns[0].offered_max, TP_RX_STASH_MAX);
	sv.app.release = true;
	sv.app.mode = M_HOLD;
	tp_rx_resume(sv.tp, sv.app.conns[0].c);
	for (int i = 0; i < 400 && cl.out_off < total; i++) {
		client_step(&cl);
		server_turn(&sv);
	}
	assert_int_equal(cl.out_off, total);
	assert_false(cl.failed);
	free(msg);
	client_close(&cl);
	server_stop(&sv);
}

/* A tiny budget: eight simultaneous handshakes are spread over turns
 * (deferred), and all of them finish. */
static void test_handshake_budget(void **state)
{
	(void)state;
	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	sv.conf.tls_handshake_budget_us = 100;
	server_start(&sv, M_ECHO);
	struct client cls[8];
	for (int i = 0; i < 8; i++)
		client_open(&cls[i], sv.port, 0, NULL);
	struct want_opens w = { &sv, cls, 8 };
	run_until(&sv, cls, 8, all_open, &w);
	for (int i = 0; i < 8; i++)
		assert_true(cls[i].connected);
	assert_true(counter(&sv, "sluice_tls_handshakes_deferred_total", "") > 0);
	assert_int_equal(counter(&sv, "sluice_tls_handshakes_total", "{kind=\"full\"}"), 8);
	assert_int_equal(counter(&sv, "sluice_tls_handshakes_in_progress", ""), 0);
	for (int i = 0; i < 8; i++)
		client_close(&cls[i]);
	server_stop(&sv);
}

/* handshakes_per_addr refuses at accept; an unfinished handshake is reset
 * after handshake_timeout_s. */
static void test_caps_and_timeout(void **state)
{
	(void)state;
	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	sv.conf.tls_handshakes_per_addr = 2;
	sv.conf.tls_handshake_timeout_s = 1;
	server_start(&sv, M_ECHO);
	int fds[3];
	for (int i = 0; i < 3; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(sv.port) };
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
	}
	for (int i = 0; i < 50; i++)
		server_turn(&sv);
	assert_int_equal(counter(&sv, "sluice_tls_handshakes_refused_total", "{reason=\"addr_cap\"}"), 1);
	assert_int_equal(counter(&sv, "sluice_tls_handshakes_in_progress", ""), 2);
	uint64_t end = sluice_now_ns() + 3000000000ull;
	while (counter(&sv, "sluice_tls_handshake_timeouts_total", "") < 2 && sluice_now_ns() < end)
		server_turn(&sv);
	assert_int_equal(counter(&sv, "sluice_tls_handshake_timeouts_total", ""), 2);
	assert_int_equal(counter(&sv, "sluice_tls_handshakes_in_progress", ""), 0);
	assert_int_equal(sv.app.opens, 0);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	server_stop(&sv);
}

/* A session ticket of one instance resumes on another of the same process
 * (the workers share the keys); after a rotation the old ticket still works. */
static void test_tickets_shared_and_rotated(void **state)
{
	(void)state;
	char err[512];
	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	server_start(&sv, M_ECHO);
	struct tls *t1 = tls_create(sv.s, 1, &app_up, &sv.app, err, sizeof(err));
	assert_non_null(t1);
	struct tp *in1 = tp_kernel_listen("127.0.0.1", 0, &tls_inner_upcalls, t1, err, sizeof(err));
	assert_non_null(in1);
	uint16_t port1 = tp_kernel_port(in1);
	struct tp *tp1 = tls_start(t1, in1);

	struct client cl;
	client_open(&cl, sv.port, TLS1_3_VERSION, NULL);
	cl.out = (uint8_t *)"ping";
	cl.out_len = 4;
	struct want_in w = { &cl, 4 };
	run_until(&sv, &cl, 1, got_in, &w);
	SSL_SESSION *sess = SSL_get1_session(cl.ssl);
	assert_non_null(sess);
	assert_true(SSL_SESSION_is_resumable(sess));
	/* Freed without a shutdown, OpenSSL would mark the session not resumable. */
	SSL_shutdown(cl.ssl);
	client_close(&cl);

	for (int round = 0; round < 2; round++) {
		client_open(&cl, port1, TLS1_3_VERSION, sess);
		uint64_t end = sluice_now_ns() + LOOP_LIMIT_NS;
		while (!cl.connected && !cl.failed && sluice_now_ns() < end) {
			client_step(&cl);
			tp1->ops->poll(tp1, 1, -1);
			tp1->ops->flush(tp1);
		}
		assert_true(cl.connected);
		if (!SSL_session_reused(cl.ssl))
			fail_msg("round %d: not resumed", round);
		SSL_shutdown(cl.ssl);
		client_close(&cl);
		/* A new key encrypts from now on; the old one still decrypts. */
		struct tls_keyset *ks = tls_ctx_keys_rotate(atomic_load(&sv.s->keys));
		assert_non_null(ks);
		tls_shared_retire(sv.s, atomic_exchange(&sv.s->keys, ks), free);
	}
	SSL_SESSION_free(sess);
	tp1->ops->destroy(tp1);
	server_stop(&sv);
}

/* Refused files at create and at reload: a bad chain, a key others can read,
 * a key of another certificate; the loaded certificate stays. */
static void test_refused_files(void **state)
{
	(void)state;
	char err[512];
	struct sluice_conf conf;
	conf_init(&conf);
	snprintf(conf.certs[0].chain, sizeof(conf.certs[0].chain), "%s", bad_path);
	assert_null(tls_shared_create(&conf, err, sizeof(err)));
	if (!strstr(err, "[cert.t]: chain"))
		fail_msg("bad chain: %s", err);
	conf_init(&conf);
	chmod(key_path, 0640);
	assert_null(tls_shared_create(&conf, err, sizeof(err)));
	assert_non_null(strstr(err, "accessible by group or others (mode 0640)"));
	chmod(key_path, 0600);
	snprintf(conf.certs[0].key, sizeof(conf.certs[0].key), "%s", key2_path);
	assert_null(tls_shared_create(&conf, err, sizeof(err)));
	assert_non_null(strstr(err, "does not match the certificate"));

	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	server_start(&sv, M_ECHO);
	struct tls_certset *before = atomic_load(&sv.s->certs);
	snprintf(sv.conf.certs[0].chain, sizeof(sv.conf.certs[0].chain), "%s", bad_path);
	assert_int_equal(tls_shared_reload(sv.s, err, sizeof(err)), -1);
	assert_ptr_equal(atomic_load(&sv.s->certs), before);
	snprintf(sv.conf.certs[0].chain, sizeof(sv.conf.certs[0].chain), "%s", chain_path);
	assert_int_equal(tls_shared_reload(sv.s, err, sizeof(err)), 0);
	assert_ptr_not_equal(atomic_load(&sv.s->certs), before);
	/* New handshakes work with the reloaded set; the old one is freed once
	 * the worker has polled. */
	struct client cl;
	client_open(&cl, sv.port, 0, NULL);
	cl.out = (uint8_t *)"hi";
	cl.out_len = 2;
	struct want_in w = { &cl, 2 };
	run_until(&sv, &cl, 1, got_in, &w);
	assert_false(cl.failed);
	tls_shared_tick(sv.s);
	assert_null(sv.s->retired);
	client_close(&cl);
	server_stop(&sv);
}

/* The app claims more than it was offered: the connection is reset and
 * counted, nothing aborts. */
static void test_app_contract(void **state)
{
	(void)state;
	struct server sv;
	memset(&sv, 0, sizeof(sv));
	conf_init(&sv.conf);
	server_start(&sv, M_GREEDY);
	struct client cl;
	client_open(&cl, sv.port, 0, NULL);
	cl.out = (uint8_t *)"x";
	cl.out_len = 1;
	uint64_t end = sluice_now_ns() + LOOP_LIMIT_NS;
	while (sv.app.closes == 0 && sluice_now_ns() < end) {
		client_step(&cl);
		server_turn(&sv);
	}
	assert_int_equal(sv.app.closes, 1);
	assert_int_equal(counter(&sv, "sluice_tls_app_errors_total", ""), 1);
	client_close(&cl);
	server_stop(&sv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo_versions),
		cmocka_unit_test(test_records_coalesce),
		cmocka_unit_test(test_rx_stash_bound),
		cmocka_unit_test(test_handshake_budget),
		cmocka_unit_test(test_caps_and_timeout),
		cmocka_unit_test(test_tickets_shared_and_rotated),
		cmocka_unit_test(test_refused_files),
		cmocka_unit_test(test_app_contract),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * The kernel transport over real sockets on 127.0.0.1 with ephemeral ports,
 * flushing through io_uring (argument "uring", built with a ring of a few
 * sends so one flush takes several runs) or with sendmsg ("sendmsg").
 * The server side is a small test app driven by poll()+flush() in this thread;
 * clients are nonblocking sockets stepped in the same loop, so no test needs
 * a second thread and nothing can deadlock on full socket buffers.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "sluice/common.h"
#include "transport/tp_kernel.h"

#define MIB (1024u * 1024u)
#define MAXC 512
/* Safety net against a hang; tests normally finish far sooner. */
#define LOOP_LIMIT_NS (30ull * 1000000000ull)

enum mode {
	M_ECHO,       /* echo a random prefix of what arrives, ask rx_resume for the rest */
	M_HOLD,       /* consume nothing */
	M_SINK,       /* consume and check the pattern */
	M_BULK_CLOSE, /* on open: queue bulk_len bytes, then graceful close */
	M_BULK,       /* on open: queue bulk_len bytes, keep the connection */
	M_ABORT,      /* abort the connection from inside on_data */
	M_REFUSE,     /* on_open returns NULL */
	M_GREEDY,     /* on_data claims one byte more than it was offered */
	M_OVERCOMMIT, /* on open: commit one byte more than tx_reserve handed out */
	M_CHAIN,      /* on_drained of conn 3k resets conn 3k+1, queues more on 3k+2 */
};

/* How flushes send in this run (main's argument). */
static enum conf_kernel_send g_send = CONF_KSEND_URING;

struct tconn {
	struct tp_conn *c;
	int id;
	size_t pending;   /* bytes the app left unconsumed last time */
	size_t rx_total;  /* bytes consumed */
	size_t last_len;  /* len of the last on_data */
	size_t max_len;
	int data_calls;
	int drains;
	bool eof, closed, close_after_drain;
};

struct tapp {
	struct tp *tp;
	enum mode mode;
	size_t bulk_len;
	int opens, closes, eofs;
	int nconns;
	bool in_upcall;
	bool keep_on_eof; /* else the app closes gracefully on the peer's FIN */
	struct tconn *conns[MAXC];
};

static uint8_t pat(uint32_t stream, size_t off)
{
	return (uint8_t)(((off * 2654435761u) >> 13) ^ (off >> 9) ^ stream);
}

static void fill_pat(uint8_t *dst, uint32_t stream, size_t off, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = pat(stream, off + i);
}

static bool check_pat(const uint8_t *p, uint32_t stream, size_t off, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != pat(stream, off + i))
			return false;
	}
	return true;
}

/* ---- the server-side test app -------------------------------------------- */

static void *up_open(void *app, struct tp_conn *c, const struct tp_peer *peer)
{
	struct tapp *a = app;
	assert_int_equal(ntohl(peer->ipv4), INADDR_LOOPBACK);
	assert_true(peer->port != 0);
	if (a->mode == M_REFUSE)
		return NULL;
	assert_true(a->nconns < MAXC);
	struct tconn *tc = calloc(1, sizeof(*tc));
	assert_non_null(tc);
	tc->c = c;
	tc->id = a->nconns;
	a->conns[a->nconns++] = tc;
	a->opens++;
	if (a->mode == M_BULK_CLOSE || a->mode == M_BULK) {
		uint8_t *buf = malloc(a->bulk_len);
		assert_non_null(buf);
		fill_pat(buf, 0, 0, a->bulk_len);
		/* One big tp_send plus a large reservation: both chunk paths. */
		size_t half = a->bulk_len / 2;
		assert_true(tp_send(a->tp, c, buf, half));
		size_t avail = 0;
		uint8_t *dst = tp_tx_reserve(a->tp, c, a->bulk_len - half, &avail);
		assert_non_null(dst);
		assert_true(avail >= a->bulk_len - half);
		memcpy(dst, buf + half, a->bulk_len - half);
		tp_tx_commit(a->tp, c, a->bulk_len - half);
		free(buf);
		if (a->mode == M_BULK_CLOSE) {
			tp_close(a->tp, c, false);
			/* Closing: no more sending. */
			assert_null(tp_tx_reserve(a->tp, c, 1, &avail));
		}
	}
	if (a->mode == M_OVERCOMMIT) {
		size_t avail = 0;
		assert_non_null(tp_tx_reserve(a->tp, c, 1, &avail));
		tp_tx_commit(a->tp, c, avail + 1);
	}
	return tc;
}

static size_t up_data(void *app, void *ctx, const uint8_t *data, size_t len)
{
	struct tapp *a = app;
	struct tconn *tc = ctx;
	assert_false(tc->closed);
	assert_true(len > 0);
	assert_true(len <= TP_RX_STASH_MAX + 64 * 1024);
	/* The kept bytes come back first and contiguous with the new ones. */
	assert_true(len >= tc->pending);
	tc->data_calls++;
	tc->last_len = len;
	if (len > tc->max_len)
		tc->max_len = len;
	size_t used = 0;
	switch (a->mode) {
	case M_ECHO:
		used = 1 + (size_t)rand() % len;
		assert_true(tp_send(a->tp, tc->c, data, used));
		if (used < len)
			tp_rx_resume(a->tp, tc->c);
		break;
	case M_HOLD:
		used = 0;
		break;
	case M_GREEDY:
		tc->rx_total += len;
		return len + 1;
	case M_SINK:
		assert_true(check_pat(data, (uint32_t)tc->id, tc->rx_total, len));
		used = len;
		break;
	case M_ABORT:
		a->in_upcall = true;
		tp_close(a->tp, tc->c, true);
		/* Closed from inside the upcall: on_close must wait. */
		assert_false(tc->closed);
		a->in_upcall = false;
		used = len;
		break;
	default:
		used = len;
		break;
	}
	tc->rx_total += used;
	tc->pending = len - used;
	if (a->mode == M_ECHO && tc->eof && tc->pending == 0)
		tp_close(a->tp, tc->c, false);
	return used;
}

static void up_eof(void *app, void *ctx)
{
	struct tapp *a = app;
	struct tconn *tc = ctx;
	assert_false(tc->eof);
	tc->eof = true;
	a->eofs++;
	if (!a->keep_on_eof && (a->mode != M_ECHO || tc->pending == 0))
		tp_close(a->tp, tc->c, false);
}

static void up_drained(void *app, void *ctx)
{
	struct tapp *a = app;
	struct tconn *tc = ctx;
	tc->drains++;
	if (a->mode == M_CHAIN && tc->id % 3 == 0 && tc->drains == 1 && tc->id + 2 < a->nconns) {
		tp_close(a->tp, a->conns[tc->id + 1]->c, true);
		assert_true(tp_send(a->tp, a->conns[tc->id + 2]->c, "second;", 7));
	}
}

static void up_close(void *app, void *ctx)
{
	struct tapp *a = app;
	struct tconn *tc = ctx;
	assert_false(a->in_upcall);
	assert_false(tc->closed);
	tc->closed = true;
	a->closes++;
}

static const struct tp_upcalls test_up = {
	.on_open = up_open,
	.on_data = up_data,
	.on_eof = up_eof,
	.on_drained = up_drained,
	.on_close = up_close,
};

static struct tapp *app_new(enum mode m)
{
	struct tapp *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->mode = m;
	return a;
}

static struct tp *tp_new(struct tapp *a, uint16_t port)
{
	char err[256];
	struct tp *t = tp_kernel_listen("127.0.0.1", port, &test_up, a, err, sizeof(err));
	if (!t)
		fail_msg("tp_kernel_listen: %s", err);
	if (tp_kernel_set_send(t, g_send, err, sizeof(err)) != 0)
		fail_msg("tp_kernel_set_send: %s", err);
	assert_true(tp_kernel_uring(t) == (g_send == CONF_KSEND_URING));
	a->tp = t;
	return t;
}

static void app_free(struct tapp *a)
{
	for (int i = 0; i < a->nconns; i++)
		free(a->conns[i]);
	free(a);
}

/* One worker turn: I/O pass, then flush. */
static void pump(struct tp *t, int timeout_ms)
{
	assert_true(t->ops->poll(t, timeout_ms, -1) >= 0);
	t->ops->flush(t);
}

/* Runs turns until the app has seen n closes, within LOOP_LIMIT_NS of start. */
static void pump_until_closes(struct tp *t, const struct tapp *a, int n, uint64_t start)
{
	while (a->closes < n) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
	}
}

/* The client's next read finds a reset. */
static void expect_reset(int fd, uint64_t start)
{
	char b[16];
	ssize_t r;
	do {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
	} while (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
	assert_int_equal(r, -1);
	assert_int_equal(errno, ECONNRESET);
}

static int cli_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_true(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
	return fd;
}

/* The server side of client socket cli (the transport's own fd, in this
 * process): the test shrinks its send buffer to make it fill. */
static int server_fd_of(int cli)
{
	struct sockaddr_in me, peer;
	socklen_t l = sizeof(me);
	assert_int_equal(getsockname(cli, (struct sockaddr *)&me, &l), 0);
	for (int fd = 3; fd < 65536; fd++) {
		l = sizeof(peer);
		if (fd != cli && getpeername(fd, (struct sockaddr *)&peer, &l) == 0 &&
		    peer.sin_port == me.sin_port && peer.sin_addr.s_addr == me.sin_addr.s_addr)
			return fd;
	}
	fail_msg("no server socket for the client on port %u", ntohs(me.sin_port));
	return -1;
}

static void cli_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(fd);
}

/* ---- tests --------------------------------------------------------------- */

struct echo_cli {
	int fd;
	size_t sent, rcvd, total;
	bool shut, eof;
};

/* 1 MiB per client in random pieces; the server consumes random prefixes,
 * so delivery keeps mixing stashed and new bytes. */
static void test_echo_random(void **state)
{
	(void)state;
	enum { NC = 3 };
	srand(11);
	struct tapp *a = app_new(M_ECHO);
	struct tp *t = tp_new(a, 0);
	uint16_t port = tp_kernel_port(t);
	assert_true(port != 0);
	struct echo_cli cl[NC];
	static uint8_t buf[64 * 1024];
	for (int i = 0; i < NC; i++) {
		cl[i] = (struct echo_cli){.fd = cli_connect(port), .total = MIB};
	}
	uint64_t start = sluice_now_ns();
	int done = 0;
	while (done < NC) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		for (int i = 0; i < NC; i++) {
			struct echo_cli *e = &cl[i];
			if (e->sent < e->total) {
				size_t n = 1 + (size_t)rand() % 20000;
				if (n > e->total - e->sent)
					n = e->total - e->sent;
				fill_pat(buf, (uint32_t)i, e->sent, n);
				ssize_t w = send(e->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
				if (w < 0)
					assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
				else
					e->sent += (size_t)w;
			} else if (!e->shut) {
				assert_int_equal(shutdown(e->fd, SHUT_WR), 0);
				e->shut = true;
			}
			if (!e->eof) {
				ssize_t r = recv(e->fd, buf, 1 + (size_t)rand() % sizeof(buf), MSG_DONTWAIT);
				if (r > 0) {
					assert_true(check_pat(buf, (uint32_t)i, e->rcvd, (size_t)r));
					e->rcvd += (size_t)r;
				} else if (r == 0) {
					e->eof = true;
					done++;
				} else {
					assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
				}
			}
		}
		pump(t, 0);
	}
	for (int i = 0; i < NC; i++) {
		assert_int_equal(cl[i].rcvd, MIB);
		close(cl[i].fd);
	}
	pump_until_closes(t, a, NC, start);
	assert_int_equal(a->eofs, NC);
	for (int i = 0; i < NC; i++) {
		assert_int_equal(a->conns[i]->rx_total, MIB);
		/* Random prefixes mean the stash was used many times. */
		assert_true(a->conns[i]->data_calls > 32);
	}
	assert_int_equal(tp_kernel_conns(t), 0);
	t->ops->destroy(t);
	app_free(a);
}

/* The app consumes nothing: the transport keeps at most TP_RX_STASH_MAX and
 * stops reading; after rx_resume everything arrives, in order. */
static void test_stash_bound(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_HOLD);
	struct tp *t = tp_new(a, 0);
	int fd = cli_connect(tp_kernel_port(t));
	const size_t total = 300 * 1024;
	uint8_t *buf = malloc(total);
	assert_non_null(buf);
	fill_pat(buf, 0, 0, total);
	size_t sent = 0;
	for (int i = 0; i < 200; i++) {
		if (sent < total) {
			ssize_t w = send(fd, buf + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w > 0)
				sent += (size_t)w;
		}
		pump(t, 1);
	}
	assert_int_equal(a->nconns, 1);
	struct tconn *tc = a->conns[0];
	assert_int_equal(tc->max_len, TP_RX_STASH_MAX);
	assert_int_equal(tc->last_len, TP_RX_STASH_MAX);
	int calls = tc->data_calls;
	for (int i = 0; i < 20; i++)
		pump(t, 1);
	assert_int_equal(tc->data_calls, calls); /* not read while full */

	a->mode = M_SINK;
	tp_rx_resume(t, tc->c);
	uint64_t start = sluice_now_ns();
	while (tc->rx_total < total) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		if (sent < total) {
			ssize_t w = send(fd, buf + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w > 0)
				sent += (size_t)w;
		}
		pump(t, 1);
	}
	assert_int_equal(tc->rx_total, total);
	close(fd);
	pump_until_closes(t, a, 1, start);
	assert_int_equal(a->eofs, 1);
	free(buf);
	t->ops->destroy(t);
	app_free(a);
}

/* Close right after queueing 1 MiB: the client still gets every byte, then
 * EOF; on_close follows once the client closes too. */
static void test_graceful_close(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_BULK_CLOSE);
	a->bulk_len = MIB + 12345;
	struct tp *t = tp_new(a, 0);
	int fd = cli_connect(tp_kernel_port(t));
	static uint8_t buf[64 * 1024];
	size_t rcvd = 0;
	bool eof = false;
	uint64_t start = sluice_now_ns();
	/* Read slowly at first so the server's sends block on the way. */
	while (!eof) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
		ssize_t r = recv(fd, buf, rcvd < 4 * 4096 ? 4096 : sizeof(buf), MSG_DONTWAIT);
		if (r > 0) {
			assert_true(check_pat(buf, 0, rcvd, (size_t)r));
			rcvd += (size_t)r;
		} else if (r == 0) {
			eof = true;
		} else {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
		}
	}
	assert_int_equal(rcvd, a->bulk_len);
	assert_int_equal(a->closes, 0); /* waits for the client's FIN */
	close(fd);
	pump_until_closes(t, a, 1, start);
	/* Closing conns get no data, eof or drained upcalls. */
	assert_int_equal(a->eofs, 0);
	assert_int_equal(a->conns[0]->drains, 0);
	assert_int_equal(tp_kernel_conns(t), 0);
	t->ops->destroy(t);
	app_free(a);
}

/* A client that does not read blocks the queue; reading it all drains the
 * queue to zero and fires on_drained once. */
static void test_blocked_drained(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_BULK);
	a->bulk_len = 32 * MIB;
	struct tp *t = tp_new(a, 0);
	int fd = cli_connect(tp_kernel_port(t));
	for (int i = 0; i < 10; i++)
		pump(t, 1);
	assert_int_equal(a->nconns, 1);
	struct tconn *tc = a->conns[0];
	struct tp_conn_info info;
	tp_info(t, tc->c, &info);
	assert_true(info.blocked);
	assert_true(info.tx_queued > 0 && info.tx_queued < a->bulk_len);
	assert_true(info.cwnd > 0);
	/* Counted as stalled: the batcher may not take its queue as this turn's. */
	assert_int_equal(t->stalled, 1);
	assert_false(tp_none_stalled(t));
	/* The per-token view agrees on what user space knows (the full socket
	 * was learnt from the send results) and asks the kernel nothing. */
	struct tp_conn_info st;
	tp_tx_state(t, tc->c, &st);
	assert_true(st.blocked);
	assert_true(st.tx_queued == info.tx_queued);
	assert_int_equal(st.cwnd, 0);
	assert_int_equal(st.snd_wnd, 0);
	assert_int_equal(st.unacked, 0);
	assert_int_equal(tc->drains, 0);
	static uint8_t buf[256 * 1024];
	size_t rcvd = 0;
	uint64_t start = sluice_now_ns();
	while (rcvd < a->bulk_len) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0) {
			assert_true(check_pat(buf, 0, rcvd, (size_t)r));
			rcvd += (size_t)r;
		} else {
			assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
		}
		pump(t, 0);
	}
	for (int i = 0; i < 5; i++)
		pump(t, 1);
	assert_int_equal(tc->drains, 1);
	tp_info(t, tc->c, &info);
	assert_int_equal(info.tx_queued, 0);
	assert_false(info.blocked);
	tp_tx_state(t, tc->c, &st);
	assert_int_equal(st.tx_queued, 0);
	assert_false(st.blocked);
	assert_int_equal(t->stalled, 0);
	assert_true(tp_none_stalled(t));
	close(fd);
	pump_until_closes(t, a, 1, start);
	assert_int_equal(a->eofs, 1);
	t->ops->destroy(t);
	app_free(a);
}

/* Abort from inside on_data: the client sees a reset, on_close runs once and
 * only after the upcall returned. A client reset reaches on_close too. */
static void test_abort(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_ABORT);
	struct tp *t = tp_new(a, 0);
	int fd = cli_connect(tp_kernel_port(t));
	assert_int_equal(send(fd, "hello", 5, 0), 5);
	uint64_t start = sluice_now_ns();
	pump_until_closes(t, a, 1, start);
	expect_reset(fd, start);
	close(fd);

	/* The client resets a connection holding queued output. */
	a->mode = M_BULK;
	a->bulk_len = 16 * MIB;
	fd = cli_connect(tp_kernel_port(t));
	while (a->opens < 2 || t->stalled == 0) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
	}
	assert_int_equal(t->stalled, 1);
	cli_reset(fd);
	pump_until_closes(t, a, 2, start);
	assert_int_equal(a->conns[1]->drains, 0);
	/* A stalled conn that dies is no longer counted. */
	assert_int_equal(t->stalled, 0);

	/* Abort from outside an upcall with output queued. */
	fd = cli_connect(tp_kernel_port(t));
	while (a->opens < 3)
		pump(t, 1);
	tp_close(t, a->conns[2]->c, true);
	assert_false(a->conns[2]->closed);
	t->ops->flush(t);
	assert_true(a->conns[2]->closed);
	assert_int_equal(t->stalled, 0);
	close(fd);
	assert_int_equal(a->closes, 3);
	assert_int_equal(tp_kernel_conns(t), 0);
	t->ops->destroy(t);
	app_free(a);
}

/* A refused connection is reset and causes no further upcalls. */
static void test_refuse(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_REFUSE);
	struct tp *t = tp_new(a, 0);
	int fd = cli_connect(tp_kernel_port(t));
	uint64_t start = sluice_now_ns();
	char b[4];
	ssize_t r;
	do {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
		r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
	} while (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
	assert_int_equal(r, -1);
	assert_int_equal(errno, ECONNRESET);
	assert_int_equal(a->opens, 0);
	assert_int_equal(a->closes, 0);
	assert_int_equal(tp_kernel_conns(t), 0);
	close(fd);
	t->ops->destroy(t);
	app_free(a);
}

/* An app that claims more input than it was offered, or commits more than
 * it reserved, has its connection reset and counted; nothing aborts. */
static void test_app_contract_broken(void **state)
{
	(void)state;
	static const enum mode modes[] = {M_GREEDY, M_OVERCOMMIT};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(modes); i++) {
		struct tapp *a = app_new(modes[i]);
		struct tp *t = tp_new(a, 0);
		int fd = cli_connect(tp_kernel_port(t));
		assert_int_equal(send(fd, "hello", 5, 0), 5);
		uint64_t start = sluice_now_ns();
		pump_until_closes(t, a, 1, start);
		expect_reset(fd, start);
		assert_int_equal(tp_kernel_app_errors(t), 1);
		assert_int_equal(tp_kernel_conns(t), 0);
		close(fd);
		t->ops->destroy(t);
		app_free(a);
	}
}

/* Many clients at once, each with its own message; all echoed, all closed. */
static void test_many_conns(void **state)
{
	(void)state;
	enum { NC = 400 };
	struct tapp *a = app_new(M_ECHO);
	struct tp *t = tp_new(a, 0);
	uint16_t port = tp_kernel_port(t);
	static int fds[NC];
	static size_t got[NC];
	static char msgs[NC][32];
	static char rx[NC][32];
	for (int i = 0; i < NC; i++) {
		fds[i] = cli_connect(port);
		snprintf(msgs[i], sizeof(msgs[i]), "client %d says hi", i);
		ssize_t len = (ssize_t)strlen(msgs[i]);
		assert_int_equal(send(fds[i], msgs[i], (size_t)len, 0), len);
		got[i] = 0;
		if (i % 50 == 0)
			pump(t, 0);
	}
	uint64_t start = sluice_now_ns();
	int done = 0;
	while (done < NC) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
		for (int i = 0; i < NC; i++) {
			size_t want = strlen(msgs[i]);
			if (got[i] == want)
				continue;
			ssize_t r = recv(fds[i], rx[i] + got[i], want - got[i], MSG_DONTWAIT);
			if (r > 0) {
				got[i] += (size_t)r;
				if (got[i] == want) {
					assert_memory_equal(rx[i], msgs[i], want);
					done++;
				}
			}
		}
	}
	assert_int_equal(a->opens, NC);
	assert_int_equal(tp_kernel_conns(t), NC);
	for (int i = 0; i < NC; i++)
		close(fds[i]);
	pump_until_closes(t, a, NC, start);
	assert_int_equal(tp_kernel_conns(t), 0);
	t->ops->destroy(t);
	app_free(a);
}

/* The send arena: many connections, several pieces each per turn,
 * interleaved (so a connection's bytes lie in many arena chunks), some
 * pieces too large for it, some clients with small receive buffers that
 * read only now and then (their bytes stay behind and must move out of the
 * arena at the flush), more bytes per turn than the first arena holds: every
 * client gets exactly its byte stream. */
static void test_arena_interleaved(void **state)
{
	(void)state;
	enum { NC = 240, TURNS = 120, PIECES = 3, PIECES_SLOW = 10 };
	struct tapp *a = app_new(M_HOLD);
	struct tp *t = tp_new(a, 0);
	uint16_t port = tp_kernel_port(t);
	static int fds[NC];
	static size_t sent[NC], rcvd[NC];
	static uint8_t buf[64 * 1024];
	uint64_t start = sluice_now_ns();
	srand(7);
	for (int i = 0; i < NC; i++) {
		fds[i] = cli_connect(port);
		while (a->nconns < i + 1) {
			assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
			pump(t, 1);
		}
		if (i % 3 == 0) {
			int small = 4096;
			assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
			assert_int_equal(setsockopt(server_fd_of(fds[i]), SOL_SOCKET, SO_SNDBUF, &small,
						    sizeof(small)), 0);
		}
		sent[i] = rcvd[i] = 0;
	}
	for (int turn = 0; turn < TURNS; turn++) {
		assert_true(t->ops->poll(t, 0, -1) >= 0);
		for (int p = 0; p < PIECES_SLOW; p++) {
			for (int i = 0; i < NC; i++) {
				/* The slow readers get many small pieces: their socket
				 * fills while their bytes are in the arena. */
				if (i % 3 == 0 ? p >= PIECES_SLOW : p >= PIECES)
					continue;
				size_t n = i % 3 != 0 && rand() % 16 == 0 ? 3000 + (size_t)rand() % 6000
									     : 1 + (size_t)rand() % 400;
				fill_pat(buf, (uint32_t)i, sent[i], n);
				assert_true(tp_send(t, a->conns[i]->c, buf, n));
				sent[i] += n;
			}
		}
		t->ops->flush(t);
		for (int i = 0; i < NC; i++) {
			if (i % 3 == 0 && turn % 30 != 29)
				continue;
			ssize_t r;
			while ((r = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
				assert_true(check_pat(buf, (uint32_t)i, rcvd[i], (size_t)r));
				rcvd[i] += (size_t)r;
			}
		}
	}
	for (int left = NC; left > 0;) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 0);
		left = 0;
		for (int i = 0; i < NC; i++) {
			ssize_t r;
			while ((r = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
				assert_true(check_pat(buf, (uint32_t)i, rcvd[i], (size_t)r));
				rcvd[i] += (size_t)r;
			}
			assert_true(rcvd[i] <= sent[i]);
			left += rcvd[i] < sent[i];
		}
	}
	for (int i = 0; i < NC; i++) {
		struct tp_conn_info st;
		tp_tx_state(t, a->conns[i]->c, &st);
		assert_int_equal(st.tx_queued, 0);
		close(fds[i]);
	}
	pump_until_closes(t, a, NC, start);
	t->ops->destroy(t);
	app_free(a);
}

/* A turn whose bytes outgrow the first arena goes on in a larger one, not
 * in a chunk per connection: nothing but the arena holds them, and what it
 * held arrives intact. */
static void test_arena_grows_in_turn(void **state)
{
	(void)state;
	enum { NC = 100, PIECE = 1900 };
	struct tapp *a = app_new(M_HOLD);
	struct tp *t = tp_new(a, 0);
	uint16_t port = tp_kernel_port(t);
	static int fds[NC];
	static uint8_t buf[2 * PIECE];
	uint64_t start = sluice_now_ns();

	assert_true((size_t)NC * 2 * PIECE > TP_KERNEL_ARENA_MIN);
	for (int i = 0; i < NC; i++) {
		fds[i] = cli_connect(port);
		while (a->nconns < i + 1) {
			assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
			pump(t, 1);
		}
	}
	for (int round = 0; round < 2; round++) {
		assert_true(t->ops->poll(t, 0, -1) >= 0);
		for (int p = 0; p < 2; p++)
			for (int i = 0; i < NC; i++) {
				fill_pat(buf, (uint32_t)i, (size_t)(round * 2 + p) * PIECE, PIECE);
				assert_true(tp_send(t, a->conns[i]->c, buf, PIECE));
			}
		assert_int_equal(tp_kernel_chunks(t), 0);
		t->ops->flush(t);
		assert_int_equal(tp_kernel_chunks(t), 0);
		for (int i = 0; i < NC; i++) {
			size_t got = 0;
			while (got < 2 * PIECE) {
				ssize_t r = recv(fds[i], buf + got, sizeof(buf) - got, 0);
				assert_true(r > 0);
				got += (size_t)r;
			}
			assert_true(check_pat(buf, (uint32_t)i, (size_t)round * 2 * PIECE, got));
		}
	}
	for (int i = 0; i < NC; i++)
		close(fds[i]);
	pump_until_closes(t, a, NC, start);
	t->ops->destroy(t);
	app_free(a);
}

/* Two instances on one port (two workers): the kernel spreads connections
 * over both accept queues. */
static void test_reuseport(void **state)
{
	(void)state;
	enum { NC = 64 };
	struct tapp *a1 = app_new(M_SINK), *a2 = app_new(M_SINK);
	struct tp *t1 = tp_new(a1, 0);
	uint16_t port = tp_kernel_port(t1);
	struct tp *t2 = tp_new(a2, port);
	assert_int_equal(tp_kernel_port(t2), port);
	int fds[NC];
	for (int i = 0; i < NC; i++)
		fds[i] = cli_connect(port);
	uint64_t start = sluice_now_ns();
	while (a1->opens + a2->opens < NC) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t1, 1);
		pump(t2, 1);
	}
	assert_true(a1->opens > 0);
	assert_true(a2->opens > 0);
	for (int i = 0; i < NC; i++)
		close(fds[i]);
	/* destroy closes what is left and still calls on_close. */
	t1->ops->destroy(t1);
	t2->ops->destroy(t2);
	assert_int_equal(a1->closes, a1->opens);
	assert_int_equal(a2->closes, a2->opens);
	app_free(a1);
	app_free(a2);
}

/* The peer's FIN reaches on_eof, and the app may still answer afterwards. */
static void test_eof_then_send(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_SINK);
	a->keep_on_eof = true;
	struct tp *t = tp_new(a, 0);
	int fd = cli_connect(tp_kernel_port(t));
	uint8_t b[64];
	fill_pat(b, 0, 0, sizeof(b));
	assert_int_equal(send(fd, b, sizeof(b), 0), (ssize_t)sizeof(b));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	uint64_t start = sluice_now_ns();
	while (a->eofs < 1) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
	}
	struct tconn *tc = a->conns[0];
	assert_int_equal(tc->rx_total, sizeof(b));
	assert_true(tp_send(t, tc->c, "bye", 3));
	tp_close(t, tc->c, false);
	pump(t, 1);
	char rx[8];
	ssize_t r;
	size_t got = 0;
	for (;;) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		r = recv(fd, rx + got, sizeof(rx) - got, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r > 0)
			got += (size_t)r;
		pump(t, 1);
	}
	assert_int_equal(got, 3);
	assert_memory_equal(rx, "bye", 3);
	pump_until_closes(t, a, 1, start);
	close(fd);
	t->ops->destroy(t);
	app_free(a);
}

/* A peer that never closes: the graceful close gives up after the 5 s linger
 * (a protocol timer), with a FIN when all was sent and a reset when not. */
static void test_linger(void **state)
{
	(void)state;
	struct tapp *a = app_new(M_BULK_CLOSE);
	a->bulk_len = 1000;
	struct tp *t = tp_new(a, 0);
	uint64_t t0 = sluice_now_ns();
	int fd1 = cli_connect(tp_kernel_port(t));
	while (a->opens < 1)
		pump(t, 1);
	a->bulk_len = 32 * MIB; /* more than the socket buffers take: never all sent */
	int fd2 = cli_connect(tp_kernel_port(t));
	while (a->opens < 2)
		pump(t, 1);
	static uint8_t buf[4096];
	size_t rcvd = 0;
	ssize_t r;
	while ((r = recv(fd1, buf, sizeof(buf), MSG_DONTWAIT)) != 0) {
		assert_true(sluice_now_ns() - t0 < LOOP_LIMIT_NS);
		if (r > 0)
			rcvd += (size_t)r;
		pump(t, 1);
	}
	assert_int_equal(rcvd, 1000);
	while (a->closes < 2) {
		assert_true(sluice_now_ns() - t0 < LOOP_LIMIT_NS);
		pump(t, 10);
	}
	assert_true(sluice_now_ns() - t0 >= TP_KERNEL_LINGER_NS);
	/* The unsent rest was dropped with a reset. */
	do {
		r = recv(fd2, buf, sizeof(buf), MSG_DONTWAIT);
	} while (r > 0);
	assert_int_equal(r, -1);
	assert_int_equal(errno, ECONNRESET);
	assert_int_equal(t->stalled, 0);
	close(fd1);
	close(fd2);
	t->ops->destroy(t);
	app_free(a);
}

static void test_bad_listen(void **state)
{
	(void)state;
	char err[256];
	struct tapp *a = app_new(M_SINK);
	assert_null(tp_kernel_listen("not-an-ip", 0, &test_up, a, err, sizeof(err)));
	assert_non_null(strstr(err, "not-an-ip"));
	/* A port held without SO_REUSEPORT cannot be shared. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	assert_null(tp_kernel_listen("127.0.0.1", ntohs(sa.sin_port), &test_up, a, err, sizeof(err)));
	assert_non_null(strstr(err, "bind"));
	close(fd);
	app_free(a);
}

/* One flush sends to many connections (several ring runs), and what the
 * upcalls of its results do lands right: on_drained of one connection
 * resets a later one of the same batch (its result is then ignored) and
 * queues bytes on another whose result is still to come (they follow its
 * first bytes, in order, nothing lost or sent twice). */
static void test_flush_batch_reentry(void **state)
{
	(void)state;
	enum { NC = 30 };
	struct tapp *a = app_new(M_CHAIN);
	struct tp *t = tp_new(a, 0);
	uint16_t port = tp_kernel_port(t);
	int fd[NC];
	for (int i = 0; i < NC; i++)
		fd[i] = cli_connect(port);
	uint64_t start = sluice_now_ns();
	while (a->opens < NC) {
		assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
		pump(t, 1);
	}
	for (int i = 0; i < NC; i++) {
		char first[16];
		int n = snprintf(first, sizeof(first), "first-%d;", i);
		assert_true(tp_send(t, a->conns[i]->c, first, (size_t)n));
	}
	t->ops->flush(t);
	pump_until_closes(t, a, NC / 3, start);
	for (int i = 0; i < NC; i++) {
		if (i % 3 == 1) {
			/* Its first bytes may have left before the reset. */
			char b[64];
			ssize_t r;
			do {
				assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
				r = recv(fd[i], b, sizeof(b), MSG_DONTWAIT);
			} while (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
			assert_int_equal(r, -1);
			assert_int_equal(errno, ECONNRESET);
			close(fd[i]);
			continue;
		}
		char want[32], got[64];
		int n = snprintf(want, sizeof(want), "first-%d;%s", i, i % 3 == 2 ? "second;" : "");
		size_t have = 0;
		while (have < (size_t)n) {
			assert_true(sluice_now_ns() - start < LOOP_LIMIT_NS);
			ssize_t r = recv(fd[i], got + have, sizeof(got) - have, MSG_DONTWAIT);
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				pump(t, 1);
				continue;
			}
			assert_true(r > 0);
			have += (size_t)r;
		}
		assert_int_equal(have, (size_t)n);
		assert_memory_equal(got, want, (size_t)n);
		/* The bytes queued before its result came out with them. */
		assert_int_equal(a->conns[i]->drains, 1);
		close(fd[i]);
	}
	pump_until_closes(t, a, NC, start);
	t->ops->destroy(t);
	app_free(a);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "sendmsg") == 0)
		g_send = CONF_KSEND_SENDMSG;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo_random),
		cmocka_unit_test(test_stash_bound),
		cmocka_unit_test(test_graceful_close),
		cmocka_unit_test(test_blocked_drained),
		cmocka_unit_test(test_abort),
		cmocka_unit_test(test_refuse),
		cmocka_unit_test(test_app_contract_broken),
		cmocka_unit_test(test_many_conns),
		cmocka_unit_test(test_arena_interleaved),
		cmocka_unit_test(test_arena_grows_in_turn),
		cmocka_unit_test(test_reuseport),
		cmocka_unit_test(test_eof_then_send),
		cmocka_unit_test(test_linger),
		cmocka_unit_test(test_bad_listen),
		cmocka_unit_test(test_flush_batch_reentry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

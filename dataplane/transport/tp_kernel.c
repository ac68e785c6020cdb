/*
 * The kernel transport: nonblocking TCP sockets and one epoll set per worker.
 *
 * epoll is level-triggered: a connection is read once per poll (at most one
 * 64 KiB scratch buffer), so one fast sender cannot starve the others, and a
 * connection we stop reading (full stash, peer EOF) simply drops EPOLLIN from
 * its interest set. EPOLLOUT is in the set only while a send hit EAGAIN.
 *
 * Re-entrancy: upcalls may close any connection or queue bytes on it. A
 * closed connection's fd is closed at once (so epoll forgets it) but the
 * struct lives on a dead list until the end of the current poll() or flush(),
 * where on_close runs and the memory is freed; events already fetched for it
 * are skipped by its DEAD flag.
 */
#include "transport/tp_kernel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sluice/common.h"
#include "sluice/conf.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "transport/tp_kernel_config.h"
#include "transport/tp_kernel_int.h"
#include "transport/tp_uring.h"

#define RX_SCRATCH (64u * 1024u)
#define ACCEPT_BURST 64
#define WRITEV_MAX 64
#define STASH_MIN 2048u
#define LISTEN_BACKLOG 4096
/* After EMFILE and friends the listener rests this long, instead of waking a
 * level-triggered epoll in a loop while nothing can be accepted. */
#define ACCEPT_PAUSE_NS (100ull * 1000000ull)

/* ---- connection state ------------------------------------------------------ */

/* The conn's queue left, or the conn died: no longer stalled. */
static void conn_unblock(struct ktp *t, struct tp_conn *c)
{
	c->flags &= ~(uint32_t)KC_BLOCKED;
	t->base.stalled--;
}

/*
 * Closes the socket now and queues the connection for on_close at the end of
 * the pass. reset=true sends RST (SO_LINGER 0) instead of a normal close.
 */
void kt_conn_finish(struct tp_conn *c, bool reset)
{
	if (c->flags & KC_DEAD)
		return;
	struct ktp *t = c->tp;
	if (reset) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		/* On failure close() still closes, only with a FIN instead of RST. */
		(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(c->fd);
	c->fd = -1;
	if (c->flags & KC_BLOCKED)
		conn_unblock(t, c);
	c->flags |= KC_DEAD;
	ktq_release(t, c);
	c->stash_len = 0;
	list_del(&c->flush);
	list_del(&c->resume);
	list_del(&c->linger);
	list_del(&c->all);
	list_add_tail(&t->dead, &c->all);
}

/* Runs on_close for dead connections and frees them. */
static void reap(struct ktp *t)
{
	while (!list_empty(&t->dead)) {
		struct tp_conn *c = list_entry(t->dead.next, struct tp_conn, all);
		list_del(&c->all);
		if (c->ctx)
			t->up->on_close(t->app, c->ctx);
		free(c->stash);
		free(c);
		t->nconns--;
	}
}

/* Registers the epoll interest the connection's state calls for. */
static void update_interest(struct tp_conn *c)
{
	if (c->flags & KC_DEAD)
		return;
	uint32_t ev = 0;
	if (!(c->flags & (KC_RD_EOF | KC_RX_FULL)))
		ev |= EPOLLIN;
	if (c->flags & KC_BLOCKED)
		ev |= EPOLLOUT;
	if (ev == c->ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	if (epoll_ctl(c->tp->epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) {
		kt_conn_finish(c, true);
		return;
	}
	c->ev = ev;
}

/* The send queue of a closing connection is empty: FIN, and when the peer's
 * FIN is already in, the connection is done. */
static void closing_drained(struct tp_conn *c)
{
	if (!(c->flags & KC_WR_SHUT)) {
		if (shutdown(c->fd, SHUT_WR) < 0) {
			kt_conn_finish(c, false);
			return;
		}
		c->flags |= KC_WR_SHUT;
	}
	if (c->flags & KC_RD_EOF)
		kt_conn_finish(c, false);
}

/* Drops fully sent chunks from the front of the queue. */
static void txq_trim(struct ktp *t, struct tp_conn *c)
{
	while (c->txh && c->txh->head == c->txh->tail) {
		struct chunk *k = c->txh;
		c->txh = k->next;
		ktq_chunk_put(t, k);
	}
	if (!c->txh)
		c->txt = NULL;
}

/* The socket is full: wait for EPOLLOUT, and count the conn as stalled
 * (struct tp.stalled) until a send empties its queue or it dies
 * (conn_unblock). */
static void conn_block(struct ktp *t, struct tp_conn *c)
{
	if (!(c->flags & KC_BLOCKED)) {
		c->flags |= KC_BLOCKED;
		t->base.stalled++;
	}
	update_interest(c);
}

/* Points iov[0, max) at the queue's unsent bytes; returns how many it used,
 * their total in *offered. */
static int txq_iov(const struct tp_conn *c, struct iovec *iov, int max, size_t *offered)
{
	int n = 0;
	size_t sum = 0;
	for (struct chunk *k = c->txh; k && n < max; k = k->next) {
		if (k->tail > k->head) {
			iov[n].iov_base = k->data + k->head;
			iov[n].iov_len = k->tail - k->head;
			sum += iov[n].iov_len;
			n++;
		}
	}
	*offered = sum;
	return n;
}

/*
 * Takes in the result of one send of `offered` bytes: res is the bytes sent
 * or a negative errno. True when all of them went out and the socket may
 * take more; false when it is full (the conn now waits for EPOLLOUT) or
 * failed (the conn is finished).
 */
static bool txq_sent(struct ktp *t, struct tp_conn *c, ssize_t res, size_t offered)
{
	if (res < 0) {
		if (res == -EAGAIN || res == -EWOULDBLOCK)
			conn_block(t, c);
		else
			kt_conn_finish(c, false);
		return false;
	}
	size_t left = (size_t)res;
	c->tx_queued -= left;
	for (struct chunk *k = c->txh; k && left > 0; k = k->next) {
		size_t take = k->tail - k->head;
		if (take > left)
			take = left;
		k->head += (uint32_t)take;
		left -= take;
	}
	/* A short write means the socket buffer is full: wait for EPOLLOUT
	 * now instead of paying another send just to hear EAGAIN. */
	if ((size_t)res < offered) {
		txq_trim(t, c);
		conn_block(t, c);
		return false;
	}
	return true;
}

/* Sends until the queue is empty or the socket is full. */
static void conn_send(struct ktp *t, struct tp_conn *c)
{
	for (;;) {
		txq_trim(t, c);
		if (!c->txh)
			break;
		struct iovec iov[WRITEV_MAX];
		size_t offered;
		int n = txq_iov(c, iov, WRITEV_MAX, &offered);
		if (n == 0) {
			ktq_release(t, c);
			break;
		}
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (!txq_sent(t, c, w < 0 ? -(ssize_t)errno : w, offered))
			return;
	}
	if (c->flags & KC_BLOCKED) {
		conn_unblock(t, c);
		update_interest(c);
		if (c->flags & KC_DEAD)
			return;
	}
	if (c->flags & KC_CLOSING) {
		closing_drained(c);
	} else if (c->flags & KC_HAD_TX) {
		c->flags &= ~(uint32_t)KC_HAD_TX;
		t->up->on_drained(t->app, c->ctx);
	}
}

static void uring_drop(struct ktp *t)
{
	tpu_free(t->uring);
	free(t->usend);
	t->uring = NULL;
	t->usend = NULL;
}

/* Makes the ring on the flushing thread; false (and sendmsg from now on)
 * when that fails. */
static bool uring_open(struct ktp *t)
{
	char why[128];
	t->uring = tpu_new(TP_KERNEL_URING_DEPTH, why, sizeof(why));
	t->usend = calloc(TP_KERNEL_URING_DEPTH, sizeof(*t->usend));
	if (t->uring && t->usend)
		return true;
	LOG_INFO("kernel transport on port %u: no io_uring (%s), sending with sendmsg",
		 (unsigned)t->port, t->uring ? "out of memory" : why);
	uring_drop(t);
	t->use_uring = false;
	return false;
}

/*
 * The flush of a turn with more than one connection to send on, through
 * the ring: one send per connection queued (its first run of bytes, which
 * is all of it unless the queue outgrew the turn's arena share), one
 * io_uring_enter for up to TP_KERNEL_URING_DEPTH of them, then each result
 * taken in as conn_send would take its sendmsg's. A connection whose send
 * went out whole finishes in conn_send, which finds its queue empty (the
 * common case, no further syscall) or sends the rest itself. Upcalls run
 * only after the ring's run is over, so they may close or queue on any
 * connection of the batch: a closed one is skipped, bytes queued on one
 * waiting for its result go out in its conn_send.
 */
static void flush_uring(struct ktp *t, struct list_node *q)
{
	while (!list_empty(q)) {
		unsigned n = 0;
		while (!list_empty(q) && tpu_room(t->uring)) {
			struct tp_conn *c = list_entry(q->next, struct tp_conn, flush);
			list_del(&c->flush);
			if (c->flags & (KC_DEAD | KC_BLOCKED))
				continue;
			txq_trim(t, c);
			struct chunk *k = c->txh; /* trimmed: holds bytes, if any */
			if (!k) {
				conn_send(t, c);
				continue;
			}
			t->usend[n] = (struct ksend){.c = c, .offered = k->tail - k->head};
			tpu_send(t->uring, c->fd, k->data + k->head, k->tail - k->head, 0);
			n++;
		}
		int r = tpu_run(t->uring);
		for (unsigned i = 0; i < n; i++) {
			int res = tpu_result(t->uring, i, NULL);
			struct tp_conn *c = t->usend[i].c;
			if (c->flags & KC_DEAD)
				continue;
			/* The ring failed, or a signal cut the send short: sendmsg
			 * answers for this one. */
			if ((r < 0 && res == r) || res == -EINTR || txq_sent(t, c, res, t->usend[i].offered))
				conn_send(t, c);
		}
		if (r < 0) {
			LOG_WARN("kernel transport on port %u: io_uring failed (%s), sending with "
				 "sendmsg from now on", (unsigned)t->port, strerror(-r));
			uring_drop(t);
			t->use_uring = false;
			return; /* kt_flush sends the rest with sendmsg */
		}
	}
}

/* Makes room for `need` stash bytes (need <= TP_RX_STASH_MAX). */
static bool stash_reserve(struct tp_conn *c, uint32_t need)
{
	if (need <= c->stash_cap)
		return true;
	uint32_t cap = c->stash_cap ? c->stash_cap : STASH_MIN;
	while (cap < need)
		cap *= 2;
	if (cap > TP_RX_STASH_MAX)
		cap = TP_RX_STASH_MAX;
	uint8_t *s = realloc(c->stash, cap);
	if (!s)
		return false;
	c->stash = s;
	c->stash_cap = cap;
	return true;
}

/* Offers p[0..len) to the app and keeps what it did not consume. p is either
 * the stash itself or bytes outside it (then the stash is empty). */
static void offer(struct ktp *t, struct tp_conn *c, const uint8_t *p, size_t len)
{
	size_t used = t->up->on_data(t->app, c->ctx, p, len);
	if (c->flags & (KC_DEAD | KC_CLOSING)) {
		c->stash_len = 0;
		return;
	}
	if (unlikely(used > len)) {
		t->app_errors++;
		kt_conn_finish(c, true);
		return;
	}
	if (used == len) {
		c->stash_len = 0;
		return;
	}
	uint32_t rest = (uint32_t)(len - used);
	if (p == c->stash) {
		memmove(c->stash, c->stash + used, rest);
	} else {
		if (!stash_reserve(c, rest)) {
			kt_conn_finish(c, true);
			return;
		}
		memcpy(c->stash, p + used, rest);
	}
	c->stash_len = rest;
	if (rest >= TP_RX_STASH_MAX) {
		c->flags |= KC_RX_FULL;
		update_interest(c);
	}
}

static void peer_eof(struct ktp *t, struct tp_conn *c)
{
	c->flags |= KC_RD_EOF;
	update_interest(c);
	if (c->flags & KC_DEAD)
		return;
	if (c->flags & KC_CLOSING) {
		if (c->flags & KC_WR_SHUT)
			kt_conn_finish(c, false);
		return;
	}
	t->up->on_eof(t->app, c->ctx);
}

/* One recv: into the scratch buffer, or appended to a non-empty stash so the
 * app sees old and new bytes contiguously. */
static void conn_read(struct ktp *t, struct tp_conn *c)
{
	size_t room = RX_SCRATCH;
	if (!(c->flags & KC_CLOSING) && c->stash_len > 0)
		room = TP_RX_STASH_MAX - c->stash_len;
	if (room == 0) {
		c->flags |= KC_RX_FULL;
		update_interest(c);
		return;
	}
	ssize_t n = recv(c->fd, t->scratch, room, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		kt_conn_finish(c, false);
		return;
	}
	if (n == 0) {
		peer_eof(t, c);
		return;
	}
	if (c->flags & KC_CLOSING)
		return;
	if (c->stash_len == 0) {
		offer(t, c, t->scratch, (size_t)n);
		return;
	}
	if (!stash_reserve(c, c->stash_len + (uint32_t)n)) {
		kt_conn_finish(c, true);
		return;
	}
	memcpy(c->stash + c->stash_len, t->scratch, (size_t)n);
	c->stash_len += (uint32_t)n;
	offer(t, c, c->stash, c->stash_len);
}

/* ---- accepting ------------------------------------------------------------- */

/* Out of descriptors or memory: every listener rests. */
static void pause_listener(struct ktp *t)
{
	for (uint32_t i = 0; i < t->nls; i++) {
		struct epoll_event e = {.events = 0, .data.ptr = &t->ls[i]};
		if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, t->ls[i].fd, &e) != 0)
			return;
	}
	t->listen_paused = true;
	t->listen_resume_ns = sluice_now_ns() + ACCEPT_PAUSE_NS;
}

static int resume_listener(struct ktp *t)
{
	for (uint32_t i = 0; i < t->nls; i++) {
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = &t->ls[i]};
		if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, t->ls[i].fd, &e) < 0)
			return -1;
	}
	t->listen_paused = false;
	return 0;
}

/* The drain: the listening sockets close, so new connections are refused
 * by the kernel (and a SYN in an accept queue is reset); open ones stay.
 * Called between polls, so no event still names a listener. */
static void kt_stop_listening(struct tp *tp)
{
	struct ktp *t = (struct ktp *)tp;
	for (uint32_t i = 0; i < t->nls; i++) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->ls[i].fd, NULL);
		close(t->ls[i].fd);
	}
	t->nls = 0;
	t->listen_paused = false;
}

static bool is_listener(const struct ktp *t, const void *p)
{
	return p >= (const void *)&t->ls[0] && p < (const void *)&t->ls[t->nls];
}

static void conn_new(struct ktp *t, int fd, const struct sockaddr_in *sa, uint16_t local_port)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		close(fd);
		return;
	}
	struct tp_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->tp = t;
	c->fd = fd;
	c->ev = EPOLLIN;
	list_init(&c->flush);
	list_init(&c->resume);
	struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		close(fd);
		free(c);
		return;
	}
	list_add_tail(&t->conns, &c->all);
	t->nconns++;
	struct tp_peer peer = {
		.ipv4 = sa->sin_addr.s_addr, .port = ntohs(sa->sin_port), .local_port = local_port,
	};
	void *ctx = t->up->on_open(t->app, c, &peer);
	if (!ctx) {
		kt_conn_finish(c, true);
		return;
	}
	c->ctx = ctx;
}

static int do_accept(struct ktp *t, const struct klisten *l)
{
	int n = 0;
	while (n < ACCEPT_BURST) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		int fd = accept4(l->fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				pause_listener(t);
			break;
		}
		conn_new(t, fd, &sa, l->port);
		n++;
	}
	return n;
}

/* ---- tp_ops ---------------------------------------------------------------- */

static int run_resumes(struct ktp *t)
{
	struct list_node local;
	int n = 0;
	list_init(&local);
	list_splice_tail(&local, &t->resumeq);
	while (!list_empty(&local)) {
		struct tp_conn *c = list_entry(local.next, struct tp_conn, resume);
		list_del(&c->resume);
		if (c->flags & (KC_DEAD | KC_CLOSING))
			continue;
		c->flags &= ~(uint32_t)KC_RX_FULL;
		if (c->stash_len > 0) {
			offer(t, c, c->stash, c->stash_len);
			n++;
		}
		update_interest(c);
	}
	return n;
}

static void run_lingers(struct ktp *t, uint64_t now)
{
	while (!list_empty(&t->lingerq)) {
		struct tp_conn *c = list_entry(t->lingerq.next, struct tp_conn, linger);
		if (c->linger_deadline > now)
			break;
		kt_conn_finish(c, c->tx_queued > 0);
	}
}

static int set_extra_fd(struct ktp *t, int fd)
{
	if (fd == t->extra_fd)
		return 0;
	if (t->extra_fd >= 0 && epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->extra_fd, NULL) < 0 && errno != ENOENT &&
	    errno != EBADF)
		return -1;
	t->extra_fd = -1;
	if (fd >= 0) {
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = &t->extra_fd};
		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
			return -1;
		t->extra_fd = fd;
	}
	return 0;
}

static int clamp_timeout(int timeout_ms, uint64_t now, uint64_t deadline)
{
	uint64_t ms = deadline > now ? (deadline - now + 999999) / 1000000 : 0;
	if (timeout_ms < 0 || ms < (uint64_t)timeout_ms)
		return (int)ms;
	return timeout_ms;
}

static void conn_event(struct ktp *t, struct tp_conn *c, uint32_t ev)
{
	if (ev & EPOLLERR) {
		kt_conn_finish(c, false);
		return;
	}
	if (ev & EPOLLOUT) {
		conn_send(t, c);
		if (c->flags & KC_DEAD)
			return;
	}
	if ((ev & (EPOLLIN | EPOLLHUP)) && !(c->flags & (KC_RD_EOF | KC_RX_FULL | KC_DEAD)))
		conn_read(t, c);
	/* Both directions are gone (reset, or FIN both ways): nothing more to do. */
	if ((ev & EPOLLHUP) && (c->flags & KC_RD_EOF))
		kt_conn_finish(c, false);
}

static int kt_poll(struct tp *tp, int timeout_ms, int extra_fd)
{
	struct ktp *t = ktp_of(tp);
	uint64_t now = sluice_now_ns();
	if (set_extra_fd(t, extra_fd) < 0)
		return -1;
	run_lingers(t, now);
	if (t->listen_paused && now >= t->listen_resume_ns && resume_listener(t) < 0)
		return -1;
	int handled = run_resumes(t);
	if (handled > 0 || !list_empty(&t->dead))
		timeout_ms = 0;
	if (t->listen_paused)
		timeout_ms = clamp_timeout(timeout_ms, now, t->listen_resume_ns);
	if (!list_empty(&t->lingerq)) {
		struct tp_conn *c = list_entry(t->lingerq.next, struct tp_conn, linger);
		timeout_ms = clamp_timeout(timeout_ms, now, c->linger_deadline);
	}
	int n = epoll_wait(t->epfd, t->events, MAX_EVENTS, timeout_ms);
	if (n < 0) {
		if (errno != EINTR)
			return -1;
		n = 0;
	}
	for (int i = 0; i < n; i++) {
		void *p = t->events[i].data.ptr;
		if (is_listener(t, p)) {
			do_accept(t, p);
		} else if (p != &t->extra_fd) {
			struct tp_conn *c = p;
			if (!(c->flags & KC_DEAD))
				conn_event(t, c, t->events[i].events);
		}
	}
	reap(t);
	return handled + n;
}

static uint8_t *kt_tx_reserve(struct tp_conn *c, size_t min, size_t *avail)
{
	if (unlikely(c->flags & (KC_DEAD | KC_CLOSING)))
		return NULL;
	if (min == 0)
		min = 1;
	struct chunk *k = c->txt;
	if (!k || k->cap - k->tail < min || (ktq_in_arena(k) && k != c->tp->arena_top)) {
		k = ktq_arena_get(c->tp, c, min);
		/* Past the arena the queue goes on as an empty one would: a small
		 * chunk first. */
		if (!k)
			k = ktq_chunk_get(c->tp, min, !c->txt || ktq_in_arena(c->txt));
		if (unlikely(!k))
			return NULL;
		if (c->txt)
			c->txt->next = k;
		else
			c->txh = k;
		c->txt = k;
	}
	*avail = k->cap - k->tail;
	return k->data + k->tail;
}

static void kt_tx_commit(struct tp_conn *c, size_t n)
{
	if (unlikely(c->flags & (KC_DEAD | KC_CLOSING)) || n == 0)
		return;
	struct chunk *k = c->txt;
	if (unlikely(!k || n > (size_t)(k->cap - k->tail))) {
		/* Bytes past the reservation are not ours to send. */
		c->tp->app_errors++;
		kt_conn_finish(c, true);
		return;
	}
	k->tail += (uint32_t)n;
	c->tx_queued += n;
	c->flags |= KC_HAD_TX;
	if (list_empty(&c->flush) && !(c->flags & KC_BLOCKED))
		list_add_tail(&c->tp->flushq, &c->flush);
}

static void kt_flush(struct tp *tp)
{
	struct ktp *t = ktp_of(tp);
	struct list_node local;
	list_init(&local);
	list_splice_tail(&local, &t->flushq);
	/* One connection to send on gains nothing from the ring. */
	if (t->use_uring && !list_empty(&local) && local.next->next != &local &&
	    (t->uring || uring_open(t)))
		flush_uring(t, &local);
	while (!list_empty(&local)) {
		struct tp_conn *c = list_entry(local.next, struct tp_conn, flush);
		list_del(&c->flush);
		if (!(c->flags & (KC_DEAD | KC_BLOCKED)))
			conn_send(t, c);
	}
	ktq_arena_reset(t);
	reap(t);
}

static void kt_close(struct tp_conn *c, bool abort)
{
	if (c->flags & KC_DEAD)
		return;
	if (abort) {
		kt_conn_finish(c, true);
		return;
	}
	if (c->flags & KC_CLOSING)
		return;
	struct ktp *t = c->tp;
	c->flags |= KC_CLOSING;
	c->flags &= ~(uint32_t)KC_RX_FULL;
	c->stash_len = 0;
	list_del(&c->resume);
	c->linger_deadline = sluice_now_ns() + TP_KERNEL_LINGER_NS;
	list_add_tail(&t->lingerq, &c->linger);
	update_interest(c);
	if (c->flags & KC_DEAD)
		return;
	if (c->tx_queued == 0)
		closing_drained(c);
	else if (list_empty(&c->flush) && !(c->flags & KC_BLOCKED))
		list_add_tail(&t->flushq, &c->flush);
}

static void kt_info(struct tp_conn *c, struct tp_conn_info *out)
{
	memset(out, 0, sizeof(*out));
	if (c->flags & KC_DEAD)
		return;
	out->tx_queued = c->tx_queued;
	out->blocked = (c->flags & KC_BLOCKED) != 0;
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return;
#if HAVE_TCPI_SND_WND
	out->snd_wnd = ti.tcpi_snd_wnd;
#endif
	out->cwnd = ti.tcpi_snd_cwnd * ti.tcpi_snd_mss;
	/* tcp_info counts unacknowledged segments; bytes are an estimate. */
	out->unacked = ti.tcpi_unacked * ti.tcpi_snd_mss;
}

/* The per-token view: no getsockopt, only what the send results taught us. */
static void kt_tx_state(struct tp_conn *c, struct tp_conn_info *out)
{
	memset(out, 0, sizeof(*out));
	if (c->flags & KC_DEAD)
		return;
	out->tx_queued = c->tx_queued;
	out->blocked = (c->flags & KC_BLOCKED) != 0;
}

static uint64_t kt_tx_queued(struct tp_conn *c)
{
	return (c->flags & KC_DEAD) ? 0 : c->tx_queued;
}

static void kt_rx_resume(struct tp_conn *c)
{
	if (c->flags & (KC_DEAD | KC_CLOSING))
		return;
	if (c->resume.next == &c->resume)
		list_add_tail(&c->tp->resumeq, &c->resume);
}

static void kt_destroy(struct tp *tp)
{
	if (!tp)
		return;
	struct ktp *t = ktp_of(tp);
	while (!list_empty(&t->conns))
		kt_conn_finish(list_entry(t->conns.next, struct tp_conn, all), false);
	reap(t);
	if (t->app_errors)
		LOG_WARN("kernel transport on port %u: %" PRIu64 " connection(s) reset because the "
			 "app consumed or committed more than it was given", (unsigned)t->port,
			 t->app_errors);
	while (t->free_chunks) {
		struct chunk *k = t->free_chunks;
		t->free_chunks = k->next;
		free(k);
	}
	while (t->free_small) {
		struct chunk *k = t->free_small;
		t->free_small = k->next;
		free(k);
	}
	while (t->narena_prev > 0)
		free(t->arena_prev[--t->narena_prev]);
	free(t->arena);
	free(t->arena_conns);
	uring_drop(t);
	for (uint32_t i = 0; i < t->nls; i++)
		close(t->ls[i].fd);
	if (t->epfd >= 0)
		close(t->epfd);
	free(t->scratch);
	free(t);
}

static const struct tp_ops kernel_ops = {
	.name = "kernel",
	.poll = kt_poll,
	.tx_reserve = kt_tx_reserve,
	.tx_commit = kt_tx_commit,
	.flush = kt_flush,
	.close = kt_close,
	.info = kt_info,
	.tx_state = kt_tx_state,
	.tx_queued = kt_tx_queued,
	.rx_resume = kt_rx_resume,
	.destroy = kt_destroy,
	.stop_listening = kt_stop_listening,
};

/* A nonblocking SO_REUSEPORT listening socket on addr:port, in the epoll set
 * as ls[nls]. Returns 0, or -1 with a message in err. */
static int listener_add(struct ktp *t, const char *addr, uint16_t port, char *err, size_t errlen)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (t->nls == TP_KERNEL_MAX_LISTEN) {
		snprintf(err, errlen, "kernel transport: more than %u listening sockets",
			 TP_KERNEL_MAX_LISTEN);
		return -1;
	}
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		snprintf(err, errlen, "listen address '%s' is not an IPv4 address", addr);
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	struct klisten *l = &t->ls[t->nls];
	l->fd = fd;
	t->nls++;
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		snprintf(err, errlen, "setsockopt SO_REUSEADDR/SO_REUSEPORT: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(err, errlen, "bind %s:%u: %s", addr, (unsigned)port, strerror(errno));
		return -1;
	}
	if (listen(fd, LISTEN_BACKLOG) < 0) {
		snprintf(err, errlen, "listen %s:%u: %s", addr, (unsigned)port, strerror(errno));
		return -1;
	}
	socklen_t sl = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		snprintf(err, errlen, "getsockname: %s", strerror(errno));
		return -1;
	}
	l->port = ntohs(sa.sin_port);
	struct epoll_event e = {.events = t->listen_paused ? 0 : EPOLLIN, .data.ptr = l};
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
		return -1;
	}
	return 0;
}

struct tp *tp_kernel_listen(const char *addr, uint16_t port, const struct tp_upcalls *up, void *app,
			    char *err, size_t errlen)
{
	struct ktp *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "kernel transport: out of memory");
		return NULL;
	}
	t->base.ops = &kernel_ops;
	t->base.stall_counted = true;
	t->up = up;
	t->app = app;
	t->epfd = t->extra_fd = -1;
	list_init(&t->conns);
	list_init(&t->dead);
	list_init(&t->flushq);
	list_init(&t->resumeq);
	list_init(&t->lingerq);

	t->scratch = malloc(RX_SCRATCH);
	if (!t->scratch) {
		snprintf(err, errlen, "kernel transport: out of memory");
		goto fail;
	}
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd < 0) {
		snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
		goto fail;
	}
	if (listener_add(t, addr, port, err, errlen) != 0)
		goto fail;
	t->port = t->ls[0].port;
	t->use_uring = true; /* kernel_send = auto */
	return &t->base;
fail:
	kt_destroy(&t->base);
	return NULL;
}

int tp_kernel_listen_also(struct tp *tp, const char *addr, uint16_t port, char *err, size_t errlen)
{
	return listener_add(ktp_of(tp), addr, port, err, errlen);
}

uint16_t tp_kernel_port(const struct tp *t)
{
	return ((const struct ktp *)(const void *)t)->port;
}

uint32_t tp_kernel_conns(const struct tp *t)
{
	return ((const struct ktp *)(const void *)t)->nconns;
}

uint32_t tp_kernel_chunks(const struct tp *t)
{
	return ((const struct ktp *)(const void *)t)->nchunks;
}

uint64_t tp_kernel_app_errors(const struct tp *t)
{
	return ((const struct ktp *)(const void *)t)->app_errors;
}

int tp_kernel_set_send(struct tp *tp, enum conf_kernel_send how, char *err, size_t errlen)
{
	struct ktp *t = ktp_of(tp);
	if (how == CONF_KSEND_SENDMSG) {
		uring_drop(t);
		t->use_uring = false;
		return 0;
	}
	/* `uring` fails the start here; `auto` finds out at the first flush
	 * (uring_open). The probe's ring is not kept: the ring is made by the
	 * thread that flushes, a single-issuer ring serves no other. */
	if (how == CONF_KSEND_URING && !t->uring) {
		char why[128];
		struct tpu *probe = tpu_new(TP_KERNEL_URING_DEPTH, why, sizeof(why));
		if (!probe) {
			snprintf(err, errlen, "kernel_send = uring: %s", why);
			return -1;
		}
		tpu_free(probe);
	}
	t->use_uring = true;
	return 0;
}

bool tp_kernel_uring(const struct tp *t)
{
	return ((const struct ktp *)(const void *)t)->use_uring;
}

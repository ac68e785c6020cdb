/*
 * The TLS transport (tls.h): a struct tp over an inner struct tp, one per
 * worker. A connection is ours from the inner on_open; the app hears of it
 * only once its handshake is done, with tp_peer.tls set. Connections to the
 * redirect port are passed through untouched (the app redirects them).
 *
 * Receive: the inner on_data's bytes are read by OpenSSL through our BIO
 * (tls_bio_read); SSL_read decrypts into the worker's scratch buffer, which
 * is offered to the app; what it leaves is kept in a per-connection stash,
 * up to TP_RX_STASH_MAX, beyond which we stop reading (the inner transport
 * then keeps the ciphertext and TCP pushes back).
 *
 * Transmit: tx_reserve hands out the worker's one scratch buffer; tx_commit
 * appends the bytes to the connection's pending plaintext (a 2 KiB buffer,
 * grown to one record's 16 KiB). Pending plaintext becomes one record when
 * the next commit would not fit beside it, and at the end of the loop turn
 * (flush): a frame up to 16 KiB is never split across records, and the
 * frames of one turn share records. SSL_write writes the record into the
 * inner send queue (tls_bio_write); the inner flush sends it.
 *
 * Handshakes: each step is timed and the worker spends at most
 * handshake_budget_us per poll on them (plus the one step that crosses the
 * line); input for further handshakes is held in the inner transport and
 * offered again next turn (inner rx_resume), so token delivery on the
 * worker's open connections waits at most one budget per turn. At accept,
 * handshakes_max in progress per worker or handshakes_per_addr per client
 * address reset the connection, and an unfinished handshake is reset after
 * handshake_timeout_s: like a SYN flood, a handshake flood costs bounded
 * memory and bounded time per turn.
 *
 * Re-entrancy: inner upcalls may call our ops on any connection; ours may
 * call the app's. A connection is freed only from the inner on_close, which
 * the inner transport never calls from inside another upcall.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "sluice/conf.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "tls/tls_int.h"
#include "worker/dp_stat.h"

/* Decrypted input lands here first, as the kernel transport's reads do. */
#define RX_SCRATCH TP_RX_STASH_MAX
/* tx_reserve's scratch: a frame this large is one commit. */
#define TX_SCRATCH (64u * 1024u)
/* Pending-plaintext buffers: small first, one record when more is needed. */
#define PTX_SMALL 2048u
#define PTX_FREE_MAX 1024u
#define STASH_MIN 2048u
#define NS_PER_S 1000000000ull

enum {
	TC_HANDSHAKE = 1u << 0, /* counted in in_progress and the address table */
	TC_OPEN = 1u << 1,      /* the app has it (ctx set) */
	TC_CLOSING = 1u << 2,   /* the app closed it gracefully */
	TC_DEAD = 1u << 3,      /* inner close asked; only on_close to come */
	TC_PLAIN = 1u << 4,     /* the redirect port: passed through */
	TC_RX_FULL = 1u << 5,   /* stash full: no SSL_read until rx_resume */
	TC_HAD_TX = 1u << 6,    /* committed since the last on_drained */
	TC_EOF = 1u << 7,       /* on_eof given to the app */
	TC_QUEUED = 1u << 8,    /* on the flush queue */
};

struct tls;

/* A connection as the app sees it (struct tp_conn is opaque to it). */
struct tp_conn {
	struct tls *t;
	struct tp_conn *inner;
	SSL *ssl;
	void *ctx;
	uint32_t flags;
	uint32_t rx_len, rx_cap;
	uint32_t ptx_len, ptx_cap;
	uint8_t *rx;  /* decrypted, not consumed by the app; owned */
	uint8_t *ptx; /* plaintext not yet in a record; from the pools */
	/* Ciphertext being offered by the inner on_data (tls_bio_read). */
	const uint8_t *in;
	size_t in_len;
	uint64_t hs_deadline;
	struct tp_peer peer;
	struct list_node hs;     /* tls.hsq, by deadline, while TC_HANDSHAKE */
	struct list_node flush;  /* tls.flushq while TC_QUEUED */
	struct list_node resume; /* tls.resumeq: rx_resume asked */
	struct list_node defer;  /* tls.deferq: input held by the budget */
};

/* A free pending-plaintext buffer. */
struct ptx_free {
	struct ptx_free *next;
};

struct tls {
	struct tp base; /* first: struct tp * converts to struct tls * */
	struct tp_ops ops;
	struct tls_shared *s;
	struct tp *inner;
	const struct tp_upcalls *up;
	void *app;
	struct tls_view view;
	struct tls_stats *st;
	uint32_t id;
	uint16_t plain_port;
	uint64_t budget_ns, spent_ns, hs_timeout_ns;
	uint32_t hs_max, hs_per_addr, in_progress;
	/* In-progress handshakes per client address: open addressing, linear
	 * probing, key 0 = empty slot. */
	uint32_t *addr_key, *addr_n;
	uint32_t addr_mask;
	uint8_t *rxs;
	uint8_t *txs;
	size_t txs_cap;
	struct tp_conn *txs_owner; /* the conn tx_reserve last handed txs to */
	struct ptx_free *free_small, *free_rec;
	uint32_t nfree_small, nfree_rec;
	struct list_node hsq, flushq, resumeq, deferq;
};

static inline struct tls *tls_of(struct tp *t)
{
	return (struct tls *)(void *)t;
}

static inline const struct tp_ops *in_ops(const struct tls *t)
{
	return t->inner->ops;
}

struct tls_view *tls_view_of(SSL *ssl)
{
	struct tp_conn *c = SSL_get_app_data(ssl);
	return c ? &c->t->view : NULL;
}

/* ---- per-address handshake counts ------------------------------------------- */

static uint32_t *addr_slot(struct tls *t, uint32_t ip)
{
	uint32_t i = (ip * 2654435761u) & t->addr_mask;
	while (t->addr_key[i] && t->addr_key[i] != ip)
		i = (i + 1) & t->addr_mask;
	return &t->addr_key[i];
}

static uint32_t addr_count(struct tls *t, uint32_t ip)
{
	uint32_t *k = addr_slot(t, ip);
	return *k ? t->addr_n[k - t->addr_key] : 0;
}

/* The table has twice as many slots as handshakes may be in progress, so a
 * free slot is always found. */
static void addr_inc(struct tls *t, uint32_t ip)
{
	uint32_t *k = addr_slot(t, ip);
	*k = ip;
	t->addr_n[k - t->addr_key]++;
}

/* Drops one; an emptied slot is refilled from the run behind it, so probes
 * never stop at a hole. */
static void addr_dec(struct tls *t, uint32_t ip)
{
	uint32_t i = (uint32_t)(addr_slot(t, ip) - t->addr_key);
	if (!t->addr_key[i] || --t->addr_n[i] > 0)
		return;
	t->addr_key[i] = 0;
	for (uint32_t j = (i + 1) & t->addr_mask; t->addr_key[j]; j = (j + 1) & t->addr_mask) {
		uint32_t home = (t->addr_key[j] * 2654435761u) & t->addr_mask;
		/* j's entry may move to the hole at i unless its home lies in (i, j]. */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (stays)
			continue;
		t->addr_key[i] = t->addr_key[j];
		t->addr_n[i] = t->addr_n[j];
		t->addr_key[j] = 0;
		i = j;
	}
}

/* ---- pending-plaintext buffers ---------------------------------------------- */

static uint8_t *ptx_get(struct tls *t, uint32_t cap)
{
	struct ptx_free **head = cap == PTX_SMALL ? &t->free_small : &t->free_rec;
	struct ptx_free *f = *head;
	if (f) {
		*head = f->next;
		if (cap == PTX_SMALL)
			t->nfree_small--;
		else
			t->nfree_rec--;
		return (uint8_t *)f;
	}
	return malloc(cap);
}

static void ptx_put(struct tls *t, uint8_t *p, uint32_t cap)
{
	if (!p)
		return;
	uint32_t *n = cap == PTX_SMALL ? &t->nfree_small : &t->nfree_rec;
	if (*n >= PTX_FREE_MAX) {
		free(p);
		return;
	}
	struct ptx_free *f = (struct ptx_free *)(void *)p;
	struct ptx_free **head = cap == PTX_SMALL ? &t->free_small : &t->free_rec;
	f->next = *head;
	*head = f;
	(*n)++;
}

static void ptx_release(struct tls *t, struct tp_conn *c)
{
	ptx_put(t, c->ptx, c->ptx_cap);
	c->ptx = NULL;
	c->ptx_cap = c->ptx_len = 0;
	if (c->flags & TC_QUEUED) {
		c->flags &= ~(uint32_t)TC_QUEUED;
		list_del(&c->flush);
	}
}

/* ---- the BIO ---------------------------------------------------------------- */

int tls_bio_read(BIO *b, char *out, int len)
{
	struct tp_conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (!c || c->in_len == 0 || len <= 0) {
		BIO_set_retry_read(b);
		return -1;
	}
	size_t n = c->in_len < (size_t)len ? c->in_len : (size_t)len;
	memcpy(out, c->in, n);
	c->in += n;
	c->in_len -= n;
	return (int)n;
}

/* All or nothing in practice: a short write leaves OpenSSL's record half
 * sent, and the next call fails, which resets the connection. */
int tls_bio_write(BIO *b, const char *data, int len)
{
	struct tp_conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (!c || (c->flags & TC_DEAD) || len <= 0)
		return -1;
	const struct tp_ops *ops = in_ops(c->t);
	size_t done = 0;
	while (done < (size_t)len) {
		size_t avail = 0;
		uint8_t *dst = ops->tx_reserve(c->inner, 1, &avail);
		if (!dst || avail == 0)
			break;
		size_t n = (size_t)len - done < avail ? (size_t)len - done : avail;
		memcpy(dst, data + done, n);
		ops->tx_commit(c->inner, n);
		done += n;
	}
	return done ? (int)done : -1;
}

/* ---- connection state --------------------------------------------------------- */

static void hs_unaccount(struct tls *t, struct tp_conn *c)
{
	if (!(c->flags & TC_HANDSHAKE))
		return;
	c->flags &= ~(uint32_t)TC_HANDSHAKE;
	list_del(&c->hs);
	t->in_progress--;
	DP_STAT_SUB(t->st, in_progress, 1);
	addr_dec(t, c->peer.ipv4);
}

/* Ends the connection below us; on_close follows from the inner transport.
 * Graceful: what OpenSSL queued (an alert, close_notify) is sent first. */
static void conn_end(struct tp_conn *c, bool abort)
{
	struct tls *t = c->t;
	if (c->flags & TC_DEAD)
		return;
	hs_unaccount(t, c);
	c->flags |= TC_DEAD;
	c->rx_len = 0;
	ptx_release(t, c);
	list_del(&c->resume);
	list_del(&c->defer);
	in_ops(t)->close(c->inner, abort);
}

static void hs_fail(struct tp_conn *c)
{
	DP_STAT_ADD(c->t->st, failures, 1);
	conn_end(c, false);
}

/* The handshake is done: the app gets the connection. */
static void hs_done(struct tp_conn *c)
{
	struct tls *t = c->t;
	hs_unaccount(t, c);
	if (SSL_session_reused(c->ssl))
		DP_STAT_ADD(t->st, resumed, 1);
	else
		DP_STAT_ADD(t->st, handshakes, 1);
	c->peer.tls = true;
	void *ctx = t->up->on_open(t->app, c, &c->peer);
	if (!ctx) {
		conn_end(c, true);
		return;
	}
	c->ctx = ctx;
	c->flags |= TC_OPEN;
}

/* One handshake step on the input being offered, timed against the budget. */
static void hs_step(struct tp_conn *c)
{
	struct tls *t = c->t;
	uint64_t t0 = sluice_now_ns();
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	uint64_t dt = sluice_now_ns() - t0;
	t->spent_ns += dt;
	DP_STAT_ADD(t->st, handshake_ns, dt);
	if (r == 1) {
		hs_done(c);
		return;
	}
	if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
		hs_fail(c);
}

/* Grows the stash to hold `need` bytes (<= TP_RX_STASH_MAX): from 2 KiB,
 * doubling, as the kernel transport's does. */
static bool stash_reserve(struct tp_conn *c, size_t need)
{
	if (need <= c->rx_cap)
		return true;
	uint32_t cap = c->rx_cap ? c->rx_cap : STASH_MIN;
	while (cap < need)
		cap *= 2;
	if (cap > TP_RX_STASH_MAX)
		cap = TP_RX_STASH_MAX;
	uint8_t *p = realloc(c->rx, cap);
	if (!p)
		return false;
	c->rx = p;
	c->rx_cap = cap;
	return true;
}

/* Keeps what the app left of buf[0..total): buf is the scratch or the stash. */
static bool keep_rest(struct tp_conn *c, const uint8_t *buf, size_t total, size_t used)
{
	size_t rest = total - used;
	if (rest == 0) {
		c->rx_len = 0;
		return true;
	}
	if (buf == c->rx) {
		memmove(c->rx, c->rx + used, rest);
	} else {
		if (!stash_reserve(c, rest))
			return false;
		memcpy(c->rx, buf + used, rest);
	}
	c->rx_len = (uint32_t)rest;
	return true;
}

/*
 * Decrypts what OpenSSL can give (from the input being offered and from its
 * own buffers) and offers the app its stash plus the new bytes, until
 * OpenSSL needs more input, the stash is full or the connection ends.
 * `offer` re-offers the stash even when nothing new came (rx_resume).
 */
static void rx_pump(struct tp_conn *c, bool offer)
{
	struct tls *t = c->t;
	for (;;) {
		if ((c->flags & (TC_DEAD | TC_CLOSING | TC_RX_FULL | TC_EOF)) || !(c->flags & TC_OPEN))
			return;
		/* New bytes go behind a non-empty stash, which grows to make room. */
		if (c->rx_len && c->rx_len == c->rx_cap && !stash_reserve(c, c->rx_cap + 1)) {
			conn_end(c, true);
			return;
		}
		uint8_t *buf = c->rx_len ? c->rx : t->rxs;
		size_t have = c->rx_len, cap = c->rx_len ? c->rx_cap : RX_SCRATCH, got = 0;
		bool eof = false, more = true;
		while (have + got < cap) {
			ERR_clear_error();
			int n = SSL_read(c->ssl, buf + have + got, (int)(cap - have - got));
			if (n > 0) {
				got += (size_t)n;
				continue;
			}
			int e = SSL_get_error(c->ssl, n);
			more = false;
			if (e == SSL_ERROR_ZERO_RETURN) {
				eof = true;
			} else if (e != SSL_ERROR_WANT_READ) {
				conn_end(c, true);
				return;
			}
			break;
		}
		if (got == 0 && !offer && !eof)
			return;
		offer = false;
		size_t total = have + got;
		size_t used = total ? t->up->on_data(t->app, c->ctx, buf, total) : 0;
		if (c->flags & (TC_DEAD | TC_CLOSING)) {
			c->rx_len = 0;
			return;
		}
		if (unlikely(used > total)) {
			DP_STAT_ADD(t->st, app_errors, 1);
			conn_end(c, true);
			return;
		}
		if (!keep_rest(c, buf, total, used)) {
			conn_end(c, true);
			return;
		}
		if (eof) {
			c->flags |= TC_EOF;
			t->up->on_eof(t->app, c->ctx);
			return;
		}
		if (c->rx_len >= TP_RX_STASH_MAX) {
			c->flags |= TC_RX_FULL;
			return;
		}
		/* OpenSSL wants more input: everything decrypted was offered.
		 * Otherwise the buffer filled up and the app made room. */
		if (!more)
			return;
	}
}

/* ---- inner upcalls ------------------------------------------------------------ */

static void *in_open(void *arg, struct tp_conn *ic, const struct tp_peer *peer)
{
	struct tls *t = arg;
	bool plain = t->plain_port && peer->local_port == t->plain_port;

	if (!plain) {
		if (t->in_progress >= t->hs_max) {
			DP_STAT_ADD(t->st, refused_worker, 1);
			return NULL;
		}
		if (addr_count(t, peer->ipv4) >= t->hs_per_addr) {
			DP_STAT_ADD(t->st, refused_addr, 1);
			return NULL;
		}
	}
	struct tp_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->t = t;
	c->inner = ic;
	c->peer = *peer;
	list_init(&c->hs);
	list_init(&c->flush);
	list_init(&c->resume);
	list_init(&c->defer);
	if (plain) {
		c->flags = TC_PLAIN;
		c->ctx = t->up->on_open(t->app, c, peer);
		if (!c->ctx) {
			free(c);
			return NULL;
		}
		c->flags |= TC_OPEN;
		return c;
	}
	c->ssl = SSL_new(t->view.certs->cert[0].ctx);
	BIO *b = c->ssl ? BIO_new(t->s->bio_meth) : NULL;
	if (!b) {
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	BIO_set_data(b, c);
	SSL_set_bio(c->ssl, b, b);
	SSL_set_app_data(c->ssl, c);
	SSL_set_accept_state(c->ssl);
	c->flags = TC_HANDSHAKE;
	c->hs_deadline = sluice_now_ns() + t->hs_timeout_ns;
	list_add_tail(&t->hsq, &c->hs);
	t->in_progress++;
	DP_STAT_ADD(t->st, in_progress, 1);
	addr_inc(t, peer->ipv4);
	return c;
}

static size_t in_data(void *arg, void *ctx, const uint8_t *data, size_t len)
{
	struct tls *t = arg;
	struct tp_conn *c = ctx;

	if (c->flags & TC_PLAIN)
		return t->up->on_data(t->app, c->ctx, data, len);
	if (c->flags & (TC_DEAD | TC_CLOSING | TC_EOF))
		return len;
	if (c->flags & TC_RX_FULL)
		return 0;
	if ((c->flags & TC_HANDSHAKE) && t->spent_ns >= t->budget_ns) {
		/* Offered again next turn (tls_poll asks the inner rx_resume). */
		if (list_empty(&c->defer)) {
			list_add_tail(&t->deferq, &c->defer);
			DP_STAT_ADD(t->st, deferred, 1);
		}
		return 0;
	}
	c->in = data;
	c->in_len = len;
	if (c->flags & TC_HANDSHAKE)
		hs_step(c);
	rx_pump(c, false);
	size_t used = (c->flags & (TC_DEAD | TC_CLOSING)) ? len : len - c->in_len;
	c->in = NULL;
	c->in_len = 0;
	return used;
}

static void in_eof(void *arg, void *ctx)
{
	struct tls *t = arg;
	struct tp_conn *c = ctx;

	if (c->flags & TC_PLAIN) {
		t->up->on_eof(t->app, c->ctx);
		return;
	}
	if (c->flags & TC_HANDSHAKE) {
		hs_fail(c); /* the client left mid-handshake */
		return;
	}
	/* A FIN without close_notify: the app learns the stream ended all the same. */
	if ((c->flags & TC_OPEN) && !(c->flags & (TC_EOF | TC_DEAD | TC_CLOSING))) {
		c->flags |= TC_EOF;
		t->up->on_eof(t->app, c->ctx);
	}
}

static void in_drained(void *arg, void *ctx)
{
	struct tls *t = arg;
	struct tp_conn *c = ctx;

	if (c->flags & TC_PLAIN) {
		t->up->on_drained(t->app, c->ctx);
		return;
	}
	if ((c->flags & (TC_OPEN | TC_HAD_TX)) == (TC_OPEN | TC_HAD_TX) && c->ptx_len == 0 &&
	    !(c->flags & (TC_DEAD | TC_CLOSING))) {
		c->flags &= ~(uint32_t)TC_HAD_TX;
		t->up->on_drained(t->app, c->ctx);
	}
}

static void in_close(void *arg, void *ctx)
{
	struct tls *t = arg;
	struct tp_conn *c = ctx;

	hs_unaccount(t, c);
	ptx_release(t, c);
	list_del(&c->resume);
	list_del(&c->defer);
	if (t->txs_owner == c)
		t->txs_owner = NULL;
	if (c->flags & TC_OPEN)
		t->up->on_close(t->app, c->ctx);
	SSL_free(c->ssl);
	free(c->rx);
	free(c);
}

const struct tp_upcalls tls_inner_upcalls = {
	.on_open = in_open,
	.on_data = in_data,
	.on_eof = in_eof,
	.on_drained = in_drained,
	.on_close = in_close,
};

/* ---- records ------------------------------------------------------------------ */

/* p[0..n) (n <= one record) becomes one record in the inner send queue. */
static bool write_record(struct tp_conn *c, const uint8_t *p, uint32_t n)
{
	struct tls *t = c->t;
	ERR_clear_error();
	if (SSL_write(c->ssl, p, (int)n) != (int)n) {
		DP_STAT_ADD(t->st, write_errors, 1);
		conn_end(c, true);
		return false;
	}
	DP_STAT_ADD(t->st, records_out, 1);
	DP_STAT_ADD(t->st, plain_bytes_out, n);
	return true;
}

static bool seal(struct tp_conn *c)
{
	if (c->ptx_len == 0)
		return true;
	uint32_t n = c->ptx_len;
	c->ptx_len = 0;
	return write_record(c, c->ptx, n);
}

/* Room for n more pending bytes (pending + n <= one record). */
static bool ptx_room(struct tls *t, struct tp_conn *c, uint32_t n)
{
	uint32_t need = c->ptx_len + n;
	if (need <= c->ptx_cap)
		return true;
	uint32_t cap = need <= PTX_SMALL ? PTX_SMALL : TLS_RECORD_MAX;
	uint8_t *p = ptx_get(t, cap);
	if (!p)
		return false;
	if (c->ptx_len)
		memcpy(p, c->ptx, c->ptx_len);
	ptx_put(t, c->ptx, c->ptx_cap);
	c->ptx = p;
	c->ptx_cap = cap;
	return true;
}

/* Appends committed plaintext: records are cut between commits whenever
 * possible, so a frame stays whole in one record. */
static void ptx_append(struct tp_conn *c, const uint8_t *p, size_t n)
{
	struct tls *t = c->t;
	if (c->ptx_len + n > TLS_RECORD_MAX && !seal(c))
		return;
	while (n > TLS_RECORD_MAX) {
		if (!write_record(c, p, TLS_RECORD_MAX))
			return;
		p += TLS_RECORD_MAX;
		n -= TLS_RECORD_MAX;
	}
	if (!ptx_room(t, c, (uint32_t)n)) {
		conn_end(c, true);
		return;
	}
	memcpy(c->ptx + c->ptx_len, p, n);
	c->ptx_len += (uint32_t)n;
	if (!(c->flags & TC_QUEUED)) {
		c->flags |= TC_QUEUED;
		list_add_tail(&t->flushq, &c->flush);
	}
}

/* ---- tp_ops --------------------------------------------------------------------- */

static uint8_t *tls_tx_reserve(struct tp_conn *c, size_t min, size_t *avail)
{
	struct tls *t = c->t;
	if (c->flags & TC_PLAIN)
		return in_ops(t)->tx_reserve(c->inner, min, avail);
	if (unlikely(!(c->flags & TC_OPEN) || (c->flags & (TC_DEAD | TC_CLOSING))))
		return NULL;
	if (min > t->txs_cap) {
		uint8_t *p = realloc(t->txs, min);
		if (!p)
			return NULL;
		t->txs = p;
		t->txs_cap = min;
	}
	t->txs_owner = c;
	*avail = t->txs_cap;
	return t->txs;
}

static void tls_tx_commit(struct tp_conn *c, size_t n)
{
	struct tls *t = c->t;
	if (c->flags & TC_PLAIN) {
		in_ops(t)->tx_commit(c->inner, n);
		return;
	}
	if (unlikely(!(c->flags & TC_OPEN) || (c->flags & (TC_DEAD | TC_CLOSING))) || n == 0)
		return;
	if (unlikely(t->txs_owner != c || n > t->txs_cap)) {
		/* Bytes we never handed out (or handed to another conn). */
		DP_STAT_ADD(t->st, app_errors, 1);
		conn_end(c, true);
		return;
	}
	t->txs_owner = NULL;
	c->flags |= TC_HAD_TX;
	ptx_append(c, t->txs, n);
}

static void tls_close(struct tp_conn *c, bool abort)
{
	struct tls *t = c->t;
	if (c->flags & TC_PLAIN) {
		in_ops(t)->close(c->inner, abort);
		return;
	}
	if (c->flags & (TC_DEAD | TC_CLOSING))
		return;
	if (abort) {
		conn_end(c, true);
		return;
	}
	/* Queued plaintext goes out, then close_notify, then the inner close
	 * sends all of it and FIN. */
	if (!seal(c))
		return;
	ERR_clear_error();
	(void)SSL_shutdown(c->ssl);
	ptx_release(t, c);
	c->flags |= TC_CLOSING;
	c->rx_len = 0;
	list_del(&c->resume);
	in_ops(t)->close(c->inner, false);
}

static void tls_info(struct tp_conn *c, struct tp_conn_info *out)
{
	in_ops(c->t)->info(c->inner, out);
	out->tx_queued += c->ptx_len;
}

/* The inner transport's per-token view (no getsockopt on the kernel's)
 * and the plaintext not yet sealed. */
static void tls_tx_state(struct tp_conn *c, struct tp_conn_info *out)
{
	tp_tx_state(c->t->inner, c->inner, out);
	out->tx_queued += c->ptx_len;
}

static uint64_t tls_tx_queued(struct tp_conn *c)
{
	return tp_tx_queued(c->t->inner, c->inner) + c->ptx_len;
}

static void tls_rx_resume(struct tp_conn *c)
{
	struct tls *t = c->t;
	if (c->flags & TC_PLAIN) {
		in_ops(t)->rx_resume(c->inner);
		return;
	}
	if (!(c->flags & TC_OPEN) || (c->flags & (TC_DEAD | TC_CLOSING)))
		return;
	if (list_empty(&c->resume))
		list_add_tail(&t->resumeq, &c->resume);
}

/* Resets handshakes past their deadline (the queue is in deadline order). */
/* Ends the handshakes past their deadline; returns how many, which the
 * poll counts as work (a poll-mode worker flushes only after a turn that
 * did something, and these resets must go out). */
static int run_timeouts(struct tls *t, uint64_t now)
{
	int n = 0;
	while (!list_empty(&t->hsq)) {
		struct tp_conn *c = list_entry(t->hsq.next, struct tp_conn, hs);
		if (c->hs_deadline > now)
			break;
		DP_STAT_ADD(t->st, timeouts, 1);
		DP_STAT_ADD(t->st, failures, 1);
		conn_end(c, true);
		n++;
	}
	return n;
}

/* Offers stashes the app asked for again; a drained stash lets the inner
 * transport offer what it held back. */
static int run_resumes(struct tls *t)
{
	int n = 0;
	struct list_node local;
	list_init(&local);
	list_splice_tail(&local, &t->resumeq);
	while (!list_empty(&local)) {
		struct tp_conn *c = list_entry(local.next, struct tp_conn, resume);
		list_del(&c->resume);
		c->flags &= ~(uint32_t)TC_RX_FULL;
		rx_pump(c, true);
		n++;
		if (!(c->flags & (TC_DEAD | TC_CLOSING | TC_RX_FULL)))
			in_ops(t)->rx_resume(c->inner);
	}
	return n;
}

static int tls_poll(struct tp *tp, int timeout_ms, int extra_fd)
{
	struct tls *t = tls_of(tp);
	uint64_t now = sluice_now_ns();

	tls_shared_snapshot(t->s, t->id, &t->view);
	t->spent_ns = 0;
	int n = run_timeouts(t, now);
	n += run_resumes(t);
	while (!list_empty(&t->deferq)) {
		struct tp_conn *c = list_entry(t->deferq.next, struct tp_conn, defer);
		list_del(&c->defer);
		in_ops(t)->rx_resume(c->inner);
		n++;
	}
	if (n > 0)
		timeout_ms = 0;
	if (timeout_ms != 0 && !list_empty(&t->hsq)) {
		struct tp_conn *c = list_entry(t->hsq.next, struct tp_conn, hs);
		uint64_t ms = c->hs_deadline > now ? (c->hs_deadline - now + 999999) / 1000000 : 0;
		if (timeout_ms < 0 || ms < (uint64_t)timeout_ms)
			timeout_ms = (int)ms;
	}
	int r = in_ops(t)->poll(t->inner, timeout_ms, extra_fd);
	return r < 0 ? r : r + n;
}

static void tls_flush(struct tp *tp)
{
	struct tls *t = tls_of(tp);
	while (!list_empty(&t->flushq)) {
		struct tp_conn *c = list_entry(t->flushq.next, struct tp_conn, flush);
		list_del(&c->flush);
		c->flags &= ~(uint32_t)TC_QUEUED;
		if (seal(c))
			ptx_release(t, c);
	}
	in_ops(t)->flush(t->inner);
}

static void free_pool(struct ptx_free *f)
{
	while (f) {
		struct ptx_free *next = f->next;
		free(f);
		f = next;
	}
}

static void tls_free(struct tls *t)
{
	free_pool(t->free_small);
	free_pool(t->free_rec);
	free(t->addr_key);
	free(t->addr_n);
	free(t->rxs);
	free(t->txs);
	free(t);
}

static void tls_destroy(struct tp *tp)
{
	if (!tp)
		return;
	struct tls *t = tls_of(tp);
	/* Every connection gets its on_close (ours, then the app's) here. */
	in_ops(t)->destroy(t->inner);
	tls_free(t);
}

static const struct tp_ops tls_ops = {
	.name = "tls",
	.poll = tls_poll,
	.tx_reserve = tls_tx_reserve,
	.tx_commit = tls_tx_commit,
	.flush = tls_flush,
	.close = tls_close,
	.info = tls_info,
	.tx_state = tls_tx_state,
	.tx_queued = tls_tx_queued,
	.rx_resume = tls_rx_resume,
	.destroy = tls_destroy,
};

struct tls *tls_create(struct tls_shared *s, uint32_t worker, const struct tp_upcalls *up,
		       void *app, char *err, size_t errlen)
{
	const struct sluice_conf *conf = s->conf;
	if (worker >= TLS_MAX_WORKERS) {
		snprintf(err, errlen, "tls: worker %u: at most %u workers", worker, TLS_MAX_WORKERS);
		return NULL;
	}
	struct tls *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	t->s = s;
	t->id = worker;
	t->up = up;
	t->app = app;
	t->st = &s->w[worker].st;
	t->plain_port = conf->redirect_port;
	t->budget_ns = (uint64_t)conf->tls_handshake_budget_us * 1000u;
	t->hs_timeout_ns = (uint64_t)conf->tls_handshake_timeout_s * NS_PER_S;
	t->hs_max = conf->tls_handshakes_max;
	t->hs_per_addr = conf->tls_handshakes_per_addr;
	uint32_t slots = 2;
	while (slots < 2 * t->hs_max)
		slots <<= 1;
	t->addr_mask = slots - 1;
	t->addr_key = calloc(slots, sizeof(*t->addr_key));
	t->addr_n = calloc(slots, sizeof(*t->addr_n));
	t->rxs = malloc(RX_SCRATCH);
	t->txs = malloc(TX_SCRATCH);
	t->txs_cap = TX_SCRATCH;
	if (!t->addr_key || !t->addr_n || !t->rxs || !t->txs) {
		snprintf(err, errlen, "tls: out of memory");
		tls_free(t);
		return NULL;
	}
	list_init(&t->hsq);
	list_init(&t->flushq);
	list_init(&t->resumeq);
	list_init(&t->deferq);
	tls_shared_snapshot(s, worker, &t->view);
	if (worker >= s->nworkers)
		s->nworkers = worker + 1;
	return t;
}

struct tp *tls_start(struct tls *t, struct tp *inner)
{
	t->inner = inner;
	t->ops = tls_ops;
	if (tls_shared_counters_setup(t->s, inner->ops) == 0) {
		t->ops.counter_defs = t->s->defs;
		t->ops.ncounters = t->s->ndefs;
		t->ops.counters = tls_shared_counters;
	} else {
		LOG_WARN("tls: the transport's counters and ours do not fit /metrics; ours are left out");
	}
	t->base.ops = &t->ops;
	return &t->base;
}

void tls_discard(struct tls *t)
{
	if (t)
		tls_free(t);
}

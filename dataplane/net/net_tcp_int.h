/*
 * Internals shared by the files of the TCP module; nothing but those files
 * (and the stack's tests) includes this. docs/tcp.md ("Source layout")
 * says which file holds what.
 *
 * Naming: a function of net_tcp_X.c is tcp_X_* (tcp_conn_, tcp_syn_,
 * tcp_in_, tcp_out_, tcp_timer_, tcp_sack_, tcp_loss_); a congestion-control
 * algorithm ALG lives in net_tcp_ALG.c as tcp_ALG_* and exports one
 * `const struct tcp_cc_ops tcp_ALG_ops`. The module's entry points for
 * net_stack.c keep net_tcp_* (declared in net_int.h) and the tp_ops in
 * net_tcp.c are nt_*. Helpers every file uses are tcp_* inlines below.
 *
 * Ownership: TCBs, send chunks and receive buffers belong to the stack's
 * pools (net_tcp_conn.c). A TCB is handed to the app as its struct
 * tp_conn * from on_open until on_close; on_close always runs from
 * net_tcp_pending() (never inside another upcall), so the app may close
 * or abort from any upcall.
 *
 * Receive buffer layout: rbuf[0, rb_len) holds in-order bytes the app has
 * not consumed; an out-of-order byte with sequence x sits at
 * rb_len + (x - rcv_nxt), so it is already in place when the hole fills.
 * In-order data that arrives with an empty buffer goes to the app straight
 * from the frame; only what the app leaves is copied.
 */
#ifndef SLUICE_NET_TCP_INT_H
#define SLUICE_NET_TCP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "net/net_int.h"
#include "net/net_tcp.h"

#define TCP_NS_PER_MS 1000000ull
#define TCP_TS_OPT_LEN 12u /* NOP NOP and the timestamps option */
/* Its first four bytes, NOP NOP kind length, read as one big-endian word. */
#define TCP_TS_OPT_WORD \
	((uint32_t)NET_TCPOPT_NOP << 24 | (uint32_t)NET_TCPOPT_NOP << 16 | \
	 (uint32_t)NET_TCPOPT_TS << 8 | NET_TCPOLEN_TS)

/* A parsed segment. */
struct tcp_seg {
	uint32_t seq, ack, wnd;
	uint32_t dlen;
	const uint8_t *data;
	uint8_t flags;
	bool has_ts, sack_perm, has_mss;
	int8_t ws; /* -1: no option */
	uint16_t mss;
	uint32_t tsval, tsecr;
	uint8_t nsack;
	struct net_range sack[4];
};

/*
 * Congestion control: what varies with the algorithm - how cwnd grows and
 * how far cwnd and ssthresh fall on a loss - sits behind these ops, one
 * table per stack (s->cc, chosen in net_tcp_init). Loss detection and
 * recovery (net_tcp_loss.c over the SACK scoreboard of net_tcp_sack.c;
 * RFC 6582 without SACK) are the same for every algorithm and call them.
 * Each op runs at most once per ACK or timer expiry. An algorithm that
 * needs per-connection state adds it to struct net_conn.
 */
struct tcp_cc_ops {
	/* The handshake completed: initial cwnd and ssthresh. */
	void (*init)(struct net_conn *c);
	/* An ACK outside recovery acknowledged `acked` new bytes. */
	void (*on_ack)(struct net_conn *c, uint32_t acked);
	/* Fast retransmit begins recovery: set ssthresh, and cwnd = ssthresh
	 * (recovery without SACK inflates it by the three duplicates). */
	void (*enter_recovery)(struct net_conn *c);
	/* A full ACK ended recovery: the cwnd to go on with (without SACK,
	 * recovery caps it at what is in flight plus one segment). */
	void (*exit_recovery)(struct net_conn *c);
	/* The retransmission timer expired: ssthresh and cwnd. */
	void (*on_rto)(struct net_conn *c);
};

extern const struct tcp_cc_ops tcp_newreno_ops;

static inline uint32_t tcp_min(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static inline uint32_t tcp_max(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

/* Data bytes in a full-sized segment of c. */
static inline uint32_t tcp_seg_max(const struct net_conn *c)
{
	return c->mss - ((c->flags & NC_TS) ? TCP_TS_OPT_LEN : 0);
}

/* Our timestamp clock for c: the stack's plus the connection's offset. */
static inline uint32_t tcp_ts_now(const struct net_conn *c)
{
	return c->s->now_ms + c->ts_off;
}

/* Queued bytes not yet sent. */
static inline uint32_t tcp_unsent(const struct net_conn *c)
{
	uint32_t end = c->snd_una + c->sq_len;
	return net_seq_lt(c->snd_nxt, end) ? end - c->snd_nxt : 0;
}

/* The app still takes this connection's bytes. */
static inline bool tcp_app_reads(const struct net_conn *c)
{
	return (c->flags & (NC_APP | NC_APP_CLOSE | NC_DEAD)) == NC_APP;
}

/* A 64-bit mix of a connection's 4-tuple seeded from the secret: fast, not
 * cryptographic. Serves the stack's lookup table and the group's. */
static inline uint64_t tcp_tuple_mix(uint64_t seed, uint32_t raddr, uint16_t rport, uint16_t lport)
{
	uint64_t x = ((uint64_t)raddr << 32 | (uint64_t)rport << 16 | lport) ^ seed;
	x ^= x >> 31;
	x *= 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return x;
}

/* The ranges overlap or touch. */
static inline bool tcp_range_touch(const struct net_range *a, const struct net_range *b)
{
	return net_seq_le(a->start, b->end) && net_seq_ge(a->end, b->start);
}

/*
 * Takes out of v[0, *n) every range that overlaps or touches *r and widens
 * *r to cover them; the caller then stores *r. Serves both the peer's SACK
 * blocks and our out-of-order ranges.
 */
static inline void tcp_range_absorb(struct net_range *v, uint8_t *n, struct net_range *r)
{
	uint32_t j = 0;
	while (j < *n) {
		struct net_range *x = &v[j];
		if (tcp_range_touch(x, r)) {
			if (net_seq_lt(x->start, r->start))
				r->start = x->start;
			if (net_seq_gt(x->end, r->end))
				r->end = x->end;
			v[j] = v[--*n];
			continue;
		}
		j++;
	}
}

/* ---- net_tcp_conn.c: lookup table, pools, connection lifetime ---------- */

struct net_conn *tcp_conn_lookup(struct net_stack *s, uint32_t raddr, uint16_t rport,
				 uint16_t lport);
/* A zeroed TCB from the pool, hashed under the 4-tuple, or NULL (counted). */
struct net_conn *tcp_conn_new(struct net_stack *s, uint32_t raddr, uint16_t rport,
			      uint16_t lport);
/* Attaches a receive buffer unless c has one; false when the pool is empty. */
bool tcp_conn_rbuf_get(struct net_conn *c);
void tcp_conn_rbuf_put(struct net_conn *c);
/* Room for at least min bytes at the tail of the send queue (*avail bytes),
 * taking a chunk from the pool when needed; NULL when it is empty. */
uint8_t *tcp_conn_sq_reserve(struct net_conn *c, uint32_t min, size_t *avail);
/* Drops n acknowledged bytes from the head of the send queue. */
void tcp_conn_sq_consume(struct net_conn *c, uint32_t n);
/* Copies len queued bytes starting off bytes after snd_una. */
void tcp_conn_sq_copy(const struct net_conn *c, uint32_t off, uint8_t *dst, uint32_t len);
/* The app is done with c: on_close from net_tcp_pending(). */
void tcp_conn_detach(struct net_conn *c);
/* Ends the connection now: no more segments in or out. The app (if any)
 * gets on_close from net_tcp_pending, which also frees the TCB. */
void tcp_conn_kill(struct net_conn *c);
/* Returns a dead TCB to the pool (from net_tcp_pending). */
void tcp_conn_release(struct net_conn *c);
/* TIME_WAIT for 2 MSL on the bounded FIFO; the oldest entry beyond
 * time_wait_max is recycled. */
void tcp_conn_time_wait(struct net_conn *c);

/* ---- net_tcp_group.c: the stacks sharing one address -------------------- */

#define NET_GROUP_MAX 64u

bool tcp_group_join(struct net_stack *s, char *err, size_t errlen);
void tcp_group_leave(struct net_stack *s);
/* The index of the stack holding the tuple's TCB, or -1. */
int tcp_group_owner(const struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport);
/* Registers s as the owner of c's tuple (NC_GROUP); false when another
 * stack holds it or won a race for it. */
bool tcp_group_claim(struct net_stack *s, struct net_conn *c);
void tcp_group_release(struct net_stack *s, struct net_conn *c);
/* Hands a segment to the stack `owner`; false when its ring is full or it
 * is gone. */
bool tcp_group_forward(struct net_stack *s, int owner, const struct net_ip *ip,
		       const uint8_t *seg, uint32_t len);

/* ---- net_tcp_syn.c: handshake, ISN, SYN cookies ------------------------ */

/* A SYN, or an ACK that may complete a cookie handshake, for no TCB. */
void tcp_syn_listen(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
		    const struct tcp_seg *sg);
void tcp_syn_synack(struct net_conn *c);
/* The handshake completed: ESTABLISHED and on_open (a refusal resets). */
void tcp_syn_established(struct net_conn *c, const struct tcp_seg *sg);

/* ---- net_tcp_in.c: segment input --------------------------------------- */

/* RFC 9293 3.10.7.4 for SYN_RCVD and the synchronized states. */
void tcp_in_segment(struct net_conn *c, const struct tcp_seg *sg);
/* Offers the stash to the app and keeps what it leaves. */
void tcp_in_offer(struct net_conn *c);
/* A segment another stack of the group received for a TCB of this one
 * (already validated there); handled as if it arrived here, never handed
 * on again. */
void tcp_in_forwarded(struct net_stack *s, const struct net_ip *ip, const uint8_t *p,
		      uint32_t len);

/* ---- net_tcp_out.c: segment output ------------------------------------- */

/* Builds and sends one segment with no TCB (RSTs and cookie SYN-ACKs). */
void tcp_out_raw(struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport,
		 uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win, const uint8_t *opts,
		 uint32_t olen);
/* Sends one segment of c: seq, flags and dlen bytes from the send queue at
 * seq. Carries the ACK, timestamps and, room permitting, SACK blocks. */
void tcp_out_seg(struct net_conn *c, uint32_t seq, uint8_t flags, uint32_t dlen);
void tcp_out_ack(struct net_conn *c);
/* RFC 5961 section 7: at most challenge_acks_per_s per connection. */
void tcp_out_challenge(struct net_conn *c);
/* A RST answering a segment that has no connection (RFC 9293 3.10.7.1). */
void tcp_out_rst_reply(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
		       const struct tcp_seg *sg);
/* Resends the segment at seq (data and/or FIN) without moving snd_nxt;
 * returns the sequence space it covered. */
uint32_t tcp_out_resend(struct net_conn *c, uint32_t seq);
/* Sends what cwnd, the peer's window and snd_buf allow; then FIN when the
 * app closed and everything before it went out; then any owed ACK. */
void tcp_out_send(struct net_conn *c);
/* Resets the connection from our side: RST out, app told, TCB freed. */
void tcp_out_abort(struct net_conn *c);

/* ---- net_tcp_timer.c: the protocol timer, delayed ACKs, RTT ------------ */

/* The retransmission timeout with its back-off, capped. */
static inline uint32_t tcp_timer_rto_cur(const struct net_conn *c)
{
	uint64_t r = (uint64_t)c->rto_ms << c->backoff;
	return r > NET_TCP_RTO_MAX_MS ? NET_TCP_RTO_MAX_MS : (uint32_t)r;
}

static inline bool tcp_timer_rtx_armed(const struct net_conn *c)
{
	return c->timer.armed && (c->tmode == NT_RTX || c->tmode == NT_TLP);
}

void tcp_timer_set(struct net_conn *c, uint8_t mode, uint32_t delay_ms);
void tcp_timer_stop(struct net_conn *c);
/* Arms the retransmission timer (or first a tail loss probe). */
void tcp_timer_rtx_arm(struct net_conn *c);
/* Puts the protocol timer in the mode the connection's state calls for.
 * restart: re-arm a running retransmission timer (new data was ACKed). */
void tcp_timer_update(struct net_conn *c, bool restart);
/* Arms the delayed-ACK timer unless it runs. */
void tcp_timer_delack(struct net_conn *c);
/* One RTT sample of r ms (RFC 6298). */
void tcp_timer_rtt_sample(struct net_conn *c, uint32_t r);
void tcp_timer_cb(void *arg, struct tw_timer *t);
void tcp_timer_ack_cb(void *arg, struct tw_timer *t);

/* ---- net_tcp_sack.c: the peer's SACK blocks (scoreboard) --------------- */

/* The first sequence at or after seq the peer has not SACKed. */
uint32_t tcp_sack_skip(const struct net_conn *c, uint32_t seq);
/* The lowest SACKed start above seq, or `limit`. */
uint32_t tcp_sack_next(const struct net_conn *c, uint32_t seq, uint32_t limit);
/* Records the blocks of sg that lie in [snd_una, snd_max); returns how
 * many bytes the scoreboard gained (0: nothing new). */
uint32_t tcp_sack_update(struct net_conn *c, const struct tcp_seg *sg);
/* Forgets what lies below snd_una. */
void tcp_sack_trim(struct net_conn *c);
/* The highest SACKed sequence, or snd_una. */
uint32_t tcp_sack_high(const struct net_conn *c);
/* SACKed bytes above seq. */
uint32_t tcp_sack_above(const struct net_conn *c, uint32_t seq);
/* RFC 6675 pipe; *lost: every un-SACKed byte below it is lost. */
uint32_t tcp_sack_pipe(const struct net_conn *c, uint32_t seg, uint32_t *lost);

/* ---- net_tcp_loss.c: fast retransmit and loss recovery ----------------- */

/* An ACK advanced snd_una by `acked` bytes. */
void tcp_loss_on_ack(struct net_conn *c, uint32_t acked);
/* A duplicate ACK (RFC 5681; with SACK, one that SACKs new data). */
void tcp_loss_dupack(struct net_conn *c);
/* With SACK, after the ACK's scoreboard update (`newly` bytes SACKed):
 * starts recovery or resends a lost retransmission when the scoreboard
 * says so. */
void tcp_loss_sack_check(struct net_conn *c, uint32_t newly);
/* SACK recovery: resends un-SACKed ranges below `limit` above rtx_hi while
 * cwnd - *pipe allows a segment (RFC 6675 NextSeg rules 1 and 3). */
bool tcp_loss_resend(struct net_conn *c, uint32_t seg, uint32_t limit, uint32_t *pipe);
/* The retransmission timer expired: leave recovery, go back to snd_una. */
void tcp_loss_on_rto(struct net_conn *c);

#endif

/*
 * Internals shared by the modules of the native stack (net_stack.c,
 * net_arp.c, the TCP files net_tcp*.c): the stack object, the TCB and the
 * pools. Nothing outside dataplane/net/ (and its tests) includes this; the
 * TCP files share more in net_tcp_int.h.
 */
#ifndef SLUICE_NET_INT_H
#define SLUICE_NET_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/net_stack.h"
#include "net/net_wire.h"
#include "sluice/common.h"
#include "sluice/list.h"
#include "worker/timer_wheel.h"

/* Send-queue chunk; a connection's queue is a singly linked chain. */
#define NET_CHUNK_DATA 2048u
struct net_chunk {
	struct net_chunk *next;
	uint32_t len; /* bytes filled */
	uint8_t data[NET_CHUNK_DATA];
};

enum net_tcp_state {
	NET_TCPS_CLOSED = 0,
	NET_TCPS_SYN_RCVD,
	NET_TCPS_ESTABLISHED,
	NET_TCPS_CLOSE_WAIT,
	NET_TCPS_LAST_ACK,
	NET_TCPS_FIN_WAIT_1,
	NET_TCPS_FIN_WAIT_2,
	NET_TCPS_CLOSING,
	NET_TCPS_TIME_WAIT,
};

/* Connection flags. */
enum {
	NC_TS = 1u << 0,        /* timestamps negotiated */
	NC_SACK = 1u << 1,      /* SACK permitted both ways */
	NC_WS = 1u << 2,        /* window scaling negotiated */
	NC_APP = 1u << 3,       /* on_open returned a context; on_close not yet run */
	NC_APP_CLOSE = 1u << 4, /* the app closed gracefully: FIN after the queue */
	NC_FIN_SENT = 1u << 5,  /* our FIN has a sequence number (snd_fin) */
	NC_FIN_RCVD = 1u << 6,  /* the peer's FIN was accepted */
	NC_RX_FULL = 1u << 7,   /* stash at its bound: no offers until rx_resume */
	NC_HAD_TX = 1u << 8,    /* bytes queued since the last on_drained */
	NC_DEAD = 1u << 9,      /* on the dead list: on_close and free pending */
	NC_DELACK = 1u << 10,   /* an ACK is owed (delayed) */
	NC_ACK_NOW = 1u << 11,  /* an ACK is owed now */
	NC_RECOVERY = 1u << 12, /* fast recovery (RFC 6582) until snd_una >= recover */
	NC_RTT = 1u << 13,      /* timing rtt_seq (Karn) */
	NC_FLUSHQ = 1u << 14,   /* on the flush list */
	NC_RESUMEQ = 1u << 15,  /* on the resume list */
	NC_TWQ = 1u << 16,      /* on the TIME_WAIT FIFO */
	NC_BLOCKED = 1u << 17,  /* last output stopped at a full window */
	NC_RESET = 1u << 18,    /* the connection was reset (by either side) */
	NC_TLP = 1u << 19,      /* a tail loss probe is out, no ACK has advanced since */
	NC_GROUP = 1u << 20,    /* registered as its tuple's owner in the stack's group */
};

/* What the connection's single protocol timer is doing. */
enum net_tmode {
	NT_NONE = 0,
	NT_SYNACK,    /* SYN-ACK retransmission */
	NT_RTX,       /* retransmission timeout */
	NT_TLP,       /* tail loss probe (RFC 8985 7), before the RTO */
	NT_PERSIST,   /* zero-window probe */
	NT_KEEPALIVE,
	NT_FINWAIT2,
	NT_TIMEWAIT,
};

#define NET_OOO_MAX 8   /* out-of-order ranges held (SACK blocks sent: the 3 or 4 latest) */
#define NET_SACKED_MAX 8 /* peer's SACK blocks remembered (the scoreboard) */

struct net_range {
	uint32_t start, end; /* sequence numbers, [start, end) */
};

/*
 * TCB. Owned by the stack's pool; the app sees it as a struct tp_conn * until
 * on_close. Buffers are attached only while there is something in them.
 */
struct net_conn {
	uint32_t hnext;          /* lookup chain / free list: index + 1, 0 = end */
	uint32_t raddr, laddr;   /* network order */
	uint16_t rport, lport;   /* network order */
	uint8_t state;
	uint8_t tmode;
	uint8_t snd_ws, rcv_ws;  /* window shifts */
	uint32_t flags;

	/* send */
	uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, max_snd_wnd, snd_wl1, snd_wl2;
	uint32_t cwnd, ssthresh, recover, rtx_hi;
	uint32_t rtx_mark;        /* snd_max when snd_una was last resent in recovery */
	uint32_t sq_len;          /* data bytes from snd_una to the queue tail */
	uint32_t sq_off;          /* offset of snd_una in sq_head */
	uint32_t t_due_ms;        /* the protocol timer's due tick; its wheel entry may be earlier */
	struct net_chunk *sq_head, *sq_tail;
	/* The checksum of queued bytes [sum_seq, sum_seq + sum_len) not yet
	 * sent, from the app's hints (sum_len 0: none; folded to 16 bits, and a
	 * run never longer than a segment can be, so the TCB grows by 8): the
	 * segment of exactly those bytes sums only its header. */
	uint32_t sum_seq;
	uint16_t sum_len, sum;
	uint16_t mss;             /* effective send MSS (options excluded) */
	uint8_t dupacks;
	uint8_t n_sacked;
	struct net_range sacked[NET_SACKED_MAX];

	/* receive */
	uint32_t irs, rcv_nxt, rcv_adv, last_ack_sent;
	uint32_t ts_off;          /* our TSval minus the stack's ms clock (RFC 7323 7.1) */
	uint8_t *rbuf;            /* [0, rb_len) unconsumed in-order bytes; OOO after */
	uint32_t rb_len;
	uint8_t n_ooo;
	uint8_t ooo_last;         /* index of the range that most recently grew */
	uint8_t rx_segs;          /* full segments since the last ACK */
	uint8_t backoff;          /* RTO / persist doublings */
	struct net_range ooo[NET_OOO_MAX];

	/* RTT (RFC 6298), milliseconds scaled by 8 (srtt) and 4 (rttvar) */
	uint32_t srtt8, rttvar4, rto_ms;
	uint32_t rtt_seq, rtt_start_ms;
	uint32_t ts_recent, ts_recent_ms;
	uint32_t last_rx_ms, chal_ms;
	uint16_t chal_cnt;
	uint8_t ka_probes;
	uint8_t retries;

	struct tw_timer timer;    /* protocol timer (tmode) */
	struct tw_timer ack_timer;/* delayed ACK */
	struct list_node q;       /* TIME_WAIT FIFO */
	struct list_node dq;      /* dead list: on_close and/or free pending */
	struct list_node fq;      /* flush list */
	struct list_node rq;      /* resume list */
	void *ctx;                /* the app's */
	struct net_stack *s;
};

#define NET_ARP_SIZE 64
#define NET_ARP_PENDING 32

struct net_arp_entry {
	uint32_t ip;          /* network order, 0 = free */
	uint8_t mac[NET_ETH_ALEN];
	uint8_t tries;
	uint8_t resolved;
	uint64_t expire_ns;   /* resolved: entry lifetime; unresolved: next request */
};

struct net_arp_pending {
	void *pkt;
	uint8_t *frame;
	uint32_t len, flags, nh;
};

struct tcp_cc_ops;
struct tcp_group;

struct net_stack {
	struct tp tp;
	struct net_stack_conf conf;
	const struct tcp_cc_ops *cc; /* congestion control (net_tcp_int.h) */
	struct tcp_group *group;     /* shared_port: the stacks on this address, else NULL */
	uint32_t group_id;           /* this stack's index in it */
	struct net_io io;
	void *io_arg;
	struct tw_wheel *wheel;
	const struct tp_upcalls *up;
	void *app;
	uint64_t now_ns;
	uint32_t now_ms;
	uint32_t netmask;     /* network order */
	uint16_t mss_local;   /* MTU - 40 */
	uint16_t ip_id;
	uint64_t hash_seed;
	/* TCP output: the Ethernet and IPv4 headers of every TCP frame but
	 * the destination MAC and address, length, ID and checksum; the
	 * partial sum of those IPv4 words, and the pseudo-header's source
	 * and protocol part (net_ip_send_tcp). */
	uint8_t tcp_tmpl[NET_ETH_HLEN + NET_IP_HLEN];
	uint32_t tcp_tmpl_sum, tcp_pseudo_sum;

	struct net_conn *conns;
	uint32_t *buckets;    /* index + 1, 0 = empty */
	uint32_t bucket_mask;
	uint32_t free_conn;   /* index + 1 */
	uint32_t n_synrcvd, n_tw;

	struct net_chunk *chunks, *free_chunks;
	/* Chunks never handed out yet: [chunks_fresh, tx_chunks). The pool is
	 * sized for every connection at once; taking untouched chunks last
	 * keeps its memory to what the busiest moment used. */
	uint32_t chunks_fresh;
	uint8_t *rbufs;
	uint8_t *free_rbuf;   /* free buffers chain through their first bytes */

	struct list_node dead, tw_fifo, flushq, resumeq;

	struct net_arp_entry arp[NET_ARP_SIZE];
	struct net_arp_pending pend[NET_ARP_PENDING];
	uint32_t n_pend;
	struct tw_timer arp_timer;
	uint32_t icmp_err_ms;   /* start of the current ICMP error second */
	uint32_t icmp_err_cnt;  /* errors sent in it */

	struct net_stats st;
	struct net_stats *pub; /* this stack's slot for net_stats_total, or NULL */
	uint32_t pub_ms;       /* clock of the last publication */
};

static inline void net_set_now(struct net_stack *s, uint64_t now_ns)
{
	if (now_ns > s->now_ns)
		s->now_ns = now_ns;
	s->now_ms = (uint32_t)(s->now_ns / 1000000u);
}

/* ---- net_stack.c: frame output ------------------------------------------ */

/* A frame buffer for an IPv4 packet with l4len bytes after the IP header;
 * returns the start of the L4 area or NULL (counted). */
uint8_t *net_ip_alloc(struct net_stack *s, uint32_t l4len, void **pkt);
/* Completes the Ethernet and IPv4 headers of a non-TCP frame from
 * net_ip_alloc and sends or queues it for ARP. */
void net_ip_send(struct net_stack *s, void *pkt, uint8_t *l4, uint32_t l4len, uint32_t dst,
		 uint8_t proto);
/* The same for a TCP segment, from the stack's header template, with the
 * TCP checksum (or, offloaded, its pseudo-header part). The checksum sums
 * l4[0, hlen) and takes psum, the sum of l4[hlen, l4len), as given: hlen is
 * even, or l4len with psum 0 when the payload's sum is not known. */
void net_ip_send_tcp(struct net_stack *s, void *pkt, uint8_t *l4, uint32_t l4len, uint32_t dst,
		     uint32_t hlen, uint32_t psum);

/* ---- net_arp.c ---------------------------------------------------------- */

void net_arp_init(struct net_stack *s);
void net_arp_input(struct net_stack *s, const uint8_t *frame, uint32_t len);
/* The home slot of ip in the cache (open addressing from there). */
static inline uint32_t net_arp_slot(uint32_t ip)
{
	uint32_t h = ip * 0x9e3779b1u;
	return h >> 26; /* NET_ARP_SIZE == 64 */
}

/* net_arp_output for every case but the common one below. */
void net_arp_output_slow(struct net_stack *s, void *pkt, uint8_t *frame, uint32_t len,
			 uint32_t flags, uint32_t nh);

/* Sends the frame now when the next hop is known, else queues it and asks.
 * Inline for the frame of every segment: a fresh entry in its home slot
 * is all there is to check; probing on, aged entries, refreshes and
 * queueing are net_arp_output_slow. */
static inline void net_arp_output(struct net_stack *s, void *pkt, uint8_t *frame, uint32_t len,
				  uint32_t flags, uint32_t nh)
{
	const struct net_arp_entry *e = &s->arp[net_arp_slot(nh)];
	if (likely(nh != 0 && e->ip == nh && e->resolved && s->now_ns < e->expire_ns)) {
		memcpy(frame, e->mac, NET_ETH_ALEN);
		s->st.tx_frames++;
		s->io.tx_send(s->io_arg, pkt, len, flags);
		return;
	}
	net_arp_output_slow(s, pkt, frame, len, flags, nh);
}
void net_arp_announce(struct net_stack *s);
void net_arp_flush(struct net_stack *s);

/* ---- TCP (net_tcp*.c) --------------------------------------------------- */

/* Sets up TCP on a new stack (joins the shared-port group); false with a
 * message in err. */
bool net_tcp_init(struct net_stack *s, char *err, size_t errlen);
void net_tcp_input(struct net_stack *s, const struct net_ip *ip, const uint8_t *seg,
		   uint32_t len, uint32_t rx_flags);
/* Runs deferred work: rx_resume offers and on_close/free of dead TCBs. */
uint32_t net_tcp_pending(struct net_stack *s);
/* Processes the segments other stacks of the group handed over (once per
 * loop turn, from net_stack_tick); returns how many. */
uint32_t net_tcp_forwarded(struct net_stack *s);
void net_tcp_destroy(struct net_stack *s);
/* An ICMP "fragmentation needed" for one of our segments (PMTU). */
void net_tcp_pmtu(struct net_stack *s, const struct net_ip *inner, const uint8_t *l4,
		  uint32_t l4len, uint32_t mtu);
extern const struct tp_ops net_tcp_ops;

#endif

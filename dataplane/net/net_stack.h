/*
 * sluice's native TCP/IPv4 stack: one instance per worker, shared-nothing,
 * independent of DPDK. The glue (transport/tp_dpdk.c) hands received frames
 * to net_input(), gives the stack a way to get and send frame buffers
 * (struct net_io), calls net_stack_tick() once per loop turn before running
 * the worker's timer wheel, and hands net_stack_tp() to the app layer.
 *
 * No allocation, lock or syscall happens after net_stack_create(): every
 * connection, buffer chunk, ARP entry and pending frame comes from pools
 * sized by struct net_stack_conf. Everything runs on the owning thread.
 */
#ifndef SLUICE_NET_STACK_H
#define SLUICE_NET_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct tw_wheel;
struct net_stack;

#define NET_SECRET_LEN 32
#define NET_MAX_LISTEN 4

struct net_stack_conf {
	uint8_t mac[6];
	uint32_t ipv4;       /* network byte order */
	uint8_t prefix;      /* 0..32 */
	uint32_t gateway;    /* network byte order, 0 = none (off-link peers unreachable) */
	uint32_t mtu;        /* IP MTU, 576..9000 */
	uint16_t listen_ports[NET_MAX_LISTEN]; /* host order; 0 ends the list */
	uint32_t max_conns;      /* TCBs, including half-open and TIME_WAIT */
	uint32_t syn_backlog;    /* half-open TCBs before SYN cookies */
	uint32_t time_wait_max;  /* TIME_WAIT TCBs; the oldest is recycled beyond */
	uint32_t snd_buf;        /* bytes in flight per connection (cap on cwnd) */
	uint32_t rcv_buf;        /* receive window / buffer per connection, <= 1 GiB */
	uint32_t tx_chunks;      /* send-queue chunks in the pool (NET_CHUNK_DATA bytes each) */
	uint32_t rx_bufs;        /* receive buffers (rcv_buf bytes each) in the pool */
	uint32_t keepalive_s;    /* idle seconds before keepalive probes, 0 = off */
	uint32_t keepalive_intvl_s; /* between probes (0: 15) */
	uint32_t keepalive_cnt;     /* unanswered probes before reset (0: 5) */
	uint32_t msl_ms;         /* TIME_WAIT lasts 2*MSL (0: 15000, so 30 s) */
	uint32_t fin_wait2_ms;   /* FIN_WAIT_2 after the app closed (0: 60000) */
	uint32_t challenge_acks_per_s; /* RFC 5961 limit per connection (0: 10) */
	uint32_t arp_timeout_ms; /* ARP cache entry lifetime (0: 60000) */
	bool csum_offload_tx;    /* the NIC fills IPv4 and TCP checksums of TCP segments */
	bool syn_cookies;        /* fall back to SYN cookies when the backlog is full */
	/* Other stacks (workers) receive frames for this address, and a frame
	 * may reach the wrong one (af_packet fanout rolls over when a queue is
	 * full): a segment for no connection is dropped, not reset, since its
	 * owner may hold it; and every SYN is answered with a cookie, so the
	 * handshake completes on whichever stack the ACK reaches. The stacks
	 * must then share `secret`. */
	bool shared_port;
	uint8_t secret[NET_SECRET_LEN]; /* ISN/cookie/hash key (randombytes_buf at startup) */
};

/* Fills defaults for everything but addresses, ports and the secret. */
void net_stack_conf_defaults(struct net_stack_conf *c);

/* tx_send offload flags. With NET_TX_CSUM the IPv4 checksum field is 0 and
 * the TCP checksum field holds the pseudo-header sum (the DPDK convention). */
/* The stack sets NET_TX_CSUM on TCP segments only; a frame sent without it
 * carries complete IPv4 and L4 checksums and must go out untouched. */
#define NET_TX_CSUM 1u
/* net_input rx flags, from the NIC's checksum verification. */
#define NET_RX_IP_CSUM_OK 1u
#define NET_RX_L4_CSUM_OK 2u

struct net_io {
	/* A buffer of at least len bytes to fill with one frame, or NULL when
	 * the pool is empty (the stack counts the drop). *pkt is the glue's
	 * handle (an mbuf) passed back to tx_send or tx_free. */
	uint8_t *(*tx_alloc)(void *io_arg, uint32_t len, void **pkt);
	/* Queues the frame (len bytes) for the next burst; ownership passes. */
	void (*tx_send)(void *io_arg, void *pkt, uint32_t len, uint32_t offload_flags);
	/* Returns an allocated, never sent buffer (ARP resolution gave up). */
	void (*tx_free)(void *io_arg, void *pkt);
};

/* Per-stack counters; single writer (the owning worker), read by others. */
struct net_stats {
	uint64_t rx_frames, tx_frames, tx_nobuf;
	uint64_t rx_short, rx_not_ours, rx_bad_ethertype;
	uint64_t arp_rx, arp_replies, arp_requests, arp_pending_drops, arp_timeouts;
	uint64_t ip_bad_hdr, ip_bad_csum, ip_bad_len, ip_frags, ip_bad_proto, ip_not_ours;
	uint64_t icmp_echo, icmp_bad, icmp_pmtu, icmp_unreach_tx, icmp_rate_limited;
	uint64_t tcp_rx, tcp_tx, tcp_bad_csum, tcp_bad_hdr, tcp_bad_opts;
	uint64_t tcp_rst_tx, tcp_rst_rx, tcp_no_port;
	uint64_t tcp_syn_rx, tcp_accepted, tcp_refused, tcp_conn_pool_empty;
	uint64_t tcp_cookies_sent, tcp_cookies_ok, tcp_cookies_bad;
	uint64_t tcp_challenge_acks, tcp_challenge_limited, tcp_paws_drops;
	uint64_t tcp_out_of_window, tcp_ooo_segs, tcp_ooo_drops, tcp_dup_acks;
	uint64_t tcp_retransmits, tcp_rto, tcp_fast_retransmits, tcp_recoveries, tcp_zwp;
	uint64_t tcp_keepalive, tcp_tlp;
	uint64_t tcp_timeouts, tcp_tw_recycled, tcp_closed;
	uint64_t tcp_rx_nobuf, tcp_tx_nobuf;
	uint64_t tcp_stray_drops; /* shared_port: no connection here, dropped without RST */
	uint64_t tcp_forwarded;   /* shared_port: handed to the stack that holds the connection */
	uint64_t tcp_bytes_in, tcp_bytes_out;
	uint64_t tcp_fast_acks;   /* pure ACKs taken by header prediction (docs/tcp.md) */
	uint64_t conns_open; /* gauge: TCBs in use */
};

/*
 * Creates a stack. `io` and `io_arg` send frames; `wheel` holds every TCP
 * and ARP timer (the caller runs it) and gives the starting time (its
 * current tick); `up`/`app` are the transport upcalls. The conf is copied;
 * the secret copy is wiped on destroy. Sends a gratuitous ARP. Returns NULL
 * with a message in err.
 */
struct net_stack *net_stack_create(const struct net_stack_conf *conf, const struct net_io *io,
				   void *io_arg, struct tw_wheel *wheel,
				   const struct tp_upcalls *up, void *app, char *err,
				   size_t errlen);
void net_stack_destroy(struct net_stack *s);

/* Processes one received frame (the stack never keeps the pointer). */
void net_input(struct net_stack *s, const uint8_t *frame, uint32_t len, uint32_t rx_flags,
	       uint64_t now_ns);

/* Advances the stack's clock and runs the work other stacks of the group
 * handed over and the deferred work; call once per loop turn before
 * tw_run(). Returns how many items it handled (0: nothing happened). */
uint32_t net_stack_tick(struct net_stack *s, uint64_t now_ns);

/* The stack's transport interface (valid until net_stack_destroy). */
struct tp *net_stack_tp(struct net_stack *s);

const struct net_stats *net_stack_stats(const struct net_stack *s);

/* Sums the counters every live stack of the process published (each does
 * so at most once per millisecond of its clock), so any thread may read
 * them, e.g. for /metrics. Returns the number of stacks counted. */
uint32_t net_stats_total(struct net_stats *out);

/* Memory of one connection: the TCB plus its share of the lookup table. */
size_t net_stack_conn_bytes(void);

#endif

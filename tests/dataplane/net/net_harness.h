/*
 * Test harness for the native stack: a capture net_io, a virtual clock that
 * drives a private timer wheel, a frame builder for the client side, a
 * parser for what the stack sends, and a recording test app.
 */
#ifndef SLUICE_NET_HARNESS_H
#define SLUICE_NET_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net_stack.h"
#include "net/net_wire.h"
#include "worker/timer_wheel.h"

#define H_FRAMES 1024
#define H_FRAME_MAX 9216
#define H_MS 1000000ull
#define H_T0 (1000ull * 1000 * H_MS) /* 1000 s after the epoch of the clock */
#define H_PORT 8080
#define H_CPORT 40000

extern const uint8_t h_mac[6], h_cmac[6];
extern const uint32_t h_ip, h_cip, h_gw; /* network order */

struct h_frame {
	uint8_t buf[H_FRAME_MAX];
	uint32_t len;
	uint32_t flags;
	bool used;
};

/* One captured TCP segment, parsed. */
struct h_seg {
	uint32_t dst;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint32_t win;
	uint32_t dlen;
	uint8_t data[H_FRAME_MAX];
	bool has_mss, has_ts, sack_perm;
	int ws;
	uint16_t mss;
	uint32_t tsval, tsecr;
	int nsack;
	uint32_t sack[4][2];
};

struct h_app {
	int opens, closes, eofs, drains;
	bool refuse;
	size_t consume_max;   /* per on_data call; SIZE_MAX = everything */
	uint8_t *rx;          /* bytes consumed, in order */
	size_t rx_len, rx_cap;
	struct tp_conn *conn;
	bool close_on_eof;
};

struct h {
	struct h_frame frames[H_FRAMES];
	uint32_t outq[H_FRAMES];
	uint32_t out_head, out_tail;
	uint32_t allocs_failing; /* tx_alloc returns NULL this many times */
	uint64_t now;
	struct tw_wheel wheel;
	struct net_stack *s;
	struct h_app app;
	struct net_stack_conf conf;
	uint32_t ts; /* client's timestamp clock */
};

/* Fills a conf with the harness addresses and small pools. */
void h_conf(struct net_stack_conf *c);
/* Creates the stack (conf NULL: h_conf defaults) and primes the ARP cache
 * with the client's MAC unless no_arp. Drains the gratuitous ARP. */
void h_init(struct h *h, const struct net_stack_conf *conf, bool no_arp);
void h_fini(struct h *h);
/* cmocka fixtures: *state is a struct h with the default conf. */
int h_setup(void **state);
int h_teardown(void **state);
/* Re-creates the stack of *state with conf c. */
struct h *h_reinit(void **state, const struct net_stack_conf *c);
/* Advances the virtual clock and runs timers. */
void h_advance(struct h *h, uint64_t ms);

/* Raw frame in (copied, the stack never keeps it). */
void h_input(struct h *h, const uint8_t *frame, uint32_t len);
/* Builds a TCP segment from the client (h_cip:cport) to us; opts may be NULL. */
uint32_t h_build(uint8_t *f, uint16_t cport, uint8_t flags, uint32_t seq, uint32_t ack,
		 uint16_t win, const uint8_t *opts, uint32_t olen, const void *data, uint32_t dlen);
void h_tcp(struct h *h, uint16_t cport, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win,
	   const uint8_t *opts, uint32_t olen, const void *data, uint32_t dlen);

/* Frames sent by the stack. */
uint32_t h_pending(const struct h *h);
/* Takes the next frame; returns its length (0 when none). */
uint32_t h_pop_raw(struct h *h, uint8_t *out);
/* Takes the next frame and parses it as TCP; false when none (or not TCP). */
bool h_pop(struct h *h, struct h_seg *sg);
void h_drain(struct h *h);
/* If f is an ARP frame, answers it as the client or gateway would (when it
 * asks for them) and returns true. */
bool h_answer_arp(struct h *h, const uint8_t *f, uint32_t len);

/* Options helpers. */
uint32_t h_opt_syn(uint8_t *o, uint16_t mss, int ws, bool sack, bool ts, uint32_t tsval);
uint32_t h_opt_ts(uint8_t *o, uint32_t tsval, uint32_t tsecr);

/*
 * Opens a connection from cport: SYN (with the given options), checks the
 * SYN-ACK, ACKs it. Returns our ISS + 1 in *snd (the stack's next seq) and
 * the client's next seq in *cseq.
 */
void h_handshake(struct h *h, uint16_t cport, uint32_t isn, bool ts, int ws, bool sack,
		 uint32_t *snd, uint32_t *cseq, struct h_seg *synack);

const struct tp_upcalls *h_upcalls(void);

#endif

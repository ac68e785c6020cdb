/*
 * The app layer end to end inside one process, driven through its two
 * interfaces: a test worker host (struct host: fake clock, the real timer
 * wheel, a record sink standing in for the d2c ring, counters) and an
 * in-memory transport (send queues and stashes in memory). The app itself is
 * the real one (app_ops), with the real HTTP parser, WebSocket engine,
 * channel record codec and batcher. Bytes on the wire are compared with
 * docs/api.md by the test_flow_*.c files, one per protocol.
 *
 * Every test runs between flow_setup() and flow_teardown() (cmocka setup and
 * teardown): a fresh host and app with max_conns 16, max_bytes 256 and
 * max_delay_us 2000, control attached, the clock at 1000 s.
 */
#ifndef SLUICE_FLOW_HARNESS_H
#define SLUICE_FLOW_HARNESS_H

#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "app/app.h"
#include "app/app_stats.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "transport/transport.h"
#include "worker/host.h"
#include "worker/timer_wheel.h"

#define MS 1000000ull
#define SEC 1000000000ull
/* The test worker's id and attach epoch. */
#define WID 3u
/* The lines every response carries after X-Sluice-Worker (docs/api.md,
 * "Headers on every response"), and the cache rule of non-static ones. */
#define FLOW_SEC "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; " \
	"img-src 'self'; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; " \
	"form-action 'self'; frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\n" \
	"Referrer-Policy: no-referrer\r\n"
#define FLOW_NOSTORE "Cache-Control: no-store\r\n"

#define FLOW_EPOCH 5u

/* A record the app wrote to control, at recs[off..off+len). */
struct sink_rec {
	uint16_t type;
	uint32_t off, len;
};

/* The test worker: the host the app runs on, and what it recorded. */
struct flow_worker {
	struct host h;           /* h.now, h.attached, h.rec_max are the test's to set */
	struct sluice_conf conf;
	struct host_stats hst;   /* the worker's counters */
	struct app_stats st;     /* the app's counters (h.app_stats) */
	uint32_t cp_epoch;       /* control's epoch as the worker sees it */
	bool ring_full;
	bool limited;            /* the ring has only `room` bytes left */
	uint32_t room;
	struct tw_wheel wheel;
	alignas(8) uint8_t recs[1 << 20];
	uint32_t rec_used;
	struct sink_rec rec[256];
	uint32_t nrec;
};

extern struct flow_worker W;
/* The app under test (what app_ops.create returned). */
extern void *flow_app;

/* A connection of the in-memory transport. */
struct tp_conn {
	void *ctx;
	char out[1 << 18];
	size_t out_len, taken, flushed;
	uint64_t extra_queued; /* pretend bytes stuck in the kernel */
	uint32_t cwnd, snd_wnd, unacked; /* what the stack reports of its windows */
	bool blocked, closed, aborted;
	int resumes;
	uint8_t stash[1 << 16]; /* what the app left unconsumed */
	size_t stash_len;
};

int flow_setup(void **state);
int flow_teardown(void **state);
/* Destroys the app and creates it again, e.g. after a change to W.conf. */
void flow_restart(void);

/* The worker's calls into the app. */
void flow_end_of_turn(bool busy);
void flow_control_changed(bool attached);

/* Malloc calls are counted between start and stop, to prove a path
 * allocates nothing; not under AddressSanitizer, which owns malloc. */
void flow_mallocs_start(void);
unsigned flow_mallocs_stop(void);
/* Runs a scenario that returns the mallocs it counted and asserts there were
 * none; skip()s under AddressSanitizer, where nothing can be counted. */
void flow_assert_no_mallocs(unsigned (*scenario)(void));

/* ---- the client side ---------------------------------------------------- */

/* A new connection from 127.0.0.1:40000 the app accepted. */
struct tp_conn *flow_conn_open(void);
/* A conn from another client address; ctx is NULL when the app refused it
 * (the conn is then the test's to free). */
struct tp_conn *flow_conn_open_from(uint32_t ipv4);
/* The in-memory transport's table (refuse_by_reset is the test's to set). */
extern struct tp_ops flow_tp_ops;
/* Runs on_close as the transport would, after a close, and frees c. */
void flow_conn_gone(struct tp_conn *c);
/* Appends bytes to the conn's stash and offers the whole stash, as the
 * transport does; returns what the app consumed. */
size_t flow_feed_n(struct tp_conn *c, const void *p, size_t n);
size_t flow_feed(struct tp_conn *c, const char *s);
/* New output since the last call, NUL-terminated in a static buffer. */
const char *flow_take(struct tp_conn *c);
/* The transport's end-of-turn flush: everything queued goes out. */
void flow_tx_flush(struct tp_conn *c);
/* Moves the clock on and runs the timers due. */
void flow_advance(uint64_t ns);

/* ---- records to and from control ------------------------------------------ */

/* The last record of that type the app wrote, or NULL. */
const struct sink_rec *flow_last_rec(uint16_t type);
const struct chan_request *flow_req_of(const struct sink_rec *r);
struct chan_conn flow_handle_of(const struct sink_rec *req);
/* The field `tag` after `fixed` bytes of the record, or NULL. */
const struct chan_field *flow_rec_field(const struct sink_rec *r, size_t fixed, uint16_t tag);
void flow_assert_field(const struct sink_rec *r, size_t fixed, uint16_t tag, const char *want);

/* Builds control records in an aligned buffer and hands them to the app. */
extern uint8_t flow_rbuf[1 << 16];
void flow_rec_in(uint16_t type, uint32_t len);

struct fld {
	uint16_t tag;
	const char *s;
};

void flow_response(struct chan_conn h, uint32_t req_id, uint16_t status, uint8_t action,
		   uint8_t flags, const char *sid, const char *rmid, uint32_t rseq,
		   const struct fld *f, size_t nf);
/* The handle for every subscriber of a session on this worker. */
struct chan_conn flow_all_of(void);
void flow_tokens(struct chan_conn h, const char *sid, const char *mid, uint32_t first,
		 const char *const *texts, uint32_t n);
void flow_status_rec(struct chan_conn h, const char *sid, const char *mid, const char *st);
void flow_done_rec(struct chan_conn h, const char *sid, const char *mid, uint32_t st,
		   uint32_t last_seq);
/* Opens an SSE stream on session s_1, resuming after (rmid, rseq). */
struct tp_conn *flow_sse_open(const char *rmid, uint32_t rseq);

/* ---- WebSocket ---------------------------------------------------------------- */

#define UPGRADE_HEAD "GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n" \
		     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" \
		     "Sec-WebSocket-Version: 13\r\n"
#define HEAD101 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" \
		"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" \
		"X-Sluice-Worker: 3\r\n" FLOW_SEC
#define CONNECTED "{\"type\":\"connected\",\"worker\":3}"

/* A masked client text frame; returns its length. */
size_t flow_ws_frame(uint8_t *out, const char *text);
/* The payload of the next server text frame in *s (short frames only). */
const char *flow_ws_text(const char **s);
/* Checks that the last REQUEST is a WS_OPEN for /ws/chat and returns it. */
const struct sink_rec *flow_last_ws_open(void);
/* A /ws/chat upgrade with `extra` header lines: nothing is answered before
 * control has decided; returns the WS_OPEN request. */
const struct sink_rec *flow_ws_upgrade(struct tp_conn *c, const char *extra);
/* Control's answer to a WS_OPEN: accept, with an optional header line. */
void flow_ws_accept(const struct sink_rec *rq, const char *hdr);
/* Control's plain refusal with the error JSON of docs/api.md. */
void flow_refuse(const struct sink_rec *rq, uint16_t status, const char *code);
/* A /ws/chat conn control has let in. */
struct tp_conn *flow_ws_open_conn(void);
/* Subscribes a WebSocket conn to sid through control's WS_SUBSCRIBE. */
void flow_ws_subscribe(struct tp_conn *c, const char *sid);
/* The next server frame in out is a close with code and reason. */
void flow_assert_ws_close(const char *out, uint16_t code, const char *reason);

#endif

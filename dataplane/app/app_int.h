/*
 * Internals shared by the app layer's modules (app.c, app_http.c,
 * app_stream.c, app_ws.c, app_ctl.c): the per-worker struct app and the
 * per-connection struct conn. Nothing outside dataplane/app includes this.
 *
 * Ownership: struct app owns the connection pool (conf.max_conns entries,
 * allocated at app_create), the subscription table, the batch buffer pool
 * and the frame scratch buffer. A struct conn is owned by the app from
 * on_open to on_close; the tp_conn it points to is the transport's, and
 * what the conn points to itself (ws_auth, resp, req_buf, the WebSocket
 * engine's buffers) is the conn's, freed by app_conn_close.
 */
#ifndef SLUICE_APP_INT_H
#define SLUICE_APP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/app.h"
#include "app/app_event.h"
#include "app/app_frame.h"
#include "app/app_stats.h"
#include "app/app_subs.h"
#include "app/app_peers.h"
#include "app/batch.h"
#include "http/http_chunked.h"
#include "sluice/chan_proto.h"
#include "transport/transport.h"
#include "worker/host.h"
#include "worker/timer_wheel.h"
#include "ws/ws_session.h"

#define APP_MAX_BODY (1024u * 1024u)
/* A Content-Length body up to this size is read without asking control:
 * what a conn nobody has authenticated yet may make the worker buffer
 * (besides the transport's stash). Larger and chunked bodies are admitted
 * by control first (CHAN_REQ_HTTP_ADMIT, docs/http.md). */
#define APP_BODY_FREE (16u * 1024u)
/* Frame scratch beyond max_bytes: event framing, ids, error texts. */
#define APP_SCRATCH_EXTRA (64u * 1024u)
/* Escaped token text per frame over TLS: one 16 KiB record less room for the
 * event's framing (SSE lines or a WebSocket header, ids, JSON keys). */
#define APP_TLS_FRAME_TEXT (16384u - 512u)

/* A field of a request record (app_send_request). */
struct app_field {
	uint16_t tag;
	const void *data;
	size_t len;
};

/* Header fields a /ws/chat upgrade is authorised with, kept per socket
 * (AUTHORIZATION, COOKIE, ORIGIN, WS_PROTOCOL); the PEER field that goes
 * with them is formatted from conn.peer each time. */
#define APP_WS_AUTH_FIELDS 4u

/*
 * The auth headers of a /ws/chat upgrade, kept for the conn's whole life so a
 * restarted control can be asked to authorise the conn again. One malloc per
 * WebSocket conn at upgrade time, as small as re-authorisation allows (an
 * idle socket's bytes, docs/performance.md "Memory per connection"): the
 * values lie end to end in data[] (each bounded by the parser's header
 * limit, HTTP_MAX_HEADER_BYTES, so 15 bits of a uint16_t hold its length;
 * 0xffff marks an absent one), an Authorization value "Bearer X" keeps only
 * X with APP_WS_AUTH_BEARER set in its length, and the upgrade's
 * Sec-WebSocket-Accept waits in conn.ws_accept, not here.
 */
#define APP_WS_AUTH_ABSENT 0xffffu
#define APP_WS_AUTH_BEARER 0x8000u
#define APP_WS_AUTH_LEN_MASK 0x7fffu
struct app_ws_auth {
	uint16_t len[APP_WS_AUTH_FIELDS];
	char data[];
};

/* A growable buffer for the rare multi-part response (malloc'd). */
struct app_dbuf {
	uint8_t *p;
	size_t len, cap;
};

enum conn_mode { CONN_HTTP = 0, CONN_SSE = 1, CONN_WS = 2 };

enum conn_http_state {
	HS_HEAD = 0,   /* reading a request head */
	HS_BODY,       /* collecting a body into conn.req_buf */
	HS_WAIT,       /* request (or its admission) sent to control, waiting for the response */
	HS_CLOSING,    /* closing: input is ignored */
};

/* The parts of a multi-part response from control while they arrive
 * (app_resp_collect): taken at the first part flagged CHAN_RESP_MORE and
 * given back with the last, so a conn holds none between responses. */
struct app_resp_parts {
	struct app_dbuf body, hdrs; /* body; header lines */
};

/*
 * One connection. Layout: the first three cache lines hold what the
 * per-token path reads and writes (lookup, stream position, batch,
 * pending and turn accounting); request handling, the timer and the
 * protocol engines follow. Flags are one-bit fields: 25 of them in 4 bytes.
 */
struct conn {
	/* -- per-token: lookup, state, accounting -- */
	struct app *app;
	struct tp_conn *tc; /* NULL while the slot is free */
	uint32_t slot, gen;
	uint8_t mode;       /* enum conn_mode */
	uint8_t hstate;     /* enum conn_http_state */
	uint8_t method;     /* enum chan_method of the request in flight */
	bool subscribed : 1;
	bool msg_running : 1; /* status/tokens of last_mid seen, done not yet */
	bool done_sent : 1;   /* a done for last_mid went out (never send a second) */
	bool closing : 1;
	bool timing : 1;      /* the stream asked for creation stamps (X-Sluice-Timing: 1) */
	bool ws_open : 1;     /* ws session initialised (free it on close; the union holds it) */
	bool ws_echo : 1;     /* /ws/echo: every message is sent back (conformance runs) */
	bool ws_admin : 1;    /* the WebSocket is /ws/admin (else /ws/chat) */
	bool keep_alive : 1;  /* of the request in flight */
	bool http10 : 1;      /* the request in flight is HTTP/1.0 */
	bool head_req : 1;    /* the request in flight is HEAD */
	bool requested : 1;   /* ever sent a request to control: CONN_CLOSED is owed */
	bool eof : 1;         /* the peer half-closed */
	bool ws_upgrading : 1; /* a /ws/chat upgrade waits for control's WS_OPEN answer */
	bool ws_reauth : 1;   /* a WS_OPEN re-check (control restart) is in flight */
	bool admitting : 1;   /* HS_WAIT for control's admission of a body (HTTP_ADMIT) */
	bool admitted : 1;    /* the body of the head in the stash may be read */
	bool chunked : 1;     /* HS_BODY: the body is chunked (chk) */
	bool peer_counted : 1; /* counted in app.peers */
	bool resp_stream : 1; /* a streamed HTTP response (CHAN_RESP_HTTP_STREAM) is being written */
	bool v1_req : 1;      /* the request in flight is under /v1/: a client that leaves abandons it */
	bool resp_ctype : 1;  /* the response parts' headers hold a Content-Type line */
	uint32_t last_seq;    /* last token seq of last_mid delivered */
	uint32_t pend_idx;    /* index in app.pending, APP_NO_SLOT when not held */
	uint64_t pend_acct;   /* this conn's share of the pending_bytes gauge */
	uint64_t turn_no, turn_bytes; /* bytes queued during loop turn turn_no */
	uint64_t bytes_out;   /* queued to this client so far (LIST_CONNS) */
	uint64_t last_write_ns; /* SSE keep-alive reference */
	char last_mid[CHAN_ID_LEN]; /* last message delivered (or the resume point) */
	struct batch batch;
	char sid[CHAN_ID_LEN];
	/* -- the stream's usage terms, request handling, timer -- */
	/* The terms of prov_mid (its STATUS "streaming"): what the usage event
	 * says when this worker ends the message itself. */
	union {
		char prov_mid[CHAN_ID_LEN];
		/* While ws_upgrading (a conn that streams nothing yet): the
		 * upgrade's Sec-WebSocket-Accept, so that it does not lie in
		 * app_ws_auth for the socket's whole life. */
		char ws_accept[29];
	};
	uint32_t prov_prompt;
	uint32_t next_free;   /* free-slot stack link */
	double prov_cost, prov_per_token;
	struct tw_timer timer; /* header, idle, or SSE keep-alive timer */
	struct tp_peer peer;
	struct ws_pmd pmd;    /* permessage-deflate as negotiated at the upgrade */
	uint16_t resp_status; /* of the response parts */
	uint32_t req_id;      /* id of the last request sent */
	uint32_t req_epoch;   /* control epoch that request was stamped with */
	uint32_t ws_reauth_id; /* req_id of that re-check */
	uint64_t open_ns;     /* accepted at (LIST_CONNS age) */
	struct app_ws_auth *ws_auth; /* owned; /ws/chat conns only, NULL otherwise */
	struct app_resp_parts *resp; /* owned; NULL unless a multi-part response arrives */
	/* An HTTP request's parsing and body state shares its bytes with the
	 * WebSocket engine: the request state is valid while the conn is no
	 * WebSocket (!ws_open), the engine while it is one. An upgrade starts
	 * the engine only with the request over (no body buffer held,
	 * parse_last 0), and a closed WebSocket's slot has its request state
	 * set up again by app_on_open. */
	union {
		struct {
			size_t parse_last; /* bytes seen by the last incomplete head parse */
			/* A request body larger than what on_data offered at once: the head and
			 * the (decoded) body are copied here, counted in app.body_bytes, and
			 * freed as soon as the request went to control: only while needed. */
			uint8_t *req_buf;
			size_t req_cap;
			size_t req_len, req_need, req_head_len;
			size_t body_max;         /* admitted body size (control's BODY_MAX) */
			struct http_chunked chk; /* HS_BODY with chunked */
		};
		struct ws_session ws;
	};
};

struct app {
	struct host *h;       /* the worker's; the transport is h->tp */
	struct app_stats *st; /* app_stats_of(h) */
	const struct sluice_conf *conf;
	uint32_t wid;
	struct conn *conns;
	uint32_t max_conns;
	uint32_t free_head; /* free-slot stack */
	/* Slots [0, used_slots) have been handed out at least once; the rest are
	 * calloc's untouched zero pages, so a worker configured for a million
	 * connections holds memory only for those it has had (app_slot_take). */
	uint32_t used_slots;
	uint32_t gen0; /* the generation a slot starts from */
	struct app_subs *subs;
	struct batch_pool pool;
	struct batch_policy pol;
	char *scratch;
	size_t scratch_cap;
	/* Escaped text of the tokens of one fan-out run (app_stream.c): as
	 * large as the scratch, since a bigger escaped token could not be
	 * framed anyway. */
	char *esc;
	size_t esc_cap;
	uint32_t *pending;     /* slots of conns holding tokens (max_conns entries) */
	uint32_t npending;
	/* One max_delay guard for every held batch: armed at the earliest
	 * deadline, so a sleeping worker wakes in time (no timer per conn). */
	struct tw_timer batch_timer;
	uint64_t batch_timer_at;
	struct app_frame_cache frames; /* token frames shared by the subscribers */
	/* The hint of the frame app_ws_send_framed is writing (app_ws_write
	 * takes it): NULL outside that call. */
	struct tp_tx_hint *ws_tx_hint;
	uint64_t turn_no;
	uint64_t start_ns;          /* app_create time (STATS uptime) */
	/* Overload manager: bytes of request bodies buffered (bounded by
	 * conf.body_budget_mb), and connections per client address. */
	uint64_t body_bytes;
	struct app_peers *peers;
	/* permessage-deflate of every WebSocket of the worker (NULL: off). */
	struct ws_deflate *wsd;
	uint64_t stats_next_ns;
	struct tw_timer stats_timer; /* CHAN_REC_STATS once a second */
	/* Control's latest backend counters (CHAN_REC_BACKENDS), for /metrics. */
	uint8_t *bk_rec;
	uint32_t bk_len, bk_cap;
	bool draining; /* app_drain() ran: no new conns, each ends when idle */
};

#define APP_NO_SLOT 0xffffffffu

enum app_req_result {
	APP_REQ_OK = 0,
	APP_REQ_NO_CONTROL, /* control not attached */
	APP_REQ_FULL,       /* d2c ring full (counted in chan_full) */
	APP_REQ_TOO_BIG,    /* larger than a record may be */
};

/* app.c */
struct conn *app_conn_lookup(struct app *a, const struct chan_conn *h);
void app_conn_close(struct conn *c, bool abort);
/* Queues bytes for the client; false when the transport cannot take them
 * (the caller closes). Keeps the write-time and byte counters current. */
/* h: the bytes' transport hint (struct tp_tx_hint), or NULL. */
bool app_conn_send_hinted(struct conn *c, const void *data, size_t len, struct tp_tx_hint *h);
static inline bool app_conn_send(struct conn *c, const void *data, size_t len)
{
	return app_conn_send_hinted(c, data, len, NULL);
}
/* Re-reads the transport's queue and updates the pending_bytes gauge;
 * returns false when the conn was closed as a slow consumer. */
bool app_conn_account(struct conn *c);
/* The client does not read: counted in slow_consumer_closes, held tokens
 * dropped, an SSE stream gets `event: error` slow_consumer, a WebSocket the
 * close 1008 "slow consumer", then the conn closes. */
void app_conn_drop_slow(struct conn *c);
void app_conn_fill_handle(const struct conn *c, struct chan_conn *h);
/* "255.255.255.255:65535" and its NUL. */
#define APP_CONN_PEER_STR_MAX 22
/* Writes the client address as "a.b.c.d:port" (the CHAN_F_PEER field);
 * returns its length. */
size_t app_conn_peer_str(const struct conn *c, char out[APP_CONN_PEER_STR_MAX]);

/* app_http.c */
size_t app_http_on_data(struct conn *c, const uint8_t *data, size_t len);
void app_http_on_response(struct conn *c, const struct chan_response *r, uint32_t len);
void app_http_timer_fired(struct conn *c);
void app_http_control_lost(struct conn *c);
/* The head lines every response carries after its status line:
 * X-Sluice-Worker, the Content-Security-Policy, nosniff, Referrer-Policy,
 * and Cache-Control when `cache` is not NULL (docs/api.md, "Headers on
 * every response"). */
struct app_buf;
void app_http_head_common(const struct conn *c, struct app_buf *b, const char *cache);
/* Writes a complete response with the error JSON of docs/api.md. */
void app_http_send_error(struct conn *c, int status, const char *code, const char *message,
			 bool close_after);

/* app_drain.c: ends c in its protocol (SSE shutdown event with retry:,
 * WebSocket 1001, HTTP closed between requests) once nothing runs on it,
 * or at once when `now`. Called for every conn by app_drain() and again
 * after each done while the app drains. */
void app_drain_conn(struct conn *c, bool now);
void app_drain(void *app, bool now);
uint64_t app_open_conns(const void *app);

/* app_stream.c: stream delivery for SSE and WS conns */
void app_stream_on_record(struct app *a, uint16_t type, const void *payload, uint32_t len);
void app_stream_subscribe(struct conn *c, const struct chan_response *r);
void app_stream_unsubscribe(struct conn *c);
void app_stream_interrupt(struct conn *c);
void app_stream_announce(struct conn *c);
void app_stream_end_of_turn(struct app *a, bool busy);
void app_stream_pending_remove(struct conn *c);
/* The worker's batch guard (arg: the app): flushes every batch whose oldest
 * token reached max_delay. */
void app_stream_batch_timer(void *arg, struct tw_timer *t);
void app_stream_keepalive(struct conn *c);
/* Sends an SSE event or WS message built in the scratch buffer. */
bool app_stream_emit(struct conn *c, const struct app_buf *b);
/* Flushes the conn's held tokens (before another event, or by decision). */
bool app_stream_flush(struct conn *c);

/* app_ws.c */
/* Completes the upgrade with Sec-WebSocket-Accept `accept`; echo selects
 * /ws/echo (no chat protocol). `r` (optional) is control's WS_ACCEPT
 * response, whose CHAN_F_HEADER / CHAN_F_SET_COOKIE fields join the 101. */
void app_ws_start(struct conn *c, const char *accept, const struct chan_response *r, uint32_t rlen,
		  bool echo);
/* Keeps the upgrade's auth headers in c->ws_auth and the accept value of
 * its Sec-WebSocket-Key `key` in c->ws_accept; false when out of memory. */
struct http_request;
struct http_slice;
bool app_ws_auth_keep(struct conn *c, const struct http_request *req, const struct http_slice *key);
void app_ws_auth_free(struct conn *c);
/* Sends CHAN_REQ_WS_OPEN with the kept auth fields. */
enum app_req_result app_ws_auth_send(struct conn *c);
/* Control restarted: asks it to authorise this open /ws/chat conn again. */
void app_ws_reauthorise(struct conn *c);
size_t app_ws_on_data(struct conn *c, const uint8_t *data, size_t len);
void app_ws_on_response(struct conn *c, const struct chan_response *r, uint32_t len);
bool app_ws_send_text(struct conn *c, const void *data, size_t len);
/* Queues a text message framed already (header included: the shared token
 * frames); false when the session cannot take it (it then closes). */
bool app_ws_send_framed(struct conn *c, const void *frame, size_t len, struct tp_tx_hint *h);
/* A BROADCAST from control: a text message pushed to an open WebSocket
 * (/ws/admin), or the conn dropped as slow when it holds more than the
 * record's max_pending bytes unsent. */
void app_ws_on_broadcast(struct app *a, const struct chan_broadcast *b, uint32_t len);
/* Starts a server close; `fail` does not wait for the client's close,
 * otherwise the conn is closed anyway when the client has not answered
 * within APP_WS_CLOSE_WAIT_NS. */
#define APP_WS_CLOSE_WAIT_NS (5ull * 1000000000ull)
void app_ws_close_with(struct conn *c, uint16_t code, const char *reason, bool fail);
/* Collects a response part; returns true when the body is complete, with
 * body and blen set (into the record or into c->resp_body). */
bool app_resp_collect(struct conn *c, const struct chan_response *r, uint32_t len,
		      const uint8_t **body, size_t *blen, bool *bad);
void app_resp_reset(struct conn *c);

/* app_ctl.c: control's KICK and ADMIN records, STATS every second. */
void app_ctl_on_kick(struct app *a, const struct chan_kick *k);
void app_ctl_on_admin(struct app *a, const struct chan_admin *q);
void app_ctl_stats_start(struct app *a);
void app_ctl_stats_stop(struct app *a);

/* A request record: conn handle + kind + fields. `fields` is an array of
 * {tag, data, len} (struct app_field, above); entries with data == NULL are
 * skipped. */
enum app_req_result app_send_request(struct conn *c, uint8_t kind, uint8_t method,
		     const struct app_field *fields, size_t nfields);

#endif

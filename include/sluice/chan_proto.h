/*
 * Records carried by the channel (see chan.h). This header is the wire
 * format between the two processes: fixed-width fields, native byte order
 * (both processes run on one host and the region refuses a peer with another
 * layout through CHAN_VERSION), every struct a multiple of 8 bytes.
 *
 * Variable parts travel as fields: a run of
 *   struct chan_field { uint16_t tag; uint16_t _pad; uint32_t len; } + len bytes,
 * each field starting on an 8-byte boundary. chan_field_next() is the only
 * decoder of that run and checks every length against the record's end, so a
 * corrupt record is rejected, never overread.
 *
 * Bump CHAN_VERSION in chan.h on any change here.
 */
#ifndef SLUICE_CHAN_PROTO_H
#define SLUICE_CHAN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHAN_ID_LEN 32 /* session/message ids: ASCII, NUL-padded */
#define CHAN_SLOT_ALL 0xffffffffu /* conn.slot meaning "every subscriber of the session on this worker" */

enum chan_rec_type {
	CHAN_REC_PAD = 0,
	/* dataplane -> control */
	CHAN_REC_REQUEST = 1,     /* struct chan_request + fields */
	CHAN_REC_SUBSCRIBE = 2,   /* struct chan_sub: re-announce after control restart */
	CHAN_REC_UNSUBSCRIBE = 3, /* struct chan_sub: a subscribed conn left */
	CHAN_REC_CONN_CLOSED = 4, /* struct chan_conn_closed */
	CHAN_REC_STATS = 5,       /* struct chan_stats: each worker, every second */
	CHAN_REC_CONNS = 6,       /* struct chan_conns + infos: answer to ADMIN LIST_CONNS */
	/* control -> dataplane */
	CHAN_REC_RESPONSE = 16, /* struct chan_response + fields */
	CHAN_REC_TOKENS = 17,   /* struct chan_tokens + tokens */
	CHAN_REC_STATUS = 18,   /* struct chan_status */
	CHAN_REC_USAGE = 19,    /* struct chan_usage */
	CHAN_REC_DONE = 20,     /* struct chan_done + fields */
	CHAN_REC_KICK = 21,     /* struct chan_kick: close a conn, or every subscriber of a session */
	CHAN_REC_ADMIN = 22,    /* struct chan_admin: an operator query for a worker */
	CHAN_REC_BROADCAST = 23, /* struct chan_broadcast + fields: a pushed WebSocket text message */
	CHAN_REC_BACKENDS = 24, /* struct chan_backends + entries: backend counters for /metrics */
};

/* A connection handle. `gen` changes whenever a slot is reused, and a
 * dataplane seeds its generations from its epoch, so a record addressed to a
 * connection that has since closed is recognised and dropped. */
struct chan_conn {
	uint16_t worker;
	uint16_t _pad;
	uint32_t slot;
	uint32_t gen;
	uint32_t _pad2;
};

struct chan_field {
	uint16_t tag;
	uint16_t _pad;
	uint32_t len;
	uint8_t data[];
};

enum chan_field_tag {
	CHAN_F_PATH = 1,          /* request target path, without query */
	CHAN_F_QUERY = 2,         /* after '?', without '?' */
	CHAN_F_BODY = 3,          /* request or response body */
	CHAN_F_AUTHORIZATION = 4, /* header values as received */
	CHAN_F_COOKIE = 5,
	CHAN_F_ORIGIN = 6,
	CHAN_F_LAST_EVENT_ID = 7,
	CHAN_F_CONTENT_TYPE = 8,
	CHAN_F_CSRF = 9,          /* X-CSRF-Token */
	CHAN_F_WS_PROTOCOL = 10,  /* Sec-WebSocket-Protocol */
	CHAN_F_SET_COOKIE = 11,   /* response: one Set-Cookie value */
	CHAN_F_HEADER = 12,       /* response: one extra "Name: value" line */
	CHAN_F_ERROR_CODE = 13,   /* done: error code */
	CHAN_F_ERROR_MESSAGE = 14,/* done: error message */
	CHAN_F_PEER = 15,         /* client address as text "ip:port" */
	CHAN_F_BODY_LEN = 16,     /* HTTP_ADMIT: the Content-Length as decimal text; absent: chunked */
	CHAN_F_BODY_MAX = 17,     /* CONTINUE: the largest body admitted, decimal text */
};

enum chan_req_kind {
	CHAN_REQ_HTTP = 1, /* an HTTP request on /api/... or /v1/... */
	CHAN_REQ_WS = 2,   /* a WebSocket text message on /ws/chat (body = the JSON text) */
	CHAN_REQ_WS_OPEN = 3, /* a WebSocket upgrade to authorise before 101 (issue 3) */
	/* The head of an HTTP request whose body the worker has not read yet
	 * (larger than it reads unasked, or chunked): the fields of an HTTP
	 * request without BODY, plus BODY_LEN. Control answers CONTINUE (read
	 * it, then send the whole request as CHAN_REQ_HTTP) or a PLAIN
	 * response the worker sends and closes after (issue 12). */
	CHAN_REQ_HTTP_ADMIT = 4,
};

enum chan_method {
	CHAN_M_OTHER = 0, CHAN_M_GET, CHAN_M_HEAD, CHAN_M_POST, CHAN_M_PUT,
	CHAN_M_PATCH, CHAN_M_DELETE, CHAN_M_OPTIONS,
};

struct chan_request {
	struct chan_conn conn;
	uint32_t req_id; /* per-connection sequence, echoed by the response */
	uint8_t kind;    /* enum chan_req_kind */
	uint8_t method;  /* enum chan_method */
	uint16_t _pad;
	/* Control's epoch as the worker last saw it. A control that restarted
	 * discards unread records on attach, so a request sent in that window
	 * may be lost; control drops requests stamped with another epoch, and
	 * the worker answers 503 to every request it sent under an old epoch
	 * once it sees the new one: each request is served once or refused. */
	uint32_t cp_epoch;
	uint32_t _pad2;
	/* fields follow */
};

enum chan_resp_action {
	CHAN_RESP_PLAIN = 0,         /* HTTP: a complete response with the body; WS: a text message */
	CHAN_RESP_SSE_SUBSCRIBE = 1, /* HTTP: 200 text/event-stream, conn subscribes to session_id */
	CHAN_RESP_WS_SUBSCRIBE = 2,  /* WS: send body as a text message, conn subscribes to session_id */
	CHAN_RESP_WS_CLOSE = 3,      /* WS: close with code `status` and body as reason */
	CHAN_RESP_WS_ACCEPT = 4,     /* WS_OPEN: go ahead with 101 */
	/* HTTP: a streamed response. The first part writes the head (status,
	 * CONTENT_TYPE, HEADER fields) with Transfer-Encoding: chunked (an
	 * HTTP/1.0 client gets a body ended by the close) and its BODY; every
	 * later part's BODY is written when it arrives (one chunk each); the
	 * part without CHAN_RESP_MORE ends the response. */
	CHAN_RESP_HTTP_STREAM = 5,
	CHAN_RESP_CONTINUE = 6,      /* HTTP_ADMIT: read the body (at most BODY_MAX bytes) */
};

#define CHAN_RESP_MORE 0x1 /* flags: the body continues in the next RESPONSE record */

struct chan_response {
	struct chan_conn conn;
	uint32_t req_id;
	uint16_t status; /* HTTP status, or WebSocket close code for WS_CLOSE */
	uint8_t action;  /* enum chan_resp_action */
	uint8_t flags;
	char session_id[CHAN_ID_LEN]; /* for the subscribe actions */
	/* Subscribe actions: tokens of resume_message_id with seq <= resume_seq
	 * are already with the client and must not be sent again. */
	char resume_message_id[CHAN_ID_LEN];
	uint32_t resume_seq;
	uint32_t _pad;
	/* fields follow: BODY, CONTENT_TYPE (default application/json), SET_COOKIE*, HEADER* */
};

struct chan_sub {
	struct chan_conn conn;
	char session_id[CHAN_ID_LEN];
	char message_id[CHAN_ID_LEN]; /* last message the conn saw, or empty */
	uint32_t seq;                 /* last seq of that message the conn saw */
	uint32_t _pad;
};

struct chan_conn_closed {
	struct chan_conn conn;
};

/* Tokens of one message. conn.slot == CHAN_SLOT_ALL: every subscriber of
 * session_id on the receiving worker; otherwise that one conn (resume backlog). */
struct chan_tokens {
	struct chan_conn conn;
	char session_id[CHAN_ID_LEN];
	char message_id[CHAN_ID_LEN];
	uint32_t first_seq; /* 1-based seq of the first token here */
	uint32_t count;
	/* `count` tokens follow, each a struct chan_token + len bytes, the next
	 * starting at the following 8-byte boundary */
};

struct chan_token {
	uint64_t created_ns; /* sluice_now_ns() when the backend produced it */
	uint32_t len;
	uint32_t _pad;
	uint8_t text[];
};

#define CHAN_STATUS_LEN 24
struct chan_status {
	struct chan_conn conn; /* CHAN_SLOT_ALL or one conn, as for tokens */
	char session_id[CHAN_ID_LEN];
	char message_id[CHAN_ID_LEN];
	char status[CHAN_STATUS_LEN]; /* "queued", "waiting_backend", "streaming", ... */
	/* With "streaming": what the usage event says if the worker has to end
	 * the message itself (control went away: done "interrupted"): these
	 * prompt tokens at prompt_cost, plus the tokens it delivered at
	 * cost_per_token each. Zero otherwise. */
	uint32_t prompt_tokens;
	uint32_t _pad;
	double prompt_cost;
	double cost_per_token;
};

struct chan_usage {
	struct chan_conn conn;
	char session_id[CHAN_ID_LEN];
	char message_id[CHAN_ID_LEN];
	uint32_t prompt_tokens;
	uint32_t completion_tokens;
	uint32_t total_tokens;
	uint32_t _pad;
	double cost_usd;
};

enum chan_done_status {
	CHAN_DONE_COMPLETE = 0,
	CHAN_DONE_CANCELLED = 1,
	CHAN_DONE_ERROR = 2,
	CHAN_DONE_INTERRUPTED = 3,
};

struct chan_done {
	struct chan_conn conn;
	char session_id[CHAN_ID_LEN];
	char message_id[CHAN_ID_LEN];
	uint32_t status; /* enum chan_done_status */
	uint32_t last_seq; /* seq of the message's last token */
	/* fields follow: ERROR_CODE, ERROR_MESSAGE when status is ERROR */
};

/* Closes conn (conn.slot = its slot) or, with conn.slot == CHAN_SLOT_ALL, every
 * subscriber of session_id on the worker: a WebSocket gets a close frame with
 * `code` and `reason`; an SSE stream gets `event: error` with
 * {"error":{"code":<reason_code>,"message":<reason>}} and is closed; a plain
 * HTTP conn is closed. Used for revoked or expired logins (1008) and for
 * `sluicectl sessions kill`. */
struct chan_kick {
	struct chan_conn conn;
	char session_id[CHAN_ID_LEN];
	uint16_t code;        /* WebSocket close code */
	uint16_t _pad;
	uint32_t _pad2;
	char reason_code[32]; /* snake_case, NUL-terminated */
	char reason[96];      /* human text, NUL-terminated */
};

#define CHAN_STATS_DELAY_BUCKETS 12

/* A worker's counters, sent every second so control (and sluicectl) can
 * show them without reading the dataplane's memory. */
struct chan_stats {
	uint32_t worker;
	uint32_t _pad;
	uint64_t uptime_ms;
	uint64_t conns_active;
	uint64_t conns_accepted;
	uint64_t sse_active;
	uint64_t ws_active;
	uint64_t http_requests;
	uint64_t tokens_out;
	uint64_t frames_out;
	uint64_t bytes_out;
	uint64_t pending_bytes;
	uint64_t chan_full;
	uint64_t slow_consumer_closes;
	uint64_t loop_turns;
	uint64_t busy_turns;
	/* Batching-added delay (token at the worker -> framed) since the
	 * worker started: bucket i counts delays <= delay_bounds_us[i], the
	 * last one the rest (+Inf). Control derives percentiles from the
	 * difference of two records. */
	uint32_t delay_bounds_us[CHAN_STATS_DELAY_BUCKETS];
	uint64_t delay_hist[CHAN_STATS_DELAY_BUCKETS + 1];
	uint64_t delay_sum_ns;
};

enum chan_admin_op {
	CHAN_ADMIN_LIST_CONNS = 1, /* worker answers with CHAN_REC_CONNS records */
	CHAN_ADMIN_LOG_LEVEL = 2,  /* arg = enum log_level: the dataplane's level from now on */
	CHAN_ADMIN_RELOAD = 3,     /* the dataplane reads its configuration file again */
};

struct chan_admin {
	uint32_t op;     /* enum chan_admin_op */
	uint32_t req_id; /* echoed in the answer */
	uint32_t arg;    /* LOG_LEVEL: the level (0..3); else 0 */
	uint32_t _pad;
};

enum chan_conn_mode { CHAN_CONN_HTTP = 0, CHAN_CONN_SSE = 1, CHAN_CONN_WS = 2 };

struct chan_conn_info {
	struct chan_conn conn;
	uint32_t peer_ipv4;   /* network byte order */
	uint16_t peer_port;
	uint8_t mode;         /* enum chan_conn_mode */
	uint8_t _pad;
	uint64_t age_ms;
	uint64_t bytes_out;
	uint64_t pending_bytes;
	char session_id[CHAN_ID_LEN]; /* subscribed session, or empty */
};

#define CHAN_CONNS_LAST 0x1 /* flags: the worker's last CONNS record for this req_id */

/* One page of a worker's connection list; `count` chan_conn_info follow. */
struct chan_conns {
	uint32_t req_id;
	uint16_t worker;
	uint8_t flags;
	uint8_t _pad;
	uint32_t count;
	uint32_t _pad2;
};

/* The counters of one (backend, model) pair, as control keeps them. */
#define CHAN_TTFT_BUCKETS 10
struct chan_backend_entry {
	char backend[64];
	char model[64];
	uint64_t requests;
	uint64_t errors;
	uint64_t prompt_tokens;
	uint64_t completion_tokens;
	uint64_t ttft_count;
	uint64_t ttft_buckets[CHAN_TTFT_BUCKETS]; /* cumulative, for le = ttft_le[i] */
	double ttft_sum_s;
	uint32_t inflight;
	uint32_t queued;   /* the backend's, on its first entry; 0 on the others */
	uint8_t up;        /* health: 1 up (or unknown), 0 down */
	uint8_t breaker;   /* 0 closed, 1 open, 2 half-open */
	uint8_t _pad[6];
};

/* Control's backend counters, sent to every worker once a second; `count`
 * entries follow, then nothing. ttft_le holds the bucket bounds (seconds). */
struct chan_backends {
	uint32_t count;
	uint32_t _pad;
	double ttft_le[CHAN_TTFT_BUCKETS];
};

/*
 * A WebSocket text message control pushes to one conn without a request
 * behind it (the /ws/admin events and snapshots): conn.slot is the conn's
 * slot, never CHAN_SLOT_ALL. A conn that is no longer an open WebSocket
 * drops it. When the conn already has more than max_pending bytes unsent
 * (batcher plus transport queue), the client is not reading: the message is
 * dropped and the WebSocket closed with 1008 and reason_code
 * "slow_consumer", so one stuck operator tab cannot hold memory without
 * bound. Fields: BODY (the text, valid UTF-8 JSON).
 */
struct chan_broadcast {
	struct chan_conn conn;
	uint32_t max_pending; /* bytes; >= 4096 */
	uint32_t _pad;
	/* fields follow */
};

#define CHAN_BROADCAST_MIN_PENDING 4096u

static inline size_t chan_align8(size_t n)
{
	return (n + 7u) & ~(size_t)7u;
}

/* Bytes a field with `len` data bytes occupies. */
static inline size_t chan_field_size(size_t len)
{
	return chan_align8(sizeof(struct chan_field) + len);
}

/*
 * Field iteration over [p, end). Returns the next field and advances *p, or
 * NULL at the end or on a malformed run (then *bad is set true).
 * Defined in common/chan_proto.c; the channel's fuzz target drives it.
 */
const struct chan_field *chan_field_next(const uint8_t **p, const uint8_t *end, bool *bad);

/* Appends a field at *p (which must have chan_field_size(len) bytes); advances *p. */
void chan_field_put(uint8_t **p, uint16_t tag, const void *data, uint32_t len);

/*
 * Token iteration inside a TOKENS record payload of `len` bytes. Returns
 * false when the record is malformed (counts or lengths that overrun it).
 * Calls fn for each token in order.
 */
bool chan_tokens_walk(const void *payload, uint32_t len,
		      void (*fn)(void *arg, const struct chan_token *t), void *arg);

/* The token after t in a TOKENS record chan_tokens_walk() accepted (t's
 * text, then the gap to the next 8-byte boundary); the first one is right
 * after the struct chan_tokens. */
static inline const struct chan_token *chan_token_after(const struct chan_token *t)
{
	return (const struct chan_token *)(const void *)((const uint8_t *)t +
							 chan_align8(sizeof(*t) + t->len));
}
_Static_assert(sizeof(struct chan_tokens) % 8 == 0, "tokens start 8-byte aligned");

/* Validates a whole record of the given type: fixed part present, fields or
 * tokens well-formed, ids NUL-terminated. Consumers call this before use. */
bool chan_rec_valid(uint16_t type, const void *payload, uint32_t len);

/* Copies an id into a NUL-padded CHAN_ID_LEN array; false when too long. */
bool chan_id_set(char dst[CHAN_ID_LEN], const char *src, size_t len);

#endif

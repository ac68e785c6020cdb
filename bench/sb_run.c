/*
 * The load generator's loop (see sb_run.h).
 *
 * Roles of a connection: a stream (an SSE response, a WebSocket, or an
 * OpenAI streaming request, which is its own session), a prompt connection
 * (keep-alive POSTs that start answers) and, for target nchan, a session's
 * publisher (keep-alive, pipelined POSTs of each token to /pub/ID). Requests
 * are small and sent with one send() on a socket whose buffer is empty; one
 * that does not fit is counted (SB_ERR_WRITE) and its connection closed.
 */
#include "sb_run.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sb_http.h"
#include "sb_json.h"
#include "sb_sse.h"
#include "sb_ws.h"
#include "sluice/common.h"

#define RX_BUF (256u * 1024u)
#define MAX_EVENTS 512
#define STAMPS_MAX 256

enum role { R_STREAM = 0, R_PROMPT, R_PUB };

enum state {
	ST_CONNECTING = 0,
	ST_HEAD,      /* request sent, reading the response head */
	ST_WS_HELLO,  /* sluice WebSocket: waiting for connected, then the subscribe answer */
	ST_STREAM,    /* subscribed: reading events */
	ST_IDLE,      /* prompt/OpenAI connection between requests */
	ST_BODY,      /* reading a prompt answer's body */
	ST_DEAD,
};

struct sconn {
	int fd;
	uint8_t role;
	uint8_t st;
	bool in_msg;       /* tokens of a message seen, its done not yet */
	bool chunked;      /* the body is chunked (OpenAI) */
	bool counted_open; /* counted in nopen */
	uint32_t sess;
	uint32_t last_seq, msg_tokens;
	uint32_t pipelined; /* publisher: requests whose answers are still to come */
	int64_t body_left;  /* prompt/publisher answer bytes still to read; -1 none */
	uint64_t last_ns;
	uint64_t sent_ns;   /* OpenAI: when this request went out */
	struct sb_carry head;
	struct sb_sse sse;
	struct sb_ws ws;
	struct sb_chunked ch;
};

struct sess {
	char id[40];
	bool running;
	uint32_t live;      /* subscribers open */
	uint32_t done_seen; /* of the running answer */
	uint64_t prompt_ns;
	uint32_t msg_no;
	/* target nchan: the bench publishes the answer itself */
	char mid[24];
	uint32_t pub_seq;   /* tokens published of the running answer */
	uint64_t pub_t0;
	uint32_t pub_conn;
};

struct sb_run {
	const struct sb_conf *c;
	struct sb_results *res;
	struct sb_step *step; /* where samples go; NULL outside a step */
	const char *auth;
	int ep;
	struct sconn *conns;
	long nconns;  /* streams + prompt + publisher connections */
	long nstreams;
	long nopen;   /* streams subscribed */
	struct sess *sess;
	long nsess;
	long prompt_first, nprompt; /* prompt connections' indexes */
	long pub_first;             /* publishers (nchan): one per session */
	long rr_sess, rr_prompt;
	uint64_t prompts_wanted;    /* owed this step at its rate */
	double rate;
	uint64_t step_t0;
	struct sockaddr_in dst;
	uint32_t *src;    /* source addresses (host order), round robin */
	uint32_t nsrc;
	uint32_t src_next;
	char *rx;
};

static uint64_t *errors_of(struct sb_run *r)
{
	return r->step ? r->step->errors : r->res->errors;
}

static void count_err(struct sb_run *r, enum sb_err e)
{
	errors_of(r)[e]++;
}

/* ---- source addresses ----------------------------------------------------- */

/* "a.b.c.d[/len],..." -> at most 2^16 addresses of each range (enough ports
 * for billions of connections), network and broadcast addresses skipped. */
static int parse_src(struct sb_run *r, char *err, size_t errlen)
{
	char buf[sizeof(r->c->src)], *tok, *save;
	uint32_t cap = 0;

	snprintf(buf, sizeof(buf), "%s", r->c->src);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *slash = strchr(tok, '/');
		int len = 32;
		struct in_addr a;
		uint32_t base, n, first;

		if (slash) {
			*slash = '\0';
			len = atoi(slash + 1);
		}
		if (inet_pton(AF_INET, tok, &a) != 1 || len < 8 || len > 32) {
			snprintf(err, errlen, "src: '%s' is not an IPv4 address or a /8../32 range", tok);
			return -1;
		}
		base = ntohl(a.s_addr) & (len == 32 ? ~0u : ~((1u << (32 - len)) - 1u));
		n = len == 32 ? 1u : (1u << (32 - len));
		first = 0;
		if (n > 2) {
			first = 1;
			n -= 2;
		}
		if (n > 65536)
			n = 65536;
		if (r->nsrc + n > cap) {
			uint32_t *p;

			cap = r->nsrc + n;
			p = realloc(r->src, cap * sizeof(*p));
			if (!p) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			r->src = p;
		}
		for (uint32_t i = 0; i < n; i++)
			r->src[r->nsrc++] = base + first + i;
	}
	if (r->nsrc == 0) {
		snprintf(err, errlen, "src: no address");
		return -1;
	}
	return 0;
}

/* ---- connections ---------------------------------------------------------- */

static void conn_close(struct sb_run *r, struct sconn *k)
{
	if (k->fd < 0)
		return;
	close(k->fd);
	k->fd = -1;
	if (k->role == R_STREAM && k->counted_open) {
		r->nopen--;
		r->res->open_now = r->nopen;
		k->counted_open = false;
		if (r->sess[k->sess].live)
			r->sess[k->sess].live--;
	}
	k->st = ST_DEAD;
}

static void conn_fail(struct sb_run *r, struct sconn *k, enum sb_err e)
{
	count_err(r, e);
	conn_close(r, k);
}

static int conn_start(struct sb_run *r, struct sconn *k)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int one = 1;
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = k };

	k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (k->fd < 0)
		goto fail;
	setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* The port is picked at connect(), per destination: a source address
	 * then serves 64 K connections to each server port. */
	setsockopt(k->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	sa.sin_addr.s_addr = htonl(r->src[r->src_next++ % r->nsrc]);
	if (bind(k->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	if (connect(k->fd, (struct sockaddr *)&r->dst, sizeof(r->dst)) < 0 && errno != EINPROGRESS)
		goto fail;
	if (epoll_ctl(r->ep, EPOLL_CTL_ADD, k->fd, &ev) < 0)
		goto fail;
	k->st = ST_CONNECTING;
	k->in_msg = false;
	k->last_seq = k->msg_tokens = k->pipelined = 0;
	k->body_left = -1;
	sb_carry_clear(&k->head);
	sb_sse_free(&k->sse);
	sb_sse_init(&k->sse);
	sb_ws_free(&k->ws);
	sb_ws_init(&k->ws, (uint64_t)(k - r->conns) * 0x9e3779b97f4a7c15ull + 1);
	return 0;
fail:
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	k->st = ST_DEAD;
	count_err(r, SB_ERR_CONNECT);
	return -1;
}

static bool conn_write(struct sb_run *r, struct sconn *k, const void *p, size_t n)
{
	ssize_t w = send(k->fd, p, n, MSG_NOSIGNAL);

	if (w == (ssize_t)n)
		return true;
	conn_fail(r, k, w < 0 && errno != EAGAIN ? SB_ERR_CLOSED : SB_ERR_WRITE);
	return false;
}

/* ---- requests --------------------------------------------------------------- */

static bool send_stream_request(struct sb_run *r, struct sconn *k)
{
	const struct sb_conf *c = r->c;
	const struct sess *s = &r->sess[k->sess];
	const char *timing = c->timing ? "X-Sluice-Timing: 1\r\n" : "";
	char buf[2048];
	int n;

	if (c->proto == SB_PROTO_SSE) {
		n = snprintf(buf, sizeof(buf),
			     "GET %s%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s%s\r\n",
			     c->target == SB_TARGET_SLUICE ? "/api/chat/stream/" : "/sub/", s->id,
			     c->host, r->auth, timing);
	} else if (c->proto == SB_PROTO_WS) {
		n = snprintf(buf, sizeof(buf),
			     "GET %s%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s%s\r\n",
			     c->target == SB_TARGET_SLUICE ? "/ws/chat" : "/sub/",
			     c->target == SB_TARGET_SLUICE ? "" : s->id, c->host, r->auth, timing);
	} else {
		char body[512];
		int bl = snprintf(body, sizeof(body),
				  "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\","
				  "\"content\":\"bench %ld prompt %u\"}]}",
				  c->model, (long)(k - r->conns), r->sess[k->sess].msg_no);

		n = snprintf(buf, sizeof(buf),
			     "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
			     "Content-Length: %d\r\n%s\r\n%s",
			     c->host, bl, r->auth, body);
		k->sent_ns = sluice_now_ns();
	}
	k->st = ST_HEAD;
	return conn_write(r, k, buf, (size_t)n);
}

/* Starts an answer in session si: a prompt (sluice, peers) or, for nchan,
 * the bench's own publisher. */
static bool send_prompt(struct sb_run *r, long si)
{
	const struct sb_conf *c = r->c;
	struct sess *s = &r->sess[si];
	char buf[1024], body[256];
	int n, bl;
	struct sconn *k = NULL;

	if (c->target == SB_TARGET_NCHAN) {
		k = &r->conns[r->pub_first + si];
		if (k->fd < 0 || k->st == ST_CONNECTING)
			return false;
		snprintf(s->mid, sizeof(s->mid), "m_%08lx%08x", si, s->msg_no);
		s->pub_seq = 0;
		s->pub_t0 = sluice_now_ns() + (uint64_t)c->ttft_ms * 1000000ull;
	} else if (c->proto == SB_PROTO_OPENAI) {
		k = &r->conns[si];
		if (k->fd < 0 || k->st != ST_IDLE || !send_stream_request(r, k))
			return false;
	} else {
		for (long i = 0; i < r->nprompt; i++) {
			struct sconn *p = &r->conns[r->prompt_first + (r->rr_prompt++ % r->nprompt)];

			if (p->fd >= 0 && p->st == ST_IDLE) {
				k = p;
				break;
			}
		}
		if (!k)
			return false;
		if (c->target == SB_TARGET_SLUICE) {
			bl = snprintf(body, sizeof(body),
				      "{\"session_id\":\"%s\",\"content\":\"bench prompt %u for %s\"}",
				      s->id, s->msg_no, s->id);
			n = snprintf(buf, sizeof(buf),
				     "POST /api/chat/message HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
				     "Content-Length: %d\r\n%s\r\n%s",
				     c->host, bl, r->auth, body);
		} else {
			bl = snprintf(body, sizeof(body), "{\"tokens\":%ld,\"rate\":%ld,\"ttft_ms\":%ld}",
				      c->answer_tokens, c->token_rate, c->ttft_ms);
			n = snprintf(buf, sizeof(buf),
				     "POST /prompt/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
				     "Content-Length: %d\r\n\r\n%s",
				     s->id, c->host, bl, body);
		}
		k->st = ST_HEAD;
		if (!conn_write(r, k, buf, (size_t)n))
			return false;
	}
	s->running = true;
	s->done_seen = 0;
	s->prompt_ns = sluice_now_ns();
	s->msg_no++;
	if (r->step)
		r->step->prompts++;
	return true;
}

/* The next session with no answer running, round robin; -1 when none. */
static long idle_session(struct sb_run *r)
{
	for (long i = 0; i < r->nsess; i++) {
		long si = r->rr_sess++ % r->nsess;

		if (!r->sess[si].running && (r->sess[si].live || r->c->target == SB_TARGET_NCHAN))
			return si;
	}
	return -1;
}

/* nchan: publishes every token of running answers that is due, then done. */
static void publish_due(struct sb_run *r, uint64_t now)
{
	const struct sb_conf *c = r->c;

	for (long si = 0; si < r->nsess; si++) {
		struct sess *s = &r->sess[si];
		struct sconn *k = &r->conns[r->pub_first + si];

		while (s->running && s->pub_seq <= (uint32_t)c->answer_tokens && k->fd >= 0) {
			uint64_t due = s->pub_t0 + (uint64_t)s->pub_seq * 1000000000ull / (uint64_t)c->token_rate;
			char buf[1024], body[512];
			int n, bl;

			if (due > now)
				break;
			if (s->pub_seq < (uint32_t)c->answer_tokens)
				bl = snprintf(body, sizeof(body),
					      "{\"type\":\"token\",\"session_id\":\"%s\",\"message_id\":\"%s\","
					      "\"seq\":%u,\"n\":1,\"text\":\"%s\",\"created_ns\":[%llu]}",
					      s->id, s->mid, s->pub_seq + 1, c->text,
					      (unsigned long long)sluice_now_ns());
			else
				bl = snprintf(body, sizeof(body),
					      "{\"type\":\"done\",\"session_id\":\"%s\",\"message_id\":\"%s\","
					      "\"status\":\"complete\"}", s->id, s->mid);
			n = snprintf(buf, sizeof(buf),
				     "POST /pub/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
				     "Content-Length: %d\r\n\r\n%s", s->id, c->host, bl, body);
			if (!conn_write(r, k, buf, (size_t)n))
				break;
			k->pipelined++;
			s->pub_seq++;
		}
	}
}

/* Counts a stream as open (subscribed); the caller sets its state. */
static void stream_opened(struct sb_run *r, struct sconn *k)
{
	if (!k->counted_open) {
		k->counted_open = true;
		r->nopen++;
		r->res->open_now = r->nopen;
		r->sess[k->sess].live++;
	}
}

/* ---- stream events ---------------------------------------------------------- */

static void on_token(struct sb_run *r, struct sconn *k, const char *d, size_t n, uint64_t now)
{
	uint64_t seq = 0, cnt = 1, stamps[STAMPS_MAX];
	struct sess *s = &r->sess[k->sess];
	struct sb_step *st = r->step;
	int ns;

	if (!sb_json_u64(d, n, "seq", &seq)) {
		count_err(r, SB_ERR_PROTOCOL);
		return;
	}
	sb_json_u64(d, n, "n", &cnt);
	if (seq < cnt) {
		count_err(r, SB_ERR_PROTOCOL);
		return;
	}
	if (seq - cnt == 0) {
		k->in_msg = true;
		k->last_seq = 0;
		k->msg_tokens = 0;
		if (st && s->prompt_ns && now > s->prompt_ns)
			sb_hist_add(&st->ttft, now - s->prompt_ns);
	} else if (st && k->last_ns) {
		sb_hist_add(&st->gap, now - k->last_ns);
	}
	if (seq - cnt != k->last_seq)
		count_err(r, SB_ERR_SEQ);
	k->last_seq = (uint32_t)seq;
	k->msg_tokens += (uint32_t)cnt;
	k->last_ns = now;
	if (!st)
		return;
	st->tokens += cnt;
	st->frames++;
	ns = sb_json_u64_array(d, n, "created_ns", stamps, STAMPS_MAX);
	for (int i = 0; i < ns; i++)
		if (stamps[i] && stamps[i] <= now)
			sb_hist_add(&st->delay, now - stamps[i]);
	if (ns > 0 && seq - cnt == 0 && stamps[0] && stamps[0] <= now)
		sb_hist_add(&st->first, now - stamps[0]);
}

static void on_done(struct sb_run *r, struct sconn *k, bool complete)
{
	struct sess *s = &r->sess[k->sess];

	if (complete && k->in_msg && k->msg_tokens != (uint32_t)r->c->answer_tokens)
		count_err(r, SB_ERR_MISSING);
	k->in_msg = false;
	k->last_seq = 0;
	k->last_ns = 0;
	if (r->step)
		r->step->dones++;
	if (++s->done_seen >= s->live) {
		s->running = false;
		s->done_seen = 0;
	}
}

/* One event's JSON; `type` is the SSE event name, or NULL to take the
 * message's "type" member (WebSocket, and the peers' unnamed SSE events). */
static void on_event(struct sb_run *r, struct sconn *k, const char *type, size_t tl, const char *d,
		     size_t n)
{
	uint64_t now = sluice_now_ns();

	if (!type && !sb_json_str(d, n, "type", &type, &tl)) {
		count_err(r, SB_ERR_PROTOCOL);
		return;
	}
#define IS(lit) (tl == sizeof(lit) - 1 && memcmp(type, lit, tl) == 0)
	if (IS("token")) {
		on_token(r, k, d, n, now);
	} else if (IS("done")) {
		const char *v;
		size_t vl;

		on_done(r, k, sb_json_str(d, n, "status", &v, &vl) && vl == 8 &&
				      memcmp(v, "complete", 8) == 0);
	} else if (IS("error")) {
		count_err(r, SB_ERR_EVENT);
	} else if (IS("connected") && k->st == ST_WS_HELLO) {
		char msg[128], fr[160];
		int ml = snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"session_id\":\"%s\"}",
				  r->sess[k->sess].id);

		conn_write(r, k, fr, sb_ws_build(&k->ws, (uint8_t *)fr, 1, msg, (size_t)ml));
	} else if (IS("response") && k->st == ST_WS_HELLO) {
		k->st = ST_STREAM;
		stream_opened(r, k);
	}
#undef IS
}

/* The SSE reader's callbacks need the run: they get a small pair. */
struct feed_ctx {
	struct sb_run *r;
	struct sconn *k;
};

static void openai_data(struct feed_ctx *fc, const char *d, size_t n)
{
	struct sb_run *r = fc->r;
	struct sconn *k = fc->k;
	uint64_t now = sluice_now_ns();
	const char *v;
	size_t vl;
	struct sb_step *st = r->step;

	if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
		if (k->in_msg && k->msg_tokens != (uint32_t)r->c->answer_tokens)
			count_err(r, SB_ERR_MISSING);
		k->in_msg = false;
		if (st)
			st->dones++;
		r->sess[k->sess].running = false;
		return;
	}
	if (sb_json_str(d, n, "error", &v, &vl) || memmem(d, n, "\"error\":{", 9)) {
		count_err(r, SB_ERR_EVENT);
		return;
	}
	if (!sb_json_str(d, n, "content", &v, &vl) || vl == 0)
		return;
	if (!k->in_msg) {
		k->in_msg = true;
		k->msg_tokens = 0;
		if (st)
			sb_hist_add(&st->ttft, now - k->sent_ns);
	} else if (st) {
		sb_hist_add(&st->gap, now - k->last_ns);
	}
	k->last_ns = now;
	k->msg_tokens++;
	if (st) {
		st->tokens++;
		st->frames++;
	}
}

static void on_sse_data(void *arg, const char *event, const char *data, size_t len)
{
	struct feed_ctx *fc = arg;

	if (fc->r->c->proto == SB_PROTO_OPENAI) {
		openai_data(fc, data, len);
		return;
	}
	if (event[0] && strcmp(event, "message") != 0)
		on_event(fc->r, fc->k, event, strlen(event), data, len);
	else
		on_event(fc->r, fc->k, NULL, 0, data, len);
}

static const struct sb_sse_ops sse_ops = { .on_data = on_sse_data };

static void on_ws_frame(void *arg, uint8_t op, const uint8_t *p, size_t n)
{
	struct feed_ctx *fc = arg;

	if (op == 1)
		on_event(fc->r, fc->k, NULL, 0, (const char *)p, n);
	else if (op == 8)
		conn_fail(fc->r, fc->k, SB_ERR_CLOSED);
}

static bool chunk_payload(void *arg, const char *d, size_t n)
{
	struct feed_ctx *fc = arg;

	return sb_sse_feed(&fc->k->sse, d, n, &sse_ops, fc);
}

/* ---- reading ---------------------------------------------------------------- */

/* Body bytes of a stream connection. Returns false when it was closed. */
static bool stream_bytes(struct sb_run *r, struct sconn *k, const char *p, size_t n)
{
	struct feed_ctx fc = { r, k };
	bool ok;

	if (r->c->proto == SB_PROTO_WS) {
		ok = sb_ws_feed(&k->ws, (const uint8_t *)p, n, on_ws_frame, &fc);
	} else if (k->chunked) {
		long used = sb_chunked_feed(&k->ch, p, n, chunk_payload, &fc);

		ok = used >= 0;
		if (ok && k->ch.state == SB_CH_DONE && k->fd >= 0) {
			k->chunked = false;
			/* OpenAI: the answer is complete and the next prompt reuses
			 * the conn; an event stream that ends is a close. */
			if (r->c->proto == SB_PROTO_OPENAI)
				k->st = ST_IDLE;
			else
				conn_fail(r, k, SB_ERR_CLOSED);
		}
	} else {
		ok = sb_sse_feed(&k->sse, p, n, &sse_ops, &fc);
	}
	if (!ok && k->fd >= 0)
		conn_fail(r, k, SB_ERR_PROTOCOL);
	return k->fd >= 0;
}

/* A complete response head of connection k at p (hl bytes). */
static void got_head(struct sb_run *r, struct sconn *k, const struct sb_http_head *h)
{
	bool ws = r->c->proto == SB_PROTO_WS;

	if (k->role != R_STREAM) {
		if (h->status < 200 || h->status > 299)
			count_err(r, h->status == 409 ? SB_ERR_NO_IDLE : SB_ERR_PROMPT);
		k->chunked = h->chunked;
		memset(&k->ch, 0, sizeof(k->ch));
		k->body_left = h->chunked ? -1 : h->content_length > 0 ? h->content_length : 0;
		k->st = ST_BODY;
		return;
	}
	if ((ws && h->status != 101) || (!ws && h->status != 200)) {
		conn_fail(r, k, SB_ERR_STATUS);
		return;
	}
	if (r->c->proto == SB_PROTO_OPENAI) {
		k->chunked = h->chunked;
		memset(&k->ch, 0, sizeof(k->ch));
		k->st = ST_STREAM;
		return;
	}
	/* An event stream may come chunked (Node's http does that). */
	k->chunked = !ws && h->chunked;
	memset(&k->ch, 0, sizeof(k->ch));
	if (ws && r->c->target == SB_TARGET_SLUICE) {
		k->st = ST_WS_HELLO;
	} else {
		k->st = ST_STREAM;
		stream_opened(r, k);
	}
}

static bool discard(void *arg, const char *d, size_t n)
{
	(void)arg;
	(void)d;
	(void)n;
	return true;
}

/* Bytes of a prompt/publisher answer: heads and bodies (Content-Length or
 * chunked), maybe several pipelined ones. */
static void answer_bytes(struct sb_run *r, struct sconn *k, const char *p, size_t n)
{
	while (n > 0 && k->fd >= 0) {
		if (k->st == ST_BODY && k->chunked) {
			long used = sb_chunked_feed(&k->ch, p, n, discard, NULL);

			if (used < 0) {
				conn_fail(r, k, SB_ERR_PROTOCOL);
				return;
			}
			p += used;
			n -= (size_t)used;
			if (k->ch.state == SB_CH_DONE) {
				k->chunked = false;
				k->body_left = 0;
			} else {
				continue;
			}
		}
		if (k->st == ST_BODY) {
			size_t take = (size_t)k->body_left < n ? (size_t)k->body_left : n;

			k->body_left -= (int64_t)take;
			p += take;
			n -= take;
			if (k->body_left == 0) {
				k->st = k->role == R_PUB ? ST_HEAD : ST_IDLE;
				if (k->pipelined)
					k->pipelined--;
			}
			continue;
		}
		{
			struct sb_http_head h;
			size_t from_new;
			int hl;

			if (k->head.len) {
				size_t old = k->head.len;

				if (!sb_carry_put(&k->head, p, n, SB_HTTP_HEAD_MAX * 2)) {
					conn_fail(r, k, SB_ERR_PROTOCOL);
					return;
				}
				hl = sb_http_head_parse(k->head.p, k->head.len, &h);
				if (hl <= 0) {
					if (hl < 0)
						conn_fail(r, k, SB_ERR_PROTOCOL);
					return;
				}
				from_new = (size_t)hl - old;
				sb_carry_clear(&k->head);
			} else {
				hl = sb_http_head_parse(p, n, &h);
				if (hl < 0) {
					conn_fail(r, k, SB_ERR_PROTOCOL);
					return;
				}
				if (hl == 0) {
					if (!sb_carry_put(&k->head, p, n, SB_HTTP_HEAD_MAX * 2))
						conn_fail(r, k, SB_ERR_PROTOCOL);
					return;
				}
				from_new = (size_t)hl;
			}
			p += from_new;
			n -= from_new;
			got_head(r, k, &h);
			if (k->role == R_STREAM) {
				if (n && k->fd >= 0)
					stream_bytes(r, k, p, n);
				return;
			}
			if (k->body_left == 0) {
				k->st = k->role == R_PUB ? ST_HEAD : ST_IDLE;
				if (k->pipelined)
					k->pipelined--;
			}
		}
	}
}

static void conn_readable(struct sb_run *r, struct sconn *k)
{
	ssize_t n = recv(k->fd, r->rx, RX_BUF, 0);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_fail(r, k, SB_ERR_CLOSED);
		return;
	}
	if (n == 0) {
		/* A close-delimited OpenAI answer ends with the close: the next
		 * prompt goes on a new connection. */
		if (r->c->proto == SB_PROTO_OPENAI && k->role == R_STREAM && !k->in_msg &&
		    k->st == ST_STREAM) {
			conn_close(r, k);
			conn_start(r, k);
			return;
		}
		conn_fail(r, k, SB_ERR_CLOSED);
		return;
	}
	if (k->role == R_STREAM && (k->st == ST_STREAM || k->st == ST_WS_HELLO))
		stream_bytes(r, k, r->rx, (size_t)n);
	else
		answer_bytes(r, k, r->rx, (size_t)n);
}

static void conn_event(struct sb_run *r, struct sconn *k, uint32_t ev)
{
	if (k->st == ST_CONNECTING) {
		int e = 0;
		socklen_t l = sizeof(e);
		struct epoll_event in = { .events = EPOLLIN, .data.ptr = k };

		if ((ev & (EPOLLERR | EPOLLHUP)) || getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e) {
			conn_fail(r, k, SB_ERR_CONNECT);
			return;
		}
		epoll_ctl(r->ep, EPOLL_CTL_MOD, k->fd, &in);
		if (k->role == R_STREAM && r->c->proto != SB_PROTO_OPENAI) {
			send_stream_request(r, k);
		} else if (k->role == R_STREAM) {
			k->st = ST_IDLE; /* OpenAI: the request is the prompt */
			stream_opened(r, k);
		} else {
			k->st = k->role == R_PUB ? ST_HEAD : ST_IDLE;
		}
		return;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_readable(r, k);
}

/* One pass of the loop: events for at most `ms` milliseconds. */
static void loop_once(struct sb_run *r, int ms)
{
	struct epoll_event evs[MAX_EVENTS];
	int n = epoll_wait(r->ep, evs, MAX_EVENTS, ms);

	for (int i = 0; i < n; i++) {
		struct sconn *k = evs[i].data.ptr;

		if (k->fd >= 0)
			conn_event(r, k, evs[i].events);
	}
}

static void progress(struct sb_run *r, const char *phase, double t, uint64_t *last_tokens,
		     double *last_t)
{
	const struct sb_step *st = r->step;
	uint64_t tok = st ? st->tokens : 0, errs = 0;
	double dt = t - *last_t;

	if (!r->c->progress)
		return;
	for (int e = 0; e < SB_ERR_MAX; e++)
		errs += r->res->errors[e] + (st ? st->errors[e] : 0);
	sb_report_progress(stderr, phase, t, r->nopen, r->nstreams,
			   dt > 0 ? (double)(tok - *last_tokens) / dt : 0.0,
			   st ? (double)sb_hist_quantile(&st->delay, 0.99) / 1e6 : 0.0, errs);
	*last_tokens = tok;
	*last_t = t;
}

void sb_run_pump(struct sb_run *r, int ms)
{
	loop_once(r, ms);
}

/* ---- the phases --------------------------------------------------------------- */

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

struct sb_run *sb_run_create(const struct sb_conf *c, char (*sids)[40], long nsessions,
			     const char *auth, struct sb_results *res, char *err, size_t errlen)
{
	struct sb_run *r = calloc(1, sizeof(*r));
	long nprompt = c->target == SB_TARGET_SLUICE || c->target == SB_TARGET_PEER ? c->prompt_conns : 0;
	long npub = c->target == SB_TARGET_NCHAN ? nsessions : 0;

	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (c->proto == SB_PROTO_OPENAI)
		nprompt = 0;
	r->ep = -1;
	r->c = c;
	r->res = res;
	r->auth = auth;
	r->nstreams = c->connections;
	r->nsess = nsessions;
	r->prompt_first = r->nstreams;
	r->nprompt = nprompt;
	r->pub_first = r->nstreams + nprompt;
	r->nconns = r->nstreams + nprompt + npub;
	r->conns = calloc((size_t)r->nconns, sizeof(*r->conns));
	r->sess = calloc((size_t)nsessions, sizeof(*r->sess));
	r->rx = malloc(RX_BUF);
	r->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!r->conns || !r->sess || !r->rx || r->ep < 0) {
		snprintf(err, errlen, "out of memory for %ld connections", r->nconns);
		sb_run_destroy(r);
		return NULL;
	}
	for (long i = 0; i < r->nconns; i++) {
		struct sconn *k = &r->conns[i];

		k->fd = -1;
		k->st = ST_DEAD;
		k->role = i < r->nstreams ? R_STREAM : i < r->pub_first ? R_PROMPT : R_PUB;
		/* Streams fill their sessions in turn: subscribers of a session
		 * are spread over the source addresses. */
		k->sess = (uint32_t)(k->role == R_PUB ? i - r->pub_first :
				     k->role == R_STREAM ? (c->proto == SB_PROTO_OPENAI ? i : i % nsessions) : 0);
		sb_sse_init(&k->sse);
		sb_ws_init(&k->ws, (uint64_t)i + 1);
	}
	for (long i = 0; i < nsessions; i++)
		memcpy(r->sess[i].id, sids[i], sizeof(r->sess[i].id));
	r->dst.sin_family = AF_INET;
	r->dst.sin_port = htons((uint16_t)c->port);
	if (inet_pton(AF_INET, c->host, &r->dst.sin_addr) != 1) {
		snprintf(err, errlen, "host '%s' is not an IPv4 address", c->host);
		sb_run_destroy(r);
		return NULL;
	}
	if (parse_src(r, err, errlen) < 0) {
		sb_run_destroy(r);
		return NULL;
	}
	return r;
}

long sb_run_open(struct sb_run *r)
{
	const struct sb_conf *c = r->c;
	uint64_t t0 = sluice_now_ns(), ramp = (uint64_t)(c->ramp_s * 1e9);
	uint64_t deadline = t0 + ramp + 30ull * 1000000000ull, next_prog = t0 + 1000000000ull;
	long started = 0;
	uint64_t lt = 0;
	double ltime = 0;

	for (long i = r->nstreams; i < r->nconns; i++)
		conn_start(r, &r->conns[i]);
	for (;;) {
		uint64_t now = sluice_now_ns();
		long want = ramp ? (long)((double)r->nstreams * (double)(now - t0) / (double)ramp) + 1 : r->nstreams;
		bool helpers_ready = true;

		if (want > r->nstreams)
			want = r->nstreams;
		while (started < want)
			conn_start(r, &r->conns[started++]);
		for (long i = r->nstreams; i < r->nconns; i++)
			if (r->conns[i].fd >= 0 && r->conns[i].st == ST_CONNECTING)
				helpers_ready = false;
		if ((started == r->nstreams && r->nopen + (long)errors_of(r)[SB_ERR_CONNECT] +
		     (long)errors_of(r)[SB_ERR_STATUS] >= r->nstreams && helpers_ready) || now >= deadline)
			break;
		if (now >= next_prog) {
			progress(r, "ramp", (double)(now - t0) / 1e9, &lt, &ltime);
			next_prog += 1000000000ull;
		}
		loop_once(r, 1);
	}
	r->res->ramp_took_s = (double)(sluice_now_ns() - t0) / 1e9;
	r->res->conns_open = r->nopen;
	return r->nopen;
}

/* Tokens/s the prompts ask for: answers started per second (at most what
 * the sessions can run back to back) x tokens per answer x subscribers. */
static double offered_tok_s(const struct sb_run *r, double rate)
{
	const struct sb_conf *c = r->c;
	double answer_s = (double)c->ttft_ms / 1e3 + (double)c->answer_tokens / (double)c->token_rate;
	double most = (double)r->nsess / answer_s;
	double starts = rate > 0 && rate < most ? rate : most;

	return starts * (double)c->answer_tokens * (double)c->subscribers;
}

void sb_run_step(struct sb_run *r, struct sb_step *st, double rate)
{
	const struct sb_conf *c = r->c;
	pid_t pids[SB_PROC_MAX];
	int np = 0;
	uint64_t t0, end, next_prog, lt = 0;
	double ltime = 0;
	char buf[sizeof(c->pids_s)], *tok, *save;

	snprintf(buf, sizeof(buf), "%s", c->pids_s);
	for (tok = strtok_r(buf, ",", &save); tok && np < SB_PROC_MAX; tok = strtok_r(NULL, ",", &save))
		pids[np++] = (pid_t)atoi(tok);
	memset(st, 0, sizeof(*st));
	sb_hist_reset(&st->ttft);
	sb_hist_reset(&st->gap);
	sb_hist_reset(&st->delay);
	sb_hist_reset(&st->first);
	st->prompt_rate = rate;
	st->offered_tok_s = offered_tok_s(r, rate);
	r->step = st;
	r->rate = rate;
	r->prompts_wanted = 0;
	t0 = sluice_now_ns();
	end = t0 + (uint64_t)(c->duration_s * 1e9);
	next_prog = t0 + 1000000000ull;
	sb_proc_read(pids, np, &st->p0);
	st->bench_cpu_s = self_cpu_s();
	for (;;) {
		uint64_t now = sluice_now_ns();

		if (now >= end)
			break;
		if (rate > 0) {
			uint64_t owed = (uint64_t)(rate * (double)(now - t0) / 1e9) + 1;

			while (r->prompts_wanted < owed) {
				long si = idle_session(r);

				r->prompts_wanted++;
				if (si < 0 || !send_prompt(r, si))
					count_err(r, SB_ERR_NO_IDLE);
			}
		} else {
			long si;

			while ((si = idle_session(r)) >= 0 && send_prompt(r, si))
				;
		}
		if (c->target == SB_TARGET_NCHAN)
			publish_due(r, now);
		if (now >= next_prog) {
			progress(r, "step", (double)(now - t0) / 1e9, &lt, &ltime);
			next_prog += 1000000000ull;
		}
		loop_once(r, 1);
	}
	sb_proc_read(pids, np, &st->p1);
	st->bench_cpu_s = self_cpu_s() - st->bench_cpu_s;
	st->seconds = (double)(sluice_now_ns() - t0) / 1e9;
	sb_proc_read(pids, np, &r->res->streaming);
	r->res->npids = np;
	r->step = NULL;
}

void sb_run_drain(struct sb_run *r, double seconds)
{
	uint64_t end = sluice_now_ns() + (uint64_t)(seconds * 1e9);

	for (;;) {
		bool any = false;

		for (long i = 0; i < r->nsess; i++)
			any |= r->sess[i].running;
		if (!any || sluice_now_ns() >= end)
			break;
		if (r->c->target == SB_TARGET_NCHAN)
			publish_due(r, sluice_now_ns());
		loop_once(r, 1);
	}
	for (long i = 0; i < r->nsess; i++)
		if (r->sess[i].running && seconds > 0)
			r->res->errors[SB_ERR_UNFINISHED]++;
}

void sb_run_destroy(struct sb_run *r)
{
	if (!r)
		return;
	for (long i = 0; r->conns && i < r->nconns; i++) {
		conn_close(r, &r->conns[i]);
		sb_carry_free(&r->conns[i].head);
		sb_sse_free(&r->conns[i].sse);
		sb_ws_free(&r->conns[i].ws);
	}
	if (r->ep >= 0)
		close(r->ep);
	free(r->conns);
	free(r->sess);
	free(r->src);
	free(r->rx);
	free(r);
}

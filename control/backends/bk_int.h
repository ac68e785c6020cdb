/*
 * Inside the backend manager; nothing outside control/backends/ includes
 * this. The files and what they export to each other:
 *
 *   backends.c   the manager: backends, routing, breaker, queues, calls and
 *                the events they report (bk_emit_*), admin, totals
 *   bk_curl.c    libcurl's multi handle on the loop (bk_curl_*): sockets,
 *                the timer, transfers and their completion
 *   bk_openai.c  the OpenAI-compatible client (bk_oai_ops)
 *   bk_ollama.c  the Ollama client (bk_oll_ops)
 *   bk_health.c  health checks and model discovery (bk_health_*)
 *   synthetic.c  the synthetic backend (bk_syn_start)
 */
#ifndef CONTROL_BK_INT_H
#define CONTROL_BK_INT_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backends.h"
#include "backends/ndjson.h"
#include "backends/sse.h"

/* Upstream bytes kept for one event or line, and for an error body. */
#define BK_EVENT_MAX (1u << 20)
/* Models a health check may find on one backend. */
#define BK_DISCOVER_MAX 64
/* Tokens the synthetic backend emits per loop turn; more wait a turn. */
#define BK_SYN_TURN_TOKENS 256
/* A health check may take this long (capped by the interval). */
#define BK_HEALTH_TIMEOUT_MS 10000u

struct bk_call;
struct bk_backend;

/* A libcurl transfer: a call's upstream request or a health check. */
struct bk_xfer {
	struct bk_mgr *m;
	CURL *easy;
	struct curl_slist *hdrs;
	char *body;            /* owned request body */
	bool active;           /* added to the multi handle */
	/* Response bytes; returns false to abort the transfer. */
	bool (*on_data)(struct bk_xfer *x, const char *p, size_t n);
	struct bk_xfer *next_add;  /* waiting to be added (started inside libcurl) */
	bool adding;
	/* The transfer ended (libcurl's result, the HTTP status, its error
	 * text); called outside libcurl's callbacks. */
	void (*on_done)(struct bk_xfer *x, CURLcode rc, long status, const char *why);
	char errbuf[CURL_ERROR_SIZE];
};

/* What a network backend type does with a call. */
struct bk_type_ops {
	const char *name;
	const char *models_path; /* appended to the url for health checks */
	/* Builds the upstream request for c on c->be into c->x: 0 or -1. */
	int (*request)(struct bk_call *c);
	/* Stream bytes of a 200 answer; false when the call ended or failed
	 * (bk_fail / bk_emit_end already called). */
	bool (*data)(struct bk_call *c, const char *p, size_t n);
	/* The 200 answer ended: false when it ended without its end marker. */
	bool (*finish)(struct bk_call *c);
	/* The model ids of a models answer, into names (at most max). */
	uint32_t (*models)(const char *body, size_t len, char names[][CONF_NAME_MAX], uint32_t max);
};

extern const struct bk_type_ops bk_oai_ops;
extern const struct bk_type_ops bk_oll_ops;

struct bk_health_check {
	struct bk_xfer x;
	struct cpl_timer timer;
	char *buf;
	size_t len, cap;
	bool running;
};

struct bk_backend {
	bool used;
	uint32_t slot;               /* index in bk_mgr.be: bit of a call's tried mask */
	struct conf_backend cfg;     /* a copy: runtime backends have no other */
	const struct bk_type_ops *ops; /* NULL: synthetic */
	char *auth_header;           /* "Authorization: Bearer <key>", owned, wiped on free */
	enum bk_health health;
	enum bk_breaker breaker;
	enum bk_admin admin;
	bool runtime;
	bool probing;                /* half-open: the probe call is running */
	uint32_t failures;           /* consecutive */
	uint64_t open_until_ns;
	uint32_t inflight;
	struct bk_call *qhead, *qtail;
	uint32_t queued;
	uint64_t requests, errors, failovers, rejected;
	char last_error[160];
	struct bk_model_stats *ms;   /* owned */
	uint32_t nms, ms_cap;
	char (*disc)[CONF_NAME_MAX]; /* owned: models found by the health check */
	const char *disc_ptrs[BK_DISCOVER_MAX];
	uint32_t ndisc;
	struct bk_health_check hc;
};

enum bk_call_state { BK_C_NEW = 0, BK_C_QUEUED, BK_C_RUNNING, BK_C_ENDED };

/* A failure found where it cannot be handled (inside libcurl's callbacks):
 * handled once libcurl returns. */
struct bk_pending_fail {
	bool set;
	bool retry;
	uint16_t status;
	char code[32];
	char msg[160];
};

struct bk_call {
	struct bk_mgr *m;
	struct bk_call *prev, *next;   /* every call of the manager */
	struct bk_call *qprev, *qnext; /* its backend's queue, while queued */
	const struct bk_events *ev;
	void *arg;
	enum bk_call_state state;
	struct bk_backend *be;         /* NULL before routing */
	struct bk_model_stats *ms;     /* counters of (be, model) */
	uint32_t tried;                /* backends tried (failover) */
	bool relayed;                  /* a token or delta reached the caller */
	bool cancelled;                /* cancelled inside a callback: freed when it returns */
	bool counted;                  /* holds one of be->inflight */
	bool probe;                    /* the half-open breaker's probe */
	struct bk_pending_fail pf;
	int in_cb;                     /* depth of callbacks into the caller */
	struct cpl_timer timer;        /* deadline (first token, idle) or the next synthetic token */
	uint64_t start_ns, sent_ns, last_rx_ns;
	/* the request, owned */
	char model[CONF_NAME_MAX];
	json_t *messages;              /* array of message objects */
	json_t *params;                /* object, or NULL */
	char *prompt;                  /* the last user message (synthetic) */
	size_t prompt_len;
	/* network */
	struct bk_xfer x;
	long http_status;
	char *buf;                     /* pending stream bytes, or an error body */
	size_t blen, bcap;
	struct sse_parser sse;
	struct ndj ndj;
	bool end_marker;               /* [DONE] or done:true seen */
	bool usage_seen;
	uint32_t prompt_tokens, completion_tokens;
	char finish[32];
	/* synthetic */
	uint64_t seed;
	uint32_t next_k, total;
};

struct bk_mgr {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct bk_backend be[CONF_MAX_BACKENDS];
	CURLM *multi;
	struct cpl_timer curl_timer;
	bool in_curl;                  /* inside curl_multi_socket_action */
	struct bk_xfer *adds;          /* transfers started meanwhile, added when it returns */
	bool curl_global;
	bool shutting_down;
	struct bk_call *calls;
	uint64_t calls_total, rejected, failovers, upstream_errors, cancels;
};

/* ---- backends.c: the backend table ------------------------------------ */

/* The backend named name (removing ones too), or NULL. */
struct bk_backend *bk_find(struct bk_mgr *m, const char *name);
/* Fills free slot `slot` with cfg (runtime: added by an operator) and
 * starts its health checks; 0, or -1 with the reason in err. */
int bk_backend_init(struct bk_mgr *m, uint32_t slot, const struct conf_backend *cfg, bool runtime,
		    char *err, size_t errlen);
/* "Authorization: Bearer <key>" from cfg's api_key_env into *out (owned
 * by the caller, wiped before free; NULL when cfg names none); -1 with the
 * reason in err when the variable is unset or empty. */
int bk_auth_header(const struct conf_backend *cfg, char **out, char *err, size_t errlen);

/* ---- backends.c: what the clients report ------------------------------ */

/* Each returns false when the call must stop: the caller cancelled it from
 * inside the callback (or it ended). */
bool bk_emit_token(struct bk_call *c, const char *text, size_t len);
bool bk_emit_delta(struct bk_call *c, const char *json, size_t len);
void bk_emit_usage(struct bk_call *c, uint32_t prompt_tokens, uint32_t completion_tokens);
/* Ends the call successfully (finish_reason may be NULL) and frees it
 * unless its transfer is still active (then on_done frees it). */
void bk_emit_complete(struct bk_call *c, const char *finish_reason);
/* The attempt on c->be failed: fails over while nothing was relayed,
 * `retry` allows it and another backend can take it, else ends the call
 * with the error (http_status for a client, code, message). Inside
 * libcurl's callbacks it is noted and handled once libcurl returns (the
 * client then aborts its transfer). */
void bk_fail(struct bk_call *c, bool retry, uint16_t http_status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* A call's transfer ended (bk_curl.c, outside libcurl's callbacks). */
void bk_call_xfer_done(struct bk_call *c, CURLcode rc, long status, const char *why);
/* Finishes what waited for libcurl or a callback to return: cancels,
 * noted failures. */
void bk_reap(struct bk_mgr *m);
/* Frees a call whose transfer and timer are stopped. */
void bk_call_free(struct bk_call *c);
/* Sets up c->x: POST body (taken) to path on c->be, JSON in, stream out,
 * the completion going to bk_call_xfer_done. 0 or -1. */
int bk_net_request(struct bk_call *c, const char *path, json_t *body);
/* Appends stream bytes to c->buf (at most twice BK_EVENT_MAX): false when
 * out of room. */
bool bk_buf_put(struct bk_call *c, const char *p, size_t n);
/* A backend's base request headers: its configured extra ones and its key. */
struct curl_slist *bk_headers(const struct bk_backend *be, struct curl_slist *h);
/* The upstream URL of path on be into out; false when it does not fit. */
bool bk_url(const struct bk_backend *be, const char *path, char *out, size_t cap);
/* The OpenAI-style error message of an error body, or NULL. */
const char *bk_error_message(json_t *body);

/* ---- bk_curl.c ---------------------------------------------------------- */

int bk_curl_init(struct bk_mgr *m, char *err, size_t errlen);
void bk_curl_free(struct bk_mgr *m);
/* A fresh easy handle for x (url, timeouts, the callbacks), or -1. */
int bk_curl_prepare(struct bk_mgr *m, struct bk_xfer *x, const char *url, const struct bk_backend *be,
		    uint32_t timeout_ms);
/* Starts x; -1 when libcurl refuses (x is then stopped). */
int bk_curl_start(struct bk_xfer *x);
/* Stops x (closing its connection if unfinished) and frees its handle,
 * headers and body. Never from inside a libcurl callback. */
void bk_curl_stop(struct bk_xfer *x);

/* ---- bk_health.c ---------------------------------------------------------- */

/* Starts be's checks (the first now); 0 or -1. */
int bk_health_start(struct bk_mgr *m, struct bk_backend *be);
void bk_health_stop(struct bk_mgr *m, struct bk_backend *be);
/* True when be lists model, or its health check found it. */
bool bk_serves(const struct bk_backend *be, const char *model);

/* ---- synthetic.c -------------------------------------------------------- */

/* Starts the synthetic answer of c on c->be: its first token on the timer. */
int bk_syn_start(struct bk_call *c);

#endif

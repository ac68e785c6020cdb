/*
 * Request handlers: the records the dataplane sends about clients (REQUEST,
 * SUBSCRIBE, UNSUBSCRIBE, CONN_CLOSED), registered with the control loop
 * and routed to the chat and auth layers, with JSON bodies (jansson) and
 * errors exactly as docs/api.md lists them. Every request is authenticated
 * first (api_auth.c); there is no unauthenticated mode.
 *
 * Handler shape: each handler answers exactly once, through api_send_json /
 * api_error (a RESPONSE record), either at once or from the completion of
 * the store write it started; internal failures answer 500 `internal` and
 * log. Single-threaded on the control loop.
 */
#ifndef CONTROL_API_H
#define CONTROL_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "chat/chat.h"
#include "events/ev.h"
#include "idmap/idmap.h"

struct api;
struct auth;
struct limits;
struct v1_req;
struct auth_ident;

/*
 * A request for a route or WebSocket endpoint that a layer above registered
 * (api_route_add, api_ws_add), already authenticated. Pointers into the
 * request record: valid for the call only.
 */
struct api_call {
	const struct chat_reply *r;
	uint8_t method;          /* enum chan_method; HEAD arrives as GET with head set */
	bool head;
	const char *path;
	size_t path_len;
	const char *query;       /* after '?', undecoded; NULL when absent */
	size_t query_len;
	const char *body;        /* HTTP body or the WebSocket text message */
	size_t body_len;
	const struct auth_ident *id; /* the caller */
};

typedef void (*api_route_fn)(void *arg, struct api *a, const struct api_call *c);

/* A WebSocket endpoint served by a layer above (e.g. /ws/admin). The
 * upgrade is authenticated like /ws/chat's; a caller below `role` gets 403
 * `forbidden` instead of 101. */
struct api_ws_endpoint {
	const char *path;
	uint8_t role; /* enum store_user_role: the least role that may open it */
	/* After the 101 was queued: messages pushed from here arrive after it. */
	void (*opened)(void *arg, struct chan_conn conn, const struct auth_ident *id);
	/* A text message from the client (the session was re-checked). */
	void (*message)(void *arg, struct api *a, const struct api_call *c);
	/* Some conn closed (CONN_CLOSED); it may not be one of this endpoint's. */
	void (*closed)(void *arg, struct chan_conn conn);
	void *arg;
};

#define API_MAX_ROUTES 8u
#define API_MAX_WS 4u

struct api_stats {
	uint64_t requests;
	uint64_t invalid_records;
	uint64_t reply_drops; /* responses that fitted neither ring nor backlog */
	uint64_t stale_requests; /* stamped with another control epoch: dropped */
};

/* What the api is built on; every pointer stays owned by the caller and
 * must outlive the api. */
struct api_deps {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct store *st;
	struct chan_out *out;
	struct chat *chat;
	struct auth *auth;
	struct limits *limits;
	struct bk_mgr *bk;
	struct ev_bus *bus; /* logins and conversation changes are published here; may be NULL */
};

struct api_route {
	const char *prefix;
	api_route_fn fn;
	void *arg;
};

struct api {
	const struct sluice_conf *conf;
	struct store *st;
	struct chan_out *out;
	struct chat *chat;
	struct auth *auth;
	struct limits *limits;
	struct bk_mgr *bk;
	struct cp_loop *loop;
	struct idmap v1_reqs;          /* /v1 completions in flight, by conn */
	struct v1_req *v1_pending;     /* of those, the ones with chunks to send this turn */
	struct ev_bus *bus;
	struct api_stats stats;
	struct api_route routes[API_MAX_ROUTES];
	uint32_t nroutes;
	struct api_ws_endpoint ws[API_MAX_WS];
	uint32_t nws;
	/* This control's epoch (chan_open bumped it); requests stamped with
	 * another one were meant for a previous control and are dropped, the
	 * worker answers them 503 itself. */
	uint32_t cp_epoch;
};

/* Registers the record handlers with d->loop and the store-completion hooks
 * with d->chat. Returns 0, or -1 with a message in err. */
int api_init(struct api *a, const struct api_deps *d, char *err, size_t errlen);
/* Frees the /v1 requests still known (call after bk_shutdown). */
void api_free(struct api *a);

/* Hands every authenticated HTTP request whose path starts with prefix
 * (a static string) to fn, before the built-in routes. -1 when full. */
int api_route_add(struct api *a, const char *prefix, api_route_fn fn, void *arg);
/* Serves WebSocket upgrades to ep->path with ep (copied). -1 when full. */
int api_ws_add(struct api *a, const struct api_ws_endpoint *ep);

/* Answers for registered routes and endpoints: obj (taken) as the JSON body
 * (HTTP) or the text message (WebSocket); an error in the shape of
 * docs/api.md for either. */
void api_reply_json(struct api *a, const struct chat_reply *r, uint16_t status, json_t *obj);
void api_reply_error(struct api *a, const struct chat_reply *r, uint16_t status, const char *code,
		     const char *msg);
/* 405 method_not_allowed with `Allow: <allow>`. */
void api_reply_405(struct api *a, const struct chat_reply *r, const char *allow);
/* Decodes query parameter key of c into out: its length, -1 absent, -2 malformed. */
int api_call_query(const struct api_call *c, const char *key, char *out, size_t cap);

#endif

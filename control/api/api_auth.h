/*
 * The HTTP and WebSocket side of authentication (docs/api.md,
 * "Authentication"): POST /api/auth/login and /api/auth/logout, the check
 * every other /api/ request passes before routing, the WebSocket upgrade
 * decision (Origin, then credentials) and the identity of WebSocket messages.
 * The state lives in struct auth (auth/auth.h), reached through api->auth.
 * Runs on the control loop.
 */
#ifndef CONTROL_API_AUTH_H
#define CONTROL_API_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "api/api.h"
#include "auth/auth.h"

/*
 * The authentication step of an HTTP REQUEST record (payload, len). Returns
 * true when the request was answered here: an /api/auth/ route, or a refusal
 * (401 unauthenticated, 403 csrf_failed). Returns false when routing goes on,
 * with *id filled (id->user is "" on a public route: GET /api/models,
 * GET /api/agents).
 */
bool api_auth_http(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len,
		   struct auth_ident *id);

/* The admission of a body the dataplane has not read (CHAN_REQ_HTTP_ADMIT):
 * CONTINUE when the caller may send it (on the public routes, with a small
 * BODY_MAX), else the refusal (401, 403) the dataplane sends and closes
 * after. Nothing of the body reaches control before this said yes. */
void api_auth_admit(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len);

/* The upgrade decision for a CHAN_REQ_WS_OPEN record: PLAIN 403
 * origin_not_allowed, PLAIN 401 unauthenticated, or WS_ACCEPT (with
 * "Sec-WebSocket-Protocol: sluice.v1" when offered); the conn is remembered. */
void api_auth_ws_open(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len);

/* The identity of a WebSocket message's conn, re-checked against the store.
 * False when its session is gone: the conn was sent KICK 1008 and the
 * message must be dropped. A conn unknown to this control (it restarted)
 * is authenticated again from credentials in the record, when it has any. */
bool api_auth_ws_msg(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len,
		     struct auth_ident *id);

/* A SUBSCRIBE re-announced by the dataplane (control restarted) for conn
 * streaming s. True when the stream may go on: its known identity is still
 * valid, or, unknown here, the conversation's owner still exists as the same
 * user (the conn is then kept under the owner, ending at the latest
 * session_ttl_s later). Otherwise conn was sent KICK and false returned. */
bool api_auth_resubscribe(struct api *a, const struct chat_session *s, struct chan_conn conn);

/* CONN_CLOSED: forget the conn. */
void api_auth_conn_closed(struct api *a, struct chan_conn conn);

#endif

#include "api/api_auth.h"
#include "api/api_int.h"
#include "auth/auth_login.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <sodium.h>

#include "sluice/log.h"

struct aa_slice {
	const char *p;
	size_t n;
};

/* The fields of a REQUEST record that authentication looks at. Empty
 * fields count as absent. Pointers into the record. */
struct aa_req {
	uint8_t method;
	struct aa_slice path, body, authz, cookie, csrf, origin, proto, peer, ctype;
};

static bool aa_parse(const void *payload, uint32_t len, struct aa_req *q)
{
	memset(q, 0, sizeof(*q));
	const struct chan_request *h = payload;
	q->method = h->method;
	const uint8_t *p = (const uint8_t *)payload + sizeof(*h);
	const uint8_t *end = (const uint8_t *)payload + len;
	const struct chan_field *f;
	bool bad = false;
	while ((f = chan_field_next(&p, end, &bad)) != NULL) {
		struct aa_slice *s;
		switch (f->tag) {
		case CHAN_F_PATH: s = &q->path; break;
		case CHAN_F_BODY: s = &q->body; break;
		case CHAN_F_AUTHORIZATION: s = &q->authz; break;
		case CHAN_F_COOKIE: s = &q->cookie; break;
		case CHAN_F_CSRF: s = &q->csrf; break;
		case CHAN_F_ORIGIN: s = &q->origin; break;
		case CHAN_F_WS_PROTOCOL: s = &q->proto; break;
		case CHAN_F_PEER: s = &q->peer; break;
		case CHAN_F_CONTENT_TYPE: s = &q->ctype; break;
		default: continue;
		}
		if (f->len) {
			s->p = (const char *)f->data;
			s->n = f->len;
		}
	}
	return !bad;
}

static bool aa_path_is(const struct aa_req *q, const char *p)
{
	size_t n = strlen(p);
	return q->path.n == n && memcmp(q->path.p, p, n) == 0;
}

static void aa_unauthenticated(struct api *a, const struct chat_reply *r)
{
	api_error(a, r, 401, "unauthenticated", "a valid session token or API key is required",
		 "WWW-Authenticate: Bearer");
}

static const char *aa_role_name(uint8_t role)
{
	return role == STORE_USER_ROLE_ADMIN ? "admin" : "user";
}

/* The client address of a PEER field ("ip:port") without the port. */
static struct aa_slice aa_peer_addr(const struct aa_req *q)
{
	struct aa_slice s = q->peer;
	const char *colon = s.p ? memrchr(s.p, ':', s.n) : NULL;
	if (colon)
		s.n = (size_t)(colon - s.p);
	if (!s.p) {
		s.p = "";
		s.n = 0;
	}
	return s;
}

/* A slice as a C string for a log field, cut to cap - 1 bytes. */
static const char *aa_cstr(struct aa_slice s, char *buf, size_t cap)
{
	size_t n = s.p ? s.n : 0;
	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(buf, s.p, n);
	buf[n] = '\0';
	return buf;
}

/* The audit line of a refused request (docs/operations.md "Audit log"):
 * what was refused, where, from which address, and the Origin it came
 * with. user is NULL when the request named nobody yet. */
static void aa_audit_refused(const char *event, const struct aa_req *q, const char *user)
{
	char peer[64], path[128], origin[128];
	log_audit(event, "user", user, "peer", aa_cstr(aa_peer_addr(q), peer, sizeof(peer)), "path",
		  aa_cstr(q->path, path, sizeof(path)), "origin",
		  q->origin.p ? aa_cstr(q->origin, origin, sizeof(origin)) : NULL, NULL);
}

/* ---- authentication of a request ------------------------------------------ */

enum aa_result { AA_OK = 0, AA_UNAUTH, AA_CSRF };

/* Cookie credentials make the browser a confused deputy for any site that
 * can post a form, so unsafe methods must also prove they saw the CSRF
 * token; Bearer credentials are never sent by a browser on its own. */
static bool aa_unsafe(uint8_t m)
{
	return m != CHAN_M_GET && m != CHAN_M_HEAD && m != CHAN_M_OPTIONS;
}

static enum aa_result aa_authenticate(struct api *a, const struct aa_req *q, struct auth_ident *id)
{
	size_t tl;
	const char *tok;
	if (q->authz.p) {
		tok = auth_bearer(q->authz.p, q->authz.n, &tl);
		if (!tok || auth_lookup(a->auth, tok, tl, id) < 0)
			return AA_UNAUTH;
		id->via = AUTH_VIA_BEARER;
		return AA_OK;
	}
	tok = q->cookie.p ? auth_cookie(q->cookie.p, q->cookie.n, &tl) : NULL;
	if (!tok || tl != AUTH_TOKEN_LEN || auth_lookup(a->auth, tok, tl, id) < 0)
		return AA_UNAUTH;
	id->via = AUTH_VIA_COOKIE;
	if (aa_unsafe(q->method) && !auth_csrf_ok(q->csrf.p, q->csrf.n, id->csrf))
		return AA_CSRF;
	return AA_OK;
}

/* ---- login ---------------------------------------------------------------- */

struct aa_login {
	struct api *a;
	struct chat_reply r;
	char user[STORE_USER_MAX];
	char addr[64];
	bool known;
	struct auth_login_ticket ticket; /* its place in the pool's fair share */
	uint8_t role;
	char token[AUTH_TOKEN_LEN + 1];
	char csrf[STORE_CSRF_MAX];
	int64_t expires_at;
};

static void aa_login_free(struct aa_login *l)
{
	sodium_memzero(l, sizeof(*l));
	free(l);
}

static void aa_retry_after(char *hdr, size_t cap, int64_t secs)
{
	snprintf(hdr, cap, "Retry-After: %lld", (long long)(secs > 0 ? secs : 1));
}

static void aa_login_stored(void *arg, int err)
{
	struct aa_login *l = arg;
	struct api *a = l->a;
	if (err) {
		api_store_error(a, &l->r, err, "the session could not be stored");
		aa_login_free(l);
		return;
	}
	char cookie[256];
	int n = snprintf(cookie, sizeof(cookie),
			 "Set-Cookie: " AUTH_COOKIE_NAME "=%s; Path=/; HttpOnly; SameSite=Lax; Max-Age=%u%s",
			 l->token, a->conf->session_ttl_s, a->conf->cookie_secure ? "; Secure" : "");
	/* Written by hand, not with jansson, so that no copy of the tokens is
	 * left in freed memory: every part is JSON-safe as it is (base64url
	 * tokens, a user name that passed auth_user_name_ok, a fixed role). */
	char body[512];
	int bn = snprintf(body, sizeof(body),
			  "{\"session_token\":\"%s\",\"csrf_token\":\"%s\",\"expires_at\":%lld,"
			  "\"user\":{\"name\":\"%s\",\"role\":\"%s\"}}",
			  l->token, l->csrf, (long long)l->expires_at, l->user, aa_role_name(l->role));
	if (n > 0 && (size_t)n < sizeof(cookie) && bn > 0 && (size_t)bn < sizeof(body)) {
		struct co_resp resp = { .status = 200, .action = CHAN_RESP_PLAIN, .body = body,
					.body_len = (size_t)bn, .header = cookie };
		api_send(a, &l->r, &resp);
	} else
		api_error(a, &l->r, 500, "internal", "response too long", NULL);
	sodium_memzero(cookie, sizeof(cookie));
	sodium_memzero(body, sizeof(body));
	a->auth->stats.logins_ok++;
	log_audit("login", "result", "ok", "user", l->user, "peer", l->addr, NULL);
	ev_publish(a->bus, &(struct ev){ .kind = EV_LOGIN, .user = l->user, .role = aa_role_name(l->role) });
	aa_login_free(l);
}

static void aa_rehash_stored(void *arg, int err)
{
	(void)arg;
	if (err)
		LOG_WARN("auth: storing a rehashed password failed (%d)", err);
}

/* Stores the hash the pool recomputed under the current parameters. */
static void aa_store_rehash(struct api *a, const char *user, const char *hash)
{
	struct store_user u;
	if (a->st->ops->user_get(a->st, user, &u) < 0)
		return;
	memcpy(u.pwhash, hash, sizeof(u.pwhash));
	if (a->st->ops->user_put(a->st, &u, 0, aa_rehash_stored, NULL) < 0)
		LOG_WARN("auth: storing a rehashed password failed");
	sodium_memzero(&u, sizeof(u));
}

static void aa_login_verified(void *arg, const struct pwh_job *j)
{
	struct aa_login *l = arg;
	struct api *a = l->a;
	struct auth *au = a->auth;
	int64_t now = au->now(au->now_arg);
	auth_login_release(au, &l->ticket);
	if (j->rc != 0 || !l->known) {
		auth_throttle_fail(&au->by_user, l->user, strlen(l->user), now);
		auth_throttle_fail(&au->by_addr, l->addr, strlen(l->addr), now);
		au->stats.logins_failed++;
		/* An unknown name may be a password typed in the wrong field:
		 * only names of existing users are written. */
		log_audit("login", "result", "failed", "user", l->known ? l->user : NULL, "known",
			  l->known ? "true" : "false", "peer", l->addr, NULL);
		/* RFC 9110 11.6.1: every 401 names a scheme the client may use. */
		api_error(a, &l->r, 401, "invalid_credentials", "wrong user name or password",
			  "WWW-Authenticate: Bearer");
		aa_login_free(l);
		return;
	}
	if (j->rehashed)
		aa_store_rehash(a, l->user, j->hash);
	auth_throttle_reset(&au->by_user, l->user, strlen(l->user));
	auth_login_trim_sessions(au, l->user, now);
	int rc = auth_session_create(au, l->user, l->token, l->csrf, &l->expires_at, aa_login_stored, l);
	if (rc < 0) {
		api_error(a, &l->r, 500, "internal", "the session could not be stored", NULL);
		aa_login_free(l);
	}
}

/* Copies a string member of at most cap-1 bytes (no NUL inside) into dst. */
static bool aa_str(json_t *o, const char *key, char *dst, size_t cap, size_t *len)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		return false;
	size_t n = json_string_length(v);
	const char *s = json_string_value(v);
	if (n >= cap || memchr(s, 0, n))
		return false;
	memcpy(dst, s, n);
	dst[n] = 0;
	*len = n;
	return true;
}

/* jansson's allocator while a login body is parsed: jansson copies the
 * password into its lexer buffer and into the string value, so every block
 * it frees is wiped first. The block's size sits in a header in front. */
#define AA_WIPE_HDR 16u

static void *aa_wipe_malloc(size_t n)
{
	if (n > SIZE_MAX - AA_WIPE_HDR)
		return NULL;
	unsigned char *p = malloc(AA_WIPE_HDR + n);
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof(n));
	return p + AA_WIPE_HDR;
}

static void aa_wipe_free(void *ptr)
{
	if (!ptr)
		return;
	unsigned char *p = (unsigned char *)ptr - AA_WIPE_HDR;
	size_t n;
	memcpy(&n, p, sizeof(n));
	sodium_memzero(ptr, n);
	free(p);
}

/*
 * Reads username and password from the login body. Returns -1 when the body
 * is not JSON, 0 when a field is missing, not a string or too long, 1 when
 * both were copied. json_set_alloc_funcs is process-wide; swapping it here is
 * safe because jansson runs on the control loop thread only (the store and
 * password threads never use it) and every object made under the wiping
 * allocator is freed before the previous pair is restored.
 */
static int aa_login_fields(const struct aa_req *q, char *user, size_t ucap, size_t *ul, char *pw,
			   size_t pcap, size_t *pl)
{
	json_malloc_t old_malloc;
	json_free_t old_free;
	json_get_alloc_funcs(&old_malloc, &old_free);
	json_set_alloc_funcs(aa_wipe_malloc, aa_wipe_free);
	json_t *j = q->body.p ? json_loadb(q->body.p, q->body.n, 0, NULL) : NULL;
	int rc = -1;
	if (j)
		rc = json_is_object(j) && aa_str(j, "username", user, ucap, ul) &&
		     aa_str(j, "password", pw, pcap, pl);
	json_decref(j);
	json_set_alloc_funcs(old_malloc, old_free);
	return rc;
}

/* The media type of a Content-Type value is application/json (parameters
 * such as charset allowed, ASCII case-insensitive). */
static bool aa_is_json(struct aa_slice ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1, i = n;
	if (!ct.p || ct.n < n || strncasecmp(ct.p, want, n) != 0)
		return false;
	while (i < ct.n && (ct.p[i] == ' ' || ct.p[i] == '\t'))
		i++;
	return i == ct.n || ct.p[i] == ';';
}

/*
 * A login sets the session cookie, so a cross-site page must not be able
 * to perform one for the browser: a form can post text/plain (no CORS
 * preflight) but not application/json, and a browser names the page's
 * origin in Origin. So both are checked before the body is even read.
 */
static bool aa_login_allowed(struct api *a, const struct chat_reply *r, const struct aa_req *q)
{
	if (q->origin.p && !auth_origin_allowed(a->auth, q->origin.p, q->origin.n)) {
		aa_audit_refused("origin_refused", q, NULL);
		api_error(a, r, 403, "origin_not_allowed", "this Origin may not log in here", NULL);
		return false;
	}
	if (!aa_is_json(q->ctype)) {
		api_error(a, r, 415, "unsupported_media_type", "a login body must be application/json",
			  NULL);
		return false;
	}
	return true;
}

static void aa_login(struct api *a, const struct chat_reply *r, const struct aa_req *q)
{
	struct auth *au = a->auth;
	char pw[PWH_PASSWORD_MAX];
	size_t pl = 0, ul = 0;
	struct aa_login *l = NULL;
	if (!aa_login_allowed(a, r, q))
		goto out;
	l = calloc(1, sizeof(*l));
	if (!l) {
		api_error(a, r, 500, "internal", "out of memory", NULL);
		goto out;
	}
	int fields = aa_login_fields(q, l->user, sizeof(l->user), &ul, pw, sizeof(pw), &pl);
	if (fields < 0) {
		api_error(a, r, 400, "invalid_json", "the body is not valid JSON", NULL);
		goto out;
	}
	if (fields == 0 || ul == 0) {
		api_error(a, r, 400, "invalid_request", "username and password strings are required", NULL);
		goto out;
	}
	struct aa_slice addr = aa_peer_addr(q);
	if (addr.n >= sizeof(l->addr))
		addr.n = sizeof(l->addr) - 1;
	memcpy(l->addr, addr.p, addr.n);
	l->r = *r;
	l->a = a;
	int64_t now = au->now(au->now_arg);
	int64_t wu = auth_throttle_wait(&au->by_user, l->user, ul, now);
	int64_t wa = auth_throttle_wait(&au->by_addr, l->addr, addr.n, now);
	if (wu > 0 || wa > 0) {
		char hdr[48];
		aa_retry_after(hdr, sizeof(hdr), wu > wa ? wu : wa);
		au->stats.logins_throttled++;
		log_audit("login", "result", "throttled", "peer", l->addr, "limit",
			  wu > 0 ? "user" : "address", NULL);
		api_error(a, r, 429, "too_many_attempts", "too many failed logins; retry later", hdr);
		goto out;
	}
	/* Fair admission: one caller looping logins, right or wrong, holds its
	 * share of the pool and its rate, never the whole pool. */
	int64_t wf = auth_login_admit(au, l->user, ul, l->addr, addr.n, now, &l->ticket);
	if (wf > 0) {
		char hdr[48];
		aa_retry_after(hdr, sizeof(hdr), wf);
		au->stats.logins_unfair++;
		api_error(a, r, 429, "too_many_attempts", "too many logins in progress or in a row; retry later",
			  hdr);
		goto out;
	}
	struct store_user u;
	memset(&u, 0, sizeof(u));
	l->known = auth_user_name_ok(l->user, ul) && a->st->ops->user_get(a->st, l->user, &u) == 0;
	l->role = u.role;
	int rc = pwh_submit_verify(&au->pool, l->known ? u.pwhash : au->dummy_hash, pw, pl, l->known,
				   aa_login_verified, l);
	sodium_memzero(&u, sizeof(u));
	if (rc < 0)
		auth_login_release(au, &l->ticket);
	if (rc == -EBUSY) {
		au->stats.logins_busy++;
		api_error(a, r, 503, "overloaded", "too many logins in progress", "Retry-After: 1");
		goto out;
	}
	if (rc < 0) {
		/* The password's length was checked when it was read (a longer
		 * one is an invalid_request there), so what is left is a stored
		 * hash the pool cannot take: the server's fault, not the client's. */
		LOG_ERROR("auth: password check for a login could not start: %s",
			  rc == -EINVAL ? "stored password hash too long" : strerror(-rc));
		api_error(a, r, 500, "internal", "the password could not be checked", NULL);
		goto out;
	}
	l = NULL; /* owned by the pool callback now */
out:
	sodium_memzero(pw, sizeof(pw));
	/* The body is still in the d2c ring (writable shared memory) until the
	 * loop releases the record: wipe the password there too. */
	if (q->body.p)
		sodium_memzero((void *)q->body.p, q->body.n);
	if (l)
		aa_login_free(l);
}

/* ---- logout --------------------------------------------------------------- */

struct aa_logout {
	struct api *a;
	struct chat_reply r;
	char user[STORE_USER_MAX];
};

static void aa_logout_done(void *arg, int err)
{
	struct aa_logout *lo = arg;
	struct api *a = lo->a;
	/* -ENOENT: revoked meanwhile by another logout; the session is gone
	 * either way, which is what the client asked for. */
	if (err && err != -ENOENT)
		api_error(a, &lo->r, 500, "internal", "the session could not be revoked", NULL);
	else {
		api_send_json(a, &lo->r, 200, CHAN_RESP_PLAIN, NULL, json_pack("{s:b}", "logged_out", 1),
			"Set-Cookie: " AUTH_COOKIE_NAME "=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
		log_audit("logout", "user", lo->user, NULL);
		ev_publish(a->bus, &(struct ev){ .kind = EV_LOGOUT, .user = lo->user });
	}
	free(lo);
}

static void aa_logout(struct api *a, const struct chat_reply *r, const struct auth_ident *id)
{
	if (id->apikey) {
		api_error(a, r, 400, "invalid_request",
			 "an API key is not a login session; revoke keys with sluicectl", NULL);
		return;
	}
	struct aa_logout *lo = calloc(1, sizeof(*lo));
	if (!lo) {
		api_error(a, r, 500, "internal", "out of memory", NULL);
		return;
	}
	lo->a = a;
	lo->r = *r;
	memcpy(lo->user, id->user, sizeof(lo->user));
	int rc = auth_session_revoke(a->auth, id->hash, aa_logout_done, lo);
	if (rc < 0)
		aa_logout_done(lo, rc);
}

/* ---- the caller's own login -------------------------------------------------- */

/* GET /api/auth/session: who the credentials name, and the CSRF token a
 * page needs for its writes (a page that was reloaded has only the
 * cookie). Same-origin reads only: another origin cannot read the answer.
 * No valid credentials (id NULL) is an answer too, {"user":null}, so a page
 * asks without a failed request showing in its console. */
static void aa_session(struct api *a, const struct chat_reply *r, const struct auth_ident *id)
{
	char body[256];
	if (!id) {
		api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL,
			      json_pack("{s:n,s:n,s:n,s:n}", "user", "csrf_token", "expires_at", "via"), NULL);
		return;
	}
	const char *via = id->apikey ? "api_key" : id->via == AUTH_VIA_COOKIE ? "cookie" : "bearer";
	int n;
	if (id->apikey)
		n = snprintf(body, sizeof(body),
			     "{\"user\":{\"name\":\"%s\",\"role\":\"%s\"},\"csrf_token\":null,"
			     "\"expires_at\":null,\"via\":\"%s\"}",
			     id->user, aa_role_name(id->role), via);
	else
		n = snprintf(body, sizeof(body),
			     "{\"user\":{\"name\":\"%s\",\"role\":\"%s\"},\"csrf_token\":\"%s\","
			     "\"expires_at\":%lld,\"via\":\"%s\"}",
			     id->user, aa_role_name(id->role), id->csrf, (long long)id->expires_at, via);
	/* Written by hand like the login answer: no copy of the CSRF token in
	 * freed memory (user names are JSON-safe by auth_user_name_ok). */
	if (n > 0 && (size_t)n < sizeof(body)) {
		struct co_resp resp = { .status = 200, .action = CHAN_RESP_PLAIN, .body = body,
					.body_len = (size_t)n };
		api_send(a, r, &resp);
	} else {
		api_error(a, r, 500, "internal", "response too long", NULL);
	}
	sodium_memzero(body, sizeof(body));
}

/* ---- entry points ---------------------------------------------------------- */

static void aa_method_not_allowed(struct api *a, const struct chat_reply *r)
{
	api_error(a, r, 405, "method_not_allowed", "method not allowed on this path", "Allow: POST");
}

bool api_auth_http(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len,
		   struct auth_ident *id)
{
	struct aa_req q;
	memset(id, 0, sizeof(*id));
	/* Fail closed: a record this parser cannot read must never reach the
	 * router as an anonymous request. */
	if (!aa_parse(payload, len, &q)) {
		api_error(a, r, 400, "bad_request", "malformed request record", NULL);
		return true;
	}
	if (aa_path_is(&q, "/api/auth/login")) {
		if (q.method != CHAN_M_POST)
			aa_method_not_allowed(a, r);
		else
			aa_login(a, r, &q);
		return true;
	}
	if ((aa_path_is(&q, "/api/models") || aa_path_is(&q, "/api/agents")) && q.method == CHAN_M_GET)
		return false;
	enum aa_result res = aa_authenticate(a, &q, id);
	if (aa_path_is(&q, "/api/auth/session")) {
		if (q.method != CHAN_M_GET && q.method != CHAN_M_HEAD)
			api_method_not_allowed(a, r, "GET, HEAD");
		else
			aa_session(a, r, res == AA_OK ? id : NULL);
		return true;
	}
	switch (res) {
	case AA_UNAUTH:
		aa_unauthenticated(a, r);
		return true;
	case AA_CSRF:
		aa_audit_refused("csrf_refused", &q, id->user);
		api_error(a, r, 403, "csrf_failed", "X-CSRF-Token does not match the session", NULL);
		return true;
	case AA_OK:
		break;
	}
	if (aa_path_is(&q, "/api/auth/logout")) {
		if (q.method != CHAN_M_POST)
			aa_method_not_allowed(a, r);
		else
			aa_logout(a, r, id);
		return true;
	}
	return false;
}

/* A body the dataplane does not read before it is admitted (docs/http.md):
 * on the public routes a login's or so, on every other route the caller's
 * own. What an unauthenticated client may make a worker buffer is this. */
#define AA_PUBLIC_BODY_MAX "16384"

void api_auth_admit(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len)
{
	struct aa_req q;
	struct auth_ident id;
	if (!aa_parse(payload, len, &q)) {
		api_error(a, r, 400, "bad_request", "malformed request record", NULL);
		return;
	}
	struct co_resp resp = { .status = 100, .action = CHAN_RESP_CONTINUE };
	if (aa_path_is(&q, "/api/auth/login") || aa_path_is(&q, "/api/models") ||
	    aa_path_is(&q, "/api/agents")) {
		resp.header = AA_PUBLIC_BODY_MAX;
		resp.header_tag = CHAN_F_BODY_MAX;
		api_send(a, r, &resp);
		return;
	}
	switch (aa_authenticate(a, &q, &id)) {
	case AA_UNAUTH:
		aa_unauthenticated(a, r);
		break;
	case AA_CSRF:
		api_error(a, r, 403, "csrf_failed", "X-CSRF-Token does not match the session", NULL);
		break;
	case AA_OK:
		a->auth->stats.bodies_admitted++;
		api_send(a, r, &resp);
		break;
	}
	sodium_memzero(&id, sizeof(id));
}

/* Credentials of an upgrade: Authorization, then the protocol entry (what
 * browsers can send), then the cookie. */
static int aa_ws_credentials(struct api *a, const struct aa_req *q, struct auth_ident *id)
{
	size_t tl;
	const char *tok;
	enum auth_via via;
	if (q->authz.p) {
		tok = auth_bearer(q->authz.p, q->authz.n, &tl);
		via = AUTH_VIA_BEARER;
	} else if ((tok = q->proto.p ? auth_ws_proto_token(q->proto.p, q->proto.n, &tl) : NULL)) {
		via = AUTH_VIA_WS_PROTOCOL;
	} else {
		tok = q->cookie.p ? auth_cookie(q->cookie.p, q->cookie.n, &tl) : NULL;
		via = AUTH_VIA_COOKIE;
	}
	if (!tok || auth_lookup(a->auth, tok, tl, id) < 0)
		return -1;
	id->via = via;
	return 0;
}

void api_auth_ws_open(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len)
{
	struct aa_req q;
	struct auth_ident id;
	if (!aa_parse(payload, len, &q)) {
		api_error(a, r, 400, "bad_request", "malformed upgrade record", NULL);
		return;
	}
	const struct api_ws_endpoint *ep = api_ws_find(a, q.path.p, q.path.n);
	if (!ep && q.path.p && !aa_path_is(&q, "/ws/chat")) {
		api_not_found(a, r, "no such WebSocket endpoint");
		return;
	}
	if (q.origin.p && !auth_origin_allowed(a->auth, q.origin.p, q.origin.n)) {
		aa_audit_refused("origin_refused", &q, NULL);
		api_error(a, r, 403, "origin_not_allowed", "this Origin may not open WebSockets here", NULL);
		return;
	}
	if (aa_ws_credentials(a, &q, &id) < 0) {
		aa_unauthenticated(a, r);
		return;
	}
	if (ep && id.role < ep->role) {
		sodium_memzero(&id, sizeof(id));
		api_error(a, r, 403, "forbidden", "this endpoint needs the admin role", NULL);
		return;
	}
	if (auth_conn_add(a->auth, r->conn, &id) < 0) {
		sodium_memzero(&id, sizeof(id));
		api_error(a, r, 503, "overloaded", "out of memory", "Retry-After: 1");
		return;
	}
	bool v1 = q.proto.p && auth_ws_proto_offers(q.proto.p, q.proto.n, "sluice.v1");
	struct co_resp resp = { .status = 101, .action = CHAN_RESP_WS_ACCEPT,
				.header = v1 ? "Sec-WebSocket-Protocol: sluice.v1" : NULL };
	if (api_send(a, r, &resp) && ep)
		ep->opened(ep->arg, r->conn, &id);
	sodium_memzero(&id, sizeof(id));
}

bool api_auth_ws_msg(struct api *a, const struct chat_reply *r, const void *payload, uint32_t len,
		     struct auth_ident *id)
{
	bool known = auth_conn_find(a->auth, r->conn, id);
	if (known && !id->owner_only) {
		if (auth_recheck(a->auth, id) == 0)
			return true;
	} else {
		struct aa_req q;
		if (aa_parse(payload, len, &q) && aa_ws_credentials(a, &q, id) == 0 &&
		    auth_conn_add(a->auth, r->conn, id) == 0)
			return true;
	}
	memset(id, 0, sizeof(*id));
	auth_kick(a->auth, r->conn);
	auth_conn_del(a->auth, r->conn);
	return false;
}

bool api_auth_resubscribe(struct api *a, const struct chat_session *s, struct chan_conn conn)
{
	struct auth *au = a->auth;
	struct auth_ident id;
	if (auth_conn_find(au, conn, &id)) {
		int rc = auth_recheck(au, &id);
		sodium_memzero(&id, sizeof(id));
		if (rc == 0)
			return true;
		goto kick;
	}
	struct store_user u;
	if (a->st->ops->user_get(a->st, s->user, &u) < 0)
		goto kick;
	sodium_memzero(u.pwhash, sizeof(u.pwhash));
	if (u.uid != s->owner_uid)
		goto kick;
	memset(&id, 0, sizeof(id));
	memcpy(id.user, s->user, sizeof(id.user));
	id.uid = u.uid;
	id.role = u.role;
	id.owner_only = true;
	id.expires_at = au->now(au->now_arg) + (int64_t)a->conf->session_ttl_s;
	if (auth_conn_add(au, conn, &id) == 0)
		return true;
kick:
	auth_kick(au, conn);
	auth_conn_del(au, conn);
	return false;
}

void api_auth_conn_closed(struct api *a, struct chan_conn conn)
{
	auth_conn_del(a->auth, conn);
}

/*
 * Who is asking: login session tokens and API keys, their keyed hashes, CSRF
 * tokens, login throttling, and the WebSocket connections authenticated with
 * a session (so a revoked or expired session closes them with 1008).
 *
 * Tokens are 32 random bytes in base64url without padding (43 characters);
 * API keys are "sk_" + the same. Only crypto_generichash(token, key = server
 * secret) is stored, so a copy of the store does not let anyone log in. The
 * secret (32 bytes) lives in <store dir>/auth.key, created 0600 on first start.
 *
 * Single-threaded on the control loop, except the password pool (pwhash.h).
 * Never logs a token, key or password.
 */
#ifndef CONTROL_AUTH_H
#define CONTROL_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "auth/pwhash.h"
#include "channel/chan_out.h"
#include "loop/cp_loop.h"
#include "loop/timer_heap.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "store/store.h"
#include "idmap/connmap.h"
#include "idmap/hchain.h"

#define AUTH_TOKEN_LEN 43 /* base64url of 32 bytes, no padding */
#define AUTH_RAW_LEN 32
#define AUTH_APIKEY_PREFIX "sk_"
#define AUTH_APIKEY_LEN (3 + AUTH_TOKEN_LEN)
#define AUTH_SECRET_FILE "auth.key"
#define AUTH_COOKIE_NAME "sluice_session"
#define AUTH_WS_PROTO_PREFIX "sluice.auth."
#define AUTH_THROTTLE_SLOTS 4096u
#define AUTH_THROTTLE_PROBE 8u

/* Failure counting for one kind of key (user names, client addresses): a
 * fixed table, so a flood of distinct names costs no memory. A key's window
 * starts at its first failure; `limit` failures inside the window throttle it
 * until the window ends. When the probe run is full the entry with the oldest
 * window is replaced. */
struct auth_throttle_ent {
	uint64_t h; /* keyed short hash of the key; 0 = empty */
	int64_t start;
	uint32_t fails;
	uint32_t _pad;
};

struct auth_throttle {
	struct auth_throttle_ent e[AUTH_THROTTLE_SLOTS];
	uint8_t key[crypto_shorthash_KEYBYTES];
	uint32_t limit;
	uint32_t window_s;
};

enum auth_via { AUTH_VIA_NONE = 0, AUTH_VIA_BEARER, AUTH_VIA_COOKIE, AUTH_VIA_WS_PROTOCOL };

/* The outcome of authenticating a request. */
struct auth_ident {
	char user[STORE_USER_MAX];
	uint64_t uid;                 /* store_user.uid: which user of that name */
	uint8_t role;                 /* enum store_user_role, from the user record */
	bool apikey;                  /* authenticated by an API key (no session, no CSRF) */
	char key_id[STORE_KEYID_MAX]; /* the key's public id ("" for sessions): usage and limits are counted per key */
	enum auth_via via;
	uint8_t hash[STORE_HASH_LEN]; /* keyed hash of the session token or key */
	char csrf[STORE_CSRF_MAX];    /* the session's CSRF token (sessions only) */
	int64_t expires_at;           /* unix seconds; 0 for API keys */
	/* A stream re-admitted after a control restart under its conversation's
	 * owner: the credential that opened it is unknown here (hash is zero). */
	bool owner_only;
};

/* A user name shared by every stream of that user: its streams are many,
 * its name is one. Counted references (one per struct auth_conn naming
 * it), owned by struct auth's name table, freed with the last stream. */
struct auth_name {
	struct hc_link link;
	uint32_t refs;
	uint32_t hash;
	char s[]; /* NUL-terminated, at most STORE_USER_MAX - 1 characters */
};

struct auth_names {
	struct hc_table t;
};

/* What a stream keeps of the identity that opened it: struct auth_ident
 * without the session's CSRF token (a stream makes no CSRF-checked request:
 * WebSocket messages are not, and an SSE stream makes none), without the
 * API key's id (auth_recheck, which every use of a stream's identity runs
 * first, reads it again with the key's record), with the user's name shared
 * (struct auth_name) and the small fields packed. auth_conn_find expands it
 * into an auth_ident. */
struct auth_conn_ident {
	uint8_t hash[STORE_HASH_LEN]; /* keyed hash of the session token or key; zero when owner_only */
	struct auth_name *user;       /* a reference held by this entry */
	uint64_t uid;
	int64_t expires_at;
	uint8_t role;
	uint8_t via; /* enum auth_via */
	bool apikey;
	bool owner_only;
};

/* A WebSocket or SSE stream authenticated by a session or key: found by
 * its handle (the map's key), reached by a walk of the map for revocation,
 * timed for the session's expiry. One allocation per stream, owned by
 * struct auth (auth_conn_add to auth_conn_del, a kick, or auth_free). */
struct auth_conn {
	struct connmap_node node; /* first: the map hands back this pointer */
	struct th_node timer;     /* fires at expires_at (sessions only) */
	struct auth_conn_ident id;
};

/* Users whose sessions were revoked as a whole (auth_revoke_user): a session
 * created at or before `at` is refused. */
struct auth_revoked {
	char user[STORE_USER_MAX];
	int64_t at;
};

/* A login whose password check runs (auth_login.c): keyed short hashes of
 * its user name and client address. */
struct auth_login_run {
	uint64_t user, addr;
	bool used;
};

struct auth_stats {
	uint64_t logins_ok, logins_failed, logins_throttled, logins_busy;
	uint64_t logins_unfair;          /* over the user's or address's share of the pool */
	uint64_t sessions_ended_by_cap;  /* oldest sessions ended by login_max_sessions */
	uint64_t kicks, kick_drops;
	uint64_t bodies_admitted; /* request bodies the dataplane was told to read */
};

struct auth {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct store *st;
	struct chan_out *out;
	/* Unix seconds. time(NULL) unless a test injects its clock. */
	int64_t (*now)(void *arg);
	void *now_arg;
	uint8_t secret[crypto_generichash_KEYBYTES];
	char dummy_hash[STORE_PWHASH_MAX]; /* verified for unknown users: equal timing */
	struct pwh_pool pool;
	bool pool_ok;
	struct auth_throttle by_user;
	struct auth_throttle by_addr;
	/* Every admitted login, right or wrong (auth_login.c). */
	struct auth_throttle rate_user;
	struct auth_throttle rate_addr;
	struct auth_login_run running[PWH_MAX_SLOTS];
	struct connmap conns; /* struct auth_conn by handle; the entries are owned here */
	struct auth_names names; /* the user names conns point at */
	/* Expiries are wall-clock times (unix seconds), so they have their own
	 * heap and a CLOCK_REALTIME timerfd rather than the loop's monotonic
	 * timers: a clock step moves them with the sessions' expires_at. */
	struct timer_heap timers;
	int tfd; /* armed for the earliest conn expiry; -1 only before init */
	struct auth_revoked *revoked;
	uint32_t nrevoked, caprevoked;
	struct auth_stats stats;
};

/*
 * Loads or creates the server secret in conf->store, starts the password
 * pool (conf->login_max_inflight slots, conf->pwhash_ops / pwhash_mem_kib),
 * computes the dummy hash and watches the pool's and the expiry timer's fds
 * on the loop. conf, loop, st and out stay owned by the caller and must
 * outlive a. Returns 0, or -1 with err set.
 */
int auth_init(struct auth *a, const struct sluice_conf *conf, struct cp_loop *loop, struct store *st,
	      struct chan_out *out, char *err, size_t errlen);
/* Stops watching its fds, stops the pool, frees the conn map and wipes the secret. */
void auth_free(struct auth *a);

/* ---- tokens -------------------------------------------------------------- */

/* 32 fresh random bytes as base64url without padding: AUTH_TOKEN_LEN chars + NUL. */
void auth_token_new(char out[AUTH_TOKEN_LEN + 1]);
/* True when s is exactly a token (43 base64url chars) or an API key ("sk_" + 43). */
bool auth_token_wellformed(const char *s, size_t len);
/* The keyed hash under the server secret. */
void auth_token_hash(const struct auth *a, const char *tok, size_t len, uint8_t out[STORE_HASH_LEN]);
/* Constant-time comparison of a presented CSRF token with the session's. */
bool auth_csrf_ok(const char *sent, size_t sent_len, const char *expected);

/* ---- credentials in requests ------------------------------------------- */

/* The token of "Bearer <token>" (scheme case-insensitive), or NULL. */
const char *auth_bearer(const char *hdr, size_t len, size_t *tok_len);
/* The value of the sluice_session cookie in a Cookie header, or NULL. */
const char *auth_cookie(const char *hdr, size_t len, size_t *tok_len);
/* The token of a "sluice.auth.<token>" entry in Sec-WebSocket-Protocol, or NULL. */
const char *auth_ws_proto_token(const char *hdr, size_t len, size_t *tok_len);
/* True when the Sec-WebSocket-Protocol list offers `name`. */
bool auth_ws_proto_offers(const char *hdr, size_t len, const char *name);
/* True when origin is one of conf->allowed_origins (ASCII case-insensitive). */
bool auth_origin_allowed(const struct auth *a, const char *origin, size_t len);

/*
 * Looks up a session token or API key: known, not expired, not revoked, and
 * its user still exists (a session created before the user record, i.e. of
 * a deleted and re-created user, is refused). Fills id. Returns 0, or -1
 * (unknown); an expired session is deleted from the store on the way.
 */
int auth_lookup(struct auth *a, const char *tok, size_t len, struct auth_ident *id);
/* Re-checks an identity found earlier (a WebSocket message): 0 while valid.
 * For an API key it sets id->key_id again from the key's record (a stream's
 * entry does not keep it, auth_conn_find). */
int auth_recheck(struct auth *a, struct auth_ident *id);

/* ---- sessions ------------------------------------------------------------ */

/* Creates a login session for user: token and CSRF token out, auth_put with
 * done/arg. Returns 0 (done will run) or < 0. */
int auth_session_create(struct auth *a, const char *user, char token[AUTH_TOKEN_LEN + 1],
			char csrf[STORE_CSRF_MAX], int64_t *expires_at, store_done_fn done, void *arg);
/* Revokes the session with this keyed hash: deletes it from the store and
 * kicks every WebSocket opened with it. */
int auth_session_revoke(struct auth *a, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg);
/* Revokes every session of user (sluicectl users del / passwd) and kicks its
 * WebSockets. Returns the number of WebSockets kicked. */
int auth_revoke_user(struct auth *a, const char *user);

/* ---- login throttling ------------------------------------------------------ */

/* 0 when key may try now, else the seconds until it may (Retry-After). */
int64_t auth_throttle_wait(struct auth_throttle *t, const char *key, size_t len, int64_t now);
void auth_throttle_fail(struct auth_throttle *t, const char *key, size_t len, int64_t now);
void auth_throttle_reset(struct auth_throttle *t, const char *key, size_t len);

/* ---- users and keys (sluicectl, through the admin socket) ----------------- */

/* Hashes password in the pool, then user_put: create (fails -EEXIST when the
 * user exists; role -1 means user) or update (role -1 keeps it; -ENOENT when
 * missing). done(arg, err) runs on the loop. Returns 0, -EBUSY (pool full),
 * -EINVAL (bad name, role or password length) or -ENOMEM. */
int auth_set_password(struct auth *a, const char *user, const char *password, int role, bool create,
		      store_done_fn done, void *arg);
/* Creates an API key for owner (who must exist): key_out gets "sk_..." (the
 * only time the key is seen), apikey_put with done/arg. */
int auth_apikey_create(struct auth *a, const char *owner, const char *label, char key_out[64],
		       store_done_fn done, void *arg);
/* Revokes the API key with public id `id`: kicks every WebSocket and SSE
 * stream opened with it, then apikey_del with done/arg. -ENOENT when no key
 * has that id. */
int auth_apikey_revoke(struct auth *a, const char *id, store_done_fn done, void *arg);
/* True for a valid user name: [A-Za-z0-9_.-]{1,63}. */
bool auth_user_name_ok(const char *name, size_t len);

/* ---- WebSocket connections ------------------------------------------------- */

/* Remembers conn as authenticated by id (replacing an earlier entry). */
int auth_conn_add(struct auth *a, struct chan_conn conn, const struct auth_ident *id);
/* Fills id with conn's identity and returns true, or false when conn is
 * unknown. csrf and key_id are empty (not kept): run auth_recheck before
 * using it, which fills key_id for an API key. */
bool auth_conn_find(struct auth *a, struct chan_conn conn, struct auth_ident *id);
/* Forgets conn (CONN_CLOSED). */
void auth_conn_del(struct auth *a, struct chan_conn conn);
/* Sends CHAN_REC_KICK 1008 "unauthenticated" for conn. */
bool auth_kick(struct auth *a, struct chan_conn conn);
/* Kicks and forgets every conn whose session expired at `now`; re-arms the
 * timerfd. Returns the number kicked. */
uint32_t auth_expire(struct auth *a, int64_t now);

#endif

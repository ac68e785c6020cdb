#include "auth/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "sluice/common.h"
#include "sluice/log.h"

static int64_t auth_wall_now(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL);
}

/* Reads the 32-byte secret, or creates it (0600) when the file is absent. A
 * file of another size, or readable by group or others, is refused: silently
 * replacing it would log every user out, silently using it would trust a
 * secret others could have read. */
static int auth_load_secret(struct auth *a, char *err, size_t errlen)
{
	char path[CONF_PATH_MAX + sizeof(AUTH_SECRET_FILE) + 1];
	int n = snprintf(path, sizeof(path), "%s/%s", a->conf->store, AUTH_SECRET_FILE);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		snprintf(err, errlen, "store path too long for %s", AUTH_SECRET_FILE);
		return -1;
	}
	if (mkdir(a->conf->store, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", a->conf->store, strerror(errno));
		return -1;
	}
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			goto sys;
		randombytes_buf(a->secret, sizeof(a->secret));
		if (write(fd, a->secret, sizeof(a->secret)) != (ssize_t)sizeof(a->secret) || fsync(fd) < 0) {
			close(fd);
			unlink(path);
			goto sys;
		}
		close(fd);
		LOG_INFO("created a new server secret in %s", path);
		return 0;
	}
	if (fd < 0)
		goto sys;
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		close(fd);
		goto sys;
	}
	if (sb.st_size != (off_t)sizeof(a->secret) || (sb.st_mode & 077)) {
		close(fd);
		snprintf(err, errlen, "%s: must be %zu bytes with mode 0600", path, sizeof(a->secret));
		return -1;
	}
	ssize_t got = read(fd, a->secret, sizeof(a->secret));
	close(fd);
	if (got != (ssize_t)sizeof(a->secret)) {
		snprintf(err, errlen, "%s: short read", path);
		return -1;
	}
	return 0;
sys:
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return -1;
}

static void auth_throttle_init(struct auth_throttle *t, uint32_t limit, uint32_t window_s)
{
	memset(t->e, 0, sizeof(t->e));
	randombytes_buf(t->key, sizeof(t->key));
	t->limit = limit;
	t->window_s = window_s;
}

static void auth_on_pool(void *arg, int fd, uint32_t events);
static void auth_on_timer(void *arg, int fd, uint32_t events);

/* ---- the streams' user names ---------------------------------------------- */

#define AUTH_NAME(l) sluice_container_of(l, struct auth_name, link)

static uint32_t auth_name_hash(const char *s, size_t len)
{
	return (uint32_t)sluice_fnv1a64(s, len);
}

static uint64_t auth_name_node_hash(const struct hc_link *l)
{
	return AUTH_NAME(l)->hash;
}

static int auth_names_init(struct auth_names *t)
{
	return hc_init(&t->t, 64, auth_name_node_hash);
}

/* A reference to the shared copy of user (taking one more), or NULL when
 * a first copy cannot be made. */
static struct auth_name *auth_name_ref(struct auth_names *t, const char *user)
{
	size_t len = strnlen(user, STORE_USER_MAX - 1);
	uint32_t h = auth_name_hash(user, len);
	for (struct hc_link *l = hc_chain(&t->t, h); l; l = l->next) {
		struct auth_name *e = AUTH_NAME(l);
		if (e->hash == h && strncmp(e->s, user, len) == 0 && e->s[len] == 0) {
			e->refs++;
			return e;
		}
	}
	struct auth_name *e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return NULL;
	memcpy(e->s, user, len);
	e->s[len] = 0;
	e->refs = 1;
	e->hash = h;
	hc_insert(&t->t, &e->link, h);
	return e;
}

static void auth_name_unref(struct auth_names *t, struct auth_name *e)
{
	if (--e->refs > 0)
		return;
	hc_remove(&t->t, &e->link, e->hash);
	free(e);
}

int auth_init(struct auth *a, const struct sluice_conf *conf, struct cp_loop *loop, struct store *st,
	      struct chan_out *out, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	a->conf = conf;
	a->loop = loop;
	a->st = st;
	a->out = out;
	a->now = auth_wall_now;
	a->tfd = -1;
	bool conns_ok = false, timers_ok = false;
	if (auth_load_secret(a, err, errlen) < 0)
		goto fail;
	auth_throttle_init(&a->by_user, conf->login_fail_user, conf->login_window_s);
	auth_throttle_init(&a->by_addr, conf->login_fail_ip, conf->login_window_s);
	auth_throttle_init(&a->rate_user, conf->login_rate_user, conf->login_rate_window_s);
	auth_throttle_init(&a->rate_addr, conf->login_rate_ip, conf->login_rate_window_s);
	unsigned long long ops = conf->pwhash_ops;
	size_t mem = (size_t)conf->pwhash_mem_kib * 1024u;
	/* Unknown users are verified against this hash so that a wrong name
	 * costs the same Argon2id time as a wrong password. */
	uint8_t junk[AUTH_RAW_LEN];
	randombytes_buf(junk, sizeof(junk));
	int hrc = crypto_pwhash_str(a->dummy_hash, (const char *)junk, sizeof(junk), ops, mem);
	sodium_memzero(junk, sizeof(junk));
	if (hrc != 0) {
		snprintf(err, errlen, "Argon2id with pwhash_ops=%u pwhash_mem_kib=%u failed",
			 conf->pwhash_ops, conf->pwhash_mem_kib);
		goto fail;
	}
	uint32_t slots = conf->login_max_inflight;
	if (slots > PWH_MAX_SLOTS)
		slots = PWH_MAX_SLOTS;
	int rc = pwh_init(&a->pool, slots, ops, mem);
	if (rc < 0) {
		snprintf(err, errlen, "password pool: %s", strerror(-rc));
		goto fail;
	}
	a->pool_ok = true;
	if (connmap_init(&a->conns, 64) < 0 || auth_names_init(&a->names) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	conns_ok = true;
	if (th_init(&a->timers, 64) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	timers_ok = true;
	a->tfd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
	if (a->tfd < 0) {
		snprintf(err, errlen, "timerfd: %s", strerror(errno));
		goto fail;
	}
	if (cpl_add_fd(loop, pwh_fd(&a->pool), CPL_READ, auth_on_pool, a) < 0) {
		snprintf(err, errlen, "cannot watch the password pool: %s", strerror(errno));
		goto fail;
	}
	if (cpl_add_fd(loop, a->tfd, CPL_READ, auth_on_timer, a) < 0) {
		snprintf(err, errlen, "cannot watch the expiry timer: %s", strerror(errno));
		cpl_del_fd(loop, pwh_fd(&a->pool));
		goto fail;
	}
	return 0;
fail:
	if (a->tfd >= 0)
		close(a->tfd);
	a->tfd = -1;
	if (timers_ok)
		th_free(&a->timers);
	if (conns_ok)
		connmap_free(&a->conns);
	hc_free(&a->names.t);
	if (a->pool_ok)
		pwh_free(&a->pool);
	a->pool_ok = false;
	sodium_memzero(a->secret, sizeof(a->secret));
	return -1;
}

static void auth_conn_node_free(struct connmap_node *n, void *arg)
{
	struct auth *a = arg;
	struct auth_conn *c = (struct auth_conn *)n;
	auth_name_unref(&a->names, c->id.user);
	sodium_memzero(c, sizeof(*c));
	free(c);
}

void auth_free(struct auth *a)
{
	cpl_del_fd(a->loop, a->tfd);
	if (a->pool_ok) {
		cpl_del_fd(a->loop, pwh_fd(&a->pool));
		pwh_free(&a->pool);
	}
	a->pool_ok = false;
	/* The heap resets its nodes when freed: it goes before the conns. */
	th_free(&a->timers);
	connmap_foreach(&a->conns, auth_conn_node_free, a);
	connmap_free(&a->conns);
	/* Every name went with its last conn. */
	hc_free(&a->names.t);
	if (a->tfd >= 0)
		close(a->tfd);
	a->tfd = -1;
	free(a->revoked);
	a->revoked = NULL;
	sodium_memzero(a->secret, sizeof(a->secret));
}

/* ---- tokens -------------------------------------------------------------- */

void auth_token_new(char out[AUTH_TOKEN_LEN + 1])
{
	uint8_t raw[AUTH_RAW_LEN];
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(out, AUTH_TOKEN_LEN + 1, raw, sizeof(raw),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(raw, sizeof(raw));
}

static bool auth_b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

bool auth_token_wellformed(const char *s, size_t len)
{
	if (len == AUTH_APIKEY_LEN && memcmp(s, AUTH_APIKEY_PREFIX, 3) == 0) {
		s += 3;
		len -= 3;
	}
	if (len != AUTH_TOKEN_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!auth_b64url_char(s[i]))
			return false;
	/* 43 characters carry 258 bits: the last one holds the final 4 bits of
	 * the 32 bytes and 2 zero bits. A token with other padding bits would
	 * decode to the same bytes, and accepting it would make two spellings
	 * of one token valid. */
	static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *last = strchr(b64url, s[len - 1]);
	return ((last - b64url) & 3) == 0;
}

void auth_token_hash(const struct auth *a, const char *tok, size_t len, uint8_t out[STORE_HASH_LEN])
{
	crypto_generichash(out, STORE_HASH_LEN, (const unsigned char *)tok, len, a->secret,
			   sizeof(a->secret));
}

bool auth_csrf_ok(const char *sent, size_t sent_len, const char *expected)
{
	size_t el = strnlen(expected, STORE_CSRF_MAX);
	if (el == 0 || sent == NULL || sent_len != el)
		return false;
	return sodium_memcmp(sent, expected, el) == 0;
}

/* ---- credentials in requests ------------------------------------------- */

static bool auth_ows(char c)
{
	return c == ' ' || c == '\t';
}

const char *auth_bearer(const char *hdr, size_t len, size_t *tok_len)
{
	if (!hdr || len < 7 || strncasecmp(hdr, "Bearer", 6) != 0 || !auth_ows(hdr[6]))
		return NULL;
	size_t i = 6;
	while (i < len && auth_ows(hdr[i]))
		i++;
	size_t e = len;
	while (e > i && auth_ows(hdr[e - 1]))
		e--;
	if (e == i)
		return NULL;
	*tok_len = e - i;
	return hdr + i;
}

const char *auth_cookie(const char *hdr, size_t len, size_t *tok_len)
{
	static const char name[] = AUTH_COOKIE_NAME "=";
	const size_t nl = sizeof(name) - 1;
	size_t i = 0;
	while (hdr && i < len) {
		while (i < len && (auth_ows(hdr[i]) || hdr[i] == ';'))
			i++;
		size_t e = i;
		while (e < len && hdr[e] != ';')
			e++;
		if (e - i > nl && memcmp(hdr + i, name, nl) == 0) {
			size_t ve = e;
			while (ve > i + nl && auth_ows(hdr[ve - 1]))
				ve--;
			*tok_len = ve - i - nl;
			return hdr + i + nl;
		}
		i = e;
	}
	return NULL;
}

/* Calls fn on each trimmed comma-separated entry; stops when fn returns true. */
static const char *auth_proto_each(const char *hdr, size_t len, size_t *out_len,
				   bool (*fn)(const char *p, size_t n, void *arg), void *arg)
{
	size_t i = 0;
	while (hdr && i < len) {
		while (i < len && (auth_ows(hdr[i]) || hdr[i] == ','))
			i++;
		size_t e = i;
		while (e < len && hdr[e] != ',')
			e++;
		size_t te = e;
		while (te > i && auth_ows(hdr[te - 1]))
			te--;
		if (te > i && fn(hdr + i, te - i, arg)) {
			*out_len = te - i;
			return hdr + i;
		}
		i = e;
	}
	return NULL;
}

static bool auth_proto_is_token(const char *p, size_t n, void *arg)
{
	(void)arg;
	size_t pl = sizeof(AUTH_WS_PROTO_PREFIX) - 1;
	return n > pl && memcmp(p, AUTH_WS_PROTO_PREFIX, pl) == 0;
}

static bool auth_proto_is(const char *p, size_t n, void *arg)
{
	const char *name = arg;
	return strlen(name) == n && memcmp(p, name, n) == 0;
}

const char *auth_ws_proto_token(const char *hdr, size_t len, size_t *tok_len)
{
	size_t n;
	const char *p = auth_proto_each(hdr, len, &n, auth_proto_is_token, NULL);
	if (!p)
		return NULL;
	size_t pl = sizeof(AUTH_WS_PROTO_PREFIX) - 1;
	*tok_len = n - pl;
	return p + pl;
}

bool auth_ws_proto_offers(const char *hdr, size_t len, const char *name)
{
	size_t n;
	return auth_proto_each(hdr, len, &n, auth_proto_is, (void *)name) != NULL;
}

bool auth_origin_allowed(const struct auth *a, const char *origin, size_t len)
{
	for (uint32_t i = 0; i < a->conf->norigins; i++) {
		const char *o = a->conf->allowed_origins[i];
		if (strlen(o) == len && strncasecmp(o, origin, len) == 0)
			return true;
	}
	return false;
}

/* ---- lookups ------------------------------------------------------------- */

/* Completion of a store write nobody answers for (cleanup of expired sessions). */
static void auth_ignore(void *arg, int err)
{
	(void)arg;
	if (err)
		LOG_DEBUG("auth: background store write failed (%d)", err);
}

static int64_t auth_revoked_at(const struct auth *a, const char *user)
{
	for (uint32_t i = 0; i < a->nrevoked; i++)
		if (strcmp(a->revoked[i].user, user) == 0)
			return a->revoked[i].at;
	return INT64_MIN;
}

/* The user behind a credential must still exist and have been created no
 * later than the credential: a deleted user's sessions and keys die with it,
 * even across a restart, and a re-created name does not inherit them. An
 * identity found earlier (id->uid set) must still be that same user. */
static int auth_user_check(struct auth *a, struct auth_ident *id, int64_t created_at)
{
	struct store_user u;
	if (a->st->ops->user_get(a->st, id->user, &u) < 0)
		return -1;
	sodium_memzero(u.pwhash, sizeof(u.pwhash));
	if (created_at < u.created_at || (id->uid && id->uid != u.uid))
		return -1;
	id->role = u.role;
	id->uid = u.uid;
	return 0;
}

int auth_lookup(struct auth *a, const char *tok, size_t len, struct auth_ident *id)
{
	memset(id, 0, sizeof(*id));
	if (!tok || !auth_token_wellformed(tok, len))
		return -1;
	auth_token_hash(a, tok, len, id->hash);
	int64_t now = a->now(a->now_arg);
	if (len == AUTH_APIKEY_LEN) {
		struct store_apikey k;
		if (a->st->ops->apikey_get(a->st, id->hash, &k) < 0)
			return -1;
		memcpy(id->user, k.owner, sizeof(id->user));
		id->user[sizeof(id->user) - 1] = 0;
		memcpy(id->key_id, k.id, sizeof(id->key_id));
		id->key_id[sizeof(id->key_id) - 1] = 0;
		id->apikey = true;
		return auth_user_check(a, id, k.created_at);
	}
	struct store_auth s;
	if (a->st->ops->auth_get(a->st, id->hash, &s) < 0)
		return -1;
	memcpy(id->user, s.user, sizeof(id->user));
	id->user[sizeof(id->user) - 1] = 0;
	memcpy(id->csrf, s.csrf, sizeof(id->csrf));
	id->csrf[sizeof(id->csrf) - 1] = 0;
	id->expires_at = s.expires_at;
	int64_t created = s.created_at;
	sodium_memzero(&s, sizeof(s));
	if (now >= id->expires_at) {
		/* Nobody waits for this delete; a failure only leaves garbage
		 * that the next lookup tries to remove again. */
		a->st->ops->auth_del(a->st, id->hash, auth_ignore, NULL);
		return -1;
	}
	if (created <= auth_revoked_at(a, id->user))
		return -1;
	return auth_user_check(a, id, created);
}

int auth_recheck(struct auth *a, struct auth_ident *id)
{
	struct auth_ident cur;
	memset(&cur, 0, sizeof(cur));
	memcpy(cur.user, id->user, sizeof(cur.user));
	cur.uid = id->uid;
	if (id->owner_only)
		return auth_user_check(a, &cur, INT64_MAX);
	if (id->apikey) {
		struct store_apikey k;
		if (a->st->ops->apikey_get(a->st, id->hash, &k) < 0)
			return -1;
		memcpy(id->key_id, k.id, sizeof(id->key_id));
		id->key_id[sizeof(id->key_id) - 1] = 0;
		return auth_user_check(a, &cur, k.created_at);
	}
	struct store_auth s;
	if (a->st->ops->auth_get(a->st, id->hash, &s) < 0)
		return -1;
	int64_t created = s.created_at, exp = s.expires_at;
	sodium_memzero(&s, sizeof(s));
	if (a->now(a->now_arg) >= exp || created <= auth_revoked_at(a, id->user))
		return -1;
	return auth_user_check(a, &cur, created);
}

/* ---- sessions ------------------------------------------------------------ */

int auth_session_create(struct auth *a, const char *user, char token[AUTH_TOKEN_LEN + 1],
			char csrf[STORE_CSRF_MAX], int64_t *expires_at, store_done_fn done, void *arg)
{
	struct store_auth s;
	memset(&s, 0, sizeof(s));
	size_t ul = strnlen(user, STORE_USER_MAX);
	if (ul == 0 || ul == STORE_USER_MAX)
		return -EINVAL;
	memcpy(s.user, user, ul);
	auth_token_new(token);
	auth_token_new(csrf);
	auth_token_hash(a, token, AUTH_TOKEN_LEN, s.hash);
	memcpy(s.csrf, csrf, AUTH_TOKEN_LEN + 1);
	s.created_at = a->now(a->now_arg);
	/* A user-wide revocation refuses sessions created up to its second; a
	 * login right after it must not fall into that second. */
	int64_t rev = auth_revoked_at(a, user);
	if (s.created_at <= rev)
		s.created_at = rev + 1;
	s.expires_at = s.created_at + (int64_t)a->conf->session_ttl_s;
	*expires_at = s.expires_at;
	int rc = a->st->ops->auth_put(a->st, &s, done, arg);
	sodium_memzero(&s, sizeof(s));
	if (rc < 0) {
		sodium_memzero(token, AUTH_TOKEN_LEN + 1);
		sodium_memzero(csrf, STORE_CSRF_MAX);
	}
	return rc;
}

static void auth_conn_unlink(struct auth *a, struct auth_conn *c)
{
	connmap_remove(&a->conns, &c->node);
	auth_name_unref(&a->names, c->id.user);
	th_cancel(&a->timers, &c->timer);
	sodium_memzero(c, sizeof(*c));
	free(c);
}

struct auth_match {
	struct auth *a;
	const uint8_t *hash;
	const char *user;
	int n;
};

static void auth_kick_one(struct connmap_node *node, void *arg)
{
	struct auth_match *m = arg;
	struct auth_conn *c = (struct auth_conn *)node;
	bool hit = m->hash ? sodium_memcmp(c->id.hash, m->hash, STORE_HASH_LEN) == 0
			   : m->user && strcmp(c->id.user->s, m->user) == 0;
	if (hit) {
		auth_kick(m->a, c->node.conn);
		auth_conn_unlink(m->a, c);
		m->n++;
	}
}

/* Kicks and forgets every conn matching hash (when given) or user. A walk
 * of the map rather than a list of its own: revocations are rare, and two
 * list links in every stream's entry would cost more than the walk. */
static int auth_kick_matching(struct auth *a, const uint8_t *hash, const char *user)
{
	struct auth_match m = { .a = a, .hash = hash, .user = user };
	connmap_foreach(&a->conns, auth_kick_one, &m);
	return m.n;
}

int auth_session_revoke(struct auth *a, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg)
{
	auth_kick_matching(a, hash, NULL);
	return a->st->ops->auth_del(a->st, hash, done, arg);
}

int auth_revoke_user(struct auth *a, const char *user)
{
	int64_t now = a->now(a->now_arg);
	uint32_t keep = 0;
	bool found = false;
	/* Entries older than a session lifetime guard nothing any more: every
	 * session they refuse has expired by now. */
	for (uint32_t i = 0; i < a->nrevoked; i++) {
		struct auth_revoked *r = &a->revoked[i];
		if (strcmp(r->user, user) == 0) {
			r->at = now;
			found = true;
		} else if (r->at + (int64_t)a->conf->session_ttl_s < now) {
			continue;
		}
		a->revoked[keep++] = *r;
	}
	a->nrevoked = keep;
	size_t ul = strnlen(user, STORE_USER_MAX);
	if (!found && ul > 0 && ul < STORE_USER_MAX) {
		if (a->nrevoked == a->caprevoked) {
			uint32_t cap = a->caprevoked ? a->caprevoked * 2 : 8;
			struct auth_revoked *v = realloc(a->revoked, cap * sizeof(*v));
			if (!v)
				return -ENOMEM;
			a->revoked = v;
			a->caprevoked = cap;
		}
		struct auth_revoked *r = &a->revoked[a->nrevoked++];
		memset(r, 0, sizeof(*r));
		memcpy(r->user, user, ul);
		r->at = now;
	}
	return auth_kick_matching(a, NULL, user);
}

/* ---- login throttling ------------------------------------------------------ */

static uint64_t auth_throttle_key(const struct auth_throttle *t, const char *key, size_t len)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, len, t->key);
	return h ? h : 1;
}

/* The entry of h, or (create) a slot for it: an empty or lapsed one in the
 * probe run, else the one whose window started first. */
static struct auth_throttle_ent *auth_throttle_slot(struct auth_throttle *t, uint64_t h, int64_t now,
						    bool create)
{
	struct auth_throttle_ent *victim = NULL;
	bool victim_lapsed = false;
	for (uint32_t i = 0; i < AUTH_THROTTLE_PROBE; i++) {
		struct auth_throttle_ent *e = &t->e[(h + i) % AUTH_THROTTLE_SLOTS];
		if (e->h == h)
			return e;
		if (!create || victim_lapsed)
			continue;
		if (e->h == 0 || now >= e->start + (int64_t)t->window_s) {
			victim = e;
			victim_lapsed = true;
		} else if (!victim || e->start < victim->start) {
			victim = e;
		}
	}
	if (victim) {
		victim->h = h;
		victim->start = now;
		victim->fails = 0;
	}
	return victim;
}

int64_t auth_throttle_wait(struct auth_throttle *t, const char *key, size_t len, int64_t now)
{
	if (t->limit == 0)
		return 0;
	struct auth_throttle_ent *e = auth_throttle_slot(t, auth_throttle_key(t, key, len), now, false);
	if (!e || e->fails < t->limit)
		return 0;
	int64_t end = e->start + (int64_t)t->window_s;
	return now < end ? end - now : 0;
}

void auth_throttle_fail(struct auth_throttle *t, const char *key, size_t len, int64_t now)
{
	struct auth_throttle_ent *e = auth_throttle_slot(t, auth_throttle_key(t, key, len), now, true);
	if (now >= e->start + (int64_t)t->window_s) {
		e->start = now;
		e->fails = 0;
	}
	e->fails++;
}

void auth_throttle_reset(struct auth_throttle *t, const char *key, size_t len)
{
	struct auth_throttle_ent *e = auth_throttle_slot(t, auth_throttle_key(t, key, len), 0, false);
	if (e)
		memset(e, 0, sizeof(*e));
}

/* ---- users and keys ---------------------------------------------------------- */

bool auth_user_name_ok(const char *name, size_t len)
{
	if (len == 0 || len >= STORE_USER_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* A password change or user creation waiting for its hash. */
struct auth_pw_op {
	struct auth *a;
	char user[STORE_USER_MAX];
	int role;
	bool create;
	store_done_fn done;
	void *arg;
};

static void auth_pw_hashed(void *arg, const struct pwh_job *j)
{
	struct auth_pw_op *op = arg;
	struct auth *a = op->a;
	struct store_user u;
	memset(&u, 0, sizeof(u));
	int rc = j->rc;
	if (rc == 0 && !op->create) {
		rc = a->st->ops->user_get(a->st, op->user, &u);
		if (rc > 0)
			rc = 0;
	}
	if (rc == 0) {
		memcpy(u.name, op->user, sizeof(u.name));
		memcpy(u.pwhash, j->hash, sizeof(u.pwhash));
		if (op->create) {
			u.role = op->role < 0 ? STORE_USER_ROLE_USER : (uint8_t)op->role;
			u.created_at = a->now(a->now_arg);
		} else if (op->role >= 0) {
			u.role = (uint8_t)op->role;
		}
		rc = a->st->ops->user_put(a->st, &u, op->create, op->done, op->arg);
	}
	sodium_memzero(&u, sizeof(u));
	if (rc < 0)
		op->done(op->arg, rc);
	free(op);
}

int auth_set_password(struct auth *a, const char *user, const char *password, int role, bool create,
		      store_done_fn done, void *arg)
{
	size_t ul = strnlen(user, STORE_USER_MAX);
	size_t pl = strlen(password);
	if (!auth_user_name_ok(user, ul) || role < -1 || role > STORE_USER_ROLE_ADMIN || pl == 0 ||
	    pl >= PWH_PASSWORD_MAX)
		return -EINVAL;
	struct auth_pw_op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->a = a;
	memcpy(op->user, user, ul);
	op->role = role;
	op->create = create;
	op->done = done;
	op->arg = arg;
	int rc = pwh_submit_hash(&a->pool, password, pl, auth_pw_hashed, op);
	if (rc < 0)
		free(op);
	return rc;
}

int auth_apikey_create(struct auth *a, const char *owner, const char *label, char key_out[64],
		       store_done_fn done, void *arg)
{
	struct store_apikey k;
	memset(&k, 0, sizeof(k));
	size_t ol = strnlen(owner, STORE_USER_MAX);
	size_t ll = label ? strlen(label) : 0;
	if (!auth_user_name_ok(owner, ol) || ll >= sizeof(k.label))
		return -EINVAL;
	struct store_user u;
	int rc = a->st->ops->user_get(a->st, owner, &u);
	sodium_memzero(&u, sizeof(u));
	if (rc < 0)
		return -ENOENT;
	memcpy(k.owner, owner, ol);
	if (ll)
		memcpy(k.label, label, ll);
	uint8_t idraw[8];
	randombytes_buf(idraw, sizeof(idraw));
	memcpy(k.id, "k_", 2);
	sodium_bin2hex(k.id + 2, sizeof(k.id) - 2, idraw, sizeof(idraw));
	memcpy(key_out, AUTH_APIKEY_PREFIX, 3);
	auth_token_new(key_out + 3);
	auth_token_hash(a, key_out, AUTH_APIKEY_LEN, k.hash);
	k.created_at = a->now(a->now_arg);
	rc = a->st->ops->apikey_put(a->st, &k, done, arg);
	if (rc < 0)
		sodium_memzero(key_out, 64);
	return rc;
}

struct auth_key_find {
	const char *id;
	uint8_t hash[STORE_HASH_LEN];
	bool found;
};

static void auth_key_match(void *arg, const struct store_apikey *k)
{
	struct auth_key_find *x = arg;
	if (!x->found && strcmp(k->id, x->id) == 0) {
		memcpy(x->hash, k->hash, sizeof(x->hash));
		x->found = true;
	}
}

int auth_apikey_revoke(struct auth *a, const char *id, store_done_fn done, void *arg)
{
	struct auth_key_find x = { .id = id };
	int rc = a->st->ops->apikey_list(a->st, NULL, auth_key_match, &x);
	if (rc < 0)
		return rc;
	if (!x.found)
		return -ENOENT;
	auth_kick_matching(a, x.hash, NULL);
	return a->st->ops->apikey_del(a->st, id, done, arg);
}

/* ---- WebSocket connections ------------------------------------------------- */

static struct auth_conn *auth_conn_get(struct auth *a, struct chan_conn conn)
{
	return (struct auth_conn *)connmap_find(&a->conns, conn);
}

/* Arms the timerfd for the earliest expiry, or disarms it. */
static void auth_rearm(struct auth *a)
{
	struct itimerspec it;
	memset(&it, 0, sizeof(it));
	const struct th_node *t = th_peek(&a->timers);
	if (t) {
		it.it_value.tv_sec = (time_t)(t->deadline_ns / 1000000000ull);
		it.it_value.tv_nsec = (long)(t->deadline_ns % 1000000000ull);
	}
	if (timerfd_settime(a->tfd, TFD_TIMER_ABSTIME, &it, NULL) < 0)
		LOG_WARN("auth: cannot arm the expiry timer: %s", strerror(errno));
}

int auth_conn_add(struct auth *a, struct chan_conn conn, const struct auth_ident *id)
{
	struct auth_conn *old = auth_conn_get(a, conn);
	if (old)
		auth_conn_unlink(a, old);
	struct auth_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	th_node_init(&c->timer);
	struct auth_conn_ident *k = &c->id;
	k->user = auth_name_ref(&a->names, id->user);
	if (!k->user) {
		free(c);
		return -ENOMEM;
	}
	memcpy(k->hash, id->hash, sizeof(k->hash));
	k->uid = id->uid;
	k->expires_at = id->expires_at;
	k->role = id->role;
	k->via = (uint8_t)id->via;
	k->apikey = id->apikey;
	k->owner_only = id->owner_only;
	/* Cannot fail: an entry of conn was unlinked above. */
	connmap_insert(&a->conns, &c->node, conn);
	if (id->expires_at > 0 &&
	    th_schedule(&a->timers, &c->timer, (uint64_t)id->expires_at * 1000000000ull) < 0) {
		connmap_remove(&a->conns, &c->node);
		auth_name_unref(&a->names, k->user);
		sodium_memzero(c, sizeof(*c));
		free(c);
		return -ENOMEM;
	}
	auth_rearm(a);
	return 0;
}

bool auth_conn_find(struct auth *a, struct chan_conn conn, struct auth_ident *id)
{
	struct auth_conn *c = auth_conn_get(a, conn);
	memset(id, 0, sizeof(*id));
	if (!c)
		return false;
	const struct auth_conn_ident *k = &c->id;
	memcpy(id->hash, k->hash, sizeof(id->hash));
	memcpy(id->user, k->user->s, strlen(k->user->s) + 1);
	id->uid = k->uid;
	id->expires_at = k->expires_at;
	id->role = k->role;
	id->via = (enum auth_via)k->via;
	id->apikey = k->apikey;
	id->owner_only = k->owner_only;
	return true;
}

void auth_conn_del(struct auth *a, struct chan_conn conn)
{
	struct auth_conn *c = auth_conn_get(a, conn);
	if (c) {
		auth_conn_unlink(a, c);
		auth_rearm(a);
	}
}

bool auth_kick(struct auth *a, struct chan_conn conn)
{
	if (conn.worker >= a->out->nworkers) {
		a->stats.kick_drops++;
		return false;
	}
	struct chan_kick *k = co_begin(a->out, conn.worker, CHAN_REC_KICK, sizeof(*k));
	if (!k) {
		a->stats.kick_drops++;
		LOG_WARN("auth: kick for worker %u dropped: channel full", conn.worker);
		return false;
	}
	memset(k, 0, sizeof(*k));
	k->conn = conn;
	k->code = 1008;
	memcpy(k->reason_code, "unauthenticated", sizeof("unauthenticated"));
	memcpy(k->reason, "the login session ended", sizeof("the login session ended"));
	co_end(a->out, conn.worker, sizeof(*k));
	a->stats.kicks++;
	return true;
}

uint32_t auth_expire(struct auth *a, int64_t now)
{
	uint32_t n = 0;
	struct th_node *t;
	while ((t = th_pop_due(&a->timers, (uint64_t)now * 1000000000ull)) != NULL) {
		struct auth_conn *c = (struct auth_conn *)((char *)t - offsetof(struct auth_conn, timer));
		auth_kick(a, c->node.conn);
		auth_conn_unlink(a, c);
		n++;
	}
	auth_rearm(a);
	return n;
}

static void auth_on_pool(void *arg, int fd, uint32_t events)
{
	struct auth *a = arg;
	(void)fd;
	(void)events;
	pwh_drain(&a->pool);
}

static void auth_on_timer(void *arg, int fd, uint32_t events)
{
	struct auth *a = arg;
	uint64_t ticks;
	(void)fd;
	(void)events;
	/* EAGAIN: a re-arm raced the expiry; the scan below is what matters. */
	if (read(a->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		LOG_WARN("auth: expiry timer read: %s", strerror(errno));
	auth_expire(a, a->now(a->now_arg));
}

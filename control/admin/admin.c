/*
 * The admin socket server: listening, clients, request framing, the command
 * tables of the families (admin_cmd_*.c), the shared answer helpers, the
 * timer and the STATS/CONNS record handlers.
 */
#include "admin/admin_int.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "sluice/common.h"
#include "sluice/log.h"

static void adm_process(struct admin *ad, struct adm_client *cl);

/* ---- output ------------------------------------------------------------ */

static void adm_client_release(struct adm_client *cl)
{
	free(cl->out);
	json_decref(cl->conns);
	struct admin *ad = cl->ad;
	sodium_memzero(cl, sizeof(*cl));
	cl->ad = ad;
	cl->fd = -1;
}

/* Stops reading and closes the socket; the slot stays taken while an answer
 * is pending, so its completion finds a valid (closed) client. */
static void adm_client_close(struct admin *ad, struct adm_client *cl)
{
	if (cl->fd >= 0) {
		cpl_del_fd(ad->d.loop, cl->fd);
		close(cl->fd);
		cl->fd = -1;
	}
	if (!cl->busy)
		adm_client_release(cl);
}

/* Sends what the socket takes now; the timer retries the rest. */
static void adm_flush(struct admin *ad, struct adm_client *cl)
{
	if (cl->fd < 0)
		return;
	while (cl->outoff < cl->outlen) {
		ssize_t n = send(cl->fd, cl->out + cl->outoff, cl->outlen - cl->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			adm_client_close(ad, cl);
			return;
		}
		cl->outoff += (size_t)n;
		cl->out_since_ns = sluice_now_ns();
	}
	cl->outoff = cl->outlen = 0;
	if (cl->closing && !cl->busy)
		adm_client_close(ad, cl);
}

static bool adm_out_append(struct adm_client *cl, const char *data, size_t len)
{
	if (cl->outoff == cl->outlen)
		cl->outoff = cl->outlen = 0;
	size_t need = cl->outlen + len;
	if (need > ADM_OUT_MAX)
		return false;
	if (need > cl->outcap) {
		size_t cap = cl->outcap ? cl->outcap : 4096;
		while (cap < need)
			cap *= 2;
		if (cap > ADM_OUT_MAX)
			cap = ADM_OUT_MAX;
		char *p = realloc(cl->out, cap);
		if (!p)
			return false;
		cl->out = p;
		cl->outcap = cap;
	}
	if (cl->outlen == 0)
		cl->out_since_ns = sluice_now_ns();
	memcpy(cl->out + cl->outlen, data, len);
	cl->outlen += len;
	return true;
}

/* Queues obj (taking the reference) as one answer line. An answer that cannot
 * be built or queued closes the client: it must never see a truncated line. */
void adm_send(struct adm_client *cl, json_t *obj)
{
	char *txt = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!txt || !adm_out_append(cl, txt, strlen(txt)) || !adm_out_append(cl, "\n", 1)) {
		LOG_WARN("admin: answer for a client could not be queued: closing it");
		free(txt);
		cl->closing = true;
		cl->outoff = cl->outlen = 0;
		return;
	}
	free(txt);
}

json_t *adm_ok(void)
{
	return json_pack("{s:b}", "ok", 1);
}

void adm_fail(struct admin *ad, struct adm_client *cl, const char *code, const char *msg)
{
	ad->n.errors++;
	adm_send(cl, json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", msg));
}

/* Store and hashing-pool errors as answer codes. */
static const char *adm_err_code(int err)
{
	switch (err) {
	case -EEXIST:
	case -ENOTEMPTY:
		return "exists";
	case -ENOENT:
		return "not_found";
	case -EINVAL:
		return "invalid_request";
	case -EBUSY:
		return "busy";
	case -ENOTSUP:
		return "not_supported";
	case -ENOSPC:
		return "no_space";
	default:
		return "internal";
	}
}

void adm_fail_errno(struct admin *ad, struct adm_client *cl, int err, const char *what)
{
	char msg[CONF_PATH_MAX + 128];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(err < 0 ? -err : err));
	adm_fail(ad, cl, adm_err_code(err), msg);
}

/* An asynchronous answer arrived: send it and go on with queued requests, or
 * free the slot when the client hung up meanwhile. */
void adm_async_done(struct admin *ad, struct adm_client *cl)
{
	cl->busy = false;
	cl->op = NULL;
	if (cl->fd < 0) {
		adm_client_release(cl);
		return;
	}
	adm_process(ad, cl);
	adm_arm(ad);
}

/* Call before submitting an asynchronous operation about target (NULL: none
 * yet): cl is busy, so its later requests wait, until adm_async_done. */
void adm_async_begin(struct adm_client *cl, const char *target, const char *op)
{
	if (target)
		snprintf(cl->target, sizeof(cl->target), "%s", target);
	cl->op = op;
	cl->busy = true;
}

/* The submission returned rc. A refused one (rc < 0) will never call back, so
 * cl is free again and the error about `what` is the answer. */
void adm_async_submitted(struct admin *ad, struct adm_client *cl, int rc, const char *what)
{
	if (rc >= 0)
		return;
	cl->busy = false;
	cl->op = NULL;
	adm_fail_errno(ad, cl, rc, what);
}

/* ---- request arguments --------------------------------------------------- */

const char *adm_arg_str(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

bool adm_arg_uint(json_t *req, const char *key, uint64_t lo, uint64_t hi, uint64_t *out)
{
	json_t *v = json_object_get(req, key);
	if (!v)
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < lo || (uint64_t)json_integer_value(v) > hi)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

bool adm_user_ok(const char *u)
{
	return u && auth_user_name_ok(u, strlen(u));
}

bool adm_sid_ok(const char *sid)
{
	return sid && sid[0] && strlen(sid) < CHAN_ID_LEN;
}

/* ---- requests ------------------------------------------------------------- */

static const struct adm_cmd *const adm_families[] = {
	adm_status_cmds, adm_sessions_cmds, adm_users_cmds, adm_keys_cmds, adm_store_cmds,
	adm_backends_cmds, adm_limits_cmds, adm_config_cmds,
};

static const struct adm_cmd *adm_find(const char *name)
{
	for (size_t f = 0; f < SLUICE_ARRAY_LEN(adm_families); f++)
		for (const struct adm_cmd *c = adm_families[f]; c->name; c++)
			if (strcmp(c->name, name) == 0)
				return c;
	return NULL;
}

/* Drops n bytes from the front of the input and wipes what moved, since the
 * input may have held a password. */
static void adm_consume(struct adm_client *cl, size_t n)
{
	memmove(cl->in, cl->in + n, cl->inlen - n);
	sodium_memzero(cl->in + cl->inlen - n, n);
	cl->inlen -= n;
}

/* Every command a client sends, before it runs, with who sent it; lines
 * without a cmd are counted as errors, not audited. */
static void adm_audit_command(const struct adm_client *cl, const char *cmd)
{
	if (cmd)
		log_audit("admin_command", "cmd", cmd, "uid", cl->uid, "pid", cl->pid, NULL);
}

/* Handles one complete request at the front of the input. Returns false when
 * it needs more input (the password line has not arrived yet). */
static bool adm_handle(struct admin *ad, struct adm_client *cl, size_t nl)
{
	json_error_t jerr;
	json_t *req = json_loadb(cl->in, nl, 0, &jerr);
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	bool pw_add = cmd && strcmp(cmd, "users.add") == 0;
	bool pw_set = cmd && strcmp(cmd, "users.passwd") == 0;
	if (pw_add || pw_set) {
		char *end = memchr(cl->in + nl + 1, '\n', cl->inlen - nl - 1);
		if (!end) {
			json_decref(req);
			return false;
		}
		size_t pwlen = (size_t)(end - (cl->in + nl + 1));
		adm_audit_command(cl, cmd);
		ad->n.requests++;
		adm_users_set_password(ad, cl, req, cl->in + nl + 1, pwlen, pw_add);
		json_decref(req);
		adm_consume(cl, (size_t)(end - cl->in) + 1);
		return true;
	}
	adm_audit_command(cl, cmd);
	ad->n.requests++;
	if (!json_is_object(req)) {
		adm_fail(ad, cl, "invalid_json", "a request is one JSON object per line");
	} else if (!cmd) {
		adm_fail(ad, cl, "invalid_request", "the request has no cmd");
	} else {
		const struct adm_cmd *c = adm_find(cmd);
		if (c)
			c->fn(ad, cl, req);
		else
			adm_fail(ad, cl, "unknown_command", "no such command");
	}
	json_decref(req);
	adm_consume(cl, nl + 1);
	return true;
}

static void adm_process(struct admin *ad, struct adm_client *cl)
{
	while (cl->fd >= 0 && !cl->busy && !cl->closing) {
		char *nl = memchr(cl->in, '\n', cl->inlen);
		if (!nl || !adm_handle(ad, cl, (size_t)(nl - cl->in)))
			break;
	}
	if (cl->fd >= 0 && !cl->closing && cl->inlen == sizeof(cl->in) && !cl->busy) {
		adm_fail(ad, cl, "request_too_large", "a request line is longer than 4096 bytes");
		cl->closing = true;
	}
	/* After a half-close, the requests before it are still answered. */
	if (cl->eof && !cl->busy)
		cl->closing = true;
	if (cl->closing && cl->fd >= 0)
		cpl_del_fd(ad->d.loop, cl->fd);
	adm_flush(ad, cl);
}

static void adm_client_readable(void *arg, int fd, uint32_t events)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	(void)fd;
	(void)events;
	if (cl->fd < 0 || cl->closing)
		return;
	if (cl->inlen == sizeof(cl->in)) {
		/* Full while a request is pending: a client may not queue more
		 * than one line's worth behind it. */
		adm_fail(ad, cl, "request_too_large", "too many bytes queued behind a pending request");
		cl->closing = true;
		cpl_del_fd(ad->d.loop, cl->fd);
		adm_flush(ad, cl);
		adm_arm(ad);
		return;
	}
	ssize_t n = recv(cl->fd, cl->in + cl->inlen, sizeof(cl->in) - cl->inlen, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n < 0) {
		adm_client_close(ad, cl);
		return;
	}
	if (n == 0) {
		cl->eof = true;
		cpl_del_fd(ad->d.loop, cl->fd);
	}
	cl->inlen += (size_t)n;
	adm_process(ad, cl);
	adm_arm(ad);
}

/* Who connected, for the audit lines of its commands: the kernel's word
 * (SO_PEERCRED), not anything the client says. "?" when it cannot say. */
static void adm_peer_cred(struct adm_client *cl)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	if (getsockopt(cl->fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0 && len == sizeof(uc)) {
		snprintf(cl->uid, sizeof(cl->uid), "%u", (unsigned)uc.uid);
		snprintf(cl->pid, sizeof(cl->pid), "%d", (int)uc.pid);
	} else {
		snprintf(cl->uid, sizeof(cl->uid), "?");
		snprintf(cl->pid, sizeof(cl->pid), "?");
	}
}

static void adm_accept(void *arg, int lfd, uint32_t events)
{
	struct admin *ad = arg;
	(void)lfd;
	(void)events;
	for (;;) {
		int fd = accept4(ad->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				LOG_WARN("admin: accept: %s", strerror(errno));
			return;
		}
		struct adm_client *cl = NULL;
		for (uint32_t i = 0; i < ADM_MAX_CLIENTS && !cl; i++)
			if (!ad->cl[i].used)
				cl = &ad->cl[i];
		if (!cl || cpl_add_fd(ad->d.loop, fd, CPL_READ, adm_client_readable, cl) < 0) {
			static const char busy[] =
				"{\"ok\":false,\"error\":{\"code\":\"busy\",\"message\":\"too many admin clients\"}}\n";
			ad->n.clients_refused++;
			if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				LOG_DEBUG("admin: refusing a client: %s", strerror(errno));
			close(fd);
			continue;
		}
		cl->used = true;
		cl->fd = fd;
		ad->n.clients++;
		adm_peer_cred(cl);
	}
}

/* ---- timer: conns deadlines, write retries -------------------------------- */

void adm_arm(struct admin *ad)
{
	uint64_t next = UINT64_MAX;
	uint64_t now = sluice_now_ns();
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		const struct adm_client *cl = &ad->cl[i];
		if (!cl->used)
			continue;
		if (cl->conns_req && cl->conns_deadline_ns < next)
			next = cl->conns_deadline_ns;
		if (cl->fd >= 0 && cl->outoff < cl->outlen && now + ADM_WRITE_RETRY_NS < next)
			next = now + ADM_WRITE_RETRY_NS;
	}
	if (next == UINT64_MAX)
		cpl_timer_cancel(ad->d.loop, &ad->timer);
	else if (cpl_timer_arm(ad->d.loop, &ad->timer, next) < 0)
		LOG_ERROR("admin: cannot arm the timer");
}

static void adm_timer(void *arg, uint64_t now)
{
	struct admin *ad = arg;
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		struct adm_client *cl = &ad->cl[i];
		if (!cl->used)
			continue;
		if (cl->conns_req && now >= cl->conns_deadline_ns)
			adm_status_conns_finish(ad, cl);
		if (!cl->used || cl->fd < 0 || cl->outoff == cl->outlen)
			continue;
		if (now - cl->out_since_ns > ADM_WRITE_STALL_NS) {
			LOG_WARN("admin: a client read nothing for %llu s: dropping it",
				 (unsigned long long)(ADM_WRITE_STALL_NS / 1000000000ull));
			adm_client_close(ad, cl);
			continue;
		}
		adm_flush(ad, cl);
	}
	adm_arm(ad);
}

static void adm_bk_timer(void *arg, uint64_t now)
{
	struct admin *ad = arg;
	if (ad->d.bk)
		adm_backends_publish(ad);
	cpl_timer_arm(ad->d.loop, &ad->bk_timer, now + ADM_BACKENDS_EVERY_NS);
}

/* ---- records from the dataplane ------------------------------------------ */

static void adm_on_record(void *arg, uint16_t type, const void *payload, uint32_t len)
{
	struct admin *ad = arg;
	(void)len;
	if (type == CHAN_REC_STATS) {
		const struct chan_stats *s = payload;
		if (s->worker >= adm_nworkers(ad)) {
			ad->n.stale_records++;
			return;
		}
		ad->n.stats_records++;
		struct adm_worker *aw = &ad->w[s->worker];
		aw->prev = aw->s;
		aw->prev_ns = aw->at_ns;
		aw->s = *s;
		aw->at_ns = sluice_now_ns();
		/* A restarted worker counts from zero: no rate across it. */
		if (s->uptime_ms < aw->prev.uptime_ms)
			aw->prev_ns = 0;
		adm_ws_stats(ad, s->worker);
		return;
	}
	if (type == CHAN_REC_CONNS) {
		ad->n.conns_records++;
		adm_status_conns_record(ad, payload);
		adm_arm(ad);
	}
}

/* ---- the socket ------------------------------------------------------------ */

/* A socket file left by a crashed control is removed; one that answers
 * belongs to a running control, and anything else is not ours to delete. */
static int adm_clear_stale(const struct sockaddr_un *sa, char *err, size_t errlen)
{
	struct stat sb;
	if (lstat(sa->sun_path, &sb) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "admin socket %s: %s", sa->sun_path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(sb.st_mode)) {
		snprintf(err, errlen, "admin socket %s exists and is not a socket", sa->sun_path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(fd);
	if (rc == 0 || e == EAGAIN) {
		snprintf(err, errlen, "admin socket %s: another control answers on it", sa->sun_path);
		return -1;
	}
	if (e != ECONNREFUSED) {
		snprintf(err, errlen, "admin socket %s: %s", sa->sun_path, strerror(e));
		return -1;
	}
	if (unlink(sa->sun_path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "removing stale admin socket %s: %s", sa->sun_path, strerror(errno));
		return -1;
	}
	LOG_INFO("admin: removed the stale socket %s", sa->sun_path);
	return 0;
}

/* Owner and group from the configuration; -1 leaves one unchanged. */
static int adm_owner(const struct sluice_conf *conf, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
	char buf[16384];
	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (conf->admin_socket_owner[0]) {
		struct passwd pw, *res = NULL;
		int rc = getpwnam_r(conf->admin_socket_owner, &pw, buf, sizeof(buf), &res);
		if (rc || !res) {
			snprintf(err, errlen, "admin_socket_owner %s: %s", conf->admin_socket_owner,
				 rc ? strerror(rc) : "no such user");
			return -1;
		}
		*uid = pw.pw_uid;
	}
	if (conf->admin_socket_group[0]) {
		struct group gr, *res = NULL;
		int rc = getgrnam_r(conf->admin_socket_group, &gr, buf, sizeof(buf), &res);
		if (rc || !res) {
			snprintf(err, errlen, "admin_socket_group %s: %s", conf->admin_socket_group,
				 rc ? strerror(rc) : "no such group");
			return -1;
		}
		*gid = gr.gr_gid;
	}
	return 0;
}

static int adm_listen(struct admin *ad, char *err, size_t errlen)
{
	const char *path = ad->d.conf->admin_socket;
	mode_t mode = (mode_t)(ad->d.conf->admin_socket_mode & 07777);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen = strlen(path);
	bool bound = false;
	uid_t uid;
	gid_t gid;
	if (plen == 0 || plen >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "admin socket path %s is empty or too long", path);
		return -1;
	}
	memcpy(sa.sun_path, path, plen + 1);
	if (adm_owner(ad->d.conf, &uid, &gid, err, errlen) < 0 || adm_clear_stale(&sa, err, errlen) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* Linux gives the node bind creates the socket inode's mode less the
	 * umask: it never exists with more than `mode`. The chmod after bind only
	 * adds back bits the umask took. */
	if (fchmod(fd, mode) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	bound = true;
	struct stat sb;
	if (chmod(path, mode) < 0 || (uid != (uid_t)-1 || gid != (gid_t)-1 ? chown(path, uid, gid) : 0) < 0 ||
	    lstat(path, &sb) < 0 || listen(fd, ADM_MAX_CLIENTS) < 0)
		goto fail;
	ad->sock_dev = sb.st_dev;
	ad->sock_ino = sb.st_ino;
	ad->lfd = fd;
	return 0;
fail:
	snprintf(err, errlen, "admin socket %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	if (bound)
		unlink(path);
	return -1;
}

struct admin *admin_create(const struct admin_deps *d, char *err, size_t errlen)
{
	struct admin *ad = calloc(1, sizeof(*ad));
	if (!ad) {
		snprintf(err, errlen, "admin: out of memory");
		return NULL;
	}
	ad->d = *d;
	ad->lfd = -1;
	ad->started_ns = sluice_now_ns();
	ad->dp_log_level = d->conf->log_level;
	cpl_timer_init(&ad->timer, adm_timer, ad);
	cpl_timer_init(&ad->bk_timer, adm_bk_timer, ad);
	adm_ws_prepare(ad);
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		ad->cl[i].ad = ad;
		ad->cl[i].fd = -1;
	}
	if (adm_listen(ad, err, errlen) < 0)
		goto fail;
	if (cpl_on_record(d->loop, CHAN_REC_STATS, adm_on_record, ad) < 0) {
		snprintf(err, errlen, "admin: STATS records have another handler");
		goto fail;
	}
	if (cpl_on_record(d->loop, CHAN_REC_CONNS, adm_on_record, ad) < 0) {
		cpl_on_record(d->loop, CHAN_REC_STATS, NULL, NULL);
		snprintf(err, errlen, "admin: CONNS records have another handler");
		goto fail;
	}
	ad->records = true;
	if (cpl_add_fd(d->loop, ad->lfd, CPL_READ, adm_accept, ad) < 0) {
		snprintf(err, errlen, "admin socket: cannot watch it: %s", strerror(errno));
		goto fail;
	}
	cpl_timer_arm(d->loop, &ad->bk_timer, cpl_now(d->loop) + ADM_BACKENDS_EVERY_NS);
	if (adm_ws_init(ad, err, errlen) < 0)
		goto fail;
	LOG_INFO("admin socket %s (mode %04o)", d->conf->admin_socket,
		 (unsigned)(d->conf->admin_socket_mode & 07777));
	return ad;
fail:
	admin_destroy(ad);
	return NULL;
}

void admin_destroy(struct admin *ad)
{
	if (!ad)
		return;
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		struct adm_client *cl = &ad->cl[i];
		if (!cl->used)
			continue;
		cl->busy = false;
		adm_client_close(ad, cl);
	}
	cpl_timer_cancel(ad->d.loop, &ad->timer);
	cpl_timer_cancel(ad->d.loop, &ad->bk_timer);
	adm_ws_free(ad);
	if (ad->records) {
		cpl_on_record(ad->d.loop, CHAN_REC_STATS, NULL, NULL);
		cpl_on_record(ad->d.loop, CHAN_REC_CONNS, NULL, NULL);
	}
	if (ad->lfd >= 0) {
		cpl_del_fd(ad->d.loop, ad->lfd);
		close(ad->lfd);
		ad->lfd = -1;
		struct stat sb;
		if (lstat(ad->d.conf->admin_socket, &sb) == 0 && sb.st_dev == ad->sock_dev &&
		    sb.st_ino == ad->sock_ino)
			unlink(ad->d.conf->admin_socket);
	}
	free(ad);
}

const struct admin_counters *admin_counters(const struct admin *ad)
{
	return &ad->n;
}

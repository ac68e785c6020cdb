/*
 * Command family "users": users add, passwd (adm_users_set_password, framed
 * by admin.c with the password line), del and list.
 */
#include "admin/admin_int.h"

#include <string.h>

#include <sodium.h>

#include "sluice/log.h"

static int adm_role(const char *r)
{
	if (!r)
		return -2;
	if (strcmp(r, "user") == 0)
		return STORE_USER_ROLE_USER;
	if (strcmp(r, "admin") == 0)
		return STORE_USER_ROLE_ADMIN;
	return -2;
}

static const char *adm_role_name(int role)
{
	return role == STORE_USER_ROLE_ADMIN ? "admin" : "user";
}

/* Answers a users.* write: the error, or {"user","done"}. */
static void adm_user_answer(struct admin *ad, struct adm_client *cl, int err, const char *done)
{
	if (cl->fd < 0)
		return;
	if (err) {
		adm_fail_errno(ad, cl, err, cl->target);
		return;
	}
	json_t *o = adm_ok();
	json_object_set_new(o, "user", json_string(cl->target));
	json_object_set_new(o, "done", json_string(done));
	adm_send(cl, o);
}

static void adm_user_written(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	adm_user_answer(ad, cl, err, cl->op);
	if (!err) {
		log_audit(strcmp(cl->op, "user added") == 0 ? "user_add" : "user_passwd", "user", cl->target,
			  "uid", cl->uid, NULL);
		/* A new password ends the logins made with the old one. */
		if (strcmp(cl->op, "password changed") == 0)
			auth_revoke_user(ad->d.auth, cl->target);
	}
	adm_async_done(ad, cl);
}

/* users.add and users.passwd: the password (the line after the request) goes
 * to the hashing pool, which copies it; this copy is wiped by the caller. */
void adm_users_set_password(struct admin *ad, struct adm_client *cl, json_t *req, const char *pw,
			    size_t pwlen, bool create)
{
	const char *name = adm_arg_str(req, "name");
	int role = -1;
	if (!adm_user_ok(name)) {
		adm_fail(ad, cl, "invalid_request", "name must match [A-Za-z0-9_.-]{1,63}");
		return;
	}
	if (create) {
		role = adm_role(adm_arg_str(req, "role"));
		if (role < 0) {
			adm_fail(ad, cl, "invalid_request", "role must be user or admin");
			return;
		}
	}
	if (pwlen == 0 || memchr(pw, 0, pwlen)) {
		adm_fail(ad, cl, "invalid_request", "the password is empty or holds a NUL byte");
		return;
	}
	if (!ad->d.st->ops->user_put) {
		adm_fail(ad, cl, "not_supported", "this control keeps no users");
		return;
	}
	char buf[ADM_LINE_MAX];
	memcpy(buf, pw, pwlen);
	buf[pwlen] = 0;
	adm_async_begin(cl, name, create ? "user added" : "password changed");
	int rc = auth_set_password(ad->d.auth, name, buf, role, create, adm_user_written, cl);
	sodium_memzero(buf, sizeof(buf));
	adm_async_submitted(ad, cl, rc, name);
}

static void adm_user_deleted(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (!err) {
		/* Its logins die with it: sessions revoked, WebSockets closed 1008. */
		auth_revoke_user(ad->d.auth, cl->target);
		log_audit("user_del", "user", cl->target, "uid", cl->uid, NULL);
	}
	adm_user_answer(ad, cl, err, "user deleted");
	adm_async_done(ad, cl);
}

static void cmd_users_del(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->d.st;
	const char *name = adm_arg_str(req, "name");
	if (!adm_user_ok(name)) {
		adm_fail(ad, cl, "invalid_request", "name must match [A-Za-z0-9_.-]{1,63}");
		return;
	}
	if (!st->ops->user_del) {
		adm_fail(ad, cl, "not_supported", "this control cannot delete users");
		return;
	}
	adm_async_begin(cl, name, NULL);
	adm_async_submitted(ad, cl, st->ops->user_del(st, name, adm_user_deleted, cl), name);
}

static void adm_each_user(void *arg, const struct store_user *u)
{
	json_t *arr = arg;
	json_array_append_new(arr, json_pack("{s:s,s:s,s:I}", "name", u->name, "role",
					     adm_role_name(u->role), "created_at",
					     (json_int_t)u->created_at));
}

static void cmd_users_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct store *st = ad->d.st;
	if (!st->ops->user_list) {
		adm_fail(ad, cl, "not_supported", "this store has no users");
		return;
	}
	json_t *arr = json_array();
	json_t *o = adm_ok();
	if (!arr || !o) {
		json_decref(arr);
		json_decref(o);
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	int rc = st->ops->user_list(st, adm_each_user, arr);
	if (rc < 0) {
		json_decref(arr);
		json_decref(o);
		adm_fail_errno(ad, cl, rc, "listing users");
		return;
	}
	json_object_set_new(o, "users", arr);
	adm_send(cl, o);
}

const struct adm_cmd adm_users_cmds[] = {
	{ "users.del", cmd_users_del },
	{ "users.list", cmd_users_list },
	{ NULL, NULL },
};

/*
 * Command family "limits": the quotas and rates in force for a user or an
 * API key (with what is used now), operators' overrides of them, and the
 * list of overrides (docs/operations.md "Limits").
 */
#include "admin/admin_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "limits/limits.h"
#include "sluice/log.h"

struct adm_key_owner {
	const char *id;
	char owner[STORE_USER_MAX];
	bool found;
};

static void adm_limits_key_match(void *arg, const struct store_apikey *k)
{
	struct adm_key_owner *x = arg;
	if (!x->found && strcmp(k->id, x->id) == 0) {
		snprintf(x->owner, sizeof(x->owner), "%s", k->owner);
		x->found = true;
	}
}

/*
 * The limits key of the request ("u:NAME" from user, "k:ID" from key) and
 * the role (and identity) whose values apply; false after answering the
 * error. A user must exist; a key's role is its owner's.
 */
static bool adm_limits_target(struct admin *ad, struct adm_client *cl, json_t *req,
			      char key[STORE_LIMITS_KEY_MAX], uint8_t *role, uint64_t *uid)
{
	const char *user = adm_arg_str(req, "user");
	const char *kid = adm_arg_str(req, "key");
	struct store *st = ad->d.st;
	if ((user != NULL) == (kid != NULL)) {
		adm_fail(ad, cl, "invalid_request", "name a user or a key");
		return false;
	}
	struct adm_key_owner x = { kid, "", false };
	if (kid) {
		if (!kid[0] || strlen(kid) >= STORE_KEYID_MAX ||
		    st->ops->apikey_list(st, NULL, adm_limits_key_match, &x) < 0 || !x.found) {
			adm_fail(ad, cl, "not_found", "no such key");
			return false;
		}
		user = x.owner;
	} else if (!adm_user_ok(user)) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name");
		return false;
	}
	struct store_user u;
	if (st->ops->user_get(st, user, &u) < 0) {
		adm_fail(ad, cl, "not_found", "no such user");
		return false;
	}
	*role = u.role;
	*uid = u.uid;
	snprintf(key, STORE_LIMITS_KEY_MAX, "%c:%s", kid ? 'k' : 'u', kid ? kid : user);
	return true;
}

static json_t *adm_limits_json(const char *key, const struct lim_view *v)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	for (int i = 0; i < CONF_LIM_N; i++)
		json_object_set_new(o, lim_key_name(i),
				    json_pack("{s:I,s:b,s:I}", "value", (json_int_t)v->value[i],
					      "overridden", v->overridden[i], "used",
					      (json_int_t)v->used[i]));
	json_t *w = adm_ok();
	json_object_set_new(w, key[0] == 'u' ? "user" : "key", json_string(key + 2));
	json_object_set_new(w, "limits", o);
	return w;
}

static void cmd_limits_show(struct admin *ad, struct adm_client *cl, json_t *req)
{
	char key[STORE_LIMITS_KEY_MAX];
	uint8_t role;
	uint64_t uid;
	struct lim_view v;
	if (!adm_limits_target(ad, cl, req, key, &role, &uid))
		return;
	int rc = lim_view(ad->d.limits, key, role, uid, &v);
	if (rc < 0) {
		adm_fail_errno(ad, cl, rc, "reading limits");
		return;
	}
	adm_send(cl, adm_limits_json(key, &v));
}

static void adm_limits_written(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (!err)
		LOG_INFO("admin: limits of %s changed", cl->target);
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "done", json_string("limits changed"));
			adm_send(cl, o);
		}
	}
	adm_async_done(ad, cl);
}

/* limits.set {user|key, set: {NAME: N | null}}: null goes back to the role's
 * value, 0 is no limit; names not given keep their override. */
static void cmd_limits_set(struct admin *ad, struct adm_client *cl, json_t *req)
{
	char key[STORE_LIMITS_KEY_MAX];
	uint8_t role;
	uint64_t uid;
	json_t *set = json_object_get(req, "set");
	if (!json_is_object(set) || json_object_size(set) == 0) {
		adm_fail(ad, cl, "invalid_request", "set must name at least one limit");
		return;
	}
	if (!adm_limits_target(ad, cl, req, key, &role, &uid))
		return;
	struct store_limits o;
	memset(&o, 0, sizeof(o));
	snprintf(o.key, sizeof(o.key), "%s", key);
	for (int i = 0; i < CONF_LIM_N; i++)
		o.v[i] = STORE_LIMIT_UNSET;
	struct store *st = ad->d.st;
	struct store_limits cur;
	if (st->ops->limits_get && st->ops->limits_get(st, key, &cur) == 0)
		memcpy(o.v, cur.v, sizeof(o.v));
	const char *name;
	json_t *val;
	json_object_foreach(set, name, val) {
		lim_id id = lim_by_name(name);
		if (id < 0) {
			adm_fail(ad, cl, "invalid_request", "unknown limit name");
			return;
		}
		if (json_is_null(val)) {
			o.v[id] = STORE_LIMIT_UNSET;
		} else if (json_is_integer(val) && json_integer_value(val) >= 0 &&
			   json_integer_value(val) < (json_int_t)STORE_LIMIT_UNSET) {
			o.v[id] = (uint32_t)json_integer_value(val);
		} else {
			adm_fail(ad, cl, "invalid_request", "a limit is a number >= 0, or null for the role's");
			return;
		}
	}
	adm_async_begin(cl, key, NULL);
	adm_async_submitted(ad, cl, lim_override_put(ad->d.limits, &o, adm_limits_written, cl), key);
}

static void adm_limits_each(void *arg, const struct store_limits *l)
{
	json_t *o = json_object();
	if (!o)
		return;
	json_object_set_new(o, l->key[0] == 'u' ? "user" : "key", json_string(l->key + 2));
	for (int i = 0; i < CONF_LIM_N; i++)
		if (l->v[i] != STORE_LIMIT_UNSET)
			json_object_set_new(o, lim_key_name(i), json_integer((json_int_t)l->v[i]));
	json_array_append_new(arg, o);
}

static void cmd_limits_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct store *st = ad->d.st;
	if (!st->ops->limits_list) {
		adm_fail(ad, cl, "not_supported", "this store keeps no limits");
		return;
	}
	json_t *arr = json_array();
	json_t *o = adm_ok();
	int rc = arr && o ? st->ops->limits_list(st, adm_limits_each, arr) : -ENOMEM;
	if (rc < 0) {
		json_decref(arr);
		json_decref(o);
		adm_fail_errno(ad, cl, rc, "listing limits");
		return;
	}
	json_object_set_new(o, "overrides", arr);
	adm_send(cl, o);
}

const struct adm_cmd adm_limits_cmds[] = {
	{ "limits.show", cmd_limits_show },
	{ "limits.set", cmd_limits_set },
	{ "limits.list", cmd_limits_list },
	{ NULL, NULL },
};

/*
 * Command family "keys": keys create (the key is shown once), revoke, list.
 */
#include "admin/admin_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "sluice/log.h"

/* keys.create committed: the key (held in cl->target until now) is shown
 * this once, with the public id found again by its hash. */
static void adm_key_created(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	struct store_apikey k;
	uint8_t h[STORE_HASH_LEN];
	auth_token_hash(ad->d.auth, cl->target, strlen(cl->target), h);
	if (!err)
		err = ad->d.st->ops->apikey_get(ad->d.st, h, &k);
	if (!err)
		log_audit("key_create", "id", k.id, "user", k.owner, "uid", cl->uid, NULL);
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, "creating the key");
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "id", json_string(k.id));
			json_object_set_new(o, "user", json_string(k.owner));
			json_object_set_new(o, "label", json_string(k.label));
			json_object_set_new(o, "created_at", json_integer((json_int_t)k.created_at));
			json_object_set_new(o, "key", json_string(cl->target));
			adm_send(cl, o);
		}
	}
	sodium_memzero(cl->target, sizeof(cl->target));
	adm_async_done(ad, cl);
}

static void cmd_keys_create(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *user = adm_arg_str(req, "user");
	json_t *lv = json_object_get(req, "label");
	const char *label = lv ? json_string_value(lv) : "";
	if (!adm_user_ok(user) || !label) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name and label a string");
		return;
	}
	if (!ad->d.st->ops->apikey_put) {
		adm_fail(ad, cl, "not_supported", "this control keeps no API keys");
		return;
	}
	char key[64];
	adm_async_begin(cl, NULL, NULL);
	int rc = auth_apikey_create(ad->d.auth, user, label, key, adm_key_created, cl);
	adm_async_submitted(ad, cl, rc, rc == -EINVAL ? "label too long" : user);
	if (rc >= 0)
		snprintf(cl->target, sizeof(cl->target), "%s", key);
	sodium_memzero(key, sizeof(key));
}

static void adm_key_revoked(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (!err)
		log_audit("key_revoke", "id", cl->target, "uid", cl->uid, NULL);
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "id", json_string(cl->target));
			json_object_set_new(o, "done", json_string("key revoked"));
			adm_send(cl, o);
		}
	}
	adm_async_done(ad, cl);
}

static void cmd_keys_revoke(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *id = adm_arg_str(req, "id");
	if (!id || !id[0] || strlen(id) >= STORE_KEYID_MAX) {
		adm_fail(ad, cl, "invalid_request", "id must be a key id");
		return;
	}
	if (!ad->d.st->ops->apikey_del) {
		adm_fail(ad, cl, "not_supported", "this control keeps no API keys");
		return;
	}
	adm_async_begin(cl, id, NULL);
	adm_async_submitted(ad, cl, auth_apikey_revoke(ad->d.auth, id, adm_key_revoked, cl), id);
}

static void adm_each_key(void *arg, const struct store_apikey *k)
{
	json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:I}", "id", k->id, "user", k->owner, "label",
					     k->label, "created_at", (json_int_t)k->created_at));
}

static void cmd_keys_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->d.st;
	const char *user = adm_arg_str(req, "user");
	if (json_object_get(req, "user") && !adm_user_ok(user)) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name");
		return;
	}
	if (!st->ops->apikey_list) {
		adm_fail(ad, cl, "not_supported", "this store keeps no API keys");
		return;
	}
	json_t *arr = json_array();
	json_t *o = adm_ok();
	int rc = arr && o ? st->ops->apikey_list(st, user, adm_each_key, arr) : -ENOMEM;
	if (rc < 0) {
		json_decref(arr);
		json_decref(o);
		adm_fail_errno(ad, cl, rc, "listing keys");
		return;
	}
	json_object_set_new(o, "keys", arr);
	adm_send(cl, o);
}

const struct adm_cmd adm_keys_cmds[] = {
	{ "keys.create", cmd_keys_create },
	{ "keys.revoke", cmd_keys_revoke },
	{ "keys.list", cmd_keys_list },
	{ NULL, NULL },
};

/*
 * Command family "store": store stats and store backup.
 */
#include "admin/admin_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "sluice/common.h"
#include "sluice/log.h"

static void cmd_store_stats(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct store *st = ad->d.st;
	struct store_stats s;
	memset(&s, 0, sizeof(s));
	if (!st->ops->stats) {
		adm_fail(ad, cl, "not_supported", "this store keeps no statistics");
		return;
	}
	int rc = st->ops->stats(st, &s);
	if (rc < 0) {
		adm_fail_errno(ad, cl, rc, "store statistics");
		return;
	}
	json_t *o = adm_ok();
	json_object_set_new(o, "path", json_string(ad->d.conf->store));
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
		{ "schema_version", s.schema_version }, { "map_size", s.map_size },
		{ "map_used", s.map_used },             { "users", s.users },
		{ "sessions", s.sessions },             { "messages", s.messages },
		{ "tokens", s.tokens },                 { "events", s.events },
		{ "auth_sessions", s.auth_sessions },   { "api_keys", s.api_keys },
		{ "commits", s.commits },               { "commit_batches", s.commit_batches },
		{ "last_commit_ns", s.last_commit_ns }, { "reserve", s.reserve },
		{ "reserve_refusals", s.reserve_refusals },
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(f); i++)
		json_object_set_new(o, f[i].name, json_integer((json_int_t)f[i].v));
	adm_send(cl, o);
}

static void adm_backup_done(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (err)
		LOG_WARN("admin: store backup to %s failed: %s", cl->target, strerror(-err));
	else
		LOG_INFO("admin: store backed up to %s", cl->target);
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			char data[CONF_PATH_MAX + 16];
			struct stat sb;
			snprintf(data, sizeof(data), "%s/data.mdb", cl->target);
			json_t *o = adm_ok();
			json_object_set_new(o, "path", json_string(cl->target));
			json_object_set_new(o, "bytes", stat(data, &sb) == 0 ?
					    json_integer((json_int_t)sb.st_size) : json_null());
			adm_send(cl, o);
		}
	}
	adm_async_done(ad, cl);
}

static void cmd_store_backup(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->d.st;
	const char *path = adm_arg_str(req, "path");
	if (!path || path[0] != '/' || strlen(path) >= sizeof(cl->target) - 16) {
		adm_fail(ad, cl, "invalid_request", "path must be an absolute directory path");
		return;
	}
	if (!st->ops->backup) {
		adm_fail(ad, cl, "not_supported", "this store cannot be backed up");
		return;
	}
	adm_async_begin(cl, path, NULL);
	adm_async_submitted(ad, cl, st->ops->backup(st, path, adm_backup_done, cl), path);
}

const struct adm_cmd adm_store_cmds[] = {
	{ "store.stats", cmd_store_stats },
	{ "store.backup", cmd_store_backup },
	{ NULL, NULL },
};

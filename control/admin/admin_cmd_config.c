/*
 * Command family "config": log.level (each process's level, live),
 * config.show (the running configuration) and config.reload (the file
 * again, applied live or refused whole; SIGHUP takes the same path).
 */
#include "admin/admin_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/tlsfile.h"

/* Asks the dataplane to take `level`: one ADMIN record to worker 0 (the
 * level is process-wide). False when no dataplane is attached or the
 * record found no room. */
static bool adm_dp_log_level(struct admin *ad, enum log_level level)
{
	if (!cpl_peer_alive(ad->d.loop))
		return false;
	struct chan_admin *q = co_begin(ad->d.out, 0, CHAN_REC_ADMIN, sizeof(*q));
	if (!q)
		return false;
	*q = (struct chan_admin){ .op = CHAN_ADMIN_LOG_LEVEL, .arg = (uint32_t)level };
	co_end(ad->d.out, 0, sizeof(*q));
	ad->dp_log_level = level;
	return true;
}

static json_t *adm_log_levels(const struct admin *ad)
{
	json_t *o = adm_ok();
	json_object_set_new(o, "control", json_string(log_level_name(log_get_level())));
	json_object_set_new(o, "dataplane", json_string(log_level_name(ad->dp_log_level)));
	return o;
}

/* log.level: without "level" the levels now; with it, the new level for
 * "proc" (control or dataplane; both when absent). The dataplane's level
 * shown is the last one control gave it (or the file's). */
static void cmd_log_level(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *proc = adm_arg_str(req, "proc");
	const char *name = adm_arg_str(req, "level");
	bool cp = !proc || strcmp(proc, "control") == 0;
	bool dp = !proc || strcmp(proc, "dataplane") == 0;
	enum log_level level;
	if (!cp && !dp) {
		adm_fail(ad, cl, "invalid_request", "proc must be control or dataplane");
		return;
	}
	if (!name) {
		adm_send(cl, adm_log_levels(ad));
		return;
	}
	if (!log_level_parse(name, &level)) {
		adm_fail(ad, cl, "invalid_request", "level must be debug, info, warn or error");
		return;
	}
	if (dp && !adm_dp_log_level(ad, level)) {
		adm_fail(ad, cl, "dataplane_unavailable",
			 "no dataplane is attached (or its channel is full); nothing was changed");
		return;
	}
	if (cp) {
		log_set_level(level);
		log_audit("log_level", "proc", "control", "level", log_level_name(level), "uid", cl->uid,
			  NULL);
	}
	adm_send(cl, adm_log_levels(ad));
}

static void adm_show_key(void *arg, const char *section, const char *key, const char *value, bool live)
{
	json_t *o = arg;
	json_t *conf = json_object_get(o, "config");
	json_t *sec = json_object_get(conf, section);
	if (!sec) {
		sec = json_object();
		json_object_set_new(conf, section, sec);
	}
	json_object_set_new(sec, key, json_string(value));
	if (live) {
		char name[160];
		snprintf(name, sizeof(name), "%s.%s", section, key);
		json_array_append_new(json_object_get(o, "live"), json_string(name));
	}
}

/* config.show: the configuration control runs with, as the file would say
 * it (header values redacted), and the keys a reload may change. */
static void cmd_config_show(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	json_t *o = adm_ok();
	json_object_set_new(o, "path", json_string(ad->d.conf->path));
	json_object_set_new(o, "config", json_object());
	json_object_set_new(o, "live", json_array());
	conf_show(ad->d.conf, adm_show_key, o);
	adm_send(cl, o);
}

/* What a reload found changed: every key for the answer, and the text
 * naming those that need a restart. */
struct adm_diff {
	json_t *changed;
	char restart[1024];
	size_t rlen;
};

static void adm_diff_key(void *arg, const char *section, const char *key, bool live)
{
	struct adm_diff *d = arg;
	char name[160];
	snprintf(name, sizeof(name), key ? "[%s] %s" : "[%s]", section, key ? key : "");
	json_array_append_new(d->changed, json_string(name));
	if (live || d->rlen >= sizeof(d->restart))
		return;
	int n = snprintf(d->restart + d->rlen, sizeof(d->restart) - d->rlen, "%s%s", d->rlen ? ", " : "", name);
	if (n > 0)
		d->rlen += (size_t)n;
}

/* Asks the dataplane to read the file again (worker 0: the reload is
 * process-wide). False when none is attached or the record found no room. */
static bool adm_dp_reload(struct admin *ad)
{
	if (!cpl_peer_alive(ad->d.loop))
		return false;
	struct chan_admin *q = co_begin(ad->d.out, 0, CHAN_REC_ADMIN, sizeof(*q));
	if (!q)
		return false;
	*q = (struct chan_admin){ .op = CHAN_ADMIN_RELOAD };
	co_end(ad->d.out, 0, sizeof(*q));
	return true;
}

/* The reload proper; *changed (owned by the caller) lists what changed. */
static int adm_reload(struct admin *ad, json_t **changed, bool *dp_told, char *err, size_t errlen)
{
	struct sluice_conf *cur = ad->d.live_conf;
	struct sluice_conf *next = NULL;
	struct adm_diff d = { .changed = json_array() };
	int rc = -1;
	*changed = d.changed;
	*dp_told = false;
	if (!cur) {
		snprintf(err, errlen, "this control cannot reload its configuration");
		return -1;
	}
	next = malloc(sizeof(*next));
	if (!next || !d.changed) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (conf_load(cur->path, next, err, errlen) < 0)
		goto out;
	int restart = conf_diff(cur, next, adm_diff_key, &d);
	if (restart < 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (restart > 0) {
		snprintf(err, errlen, "%s %s a restart; nothing was changed", d.restart,
			 restart == 1 ? "needs" : "need");
		goto out;
	}
	/* Everything that can refuse runs before anything changes, the
	 * dataplane's certificates included: loaded here the way it loads
	 * them, so it does not refuse what control has applied. */
	if (tlsfile_check(next, err, errlen) < 0)
		goto out;
	if (bk_reconfigure(ad->d.bk, cur, next, false, err, errlen) < 0)
		goto out;
	(void)bk_reconfigure(ad->d.bk, cur, next, true, err, errlen);
	bool level = cur->log_level != next->log_level;
	/* Every layer reads the live keys from this object on the loop
	 * thread, and the keys that differ are only live ones. */
	*cur = *next;
	if (level) {
		log_set_level((enum log_level)cur->log_level);
		ad->dp_log_level = cur->log_level;
	}
	log_set_format((enum log_format)cur->log_format);
	*dp_told = adm_dp_reload(ad);
	rc = 0;
out:
	free(next);
	return rc;
}

/* adm_reload with its audit line and a log line per changed key. */
static int adm_reload_audited(struct admin *ad, const char *uid, json_t **changed, bool *dp, char *err,
			      size_t errlen)
{
	int rc = adm_reload(ad, changed, dp, err, errlen);
	if (rc < 0) {
		log_audit("config_reload", "result", "refused", "reason", err, "uid", uid, NULL);
		return -1;
	}
	char n[16];
	snprintf(n, sizeof(n), "%zu", json_array_size(*changed));
	log_audit("config_reload", "result", "ok", "changed", n, "dataplane", *dp ? "told" : "not attached", "uid",
		  uid, NULL);
	for (size_t i = 0; i < json_array_size(*changed); i++)
		LOG_INFO("reload: %s changed", json_string_value(json_array_get(*changed, i)));
	return 0;
}

int admin_reload(struct admin *ad, const char *uid, char *err, size_t errlen)
{
	json_t *changed = NULL;
	bool dp = false;
	int rc = adm_reload_audited(ad, uid, &changed, &dp, err, errlen);
	json_decref(changed);
	return rc;
}

static void cmd_config_reload(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	json_t *changed = NULL;
	bool dp = false;
	char err[1200];
	if (adm_reload_audited(ad, cl->uid, &changed, &dp, err, sizeof(err)) < 0) {
		adm_fail(ad, cl, "reload_refused", err);
		json_decref(changed);
		return;
	}
	json_t *o = adm_ok();
	json_object_set_new(o, "changed", changed);
	json_object_set_new(o, "dataplane", json_string(dp ? "told" : "not attached"));
	adm_send(cl, o);
}

const struct adm_cmd adm_config_cmds[] = {
	{ "log.level", cmd_log_level },
	{ "config.show", cmd_config_show },
	{ "config.reload", cmd_config_reload },
	{ NULL, NULL },
};

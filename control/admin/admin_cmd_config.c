/*
 * Command family "config": log.level (each process's level, live).
 */
#include "admin/admin_int.h"

#include <string.h>

#include "sluice/log.h"

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

const struct adm_cmd adm_config_cmds[] = {
	{ "log.level", cmd_log_level },
	{ NULL, NULL },
};

/*
 * The backend side of a configuration reload (docs/configuration.md
 * "Reload"): check everything first, then change the table, so a refused
 * reload leaves every backend as it was.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/bk_int.h"
#include "sluice/log.h"

static const struct conf_backend *bk_conf_find(const struct sluice_conf *c, const char *name)
{
	for (uint32_t i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].name, name) == 0)
			return &c->backends[i];
	return NULL;
}

static int bk_reload_check(struct bk_mgr *m, const struct sluice_conf *next, char *err, size_t errlen)
{
	uint32_t free_slots = 0;
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++)
		free_slots += !m->be[i].used;
	for (uint32_t i = 0; i < next->nbackends; i++) {
		const struct conf_backend *nb = &next->backends[i];
		struct bk_backend *be = bk_find(m, nb->name);
		char *hdr = NULL;
		if (bk_auth_header(nb, &hdr, err, errlen) < 0)
			return -1;
		if (hdr) {
			explicit_bzero(hdr, strlen(hdr));
			free(hdr);
		}
		if (!be && free_slots-- == 0) {
			snprintf(err, errlen, "backend %s: no free slot (16 backends, removed ones count until their requests end)",
				 nb->name);
			return -1;
		}
		if (be && be->admin == BK_ADMIN_REMOVING) {
			snprintf(err, errlen, "backend %s is still being removed; reload again once its requests ended",
				 nb->name);
			return -1;
		}
		if (be && be->runtime) {
			snprintf(err, errlen, "backend %s was added by sluicectl backends add; remove it first",
				 nb->name);
			return -1;
		}
	}
	return 0;
}

/* New settings for a running backend: its key header first (the only part
 * that can fail), then the copy its routing and requests read. */
static void bk_reload_one(struct bk_backend *be, const struct conf_backend *nb)
{
	char err[256];
	if (strcmp(be->cfg.api_key_env, nb->api_key_env) != 0) {
		char *hdr = NULL;
		if (bk_auth_header(nb, &hdr, err, sizeof(err)) < 0) {
			LOG_ERROR("reload: %s; backend %s keeps its settings", err, nb->name);
			return;
		}
		if (be->auth_header) {
			explicit_bzero(be->auth_header, strlen(be->auth_header));
			free(be->auth_header);
		}
		be->auth_header = hdr;
	}
	be->cfg = *nb;
	LOG_INFO("reload: backend %s takes its new settings", nb->name);
}

int bk_reconfigure(struct bk_mgr *m, const struct sluice_conf *prev, const struct sluice_conf *next, bool apply,
		   char *err, size_t errlen)
{
	if (bk_reload_check(m, next, err, errlen) < 0)
		return -1;
	if (!apply)
		return 0;
	for (uint32_t i = 0; i < prev->nbackends; i++) {
		const char *name = prev->backends[i].name;
		if (!bk_conf_find(next, name) && bk_backend_remove(m, name) == 0)
			LOG_INFO("reload: backend %s is no longer configured: removing it", name);
	}
	for (uint32_t i = 0; i < next->nbackends; i++) {
		const struct conf_backend *nb = &next->backends[i];
		struct bk_backend *be = bk_find(m, nb->name);
		if (be) {
			if (memcmp(&be->cfg, nb, sizeof(*nb)) != 0)
				bk_reload_one(be, nb);
			continue;
		}
		for (uint32_t s = 0; s < CONF_MAX_BACKENDS; s++) {
			if (m->be[s].used)
				continue;
			if (bk_backend_init(m, s, nb, false, err, errlen) < 0)
				LOG_ERROR("reload: %s", err);
			else
				LOG_INFO("reload: backend %s added", nb->name);
			break;
		}
	}
	return 0;
}

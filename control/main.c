/*
 * sluice-control: attaches to the channel as control, serves the dataplane's
 * requests and streams answers until SIGTERM or SIGINT.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "api/api.h"
#include "admin/admin.h"
#include "auth/auth.h"
#include "loop/cp_loop.h"
#include "out/chan_out.h"
#include "sluice/chan.h"
#include "sluice/conf.h"
#include "sluice/log.h"
#include "store/store.h"

static void usage(void)
{
	fprintf(stderr, "usage: sluice-control -c FILE [--check]\n");
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool check = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--check") == 0) {
			check = true;
		} else {
			usage();
			return 2;
		}
	}
	if (!path) {
		usage();
		return 2;
	}

	static struct sluice_conf conf;
	char err[512];
	if (conf_load(path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		printf("config OK\n");
		return 0;
	}

	log_init("sluice-control", LOG_LVL_INFO);
	if (sodium_init() < 0) {
		LOG_ERROR("libsodium initialisation failed");
		return 1;
	}

	int rc = 1;
	struct chan_region *r = NULL;
	struct store *st = NULL;
	static struct chan_out out;
	static struct api api;
	static struct cp_loop loop;
	bool out_ok = false, api_ok = false, loop_ok = false;
	static struct auth auth;
	bool auth_ok = false;
	static struct admin admin;
	bool admin_ok = false;

	r = chan_open(conf.chan_path, conf.workers, conf.ring_bytes, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!r) {
		LOG_ERROR("channel %s: %s", conf.chan_path, err);
		goto fail;
	}
	/* Half a ring of backlog per worker: room for several of the largest
	 * records while the dataplane catches up. */
	if (co_init(&out, r, conf.ring_bytes / 2) < 0) {
		LOG_ERROR("cannot allocate the channel backlogs");
		goto fail;
	}
	out_ok = true;
	/* The loop comes first: the store delivers its completions through it.
	 * cpl_init only keeps the api pointer; api_init fills it in below. */
	if (cpl_init(&loop, r, &api, &out) < 0)
		goto fail;
	loop_ok = true;
	st = store_lmdb_open(conf.store, &loop, &conf, err, sizeof(err));
	if (!st) {
		LOG_ERROR("%s", err);
		goto fail;
	}
	if (api_init(&api, &conf, st, &out) < 0) {
		LOG_ERROR("cannot allocate the chat state");
		goto fail;
	}
	api_ok = true;
	api.cp_epoch = atomic_load(&chan_header(r)->cp_epoch);
	if (auth_init(&auth, &conf, st, &out, true, err, sizeof(err)) < 0) {
		LOG_ERROR("auth: %s", err);
		goto fail;
	}
	auth_ok = true;
	api.auth = &auth;
	if (cpl_add_fd(&loop, auth_pool_fd(&auth), auth_on_pool, &auth) < 0 ||
	    cpl_add_fd(&loop, auth_timer_fd(&auth), auth_on_timer, &auth) < 0) {
		LOG_ERROR("auth: cannot watch its fds on the control loop");
		goto fail;
	}
	if (admin_init(&admin, &conf, &loop, &api, &auth, err, sizeof(err)) < 0) {
		LOG_ERROR("%s", err);
		goto fail;
	}
	admin_ok = true;
	api.admin = &admin;
	LOG_INFO("attached to %s (%u workers), serving", conf.chan_path, conf.workers);
	rc = cpl_run(&loop) < 0 ? 1 : 0;
	co_flush(&out);
	LOG_INFO("stopped");
fail:
	/* The store goes first: closing commits what is queued and runs the
	 * completions, whose owners (chat, auth, admin) are still alive. */
	if (st)
		store_close(st);
	if (admin_ok) {
		api.admin = NULL;
		admin_free(&admin);
	}
	if (auth_ok) {
		if (loop_ok) {
			cpl_del_fd(&loop, auth_pool_fd(&auth));
			cpl_del_fd(&loop, auth_timer_fd(&auth));
		}
		api.auth = NULL;
		auth_free(&auth);
	}
	if (loop_ok)
		cpl_free(&loop);
	if (api_ok)
		api_free(&api);
	if (out_ok)
		co_free(&out);
	if (r)
		chan_close(r);
	return rc;
}

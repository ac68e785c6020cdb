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
#include "backends/backends.h"
#include "channel/chan_out.h"
#include "chat/chat.h"
#include "limits/limits.h"
#include "events/ev.h"
#include "loop/cp_loop.h"
#include "sluice/chan.h"
#include "sluice/conf.h"
#include "sluice/log.h"
#include "store/store.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: sluice-control -c FILE [--check]\n"
		   "  -c FILE   configuration (sluice.conf)\n"
		   "  --check   validate the configuration and exit\n"
		   "  --help    this text\n"
		   "Serves the dataplane's requests over the channel until SIGTERM or SIGINT\n"
		   "(docs/man/sluice-control.md).\n");
}

/* SIGHUP: the same reload as sluicectl config reload; a refusal is logged
 * (admin_reload's audit line says why) and the configuration stays. */
static void control_hangup(void *arg)
{
	char err[1200];
	if (admin_reload(arg, "signal", err, sizeof(err)) < 0)
		LOG_WARN("SIGHUP: reload refused: %s", err);
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
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!path) {
		usage(stderr);
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

	log_init("sluice-control", (enum log_level)conf.log_level);
	log_set_format((enum log_format)conf.log_format);
	if (sodium_init() < 0) {
		LOG_ERROR("libsodium initialisation failed");
		return 1;
	}

	/* The layers, bottom-up: each is given the ones below it and registers
	 * its records, fds, timers and hooks with the loop; teardown runs in
	 * reverse, except that the store closes first (below). */
	int rc = 1;
	struct chan_region *r = NULL;
	struct cp_loop *loop = NULL;
	struct store *st = NULL;
	struct admin *admin = NULL;
	struct bk_mgr *bk = NULL;
	static struct chan_out out;
	static struct chat chat;
	static struct auth auth;
	static struct limits limits;
	static struct api api;
	static struct ev_bus bus;
	bool out_ok = false, chat_ok = false, auth_ok = false, limits_ok = false, api_ok = false;

	ev_init(&bus);
	r = chan_open(conf.chan_path, conf.workers, conf.ring_bytes, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!r) {
		LOG_ERROR("channel %s: %s", conf.chan_path, err);
		goto fail;
	}
	if (chan_open_note(r))
		LOG_INFO("channel %s: %s", conf.chan_path, chan_open_note(r));
	loop = cpl_create(r, err, sizeof(err));
	if (!loop)
		goto fail_msg;
	/* Half a ring of backlog per worker: room for several of the largest
	 * records while the dataplane catches up. */
	if (co_init(&out, loop, conf.ring_bytes / 2, err, sizeof(err)) < 0)
		goto fail_msg;
	out_ok = true;
	st = store_lmdb_open(conf.store, loop, &conf, err, sizeof(err));
	if (!st)
		goto fail_msg;
	bk = bk_create(&conf, loop, err, sizeof(err));
	if (!bk)
		goto fail_msg;
	if (chat_init(&chat, &conf, loop, st, &out, bk, err, sizeof(err)) < 0)
		goto fail_msg;
	chat_ok = true;
	chat_set_bus(&chat, &bus);
	if (auth_init(&auth, &conf, loop, st, &out, err, sizeof(err)) < 0)
		goto fail_msg;
	auth_ok = true;
	if (lim_init(&limits, &conf, st, err, sizeof(err)) < 0)
		goto fail_msg;
	limits_ok = true;
	struct api_deps ad = { .conf = &conf, .loop = loop, .st = st, .out = &out, .chat = &chat,
			       .auth = &auth, .limits = &limits, .bk = bk, .bus = &bus };
	if (api_init(&api, &ad, err, sizeof(err)) < 0)
		goto fail_msg;
	api_ok = true;
	struct admin_deps dd = { .conf = &conf, .loop = loop, .st = st, .out = &out, .chat = &chat,
				 .auth = &auth, .limits = &limits, .bk = bk, .api_stats = &api.stats, .api = &api,
				 .bus = &bus, .live_conf = &conf };
	admin = admin_create(&dd, err, sizeof(err));
	if (!admin)
		goto fail_msg;
	cpl_on_hangup(loop, control_hangup, admin);
	LOG_INFO("attached to %s (%u workers), serving", conf.chan_path, conf.workers);
	rc = cpl_run(loop) < 0 ? 1 : 0;
	LOG_INFO("stopped");
	goto out;
fail_msg:
	LOG_ERROR("%s", err);
fail:
out:
	/* Running answers end first, as interrupted (their subscribers get
	 * usage and done, the store their status), then the store: closing
	 * commits what is queued and runs the completions, whose owners (chat,
	 * auth, admin) are still alive. */
	bk_shutdown(bk);
	if (api_ok)
		api_free(&api);
	if (out_ok)
		co_flush(&out);
	if (st)
		store_close(st);
	admin_destroy(admin);
	if (limits_ok)
		lim_free(&limits);
	if (auth_ok)
		auth_free(&auth);
	if (chat_ok)
		chat_free(&chat);
	bk_destroy(bk);
	if (out_ok)
		co_free(&out);
	cpl_destroy(loop);
	if (chan_close(r))
		LOG_INFO("channel %s: removed (the dataplane had stopped too)", conf.chan_path);
	return rc;
}

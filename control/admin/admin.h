/*
 * The admin Unix socket: the operators' door into sluice-control, used by
 * sluicectl. A SOCK_STREAM socket at conf.admin_socket, created with
 * conf.admin_socket_mode (never more open, not even for an instant) and the
 * configured owner and group, served on the control loop.
 *
 * Protocol (docs/operations.md): one JSON request per line, one JSON answer
 * per line, {"ok":true,...} or {"ok":false,"error":{"code","message"}}.
 * users.add and users.passwd are followed by one raw line holding the
 * password, so the password never passes through a JSON parser's buffers,
 * which cannot be wiped.
 *
 * A client has at most one request in progress; answers that need the store
 * writer, the hashing pool or the dataplane (conns) are sent when they arrive,
 * and the loop never blocks on a client.
 *
 * The module also keeps the latest STATS record of every worker and gathers
 * the CONNS answers to its LIST_CONNS queries (record handlers on the loop).
 * Single-threaded: everything runs on the control loop.
 */
#ifndef CONTROL_ADMIN_H
#define CONTROL_ADMIN_H

#include <stddef.h>
#include <stdint.h>

struct api;
struct api_stats;
struct auth;
struct bk_mgr;
struct ev_bus;
struct json_t;
struct chan_out;
struct chat;
struct cp_loop;
struct sluice_conf;
struct store;

/* What the admin socket works on; every pointer stays owned by the caller
 * and must outlive the admin. api_stats is read for `stats`. */
struct limits;

struct admin_deps {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct store *st;
	struct chan_out *out;
	struct chat *chat;
	struct auth *auth;
	struct limits *limits;
	struct bk_mgr *bk;
	const struct api_stats *api_stats;
	/* The operator dashboard (/ws/admin and /api/admin/...): both set, or
	 * both NULL for the admin socket alone. */
	struct api *api;
	struct ev_bus *bus;
};

struct admin_counters {
	uint64_t clients;       /* accepted */
	uint64_t clients_refused;
	uint64_t requests;
	uint64_t errors;        /* answers with ok:false */
	uint64_t stats_records;
	uint64_t conns_records;
	uint64_t stale_records; /* CONNS for a query nobody waits for any more, bad worker numbers */
};

struct admin;

/*
 * Creates the socket (removing a stale one from a crashed run only when
 * nothing answers on it), watches it on the loop and registers the STATS
 * and CONNS record handlers. Returns NULL with a message in err.
 */
struct admin *admin_create(const struct admin_deps *d, char *err, size_t errlen);
/* Closes every client and the socket, and removes the socket file when it is
 * still the one admin_create made. Answers that complete later are dropped
 * (their completions find a closed client). */
void admin_destroy(struct admin *ad);
const struct admin_counters *admin_counters(const struct admin *ad);

/* Adds a part to every metrics snapshot of the dashboard: fill(arg, snap)
 * sets members of the snapshot object (e.g. "backends"). A later provider
 * of the same name replaces an earlier one. -1 when the table is full. */
int admin_metrics_provider(struct admin *ad, const char *name, void (*fill)(void *arg, struct json_t *snap),
			   void *arg);

#endif

/*
 * The admin Unix socket: the operators' door into sluice-control, used by
 * sluicectl. A SOCK_STREAM socket at conf.admin_socket, created with
 * conf.admin_socket_mode (never more open, not even for an instant) and the
 * configured owner and group, served on the control loop (cpl_add_fd).
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
 * the CONNS answers to its LIST_CONNS queries (admin_record).
 * Single-threaded: everything runs on the control loop.
 */
#ifndef CONTROL_ADMIN_H
#define CONTROL_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sys/types.h>

#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"

#define ADM_MAX_CLIENTS 16
#define ADM_LINE_MAX 4096            /* one request line; the password line included */
#define ADM_OUT_MAX (16u << 20)      /* one client's unsent answers */
#define ADM_CONNS_TIMEOUT_NS 2000000000ull /* wait for the workers' CONNS answers */
#define ADM_WRITE_RETRY_NS 10000000ull     /* a full client socket is retried this often */
#define ADM_WRITE_STALL_NS 10000000000ull  /* a client that reads nothing this long is dropped */

struct api;
struct auth;
struct cp_loop;

struct adm_client {
	struct admin *ad;
	int fd;               /* -1 when closed */
	bool used;            /* slot taken (also while an answer is pending after a hang-up) */
	bool busy;            /* an answer is pending (store, hashing pool, dataplane) */
	bool closing;         /* close once the output is sent */
	bool eof;             /* the client half-closed: answer what came, then close */
	size_t inlen;
	char in[ADM_LINE_MAX];
	char *out;            /* owned; grows up to ADM_OUT_MAX */
	size_t outlen, outoff, outcap;
	uint64_t out_since_ns; /* when the output last made progress */
	/* conns: the LIST_CONNS query this client waits for */
	uint32_t conns_req;
	uint64_t conns_deadline_ns;
	bool conns_wait[CHAN_MAX_WORKERS];
	json_t *conns;        /* owned: the gathered connection objects */
	/* what a pending store or hashing answer is about */
	const char *op;
	char target[CONF_PATH_MAX];
};

struct adm_worker {
	struct chan_stats s;  /* latest STATS record */
	uint64_t at_ns;       /* when it arrived; 0 = never */
};

struct adm_counters {
	uint64_t clients;       /* accepted */
	uint64_t clients_refused;
	uint64_t requests;
	uint64_t errors;        /* answers with ok:false */
	uint64_t stats_records;
	uint64_t conns_records;
	uint64_t stale_records; /* CONNS for a query nobody waits for any more, bad worker numbers */
};

struct admin {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct api *api;
	struct auth *auth;
	int lfd;              /* listening socket, -1 when closed */
	int tfd;              /* timerfd: conns deadlines and write retries */
	dev_t sock_dev;       /* the socket file we created, so close never removes another's */
	ino_t sock_ino;
	uint64_t started_ns;
	uint32_t next_req;
	struct adm_counters n;
	struct adm_worker w[CHAN_MAX_WORKERS];
	struct adm_client cl[ADM_MAX_CLIENTS];
};

/*
 * Creates the socket (removing a stale one from a crashed run only when
 * nothing answers on it) and watches it on the loop. conf, loop, api and
 * auth stay owned by the caller and must outlive ad; auth may be NULL (the
 * users commands then answer not_supported). Returns 0, or -1 with a
 * message in err.
 */
int admin_init(struct admin *ad, const struct sluice_conf *conf, struct cp_loop *loop,
	       struct api *api, struct auth *auth, char *err, size_t errlen);
/* Closes every client and the socket, and removes the socket file when it is
 * still the one admin_init created. Answers that complete later are dropped. */
void admin_free(struct admin *ad);

/* A STATS or CONNS record from a d2c ring (api_dispatch hands them over);
 * the record was validated with chan_rec_valid. */
void admin_record(struct admin *ad, uint16_t type, const void *payload, uint32_t len);

#endif

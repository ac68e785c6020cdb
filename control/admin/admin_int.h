/*
 * Internals shared by the admin socket server (admin.c) and its command
 * families (admin_cmd_*.c, one per sluicectl command family). Nothing
 * outside control/admin (and its tests) includes this.
 *
 * Prefixes: adm_ for the server and the helpers every family uses,
 * adm_<family>_ for what one family exports (its command table).
 *
 * A command handler answers exactly once: at once with adm_send(adm_ok()…)
 * or adm_fail(), or, for work that completes later (store writer, hashing
 * pool, the workers), adm_async_begin() before submitting, then the answer
 * and adm_async_done() from the completion; adm_async_submitted() turns a
 * refused submission into the error answer.
 */
#ifndef CONTROL_ADMIN_INT_H
#define CONTROL_ADMIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sys/types.h>

#include "admin/admin.h"
#include "api/api.h"
#include "auth/auth.h"
#include "backends/backends.h"
#include "channel/chan_out.h"
#include "chat/chat.h"
#include "events/ev.h"
#include "loop/cp_loop.h"
#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "store/store.h"

#define ADM_MAX_CLIENTS 16
#define ADM_LINE_MAX 4096            /* one request line; the password line included */
#define ADM_OUT_MAX (16u << 20)      /* one client's unsent answers */
#define ADM_CONNS_TIMEOUT_NS 2000000000ull /* wait for the workers' CONNS answers */
#define ADM_WRITE_RETRY_NS 10000000ull     /* a full client socket is retried this often */
#define ADM_WRITE_STALL_NS 10000000000ull  /* a client that reads nothing this long is dropped */

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
	/* the caller (SO_PEERCRED at accept), for the audit log */
	char uid[16];
	char pid[16];
	/* what a pending store or hashing answer is about */
	const char *op;
	char target[CONF_PATH_MAX];
};

struct adm_worker {
	struct chan_stats s;  /* latest STATS record */
	uint64_t at_ns;       /* when it arrived; 0 = never */
	struct chan_stats prev; /* the one before, for rates */
	uint64_t prev_ns;       /* when that arrived; 0 = none yet */
};

/* ---- the dashboard: /ws/admin, /api/admin/..., alerts (admin_ws.c, admin_metrics.c) */

#define ADM_WS_MAX 32u            /* admin sockets open at once */
#define ADM_WS_EVENTS 256u        /* recent events kept for the HTTP fallback */
#define ADM_WS_MIN_INTERVAL_MS 1000u
#define ADM_WS_MAX_INTERVAL_MS 60000u
#define ADM_WS_STREAMS_MAX 100u   /* live streams listed in a snapshot */
#define ADM_ALERTS_MAX 32u
#define ADM_PROVIDERS_MAX 4u
#define ADM_SLOW_QUIET_NS 30000000000ull /* slow_consumers clears after 30 s without new drops */

#define ADM_TOPIC_METRICS 0x1u
#define ADM_TOPIC_SESSION 0x2u
#define ADM_TOPIC_ALERTS 0x4u
#define ADM_TOPIC_HEARTBEAT 0x8u

struct adm_ws_client {
	bool used;
	struct chan_conn conn;
	char user[STORE_USER_MAX];
	uint64_t uid;
	uint32_t topics;         /* ADM_TOPIC_* */
	uint32_t interval_ms;    /* metrics period */
	uint64_t next_metrics_ns;
};

struct adm_alert {
	bool active;
	char name[32];
	char subject[32];
	char level[16];
	double value, limit;
	char message[128];
	int64_t since;           /* unix seconds */
};

/* An event as the dashboard keeps it for the HTTP fallback: the bus's
 * strings copied (they live only as long as ev_publish), the time and the
 * count it changed read when it happened. Its JSON is built only when asked
 * for: for the clients that chose its topic, or by the fallback. */
#define ADM_EV_TEXT 512u
struct adm_ev {
	uint64_t seq;            /* 0: the slot is empty */
	double ts;
	struct ev e;             /* its strings point into text (or are NULL) */
	const char *what;        /* the count it changed (a literal), NULL: none */
	int64_t from, to;
	char text[ADM_EV_TEXT];
};

struct adm_provider {
	const char *name;
	void (*fill)(void *arg, json_t *snap);
	void *arg;
};

struct adm_dash {
	bool on;                 /* api and bus were given */
	struct cpl_timer timer;  /* metrics, heartbeats, role checks */
	uint64_t next_heartbeat_ns;
	struct adm_ws_client cl[ADM_WS_MAX];
	uint64_t seq;            /* number of the last event */
	struct adm_ev *events;   /* owned, ADM_WS_EVENTS of them; event s at [s % ADM_WS_EVENTS] */
	struct adm_alert alerts[ADM_ALERTS_MAX];
	struct adm_provider prov[ADM_PROVIDERS_MAX];
	uint32_t nprov;
	/* alert inputs seen at the last check */
	bool primed;
	uint64_t slow_seen, slow_last_ns;
	uint64_t deferred_seen[CHAN_MAX_WORKERS];
	uint64_t sends, send_drops; /* BROADCASTs queued, and those that fitted nowhere */
};

struct admin {
	struct admin_deps d;
	int lfd;              /* listening socket, -1 when closed */
	bool records;         /* the STATS/CONNS handlers are ours */
	struct cpl_timer timer; /* conns deadlines and write retries */
	struct cpl_timer bk_timer; /* backend counters to the workers */
	dev_t sock_dev;       /* the socket file we created, so close never removes another's */
	ino_t sock_ino;
	uint64_t started_ns;
	uint32_t next_req;
	uint32_t dp_log_level;  /* enum log_level: what control last told the dataplane */
	struct admin_counters n;
	struct adm_worker w[CHAN_MAX_WORKERS];
	struct adm_client cl[ADM_MAX_CLIENTS];
	struct adm_dash dash;
};

struct adm_cmd {
	const char *name;
	void (*fn)(struct admin *ad, struct adm_client *cl, json_t *req);
};

/* The command families, each a table ending with a NULL name. */
extern const struct adm_cmd adm_status_cmds[];
extern const struct adm_cmd adm_sessions_cmds[];
extern const struct adm_cmd adm_users_cmds[];
extern const struct adm_cmd adm_keys_cmds[];
extern const struct adm_cmd adm_store_cmds[];
extern const struct adm_cmd adm_limits_cmds[];
extern const struct adm_cmd adm_backends_cmds[];
extern const struct adm_cmd adm_config_cmds[];

/* Control's backend counters to every worker (CHAN_REC_BACKENDS), for
 * /metrics; admin.c runs it once a second. */
#define ADM_BACKENDS_EVERY_NS 1000000000ull
void adm_backends_publish(struct admin *ad);

/* users.add / users.passwd: the request and the raw password line after it
 * (wiped by the caller); admin.c frames the two lines. */
void adm_users_set_password(struct admin *ad, struct adm_client *cl, json_t *req, const char *pw,
			    size_t pwlen, bool create);
/* A CONNS record answering a client's conns query (admin_cmd_status.c). */
void adm_status_conns_record(struct admin *ad, const struct chan_conns *c);
/* The conns query of cl timed out or is complete: answer it. */
void adm_status_conns_finish(struct admin *ad, struct adm_client *cl);

/* sessions.kill and the dashboard's kill: cancels the running answer (its id
 * into mid, "" when none), asks every worker to close the session's
 * subscribers with 1008 and publishes `kicked`. Returns the workers asked. */
uint32_t adm_session_kill(struct admin *ad, struct chat_session *s, char mid[CHAN_ID_LEN]);

/* The dashboard (admin_ws.c): prepare at creation (so free is always
 * safe), init registers it when the deps carry api and bus. */
void adm_ws_prepare(struct admin *ad);
int adm_ws_init(struct admin *ad, char *err, size_t errlen);
void adm_ws_free(struct admin *ad);
/* A worker's STATS record arrived (after ad->w[w] was updated). */
void adm_ws_stats(struct admin *ad, uint32_t w);

/* Snapshots and alerts (admin_metrics.c). */
json_t *adm_metrics_snapshot(struct admin *ad);
/* Re-evaluates the thresholds; raises and clears alerts on the bus. */
void adm_alerts_check(struct admin *ad);
/* An alert event from the bus (ours or another layer's, e.g. backend_down):
 * the table of active alerts follows it. */
void adm_alerts_track(struct admin *ad, const struct ev_alert *a);
json_t *adm_alerts_json(const struct admin *ad);
void adm_metrics_backends(void *arg, json_t *snap);

/* ---- answers (admin.c) ---------------------------------------------------- */

/* Queues obj (taking the reference) as one answer line. */
void adm_send(struct adm_client *cl, json_t *obj);
json_t *adm_ok(void);
void adm_fail(struct admin *ad, struct adm_client *cl, const char *code, const char *msg);
/* A store or hashing-pool error (negative errno) about `what`, in words. */
void adm_fail_errno(struct admin *ad, struct adm_client *cl, int err, const char *what);
void adm_async_begin(struct adm_client *cl, const char *target, const char *op);
void adm_async_submitted(struct admin *ad, struct adm_client *cl, int rc, const char *what);
void adm_async_done(struct admin *ad, struct adm_client *cl);
/* Re-arms the timer for the earliest conns deadline or write retry. */
void adm_arm(struct admin *ad);

/* ---- request arguments (admin.c) ---------------------------------------- */

const char *adm_arg_str(json_t *req, const char *key);
/* An optional unsigned argument: false when present and not an integer in [lo, hi]. */
bool adm_arg_uint(json_t *req, const char *key, uint64_t lo, uint64_t hi, uint64_t *out);
bool adm_user_ok(const char *u);
bool adm_sid_ok(const char *sid);
static inline uint32_t adm_nworkers(const struct admin *ad)
{
	return ad->d.out->nworkers;
}

#endif

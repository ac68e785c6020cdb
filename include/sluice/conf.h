/*
 * sluice.conf: the INI file both processes read with -c FILE.
 * conf_load() rejects an unknown section, an unknown key, a duplicate key or a
 * bad value with "FILE:LINE: reason", so a typo never starts a half-configured
 * appliance. Defaults are filled in first; see docs/configuration.md.
 */
#ifndef SLUICE_CONF_H
#define SLUICE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_MAX_BACKENDS 16
#define CONF_MAX_MODELS 16
#define CONF_MAX_MODEL_SECTIONS 32
#define CONF_URL_MAX 256
#define CONF_HEADERS_MAX 1024
#define CONF_MAX_AGENTS 16
#define CONF_MAX_PORTS 8
#define CONF_MAX_ORIGINS 16
#define CONF_MAX_CERTS 8
#define CONF_NAME_MAX 64
/* A worker's scheduler slice request, µs (sched_setattr's sched_runtime for
 * SCHED_OTHER; EEVDF kernels, 6.12 and later, honour it): short, so that a
 * worker woken by its doorbell or a packet preempts a busier thread sharing
 * its core (control, the store's writer) instead of waiting out that
 * thread's slice. docs/dataplane.md "Scheduling". */
#define CONF_WORKER_SLICE_US 100
#define CONF_PATH_MAX 256

enum conf_transport { CONF_TRANSPORT_KERNEL = 0, CONF_TRANSPORT_DPDK = 1 };
/* kernel_send: how the kernel transport's flush sends (tp_kernel_set_send). */
enum conf_kernel_send { CONF_KSEND_AUTO = 0, CONF_KSEND_URING = 1, CONF_KSEND_SENDMSG = 2 };
enum conf_batch_mode { CONF_BATCH_ADAPTIVE = 0, CONF_BATCH_OFF = 1 };
enum conf_backend_type { CONF_BACKEND_SYNTHETIC = 0, CONF_BACKEND_OPENAI = 1, CONF_BACKEND_OLLAMA = 2 };
enum conf_tls_version { CONF_TLS_1_2 = 0, CONF_TLS_1_3 = 1 };

struct conf_backend {
	char name[CONF_NAME_MAX];
	enum conf_backend_type type;
	char models[CONF_MAX_MODELS][CONF_NAME_MAX];
	uint32_t nmodels;             /* 0 (openai, ollama): the models its health check finds */
	uint32_t ttft_ms;             /* synthetic: time to first token (default 200) */
	uint32_t tokens_per_s;        /* synthetic: token rate (default 20) */
	uint32_t answer_tokens;       /* synthetic: tokens per answer (default 32) */
	uint32_t max_concurrency;     /* default 0 = unlimited */
	uint32_t max_queue;           /* requests waiting for a slot (default 64) */
	uint32_t weight;              /* routing weight (default 1) */
	uint32_t context_window;      /* advertised by /api/models (default 8192) */
	double cost_in_per_mtok;      /* USD per 1M prompt tokens (default 0) */
	double cost_out_per_mtok;     /* USD per 1M completion tokens (default 0) */
	/* openai, ollama */
	char url[CONF_URL_MAX];       /* url = http(s)://host[:port][/prefix] (required) */
	char api_key_env[CONF_NAME_MAX]; /* environment variable holding the API key */
	char headers[CONF_HEADERS_MAX];  /* "Name: value | Name: value", checked */
	char ca_file[CONF_PATH_MAX];  /* CA bundle for https (default: the system store) */
	uint32_t connect_timeout_ms;  /* default 5000 */
	uint32_t first_token_timeout_ms; /* default 60000 */
	uint32_t idle_timeout_ms;     /* between upstream bytes once streaming (default 30000) */
	uint32_t health_interval_ms;  /* default 10000, 0 = no health checks */
	uint32_t breaker_failures;    /* consecutive failures that open the breaker (default 5) */
	uint32_t breaker_open_ms;     /* how long it stays open before one probe (default 30000) */
};

/* [model.NAME]: what a model costs and how much context it takes, whichever
 * backend serves it. */
struct conf_model {
	char name[CONF_NAME_MAX];
	uint32_t context_window;      /* default 8192 */
	double cost_in_per_mtok;
	double cost_out_per_mtok;
};

/*
 * Quotas and rate limits of one role ([limits.user], [limits.admin]); a
 * user gets its role's, an API key its owner's, unless an override is
 * stored (sluicectl limits). 0 means no limit. The order is the one of
 * the limits everywhere (store records, sluicectl, error codes).
 */
enum conf_limit {
	CONF_LIM_STORED_MB = 0,   /* stored_mb: message text a user keeps, MiB */
	CONF_LIM_SESSIONS,        /* sessions: conversations a user keeps */
	CONF_LIM_MESSAGES_PER_MIN,/* messages_per_min */
	CONF_LIM_CONCURRENT,      /* concurrent_answers: answers running at once */
	CONF_LIM_TOKENS_PER_MIN,  /* tokens_per_min: answer tokens generated */
	CONF_LIM_TOKENS_PER_DAY,  /* tokens_per_day (UTC days) */
	CONF_LIM_N
};

struct conf_role_limits {
	uint32_t v[CONF_LIM_N];
	bool present; /* the section was in the file */
};

enum conf_role { CONF_ROLE_USER = 0, CONF_ROLE_ADMIN = 1, CONF_NROLES };

/* [agent.NAME]: what GET /api/agents lists; a session is opened with one. */
struct conf_agent {
	char name[CONF_NAME_MAX];
	char model[CONF_NAME_MAX];      /* model = default model id (must be served by a backend) */
	char description[256];          /* description = text */
	char system_prompt[1024];       /* system_prompt = text (default empty) */
};

/* [cert.NAME]: a certificate the TLS listener offers. The first one in the
 * file answers clients that send no SNI name, or one no certificate names. */
struct conf_cert {
	char name[CONF_NAME_MAX];
	char chain[CONF_PATH_MAX];      /* chain = PEM: the certificate, then its intermediates */
	char key[CONF_PATH_MAX];        /* key = PEM private key, no group/other access */
};

/* [port.N] (N = 0..7): a DPDK port (transport = dpdk). */
struct conf_port {
	bool present;
	char device[CONF_PATH_MAX];     /* device = PCI address (0000:01:00.0) or vdev string (net_tap0,iface=x) */
	uint32_t ipv4;                  /* ipv4 = A.B.C.D/P  (network byte order) */
	uint8_t prefix;
	uint32_t gateway;               /* gateway = A.B.C.D (network byte order, 0 = none) */
	uint32_t mtu;                   /* mtu (default 1500, 576..9000) */
	uint32_t rx_desc, tx_desc;      /* rx_desc, tx_desc: ring sizes, power of two (default 1024) */
	uint32_t mbufs;                 /* mbufs: mbuf pool size per worker (default 16383) */
};

struct sluice_conf {
	char path[CONF_PATH_MAX]; /* the file this came from */

	/* [dataplane] */
	enum conf_transport transport; /* transport = kernel | dpdk (default kernel) */
	enum conf_kernel_send kernel_send; /* kernel_send = auto | uring | sendmsg (default auto) */
	uint32_t workers;              /* workers = N, 1..64 (default 1) */
	char listen_addr[64];          /* listen = ADDR:PORT (default 127.0.0.1:8080) */
	uint16_t listen_port;
	uint32_t max_conns;            /* max_conns = per worker (default 16384) */
	uint32_t idle_timeout_s;       /* idle_timeout_s (default 60) */
	uint32_t header_timeout_s;     /* header_timeout_s (default 10) */
	uint32_t sse_keepalive_s;      /* sse_keepalive_s (default 15) */
	uint32_t drain_timeout_s;      /* drain_timeout_s: SIGTERM's drain bound, 0 = none (default 30) */
	uint32_t ws_max_message;       /* ws_max_message bytes (default 65536) */
	uint32_t max_pending_bytes;    /* slow-consumer bound per conn (default 1 MiB) */
	bool pin_workers;              /* pin_workers = true|false (default true) */
	uint32_t worker_slice_us;      /* worker_slice_us = 0 | 100..100000 (default CONF_WORKER_SLICE_US) */
	bool ws_echo;                  /* ws_echo: serve /ws/echo for conformance runs (default false) */
	bool ws_deflate;               /* ws_deflate: negotiate permessage-deflate (default true) */
	uint32_t ws_deflate_bits;      /* ws_deflate_bits = largest window of our deflate, 9..15 (default 15) */
	uint32_t ws_deflate_level;     /* ws_deflate_level = zlib level, 1..9 (default 1) */
	uint32_t ws_deflate_min;       /* ws_deflate_min = smallest message compressed, bytes (default 64) */
	char lcores[128];              /* lcores = DPDK lcore list, e.g. "1,2" (dpdk; default: 1..workers) */
	char eal_args[512];            /* eal_args = extra EAL arguments, space separated (dpdk) */
	bool tls;                      /* tls = on|off: the listener speaks HTTPS/WSS (default off) */
	char redirect_addr[64];        /* redirect_listen = ADDR:PORT, plain HTTP that only redirects */
	uint16_t redirect_port;        /* 0: no redirect listener */

	/* [tls] (with tls = on) */
	enum conf_tls_version tls_min_version; /* min_version = 1.2 | 1.3 (default 1.2) */
	uint32_t tls_ticket_rotate_s;  /* ticket_rotate_s: a new ticket key this often (default 3600) */
	uint32_t tls_handshake_budget_us; /* handshake_budget_us: handshake CPU per loop turn (default 2000) */
	uint32_t tls_handshakes_max;   /* handshakes_max: in progress per worker (default 1024) */
	uint32_t tls_handshakes_per_addr; /* handshakes_per_addr: in progress per client address (default 32) */
	uint32_t tls_handshake_timeout_s; /* handshake_timeout_s (default 10) */
	uint32_t tls_hsts_max_age_s;   /* hsts_max_age_s: Strict-Transport-Security max-age, 0 = none */
	bool tls_ocsp_stapling;        /* ocsp_stapling: staple the responder's answer (default true) */
	uint32_t tls_ocsp_refresh_s;   /* ocsp_refresh_s: how often the answer is fetched again (default 3600) */

	/* [cert.NAME] ... */
	struct conf_cert certs[CONF_MAX_CERTS];
	uint32_t ncerts;

	/* [tcp] (dpdk transport's own stack) */
	uint32_t tcp_snd_buf;          /* snd_buf = per-connection send buffer bytes (default 65536) */
	uint32_t tcp_rcv_buf;          /* rcv_buf = per-connection receive window bytes (default 65536) */
	uint32_t tcp_syn_backlog;      /* syn_backlog = half-open entries before SYN cookies (default 1024) */
	uint32_t tcp_time_wait_max;    /* time_wait_max = TIME_WAIT entries kept per worker (default 4096) */
	uint32_t tcp_keepalive_s;      /* keepalive_s = idle seconds before keepalive probes (default 75) */

	/* [port.N] */
	struct conf_port ports[CONF_MAX_PORTS];

	/* [channel] */
	char chan_path[CONF_PATH_MAX]; /* path = /dev/shm/NAME (default /dev/shm/sluice) */
	uint32_t ring_bytes;           /* ring_bytes = power of two (default 8 MiB) */

	/* [control] */
	char admin_socket[CONF_PATH_MAX]; /* admin_socket = PATH (default /tmp/sluice-admin.sock) */
	char store[CONF_PATH_MAX];        /* store = DIR (default /tmp/sluice-store) */
	uint32_t admin_socket_mode;       /* admin_socket_mode = octal (default 0600) */
	char admin_socket_owner[CONF_NAME_MAX]; /* admin_socket_owner = user name (default: unchanged) */
	char admin_socket_group[CONF_NAME_MAX]; /* admin_socket_group = group name (default: unchanged) */
	uint32_t token_commit_ms;         /* token_commit_ms = bound on streamed tokens a crash may lose (default 50) */
	uint32_t store_map_mb;            /* store_map_mb = LMDB map size in MiB (default 1024) */
	uint32_t store_reserve_mb;        /* store_reserve_mb = map only accepted answers may use (default 64, at most a quarter) */

	/* [auth] */
	uint32_t session_ttl_s;           /* session_ttl_s = login session lifetime (default 86400) */
	char allowed_origins[CONF_MAX_ORIGINS][CONF_NAME_MAX * 2]; /* allowed_origins = comma list of
	                                     scheme://host[:port]; WebSocket upgrades from other Origins get 403 */
	uint32_t norigins;
	uint32_t login_max_inflight;      /* login_max_inflight = concurrent password verifies (default 4) */
	uint32_t login_fail_user;         /* login_fail_user = failures per user per window before 429 (default 5) */
	uint32_t login_fail_ip;           /* login_fail_ip = failures per client address per window (default 20) */
	uint32_t login_window_s;          /* login_window_s = throttling window (default 300) */
	uint32_t login_inflight_user;     /* login_inflight_user = password checks one user name may have running (default 1) */
	uint32_t login_inflight_ip;       /* login_inflight_ip = password checks one client address may have running (default 2) */
	uint32_t login_rate_user;         /* login_rate_user = logins (right or wrong) per user per rate window (default 30) */
	uint32_t login_rate_ip;           /* login_rate_ip = logins per client address per rate window (default 300) */
	uint32_t login_rate_window_s;     /* login_rate_window_s = (default 60) */
	uint32_t login_max_sessions;      /* login_max_sessions = live login sessions per user; the oldest ends (default 16) */
	uint32_t pwhash_ops;              /* pwhash_ops = Argon2id opslimit (default 2 = INTERACTIVE) */
	uint32_t pwhash_mem_kib;          /* pwhash_mem_kib = Argon2id memlimit in KiB (default 65536) */
	bool cookie_secure;               /* cookie_secure = add Secure to the cookie (default: tls) */

	/* [batching] */
	enum conf_batch_mode batch_mode; /* mode = adaptive | off (default adaptive) */
	uint32_t max_delay_us;           /* max_delay_us (default 2000) */
	uint32_t max_bytes;              /* max_bytes (default 16384) */

	/* [log] (docs/configuration.md "Logging") */
	uint32_t log_level;              /* level = debug | info | warn | error (enum log_level; default info) */
	uint32_t log_format;             /* format = plain | json (enum log_format; default plain) */

	/* [limits] (dataplane side; per worker) */
	uint32_t conns_per_ip;           /* conns_per_ip = open conns one client address may hold (default 8192) */
	uint32_t body_budget_mb;         /* body_budget_mb = request bodies buffered at once (default 64) */
	uint32_t worker_mem_mb;          /* worker_mem_mb = buffered bytes past which new conns are refused (default 1024) */

	/* [limits.user], [limits.admin] */
	struct conf_role_limits role_limits[CONF_NROLES];
	/* [dashboard] (/ws/admin, docs/api.md) */
	uint32_t dash_heartbeat_ms;      /* heartbeat_ms = heartbeat period (default 30000) */
	uint32_t dash_max_pending;       /* max_pending = unsent bytes an admin socket may hold before it is dropped (default 256 KiB) */
	uint32_t dash_alert_ring_pct;    /* alert_ring_pct = channel ring fill that raises ring_full (default 80) */
	uint32_t dash_alert_store_pct;   /* alert_store_pct = store map use that raises store_full (default 80) */
	uint32_t dash_alert_connections; /* alert_connections = open connections that raise connections (default 0: 90% of max_conns x workers) */
	uint32_t dash_alert_pending_mb;  /* alert_pending_mb = dataplane pending bytes that raise memory (default 256) */

	/* [backend.NAME] ... */
	struct conf_backend backends[CONF_MAX_BACKENDS];
	uint32_t nbackends;

	/* [model.NAME] ... */
	struct conf_model models[CONF_MAX_MODEL_SECTIONS];
	uint32_t nmodels;

	/* [agent.NAME] ... (none configured: one agent "assistant" on the first model) */
	struct conf_agent agents[CONF_MAX_AGENTS];
	uint32_t nagents;
};

/* Fills defaults, then reads `path`. Returns 0, or -1 with "FILE:LINE: reason"
 * (or "FILE: reason") in err. */
int conf_load(const char *path, struct sluice_conf *c, char *err, size_t errlen);
/* Defaults only (tests, no file). */
void conf_defaults(struct sluice_conf *c);
/* The agent named `name`, or NULL. */
const struct conf_agent *conf_agent_find(const struct sluice_conf *c, const char *name);
/* The first backend that lists `model`, or NULL. */
const struct conf_backend *conf_backend_for_model(const struct sluice_conf *c, const char *model);
/* The [model.NAME] section of `model`, or NULL. */
const struct conf_model *conf_model_find(const struct sluice_conf *c, const char *model);
/*
 * The configuration as the file would say it: fn once per key that has a
 * value (defaults included; unset optional keys left out), section by
 * section ("dataplane", ..., "backend.NAME"), with whether a reload may
 * change it (docs/configuration.md "Reload"). Header values are redacted;
 * api_key_env is a variable's name, never its value.
 */
typedef void (*conf_show_fn)(void *arg, const char *section, const char *key, const char *value, bool live);
void conf_show(const struct sluice_conf *c, conf_show_fn fn, void *arg);
/*
 * What differs between a (running) and b (a scratch copy just loaded):
 * fn once per changed key, or once per sub-section added or removed (key
 * NULL), with whether it may change live. Returns how many of them need a
 * restart (0: b may replace a), or -1 when out of memory.
 */
typedef void (*conf_diff_fn)(void *arg, const char *section, const char *key, bool live);
int conf_diff(const struct sluice_conf *a, const struct sluice_conf *b, conf_diff_fn fn, void *arg);
/* A backend with every default (type synthetic, no models). */
void conf_backend_defaults(struct conf_backend *be);
/* Sets one key of a [backend.NAME] exactly as the file would (same checks,
 * same reasons): sluicectl backends add. 0, or -1 with "KEY: reason" in err. */
int conf_backend_key(struct conf_backend *be, const char *key, const char *value, char *err, size_t errlen);
/* What a backend's type requires (models for synthetic, url for the
 * others): 0, or -1 with the reason in err. */
int conf_backend_check(const struct conf_backend *be, char *err, size_t errlen);
/* Price and context window of `model`: its [model.NAME] section, else the
 * first backend that lists it, else 0, 0 and 8192. */
void conf_model_terms(const struct sluice_conf *c, const char *model, struct conf_model *out);
/* The cost in USD of prompt and completion tokens at `model`'s price. */
double conf_model_cost(const struct sluice_conf *c, const char *model, uint32_t prompt_tokens,
		       uint32_t completion_tokens);

#endif

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
#define CONF_NAME_MAX 64
#define CONF_PATH_MAX 256

enum conf_transport { CONF_TRANSPORT_KERNEL = 0, CONF_TRANSPORT_DPDK = 1 };
enum conf_batch_mode { CONF_BATCH_ADAPTIVE = 0, CONF_BATCH_OFF = 1 };
enum conf_backend_type { CONF_BACKEND_SYNTHETIC = 0 };

struct conf_backend {
	char name[CONF_NAME_MAX];
	enum conf_backend_type type;
	char models[CONF_MAX_MODELS][CONF_NAME_MAX];
	uint32_t nmodels;
	uint32_t ttft_ms;             /* synthetic: time to first token (default 200) */
	uint32_t tokens_per_s;        /* synthetic: token rate (default 20) */
	uint32_t answer_tokens;       /* synthetic: tokens per answer (default 32) */
	uint32_t max_concurrency;     /* default 0 = unlimited */
	uint32_t context_window;      /* advertised by /api/models (default 8192) */
	double cost_in_per_mtok;      /* USD per 1M prompt tokens (default 0) */
	double cost_out_per_mtok;     /* USD per 1M completion tokens (default 0) */
};

struct sluice_conf {
	char path[CONF_PATH_MAX]; /* the file this came from */

	/* [dataplane] */
	enum conf_transport transport; /* transport = kernel | dpdk (default kernel) */
	uint32_t workers;              /* workers = N, 1..64 (default 1) */
	char listen_addr[64];          /* listen = ADDR:PORT (default 127.0.0.1:8080) */
	uint16_t listen_port;
	uint32_t max_conns;            /* max_conns = per worker (default 16384) */
	uint32_t idle_timeout_s;       /* idle_timeout_s (default 60) */
	uint32_t header_timeout_s;     /* header_timeout_s (default 10) */
	uint32_t sse_keepalive_s;      /* sse_keepalive_s (default 15) */
	uint32_t ws_max_message;       /* ws_max_message bytes (default 65536) */
	uint32_t max_pending_bytes;    /* slow-consumer bound per conn (default 1 MiB) */
	bool pin_workers;              /* pin_workers = true|false (default true) */
	bool ws_echo;                  /* ws_echo: serve /ws/echo for conformance runs (default false) */

	/* [channel] */
	char chan_path[CONF_PATH_MAX]; /* path = /dev/shm/NAME (default /dev/shm/sluice) */
	uint32_t ring_bytes;           /* ring_bytes = power of two (default 4 MiB) */

	/* [control] */
	char admin_socket[CONF_PATH_MAX]; /* admin_socket = PATH (default /tmp/sluice-admin.sock) */
	char store[CONF_PATH_MAX];        /* store = DIR (default /tmp/sluice-store) */

	/* [batching] */
	enum conf_batch_mode batch_mode; /* mode = adaptive | off (default adaptive) */
	uint32_t max_delay_us;           /* max_delay_us (default 2000) */
	uint32_t max_bytes;              /* max_bytes (default 16384) */

	/* [backend.NAME] ... */
	struct conf_backend backends[CONF_MAX_BACKENDS];
	uint32_t nbackends;
};

/* Fills defaults, then reads `path`. Returns 0, or -1 with "FILE:LINE: reason"
 * (or "FILE: reason") in err. */
int conf_load(const char *path, struct sluice_conf *c, char *err, size_t errlen);
/* Defaults only (tests, no file). */
void conf_defaults(struct sluice_conf *c);
/* The backend that serves `model`, or NULL. */
const struct conf_backend *conf_backend_for_model(const struct sluice_conf *c, const char *model);

#endif

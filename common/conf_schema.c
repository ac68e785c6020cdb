/*
 * sluice.conf's schema: every section and key (docs/configuration.md),
 * the defaults, and the checks that need a whole section or file.
 */
#include "conf_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "sluice/chan.h"
#include "sluice/common.h"
#include "sluice/log.h"

static const struct key_spec dataplane_keys[] = {
	{ "transport", K_TRANSPORT, CF(transport), 0, 0, RESTART },
	{ "kernel_send", K_KERNEL_SEND, CF(kernel_send), 0, 0, RESTART },
	{ "workers", K_U32, CF(workers), 1, 64, RESTART },
	{ "listen", K_LISTEN, 0, 1, 65535, RESTART },
	{ "max_conns", K_U32, CF(max_conns), 1, 1048576, RESTART },
	{ "idle_timeout_s", K_U32, CF(idle_timeout_s), 1, 86400, LIVE },
	{ "header_timeout_s", K_U32, CF(header_timeout_s), 1, 3600, LIVE },
	{ "sse_keepalive_s", K_U32, CF(sse_keepalive_s), 1, 3600, LIVE },
	{ "drain_timeout_s", K_U32, CF(drain_timeout_s), 0, 3600, RESTART },
	{ "ws_max_message", K_U32, CF(ws_max_message), 125, 67108864, RESTART },
	{ "max_pending_bytes", K_U32, CF(max_pending_bytes), 4096, 1073741824, RESTART },
	{ "pin_workers", K_BOOL, CF(pin_workers), 0, 0, RESTART },
	{ "worker_slice_us", K_U32Z, CF(worker_slice_us), 100, 100000, RESTART },
	{ "ws_echo", K_BOOL, CF(ws_echo), 0, 0, RESTART },
	{ "lcores", K_LCORES, CF(lcores), 0, FSIZE(sluice_conf, lcores), RESTART },
	{ "eal_args", K_TEXT, CF(eal_args), 0, FSIZE(sluice_conf, eal_args), RESTART },
	{ "ws_deflate", K_BOOL, CF(ws_deflate), 0, 0, RESTART },
	{ "ws_deflate_bits", K_U32, CF(ws_deflate_bits), 9, 15, RESTART },
	{ "ws_deflate_level", K_U32, CF(ws_deflate_level), 1, 9, RESTART },
	{ "ws_deflate_min", K_U32, CF(ws_deflate_min), 0, 67108864, RESTART },
	{ "tls", K_ONOFF, CF(tls), 0, 0, RESTART },
	{ "redirect_listen", K_REDIRECT_LISTEN, 0, 1, 65535, RESTART },
};

static const struct key_spec tcp_keys[] = {
	{ "snd_buf", K_U32, CF(tcp_snd_buf), 4096, 16777216, RESTART },
	{ "rcv_buf", K_U32, CF(tcp_rcv_buf), 4096, 16777216, RESTART },
	{ "syn_backlog", K_U32, CF(tcp_syn_backlog), 1, 1048576, RESTART },
	{ "time_wait_max", K_U32, CF(tcp_time_wait_max), 1, 1048576, RESTART },
	{ "keepalive_s", K_U32, CF(tcp_keepalive_s), 1, 86400, RESTART },
};

static const struct key_spec channel_keys[] = {
	{ "path", K_PATH, CF(chan_path), 0, 0, RESTART },
	{ "ring_bytes", K_POW2, CF(ring_bytes), 65536, 268435456, RESTART },
};

static const struct key_spec control_keys[] = {
	{ "admin_socket", K_SOCK_PATH, CF(admin_socket), 0, 0, RESTART },
	{ "store", K_PATH, CF(store), 0, 0, RESTART },
	{ "admin_socket_mode", K_MODE, CF(admin_socket_mode), 0, 0777, RESTART },
	{ "admin_socket_owner", K_UNIX_NAME, CF(admin_socket_owner), 0, 0, RESTART },
	{ "admin_socket_group", K_UNIX_NAME, CF(admin_socket_group), 0, 0, RESTART },
	{ "token_commit_ms", K_U32, CF(token_commit_ms), 1, 10000, RESTART },
	{ "store_map_mb", K_U32, CF(store_map_mb), 16, 1048576, RESTART },
	{ "store_reserve_mb", K_U32, CF(store_reserve_mb), 0, 1048576, RESTART },
};

static const struct key_spec auth_keys[] = {
	{ "session_ttl_s", K_U32, CF(session_ttl_s), 60, 31536000, LIVE },
	{ "allowed_origins", K_ORIGINS, 0, 0, 0, LIVE },
	{ "login_max_inflight", K_U32, CF(login_max_inflight), 1, 64, RESTART },
	{ "login_fail_user", K_U32, CF(login_fail_user), 1, 1000, RESTART },
	{ "login_fail_ip", K_U32, CF(login_fail_ip), 1, 10000, RESTART },
	{ "login_window_s", K_U32, CF(login_window_s), 1, 86400, RESTART },
	{ "login_inflight_user", K_U32, CF(login_inflight_user), 1, 64, LIVE },
	{ "login_inflight_ip", K_U32, CF(login_inflight_ip), 1, 64, LIVE },
	{ "login_rate_user", K_U32, CF(login_rate_user), 1, 1000000, RESTART },
	{ "login_rate_ip", K_U32, CF(login_rate_ip), 1, 1000000, RESTART },
	{ "login_rate_window_s", K_U32, CF(login_rate_window_s), 1, 86400, RESTART },
	{ "login_max_sessions", K_U32, CF(login_max_sessions), 1, 100000, LIVE },
	{ "pwhash_ops", K_U32, CF(pwhash_ops), 1, 10, RESTART },
	{ "pwhash_mem_kib", K_U32, CF(pwhash_mem_kib), 8, 4194304, RESTART },
	{ "cookie_secure", K_BOOL, CF(cookie_secure), 0, 0, RESTART },
};

static const struct key_spec tls_keys[] = {
	{ "min_version", K_TLS_VERSION, CF(tls_min_version), 0, 0, RESTART },
	{ "ticket_rotate_s", K_U32, CF(tls_ticket_rotate_s), 60, 604800, RESTART },
	{ "handshake_budget_us", K_U32, CF(tls_handshake_budget_us), 100, 1000000, RESTART },
	{ "handshakes_max", K_U32, CF(tls_handshakes_max), 1, 1048576, RESTART },
	{ "handshakes_per_addr", K_U32, CF(tls_handshakes_per_addr), 1, 1048576, RESTART },
	{ "handshake_timeout_s", K_U32, CF(tls_handshake_timeout_s), 1, 300, RESTART },
	{ "hsts_max_age_s", K_U32, CF(tls_hsts_max_age_s), 0, 63072000, RESTART },
	{ "ocsp_stapling", K_BOOL, CF(tls_ocsp_stapling), 0, 0, RESTART },
	{ "ocsp_refresh_s", K_U32, CF(tls_ocsp_refresh_s), 60, 604800, RESTART },
};

/* chain and key are indexes 0 and 1: a certificate must set both. */
static const struct key_spec cert_keys[] = {
	{ "chain", K_PATH, XF(chain), 0, 0, RESTART },
	{ "key", K_PATH, XF(key), 0, 0, RESTART },
};

static const struct key_spec batching_keys[] = {
	{ "mode", K_BATCH_MODE, CF(batch_mode), 0, 0, LIVE },
	{ "max_delay_us", K_U32, CF(max_delay_us), 0, 1000000, LIVE },
	{ "max_bytes", K_U32, CF(max_bytes), 64, 16777216, RESTART },
};

static const struct key_spec log_keys[] = {
	{ "level", K_LOG_LEVEL, CF(log_level), 0, 0, LIVE },
	{ "format", K_LOG_FORMAT, CF(log_format), 0, 0, LIVE },
};

static const struct key_spec limits_keys[] = {
	{ "conns_per_ip", K_U32, CF(conns_per_ip), 1, 1048576, LIVE },
	{ "body_budget_mb", K_U32, CF(body_budget_mb), 2, 65536, LIVE },
	{ "worker_mem_mb", K_U32, CF(worker_mem_mb), 16, 1048576, LIVE },
};

/* Indexed by enum conf_limit. */
static const struct key_spec role_limits_keys[] = {
	{ "stored_mb", K_U32, LF(CONF_LIM_STORED_MB), 0, 16777216, LIVE },
	{ "sessions", K_U32, LF(CONF_LIM_SESSIONS), 0, 100000000, LIVE },
	{ "messages_per_min", K_U32, LF(CONF_LIM_MESSAGES_PER_MIN), 0, 1000000, LIVE },
	{ "concurrent_answers", K_U32, LF(CONF_LIM_CONCURRENT), 0, 1000000, LIVE },
	{ "tokens_per_min", K_U32, LF(CONF_LIM_TOKENS_PER_MIN), 0, 4000000000u, LIVE },
	{ "tokens_per_day", K_U32, LF(CONF_LIM_TOKENS_PER_DAY), 0, 4000000000u, LIVE },
};
_Static_assert(SLUICE_ARRAY_LEN(role_limits_keys) == CONF_LIM_N, "one key per limit");

int conf_role_of(const char *name)
{
	if (strcmp(name, "user") == 0)
		return CONF_ROLE_USER;
	if (strcmp(name, "admin") == 0)
		return CONF_ROLE_ADMIN;
	return -1;
}

static const struct key_spec dashboard_keys[] = {
	{ "heartbeat_ms", K_U32, CF(dash_heartbeat_ms), 100, 3600000, RESTART },
	{ "max_pending", K_U32, CF(dash_max_pending), 4096, 67108864, RESTART },
	{ "alert_ring_pct", K_U32, CF(dash_alert_ring_pct), 1, 100, RESTART },
	{ "alert_store_pct", K_U32, CF(dash_alert_store_pct), 1, 100, RESTART },
	{ "alert_connections", K_U32, CF(dash_alert_connections), 0, 67108864, RESTART },
	{ "alert_pending_mb", K_U32, CF(dash_alert_pending_mb), 1, 1048576, RESTART },
};

/* type is index 0: every backend sets it; what else it needs depends on
 * the type (conf_close_backend). */
static const struct key_spec backend_keys[] = {
	{ "type", K_BACKEND_TYPE, BF(type), 0, 0, RESTART },
	{ "models", K_MODELS, 0, 0, 0, LIVE },
	{ "ttft_ms", K_U32, BF(ttft_ms), 0, 3600000, LIVE },
	{ "tokens_per_s", K_U32, BF(tokens_per_s), 1, 1000000, LIVE },
	{ "answer_tokens", K_U32, BF(answer_tokens), 1, 1000000, LIVE },
	{ "max_concurrency", K_U32, BF(max_concurrency), 0, 1000000, LIVE },
	{ "context_window", K_U32, BF(context_window), 1, 100000000, LIVE },
	{ "cost_in_per_mtok", K_COST, BF(cost_in_per_mtok), 0, 1000000, LIVE },
	{ "cost_out_per_mtok", K_COST, BF(cost_out_per_mtok), 0, 1000000, LIVE },
	{ "url", K_URL, BF(url), 0, FSIZE(conf_backend, url), LIVE },
	{ "api_key_env", K_ENV_NAME, BF(api_key_env), 0, 0, LIVE },
	{ "headers", K_HEADERS, BF(headers), 0, FSIZE(conf_backend, headers), LIVE },
	{ "ca_file", K_PATH, BF(ca_file), 0, 0, LIVE },
	{ "weight", K_U32, BF(weight), 1, 1000, LIVE },
	{ "max_queue", K_U32, BF(max_queue), 0, 100000, LIVE },
	{ "connect_timeout_ms", K_U32, BF(connect_timeout_ms), 1, 600000, LIVE },
	{ "first_token_timeout_ms", K_U32, BF(first_token_timeout_ms), 1, 3600000, LIVE },
	{ "idle_timeout_ms", K_U32, BF(idle_timeout_ms), 1, 3600000, LIVE },
	{ "health_interval_ms", K_U32, BF(health_interval_ms), 0, 3600000, RESTART },
	{ "breaker_failures", K_U32, BF(breaker_failures), 1, 1000, LIVE },
	{ "breaker_open_ms", K_U32, BF(breaker_open_ms), 1, 3600000, LIVE },
};
#define BACKEND_KEY_MODELS 1u
#define BACKEND_KEY_URL 9u

static const struct key_spec model_keys[] = {
	{ "context_window", K_U32, MF(context_window), 1, 100000000, LIVE },
	{ "cost_in_per_mtok", K_COST, MF(cost_in_per_mtok), 0, 1000000, LIVE },
	{ "cost_out_per_mtok", K_COST, MF(cost_out_per_mtok), 0, 1000000, LIVE },
};

static const struct key_spec agent_keys[] = {
	{ "model", K_MODEL, AF(model), 0, 0, RESTART },
	{ "description", K_TEXT, AF(description), 0, FSIZE(conf_agent, description), RESTART },
	{ "system_prompt", K_TEXT, AF(system_prompt), 0, FSIZE(conf_agent, system_prompt), RESTART },
};
#define AGENT_KEY_MODEL 0u

/* device and ipv4 are indexes 0 and 1: a port must set both. */
static const struct key_spec port_keys[] = {
	{ "device", K_DEVICE, PF(device), 0, FSIZE(conf_port, device), RESTART },
	{ "ipv4", K_IPV4_PREFIX, 0, 1, 32, RESTART },
	{ "gateway", K_IPV4, PF(gateway), 0, 0, RESTART },
	{ "mtu", K_U32, PF(mtu), 576, 9000, RESTART },
	{ "rx_desc", K_POW2, PF(rx_desc), 64, 16384, RESTART },
	{ "tx_desc", K_POW2, PF(tx_desc), 64, 16384, RESTART },
	{ "mbufs", K_U32, PF(mbufs), 255, 16777215, RESTART },
};
#define PORT_KEY_GATEWAY 2u

const struct section_spec conf_sections[] = {
	{ "dataplane", dataplane_keys, SLUICE_ARRAY_LEN(dataplane_keys), SUB_NONE, 0, RESTART },
	{ "tcp", tcp_keys, SLUICE_ARRAY_LEN(tcp_keys), SUB_NONE, 0, RESTART },
	{ "channel", channel_keys, SLUICE_ARRAY_LEN(channel_keys), SUB_NONE, 0, RESTART },
	{ "control", control_keys, SLUICE_ARRAY_LEN(control_keys), SUB_NONE, 0, RESTART },
	{ "auth", auth_keys, SLUICE_ARRAY_LEN(auth_keys), SUB_NONE, 0, RESTART },
	{ "batching", batching_keys, SLUICE_ARRAY_LEN(batching_keys), SUB_NONE, 0, RESTART },
	{ "limits", limits_keys, SLUICE_ARRAY_LEN(limits_keys), SUB_NONE, 0, RESTART },
	{ "tls", tls_keys, SLUICE_ARRAY_LEN(tls_keys), SUB_NONE, 0, RESTART },
	{ "dashboard", dashboard_keys, SLUICE_ARRAY_LEN(dashboard_keys), SUB_NONE, 0, RESTART },
	{ "log", log_keys, SLUICE_ARRAY_LEN(log_keys), SUB_NONE, 0, RESTART },
};
const size_t conf_nsections = SLUICE_ARRAY_LEN(conf_sections);

const struct section_spec conf_backend_section = {
	"backend", backend_keys, SLUICE_ARRAY_LEN(backend_keys), SUB_BACKEND, 0x1u, LIVE
};
const struct section_spec conf_model_section = {
	"model", model_keys, SLUICE_ARRAY_LEN(model_keys), SUB_MODEL, 0, LIVE
};
const struct section_spec conf_agent_section = {
	"agent", agent_keys, SLUICE_ARRAY_LEN(agent_keys), SUB_AGENT, 1u << AGENT_KEY_MODEL, RESTART
};
const struct section_spec conf_role_limits_section = {
	"limits", role_limits_keys, SLUICE_ARRAY_LEN(role_limits_keys), SUB_LIMITS, 0, LIVE
};
const struct section_spec conf_port_section = {
	"port", port_keys, SLUICE_ARRAY_LEN(port_keys), SUB_PORT, 0x3u, RESTART
};
const struct section_spec conf_cert_section = {
	"cert", cert_keys, SLUICE_ARRAY_LEN(cert_keys), SUB_CERT, 0x3u, RESTART
};

const struct section_spec *conf_sub_spec(enum sub_kind k)
{
	switch (k) {
	case SUB_BACKEND:
		return &conf_backend_section;
	case SUB_MODEL:
		return &conf_model_section;
	case SUB_AGENT:
		return &conf_agent_section;
	case SUB_PORT:
		return &conf_port_section;
	case SUB_CERT:
		return &conf_cert_section;
	case SUB_LIMITS:
		return &conf_role_limits_section;
	default:
		return NULL;
	}
}

_Static_assert(SLUICE_ARRAY_LEN(dataplane_keys) <= 32 && SLUICE_ARRAY_LEN(tcp_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(channel_keys) <= 32 && SLUICE_ARRAY_LEN(control_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(auth_keys) <= 32 && SLUICE_ARRAY_LEN(batching_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(limits_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(backend_keys) <= 32 && SLUICE_ARRAY_LEN(agent_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(port_keys) <= 32 && SLUICE_ARRAY_LEN(tls_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(cert_keys) <= 32 && SLUICE_ARRAY_LEN(model_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(dashboard_keys) <= 32 && SLUICE_ARRAY_LEN(log_keys) <= 32,
	       "seen_keys is a 32-bit mask");
_Static_assert(SLUICE_ARRAY_LEN(conf_sections) <= 32, "seen_sections is a 32-bit mask");
_Static_assert(CONF_SOCK_PATH_MAX <= CONF_PATH_MAX, "admin_socket must fit its field");
_Static_assert(sizeof(((struct sluice_conf *)0)->listen_addr) >= INET_ADDRSTRLEN,
	       "listen_addr must hold a dotted quad");
_Static_assert(CONF_MAX_PORTS <= 10, "[port.N] takes a single digit");
_Static_assert(offsetof(struct conf_backend, name) == 0 && offsetof(struct conf_agent, name) == 0 &&
		       offsetof(struct conf_cert, name) == 0,
	       "open_named finds an entry's name at its start");

void conf_backend_defaults(struct conf_backend *be)
{
	memset(be, 0, sizeof(*be));
	be->type = CONF_BACKEND_SYNTHETIC;
	be->ttft_ms = 200;
	be->tokens_per_s = 20;
	be->answer_tokens = 32;
	be->max_concurrency = 0;
	be->max_queue = 64;
	be->weight = 1;
	be->context_window = 8192;
	be->connect_timeout_ms = 5000;
	be->first_token_timeout_ms = 60000;
	be->idle_timeout_ms = 30000;
	be->health_interval_ms = 10000;
	be->breaker_failures = 5;
	be->breaker_open_ms = 30000;
}

void conf_model_defaults(struct conf_model *m)
{
	memset(m, 0, sizeof(*m));
	m->context_window = 8192;
}

/* A synthetic backend makes up its answers for the models it lists; a
 * network backend needs somewhere to go, and may leave its models to what
 * its health check finds. */
int conf_close_backend(struct parser *p)
{
	const struct conf_backend *be = (const struct conf_backend *)p->obj;
	bool net = be->type != CONF_BACKEND_SYNTHETIC;
	if (!net && !(p->seen_keys & (1u << BACKEND_KEY_MODELS)))
		return conf_fail(p, "backend '%s' has no models", p->sub_name);
	if (net && !(p->seen_keys & (1u << BACKEND_KEY_URL)))
		return conf_fail(p, "backend '%s' has no url", p->sub_name);
	return 0;
}

/* A model some backend may serve: listed, or any backend that learns its
 * models from its health check. */
static bool conf_model_servable(const struct sluice_conf *c, const char *model)
{
	if (conf_backend_for_model(c, model))
		return true;
	for (uint32_t b = 0; b < c->nbackends; b++)
		if (c->backends[b].nmodels == 0)
			return true;
	return false;
}

static void port_defaults(struct conf_port *port)
{
	memset(port, 0, sizeof(*port));
	port->mtu = 1500;
	port->rx_desc = 1024;
	port->tx_desc = 1024;
	port->mbufs = 16383;
}

/* Its gateway must be reachable on its subnet, and its mbuf pool must
 * outnumber the descriptors it fills. */
int conf_close_port(struct parser *p)
{
	const struct conf_port *port = (const struct conf_port *)p->obj;
	if (p->gateway_line && port->gateway) {
		uint32_t mask = htonl(port->prefix == 32 ? UINT32_MAX : ~(UINT32_MAX >> port->prefix));
		if ((port->gateway & mask) != (port->ipv4 & mask)) {
			char gw[INET_ADDRSTRLEN], ip[INET_ADDRSTRLEN];
			if (!inet_ntop(AF_INET, &port->gateway, gw, sizeof(gw)) ||
			    !inet_ntop(AF_INET, &port->ipv4, ip, sizeof(ip)))
				return conf_fail(p, "internal error: inet_ntop");
			p->line = p->gateway_line;
			return conf_fail(p, "gateway: %s is outside %s/%u", gw, ip, port->prefix);
		}
	}
	if (port->mbufs <= port->rx_desc + port->tx_desc)
		return conf_fail(p, "port '%s': mbufs %u must exceed rx_desc + tx_desc (%u)", p->sub_name,
			    port->mbufs, port->rx_desc + port->tx_desc);
	return 0;
}

void conf_defaults(struct sluice_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->transport = CONF_TRANSPORT_KERNEL;
	c->workers = 1;
	memcpy(c->listen_addr, "127.0.0.1", sizeof("127.0.0.1"));
	c->listen_port = 8080;
	c->max_conns = 16384;
	c->idle_timeout_s = 60;
	c->header_timeout_s = 10;
	c->sse_keepalive_s = 15;
	c->drain_timeout_s = 30;
	c->ws_max_message = 65536;
	c->max_pending_bytes = 1u << 20;
	c->pin_workers = true;
	c->worker_slice_us = CONF_WORKER_SLICE_US;
	c->ws_deflate = true;
	c->ws_deflate_bits = 15;
	c->ws_deflate_level = 1;
	c->ws_deflate_min = 64;
	memcpy(c->lcores, "1", sizeof("1"));
	c->tcp_snd_buf = 65536;
	c->tcp_rcv_buf = 65536;
	c->tcp_syn_backlog = 1024;
	c->tcp_time_wait_max = 4096;
	c->tcp_keepalive_s = 75;
	for (size_t i = 0; i < CONF_MAX_PORTS; i++)
		port_defaults(&c->ports[i]);
	memcpy(c->chan_path, "/dev/shm/sluice", sizeof("/dev/shm/sluice"));
	c->ring_bytes = 8u << 20;
	memcpy(c->admin_socket, "/tmp/sluice-admin.sock", sizeof("/tmp/sluice-admin.sock"));
	memcpy(c->store, "/tmp/sluice-store", sizeof("/tmp/sluice-store"));
	c->admin_socket_mode = 0600;
	c->token_commit_ms = 50;
	c->store_map_mb = 1024;
	c->store_reserve_mb = 64;
	c->session_ttl_s = 86400;
	static const char *const origins[] = { "http://127.0.0.1:8080", "http://localhost:8080" };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(origins); i++)
		memcpy(c->allowed_origins[i], origins[i], strlen(origins[i]) + 1);
	c->norigins = SLUICE_ARRAY_LEN(origins);
	c->login_max_inflight = 4;
	c->login_fail_user = 5;
	c->login_fail_ip = 20;
	c->login_window_s = 300;
	c->login_inflight_user = 1;
	c->login_inflight_ip = 2;
	c->login_rate_user = 30;
	c->login_rate_ip = 300;
	c->login_rate_window_s = 60;
	c->login_max_sessions = 16;
	c->pwhash_ops = 2;
	c->pwhash_mem_kib = 65536;
	c->cookie_secure = false;
	c->tls_min_version = CONF_TLS_1_2;
	c->tls_ticket_rotate_s = 3600;
	c->tls_handshake_budget_us = 2000;
	c->tls_handshakes_max = 1024;
	c->tls_handshakes_per_addr = 32;
	c->tls_handshake_timeout_s = 10;
	c->tls_hsts_max_age_s = 0;
	c->tls_ocsp_stapling = true;
	c->tls_ocsp_refresh_s = 3600;
	c->batch_mode = CONF_BATCH_ADAPTIVE;
	c->max_delay_us = 2000;
	c->max_bytes = 16384;
	c->log_level = LOG_LVL_INFO;
	c->log_format = LOG_FMT_PLAIN;
	/* Per user: generous enough for a person and their scripts, small
	 * enough that one account cannot take the appliance (docs/api.md
	 * "Limits"). Admins are not limited unless configured. */
	static const uint32_t user_limits[CONF_LIM_N] = {
		[CONF_LIM_STORED_MB] = 256, [CONF_LIM_SESSIONS] = 10000,
		[CONF_LIM_MESSAGES_PER_MIN] = 120, [CONF_LIM_CONCURRENT] = 16,
		[CONF_LIM_TOKENS_PER_MIN] = 1000000, [CONF_LIM_TOKENS_PER_DAY] = 50000000,
	};
	memcpy(c->role_limits[CONF_ROLE_USER].v, user_limits, sizeof(user_limits));
	c->conns_per_ip = 8192;
	c->body_budget_mb = 64;
	c->worker_mem_mb = 1024;
	c->dash_heartbeat_ms = 30000;
	c->dash_max_pending = 256u << 10;
	c->dash_alert_ring_pct = 80;
	c->dash_alert_store_pct = 80;
	c->dash_alert_connections = 0;
	c->dash_alert_pending_mb = 256;
	c->nbackends = 0;
	c->nagents = 0;
}

bool conf_key_set(const struct parser *p, const char *sec, const char *key)
{
	for (size_t i = 0; i < conf_nsections; i++) {
		if (strcmp(conf_sections[i].name, sec) != 0)
			continue;
		for (size_t j = 0; j < conf_sections[i].nkeys; j++)
			if (strcmp(conf_sections[i].keys[j].name, key) == 0)
				return (p->top_keys[i] >> j) & 1u;
	}
	return false;
}

/* tls = on needs a certificate; the redirect listener exists only for it
 * and needs a port of its own; Secure cookies follow TLS unless set. */
static int finish_tls(struct parser *p)
{
	struct sluice_conf *c = p->c;

	if (c->tls && c->ncerts == 0) {
		p->line = p->tls_line;
		return conf_fail(p, "tls = on needs a [cert.NAME] section");
	}
	if (c->redirect_port && !c->tls) {
		p->line = p->redirect_line;
		return conf_fail(p, "redirect_listen needs tls = on");
	}
	if (c->redirect_port && c->redirect_port == c->listen_port) {
		p->line = p->redirect_line;
		return conf_fail(p, "redirect_listen: port %u is the listen port", c->redirect_port);
	}
	if (!conf_key_set(p, "auth", "cookie_secure"))
		c->cookie_secure = c->tls;
	return 0;
}

int conf_finish(struct parser *p)
{
	struct sluice_conf *c = p->c;
	if (finish_tls(p) != 0)
		return -1;
	if (c->nbackends == 0)
		return conf_fail_file(p->err, p->errlen, p->file, "no [backend.NAME] section");
	for (uint32_t i = 0; i < c->nagents; i++) {
		if (conf_model_servable(c, c->agents[i].model))
			continue;
		p->line = p->agent_model_line[i];
		return conf_fail(p, "agent '%s': model '%s' is not served by any backend",
			    c->agents[i].name, c->agents[i].model);
	}
	if (c->nagents == 0) {
		struct conf_agent *ag = &c->agents[c->nagents++];
		memcpy(ag->name, "assistant", sizeof("assistant"));
		const char *m = NULL;
		for (uint32_t b = 0; b < c->nbackends && !m; b++)
			if (c->backends[b].nmodels)
				m = c->backends[b].models[0];
		if (!m)
			return conf_fail_file(p->err, p->errlen, p->file,
					      "no [agent.NAME] and no backend lists models: give one of them a model");
		memcpy(ag->model, m, strlen(m) + 1);
		memcpy(ag->description, "General-purpose assistant",
		       sizeof("General-purpose assistant"));
	}
	if (c->transport == CONF_TRANSPORT_DPDK && !c->ports[0].present) {
		p->line = p->transport_line;
		return conf_fail(p, "transport = dpdk needs a [port.0] section");
	}
	if (p->lcores_line) {
		if (p->nlcores != c->workers) {
			p->line = p->lcores_line;
			return conf_fail(p, "lcores: %u lcores for %u workers", p->nlcores, c->workers);
		}
	} else {
		int n = c->workers == 1 ? snprintf(c->lcores, sizeof(c->lcores), "1")
					: snprintf(c->lcores, sizeof(c->lcores), "1-%u", c->workers);
		if (n < 0 || (size_t)n >= sizeof(c->lcores))
			return conf_fail_file(p->err, p->errlen, p->file, "internal error: lcores");
	}
	return 0;
}

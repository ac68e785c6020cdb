/*
 * libcurl's multi interface inside the control loop: libcurl says which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION → cpl_add_fd / cpl_mod_fd /
 * cpl_del_fd) and when to call it back (CURLMOPT_TIMERFUNCTION → one loop
 * timer); the loop hands readiness back with curl_multi_socket_action. No
 * thread per request and no blocking call: connects, TLS and transfers all
 * advance from loop events. (Host names are resolved by libcurl's resolver,
 * which in Debian's build runs getaddrinfo on a helper thread of its own and
 * never blocks the loop; IP addresses need no resolving.)
 *
 * libcurl forbids adding or removing a transfer from inside its callbacks:
 * a transfer started meanwhile is added when socket_action returns, and the
 * calls cancelled meanwhile are finished then (bk_reap).
 */
#include "backends/bk_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"
#include "sluice/log.h"

/* A socket libcurl asked to watch. */
struct bk_sock {
	int fd;
	uint32_t events;
};

static void bk_curl_run(struct bk_mgr *m, curl_socket_t s, int flags);

static void bk_curl_on_fd(void *arg, int fd, uint32_t events)
{
	struct bk_mgr *m = arg;
	int flags = 0;
	if (events & CPL_READ)
		flags |= CURL_CSELECT_IN;
	if (events & CPL_WRITE)
		flags |= CURL_CSELECT_OUT;
	if (events & CPL_ERROR)
		flags |= CURL_CSELECT_ERR;
	bk_curl_run(m, fd, flags);
}

static int bk_curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)easy;
	struct bk_mgr *m = userp;
	struct bk_sock *bs = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (bs) {
			cpl_del_fd(m->loop, bs->fd);
			free(bs);
			curl_multi_assign(m->multi, s, NULL);
		}
		return 0;
	}
	uint32_t ev = (what & CURL_POLL_IN ? CPL_READ : 0) | (what & CURL_POLL_OUT ? CPL_WRITE : 0);
	if (!bs) {
		bs = calloc(1, sizeof(*bs));
		if (!bs)
			return -1;
		bs->fd = s;
		bs->events = ev;
		if (cpl_add_fd(m->loop, s, ev, bk_curl_on_fd, m) < 0) {
			LOG_ERROR("backends: cannot watch socket %d", s);
			free(bs);
			return -1;
		}
		curl_multi_assign(m->multi, s, bs);
		return 0;
	}
	if (bs->events != ev) {
		bs->events = ev;
		if (cpl_mod_fd(m->loop, s, ev) < 0)
			LOG_ERROR("backends: cannot change the watch of socket %d", s);
	}
	return 0;
}

static int bk_curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	struct bk_mgr *m = userp;
	if (timeout_ms < 0) {
		cpl_timer_cancel(m->loop, &m->curl_timer);
		return 0;
	}
	if (cpl_timer_arm(m->loop, &m->curl_timer, sluice_now_ns() + (uint64_t)timeout_ms * 1000000ull) < 0)
		return -1;
	return 0;
}

static void bk_curl_on_timer(void *arg, uint64_t now_ns)
{
	(void)now_ns;
	bk_curl_run(arg, CURL_SOCKET_TIMEOUT, 0);
}

/* Hands libcurl one event, then: the transfers started meanwhile, the
 * finished transfers, and what waited for libcurl to return. */
static void bk_curl_run(struct bk_mgr *m, curl_socket_t s, int flags)
{
	int running = 0;
	m->in_curl = true;
	curl_multi_socket_action(m->multi, s, flags, &running);
	m->in_curl = false;
	for (;;) {
		while (m->adds) {
			struct bk_xfer *x = m->adds;
			m->adds = x->next_add;
			x->next_add = NULL;
			x->adding = false;
			if (curl_multi_add_handle(m->multi, x->easy) == CURLM_OK) {
				x->active = true;
			} else {
				x->active = true; /* so that on_done sees a transfer to stop */
				x->on_done(x, CURLE_FAILED_INIT, 0, "libcurl refused the transfer");
			}
		}
		int left;
		CURLMsg *msg = curl_multi_info_read(m->multi, &left);
		if (!msg) {
			if (!m->adds)
				break;
			continue;
		}
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct bk_xfer *x = NULL;
		long status = 0;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		if (x)
			x->on_done(x, msg->data.result, status, x->errbuf);
	}
	bk_reap(m);
}

static size_t bk_curl_write_cb(char *p, size_t size, size_t nmemb, void *userp)
{
	struct bk_xfer *x = userp;
	size_t n = size * nmemb;
	return x->on_data(x, p, n) ? n : 0;
}

int bk_curl_init(struct bk_mgr *m, char *err, size_t errlen)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "libcurl: global initialisation failed");
		return -1;
	}
	m->curl_global = true;
	m->multi = curl_multi_init();
	if (!m->multi) {
		snprintf(err, errlen, "libcurl: cannot create a multi handle");
		curl_global_cleanup();
		m->curl_global = false;
		return -1;
	}
	cpl_timer_init(&m->curl_timer, bk_curl_on_timer, m);
	curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, bk_curl_socket_cb);
	curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
	curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, bk_curl_timer_cb);
	curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
	/* Keep-alive connections to each backend are reused across requests,
	 * so most requests pay no connect or TLS handshake. */
	curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, 256L);
	return 0;
}

void bk_curl_free(struct bk_mgr *m)
{
	if (m->multi) {
		cpl_timer_cancel(m->loop, &m->curl_timer);
		curl_multi_cleanup(m->multi);
		m->multi = NULL;
	}
	if (m->curl_global) {
		curl_global_cleanup();
		m->curl_global = false;
	}
}

int bk_curl_prepare(struct bk_mgr *m, struct bk_xfer *x, const char *url, const struct bk_backend *be,
		    uint32_t timeout_ms)
{
	x->m = m;
	x->easy = curl_easy_init();
	if (!x->easy)
		return -1;
	x->errbuf[0] = '\0';
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, bk_curl_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)be->cfg.connect_timeout_ms);
	if (timeout_ms)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (be->cfg.ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, be->cfg.ca_file);
	/* Answers are streamed as they come: no decoding layer in between. */
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	return 0;
}

int bk_curl_start(struct bk_xfer *x)
{
	struct bk_mgr *m = x->m;
	if (m->in_curl) {
		x->adding = true;
		x->next_add = m->adds;
		m->adds = x;
		return 0;
	}
	if (curl_multi_add_handle(m->multi, x->easy) != CURLM_OK)
		return -1;
	x->active = true;
	return 0;
}

void bk_curl_stop(struct bk_xfer *x)
{
	struct bk_mgr *m = x->m;
	if (x->adding) {
		for (struct bk_xfer **pp = &m->adds; *pp; pp = &(*pp)->next_add) {
			if (*pp == x) {
				*pp = x->next_add;
				break;
			}
		}
		x->adding = false;
		x->next_add = NULL;
	}
	if (x->easy) {
		if (x->active)
			curl_multi_remove_handle(m->multi, x->easy);
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
	}
	x->active = false;
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	free(x->body);
	x->body = NULL;
}

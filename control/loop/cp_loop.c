#include "loop/cp_loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "sluice/log.h"

enum { CPL_EV_BELL = 1, CPL_EV_TIMER = 2, CPL_EV_SIGNAL = 3, CPL_EV_WATCH = 16 };

static int cpl_watch(int ep, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int cpl_init(struct cp_loop *l, struct chan_region *r, struct api *api, struct chan_out *out)
{
	memset(l, 0, sizeof(*l));
	l->r = r;
	l->api = api;
	l->out = out;
	l->ep = l->tfd = l->sfd = -1;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		goto fail;
	l->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->sfd < 0 || l->tfd < 0 || l->ep < 0)
		goto fail;
	int bell = chan_doorbell_fd(r, 0);
	if (bell < 0 || cpl_watch(l->ep, bell, CPL_EV_BELL) < 0 ||
	    cpl_watch(l->ep, l->tfd, CPL_EV_TIMER) < 0 || cpl_watch(l->ep, l->sfd, CPL_EV_SIGNAL) < 0)
		goto fail;
	l->peer_epoch = chan_peer_epoch(r);
	return 0;
fail:
	LOG_ERROR("control loop setup: %s", strerror(errno));
	cpl_free(l);
	return -1;
}

void cpl_free(struct cp_loop *l)
{
	if (l->ep >= 0)
		close(l->ep);
	if (l->tfd >= 0)
		close(l->tfd);
	if (l->sfd >= 0)
		close(l->sfd);
	l->ep = l->tfd = l->sfd = -1;
}

static uint32_t cpl_drain(struct cp_loop *l)
{
	uint32_t total = 0;
	uint32_t nw = chan_nworkers(l->r);
	for (uint32_t w = 0; w < nw; w++) {
		struct chan_cons *c = chan_consumer(l->r, w);
		const struct chan_rec *rec;
		uint32_t n = 0;
		while (n < CPL_DRAIN_BUDGET && (rec = chan_peek(c)) != NULL) {
			api_dispatch(l->api, rec->type, rec->payload, rec->len);
			chan_consume(c);
			n++;
		}
		if (n)
			chan_release(c);
		total += n;
	}
	return total;
}

/* Sets the flag on every ring; false (flags cleared) when one is not empty. */
static bool cpl_prepare_sleep(struct cp_loop *l)
{
	uint32_t nw = chan_nworkers(l->r);
	for (uint32_t w = 0; w < nw; w++) {
		if (!chan_prepare_sleep(chan_consumer(l->r, w))) {
			for (uint32_t k = 0; k < w; k++)
				chan_cancel_sleep(chan_consumer(l->r, k));
			return false;
		}
	}
	return true;
}

int cpl_add_fd(struct cp_loop *l, int fd, void (*cb)(void *arg), void *arg)
{
	if (l->nwatch == CPL_MAX_WATCH) {
		LOG_ERROR("control loop: more than %u watched fds", CPL_MAX_WATCH);
		return -1;
	}
	/* The tag is the slot; slots are compacted on removal, so re-tag. */
	uint32_t i = l->nwatch;
	if (cpl_watch(l->ep, fd, CPL_EV_WATCH + i) < 0) {
		LOG_ERROR("control loop: epoll_ctl add fd %d: %s", fd, strerror(errno));
		return -1;
	}
	l->watch[i] = (struct cpl_watch){ .fd = fd, .cb = cb, .arg = arg };
	l->nwatch++;
	return 0;
}

void cpl_del_fd(struct cp_loop *l, int fd)
{
	for (uint32_t i = 0; i < l->nwatch; i++) {
		if (l->watch[i].fd != fd)
			continue;
		epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
		l->nwatch--;
		if (i != l->nwatch) {
			/* Move the last watch into the hole and re-tag its fd. */
			struct epoll_event ev = { .events = EPOLLIN, .data.u64 = CPL_EV_WATCH + i };
			l->watch[i] = l->watch[l->nwatch];
			if (epoll_ctl(l->ep, EPOLL_CTL_MOD, l->watch[i].fd, &ev) < 0)
				LOG_ERROR("control loop: epoll_ctl mod: %s", strerror(errno));
		}
		return;
	}
}

static void cpl_cancel_sleep(struct cp_loop *l)
{
	uint32_t nw = chan_nworkers(l->r);
	for (uint32_t w = 0; w < nw; w++)
		chan_cancel_sleep(chan_consumer(l->r, w));
}

static void cpl_arm(struct cp_loop *l, uint64_t deadline_ns)
{
	if (deadline_ns == l->armed_ns)
		return;
	struct itimerspec its = { 0 };
	its.it_value.tv_sec = (time_t)(deadline_ns / 1000000000ull);
	its.it_value.tv_nsec = (long)(deadline_ns % 1000000000ull);
	if (timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		LOG_ERROR("timerfd_settime: %s", strerror(errno));
		return;
	}
	l->armed_ns = deadline_ns;
}

/* Waits for events (timeout_ms -1: until one; 0: only what is ready) and
 * serves them. */
static void cpl_wait(struct cp_loop *l, int timeout_ms)
{
	struct epoll_event ev[8 + CPL_MAX_WATCH];
	int n = epoll_wait(l->ep, ev, (int)SLUICE_ARRAY_LEN(ev), timeout_ms);
	if (n < 0 && errno != EINTR)
		LOG_ERROR("epoll_wait: %s", strerror(errno));
	for (int i = 0; i < n; i++) {
		switch (ev[i].data.u64) {
		case CPL_EV_BELL:
			chan_doorbell_drain(l->r, 0);
			break;
		case CPL_EV_TIMER: {
			uint64_t exp;
			if (read(l->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
				LOG_ERROR("timerfd read: %s", strerror(errno));
			l->armed_ns = 0;
			break;
		}
		case CPL_EV_SIGNAL: {
			struct signalfd_siginfo si;
			if (read(l->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				LOG_INFO("signal %u: shutting down", si.ssi_signo);
				l->stop = true;
			}
			break;
		}
		default: {
			/* A callback may remove watches (slots are compacted), so a
			 * later event of this batch may reach another slot's callback:
			 * callbacks read nonblocking fds and tolerate a spurious call. */
			uint64_t w = ev[i].data.u64 - CPL_EV_WATCH;
			if (w < l->nwatch)
				l->watch[w].cb(l->watch[w].arg);
			break;
		}
		}
	}
}

uint32_t cpl_turn(struct cp_loop *l, bool may_block)
{
	uint64_t now = sluice_now_ns();
	if (now >= l->next_hb_ns) {
		chan_heartbeat(l->r, now);
		l->next_hb_ns = now + CPL_HEARTBEAT_NS;
		/* Without a dataplane control keeps going: answers continue and
		 * what does not fit in the rings is dropped and counted. */
		bool alive = chan_peer_alive(l->r, now, CPL_PEER_TIMEOUT_NS);
		if (alive != l->peer_alive) {
			LOG_INFO("dataplane %s", alive ? "attached" : "not responding");
			l->peer_alive = alive;
		}
	}
	uint32_t epoch = chan_peer_epoch(l->r);
	if (epoch != l->peer_epoch) {
		/* A new dataplane: the old one's connections, and every record
		 * still queued for them, are gone. */
		LOG_INFO("dataplane epoch %u -> %u: dropping all subscriptions", l->peer_epoch, epoch);
		l->peer_epoch = epoch;
		chat_drop_all_subs(&l->api->chat);
		co_reset(l->out);
	}
	uint32_t handled = cpl_drain(l);
	uint64_t next = chat_run_timers(&l->api->chat, sluice_now_ns());
	co_flush(l->out);
	if (handled || !may_block || l->stop) {
		/* A busy loop never sleeps, so serve the watched fds (store
		 * completions, login results, the admin socket, signals) without
		 * waiting; otherwise they would starve until the rings go quiet. */
		if (!l->stop)
			cpl_wait(l, 0);
		return handled;
	}

	if (next > l->next_hb_ns)
		next = l->next_hb_ns;
	for (uint32_t w = 0; w < l->out->nworkers; w++) {
		if (co_backlog_bytes(l->out, w)) {
			uint64_t retry = sluice_now_ns() + CPL_BACKLOG_RETRY_NS;
			if (retry < next)
				next = retry;
			break;
		}
	}
	if (next <= sluice_now_ns())
		return handled;
	if (!cpl_prepare_sleep(l))
		return handled;
	cpl_arm(l, next);
	cpl_wait(l, -1);
	cpl_cancel_sleep(l);
	return handled;
}

int cpl_run(struct cp_loop *l)
{
	while (!l->stop)
		cpl_turn(l, true);
	return 0;
}

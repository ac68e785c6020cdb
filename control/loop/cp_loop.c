#include "loop/cp_loop.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "sluice/chan_proto.h"
#include "sluice/log.h"

/* Record types are small numbers (chan_proto.h); handlers are indexed by type. */
#define CPL_REC_TYPES 64u
/* Events taken from epoll per wait. */
#define CPL_WAIT_EVENTS 64

/* A watched fd. epoll's data points here; a removed watch is only marked
 * dead and freed after the event batch, so a later event of the same batch
 * never reaches freed memory or the fd's next owner. */
struct cpl_watch {
	int fd;
	uint32_t events;
	cpl_fd_fn fn;
	void *arg;
	bool dead;
	struct cpl_watch *next_dead;
};

struct cpl_rec_handler {
	cpl_record_fn fn;
	void *arg;
};

struct cpl_hook {
	cpl_fn fn;
	void *arg;
};

struct cpl_hooks {
	struct cpl_hook h[CPL_MAX_HOOKS];
	uint32_t n;
};

struct cp_loop {
	struct chan_region *r;
	int ep;
	int tfd;
	int sfd;
	int bell;
	uint32_t epoch;      /* ours */
	uint32_t peer_epoch; /* the dataplane's, as last seen */
	bool peer_alive;     /* last seen state, to log transitions only */
	bool stop;
	bool withdrawing;  /* first SIGTERM/SIGINT seen: heartbeat withdrawn */
	struct cpl_timer withdraw; /* then stop */
	uint64_t now;
	uint64_t next_hb_ns;
	uint64_t armed_ns; /* current timerfd deadline, 0 when disarmed */
	struct timer_heap timers;
	struct cpl_rec_handler rec[CPL_REC_TYPES];
	struct cpl_hooks before_sleep;
	struct cpl_hooks peer_reset;
	cpl_fn hup_fn;           /* SIGHUP: the configuration reload */
	void *hup_arg;
	struct cpl_watch **byfd; /* owned; indexed by fd */
	uint32_t nbyfd;
	struct cpl_watch *dead;  /* removed during a batch, freed after it */
	struct cpl_stats stats;
};

static uint32_t cpl_epoll_events(uint32_t ev)
{
	return (ev & CPL_READ ? EPOLLIN : 0u) | (ev & CPL_WRITE ? EPOLLOUT : 0u);
}

static struct cpl_watch *cpl_watch_of(const struct cp_loop *l, int fd)
{
	return fd >= 0 && (uint32_t)fd < l->nbyfd ? l->byfd[fd] : NULL;
}

int cpl_add_fd(struct cp_loop *l, int fd, uint32_t events, cpl_fd_fn fn, void *arg)
{
	if (fd < 0 || cpl_watch_of(l, fd)) {
		errno = fd < 0 ? EBADF : EEXIST;
		return -1;
	}
	if ((uint32_t)fd >= l->nbyfd) {
		uint32_t n = l->nbyfd ? l->nbyfd : 64;
		while (n <= (uint32_t)fd)
			n *= 2;
		struct cpl_watch **v = realloc(l->byfd, n * sizeof(*v));
		if (!v)
			return -1;
		memset(v + l->nbyfd, 0, (n - l->nbyfd) * sizeof(*v));
		l->byfd = v;
		l->nbyfd = n;
	}
	struct cpl_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -1;
	*w = (struct cpl_watch){ .fd = fd, .events = events, .fn = fn, .arg = arg };
	struct epoll_event ev = { .events = cpl_epoll_events(events), .data.ptr = w };
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;
		free(w);
		errno = e;
		return -1;
	}
	l->byfd[fd] = w;
	return 0;
}

int cpl_mod_fd(struct cp_loop *l, int fd, uint32_t events)
{
	struct cpl_watch *w = cpl_watch_of(l, fd);
	if (!w) {
		errno = ENOENT;
		return -1;
	}
	if (w->events == events)
		return 0;
	struct epoll_event ev = { .events = cpl_epoll_events(events), .data.ptr = w };
	if (epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -1;
	w->events = events;
	return 0;
}

void cpl_del_fd(struct cp_loop *l, int fd)
{
	struct cpl_watch *w = cpl_watch_of(l, fd);
	if (!w)
		return;
	epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
	l->byfd[fd] = NULL;
	w->dead = true;
	w->next_dead = l->dead;
	l->dead = w;
}

static void cpl_free_dead(struct cp_loop *l)
{
	while (l->dead) {
		struct cpl_watch *w = l->dead;
		l->dead = w->next_dead;
		free(w);
	}
}

/* ---- the loop's own fds ------------------------------------------------ */

static void cpl_on_bell(void *arg, int fd, uint32_t events)
{
	struct cp_loop *l = arg;
	(void)fd;
	(void)events;
	chan_doorbell_drain(l->r, 0);
}

static void cpl_on_timerfd(void *arg, int fd, uint32_t events)
{
	struct cp_loop *l = arg;
	uint64_t exp;
	(void)events;
	if (read(fd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
		LOG_ERROR("timerfd read: %s", strerror(errno));
	l->armed_ns = 0;
}

static void cpl_on_withdrawn(void *arg, uint64_t now_ns)
{
	(void)now_ns;
	cpl_stop(arg);
}

/*
 * The first signal withdraws: the heartbeat turns CHAN_HB_WITHDRAWN, so
 * the dataplane's /readyz is 503 at once and its workers stop forwarding at
 * their next check; for CPL_WITHDRAW_NS control still answers what they
 * forwarded until then, so no request is cut (readiness means serving).
 * Then the loop ends. A second signal, or no dataplane to tell, ends it now.
 * SIGHUP is not a stop: it goes to the hook cpl_on_hangup() set (reload).
 */
static void cpl_on_signal(void *arg, int fd, uint32_t events)
{
	struct cp_loop *l = arg;
	struct signalfd_siginfo si;
	(void)events;
	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	if (si.ssi_signo == SIGHUP) {
		if (l->hup_fn)
			l->hup_fn(l->hup_arg);
		else
			LOG_INFO("SIGHUP: nothing to reload");
		return;
	}
	if (l->withdrawing || !l->peer_alive ||
	    cpl_timer_arm(l, &l->withdraw, sluice_now_ns() + CPL_WITHDRAW_NS) < 0) {
		LOG_INFO("signal %u: shutting down", si.ssi_signo);
		l->stop = true;
		return;
	}
	LOG_INFO("signal %u: withdrawing from the dataplane, shutting down in %llu ms (again: at once)",
		 si.ssi_signo, (unsigned long long)(CPL_WITHDRAW_NS / 1000000ull));
	l->withdrawing = true;
	chan_heartbeat_stop(l->r);
}

void cpl_on_hangup(struct cp_loop *l, cpl_fn fn, void *arg)
{
	l->hup_fn = fn;
	l->hup_arg = arg;
}

struct cp_loop *cpl_create(struct chan_region *r, char *err, size_t errlen)
{
	struct cp_loop *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "control loop: out of memory");
		return NULL;
	}
	l->r = r;
	l->ep = l->tfd = l->sfd = -1;
	cpl_timer_init(&l->withdraw, cpl_on_withdrawn, l);
	const char *what = "timer heap";
	if (th_init(&l->timers, 64) < 0)
		goto fail;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	what = "sigprocmask";
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		goto fail;
	what = "signalfd, timerfd or epoll";
	l->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->sfd < 0 || l->tfd < 0 || l->ep < 0)
		goto fail;
	l->bell = chan_doorbell_fd(r, 0);
	what = "watching the doorbell, timerfd and signalfd";
	if (l->bell < 0 || cpl_add_fd(l, l->bell, CPL_READ, cpl_on_bell, l) < 0 ||
	    cpl_add_fd(l, l->tfd, CPL_READ, cpl_on_timerfd, l) < 0 ||
	    cpl_add_fd(l, l->sfd, CPL_READ, cpl_on_signal, l) < 0)
		goto fail;
	l->now = sluice_now_ns();
	l->epoch = atomic_load(&chan_header(r)->cp_epoch);
	l->peer_epoch = chan_peer_epoch(r);
	return l;
fail:
	snprintf(err, errlen, "control loop: %s: %s", what, errno ? strerror(errno) : "failed");
	cpl_destroy(l);
	return NULL;
}

void cpl_destroy(struct cp_loop *l)
{
	if (!l)
		return;
	if (l->ep >= 0)
		close(l->ep);
	if (l->tfd >= 0)
		close(l->tfd);
	if (l->sfd >= 0)
		close(l->sfd);
	for (uint32_t i = 0; i < l->nbyfd; i++)
		free(l->byfd[i]);
	free(l->byfd);
	cpl_free_dead(l);
	th_free(&l->timers);
	free(l);
}

struct chan_region *cpl_region(const struct cp_loop *l)
{
	return l->r;
}

uint32_t cpl_epoch(const struct cp_loop *l)
{
	return l->epoch;
}

const struct cpl_stats *cpl_stats(const struct cp_loop *l)
{
	return &l->stats;
}

/* Between heartbeat checks (CPL_HEARTBEAT_NS apart) a dataplane that has
 * just attached would still count as absent, and an operator's command in
 * its first tenth of a second refused: a dead cached state is read afresh. */
bool cpl_peer_alive(const struct cp_loop *l)
{
	return l->peer_alive || chan_peer_alive(l->r, sluice_now_ns(), CPL_PEER_TIMEOUT_NS);
}

uint32_t cpl_peer_epoch(const struct cp_loop *l)
{
	return l->peer_epoch;
}

/* ---- registration ------------------------------------------------------ */

int cpl_on_record(struct cp_loop *l, uint16_t type, cpl_record_fn fn, void *arg)
{
	if (type >= CPL_REC_TYPES || (fn && l->rec[type].fn))
		return -1;
	l->rec[type] = (struct cpl_rec_handler){ fn, arg };
	return 0;
}

static int cpl_hook_add(struct cpl_hooks *hs, cpl_fn fn, void *arg)
{
	if (hs->n == CPL_MAX_HOOKS)
		return -1;
	hs->h[hs->n++] = (struct cpl_hook){ fn, arg };
	return 0;
}

static void cpl_hooks_run(const struct cpl_hooks *hs)
{
	for (uint32_t i = 0; i < hs->n; i++)
		hs->h[i].fn(hs->h[i].arg);
}

int cpl_on_peer_reset(struct cp_loop *l, cpl_fn fn, void *arg)
{
	return cpl_hook_add(&l->peer_reset, fn, arg);
}

int cpl_before_sleep(struct cp_loop *l, cpl_fn fn, void *arg)
{
	return cpl_hook_add(&l->before_sleep, fn, arg);
}

void cpl_timer_init(struct cpl_timer *t, cpl_timer_fn cb, void *arg)
{
	th_node_init(&t->node);
	t->cb = cb;
	t->arg = arg;
}

int cpl_timer_arm(struct cp_loop *l, struct cpl_timer *t, uint64_t deadline_ns)
{
	if (th_schedule(&l->timers, &t->node, deadline_ns) < 0) {
		l->stats.timer_failures++;
		return -1;
	}
	return 0;
}

void cpl_timer_cancel(struct cp_loop *l, struct cpl_timer *t)
{
	th_cancel(&l->timers, &t->node);
}

/* ---- a turn ------------------------------------------------------------ */

static uint32_t cpl_drain(struct cp_loop *l)
{
	uint32_t total = 0;
	uint32_t nw = chan_nworkers(l->r);
	for (uint32_t w = 0; w < nw; w++) {
		struct chan_cons *c = chan_consumer(l->r, w);
		const struct chan_rec *rec;
		uint32_t n = 0;
		while (n < CPL_DRAIN_BUDGET && (rec = chan_peek(c)) != NULL) {
			cpl_dispatch(l, rec->type, rec->payload, rec->len);
			chan_consume(c);
			n++;
		}
		if (n)
			chan_release(c);
		total += n;
	}
	return total;
}

void cpl_dispatch(struct cp_loop *l, uint16_t type, const void *payload, uint32_t len)
{
	l->stats.records++;
	if (!chan_rec_valid(type, payload, len))
		l->stats.invalid_records++;
	else if (type < CPL_REC_TYPES && l->rec[type].fn)
		l->rec[type].fn(l->rec[type].arg, type, payload, len);
	else
		l->stats.unhandled_records++;
}

uint64_t cpl_next_deadline(const struct cp_loop *l)
{
	struct th_node *t = th_peek(&l->timers);
	return t ? t->deadline_ns : UINT64_MAX;
}

uint64_t cpl_now(const struct cp_loop *l)
{
	return l->now;
}

uint64_t cpl_run_due(struct cp_loop *l, uint64_t now_ns)
{
	l->now = now_ns;
	uint32_t budget = l->timers.n;
	struct th_node *n;
	while (budget-- > 0 && (n = th_pop_due(&l->timers, now_ns)) != NULL) {
		struct cpl_timer *t = (struct cpl_timer *)n;
		t->cb(t->arg, now_ns);
	}
	return cpl_next_deadline(l);
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
	struct epoll_event ev[CPL_WAIT_EVENTS];
	int n = epoll_wait(l->ep, ev, CPL_WAIT_EVENTS, timeout_ms);
	if (n < 0 && errno != EINTR)
		LOG_ERROR("epoll_wait: %s", strerror(errno));
	l->now = sluice_now_ns();
	for (int i = 0; i < n; i++) {
		struct cpl_watch *w = ev[i].data.ptr;
		if (w->dead)
			continue;
		uint32_t got = (ev[i].events & EPOLLIN ? CPL_READ : 0u) |
			       (ev[i].events & EPOLLOUT ? CPL_WRITE : 0u) |
			       (ev[i].events & (EPOLLERR | EPOLLHUP) ? CPL_ERROR : 0u);
		w->fn(w->arg, w->fd, got);
	}
	cpl_free_dead(l);
}

/* Heartbeat, liveness log, and the peer-reset hooks on a new dataplane epoch. */
static void cpl_check_peer(struct cp_loop *l)
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
		LOG_INFO("dataplane epoch %u -> %u: dropping all subscriptions", l->peer_epoch, epoch);
		l->peer_epoch = epoch;
		cpl_hooks_run(&l->peer_reset);
	}
}

uint32_t cpl_turn(struct cp_loop *l, bool may_block)
{
	l->stats.turns++;
	l->now = sluice_now_ns();
	cpl_check_peer(l);
	uint32_t handled = cpl_drain(l);
	cpl_run_due(l, sluice_now_ns());
	cpl_hooks_run(&l->before_sleep);

	uint64_t next = cpl_next_deadline(l);
	if (l->next_hb_ns < next)
		next = l->next_hb_ns;
	/* A busy loop never sleeps, but it still serves the fds (store
	 * completions, login results, the admin socket, backends, signals)
	 * every turn without waiting, so none of them starves. */
	if (handled || !may_block || l->stop || next <= sluice_now_ns() || !cpl_prepare_sleep(l)) {
		if (!l->stop)
			cpl_wait(l, 0);
		return handled;
	}
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

void cpl_stop(struct cp_loop *l)
{
	l->stop = true;
}

bool cpl_stopping(const struct cp_loop *l)
{
	return l->stop;
}

/*
 * impair: an impairing Ethernet bridge between two interfaces, for tests on
 * machines whose kernel has no netem. Every frame arriving on A leaves on B
 * and every frame arriving on B leaves on A, after impair_core decided to
 * drop, corrupt, duplicate, hold back or delay it. AF_PACKET raw sockets,
 * promiscuous, nonblocking, one poll loop; see docs/testing.md.
 */
#include "impair_core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RX_BATCH 256          /* frames read per socket per loop turn */
#define SOCK_BUF (8 << 20)    /* kernel buffers: absorb bursts while we sleep */

static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_dump;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		g_dump = 1;
	else
		g_stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fputs("usage: impair --a IFACE --b IFACE [options]\n"
	      "Bridges every frame between A and B with impairments. A value X sets both\n"
	      "directions; X:Y sets A->B to X and B->A to Y.\n"
	      "  --loss P          drop P percent of frames\n"
	      "  --reorder P       hold P percent back until 1..GAP later frames went out\n"
	      "  --reorder-gap N   GAP above (default 3, max 64)\n"
	      "  --reorder-hold MS release a held frame after MS when nothing follows (default 10)\n"
	      "  --dup P           send P percent twice\n"
	      "  --corrupt P       flip one random byte past the Ethernet header in P percent\n"
	      "  --delay MS        delay every frame by MS\n"
	      "  --jitter MS       vary the delay uniformly by +-MS (order is kept)\n"
	      "  --queue N         frames queued per direction before tail drop (default 8192)\n"
	      "  --seed N          PRNG seed (default 0); same seed, same decisions\n"
	      "  --duration S      exit after S seconds (default: run until SIGINT/SIGTERM)\n"
	      "Prints \"impair: ready\" once bridging, and counters at exit and on SIGUSR1.\n", f);
}

/* Opens a promiscuous raw socket bound to ifname that sees frames arriving
 * there but not the ones it sends itself. Returns the fd or -1 (message printed). */
static int open_port(const char *ifname, int *mtu)
{
	int fd = -1;
	unsigned idx = if_nametoindex(ifname);
	if (idx == 0) {
		fprintf(stderr, "impair: interface %s: %s\n", ifname, strerror(errno));
		return -1;
	}
	/* Protocol 0 until bound: a socket created with ETH_P_ALL would queue
	 * frames from every interface in the window before bind(). */
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "impair: socket(AF_PACKET): %s\n", strerror(errno));
		return -1;
	}
	struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
	                          .sll_ifindex = (int)idx};
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
		fprintf(stderr, "impair: bind %s: %s\n", ifname, strerror(errno));
		goto fail;
	}
	struct packet_mreq mr = {.mr_ifindex = (int)idx, .mr_type = PACKET_MR_PROMISC};
	if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0) {
		fprintf(stderr, "impair: promiscuous %s: %s\n", ifname, strerror(errno));
		goto fail;
	}
	/* Older kernels lack it; the receive path also skips PACKET_OUTGOING. */
	int one = 1;
	(void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
	int sz = SOCK_BUF;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) != 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) != 0) {
		fprintf(stderr, "impair: SO_RCVBUF %s: %s\n", ifname, strerror(errno));
		goto fail;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) != 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) != 0) {
		fprintf(stderr, "impair: SO_SNDBUF %s: %s\n", ifname, strerror(errno));
		goto fail;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, SIOCGIFMTU, &ifr) != 0) {
		fprintf(stderr, "impair: SIOCGIFMTU %s: %s\n", ifname, strerror(errno));
		goto fail;
	}
	*mtu = ifr.ifr_mtu;
	return fd;
fail:
	close(fd);
	return -1;
}

struct bridge {
	int fd[2];                /* [0] A, [1] B */
	const char *name[2];
	struct imp_dir dir[2];    /* [0] A->B, [1] B->A */
	uint8_t *rxbuf;           /* receive scratch, one slot plus one byte */
	uint32_t rxcap;
	int tx_blocked[2];        /* output socket said EAGAIN: wait for POLLOUT */
};

static void dump_counters(const struct bridge *b, FILE *f)
{
	char line[512];
	for (int i = 0; i < 2; i++) {
		char label[2 * IF_NAMESIZE + 16];
		snprintf(label, sizeof(label), "impair: %s->%s", b->name[i], b->name[!i]);
		/* Frames still queued or held back are neither sent nor dropped
		 * yet: reported so the counters add up at any moment. */
		int n = imp_format_counters(line, sizeof(line), label, &b->dir[i].c);
		if (n > 0 && line[n - 1] == '\n') {
			line[n - 1] = '\0';
			fprintf(f, "%s pending=%u\n", line, imp_dir_pending(&b->dir[i]));
		}
	}
	fflush(f);
}

/* Reads up to RX_BATCH frames arriving on interface i into direction i. */
static int drain_rx(struct bridge *b, int i)
{
	for (int n = 0; n < RX_BATCH; n++) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t r = recvfrom(b->fd[i], b->rxbuf, b->rxcap, MSG_TRUNC,
		                     (struct sockaddr *)&from, &fl);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			/* ENETDOWN and the like: the link went away under us. */
			fprintf(stderr, "impair: recv on %s: %s\n", b->name[i], strerror(errno));
			return -1;
		}
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue;
		/* MSG_TRUNC returns the real length; a longer frame than the
		 * scratch is counted as oversize and dropped, never cut. */
		imp_dir_input(&b->dir[i], b->rxbuf, (uint32_t)r, now_ns());
	}
	return 0;
}

/* Sends direction i's due frames out of the other interface. */
static int flush_tx(struct bridge *b, int i, uint64_t now)
{
	struct imp_dir *d = &b->dir[i];
	int out = b->fd[!i];
	imp_dir_tick(d, now);
	b->tx_blocked[i] = 0;
	for (;;) {
		uint32_t len;
		const uint8_t *f = imp_dir_peek(d, now, &len);
		if (!f)
			return 0;
		ssize_t r = send(out, f, len, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			b->tx_blocked[i] = 1;
			return 0;
		}
		if (r < 0 && errno != ENOBUFS && errno != EMSGSIZE) {
			fprintf(stderr, "impair: send on %s: %s\n", b->name[!i], strerror(errno));
			return -1;
		}
		if (r < 0) {
			/* The device dropped it (queue full, too large): a lost frame. */
			d->c.txdrop++;
		} else {
			d->c.tx++;
			d->c.tx_bytes += len;
		}
		imp_dir_pop(d);
	}
}

static int poll_timeout_ms(const struct bridge *b, uint64_t now, uint64_t end)
{
	uint64_t next = end;
	for (int i = 0; i < 2; i++) {
		/* A blocked direction waits for POLLOUT, not for its due time. */
		if (b->tx_blocked[i])
			continue;
		uint64_t t = imp_dir_next_ns(&b->dir[i]);
		if (t < next)
			next = t;
	}
	if (next == UINT64_MAX)
		return -1;
	if (next <= now)
		return 0;
	/* Round up: waking early only to find nothing due spins the loop. */
	uint64_t ms = (next - now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

static int run(struct bridge *b, uint32_t duration_s, const sigset_t *waitmask)
{
	uint64_t end = duration_s ? now_ns() + (uint64_t)duration_s * 1000000000ull : UINT64_MAX;
	printf("impair: ready\n");
	fflush(stdout);
	while (!g_stop) {
		if (g_dump) {
			g_dump = 0;
			dump_counters(b, stdout);
		}
		uint64_t now = now_ns();
		if (now >= end)
			break;
		struct pollfd pfd[2];
		for (int i = 0; i < 2; i++) {
			pfd[i].fd = b->fd[i];
			/* Socket i is the output of direction !i. */
			pfd[i].events = (short)(POLLIN | (b->tx_blocked[!i] ? POLLOUT : 0));
			pfd[i].revents = 0;
		}
		int ms = poll_timeout_ms(b, now, end);
		struct timespec ts = {ms < 0 ? 0 : ms / 1000, ms < 0 ? 0 : (long)(ms % 1000) * 1000000};
		int rc = ppoll(pfd, 2, ms < 0 ? NULL : &ts, waitmask);
		if (rc < 0 && errno != EINTR) {
			perror("impair: ppoll");
			return -1;
		}
		for (int i = 0; i < 2; i++) {
			if (rc > 0 && (pfd[i].revents & (POLLERR | POLLNVAL))) {
				fprintf(stderr, "impair: %s: socket error\n", b->name[i]);
				return -1;
			}
			if (rc > 0 && (pfd[i].revents & POLLIN) && drain_rx(b, i) != 0)
				return -1;
		}
		now = now_ns();
		for (int i = 0; i < 2; i++)
			if (flush_tx(b, i, now) != 0)
				return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct imp_opts o;
	char err[256];
	int rc = imp_parse_args(argc, argv, &o, err, sizeof(err));
	if (rc == 1) {
		usage(stdout);
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "impair: %s\n", err);
		usage(stderr);
		return 2;
	}
	int status = 1;
	struct bridge b;
	memset(&b, 0, sizeof(b));
	b.fd[0] = b.fd[1] = -1;
	int mtu[2];
	for (int i = 0; i < 2; i++) {
		b.name[i] = o.ifname[i];
		b.fd[i] = open_port(o.ifname[i], &mtu[i]);
		if (b.fd[i] < 0)
			goto out;
	}
	/* A slot holds the largest frame either side may carry: MTU plus the
	 * Ethernet header and one VLAN tag. */
	uint32_t slot = (uint32_t)(mtu[0] > mtu[1] ? mtu[0] : mtu[1]) + IMP_ETH_HLEN + 4;
	b.rxcap = slot + 1;
	b.rxbuf = malloc(b.rxcap);
	if (!b.rxbuf) {
		fputs("impair: out of memory\n", stderr);
		goto out;
	}
	for (int i = 0; i < 2; i++) {
		/* Distinct streams per direction: one direction's decisions do not
		 * depend on how the other's frames interleave with it. */
		if (imp_dir_init(&b.dir[i], &o.p[i], o.seed * 2 + (uint64_t)i, o.queue, slot) != 0) {
			fprintf(stderr, "impair: queue of %u x %u bytes: %s\n", o.queue, slot,
			        strerror(errno));
			goto out;
		}
	}
	sigset_t block, waitmask;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGUSR1);
	/* Signals are taken only inside ppoll, so a flag set by a handler is
	 * always seen before the next sleep. */
	if (sigprocmask(SIG_BLOCK, &block, &waitmask) != 0) {
		perror("impair: sigprocmask");
		goto out;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
	for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++) {
		if (sigaction(sigs[k], &sa, NULL) != 0) {
			perror("impair: sigaction");
			goto out;
		}
	}
	if (run(&b, o.duration_s, &waitmask) == 0)
		status = 0;
	dump_counters(&b, stdout);
out:
	for (int i = 0; i < 2; i++) {
		if (b.fd[i] >= 0)
			close(b.fd[i]);
		imp_dir_free(&b.dir[i]);
	}
	free(b.rxbuf);
	return status;
}

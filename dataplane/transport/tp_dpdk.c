/*
 * The dpdk transport: glue between DPDK ports and the native stack.
 *
 * Threads: workers run on EAL lcores (rte_eal_remote_launch), so EAL pins
 * them, gives them lcore ids (per-lcore mempool caches) and knows their NUMA
 * node. The main thread becomes EAL's main lcore on a free lcore id mapped to
 * a CPU no worker uses when there is one; it only waits for signals.
 *
 * Per worker: one RX and one TX queue on port 0, one mbuf pool on the
 * worker's NUMA node (RX descriptors and the stack's TX frames both come from
 * it), one stack instance. Nothing here is shared between workers except ARP
 * frames: a reply may be hashed to any queue, so with several workers each
 * ARP frame is handed to every other worker through its ring as well (the
 * mbuf's reference count is raised; the stack only reads frames).
 */
#include "transport/tp_dpdk.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <sodium.h>

#include "net/net_metrics.h"
#include "net/net_stack.h"
#include "sluice/chan.h"
#include "sluice/common.h"
#include "sluice/conf.h"
#include "sluice/log.h"

#define RX_BURST 32u
/* Frames the stack may queue between two bursts of one worker. */
#define TXQ_CAP 1024u
/* TX mbufs taken from the pool at a time (rte_pktmbuf_alloc_bulk). */
#define TX_STASH 32u
/* Flushes in a row that send nothing before the queued frames are dropped:
 * TCP retransmits them, and a stuck queue must not pin the pool. */
#define TX_MAX_TRIES 8u
#define ARP_RING_SIZE 256u
#define MBUF_CACHE 256u
#define MAX_LCORE_ID 127u
#define ETH_HDR 14u
#define IP_HDR 20u
#define TCP_HDR 20u

struct tp_dpdk {
	struct tp tp;          /* first: what the worker holds */
	struct tp_ops ops;     /* the stack's connection calls; poll, flush, destroy ours */
	struct tp *inner;      /* the stack's transport */
	struct net_stack *stack;
	struct rte_mempool *pool;
	struct rte_ring *arp_in; /* ARP frames other workers received (NULL: one worker) */
	uint32_t id;
	uint16_t port, queue;
	uint32_t ntx;
	uint32_t tx_tries;
	uint64_t tx_dropped;   /* frames freed unsent (queue full or stuck) */
	uint64_t tx_too_long;  /* frames larger than an mbuf */
	uint64_t rx_multiseg;  /* chained mbufs (never configured; dropped) */
	uint64_t arp_fanout_drops;
	uint32_t nstash;
	struct rte_mbuf *stash[TX_STASH]; /* allocated, not yet handed out; stash[0..nstash) */
	struct rte_mbuf *txq[TXQ_CAP];
};

/* Set up on the main thread before workers start, read-only while they run. */
static struct {
	const struct sluice_conf *conf;
	bool eal_up, port_configured, port_started;
	uint16_t port;
	uint32_t nq;
	uint32_t lcores[CHAN_MAX_WORKERS];
	struct rte_mempool *pools[CHAN_MAX_WORKERS];
	struct rte_ring *arp_rings[CHAN_MAX_WORKERS];
	bool tx_csum;
	struct rte_ether_addr mac;
	/* One ISN/SYN-cookie secret for every worker's stack: a device that
	 * spreads a flow's frames over several queues (af_packet's fanout rolls
	 * over when a ring is full) may hand a handshake's ACK to another worker,
	 * which can then still validate the cookie. Wiped in tp_dpdk_fini(). */
	uint8_t secret[NET_SECRET_LEN];
} g;

/* ---- EAL arguments -------------------------------------------------------- */

/* Parses "1,2" / "1-4,8" (already validated by conf_load) into ids. */
static int parse_lcores(const char *s, uint32_t *out, uint32_t max, char *err, size_t errlen)
{
	uint32_t n = 0;
	const char *p = s;
	while (*p) {
		char *end;
		unsigned long a = strtoul(p, &end, 10);
		unsigned long b = a;
		if (end == p)
			goto bad;
		if (*end == '-') {
			const char *q = end + 1;
			b = strtoul(q, &end, 10);
			if (end == q)
				goto bad;
		}
		if (a > b || b > MAX_LCORE_ID)
			goto bad;
		for (unsigned long v = a; v <= b; v++) {
			if (n == max) {
				snprintf(err, errlen, "lcores '%s': more than %u lcores", s, max);
				return -1;
			}
			out[n++] = (uint32_t)v;
		}
		if (*end == ',')
			end++;
		else if (*end != '\0')
			goto bad;
		p = end;
	}
	return (int)n;
bad:
	snprintf(err, errlen, "lcores: bad lcore list '%s'", s);
	return -1;
}

struct argb {
	char *buf;
	size_t len, cap;
	char **argv;
	int argc;
	bool overflow;
};

static void arg_add(struct argb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends one formatted argument; a full buffer or argv marks overflow. */
static void arg_add(struct argb *b, const char *fmt, ...)
{
	if (b->overflow || b->argc >= TP_DPDK_MAX_ARGS - 1) {
		b->overflow = true;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len) {
		b->overflow = true;
		return;
	}
	b->argv[b->argc++] = b->buf + b->len;
	b->argv[b->argc] = NULL;
	b->len += (size_t)n + 1;
}

/* FNV-1a: a stable file prefix per configuration, so two instances started
 * from different files (tests) never share EAL runtime files. */
static uint32_t fnv1a(uint32_t h, const char *s)
{
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

/* A vdev is named by its driver ("net_tap0,iface=x"); anything else is a
 * PCI address for the allow list. */
static bool device_is_vdev(const char *dev)
{
	return strchr(dev, '=') != NULL || strncmp(dev, "net_", 4) == 0;
}

int tp_dpdk_eal_args(const struct sluice_conf *conf, const char *argv0, char *buf, size_t buflen,
		     char **argv, char *err, size_t errlen)
{
	uint32_t ids[CHAN_MAX_WORKERS];
	int n = parse_lcores(conf->lcores, ids, CHAN_MAX_WORKERS, err, errlen);
	if (n < 0)
		return -1;
	bool used[MAX_LCORE_ID + 1] = {false};
	for (int i = 0; i < n; i++)
		used[ids[i]] = true;
	uint32_t main_lcore = 0;
	while (main_lcore <= MAX_LCORE_ID && used[main_lcore])
		main_lcore++;
	if (main_lcore > MAX_LCORE_ID) {
		snprintf(err, errlen, "lcores '%s' leaves no lcore id for the main thread", conf->lcores);
		return -1;
	}
	/* The main thread sleeps in sigtimedwait: any CPU will do, one no worker
	 * spins on is better. */
	int main_cpu = -1, first_cpu = -1;
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (int c = 0; c < CPU_SETSIZE && main_cpu < 0; c++) {
			if (!CPU_ISSET(c, &set))
				continue;
			if (first_cpu < 0)
				first_cpu = c;
			if (c > (int)MAX_LCORE_ID || !used[c])
				main_cpu = c;
		}
	}
	if (main_cpu < 0)
		main_cpu = first_cpu < 0 ? 0 : first_cpu;

	char abspath[PATH_MAX];
	const char *id = realpath(conf->path, abspath) ? abspath : conf->path;
	uint32_t h = fnv1a(fnv1a(2166136261u, id), conf->chan_path);

	struct argb b = {.buf = buf, .cap = buflen, .argv = argv};
	arg_add(&b, "%s", argv0);
	arg_add(&b, "--lcores=%s,%u@%d", conf->lcores, main_lcore, main_cpu);
	arg_add(&b, "--main-lcore=%u", main_lcore);
	arg_add(&b, "--proc-type=primary");
	arg_add(&b, "--file-prefix=sluice-%08x", h);
	if (device_is_vdev(conf->ports[0].device))
		arg_add(&b, "--vdev=%s", conf->ports[0].device);
	else
		arg_add(&b, "--allow=%s", conf->ports[0].device);

	/* Hugepage files are unlinked once mapped, so their memory goes back to
	 * the kernel when the process ends, even on a crash (no secondary
	 * process ever attaches to ours). */
	if (!strstr(conf->eal_args, "--no-huge") && !strstr(conf->eal_args, "--huge-unlink"))
		arg_add(&b, "--huge-unlink");

	const char *p = conf->eal_args;
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		size_t w = strcspn(p, " \t");
		if (w == 0)
			break;
		arg_add(&b, "%.*s", (int)w, p);
		p += w;
	}
	if (b.overflow) {
		snprintf(err, errlen, "EAL arguments: more than %d words or %zu bytes", TP_DPDK_MAX_ARGS - 1,
			 buflen);
		return -1;
	}
	return b.argc;
}

/* ---- port ------------------------------------------------------------------ */

/* The port named by [port.0] device (its name is the part before the first
 * comma); a PCI address written without its domain falls back to the only
 * port. */
static int find_port(const char *dev, uint16_t *port, char *err, size_t errlen)
{
	char name[RTE_ETH_NAME_MAX_LEN];
	size_t n = strcspn(dev, ",");
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	memcpy(name, dev, n);
	name[n] = '\0';
	if (rte_eth_dev_get_port_by_name(name, port) == 0)
		return 0;
	if (rte_eth_dev_count_avail() == 1) {
		RTE_ETH_FOREACH_DEV(*port)
			return 0;
	}
	snprintf(err, errlen, "[port.0] device '%s': no such DPDK port (%u ports probed)", dev,
		 (unsigned)rte_eth_dev_count_avail());
	return -1;
}

static int port_setup(const struct sluice_conf *conf, char *err, size_t errlen)
{
	const struct conf_port *pc = &conf->ports[0];
	struct rte_eth_dev_info info;
	struct rte_eth_conf ec;
	uint16_t nrx = (uint16_t)pc->rx_desc, ntx = (uint16_t)pc->tx_desc;
	int rc;

	if (find_port(pc->device, &g.port, err, errlen) != 0)
		return -1;
	rc = rte_eth_dev_info_get(g.port, &info);
	if (rc != 0) {
		snprintf(err, errlen, "%s: dev_info: %s", pc->device, rte_strerror(-rc));
		return -1;
	}
	if (info.max_rx_queues < g.nq || info.max_tx_queues < g.nq) {
		snprintf(err, errlen,
			 "%s: %u RX / %u TX queues, %u workers need one pair each "
			 "(net_af_packet: add qpairs=%u)",
			 pc->device, info.max_rx_queues, info.max_tx_queues, g.nq, g.nq);
		return -1;
	}
	memset(&ec, 0, sizeof(ec));
	const uint64_t rss_want = RTE_ETH_RSS_NONFRAG_IPV4_TCP;
	if (g.nq > 1 && (info.flow_type_rss_offloads & rss_want) == rss_want) {
		ec.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		ec.rx_adv_conf.rss_conf.rss_hf = rss_want | (info.flow_type_rss_offloads & RTE_ETH_RSS_IPV4);
	} else if (g.nq > 1) {
		LOG_WARN("%s: no RSS on TCP/IPv4; flows are spread by the device's own rule", pc->device);
	}
	const uint64_t rx_want = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
	if ((info.rx_offload_capa & rx_want) == rx_want)
		ec.rxmode.offloads |= rx_want;
	const uint64_t tx_want = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
	if ((info.tx_offload_capa & tx_want) == tx_want) {
		ec.txmode.offloads |= tx_want;
		g.tx_csum = true;
	}
	rc = rte_eth_dev_configure(g.port, (uint16_t)g.nq, (uint16_t)g.nq, &ec);
	if (rc != 0) {
		snprintf(err, errlen, "%s: configure: %s", pc->device, rte_strerror(-rc));
		return -1;
	}
	g.port_configured = true;
	rc = rte_eth_dev_set_mtu(g.port, (uint16_t)pc->mtu);
	if (rc == -ENOTSUP) {
		if (pc->mtu != RTE_ETHER_MTU)
			LOG_WARN("%s: cannot set MTU %u; the device keeps its own", pc->device, pc->mtu);
	} else if (rc != 0) {
		snprintf(err, errlen, "%s: mtu %u: %s", pc->device, pc->mtu, rte_strerror(-rc));
		return -1;
	}
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(g.port, &nrx, &ntx);
	if (rc != 0) {
		snprintf(err, errlen, "%s: descriptors: %s", pc->device, rte_strerror(-rc));
		return -1;
	}
	/* Every RX descriptor holds an mbuf, and a worker can hold a TX queue's
	 * worth plus a full software queue and its stash; below that the port
	 * starves. */
	uint32_t need = (uint32_t)nrx + ntx + TXQ_CAP + TX_STASH + RX_BURST + MBUF_CACHE * 2;
	if (pc->mbufs < need) {
		snprintf(err, errlen, "[port.0] mbufs = %u: at least %u needed for %u+%u descriptors",
			 pc->mbufs, need, nrx, ntx);
		return -1;
	}
	uint32_t room = pc->mtu + ETH_HDR + RTE_ETHER_CRC_LEN + 8;
	if (room < RTE_MBUF_DEFAULT_DATAROOM)
		room = RTE_MBUF_DEFAULT_DATAROOM;
	for (uint32_t q = 0; q < g.nq; q++) {
		int socket = (int)rte_lcore_to_socket_id(g.lcores[q]);
		char name[RTE_MEMPOOL_NAMESIZE];
		snprintf(name, sizeof(name), "sluice_w%u", q);
		g.pools[q] = rte_pktmbuf_pool_create(name, pc->mbufs, MBUF_CACHE, 0,
						     (uint16_t)(room + RTE_PKTMBUF_HEADROOM), socket);
		if (!g.pools[q]) {
			snprintf(err, errlen, "worker %u: mbuf pool of %u on socket %d: %s", q, pc->mbufs,
				 socket, rte_strerror(rte_errno));
			return -1;
		}
		struct rte_eth_rxconf rxc = info.default_rxconf;
		rxc.offloads = ec.rxmode.offloads;
		rc = rte_eth_rx_queue_setup(g.port, (uint16_t)q, nrx, (unsigned)socket, &rxc, g.pools[q]);
		if (rc != 0) {
			snprintf(err, errlen, "%s: RX queue %u: %s", pc->device, q, rte_strerror(-rc));
			return -1;
		}
		struct rte_eth_txconf txc = info.default_txconf;
		txc.offloads = ec.txmode.offloads;
		rc = rte_eth_tx_queue_setup(g.port, (uint16_t)q, ntx, (unsigned)socket, &txc);
		if (rc != 0) {
			snprintf(err, errlen, "%s: TX queue %u: %s", pc->device, q, rte_strerror(-rc));
			return -1;
		}
		if (g.nq > 1) {
			snprintf(name, sizeof(name), "sluice_arp%u", q);
			g.arp_rings[q] = rte_ring_create(name, ARP_RING_SIZE, socket, RING_F_SC_DEQ);
			if (!g.arp_rings[q]) {
				snprintf(err, errlen, "worker %u: ARP ring: %s", q, rte_strerror(rte_errno));
				return -1;
			}
		}
	}
	rc = rte_eth_dev_start(g.port);
	if (rc != 0) {
		snprintf(err, errlen, "%s: start: %s", pc->device, rte_strerror(-rc));
		return -1;
	}
	g.port_started = true;
	rc = rte_eth_macaddr_get(g.port, &g.mac);
	if (rc != 0) {
		snprintf(err, errlen, "%s: MAC address: %s", pc->device, rte_strerror(-rc));
		return -1;
	}
	/* net_tap gives its kernel interface the port's own MAC address: the
	 * host's ARP requests would come from "us" (the stack ignores those) and
	 * replies would go to the host's own address. The stack takes a
	 * neighbouring locally administered unicast address instead; a TAP hands
	 * the port every frame the kernel sends, so nothing needs to learn it. */
	if (strcmp(info.driver_name, "net_tap") == 0) {
		g.mac.addr_bytes[0] = (uint8_t)((g.mac.addr_bytes[0] | 0x02u) & ~0x01u);
		g.mac.addr_bytes[5] ^= 0x01u;
	}
	char mac[RTE_ETHER_ADDR_FMT_SIZE];
	rte_ether_format_addr(mac, sizeof(mac), &g.mac);
	LOG_INFO("port %u (%s, driver %s): MAC %s, %u queue pair(s), %u/%u descriptors, RSS %s, "
		 "checksum offload rx %s tx %s",
		 (unsigned)g.port, pc->device, info.driver_name, mac, g.nq, nrx, ntx,
		 ec.rxmode.mq_mode == RTE_ETH_MQ_RX_RSS ? "on" : "off",
		 ec.rxmode.offloads ? "on" : "off", g.tx_csum ? "on" : "off");
	return 0;
}

int tp_dpdk_init(const struct sluice_conf *conf, const char *argv0, char *err, size_t errlen)
{
	char buf[2048];
	char *argv[TP_DPDK_MAX_ARGS];
	char why[256];

	memset(&g, 0, sizeof(g));
	g.conf = conf;
	g.nq = conf->workers;
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium: init failed");
		return -1;
	}
	randombytes_buf(g.secret, sizeof(g.secret));
	for (uint32_t i = 1; i < CONF_MAX_PORTS; i++) {
		if (conf->ports[i].present) {
			snprintf(err, errlen, "%s: [port.%u]: transport = dpdk drives [port.0] only", conf->path, i);
			return -1;
		}
	}
	if (conf->listen_port == 0) {
		snprintf(err, errlen, "%s: listen: transport = dpdk needs a fixed port", conf->path);
		return -1;
	}
	int n = parse_lcores(conf->lcores, g.lcores, CHAN_MAX_WORKERS, why, sizeof(why));
	if (n < 0 || (uint32_t)n != g.nq) {
		snprintf(err, errlen, "%s: lcores '%s' must name one lcore per worker (%u)", conf->path,
			 conf->lcores, g.nq);
		return -1;
	}
	int argc = tp_dpdk_eal_args(conf, argv0, buf, sizeof(buf), argv, why, sizeof(why));
	if (argc < 0) {
		snprintf(err, errlen, "%s: %s", conf->path, why);
		return -1;
	}
	char line[1024];
	size_t off = 0;
	for (int i = 1; i < argc && off < sizeof(line); i++) {
		int w = snprintf(line + off, sizeof(line) - off, "%s%s", i > 1 ? " " : "", argv[i]);
		if (w < 0)
			break;
		off += (size_t)w;
	}
	if (off >= sizeof(line))
		memcpy(line + sizeof(line) - 4, "...", 4);
	LOG_INFO("EAL: %s", off ? line : "");
	/* rte_eal_init may permute argv; only our copy is handed over. */
	if (rte_eal_init(argc, argv) < 0) {
		snprintf(err, errlen, "EAL init failed: %s", rte_strerror(rte_errno));
		return -1;
	}
	g.eal_up = true;
	for (uint32_t i = 0; i < g.nq; i++) {
		if (!rte_lcore_is_enabled(g.lcores[i]) || g.lcores[i] == rte_get_main_lcore()) {
			snprintf(err, errlen, "worker %u: lcore %u is not a worker lcore", i, g.lcores[i]);
			goto fail;
		}
	}
	if (port_setup(conf, err, errlen) != 0)
		goto fail;
	return 0;
fail:
	tp_dpdk_fini();
	return -1;
}

/* EAL leaves its runtime files (config, fbarrays) behind; the directory is
 * private to this process (its --file-prefix), so it goes with it. */
static void remove_runtime_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) != 0)
			LOG_WARN("EAL runtime file %s/%s: %s", dir, e->d_name, strerror(errno));
	}
	closedir(d);
	if (rmdir(dir) != 0)
		LOG_WARN("EAL runtime directory %s: %s", dir, strerror(errno));
}

void tp_dpdk_fini(void)
{
	sodium_memzero(g.secret, sizeof(g.secret));
	if (g.port_started) {
		int rc = rte_eth_dev_stop(g.port);
		if (rc != 0)
			LOG_WARN("port %u: stop: %s", (unsigned)g.port, rte_strerror(-rc));
	}
	if (g.port_configured) {
		int rc = rte_eth_dev_close(g.port);
		if (rc != 0)
			LOG_WARN("port %u: close: %s", (unsigned)g.port, rte_strerror(-rc));
	}
	for (uint32_t q = 0; q < CHAN_MAX_WORKERS; q++) {
		rte_ring_free(g.arp_rings[q]);
		rte_mempool_free(g.pools[q]);
	}
	if (g.eal_up) {
		char dir[PATH_MAX];
		int n = snprintf(dir, sizeof(dir), "%s", rte_eal_get_runtime_dir());
		int rc = rte_eal_cleanup();
		if (rc != 0)
			LOG_WARN("EAL cleanup: %s", rte_strerror(-rc));
		if (n > 0 && (size_t)n < sizeof(dir))
			remove_runtime_dir(dir);
	}
	memset(&g, 0, sizeof(g));
}

int tp_dpdk_launch(uint32_t worker_id, int (*fn)(void *), void *arg, char *err, size_t errlen)
{
	if (worker_id >= g.nq) {
		snprintf(err, errlen, "worker %u: no lcore", worker_id);
		return -1;
	}
	int rc = rte_eal_remote_launch(fn, arg, g.lcores[worker_id]);
	if (rc != 0) {
		snprintf(err, errlen, "worker %u: launch on lcore %u: %s", worker_id, g.lcores[worker_id],
			 strerror(-rc));
		return -1;
	}
	return 0;
}

int tp_dpdk_wait(uint32_t worker_id)
{
	return worker_id < g.nq ? rte_eal_wait_lcore(g.lcores[worker_id]) : -1;
}

/* ---- frames in and out ------------------------------------------------------ */

/* Sends what is queued; what the device does not take waits for the next
 * turn, and after TX_MAX_TRIES turns without progress it is freed. */
static inline void tx_burst(struct tp_dpdk *d)
{
	if (d->ntx == 0)
		return;
	uint16_t sent = rte_eth_tx_burst(d->port, d->queue, d->txq, (uint16_t)d->ntx);
	if (likely(sent == d->ntx)) {
		d->ntx = 0;
		d->tx_tries = 0;
		return;
	}
	d->ntx -= sent;
	memmove(d->txq, d->txq + sent, d->ntx * sizeof(d->txq[0]));
	if (sent > 0) {
		d->tx_tries = 0;
	} else if (++d->tx_tries >= TX_MAX_TRIES) {
		rte_pktmbuf_free_bulk(d->txq, d->ntx);
		d->tx_dropped += d->ntx;
		d->ntx = 0;
		d->tx_tries = 0;
	}
}

/* Refills the empty stash and takes one from it; one mbuf alone when the
 * pool runs that low; NULL when it is empty. */
static __attribute__((noinline)) struct rte_mbuf *tx_refill(struct tp_dpdk *d)
{
	if (rte_pktmbuf_alloc_bulk(d->pool, d->stash, TX_STASH) == 0) {
		d->nstash = TX_STASH - 1;
		return d->stash[TX_STASH - 1];
	}
	return rte_pktmbuf_alloc(d->pool);
}

/* net_io.tx_alloc: one mbuf from the worker's stash, refilled from its pool
 * TX_STASH at a time (one pool operation per burst of segments, not one per
 * segment), data at its start. The refill is out of line so this path does
 * not pay for its registers. */
static uint8_t *io_tx_alloc(void *arg, uint32_t len, void **pkt)
{
	struct tp_dpdk *d = arg;
	struct rte_mbuf *m = likely(d->nstash > 0) ? d->stash[--d->nstash] : tx_refill(d);
	if (unlikely(!m))
		return NULL;
	if (unlikely(len > rte_pktmbuf_tailroom(m))) {
		rte_pktmbuf_free(m);
		d->tx_too_long++;
		return NULL;
	}
	*pkt = m;
	return rte_pktmbuf_mtod(m, uint8_t *);
}

/*
 * net_io.tx_send: queues a frame for this turn's burst. Only TCP frames ask
 * for checksum offload (NET_TX_CSUM, set only when the port offers it); every
 * other frame comes from the stack with its checksums complete and goes out
 * untouched.
 */
static void io_tx_send(void *arg, void *pkt, uint32_t len, uint32_t offload_flags)
{
	struct tp_dpdk *d = arg;
	struct rte_mbuf *m = pkt;
	m->data_len = (uint16_t)len;
	m->pkt_len = len;
	if ((offload_flags & NET_TX_CSUM) && likely(len >= ETH_HDR + IP_HDR + TCP_HDR)) {
		m->l2_len = ETH_HDR;
		m->l3_len = IP_HDR;
		/* Drivers that finish the sums in software (net_tap) find the
		 * payload by the header lengths. */
		const uint8_t *th = rte_pktmbuf_mtod_offset(m, const uint8_t *, ETH_HDR + IP_HDR);
		m->l4_len = (uint64_t)(th[12] >> 4) * 4;
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_CKSUM;
	}
	if (unlikely(d->ntx == TXQ_CAP)) {
		tx_burst(d);
		if (d->ntx == TXQ_CAP) {
			rte_pktmbuf_free(m);
			d->tx_dropped++;
			return;
		}
	}
	d->txq[d->ntx++] = m;
}

/* net_io.tx_free: a frame the stack allocated and will not send. */
static void io_tx_free(void *arg, void *pkt)
{
	(void)arg;
	rte_pktmbuf_free(pkt);
}

static inline uint32_t rx_flags(const struct rte_mbuf *m)
{
	uint32_t f = 0;
	if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
		f |= NET_RX_IP_CSUM_OK;
	if ((m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
		f |= NET_RX_L4_CSUM_OK;
	return f;
}

/* Hands an ARP frame to every other worker; the caller frees its own
 * reference as usual. */
static void arp_fanout(struct tp_dpdk *d, struct rte_mbuf *m)
{
	for (uint32_t j = 0; j < g.nq; j++) {
		if (j == d->id)
			continue;
		rte_mbuf_refcnt_update(m, 1);
		if (rte_ring_enqueue(g.arp_rings[j], m) != 0) {
			rte_mbuf_refcnt_update(m, -1);
			d->arp_fanout_drops++;
		}
	}
}

static inline void input_one(struct tp_dpdk *d, struct rte_mbuf *m, uint64_t now, bool fanout)
{
	if (unlikely(m->nb_segs != 1)) {
		d->rx_multiseg++;
		return;
	}
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	if (unlikely(fanout) && m->data_len >= ETH_HDR && f[12] == 0x08 && f[13] == 0x06)
		arp_fanout(d, m);
	net_input(d->stack, f, m->data_len, rx_flags(m), now);
}

/* tp_ops.poll: one RX burst into the stack; never blocks, the doorbell is
 * not used (the worker does not sleep in poll mode). */
static int dpdk_poll(struct tp *t, int timeout_ms, int extra_fd)
{
	struct tp_dpdk *d = (struct tp_dpdk *)t;
	struct rte_mbuf *pkts[RX_BURST];
	(void)timeout_ms;
	(void)extra_fd;

	uint64_t now = sluice_now_ns();
	/* Frames a short burst left behind count as work, so the worker's
	 * flush runs again. */
	int events = (int)net_stack_tick(d->stack, now) + (d->ntx > 0);
	uint16_t n = rte_eth_rx_burst(d->port, d->queue, pkts, RX_BURST);
	bool fanout = d->arp_in != NULL;
	for (uint16_t i = 0; i < n; i++) {
		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
		input_one(d, pkts[i], now, fanout);
	}
	if (n > 0)
		rte_pktmbuf_free_bulk(pkts, n);
	events += n;
	if (unlikely(fanout && !rte_ring_empty(d->arp_in))) {
		unsigned k = rte_ring_dequeue_burst(d->arp_in, (void **)pkts, RX_BURST, NULL);
		for (unsigned i = 0; i < k; i++)
			input_one(d, pkts[i], now, false);
		rte_pktmbuf_free_bulk(pkts, k);
		events += (int)k;
	}
	return events;
}

/* tp_ops.flush: the stack turns queued bytes into frames, then one burst. */
static void dpdk_flush(struct tp *t)
{
	struct tp_dpdk *d = (struct tp_dpdk *)t;
	d->inner->ops->flush(d->inner);
	tx_burst(d);
}

/* tp_ops.destroy: the stack closes its connections (the app hears on_close),
 * its last frames get one burst, whatever is left is freed. */
static void dpdk_destroy(struct tp *t)
{
	struct tp_dpdk *d = (struct tp_dpdk *)t;
	net_stack_destroy(d->stack);
	tx_burst(d);
	if (d->ntx) {
		rte_pktmbuf_free_bulk(d->txq, d->ntx);
		d->tx_dropped += d->ntx;
		d->ntx = 0;
	}
	if (d->arp_in) {
		void *m;
		while (rte_ring_dequeue(d->arp_in, &m) == 0)
			rte_pktmbuf_free(m);
	}
	rte_pktmbuf_free_bulk(d->stash, d->nstash);
	if (d->tx_dropped || d->tx_too_long || d->rx_multiseg || d->arp_fanout_drops)
		LOG_INFO("worker %u: dpdk frames dropped: tx %" PRIu64 ", too long %" PRIu64
			 ", rx chained %" PRIu64 ", ARP fan-out %" PRIu64,
			 d->id, d->tx_dropped, d->tx_too_long, d->rx_multiseg, d->arp_fanout_drops);
	rte_free(d);
}

struct tp *tp_dpdk_create(uint32_t worker_id, struct tw_wheel *wheel, const struct tp_upcalls *up,
			  void *app, char *err, size_t errlen)
{
	const struct sluice_conf *c = g.conf;
	if (!c || !g.port_started || worker_id >= g.nq) {
		snprintf(err, errlen, "dpdk: worker %u: port not set up", worker_id);
		return NULL;
	}
	int socket = (int)rte_lcore_to_socket_id(g.lcores[worker_id]);
	struct tp_dpdk *d = rte_zmalloc_socket("sluice_tp", sizeof(*d), RTE_CACHE_LINE_SIZE, socket);
	if (!d) {
		snprintf(err, errlen, "dpdk: worker %u: out of memory", worker_id);
		return NULL;
	}
	d->id = worker_id;
	d->port = g.port;
	d->queue = (uint16_t)worker_id;
	d->pool = g.pools[worker_id];
	d->arp_in = g.arp_rings[worker_id];

	struct net_stack_conf nc;
	memset(&nc, 0, sizeof(nc));
	net_stack_conf_defaults(&nc);
	memcpy(nc.mac, g.mac.addr_bytes, sizeof(nc.mac));
	nc.ipv4 = c->ports[0].ipv4;
	nc.prefix = c->ports[0].prefix;
	nc.gateway = c->ports[0].gateway;
	nc.mtu = c->ports[0].mtu;
	nc.listen_ports[0] = c->listen_port;
	nc.listen_ports[1] = c->redirect_port; /* 0 (none) ends the list */
	nc.max_conns = c->max_conns;
	/* A stream with a token in flight holds a send chunk, and a dry pool
	 * closes the connection it was asked for: one chunk per connection at
	 * least (taken lazily, net_stack.c), so max_conns streams fit. */
	if (nc.tx_chunks < nc.max_conns)
		nc.tx_chunks = nc.max_conns;
	nc.syn_backlog = c->tcp_syn_backlog;
	nc.time_wait_max = c->tcp_time_wait_max;
	nc.snd_buf = c->tcp_snd_buf;
	nc.rcv_buf = c->tcp_rcv_buf;
	nc.keepalive_s = c->tcp_keepalive_s;
	nc.csum_offload_tx = g.tx_csum;
	memcpy(nc.secret, g.secret, sizeof(nc.secret));
	nc.shared_port = g.nq > 1;

	static const struct net_io io = {
		.tx_alloc = io_tx_alloc,
		.tx_send = io_tx_send,
		.tx_free = io_tx_free,
	};
	d->stack = net_stack_create(&nc, &io, d, wheel, up, app, err, errlen);
	sodium_memzero(nc.secret, sizeof(nc.secret));
	if (!d->stack) {
		rte_pktmbuf_free_bulk(d->txq, d->ntx);
		rte_pktmbuf_free_bulk(d->stash, d->nstash);
		rte_free(d);
		return NULL;
	}
	d->inner = net_stack_tp(d->stack);
	d->ops = *d->inner->ops;
	d->ops.name = "dpdk";
	d->ops.poll = dpdk_poll;
	d->ops.flush = dpdk_flush;
	d->ops.destroy = dpdk_destroy;
	net_metrics_ops(&d->ops);
	d->tp.ops = &d->ops;
	return &d->tp;
}

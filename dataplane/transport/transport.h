/*
 * The transport interface: the only thing between TCP and everything above it
 * (HTTP, SSE, WebSocket, batching). Two implementations: `kernel` (nonblocking
 * sockets + epoll, transport/tp_kernel.c) and `dpdk` (sluice's own TCP/IPv4
 * stack, dataplane/net/). The app layer never knows which one it runs on.
 *
 * Threading: a transport instance belongs to one worker thread; every call
 * below and every upcall happens on that thread.
 *
 * Receive: the transport calls on_data() with all bytes it holds for the
 * connection (what the app left unconsumed last time, followed by new bytes,
 * contiguous). The app returns how many it consumed; the transport keeps the
 * rest. When the kept bytes reach TP_RX_STASH_MAX the transport stops reading
 * that connection (TCP pushes back on the client) until the app calls
 * rx_resume().
 *
 * Transmit: tx_reserve() hands out contiguous space in the connection's send
 * queue, tx_commit() appends what was written there, flush() (once per loop
 * turn) pushes queued bytes to the network. The send queue is bounded by the
 * app: it reads tx_queued from info() and applies its own slow-consumer rule.
 */
#ifndef SLUICE_TRANSPORT_H
#define SLUICE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP_RX_STASH_MAX (64u * 1024u)

struct tp;      /* a transport instance (one per worker) */
struct tp_conn; /* a connection; transport-owned, valid until on_close returns */

struct tp_peer {
	uint32_t ipv4;       /* network byte order */
	uint16_t port;       /* host byte order */
	uint16_t local_port; /* the listening port it came to, host byte order */
	bool tls;            /* reached through the TLS layer (dataplane/tls/) */
};

/* Upcalls into the app layer; `app` is the pointer given to the transport at
 * creation, `ctx` what on_open returned for the connection. */
struct tp_upcalls {
	/* A new connection. Returns the app's context, or NULL to refuse it
	 * (the transport then resets the connection and calls nothing else). */
	void *(*on_open)(void *app, struct tp_conn *c, const struct tp_peer *peer);
	/* Bytes arrived (see the receive rule above). Returns bytes consumed. */
	size_t (*on_data)(void *app, void *ctx, const uint8_t *data, size_t len);
	/* The peer sent FIN: no more data will arrive. The app may still send. */
	void (*on_eof)(void *app, void *ctx);
	/* Queued tx bytes drained to zero after having been non-zero. */
	void (*on_drained)(void *app, void *ctx);
	/* The connection is gone (closed by either side, reset, or timed out in
	 * the stack). The app frees ctx; the tp_conn is invalid afterwards. */
	void (*on_close)(void *app, void *ctx);
};

/* What the batcher reads about a connection's send side. */
struct tp_conn_info {
	uint64_t tx_queued;  /* bytes committed and not yet handed to the network */
	uint32_t snd_wnd;    /* peer's advertised window, bytes (0 when unknown) */
	uint32_t cwnd;       /* congestion window, bytes (0 when unknown) */
	uint32_t unacked;    /* bytes sent and not yet acknowledged */
	bool blocked;        /* the last send hit a full window / EAGAIN */
};

/* True unless the transport reports the connection's window as used up:
 * un-ACKed bytes at or above the smaller of the peer's window and cwnd
 * (0 = not reported). A full window means a new frame would only wait in
 * the send queue, so the batcher may as well keep coalescing. */
static inline bool tp_window_open(const struct tp_conn_info *ti)
{
	uint32_t wnd = ti->cwnd;
	if (ti->snd_wnd && (!wnd || ti->snd_wnd < wnd))
		wnd = ti->snd_wnd;
	return wnd == 0 || ti->unacked < wnd;
}

/* Most samples a transport may add to /metrics. */
#define TP_COUNTERS_MAX 64u

/* One sample a transport adds to /metrics. Consecutive entries with the same
 * name are one family: HELP and TYPE are written once, from the first. */
struct tp_counter_def {
	const char *name;
	const char *type;   /* "counter" or "gauge" */
	const char *help;
	const char *labels; /* "" or a label set with its braces: {reason="ip_fragment"} */
};

/*
 * Scratch a transport may keep what it learns of a run of bytes in (the
 * native stack without checksum offload: their Internet checksum) when the
 * same bytes go to many connections, so that work is done once for all of
 * them. Owned by the caller and kept next to the bytes; zeroed whenever the
 * bytes change.
 */
struct tp_tx_hint {
	uint32_t sum;
	bool valid;
};

struct tp_ops {
	const char *name;
	/* The app's overload manager turns a connection away by returning NULL
	 * from on_open (a TCP-level refusal: reset) rather than answering it:
	 * set by the native stack, where a refusal costs no socket and no
	 * response; the kernel transport answers 503 / 429 instead. */
	bool refuse_by_reset;
	/* One I/O pass: accept, receive, retransmit, timers of the stack. May block
	 * for at most timeout_ms waiting for events (poll-mode transports never
	 * block). `extra_fd` >= 0 is also waited on (the worker's doorbell).
	 * Returns the number of events handled, or -1 on a fatal error. */
	int (*poll)(struct tp *t, int timeout_ms, int extra_fd);
	uint8_t *(*tx_reserve)(struct tp_conn *c, size_t min, size_t *avail);
	void (*tx_commit)(struct tp_conn *c, size_t n);
	/* tx_commit of n bytes that are the whole run h describes. Optional
	 * (NULL: tx_commit, the hint unused). */
	void (*tx_commit_hinted)(struct tp_conn *c, size_t n, struct tp_tx_hint *h);
	/* Pushes queued bytes of every connection with pending output. */
	void (*flush)(struct tp *t);
	/* Graceful close: queued bytes are sent first, then FIN; on_close follows.
	 * abort=true: reset now, queued bytes dropped. Safe to call from upcalls. */
	void (*close)(struct tp_conn *c, bool abort);
	void (*info)(struct tp_conn *c, struct tp_conn_info *out);
	/* What info() reports, as far as the transport knows it without asking
	 * the kernel: the per-token path (the batcher, pending-bytes accounting)
	 * reads this. Optional (NULL: info() is already that cheap, as in the
	 * native stack, whose TCB is in user space). The kernel transport reports
	 * tx_queued and blocked, which it learns from its own send results (a
	 * short write or EAGAIN), and leaves the window fields 0 (unknown). */
	void (*tx_state)(struct tp_conn *c, struct tp_conn_info *out);
	/* tx_state()'s tx_queued alone, for the accounting after every send
	 * and every drain. Optional (NULL: taken from tx_state). */
	uint64_t (*tx_queued)(struct tp_conn *c);
	/* Asks for on_data to be offered the stashed bytes again this loop turn. */
	void (*rx_resume)(struct tp_conn *c);
	void (*destroy)(struct tp *t);
	/* Stops accepting: new connections are refused, open ones stay (the
	 * drain). Optional: without it the app refuses each one in on_open. */
	void (*stop_listening)(struct tp *t);
	/* The transport's own counters for /metrics (none: ncounters 0, and
	 * counters NULL). counters() fills values[0..ncounters), each summed over
	 * every instance of this transport in the process (/metrics is
	 * process-wide), and returns how many instances it counted; with 0 the
	 * samples are left out. Safe on any worker's thread. */
	const struct tp_counter_def *counter_defs;
	uint32_t ncounters;
	uint32_t (*counters)(uint64_t *values);
};

struct tp {
	const struct tp_ops *ops;
	/* Connections whose queued bytes this turn's flush will not send (a
	 * full socket: blocked until EPOLLOUT), kept by transports that set
	 * stall_counted. Zero lets the per-token path know every connection
	 * can take bytes at once without asking each one (tp_none_stalled). */
	uint32_t stalled;
	bool stall_counted;
};

/* Convenience wrappers keep call sites short. */
static inline uint8_t *tp_tx_reserve(struct tp *t, struct tp_conn *c, size_t min, size_t *avail)
{
	return t->ops->tx_reserve(c, min, avail);
}
static inline void tp_tx_commit(struct tp *t, struct tp_conn *c, size_t n)
{
	t->ops->tx_commit(c, n);
}
static inline void tp_close(struct tp *t, struct tp_conn *c, bool abort)
{
	t->ops->close(c, abort);
}
static inline void tp_info(struct tp *t, struct tp_conn *c, struct tp_conn_info *out)
{
	t->ops->info(c, out);
}
static inline void tp_tx_state(struct tp *t, struct tp_conn *c, struct tp_conn_info *out)
{
	if (t->ops->tx_state)
		t->ops->tx_state(c, out);
	else
		t->ops->info(c, out);
}
static inline uint64_t tp_tx_queued(struct tp *t, struct tp_conn *c)
{
	struct tp_conn_info ti;
	if (t->ops->tx_queued)
		return t->ops->tx_queued(c);
	tp_tx_state(t, c, &ti);
	return ti.tx_queued;
}
/* True when the transport counts stalled connections and there are none: no
 * connection holds bytes from an earlier turn or waits for its window, so
 * what any of them queues now leaves at this turn's flush. False says
 * nothing: ask the connection (tp_tx_state). */
static inline bool tp_none_stalled(const struct tp *t)
{
	return t->stall_counted && t->stalled == 0;
}
static inline void tp_stop_listening(struct tp *t)
{
	if (t->ops->stop_listening)
		t->ops->stop_listening(t);
}
static inline void tp_rx_resume(struct tp *t, struct tp_conn *c)
{
	t->ops->rx_resume(c);
}

/* Appends len bytes to the connection's send queue (reserve + copy + commit,
 * in chunks). Returns false when the queue cannot take them. h (may be NULL)
 * is the bytes' hint, given to the transport when they go in one piece. */
bool tp_send_hinted(struct tp *t, struct tp_conn *c, const void *data, size_t len,
		    struct tp_tx_hint *h);
static inline bool tp_send(struct tp *t, struct tp_conn *c, const void *data, size_t len)
{
	return tp_send_hinted(t, c, data, len, NULL);
}

#endif

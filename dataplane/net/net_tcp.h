/*
 * TCP of the native stack (RFC 9293 as a server, with RFC 7323, 2018, 6298,
 * 5681, 6582, 5961, 6528 and SYN cookies), in the files net_tcp*.c. The
 * entry points are declared in net_int.h because they operate on the
 * stack's internals, and what the files share in net_tcp_int.h; this
 * header names the protocol constants the module and its tests share.
 */
#ifndef SLUICE_NET_TCP_H
#define SLUICE_NET_TCP_H

#define NET_TCP_RTO_INIT_MS 1000u
#define NET_TCP_RTO_MIN_MS 200u
#define NET_TCP_RTO_MAX_MS 60000u
#define NET_TCP_DELACK_MS 40u
/* Tail loss probe: at least this after the last send, and this much more
 * when a single segment is out (the peer may be delaying its ACK). */
#define NET_TCP_TLP_MIN_MS 10u
#define NET_TCP_TLP_DELACK_MS 50u
#define NET_TCP_SYNACK_RETRIES 5u
#define NET_TCP_RTX_RETRIES 15u
#define NET_TCP_INIT_CWND_SEGS 10u
#define NET_TCP_DEFAULT_MSS 536u
/* A timestamp older than this no longer protects against wrap (RFC 7323 5.5). */
#define NET_TCP_PAWS_IDLE_MS (24u * 24u * 3600u * 1000u)
/* SYN-cookie time counter granularity: cookies stay valid 64..128 s. */
#define NET_TCP_COOKIE_PERIOD_MS 64000u

#endif

/*
 * ARP for the native stack (RFC 826): replies for our address, a small
 * per-stack cache with aging, a bounded queue of frames waiting for
 * resolution, and a gratuitous ARP at start. The functions are declared in
 * net_int.h because they operate on the stack's internals; this header
 * names the module's constants.
 */
#ifndef SLUICE_NET_ARP_H
#define SLUICE_NET_ARP_H

/* Requests sent for one address before its queued frames are dropped. */
#define NET_ARP_TRIES 3
/* Between two requests for the same address. */
#define NET_ARP_RETRY_MS 1000u

#endif

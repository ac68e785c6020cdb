/*
 * Wire formats of the native stack: Ethernet, ARP, IPv4, ICMP and TCP headers
 * as packed structs. Multi-byte fields are in network byte order; the be16 /
 * be32 typedefs mark them so a reader sees where a conversion is due. The
 * structs are only ever overlaid on frame bytes (never copied by value), and
 * -fno-strict-aliasing is set project-wide.
 */
#ifndef SLUICE_NET_WIRE_H
#define SLUICE_NET_WIRE_H

#include <stdint.h>
#include <string.h>

typedef uint16_t be16;
typedef uint32_t be32;

static inline be16 net_htons(uint16_t v)
{
	return __builtin_bswap16(v);
}
static inline uint16_t net_ntohs(be16 v)
{
	return __builtin_bswap16(v);
}
static inline be32 net_htonl(uint32_t v)
{
	return __builtin_bswap32(v);
}
static inline uint32_t net_ntohl(be32 v)
{
	return __builtin_bswap32(v);
}

/* Unaligned-safe loads/stores of big-endian values inside option bytes. */
static inline uint16_t net_get16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t net_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void net_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void net_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#define NET_ETH_ALEN 6
#define NET_ETH_HLEN 14
#define NET_ETHERTYPE_IPV4 0x0800
#define NET_ETHERTYPE_ARP 0x0806

struct net_eth {
	uint8_t dst[NET_ETH_ALEN];
	uint8_t src[NET_ETH_ALEN];
	be16 type;
} __attribute__((packed));

#define NET_ARP_HW_ETHER 1
#define NET_ARP_OP_REQUEST 1
#define NET_ARP_OP_REPLY 2

struct net_arp {
	be16 htype;
	be16 ptype;
	uint8_t hlen;
	uint8_t plen;
	be16 op;
	uint8_t sha[NET_ETH_ALEN];
	be32 spa;
	uint8_t tha[NET_ETH_ALEN];
	be32 tpa;
} __attribute__((packed));

#define NET_IP_HLEN 20
#define NET_IP_PROTO_ICMP 1
#define NET_IP_PROTO_TCP 6
#define NET_IP_PROTO_UDP 17
#define NET_IP_DF 0x4000
#define NET_IP_MF 0x2000
#define NET_IP_OFFMASK 0x1fff
#define NET_IP_TTL 64

struct net_ip {
	uint8_t ver_ihl;
	uint8_t tos;
	be16 total_len;
	be16 id;
	be16 frag;
	uint8_t ttl;
	uint8_t proto;
	be16 csum;
	be32 src;
	be32 dst;
} __attribute__((packed));

#define NET_ICMP_ECHO_REPLY 0
#define NET_ICMP_UNREACH 3
#define NET_ICMP_UNREACH_PROTO 2
#define NET_ICMP_UNREACH_PORT 3
#define NET_ICMP_UNREACH_NEEDFRAG 4
#define NET_ICMP_ECHO_REQUEST 8
#define NET_ICMP_HLEN 8

struct net_icmp {
	uint8_t type;
	uint8_t code;
	be16 csum;
	be16 id;  /* echo: identifier; unreach/needfrag: unused */
	be16 seq; /* echo: sequence; needfrag: next-hop MTU */
} __attribute__((packed));

#define NET_TCP_HLEN 20
#define NET_TCP_FIN 0x01
#define NET_TCP_SYN 0x02
#define NET_TCP_RST 0x04
#define NET_TCP_PSH 0x08
#define NET_TCP_ACK 0x10
#define NET_TCP_URG 0x20

struct net_tcp {
	be16 sport;
	be16 dport;
	be32 seq;
	be32 ack;
	uint8_t off; /* data offset in the high nibble, 32-bit words */
	uint8_t flags;
	be16 win;
	be16 csum;
	be16 urp;
} __attribute__((packed));

/* TCP option kinds and lengths (RFC 9293, 7323, 2018). */
#define NET_TCPOPT_EOL 0
#define NET_TCPOPT_NOP 1
#define NET_TCPOPT_MSS 2
#define NET_TCPOPT_WS 3
#define NET_TCPOPT_SACK_PERM 4
#define NET_TCPOPT_SACK 5
#define NET_TCPOPT_TS 8
#define NET_TCPOLEN_MSS 4
#define NET_TCPOLEN_WS 3
#define NET_TCPOLEN_SACK_PERM 2
#define NET_TCPOLEN_TS 10
#define NET_TCP_MAX_WS 14
#define NET_TCP_MAX_OPTLEN 40

/* Sequence-space comparisons modulo 2^32 (RFC 9293 section 3.4). */
static inline int net_seq_lt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}
static inline int net_seq_le(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) <= 0;
}
static inline int net_seq_gt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}
static inline int net_seq_ge(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) >= 0;
}

#endif

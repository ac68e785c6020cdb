/*
 * Open connections per client address, for the per-address cap
 * (conns_per_ip). One table per worker, sized at create for max_conns
 * distinct addresses at half load, so adding never fails and nothing is
 * allocated per connection. Linear probing with backward-shift deletion:
 * no tombstones, so a long-lived worker never degrades.
 */
#ifndef SLUICE_APP_PEERS_H
#define SLUICE_APP_PEERS_H

#include <stdint.h>

struct app_peers;

/* A table for up to max_addrs addresses at once; NULL when out of memory. */
struct app_peers *app_peers_create(uint32_t max_addrs);
void app_peers_destroy(struct app_peers *p);
/* Counts one more conn of ipv4 unless it holds `cap` already. Returns the
 * new count, or 0 when refused (over the cap, or more addresses than the
 * table was made for). */
uint32_t app_peers_add(struct app_peers *p, uint32_t ipv4, uint32_t cap);
/* Counts one conn of ipv4 less (one that app_peers_add accepted). */
void app_peers_del(struct app_peers *p, uint32_t ipv4);
/* Conns of ipv4 counted now. */
uint32_t app_peers_count(const struct app_peers *p, uint32_t ipv4);

#endif

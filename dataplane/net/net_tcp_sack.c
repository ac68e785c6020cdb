/*
 * The SACK scoreboard (RFC 2018): the peer's blocks above snd_una, up to
 * NET_SACKED_MAX merged ranges per connection, and what RFC 6675 derives
 * from them (IsLost, pipe). The same whatever the congestion control.
 */
#include "net/net_tcp_int.h"

uint32_t tcp_sack_skip(const struct net_conn *c, uint32_t seq)
{
	bool moved = true;
	while (moved) {
		moved = false;
		for (uint32_t i = 0; i < c->n_sacked; i++) {
			if (net_seq_le(c->sacked[i].start, seq) && net_seq_lt(seq, c->sacked[i].end)) {
				seq = c->sacked[i].end;
				moved = true;
			}
		}
	}
	return seq;
}

uint32_t tcp_sack_next(const struct net_conn *c, uint32_t seq, uint32_t limit)
{
	for (uint32_t i = 0; i < c->n_sacked; i++)
		if (net_seq_gt(c->sacked[i].start, seq) && net_seq_lt(c->sacked[i].start, limit))
			limit = c->sacked[i].start;
	return limit;
}

static uint32_t tcp_sack_bytes(const struct net_conn *c)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->n_sacked; i++)
		n += c->sacked[i].end - c->sacked[i].start;
	return n;
}

uint32_t tcp_sack_update(struct net_conn *c, const struct tcp_seg *sg)
{
	uint32_t before = tcp_sack_bytes(c);
	for (uint32_t i = 0; i < sg->nsack; i++) {
		struct net_range r = sg->sack[i];
		if (!net_seq_lt(r.start, r.end) || !net_seq_gt(r.start, c->snd_una) ||
		    net_seq_gt(r.end, c->snd_max))
			continue;
		tcp_range_absorb(c->sacked, &c->n_sacked, &r);
		if (c->n_sacked == NET_SACKED_MAX) {
			/* Full: the lowest block is forgotten. */
			uint32_t lo = 0;
			for (uint32_t k = 1; k < c->n_sacked; k++)
				if (net_seq_lt(c->sacked[k].start, c->sacked[lo].start))
					lo = k;
			c->sacked[lo] = r;
		} else {
			c->sacked[c->n_sacked++] = r;
		}
	}
	uint32_t after = tcp_sack_bytes(c);
	return after > before ? after - before : 0;
}

void tcp_sack_trim(struct net_conn *c)
{
	uint32_t j = 0;
	while (j < c->n_sacked) {
		if (net_seq_le(c->sacked[j].end, c->snd_una)) {
			c->sacked[j] = c->sacked[--c->n_sacked];
			continue;
		}
		if (net_seq_lt(c->sacked[j].start, c->snd_una))
			c->sacked[j].start = c->snd_una;
		j++;
	}
}

uint32_t tcp_sack_high(const struct net_conn *c)
{
	uint32_t h = c->snd_una;
	for (uint32_t i = 0; i < c->n_sacked; i++)
		if (net_seq_gt(c->sacked[i].end, h))
			h = c->sacked[i].end;
	return h;
}

uint32_t tcp_sack_above(const struct net_conn *c, uint32_t seq)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->n_sacked; i++) {
		const struct net_range *r = &c->sacked[i];
		if (net_seq_gt(r->end, seq))
			n += r->end - (net_seq_gt(r->start, seq) ? r->start : seq);
	}
	return n;
}

/*
 * IsLost(x) holds when three SACKed blocks or more than two segments' worth
 * of SACKed bytes lie above x; it is monotone, so it is described by one
 * edge: every un-SACKed byte below *lost is lost. Returns the pipe:
 * un-SACKed bytes at or above the edge (still in flight) plus those below
 * it that were retransmitted (below rtx_hi).
 */
uint32_t tcp_sack_pipe(const struct net_conn *c, uint32_t seg, uint32_t *lost)
{
	uint32_t edge = c->snd_una, above = 0, blocks = 0, hi = c->snd_max;
	for (uint32_t k = 0; k < c->n_sacked; k++) {
		int best = -1;
		for (uint32_t i = 0; i < c->n_sacked; i++)
			if (net_seq_lt(c->sacked[i].start, hi) &&
			    (best < 0 || net_seq_gt(c->sacked[i].start, c->sacked[best].start)))
				best = (int)i;
		if (best < 0)
			break;
		hi = c->sacked[best].start;
		above += c->sacked[best].end - c->sacked[best].start;
		if (++blocks >= 3 || above > 2u * seg) {
			edge = hi;
			break;
		}
	}
	if (edge == c->snd_una)
		above = tcp_sack_bytes(c);
	uint32_t pipe = c->snd_max - edge - above;
	uint32_t r = net_seq_lt(c->rtx_hi, edge) ? c->rtx_hi : edge;
	if (net_seq_gt(r, c->snd_una)) {
		uint32_t held = 0;
		for (uint32_t i = 0; i < c->n_sacked; i++) {
			uint32_t a = net_seq_gt(c->sacked[i].start, c->snd_una) ? c->sacked[i].start
										: c->snd_una;
			uint32_t b = net_seq_lt(c->sacked[i].end, r) ? c->sacked[i].end : r;
			if (net_seq_lt(a, b))
				held += b - a;
		}
		pipe += r - c->snd_una - held;
	}
	*lost = edge;
	return pipe;
}

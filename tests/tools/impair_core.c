#include "impair_core.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- PRNG ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void imp_rng_seed(struct imp_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t v, int k)
{
	return (v << k) | (v >> (64 - k));
}

uint64_t imp_rng_next(struct imp_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Rejection of the 2^64 mod n lowest values makes the modulo unbiased. */
uint64_t imp_rng_below(struct imp_rng *r, uint64_t n)
{
	uint64_t floor = -n % n;
	for (;;) {
		uint64_t x = imp_rng_next(r);
		if (x >= floor)
			return x % n;
	}
}

bool imp_rng_chance(struct imp_rng *r, double pct)
{
	if (pct <= 0.0)
		return false;
	if (pct >= 100.0)
		return true;
	/* 53 random bits as a double in [0, 1). */
	double u = (double)(imp_rng_next(r) >> 11) * 0x1.0p-53;
	return u * 100.0 < pct;
}

/* ---- one direction ---------------------------------------------------- */

int imp_dir_init(struct imp_dir *d, const struct imp_params *p, uint64_t seed,
                 uint32_t queue, uint32_t slot_size)
{
	memset(d, 0, sizeof(*d));
	if (queue == 0 || queue > IMP_MAX_QUEUE || slot_size <= IMP_ETH_HLEN) {
		errno = EINVAL;
		return -1;
	}
	uint32_t cap = 1;
	while (cap < queue)
		cap <<= 1;
	d->p = *p;
	if (d->p.reorder_gap == 0)
		d->p.reorder_gap = 1;
	imp_rng_seed(&d->rng, seed);
	d->slot_size = slot_size;
	d->cap = cap;
	size_t bytes = ((size_t)cap + IMP_HELD_MAX) * slot_size;
	d->mem = malloc(bytes);
	d->due_ns = calloc(cap, sizeof(*d->due_ns));
	d->len = calloc(cap, sizeof(*d->len));
	if (!d->mem || !d->due_ns || !d->len)
		goto fail;
	for (uint32_t i = 0; i < IMP_HELD_MAX; i++)
		d->held[i].data = d->mem + ((size_t)cap + i) * slot_size;
	return 0;
fail:
	imp_dir_free(d);
	errno = ENOMEM;
	return -1;
}

void imp_dir_free(struct imp_dir *d)
{
	free(d->mem);
	free(d->due_ns);
	free(d->len);
	d->mem = NULL;
	d->due_ns = NULL;
	d->len = NULL;
}

static inline uint8_t *slot(const struct imp_dir *d, uint32_t idx)
{
	return d->mem + (size_t)(idx & (d->cap - 1)) * d->slot_size;
}

/* Queues a frame behind everything already queued. Jitter moves the due time
 * either way, but never before the previous frame's: like a real link, the
 * delay varies without reordering (reordering is --reorder's job). */
static void enqueue(struct imp_dir *d, const uint8_t *frame, uint32_t len, uint64_t now_ns)
{
	if (d->tail - d->head == d->cap) {
		d->c.qdrop++;
		return;
	}
	int64_t delay = (int64_t)d->p.delay_ms * 1000000;
	if (d->p.jitter_ms) {
		int64_t span = (int64_t)d->p.jitter_ms * 1000000;
		delay += (int64_t)imp_rng_below(&d->rng, (uint64_t)(2 * span + 1)) - span;
		if (delay < 0)
			delay = 0;
	}
	uint64_t due = now_ns + (uint64_t)delay;
	if (due < d->last_due_ns)
		due = d->last_due_ns;
	d->last_due_ns = due;
	uint32_t i = d->tail & (d->cap - 1);
	memcpy(slot(d, d->tail), frame, len);
	d->len[i] = len;
	d->due_ns[i] = due;
	d->tail++;
}

/* Removes held frame k, keeping the others in the order they were held. */
static void release_held(struct imp_dir *d, uint32_t k, uint64_t now_ns)
{
	enqueue(d, d->held[k].data, d->held[k].len, now_ns);
	struct imp_held h = d->held[k];
	memmove(&d->held[k], &d->held[k + 1], (d->nheld - k - 1) * sizeof(d->held[0]));
	d->held[d->nheld - 1] = h;  /* keep its buffer for reuse */
	d->nheld--;
}

/* A frame went out past the held ones: count it against each gap. */
static void frame_passed(struct imp_dir *d, uint64_t now_ns)
{
	for (uint32_t k = 0; k < d->nheld;) {
		if (--d->held[k].gap == 0)
			release_held(d, k, now_ns);
		else
			k++;
	}
}

void imp_dir_input(struct imp_dir *d, uint8_t *frame, uint32_t len, uint64_t now_ns)
{
	d->c.rx++;
	d->c.rx_bytes += len;
	if (len > d->slot_size) {
		d->c.oversize++;
		return;
	}
	if (imp_rng_chance(&d->rng, d->p.loss)) {
		d->c.lost++;
		return;
	}
	if (len > IMP_ETH_HLEN && imp_rng_chance(&d->rng, d->p.corrupt)) {
		uint32_t at = IMP_ETH_HLEN + (uint32_t)imp_rng_below(&d->rng, len - IMP_ETH_HLEN);
		/* XOR with 1..255: the byte always changes. */
		frame[at] ^= (uint8_t)(1 + imp_rng_below(&d->rng, 255));
		d->c.corrupted++;
	}
	bool dup = imp_rng_chance(&d->rng, d->p.dup);
	if (d->nheld < IMP_HELD_MAX && imp_rng_chance(&d->rng, d->p.reorder)) {
		struct imp_held *h = &d->held[d->nheld++];
		memcpy(h->data, frame, len);
		h->len = len;
		h->gap = 1 + (uint32_t)imp_rng_below(&d->rng, d->p.reorder_gap);
		h->deadline_ns = now_ns + (uint64_t)d->p.reorder_hold_ms * 1000000;
		d->c.reordered++;
	} else {
		enqueue(d, frame, len, now_ns);
		frame_passed(d, now_ns);
	}
	if (dup) {
		d->c.dup++;
		enqueue(d, frame, len, now_ns);
		frame_passed(d, now_ns);
	}
}

void imp_dir_tick(struct imp_dir *d, uint64_t now_ns)
{
	for (uint32_t k = 0; k < d->nheld;) {
		if (d->held[k].deadline_ns <= now_ns)
			release_held(d, k, now_ns);
		else
			k++;
	}
}

const uint8_t *imp_dir_peek(const struct imp_dir *d, uint64_t now_ns, uint32_t *len)
{
	if (d->head == d->tail)
		return NULL;
	uint32_t i = d->head & (d->cap - 1);
	if (d->due_ns[i] > now_ns)
		return NULL;
	*len = d->len[i];
	return slot(d, d->head);
}

void imp_dir_pop(struct imp_dir *d)
{
	if (d->head != d->tail)
		d->head++;
}

uint32_t imp_dir_pending(const struct imp_dir *d)
{
	return d->tail - d->head + d->nheld;
}

uint64_t imp_dir_next_ns(const struct imp_dir *d)
{
	uint64_t next = UINT64_MAX;
	if (d->head != d->tail)
		next = d->due_ns[d->head & (d->cap - 1)];
	for (uint32_t k = 0; k < d->nheld; k++)
		if (d->held[k].deadline_ns < next)
			next = d->held[k].deadline_ns;
	return next;
}

/* ---- command line ----------------------------------------------------- */

static int fail_msg(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail_msg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int parse_pct(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0.0 || v > 100.0)
		return -1;
	*out = v;
	return 0;
}

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

enum val_kind { VAL_PCT, VAL_MS, VAL_GAP };

/* "X" sets both directions, "X:Y" sets A->B to X and B->A to Y. */
static int parse_pair(const char *s, enum val_kind kind, void *ab, void *ba)
{
	char buf[64];
	size_t n = strlen(s);
	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n + 1);
	char *second = strchr(buf, ':');
	if (second)
		*second++ = '\0';
	const char *parts[2] = {buf, second ? second : buf};
	void *dst[2] = {ab, ba};
	for (int i = 0; i < 2; i++) {
		int rc;
		if (kind == VAL_PCT)
			rc = parse_pct(parts[i], dst[i]);
		else if (kind == VAL_MS)
			rc = parse_u32(parts[i], IMP_MAX_MS, dst[i]);
		else
			rc = parse_u32(parts[i], IMP_MAX_GAP, dst[i]);
		if (rc != 0 || (kind == VAL_GAP && *(uint32_t *)dst[i] == 0))
			return -1;
	}
	return 0;
}

int imp_parse_args(int argc, char **argv, struct imp_opts *o, char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	o->queue = 8192;
	for (int i = 0; i < 2; i++) {
		o->p[i].reorder_gap = 3;
		o->p[i].reorder_hold_ms = 10;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help"))
			return 1;
		if (strncmp(a, "--", 2) != 0)
			return fail_msg(err, errlen, "unexpected argument '%s'", a);
		/* --name=value or --name value */
		char name[32];
		const char *val;
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		if (nlen >= sizeof(name))
			return fail_msg(err, errlen, "unknown option '%s'", a);
		memcpy(name, a, nlen);
		name[nlen] = '\0';
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail_msg(err, errlen, "%s needs a value", name);
			val = argv[++i];
		}
		struct imp_params *ab = &o->p[0], *ba = &o->p[1];
		int rc;
		if (!strcmp(name, "--a") || !strcmp(name, "--b")) {
			if (!*val)
				return fail_msg(err, errlen, "%s: empty interface name", name);
			o->ifname[name[2] == 'b'] = val;
			continue;
		} else if (!strcmp(name, "--loss")) {
			rc = parse_pair(val, VAL_PCT, &ab->loss, &ba->loss);
		} else if (!strcmp(name, "--reorder")) {
			rc = parse_pair(val, VAL_PCT, &ab->reorder, &ba->reorder);
		} else if (!strcmp(name, "--dup")) {
			rc = parse_pair(val, VAL_PCT, &ab->dup, &ba->dup);
		} else if (!strcmp(name, "--corrupt")) {
			rc = parse_pair(val, VAL_PCT, &ab->corrupt, &ba->corrupt);
		} else if (!strcmp(name, "--delay")) {
			rc = parse_pair(val, VAL_MS, &ab->delay_ms, &ba->delay_ms);
		} else if (!strcmp(name, "--jitter")) {
			rc = parse_pair(val, VAL_MS, &ab->jitter_ms, &ba->jitter_ms);
		} else if (!strcmp(name, "--reorder-gap")) {
			rc = parse_pair(val, VAL_GAP, &ab->reorder_gap, &ba->reorder_gap);
		} else if (!strcmp(name, "--reorder-hold")) {
			rc = parse_pair(val, VAL_MS, &ab->reorder_hold_ms, &ba->reorder_hold_ms);
		} else if (!strcmp(name, "--seed")) {
			char *end;
			errno = 0;
			o->seed = strtoull(val, &end, 0);
			rc = (errno || end == val || *end || *val == '-') ? -1 : 0;
		} else if (!strcmp(name, "--duration")) {
			rc = parse_u32(val, 86400, &o->duration_s);
		} else if (!strcmp(name, "--queue")) {
			rc = parse_u32(val, IMP_MAX_QUEUE, &o->queue);
			if (rc == 0 && o->queue == 0)
				rc = -1;
		} else {
			return fail_msg(err, errlen, "unknown option '%s'", name);
		}
		if (rc != 0)
			return fail_msg(err, errlen, "%s: bad value '%s'", name, val);
	}
	if (!o->ifname[0] || !o->ifname[1])
		return fail_msg(err, errlen, "both --a IFACE and --b IFACE are required");
	if (!strcmp(o->ifname[0], o->ifname[1]))
		return fail_msg(err, errlen, "--a and --b name the same interface '%s'", o->ifname[0]);
	return 0;
}

int imp_format_counters(char *buf, size_t cap, const char *label, const struct imp_counters *c)
{
	int n = snprintf(buf, cap,
	                 "%s rx=%" PRIu64 " rx_bytes=%" PRIu64 " tx=%" PRIu64 " tx_bytes=%" PRIu64
	                 " lost=%" PRIu64 " dup=%" PRIu64 " reordered=%" PRIu64
	                 " corrupted=%" PRIu64 " qdrop=%" PRIu64 " oversize=%" PRIu64
	                 " txdrop=%" PRIu64 "\n",
	                 label, c->rx, c->rx_bytes, c->tx, c->tx_bytes, c->lost, c->dup,
	                 c->reordered, c->corrupted, c->qdrop, c->oversize, c->txdrop);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	return n;
}

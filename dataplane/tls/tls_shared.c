/*
 * The TLS layer's process-wide state (tls.h): certificate and ticket-key
 * snapshots behind atomic pointers, their replacement by the main thread
 * (reload, rotation, OCSP refresh) and the deferred release of the old ones,
 * and the counters every worker writes and /metrics reads.
 *
 * Release rule: the main thread replaces a snapshot with an atomic exchange,
 * then bumps `gen` and queues the old one with that generation. A worker
 * loads `gen`, then the pointers, at the top of every poll and stores the
 * generation it loaded in its `seen`; it uses those pointers until its next
 * poll. So once every worker's `seen` has reached an entry's generation, no
 * worker can hold the old pointer and it is freed. A worker blocks at most
 * 100 ms, so the wait is short; nothing on the worker's path waits at all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/conf.h"
#include "sluice/log.h"
#include "tls/tls_int.h"
#include "worker/dp_stat.h"

#define NS_PER_S 1000000000ull
/* An OCSP fetch never holds the main thread longer than this. */
#define OCSP_TIMEOUT_S 5
/* After a failed fetch, the next try. */
#define OCSP_RETRY_S 60ull

/* The only instance (tls.h): /metrics' counter hook takes no argument. */
static struct tls_shared *the_shared;

/* C(name, type, labels, field, help): one sample; consecutive entries with
 * one name are a family (transport.h). */
#define TLS_COUNTERS(C)                                                                            \
	C("sluice_tls_handshakes_total", "counter", "{kind=\"full\"}", handshakes,                  \
	  "TLS handshakes completed, full or resumed with a session ticket.")                       \
	C("sluice_tls_handshakes_total", "counter", "{kind=\"resumed\"}", resumed, "")              \
	C("sluice_tls_handshake_failures_total", "counter", "", failures,                          \
	  "TLS handshakes that failed (alert, bad input, peer gone, timeout).")                     \
	C("sluice_tls_handshake_timeouts_total", "counter", "", timeouts,                          \
	  "TLS handshakes not finished within handshake_timeout_s.")                                \
	C("sluice_tls_handshakes_refused_total", "counter", "{reason=\"worker_cap\"}",               \
	  refused_worker, "Connections reset at accept: handshakes_max or handshakes_per_addr in progress.") \
	C("sluice_tls_handshakes_refused_total", "counter", "{reason=\"addr_cap\"}", refused_addr, "") \
	C("sluice_tls_handshakes_deferred_total", "counter", "", deferred,                         \
	  "Handshake inputs held to a later loop turn because the turn's handshake budget was spent.") \
	C("sluice_tls_handshake_cpu_microseconds_total", "counter", "", handshake_ns,              \
	  "Time spent in TLS handshake steps.")                                                     \
	C("sluice_tls_handshakes_in_progress", "gauge", "", in_progress,                           \
	  "TLS handshakes started and not finished.")                                               \
	C("sluice_tls_records_out_total", "counter", "", records_out,                              \
	  "TLS records of application data sent.")                                                  \
	C("sluice_tls_plain_bytes_out_total", "counter", "", plain_bytes_out,                      \
	  "Application bytes encrypted into TLS records.")                                          \
	C("sluice_tls_write_errors_total", "counter", "", write_errors,                            \
	  "TLS connections reset because the transport below refused their records.")               \
	C("sluice_tls_app_errors_total", "counter", "", app_errors,                                \
	  "TLS connections reset because the app broke the transport contract.")

#define DEF(name, type, labels, field, help) { name, type, help, labels },
#define OFF(name, type, labels, field, help) offsetof(struct tls_stats, field),

static const struct tp_counter_def tls_counter_defs[] = { TLS_COUNTERS(DEF) };
static const uint32_t tls_ncounters = (uint32_t)SLUICE_ARRAY_LEN(tls_counter_defs);
static const size_t tls_counter_offs[] = { TLS_COUNTERS(OFF) };

uint32_t tls_shared_counters(uint64_t *values)
{
	struct tls_shared *s = the_shared;
	if (!s)
		return 0;
	uint32_t counted = s->inner_counters ? s->inner_counters(values) : 0;
	if (s->ninner && counted == 0)
		memset(values, 0, s->ninner * sizeof(*values));
	uint64_t *v = values + s->ninner;
	for (uint32_t i = 0; i < tls_ncounters; i++) {
		uint64_t sum = 0;
		for (uint32_t w = 0; w < s->nworkers; w++)
			sum += DP_STAT_GET((const uint64_t *)(const void *)
					   ((const char *)&s->w[w].st + tls_counter_offs[i]));
		/* Handshake time is kept in ns and shown in µs. */
		v[i] = tls_counter_offs[i] == offsetof(struct tls_stats, handshake_ns) ? sum / 1000 : sum;
	}
	return s->nworkers;
}

int tls_shared_counters_setup(struct tls_shared *s, const struct tp_ops *inner)
{
	if (s->defs)
		return 0;
	uint32_t ninner = inner->counters ? inner->ncounters : 0;
	if (ninner + tls_ncounters > TP_COUNTERS_MAX)
		return -1;
	struct tp_counter_def *d = calloc(ninner + tls_ncounters, sizeof(*d));
	if (!d)
		return -1;
	if (ninner)
		memcpy(d, inner->counter_defs, ninner * sizeof(*d));
	memcpy(d + ninner, tls_counter_defs, tls_ncounters * sizeof(*d));
	s->defs = d;
	s->ninner = ninner;
	s->ndefs = ninner + tls_ncounters;
	s->inner_counters = ninner ? inner->counters : NULL;
	return 0;
}

/* ---- snapshots ------------------------------------------------------------- */

void tls_shared_retire(struct tls_shared *s, void *old, void (*release)(void *))
{
	uint64_t gen = atomic_fetch_add(&s->gen, 1) + 1;
	if (!old)
		return;
	struct tls_retired *r = malloc(sizeof(*r));
	if (!r) {
		/* Nothing safe to do with it but keep it: a leak, not a crash. */
		LOG_WARN("tls: out of memory retiring a snapshot; it stays allocated");
		return;
	}
	*r = (struct tls_retired){ .next = s->retired, .gen = gen, .release = release, .p = old };
	s->retired = r;
}

void tls_shared_snapshot(struct tls_shared *s, uint32_t worker, struct tls_view *v)
{
	uint64_t gen = atomic_load(&s->gen);
	v->certs = atomic_load(&s->certs);
	v->keys = atomic_load(&s->keys);
	atomic_store_explicit(&s->w[worker].seen, gen, memory_order_release);
}

/* Frees what no worker can still be using (see the rule at the top). */
static void reclaim(struct tls_shared *s)
{
	uint64_t low = atomic_load(&s->gen);
	for (uint32_t i = 0; i < s->nworkers; i++) {
		uint64_t seen = atomic_load_explicit(&s->w[i].seen, memory_order_acquire);
		if (seen < low)
			low = seen;
	}
	struct tls_retired **pp = &s->retired;
	while (*pp) {
		struct tls_retired *r = *pp;
		if (r->gen <= low) {
			*pp = r->next;
			r->release(r->p);
			free(r);
		} else {
			pp = &r->next;
		}
	}
}

/* ---- OCSP ------------------------------------------------------------------ */

/* Fetches c's staple now; the next fetch is due at half the answer's
 * validity (at most ocsp_refresh_s), or in a minute after a failure. */
static void ocsp_refresh(struct tls_shared *s, struct tls_cert *c, uint64_t now)
{
	char err[256];
	uint64_t valid_s = 0;
	struct tls_staple *st = tls_ctx_ocsp_fetch(c, OCSP_TIMEOUT_S, &valid_s, err, sizeof(err));
	if (!st) {
		LOG_WARN("[cert.%s]: OCSP: %s; no new staple, retry in %llu s", c->label, err,
			 (unsigned long long)OCSP_RETRY_S);
		c->ocsp_due_ns = now + OCSP_RETRY_S * NS_PER_S;
		return;
	}
	uint64_t next = valid_s / 2;
	if (next > s->conf->tls_ocsp_refresh_s)
		next = s->conf->tls_ocsp_refresh_s;
	if (next < OCSP_RETRY_S)
		next = OCSP_RETRY_S;
	c->ocsp_due_ns = now + next * NS_PER_S;
	struct tls_staple *old = atomic_exchange(&c->staple, st);
	tls_shared_retire(s, old, free);
	LOG_INFO("[cert.%s]: OCSP staple of %zu bytes from %s", c->label, st->len, c->ocsp_url);
}

static void ocsp_due(struct tls_shared *s, struct tls_certset *set, uint64_t now)
{
	if (!s->conf->tls_ocsp_stapling)
		return;
	for (uint32_t i = 0; i < set->n; i++) {
		struct tls_cert *c = &set->cert[i];
		if (c->ocsp_url && now >= c->ocsp_due_ns)
			ocsp_refresh(s, c, now);
	}
}

/* ---- the process-wide object ----------------------------------------------- */

struct tls_shared *tls_shared_create(const struct sluice_conf *conf, char *err, size_t errlen)
{
	if (the_shared) {
		snprintf(err, errlen, "tls: already set up");
		return NULL;
	}
	struct tls_shared *s = aligned_alloc(SLUICE_CACHELINE,
					     (sizeof(*s) + SLUICE_CACHELINE - 1) & ~(size_t)(SLUICE_CACHELINE - 1));
	if (!s) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	memset(s, 0, sizeof(*s));
	s->conf = conf;
	s->bio_meth = tls_ctx_bio_method(tls_bio_write, tls_bio_read);
	struct tls_certset *set = s->bio_meth ? tls_ctx_load(conf, err, errlen) : NULL;
	if (!s->bio_meth)
		snprintf(err, errlen, "tls: cannot make the BIO method");
	struct tls_keyset *ks = set ? tls_ctx_keys_rotate(NULL) : NULL;
	if (set && !ks)
		snprintf(err, errlen, "tls: cannot make a ticket key");
	if (!ks) {
		tls_ctx_free(set);
		BIO_meth_free(s->bio_meth);
		free(s);
		return NULL;
	}
	atomic_store(&s->certs, set);
	atomic_store(&s->keys, ks);
	uint64_t now = sluice_now_ns();
	s->next_rotate_ns = now + (uint64_t)conf->tls_ticket_rotate_s * NS_PER_S;
	ocsp_due(s, set, now);
	the_shared = s;
	return s;
}

void tls_shared_destroy(struct tls_shared *s)
{
	if (!s)
		return;
	while (s->retired) {
		struct tls_retired *r = s->retired;
		s->retired = r->next;
		r->release(r->p);
		free(r);
	}
	tls_ctx_free(atomic_load(&s->certs));
	free(atomic_load(&s->keys));
	BIO_meth_free(s->bio_meth);
	free((void *)s->defs);
	if (the_shared == s)
		the_shared = NULL;
	free(s);
}

/* A certificate that did not change keeps its staple and schedule. */
static void carry_staples(const struct tls_certset *old, struct tls_certset *set)
{
	for (uint32_t i = 0; i < set->n; i++) {
		struct tls_cert *c = &set->cert[i];
		for (uint32_t j = 0; j < old->n; j++) {
			const struct tls_cert *o = &old->cert[j];
			struct tls_staple *st = atomic_load(&o->staple);
			if (!st || X509_cmp(o->leaf, c->leaf) != 0)
				continue;
			struct tls_staple *copy = malloc(sizeof(*copy) + st->len);
			if (!copy)
				break;
			memcpy(copy, st, sizeof(*copy) + st->len);
			atomic_store(&c->staple, copy);
			c->ocsp_due_ns = o->ocsp_due_ns;
			break;
		}
	}
}

int tls_shared_reload(struct tls_shared *s, char *err, size_t errlen)
{
	struct tls_certset *set = tls_ctx_load(s->conf, err, errlen);
	if (!set)
		return -1;
	struct tls_certset *old = atomic_load(&s->certs);
	carry_staples(old, set);
	ocsp_due(s, set, sluice_now_ns());
	old = atomic_exchange(&s->certs, set);
	tls_shared_retire(s, old, tls_ctx_free);
	return 0;
}

void tls_shared_tick(struct tls_shared *s)
{
	uint64_t now = sluice_now_ns();
	if (now >= s->next_rotate_ns) {
		struct tls_keyset *ks = tls_ctx_keys_rotate(atomic_load(&s->keys));
		if (ks) {
			struct tls_keyset *old = atomic_exchange(&s->keys, ks);
			tls_shared_retire(s, old, free);
		} else {
			LOG_WARN("tls: cannot make a new ticket key; the current one stays");
		}
		s->next_rotate_ns = now + (uint64_t)s->conf->tls_ticket_rotate_s * NS_PER_S;
	}
	ocsp_due(s, atomic_load(&s->certs), now);
	reclaim(s);
}

/*
 * Internals of the TLS layer, shared by its files: tls.c (the transport and
 * its connections), tls_ctx.c (OpenSSL contexts: certificates, SNI, ALPN,
 * ticket keys, OCSP staples; the custom BIO) and tls_shared.c (the process-
 * wide state: snapshots, rotation, reload, reclamation, counters).
 * Nothing outside dataplane/tls/ includes this.
 */
#ifndef SLUICE_TLS_INT_H
#define SLUICE_TLS_INT_H

#include <openssl/ssl.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sluice/chan.h"
#include "sluice/common.h"
#include "sluice/conf.h"
#include "tls/tls.h"
#include "transport/transport.h"

/* Largest plaintext of one TLS record (RFC 8446 5.1). */
#define TLS_RECORD_MAX 16384u
/* Ticket keys kept: the newest encrypts, all of them decrypt. */
#define TLS_TICKET_KEYS 3u
#define TLS_MAX_WORKERS CHAN_MAX_WORKERS

/* An OCSP response, DER, as the responder signed it; immutable. */
struct tls_staple {
	size_t len;
	uint8_t der[];
};

/* One [cert.NAME]: its context and the names SNI matches it by. */
struct tls_cert {
	SSL_CTX *ctx;              /* owned reference; SSLs keep their own */
	char **names;              /* lowercase DNS names from the certificate; "*.x" wildcards */
	uint32_t nnames;
	_Atomic(struct tls_staple *) staple; /* NULL: nothing to staple */
	char *ocsp_url;            /* the responder the certificate names, or NULL */
	X509 *leaf, *issuer;       /* for OCSP requests (issuer NULL: chain has none) */
	uint64_t ocsp_due_ns;      /* main thread: next fetch */
	char label[CONF_NAME_MAX]; /* the section's NAME, for logs */
};

/* Every configured certificate, as one immutable snapshot; cert[0] answers
 * clients whose SNI name matches none (or who send none). */
struct tls_certset {
	uint32_t n;
	struct tls_cert cert[];
};

struct tls_ticket_key {
	uint8_t name[16];
	uint8_t aes[32];
	uint8_t hmac[32];
};

/* The ticket keys of every worker, immutable; k[0] encrypts. */
struct tls_keyset {
	uint32_t n;
	struct tls_ticket_key k[TLS_TICKET_KEYS];
};

/* One worker's counters: written by it alone (DP_STAT_ADD), read by any. */
struct tls_stats {
	uint64_t handshakes;       /* completed, full */
	uint64_t resumed;          /* completed with a session ticket */
	uint64_t failures;         /* alerts, bad input, timeouts */
	uint64_t timeouts;
	uint64_t refused_worker;   /* handshakes_max reached */
	uint64_t refused_addr;     /* handshakes_per_addr reached */
	uint64_t deferred;         /* input held back to a later turn by the budget */
	uint64_t records_out;
	uint64_t plain_bytes_out;
	uint64_t write_errors;     /* the inner transport refused ciphertext: conn reset */
	uint64_t app_errors;       /* the app broke the transport contract: conn reset */
	uint64_t in_progress;      /* gauge */
	uint64_t handshake_ns;     /* handshake CPU, summed */
};

struct tls_retired {
	struct tls_retired *next;
	uint64_t gen; /* freed once every worker has seen this generation */
	void (*release)(void *p);
	void *p;
};

struct tls_shared {
	const struct sluice_conf *conf;
	BIO_METHOD *bio_meth;
	_Atomic(struct tls_certset *) certs;
	_Atomic(struct tls_keyset *) keys;
	/* Bumped after every publication; workers store what they saw. */
	_Atomic uint64_t gen;
	uint32_t nworkers;           /* struct tls created (main thread, before they run) */
	struct tls_retired *retired; /* main thread */
	uint64_t next_rotate_ns;     /* main thread */
	/* /metrics: the inner transport's samples, then ours. */
	const struct tp_counter_def *defs;
	uint32_t ndefs, ninner;
	uint32_t (*inner_counters)(uint64_t *values);
	struct {
		alignas(SLUICE_CACHELINE) _Atomic uint64_t seen;
		struct tls_stats st;
	} w[TLS_MAX_WORKERS];
};

/* ---- tls_ctx.c ---------------------------------------------------------- */

/* Loads every certificate of conf into a new set, or NULL with err. */
struct tls_certset *tls_ctx_load(const struct sluice_conf *conf, char *err, size_t errlen);
void tls_ctx_free(void *certset);
/* The certificate of set for an SNI name (NULL: none sent): an exact name,
 * else a wildcard one label up, else cert[0]. */
struct tls_cert *tls_ctx_pick(struct tls_certset *set, const char *name);
/* A new key set: fresh key first, then up to TLS_TICKET_KEYS-1 of old's. */
struct tls_keyset *tls_ctx_keys_rotate(const struct tls_keyset *old);
/* Fetches and checks c's OCSP response (blocking, bounded by timeout_s);
 * NULL with a message in err. */
struct tls_staple *tls_ctx_ocsp_fetch(const struct tls_cert *c, int timeout_s, uint64_t *valid_s,
				      char *err, size_t errlen);
/* The BIO method whose reads and writes go to a struct tls_conn (tls.c). */
BIO_METHOD *tls_ctx_bio_method(int (*bwrite)(BIO *, const char *, int),
			       int (*bread)(BIO *, char *, int));

/* What the per-handshake callbacks (SNI, tickets, staples) need from the
 * worker's side; tls.c keeps it in SSL's app data. */
struct tls_view {
	struct tls_certset *certs;
	struct tls_keyset *keys;
};
struct tls_view *tls_view_of(SSL *ssl);

/* ---- tls.c -------------------------------------------------------------- */

/* The BIO's reads take the input being offered to the connection; its writes
 * append ciphertext to the inner transport's send queue. */
int tls_bio_write(BIO *b, const char *data, int len);
int tls_bio_read(BIO *b, char *out, int len);

/* ---- tls_shared.c ------------------------------------------------------- */

/* Queues old (just replaced by an atomic exchange) to be released once
 * every worker has taken a snapshot after the exchange. Main thread. */
void tls_shared_retire(struct tls_shared *s, void *old, void (*release)(void *));
/* A worker's snapshot at the top of its poll: the current sets; `seen`
 * tells the main thread that older ones are no longer in use by it. */
void tls_shared_snapshot(struct tls_shared *s, uint32_t worker, struct tls_view *v);
/* Sets up the /metrics table once the inner transport is known: its
 * samples first, then ours. Returns -1 when they do not fit. */
int tls_shared_counters_setup(struct tls_shared *s, const struct tp_ops *inner);
/* tp_ops.counters of the TLS transport. */
uint32_t tls_shared_counters(uint64_t *values);

#endif

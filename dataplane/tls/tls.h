/*
 * TLS as a transport layer: a struct tp on top of another struct tp (the
 * kernel transport or sluice's own TCP stack), giving the app the same
 * upcalls. Ciphertext moves through a memory BIO of our own: the inner
 * transport's on_data feeds OpenSSL, SSL_read's output goes to the app's
 * on_data; the app's tx_reserve/tx_commit fill plaintext that SSL_write
 * turns into records written straight into the inner transport's send queue.
 * So the same code runs over both transports, and on the dpdk one no record
 * costs a syscall. docs/tls.md describes it.
 *
 * Two parts:
 *   - struct tls_shared, one per process (main thread): the certificates
 *     (one OpenSSL context per [cert.NAME], SNI picks among them), the
 *     session-ticket keys all workers share, their rotation, OCSP staples,
 *     certificate reload. Workers see immutable snapshots through atomic
 *     pointers; a replaced snapshot is freed once every worker has moved on.
 *   - struct tls, one per worker: the transport, its connections, the
 *     handshake budget and caps. Everything on it runs on the worker thread.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct sluice_conf;
struct tls_shared;
struct tls;

/*
 * Loads every [cert.NAME] of conf (chain, key with no group/other access,
 * the key must match), makes the first ticket key and fetches OCSP staples
 * for certificates that name a responder. conf must outlive the result.
 * Only one may exist at a time (its counters are process-wide, like
 * /metrics). Returns NULL with a message in err.
 */
struct tls_shared *tls_shared_create(const struct sluice_conf *conf, char *err, size_t errlen);
/* Only after every worker's struct tls is destroyed. */
void tls_shared_destroy(struct tls_shared *s);
/*
 * Reads the certificate and key files again and, when all of them load,
 * makes them the ones new handshakes use; open connections are untouched.
 * A file that does not load changes nothing: the old certificates stay and
 * -1 comes back with the reason in err. Main thread (SIGHUP, and the
 * configuration reload of docs/operations.md once it exists).
 */
int tls_shared_reload(struct tls_shared *s, char *err, size_t errlen);
/* Main thread, every 100 ms or so: rotates the ticket key on schedule,
 * refreshes OCSP staples that are due (a blocking fetch, bounded by a
 * timeout) and frees snapshots no worker can still be using. */
void tls_shared_tick(struct tls_shared *s);

/* The upcalls the inner transport of a struct tls is created with; their
 * `app` is the struct tls. */
extern const struct tp_upcalls tls_inner_upcalls;

/*
 * Worker `worker`'s TLS layer, before its inner transport exists: `up` and
 * `app` are the app's upcalls. Connections reaching conf->redirect_port are
 * passed through as plain TCP (the app answers them with a redirect).
 * Returns NULL with a message in err.
 */
struct tls *tls_create(struct tls_shared *s, uint32_t worker, const struct tp_upcalls *up,
		       void *app, char *err, size_t errlen);
/* The transport the app uses; it owns `inner` from now on (its destroy
 * destroys both). */
struct tp *tls_start(struct tls *t, struct tp *inner);
/* A struct tls that never started (its inner transport failed). */
void tls_discard(struct tls *t);

#endif

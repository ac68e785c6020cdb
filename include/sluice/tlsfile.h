/*
 * The certificate files of a [cert.NAME] section, loaded the one way both
 * processes use: the dataplane into the contexts it serves with
 * (dataplane/tls), control into a scratch context before it accepts a
 * configuration reload, so a reload the dataplane would refuse for its
 * certificates is refused whole, before anything changes.
 */
#ifndef SLUICE_TLSFILE_H
#define SLUICE_TLSFILE_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "sluice/conf.h"

/* OpenSSL's last error as text (and the queue cleared), else `fallback`.
 * The buffer is the calling thread's, valid until its next call. */
const char *tlsfile_reason(const char *fallback);

/*
 * Loads cc's chain and key into ctx and checks the key matches the leaf;
 * the key file must be a regular file nobody but its owner can access.
 * Returns 0, or -1 with the reason in why (no section name).
 */
int tlsfile_load(SSL_CTX *ctx, const struct conf_cert *cc, char *why, size_t whylen);

/* Whether every [cert.NAME] of c would load now (tls = on only; 0 when
 * off), in a scratch context freed before it returns. -1 with
 * "[cert.NAME]: reason" in err. */
int tlsfile_check(const struct sluice_conf *c, char *err, size_t errlen);

#endif

/* Certificate files (tlsfile.h). */
#include "sluice/tlsfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509.h>

const char *tlsfile_reason(const char *fallback)
{
	static _Thread_local char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (!e)
		return fallback;
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* Whoever can read the key can impersonate the server: it must belong to
 * nobody but its owner. */
static int tlsfile_key_mode(const char *path, char *why, size_t whylen)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(why, whylen, "key %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "key %s: not a regular file", path);
		return -1;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(why, whylen, "key %s: accessible by group or others (mode %04o); chmod 600 it",
			 path, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

int tlsfile_load(SSL_CTX *ctx, const struct conf_cert *cc, char *why, size_t whylen)
{
	if (tlsfile_key_mode(cc->key, why, whylen) != 0)
		return -1;
	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, cc->chain) != 1) {
		snprintf(why, whylen, "chain %s: %s", cc->chain, tlsfile_reason("cannot load"));
		return -1;
	}
	/* A key of another certificate loads, and is named as such below. */
	if (SSL_CTX_use_PrivateKey_file(ctx, cc->key, SSL_FILETYPE_PEM) != 1 &&
	    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
		snprintf(why, whylen, "key %s: %s", cc->key, tlsfile_reason("cannot load"));
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(why, whylen, "key %s does not match the certificate in %s", cc->key, cc->chain);
		return -1;
	}
	return 0;
}

int tlsfile_check(const struct sluice_conf *c, char *err, size_t errlen)
{
	char why[1024];
	if (!c->tls)
		return 0;
	for (uint32_t i = 0; i < c->ncerts; i++) {
		SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
		if (!ctx) {
			snprintf(err, errlen, "[cert.%s]: %s", c->certs[i].name, tlsfile_reason("out of memory"));
			return -1;
		}
		int rc = tlsfile_load(ctx, &c->certs[i], why, sizeof(why));
		SSL_CTX_free(ctx);
		if (rc != 0) {
			snprintf(err, errlen, "[cert.%s]: %s", c->certs[i].name, why);
			return -1;
		}
	}
	return 0;
}

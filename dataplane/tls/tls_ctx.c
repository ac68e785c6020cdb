/*
 * OpenSSL contexts of the TLS layer: one SSL_CTX per [cert.NAME], all set up
 * alike (versions, modern suites only, ALPN http/1.1, stateless tickets with
 * the shared keys, OCSP stapling); the SNI pick among them; the ticket key
 * callback; OCSP fetches; the BIO method of tls.c.
 */
#include <ctype.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "sluice/conf.h"
#include "sluice/log.h"
#include "sluice/tlsfile.h"
#include "tls/tls_int.h"

/* TLS 1.2: forward secrecy and AEAD only (ECDHE with AES-GCM or ChaCha20). */
#define TLS12_CIPHERS                                                                          \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                           \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                           \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:P-256:P-384"
/* The OCSP response we fetch may be this large. */
#define OCSP_RESP_MAX (64u * 1024u)

static const unsigned char alpn_http11[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };

/* The last OpenSSL error as text (or `fallback`), for init messages. */

/* ---- per-handshake callbacks (worker threads) ---------------------------- */

struct tls_cert *tls_ctx_pick(struct tls_certset *set, const char *name)
{
	if (name && *name) {
		const char *dot = strchr(name, '.');

		for (uint32_t i = 0; i < set->n; i++)
			for (uint32_t j = 0; j < set->cert[i].nnames; j++)
				if (strcasecmp(set->cert[i].names[j], name) == 0)
					return &set->cert[i];
		/* "*.example.com" covers exactly one label in front of it. */
		for (uint32_t i = 0; dot && i < set->n; i++)
			for (uint32_t j = 0; j < set->cert[i].nnames; j++) {
				const char *n = set->cert[i].names[j];
				if (n[0] == '*' && n[1] == '.' && strcasecmp(n + 1, dot) == 0)
					return &set->cert[i];
			}
	}
	return &set->cert[0];
}

/* Called for every ClientHello, SNI or not: the certificate comes from the
 * worker's current snapshot, so a reload reaches the next handshake. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
	(void)alert;
	(void)arg;
	struct tls_view *v = tls_view_of(ssl);
	if (!v || !v->certs)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	struct tls_cert *c = tls_ctx_pick(v->certs, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
	if (SSL_get_SSL_CTX(ssl) != c->ctx && !SSL_set_SSL_CTX(ssl, c->ctx))
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

/* http/1.1 when offered; a client offering only others (h2) goes on
 * without ALPN rather than failing. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	unsigned char *sel = NULL;
	if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11), in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int ticket_mac_key(EVP_MAC_CTX *hctx, const struct tls_ticket_key *k)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"sha256", 0),
		OSSL_PARAM_construct_end(),
	};
	return EVP_MAC_CTX_set_params(hctx, params);
}

/*
 * Session tickets (RFC 5077 shape, also TLS 1.3's): every worker encrypts
 * with the newest shared key and accepts any kept one, so a ticket issued by
 * one worker resumes on another. 2 = decrypted with an older key: OpenSSL
 * then issues a fresh ticket.
 */
static int on_ticket(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		     EVP_MAC_CTX *hctx, int enc)
{
	struct tls_view *v = tls_view_of(ssl);
	if (!v || !v->keys || v->keys->n == 0)
		return enc ? -1 : 0;
	const struct tls_keyset *ks = v->keys;
	if (enc) {
		const struct tls_ticket_key *k = &ks->k[0];
		if (RAND_bytes(iv, 16) != 1)
			return -1;
		memcpy(name, k->name, 16);
		if (!EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) ||
		    !ticket_mac_key(hctx, k))
			return -1;
		return 1;
	}
	for (uint32_t i = 0; i < ks->n; i++) {
		const struct tls_ticket_key *k = &ks->k[i];
		if (memcmp(name, k->name, 16) != 0)
			continue;
		if (!ticket_mac_key(hctx, k) ||
		    !EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv))
			return -1;
		return i == 0 ? 1 : 2;
	}
	return 0;
}

/* The certificate's current staple, copied for OpenSSL (which frees it). */
static int on_status(SSL *ssl, void *arg)
{
	(void)arg;
	struct tls_cert *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct tls_staple *st = c ? atomic_load(&c->staple) : NULL;
	if (!st)
		return SSL_TLSEXT_ERR_NOACK;
	unsigned char *copy = OPENSSL_malloc(st->len);
	if (!copy)
		return SSL_TLSEXT_ERR_NOACK;
	memcpy(copy, st->der, st->len);
	if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)st->len)) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* ---- loading (main thread) ------------------------------------------------ */

static SSL_CTX *new_ctx(const struct sluice_conf *conf, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		snprintf(err, errlen, "SSL_CTX_new: %s", tlsfile_reason("out of memory"));
		return NULL;
	}
	int min = conf->tls_min_version == CONF_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
	/* Stateless tickets only: no server-side cache, so no lock shared by the
	 * workers' handshakes; renegotiation is refused. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_ANTI_REPLAY);
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	/* Idle connections keep no record buffers (many thousands per worker). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, (long)conf->tls_ticket_rotate_s * (TLS_TICKET_KEYS - 1));
	SSL_CTX_set_security_level(ctx, 2);
	if (!SSL_CTX_set_min_proto_version(ctx, min) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
	    !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) ||
	    !SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sluice", 6)) {
		snprintf(err, errlen, "TLS settings: %s", tlsfile_reason("refused"));
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket);
	if (conf->tls_ocsp_stapling)
		SSL_CTX_set_tlsext_status_cb(ctx, on_status);
	return ctx;
}

static int add_name(struct tls_cert *c, const char *n, size_t len)
{
	if (len == 0 || memchr(n, '\0', len))
		return 0; /* an embedded NUL is never a name we match */
	char **names = realloc(c->names, (c->nnames + 1) * sizeof(*names));
	if (!names)
		return -1;
	c->names = names;
	char *copy = malloc(len + 1);
	if (!copy)
		return -1;
	for (size_t i = 0; i < len; i++)
		copy[i] = (char)tolower((unsigned char)n[i]);
	copy[len] = '\0';
	c->names[c->nnames++] = copy;
	return 0;
}

/* DNS names of the subjectAltName; the subject's CN only when there is none
 * (as browsers do). */
static int collect_names(struct tls_cert *c, X509 *leaf)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	int rc = 0;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && rc == 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS)
			rc = add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
				      (size_t)ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(gens);
	if (rc == 0 && c->nnames == 0) {
		char cn[256];
		int n = X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn,
						  sizeof(cn));
		if (n > 0)
			rc = add_name(c, cn, (size_t)n);
	}
	return rc;
}

/* The responder the certificate names (first http:// one), and its issuer
 * from the chain file. */
static int find_ocsp(struct tls_cert *c, X509 *leaf)
{
	STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(leaf);
	for (int i = 0; urls && i < sk_OPENSSL_STRING_num(urls) && !c->ocsp_url; i++) {
		const char *u = sk_OPENSSL_STRING_value(urls, i);
		if (strncmp(u, "http://", 7) == 0 && !(c->ocsp_url = strdup(u))) {
			X509_email_free(urls);
			return -1;
		}
	}
	X509_email_free(urls);
	STACK_OF(X509) *chain = NULL;
	if (SSL_CTX_get0_chain_certs(c->ctx, &chain) && chain) {
		for (int i = 0; i < sk_X509_num(chain); i++) {
			X509 *x = sk_X509_value(chain, i);
			if (X509_check_issued(x, leaf) == X509_V_OK) {
				X509_up_ref(x);
				c->issuer = x;
				break;
			}
		}
	}
	return 0;
}

static void cert_release(struct tls_cert *c)
{
	SSL_CTX_free(c->ctx);
	for (uint32_t i = 0; i < c->nnames; i++)
		free(c->names[i]);
	free(c->names);
	free(atomic_load(&c->staple));
	free(c->ocsp_url);
	X509_free(c->leaf);
	X509_free(c->issuer);
}

void tls_ctx_free(void *p)
{
	struct tls_certset *set = p;
	if (!set)
		return;
	for (uint32_t i = 0; i < set->n; i++)
		cert_release(&set->cert[i]);
	free(set);
}

static int load_cert(const struct sluice_conf *conf, const struct conf_cert *cc,
		     struct tls_cert *c, char *err, size_t errlen)
{
	char why[1024];
	memcpy(c->label, cc->name, sizeof(c->label));
	c->ctx = new_ctx(conf, why, sizeof(why));
	if (!c->ctx || tlsfile_load(c->ctx, cc, why, sizeof(why)) != 0)
		goto fail;
	X509 *leaf = SSL_CTX_get0_certificate(c->ctx);
	if (!leaf || !X509_up_ref(leaf)) {
		snprintf(why, sizeof(why), "chain %s: no certificate", cc->chain);
		goto fail;
	}
	c->leaf = leaf;
	if (collect_names(c, leaf) != 0 || find_ocsp(c, leaf) != 0) {
		snprintf(why, sizeof(why), "out of memory");
		goto fail;
	}
	SSL_CTX_set_app_data(c->ctx, c);
	return 0;
fail:
	snprintf(err, errlen, "[cert.%s]: %s", cc->name, why);
	return -1;
}

struct tls_certset *tls_ctx_load(const struct sluice_conf *conf, char *err, size_t errlen)
{
	if (conf->ncerts == 0) {
		snprintf(err, errlen, "tls = on needs a [cert.NAME] section");
		return NULL;
	}
	struct tls_certset *set = calloc(1, sizeof(*set) + conf->ncerts * sizeof(set->cert[0]));
	if (!set) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	for (uint32_t i = 0; i < conf->ncerts; i++) {
		set->n = i + 1;
		if (load_cert(conf, &conf->certs[i], &set->cert[i], err, errlen) != 0) {
			tls_ctx_free(set);
			return NULL;
		}
	}
	return set;
}

struct tls_keyset *tls_ctx_keys_rotate(const struct tls_keyset *old)
{
	struct tls_keyset *ks = calloc(1, sizeof(*ks));
	if (!ks)
		return NULL;
	if (RAND_bytes((unsigned char *)&ks->k[0], sizeof(ks->k[0])) != 1) {
		free(ks);
		return NULL;
	}
	ks->n = 1;
	for (uint32_t i = 0; old && i < old->n && ks->n < TLS_TICKET_KEYS; i++)
		ks->k[ks->n++] = old->k[i];
	return ks;
}

/* ---- OCSP (main thread) --------------------------------------------------- */

/* Checks a response for c: signed by the issuer (or a responder it
 * delegated to), about c's certificate, current. Returns seconds until its
 * nextUpdate (a day when it has none), or -1 with err. */
static long ocsp_check(const struct tls_cert *c, OCSP_RESPONSE *resp, OCSP_CERTID *id, char *err,
		       size_t errlen)
{
	long valid = -1;
	OCSP_BASICRESP *bs = NULL;
	X509_STORE *store = NULL;
	STACK_OF(X509) *signers = NULL;
	int status, reason;
	ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;

	if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		snprintf(err, errlen, "responder answered status %d", OCSP_response_status(resp));
		goto out;
	}
	bs = OCSP_response_get1_basic(resp);
	store = X509_STORE_new();
	signers = sk_X509_new_null();
	/* The issuer may be an intermediate: it is the trust anchor here. */
	if (store)
		X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
	if (!bs || !store || !signers || !X509_STORE_add_cert(store, c->issuer) ||
	    !sk_X509_push(signers, c->issuer)) {
		snprintf(err, errlen, "bad response or out of memory");
		goto out;
	}
	if (OCSP_basic_verify(bs, signers, store, OCSP_TRUSTOTHER) <= 0) {
		snprintf(err, errlen, "response signature: %s", tlsfile_reason("does not verify"));
		goto out;
	}
	if (!OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisupd, &nextupd)) {
		snprintf(err, errlen, "response does not cover the certificate");
		goto out;
	}
	if (!OCSP_check_validity(thisupd, nextupd, 300, -1)) {
		snprintf(err, errlen, "response is not current");
		goto out;
	}
	if (status != V_OCSP_CERTSTATUS_GOOD)
		LOG_WARN("[cert.%s]: the responder says %s; stapled as it is", c->label,
			 OCSP_cert_status_str(status));
	valid = 86400;
	if (nextupd) {
		int days = 0, secs = 0;
		if (ASN1_TIME_diff(&days, &secs, NULL, nextupd) && days >= 0 && secs >= 0)
			valid = (long)days * 86400 + secs;
	}
out:
	sk_X509_free(signers);
	X509_STORE_free(store);
	OCSP_BASICRESP_free(bs);
	return valid;
}

struct tls_staple *tls_ctx_ocsp_fetch(const struct tls_cert *c, int timeout_s, uint64_t *valid_s,
				      char *err, size_t errlen)
{
	struct tls_staple *st = NULL;
	OCSP_CERTID *id = NULL;
	OCSP_REQUEST *req = NULL;
	OCSP_RESPONSE *resp = NULL;
	BIO *reqbio = NULL, *rsp = NULL;
	unsigned char *der = NULL;
	char *host = NULL, *port = NULL, *path = NULL;

	if (!c->ocsp_url || !c->issuer) {
		snprintf(err, errlen, c->ocsp_url ? "issuer not in the chain file" : "no responder");
		return NULL;
	}
	ERR_clear_error();
	id = OCSP_cert_to_id(NULL, c->leaf, c->issuer);
	req = OCSP_REQUEST_new();
	if (!id || !req || !OCSP_request_add0_id(req, id)) {
		snprintf(err, errlen, "OCSP request: out of memory");
		OCSP_CERTID_free(id);
		goto out;
	}
	id = OCSP_CERTID_dup(OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, 0)));
	reqbio = ASN1_item_i2d_mem_bio(ASN1_ITEM_rptr(OCSP_REQUEST), (const ASN1_VALUE *)req);
	if (!id || !reqbio) {
		snprintf(err, errlen, "OCSP request: out of memory");
		goto out;
	}
	if (!OSSL_HTTP_parse_url(c->ocsp_url, NULL, NULL, &host, &port, NULL, &path, NULL, NULL)) {
		snprintf(err, errlen, "%s: %s", c->ocsp_url, tlsfile_reason("not a URL"));
		goto out;
	}
	rsp = OSSL_HTTP_transfer(NULL, host, port, path, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0,
				 NULL, "application/ocsp-request", reqbio, "application/ocsp-response",
				 1, OCSP_RESP_MAX, timeout_s, 0);
	if (!rsp) {
		snprintf(err, errlen, "%s: %s", c->ocsp_url, tlsfile_reason("no answer"));
		goto out;
	}
	resp = d2i_OCSP_RESPONSE_bio(rsp, NULL);
	if (!resp) {
		snprintf(err, errlen, "%s: not an OCSP response", c->ocsp_url);
		goto out;
	}
	long valid = ocsp_check(c, resp, id, err, errlen);
	if (valid < 0)
		goto out;
	int len = i2d_OCSP_RESPONSE(resp, &der);
	if (len <= 0 || !(st = malloc(sizeof(*st) + (size_t)len))) {
		snprintf(err, errlen, "OCSP response: out of memory");
		goto out;
	}
	st->len = (size_t)len;
	memcpy(st->der, der, (size_t)len);
	*valid_s = (uint64_t)valid;
out:
	OPENSSL_free(host);
	OPENSSL_free(port);
	OPENSSL_free(path);
	OPENSSL_free(der);
	OCSP_RESPONSE_free(resp);
	BIO_free(rsp);
	BIO_free(reqbio);
	OCSP_REQUEST_free(req);
	OCSP_CERTID_free(id);
	return st;
}

/* ---- the BIO of tls.c ------------------------------------------------------ */

/* OpenSSL flushes after each flight; everything else is not asked of a
 * memory-style BIO. */
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static int bio_destroy(BIO *b)
{
	BIO_set_data(b, NULL);
	return 1;
}

BIO_METHOD *tls_ctx_bio_method(int (*bwrite)(BIO *, const char *, int),
			       int (*bread)(BIO *, char *, int))
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice-tp");
	if (!m)
		return NULL;
	if (!BIO_meth_set_write(m, bwrite) || !BIO_meth_set_read(m, bread) ||
	    !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create) ||
	    !BIO_meth_set_destroy(m, bio_destroy)) {
		BIO_meth_free(m);
		return NULL;
	}
	return m;
}

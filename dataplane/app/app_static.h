/*
 * The web UI's static files, compiled into the dataplane (docs/ui.md): the
 * table ui/gen_assets.py generates from the bundled front end, and the
 * choices a worker makes when it serves one (which encoding, whether the
 * client's copy is current). Pure functions over constant data: no state,
 * any thread.
 */
#ifndef SLUICE_APP_STATIC_H
#define SLUICE_APP_STATIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum app_enc { APP_ENC_IDENTITY = 0, APP_ENC_GZIP, APP_ENC_BR, APP_ENC_N };

/* One encoding of an asset; data NULL when it was not made (it would not
 * have been smaller, or brotli was not available at build time). */
struct app_asset_body {
	const uint8_t *data;
	uint32_t len;
	const char *etag; /* strong, quoted: "<hash>" "<hash>-gz" "<hash>-br" */
};

struct app_asset {
	const char *path;  /* "/", "/admin", "/assets/NAME-HASH.EXT" */
	const char *mime;
	bool immutable;    /* a content-hashed name: cacheable for a year */
	struct app_asset_body enc[APP_ENC_N];
};

/* The generated table (ui_assets.c), sorted by path (strcmp order). */
extern const struct app_asset app_assets[];
extern const uint32_t app_nassets;

/* The asset served at path, or NULL. */
const struct app_asset *app_static_find(const char *path, size_t len);
/* The encoding to send for an Accept-Encoding value (NULL: header absent):
 * brotli, then gzip, when offered with q > 0 and made for this asset; else
 * identity. */
enum app_enc app_static_pick(const struct app_asset *a, const char *accept, size_t len);
/* True when an If-None-Match value names a current ETag of the asset (any
 * of its encodings, weak comparison as RFC 9110 13.1.2 asks) or is "*". */
bool app_static_fresh(const struct app_asset *a, const char *inm, size_t len);

#endif

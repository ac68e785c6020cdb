/*
 * The web UI's asset table and the choices made when serving it: lookup,
 * encoding by Accept-Encoding (q-values, "*", exclusions), and freshness by
 * If-None-Match (lists, weak tags, "*").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "app/app_static.h"

static const struct app_asset *find(const char *p)
{
	return app_static_find(p, strlen(p));
}

/* The table the build made: sorted, the two pages and hashed assets, every
 * variant smaller than the original and tagged apart. */
static void test_table(void **state)
{
	(void)state;
	assert_true(app_nassets >= 4);
	for (uint32_t i = 1; i < app_nassets; i++)
		assert_true(strcmp(app_assets[i - 1].path, app_assets[i].path) < 0);
	const struct app_asset *root = find("/"), *admin = find("/admin");
	assert_non_null(root);
	assert_non_null(admin);
	assert_false(root->immutable);
	assert_string_equal(root->mime, "text/html; charset=utf-8");
	uint32_t js = 0;
	for (uint32_t i = 0; i < app_nassets; i++) {
		const struct app_asset *a = &app_assets[i];
		assert_non_null(a->enc[APP_ENC_IDENTITY].data);
		assert_ptr_equal(find(a->path), a);
		if (strncmp(a->path, "/assets/", 8) == 0) {
			assert_true(a->immutable);
			js += strstr(a->path, ".js") != NULL;
		}
		for (int e = APP_ENC_GZIP; e < APP_ENC_N; e++) {
			if (!a->enc[e].data)
				continue;
			assert_true(a->enc[e].len < a->enc[APP_ENC_IDENTITY].len);
			assert_string_not_equal(a->enc[e].etag, a->enc[APP_ENC_IDENTITY].etag);
		}
	}
	assert_true(js >= 2);
	assert_null(find("/nope"));
	assert_null(find(""));
	assert_null(find("/admin/"));
	assert_null(app_static_find("/adminx", 6 + 1));
	assert_non_null(app_static_find("/adminx", 6));
}

static enum app_enc pick(const struct app_asset *a, const char *ae)
{
	return app_static_pick(a, ae, ae ? strlen(ae) : 0);
}

static void test_pick(void **state)
{
	(void)state;
	const struct app_asset *a = NULL;
	for (uint32_t i = 0; i < app_nassets && !a; i++)
		if (app_assets[i].enc[APP_ENC_GZIP].data && app_assets[i].enc[APP_ENC_BR].data)
			a = &app_assets[i];
	assert_non_null(a); /* the bundles compress */
	assert_int_equal(pick(a, NULL), APP_ENC_IDENTITY);
	assert_int_equal(pick(a, ""), APP_ENC_IDENTITY);
	assert_int_equal(pick(a, "gzip"), APP_ENC_GZIP);
	assert_int_equal(pick(a, "gzip, deflate, br, zstd"), APP_ENC_BR);
	assert_int_equal(pick(a, "GZIP;q=1.0, BR;q=0.5"), APP_ENC_GZIP);
	assert_int_equal(pick(a, "br;q=0, gzip"), APP_ENC_GZIP);
	assert_int_equal(pick(a, "br;q=0,gzip;q=0"), APP_ENC_IDENTITY);
	assert_int_equal(pick(a, "*"), APP_ENC_BR);
	assert_int_equal(pick(a, "*;q=0.5, br;q=0"), APP_ENC_GZIP);
	assert_int_equal(pick(a, "x-gzip"), APP_ENC_GZIP);
	assert_int_equal(pick(a, "deflate, identity"), APP_ENC_IDENTITY);
	assert_int_equal(pick(a, "br;q=bogus"), APP_ENC_IDENTITY);
	assert_int_equal(pick(a, "brotli, gzipx"), APP_ENC_IDENTITY);
	/* An asset without variants is always sent as it is. */
	struct app_asset plain = *a;
	plain.enc[APP_ENC_GZIP].data = NULL;
	plain.enc[APP_ENC_BR].data = NULL;
	assert_int_equal(pick(&plain, "br, gzip"), APP_ENC_IDENTITY);
	plain.enc[APP_ENC_GZIP] = a->enc[APP_ENC_GZIP];
	assert_int_equal(pick(&plain, "br;q=1, gzip;q=0.1"), APP_ENC_GZIP);
}

static bool fresh(const struct app_asset *a, const char *inm)
{
	return app_static_fresh(a, inm, strlen(inm));
}

static void test_fresh(void **state)
{
	(void)state;
	const struct app_asset *a = find("/");
	const char *id = a->enc[APP_ENC_IDENTITY].etag;
	char buf[256];
	assert_true(fresh(a, id));
	assert_true(fresh(a, "*"));
	snprintf(buf, sizeof(buf), "W/%s", id);
	assert_true(fresh(a, buf));
	snprintf(buf, sizeof(buf), "\"other\", %s", id);
	assert_true(fresh(a, buf));
	if (a->enc[APP_ENC_GZIP].etag)
		assert_true(fresh(a, a->enc[APP_ENC_GZIP].etag));
	assert_false(fresh(a, "\"other\""));
	assert_false(fresh(a, ""));
	assert_false(fresh(a, "\"unterminated"));
	snprintf(buf, sizeof(buf), "%.*s", (int)strlen(id) - 1, id);
	assert_false(fresh(a, buf));
	assert_false(app_static_fresh(a, NULL, 0));
	/* Another asset's tag is not this one's. */
	const struct app_asset *b = find("/admin");
	assert_false(fresh(b, id));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_fresh),
		cmocka_unit_test(test_pick),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

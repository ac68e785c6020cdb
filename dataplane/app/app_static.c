/* Choosing what to serve of a static asset (app_static.h). */
#include "app/app_static.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

const struct app_asset *app_static_find(const char *path, size_t len)
{
	uint32_t lo = 0, hi = app_nassets;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const char *p = app_assets[mid].path;
		size_t pl = strlen(p);
		int c = memcmp(p, path, pl < len ? pl : len);
		if (c == 0)
			c = pl < len ? -1 : pl > len ? 1 : 0;
		if (c == 0)
			return &app_assets[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static bool app_static_ws(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* The q-value of one list element's parameters ("; q=0.5"); 1 without one,
 * 0 for a malformed one (RFC 9110 12.4.2: a weight is 0..1, three decimals). */
static double app_static_q(const char *p, const char *end)
{
	while (p < end) {
		while (p < end && (app_static_ws(*p) || *p == ';'))
			p++;
		if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
			char num[8];
			size_t n = 0;
			p += 2;
			while (p < end && !app_static_ws(*p) && *p != ';' && n < sizeof(num) - 1)
				num[n++] = *p++;
			num[n] = 0;
			char *e;
			double q = strtod(num, &e);
			return (*e || q < 0 || q > 1) ? 0 : q;
		}
		while (p < end && *p != ';')
			p++;
	}
	return 1;
}

enum app_enc app_static_pick(const struct app_asset *a, const char *accept, size_t len)
{
	double q[APP_ENC_N] = { 0 };
	bool listed[APP_ENC_N] = { false };
	double star = 0;
	const char *p = accept, *end = accept ? accept + len : NULL;
	while (p && p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *ie = comma ? comma : end;
		while (p < ie && app_static_ws(*p))
			p++;
		const char *te = p;
		while (te < ie && *te != ';' && !app_static_ws(*te))
			te++;
		size_t tl = (size_t)(te - p);
		double v = app_static_q(te, ie);
		int e = -1;
		if (tl == 2 && strncasecmp(p, "br", 2) == 0)
			e = APP_ENC_BR;
		else if ((tl == 4 && strncasecmp(p, "gzip", 4) == 0) || (tl == 6 && strncasecmp(p, "x-gzip", 6) == 0))
			e = APP_ENC_GZIP;
		else if (tl == 1 && *p == '*')
			star = v;
		if (e >= 0) {
			q[e] = v;
			listed[e] = true;
		}
		p = comma ? comma + 1 : end;
	}
	/* "*" stands for every coding the list does not name. */
	for (int e = APP_ENC_GZIP; e < APP_ENC_N; e++)
		if (!listed[e])
			q[e] = star;
	if (q[APP_ENC_BR] > 0 && a->enc[APP_ENC_BR].data && q[APP_ENC_BR] >= q[APP_ENC_GZIP])
		return APP_ENC_BR;
	if (q[APP_ENC_GZIP] > 0 && a->enc[APP_ENC_GZIP].data)
		return APP_ENC_GZIP;
	if (q[APP_ENC_BR] > 0 && a->enc[APP_ENC_BR].data)
		return APP_ENC_BR;
	return APP_ENC_IDENTITY;
}

bool app_static_fresh(const struct app_asset *a, const char *inm, size_t len)
{
	const char *p = inm, *end = inm ? inm + len : NULL;
	while (p && p < end) {
		while (p < end && (app_static_ws(*p) || *p == ','))
			p++;
		if (p == end)
			break;
		if (*p == '*')
			return true;
		if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
			p += 2;
		const char *q = p < end && *p == '"' ? memchr(p + 1, '"', (size_t)(end - p - 1)) : NULL;
		if (!q)
			return false;
		size_t tl = (size_t)(q + 1 - p);
		for (int e = 0; e < APP_ENC_N; e++) {
			const char *tag = a->enc[e].etag;
			if (tag && strlen(tag) == tl && memcmp(tag, p, tl) == 0)
				return true;
		}
		p = q + 1;
	}
	return false;
}

/* Key lookups in flat JSON objects (see sb_json.h). */
#include "sb_json.h"

#include <string.h>

/* The first byte after `"key":` (and blanks), or NULL. */
static const char *member(const char *s, size_t n, const char *key)
{
	size_t kl = strlen(key);
	const char *p = s, *end = s + n;

	while (p < end) {
		const char *q = memchr(p, '"', (size_t)(end - p));

		if (!q || (size_t)(end - q) < kl + 3)
			return NULL;
		if (memcmp(q + 1, key, kl) == 0 && q[kl + 1] == '"') {
			const char *v = q + kl + 2;

			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			if (v < end && *v == ':') {
				v++;
				while (v < end && (*v == ' ' || *v == '\t'))
					v++;
				return v;
			}
		}
		p = q + 1;
	}
	return NULL;
}

static const char *parse_u64(const char *p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	const char *start = p;

	while (p < end && *p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	if (p == start)
		return NULL;
	*out = v;
	return p;
}

bool sb_json_u64(const char *s, size_t n, const char *key, uint64_t *out)
{
	const char *v = member(s, n, key);

	return v && parse_u64(v, s + n, out) != NULL;
}

bool sb_json_str(const char *s, size_t n, const char *key, const char **v, size_t *vlen)
{
	const char *p = member(s, n, key), *end = s + n, *q;

	if (!p || p >= end || *p != '"')
		return false;
	q = ++p;
	while (q < end && *q != '"')
		q += *q == '\\' ? 2 : 1;
	if (q >= end)
		return false;
	*v = p;
	*vlen = (size_t)(q - p);
	return true;
}

int sb_json_u64_array(const char *s, size_t n, const char *key, uint64_t *out, int max)
{
	const char *p = member(s, n, key), *end = s + n;
	int k = 0;

	if (!p || p >= end || *p != '[')
		return -1;
	p++;
	while (p < end && *p != ']') {
		uint64_t v;

		while (p < end && (*p == ' ' || *p == ','))
			p++;
		if (p < end && *p == ']')
			break;
		p = parse_u64(p, end, &v);
		if (!p)
			return -1;
		if (k < max)
			out[k] = v;
		k++;
	}
	return k < max ? k : max;
}

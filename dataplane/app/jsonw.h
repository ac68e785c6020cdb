/*
 * JSON string escaping for the app layer's hot path: tokens are escaped once,
 * straight into the caller's buffer (a batch buffer or a frame scratch), with
 * no allocation. Escapes '"', '\\' and every control character below 0x20
 * (the short forms \b \f \n \r \t where JSON has them, \u00XX otherwise);
 * every other byte, UTF-8 included, passes through unchanged.
 */
#ifndef SLUICE_APP_JSONW_H
#define SLUICE_APP_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/common.h"

#define JSONW_NOSPACE ((size_t)-1)

/* Bytes byte `ch` takes once escaped. */
static inline size_t jsonw_char_len(uint8_t ch)
{
	if (likely(ch >= 0x20 && ch != '"' && ch != '\\'))
		return 1;
	switch (ch) {
	case '"': case '\\': case '\b': case '\f': case '\n': case '\r': case '\t':
		return 2;
	default:
		return 6;
	}
}

/* Length of src once escaped (for sizing a buffer up front). */
static inline size_t jsonw_escaped_len(const void *src, size_t len)
{
	const uint8_t *s = src;
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += jsonw_char_len(s[i]);
	return n;
}

/*
 * Whether none of the 8 bytes in w needs escaping: none below 0x20, no '"',
 * no '\\'. Word-wide tests for "a byte below n" ((w - n*ones) & ~w) and "a
 * zero byte" (the same with n = 1, on w xor the character), each exact for
 * whether any byte matches (the high bits it leaves may be wrong only past
 * the first match, which is not asked).
 */
static inline bool jsonw_plain8(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ull;
	uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
	uint64_t t = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs);

	return (t & (ones << 7)) == 0;
}

/*
 * Writes the escaped form of src[0..len) into dst[0..cap). Returns the bytes
 * written, or JSONW_NOSPACE when it does not fit; nothing is ever cut short,
 * so on JSONW_NOSPACE the caller must discard what dst holds past its start.
 * Runs of plain bytes (ids, most text) are checked and copied 8 at a time.
 */
static inline size_t jsonw_escape(char *dst, size_t cap, const void *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *s = src;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t ch;
		size_t need;

		while (len - i >= 8 && cap - o >= 8) {
			uint64_t w;

			memcpy(&w, s + i, 8);
			if (!jsonw_plain8(w))
				break;
			memcpy(dst + o, &w, 8);
			i += 8;
			o += 8;
		}
		if (i == len)
			break;
		ch = s[i];
		need = jsonw_char_len(ch);

		if (unlikely(cap - o < need))
			return JSONW_NOSPACE;
		if (likely(need == 1)) {
			dst[o++] = (char)ch;
			continue;
		}
		dst[o++] = '\\';
		switch (ch) {
		case '"': dst[o++] = '"'; break;
		case '\\': dst[o++] = '\\'; break;
		case '\b': dst[o++] = 'b'; break;
		case '\f': dst[o++] = 'f'; break;
		case '\n': dst[o++] = 'n'; break;
		case '\r': dst[o++] = 'r'; break;
		case '\t': dst[o++] = 't'; break;
		default:
			memcpy(dst + o, "u00", 3);
			dst[o + 3] = hex[ch >> 4];
			dst[o + 4] = hex[ch & 0xf];
			o += 5;
			break;
		}
	}
	return o;
}

#endif

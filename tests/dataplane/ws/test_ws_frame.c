/* Unit tests for RFC 6455 framing, UTF-8 validation, SHA-1 and the handshake key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/common.h"
#include "util/guardbuf.h"
#include "ws/sha1.h"
#include "ws/ws_frame.h"
#include "ws_test.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha1(const char *msg, size_t len, const char *want)
{
	uint8_t d[SHA1_DIGEST_LEN];
	char h[41];
	sha1_digest(msg, len, d);
	hex(d, sizeof(d), h);
	assert_string_equal(h, want);

	/* The same digest for every two-piece split of the input. */
	for (size_t cut = 0; cut <= len && len <= 200; cut++) {
		struct sha1_ctx c;
		sha1_init(&c);
		sha1_update(&c, msg, cut);
		sha1_update(&c, msg + cut, len - cut);
		sha1_final(&c, d);
		hex(d, sizeof(d), h);
		assert_string_equal(h, want);
	}
}

/* FIPS 180-4 / NIST example vectors. */
static void test_sha1_vectors(void **state)
{
	(void)state;
	check_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
	check_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
	const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	check_sha1(m2, strlen(m2), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
	const char *m3 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
			 "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
	check_sha1(m3, strlen(m3), "a49b2446a02c645bf419f995b67091253a04a259");

	size_t n = 1000000;
	char *a = malloc(n);
	assert_non_null(a);
	memset(a, 'a', n);
	check_sha1(a, n, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
	free(a);
}

static void test_accept_key(void **state)
{
	(void)state;
	char out[29];
	const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
	ws_accept_key(key, strlen(key), out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", 24, out);
	assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

/* Parses buf at every prefix length, each placed at a guard page: shorter
 * prefixes than `need` must be INCOMPLETE, the rest must give the same result. */
static int parse_all_prefixes(const uint8_t *buf, size_t len, size_t need, uint64_t max,
			      struct ws_frame *f, uint16_t *code)
{
	int last = WS_PARSE_INCOMPLETE;
	for (size_t k = 0; k <= len; k++) {
		struct guardbuf g;
		uint8_t *p = guardbuf_place(&g, buf, k);
		struct ws_frame tmp;
		uint16_t c = 0;
		int r = ws_parse_frame(p, k, max, &tmp, &c);
		guardbuf_free(&g);
		if (k < need) {
			assert_int_equal(r, WS_PARSE_INCOMPLETE);
			continue;
		}
		if (k > need)
			assert_int_equal(r, last);
		last = r;
		if (r == WS_PARSE_ERROR)
			*code = c;
		else
			*f = tmp;
	}
	return last;
}

static void check_length_form(uint64_t plen, size_t want_hlen)
{
	static const uint8_t mask[4] = { 0x11, 0x22, 0x33, 0x44 };
	uint8_t hdr[14];
	/* Built by hand: the payload is never materialized. */
	size_t o = 0;
	hdr[o++] = 0x80 | WS_OP_BINARY;
	if (plen < 126) {
		hdr[o++] = (uint8_t)(0x80 | plen);
	} else if (plen < 65536) {
		hdr[o++] = 0x80 | 126;
		hdr[o++] = (uint8_t)(plen >> 8);
		hdr[o++] = (uint8_t)plen;
	} else {
		hdr[o++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			hdr[o++] = (uint8_t)(plen >> (8 * i));
	}
	memcpy(hdr + o, mask, 4);
	size_t hl = o + 4;
	assert_int_equal(hl, want_hlen);

	struct ws_frame f;
	uint16_t code = 0;
	memset(&f, 0, sizeof(f));
	int r = parse_all_prefixes(hdr, hl, hl, UINT64_MAX >> 1, &f, &code);
	assert_int_equal(r, (int)hl);
	assert_true(f.fin);
	assert_true(f.masked);
	assert_int_equal(f.opcode, WS_OP_BINARY);
	assert_int_equal(f.payload_len, plen);
	assert_int_equal(f.header_len, hl);
	assert_memory_equal(f.mask, mask, 4);
}

static void test_parse_lengths(void **state)
{
	(void)state;
	check_length_form(0, 6);
	check_length_form(1, 6);
	check_length_form(125, 6);
	check_length_form(126, 8);
	check_length_form(65535, 8);
	check_length_form(65536, 14);
	check_length_form(0x100000005ull, 14);
	check_length_form(0x7fffffffffffffffull, 14);
}

/* Header fields beyond the header itself (payload bytes) are not read. */
static void test_parse_with_payload_and_flags(void **state)
{
	(void)state;
	uint8_t buf[64];
	size_t n = wst_frame(buf, false, WS_OP_TEXT, "hello", 5);
	struct ws_frame f;
	uint16_t code = 0;
	int r = parse_all_prefixes(buf, n, 6, 100, &f, &code);
	assert_int_equal(r, 6);
	assert_false(f.fin);
	assert_int_equal(f.opcode, WS_OP_TEXT);
	assert_int_equal(f.payload_len, 5);

	static const uint8_t ops[] = { WS_OP_CONT, WS_OP_TEXT, WS_OP_BINARY,
				       WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG };
	for (size_t i = 0; i < sizeof(ops); i++) {
		n = wst_frame(buf, true, ops[i], "ab", 2);
		r = parse_all_prefixes(buf, n, 6, 100, &f, &code);
		assert_int_equal(r, 6);
		assert_int_equal(f.opcode, ops[i]);
	}

	/* A payload of exactly max_payload is accepted. */
	buf[0] = 0x82;
	buf[1] = 0x80 | 126;
	buf[2] = 0x03;
	buf[3] = 0xe8;
	memset(buf + 4, 0x5a, 4);
	r = parse_all_prefixes(buf, 8, 8, 1000, &f, &code);
	assert_int_equal(r, 8);
	assert_int_equal(f.payload_len, 1000);
}

struct bad_header {
	const char *name;
	uint8_t bytes[14];
	size_t len;
	uint64_t max;
	uint16_t code;
};

static void test_parse_errors(void **state)
{
	(void)state;
	static const struct bad_header cases[] = {
		{ "rsv1", { 0xc1, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "rsv2", { 0xa1, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "rsv3", { 0x91, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "opcode 3", { 0x83, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "opcode 7", { 0x87, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "opcode B", { 0x8b, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "opcode F", { 0x8f, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "unmasked", { 0x81, 0x05 }, 2, 100, 1002 },
		{ "unmasked 16", { 0x82, 0x7e, 0x01, 0x00 }, 4, 1000, 1002 },
		{ "fragmented ping", { 0x09, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "fragmented close", { 0x08, 0x80, 1, 2, 3, 4 }, 6, 100, 1002 },
		{ "ping 126", { 0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4 }, 8, 1000, 1002 },
		{ "pong 7-bit 126", { 0x8a, 0xfe, 0x00, 0x80, 1, 2, 3, 4 }, 8, 1000, 1002 },
		{ "non-minimal 16", { 0x82, 0xfe, 0x00, 0x7d, 1, 2, 3, 4 }, 8, 1000, 1002 },
		{ "non-minimal 64", { 0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4 },
		  14, UINT64_MAX, 1002 },
		{ "64 top bit", { 0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4 },
		  14, UINT64_MAX, 1002 },
		{ "too big 7", { 0x82, 0x8b, 1, 2, 3, 4 }, 6, 10, 1009 },
		{ "too big 16", { 0x82, 0xfe, 0x03, 0xe9, 1, 2, 3, 4 }, 8, 1000, 1009 },
		{ "too big 64", { 0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4 },
		  14, 65536, 1009 },
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
		const struct bad_header *c = &cases[i];
		struct ws_frame f;
		uint16_t code = 0;
		int r = parse_all_prefixes(c->bytes, c->len, c->len, c->max, &f, &code);
		if (r != WS_PARSE_ERROR || code != c->code)
			fail_msg("%s: r=%d code=%u", c->name, r, code);
	}
}

static void test_unmask_offsets(void **state)
{
	(void)state;
	static const uint8_t mask[4] = { 0xa5, 0x01, 0x7e, 0xc3 };
	uint8_t plain[67], ref[67], work[67];
	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i * 37 + 11);
	for (size_t i = 0; i < sizeof(plain); i++)
		ref[i] = plain[i] ^ mask[i % 4];

	for (size_t len = 0; len <= sizeof(plain); len++) {
		memcpy(work, plain, len);
		ws_unmask(work, len, mask, 0);
		assert_memory_equal(work, ref, len);
	}
	/* Two and three pieces at every cut: each piece unmasked with its offset. */
	for (size_t a = 0; a <= sizeof(plain); a++) {
		for (size_t b = a; b <= sizeof(plain); b++) {
			memcpy(work, plain, sizeof(plain));
			ws_unmask(work, a, mask, 0);
			ws_unmask(work + a, b - a, mask, a);
			ws_unmask(work + b, sizeof(plain) - b, mask, b);
			assert_memory_equal(work, ref, sizeof(plain));
		}
	}
	/* Offsets beyond 32 bits keep the phase. */
	memcpy(work, plain, 9);
	ws_unmask(work, 9, mask, 0x100000002ull);
	for (size_t i = 0; i < 9; i++)
		assert_int_equal(work[i], plain[i] ^ mask[(i + 2) % 4]);
}

static void test_build_header(void **state)
{
	(void)state;
	uint8_t h[10];
	assert_int_equal(ws_build_header(h, true, WS_OP_TEXT, 0), 2);
	assert_int_equal(h[0], 0x81);
	assert_int_equal(h[1], 0);
	assert_int_equal(ws_build_header(h, false, WS_OP_BINARY, 125), 2);
	assert_int_equal(h[0], 0x02);
	assert_int_equal(h[1], 125);
	assert_int_equal(ws_build_header(h, true, WS_OP_PONG, 126), 4);
	static const uint8_t w126[] = { 0x8a, 126, 0x00, 0x7e };
	assert_memory_equal(h, w126, 4);
	assert_int_equal(ws_build_header(h, true, WS_OP_TEXT, 65535), 4);
	static const uint8_t w65535[] = { 0x81, 126, 0xff, 0xff };
	assert_memory_equal(h, w65535, 4);
	assert_int_equal(ws_build_header(h, true, WS_OP_TEXT, 65536), 10);
	static const uint8_t w65536[] = { 0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0 };
	assert_memory_equal(h, w65536, 10);
	assert_int_equal(ws_build_header(h, true, WS_OP_CLOSE, 0x0102030405ull), 10);
	static const uint8_t wbig[] = { 0x88, 127, 0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05 };
	assert_memory_equal(h, wbig, 10);
}

/* Reference validator written from RFC 3629's table, byte range by byte
 * range, to cross-check the DFA on every short sequence. */
static bool ref_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t b = s[i];
		size_t need;
		uint8_t lo = 0x80, hi = 0xbf;
		if (b < 0x80) {
			i++;
			continue;
		} else if (b >= 0xc2 && b <= 0xdf) {
			need = 1;
		} else if (b >= 0xe0 && b <= 0xef) {
			need = 2;
			if (b == 0xe0)
				lo = 0xa0;
			if (b == 0xed)
				hi = 0x9f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			need = 3;
			if (b == 0xf0)
				lo = 0x90;
			if (b == 0xf4)
				hi = 0x8f;
		} else {
			return false;
		}
		if (i + need >= n)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		i += need + 1;
	}
	return true;
}

static void test_utf8_exhaustive_short(void **state)
{
	(void)state;
	uint8_t s[3];
	for (unsigned a = 0; a < 256; a++) {
		s[0] = (uint8_t)a;
		assert_int_equal(ws_utf8_step(WS_UTF8_ACCEPT, s, 1) == WS_UTF8_ACCEPT,
				 ref_utf8_valid(s, 1));
		for (unsigned b = 0; b < 256; b++) {
			s[1] = (uint8_t)b;
			assert_int_equal(ws_utf8_step(WS_UTF8_ACCEPT, s, 2) == WS_UTF8_ACCEPT,
					 ref_utf8_valid(s, 2));
			for (unsigned c = 0; c < 256; c++) {
				s[2] = (uint8_t)c;
				bool dfa = ws_utf8_step(WS_UTF8_ACCEPT, s, 3) == WS_UTF8_ACCEPT;
				if (dfa != ref_utf8_valid(s, 3))
					fail_msg("%02x %02x %02x", a, b, c);
			}
		}
	}
}

/* Validates s fed in pieces at every split (two pieces) and byte by byte,
 * each piece ending at a guard page. */
static uint32_t utf8_split(const char *s, size_t n, size_t cut)
{
	struct guardbuf g;
	uint8_t *p = guardbuf_place(&g, s, cut);
	uint32_t st = ws_utf8_step(WS_UTF8_ACCEPT, p, cut);
	guardbuf_free(&g);
	p = guardbuf_place(&g, s + cut, n - cut);
	st = ws_utf8_step(st, p, n - cut);
	guardbuf_free(&g);
	return st;
}

static uint32_t utf8_bytewise(const char *s, size_t n)
{
	uint32_t st = WS_UTF8_ACCEPT;
	for (size_t i = 0; i < n; i++)
		st = ws_utf8_step(st, (const uint8_t *)s + i, 1);
	return st;
}

struct utf8_case {
	const char *s;
	int want; /* 1 valid, 0 invalid, -1 truncated (not REJECT yet, not ACCEPT) */
};

static void test_utf8_cases(void **state)
{
	(void)state;
	static const struct utf8_case cases[] = {
		{ "", 1 },
		{ "plain ascii text, long enough for the word-at-a-time path", 1 },
		{ "\xc2\x80", 1 },
		{ "\xdf\xbf", 1 },
		{ "\xe0\xa0\x80", 1 },
		{ "\xed\x9f\xbf", 1 },             /* U+D7FF */
		{ "\xee\x80\x80", 1 },             /* U+E000 */
		{ "\xef\xbf\xbf", 1 },             /* U+FFFF */
		{ "\xf0\x90\x80\x80", 1 },         /* U+10000 */
		{ "\xf4\x8f\xbf\xbf", 1 },         /* U+10FFFF */
		{ "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1 },
		{ "0123456789abcdef\xe2\x82\xac 0123456789abcdef\xf0\x9f\x98\x80xy", 1 },
		{ "\xc0\x80", 0 },                 /* overlong NUL */
		{ "\xc1\xbf", 0 },                 /* overlong 2 */
		{ "\xe0\x80\x80", 0 },             /* overlong 3 */
		{ "\xe0\x9f\xbf", 0 },
		{ "\xf0\x80\x80\x80", 0 },         /* overlong 4 */
		{ "\xf0\x8f\xbf\xbf", 0 },
		{ "\xed\xa0\x80", 0 },             /* U+D800 */
		{ "\xed\xbf\xbf", 0 },             /* U+DFFF */
		{ "\xed\xa0\x80\xed\xb0\x80", 0 }, /* surrogate pair */
		{ "\xf4\x90\x80\x80", 0 },         /* U+110000 */
		{ "\xf5\x80\x80\x80", 0 },
		{ "\xf8\x88\x80\x80\x80", 0 },
		{ "\xfe", 0 },
		{ "\xff", 0 },
		{ "\x80", 0 },
		{ "a\xbf", 0 },
		{ "\xc2\x41", 0 },                 /* truncated, then ASCII */
		{ "\xe1\x80\x41", 0 },
		{ "\xf1\x80\x80\x41", 0 },
		{ "0123456789abcdef\xc3\x28 0123456789", 0 },
		{ "\xc2", -1 },                     /* truncated at the end */
		{ "\xe0\xa0", -1 },
		{ "\xe1", -1 },
		{ "\xf0\x90\x80", -1 },
		{ "\xf4\x8f", -1 },
		{ "0123456789abcdef\xe2\x82", -1 },
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
		const char *s = cases[i].s;
		size_t n = strlen(s);
		for (size_t cut = 0; cut <= n; cut++) {
			uint32_t st = utf8_split(s, n, cut);
			bool ok = cases[i].want == 1 ? st == WS_UTF8_ACCEPT
				: cases[i].want == 0 ? st == WS_UTF8_REJECT
				: st != WS_UTF8_ACCEPT && st != WS_UTF8_REJECT;
			if (!ok)
				fail_msg("case %zu cut %zu: state %u", i, cut, st);
		}
		uint32_t st = utf8_bytewise(s, n);
		if (cases[i].want == 1)
			assert_int_equal(st, WS_UTF8_ACCEPT);
		else if (cases[i].want == 0)
			assert_int_equal(st, WS_UTF8_REJECT);
		else
			assert_true(st != WS_UTF8_ACCEPT && st != WS_UTF8_REJECT);
	}
}

static void test_close_payload(void **state)
{
	(void)state;
	static const uint8_t ok1000[] = { 0x03, 0xe8 };
	static const uint8_t ok1011_reason[] = { 0x03, 0xf3, 'o', 'o', 'p', 's', 0xc3, 0xa9 };
	static const uint8_t ok3000[] = { 0x0b, 0xb8 };
	static const uint8_t ok4999[] = { 0x13, 0x87 };
	assert_int_equal(ws_close_payload_code(NULL, 0), WS_CLOSE_NO_STATUS);
	assert_int_equal(ws_close_payload_code(ok1000, 2), 1000);
	assert_int_equal(ws_close_payload_code(ok1011_reason, sizeof(ok1011_reason)), 1011);
	assert_int_equal(ws_close_payload_code(ok3000, 2), 3000);
	assert_int_equal(ws_close_payload_code(ok4999, 2), 4999);
	assert_int_equal(ws_close_payload_code(ok1000, 1), 0);

	static const uint16_t valid[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
					  1012, 1013, 1014 };
	static const uint16_t invalid[] = { 0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535 };
	uint8_t p[2];
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(valid); i++) {
		p[0] = (uint8_t)(valid[i] >> 8);
		p[1] = (uint8_t)valid[i];
		assert_int_equal(ws_close_payload_code(p, 2), valid[i]);
	}
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(invalid); i++) {
		p[0] = (uint8_t)(invalid[i] >> 8);
		p[1] = (uint8_t)invalid[i];
		assert_int_equal(ws_close_payload_code(p, 2), 0);
	}
	static const uint8_t bad_reason[] = { 0x03, 0xe8, 'x', 0xc0, 0x80 };
	assert_int_equal(ws_close_payload_code(bad_reason, sizeof(bad_reason)), 0);
	static const uint8_t cut_reason[] = { 0x03, 0xe8, 0xe2, 0x82 };
	assert_int_equal(ws_close_payload_code(cut_reason, sizeof(cut_reason)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha1_vectors),
		cmocka_unit_test(test_accept_key),
		cmocka_unit_test(test_parse_lengths),
		cmocka_unit_test(test_parse_with_payload_and_flags),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_unmask_offsets),
		cmocka_unit_test(test_build_header),
		cmocka_unit_test(test_utf8_exhaustive_short),
		cmocka_unit_test(test_utf8_cases),
		cmocka_unit_test(test_close_payload),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

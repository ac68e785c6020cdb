/*
 * permessage-deflate (see ws_deflate.h): offer parsing (RFC 6455 9.1
 * extension grammar, RFC 7692 7.1 parameters) and the per-worker codec.
 */
#include "ws/ws_deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* ---- negotiation ---------------------------------------------------------- */

static bool pmd_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool pmd_ws(char c)
{
	return c == ' ' || c == '\t';
}

struct pmd_cursor {
	const char *p, *end;
};

static void pmd_skip_ws(struct pmd_cursor *c)
{
	while (c->p < c->end && pmd_ws(*c->p))
		c->p++;
}

/* A token into out (NUL-terminated, at most cap-1 bytes); false when none
 * or too long. */
static bool pmd_token(struct pmd_cursor *c, char *out, size_t cap)
{
	size_t n = 0;
	while (c->p < c->end && pmd_tchar(*c->p)) {
		if (n + 1 >= cap)
			return false;
		out[n++] = *c->p++;
	}
	out[n] = 0;
	return n > 0;
}

/* A parameter value: a token or a quoted string (RFC 7692 7.1 allows
 * either; its content must then be a token too). A quoted string is read
 * to its closing quote whatever it holds, so a bad one leaves the cursor
 * after it. */
static bool pmd_value(struct pmd_cursor *c, char *out, size_t cap)
{
	if (c->p >= c->end || *c->p != '"')
		return pmd_token(c, out, cap);
	size_t n = 0;
	bool ok = true;
	c->p++;
	while (c->p < c->end && *c->p != '"') {
		char ch = *c->p++;
		if (ch == '\\' && c->p < c->end)
			ch = *c->p++;
		if (!pmd_tchar(ch) || n + 1 >= cap)
			ok = false;
		else
			out[n++] = ch;
	}
	out[n] = 0;
	if (c->p >= c->end)
		return false;
	c->p++;
	return ok && n > 0;
}

/* A window size 8..15 (digits only), or -1. */
static int pmd_bits(const char *v)
{
	if (strlen(v) == 1 && v[0] >= '8' && v[0] <= '9')
		return v[0] - '0';
	if (strlen(v) == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
		return 10 + v[1] - '0';
	return -1;
}

/* The parameters of one permessage-deflate offer. */
struct pmd_offer {
	bool snct, cnct, smwb_set, cmwb_set;
	int smwb, cmwb; /* -1: no value */
};

/* Reads "; param[=value]" until ',' or the end. Returns false for a
 * malformed or unacceptable offer (the cursor is then past it). */
static bool pmd_params(struct pmd_cursor *c, struct pmd_offer *o)
{
	bool ok = true;
	memset(o, 0, sizeof(*o));
	o->smwb = o->cmwb = -1;
	for (;;) {
		pmd_skip_ws(c);
		if (c->p >= c->end || *c->p == ',')
			return ok;
		if (*c->p != ';') {
			ok = false;
			break;
		}
		c->p++;
		pmd_skip_ws(c);
		char name[40], val[16] = "";
		if (!pmd_token(c, name, sizeof(name))) {
			ok = false;
			break;
		}
		pmd_skip_ws(c);
		bool has_val = false;
		if (c->p < c->end && *c->p == '=') {
			c->p++;
			pmd_skip_ws(c);
			if (!pmd_value(c, val, sizeof(val))) {
				ok = false;
				break;
			}
			has_val = true;
		}
		if (strcmp(name, "server_no_context_takeover") == 0 && !has_val && !o->snct) {
			o->snct = true;
		} else if (strcmp(name, "client_no_context_takeover") == 0 && !has_val && !o->cnct) {
			o->cnct = true;
		} else if (strcmp(name, "server_max_window_bits") == 0 && has_val && !o->smwb_set &&
			   (o->smwb = pmd_bits(val)) > 0) {
			o->smwb_set = true;
		} else if (strcmp(name, "client_max_window_bits") == 0 && !o->cmwb_set &&
			   (!has_val || (o->cmwb = pmd_bits(val)) > 0)) {
			o->cmwb_set = true;
		} else {
			ok = false;
		}
	}
	/* Skip the rest of a bad offer. */
	while (c->p < c->end && *c->p != ',') {
		if (*c->p == '"') {
			c->p++;
			while (c->p < c->end && *c->p != '"')
				c->p++;
		}
		if (c->p < c->end)
			c->p++;
	}
	return false;
}

bool ws_pmd_negotiate(const char *value, size_t len, uint8_t max_bits, struct ws_pmd *pmd,
		      char resp[WS_PMD_RESPONSE_MAX])
{
	struct pmd_cursor c = { value, value + len };
	memset(pmd, 0, sizeof(*pmd));
	resp[0] = 0;
	if (max_bits < 9 || max_bits > 15)
		return false;
	while (c.p < c.end) {
		char name[40];
		struct pmd_offer o;
		pmd_skip_ws(&c);
		if (c.p < c.end && *c.p == ',') {
			c.p++;
			continue;
		}
		bool named = pmd_token(&c, name, sizeof(name));
		bool ok = pmd_params(&c, &o);
		if (c.p < c.end && *c.p == ',')
			c.p++;
		if (!named || !ok || strcmp(name, "permessage-deflate") != 0)
			continue;
		uint8_t bits = max_bits;
		if (o.smwb_set) {
			/* zlib deflates with 512 bytes at least: an offer of 256
			 * cannot be honoured. */
			if (o.smwb < 9)
				continue;
			if (o.smwb < bits)
				bits = (uint8_t)o.smwb;
		}
		pmd->on = true;
		pmd->server_bits = bits;
		pmd->announce_bits = o.smwb_set || bits < 15;
		ws_pmd_format(pmd, resp);
		return true;
	}
	return false;
}

void ws_pmd_format(const struct ws_pmd *pmd, char resp[WS_PMD_RESPONSE_MAX])
{
	int n = snprintf(resp, WS_PMD_RESPONSE_MAX,
			 "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
	if (pmd->announce_bits && n > 0)
		snprintf(resp + n, (size_t)(WS_PMD_RESPONSE_MAX - n), "; server_max_window_bits=%u",
			 pmd->server_bits);
}

/* ---- the codec ------------------------------------------------------------ */

#define WS_DEFLATE_TAIL 4 /* 00 00 FF FF */

struct ws_deflate {
	int level, mem_level;
	size_t min_len;
	z_stream def[16];  /* by window bits; used when inited[bits] */
	bool inited[16];
	z_stream inf;
	bool inf_inited;
	uint8_t *out;      /* compressed messages */
	size_t out_cap;
	uint8_t *plain;    /* inflated messages */
	size_t plain_cap;
	uint8_t *tailbuf;  /* a message with the tail appended */
	size_t tail_cap;
	struct ws_deflate_stats st;
};

struct ws_deflate *ws_deflate_create(int level, int mem_level, size_t min_len)
{
	struct ws_deflate *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->level = level;
	d->mem_level = mem_level;
	d->min_len = min_len;
	return d;
}

void ws_deflate_destroy(struct ws_deflate *d)
{
	if (!d)
		return;
	for (int b = 0; b < 16; b++)
		if (d->inited[b])
			deflateEnd(&d->def[b]);
	if (d->inf_inited)
		inflateEnd(&d->inf);
	free(d->out);
	free(d->plain);
	free(d->tailbuf);
	free(d);
}

/* Grows *buf to at least need bytes, counting the codec's memory. */
static bool ws_deflate_grow(struct ws_deflate *d, uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t n = *cap ? *cap : 4096;
	while (n < need)
		n *= 2;
	uint8_t *p = realloc(*buf, n);
	if (!p)
		return false;
	d->st.mem += n - *cap;
	*buf = p;
	*cap = n;
	return true;
}

/* What deflateInit2 allocates for a window and memLevel, by zlib's own
 * formula (zconf.h): (1 << (windowBits + 2)) + (1 << (memLevel + 9)), plus
 * its state struct (about 5.8 KB). */
static uint64_t ws_deflate_state_bytes(int bits, int mem_level)
{
	return (1ull << (bits + 2)) + (1ull << (mem_level + 9)) + 5800;
}

const uint8_t *ws_deflate_message(struct ws_deflate *d, uint8_t bits, const uint8_t *in, size_t len,
				  size_t *out_len)
{
	if (len < d->min_len || bits < 9 || bits > 15) {
		d->st.skipped++;
		return NULL;
	}
	z_stream *z = &d->def[bits];
	if (!d->inited[bits]) {
		memset(z, 0, sizeof(*z));
		if (deflateInit2(z, d->level, Z_DEFLATED, -(int)bits, d->mem_level, Z_DEFAULT_STRATEGY) != Z_OK) {
			d->st.skipped++;
			return NULL;
		}
		d->inited[bits] = true;
		d->st.mem += ws_deflate_state_bytes(bits, d->mem_level);
	}
	/* Smaller than the message, or not worth sending compressed. */
	size_t cap = len;
	if (!ws_deflate_grow(d, &d->out, &d->out_cap, cap + WS_DEFLATE_TAIL + 16)) {
		d->st.skipped++;
		return NULL;
	}
	z->next_in = (Bytef *)in;
	z->avail_in = (uInt)len;
	z->next_out = d->out;
	z->avail_out = (uInt)(cap + WS_DEFLATE_TAIL);
	int rc = deflate(z, Z_SYNC_FLUSH);
	size_t n = (size_t)(z->next_out - d->out);
	bool whole = rc == Z_OK && z->avail_in == 0 && z->avail_out > 0;
	/* server_no_context_takeover: the next message starts afresh. */
	deflateReset(z);
	if (!whole || n < WS_DEFLATE_TAIL || n - WS_DEFLATE_TAIL >= len ||
	    memcmp(d->out + n - WS_DEFLATE_TAIL, "\x00\x00\xff\xff", WS_DEFLATE_TAIL) != 0) {
		d->st.skipped++;
		return NULL;
	}
	*out_len = n - WS_DEFLATE_TAIL;
	d->st.messages_out++;
	d->st.bytes_in += len;
	d->st.bytes_out += *out_len;
	return d->out;
}

int ws_inflate_message(struct ws_deflate *d, const uint8_t *in, size_t len, uint64_t max,
		       const uint8_t **out, size_t *out_len)
{
	if (!d->inf_inited) {
		memset(&d->inf, 0, sizeof(d->inf));
		/* Window 15: what any client may use. */
		if (inflateInit2(&d->inf, -15) != Z_OK)
			return WS_INFLATE_NOMEM;
		d->inf_inited = true;
		d->st.mem += (1u << 15) + 7200;
	}
	if (!ws_deflate_grow(d, &d->tailbuf, &d->tail_cap, len + WS_DEFLATE_TAIL))
		return WS_INFLATE_NOMEM;
	memcpy(d->tailbuf, in, len);
	memcpy(d->tailbuf + len, "\x00\x00\xff\xff", WS_DEFLATE_TAIL);
	z_stream *z = &d->inf;
	z->next_in = d->tailbuf;
	z->avail_in = (uInt)(len + WS_DEFLATE_TAIL);
	size_t got = 0;
	bool clean;
	for (;;) {
		/* One byte past max shows a message that is too big without
		 * inflating any more of it. */
		size_t want = got + 16384;
		if (want > max + 1)
			want = (size_t)max + 1;
		if (!ws_deflate_grow(d, &d->plain, &d->plain_cap, want)) {
			inflateReset(z);
			return WS_INFLATE_NOMEM;
		}
		z->next_out = d->plain + got;
		z->avail_out = (uInt)(want - got);
		int rc = inflate(z, Z_SYNC_FLUSH);
		got = (size_t)(z->next_out - d->plain);
		if (got > max) {
			inflateReset(z);
			d->st.bombs++;
			return WS_INFLATE_TOO_BIG;
		}
		/* A final block (BFINAL) may end the message before the tail. */
		if (rc == Z_STREAM_END) {
			clean = z->avail_in <= WS_DEFLATE_TAIL;
			break;
		}
		if (rc != Z_OK && rc != Z_BUF_ERROR) {
			clean = false;
			break;
		}
		if (z->avail_out > 0) {
			clean = z->avail_in == 0;
			break;
		}
	}
	/* client_no_context_takeover: no window is kept for the next one. */
	inflateReset(z);
	if (!clean)
		return WS_INFLATE_BAD;
	d->st.messages_in++;
	*out = d->plain;
	*out_len = got;
	return WS_INFLATE_OK;
}

void ws_deflate_get_stats(const struct ws_deflate *d, struct ws_deflate_stats *out)
{
	*out = d->st;
}

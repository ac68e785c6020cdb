/*
 * Line logger, plain or JSON lines. Each line is formatted in a stack buffer and leaves with one
 * write(2) to stderr, so lines from different threads never interleave (a
 * line is at most PIPE_BUF bytes, which a pipe also writes atomically). The
 * only shared state is the minimum level and the format (atomics) and the
 * process name, which log_init() sets before any thread starts.
 */
#include "sluice/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096
#define LOG_TRUNC_MARK " [truncated]\n"

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
static const char *const level_lower[] = { "debug", "info", "warn", "error" };

/* Borrowed, not copied: callers pass a string literal or argv[0]. */
static const char *log_name = "sluice";
static atomic_int log_min = LOG_LVL_INFO;
static atomic_int log_fmt = LOG_FMT_PLAIN;

bool log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; i <= LOG_LVL_ERROR; i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_LVL_WARN;
		return true;
	}
	return false;
}

const char *log_level_name(enum log_level lvl)
{
	if ((int)lvl < LOG_LVL_DEBUG || (int)lvl > LOG_LVL_ERROR)
		return "?";
	return level_lower[lvl];
}

void log_init(const char *process_name, enum log_level min_level)
{
	if ((int)min_level < LOG_LVL_DEBUG || (int)min_level > LOG_LVL_ERROR)
		min_level = LOG_LVL_INFO;
	if (process_name && *process_name)
		log_name = process_name;
	atomic_store(&log_min, (int)min_level);
	const char *env = getenv("SLUICE_LOG");
	if (!env || !*env)
		return;
	enum log_level lvl;
	if (log_level_parse(env, &lvl))
		atomic_store(&log_min, (int)lvl);
	else
		log_msg(LOG_LVL_WARN, "SLUICE_LOG=%s not understood (debug|info|warn|error); keeping %s",
			env, level_names[min_level]);
}

void log_set_level(enum log_level lvl)
{
	if ((int)lvl >= LOG_LVL_DEBUG && (int)lvl <= LOG_LVL_ERROR)
		atomic_store(&log_min, (int)lvl);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&log_min);
}

void log_set_format(enum log_format fmt)
{
	atomic_store(&log_fmt, fmt == LOG_FMT_JSON ? LOG_FMT_JSON : LOG_FMT_PLAIN);
}

enum log_format log_get_format(void)
{
	return (enum log_format)atomic_load(&log_fmt);
}

/* Rewrites control bytes in buf[from..*len) as \xHH in place, so a message
 * that carries client text cannot forge a log line. Returns false when the
 * escaped text no longer fits in cap bytes (the tail is dropped). */
static bool escape_controls(char *buf, size_t from, size_t *len, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = *len, extra = 0;
	for (size_t i = from; i < n; i++) {
		unsigned char ch = (unsigned char)buf[i];
		if (ch < 0x20 || ch == 0x7f)
			extra += 3;
	}
	if (extra == 0)
		return true;
	bool fits = true;
	while (n + extra > cap) {
		/* Drop bytes from the end until the expansion fits. */
		unsigned char ch = (unsigned char)buf[--n];
		if (ch < 0x20 || ch == 0x7f)
			extra -= 3;
		fits = false;
	}
	size_t w = n + extra;
	*len = w;
	for (size_t i = n; i-- > from;) {
		unsigned char ch = (unsigned char)buf[i];
		if (ch < 0x20 || ch == 0x7f) {
			buf[--w] = hex[ch & 0xf];
			buf[--w] = hex[ch >> 4];
			buf[--w] = 'x';
			buf[--w] = '\\';
		} else {
			buf[--w] = (char)ch;
		}
	}
	return fits;
}

/* Formats the time of a line: "2026-11-21T10:11:07.123Z". */
static void log_time(char out[64])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void log_write(const char *line, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t w = write(STDERR_FILENO, line + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)w;
	}
}

/* A line being built: appends that do not fit below `cap` set `cut` and
 * are dropped, so the closing bytes (written with lw_close) always fit in
 * the room kept above cap. */
struct lw {
	char *b;
	size_t len, cap, room;
	bool cut;
};

static void lw_raw(struct lw *w, const char *s, size_t n)
{
	if (w->cut || w->len + n > w->cap) {
		w->cut = true;
		return;
	}
	memcpy(w->b + w->len, s, n);
	w->len += n;
}

static void lw_str(struct lw *w, const char *s)
{
	lw_raw(w, s, strlen(s));
}

static void lw_close(struct lw *w, const char *s)
{
	size_t n = strlen(s);
	if (w->len + n <= w->room) {
		memcpy(w->b + w->len, s, n);
		w->len += n;
	}
}

/* Length of the UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s)
{
	size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* A JSON string: quotes, backslashes and control bytes escaped, bytes that
 * are not UTF-8 replaced by U+FFFD, so every line is valid JSON. */
static void lw_json(struct lw *w, const char *str)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	lw_raw(w, "\"", 1);
	while (*s && !w->cut) {
		char esc[8];
		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*s;
			lw_raw(w, esc, 2);
			s++;
		} else if (*s < 0x20 || *s == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[*s >> 4];
			esc[5] = hex[*s & 0xf];
			lw_raw(w, esc, 6);
			s++;
		} else if (*s < 0x80) {
			lw_raw(w, (const char *)s, 1);
			s++;
		} else {
			size_t n = utf8_seq(s);
			if (n)
				lw_raw(w, (const char *)s, n);
			else
				lw_raw(w, "\\ufffd", 6);
			s += n ? n : 1;
		}
	}
	if (!w->cut)
		lw_raw(w, "\"", 1);
}

/* One JSON line; `fields` are NULL-terminated name/value pairs from ap, or
 * none when ap is NULL. The string is closed and "truncated":true added
 * when the line would not fit. */
static void log_json_line(enum log_level lvl, const char *cat, const char *msg, bool whole,
			  va_list *ap)
{
	char line[LOG_LINE_MAX];
	char ts[64], pid[24];
	struct lw w = { .b = line, .cap = sizeof(line) - 40, .room = sizeof(line) };

	log_time(ts);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	lw_str(&w, "{\"ts\":\"");
	lw_str(&w, ts);
	lw_str(&w, "\",\"level\":\"");
	lw_str(&w, level_names[lvl]);
	lw_str(&w, "\",\"proc\":");
	lw_json(&w, log_name);
	lw_str(&w, ",\"pid\":");
	lw_str(&w, pid);
	if (cat) {
		lw_str(&w, ",\"cat\":");
		lw_json(&w, cat);
	}
	lw_str(&w, ",\"msg\":");
	lw_json(&w, msg);
	/* A message cut short is closed as a string; a field either fits
	 * whole or is left out, so the line is always one valid object. */
	bool cut = w.cut;
	if (cut)
		lw_close(&w, "\"");
	if (ap && !cut) {
		lw_str(&w, ",\"fields\":{");
		bool fields_open = !w.cut;
		const char *sep = "";
		for (const char *k; (k = va_arg(*ap, const char *)) != NULL;) {
			const char *v = va_arg(*ap, const char *);
			char pair[LOG_LINE_MAX];
			struct lw pw = { .b = pair, .cap = sizeof(pair), .room = sizeof(pair) };
			lw_str(&pw, sep);
			lw_json(&pw, k);
			lw_raw(&pw, ":", 1);
			lw_json(&pw, v ? v : "-");
			if (!pw.cut)
				lw_raw(&w, pair, pw.len);
			if (pw.cut || w.cut) {
				cut = true;
				w.cut = false;
				continue;
			}
			sep = ",";
		}
		if (fields_open)
			lw_close(&w, "}");
	}
	lw_close(&w, cut || !whole ? ",\"truncated\":true}\n" : "}\n");
	log_write(line, w.len);
}

/* A field value as plain text: bare when it is a simple word, else quoted
 * with " and \ escaped (control bytes are escaped for the whole line). */
static void lw_plain_value(struct lw *w, const char *v)
{
	bool bare = *v != '\0';
	for (const char *p = v; *p && bare; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\')
			bare = false;
	if (bare) {
		lw_str(w, v);
		return;
	}
	lw_raw(w, "\"", 1);
	for (const char *p = v; *p; p++) {
		if (*p == '"' || *p == '\\')
			lw_raw(w, "\\", 1);
		lw_raw(w, p, 1);
	}
	lw_raw(w, "\"", 1);
}

void log_audit(const char *event, ...)
{
	int saved_errno = errno;
	va_list ap;
	va_start(ap, event);
	if (atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_FMT_JSON) {
		log_json_line(LOG_LVL_INFO, "audit", event, true, &ap);
		va_end(ap);
		errno = saved_errno;
		return;
	}
	char line[LOG_LINE_MAX];
	char ts[64];
	const size_t body_cap = sizeof(line) - sizeof(LOG_TRUNC_MARK);
	log_time(ts);
	int n = snprintf(line, body_cap, "%s %s[%ld] INFO audit ", ts, log_name, (long)getpid());
	if (n < 0 || (size_t)n >= body_cap) {
		va_end(ap);
		errno = saved_errno;
		return;
	}
	struct lw w = { .b = line, .len = (size_t)n, .cap = body_cap - 1, .room = sizeof(line) };
	lw_str(&w, event);
	for (const char *k; (k = va_arg(ap, const char *)) != NULL;) {
		const char *v = va_arg(ap, const char *);
		lw_raw(&w, " ", 1);
		lw_str(&w, k);
		lw_raw(&w, "=", 1);
		lw_plain_value(&w, v ? v : "-");
	}
	va_end(ap);
	bool whole = !w.cut;
	if (!escape_controls(line, (size_t)n, &w.len, body_cap - 1))
		whole = false;
	w.cut = false;
	lw_close(&w, whole ? "\n" : LOG_TRUNC_MARK);
	log_write(line, w.len);
	errno = saved_errno;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if ((int)lvl < atomic_load_explicit(&log_min, memory_order_relaxed))
		return;
	if ((int)lvl < LOG_LVL_DEBUG || (int)lvl > LOG_LVL_ERROR)
		lvl = LOG_LVL_ERROR;
	int saved_errno = errno; /* callers often log right before reading errno */

	if (atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_FMT_JSON) {
		char msg[LOG_LINE_MAX];
		va_list ap;
		va_start(ap, fmt);
		errno = saved_errno; /* so %m works */
		int m = vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		if (m >= 0)
			log_json_line(lvl, NULL, msg, (size_t)m < sizeof(msg), NULL);
		errno = saved_errno;
		return;
	}

	char line[LOG_LINE_MAX];
	char ts[64];
	const size_t body_cap = sizeof(line) - sizeof(LOG_TRUNC_MARK);
	log_time(ts);
	int n = snprintf(line, body_cap, "%s %s[%ld] %s ", ts, log_name, (long)getpid(), level_names[lvl]);
	if (n < 0)
		goto out;
	size_t prefix = (size_t)n < body_cap ? (size_t)n : body_cap - 1;

	va_list ap;
	va_start(ap, fmt);
	errno = saved_errno; /* so %m works */
	int m = vsnprintf(line + prefix, body_cap - prefix, fmt, ap);
	va_end(ap);
	if (m < 0)
		goto out;
	bool whole = prefix + (size_t)m < body_cap;
	size_t len = whole ? prefix + (size_t)m : body_cap - 1;
	if (!escape_controls(line, prefix, &len, body_cap - 1))
		whole = false;

	/* A cut line says so instead of passing for the whole message. */
	if (whole) {
		line[len++] = '\n';
	} else {
		memcpy(line + len, LOG_TRUNC_MARK, sizeof(LOG_TRUNC_MARK) - 1);
		len += sizeof(LOG_TRUNC_MARK) - 1;
	}
	log_write(line, len);
out:
	errno = saved_errno;
}

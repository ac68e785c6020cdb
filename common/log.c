/*
 * Line logger. Each line is formatted in a stack buffer and leaves with one
 * write(2) to stderr, so lines from different threads never interleave (a
 * line is at most PIPE_BUF bytes, which a pipe also writes atomically). The
 * only shared state is the minimum level (an atomic) and the process name,
 * which log_init() sets before any thread starts.
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

/* Borrowed, not copied: callers pass a string literal or argv[0]. */
static const char *log_name = "sluice";
static atomic_int log_min = LOG_LVL_INFO;

static bool parse_level(const char *s, enum log_level *out)
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
	if (parse_level(env, &lvl))
		atomic_store(&log_min, (int)lvl);
	else
		log_msg(LOG_LVL_WARN, "SLUICE_LOG=%s not understood (debug|info|warn|error); keeping %s",
			env, level_names[min_level]);
}

void log_set_level(enum log_level lvl)
{
	atomic_store(&log_min, (int)lvl);
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

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if ((int)lvl < atomic_load_explicit(&log_min, memory_order_relaxed))
		return;
	if ((int)lvl < LOG_LVL_DEBUG || (int)lvl > LOG_LVL_ERROR)
		lvl = LOG_LVL_ERROR;
	int saved_errno = errno; /* callers often log right before reading errno */

	char line[LOG_LINE_MAX];
	const size_t body_cap = sizeof(line) - sizeof(LOG_TRUNC_MARK);
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, body_cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, log_name, (long)getpid(), level_names[lvl]);
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
	for (size_t off = 0; off < len;) {
		ssize_t w = write(STDERR_FILENO, line + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)w;
	}
out:
	errno = saved_errno;
}

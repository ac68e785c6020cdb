/*
 * Logging for both processes: one line per event on stderr, plain
 * "<ISO time> <process>[<pid>] <LEVEL> <message>" or one JSON object per
 * line (docs/configuration.md "Logging"). Audit lines record security
 * decisions with named fields (docs/operations.md "Audit log"). Never log
 * tokens, passwords, session tokens or API keys (issue 3 relies on this).
 * Logging is off the per-packet and per-token paths by rule.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO = 1, LOG_LVL_WARN = 2, LOG_LVL_ERROR = 3 };
enum log_format { LOG_FMT_PLAIN = 0, LOG_FMT_JSON = 1 };

/* Call once before threads start; process_name must outlive the process (a
 * literal or argv[0]): it is kept, not copied. SLUICE_LOG in the
 * environment overrides min_level. */
void log_init(const char *process_name, enum log_level min_level);
/* Level and format may change at any time from any thread (atomics). */
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_set_format(enum log_format fmt);
enum log_format log_get_format(void);
/* "debug", "info", "warn", "error". */
const char *log_level_name(enum log_level lvl);
/* Case-insensitive, "warning" too; false for anything else. */
bool log_level_parse(const char *s, enum log_level *out);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * One audit line: `event`, then NULL-terminated pairs of field name and
 * value (both strings; a NULL value is written as "-"). Written at INFO
 * whatever the level, marked `audit` (plain: "INFO audit EVENT k=v ...",
 * JSON: "cat":"audit", "msg":EVENT, "fields":{...}). Values are escaped,
 * never interpreted; callers never pass secrets.
 */
void log_audit(const char *event, ...) __attribute__((sentinel));

#define LOG_DEBUG(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif

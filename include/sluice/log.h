/*
 * Logging for both processes: one line per event on stderr,
 * "<ISO time> <process>[<pid>] <LEVEL> <message>". Never log tokens,
 * passwords, session tokens or API keys (issue 3 relies on this).
 * Logging is off the per-packet and per-token paths by rule.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO = 1, LOG_LVL_WARN = 2, LOG_LVL_ERROR = 3 };

/* Call once before threads start; process_name must outlive the process (a
 * literal or argv[0]): it is kept, not copied. */
void log_init(const char *process_name, enum log_level min_level);
void log_set_level(enum log_level lvl);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_DEBUG(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif

/*
 * sluicectl's output (ctl_show.c): each ctl_show_* prints one command's
 * answer as a human table; the helpers read members of an answer.
 */
#ifndef CONTROL_CTL_SHOW_H
#define CONTROL_CTL_SHOW_H

#include <stddef.h>

#include <jansson.h>

long long ctl_int(json_t *o, const char *key);
/* A string member made safe for a terminal (ctl_vis), "-" when absent. */
const char *ctl_str(json_t *o, const char *key);
const char *ctl_vis(const char *s);
void ctl_show_error(const char *const *words, int nwords, const char *code, const char *msg);
void ctl_print_json(json_t *o);
void ctl_time(long long t, char *buf, size_t cap);
void ctl_duration(long long ms, char *buf, size_t cap);
void ctl_print_counters(json_t *o, json_t *prev, double dt_s);
void ctl_show_drain(json_t *a);
void ctl_show_status(json_t *a);
void ctl_show_stats(json_t *a, json_t *prev, double dt_s);
void ctl_show_stats_once(json_t *a);
void ctl_show_workers(json_t *a);
void ctl_show_conns(json_t *a);
void ctl_show_sessions(json_t *a);
void ctl_show_session(json_t *a);
void ctl_show_users(json_t *a);
void ctl_show_keys(json_t *a);
void ctl_show_key_created(json_t *a);
void ctl_show_key_revoked(json_t *a);
void ctl_show_store_stats(json_t *a);
void ctl_show_done(json_t *a);
void ctl_show_backends(json_t *a);
void ctl_show_usage(json_t *a);
void ctl_show_log_levels(json_t *a);
void ctl_show_config(json_t *a);
void ctl_show_reload(json_t *a);
void ctl_show_limits(json_t *a);
void ctl_show_limit_overrides(json_t *a);

#endif

/*
 * Who may use the password pool, and how many login sessions a user keeps
 * (docs/api.md "POST /api/auth/login"):
 *
 * - fair admission: a user name may have login_inflight_user password
 *   checks running at once, a client address login_inflight_ip; a login
 *   over its share is answered 429 at once, so one caller looping valid
 *   logins holds one slot of the pool, never all of them;
 * - every login that reaches the pool, right or wrong, counts against its
 *   user name and address (login_rate_user / login_rate_ip per
 *   login_rate_window_s): correct-password floods are throttled too;
 * - a user keeps at most login_max_sessions live login sessions: a login
 *   beyond that ends the oldest.
 *
 * Keys are kept as keyed short hashes (the throttling tables' key), never
 * as names or addresses. Runs on the control loop.
 */
#ifndef CONTROL_AUTH_LOGIN_H
#define CONTROL_AUTH_LOGIN_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"

/* A login admitted to the pool; give it back with auth_login_release. */
struct auth_login_ticket {
	uint32_t slot;
};

/*
 * Admits a login of user from addr to the password pool. Returns 0 with
 * *t filled, or the seconds to answer in Retry-After (429): the key is
 * over its rate, or already has its share of checks running.
 */
int64_t auth_login_admit(struct auth *a, const char *user, size_t ul, const char *addr, size_t al,
			 int64_t now, struct auth_login_ticket *t);
/* The password check of t ended (or never started). */
void auth_login_release(struct auth *a, const struct auth_login_ticket *t);

/*
 * Before a new session of user is created: ends the oldest live sessions
 * so the user keeps at most login_max_sessions with the new one (expired
 * ones are removed on the way). Returns the number ended.
 */
uint32_t auth_login_trim_sessions(struct auth *a, const char *user, int64_t now);

#endif

/*
 * The control plane's event bus: layers publish what happened (a
 * conversation was created, an answer ended, a user logged in, an alert was
 * raised) and whoever cares subscribes with a callback, so a publisher never
 * names its listeners (chat does not know the admin WebSocket exists).
 *
 * Delivery is synchronous, in subscription order, on the control loop: a
 * publish returns after every matching callback ran. Callbacks must not
 * block; they may publish (nested events are delivered depth-first) and may
 * unsubscribe themselves. Event data (strings) is borrowed for the call only.
 *
 * Single-threaded: everything runs on the control loop.
 */
#ifndef CONTROL_EV_H
#define CONTROL_EV_H

#include <stdbool.h>
#include <stdint.h>

#define EV_MAX_SUBS 16u

/* Topics, a bit each: a subscriber names the ones it wants. */
#define EV_T_SESSION 0x1u /* conversations, answers, logins, kicks */
#define EV_T_ALERT 0x2u   /* thresholds crossed and cleared */

enum ev_kind {
	EV_CREATED = 0,    /* a conversation was created (committed) */
	EV_DELETED,        /* a conversation was deleted (committed) */
	EV_ANSWER_STARTED, /* an answer was accepted and queued */
	EV_ANSWER_ENDED,   /* an answer ended: status complete|cancelled|error|interrupted */
	EV_LOGIN,
	EV_LOGOUT,
	EV_KICKED,         /* streams of a session were closed (operator kill, overload) */
	EV_ALERT,          /* an alert was raised or cleared (struct ev.alert) */
	EV_KIND_COUNT,
};

/* An alert as it changes state: raised when its measure crosses the limit,
 * cleared when it is back below. */
struct ev_alert {
	const char *name;    /* ring_full, store_full, slow_consumers, backend_down, memory, connections */
	const char *subject; /* which worker, backend...; "" when global */
	const char *level;   /* warning | critical */
	bool raised;
	double value, limit;
	const char *message; /* human text */
};

struct ev {
	enum ev_kind kind;
	const char *user;       /* who it concerns; NULL when unknown */
	const char *session_id; /* NULL when none */
	const char *message_id; /* answers */
	const char *status;     /* answer_ended: how it ended */
	const char *reason;     /* kicked: why */
	const char *role;       /* login: user | admin */
	struct ev_alert alert;  /* EV_ALERT only */
};

typedef void (*ev_fn)(void *arg, const struct ev *e);

struct ev_bus {
	struct {
		ev_fn fn;
		void *arg;
		uint32_t topics;
	} subs[EV_MAX_SUBS];
	uint32_t nsubs;
	uint64_t published[EV_KIND_COUNT];
};

void ev_init(struct ev_bus *b);
/* fn gets every event of the given topics from now on. -1 when the table is full. */
int ev_subscribe(struct ev_bus *b, uint32_t topics, ev_fn fn, void *arg);
/* Stops the deliveries to (fn, arg); a no-op when not subscribed. */
void ev_unsubscribe(struct ev_bus *b, ev_fn fn, void *arg);
/* Delivers e to every subscriber of its topic. b may be NULL (a layer
 * built without a bus, as in unit tests): then nothing happens. */
void ev_publish(struct ev_bus *b, const struct ev *e);
/* The topic of an event kind, and its name as the admin socket spells it. */
uint32_t ev_topic(enum ev_kind k);
const char *ev_kind_name(enum ev_kind k);

#endif

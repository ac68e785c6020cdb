/* The event bus (ev.h). */
#include "events/ev.h"

#include <string.h>

void ev_init(struct ev_bus *b)
{
	memset(b, 0, sizeof(*b));
}

int ev_subscribe(struct ev_bus *b, uint32_t topics, ev_fn fn, void *arg)
{
	if (b->nsubs == EV_MAX_SUBS)
		return -1;
	b->subs[b->nsubs].fn = fn;
	b->subs[b->nsubs].arg = arg;
	b->subs[b->nsubs].topics = topics;
	b->nsubs++;
	return 0;
}

void ev_unsubscribe(struct ev_bus *b, ev_fn fn, void *arg)
{
	for (uint32_t i = 0; i < b->nsubs; i++) {
		if (b->subs[i].fn == fn && b->subs[i].arg == arg) {
			memmove(&b->subs[i], &b->subs[i + 1], (b->nsubs - i - 1) * sizeof(b->subs[0]));
			b->nsubs--;
			return;
		}
	}
}

uint32_t ev_topic(enum ev_kind k)
{
	return k == EV_ALERT ? EV_T_ALERT : EV_T_SESSION;
}

const char *ev_kind_name(enum ev_kind k)
{
	static const char *const names[EV_KIND_COUNT] = {
		[EV_CREATED] = "created",
		[EV_DELETED] = "deleted",
		[EV_ANSWER_STARTED] = "answer_started",
		[EV_ANSWER_ENDED] = "answer_ended",
		[EV_LOGIN] = "login",
		[EV_LOGOUT] = "logout",
		[EV_KICKED] = "kicked",
		[EV_ALERT] = "alert",
	};
	return (unsigned)k < EV_KIND_COUNT ? names[k] : "unknown";
}

/*
 * A subscriber may unsubscribe itself (or another) from its callback: the
 * walk re-checks the slot it is at, so the table shifting under it skips
 * nobody who stays subscribed and calls nobody twice.
 */
void ev_publish(struct ev_bus *b, const struct ev *e)
{
	if (!b || (unsigned)e->kind >= EV_KIND_COUNT)
		return;
	b->published[e->kind]++;
	uint32_t topic = ev_topic(e->kind);
	for (uint32_t i = 0; i < b->nsubs; i++) {
		ev_fn fn = b->subs[i].fn;
		void *arg = b->subs[i].arg;
		if (!(b->subs[i].topics & topic))
			continue;
		fn(arg, e);
		if (i < b->nsubs && (b->subs[i].fn != fn || b->subs[i].arg != arg))
			i--;
	}
}

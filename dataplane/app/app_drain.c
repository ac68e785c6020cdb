/*
 * Drain (docs/operations.md, "Drain and shutdown"): the dataplane stops
 * taking connections (the transport stops listening where it can, and
 * on_open refuses what still arrives) and ends each open one in its own
 * protocol once it has nothing running. An SSE stream gets a last `shutdown` event with a
 * `retry:` hint and no id, so an EventSource reconnects and its
 * Last-Event-ID still names the last token it got; a WebSocket gets close
 * 1001; a keep-alive HTTP connection is closed between requests and a
 * request in flight gets its answer with `Connection: close`. A stream
 * whose answer is running is ended right after that answer's done;
 * app_drain(a, true) (the timeout) ends every conn at once.
 */
#include <stdio.h>

#include "app/app_int.h"

/* The reconnect delay (ms) an SSE client is told: about the time a
 * restarted dataplane needs to listen again. */
#define APP_DRAIN_RETRY "1000"

static void app_drain_sse(struct conn *c)
{
	static const char ev[] = "retry: " APP_DRAIN_RETRY "\nevent: shutdown\n"
				 "data: {\"type\":\"shutdown\",\"reason\":\"draining\",\"retry_ms\":"
				 APP_DRAIN_RETRY "}\n\n";

	/* Held tokens go first, so the event's reconnect resumes after them. */
	if (!app_stream_flush(c))
		return;
	if (app_conn_send(c, ev, sizeof(ev) - 1))
		app_conn_close(c, false);
	else
		app_conn_close(c, true);
}

void app_drain_conn(struct conn *c, bool now)
{
	if (!c->tc || c->closing)
		return;
	switch (c->mode) {
	case CONN_SSE:
		if (now || !c->msg_running)
			app_drain_sse(c);
		break;
	case CONN_WS:
		if (now || !c->msg_running) {
			(void)app_stream_flush(c);
			app_ws_close_with(c, WS_CLOSE_GOING_AWAY, "server shutting down", false);
		}
		break;
	default:
		c->keep_alive = false;
		if (now || c->hstate == HS_HEAD)
			app_conn_close(c, false);
		break;
	}
}

void app_drain(void *app, bool now)
{
	struct app *a = app;

	if (!a->draining && a->h->tp)
		tp_stop_listening(a->h->tp);
	a->draining = true;
	for (uint32_t i = 0; i < a->used_slots; i++)
		app_drain_conn(&a->conns[i], now);
}

uint64_t app_open_conns(const void *app)
{
	const struct app *a = app;

	return a->st->conns_accepted - a->st->conns_closed;
}

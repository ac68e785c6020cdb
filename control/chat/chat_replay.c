/*
 * Replays of recorded answers: one conn, one timer, the original token
 * timing divided by speed, pauses cut out of the timeline.
 */
#include "chat/chat_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"

void chat_stop_replay(struct chat *c, struct chat_conn *cc)
{
	if (!cc->rp)
		return;
	cpl_timer_cancel(c->loop, &cc->rp->timer);
	free(cc->rp);
	cc->rp = NULL;
}

/* Room for n bytes of replayed tokens; -ENOMEM. */
static int chat_scratch(struct chat *c, size_t n)
{
	if (n <= c->scratch_cap)
		return 0;
	size_t cap = c->scratch_cap ? c->scratch_cap : 4096;
	while (cap < n)
		cap *= 2;
	char *p = realloc(c->scratch, cap);
	if (!p)
		return -ENOMEM;
	c->scratch = p;
	c->scratch_cap = cap;
	return 0;
}


/* Token seq of the replayed message. */
static int chat_replay_token(struct chat *c, struct chat_replay *rp, uint32_t seq, struct store_token *t)
{
	struct chat_session *s = chat_session_get(c, rp->sid, strnlen(rp->sid, CHAN_ID_LEN));
	return s ? chat_token_get(c, s, rp->mid, seq, t) : -ENOENT;
}

/* When token seq of the replay is due: its recorded offset divided by speed. */
static int chat_replay_due(struct chat *c, struct chat_replay *rp, uint32_t seq, uint64_t *due)
{
	struct store_token t;
	if (chat_replay_token(c, rp, seq, &t) < 0)
		return -1;
	*due = rp->start_ns + (uint64_t)((double)t.offset_ns / rp->speed);
	return 0;
}

/* Ends the replay with USAGE and DONE as recorded (status error when the
 * record could not be read back). */
static void chat_replay_end(struct chat *c, struct chat_conn *cc, bool ok)
{
	struct chat_replay *rp = cc->rp;
	enum store_msg_status st = ok ? rp->status : STORE_MSG_ERROR;
	if (!co_usage(c->out, cc->node.conn, rp->sid, rp->mid, rp->usage.prompt_tokens,
		      rp->usage.completion_tokens, rp->usage.cost_usd) ||
	    !co_done(c->out, cc->node.conn, rp->sid, rp->mid, chat_done_code(st), rp->ntokens, NULL, NULL))
		LOG_WARN("replay of %s to worker %u cut short: channel full", rp->mid, cc->node.conn.worker);
	chat_stop_replay(c, cc);
}

/* Sends every token that is due now in one TOKENS record and schedules the
 * next, or ends the replay after the last. */
static void chat_replay_step(struct chat *c, struct chat_conn *cc, uint64_t now_ns)
{
	struct chat_replay *rp = cc->rp;
	uint32_t n = 0;
	uint32_t first = rp->next;
	uint64_t due = 0;
	size_t used = 0;
	while (n < CHAT_TURN_TOKENS && rp->next <= rp->ntokens) {
		struct store_token t;
		if (chat_replay_token(c, rp, rp->next, &t) < 0 || chat_scratch(c, used + t.len) < 0) {
			chat_replay_end(c, cc, false);
			return;
		}
		due = rp->start_ns + (uint64_t)((double)t.offset_ns / rp->speed);
		if (due > now_ns)
			break;
		/* Copied: the store's pointers last only until its next write.
		 * Offsets, since the scratch buffer may move as it grows. */
		memcpy(c->scratch + used, t.text, t.len);
		c->toks[n] = (struct co_tok){ .text = NULL, .len = t.len, .created_ns = now_ns };
		used += t.len;
		n++;
		rp->next++;
	}
	for (uint32_t i = 0, off = 0; i < n; off += c->toks[i].len, i++)
		c->toks[i].text = c->scratch + off;
	if (n) {
		bool ok = true;
		if (!rp->streaming) {
			rp->streaming = true;
			ok = co_status(c->out, cc->node.conn, rp->sid, rp->mid, "streaming");
		}
		if (!ok || !co_tokens(c->out, cc->node.conn, rp->sid, rp->mid, first, c->toks, n)) {
			LOG_WARN("replay of %s to worker %u stopped: channel full", rp->mid, cc->node.conn.worker);
			chat_stop_replay(c, cc);
			return;
		}
		c->stats.replay_tokens += n;
	}
	if (rp->next > rp->ntokens) {
		chat_replay_end(c, cc, true);
		return;
	}
	if (n == CHAT_TURN_TOKENS)
		due = now_ns;
	if (cpl_timer_arm(c->loop, &rp->timer, due) < 0)
		chat_replay_end(c, cc, false);
}

void chat_replay_due_cb(void *arg, uint64_t now_ns)
{
	struct chat_conn *cc = arg;
	chat_replay_step(cc->chat, cc, now_ns);
}

int chat_replay_start(struct chat *c, struct chat_session *s, struct chan_conn conn,
		      const struct store_message *m, double speed)
{
	struct chat_conn *cc = chat_conn_get(c, conn, true);
	if (!cc)
		return -ENOMEM;
	chat_stop_replay(c, cc);
	struct chat_replay *rp = calloc(1, sizeof(*rp));
	if (!rp)
		return -ENOMEM;
	cpl_timer_init(&rp->timer, chat_replay_due_cb, cc);
	cc->rp = rp;
	/* The response subscribed the conn to s on the dataplane; count it so
	 * its UNSUBSCRIBE balances. */
	if (strncmp(cc->sub_sid, s->node.id, CHAN_ID_LEN) != 0) {
		chat_sub_add(s, conn.worker);
		memcpy(cc->sub_sid, s->node.id, CHAN_ID_LEN);
	}
	memcpy(rp->sid, s->node.id, CHAN_ID_LEN);
	memcpy(rp->mid, m->id, CHAN_ID_LEN);
	rp->speed = speed;
	rp->start_ns = sluice_now_ns();
	rp->paused_ns = 0;
	rp->next = 1;
	rp->ntokens = m->ntokens;
	rp->status = m->status;
	rp->usage = m->usage;
	rp->streaming = false;
	if (!co_status(c->out, conn, rp->sid, rp->mid, "queued")) {
		chat_stop_replay(c, cc);
		return -ENOBUFS;
	}
	uint64_t due = rp->start_ns;
	if (rp->ntokens && chat_replay_due(c, rp, 1, &due) < 0) {
		chat_replay_end(c, cc, false);
		return 0;
	}
	if (cpl_timer_arm(c->loop, &rp->timer, due) < 0) {
		chat_replay_end(c, cc, false);
		return 0;
	}
	return 0;
}

int chat_replay_pause(struct chat *c, struct chan_conn conn, bool pause)
{
	struct chat_conn *cc = chat_conn_get(c, conn, false);
	if (!cc || !cc->rp)
		return -ENOENT;
	struct chat_replay *rp = cc->rp;
	uint64_t now = sluice_now_ns();
	if (pause && !rp->paused_ns) {
		rp->paused_ns = now;
		cpl_timer_cancel(c->loop, &rp->timer);
	} else if (!pause && rp->paused_ns) {
		/* The pause is cut out of the timeline: later tokens keep their
		 * spacing relative to what was already sent. */
		rp->start_ns += now - rp->paused_ns;
		rp->paused_ns = 0;
		if (cpl_timer_arm(c->loop, &rp->timer, now) < 0)
			chat_replay_end(c, cc, false);
	}
	return 0;
}

/*
 * The chat layer's core: the session cache, the subscription table, the
 * connection table, overload kicks and resume (what a new subscriber
 * missed). Answers are chat_answer.c, replays chat_replay.c.
 */
#include "chat/chat_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static void chat_kick_due(void *arg, uint64_t now_ns);
static void chat_on_peer_reset(void *arg);

int chat_init(struct chat *c, const struct sluice_conf *conf, struct cp_loop *loop, struct store *st,
	      struct chan_out *out, struct bk_mgr *bk, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->conf = conf;
	c->loop = loop;
	c->st = st;
	c->out = out;
	c->bk = bk;
	cpl_timer_init(&c->kick_timer, chat_kick_due, c);
	if (idmap_init(&c->sessions, 1024) < 0)
		goto fail;
	if (connmap_init(&c->conns, 1024) < 0)
		goto fail_sessions;
	if (cpl_on_peer_reset(loop, chat_on_peer_reset, c) < 0 || chat_answer_init(c) < 0) {
		snprintf(err, errlen, "chat: the loop's or the output's hook table is full");
		goto fail_conns;
	}
	return 0;
fail_conns:
	connmap_free(&c->conns);
	idmap_free(&c->sessions);
	return -1;
fail_sessions:
	idmap_free(&c->sessions);
fail:
	snprintf(err, errlen, "chat: out of memory");
	return -1;
}

void chat_set_hooks(struct chat *c, const struct chat_hooks *hooks)
{
	c->hooks = *hooks;
}

void chat_set_bus(struct chat *c, struct ev_bus *bus)
{
	c->bus = bus;
}

/* A conn entry going away with its replay timer. */
static void chat_conn_node_free(struct connmap_node *n, void *arg)
{
	struct chat *c = arg;
	struct chat_conn *cc = (struct chat_conn *)n;
	chat_stop_replay(c, cc);
	free(cc);
}

static void chat_sess_free(struct idmap_node *n, void *arg)
{
	struct chat *c = arg;
	struct chat_session *s = (struct chat_session *)n;
	chat_answer_free(c, &s->ans);
	free(s);
}

void chat_free(struct chat *c)
{
	cpl_timer_cancel(c->loop, &c->kick_timer);
	idmap_foreach(&c->sessions, chat_sess_free, c);
	idmap_free(&c->sessions);
	connmap_foreach(&c->conns, chat_conn_node_free, c);
	connmap_free(&c->conns);
	free(c->kicks);
	c->kicks = NULL;
	c->nkicks = c->kick_cap = 0;
	free(c->scratch);
	c->scratch = NULL;
	c->scratch_cap = 0;
}

void chat_count_usage(struct chat *c, const struct store_usage *u)
{
	c->stats.usage_answers++;
	c->stats.usage_prompt_tokens += u->prompt_tokens;
	c->stats.usage_completion_tokens += u->completion_tokens;
	c->stats.usage_cost_usd += u->cost_usd;
}

void chat_event(struct chat *c, const char *sid, const char *kind, const char *detail)
{
	if (c->st->ops->event_add(c->st, sid, kind, detail) < 0)
		LOG_WARN("store: event %s of %s not recorded", kind, sid);
}

void chat_new_id(const char *prefix, char out[CHAN_ID_LEN])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t rnd[8];
	randombytes_buf(rnd, sizeof(rnd));
	size_t pl = strlen(prefix);
	memset(out, 0, CHAN_ID_LEN);
	memcpy(out, prefix, pl);
	for (size_t i = 0; i < sizeof(rnd); i++) {
		out[pl + 2 * i] = hex[rnd[i] >> 4];
		out[pl + 2 * i + 1] = hex[rnd[i] & 15];
	}
}

static struct chat_session *chat_session_new(struct chat *c, const struct store_session *ss)
{
	struct chat_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->chat = c;
	snprintf(s->model, sizeof(s->model), "%s", ss->model_id);
	snprintf(s->agent, sizeof(s->agent), "%s", ss->agent_id);
	snprintf(s->user, sizeof(s->user), "%s", ss->user);
	s->owner_uid = ss->owner_uid;
	s->ans.s = s;
	return s;
}

struct chat_session *chat_session_cached(struct chat *c, const char *sid, size_t len)
{
	return (struct chat_session *)idmap_find(&c->sessions, sid, len);
}

struct chat_foreach_ctx {
	void (*fn)(const struct chat_session *s, void *arg);
	void *arg;
};

static void chat_foreach_node(struct idmap_node *n, void *arg)
{
	struct chat_foreach_ctx *x = arg;
	x->fn((const struct chat_session *)n, x->arg);
}

void chat_session_foreach(struct chat *c, void (*fn)(const struct chat_session *s, void *arg), void *arg)
{
	struct chat_foreach_ctx x = { fn, arg };
	idmap_foreach(&c->sessions, chat_foreach_node, &x);
}

struct chat_session *chat_session_get(struct chat *c, const char *sid, size_t len)
{
	struct idmap_node *n = idmap_find(&c->sessions, sid, len);
	if (n)
		return (struct chat_session *)n;
	if (len == 0 || len >= CHAN_ID_LEN || memchr(sid, 0, len))
		return NULL;
	/* Not cached: a durable store may know it from an earlier run. */
	char id[CHAN_ID_LEN] = { 0 };
	memcpy(id, sid, len);
	struct store_session ss;
	if (store_session_get(c->st, id, &ss) < 0)
		return NULL;
	struct chat_session *s = chat_session_new(c, &ss);
	if (!s)
		return NULL;
	if (idmap_insert(&c->sessions, &s->node, sid, len) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

struct chat_create_ctx {
	struct chat *c;
	struct chat_session *s;
	char sid[CHAN_ID_LEN];
};

static void chat_session_stored(void *arg, int err)
{
	struct chat_create_ctx *x = arg;
	struct chat *c = x->c;
	struct chat_session *s = x->s;
	if (!err && idmap_insert(&c->sessions, &s->node, x->sid, strlen(x->sid)) < 0)
		err = -EEXIST;
	if (!err) {
		chat_event(c, x->sid, "created", NULL);
		ev_publish(c->bus, &(struct ev){ .kind = EV_CREATED, .user = s->user, .session_id = x->sid });
	}
	c->hooks.session_created(c->hooks.arg, &s->reply, x->sid, s->user, err);
	if (err)
		free(s);
	free(x);
}

int chat_session_create(struct chat *c, const struct store_session *ss, const struct chat_reply *r)
{
	struct chat_create_ctx *x = calloc(1, sizeof(*x));
	struct chat_session *s = chat_session_new(c, ss);
	if (!x || !s)
		goto fail;
	s->reply = *r;
	x->c = c;
	x->s = s;
	memcpy(x->sid, ss->id, CHAN_ID_LEN);
	x->sid[CHAN_ID_LEN - 1] = 0;
	int rc = store_session_create(c->st, ss, chat_session_stored, x);
	if (rc < 0) {
		free(x);
		free(s);
		return rc;
	}
	return 0;
fail:
	free(x);
	free(s);
	return -ENOMEM;
}

/* Remembers that worker w's subscribers of sid were dropped, so that
 * chat_kicks_send() tells them once the ring has room. The list grows only on
 * this overload path, never per token. */
void chat_kick_later(struct chat *c, const char *sid, uint32_t w)
{
	for (uint32_t i = 0; i < c->nkicks; i++)
		if (c->kicks[i].worker == w && strncmp(c->kicks[i].sid, sid, CHAN_ID_LEN) == 0)
			return;
	if (c->nkicks == c->kick_cap) {
		uint32_t cap = c->kick_cap ? c->kick_cap * 2 : 16;
		struct chat_kick *k = realloc(c->kicks, cap * sizeof(*k));
		if (!k) {
			LOG_ERROR("out of memory: subscribers of %s on worker %u will not be told of the drop",
				  sid, w);
			c->stats.kick_losses++;
			return;
		}
		c->kicks = k;
		c->kick_cap = cap;
	}
	struct chat_kick *k = &c->kicks[c->nkicks++];
	memset(k->sid, 0, sizeof(k->sid));
	memcpy(k->sid, sid, strnlen(sid, CHAN_ID_LEN - 1));
	k->worker = w;
	if (!cpl_timer_armed(&c->kick_timer))
		cpl_timer_arm(c->loop, &c->kick_timer, cpl_now(c->loop));
}

void chat_broadcast_status(struct chat *c, struct chat_session *s, const char *mid, const char *st)
{
	CHAT_BROADCAST(c, s, co_status(c->out, conn, s->node.id, mid, st));
}

/* A message state change on the event trail: kind "message", detail
 * {"message_id":…,"status":…}. */
void chat_msg_event(struct chat *c, const char *sid, const char *mid, enum store_msg_status st)
{
	char detail[96];
	int n = snprintf(detail, sizeof(detail), "{\"message_id\":\"%s\",\"status\":\"%s\"}", mid,
			 store_msg_status_name(st));
	if (n > 0 && (size_t)n < sizeof(detail))
		chat_event(c, sid, "message", detail);
}

uint32_t chat_done_code(enum store_msg_status st)
{
	switch (st) {
	case STORE_MSG_CANCELLED:
		return CHAN_DONE_CANCELLED;
	case STORE_MSG_ERROR:
		return CHAN_DONE_ERROR;
	case STORE_MSG_INTERRUPTED:
		return CHAN_DONE_INTERRUPTED;
	default:
		return CHAN_DONE_COMPLETE;
	}
}

/* Sends every pending overload KICK that fits in its worker's ring or
 * backlog; the others wait for a later turn. A KICK queues behind the
 * records already sent, so the clients see everything up to the drop first
 * and resume from there. */
static void chat_kicks_send(struct chat *c)
{
	uint32_t keep = 0;
	for (uint32_t i = 0; i < c->nkicks; i++) {
		const struct chat_kick *p = &c->kicks[i];
		const struct co_worker *cw = &c->out->w[p->worker];
		struct chan_kick *k = NULL;
		/* Checked first so that waiting is not counted as a dropped record. */
		if (cw->blen + chan_rec_size(sizeof(*k)) <= cw->bcap)
			k = co_begin(c->out, p->worker, CHAN_REC_KICK, sizeof(*k));
		if (!k) {
			c->kicks[keep++] = *p;
			continue;
		}
		memset(k, 0, sizeof(*k));
		k->conn.worker = (uint16_t)p->worker;
		k->conn.slot = CHAN_SLOT_ALL;
		memcpy(k->session_id, p->sid, CHAN_ID_LEN);
		k->code = 1013; /* try again later */
		snprintf(k->reason_code, sizeof(k->reason_code), "overloaded");
		snprintf(k->reason, sizeof(k->reason),
			 "stream dropped: the appliance is overloaded; resume with Last-Event-ID");
		co_end(c->out, p->worker, sizeof(*k));
		c->stats.overload_kicks++;
		ev_publish(c->bus, &(struct ev){ .kind = EV_KICKED, .session_id = p->sid,
						 .reason = "overloaded" });
	}
	c->nkicks = keep;
}

/* A KICK waits for ring space. */
static void chat_kick_due(void *arg, uint64_t now_ns)
{
	struct chat *c = arg;
	chat_kicks_send(c);
	/* Nobody rings when ring space frees up: poll for it. */
	if (c->nkicks)
		cpl_timer_arm(c->loop, &c->kick_timer, now_ns + CHAT_KICK_RETRY_NS);
}

/* Sends tokens [from, to] of message mid to conn, read back from the store
 * (or memory, for the latest answer). */
static bool chat_send_log(struct chat *c, struct chat_session *s, struct chan_conn conn,
			  const char *mid, uint32_t from, uint32_t to)
{
	bool running = s->ans.running && strcmp(s->ans.mid, mid) == 0;
	uint64_t base = running ? s->ans.start_ns : 0;
	uint64_t now = sluice_now_ns();
	while (from <= to) {
		uint32_t n = 0;
		uint32_t first = from;
		while (n < CHAT_TURN_TOKENS && from <= to) {
			struct store_token st;
			if (chat_token_get(c, s, mid, from, &st) < 0)
				return false;
			c->toks[n++] = (struct co_tok){ .text = st.text, .len = st.len,
							.created_ns = running ? base + st.offset_ns : now };
			from++;
		}
		if (!co_tokens(c->out, conn, s->node.id, mid, first, c->toks, n))
			return false;
	}
	return true;
}

/* Sends message m (or its part after `after` tokens) to conn: statuses when
 * `with_status`, tokens after `after`, then USAGE and DONE when it ended. */
bool chat_send_message(struct chat *c, struct chat_session *s, struct chan_conn conn,
			      const struct store_message *m, bool with_status, uint32_t after)
{
	const char *sid = s->node.id;
	bool ok = true;
	if (with_status) {
		ok = ok && co_status(c->out, conn, sid, m->id, "queued");
		if (m->status != STORE_MSG_QUEUED && m->ntokens > 0) {
			struct co_terms t = { 0 };
			if (s->ans.running && strcmp(s->ans.mid, m->id) == 0)
				chat_answer_terms(c, s, &t);
			ok = ok && co_status_streaming(c->out, conn, sid, m->id, &t);
		}
	}
	uint32_t ntok = m->ntokens;
	if (ok && after < ntok)
		ok = chat_send_log(c, s, conn, m->id, after + 1, ntok);
	if (ok && m->status >= STORE_MSG_COMPLETE) {
		ok = co_usage(c->out, conn, sid, m->id, m->usage.prompt_tokens,
			      m->usage.completion_tokens, m->usage.cost_usd) &&
		     co_done(c->out, conn, sid, m->id, chat_done_code(m->status), ntok, NULL, NULL);
	}
	return ok;
}

bool chat_subscribe(struct chat *c, struct chat_session *s, struct chan_conn conn,
		    enum chat_resume kind, const char *rmid, uint32_t rseq)
{
	const char *sid = s->node.id;
	chat_answer_flush(c, s);
	uint32_t n = store_message_count(c->st, sid);
	struct store_message m;
	bool ok = true;
	int64_t idx = kind != CHAT_RESUME_NONE ? store_message_find(c->st, sid, rmid) : -1;

	if (idx < 0) {
		/* No usable resume point: the running answer from its start. */
		if (s->ans.running) {
			int64_t ri = store_message_find(c->st, sid, s->ans.mid);
			if (ri >= 0 && chat_message_get(c, s, (uint32_t)ri, &m) == 0)
				ok = chat_send_message(c, s, conn, &m, true, 0);
		}
	} else {
		if (chat_message_get(c, s, (uint32_t)idx, &m) < 0)
			return false;
		if (kind == CHAT_RESUME_SEQ) {
			ok = chat_send_message(c, s, conn, &m, false, rseq);
		} else if (kind == CHAT_RESUME_USAGE && m.status >= STORE_MSG_COMPLETE) {
			ok = co_done(c->out, conn, sid, m.id, chat_done_code(m.status), m.ntokens, NULL, NULL);
		}
		for (uint32_t i = (uint32_t)idx + 1; ok && i < n; i++) {
			if (chat_message_get(c, s, i, &m) < 0)
				return false;
			if (m.role == STORE_ROLE_ASSISTANT)
				ok = chat_send_message(c, s, conn, &m, true, 0);
		}
	}
	chat_sub_add(s, conn.worker);
	struct chat_conn *cc = chat_conn_get(c, conn, true);
	if (cc)
		memcpy(cc->sub_sid, sid, CHAN_ID_LEN);
	return ok;
}

void chat_sub_add(struct chat_session *s, uint32_t worker)
{
	if (worker < CHAN_MAX_WORKERS && s->refs[worker] < UINT32_MAX)
		s->refs[worker]++;
}

void chat_sub_del(struct chat_session *s, uint32_t worker)
{
	if (worker >= CHAN_MAX_WORKERS)
		return;
	/* Tokens batched while the conn was subscribed still reach it. */
	chat_answer_flush(s->chat, s);
	/* Dropped subscribers leave first: the worker kicks them before it
	 * sees any later subscribe response. */
	if (s->orphans[worker] > 0)
		s->orphans[worker]--;
	else if (s->refs[worker] > 0)
		s->refs[worker]--;
}

static void chat_session_unsub(struct idmap_node *n, void *arg)
{
	(void)arg;
	struct chat_session *s = (struct chat_session *)n;
	memset(s->refs, 0, sizeof(s->refs));
	memset(s->orphans, 0, sizeof(s->orphans));
}

/* A new dataplane incarnation: every connection, hence every
 * subscription, is gone. */
static void chat_on_peer_reset(void *arg)
{
	struct chat *c = arg;
	idmap_foreach(&c->sessions, chat_session_unsub, NULL);
	/* Their conns are gone too: nobody is left to kick. */
	c->nkicks = 0;
	/* The conns are gone with the old dataplane, and their replays with
	 * them: unqueue every replay, free every entry, then empty the buckets
	 * (the map keeps its size, so this cannot fail). */
	connmap_foreach(&c->conns, chat_conn_node_free, c);
	connmap_clear(&c->conns);
}

/* ---- sessions going away --------------------------------------------- */

static void chat_conn_stop_sid(struct connmap_node *n, void *arg)
{
	struct chat_conn *cc = (struct chat_conn *)n;
	struct chat_session *s = arg;
	if (cc->rp && strcmp(cc->rp->sid, s->node.id) == 0)
		chat_stop_replay(s->chat, cc);
}

int chat_session_drop(struct chat *c, struct chat_session *s)
{
	char mid[CHAN_ID_LEN];
	if (s->pending)
		return -EBUSY;
	if (s->ans.running)
		chat_cancel(c, s, mid);
	connmap_foreach(&c->conns, chat_conn_stop_sid, s);
	idmap_remove(&c->sessions, &s->node);
	chat_sess_free(&s->node, c);
	return 0;
}


/* ---- the connection table -------------------------------------------- */

struct chat_conn *chat_conn_get(struct chat *c, struct chan_conn conn, bool create)
{
	struct connmap_node *n = connmap_find(&c->conns, conn);
	if (n || !create)
		return (struct chat_conn *)n;
	struct chat_conn *cc = calloc(1, sizeof(*cc));
	if (!cc)
		return NULL;
	cc->chat = c;
	/* Cannot fail: conn was not found above. */
	connmap_insert(&c->conns, &cc->node, conn);
	return cc;
}

static void chat_conn_release(struct chat *c, struct chat_conn *cc)
{
	chat_stop_replay(c, cc);
	connmap_remove(&c->conns, &cc->node);
	free(cc);
}

void chat_conn_subscribed(struct chat *c, struct chat_session *s, const struct chan_sub *sub)
{
	/* Tokens batched before it subscribed are not its to get. */
	chat_answer_flush(c, s);
	chat_sub_add(s, sub->conn.worker);
	struct chat_conn *cc = chat_conn_get(c, sub->conn, true);
	if (cc)
		memcpy(cc->sub_sid, s->node.id, CHAN_ID_LEN);
}

void chat_conn_unsubscribed(struct chat *c, struct chan_conn conn, const char *sid)
{
	struct chat_conn *cc = chat_conn_get(c, conn, false);
	/* A conn that switched sessions reports the old one after the new
	 * subscription was recorded: only the matching one is cleared. */
	if (!cc || strncmp(cc->sub_sid, sid, CHAN_ID_LEN) != 0)
		return;
	cc->sub_sid[0] = 0;
	if (!cc->rp)
		chat_conn_release(c, cc);
}

void chat_conn_closed(struct chat *c, struct chan_conn conn)
{
	struct chat_conn *cc = chat_conn_get(c, conn, false);
	if (cc)
		chat_conn_release(c, cc);
}


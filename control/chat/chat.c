#include "chat/chat.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backends/synthetic.h"
#include "sluice/log.h"

static void chat_kick_due(void *arg, uint64_t now_ns);
static void chat_answer_due(void *arg, uint64_t now_ns);
static void chat_replay_due_cb(void *arg, uint64_t now_ns);
static void chat_on_peer_reset(void *arg);

int chat_init(struct chat *c, const struct sluice_conf *conf, struct cp_loop *loop, struct store *st,
	      struct chan_out *out, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->conf = conf;
	c->loop = loop;
	c->st = st;
	c->out = out;
	cpl_timer_init(&c->kick_timer, chat_kick_due, c);
	if (idmap_init(&c->sessions, 1024) < 0)
		goto fail;
	if (idmap_init(&c->conns, 1024) < 0)
		goto fail_sessions;
	if (cpl_on_peer_reset(loop, chat_on_peer_reset, c) < 0) {
		snprintf(err, errlen, "chat: the loop's hook table is full");
		goto fail_conns;
	}
	return 0;
fail_conns:
	idmap_free(&c->conns);
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
static void chat_conn_node_free(struct idmap_node *n, void *arg)
{
	struct chat *c = arg;
	struct chat_conn *cc = (struct chat_conn *)n;
	cpl_timer_cancel(c->loop, &cc->rp.timer);
	free(cc);
}

static void chat_sess_free(struct idmap_node *n, void *arg)
{
	struct chat *c = arg;
	struct chat_session *s = (struct chat_session *)n;
	cpl_timer_cancel(c->loop, &s->ans.timer);
	free(s->ans.text);
	free(s->ans.toks);
	free(s);
}

void chat_free(struct chat *c)
{
	cpl_timer_cancel(c->loop, &c->kick_timer);
	idmap_foreach(&c->sessions, chat_sess_free, c);
	idmap_free(&c->sessions);
	idmap_foreach(&c->conns, chat_conn_node_free, c);
	idmap_free(&c->conns);
	free(c->kicks);
	c->kicks = NULL;
	c->nkicks = c->kick_cap = 0;
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

static const struct backend_ops *chat_backend_ops(const struct conf_backend *be)
{
	switch (be->type) {
	case CONF_BACKEND_SYNTHETIC:
		return &syn_ops;
	}
	return NULL;
}

static struct chat_session *chat_session_new(struct chat *c, const struct conf_backend *be,
					     const char *user)
{
	struct chat_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->chat = c;
	s->backend = be;
	snprintf(s->user, sizeof(s->user), "%s", user);
	s->ans.s = s;
	cpl_timer_init(&s->ans.timer, chat_answer_due, s);
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
	const struct conf_backend *be = conf_backend_for_model(c->conf, ss.model_id);
	if (!be)
		return NULL;
	struct chat_session *s = chat_session_new(c, be, ss.user);
	if (!s)
		return NULL;
	s->owner_uid = ss.owner_uid;
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

int chat_session_create(struct chat *c, const struct conf_backend *be, const struct store_session *ss,
			const struct chat_reply *r)
{
	struct chat_create_ctx *x = calloc(1, sizeof(*x));
	struct chat_session *s = chat_session_new(c, be, ss->user);
	if (!x || !s)
		goto fail;
	s->owner_uid = ss->owner_uid;
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
static void chat_kick_later(struct chat *c, const char *sid, uint32_t w)
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

/* Sends a record to every worker subscribed to s. A worker whose ring and
 * backlog are both full loses its subscriptions to s; its clients get a KICK
 * "overloaded" as soon as the ring has room, so they resume with
 * Last-Event-ID instead of waiting for ever. */
#define CHAT_BROADCAST(c, s, call)                                                         \
	do {                                                                               \
		for (uint32_t w_ = 0; w_ < (c)->out->nworkers; w_++) {                     \
			if (!(s)->refs[w_])                                                \
				continue;                                                  \
			struct chan_conn conn = { .worker = (uint16_t)w_, .slot = CHAN_SLOT_ALL }; \
			if (!(call)) {                                                     \
				LOG_WARN("worker %u backlog full: dropping its %u subscriptions to %s", \
					 w_, (s)->refs[w_], (s)->node.id);                 \
				(s)->orphans[w_] += (s)->refs[w_];                         \
				(s)->refs[w_] = 0;                                         \
				(c)->stats.sub_drops++;                                    \
				chat_kick_later((c), (s)->node.id, w_);                    \
			}                                                                  \
		}                                                                          \
	} while (0)

static void chat_broadcast_status(struct chat *c, struct chat_session *s, const char *mid, const char *st)
{
	CHAT_BROADCAST(c, s, co_status(c->out, conn, s->node.id, mid, st));
}

/* A message state change on the event trail: kind "message", detail
 * {"message_id":…,"status":…}. */
static void chat_msg_event(struct chat *c, const char *sid, const char *mid, enum store_msg_status st)
{
	char detail[96];
	int n = snprintf(detail, sizeof(detail), "{\"message_id\":\"%s\",\"status\":\"%s\"}", mid,
			 store_msg_status_name(st));
	if (n > 0 && (size_t)n < sizeof(detail))
		chat_event(c, sid, "message", detail);
}

static uint32_t chat_done_code(enum store_msg_status st)
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

/* Ends the running answer with USAGE then DONE, to subscribers and the store. */
static void chat_answer_end(struct chat *c, struct chat_session *s, enum store_msg_status st)
{
	struct chat_answer *a = &s->ans;
	struct store_usage u = {
		.prompt_tokens = a->be.prompt_tokens,
		.completion_tokens = a->seq,
		.cost_usd = a->be.ops->cost(&a->be, a->seq),
	};
	cpl_timer_cancel(c->loop, &a->timer);
	a->running = false;
	c->running--;
	a->status = st;
	a->usage = u;
	CHAT_BROADCAST(c, s, co_usage(c->out, conn, s->node.id, a->mid, u.prompt_tokens,
				     u.completion_tokens, u.cost_usd));
	CHAT_BROADCAST(c, s, co_done(c->out, conn, s->node.id, a->mid, chat_done_code(st), a->seq));
	if (store_message_status(c->st, s->node.id, a->mid, st, &u) < 0)
		LOG_ERROR("store: cannot end message %s", a->mid);
	chat_msg_event(c, s->node.id, a->mid, st);
	if (c->hooks.answer_ended)
		c->hooks.answer_ended(c->hooks.arg, s);
	ev_publish(c->bus, &(struct ev){ .kind = EV_ANSWER_ENDED, .user = s->user, .session_id = s->node.id,
					 .message_id = a->mid, .status = store_msg_status_name(st) });
}


static void chat_message_stored(void *arg, int err)
{
	struct chat_session *s = arg;
	struct chat *c = s->chat;
	struct chat_answer *a = &s->ans;
	s->pending = false;
	c->hooks.message_accepted(c->hooks.arg, &s->reply, s->node.id, a->mid, err);
	if (err)
		return;
	/* The answer's clock starts when the message is accepted (durable). */
	a->be.start_ns = sluice_now_ns();
	a->seq = 0;
	a->text_len = 0;
	a->status = STORE_MSG_QUEUED;
	memset(&a->usage, 0, sizeof(a->usage));
	a->have = true;
	a->running = true;
	c->running++;
	a->streaming = false;
	chat_msg_event(c, s->node.id, a->mid, STORE_MSG_QUEUED);
	ev_publish(c->bus, &(struct ev){ .kind = EV_ANSWER_STARTED, .user = s->user, .session_id = s->node.id,
					 .message_id = a->mid });
	chat_broadcast_status(c, s, a->mid, "queued");
	if (cpl_timer_arm(c->loop, &a->timer, a->be.ops->next_due(&a->be)) < 0) {
		LOG_ERROR("timer heap full: failing message %s", a->mid);
		chat_answer_end(c, s, STORE_MSG_ERROR);
	}
}

/* Room for n more tokens of the latest answer (at most BACKEND_TOKEN_MAX
 * bytes each). Grows only when a backend runs past its hint. */
static int chat_answer_reserve(struct chat_answer *a, uint32_t n)
{
	uint32_t want = a->seq + n;
	if (want > a->tok_cap) {
		uint32_t cap = a->tok_cap ? a->tok_cap : 32;
		while (cap < want)
			cap *= 2;
		struct chat_tok *t = realloc(a->toks, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		a->toks = t;
		a->tok_cap = cap;
	}
	size_t bytes = a->text_len + (size_t)n * BACKEND_TOKEN_MAX;
	if (bytes > a->text_cap) {
		size_t cap = a->text_cap ? a->text_cap : 1024;
		while (cap < bytes)
			cap *= 2;
		char *t = realloc(a->text, cap);
		if (!t)
			return -ENOMEM;
		a->text = t;
		a->text_cap = cap;
	}
	return 0;
}

int chat_message_post(struct chat *c, struct chat_session *s, const char *content, size_t len,
		      const struct chat_reply *r)
{
	if (s->ans.running || s->pending)
		return -EBUSY;
	const struct backend_ops *ops = chat_backend_ops(s->backend);
	if (!ops)
		return -ENOTSUP;
	struct chat_answer *a = &s->ans;
	/* The backend reads the prompt now; the store keeps its own copy. */
	int rc = ops->start(&a->be, s->backend, content, len, sluice_now_ns());
	if (rc < 0)
		return rc;
	/* Most answers need only the hint: reserved here, not per token. The
	 * previous answer's copy is dropped when this one is accepted. */
	a->have = false;
	a->seq = 0;
	a->text_len = 0;
	rc = chat_answer_reserve(a, a->be.total);
	if (rc < 0)
		return rc;
	chat_new_id("m_", s->user_mid);
	chat_new_id("m_", a->mid);
	s->reply = *r;
	s->pending = true;
	rc = store_message_add(c->st, s->node.id, s->user_mid, content, len, a->mid,
			       a->be.total, chat_message_stored, s);
	if (rc < 0)
		s->pending = false;
	return rc;
}

int chat_cancel(struct chat *c, struct chat_session *s, char mid[CHAN_ID_LEN])
{
	if (!s->ans.running)
		return -ENOENT;
	memcpy(mid, s->ans.mid, CHAN_ID_LEN);
	chat_answer_end(c, s, STORE_MSG_CANCELLED);
	return 0;
}

/* Pulls the due tokens of one answer and sends them as one TOKENS record per
 * subscribed worker. Returns false when the answer ended. */
static bool chat_answer_step(struct chat *c, struct chat_session *s, uint64_t now_ns)
{
	struct chat_answer *a = &s->ans;
	uint32_t n = 0;
	while (n < CHAT_TURN_TOKENS) {
		if ((a->seq + n >= a->tok_cap || a->text_len + BACKEND_TOKEN_MAX > a->text_cap) &&
		    chat_answer_reserve(a, n + 1) < 0) {
			LOG_ERROR("out of memory keeping answer %s", a->mid);
			chat_answer_end(c, s, STORE_MSG_ERROR);
			return false;
		}
		int len = a->be.ops->next(&a->be, now_ns, c->tokbuf[n]);
		if (len < 0)
			break;
		uint64_t t = sluice_now_ns();
		struct chat_tok *ct = &a->toks[a->seq + n];
		ct->off = (uint32_t)a->text_len;
		ct->len = (uint32_t)len;
		ct->offset_ns = t - a->be.start_ns;
		memcpy(a->text + a->text_len, c->tokbuf[n], (size_t)len);
		a->text_len += (size_t)len;
		c->toks[n] = (struct co_tok){ .text = c->tokbuf[n], .len = (uint32_t)len, .created_ns = t };
		c->stoks[n] = (struct store_token){ .text = c->tokbuf[n], .len = (uint32_t)len,
						    .offset_ns = t - a->be.start_ns };
		n++;
	}
	if (n) {
		if (!a->streaming) {
			a->streaming = true;
			chat_broadcast_status(c, s, a->mid, "streaming");
			a->status = STORE_MSG_STREAMING;
			if (store_message_status(c->st, s->node.id, a->mid, STORE_MSG_STREAMING, NULL) < 0)
				LOG_ERROR("store: cannot mark message %s streaming", a->mid);
			chat_msg_event(c, s->node.id, a->mid, STORE_MSG_STREAMING);
		}
		uint32_t first = a->seq + 1;
		CHAT_BROADCAST(c, s, co_tokens(c->out, conn, s->node.id, a->mid, first, c->toks, n));
		if (store_tokens_append(c->st, s->node.id, a->mid, first, c->stoks, n) < 0)
			LOG_ERROR("store: cannot append tokens to %s", a->mid);
		if (c->hooks.answer_tokens)
			c->hooks.answer_tokens(c->hooks.arg, s, n, a->text_len - a->toks[a->seq].off);
		a->seq += n;
		c->stats.tokens += n;
	}
	uint64_t due = a->be.ops->next_due(&a->be);
	if (due == UINT64_MAX) {
		chat_answer_end(c, s, STORE_MSG_COMPLETE);
		return false;
	}
	if (cpl_timer_arm(c->loop, &a->timer, due) < 0) {
		LOG_ERROR("timer heap full: failing message %s", a->mid);
		chat_answer_end(c, s, STORE_MSG_ERROR);
		return false;
	}
	return true;
}

static void chat_replay_step(struct chat *c, struct chat_conn *cc, uint64_t now_ns);


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

/* Loop timer callbacks: the next token of an answer is due, the next
 * token of a replay is due, a KICK waits for ring space. */
static void chat_answer_due(void *arg, uint64_t now_ns)
{
	struct chat_session *s = arg;
	chat_answer_step(s->chat, s, now_ns);
}

static void chat_replay_due_cb(void *arg, uint64_t now_ns)
{
	struct chat_conn *cc = arg;
	chat_replay_step(cc->chat, cc, now_ns);
}

static void chat_kick_due(void *arg, uint64_t now_ns)
{
	struct chat *c = arg;
	chat_kicks_send(c);
	/* Nobody rings when ring space frees up: poll for it. */
	if (c->nkicks)
		cpl_timer_arm(c->loop, &c->kick_timer, now_ns + CHAT_KICK_RETRY_NS);
}

static bool chat_is_latest(const struct chat_session *s, const char *mid)
{
	return s->ans.have && strncmp(s->ans.mid, mid, CHAN_ID_LEN) == 0;
}

int chat_message_get(struct chat *c, struct chat_session *s, uint32_t idx, struct store_message *out)
{
	int rc = store_message_get(c->st, s->node.id, idx, out);
	if (rc < 0 || !chat_is_latest(s, out->id))
		return rc;
	const struct chat_answer *a = &s->ans;
	out->status = a->status;
	out->ntokens = a->seq;
	out->usage = a->usage;
	out->content = a->text;
	out->content_len = a->text_len;
	return 0;
}

int chat_token_get(struct chat *c, struct chat_session *s, const char *mid, uint32_t seq,
		   struct store_token *out)
{
	if (!chat_is_latest(s, mid))
		return store_token_get(c->st, s->node.id, mid, seq, out);
	const struct chat_answer *a = &s->ans;
	if (seq == 0 || seq > a->seq)
		return -ENOENT;
	const struct chat_tok *t = &a->toks[seq - 1];
	*out = (struct store_token){ .text = a->text + t->off, .len = t->len, .offset_ns = t->offset_ns };
	return 0;
}

/* Sends tokens [from, to] of message mid to conn, read back from the store
 * (or memory, for the latest answer). */
static bool chat_send_log(struct chat *c, struct chat_session *s, struct chan_conn conn,
			  const char *mid, uint32_t from, uint32_t to)
{
	bool running = s->ans.running && strcmp(s->ans.mid, mid) == 0;
	uint64_t base = running ? s->ans.be.start_ns : 0;
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
static bool chat_send_message(struct chat *c, struct chat_session *s, struct chan_conn conn,
			      const struct store_message *m, bool with_status, uint32_t after)
{
	const char *sid = s->node.id;
	bool ok = true;
	if (with_status) {
		ok = ok && co_status(c->out, conn, sid, m->id, "queued");
		if (m->status != STORE_MSG_QUEUED && m->ntokens > 0)
			ok = ok && co_status(c->out, conn, sid, m->id, "streaming");
	}
	uint32_t ntok = m->ntokens;
	if (ok && after < ntok)
		ok = chat_send_log(c, s, conn, m->id, after + 1, ntok);
	if (ok && m->status >= STORE_MSG_COMPLETE) {
		ok = co_usage(c->out, conn, sid, m->id, m->usage.prompt_tokens,
			      m->usage.completion_tokens, m->usage.cost_usd) &&
		     co_done(c->out, conn, sid, m->id, chat_done_code(m->status), ntok);
	}
	return ok;
}

bool chat_subscribe(struct chat *c, struct chat_session *s, struct chan_conn conn,
		    enum chat_resume kind, const char *rmid, uint32_t rseq)
{
	const char *sid = s->node.id;
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
			ok = co_done(c->out, conn, sid, m.id, chat_done_code(m.status), m.ntokens);
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
	idmap_foreach(&c->conns, chat_conn_node_free, c);
	memset(c->conns.b, 0, c->conns.nbuckets * sizeof(*c->conns.b));
	c->conns.n = 0;
}

/* ---- sessions going away --------------------------------------------- */

static void chat_stop_replay(struct chat *c, struct chat_conn *cc)
{
	cpl_timer_cancel(c->loop, &cc->rp.timer);
	cc->rp.active = false;
}

static void chat_conn_stop_sid(struct idmap_node *n, void *arg)
{
	struct chat_conn *cc = (struct chat_conn *)n;
	struct chat_session *s = arg;
	if (cc->rp.active && strcmp(cc->rp.sid, s->node.id) == 0)
		chat_stop_replay(s->chat, cc);
}

int chat_session_drop(struct chat *c, struct chat_session *s)
{
	char mid[CHAN_ID_LEN];
	if (s->pending)
		return -EBUSY;
	if (s->ans.running)
		chat_cancel(c, s, mid);
	idmap_foreach(&c->conns, chat_conn_stop_sid, s);
	idmap_remove(&c->sessions, &s->node);
	chat_sess_free(&s->node, c);
	return 0;
}

/* ---- the connection table -------------------------------------------- */

/* The map key of a conn handle: worker.slot.gen in hex (at most 22 bytes). */
static size_t chat_conn_key(struct chan_conn conn, char key[CHAN_ID_LEN])
{
	int n = snprintf(key, CHAN_ID_LEN, "%x.%x.%x", conn.worker, conn.slot, conn.gen);
	return n > 0 ? (size_t)n : 0;
}

struct chat_conn *chat_conn_get(struct chat *c, struct chan_conn conn, bool create)
{
	char key[CHAN_ID_LEN];
	size_t kl = chat_conn_key(conn, key);
	struct idmap_node *n = idmap_find(&c->conns, key, kl);
	if (n || !create)
		return (struct chat_conn *)n;
	struct chat_conn *cc = calloc(1, sizeof(*cc));
	if (!cc)
		return NULL;
	cc->conn = conn;
	cc->chat = c;
	cpl_timer_init(&cc->rp.timer, chat_replay_due_cb, cc);
	if (idmap_insert(&c->conns, &cc->node, key, kl) < 0) {
		free(cc);
		return NULL;
	}
	return cc;
}

static void chat_conn_release(struct chat *c, struct chat_conn *cc)
{
	chat_stop_replay(c, cc);
	idmap_remove(&c->conns, &cc->node);
	free(cc);
}

void chat_conn_subscribed(struct chat *c, struct chat_session *s, const struct chan_sub *sub)
{
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
	if (!cc->rp.active)
		chat_conn_release(c, cc);
}

void chat_conn_closed(struct chat *c, struct chan_conn conn)
{
	struct chat_conn *cc = chat_conn_get(c, conn, false);
	if (cc)
		chat_conn_release(c, cc);
}

/* ---- replay ------------------------------------------------------------ */

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
	struct chat_replay *rp = &cc->rp;
	enum store_msg_status st = ok ? rp->status : STORE_MSG_ERROR;
	chat_stop_replay(c, cc);
	if (!co_usage(c->out, cc->conn, rp->sid, rp->mid, rp->usage.prompt_tokens,
		      rp->usage.completion_tokens, rp->usage.cost_usd) ||
	    !co_done(c->out, cc->conn, rp->sid, rp->mid, chat_done_code(st), rp->ntokens))
		LOG_WARN("replay of %s to worker %u cut short: channel full", rp->mid, cc->conn.worker);
}

/* Sends every token that is due now in one TOKENS record and schedules the
 * next, or ends the replay after the last. */
static void chat_replay_step(struct chat *c, struct chat_conn *cc, uint64_t now_ns)
{
	struct chat_replay *rp = &cc->rp;
	uint32_t n = 0;
	uint32_t first = rp->next;
	uint64_t due = 0;
	while (n < CHAT_TURN_TOKENS && rp->next <= rp->ntokens) {
		struct store_token t;
		if (chat_replay_token(c, rp, rp->next, &t) < 0 || t.len > BACKEND_TOKEN_MAX) {
			chat_replay_end(c, cc, false);
			return;
		}
		due = rp->start_ns + (uint64_t)((double)t.offset_ns / rp->speed);
		if (due > now_ns)
			break;
		/* Copied: the store's pointers last only until its next write. */
		memcpy(c->tokbuf[n], t.text, t.len);
		c->toks[n] = (struct co_tok){ .text = c->tokbuf[n], .len = t.len, .created_ns = now_ns };
		n++;
		rp->next++;
	}
	if (n) {
		bool ok = true;
		if (!rp->streaming) {
			rp->streaming = true;
			ok = co_status(c->out, cc->conn, rp->sid, rp->mid, "streaming");
		}
		if (!ok || !co_tokens(c->out, cc->conn, rp->sid, rp->mid, first, c->toks, n)) {
			LOG_WARN("replay of %s to worker %u stopped: channel full", rp->mid, cc->conn.worker);
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

int chat_replay_start(struct chat *c, struct chat_session *s, struct chan_conn conn,
		      const struct store_message *m, double speed)
{
	struct chat_conn *cc = chat_conn_get(c, conn, true);
	if (!cc)
		return -ENOMEM;
	struct chat_replay *rp = &cc->rp;
	chat_stop_replay(c, cc);
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
	rp->active = true;
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
	if (!cc || !cc->rp.active)
		return -ENOENT;
	struct chat_replay *rp = &cc->rp;
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

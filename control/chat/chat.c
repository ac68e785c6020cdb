#include "chat/chat.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backends/synthetic.h"
#include "sluice/log.h"

#define CHAT_ANS(node) ((struct chat_answer *)((char *)(node) - offsetof(struct chat_answer, timer)))

int chat_init(struct chat *c, const struct sluice_conf *conf, struct store *st,
	      struct chan_out *out, const struct chat_hooks *hooks)
{
	memset(c, 0, sizeof(*c));
	c->conf = conf;
	c->st = st;
	c->out = out;
	c->hooks = *hooks;
	if (th_init(&c->timers, 64) < 0)
		return -1;
	if (idmap_init(&c->sessions, 1024) < 0) {
		th_free(&c->timers);
		return -1;
	}
	return 0;
}

static void chat_session_free(struct idmap_node *n, void *arg)
{
	(void)arg;
	free(n);
}

void chat_free(struct chat *c)
{
	th_free(&c->timers);
	idmap_foreach(&c->sessions, chat_session_free, NULL);
	idmap_free(&c->sessions);
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

static struct chat_session *chat_session_new(struct chat *c, const struct conf_backend *be)
{
	struct chat_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->chat = c;
	s->backend = be;
	s->ans.s = s;
	th_node_init(&s->ans.timer);
	return s;
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
	struct chat_session *s = chat_session_new(c, be);
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
	c->hooks.session_created(c->hooks.arg, &s->reply, x->sid, err);
	if (err)
		free(s);
	free(x);
}

int chat_session_create(struct chat *c, const struct conf_backend *be, const struct store_session *ss,
			const struct chat_reply *r)
{
	struct chat_create_ctx *x = calloc(1, sizeof(*x));
	struct chat_session *s = chat_session_new(c, be);
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

/* Sends a record to every worker subscribed to s. A worker whose ring and
 * backlog are both full loses its subscriptions to s: its clients resume
 * with Last-Event-ID once they notice. */
#define CHAT_BROADCAST(c, s, call)                                                         \
	do {                                                                               \
		for (uint32_t w_ = 0; w_ < (c)->out->nworkers; w_++) {                     \
			if (!(s)->refs[w_])                                                \
				continue;                                                  \
			struct chan_conn conn = { .worker = (uint16_t)w_, .slot = CHAN_SLOT_ALL }; \
			if (!(call)) {                                                     \
				LOG_WARN("worker %u backlog full: dropping its %u subscriptions to %s", \
					 w_, (s)->refs[w_], (s)->node.id);                 \
				(s)->refs[w_] = 0;                                         \
				(c)->stats.sub_drops++;                                    \
			}                                                                  \
		}                                                                          \
	} while (0)

static void chat_broadcast_status(struct chat *c, struct chat_session *s, const char *mid, const char *st)
{
	CHAT_BROADCAST(c, s, co_status(c->out, conn, s->node.id, mid, st));
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
	th_cancel(&c->timers, &a->timer);
	a->running = false;
	CHAT_BROADCAST(c, s, co_usage(c->out, conn, s->node.id, a->mid, u.prompt_tokens,
				     u.completion_tokens, u.cost_usd));
	CHAT_BROADCAST(c, s, co_done(c->out, conn, s->node.id, a->mid, chat_done_code(st), a->seq));
	if (store_message_status(c->st, s->node.id, a->mid, st, &u) < 0)
		LOG_ERROR("store: cannot end message %s", a->mid);
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
	a->running = true;
	a->streaming = false;
	chat_broadcast_status(c, s, a->mid, "queued");
	if (th_schedule(&c->timers, &a->timer, a->be.ops->next_due(&a->be)) < 0) {
		LOG_ERROR("timer heap full: failing message %s", a->mid);
		chat_answer_end(c, s, STORE_MSG_ERROR);
	}
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
		int len = a->be.ops->next(&a->be, now_ns, c->tokbuf[n]);
		if (len < 0)
			break;
		uint64_t t = sluice_now_ns();
		c->toks[n] = (struct co_tok){ .text = c->tokbuf[n], .len = (uint32_t)len, .created_ns = t };
		c->stoks[n] = (struct store_token){ .text = c->tokbuf[n], .len = (uint32_t)len,
						    .offset_ns = t - a->be.start_ns };
		n++;
	}
	if (n) {
		if (!a->streaming) {
			a->streaming = true;
			chat_broadcast_status(c, s, a->mid, "streaming");
			if (store_message_status(c->st, s->node.id, a->mid, STORE_MSG_STREAMING, NULL) < 0)
				LOG_ERROR("store: cannot mark message %s streaming", a->mid);
		}
		uint32_t first = a->seq + 1;
		CHAT_BROADCAST(c, s, co_tokens(c->out, conn, s->node.id, a->mid, first, c->toks, n));
		if (store_tokens_append(c->st, s->node.id, a->mid, c->stoks, n) < 0)
			LOG_ERROR("store: cannot append tokens to %s", a->mid);
		a->seq += n;
		c->stats.tokens += n;
	}
	uint64_t due = a->be.ops->next_due(&a->be);
	if (due == UINT64_MAX) {
		chat_answer_end(c, s, STORE_MSG_COMPLETE);
		return false;
	}
	if (th_schedule(&c->timers, &a->timer, due) < 0) {
		LOG_ERROR("timer heap full: failing message %s", a->mid);
		chat_answer_end(c, s, STORE_MSG_ERROR);
		return false;
	}
	return true;
}

uint64_t chat_run_timers(struct chat *c, uint64_t now_ns)
{
	struct th_node *t;
	/* An answer rescheduled into the past (more than CHAT_TURN_TOKENS due)
	 * waits for the next turn, so one answer cannot starve the loop. */
	uint32_t budget = c->timers.n;
	while (budget-- > 0 && (t = th_pop_due(&c->timers, now_ns)) != NULL) {
		struct chat_answer *a = CHAT_ANS(t);
		chat_answer_step(c, a->s, now_ns);
	}
	t = th_peek(&c->timers);
	return t ? t->deadline_ns : UINT64_MAX;
}

/* Sends tokens [from, to] of message mid to conn, read back from the store. */
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
			if (store_token_get(c->st, s->node.id, mid, from, &st) < 0)
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
			if (ri >= 0 && store_message_get(c->st, sid, (uint32_t)ri, &m) == 0)
				ok = chat_send_message(c, s, conn, &m, true, 0);
		}
	} else {
		if (store_message_get(c->st, sid, (uint32_t)idx, &m) < 0)
			return false;
		if (kind == CHAT_RESUME_SEQ) {
			ok = chat_send_message(c, s, conn, &m, false, rseq);
		} else if (kind == CHAT_RESUME_USAGE && m.status >= STORE_MSG_COMPLETE) {
			ok = co_done(c->out, conn, sid, m.id, chat_done_code(m.status), m.ntokens);
		}
		for (uint32_t i = (uint32_t)idx + 1; ok && i < n; i++) {
			if (store_message_get(c->st, sid, i, &m) < 0)
				return false;
			if (m.role == STORE_ROLE_ASSISTANT)
				ok = chat_send_message(c, s, conn, &m, true, 0);
		}
	}
	chat_sub_add(s, conn.worker);
	return ok;
}

void chat_sub_add(struct chat_session *s, uint32_t worker)
{
	if (worker < CHAN_MAX_WORKERS && s->refs[worker] < UINT32_MAX)
		s->refs[worker]++;
}

void chat_sub_del(struct chat_session *s, uint32_t worker)
{
	if (worker < CHAN_MAX_WORKERS && s->refs[worker] > 0)
		s->refs[worker]--;
}

static void chat_session_unsub(struct idmap_node *n, void *arg)
{
	(void)arg;
	struct chat_session *s = (struct chat_session *)n;
	memset(s->refs, 0, sizeof(s->refs));
}

void chat_drop_all_subs(struct chat *c)
{
	idmap_foreach(&c->sessions, chat_session_unsub, NULL);
}

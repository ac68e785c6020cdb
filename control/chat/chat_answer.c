/*
 * Messages and their answers: a posted message is stored, then its answer
 * is a backend call (backends/backends.h) fed the conversation's history.
 * What the backend reports is kept in memory and, once per loop turn (when
 * the channel output flushes), each answer's new tokens leave as one TOKENS
 * record per subscribed worker and one append to the store: nothing crosses
 * the channel per token. The end sends USAGE then DONE (with the error, when
 * there was one) and records status and usage.
 *
 * An answer whose last subscriber leaves goes on: it is stored, and a
 * client that comes back resumes it (docs/api.md "Resume").
 */
#include "chat/chat_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/synthetic.h"
#include "sluice/common.h"

/* Tokens an answer reserves room for when it starts. */
#define CHAT_TOKEN_HINT 64u

static void chat_flush_hook(void *arg);
static void chat_answer_end(struct chat *c, struct chat_session *s, enum store_msg_status st, const char *code,
			    const char *msg);

int chat_answer_init(struct chat *c)
{
	return co_on_flush(c->out, chat_flush_hook, c);
}

static void chat_pending_remove(struct chat *c, struct chat_answer *a)
{
	if (!a->pending_flush)
		return;
	for (struct chat_answer **pp = &c->pending; *pp; pp = &(*pp)->pnext) {
		if (*pp == a) {
			*pp = a->pnext;
			break;
		}
	}
	a->pnext = NULL;
	a->pending_flush = false;
}

void chat_answer_free(struct chat *c, struct chat_answer *a)
{
	if (a->call) {
		bk_call_cancel(a->call);
		a->call = NULL;
	}
	chat_pending_remove(c, a);
	free(a->text);
	free(a->toks);
	a->text = NULL;
	a->toks = NULL;
}

/* Room for n more tokens of len bytes in all. Grows only when an answer
 * runs past what it reserved, by doubling. */
static int chat_answer_reserve(struct chat_answer *a, uint32_t n, size_t len)
{
	uint32_t want = a->seq + n;
	if (want > a->tok_cap) {
		uint32_t cap = a->tok_cap ? a->tok_cap : want;
		while (cap < want)
			cap *= 2;
		struct chat_tok *t = realloc(a->toks, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		a->toks = t;
		a->tok_cap = cap;
	}
	size_t bytes = a->text_len + len;
	if (bytes > a->text_cap) {
		size_t cap = a->text_cap ? a->text_cap : bytes;
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

/* An ended answer stays in memory until the session's next message (struct
 * chat_answer): it keeps what it holds, not the reservation for a running
 * one (up to CHAT_TOKEN_HINT tokens, ~2 KiB), which a session that posts
 * once would otherwise hold for life. Shrinking cannot fail in a way that
 * matters: a refused realloc leaves the larger block. */
static void chat_answer_fit(struct chat_answer *a)
{
	/* At least one of each: readers of an empty answer still get a
	 * buffer, never NULL. */
	uint32_t ntok = a->seq ? a->seq : 1;
	size_t nbytes = a->text_len ? a->text_len : 1;
	if (a->toks && a->tok_cap > ntok) {
		struct chat_tok *t = realloc(a->toks, ntok * sizeof(*t));
		if (t) {
			a->toks = t;
			a->tok_cap = ntok;
		}
	}
	if (a->text && a->text_cap > nbytes) {
		char *t = realloc(a->text, nbytes);
		if (t) {
			a->text = t;
			a->text_cap = nbytes;
		}
	}
}

/* ---- the turn's batch ------------------------------------------------------- */

void chat_answer_flush(struct chat *c, struct chat_session *s)
{
	struct chat_answer *a = &s->ans;
	if (!a->pending_flush)
		return;
	chat_pending_remove(c, a);
	while (a->sent < a->seq) {
		uint32_t first = a->sent + 1;
		uint32_t n = a->seq - a->sent;
		if (n > CHAT_TURN_TOKENS)
			n = CHAT_TURN_TOKENS;
		size_t bytes = 0;
		for (uint32_t i = 0; i < n; i++) {
			const struct chat_tok *t = &a->toks[a->sent + i];
			bytes += t->len;
			c->toks[i] = (struct co_tok){ .text = a->text + t->off, .len = t->len,
						      .created_ns = a->start_ns + t->offset_ns };
			c->stoks[i] = (struct store_token){ .text = a->text + t->off, .len = t->len,
							    .offset_ns = t->offset_ns };
		}
		CHAT_BROADCAST(c, s, co_tokens(c->out, conn, s->node.id, a->mid, first, c->toks, n));
		if (store_tokens_append(c->st, s->node.id, a->mid, first, c->stoks, n) < 0)
			LOG_ERROR("store: cannot append tokens to %s", a->mid);
		const char *cut = c->hooks.answer_tokens
					  ? c->hooks.answer_tokens(c->hooks.arg, s, n, bytes, a->cut_msg,
								   sizeof(a->cut_msg))
					  : NULL;
		if (cut && !a->cut_code[0])
			snprintf(a->cut_code, sizeof(a->cut_code), "%s", cut);
		a->sent += n;
		c->stats.tokens += n;
		c->stats.token_batches++;
	}
}

/* An answer past its owner's budget ends now, like a cancel: the upstream
 * request closes in this loop turn, the tokens so far are kept, and done
 * error carries the limit's code. */
static void chat_answer_cut(struct chat *c, struct chat_session *s)
{
	struct chat_answer *a = &s->ans;
	bk_call_cancel(a->call);
	a->call = NULL;
	c->stats.answers_cut++;
	chat_answer_end(c, s, STORE_MSG_ERROR, a->cut_code, a->cut_msg);
}

/* Runs at the start of every output flush: the tokens of this turn go out,
 * and an answer they took over a budget is cut. A cut noted by a flush
 * outside this hook (a subscribe's) waits for the answer's next token. */
static void chat_flush_hook(void *arg)
{
	struct chat *c = arg;
	while (c->pending) {
		struct chat_session *s = c->pending->s;
		chat_answer_flush(c, s);
		if (s->ans.running && s->ans.cut_code[0])
			chat_answer_cut(c, s);
	}
}

void chat_answer_terms(struct chat *c, struct chat_session *s, struct co_terms *t)
{
	t->prompt_tokens = s->ans.prompt_est;
	t->prompt_cost = conf_model_cost(c->conf, s->model, s->ans.prompt_est, 0);
	t->cost_per_token = conf_model_cost(c->conf, s->model, 0, 1);
}

/* ---- what the backend reports --------------------------------------------- */

static void chat_on_status(void *arg, enum bk_status st, const char *backend)
{
	struct chat_session *s = arg;
	struct chat_answer *a = &s->ans;
	struct chat *c = s->chat;
	snprintf(a->backend, sizeof(a->backend), "%s", backend);
	if (st == BK_STATUS_WAITING) {
		if (!a->waiting && !a->streaming) {
			a->waiting = true;
			chat_broadcast_status(c, s, a->mid, "waiting_backend");
		}
		return;
	}
	if (a->streaming)
		return;
	a->streaming = true;
	struct co_terms terms;
	chat_answer_terms(c, s, &terms);
	CHAT_BROADCAST(c, s, co_status_streaming(c->out, conn, s->node.id, a->mid, &terms));
	a->status = STORE_MSG_STREAMING;
	/* The estimate is stored now, so an answer cut by a crash still has
	 * its prompt counted when the store marks it interrupted. */
	struct store_usage u = { .prompt_tokens = a->prompt_est };
	snprintf(u.backend, sizeof(u.backend), "%s", a->backend);
	if (store_message_status(c->st, s->node.id, a->mid, STORE_MSG_STREAMING, &u) < 0)
		LOG_ERROR("store: cannot mark message %s streaming", a->mid);
	chat_msg_event(c, s->node.id, a->mid, STORE_MSG_STREAMING);
}

static void chat_on_token(void *arg, const char *text, size_t len)
{
	struct chat_session *s = arg;
	struct chat_answer *a = &s->ans;
	struct chat *c = s->chat;
	if (chat_answer_reserve(a, 1, len) < 0) {
		LOG_ERROR("out of memory keeping answer %s", a->mid);
		bk_call_cancel(a->call);
		a->call = NULL;
		chat_answer_end(c, s, STORE_MSG_ERROR, "internal", "out of memory");
		return;
	}
	struct chat_tok *t = &a->toks[a->seq++];
	t->off = (uint32_t)a->text_len;
	t->len = (uint32_t)len;
	t->offset_ns = sluice_now_ns() - a->start_ns;
	memcpy(a->text + a->text_len, text, len);
	a->text_len += len;
	if (!a->pending_flush) {
		a->pending_flush = true;
		a->pnext = c->pending;
		c->pending = a;
	}
}

/* Chat answers are text: tool calls are for the OpenAI-compatible API. */
static void chat_on_delta(void *arg, const char *json, size_t len)
{
	(void)arg;
	(void)json;
	(void)len;
}

static void chat_on_usage(void *arg, uint32_t prompt_tokens, uint32_t completion_tokens)
{
	struct chat_session *s = arg;
	s->ans.usage_seen = true;
	s->ans.up = prompt_tokens;
	s->ans.uc = completion_tokens;
}

static void chat_on_end(void *arg, const struct bk_end *e)
{
	struct chat_session *s = arg;
	s->ans.call = NULL;
	switch (e->kind) {
	case BK_END_COMPLETE:
		chat_answer_end(s->chat, s, STORE_MSG_COMPLETE, NULL, NULL);
		return;
	case BK_END_INTERRUPTED:
		chat_answer_end(s->chat, s, STORE_MSG_INTERRUPTED, NULL, NULL);
		return;
	case BK_END_ERROR:
		chat_answer_end(s->chat, s, STORE_MSG_ERROR, e->code, e->message);
		return;
	}
}

static const struct bk_events chat_bk_events = {
	.status = chat_on_status,
	.token = chat_on_token,
	.delta = chat_on_delta,
	.usage = chat_on_usage,
	.end = chat_on_end,
};

/* ---- the end ------------------------------------------------------------------ */

/* Ends the running answer: its last tokens, USAGE, then DONE, to
 * subscribers and the store. Usage is the backend's count when it gave
 * one, else the estimate of the prompt and the tokens produced. */
static void chat_answer_end(struct chat *c, struct chat_session *s, enum store_msg_status st, const char *code,
			    const char *msg)
{
	struct chat_answer *a = &s->ans;
	chat_answer_flush(c, s);
	uint32_t pt = a->usage_seen ? a->up : a->prompt_est;
	uint32_t ct = a->usage_seen ? a->uc : a->seq;
	struct store_usage u = {
		.prompt_tokens = pt,
		.completion_tokens = ct,
		.cost_usd = conf_model_cost(c->conf, s->model, pt, ct),
	};
	snprintf(u.backend, sizeof(u.backend), "%s", a->backend);
	snprintf(u.key_id, sizeof(u.key_id), "%s", a->key_id);
	a->running = false;
	c->running--;
	chat_answer_fit(a);
	a->status = st;
	a->usage = u;
	chat_count_usage(c, &u);
	if (st == STORE_MSG_ERROR) {
		c->stats.answers_failed++;
		LOG_WARN("answer %s of %s failed: %s: %s", a->mid, s->node.id, code ? code : "error",
			 msg ? msg : "");
	}
	CHAT_BROADCAST(c, s, co_usage(c->out, conn, s->node.id, a->mid, u.prompt_tokens,
				     u.completion_tokens, u.cost_usd));
	CHAT_BROADCAST(c, s, co_done(c->out, conn, s->node.id, a->mid, chat_done_code(st), a->seq,
				    st == STORE_MSG_ERROR ? (code ? code : "backend_error") : NULL,
				    st == STORE_MSG_ERROR ? (msg ? msg : "the answer failed") : NULL));
	if (store_message_status(c->st, s->node.id, a->mid, st, &u) < 0)
		LOG_ERROR("store: cannot end message %s", a->mid);
	chat_msg_event(c, s->node.id, a->mid, st);
	if (c->hooks.answer_ended)
		c->hooks.answer_ended(c->hooks.arg, s);
	ev_publish(c->bus, &(struct ev){ .kind = EV_ANSWER_ENDED, .user = s->user, .session_id = s->node.id,
					 .message_id = a->mid, .status = store_msg_status_name(st) });
}

/* ---- history ------------------------------------------------------------------- */

/* A message's share of the context window: about four bytes per token,
 * plus the framing of a message. */
static uint32_t chat_est_tokens(size_t len)
{
	return (uint32_t)((len + 3) / 4) + 4;
}

/*
 * The messages an answer is given (docs/control.md "History"): the agent's
 * system prompt, then as many of the session's earlier messages as fit,
 * newest first, then the new user message; the system prompt and the new
 * message always go. They fit while the estimate (chat_est_tokens) of all
 * of them stays within three quarters of the model's context window, the
 * rest being left for the answer. Contents point into the store's read
 * snapshot: use them before the next store write. Returns the count, or -1.
 */
static int chat_history(struct chat *c, struct chat_session *s, struct bk_msg **out, uint32_t *words)
{
	const struct conf_agent *ag = conf_agent_find(c->conf, s->agent);
	const char *sys = ag ? ag->system_prompt : "";
	uint32_t n = store_message_count(c->st, s->node.id);
	if (n < 2)
		return -1;
	/* m[0 .. n] is what is sent; the history picked newest first waits
	 * in m[n + 1 ..] until its order is known. */
	struct bk_msg *m = calloc(2 * (size_t)n + 1, sizeof(*m));
	if (!m)
		return -1;
	struct bk_msg *picked = m + n + 1;
	struct conf_model terms;
	conf_model_terms(c->conf, s->model, &terms);
	uint64_t budget = (uint64_t)terms.context_window * 3 / 4;
	struct store_message um;
	if (store_message_get(c->st, s->node.id, n - 2, &um) < 0) {
		free(m);
		return -1;
	}
	uint64_t used = chat_est_tokens(um.content_len) + (sys[0] ? chat_est_tokens(strlen(sys)) : 0);
	/* Earlier messages, newest first. */
	uint32_t first = n - 2;
	for (uint32_t i = n - 2; i-- > 0;) {
		struct store_message h;
		if (store_message_get(c->st, s->node.id, i, &h) < 0)
			break;
		if (h.content_len == 0)
			continue;
		uint64_t cost = chat_est_tokens(h.content_len);
		if (used + cost > budget)
			break;
		used += cost;
		first--;
		picked[first] = (struct bk_msg){ .role = h.role == STORE_ROLE_USER ? BK_ROLE_USER : BK_ROLE_ASSISTANT,
						 .content = h.content, .len = h.content_len };
	}
	uint32_t k = 0;
	*words = 0;
	if (sys[0]) {
		m[k++] = (struct bk_msg){ .role = BK_ROLE_SYSTEM, .content = sys, .len = strlen(sys) };
		*words += syn_prompt_tokens(sys, strlen(sys));
	}
	for (uint32_t i = first; i < n - 2; i++) {
		if (!picked[i].content)
			continue;
		*words += syn_prompt_tokens(picked[i].content, picked[i].len);
		m[k++] = picked[i];
	}
	/* The store may have moved the contents' pages under m[] only on a
	 * write; none happened since they were read. */
	m[k++] = (struct bk_msg){ .role = BK_ROLE_USER, .content = um.content, .len = um.content_len };
	*words += syn_prompt_tokens(um.content, um.content_len);
	*out = m;
	return (int)k;
}

/* ---- messages ---------------------------------------------------------------- */

/* The answer starts: the backend call with the conversation's history. */
static void chat_answer_start(struct chat *c, struct chat_session *s)
{
	struct chat_answer *a = &s->ans;
	struct bk_msg *msgs = NULL;
	uint32_t words = 0;
	int n = chat_history(c, s, &msgs, &words);
	if (n < 0) {
		chat_answer_end(c, s, STORE_MSG_ERROR, "internal", "the conversation could not be read");
		return;
	}
	a->prompt_est = words;
	struct bk_request req = { .model = s->model, .msgs = msgs, .nmsgs = (uint32_t)n,
				  .start_ns = a->start_ns };
	int rc = 0;
	a->call = bk_call_start(c->bk, &req, &chat_bk_events, s, &rc);
	free(msgs);
	if (a->call)
		return;
	switch (rc) {
	case -ENOENT:
		chat_answer_end(c, s, STORE_MSG_ERROR, "unknown_model", "no backend serves this model");
		break;
	case -EAGAIN:
		chat_answer_end(c, s, STORE_MSG_ERROR, "overloaded",
				"every backend of this model is busy and its queue is full; retry later");
		break;
	case -ENETDOWN:
		chat_answer_end(c, s, STORE_MSG_ERROR, "backend_unavailable",
				"no backend of this model is reachable now");
		break;
	default:
		chat_answer_end(c, s, STORE_MSG_ERROR, "internal", "the answer could not be started");
	}
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
	a->start_ns = sluice_now_ns();
	a->seq = a->sent = 0;
	a->text_len = 0;
	a->status = STORE_MSG_QUEUED;
	memset(&a->usage, 0, sizeof(a->usage));
	a->have = true;
	a->running = true;
	c->running++;
	a->streaming = a->waiting = a->usage_seen = false;
	a->backend[0] = '\0';
	a->cut_code[0] = a->cut_msg[0] = '\0';
	chat_msg_event(c, s->node.id, a->mid, STORE_MSG_QUEUED);
	ev_publish(c->bus, &(struct ev){ .kind = EV_ANSWER_STARTED, .user = s->user, .session_id = s->node.id,
					 .message_id = a->mid });
	chat_broadcast_status(c, s, a->mid, "queued");
	chat_answer_start(c, s);
}

int chat_message_post(struct chat *c, struct chat_session *s, const char *content, size_t len,
		      const char *key_id, const struct chat_reply *r)
{
	if (s->ans.running || s->pending)
		return -EBUSY;
	if (!bk_model_served(c->bk, s->model))
		return -ENOENT;
	if (!bk_has_room(c->bk, s->model))
		return -EAGAIN;
	struct chat_answer *a = &s->ans;
	const struct conf_backend *be = conf_backend_for_model(c->conf, s->model);
	uint32_t hint = be && be->type == CONF_BACKEND_SYNTHETIC ? be->answer_tokens : CHAT_TOKEN_HINT;
	/* Most answers need only the hint, at most CHAT_TOKEN_HINT tokens of
	 * 16 bytes: reserved here, not per token (a longer answer grows by
	 * doubling). The buffers the previous answer was fitted to are reused:
	 * a session whose answers are short never holds the full hint. The
	 * previous answer's copy is dropped when this one is accepted. */
	uint32_t rsv = hint == 0 ? 1 : hint < CHAT_TOKEN_HINT ? hint : CHAT_TOKEN_HINT;
	a->have = false;
	a->seq = a->sent = 0;
	a->text_len = 0;
	int rc = chat_answer_reserve(a, rsv, rsv * 16u);
	if (rc < 0)
		return rc;
	snprintf(a->key_id, sizeof(a->key_id), "%s", key_id ? key_id : "");
	chat_new_id("m_", s->user_mid);
	chat_new_id("m_", a->mid);
	s->reply = *r;
	s->pending = true;
	rc = store_message_add(c->st, s->node.id, s->user_mid, content, len, a->mid, hint, a->key_id,
			       chat_message_stored, s);
	if (rc < 0)
		s->pending = false;
	return rc;
}

int chat_cancel(struct chat *c, struct chat_session *s, char mid[CHAN_ID_LEN])
{
	struct chat_answer *a = &s->ans;
	if (!a->running)
		return -ENOENT;
	memcpy(mid, a->mid, CHAN_ID_LEN);
	/* The upstream request closes now, in this loop turn. */
	bk_call_cancel(a->call);
	a->call = NULL;
	chat_answer_end(c, s, STORE_MSG_CANCELLED, NULL, NULL);
	return 0;
}

/* ---- reads with the latest answer from memory --------------------------- */

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

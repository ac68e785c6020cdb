/*
 * The in-memory store: everything lives in this process and dies with it.
 * A write is "durable" as soon as it is in memory, so completion callbacks run
 * before the write call returns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/idmap.h"

struct mem_tok {
	uint32_t off; /* into the message content */
	uint32_t len;
	uint64_t offset_ns;
};

struct mem_msg {
	char id[CHAN_ID_LEN];
	enum store_role role;
	enum store_msg_status status;
	struct store_usage usage;
	char *content;
	size_t len, cap;
	struct mem_tok *toks;
	uint32_t ntok, tokcap;
};

struct mem_sess {
	struct idmap_node node; /* first: the map hands back this pointer */
	struct store_session s;
	struct mem_msg *msgs;
	uint32_t nmsg, msgcap;
};

struct mem_store {
	struct store base; /* first: struct store * converts to this */
	struct idmap sessions;
};

static struct mem_sess *mem_sess(struct store *st, const char *sid)
{
	struct mem_store *m = (struct mem_store *)st;
	return (struct mem_sess *)idmap_find(&m->sessions, sid, strnlen(sid, CHAN_ID_LEN));
}

static struct mem_msg *mem_msg(struct mem_sess *s, const char *mid)
{
	/* Lookups are nearly always for the newest messages. */
	for (uint32_t i = s->nmsg; i-- > 0;)
		if (strncmp(s->msgs[i].id, mid, CHAN_ID_LEN) == 0)
			return &s->msgs[i];
	return NULL;
}

static void mem_msg_free(struct mem_msg *m)
{
	free(m->content);
	free(m->toks);
}

static void mem_sess_free(struct idmap_node *n, void *arg)
{
	(void)arg;
	struct mem_sess *s = (struct mem_sess *)n;
	for (uint32_t i = 0; i < s->nmsg; i++)
		mem_msg_free(&s->msgs[i]);
	free(s->msgs);
	free(s);
}

static void mem_close(struct store *st)
{
	struct mem_store *m = (struct mem_store *)st;
	idmap_foreach(&m->sessions, mem_sess_free, NULL);
	idmap_free(&m->sessions);
	free(m);
}

static int mem_session_create(struct store *st, const struct store_session *s,
			      store_done_fn done, void *arg)
{
	struct mem_store *m = (struct mem_store *)st;
	struct mem_sess *ms = calloc(1, sizeof(*ms));
	if (!ms)
		return -ENOMEM;
	ms->s = *s;
	if (idmap_insert(&m->sessions, &ms->node, s->id, strnlen(s->id, CHAN_ID_LEN)) < 0) {
		free(ms);
		return -EEXIST;
	}
	if (done)
		done(arg, 0);
	return 0;
}

static int mem_session_get(struct store *st, const char *sid, struct store_session *out)
{
	struct mem_sess *s = mem_sess(st, sid);
	if (!s)
		return -ENOENT;
	*out = s->s;
	return 0;
}

/* Ensures room for `extra` more bytes of content. */
static int mem_content_reserve(struct mem_msg *m, size_t extra)
{
	if (m->len + extra <= m->cap)
		return 0;
	size_t cap = m->cap ? m->cap : 64;
	while (cap < m->len + extra) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	char *c = realloc(m->content, cap);
	if (!c)
		return -ENOMEM;
	m->content = c;
	m->cap = cap;
	return 0;
}

static int mem_toks_reserve(struct mem_msg *m, uint32_t extra)
{
	if (m->ntok + extra <= m->tokcap)
		return 0;
	uint32_t cap = m->tokcap ? m->tokcap : 16;
	while (cap < m->ntok + extra) {
		if (cap > UINT32_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	struct mem_tok *t = realloc(m->toks, (size_t)cap * sizeof(*t));
	if (!t)
		return -ENOMEM;
	m->toks = t;
	m->tokcap = cap;
	return 0;
}

static int mem_message_add(struct store *st, const char *sid, const char *user_mid,
			   const char *content, size_t len, const char *asst_mid,
			   uint32_t hint_tokens, store_done_fn done, void *arg)
{
	struct mem_sess *s = mem_sess(st, sid);
	if (!s)
		return -ENOENT;
	if (strnlen(user_mid, CHAN_ID_LEN) == CHAN_ID_LEN || strnlen(asst_mid, CHAN_ID_LEN) == CHAN_ID_LEN)
		return -EINVAL;
	if (s->nmsg + 2 > s->msgcap) {
		uint32_t cap = s->msgcap ? s->msgcap * 2 : 8;
		struct mem_msg *v = realloc(s->msgs, (size_t)cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->msgs = v;
		s->msgcap = cap;
	}
	struct mem_msg u = { .role = STORE_ROLE_USER, .status = STORE_MSG_COMPLETE };
	struct mem_msg a = { .role = STORE_ROLE_ASSISTANT, .status = STORE_MSG_QUEUED };
	memcpy(u.id, user_mid, strnlen(user_mid, CHAN_ID_LEN));
	memcpy(a.id, asst_mid, strnlen(asst_mid, CHAN_ID_LEN));
	/* Reserve the answer's expected size up front so appending tokens does
	 * not reallocate on the way. */
	if (mem_content_reserve(&u, len ? len : 1) < 0 ||
	    mem_content_reserve(&a, (size_t)hint_tokens * 8 + 1) < 0 ||
	    mem_toks_reserve(&a, hint_tokens ? hint_tokens : 1) < 0)
		goto fail;
	memcpy(u.content, content, len);
	u.len = len;
	s->msgs[s->nmsg++] = u;
	s->msgs[s->nmsg++] = a;
	if (done)
		done(arg, 0);
	return 0;
fail:
	mem_msg_free(&u);
	mem_msg_free(&a);
	return -ENOMEM;
}

static uint32_t mem_message_count(struct store *st, const char *sid)
{
	struct mem_sess *s = mem_sess(st, sid);
	return s ? s->nmsg : 0;
}

static int mem_message_get(struct store *st, const char *sid, uint32_t idx, struct store_message *out)
{
	struct mem_sess *s = mem_sess(st, sid);
	if (!s || idx >= s->nmsg)
		return -ENOENT;
	const struct mem_msg *m = &s->msgs[idx];
	memcpy(out->id, m->id, CHAN_ID_LEN);
	out->role = m->role;
	out->status = m->status;
	out->ntokens = m->ntok;
	out->usage = m->usage;
	out->content = m->content;
	out->content_len = m->len;
	return 0;
}

static int64_t mem_message_find(struct store *st, const char *sid, const char *mid)
{
	struct mem_sess *s = mem_sess(st, sid);
	if (!s)
		return -1;
	struct mem_msg *m = mem_msg(s, mid);
	return m ? (int64_t)(m - s->msgs) : -1;
}

static int mem_tokens_append(struct store *st, const char *sid, const char *mid,
			     const struct store_token *t, uint32_t n)
{
	struct mem_sess *s = mem_sess(st, sid);
	struct mem_msg *m = s ? mem_msg(s, mid) : NULL;
	if (!m)
		return -ENOENT;
	size_t bytes = 0;
	for (uint32_t i = 0; i < n; i++)
		bytes += t[i].len;
	if (m->len + bytes > UINT32_MAX)
		return -EFBIG;
	if (mem_content_reserve(m, bytes) < 0 || mem_toks_reserve(m, n) < 0)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		memcpy(m->content + m->len, t[i].text, t[i].len);
		m->toks[m->ntok++] = (struct mem_tok){
			.off = (uint32_t)m->len, .len = t[i].len, .offset_ns = t[i].offset_ns };
		m->len += t[i].len;
	}
	return 0;
}

static int mem_token_get(struct store *st, const char *sid, const char *mid, uint32_t seq,
			 struct store_token *out)
{
	struct mem_sess *s = mem_sess(st, sid);
	struct mem_msg *m = s ? mem_msg(s, mid) : NULL;
	if (!m || seq == 0 || seq > m->ntok)
		return -ENOENT;
	const struct mem_tok *t = &m->toks[seq - 1];
	out->text = m->content + t->off;
	out->len = t->len;
	out->offset_ns = t->offset_ns;
	return 0;
}

static int mem_message_status(struct store *st, const char *sid, const char *mid,
			      enum store_msg_status status, const struct store_usage *usage)
{
	struct mem_sess *s = mem_sess(st, sid);
	struct mem_msg *m = s ? mem_msg(s, mid) : NULL;
	if (!m)
		return -ENOENT;
	m->status = status;
	if (usage)
		m->usage = *usage;
	return 0;
}

static const struct store_ops mem_ops = {
	.close = mem_close,
	.session_create = mem_session_create,
	.session_get = mem_session_get,
	.message_add = mem_message_add,
	.message_count = mem_message_count,
	.message_get = mem_message_get,
	.message_find = mem_message_find,
	.tokens_append = mem_tokens_append,
	.token_get = mem_token_get,
	.message_status = mem_message_status,
};

struct store *store_mem_open(void)
{
	struct mem_store *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	if (idmap_init(&m->sessions, 1024) < 0) {
		free(m);
		return NULL;
	}
	m->base.ops = &mem_ops;
	return &m->base;
}

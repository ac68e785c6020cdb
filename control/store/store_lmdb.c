/*
 * The LMDB store: environment, the writer thread with group commit,
 * completion delivery on the control loop, reads' snapshot on the loop
 * thread, backup, stats, open and close. The databases' record layouts and
 * operations are in one file per family (store_lmdb_conv.c, _msg.c,
 * _ident.c, _schema.c; store_lmdb_int.h lists them); docs/storage.md
 * describes all of it.
 *
 * Threads: the loop thread queues writes (a mutex held for a memcpy) and
 * reads through its own read transaction; the writer thread takes the whole
 * queue, applies it in one write transaction and commits; a backup thread
 * runs mdb_env_copy2. Completions travel back through an eventfd.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loop/cp_loop.h"
#include "sluice/log.h"
#include "store/store_lmdb_int.h"

static const char *const lm_db_names[LM_NDB] = {
	[LM_USERS] = "users",
	[LM_APIKEYS] = "api_keys",
	[LM_AUTH] = "auth",
	[LM_CONVS] = "conversations",
	[LM_CONVS_BY_USER] = "conversations_by_user",
	[LM_MSGS] = "messages",
	[LM_TOKENS] = "tokens",
	[LM_EVENTS] = "events",
	[LM_META] = "meta",
	[LM_USAGE] = "usage",
	[LM_LIMITS] = "limits",
};

int lm_errno(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_MAP_FULL:
		return -ENOSPC;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	default:
		return rc > 0 ? -rc : -EIO;
	}
}

int64_t lm_unix_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- byte buffers ------------------------------------------------------ */

static int lm_buf_reserve(struct lm_buf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	uint8_t *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Read results that must outlive one call (a running answer's content put
 * together from its tokens) live in chunks that never move, so earlier
 * pointers stay valid while later reads add more. */
void *lm_arena_alloc(struct lm_store *s, size_t n)
{
	struct lm_chunk *c = s->arena;
	if (c && c->cap - c->used >= n) {
		void *p = c->data + c->used;
		c->used += n;
		return p;
	}
	size_t cap = n > LM_CHUNK ? n : LM_CHUNK;
	c = malloc(sizeof(*c) + cap);
	if (!c)
		return NULL;
	c->cap = cap;
	c->used = n;
	c->next = s->arena;
	s->arena = c;
	return c->data;
}

static void lm_arena_reset(struct lm_store *s)
{
	struct lm_chunk *c = s->arena;
	if (!c)
		return;
	/* Keep one chunk of the usual size: reads come back every turn. */
	while (c->next) {
		struct lm_chunk *n = c->next;
		free(c);
		c = n;
	}
	if (c->cap > LM_CHUNK) {
		free(c);
		s->arena = NULL;
		return;
	}
	c->used = 0;
	s->arena = c;
}

/* ---- the loop side: read transaction, completions ---------------------- */

static void lm_poke(struct lm_store *s)
{
	uint64_t one = 1;
	if (write(s->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		LOG_ERROR("store: eventfd write: %s", strerror(errno));
}

MDB_txn *lm_rtxn(struct lm_store *s)
{
	if (s->rlive)
		return s->rtxn;
	int rc = s->rtxn ? mdb_txn_renew(s->rtxn) : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
	if (rc) {
		LOG_ERROR("store: read transaction: %s", mdb_strerror(rc));
		if (s->rtxn) {
			mdb_txn_abort(s->rtxn);
			s->rtxn = NULL;
		}
		return NULL;
	}
	s->rlive = true;
	/* The snapshot is dropped when the loop next looks at its fds, so it
	 * never pins old pages or hides commits for longer than one turn. */
	lm_poke(s);
	return s->rtxn;
}

/* Ends the read snapshot: pointers handed out by reads die here. */
static void lm_rend(struct lm_store *s)
{
	if (s->rlive) {
		mdb_txn_reset(s->rtxn);
		s->rlive = false;
	}
	lm_arena_reset(s);
}

/* Runs the callbacks of committed writes and finished backups (loop thread). */
static void lm_deliver(struct lm_store *s)
{
	lm_rend(s);
	for (;;) {
		struct lm_done batch[64];
		pthread_mutex_lock(&s->mu);
		uint32_t n = s->ndone < SLUICE_ARRAY_LEN(batch) ? s->ndone : (uint32_t)SLUICE_ARRAY_LEN(batch);
		if (!n) {
			pthread_mutex_unlock(&s->mu);
			break;
		}
		memcpy(batch, s->done, n * sizeof(*batch));
		memmove(s->done, s->done + n, (s->ndone - n) * sizeof(*batch));
		s->ndone -= n;
		s->acked_inflight -= n;
		pthread_mutex_unlock(&s->mu);
		for (uint32_t i = 0; i < n; i++)
			batch[i].fn(batch[i].arg, batch[i].err);
	}
}

static void lm_on_event(void *arg, int fd, uint32_t events)
{
	struct lm_store *s = arg;
	(void)fd;
	(void)events;
	uint64_t v;
	if (read(s->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		LOG_ERROR("store: eventfd read: %s", strerror(errno));
	lm_deliver(s);
}

void store_lmdb_flush(struct store *st)
{
	struct lm_store *s = (struct lm_store *)st;
	pthread_mutex_lock(&s->mu);
	uint64_t gen = ++s->flush_req;
	pthread_cond_signal(&s->cv);
	while (s->flush_done < gen)
		pthread_cond_wait(&s->cv_done, &s->mu);
	pthread_mutex_unlock(&s->mu);
	lm_deliver(s);
}

/*
 * Makes room for one more promised completion (mutex held): room for every
 * completion is made when it is promised, so the writer and the backup
 * thread never allocate and a committed write never loses its callback.
 */
static int lm_done_reserve(struct lm_store *s)
{
	if (s->acked_inflight + 1 <= s->done_cap)
		return 0;
	uint32_t cap = s->done_cap ? s->done_cap * 2 : 64;
	struct lm_done *d = realloc(s->done, cap * sizeof(*d));
	if (!d)
		return -ENOMEM;
	s->done = d;
	s->done_cap = cap;
	return 0;
}

/*
 * Starts queueing one write: returns the op with the mutex held (release
 * with lm_enqueue_end), or NULL when memory ran out. `head` is the size of
 * the op-specific part, `payload` the bytes that follow it.
 */
struct lm_op *lm_enqueue_begin(struct lm_store *s, uint16_t type, size_t head, size_t payload,
			       store_done_fn done, void *arg)
{
	lm_rend(s);
	size_t hsize = LM_ALIGN8(offsetof(struct lm_op, u) + head);
	size_t size = LM_ALIGN8(hsize + payload);
	if (size > UINT32_MAX)
		return NULL;
	pthread_mutex_lock(&s->mu);
	if (lm_buf_reserve(&s->q, size) < 0)
		goto fail;
	if (done && lm_done_reserve(s) < 0)
		goto fail;
	struct lm_op *op = (struct lm_op *)(s->q.p + s->q.len);
	memset(op, 0, hsize);
	op->size = (uint32_t)size;
	op->hsize = (uint16_t)hsize;
	op->type = type;
	op->done = done;
	op->arg = arg;
	op->t_ns = lm_unix_ns();
	return op;
fail:
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

void lm_enqueue_end(struct lm_store *s, struct lm_op *op)
{
	s->q.len += op->size;
	s->q_ops++;
	if (op->done) {
		s->acked_inflight++;
		s->q_acked = true;
	} else if (!s->q_unacked) {
		s->q_unacked = true;
		s->q_deadline_ns = sluice_now_ns() + (uint64_t)s->commit_ms * 1000000ull;
	}
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

int lm_enqueue(struct lm_store *s, const struct lm_op *op, size_t usize, const void *payload, size_t n)
{
	struct lm_op *q = lm_enqueue_begin(s, op->type, usize, n, op->done, op->arg);
	if (!q)
		return -ENOMEM;
	q->flag = op->flag;
	q->status = op->status;
	memcpy(&q->u, &op->u, usize);
	q->n = (uint32_t)n;
	if (n)
		memcpy(lm_op_payload(q), payload, n);
	lm_enqueue_end(s, q);
	return 0;
}

/* ---- the writer thread ------------------------------------------------- */

/* What the writer does with each op type, how a lost one is logged, and
 * whether it brings new data (refused once only the reserve is left) or
 * belongs to what was accepted before (tokens and the end of an answer,
 * the trail, deletes: these may use the reserve). */
static const struct {
	const char *name;
	int (*apply)(struct lm_store *s, MDB_txn *t, struct lm_op *op);
	bool new_data;
} lm_op_kinds[] = {
	[LM_OP_SESSION_CREATE] = { "session create", lm_conv_w_create, true },
	[LM_OP_SESSION_UPDATE] = { "session update", lm_conv_w_update, true },
	[LM_OP_SESSION_DELETE] = { "session delete", lm_conv_w_delete, false },
	[LM_OP_MESSAGE_ADD] = { "message add", lm_msg_w_add, true },
	[LM_OP_TOKENS] = { "tokens", lm_msg_w_tokens, false },
	[LM_OP_STATUS] = { "message status", lm_msg_w_status, false },
	[LM_OP_USER_PUT] = { "user put", lm_ident_w_user_put, true },
	[LM_OP_USER_DEL] = { "user delete", lm_ident_w_user_del, false },
	[LM_OP_APIKEY_PUT] = { "api key put", lm_ident_w_apikey_put, true },
	[LM_OP_APIKEY_DEL] = { "api key delete", lm_ident_w_apikey_del, false },
	[LM_OP_AUTH_PUT] = { "auth put", lm_ident_w_auth_put, true },
	[LM_OP_AUTH_DEL] = { "auth delete", lm_ident_w_auth_del, false },
	[LM_OP_EVENT] = { "event", lm_conv_w_event, false },
	[LM_OP_LIMITS_PUT] = { "limits put", lm_limits_w_put, true },
};

/* Pages on LMDB's free list in t (what mdb_stat -f counts): each record
 * is a page-number list whose first word is its length. */
static uint64_t lm_free_pages(MDB_txn *t)
{
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t n = 0;
	if (mdb_cursor_open(t, 0, &cur))
		return 0;
	while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
		size_t cnt;
		if (v.mv_size >= sizeof(cnt)) {
			memcpy(&cnt, v.mv_data, sizeof(cnt));
			n += cnt;
		}
	}
	mdb_cursor_close(cur);
	return n;
}

/* True when the map has no more than the reserve left, as of the start of
 * batch transaction t: then new data waits for space (-ENOSPC, 503
 * store_full) while an accepted answer can still finish. The high-water
 * mark decides alone while it is far from the limit, so the free list is
 * walked only near it. */
static bool lm_reserve_reached(struct lm_store *s, MDB_txn *t)
{
	MDB_envinfo info;
	MDB_stat ms;
	if (s->reserve == 0 || mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &ms))
		return false;
	uint64_t limit = info.me_mapsize - s->reserve;
	uint64_t used = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	if (used <= limit)
		return false;
	uint64_t free_b = lm_free_pages(t) * ms.ms_psize;
	return used - (free_b < used ? free_b : used) > limit;
}

static const char *lm_op_name(uint16_t type)
{
	return type < SLUICE_ARRAY_LEN(lm_op_kinds) ? lm_op_kinds[type].name : "unknown";
}

/* Applies one queued write inside t: 0, a negative errno (nothing of this op
 * was written), or LM_FATAL (t is broken; s->wrc says why). */
static int lm_apply(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	if (op->type >= SLUICE_ARRAY_LEN(lm_op_kinds) || !lm_op_kinds[op->type].apply)
		return -EINVAL;
	return lm_op_kinds[op->type].apply(s, t, op);
}

/* Applies ops [begin, end) of the batch; false when the transaction broke. */
static bool lm_apply_all(struct lm_store *s, MDB_txn *t, uint8_t *begin, uint8_t *end)
{
	bool reserve = lm_reserve_reached(s, t);
	for (uint8_t *p = begin; p < end; p += ((struct lm_op *)p)->size) {
		struct lm_op *op = (struct lm_op *)p;
		s->wrc = 0;
		if (reserve && op->type < SLUICE_ARRAY_LEN(lm_op_kinds) && lm_op_kinds[op->type].new_data) {
			op->result = -ENOSPC;
			s->wstats.reserve_refusals++;
			continue;
		}
		op->result = lm_apply(s, t, op);
		if (op->result == LM_FATAL)
			return false;
	}
	return true;
}

static void lm_commit_timed(struct lm_store *s, MDB_txn *t, int *rc)
{
	uint64_t t0 = sluice_now_ns();
	*rc = mdb_txn_commit(t);
	s->wstats.last_commit_ns = sluice_now_ns() - t0;
}

/*
 * One group commit: every queued op in one transaction. When that breaks
 * (the map is full, the disk fails), each op gets a transaction of its own,
 * so only the ops that cannot be written fail.
 */
static void lm_write_batch(struct lm_store *s, uint8_t *begin, uint8_t *end, uint32_t nops)
{
	MDB_txn *t;
	int rc = mdb_txn_begin(s->env, NULL, 0, &t);
	if (rc == 0) {
		if (lm_apply_all(s, t, begin, end)) {
			lm_commit_timed(s, t, &rc);
			if (rc == 0) {
				s->wstats.commits++;
				if (nops > 1)
					s->wstats.commit_batches++;
				return;
			}
		} else {
			rc = s->wrc;
			mdb_txn_abort(t);
		}
	}
	LOG_WARN("store: group commit of %u writes failed (%s): writing them one by one", nops,
		 mdb_strerror(rc));
	for (uint8_t *p = begin; p < end; p += ((struct lm_op *)p)->size) {
		struct lm_op *op = (struct lm_op *)p;
		rc = mdb_txn_begin(s->env, NULL, 0, &t);
		if (rc) {
			op->result = lm_errno(rc);
			continue;
		}
		s->wrc = 0;
		if (op->type < SLUICE_ARRAY_LEN(lm_op_kinds) && lm_op_kinds[op->type].new_data &&
		    lm_reserve_reached(s, t)) {
			op->result = -ENOSPC;
			s->wstats.reserve_refusals++;
			mdb_txn_abort(t);
			continue;
		}
		op->result = lm_apply(s, t, op);
		if (op->result == LM_FATAL) {
			op->result = lm_errno(s->wrc);
			mdb_txn_abort(t);
			continue;
		}
		lm_commit_timed(s, t, &rc);
		if (rc) {
			op->result = lm_errno(rc);
			continue;
		}
		s->wstats.commits++;
	}
}

/* Counts the outcome and queues the callbacks (mutex held). */
static void lm_settle(struct lm_store *s, uint8_t *begin, uint8_t *end)
{
	for (uint8_t *p = begin; p < end; p += ((struct lm_op *)p)->size) {
		struct lm_op *op = (struct lm_op *)p;
		if (op->result == 0) {
			s->wstats.writes++;
		} else {
			s->wstats.write_errors++;
			if (!op->done)
				LOG_ERROR("store: unacknowledged write (%s) lost: %s", lm_op_name(op->type),
					  strerror(-op->result));
		}
		if (op->done)
			s->done[s->ndone++] = (struct lm_done){ .fn = op->done, .arg = op->arg, .err = op->result };
	}
}

static void lm_deadline_ts(uint64_t mono_ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(mono_ns / 1000000000ull);
	ts->tv_nsec = (long)(mono_ns % 1000000000ull);
}

static void *lm_writer(void *arg)
{
	struct lm_store *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		bool flush = s->flush_req != s->flush_done;
		if (s->q.len == 0 && !flush) {
			if (s->stop)
				break;
			pthread_cond_wait(&s->cv, &s->mu);
			continue;
		}
		if (s->q.len && !s->q_acked && !flush && !s->stop) {
			/* Only batched writes: wait for their deadline, or for an
			 * acknowledged write that takes them along. */
			struct timespec ts;
			lm_deadline_ts(s->q_deadline_ns, &ts);
			if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
				continue;
		}
		struct lm_buf w = s->q;
		s->q = s->w;
		s->q.len = 0;
		uint32_t nops = s->q_ops;
		s->q_ops = 0;
		s->q_acked = s->q_unacked = false;
		uint64_t gen = s->flush_req;
		pthread_mutex_unlock(&s->mu);

		if (w.len)
			lm_write_batch(s, w.p, w.p + w.len, nops);

		pthread_mutex_lock(&s->mu);
		if (w.len)
			lm_settle(s, w.p, w.p + w.len);
		w.len = 0;
		s->w = w;
		s->flush_done = gen;
		pthread_cond_broadcast(&s->cv_done);
		pthread_mutex_unlock(&s->mu);
		lm_poke(s);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- backup ------------------------------------------------------------ */

static void *lm_backup_main(void *arg)
{
	struct lm_store *s = arg;
	uint64_t t0 = sluice_now_ns();
	int rc = mdb_env_copy2(s->env, s->backup_path, MDB_CP_COMPACT);
	if (rc)
		LOG_ERROR("store: backup to %s failed: %s", s->backup_path, mdb_strerror(rc));
	else
		LOG_INFO("store: backup to %s done in %" PRIu64 " ms", s->backup_path,
			 (sluice_now_ns() - t0) / 1000000u);
	pthread_mutex_lock(&s->mu);
	s->done[s->ndone++] = (struct lm_done){ .fn = s->backup_done, .arg = s->backup_arg,
						.err = lm_errno(rc) };
	s->backup_running = false;
	pthread_mutex_unlock(&s->mu);
	lm_poke(s);
	return NULL;
}

/* 0 when path is an empty directory or was absent and is now created. */
static int lm_backup_target(const char *path)
{
	if (mkdir(path, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			rc = -ENOTEMPTY;
			break;
		}
	}
	closedir(d);
	return rc;
}

static int lm_backup(struct store *st, const char *path, store_done_fn done, void *arg)
{
	struct lm_store *s = (struct lm_store *)st;
	if (!done || !path || !*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(s->backup_path))
		return -ENAMETOOLONG;
	pthread_mutex_lock(&s->mu);
	bool busy = s->backup_running;
	pthread_mutex_unlock(&s->mu);
	if (busy)
		return -EBUSY;
	if (s->backup_joinable) {
		pthread_join(s->backup_thread, NULL);
		s->backup_joinable = false;
	}
	int rc = lm_backup_target(path);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&s->mu);
	if (lm_done_reserve(s) < 0) {
		pthread_mutex_unlock(&s->mu);
		return -ENOMEM;
	}
	s->acked_inflight++;
	s->backup_running = true;
	pthread_mutex_unlock(&s->mu);
	snprintf(s->backup_path, sizeof(s->backup_path), "%s", path);
	s->backup_done = done;
	s->backup_arg = arg;
	rc = pthread_create(&s->backup_thread, NULL, lm_backup_main, s);
	if (rc) {
		pthread_mutex_lock(&s->mu);
		s->acked_inflight--;
		s->backup_running = false;
		pthread_mutex_unlock(&s->mu);
		return -rc;
	}
	s->backup_joinable = true;
	return 0;
}

/* ---- stats ------------------------------------------------------------- */

static int lm_stats(struct store *st, struct store_stats *out)
{
	struct lm_store *s = (struct lm_store *)st;
	memset(out, 0, sizeof(*out));
	MDB_envinfo info;
	MDB_stat ms;
	if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &ms))
		return -EIO;
	out->map_size = info.me_mapsize;
	out->map_used = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	/* A transaction of its own: stats are rare and should be current,
	 * not as old as the loop's snapshot. */
	MDB_txn *t;
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t))
		return -EIO;
	uint64_t *dst[LM_NDB] = {
		[LM_USERS] = &out->users,       [LM_APIKEYS] = &out->api_keys,
		[LM_AUTH] = &out->auth_sessions, [LM_CONVS] = &out->sessions,
		[LM_MSGS] = &out->messages,     [LM_TOKENS] = &out->tokens,
		[LM_EVENTS] = &out->events,     [LM_USAGE] = &out->usage,
	};
	for (int i = 0; i < LM_NDB; i++) {
		if (!dst[i])
			continue;
		if (mdb_stat(t, s->dbi[i], &ms)) {
			mdb_txn_abort(t);
			return -EIO;
		}
		*dst[i] = ms.ms_entries;
	}
	mdb_txn_abort(t);
	pthread_mutex_lock(&s->mu);
	out->commits = s->wstats.commits;
	out->commit_batches = s->wstats.commit_batches;
	out->writes = s->wstats.writes;
	out->write_errors = s->wstats.write_errors;
	out->last_commit_ns = s->wstats.last_commit_ns;
	out->reserve_refusals = s->wstats.reserve_refusals;
	out->reserve = s->reserve;
	pthread_mutex_unlock(&s->mu);
	out->schema_version = LM_SCHEMA_VERSION;
	return 0;
}

/* ---- open, close ------------------------------------------------------- */

/* Creates dir and its missing parents, private to this user. */
static int lm_mkdirs(const char *dir)
{
	char p[CONF_PATH_MAX];
	if (strlen(dir) >= sizeof(p))
		return -ENAMETOOLONG;
	strcpy(p, dir);
	for (char *c = p + 1; *c; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -errno;
		*c = '/';
	}
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The open transaction: databases, schema, repair of a crashed run. */
static int lm_prepare(struct lm_store *s, char *err, size_t errlen)
{
	MDB_txn *t;
	int rc = mdb_txn_begin(s->env, NULL, 0, &t);
	if (rc) {
		snprintf(err, errlen, "store %s: %s", s->dir, mdb_strerror(rc));
		return -1;
	}
	MDB_dbi main;
	MDB_stat ms;
	rc = mdb_dbi_open(t, NULL, 0, &main);
	if (!rc)
		rc = mdb_stat(t, main, &ms);
	if (rc) {
		snprintf(err, errlen, "store %s: %s", s->dir, mdb_strerror(rc));
		goto fail;
	}
	bool was_empty = ms.ms_entries == 0;
	for (int i = 0; i < LM_NDB; i++) {
		rc = mdb_dbi_open(t, lm_db_names[i], MDB_CREATE, &s->dbi[i]);
		if (rc) {
			snprintf(err, errlen, "store %s: database %s: %s", s->dir, lm_db_names[i],
				 mdb_strerror(rc));
			goto fail;
		}
	}
	if (lm_schema_open(s, t, was_empty, err, errlen) < 0)
		goto fail;
	rc = lm_conv_events_init(s, t);
	if (rc) {
		snprintf(err, errlen, "store %s: events: %s", s->dir, mdb_strerror(rc));
		goto fail;
	}
	uint32_t fixed = 0;
	rc = lm_msg_repair(s, t, &fixed);
	if (rc) {
		snprintf(err, errlen, "store %s: marking interrupted answers: %s", s->dir, mdb_strerror(rc));
		goto fail;
	}
	rc = mdb_txn_commit(t);
	if (rc) {
		snprintf(err, errlen, "store %s: %s", s->dir, mdb_strerror(rc));
		return -1;
	}
	if (fixed)
		LOG_INFO("store: %u answers of the previous run marked interrupted", fixed);
	return 0;
fail:
	mdb_txn_abort(t);
	return -1;
}

static const struct store_ops lm_ops;

static void lm_close(struct store *st)
{
	struct lm_store *s = (struct lm_store *)st;
	if (s->writer_started) {
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		pthread_cond_signal(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->writer, NULL);
	}
	if (s->backup_joinable)
		pthread_join(s->backup_thread, NULL);
	/* Everything queued is committed now; its callbacks still run, so
	 * their owners free what they passed as arg. */
	lm_deliver(s);
	if (s->loop && s->efd >= 0)
		cpl_del_fd(s->loop, s->efd);
	if (s->rtxn)
		mdb_txn_abort(s->rtxn);
	lm_arena_reset(s);
	free(s->arena);
	if (s->env)
		mdb_env_close(s->env);
	if (s->efd >= 0)
		close(s->efd);
	if (s->sync_init) {
		pthread_cond_destroy(&s->cv);
		pthread_cond_destroy(&s->cv_done);
		pthread_mutex_destroy(&s->mu);
	}
	free(s->q.p);
	free(s->w.p);
	free(s->done);
	free(s);
}

static int lm_sync_init(struct lm_store *s)
{
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca))
		return -1;
	/* Deadlines are CLOCK_MONOTONIC, like the rest of sluice. */
	int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_mutex_init(&s->mu, NULL);
	if (!rc && (rc = pthread_cond_init(&s->cv, &ca)) != 0)
		pthread_mutex_destroy(&s->mu);
	if (!rc && (rc = pthread_cond_init(&s->cv_done, NULL)) != 0) {
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
	}
	pthread_condattr_destroy(&ca);
	return rc ? -1 : 0;
}

struct store *store_lmdb_open(const char *dir, struct cp_loop *loop, const struct sluice_conf *conf,
			      char *err, size_t errlen)
{
	struct lm_store *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "store: out of memory");
		return NULL;
	}
	s->base.ops = &lm_ops;
	s->efd = -1;
	s->conf = conf;
	s->commit_ms = conf->token_commit_ms ? conf->token_commit_ms : 1;
	/* At most a quarter of the map, so a small store still takes data. */
	s->reserve = (uint64_t)conf->store_reserve_mb << 20;
	if (s->reserve > ((uint64_t)conf->store_map_mb << 20) / 4)
		s->reserve = ((uint64_t)conf->store_map_mb << 20) / 4;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	int rc = lm_mkdirs(dir);
	if (rc < 0) {
		snprintf(err, errlen, "store %s: cannot create the directory: %s", dir, strerror(-rc));
		goto fail;
	}
	rc = mdb_env_create(&s->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(s->env, LM_NDB + 2);
	if (!rc)
		rc = mdb_env_set_mapsize(s->env, (size_t)conf->store_map_mb << 20);
	if (!rc)
		rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600);
	if (rc) {
		snprintf(err, errlen, "store %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	int dead = 0;
	/* A killed run leaves its reader slot behind. */
	if (mdb_reader_check(s->env, &dead) == 0 && dead)
		LOG_INFO("store: cleared %d stale reader slots", dead);
	if (lm_prepare(s, err, errlen) < 0)
		goto fail;
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0) {
		snprintf(err, errlen, "store: eventfd: %s", strerror(errno));
		goto fail;
	}
	if (lm_sync_init(s) < 0) {
		snprintf(err, errlen, "store: cannot initialise the writer's mutex");
		goto fail;
	}
	s->sync_init = true;
	rc = pthread_create(&s->writer, NULL, lm_writer, s);
	if (rc) {
		snprintf(err, errlen, "store: writer thread: %s", strerror(rc));
		goto fail;
	}
	s->writer_started = true;
	if (cpl_add_fd(loop, s->efd, CPL_READ, lm_on_event, s) < 0) {
		snprintf(err, errlen, "store: cannot watch the completion eventfd: %s", strerror(errno));
		goto fail;
	}
	s->loop = loop;
	LOG_INFO("store: %s open (schema %u, map %u MiB, tokens committed every %u ms)", dir,
		 LM_SCHEMA_VERSION, conf->store_map_mb, s->commit_ms);
	return &s->base;
fail:
	lm_close(&s->base);
	return NULL;
}

static const struct store_ops lm_ops = {
	.close = lm_close,
	.session_create = lm_conv_create,
	.session_get = lm_conv_get,
	.message_add = lm_msg_add,
	.message_count = lm_msg_count,
	.message_get = lm_msg_get,
	.message_find = lm_msg_find,
	.tokens_append = lm_msg_tokens_append,
	.token_get = lm_msg_token_get,
	.message_status = lm_msg_status,
	.usage_list = lm_usage_list,
	.session_list = lm_conv_list,
	.session_update = lm_conv_update,
	.session_delete = lm_conv_delete,
	.user_put = lm_ident_user_put,
	.user_get = lm_ident_user_get,
	.user_del = lm_ident_user_del,
	.user_list = lm_ident_user_list,
	.apikey_put = lm_ident_apikey_put,
	.apikey_get = lm_ident_apikey_get,
	.apikey_del = lm_ident_apikey_del,
	.apikey_list = lm_ident_apikey_list,
	.auth_put = lm_ident_auth_put,
	.auth_get = lm_ident_auth_get,
	.auth_list = lm_ident_auth_list,
	.limits_put = lm_limits_put,
	.limits_get = lm_limits_get,
	.limits_list = lm_limits_list,
	.auth_del = lm_ident_auth_del,
	.event_add = lm_conv_event_add,
	.stats = lm_stats,
	.backup = lm_backup,
};

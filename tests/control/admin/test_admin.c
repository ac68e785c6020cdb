/*
 * The admin socket over the shared control fixture (a real channel region,
 * the real control loop): clients connect to the Unix socket, the loop
 * turns, answers are read back; the dataplane side of the region reads the
 * ADMIN and KICK records control wrote, and STATS/CONNS records go in
 * through the loop's record dispatch. Store calls the tests need fixed
 * answers from (listing, statistics, backup) are shims, and the user writes
 * are withheld so that a store without users can be checked; the rest is a
 * real LMDB store in /dev/shm.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "../fixture.h"
#include "admin/admin_int.h"

/* ---- store shims ------------------------------------------------------------ */

static struct store_ops shim_ops;
static store_done_fn backup_done;
static void *backup_arg;
static char backup_path[256];

/* Two users; "ann" has 3 sessions, "bob" 2, listed 2 per page. */
static const struct {
	const char *user, *id;
	int64_t updated;
} shim_sessions[] = {
	{ "ann", "s_a1", 500 }, { "ann", "s_a2", 300 }, { "ann", "s_a3", 100 },
	{ "bob", "s_b1", 400 }, { "bob", "s_b2", 200 },
};

static int shim_user_list(struct store *st, void (*each)(void *, const struct store_user *), void *arg)
{
	(void)st;
	struct store_user u;
	memset(&u, 0, sizeof(u));
	strcpy(u.name, "ann");
	u.role = STORE_USER_ROLE_ADMIN;
	u.created_at = 1700000000;
	strcpy(u.pwhash, "$argon2id$secret");
	each(arg, &u);
	strcpy(u.name, "bob");
	u.role = STORE_USER_ROLE_USER;
	each(arg, &u);
	return 0;
}

static int shim_session_list(struct store *st, const struct store_list_query *q,
			     void (*each)(void *, const struct store_session *), void *arg, char *next,
			     size_t cap)
{
	(void)st;
	size_t start = q->cursor[0] ? (size_t)atoi(q->cursor) : 0;
	size_t seen = 0, given = 0;
	next[0] = 0;
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(shim_sessions); i++) {
		if (strcmp(shim_sessions[i].user, q->user) != 0)
			continue;
		if (seen++ < start)
			continue;
		if (given == 2 || given == q->limit) {
			snprintf(next, cap, "%zu", start + given);
			break;
		}
		struct store_session s;
		memset(&s, 0, sizeof(s));
		strcpy(s.id, shim_sessions[i].id);
		strcpy(s.user, q->user);
		strcpy(s.model_id, "synth-1");
		strcpy(s.title, "t");
		s.updated_at = shim_sessions[i].updated;
		each(arg, &s);
		given++;
	}
	return 0;
}

static int shim_stats(struct store *st, struct store_stats *out)
{
	(void)st;
	memset(out, 0, sizeof(*out));
	out->schema_version = 3;
	out->messages = 77;
	return 0;
}

static int shim_backup(struct store *st, const char *path, store_done_fn done, void *arg)
{
	(void)st;
	snprintf(backup_path, sizeof(backup_path), "%s", path);
	backup_done = done;
	backup_arg = arg;
	return 0;
}

/* ---- fixture ---------------------------------------------------------------- */

static void sock_path(char *out, size_t cap, const char *tag)
{
	snprintf(out, cap, "/tmp/sluice-test-admin-%d-%s.sock", (int)getpid(), tag);
}

static int fx_setup(void **state)
{
	struct cfx *f = cfx_open(NULL, CFX_ADMIN);
	shim_ops = *f->st->ops;
	shim_ops.user_list = shim_user_list;
	shim_ops.session_list = shim_session_list;
	shim_ops.stats = shim_stats;
	shim_ops.backup = shim_backup;
	shim_ops.user_put = NULL;
	shim_ops.user_del = NULL;
	f->st->ops = &shim_ops;
	backup_done = NULL;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	cfx_close(*state);
	return 0;
}

/* The test's dataplane heartbeats (alive) or goes silent; returns once the
 * loop's periodic check (every CPL_HEARTBEAT_NS) has seen it. */
static void dataplane_alive(struct cfx *f, bool alive)
{
	uint64_t deadline = sluice_now_ns() + 5000000000ull;
	while (cpl_peer_alive(f->loop) != alive) {
		assert_true(sluice_now_ns() < deadline);
		chan_heartbeat(f->dp, alive ? sluice_now_ns() : 1);
		cpl_turn(f->loop, true);
	}
}

/* A second admin socket on a loop of its own over the same region. */
static struct admin *admin2(struct cfx *f, const struct sluice_conf *c2, struct cp_loop **l2,
			    char *err, size_t errlen)
{
	*l2 = cpl_create(f->cp, err, errlen);
	assert_non_null(*l2);
	struct admin_deps d = { .conf = c2, .loop = *l2, .st = f->st, .out = &f->out, .chat = &f->chat,
				.auth = &f->auth, .api_stats = &f->api.stats };
	struct admin *ad = admin_create(&d, err, errlen);
	if (!ad) {
		cpl_destroy(*l2);
		*l2 = NULL;
	}
	return ad;
}

static void admin2_free(struct admin *ad, struct cp_loop *l2)
{
	admin_destroy(ad);
	cpl_destroy(l2);
}

/* ---- client side ----------------------------------------------------------- */

static int cli_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void cli_send(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);
		assert_true(w > 0);
		s += w;
		n -= (size_t)w;
	}
}

/* One answer line, turning the loop while it is not there (NULL: none
 * within 100 turns, about 10 s). eof is set when the server closed. */
static void cli_send_str(int fd, const char *s)
{
	cli_send(fd, s, strlen(s));
}

static json_t *cli_answer_eof(struct cfx *f, int fd, bool *eof)
{
	static char line[1 << 16];
	size_t n = 0;
	*eof = false;
	for (int turn = 0; turn < 100; turn++) {
		for (;;) {
			char ch;
			ssize_t r = recv(fd, &ch, 1, MSG_DONTWAIT);
			if (r == 0) {
				*eof = true;
				return NULL;
			}
			if (r < 0)
				break;
			if (ch == '\n') {
				json_error_t jerr;
				json_t *o = json_loadb(line, n, 0, &jerr);
				assert_non_null(o);
				return o;
			}
			assert_true(n < sizeof(line));
			line[n++] = ch;
		}
		cpl_turn(f->loop, true);
	}
	return NULL;
}

static json_t *cli_answer(struct cfx *f, int fd)
{
	bool eof;
	json_t *o = cli_answer_eof(f, fd, &eof);
	assert_non_null(o);
	return o;
}

static json_t *ask(struct cfx *f, int fd, const char *line)
{
	cli_send(fd, line, strlen(line));
	return cli_answer(f, fd);
}

static void assert_error(json_t *o, const char *code)
{
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "error"), "code")), code);
	json_decref(o);
}

static long long jint(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	assert_true(json_is_integer(v));
	return (long long)json_integer_value(v);
}

/* The next c2d record for worker w (type and payload copied), or false. */
static bool next_rec(struct cfx *f, uint32_t w, uint16_t *type, void *buf, size_t cap)
{
	struct chan_cons *c = chan_consumer(f->dp, w);
	const struct chan_rec *rec = chan_peek(c);
	if (!rec)
		return false;
	assert_true(rec->len <= cap);
	*type = rec->type;
	memcpy(buf, rec->payload, rec->len);
	chan_consume(c);
	chan_release(c);
	return true;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_socket_mode_and_cleanup(void **state)
{
	struct cfx *f = *state;
	struct stat sb;
	assert_int_equal(lstat(f->conf.admin_socket, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0600);

	/* A mode the umask would narrow is set exactly all the same. */
	static struct sluice_conf c2;
	struct cp_loop *l2;
	c2 = f->conf;
	sock_path(c2.admin_socket, sizeof(c2.admin_socket), "mode");
	unlink(c2.admin_socket);
	c2.admin_socket_mode = 0660;
	mode_t old = umask(077);
	char err[256];
	struct admin *ad2 = admin2(f, &c2, &l2, err, sizeof(err));
	umask(old);
	assert_non_null(ad2);
	assert_int_equal(lstat(c2.admin_socket, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0660);
	admin2_free(ad2, l2);
	assert_int_equal(lstat(c2.admin_socket, &sb), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_stale_in_use_and_foreign_files(void **state)
{
	struct cfx *f = *state;
	static struct sluice_conf c2;
	struct cp_loop *l2;
	char err[256];
	c2 = f->conf;

	/* A running control's socket answers: refused, and left alone. */
	assert_null(admin2(f, &c2, &l2, err, sizeof(err)));
	assert_non_null(strstr(err, "another control answers"));
	int fd = cli_connect(f->conf.admin_socket);
	json_t *o = ask(f, fd, "{\"cmd\":\"status\"}\n");
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);
	close(fd);

	/* A socket file nobody listens on (a crashed run) is replaced. */
	sock_path(c2.admin_socket, sizeof(c2.admin_socket), "stale");
	unlink(c2.admin_socket);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(c2.admin_socket) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, c2.admin_socket, strlen(c2.admin_socket) + 1);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	struct admin *ad2 = admin2(f, &c2, &l2, err, sizeof(err));
	assert_non_null(ad2);
	fd = cli_connect(c2.admin_socket);
	close(fd);
	admin2_free(ad2, l2);

	/* Anything that is not a socket is not ours to delete. */
	FILE *fp = fopen(c2.admin_socket, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_null(admin2(f, &c2, &l2, err, sizeof(err)));
	assert_non_null(strstr(err, "not a socket"));
	struct stat sb;
	assert_int_equal(lstat(c2.admin_socket, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	unlink(c2.admin_socket);
}

static void test_requests_and_errors(void **state)
{
	struct cfx *f = *state;
	int fd = cli_connect(f->conf.admin_socket);
	/* Several requests in one write are answered in order. */
	const char many[] = "{\"cmd\":\"status\"}\nnot json\n{\"x\":1}\n[1]\n{\"cmd\":\"nope\"}\n";
	cli_send(fd, many, sizeof(many) - 1);
	json_t *o = cli_answer(f, fd);
	assert_true(json_is_true(json_object_get(o, "ok")));
	assert_int_equal(jint(o, "workers"), 2);
	assert_int_equal(jint(o, "workers_reporting"), 0);
	assert_int_equal(jint(o, "pid"), getpid());
	assert_string_equal(json_string_value(json_object_get(o, "store")), f->conf.store);
	assert_true(json_is_true(json_object_get(o, "dataplane_attached")));
	json_decref(o);
	assert_error(cli_answer(f, fd), "invalid_json");
	assert_error(cli_answer(f, fd), "invalid_request");
	assert_error(cli_answer(f, fd), "invalid_json");
	assert_error(cli_answer(f, fd), "unknown_command");
	/* Stores without users, and a control without auth, say so. */
	assert_error(ask(f, fd, "{\"cmd\":\"users.del\",\"name\":\"bob\"}\n"), "not_supported");
	/* The password line is consumed with its request: the next request is
	 * answered as a request, not taken for a password. */
	cli_send_str(fd, "{\"cmd\":\"users.add\",\"name\":\"bob\",\"role\":\"user\"}\n");
	o = ask(f, fd, "pw-line\n");
	assert_error(o, "not_supported");
	o = ask(f, fd, "{\"cmd\":\"users.add\",\"name\":\"b b\",\"role\":\"user\"}\nx\n");
	assert_error(o, "invalid_request");
	o = ask(f, fd, "{\"cmd\":\"users.add\",\"name\":\"bob\",\"role\":\"root\"}\nx\n");
	assert_error(o, "invalid_request");
	o = ask(f, fd, "{\"cmd\":\"status\"}\n");
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);
	close(fd);
}

static void test_request_too_large(void **state)
{
	struct cfx *f = *state;
	int fd = cli_connect(f->conf.admin_socket);
	static char big[ADM_LINE_MAX + 100];
	memset(big, 'a', sizeof(big));
	cli_send(fd, big, sizeof(big));
	assert_error(cli_answer(f, fd), "request_too_large");
	bool eof;
	assert_null(cli_answer_eof(f, fd, &eof));
	assert_true(eof);
	close(fd);
	/* The slot is free again: a new client is served. */
	fd = cli_connect(f->conf.admin_socket);
	json_t *o = ask(f, fd, "{\"cmd\":\"status\"}\n");
	assert_int_equal(jint(o, "admin_clients"), 1);
	json_decref(o);
	close(fd);
}

static void put_stats(struct cfx *f, uint32_t worker, uint64_t conns, uint64_t tokens)
{
	struct chan_stats s;
	memset(&s, 0, sizeof(s));
	s.worker = worker;
	s.conns_active = conns;
	s.tokens_out = tokens;
	s.sse_active = 1;
	cpl_dispatch(f->loop, CHAN_REC_STATS, &s, sizeof(s));
}

static void test_stats_and_workers(void **state)
{
	struct cfx *f = *state;
	put_stats(f, 0, 3, 100);
	put_stats(f, 1, 4, 20);
	put_stats(f, 1, 5, 30); /* the latest record counts, not a sum over time */
	put_stats(f, 7, 1000, 1000); /* no such worker: ignored */
	assert_int_equal(cpl_stats(f->loop)->invalid_records + cpl_stats(f->loop)->unhandled_records, 0);
	int fd = cli_connect(f->conf.admin_socket);
	json_t *o = ask(f, fd, "{\"cmd\":\"stats\"}\n");
	json_t *dp = json_object_get(o, "dataplane");
	assert_int_equal(jint(dp, "workers_reporting"), 2);
	assert_int_equal(jint(dp, "conns_active"), 8);
	assert_int_equal(jint(dp, "tokens_out"), 130);
	assert_int_equal(jint(dp, "sse_active"), 2);
	assert_true(jint(json_object_get(o, "control"), "admin_requests") >= 1);
	assert_int_equal(jint(json_object_get(o, "control"), "stats_records"), 3);
	assert_int_equal(jint(json_object_get(o, "control"), "stale_records"), 1);
	json_decref(o);
	o = ask(f, fd, "{\"cmd\":\"workers\"}\n");
	json_t *ws = json_object_get(o, "workers");
	assert_int_equal(json_array_size(ws), 2);
	assert_int_equal(jint(json_array_get(ws, 0), "conns_active"), 3);
	assert_int_equal(jint(json_array_get(ws, 1), "conns_active"), 5);
	assert_int_equal(jint(json_array_get(ws, 1), "tokens_out"), 30);
	assert_true(jint(json_array_get(ws, 1), "stats_age_ms") < 60000);
	json_decref(o);
	close(fd);
}

static void put_conns(struct cfx *f, uint32_t req, uint16_t worker, uint32_t n, bool last, uint32_t slot0)
{
	static _Alignas(8) uint8_t buf[sizeof(struct chan_conns) + 4 * sizeof(struct chan_conn_info)];
	struct chan_conns *c = (struct chan_conns *)buf;
	memset(buf, 0, sizeof(buf));
	c->req_id = req;
	c->worker = worker;
	c->flags = last ? CHAN_CONNS_LAST : 0;
	c->count = n;
	struct chan_conn_info *ci = (struct chan_conn_info *)(c + 1);
	for (uint32_t i = 0; i < n; i++) {
		ci[i].conn.worker = worker;
		ci[i].conn.slot = slot0 + i;
		ci[i].conn.gen = 9;
		ci[i].peer_ipv4 = htonl(0x7f000001);
		ci[i].peer_port = 40000;
		ci[i].mode = CHAN_CONN_SSE;
		ci[i].age_ms = 1234;
		strcpy(ci[i].session_id, "s_0123");
	}
	cpl_dispatch(f->loop, CHAN_REC_CONNS, buf, (uint32_t)(sizeof(*c) + n * sizeof(*ci)));
}

/* Sends the conns request and returns the req_id each worker was asked with. */
static uint32_t conns_start(struct cfx *f, int fd, const char *req, bool want[2])
{
	cli_send(fd, req, strlen(req));
	uint32_t id = 0;
	bool seen[2] = { false, false };
	for (int turn = 0; turn < 20 && !(seen[0] == want[0] && seen[1] == want[1]); turn++) {
		cpl_turn(f->loop, true);
		for (uint32_t w = 0; w < 2; w++) {
			uint16_t type;
			_Alignas(8) uint8_t buf[256];
			while (next_rec(f, w, &type, buf, sizeof(buf))) {
				assert_int_equal(type, CHAN_REC_ADMIN);
				const struct chan_admin *a = (const struct chan_admin *)buf;
				assert_int_equal(a->op, CHAN_ADMIN_LIST_CONNS);
				assert_true(want[w]);
				if (id)
					assert_int_equal(a->req_id, id);
				id = a->req_id;
				seen[w] = true;
			}
		}
	}
	assert_true(seen[0] == want[0] && seen[1] == want[1]);
	assert_int_not_equal(id, 0);
	return id;
}

static void test_conns_gathered_from_pages(void **state)
{
	struct cfx *f = *state;
	int fd = cli_connect(f->conf.admin_socket);
	bool both[2] = { true, true };
	uint32_t id = conns_start(f, fd, "{\"cmd\":\"conns\"}\n", both);
	put_conns(f, id + 1000, 0, 1, true, 50); /* another query's answer: ignored */
	put_conns(f, id, 0, 2, false, 10);
	put_conns(f, id, 1, 0, true, 0);
	put_conns(f, id, 0, 1, true, 12);
	json_t *o = cli_answer(f, fd);
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_t *cs = json_object_get(o, "conns");
	assert_int_equal(json_array_size(cs), 3);
	for (size_t i = 0; i < 3; i++) {
		json_t *c = json_array_get(cs, i);
		assert_int_equal(jint(c, "slot"), 10 + (long long)i);
		assert_string_equal(json_string_value(json_object_get(c, "peer")), "127.0.0.1:40000");
		assert_string_equal(json_string_value(json_object_get(c, "mode")), "sse");
		assert_string_equal(json_string_value(json_object_get(c, "session_id")), "s_0123");
	}
	assert_int_equal(json_array_size(json_object_get(o, "missing_workers")), 0);
	json_decref(o);

	/* One worker only. */
	bool one[2] = { false, true };
	id = conns_start(f, fd, "{\"cmd\":\"conns\",\"worker\":1}\n", one);
	put_conns(f, id, 1, 1, true, 77);
	o = cli_answer(f, fd);
	assert_int_equal(json_array_size(json_object_get(o, "conns")), 1);
	json_decref(o);
	assert_error(ask(f, fd, "{\"cmd\":\"conns\",\"worker\":2}\n"), "invalid_request");
	dataplane_alive(f, false);
	assert_error(ask(f, fd, "{\"cmd\":\"conns\"}\n"), "dataplane_unavailable");
	dataplane_alive(f, true);
	close(fd);
}

static void test_conns_timeout_reports_missing(void **state)
{
	struct cfx *f = *state;
	int fd = cli_connect(f->conf.admin_socket);
	bool both[2] = { true, true };
	uint32_t id = conns_start(f, fd, "{\"cmd\":\"conns\"}\n", both);
	put_conns(f, id, 0, 1, true, 5);
	/* Worker 1 never answers: the answer comes at the deadline. */
	json_t *o = cli_answer(f, fd);
	assert_int_equal(json_array_size(json_object_get(o, "conns")), 1);
	json_t *missing = json_object_get(o, "missing_workers");
	assert_int_equal(json_array_size(missing), 1);
	assert_int_equal(json_integer_value(json_array_get(missing, 0)), 1);
	json_decref(o);
	/* A late page for the finished query changes nothing. */
	uint64_t stale = admin_counters(f->admin)->stale_records;
	put_conns(f, id, 1, 1, true, 6);
	assert_int_equal(admin_counters(f->admin)->stale_records, stale + 1);
	close(fd);
}

static void test_sessions_list_merges_users(void **state)
{
	struct cfx *f = *state;
	int fd = cli_connect(f->conf.admin_socket);
	json_t *o = ask(f, fd, "{\"cmd\":\"sessions.list\"}\n");
	json_t *ss = json_object_get(o, "sessions");
	const char *want[] = { "s_a1", "s_b1", "s_a2", "s_b2", "s_a3" };
	assert_int_equal(json_array_size(ss), 5);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(json_string_value(json_object_get(json_array_get(ss, i), "id")), want[i]);
	json_decref(o);
	o = ask(f, fd, "{\"cmd\":\"sessions.list\",\"limit\":3}\n");
	ss = json_object_get(o, "sessions");
	assert_int_equal(json_array_size(ss), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(ss, 2), "id")), "s_a2");
	json_decref(o);
	o = ask(f, fd, "{\"cmd\":\"sessions.list\",\"user\":\"ann\"}\n");
	ss = json_object_get(o, "sessions");
	assert_int_equal(json_array_size(ss), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(ss, 0), "user")), "ann");
	json_decref(o);
	assert_error(ask(f, fd, "{\"cmd\":\"sessions.list\",\"limit\":0}\n"), "invalid_request");
	o = ask(f, fd, "{\"cmd\":\"users.list\"}\n");
	json_t *us = json_object_get(o, "users");
	assert_int_equal(json_array_size(us), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(us, 0), "role")), "admin");
	/* The hash never leaves control. */
	assert_null(json_object_get(json_array_get(us, 0), "pwhash"));
	json_decref(o);
	o = ask(f, fd, "{\"cmd\":\"store.stats\"}\n");
	assert_int_equal(jint(o, "schema_version"), 3);
	assert_int_equal(jint(o, "messages"), 77);
	json_decref(o);
	close(fd);
}

static void session_stored(void *arg, int err)
{
	*(int *)arg = err;
}

static void test_sessions_show_and_kill(void **state)
{
	struct cfx *f = *state;
	struct store_session s;
	memset(&s, 0, sizeof(s));
	strcpy(s.id, "s_killme");
	strcpy(s.user, "ann");
	strcpy(s.model_id, "synth-1");
	strcpy(s.title, "doomed");
	int created = 1;
	assert_int_equal(store_session_create(f->st, &s, session_stored, &created), 0);
	store_lmdb_flush(f->st);
	assert_int_equal(created, 0);
	int fd = cli_connect(f->conf.admin_socket);
	json_t *o = ask(f, fd, "{\"cmd\":\"sessions.show\",\"id\":\"s_killme\"}\n");
	json_t *ss = json_object_get(o, "session");
	assert_string_equal(json_string_value(json_object_get(ss, "title")), "doomed");
	assert_int_equal(json_array_size(json_object_get(ss, "messages")), 0);
	assert_true(json_is_false(json_object_get(ss, "running")));
	json_decref(o);
	assert_error(ask(f, fd, "{\"cmd\":\"sessions.show\",\"id\":\"s_none\"}\n"), "not_found");
	assert_error(ask(f, fd, "{\"cmd\":\"sessions.kill\",\"id\":\"s_none\"}\n"), "not_found");

	o = ask(f, fd, "{\"cmd\":\"sessions.kill\",\"id\":\"s_killme\"}\n");
	assert_true(json_is_true(json_object_get(o, "ok")));
	assert_int_equal(jint(o, "workers_kicked"), 2);
	assert_true(json_is_null(json_object_get(o, "cancelled_message_id")));
	json_decref(o);
	cpl_turn(f->loop, false);
	for (uint32_t w = 0; w < 2; w++) {
		uint16_t type;
		_Alignas(8) uint8_t buf[512];
		assert_true(next_rec(f, w, &type, buf, sizeof(buf)));
		assert_int_equal(type, CHAN_REC_KICK);
		const struct chan_kick *k = (const struct chan_kick *)buf;
		assert_int_equal(k->conn.worker, w);
		assert_int_equal(k->conn.slot, CHAN_SLOT_ALL);
		assert_int_equal(k->code, 1008);
		assert_string_equal(k->session_id, "s_killme");
		assert_string_equal(k->reason, "session killed by operator");
		assert_true(chan_rec_valid(CHAN_REC_KICK, buf, sizeof(*k)));
	}
	close(fd);
}

static void test_backup_answers_when_done(void **state)
{
	struct cfx *f = *state;
	int fd = cli_connect(f->conf.admin_socket);
	assert_error(ask(f, fd, "{\"cmd\":\"store.backup\",\"path\":\"rel/dir\"}\n"), "invalid_request");
	const char req[] = "{\"cmd\":\"store.backup\",\"path\":\"/tmp/bk\"}\n{\"cmd\":\"status\"}\n";
	cli_send(fd, req, sizeof(req) - 1);
	for (int i = 0; i < 3; i++)
		cpl_turn(f->loop, false);
	cpl_turn(f->loop, true);
	assert_non_null(backup_done);
	assert_string_equal(backup_path, "/tmp/bk");
	/* Nothing is answered before the store is done, not even the status
	 * queued behind the backup. */
	char ch;
	assert_int_equal(recv(fd, &ch, 1, MSG_DONTWAIT), -1);
	backup_done(backup_arg, 0);
	json_t *o = cli_answer(f, fd);
	assert_true(json_is_true(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_object_get(o, "path")), "/tmp/bk");
	json_decref(o);
	o = cli_answer(f, fd);
	assert_int_equal(jint(o, "workers"), 2);
	json_decref(o);

	/* A failed backup is an error answer. */
	backup_done = NULL;
	cli_send_str(fd, "{\"cmd\":\"store.backup\",\"path\":\"/tmp/bk2\"}\n");
	for (int i = 0; i < 20 && !backup_done; i++)
		cpl_turn(f->loop, true);
	assert_non_null(backup_done);
	backup_done(backup_arg, -ENOSPC);
	assert_error(cli_answer(f, fd), "no_space");

	/* The client hangs up while its backup runs: the late completion is
	 * dropped and the slot is freed. */
	backup_done = NULL;
	cli_send_str(fd, "{\"cmd\":\"store.backup\",\"path\":\"/tmp/bk3\"}\n");
	for (int i = 0; i < 20 && !backup_done; i++)
		cpl_turn(f->loop, true);
	assert_non_null(backup_done);
	close(fd);
	for (int i = 0; i < 3; i++)
		cpl_turn(f->loop, false);
	cpl_turn(f->loop, true);
	backup_done(backup_arg, 0);
	uint32_t used = 0;
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++)
		used += f->admin->cl[i].used;
	assert_int_equal(used, 0);
}

static void test_client_limit(void **state)
{
	struct cfx *f = *state;
	int fds[ADM_MAX_CLIENTS + 1];
	for (int i = 0; i < ADM_MAX_CLIENTS; i++) {
		fds[i] = cli_connect(f->conf.admin_socket);
		json_t *o = ask(f, fds[i], "{\"cmd\":\"status\"}\n");
		json_decref(o);
	}
	fds[ADM_MAX_CLIENTS] = cli_connect(f->conf.admin_socket);
	assert_error(cli_answer(f, fds[ADM_MAX_CLIENTS]), "busy");
	for (int i = 0; i <= ADM_MAX_CLIENTS; i++)
		close(fds[i]);
}

/* Admin sends the backend counters to every worker once a second
 * (CHAN_REC_BACKENDS, for /metrics): one entry per backend and model, the
 * TTFT bucket bounds, the running count. */
static void test_backend_counters_published(void **state)
{
	struct cfx *f = *state;
	f->keep_backends = true;
	cpl_run_due(f->loop, cpl_now(f->loop) + 1100000000ull);
	co_flush(&f->out);
	for (uint32_t w = 0; w < CFX_WORKERS; w++) {
		bool seen = false;
		while (cfx_next(f, w)) {
			if (cfx_got.type != CHAN_REC_BACKENDS)
				continue;
			const struct chan_backends *h = (const void *)cfx_got.p;
			const struct chan_backend_entry *e = (const void *)(h + 1);
			assert_int_equal(h->count, 1);
			assert_string_equal(e->backend, "syn");
			assert_int_equal(e->up, 1);
			assert_int_equal(e->breaker, 0);
			assert_true(h->ttft_le[0] == 0.05 && h->ttft_le[CHAN_TTFT_BUCKETS - 1] == 60);
			seen = true;
		}
		assert_true(seen);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_socket_mode_and_cleanup, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stale_in_use_and_foreign_files, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_requests_and_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_request_too_large, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stats_and_workers, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_conns_gathered_from_pages, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_conns_timeout_reports_missing, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sessions_list_merges_users, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sessions_show_and_kill, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_backup_answers_when_done, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_client_limit, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_backend_counters_published, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The shared control fixture: sluice-control's layers built bottom-up as
 * main.c builds them (channel region, loop, channel output, LMDB store in
 * /dev/shm, chat, auth with a cheap Argon2id cost, api, optionally the admin
 * socket), plus the dataplane's side of the same region, which the tests
 * play: they build REQUEST records, hand them to the loop, and read back
 * what control wrote to the c2d rings.
 *
 * One fixture at a time per process (the record buffers are static).
 */
#ifndef TESTS_CONTROL_FIXTURE_H
#define TESTS_CONTROL_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "admin/admin.h"
#include "api/api.h"
#include "auth/auth.h"
#include "backends/backends.h"
#include "limits/limits.h"
#include "channel/chan_out.h"
#include "chat/chat.h"
#include "events/ev.h"
#include "loop/cp_loop.h"
#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "store/store.h"

#define CFX_RING (64u * 1024u)
#define CFX_WORKERS 2u
#define CFX_REQ_ID 42u

/* Optional parts: the admin socket; the event bus and the dashboard
 * (admin with /ws/admin and /api/admin, implies CFX_ADMIN). */
enum { CFX_ADMIN = 1u << 0, CFX_DASH = 1u << 1 };

struct cfx {
	char shm[96];
	char dir[64]; /* the LMDB store */
	struct sluice_conf conf;
	struct chan_region *cp; /* control's attachment */
	struct chan_region *dp; /* the test's, as the dataplane */
	struct cp_loop *loop;
	struct store *st;
	struct chan_out out;
	struct bk_mgr *bk;
	struct chat chat;
	struct auth auth;
	struct limits limits;
	struct api api;
	struct admin *admin; /* with CFX_ADMIN */
	struct ev_bus bus;   /* with CFX_DASH: chat, api and admin publish here */
	/* The default user and a login session of it (cfx_open creates both):
	 * cfx_http() sends this token unless told otherwise. */
	char user[STORE_USER_MAX];
	uint64_t uid;
	char token[AUTH_TOKEN_LEN + 1];
	bool keep_backends;
	uint64_t backends_records;
};

/* A record read back from a c2d ring. */
struct cfx_rec {
	uint16_t type;
	uint32_t len;
	_Alignas(8) uint8_t p[CFX_RING];
};
extern struct cfx_rec cfx_got;

/* One field of a REQUEST record; len 0 means strlen(v); v NULL is skipped. */
struct cfx_field {
	uint16_t tag;
	const char *v;
	size_t len;
};

/* The configuration every control test starts from: 2 workers, one
 * synthetic backend "syn" serving synth-1 (200 ms TTFT, 20 tokens/s,
 * 5-token answers, 8192 context, $2/$10 per 1M tokens), agents "assistant"
 * and "coder", Argon2id at its cheapest, 60 s login sessions. */
void cfx_conf_default(struct sluice_conf *c);

/* Builds the layers over conf (NULL: cfx_conf_default), creates the user
 * "u" and logs it in. The store's ops may be swapped for shims afterwards. */
struct cfx *cfx_open(const struct sluice_conf *conf, unsigned flags);
void cfx_close(struct cfx *f);
/* Puts the limits on a test clock (unix seconds in cfx_clock_s, which the
 * test moves), 30 s into a minute of a day's start, so fixed windows are
 * the test's to cross. */
extern int64_t cfx_clock_s;
void cfx_limits_clock(struct cfx *f);

/* Builds a REQUEST record for conn into buf (static, valid until the next
 * build), stamped with this control's epoch. Returns its length. */
uint32_t cfx_build(struct cfx *f, struct chan_conn conn, uint8_t kind, uint8_t method,
		   const struct cfx_field *fl, size_t n);
const uint8_t *cfx_reqbuf(void);
/* Hands a record to the loop as if drained from a d2c ring, then lets the
 * store's completions run and flushes the output (cfx_settle). */
void cfx_dispatch(struct cfx *f, uint16_t type, const void *payload, uint32_t len);
void cfx_settle(struct cfx *f);
/* An HTTP request on worker w / slot with the default user's token (or
 * `token`; "" sends none), then cfx_settle. */
void cfx_http_as(struct cfx *f, uint16_t w, uint32_t slot, uint8_t method, const char *path,
		 const char *body, const char *token);
void cfx_http(struct cfx *f, uint16_t w, uint32_t slot, uint8_t method, const char *path, const char *body);

/* Reads the next c2d record of worker w into cfx_got; false when empty.
 * CHAN_REC_BACKENDS records (admin's, once a second) are counted in
 * f->backends_records and skipped unless f->keep_backends. */
bool cfx_next(struct cfx *f, uint32_t w);
/* A field of the response in cfx_got, or NULL. */
const struct chan_field *cfx_field(uint16_t tag);
/* Reads a whole response (all parts) from worker w: parsed body (NULL when
 * empty), the last part's header, the number of parts. */
json_t *cfx_read_resp(struct cfx *f, uint32_t w, struct chan_response *hdr, int *parts);
/* The next response on w has `status` and req_id CFX_REQ_ID: its body. */
json_t *cfx_expect_resp(struct cfx *f, uint32_t w, uint16_t status);
void cfx_expect_error(struct cfx *f, uint32_t w, uint16_t status, const char *code);

/* Users and logins written straight into the store (no password hashing). */
uint64_t cfx_add_user(struct cfx *f, const char *name);
void cfx_del_user(struct cfx *f, const char *name);
void cfx_login(struct cfx *f, const char *name, char token[AUTH_TOKEN_LEN + 1]);

/* Only a loop over a fresh channel region, for the layers that need one to
 * register with (the store's completion fd) and nothing above. */
struct cfx_loop {
	char shm[96];
	struct chan_region *cp;
	struct cp_loop *loop;
};
void cfx_loop_open(struct cfx_loop *l);
void cfx_loop_close(struct cfx_loop *l);

/* A new dataplane incarnation attaches to the region (its epoch changes);
 * one loop turn runs the peer-reset hooks. */
void cfx_dataplane_restart(struct cfx *f);

#endif

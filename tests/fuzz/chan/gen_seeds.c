/*
 * Writes the seed corpus for fuzz-chan into the directory given as argv[1]:
 * one valid record of every type (and a few variants), each file being the
 * fuzz input format, a little-endian u16 type then the payload. Built from
 * the real structs so the seeds follow any layout change on regeneration.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/chan_proto.h"

static _Alignas(8) unsigned char rec[4096];
static const char *outdir;

static int emit(const char *name, uint16_t type, size_t len)
{
	if (!chan_rec_valid(type, rec, (uint32_t)len)) {
		fprintf(stderr, "seed %s is not a valid record\n", name);
		return -1;
	}
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/%s", outdir, name);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -1;
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		return -1;
	}
	unsigned char t[2] = { (unsigned char)(type & 0xff), (unsigned char)(type >> 8) };
	int rc = fwrite(t, 1, 2, f) == 2 && fwrite(rec, 1, len, f) == len ? 0 : -1;
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}

static void conn(struct chan_conn *c)
{
	c->worker = 1;
	c->slot = 3;
	c->gen = 77;
}

static size_t put(size_t off, uint16_t tag, const char *s)
{
	uint8_t *p = rec + off;
	chan_field_put(&p, tag, s, (uint32_t)strlen(s));
	return (size_t)(p - rec);
}

static size_t tokens(const char *const *texts, size_t n)
{
	memset(rec, 0, sizeof(rec));
	struct chan_tokens *t = (struct chan_tokens *)rec;
	conn(&t->conn);
	t->conn.slot = CHAN_SLOT_ALL;
	chan_id_set(t->session_id, "s-0001", 6);
	chan_id_set(t->message_id, "m-0001", 6);
	t->first_seq = 1;
	t->count = (uint32_t)n;
	size_t off = sizeof(*t);
	for (size_t i = 0; i < n; i++) {
		struct chan_token *k = (struct chan_token *)(rec + off);
		k->created_ns = 1000000 * (i + 1);
		k->len = (uint32_t)strlen(texts[i]);
		memcpy(k->text, texts[i], k->len);
		off = chan_align8(off + sizeof(*k) + k->len);
	}
	return off;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	int rc = 0;

	memset(rec, 0, sizeof(rec));
	struct chan_request *rq = (struct chan_request *)rec;
	conn(&rq->conn);
	rq->req_id = 1;
	rq->kind = CHAN_REQ_HTTP;
	rq->method = CHAN_M_POST;
	size_t off = put(sizeof(*rq), CHAN_F_PATH, "/api/chat/message");
	off = put(off, CHAN_F_AUTHORIZATION, "Bearer tok");
	off = put(off, CHAN_F_CONTENT_TYPE, "application/json");
	off = put(off, CHAN_F_BODY, "{\"session_id\":\"s-0001\",\"content\":\"hi\"}");
	rc |= emit("request-http", CHAN_REC_REQUEST, off);

	memset(rec, 0, sizeof(rec));
	conn(&rq->conn);
	rq->kind = CHAN_REQ_WS_OPEN;
	rq->method = CHAN_M_GET;
	off = put(sizeof(*rq), CHAN_F_PATH, "/ws/chat");
	off = put(off, CHAN_F_ORIGIN, "https://example.test");
	off = put(off, CHAN_F_COOKIE, "sluice_session=abc");
	rc |= emit("request-ws-open", CHAN_REC_REQUEST, off);

	memset(rec, 0, sizeof(rec));
	conn(&rq->conn);
	rq->req_id = 2;
	rq->kind = CHAN_REQ_HTTP_ADMIT;
	rq->method = CHAN_M_POST;
	off = put(sizeof(*rq), CHAN_F_PATH, "/v1/chat/completions");
	off = put(off, CHAN_F_AUTHORIZATION, "Bearer sk_tok");
	off = put(off, CHAN_F_BODY_LEN, "1048576");
	rc |= emit("request-http-admit", CHAN_REC_REQUEST, off);

	memset(rec, 0, sizeof(rec));
	struct chan_sub *sb = (struct chan_sub *)rec;
	conn(&sb->conn);
	chan_id_set(sb->session_id, "s-0001", 6);
	chan_id_set(sb->message_id, "m-0001", 6);
	sb->seq = 12;
	rc |= emit("subscribe", CHAN_REC_SUBSCRIBE, sizeof(*sb));
	rc |= emit("unsubscribe", CHAN_REC_UNSUBSCRIBE, sizeof(*sb));

	memset(rec, 0, sizeof(rec));
	conn(&((struct chan_conn_closed *)rec)->conn);
	rc |= emit("conn-closed", CHAN_REC_CONN_CLOSED, sizeof(struct chan_conn_closed));

	memset(rec, 0, sizeof(rec));
	struct chan_response *rs = (struct chan_response *)rec;
	conn(&rs->conn);
	rs->req_id = 1;
	rs->status = 200;
	rs->action = CHAN_RESP_SSE_SUBSCRIBE;
	chan_id_set(rs->session_id, "s-0001", 6);
	chan_id_set(rs->resume_message_id, "m-0001", 6);
	rs->resume_seq = 4;
	off = put(sizeof(*rs), CHAN_F_BODY, "{\"message_id\":\"m-0002\"}");
	off = put(off, CHAN_F_SET_COOKIE, "sluice_session=abc; HttpOnly");
	off = put(off, CHAN_F_HEADER, "Retry-After: 1");
	rc |= emit("response", CHAN_REC_RESPONSE, off);

	memset(rec, 0, sizeof(rec));
	conn(&rs->conn);
	rs->req_id = 2;
	rs->status = 100;
	rs->action = CHAN_RESP_CONTINUE;
	off = put(sizeof(*rs), CHAN_F_BODY_MAX, "1048576");
	rc |= emit("response-continue", CHAN_REC_RESPONSE, off);

	static const char *const one[] = { "Hello" };
	static const char *const many[] = { "The", " quick", "", " brown fox jumps", " over" };
	rc |= emit("tokens-one", CHAN_REC_TOKENS, tokens(one, 1));
	rc |= emit("tokens-many", CHAN_REC_TOKENS, tokens(many, 5));

	memset(rec, 0, sizeof(rec));
	struct chan_status *st = (struct chan_status *)rec;
	conn(&st->conn);
	chan_id_set(st->session_id, "s-0001", 6);
	chan_id_set(st->message_id, "m-0001", 6);
	strcpy(st->status, "streaming");
	rc |= emit("status", CHAN_REC_STATUS, sizeof(*st));

	memset(rec, 0, sizeof(rec));
	struct chan_usage *us = (struct chan_usage *)rec;
	conn(&us->conn);
	chan_id_set(us->session_id, "s-0001", 6);
	chan_id_set(us->message_id, "m-0001", 6);
	us->prompt_tokens = 5;
	us->completion_tokens = 7;
	us->total_tokens = 12;
	us->cost_usd = 0.0001;
	rc |= emit("usage", CHAN_REC_USAGE, sizeof(*us));

	memset(rec, 0, sizeof(rec));
	struct chan_done *dn = (struct chan_done *)rec;
	conn(&dn->conn);
	chan_id_set(dn->session_id, "s-0001", 6);
	chan_id_set(dn->message_id, "m-0001", 6);
	dn->status = CHAN_DONE_ERROR;
	dn->last_seq = 9;
	off = put(sizeof(*dn), CHAN_F_ERROR_CODE, "backend_unavailable");
	off = put(off, CHAN_F_ERROR_MESSAGE, "no backend answered");
	rc |= emit("done-error", CHAN_REC_DONE, off);

	memset(rec, 0, sizeof(rec));
	struct chan_broadcast *bc = (struct chan_broadcast *)rec;
	conn(&bc->conn);
	bc->max_pending = 262144;
	off = put(sizeof(*bc), CHAN_F_BODY, "{\"type\":\"heartbeat\",\"ts\":1.5,\"seq\":3}");
	rc |= emit("broadcast", CHAN_REC_BROADCAST, off);

	return rc ? 1 : 0;
}

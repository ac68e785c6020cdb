/*
 * The backend interface (v2): how a caller (the chat layer, the
 * OpenAI-compatible API) has one answer produced without knowing which
 * backend produces it. Push, not pull: the caller hands a request to the
 * backend manager (backends.h), which routes it to a backend, and the
 * backend reports what happens through the caller's callbacks, on the loop
 * thread:
 *
 *   status   waiting_backend (queued for a slot, or sent and waiting for the
 *            first token) / streaming (the first token arrived)
 *   token    text of the answer, in order
 *   delta    a non-text part of the answer, as the OpenAI delta JSON object
 *            it came in ({"tool_calls":[...]}); Ollama's are converted to it
 *   usage    prompt and completion tokens as the backend counted them
 *   end      exactly once: complete, error (code, message, HTTP status to
 *            give a client) or interrupted (control is stopping), with the
 *            finish_reason when the backend gave one
 *
 * Cancelling a call aborts it at once (the upstream request is closed in
 * the same loop turn) and reports nothing more. A callback may cancel its
 * own call; after `end` the call is gone.
 */
#ifndef CONTROL_BACKEND_H
#define CONTROL_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest text one token event carries; a longer upstream delta is
 * reported as several tokens. */
#define BK_TOKEN_MAX 4096

enum bk_role { BK_ROLE_SYSTEM = 0, BK_ROLE_USER, BK_ROLE_ASSISTANT };

/* One message of the conversation sent with a request. */
struct bk_msg {
	enum bk_role role;
	const char *content; /* not NUL-terminated */
	size_t len;
};

/*
 * What to answer. The messages are either msgs (the chat layer's history,
 * system prompt first, the new user message last) or messages_json (an
 * OpenAI "messages" array as JSON text, passed through as the client sent
 * it). params_json, when not NULL, is a JSON object of further parameters
 * (temperature, max_tokens, tools, ...) passed to OpenAI-compatible
 * backends as they are and mapped to Ollama's options where it has them.
 * Everything is copied: the caller's buffers may go once bk_call_start
 * returns.
 */
struct bk_request {
	const char *model;
	const struct bk_msg *msgs;
	uint32_t nmsgs;
	const char *messages_json;
	size_t messages_json_len;
	const char *params_json;
	size_t params_len;
	uint64_t start_ns; /* when the request was accepted (synthetic timing); 0: now */
};

enum bk_status { BK_STATUS_WAITING = 0, BK_STATUS_STREAMING };

enum bk_end_kind { BK_END_COMPLETE = 0, BK_END_ERROR, BK_END_INTERRUPTED };

struct bk_end {
	enum bk_end_kind kind;
	const char *finish_reason; /* "stop", "length", "tool_calls", ..., or NULL */
	const char *code;          /* error: snake_case, e.g. backend_unavailable */
	const char *message;       /* error: human text (an upstream's own message when it sent one) */
	uint16_t http_status;      /* error: the status a client should get (400, 404, 429, 502, 503, 504) */
};

/* The caller's callbacks; all of them are required. `backend` names the
 * backend the call runs on (it may change while waiting, on failover). */
struct bk_events {
	void (*status)(void *arg, enum bk_status st, const char *backend);
	void (*token)(void *arg, const char *text, size_t len);
	void (*delta)(void *arg, const char *json, size_t len);
	void (*usage)(void *arg, uint32_t prompt_tokens, uint32_t completion_tokens);
	void (*end)(void *arg, const struct bk_end *e);
};

#endif

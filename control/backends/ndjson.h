/*
 * A newline-delimited JSON splitter for upstream streams (Ollama), in the
 * house parser shape: slices into the caller's buffer, resumable, done /
 * need more / error. Lines end in LF (a CR before it is dropped); blank
 * lines are skipped. It splits only: each line is one JSON text for the
 * caller to parse.
 */
#ifndef CONTROL_NDJSON_H
#define CONTROL_NDJSON_H

#include <stddef.h>

#define NDJ_INCOMPLETE (-1)
#define NDJ_ERROR (-2)

struct ndj {
	size_t max_line; /* bytes one line may take, its LF included */
	size_t scan;     /* bytes the last NDJ_INCOMPLETE call looked at */
	size_t start;    /* where its line began (blank lines before it skipped) */
};

void ndj_init(struct ndj *p, size_t max_line);

/*
 * The first non-blank line of buf[0, len), which starts at a line boundary
 * (the caller drops what each successful call consumed and calls again with
 * the same bytes plus new ones after NDJ_INCOMPLETE). Returns the bytes
 * consumed (blank lines before it and its LF included) with *line / *line_len
 * set, NDJ_INCOMPLETE, or NDJ_ERROR for a line that with the blank lines
 * before it takes more than max_line bytes, one holding a NUL byte, or more
 * than max_line bytes held with no line in them, so NDJ_INCOMPLETE never asks
 * to hold more, and whether a stream is refused does not depend on how it
 * was split.
 */
int ndj_next(struct ndj *p, const char *buf, size_t len, const char **line, size_t *line_len);

#endif

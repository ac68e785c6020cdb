/*
 * The OpenAI-compatible API's life outside its handlers: the table of
 * completions in flight (set up by api_init), and what a closed connection
 * means for them (the backend call is cancelled).
 */
#ifndef CONTROL_API_V1_H
#define CONTROL_API_V1_H

#include "api/api.h"

/* 0, or -1 when out of memory or the output's hook table is full. */
int api_v1_init(struct api *a);
/* Frees what is left (after bk_shutdown ended every call). */
void api_v1_free(struct api *a);
/* CONN_CLOSED: a completion still running for conn is cancelled. */
void api_v1_conn_closed(struct api *a, struct chan_conn conn);

#endif

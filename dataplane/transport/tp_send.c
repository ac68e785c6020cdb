/* tp_send_hinted(): the copy-in helper of transport.h, on top of any transport's ops. */
#include <string.h>

#include "sluice/common.h"
#include "transport/transport.h"

/*
 * Copies in pieces as large as the tail of the send queue allows, so a big
 * buffer never forces one oversized chunk. On false (the connection is
 * closing or memory ran out) a prefix may already be queued: the byte stream
 * is then broken and the caller must close the connection.
 */
bool tp_send_hinted(struct tp *t, struct tp_conn *c, const void *data, size_t len,
		    struct tp_tx_hint *h)
{
	const uint8_t *p = data;
	if (!t->ops->tx_commit_hinted)
		h = NULL;
	while (len > 0) {
		size_t avail = 0;
		uint8_t *dst = tp_tx_reserve(t, c, 1, &avail);
		if (unlikely(dst == NULL || avail == 0))
			return false;
		size_t n = len < avail ? len : avail;
		memcpy(dst, p, n);
		/* The hint describes the whole run: only a run in one piece. */
		if (h && n == len && p == data)
			t->ops->tx_commit_hinted(c, n, h);
		else
			tp_tx_commit(t, c, n);
		p += n;
		len -= n;
	}
	return true;
}

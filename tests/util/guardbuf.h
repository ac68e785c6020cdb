/*
 * Test helper: places a copy of an input so that its last byte sits right
 * before a PROT_NONE page. A parser that reads one byte past the end it was
 * given faults at once instead of passing by luck.
 */
#ifndef SLUICE_TEST_GUARDBUF_H
#define SLUICE_TEST_GUARDBUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct guardbuf {
	uint8_t *map;
	size_t map_len;
};

/* Returns a pointer to len bytes equal to src, ending at a guard page.
 * Aborts on mmap failure (tests only). Free with guardbuf_free(). */
static inline uint8_t *guardbuf_place(struct guardbuf *g, const void *src, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t data_pages = (len + page - 1) / page;
	if (data_pages == 0)
		data_pages = 1;
	g->map_len = (data_pages + 1) * page;
	g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->map == MAP_FAILED)
		abort();
	if (mprotect(g->map + data_pages * page, page, PROT_NONE) != 0)
		abort();
	uint8_t *dst = g->map + data_pages * page - len;
	if (len)
		memcpy(dst, src, len);
	return dst;
}

static inline void guardbuf_free(struct guardbuf *g)
{
	munmap(g->map, g->map_len);
	g->map = NULL;
}

#endif

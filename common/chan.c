/*
 * The shared-memory channel (see chan.h and docs/channel.md).
 *
 * Region file: [chan_hdr + rings[], rounded up to a page][ring data 0]
 * [ring data 1]... with ring i = d2c[w] for i = 2w and c2d[w] for i = 2w+1.
 * Doorbells are FIFOs next to the file: PATH.bell-c (control) and
 * PATH.bell-N (worker N); both processes open all of them O_RDWR, which on
 * Linux never blocks and keeps the FIFO alive while either side holds it.
 */
#include "sluice/chan.h"
#include "sluice/chan_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHAN_OPEN_WAIT_NS (2000ull * 1000 * 1000)
#define CHAN_OPEN_POLL_NS (1000ull * 1000)
/* Times chan_open starts over when the file changed under it (removed by a
 * last process out, or a stale one replaced) before it gives up. */
#define CHAN_OPEN_ATTEMPTS 8

/* The handles of one worker share a cache line group of their own: in the
 * dataplane each worker thread writes only its own group. */
struct chan_slot {
	alignas(SLUICE_CACHELINE) struct chan_prod prod;
	alignas(SLUICE_CACHELINE) struct chan_cons cons;
};

struct chan_region {
	struct chan_slot *slots; /* nworkers entries, owned */
	struct chan_hdr *hdr;    /* start of the mapping */
	size_t map_len;
	int fd;                  /* holds a shared flock and the role's byte lock while attached */
	enum chan_role role;
	bool beat_stopped;       /* chan_heartbeat_stop(): no more heartbeats */
	uint32_t nworkers;
	uint32_t ring_size;
	int bell_c;
	int bell_w[CHAN_MAX_WORKERS];
	char path[PATH_MAX];
	char note[320];          /* chan_open_note(); "" when there is nothing to say */
};

static void chan_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void chan_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static size_t chan_page(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	return pg > 0 ? (size_t)pg : 4096u;
}

/* Bytes before the first ring's data: header and ring blocks, page-rounded. */
static uint64_t chan_data_start(uint32_t nworkers)
{
	uint64_t pg = chan_page();
	uint64_t n = sizeof(struct chan_hdr) + 2ull * nworkers * sizeof(struct chan_ring);
	return (n + pg - 1) / pg * pg;
}

static uint64_t chan_total_size(uint32_t nworkers, uint32_t ring_size)
{
	return chan_data_start(nworkers) + 2ull * nworkers * ring_size;
}

static int chan_bell_path(char *buf, size_t len, const char *path, int worker)
{
	int n = worker < 0 ? snprintf(buf, len, "%s.bell-c", path)
			   : snprintf(buf, len, "%s.bell-%d", path, worker);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Opens (creating when absent) one doorbell FIFO; refuses a non-FIFO. */
static int chan_bell_open(const char *path, int worker, char *err, size_t errlen)
{
	char bp[PATH_MAX];
	if (chan_bell_path(bp, sizeof(bp), path, worker) != 0) {
		chan_err(err, errlen, "channel %s: doorbell path too long", path);
		return -1;
	}
	if (mkfifo(bp, 0600) != 0 && errno != EEXIST) {
		chan_err(err, errlen, "channel %s: mkfifo %s: %s", path, bp, strerror(errno));
		return -1;
	}
	int fd = open(bp, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		chan_err(err, errlen, "channel %s: open %s: %s", path, bp, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
		chan_err(err, errlen, "channel %s: %s exists and is not a FIFO; remove it", path, bp);
		close(fd);
		return -1;
	}
	return fd;
}

static void chan_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Sizes the new file, reserves its memory (so a full /dev/shm fails here
 * rather than as SIGBUS on a later write) and lays out header and rings.
 * `magic` is written last, with release, so an opener that sees it also
 * sees everything else. */
static int chan_create(struct chan_region *r, const char *path, uint64_t total, char *err, size_t errlen)
{
	if (ftruncate(r->fd, (off_t)total) != 0) {
		chan_err(err, errlen, "channel %s: ftruncate to %llu bytes: %s", path,
			 (unsigned long long)total, strerror(errno));
		return -1;
	}
	if (fallocate(r->fd, 0, 0, (off_t)total) != 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
		chan_err(err, errlen, "channel %s: cannot reserve %llu bytes: %s", path,
			 (unsigned long long)total, strerror(errno));
		return -1;
	}
	void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, 0);
	if (m == MAP_FAILED) {
		chan_err(err, errlen, "channel %s: mmap: %s", path, strerror(errno));
		return -1;
	}
	r->hdr = m;
	r->map_len = total;
	struct chan_hdr *h = r->hdr;
	h->version = CHAN_VERSION;
	h->hdr_size = sizeof(struct chan_hdr);
	h->nworkers = r->nworkers;
	h->ring_size = r->ring_size;
	h->total_size = total;
	uint64_t data = chan_data_start(r->nworkers);
	for (uint32_t i = 0; i < 2 * r->nworkers; i++) {
		h->rings[i].size = r->ring_size;
		h->rings[i].data_off = data + (uint64_t)i * r->ring_size;
	}
	__atomic_store_n(&h->magic, CHAN_MAGIC, __ATOMIC_RELEASE);
	return 0;
}

/* Refuses the region when a layout value differs, naming the field and both
 * values; expects err, errlen and path in scope and a `fail` label. */
#define CHAN_CHECK(field, have, want, what)                                                         \
	do {                                                                                        \
		if ((uint64_t)(have) != (uint64_t)(want)) {                                         \
			chan_err(err, errlen,                                                       \
				 "channel %s: %s %llu in region, %s %llu; stop the other process "  \
				 "and remove the file",                                             \
				 path, field, (unsigned long long)(have), what,                     \
				 (unsigned long long)(want));                                       \
			goto fail;                                                                  \
		}                                                                                   \
	} while (0)

/*
 * Attaches to a region another process created, possibly at this very
 * moment: waits (bounded) until the file has a header and the creator has
 * published magic, then checks every layout field before mapping it all.
 * `sole`: this process holds the file's lock alone, so no creator is at
 * work and a missing magic is final.
 */
static int chan_attach_existing(struct chan_region *r, const char *path, uint64_t total, bool sole,
				char *err, size_t errlen)
{
	struct chan_hdr *h = MAP_FAILED;
	struct stat st;
	uint64_t deadline = sluice_now_ns() + CHAN_OPEN_WAIT_NS;
	uint64_t magic = 0;
	for (;;) {
		if (fstat(r->fd, &st) != 0) {
			chan_err(err, errlen, "channel %s: fstat: %s", path, strerror(errno));
			goto fail;
		}
		if (h == MAP_FAILED && (uint64_t)st.st_size >= sizeof(struct chan_hdr)) {
			h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, r->fd, 0);
			if (h == MAP_FAILED) {
				chan_err(err, errlen, "channel %s: mmap: %s", path, strerror(errno));
				goto fail;
			}
		}
		if (h != MAP_FAILED) {
			magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
			if (magic != 0)
				break;
		}
		if (sole) {
			chan_err(err, errlen, "channel %s: region never initialised (file size %lld, magic unset)",
				 path, (long long)st.st_size);
			goto fail;
		}
		if (sluice_now_ns() >= deadline) {
			chan_err(err, errlen,
				 "channel %s: region not initialised after 2 s (file size %lld, magic unset); "
				 "if no other sluice process is starting, remove the file",
				 path, (long long)st.st_size);
			goto fail;
		}
		chan_sleep_ns(CHAN_OPEN_POLL_NS);
	}
	if (magic != CHAN_MAGIC) {
		chan_err(err, errlen, "channel %s: magic 0x%016llx in region, expected 0x%016llx; "
			 "not a sluice channel, remove the file", path, (unsigned long long)magic,
			 (unsigned long long)CHAN_MAGIC);
		goto fail;
	}
	CHAN_CHECK("version", h->version, CHAN_VERSION, "this build speaks");
	CHAN_CHECK("hdr_size", h->hdr_size, sizeof(struct chan_hdr), "this build uses");
	CHAN_CHECK("nworkers", h->nworkers, r->nworkers, "configured");
	CHAN_CHECK("ring_size", h->ring_size, r->ring_size, "configured");
	CHAN_CHECK("total_size", h->total_size, total, "expected");
	CHAN_CHECK("file size", st.st_size, total, "expected");
	munmap(h, sizeof(*h));
	h = MAP_FAILED;
	void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, 0);
	if (m == MAP_FAILED) {
		chan_err(err, errlen, "channel %s: mmap: %s", path, strerror(errno));
		goto fail;
	}
	r->hdr = m;
	r->map_len = total;
	uint64_t data = chan_data_start(r->nworkers);
	for (uint32_t i = 0; i < 2 * r->nworkers; i++) {
		struct chan_ring *ring = &r->hdr->rings[i];
		if (ring->size != r->ring_size || ring->data_off != data + (uint64_t)i * r->ring_size) {
			chan_err(err, errlen, "channel %s: ring %u block corrupt (size %u, data_off %llu); "
				 "remove the file", path, i, ring->size, (unsigned long long)ring->data_off);
			goto fail;
		}
	}
	return 0;
fail:
	if (h != MAP_FAILED)
		munmap(h, sizeof(*h));
	return -1;
}

static inline struct chan_ring *chan_ring_at(struct chan_region *r, uint32_t idx)
{
	return &r->hdr->rings[idx];
}

/*
 * Claims this role's half of every ring. Producer handles continue from the
 * head in the region (the peer may still be reading what the previous
 * incarnation wrote to it, and those records are still addressed right).
 * Consumer handles skip what is unread: it was addressed to the previous
 * incarnation of this process, whose connections and requests are gone.
 */
static void chan_attach_role(struct chan_region *r)
{
	struct chan_hdr *h = r->hdr;
	bool dp = r->role == CHAN_ROLE_DATAPLANE;
	for (uint32_t w = 0; w < r->nworkers; w++) {
		struct chan_ring *pr = chan_ring_at(r, dp ? 2 * w : 2 * w + 1);
		struct chan_ring *cr = chan_ring_at(r, dp ? 2 * w + 1 : 2 * w);
		struct chan_prod *p = &r->slots[w].prod;
		struct chan_cons *c = &r->slots[w].cons;
		p->ring = pr;
		p->data = (uint8_t *)h + pr->data_off;
		p->mask = pr->size - 1u;
		p->head = atomic_load_explicit(&pr->head, memory_order_relaxed);
		p->cached_tail = atomic_load_explicit(&pr->tail, memory_order_acquire);
		p->pending = 0;
		p->bell_fd = dp ? r->bell_c : r->bell_w[w];
		p->max_payload = pr->size / 4u - (uint32_t)sizeof(struct chan_rec);
		p->full_count = 0;
		p->bell_count = 0;
		uint64_t head = atomic_load_explicit(&cr->head, memory_order_acquire);
		atomic_store_explicit(&cr->sleeping, 0, memory_order_relaxed);
		atomic_store_explicit(&cr->tail, head, memory_order_release);
		c->ring = cr;
		c->data = (uint8_t *)h + cr->data_off;
		c->mask = cr->size - 1u;
		c->tail = head;
		c->cached_head = head;
	}
	/* The heartbeat is cleared, not stamped: a process that has attached is
	 * not yet serving (control still opens its store and admin socket), so
	 * its peer sees it alive only from its loop's first chan_heartbeat(). */
	uint32_t pid = (uint32_t)getpid();
	if (dp) {
		atomic_store_explicit(&h->dp_heartbeat_ns, 0, memory_order_release);
		atomic_fetch_add_explicit(&h->dp_epoch, 1, memory_order_acq_rel);
		atomic_store_explicit(&h->dp_pid, pid, memory_order_release);
	} else {
		atomic_store_explicit(&h->cp_heartbeat_ns, 0, memory_order_release);
		atomic_fetch_add_explicit(&h->cp_epoch, 1, memory_order_acq_rel);
		atomic_store_explicit(&h->cp_pid, pid, memory_order_release);
	}
}

static void chan_free(struct chan_region *r)
{
	if (r->hdr)
		munmap(r->hdr, r->map_len);
	if (r->fd >= 0)
		close(r->fd);
	if (r->bell_c >= 0)
		close(r->bell_c);
	for (uint32_t w = 0; w < CHAN_MAX_WORKERS; w++)
		if (r->bell_w[w] >= 0)
			close(r->bell_w[w]);
	free(r->slots);
	free(r);
}

/*
 * Makes a new region under a private name and links it in at path, so a
 * file at path is always a whole region (an opener never sees one half
 * made). Returns 0 when it created the region (r->fd holds it, locked
 * shared), 1 when another process linked one in first, -1 on error.
 */
static int chan_create_at(struct chan_region *r, const char *path, uint64_t total, char *err,
			  size_t errlen)
{
	char tmp[PATH_MAX];
	int n = snprintf(tmp, sizeof(tmp), "%s.new-%d", path, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		chan_err(err, errlen, "channel %s: path too long", path);
		return -1;
	}
	/* Only this pid makes that name: a leftover is from a crash of ours. */
	unlink(tmp);
	r->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (r->fd < 0) {
		chan_err(err, errlen, "channel %s: create %s: %s", path, tmp, strerror(errno));
		return -1;
	}
	if (flock(r->fd, LOCK_SH) != 0) {
		chan_err(err, errlen, "channel %s: flock: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if (chan_create(r, path, total, err, errlen) != 0) {
		unlink(tmp);
		return -1;
	}
	int rc = link(tmp, path);
	int e = errno;
	unlink(tmp);
	if (rc == 0)
		return 0;
	munmap(r->hdr, r->map_len);
	r->hdr = NULL;
	close(r->fd);
	r->fd = -1;
	if (e == EEXIST)
		return 1;
	chan_err(err, errlen, "channel %s: link: %s", path, strerror(e));
	return -1;
}

/* True while fd still names the file at path: a last process out may have
 * removed (and another recreated) it between our open and our lock. */
static bool chan_same_file(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* A stale file may be replaced when it is a sluice region (of any version
 * or layout) or one whose creator died before publishing magic: never a
 * file that carries some other magic. */
static bool chan_replaceable(int fd, uint64_t *magic)
{
	*magic = 0;
	ssize_t n = pread(fd, magic, sizeof(*magic), 0);
	return n >= 0 && (*magic == CHAN_MAGIC || *magic == 0);
}

/*
 * Presence: each attached process holds an open-file-description read lock
 * on one byte of the region file (its role number), so the kernel drops it
 * the moment the process dies; a peer asks with F_OFD_GETLK and sees a
 * crash at once instead of after the heartbeat timeout. Shared, so it never
 * refuses an attach; byte-range locks do not interact with the file's flock.
 */
static int chan_role_lock(int fd, enum chan_role role)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = (off_t)role, .l_len = 1 };
	return fcntl(fd, F_OFD_SETLK, &fl);
}

struct chan_region *chan_open(const char *path, uint32_t nworkers, uint32_t ring_size,
			      enum chan_role role, char *err, size_t errlen)
{
	if (nworkers == 0 || nworkers > CHAN_MAX_WORKERS) {
		chan_err(err, errlen, "channel %s: nworkers %u out of range 1..%u", path, nworkers,
			 CHAN_MAX_WORKERS);
		return NULL;
	}
	if (ring_size < CHAN_RING_MIN || ring_size > CHAN_RING_MAX || (ring_size & (ring_size - 1))) {
		chan_err(err, errlen, "channel %s: ring_size %u must be a power of two in %u..%u", path,
			 ring_size, CHAN_RING_MIN, CHAN_RING_MAX);
		return NULL;
	}
	if (role != CHAN_ROLE_DATAPLANE && role != CHAN_ROLE_CONTROL) {
		chan_err(err, errlen, "channel %s: unknown role %d", path, (int)role);
		return NULL;
	}
	struct chan_region *r = calloc(1, sizeof(*r));
	if (!r) {
		chan_err(err, errlen, "channel %s: out of memory", path);
		return NULL;
	}
	r->fd = -1;
	r->bell_c = -1;
	for (uint32_t w = 0; w < CHAN_MAX_WORKERS; w++)
		r->bell_w[w] = -1;
	r->role = role;
	r->nworkers = nworkers;
	r->ring_size = ring_size;
	bool created = false;
	uint64_t total = chan_total_size(nworkers, ring_size);

	size_t slots_len = sizeof(struct chan_slot) * nworkers;
	r->slots = aligned_alloc(SLUICE_CACHELINE, slots_len);
	if (!r->slots) {
		chan_err(err, errlen, "channel %s: out of memory", path);
		goto fail;
	}
	memset(r->slots, 0, slots_len);

	if (strlen(path) >= sizeof(r->path)) {
		chan_err(err, errlen, "channel %s: path too long", path);
		goto fail;
	}
	memcpy(r->path, path, strlen(path) + 1);
	for (int attempt = 0;; attempt++) {
		if (attempt == CHAN_OPEN_ATTEMPTS) {
			chan_err(err, errlen, "channel %s: the file keeps changing under us "
				 "(other processes creating and removing it)", path);
			goto fail;
		}
		if (r->fd >= 0)
			close(r->fd);
		r->fd = open(path, O_RDWR | O_CLOEXEC);
		if (r->fd < 0) {
			if (errno != ENOENT) {
				chan_err(err, errlen, "channel %s: open: %s", path, strerror(errno));
				goto fail;
			}
			int rc = chan_create_at(r, path, total, err, errlen);
			if (rc < 0)
				goto fail;
			if (rc == 0) {
				created = true;
				break;
			}
			continue;
		}
		if (flock(r->fd, LOCK_EX | LOCK_NB) == 0) {
			if (!chan_same_file(r->fd, path))
				continue;
			/* Nobody holds it: what a crashed run left. */
			char why[256];
			if (chan_attach_existing(r, path, total, true, why, sizeof(why)) == 0) {
				snprintf(r->note, sizeof(r->note), "reused the region a previous run left");
				break;
			}
			uint64_t magic;
			if (!chan_replaceable(r->fd, &magic)) {
				chan_err(err, errlen, "channel %s: magic 0x%016llx in region, expected 0x%016llx; "
					 "not a sluice channel, remove the file", path,
					 (unsigned long long)magic, (unsigned long long)CHAN_MAGIC);
				goto fail;
			}
			snprintf(r->note, sizeof(r->note), "replaced a stale region (%s)", why);
			if (r->hdr) {
				munmap(r->hdr, r->map_len);
				r->hdr = NULL;
			}
			if (unlink(path) != 0 && errno != ENOENT) {
				chan_err(err, errlen, "channel %s: removing the stale region: %s", path,
					 strerror(errno));
				goto fail;
			}
			continue;
		}
		if (errno != EWOULDBLOCK) {
			chan_err(err, errlen, "channel %s: flock: %s", path, strerror(errno));
			goto fail;
		}
		if (flock(r->fd, LOCK_SH) != 0) {
			chan_err(err, errlen, "channel %s: flock: %s", path, strerror(errno));
			goto fail;
		}
		if (!chan_same_file(r->fd, path))
			continue;
		if (chan_attach_existing(r, path, total, false, err, errlen) != 0)
			goto fail;
		break;
	}
	/* Shared from now on (a no-op when it already was): the last process
	 * out is the one that can take it exclusive again. */
	if (flock(r->fd, LOCK_SH) != 0) {
		chan_err(err, errlen, "channel %s: flock: %s", path, strerror(errno));
		goto fail;
	}

	if (chan_role_lock(r->fd, role) != 0) {
		chan_err(err, errlen, "channel %s: fcntl(F_OFD_SETLK): %s", path, strerror(errno));
		goto fail;
	}

	r->bell_c = chan_bell_open(path, -1, err, errlen);
	if (r->bell_c < 0)
		goto fail;
	for (uint32_t w = 0; w < nworkers; w++) {
		r->bell_w[w] = chan_bell_open(path, (int)w, err, errlen);
		if (r->bell_w[w] < 0)
			goto fail;
	}
	chan_attach_role(r);
	return r;
fail:
	/* A region this call made goes again unless someone attached meanwhile;
	 * a region that belongs to someone else is left alone. */
	if (created && flock(r->fd, LOCK_EX | LOCK_NB) == 0 && chan_same_file(r->fd, path))
		unlink(path);
	chan_free(r);
	return NULL;
}

const char *chan_open_note(const struct chan_region *r)
{
	return r->note[0] ? r->note : NULL;
}

/* Clearing pid and heartbeat tells the peer at once that this side left
 * on purpose instead of letting it wait for the liveness timeout. */
bool chan_close(struct chan_region *r)
{
	if (!r)
		return false;
	struct chan_hdr *h = r->hdr;
	if (r->role == CHAN_ROLE_DATAPLANE) {
		atomic_store_explicit(&h->dp_heartbeat_ns, 0, memory_order_release);
		atomic_store_explicit(&h->dp_pid, 0, memory_order_release);
	} else {
		atomic_store_explicit(&h->cp_heartbeat_ns, 0, memory_order_release);
		atomic_store_explicit(&h->cp_pid, 0, memory_order_release);
	}
	/* Exclusive only when no peer holds its shared lock: the last one out
	 * removes the region, while a peer that is still attached keeps it. */
	bool last = flock(r->fd, LOCK_EX | LOCK_NB) == 0 && chan_same_file(r->fd, r->path);
	if (last)
		chan_unlink(r->path, r->nworkers);
	chan_free(r);
	return last;
}

/* Keeps going past errors so one stale doorbell does not leave the rest. */
static void chan_unlink_one(const char *p, int *first_errno)
{
	if (unlink(p) != 0 && errno != ENOENT && *first_errno == 0)
		*first_errno = errno;
}

int chan_unlink(const char *path, uint32_t nworkers)
{
	int first_errno = 0;
	char bp[PATH_MAX];
	chan_unlink_one(path, &first_errno);
	if (chan_bell_path(bp, sizeof(bp), path, -1) == 0)
		chan_unlink_one(bp, &first_errno);
	else if (first_errno == 0)
		first_errno = ENAMETOOLONG;
	for (uint32_t w = 0; w < nworkers && w < CHAN_MAX_WORKERS; w++) {
		if (chan_bell_path(bp, sizeof(bp), path, (int)w) == 0)
			chan_unlink_one(bp, &first_errno);
		else if (first_errno == 0)
			first_errno = ENAMETOOLONG;
	}
	if (first_errno) {
		errno = first_errno;
		return -1;
	}
	return 0;
}

struct chan_hdr *chan_header(struct chan_region *r)
{
	return r->hdr;
}

uint32_t chan_nworkers(const struct chan_region *r)
{
	return r->nworkers;
}

struct chan_prod *chan_producer(struct chan_region *r, uint32_t w)
{
	return w < r->nworkers ? &r->slots[w].prod : NULL;
}

struct chan_cons *chan_consumer(struct chan_region *r, uint32_t w)
{
	return w < r->nworkers ? &r->slots[w].cons : NULL;
}

int chan_doorbell_fd(struct chan_region *r, uint32_t w)
{
	if (r->role == CHAN_ROLE_CONTROL)
		return r->bell_c;
	return w < r->nworkers ? r->bell_w[w] : -1;
}

void chan_doorbell_drain(struct chan_region *r, uint32_t w)
{
	int fd = chan_doorbell_fd(r, w);
	if (fd < 0)
		return;
	uint8_t buf[256];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		/* EAGAIN: empty. n == 0 cannot happen while we hold a writer end. */
		return;
	}
}

static _Atomic uint64_t *chan_own_heartbeat(struct chan_region *r)
{
	return r->role == CHAN_ROLE_DATAPLANE ? &r->hdr->dp_heartbeat_ns : &r->hdr->cp_heartbeat_ns;
}

void chan_heartbeat(struct chan_region *r, uint64_t now_ns)
{
	if (!r->beat_stopped)
		atomic_store_explicit(chan_own_heartbeat(r), now_ns, memory_order_release);
}

void chan_heartbeat_stop(struct chan_region *r)
{
	r->beat_stopped = true;
	atomic_store_explicit(chan_own_heartbeat(r), CHAN_HB_WITHDRAWN, memory_order_release);
}

bool chan_peer_withdrawn(struct chan_region *r)
{
	_Atomic uint64_t *hb = r->role == CHAN_ROLE_DATAPLANE ? &r->hdr->cp_heartbeat_ns
							       : &r->hdr->dp_heartbeat_ns;
	return atomic_load_explicit(hb, memory_order_acquire) == CHAN_HB_WITHDRAWN;
}

bool chan_peer_attached(struct chan_region *r)
{
	enum chan_role peer = r->role == CHAN_ROLE_DATAPLANE ? CHAN_ROLE_CONTROL : CHAN_ROLE_DATAPLANE;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)peer, .l_len = 1 };
	/* Without the answer (an old kernel) the heartbeat alone decides. */
	if (fcntl(r->fd, F_OFD_GETLK, &fl) != 0)
		return true;
	return fl.l_type != F_UNLCK;
}

bool chan_peer_alive(struct chan_region *r, uint64_t now_ns, uint64_t timeout_ns)
{
	_Atomic uint64_t *hb = r->role == CHAN_ROLE_DATAPLANE ? &r->hdr->cp_heartbeat_ns
							       : &r->hdr->dp_heartbeat_ns;
	uint64_t t = atomic_load_explicit(hb, memory_order_acquire);
	if (t == 0 || t == CHAN_HB_WITHDRAWN)
		return false;
	return now_ns <= t || now_ns - t <= timeout_ns;
}

uint32_t chan_peer_epoch(struct chan_region *r)
{
	_Atomic uint32_t *e = r->role == CHAN_ROLE_DATAPLANE ? &r->hdr->cp_epoch : &r->hdr->dp_epoch;
	return atomic_load_explicit(e, memory_order_acquire);
}

/* ---- producer ---------------------------------------------------------- */

static inline uint64_t chan_prod_free(const struct chan_prod *p)
{
	return p->mask + 1u - (p->head - p->cached_tail);
}

/*
 * When the record does not fit between head and the end of the ring, the
 * space is filled with a PAD record and the record starts at offset 0, so
 * the room needed is the tail gap plus the record. The tail is re-read only
 * when the cached copy says there is no room, which keeps the consumer's
 * cache line out of the producer's way while the ring is not near full.
 */
void *chan_reserve(struct chan_prod *p, uint16_t type, uint32_t len)
{
	if (unlikely(len > p->max_payload))
		return NULL;
	uint64_t size = p->mask + 1u;
	uint64_t need = chan_rec_size(len);
	uint64_t off = p->head & p->mask;
	uint64_t gap = size - off;
	uint64_t want = need <= gap ? need : gap + need;
	if (unlikely(chan_prod_free(p) < want)) {
		p->cached_tail = atomic_load_explicit(&p->ring->tail, memory_order_acquire);
		if (chan_prod_free(p) < want) {
			p->full_count++;
			return NULL;
		}
	}
	if (need > gap) {
		struct chan_rec *pad = (struct chan_rec *)(p->data + off);
		pad->len = (uint32_t)(gap - sizeof(struct chan_rec));
		pad->type = CHAN_REC_PAD;
		pad->flags = 0;
		p->head += gap;
		off = 0;
	}
	struct chan_rec *rec = (struct chan_rec *)(p->data + off);
	rec->len = len;
	rec->type = type;
	rec->flags = 0;
	return rec->payload;
}

/* A record grown past its reservation is a caller's bug; the ring only
 * vouched for the reserved bytes, so the record is dropped (head stays, the
 * slot is reserved afresh next time) and counted, never published. */
bool chan_commit(struct chan_prod *p, uint32_t len)
{
	struct chan_rec *rec = (struct chan_rec *)(p->data + (p->head & p->mask));
	if (unlikely(len > rec->len)) {
		p->bad_commits++;
		return false;
	}
	rec->len = len;
	p->head += chan_rec_size(len);
	p->pending++;
	return true;
}

/*
 * The seq_cst fence between publishing head and reading `sleeping` pairs
 * with the one in chan_prepare_sleep(): either the consumer sees the new
 * head and stays awake, or this side sees the flag and rings.
 */
void chan_publish(struct chan_prod *p)
{
	if (p->pending == 0)
		return;
	p->pending = 0;
	atomic_store_explicit(&p->ring->head, p->head, memory_order_release);
	atomic_thread_fence(memory_order_seq_cst);
	if (likely(!atomic_load_explicit(&p->ring->sleeping, memory_order_relaxed)))
		return;
	if (!atomic_exchange_explicit(&p->ring->sleeping, 0, memory_order_acq_rel))
		return;
	if (p->bell_fd < 0)
		return;
	uint8_t b = 1;
	ssize_t n;
	do {
		n = write(p->bell_fd, &b, 1);
	} while (n < 0 && errno == EINTR);
	/* EAGAIN means the FIFO is full of unread rings: the consumer will wake
	 * anyway, so the byte is not needed. */
	p->bell_count++;
}

uint64_t chan_free_bytes(struct chan_prod *p)
{
	p->cached_tail = atomic_load_explicit(&p->ring->tail, memory_order_acquire);
	return chan_prod_free(p);
}

/* ---- consumer ---------------------------------------------------------- */

/*
 * A record whose length runs past the published data or the ring's end can
 * only come from a corrupt region; the consumer skips everything published
 * rather than read outside the ring.
 */
const struct chan_rec *chan_peek(struct chan_cons *c)
{
	for (;;) {
		if (c->tail == c->cached_head) {
			c->cached_head = atomic_load_explicit(&c->ring->head, memory_order_acquire);
			if (c->tail == c->cached_head)
				return NULL;
		}
		uint64_t off = c->tail & c->mask;
		const struct chan_rec *rec = (const struct chan_rec *)(c->data + off);
		uint64_t sz = chan_rec_size(rec->len);
		if (unlikely(rec->len > c->mask || sz > c->cached_head - c->tail || off + sz > c->mask + 1u)) {
			c->tail = c->cached_head;
			return NULL;
		}
		if (rec->type != CHAN_REC_PAD)
			return rec;
		c->tail += sz;
	}
}

void chan_consume(struct chan_cons *c)
{
	const struct chan_rec *rec = (const struct chan_rec *)(c->data + (c->tail & c->mask));
	c->tail += chan_rec_size(rec->len);
}

void chan_release(struct chan_cons *c)
{
	atomic_store_explicit(&c->ring->tail, c->tail, memory_order_release);
}

/*
 * Releases consumed space first so a producer that is waiting for room is
 * not left waiting on a consumer that is about to block.
 */
bool chan_prepare_sleep(struct chan_cons *c)
{
	chan_release(c);
	atomic_store_explicit(&c->ring->sleeping, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	c->cached_head = atomic_load_explicit(&c->ring->head, memory_order_acquire);
	if (c->cached_head == c->tail)
		return true;
	atomic_store_explicit(&c->ring->sleeping, 0, memory_order_relaxed);
	return false;
}

void chan_cancel_sleep(struct chan_cons *c)
{
	atomic_store_explicit(&c->ring->sleeping, 0, memory_order_relaxed);
}

/* /proc readings (see sb_proc.h). */
#include "sb_proc.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return (int)n;
}

/* The value in kB of the status line `key:` (e.g. "RssAnon"), or -1. */
static long long status_kb(const char *status, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = status; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		long long v;
		if (strncmp(p, key, kl) == 0 && p[kl] == ':' && sscanf(p + kl + 1, "%lld", &v) == 1)
			return v;
	}
	return -1;
}

void sb_proc_read(const pid_t *pids, int n, struct sb_proc_sample *s)
{
	long tck = sysconf(_SC_CLK_TCK);

	memset(s, 0, sizeof(*s));
	for (int i = 0; i < n; i++) {
		char path[64], buf[1024], status[4096];
		unsigned long long ut = 0, st = 0;
		long long anon, shmem, file;
		const char *p;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pids[i]);
		if (read_file(path, buf, sizeof(buf)) <= 0)
			continue;
		/* The command name may hold spaces and parentheses: fields
		 * count from the last ')'. utime and stime are fields 14, 15. */
		p = strrchr(buf, ')');
		if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
				 &st) != 2)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pids[i]);
		if (read_file(path, status, sizeof(status)) <= 0)
			continue;
		anon = status_kb(status, "RssAnon");
		shmem = status_kb(status, "RssShmem");
		file = status_kb(status, "RssFile");
		if (anon < 0 || shmem < 0 || file < 0)
			continue;
		s->cpu_ns += (ut + st) * (1000000000ull / (unsigned long long)tck);
		s->sys_ns += st * (1000000000ull / (unsigned long long)tck);
		s->mem_bytes += (unsigned long long)(anon + shmem) * 1024u;
		s->file_bytes += (unsigned long long)file * 1024u;
		s->ok++;
	}
}

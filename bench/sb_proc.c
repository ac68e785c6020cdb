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

void sb_proc_read(const pid_t *pids, int n, struct sb_proc_sample *s)
{
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

	memset(s, 0, sizeof(*s));
	for (int i = 0; i < n; i++) {
		char path[64], buf[1024];
		unsigned long long ut = 0, st = 0, size = 0, res = 0;
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
		snprintf(path, sizeof(path), "/proc/%d/statm", (int)pids[i]);
		if (read_file(path, buf, sizeof(buf)) <= 0 || sscanf(buf, "%llu %llu", &size, &res) != 2)
			continue;
		s->cpu_ns += (ut + st) * (1000000000ull / (unsigned long long)tck);
		s->sys_ns += st * (1000000000ull / (unsigned long long)tck);
		s->rss_bytes += res * (unsigned long long)page;
		s->ok++;
	}
}

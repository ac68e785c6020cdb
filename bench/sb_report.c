/* The run's table, JSON and plot (see sb_report.h). */
#include "sb_report.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const sb_err_names[SB_ERR_MAX] = {
	[SB_ERR_CONNECT] = "connect",     [SB_ERR_STATUS] = "http_status",
	[SB_ERR_CLOSED] = "closed",       [SB_ERR_PROTOCOL] = "protocol",
	[SB_ERR_SEQ] = "seq_gap",         [SB_ERR_MISSING] = "missing_tokens",
	[SB_ERR_EVENT] = "error_event",   [SB_ERR_PROMPT] = "prompt_refused",
	[SB_ERR_NO_IDLE] = "no_idle_session", [SB_ERR_WRITE] = "short_write",
	[SB_ERR_UNFINISHED] = "unfinished",
};

static const double qs[] = { 0.5, 0.9, 0.99, 0.999 };

static double cpu_s(const struct sb_step *s)
{
	return (double)(s->p1.cpu_ns - s->p0.cpu_ns) / 1e9;
}

static double sys_share(const struct sb_step *s)
{
	uint64_t all = s->p1.cpu_ns - s->p0.cpu_ns;

	return all ? (double)(s->p1.sys_ns - s->p0.sys_ns) / (double)all : 0;
}

/* Server CPU microseconds per delivered token; 0 without pids or tokens. */
static double us_per_token(const struct sb_step *s)
{
	return s->tokens && s->p1.ok ? cpu_s(s) * 1e6 / (double)s->tokens : 0;
}

static double per_conn(uint64_t rss, uint64_t base, long conns)
{
	return conns > 0 && rss > base ? (double)(rss - base) / (double)conns : 0;
}

static void hist_row(FILE *f, const char *name, const struct sb_hist *h)
{
	fprintf(f, "  %-26s", name);
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
		fprintf(f, " %9.3f", (double)sb_hist_quantile(h, qs[i]) / 1e6);
	fprintf(f, " %9.3f %10llu\n", (double)h->max / 1e6, (unsigned long long)h->count);
}

static void step_add(struct sb_step *d, const struct sb_step *s)
{
	d->prompt_rate += s->prompt_rate;
	d->offered_tok_s += s->offered_tok_s;
	if (s->seconds > d->seconds)
		d->seconds = s->seconds;
	d->prompts += s->prompts;
	d->tokens += s->tokens;
	d->frames += s->frames;
	d->dones += s->dones;
	sb_hist_merge(&d->ttft, &s->ttft);
	sb_hist_merge(&d->gap, &s->gap);
	sb_hist_merge(&d->delay, &s->delay);
	sb_hist_merge(&d->first, &s->first);
	if (s->p0.ok && (!d->p0.ok || s->p0.cpu_ns < d->p0.cpu_ns))
		d->p0 = s->p0;
	if (s->p1.ok && (!d->p1.ok || s->p1.cpu_ns > d->p1.cpu_ns))
		d->p1 = s->p1;
	d->bench_cpu_s += s->bench_cpu_s;
	for (int e = 0; e < SB_ERR_MAX; e++)
		d->errors[e] += s->errors[e];
}

void sb_results_add(struct sb_results *dst, const struct sb_results *src, bool first)
{
	if (first) {
		dst->nsteps = src->nsteps;
		dst->npids = src->npids;
		dst->streaming = src->streaming;
		memcpy(dst->steps, src->steps, sizeof(dst->steps));
	} else {
		if (src->nsteps < dst->nsteps)
			dst->nsteps = src->nsteps;
		if (src->streaming.mem_bytes > dst->streaming.mem_bytes)
			dst->streaming = src->streaming;
		for (int i = 0; i < dst->nsteps; i++)
			step_add(&dst->steps[i], &src->steps[i]);
	}
	dst->conns_open += src->conns_open;
	dst->open_now += src->open_now;
	if (src->ramp_took_s > dst->ramp_took_s)
		dst->ramp_took_s = src->ramp_took_s;
	for (int e = 0; e < SB_ERR_MAX; e++)
		dst->errors[e] += src->errors[e];
}

void sb_report_progress(FILE *f, const char *phase, double t, long open, long total, double tok_s,
			double p99_ms, uint64_t errors)
{
	fprintf(f, "[%s %5.1fs] streams %ld/%ld  tokens/s %.0f  p99 delay %.2f ms  errors %llu\n", phase, t,
		open, total, tok_s, p99_ms, (unsigned long long)errors);
}

void sb_report_table(FILE *f, const struct sb_results *r)
{
	const struct sb_conf *c = r->conf;

	fprintf(f, "sluice-bench %s: target %s %s:%ld, protocol %s\n", c->name, c->target_s, c->host,
		c->port, c->protocol_s);
	fprintf(f, "  %ld streams (%ld per session), answers of %ld tokens at %ld tokens/s after %ld ms; "
		   "%ld open after %.1f s\n",
		c->connections, c->subscribers, c->answer_tokens, c->token_rate, c->ttft_ms,
		r->conns_open, r->ramp_took_s);
	if (r->conns_open < c->connections)
		fprintf(f, "  the ramp ended at its deadline with %ld of %ld streams open: every figure "
			   "below, memory per stream included, is of those %ld\n",
			r->conns_open, c->connections, r->conns_open);
	for (int i = 0; i < r->nsteps; i++) {
		const struct sb_step *s = &r->steps[i];
		uint64_t errs = 0;

		fprintf(f, "\nstep %d: prompts/s %s%.1f, offered %.0f tokens/s, %.1f s, %llu prompts\n", i + 1,
			s->prompt_rate > 0 ? "" : "back to back, ", s->prompt_rate, s->offered_tok_s,
			s->seconds, (unsigned long long)s->prompts);
		fprintf(f, "  delivered %.0f tokens/s, %.0f frames/s (%.2f tokens per frame), %llu answers done\n",
			(double)s->tokens / s->seconds, (double)s->frames / s->seconds,
			s->frames ? (double)s->tokens / (double)s->frames : 0.0,
			(unsigned long long)s->dones);
		fprintf(f, "  %-26s %9s %9s %9s %9s %9s %10s\n", "latency (ms)", "p50", "p90", "p99",
			"p99.9", "max", "samples");
		hist_row(f, "time to first token", &s->ttft);
		hist_row(f, "gap between frames", &s->gap);
		hist_row(f, "creation -> arrival", &s->delay);
		hist_row(f, "  first token of answers", &s->first);
		if (s->p1.ok)
			fprintf(f, "  server CPU %.2f s (%.0f%% of a core, %.0f%% in the kernel): %.2f us per "
				   "delivered token (= s per million tokens)\n",
				cpu_s(s), cpu_s(s) * 100 / s->seconds, sys_share(s) * 100, us_per_token(s));
		fprintf(f, "  sluice-bench itself: %.0f%% of a core\n", s->bench_cpu_s * 100 / s->seconds);
		for (int e = 0; e < SB_ERR_MAX; e++)
			errs += s->errors[e];
		fprintf(f, "  errors:");
		if (!errs)
			fprintf(f, " none");
		for (int e = 0; e < SB_ERR_MAX; e++)
			if (s->errors[e])
				fprintf(f, " %s=%llu", sb_err_names[e], (unsigned long long)s->errors[e]);
		fprintf(f, "\n");
	}
	if (r->base.ok) {
		fprintf(f, "\nserver memory (anonymous and shared, resident, of %d processes): %.1f MiB before, "
			   "%.1f MiB idle with %ld streams (%.0f B each), %.1f MiB streaming (%.0f B each); "
			   "file-backed %.1f MiB before, %.1f MiB streaming\n",
			r->npids ? r->npids : r->base.ok, (double)r->base.mem_bytes / 1048576.0,
			(double)r->idle.mem_bytes / 1048576.0, r->conns_open,
			per_conn(r->idle.mem_bytes, r->base.mem_bytes, r->conns_open),
			(double)r->streaming.mem_bytes / 1048576.0,
			per_conn(r->streaming.mem_bytes, r->base.mem_bytes, r->conns_open),
			(double)r->base.file_bytes / 1048576.0, (double)r->streaming.file_bytes / 1048576.0);
	}
	fprintf(f, "outside the steps (ramp, drain):");
	{
		bool any = false;

		for (int e = 0; e < SB_ERR_MAX; e++)
			if (r->errors[e]) {
				fprintf(f, " %s=%llu", sb_err_names[e], (unsigned long long)r->errors[e]);
				any = true;
			}
		fprintf(f, "%s\n", any ? "" : " no errors");
	}
}

static void json_hist(FILE *f, const char *name, const struct sb_hist *h)
{
	fprintf(f, "\"%s\":{\"count\":%llu,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,"
		   "\"p999_ms\":%.4f,\"max_ms\":%.4f}",
		name, (unsigned long long)h->count, (double)sb_hist_quantile(h, 0.5) / 1e6,
		(double)sb_hist_quantile(h, 0.9) / 1e6, (double)sb_hist_quantile(h, 0.99) / 1e6,
		(double)sb_hist_quantile(h, 0.999) / 1e6, (double)h->max / 1e6);
}

static void json_errors(FILE *f, const uint64_t *e)
{
	bool first = true;

	fprintf(f, "\"errors\":{");
	for (int i = 0; i < SB_ERR_MAX; i++) {
		if (!e[i])
			continue;
		fprintf(f, "%s\"%s\":%llu", first ? "" : ",", sb_err_names[i], (unsigned long long)e[i]);
		first = false;
	}
	fprintf(f, "}");
}

int sb_report_json(const char *path, const struct sb_results *r)
{
	const struct sb_conf *c = r->conf;
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	/* Only names the bench itself chose are written unescaped: labels and
	 * targets come from the scenario, which the operator wrote. */
	fprintf(f, "{\"name\":\"%s\",\"target\":\"%s\",\"protocol\":\"%s\",\"connections\":%ld,"
		   "\"subscribers\":%ld,\"answer_tokens\":%ld,\"token_rate\":%ld,\"ttft_ms\":%ld,"
		   "\"streams_open\":%ld,\"ramp_s\":%.3f,",
		c->name, c->target_s, c->protocol_s, c->connections, c->subscribers, c->answer_tokens,
		c->token_rate, c->ttft_ms, r->conns_open, r->ramp_took_s);
	fprintf(f, "\"memory\":{\"processes\":%d,\"base_bytes\":%llu,\"idle_bytes\":%llu,"
		   "\"streaming_bytes\":%llu,\"idle_per_conn\":%.1f,\"streaming_per_conn\":%.1f,"
		   "\"file_base_bytes\":%llu,\"file_streaming_bytes\":%llu},",
		r->base.ok, (unsigned long long)r->base.mem_bytes, (unsigned long long)r->idle.mem_bytes,
		(unsigned long long)r->streaming.mem_bytes,
		per_conn(r->idle.mem_bytes, r->base.mem_bytes, r->conns_open),
		per_conn(r->streaming.mem_bytes, r->base.mem_bytes, r->conns_open),
		(unsigned long long)r->base.file_bytes, (unsigned long long)r->streaming.file_bytes);
	json_errors(f, r->errors);
	fprintf(f, ",\"steps\":[");
	for (int i = 0; i < r->nsteps; i++) {
		const struct sb_step *s = &r->steps[i];

		fprintf(f, "%s{\"prompt_rate\":%.3f,\"offered_tokens_per_s\":%.1f,\"seconds\":%.3f,"
			   "\"prompts\":%llu,\"tokens\":%llu,\"frames\":%llu,\"dones\":%llu,"
			   "\"tokens_per_s\":%.1f,\"frames_per_s\":%.1f,\"cpu_s\":%.4f,"
			   "\"cpu_us_per_token\":%.4f,\"cpu_kernel_share\":%.4f,\"bench_cpu_share\":%.4f,",
			i ? "," : "", s->prompt_rate, s->offered_tok_s, s->seconds,
			(unsigned long long)s->prompts, (unsigned long long)s->tokens,
			(unsigned long long)s->frames, (unsigned long long)s->dones,
			(double)s->tokens / s->seconds, (double)s->frames / s->seconds,
			s->p1.ok ? cpu_s(s) : 0.0, us_per_token(s), sys_share(s), s->bench_cpu_s / s->seconds);
		json_hist(f, "ttft", &s->ttft);
		fprintf(f, ",");
		json_hist(f, "gap", &s->gap);
		fprintf(f, ",");
		json_hist(f, "delay", &s->delay);
		fprintf(f, ",");
		json_hist(f, "first_delay", &s->first);
		fprintf(f, ",");
		json_errors(f, s->errors);
		fprintf(f, "}");
	}
	fprintf(f, "]}\n");
	return fclose(f) == 0 ? 0 : -1;
}

int sb_report_plot(const char *path, const struct sb_results *r)
{
	char dat[] = "/tmp/sluice-bench-XXXXXX";
	int fd = mkstemp(dat);
	FILE *f, *gp;
	int rc;

	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		perror("sluice-bench: plot data");
		return -1;
	}
	for (int i = 0; i < r->nsteps; i++) {
		const struct sb_step *s = &r->steps[i];

		fprintf(f, "%.1f %.4f %.4f %.4f %.4f\n", s->offered_tok_s,
			(double)sb_hist_quantile(&s->delay, 0.5) / 1e6,
			(double)sb_hist_quantile(&s->delay, 0.99) / 1e6,
			(double)sb_hist_quantile(&s->delay, 0.999) / 1e6, us_per_token(s));
	}
	fclose(f);
	gp = popen("gnuplot", "w");
	if (!gp) {
		perror("sluice-bench: gnuplot");
		unlink(dat);
		return -1;
	}
	fprintf(gp, "set terminal png size 900,540\nset output '%s'\n"
		    "set title 'sluice-bench %s: token delay (creation to arrival) and server CPU'\n"
		    "set xlabel 'offered tokens/s'\nset ylabel 'delay (ms)'\nset y2label 'server CPU (us per token)'\n"
		    "set ytics nomirror\nset y2tics\nset key top left\nset grid\n"
		    "plot '%s' using 1:2 with linespoints title 'p50', '' using 1:3 with linespoints title 'p99', "
		    "'' using 1:4 with linespoints title 'p99.9', '' using 1:5 axes x1y2 with linespoints lw 2 "
		    "title 'CPU us/token'\n",
		    path, r->conf->name, dat);
	rc = pclose(gp);
	unlink(dat);
	if (rc != 0) {
		fprintf(stderr, "sluice-bench: gnuplot failed (exit %d); is gnuplot installed?\n", rc);
		return -1;
	}
	return 0;
}

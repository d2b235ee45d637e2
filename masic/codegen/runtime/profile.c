/* profile.c: see profile.h. Every call's time is kept (a run makes few calls per site: one per block), so the
 * median is exact. Sites are timed by the compute thread, loads by the loading thread, waits by the compute: each
 * array has one writer, and the profile is written after the loading thread has stopped. */
#include "profile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "report.h"
#include "util.h"

#define TABLE_SITES 10 /* rows of the stderr table */

typedef struct {
  double *seconds; /* one per call */
  size_t calls, cap;
  double total_s;
} samples_t;

typedef struct {
  uint32_t count; /* blocks that read it */
  double read_s;  /* pread and CRC-32C */
  double wait_s;  /* the compute waiting for it */
} load_times_t;

masic_startup_t masic_startup;

static struct {
  const masic_model_t *model; /* NULL: not profiling */
  samples_t *sites;
  load_times_t *loads;
} profile;

void masic_profile_begin(const masic_model_t *m) {
  profile.model = m;
  profile.sites = calloc(m->n_sites ? m->n_sites : 1, sizeof *profile.sites);
  profile.loads = calloc(m->n_loads ? m->n_loads : 1, sizeof *profile.loads);
  if (!profile.sites || !profile.loads) masic_die(MASIC_EXIT_SYSTEM, "out of memory starting the profile");
}

bool masic_profiling(void) { return profile.model != NULL; }

double masic_site_start(void) { return profile.model ? masic_now_s() : 0.0; }

void masic_site_done(uint32_t site, double start) {
  if (!profile.model || site >= profile.model->n_sites) return;
  samples_t *s = &profile.sites[site];
  if (s->calls == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 16;
    s->seconds = realloc(s->seconds, s->cap * sizeof *s->seconds);
    if (!s->seconds) masic_die(MASIC_EXIT_SYSTEM, "out of memory keeping the profile");
  }
  double seconds = masic_now_s() - start;
  s->seconds[s->calls++] = seconds;
  s->total_s += seconds;
}

void masic_profile_load(uint32_t k, double seconds) {
  if (!profile.model) return;
  profile.loads[k].count++;
  profile.loads[k].read_s += seconds;
}

void masic_profile_wait(uint32_t k, double seconds) {
  if (profile.model) profile.loads[k].wait_s += seconds;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(samples_t *s) {
  if (!s->calls) return 0.0;
  qsort(s->seconds, s->calls, sizeof *s->seconds, by_value);
  size_t mid = s->calls / 2;
  return s->calls % 2 ? s->seconds[mid] : (s->seconds[mid - 1] + s->seconds[mid]) / 2;
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(f, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(f, "\\u%04x", ch);
    else
      fputc(ch, f);
  }
  fputc('"', f);
}

static double mb_per_s(uint64_t bytes, double seconds) { return seconds > 0 ? bytes / seconds / 1e6 : 0.0; }

/* Indices of the sites by total time, largest first. */
static uint32_t *sites_by_time(uint32_t n) {
  uint32_t *order = masic_xmalloc((n ? n : 1) * sizeof *order);
  for (uint32_t i = 0; i < n; i++) order[i] = i;
  for (uint32_t i = 1; i < n; i++) /* insertion sort: a model has at most a few thousand sites */
    for (uint32_t j = i; j > 0 && profile.sites[order[j]].total_s > profile.sites[order[j - 1]].total_s; j--) {
      uint32_t t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  return order;
}

static void print_table(double run_s, double kernels_s, uint64_t read_bytes, double read_s, double wait_s) {
  const masic_model_t *m = profile.model;
  fprintf(stderr, "profile: run %.3f ms, kernels %.3f ms; start-up: open %.3f ms, read %.3f ms, check %.3f ms\n",
          1e3 * run_s, 1e3 * kernels_s, 1e3 * masic_startup.open_s, 1e3 * masic_startup.read_s,
          1e3 * masic_startup.check_s);
  fprintf(stderr, "%-28s %-24s %6s %11s %11s %6s\n", "node", "kernel", "calls", "total ms", "median us", "share");
  uint32_t *order = sites_by_time(m->n_sites);
  for (uint32_t r = 0; r < m->n_sites && r < TABLE_SITES; r++) {
    samples_t *s = &profile.sites[order[r]];
    fprintf(stderr, "%-28.28s %-24.24s %6zu %11.3f %11.1f %5.1f%%\n", m->sites[order[r]].node,
            m->sites[order[r]].kernel, s->calls, 1e3 * s->total_s, 1e6 * median(s),
            kernels_s > 0 ? 100 * s->total_s / kernels_s : 0.0);
  }
  free(order);
  if (m->n_loads)
    fprintf(stderr, "streamed: %.1f MB in %.3f ms (%.1f MB/s), kernels waited %.3f ms\n", read_bytes / 1e6,
            1e3 * read_s, mb_per_s(read_bytes, read_s), 1e3 * wait_s);
  fprintf(stderr, "peak RSS: %.1f MB\n", masic_peak_rss_bytes() / 1e6);
}

bool masic_profile_write(FILE *f, const char *path, double run_s, int threads, masic_error_t *err) {
  const masic_model_t *m = profile.model;
  struct utsname machine;
  if (uname(&machine) != 0) strcpy(machine.machine, "unknown");
  fprintf(f, "{\"format\": \"masic-profile/1\", \"model\": ");
  json_string(f, m->name);
  fprintf(f, ", \"machine\": ");
  json_string(f, machine.machine);
  fprintf(f, ", \"threads\": %d, \"block\": %d, \"run_us\": %.3f", threads, m->block, 1e6 * run_s);
  fprintf(f, ",\n \"startup_us\": {\"open\": %.3f, \"read\": %.3f, \"check\": %.3f}", 1e6 * masic_startup.open_s,
          1e6 * masic_startup.read_s, 1e6 * masic_startup.check_s);
  fprintf(f, ",\n \"peak_rss_bytes\": %lld,\n \"sites\": [", masic_peak_rss_bytes());
  double kernels_s = 0;
  for (uint32_t i = 0; i < m->n_sites; i++) {
    samples_t *s = &profile.sites[i];
    kernels_s += s->total_s;
    fprintf(f, "%s\n  {\"site\": %u, \"node\": ", i ? "," : "", i);
    json_string(f, m->sites[i].node);
    fprintf(f, ", \"kernel\": ");
    json_string(f, m->sites[i].kernel);
    fprintf(f, ", \"calls\": %zu, \"total_us\": %.3f, \"median_us\": %.3f}", s->calls, 1e6 * s->total_s,
            1e6 * median(s));
  }
  fprintf(f, "],\n \"loads\": [");
  uint64_t read_bytes = 0;
  double read_s = 0, wait_s = 0;
  for (uint32_t k = 0; k < m->n_loads; k++) {
    const masic_load_t *load = &m->loads[k];
    const load_times_t *t = &profile.loads[k];
    uint64_t bytes = load->kind == MASIC_LOAD_STATE_FILL ? 0 : load->nbytes;
    read_bytes += bytes * t->count;
    read_s += t->read_s;
    wait_s += t->wait_s;
    fprintf(f,
            "%s\n  {\"load\": %u, \"kind\": %u, \"bytes\": %llu, \"count\": %u, \"total_us\": %.3f, "
            "\"mb_per_s\": %.3f, \"wait_us\": %.3f}",
            k ? "," : "", k, (unsigned)load->kind, (unsigned long long)bytes, t->count, 1e6 * t->read_s,
            mb_per_s(bytes * t->count, t->read_s), 1e6 * t->wait_s);
  }
  fprintf(f, "],\n \"read\": {\"bytes\": %llu, \"us\": %.3f, \"mb_per_s\": %.3f, \"wait_us\": %.3f},",
          (unsigned long long)read_bytes, 1e6 * read_s, mb_per_s(read_bytes, read_s), 1e6 * wait_s);
  fprintf(f, "\n \"kernels_us\": %.3f}\n", 1e6 * kernels_s);
  if (fclose(f) != 0) return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot write profile %s: %s", path, strerror(errno));
  print_table(run_s, kernels_s, read_bytes, read_s, wait_s);
  return true;
}

/* util.c: see util.h. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void one_line(char *text) {
  for (unsigned char *p = (unsigned char *)text; *p; p++)
    if (*p < 0x20 || *p == 0x7f) *p = '?';
}

bool masic_fail(masic_error_t *err, int code, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  err->code = code;
  vsnprintf(err->message, sizeof err->message, fmt, args);
  va_end(args);
  one_line(err->message);
  return false;
}

_Noreturn void masic_die_with(const masic_error_t *err) {
  fprintf(stderr, "model: error: %s\n", err->message);
  exit(err->code);
}

_Noreturn void masic_die(int code, const char *fmt, ...) {
  masic_error_t err = {.code = code};
  va_list args;
  va_start(args, fmt);
  vsnprintf(err.message, sizeof err.message, fmt, args);
  va_end(args);
  one_line(err.message);
  masic_die_with(&err);
}

void *masic_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) masic_die(MASIC_EXIT_SYSTEM, "out of memory allocating %zu bytes", n);
  return p;
}

double masic_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t masic_pread_full(int fd, void *buf, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    if (offset > (uint64_t)INT64_MAX || done > (uint64_t)INT64_MAX - offset) return (int64_t)done; /* past any end */
    ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    done += (size_t)r;
  }
  return (int64_t)done;
}

const char *masic_format_shape(char *buf, size_t cap, const char *lead, int ndim, const int64_t *shape) {
  int written = snprintf(buf, cap, "(%s%s", lead ? lead : "", lead && ndim ? ", " : "");
  size_t len = written > 0 ? (size_t)written : 0;
  for (int i = 0; i < ndim && len < cap; i++) {
    written = snprintf(buf + len, cap - len, i ? ", %lld" : "%lld", (long long)shape[i]);
    len += written > 0 ? (size_t)written : 0;
  }
  int total_ndim = ndim + (lead != NULL);
  if (len < cap) snprintf(buf + len, cap - len, "%s", total_ndim == 1 ? ",)" : ")");
  return buf;
}

/* The peak resident memory of this program. getrusage's ru_maxrss is not it: Linux carries the high-water mark over
 * exec, so a program started by vfork or posix_spawn (Python's subprocess) reports at least its parent's peak. The
 * VmHWM line of /proc/self/status belongs to this image alone; ru_maxrss is the fallback where it is missing. */
long long masic_peak_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  long long kib = -1;
  if (f) {
    char line[256];
    while (kib < 0 && fgets(line, sizeof line, f))
      if (sscanf(line, "VmHWM: %lld kB", &kib) != 1) kib = -1;
    fclose(f);
  }
  if (kib < 0) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    kib = usage.ru_maxrss;
  }
  return kib * 1024;
}

/* util.h: what the loader's parts share: exit codes, one-line errors, checked sizes, reading files, shapes.
 *
 * Parsers of untrusted bytes (npy.c, input.c, weights.c, exit_rule.c, args.c) never exit: they fill a masic_error_t
 * and return false, so that a fuzzer can call them in a loop; only loader.c turns an error into an exit. */
#ifndef MASIC_UTIL_H
#define MASIC_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes: 0 success, 1 system failure (out of memory, I/O error, inconsistent build), 2 a problem the user can
 * fix (command line, input file, weights file), 3 a kernel reported failure during a step. */
enum { MASIC_EXIT_SYSTEM = 1, MASIC_EXIT_USER = 2, MASIC_EXIT_STEP = 3 };

#define MASIC_ERROR_CAP 1024

/* An error: its exit code and one line naming the cause (without the "model: error: " prefix). */
typedef struct {
  int code;
  char message[MASIC_ERROR_CAP];
} masic_error_t;

/* Records an error and returns false. The message is made one printable line: control characters (a newline in a
 * file name, say) become '?'. */
__attribute__((format(printf, 3, 4))) bool masic_fail(masic_error_t *err, int code, const char *fmt, ...);

/* Prints "model: error: <message>" on stderr and exits with the code. */
__attribute__((format(printf, 2, 3))) _Noreturn void masic_die(int code, const char *fmt, ...);
_Noreturn void masic_die_with(const masic_error_t *err);

void *masic_xmalloc(size_t n); /* malloc or die */
double masic_now_s(void);      /* monotonic seconds */

/* True if [offset, offset + nbytes) lies within [0, size), without overflow. */
static inline bool masic_range_fits(uint64_t offset, uint64_t nbytes, uint64_t size) {
  return offset <= size && nbytes <= size - offset;
}

/* *out = a * b; false if that overflows. */
static inline bool masic_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
  if (b && a > UINT64_MAX / b) return false;
  *out = a * b;
  return true;
}

/* Reads n bytes at offset, retrying short reads. Returns the bytes read (fewer than n only at end of file), or -1
 * with errno set on an I/O error. */
int64_t masic_pread_full(int fd, void *buf, size_t n, uint64_t offset);

/* Formats a shape the way numpy prints it; `lead` names an extra leading dimension, as in (S, 2, 3). */
const char *masic_format_shape(char *buf, size_t cap, const char *lead, int ndim, const int64_t *shape);

/* The peak resident memory of this program, in bytes. */
long long masic_peak_rss_bytes(void);

#endif

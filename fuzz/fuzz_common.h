/* fuzz_common.h: what the fuzz targets share: reading typed values off the fuzzer's bytes, an in-memory file, and
 * the checks every refusal must pass (one printable line naming a cause, exit code 1 or 2). A failed check aborts,
 * which libFuzzer reports as a crash. */
#ifndef MASIC_FUZZ_COMMON_H
#define MASIC_FUZZ_COMMON_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create; include this header first */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

/* Bytes consumed from the front; reads past the end give zeros. */
typedef struct {
  const uint8_t *p;
  size_t n;
} fuzz_bytes_t;

static inline uint64_t fuzz_take(fuzz_bytes_t *b, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; i++) {
    uint64_t byte = b->n ? (b->n--, *b->p++) : 0;
    v |= byte << (8 * i);
  }
  return v;
}
static inline uint8_t fuzz_u8(fuzz_bytes_t *b) { return (uint8_t)fuzz_take(b, 1); }
static inline uint16_t fuzz_u16(fuzz_bytes_t *b) { return (uint16_t)fuzz_take(b, 2); }
static inline uint32_t fuzz_u32(fuzz_bytes_t *b) { return (uint32_t)fuzz_take(b, 4); }
static inline uint64_t fuzz_u64(fuzz_bytes_t *b) { return fuzz_take(b, 8); }

/* A file holding exactly `data`, on a fresh descriptor (memfd: no disk, no name). */
static inline int fuzz_file(const uint8_t *data, size_t n) {
  int fd = memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0) abort();
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, data + done, n - done);
    if (w <= 0) abort();
    done += (size_t)w;
  }
  return fd;
}

/* A refusal must be one printable line naming a cause, with the user's or the system's exit code. Built with
 * -DFUZZ_VERBOSE, the targets print every refusal (to see which seeds go how far). */
static inline void fuzz_check_error(const masic_error_t *err) {
#ifdef FUZZ_VERBOSE
  fprintf(stderr, "refused: %s\n", err->message);
#endif
  size_t len = strnlen(err->message, sizeof err->message);
  if (len == 0 || len == sizeof err->message) abort();
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)err->message[i] < 0x20 || err->message[i] == 0x7f) abort();
  if (err->code != MASIC_EXIT_USER && err->code != MASIC_EXIT_SYSTEM) abort();
}

/* The same for a reason npy.c gives (a bare string). */
static inline void fuzz_check_reason(const char *why, size_t cap) {
  size_t len = strnlen(why, cap);
  if (len == 0 || len == cap) abort();
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)why[i] < 0x20) abort();
}

#endif

/* weights.c: see weights.h. */
#include "weights.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc32_build(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[0][n] = c;
  }
  /* Tables 1..7 advance a byte through 1..7 more zero bytes, which lets crc32_update consume 8 bytes per step. */
  for (uint32_t n = 0; n < 256; n++)
    for (int s = 1; s < 8; s++) crc_table[s][n] = (crc_table[s - 1][n] >> 8) ^ crc_table[0][crc_table[s - 1][n] & 0xff];
}

void masic_crc32_init(void) { pthread_once(&crc_once, crc32_build); }

uint32_t masic_crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
  crc = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
          crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
          crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
  }
  for (; n; p++, n--) crc = crc_table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

bool masic_weights_verify(int fd, const char *path, uint64_t size, uint64_t expected_size, uint32_t expected_crc,
                          uint8_t *buf, size_t cap, masic_error_t *err) {
  if (size < expected_size)
    return masic_fail(err, MASIC_EXIT_USER, "weights file %s is truncated (%llu of %llu bytes); %s", path,
                      (unsigned long long)size, (unsigned long long)expected_size, MASIC_WEIGHTS_REMEDY);
  if (size > expected_size)
    return masic_fail(err, MASIC_EXIT_USER,
                      "weights file %s is too large (%llu bytes, expected %llu); it belongs to another build, %s", path,
                      (unsigned long long)size, (unsigned long long)expected_size, MASIC_WEIGHTS_REMEDY);
  if (size && !cap) return masic_fail(err, MASIC_EXIT_SYSTEM, "no buffer to check weights file %s", path);
  uint32_t crc = 0;
  for (uint64_t offset = 0; offset < size;) {
    size_t want = size - offset < cap ? (size_t)(size - offset) : cap;
    int64_t got = masic_pread_full(fd, buf, want, offset);
    if (got < 0) return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot read %s: %s", path, strerror(errno));
    if ((size_t)got < want)
      return masic_fail(err, MASIC_EXIT_USER, "weights file %s shrank while being read; %s", path,
                        MASIC_WEIGHTS_REMEDY);
    crc = masic_crc32_update(crc, buf, want);
    offset += want;
  }
  if (crc != expected_crc)
    return masic_fail(err, MASIC_EXIT_USER, "weights file %s is corrupted (CRC-32 %08x, expected %08x); %s", path,
                      (unsigned)crc, (unsigned)expected_crc, MASIC_WEIGHTS_REMEDY);
  return true;
}

bool masic_weights_load(int fd, const char *path, uint8_t *arena, const masic_segment_t *segs, uint32_t n,
                        uint64_t *bytes, masic_error_t *err) {
  for (uint32_t i = 0; i < n; i++) {
    int64_t got = masic_pread_full(fd, arena + segs[i].arena_offset, (size_t)segs[i].nbytes, segs[i].file_offset);
    if (got < 0) return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot read %s: %s", path, strerror(errno));
    if ((uint64_t)got < segs[i].nbytes)
      return masic_fail(err, MASIC_EXIT_USER, "weights file %s shrank while being read; %s", path,
                        MASIC_WEIGHTS_REMEDY);
    *bytes += segs[i].nbytes;
  }
  return true;
}

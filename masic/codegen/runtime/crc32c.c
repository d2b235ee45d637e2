/* crc32c.c: see crc32c.h. */
#define _GNU_SOURCE /* getauxval */

#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

typedef uint32_t (*crc_fn)(uint32_t, const uint8_t *, size_t);

static uint32_t table[8][256];
static crc_fn chosen;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The register through 8 bytes at once; crc is the raw (uninverted) register. */
static uint32_t portable_update(uint32_t crc, const uint8_t *p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
          table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^ table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
  }
  for (; n; p++, n--) crc = table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return crc;
}

/* The CPU's instruction takes 8 bytes a step; four steps per loop iteration keep the loop's own instructions a
 * small share of the count (under qemu, as on an in-order core). */
#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t hardware_update(uint32_t crc, const uint8_t *p, size_t n) {
  uint64_t c = crc;
  for (; n >= 32; p += 32, n -= 32) {
    uint64_t w[4];
    memcpy(w, p, sizeof w);
    c = _mm_crc32_u64(c, w[0]);
    c = _mm_crc32_u64(c, w[1]);
    c = _mm_crc32_u64(c, w[2]);
    c = _mm_crc32_u64(c, w[3]);
  }
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    c = _mm_crc32_u64(c, w);
  }
  uint32_t c32 = (uint32_t)c;
  for (; n; p++, n--) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}

static bool cpu_has_crc(void) {
  __builtin_cpu_init(); /* a static executable may call this before the library's constructor ran */
  return __builtin_cpu_supports("sse4.2");
}
#elif defined(__aarch64__)
__attribute__((target("+crc"))) static uint32_t hardware_update(uint32_t crc, const uint8_t *p, size_t n) {
  for (; n >= 32; p += 32, n -= 32) {
    uint64_t w[4];
    memcpy(w, p, sizeof w);
    crc = __crc32cd(crc, w[0]);
    crc = __crc32cd(crc, w[1]);
    crc = __crc32cd(crc, w[2]);
    crc = __crc32cd(crc, w[3]);
  }
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    crc = __crc32cd(crc, w);
  }
  for (; n; p++, n--) crc = __crc32cb(crc, *p);
  return crc;
}

static bool cpu_has_crc(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#else
static crc_fn const hardware_update = NULL;
static bool cpu_has_crc(void) { return false; }
#endif

static void setup(void) {
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int k = 0; k < 8; k++) c = (c & 1) ? CRC32C_POLY ^ (c >> 1) : c >> 1;
    table[0][b] = c;
  }
  /* Table s advances a byte through s more zero bytes, which lets portable_update take 8 bytes a step. */
  for (uint32_t b = 0; b < 256; b++)
    for (int s = 1; s < 8; s++) table[s][b] = (table[s - 1][b] >> 8) ^ table[0][table[s - 1][b] & 0xff];
  chosen = cpu_has_crc() ? hardware_update : portable_update;
}

uint32_t masic_crc32c(uint32_t crc, const void *p, size_t n) {
  pthread_once(&once, setup);
  return ~chosen(~crc, p, n);
}

uint32_t masic_crc32c_portable(uint32_t crc, const void *p, size_t n) {
  pthread_once(&once, setup);
  return ~portable_update(~crc, p, n);
}

bool masic_crc32c_hardware(void) {
  pthread_once(&once, setup);
  return chosen != portable_update;
}

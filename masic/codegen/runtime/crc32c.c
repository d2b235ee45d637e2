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

/* The CPU's instruction takes 8 bytes a step, but each step waits for the previous one's result (3 cycles on most
 * cores, for one issued per cycle). So the hardware loop runs three independent lanes of LANE_BYTES side by side and
 * joins them: the register is linear in its input, so crc(c, A B C) = shift2(crc(c, A)) ^ shift1(crc(0, B)) ^
 * crc(0, C), where shiftN advances a register through N lanes of zero bytes (a table lookup per byte of it, the
 * tables built once by `setup`). Two words per lane per iteration keep the loop's own instructions a small share
 * of the count (under qemu, as on an in-order core). */
#define LANE_BYTES 4096

static uint32_t shift_one_lane[4][256], shift_two_lanes[4][256];

static uint32_t shifted(const uint32_t shift[4][256], uint32_t crc) {
  return shift[0][crc & 0xff] ^ shift[1][(crc >> 8) & 0xff] ^ shift[2][(crc >> 16) & 0xff] ^ shift[3][crc >> 24];
}

#if defined(__x86_64__)
#define CRC_TARGET __attribute__((target("sse4.2")))
CRC_TARGET static inline uint32_t crc_word(uint32_t crc, uint64_t w) { return (uint32_t)_mm_crc32_u64(crc, w); }
CRC_TARGET static inline uint32_t crc_byte(uint32_t crc, uint8_t b) { return _mm_crc32_u8(crc, b); }

static bool cpu_has_crc(void) {
  __builtin_cpu_init(); /* a static executable may call this before the library's constructor ran */
  return __builtin_cpu_supports("sse4.2");
}
#elif defined(__aarch64__)
#define CRC_TARGET __attribute__((target("+crc")))
CRC_TARGET static inline uint32_t crc_word(uint32_t crc, uint64_t w) { return __crc32cd(crc, w); }
CRC_TARGET static inline uint32_t crc_byte(uint32_t crc, uint8_t b) { return __crc32cb(crc, b); }

static bool cpu_has_crc(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#endif

#ifdef CRC_TARGET
CRC_TARGET static uint32_t hardware_update(uint32_t crc, const uint8_t *p, size_t n) {
  for (; n >= 3 * LANE_BYTES; p += 3 * LANE_BYTES, n -= 3 * LANE_BYTES) {
    uint32_t b = 0, c = 0;
    for (size_t i = 0; i < LANE_BYTES; i += 16) {
      uint64_t w[6];
      memcpy(w, p + i, 16);
      memcpy(w + 2, p + LANE_BYTES + i, 16);
      memcpy(w + 4, p + 2 * LANE_BYTES + i, 16);
      crc = crc_word(crc, w[0]);
      b = crc_word(b, w[2]);
      c = crc_word(c, w[4]);
      crc = crc_word(crc, w[1]);
      b = crc_word(b, w[3]);
      c = crc_word(c, w[5]);
    }
    crc = shifted(shift_two_lanes, crc) ^ shifted(shift_one_lane, b) ^ c;
  }
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    crc = crc_word(crc, w);
  }
  for (; n; p++, n--) crc = crc_byte(crc, *p);
  return crc;
}
#else
static crc_fn const hardware_update = NULL;
static bool cpu_has_crc(void) { return false; }
#endif

/* The table advancing a register through `lanes` lanes of zero bytes, from the register bits' images `basis`. */
static void shift_table(uint32_t shift[4][256], const uint32_t basis[32]) {
  for (int k = 0; k < 4; k++)
    for (uint32_t b = 0; b < 256; b++) {
      uint32_t image = 0;
      for (int bit = 0; bit < 8; bit++)
        if (b >> bit & 1) image ^= basis[8 * k + bit];
      shift[k][b] = image;
    }
}

/* Builds shift_one_lane and shift_two_lanes (table must be filled). */
static void setup_shifts(void) {
  uint32_t basis[32];
  for (int bit = 0; bit < 32; bit++) {
    uint32_t c = 1u << bit;
    /* 8 zero bytes a step: table[7..4] advance the register's 4 bytes through them (portable_update with hi = 0) */
    for (int i = 0; i < LANE_BYTES / 8; i++)
      c = table[7][c & 0xff] ^ table[6][(c >> 8) & 0xff] ^ table[5][(c >> 16) & 0xff] ^ table[4][c >> 24];
    basis[bit] = c;
  }
  shift_table(shift_one_lane, basis);
  for (int bit = 0; bit < 32; bit++) basis[bit] = shifted(shift_one_lane, basis[bit]);
  shift_table(shift_two_lanes, basis);
}

static void setup(void) {
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int k = 0; k < 8; k++) c = (c & 1) ? CRC32C_POLY ^ (c >> 1) : c >> 1;
    table[0][b] = c;
  }
  /* Table s advances a byte through s more zero bytes, which lets portable_update take 8 bytes a step. */
  for (uint32_t b = 0; b < 256; b++)
    for (int s = 1; s < 8; s++) table[s][b] = (table[s - 1][b] >> 8) ^ table[0][table[s - 1][b] & 0xff];
  bool hardware = cpu_has_crc();
  if (hardware) setup_shifts();
  chosen = hardware ? hardware_update : portable_update;
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

/* weights.h: reading and checking weights.bin. The file holds the weights in load order and nothing else: it is
 * checked by its exact size and its CRC-32 against the values the build recorded, before any byte is used, and
 * then copied into the arena by the segments of the plan (already checked by model_check.c to lie inside it). */
#ifndef MASIC_WEIGHTS_H
#define MASIC_WEIGHTS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "masic_model.h"
#include "util.h"

#define MASIC_WEIGHTS_REMEDY "re-copy the artifact folder"

/* Bytes read from weights.bin by one open model, for its statistics. `streamed` and `state` grow in the loading
 * thread, under its mutex; the compute thread reads them only between blocks, while that thread is idle (see
 * stream.c). */
typedef struct {
  uint64_t checked;   /* by the CRC pass at start */
  uint64_t resident;  /* by resident segments, once per run */
  uint64_t streamed;  /* by streamed weight loads, once per block */
  uint64_t state;     /* initial neuron state: per sample (state_init), or by state loads once per block */
  double load_wait_s; /* time the compute spent waiting in masic_wait_load */
} masic_weight_io_t;

/* zlib-compatible CRC-32 (slicing-by-8); start with crc = 0. masic_crc32_init must have run (it is idempotent). */
void masic_crc32_init(void);
uint32_t masic_crc32_update(uint32_t crc, const uint8_t *p, size_t n);

/* Checks that the file of `size` bytes open on fd is the one the build expects: exactly `expected_size` bytes and
 * CRC-32 `expected_crc`, streamed through buf[0..cap) (weights may be far larger than memory, so they are never
 * mapped or held whole). */
bool masic_weights_verify(int fd, const char *path, uint64_t size, uint64_t expected_size, uint32_t expected_crc,
                          uint8_t *buf, size_t cap, masic_error_t *err);

/* Copies n segments from the file into the arena; adds the bytes read to *bytes. The segments must have passed
 * masic_model_check for this arena and file size. */
bool masic_weights_load(int fd, const char *path, uint8_t *arena, const masic_segment_t *segs, uint32_t n,
                        uint64_t *bytes, masic_error_t *err);

#endif

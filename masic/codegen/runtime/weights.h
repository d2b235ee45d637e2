/* weights.h: reading and checking weights.bin. The file holds the weights in load order and nothing else. Its size
 * is checked at start; every piece of it (a resident weight, an initial state, a streamed load) carries its own
 * CRC-32C in the build's tables and is checked right after it is read into the arena, so that no byte is read twice
 * to be checked. The segments and loads were checked by model_check.c to lie inside the file and the arena. */
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
  uint64_t resident;  /* by resident segments, once per run, at start */
  uint64_t streamed;  /* by streamed weight loads, once per block */
  uint64_t state;     /* initial neuron state: per sample (state_init), or by state loads once per block */
  double load_wait_s; /* time the compute spent waiting in masic_wait_load */
  double read_s;      /* reading segments (masic_weights_load) */
  double check_s;     /* checking their CRC-32C */
} masic_weight_io_t;

/* Checks that weights.bin, of `size` bytes, has exactly the size the build expects. */
bool masic_weights_check_size(const char *path, uint64_t size, uint64_t expected_size, masic_error_t *err);

/* Checks the CRC-32C `crc` of the n bytes read from file_offset against the build's; `what` names the piece
 * ("resident weight"). */
bool masic_weights_check_crc(const char *path, const char *what, uint64_t file_offset, uint64_t n, uint32_t crc,
                             uint32_t expected_crc, masic_error_t *err);

/* Pieces are read this many bytes at a time, each chunk's CRC-32C taken right after its read, while the chunk is
 * still in the core's cache (a whole piece of megabytes would be read back from memory to be checked). */
#define MASIC_READ_CHUNK_BYTES ((size_t)128 << 10)

typedef struct {
  double read_s;  /* in pread */
  double check_s; /* in the CRC-32C */
} masic_read_times_t;

/* Reads n bytes at `offset` of fd into dest, chunk by chunk, and sets *crc to their CRC-32C; adds the time spent to
 * *times unless it is NULL. Returns the bytes read (fewer than n at the end of the file), or -1 with errno. */
int64_t masic_weights_read_piece(int fd, uint8_t *dest, uint64_t n, uint64_t offset, uint32_t *crc,
                                 masic_read_times_t *times);

/* Copies n segments from the file into the arena, checking each; adds the bytes read to *bytes (a counter of io) and
 * the time spent reading and checking to io. */
bool masic_weights_load(int fd, const char *path, const char *what, uint8_t *arena, const masic_segment_t *segs,
                        uint32_t n, masic_weight_io_t *io, uint64_t *bytes, masic_error_t *err);

/* `model --check`: the size of the file and the CRC-32C of every piece the model reads, streamed through
 * buf[0..cap) (weights may be far larger than memory, so they are never held whole); *checked counts the bytes. */
bool masic_weights_verify(int fd, const char *path, uint64_t size, const masic_model_t *m, uint8_t *buf, size_t cap,
                          uint64_t *checked, masic_error_t *err);

#endif

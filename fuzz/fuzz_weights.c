/* fuzz_weights.c: the build's constants (runtime/model_check.c) and weights.bin (runtime/weights.c) together. The
 * first bytes describe a model (arena, weights size, block, input and output slots, resident and state segments,
 * streamed loads, exit rule), the rest is weights.bin. A model masic_model_check accepts is then run through
 * everything the loader does with it: `model --check`, the size check, the resident and initial-state segments
 * checked as they are read, every load of a block (as the loading thread reads and checks or fills it), and the
 * input and output slots, all inside an arena of exactly arena_bytes, so any range the check let through wrongly is
 * an AddressSanitizer report. Each piece's CRC-32C is right, or (one time in four) not. */
#include "fuzz_common.h"
/* after fuzz_common.h, which chooses the C library's feature macros */
#include "crc32c.h"
#include "model_check.h"
#include "weights.h"

#define MAX_SEGMENTS 8
#define MAX_BLOCK_FUZZ 4
#define ARENA_LIMIT (1u << 20) /* larger arenas are checked but not allocated */

/* A size or offset: mostly small, sometimes any 64-bit value (flag bit set). */
static uint64_t number(fuzz_bytes_t *b, uint8_t flags, int bit) {
  return flags >> bit & 1 ? fuzz_u64(b) : fuzz_u16(b);
}

static void segments(fuzz_bytes_t *b, masic_segment_t *segs, uint32_t *n, uint8_t flags) {
  *n = fuzz_u8(b) % (MAX_SEGMENTS + 1);
  for (uint32_t i = 0; i < *n; i++)
    segs[i] = (masic_segment_t){number(b, flags, 1), number(b, flags, 2), number(b, flags, 3), 0}; /* CRC set below */
}

/* The CRC-32C of a piece of the file, or a wrong one when the mode says so (or the piece lies outside the file). */
static uint32_t piece_crc(fuzz_bytes_t file, uint64_t offset, uint64_t nbytes, uint8_t crc_mode) {
  if (crc_mode & 2 || !masic_range_fits(offset, nbytes, file.n)) return 0x5eed;
  return masic_crc32c(0, file.p + offset, (size_t)nbytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_bytes_t b = {data, size};
  uint8_t flags = fuzz_u8(&b);
  static uint64_t input_offsets[MAX_BLOCK_FUZZ], output_offsets[MAX_BLOCK_FUZZ];
  static masic_segment_t resident[MAX_SEGMENTS], state_init[MAX_SEGMENTS];
  static masic_load_t loads[MAX_SEGMENTS];
  masic_model_t m = {.name = "fuzz"};
  m.arena_bytes = flags & 0x10 ? fuzz_u64(&b) : fuzz_u16(&b);
  m.arena_alignment = (uint64_t)1 << (fuzz_u8(&b) % 12);
  if (flags & 0x20) m.arena_alignment += 1; /* not a power of two */
  m.block = flags & 0x40 ? (int32_t)fuzz_u32(&b) : 1 + fuzz_u8(&b) % MAX_BLOCK_FUZZ;
  int32_t slots = m.block >= 1 && m.block <= MAX_BLOCK_FUZZ ? m.block : 0;
  m.input_ndim = fuzz_u8(&b) % 10 - 1;
  for (int i = 0; i < m.input_ndim && i < MASIC_MAX_NDIM; i++) m.input_shape[i] = (int8_t)fuzz_u8(&b);
  m.output_ndim = fuzz_u8(&b) % 10 - 1;
  for (int i = 0; i < m.output_ndim && i < MASIC_MAX_NDIM; i++) m.output_shape[i] = (int8_t)fuzz_u8(&b);
  for (int32_t t = 0; t < slots; t++) input_offsets[t] = number(&b, flags, 0), output_offsets[t] = number(&b, flags, 0);
  m.input_offsets = slots ? input_offsets : NULL;
  m.output_offsets = slots ? output_offsets : NULL;
  m.timesteps = (int8_t)fuzz_u8(&b);
  m.exit_rule = (masic_exit_rule_t){.rule = fuzz_u8(&b) % 5, .min_timesteps = (int8_t)fuzz_u8(&b)};
  uint64_t threshold = fuzz_u64(&b);
  memcpy(&m.exit_rule.threshold, &threshold, sizeof threshold);
  segments(&b, resident, &m.n_resident, flags);
  segments(&b, state_init, &m.n_state_init, flags);
  m.resident = resident, m.state_init = state_init;
  m.n_loads = fuzz_u8(&b) % (MAX_SEGMENTS + 1);
  for (uint32_t k = 0; k < m.n_loads; k++)
    loads[k] = (masic_load_t){.file_offset = number(&b, flags, 1), .arena_offset = number(&b, flags, 2),
                              .nbytes = number(&b, flags, 3), .start = fuzz_u8(&b), .kind = fuzz_u8(&b) % 4,
                              .fill_bits = fuzz_u32(&b)};
  m.loads = m.n_loads ? loads : NULL;
  m.n_positions = fuzz_u8(&b);
  uint8_t crc_mode = fuzz_u8(&b);
  /* The rest is weights.bin; its recorded size and the pieces' CRCs are right, or (one time in four each) not. */
  m.weights_bytes = crc_mode & 1 ? b.n + (crc_mode >> 4) : b.n;
  for (uint32_t i = 0; i < m.n_resident; i++) resident[i].crc32c = piece_crc(b, resident[i].file_offset,
                                                                             resident[i].nbytes, crc_mode);
  for (uint32_t i = 0; i < m.n_state_init; i++) state_init[i].crc32c = piece_crc(b, state_init[i].file_offset,
                                                                                 state_init[i].nbytes, crc_mode);
  for (uint32_t k = 0; k < m.n_loads; k++) loads[k].crc32c = piece_crc(b, loads[k].file_offset, loads[k].nbytes,
                                                                       crc_mode);

  masic_error_t err;
  if (!masic_model_check(&m, &err)) {
    fuzz_check_error(&err);
    return 0;
  }
  if (m.arena_bytes > ARENA_LIMIT) return 0;
  uint8_t *arena = malloc(m.arena_bytes ? m.arena_bytes : 1); /* exactly the arena: ASan guards its ends */
  int fd = fuzz_file(b.p, b.n);
  uint8_t buf[4096];
  uint64_t bytes = 0, checked = 0;
  masic_weight_io_t io = {0};
  bool ok = masic_weights_verify(fd, "weights.bin", b.n, &m, buf, sizeof buf, &checked, &err) &&
            masic_weights_load(fd, "weights.bin", "resident weight", arena, m.resident, m.n_resident, &io, &bytes, &err) &&
            masic_weights_load(fd, "weights.bin", "initial state", arena, m.state_init, m.n_state_init, &io, &bytes,
                               &err);
  if (!ok) fuzz_check_error(&err);
  for (uint32_t k = 0; ok && k < m.n_loads; k++) { /* as stream.c reads or fills them */
    const masic_load_t *load = &m.loads[k];
    if (load->kind == MASIC_LOAD_STATE_FILL) {
      float value;
      memcpy(&value, &load->fill_bits, sizeof value);
      float *slot = (float *)(void *)(arena + load->arena_offset);
      for (uint64_t i = 0; i < load->nbytes / sizeof(float); i++) slot[i] = value;
    } else {
      uint32_t crc;
      if (masic_weights_read_piece(fd, arena + load->arena_offset, load->nbytes, load->file_offset, &crc, NULL) !=
          (int64_t)load->nbytes)
        abort(); /* the file passed its size check: a checked load lies inside it */
      if (!masic_weights_check_crc("weights.bin", "streamed weight", load->file_offset, load->nbytes, crc,
                                   load->crc32c, &err))
        abort(); /* --check passed, so every piece is intact */
    }
  }
  /* Each step's input written into its slot and output read from its slot, as loader.c does. */
  uint64_t in_bytes = 4 * masic_shape_numel(m.input_ndim, m.input_shape);
  uint64_t out_bytes = 4 * masic_shape_numel(m.output_ndim, m.output_shape);
  for (int32_t t = 0; ok && t < m.block; t++) {
    memset(arena + m.input_offsets[t], 0x5a, (size_t)in_bytes);
    uint8_t sink = 0;
    for (uint64_t i = 0; i < out_bytes; i++) sink ^= arena[m.output_offsets[t] + i];
    (void)sink;
  }
  close(fd);
  free(arena);
  return 0;
}

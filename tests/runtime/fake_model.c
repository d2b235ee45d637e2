/* fake_model.c: a hand-written stand-in for a generated model.c, small enough for tests to predict with numpy
 * (see fake_model.py).
 *
 * weights.bin: w[4] at 0, the initial state s[4] at 16, with FAKE_STREAMED the streamed weights u[4] at 32, then
 * FAKE_PAD_BYTES of padding that nothing reads; all float32. The CRC-32C of each piece is only known once the test
 * has written the file, hence FAKE_CRC_W, FAKE_CRC_S, FAKE_CRC_U0 and FAKE_CRC_U1.
 * Arena (FAKE_ARENA_BYTES, at least 256): the input slots x_t (2x3) at 32 t, w at 128, s at 144, the streamed slot
 * (2 floats) at 160, the block's input sums at 176, the output slots (4) at 192 + 16 t.
 * Step: out[k] = sum(x) * w[k] + s[k] + u[k], then s[k] += 1 (u = 0 without FAKE_STREAMED).
 *
 * A block runs FAKE_BLOCK steps layer by layer, in three positions, as generated code does: 0 sums every step's
 * input; 1 computes out[0..1] of every step from u[0..1]; 2 computes out[2..3] from u[2..3]. u[0..1] and u[2..3] are
 * two streamed loads sharing one slot, so a load that came late, early or not at all changes the outputs.
 * With FAKE_STATE_LOADED the state is not copied in before each sample but loaded by the loading thread at the start
 * of each block, as in a plan whose state lives only while its layer runs; the default run is then one block. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "masic_model.h"

#if !defined(FAKE_CRC_W) || !defined(FAKE_CRC_S) || !defined(FAKE_CRC_U0) || !defined(FAKE_CRC_U1)
#error "compile with -DFAKE_CRC_W=... (the CRC-32C of w, s, u[0..1] and u[2..3] in weights.bin)"
#endif
/* The default exit rule can be changed per build to test the model's own rule. */
#ifndef FAKE_EXIT_RULE
#define FAKE_EXIT_RULE MASIC_EXIT_NONE
#endif
#ifndef FAKE_EXIT_THRESHOLD
#define FAKE_EXIT_THRESHOLD 0.0
#endif
#ifndef FAKE_EXIT_MIN_TIMESTEPS
#define FAKE_EXIT_MIN_TIMESTEPS 1
#endif
#ifndef FAKE_BLOCK
#define FAKE_BLOCK 1
#endif
#ifndef FAKE_STREAMED
#define FAKE_STREAMED 0
#endif
#ifndef FAKE_STATE_LOADED
#define FAKE_STATE_LOADED 0
#endif
#ifndef FAKE_PAD_BYTES
#define FAKE_PAD_BYTES 0
#endif
#ifndef FAKE_ARENA_BYTES
#define FAKE_ARENA_BYTES 256
#endif
/* If set, the n-th call of masic_model_block (1-based) truncates ./weights.bin to 40 bytes before its second load. */
#ifndef FAKE_TRUNCATE_AT_BLOCK
#define FAKE_TRUNCATE_AT_BLOCK 0
#endif
/* Builds with the mistakes of a broken code generator: a second load that starts elsewhere than at position 2, and
 * a wait for the second load at position 1, before it may begin. */
#ifndef FAKE_LOAD1_START
#define FAKE_LOAD1_START 2
#endif
#ifndef FAKE_WAIT_TOO_EARLY
#define FAKE_WAIT_TOO_EARLY 0
#endif

_Static_assert(FAKE_BLOCK >= 1 && FAKE_BLOCK <= 4, "the arena layout has four input and output slots");
_Static_assert(FAKE_ARENA_BYTES >= 256, "the arena layout needs 256 bytes");
_Static_assert(!(FAKE_STREAMED && FAKE_STATE_LOADED), "the loads are either streamed weights or the state");

enum {
  X_OFFSET = 0,
  X_STRIDE = 32,
  W_OFFSET = 128,
  S_OFFSET = 144,
  SLOT_OFFSET = 160,
  SUMS_OFFSET = 176,
  OUT_OFFSET = 192,
  OUT_STRIDE = 16,
  ALIGNMENT = 128,
  N_POSITIONS = 3,
};

/* Status codes the tests expect from a block. */
enum { STEP_NAN_INPUT = 7, STEP_MISALIGNED_ARENA = 8 };

#define WEIGHTS_BYTES (32 + 16 * FAKE_STREAMED + FAKE_PAD_BYTES)

static const uint64_t input_offsets[] = {X_OFFSET, X_OFFSET + X_STRIDE, X_OFFSET + 2 * X_STRIDE, X_OFFSET + 3 * X_STRIDE};
static const uint64_t output_offsets[] = {OUT_OFFSET, OUT_OFFSET + OUT_STRIDE, OUT_OFFSET + 2 * OUT_STRIDE,
                                          OUT_OFFSET + 3 * OUT_STRIDE};
static const masic_segment_t resident[] = {
    {.file_offset = 0, .arena_offset = W_OFFSET, .nbytes = 16, .crc32c = FAKE_CRC_W}};
static const masic_segment_t state_init[] = {
    {.file_offset = 16, .arena_offset = S_OFFSET, .nbytes = 16, .crc32c = FAKE_CRC_S}};
/* u[0..1] may enter the slot when the block starts; u[2..3] once position 1, the last reader of u[0..1], is done. */
static const masic_load_t loads[] = {
    {.file_offset = 32, .arena_offset = SLOT_OFFSET, .nbytes = 8, .start = 0, .crc32c = FAKE_CRC_U0},
    {.file_offset = 40, .arena_offset = SLOT_OFFSET, .nbytes = 8, .start = FAKE_LOAD1_START, .crc32c = FAKE_CRC_U1}};
/* FAKE_STATE_LOADED: s may enter its slot when the block starts, and is first read at position 1. */
static const masic_load_t state_loads[] = {
    {.file_offset = 16, .arena_offset = S_OFFSET, .nbytes = 16, .start = 0, .kind = MASIC_LOAD_STATE,
     .crc32c = FAKE_CRC_S}};

const masic_model_t masic_model = {
    .name = "fake \"2x3\" model", /* the quotes check that the JSON report escapes the name */
    .arena_bytes = FAKE_ARENA_BYTES,
    .arena_alignment = ALIGNMENT,
    .weights_bytes = WEIGHTS_BYTES,
    .input_ndim = 2,
    .input_shape = {2, 3},
    .output_ndim = 1,
    .output_shape = {4},
    .timesteps = FAKE_STATE_LOADED ? FAKE_BLOCK : 5,
    .exit_rule = {.rule = FAKE_EXIT_RULE, .min_timesteps = FAKE_EXIT_MIN_TIMESTEPS, .threshold = FAKE_EXIT_THRESHOLD},
    .block = FAKE_BLOCK,
    .input_offsets = input_offsets,
    .output_offsets = output_offsets,
    .n_resident = 1,
    .resident = resident,
    .n_state_init = FAKE_STATE_LOADED ? 0 : 1,
    .state_init = state_init,
    .n_loads = FAKE_STREAMED ? 2 : FAKE_STATE_LOADED ? 1 : 0,
    .loads = FAKE_STREAMED ? loads : FAKE_STATE_LOADED ? state_loads : NULL,
    .n_positions = N_POSITIONS,
};

/* Position 0: the input sum of every step of the block. */
static int sum_inputs(uint8_t *arena, int32_t nsteps) {
  float *sums = (float *)(arena + SUMS_OFFSET);
  for (int32_t t = 0; t < nsteps; t++) {
    float *x = (float *)(arena + input_offsets[t]);
    float sum = 0;
    for (int i = 0; i < 6; i++) sum += x[i];
    if (isnan(sum)) return STEP_NAN_INPUT;
    sums[t] = sum;
    /* A real plan may reuse an input slot once it has been read: poison it so that a loader that does not copy the
     * samples in again for every block fails with STEP_NAN_INPUT. */
    for (int i = 0; i < 6; i++) x[i] = NAN;
  }
  return 0;
}

/* Positions 1 and 2: outputs first..first+1 of every step, with the two streamed weights in the slot. */
static void neurons(uint8_t *arena, int32_t nsteps, int first) {
  const float *w = (const float *)(arena + W_OFFSET), *u = (const float *)(arena + SLOT_OFFSET);
  const float *sums = (const float *)(arena + SUMS_OFFSET);
  float *s = (float *)(arena + S_OFFSET);
  for (int k = first; k < first + 2; k++) {
    for (int32_t t = 0; t < nsteps; t++) {
      float *out = (float *)(arena + output_offsets[t]);
      out[k] = sums[t] * w[k] + s[k] + u[k - first];
      s[k] += 1;
    }
  }
}

static void truncate_weights_if_asked(void) {
  static int calls;
  if (FAKE_TRUNCATE_AT_BLOCK && ++calls == FAKE_TRUNCATE_AT_BLOCK && truncate("weights.bin", 40) != 0) _exit(99);
}

int masic_model_block(uint8_t *arena, int32_t nsteps, masic_stream_t *stream) {
  if ((uintptr_t)arena % ALIGNMENT) return STEP_MISALIGNED_ARENA;
  int status = sum_inputs(arena, nsteps);
  if (status) return status;
  truncate_weights_if_asked();
  masic_reached(stream, 1);
  if (FAKE_WAIT_TOO_EARLY && (status = masic_wait_load(stream, 1))) return status;
  if ((FAKE_STREAMED || FAKE_STATE_LOADED) && (status = masic_wait_load(stream, 0))) return status;
  neurons(arena, nsteps, 0);
  masic_reached(stream, 2);
  if (FAKE_STREAMED && (status = masic_wait_load(stream, 1))) return status;
  neurons(arena, nsteps, 2);
  masic_reached(stream, 3);
  return 0;
}

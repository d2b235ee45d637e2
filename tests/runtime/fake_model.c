/* fake_model.c: a hand-written stand-in for a generated model.c, small enough for tests to predict with numpy
 * (see fake_model.py).
 *
 * weights.bin (32 bytes): w[4] at 0, the initial state s[4] at 16, all float32. Its CRC-32 is only known once the
 * test has written the file, hence FAKE_WEIGHTS_CRC32.
 * Arena (256 bytes): input x (2x3) at 0, w at 64, s at 128, output (4) at 192.
 * Step: out[k] = sum(x) * w[k] + s[k], then s[k] += 1. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "masic_model.h"

#ifndef FAKE_WEIGHTS_CRC32
#error "compile with -DFAKE_WEIGHTS_CRC32=<zlib CRC-32 of weights.bin>"
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

enum { X_OFFSET = 0, W_OFFSET = 64, S_OFFSET = 128, OUT_OFFSET = 192, ALIGNMENT = 128 };

/* Status codes the tests expect from a step. */
enum { STEP_NAN_INPUT = 7, STEP_MISALIGNED_ARENA = 8 };

static const masic_segment_t resident[] = {{.file_offset = 0, .arena_offset = W_OFFSET, .nbytes = 16}};
static const masic_segment_t state_init[] = {{.file_offset = 16, .arena_offset = S_OFFSET, .nbytes = 16}};

const masic_model_t masic_model = {
    .name = "fake \"2x3\" model", /* the quotes check that the JSON report escapes the name */
    .arena_bytes = 256,
    .arena_alignment = ALIGNMENT,
    .weights_bytes = 32,
    .weights_crc32 = FAKE_WEIGHTS_CRC32,
    .input_ndim = 2,
    .input_shape = {2, 3},
    .input_offset = X_OFFSET,
    .output_ndim = 1,
    .output_shape = {4},
    .output_offset = OUT_OFFSET,
    .timesteps = 5,
    .exit_rule = {.rule = FAKE_EXIT_RULE, .min_timesteps = FAKE_EXIT_MIN_TIMESTEPS, .threshold = FAKE_EXIT_THRESHOLD},
    .n_resident = 1,
    .resident = resident,
    .n_state_init = 1,
    .state_init = state_init,
};

int masic_model_step(uint8_t *arena) {
  if ((uintptr_t)arena % ALIGNMENT) return STEP_MISALIGNED_ARENA;
  float *x = (float *)(arena + X_OFFSET), *w = (float *)(arena + W_OFFSET);
  float *s = (float *)(arena + S_OFFSET), *out = (float *)(arena + OUT_OFFSET);
  float sum = 0;
  for (int i = 0; i < 6; i++) sum += x[i];
  if (isnan(sum)) return STEP_NAN_INPUT;
  for (int k = 0; k < 4; k++) {
    out[k] = sum * w[k] + s[k];
    s[k] += 1;
  }
  /* A real plan may reuse the input region after the first kernel: poison it so that a loader that does not copy
   * the sample in again at every step fails with STEP_NAN_INPUT. */
  for (int i = 0; i < 6; i++) x[i] = NAN;
  return 0;
}

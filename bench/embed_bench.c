/* embed_bench.c: timings of a model's C library for bench/embed.py (linked with an artifact's libmasic_model.a).
 *
 *   embed_bench WEIGHTS FRAMES STEPS PASSES
 *
 * FRAMES holds N inputs. Prints one JSON line of seconds, each the best of 5 repetitions, single-threaded:
 *   kernels_s_per_step  the generated masic_model_block alone on the session's own arena (a model without streamed
 *                       weights), input 0 at every step from the initial state;
 *   step_s_per_step     masic_step on the same steps (the API: input copy, the block, output copy, the exit rule's
 *                       arithmetic);
 *   frames_s_per_step   what out/model --stream --no-exit does in process: masic_step over the N frames PASSES
 *                       times, a reset every STEPS steps;
 *   run_s_per_sample    masic_run of each input for STEPS steps, all from one open (out/model --labels's loop). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "masic_model.h"
#include "masic_runtime.h"

#define REPEATS 5
#define STEP_CALLS 20000

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double best(double a, double b) { return a < b ? a : b; }

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: embed_bench WEIGHTS FRAMES STEPS PASSES\n");
    return 2;
  }
  int steps = atoi(argv[3]), passes = atoi(argv[4]);
  size_t n_in = masic_input_floats(), n_out = masic_output_floats();
  FILE *f = fopen(argv[2], "rb");
  if (!f || fseek(f, 0, SEEK_END)) return fprintf(stderr, "cannot read %s\n", argv[2]), 1;
  long n = ftell(f) / (long)(n_in * sizeof(float));
  float *x = malloc((size_t)n * n_in * sizeof *x), *y = malloc(n_out * sizeof *y);
  rewind(f);
  if (n < 1 || fread(x, sizeof *x, (size_t)n * n_in, f) != (size_t)n * n_in)
    return fprintf(stderr, "cannot read %s\n", argv[2]), 1;
  fclose(f);
  if (masic_model.n_loads) return fprintf(stderr, "embed_bench: the model streams weights; use a resident one\n"), 1;

  size_t bytes = (masic_arena_bytes() + masic_arena_alignment() - 1) / masic_arena_alignment() * masic_arena_alignment();
  uint8_t *arena = aligned_alloc(masic_arena_alignment(), bytes);
  char why[MASIC_ERROR_BYTES];
  masic_session_t *s;
  masic_open_options_t options = {.weights_path = argv[1], .weights_fd = -1, .arena = arena, .arena_bytes = bytes};
  if (masic_open(&options, &s, why, sizeof why) != MASIC_OK) return fprintf(stderr, "%s\n", why), 1;
  masic_set_exit_rule(s, MASIC_RULE_NONE, 0, 0);

  double kernels = 1e9, api = 1e9, frames = 1e9, run = 1e9;
  for (int r = 0; r < REPEATS; r++) {
    masic_reset(s);
    memcpy(arena + masic_model.input_offsets[0], x, n_in * sizeof *x);
    double t0 = now_s();
    for (int i = 0; i < STEP_CALLS; i++)
      if (masic_model_block(arena, 1, NULL)) return fprintf(stderr, "a kernel failed\n"), 1;
    kernels = best(kernels, (now_s() - t0) / STEP_CALLS);
    masic_reset(s);
    t0 = now_s();
    for (int i = 0; i < STEP_CALLS; i++)
      if (masic_step(s, x, y, NULL) != MASIC_OK) return fprintf(stderr, "%s\n", masic_last_error(s)), 1;
    api = best(api, (now_s() - t0) / STEP_CALLS);
    masic_reset(s);
    t0 = now_s();
    for (long i = 0, t = 0; i < n * passes; i++) {
      if (masic_step(s, x + (size_t)(i % n) * n_in, y, NULL) != MASIC_OK)
        return fprintf(stderr, "%s\n", masic_last_error(s)), 1;
      if (++t == steps) masic_reset(s), t = 0;
    }
    frames = best(frames, (now_s() - t0) / (double)(n * passes));
    t0 = now_s();
    for (long i = 0; i < n; i++)
      if (masic_run(s, x + (size_t)i * n_in, 1, steps, NULL, NULL) != MASIC_OK)
        return fprintf(stderr, "%s\n", masic_last_error(s)), 1;
    run = best(run, (now_s() - t0) / (double)n);
  }
  printf("{\"kernels_s_per_step\": %.9f, \"step_s_per_step\": %.9f, \"frames_s_per_step\": %.9f, "
         "\"run_s_per_sample\": %.9f}\n", kernels, api, frames, run);
  masic_close(s);
  free(arena);
  free(x);
  free(y);
  return 0;
}

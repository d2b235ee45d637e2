/* predict.c: a program that embeds a masic model through its C library (include/masic_runtime.h).
 *
 *   predict WEIGHTS FRAMES
 *
 * FRAMES is a file of raw float32 frames, one timestep's input each (numpy: x.astype("<f4").tofile(path)). The
 * program opens the model once, feeds the frames one step at a time, prints each step's output, and when the
 * exit rule holds (or the frames or the model's timesteps end) prints the prediction and starts a new sample from
 * the initial state with the next frame, as a sensor loop would. Output lines:
 *
 *   step 3: 0.0123 -0.5 ...          the step's output (9 significant digits: the exact float32)
 *   prediction 7 after 3 steps       the sample's class and the steps it took
 *
 * Build: see Makefile (make -C examples/embed ARTIFACT=out/). */
#include <stdio.h>
#include <stdlib.h>

#include "masic_runtime.h"

static int fail(const char *what, const char *why) {
  fprintf(stderr, "predict: error: %s: %s\n", what, why);
  return 1;
}

static void print_prediction(masic_session_t *model) {
  masic_stats_t stats;
  masic_stats(model, &stats);
  printf("prediction %d after %d steps\n", stats.prediction, stats.steps_run);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: predict WEIGHTS FRAMES\n");
    return 2;
  }
  FILE *frames = fopen(argv[2], "rb");
  if (!frames) return fail(argv[2], "cannot open the frames file");

  char why[MASIC_ERROR_BYTES];
  masic_session_t *model;
  masic_open_options_t options = {.weights_path = argv[1], .weights_fd = -1};
  if (masic_open(&options, &model, why, sizeof why) != MASIC_OK) return fail("cannot open the model", why);

  size_t n_in = masic_input_floats(), n_out = masic_output_floats();
  float *x = malloc(n_in * sizeof *x), *y = malloc(n_out * sizeof *y);
  if (!x || !y) return fail("predict", "out of memory");
  int32_t steps = 0, status = 0;
  while (fread(x, sizeof *x, n_in, frames) == n_in) {
    int exit_now;
    if (masic_step(model, x, y, &exit_now) != MASIC_OK) {
      status = fail("step failed", masic_last_error(model));
      break;
    }
    printf("step %d:", ++steps);
    for (size_t k = 0; k < n_out; k++) printf(" %.9g", (double)y[k]);
    printf("\n");
    if (exit_now || steps == masic_default_timesteps()) {
      print_prediction(model);
      masic_reset(model);
      steps = 0;
    }
  }
  if (steps && !status) print_prediction(model);
  masic_close(model);
  fclose(frames);
  free(x);
  free(y);
  return status;
}

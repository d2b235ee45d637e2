/* pipe.c: see pipe.h.
 *
 * A frame is the bytes of one float32 input of the model's input shape, little-endian, nothing between frames. With
 * --stream each frame is one timestep of the current sample and each step writes "step prediction exit y0 y1 ...";
 * a sample ends after the step at which the exit rule holds or after the schedule's last step, and the next frame
 * starts a new one from the initial state. With --stream-samples each frame is a whole sample, presented at every
 * step, and writes "prediction timesteps". Every line is flushed when written, so the reader sees each result as
 * soon as it exists. Floats are printed with 9 significant digits, which give back the same float32. */
#define _XOPEN_SOURCE 700

#include "pipe.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "masic_model.h"
#include "session.h"
#include "util.h"

/* Reads one frame from stdin: true if whole, false at the end of input before its first byte. */
static bool read_frame(float *frame, size_t nbytes, int64_t frames_read) {
  size_t got = 0;
  while (got < nbytes) {
    ssize_t r = read(STDIN_FILENO, (char *)frame + got, nbytes - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) masic_die(MASIC_EXIT_SYSTEM, "cannot read standard input: %s", strerror(errno));
    if (r == 0) break;
    got += (size_t)r;
  }
  if (got == 0) return false;
  if (got < nbytes) {
    char shape[256];
    masic_format_shape(shape, sizeof shape, NULL, masic_model.input_ndim, masic_model.input_shape);
    masic_die(MASIC_EXIT_USER, "standard input ended inside frame %lld: %zu of its %zu bytes (a frame is one float32 "
              "input of shape %s)", (long long)frames_read + 1, got, nbytes, shape);
  }
  return true;
}

/* Ends the line and flushes it; a reader that went away (EPIPE: SIGPIPE is ignored here) ends the run, naming the
 * lines the reader was given before this one. */
static void finish_line(int64_t lines_before) {
  if (putchar('\n') == EOF || fflush(stdout) == EOF) {
    if (errno == EPIPE)
      masic_die(MASIC_EXIT_SYSTEM, "standard output was closed after %lld lines (the reader of the pipe went away)",
                (long long)lines_before);
    masic_die(MASIC_EXIT_SYSTEM, "cannot write standard output: %s", strerror(errno));
  }
}

void masic_check_session(masic_status_t status, const masic_session_t *session) {
  if (status != MASIC_OK) masic_die_with(masic_session_error(session));
}

void masic_run_pipe(masic_stream_mode_t mode, const masic_schedule_t *s, masic_session_t *session) {
  signal(SIGPIPE, SIG_IGN);
  size_t in_bytes = masic_input_floats() * sizeof(float), out_numel = masic_output_floats();
  float *frame = masic_xmalloc(in_bytes), *y = masic_xmalloc(out_numel * sizeof *y);
  int64_t frames = 0;
  for (; read_frame(frame, in_bytes, frames); frames++) {
    masic_stats_t stats;
    if (mode == MASIC_STREAM_SAMPLES) {
      masic_check_session(masic_run(session, frame, 1, s->max_steps, NULL, &stats), session);
      printf("%d %d", stats.prediction, stats.steps_run);
    } else {
      int exit_now;
      masic_check_session(masic_step(session, frame, y, &exit_now), session);
      masic_check_session(masic_stats(session, &stats), session);
      printf("%d %d %d", stats.steps_run, stats.prediction, exit_now);
      for (size_t k = 0; k < out_numel; k++) printf(" %.9g", (double)y[k]);
      if (exit_now || stats.steps_run == s->max_steps) masic_check_session(masic_reset(session), session);
    }
    finish_line(frames);
  }
  free(frame);
  free(y);
}

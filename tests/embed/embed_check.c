/* embed_check.c: checks the C library of a compiled model (masic_runtime.h) against itself, for tests/embed.
 *
 *   embed_check WEIGHTS FRAMES STEPS
 *
 * FRAMES holds STEPS raw float32 inputs. With the exit rule off, the outputs of STEPS steps of one session are the
 * reference; every other way of running the same steps must give the same bytes: two sessions stepped in turn, a
 * session reset after other steps, masic_run, two sessions running masic_run at the same time in two threads, and a
 * session opened on a descriptor with the caller's arena. Then calls the library must refuse are made, each checked
 * for its status. Prints "ok: N checks", or the first difference and exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "masic_runtime.h"

static int checks;

#define CHECK(cond, ...)                                                                                              \
  do {                                                                                                                \
    checks++;                                                                                                         \
    if (!(cond)) {                                                                                                    \
      fprintf(stderr, "embed_check: line %d: ", __LINE__);                                                           \
      fprintf(stderr, __VA_ARGS__);                                                                                   \
      fprintf(stderr, "\n");                                                                                          \
      exit(1);                                                                                                        \
    }                                                                                                                 \
  } while (0)

static size_t n_in, n_out;

static masic_session_t *open_path(const char *weights) {
  char why[MASIC_ERROR_BYTES];
  masic_session_t *s;
  masic_open_options_t options = {.weights_path = weights, .weights_fd = -1};
  CHECK(masic_open(&options, &s, why, sizeof why) == MASIC_OK, "masic_open: %s", why);
  CHECK(masic_set_exit_rule(s, MASIC_RULE_NONE, 0, 0) == MASIC_OK, "%s", masic_last_error(s));
  return s;
}

/* Steps `s` over steps first..first+n-1 of the frames, writing the outputs to y. */
static void step(masic_session_t *s, const float *x, float *y, int first, int n) {
  for (int t = first; t < first + n; t++)
    CHECK(masic_step(s, x + (size_t)t * n_in, y + (size_t)t * n_out, NULL) == MASIC_OK, "step %d: %s", t + 1,
          masic_last_error(s));
}

static void same(const float *a, const float *b, int steps, const char *what) {
  for (int t = 0; t < steps; t++)
    CHECK(!memcmp(a + (size_t)t * n_out, b + (size_t)t * n_out, n_out * sizeof *a), "%s: step %d differs", what,
          t + 1);
}

typedef struct {
  masic_session_t *session;
  const float *x;
  float *y;
  int steps;
  masic_status_t status;
} run_job_t;

static void *run_in_thread(void *arg) {
  run_job_t *job = arg;
  job->status = masic_run(job->session, job->x, job->steps, job->steps, job->y, NULL);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: embed_check WEIGHTS FRAMES STEPS\n");
    return 2;
  }
  const char *weights = argv[1];
  int steps = atoi(argv[3]);
  n_in = masic_input_floats();
  n_out = masic_output_floats();
  float *x = calloc((size_t)steps * n_in, sizeof *x);
  float *ref = calloc((size_t)steps * n_out, sizeof *ref), *got = calloc((size_t)steps * n_out, sizeof *got);
  float *other = calloc((size_t)steps * n_out, sizeof *other);
  FILE *f = fopen(argv[2], "rb");
  CHECK(f && fread(x, sizeof *x, (size_t)steps * n_in, f) == (size_t)steps * n_in, "cannot read %s", argv[2]);
  fclose(f);

  masic_session_t *a = open_path(weights);
  step(a, x, ref, 0, steps);

  /* Two sessions stepped in turn. */
  masic_session_t *b = open_path(weights), *c = open_path(weights);
  for (int t = 0; t < steps; t++) {
    step(b, x, got, t, 1);
    step(c, x, other, t, 1);
  }
  same(ref, got, steps, "the first of two interleaved sessions");
  same(ref, other, steps, "the second of two interleaved sessions");

  /* Reset after a whole sample equals a fresh open. */
  CHECK(masic_reset(a) == MASIC_OK, "%s", masic_last_error(a));
  step(a, x, got, 0, steps);
  same(ref, got, steps, "steps after masic_reset");

  /* masic_run, from whatever state b is in. */
  masic_stats_t stats;
  memset(got, 0, (size_t)steps * n_out * sizeof *got);
  CHECK(masic_run(b, x, steps, steps, got, &stats) == MASIC_OK, "%s", masic_last_error(b));
  CHECK(stats.steps_run == steps && !stats.exited_early, "masic_run ran %d steps", stats.steps_run);
  same(ref, got, steps, "masic_run");

  /* Two sessions computing at the same time (no worker pool: each runs its kernels on its own thread). */
  run_job_t jobs[2] = {{b, x, got, steps, MASIC_OK}, {c, x, other, steps, MASIC_OK}};
  pthread_t threads[2];
  for (int k = 0; k < 2; k++) CHECK(!pthread_create(&threads[k], NULL, run_in_thread, &jobs[k]), "pthread_create");
  for (int k = 0; k < 2; k++) {
    pthread_join(threads[k], NULL);
    CHECK(jobs[k].status == MASIC_OK, "masic_run in thread %d: %s", k, masic_last_error(jobs[k].session));
  }
  same(ref, got, steps, "the first of two sessions run in two threads at once");
  same(ref, other, steps, "the second of two sessions run in two threads at once");

  /* A descriptor and the caller's arena. */
  int fd = open(weights, O_RDONLY);
  CHECK(fd >= 0, "cannot open %s", weights);
  size_t bytes = masic_arena_bytes() ? masic_arena_bytes() : 1;
  size_t rounded = (bytes + masic_arena_alignment() - 1) / masic_arena_alignment() * masic_arena_alignment();
  void *arena = aligned_alloc(masic_arena_alignment(), rounded);
  char why[MASIC_ERROR_BYTES];
  masic_session_t *d;
  masic_open_options_t by_fd = {.weights_path = "weights given by descriptor", .weights_fd = fd, .arena = arena,
                                .arena_bytes = rounded};
  CHECK(masic_open(&by_fd, &d, why, sizeof why) == MASIC_OK, "masic_open on a descriptor: %s", why);
  CHECK(masic_set_exit_rule(d, MASIC_RULE_NONE, 0, 0) == MASIC_OK, "%s", masic_last_error(d));
  step(d, x, got, 0, steps);
  same(ref, got, steps, "a session on a descriptor and the caller's arena");
  masic_close(d);
  CHECK(fcntl(fd, F_GETFD) != -1, "masic_close closed the caller's descriptor");
  close(fd);

  /* Refusals: each a status and a message, the session still usable after a refused call. */
  masic_open_options_t missing = {.weights_path = "/nonexistent/weights.bin", .weights_fd = -1};
  CHECK(masic_open(&missing, &d, why, sizeof why) == MASIC_ERR_INPUT && d == NULL && strstr(why, "nonexistent"),
        "a missing weights file gave '%s'", why);
  masic_open_options_t small = {.weights_path = weights, .weights_fd = -1, .arena = arena, .arena_bytes = 1};
  CHECK(masic_open(&small, &d, why, sizeof why) == MASIC_ERR_INPUT && strstr(why, "arena"),
        "a small arena gave '%s'", why);
  CHECK(masic_step(a, NULL, got, NULL) == MASIC_ERR_INPUT && *masic_last_error(a), "a NULL input was taken");
  CHECK(masic_run(a, x, 1, 0, NULL, NULL) == MASIC_ERR_INPUT, "a run of 0 steps was taken");
  CHECK(masic_set_exit_rule(a, MASIC_RULE_SOFTMAX_CONFIDENCE, 2.0, 0) == MASIC_ERR_INPUT, "a confidence of 2 was taken");
  CHECK(masic_run(a, x, steps, steps, got, NULL) == MASIC_OK, "after refusals: %s", masic_last_error(a));
  same(ref, got, steps, "masic_run after refused calls");

  masic_close(a);
  masic_close(b);
  masic_close(c);
  masic_close(NULL);
  free(arena);
  free(x);
  free(ref);
  free(got);
  free(other);
  printf("ok: %d checks\n", checks);
  return 0;
}

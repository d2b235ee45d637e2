/* session.c: an open model (masic_runtime.h): the arena, weights.bin, the loading thread and the exit rule's view of
 * the current sample, all in one masic_session_t, so that nothing is global. out/model runs its samples through the
 * same functions (session.h).
 *
 * Timesteps run in blocks of masic_model.block: the inputs of a block's steps are copied into its input slots, the
 * generated masic_model_block runs them layer by layer, and the outputs are read back in order, the exit rule applied
 * after each step as if steps ran one at a time. A step-by-step caller runs blocks of one step. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "exit_rule.h"
#include "files.h"
#include "model_check.h"
#include "stream.h"
#include "util.h"

#define MIN_ARENA_ALIGNMENT 64

_Static_assert(MASIC_ERROR_BYTES == MASIC_ERROR_CAP, "masic_runtime.h states the error messages' size");
_Static_assert((int)MASIC_ERR_SYSTEM == MASIC_EXIT_SYSTEM && (int)MASIC_ERR_INPUT == MASIC_EXIT_USER &&
                   (int)MASIC_ERR_KERNEL == MASIC_EXIT_STEP,
               "statuses are the executable's exit codes");
_Static_assert((int)MASIC_RULE_STABLE_ARGMAX == MASIC_EXIT_STABLE_ARGMAX, "rules are masic_model.h's");

struct masic_session {
  int fd;
  bool own_fd;
  char *path; /* weights.bin, for messages */
  uint8_t *arena;
  bool own_arena;
  masic_stream_t *stream;
  masic_weight_io_t io;
  masic_exit_rule_t exit;
  size_t in_numel, out_numel;
  double *acc;  /* sum of the current sample's outputs */
  float *out;   /* the step's output, copied out of the arena (an output slot need not be float-aligned) */
  bool initial; /* neuron state at its initial values, nothing run since */
  bool broken;  /* a failure left the arena or the stream unusable: every call returns `error` */
  masic_error_t error;
  /* the exit rule's view of the current sample */
  int32_t steps;    /* outputs accumulated */
  int32_t computed; /* steps the model ran */
  size_t best;      /* argmax of acc */
  int32_t run;      /* consecutive steps, ending now, with argmax `best` */
  bool exited;      /* the rule held after the last step */
};

/* ---- the model's figures ---- */

const char *masic_model_name(void) { return masic_model.name; }
size_t masic_arena_bytes(void) { return (size_t)masic_model.arena_bytes; }
size_t masic_arena_alignment(void) {
  return masic_model.arena_alignment > MIN_ARENA_ALIGNMENT ? (size_t)masic_model.arena_alignment : MIN_ARENA_ALIGNMENT;
}
size_t masic_input_floats(void) { return (size_t)masic_shape_numel(masic_model.input_ndim, masic_model.input_shape); }
size_t masic_output_floats(void) {
  return (size_t)masic_shape_numel(masic_model.output_ndim, masic_model.output_shape);
}
int32_t masic_default_timesteps(void) { return masic_model.timesteps; }
int32_t masic_max_timesteps(void) {
  return masic_state_within_block(&masic_model) ? masic_model.block : MASIC_MAX_TIMESTEPS;
}

const char *masic_status_name(masic_status_t status) {
  switch (status) {
  case MASIC_OK: return "ok";
  case MASIC_ERR_SYSTEM: return "system error";
  case MASIC_ERR_INPUT: return "input error";
  case MASIC_ERR_KERNEL: return "kernel error";
  }
  return "unknown status";
}

/* ---- errors ---- */

static masic_status_t fail_with(masic_session_t *s, const masic_error_t *err) {
  s->error = *err;
  return (masic_status_t)err->code;
}

/* A failure after which the arena or the stream cannot be trusted: the session refuses every further call. */
static masic_status_t break_with(masic_session_t *s, const masic_error_t *err) {
  s->broken = true;
  return fail_with(s, err);
}

__attribute__((format(printf, 3, 4))) static masic_status_t refuse(masic_session_t *s, masic_status_t status, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  char text[MASIC_ERROR_CAP];
  vsnprintf(text, sizeof text, fmt, args);
  va_end(args);
  masic_error_t err;
  masic_fail(&err, (int)status, "%s", text);
  return fail_with(s, &err);
}

/* A usable session, or its stored failure. */
static masic_status_t usable(masic_session_t *s) {
  if (!s) return MASIC_ERR_INPUT;
  return s->broken ? (masic_status_t)s->error.code : MASIC_OK;
}

const char *masic_last_error(const masic_session_t *s) {
  return s ? s->error.message : "no session (masic_open failed or was not called)";
}
const masic_error_t *masic_session_error(const masic_session_t *s) { return &s->error; }
const masic_weight_io_t *masic_session_io(const masic_session_t *s) { return &s->io; }
const double *masic_session_sums(const masic_session_t *s) { return s->acc; }

/* ---- open and close ---- */

/* Checks weights.bin's size and fills the arena with the resident weights, each piece checked against its CRC-32C as
 * it is read: the file is read once, never in a pass of its own (`model --check` verifies it whole). */
static bool load_weights(masic_session_t *s, uint64_t size, masic_error_t *err) {
  if (!masic_weights_check_size(s->path, size, masic_model.weights_bytes, err)) return false;
  return masic_weights_load(s->fd, s->path, "resident weight", s->arena, masic_model.resident, masic_model.n_resident,
                            &s->io, &s->io.resident, err);
}

static bool take_arena(masic_session_t *s, const masic_open_options_t *o, masic_error_t *err) {
  size_t alignment = masic_arena_alignment(), bytes = masic_model.arena_bytes ? masic_arena_bytes() : 1;
  if (o->arena) {
    if ((uintptr_t)o->arena % alignment)
      return masic_fail(err, MASIC_EXIT_USER, "the arena given to masic_open is not aligned to %zu bytes", alignment);
    if (o->arena_bytes < masic_arena_bytes())
      return masic_fail(err, MASIC_EXIT_USER, "the arena given to masic_open holds %zu bytes; the model needs %zu",
                        o->arena_bytes, masic_arena_bytes());
    s->arena = o->arena;
  } else {
    void *arena = NULL;
    if (posix_memalign(&arena, alignment, bytes) != 0)
      return masic_fail(err, MASIC_EXIT_SYSTEM, "out of memory allocating the %llu-byte arena",
                        (unsigned long long)masic_model.arena_bytes);
    s->arena = arena;
    s->own_arena = true;
  }
  memset(s->arena, 0, bytes);
  return true;
}

/* Everything of masic_open but the reads of weights.bin, which need the session's file. */
static bool open_session(masic_session_t *s, const masic_open_options_t *o, masic_error_t *err) {
  if (!masic_model_check(&masic_model, err)) return false;
  bool calibrated;
  masic_exit_rule_t rule;
  if (!masic_exit_override_read(&masic_exit_override, &calibrated, &rule, err)) return false;
  s->exit = calibrated ? rule : masic_model.exit_rule;
  s->in_numel = masic_input_floats();
  s->out_numel = masic_output_floats();
  const char *path = o->weights_path ? o->weights_path : "weights.bin";
  s->path = strdup(path);
  s->acc = calloc(s->out_numel ? s->out_numel : 1, sizeof *s->acc);
  s->out = calloc(s->out_numel ? s->out_numel : 1, sizeof *s->out);
  if (!s->path || !s->acc || !s->out) return masic_fail(err, MASIC_EXIT_SYSTEM, "out of memory opening the model");
  uint64_t size;
  if (o->weights_fd >= 0) {
    struct stat st;
    if (fstat(o->weights_fd, &st) != 0)
      return masic_fail(err, MASIC_EXIT_USER, "cannot use the weights descriptor %d: %s", o->weights_fd,
                        strerror(errno));
    if (!S_ISREG(st.st_mode))
      return masic_fail(err, MASIC_EXIT_USER, "the weights descriptor %d is not a regular file; %s", o->weights_fd,
                        MASIC_WEIGHTS_REMEDY);
    s->fd = o->weights_fd;
    size = (uint64_t)st.st_size;
  } else {
    if (!o->weights_path) return masic_fail(err, MASIC_EXIT_USER, "masic_open needs a weights_path or a weights_fd");
    masic_file_id_t id;
    if (!masic_open_regular(path, "weights file", MASIC_WEIGHTS_REMEDY, &s->fd, &size, &id, err)) return false;
    s->own_fd = true;
  }
  if (!take_arena(s, o, err) || !load_weights(s, size, err)) return false;
  if (!masic_stream_start(&s->stream, &masic_model, s->fd, s->path, s->arena, &s->io, err)) return false;
  return true;
}

masic_status_t masic_open(const masic_open_options_t *options, masic_session_t **session, char *error,
                          size_t error_bytes) {
  masic_error_t err = {0};
  masic_session_t *s = NULL;
  if (!options || !session)
    masic_fail(&err, MASIC_EXIT_USER, "masic_open needs options and a place for the session");
  else if (!(s = calloc(1, sizeof *s)))
    masic_fail(&err, MASIC_EXIT_SYSTEM, "out of memory opening the model");
  else {
    s->fd = -1;
    s->initial = false; /* the initial state is read by the first step or run: see masic_reset */
    if (open_session(s, options, &err)) {
      *session = s;
      if (error && error_bytes) error[0] = '\0';
      return MASIC_OK;
    }
    masic_close(s);
  }
  if (session) *session = NULL;
  if (error && error_bytes) snprintf(error, error_bytes, "%s", err.message);
  return (masic_status_t)err.code;
}

void masic_close(masic_session_t *s) {
  if (!s) return;
  masic_stream_stop(s->stream);
  if (s->own_fd && s->fd >= 0) close(s->fd);
  if (s->own_arena) free(s->arena);
  free(s->acc);
  free(s->out);
  free(s->path);
  free(s);
}

/* ---- the timestep loop ---- */

masic_status_t masic_set_exit_rule(masic_session_t *s, masic_rule_t rule, double threshold, int32_t min_steps) {
  masic_status_t status = usable(s);
  if (status) return status;
  masic_exit_rule_t r = {.rule = (int32_t)rule, .min_timesteps = min_steps, .threshold = threshold};
  const char *problem = masic_exit_rule_problem(&r);
  if (problem) return refuse(s, MASIC_ERR_INPUT, "%s", problem);
  s->exit = r;
  return MASIC_OK;
}

masic_status_t masic_reset(masic_session_t *s) {
  masic_status_t status = usable(s);
  if (status) return status;
  masic_error_t err;
  if (!masic_weights_load(s->fd, s->path, "initial state", s->arena, masic_model.state_init, masic_model.n_state_init,
                          &s->io, &s->io.state,
                          &err))
    return break_with(s, &err);
  memset(s->acc, 0, s->out_numel * sizeof *s->acc);
  s->steps = s->computed = s->run = 0;
  s->best = 0;
  s->exited = false;
  s->initial = true;
  return MASIC_OK;
}

/* Runs steps first..first+n-1 of a sample of max_steps (0: step by step) as one block, their inputs fetched from
 * io. Its loads may begin while its inputs are copied: the previous block's outputs have been read, so nothing of
 * that block is live any more. The inputs are copied anew for every block: the arena planner may reuse an input
 * slot once the kernels that read it have run. */
static masic_status_t run_block(masic_session_t *s, const masic_sample_io_t *io, int32_t first, int32_t n,
                                int32_t max_steps) {
  masic_stream_begin_block(s->stream);
  for (int32_t t = 0; t < n; t++)
    memcpy(s->arena + masic_model.input_offsets[t], io->input(io->ctx, first + t), s->in_numel * sizeof(float));
  int status = masic_model_block(s->arena, n, s->stream);
  masic_stream_end_block(s->stream);
  s->initial = false;
  s->computed += n;
  masic_error_t err;
  if (masic_stream_failed(s->stream, &err)) return break_with(s, &err);
  if (!status) return MASIC_OK;
  if (max_steps == 0)
    masic_fail(&err, MASIC_EXIT_STEP, "timestep %d failed with status %d", first + 1, status);
  else if (n == 1)
    masic_fail(&err, MASIC_EXIT_STEP, "timestep %d of %d failed with status %d", first + 1, max_steps, status);
  else
    masic_fail(&err, MASIC_EXIT_STEP, "timesteps %d to %d of %d (one block) failed with status %d", first + 1,
               first + n, max_steps, status);
  return break_with(s, &err);
}

/* Adds output slot t of the block just run to the sample's sum; returns true if the rule says to stop after it. */
static bool accumulate(masic_session_t *s, int32_t t) {
  memcpy(s->out, s->arena + masic_model.output_offsets[t], s->out_numel * sizeof(float));
  for (size_t k = 0; k < s->out_numel; k++) s->acc[k] += s->out[k];
  s->steps++;
  size_t previous = s->best;
  s->best = masic_argmax(s->acc, s->out_numel);
  s->run = s->steps > 1 && s->best == previous ? s->run + 1 : 1;
  s->exited = s->exit.rule != MASIC_EXIT_NONE && s->steps >= s->exit.min_timesteps &&
              masic_exit_score(s->exit.rule, s->acc, s->out_numel, s->best, s->run) >= s->exit.threshold;
  return s->exited;
}

static void fill_stats(const masic_session_t *s, masic_stats_t *stats) {
  if (!stats) return;
  *stats = (masic_stats_t){
      .steps_run = s->steps,
      .steps_computed = s->computed,
      .prediction = (int32_t)s->best,
      .exited_early = s->exited,
      .load_wait_s = s->io.load_wait_s,
      .weight_bytes_read = s->io.resident + s->io.streamed,
      .state_bytes_read = s->io.state,
  };
}

masic_status_t masic_stats(const masic_session_t *s, masic_stats_t *stats) {
  if (!s || !stats) return MASIC_ERR_INPUT;
  fill_stats(s, stats);
  return MASIC_OK;
}

static const float *single_input(void *ctx, int32_t step) {
  (void)step;
  return ctx;
}

masic_status_t masic_step(masic_session_t *s, const float *input, float *output, int *exit_now) {
  masic_status_t status = usable(s);
  if (status) return status;
  if (!input) return refuse(s, MASIC_ERR_INPUT, "masic_step needs an input");
  if (masic_state_within_block(&masic_model))
    return refuse(s, MASIC_ERR_INPUT, "this model keeps neuron state only within one block of %d timesteps (a "
                  "layer-major plan under a budget), so it cannot run step by step; use masic_run",
                  masic_model.block);
  if (s->steps == MASIC_MAX_TIMESTEPS)
    return refuse(s, MASIC_ERR_INPUT, "the sample has run %d timesteps, the most one may take; call masic_reset",
                  MASIC_MAX_TIMESTEPS);
  if (!s->initial && s->computed == 0 && (status = masic_reset(s))) return status;
  masic_sample_io_t io = {.input = single_input, .ctx = (void *)input};
  if ((status = run_block(s, &io, s->computed, 1, 0))) return status;
  bool stop = accumulate(s, 0);
  if (output) memcpy(output, s->out, s->out_numel * sizeof(float));
  if (exit_now) *exit_now = stop;
  return MASIC_OK;
}

masic_status_t masic_session_run_sample(masic_session_t *s, int32_t n_steps, const masic_sample_io_t *io,
                                        masic_stats_t *stats) {
  masic_status_t status = usable(s);
  if (status) return status;
  if (n_steps < 1 || n_steps > masic_max_timesteps())
    return refuse(s, MASIC_ERR_INPUT, "a sample takes 1 to %d timesteps%s, not %d", masic_max_timesteps(),
                  masic_state_within_block(&masic_model) ? " (this model keeps neuron state for one block)" : "",
                  n_steps);
  if (!s->initial && (status = masic_reset(s))) return status;
  bool stop = false;
  while (!stop && s->computed < n_steps) {
    int32_t first = s->computed;
    int32_t n = n_steps - first < masic_model.block ? n_steps - first : masic_model.block;
    if ((status = run_block(s, io, first, n, n_steps))) return status;
    for (int32_t t = 0; t < n && !stop; t++) {
      stop = accumulate(s, t);
      if (io->output) io->output(io->ctx, first + t, s->out);
    }
  }
  fill_stats(s, stats);
  return MASIC_OK;
}

typedef struct {
  const float *inputs;
  int32_t n_inputs;
  float *outputs;
  size_t in_numel, out_numel;
} arrays_t;

static const float *array_input(void *ctx, int32_t step) {
  const arrays_t *a = ctx;
  return a->inputs + (a->n_inputs == 1 ? 0 : (size_t)step * a->in_numel);
}

static void array_output(void *ctx, int32_t step, const float *y) {
  const arrays_t *a = ctx;
  memcpy(a->outputs + (size_t)step * a->out_numel, y, a->out_numel * sizeof *y);
}

masic_status_t masic_run(masic_session_t *s, const float *inputs, int32_t n_inputs, int32_t n_steps, float *outputs,
                         masic_stats_t *stats) {
  masic_status_t status = usable(s);
  if (status) return status;
  if (!inputs) return refuse(s, MASIC_ERR_INPUT, "masic_run needs inputs");
  if (n_inputs != 1 && n_inputs != n_steps)
    return refuse(s, MASIC_ERR_INPUT, "masic_run takes 1 input or one per step (%d), not %d", n_steps, n_inputs);
  arrays_t arrays = {inputs, n_inputs, outputs, s->in_numel, s->out_numel};
  masic_sample_io_t io = {.input = array_input, .output = outputs ? array_output : NULL, .ctx = &arrays};
  return masic_session_run_sample(s, n_steps, &io, stats);
}

/* ---- the worker pool ---- */

masic_status_t masic_workers_start(int threads) {
  return masic_parallel_init(threads) == 0 ? MASIC_OK : MASIC_ERR_SYSTEM;
}
int masic_workers_count(void) { return masic_parallel_num_threads(); }
void masic_workers_stop(void) { masic_parallel_shutdown(); }

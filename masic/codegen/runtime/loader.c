/* loader.c: the entry point of every executable masic builds.
 *
 * Linked with the generated model.c, the kernel objects, parallel.c and the loader's other parts into one static
 * program that runs from a folder holding it, weights.bin and manifest.json. It checks weights.bin against the build,
 * fills the one arena, presents a .npy input for a number of timesteps, applies the early-exit rule and reports one
 * line of JSON. With --labels it runs many samples, resetting the neuron state before each, and reports accuracy and
 * timesteps used; with --stream or --stream-samples it runs frames from standard input (pipe.c). The model itself,
 * its timestep loop and the exit rule are the library's (session.c, masic_runtime.h), which embedding programs
 * link too. Timesteps run in blocks of masic_model.block (the model computes a block of steps layer by layer);
 * weights that do not fit in the arena are streamed from weights.bin once per block by a loading thread that runs
 * ahead of the compute (stream.c). When one block covers the whole run, the plan may also keep each neuron's state
 * only while its layer runs: the loading thread then fills the state with its initial value in every block, and a
 * run may not be longer than one block.
 *
 * Everything read from files or the command line is parsed by its own part (args.c, npy.c, input.c, weights.c,
 * exit_rule.c), which returns an error instead of exiting; this file turns errors into one line on stderr and the
 * exit codes of util.h. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "crc32c.h"
#include "exit_rule.h"
#include "files.h"
#include "input.h"
#include "masic_model.h"
#include "masic_runtime.h"
#include "model_check.h"
#include "npy.h"
#include "profile.h"
#include "pipe.h"
#include "report.h"
#include "session.h"
#include "util.h"
#include "weights.h"

/* Inputs, outputs and weights are copied byte for byte between files and the arena. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "masic targets little-endian machines only");

#define CHECK_CHUNK_BYTES ((size_t)1 << 20) /* pread size of --check */

typedef struct {
  const char *path;
  int fd; /* kept open by the session: the initial state is read again before each sample */
  uint64_t size;
  masic_file_id_t id;
} weights_t;

/* Buffers of a run, allocated once and reused for every sample. */
typedef struct {
  size_t out_numel;
  bool keep_history;  /* --output: every step's output is kept */
  float *history;     /* every step's output of the current sample, grown with the steps computed */
  size_t history_cap; /* steps the history holds */
  float *frame;       /* the current step's input, read from the input file */
} run_buffers_t;

/* What a run reads and writes besides the input, opened before the weights are loaded so that a bad path fails in
 * milliseconds rather than after a long run. */
typedef struct {
  int64_t *labels;   /* NULL: one unlabelled sample */
  FILE *output;      /* --output, or NULL */
  FILE *predictions; /* --predictions, or NULL */
  FILE *profile;     /* --profile, or NULL */
} run_files_t;

static void check(bool ok, const masic_error_t *err) {
  if (!ok) masic_die_with(err);
}

/* Under qemu-user /proc/self/exe names the emulated program, so this also works when testing on the host. */
static char *default_weights_path(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0 || (size_t)n >= sizeof exe - 1)
    masic_die(MASIC_EXIT_USER, "cannot locate the executable's folder to find weights.bin; pass --weights PATH");
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash) slash[1] = '\0';
  size_t cap = strlen(exe) + sizeof "weights.bin";
  char *path = masic_xmalloc(cap);
  snprintf(path, cap, "%sweights.bin", slash ? exe : "");
  return path;
}

/* ---- the timestep loop ---- */

/* The rule in force: a command-line flag, else the calibrated rule written into the executable, else the compiled
 * one; --min-timesteps replaces the minimum of whichever applies. A model whose state lives within a block cannot
 * run more steps than one block: the next block would start from the initial state again. */
static masic_schedule_t make_schedule(const masic_options_t *opt, const masic_input_t *in) {
  const masic_model_t *m = &masic_model;
  masic_schedule_t s = {.max_steps = m->timesteps, .exit = m->exit_rule, .exit_source = "compiled"};
  masic_error_t err;
  bool calibrated;
  masic_exit_rule_t rule;
  check(masic_exit_override_read(&masic_exit_override, &calibrated, &rule, &err), &err);
  if (calibrated) s.exit = rule, s.exit_source = "calibrated";
  if (opt->exit_flag) {
    s.exit = opt->exit_rule;
    s.exit.min_timesteps = 1;
    s.exit_source = "command_line";
  }
  if (opt->min_timesteps >= 0) {
    s.exit.min_timesteps = opt->min_timesteps;
    s.exit_source = "command_line";
  }
  if (in->sequence_length > MASIC_MAX_TIMESTEPS && opt->timesteps == 0)
    masic_die(MASIC_EXIT_USER, "input sequence %s has %lld timesteps, more than the %d a run may take; pass "
              "--timesteps %d or fewer", in->path, (long long)in->sequence_length, MASIC_MAX_TIMESTEPS,
              MASIC_MAX_TIMESTEPS);
  if (in->sequence_length) s.max_steps = (int)(in->sequence_length < INT_MAX ? in->sequence_length : INT_MAX);
  if (opt->timesteps) {
    if (in->sequence_length && opt->timesteps > in->sequence_length)
      masic_die(MASIC_EXIT_USER, "--timesteps %d exceeds the %lld samples of the input sequence %s", opt->timesteps,
                (long long)in->sequence_length, in->path);
    s.max_steps = opt->timesteps;
  }
  if (s.max_steps > MASIC_MAX_TIMESTEPS)
    masic_die(MASIC_EXIT_USER, "the model's default of %d timesteps is more than the %d a run may take; pass "
              "--timesteps %d or fewer", s.max_steps, MASIC_MAX_TIMESTEPS, MASIC_MAX_TIMESTEPS);
  if (s.max_steps > m->block && masic_state_within_block(m)) {
    if (opt->timesteps)
      masic_die(MASIC_EXIT_USER, "--timesteps %d exceeds the %d timesteps this model keeps neuron state for (one "
                "block of a layer-major plan); recompile with --timesteps %d", s.max_steps, m->block, s.max_steps);
    masic_die(MASIC_EXIT_USER, "input sequence %s has %d timesteps, more than the %d this model keeps neuron state for "
              "(one block of a layer-major plan); pass --timesteps %d or fewer, or recompile with --timesteps %d",
              in->path, s.max_steps, m->block, m->block, s.max_steps);
  }
  return s;
}

static run_buffers_t alloc_run_buffers(bool keep_history) {
  return (run_buffers_t){
      .out_numel = masic_output_floats(),
      .keep_history = keep_history,
      .frame = masic_xmalloc(masic_input_floats() * sizeof(float)),
  };
}

/* Makes room in the history for `steps` steps: it grows with the steps a sample computes, never with --timesteps. */
static void reserve_history(run_buffers_t *b, size_t steps) {
  if (steps <= b->history_cap) return;
  size_t cap = b->history_cap ? b->history_cap : 16;
  while (cap < steps) cap *= 2;
  size_t bytes;
  if (cap > SIZE_MAX / sizeof(float) / b->out_numel) masic_die(MASIC_EXIT_SYSTEM, "out of memory keeping outputs");
  bytes = cap * b->out_numel * sizeof(float);
  float *grown = realloc(b->history, bytes);
  if (!grown) masic_die(MASIC_EXIT_SYSTEM, "out of memory keeping %zu steps of outputs for --output", cap);
  b->history = grown;
  b->history_cap = cap;
}

static void free_run_buffers(run_buffers_t *b) {
  free(b->history);
  free(b->frame);
}

/* One sample of the input file, as the session fetches its steps. */
typedef struct {
  const masic_input_t *in;
  int64_t sample;
  run_buffers_t *buffers;
} file_sample_t;

/* One input presented at every step is read once, at the sample's first step (which is always fetched first). */
static const float *read_step_input(void *ctx, int32_t step) {
  const file_sample_t *f = ctx;
  const masic_input_t *in = f->in;
  if (in->sequence_length == 0 && step > 0) return f->buffers->frame;
  int64_t got = masic_pread_full(in->fd, f->buffers->frame, (size_t)in->sample_bytes,
                                 masic_input_offset(in, f->sample, step));
  if (got < 0) masic_die(MASIC_EXIT_SYSTEM, "cannot read input %s: %s", in->path, strerror(errno));
  if ((uint64_t)got < in->sample_bytes)
    masic_die(MASIC_EXIT_USER, "input %s shrank while the model was running", in->path);
  return f->buffers->frame;
}

static void keep_step_output(void *ctx, int32_t step, const float *y) {
  run_buffers_t *b = ((file_sample_t *)ctx)->buffers;
  reserve_history(b, (size_t)step + 1);
  memcpy(b->history + (size_t)step * b->out_numel, y, b->out_numel * sizeof *y);
}

/* Runs one sample from the initial neuron state until the last step or until the exit rule holds (see
 * masic_session_run_sample: up to block - 1 steps past the one that fired are computed in vain). */
static masic_sample_result_t run_sample(const masic_schedule_t *s, const masic_input_t *in, int64_t sample,
                                        masic_session_t *session, run_buffers_t *b) {
  file_sample_t f = {in, sample, b};
  masic_sample_io_t io = {read_step_input, b->keep_history ? keep_step_output : NULL, &f};
  masic_stats_t stats;
  masic_check_session(masic_session_run_sample(session, s->max_steps, &io, &stats), session);
  return (masic_sample_result_t){
      .steps_run = stats.steps_run, .steps_computed = stats.steps_computed, .prediction = (size_t)stats.prediction};
}

/* ---- results ---- */

static void write_or_die(FILE *f, const char *path, const void *data, size_t nbytes) {
  if (fwrite(data, 1, nbytes, f) != nbytes)
    masic_die(MASIC_EXIT_SYSTEM, "cannot write output file %s: %s", path, strerror(errno));
}

static void close_output(FILE *f, const char *path) {
  if (fclose(f) != 0) masic_die(MASIC_EXIT_SYSTEM, "cannot write output file %s: %s", path, strerror(errno));
}

static void write_npy_header(FILE *f, const char *path, const char *descr, int ndim, const int64_t *shape) {
  uint8_t header[MASIC_NPY_HEADER_WRITE_CAP];
  write_or_die(f, path, header, masic_npy_format_header(header, descr, ndim, shape));
}

/* The shape of --output: (n_samples if lead, steps, *output shape). */
static void write_outputs_header(FILE *f, const char *path, bool lead, int64_t n_samples, int steps) {
  int64_t shape[MASIC_MAX_NDIM + 2];
  int ndim = 0;
  if (lead) shape[ndim++] = n_samples;
  shape[ndim++] = steps;
  memcpy(shape + ndim, masic_model.output_shape, (size_t)masic_model.output_ndim * sizeof *shape);
  write_npy_header(f, path, "<f4", ndim + masic_model.output_ndim, shape);
}

/* Writes one sample's outputs to --output: the steps run, then NaN up to the schedule's last step. */
static void write_sample_outputs(FILE *f, const char *path, const run_buffers_t *b, int steps_run, int max_steps) {
  write_or_die(f, path, b->history, (size_t)steps_run * b->out_numel * sizeof(float));
  static float nans[1024];
  if (!isnan(nans[0]))
    for (size_t k = 0; k < sizeof nans / sizeof *nans; k++) nans[k] = NAN;
  size_t left = (size_t)(max_steps - steps_run) * b->out_numel;
  for (size_t chunk; left; left -= chunk) {
    chunk = left < sizeof nans / sizeof *nans ? left : sizeof nans / sizeof *nans;
    write_or_die(f, path, nans, chunk * sizeof *nans);
  }
}

/* Reads the labels and opens the outputs, refusing an output that would overwrite a file the run reads. */
static run_files_t open_run_files(const masic_options_t *opt, const masic_input_t *in, const weights_t *weights) {
  masic_error_t err;
  run_files_t files = {0};
  masic_named_file_t read[5] = {{"--input", in->path, in->id}, {"the weights file", weights->path, weights->id}};
  size_t n_read = 2;
  if (opt->labels_path) {
    int fd;
    uint64_t size;
    masic_file_id_t id;
    uint64_t n_classes = masic_shape_numel(masic_model.output_ndim, masic_model.output_shape);
    check(masic_open_regular(opt->labels_path, "labels", "pass an existing .npy file to --labels", &fd, &size, &id,
                             &err),
          &err);
    check(masic_labels_read(fd, size, opt->labels_path, in->n_samples, n_classes, &files.labels, &err), &err);
    close(fd);
    read[n_read++] = (masic_named_file_t){"--labels", opt->labels_path, id};
  }
  masic_file_id_t id;
  if (opt->output_path) {
    check(masic_open_output("--output", opt->output_path, read, n_read, &files.output, &id, &err), &err);
    read[n_read++] = (masic_named_file_t){"--output", opt->output_path, id};
  }
  if (opt->predictions_path) {
    check(masic_open_output("--predictions", opt->predictions_path, read, n_read, &files.predictions, &id, &err), &err);
    read[n_read++] = (masic_named_file_t){"--predictions", opt->predictions_path, id};
  }
  if (opt->profile_path)
    check(masic_open_output("--profile", opt->profile_path, read, n_read, &files.profile, &id, &err), &err);
  return files;
}

/* Runs every sample of a labelled input, writes --output and --predictions, and prints the batch report. */
static void run_batch(const masic_options_t *opt, const masic_schedule_t *s, const masic_input_t *in,
                      const run_files_t *files, masic_session_t *session, double load_s, int threads) {
  FILE *output = files->output, *predictions = files->predictions;
  if (output) write_outputs_header(output, opt->output_path, true, in->n_samples, s->max_steps);
  /* The input file holds at least 4 bytes per sample, so these rows are bounded by its size. */
  int32_t *rows = predictions ? masic_xmalloc((size_t)in->n_samples * 2 * sizeof *rows) : NULL;
  masic_batch_totals_t totals = {.n_samples = in->n_samples};
  run_buffers_t buffers = alloc_run_buffers(output != NULL);
  double wall_s = 0;
  for (int64_t i = 0; i < in->n_samples; i++) {
    double start = masic_now_s();
    masic_sample_result_t r = run_sample(s, in, i, session, &buffers);
    wall_s += masic_now_s() - start;
    totals.correct += (int64_t)r.prediction == files->labels[i];
    totals.steps_computed += r.steps_computed;
    masic_totals_add(&totals, r.steps_run);
    if (output) write_sample_outputs(output, opt->output_path, &buffers, r.steps_run, s->max_steps);
    if (rows) {
      rows[2 * i] = (int32_t)r.prediction;
      rows[2 * i + 1] = r.steps_run;
    }
  }
  if (output) close_output(output, opt->output_path);
  if (predictions) {
    int64_t shape[2] = {in->n_samples, 2};
    write_npy_header(predictions, opt->predictions_path, "<i4", 2, shape);
    write_or_die(predictions, opt->predictions_path, rows, (size_t)in->n_samples * 2 * sizeof *rows);
    close_output(predictions, opt->predictions_path);
  }
  masic_print_batch_report(&masic_model, s, &totals, masic_session_io(session), wall_s, load_s, threads);
  free_run_buffers(&buffers);
  free(totals.histogram);
  free(rows);
}

/* Runs the one sample of an unlabelled input, writes --output and prints the single-sample report. */
static void run_single(const masic_options_t *opt, const masic_schedule_t *s, const masic_input_t *in,
                       const run_files_t *files, masic_session_t *session, double load_s, int threads) {
  FILE *output = files->output;
  run_buffers_t buffers = alloc_run_buffers(output != NULL);
  double start = masic_now_s();
  masic_sample_result_t r = run_sample(s, in, 0, session, &buffers);
  double wall_s = masic_now_s() - start;
  if (output) {
    write_outputs_header(output, opt->output_path, false, 1, r.steps_run);
    write_sample_outputs(output, opt->output_path, &buffers, r.steps_run, r.steps_run);
    close_output(output, opt->output_path);
  }
  masic_print_report(&masic_model, s, &r, masic_session_sums(session), buffers.out_numel, masic_session_io(session),
                     wall_s, load_s, threads);
  free_run_buffers(&buffers);
}

/* model --check: the size of weights.bin and the CRC-32C of every piece, read once; prints one line, exits 0. */
static int check_weights(const weights_t *weights) {
  masic_error_t err;
  uint8_t *buf = masic_xmalloc(CHECK_CHUNK_BYTES);
  uint64_t checked = 0;
  check(masic_weights_verify(weights->fd, weights->path, weights->size, &masic_model, buf, CHECK_CHUNK_BYTES, &checked,
                             &err),
        &err);
  free(buf);
  printf("weights file %s is intact: %llu bytes, %llu of them in checksummed pieces (CRC-32C, %s)\n", weights->path,
         (unsigned long long)weights->size, (unsigned long long)checked,
         masic_crc32c_hardware() ? "CPU instructions" : "portable table");
  return 0;
}

int main(int argc, char **argv) {
  masic_error_t err;
  masic_options_t opt;
  switch (masic_parse_args(argc, argv, &opt, &err)) {
  case MASIC_ARGS_HELP: fputs(masic_usage_text, stdout); return 0;
  case MASIC_ARGS_ERROR: masic_die_with(&err);
  case MASIC_ARGS_OK: break;
  }
  check(masic_model_check(&masic_model, &err), &err);
  char *default_path = opt.weights_path ? NULL : default_weights_path();
  weights_t weights = {.path = default_path ? default_path : opt.weights_path};
  if (opt.check) {
    check(masic_open_regular(weights.path, "weights file", MASIC_WEIGHTS_REMEDY, &weights.fd, &weights.size,
                             &weights.id, &err),
          &err);
    int status = check_weights(&weights);
    close(weights.fd);
    free(default_path);
    return status;
  }
  masic_input_t in = {.path = "standard input", .fd = -1};
  if (!opt.stream) check(masic_input_open(&masic_model, opt.input_path, opt.labels_path != NULL, &in, &err), &err);
  masic_schedule_t schedule = make_schedule(&opt, &in);

  if (opt.profile_path) masic_profile_begin(&masic_model);
  double load_start = masic_now_s();
  check(masic_open_regular(weights.path, "weights file", MASIC_WEIGHTS_REMEDY, &weights.fd, &weights.size,
                           &weights.id, &err),
        &err);
  masic_startup.open_s = masic_now_s() - load_start;
  run_files_t files = opt.stream ? (run_files_t){0} : open_run_files(&opt, &in, &weights);
  masic_session_t *session;
  masic_open_options_t options = {.weights_path = weights.path, .weights_fd = weights.fd};
  char why[MASIC_ERROR_BYTES];
  masic_status_t status = masic_open(&options, &session, why, sizeof why);
  if (status != MASIC_OK) masic_die(status, "%s", why);
  masic_check_session(masic_set_exit_rule(session, (masic_rule_t)schedule.exit.rule, schedule.exit.threshold,
                                          schedule.exit.min_timesteps),
                      session);
  double load_s = masic_now_s() - load_start;
  masic_startup.read_s = masic_session_io(session)->read_s;
  masic_startup.check_s = masic_session_io(session)->check_s;

  if (masic_workers_start(opt.threads) != MASIC_OK)
    masic_die(MASIC_EXIT_SYSTEM, "cannot start the worker threads (--threads %d)", opt.threads);
  int threads = masic_workers_count();
  double run_start = masic_now_s();
  if (opt.stream)
    masic_run_pipe(opt.stream, &schedule, session);
  else if (files.labels)
    run_batch(&opt, &schedule, &in, &files, session, load_s, threads);
  else
    run_single(&opt, &schedule, &in, &files, session, load_s, threads);
  double run_s = masic_now_s() - run_start;
  masic_close(session);
  if (files.profile) check(masic_profile_write(files.profile, opt.profile_path, run_s, threads, &err), &err);
  masic_workers_stop();

  if (in.fd >= 0) close(in.fd);
  close(weights.fd);
  free(files.labels);
  free(default_path);
  return 0;
}

/* masic_runtime.h: the C API of a compiled model, for programs that embed it (an artifact's include/ folder; link
 * lib/libmasic_model.a, or lib/libmasic_model.so, with -lpthread -lm).
 *
 *   masic_session_t *model;
 *   char why[MASIC_ERROR_BYTES];
 *   masic_open_options_t options = {.weights_path = "out/weights.bin", .weights_fd = -1};
 *   if (masic_open(&options, &model, why, sizeof why) != MASIC_OK) { fprintf(stderr, "%s\n", why); return 1; }
 *   for (int exit_now = 0; !exit_now && read_frame(x);)
 *     if (masic_step(model, x, y, &exit_now) != MASIC_OK) { fprintf(stderr, "%s\n", masic_last_error(model)); ... }
 *   masic_close(model);
 *
 * Memory: masic_open allocates the session (about 1 KB plus the output's size in doubles and floats) and, unless the
 * caller supplies one, the arena (masic_arena_bytes(), aligned to masic_arena_alignment()); a model whose weights
 * stream also starts one loading thread there. After masic_open nothing allocates, opens files or starts threads:
 * step, run and reset only read weights.bin (streamed weights, the initial neuron state) through the descriptor
 * opened or given at open.
 *
 * State: everything a model keeps between calls lives in its session (the arena, the loading thread, the exit
 * rule's sums), so several sessions of one model run side by side in one process, interleaved or from different
 * threads. The generated kernels and the plan are global symbols named after nothing but masic_ (masic_model,
 * masic_conv2d_0, ...): two *different* models cannot be linked statically into one program. Load each model's
 * libmasic_model.so with dlopen (RTLD_LOCAL, as Python's ctypes does): the shared library exports only the functions
 * below and binds its own symbols to itself.
 *
 * Concurrency: a session is used by one thread at a time (calls on one session must not overlap). Calls on different
 * sessions may run concurrently, except while the process-wide worker pool runs (masic_workers_start): its workers
 * serve one kernel launch at a time, so then calls that compute (masic_step, masic_run, masic_reset) on different
 * sessions must not overlap either. The query functions (masic_arena_bytes, ...) may be called at any time.
 *
 * Errors: every function returns a status; nothing prints or exits. The reason is one line, from masic_last_error
 * (or the buffer given to masic_open). After MASIC_ERR_SYSTEM, MASIC_ERR_KERNEL or a weights error from step, run
 * or reset the session refuses further calls with the same error: close it. */
#ifndef MASIC_RUNTIME_H
#define MASIC_RUNTIME_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MASIC_RUNTIME_API_VERSION 1
#define MASIC_ERROR_BYTES 1024 /* the longest error message, with its NUL */

/* A status; also the exit code of out/model for the same failure. */
typedef enum {
  MASIC_OK = 0,
  MASIC_ERR_SYSTEM = 1, /* out of memory, an I/O error, a thread that would not start, an inconsistent build */
  MASIC_ERR_INPUT = 2,  /* a problem the caller can fix: a bad argument or call, a missing or damaged weights file */
  MASIC_ERR_KERNEL = 3, /* a kernel reported failure during a step */
} masic_status_t;

typedef struct masic_session masic_session_t;

typedef struct {
  const char *weights_path; /* weights.bin, opened (read only) when weights_fd < 0 */
  int weights_fd;           /* >= 0: an open, readable descriptor of weights.bin, used instead; never closed here */
  void *arena;              /* NULL: allocated by masic_open; else the caller's, freed by the caller after close */
  size_t arena_bytes;       /* with `arena`: its size, at least masic_arena_bytes() */
} masic_open_options_t;

/* What a model computed for one sample (masic_run), or so far (masic_stats after steps). */
typedef struct {
  int32_t steps_run;          /* steps whose outputs count: the exit rule held after the last of them, or all ran */
  int32_t steps_computed;     /* steps the model ran; a block-wise model may compute up to a block past steps_run */
  int32_t prediction;         /* argmax of the sum of the steps' outputs */
  int32_t exited_early;       /* 1 if the exit rule held after the last step run */
  double load_wait_s;         /* since open: time the kernels waited for streamed weights */
  uint64_t weight_bytes_read; /* since open: resident weights once, streamed weights once per block */
  uint64_t state_bytes_read;  /* since open: initial neuron state read from weights.bin */
} masic_stats_t;

/* The early-exit rules (as in manifest.json's exit_rule.rule). */
typedef enum {
  MASIC_RULE_NONE = 0,               /* run every step */
  MASIC_RULE_SOFTMAX_CONFIDENCE = 1, /* max(softmax(sum of outputs)) >= threshold, in (0, 1] */
  MASIC_RULE_MARGIN = 2,             /* largest sum minus the second largest >= threshold > 0 */
  MASIC_RULE_STABLE_ARGMAX = 3,      /* the argmax has been the same for threshold (an integer >= 1) steps */
} masic_rule_t;

/* The model's figures; valid at any time, without a session. */
const char *masic_model_name(void);
size_t masic_arena_bytes(void);     /* the arena's size */
size_t masic_arena_alignment(void); /* the arena's required alignment (a power of two, at least 64) */
size_t masic_input_floats(void);    /* float32 elements of one step's input */
size_t masic_output_floats(void);   /* float32 elements of one step's output */
int32_t masic_default_timesteps(void);
/* The most steps one sample may take: masic_default_timesteps() when each layer keeps its neuron state only within
 * one block (a layer-major plan under a budget), else 1,000,000. */
int32_t masic_max_timesteps(void);

/* Opens the model: checks weights.bin's size, allocates or takes the arena, reads the resident weights and the initial
 * neuron state (each piece checked against its CRC-32C as it is read), and starts the loading thread if weights
 * stream (which checks each streamed piece as it reads it). The exit rule is the one written into
 * the library by masic calibrate, else the one it was compiled with. On failure *session is NULL and `error` (of
 * error_bytes, may be NULL) holds the reason. */
masic_status_t masic_open(const masic_open_options_t *options, masic_session_t **session, char *error,
                          size_t error_bytes);

/* Runs one timestep: input (masic_input_floats() floats) in, output (masic_output_floats() floats, may be NULL) out.
 * Adds the output to the sample's sum and sets *exit_now (may be NULL) to 1 if the exit rule holds after this step,
 * else 0. Steps continue the current sample until masic_reset. A model that keeps neuron state only within one
 * block (masic_max_timesteps() == its block) cannot run step by step: MASIC_ERR_INPUT, use masic_run. */
masic_status_t masic_step(masic_session_t *session, const float *input, float *output, int *exit_now);

/* Runs a whole sample from the initial state (it resets first): up to n_steps (1..masic_max_timesteps()) steps,
 * stopping after the first step at which the exit rule holds. `inputs` holds n_inputs (1: the same input at every
 * step, or n_steps: a sequence) inputs of masic_input_floats() each; `outputs` (may be NULL) receives the outputs of
 * the steps run, n_steps * masic_output_floats() floats at most. Fills *stats (may be NULL). */
masic_status_t masic_run(masic_session_t *session, const float *inputs, int32_t n_inputs, int32_t n_steps,
                         float *outputs, masic_stats_t *stats);

/* Neuron state back to its initial values and the sample's sum to zero: what a fresh masic_open gives. */
masic_status_t masic_reset(masic_session_t *session);

/* The current sample's figures (after masic_step calls). */
masic_status_t masic_stats(const masic_session_t *session, masic_stats_t *stats);

/* Replaces the session's exit rule (min_steps >= 0: the rule is not applied before that many steps). */
masic_status_t masic_set_exit_rule(masic_session_t *session, masic_rule_t rule, double threshold, int32_t min_steps);

/* Stops the loading thread, closes the descriptor it opened and frees what masic_open allocated; NULL is a no-op. */
void masic_close(masic_session_t *session);

/* The reason for the session's last failed call ("" if none). */
const char *masic_last_error(const masic_session_t *session);
const char *masic_status_name(masic_status_t status); /* "ok", "system error", "input error", "kernel error" */

/* The process-wide pool of worker threads that parallel kernels use (the only state shared by sessions). Without it
 * kernels run on the calling thread. threads <= 0: one per online core. Start it before, and stop it after, every
 * session's compute; masic_workers_start on a running pool changes nothing. */
masic_status_t masic_workers_start(int threads);
int masic_workers_count(void);
void masic_workers_stop(void);

#ifdef __cplusplus
}
#endif
#endif

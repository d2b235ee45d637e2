/* masic_model.h: the contract between the code masic generates for one model (model.c) and the loader.
 *
 * The generated model.c defines `masic_model` (constants of the plan) and `masic_model_block` (one block of
 * timesteps, a straight sequence of kernel calls at fixed arena offsets). The loader owns everything else. Its library
 * part (lib/libmasic_model.a, API in masic_runtime.h): an open model and the timestep loop (session.c), reading and
 * checking weights.bin (weights.c) and the build's constants (model_check.c), the exit rule (exit_rule.c), the
 * loading thread (stream.c). The executable's part: argument parsing (args.c), the input and labels (npy.c,
 * input.c), standard input and output (pipe.c), the results (loader.c, report.c). */
#ifndef MASIC_MODEL_H
#define MASIC_MODEL_H
#include <stddef.h>
#include <stdint.h>

#define MASIC_MAX_NDIM 8

/* A byte range copied from weights.bin into the arena, checked against its CRC-32C (crc32c.h) as it is read. */
typedef struct {
  uint64_t file_offset;
  uint64_t arena_offset;
  uint64_t nbytes;
  uint32_t crc32c; /* of the nbytes bytes at file_offset */
} masic_segment_t;

enum masic_exit_rule {
  MASIC_EXIT_NONE = 0,               /* always run all timesteps */
  MASIC_EXIT_SOFTMAX_CONFIDENCE = 1, /* score: the largest element of softmax(acc) */
  MASIC_EXIT_MARGIN = 2,             /* score: the largest element of acc minus the second largest */
  MASIC_EXIT_STABLE_ARGMAX = 3,      /* score: how many consecutive steps, ending now, share the argmax of acc */
};

/* An early-exit rule. acc is the sum, in double, of the outputs of the steps run so far. After step t (1-based),
 * if t >= min_timesteps, the loop stops once the rule's score of acc is >= threshold. masic/early_exit.py mirrors
 * this arithmetic operation for operation, so calibration predicts the loader's decisions exactly. */
typedef struct {
  int32_t rule;          /* enum masic_exit_rule */
  int32_t min_timesteps; /* >= 0 */
  double threshold;      /* SOFTMAX_CONFIDENCE: in (0, 1]; MARGIN: finite, > 0; STABLE_ARGMAX: an integer >= 1 */
} masic_exit_rule_t;

/* The exit rule `masic calibrate` writes into a built executable, so that the executable alone applies it without
 * recompiling. The loader defines one masic_exit_override_t, alone in the ELF section MASIC_EXIT_SECTION, with
 * `set` = 0; masic finds the section by name, checks magic, version and size, and rewrites the block. When `set` is
 * 1, `rule` replaces the compiled-in masic_model.exit_rule. Command-line flags override both. */
#define MASIC_EXIT_SECTION ".masic_exit"
#define MASIC_EXIT_MAGIC "masic-exit-rule" /* 15 characters and the NUL fill magic[16] */
#define MASIC_EXIT_VERSION 1u

typedef struct {
  char magic[16];
  uint32_t version;
  uint32_t set;
  masic_exit_rule_t rule;
} masic_exit_override_t;

/* What a load puts into its slot. */
enum masic_load_kind {
  MASIC_LOAD_WEIGHT = 0,     /* a streamed weight slice, read from weights.bin */
  MASIC_LOAD_STATE = 1,      /* a neuron state's initial value, read from weights.bin */
  MASIC_LOAD_STATE_FILL = 2, /* a uniform initial state: fill_bits written to every float32, nothing read */
};

/* A streamed weight slice, or a neuron state's initial value: read from weights.bin into its arena slot once per
 * block, by the loading thread. The slot is free (its previous occupant dead) once the compute has finished every
 * position before `start`, so the load may begin then and must be complete before the first kernel that reads it
 * (masic_wait_load). State is loaded this way only in plans whose one block covers the whole run, where each
 * neuron's state lives only while its layer runs: such a model cannot run more timesteps than one block. */
typedef struct {
  uint64_t file_offset;
  uint64_t arena_offset;
  uint64_t nbytes;
  uint32_t start;     /* position within the block from which the slot belongs to this load */
  uint32_t kind;      /* enum masic_load_kind */
  uint32_t fill_bits; /* MASIC_LOAD_STATE_FILL: the float32 (as its bits) written to every element */
  uint32_t crc32c;    /* of the bytes read (not MASIC_LOAD_STATE_FILL): checked by the loading thread */
} masic_load_t;

/* A kernel call of masic_model_block (one IR node, or a neuron fused into its layer's call), for --profile. */
typedef struct {
  const char *node;   /* the IR node it computes */
  const char *kernel; /* the kernel's symbol */
} masic_site_t;

typedef struct {
  const char *name;
  uint64_t arena_bytes;     /* size of the single arena (all model data: weights, state, activations, scratch) */
  uint64_t arena_alignment; /* the arena base is aligned to this many bytes */
  uint64_t weights_bytes;   /* exact size of weights.bin; each piece read from it carries its own CRC-32C */
  /* per-sample input (float32, no batch dimension); one slot per timestep of a block */
  int32_t input_ndim;
  int64_t input_shape[MASIC_MAX_NDIM];
  /* per-step output (float32, no batch dimension); one slot per timestep of a block */
  int32_t output_ndim;
  int64_t output_shape[MASIC_MAX_NDIM];
  int32_t timesteps;           /* default number of timesteps */
  masic_exit_rule_t exit_rule; /* default exit rule; see masic_exit_override_t */
  /* The timestep loop runs in blocks of `block` timesteps: the loader writes the inputs of the block's steps to
   * input_offsets[0..n), calls masic_model_block(arena, n), then reads output_offsets[0..n) (n <= block; the last
   * block of a run may be shorter). Early exit is decided at block boundaries, over the steps' outputs in order. */
  int32_t block;
  const uint64_t *input_offsets;  /* [block] */
  const uint64_t *output_offsets; /* [block] */
  /* weights resident for the whole run: copied once at start */
  uint32_t n_resident;
  const masic_segment_t *resident;
  /* initial neuron state: copied before each sample (unless the loads carry it, see masic_load_t) */
  uint32_t n_state_init;
  const masic_segment_t *state_init;
  /* streamed weights and transient states: the loads of one block, in the order they are issued (non-decreasing
   * `start`) */
  uint32_t n_loads;
  const masic_load_t *loads;
  uint32_t n_positions; /* positions (kernel calls) in one block; masic_reached takes 0..n_positions */
  uint32_t n_sites;     /* kernel calls in masic_model_block, in order */
  const masic_site_t *sites;
} masic_model_t;

extern const masic_model_t masic_model;

/* The loading thread of one open model (stream.c); NULL when the model has no loads. Every open model has its own,
 * so the generated code keeps no state of its own: two instances of a model run side by side in one process. */
typedef struct masic_stream masic_stream_t;

/* Runs `nsteps` (1..block) timesteps on `arena`: step t reads its input at input_offsets[t] and writes its output at
 * output_offsets[t]; neuron state is updated in place. Returns 0, or the non-zero status of the kernel or load that
 * failed. It calls masic_wait_load(stream, k) before the first kernel reading load k, and
 * masic_reached(stream, p) after position p-1. */
int masic_model_block(uint8_t *arena, int32_t nsteps, masic_stream_t *stream);

/* Provided by the loader for the generated code (no-ops when stream is NULL). masic_wait_load returns 0 once load k
 * is in its slot, or non-zero if it cannot be (the stream records why; see stream.h). */
int masic_wait_load(masic_stream_t *stream, uint32_t k);
void masic_reached(masic_stream_t *stream, uint32_t position);
/* Around each kernel call: the clock when profiling (else 0, at once), and the call's time recorded for `site`
 * (profile.c: process-wide, switched on only by out/model --profile). */
double masic_site_start(void);
void masic_site_done(uint32_t site, double start);

/* Thread pool used by parallel TVM kernels (runtime/parallel.c). num_threads <= 0 means one per online core.
 * Returns 0 on success. */
int masic_parallel_init(int num_threads);
int masic_parallel_num_threads(void);
void masic_parallel_shutdown(void);

#endif

/* masic_model.h: the contract between the code masic generates for one model (model.c) and the loader.
 *
 * The generated model.c defines `masic_model` (constants of the plan) and `masic_model_step` (one timestep, a
 * straight sequence of kernel calls at fixed arena offsets). The loader (loader.c) owns everything else: argument
 * parsing, the one arena, reading and checking weights.bin, the timestep loop, the exit rule, statistics. */
#ifndef MASIC_MODEL_H
#define MASIC_MODEL_H
#include <stddef.h>
#include <stdint.h>

#define MASIC_MAX_NDIM 8

/* A byte range copied from weights.bin into the arena. */
typedef struct {
  uint64_t file_offset;
  uint64_t arena_offset;
  uint64_t nbytes;
} masic_segment_t;

enum masic_exit_rule {
  MASIC_EXIT_NONE = 0,               /* always run all timesteps */
  MASIC_EXIT_SOFTMAX_CONFIDENCE = 1, /* stop once max(softmax(sum of outputs so far)) >= exit_confidence */
};

typedef struct {
  const char *name;
  uint64_t arena_bytes;     /* size of the single arena (all model data: weights, state, activations, scratch) */
  uint64_t arena_alignment; /* the arena base is aligned to this many bytes */
  uint64_t weights_bytes;   /* exact size of weights.bin */
  uint32_t weights_crc32;   /* zlib CRC-32 of the whole of weights.bin */
  /* per-sample input (float32, no batch dimension), read by the first kernel of each step */
  int32_t input_ndim;
  int64_t input_shape[MASIC_MAX_NDIM];
  uint64_t input_offset;
  /* per-step output (float32, no batch dimension), written by the last kernel of each step */
  int32_t output_ndim;
  int64_t output_shape[MASIC_MAX_NDIM];
  uint64_t output_offset;
  int32_t timesteps; /* default number of timesteps */
  int32_t exit_rule; /* enum masic_exit_rule */
  float exit_confidence;
  int32_t exit_min_timesteps;
  /* weights resident for the whole run: copied once at start */
  uint32_t n_resident;
  const masic_segment_t *resident;
  /* initial neuron state: copied at start (and again before each new sample) */
  uint32_t n_state_init;
  const masic_segment_t *state_init;
} masic_model_t;

extern const masic_model_t masic_model;

/* Runs one timestep on `arena`: reads the input at input_offset, updates neuron state in place, writes the output
 * at output_offset. Returns 0, or the non-zero status of the kernel that failed. */
int masic_model_step(uint8_t *arena);

/* Thread pool used by parallel TVM kernels (runtime/parallel.c). num_threads <= 0 means one per online core.
 * Returns 0 on success. */
int masic_parallel_init(int num_threads);
int masic_parallel_num_threads(void);
void masic_parallel_shutdown(void);

#endif

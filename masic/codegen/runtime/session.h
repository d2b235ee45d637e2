/* session.h: what out/model (loader.c) uses of an open model beyond the public API of masic_runtime.h. The library
 * and the executable share one implementation of the timestep loop, the exit rule and the loading thread. */
#ifndef MASIC_SESSION_H
#define MASIC_SESSION_H
#include <stdint.h>

#include "masic_model.h"
#include "masic_runtime.h"
#include "weights.h"

/* Where a sample's steps come from and go: input(ctx, t) is step t's input (masic_input_floats() floats, valid
 * until the next call); output(ctx, t, y), if set, receives each step run's output in order. */
typedef struct {
  const float *(*input)(void *ctx, int32_t step);
  void (*output)(void *ctx, int32_t step, const float *y);
  void *ctx;
} masic_sample_io_t;

/* masic_run over steps fetched by `io`. The steps of a block are fetched before it runs; after the exit rule holds,
 * the rest of the block's steps are computed in vain and not passed to io->output. */
masic_status_t masic_session_run_sample(masic_session_t *s, int32_t n_steps, const masic_sample_io_t *io,
                                        masic_stats_t *stats);

/* The status and message of the session's last failure, as loader.c reports them. */
const masic_error_t *masic_session_error(const masic_session_t *s);

/* The bytes the session read from weights.bin, and its sum of the current sample's outputs (masic_output_floats()
 * doubles). */
const masic_weight_io_t *masic_session_io(const masic_session_t *s);
const double *masic_session_sums(const masic_session_t *s);

#endif

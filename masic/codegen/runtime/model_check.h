/* model_check.h: the build's own constants (masic_model_t), checked before the loader trusts them. A compiler bug
 * or a damaged build must not turn into an out-of-bounds access: every segment, load and slot must lie inside
 * weights.bin and the arena, and the plan must be one the loader can run. */
#ifndef MASIC_MODEL_CHECK_H
#define MASIC_MODEL_CHECK_H
#include <stdbool.h>

#include "masic_model.h"
#include "util.h"

#define MASIC_MAX_BLOCK 65536 /* far above any useful block; bounds what a damaged build could make the loader do */

/* False with *err (exit code 1) if the model is inconsistent. */
bool masic_model_check(const masic_model_t *m, masic_error_t *err);

/* Elements of a shape, or UINT64_MAX if a dimension is negative or its size in float32 bytes would not fit in 64
 * bits (so callers may multiply the result by 4). */
uint64_t masic_shape_numel(int ndim, const int64_t *shape);

/* True if the loads carry neuron state: each layer's state then lives only within a block (see masic_load_t). */
bool masic_state_within_block(const masic_model_t *m);

#endif

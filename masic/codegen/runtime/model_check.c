/* model_check.c: see model_check.h. */
#include "model_check.h"

#include <stddef.h>

#include "exit_rule.h"

uint64_t masic_shape_numel(int ndim, const int64_t *shape) {
  uint64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return UINT64_MAX;
    if (shape[i] != 0 && n > UINT64_MAX / 4 / (uint64_t)shape[i]) return UINT64_MAX;
    n *= (uint64_t)shape[i];
  }
  return n;
}

bool masic_state_within_block(const masic_model_t *m) {
  for (uint32_t k = 0; k < m->n_loads; k++)
    if (m->loads[k].kind != MASIC_LOAD_WEIGHT) return true;
  return false;
}

static bool check_segments(const masic_model_t *m, const char *kind, const masic_segment_t *segs, uint32_t n,
                           masic_error_t *err) {
  if (n && !segs)
    return masic_fail(err, MASIC_EXIT_SYSTEM, "inconsistent build: %s segments are missing; recompile the model", kind);
  for (uint32_t i = 0; i < n; i++) {
    if (!masic_range_fits(segs[i].file_offset, segs[i].nbytes, m->weights_bytes) ||
        !masic_range_fits(segs[i].arena_offset, segs[i].nbytes, m->arena_bytes))
      return masic_fail(err, MASIC_EXIT_SYSTEM,
                        "inconsistent build: %s segment %u lies outside weights.bin or the arena; recompile the model",
                        kind, i);
  }
  return true;
}

/* True if each of the block's `block` slots (inputs or outputs) holds `numel` float32 values inside the arena. */
static bool slots_fit(const masic_model_t *m, const uint64_t *offsets, uint64_t numel) {
  if (!offsets) return false;
  for (int32_t t = 0; t < m->block; t++)
    if (!masic_range_fits(offsets[t], 4 * numel, m->arena_bytes)) return false;
  return true;
}

/* Loads must lie inside weights.bin and the arena, be of a known kind, and be issued in order of `start`: the
 * loading thread takes them one after the other, so a later load with an earlier start would wait behind the
 * previous one and could deadlock the compute waiting for it. */
static bool check_loads(const masic_model_t *m, masic_error_t *err) {
  for (uint32_t k = 0; k < m->n_loads; k++) {
    const masic_load_t *load = &m->loads[k];
    bool filled = load->kind == MASIC_LOAD_STATE_FILL;
    if (load->kind > MASIC_LOAD_STATE_FILL)
      return masic_fail(err, MASIC_EXIT_SYSTEM,
                        "inconsistent build: streamed load %u has unknown kind %u; recompile the model", k,
                        (unsigned)load->kind);
    if ((!filled && !masic_range_fits(load->file_offset, load->nbytes, m->weights_bytes)) ||
        !masic_range_fits(load->arena_offset, load->nbytes, m->arena_bytes) ||
        (filled && (load->nbytes % sizeof(float) || load->arena_offset % sizeof(float))))
      return masic_fail(err, MASIC_EXIT_SYSTEM,
                        "inconsistent build: streamed load %u lies outside weights.bin or the arena; recompile the "
                        "model",
                        k);
    if (load->start > m->n_positions || (k > 0 && load->start < m->loads[k - 1].start))
      return masic_fail(err, MASIC_EXIT_SYSTEM,
                        "inconsistent build: streamed load %u starts at position %u, out of order or past the %u "
                        "positions of a block; recompile the model",
                        k, load->start, m->n_positions);
  }
  return true;
}

bool masic_model_check(const masic_model_t *m, masic_error_t *err) {
  const char *problem = NULL;
  bool dims_ok = m->input_ndim >= 0 && m->input_ndim <= MASIC_MAX_NDIM && m->output_ndim >= 0 &&
                 m->output_ndim <= MASIC_MAX_NDIM;
  uint64_t in_numel = dims_ok ? masic_shape_numel(m->input_ndim, m->input_shape) : UINT64_MAX;
  uint64_t out_numel = dims_ok ? masic_shape_numel(m->output_ndim, m->output_shape) : UINT64_MAX;
  if (!dims_ok)
    problem = "input or output has an invalid number of dimensions";
  else if (m->block < 1 || m->block > MASIC_MAX_BLOCK)
    problem = "block size outside 1..65536";
  else if (in_numel == UINT64_MAX || !slots_fit(m, m->input_offsets, in_numel))
    problem = "an input lies outside the arena";
  else if (out_numel == 0 || out_numel == UINT64_MAX || !slots_fit(m, m->output_offsets, out_numel))
    problem = "an output is empty or lies outside the arena";
  else if (m->arena_alignment & (m->arena_alignment - 1))
    problem = "arena alignment is not a power of two";
  else if (m->arena_bytes > (uint64_t)PTRDIFF_MAX)
    problem = "the arena is larger than this machine can address";
  else if (m->timesteps < 1)
    problem = "default number of timesteps is below 1";
  else if (m->n_loads && !m->loads)
    problem = "streamed loads are missing";
  else if (m->timesteps > m->block && masic_state_within_block(m))
    problem = "neuron state lives within one block, but the default number of timesteps exceeds it";
  else
    problem = masic_exit_rule_problem(&m->exit_rule);
  if (problem) return masic_fail(err, MASIC_EXIT_SYSTEM, "inconsistent build: %s; recompile the model", problem);
  return check_segments(m, "resident", m->resident, m->n_resident, err) &&
         check_segments(m, "state", m->state_init, m->n_state_init, err) && check_loads(m, err);
}

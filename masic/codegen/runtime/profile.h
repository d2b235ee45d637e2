/* profile.h: `model --profile FILE.json`, where the time of a run goes. Per kernel call site of the generated
 * model.c (IR node, kernel, calls, total and median microseconds), per streamed load (bytes, microseconds, MB/s,
 * time the kernels waited for it), the start-up split (opening weights.bin, reading the resident weights, checking
 * them) and peak RSS; a short table on stderr. Without --profile every hook returns at once. */
#ifndef MASIC_PROFILE_H
#define MASIC_PROFILE_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "masic_model.h"
#include "util.h"

/* Where start-up time went, in seconds. */
typedef struct {
  double open_s;  /* opening weights.bin and checking its size */
  double read_s;  /* reading the resident weights into the arena */
  double check_s; /* their CRC-32C */
} masic_startup_t;

extern masic_startup_t masic_startup;

/* Turns profiling on for model m (before anything runs). */
void masic_profile_begin(const masic_model_t *m);
bool masic_profiling(void);

/* In the loading thread: load k took `seconds` to read and check. */
void masic_profile_load(uint32_t k, double seconds);
/* In the compute: the kernels waited `seconds` for load k. */
void masic_profile_wait(uint32_t k, double seconds);

/* Writes the profile of a run that took run_s seconds (all samples) to f (opened on path, closed here) and the
 * table to stderr; false with *err if the file cannot be written. */
bool masic_profile_write(FILE *f, const char *path, double run_s, int threads, masic_error_t *err);

#endif

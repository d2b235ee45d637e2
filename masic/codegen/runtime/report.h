/* report.h: what a run prints: the single-sample report, the batch report of a labelled run, each ending with one
 * JSON line of statistics. */
#ifndef MASIC_REPORT_H
#define MASIC_REPORT_H
#include <stddef.h>
#include <stdint.h>

#include "masic_model.h"
#include "weights.h"

/* The timestep loop's plan for every sample of a run. */
typedef struct {
  int max_steps;
  masic_exit_rule_t exit;
  const char *exit_source; /* where the rule came from: "compiled", "calibrated" or "command_line" */
} masic_schedule_t;

typedef struct {
  int steps_run;      /* steps whose outputs count: the exit rule stopped after the last of them */
  int steps_computed; /* steps the model ran, up to a block past steps_run */
  size_t prediction;  /* argmax of acc after the last step run */
} masic_sample_result_t;

/* What a labelled run adds up over its samples. The histogram is sized by the steps samples used, not by the
 * schedule's maximum: histogram[t - 1] counts the samples that used t steps, for t up to `most`. */
typedef struct {
  int64_t n_samples;
  int64_t correct;
  int64_t steps_computed;
  int64_t *histogram;
  int capacity; /* entries allocated */
  int most;     /* the most steps a sample used so far */
} masic_batch_totals_t;

/* Counts one sample that used `steps` (1..max) steps, growing the histogram as needed. */
void masic_totals_add(masic_batch_totals_t *t, int steps);

void masic_print_report(const masic_model_t *m, const masic_schedule_t *s, const masic_sample_result_t *r,
                        const double *acc, size_t out_numel, const masic_weight_io_t *io, double wall_s, double load_s,
                        int threads);
void masic_print_batch_report(const masic_model_t *m, const masic_schedule_t *s, const masic_batch_totals_t *totals,
                              const masic_weight_io_t *io, double wall_s, double load_s, int threads);

#endif

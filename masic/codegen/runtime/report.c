/* report.c: see report.h. */
#define _XOPEN_SOURCE 700

#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exit_rule.h"
#include "util.h"
#include "weights.h"

#define HISTOGRAM_ROWS 64 /* a histogram spanning more step counts shows only the counts that occurred */

void masic_totals_add(masic_batch_totals_t *t, int steps) {
  if (steps > t->capacity) {
    int capacity = t->capacity ? t->capacity : 16;
    while (capacity < steps) capacity = capacity > INT32_MAX / 2 ? steps : 2 * capacity;
    int64_t *grown = realloc(t->histogram, (size_t)capacity * sizeof *grown);
    if (!grown) masic_die(MASIC_EXIT_SYSTEM, "out of memory growing the timesteps histogram");
    memset(grown + t->capacity, 0, (size_t)(capacity - t->capacity) * sizeof *grown);
    t->histogram = grown;
    t->capacity = capacity;
  }
  t->histogram[steps - 1]++;
  if (steps > t->most) t->most = steps;
}

static void print_json_string(const char *s) {
  putchar('"');
  for (; s && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

/* The rule's JSON keys; exit_params uses the manifest's names, and %.17g gives back the exact double. */
static void print_exit_json(const masic_exit_rule_t *r, const char *source) {
  printf(", \"exit_rule\": \"%s\", \"exit_params\": {", masic_exit_rule_names[r->rule]);
  if (r->rule != MASIC_EXIT_NONE)
    printf("\"%s\": %.17g, \"min_timesteps\": %d", masic_exit_threshold_names[r->rule], r->threshold,
           r->min_timesteps);
  printf("}, \"exit_source\": \"%s\"", source);
}

/* start_bytes_read counts what was read from weights.bin at start, before the first sample: the resident weights,
 * each checked as it was read (no other pass reads the file); weight_bytes_read counts resident and streamed weights;
 * state_bytes_read counts the initial neuron state read from weights.bin, whether before each sample or by the
 * loading thread; load_wait_s is the time the compute waited for loads (weights or state). */
static void print_resources_json(const masic_model_t *m, const masic_weight_io_t *io, double load_s, int threads) {
  printf(", \"block\": %d, \"load_s\": %.6f, \"load_wait_s\": %.6f", m->block, load_s, io->load_wait_s);
  printf(", \"start_bytes_read\": %llu, \"weight_bytes_read\": %llu", (unsigned long long)io->resident,
         (unsigned long long)(io->resident + io->streamed));
  printf(", \"state_bytes_read\": %llu", (unsigned long long)io->state);
  printf(", \"arena_bytes\": %llu, \"weights_bytes\": %llu", (unsigned long long)m->arena_bytes,
         (unsigned long long)m->weights_bytes);
  printf(", \"peak_rss_bytes\": %lld, \"threads\": %d}\n", masic_peak_rss_bytes(), threads);
}

void masic_print_report(const masic_model_t *m, const masic_schedule_t *s, const masic_sample_result_t *r,
                        const double *acc, size_t out_numel, const masic_weight_io_t *io, double wall_s, double load_s,
                        int threads) {
  double confidence = masic_max_softmax(acc, out_numel, r->prediction);
  printf("prediction: %zu\n", r->prediction);
  printf("{\"model\": ");
  print_json_string(m->name);
  printf(", \"prediction\": %zu, \"timesteps\": %d, \"timesteps_computed\": %d, \"max_timesteps\": %d", r->prediction,
         r->steps_run, r->steps_computed, s->max_steps);
  printf(", \"exited_early\": %s", r->steps_run < s->max_steps ? "true" : "false");
  print_exit_json(&s->exit, s->exit_source);
  /* JSON has no NaN: a model producing NaN reports a null confidence. */
  if (isfinite(confidence))
    printf(", \"confidence\": %.6f", confidence);
  else
    printf(", \"confidence\": null");
  printf(", \"wall_s\": %.6f", wall_s);
  print_resources_json(m, io, load_s, threads);
}

static void describe_exit_rule(char *buf, size_t cap, const masic_exit_rule_t *r) {
  switch (r->rule) {
  case MASIC_EXIT_SOFTMAX_CONFIDENCE:
    snprintf(buf, cap, "softmax confidence >= %.6g from step %d", r->threshold, r->min_timesteps);
    break;
  case MASIC_EXIT_MARGIN: snprintf(buf, cap, "margin >= %.6g from step %d", r->threshold, r->min_timesteps); break;
  case MASIC_EXIT_STABLE_ARGMAX:
    snprintf(buf, cap, "same argmax for %.0f step%s from step %d", r->threshold, r->threshold == 1 ? "" : "s",
             r->min_timesteps);
    break;
  default: snprintf(buf, cap, "none"); break;
  }
}

static const char histogram_bar[] = "##################################################"; /* the longest bar */

/* Accuracy, timesteps used (mean and histogram, one row per step count from the fewest to the most used), time per
 * sample; then everything as one JSON line, with totals over the samples and their means per sample. */
void masic_print_batch_report(const masic_model_t *m, const masic_schedule_t *s, const masic_batch_totals_t *totals,
                              const masic_weight_io_t *io, double wall_s, double load_s, int threads) {
  int64_t n_samples = totals->n_samples, correct = totals->correct, total_steps = 0, peak = 0;
  const int64_t *histogram = totals->histogram;
  int fewest = totals->most, most = totals->most;
  for (int t = 1; t <= most; t++) {
    int64_t count = histogram[t - 1];
    total_steps += count * t;
    peak = count > peak ? count : peak;
    if (count && t < fewest) fewest = t;
  }
  double n = (double)n_samples, accuracy = (double)correct / n, mean_steps = (double)total_steps / n;
  char rule[160];
  describe_exit_rule(rule, sizeof rule, &s->exit);
  printf("accuracy: %.2f%% (%lld of %lld samples)\n", 100 * accuracy, (long long)correct, (long long)n_samples);
  double mean_computed = (double)totals->steps_computed / n;
  printf("timesteps: mean %.2f of %d (%.1f%% fewer); exit rule: %s (%s)", mean_steps, s->max_steps,
         100 * (1 - mean_steps / s->max_steps), rule, s->exit_source);
  if (m->block > 1) printf("; mean %.2f computed in blocks of %d", mean_computed, m->block);
  printf("\n");
  printf("timesteps used:\n");
  bool every_row = most - fewest < HISTOGRAM_ROWS;
  for (int t = fewest; t <= most; t++) {
    int64_t count = histogram[t - 1];
    if (!every_row && !count) continue;
    int bar = (int)((count * (int64_t)(sizeof histogram_bar - 1) + peak - 1) / peak);
    printf("  %6d %8lld  %.*s\n", t, (long long)count, bar, histogram_bar);
  }
  printf("time per sample: %.6f ms (%.6f s for %lld samples)\n", 1e3 * wall_s / n, wall_s, (long long)n_samples);
  printf("{\"model\": ");
  print_json_string(m->name);
  printf(", \"samples\": %lld, \"correct\": %lld, \"accuracy\": %.6f, \"mean_timesteps\": %.6f", (long long)n_samples,
         (long long)correct, accuracy, mean_steps);
  /* Up to the most steps a sample used: a long --timesteps that samples leave early costs nothing here. */
  printf(", \"max_timesteps\": %d, \"timesteps_histogram\": [", s->max_steps);
  for (int t = 1; t <= most; t++) printf(t > 1 ? ", %lld" : "%lld", (long long)histogram[t - 1]);
  printf("], \"timesteps_computed\": %lld, \"mean_timesteps_computed\": %.6f", (long long)totals->steps_computed,
         mean_computed);
  print_exit_json(&s->exit, s->exit_source);
  printf(", \"wall_s\": %.6f, \"wall_s_per_sample\": %.9f", wall_s, wall_s / n);
  /* Resident weights are read once per run, streamed ones once per block: only the latter scale with the samples. */
  printf(", \"load_wait_s_per_sample\": %.9f, \"streamed_bytes_per_sample\": %.1f", io->load_wait_s / n,
         (double)io->streamed / n);
  print_resources_json(m, io, load_s, threads);
}

/* exit_rule.c: see exit_rule.h. */
#include "exit_rule.h"

#include <limits.h>
#include <math.h>
#include <string.h>

const char *const masic_exit_rule_names[4] = {"none", "softmax_confidence", "margin", "stable_argmax"};
const char *const masic_exit_threshold_names[4] = {"", "confidence", "margin", "steps"};

const char *masic_exit_rule_problem(const masic_exit_rule_t *r) {
  double x = r->threshold;
  if (r->min_timesteps < 0) return "exit rule has a negative minimum number of timesteps";
  switch (r->rule) {
  case MASIC_EXIT_NONE: return NULL;
  case MASIC_EXIT_SOFTMAX_CONFIDENCE: return x > 0 && x <= 1 ? NULL : "exit confidence outside (0, 1]";
  case MASIC_EXIT_MARGIN: return x > 0 && isfinite(x) ? NULL : "exit margin is not a finite number above 0";
  case MASIC_EXIT_STABLE_ARGMAX:
    return x >= 1 && x <= INT_MAX && x == floor(x) ? NULL : "exit steps are not an integer from 1";
  default: return "unknown exit rule";
  }
}

/* Volatile, so that the compiler reads what is in the file at run time instead of folding the values it was built
 * with; `used`, so that the linker keeps it whether or not the loader reads it. */
const volatile masic_exit_override_t masic_exit_override
    __attribute__((section(MASIC_EXIT_SECTION), used, aligned(8))) = {
        .magic = MASIC_EXIT_MAGIC, .version = MASIC_EXIT_VERSION, .set = 0, .rule = {.rule = MASIC_EXIT_NONE}};

bool masic_exit_override_read(const volatile masic_exit_override_t *block, bool *set, masic_exit_rule_t *rule,
                              masic_error_t *err) {
  char magic[sizeof block->magic];
  for (size_t i = 0; i < sizeof magic; i++) magic[i] = block->magic[i];
  if (memcmp(magic, MASIC_EXIT_MAGIC, sizeof magic) || block->version != MASIC_EXIT_VERSION)
    return masic_fail(err, MASIC_EXIT_SYSTEM, "inconsistent build: the %s section is damaged; recompile the model",
                      MASIC_EXIT_SECTION);
  uint32_t flag = block->set;
  if (flag > 1)
    return masic_fail(err, MASIC_EXIT_SYSTEM, "inconsistent build: the %s section is damaged; recompile the model",
                      MASIC_EXIT_SECTION);
  *set = flag == 1;
  if (!*set) return true;
  *rule = (masic_exit_rule_t){
      .rule = block->rule.rule, .min_timesteps = block->rule.min_timesteps, .threshold = block->rule.threshold};
  const char *problem = masic_exit_rule_problem(rule);
  if (problem)
    return masic_fail(err, MASIC_EXIT_SYSTEM, "the calibrated exit rule is invalid: %s; run masic calibrate again",
                      problem);
  return true;
}

/* exp(x) for x <= 0 from +, -, *, floor and ldexp alone, so that x86_64, aarch64 and numpy (masic/early_exit.py)
 * compute bit-identical softmax confidences; libm's exp may differ between builds by an ulp, which could flip an
 * exit decision. x = k ln2 + r with |r| <= ln2/2, then a Taylor polynomial of degree 13 (error below 1e-17).
 * Each operation must be rounded on its own: GCC fuses no multiply-add in ISO C mode (-std=c11, as masic builds),
 * and clang none under this pragma, which GCC would reject. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
double masic_exp_nonpositive(double x) {
  static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static const double log2e = 1.44269504088896338700e+00;
  static const double taylor[14] = {1.0,          1.0,           1.0 / 2,        1.0 / 6,         1.0 / 24,
                                    1.0 / 120,    1.0 / 720,     1.0 / 5040,     1.0 / 40320,     1.0 / 362880,
                                    1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0};
  if (!(x >= -708.0)) return x != x ? x : 0.0; /* NaN stays NaN; exp(-708) is negligible next to the top term 1 */
  double k = floor(x * log2e + 0.5);
  double r = x - k * ln2_hi;
  r = r - k * ln2_lo;
  double p = taylor[13];
  for (int i = 12; i >= 0; i--) p = p * r + taylor[i];
  return ldexp(p, (int)k);
}

size_t masic_argmax(const double *v, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

/* max(softmax(v)) = 1 / sum(exp(v - v[best])), summed in index order: the top term is exp(0) = 1, and every
 * exponent is <= 0, so nothing overflows. */
double masic_max_softmax(const double *v, size_t n, size_t best) {
  double total = 0;
  for (size_t i = 0; i < n; i++) total += masic_exp_nonpositive(v[i] - v[best]);
  return 1.0 / total;
}

/* v[best] minus the largest other element (+inf for a single output). */
static double top_margin(const double *v, size_t n, size_t best) {
  double second = -INFINITY;
  for (size_t i = 0; i < n; i++)
    if (i != best && v[i] > second) second = v[i];
  return v[best] - second;
}

double masic_exit_score(int rule, const double *acc, size_t n, size_t best, int run) {
  switch (rule) {
  case MASIC_EXIT_SOFTMAX_CONFIDENCE: return masic_max_softmax(acc, n, best);
  case MASIC_EXIT_MARGIN: return top_margin(acc, n, best);
  case MASIC_EXIT_STABLE_ARGMAX: return run;
  default: return -INFINITY;
  }
}

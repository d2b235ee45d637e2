/* exit_rule.h: early-exit rules: which can be applied, the calibrated rule in the executable's own section, and the
 * scores the rules compare with their thresholds. */
#ifndef MASIC_EXIT_RULE_H
#define MASIC_EXIT_RULE_H
#include <stdbool.h>
#include <stddef.h>

#include "masic_model.h"
#include "util.h"

extern const char *const masic_exit_rule_names[4];      /* as in manifest.json: "none", "softmax_confidence", ... */
extern const char *const masic_exit_threshold_names[4]; /* each rule's threshold: "", "confidence", ... */

/* Why a rule cannot be applied, or NULL if it can. */
const char *masic_exit_rule_problem(const masic_exit_rule_t *r);

/* The block masic calibrate rewrites in this executable (section MASIC_EXIT_SECTION). */
extern const volatile masic_exit_override_t masic_exit_override;

/* Reads an exit-rule block: false with *err (exit code 1, a damaged build) if its magic or version is wrong or the
 * rule it holds cannot be applied; else true, with *set telling whether it holds a rule, and the rule in *rule. The
 * block is read field by field through a volatile pointer: its bytes are whatever the file holds. */
bool masic_exit_override_read(const volatile masic_exit_override_t *block, bool *set, masic_exit_rule_t *rule,
                              masic_error_t *err);

/* exp(x) for x <= 0, bit-identical on every target and in masic/early_exit.py. */
double masic_exp_nonpositive(double x);
/* The first index of the largest element (NaN never wins, unless at index 0). */
size_t masic_argmax(const double *v, size_t n);
/* max(softmax(v)), given best = argmax(v). */
double masic_max_softmax(const double *v, size_t n, size_t best);
/* The score a rule compares with its threshold; `run` counts the consecutive steps with argmax `best`. */
double masic_exit_score(int rule, const double *acc, size_t n, size_t best, int run);

#endif

/* fuzz_exit_section.c: the exit-rule block of the executable's .masic_exit section (runtime/exit_rule.c), as masic
 * calibrate or a damaged copy could leave it. A rule it accepts must be one the loader can apply; its scores on
 * arbitrary accumulated outputs (NaN and infinities included) must be free of undefined behaviour. */
#include "fuzz_common.h" /* first: it asks for _GNU_SOURCE */

#include <math.h>

#include "exit_rule.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_bytes_t b = {data, size};
  masic_exit_override_t block;
  memset(&block, 0, sizeof block);
  uint8_t mode = fuzz_u8(&b);
  size_t n = b.n < sizeof block ? b.n : sizeof block;
  memcpy(&block, b.p, n);
  b.p += n, b.n -= n;
  if (mode & 1) { /* most blocks pass the magic and version, so the rule itself gets fuzzed */
    memcpy(block.magic, MASIC_EXIT_MAGIC, sizeof block.magic);
    block.version = MASIC_EXIT_VERSION;
  }
  bool set;
  masic_exit_rule_t rule;
  masic_error_t err;
  if (!masic_exit_override_read(&block, &set, &rule, &err)) {
    fuzz_check_error(&err);
    return 0;
  }
  if (!set) return 0;
  if (masic_exit_rule_problem(&rule)) abort();
  double acc[16];
  size_t outputs = 1 + b.n / 8 % 16;
  for (size_t i = 0; i < outputs; i++) {
    uint64_t bits = fuzz_u64(&b);
    memcpy(&acc[i], &bits, sizeof bits);
  }
  size_t best = masic_argmax(acc, outputs);
  double score = masic_exit_score(rule.rule, acc, outputs, best, (int)(mode >> 1));
  double confidence = masic_max_softmax(acc, outputs, best);
  if (!isnan(confidence) && (confidence < 0 || confidence > 1 + 1e-12)) abort();
  (void)score;
  return 0;
}

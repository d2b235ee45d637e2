/* fuzz_labels.c: a labels .npy file (runtime/input.c) for a number of samples and classes the first bytes choose.
 * Accepted labels must all be classes of the model. */
#include "fuzz_common.h"
#include "input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_bytes_t b = {data, size};
  int64_t n_samples = fuzz_u16(&b);
  uint64_t n_classes = 1 + fuzz_u8(&b);
  int fd = fuzz_file(b.p, b.n);
  int64_t *labels = NULL;
  masic_error_t err;
  if (!masic_labels_read(fd, b.n, "y.npy", n_samples, n_classes, &labels, &err)) {
    fuzz_check_error(&err);
    if (labels) abort();
  } else {
    for (int64_t i = 0; i < n_samples; i++)
      if (labels[i] < 0 || (uint64_t)labels[i] >= n_classes) abort();
    free(labels);
  }
  close(fd);
  return 0;
}

/* fuzz_input.c: an input .npy file (runtime/input.c) for a model whose input shape the first bytes choose. Accepted
 * inputs must place every sample's every step inside the file. */
#include "fuzz_common.h"
#include "input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_bytes_t b = {data, size};
  uint8_t flags = fuzz_u8(&b);
  masic_model_t m = {.input_ndim = flags % 4};
  bool labelled = flags & 0x80;
  for (int i = 0; i < m.input_ndim; i++) m.input_shape[i] = 1 + fuzz_u8(&b) % 8;
  int fd = fuzz_file(b.p, b.n);
  masic_input_t in;
  masic_error_t err;
  if (!masic_input_read(&m, fd, b.n, "x.npy", labelled, &in, &err)) {
    fuzz_check_error(&err);
  } else {
    if (in.n_samples < 1 || in.sequence_length < 0 || (!labelled && in.n_samples != 1)) abort();
    /* the last step of the last sample (a sequence longer than a run's limit is refused later, by loader.c) */
    int steps = in.sequence_length ? (int)(in.sequence_length < INT32_MAX ? in.sequence_length : INT32_MAX) : 1;
    uint64_t last = masic_input_offset(&in, in.n_samples - 1, steps - 1);
    if (last < in.data_offset || last > b.n || in.sample_bytes > b.n - last) abort();
    uint8_t sample[4 * 8 * 8 * 8];
    if (in.sample_bytes > sizeof sample ||
        masic_pread_full(fd, sample, in.sample_bytes, last) != (int64_t)in.sample_bytes)
      abort();
  }
  close(fd);
  return 0;
}

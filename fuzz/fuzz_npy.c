/* fuzz_npy.c: the .npy preamble and header parser (runtime/npy.c) on arbitrary bytes, as the start of a file.
 * Accepted headers must describe an array (at most 64 dimensions, none negative, 'descr' a terminated string);
 * refusals must give one line. */
#include "fuzz_common.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char why[MASIC_NPY_WHY_CAP];
  masic_npy_preamble_t pre;
  size_t head = size < MASIC_NPY_PREAMBLE_BYTES ? size : MASIC_NPY_PREAMBLE_BYTES;
  if (!masic_npy_preamble(data, head, size, &pre, why, sizeof why)) {
    fuzz_check_reason(why, sizeof why);
    return 0;
  }
  if (pre.header_offset + pre.header_bytes > size) abort(); /* the preamble promised a header inside the file */
  masic_npy_header_t h;
  if (!masic_npy_parse_header(data + pre.header_offset, (size_t)pre.header_bytes, pre.major, &h, why, sizeof why)) {
    fuzz_check_reason(why, sizeof why);
    return 0;
  }
  if (h.ndim < 0 || h.ndim > MASIC_NPY_MAX_NDIM) abort();
  for (int i = 0; i < h.ndim; i++)
    if (h.shape[i] < 0) abort();
  if (strnlen(h.descr, sizeof h.descr) == sizeof h.descr) abort();
  uint64_t nbytes;
  for (uint64_t itemsize = 1; itemsize <= 8; itemsize *= 2)
    if (masic_npy_data_bytes(&h, itemsize, &nbytes) && nbytes > (uint64_t)INT64_MAX) abort();
  (void)masic_npy_descr_is(&h, "<f4");
  return 0;
}

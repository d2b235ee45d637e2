/* npy_check.c: runtime/npy.c alone, as the loader uses it to read a float32 array of any shape, for the differential
 * test against numpy (test_npy_grammar.py).
 *
 * stdin: records, each a 4-byte little-endian length and that many bytes of a .npy file. stdout: one line per
 * record, "accept <fortran_order 0|1> <ndim> <dims...> <python2 0|1>" when the file holds a float32 array ('descr'
 * exactly '<f4') with at least the data its shape needs, as numpy.load reads it (numpy ignores bytes after the
 * data), else "refuse <reason>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

static void verdict(const uint8_t *file, size_t size) {
  char why[MASIC_NPY_WHY_CAP];
  masic_npy_preamble_t pre;
  masic_npy_header_t h;
  size_t head = size < MASIC_NPY_PREAMBLE_BYTES ? size : MASIC_NPY_PREAMBLE_BYTES;
  if (!masic_npy_preamble(file, head, size, &pre, why, sizeof why) ||
      !masic_npy_parse_header(file + pre.header_offset, (size_t)pre.header_bytes, pre.major, &h, why, sizeof why)) {
    printf("refuse %s\n", why);
    return;
  }
  uint64_t need;
  if (!masic_npy_descr_is(&h, "<f4")) {
    printf("refuse dtype\n");
    return;
  }
  if (!masic_npy_data_bytes(&h, 4, &need)) {
    printf("refuse too big\n");
    return;
  }
  if (need > size - pre.header_offset - pre.header_bytes) {
    printf("refuse short data\n");
    return;
  }
  printf("accept %d %d", h.fortran_order, h.ndim);
  for (int i = 0; i < h.ndim; i++) printf(" %lld", (long long)h.shape[i]);
  printf(" %d\n", h.python2);
}

int main(void) {
  uint8_t len_bytes[4];
  while (fread(len_bytes, 1, 4, stdin) == 4) {
    size_t len = len_bytes[0] | (size_t)len_bytes[1] << 8 | (size_t)len_bytes[2] << 16 | (size_t)len_bytes[3] << 24;
    uint8_t *file = malloc(len ? len : 1);
    if (!file || fread(file, 1, len, stdin) != len) return 1;
    verdict(file, len);
    free(file);
  }
  return 0;
}

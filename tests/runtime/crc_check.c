/* crc_check.c: runtime/crc32c.c alone. Reads stdin whole and prints, for each start offset 0..7 (so that the
 * CPU's 8-byte steps meet every alignment), the CRC-32C of the bytes from there as masic_crc32c computes it and as
 * the portable table does, then the CRC of the whole continued across a split at a third of it (as the loader checks a
 * piece it reads in chunks); the first line says which one masic_crc32c uses. */
#include <stdio.h>
#include <stdlib.h>

#include "crc32c.h"

int main(void) {
  size_t cap = 1 << 16, n = 0;
  unsigned char *data = malloc(cap);
  for (size_t got; data && (got = fread(data + n, 1, cap - n, stdin)) > 0;) {
    n += got;
    if (n == cap) data = realloc(data, cap *= 2);
  }
  if (!data) return 1;
  printf("%s\n", masic_crc32c_hardware() ? "hardware" : "portable");
  for (size_t offset = 0; offset < 8 && offset <= n; offset++)
    printf("%08x %08x\n", (unsigned)masic_crc32c(0, data + offset, n - offset),
           (unsigned)masic_crc32c_portable(0, data + offset, n - offset));
  printf("%08x\n", (unsigned)masic_crc32c(masic_crc32c(0, data, n / 3), data + n / 3, n - n / 3));
  free(data);
  return 0;
}

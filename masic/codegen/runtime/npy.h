/* npy.h: the .npy file format (numpy/lib/format.py), read exactly as numpy.load reads it, and written as numpy.save
 * writes it.
 *
 * Reading is split in two pure functions over bytes, so that a fuzzer can drive them without files:
 * masic_npy_preamble (magic, version, header length) and masic_npy_parse_header (the header's text, a Python dict
 * literal). Neither allocates more than a bounded buffer, reads past the bytes it is given, or exits; a refusal
 * comes back as false and one line in `why`. What the loader then requires of the array (its dtype, shape, order,
 * data size) is its own business (input.c). */
#ifndef MASIC_NPY_H
#define MASIC_NPY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASIC_NPY_MAX_NDIM 64                /* numpy's NPY_MAXDIMS (numpy 2) */
#define MASIC_NPY_MAX_HEADER_CHARS 10000     /* numpy.load's default max_header_size, in characters */
#define MASIC_NPY_MAX_HEADER_BYTES (4 * MASIC_NPY_MAX_HEADER_CHARS) /* a UTF-8 character has at most 4 bytes */
#define MASIC_NPY_PREAMBLE_BYTES 12          /* magic (6), version (2), header length (2 or 4) */
#define MASIC_NPY_DESCR_CAP 32               /* bytes kept of 'descr' (as UTF-8, NUL included) */
#define MASIC_NPY_WHY_CAP 160                /* a refusal's reason, one line */

typedef struct {
  unsigned major, minor;  /* 1.0, 2.0 or 3.0 */
  uint64_t header_offset; /* where the header's text starts: 10 or 12 */
  uint64_t header_bytes;  /* its length; the data follows it */
} masic_npy_preamble_t;

typedef struct {
  /* 'descr': the dtype. Only a string is ever used by the loader; any other literal (a structured dtype's list)
   * sets descr_is_str false. descr holds the string as UTF-8 for comparisons and messages; descr_exact is false
   * when it was longer than MASIC_NPY_DESCR_CAP - 1 bytes (then it equals no dtype the loader reads). */
  bool descr_is_str;
  bool descr_exact;
  char descr[MASIC_NPY_DESCR_CAP];
  bool fortran_order;
  int ndim;
  int64_t shape[MASIC_NPY_MAX_NDIM]; /* each >= 0 */
  bool python2;                      /* accepted only through numpy's Python 2 retry (an 'L' after a number) */
} masic_npy_header_t;

/* Reads the first `n` bytes of a file of `file_size` bytes (n = min(file_size, MASIC_NPY_PREAMBLE_BYTES) is
 * enough): the magic, a version numpy reads (1.0, 2.0, 3.0) and a header length that fits in the file and within
 * numpy's limit. */
bool masic_npy_preamble(const uint8_t *bytes, size_t n, uint64_t file_size, masic_npy_preamble_t *p, char *why,
                        size_t why_cap);

/* Parses the header's text (header_bytes bytes, Latin-1 for major version 1 and 2, UTF-8 for 3) as numpy.load does:
 * true if numpy accepts it, with *h filled in. */
bool masic_npy_parse_header(const uint8_t *text, size_t n, unsigned major, masic_npy_header_t *h, char *why,
                            size_t why_cap);

/* The bytes of the array's data at `itemsize` bytes per element. False if numpy would refuse the shape as too big
 * (itemsize times the product of the non-zero dimensions above INT64_MAX); *nbytes is then unset. */
bool masic_npy_data_bytes(const masic_npy_header_t *h, uint64_t itemsize, uint64_t *nbytes);

/* True if 'descr' is exactly the string `descr`. */
bool masic_npy_descr_is(const masic_npy_header_t *h, const char *descr);

/* Writes a version 1.0 preamble and header for a C-order array into buf (MASIC_NPY_HEADER_WRITE_CAP bytes) as
 * numpy.save lays it out: the dict padded with spaces and ended by '\n' so that the data starts 64-aligned.
 * Returns the bytes written. ndim <= MASIC_NPY_WRITE_MAX_NDIM, descr at most 15 characters. */
#define MASIC_NPY_WRITE_MAX_NDIM 16
#define MASIC_NPY_HEADER_WRITE_CAP 512
size_t masic_npy_format_header(uint8_t *buf, const char *descr, int ndim, const int64_t *shape);

#endif

/* input.c: see input.h. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include "input.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_check.h"
#include "npy.h"

/* Reads and parses the preamble and header; *data_offset is where the array's data starts. `what` names the file
 * in errors: "input" or "labels". */
static bool read_header(int fd, uint64_t size, const char *what, const char *path, masic_npy_header_t *h,
                        uint64_t *data_offset, masic_error_t *err) {
  uint8_t prefix[MASIC_NPY_PREAMBLE_BYTES];
  char why[MASIC_NPY_WHY_CAP];
  int64_t got = masic_pread_full(fd, prefix, sizeof prefix, 0);
  if (got < 0) return masic_fail(err, MASIC_EXIT_SYSTEM, "cannot read %s %s: %s", what, path, strerror(errno));
  masic_npy_preamble_t pre;
  if (!masic_npy_preamble(prefix, (size_t)got, size, &pre, why, sizeof why)) {
    if (!strcmp(why, "not a .npy file"))
      return masic_fail(err, MASIC_EXIT_USER, "%s %s is not a .npy file; save the array with numpy.save", what, path);
    return masic_fail(err, MASIC_EXIT_USER, "%s %s: %s; save the array with numpy.save", what, path, why);
  }
  /* The header is at most MASIC_NPY_MAX_HEADER_BYTES, checked by masic_npy_preamble. */
  uint8_t *text = malloc(pre.header_bytes ? (size_t)pre.header_bytes : 1);
  if (!text) return masic_fail(err, MASIC_EXIT_SYSTEM, "out of memory reading %s %s", what, path);
  got = masic_pread_full(fd, text, (size_t)pre.header_bytes, pre.header_offset);
  bool ok = got == (int64_t)pre.header_bytes &&
            masic_npy_parse_header(text, (size_t)pre.header_bytes, pre.major, h, why, sizeof why);
  free(text);
  if (got != (int64_t)pre.header_bytes)
    return masic_fail(err, MASIC_EXIT_USER, "%s %s shrank while being read", what, path);
  if (!ok)
    return masic_fail(err, MASIC_EXIT_USER, "%s %s has an unreadable .npy header (%s); save the array with numpy.save",
                      what, path, why);
  *data_offset = pre.header_offset + pre.header_bytes;
  return true;
}

/* Checks that the data after the header is exactly what the shape needs at `itemsize` bytes per element: numpy
 * would ignore extra bytes, but a file longer than its header says is damaged or not what it claims. */
static bool check_data_size(const char *what, const char *path, const masic_npy_header_t *h, uint64_t data_bytes,
                            uint64_t itemsize, masic_error_t *err) {
  uint64_t need;
  char shape[1024];
  if (!masic_npy_data_bytes(h, itemsize, &need))
    return masic_fail(err, MASIC_EXIT_USER, "%s %s has shape %s, whose data exceeds 2^63 - 1 bytes; the file is "
                      "damaged", what, path, masic_format_shape(shape, sizeof shape, NULL, h->ndim, h->shape));
  if (data_bytes != need)
    return masic_fail(err, MASIC_EXIT_USER,
                      "%s %s holds %llu bytes of data but its shape needs %llu; the file is truncated or damaged", what,
                      path, (unsigned long long)data_bytes, (unsigned long long)need);
  return true;
}

/* True if `h`'s shape ends with the model's input shape after `lead` leading dimensions, each at least 1. */
static bool has_input_shape(const masic_model_t *m, const masic_npy_header_t *h, int lead) {
  if (h->ndim != m->input_ndim + lead) return false;
  for (int i = 0; i < lead; i++)
    if (h->shape[i] < 1) return false;
  return !memcmp(h->shape + lead, m->input_shape, (size_t)m->input_ndim * sizeof *h->shape);
}

/* Sets in->n_samples and in->sequence_length from the shape. One sample is shaped like the model's input or is a
 * sequence (S, *input_shape); with labels the file holds N of either, (N, *input_shape) or (N, S, *input_shape). */
static bool match_input_shape(const masic_model_t *m, masic_input_t *in, const masic_npy_header_t *h, bool labelled,
                              masic_error_t *err) {
  int lead = labelled ? 1 : 0;
  for (int sequence = 0; sequence <= 1; sequence++) {
    if (has_input_shape(m, h, lead + sequence)) {
      in->n_samples = labelled ? h->shape[0] : 1;
      in->sequence_length = sequence ? h->shape[lead] : 0;
      return true;
    }
  }
  char found[1024], one[256], seq[256];
  masic_format_shape(found, sizeof found, NULL, h->ndim, h->shape);
  if (labelled)
    return masic_fail(err, MASIC_EXIT_USER,
                      "input %s has shape %s; with --labels expected %s (N >= 1 samples) or %s (N sequences of S >= 1)",
                      in->path, found, masic_format_shape(one, sizeof one, "N", m->input_ndim, m->input_shape),
                      masic_format_shape(seq, sizeof seq, "N, S", m->input_ndim, m->input_shape));
  return masic_fail(err, MASIC_EXIT_USER,
                    "input %s has shape %s; expected %s (one sample) or %s (a sequence of S >= 1 samples)", in->path,
                    found, masic_format_shape(one, sizeof one, NULL, m->input_ndim, m->input_shape),
                    masic_format_shape(seq, sizeof seq, "S", m->input_ndim, m->input_shape));
}

static void printable_descr(char *out, size_t cap, const masic_npy_header_t *h) {
  if (!h->descr_is_str) {
    snprintf(out, cap, "%s", "a structured dtype");
    return;
  }
  /* Only printable ASCII reaches a message: the string came from the file. */
  size_t k = 0;
  out[k++] = '\'';
  for (const char *p = h->descr; *p && k + 5 < cap; p++) out[k++] = *p >= ' ' && *p <= '~' ? *p : '?';
  if (!h->descr_exact && k + 5 < cap) out[k++] = '.', out[k++] = '.', out[k++] = '.';
  out[k++] = '\'';
  out[k] = '\0';
}

bool masic_input_read(const masic_model_t *m, int fd, uint64_t size, const char *path, bool labelled,
                      masic_input_t *in, masic_error_t *err) {
  *in = (masic_input_t){.path = path, .fd = fd};
  masic_npy_header_t h;
  if (!read_header(fd, size, "input", path, &h, &in->data_offset, err)) return false;
  if (!masic_npy_descr_is(&h, "<f4")) {
    char descr[48];
    printable_descr(descr, sizeof descr, &h);
    return masic_fail(err, MASIC_EXIT_USER,
                      "input %s has dtype %s; expected '<f4' (little-endian float32): save x.astype(numpy.float32)",
                      path, descr);
  }
  if (h.fortran_order)
    return masic_fail(err, MASIC_EXIT_USER,
                      "input %s is stored in Fortran order; save numpy.ascontiguousarray(x) instead", path);
  if (!match_input_shape(m, in, &h, labelled, err)) return false;
  in->sample_bytes = 4 * masic_shape_numel(m->input_ndim, m->input_shape);
  return check_data_size("input", path, &h, size - in->data_offset, 4, err);
}

bool masic_input_open(const masic_model_t *m, const char *path, bool labelled, masic_input_t *in, masic_error_t *err) {
  int fd;
  uint64_t size;
  masic_file_id_t id;
  if (!masic_open_regular(path, "input", "pass an existing .npy file to --input", &fd, &size, &id, err)) return false;
  if (!masic_input_read(m, fd, size, path, labelled, in, err)) {
    close(fd);
    return false;
  }
  in->id = id;
  return true;
}

uint64_t masic_input_offset(const masic_input_t *in, int64_t sample, int step) {
  /* Every product is bounded by the file's size, which check_data_size compared with the shape. */
  uint64_t steps_stored = in->sequence_length ? (uint64_t)in->sequence_length : 1;
  uint64_t index = (uint64_t)sample * steps_stored + (in->sequence_length ? (uint64_t)step : 0);
  return in->data_offset + index * in->sample_bytes;
}

bool masic_labels_read(int fd, uint64_t size, const char *path, int64_t n_samples, uint64_t n_classes,
                       int64_t **labels, masic_error_t *err) {
  masic_npy_header_t h;
  uint64_t data_offset;
  if (!read_header(fd, size, "labels", path, &h, &data_offset, err)) return false;
  uint64_t itemsize = masic_npy_descr_is(&h, "<i4") ? 4 : masic_npy_descr_is(&h, "<i8") ? 8 : 0;
  if (!itemsize) {
    char descr[48];
    printable_descr(descr, sizeof descr, &h);
    return masic_fail(err, MASIC_EXIT_USER,
                      "labels %s have dtype %s; expected '<i4' or '<i8': save y.astype(numpy.int64)", path, descr);
  }
  if (h.ndim != 1 || h.shape[0] != n_samples) {
    char found[1024];
    return masic_fail(err, MASIC_EXIT_USER,
                      "labels %s have shape %s; expected (%lld,), one label per sample of the input", path,
                      masic_format_shape(found, sizeof found, NULL, h.ndim, h.shape), (long long)n_samples);
  }
  if (!check_data_size("labels", path, &h, size - data_offset, itemsize, err)) return false;
  /* The data size equals itemsize * n_samples and is the file's own size: the allocations are bounded by it. */
  size_t nbytes = (size_t)(itemsize * (uint64_t)n_samples);
  uint8_t *raw = malloc(nbytes ? nbytes : 1);
  int64_t *values = malloc((size_t)n_samples * sizeof *values + 1);
  if (!raw || !values) {
    free(raw);
    free(values);
    return masic_fail(err, MASIC_EXIT_SYSTEM, "out of memory reading labels %s", path);
  }
  int64_t got = masic_pread_full(fd, raw, nbytes, data_offset);
  if (got != (int64_t)nbytes) {
    free(raw);
    free(values);
    return masic_fail(err, MASIC_EXIT_USER, "labels %s shrank while being read", path);
  }
  for (int64_t i = 0; i < n_samples; i++) {
    int32_t narrow;
    if (itemsize == 4) {
      memcpy(&narrow, raw + 4 * i, 4);
      values[i] = narrow;
    } else {
      memcpy(&values[i], raw + 8 * i, 8);
    }
    if (values[i] < 0 || (uint64_t)values[i] >= n_classes) {
      int64_t bad = values[i];
      free(raw);
      free(values);
      return masic_fail(err, MASIC_EXIT_USER,
                        "labels %s: sample %lld has label %lld, outside [0, %llu) for a model with %llu outputs", path,
                        (long long)i, (long long)bad, (unsigned long long)n_classes, (unsigned long long)n_classes);
    }
  }
  free(raw);
  *labels = values;
  return true;
}

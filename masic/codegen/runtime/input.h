/* input.h: the run's .npy files: the input (one sample, a sequence, or with labels N of either) and the labels.
 * The header is numpy's (npy.c); on top of it the loader requires what it can read byte for byte: 'descr' '<f4'
 * for inputs and '<i4' or '<i8' for labels (as numpy.save writes them), C order, a shape the model takes, and
 * exactly the data that shape needs. */
#ifndef MASIC_INPUT_H
#define MASIC_INPUT_H
#include <stdbool.h>
#include <stdint.h>

#include "files.h"
#include "masic_model.h"
#include "util.h"

/* The input file stays open and each step's sample is read straight into the arena: the arena planner may reuse an
 * input slot once the kernels reading it have run, so the samples are copied in again for every block. */
typedef struct {
  const char *path;
  int fd;
  masic_file_id_t id;
  uint64_t data_offset;
  uint64_t sample_bytes;   /* bytes of one step's input */
  int64_t n_samples;       /* samples (or sequences) in the file; 1 without labels */
  int64_t sequence_length; /* steps stored per sample; 0: one input presented at every step */
} masic_input_t;

/* Opens and checks the input file for model m. */
bool masic_input_open(const masic_model_t *m, const char *path, bool labelled, masic_input_t *in, masic_error_t *err);

/* The same on a file already open on fd, of `size` bytes (fuzzers pass an in-memory file). */
bool masic_input_read(const masic_model_t *m, int fd, uint64_t size, const char *path, bool labelled,
                      masic_input_t *in, masic_error_t *err);

/* Offset in the input file of the input of `step` (0-based) of `sample`. */
uint64_t masic_input_offset(const masic_input_t *in, int64_t sample, int step);

/* Reads the labels file open on fd (of `size` bytes): int32 or int64, shape (n_samples,), each in [0, n_classes).
 * On success *labels is a malloc'd array of n_samples values. */
bool masic_labels_read(int fd, uint64_t size, const char *path, int64_t n_samples, uint64_t n_classes,
                       int64_t **labels, masic_error_t *err);

#endif

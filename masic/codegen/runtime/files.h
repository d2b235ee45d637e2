/* files.h: opening the files a run names on its command line. An input (the .npy input, the labels, weights.bin)
 * is opened without blocking and refused unless it is a regular file: a FIFO or a device would block in open()
 * or feed endless bytes. An output (--output, --predictions) is refused when it is the same file as an input or as
 * the other output, through any symlink or hard link, before anything is truncated. */
#ifndef MASIC_FILES_H
#define MASIC_FILES_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "util.h"

/* A file's identity: two paths name the same file exactly when these are equal. */
typedef struct {
  bool known;
  dev_t dev;
  ino_t ino;
} masic_file_id_t;

/* A file the run reads or writes, for the same-file check. */
typedef struct {
  const char *what; /* "--input", "--labels", "the weights file", ... */
  const char *path;
  masic_file_id_t id;
} masic_named_file_t;

/* Opens `path` read-only as a regular file; `what` names it in errors ("input", "labels", "weights file") and
 * `remedy` ends the message. */
bool masic_open_regular(const char *path, const char *what, const char *remedy, int *fd, uint64_t *size,
                        masic_file_id_t *id, masic_error_t *err);

/* Opens `path` for writing as --option: created if missing, refused if it is one of the n files in `others`, else
 * truncated. A regular file's identity is returned in *id, for the next output's check. */
bool masic_open_output(const char *option, const char *path, const masic_named_file_t *others, size_t n, FILE **out,
                       masic_file_id_t *id, masic_error_t *err);

#endif

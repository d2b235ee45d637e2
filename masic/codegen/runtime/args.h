/* args.h: the executable's command line. */
#ifndef MASIC_ARGS_H
#define MASIC_ARGS_H
#include <stdbool.h>
#include <stdint.h>

#include "masic_model.h"
#include "util.h"

/* The largest number of timesteps a run may take (--timesteps, or an input sequence's length). Memory and the report
 * grow with the steps run, never with this bound; it refuses requests no device would finish. */
#define MASIC_MAX_TIMESTEPS 1000000
#define MASIC_MAX_THREADS_OPTION 4096

/* --stream: frames of one timestep on stdin, a line per step on stdout; --stream-samples: a frame and a line per
 * sample. */
typedef enum { MASIC_STREAM_NONE, MASIC_STREAM_STEPS, MASIC_STREAM_SAMPLES } masic_stream_mode_t;

typedef struct {
  const char *input_path; /* NULL with --stream */
  const char *labels_path; /* NULL: one sample */
  const char *output_path;
  const char *predictions_path;
  const char *weights_path; /* NULL: weights.bin beside the executable */
  int timesteps;            /* 0: not given */
  int threads;
  const char *exit_flag;       /* the exit-rule flag given, or NULL */
  masic_exit_rule_t exit_rule; /* the rule that flag chose (its min_timesteps is not used) */
  int min_timesteps;           /* -1: not given */
  bool check;                  /* --check: verify weights.bin and exit */
  const char *profile_path;    /* --profile: where to write the profile, or NULL */
  masic_stream_mode_t stream;
  const char *stream_flag; /* the stream flag given, or NULL */
} masic_options_t;

typedef enum { MASIC_ARGS_OK, MASIC_ARGS_HELP, MASIC_ARGS_ERROR } masic_args_status_t;

extern const char masic_usage_text[];

/* Parses argv[1..argc). Strings in *opt point into argv. On MASIC_ARGS_ERROR, *err holds the one-line reason. */
masic_args_status_t masic_parse_args(int argc, char **argv, masic_options_t *opt, masic_error_t *err);

/* A decimal integer in [min, max]: an optional '-', then digits only (no blanks, no '+', no other base), checked
 * for overflow at every digit. */
bool masic_parse_integer(const char *text, int64_t min, int64_t max, int64_t *value);

#endif

/* fuzz_args.c: the executable's command line (runtime/args.c): the bytes, split at NULs, are the arguments. Parsed
 * options must be within their documented ranges and name an exit rule the loader can apply; a run reads either
 * --input or, with --stream / --stream-samples, standard input and no files. */
#include "fuzz_common.h" /* first: it asks for _GNU_SOURCE */

#include <limits.h>

#include "args.h"
#include "exit_rule.h"

#define MAX_ARGS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  char *argv[MAX_ARGS + 2] = {"model"};
  int argc = 1;
  for (char *p = text; argc <= MAX_ARGS && p <= text + size; p += strlen(p) + 1) argv[argc++] = p;
  argv[argc] = NULL;
  masic_options_t opt;
  masic_error_t err;
  switch (masic_parse_args(argc, argv, &opt, &err)) {
  case MASIC_ARGS_ERROR: fuzz_check_error(&err); break;
  case MASIC_ARGS_HELP: break;
  case MASIC_ARGS_OK:
    /* --check runs without an input and takes no file but --weights */
    if (opt.check && (opt.input_path || opt.labels_path || opt.output_path || opt.predictions_path ||
                      opt.profile_path || opt.stream))
      abort();
    /* otherwise exactly one of --input and a stream flag */
    if ((!opt.check && !opt.input_path == !opt.stream) || (opt.predictions_path && !opt.labels_path)) abort();
    if (opt.stream && (opt.labels_path || opt.output_path || opt.profile_path || !opt.stream_flag)) abort();
    if (opt.timesteps < 0 || opt.timesteps > MASIC_MAX_TIMESTEPS) abort();
    if (opt.threads < 0 || opt.threads > MASIC_MAX_THREADS_OPTION || opt.min_timesteps < -1) abort();
    if (opt.exit_flag && masic_exit_rule_problem(&opt.exit_rule)) abort();
    break;
  }
  free(text);
  return 0;
}

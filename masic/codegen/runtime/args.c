/* args.c: the executable's command line (see args.h). Every value is checked in full: integers digit by digit
 * against their range, numbers against theirs, and a flag given twice with different exit rules is refused. */
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char masic_usage_text[] =
    "usage: model --input x.npy [--labels y.npy] [--output out.npy] [--predictions p.npy] [--timesteps N]\n"
    "             [--threads N] [--exit-confidence X | --exit-margin M | --exit-stable K | --no-exit]\n"
    "             [--min-timesteps N] [--weights PATH] [--profile FILE.json] [--help]\n"
    "       model --stream | --stream-samples [--timesteps N] [--threads N] [exit flags] [--weights PATH]\n"
    "       model --check [--weights PATH]\n"
    "\n"
    "Runs the compiled spiking network on one input and prints its prediction and a JSON line of statistics;\n"
    "with --labels, on many samples (neuron state reset before each) and prints accuracy, timesteps used,\n"
    "time per sample and a JSON line of it all.\n"
    "\n"
    "  --input x.npy          float32 array shaped like one sample (presented at every timestep)\n"
    "                         or (S, *sample shape), a sequence presenting one sample per timestep;\n"
    "                         with --labels (N, *sample shape) or (N, S, *sample shape): N samples or sequences\n"
    "  --labels y.npy         int32 or int64 class of each input sample, shape (N,)\n"
    "  --output out.npy       write the output of every timestep run, shape (timesteps, *output shape);\n"
    "                         with --labels (N, timesteps, *output shape), NaN after a sample's exit\n"
    "  --predictions p.npy    with --labels: write int32 (N, 2), each sample's prediction and timesteps used\n"
    "  --timesteps N          timesteps to run, 1 to 1000000 (default: sequence length, else the model's default)\n"
    "  --threads N            worker threads, 0 = one per core (default 0)\n"
    "  --exit-confidence X    stop once the softmax of the summed outputs reaches X (0 < X <= 1)\n"
    "  --exit-margin M        stop once the largest summed output leads the second largest by M (M > 0)\n"
    "  --exit-stable K        stop once the argmax of the summed outputs has been the same for K steps\n"
    "  --no-exit              run every timestep\n"
    "  --min-timesteps N      never stop early before N timesteps\n"
    "  --weights PATH         weights file (default: weights.bin beside the executable)\n"
    "  --profile FILE.json    write where the run's time went (per kernel call, per streamed load, start-up)\n"
    "                         to FILE.json and a short table to stderr\n"
    "  --check                verify the weights file (its size and the CRC-32C of every piece) and exit 0\n"
    "  --stream               read raw float32 frames on stdin, one timestep's input each, and write one line\n"
    "                         per step on stdout: step prediction exit y0 y1 ... (step counts from 1 in the\n"
    "                         sample; after a line with exit 1, or the last timestep, a new sample starts)\n"
    "  --stream-samples       read one frame per sample (presented at every timestep) and write one line per\n"
    "                         sample: prediction timesteps\n"
    "\n"
    "Without an exit flag the executable's own rule applies: the one masic calibrate wrote into it, else the\n"
    "one it was compiled with. --min-timesteps alone changes that rule's minimum.\n"
    "\n"
    "The model runs timesteps in blocks (\"block\" in the JSON line). The exit rule is checked after every step,\n"
    "but the model can only stop at the end of a block, so up to block-1 extra steps may be computed; their\n"
    "outputs are discarded (\"timesteps_computed\" counts them, \"timesteps\" does not).\n"
    "\n"
    "Input files must be regular .npy files as numpy.save writes them; outputs must not name an input, the\n"
    "labels or the weights file. Every refusal is one line on stderr and exit status 2.\n";

enum option_id {
  OPT_INPUT,
  OPT_LABELS,
  OPT_OUTPUT,
  OPT_PREDICTIONS,
  OPT_WEIGHTS,
  OPT_TIMESTEPS,
  OPT_THREADS,
  OPT_EXIT_CONFIDENCE,
  OPT_EXIT_MARGIN,
  OPT_EXIT_STABLE,
  OPT_NO_EXIT,
  OPT_MIN_TIMESTEPS,
  OPT_CHECK,
  OPT_PROFILE,
  OPT_STREAM,
  OPT_STREAM_SAMPLES,
  N_OPTIONS
};
static const char *const option_names[N_OPTIONS] = {
    "--input",   "--labels",          "--output",      "--predictions", "--weights", "--timesteps",
    "--threads", "--exit-confidence", "--exit-margin", "--exit-stable", "--no-exit", "--min-timesteps",
    "--check",   "--profile",         "--stream",      "--stream-samples"};

bool masic_parse_integer(const char *text, int64_t min, int64_t max, int64_t *value) {
  const char *p = text;
  bool negative = *p == '-';
  if (negative) p++;
  if (!*p) return false;
  /* Accumulated as a negative number, whose range includes INT64_MIN. */
  int64_t v = 0;
  for (; *p; p++) {
    if (*p < '0' || *p > '9') return false;
    int digit = *p - '0';
    if (v < (INT64_MIN + digit) / 10) return false;
    v = v * 10 - digit;
  }
  if (!negative) {
    if (v == INT64_MIN) return false;
    v = -v;
  }
  if (v < min || v > max) return false;
  *value = v;
  return true;
}

static bool parse_int(const char *option, const char *text, int min, int max, int *out, masic_error_t *err) {
  int64_t v;
  if (!masic_parse_integer(text, min, max, &v))
    return masic_fail(err, MASIC_EXIT_USER, "%s expects an integer from %d to %d, got '%s'", option, min, max, text);
  *out = (int)v;
  return true;
}

/* A finite decimal number in (0, max]: strtod's syntax, without leading blanks, hex or inf/nan spellings. */
static bool parse_positive(const char *option, const char *text, double max, const char *range, double *out,
                           masic_error_t *err) {
  char *end;
  errno = 0;
  bool plain = *text && strspn(text, "0123456789.eE+-") == strlen(text);
  double v = plain ? strtod(text, &end) : 0.0;
  if (!plain || errno || end == text || *end || !(v > 0.0 && v <= max && isfinite(v)))
    return masic_fail(err, MASIC_EXIT_USER, "%s expects a number with %s, got '%s'", option, range, text);
  *out = v;
  return true;
}

static bool choose_exit_rule(masic_options_t *opt, const char *flag, int rule, double threshold, masic_error_t *err) {
  if (opt->exit_flag && strcmp(opt->exit_flag, flag))
    return masic_fail(err, MASIC_EXIT_USER, "%s and %s choose different exit rules; pass only one", opt->exit_flag,
                      flag);
  opt->exit_flag = flag;
  opt->exit_rule = (masic_exit_rule_t){.rule = rule, .threshold = threshold};
  return true;
}

static bool choose_stream(masic_options_t *opt, const char *flag, masic_stream_mode_t mode, masic_error_t *err) {
  if (opt->stream && opt->stream != mode)
    return masic_fail(err, MASIC_EXIT_USER, "%s and %s stream different things; pass only one", opt->stream_flag,
                      flag);
  opt->stream = mode;
  opt->stream_flag = flag;
  return true;
}

static bool parse_option(masic_options_t *opt, enum option_id id, const char *name, const char *value,
                         masic_error_t *err) {
  double x = 0;
  int n = 0;
  switch (id) {
  case OPT_INPUT: opt->input_path = value; return true;
  case OPT_LABELS: opt->labels_path = value; return true;
  case OPT_OUTPUT: opt->output_path = value; return true;
  case OPT_PREDICTIONS: opt->predictions_path = value; return true;
  case OPT_WEIGHTS: opt->weights_path = value; return true;
  case OPT_PROFILE: opt->profile_path = value; return true;
  case OPT_TIMESTEPS: return parse_int(name, value, 1, MASIC_MAX_TIMESTEPS, &opt->timesteps, err);
  case OPT_THREADS: return parse_int(name, value, 0, MASIC_MAX_THREADS_OPTION, &opt->threads, err);
  case OPT_EXIT_CONFIDENCE:
    return parse_positive(name, value, 1.0, "0 < X <= 1", &x, err) &&
           choose_exit_rule(opt, name, MASIC_EXIT_SOFTMAX_CONFIDENCE, x, err);
  case OPT_EXIT_MARGIN:
    return parse_positive(name, value, INFINITY, "M > 0", &x, err) &&
           choose_exit_rule(opt, name, MASIC_EXIT_MARGIN, x, err);
  case OPT_EXIT_STABLE:
    return parse_int(name, value, 1, INT_MAX, &n, err) &&
           choose_exit_rule(opt, name, MASIC_EXIT_STABLE_ARGMAX, n, err);
  case OPT_MIN_TIMESTEPS: return parse_int(name, value, 0, INT_MAX, &opt->min_timesteps, err);
  case OPT_NO_EXIT:
  case OPT_CHECK:
  case OPT_STREAM:
  case OPT_STREAM_SAMPLES:
  case N_OPTIONS: break;
  }
  return true;
}

masic_args_status_t masic_parse_args(int argc, char **argv, masic_options_t *opt, masic_error_t *err) {
  *opt = (masic_options_t){.min_timesteps = -1};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return MASIC_ARGS_HELP;
    /* Both "--flag value" and "--flag=value" are accepted. */
    const char *eq = strchr(arg, '=');
    size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
    int id = 0;
    while (id < N_OPTIONS && !(strlen(option_names[id]) == name_len && !strncmp(arg, option_names[id], name_len)))
      id++;
    if (id == N_OPTIONS) {
      masic_fail(err, MASIC_EXIT_USER, "unknown argument '%s'; run model --help for usage", arg);
      return MASIC_ARGS_ERROR;
    }
    const char *name = option_names[id];
    if (id == OPT_NO_EXIT || id == OPT_CHECK || id == OPT_STREAM || id == OPT_STREAM_SAMPLES) {
      if (eq) {
        masic_fail(err, MASIC_EXIT_USER, "%s takes no value; run model --help for usage", name);
        return MASIC_ARGS_ERROR;
      }
      if (id == OPT_CHECK) {
        opt->check = true;
        continue;
      }
      if (id == OPT_NO_EXIT && !choose_exit_rule(opt, name, MASIC_EXIT_NONE, 0.0, err)) return MASIC_ARGS_ERROR;
      if (id != OPT_NO_EXIT && !choose_stream(opt, name, id == OPT_STREAM ? MASIC_STREAM_STEPS : MASIC_STREAM_SAMPLES,
                                              err))
        return MASIC_ARGS_ERROR;
      continue;
    }
    const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!value) {
      masic_fail(err, MASIC_EXIT_USER, "%s needs a value; run model --help for usage", name);
      return MASIC_ARGS_ERROR;
    }
    if (!parse_option(opt, (enum option_id)id, name, value, err)) return MASIC_ARGS_ERROR;
  }
  if (opt->check) {
    if (opt->input_path || opt->labels_path || opt->output_path || opt->predictions_path || opt->profile_path ||
        opt->stream) {
      masic_fail(err, MASIC_EXIT_USER, "--check takes only --weights; run model --help for usage");
      return MASIC_ARGS_ERROR;
    }
    return MASIC_ARGS_OK;
  }
  if (opt->stream && (opt->input_path || opt->labels_path || opt->output_path || opt->predictions_path ||
                      opt->profile_path)) {
    masic_fail(err, MASIC_EXIT_USER, "%s reads standard input and writes standard output; it takes no --input, "
               "--labels, --output, --predictions or --profile", opt->stream_flag);
    return MASIC_ARGS_ERROR;
  }
  if (!opt->input_path && !opt->stream) {
    masic_fail(err, MASIC_EXIT_USER, "missing --input x.npy (or --stream); run model --help for usage");
    return MASIC_ARGS_ERROR;
  }
  if (opt->predictions_path && !opt->labels_path) {
    masic_fail(err, MASIC_EXIT_USER, "--predictions needs --labels (it lists one row per labelled sample)");
    return MASIC_ARGS_ERROR;
  }
  return MASIC_ARGS_OK;
}

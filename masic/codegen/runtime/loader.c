/* loader.c: the entry point of every executable masic builds.
 *
 * Linked with the generated model.c, the kernel objects and parallel.c into one static program that runs from a
 * folder holding it, weights.bin and manifest.json. It checks weights.bin against the build, fills the one arena,
 * presents a .npy input for a number of timesteps, applies the early-exit rule and reports one line of JSON. With
 * --labels it runs many samples, resetting the neuron state before each, and reports accuracy and timesteps used.
 * Timesteps run in blocks of masic_model.block (the model computes a block of steps layer by layer); weights that do
 * not fit in the arena are streamed from weights.bin once per block by a loading thread that runs ahead of the
 * compute. When one block covers the whole run, the plan may also keep each neuron's state only while its layer
 * runs: the loading thread then fills the state with its initial value in every block, and a run may not be longer
 * than one block.
 *
 * Exit codes: 0 success, 1 system failure (out of memory, I/O error, inconsistent build), 2 a problem the user can
 * fix (command line, input file, weights file), 3 a kernel reported failure during a step. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "masic_model.h"

/* Inputs, outputs and weights are copied byte for byte between files and the arena. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "masic targets little-endian machines only");

enum { EXIT_SYSTEM = 1, EXIT_USER = 2, EXIT_STEP = 3 };

#define IO_CHUNK_BYTES ((size_t)1 << 20)      /* pread size of the CRC pass */
#define CRC_MIN_ARENA_BUFFER ((uint64_t)1 << 16) /* smaller arenas: a buffer of this size */
#define MIN_ARENA_ALIGNMENT 64
#define MAX_BLOCK 65536 /* far above any useful block; bounds what a damaged build could make the loader do */
#define NPY_MAX_NDIM 32               /* numpy's own limit on dimensions */
#define NPY_MAX_HEADER_BYTES (1 << 16) /* far above what numpy writes; bounds a hostile header */
#define LOAD_FILLED_STATE 2u              /* masic_load_t.state: a uniform initial state, written not read */

static const char usage_text[] =
    "usage: model --input x.npy [--labels y.npy] [--output out.npy] [--predictions p.npy] [--timesteps N]\n"
    "             [--threads N] [--exit-confidence X | --exit-margin M | --exit-stable K | --no-exit]\n"
    "             [--min-timesteps N] [--weights PATH] [--help]\n"
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
    "  --timesteps N          timesteps to run (default: sequence length, else the model's default)\n"
    "  --threads N            worker threads, 0 = one per core (default 0)\n"
    "  --exit-confidence X    stop once the softmax of the summed outputs reaches X (0 < X <= 1)\n"
    "  --exit-margin M        stop once the largest summed output leads the second largest by M (M > 0)\n"
    "  --exit-stable K        stop once the argmax of the summed outputs has been the same for K steps\n"
    "  --no-exit              run every timestep\n"
    "  --min-timesteps N      never stop early before N timesteps\n"
    "  --weights PATH         weights file (default: weights.bin beside the executable)\n"
    "\n"
    "Without an exit flag the executable's own rule applies: the one masic calibrate wrote into it, else the\n"
    "one it was compiled with. --min-timesteps alone changes that rule's minimum.\n"
    "\n"
    "The model runs timesteps in blocks (\"block\" in the JSON line). The exit rule is checked after every step,\n"
    "but the model can only stop at the end of a block, so up to block-1 extra steps may be computed; their\n"
    "outputs are discarded (\"timesteps_computed\" counts them, \"timesteps\" does not).\n";

static const char *const exit_rule_names[] = {"none", "softmax_confidence", "margin", "stable_argmax"};
/* The name of each rule's threshold, as in manifest.json. */
static const char *const exit_threshold_names[] = {"", "confidence", "margin", "steps"};

typedef struct {
  const char *input_path;
  const char *labels_path; /* NULL: one sample */
  const char *output_path;
  const char *predictions_path;
  const char *weights_path; /* NULL: weights.bin beside the executable */
  int timesteps;            /* 0: not given */
  int threads;
  const char *exit_flag;       /* the exit-rule flag given, or NULL */
  masic_exit_rule_t exit_rule; /* the rule that flag chose (its min_timesteps is not used) */
  int min_timesteps;           /* -1: not given */
} options_t;

/* The input file stays open and each step's sample is read straight into the arena: the arena planner may reuse
 * an input slot once the kernels reading it have run, so the samples are copied in again for every block. */
typedef struct {
  const char *path;
  int fd;
  uint64_t data_offset;
  uint64_t sample_bytes;   /* bytes of one step's input */
  int64_t n_samples;       /* samples (or sequences) in the file; 1 without --labels */
  int64_t sequence_length; /* steps stored per sample; 0: one input presented at every step */
} input_t;

typedef struct {
  const char *path;
  int fd; /* kept open: the initial state is read again before each sample */
} weights_t;

typedef struct {
  int max_steps;
  masic_exit_rule_t exit;
  const char *exit_source; /* where the rule came from: "compiled", "calibrated" or "command_line" */
} schedule_t;

/* Buffers of a run, allocated once and reused for every sample. */
typedef struct {
  size_t out_numel;
  double *acc;    /* sum of the outputs of the current sample's steps so far */
  float *history; /* every step's output of the current sample, only kept for --output */
  float *scratch; /* the current step's output otherwise */
} run_buffers_t;

typedef struct {
  int steps_run;      /* steps whose outputs count: the exit rule stopped after the last of them */
  int steps_computed; /* steps the model ran, up to a block past steps_run */
  size_t prediction; /* argmax of acc after the last step run */
} sample_result_t;

/* What a run reads and writes besides the input, opened before the weights are loaded so that a bad path fails in
 * milliseconds rather than after a long run. */
typedef struct {
  int64_t *labels;   /* NULL: one unlabelled sample */
  FILE *output;      /* --output, or NULL */
  FILE *predictions; /* --predictions, or NULL */
} run_files_t;

__attribute__((format(printf, 2, 3))) static _Noreturn void die(int code, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("model: error: ", stderr);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
  exit(code);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die(EXIT_SYSTEM, "out of memory allocating %zu bytes", n);
  return p;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool range_fits(uint64_t offset, uint64_t nbytes, uint64_t size) {
  return offset <= size && nbytes <= size - offset;
}

/* Number of elements of a shape, or UINT64_MAX if a dimension is negative or the size in float32 bytes would not
 * fit in 64 bits, so callers may multiply the result by 4. */
static uint64_t shape_numel(int ndim, const int64_t *shape) {
  uint64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return UINT64_MAX;
    if (shape[i] != 0 && n > UINT64_MAX / 4 / (uint64_t)shape[i]) return UINT64_MAX;
    n *= (uint64_t)shape[i];
  }
  return n;
}

/* Formats a shape the way numpy prints it; `lead` names an extra leading dimension, as in (S, 2, 3). */
static const char *format_shape(char *buf, size_t cap, const char *lead, int ndim, const int64_t *shape) {
  size_t len = (size_t)snprintf(buf, cap, "(%s%s", lead ? lead : "", lead && ndim ? ", " : "");
  for (int i = 0; i < ndim && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, i ? ", %lld" : "%lld", (long long)shape[i]);
  int total_ndim = ndim + (lead != NULL);
  if (len < cap) snprintf(buf + len, cap - len, "%s", total_ndim == 1 ? ",)" : ")");
  return buf;
}

/* ---- command line ---- */

enum option_id { OPT_INPUT, OPT_LABELS, OPT_OUTPUT, OPT_PREDICTIONS, OPT_WEIGHTS, OPT_TIMESTEPS, OPT_THREADS,
                 OPT_EXIT_CONFIDENCE, OPT_EXIT_MARGIN, OPT_EXIT_STABLE, OPT_NO_EXIT, OPT_MIN_TIMESTEPS, N_OPTIONS };
static const char *const option_names[N_OPTIONS] = {
    "--input",   "--labels",          "--output",      "--predictions", "--weights",  "--timesteps",
    "--threads", "--exit-confidence", "--exit-margin", "--exit-stable", "--no-exit", "--min-timesteps"};

static int parse_int(const char *option, const char *text, int min, int max) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno || end == text || *end || v < min || v > max)
    die(EXIT_USER, "%s expects an integer from %d to %d, got '%s'", option, min, max, text);
  return (int)v;
}

/* A number in (0, max]; max may be INFINITY. */
static double parse_positive(const char *option, const char *text, double max, const char *range) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || *end || !(v > 0.0 && v <= max && isfinite(v)))
    die(EXIT_USER, "%s expects a number with %s, got '%s'", option, range, text);
  return v;
}

static void choose_exit_rule(options_t *opt, const char *flag, int rule, double threshold) {
  if (opt->exit_flag && strcmp(opt->exit_flag, flag))
    die(EXIT_USER, "%s and %s choose different exit rules; pass only one", opt->exit_flag, flag);
  opt->exit_flag = flag;
  opt->exit_rule = (masic_exit_rule_t){.rule = rule, .threshold = threshold};
}

static void parse_args(int argc, char **argv, options_t *opt) {
  *opt = (options_t){.min_timesteps = -1};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      fputs(usage_text, stdout);
      exit(0);
    }
    /* Both "--flag value" and "--flag=value" are accepted. */
    const char *eq = strchr(arg, '=');
    size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
    int id = 0;
    while (id < N_OPTIONS && !(strlen(option_names[id]) == name_len && !strncmp(arg, option_names[id], name_len)))
      id++;
    if (id == N_OPTIONS) die(EXIT_USER, "unknown argument '%s'; run model --help for usage", arg);
    const char *name = option_names[id];
    if (id == OPT_NO_EXIT) {
      if (eq) die(EXIT_USER, "%s takes no value; run model --help for usage", name);
      choose_exit_rule(opt, name, MASIC_EXIT_NONE, 0.0);
      continue;
    }
    const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!value) die(EXIT_USER, "%s needs a value; run model --help for usage", name);

    switch ((enum option_id)id) {
    case OPT_INPUT: opt->input_path = value; break;
    case OPT_LABELS: opt->labels_path = value; break;
    case OPT_OUTPUT: opt->output_path = value; break;
    case OPT_PREDICTIONS: opt->predictions_path = value; break;
    case OPT_WEIGHTS: opt->weights_path = value; break;
    case OPT_TIMESTEPS: opt->timesteps = parse_int(name, value, 1, INT_MAX); break;
    case OPT_THREADS: opt->threads = parse_int(name, value, 0, 4096); break;
    case OPT_EXIT_CONFIDENCE:
      choose_exit_rule(opt, name, MASIC_EXIT_SOFTMAX_CONFIDENCE, parse_positive(name, value, 1.0, "0 < X <= 1"));
      break;
    case OPT_EXIT_MARGIN:
      choose_exit_rule(opt, name, MASIC_EXIT_MARGIN, parse_positive(name, value, INFINITY, "M > 0"));
      break;
    case OPT_EXIT_STABLE:
      choose_exit_rule(opt, name, MASIC_EXIT_STABLE_ARGMAX, parse_int(name, value, 1, INT_MAX));
      break;
    case OPT_MIN_TIMESTEPS: opt->min_timesteps = parse_int(name, value, 0, INT_MAX); break;
    case OPT_NO_EXIT:
    case N_OPTIONS: break;
    }
  }
  if (!opt->input_path) die(EXIT_USER, "missing --input x.npy; run model --help for usage");
  if (opt->predictions_path && !opt->labels_path)
    die(EXIT_USER, "--predictions needs --labels (it lists one row per labelled sample)");
}

/* ---- the build's own constants ---- */

static void check_segments(const char *kind, const masic_segment_t *segs, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    if (!range_fits(segs[i].file_offset, segs[i].nbytes, masic_model.weights_bytes) ||
        !range_fits(segs[i].arena_offset, segs[i].nbytes, masic_model.arena_bytes))
      die(EXIT_SYSTEM, "inconsistent build: %s segment %u lies outside weights.bin or the arena; recompile the model",
          kind, i);
  }
}

/* Why a rule cannot be applied, or NULL if it can. */
static const char *exit_rule_problem(const masic_exit_rule_t *r) {
  double x = r->threshold;
  if (r->min_timesteps < 0) return "exit rule has a negative minimum number of timesteps";
  switch (r->rule) {
  case MASIC_EXIT_NONE: return NULL;
  case MASIC_EXIT_SOFTMAX_CONFIDENCE: return x > 0 && x <= 1 ? NULL : "exit confidence outside (0, 1]";
  case MASIC_EXIT_MARGIN: return x > 0 && isfinite(x) ? NULL : "exit margin is not a finite number above 0";
  case MASIC_EXIT_STABLE_ARGMAX:
    return x >= 1 && x <= INT_MAX && x == floor(x) ? NULL : "exit steps are not an integer from 1";
  default: return "unknown exit rule";
  }
}

/* Where masic calibrate writes its rule (see masic_exit_override_t). Volatile, so that the compiler reads what is in
 * the file at run time instead of folding the values it was built with. */
static const volatile masic_exit_override_t exit_override
    __attribute__((section(MASIC_EXIT_SECTION), used, aligned(8))) = {
        .magic = MASIC_EXIT_MAGIC, .version = MASIC_EXIT_VERSION, .set = 0, .rule = {.rule = MASIC_EXIT_NONE}};

/* Copies the calibrated rule to *rule and returns true, or returns false if none was written. */
static bool calibrated_exit_rule(masic_exit_rule_t *rule) {
  char magic[sizeof exit_override.magic];
  for (size_t i = 0; i < sizeof magic; i++) magic[i] = exit_override.magic[i];
  if (memcmp(magic, MASIC_EXIT_MAGIC, sizeof magic) || exit_override.version != MASIC_EXIT_VERSION)
    die(EXIT_SYSTEM, "inconsistent build: the %s section is damaged; recompile the model", MASIC_EXIT_SECTION);
  if (!exit_override.set) return false;
  *rule = (masic_exit_rule_t){.rule = exit_override.rule.rule,
                              .min_timesteps = exit_override.rule.min_timesteps,
                              .threshold = exit_override.rule.threshold};
  const char *problem = exit_rule_problem(rule);
  if (problem) die(EXIT_SYSTEM, "the calibrated exit rule is invalid: %s; run masic calibrate again", problem);
  return true;
}

/* True if each of the block's `block` slots (inputs or outputs) holds `numel` float32 values inside the arena. */
static bool slots_fit(const uint64_t *offsets, uint64_t numel) {
  if (!offsets) return false;
  for (int32_t t = 0; t < masic_model.block; t++)
    if (!range_fits(offsets[t], 4 * numel, masic_model.arena_bytes)) return false;
  return true;
}

/* Loads must lie inside weights.bin and the arena, and be issued in order of `start`: the loading thread takes them
 * one after the other, so a later load with an earlier start would wait behind the previous one and could deadlock
 * the compute waiting for it. */
static void check_loads(void) {
  const masic_model_t *m = &masic_model;
  for (uint32_t k = 0; k < m->n_loads; k++) {
    const masic_load_t *load = &m->loads[k];
    bool filled = load->state == LOAD_FILLED_STATE;
    if ((!filled && !range_fits(load->file_offset, load->nbytes, m->weights_bytes)) ||
        !range_fits(load->arena_offset, load->nbytes, m->arena_bytes) || (filled && load->nbytes % sizeof(float)))
      die(EXIT_SYSTEM, "inconsistent build: streamed load %u lies outside weights.bin or the arena; recompile the model",
          k);
    if (load->start > m->n_positions || (k > 0 && load->start < m->loads[k - 1].start))
      die(EXIT_SYSTEM, "inconsistent build: streamed load %u starts at position %u, out of order or past the %u "
          "positions of a block; recompile the model", k, load->start, m->n_positions);
  }
}

/* True if the loads carry neuron state: each layer's state then lives only within a block (see masic_load_t). */
static bool state_within_block(void) {
  for (uint32_t k = 0; k < masic_model.n_loads; k++)
    if (masic_model.loads[k].state) return true;
  return false;
}

/* A compiler bug must not turn into an out-of-bounds write, so the plan is checked before it is trusted. */
static void check_model(void) {
  const masic_model_t *m = &masic_model;
  uint64_t in_numel = shape_numel(m->input_ndim, m->input_shape);
  uint64_t out_numel = shape_numel(m->output_ndim, m->output_shape);
  const char *problem = NULL;
  if (m->input_ndim < 0 || m->input_ndim > MASIC_MAX_NDIM || m->output_ndim < 0 || m->output_ndim > MASIC_MAX_NDIM)
    problem = "input or output has an invalid number of dimensions";
  else if (m->block < 1 || m->block > MAX_BLOCK)
    problem = "block size outside 1..65536";
  else if (in_numel == UINT64_MAX || !slots_fit(m->input_offsets, in_numel))
    problem = "an input lies outside the arena";
  else if (out_numel == 0 || out_numel == UINT64_MAX || !slots_fit(m->output_offsets, out_numel))
    problem = "an output is empty or lies outside the arena";
  else if (m->arena_alignment & (m->arena_alignment - 1))
    problem = "arena alignment is not a power of two";
  else if (m->timesteps < 1)
    problem = "default number of timesteps is below 1";
  else if (m->n_loads && !m->loads)
    problem = "streamed loads are missing";
  else if (m->timesteps > m->block && state_within_block())
    problem = "neuron state lives within one block, but the default number of timesteps exceeds it";
  else
    problem = exit_rule_problem(&m->exit_rule);
  if (problem) die(EXIT_SYSTEM, "inconsistent build: %s; recompile the model", problem);
  check_segments("resident", m->resident, m->n_resident);
  check_segments("state", m->state_init, m->n_state_init);
  check_loads();
}

/* ---- weights.bin ---- */

static uint32_t crc_table[8][256];

static void crc32_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[0][n] = c;
  }
  /* Tables 1..7 advance a byte through 1..7 more zero bytes, which lets crc32_update consume 8 bytes per step. */
  for (uint32_t n = 0; n < 256; n++)
    for (int s = 1; s < 8; s++) crc_table[s][n] = (crc_table[s - 1][n] >> 8) ^ crc_table[0][crc_table[s - 1][n] & 0xff];
}

/* zlib-compatible CRC-32 (slicing-by-8); start with crc = 0. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
  crc = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
          crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
          crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
  }
  for (; n; p++, n--) crc = crc_table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* Reads n bytes at offset, retrying short reads; returns fewer than n only at end of file. */
static size_t pread_full(int fd, void *buf, size_t n, uint64_t offset, const char *path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(EXIT_SYSTEM, "cannot read %s: %s", path, strerror(errno));
    if (r == 0) break;
    done += (size_t)r;
  }
  return done;
}

/* Opens `path` for reading and returns its size; `what` names the file in error messages. */
static int open_regular_file(const char *path, const char *what, const char *remedy, uint64_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) die(EXIT_USER, "%s %s does not exist; %s", what, path, remedy);
  if (fd < 0) die(EXIT_USER, "cannot open %s %s: %s; %s", what, path, strerror(errno), remedy);
  struct stat st;
  if (fstat(fd, &st) != 0) die(EXIT_SYSTEM, "cannot stat %s %s: %s", what, path, strerror(errno));
  if (!S_ISREG(st.st_mode)) die(EXIT_USER, "%s %s is not a regular file; %s", what, path, remedy);
  *size = (uint64_t)st.st_size;
  return fd;
}

/* Under qemu-user /proc/self/exe names the emulated program, so this also works when testing on the host. */
static char *default_weights_path(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0 || (size_t)n >= sizeof exe - 1)
    die(EXIT_USER, "cannot locate the executable's folder to find weights.bin; pass --weights PATH");
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash) slash[1] = '\0';
  size_t cap = strlen(exe) + sizeof "weights.bin";
  char *path = xmalloc(cap);
  snprintf(path, cap, "%sweights.bin", slash ? exe : "");
  return path;
}

static const char weights_remedy[] = "re-copy the artifact folder";

/* Bytes read from weights.bin, for the report. `streamed` and `state` grow in the loading thread, under
 * stream.mutex; the compute thread touches them only between blocks, while that thread is idle (see
 * stream_end_block). */
static struct {
  uint64_t checked;   /* by the CRC pass at start */
  uint64_t resident;  /* by resident segments, once per run */
  uint64_t streamed;  /* by streamed weight loads, once per block */
  uint64_t state;     /* initial neuron state: per sample (state_init), or by state loads once per block */
  double load_wait_s; /* time the compute spent waiting in masic_wait_load */
} weight_io;

static void check_weights_size(const char *path, uint64_t size) {
  uint64_t expected = masic_model.weights_bytes;
  if (size < expected)
    die(EXIT_USER, "weights file %s is truncated (%llu of %llu bytes); %s", path, (unsigned long long)size,
        (unsigned long long)expected, weights_remedy);
  if (size > expected)
    die(EXIT_USER, "weights file %s is too large (%llu bytes, expected %llu); it belongs to another build, %s", path,
        (unsigned long long)size, (unsigned long long)expected, weights_remedy);
}

/* The CRC is checked before any byte is used, so a stale or damaged copy cannot produce silent garbage. It streams
 * the file through `buf` with pread: weights may be far larger than the memory budget, so they are never mapped or
 * held whole. */
static void check_weights_crc(int fd, const char *path, uint64_t size, uint8_t *buf, size_t cap) {
  uint32_t crc = 0;
  for (uint64_t offset = 0; offset < size;) {
    size_t want = size - offset < cap ? (size_t)(size - offset) : cap;
    size_t got = pread_full(fd, buf, want, offset, path);
    if (got < want) die(EXIT_USER, "weights file %s shrank while being read; %s", path, weights_remedy);
    crc = crc32_update(crc, buf, got);
    offset += got;
  }
  weight_io.checked = size;
  if (crc != masic_model.weights_crc32)
    die(EXIT_USER, "weights file %s is corrupted (CRC-32 %08x, expected %08x); %s", path, (unsigned)crc,
        (unsigned)masic_model.weights_crc32, weights_remedy);
}

static uint8_t *alloc_arena(void) {
  size_t alignment = masic_model.arena_alignment > MIN_ARENA_ALIGNMENT ? (size_t)masic_model.arena_alignment
                                                                       : MIN_ARENA_ALIGNMENT;
  size_t bytes = masic_model.arena_bytes ? (size_t)masic_model.arena_bytes : 1;
  void *arena = NULL;
  if (posix_memalign(&arena, alignment, bytes) != 0)
    die(EXIT_SYSTEM, "out of memory allocating the %llu-byte arena", (unsigned long long)masic_model.arena_bytes);
  memset(arena, 0, bytes);
  return arena;
}

/* Copies segments into the arena; returns the bytes read. */
static uint64_t load_segments(int fd, const char *path, uint8_t *arena, const masic_segment_t *segs, uint32_t n) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (pread_full(fd, arena + segs[i].arena_offset, segs[i].nbytes, segs[i].file_offset, path) < segs[i].nbytes)
      die(EXIT_USER, "weights file %s shrank while being read; %s", path, weights_remedy);
    total += segs[i].nbytes;
  }
  return total;
}

/* Checks weights.bin and returns the arena filled with the resident weights. The file stays open in *weights: the
 * initial state is copied from it before each sample, and streamed weights during each block. */
static uint8_t *load_arena(const char *weights_path, weights_t *weights) {
  uint64_t size;
  int fd = open_regular_file(weights_path, "weights file", weights_remedy, &size);
  check_weights_size(weights_path, size);
  uint8_t *arena = alloc_arena();
  /* The CRC pass borrows the arena, which is not in use yet, as its buffer when it is big enough: a separate buffer
   * would add up to IO_CHUNK_BYTES to the peak memory of every run. */
  if (masic_model.arena_bytes >= CRC_MIN_ARENA_BUFFER) {
    size_t cap = masic_model.arena_bytes < IO_CHUNK_BYTES ? (size_t)masic_model.arena_bytes : IO_CHUNK_BYTES;
    check_weights_crc(fd, weights_path, size, arena, cap);
    memset(arena, 0, cap); /* the plan may rely on a zeroed arena */
  } else {
    size_t cap = size < CRC_MIN_ARENA_BUFFER ? (size_t)size : (size_t)CRC_MIN_ARENA_BUFFER;
    uint8_t *chunk = xmalloc(cap);
    check_weights_crc(fd, weights_path, size, chunk, cap);
    free(chunk);
  }
  weight_io.resident = load_segments(fd, weights_path, arena, masic_model.resident, masic_model.n_resident);
  *weights = (weights_t){.path = weights_path, .fd = fd};
  return arena;
}

/* ---- streamed weights ----
 *
 * When weights do not fit in memory, the plan gives some of them a slot in the arena that successive weights share:
 * each block of timesteps reads them again, load by load, just ahead of the kernels that need them. One loading thread
 * issues the loads of a block in order. Load k may begin once the compute has finished every position before
 * loads[k].start (the slot's previous occupant is dead then); the compute reports its progress with
 * masic_reached(p) and waits for load k with masic_wait_load(k). Blocks are fenced on both sides: a block's loads
 * begin only when it starts (at the end of the previous block its slots may still be read), and stream_end_block
 * waits until the thread is idle, so between blocks the arena and the counters belong to the compute alone.
 *
 * The compute's side is lock-free when nothing has to wait: `done` and `reached` are atomics, and masic_reached takes
 * the mutex only if the loading thread has said (in `wanted`) that it sleeps until that position. Both sides store
 * their own variable then load the other's, in sequentially consistent order, so at least one of them sees the
 * other's store: either the thread finds the position already reached, or the compute finds it waiting and wakes it
 * under the mutex (which the thread holds from publishing `wanted` until it sleeps). */

#define NO_POSITION UINT32_MAX
#define STREAM_SPIN_ITERS 2000               /* a load finishing within a microsecond or so is not worth a sleep */
#define STREAM_STACK_BYTES ((size_t)1 << 18) /* the thread only calls pread and, on failure, die */

static struct {
  bool active; /* the model has loads and the thread runs; everything below is unused otherwise */
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t to_loader;  /* a block started or ended, a wanted position was reached, or shutdown */
  pthread_cond_t to_compute; /* a load is done, or the thread went idle */
  int fd;
  const char *path;
  uint8_t *arena;
  /* under mutex */
  uint64_t blocks_started;
  bool block_open; /* between stream_begin_block and stream_end_block */
  bool busy;       /* the thread is serving the current block */
  bool shutdown;
  /* atomics, reset by stream_begin_block while the thread is idle */
  atomic_uint done;    /* loads of the current block completed */
  atomic_uint reached; /* positions of the current block the compute has finished */
  atomic_uint wanted;  /* the position the thread sleeps until, or NO_POSITION */
} stream;

/* In the loading thread: sleeps until the compute has reached `position` in the current block. Returns false if the
 * block ended first (its remaining loads are not needed) or the loader is shutting down. */
static bool stream_await_position(uint32_t position) {
  if (atomic_load(&stream.reached) >= position) return true;
  pthread_mutex_lock(&stream.mutex);
  atomic_store(&stream.wanted, position);
  while (atomic_load(&stream.reached) < position && stream.block_open && !stream.shutdown)
    pthread_cond_wait(&stream.to_loader, &stream.mutex);
  atomic_store(&stream.wanted, NO_POSITION);
  bool go = atomic_load(&stream.reached) >= position && stream.block_open && !stream.shutdown;
  pthread_mutex_unlock(&stream.mutex);
  return go;
}

/* In the loading thread: reads load k into its slot and publishes it. weights.bin passed its size and CRC check at
 * start, so a short read means the file was changed or replaced while the model ran. */
static void stream_read(uint32_t k) {
  const masic_load_t *load = &masic_model.loads[k];
  if (load->state == LOAD_FILLED_STATE) {
    float value;
    memcpy(&value, &load->fill_bits, sizeof value);
    float *slot = (float *)(void *)(stream.arena + load->arena_offset); /* arena offsets are 64-byte aligned */
    for (uint64_t i = 0; i < load->nbytes / sizeof(float); i++) slot[i] = value;
  } else if (pread_full(stream.fd, stream.arena + load->arena_offset, load->nbytes, load->file_offset, stream.path) <
             load->nbytes) {
    die(EXIT_USER, "weights file %s changed while the model was running (streamed load %u is past its end); %s",
        stream.path, k, weights_remedy);
  }
  pthread_mutex_lock(&stream.mutex);
  if (load->state != LOAD_FILLED_STATE) *(load->state ? &weight_io.state : &weight_io.streamed) += load->nbytes;
  atomic_store_explicit(&stream.done, k + 1, memory_order_release); /* publishes the slot's bytes */
  pthread_cond_broadcast(&stream.to_compute);
  pthread_mutex_unlock(&stream.mutex);
}

static void *stream_main(void *unused) {
  (void)unused;
  uint64_t served = 0;
  pthread_mutex_lock(&stream.mutex);
  for (;;) {
    while (!stream.shutdown && stream.blocks_started == served) pthread_cond_wait(&stream.to_loader, &stream.mutex);
    if (stream.shutdown) break;
    served = stream.blocks_started;
    pthread_mutex_unlock(&stream.mutex);
    for (uint32_t k = 0; k < masic_model.n_loads && stream_await_position(masic_model.loads[k].start); k++)
      stream_read(k);
    pthread_mutex_lock(&stream.mutex);
    stream.busy = false;
    pthread_cond_broadcast(&stream.to_compute);
  }
  pthread_mutex_unlock(&stream.mutex);
  return NULL;
}

/* Starts the loading thread if the model has loads (streamed weights or state); without loads there is no thread
 * and the hooks return at once. */
static void stream_start(const weights_t *weights, uint8_t *arena) {
  if (masic_model.n_loads == 0) return;
  stream.fd = weights->fd;
  stream.path = weights->path;
  stream.arena = arena;
  atomic_store(&stream.wanted, NO_POSITION);
  pthread_attr_t attr;
  size_t stack = STREAM_STACK_BYTES > PTHREAD_STACK_MIN ? STREAM_STACK_BYTES : (size_t)PTHREAD_STACK_MIN;
  if (pthread_mutex_init(&stream.mutex, NULL) || pthread_cond_init(&stream.to_loader, NULL) ||
      pthread_cond_init(&stream.to_compute, NULL) || pthread_attr_init(&attr) ||
      pthread_attr_setstacksize(&attr, stack) || pthread_create(&stream.thread, &attr, stream_main, NULL))
    die(EXIT_SYSTEM, "cannot start the thread that streams weights");
  pthread_attr_destroy(&attr);
  stream.active = true;
}

static void stream_stop(void) {
  if (!stream.active) return;
  pthread_mutex_lock(&stream.mutex);
  stream.shutdown = true;
  pthread_cond_signal(&stream.to_loader);
  pthread_mutex_unlock(&stream.mutex);
  pthread_join(stream.thread, NULL);
  pthread_cond_destroy(&stream.to_compute);
  pthread_cond_destroy(&stream.to_loader);
  pthread_mutex_destroy(&stream.mutex);
  stream.active = false;
}

/* Lets the thread issue the loads of a new block; it is idle here (see stream_end_block). */
static void stream_begin_block(void) {
  if (!stream.active) return;
  pthread_mutex_lock(&stream.mutex);
  atomic_store(&stream.done, 0);
  atomic_store(&stream.reached, 0);
  stream.blocks_started++;
  stream.block_open = true;
  stream.busy = true;
  pthread_cond_signal(&stream.to_loader);
  pthread_mutex_unlock(&stream.mutex);
}

/* Ends the block and waits until the thread is idle, having finished or dropped the block's loads. */
static void stream_end_block(void) {
  if (!stream.active) return;
  pthread_mutex_lock(&stream.mutex);
  stream.block_open = false;
  pthread_cond_signal(&stream.to_loader);
  while (stream.busy) pthread_cond_wait(&stream.to_compute, &stream.mutex);
  pthread_mutex_unlock(&stream.mutex);
}

void masic_reached(uint32_t position) {
  if (!stream.active) return;
  atomic_store(&stream.reached, position);
  if (position >= atomic_load(&stream.wanted)) {
    pthread_mutex_lock(&stream.mutex);
    pthread_cond_signal(&stream.to_loader);
    pthread_mutex_unlock(&stream.mutex);
  }
}

void masic_wait_load(uint32_t k) {
  if (!stream.active || atomic_load_explicit(&stream.done, memory_order_acquire) > k) return;
  /* Waiting for a load that cannot begin before a position the compute has not reached would hang forever. */
  uint32_t reached = atomic_load(&stream.reached);
  if (k >= masic_model.n_loads || masic_model.loads[k].start > reached)
    die(EXIT_SYSTEM, "inconsistent build: the model waits for streamed load %u at position %u, before it may begin; "
        "recompile the model", k, reached);
  double start = now_s();
  for (int i = 0; i < STREAM_SPIN_ITERS && atomic_load_explicit(&stream.done, memory_order_acquire) <= k; i++) {
  }
  if (atomic_load_explicit(&stream.done, memory_order_acquire) <= k) {
    pthread_mutex_lock(&stream.mutex);
    while (atomic_load_explicit(&stream.done, memory_order_acquire) <= k)
      pthread_cond_wait(&stream.to_compute, &stream.mutex);
    pthread_mutex_unlock(&stream.mutex);
  }
  weight_io.load_wait_s += now_s() - start;
}

/* ---- input .npy ---- */

typedef struct {
  const char *p, *end;
} cursor_t;

static void skip_space(cursor_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\t')) c->p++;
}

static bool accept(cursor_t *c, char ch) {
  skip_space(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

static bool accept_word(cursor_t *c, const char *word) {
  skip_space(c);
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || strncmp(c->p, word, n)) return false;
  c->p += n;
  return true;
}

static bool parse_quoted(cursor_t *c, char *out, size_t cap) {
  char quote = accept(c, '\'') ? '\'' : accept(c, '"') ? '"' : 0;
  if (!quote) return false;
  size_t len = 0;
  /* Strings from the file end up in error messages, so anything but printable ASCII is masked. */
  for (; c->p < c->end && *c->p != quote; c->p++)
    if (len + 1 < cap) out[len++] = *c->p >= ' ' && *c->p <= '~' ? *c->p : '?';
  out[len] = '\0';
  return c->p < c->end && *c->p++ == quote;
}

/* A Python tuple of non-negative integers: (), (3,), (2, 3) */
static bool parse_shape(cursor_t *c, int *ndim, int64_t *shape) {
  if (!accept(c, '(')) return false;
  for (*ndim = 0; !accept(c, ')'); (*ndim)++) {
    skip_space(c);
    if (*ndim == NPY_MAX_NDIM || c->p == c->end || *c->p < '0' || *c->p > '9') return false;
    int64_t v = 0;
    for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++) {
      if (v > (INT64_MAX - 9) / 10) return false;
      v = 10 * v + (*c->p - '0');
    }
    shape[*ndim] = v;
    if (!accept(c, ',')) {
      (*ndim)++;
      return accept(c, ')');
    }
  }
  return true;
}

typedef struct {
  char descr[32];
  bool fortran_order;
  int ndim;
  int64_t shape[NPY_MAX_NDIM];
} npy_header_t;

/* The header is a Python dict literal with exactly the keys descr, fortran_order and shape. */
static bool parse_npy_header(const char *text, size_t len, npy_header_t *h) {
  cursor_t c = {text, text + len};
  unsigned seen = 0;
  if (!accept(&c, '{')) return false;
  while (!accept(&c, '}')) {
    char key[32];
    if (!parse_quoted(&c, key, sizeof key) || !accept(&c, ':')) return false;
    bool ok = false;
    if (!strcmp(key, "descr")) {
      ok = parse_quoted(&c, h->descr, sizeof h->descr);
      seen |= 1;
    } else if (!strcmp(key, "fortran_order")) {
      h->fortran_order = accept_word(&c, "True");
      ok = h->fortran_order || accept_word(&c, "False");
      seen |= 2;
    } else if (!strcmp(key, "shape")) {
      ok = parse_shape(&c, &h->ndim, h->shape);
      seen |= 4;
    }
    if (!ok) return false;
    if (!accept(&c, ',')) {
      if (!accept(&c, '}')) return false;
      break;
    }
  }
  return seen == 7;
}

/* Reads the magic, version and header dict; returns the offset of the array data. `what` names the file in errors. */
static uint64_t read_npy_header(int fd, const char *what, const char *path, uint64_t file_size, npy_header_t *h) {
  uint8_t prefix[12];
  size_t got = pread_full(fd, prefix, sizeof prefix, 0, path);
  if (got < 10 || memcmp(prefix, "\x93NUMPY", 6))
    die(EXIT_USER, "%s %s is not a .npy file; save the array with numpy.save", what, path);
  uint64_t header_start, header_len;
  if (prefix[6] == 1) {
    header_start = 10;
    header_len = prefix[8] | (uint64_t)prefix[9] << 8;
  } else if ((prefix[6] == 2 || prefix[6] == 3) && got == 12) {
    header_start = 12;
    header_len = prefix[8] | (uint64_t)prefix[9] << 8 | (uint64_t)prefix[10] << 16 | (uint64_t)prefix[11] << 24;
  } else {
    die(EXIT_USER, "%s %s has unsupported .npy version %u.%u; save it with numpy.save", what, path,
        (unsigned)prefix[6], (unsigned)prefix[7]);
  }
  if (header_len > NPY_MAX_HEADER_BYTES || !range_fits(header_start, header_len, file_size))
    die(EXIT_USER, "%s %s is a truncated or damaged .npy file (bad header length); save it again", what, path);
  char *text = xmalloc(header_len);
  pread_full(fd, text, header_len, header_start, path);
  bool ok = parse_npy_header(text, header_len, h);
  free(text);
  if (!ok) die(EXIT_USER, "%s %s has an unreadable .npy header; save the array with numpy.save", what, path);
  return header_start + header_len;
}

/* Checks that the data after the header is exactly what the shape needs at `itemsize` bytes per element. */
static void check_npy_size(const char *what, const char *path, const npy_header_t *h, uint64_t data_bytes,
                           uint64_t itemsize) {
  uint64_t numel = shape_numel(h->ndim, h->shape);
  if (numel == UINT64_MAX || data_bytes != itemsize * numel)
    die(EXIT_USER, "%s %s holds %llu bytes of data but its shape needs %llu; the file is truncated or damaged", what,
        path, (unsigned long long)data_bytes, (unsigned long long)(itemsize * numel));
}

/* True if `shape` ends with the model's input shape after `lead` leading dimensions, each at least 1. */
static bool has_input_shape(const npy_header_t *h, int lead) {
  int ndim = masic_model.input_ndim;
  if (h->ndim != ndim + lead) return false;
  for (int i = 0; i < lead; i++)
    if (h->shape[i] < 1) return false;
  return !memcmp(h->shape + lead, masic_model.input_shape, (size_t)ndim * sizeof *h->shape);
}

/* Sets in->n_samples and in->sequence_length from the shape. One sample is shaped like the model's input or is a
 * sequence (S, *input_shape); with labels the file holds N of either, (N, *input_shape) or (N, S, *input_shape). */
static void match_input_shape(input_t *in, const npy_header_t *h, bool labelled) {
  int lead = labelled ? 1 : 0;
  for (int sequence = 0; sequence <= 1; sequence++) {
    if (has_input_shape(h, lead + sequence)) {
      in->n_samples = labelled ? h->shape[0] : 1;
      in->sequence_length = sequence ? h->shape[lead] : 0;
      return;
    }
  }
  int ndim = masic_model.input_ndim;
  const int64_t *want = masic_model.input_shape;
  char found[512], one[256], seq[256];
  format_shape(found, sizeof found, NULL, h->ndim, h->shape);
  if (labelled)
    die(EXIT_USER, "input %s has shape %s; with --labels expected %s (N >= 1 samples) or %s (N sequences of S >= 1)",
        in->path, found, format_shape(one, sizeof one, "N", ndim, want),
        format_shape(seq, sizeof seq, "N, S", ndim, want));
  die(EXIT_USER, "input %s has shape %s; expected %s (one sample) or %s (a sequence of S >= 1 samples)", in->path,
      found, format_shape(one, sizeof one, NULL, ndim, want), format_shape(seq, sizeof seq, "S", ndim, want));
}

static input_t open_input(const char *path, bool labelled) {
  uint64_t file_size;
  input_t in = {.path = path};
  in.fd = open_regular_file(path, "input", "pass an existing .npy file to --input", &file_size);
  npy_header_t h;
  in.data_offset = read_npy_header(in.fd, "input", path, file_size, &h);
  if (strcmp(h.descr, "<f4"))
    die(EXIT_USER, "input %s has dtype '%s'; expected '<f4' (little-endian float32): save x.astype(numpy.float32)",
        path, h.descr);
  if (h.fortran_order)
    die(EXIT_USER, "input %s is stored in Fortran order; save numpy.ascontiguousarray(x) instead", path);
  match_input_shape(&in, &h, labelled);
  in.sample_bytes = 4 * shape_numel(masic_model.input_ndim, masic_model.input_shape);
  check_npy_size("input", path, &h, file_size - in.data_offset, 4);
  return in;
}

/* Offset in the input file of the input of `step` (0-based) of `sample`. */
static uint64_t input_offset(const input_t *in, int64_t sample, int step) {
  uint64_t steps_stored = in->sequence_length ? (uint64_t)in->sequence_length : 1;
  uint64_t index = (uint64_t)sample * steps_stored + (in->sequence_length ? (uint64_t)step : 0);
  return in->data_offset + index * in->sample_bytes;
}

/* Reads labels.npy: int32 or int64, shape (n_samples,), every label a class of the model's output. */
static int64_t *read_labels(const char *path, int64_t n_samples, size_t n_classes) {
  uint64_t file_size;
  int fd = open_regular_file(path, "labels", "pass an existing .npy file to --labels", &file_size);
  npy_header_t h;
  uint64_t data_offset = read_npy_header(fd, "labels", path, file_size, &h);
  uint64_t itemsize = !strcmp(h.descr, "<i4") ? 4 : !strcmp(h.descr, "<i8") ? 8 : 0;
  if (!itemsize)
    die(EXIT_USER, "labels %s have dtype '%s'; expected '<i4' or '<i8': save y.astype(numpy.int64)", path, h.descr);
  if (h.ndim != 1 || h.shape[0] != n_samples) {
    char found[512];
    die(EXIT_USER, "labels %s have shape %s; expected (%lld,), one label per sample of the input", path,
        format_shape(found, sizeof found, NULL, h.ndim, h.shape), (long long)n_samples);
  }
  check_npy_size("labels", path, &h, file_size - data_offset, itemsize);
  size_t nbytes = (size_t)(itemsize * (uint64_t)n_samples);
  uint8_t *raw = xmalloc(nbytes);
  if (pread_full(fd, raw, nbytes, data_offset, path) < nbytes)
    die(EXIT_USER, "labels %s shrank while being read", path);
  close(fd);
  int64_t *labels = xmalloc((size_t)n_samples * sizeof *labels);
  for (int64_t i = 0; i < n_samples; i++) {
    int32_t narrow;
    if (itemsize == 4) {
      memcpy(&narrow, raw + 4 * i, 4);
      labels[i] = narrow;
    } else {
      memcpy(&labels[i], raw + 8 * i, 8);
    }
    if (labels[i] < 0 || (uint64_t)labels[i] >= n_classes)
      die(EXIT_USER, "labels %s: sample %lld has label %lld, outside [0, %zu) for a model with %zu outputs", path,
          (long long)i, (long long)labels[i], n_classes, n_classes);
  }
  free(raw);
  return labels;
}

/* ---- the timestep loop ---- */

/* The rule in force: a command-line flag, else the calibrated rule written into the executable, else the compiled
 * one; --min-timesteps replaces the minimum of whichever applies. A model whose state lives within a block cannot
 * run more steps than one block: the next block would start from the initial state again. */
static schedule_t make_schedule(const options_t *opt, const input_t *in) {
  schedule_t s = {.max_steps = masic_model.timesteps, .exit = masic_model.exit_rule, .exit_source = "compiled"};
  if (calibrated_exit_rule(&s.exit)) s.exit_source = "calibrated";
  if (opt->exit_flag) {
    s.exit = opt->exit_rule;
    s.exit.min_timesteps = 1;
    s.exit_source = "command_line";
  }
  if (opt->min_timesteps >= 0) {
    s.exit.min_timesteps = opt->min_timesteps;
    s.exit_source = "command_line";
  }
  if (in->sequence_length) s.max_steps = in->sequence_length > INT_MAX ? INT_MAX : (int)in->sequence_length;
  if (opt->timesteps) {
    if (in->sequence_length && opt->timesteps > in->sequence_length)
      die(EXIT_USER, "--timesteps %d exceeds the %lld samples of the input sequence %s", opt->timesteps,
          (long long)in->sequence_length, in->path);
    s.max_steps = opt->timesteps;
  }
  if (s.max_steps > masic_model.block && state_within_block()) {
    if (opt->timesteps)
      die(EXIT_USER, "--timesteps %d exceeds the %d timesteps this model keeps neuron state for (one block of a "
          "layer-major plan); recompile with --timesteps %d", s.max_steps, masic_model.block, s.max_steps);
    die(EXIT_USER, "input sequence %s has %d timesteps, more than the %d this model keeps neuron state for (one block "
        "of a layer-major plan); pass --timesteps %d or fewer, or recompile with --timesteps %d", in->path,
        s.max_steps, masic_model.block, masic_model.block, s.max_steps);
  }
  return s;
}

/* exp(x) for x <= 0 from +, -, *, floor and ldexp alone, so that x86_64, aarch64 and numpy (masic/early_exit.py)
 * compute bit-identical softmax confidences; libm's exp may differ between builds by an ulp, which could flip an
 * exit decision. x = k ln2 + r with |r| <= ln2/2, then a Taylor polynomial of degree 13 (error below 1e-17).
 * Each operation must be rounded on its own: GCC fuses no multiply-add in ISO C mode (-std=c11, as masic builds),
 * and clang none under this pragma, which GCC would reject. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
static double exp_nonpositive(double x) {
  static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static const double log2e = 1.44269504088896338700e+00;
  static const double taylor[14] = {1.0,          1.0,           1.0 / 2,        1.0 / 6,         1.0 / 24,
                                    1.0 / 120,    1.0 / 720,     1.0 / 5040,     1.0 / 40320,     1.0 / 362880,
                                    1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0};
  if (!(x >= -708.0)) return x != x ? x : 0.0; /* NaN stays NaN; exp(-708) is negligible next to the top term 1 */
  double k = floor(x * log2e + 0.5);
  double r = x - k * ln2_hi;
  r = r - k * ln2_lo;
  double p = taylor[13];
  for (int i = 12; i >= 0; i--) p = p * r + taylor[i];
  return ldexp(p, (int)k);
}

/* The first index of the largest element (NaN never wins, unless at index 0). */
static size_t argmax(const double *v, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

/* max(softmax(v)) = 1 / sum(exp(v - v[best])), summed in index order: the top term is exp(0) = 1, and every
 * exponent is <= 0, so nothing overflows. */
static double max_softmax(const double *v, size_t n, size_t best) {
  double total = 0;
  for (size_t i = 0; i < n; i++) total += exp_nonpositive(v[i] - v[best]);
  return 1.0 / total;
}

/* v[best] minus the largest other element (+inf for a single output). */
static double top_margin(const double *v, size_t n, size_t best) {
  double second = -INFINITY;
  for (size_t i = 0; i < n; i++)
    if (i != best && v[i] > second) second = v[i];
  return v[best] - second;
}

/* The score the rule compares with its threshold; `run` counts the consecutive steps with argmax `best`. */
static double exit_score(int rule, const double *acc, size_t n, size_t best, int run) {
  switch (rule) {
  case MASIC_EXIT_SOFTMAX_CONFIDENCE: return max_softmax(acc, n, best);
  case MASIC_EXIT_MARGIN: return top_margin(acc, n, best);
  case MASIC_EXIT_STABLE_ARGMAX: return run;
  default: return -INFINITY;
  }
}

static run_buffers_t alloc_run_buffers(int max_steps, bool keep_history) {
  size_t out_numel = (size_t)shape_numel(masic_model.output_ndim, masic_model.output_shape);
  return (run_buffers_t){
      .out_numel = out_numel,
      .acc = xmalloc(out_numel * sizeof(double)),
      .history = keep_history ? xmalloc((size_t)max_steps * out_numel * sizeof(float)) : NULL,
      .scratch = keep_history ? NULL : xmalloc(out_numel * sizeof(float)),
  };
}

static void free_run_buffers(run_buffers_t *b) {
  free(b->acc);
  free(b->history);
  free(b->scratch);
}

/* The exit rule's view of a sample so far. */
typedef struct {
  int steps;   /* steps accumulated */
  size_t best; /* argmax of acc */
  int run;     /* consecutive steps, ending now, with argmax `best` */
} exit_state_t;

/* Adds one step's output to acc and returns true if the rule says to stop after it. */
static bool accumulate_step(const schedule_t *s, run_buffers_t *b, exit_state_t *e, const float *out) {
  size_t n = b->out_numel;
  for (size_t k = 0; k < n; k++) b->acc[k] += out[k];
  e->steps++;
  size_t previous = e->best;
  e->best = argmax(b->acc, n);
  e->run = e->steps > 1 && e->best == previous ? e->run + 1 : 1;
  return s->exit.rule != MASIC_EXIT_NONE && e->steps >= s->exit.min_timesteps &&
         exit_score(s->exit.rule, b->acc, n, e->best, e->run) >= s->exit.threshold;
}

/* Copies the inputs of steps first..first+n-1 into the block's input slots. They are copied anew for every block:
 * the arena planner may reuse an input slot once the kernels that read it have run. */
static void read_block_inputs(const input_t *in, int64_t sample, int first, int n, uint8_t *arena) {
  for (int t = 0; t < n; t++) {
    if (pread_full(in->fd, arena + masic_model.input_offsets[t], in->sample_bytes, input_offset(in, sample, first + t),
                   in->path) < in->sample_bytes)
      die(EXIT_USER, "input %s shrank while the model was running", in->path);
  }
}

/* Runs steps first..first+n-1 as one block. Its loads may begin while its inputs are read: the previous block's
 * outputs have been copied out, so nothing of that block is live any more. */
static void run_block(const input_t *in, int64_t sample, uint8_t *arena, int first, int n, int max_steps) {
  stream_begin_block();
  read_block_inputs(in, sample, first, n, arena);
  int status = masic_model_block(arena, n);
  stream_end_block();
  if (status && n == 1) die(EXIT_STEP, "timestep %d of %d failed with status %d", first + 1, max_steps, status);
  if (status)
    die(EXIT_STEP, "timesteps %d to %d of %d (one block) failed with status %d", first + 1, first + n, max_steps,
        status);
}

/* Runs one sample from the initial neuron state until the last step or until the exit rule holds. The rule is
 * applied after each step, exactly as if steps ran one at a time, but it can only stop the model at the end of a
 * block: the steps of the block after the one that fired were computed in vain and are discarded (not accumulated,
 * not in --output), so up to block - 1 extra steps may be computed. */
static sample_result_t run_sample(const schedule_t *s, const input_t *in, int64_t sample, const weights_t *weights,
                                  uint8_t *arena, run_buffers_t *b) {
  weight_io.state += load_segments(weights->fd, weights->path, arena, masic_model.state_init, masic_model.n_state_init);
  size_t n = b->out_numel;
  for (size_t k = 0; k < n; k++) b->acc[k] = 0;
  exit_state_t e = {0};
  int computed = 0;
  bool stop = false;
  while (!stop && computed < s->max_steps) {
    int first = computed;
    int steps = s->max_steps - first < masic_model.block ? s->max_steps - first : masic_model.block;
    run_block(in, sample, arena, first, steps, s->max_steps);
    computed += steps;
    for (int t = 0; t < steps && !stop; t++) {
      /* Copied out rather than cast, so an output offset that is not float-aligned cannot fault. */
      float *out = b->history ? b->history + (size_t)(first + t) * n : b->scratch;
      memcpy(out, arena + masic_model.output_offsets[t], n * sizeof(float));
      stop = accumulate_step(s, b, &e, out);
    }
  }
  return (sample_result_t){.steps_run = e.steps, .steps_computed = computed, .prediction = e.best};
}

/* ---- results ---- */

static FILE *open_output(const char *option, const char *path) {
  FILE *f = fopen(path, "wb");
  if (!f) die(EXIT_USER, "cannot create output file %s: %s; pass a writable %s path", path, strerror(errno), option);
  return f;
}

static void write_or_die(FILE *f, const char *path, const void *data, size_t nbytes) {
  if (fwrite(data, 1, nbytes, f) != nbytes) die(EXIT_SYSTEM, "cannot write output file %s: %s", path, strerror(errno));
}

static void close_output(FILE *f, const char *path) {
  if (fclose(f) != 0) die(EXIT_SYSTEM, "cannot write output file %s: %s", path, strerror(errno));
}

/* A version 1.0 .npy header: 10-byte preamble, then the dict padded with spaces and ended by '\n' so that the data
 * starts 64-aligned. */
static void write_npy_header(FILE *f, const char *path, const char *descr, int ndim, const int64_t *shape) {
  char dims[512], header[640];
  format_shape(dims, sizeof dims, NULL, ndim, shape);
  int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, dims);
  while ((10 + len + 1) % 64) header[len++] = ' ';
  header[len++] = '\n';
  uint8_t preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(len & 0xff), (uint8_t)(len >> 8)};
  write_or_die(f, path, preamble, sizeof preamble);
  write_or_die(f, path, header, (size_t)len);
}

/* The shape of --output: (n_samples if lead, steps, *output shape). */
static void write_outputs_header(FILE *f, const char *path, bool lead, int64_t n_samples, int steps) {
  int64_t shape[MASIC_MAX_NDIM + 2];
  int ndim = 0;
  if (lead) shape[ndim++] = n_samples;
  shape[ndim++] = steps;
  memcpy(shape + ndim, masic_model.output_shape, (size_t)masic_model.output_ndim * sizeof *shape);
  write_npy_header(f, path, "<f4", ndim + masic_model.output_ndim, shape);
}

static void print_json_string(const char *s) {
  putchar('"');
  for (; s && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch < 0x20) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

/* The rule's JSON keys; exit_params uses the manifest's names, and %.17g gives back the exact double. */
static void print_exit_json(const masic_exit_rule_t *r, const char *source) {
  printf(", \"exit_rule\": \"%s\", \"exit_params\": {", exit_rule_names[r->rule]);
  if (r->rule != MASIC_EXIT_NONE)
    printf("\"%s\": %.17g, \"min_timesteps\": %d", exit_threshold_names[r->rule], r->threshold, r->min_timesteps);
  printf("}, \"exit_source\": \"%s\"", source);
}

/* The peak resident memory of this program. getrusage's ru_maxrss is not it: Linux carries the high-water mark over
 * exec, so a program started by vfork or posix_spawn (Python's subprocess) reports at least its parent's peak. The
 * VmHWM line of /proc/self/status belongs to this image alone; ru_maxrss is the fallback where it is missing. */
static long long peak_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  long long kib = -1;
  if (f) {
    char line[256];
    while (kib < 0 && fgets(line, sizeof line, f))
      if (sscanf(line, "VmHWM: %lld kB", &kib) != 1) kib = -1;
    fclose(f);
  }
  if (kib < 0) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    kib = usage.ru_maxrss;
  }
  return kib * 1024;
}

/* weight_bytes_read counts resident and streamed weights (not the CRC pass, which weight_bytes_checked counts);
 * state_bytes_read counts the initial neuron state read from weights.bin, whether before each sample or by the
 * loading thread; load_wait_s is the time the compute waited for loads (weights or state). */
static void print_resources_json(double load_s, int threads) {
  printf(", \"block\": %d, \"load_s\": %.6f, \"load_wait_s\": %.6f", masic_model.block, load_s,
         weight_io.load_wait_s);
  printf(", \"weight_bytes_checked\": %llu, \"weight_bytes_read\": %llu", (unsigned long long)weight_io.checked,
         (unsigned long long)(weight_io.resident + weight_io.streamed));
  printf(", \"state_bytes_read\": %llu", (unsigned long long)weight_io.state);
  printf(", \"arena_bytes\": %llu, \"weights_bytes\": %llu", (unsigned long long)masic_model.arena_bytes,
         (unsigned long long)masic_model.weights_bytes);
  printf(", \"peak_rss_bytes\": %lld, \"threads\": %d}\n", peak_rss_bytes(), threads);
}

static void print_report(const schedule_t *s, const sample_result_t *r, const run_buffers_t *b, double wall_s,
                         double load_s, int threads) {
  double confidence = max_softmax(b->acc, b->out_numel, r->prediction);
  printf("prediction: %zu\n", r->prediction);
  printf("{\"model\": ");
  print_json_string(masic_model.name);
  printf(", \"prediction\": %zu, \"timesteps\": %d, \"timesteps_computed\": %d, \"max_timesteps\": %d", r->prediction,
         r->steps_run, r->steps_computed, s->max_steps);
  printf(", \"exited_early\": %s", r->steps_run < s->max_steps ? "true" : "false");
  print_exit_json(&s->exit, s->exit_source);
  /* JSON has no NaN: a model producing NaN reports a null confidence. */
  if (isfinite(confidence))
    printf(", \"confidence\": %.6f", confidence);
  else
    printf(", \"confidence\": null");
  printf(", \"wall_s\": %.6f", wall_s);
  print_resources_json(load_s, threads);
}

static void describe_exit_rule(char *buf, size_t cap, const masic_exit_rule_t *r) {
  switch (r->rule) {
  case MASIC_EXIT_SOFTMAX_CONFIDENCE:
    snprintf(buf, cap, "softmax confidence >= %.6g from step %d", r->threshold, r->min_timesteps);
    break;
  case MASIC_EXIT_MARGIN: snprintf(buf, cap, "margin >= %.6g from step %d", r->threshold, r->min_timesteps); break;
  case MASIC_EXIT_STABLE_ARGMAX:
    snprintf(buf, cap, "same argmax for %.0f step%s from step %d", r->threshold, r->threshold == 1 ? "" : "s",
             r->min_timesteps);
    break;
  default: snprintf(buf, cap, "none"); break;
  }
}

static const char histogram_bar[] = "##################################################"; /* the longest bar */

/* What a labelled run adds up over its samples. */
typedef struct {
  int64_t n_samples;
  int64_t correct;
  int64_t steps_computed;
  int64_t *histogram; /* histogram[t - 1] counts the samples that used t steps */
} batch_totals_t;

/* Accuracy, timesteps used (mean and histogram, one row per step count from the fewest to the most used), time per
 * sample; then everything as one JSON line, with totals over the samples and their means per sample. */
static void print_batch_report(const schedule_t *s, const batch_totals_t *totals, double wall_s, double load_s,
                               int threads) {
  int64_t n_samples = totals->n_samples, correct = totals->correct, total_steps = 0, peak = 0;
  const int64_t *histogram = totals->histogram;
  int fewest = s->max_steps, most = 1;
  for (int t = 1; t <= s->max_steps; t++) {
    int64_t count = histogram[t - 1];
    total_steps += count * t;
    peak = count > peak ? count : peak;
    if (count && t < fewest) fewest = t;
    if (count) most = t;
  }
  double n = (double)n_samples, accuracy = (double)correct / n, mean_steps = (double)total_steps / n;
  char rule[160];
  describe_exit_rule(rule, sizeof rule, &s->exit);
  printf("accuracy: %.2f%% (%lld of %lld samples)\n", 100 * accuracy, (long long)correct, (long long)n_samples);
  double mean_computed = (double)totals->steps_computed / n;
  printf("timesteps: mean %.2f of %d (%.1f%% fewer); exit rule: %s (%s)", mean_steps, s->max_steps,
         100 * (1 - mean_steps / s->max_steps), rule, s->exit_source);
  if (masic_model.block > 1) printf("; mean %.2f computed in blocks of %d", mean_computed, masic_model.block);
  printf("\n");
  printf("timesteps used:\n");
  for (int t = fewest; t <= most; t++) {
    int64_t count = histogram[t - 1];
    int bar = (int)((count * (int64_t)(sizeof histogram_bar - 1) + peak - 1) / peak);
    printf("  %6d %8lld  %.*s\n", t, (long long)count, bar, histogram_bar);
  }
  printf("time per sample: %.6f ms (%.6f s for %lld samples)\n", 1e3 * wall_s / n, wall_s, (long long)n_samples);
  printf("{\"model\": ");
  print_json_string(masic_model.name);
  printf(", \"samples\": %lld, \"correct\": %lld, \"accuracy\": %.6f, \"mean_timesteps\": %.6f", (long long)n_samples,
         (long long)correct, accuracy, mean_steps);
  printf(", \"max_timesteps\": %d, \"timesteps_histogram\": [", s->max_steps);
  for (int t = 1; t <= s->max_steps; t++) printf(t > 1 ? ", %lld" : "%lld", (long long)histogram[t - 1]);
  printf("], \"timesteps_computed\": %lld, \"mean_timesteps_computed\": %.6f", (long long)totals->steps_computed,
         mean_computed);
  print_exit_json(&s->exit, s->exit_source);
  printf(", \"wall_s\": %.6f, \"wall_s_per_sample\": %.9f", wall_s, wall_s / n);
  /* Resident weights are read once per run, streamed ones once per block: only the latter scale with the samples. */
  printf(", \"load_wait_s_per_sample\": %.9f, \"streamed_bytes_per_sample\": %.1f", weight_io.load_wait_s / n,
         (double)weight_io.streamed / n);
  print_resources_json(load_s, threads);
}

/* Writes one sample's outputs to --output: the steps run, then NaN up to the schedule's last step. */
static void write_sample_outputs(FILE *f, const char *path, const run_buffers_t *b, int steps_run, int max_steps) {
  write_or_die(f, path, b->history, (size_t)steps_run * b->out_numel * sizeof(float));
  float nan = NAN;
  for (size_t k = (size_t)steps_run * b->out_numel; k < (size_t)max_steps * b->out_numel; k++)
    write_or_die(f, path, &nan, sizeof nan);
}

static run_files_t open_run_files(const options_t *opt, const input_t *in) {
  size_t n_classes = (size_t)shape_numel(masic_model.output_ndim, masic_model.output_shape);
  return (run_files_t){
      .labels = opt->labels_path ? read_labels(opt->labels_path, in->n_samples, n_classes) : NULL,
      .output = opt->output_path ? open_output("--output", opt->output_path) : NULL,
      .predictions = opt->predictions_path ? open_output("--predictions", opt->predictions_path) : NULL,
  };
}

/* Runs every sample of a labelled input, writes --output and --predictions, and prints the batch report. */
static void run_batch(const options_t *opt, const schedule_t *s, const input_t *in, const run_files_t *files,
                      const weights_t *weights, uint8_t *arena, double load_s, int threads) {
  FILE *output = files->output, *predictions = files->predictions;
  if (output) write_outputs_header(output, opt->output_path, true, in->n_samples, s->max_steps);
  int32_t *rows = predictions ? xmalloc((size_t)in->n_samples * 2 * sizeof *rows) : NULL;
  batch_totals_t totals = {.n_samples = in->n_samples, .histogram = xmalloc((size_t)s->max_steps * sizeof(int64_t))};
  for (int t = 0; t < s->max_steps; t++) totals.histogram[t] = 0;
  run_buffers_t buffers = alloc_run_buffers(s->max_steps, output != NULL);
  double wall_s = 0;
  for (int64_t i = 0; i < in->n_samples; i++) {
    double start = now_s();
    sample_result_t r = run_sample(s, in, i, weights, arena, &buffers);
    wall_s += now_s() - start;
    totals.correct += (int64_t)r.prediction == files->labels[i];
    totals.steps_computed += r.steps_computed;
    totals.histogram[r.steps_run - 1]++;
    if (output) write_sample_outputs(output, opt->output_path, &buffers, r.steps_run, s->max_steps);
    if (rows) {
      rows[2 * i] = (int32_t)r.prediction;
      rows[2 * i + 1] = r.steps_run;
    }
  }
  if (output) close_output(output, opt->output_path);
  if (predictions) {
    int64_t shape[2] = {in->n_samples, 2};
    write_npy_header(predictions, opt->predictions_path, "<i4", 2, shape);
    write_or_die(predictions, opt->predictions_path, rows, (size_t)in->n_samples * 2 * sizeof *rows);
    close_output(predictions, opt->predictions_path);
  }
  print_batch_report(s, &totals, wall_s, load_s, threads);
  free_run_buffers(&buffers);
  free(totals.histogram);
  free(rows);
}

/* Runs the one sample of an unlabelled input, writes --output and prints the single-sample report. */
static void run_single(const options_t *opt, const schedule_t *s, const input_t *in, const run_files_t *files,
                       const weights_t *weights, uint8_t *arena, double load_s, int threads) {
  FILE *output = files->output;
  run_buffers_t buffers = alloc_run_buffers(s->max_steps, output != NULL);
  double start = now_s();
  sample_result_t r = run_sample(s, in, 0, weights, arena, &buffers);
  double wall_s = now_s() - start;
  if (output) {
    write_outputs_header(output, opt->output_path, false, 1, r.steps_run);
    write_sample_outputs(output, opt->output_path, &buffers, r.steps_run, r.steps_run);
    close_output(output, opt->output_path);
  }
  print_report(s, &r, &buffers, wall_s, load_s, threads);
  free_run_buffers(&buffers);
}

int main(int argc, char **argv) {
  options_t opt;
  parse_args(argc, argv, &opt);
  check_model();
  input_t in = open_input(opt.input_path, opt.labels_path != NULL);
  schedule_t schedule = make_schedule(&opt, &in);
  run_files_t files = open_run_files(&opt, &in);

  double load_start = now_s();
  crc32_init();
  char *default_path = opt.weights_path ? NULL : default_weights_path();
  weights_t weights;
  uint8_t *arena = load_arena(default_path ? default_path : opt.weights_path, &weights);
  double load_s = now_s() - load_start;

  if (masic_parallel_init(opt.threads) != 0)
    die(EXIT_SYSTEM, "cannot start the worker threads (--threads %d)", opt.threads);
  int threads = masic_parallel_num_threads();
  stream_start(&weights, arena);
  if (files.labels)
    run_batch(&opt, &schedule, &in, &files, &weights, arena, load_s, threads);
  else
    run_single(&opt, &schedule, &in, &files, &weights, arena, load_s, threads);
  stream_stop();
  masic_parallel_shutdown();

  close(in.fd);
  close(weights.fd);
  free(files.labels);
  free(arena);
  free(default_path);
  return 0;
}

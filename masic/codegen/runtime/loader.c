/* loader.c: the entry point of every executable masic builds.
 *
 * Linked with the generated model.c, the kernel objects and parallel.c into one static program that runs from a
 * folder holding it, weights.bin and manifest.json. It checks weights.bin against the build, fills the one arena,
 * presents a .npy input for a number of timesteps, applies the early-exit rule and reports one line of JSON.
 *
 * Exit codes: 0 success, 1 system failure (out of memory, I/O error, inconsistent build), 2 a problem the user can
 * fix (command line, input file, weights file), 3 a kernel reported failure during a step. */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
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

#define IO_CHUNK_BYTES ((size_t)1 << 20)
#define MIN_ARENA_ALIGNMENT 64
#define NPY_MAX_NDIM 32               /* numpy's own limit on dimensions */
#define NPY_MAX_HEADER_BYTES (1 << 16) /* far above what numpy writes; bounds a hostile header */

static const char usage_text[] =
    "usage: model --input x.npy [--output y.npy] [--timesteps N] [--threads N]\n"
    "             [--exit-confidence X] [--min-timesteps N] [--weights PATH] [--help]\n"
    "\n"
    "Runs the compiled spiking network on one input and prints its prediction and a JSON line of statistics.\n"
    "\n"
    "  --input x.npy          float32 array shaped like one sample (presented at every timestep)\n"
    "                         or (S, *sample shape), a sequence presenting one sample per timestep\n"
    "  --output y.npy         write the output of every timestep run, shape (timesteps, *output shape)\n"
    "  --timesteps N          timesteps to run (default: sequence length, else the model's default)\n"
    "  --threads N            worker threads, 0 = one per core (default 0)\n"
    "  --exit-confidence X    stop once the softmax of the summed outputs reaches X (0 < X <= 1)\n"
    "  --min-timesteps N      never stop early before N timesteps\n"
    "  --weights PATH         weights file (default: weights.bin beside the executable)\n";

typedef struct {
  const char *input_path;
  const char *output_path;
  const char *weights_path; /* NULL: weights.bin beside the executable */
  int timesteps;            /* 0: not given */
  int threads;
  double exit_confidence; /* 0: not given */
  int min_timesteps;      /* -1: not given */
} options_t;

/* The input file stays open and each step's sample is read straight into the arena: the arena planner may reuse
 * the input region once the first kernel has read it, so the sample must be copied in again at every step. */
typedef struct {
  const char *path;
  int fd;
  uint64_t data_offset;
  uint64_t sample_bytes;
  int64_t sequence_length; /* 0: a single sample presented at every step */
} input_t;

typedef struct {
  int max_steps;
  int exit_rule;
  double exit_confidence;
  int min_steps;
} schedule_t;

typedef struct {
  int steps_run;
  double wall_s;
  double *sum;    /* summed output of the steps run */
  float *history; /* output of every step run, only kept for --output */
} run_result_t;

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

enum option_id { OPT_INPUT, OPT_OUTPUT, OPT_WEIGHTS, OPT_TIMESTEPS, OPT_THREADS, OPT_EXIT_CONFIDENCE,
                 OPT_MIN_TIMESTEPS, N_OPTIONS };
static const char *const option_names[N_OPTIONS] = {
    "--input", "--output", "--weights", "--timesteps", "--threads", "--exit-confidence", "--min-timesteps"};

static int parse_int(const char *option, const char *text, int min, int max) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno || end == text || *end || v < min || v > max)
    die(EXIT_USER, "%s expects an integer from %d to %d, got '%s'", option, min, max, text);
  return (int)v;
}

static double parse_confidence(const char *option, const char *text) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || *end || !(v > 0.0 && v <= 1.0))
    die(EXIT_USER, "%s expects a number with 0 < X <= 1, got '%s'", option, text);
  return v;
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
    const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!value) die(EXIT_USER, "%s needs a value; run model --help for usage", option_names[id]);

    switch ((enum option_id)id) {
    case OPT_INPUT: opt->input_path = value; break;
    case OPT_OUTPUT: opt->output_path = value; break;
    case OPT_WEIGHTS: opt->weights_path = value; break;
    case OPT_TIMESTEPS: opt->timesteps = parse_int(option_names[id], value, 1, INT_MAX); break;
    case OPT_THREADS: opt->threads = parse_int(option_names[id], value, 0, 4096); break;
    case OPT_EXIT_CONFIDENCE: opt->exit_confidence = parse_confidence(option_names[id], value); break;
    case OPT_MIN_TIMESTEPS: opt->min_timesteps = parse_int(option_names[id], value, 0, INT_MAX); break;
    case N_OPTIONS: break;
    }
  }
  if (!opt->input_path) die(EXIT_USER, "missing --input x.npy; run model --help for usage");
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

/* A compiler bug must not turn into an out-of-bounds write, so the plan is checked before it is trusted. */
static void check_model(void) {
  const masic_model_t *m = &masic_model;
  uint64_t in_numel = shape_numel(m->input_ndim, m->input_shape);
  uint64_t out_numel = shape_numel(m->output_ndim, m->output_shape);
  const char *problem = NULL;
  if (m->input_ndim < 0 || m->input_ndim > MASIC_MAX_NDIM || m->output_ndim < 0 || m->output_ndim > MASIC_MAX_NDIM)
    problem = "input or output has an invalid number of dimensions";
  else if (in_numel == UINT64_MAX || !range_fits(m->input_offset, 4 * in_numel, m->arena_bytes))
    problem = "input lies outside the arena";
  else if (out_numel == 0 || out_numel == UINT64_MAX || !range_fits(m->output_offset, 4 * out_numel, m->arena_bytes))
    problem = "output is empty or lies outside the arena";
  else if (m->arena_alignment & (m->arena_alignment - 1))
    problem = "arena alignment is not a power of two";
  else if (m->timesteps < 1)
    problem = "default number of timesteps is below 1";
  else if (m->exit_rule != MASIC_EXIT_NONE && m->exit_rule != MASIC_EXIT_SOFTMAX_CONFIDENCE)
    problem = "unknown exit rule";
  else if (m->exit_rule == MASIC_EXIT_SOFTMAX_CONFIDENCE && !(m->exit_confidence > 0 && m->exit_confidence <= 1))
    problem = "exit confidence outside (0, 1]";
  if (problem) die(EXIT_SYSTEM, "inconsistent build: %s; recompile the model", problem);
  check_segments("resident", m->resident, m->n_resident);
  check_segments("state", m->state_init, m->n_state_init);
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

/* The size and CRC are checked before any byte is used, so a stale or damaged copy cannot produce silent garbage. */
static void check_weights(int fd, const char *path, uint64_t size) {
  uint64_t expected = masic_model.weights_bytes;
  if (size < expected)
    die(EXIT_USER, "weights file %s is truncated (%llu of %llu bytes); %s", path, (unsigned long long)size,
        (unsigned long long)expected, weights_remedy);
  if (size > expected)
    die(EXIT_USER, "weights file %s is too large (%llu bytes, expected %llu); it belongs to another build, %s", path,
        (unsigned long long)size, (unsigned long long)expected, weights_remedy);
  uint8_t *chunk = xmalloc(IO_CHUNK_BYTES);
  uint32_t crc = 0;
  for (uint64_t offset = 0; offset < size;) {
    size_t want = size - offset < IO_CHUNK_BYTES ? (size_t)(size - offset) : IO_CHUNK_BYTES;
    size_t got = pread_full(fd, chunk, want, offset, path);
    if (got < want) die(EXIT_USER, "weights file %s shrank while being read; %s", path, weights_remedy);
    crc = crc32_update(crc, chunk, got);
    offset += got;
  }
  free(chunk);
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

static void load_segments(int fd, const char *path, uint8_t *arena, const masic_segment_t *segs, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    if (pread_full(fd, arena + segs[i].arena_offset, segs[i].nbytes, segs[i].file_offset, path) < segs[i].nbytes)
      die(EXIT_USER, "weights file %s shrank while being read; %s", path, weights_remedy);
  }
}

/* Checks weights.bin and returns the arena filled with resident weights and initial state. A run presents a
 * single sample, so the initial state is loaded once. */
static uint8_t *load_arena(const char *weights_path) {
  uint64_t size;
  int fd = open_regular_file(weights_path, "weights file", weights_remedy, &size);
  check_weights(fd, weights_path, size);
  uint8_t *arena = alloc_arena();
  load_segments(fd, weights_path, arena, masic_model.resident, masic_model.n_resident);
  load_segments(fd, weights_path, arena, masic_model.state_init, masic_model.n_state_init);
  close(fd);
  return arena;
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

/* Reads the magic, version and header dict; returns the offset of the array data. */
static uint64_t read_npy_header(int fd, const char *path, uint64_t file_size, npy_header_t *h) {
  uint8_t prefix[12];
  size_t got = pread_full(fd, prefix, sizeof prefix, 0, path);
  if (got < 10 || memcmp(prefix, "\x93NUMPY", 6))
    die(EXIT_USER, "input %s is not a .npy file; save the array with numpy.save", path);
  uint64_t header_start, header_len;
  if (prefix[6] == 1) {
    header_start = 10;
    header_len = prefix[8] | (uint64_t)prefix[9] << 8;
  } else if ((prefix[6] == 2 || prefix[6] == 3) && got == 12) {
    header_start = 12;
    header_len = prefix[8] | (uint64_t)prefix[9] << 8 | (uint64_t)prefix[10] << 16 | (uint64_t)prefix[11] << 24;
  } else {
    die(EXIT_USER, "input %s has unsupported .npy version %u.%u; save it with numpy.save", path,
        (unsigned)prefix[6], (unsigned)prefix[7]);
  }
  if (header_len > NPY_MAX_HEADER_BYTES || !range_fits(header_start, header_len, file_size))
    die(EXIT_USER, "input %s is a truncated or damaged .npy file (bad header length); save it again", path);
  char *text = xmalloc(header_len);
  pread_full(fd, text, header_len, header_start, path);
  bool ok = parse_npy_header(text, header_len, h);
  free(text);
  if (!ok) die(EXIT_USER, "input %s has an unreadable .npy header; save the array with numpy.save", path);
  return header_start + header_len;
}

/* Accepts one sample shaped like the model's input, or a sequence (S, *input_shape); returns S, or 0 for one
 * sample. */
static int64_t match_input_shape(const char *path, const npy_header_t *h) {
  int ndim = masic_model.input_ndim;
  const int64_t *want = masic_model.input_shape;
  if (h->ndim == ndim && !memcmp(h->shape, want, (size_t)ndim * sizeof *want)) return 0;
  if (h->ndim == ndim + 1 && h->shape[0] >= 1 && !memcmp(h->shape + 1, want, (size_t)ndim * sizeof *want))
    return h->shape[0];
  char found[512], one[256], seq[256];
  die(EXIT_USER, "input %s has shape %s; expected %s (one sample) or %s (a sequence of S >= 1 samples)", path,
      format_shape(found, sizeof found, NULL, h->ndim, h->shape), format_shape(one, sizeof one, NULL, ndim, want),
      format_shape(seq, sizeof seq, "S", ndim, want));
}

static input_t open_input(const char *path) {
  uint64_t file_size;
  input_t in = {.path = path};
  in.fd = open_regular_file(path, "input", "pass an existing .npy file to --input", &file_size);
  npy_header_t h;
  in.data_offset = read_npy_header(in.fd, path, file_size, &h);
  if (strcmp(h.descr, "<f4"))
    die(EXIT_USER, "input %s has dtype '%s'; expected '<f4' (little-endian float32): save x.astype(numpy.float32)",
        path, h.descr);
  if (h.fortran_order)
    die(EXIT_USER, "input %s is stored in Fortran order; save numpy.ascontiguousarray(x) instead", path);
  in.sequence_length = match_input_shape(path, &h);
  in.sample_bytes = 4 * shape_numel(masic_model.input_ndim, masic_model.input_shape);
  uint64_t numel = shape_numel(h.ndim, h.shape);
  uint64_t data_bytes = file_size - in.data_offset;
  if (numel == UINT64_MAX || data_bytes != 4 * numel)
    die(EXIT_USER, "input %s holds %llu bytes of data but its shape needs %llu; the file is truncated or damaged",
        path, (unsigned long long)data_bytes, (unsigned long long)(4 * numel));
  return in;
}

/* ---- the timestep loop ---- */

static schedule_t make_schedule(const options_t *opt, const input_t *in) {
  schedule_t s = {
      .max_steps = masic_model.timesteps,
      .exit_rule = masic_model.exit_rule,
      .exit_confidence = masic_model.exit_confidence,
      .min_steps = masic_model.exit_min_timesteps,
  };
  if (in->sequence_length) s.max_steps = in->sequence_length > INT_MAX ? INT_MAX : (int)in->sequence_length;
  if (opt->timesteps) {
    if (in->sequence_length && opt->timesteps > in->sequence_length)
      die(EXIT_USER, "--timesteps %d exceeds the %lld samples of the input sequence %s", opt->timesteps,
          (long long)in->sequence_length, in->path);
    s.max_steps = opt->timesteps;
  }
  if (opt->exit_confidence > 0) {
    s.exit_rule = MASIC_EXIT_SOFTMAX_CONFIDENCE;
    s.exit_confidence = opt->exit_confidence;
  }
  if (opt->min_timesteps >= 0) s.min_steps = opt->min_timesteps;
  return s;
}

/* max(softmax(v)) = 1 / sum(exp(v - max(v))): the maximum's own term is exp(0), and shifting by the maximum keeps
 * every exponent <= 0 so nothing overflows. */
static double max_softmax(const double *v, size_t n) {
  double top = v[0];
  for (size_t i = 1; i < n; i++) top = v[i] > top ? v[i] : top;
  double total = 0;
  for (size_t i = 0; i < n; i++) total += exp(v[i] - top);
  return 1.0 / total;
}

static size_t argmax(const double *v, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

static void run_steps(const schedule_t *s, const input_t *in, uint8_t *arena, bool keep_history, run_result_t *r) {
  size_t out_numel = (size_t)shape_numel(masic_model.output_ndim, masic_model.output_shape);
  r->sum = xmalloc(out_numel * sizeof *r->sum);
  for (size_t k = 0; k < out_numel; k++) r->sum[k] = 0;
  r->history = keep_history ? xmalloc((size_t)s->max_steps * out_numel * sizeof(float)) : NULL;
  float *scratch = keep_history ? NULL : xmalloc(out_numel * sizeof(float));

  double start = now_s();
  int t = 0;
  while (t < s->max_steps) {
    uint64_t sample = in->sequence_length ? (uint64_t)t : 0;
    if (pread_full(in->fd, arena + masic_model.input_offset, in->sample_bytes,
                   in->data_offset + sample * in->sample_bytes, in->path) < in->sample_bytes)
      die(EXIT_USER, "input %s shrank while the model was running", in->path);
    int status = masic_model_step(arena);
    if (status) die(EXIT_STEP, "timestep %d of %d failed with status %d", t + 1, s->max_steps, status);
    /* Copied out rather than cast, so an output offset that is not float-aligned cannot fault. */
    float *out = keep_history ? r->history + (size_t)t * out_numel : scratch;
    memcpy(out, arena + masic_model.output_offset, out_numel * sizeof(float));
    for (size_t k = 0; k < out_numel; k++) r->sum[k] += out[k];
    t++;
    if (s->exit_rule == MASIC_EXIT_SOFTMAX_CONFIDENCE && t >= s->min_steps &&
        max_softmax(r->sum, out_numel) >= s->exit_confidence)
      break;
  }
  r->wall_s = now_s() - start;
  r->steps_run = t;
  free(scratch);
}

/* ---- results ---- */

/* Opened before the run so that a bad output path fails in milliseconds rather than after a long run. */
static FILE *open_output(const char *path) {
  FILE *f = fopen(path, "wb");
  if (!f) die(EXIT_USER, "cannot create output file %s: %s; pass a writable --output path", path, strerror(errno));
  return f;
}

static void write_output_npy(FILE *f, const char *path, const float *data, int steps) {
  int64_t shape[MASIC_MAX_NDIM + 1] = {steps};
  memcpy(shape + 1, masic_model.output_shape, (size_t)masic_model.output_ndim * sizeof *shape);
  char dims[512], header[640];
  format_shape(dims, sizeof dims, NULL, masic_model.output_ndim + 1, shape);
  int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", dims);
  /* Version 1.0: 10-byte preamble, header padded with spaces and ended by '\n' so the data starts 64-aligned. */
  while ((10 + len + 1) % 64) header[len++] = ' ';
  header[len++] = '\n';
  uint8_t preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(len & 0xff), (uint8_t)(len >> 8)};
  size_t count = (size_t)steps * (size_t)shape_numel(masic_model.output_ndim, masic_model.output_shape);
  bool ok = fwrite(preamble, 1, sizeof preamble, f) == sizeof preamble;
  ok = ok && fwrite(header, 1, (size_t)len, f) == (size_t)len;
  ok = ok && fwrite(data, sizeof *data, count, f) == count;
  if (fclose(f) != 0 || !ok) die(EXIT_SYSTEM, "cannot write output file %s: %s", path, strerror(errno));
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

static void print_report(const schedule_t *s, const run_result_t *r, double load_s, int threads) {
  size_t out_numel = (size_t)shape_numel(masic_model.output_ndim, masic_model.output_shape);
  size_t prediction = argmax(r->sum, out_numel);
  double confidence = max_softmax(r->sum, out_numel);
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);

  printf("prediction: %zu\n", prediction);
  printf("{\"model\": ");
  print_json_string(masic_model.name);
  printf(", \"prediction\": %zu, \"timesteps\": %d, \"max_timesteps\": %d, \"exited_early\": %s", prediction,
         r->steps_run, s->max_steps, r->steps_run < s->max_steps ? "true" : "false");
  printf(", \"exit_rule\": \"%s\"", s->exit_rule == MASIC_EXIT_SOFTMAX_CONFIDENCE ? "softmax_confidence" : "none");
  /* JSON has no NaN: a model producing NaN reports a null confidence. */
  if (isfinite(confidence))
    printf(", \"confidence\": %.6f", confidence);
  else
    printf(", \"confidence\": null");
  printf(", \"wall_s\": %.6f, \"load_s\": %.6f, \"arena_bytes\": %llu, \"weights_bytes\": %llu", r->wall_s, load_s,
         (unsigned long long)masic_model.arena_bytes, (unsigned long long)masic_model.weights_bytes);
  printf(", \"peak_rss_bytes\": %lld, \"threads\": %d}\n", (long long)usage.ru_maxrss * 1024, threads);
}

int main(int argc, char **argv) {
  options_t opt;
  parse_args(argc, argv, &opt);
  check_model();
  input_t in = open_input(opt.input_path);
  schedule_t schedule = make_schedule(&opt, &in);
  FILE *output = opt.output_path ? open_output(opt.output_path) : NULL;

  double load_start = now_s();
  crc32_init();
  char *default_path = opt.weights_path ? NULL : default_weights_path();
  uint8_t *arena = load_arena(default_path ? default_path : opt.weights_path);
  double load_s = now_s() - load_start;

  if (masic_parallel_init(opt.threads) != 0)
    die(EXIT_SYSTEM, "cannot start the worker threads (--threads %d)", opt.threads);
  int threads = masic_parallel_num_threads();
  run_result_t result;
  run_steps(&schedule, &in, arena, output != NULL, &result);
  masic_parallel_shutdown();

  if (output) write_output_npy(output, opt.output_path, result.history, result.steps_run);
  print_report(&schedule, &result, load_s, threads);

  close(in.fd);
  free(result.sum);
  free(result.history);
  free(arena);
  free(default_path);
  return 0;
}

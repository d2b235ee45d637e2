/* The benchmark's C side (bench/speed/harness.py builds it into one shared library with the TVM kernels and
 * runtime/parallel.c): `bench_calls` times back-to-back calls of a kernel, as the loader calls kernels, so that no
 * ctypes call is inside the timed loop; `acc_dense` and `acc_conv2d` are accumulate-only prototypes (part 3), on
 * the same thread pool. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct { void *sync_handle; int32_t num_task; } penv_t;
typedef int (*lambda_t)(int, penv_t *, void *);
extern int (*__TVMBackendParallelLaunch)(lambda_t, void *, int);
int masic_parallel_num_threads(void);

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A kernel's C signature takes only pointers (float *, uint8_t *, uint32_t *), returning int32_t 0; BENCH_MAX_ARGS
 * of them at most (a batched dense kernel of 16 steps takes 34). A<n> is the call's arguments a[0], ..., a[n - 1]
 * and T<n> their types, for the switch below. */
#define BENCH_MAX_ARGS 40
#define A1 a[0]
#define A2 A1, a[1]
#define A3 A2, a[2]
#define A4 A3, a[3]
#define A5 A4, a[4]
#define A6 A5, a[5]
#define A7 A6, a[6]
#define A8 A7, a[7]
#define A9 A8, a[8]
#define A10 A9, a[9]
#define A11 A10, a[10]
#define A12 A11, a[11]
#define A13 A12, a[12]
#define A14 A13, a[13]
#define A15 A14, a[14]
#define A16 A15, a[15]
#define A17 A16, a[16]
#define A18 A17, a[17]
#define A19 A18, a[18]
#define A20 A19, a[19]
#define A21 A20, a[20]
#define A22 A21, a[21]
#define A23 A22, a[22]
#define A24 A23, a[23]
#define A25 A24, a[24]
#define A26 A25, a[25]
#define A27 A26, a[26]
#define A28 A27, a[27]
#define A29 A28, a[28]
#define A30 A29, a[29]
#define A31 A30, a[30]
#define A32 A31, a[31]
#define A33 A32, a[32]
#define A34 A33, a[33]
#define A35 A34, a[34]
#define A36 A35, a[35]
#define A37 A36, a[36]
#define A38 A37, a[37]
#define A39 A38, a[38]
#define A40 A39, a[39]
#define T1 void *
#define T2 T1, void *
#define T3 T2, void *
#define T4 T3, void *
#define T5 T4, void *
#define T6 T5, void *
#define T7 T6, void *
#define T8 T7, void *
#define T9 T8, void *
#define T10 T9, void *
#define T11 T10, void *
#define T12 T11, void *
#define T13 T12, void *
#define T14 T13, void *
#define T15 T14, void *
#define T16 T15, void *
#define T17 T16, void *
#define T18 T17, void *
#define T19 T18, void *
#define T20 T19, void *
#define T21 T20, void *
#define T22 T21, void *
#define T23 T22, void *
#define T24 T23, void *
#define T25 T24, void *
#define T26 T25, void *
#define T27 T26, void *
#define T28 T27, void *
#define T29 T28, void *
#define T30 T29, void *
#define T31 T30, void *
#define T32 T31, void *
#define T33 T32, void *
#define T34 T33, void *
#define T35 T34, void *
#define T36 T35, void *
#define T37 T36, void *
#define T38 T37, void *
#define T39 T38, void *
#define T40 T39, void *
#define CASE(n) \
  case n: \
    rc = ((int32_t(*)(T##n))fn)(A##n); \
    break;

int bench_max_args(void) { return BENCH_MAX_ARGS; }

/* Seconds per call of fn(a[0], ..., a[n - 1]) over `iters` back-to-back calls; -1 if a call fails. */
double bench_calls(void *fn, void **a, int n, int64_t iters) {
  double start = now_s();
  for (int64_t k = 0; k < iters; k++) {
    int32_t rc = -1;
    switch (n) {
      CASE(1)
      CASE(2)
      CASE(3)
      CASE(4)
      CASE(5)
      CASE(6)
      CASE(7)
      CASE(8)
      CASE(9)
      CASE(10)
      CASE(11)
      CASE(12)
      CASE(13)
      CASE(14)
      CASE(15)
      CASE(16)
      CASE(17)
      CASE(18)
      CASE(19)
      CASE(20)
      CASE(21)
      CASE(22)
      CASE(23)
      CASE(24)
      CASE(25)
      CASE(26)
      CASE(27)
      CASE(28)
      CASE(29)
      CASE(30)
      CASE(31)
      CASE(32)
      CASE(33)
      CASE(34)
      CASE(35)
      CASE(36)
      CASE(37)
      CASE(38)
      CASE(39)
      CASE(40)
      default: return -1;
    }
    if (rc != 0) return -1;
  }
  return (now_s() - start) / (double)iters;
}

static int min_int(int a, int b) { return a < b ? a : b; }

/* Task `task` of `tasks` takes outputs [lo, hi) of n, in runs of 16 floats. */
static void share(int n, int task, int tasks, int *lo, int *hi) {
  int chunk = ((n + tasks - 1) / tasks + 15) & ~15;
  *lo = min_int(n, task * chunk);
  *hi = min_int(n, *lo + chunk);
}

static int tasks_for(int work) { return work >= 4096 ? masic_parallel_num_threads() : 1; }

/* Accumulate-only dense: y = b + the rows of wt (weights transposed, (in, out)) of the inputs that are non-zero
 * (spikes are 1). dims = {in, out, has_bias} as int32; events: scratch of `in` int32. */
typedef struct {
  const float *wt, *b;
  float *y;
  const int32_t *events;
  int n_events, out;
} dense_job_t;

static int dense_task(int task, penv_t *env, void *data) {
  const dense_job_t *j = data;
  int lo, hi;
  share(j->out, task, env->num_task, &lo, &hi);
  float *restrict y = j->y;
  for (int o = lo; o < hi; o++) y[o] = j->b ? j->b[o] : 0.0f;
  for (int e = 0; e < j->n_events; e++) {
    const float *restrict w = j->wt + (size_t)j->events[e] * (size_t)j->out;
    for (int o = lo; o < hi; o++) y[o] += w[o];
  }
  return 0;
}

int32_t acc_dense(float *x, float *wt, float *b, float *y, float *dims_, float *events_) {
  const int32_t *dims = (const int32_t *)dims_;
  int32_t *events = (int32_t *)events_;
  int n = 0;
  for (int i = 0; i < dims[0]; i++)
    if (x[i] != 0.0f) events[n++] = i;
  dense_job_t job = {wt, dims[2] ? b : NULL, y, events, n, dims[1]};
  return __TVMBackendParallelLaunch(dense_task, &job, tasks_for(dims[1] * (n + 1)));
}

/* Accumulate-only conv2d (groups 1): every input spike (c, h, w) adds, for each tap (kh, kw) that maps it onto an
 * output (oh, ow), wt[c, kh, kw, :] (the weights as (C, KH, KW, O)) to acc[oh, ow, :]; then y (O, OH, OW) is acc
 * transposed plus the bias. dims = {C, H, W, O, KH, KW, SH, SW, PT, PL, DH, DW, OH, OW, has_bias} as int32;
 * events: scratch of 3*C*H*W int32 ((c, h, w) of each spike); acc: scratch of OH*OW*O floats. */
typedef struct {
  const int32_t *d;
  const float *wt, *b;
  float *y, *acc;
  const int32_t *events;
  int n_events;
} conv_job_t;

/* The output index a tap maps input index i onto (stride s, padding p, dilation dl), or -1. */
static inline int tap_out(int i, int k, int s, int p, int dl, int n_out) {
  int r = i + p - k * dl;
  if (r < 0) return -1;
  if (s != 1) {
    if (r % s) return -1;
    r /= s;
  }
  return r < n_out ? r : -1;
}

static int conv_task(int task, penv_t *env, void *data) {
  const conv_job_t *j = data;
  const int32_t *d = j->d;
  int O = d[3], KH = d[4], KW = d[5], SH = d[6], SW = d[7], PT = d[8], PL = d[9];
  int DH = d[10], DW = d[11], OH = d[12], OW = d[13];
  int lo, hi;
  share(O, task, env->num_task, &lo, &hi);
  if (lo >= hi) return 0;
  float *acc = j->acc;
  for (int p = 0; p < OH * OW; p++) memset(acc + (size_t)p * O + lo, 0, (size_t)(hi - lo) * sizeof(float));
  for (int e = 0; e < j->n_events; e++) {
    int c = j->events[3 * e], h = j->events[3 * e + 1], w = j->events[3 * e + 2];
    for (int kh = 0; kh < KH; kh++) {
      int oh = tap_out(h, kh, SH, PT, DH, OH);
      if (oh < 0) continue;
      for (int kw = 0; kw < KW; kw++) {
        int ow = tap_out(w, kw, SW, PL, DW, OW);
        if (ow < 0) continue;
        float *restrict a = acc + ((size_t)oh * OW + ow) * O;
        const float *restrict wr = j->wt + (((size_t)c * KH + kh) * KW + kw) * O;
        for (int o = lo; o < hi; o++) a[o] += wr[o];
      }
    }
  }
  for (int o = lo; o < hi; o++) {
    float bias = j->b ? j->b[o] : 0.0f;
    float *restrict y = j->y + (size_t)o * OH * OW;
    for (int p = 0; p < OH * OW; p++) y[p] = acc[(size_t)p * O + o] + bias;
  }
  return 0;
}

int32_t acc_conv2d(float *x, float *wt, float *b, float *y, float *dims_, float *events_, float *acc) {
  const int32_t *d = (const int32_t *)dims_;
  int32_t *events = (int32_t *)events_;
  int n = 0;
  for (int c = 0; c < d[0]; c++)
    for (int h = 0; h < d[1]; h++)
      for (int w = 0; w < d[2]; w++)
        if (*x++ != 0.0f) {
          events[3 * n] = c;
          events[3 * n + 1] = h;
          events[3 * n + 2] = w;
          n++;
        }
  conv_job_t job = {d, wt, d[14] ? b : NULL, y, acc, events, n};
  return __TVMBackendParallelLaunch(conv_task, &job, tasks_for(d[3] * d[12] * d[13]));
}

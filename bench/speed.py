"""Where masic stands against PyTorch and Norse: kernel times, whole-model latency and peak RSS, spike rates.

Measures, in one run, on the host (x86_64 target), batch 1, float32, with --threads threads on every side and, with
--one-thread (the default), again on one thread (a thread pool on a machine other processes keep busy loses whole
scheduler slices waiting for its workers, on either side; one thread shows the kernels' own speed):

1. Kernels. Every distinct kernel of the compiled models (`masic.codegen.lower.lower` of the planned graph: the
   kernels the artifact links), built by TVM (`masic.codegen.build.build_object`) into one shared library with
   runtime/parallel.c and a small C harness that calls a kernel back to back and reads the clock around the loop
   (the loader calls kernels the same way; no ctypes call inside the timed loop). The same op runs in PyTorch in
   its own process (torch.set_num_threads, torch.inference_mode, eager): F.conv2d, F.linear, pooling, `a + b`,
   copies, and for neuron updates Norse's functional step (`lif_feed_forward_step`, ...) and, as a second figure,
   the same update in the fewest eager tensor ops. Each time is the best of batches of back-to-back calls
   (--kernel-seconds per kernel and side), so weights that fit the caches stay there. The kernels come from the
   models of part 2 and from --kernel-models (default: MobileNetV2 for grouped, depthwise, strided and 1x1 convs
   and residual adds, and MobileNetV2 under a 2MB budget for sliced layers and concat copies). Printed per shape
   and per type as masic / torch: geometric mean, worst shape, and weighted by the calls per inference of the
   models that use the kernel.
2. Whole models, batch 1, one inference: the trained digits example (examples/digits.py: WORKDIR/models/digits.pt
   is reused, else trained with the per-step loss) on its first held-out digit, T=16; Norse ConvNet4 at its default
   1x28x28 input, T=16 (Linear weights x4, as tests.zoo_models.convnet4 does at 16x16); Norse vgg11
   (tests.zoo_models:vgg11) at 3x32x32, T=4, and (--budget-models) the same under a 32MB budget; the zoo models on
   a uniform [0, 20) input sequence (seed 0). Each is saved with torch.save, compiled by `masic compile MODEL.pt
   --target x86_64 --timesteps T --input-shape ... [--budget B]` and run as `OUT/model --input x.npy --threads N
   --no-exit`: single-sample runs (their peak RSS: the loader's VmHWM) and labelled runs of the sample repeated
   (warm), the better of the two bests compared. Norse runs in its own process (inference_mode; the digits
   SequentialState step by step, the zoo models as one call of the time-lifted model over the (T, 1, ...) input):
   first call, then best and median after two warm-up calls; its peak RSS (VmHWM), its RSS right after importing
   torch and norse, and ru_maxrss (which Linux carries over from the process that started it: an upper bound).
   Speedup = Norse / masic on --threads threads (the issue's figure), on one thread, and with each side in its
   better configuration. With perf installed, `perf record` of a labelled run after its load phase attributes the
   CPU samples to the artifact's kernels (the parallel closures TVM emits have no symbol: they are found from the
   exported kernel that launches them), the thread pool, the rest of the program and the OS.
3. Spikes. The reference interpreter (`masic.ir.interpret.run`) on the benchmark input, recording every value: the
   spike rate (fraction of ones, over all steps) of every spiking layer and of the input of every conv / dense fed
   by spikes; the plan's bytes (arena, lower bound, activation buffers, spike tensors, peak of live activations)
   as planned now (spikes bit-packed where only accumulating dense layers read them, else one byte each), next to
   the same graph with every spike one byte and the model planned with every value float32. For each conv / dense
   fed by spikes, a prototype accumulate-only C kernel (builds the list of input spikes, then adds the weights of
   each spike; the same thread pool) timed at that layer's measured rate against masic's kernel on the same input
   (the outputs are checked to agree): for dense layers of spikes that is masic's own accumulate-only kernel, also
   timed against its multiplying twin (masic's dense kernel reading the same spikes as bytes) and against its twin
   reading the spikes the other way, bytes or bits (checked to give the same floats); and the model's kernel time
   projected from per-kernel times x calls per inference.
4. Where masic's time goes, per model: per-kernel best time x calls per inference next to the measured time, and
   the perf profiles. Everything goes to WORKDIR/speed.json.

The load average before and after is printed and saved; rerun when figures look unstable. MiB = 2^20 bytes.

    python bench/speed.py [--workdir build/speed] [--threads 2] [--no-one-thread] [--runs 5] [--kernel-seconds 0.3]
                          [--model-seconds 2] [--models digits,convnet4,vgg11] [--budget-models vgg11@32MB]
                          [--kernel-models mobilenet_v2,mobilenet_v2@2MB] [--skip kernels,models,spikes]
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import dataclasses
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RUNTIME = REPO / "masic" / "codegen" / "runtime"
TARGET = "x86_64"
RSS_TARGET = 20.0  # the issue: peak RSS of the compiled program at least 20x below Norse's
KERNEL_TARGET = 1.0  # the issue: masic / torch <= 1.0 for every kernel type
# Norse parameter tuples pickle under norse.torch.utils.pytree (norse issue #414); see install_pickle_aliases
PARAMETER_CLASSES = ("LIFParameters", "LIFBoxParameters", "LIParameters", "LIBoxParameters", "IAFParameters")
VIEWS = ("flatten", "reshape")
# ops whose output is spikes when every input is (relu and max of 0/1 values are 0/1)
SPIKE_PRESERVING = ("maxpool2d", "flatten", "reshape", "concat", "crop_rows", "delay", "relu")
# value of a per-neuron parameter in the kernel benchmark (the timing does not depend on it; these keep states finite)
NEURON_DEFAULTS = {"dt_tau_mem": 0.1, "neg_dt_tau_syn": -0.2, "v_leak": 0.0, "v_th": 1.0, "v_reset": 0.0}
DT = 1e-3  # Norse's default time step: dt_tau_mem = DT * tau_mem_inv
SPIKE_RATE = 0.3  # spikes in the kernel benchmark's inputs (part 3 measures each model's own rates: 0.14-0.49)

# masic, TVM, torch and norse are imported where they are needed: the PyTorch workers this file starts
# (`--worker`) import only numpy, torch and norse, so their times and RSS are PyTorch's alone.


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, ...]
    timesteps: int
    stepwise: bool  # Norse runs it step by step (SequentialState); else one call over the (T, 1, ...) sequence
    min_speedup: float  # the target against Norse (0: kernel source only)
    input_scale: float = 20.0  # zoo models: uniform [0, scale) input sequences


MODELS = {
    "digits": ModelSpec("digits", (1, 8, 8), 16, True, 10.0),
    "convnet4": ModelSpec("convnet4", (1, 28, 28), 16, False, 10.0),
    "vgg11": ModelSpec("vgg11", (3, 32, 32), 4, False, 2.0),
    "mobilenet_v2": ModelSpec("mobilenet_v2", (3, 32, 32), 4, False, 0.0, 3.0),
}


# --------------------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------------------


def convnet4_28():
    """Norse's ConvNet4 at its default 1x28x28 input; Linear weights x4 as tests.zoo_models.convnet4 (so spikes
    reach the output). Also a `bench.speed:convnet4_28` spec for `masic compile`."""
    import torch
    from norse.torch import ConvNet4

    torch.manual_seed(23)
    model = ConvNet4()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight *= 4.0
    return model.eval()


def save_model(name: str, work: Path, epochs: int) -> Path:
    """WORKDIR/models/NAME.pt (torch.save of the whole model); the trained digits model is reused if present."""
    import torch
    from masic.frontends.norse import install_pickle_aliases

    path = work / "models" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    install_pickle_aliases()
    if name == "digits":
        if not path.exists():
            from examples.digits import load_splits, train

            (x, y), _, _ = load_splits()
            started = time.perf_counter()
            torch.set_num_threads(1)  # the same model on every machine: reductions in a fixed order
            model = train(x, y, epochs, per_step=True)
            print(f"trained digits for {epochs} epochs in {time.perf_counter() - started:.1f}s", flush=True)
            torch.save(model, path)
        return path
    if name == "convnet4":
        model = convnet4_28()
    else:
        import tests.zoo_models as zoo

        model = getattr(zoo, name)()
    torch.save(model, path)
    return path


def model_input(spec: ModelSpec) -> np.ndarray:
    """The digits model's first held-out digit (1, 8, 8), presented at every step; else a (T, *shape) uniform
    [0, scale) sequence."""
    if spec.name == "digits":
        from examples.digits import load_splits

        return load_splits()[2][0][0]
    rng = np.random.default_rng(0)
    return (rng.uniform(0.0, 1.0, (spec.timesteps, *spec.input_shape)) * spec.input_scale).astype(np.float32)


def plan_graph(model_path: Path, spec: ModelSpec, budget: int | None, spikes: str = "bits"):
    """The planned graph `masic compile` builds the artifact from (same passes, options and target), its spikes
    one byte each or bit-packed where the layout pass packs them (`spikes` "bits"); with "bytes", the same graph
    with every spike one byte, planned again (as masic planned before bit-packed spikes: only assign-offsets runs
    after the layout pass, so every other decision is the same); with "f32", planned as before the spike dtype
    (every value float32)."""
    from dataclasses import replace

    from masic.frontends.dispatch import ImportOptions, import_model
    from masic.targets import get_target

    from masic.ir.graph import TensorType
    from masic.passes import DEFAULT_PIPELINE, PassOptions
    from masic.passes.manager import PassManager

    target = get_target(TARGET)
    graph = import_model(str(model_path), ImportOptions(spec.input_shape, spec.timesteps, name=spec.name))
    options = PassOptions(budget=budget, alignment=target.alignment, machine=target.machine)
    passes = [name for name in DEFAULT_PIPELINE if spikes != "f32" or name != "spike-dtype"]
    planned = PassManager(passes, options).run(graph)
    if spikes != "bytes":
        return planned
    nodes = [replace(n, type=TensorType(n.type.shape, "spike")) if n.type.dtype == "bits" else n for n in planned.nodes]
    replanned = passes[passes.index("assign-offsets") :]
    return PassManager(replanned, options).run(replace(planned.with_nodes(nodes), plan=None))


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------


def measure(run: Callable[[int], float], seconds: float, max_batches: int = 1000) -> dict:
    """`run(iters)` makes `iters` back-to-back calls and returns the seconds per call. Warms up, then times batches
    of about 0.2 ms (or one call) for about `seconds`; returns the best and median batch, in ms per call. Short
    batches, many of them: on a loaded machine a waiting thread pool loses whole scheduler slices, and the best
    batch is the one that lost none."""
    per_call = run(1)
    per_call = min(per_call, run(max(1, int(0.002 / max(per_call, 1e-9)))))
    iters = max(1, int(0.0002 / max(per_call, 1e-9)))
    batches = int(min(max_batches, max(5, seconds / (per_call * iters))))
    times = [run(iters) for _ in range(batches)]
    return {"best_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times), "calls": iters * batches}


def python_runner(fn: Callable[[], object]) -> Callable[[int], float]:
    def run(iters: int) -> float:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) / iters

    return run


# --------------------------------------------------------------------------------------------------------------
# C harness and accumulate-only prototypes (linked with the kernels and runtime/parallel.c)
# --------------------------------------------------------------------------------------------------------------

HARNESS_MAX_ARGS = 40  # a batched dense kernel of 16 steps takes 34
HARNESS_C = r"""
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

/* Seconds per call of fn(a[0], ..., a[n - 1]) over `iters` back-to-back calls; -1 if a call fails. */
double bench_calls(void *fn, void **a, int n, int64_t iters) {
  double start = now_s();
  for (int64_t k = 0; k < iters; k++) {
    int32_t rc = -1;
    switch (n) {
@CASES@
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
"""


def harness_source() -> str:
    cases = ""
    for n in range(1, HARNESS_MAX_ARGS + 1):
        params = ", ".join(["void *"] * n)
        args = ", ".join(f"a[{k}]" for k in range(n))
        cases += f"      case {n}: rc = ((int32_t (*)({params}))fn)({args}); break;\n"
    return HARNESS_C.replace("@CASES@", cases)


def build_library(kernels: list, work: Path) -> Path:
    """The TVM kernels, runtime/parallel.c and the harness linked into WORKDIR/lib/libspeed.so."""
    from masic.codegen.build import build_object, host_target

    work.mkdir(parents=True, exist_ok=True)
    build_object(kernels, host_target(), work / "kernels.o")
    (work / "harness.c").write_text(harness_source())
    path = work / "libspeed.so"
    sources = [str(RUNTIME / "parallel.c"), str(work / "harness.c"), str(work / "kernels.o")]
    command = ["cc", "-O3", "-march=native", "-shared", "-fPIC", f"-I{RUNTIME}", *sources, "-o", str(path)]
    subprocess.run([*command, "-lpthread", "-lm"], check=True)
    return path


class Library:
    """The shared library loaded with its thread pool started. Each thread count loads its own copy of the file
    (the pool is a static of the library, and dlopen of the same path returns the same one)."""

    def __init__(self, path: Path, threads: int) -> None:
        copy = path.with_name(f"{path.stem}-{threads}t.so")
        shutil.copyfile(path, copy)
        self.lib = ctypes.CDLL(str(copy))
        self.lib.bench_calls.restype = ctypes.c_double
        self.lib.bench_calls.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int64]
        self.threads = threads
        if self.lib.masic_parallel_init(threads) != 0:
            raise RuntimeError("masic_parallel_init failed")

    def runner(self, symbol: str, arrays: list[np.ndarray]) -> Callable[[int], float]:
        """run(iters) -> seconds per call of symbol(*arrays), timed in C."""
        if len(arrays) > HARNESS_MAX_ARGS:
            raise ValueError(f"{symbol}: {len(arrays)} arguments, the harness takes {HARNESS_MAX_ARGS}")
        fn = ctypes.cast(getattr(self.lib, symbol), ctypes.c_void_p)
        args = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))

        def run(iters: int) -> float:
            seconds = self.lib.bench_calls(fn, args, len(arrays), iters)
            if seconds < 0:
                raise RuntimeError(f"{symbol} failed")
            return seconds

        return run

    def call(self, symbol: str, arrays: list[np.ndarray]) -> None:
        self.runner(symbol, arrays)(1)

    def close(self) -> None:
        self.lib.masic_parallel_shutdown()


# --------------------------------------------------------------------------------------------------------------
# Part 1: kernels
# --------------------------------------------------------------------------------------------------------------


@dataclass
class KernelEntry:
    kernel: object  # a masic.codegen.kernels Kernel, symbol bench_kN
    kind: str  # the type the tables group by
    shape: str
    calls: dict[str, int] = field(default_factory=dict)  # kernel source -> calls per inference
    masic: dict | None = None
    torch: dict | None = None  # PyTorch: the op; for neurons Norse's functional step
    plain: dict | None = None  # neurons only: the same update in plain eager tensor ops
    masic1: dict | None = None  # the same on one thread
    torch1: dict | None = None
    plain1: dict | None = None

    def ratio(self) -> float | None:
        return self.masic["best_ms"] / self.torch["best_ms"] if self.masic and self.torch else None

    def ratio1(self) -> float | None:
        return self.masic1["best_ms"] / self.torch1["best_ms"] if self.masic1 and self.torch1 else None


def neuron_label(k) -> str:
    """A neuron kernel's family and the values of its modes, e.g. "lif_box subtract"."""
    return " ".join([k.family, *(value for _, value in k.modes)])


def kernel_type(k, ops: set[str]) -> str:
    from masic.codegen.kernels import (
        AccumulateDenseKernel,
        AdaptiveAvgPool2dKernel,
        Conv2dKernel,
        DenseKernel,
        ElementwiseAddKernel,
        ElementwiseKernel,
        NeuronKernel,
        Pool2dKernel,
        RowsKernel,
    )

    neuron = getattr(k, "neuron", None)
    if neuron is not None:  # a neuron update fused into the layer's kernel
        return f"{kernel_type(dataclasses.replace(k, neuron=None), ops)} + {neuron_label(neuron)}"
    match k:
        case Conv2dKernel():
            if k.groups > 1:
                base = "conv2d depthwise" if k.groups == k.in_shape[0] == k.out_channels else "conv2d grouped"
            else:
                base = "conv2d 1x1" if k.kernel == (1, 1) else "conv2d"
            return base + (" strided" if k.stride != (1, 1) else "")
        case DenseKernel():
            return "dense"
        case AccumulateDenseKernel():
            return "dense of spikes (accumulate)"
        case Pool2dKernel():
            return f"{k.kind}pool2d"
        case AdaptiveAvgPool2dKernel():
            return "adaptive_avgpool2d"
        case NeuronKernel():
            return f"neuron {neuron_label(k)}"
        case ElementwiseAddKernel():
            return "add (residual)"
        case ElementwiseKernel():
            return f"copy ({'/'.join(sorted(ops))})" if k.fn == "copy" else k.fn
        case RowsKernel():
            return "rows (crop/concat)"
    return type(k).__name__


def shape_label(k) -> str:
    name = type(k).__name__
    if name == "Conv2dKernel":
        (c, h, w), (kh, kw) = k.in_shape, k.kernel
        text = f"{c}x{h}x{w}->{k.out_channels} k{kh}x{kw} s{k.stride[0]} p{k.padding[0]}"
        text += f" g{k.groups}" if k.groups > 1 else ""
        text += f" rows{k.row_padding}" if k.row_padding else ""
        return text + (f" {k.weight_layout}" if k.weight_layout != "OIHW" else "")
    packed = " bits" if getattr(k, "packed", False) else ""  # spikes read or written bit-packed
    if name in ("DenseKernel", "AccumulateDenseKernel"):
        steps = f" x{k.steps} steps" if k.steps > 1 else ""
        return f"{k.in_features}->{k.out_features}" + ("" if k.bias else " (no bias)") + steps + packed
    if name == "Pool2dKernel":
        (c, h, w), (kh, _) = k.in_shape, k.kernel
        return f"{c}x{h}x{w} k{kh} s{k.stride[0]} p{k.padding[0]}" + (f" rows{k.row_padding}" if k.row_padding else "")
    if name == "AdaptiveAvgPool2dKernel":
        c, h, w = k.in_shape
        return f"{c}x{h}x{w}->{k.output[0]}x{k.output[1]}"
    if name == "NeuronKernel":
        per_neuron = [p for p, v in k.params if v is None]
        return f"n={k.n}" + (f" per-neuron {','.join(per_neuron)}" if per_neuron else "") + packed
    if name == "RowsKernel":
        c, rows, w = k.out_shape()
        return f"{len(k.in_shapes)} part(s) -> {c}x{rows}x{w}"
    return f"n={k.n}"


def calls_per_inference(graph, calls) -> tuple[Counter, Counter]:
    """Calls per inference of each kernel symbol and of each node: `calls` is one block, the last block may be
    partial (its calls for steps past the end are skipped, as in model.c)."""
    per_symbol, per_node = Counter(), Counter()
    block = graph.schedule.block
    for first in range(0, graph.timesteps, block):
        steps = min(block, graph.timesteps - first)
        for call in calls:
            if call.step < steps:
                per_symbol[call.symbol] += 1
                per_node[call.node.name] += 1
    return per_symbol, per_node


def collect_kernels(graphs: dict[str, object]) -> tuple[list[KernelEntry], dict[str, dict[str, KernelEntry]], dict]:
    """The distinct kernels of all graphs (by signature); per graph, the entry of each node and of each artifact
    kernel symbol (keys "node:NAME" and "symbol:NAME"); and each node's calls per inference."""
    from masic.codegen.lower import lower

    entries: dict[object, KernelEntry] = {}
    node_entry: dict[str, dict[str, KernelEntry]] = {}
    node_calls: dict[str, Counter] = {}
    for label, graph in graphs.items():
        kernels, calls = lower(graph)
        per_symbol, node_calls[label] = calls_per_inference(graph, calls)
        ops: dict[str, set[str]] = {}
        for call in calls:
            ops.setdefault(call.symbol, set()).add(call.node.op)
        by_symbol = {}
        for k in kernels:
            key = dataclasses.replace(k, symbol="")
            if key not in entries:
                bench_kernel = dataclasses.replace(k, symbol=f"bench_k{len(entries)}")
                entries[key] = KernelEntry(bench_kernel, kernel_type(k, ops[k.symbol]), shape_label(k))
            entry = entries[key]
            entry.calls[label] = entry.calls.get(label, 0) + per_symbol[k.symbol]
            by_symbol[k.symbol] = entry
        node_entry[label] = {f"node:{call.node.name}": by_symbol[call.symbol] for call in calls}
        node_entry[label] |= {f"symbol:{symbol}": entry for symbol, entry in by_symbol.items()}
    return list(entries.values()), node_entry, node_calls


def kernel_arrays(kernel, rng: np.random.Generator, x: np.ndarray | None = None) -> list[np.ndarray]:
    """One array per C argument in its type: per-neuron parameters at neutral values, x if given, spikes (bytes,
    or bit-packed words: of the accumulate kernel's inputs or the neuron kernel's outputs) random at SPIKE_RATE,
    the rest random floats."""
    from masic.ir.graph import pack_bits

    params = dict(getattr(getattr(kernel, "neuron", None) or kernel, "params", ()))
    arrays = []
    for name, shape in kernel.arg_shapes().items():
        dtype = np.dtype(kernel.arg_dtype(name))
        spikes = kernel.in_features if name == "x" and dtype == np.uint32 else getattr(kernel, "n", 0)
        if name in params:
            arrays.append(np.full(shape, NEURON_DEFAULTS[name], dtype=np.float32))
        elif name == "x" and x is not None:
            arrays.append(pack_bits(x) if dtype == np.uint32 else np.ascontiguousarray(x.reshape(shape), dtype=dtype))
        elif dtype == np.uint8:
            arrays.append((rng.random(shape) < SPIKE_RATE).astype(np.uint8))
        elif dtype == np.uint32:  # a word's bits past the last spike stay 0
            arrays.append(pack_bits(rng.random(spikes) < SPIKE_RATE))
        else:
            arrays.append(rng.standard_normal(shape, dtype=np.float32))
    return arrays


def time_masic_kernels(lib: Library, entries: list[KernelEntry], seconds: float, suffix: str) -> None:
    """Sets entry.masic (suffix "") or entry.masic1 (suffix "1")."""
    rng = np.random.default_rng(0)
    for k, entry in enumerate(entries):
        arrays = kernel_arrays(entry.kernel, rng)
        setattr(entry, f"masic{suffix}", measure(lib.runner(entry.kernel.symbol, arrays), seconds))
        print(f"\r  masic kernels, {lib.threads} thread(s): {k + 1}/{len(entries)}", end="", flush=True)
    print()


def time_torch_kernels(entries: list[KernelEntry], threads: int, seconds: float, work: Path, suffix: str) -> None:
    """Sets entry.torch and entry.plain (suffix "") or entry.torch1 and entry.plain1 (suffix "1")."""
    print(f"  PyTorch kernels, {threads} thread(s), own process ...", flush=True)
    request = work / f"torch_kernels_{threads}t.json"
    specs = [{"cls": type(e.kernel).__name__, **dataclasses.asdict(e.kernel)} for e in entries]
    request.write_text(json.dumps({"threads": threads, "seconds": seconds, "kernels": specs}))
    run_worker("torch-kernels", request)
    for entry, result in zip(entries, json.loads(request.with_suffix(".out.json").read_text()), strict=True):
        setattr(entry, f"torch{suffix}", result["torch"])
        setattr(entry, f"plain{suffix}", result.get("plain"))


def run_worker(kind: str, request: Path) -> None:
    """Runs this file as a PyTorch worker in a fresh interpreter (a second thread pool in this process would
    distort both sides)."""
    result = subprocess.run(
        [sys.executable, __file__, "--worker", kind, str(request)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{result.stderr[-3000:]}")


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def type_summary(entries: list[KernelEntry]) -> list[dict]:
    """Per kernel type: shapes, geometric mean and worst masic / torch, and masic / torch weighted by calls per
    inference (the time the models spend in that type, masic's against PyTorch's); the weighted figure on one
    thread too, when measured."""
    rows = []
    for kind in sorted({e.kind for e in entries}):
        group = [e for e in entries if e.kind == kind and e.ratio() is not None]
        if not group:
            continue
        worst = max(group, key=lambda e: e.ratio())

        def weighted(masic: str, torch: str, group: list[KernelEntry] = group) -> float | None:
            if any(getattr(e, masic) is None or getattr(e, torch) is None for e in group):
                return None
            ours = sum(getattr(e, masic)["best_ms"] * sum(e.calls.values()) for e in group)
            return ours / sum(getattr(e, torch)["best_ms"] * sum(e.calls.values()) for e in group)

        rows.append(
            {
                "type": kind,
                "shapes": len(group),
                "geomean": geomean([e.ratio() for e in group]),
                "worst": worst.ratio(),
                "worst_shape": worst.shape,
                "weighted": weighted("masic", "torch"),
                "slower_shapes": sum(e.ratio() > KERNEL_TARGET for e in group),
                "weighted_1thread": weighted("masic1", "torch1"),
                "weighted_best_config": best_config(group),
                "geomean_1thread": geomean([e.ratio1() for e in group]) if all(e.ratio1() for e in group) else None,
            }
        )
    return rows


def best_config(group: list[KernelEntry]) -> float | None:
    """Weighted masic / torch with each side's better time over the thread counts measured."""
    if any(e.masic1 is None or e.torch1 is None for e in group):
        return None
    ours = sum(min(e.masic["best_ms"], e.masic1["best_ms"]) * sum(e.calls.values()) for e in group)
    return ours / sum(min(e.torch["best_ms"], e.torch1["best_ms"]) * sum(e.calls.values()) for e in group)


def us(stats: dict | None) -> str:
    return f"{1e3 * stats['best_ms']:>10.2f}" if stats else f"{'-':>10}"


def ratio_text(ours: dict | None, theirs: dict | None) -> str:
    return f"{ours['best_ms'] / theirs['best_ms']:>7.2f}" if ours and theirs else f"{'-':>7}"


def print_kernels(entries: list[KernelEntry], summary: list[dict], threads: int) -> None:
    print("\n== 1. kernels: masic (TVM, timed in C) vs PyTorch eager (own process): best of batches, us per call ==")
    head = f"{'type':<22}{'shape':<36}{'calls/inference':<24}"
    print(f"{'':<82}{f'---- {threads} threads ----':^27}{'- neurons: plain -':^17}{'---- 1 thread ----':^27}")
    print(
        head + f"{'masic':>10}{'torch':>10}{'ratio':>7}{'plain':>10}{'ratio':>7}{'masic':>10}{'torch':>10}{'ratio':>7}"
    )
    for entry in sorted(entries, key=lambda e: (e.kind, e.shape)):
        calls = " ".join(f"{m}:{n}" for m, n in entry.calls.items())
        calls = calls if len(calls) <= 23 else calls[:20] + "..."
        line = f"{entry.kind[:21]:<22}{entry.shape[:35]:<36}{calls:<24}"
        line += us(entry.masic) + us(entry.torch) + ratio_text(entry.masic, entry.torch)
        line += us(entry.plain) + ratio_text(entry.masic, entry.plain)
        line += us(entry.masic1) + us(entry.torch1) + ratio_text(entry.masic1, entry.torch1)
        print(line + ("  <" if entry.ratio() > KERNEL_TARGET else ""))
    print(
        "(ratio = masic / torch, < marks ratio > 1; neurons: torch = Norse's functional step, plain = the same update"
    )
    print(" in the fewest eager tensor ops, ratio = masic / plain; calls/inference per model: T x calls per step)")
    print(f"\nper type: masic / torch, {threads} threads unless marked (target <= {KERNEL_TARGET:g} for every type)")
    print(
        f"{'type':<24}{'shapes':>7}{'geomean':>9}{'weighted':>10}{'worst':>8}  {'worst shape':<36}{'slower':>7}"
        f"{'weighted 1t':>12}{'geomean 1t':>11}{'best config':>12}"
    )
    for row in summary:
        mark = "  MISS" if row["weighted"] > KERNEL_TARGET or row["worst"] > KERNEL_TARGET else ""
        one = [row["weighted_1thread"], row["geomean_1thread"], row["weighted_best_config"]]
        print(
            f"{row['type']:<24}{row['shapes']:>7}{row['geomean']:>9.2f}{row['weighted']:>10.2f}{row['worst']:>8.2f}  "
            f"{row['worst_shape'][:35]:<36}{row['slower_shapes']:>7}"
            + "".join(
                f"{v:>{w}.2f}" if v is not None else f"{'-':>{w}}" for v, w in zip(one, (12, 11, 12), strict=True)
            )
            + mark
        )
    print("(weighted: sum over shapes of time x calls per inference; slower: shapes with ratio > 1; MISS: a shape or")
    print(" the weighted figure above 1; best config: weighted, each side's better time over 1 and --threads threads)")


# --------------------------------------------------------------------------------------------------------------
# PyTorch workers (run in their own process by `--worker`)
# --------------------------------------------------------------------------------------------------------------


def torch_ops(spec: dict) -> dict[str, Callable[[], object]]:
    """The PyTorch op(s) equivalent to one masic kernel: {"torch": op} (+ "plain" for neurons), on random inputs."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    cls = spec["cls"]
    if spec.get("neuron"):  # a fused kernel: PyTorch's layer, then Norse's step of the neuron on its output
        layer = torch_ops({**spec, "neuron": None})["torch"]
        return {"torch": neuron_ops({**spec["neuron"], "cls": "NeuronKernel"}, rnd, layer)["torch"]}
    if cls == "Conv2dKernel":
        (c, h, w), o, groups = spec["in_shape"], spec["out_channels"], spec["groups"]
        x, weight = rnd(1, c, h, w), rnd(o, c // groups, *spec["kernel"])
        bias = rnd(o) if spec["bias"] else None
        padding, rows = tuple(spec["padding"]), spec["row_padding"]
        stride, dilation = tuple(spec["stride"]), tuple(spec["dilation"])
        if rows is not None:  # a row patch: its own row padding
            x = F.pad(x, (0, 0, *rows))
            padding = (0, padding[1])
        return {"torch": lambda: F.conv2d(x, weight, bias, stride, padding, dilation, groups)}
    if cls in ("DenseKernel", "AccumulateDenseKernel"):  # a batched kernel's steps are PyTorch's batch
        x, weight = rnd(spec["steps"], spec["in_features"]), rnd(spec["out_features"], spec["in_features"])
        x = (x < -0.5244).float() if cls == "AccumulateDenseKernel" else x  # P(N(0,1) < -0.5244) = SPIKE_RATE
        bias = rnd(spec["out_features"]) if spec["bias"] else None
        return {"torch": lambda: F.linear(x, weight, bias)}
    if cls == "Pool2dKernel":
        x, kernel, stride = rnd(1, *spec["in_shape"]), tuple(spec["kernel"]), tuple(spec["stride"])
        padding, rows, kind = tuple(spec["padding"]), spec["row_padding"], spec["kind"]
        if rows is not None:
            x = F.pad(x, (0, 0, *rows), value=-math.inf if kind == "max" else 0.0)
            padding = (0, padding[1])
        if kind == "max":
            return {"torch": lambda: F.max_pool2d(x, kernel, stride, padding)}
        divisor = 1 if kind == "sum" else None
        return {"torch": lambda: F.avg_pool2d(x, kernel, stride, padding, divisor_override=divisor)}
    if cls == "AdaptiveAvgPool2dKernel":
        x, output = rnd(1, *spec["in_shape"]), tuple(spec["output"])
        return {"torch": lambda: F.adaptive_avg_pool2d(x, output)}
    if cls == "ElementwiseAddKernel":
        a, b = rnd(1, spec["n"]), rnd(1, spec["n"])
        return {"torch": lambda: a + b}
    if cls == "ElementwiseKernel":
        return {"torch": elementwise_op(spec, rnd)}
    if cls == "RowsKernel":
        parts = [rnd(1, *shape) for shape in spec["in_shapes"]]
        rows = spec["rows"]
        if len(parts) == 1:
            (lo, hi), x = rows[0], parts[0]
            return {"torch": lambda: x[:, :, lo:hi].contiguous()}
        return {"torch": lambda: torch.cat([p[:, :, lo:hi] for p, (lo, hi) in zip(parts, rows, strict=True)], dim=2)}
    if cls == "NeuronKernel":
        return neuron_ops(spec, rnd)
    raise ValueError(f"no PyTorch equivalent for {cls}")


def elementwise_op(spec: dict, rnd: Callable) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    n, fn, constant = spec["n"], spec["fn"], spec["constant"]
    a, b, c = rnd(1, n), rnd(1, n), rnd(1, n)
    p = constant if constant is not None else rnd(1, n)
    y = torch.empty(1, n)
    ops = {
        "copy": lambda: y.copy_(a),  # a copy into its place in a planned buffer
        "fill": lambda: torch.full((1, n), p) if constant is not None else p.clone(),
        "scale": lambda: a * p,
        "offset": lambda: a + p,
        "threshold": lambda: (a > p).to(torch.float32),
        "relu": lambda: F.relu(a),
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "select": lambda: torch.where(c != 0, a, b),
    }
    return ops[fn]


def neuron_ops(spec: dict, rnd: Callable, layer: Callable[[], object] | None = None) -> dict[str, Callable[[], object]]:
    """Norse's functional step for the neuron kind, and the same update in the fewest eager ops ("plain"); with
    `layer`, Norse's step (only) runs on the layer's output, computed in each call."""
    import torch
    from norse.torch.functional import iaf, leaky_integrator, leaky_integrator_box, lif, lif_box
    from norse.torch.functional.reset import reset_subtract

    n, kind, modes = spec["n"], spec["family"], dict(spec["modes"])
    values = dict(spec["params"])

    def param(name: str) -> torch.Tensor:
        value = values[name]
        return torch.full((1, n), NEURON_DEFAULTS[name]) if value is None else torch.tensor(value)

    x, v, i = rnd(1, n), rnd(1, n), rnd(1, n)
    inputs = (lambda: layer().reshape(1, n)) if layer else (lambda: x)
    a = param("dt_tau_mem") if "dt_tau_mem" in values else None
    b = param("neg_dt_tau_syn") if "neg_dt_tau_syn" in values else None
    leak = param("v_leak") if "v_leak" in values else None
    th = param("v_th") if "v_th" in values else None
    reset = param("v_reset") if "v_reset" in values else None
    spike = {"method": "super", "alpha": torch.tensor(100.0)}

    def fire(v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (v1 > th).to(torch.float32)
        return z, torch.where(z > 0, reset, v1)

    if kind == "lif":
        p = lif.LIFParameters(-b / DT, a / DT, leak, th, reset, **spike)
        state = lif.LIFFeedForwardState(v, i)

        def plain() -> object:
            i1 = i + x
            z, v_new = fire(v + a * ((leak - v) + i1))
            return z, v_new, i1 + b * i1

        return {"torch": lambda: lif.lif_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "lif_box":
        extra = {"reset_method": reset_subtract} if modes["reset"] == "subtract" else {}
        p = lif_box.LIFBoxParameters(a / DT, leak, th, reset, **spike, **extra)
        state = lif_box.LIFBoxFeedForwardState(v)

        def plain() -> object:
            v1 = v + a * ((x + leak) - v)
            z = (v1 > th).to(torch.float32)
            return z, (torch.where(z > 0, v1 - th, v1) if extra else torch.where(z > 0, reset, v1))

        return {"torch": lambda: lif_box.lif_box_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "li":
        p = leaky_integrator.LIParameters(-b / DT, a / DT, leak)
        state = leaky_integrator.LIState(v, i)

        def plain() -> object:
            i1 = i + x
            return v + a * ((leak - v) + i1), i1 + b * i1

        return {"torch": lambda: leaky_integrator.li_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "li_box":
        p = leaky_integrator_box.LIBoxParameters(a / DT, leak)
        state = leaky_integrator_box.LIBoxState(v)
        return {
            "torch": lambda: leaky_integrator_box.li_box_feed_forward_step(inputs(), state, p, DT),
            "plain": lambda: v + a * ((leak - v) + x),
        }
    if kind == "iaf":
        p = iaf.IAFParameters(th, reset, **spike)
        state = iaf.IAFFeedForwardState(v)
        return {"torch": lambda: iaf.iaf_feed_forward_step(inputs(), state, p, DT), "plain": lambda: fire(v + x)}
    raise ValueError(f"no Norse step for neuron kind {kind!r}")


def torch_kernels_worker(request_path: Path) -> None:
    import torch

    request = json.loads(request_path.read_text())
    torch.set_num_threads(request["threads"])
    results = []
    with torch.inference_mode():
        for spec in request["kernels"]:
            ops = torch_ops(spec)
            results.append({name: measure(python_runner(fn), request["seconds"]) for name, fn in ops.items()})
    request_path.with_suffix(".out.json").write_text(json.dumps(results))


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            status[key] = int(value.split()[0]) * 1024
    return status


def norse_model_worker(request_path: Path) -> None:
    """One model in Norse: load, first call, two warm-up calls, then timed calls (at least `runs`, and more for up
    to `seconds`); RSS along the way."""
    request = json.loads(request_path.read_text())
    import norse.torch as norse_torch
    import norse.torch.utils.pytree as pytree
    import torch

    after_imports = proc_status()
    torch.set_num_threads(request["threads"])
    for name in PARAMETER_CLASSES:  # norse issue #414: the tuples were pickled under this module
        setattr(pytree, name, getattr(norse_torch, name))
    model = torch.load(request["model"], weights_only=False).eval()
    x = torch.from_numpy(np.load(request["input"]))
    steps, sequence = request["timesteps"], x.dim() == len(request["input_shape"]) + 1
    after_load = proc_status()

    def once() -> torch.Tensor:
        if not request["stepwise"]:
            return model(x[:, None])  # time-lifted: (T, 1, ...)
        state, outputs = None, []
        for t in range(steps):
            out, state = model((x[t] if sequence else x)[None], state)
            outputs.append(out)
        return torch.stack(outputs)

    with torch.inference_mode():
        start = time.perf_counter()
        once()
        first = time.perf_counter() - start
        once()
        once()
        times: list[float] = []
        begin = time.perf_counter()
        while len(times) < request["runs"] or (time.perf_counter() - begin < request["seconds"] and len(times) < 200):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
    end = proc_status()
    result = {
        "first_s": first,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "runs": len(times),
        "rss_after_imports": after_imports["VmRSS"],
        "rss_after_load": after_load["VmRSS"],
        "peak_rss": end["VmHWM"],
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    request_path.with_suffix(".out.json").write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------------------------
# Part 2: whole models
# --------------------------------------------------------------------------------------------------------------


def masic_compile(model_path: Path, spec: ModelSpec, out: Path, budget: int | None = None) -> None:
    flags = ["--target", TARGET, "--timesteps", str(spec.timesteps)] + (["--budget", str(budget)] if budget else [])
    flags += ["--input-shape", ",".join(map(str, spec.input_shape)), "-o", str(out)]
    command = [sys.executable, "-m", "masic.cli", "compile", str(model_path), *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"masic compile {model_path} failed: {result.stderr.strip()[-2000:]}")


def run_artifact(out: Path, x_path: Path, threads: int, *flags: str) -> dict:
    """The artifact's JSON stats line (every step run: --no-exit)."""
    command = [str(out / "model"), "--input", str(x_path), "--threads", str(threads), "--no-exit", *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{out}/model failed: {result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_masic(out: Path, folder: Path, x: np.ndarray, threads: int, args: argparse.Namespace) -> dict:
    """Single-sample runs (at least --runs, more for up to --model-seconds), then --runs labelled runs of the sample
    repeated for about a second each (warm: the state is reset before each sample, as for a new input)."""
    x_path = folder / "x.npy"
    singles: list[dict] = []
    begin = time.perf_counter()
    while len(singles) < args.runs or (time.perf_counter() - begin < args.model_seconds and len(singles) < 100):
        singles.append(run_artifact(out, x_path, threads))
    single = min(s["wall_s"] for s in singles)
    n = int(min(100_000, 2**28 // x.nbytes, max(3, round(1.0 / max(single, 1e-6)))))
    np.save(folder / "xs.npy", np.ascontiguousarray(np.broadcast_to(x, (n, *x.shape))))
    np.save(folder / "ys.npy", np.zeros(n, dtype=np.int64))
    flags = ("--labels", str(folder / "ys.npy"))
    batches = [run_artifact(out, folder / "xs.npy", threads, *flags) for _ in range(args.runs)]
    warm = min(b["wall_s_per_sample"] for b in batches)
    return {
        "best_s": min(single, warm),
        "single_s": single,
        "single_runs": len(singles),
        "warm_s": warm,
        "warm_samples": n,
        "peak_rss": max(s["peak_rss_bytes"] for s in singles),
        "arena_bytes": singles[0]["arena_bytes"],
        "weights_bytes": singles[0]["weights_bytes"],
        "block": singles[0]["block"],
        "load_s": max(b["load_s"] for b in batches),
    }


def time_norse(spec: ModelSpec, model_path: Path, folder: Path, threads: int, args: argparse.Namespace) -> dict:
    request = folder / f"norse_{threads}t.json"
    fields = {"model": str(model_path), "input": str(folder / "x.npy"), "input_shape": list(spec.input_shape)}
    fields |= {"timesteps": spec.timesteps, "stepwise": spec.stepwise, "threads": threads, "runs": args.runs}
    request.write_text(json.dumps(fields | {"seconds": args.model_seconds}))
    run_worker("norse-model", request)
    return json.loads(request.with_suffix(".out.json").read_text())


POOL_FUNCTIONS = ("masic_parallel_launch", "wait_until", "run_share", "worker_main", "new_job_or_shutdown")
POOL_FUNCTIONS += ("all_workers_done", "masic_parallel_barrier")


def code_map(binary: Path, kernels: set[str]) -> tuple[list[int], list[str]]:
    """Sorted start addresses and names of the artifact's code: each kernel's exported symbol (masic_*) and the
    parallel closures it launches (no symbol of their own: found as the rip-relative addresses its code loads into
    the first argument register), the thread pool, and everything else under its own symbol."""
    listing = subprocess.run(["nm", "-n", str(binary)], capture_output=True, text=True, check=True).stdout
    starts: list[tuple[int, str]] = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in "tTwW":
            continue
        address, name = int(parts[0], 16), parts[2]
        starts.append((address, name))
        if name in kernels:
            span = [f"--start-address={address}", f"--stop-address={address + 256}"]
            objdump = ["objdump", "-d", "--no-show-raw-insn", *span, str(binary)]
            code = subprocess.run(objdump, capture_output=True, text=True, check=True).stdout
            for target in re.findall(r"lea\s+0x[0-9a-f]+\(%rip\),%rdi\s+# ([0-9a-f]+)", code):
                starts.append((int(target, 16), name))
    starts.sort()
    return [a for a, _ in starts], [n for _, n in starts]


def perf_profile(out: Path, folder: Path, threads: int, load_s: float) -> dict[str, float] | None:
    """Share of the CPU samples of a labelled run's inference phase (perf record, started after the load) in each
    kernel symbol, the thread pool, the rest of the program and the OS; None without perf."""
    if shutil.which("perf") is None or shutil.which("objdump") is None:
        return None
    data = folder / f"perf_{threads}t.data"
    delay_ms = str(int(1e3 * load_s) + 100)
    command = ["perf", "record", "-q", "-F", "2000", "-D", delay_ms, "-o", str(data), "--", str(out / "model")]
    command += ["--input", str(folder / "xs.npy"), "--labels", str(folder / "ys.npy"), "--threads", str(threads)]
    if subprocess.run([*command, "--no-exit"], capture_output=True, check=False).returncode != 0:
        return None
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip"], capture_output=True, text=True)
    kernels = set(json.loads((out / "manifest.json").read_text())["kernels"])
    addresses, names = code_map(out / "model", kernels)
    counts: Counter = Counter()
    for line in script.stdout.split():
        ip = int(line, 16)
        k = bisect.bisect_right(addresses, ip) - 1
        if ip >= 1 << 47:
            counts["[OS]"] += 1
        elif k < 0:
            counts["[unknown]"] += 1
        elif names[k] in POOL_FUNCTIONS:
            counts["[thread pool]"] += 1
        elif names[k] in kernels:
            counts[names[k]] += 1
        else:
            counts["[loader, libc]"] += 1
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()} if total else None


def bench_model(
    label: str,
    spec: ModelSpec,
    budget: int | None,
    model_path: Path,
    x: np.ndarray,
    work: Path,
    args: argparse.Namespace,
) -> dict:
    """Compiles the model (under `budget`, if any) and times it against Norse on --threads threads (and on one,
    with --one-thread)."""
    folder = work / label
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    masic_compile(model_path, spec, out, budget)
    np.save(folder / "x.npy", x)
    ours = time_masic(out, folder, x, args.threads, args)
    norse = time_norse(spec, model_path, folder, args.threads, args)
    result = {
        "timesteps": spec.timesteps,
        "input_shape": list(spec.input_shape),
        "masic": ours,
        "norse": norse,
        "speedup": norse["best_s"] / ours["best_s"],
        "rss_ratio": norse["peak_rss"] / ours["peak_rss"],
        "rss_ratio_after_imports": norse["rss_after_imports"] / ours["peak_rss"],
        "target_speedup": spec.min_speedup,
        "budget": budget,
    }
    result["perf"] = perf_profile(out, folder, args.threads, ours["load_s"])
    if args.one_thread and args.threads != 1:
        ours1, norse1 = time_masic(out, folder, x, 1, args), time_norse(spec, model_path, folder, 1, args)
        result["one_thread"] = {"masic": ours1, "norse": norse1, "speedup": norse1["best_s"] / ours1["best_s"]}
        result["one_thread"]["perf"] = perf_profile(out, folder, 1, ours1["load_s"])
        # each side in its better configuration: robust to a loaded machine stalling a thread pool
        best_norse, best_ours = min(norse["best_s"], norse1["best_s"]), min(ours["best_s"], ours1["best_s"])
        result["speedup_best_config"] = best_norse / best_ours
    return result


def mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def print_models(results: dict[str, dict], threads: int) -> None:
    print("\n== 2. whole model, batch 1, one inference: masic (x86_64 artifact) vs Norse eager (own process), ms ==")
    print(
        f"{'model':<12}{'T':>3}{'threads':>8}{'masic':>9}{'(warm)':>9}{'(single)':>9}{'norse':>10}{'(median)':>10}"
        f"{'(first)':>10}{'runs':>6}{'speedup':>9}{'target':>8}{'best config':>17}"
    )
    for name, r in results.items():
        rows = [(threads, r["masic"], r["norse"], r["speedup"])]
        if "one_thread" in r:
            one = r["one_thread"]
            rows.append((1, one["masic"], one["norse"], one["speedup"]))
        for k, (count, ours, norse, speedup) in enumerate(rows):
            target = ""
            if k == 0:
                target = f"{r['target_speedup']:>6.0f}x {'ok' if speedup >= r['target_speedup'] else 'MISS':<4}"
            if k == 0 and "speedup_best_config" in r:
                best = r["speedup_best_config"]
                target += f"{best:>9.1f}x {'ok' if best >= r['target_speedup'] else 'MISS'}"
            print(
                f"{name if k == 0 else '':<12}{r['timesteps'] if k == 0 else '':>3}{count:>8}"
                f"{1e3 * ours['best_s']:>9.3f}{1e3 * ours['warm_s']:>9.3f}{1e3 * ours['single_s']:>9.3f}"
                f"{1e3 * norse['best_s']:>10.3f}"
                f"{1e3 * norse['median_s']:>10.3f}{1e3 * norse['first_s']:>10.3f}{norse['runs']:>6}"
                f"{speedup:>8.1f}x{target}"
            )
    print("(masic: the better of warm, the best per-sample time of labelled runs of the sample repeated (a mean over")
    print(" the run's samples), and single, the best one-sample run; norse: best of `runs` calls after two warm-up")
    print(f" calls; speedup = norse / masic; the issue's targets are for {threads} threads; best config: each side's")
    print(" better time over 1 and --threads threads, norse / masic: what a loaded machine cannot inflate by stalling")
    print(" one side's thread pool)")
    print(f"\npeak RSS, MiB (target: Norse's process peak >= {RSS_TARGET:g}x the compiled program's)")
    print(
        f"{'model':<12}{'masic peak':>11}{'arena':>9}{'weights':>9}{'norse peak':>11}{'after import':>13}"
        f"{'after load':>11}{'ru_maxrss':>10}{'ratio':>8}{'(imports)':>10}"
    )
    for name, r in results.items():
        ours, n = r["masic"], r["norse"]
        ok = "ok" if r["rss_ratio"] >= RSS_TARGET else "MISS"
        print(
            f"{name:<12}{mib(ours['peak_rss']):>11}{mib(ours['arena_bytes']):>9}{mib(ours['weights_bytes']):>9}"
            f"{mib(n['peak_rss']):>11}{mib(n['rss_after_imports']):>13}{mib(n['rss_after_load']):>11}"
            f"{mib(n['ru_maxrss']):>10}{r['rss_ratio']:>7.1f}x{r['rss_ratio_after_imports']:>9.1f}x {ok}"
        )
    print("(peaks are VmHWM; ratio = norse peak / masic peak; (imports) = norse RSS right after importing torch and")
    print(" norse / masic peak; ru_maxrss counts what Linux carries over from the parent process: an upper bound)")


# --------------------------------------------------------------------------------------------------------------
# Part 3: spikes, activation bytes, accumulate-only kernels
# --------------------------------------------------------------------------------------------------------------


def record_values(graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every value of every step, (T, *shape), from the reference interpreter (masic.ir.interpret.run)."""
    from masic.ir import interpret

    log: dict[str, list[np.ndarray]] = {}

    class Recording(interpret._Values):
        def store(self, name, value: np.ndarray) -> None:  # name: a masic.ir.names.BufferId, logged by its text
            super().store(name, value)
            log.setdefault(str(name), []).append(np.array(value, dtype=np.float32, copy=True))

    original = interpret._Values
    interpret._Values = Recording
    try:
        interpret.run(graph, x)
    finally:
        interpret._Values = original
    return {name: np.stack(arrays) for name, arrays in log.items()}


def spike_values(graph, values: dict[str, np.ndarray]) -> set[str]:
    """Values that hold spikes: spiking neurons' outputs (not probes), NIR thresholds, and what spike-preserving ops
    (pooling max, views, copies, relu) or average pooling that happens to stay 0/1 make of them."""
    from masic.ir.ops import neuron_op

    spikes: set[str] = set()
    for node in graph.nodes:
        definition = neuron_op(node.op)
        if (definition and definition.spiking and not node.attr("probe", "")) or node.op == "threshold":
            spikes.add(node.name)
        elif node.inputs and all(v in spikes for v in node.inputs):
            binary = node.name in values and bool(np.isin(values[node.name], (0.0, 1.0)).all())
            if node.op in SPIKE_PRESERVING or (node.op in ("avgpool2d", "adaptive_avgpool2d") and binary):
                spikes.add(node.name)
    return spikes


def peak_live(graph, nbytes: Callable[[object], int], in_place: bool) -> int:
    """Peak over the step's positions of the bytes of live activations (all values but the input, the output and
    views; a view keeps its operand alive), each live from its producer through its last reader. With `in_place`,
    a neuron's output shares its input's storage when it is that input's last reader and as large (as the planner
    does for f32 values)."""
    from masic.ir.ops import neuron_op

    nodes = graph.nodes
    position = {node.name: k for k, node in enumerate(nodes)}
    base: dict[str, str] = {}
    for node in nodes:
        if node.op in VIEWS:
            base[node.name] = base.get(node.inputs[0], node.inputs[0])
    end: dict[str, int] = {}
    for node in nodes:
        for value in node.inputs:
            root = base.get(value, value)
            end[root] = max(end.get(root, 0), position[node.name])
    intervals: dict[str, list[int]] = {}  # storage -> [start, end, bytes]
    owner: dict[str, str] = {}
    for node in nodes:
        if node.op in (*VIEWS, "input") or node.name == graph.output:
            continue
        pos, size = position[node.name], nbytes(node)
        last = end.get(node.name, pos)
        source = base.get(node.inputs[0], node.inputs[0]) if node.inputs else None
        storage = owner.get(source) if source else None
        if in_place and neuron_op(node.op) and storage and end.get(source) == pos and intervals[storage][2] == size:
            intervals[storage][1] = max(intervals[storage][1], last)
            owner[node.name] = storage
        else:
            intervals[node.name] = [pos, last, size]
            owner[node.name] = node.name
    return max((sum(s for a, b, s in intervals.values() if a <= p <= b) for p in range(len(nodes))), default=0)


MEMORY = ("f32", "u8", "bit")  # the plans part 3 compares (see activation_bytes)


def plan_bytes(graph) -> dict:
    """A plan's arena, lower bound, sum of activation buffers and peak of live activations, and its buffers' bytes
    by kind."""
    by_kind = Counter()
    for buffer in graph.plan.buffers:
        by_kind[buffer.kind] += buffer.size
    return {
        "arena": graph.plan.arena_bytes,
        "lower_bound": graph.plan.lower_bound,
        "activation": by_kind["activation"],
        "peak_live": peak_live(graph, lambda n: n.type.nbytes, in_place=True),
        "by_kind": dict(by_kind),
    }


def activation_bytes(graph, u8_graph, f32_graph) -> dict:
    """The plan's bytes by plan ("bit": the plan `masic compile` makes, spikes bit-packed where the layout pass
    packs them and one byte each elsewhere; "u8": the same graph with every spike one byte, `plan_graph(...,
    spikes="bytes")`; "f32": the model planned with every value float32), and the bytes of the spike tensors with
    storage of their own (views share it) in each."""
    owned = [n for n in graph.nodes if n.type.dtype in ("spike", "bits") and n.op not in VIEWS]
    memory = {"f32": plan_bytes(f32_graph), "u8": plan_bytes(u8_graph), "bit": plan_bytes(graph)}
    memory["f32"]["spikes"] = sum(4 * n.type.numel for n in owned)
    memory["u8"]["spikes"] = sum(n.type.numel for n in owned)
    memory["bit"]["spikes"] = sum(n.type.nbytes for n in owned)
    return memory | {"spike_tensors": len(owned), "bit_packed": sum(n.type.dtype == "bits" for n in owned)}


def spike_report(graph, x: np.ndarray, u8_graph, f32_graph) -> dict:
    """Spike rates of the spiking layers and of the inputs of convs and dense layers, and the activation bytes
    (`u8_graph`: the same graph with every spike one byte, `f32_graph`: the model planned without the spike
    dtype)."""
    from masic.ir.ops import neuron_op

    values = record_values(graph, x)
    spikes = spike_values(graph, values)
    layers = []
    for node in graph.nodes:
        definition = neuron_op(node.op)
        if node.name in spikes and (definition or node.op == "threshold"):
            v = values[node.name]
            per_step = (v != 0).reshape(len(v), -1).mean(axis=1)
            layers.append(
                {
                    "layer": node.name,
                    "op": node.op,
                    "neurons": node.type.numel,
                    "rate": float(per_step.mean()),
                    "per_step": per_step.round(4).tolist(),
                }
            )
    consumers = []
    for node in graph.nodes:
        if node.op in ("conv2d", "dense"):
            v = values[node.inputs[0]]
            binary = bool(np.isin(v, (0.0, 1.0)).all())
            consumers.append(
                {
                    "node": node.name,
                    "op": node.op,
                    "input": node.inputs[0],
                    "spikes": node.inputs[0] in spikes and binary,
                    "rate": float((v != 0).mean()),
                }
            )
    return {"layers": layers, "consumers": consumers, "memory": activation_bytes(graph, u8_graph, f32_graph)}


def separate_twins(kernel) -> tuple[object, object]:
    """The two kernels a fused one replaces: the layer writing its output, and the neuron reading it."""
    layer = dataclasses.replace(
        kernel, symbol=f"{kernel.symbol}_layer", neuron=None, spikes=tuple(n for n in kernel.spikes if n != "z")
    )
    spikes = ("z",) if "z" in kernel.spikes else ()
    return layer, dataclasses.replace(kernel.neuron, symbol=f"{kernel.symbol}_neuron", spikes=spikes)


def fusion_bench(lib: Library, entries: list[KernelEntry], seconds: float) -> list[dict]:
    """Each fused kernel of the models against its two separate kernels (layer, then neuron), masic both."""
    rng = np.random.default_rng(0)
    rows = []
    for entry in (e for e in entries if getattr(e.kernel, "neuron", None) is not None):
        layer, neuron = separate_twins(entry.kernel)
        fused = measure(lib.runner(entry.kernel.symbol, kernel_arrays(entry.kernel, rng)), seconds)
        apart = [measure(lib.runner(k.symbol, kernel_arrays(k, rng)), seconds) for k in (layer, neuron)]
        rows.append(
            {
                "type": entry.kind,
                "shape": entry.shape,
                "calls": entry.calls,
                "fused_us": fused["best_ms"] * 1e3,
                "layer_us": apart[0]["best_ms"] * 1e3,
                "neuron_us": apart[1]["best_ms"] * 1e3,
                "unstored_bytes": math.prod(layer.arg_shapes()["y"]) * 4,
            }
        )
    return rows


def print_fusion(rows: list[dict], threads: int) -> None:
    print(f"\n== 1b. neuron epilogues: fused kernel vs the layer's and the neuron's own kernels, {threads} threads ==")
    print(f"{'type':<30}{'shape':<36}{'fused us':>10}{'layer us':>10}{'neuron us':>10}{'saved':>8}{'unstored KiB':>14}")
    for r in sorted(rows, key=lambda r: (r["type"], r["shape"])):
        apart = r["layer_us"] + r["neuron_us"]
        print(
            f"{r['type'][:29]:<30}{r['shape'][:35]:<36}{r['fused_us']:>10.1f}{r['layer_us']:>10.1f}"
            f"{r['neuron_us']:>10.1f}{1 - r['fused_us'] / apart:>8.0%}{r['unstored_bytes'] / 1024:>14.1f}"
        )
    print("(saved = 1 - fused / (layer + neuron); unstored = the layer's float32 output the fused kernel never writes)")


def nchw_twin(kernel) -> list:
    """For a conv or pool reading or writing a channel-blocked activation (NCHW{c}c), the same kernel on NCHW."""
    blocks = {name: getattr(kernel, name) for name in ("in_block", "out_block") if getattr(kernel, name, 1) > 1}
    return [dataclasses.replace(kernel, symbol=f"{kernel.symbol}_nchw", **dict.fromkeys(blocks, 1))] if blocks else []


def layout_bench(lib: Library, entries: list[KernelEntry], seconds: float) -> list[dict]:
    """Each kernel of the models that reads or writes a channel-blocked activation against its NCHW twin."""
    rng = np.random.default_rng(0)
    rows = []
    for entry in entries:
        for twin in nchw_twin(entry.kernel):
            blocked = measure(lib.runner(entry.kernel.symbol, kernel_arrays(entry.kernel, rng)), seconds)
            nchw = measure(lib.runner(twin.symbol, kernel_arrays(twin, rng)), seconds)
            reads, writes = getattr(entry.kernel, "in_block", 1), getattr(entry.kernel, "out_block", 1)
            stored = "->".join(f"NCHW{b}c" if b > 1 else "NCHW" for b in (reads, writes))
            times = {"blocked_us": blocked["best_ms"] * 1e3, "nchw_us": nchw["best_ms"] * 1e3}
            rows.append(
                {"type": entry.kind, "shape": entry.shape, "calls": dict(entry.calls), "stored": stored, **times}
            )
    return rows


def print_layouts(rows: list[dict], threads: int) -> None:
    print(f"\n== 1c. activation layouts: kernels reading or writing NCHW{{c}}c vs NCHW twins, {threads} threads ==")
    print(f"{'type':<24}{'shape':<36}{'layout (in->out)':<22}{'calls':>6}{'blocked us':>12}{'NCHW us':>10}")
    for r in sorted(rows, key=lambda r: (r["type"], r["shape"])):
        print(
            f"{r['type'][:23]:<24}{r['shape'][:35]:<36}{r['stored']:<22}{sum(r['calls'].values()):>6}"
            f"{r['blocked_us']:>12.2f}{r['nchw_us']:>10.2f}"
        )
    for model in sorted({model for r in rows for model in r["calls"]}):
        blocked, nchw = (sum(r[key] * r["calls"].get(model, 0) for r in rows) for key in ("blocked_us", "nchw_us"))
        print(f"{model}: these kernels take {blocked:.1f} us per inference, {nchw:.1f} us on NCHW")


def multiply_twin(kernel):
    """masic's multiply-accumulate dense kernel with the shape of an accumulate-only one, reading the same spikes
    as bytes."""
    from masic.codegen.kernels import DenseKernel

    symbol = f"{kernel.symbol}_multiply"  # of the layer alone, when a neuron is fused into it
    return DenseKernel(
        symbol, kernel.in_features, kernel.out_features, kernel.bias, kernel.steps, kernel.step_names("x")
    )


def storage_twins(kernel) -> list:
    """For a dense layer of spikes (accumulating, or multiplying in blocks of steps), masic's accumulate-only kernel
    of its shape for one step, reading the spikes as bytes and as bits."""
    from masic.codegen.kernels import AccumulateDenseKernel

    dense = type(kernel).__name__ in ("DenseKernel", "AccumulateDenseKernel")
    if not dense or kernel.arg_dtype(kernel.step_names("x")[0]) == "float32":  # not a dense layer of spikes
        return []
    shape = (kernel.in_features, kernel.out_features, kernel.bias)
    return [AccumulateDenseKernel(f"{kernel.symbol}_{kind}", *shape, packed=kind == "bits") for kind in ("u8", "bits")]


def twins(kernel) -> list:
    """The kernels parts 1b, 1c and 3 time next to a model's kernel: for dense layers of spikes, the multiplying twin
    of an accumulating one and the accumulating kernels over bytes and bits; for a fused kernel, its separate layer
    and neuron kernels; for a kernel reading or writing a channel-blocked activation, its NCHW twin."""
    multiply = [multiply_twin(kernel)] if type(kernel).__name__ == "AccumulateDenseKernel" else []
    separate = list(separate_twins(kernel)) if getattr(kernel, "neuron", None) else []
    return multiply + storage_twins(kernel) + separate + nchw_twin(kernel)


def accumulate_bench(lib: Library, entry: KernelEntry, rate: float, seconds: float) -> dict | None:
    """masic's conv / dense kernel (for dense layers of spikes its accumulate-only kernel, and its multiplying
    twin) against the accumulate-only C prototype on the same random spikes at `rate`; a fused kernel's layer
    without its neuron."""
    from masic.codegen.weights import stored_weight

    k = entry.kernel if getattr(entry.kernel, "neuron", None) is None else separate_twins(entry.kernel)[0]
    name = type(k).__name__
    if (name == "Conv2dKernel" and k.groups != 1) or getattr(k, "steps", 1) > 1:
        return None
    rng = np.random.default_rng(1)
    shapes = k.arg_shapes()
    x = (rng.random(k.in_shape if name == "Conv2dKernel" else k.in_features) < rate).astype(np.float32)
    # the prototype reads and writes NCHW; masic's conv may read and write blocks of channels (NCHW{c}c)
    in_block, out_block = getattr(k, "in_block", 1), getattr(k, "out_block", 1)
    arrays = kernel_arrays(k, rng, stored_weight(x, f"NCHW{in_block}c") if in_block > 1 else x)
    args = dict(zip(shapes, arrays, strict=True))
    bias = args.get("b", np.zeros(1, dtype=np.float32))
    y = np.zeros_like(args["y"])
    if name in ("DenseKernel", "AccumulateDenseKernel"):
        wt = args["w"] if name == "AccumulateDenseKernel" else np.ascontiguousarray(args["w"].T)
        dims = np.array([k.in_features, k.out_features, int(k.bias)], dtype=np.int32)
        events = np.zeros(k.in_features, dtype=np.int32)
        proto = ("acc_dense", [x, wt, bias, y, dims, events])
    else:
        weight = args["w"]
        if weight.ndim == 5:  # stored in blocks of output channels (OIHW{ob}o, masic.codegen.weights): OIHW again
            weight = weight.transpose(0, 4, 1, 2, 3).reshape(k.out_channels, *weight.shape[1:4])
        wt = np.ascontiguousarray(weight.transpose(1, 2, 3, 0))
        (c, h, w), (o, oh, ow) = k.in_shape, k.out_shape()
        top, _, side = k.pads()
        dims = [c, h, w, o, *k.kernel, *k.stride, top, side, *k.dilation, oh, ow, int(k.bias)]
        events = np.zeros(3 * c * h * w, dtype=np.int32)
        acc = np.zeros(oh * ow * o, dtype=np.float32)
        proto = ("acc_conv2d", [x, wt, bias, y, np.array(dims, dtype=np.int32), events, acc])
    lib.call(k.symbol, arrays)
    lib.call(*proto)
    expected = args["y"]
    if out_block > 1:  # (C/c, H, W, c) in the prototype's order, (C/c, c, H, W): NCHW
        expected = expected.transpose(0, 3, 1, 2).reshape(y.shape)
    error = float(np.abs(y - expected).max() / max(1e-6, float(np.abs(expected).max())))
    if error > 1e-4:
        raise AssertionError(f"accumulate-only prototype disagrees with {entry.shape}: relative error {error:.2e}")
    timings = {
        "masic": measure(lib.runner(k.symbol, arrays), seconds),
        "accumulate": measure(lib.runner(*proto), seconds),
        "max_rel_error": error,
    }
    if name == "AccumulateDenseKernel":
        twin = [x.astype(np.uint8), np.ascontiguousarray(args["w"].T), *([bias] if k.bias else []), np.zeros_like(y)]
        timings["multiply"] = measure(lib.runner(multiply_twin(entry.kernel).symbol, twin), seconds)
    return timings


def storage_bench(lib: Library, entry: KernelEntry, rate: float, seconds: float) -> dict | None:
    """For a dense layer of spikes, the accumulate-only kernel of one step reading random spikes at `rate` as bytes
    and as bits (`storage_twins`), checked to give the same floats."""
    from masic.ir.graph import pack_bits

    pair = storage_twins(entry.kernel)
    if not pair:
        return None
    rng = np.random.default_rng(2)
    spikes = (rng.random(entry.kernel.in_features) < rate).astype(np.uint8)
    outputs, timings = [], {}
    for kernel, x in zip(pair, (spikes, pack_bits(spikes)), strict=True):
        arrays = kernel_arrays(kernel, np.random.default_rng(3))  # the same weights and bias for both
        arrays[0] = x
        lib.call(kernel.symbol, arrays)
        outputs.append(arrays[-1].copy())
        timings["bits" if kernel.packed else "bytes"] = measure(lib.runner(kernel.symbol, arrays), seconds)
    if not np.array_equal(*outputs):
        raise AssertionError(f"the accumulate-only kernel {entry.shape} gives other sums over bits than over bytes")
    return timings


def print_spikes(reports: dict[str, dict]) -> None:
    print("\n== 3. spikes: rates on the benchmark input (reference interpreter), activation bytes ==")
    print(f"{'model':<10}{'layer':<28}{'op':<10}{'neurons':>9}{'rate':>8}  per step")
    for name, report in reports.items():
        for layer in report["layers"]:
            steps = " ".join(f"{r:.2f}" for r in layer["per_step"][:16])
            head = f"{name:<10}{layer['layer'][:27]:<28}{layer['op']:<10}{layer['neurons']:>9}"
            print(f"{head}{layer['rate']:>8.3f}  {steps}")
    print("\ninputs of convs / dense layers:")
    print(f"{'model':<10}{'node':<28}{'op':<8}{'input':<28}{'spikes':>7}{'rate':>8}")
    for name, report in reports.items():
        for c in report["consumers"]:
            print(
                f"{name:<10}{c['node'][:27]:<28}{c['op']:<8}{c['input'][:27]:<28}"
                f"{'yes' if c['spikes'] else 'no':>7}{c['rate']:>8.3f}"
            )
    print("\nbytes: f32 = planned with every value float32, u8 = every spike one byte, bit = planned now (spikes")
    print("bit-packed where only accumulating dense layers read them, else one byte each)")
    columns = (("arena", "arena"), ("bound", "lower_bound"), ("activ.", "activation"), ("spikes", "spikes"))
    columns += (("peak", "peak_live"),)
    print(f"{'model':<10}" + "".join(f"{f'{label} f32':>11}{'u8':>11}{'bit':>11}" for label, _ in columns) + "  packed")
    for name, report in reports.items():
        m = report["memory"]
        cells = "".join(f"{m[plan][key]:>11}" for _, key in columns for plan in MEMORY)
        print(f"{name:<10}{cells}  {m['bit_packed']}/{m['spike_tensors']}")
    print("(bound: the plan's lower bound; activ.: sum of the plan's activation buffers; spikes: spike tensors with")
    print(" storage of their own; peak: largest sum of activations live at one position; packed: spike tensors")
    print(" bit-packed of all)")


def project(
    model: str, suffix: str, entries: list[KernelEntry], fed: list[tuple[KernelEntry, dict]], result: dict
) -> dict:
    """A model's kernel time per inference now and with its spike-fed convs / dense layers accumulate-only: kernel
    bench times x calls, the spike-fed ones replaced by the prototype's times; scaled to the measured time."""
    kernels_ms = sum(getattr(e, f"masic{suffix}")["best_ms"] * e.calls.get(model, 0) for e in entries)
    fed_ms = sum(getattr(e, f"masic{suffix}")["best_ms"] * row["calls"] for e, row in fed)
    accumulate_ms = sum(row[f"accumulate_ms{suffix}"] * row["calls"] for _, row in fed)
    either_ms = sum(
        min(getattr(e, f"masic{suffix}")["best_ms"], row[f"accumulate_ms{suffix}"]) * row["calls"] for e, row in fed
    )
    projection = {"kernels_ms": kernels_ms, "spike_fed_ms": fed_ms, "accumulate_ms": accumulate_ms}
    projection["projected_ms"] = kernels_ms - fed_ms + accumulate_ms
    projection["projected_where_faster_ms"] = kernels_ms - fed_ms + either_ms
    timed = result.get("one_thread", {}) if suffix else result
    if "masic" in timed:
        measured = 1e3 * timed["masic"]["best_s"]
        projected = measured * projection["projected_ms"] / kernels_ms
        projection |= {"measured_ms": measured, "projected_measured_ms": projected}
        projection["projected_speedup_vs_norse"] = 1e3 * timed["norse"]["best_s"] / projected
    return projection


def accumulate_line(r: dict, calls: str, first: str, second: str, faster: str = "second") -> str:
    """One row of the accumulate tables: the layer, then per thread count (2, then 1) the two kernels' us per call
    and how many times faster the `faster` one is."""
    line = f"{r['model']:<10}{r['node'][:13]:<14}{r['shape'][:29]:<30}{r['rate']:>7.3f}{calls}"
    for suffix in ("", "1"):
        if f"{second}{suffix}" in r:
            a, b = r[f"{first}{suffix}"], r[f"{second}{suffix}"]
            line += f"{1e3 * a:>10.2f}{1e3 * b:>10.2f}{(a / b if faster == 'second' else b / a):>9.1f}x"
    return line


def print_accumulate(rows: list[dict], packed_rows: list[dict], projections: dict[str, dict], threads: int) -> None:
    print("\naccumulate-only prototype (C, same thread pool) vs masic's kernel on random spikes at the measured rate,")
    print("us per call:")
    print(
        f"{'model':<10}{'node':<14}{'shape':<30}{'rate':>7}{'calls':>6}"
        f"{f'-------- {threads} threads --------':^30}{'--------- 1 thread ---------':^30}"
    )
    print(f"{'':<67}" + f"{'masic':>10}{'accum.':>10}{'speedup':>10}" * 2)
    for r in rows:
        print(accumulate_line(r, f"{r['calls']:>6}", "masic_ms", "accumulate_ms"))
    dense = [r for r in rows if "multiply_ms" in r]
    if dense:
        print("\ndense layers of spikes, us per call: masic's accumulate-only kernel vs its multiplying twin:")
        for r in dense:
            print(accumulate_line(r, "", "masic_ms", "multiply_ms", faster="first"))
    if packed_rows:
        print("\ndense layers of spikes, us per call: the accumulate-only kernel of one step reading the spikes as")
        print("bytes vs as bits (the same sums; shape ending in bits: the model's kernel reads bits; in x steps: the")
        print("model multiplies, in blocks of steps):")
        for r in packed_rows:
            print(accumulate_line(r, "", "bytes_ms", "bits_ms"))
    print("\nprojected per inference (per-kernel best time x calls), ms:")
    print(
        f"{'model':<10}{'threads':>8}{'kernels':>9}{'spike-fed':>11}{'-> accum.':>11}{'projected':>11}"
        f"{'x faster':>9}{'if faster':>10}{'x faster':>9}{'measured':>10}{'-> proj.':>10}{'vs norse':>9}"
    )
    for name, by_threads in projections.items():
        for label, p in by_threads.items():
            count = threads if label == "threads" else 1
            measured = f"{p['measured_ms']:>10.3f}{p['projected_measured_ms']:>10.3f}" if "measured_ms" in p else ""
            vs_norse = f"{p['projected_speedup_vs_norse']:>8.1f}x" if "measured_ms" in p else ""
            print(
                f"{name:<10}{count:>8}{p['kernels_ms']:>9.3f}{p['spike_fed_ms']:>11.3f}{p['accumulate_ms']:>11.3f}"
                f"{p['projected_ms']:>11.3f}{p['kernels_ms'] / p['projected_ms']:>8.2f}x"
                f"{p['projected_where_faster_ms']:>10.3f}{p['kernels_ms'] / p['projected_where_faster_ms']:>8.2f}x"
                f"{measured}{vs_norse}"
            )
    print("(kernels: the model's kernels, isolated; spike-fed: its convs / dense layers fed by spikes, now and as the")
    print(" accumulate-only prototype; projected = kernels - spike-fed + accumulate; if faster: the prototype only")
    print(" where it beats masic's kernel; -> proj.: the measured time scaled by projected / kernels; vs norse:")
    print(" Norse best / that)")


def print_perf(model: str, result: dict, symbols: dict[str, KernelEntry], threads: int) -> None:
    """The perf profiles of the artifact's inference phase: shares of CPU samples, per kernel type and the top
    kernels."""
    for count, profile in ((threads, result.get("perf")), (1, result.get("one_thread", {}).get("perf"))):
        if not profile:
            continue
        by_type: Counter = Counter()
        for name, share in profile.items():
            entry = symbols.get(f"symbol:{name}")
            by_type[entry.kind if entry else name] += share
        print(f"  perf, {count} thread(s), share of CPU samples while inferring: ", end="")
        print(", ".join(f"{kind} {100 * share:.1f}%" for kind, share in by_type.most_common(8)))
        top = [(n, s) for n, s in profile.items() if f"symbol:{n}" in symbols][:4]
        print("    top kernels: " + ", ".join(f"{symbols[f'symbol:{n}'].shape} {100 * s:.1f}%" for n, s in top))


def print_breakdown(model: str, entries: list[KernelEntry], measured_ms: float | None) -> None:
    """Where a model's kernel time goes: calls x best time per kernel, with PyTorch's time for the same calls."""
    rows = [(e, e.calls[model]) for e in entries if model in e.calls and e.masic]
    total = sum(e.masic["best_ms"] * n for e, n in rows)
    total_torch = sum(e.torch["best_ms"] * n for e, n in rows if e.torch)
    total1 = sum(e.masic1["best_ms"] * n for e, n in rows if e.masic1)
    by_type = Counter()
    for e, n in rows:
        by_type[e.kind] += e.masic["best_ms"] * n
    measured = f"; measured {measured_ms:.3f} ms per inference" if measured_ms else ""
    one = f" (on one thread {total1:.3f})" if any(e.masic1 for e, _ in rows) else ""
    print(f"\n{model}: kernels {total:.3f} ms per inference{one}{measured}")
    print(f"  PyTorch ops for the same calls: {total_torch:.3f} ms")
    print("  by type: " + ", ".join(f"{kind} {100 * ms / total:.0f}%" for kind, ms in by_type.most_common()))
    for e, n in sorted(rows, key=lambda r: -r[0].masic["best_ms"] * r[1])[:8]:
        ms = e.masic["best_ms"] * n
        one = f"{e.masic1['best_ms'] * n:>9.3f}" if e.masic1 else f"{'-':>9}"
        torch_ms = e.torch["best_ms"] * n if e.torch else float("nan")
        print(
            f"  {e.kind[:21]:<22}{e.shape[:35]:<36}x{n:<5}{ms:>9.3f} ms {100 * ms / total:>5.1f}%"
            f"  1 thread {one}  torch {torch_ms:>9.3f}"
        )


# --------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------


def parse_source(text: str) -> tuple[str, int | None]:
    from masic.units import parse_bytes

    name, _, budget = text.partition("@")
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return name, parse_bytes(budget) if budget else None


def budget_label(name: str, budget: int | None) -> str:
    return name if budget is None else f"{name}@{budget / 1e6:g}MB"


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/speed"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per whole model and side, best kept")
    parser.add_argument("--kernel-seconds", type=float, default=0.3, help="timing budget per kernel and side")
    parser.add_argument("--model-seconds", type=float, default=2.0, help="timing budget per whole model and side")
    parser.add_argument(
        "--one-thread",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time everything on one thread (less sensitive to other processes than a thread pool)",
    )
    parser.add_argument("--models", default="digits,convnet4,vgg11")
    parser.add_argument("--kernel-models", default="mobilenet_v2,mobilenet_v2@2MB", help="NAME[@BUDGET],...")
    parser.add_argument(
        "--budget-models", default="vgg11@32MB", help="NAME@BUDGET,...: also compiled under a budget (part 2)"
    )
    parser.add_argument("--skip", default="", help="parts to skip: kernels, models, spikes")
    parser.add_argument("--epochs", type=int, default=15, help="digits training epochs when no model is saved")
    parser.add_argument("--worker", choices=("torch-kernels", "norse-model"), help=argparse.SUPPRESS)
    parser.add_argument("request", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "torch-kernels":
        torch_kernels_worker(args.request)
        return 0
    if args.worker == "norse-model":
        norse_model_worker(args.request)
        return 0

    from masic.codegen.build import host_target

    skip = set(filter(None, args.skip.split(",")))
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    whole = [MODELS[name] for name in args.models.split(",") if name]
    extra = [parse_source(text) for text in args.kernel_models.split(",") if text]
    budgeted = [parse_source(text) for text in args.budget_models.split(",") if text]
    extra += [source for source in budgeted if source not in extra]
    results: dict = {"machine": machine() | {"target": host_target()}, "threads": args.threads}
    results["load_before"] = os.getloadavg()
    print(f"{results['machine']['cpu']}, {results['machine']['cores']} cores, {args.threads} threads on every side")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in results['load_before'])} (1, 5, 15 min)", flush=True)

    paths = {spec.name: save_model(spec.name, work, args.epochs) for spec in whole}
    paths |= {name: save_model(name, work, args.epochs) for name, _ in extra if name not in paths}
    inputs = {spec.name: model_input(spec) for spec in whole}
    graphs = {spec.name: plan_graph(paths[spec.name], spec, None) for spec in whole}
    for name, budget in extra:
        graphs[budget_label(name, budget)] = plan_graph(paths[name], MODELS[name], budget)
    started = time.perf_counter()
    entries, node_entry, node_calls = collect_kernels(graphs)
    print(f"{len(entries)} distinct kernels in {', '.join(graphs)}", flush=True)

    libs: dict[int, Library] = {}
    thread_counts = {args.threads: ""} | ({1: "1"} if args.one_thread and args.threads != 1 else {})
    if not {"kernels", "spikes"} <= skip:
        extra = [twin for e in entries for twin in twins(e.kernel)]
        path = build_library([e.kernel for e in entries] + extra, work / "lib")
        libs = {count: Library(path, count) for count in thread_counts}
    if "kernels" not in skip:
        for count, suffix in thread_counts.items():
            time_masic_kernels(libs[count], entries, args.kernel_seconds, suffix)
            time_torch_kernels(entries, count, args.kernel_seconds, work, suffix)
        summary = type_summary(entries)
        print_kernels(entries, summary, args.threads)
        results["kernel_types"] = summary
        results["fusion"] = fusion_bench(libs[args.threads], entries, args.kernel_seconds)
        print_fusion(results["fusion"], args.threads)
        results["layouts"] = layout_bench(libs[args.threads], entries, args.kernel_seconds)
        print_layouts(results["layouts"], args.threads)
    results["kernels"] = [
        {
            "type": e.kind,
            "shape": e.shape,
            "kernel": {"cls": type(e.kernel).__name__, **dataclasses.asdict(e.kernel)},
            "calls_per_inference": e.calls,
            "masic": e.masic,
            "torch": e.torch,
            "plain": e.plain,
            "ratio": e.ratio(),
            "masic_1thread": e.masic1,
            "torch_1thread": e.torch1,
            "plain_1thread": e.plain1,
            "ratio_1thread": e.ratio1(),
        }
        for e in entries
    ]

    models: dict[str, dict] = {}
    if "models" not in skip:
        runs = [(spec.name, spec, None) for spec in whole]
        runs += [(budget_label(name, budget), MODELS[name], budget) for name, budget in budgeted]
        for label, spec, budget in runs:
            print(f"  {label}: compiling and running ...", flush=True)
            x = inputs.get(spec.name)
            x = model_input(spec) if x is None else x
            try:
                models[label] = bench_model(label, spec, budget, paths[spec.name], x, work, args)
            except RuntimeError as err:
                print(f"  {label}: {err}")
                models[label] = {"error": str(err)}
        print_models({k: v for k, v in models.items() if "error" not in v}, args.threads)
    results["models"] = models

    if "spikes" not in skip:
        reports = {
            spec.name: spike_report(
                graphs[spec.name],
                inputs[spec.name],
                *(plan_graph(paths[spec.name], spec, None, spikes) for spikes in ("bytes", "f32")),
            )
            for spec in whole
        }
        print_spikes(reports)
        rows, packed_rows, projections = [], [], {}
        for spec in whole:
            name, fed_rows = spec.name, []
            for consumer in (c for c in reports[name]["consumers"] if c["spikes"]):
                entry = node_entry[name][f"node:{consumer['node']}"]
                calls = node_calls[name][consumer["node"]]
                row = consumer | {"model": name, "shape": entry.shape, "calls": calls}
                for count, suffix in thread_counts.items():
                    storage = storage_bench(libs[count], entry, consumer["rate"], args.kernel_seconds) or {}
                    row |= {f"{kind}_ms{suffix}": timing["best_ms"] for kind, timing in storage.items()}
                    timing = accumulate_bench(libs[count], entry, consumer["rate"], args.kernel_seconds)
                    if timing is None:
                        continue
                    row[f"masic_ms{suffix}"] = timing["masic"]["best_ms"]
                    row[f"accumulate_ms{suffix}"] = timing["accumulate"]["best_ms"]
                    if "multiply" in timing:
                        row[f"multiply_ms{suffix}"] = timing["multiply"]["best_ms"]
                    row["max_rel_error"] = max(row.get("max_rel_error", 0.0), timing["max_rel_error"])
                if "masic_ms" in row:
                    rows.append(row)
                    fed_rows.append((entry, row))
                if "bits_ms" in row:
                    packed_rows.append(row)
            if "kernels" not in skip:
                projections[name] = {
                    label: project(name, suffix, entries, fed_rows, models.get(name, {}))
                    for label, suffix in (("threads", ""), ("one_thread", "1"))
                    if suffix in thread_counts.values()
                }
        print_accumulate(rows, packed_rows, projections, args.threads)
        results["spikes"] = reports
        results["accumulate"] = {"kernels": rows, "bits_vs_bytes": packed_rows, "projections": projections}

    if "kernels" not in skip:
        print("\n== where masic's time goes (per-kernel best x calls per inference) ==")
        for label in [spec.name for spec in whole] + [budget_label(name, budget) for name, budget in budgeted]:
            measured = models.get(label, {}).get("masic", {}).get("best_s")
            print_breakdown(label, entries, 1e3 * measured if measured else None)
            if label in models and "error" not in models[label]:
                print_perf(label, models[label], node_entry[label], args.threads)
    for lib in libs.values():
        lib.close()
    results["load_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in results['load_after'])} (1, 5, 15 min)")
    (work / "speed.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"results: {work / 'speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

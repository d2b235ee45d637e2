"""Instructions per multiply-accumulate of layer kernels over spikes with float32, float16 and int8 weights on
aarch64, counted under qemu-aarch64 (exact and repeatable; no ARM machine here), for the Cortex-A72 (Pi 4) and
Cortex-A76 (Pi 5, with the dot-product extension) targets.

Each kernel is built for the target, linked into a small static program with runtime/parallel.c (one thread), and
run under qemu-aarch64 with bench/arm_lanes.c, a qemu plugin that counts the instructions executed and the lanes of
vector add / multiply-add instructions (fmla, fadd, add, mla, saddw, smlal, sdot, ...). One call's counts are the
difference between runs of 3 calls and of 1 (start-up and loading cancel). MACs are the layer's multiply-adds:
every tap of a conv or dense layer; for the accumulate-only dense layer, the row additions of the active inputs
(out_features per active input; spikes at rate 0.2). "vector share" is vector lanes / MACs: 1.0 when every MAC is
done by a lane of a vector instruction (other vector adds count too, e.g. the int16 -> int32 flushes, so it may
slightly exceed the MACs' own).

    python bench/compressed_arm.py [--workdir build/compressed_arm]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
from masic.targets import get_target

from bench.machine import cpu_model
from masic.codegen.build import build_object
from masic.codegen.kernels import (
    FLOAT,
    HALF,
    INT8,
    AccumulateDenseKernel,
    Conv2dKernel,
    DenseKernel,
    Kernel,
)
from masic.ir.graph import pack_bits

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "masic" / "codegen" / "runtime"
PLUGIN = Path(__file__).with_name("arm_lanes.c")
TARGETS = ("cortex-a72", "cortex-a76")
RATE = 0.2  # spike rate of the inputs
# Layers over spikes: conv vectorised along columns (a VGG-like map) and along output channels (a small map),
# dense over spike bytes (several steps per call), accumulate-only dense over bytes and over bit-packed words
LAYERS: list[Kernel] = [
    Conv2dKernel("conv_cols", (64, 16, 16), 64, (3, 3), padding=(1, 1), spikes=("x",)),
    Conv2dKernel("conv_blocked", (128, 4, 4), 128, (3, 3), padding=(1, 1), weight_layout="OIHW16o", spikes=("x",)),
    DenseKernel("dense_4_steps", 512, 256, steps=4, spikes=("x0", "x1", "x2", "x3")),
    AccumulateDenseKernel("accumulate", 1024, 512),
    AccumulateDenseKernel("accumulate_bits", 1024, 512, packed=True),
]
FORMATS = {FLOAT: "float32", HALF: "float16", INT8: "int8"}


def _data(k: Kernel, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every argument's initial contents: spikes at RATE, weights in [-1, 1] (int8 in [-127, 127])."""
    out = {}
    for name, shape in k.arg_shapes().items():
        dtype = k.arg_dtype(name)
        if name in k.packed_args():
            out[name] = pack_bits((rng.uniform(size=k.in_features) < RATE).astype(np.uint8))
        elif dtype == "uint8":
            out[name] = (rng.uniform(size=shape) < RATE).astype(np.uint8)
        elif dtype == INT8:
            out[name] = rng.integers(-127, 128, shape).astype(np.int8)
        elif name == "scratch":
            out[name] = np.zeros(k.scratch_bytes(), np.uint8)
        else:
            out[name] = rng.uniform(-1, 1, shape).astype(dtype)
    return out


def _macs(k: Kernel, data: dict[str, np.ndarray]) -> int:
    if isinstance(k, Conv2dKernel):
        return math.prod(k.out_shape()) * (k.in_shape[0] // k.groups) * math.prod(k.kernel)
    if isinstance(k, AccumulateDenseKernel):
        x = data["x"]
        active = sum(bin(int(word)).count("1") for word in x) if k.packed else int(x.sum())
        return active * k.out_features
    return k.in_features * k.out_features * k.steps


HARNESS = """#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "masic_model.h"
%(prototypes)s
static void *load(const char *path, size_t n) {
  void *p = malloc(n);
  FILE *f = fopen(path, "rb");
  if (!p || !f || fread(p, 1, n, f) != n) { perror(path); exit(2); }
  fclose(f);
  return p;
}
int main(int argc, char **argv) {
  if (argc != 3 || masic_parallel_init(1) != 0) return 2;
  int which = atoi(argv[1]), calls = atoi(argv[2]);
  switch (which) {
%(cases)s
  }
  return 0;
}
"""


def _program(kernels: list[Kernel], data: list[dict[str, np.ndarray]], target: str, work: Path) -> Path:
    """A static aarch64 program running kernel `argv[1]` `argv[2]` times on the data written beside it."""
    prototypes, cases = [], []
    for index, (k, args) in enumerate(zip(kernels, data, strict=True)):
        prototypes.append(f"int32_t {k.symbol}({', '.join('void *' for _ in args)});")
        loads = []
        for j, (name, array) in enumerate(args.items()):
            path = work / f"{k.symbol}.{name}.bin"
            array.tofile(path)
            loads.append(f'void *a{j} = load("{path}", {array.nbytes});')
        call = f"{k.symbol}({', '.join(f'a{j}' for j in range(len(args)))})"
        cases.append(
            f"  case {index}: {{ {' '.join(loads)} for (int c = 0; c < calls; c++) if ({call}) return 3; break; }}"
        )
    (work / "main.c").write_text(HARNESS % {"prototypes": "\n".join(prototypes), "cases": "\n".join(cases)})
    build_object(kernels, dict(get_target(target).llvm), work / "kernels.o")
    exe = work / "prog"
    command = ["aarch64-linux-gnu-gcc", "-static", "-O2", f"-I{RUNTIME}", str(work / "main.c"), str(work / "kernels.o")]
    subprocess.run([*command, str(RUNTIME / "parallel.c"), "-o", str(exe), "-lpthread", "-lm"], check=True)
    return exe


def _counts(plugin: Path, exe: Path, index: int, calls: int) -> dict[str, int]:
    out = exe.with_name(f"counts{index}_{calls}.json")
    command = ["qemu-aarch64", "-plugin", str(plugin), "-d", "plugin", "-D", str(out), str(exe), str(index), str(calls)]
    subprocess.run(command, check=True, capture_output=True)
    return json.loads(out.read_text())


def measure(target: str, work: Path, plugin: Path) -> list[dict[str, object]]:
    """One row per layer and weight format: instructions per MAC, vector share."""
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    kernels, data, labels = [], [], []
    for layer in LAYERS:
        inputs = None
        for dtype, fmt in FORMATS.items():
            k = replace(layer, symbol=f"{layer.symbol}_{fmt}", weight_dtype=dtype)
            args = _data(k, rng)
            if inputs is None:  # the same spikes for every format
                inputs = {name: args[name] for name in args if name.startswith("x")}
            args |= inputs
            kernels.append(k)
            data.append(args)
            labels.append((layer.symbol, fmt))
    exe = _program(kernels, data, target, work)
    rows = []
    for index, (k, args, (layer, fmt)) in enumerate(zip(kernels, data, labels, strict=True)):
        once, thrice = _counts(plugin, exe, index, 1), _counts(plugin, exe, index, 3)
        per_call = {key: (thrice[key] - once[key]) / 2 for key in once}
        macs = _macs(k, args)
        rows.append(
            {
                "layer": layer,
                "weights": fmt,
                "macs": macs,
                "insns_per_mac": per_call["insns"] / macs,
                "vector_share": per_call["mac_lanes"] / macs,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "compressed_arm")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    plugin = args.workdir / "arm_lanes.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(PLUGIN)], check=True)
    os.environ.setdefault("MASIC_CACHE_DIR", str(args.workdir / "cache"))
    print(f"Machine: {cpu_model()} (instructions counted under qemu-aarch64, one thread)")
    print()
    print(
        "| target | layer (over spikes) | MACs / call | f32 insns/MAC | f16 insns/MAC | int8 insns/MAC | "
        "f32 / int8 | f32 vector share | int8 vector share |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for target in TARGETS:
        rows = measure(target, args.workdir / target, plugin)
        for layer in LAYERS:
            by = {r["weights"]: r for r in rows if r["layer"] == layer.symbol}
            f32, f16, i8 = by["float32"], by["float16"], by["int8"]
            print(
                f"| {target} | {layer.symbol} | {f32['macs']} | {f32['insns_per_mac']:.3f} | "
                f"{f16['insns_per_mac']:.3f} | {i8['insns_per_mac']:.3f} | "
                f"{f32['insns_per_mac'] / i8['insns_per_mac']:.2f}x | {f32['vector_share']:.2f} | "
                f"{i8['vector_share']:.2f} |"
            )


if __name__ == "__main__":
    main()

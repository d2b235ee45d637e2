"""The PyTorch side of the speed benchmark, run in its own process (`python -m bench.speed --worker KIND REQUEST`):
the PyTorch op(s) equivalent to each masic kernel, timed eagerly, and whole Norse models, timed with their RSS. A
worker imports numpy, torch and norse (and, for a neuron's "plain" figure, masic's pure-Python neuron families and
arithmetic), never TVM or the compiler, so that its times and RSS are PyTorch's alone."""

from __future__ import annotations

import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.speed.common import NEURON_DEFAULTS, measure, python_runner

# Norse parameter tuples pickle under norse.torch.utils.pytree (norse issue #414); see install_pickle_aliases
PARAMETER_CLASSES = ("LIFParameters", "LIFBoxParameters", "LIParameters", "LIBoxParameters", "IAFParameters")
DT = 1e-3  # Norse's default time step: dt_tau_mem = DT * tau_mem_inv


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
    """Norse's functional step for the neuron family, and ("plain") the family's own update (`masic.ir.neurons`) in
    eager tensor ops, run by the torch backend of masic's arithmetic (`bench.speed.torch_arith`); with `layer`,
    Norse's step (only) runs on the layer's output, computed in each call."""
    import torch
    from norse.torch.functional import iaf, leaky_integrator, leaky_integrator_box, lif, lif_box
    from norse.torch.functional.reset import reset_subtract

    from bench.speed.torch_arith import compile_update
    from masic.ir.neurons import FAMILIES

    n, kind, modes = spec["n"], spec["family"], dict(spec["modes"])
    values = dict(spec["params"])

    def param(name: str) -> torch.Tensor:
        value = values[name]
        return torch.full((1, n), NEURON_DEFAULTS[name]) if value is None else torch.tensor(value)

    x, v, i = rnd(1, n), rnd(1, n), rnd(1, n)
    inputs = (lambda: layer().reshape(1, n)) if layer else (lambda: x)
    family = FAMILIES[kind]
    update = compile_update(family, modes)
    states = {name: {"v": v, "i": i}[name] for name in family.state_names}
    params = {name: param(name) for name in family.params}

    def plain() -> object:
        return update(x, states, params)

    a = param("dt_tau_mem") if "dt_tau_mem" in values else None
    b = param("neg_dt_tau_syn") if "neg_dt_tau_syn" in values else None
    leak = param("v_leak") if "v_leak" in values else None
    th = param("v_th") if "v_th" in values else None
    reset = param("v_reset") if "v_reset" in values else None
    spike = {"method": "super", "alpha": torch.tensor(100.0)}
    if kind == "lif":
        p = lif.LIFParameters(-b / DT, a / DT, leak, th, reset, **spike)
        state = lif.LIFFeedForwardState(v, i)
        return {"torch": lambda: lif.lif_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "lif_box":
        extra = {"reset_method": reset_subtract} if modes["reset"] == "subtract" else {}
        p = lif_box.LIFBoxParameters(a / DT, leak, th, reset, **spike, **extra)
        state = lif_box.LIFBoxFeedForwardState(v)
        return {"torch": lambda: lif_box.lif_box_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "li":
        p = leaky_integrator.LIParameters(-b / DT, a / DT, leak)
        state = leaky_integrator.LIState(v, i)
        return {"torch": lambda: leaky_integrator.li_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "li_box":
        p = leaky_integrator_box.LIBoxParameters(a / DT, leak)
        state = leaky_integrator_box.LIBoxState(v)
        return {"torch": lambda: leaky_integrator_box.li_box_feed_forward_step(inputs(), state, p, DT), "plain": plain}
    if kind == "iaf":
        p = iaf.IAFParameters(th, reset, **spike)
        state = iaf.IAFFeedForwardState(v)
        return {"torch": lambda: iaf.iaf_feed_forward_step(inputs(), state, p, DT), "plain": plain}
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

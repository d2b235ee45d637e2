"""`--weights auto`: the smallest weight format per layer that keeps the artifact's accuracy within a bound.

Each conv2d and dense layer's weight may be stored as int8, float16 or float32 (`masic.ir.weight_formats`, smallest
first). `auto_weights` measures the float32 artifact's accuracy on labelled data (the .npz files `masic
calibrate` reads, `masic.calibrate.load_calibration_data`), and the search (`search`) then looks for a mix of
formats whose artifact loses at most the allowed points of accuracy:

1. all int8: if within the bound, done;
2. else raise layers one format at a time, the most sensitive first (the order `sensitivity_order` gives: the
   predictions and outputs that change in the interpreter when that layer alone is int8, a cheap proxy run on a
   few samples), every layer to float16 before any to float32, until a mix is within the bound;
3. then lower each raised layer again, the least sensitive first, as far as the bound allows.

Every mix is confirmed by building its artifact and running it over the data (the same executable run as `masic
calibrate`'s); a mix is measured at most once, at most `max_builds` mixes in all (the float32 artifact, always
within the bound, is the fallback when they run out), and mixes that store the same formats (compress-weights keeps
a layer too small for int8 float16) share one build. The kernels' object cache (`masic.codegen.build`) makes a
mix built before, or any mix whose kernels were, cost only the link. With an accuracy function that never rises
as a layer is stored smaller, the choice is minimal: no single layer's weight can be stored smaller within the
bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masic.analysis.cost import node_work
from masic.calibrate import load_calibration_data, run_labelled
from masic.driver import Progress, build, options_for, plan, quiet
from masic.early_exit import accumulate, first_argmax
from masic.errors import MasicError
from masic.ir import interpret
from masic.ir.graph import Graph
from masic.ir.ops import compressible
from masic.ir.weight_formats import FORMATS, WeightChoice, dequantized, quantize
from masic.manifest import MANIFEST_FILE, read_manifest
from masic.passes.check_budget import BudgetError
from masic.report import weight_rows
from masic.targets import Target
from masic.workdirs import scratch

AUTO = "auto"  # the `--weights` value that chooses per layer
FORMAT_ORDER = ("int8", "float16", "float32")  # smallest first
assert set(FORMAT_ORDER) == set(FORMATS)
DEFAULT_MAX_BUILDS = 24  # artifacts built at most by one search (each costs seconds: kernels, link, a run)
PROXY_SAMPLES = 32  # samples the interpreter runs at most to order the layers by sensitivity
PROXY_WORK = 2 * 10**9  # multiply-accumulates the interpreter may spend on that (numpy: seconds each 10**9)
SCRATCH_PREFIX = "masic-weights-"

Mix = tuple[str, ...]  # a format per layer, in the order of `WeightSearch.layers`


class WeightSearchError(MasicError, ValueError):
    """`--weights auto` without data, a model without conv2d or dense layers, or no mix that fits the budget."""


@dataclass(frozen=True)
class Trial:
    """A mix of formats and how many samples its artifact predicted right (None: its plan does not fit the
    budget)."""

    mix: Mix
    correct: int | None


@dataclass(frozen=True)
class WeightSearch:
    """The layers (in graph order), the order they were raised in, every mix built, and the chosen one."""

    layers: tuple[str, ...]
    order: tuple[str, ...]  # most sensitive first
    float32: Trial
    chosen: Trial
    trials: tuple[Trial, ...]  # in the order they were built
    samples: int
    max_accuracy_drop: float  # percentage points
    max_builds: int

    @property
    def allowed(self) -> int:
        """Samples the chosen mix may get wrong beyond the float32 artifact's mistakes."""
        return allowed_losses(self.max_accuracy_drop, self.samples)

    @property
    def choice(self) -> WeightChoice:
        return choice_of(self.layers, self.chosen.mix)

    @property
    def out_of_builds(self) -> bool:
        return len(self.trials) >= self.max_builds


def allowed_losses(max_accuracy_drop: float, samples: int) -> int:
    """Samples that `max_accuracy_drop` percentage points of `samples` allow to lose (1e-9 absorbs rounding, as in
    `masic.calibrate.search`)."""
    return math.floor(max_accuracy_drop * samples / 100 + 1e-9)


def choice_of(layers: Sequence[str], mix: Mix) -> WeightChoice:
    return WeightChoice("float32", tuple(zip(layers, mix, strict=True)))


def _lowered(mix: Mix, i: int) -> Mix | None:
    """The mix with layer i stored one format smaller (None if it is int8 already)."""
    rank = FORMAT_ORDER.index(mix[i])
    return None if rank == 0 else (*mix[:i], FORMAT_ORDER[rank - 1], *mix[i + 1 :])


def _describe(layers: Sequence[str], mix: Mix) -> str:
    return " ".join(f"{layer}={fmt}" for layer, fmt in zip(layers, mix, strict=True))


def search(
    layers: Sequence[str],
    order: Sequence[str],
    correct_of: Callable[[WeightChoice], int | None],
    samples: int,
    max_accuracy_drop: float,
    max_builds: int = DEFAULT_MAX_BUILDS,
    progress: Progress = quiet,
) -> WeightSearch:
    """The smallest mix found within the bound (module docstring). `correct_of(choice)` builds and runs the mix's
    artifact: samples right, of `samples`, or None if its plan does not fit the budget. `order` lists `layers`
    most sensitive first."""
    if sorted(order) != sorted(layers) or not layers:
        raise ValueError("order must list every layer once")
    if max_builds < 2:
        raise ValueError("a search needs at least 2 builds: float32 and int8")
    layers, position = tuple(layers), {layer: i for i, layer in enumerate(layers)}
    trials: dict[Mix, Trial] = {}
    floor: list[int] = []  # the fewest samples right within the bound, once the float32 artifact has run

    def measure(mix: Mix) -> Trial | None:
        """The mix's trial, measured unless it was; None when the mixes allowed are used up."""
        if mix not in trials:
            if len(trials) >= max_builds:
                return None
            correct = correct_of(choice_of(layers, mix))
            trials[mix] = Trial(mix, correct)
            verdict = "does not fit the budget" if correct is None else f"{correct}/{samples} right"
            if floor and correct is not None:
                verdict += ", within the bound" if correct >= floor[0] else ", outside the bound"
            progress(f"weights: mix {len(trials)}/{max_builds}: {_describe(layers, mix)}: {verdict}")
        return trials[mix]

    def within(mix: Mix) -> bool:
        trial = measure(mix)
        return trial is not None and trial.correct is not None and trial.correct >= floor[0]

    float32 = measure(("float32",) * len(layers))
    assert float32 is not None
    if float32.correct is None:
        raise WeightSearchError("the model with float32 weights does not fit the budget")
    floor.append(float32.correct - allowed_losses(max_accuracy_drop, samples))
    current = ("int8",) * len(layers)
    if not within(current):
        current = _raise(current, [position[layer] for layer in order], within)
    for i in reversed([position[layer] for layer in order]):  # least sensitive first
        while (lower := _lowered(current, i)) is not None and within(lower):
            current = lower
    chosen = trials.get(current, float32)
    return WeightSearch(
        layers, tuple(order), float32, chosen, tuple(trials.values()), samples, max_accuracy_drop, max_builds
    )


def _raise(mix: Mix, order: Sequence[int], within: Callable[[Mix], bool]) -> Mix:
    """The first mix within the bound on the way from `mix` to all float32: the layers of `order` raised to float16
    one at a time, then to float32; all float32 (the reference, within by definition) if none is, or if builds
    run out on the way."""
    current = list(mix)
    for fmt in FORMAT_ORDER[1:]:
        for i in order:
            if FORMAT_ORDER.index(current[i]) < FORMAT_ORDER.index(fmt):
                current[i] = fmt
                if within(tuple(current)):
                    return tuple(current)
    return ("float32",) * len(mix)


def compressible_layers(graph: Graph) -> tuple[str, ...]:
    """The conv2d and dense layers whose weight format can be chosen, in graph order: of layers that share a
    weight, the first (`for_every_reader` gives the others its format)."""
    return tuple(_readers(graph))


def _readers(graph: Graph) -> dict[str, tuple[str, ...]]:
    """The first conv2d or dense layer reading each weight -> every layer reading it."""
    by_weight: dict[str, list[str]] = {}
    for node in graph.nodes:
        if compressible(node.op):
            by_weight.setdefault(node.attr("weight").name, []).append(node.name)
    return {readers[0]: tuple(readers) for readers in by_weight.values()}


def for_every_reader(graph: Graph, choice: WeightChoice) -> WeightChoice:
    """A choice for `compressible_layers` extended to every layer that shares a weight with one of them (the
    compress-weights pass stores a shared weight once, in one format)."""
    readers = _readers(graph)
    return WeightChoice(choice.default, tuple((node, fmt) for layer, fmt in choice.layers for node in readers[layer]))


def folded_with(graph: Graph, target: Target, choice: WeightChoice) -> Graph:
    """The imported graph through compress-weights and the folds (the graph slice-layers receives)."""
    return plan(graph, options_for(target, None, choice), stop_after="folded").graph


def _accumulated(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The interpreter's outputs summed over the steps so far, (N, T, outputs), as the loader sums them."""
    return accumulate(np.stack([interpret.run(graph, sample) for sample in x]))


def proxy_samples(graph: Graph, layers: int, available: int) -> int:
    """How many samples the interpreter proxy runs: at most PROXY_SAMPLES, and at most PROXY_WORK multiply-
    accumulates in all over the float32 run and one run per layer; 0 when one sample exceeds it."""
    folded = plan(graph, stop_after="folded").graph
    per_sample = sum(node_work(node, folded) for node in folded.nodes) * folded.timesteps
    return min(PROXY_SAMPLES, available, PROXY_WORK // max(per_sample * (layers + 1), 1))


def sensitivity_order(graph: Graph, target: Target, x: np.ndarray, samples: int) -> tuple[str, ...]:
    """The layers most sensitive to int8 first. With `samples` (`proxy_samples`): by how many of the first samples
    of x change prediction in the interpreter (which computes as the kernels do) when that layer alone is int8,
    then by the relative change of the summed outputs. With none, by the relative error int8 makes in the weight
    itself. Ties in graph order."""
    layers = compressible_layers(graph)
    if samples == 0:
        folded = folded_with(graph, target, WeightChoice())
        return tuple(sorted(layers, key=lambda layer: -_weight_error(folded, layer)))
    x = x[:samples]
    reference = _accumulated(folded_with(graph, target, WeightChoice()), x)
    predicted = first_argmax(reference)[0][:, -1]
    scale = max(float(np.linalg.norm(reference[:, -1])), np.finfo(np.float32).tiny)
    keys = {}
    for layer in layers:
        alone = for_every_reader(graph, WeightChoice("float32", ((layer, "int8"),)))
        outputs = _accumulated(folded_with(graph, target, alone), x)
        changed = int((first_argmax(outputs)[0][:, -1] != predicted).sum())
        keys[layer] = (-changed, -float(np.linalg.norm(outputs[:, -1] - reference[:, -1])) / scale)
    return tuple(sorted(layers, key=lambda layer: keys[layer]))


def _weight_error(folded: Graph, layer: str) -> float:
    """||w - dequantized(int8(w))|| / ||w|| of the layer's float32 weight."""
    weight = folded.weights[folded.node(layer).attr("weight").name]
    error = dequantized(*quantize(weight, "i8")) - weight
    return float(np.linalg.norm(error)) / max(float(np.linalg.norm(weight)), np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class AutoWeights:
    """What `--weights auto` chose, and its record for the artifact's manifest (`write`)."""

    choice: WeightChoice
    record: Mapping[str, object]
    search: WeightSearch

    def write(self, folder: Path) -> None:
        """Adds the record as `weights.choice` to the artifact folder's manifest.json."""
        path = folder / MANIFEST_FILE
        manifest = json.loads(path.read_text())
        manifest["weights"] = {**manifest["weights"], "choice": dict(self.record)}
        path.write_text(json.dumps(manifest, indent=2) + "\n")


def auto_weights(
    graph: Graph,
    target: Target,
    budget: int | None,
    data: Path,
    max_accuracy_drop: float,
    progress: Progress = quiet,
    emit: Callable[[str], None] = print,
    max_builds: int = DEFAULT_MAX_BUILDS,
) -> AutoWeights:
    """What `masic compile --weights auto` does before planning: searches the formats of the imported graph's
    layers on the labelled data (module docstring), building each mix for `target` within `budget` (the float32
    reference without it if it does not fit) and running it here; prints the table and summary through `emit`."""
    layers = compressible_layers(graph)
    if not layers:
        raise WeightSearchError(
            "--weights auto: the model has no conv2d or dense layer whose weights can be stored smaller"
        )
    folded = folded_with(graph, target, WeightChoice())
    (input_node,) = folded.inputs
    x, y = load_calibration_data(data, input_node.type.shape, folded.node(folded.output).type.numel)
    samples = proxy_samples(graph, len(layers), len(x))
    proxy = f"in the interpreter on {samples} samples" if samples else "by the error int8 makes in each weight"
    progress(f"weights: ordering {len(layers)} layers by their sensitivity to int8 {proxy}")
    order = sensitivity_order(graph, target, x, samples)
    progress(f"weights: most sensitive first: {', '.join(order)}")
    reference = for_every_reader(graph, choice_of(layers, ("float32",) * len(layers)))
    with scratch(SCRATCH_PREFIX) as folder:
        np.save(folder / "x.npy", x)
        np.save(folder / "y.npy", y)

        measured: dict[tuple[str, ...], int | None] = {}  # by the formats stored (compress-weights keeps a layer
        # with few inputs per output float16 when chosen int8, so two mixes may build one artifact)

        def correct_of(choice: WeightChoice) -> int | None:
            choice = for_every_reader(graph, choice)
            stored = tuple(row["format"] for row in weight_rows(folded_with(graph, target, choice)))
            if stored not in measured:
                measured[stored] = _build_and_run(choice, choice == reference)
            return measured[stored]

        def _build_and_run(choice: WeightChoice, is_reference: bool) -> int | None:
            try:
                planned = plan(graph, options_for(target, budget, choice)).graph
            except BudgetError:
                if not is_reference:
                    return None
                planned = plan(graph, options_for(target, None, choice)).graph
            build(planned, target, folder / "artifact")
            stats = run_labelled(read_manifest(folder / "artifact").command(), folder, "--no-exit")
            return int(stats["correct"])

        found = search(layers, order, correct_of, len(y), max_accuracy_drop, max_builds, progress)
    choice = for_every_reader(graph, found.choice)
    rows = weight_rows(folded_with(graph, target, choice))
    emit(format_table(found, rows))
    emit(summary(found, rows))
    return AutoWeights(choice, manifest_record(found, data), found)


def manifest_record(result: WeightSearch, data: Path) -> dict[str, object]:
    """The manifest's `weights.choice` (each layer's format is in `weights.layers`): the data file's name, the
    accuracies, the bound, the mixes measured (`builds`: each built unless one stored alike was) and the
    sensitivity order."""
    return {
        "source": AUTO,
        "data": data.name,
        "samples": result.samples,
        "max_accuracy_drop": result.max_accuracy_drop,
        "float32_accuracy": (result.float32.correct or 0) / result.samples,
        "accuracy": (result.chosen.correct or 0) / result.samples,
        "builds": len(result.trials),
        "order": list(result.order),
    }


def format_table(result: WeightSearch, rows: Sequence[Mapping[str, object]]) -> str:
    """One row per layer: its format and bytes against float32 (`masic.report.weight_rows` of the chosen graph),
    then their totals."""
    lines = [f"  {'layer':<16}{'format':<10}{'bytes':>12}{'float32 bytes':>15}{'saved':>12}"]
    for row in rows:
        stored, full = row["bytes"], row["float32_bytes"]
        lines.append(f"  {row['node']:<16}{row['format']:<10}{stored:>12}{full:>15}{full - stored:>12}")
    stored, full = sum(row["bytes"] for row in rows), sum(row["float32_bytes"] for row in rows)
    lines.append(f"  {'all layers':<26}{stored:>12}{full:>15}{full - stored:>12}")
    return "\n".join(lines)


def summary(result: WeightSearch, rows: Sequence[Mapping[str, object]]) -> str:
    """One line: the accuracies against the bound, the bytes saved, the builds spent."""
    right, reference, n = result.chosen.correct or 0, result.float32.correct or 0, result.samples
    stored, full = sum(row["bytes"] for row in rows), sum(row["float32_bytes"] for row in rows)
    stopped = " (stopped: no build left)" if result.out_of_builds else ""
    allowed = f"{result.allowed} sample" + ("" if result.allowed == 1 else "s")
    return (
        f"weights: accuracy {100 * right / n:.2f}% against float32's {100 * reference / n:.2f}% on {n} samples "
        f"(allowed drop {result.max_accuracy_drop:g} percentage points: {allowed}); layer weights "
        f"{stored} bytes instead of {full} ({100 * (1 - stored / max(full, 1)):.1f}% smaller); "
        f"{len(result.trials)} mixes measured{stopped}"
    )

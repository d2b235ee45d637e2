"""Calibration of the early-exit rule: the fewest mean timesteps within an allowed loss of accuracy.

Calibration data is a .npz file holding two arrays, written with ``numpy.savez(path, x=x, y=y)``:

- ``x``: the inputs, (N, *input shape) (each presented at every timestep) or (N, S, *input shape) (sequences of S
  steps), of any real dtype (converted to float32);
- ``y``: their classes, integers in [0, number of model outputs), shape (N,).

`calibrate_artifact` runs the artifact once over the data with every timestep (``--no-exit --output``), evaluates
every candidate rule offline on those per-step outputs with `masic.early_exit`, the exact model of the loader's
decisions, and chooses the candidate with the fewest mean timesteps whose accuracy is at least the full-T accuracy
minus the allowed drop. It then writes the rule into a copy of the executable, runs that copy with no exit flag and
checks that every sample's prediction and timesteps equal the offline evaluation; only then does it replace the
artifact's executable and record the rule in manifest.json.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masic.codegen.exit_section import write_archive_exit_rule, write_exit_rule
from masic.early_exit import RULES, ExitRule, accumulate, decide, exit_steps, first_argmax, step_scores
from masic.errors import MasicError
from masic.manifest import LIB_DIR, MANIFEST_FILE, SHARED_LIBRARY, STATIC_LIBRARY, WEIGHTS_FILE, Manifest
from masic.workdirs import scratch

SCORED_RULES = ("softmax_confidence", "margin", "stable_argmax")
MAX_THRESHOLDS = 256  # candidate thresholds per rule and minimum, spread evenly over the observed scores
MAX_MINIMA = 32  # candidate minimum timesteps: all of 1..T up to this many, else spread geometrically
SCRATCH_PREFIX = "masic-calibrate-"  # the data and runs of a calibration, in the system's temporary folder


class CalibrationError(MasicError, ValueError):
    """Calibration data that does not fit the model, or an artifact run that fails or disagrees with the model."""


@dataclass(frozen=True)
class Candidate:
    """A rule and what it does on the calibration set."""

    rule: ExitRule
    correct: int
    total_timesteps: int
    samples: int

    @property
    def accuracy(self) -> float:
        """Fraction of samples predicted right, in [0, 1]."""
        return self.correct / self.samples

    @property
    def mean_timesteps(self) -> float:
        return self.total_timesteps / self.samples

    def sort_key(self) -> tuple[int, int, int, int, float]:
        """Cheapest first; then most accurate, earlier rule, smaller minimum, more cautious threshold."""
        rule = self.rule
        return (self.total_timesteps, -self.correct, RULES.index(rule.rule), rule.min_timesteps, -rule.threshold)


@dataclass(frozen=True)
class Calibration:
    """Every candidate evaluated, the full-T baseline (rule none) and the chosen candidate."""

    full: Candidate
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    max_accuracy_drop: float  # percentage points
    max_timesteps: int

    def front(self, rule: str) -> list[Candidate]:
        """The rule's Pareto front, cheapest first: each candidate more accurate than every cheaper one of the rule
        (of candidates equal in both, the first by `Candidate.sort_key`)."""
        best = -1
        front = []
        for candidate in sorted((c for c in self.candidates if c.rule.rule == rule), key=Candidate.sort_key):
            if candidate.correct > best:
                front.append(candidate)
                best = candidate.correct
        return front


def load_calibration_data(path: Path, input_shape: Sequence[int], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(x as float32, y as int64) from a .npz file with arrays x and y; raises CalibrationError naming the problem
    if the file is unreadable, x does not match the model's input shape, or y has the wrong type, length or
    range."""
    shape = tuple(input_shape)
    dims = ", ".join(map(str, shape))
    if not path.is_file():
        raise CalibrationError(f"calibration data {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file
            raise ValueError
        with data:
            x, y = data["x"], data["y"]
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise CalibrationError(
            f"calibration data {path} is not a .npz file with arrays x and y; write it with numpy.savez(path, x=x, y=y)"
        ) from None
    k = len(shape)
    if not (x.ndim in (k + 1, k + 2) and x.shape[x.ndim - k :] == shape and min(x.shape, default=1) >= 1):
        raise CalibrationError(
            f"calibration data {path}: x has shape {x.shape}; expected (N, {dims}) or (N, S, {dims}) "
            f"for the model's input shape ({dims}{',' if k == 1 else ''})"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise CalibrationError(f"calibration data {path}: x has dtype {x.dtype}; expected real numbers")
    if not np.issubdtype(y.dtype, np.integer):
        raise CalibrationError(f"calibration data {path}: y has dtype {y.dtype}; expected integer class labels")
    if y.shape != (len(x),):
        raise CalibrationError(
            f"calibration data {path}: x holds {len(x)} samples but y has shape {y.shape}; expected ({len(x)},)"
        )
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        raise CalibrationError(
            f"calibration data {path}: label {y[bad[0]]} of sample {bad[0]} is outside [0, {n_classes}) "
            f"(the model has {n_classes} outputs)"
        )
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def _thresholds(scores: np.ndarray, rule: str) -> np.ndarray:
    """Candidate thresholds of a rule from its observed scores (N, T): for stable_argmax every count seen; else
    midpoints between consecutive distinct scores (as far as possible from every score, so a threshold never
    sits on one), at most MAX_THRESHOLDS of them, evenly spread over the sorted scores."""
    values = np.unique(scores[np.isfinite(scores)])
    if rule == "stable_argmax":
        return values
    midpoints = (values[:-1] + values[1:]) / 2
    midpoints = midpoints[midpoints > 0]
    if len(midpoints) > MAX_THRESHOLDS:
        midpoints = midpoints[np.unique(np.linspace(0, len(midpoints) - 1, MAX_THRESHOLDS).round().astype(int))]
    return midpoints


def _minima(max_timesteps: int) -> list[int]:
    if max_timesteps <= MAX_MINIMA:
        return list(range(1, max_timesteps + 1))
    return sorted({int(m) for m in np.geomspace(1, max_timesteps, MAX_MINIMA).round()})


def search(outputs: np.ndarray, labels: np.ndarray, max_accuracy_drop: float) -> Calibration:
    """Evaluates every candidate on per-step outputs (N, T, *output shape) of full runs and chooses the one with the
    fewest total timesteps whose accuracy is at least the full-T accuracy minus `max_accuracy_drop` percentage
    points (the full-T rule itself always qualifies); ties go by `Candidate.sort_key`."""
    acc = accumulate(outputs)
    n, max_timesteps, _ = acc.shape
    rows = np.arange(n)
    correct_after = first_argmax(acc)[0] == labels[:, None]  # (N, T): right if the sample stopped after step t
    full = Candidate(ExitRule(), int(correct_after[:, -1].sum()), n * max_timesteps, n)
    candidates = [full]
    for rule in SCORED_RULES:
        scores = step_scores(acc, rule)
        thresholds = _thresholds(scores, rule)
        for minimum in _minima(max_timesteps):
            steps = exit_steps(scores, thresholds, minimum)
            correct = correct_after[rows, steps - 1].sum(axis=1)
            candidates += [
                Candidate(ExitRule(rule, float(threshold), minimum), int(right), int(total), n)
                for threshold, right, total in zip(thresholds, correct, steps.sum(axis=1), strict=True)
            ]
    allowed = math.floor(max_accuracy_drop * n / 100 + 1e-9)  # samples that may be lost; 1e-9 absorbs rounding
    chosen = min((c for c in candidates if c.correct >= full.correct - allowed), key=Candidate.sort_key)
    return Calibration(full, tuple(candidates), chosen, max_accuracy_drop, max_timesteps)


def format_table(calibration: Calibration) -> str:
    """The full-T row and each rule's Pareto front: rule, parameters, accuracy, mean timesteps; '*' marks the
    chosen rule."""
    lines = [f"  {'rule':<20}{'parameters':<44}{'accuracy':>9}{'mean timesteps':>16}"]
    rows = [calibration.full, *(c for rule in SCORED_RULES for c in calibration.front(rule))]
    for c in rows:
        mark = "*" if c == calibration.chosen else " "
        params = "-" if c.rule.rule == "none" else c.rule.describe()
        lines.append(f"{mark} {c.rule.rule:<20}{params:<44}{100 * c.accuracy:>8.2f}%{c.mean_timesteps:>16.2f}")
    lines.append(
        f"({len(calibration.candidates)} candidates on {calibration.full.samples} samples; each rule's Pareto front "
        f"shown; * = fewest mean timesteps within {calibration.max_accuracy_drop:g} points of full T)"
    )
    return "\n".join(lines)


def plot(calibration: Calibration, path: Path, title: str) -> None:
    """Draws accuracy against mean timesteps for every candidate (each rule's front as a line) to a PNG: the whole
    range on the left, the neighbourhood of the allowed drop on the right."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    full, chosen = calibration.full, calibration.chosen
    floor = 100 * full.accuracy - calibration.max_accuracy_drop
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax in axes:
        for rule, colour in zip(SCORED_RULES, ("#4c72b0", "#dd8452", "#55a868"), strict=True):
            points = [c for c in calibration.candidates if c.rule.rule == rule]
            ax.scatter(
                [c.mean_timesteps for c in points], [100 * c.accuracy for c in points], s=4, alpha=0.15, color=colour
            )
            front = calibration.front(rule)
            ax.plot(
                [c.mean_timesteps for c in front],
                [100 * c.accuracy for c in front],
                "o-",
                ms=3,
                color=colour,
                label=rule,
            )
        ax.scatter([full.mean_timesteps], [100 * full.accuracy], marker="*", s=150, color="black", label="full T")
        ax.scatter(
            [chosen.mean_timesteps],
            [100 * chosen.accuracy],
            s=160,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label=f"chosen: {chosen.rule.describe()}",
        )
        ax.axhline(floor, ls="--", color="grey", label=f"full T - {calibration.max_accuracy_drop:g} points")
        ax.set_xlabel("mean timesteps")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    margin = max(2.0, 3 * calibration.max_accuracy_drop)
    axes[1].set_ylim(floor - margin, 100 * full.accuracy + margin / 2)
    axes[1].set_title("near the allowed drop")
    axes[0].set_title("all candidates")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_labelled(command: Sequence[str], folder: Path, *flags: str) -> dict:
    """Runs the executable over folder/x.npy with folder/y.npy; returns its JSON report."""
    args = [*command, "--input", str(folder / "x.npy"), "--labels", str(folder / "y.npy"), *flags]
    done = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise CalibrationError(f"running {command[-1]} failed: {detail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_same_decisions(rows: np.ndarray, expected: np.ndarray, what: str) -> None:
    """rows and expected are (N, 2) int: prediction, timesteps per sample."""
    differ = np.flatnonzero((rows != expected).any(axis=1))
    if differ.size:
        i = differ[0]
        raise CalibrationError(
            f"{what} differs from masic's model of the loader on {differ.size} samples (first: sample {i}, "
            f"prediction/timesteps {rows[i].tolist()} instead of {expected[i].tolist()}); please report this bug"
        )


def _write_library_rules(folder: Path, rule: ExitRule) -> None:
    """Writes the rule into the artifact's libraries too, so that embedding programs apply it (artifacts built before
    masic shipped the libraries have none)."""
    shared, static = folder / LIB_DIR / SHARED_LIBRARY, folder / LIB_DIR / STATIC_LIBRARY
    if shared.exists():
        write_exit_rule(shared, rule)
    if static.exists():
        write_archive_exit_rule(static, rule)


def calibrate_artifact(
    manifest: Manifest,
    data: Path,
    max_accuracy_drop: float,
    plot_path: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> Calibration:
    """Calibrates the exit rule of the checked artifact folder `manifest.folder` on `data` (see the module
    docstring), writes it into the folder's model, its libraries and manifest.json and draws the candidates to
    `plot_path`.

    The files are rewritten in place: give it a folder no one else reads, which then replaces the published one
    in one step (the CLI calibrates a staged folder, `masic.workdirs.replacing`). Returns the calibration."""
    x, y = load_calibration_data(data, manifest.input_shape, math.prod(manifest.output_shape))
    executable = manifest.executable
    emulator = manifest.target.emulator  # from masic's own target description, never from the manifest's text
    with scratch(SCRATCH_PREFIX) as scratch_folder:
        np.save(scratch_folder / "x.npy", x)
        np.save(scratch_folder / "y.npy", y)
        progress(f"running {executable} on {len(y)} calibration samples with every timestep")
        full_outputs = str(scratch_folder / "out.npy")
        stats = run_labelled([*emulator, str(executable)], scratch_folder, "--no-exit", "--output", full_outputs)
        outputs = np.load(full_outputs)
        calibration = search(outputs, y, max_accuracy_drop)
        if stats["correct"] != calibration.full.correct:
            raise CalibrationError(
                f"the artifact got {stats['correct']} samples right with every timestep, masic's model of the loader "
                f"{calibration.full.correct}; please report this bug"
            )
        rule = calibration.chosen.rule
        progress(f"checking {rule.describe()} written into a copy of {executable}")
        patched = scratch_folder / "model"
        shutil.copy2(executable, patched)
        write_exit_rule(patched, rule)
        weights = str(manifest.folder / WEIGHTS_FILE)
        predictions = str(scratch_folder / "predictions.npy")
        stats = run_labelled(
            [*emulator, str(patched)], scratch_folder, "--weights", weights, "--predictions", predictions
        )
        if stats["exit_source"] != "calibrated":
            raise CalibrationError(f"the patched executable applies its {stats['exit_source']} exit rule")
        decisions = decide(outputs, rule)
        expected = np.stack([decisions.predictions, decisions.timesteps], axis=1)
        _check_same_decisions(np.load(predictions), expected, "the calibrated executable's decision")
        shutil.copy2(patched, executable)
        _write_library_rules(manifest.folder, rule)
    chosen, full = calibration.chosen, calibration.full
    record = {
        "data": str(data),
        "samples": full.samples,
        "max_accuracy_drop": max_accuracy_drop,
        "full_accuracy": full.accuracy,
        "accuracy": chosen.accuracy,
        "max_timesteps": calibration.max_timesteps,
        "mean_timesteps": chosen.mean_timesteps,
        "candidates": len(calibration.candidates),
    }
    rewritten = {**manifest.data, "exit_rule": {**rule.to_manifest(), "source": "calibrated", "calibration": record}}
    (manifest.folder / MANIFEST_FILE).write_text(json.dumps(rewritten, indent=2) + "\n")
    title = f"{manifest.name} ({manifest.target.name}): early exit on {full.samples} samples"
    plot(calibration, plot_path, title)
    return calibration


def summary(calibration: Calibration) -> str:
    """One line: the chosen rule, its accuracy against full T, and its mean timesteps."""
    chosen, full = calibration.chosen, calibration.full
    saving = 1 - chosen.mean_timesteps / calibration.max_timesteps
    return (
        f"chosen: {chosen.rule.rule}, {chosen.rule.describe()}: accuracy {100 * chosen.accuracy:.2f}% "
        f"(full T {100 * full.accuracy:.2f}%, allowed drop {calibration.max_accuracy_drop:g} points), "
        f"mean timesteps {chosen.mean_timesteps:.2f} of {calibration.max_timesteps} ({100 * saving:.1f}% fewer)"
    )

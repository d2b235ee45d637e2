"""Early exit on the digits example: the calibrated rule against every timestep, measured by the compiled artifact.

1. Splits scikit-learn's bundled digits into train / calibration / held-out test (`examples.digits.load_splits`,
   fixed seeds) and trains the digits SNN on the train split with the per-step loss (or reuses WORKDIR/digits.pt).
2. Compiles it for the host (x86_64) and runs `masic calibrate` on the calibration split with the allowed accuracy
   drop (prints its choice; draws WORKDIR/out/calibration.png).
3. Runs the artifact on the held-out split, which neither training nor calibration saw, with every timestep
   (--no-exit) and with its calibrated rule (no exit flag), each timed best of --repeats, and prints rule,
   parameters, held-out accuracy, mean timesteps and wall time per sample.
4. Prints the whole accuracy / mean-timesteps curve: every rule's calibration Pareto front, evaluated on the
   held-out split from the artifact's own per-step outputs with masic.early_exit (the loader's exact arithmetic),
   and draws it to WORKDIR/heldout.png.

    python bench/exit.py [--workdir build/exit] [--epochs 30] [--max-accuracy-drop 0.5] [--threads 1] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masic.frontends.norse import install_pickle_aliases

from examples.digits import TIMESTEPS, load_splits, train
from masic.calibrate import SCORED_RULES, Candidate, search
from masic.early_exit import ExitRule, decide
from tests.artifacts import masic_cli


def run_labelled(out: Path, x_path: Path, y_path: Path, threads: int, *flags: str) -> dict:
    """The artifact's JSON report on a labelled set."""
    run = masic_cli("run", str(out), "--input", str(x_path), "--labels", str(y_path), "--threads", str(threads), *flags)
    if run.returncode != 0:
        raise RuntimeError(f"masic run failed: {run.stderr.strip()}")
    return run.stats


def best_of(repeats: int, out: Path, x_path: Path, y_path: Path, threads: int, *flags: str) -> dict:
    """The report of the fastest of `repeats` identical runs (their decisions are the same every time)."""
    return min((run_labelled(out, x_path, y_path, threads, *flags) for _ in range(repeats)), key=lambda s: s["wall_s"])


def full_outputs(out: Path, x: np.ndarray, y: np.ndarray, folder: Path, threads: int) -> np.ndarray:
    """Every step's output (N, T, 10) of the artifact on a labelled set."""
    x_path, y_path, outputs = folder / "x.npy", folder / "y.npy", folder / "outputs.npy"
    np.save(x_path, x)
    np.save(y_path, y.astype(np.int64))
    run_labelled(out, x_path, y_path, threads, "--no-exit", "--output", str(outputs))
    return np.load(outputs)


def describe(rule: ExitRule) -> str:
    return "-" if rule.rule == "none" else rule.describe()


def draw_curve(
    rows: list[tuple[Candidate, float, float]], full: tuple[float, float], rule: ExitRule, path: Path, drop: float
) -> None:
    """Held-out accuracy against held-out mean timesteps of each rule's front; the calibrated rule circled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for rule in SCORED_RULES:
        points = [(steps, 100 * accuracy) for c, accuracy, steps in rows if c.rule.rule == rule]
        ax.plot(*zip(*points, strict=True), "o-", ms=3, label=rule)
    ax.scatter([full[1]], [100 * full[0]], marker="*", s=150, color="black", label="full T")
    accuracy, steps = next(((a, t) for c, a, t in rows if c.rule == rule), full)  # full T if nothing qualified
    ax.scatter([steps], [100 * accuracy], s=160, facecolors="none", edgecolors="red", linewidths=2, label="calibrated")
    ax.axhline(100 * full[0] - drop, ls="--", color="grey", label=f"full T - {drop:g} points")
    ax.set_ylim(100 * full[0] - 10, 100)
    ax.set_xlabel("mean timesteps (held-out)")
    ax.set_ylabel("accuracy (%, held-out)")
    ax.set_title("digits: rules calibrated on one split, measured on the held-out split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trained_model(work: Path, x: np.ndarray, y: np.ndarray, epochs: int, reuse: bool) -> Path:
    """WORKDIR/digits.pt, trained with the per-step loss unless it exists and `reuse`."""
    model_path = work / "digits.pt"
    if not (reuse and model_path.exists()):
        started = time.perf_counter()
        torch.set_num_threads(1)  # the same model on every machine: reductions in a fixed order
        model = train(x, y, epochs, per_step=True)
        print(f"trained {epochs} epochs with the per-step loss in {time.perf_counter() - started:.1f}s")
        install_pickle_aliases()
        torch.save(model, model_path)
    return model_path


def compile_and_calibrate(model_path: Path, work: Path, x: np.ndarray, y: np.ndarray, drop: float) -> Path:
    """Compiles for x86_64 into WORKDIR/out and calibrates it with `masic calibrate`; returns the artifact."""
    out = work / "out"
    flags = ["--target", "x86_64", "--input-shape", "1,8,8", "--timesteps", str(TIMESTEPS), "-o", str(out)]
    compiled = masic_cli("compile", str(model_path), *flags)
    if compiled.returncode != 0:
        raise RuntimeError(f"masic compile failed: {compiled.stderr.strip()}")
    data = work / "calib.npz"
    np.savez(data, x=x, y=y)
    print(f"\n$ masic calibrate {out} --data {data} --max-accuracy-drop {drop:g}", flush=True)
    calibrated = masic_cli("calibrate", str(out), "--data", str(data), "--max-accuracy-drop", str(drop))
    if calibrated.returncode != 0:
        raise RuntimeError(f"masic calibrate failed: {calibrated.stderr.strip()}")
    print("\n".join(calibrated.stdout.splitlines()[-2:]))  # its table is the curve's calibration columns below
    return out


def report_held_out(
    out: Path, work: Path, x: np.ndarray, y: np.ndarray, rule: ExitRule, args: argparse.Namespace
) -> dict:
    """Runs the artifact on the held-out split with every timestep and with its calibrated rule; prints both.
    Returns the every-timestep report."""
    x_path, y_path = work / "test_x.npy", work / "test_y.npy"
    np.save(x_path, x)
    np.save(y_path, y.astype(np.int64))
    full = best_of(args.repeats, out, x_path, y_path, args.threads, "--no-exit")
    early = best_of(args.repeats, out, x_path, y_path, args.threads)
    assert early["exit_source"] == "calibrated", early
    print(f"\nheld-out test ({len(y)} digits), measured by {out}/model:")
    print(f"{'rule':<22}{'parameters':<42}{'accuracy':>9}{'mean timesteps':>16}{'ms/sample':>11}")
    for name, stats, shown in (("none (full T)", full, ExitRule()), (f"{rule.rule} (calibrated)", early, rule)):
        print(
            f"{name:<22}{describe(shown):<42}{100 * stats['accuracy']:>8.2f}%{stats['mean_timesteps']:>16.2f}"
            f"{1e3 * stats['wall_s_per_sample']:>11.4f}"
        )
    lost = 100 * (full["accuracy"] - early["accuracy"])
    fewer = 1 - early["mean_timesteps"] / full["mean_timesteps"]
    faster = 1 - early["wall_s_per_sample"] / full["wall_s_per_sample"]
    print(
        f"accuracy lost: {lost:+.2f} points; timesteps: {100 * fewer:.1f}% fewer; "
        f"wall time per sample: {100 * faster:.1f}% less"
    )
    print(f"histogram of timesteps used (1 to the most used): {early['timesteps_histogram']}")
    return full


def report_curve(
    out: Path, work: Path, calib: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], rule: ExitRule,
    args: argparse.Namespace,
) -> list[tuple[Candidate, float, float]]:  # fmt: skip
    """Each rule's calibration Pareto front (the search masic calibrate ran, repeated on the same outputs), with
    held-out accuracy and mean timesteps from the artifact's per-step outputs; prints it."""
    calibration = search(full_outputs(out, *calib, work, args.threads), calib[1], args.max_accuracy_drop)
    assert calibration.chosen.rule == rule, (calibration.chosen.rule, rule)
    test_outputs = full_outputs(out, *test, work, args.threads)
    rows = []
    for candidate in (c for name in SCORED_RULES for c in calibration.front(name)):
        decisions = decide(test_outputs, candidate.rule)
        rows.append((candidate, float(np.mean(decisions.predictions == test[1])), float(decisions.timesteps.mean())))
    print("\nwhole curve: each rule's calibration Pareto front, evaluated on the held-out split (* = calibrated rule)")
    print(f"  {'rule':<20}{'parameters':<42}{'calib acc':>10}{'calib T':>9}{'test acc':>10}{'test T':>8}")
    for candidate, accuracy, steps in rows:
        mark = "*" if candidate.rule == rule else " "
        print(
            f"{mark} {candidate.rule.rule:<20}{describe(candidate.rule):<42}{100 * candidate.accuracy:>9.2f}%"
            f"{candidate.mean_timesteps:>9.2f}{100 * accuracy:>9.2f}%{steps:>8.2f}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/exit"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="loader threads (the model is tiny: 1 is fastest)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per rule, best kept")
    parser.add_argument("--reuse", action="store_true", help="reuse WORKDIR/digits.pt instead of training")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    train_split, calib, test = load_splits()
    print(
        f"digits: train {len(train_split[1])}, calibration {len(calib[1])}, held-out test {len(test[1])}; "
        f"T = {TIMESTEPS}; host artifact (x86_64), {args.threads} thread(s); times best of {args.repeats}",
        flush=True,
    )
    model_path = trained_model(work, *train_split, args.epochs, args.reuse)
    out = compile_and_calibrate(model_path, work, *calib, args.max_accuracy_drop)
    rule = ExitRule.from_manifest(json.loads((out / "manifest.json").read_text())["exit_rule"])
    full = report_held_out(out, work, *test, rule, args)
    rows = report_curve(out, work, calib, test, rule, args)
    full_point = (full["accuracy"], full["mean_timesteps"])
    draw_curve(rows, full_point, rule, work / "heldout.png", args.max_accuracy_drop)
    print(f"\nplots: {out}/calibration.png (calibration split), {work}/heldout.png (held-out split)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

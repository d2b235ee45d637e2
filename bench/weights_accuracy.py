"""Compressed weights on the digits SNN: held-out accuracy of float32, float16, int8 and auto, with their bytes.

1. Splits scikit-learn's bundled digits into train / calibration / held-out test (`examples.digits.load_splits`,
   fixed seeds) and trains the digits SNN on the train split (or reuses WORKDIR/trained.pt); Norse's own held-out
   accuracy is printed beside the artifacts'.
2. Compiles it with `masic compile --weights float32`, `float16`, `int8` and `auto --calibrate calib.npz
   --max-accuracy-drop P` for each bound P given (the search runs on the calibration split; its table is printed).
3. Does the same with an int8-hostile twin: OUTLIER added to one input column of the output layer in every
   class's row (every class gains the same, so float32 and float16 keep their argmax; int8 rounds the layer's
   other weights to multiples of OUTLIER/127), where auto must raise that layer.
4. Runs each artifact on the held-out split, which neither training nor the search saw, and prints its accuracy,
   the points it loses against the float32 artifact, weights.bin's bytes (the manifest's) and the smallest budget
   it compiles under (`masic.planning.minimum_budget` of the graph with its formats).

scikit-learn's digits is the only image dataset on the machine (no torchvision, no downloaded data), so it is the
only one measured.

    python -m bench.weights_accuracy [--workdir build/weights-accuracy] [--epochs 15] [--max-accuracy-drop 0.5 0]
                                     [--target x86_64]
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

from masic.frontends.dispatch import ImportOptions
from masic.frontends.norse import install_pickle_aliases
from masic.targets import get_target

from bench.machine import cpu_model
from examples.digits import TIMESTEPS, load_splits, norse_outputs, train
from masic.driver import import_model, options_for
from masic.ir.weight_formats import WeightChoice
from masic.planning.minimum_budget import folded, minimum_budget
from masic.weight_search import compressible_layers
from tests.artifacts import masic_cli

FORMATS = ("float32", "float16", "int8")
OUTPUT_LAYER = 6  # the model's last Linear (examples.digits.digits_model)
OUTLIER = 30.0  # added to one input column of every class's row: the same argmax in float32, int8 steps of 0.24


def compile_artifact(model: Path, out: Path, target: str, *flags: str) -> tuple[dict, str, float]:
    """(manifest, stdout, seconds) of `masic compile` with the flags."""
    command = ["compile", str(model), "--target", target, "--input-shape", "1,8,8", "--timesteps", str(TIMESTEPS)]
    started = time.perf_counter()
    result = masic_cli(*command, "-o", str(out), *flags)
    if result.returncode != 0:
        raise RuntimeError(f"masic compile {' '.join(flags)} failed: {result.stderr.strip()}")
    return json.loads((out / "manifest.json").read_text()), result.stdout, time.perf_counter() - started


def held_out_right(out: Path, x_path: Path, y_path: Path) -> np.ndarray:
    """Whether the artifact predicts each held-out digit right."""
    predictions = out.parent / f"{out.name}-predictions.npy"  # beside the artifact: a recompile replaces it whole
    run = masic_cli("run", str(out), "--input", str(x_path), "--labels", str(y_path), "--predictions", str(predictions))
    if run.returncode != 0:
        raise RuntimeError(f"masic run failed: {run.stderr.strip()}")
    return np.load(predictions)[:, 0] == np.load(y_path)


def measure(model: torch.nn.Module, title: str, workdir: Path, args: argparse.Namespace, held_out: tuple) -> None:
    """Saves the model to WORKDIR/TITLE.pt, compiles and runs each variant, prints the table."""
    x_test, y_test, x_path, y_path = held_out
    model_path = workdir / f"{title}.pt"
    torch.save(model, model_path)
    with torch.no_grad():
        norse = norse_outputs(model, torch.from_numpy(x_test)).sum(0).argmax(1).numpy() == y_test
    target = get_target(args.target)
    graph = import_model(str(model_path), ImportOptions((1, 8, 8), TIMESTEPS))
    rows = []
    variants = [(fmt, fmt, ("--weights", fmt)) for fmt in FORMATS]  # label, folder, flags
    auto_flags = ("--weights", "auto", "--calibrate", str(workdir / "calib.npz"))
    for drop in args.max_accuracy_drop:
        variants.append((f"auto, {drop:g} points", f"auto-{drop:g}", (*auto_flags, "--max-accuracy-drop", str(drop))))
    reference = None
    for name, folder, flags in variants:
        out = workdir / f"{title}-{folder}"
        manifest, stdout, seconds = compile_artifact(model_path, out, args.target, *flags)
        if "choice" in manifest["weights"]:
            print(f"\n$ masic compile {model_path.name} {' '.join(flags)}\n{stdout.rstrip()}")
        choice = WeightChoice("float32", tuple((row["node"], row["format"]) for row in manifest["weights"]["layers"]))
        right = held_out_right(out, x_path, y_path)
        reference = right if reference is None else reference
        minimum = minimum_budget(folded(graph, options_for(target, None, choice)), target.alignment)
        layers = " ".join(f"{node}={choice.of(node)}" for node in compressible_layers(graph))
        rows.append((name, layers, right, manifest["weights"]["bytes"], minimum, seconds))

    print(f"\n{title}: held-out test ({len(y_test)} digits), measured by each {args.target} artifact:")
    header = f"{'accuracy':>9}{'vs float32':>12}{'weights.bin':>13}{'min budget':>12}{'compile s':>11}"
    print(f"{'weights':<22}{'layers':<30}{header}")
    print(f"{'Norse (PyTorch)':<22}{'-':<30}{100 * norse.mean():>8.2f}%")
    for name, layers, right, nbytes, minimum, seconds in rows:
        change = 100 * (right.mean() - reference.mean())
        figures = f"{100 * right.mean():>8.2f}%{change:>+11.2f} {nbytes:>13}{minimum:>12}{seconds:>11.1f}"
        print(f"{name:<22}{layers:<30}{figures}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/weights-accuracy"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--max-accuracy-drop", type=float, nargs="+", default=[0.5, 0.0], help="one auto per bound")
    parser.add_argument("--target", default="x86_64")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_calib, y_calib), (x_test, y_test) = load_splits()
    trained = args.workdir / "trained.pt"
    torch.set_num_threads(1)
    install_pickle_aliases()  # norse 1.1.0 cannot pickle its parameter tuples without it (norse issue #414)
    if trained.exists():
        model = torch.load(trained, weights_only=False)
        print(f"reusing {trained}")
    else:
        started = time.perf_counter()
        model = train(x_train, y_train, args.epochs)
        print(f"trained {args.epochs} epochs in {time.perf_counter() - started:.1f}s")
        torch.save(model, trained)
    np.savez(args.workdir / "calib.npz", x=x_calib, y=y_calib)
    x_path, y_path = args.workdir / "test_x.npy", args.workdir / "test_y.npy"
    np.save(x_path, x_test)
    np.save(y_path, y_test.astype(np.int64))
    print(f"machine: {cpu_model()}; target {args.target}")
    print(f"digits: train {len(x_train)}, calibration {len(x_calib)}, held-out test {len(x_test)}; T = {TIMESTEPS}")
    held_out = (x_test, y_test, x_path, y_path)
    measure(model, "digits", args.workdir, args, held_out)
    with torch.no_grad():
        model[OUTPUT_LAYER].weight[:, 0] += OUTLIER
    measure(model, "digits-outlier", args.workdir, args, held_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The example a new user runs first: train a small spiking CNN on handwritten digits, compile it, run it.

1. Trains a Norse SequentialState SNN on scikit-learn's bundled 8x8 digits (real data, no download): the image is
   presented as a constant input current at every timestep; the class is the LI output summed over time.
2. Saves it with torch.save and compiles it: `masic compile digits.pt --budget 64MB --target aarch64 ...`.
3. Runs the artifact on one held-out digit (under qemu-aarch64 for ARM targets) and shows its stats line.
4. Measures the accuracy of the compiled artifact and of Norse itself on the held-out digits.

    python examples/digits.py [--target aarch64] [--workdir build/digits]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from norse.torch import LICell, LIFCell, SequentialState
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TIMESTEPS = 16


def digits_model() -> SequentialState:
    """A small spiking CNN for 1x8x8 images (also usable as `examples.digits:digits_model`)."""
    return SequentialState(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        LIFCell(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 64),
        LIFCell(),
        torch.nn.Linear(64, 10),
        LICell(),
    )


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 (N, 1, 8, 8) in [0, 2], split 80/20 with a fixed seed."""
    digits = load_digits()
    images = (digits.images / 8.0).astype(np.float32)[:, None]
    return train_test_split(images, digits.target, test_size=0.2, random_state=seed, stratify=digits.target)


def load_splits(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, calibration, test) splits as (images, labels): test is load_data's held-out 20% (the demo's), and
    calibration as many digits again, split off the rest with a fixed seed, so that neither is ever trained on."""
    x_rest, x_test, y_rest, y_test = load_data(seed)
    x_train, x_calib, y_train, y_calib = train_test_split(
        x_rest, y_rest, test_size=len(x_test), random_state=seed + 1, stratify=y_rest
    )
    return (x_train, y_train), (x_calib, y_calib), (x_test, y_test)


def norse_outputs(model: SequentialState, images: torch.Tensor, timesteps: int = TIMESTEPS) -> torch.Tensor:
    """Per-step outputs (T, N, 10) of the model with the images presented at every step."""
    state, outputs = None, []
    for _ in range(timesteps):
        out, state = model(images, state)
        outputs.append(out)
    return torch.stack(outputs)


def train(x: np.ndarray, y: np.ndarray, epochs: int = 15, seed: int = 0, per_step: bool = False) -> SequentialState:
    """Trains digits_model with Adam on the cross-entropy of the output summed over all timesteps or, with
    `per_step`, of the output summed so far after every timestep (averaged over the steps), which rewards being
    right early: what early exit needs."""
    torch.manual_seed(seed)
    model = digits_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        total = 0.0
        for batch in order.split(64):
            outputs = norse_outputs(model, images[batch])
            logits = outputs.cumsum(0) if per_step else outputs.sum(0, keepdim=True)  # (steps scored, batch, 10)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[batch].repeat(len(logits)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        print(f"  epoch {epoch + 1:2d}/{epochs}  loss {total / len(images):.3f}", flush=True)
    return model.eval()


def masic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "masic.cli", *args], capture_output=True, text=True, check=False)


def run_artifact(out: Path, sample: np.ndarray, scratch: Path) -> dict:
    path = scratch / f"x{id(sample)}.npy"
    np.save(path, sample)
    result = masic("run", str(out), "--input", str(path))
    if result.returncode != 0:
        raise RuntimeError(f"artifact failed: {result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="aarch64")
    parser.add_argument("--workdir", type=Path, default=Path("build/digits"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = load_data()

    print(f"[1/4] training a spiking CNN on {len(x_train)} digits ({TIMESTEPS} timesteps)", flush=True)
    started = time.perf_counter()
    model = train(x_train, y_train, args.epochs)
    print(f"  trained in {time.perf_counter() - started:.1f}s")
    model_path = args.workdir / "digits.pt"
    from masic.frontends.norse import install_pickle_aliases

    install_pickle_aliases()  # norse 1.1.0 cannot pickle its parameter tuples without it (norse issue #414)
    torch.save(model, model_path)

    out = args.workdir / "out"
    command = ["compile", str(model_path), "--budget", "64MB", "--target", args.target]
    command += ["--input-shape", "1,8,8", "--timesteps", str(TIMESTEPS), "-o", str(out)]
    print(f"[2/4] masic {' '.join(command)}", flush=True)
    result = masic(*command)
    print(result.stderr, end="")
    if result.returncode != 0:
        return result.returncode

    print(f"[3/4] running {out}/model on one held-out digit (label {y_test[0]})", flush=True)
    stats = run_artifact(out, x_test[0, ...], args.workdir)
    print(f"  prediction {stats['prediction']}, timesteps {stats['timesteps']}")
    print(
        f"  arena {stats['arena_bytes']} bytes, peak RSS {stats['peak_rss_bytes']} bytes, loop {stats['wall_s']:.4f}s"
    )
    print(f"  stats: {json.dumps(stats)}")

    print(f"[4/4] accuracy on {len(x_test)} held-out digits", flush=True)
    with torch.no_grad():
        norse_pred = norse_outputs(model, torch.from_numpy(x_test)).sum(0).argmax(1).numpy()
    with ThreadPoolExecutor(max_workers=4) as pool:
        compiled = list(pool.map(lambda s: run_artifact(out, s, args.workdir)["prediction"], x_test))
    compiled_pred = np.array(compiled)
    print(f"  Norse:              {np.mean(norse_pred == y_test) * 100:.2f}%")
    print(f"  compiled ({args.target}): {np.mean(compiled_pred == y_test) * 100:.2f}%")
    print(f"  same prediction on {np.sum(compiled_pred == norse_pred)}/{len(x_test)} digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Builds of fake_model.c, its weights, and a numpy reference of what it computes."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from runtime_harness import Target, build_executable

HERE = Path(__file__).resolve().parent
INPUT_SHAPE = (2, 3)
DEFAULT_TIMESTEPS = 5
WEIGHTS = np.array([0.5, -0.25, 0.1, 0.0], dtype=np.float32)
INITIAL_STATE = np.array([0.0, 0.1, 0.2, 0.3], dtype=np.float32)


def weights_bin() -> bytes:
    return WEIGHTS.tobytes() + INITIAL_STATE.tobytes()


def weights_crc32() -> int:
    return zlib.crc32(weights_bin())


def reference_outputs(samples: np.ndarray, steps: int) -> np.ndarray:
    """Outputs of `steps` steps; `samples` is one sample (presented every step) or a sequence of samples."""
    sequence = samples if samples.ndim == len(INPUT_SHAPE) + 1 else np.broadcast_to(samples, (steps, *INPUT_SHAPE))
    sums = sequence[:steps].reshape(steps, -1).sum(axis=1, dtype=np.float32)
    state = INITIAL_STATE + np.arange(steps, dtype=np.float32)[:, None]
    return (sums[:, None] * WEIGHTS + state).astype(np.float32)


def max_softmax(scores: np.ndarray) -> float:
    shifted = np.exp(scores - scores.max())
    return float(shifted.max() / shifted.sum())


def confidences(outputs: np.ndarray) -> list[float]:
    """max(softmax(sum of the outputs so far)) after each step, as the loader's exit rule sees it."""
    summed = np.cumsum(outputs.astype(np.float64), axis=0)
    return [max_softmax(row) for row in summed]


def build_artifact(target: Target, folder: Path, defines: Mapping[str, str] | None = None) -> Path:
    """Writes an artifact folder, the fake model's executable beside its weights.bin; returns the executable."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(weights_bin())
    sources = [HERE / "fake_model.c", HERE / "serial_parallel.c"]
    all_defines = {"FAKE_WEIGHTS_CRC32": f"{weights_crc32():#x}u", **(defines or {})}
    return build_executable(target, sources, folder / "model", all_defines)

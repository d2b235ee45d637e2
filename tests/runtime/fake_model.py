"""Builds of fake_model.c, its weights, and a numpy reference of what it computes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from runtime_harness import Target, build_executable

from masic.codegen.crc32c import crc32c

HERE = Path(__file__).resolve().parent
INPUT_SHAPE = (2, 3)
DEFAULT_TIMESTEPS = 5
WEIGHTS = np.array([0.5, -0.25, 0.1, 0.0], dtype=np.float32)
INITIAL_STATE = np.array([0.0, 0.1, 0.2, 0.3], dtype=np.float32)
# Streamed as two loads of two floats that share one arena slot: distinct values, so a load that is late, early
# or missing changes the outputs.
STREAMED = np.array([0.05, -0.02, 0.03, 0.01], dtype=np.float32)
RESIDENT_BYTES = WEIGHTS.nbytes
STREAMED_BYTES = STREAMED.nbytes  # read once per block


@dataclass(frozen=True)
class Variant:
    """Build options of the fake model; the default is the plain model, one step per block and nothing streamed."""

    block: int = 1
    streamed: bool = False
    pad_bytes: int = 0  # zeros after the weights that nothing reads
    state_loaded: bool = False  # the state is loaded by the loading thread in each block, not before each sample
    arena_bytes: int = 256

    def weights_bin(self) -> bytes:
        streamed = STREAMED.tobytes() if self.streamed else b""
        return WEIGHTS.tobytes() + INITIAL_STATE.tobytes() + streamed + bytes(self.pad_bytes)

    def defines(self) -> dict[str, str]:
        return {
            "FAKE_CRC_W": f"{crc32c(WEIGHTS):#x}u",
            "FAKE_CRC_S": f"{crc32c(INITIAL_STATE):#x}u",
            "FAKE_CRC_U0": f"{crc32c(STREAMED[:2]):#x}u",
            "FAKE_CRC_U1": f"{crc32c(STREAMED[2:]):#x}u",
            "FAKE_BLOCK": str(self.block),
            "FAKE_STREAMED": str(int(self.streamed)),
            "FAKE_STATE_LOADED": str(int(self.state_loaded)),
            "FAKE_PAD_BYTES": str(self.pad_bytes),
            "FAKE_ARENA_BYTES": str(self.arena_bytes),
        }


PLAIN = Variant()
STREAMING = Variant(block=3, streamed=True)


def weights_bin() -> bytes:
    return PLAIN.weights_bin()


def reference_outputs(samples: np.ndarray, steps: int, streamed: bool = False) -> np.ndarray:
    """Outputs of `steps` steps; `samples` is one sample (presented every step) or a sequence of samples."""
    sequence = samples if samples.ndim == len(INPUT_SHAPE) + 1 else np.broadcast_to(samples, (steps, *INPUT_SHAPE))
    sums = sequence[:steps].reshape(steps, -1).sum(axis=1, dtype=np.float32)
    state = INITIAL_STATE + np.arange(steps, dtype=np.float32)[:, None]
    outputs = sums[:, None] * WEIGHTS + state
    return (outputs + STREAMED if streamed else outputs).astype(np.float32)


def max_softmax(scores: np.ndarray) -> float:
    shifted = np.exp(scores - scores.max())
    return float(shifted.max() / shifted.sum())


def confidences(outputs: np.ndarray) -> list[float]:
    """max(softmax(sum of the outputs so far)) after each step, as the loader's exit rule sees it."""
    summed = np.cumsum(outputs.astype(np.float64), axis=0)
    return [max_softmax(row) for row in summed]


def build_artifact(
    target: Target, folder: Path, defines: Mapping[str, str] | None = None, variant: Variant = PLAIN
) -> Path:
    """Writes an artifact folder, the fake model's executable beside its weights.bin; returns the executable."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(variant.weights_bin())
    sources = [HERE / "fake_model.c", HERE / "serial_parallel.c"]
    return build_executable(target, sources, folder / "model", {**variant.defines(), **(defines or {})})

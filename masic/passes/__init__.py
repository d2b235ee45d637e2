"""Pass registry: CLI names map to one module each (`fold-batchnorm` <-> fold_batchnorm.py), listed in the order the
default pipeline runs them."""

from __future__ import annotations

from types import MappingProxyType

from masic.passes import (
    assign_offsets,
    check_budget,
    compress_weights,
    fold_batchnorm,
    fold_pooling,
    fuse_neurons,
    infer_shapes,
    layout,
    patch_rows,
    schedule,
    slice_layers,
    spike_dtype,
)
from masic.passes.base import Pass, PassError, PassOptions


def _summary(doc: str) -> str:
    """A pass module's first paragraph, on one line: what `masic passes` prints."""
    return " ".join(doc.strip().split("\n\n")[0].split())


REGISTRY = MappingProxyType(
    {
        m.NAME: Pass(m.NAME, m.run, _summary(m.__doc__ or ""))
        for m in (
            infer_shapes,
            fold_batchnorm,
            fold_pooling,
            compress_weights,
            spike_dtype,
            slice_layers,
            patch_rows,
            schedule,
            layout,
            fuse_neurons,
            assign_offsets,
            check_budget,
        )
    }
)

DEFAULT_PIPELINE = (
    "infer-shapes",
    "fold-batchnorm",
    "fold-pooling",
    "compress-weights",
    "spike-dtype",
    "slice-layers",
    "patch-rows",
    "schedule",
    "layout",
    "fuse-neurons",
    "assign-offsets",
    "check-budget",
)

__all__ = ["DEFAULT_PIPELINE", "REGISTRY", "Pass", "PassError", "PassOptions"]

"""Pass registry: CLI names map to one module each (`fold-batchnorm` <-> fold_batchnorm.py)."""

from __future__ import annotations

from types import MappingProxyType

from masic.passes import (
    assign_offsets,
    check_budget,
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

REGISTRY = MappingProxyType(
    {
        m.NAME: Pass(m.NAME, m.run, (m.__doc__ or "").strip().splitlines()[0])
        for m in (
            infer_shapes,
            fold_batchnorm,
            fold_pooling,
            spike_dtype,
            slice_layers,
            patch_rows,
            layout,
            schedule,
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

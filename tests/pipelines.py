"""Pipelines the tests plan with besides DEFAULT_PIPELINE."""

from masic.passes import DEFAULT_PIPELINE

# Neurons run as their own kernels: what liveness, the plan checker and the simulator do with unfused neurons
# (updates in place over their operand).
UNFUSED_PIPELINE = tuple(name for name in DEFAULT_PIPELINE if name != "fuse-neurons")

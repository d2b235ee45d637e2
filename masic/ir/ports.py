"""A model's named inputs packed into the graph's one input, and its one output split into named outputs.

A graph with several inputs or outputs (`masic.ir.graph.Port`; a NIR graph with several Input or Output nodes)
keeps one input node and one output value, which the loader reads and writes as one tensor a step: each is the
concatenation of its ports in order, each port flattened in C order. These two functions are that layout, for the
interpreter, `masic run` (`.npz` files of named arrays) and anyone who prepares inputs or reads outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from masic.ir.graph import Port


def pack(ports: tuple[Port, ...], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The packed input: one array per port, each of the port's shape or, for a sequence, (T, *shape) with one T
    for all; gives (sum of sizes,) or (T, sum of sizes), float32."""
    names = [p.name for p in ports]
    if set(arrays) != set(names):
        raise ValueError(f"inputs {sorted(arrays)} are not the ports {names}")
    leads = set()
    for port in ports:
        shape = np.shape(arrays[port.name])
        if shape not in (port.shape, shape[:1] + port.shape):
            raise ValueError(f"input {port.name} of shape {shape} is neither {port.shape} nor (T, *{port.shape})")
        leads.add(shape[: len(shape) - len(port.shape)])
    if len(leads) != 1:
        raise ValueError(f"inputs {names} have different numbers of steps {sorted(leads)}")
    (lead,) = leads
    parts = [np.asarray(arrays[p.name], np.float32).reshape(*lead, p.numel) for p in ports]
    return np.concatenate(parts, axis=-1)


def split(ports: tuple[Port, ...], packed: np.ndarray) -> dict[str, np.ndarray]:
    """The named parts of a packed output (or input): (..., sum of sizes) -> {port: (..., *shape)}."""
    total = sum(p.numel for p in ports)
    if np.shape(packed)[-1:] != (total,):
        raise ValueError(f"a packed value of shape {np.shape(packed)} does not end in the ports' {total} elements")
    bounds = np.cumsum([0, *(p.numel for p in ports)])
    lead = np.shape(packed)[:-1]
    return {
        p.name: packed[..., a:b].reshape(*lead, *p.shape) for p, a, b in zip(ports, bounds, bounds[1:], strict=False)
    }

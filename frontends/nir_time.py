"""The time step a NIR graph was exported for, from its own parameters: NIR stores none, and a wrong `--dt` compiles
a graph that runs but never spikes, or overshoots.

What the exporters write (the evidence: the graphs in ../shared/models/nir and the exporters' code):
- Norse (the NIR paper's graphs): LIF / LI time constants in seconds, r = 1; the paper runs them with dt = 1e-4,
  about a tenth of the shortest time constant or less (lif_norse.nir: tau = 2.5e-3; feedback_graph.nir, 2e-2).
- snnTorch: tau = dt / (1 - beta) and r = tau / dt, so tau / r is the same dt for every neuron (1e-4 by default).
- Sinabs, and graphs for SpiNNaker2: discrete-time IF neurons (no time constant) with r = 1, meant as one step a
  timestep, dt = 1 (cnn_sinabs.nir); with dt = 1e-4 each step adds 1e-4 of the input, and the network never spikes.
- Time constants of whole numbers of steps (tau >= 1) likewise mean dt = 1.

`suggested_dt` turns this into a value and its reason, for the error without `--dt`; `dt_warning` names a given dt
that contradicts the graph (more than its shortest time constant: forward Euler overshoots; not 1 for a graph of
integrators without time constants; not tau / r for an snnTorch-style graph).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

_TIME_CONSTANTS = ("tau", "tau_mem", "tau_syn")
_INTEGRATORS = ("I", "IF")  # neurons whose drive is dt * r * x, without a time constant
_SAME = 1e-3  # relative: tau / r computed in float32 from float64 exports


def _values(node: Any, key: str) -> np.ndarray:
    return np.ravel(np.asarray(getattr(node, key), dtype=np.float64))


def _shortest(nodes: Mapping[str, Any]) -> tuple[float, str] | None:
    """The shortest time constant and its node, or None for a graph without any (time constants that are not
    positive, which the importer refuses, are left out: a graph without dt is refused before they are checked)."""
    taus = []
    for name, node in nodes.items():
        for key in (k for k in _TIME_CONSTANTS if hasattr(node, k)):
            values = _values(node, key)
            taus += [(float(values[values > 0].min()), name)] if np.any(values > 0) else []
    return min(taus) if taus else None


def _folded_dt(nodes: Mapping[str, Any]) -> float | None:
    """tau / r when it is one value for every neuron with both, none of them with r = 1 (snnTorch's export)."""
    ratios = []
    for node in nodes.values():
        if hasattr(node, "r") and any(hasattr(node, k) for k in _TIME_CONSTANTS):
            tau = _values(node, "tau" if hasattr(node, "tau") else "tau_mem")
            r = _values(node, "r")
            if np.any(r == 1.0) or np.any(r <= 0):
                return None
            ratios.append(tau / r)
    if not ratios:
        return None
    values = np.concatenate(ratios)
    low, high = values.min(), values.max()
    return float(np.median(values)) if low > 0 and high - low <= _SAME * high else None


def _integrator(nodes: Mapping[str, Any]) -> str | None:
    return next((name for name, node in nodes.items() if type(node).__name__ in _INTEGRATORS), None)


def suggested_dt(nodes: Mapping[str, Any]) -> tuple[float, str]:
    """The time step the graph's parameters imply, and why (see the module docstring)."""
    folded = _folded_dt(nodes)
    if folded is not None:
        return folded, f"every neuron's tau / r is {folded:g}, the time step exporters such as snnTorch fold into r"
    shortest = _shortest(nodes)
    if shortest is None:
        return 1.0, "its neurons have no time constant: discrete-time exports (Sinabs, SpiNNaker2) mean dt = 1"
    tau, name = shortest
    if tau >= 1.0:
        return 1.0, f"its time constants are whole steps (tau={tau:g} of NIR node '{name}')"
    dt = 10.0 ** math.floor(math.log10(tau / 10))
    return dt, f"a tenth of its shortest time constant, tau={tau:g} s of NIR node '{name}', rounded down"


def dt_warning(nodes: Mapping[str, Any], dt: float) -> str | None:
    """Why `dt` contradicts the graph, with the dt it suggests; None when it does not."""
    suggestion, reason = suggested_dt(nodes)
    advice = f"the graph suggests --dt {suggestion:g} ({reason})"
    folded = _folded_dt(nodes)
    if folded is not None and abs(dt - folded) > _SAME * folded:
        return f"--dt {dt:g} is not the graph's tau / r = {folded:g}: each step scales the input by {dt / folded:g}"
    shortest = _shortest(nodes)
    if shortest is not None and dt > shortest[0]:
        tau, name = shortest
        return (
            f"--dt {dt:g} is {dt / tau:g} times the time constant {tau:g} of NIR node '{name}': forward Euler "
            f"overshoots; {advice}"
        )
    integrator = _integrator(nodes)
    if shortest is None and integrator is not None and dt != 1.0:
        kind = type(nodes[integrator]).__name__
        return (
            f"NIR node '{integrator}' ({kind}) has no time constant and adds dt*r*x = {dt:g}*r*x a step: graphs "
            f"exported by Sinabs or for SpiNNaker2 assume --dt 1, and with {dt:g} they barely spike"
        )
    return None

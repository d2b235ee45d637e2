"""Norse model zoo beyond feed-forward cells: recurrent, adaptive (LSNN), exponential (LIFEx, LIFAdEx), refractory,
conductance-based and Izhikevich cells, their time-lifted forms and RecurrentSequential, as users write them; each a
`Case` (tests/frameworks/cases.py) run by Norse itself, step by step from its initial state (a `SequentialState`
called with the state it returned) or over the whole sequence in one call (time-lifted modules recording their
states). Norse's feed-forward cells and models are tested in tests/frontends.

Norse's runs give the threshold each output neuron's membrane met (`Trace.threshold`): the exponential cells'
membranes are within an ulp of Norse's (`masic.ir.arith.exp`), and a recurrent cell adds its two synaptic inputs
in another order than Norse, so a spike may differ where a membrane is within 1e-6 of its threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import norse.torch as nt
import numpy as np
import torch
from masic.frontends.norse import import_norse
from norse.torch import SequentialState
from torch import nn

from tests.frameworks.cases import Case, Trace, quantised

Reader = Callable[[Any, torch.Tensor], torch.Tensor]  # (the output cell's state, its spikes) -> a value per neuron


def _cell_state(state: Any) -> Any:
    """The output cell's state within what a model returns (a SequentialState's list, a RecurrentSequential's)."""
    if isinstance(state, list):
        return state[-1]
    inner = getattr(state, "state", None)
    return _cell_state(inner) if isinstance(inner, list) else state


def _run(membrane: Reader, threshold: Reader, lifted: bool) -> Callable[[nn.Module, np.ndarray], Trace]:
    """Norse's run of a model on x (steps, *shape), a batch of one: the output spikes, and the output cell's
    membrane and the threshold it met, read from the state Norse returns after each step."""

    def run(model: nn.Module, x: np.ndarray) -> Trace:
        flat = lambda t: torch.as_tensor(t).reshape(len(x), -1).float().numpy().copy()  # noqa: E731
        with torch.no_grad():
            if lifted:
                out, state = model(torch.from_numpy(x)[:, None])  # states recorded: (steps, 1, ...)
                cell = _cell_state(state)
                v, th = (torch.broadcast_to(t, out.shape)[:, 0] for t in (membrane(cell, out), threshold(cell, out)))
                return Trace(flat(out[:, 0]), flat(v), flat(th))
            state, zs, vs, ths = None, [], [], []
            for step in x:
                out, state = model(torch.from_numpy(step)[None], state)
                cell = _cell_state(state)
                zs.append(out[0])
                vs.append(torch.broadcast_to(membrane(cell, out), out.shape)[0])
                ths.append(torch.broadcast_to(threshold(cell, out), out.shape)[0])
        return Trace(flat(torch.stack(zs)), flat(torch.stack(vs)), flat(torch.stack(ths)))

    return run


def _fixed(value: float) -> Reader:
    return lambda state, z: torch.as_tensor(value)


def _adaptive(beta: float) -> Reader:
    """LSNN compares v with b before b jumps by beta where the neuron spikes."""
    return lambda state, z: state.b - z * beta


def _v(state: Any, z: torch.Tensor) -> torch.Tensor:
    return state.v


def _refrac_v(state: Any, z: torch.Tensor) -> torch.Tensor:
    return state.lif.v


def _case(
    name: str,
    build: Callable[[], nn.Module],
    threshold: Reader,
    seed: int,
    membrane: Reader = _v,
    lifted: bool = False,
    **kw: Any,
) -> Case:
    """A case whose model `build` makes (seeded, its weights on the grid) and Norse runs (`_run`); masic probes
    the output neuron's v (CobaLIFCell's: the delay of v)."""

    def make() -> nn.Module:
        torch.manual_seed(seed)
        return quantised(build())

    run = _run(membrane, threshold, lifted)
    return Case("Norse", name, make, (N_IN,), run, "v", importer=import_norse, **kw)


P = torch.tensor
N_IN, N = 16, 32  # input features, neurons of the output cell
LIF_TUNED = nt.LIFParameters(tau_mem_inv=P(60.0), tau_syn_inv=P(150.0), v_th=P(0.4), v_reset=P(-0.1), v_leak=P(0.05))
LSNN_P = nt.LSNNParameters(tau_adapt_inv=P(1 / 0.05), beta=P(0.3), v_th=P(0.5))
LSNN_PER_NEURON = nt.LSNNParameters(
    tau_mem_inv=torch.linspace(80.0, 120.0, N), v_th=torch.linspace(0.3, 0.7, N), tau_adapt_inv=P(10.0), beta=P(0.2)
)
ADEX = nt.LIFAdExParameters(adaptation_current=P(0.5), adaptation_spike=P(0.3), tau_ada_inv=P(20.0))
EX = nt.LIFExParameters(delta_T=P(0.3), v_th=P(0.8))
REFRAC = nt.LIFRefracParameters(nt.LIFParameters(v_th=P(0.5)), rho_reset=P(3.0))


def _amplified(model: nn.Module, factor: float) -> nn.Module:
    """The model with its Linear layers' weights scaled by `factor`: trained models' deeper layers are driven by
    spikes to threshold; freshly initialised ones are not."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(factor)
    return model


def _izhikevich(behavior: Any, recurrent: bool = False, lifted: bool = False) -> Callable[[], nn.Module]:
    if lifted:
        return lambda: nn.Sequential(nt.Lift(nn.Linear(N_IN, N)), nt.Izhikevich(behavior, record_states=True))
    if recurrent:
        return lambda: SequentialState(nt.IzhikevichRecurrentCell(N_IN, N, behavior))
    return lambda: SequentialState(nn.Linear(N_IN, N), nt.IzhikevichCell(behavior))


IZHIKEVICH = {"scale": 40.0, "min_spikes": 10}  # inputs in [0, 40): the model's currents are of that order

CASES: list[Case] = [
    _case("lif_recurrent_cell", lambda: SequentialState(nt.LIFRecurrentCell(N_IN, N)), _fixed(1.0), 1),
    _case(
        "lif_recurrent_autapses_tuned",
        lambda: SequentialState(nt.LIFRecurrentCell(N_IN, N, LIF_TUNED, autapses=True, dt=7e-4)),
        _fixed(0.4),
        2,
    ),
    _case(
        "lif_recurrent_lifted",
        lambda: nn.Sequential(nt.LIFRecurrent(N_IN, N, record_states=True)),
        _fixed(1.0),
        3,
        lifted=True,
    ),
    _case(
        "lif_recurrent_stack",  # a SequentialState of recurrent and feed-forward cells, the last one recurrent
        lambda: _amplified(
            SequentialState(
                nn.Linear(N_IN, 24),
                nt.LSNNRecurrentCell(24, 24, LSNN_P),
                nn.Linear(24, 28),
                nt.LIFCell(),
                nt.LIFRecurrentCell(28, N),
            ),
            6.0,
        ),
        _fixed(1.0),
        4,
        scale=3.0,
        min_spikes=20,
    ),
    _case("lsnn_cell", lambda: SequentialState(nn.Linear(N_IN, N), nt.LSNNCell(LSNN_P)), _adaptive(0.3), 5),
    _case(
        "lsnn_cell_per_neuron_adjoint",
        lambda: SequentialState(nn.Linear(N_IN, N), nt.LSNNCell(LSNN_PER_NEURON, adjoint=True, dt=2e-3)),
        _adaptive(0.2),
        6,
    ),
    _case("lsnn_recurrent_cell", lambda: SequentialState(nt.LSNNRecurrentCell(N_IN, N, LSNN_P)), _adaptive(0.3), 7),
    _case(
        "lsnn_lifted",
        lambda: nn.Sequential(nt.Lift(nn.Linear(N_IN, N)), nt.LSNN(LSNN_P, record_states=True)),
        _adaptive(0.3),
        8,
        lifted=True,
    ),
    _case(
        "lsnn_recurrent_lifted",
        lambda: nn.Sequential(nt.LSNNRecurrent(N_IN, N, LSNN_P, record_states=True)),
        _adaptive(0.3),
        9,
        lifted=True,
    ),
    _case("lif_ex_cell", lambda: SequentialState(nn.Linear(N_IN, N), nt.LIFExCell(EX)), _fixed(0.8), 10),
    _case("lif_ex_recurrent_cell", lambda: SequentialState(nt.LIFExRecurrentCell(N_IN, N, EX)), _fixed(0.8), 11),
    _case(
        "lif_ex_lifted",
        lambda: nn.Sequential(nt.Lift(nn.Linear(N_IN, N)), nt.LIFEx(EX, record_states=True)),
        _fixed(0.8),
        12,
        lifted=True,
    ),
    _case("lif_adex_cell", lambda: SequentialState(nn.Linear(N_IN, N), nt.LIFAdExCell(ADEX)), _fixed(1.0), 13),
    _case("lif_adex_recurrent_cell", lambda: SequentialState(nt.LIFAdExRecurrentCell(N_IN, N, ADEX)), _fixed(1.0), 14),
    _case(
        "lif_adex_recurrent_lifted",
        lambda: nn.Sequential(nt.LIFAdExRecurrent(N_IN, N, ADEX, record_states=True)),
        _fixed(1.0),
        15,
        lifted=True,
    ),
    _case(
        "lif_refrac_cell",
        lambda: SequentialState(nn.Linear(N_IN, N), nt.LIFRefracCell(REFRAC)),
        _fixed(0.5),
        16,
        membrane=_refrac_v,
    ),
    _case(
        "lif_refrac_recurrent_cell",
        lambda: SequentialState(nt.LIFRefracRecurrentCell(N_IN, N, REFRAC)),
        _fixed(0.5),
        17,
        membrane=_refrac_v,
    ),
    _case(
        "lif_refrac_recurrent_lifted",
        lambda: nn.Sequential(nt.LIFRefracRecurrent(N_IN, N, REFRAC, record_states=True)),
        _fixed(0.5),
        18,
        membrane=_refrac_v,
        lifted=True,
    ),
    _case("izhikevich_cell", _izhikevich(nt.tonic_spiking), _fixed(30.0), 19, **IZHIKEVICH),
    _case("izhikevich_cell_bursting", _izhikevich(nt.tonic_bursting), _fixed(30.0), 20, **IZHIKEVICH),
    _case("izhikevich_recurrent_cell", _izhikevich(nt.tonic_spiking, recurrent=True), _fixed(30.0), 21, **IZHIKEVICH),
    _case(
        "izhikevich_lifted",
        _izhikevich(nt.phasic_bursting, lifted=True),
        _fixed(30.0),
        22,
        lifted=True,
        **IZHIKEVICH,
    ),
    _case("coba_lif_cell", lambda: SequentialState(nt.CobaLIFCell(N_IN, N, dt=5e-3)), _fixed(-10.0), 23),
    _case(
        "recurrent_sequential",  # Norse's RecurrentSequential: the output of a step added to the next step's input
        lambda: _amplified(
            nt.RecurrentSequential(nn.Linear(N_IN, N), nt.LIFCell(), nn.Linear(N, N_IN), nt.LIFBoxCell()), 6.0
        ),
        _fixed(1.0),
        24,
        min_spikes=20,
    ),
]

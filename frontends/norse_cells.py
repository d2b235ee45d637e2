"""Norse's neuron cells -> the IR's neuron families (`masic.ir.neurons`), each cell's parameters folded with
Norse's own operand types and order, so that the IR's updates match Norse's.

- Feed-forward cells (`LIFCell`, `LIFBoxCell`, `LICell`, `LIBoxCell`, `IAFCell`, `LSNNCell`, `LIFExCell`,
  `LIFAdExCell`, `LIFRefracCell`, `IzhikevichCell`) and their time-lifted forms (`LIF`, `LI`, `IAF`, `LSNN`,
  `LIFEx`, `LIFAdEx`, `Izhikevich`, which loop over the time axis themselves: one step of them is the cell) are one
  neuron node reading the current value.
- Recurrent cells (`LIFRecurrentCell`, `LSNNRecurrentCell`, `LIFExRecurrentCell`, `LIFAdExRecurrentCell`,
  `LIFRefracRecurrentCell`, `IzhikevichRecurrentCell`) and their lifted forms (`LIFRecurrent`, `LSNNRecurrent`,
  `LIFExRecurrent`, `LIFAdExRecurrent`, `LIFRefracRecurrent`, `IzhikevichRecurrent`) feed
  `F.linear(x, input_weights) + F.linear(z, recurrent_weights)` to the neuron, z being the cell's spikes of the
  previous step (zeros at the first, Norse's initial state): `dense(x) + dense(delay(z))`. Norse adds the two terms
  to the current one after the other, `(i + W x) + W_rec z`; the IR adds their sum, `i + (W x + W_rec z)`: one
  rounding of the synaptic input apart, as small as the dense layers' own differences from PyTorch's accumulation
  order.
- `CobaLIFCell` (conductance-based LIF, Norse's only Coba module, recurrent) has two synaptic inputs per neuron,
  excitatory and inhibitory, which a neuron family (one input) cannot take; its step is element-wise IR ops around
  `delay`s of v, g_e, g_i and z, in Norse's order (`_coba_lif`). Norse 1.1.0's `coba_lif_step` overwrites the
  input's conductances with the recurrent ones (`g_e = state.g_e + linear(z, relu(W_rec))` follows
  `g_e = state.g_e + linear(x, relu(W_in))`), so the cell's output does not depend on its input; masic reproduces
  that, and warns.

A cell whose `activation` is not its class's own step function (or that step's adjoint form, whose forward is the
same) is refused: a pickled model can name any allowed function there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from masic.frontends.errors import FrontendError, FrontendWarning
from masic.frontends.graph_builder import real_float32
from torch import nn

from masic.ir.graph import AttrValue, TensorType
from masic.ir.neurons import FAMILIES

if TYPE_CHECKING:
    from masic.frontends.norse import Builder

Raw = torch.Tensor | float | str
Fold = Callable[[nn.Module, str], dict[str, Raw]]


def _array(raw: Raw) -> np.ndarray | float | str:
    """A parameter as the builder takes it: tensors as numpy arrays."""
    return raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else raw


def positive(loc: str, **values: torch.Tensor | float) -> None:
    """Time steps, inverse time constants and batch-norm variances must be positive and finite: an inverse time
    constant of 0 is an infinite time constant, a negative one makes the membrane grow without bound."""
    for key, raw in values.items():
        array = real_float32(_array(raw), f"{loc}: {key}")
        bad = array[~(np.isfinite(array) & (array > 0))]
        if bad.size:
            raise FrontendError(f"{loc}: {key} {bad.flat[0]:g} is not positive and finite")


# Each fold evaluates Norse's expressions (`dt * p.tau_mem_inv`, ...) with the cell's own operand types (Python
# floats in double, tensors in float32); the builder rounds the results to float32 once, as PyTorch does when it
# multiplies them into a float32 tensor.


def _lif(m: nn.Module, loc: str) -> dict[str, Raw]:
    """LIFCell, LICell, LILinearCell (and LIF, LI): lif_feed_forward_step, li_feed_forward_step."""
    p, dt = m.p, m.dt
    positive(loc, dt=dt, tau_mem_inv=p.tau_mem_inv, tau_syn_inv=p.tau_syn_inv)
    raw = {"dt_tau_mem": dt * p.tau_mem_inv, "neg_dt_tau_syn": -dt * p.tau_syn_inv, "v_leak": p.v_leak}
    return raw | ({"v_th": p.v_th, "v_reset": p.v_reset} if hasattr(p, "v_th") else {})


def _box(m: nn.Module, loc: str) -> dict[str, Raw]:
    """LIFBoxCell, LIBoxCell: no synapse; LIFBoxCell resets to v_reset or by subtracting v_th."""
    from norse.torch.functional import reset

    p, dt = m.p, m.dt
    positive(loc, dt=dt, tau_mem_inv=p.tau_mem_inv)
    raw: dict[str, Raw] = {"dt_tau_mem": dt * p.tau_mem_inv, "v_leak": p.v_leak}
    if hasattr(p, "v_th"):
        if p.reset_method not in (reset.reset_value, reset.reset_subtract):
            raise FrontendError(f"{loc}: LIFBoxCell with a custom reset_method is not supported")
        raw |= {"v_th": p.v_th, "v_reset": p.v_reset}
        raw["reset"] = "subtract" if p.reset_method is reset.reset_subtract else "value"
    return raw


def _iaf(m: nn.Module, loc: str) -> dict[str, Raw]:
    return {"v_th": m.p.v_th, "v_reset": m.p.v_reset}


def _lsnn(m: nn.Module, loc: str) -> dict[str, Raw]:
    p, dt = m.p, m.dt
    positive(loc, dt=dt, tau_mem_inv=p.tau_mem_inv, tau_syn_inv=p.tau_syn_inv, tau_adapt_inv=p.tau_adapt_inv)
    return {
        "dt_tau_mem": dt * p.tau_mem_inv,
        "neg_dt_tau_syn": -dt * p.tau_syn_inv,
        "dt_tau_adapt": dt * p.tau_adapt_inv,
        "v_leak": p.v_leak,
        "v_th": p.v_th,
        "v_reset": p.v_reset,
        "beta": p.beta,
    }


def _lif_ex(m: nn.Module, loc: str) -> dict[str, Raw]:
    """LIFExCell and LIFAdExCell: delta_T divides (v - v_th), so it must not be 0 (or negative: no exp term then)."""
    p = m.p
    positive(loc, delta_T=p.delta_T)
    return _lif(m, loc) | {"delta_T": p.delta_T}


def _lif_adex(m: nn.Module, loc: str) -> dict[str, Raw]:
    p, dt = m.p, m.dt
    positive(loc, tau_ada_inv=p.tau_ada_inv)
    raw = {"dt_tau_ada": dt * p.tau_ada_inv, "adaptation_current": p.adaptation_current}
    return _lif_ex(m, loc) | raw | {"adaptation_spike": p.adaptation_spike}


@dataclass(frozen=True)
class _Params:
    """What a fold reads of a module: `p` and `dt` (for a cell whose parameters nest, such as LIFRefracCell's)."""

    p: Any
    dt: float


def _lif_refrac(m: nn.Module, loc: str) -> dict[str, Raw]:
    """LIFRefracCell: LIFParameters in `p.lif`, the refractory steps in `p.rho_reset`."""
    return _lif(_Params(m.p.lif, m.dt), loc) | {"rho_reset": m.p.rho_reset}


def _izhikevich(m: nn.Module, loc: str) -> dict[str, Raw]:
    """IzhikevichParameters are Python floats: `p.tau_inv * dt * p.a` is computed in double, then rounded when it
    multiplies the float32 state. The initial state is the spiking behaviour's (v_rest, u_rest * b)."""
    p, dt, initial = m.p, m.dt, m.spiking_method.s
    positive(loc, dt=dt, tau_inv=p.tau_inv)
    raw = {"dt_tau": p.tau_inv * dt, "sq": p.sq, "mn": p.mn, "bias": p.bias, "dt_tau_a": p.tau_inv * dt * p.a}
    return raw | {
        "u_gain": p.b,
        "v_th": p.v_th,
        "v_reset": p.c,
        "u_jump": p.d,
        "v_rest": initial.v,
        "u_rest": initial.u,
    }


@dataclass(frozen=True)
class Cell:
    """How one Norse cell class compiles: its neuron family, how its parameters fold, the step functions its
    `activation` may be (by name, in `norse.torch.functional`), and whether it is recurrent."""

    family: str
    fold: Fold
    steps: tuple[str, ...]
    recurrent: bool = False


@cache
def cells() -> dict[type, Cell]:
    """Norse cell class -> how it compiles."""
    import norse.torch as nt

    lif = Cell("lif", _lif, ("lif_feed_forward_step", "lif_feed_forward_adjoint_step"))
    lif_recurrent = Cell("lif", _lif, ("lif_step", "lif_adjoint_step"), recurrent=True)
    lsnn = Cell("lsnn", _lsnn, ("lsnn_feed_forward_step", "lsnn_feed_forward_adjoint_step"))
    lsnn_recurrent = Cell("lsnn", _lsnn, ("lsnn_step", "lsnn_adjoint_step"), recurrent=True)
    lif_ex = Cell("lif_ex", _lif_ex, ("lif_ex_feed_forward_step",))
    lif_ex_recurrent = Cell("lif_ex", _lif_ex, ("lif_ex_step",), recurrent=True)
    lif_adex = Cell("lif_adex", _lif_adex, ("lif_adex_feed_forward_step",))
    lif_adex_recurrent = Cell("lif_adex", _lif_adex, ("lif_adex_step",), recurrent=True)
    refrac = ("lif_refrac_feed_forward_step", "lif_refrac_feed_forward_adjoint_step")
    refrac_recurrent = Cell("lif_refrac", _lif_refrac, ("lif_refrac_step", "lif_refrac_adjoint_step"), recurrent=True)
    izhikevich = Cell("izhikevich", _izhikevich, ("izhikevich_feed_forward_step",))
    izhikevich_recurrent = Cell("izhikevich", _izhikevich, ("izhikevich_recurrent_step",), recurrent=True)
    return {
        nt.LIFCell: lif,
        nt.LIF: lif,
        nt.LICell: Cell("li", _lif, ("li_feed_forward_step",)),
        nt.LI: Cell("li", _lif, ("li_feed_forward_step",)),
        nt.LIFBoxCell: Cell("lif_box", _box, ("lif_box_feed_forward_step",)),
        nt.LIBoxCell: Cell("li_box", _box, ("li_box_feed_forward_step",)),
        nt.IAFCell: Cell("iaf", _iaf, ("iaf_feed_forward_step",)),
        nt.IAF: Cell("iaf", _iaf, ("iaf_feed_forward_step",)),
        nt.LIFRecurrentCell: lif_recurrent,
        nt.LIFRecurrent: lif_recurrent,
        nt.LSNNCell: lsnn,
        nt.LSNN: lsnn,
        nt.LSNNRecurrentCell: lsnn_recurrent,
        nt.LSNNRecurrent: lsnn_recurrent,
        nt.LIFExCell: lif_ex,
        nt.LIFEx: lif_ex,
        nt.LIFExRecurrentCell: lif_ex_recurrent,
        nt.LIFExRecurrent: lif_ex_recurrent,
        nt.LIFAdExCell: lif_adex,
        nt.LIFAdEx: lif_adex,
        nt.LIFAdExRecurrentCell: lif_adex_recurrent,
        nt.LIFAdExRecurrent: lif_adex_recurrent,
        nt.LIFRefracCell: Cell("lif_refrac", _lif_refrac, refrac),
        nt.LIFRefracRecurrentCell: refrac_recurrent,
        nt.LIFRefracRecurrent: refrac_recurrent,
        nt.IzhikevichCell: izhikevich,
        nt.Izhikevich: izhikevich,
        nt.IzhikevichRecurrentCell: izhikevich_recurrent,
        nt.IzhikevichRecurrent: izhikevich_recurrent,
    }


def _check_activation(m: nn.Module, cell: Cell, loc: str) -> None:
    activation = getattr(m, "activation", None)
    name = getattr(activation, "__name__", type(activation).__name__)
    module = getattr(activation, "__module__", "") or ""
    if name not in cell.steps or not module.startswith("norse.torch.functional"):
        raise FrontendError(
            f"{loc}: its activation {module}.{name} is not {cell.steps[0]}; masic compiles the cell's own step"
        )


def neuron(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    """A feed-forward or recurrent cell (`cells()`) on the current value."""
    cell = cells()[type(m)]
    _check_activation(m, cell, loc)
    raw = cell.fold(m, loc)
    if cell.recurrent:
        _recurrent(b, name, m, cell, raw, loc)
    else:
        b.then(name, cell.family, _attrs(b, name, cell.family, raw, b.shape, loc), loc)


def _attrs(
    b: Builder, name: str, family: str, raw: dict[str, Raw], shape: tuple[int, ...], loc: str
) -> dict[str, AttrValue]:
    """The family's attributes from the folded values: its modes as they are, its parameters as float attributes
    or per-neuron parameters of `shape`."""
    definition = FAMILIES[family]
    attrs: dict[str, AttrValue] = {mode: raw[mode] for mode in definition.mode_names}
    for key in definition.params:
        attrs[key] = b.element_param(name, key, _array(raw[key]), shape, loc)
    return attrs


def _recurrent(b: Builder, name: str, m: nn.Module, cell: Cell, raw: dict[str, Raw], loc: str) -> None:
    """dense(x, input_weights) + dense(z of the previous step, recurrent_weights) -> the neuron."""
    from masic.frontends.norse import dense

    hidden = TensorType((int(m.recurrent_weights.shape[0]),))
    x = dense(b, f"{name}.input", b.current, m.input_weights, None, loc)
    previous = b.delay(f"{name}.z", hidden, loc)
    recurrent = dense(b, f"{name}.recurrent", previous, m.recurrent_weights, None, loc)
    drive = b.add(f"{name}.drive", "add", (x, recurrent), {}, loc)
    b.current = b.add(name, cell.family, (drive,), _attrs(b, name, cell.family, raw, hidden.shape, loc), loc)
    b.connect_delay(previous, b.current)


def li_linear(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    """LILinearCell: the current jumps by input_weights @ x, then a leaky integrator (Norse's li_step)."""
    from masic.frontends.norse import dense

    b.current = dense(b, f"{name}.input", b.current, m.input_weights, None, loc)
    b.then(name, "li", _attrs(b, name, "li", _lif(m, loc), b.shape, loc), loc)


def coba_lif(b: Builder, name: str, m: nn.Module, loc: str) -> None:
    """CobaLIFCell, as Norse 1.1.0's coba_lif_step computes it (the module docstring: the input is overwritten):
    g_e = g_e + relu(W_rec) @ z;  g_i = g_i + relu(-W_rec) @ z;  g_e = g_e + (-dt*tau_syn_exc_inv)*g_e (g_i alike)
    v1 = v + (dt*c_m_inv)*((g_l*(v_rest - v) + g_e*(e_rev_E - v)) + g_i*(e_rev_I - v))
    z = (v1 - v_thresh) > 0;  v' = z ? v_reset : v1;  initial v, g_e, g_i, z all 0 (Norse's)."""
    from masic.frontends.norse import dense

    p, dt = m.p, m.dt
    positive(loc, dt=dt, c_m_inv=p.c_m_inv, tau_syn_exc_inv=p.tau_syn_exc_inv, tau_syn_inh_inv=p.tau_syn_inh_inv)
    warnings.warn(
        f"{loc}: Norse 1.1.0's CobaLIFCell ignores its input (coba_lif_step overwrites the input's conductances "
        "with the recurrent ones); the compiled model does the same",
        FrontendWarning,
        stacklevel=2,
    )
    hidden = TensorType((int(m.hidden_size),))

    def op(suffix: str, kind: str, inputs: tuple[str, ...], **attrs: AttrValue) -> str:
        return b.add(f"{name}.{suffix}", kind, inputs, attrs, loc, hidden if kind == "constant" else None)

    def value(key: str, raw: Raw) -> AttrValue:
        return b.element_param(name, key, _array(raw), hidden.shape, loc)

    state = {key: b.delay(f"{name}.{key}", hidden, loc) for key in ("v", "g_e", "g_i", "z")}  # the last step's
    weights = m.recurrent_weights.detach()
    conductance = {}
    for key, weight, tau_inv in (
        ("g_e", weights.relu(), p.tau_syn_exc_inv),
        ("g_i", (-weights).relu(), p.tau_syn_inh_inv),
    ):
        jumped = op(
            f"{key}.jump", "add", (state[key], dense(b, f"{name}.{key}.recurrent", state["z"], weight, None, loc))
        )
        decay = op(f"{key}.decay", "scale", (jumped,), factor=value(f"neg_dt_{key}", -dt * tau_inv))
        conductance[key] = op(f"{key}.new", "add", (jumped, decay))
    negated = op("neg_v", "scale", (state["v"],), factor=-1.0)  # v_rest - v is exactly (-v) + v_rest

    def towards(key: str, reversal: Raw) -> str:
        return op(f"{key}.gap", "offset", (negated,), value=value(key, reversal))

    leak = op("leak", "scale", (towards("rest", p.v_rest),), factor=value("g_l", p.g_l))
    excite = op("excite", "mul", (conductance["g_e"], towards("rev_E", p.e_rev_E)))
    inhibit = op("inhibit", "mul", (conductance["g_i"], towards("rev_I", p.e_rev_I)))
    total = op("inhibit.sum", "add", (op("excite.sum", "add", (leak, excite)), inhibit))
    v1 = op("v1", "add", (state["v"], op("dv", "scale", (total,), factor=value("dt_c_m", dt * p.c_m_inv))))
    z = b.add(name, "threshold", (v1,), {"threshold": value("v_thresh", p.v_thresh)}, loc)
    reset = op("v_reset", "constant", (), value=value("v_reset", p.v_reset))
    v = op("v.new", "select", (z, reset, v1))
    for key, source in (("v", v), ("g_e", conductance["g_e"]), ("g_i", conductance["g_i"]), ("z", z)):
        b.connect_delay(state[key], source)
    b.current = z

"""Neuron families of snnTorch, SpikingJelly and Sinabs, each written once (see `masic.ir.neurons` for how).

Each update repeats its framework's forward pass operator by operator, in the framework's order, so that the
interpreter and the kernels reproduce it bit for bit; every coefficient the framework computes once from its
parameters (a clamped decay, a sigmoid, an exponential, a quotient of time constants) is folded by the frontend with
the framework's own torch expression and stored rounded to float32. The frontends (`masic.frontends.snntorch`,
`spikingjelly`, `sinabs`) say which module maps to which family and how its parameters fold.

snnTorch computes its reset from the membrane of the previous step (`reset_delay=True`, its default): a neuron that
fired at step t is reset during step t+1, so each of these updates starts with `reset = (mem - threshold) > 0` on the
old membrane. The updates of `RLeaky` and `RSynaptic`, which add a recurrent input, are `leaky_charge` and
`synaptic_charge` below emitted as element-wise IR ops by the snnTorch frontend (a family has one input), and so is
`alpha_update`, whose states read each other both ways.

A Sinabs neuron with its default spike function (`MultiSpike`) outputs a count of spikes, a float32 holding an
integer, so its family is not spiking (`spiking=False`, see `masic.ir.neurons`); with `SingleSpike` it is.
"""

from __future__ import annotations

from types import SimpleNamespace

from masic.ir.arith import Num, equal, floor, maximum, minimum, spike
from masic.ir.neurons import family

SNNTORCH_RESETS = ("subtract", "zero", "none")


def snntorch_fires(mem: Num, threshold: Num | float) -> Num:
    """snnTorch's Heaviside spike of a membrane, `(mem - threshold) > 0` as 1.0 / 0.0 (also its delayed reset)."""
    return spike((mem - threshold) > 0.0)


def leaky_charge(x: Num, recurrent: Num | None, s: SimpleNamespace, p: SimpleNamespace, reset: str) -> Num:
    """The new membrane of snnTorch's Leaky (recurrent=None) and RLeaky (recurrent: the recurrent input).
    Leaky:  subtract: (beta*mem + x) - r*threshold;  zero: beta*((1 - r)*mem) + x;  none: beta*mem + x
    RLeaky: base = (beta*mem + x) + recurrent;  subtract: base - r*threshold;  zero: base - r*base;  none: base
    where r = (mem - threshold) > 0 on the old membrane."""
    r = snntorch_fires(s.mem, p.threshold)
    if recurrent is None and reset == "zero":
        return p.beta * ((1.0 - r) * s.mem) + x
    base = p.beta * s.mem + x
    if recurrent is not None:
        base = base + recurrent
    if reset == "subtract":
        return base - r * p.threshold
    return base - r * base if reset == "zero" else base


def synaptic_charge(
    x: Num, recurrent: Num | None, s: SimpleNamespace, p: SimpleNamespace, reset: str
) -> tuple[Num, Num]:
    """(syn', mem') of snnTorch's Synaptic (recurrent=None) and RSynaptic:
    syn1 = alpha*syn + x [+ recurrent];  mem1 = beta*mem + syn1
    subtract: mem' = mem1 - r*threshold;  zero: mem' = mem1 - mem1*r;  none: mem1;  syn' = syn1 in every case (the
    zero reset subtracts 0*r from it)."""
    r = snntorch_fires(s.mem, p.threshold)
    syn = p.alpha * s.syn + x
    if recurrent is not None:
        syn = syn + recurrent
    mem = p.beta * s.mem + syn
    if reset == "subtract":
        mem = mem - r * p.threshold
    elif reset == "zero":
        mem = mem - mem * r
    return syn, mem


@family(
    "snn_leaky",
    params=("beta", "threshold"),
    states=(("mem", None),),
    modes=(("reset", SNNTORCH_RESETS),),
)
def SNN_LEAKY(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """snnTorch Leaky (beta clamped to [0, 1] by the frontend, as snnTorch clamps it).
    r = (mem - threshold) > 0
    subtract: mem' = (beta*mem + x) - r*threshold;  zero: mem' = beta*((1 - r)*mem) + x;  none: mem' = beta*mem + x
    z = (mem' - threshold) > 0;  output z"""
    mem = leaky_charge(x, None, s, p, mode.reset)
    return {"z": snntorch_fires(mem, p.threshold), "mem": mem}


@family(
    "snn_synaptic",
    params=("alpha", "beta", "threshold"),
    states=(("mem", None), ("syn", None)),
    modes=(("reset", SNNTORCH_RESETS),),
)
def SNN_SYNAPTIC(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """snnTorch Synaptic (alpha and beta clamped to [0, 1]).
    r = (mem - threshold) > 0;  syn' = alpha*syn + x;  mem1 = beta*mem + syn'
    subtract: mem' = mem1 - r*threshold;  zero: mem' = mem1 - mem1*r;  none: mem' = mem1
    z = (mem' - threshold) > 0;  output z"""
    syn, mem = synaptic_charge(x, None, s, p, mode.reset)
    return {"z": snntorch_fires(mem, p.threshold), "mem": mem, "syn": syn}


@family(
    "snn_lapicque",
    params=("r", "inv_rc", "time_step", "decay", "threshold"),
    states=(("mem", None),),
    modes=(("reset", SNNTORCH_RESETS),),
)
def SNN_LAPICQUE(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """snnTorch Lapicque, with inv_rc = 1/(R*C) and decay = 1 - time_step/(R*C) folded as snnTorch computes them.
    r = (mem - threshold) > 0;  base = ((x*R)*inv_rc)*time_step + decay*mem
    subtract: mem' = base - r*threshold;  zero: mem' = base - r*base;  none: mem' = base
    z = (mem' - threshold) > 0;  output z"""
    r = snntorch_fires(s.mem, p.threshold)
    base = ((x * p.r) * p.inv_rc) * p.time_step + p.decay * s.mem
    mem = base - r * p.threshold if mode.reset == "subtract" else base - r * base if mode.reset == "zero" else base
    return {"z": snntorch_fires(mem, p.threshold), "mem": mem}


def alpha_update(x: Num, s: SimpleNamespace, p: SimpleNamespace, reset: str) -> dict[str, Num]:
    """snnTorch Alpha, with tau_alpha = log(alpha)/(log(beta) - log(alpha)) + 1 folded as snnTorch computes it.
    r = (mem - threshold) > 0;  exc1 = alpha*syn_exc + x;  inh1 = beta*syn_inh - x;  mem1 = tau_alpha*(exc1 + inh1)
    subtract: exc' = exc1 - threshold*r;  inh' = inh1 - inh1*r;  mem' = mem1 - (-syn_inh)*r
    zero:     exc' = exc1 - exc1*r;       inh' = inh1 - inh1*r;  mem' = mem1 - mem1*r
    none:     exc1, inh1, mem1
    z = (mem' - threshold) > 0;  output z.
    Not a family: every state reads the membrane (through r) and the membrane reads every state, which in-place
    stores cannot order, so the snnTorch frontend emits it as element-wise IR ops, each value its own temporary."""
    r = snntorch_fires(s.mem, p.threshold)
    exc = p.alpha * s.syn_exc + x
    inh = p.beta * s.syn_inh - x
    mem = p.tau_alpha * (exc + inh)
    if reset == "subtract":
        exc, inh, mem = exc - p.threshold * r, inh - inh * r, mem - (-s.syn_inh) * r
    elif reset == "zero":
        exc, inh, mem = exc - exc * r, inh - inh * r, mem - mem * r
    return {"z": snntorch_fires(mem, p.threshold), "mem": mem, "syn_exc": exc, "syn_inh": inh}


def _spikingjelly_fire(h: Num, p: SimpleNamespace, reset: str) -> tuple[Num, Num]:
    """SpikingJelly's spike `(h - v_threshold) >= 0` and reset: hard, `spike*v_reset + (1 - spike)*h`; soft,
    `h - spike*v_threshold`."""
    z = spike((h - p.v_threshold) >= 0.0)
    v = z * p.v_reset + (1.0 - z) * h if reset == "hard" else h - z * p.v_threshold
    return z, v


SJ_MODES = (("reset", ("hard", "soft")),)


@family("sj_if", params=("v_threshold", "v_reset"), states=(("v", "v_reset"),), modes=SJ_MODES)
def SJ_IF(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """SpikingJelly IFNode (v_reset = 0 for the soft reset, v_reset=None, which starts from 0 too).
    h = v + x;  z = (h - v_threshold) >= 0
    hard: v' = z*v_reset + (1 - z)*h;  soft: v' = h - z*v_threshold;  output z"""
    z, v = _spikingjelly_fire(s.v + x, p, mode.reset)
    return {"z": z, "v": v}


def _spikingjelly_leak(x: Num, v: Num, p: SimpleNamespace, decay_input: str, leak: str) -> Num:
    """SpikingJelly's LIF charge; the leak divides by tau (LIFNode) or multiplies by q = sigmoid(w) (PLIF)."""

    def decayed(value: Num) -> Num:
        return value / p.k if leak == "divide" else value * p.k

    if decay_input == "true":
        return v + decayed(x - (v - p.v_reset))
    return v - decayed(v - p.v_reset) + x


@family(
    "sj_lif",
    params=("k", "v_threshold", "v_reset"),
    states=(("v", "v_reset"),),
    modes=(*SJ_MODES, ("decay_input", ("true", "false")), ("leak", ("divide", "multiply"))),
)
def SJ_LIF(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """SpikingJelly LIFNode (leak="divide", k = tau) and ParametricLIFNode (leak="multiply", k = sigmoid(w)),
    with v_reset = 0 for the soft reset. Writing d(a) for a/k or a*k:
    decay_input true: h = v + d(x - (v - v_reset));  false: h = v - d(v - v_reset) + x
    z = (h - v_threshold) >= 0;  hard: v' = z*v_reset + (1 - z)*h;  soft: v' = h - z*v_threshold;  output z"""
    z, v = _spikingjelly_fire(_spikingjelly_leak(x, s.v, p, mode.decay_input, mode.leak), p, mode.reset)
    return {"z": z, "v": v}


SINABS_MODES = (("synapse", ("none", "exponential")), ("reset", ("subtract", "to_value")), ("clip", ("none", "min")))


def _sinabs_charge(x: Num, s: SimpleNamespace, p: SimpleNamespace, synapse: str) -> tuple[Num, Num]:
    """(v_mem, i_syn) after Sinabs' charge: i_syn' = alpha_syn*(i_syn + x) (or x without synapse);
    v_mem1 = alpha_mem*v_mem + gain*i_syn', gain = 1 - alpha_mem with norm_input, else 1 (a product by 1 is exact)."""
    i_syn = p.alpha_syn * (s.i_syn + x) if synapse == "exponential" else x
    return p.alpha_mem * s.v_mem + p.gain * i_syn, (i_syn if synapse == "exponential" else s.i_syn)


def _sinabs_after(spikes: Num, v: Num, p: SimpleNamespace, mode: SimpleNamespace) -> Num:
    """The membrane after Sinabs' reset (MembraneSubtract: v - spikes*subtract; MembraneReset:
    v*(spikes == 0) + reset_value) and min_v_mem (relu(v - min_v) + min_v)."""
    reset = v - spikes * p.subtract if mode.reset == "subtract" else v * spike(equal(spikes, 0.0)) + p.reset_value
    return _sinabs_clip(reset, p, mode.clip)


def _sinabs_clip(v: Num, p: SimpleNamespace, clip: str) -> Num:
    return maximum(v - p.min_v, 0.0) + p.min_v if clip == "min" else v


SINABS_PARAMS = ("alpha_mem", "alpha_syn", "gain", "threshold", "subtract", "reset_value", "min_v", "max_spikes")


@family(
    "sinabs",
    params=SINABS_PARAMS,
    states=(("v_mem", None), ("i_syn", None)),
    spiking=False,
    modes=(*SINABS_MODES, ("spikes", ("multi", "max"))),
)
def SINABS(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Sinabs IAF / LIF with MultiSpike (or MaxSpike, at most max_spikes a step): a count of spikes.
    i_syn' = alpha_syn*(i_syn + x) (synapse) or x;  v1 = alpha_mem*v_mem + gain*i_syn'
    n = (v1 > 0)*floor(v1 / threshold) [min(n, max_spikes)]   (Sinabs truncates; the two agree where v1 > 0)
    v' = v1 - n*subtract  or  v1*(n == 0) + reset_value;  then relu(v' - min_v) + min_v with clip;  output n"""
    v, i_syn = _sinabs_charge(x, s, p, mode.synapse)
    n = spike(v > 0.0) * floor(v / p.threshold)
    if mode.spikes == "max":
        n = minimum(n, p.max_spikes)
    return {"out": n, "v_mem": _sinabs_after(n, v, p, mode), "i_syn": i_syn}


@family("sinabs_single", params=SINABS_PARAMS[:-1], states=(("v_mem", None), ("i_syn", None)), modes=SINABS_MODES)
def SINABS_SINGLE(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Sinabs IAF / LIF with SingleSpike: charge as `sinabs`, z = (v1 - threshold) >= 0, reset and clip as
    `sinabs`;  output z"""
    v, i_syn = _sinabs_charge(x, s, p, mode.synapse)
    z = spike((v - p.threshold) >= 0.0)
    return {"z": z, "v_mem": _sinabs_after(z, v, p, mode), "i_syn": i_syn}


@family(
    "sinabs_leak",
    params=("alpha_mem", "gain", "min_v"),
    states=(("v_mem", None),),
    spiking=False,
    modes=(("clip", ("none", "min")),),
)
def SINABS_LEAK(x: Num, s: SimpleNamespace, p: SimpleNamespace, mode: SimpleNamespace) -> dict[str, Num]:
    """Sinabs ExpLeak: v1 = alpha_mem*v_mem + gain*x;  output v1 (before the clip);  v' = v1 or
    relu(v1 - min_v) + min_v"""
    v = p.alpha_mem * s.v_mem + p.gain * x
    return {"out": v, "v_mem": _sinabs_clip(v, p, mode.clip)}

"""Reading a `torch.save` file of a Norse, snnTorch, SpikingJelly or Sinabs model without running code chosen by its
author.

A pickle is a program: GLOBAL names a Python object, REDUCE calls it. PyTorch's weights-only unpickler executes only
GLOBALs from an allowlist and REDUCEs only on allowlisted callables. Its own default list is reviewed by PyTorch; what
masic adds must keep the property that no object outside the list can ever reach the unpickler's stack, because
PyTorch allowlists `torch._tensor._rebuild_from_type_v2(func, new_type, args, state)`, which calls *any* `func` it
is given. So every callable masic allows must return only objects that are themselves harmless to call:

- module classes (constructing a layer or cell builds tensors and submodules, nothing else);
- Norse's step and reset functions (tensor arithmetic on their arguments; a cell keeps them as attributes);
- Norse's parameter tuples (namedtuples of tensors, numbers and strings; an Izhikevich cell's spiking behaviour is
  one of its parameters and one of initial-state tensors);
- snnTorch's, SpikingJelly's and Sinabs' module classes, as above, and the small classes their neurons keep as
  attributes: SpikingJelly's surrogate functions and Sinabs' spike, reset and surrogate functions (dataclasses or
  autograd Functions holding numbers, whose calls compute on tensors);
- `builtins.getattr`, which pickle uses to save a bound method (a cell's `state_fallback` is its own
  `initial_state`). The real getattr would reach any attribute of any object, e.g. a Norse function's
  `__builtins__`, then its `get`, then `eval`: a file that runs code while it is "only" read. In its place masic
  installs `_bound_method`, which gives exactly a method that the object's allowlisted class itself defines, from a
  short list of names (never the instance's `__dict__`, never a dunder), bound to that object: a Norse cell's
  `initial_state`, a snnTorch neuron's state function (`_base_sub`, `_base_zero`, `_base_int`, tensor arithmetic);
  and on a class, exactly one static method: `SpikingNeuron._surrogate_bypass` (a comparison of a tensor with 0),
  which pickle saves as a getattr of its class.

snnTorch's default surrogate gradients are closures that pickle cannot save at all, so a snnTorch model saved with
torch.save holds neurons made with `surrogate_disable=True` (or is given as a factory).

Anything else a file names is refused with that name, before any of it is used.
"""

from __future__ import annotations

import importlib.util
import inspect
import pickletools
import re
import types
import zipfile
from pathlib import Path
from typing import Any

import torch
from masic.frontends.errors import FrontendError, first_line, library_warnings_silenced
from torch import nn

PARAMETER_CLASSES = ("LIFParameters", "LIFBoxParameters", "LIParameters", "LIBoxParameters", "IAFParameters")

# The methods a saved model may hold bound to one of its modules (Norse's SNNCell stores `self.initial_state`,
# snnTorch's neurons `self.state_function`).
BOUND_METHODS = frozenset({"initial_state", "_base_sub", "_base_zero", "_base_int"})
STATIC_METHODS = frozenset({"_surrogate_bypass"})  # and the static methods a saved model may name through a class


def install_pickle_aliases() -> None:
    """Works around norse issue #414: parameter tuples pickle under a module path that lacks them."""
    import norse.torch as norse_torch
    import norse.torch.utils.pytree as pytree

    for name in PARAMETER_CLASSES:
        setattr(pytree, name, getattr(norse_torch, name))


def _module_classes() -> list[type]:
    import norse.torch as nt
    from masic.frontends.norse_cells import cells
    from norse.torch.models import mobilenet

    classes = [nt.SequentialState, nt.RecurrentSequential, *cells(), nt.LILinearCell, nt.CobaLIFCell, nt.Lift]
    classes += [nt.VGG, nt.MobileNetV2, nt.ConvNet, nt.ConvNet4]
    classes += [mobilenet.ConvBNReLU, mobilenet.InvertedResidual]
    classes += [nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout]
    classes += [nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Sequential]
    return classes + _framework_classes()


def _framework_classes() -> list[type]:
    """The modules the snnTorch, SpikingJelly and Sinabs frontends read, and what their neurons hold, for each of
    those frameworks that is installed (a file that names a class of a missing one is refused naming the class)."""
    readers = {"snntorch": _snntorch_classes, "spikingjelly": _spikingjelly_classes, "sinabs": _sinabs_classes}
    classes = [c for name, read in readers.items() if importlib.util.find_spec(name) is not None for c in read()]
    return list(dict.fromkeys(classes))


def _snntorch_classes() -> list[type]:
    import snntorch as snn
    from snntorch._neurons import rleaky, rsynaptic

    classes = [snn.SpikingNeuron, snn.Leaky, snn.Synaptic, snn.Lapicque, snn.Alpha, snn.RLeaky, snn.RSynaptic]
    return [*classes, rleaky.RecurrentOneToOne, rsynaptic.RecurrentOneToOne]


def _spikingjelly_classes() -> list[type]:
    from masic.frontends.spikingjelly import framework as spikingjelly_framework
    from spikingjelly.activation_based import surrogate

    jelly = spikingjelly_framework()
    classes = [*jelly.converters, *jelly.no_ops, *jelly.containers]
    return classes + [
        c for c in vars(surrogate).values() if isinstance(c, type) and issubclass(c, surrogate.SurrogateFunctionBase)
    ]


def _sinabs_classes() -> list[type]:
    import sinabs.activation as sa
    import sinabs.layers as sl

    classes = [sl.IAF, sl.IAFSqueeze, sl.LIF, sl.LIFSqueeze, sl.ExpLeak, sl.ExpLeakSqueeze, sl.SumPool2d]
    classes += [sa.MultiSpike, sa.MaxSpike, sa.SingleSpike, sa.MembraneSubtract, sa.MembraneReset]
    return [*classes, sa.SingleExponential, sa.Heaviside, sa.PeriodicExponential, sa.Gaussian]


def _functions() -> list[Any]:
    """The step functions a cell keeps as `activation` (and `activation_sparse`), whichever it was built with, and
    the parameter tuples."""
    import norse.torch as nt
    import norse.torch.functional as nf
    from norse.torch.functional import reset
    from norse.torch.functional.adjoint import lif_adjoint, lif_refrac_adjoint, lsnn_adjoint

    lif = [nf.lif.lif_feed_forward_step, nf.lif.lif_feed_forward_step_sparse, nf.lif.lif_step, nf.lif.lif_step_sparse]
    lif += [
        getattr(lif_adjoint, f"lif{kind}_adjoint_step{s}") for kind in ("", "_feed_forward") for s in ("", "_sparse")
    ]
    refrac = [nf.lif_refrac.lif_refrac_feed_forward_step, nf.lif_refrac.lif_refrac_step]
    refrac += [nf.lif_refrac.lif_refrac_step_sparse, lif_refrac_adjoint.lif_refrac_feed_forward_adjoint_step]
    refrac += [lif_refrac_adjoint.lif_refrac_adjoint_step, lif_refrac_adjoint.lif_refrac_adjoint_step_sparse]
    lsnn = [nf.lsnn.lsnn_feed_forward_step, nf.lsnn.lsnn_step]
    lsnn += [lsnn_adjoint.lsnn_feed_forward_adjoint_step, lsnn_adjoint.lsnn_adjoint_step]
    steps = [
        *lif,
        *refrac,
        *lsnn,
        nf.lif_box.lif_box_feed_forward_step,
        nf.leaky_integrator.li_feed_forward_step,
        nf.leaky_integrator_box.li_box_feed_forward_step,
        nf.iaf.iaf_feed_forward_step,
        nf.lif_ex.lif_ex_feed_forward_step,
        nf.lif_ex.lif_ex_step,
        nf.lif_adex.lif_adex_feed_forward_step,
        nf.lif_adex.lif_adex_step,
        nf.izhikevich.izhikevich_feed_forward_step,
        nf.izhikevich.izhikevich_recurrent_step,
        reset.reset_value,
        reset.reset_subtract,
    ]
    tuples = [nt.LSNNParameters, nt.LIFExParameters, nt.LIFAdExParameters, nt.LIFRefracParameters]
    tuples += [nt.CobaLIFParameters, nt.IzhikevichParameters, nt.IzhikevichState, nt.IzhikevichSpikingBehavior]
    return steps + tuples + [getattr(nt, name) for name in PARAMETER_CLASSES]


class _Refusal(Exception):
    """Raised inside the unpickler; carries masic's own message out through PyTorch's wrapping."""


def _bound_method_of(classes: frozenset[type]) -> Any:
    def _bound_method(obj: object, name: object) -> types.MethodType | types.FunctionType:
        """`getattr(obj, name)` as a pickle may ask it: a method of an allowed module class, bound to `obj`, or a
        static method of an allowed class."""
        if isinstance(obj, type) and obj in classes and name in STATIC_METHODS:
            function = inspect.getattr_static(obj, str(name), None)
            if isinstance(function, staticmethod):
                return function.__func__
        cls = type(obj)
        if cls not in classes or name not in BOUND_METHODS:
            raise _Refusal(f"getattr({cls.__module__}.{cls.__qualname__}, {str(name)!r})")
        method = inspect.getattr_static(cls, str(name), None)
        if not isinstance(method, types.FunctionType):
            raise _Refusal(f"getattr({cls.__module__}.{cls.__qualname__}, {str(name)!r})")
        return types.MethodType(method, obj)

    return _bound_method


def allowed_globals() -> list[Any]:
    """What a saved model of supported layers may name (see the module docstring for why each is safe)."""
    classes = _module_classes()
    return [*classes, *_functions(), (_bound_method_of(frozenset(classes)), "builtins.getattr")]


# PyTorch words a refused GLOBAL in two ways: modules it blocks outright (os, sys, ...) and names not allowlisted.
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")


def load_untrusted(path: Path, spec: str) -> Any:
    """`torch.load` with masic's allowlist; every refusal is a one-line FrontendError naming what the file asked for."""
    try:
        with torch.serialization.safe_globals(allowed_globals()), library_warnings_silenced():
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        named = _REFUSED_GLOBAL.search(str(err))
        refusal = next((e for e in _causes(err) if isinstance(e, _Refusal)), None)
        asked = _qualified(named[1]) if named else str(refusal) if refusal else _disallowed_global(path)
        if asked is None:
            raise FrontendError(f"cannot read {spec}: {unpickler_reason(err)}") from None
        raise FrontendError(
            f"{spec} names {asked}, which masic's safe loader does not allow; if you trust this file, "
            "add --trust-pickle (loading it then runs code from the file)"
        ) from None


def load_trusted(path: Path, spec: str) -> Any:
    """Full pickle, for files the user chose to trust (`--trust-pickle`)."""
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:
        raise FrontendError(f"cannot read {spec}: {first_line(err)}") from None


def _disallowed_global(path: Path) -> str | None:
    """The first global the pickle names that is not allowed, for files PyTorch refuses without naming one (it
    does not read STACK_GLOBAL at all): GLOBAL's argument, or STACK_GLOBAL's two strings pushed just before it."""
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = {f"{g.__module__}.{g.__qualname__}" for g in allowed_globals() if not isinstance(g, tuple)}
    allowed |= {"builtins.getattr", *_get_allowed_globals()}
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            strings: list[str] = []
            for opcode, arg, _ in pickletools.genops(archive.read(pkl)):
                if isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
                name = arg.replace(" ", ".") if opcode.name == "GLOBAL" else None
                if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    name = ".".join(strings[-2:])
                if name and _qualified(name.replace("__builtin__.", "builtins.")) not in allowed:
                    return _qualified(name.replace("__builtin__.", "builtins."))
    except Exception:  # a malformed pickle: PyTorch's own reason is the message
        return None
    return None


def _qualified(name: str) -> str:
    """PyTorch drops the `builtins.` of the names it quotes (`eval`); masic names the global as the file does."""
    return name if "." in name else f"builtins.{name}"


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def unpickler_reason(err: BaseException) -> str:
    """PyTorch's own reason, without its advice to load the file unsafely."""
    _, marker, reason = str(err).partition("WeightsUnpickler error:")
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return lines[0] if marker and lines else first_line(err)

"""Descriptions of the point-wise kernels: neuron updates, element-wise functions, and row copies (crops and concats
of row patches). Static shapes, batch 1; the C signature of each is in its docstring."""

from __future__ import annotations

from dataclasses import dataclass

from masic.codegen.kernels.args import KernelArgs
from masic.ir.elementwise import FUNCTIONS
from masic.ir.graph import words
from masic.ir.neurons import FAMILIES, NeuronFamily


@dataclass(frozen=True)
class NeuronKernel(KernelArgs):
    """Element-wise update of the neuron family `family` (`masic.ir.neurons`) over `n` neurons; state is updated in
    place.

    `params` lists every parameter of the family exactly once: a float is baked in as a float32 constant, None makes
    it an extra per-neuron `float*` argument, appended in the order listed. `modes` gives each of the family's modes
    its value, e.g. (("reset", "subtract"),).
    C signature: `int32_t symbol(float* x, <state...>, float* <z|out>, <per-neuron params...>)`, e.g. for "lif"
    `symbol(x, v, i, z, ...)`. x and the output must not alias the state buffers. With `probe` (a state name) the
    output buffer receives that state's new value instead of the spikes. With `packed` the spikes are bit-packed:
    `uint32_t* z` of ceil(n / 32) words, neuron k's spike bit k % 32 of word k // 32.
    """

    symbol: str
    family: str
    n: int
    params: tuple[tuple[str, float | None], ...]
    probe: str = ""
    spikes: tuple[str, ...] = ()
    packed: bool = False
    modes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.symbol}: unknown neuron family {self.family!r}")
        definition = self.definition
        if sorted(name for name, _ in self.params) != sorted(definition.params):
            raise ValueError(f"{self.symbol}: {self.family} needs parameters {definition.params}")
        modes = dict(self.modes)
        if sorted(modes) != sorted(definition.mode_names) or any(
            modes[name] not in allowed for name, allowed in definition.modes
        ):
            raise ValueError(f"{self.symbol}: {self.family} needs modes {dict(definition.modes)}, got {modes}")
        if self.probe and self.probe not in definition.state_names:
            raise ValueError(f"{self.symbol}: {self.family} has no state {self.probe!r} to probe")
        if self.packed and (self.probe or not definition.spiking):
            raise ValueError(f"{self.symbol}: only spikes are bit-packed, and {self.family} outputs none here")

    @property
    def definition(self) -> NeuronFamily:
        return FAMILIES[self.family]

    def packed_args(self) -> tuple[str, ...]:
        return ("z",) if self.packed else ()

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every argument holds one float per neuron, but packed spikes `z` (ceil(n / 32) words)."""
        definition = self.definition
        per_neuron = (name for name, value in self.params if value is None)
        shapes = {name: (self.n,) for name in ("x", *definition.state_names, definition.output, *per_neuron)}
        return shapes | ({"z": (words(self.n),)} if self.packed else {})


@dataclass(frozen=True)
class ElementwiseAddKernel(KernelArgs):
    """`y = a + b` over n floats. C signature: `int32_t symbol(float* a, float* b, float* y)`."""

    symbol: str
    n: int
    spikes: tuple[str, ...] = ()

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """a, b, y: (n,)."""
        return {"a": (self.n,), "b": (self.n,), "y": (self.n,)}


@dataclass(frozen=True)
class ElementwiseKernel(KernelArgs):
    """`y = fn(operands..., p)` over n floats, one float32 rounding per operation (PyTorch's results exactly).

    `fn` is a key of `masic.ir.elementwise.FUNCTIONS`. For functions with a parameter, `constant` bakes it in as a
    float32; None makes it a per-element `float* p` argument after the operands.
    C signature: `int32_t symbol(float* <operands...>, [float* p,] float* y)`, e.g. `scale(x, y)`.
    """

    symbol: str
    fn: str
    n: int
    constant: float | None = None
    spikes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.fn not in FUNCTIONS:
            raise ValueError(f"{self.symbol}: unknown element-wise function {self.fn!r}")
        if self.constant is not None and not FUNCTIONS[self.fn].param:
            raise ValueError(f"{self.symbol}: {self.fn} takes no parameter")

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every argument holds n floats."""
        fn = FUNCTIONS[self.fn]
        param = ("p",) if fn.param and self.constant is None else ()
        return {name: (self.n,) for name in (*fn.operands, *param, "y")}


@dataclass(frozen=True)
class RowsKernel(KernelArgs):
    """Rows of (C, H_k, W) operands stacked: y holds rows [lo_k, hi_k) of x0, then those of x1, and so on. One
    operand makes a row crop (an image patch's input rows), whole operands the concat of row patches. Each
    channel's rows are contiguous, but a channel's block of rows is not, so this is no flat copy.

    C signature: `int32_t symbol(float* x0, ..., float* y)`.
    """

    symbol: str
    in_shapes: tuple[tuple[int, int, int], ...]
    rows: tuple[tuple[int, int], ...]  # (lo, hi) taken from each operand
    spikes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.in_shapes) or not self.rows:
            raise ValueError(f"{self.symbol}: one row range per operand, and at least one operand")
        if any((c, w) != (self.in_shapes[0][0], self.in_shapes[0][2]) for c, _, w in self.in_shapes):
            raise ValueError(f"{self.symbol}: operands differ in channels or width: {self.in_shapes}")
        if any(not 0 <= lo < hi <= h for (lo, hi), (_, h, _) in zip(self.rows, self.in_shapes, strict=True)):
            raise ValueError(f"{self.symbol}: row ranges {self.rows} outside operands {self.in_shapes}")

    def out_shape(self) -> tuple[int, int, int]:
        """(C, total rows taken, W)."""
        c, _, w = self.in_shapes[0]
        return (c, sum(hi - lo for lo, hi in self.rows), w)

    def arg_shapes(self) -> dict[str, tuple[int, ...]]:
        """x0 .. x{n-1} as given, y (C, rows, W)."""
        return {**{f"x{k}": shape for k, shape in enumerate(self.in_shapes)}, "y": self.out_shape()}

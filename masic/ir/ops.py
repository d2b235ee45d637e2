"""The op table: for each op its operands, attributes, shape rule, traits and hooks, defined once.

Every analysis, pass, lowering step and the interpreter asks an op's definition here (`OPS[node.op]`) what it
needs to know about the op, rather than keeping lists of op names; only the passes that transform particular ops
(fold-batchnorm, fold-pooling, slice-layers, the weight layouts of the layout pass) and the frontends, which map a
source model's operations to ops, name ops (tests/ir/test_op_table.py checks it). The traits:

- `view`: aliases its operand's buffer (no bytes, no kernel of its own): flatten, reshape;
- `elementwise`: each output element depends on the same element of each operand (and of its per-element
  parameters and state) only; with one operand it is a `layout_carrier`, storing its output (and its per-element
  parameters and state) in its operand's layout; `function` names the element-wise function of
  `masic.ir.elementwise` it computes, if it is one (its parameter, if any, is `element_params[0]`);
- `window`: slides a window over its padded input, copied into a scratch buffer first (`scratch`, of
  `scratch_dtype`), and reads a channel-blocked operand as freely as an NCHW one (`reads_blocked`); a pooling's
  `pooling` names its reduction;
- `passes_spikes`: outputs its operands' type (a delay: its source's), so spikes in are spikes out;
- `row_local`: each output row depends on a bounded window of its operands' rows only (row patches: patch-rows);
- `fusable`: a neuron may run as the epilogue of its kernel (fuse-neurons); `batches`: in blocks of several steps
  its kernel computes every step in one call (`Graph.batched`); `blocked_weight`: its weight may be stored in blocks
  of output channels, and its output then in blocks of channels (the layout pass);
- `graph_input` (the sample the loader writes), `delay` (outputs its state, the value its `source` had at the
  previous step), `family` (a neuron family), `folded_by` (has no kernel: the named pass folds it away);
- `kernel`: which kernel description lowering builds for it (`masic.codegen.lower`), None when it has none;
  `calls_kernel`: whether its position runs a kernel call at all (not the input, not a view).
The hooks: `interpret` (its numpy implementation, `masic.ir.reference`), `work` (multiply-accumulates or element
operations of one call, for the cost model), `scratch` (the kernel's workspace) and `check_attrs` (word attributes
the shape rule does not read).

Neuron ops are one `NeuronOp` each, made from the neuron families of `masic.ir.neurons` (their parameters, states,
modes and equations are defined there, once). A neuron parameter is either a float attribute or a `ParamRef` to a
per-neuron array of the neuron's shape; so are the parameters of the element-wise ops listed in their
`element_params` (scale, offset, threshold, constant).

Element types (`masic.ir.graph.DTYPES`): a spiking neuron's output is "f32", "spike" (0/1 in one byte; the
spike-dtype pass chooses) or "bits" (0/1 bit-packed; the layout pass chooses); the declared type records the
choice and the shape rule keeps it; the ops that pass spikes on (max pooling, views, crop_rows, concat and delay)
pass their operand's type on; every other op outputs "f32" and reads any type (a spike counts as 0.0 or 1.0),
though only views and accumulating dense layers read bits (`masic.ir.verify`).

Cycles: the graph is a DAG within a step. `delay` carries a value across steps: its output at step t is the value of
its `source` (a node later in the order) at step t-1, zeros at t=0. The source's value is copied into the delay's
state right after the source is computed, so a delay must come before its source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from functools import partial
from math import prod
from types import MappingProxyType

from masic.ir import reference
from masic.ir.elementwise import FUNCTIONS
from masic.ir.names import BufferId, state
from masic.ir.neurons import FAMILIES, NeuronFamily
from masic.ir.node import WEIGHT_DTYPES, Node, ParamRef, TensorType
from masic.ir.reference import Implementation
from masic.ir.shapes import (
    ParamRule,
    ShapeError,
    ShapeRule,
    batchnorm2d_params,
    conv2d_params,
    dense_params,
    infer_adaptive_pool2d,
    infer_batchnorm2d,
    infer_concat,
    infer_conv2d,
    infer_crop_rows,
    infer_declared,
    infer_dense,
    infer_flatten,
    infer_identity,
    infer_pool2d,
    infer_reshape,
    infer_same,
    infer_spiking,
    pads,
)

VARIADIC = -1  # an arity: one or more operands

RowRule = Callable[[Node], bool]
# Multiply-accumulates (or element operations) of one call of a node, given its operands' types
WorkRule = Callable[[Node, tuple[TensorType, ...]], int]


def _element_shapes(node: Node, ins: tuple[TensorType, ...], out: TensorType) -> Mapping[str, tuple[int, ...]]:
    """Per-element parameters (`float_or_param`): one value per output element."""
    return dict.fromkeys(float_or_param(OPS[node.op]), out.shape)


def _always(node: Node) -> bool:
    return True


def _never(node: Node) -> bool:
    return False


def _channel_concat(node: Node) -> bool:
    """A concat of channels (axis 0) takes output row r from row r of each part; one of rows joins whole images."""
    return node.attr("axis", 0) == 0


def _per_element(node: Node, ins: tuple[TensorType, ...]) -> int:
    return node.type.numel


def _conv_work(node: Node, ins: tuple[TensorType, ...]) -> int:
    """Each output sums its group's input channels over the kernel's taps."""
    return node.type.numel * (ins[0].shape[0] // node.attr("groups")) * prod(node.attr("kernel"))


def _dense_work(node: Node, ins: tuple[TensorType, ...]) -> int:
    return node.type.numel * ins[0].shape[0]


def _window_work(node: Node, ins: tuple[TensorType, ...]) -> int:
    return node.type.numel * prod(node.attr("kernel"))


def _no_problem(node: Node) -> str | None:
    return None


def _dense_attrs(node: Node) -> str | None:
    """weight_layout="IO" is the only stored layout of a dense weight other than its own (out, in)."""
    if node.attr("weight_layout") not in (None, "IO"):
        return f'dense weight_layout must be "IO" when given, got {node.attr("weight_layout")!r}'
    return None


@dataclass(frozen=True)
class OpDef:
    """An op (see the module docstring for its traits and hooks). `infer` gives the node's type from its operands'
    (checking every attribute they must agree with); `params` the shape each parameter it reads must have
    (`check_params`): kernels read exactly those elements."""

    name: str
    arity: int  # operands; VARIADIC: one or more
    required: tuple[str, ...]
    optional: tuple[str, ...]
    infer: ShapeRule
    doc: str = ""
    element_params: tuple[str, ...] = ()  # attributes that are a float or a per-element parameter
    params: ParamRule = _element_shapes
    _: KW_ONLY
    interpret: Implementation
    kernel: str | None = None
    view: bool = False
    elementwise: bool = False
    function: str | None = None
    window: bool = False
    pooling: str | None = None
    scratch_dtype: str | None = None  # a window's padded copy: this element type, or (None) its operand's
    passes_spikes: bool = False
    row_local: RowRule = _never
    fusable: bool = False
    batches: bool = False
    blocked_weight: bool = False
    graph_input: bool = False
    delay: bool = False
    folded_by: str | None = None
    family: NeuronFamily | None = None
    work: WorkRule = _per_element
    check_attrs: Callable[[Node], str | None] = _no_problem

    @property
    def layout_carrier(self) -> bool:
        """Element-wise of one operand: the elements' order does not matter to it, so it stores its output (and its
        per-element parameters and state) in its operand's layout."""
        return self.elementwise and self.arity == 1

    @property
    def reads_blocked(self) -> bool:
        """Whether its kernel reads an NCHW{c}c operand: a window kernel reads its input element by element from
        wherever it is stored (a padded one from its NCHW scratch copy)."""
        return self.window

    @property
    def calls_kernel(self) -> bool:
        """Whether its position runs a kernel call: not the graph input (the loader writes it) nor a view (its
        operand's bytes)."""
        return not (self.graph_input or self.view)

    @property
    def function_param(self) -> str | None:
        """The attribute holding the parameter `p` of its element-wise function, if the function takes one."""
        return self.element_params[0] if self.function and FUNCTIONS[self.function].param else None

    def scratch(self, node: Node, ins: tuple[TensorType, ...]) -> TensorType | None:
        """The workspace its kernel needs, given its operands' types: a window's padded copy of its input
        (`scratch_type`), or None."""
        return scratch_type(self.name, ins[0], pads(node)) if self.window else None


@dataclass(frozen=True)
class NeuronOp(OpDef):
    """An op with state carried across timesteps: a neuron family (element-wise over its input), or `delay`.

    `states` lists (state name, attribute giving its initial value, or None for zero).
    `spiking` is true when the output is a spike (0/1) tensor. A neuron with attribute `probe` (a state name)
    outputs that state after the update instead of its output, to observe a membrane. A neuron with
    `fused=true` runs as the epilogue of its operand's conv or dense kernel (`Graph.epilogue`).
    """

    states: tuple[tuple[str, str | None], ...] = ()
    spiking: bool = True


def _neuron(definition: NeuronFamily) -> NeuronOp:
    """The op of a neuron family: its parameters and modes are required attributes; any neuron may probe a state
    (a count-of-spikes neuron's membrane, too)."""
    spiking = definition.spiking
    return NeuronOp(
        definition.op,
        1,
        definition.params + definition.mode_names,
        ("probe", "fused", "layout"),
        infer_spiking if spiking else infer_identity,
        definition.doc,
        interpret=partial(reference.neuron, definition),
        kernel="neuron",
        elementwise=True,
        row_local=_always,
        family=definition,
        states=definition.states,
        spiking=spiking,
    )


def _elementwise(name: str, arity: int, function: str, doc: str, element_params: tuple[str, ...] = ()) -> OpDef:
    """An op computing an element-wise function of `masic.ir.elementwise` (of its operands, and of the parameter in
    its first `element_params`); one of one operand may store its output blocked (`layout`)."""
    infer = infer_identity if arity == 1 else infer_same if arity else infer_declared
    return OpDef(
        name,
        arity,
        element_params,
        ("layout",) if arity == 1 else (),  # a layout carrier (`OpDef.layout_carrier`)
        infer,
        doc,
        element_params,
        interpret=partial(reference.elementwise, FUNCTIONS[function], element_params[0] if element_params else None),
        kernel="elementwise",
        elementwise=True,
        function=function,
        row_local=_always,
    )


def _pool(name: str, reduction: str, doc: str) -> OpDef:
    """A pooling over windows; the maximum of spikes is a spike, averages and sums are float32."""
    keeps_type = reduction == "max"
    return OpDef(
        name,
        1,
        ("kernel", "stride", "padding"),
        ("row_padding",),
        partial(infer_pool2d, keeps_type=keeps_type),
        doc,
        interpret=partial(reference.pool2d, reduction),
        kernel="pool",
        window=True,
        pooling=reduction,
        passes_spikes=keeps_type,
        row_local=_always,
        work=_window_work,
    )


def _view(name: str, required: tuple[str, ...], infer: ShapeRule, doc: str) -> OpDef:
    return OpDef(name, 1, required, (), infer, doc, interpret=reference.view, view=True, passes_spikes=True)


OPS: Mapping[str, OpDef] = MappingProxyType(
    {
        op.name: op
        for op in (
            OpDef(
                "input",
                0,
                (),
                (),
                infer_declared,
                "the sample presented at this timestep",
                interpret=reference.sample,
                graph_input=True,
            ),
            OpDef(
                "conv2d",
                1,
                ("weight", "out_channels", "kernel", "stride", "padding", "dilation", "groups"),
                ("bias", "row_padding", "weight_layout", "layout", "weight_scale"),
                infer_conv2d,
                params=conv2d_params,
                doc="2-d cross-correlation as torch.nn.Conv2d; weight (O, C/groups, kh, kw); row_padding=(top, bottom)"
                " replaces padding's rows (a row patch pads only at the image border); weight_layout: how"
                " weights.bin stores the weight (default OIHW; the graph's weights stay OIHW); layout: how the"
                " output is stored (default NCHW); an int8 weight's scale per output channel: weight_scale",
                interpret=reference.conv2d,
                kernel="conv",
                window=True,
                # float32: each input spike is converted once rather than once per block of outputs and tap
                # (faster: docs/benchmarks.md, "Convs of spikes pad into float32")
                scratch_dtype="f32",
                row_local=_always,
                fusable=True,
                blocked_weight=True,
                work=_conv_work,
            ),
            OpDef(
                "dense",
                1,
                ("weight", "in_features", "out_features"),
                ("bias", "weight_layout", "weight_scale"),
                infer_dense,
                'y = W x + b; weight_layout="IO" stores W transposed in weights.bin (for the accumulate-only kernel'
                " of a spike operand); the parameter itself stays (out, in); an int8 weight's scale per output:"
                " weight_scale",
                params=dense_params,
                interpret=reference.dense,
                kernel="dense",
                fusable=True,
                batches=True,
                work=_dense_work,
                check_attrs=_dense_attrs,
            ),
            OpDef(
                "batchnorm2d",
                1,
                ("mean", "var", "eps"),
                ("gamma", "beta"),
                infer_batchnorm2d,
                "eval-mode batch norm: (x - mean) / sqrt(var + eps) * gamma + beta, per channel",
                params=batchnorm2d_params,
                interpret=reference.batchnorm2d,
                folded_by="fold-batchnorm",
            ),
            _pool("maxpool2d", "max", "max over windows"),
            _pool("avgpool2d", "avg", "mean over windows, padding counted (count_include_pad)"),
            _pool("sumpool2d", "sum", "sum over windows (NIR SumPool2d), zero padding"),
            OpDef(
                "adaptive_avgpool2d",
                1,
                ("output",),
                (),
                infer_adaptive_pool2d,
                "torch.nn.AdaptiveAvgPool2d: output cell (i,j) is the mean of rows [floor(i*H/OH), ceil((i+1)*H/OH))"
                " and the same for columns",
                interpret=reference.adaptive_avgpool2d,
                kernel="adaptive_pool",
            ),
            _view("flatten", (), infer_flatten, "a view of its input as one dimension"),
            _view("reshape", ("shape",), infer_reshape, "a view of its input with another shape"),
            _elementwise("add", 2, "add", "element-wise sum"),
            OpDef(
                "concat",
                VARIADIC,
                (),
                ("axis",),
                infer_concat,
                "operands joined along dimension `axis` (default 0: outputs or channels of a sliced layer; 1: the"
                " rows of an image's patches)",
                interpret=reference.concat,
                kernel="concat",
                passes_spikes=True,
                row_local=_channel_concat,
            ),
            OpDef(
                "crop_rows",
                1,
                ("rows",),
                (),
                infer_crop_rows,
                "rows [lo, hi) of a (C,H,W) value, rows=(lo,hi): the part of an image one row patch reads",
                interpret=reference.crop_rows,
                kernel="crop",
                passes_spikes=True,
            ),
            _elementwise("sub", 2, "sub", "element-wise difference a - b"),
            _elementwise("mul", 2, "mul", "element-wise product"),
            _elementwise("select", 3, "select", "element-wise c != 0 ? a : b (torch.where)"),
            _elementwise("relu", 1, "relu", "max(x, 0)"),
            _elementwise("scale", 1, "scale", "x * factor", ("factor",)),
            _elementwise("offset", 1, "offset", "x + value", ("value",)),
            _elementwise(
                "threshold",
                1,
                "threshold",
                "x > threshold ? 1 : 0 (NIR Threshold, a spike without state)",
                ("threshold",),
            ),
            _elementwise("constant", 0, "fill", "value, broadcast to the declared type", ("value",)),
            _elementwise("div", 2, "div", "element-wise a / b"),
            _elementwise("maximum", 2, "maximum", "element-wise max(a, b) (torch.maximum)"),
            _elementwise("minimum", 2, "minimum", "element-wise min(a, b) (torch.minimum)"),
            _elementwise("ge", 2, "ge", "element-wise a >= b ? 1 : 0"),
            _elementwise("le", 2, "le", "element-wise a <= b ? 1 : 0"),
            _elementwise("eq", 2, "eq", "element-wise a == b ? 1 : 0"),
            _elementwise("div_by", 1, "div_by", "x / divisor", ("divisor",)),
            _elementwise("div_into", 1, "div_into", "dividend / x", ("dividend",)),
            _elementwise("clamp_min", 1, "clamp_min", "max(x, min) (torch.clamp_min)", ("min",)),
            _elementwise("clamp_max", 1, "clamp_max", "min(x, max) (torch.clamp_max)", ("max",)),
            _elementwise("ge_value", 1, "ge_value", "x >= value ? 1 : 0", ("value",)),
            _elementwise("le_value", 1, "le_value", "x <= value ? 1 : 0", ("value",)),
            _elementwise("eq_value", 1, "eq_value", "x == value ? 1 : 0", ("value",)),
            _elementwise("exp", 1, "exp", "e**x (within a few ulps of torch.exp)"),
            _elementwise("sigmoid", 1, "sigmoid", "1 / (1 + exp(-x)) (within a few ulps of torch.sigmoid)"),
            *(_neuron(definition) for definition in FAMILIES.values()),
            NeuronOp(
                "delay",
                0,
                ("source",),
                (),
                infer_declared,
                """One-step delay: outputs its state, the value of node `source` at the previous step (zeros at
                the first step); the state is overwritten with the source's value right after the source runs.""",
                interpret=reference.delayed,
                kernel="copy_state",
                passes_spikes=True,
                delay=True,
                states=(("last", None),),
                spiking=False,
            ),
        )
    }
)


def scratch_type(op: str, in_type: TensorType, padding: tuple[int, int, int]) -> TensorType | None:
    """The padded copy of its (C, H, W) input that the kernel of a sliding-window op (`OpDef.window`) writes before
    it slides over it (its scratch buffer), for `padding` (top, bottom, each side) as `pads` gives it; None when
    nothing is padded. The copy is NCHW whatever the input's layout, of the op's `scratch_dtype` (a conv's is
    float32), else of its input's type (a pooling's spikes stay bytes). The planner (`OpDef.scratch`) sizes the
    scratch buffer and the kernel descriptions their argument by this one rule."""
    top, bottom, side = padding
    if not (top or bottom or side):
        return None
    c, h, w = in_type.shape
    return TensorType((c, h + top + bottom, w + 2 * side), OPS[op].scratch_dtype or in_type.dtype)


def float_or_param(definition: OpDef) -> tuple[str, ...]:
    """The attributes that hold a float or a per-element parameter: the op's `element_params`, and every parameter
    of a neuron family (its modes, such as `reset`, are words)."""
    if definition.family is not None:
        return definition.family.params
    return definition.element_params


def check_params(node: Node, ins: tuple[TensorType, ...], out: TensorType, params: Mapping[str, TensorType]) -> None:
    """Raises ShapeError unless every parameter the node reads (`params`: their types by name) is float32 of the
    shape its op's `params` rule gives for these operands (a layer's `weight` may be stored compressed,
    `WEIGHT_DTYPES`, an int8 one with its `weight_scale` and only then). A kernel reads exactly that many elements,
    so any other shape would be read past its end, or read wrongly; attributes the rule names that take no float
    must be parameters."""
    definition = OPS[node.op]
    shapes = definition.params(node, ins, out)
    given = ", ".join(map(str, ins)) if ins else str(out)
    for key, value in node.attrs:
        if isinstance(value, ParamRef):
            if key not in shapes:
                raise ShapeError(f"attribute {key} of {node.op} cannot be a parameter, got @{value.name}")
            param = params.get(value.name)
            if param is None:
                raise ShapeError(f"attribute {key} refers to missing parameter @{value.name}")
            dtype = param.dtype if key == "weight" and param.dtype in WEIGHT_DTYPES else "f32"
            if param != (wanted := TensorType(shapes[key], dtype)):
                raise ShapeError(f"{key} @{value.name} is {param}, but a {node.op} of {given} reads {wanted}")
        elif key in shapes and key not in float_or_param(definition):
            raise ShapeError(f"{node.op} {key} must be a parameter, got {value!r}")
    if "weight_scale" in shapes:
        weight = params.get(node.attr("weight").name)
        if weight is not None and (weight.dtype == "i8") != (node.attr("weight_scale") is not None):
            raise ShapeError(f"{node.op}: an int8 weight, and only an int8 weight, needs a weight_scale parameter")


def compressible(op: str) -> bool:
    """Whether the op's weight may be stored compressed (float16 or int8 with a `weight_scale`,
    `masic.ir.weight_formats`): conv2d and dense."""
    return "weight_scale" in OPS[op].optional


def neuron_op(op: str) -> NeuronOp | None:
    """The definition of an op with state (a neuron or a delay), or None."""
    definition = OPS.get(op)
    return definition if isinstance(definition, NeuronOp) else None


def state_type(node: Node) -> TensorType:
    """The type of each state of a neuron or delay node: a delay holds values of its own type, neurons float32."""
    assert node.type is not None
    return node.type if OPS[node.op].delay else TensorType(node.type.shape)


def state_names(node: Node) -> tuple[BufferId, ...]:
    """The identities of a node's states, e.g. lif1.v and lif1.i (`masic.ir.names.state`); none for stateless
    ops."""
    definition = neuron_op(node.op)
    return tuple(state(node.name, field) for field, _ in definition.states) if definition else ()

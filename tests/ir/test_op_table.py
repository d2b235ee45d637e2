"""Each op trait is defined once, in the op table (masic/ir/ops.py): no module of masic/ or frontends/ keeps its
own list of op names or tests a node's op against names, but the passes that transform those very ops and the
frontends that map a source model's operations to ops; and the traits agree with the rest of each op's definition
(its attributes, shape rule, element-wise function, lowering)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import masic
from masic.codegen.lower import LOWERINGS
from masic.ir.elementwise import FUNCTIONS
from masic.ir.graph import Node, TensorType
from masic.ir.ops import OPS

ROOT = Path(masic.__file__).parent.parent
ANY = frozenset(OPS)
# Module -> the ops it may name: the table itself, the passes that transform particular ops (fold-batchnorm folds a
# batch norm into its conv, fold-pooling an adaptive pooling through a flatten into a dense layer, slice-layers
# splits dense and conv layers, the layout pass chooses the weight layouts of convs and dense layers), and the
# frontends, which map source operations to ops.
ALLOWED = {
    "masic/ir/ops.py": ANY,
    "masic/passes/fold_batchnorm.py": frozenset({"batchnorm2d", "conv2d"}),
    "masic/passes/fold_pooling.py": frozenset({"adaptive_avgpool2d", "flatten", "dense"}),
    "masic/passes/slice_layers.py": frozenset({"conv2d", "dense"}),
    "masic/passes/layout.py": frozenset({"conv2d", "dense"}),
    "frontends/": ANY,
}


def _elements(node: ast.AST) -> list[ast.AST | None]:
    """The elements of a literal tuple, list or set, or a dict's keys; none for anything else."""
    return node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", [])


def _strings(node: ast.AST) -> list[str]:
    """The string constants among a literal collection's elements (`_elements`)."""
    return [e.value for e in _elements(node) if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def _is_op(node: ast.AST) -> bool:
    """`x.op` or a variable named `op`: where code holds an op's name."""
    return (isinstance(node, ast.Attribute) and node.attr == "op") or (isinstance(node, ast.Name) and node.id == "op")


def op_names_used(source: str) -> list[tuple[int, tuple[str, ...]]]:
    """(line, op names) of each place in `source` that names ops: a literal collection of two or more strings that
    are all op names, a comparison of an op with names (`node.op == "dense"`, `node.op in (*VIEWS, "input")`), or
    a `case` of a match on an op."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
            names = _strings(node)
            if len(names) >= 2 and len(names) == len(_elements(node)) and set(names) <= ANY:
                found.add((node.lineno, tuple(names)))
        elif isinstance(node, ast.Compare) and any(map(_is_op, [node.left, *node.comparators])):
            for side in [node.left, *node.comparators]:
                names = [side.value] if isinstance(side, ast.Constant) else _strings(side)
                if names := tuple(name for name in names if name in ANY):
                    found.add((node.lineno, names))
        elif isinstance(node, ast.Match) and _is_op(node.subject):
            for case in node.cases:
                names = [n.value.value for n in ast.walk(case.pattern) if isinstance(n, ast.MatchValue)]
                if names := tuple(name for name in names if name in ANY):
                    found.add((case.pattern.lineno, names))
    return sorted(found)


def _allowed(path: str) -> frozenset[str]:
    return next((names for prefix, names in ALLOWED.items() if path.startswith(prefix)), frozenset())


def test_no_module_keeps_its_own_list_of_op_names() -> None:
    sources = sorted([*ROOT.glob("masic/**/*.py"), *ROOT.glob("frontends/**/*.py")])
    assert len(sources) > 50
    misplaced = [
        f"{path}:{line}: {', '.join(names)}"
        for path in (str(source.relative_to(ROOT)) for source in sources)
        for line, names in op_names_used((ROOT / path).read_text())
        if not set(names) <= _allowed(path)
    ]
    assert not misplaced, "op names outside the op table (ask an OpDef trait instead):\n" + "\n".join(misplaced)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ('VIEW_OPS = ("flatten", "reshape")', ("flatten", "reshape")),
        ('if node.op == "delay": pass', ("delay",)),
        ('if "input" != n.op: pass', ("input",)),
        ('ok = node.op in ("maxpool2d", "avgpool2d")', ("maxpool2d", "avgpool2d")),
        ('ok = op not in {"conv2d"}', ("conv2d",)),
        ('ok = node.op not in (*VIEWS, "input")', ("input",)),
        ('TABLE = {"add": 1, "sub": 2}', ("add", "sub")),
        ('match node.op:\n    case "dense" | "conv2d": pass', ("dense", "conv2d")),
        ('KINDS = ("max", "avg")', None),  # not op names
        ('MIXED = ("dense", "fill")', None),  # a function's names, one of which is also an op's
        ('if node.attr("kernel") == "conv2d": pass', None),  # not a node's op
        ('Node("x", "concat", inputs)', None),  # making a node of an op is no list of ops
    ],
)
def test_the_scan_finds_each_way_of_naming_ops(source: str, names: tuple[str, ...] | None) -> None:
    assert op_names_used(source) == ([] if names is None else [(len(source.splitlines()), names)])


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_a_kernel_or_none_by_its_traits(name: str) -> None:
    definition = OPS[name]
    assert definition.name == name
    if definition.kernel is not None:
        assert definition.kernel in LOWERINGS
    else:  # no kernel: nothing runs at its position, or a pass folds it away before planning
        assert not definition.calls_kernel or definition.folded_by
    assert not (definition.view and definition.elementwise)


@pytest.mark.parametrize("name", [op for op, definition in OPS.items() if definition.elementwise])
def test_element_wise_traits_agree_with_the_definition(name: str) -> None:
    definition = OPS[name]
    assert definition.row_local(Node("n", name))
    assert definition.layout_carrier == (definition.arity == 1) == ("layout" in definition.optional)
    if definition.function is not None:
        function = FUNCTIONS[definition.function]
        assert len(function.operands) == definition.arity
        assert function.param == (definition.function_param is not None)
        assert definition.function_param in (None, *definition.element_params)
    else:
        assert definition.family is not None  # a neuron: element-wise over its input, with state


@pytest.mark.parametrize("name", [op for op, definition in OPS.items() if definition.window])
def test_window_ops_pad_a_scratch_copy_and_read_any_layout(name: str) -> None:
    definition = OPS[name]
    assert {"kernel", "stride", "padding"} <= set(definition.required) and definition.reads_blocked
    node = Node("n", name, attrs=(("padding", (1, 0)),))
    spikes = TensorType((2, 4, 4), "spike")
    scratch = definition.scratch(node, (spikes,))
    assert scratch == TensorType((2, 6, 4), definition.scratch_dtype or "spike")
    assert definition.scratch(Node("n", name, attrs=(("padding", (0, 0)),)), (spikes,)) is None


@pytest.mark.parametrize("name", OPS)
def test_an_op_passes_spikes_on_exactly_when_its_shape_rule_keeps_a_spike_operand(name: str) -> None:
    definition = OPS[name]
    if definition.arity == 0:  # its type is declared: a delay holds its source's, the others are float32
        assert definition.passes_spikes == definition.delay
        return
    attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0), "shape": (32,), "rows": (0, 2), "axis": 0}
    attrs |= {"output": (1, 1), "eps": 1e-5, "out_channels": 2, "dilation": (1, 1), "groups": 1}
    attrs |= {"in_features": 32, "out_features": 2}
    node = Node("n", name, attrs=tuple((k, attrs[k]) for k in definition.required if k in attrs))
    operands = (TensorType((2, 4, 4) if name != "dense" else (32,), "spike"),) * max(definition.arity, 1)
    assert (definition.infer(node, operands).dtype == "spike") == definition.passes_spikes

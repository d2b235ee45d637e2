"""Ports: a model's several inputs (outputs) packed into the graph's one input (output), each flattened in order;
pack and split are inverse, the text form keeps them, and the verifier checks their sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from masic.ir.graph import Graph, Node, Port, TensorType
from masic.ir.ports import pack, split
from masic.ir.text import parse, print_graph
from masic.ir.verify import VerifyError, verify

NAMES = st.text("abcxyz_.0123456789", min_size=1, max_size=6)
SHAPES = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@given(
    st.lists(st.tuples(NAMES, SHAPES), min_size=2, max_size=5, unique_by=lambda p: p[0]),
    st.one_of(st.just(()), st.integers(1, 4).map(lambda t: (t,))),
)
def test_split_undoes_pack(ports: list[tuple[str, tuple[int, ...]]], steps: tuple[int, ...]) -> None:
    layout = tuple(Port(name, shape) for name, shape in ports)
    rng = np.random.default_rng(len(ports))
    arrays = {p.name: rng.standard_normal((*steps, *p.shape)).astype(np.float32) for p in layout}
    packed = pack(layout, arrays)
    assert packed.shape == (*steps, sum(p.numel for p in layout))
    parts = split(layout, packed)
    assert list(parts) == [p.name for p in layout]
    for p in layout:
        np.testing.assert_array_equal(parts[p.name], arrays[p.name])
    first = layout[0]  # the first port's elements come first, in C order
    np.testing.assert_array_equal(packed[..., : first.numel], arrays[first.name].reshape(*steps, -1))


def test_pack_refuses_what_does_not_fit() -> None:
    ports = (Port("a", (2, 3)), Port("b", (4,)))
    with pytest.raises(ValueError, match=r"inputs \['a'\] are not the ports \['a', 'b'\]"):
        pack(ports, {"a": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"input b of shape \(5,\) is neither \(4,\) nor \(T, \*\(4,\)\)"):
        pack(ports, {"a": np.zeros((2, 3)), "b": np.zeros(5)})
    with pytest.raises(ValueError, match="different numbers of steps"):
        pack(ports, {"a": np.zeros((3, 2, 3)), "b": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="does not end in the ports' 10 elements"):
        split(ports, np.zeros(9))


def _graph(input_ports: tuple[Port, ...], output_ports: tuple[Port, ...]) -> Graph:
    nodes = (
        Node("input", "input", (), (), TensorType((10,))),
        Node("y", "relu", ("input",), (), TensorType((10,))),
    )
    return Graph("g", nodes, "y", input_ports=input_ports, output_ports=output_ports)


def test_the_text_form_keeps_the_ports() -> None:
    graph = _graph((Port("a", (2, 3)), Port("b", (4,))), (Port("p.0", (1,)), Port("q-1", (3, 3))))
    text = print_graph(graph)
    assert "  ports input a[2,3] b[4]\n  ports output p.0[1] q-1[3,3]\n" in text
    assert parse(text) == graph
    assert "ports" not in print_graph(_graph((), ()))


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ((Port("a", (2, 3)), Port("b", (5,))), (), r"input ports hold 11 elements, input %input f32\[10\]"),
        ((), (Port("p", (4,)), Port("q", (4,))), r"output ports hold 8 elements, output %y f32\[10\]"),
        ((Port("a", (6,)), Port("a", (4,))), (), r"input ports \['a', 'a'\] must be two or more, each named once"),
        ((Port("a", (10,)),), (), r"input ports \['a'\] must be two or more"),
    ],
)
def test_the_verifier_checks_ports(inputs: tuple[Port, ...], outputs: tuple[Port, ...], message: str) -> None:
    verify(_graph((Port("a", (6,)), Port("b", (4,))), (Port("p", (1,)), Port("q", (9,)))))
    with pytest.raises(VerifyError, match=message):
        verify(_graph(inputs, outputs))

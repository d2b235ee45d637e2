"""fold-batchnorm, alone: a batch norm folded into its conv computes what the pair computed (up to float32
rounding), wherever its value was read (operands, the output, delays before or after the conv). The text of what it
does and refuses: tests/filecheck/fold-batchnorm/."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masic.ir.interpret import run
from masic.ir.text import parse
from masic.ir.verify import verify
from masic.opt import run_passes
from masic.passes.base import PassError

CONV_BN = """graph @cbn timesteps=2 {
  param @c.w : f32[2,1,3,3]
  param @bn.mean : f32[2]
  param @bn.var : f32[2]
  param @bn.gamma : f32[2]
  param @bn.beta : f32[2]
  %in = input() : f32[1,5,5]
  %c = conv2d(%in) {weight=@c.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : ?
  %bn = batchnorm2d(%c) {mean=@bn.mean, var=@bn.var, eps=1e-05, gamma=@bn.gamma, beta=@bn.beta} : ?
  %z = iaf(%bn) {v_th=0.5, v_reset=0.0} : ?
  %f = flatten(%z) : ?
  output %f
}
"""


@st.composite
def conv_bn_graphs(draw: st.DrawFn):
    """A conv (any bias) and a batch norm (any gamma and beta) of it, output directly or through an add with a delay
    of the batch norm, which stands before the conv (read by its operand) or between the conv and the batch norm."""
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 6)), draw(st.integers(3, 6))
    k = draw(st.sampled_from([1, 3]))
    delay = draw(st.sampled_from(["none", "before", "after"]))
    out = c if delay != "none" else draw(st.integers(1, 4))  # a delay is added to the input or to the output
    bias, gamma, beta = (draw(st.booleans()) for _ in range(3))
    conv_attrs = f"weight=@c.w{', bias=@c.b' if bias else ''}, out_channels={out}, kernel=({k},{k}), "
    conv_attrs += f"stride=(1,1), padding=({k // 2},{k // 2}), dilation=(1,1), groups=1"
    bn_attrs = "mean=@bn.mean, var=@bn.var, eps=1e-05" + (", gamma=@bn.gamma" if gamma else "")
    bn_attrs += ", beta=@bn.beta" if beta else ""
    lines = [f"%in = input() : f32[{c},{h},{w}]"]
    if delay == "before":
        lines += [f'%d = delay() {{source="bn"}} : f32[{c},{h},{w}]', "%s = add(%in, %d) : ?"]
    lines.append(f"%c = conv2d(%{'s' if delay == 'before' else 'in'}) {{{conv_attrs}}} : ?")
    if delay == "after":
        lines.append(f'%d = delay() {{source="bn"}} : f32[{out},{h},{w}]')
    lines.append(f"%bn = batchnorm2d(%c) {{{bn_attrs}}} : ?")
    lines += ["%o = add(%bn, %d) : ?", "output %o"] if delay == "after" else ["output %bn"]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = {"c.w": (out, c, k, k), "c.b": (out,) * bias, "bn.mean": (out,), "bn.gamma": (out,) * gamma}
    shapes |= {"bn.beta": (out,) * beta}
    weights = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in shapes.items() if shape}
    weights["bn.var"] = rng.uniform(0.1, 2.0, out).astype(np.float32)
    params = "".join(f"  param @{name} : f32[{','.join(map(str, a.shape))}]\n" for name, a in weights.items())
    body = "".join(f"  {line}\n" for line in lines)
    text = f"graph @cbn timesteps={draw(st.integers(1, 3))} {{\n{params}{body}}}\n"
    return run_passes(parse(text, weights), ["infer-shapes"])


@settings(max_examples=60, deadline=None)
@given(conv_bn_graphs())
def test_folding_computes_what_conv_and_batchnorm_computed(graph) -> None:
    folded = run_passes(graph, ["fold-batchnorm"])
    verify(folded)
    assert not any(n.op == "batchnorm2d" for n in folded.nodes)
    assert {p.name for p in folded.params} == {"c.weight.folded", "c.bias.folded"}
    conv = folded.node("c")
    assert folded.weights[conv.attr("weight").name].shape == graph.weights["c.w"].shape
    x = np.random.default_rng(0).uniform(-1, 1, (graph.timesteps, *graph.inputs[0].type.shape)).astype(np.float32)
    expected = run(graph, x)
    np.testing.assert_allclose(run(folded, x), expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_a_neuron_of_the_folded_conv_spikes_as_before() -> None:
    """Spikes may flip only where the membrane sits at the threshold (float32 rounding of the folded weights)."""
    rng = np.random.default_rng(1)
    weights = {
        "c.w": rng.normal(size=(2, 1, 3, 3)),
        "bn.mean": rng.normal(size=2),
        "bn.var": rng.uniform(0.5, 2, size=2),
        "bn.gamma": rng.normal(size=2),
        "bn.beta": rng.normal(size=2),
    }
    graph = run_passes(parse(CONV_BN, {k: v.astype(np.float32) for k, v in weights.items()}), ["infer-shapes"])
    folded = run_passes(graph, ["fold-batchnorm"])
    x = np.random.default_rng(2).uniform(0, 1, (3, 1, 5, 5)).astype(np.float32)
    assert np.mean(run(graph, x) != run(folded, x)) < 0.01


def test_a_batchnorm_of_the_graph_output_conv_is_refused() -> None:
    """The conv's own value is the output: folding would change it."""
    text = CONV_BN.replace("output %f", "output %c")
    with pytest.raises(PassError, match="fold-batchnorm: batch norm must follow a conv2d whose only user") as info:
        run_passes(parse(text), ["infer-shapes", "fold-batchnorm"])
    assert info.value.node.name == "bn"


def test_a_graph_without_batchnorm_is_returned_as_it_is() -> None:
    batchnorm = next(line for line in CONV_BN.splitlines() if "batchnorm2d" in line)
    graph = run_passes(parse(CONV_BN.replace(batchnorm, "  %bn = relu(%c) : ?")), ["infer-shapes"])
    assert run_passes(graph, ["fold-batchnorm"]) is graph

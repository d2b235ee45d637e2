"""The search of `--weights auto` (masic.weight_search.search) with fake accuracy functions instead of artifacts:
the choice never exceeds the allowed drop, is minimal (no single layer can be stored smaller within the bound) when
accuracy never rises as a layer is stored smaller, builds each mix at most once and at most max_builds in all."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from masic.targets import get_target

from masic.calibrate import CalibrationError
from masic.driver import import_model
from masic.ir.graph import Graph
from masic.ir.text import parse
from masic.ir.weight_formats import WeightChoice
from masic.weight_search import (
    FORMAT_ORDER,
    PROXY_SAMPLES,
    PROXY_WORK,
    WeightSearchError,
    allowed_losses,
    auto_weights,
    choice_of,
    compressible_layers,
    folded_with,
    for_every_reader,
    proxy_samples,
    search,
    sensitivity_order,
)

SAMPLES = 200


class Fake:
    """Samples right under a choice: the float32 count less each layer's loss in its format; counts the builds."""

    def __init__(self, losses: dict[str, dict[str, int]], base: int = 180) -> None:
        self.losses, self.base, self.built = losses, base, []

    def __call__(self, choice: WeightChoice) -> int:
        self.built.append(choice)
        return self.base - sum(self.losses[layer][choice.of(layer)] for layer in self.losses)

    def correct(self, layers: tuple[str, ...], mix: tuple[str, ...]) -> int:
        return self(choice_of(layers, mix))


def additive(int8: list[int], float16: list[int] | None = None) -> dict[str, dict[str, int]]:
    """Losses per layer named l0, l1, ...: int8's as given, float16's (default none), float32 none."""
    float16 = float16 or [0] * len(int8)
    return {
        f"l{i}": {"int8": a, "float16": b, "float32": 0} for i, (a, b) in enumerate(zip(int8, float16, strict=True))
    }


def monotone_losses() -> st.SearchStrategy[dict[str, dict[str, int]]]:
    """Losses that never fall as a layer is stored smaller: float32 0 <= float16 <= int8."""
    layer = st.tuples(st.integers(0, 8), st.integers(0, 30)).map(
        lambda pair: {"float32": 0, "float16": min(pair), "int8": max(pair)}
    )
    return st.lists(layer, min_size=1, max_size=5).map(lambda ls: {f"l{i}": losses for i, losses in enumerate(ls)})


def run(fake: Callable[[WeightChoice], int | None], layers: tuple[str, ...], drop: float, **kwargs):
    return search(layers, layers, fake, SAMPLES, drop, **kwargs)


@given(monotone_losses(), st.sampled_from([0, 0.5, 1, 2.5, 5, 10]), st.randoms(use_true_random=False))
def test_the_choice_is_within_the_bound_and_minimal(losses, drop: float, random) -> None:
    layers = tuple(losses)
    order = tuple(random.sample(layers, len(layers)))
    fake = Fake(losses)
    result = search(layers, order, fake, SAMPLES, drop, max_builds=100)
    floor = fake.base - allowed_losses(drop, SAMPLES)
    assert result.chosen.correct == fake.correct(layers, result.chosen.mix) >= floor
    assert result.float32.correct == fake.base
    for i, fmt in enumerate(result.chosen.mix):
        if fmt != "int8":  # stored one format smaller, this layer would leave the bound
            smaller = list(result.chosen.mix)
            smaller[i] = FORMAT_ORDER[FORMAT_ORDER.index(fmt) - 1]
            assert fake.correct(layers, tuple(smaller)) < floor


@given(st.dictionaries(st.tuples(*[st.sampled_from(FORMAT_ORDER)] * 3), st.integers(0, 200)), st.floats(0, 20))
def test_never_exceeds_the_bound_whatever_the_accuracy(table, drop: float) -> None:
    """Accuracy that may rise or fall in any way as formats change: the chosen mix was still measured within."""
    layers = ("a", "b", "c")

    def correct_of(choice: WeightChoice) -> int:
        return table.get(tuple(choice.of(layer) for layer in layers), 150)

    result = run(correct_of, layers, drop)
    assert result.chosen in result.trials
    assert result.chosen.correct >= result.float32.correct - allowed_losses(drop, SAMPLES)


def test_all_int8_within_the_bound_costs_two_builds() -> None:
    fake = Fake(additive([1, 0, 1]))
    result = run(fake, ("l0", "l1", "l2"), 1)  # 1 point of 200 samples: 2 may be lost
    assert result.chosen.mix == ("int8",) * 3
    assert [c.layers for c in fake.built] == [
        choice_of(result.layers, m).layers for m in (("float32",) * 3, ("int8",) * 3)
    ]


def test_only_the_sensitive_layer_is_raised() -> None:
    losses = additive([0, 40, 1], [0, 1, 0])
    fake = Fake(losses)
    layers = tuple(losses)
    result = search(layers, ("l1", "l2", "l0"), fake, SAMPLES, 1)
    assert result.chosen.mix == ("int8", "float16", "int8")
    assert len(fake.built) == len(result.trials) == len({tuple(c.layers) for c in fake.built})


def test_float32_where_float16_is_not_enough() -> None:
    result = run(Fake(additive([50, 0], [5, 0])), ("l0", "l1"), 1)
    assert result.chosen.mix == ("float32", "int8")


def test_a_drop_of_zero_keeps_every_lossy_layer_whole() -> None:
    result = run(Fake(additive([3, 0, 2], [1, 0, 0])), ("l0", "l1", "l2"), 0)
    assert result.chosen.mix == ("float32", "int8", "float16")


def test_out_of_builds_the_choice_is_one_that_was_confirmed() -> None:
    losses = additive([10, 10, 10, 10])
    layers = tuple(losses)
    fake = Fake(losses)
    result = run(fake, layers, 1, max_builds=3)  # float32, int8, one raise: still 30 samples lost
    assert len(fake.built) == 3 and result.out_of_builds
    assert result.chosen.mix == ("float32",) * 4


def test_a_mix_that_does_not_fit_the_budget_is_never_chosen() -> None:
    layers = ("l0", "l1")

    def correct_of(choice: WeightChoice) -> int | None:
        if choice.of("l0") == "float32" and choice.of("l1") != "float32":
            return None  # as if this mix's plan did not fit
        return 180 - 10 * (choice.of("l0") == "int8")

    result = run(correct_of, layers, 1)
    assert result.chosen.mix == ("float16", "int8")


def test_refusals() -> None:
    with pytest.raises(WeightSearchError, match="float32 weights does not fit the budget"):
        run(lambda _: None, ("l0",), 1)
    with pytest.raises(ValueError, match="every layer once"):
        search(("l0", "l1"), ("l0",), Fake(additive([0, 0])), SAMPLES, 1)
    with pytest.raises(ValueError, match="at least 2 builds"):
        run(Fake(additive([0])), ("l0",), 1, max_builds=1)


def test_allowed_losses_round_down_but_not_below_exact_points() -> None:
    assert allowed_losses(1, 200) == 2
    assert allowed_losses(0.7, 1000) == 7  # 0.7 * 1000 / 100 is 6.999... in floating point
    assert allowed_losses(0.49, 200) == 0


def test_compressible_layers_are_the_conv_and_dense_nodes() -> None:
    graph = parse(
        """
        graph @g timesteps=2 {
          param @c.w : f32[2,1,3,3]
          param @d.w : f32[3,32]
          %in = input() : f32[1,4,4]
          %c = conv2d(%in) {weight=@c.w, out_channels=2, kernel=(3,3), stride=(1,1), padding=(1,1), dilation=(1,1), groups=1} : f32[2,4,4]
          %s = iaf(%c) {v_th=0.5, v_reset=0.0} : spike[2,4,4]
          %f = flatten(%s) : spike[32]
          %d = dense(%f) {weight=@d.w, in_features=32, out_features=3} : f32[3]
          output %d
        }
        """
    )
    assert compressible_layers(graph) == ("c", "d")


def test_every_mix_is_reachable_for_three_layers() -> None:
    """With the bound met only by one exact mix (all others lose a sample too many), the search still finds a mix
    within it: the float32 reference at worst."""
    layers = ("l0", "l1", "l2")
    for target in itertools.product(FORMAT_ORDER, repeat=3):

        def correct_of(choice: WeightChoice, target=target) -> int:
            mix = tuple(choice.of(layer) for layer in layers)
            return 100 if mix in (target, ("float32",) * 3) else 99

        result = run(correct_of, layers, 0)
        assert result.chosen.correct == 100


def test_auto_weights_refuses_missing_data_and_models_without_layers(tmp_path) -> None:
    target = get_target("x86_64")
    graph = import_model("tests.norse_models:dense_model")
    with pytest.raises(CalibrationError, match="does not exist"):
        auto_weights(graph, target, None, tmp_path / "missing.npz", 1)
    no_layers = parse(
        """
        graph @g timesteps=2 {
          %in = input() : f32[4]
          %s = iaf(%in) {v_th=0.5, v_reset=0.0} : spike[4]
          output %s
        }
        """
    )
    with pytest.raises(WeightSearchError, match="no conv2d or dense layer"):
        auto_weights(no_layers, target, None, tmp_path / "missing.npz", 1)


def two_dense_layers(exact: str) -> Graph:
    """input -> dense a -> iaf -> dense b: the `exact` layer's weight is multiples of 1/127 up to 1 (int8 stores
    them exactly), the other's random values with 50 in column 0 (int8 rounds the rest to multiples of 50/127; the
    inputs are 0 there)."""
    rng = np.random.default_rng(0)
    weights = {"a.w": rng.normal(size=(32, 16)), "b.w": rng.normal(size=(16, 32))}
    weights[f"{'b' if exact == 'a' else 'a'}.w"][:, 0] = 50
    whole = rng.integers(-127, 128, size=weights[f"{exact}.w"].shape)
    whole[0, 0] = 127
    weights[f"{exact}.w"] = whole / 127  # scale 1/127: q = whole exactly
    text = """
        graph @g timesteps=4 {
          param @a.w : f32[32,16]
          param @b.w : f32[16,32]
          %in = input() : f32[16]
          %a = dense(%in) {weight=@a.w, in_features=16, out_features=32} : f32[32]
          %s = iaf(%a) {v_th=0.5, v_reset=0.0} : spike[32]
          %b = dense(%s) {weight=@b.w, in_features=32, out_features=16} : f32[16]
          output %b
        }
        """
    return parse(text, {name: w.astype(np.float32) for name, w in weights.items()})


@pytest.mark.parametrize("exact", ["a", "b"])
@pytest.mark.parametrize("samples", [0, 8])
def test_the_layer_int8_rounds_comes_first(exact: str, samples: int) -> None:
    graph = two_dense_layers(exact)
    x = np.random.default_rng(1).uniform(0, 2, size=(8, 16)).astype(np.float32)
    x[:, 0] = 0  # the rounded layer's column of 50s does not drive it
    rounded = "b" if exact == "a" else "a"
    assert sensitivity_order(graph, get_target("x86_64"), x, samples) == (rounded, exact)


def test_the_interpreter_proxy_is_bounded_by_its_work() -> None:
    graph = two_dense_layers("a")
    per_sample = (16 * 32 + 32 * 16 + 32) * 4  # each node's work, 4 timesteps (iaf: one per neuron)
    assert proxy_samples(graph, 2, 1000) == min(PROXY_SAMPLES, PROXY_WORK // (per_sample * 3))
    assert proxy_samples(graph, 2, 5) == 5


def test_layers_that_share_a_weight_are_chosen_one_format() -> None:
    graph = parse(
        """
        graph @g timesteps=2 {
          param @w : f32[16,16]
          %in = input() : f32[16]
          %a = dense(%in) {weight=@w, in_features=16, out_features=16} : f32[16]
          %s = iaf(%a) {v_th=0.5, v_reset=0.0} : spike[16]
          %b = dense(%s) {weight=@w, in_features=16, out_features=16} : f32[16]
          output %b
        }
        """
    )
    assert compressible_layers(graph) == ("a",)
    choice = for_every_reader(graph, WeightChoice("float32", (("a", "int8"),)))
    assert choice.of("a") == choice.of("b") == "int8"
    assert folded_with(graph, get_target("x86_64"), choice).param("w").type.dtype == "i8"
    x = np.ones((3, 16), np.float32)
    assert sensitivity_order(graph, get_target("x86_64"), x, 3) == ("a",)

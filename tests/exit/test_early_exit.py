"""masic.early_exit: the rules, and the numpy model of the loader's decisions on hand-made outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from masic.early_exit import ExitRule, ExitRuleError, decide, exit_steps, loader_exp, step_scores


def outputs_from(*per_step: list[list[float]]) -> np.ndarray:
    """(N, T, C) float32 outputs from one list of per-step rows per sample."""
    return np.array(per_step, dtype=np.float32)


# Sample 0 leads with class 1 from the start; sample 1 starts on class 0 and moves to class 2 at step 3.
OUTPUTS = outputs_from(
    [[0, 3, 0], [0, 3, 0], [0, 3, 0], [0, 3, 0]],
    [[1, 0, 0], [0, 0, 0.5], [0, 0, 2], [0, 0, 2]],
)


def test_no_rule_runs_every_step_and_predicts_the_argmax_of_the_sum() -> None:
    decisions = decide(OUTPUTS, ExitRule())
    assert decisions.predictions.tolist() == [1, 2] and decisions.timesteps.tolist() == [4, 4]


def test_margin_rule() -> None:
    # acc margins: sample 0: 3, 6, 9, 12; sample 1: 1, 0.5 (class 0 leads), 1.5 (class 2 leads), 3.5
    assert decide(OUTPUTS, ExitRule("margin", 3.0, 1)).timesteps.tolist() == [1, 4]
    assert decide(OUTPUTS, ExitRule("margin", 1.5, 1)).timesteps.tolist() == [1, 3]
    assert decide(OUTPUTS, ExitRule("margin", 1.0, 1)).predictions.tolist() == [1, 0]  # stops too early
    assert decide(OUTPUTS, ExitRule("margin", 1.0, 2)).timesteps.tolist() == [2, 3]


def test_softmax_confidence_rule() -> None:
    confidence = step_scores(np.cumsum(OUTPUTS.astype(np.float64), axis=1), "softmax_confidence")
    expected = [1 / (1 + 2 * math.exp(-3)), 1 / (1 + 2 * math.exp(-1))]
    np.testing.assert_allclose(confidence[:, 0], expected, rtol=1e-15)
    rule = ExitRule("softmax_confidence", 0.95, 1)
    assert decide(OUTPUTS, rule).timesteps.tolist() == [2, 4]
    assert decide(OUTPUTS, ExitRule("softmax_confidence", 1.0, 1)).timesteps.tolist() == [4, 4]


def test_stable_argmax_rule() -> None:
    # argmax after each step: sample 0: 1 1 1 1; sample 1: 0 0 2 2
    assert decide(OUTPUTS, ExitRule("stable_argmax", 2.0, 1)).timesteps.tolist() == [2, 2]
    assert decide(OUTPUTS, ExitRule("stable_argmax", 3.0, 1)).timesteps.tolist() == [3, 4]
    assert decide(OUTPUTS, ExitRule("stable_argmax", 1.0, 3)).predictions.tolist() == [1, 2]


def test_ties_go_to_the_first_class_and_nan_never_stops() -> None:
    tied = outputs_from([[1, 1], [1, 1]])
    assert decide(tied, ExitRule("stable_argmax", 1.0, 1)).predictions.tolist() == [0]
    assert step_scores(np.cumsum(tied.astype(np.float64), axis=1), "margin")[0].tolist() == [0.0, 0.0]
    poisoned = outputs_from([[np.nan, 0], [5, 0], [5, 0]])
    assert decide(poisoned, ExitRule("margin", 1.0, 1)).timesteps.tolist() == [3]


def test_exit_steps_of_many_thresholds_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((50, 9))
    thresholds = np.sort(rng.random(20))
    many = exit_steps(scores, thresholds, 3)
    for i, threshold in enumerate(thresholds):
        for n in range(50):
            checked = [t + 1 for t in range(2, 9) if scores[n, t] >= threshold]
            assert many[i, n] == (checked[0] if checked else 9)


def test_loader_exp_is_exp() -> None:
    x = -np.random.default_rng(1).random(10_000) * 50
    np.testing.assert_allclose(loader_exp(x), np.exp(x), rtol=3e-16)
    assert loader_exp(np.array([0.0, -708.5, -np.inf]))[:3].tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(loader_exp(np.array([np.nan])))[0]


@pytest.mark.parametrize(
    "rule",
    [ExitRule(), ExitRule("softmax_confidence", 0.9, 2), ExitRule("margin", 2.5, 1), ExitRule("stable_argmax", 3.0, 4)],
)
def test_rule_round_trips_through_the_manifest(rule: ExitRule) -> None:
    assert ExitRule.from_manifest({**rule.to_manifest(), "source": "calibrated"}) == rule


def test_loader_flags_and_c_initializer() -> None:
    rule = ExitRule("margin", 0.1 + 0.2, 2)
    assert rule.loader_flags() == ["--exit-margin", "0.30000000000000004", "--min-timesteps", "2"]
    assert ExitRule("stable_argmax", 3.0).loader_flags()[:2] == ["--exit-stable", "3"]
    assert ExitRule().loader_flags() == ["--no-exit"]
    assert rule.c_initializer() == "{.rule = MASIC_EXIT_MARGIN, .min_timesteps = 2, .threshold = 0.30000000000000004}"
    assert rule.to_manifest() == {"rule": "margin", "margin": 0.30000000000000004, "min_timesteps": 2}


@pytest.mark.parametrize(
    ("rule", "threshold"),
    [("softmax_confidence", 0.0), ("softmax_confidence", 1.5), ("margin", 0.0), ("margin", math.inf),
     ("stable_argmax", 2.5), ("stable_argmax", 0.0), ("none", 1.0), ("median", 1.0)],
)  # fmt: skip
def test_invalid_rules_are_refused(rule: str, threshold: float) -> None:
    with pytest.raises(ExitRuleError):
        ExitRule(rule, threshold)


@pytest.mark.parametrize("minimum", [-1, 2**31, 2**32 + 1])
def test_a_minimum_the_loader_cannot_hold_is_refused(minimum: int) -> None:
    """The loader's masic_exit_rule_t holds an int32_t: 2^32 + 1 once compiled to a minimum of 1 (issue 14)."""
    with pytest.raises(ExitRuleError, match="minimum timesteps"):
        ExitRule("margin", 1.0, minimum)
    assert ExitRule("margin", 1.0, 2**31 - 1).c_initializer().count("2147483647") == 1

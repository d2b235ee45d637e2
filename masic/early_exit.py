"""Early-exit rules, and an exact numpy model of the loader's exit decisions.

The loader (codegen/runtime/loader.c) adds each step's float32 output, converted to double, in step order, into
acc. After step t (1-based), if t >= min_timesteps, it stops once the rule's score of acc is >= threshold:

- ``softmax_confidence``: max(softmax(acc)), computed as 1 / sum_i exp(acc_i - max(acc)) in index order, with the
  loader's own exp (`loader_exp`), so that every machine gets the same bits;
- ``margin``: max(acc) minus the largest other element (+inf for a single output);
- ``stable_argmax``: how many consecutive steps, ending now, had the same argmax of acc.

Its prediction is the first index of the largest element of acc when it stops. `decide` and `exit_steps` repeat
this operation for operation in float64 numpy, so on the same per-step outputs they give the loader's predictions
and timesteps exactly; calibration relies on it, and checks it against the artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from masic.errors import MasicError

INT32_MAX = 2**31 - 1
RULES = ("none", "softmax_confidence", "margin", "stable_argmax")  # index = enum masic_exit_rule
THRESHOLD_NAMES = {"softmax_confidence": "confidence", "margin": "margin", "stable_argmax": "steps"}
LOADER_FLAGS = {"softmax_confidence": "--exit-confidence", "margin": "--exit-margin", "stable_argmax": "--exit-stable"}
C_NAMES = {
    "none": "MASIC_EXIT_NONE",
    "softmax_confidence": "MASIC_EXIT_SOFTMAX_CONFIDENCE",
    "margin": "MASIC_EXIT_MARGIN",
    "stable_argmax": "MASIC_EXIT_STABLE_ARGMAX",
}


class ExitRuleError(MasicError, ValueError):
    """An exit rule that the loader would refuse."""


@dataclass(frozen=True)
class ExitRule:
    """An early-exit rule as the loader applies it (masic_exit_rule_t in runtime/masic_model.h).

    `threshold` is the confidence in (0, 1], the margin (> 0, finite) or the number of steps (an integer >= 1) of
    the rule; it is 0.0 for ``none``, which never stops early. `min_timesteps` (>= 0) is the first step after which
    the rule is checked.
    """

    rule: str = "none"
    threshold: float = 0.0
    min_timesteps: int = 1

    def __post_init__(self) -> None:
        x = self.threshold
        if self.rule not in RULES:
            raise ExitRuleError(f"unknown exit rule {self.rule!r}; choose one of {', '.join(RULES)}")
        if not 0 <= self.min_timesteps <= INT32_MAX:  # the loader's masic_exit_rule_t holds an int32_t
            raise ExitRuleError(f"exit rule minimum timesteps must be from 0 to {INT32_MAX}, got {self.min_timesteps}")
        problem = {
            "none": x != 0.0,
            "softmax_confidence": not 0.0 < x <= 1.0,
            "margin": not (x > 0.0 and math.isfinite(x)),
            "stable_argmax": not (1 <= x <= INT32_MAX and x == int(x)),
        }[self.rule]
        if problem:
            raise ExitRuleError(f"invalid {self.rule} threshold {x!r}")

    @property
    def threshold_name(self) -> str | None:
        """The threshold's name in manifest.json and in the loader's JSON report, or None for ``none``."""
        return THRESHOLD_NAMES.get(self.rule)

    def _threshold_value(self) -> float | int:
        return int(self.threshold) if self.rule == "stable_argmax" else self.threshold

    def describe(self) -> str:
        """A short human description, e.g. ``margin >= 2.5 from step 1``."""
        if self.rule == "none":
            return "none (every timestep)"
        if self.rule == "stable_argmax":
            steps = int(self.threshold)
            return f"same argmax for {steps} step{'s' if steps != 1 else ''} from step {self.min_timesteps}"
        return f"{self.threshold_name} >= {self.threshold:.6g} from step {self.min_timesteps}"

    def to_manifest(self) -> dict[str, object]:
        """The rule's entry in manifest.json: ``{"rule": ..., <threshold name>: ..., "min_timesteps": ...}``."""
        entry: dict[str, object] = {"rule": self.rule}
        if self.threshold_name:
            entry[self.threshold_name] = self._threshold_value()
        entry["min_timesteps"] = self.min_timesteps
        return entry

    @classmethod
    def from_manifest(cls, entry: dict[str, object]) -> ExitRule:
        """The inverse of `to_manifest`; other keys of the entry are ignored."""
        rule = str(entry.get("rule", "none"))
        name = THRESHOLD_NAMES.get(rule)
        threshold = float(entry[name]) if name and entry.get(name) is not None else 0.0
        return cls(rule, threshold, int(entry.get("min_timesteps", 1)))

    def loader_flags(self) -> list[str]:
        """Command-line flags that make the loader apply exactly this rule (repr round-trips the double)."""
        if self.rule == "none":
            return ["--no-exit"]
        return [LOADER_FLAGS[self.rule], repr(self._threshold_value()), "--min-timesteps", str(self.min_timesteps)]

    def c_initializer(self) -> str:
        """The masic_exit_rule_t initializer for model.c."""
        return (
            f"{{.rule = {C_NAMES[self.rule]}, .min_timesteps = {self.min_timesteps}, .threshold = {self.threshold!r}}}"
        )


# loader_exp's constants: the split of ln 2 (ln2_hi has 32 trailing zero bits, so k * ln2_hi is exact) and 1/n!.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.44269504088896338700e00
_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(14))


def loader_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 exactly as the loader's exp_nonpositive computes it: 0 below -708, NaN for NaN."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        tiny = ~(x >= -708.0)
        k = np.floor(np.where(tiny, 0.0, x) * _LOG2E + 0.5)
        r = np.where(tiny, 0.0, x) - k * _LN2_HI
        r = r - k * _LN2_LO
        p = np.full_like(r, _TAYLOR[13])
        for coefficient in reversed(_TAYLOR[:13]):
            p = p * r + coefficient
        result = np.ldexp(p, k.astype(np.int64))
    return np.where(tiny, np.where(np.isnan(x), x, 0.0), result)


def accumulate(outputs: np.ndarray) -> np.ndarray:
    """acc after every step, float64 (N, T, classes), from per-step outputs (N, T, *output shape)."""
    outputs = np.asarray(outputs)
    flat = outputs.reshape(outputs.shape[0], outputs.shape[1], -1).astype(np.float64)
    return np.cumsum(flat, axis=1)  # a sequential sum over steps, as the loader's loop


def first_argmax(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, value) of the first largest element along the last axis, scanning as the loader does: NaN never
    wins unless at index 0."""
    best = np.zeros(acc.shape[:-1], dtype=np.int64)
    top = acc[..., 0].copy()
    for i in range(1, acc.shape[-1]):
        greater = acc[..., i] > top
        best = np.where(greater, i, best)
        top = np.where(greater, acc[..., i], top)
    return best, top


def step_scores(acc: np.ndarray, rule: str) -> np.ndarray:
    """The rule's score after every step, float64 (N, T), from acc (N, T, classes)."""
    best, top = first_argmax(acc)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if rule == "softmax_confidence":
            total = np.zeros_like(top)
            for i in range(acc.shape[-1]):
                total = total + loader_exp(acc[..., i] - top)
            return 1.0 / total
        if rule == "margin":
            second = np.full_like(top, -np.inf)
            for i in range(acc.shape[-1]):
                second = np.where((best != i) & (acc[..., i] > second), acc[..., i], second)
            return top - second
    if rule == "stable_argmax":
        run = np.ones(best.shape, dtype=np.float64)
        for t in range(1, best.shape[1]):
            run[:, t] = np.where(best[:, t] == best[:, t - 1], run[:, t - 1] + 1, 1.0)
        return run
    raise ExitRuleError(f"rule {rule!r} has no score")


def exit_steps(scores: np.ndarray, thresholds: np.ndarray, min_timesteps: int) -> np.ndarray:
    """Timesteps each sample runs, (M, N), for M thresholds of one rule with scores (N, T): the first step
    t >= min_timesteps whose score is >= the threshold, else T.

    The first step whose score reaches a threshold is also the first whose running maximum does, and the running
    maximum only grows, so that step follows from counting the steps whose running maximum is still below it.
    """
    n, t_max = scores.shape
    thresholds = np.asarray(thresholds, dtype=np.float64)
    first = max(min_timesteps, 1)
    if first > t_max:
        return np.full((len(thresholds), n), t_max, dtype=np.int64)
    checked = scores[:, first - 1 :]
    running = np.maximum.accumulate(np.where(np.isnan(checked), -np.inf, checked), axis=1)  # NaN >= x is false
    chunk = max(1, (1 << 24) // running.size)  # bounds the (chunk, N, checks) comparison below
    below = [
        (running[None] < thresholds[i : i + chunk, None, None]).sum(axis=-1) for i in range(0, len(thresholds), chunk)
    ]
    counts = np.concatenate(below) if below else np.zeros((0, n), dtype=np.int64)
    return np.minimum(first + counts, t_max).astype(np.int64)


@dataclass(frozen=True)
class Decisions:
    """What the loader decides for each of N samples: the prediction and the timesteps run (1..T)."""

    predictions: np.ndarray
    timesteps: np.ndarray


def decide(outputs: np.ndarray, rule: ExitRule) -> Decisions:
    """The loader's decisions for per-step outputs (N, T, *output shape) of full runs (every step, no exit)."""
    acc = accumulate(outputs)
    n, t_max, _ = acc.shape
    if rule.rule == "none":
        steps = np.full(n, t_max, dtype=np.int64)
    else:
        steps = exit_steps(step_scores(acc, rule.rule), np.array([rule.threshold]), rule.min_timesteps)[0]
    predictions = first_argmax(acc)[0][np.arange(n), steps - 1]
    return Decisions(predictions, steps)

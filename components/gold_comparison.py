"""The candidate and the served model on the same gold images: intervals, paired changes, the change gates.

The gold set is a sample: a class of 1,000 images moves by about +/-1.3 points
by chance, a class of 30 by +/-9, so a point estimate against a fixed
threshold refuses candidates for noise and passes real losses alike. Both
models answer the very same gold images, so their difference is read pair by
pair: only images the two answer differently move it, and the noise they share
cancels. Everything here is at LEVEL (90 %, two-sided):

- a model's accuracy, overall and within each true class: Wilson's score
  interval (right out of n). It stays inside [0, 1] and is sound for small
  classes and accuracies near 1, where the normal approximation is not.
- the change, candidate minus served model, on the same n images, with b the
  images only the candidate gets right and c those only the served model gets
  right: delta = (b - c) / n, with Newcombe's square-and-add interval for
  paired proportions (Newcombe 1998, "Improved confidence intervals for the
  difference between binomial proportions based on paired data", Statistics
  in Medicine 17:2635-2650), built from the two Wilson intervals and the
  correlation phi of the two models' right and wrong across the images
  (attenuated by n/2 as Newcombe recommends):

      low  = delta - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
      high = delta + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)

  (p1, [l1, u1]: the candidate's accuracy and Wilson interval; p2, [l2, u2]:
  the served model's.) Analytic rather than a bootstrap: a rerun decides
  alike, it costs nothing, and it stays honest on small counts, where a
  bootstrap collapses (a class of 30 with no image answered differently gives
  a bootstrap interval of exactly [0, 0]).

The change gates, overall (`max_accuracy_drop`) and per true class
(`max_class_drop`), read the upper end of that interval:

    refused  if  high(delta) < -max_drop

that is, only when the served model is better by more than the allowed drop
with 95 % confidence (the upper end of a two-sided 90 % interval is a
one-sided 95 % bound). A drop within chance for the slice's sample passes: two
images of a 30-image class, -6.7 points, which the point-estimate threshold
refused; a drop clearly beyond the allowance is refused however small the
class. Ten classes are judged at once: a candidate no worse than the served
model almost never loses a class by chance, but one whose classes all sit
exactly at the allowance is refused for one of them more often than 5 % of
the time. The floor is not a comparison and stays TFMA's point estimate
(`pipeline/evaluation.py`); its interval is reported beside it.

The Evaluator's executor (`components/evaluator.py`) writes a
`GoldComparison` as GOLD_COMPARISON_FILE into its `evaluation` output; the run
report reads it (`pipeline/evaluation.py`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from core.vocabulary import CLASS_NAMES

LEVEL = 0.90
Z = NormalDist().inv_cdf(0.5 + LEVEL / 2)
ONE_SIDED = 0.5 + LEVEL / 2  # the confidence of a decision read off one end of the interval
GOLD_COMPARISON_FILE = "gold_comparison.json"
MAX_ACCURACY_DROP, MAX_CLASS_DROP = "max_accuracy_drop", "max_class_drop"


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def text(self, sign: str = "") -> str:
        return f"{self.value:{sign}.4f} [{self.low:{sign}.4f}, {self.high:{sign}.4f}]"


def wilson(right: int, n: int, z: float = Z) -> Interval:
    """Wilson's score interval of a proportion `right` / `n`."""
    p = right / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    low = 0.0 if right == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends, not 1 - 1e-16
    return Interval(p, low, 1.0 if right == n else min(1.0, centre + half))


def paired_change(both: int, first_only: int, second_only: int, neither: int, z: float = Z) -> Interval:
    """Newcombe's interval of p1 - p2 when both were measured on the same n items (see the module doc).

    `first_only`: items the first gets right and the second wrong; `second_only`: the reverse.
    """
    n = both + first_only + second_only + neither
    first, second = wilson(both + first_only, n, z), wilson(both + second_only, n, z)
    p1, p2 = first.value, second.value
    phi = _attenuated_correlation(both, first_only, second_only, neither)

    def spread(x: float, y: float) -> float:
        return math.sqrt(max(0.0, x * x - 2 * phi * x * y + y * y))

    delta = p1 - p2
    low = delta - spread(p1 - first.low, second.high - p2)
    high = delta + spread(p2 - second.low, first.high - p1)
    return Interval(delta, max(-1.0, low), min(1.0, high))


def _attenuated_correlation(both: int, first_only: int, second_only: int, neither: int) -> float:
    """The correlation of the two right/wrong columns, moved n/2 towards 0 when positive (Newcombe)."""
    n = both + first_only + second_only + neither
    margins = (
        float(both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    )
    if margins == 0:
        return 0.0
    cross = float(both) * neither - float(first_only) * second_only
    if cross > 0:
        cross = max(cross - n / 2, 0.0)
    return cross / math.sqrt(margins)


def change_refused(change: Interval, max_drop: float) -> bool:
    """The change gate: refused only when the whole interval lies below -max_drop."""
    return change.high < -max_drop


@dataclass(frozen=True)
class SliceFigures:
    """One slice of the gold set (all of it, or one true class): each model's accuracy and the change."""

    examples: int
    candidate: Interval
    served: Interval | None = None
    change: Interval | None = None  # candidate - served model, paired
    max_drop: float | None = None  # the allowance the change was judged against

    @property
    def refused(self) -> bool:
        return (
            self.change is not None
            and self.max_drop is not None
            and change_refused(self.change, self.max_drop)
        )

    @classmethod
    def measure(
        cls, candidate_right: np.ndarray, served_right: np.ndarray | None, max_drop: float | None
    ) -> SliceFigures:
        n = len(candidate_right)
        candidate = wilson(int(candidate_right.sum()), n)
        if served_right is None:
            return cls(n, candidate)
        both = int(np.sum(candidate_right & served_right))
        first_only = int(np.sum(candidate_right & ~served_right))
        second_only = int(np.sum(~candidate_right & served_right))
        change = paired_change(both, first_only, second_only, n - both - first_only - second_only)
        return cls(n, candidate, wilson(int(served_right.sum()), n), change, max_drop)

    @classmethod
    def from_dict(cls, data: dict) -> SliceFigures:
        def interval(key: str) -> Interval | None:
            return Interval(**data[key]) if data.get(key) else None

        return cls(data["examples"], interval("candidate"), interval("served"), interval("change"),
                   data.get("max_drop"))  # fmt: skip


@dataclass(frozen=True)
class GoldComparison:
    """Both models on the gold set, overall and per true class; the change gates' verdicts."""

    overall: SliceFigures
    per_class: dict[str, SliceFigures]
    level: float = LEVEL

    def refusals(self) -> list[str]:
        """One line per refused change: slice, change, interval, the bound it fell below."""
        rows = [(None, self.overall, MAX_ACCURACY_DROP)]
        rows += [(name, figures, MAX_CLASS_DROP) for name, figures in self.per_class.items()]
        return [self._refusal(name, figures, flag) for name, figures, flag in rows if figures.refused]

    def _refusal(self, class_name: str | None, figures: SliceFigures, setting: str) -> str:
        where = f" [class {class_name}]" if class_name else ""
        change = figures.change
        return (
            f"paired accuracy change{where} = {change.value:+.4f}, {self.level:.0%} interval "
            f"[{change.low:+.4f}, {change.high:+.4f}] on {figures.examples} gold images, wholly below "
            f"{-figures.max_drop:+g} (-{setting}): below the allowed change with {ONE_SIDED:.0%} confidence"
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> GoldComparison:
        per_class = {name: SliceFigures.from_dict(figures) for name, figures in data["per_class"].items()}
        return cls(SliceFigures.from_dict(data["overall"]), per_class, data["level"])


def compare_on_gold(
    labels: np.ndarray,
    candidate_answers: np.ndarray,
    served_answers: np.ndarray | None = None,
    max_accuracy_drop: float | None = None,
    max_class_drop: float | None = None,
) -> GoldComparison:
    """Both models' answers on the same gold images (label order), measured and judged; no served model: the
    candidate alone."""
    candidate_right = candidate_answers == labels
    served_right = None if served_answers is None else served_answers == labels
    per_class = {}
    for label, name in enumerate(CLASS_NAMES):
        rows = labels == label
        if rows.any():
            served = None if served_right is None else served_right[rows]
            per_class[name] = SliceFigures.measure(candidate_right[rows], served, max_class_drop)
    return GoldComparison(SliceFigures.measure(candidate_right, served_right, max_accuracy_drop), per_class)

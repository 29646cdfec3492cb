"""Which validation metric decides the best checkpoint: one metric by name, or a weighted sum of them.

Names are those a validation reports: `AP`, `AP50`, `PCK@0.1`, ... for one ground-truth file; for a mix recipe each
dataset's as `dataset/metric` (`mpii/PCKh@0.5`) and the weighted mean over the datasets as `mean/metric`
(`mean/AP`). A sum weighs them: `0.5*coco/AP+0.5*mpii/PCKh@0.5`. Higher is better for every one of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lwpose.errors import LwposeError

_TERM = re.compile(r"^\s*(?:([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?([^*+\s][^*+]*?)\s*$")


class MetricError(LwposeError, ValueError):
    """A metric the validation does not report, or an expression that does not parse; the message lists the
    metrics there are."""


@dataclass(frozen=True)
class BestMetric:
    """`terms`: (weight, metric name) pairs summed; `text` as the user wrote it."""

    text: str
    terms: tuple[tuple[float, str], ...]

    @classmethod
    def parse(cls, text: str, available: list[str]) -> "BestMetric":
        """The metric `text` names, checked against the `available` names (an error lists them)."""
        terms = []
        for part in text.split("+"):
            match = _TERM.match(part)
            if not match:
                raise MetricError(f"metric '{text}': cannot read '{part.strip()}' (write NAME or WEIGHT*NAME, "
                                  "joined by +)")
            weight, name = float(match.group(1)) if match.group(1) else 1.0, match.group(2)
            if name not in available:
                raise MetricError(f"metric '{name}' is not one the validation reports; these are: "
                                  + ", ".join(available))
            terms.append((weight, name))
        return cls(text.strip(), tuple(terms))

    def value(self, metrics: dict) -> float | None:
        """The metric's value in a validation's results; None where a term has no value (e.g. no detections)."""
        total = 0.0
        for weight, name in self.terms:
            value = metrics.get(name)
            if value is None:
                return None
            total += weight * float(value)
        return total

    @property
    def file_label(self) -> str:
        """The metric in a file name: `mpii/PCKh@0.5` -> `mpii-PCKh@0.5`, a sum with its weights."""
        parts = [(f"{weight:g}x" if len(self.terms) > 1 or weight != 1 else "") + name.replace("/", "-")
                 for weight, name in self.terms]
        return "+".join(parts)


def flatten_mix_metrics(rows: list[dict], mean: dict, metric_names: tuple[str, ...]) -> dict:
    """One validation of a mix as flat names: `dataset/metric` per dataset row and `mean/metric` from the mean."""
    flat = {}
    for row in rows:
        for metric in metric_names:
            if metric in row:
                flat[f"{row['dataset']}/{metric}"] = row[metric]
    for metric in metric_names:
        if metric in mean:
            flat[f"mean/{metric}"] = mean[metric]
    return flat

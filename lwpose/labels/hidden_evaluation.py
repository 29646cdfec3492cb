"""The measured protocol of label filling: keypoints a source labels are hidden, filled, and the fill is scored against
the hidden truth (scripts/pseudo_label.py --evaluate-hidden).

For each hidden keypoint, over the people whose truth labels it (v > 0):
- coverage: the share of them that got a pseudo-label (a candidate scoring at least min_score);
- PCK@0.05 and PCK@0.1: the share of those pseudo-labels within 0.05 (0.1) x the larger side of the person's box of
  the truth: how far a user can trust the labels the fill writes.
Both depend on min_score, so the curve gives them at every threshold of CURVE_SCORES, from one fill (candidates
carry their scores; a threshold only chooses among them). "mean" averages the per-keypoint figures, each keypoint
counting once.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lwpose.labels.filling import FillResult

PCK_THRESHOLDS = (0.05, 0.1)
CURVE_SCORES = tuple(round(0.05 * i, 2) for i in range(19))  # 0.0 ... 0.9
METRICS = ("pck@0.05", "pck@0.1", "coverage")


def _scores_at(result: FillResult, columns: np.ndarray, min_score: float) -> dict:
    truth = result.truth[:, columns]
    candidates = result.candidates[:, columns]
    evaluated = truth[..., 2] > 0
    filled = evaluated & (candidates[..., 2] > 0) & (candidates[..., 2] >= min_score)
    distance = np.linalg.norm(truth[..., :2] - candidates[..., :2], axis=-1)
    size = np.maximum(result.boxes[:, 2], result.boxes[:, 3])[:, None]
    per_keypoint = {}
    for c, j in enumerate(columns):
        hidden, count = int(evaluated[:, c].sum()), int(filled[:, c].sum())
        entry = {"hidden": hidden, "filled": count, "coverage": count / hidden if hidden else None}
        for threshold in PCK_THRESHOLDS:
            correct = int((filled[:, c] & (distance[:, c] <= threshold * size[:, 0])).sum())
            entry[f"pck@{threshold:g}"] = correct / count if count else None
        per_keypoint[result.model_set.keypoints[j]] = entry
    mean = {}
    for metric in METRICS:
        values = [e[metric] for e in per_keypoint.values() if e[metric] is not None]
        mean[metric] = float(np.mean(values)) if values else None
    return {"keypoints": per_keypoint, "mean": mean}


def score_hidden(result: FillResult, hidden: Sequence[str], curve_scores: Sequence[float] = CURVE_SCORES) -> dict:
    """{"min_score", "mean": {pck@0.05, pck@0.1, coverage}, "keypoints": {name: {..., hidden, filled}},
    "curve": [{"min_score", "mean": {...}, "keypoints": {name: {pck@0.1, coverage}}}]} for the hidden keypoints."""
    columns = np.array([result.model_set.find(n) for n in hidden], np.int64)
    at_setting = _scores_at(result, columns, result.min_score)
    curve = []
    for score in curve_scores:
        point = _scores_at(result, columns, score)
        curve.append({"min_score": score, "mean": point["mean"],
                      "keypoints": {name: {"pck@0.1": e["pck@0.1"], "coverage": e["coverage"]}
                                    for name, e in point["keypoints"].items()}})
    return {"min_score": result.min_score, "people": int(len(result.truth)), "matched": int(result.matched.sum()),
            "mean": at_setting["mean"], "keypoints": at_setting["keypoints"], "curve": curve}


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_hidden_table(metrics: dict) -> str:
    header = f"{'hidden keypoint':<20} {'hidden':>7} {'filled':>7} {'coverage':>9} {'PCK@0.05':>9} {'PCK@0.1':>9}"
    lines = [header, "-" * len(header)]
    for name, e in metrics["keypoints"].items():
        lines.append(f"{name:<20} {e['hidden']:>7} {e['filled']:>7} {_cell(e['coverage']):>9} "
                     f"{_cell(e['pck@0.05']):>9} {_cell(e['pck@0.1']):>9}")
    lines.append("-" * len(header))
    mean = metrics["mean"]
    lines.append(f"{'mean (per keypoint)':<20} {'':>7} {'':>7} {_cell(mean['coverage']):>9} "
                 f"{_cell(mean['pck@0.05']):>9} {_cell(mean['pck@0.1']):>9}")
    return "\n".join(lines)


def format_curve_table(metrics: dict) -> str:
    header = f"{'min score':>9} {'coverage':>9} {'PCK@0.05':>9} {'PCK@0.1':>9}"
    lines = [header]
    for point in metrics["curve"]:
        mean = point["mean"]
        marker = "  <- --min-score" if abs(point["min_score"] - metrics["min_score"]) < 1e-9 else ""
        lines.append(f"{point['min_score']:>9.2f} {_cell(mean['coverage']):>9} {_cell(mean['pck@0.05']):>9} "
                     f"{_cell(mean['pck@0.1']):>9}{marker}")
    return "\n".join(lines)


def plot_curve(metrics: dict, png_path: str, title: str = "") -> None:
    """Coverage and PCK@0.1 of each hidden keypoint (thin) and their mean (thick) against min_score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [p["min_score"] for p in metrics["curve"]]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharex=True)
    for axis, metric, label in ((axes[0], "coverage", "coverage (share of hidden keypoints filled)"),
                                (axes[1], "pck@0.1", "PCK@0.1 of the filled keypoints")):
        for name in metrics["keypoints"]:
            values = [p["keypoints"][name][metric] for p in metrics["curve"]]
            axis.plot(scores, [np.nan if v is None else v for v in values], linewidth=1, alpha=0.7, label=name)
        means = [p["mean"][metric] for p in metrics["curve"]]
        axis.plot(scores, [np.nan if v is None else v for v in means], color="black", linewidth=2.5, label="mean")
        axis.axvline(metrics["min_score"], color="grey", linestyle="--", linewidth=1)
        axis.set_xlabel("--min-score")
        axis.set_ylabel(label)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)

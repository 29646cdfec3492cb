"""Per-keypoint accuracy tables: PCK (and PCKh) of each keypoint, and the same grouped into body parts (head,
shoulder, elbow, wrist, hip, knee, ankle) when the keypoint names say which part they are: the table of the MPII
protocol, for any keypoint set."""
from __future__ import annotations

BODY_PARTS = ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
# Name pieces that put a keypoint in the head group (MPII's head top, COCO's face points).
HEAD_WORDS = ("head", "nose", "eye", "ear")
METRICS = ("PCK@0.05", "PCK@0.1", "PCKh@0.5")


def body_part(name: str) -> str | None:
    """The body part a keypoint name says it belongs to, or None (neck, thorax, pelvis, tail, ...)."""
    lowered = name.lower()
    for part in BODY_PARTS[1:]:
        if part in lowered:
            return part
    return "head" if any(word in lowered for word in HEAD_WORDS) else None


def _counts(per_keypoint: dict, names, metric: str) -> tuple[float, int]:
    """Correct and labelled counts of `metric` summed over `names` (from the per-keypoint rates and counts)."""
    correct = total = 0
    for name in names:
        entry = per_keypoint.get(name, {})
        if metric in entry:
            count = entry[f"{metric} count"]
            correct += entry[metric] * count
            total += count
    return correct, total


def grouped(per_keypoint: dict) -> dict:
    """{metric: {part: rate, ..., "mean": rate}} over the body parts the names allow (None where a part has no
    labelled keypoint); the mean is over every keypoint, grouped or not, weighted by labelled count."""
    parts: dict = {}
    for name in per_keypoint:
        part = body_part(name)
        if part is not None:
            parts.setdefault(part, []).append(name)
    out = {}
    for metric in METRICS:
        if not any(metric in entry for entry in per_keypoint.values()):
            continue
        row = {}
        for part in BODY_PARTS:
            if part in parts:
                correct, total = _counts(per_keypoint, parts[part], metric)
                row[part] = correct / total if total else None
        correct, total = _counts(per_keypoint, per_keypoint, metric)
        row["mean"] = correct / total if total else None
        out[metric] = row
    return out


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_per_keypoint(per_keypoint: dict, title: str = "") -> str:
    """A table with a row per keypoint (each metric and its labelled count), then, when the names allow, a row per
    metric over the body parts."""
    metrics = [m for m in METRICS if any(m in entry for entry in per_keypoint.values())]
    if not metrics:
        return f"{title}: no labelled keypoint was scored" if title else "no labelled keypoint was scored"
    width = max(len("keypoint"), *(len(n) for n in per_keypoint))
    lines = [title] if title else []
    lines.append("keypoint".ljust(width) + "".join(m.rjust(10) for m in metrics) + "labelled".rjust(10))
    for name, entry in per_keypoint.items():
        labelled = max((entry.get(f"{m} count", 0) for m in metrics), default=0)
        lines.append(name.ljust(width) + "".join(_cell(entry.get(m)).rjust(10) for m in metrics)
                     + str(labelled).rjust(10))
    by_part = grouped(per_keypoint)
    columns = [p for p in (*BODY_PARTS, "mean") if any(p in row for row in by_part.values())]
    if len(columns) > 1:  # some names say their body part
        lines.append("")
        lines.append("metric".ljust(width) + "".join(p.rjust(10) for p in columns))
        for metric, row in by_part.items():
            lines.append(metric.ljust(width) + "".join(_cell(row.get(p)).rjust(10) for p in columns))
    return "\n".join(lines)

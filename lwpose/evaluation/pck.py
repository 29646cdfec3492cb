"""PCK and PCKh of bottom-up predictions: each ground-truth person is matched to one predicted person, then a labelled
keypoint counts as correct when its prediction lies within `threshold x normaliser` of it.

Matching: greedy, best OKS first (the dataset's sigmas and each person's area, as pycocotools computes OKS), one
prediction per person; a person left without a prediction has every keypoint wrong.
Normalisers:
- PCK@t: the larger side of the person's box (PCK@0.05 and PCK@0.1 are reported).
- PCKh@0.5: the person's head size, the distance between the set's two `head_size_keypoints` (MPII: upper_neck to
  head_top) of the ground truth. MPII's official PCKh uses 0.6 x the diagonal of a hand-drawn head box, which the
  list format does not carry, so the figures compare runs of this code, not published MPII tables. People without
  both head keypoints labelled are left out of PCKh.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PCK_THRESHOLDS = (0.05, 0.1)
PCKH_THRESHOLD = 0.5


def oks_matrix(gt: np.ndarray, areas: np.ndarray, predictions: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(G, P) object keypoint similarity of ground truth (G, K, 3) and predictions (P, K, 3; score 0 = missing)."""
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2
    labelled = gt[:, None, :, 2] > 0
    d2 = ((gt[:, None, :, :2] - predictions[None, :, :, :2]) ** 2).sum(-1)
    similarity = np.exp(-d2 / variances / (np.maximum(areas, 1.0)[:, None, None] * 2))
    similarity = np.where(labelled & (predictions[None, :, :, 2] > 0), similarity, 0.0)
    return similarity.sum(-1) / np.maximum(labelled.sum(-1), 1)


def match_people(gt: np.ndarray, areas: np.ndarray, predictions: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(G,) index of the prediction matched to each ground-truth person, -1 for none."""
    matched = np.full(len(gt), -1, np.int64)
    if len(gt) == 0 or len(predictions) == 0:
        return matched
    similarity = oks_matrix(gt, areas, predictions, sigmas)
    taken = np.zeros(len(predictions), bool)
    for flat in np.argsort(-similarity, axis=None, kind="stable"):
        g, p = divmod(int(flat), len(predictions))
        if similarity[g, p] <= 0:
            break
        if matched[g] < 0 and not taken[p]:
            matched[g], taken[p] = p, True
    return matched


@dataclass
class PckCounts:
    """Correct and labelled keypoint counts, per keypoint, for each threshold (and PCKh)."""

    keypoints: tuple[str, ...]
    correct: dict = field(default_factory=dict)  # metric name -> (K,) int
    total: dict = field(default_factory=dict)  # metric name -> (K,) int

    def add(self, metric: str, correct: np.ndarray, labelled: np.ndarray) -> None:
        if metric not in self.correct:
            self.correct[metric] = np.zeros(len(self.keypoints), np.int64)
            self.total[metric] = np.zeros(len(self.keypoints), np.int64)
        self.correct[metric] += (correct & labelled).sum(0)
        self.total[metric] += labelled.sum(0)

    def metrics(self) -> dict:
        """{'PCK@0.05': ..., 'PCK@0.1': ..., 'PCKh@0.5': ..., 'per_keypoint': {name: {metric: value}}}."""
        out: dict = {"per_keypoint": {name: {} for name in self.keypoints}}
        for metric, correct in self.correct.items():
            total = self.total[metric]
            out[metric] = float(correct.sum() / total.sum()) if total.sum() else None
            for j, name in enumerate(self.keypoints):
                if total[j]:
                    out["per_keypoint"][name][metric] = float(correct[j] / total[j])
                    out["per_keypoint"][name][f"{metric} count"] = int(total[j])
        return out


def add_image(counts: PckCounts, gt: np.ndarray, boxes: np.ndarray, areas: np.ndarray, predictions: np.ndarray,
              sigmas: np.ndarray, evaluated: np.ndarray, head_size_keypoints: tuple[int, int] | None) -> None:
    """Score one image: ground truth (G, K, 3) with boxes (G, 4) and areas (G,), predictions (P, K, 3) in the same
    set and coordinates; only keypoints with `evaluated` (K,) True count."""
    if len(gt) == 0:
        return
    matched = match_people(gt, areas, predictions, sigmas)
    found = np.zeros_like(gt)
    found[matched >= 0] = predictions[matched[matched >= 0]]
    distance = np.linalg.norm(gt[..., :2] - found[..., :2], axis=-1)
    present = found[..., 2] > 0
    labelled = (gt[..., 2] > 0) & evaluated[None, :]
    box_size = np.maximum(boxes[:, 2], boxes[:, 3])[:, None]
    for threshold in PCK_THRESHOLDS:
        counts.add(f"PCK@{threshold:g}", present & (distance <= threshold * box_size), labelled)
    if head_size_keypoints is not None:
        a, b = head_size_keypoints
        has_head = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0)
        head = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)[:, None]
        counts.add(f"PCKh@{PCKH_THRESHOLD:g}", present & (distance <= PCKH_THRESHOLD * head),
                   labelled & has_head[:, None])

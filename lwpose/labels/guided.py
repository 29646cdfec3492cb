"""A fill that knows the labelled keypoints: the keypoints a person lacks found from the model's maps, starting at the
person's labelled keypoints and following the limbs' Part Affinity Fields, as grouping would if it knew where the
person's other keypoints are.

Grouping has to find every person from scratch, and drops a keypoint whenever a limb's field is too weak to tie it to
the person, or gives it to a neighbour; a labelled person gives the limb's other end for certain. For each keypoint a
person lacks, every heatmap peak of that keypoint is tried with every limb joining it to a keypoint the person
already has (labelled, or filled earlier on the way out from the labelled ones): the limb's field sampled along the
segment must point along it as grouping requires (a share `min_success_ratio` of the samples above
`min_paf_score`), and the peak with the best mean field wins. A peak goes to one person only: the best connection
keeps it. The candidate's score is the peak's heatmap value, as for a grouped keypoint.
"""
from __future__ import annotations

import numpy as np

from lwpose.inference.grouping import REFINE_NONE, GroupingParams, find_peaks
from lwpose.keypoints import KeypointSet


def limb_field_score(pafs: np.ndarray, channels: tuple[int, int], start: np.ndarray, end: np.ndarray,
                     samples: int, min_paf_score: float) -> tuple[float, float]:
    """(mean projection, share of samples above min_paf_score) of the field `pafs[channels]` on the segment from
    `start` to `end` (x, y in map pixels, sampled at the nearest pixel)."""
    vector = end - start
    length = float(np.hypot(*vector))
    if length < 1e-6:
        return 0.0, 0.0
    unit = vector / length
    steps = np.linspace(0.0, 1.0, samples)
    height, width = pafs.shape[1:]
    xs = np.clip(np.rint(start[0] + steps * vector[0]).astype(np.int64), 0, width - 1)
    ys = np.clip(np.rint(start[1] + steps * vector[1]).astype(np.int64), 0, height - 1)
    projection = pafs[channels[0], ys, xs] * unit[0] + pafs[channels[1], ys, xs] * unit[1]
    return float(projection.mean()), float((projection > min_paf_score).mean())


def guided_candidates(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet, keypoints: np.ndarray,
                      wanted: np.ndarray, params: GroupingParams = GroupingParams(),
                      peak_threshold: float | None = None) -> np.ndarray:
    """Candidates (G, K, 3) x, y, score (score 0: none) for the keypoints `wanted` (G, K) bool of people whose
    known keypoints are `keypoints` (G, K, 3) (v > 0 where known), from maps `heatmaps` (K or K + 1, H, W) and
    `pafs` (2L, H, W) in the people's coordinates (map pixels)."""
    count = keypoint_set.num_keypoints
    threshold = params.peak_threshold if peak_threshold is None else peak_threshold
    peaks = find_peaks(np.ascontiguousarray(heatmaps[:count], np.float32), np.float32(threshold),
                       np.float32(params.nms_radius), REFINE_NONE, params.nms_strongest_first)
    channel_of_peak = peaks[:, 3].astype(np.int64)
    known = keypoints[..., 2] > 0
    position = np.array(keypoints[..., :2], np.float64, copy=True)
    candidates = np.zeros(keypoints.shape, np.float64)
    remaining = np.array(wanted, bool, copy=True) & ~known
    limbs = keypoint_set.limb_keypoints
    paf_channels = keypoint_set.limb_paf_channels
    taken: dict[int, tuple[float, int]] = {}  # peak -> (connection score, person) of its holder
    # Outwards from the labelled keypoints: each round fills what touches a keypoint known by the round before. A
    # peak changes hands only to a stronger claim, so the rounds end; the cap is a guard.
    for _ in range(4 * count):
        if not remaining.any():
            break
        found_this_round = []
        for g, j in zip(*np.nonzero(remaining)):
            options = np.flatnonzero(channel_of_peak == j)
            best = (-np.inf, -1)
            for limb, (a, b) in enumerate(limbs):
                if j not in (a, b):
                    continue
                other = b if a == j else a
                if not known[g, other]:
                    continue
                for peak in options:
                    # The field points from the limb's first keypoint to its second.
                    start, end = ((peaks[peak, :2], position[g, other]) if a == j
                                  else (position[g, other], peaks[peak, :2]))
                    mean, share = limb_field_score(pafs, tuple(paf_channels[limb]), np.asarray(start, np.float64),
                                                   np.asarray(end, np.float64), params.paf_samples,
                                                   params.min_paf_score)
                    if share > params.min_success_ratio and mean > 0 and mean > best[0]:
                        holder = taken.get(int(peak))
                        if holder is None or holder[0] < mean or holder[1] == g:
                            best = (mean, int(peak))
            if best[1] >= 0:
                found_this_round.append((g, j, best))
        if not found_this_round:
            break
        for g, j, (mean, peak) in sorted(found_this_round, key=lambda item: -item[2][0]):
            holder = taken.get(peak)
            if holder is not None and holder[1] != g:
                if holder[0] >= mean:
                    continue
                loser = holder[1]  # a weaker claim gives the peak up, and may find another one next round
                lost = np.flatnonzero((candidates[loser, :, 2] > 0)
                                      & np.all(np.isclose(candidates[loser, :, :2], peaks[peak, :2]), axis=1))
                candidates[loser, lost] = 0
                known[loser, lost] = False
                remaining[loser, lost] = True
            taken[peak] = (mean, g)
            candidates[g, j] = (peaks[peak, 0], peaks[peak, 1], peaks[peak, 2])
            position[g, j] = peaks[peak, :2]
            known[g, j] = True
            remaining[g, j] = False
    return candidates

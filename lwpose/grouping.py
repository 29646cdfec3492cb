"""Bottom-up grouping: keypoint peaks from heatmaps, limb scores from PAFs, people assembled greedily.

The kernels take plain arrays (float32 maps, int32 tables derived from a keypoint set) and know nothing of any
particular skeleton: which limbs exist, the order people grow in and which limbs may only fill in a keypoint all
come from `KeypointSet`. Numba compiles them once per machine (`cache=True`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from lwpose.keypoints import KeypointSet


@dataclass(frozen=True)
class GroupingParams:
    """Decoding thresholds; the defaults are the reference's."""

    peak_threshold: float = 0.1  # heatmap value a peak must exceed
    nms_radius: float = 6.0  # a weaker peak of the same keypoint closer than this (map pixels) is dropped
    paf_samples: int = 10  # points sampled along a candidate limb
    min_paf_score: float = 0.05  # a sample counts if the PAF's projection on the limb exceeds this
    min_success_ratio: float = 0.8  # a limb needs more than this share of counting samples
    min_keypoints: int = 3  # people with fewer (fill-in keypoints not counted) are dropped
    min_mean_score: float = 0.2  # people whose score per keypoint is lower are dropped
    refine_peaks: bool = False  # quadratic sub-pixel refinement of each peak (for decoding at map resolution)
    # Which of two close peaks survives: False keeps the left one (the reference's order, which reproduces its
    # COCO AP exactly); True keeps the stronger. They differ by single one-pixel shifts of weak peaks, which
    # moved AP by -0.002 on coco_mini_train: a coin toss, so the reference's order is the default.
    nms_strongest_first: bool = False


@dataclass
class People:
    """Decoded people: `keypoints` (P, K, 3) holds x, y, score, with x = y = -1 and score 0 where missing;
    `scores` (P,) ranks people (sum of keypoint and limb scores times (keypoints - 1), as the reference);
    `num_keypoints` (P,) counts keypoints found by non-fill-in limbs."""

    keypoints: np.ndarray
    scores: np.ndarray
    num_keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, num_keypoints: int) -> "People":
        return cls(np.zeros((0, num_keypoints, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def transformed(self, scale_x: float, scale_y: float, offset_x: float = 0.0, offset_y: float = 0.0) -> "People":
        """Map coordinates to another frame (x' = x * scale_x + offset_x), leaving missing keypoints missing."""
        keypoints = self.keypoints.copy()
        present = keypoints[..., 2] > 0
        keypoints[..., 0] = np.where(present, keypoints[..., 0] * scale_x + offset_x, -1)
        keypoints[..., 1] = np.where(present, keypoints[..., 1] * scale_y + offset_y, -1)
        return People(keypoints, self.scores.copy(), self.num_keypoints.copy())

    def select(self, index) -> "People":
        return People(self.keypoints[index], self.scores[index], self.num_keypoints[index])


@numba.njit(cache=True, nogil=True)
def find_peaks(heatmaps, threshold, nms_radius, refine, strongest_first=True):
    """Local maxima of each channel of `heatmaps` (C, H, W): above `threshold`, strictly above the 4 neighbours,
    then suppressed by peaks of the same channel closer than `nms_radius` that come first: the stronger ones, or
    with `strongest_first=False` the ones further left (the reference's order).
    Returns (N, 4) float32 rows (x, y, score, channel), grouped by channel, in that order within a channel."""
    channels, height, width = heatmaps.shape
    capacity = 256
    out = np.empty((capacity, 4), np.float32)
    count = 0
    radius_sq = nms_radius * nms_radius
    cand_x = np.empty(64, np.int32)
    cand_y = np.empty(64, np.int32)
    cand_s = np.empty(64, np.float32)
    for c in range(channels):
        n = 0
        for y in range(height):
            for x in range(width):
                v = heatmaps[c, y, x]
                if not (v > threshold):  # also rejects NaN
                    continue
                if x > 0 and not (v > heatmaps[c, y, x - 1]):
                    continue
                if x < width - 1 and not (v > heatmaps[c, y, x + 1]):
                    continue
                if y > 0 and not (v > heatmaps[c, y - 1, x]):
                    continue
                if y < height - 1 and not (v > heatmaps[c, y + 1, x]):
                    continue
                if n == cand_x.shape[0]:
                    cand_x = np.concatenate((cand_x, np.empty(n, np.int32)))
                    cand_y = np.concatenate((cand_y, np.empty(n, np.int32)))
                    cand_s = np.concatenate((cand_s, np.empty(n, np.float32)))
                cand_x[n] = x
                cand_y[n] = y
                cand_s[n] = v
                n += 1
        if n == 0:
            continue
        if strongest_first:
            order = np.argsort(-cand_s[:n], kind="mergesort")
        else:
            order = np.argsort(cand_x[:n], kind="mergesort")
        first_kept = count
        for oi in range(n):
            i = order[oi]
            px = np.float32(cand_x[i])
            py = np.float32(cand_y[i])
            suppressed = False
            for k in range(first_kept, count):
                dx = out[k, 0] - px
                dy = out[k, 1] - py
                if dx * dx + dy * dy < radius_sq:
                    suppressed = True
                    break
            if suppressed:
                continue
            if count == out.shape[0]:
                grown = np.empty((out.shape[0] * 2, 4), np.float32)
                grown[:count] = out[:count]
                out = grown
            out[count, 0] = px
            out[count, 1] = py
            out[count, 2] = cand_s[i]
            out[count, 3] = c
            count += 1
        if refine:
            for k in range(first_kept, count):
                x = int(out[k, 0])
                y = int(out[k, 1])
                # A parabola through the peak and its two neighbours, per axis; its vertex is the sub-pixel peak.
                if 0 < x < width - 1:
                    left = heatmaps[c, y, x - 1]
                    right = heatmaps[c, y, x + 1]
                    denom = left - 2.0 * heatmaps[c, y, x] + right
                    if denom < 0:
                        out[k, 0] = x + min(0.5, max(-0.5, 0.5 * (left - right) / denom))
                if 0 < y < height - 1:
                    up = heatmaps[c, y - 1, x]
                    down = heatmaps[c, y + 1, x]
                    denom = up - 2.0 * heatmaps[c, y, x] + down
                    if denom < 0:
                        out[k, 1] = y + min(0.5, max(-0.5, 0.5 * (up - down) / denom))
    return out[:count].copy()


@numba.njit(cache=True, nogil=True, inline="always")
def _sample(paf, x, y):
    """Nearest-cell PAF value (the map is clamped at its borders)."""
    height, width = paf.shape
    xi = int(np.floor(x + 0.5))
    yi = int(np.floor(y + 0.5))
    xi = min(max(xi, 0), width - 1)
    yi = min(max(yi, 0), height - 1)
    return paf[yi, xi]


@numba.njit(cache=True, nogil=True)
def _limb_connections(peaks, start_a, end_a, start_b, end_b, paf_x, paf_y, n_samples, min_paf_score,
                      min_success_ratio):
    """Candidate connections of one limb as rows (peak a, peak b, score), best first, each peak used once."""
    na = end_a - start_a
    nb = end_b - start_b
    cand = np.empty((na * nb, 3), np.float64)
    m = 0
    for i in range(start_a, end_a):
        ax = peaks[i, 0]
        ay = peaks[i, 1]
        for j in range(start_b, end_b):
            dx = peaks[j, 0] - ax
            dy = peaks[j, 1] - ay
            norm = np.sqrt(dx * dx + dy * dy)
            if norm < 1e-6:
                continue
            ux = dx / norm
            uy = dy / norm
            total = 0.0
            valid = 0
            for s in range(n_samples):
                t = s / (n_samples - 1) if n_samples > 1 else 0.5
                px = ax + t * dx
                py = ay + t * dy
                dot = _sample(paf_x, px, py) * ux + _sample(paf_y, px, py) * uy
                if dot > min_paf_score:
                    total += dot
                    valid += 1
            if valid == 0:
                continue
            score = total / valid
            if score > 0 and valid > min_success_ratio * n_samples:
                cand[m, 0] = i
                cand[m, 1] = j
                cand[m, 2] = score
                m += 1
    order = np.argsort(-cand[:m, 2], kind="mergesort")
    used_a = np.zeros(na, np.bool_)
    used_b = np.zeros(nb, np.bool_)
    picked = np.empty((min(na, nb), 3), np.float64)
    k = 0
    for oi in range(m):
        row = order[oi]
        i = int(cand[row, 0])
        j = int(cand[row, 1])
        if used_a[i - start_a] or used_b[j - start_b]:
            continue
        used_a[i - start_a] = True
        used_b[j - start_b] = True
        picked[k] = cand[row]
        k += 1
        if k == picked.shape[0]:
            break
    return picked[:k]


@numba.njit(cache=True, nogil=True)
def group_peaks(peaks, pafs, num_keypoints, limb_keypoints, limb_paf_channels, fill_in, order, n_samples,
                min_paf_score, min_success_ratio, min_keypoints, min_mean_score):
    """Assemble people from `peaks` (from `find_peaks`) and `pafs` (2L, H, W) at the peaks' resolution.

    Limbs are visited in `order`. A connection whose ends are both free starts a person; one with one end in a
    person adds the other end to it; one joining two people merges them when they share no keypoint type.
    Fill-in limbs only add a missing keypoint to an existing person. Returns (person peak ids (P, K) with -1
    where missing, total scores (P,), keypoint counts (P,))."""
    n = peaks.shape[0]
    starts = np.zeros(num_keypoints + 1, np.int64)
    for p in range(n):
        starts[int(peaks[p, 3]) + 1] += 1
    for k in range(num_keypoints):
        starts[k + 1] += starts[k]
    owner = np.full(n, -1, np.int64)
    people = np.full((max(n, 1), num_keypoints), -1, np.int64)
    totals = np.zeros(max(n, 1), np.float64)
    counts = np.zeros(max(n, 1), np.int64)
    alive = np.zeros(max(n, 1), np.bool_)
    num_people = 0
    for li in range(order.shape[0]):
        limb = order[li]
        ka = limb_keypoints[limb, 0]
        kb = limb_keypoints[limb, 1]
        if starts[ka + 1] == starts[ka] or starts[kb + 1] == starts[kb]:
            continue
        connections = _limb_connections(peaks, starts[ka], starts[ka + 1], starts[kb], starts[kb + 1],
                                        pafs[limb_paf_channels[limb, 0]], pafs[limb_paf_channels[limb, 1]],
                                        n_samples, min_paf_score, min_success_ratio)
        for ci in range(connections.shape[0]):
            a = int(connections[ci, 0])
            b = int(connections[ci, 1])
            score = connections[ci, 2]
            pa = owner[a]
            pb = owner[b]
            if fill_in[limb]:
                # Fill-in copies the keypoint into the person missing it without taking it from its owner:
                # a shared ear scores better than a missing one (measured on COCO, as the reference does).
                if pa >= 0 and people[pa, kb] < 0:
                    people[pa, kb] = b
                    if pb < 0:
                        owner[b] = pa
                elif pb >= 0 and people[pb, ka] < 0:
                    people[pb, ka] = a
                    if pa < 0:
                        owner[a] = pb
                continue
            if pa < 0 and pb < 0:
                people[num_people, ka] = a
                people[num_people, kb] = b
                owner[a] = num_people
                owner[b] = num_people
                totals[num_people] = peaks[a, 2] + peaks[b, 2] + score
                counts[num_people] = 2
                alive[num_people] = True
                num_people += 1
            elif pa >= 0 and pb < 0:
                if people[pa, kb] < 0:
                    people[pa, kb] = b
                    owner[b] = pa
                    totals[pa] += peaks[b, 2] + score
                    counts[pa] += 1
            elif pb >= 0 and pa < 0:
                if people[pb, ka] < 0:
                    people[pb, ka] = a
                    owner[a] = pb
                    totals[pb] += peaks[a, 2] + score
                    counts[pb] += 1
            elif pa != pb:
                disjoint = True
                for k in range(num_keypoints):
                    if people[pa, k] >= 0 and people[pb, k] >= 0:
                        disjoint = False
                        break
                if disjoint:
                    for k in range(num_keypoints):
                        if people[pb, k] >= 0:
                            people[pa, k] = people[pb, k]
                            owner[people[pb, k]] = pa
                            people[pb, k] = -1
                    totals[pa] += totals[pb] + score
                    counts[pa] += counts[pb]
                    alive[pb] = False
    keep = np.zeros(num_people, np.bool_)
    for p in range(num_people):
        keep[p] = alive[p] and counts[p] >= min_keypoints and totals[p] / counts[p] >= min_mean_score
    return people[:num_people][keep].copy(), totals[:num_people][keep].copy(), counts[:num_people][keep].copy()


def decode_people(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet,
                  params: GroupingParams = GroupingParams()) -> People:
    """People from one image's maps: `heatmaps` (K or K+1, H, W) and `pafs` (2L, H, W) of the same size.
    Coordinates are in map pixels (the caller maps them to the image)."""
    k = keypoint_set.num_keypoints
    heatmaps = np.ascontiguousarray(heatmaps[:k], dtype=np.float32)
    pafs = np.ascontiguousarray(pafs, dtype=np.float32)
    if heatmaps.shape[0] != k or pafs.shape[0] != keypoint_set.num_pafs or heatmaps.shape[1:] != pafs.shape[1:]:
        raise ValueError(f"maps do not fit keypoint set '{keypoint_set.name}': heatmaps {heatmaps.shape}, "
                         f"PAFs {pafs.shape}, expected {k} and {keypoint_set.num_pafs} channels of one size")
    peaks = find_peaks(heatmaps, np.float32(params.peak_threshold), np.float32(params.nms_radius),
                       params.refine_peaks, params.nms_strongest_first)
    if len(peaks) == 0:
        return People.empty(k)
    person_peaks, totals, counts = group_peaks(
        peaks, pafs, k, keypoint_set.limb_keypoints, keypoint_set.limb_paf_channels, keypoint_set.fill_in_mask,
        keypoint_set.assembly_order, params.paf_samples, params.min_paf_score, params.min_success_ratio,
        params.min_keypoints, params.min_mean_score)
    return people_from_peaks(person_peaks, totals, counts, peaks, k)


def people_from_peaks(person_peaks, totals, counts, peaks, num_keypoints) -> People:
    keypoints = np.full((len(person_peaks), num_keypoints, 3), -1.0, np.float32)
    keypoints[..., 2] = 0.0
    present = person_peaks >= 0
    keypoints[present] = peaks[person_peaks[present], :3]
    scores = (totals * np.maximum(0, counts - 1)).astype(np.float32)
    return People(keypoints, scores, counts.astype(np.int32))

"""Bottom-up grouping: keypoint peaks from heatmaps, limb scores from PAFs, people assembled greedily.

The kernels take plain arrays (float32 maps, int32 tables derived from a keypoint set) and know nothing of any
particular skeleton: which limbs exist, the order people grow in and which limbs may only fill in a keypoint all
come from `KeypointSet`. Numba compiles them once per machine (`cache=True`).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

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
    refine_peaks: bool = False  # sub-pixel refinement of each peak (for decoding at map resolution)
    # With refine_peaks: refine on the map's cubic interpolation sampled every half cell (the values a 2x
    # OpenCV resize would give, computed around peaks only) rather than on the cells themselves.
    refine_on_cubic: bool = False
    bilinear_paf: bool = False  # PAF read between cells (for decoding at map resolution); False = nearest cell
    # Which of two close peaks survives: False keeps the left one (the reference's order, which reproduces its
    # COCO AP exactly); True keeps the stronger. They differ by single one-pixel shifts of weak peaks, which
    # moved AP by -0.002 on coco_mini_train: a coin toss, so the reference's order is the default.
    nms_strongest_first: bool = False
    # Threads that score a crowded frame's limbs (numba releases the GIL, so they run at once); frames with fewer
    # candidate pairs than `threads_from_pairs` stay on the calling thread, where handing work over costs more.
    threads: int = 2
    threads_from_pairs: int = 20000
    threads_from_cells: int = 200000  # heatmap cells from which peak finding is split across the threads too


@dataclass
class People:
    """Decoded people: `keypoints` (P, K, 3) holds x, y, score, with x = y = -1 and score 0 where missing;
    `scores` (P,) ranks people (sum of keypoint and limb scores times (keypoints - 1), as the reference);
    `num_keypoints` (P,) counts keypoints found by non-fill-in limbs; `keypoint_names` (K,) names the keypoints
    (the keypoint set's; empty when unknown)."""

    keypoints: np.ndarray
    scores: np.ndarray
    num_keypoints: np.ndarray
    keypoint_names: tuple[str, ...] = ()
    # With a multi-class keypoint set: each instance's class (P,), an index into `class_names`; keypoints of the
    # other classes are missing in its row.
    class_ids: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.class_ids is None:
            self.class_ids = np.zeros(len(self.scores), np.int32)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, num_keypoints: int, keypoint_names: tuple[str, ...] = ()) -> "People":
        return cls(np.zeros((0, num_keypoints, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32),
                   keypoint_names)

    @classmethod
    def concatenate(cls, parts: list["People"]) -> "People":
        """The instances of several People of the same keypoints, one after another."""
        first = parts[0]
        return cls(np.concatenate([p.keypoints for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.num_keypoints for p in parts]), first.keypoint_names,
                   np.concatenate([p.class_ids for p in parts]), first.class_names)

    def select(self, index) -> "People":
        return replace(self, keypoints=self.keypoints[index], scores=self.scores[index],
                       num_keypoints=self.num_keypoints[index], class_ids=self.class_ids[index])

    def with_keypoints(self, keypoints: np.ndarray) -> "People":
        """The same people with other keypoint coordinates (mapped to another frame, smoothed, ...)."""
        return replace(self, keypoints=keypoints)

    def to_dicts(self, ids: np.ndarray | None = None, decimals: int | None = None) -> list[dict]:
        """One dict per person: `{"score": s, "keypoints": {name: [x, y, score], ...}}` with the keypoints found
        (missing ones left out), plus `"id"` when track `ids` are given; `decimals` rounds the numbers."""
        names = self.keypoint_names or tuple(str(i) for i in range(self.keypoints.shape[1]))

        def number(value: float) -> float:
            return round(value, decimals) if decimals is not None else value

        people = []
        for p in range(len(self)):
            entry: dict = {} if ids is None else {"id": int(ids[p])}
            prefix = ""
            if len(self.class_names) > 1:  # a multi-class set: the class, and its keypoints by their own names
                entry["class"] = self.class_names[self.class_ids[p]]
                prefix = entry["class"] + "/"
            entry["score"] = number(float(self.scores[p]))
            entry["keypoints"] = {name.removeprefix(prefix): [number(x), number(y), number(score)]
                                  for name, (x, y, score) in zip(names, self.keypoints[p].tolist()) if score > 0}
            people.append(entry)
        return people


REFINE_NONE, REFINE_PARABOLA, REFINE_CUBIC = 0, 1, 2
# Samples of a crowd's pair looked up in the table of sure misses before any is computed: the first two for every
# pair, the next two for pairs with one miss among those.
PRECHECK_SAMPLES = 4

# OpenCV's bicubic kernel (a = -0.75) a quarter of a cell past a cell: the weights of the cells before it, it,
# and the two after (three quarters past uses them in reverse): what a 2x resize weighs each pixel with.
_CUBIC_A, _CUBIC_B, _CUBIC_C, _CUBIC_D = -0.10546875, 0.87890625, 0.26171875, -0.03515625


@numba.njit(cache=True, nogil=True)
def find_peaks(heatmaps, threshold, nms_radius, refine, strongest_first=True):
    """Local maxima of each channel of `heatmaps` (C, H, W): above `threshold`, strictly above the 4 neighbours,
    then suppressed by peaks of the same channel closer than `nms_radius` that come first: the stronger ones, or
    with `strongest_first=False` the ones further left (the reference's order).
    `refine` moves each maximum before suppression, so two neighbouring cells on the two sides of one true peak
    meet and only one survives: REFINE_PARABOLA to the vertex of a parabola through it and its neighbours (per
    axis); REFINE_CUBIC to the best of the four half-cell points of the cubic interpolation around it, then to
    the vertex of a parabola through that point and its half-cell neighbours (its score becomes that point's).
    Returns (N, 4) float32 rows (x, y, score, channel), grouped by channel, in that order within a channel."""
    channels, height, width = heatmaps.shape
    lattice = np.empty((4, 4), np.float64)
    lattice_rows = np.empty((5, 4), np.float64)
    capacity = 256
    out = np.empty((capacity, 4), np.float32)
    count = 0
    radius_sq = nms_radius * nms_radius
    cand_x = np.empty(64, np.float32)
    cand_y = np.empty(64, np.float32)
    cand_s = np.empty(64, np.float32)
    for c in range(channels):
        n = 0
        for y in range(height):
            above = 0  # a branch-free count first (it vectorizes): most rows of most maps hold no peak
            for x in range(width):
                above += heatmaps[c, y, x] > threshold
            if above == 0:
                continue
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
                    cand_x = np.concatenate((cand_x, np.empty(n, np.float32)))
                    cand_y = np.concatenate((cand_y, np.empty(n, np.float32)))
                    cand_s = np.concatenate((cand_s, np.empty(n, np.float32)))
                cand_x[n] = x
                cand_y[n] = y
                cand_s[n] = v
                if refine == REFINE_PARABOLA:
                    if 0 < x < width - 1:
                        cand_x[n] = x + _parabola_vertex(heatmaps[c, y, x - 1], v, heatmaps[c, y, x + 1])
                    if 0 < y < height - 1:
                        cand_y[n] = y + _parabola_vertex(heatmaps[c, y - 1, x], v, heatmaps[c, y + 1, x])
                elif refine == REFINE_CUBIC:
                    _cubic_lattice(heatmaps[c], x, y, lattice, lattice_rows)
                    # the best of the four points within half a cell, then a parabola through its neighbours
                    bj, bi = 1, 1
                    for j in range(1, 3):
                        for i in range(1, 3):
                            if lattice[j, i] > lattice[bj, bi]:
                                bj, bi = j, i
                    best = lattice[bj, bi]
                    cand_x[n] = x - 0.75 + 0.5 * (bi + _parabola_vertex(lattice[bj, bi - 1], best, lattice[bj, bi + 1]))
                    cand_y[n] = y - 0.75 + 0.5 * (bj + _parabola_vertex(lattice[bj - 1, bi], best, lattice[bj + 1, bi]))
                    cand_s[n] = best
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
            px = cand_x[i]
            py = cand_y[i]
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
    return out[:count].copy()


@numba.njit(cache=True, nogil=True, inline="always")
def _cubic_half_cells(v0, v1, v2, v3, v4):
    """Interpolations at -0.75, -0.25, 0.25 and 0.75 cell from the middle of five consecutive cells."""
    a, b, c, d = _CUBIC_A, _CUBIC_B, _CUBIC_C, _CUBIC_D
    return (a * v0 + b * v1 + c * v2 + d * v3, d * v0 + c * v1 + b * v2 + a * v3,
            a * v1 + b * v2 + c * v3 + d * v4, d * v1 + c * v2 + b * v3 + a * v4)


@numba.njit(cache=True, nogil=True)
def _cubic_lattice(heatmap, x, y, out, rows):
    """out[j, i] = the bicubic interpolation of `heatmap` at (x - 0.75 + 0.5 i, y - 0.75 + 0.5 j), borders
    replicated: the 4x4 pixels a 2x OpenCV INTER_CUBIC resize puts around cell (x, y). Separable: the 5x5
    cells around (x, y) are interpolated along rows first (into `rows`, 5x4), then along columns."""
    height, width = heatmap.shape
    x0, x1, x2 = max(x - 2, 0), max(x - 1, 0), x
    x3, x4 = min(x + 1, width - 1), min(x + 2, width - 1)
    for q in range(5):
        row = heatmap[min(max(y - 2 + q, 0), height - 1)]
        rows[q, 0], rows[q, 1], rows[q, 2], rows[q, 3] = _cubic_half_cells(row[x0], row[x1], row[x2], row[x3],
                                                                           row[x4])
    for i in range(4):
        out[0, i], out[1, i], out[2, i], out[3, i] = _cubic_half_cells(rows[0, i], rows[1, i], rows[2, i],
                                                                       rows[3, i], rows[4, i])


@numba.njit(cache=True, nogil=True, inline="always")
def _parabola_vertex(before, centre, after):
    """Offset (within half a cell) of the vertex of the parabola through three equally spaced samples."""
    denom = before - 2.0 * centre + after
    if denom < 0:
        return min(0.5, max(-0.5, 0.5 * (before - after) / denom))
    return 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _sample_cell(x, y, height, width, bilinear):
    """The cell (row, column) whose value gives the PAF at (x, y): the nearest one, or with `bilinear` the
    top-left one of the 2x2 block it is interpolated from (the map is clamped at its borders either way)."""
    if not bilinear:
        return min(max(int(np.floor(y + 0.5)), 0), height - 1), min(max(int(np.floor(x + 0.5)), 0), width - 1)
    x = min(max(x, 0.0), width - 1.0)
    y = min(max(y, 0.0), height - 1.0)
    return max(min(int(y), height - 2), 0), max(min(int(x), width - 2), 0)


@numba.njit(cache=True, nogil=True, inline="always")
def _sample(paf_x, paf_y, x, y, bilinear):
    """The PAF vector at (x, y): the nearest cell's, or interpolated between the four around it."""
    height, width = paf_x.shape
    y0, x0 = _sample_cell(x, y, height, width, bilinear)
    if not bilinear:
        return paf_x[y0, x0], paf_y[y0, x0]
    x1 = min(x0 + 1, width - 1)
    y1 = min(y0 + 1, height - 1)
    fx = min(max(x, 0.0), width - 1.0) - x0
    fy = min(max(y, 0.0), height - 1.0) - y0
    w00 = (1.0 - fx) * (1.0 - fy)
    w01 = fx * (1.0 - fy)
    w10 = (1.0 - fx) * fy
    w11 = fx * fy
    return (paf_x[y0, x0] * w00 + paf_x[y0, x1] * w01 + paf_x[y1, x0] * w10 + paf_x[y1, x1] * w11,
            paf_y[y0, x0] * w00 + paf_y[y0, x1] * w01 + paf_y[y1, x0] * w10 + paf_y[y1, x1] * w11)


@numba.njit(cache=True, nogil=True)
def _sure_misses(paf_x, paf_y, min_paf_score, bilinear):
    """(H, W) bool: True where every sample read from that cell (see `_sample_cell`) projects to at most
    `min_paf_score` on any direction, because the field there (at all four corners, with `bilinear`) is no
    longer than that: an interpolated vector is never longer than the longest it is made of. Lets the limb
    scorer reject most wrong pairs of a crowd with one lookup, reaching exactly the verdict it would compute."""
    height, width = paf_x.shape
    if min_paf_score < 0:  # then even a zero field counts
        return np.zeros((height, width), np.bool_)
    limit = np.float32((min_paf_score * (1.0 - 1e-6)) ** 2)  # a hair inside: float rounding never flips a verdict
    weak = np.empty((height, width), np.bool_)
    for y in range(height):
        for x in range(width):
            weak[y, x] = paf_x[y, x] * paf_x[y, x] + paf_y[y, x] * paf_y[y, x] <= limit
    if not bilinear:
        return weak
    block = np.empty((height, width), np.bool_)
    for y in range(height):
        y1 = min(y + 1, height - 1)
        for x in range(width - 1):
            block[y, x] = weak[y, x] & weak[y, x + 1] & weak[y1, x] & weak[y1, x + 1]
        block[y, width - 1] = weak[y, width - 1] & weak[y1, width - 1]
    return block


@numba.njit(cache=True, nogil=True)
def _sample_order(n_samples):
    """Positions (0..1 along a limb) of its samples, in the order they are visited: at a third and two thirds
    first, then from the middle outwards. A wrong pair of a crowd misses inside the limb, where no field of its
    own lies, so early exit decides it after two samples; near the ends, the keypoints' own limbs point
    everywhere and agree with many wrong directions."""
    order = np.empty(n_samples, np.int64)
    used = np.zeros(n_samples, np.bool_)
    count = 0
    for first in (round((n_samples - 1) / 3), round(2 * (n_samples - 1) / 3)):
        s = int(first)
        if not used[s]:
            order[count] = s
            used[s] = True
            count += 1
    distance = np.abs(np.arange(n_samples) - (n_samples - 1) / 2)
    for s in np.argsort(distance, kind="mergesort"):
        if not used[s]:
            order[count] = s
            used[s] = True
            count += 1
    if n_samples == 1:
        return np.full(1, 0.5)
    return order / (n_samples - 1)


@numba.njit(cache=True, nogil=True)
def _limb_connections(peaks, start_a, end_a, start_b, end_b, paf_x, paf_y, n_samples, min_paf_score,
                      min_success_ratio, bilinear):
    """Candidate connections of one limb as rows (peak a, peak b, score), best first, each peak used once."""
    needed = min_success_ratio * n_samples
    fractions = _sample_order(n_samples)
    height, width = paf_x.shape
    na = end_a - start_a
    nb = end_b - start_b
    crowd = na * nb * n_samples > height * width  # then the table of sure misses pays for itself
    if crowd:
        sure_miss = _sure_misses(paf_x, paf_y, min_paf_score, bilinear)
    else:
        sure_miss = np.zeros((height, width), np.bool_)
    # Where two misses already fail the ratio, a pair whose first two samples are sure misses is rejected by two
    # lookups, made for all of one keypoint's pairs in a loop without branches (it vectorizes): most pairs of a
    # crowd end there.
    precheck = crowd and n_samples >= 2 and n_samples - 2 <= needed
    checked = min(n_samples, PRECHECK_SAMPLES)
    t0 = fractions[0]
    t1 = fractions[min(1, n_samples - 1)]
    flat_miss = sure_miss.ravel()
    b_x = peaks[start_b:end_b, 0].copy()
    b_y = peaks[start_b:end_b, 1].copy()
    first_cell = np.empty(nb, np.int32)
    second_cell = np.empty(nb, np.int32)
    # Grown as needed: sized for every pair, a crowd's buffer would be large enough for the allocator to map fresh
    # pages on each call (page faults, and unmapping stalls the other threads of the process).
    cand = np.empty((min(na * nb, 4 * (na + nb)), 3), np.float64)
    m = 0
    for i in range(start_a, end_a):
        ax = peaks[i, 0]
        ay = peaks[i, 1]
        if precheck:
            for k in range(nb):
                dx = b_x[k] - ax
                dy = b_y[k] - ay
                row, column = _sample_cell(ax + t0 * dx, ay + t0 * dy, height, width, bilinear)
                first_cell[k] = row * width + column
                row, column = _sample_cell(ax + t1 * dx, ay + t1 * dy, height, width, bilinear)
                second_cell[k] = row * width + column
        for j in range(start_b, end_b):
            if precheck and flat_miss[first_cell[j - start_b]] & flat_miss[second_cell[j - start_b]]:
                continue
            dx = peaks[j, 0] - ax
            dy = peaks[j, 1] - ay
            if precheck:
                # At most one miss so far: the next samples, looked up in the table, settle most of the rest (a
                # crowd's wrong pair crosses some of another person's field) before any is computed. The
                # pre-check is on only where two misses fail the ratio. (The first two are looked up again rather
                # than kept: the branch-free test above is what most of a crowd's pairs end on, and measured
                # faster alone.)
                misses = int(flat_miss[first_cell[j - start_b]]) + int(flat_miss[second_cell[j - start_b]])
                for si in range(2, checked):
                    t = fractions[si]
                    row, column = _sample_cell(ax + t * dx, ay + t * dy, height, width, bilinear)
                    misses += sure_miss[row, column]
                    if misses >= 2:
                        break
                if misses >= 2:
                    continue
            length_sq = dx * dx + dy * dy
            if length_sq < 1e-12:
                continue
            ux = uy = 0.0  # the limb's direction, computed once a sample needs it
            total = 0.0
            valid = 0
            for si in range(n_samples):
                t = fractions[si]
                px = ax + t * dx
                py = ay + t * dy
                row, column = _sample_cell(px, py, height, width, bilinear)
                dot = 0.0
                if not sure_miss[row, column]:
                    if ux == 0.0 and uy == 0.0:
                        norm = np.sqrt(length_sq)
                        ux = dx / norm
                        uy = dy / norm
                    vx, vy = _sample(paf_x, paf_y, px, py, bilinear)
                    dot = vx * ux + vy * uy
                if dot > min_paf_score:
                    total += dot
                    valid += 1
                elif valid + (n_samples - 1 - si) <= needed:
                    # Too many misses to pass the success ratio whatever comes next: the same verdict,
                    # reached after 2-3 samples for most wrong pairs in a crowd instead of all of them.
                    valid = 0
                    break
            if valid == 0:
                continue
            score = total / valid
            if score > 0 and valid > min_success_ratio * n_samples:
                if m == cand.shape[0]:
                    grown = np.empty((2 * m, 3), np.float64)
                    grown[:m] = cand
                    cand = grown
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
def keypoint_starts(peaks, num_keypoints):
    """Row ranges of each keypoint's peaks: keypoint k owns rows starts[k]:starts[k + 1] (peaks come grouped)."""
    starts = np.zeros(num_keypoints + 1, np.int64)
    for p in range(peaks.shape[0]):
        starts[int(peaks[p, 3]) + 1] += 1
    for k in range(num_keypoints):
        starts[k + 1] += starts[k]
    return starts


@numba.njit(cache=True, nogil=True)
def limb_candidates(peaks, starts, pafs, limb_keypoints, limb_paf_channels, limbs, n_samples, min_paf_score,
                    min_success_ratio, bilinear_paf):
    """The connections of each limb in `limbs`, as rows (limb, peak a, peak b, score): limb after limb in that
    order, each limb's best first. Limbs are independent of each other, so callers may split them across threads."""
    found = []
    total = 0
    for li in range(limbs.shape[0]):
        limb = limbs[li]
        ka = limb_keypoints[limb, 0]
        kb = limb_keypoints[limb, 1]
        if starts[ka + 1] == starts[ka] or starts[kb + 1] == starts[kb]:
            found.append(np.empty((0, 3), np.float64))
            continue
        connections = _limb_connections(peaks, starts[ka], starts[ka + 1], starts[kb], starts[kb + 1],
                                        pafs[limb_paf_channels[limb, 0]], pafs[limb_paf_channels[limb, 1]],
                                        n_samples, min_paf_score, min_success_ratio, bilinear_paf)
        found.append(connections)
        total += connections.shape[0]
    rows = np.empty((total, 4), np.float64)
    m = 0
    for li in range(limbs.shape[0]):
        connections = found[li]
        for ci in range(connections.shape[0]):
            rows[m, 0] = limbs[li]
            rows[m, 1:] = connections[ci]
            m += 1
    return rows


@numba.njit(cache=True, nogil=True)
def assemble_people(peaks, num_keypoints, limb_keypoints, fill_in, order, candidates, min_keypoints,
                    min_mean_score):
    """Assemble people from the limbs' `candidates` (rows of `limb_candidates`, any limb order): limbs are taken
    in assembly `order`. A connection whose ends are both free starts a person; one with one end in a person adds
    the other end to it; one joining two people merges them when they share no keypoint type. Fill-in limbs only
    add a missing keypoint to an existing person. Returns (person peak ids (P, K) with -1 where missing, total
    scores (P,), keypoint counts (P,))."""
    n = peaks.shape[0]
    num_limbs = limb_keypoints.shape[0]
    limb_first = np.zeros(num_limbs + 1, np.int64)  # candidates of limb l: rows by_limb[limb_first[l]:...[l + 1]]
    for r in range(candidates.shape[0]):
        limb_first[int(candidates[r, 0]) + 1] += 1
    for limb in range(num_limbs):
        limb_first[limb + 1] += limb_first[limb]
    by_limb = np.empty(candidates.shape[0], np.int64)
    filled = limb_first[:num_limbs].copy()
    for r in range(candidates.shape[0]):  # stable: each limb keeps its best-first order
        limb = int(candidates[r, 0])
        by_limb[filled[limb]] = r
        filled[limb] += 1
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
        for position in range(limb_first[limb], limb_first[limb + 1]):
            row = by_limb[position]
            a = int(candidates[row, 1])
            b = int(candidates[row, 2])
            score = candidates[row, 3]
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


@numba.njit(cache=True, nogil=True)
def all_finite(values):
    """True when no value of the float32 array is NaN or +-inf: the largest exponent-and-mantissa field over all
    values (an integer reduction, which vectorizes; a float one would not without reordering) stays below the
    all-ones exponent that NaN and inf share."""
    bits = values.ravel().view(np.uint32)
    largest = np.uint32(0)
    for i in range(bits.shape[0]):
        largest = max(largest, bits[i] & np.uint32(0x7FFFFFFF))
    return largest < np.uint32(0x7F800000)


_decode_workers: ThreadPoolExecutor | None = None
_decode_worker_count = 0
_decode_workers_lock = threading.Lock()


def _forget_decode_workers() -> None:
    # A forked child inherits the pool object but not its threads: work handed to it would wait forever.
    global _decode_workers, _decode_worker_count, _decode_workers_lock
    _decode_workers, _decode_worker_count, _decode_workers_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_decode_workers)


def _finite(maps: np.ndarray) -> np.ndarray:
    """The maps with NaN and +-inf set to 0: a diverged network's inf would become a person's score and spread
    through the limb sums, and such cells carry no evidence. Finite maps, the usual case, are not copied."""
    return maps if all_finite(maps) else np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)


def _workers(threads: int) -> ThreadPoolExecutor:
    """The process's pool of decoding workers, grown to at least `threads` - 1 threads."""
    global _decode_workers, _decode_worker_count
    with _decode_workers_lock:
        if _decode_worker_count < threads - 1:
            _decode_workers = ThreadPoolExecutor(threads - 1, thread_name_prefix="lwpose-decode")
            _decode_worker_count = threads - 1
    return _decode_workers


def _limb_candidates_threaded(peaks, starts, pafs, keypoint_set: KeypointSet, pairs, threads: int, limb_args):
    """`limb_candidates` with the limbs dealt into `threads` shares of about equal work (pairs to score), one
    share on the calling thread and the others on worker threads."""
    pool = _workers(threads)
    shares = [[] for _ in range(threads)]
    work = [0] * threads
    for limb in sorted(range(len(pairs)), key=lambda limb: -int(pairs[limb])):  # biggest first, to the least loaded
        share = work.index(min(work))
        shares[share].append(limb)
        work[share] += int(pairs[limb])

    def candidates_of(limbs):
        return limb_candidates(peaks, starts, pafs, keypoint_set.limb_keypoints, keypoint_set.limb_paf_channels,
                               np.asarray(limbs, np.int64), *limb_args)

    others = [pool.submit(candidates_of, limbs) for limbs in shares[1:]]
    parts = [candidates_of(shares[0])] + [future.result() for future in others]
    return np.concatenate(parts)


def decode_people(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet,
                  params: GroupingParams = GroupingParams(), heatmap_scale: int = 1) -> People:
    """People from one image's maps: `heatmaps` (K or K+1, H, W) and `pafs` (2L, H / s, W / s), where the
    heatmaps may have been upsampled by `s = heatmap_scale` (peaks are then placed more precisely than a PAF
    cell; `nms_radius` is in heatmap pixels). Coordinates are in PAF-map pixels (the caller maps them to the
    image). A multi-class set's classes are assembled each from its own channels and limbs only, so an instance
    never mixes keypoints of two classes; `class_ids` says whose each is."""
    if keypoint_set.num_classes == 1:
        return _decode_one_class(heatmaps, pafs, keypoint_set, params, heatmap_scale)
    # Peaks and limb candidates of every channel and limb at once (one pass, as for one class); then each class is
    # assembled from its own limbs only, each with its own owners of peaks, so a channel two classes share gives its
    # peaks to both and no instance takes another class's keypoint.
    found = _peaks_and_candidates(heatmaps, pafs, keypoint_set, params, heatmap_scale)
    k = keypoint_set.num_keypoints
    names = tuple(c.name for c in keypoint_set.classes)
    if found is None:
        return replace(People.empty(k, keypoint_set.keypoints), class_names=names)
    peaks, candidates = found
    assembled = [assemble_people(peaks, k, keypoint_set.limb_keypoints, keypoint_set.fill_in_mask,
                                 subject.assembly_order, candidates,
                                 params.min_keypoints, params.min_mean_score) for subject in keypoint_set.classes]
    person_peaks, totals, counts = (np.concatenate(part) for part in zip(*assembled))
    people = people_from_peaks(person_peaks, totals, counts, peaks, k, keypoint_set.keypoints)
    class_ids = np.repeat(np.arange(len(assembled), dtype=np.int32), [len(part[1]) for part in assembled])
    return replace(people, class_ids=class_ids, class_names=names)


def _check_map_shapes(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet, heatmap_scale: int) -> None:
    k = keypoint_set.num_keypoints
    if (heatmaps.shape[0] != k or pafs.shape[0] != keypoint_set.num_pafs
            or heatmaps.shape[1:] != (pafs.shape[1] * heatmap_scale, pafs.shape[2] * heatmap_scale)):
        raise ValueError(f"maps do not fit keypoint set '{keypoint_set.name}': heatmaps {heatmaps.shape}, "
                         f"PAFs {pafs.shape}, expected {k} and {keypoint_set.num_pafs} channels, the heatmaps "
                         f"{heatmap_scale}x the PAFs' size")


def _decode_one_class(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet, params: GroupingParams,
                      heatmap_scale: int) -> People:
    k = keypoint_set.num_keypoints
    found = _peaks_and_candidates(heatmaps, pafs, keypoint_set, params, heatmap_scale)
    if found is None:
        return People.empty(k, keypoint_set.keypoints)
    peaks, candidates = found
    person_peaks, totals, counts = assemble_people(
        peaks, k, keypoint_set.limb_keypoints, keypoint_set.fill_in_mask, keypoint_set.assembly_order, candidates,
        params.min_keypoints, params.min_mean_score)
    return people_from_peaks(person_peaks, totals, counts, peaks, k, keypoint_set.keypoints)


def _peaks_and_candidates(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet, params: GroupingParams,
                          heatmap_scale: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The peaks of every keypoint channel and the scored connections of every limb; None without any peak."""
    k = keypoint_set.num_keypoints
    heatmaps = np.ascontiguousarray(heatmaps[:k], dtype=np.float32)
    pafs = np.ascontiguousarray(pafs, dtype=np.float32)
    _check_map_shapes(heatmaps, pafs, keypoint_set, heatmap_scale)
    refine = (REFINE_NONE if not params.refine_peaks
              else REFINE_CUBIC if params.refine_on_cubic else REFINE_PARABOLA)
    peak_args = (np.float32(params.peak_threshold), np.float32(params.nms_radius), refine, params.nms_strongest_first)
    if params.threads > 1 and heatmaps.size >= params.threads_from_cells:
        # Channels are independent: the worker takes the second half of the heatmaps and of the PAFs' check.
        half, paf_half = k // 2, pafs.shape[0] // 2

        def second_half():
            found = find_peaks(_finite(heatmaps[half:]), *peak_args)
            found[:, 3] += half
            return found, all_finite(pafs[paf_half:])

        other = _workers(2).submit(second_half)
        first = find_peaks(_finite(heatmaps[:half]), *peak_args)
        first_pafs_finite = all_finite(pafs[:paf_half])
        rest, rest_pafs_finite = other.result()
        peaks = np.concatenate((first, rest))
        if not (first_pafs_finite and rest_pafs_finite):
            pafs = _finite(pafs)
    else:
        peaks = find_peaks(_finite(heatmaps), *peak_args)
        pafs = _finite(pafs)
    if len(peaks) == 0:
        return None
    if heatmap_scale != 1:  # pixel j of a map resized s times (OpenCV's convention) lies at (j + 0.5) / s - 0.5
        peaks[:, :2] = (peaks[:, :2] + 0.5) / heatmap_scale - 0.5
    starts = keypoint_starts(peaks, k)
    pairs = np.diff(starts)[keypoint_set.limb_keypoints].prod(axis=1)  # candidate pairs of each limb
    limb_args = (params.paf_samples, params.min_paf_score, params.min_success_ratio, params.bilinear_paf)
    if params.threads > 1 and pairs.sum() >= params.threads_from_pairs:
        candidates = _limb_candidates_threaded(peaks, starts, pafs, keypoint_set, pairs, params.threads, limb_args)
    else:
        candidates = limb_candidates(peaks, starts, pafs, keypoint_set.limb_keypoints,
                                     keypoint_set.limb_paf_channels, keypoint_set.assembly_order, *limb_args)
    return peaks, candidates


def people_from_peaks(person_peaks, totals, counts, peaks, num_keypoints, keypoint_names=()) -> People:
    keypoints = np.full((len(person_peaks), num_keypoints, 3), -1.0, np.float32)
    keypoints[..., 2] = 0.0
    present = person_peaks >= 0
    keypoints[present] = peaks[person_peaks[present], :3]
    scores = (totals * np.maximum(0, counts - 1)).astype(np.float32)
    return People(keypoints, scores, counts.astype(np.int32), tuple(keypoint_names))

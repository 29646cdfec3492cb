"""Training targets at the network's output resolution: Gaussian heatmaps, background, PAFs, and loss masks.

The reference's parameters (REFERENCE.md, "Training targets"): a Gaussian of sigma 7 input pixels evaluated at the
stride-8 cell centres (`x * 8 + 3.5`), cut where its exponent exceeds 4.6052 (value < 0.01), the max over people
(clipped at 1), background = 1 - max over keypoint channels; a limb's PAF is its unit vector on the cells within
`thickness` cells of the segment, later people overwriting earlier ones. Everything is computed directly on the
small map, never rendered at input size and resized.

Loss masks are per channel and per cell: a keypoint the sample's source does not label gets weight 0 on its heatmap,
on the PAFs of every limb touching it, and on the background around the people (whose value would claim "no keypoint
here" where the unlabelled keypoint may well be; away from every person it is right and keeps its weight); cells in
ignore regions (crowds, people without keypoints) get weight 0 on every channel.
"""
from __future__ import annotations

import math

import cv2
import numba
import numpy as np

from lwpose.keypoints import KeypointSet

GAUSSIAN_CUT = 4.6052  # exp(-4.6052) = 0.01
DEFAULT_SIGMA = 7.0
DEFAULT_PAF_THICKNESS = 1.0


@numba.njit(cache=True, nogil=True)
def render_heatmaps(keypoints, stride, sigma, heatmaps):
    """keypoints (P, K, 3) float (x, y in input pixels, v > 0 where present); heatmaps (K + 1, H, W) float32,
    zeros on entry: keypoint channels get the max of the people's Gaussians, the last channel the background."""
    num_keypoints = heatmaps.shape[0] - 1
    height, width = heatmaps.shape[1], heatmaps.shape[2]
    offset = stride / 2.0 - 0.5
    two_sigma_sq = 2.0 * sigma * sigma
    limit = GAUSSIAN_CUT * two_sigma_sq
    radius = math.sqrt(limit)
    for p in range(keypoints.shape[0]):
        for k in range(num_keypoints):
            if keypoints[p, k, 2] <= 0:
                continue
            x, y = keypoints[p, k, 0], keypoints[p, k, 1]
            x0 = max(0, int(math.ceil((x - radius - offset) / stride)))
            x1 = min(width - 1, int(math.floor((x + radius - offset) / stride)))
            y0 = max(0, int(math.ceil((y - radius - offset) / stride)))
            y1 = min(height - 1, int(math.floor((y + radius - offset) / stride)))
            for gy in range(y0, y1 + 1):
                dy = gy * stride + offset - y
                for gx in range(x0, x1 + 1):
                    dx = gx * stride + offset - x
                    d2 = dx * dx + dy * dy
                    if d2 > limit:
                        continue
                    value = math.exp(-d2 / two_sigma_sq)
                    if value > heatmaps[k, gy, gx]:
                        heatmaps[k, gy, gx] = value
    for gy in range(height):
        for gx in range(width):
            peak = 0.0
            for k in range(num_keypoints):
                if heatmaps[k, gy, gx] > peak:
                    peak = heatmaps[k, gy, gx]
            heatmaps[num_keypoints, gy, gx] = 1.0 - min(peak, 1.0)


@numba.njit(cache=True, nogil=True)
def render_pafs(keypoints, limb_keypoints, limb_paf_channels, stride, thickness, pafs):
    """keypoints (P, K, 3) float in input pixels; limb_keypoints, limb_paf_channels (L, 2) int32; pafs (2L, H, W)
    float32, zeros on entry: each limb's unit vector (in map units) on cells within `thickness` of its segment."""
    height, width = pafs.shape[1], pafs.shape[2]
    offset = stride / 2.0 - 0.5
    thickness_sq = thickness * thickness
    for p in range(keypoints.shape[0]):
        for limb in range(limb_keypoints.shape[0]):
            a, b = limb_keypoints[limb, 0], limb_keypoints[limb, 1]
            if keypoints[p, a, 2] <= 0 or keypoints[p, b, 2] <= 0:
                continue
            ax = (keypoints[p, a, 0] - offset) / stride
            ay = (keypoints[p, a, 1] - offset) / stride
            bx = (keypoints[p, b, 0] - offset) / stride
            by = (keypoints[p, b, 1] - offset) / stride
            dx, dy = bx - ax, by - ay
            length = math.sqrt(dx * dx + dy * dy)
            if length < 1e-6:
                continue
            ux, uy = dx / length, dy / length
            x0 = max(0, int(math.ceil(min(ax, bx) - thickness)))
            x1 = min(width - 1, int(math.floor(max(ax, bx) + thickness)))
            y0 = max(0, int(math.ceil(min(ay, by) - thickness)))
            y1 = min(height - 1, int(math.floor(max(ay, by) + thickness)))
            channel_x, channel_y = limb_paf_channels[limb, 0], limb_paf_channels[limb, 1]
            for gy in range(y0, y1 + 1):
                wy = gy - ay
                for gx in range(x0, x1 + 1):
                    wx = gx - ax
                    along = wx * ux + wy * uy
                    if along < 0:
                        d2 = wx * wx + wy * wy
                    elif along > length:
                        d2 = (gx - bx) * (gx - bx) + (gy - by) * (gy - by)
                    else:
                        across = wx * uy - wy * ux
                        d2 = across * across
                    if d2 <= thickness_sq:
                        pafs[channel_x, gy, gx] = ux
                        pafs[channel_y, gy, gx] = uy


def make_targets(keypoints: np.ndarray, keypoint_set: KeypointSet, map_size: tuple[int, int], stride: int,
                 sigma: float = DEFAULT_SIGMA, paf_thickness: float = DEFAULT_PAF_THICKNESS,
                 out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (K + 1, h, w) and PAFs (2L, h, w) float32 for people (P, K, 3) in input-pixel coordinates, written
    into `out` when given (e.g. rows of a batch)."""
    height, width = map_size
    if out is None:
        heatmaps = np.zeros((keypoint_set.num_heatmaps, height, width), np.float32)
        pafs = np.zeros((keypoint_set.num_pafs, height, width), np.float32)
    else:
        heatmaps, pafs = out
        heatmaps.fill(0)
        pafs.fill(0)
    keypoints = np.ascontiguousarray(keypoints, np.float64).reshape(-1, keypoint_set.num_keypoints, 3)
    render_heatmaps(keypoints, float(stride), float(sigma), heatmaps)
    render_pafs(keypoints, keypoint_set.limb_keypoints, keypoint_set.limb_paf_channels, float(stride),
                float(paf_thickness), pafs)
    return heatmaps, pafs


def channel_loss_masks(keypoint_set: KeypointSet, labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel loss weights (1 or 0) for a source that labels `labelled` (K,) of the set's keypoints:
    heatmaps (K + 1,) and PAFs (2L,)."""
    labelled = np.asarray(labelled, bool)
    heatmap_mask = np.ones(keypoint_set.num_heatmaps, np.float32)
    heatmap_mask[:keypoint_set.num_keypoints] = labelled
    # An unlabelled keypoint is missing from max(), so the background would wrongly say "nothing here" on it;
    # where no person stands it is still right, which `background_loss_map` gives back spatially.
    heatmap_mask[keypoint_set.background_channel] = float(labelled.all())
    paf_mask = np.ones(keypoint_set.num_pafs, np.float32)
    limb_labelled = labelled[keypoint_set.limb_keypoints].all(axis=1)
    paf_mask[keypoint_set.limb_paf_channels.ravel()] = np.repeat(limb_labelled, 2)
    return heatmap_mask, paf_mask


def background_loss_map(boxes: np.ndarray, matrix: np.ndarray, map_size: int, stride: int,
                        sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """(map_size, map_size) float32 background weights for a source that leaves keypoints unlabelled: 0 on the cells
    inside any person's box (x, y, w, h, pixel edges at integers, as in the labels) widened by the Gaussian's reach,
    1 elsewhere. `matrix` (2x3) maps image pixels to input pixels (flip included)."""
    weights = np.ones((map_size, map_size), np.uint8)
    if len(boxes) == 0:
        return weights.astype(np.float32)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    reach = sigma * math.sqrt(2 * GAUSSIAN_CUT) / max(scale, 1e-6)  # image pixels where a Gaussian is above the cut
    offset = stride / 2 - 0.5
    subpixel_bits = 4
    for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
        x0, y0, x1, y1 = x - 0.5 - reach, y - 0.5 - reach, x + w - 0.5 + reach, y + h - 0.5 + reach
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ matrix[:, :2].T + matrix[:, 2]
        cells = (corners - offset) / stride
        cv2.fillConvexPoly(weights, np.round(cells * (1 << subpixel_bits)).astype(np.int32), 0,
                           lineType=cv2.LINE_8, shift=subpixel_bits)
    return weights.astype(np.float32)


def warm_up_kernels() -> None:
    """Compile (or load from numba's cache) before worker processes fork, so each does not compile again."""
    keypoints = np.zeros((1, 2, 3))
    keypoints[0, :, 2] = 1
    keypoints[0, 1, :2] = 8
    heatmaps = np.zeros((3, 2, 2), np.float32)
    render_heatmaps(keypoints, 8.0, 7.0, heatmaps)
    pafs = np.zeros((2, 2, 2), np.float32)
    render_pafs(keypoints, np.array([[0, 1]], np.int32), np.array([[0, 1]], np.int32), 8.0, 1.0, pafs)

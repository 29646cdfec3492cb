"""Training targets at the network's output resolution: the maps (lwpose/codec.py encodes them: Gaussian heatmaps,
background, PAFs, computed directly on the small map, never rendered at input size and resized) and loss masks.

Loss masks are per channel and per cell: a keypoint the sample's source does not label gets weight 0 on its heatmap,
on the PAFs of every limb touching it, and on the background around the people (whose value would claim "no keypoint
here" where the unlabelled keypoint may well be; away from every person it is right and keeps its weight); cells in
ignore regions (crowds, people without keypoints) get weight 0 on every channel.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from lwpose.codec import DEFAULT_SIGMA, GAUSSIAN_CUT, cell_centre_offset
from lwpose.keypoints import KeypointSet


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
    offset = cell_centre_offset(float(stride))
    subpixel_bits = 4
    for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
        x0, y0, x1, y1 = x - 0.5 - reach, y - 0.5 - reach, x + w - 0.5 + reach, y + h - 0.5 + reach
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ matrix[:, :2].T + matrix[:, 2]
        cells = (corners - offset) / stride
        cv2.fillConvexPoly(weights, np.round(cells * (1 << subpixel_bits)).astype(np.int32), 0,
                           lineType=cv2.LINE_8, shift=subpixel_bits)
    return weights.astype(np.float32)

"""Training targets at the network's output resolution: the maps (lwpose/codec.py encodes them: Gaussian heatmaps,
background, PAFs, computed directly on the small map, never rendered at input size and resized) and loss masks.

Loss masks are per channel and per cell: a keypoint the sample's source does not label gets weight 0 on its heatmap,
on the PAFs of every limb touching it, and on the background around the people (whose value would claim "no keypoint
here" where the unlabelled keypoint may well be; away from every person it is right and keeps its weight); cells in
ignore regions (crowds, people without keypoints) get weight 0 on every channel. A source with pseudo-labels (filled by
a model, lwpose/labels/filled_file.py) gets spatial weights per channel instead: `pseudo_label_weight_maps`.
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


def _region_cells(boxes: np.ndarray, matrix: np.ndarray, stride: int, sigma: float,
                  keypoints: np.ndarray | None = None) -> list[np.ndarray]:
    """Each person's region as a polygon in map cells (fixed point, `_SUBPIXEL_BITS`): the box (x, y, w, h, pixel
    edges at integers, as in the labels), stretched over the person's present keypoints (P, K, 3) when given (image
    pixels, centres at integers), widened by the Gaussian's reach and mapped by `matrix` (image to input pixels)."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    reach = sigma * math.sqrt(2 * GAUSSIAN_CUT) / max(scale, 1e-6)  # image pixels where a Gaussian is above the cut
    offset = cell_centre_offset(float(stride))
    polygons = []
    for p, (x, y, w, h) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        x0, y0, x1, y1 = x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5
        if keypoints is not None:
            present = keypoints[p, keypoints[p, :, 2] > 0, :2]
            if len(present):
                x0, y0 = min(x0, present[:, 0].min()), min(y0, present[:, 1].min())
                x1, y1 = max(x1, present[:, 0].max()), max(y1, present[:, 1].max())
        x0, y0, x1, y1 = x0 - reach, y0 - reach, x1 + reach, y1 + reach
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ matrix[:, :2].T + matrix[:, 2]
        polygons.append(np.round((corners - offset) / stride * (1 << _SUBPIXEL_BITS)).astype(np.int32))
    return polygons


_SUBPIXEL_BITS = 4


def background_loss_map(boxes: np.ndarray, matrix: np.ndarray, map_size: int, stride: int,
                        sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """(map_size, map_size) float32 background weights for a source that leaves keypoints unlabelled: 0 on the cells
    inside any person's box (x, y, w, h, pixel edges at integers, as in the labels) widened by the Gaussian's reach,
    1 elsewhere. `matrix` (2x3) maps image pixels to input pixels (flip included)."""
    weights = np.ones((map_size, map_size), np.uint8)
    for polygon in _region_cells(boxes, matrix, stride, sigma):
        cv2.fillConvexPoly(weights, polygon, 0, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return weights.astype(np.float32)


def person_keypoint_weights(labelled: np.ndarray, pseudo: np.ndarray | None, pseudo_weight: float) -> np.ndarray:
    """(P, K) float32 loss weight of each person's keypoints in a source with pseudo-labels: 1 where the source
    labels the keypoint (v = 0 included: labelled as absent), `pseudo_weight` on a pseudo-label, 0 where unlabelled."""
    labelled = np.asarray(labelled, bool)
    pseudo = np.zeros((0, len(labelled)), bool) if pseudo is None else np.asarray(pseudo, bool)
    return np.where(labelled[None, :], 1.0, np.where(pseudo, pseudo_weight, 0.0)).astype(np.float32)


def pseudo_label_weight_maps(keypoint_set: KeypointSet, weights: np.ndarray, boxes: np.ndarray,
                             keypoints: np.ndarray, matrix: np.ndarray, map_size: int, stride: int,
                             sigma: float = DEFAULT_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Loss weights per channel and cell, heatmaps (K + 1, n, n) and PAFs (2L, n, n), for a sample of a source with
    pseudo-labels, whose people (P) weigh their keypoints `weights` (P, K) (person_keypoint_weights: 1 labelled,
    pseudo_weight, 0 unlabelled; already in the sample's channel order when it is flipped). `boxes` (P, 4) and
    `keypoints` (P, K, 3) are in image pixels, `matrix` maps them to the crop (flip included).

    Why spatial, per channel: one channel can hold a labelled keypoint of one person and a pseudo-label (or nothing)
    of another in the same crop, and each target is right only around its own person. So each person's region (box
    and keypoints, widened by the Gaussian's reach) takes that person's weight for the channel, the smallest where
    regions overlap (nobody vouches for a cell more than its least sure claimant); a limb's PAF weighs what its
    weaker end weighs. Away from every person the target (0, or background 1) is right whatever is labelled, and
    weighs what the best-labelled person weighs the channel (a channel nobody labels stays masked everywhere, as
    for a source that lacks it; the background keeps weight 1 there, as `background_loss_map`). A channel every
    person labels weighs 1 everywhere, and one where every person has a pseudo-label weighs exactly pseudo_weight
    everywhere: its gradient is pseudo_weight times the labelled one's."""
    count = keypoint_set.num_keypoints
    weights = np.asarray(weights, np.float32).reshape(-1, count)
    regions = _region_cells(boxes, matrix, stride, sigma, keypoints)
    limb_weights = weights[:, keypoint_set.limb_keypoints].min(axis=2) if len(weights) else \
        np.zeros((0, keypoint_set.num_limbs), np.float32)
    made: dict[tuple, np.ndarray] = {}

    def weight_map(person_weights: np.ndarray, away: float) -> np.ndarray:
        key = (away, person_weights.tobytes())
        if key not in made:
            if (person_weights == away).all():
                made[key] = np.full((map_size, map_size), away, np.float32)
            else:
                canvas = np.full((map_size, map_size), away, np.float32)
                for p in np.argsort(-person_weights, kind="stable"):  # the smallest weight is painted last
                    cv2.fillConvexPoly(canvas, regions[p], float(person_weights[p]), lineType=cv2.LINE_8,
                                       shift=_SUBPIXEL_BITS)
                made[key] = canvas
        return made[key]

    heatmaps = np.empty((keypoint_set.num_heatmaps, map_size, map_size), np.float32)
    for j in range(count):
        heatmaps[j] = weight_map(weights[:, j], float(weights[:, j].max(initial=0.0)))
    heatmaps[count] = weight_map(weights.min(axis=1) if len(weights) else weights[:, 0], 1.0)
    pafs = np.empty((keypoint_set.num_pafs, map_size, map_size), np.float32)
    for limb, channels in enumerate(keypoint_set.limb_paf_channels):
        pafs[channels] = weight_map(limb_weights[:, limb], float(limb_weights[:, limb].max(initial=0.0)))
    return heatmaps, pafs

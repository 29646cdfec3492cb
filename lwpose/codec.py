"""The map codec: people in input pixels <-> stride-8 heatmaps and PAFs, encoded for training and decoded at
inference, with the one convention both sides share.

Cell (i, j) of a map covers input pixels [8j, 8j + 8) x [8i, 8i + 8) and stands for the input pixel at its centre,
(8j + 3.5, 8i + 3.5), pixel centres being at integers: `cell_to_input` and `input_to_cell` are that convention, and
nothing else in the project spells it out. Encoding (the training targets, REFERENCE.md "Training targets"): a
Gaussian of sigma 7 input pixels per keypoint evaluated at the cell centres, cut where its exponent exceeds 4.6052
(value < 0.01), the max over people (clipped at 1); background = 1 - the max over keypoint channels; a limb's PAF is
its unit vector on the cells within `paf_thickness` cells of the segment, later people overwriting earlier ones.
Decoding: peaks and grouping at map resolution (lwpose/inference/grouping.py), then cells to input pixels. A round
trip gives the same people back (tests/test_codec.py).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from lwpose.constants import STRIDE
from lwpose.inference.grouping import GroupingParams, People, decode_people
from lwpose.keypoints import KeypointSet

GAUSSIAN_CUT = 4.6052  # exp(-4.6052) = 0.01
DEFAULT_SIGMA = 7.0
DEFAULT_PAF_THICKNESS = 1.0


@numba.njit(cache=True, nogil=True)
def cell_centre_offset(stride):
    """The input pixel at the centre of cell 0 of a map at `stride` (pixel centres at integers)."""
    return stride / 2.0 - 0.5


def cell_to_input(cells, stride: float = STRIDE):
    """Map-cell coordinates (cell centres at integers) to input-pixel coordinates."""
    return np.asarray(cells, np.float64) * stride + cell_centre_offset(float(stride))


def input_to_cell(pixels, stride: float = STRIDE):
    """Input-pixel coordinates to map-cell coordinates (the inverse of `cell_to_input`)."""
    return (np.asarray(pixels, np.float64) - cell_centre_offset(float(stride))) / stride


def input_to_cell_matrix(stride: float = STRIDE) -> np.ndarray:
    """The 2x3 affine matrix of `input_to_cell`, for warping whole images onto a map's grid."""
    offset = -cell_centre_offset(float(stride)) / stride
    return np.array([[1 / stride, 0, offset], [0, 1 / stride, offset]])


@numba.njit(cache=True, nogil=True)
def render_heatmaps(keypoints, stride, sigma, heatmaps):
    """keypoints (P, K, 3) float (x, y in input pixels, v > 0 where present); heatmaps (K + 1, H, W) float32,
    zeros on entry: keypoint channels get the max of the people's Gaussians, the last channel the background."""
    num_keypoints = heatmaps.shape[0] - 1
    height, width = heatmaps.shape[1], heatmaps.shape[2]
    offset = cell_centre_offset(stride)
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
    offset = cell_centre_offset(stride)
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


def encode(keypoints: np.ndarray, keypoint_set: KeypointSet, map_size: tuple[int, int], stride: int = STRIDE,
           sigma: float = DEFAULT_SIGMA, paf_thickness: float = DEFAULT_PAF_THICKNESS,
           out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (K + 1, h, w) and PAFs (2L, h, w) float32 for people (P, K, 3) in input-pixel coordinates (v > 0
    where a keypoint is present), written into `out` when given (e.g. rows of a batch)."""
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


def warm_up_encoder() -> None:
    """Compile the encoding kernels (or load them from numba's cache), e.g. before data workers fork, so that each
    does not compile them again."""
    keypoints = np.zeros((1, 2, 3))
    keypoints[0, :, 2] = 1
    keypoints[0, 1, :2] = 8
    heatmaps = np.zeros((3, 2, 2), np.float32)
    render_heatmaps(keypoints, 8.0, 7.0, heatmaps)
    pafs = np.zeros((2, 2, 2), np.float32)
    render_pafs(keypoints, np.array([[0, 1]], np.int32), np.array([[0, 1]], np.int32), 8.0, 1.0, pafs)


def decode(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet, params: GroupingParams,
           heatmap_scale: int = 1, map_upsample: int = 1, stride: int = STRIDE) -> People:
    """People in input-pixel coordinates from one image's maps at `stride / map_upsample` (`heatmaps` possibly
    upsampled `heatmap_scale` times more than the PAFs: grouping.decode_people). Missing keypoints stay at -1."""
    people = decode_people(heatmaps, pafs, keypoint_set, params, heatmap_scale)
    keypoints = people.keypoints.copy()
    present = keypoints[..., 2] > 0
    cell_stride = stride / map_upsample
    keypoints[..., :2] = np.where(present[..., None], cell_to_input(keypoints[..., :2], cell_stride), -1)
    return people.with_keypoints(keypoints)

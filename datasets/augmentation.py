"""Training augmentation: scale, rotation, crop/pad and flip as one affine map, plus colour jitter.

The defaults are the reference's (REFERENCE.md, "Augmentation"): the main person's box height becomes 0.6 of the
368 crop times a random 0.5-1.1, rotation uniform in +-40 degrees, crop centred on the person perturbed by up to
+-40 px, padding 128, horizontal flip with p=0.5. Geometry is one 2x3 matrix (pixel centres at integers), so the
image is warped once and keypoints are mapped exactly; a flip also swaps left and right keypoints through
KeypointSet.flip_permutation (PAF targets are recomputed from the swapped keypoints).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BGR_TO_GREY = np.array([0.114, 0.587, 0.299])  # ITU-R BT.601 luma weights in OpenCV's channel order


@dataclass(frozen=True)
class AugmentationConfig:
    input_size: int = 368  # square crop side, pixels
    person_height: float = 0.6  # main person's box height, as a share of the crop, before the random factor
    scale_min: float = 0.5
    scale_max: float = 1.1
    max_rotate_degree: float = 40.0
    center_perturb_max: float = 40.0  # pixels, in the crop
    flip_prob: float = 0.5
    pad_value: int = 128
    brightness: float = 20.0  # largest shift of pixel values
    contrast: float = 0.2  # factor drawn from [1 - contrast, 1 + contrast]
    saturation: float = 0.2  # factor drawn from [1 - saturation, 1 + saturation]
    colour_balance: float = 0.05  # per-channel gain drawn from [1 - colour_balance, 1 + colour_balance]

    def __post_init__(self):
        if self.input_size < 16 or self.input_size % 8:
            raise ValueError(f"input_size {self.input_size} must be a multiple of 8, at least 16")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale range [{self.scale_min}, {self.scale_max}] must be positive and ordered")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob {self.flip_prob} must be within [0, 1]")

    @classmethod
    def off(cls, input_size: int = 368) -> "AugmentationConfig":
        """Only the crop: person scaled to the reference height, centred, no randomness."""
        return cls(input_size=input_size, scale_min=1.0, scale_max=1.0, max_rotate_degree=0.0,
                   center_perturb_max=0.0, flip_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                   colour_balance=0.0)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the random choices, so a sample can be remade exactly (tests, the dataset browser)."""

    scale_multiplier: float = 1.0
    rotation_degrees: float = 0.0
    offset_x: float = 0.0
    offset_y: float = 0.0
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 1.0
    saturation: float = 1.0
    channel_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)


def sample_augment_params(rng: np.random.Generator, config: AugmentationConfig) -> AugmentParams:
    u = rng.random(10)

    def spread(value: float, amount: float) -> float:
        return float((2 * value - 1) * amount)

    return AugmentParams(
        scale_multiplier=float(config.scale_min + u[0] * (config.scale_max - config.scale_min)),
        rotation_degrees=spread(u[1], config.max_rotate_degree),
        offset_x=spread(u[2], config.center_perturb_max),
        offset_y=spread(u[3], config.center_perturb_max),
        flip=bool(u[4] < config.flip_prob),
        brightness=spread(u[5], config.brightness),
        contrast=1.0 + spread(u[6], config.contrast),
        saturation=1.0 + spread(u[7], config.saturation),
        channel_gains=tuple(1.0 + spread(v, config.colour_balance) for v in rng.random(3)),  # type: ignore
    )


def crop_scale(box_height: float, params: AugmentParams, config: AugmentationConfig) -> float:
    return config.person_height * config.input_size / max(float(box_height), 1.0) * params.scale_multiplier


def crop_matrix(center: tuple[float, float], box_height: float, params: AugmentParams,
                config: AugmentationConfig) -> np.ndarray:
    """(2, 3) float64: image pixel -> crop pixel (scale, rotate about the person's centre, shift the centre to the
    crop's centre plus the perturbation). The flip is separate (`flip_matrix`)."""
    scale = crop_scale(box_height, params, config)
    angle = math.radians(params.rotation_degrees)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    linear = np.array([[cos, sin], [-sin, cos]])
    middle = (config.input_size - 1) / 2
    translation = np.array([middle + params.offset_x, middle + params.offset_y]) - linear @ np.asarray(center)
    return np.hstack([linear, translation[:, None]])


def flip_matrix(size: int) -> np.ndarray:
    """(3, 3): mirror x within a crop of `size` pixels (pixel centres at integers)."""
    return np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Affine maps given as 2x3 (or 3x3) matrices: `outer` after `inner`, as a 2x3 matrix."""
    result = np.empty((2, 3))
    result[:, :2] = outer[:2, :2] @ inner[:2, :2]
    result[:, 2] = outer[:2, :2] @ inner[:2, 2] + outer[:2, 2]
    return result


def reduced_to_full(factor: float) -> np.ndarray:
    """(2, 3): pixel of an image decoded at 1/factor size -> pixel of the full image."""
    return np.array([[factor, 0.0, (factor - 1) / 2], [0.0, factor, (factor - 1) / 2]])


def transform_keypoints(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., K, 3) x, y, v through a 2x3 matrix; keypoints with v = 0 stay (0, 0, 0)."""
    out = np.array(keypoints, np.float64, copy=True)
    labelled = out[..., 2] > 0
    xy = out[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    out[..., :2] = np.where(labelled[..., None], xy, 0.0)
    return out


def flip_keypoints(keypoints: np.ndarray, size: int, flip_permutation: np.ndarray) -> np.ndarray:
    """Mirror (..., K, 3) keypoints in a crop of `size` pixels and swap left and right."""
    out = transform_keypoints(keypoints, flip_matrix(size)[:2])
    return out[..., flip_permutation, :]


def apply_colour_jitter(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Saturation (towards the pixel's grey), contrast about mid-grey, brightness and per-channel gain: all linear,
    so one 3x4 colour matrix applied in a single pass (saturating to 0..255)."""
    if params.contrast == 1.0 and params.brightness == 0.0 and params.channel_gains == (1.0, 1.0, 1.0) \
            and params.saturation == 1.0:
        return image
    towards_grey = (1.0 - params.saturation) * np.repeat(BGR_TO_GREY[None, :], 3, axis=0)
    gains = np.asarray(params.channel_gains, np.float64)[:, None]
    linear = gains * params.contrast * (params.saturation * np.eye(3) + towards_grey)
    offset = gains[:, 0] * (128.0 + params.brightness - 128.0 * params.contrast)
    return cv2.transform(image, np.hstack([linear, offset[:, None]]).astype(np.float32))

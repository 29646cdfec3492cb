"""The training dataset: prepared labels -> augmented crop, targets and loss masks, one sample at a time.

A sample is addressed by a key (index, draw): its random augmentation comes from a generator seeded with
(seed, draw, index), so the same key gives the same sample in any worker process, after a resume, and on any
number of GPUs. Samplers (datasets/loader.py) hand out keys.

Images: JPEG decoding dominates the cost of a sample, so a dataset whose decoded images fit the cache budget is
decoded once, up front, and shared with the worker processes (fork, copy on write); otherwise each sample decodes
its image, at 1/2 or 1/4 size (libjpeg's DCT scaling) when the crop shrinks it at least that much.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from lwpose.codec import DEFAULT_PAF_THICKNESS, DEFAULT_SIGMA, encode, input_to_cell_matrix
from lwpose.constants import STRIDE
from lwpose.datasets.augmentation import (AugmentationConfig, AugmentParams, apply_colour_jitter, compose, crop_matrix,
                                          crop_scale, flip_keypoints, flip_matrix, reduced_to_full,
                                          sample_augment_params, transform_keypoints)
from lwpose.datasets.class_labels import masks_background
from lwpose.datasets.prepared_labels import PreparedLabels
from lwpose.datasets.targets import (background_loss_map, channel_loss_masks, person_keypoint_weights,
                                     pseudo_label_weight_maps)
from lwpose.evaluation.coco import image_path
from lwpose.errors import SettingError
from lwpose.images import ImageReadError, read_image

IGNORE_MASK_REDUCTION = 4  # ignore regions are kept at 1/4 of the image size: the loss map is 1/8 anyway
CACHE_MODES = ("auto", "decoded", "none")
DEFAULT_MAX_BAD_IMAGE_SHARE = 0.05


@dataclass(frozen=True)
class TargetConfig:
    sigma: float = DEFAULT_SIGMA
    paf_thickness: float = DEFAULT_PAF_THICKNESS
    stride: int = STRIDE


class ImageStore:
    """Images of the prepared labels, decoded on demand or once into memory."""

    def __init__(self, paths: list[str], sizes: list[tuple[int, int]], cache: str = "auto",
                 cache_budget_mb: float = 2048, progress: bool = True):
        if cache not in CACHE_MODES:
            raise ValueError(f"image cache '{cache}' unknown (known: {', '.join(CACHE_MODES)})")
        self.paths = paths
        decoded_bytes = sum(h * w * 3 for h, w in sizes)
        self.cached = cache == "decoded" or (cache == "auto" and decoded_bytes <= cache_budget_mb * 2 ** 20)
        self.cache_megabytes = decoded_bytes / 2 ** 20 if self.cached else 0.0
        self._images: list[np.ndarray | None] = [None] * len(paths)
        self.bad: dict[int, str] = {}  # image index -> why it cannot be used (found so far, in this process)
        for i, path in enumerate(paths):  # cheap checks up front; decoding finds the rest
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                self.bad[i] = f"image {path} is missing or empty"
        if self.cached:
            for i in tqdm(range(len(paths)), desc="decoding images into memory", unit="img", disable=not progress,
                          dynamic_ncols=True, leave=False):
                if i not in self.bad:
                    try:
                        self._images[i] = read_image(paths[i])
                    except ImageReadError as e:
                        self.bad[i] = str(e)

    def load(self, index: int, scale: float) -> tuple[np.ndarray, int]:
        """The image and the reduction it was decoded at, for a crop that scales it by `scale`."""
        cached = self._images[index]
        if cached is not None:
            return cached, 1
        if index in self.bad:
            raise ImageReadError(self.bad[index])
        reduction = 4 if scale <= 0.25 else 2 if scale <= 0.5 else 1
        try:
            return read_image(self.paths[index], reduction), reduction
        except ImageReadError as e:
            self.bad[index] = str(e)
            raise


def ignore_fraction_map(ignore: list[dict], height: int, width: int) -> np.ndarray | None:
    """(ceil(h/4), ceil(w/4)) float32: share of each reduced pixel inside an ignore region, None if there is none."""
    if not ignore:
        return None
    from pycocotools import mask as mask_utils

    rles = [{"size": region["rle"]["size"], "counts": region["rle"]["counts"].encode("ascii")} for region in ignore]
    full = mask_utils.decode(mask_utils.merge(rles, intersect=False)).astype(np.float32)
    reduced_size = (-(-width // IGNORE_MASK_REDUCTION), -(-height // IGNORE_MASK_REDUCTION))
    return cv2.resize(full, reduced_size, interpolation=cv2.INTER_AREA)


class PoseTrainingDataset(Dataset):
    """Samples of prepared labels as dicts of numpy arrays:
    image (S, S, 3) uint8 BGR, heatmaps (K + 1, S/8, S/8), pafs (2L, S/8, S/8), mask (S/8, S/8) (0 in ignore
    regions), heatmap_channel_mask (K + 1,), paf_channel_mask (2L,), background_mask (S/8, S/8) (where the
    background keeps its weight for a source with unlabelled keypoints), source (index into the labels' sources);
    when a source has pseudo-labels, also heatmap_weights (K + 1, S/8, S/8) and paf_weights (2L, S/8, S/8): loss
    weights per channel and cell (datasets/targets.py, `pseudo_label_weight_maps`; ones for other sources).
    A dataset of another kind (e.g. several sources combined) fits the loader by offering the same
    `sample_layout()` and `sample_for_key(key, out)`."""

    def __init__(self, labels: PreparedLabels, images_folders: list[str | None] | None = None,
                 augmentation: AugmentationConfig = AugmentationConfig(), targets: TargetConfig = TargetConfig(),
                 seed: int = 0, image_cache: str = "auto", cache_budget_mb: float = 2048, progress: bool = True,
                 max_bad_image_share: float = DEFAULT_MAX_BAD_IMAGE_SHARE):
        self.labels = labels
        self.keypoint_set = labels.keypoint_set
        self.augmentation = augmentation
        self.targets = targets
        self.seed = seed
        if augmentation.input_size % targets.stride:
            raise ValueError(f"input size {augmentation.input_size} is not a multiple of the stride {targets.stride}")
        self.map_size = augmentation.input_size // targets.stride
        folders = list(images_folders) if images_folders else [None] * len(labels.sources)
        if len(folders) != len(labels.sources):
            raise ValueError(f"{len(folders)} image folders given for {len(labels.sources)} sources")
        folders = [f or s.images_folder for f, s in zip(folders, labels.sources)]
        for folder, source in zip(folders, labels.sources):
            if folder is None:
                raise SettingError(f"prepared labels {labels.path}: source '{source.name}' records no images "
                                   "folder; give it", settings=("train_images_folder",))
            if not os.path.isdir(folder):
                raise ValueError(f"images folder {folder} of source '{source.name}' does not exist")
        paths = [image_path(folders[im.source], im.file_name) for im in labels.images]
        self.images = ImageStore(paths, [(im.height, im.width) for im in labels.images], image_cache,
                                 cache_budget_mb, progress)
        self.max_bad_image_share = max_bad_image_share
        self._check_bad_images()
        self._ignore_maps: dict[int, np.ndarray | None] = {}
        if self.images.cached:
            for i, im in enumerate(labels.images):
                self._ignore_maps[i] = ignore_fraction_map(im.ignore, im.height, im.width)
        self._channel_masks = [channel_loss_masks(self.keypoint_set, s.labelled) for s in labels.sources]
        self._partially_labelled = [not s.labelled.all() for s in labels.sources]
        # A source that leaves a class unlabelled may show its instances anywhere: no background loss at all.
        self._background_unlabelled = [masks_background(self.keypoint_set, s.labelled) for s in labels.sources]
        # Per image of a source with pseudo-labels: each person's keypoint weights (1, pseudo_weight, 0).
        self._keypoint_weights = {i: person_keypoint_weights(labels.sources[im.source].labelled, im.pseudo,
                                                             labels.sources[im.source].pseudo_weight)
                                  for i, im in enumerate(labels.images)
                                  if labels.sources[im.source].pseudo_weight is not None}

    def __len__(self) -> int:
        return len(self.labels.samples)

    def __getitem__(self, key) -> dict:
        return self.sample_for_key(key)

    def _check_bad_images(self) -> None:
        """Warn about unusable images (their samples are replaced); stop when more than the allowed share is bad."""
        bad = self.images.bad
        if not bad:
            return
        share = len(bad) / len(self.labels.images)
        names = "; ".join(list(bad.values())[:5]) + (" ..." if len(bad) > 5 else "")
        if share > self.max_bad_image_share:
            raise ImageReadError(f"{len(bad)} of {len(self.labels.images)} training images cannot be used "
                                 f"({share:.1%}, more than the allowed {self.max_bad_image_share:.1%}): {names}",
                                 settings=("max_bad_image_share",))
        tqdm.write(f"warning: {len(bad)} of {len(self.labels.images)} training images cannot be used; their "
                   f"samples are replaced by others: {names}")

    def sample_for_key(self, key, out: dict | None = None) -> dict:
        index, draw = key if isinstance(key, (tuple, list)) else (key, 0)
        # A sample whose image turns out unusable is replaced by the next one, the same way in every process and
        # after a resume (the replacement's randomness comes from its own key).
        for offset in range(len(self)):
            candidate = (int(index) + offset) % len(self)
            if self.labels.samples[candidate][0] in self.images.bad:
                continue
            rng = np.random.default_rng((self.seed, int(draw), candidate))
            try:
                return self.make_sample(candidate, sample_augment_params(rng, self.augmentation), out)
            except ImageReadError as e:
                tqdm.write(f"warning: {e}; its samples are replaced by others ({len(self.images.bad)} unusable "
                           "images so far)")
                self._check_bad_images()
        raise ImageReadError(f"prepared labels {self.labels.path}: no training image can be used")

    def sample_layout(self) -> dict[str, tuple[tuple[int, ...], type]]:
        """Shape and dtype of each entry of a sample."""
        n, size = self.map_size, self.augmentation.input_size
        k = self.keypoint_set
        return {"image": ((size, size, 3), np.uint8), "heatmaps": ((k.num_heatmaps, n, n), np.float32),
                "pafs": ((k.num_pafs, n, n), np.float32), "mask": ((n, n), np.float32),
                "heatmap_channel_mask": ((k.num_heatmaps,), np.float32),
                "paf_channel_mask": ((k.num_pafs,), np.float32), "background_mask": ((n, n), np.float32),
                "source": ((), np.int64),
                **({"heatmap_weights": ((k.num_heatmaps, n, n), np.float32),
                    "paf_weights": ((k.num_pafs, n, n), np.float32)} if self._keypoint_weights else {})}

    def _ignore_map(self, image_index: int) -> np.ndarray | None:
        if image_index not in self._ignore_maps:
            if len(self._ignore_maps) > 4096:  # a per-worker cache for datasets too large to decode up front
                self._ignore_maps.clear()
            im = self.labels.images[image_index]
            self._ignore_maps[image_index] = ignore_fraction_map(im.ignore, im.height, im.width)
        return self._ignore_maps[image_index]

    def make_sample(self, index: int, params: AugmentParams, out: dict | None = None) -> dict:
        """The sample of `index` under `params`, written into `out` (arrays of `sample_layout`) when given."""
        if out is None:
            out = {name: np.empty(shape, dtype) for name, (shape, dtype) in self.sample_layout().items()}
        image_index, person_index = self.labels.samples[index]
        info = self.labels.images[image_index]
        h = info.bboxes[person_index][3]
        size = self.augmentation.input_size
        matrix = self.sample_crop_matrix(index, params)

        image, reduction = self.images.load(image_index, crop_scale(h, params, self.augmentation))
        image_matrix = compose(matrix, reduced_to_full(reduction))
        if params.flip:
            image_matrix = compose(flip_matrix(size), image_matrix)
        pad = float(self.augmentation.pad_value)
        warped = cv2.warpAffine(image, image_matrix, (size, size), dst=out["image"], flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(pad, pad, pad))
        jittered = apply_colour_jitter(warped, params)
        if jittered is not out["image"]:  # OpenCV writes in place when it can; copy when it could not
            out["image"][...] = jittered

        keypoints = self.crop_keypoints(index, params, matrix)
        encode(keypoints, self.keypoint_set, (self.map_size, self.map_size), self.targets.stride,
                     self.targets.sigma, self.targets.paf_thickness, out=(out["heatmaps"], out["pafs"]))
        out["mask"][...] = self._loss_weight_map(image_index, matrix, params.flip)
        out["heatmap_channel_mask"][...], out["paf_channel_mask"][...] = self._channel_masks[info.source]
        if self._background_unlabelled[info.source]:
            out["background_mask"][...] = 0.0
        elif self._partially_labelled[info.source]:
            crop = compose(flip_matrix(size), matrix) if params.flip else matrix
            out["background_mask"][...] = background_loss_map(info.bboxes, crop, self.map_size, self.targets.stride,
                                                              self.targets.sigma)
        else:
            out["background_mask"][...] = 1.0
        out["source"][...] = info.source
        if "heatmap_weights" in out:
            self._pseudo_label_weights(image_index, matrix, params.flip, out)
        return out

    def _pseudo_label_weights(self, image_index: int, matrix: np.ndarray, flip: bool, out: dict) -> None:
        """The per-channel, per-cell weights of a sample whose source has pseudo-labels (which then carry every
        weight but the ignore regions': its channel masks and background mask become ones); ones for the others."""
        weights = self._keypoint_weights.get(image_index)
        if weights is None:
            out["heatmap_weights"][...] = 1.0
            out["paf_weights"][...] = 1.0
            return
        info = self.labels.images[image_index]
        size = self.augmentation.input_size
        if flip:  # the sample's channel j is the image's keypoint flip_permutation[j]
            weights = weights[:, self.keypoint_set.flip_permutation]
            matrix = compose(flip_matrix(size), matrix)
        out["heatmap_weights"][...], out["paf_weights"][...] = pseudo_label_weight_maps(
            self.keypoint_set, weights, info.bboxes, info.keypoints, matrix, self.map_size, self.targets.stride,
            self.targets.sigma)
        out["heatmap_channel_mask"][...] = 1.0
        out["paf_channel_mask"][...] = 1.0
        out["background_mask"][...] = 1.0

    def sample_crop_matrix(self, index: int, params: AugmentParams) -> np.ndarray:
        """2x3 map from the image of sample `index` to its crop under `params`, before any flip."""
        image_index, person_index = self.labels.samples[index]
        x, y, w, h = self.labels.images[image_index].bboxes[person_index]
        center = (x + w / 2 - 0.5, y + h / 2 - 0.5)  # box in pixel edges, centre in pixel centres
        return crop_matrix(center, h, params, self.augmentation)

    def crop_keypoints(self, index: int, params: AugmentParams, matrix: np.ndarray | None = None) -> np.ndarray:
        """(P, K, 3) every person of sample `index`'s image in its crop, mirrored and left/right swapped when
        `params` flips: what the targets are made from. `matrix`: the sample's `sample_crop_matrix`, when the
        caller has it."""
        info = self.labels.images[self.labels.samples[index][0]]
        if matrix is None:
            matrix = self.sample_crop_matrix(index, params)
        keypoints = transform_keypoints(info.keypoints, matrix)
        if params.flip:
            keypoints = flip_keypoints(keypoints, self.augmentation.input_size, self.keypoint_set.flip_permutation)
        return keypoints

    def _loss_weight_map(self, image_index: int, matrix: np.ndarray, flip: bool) -> np.ndarray:
        """(S/8, S/8) float32: 1 - the share of each output cell inside an ignore region."""
        fraction = self._ignore_map(image_index)
        n = self.map_size
        if fraction is None:
            return np.ones((n, n), np.float32)
        info = self.labels.images[image_index]
        stride = self.targets.stride
        crop_to_map = input_to_cell_matrix(stride)
        sx, sy = info.width / fraction.shape[1], info.height / fraction.shape[0]
        reduced = np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2]])
        to_map = compose(crop_to_map, compose(matrix, reduced))
        warped = cv2.warpAffine(fraction, to_map, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0.0)
        if flip:  # flipping the small result keeps flipped and unflipped samples exact mirrors
            warped = warped[:, ::-1]
        return np.ascontiguousarray(1.0 - np.clip(warped, 0.0, 1.0), dtype=np.float32)

"""Image in, people out: resize and pad, run a backend, merge flips and scales, decode, map back to the image.

Two ways to decode:
- `decode_at="image"`: every map is resized to the full image (cubic) before peaks are taken; the reference's
  validation path, accurate but slow on large images.
- `decode_at="map"` (the video path): peaks are found on the stride-8 heatmaps and refined on their cubic
  interpolation around each peak only (what upsampling would give, without upsampling every channel), limbs are
  scored on the stride-8 PAFs read between cells (bilinear), and only the found coordinates are mapped to the
  image. It keeps the image path's COCO AP at a small fraction of the cost (README, "Demo and real-time").
  `upsample > 1` resizes the heatmaps (and with `upsample_pafs` the PAFs, the reference demo's way) first.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from lwpose import codec
from lwpose.constants import PIXEL_MEAN, PIXEL_SCALE, STRIDE
from lwpose.inference.grouping import GroupingParams, People, decode_people
from lwpose.keypoints import KeypointSet

Backend = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]

# Decoding at map resolution suppresses a peak within one stride-8 cell of a stronger one (after sub-pixel
# refinement, so two cells either side of one true peak collapse into one, and the stronger survives).
MAP_NMS_RADIUS_CELLS = 1.0


def map_grouping(upsample: int = 1) -> GroupingParams:
    """Grouping settings of the map-resolution path for heatmaps upsampled `upsample` times."""
    return GroupingParams(nms_radius=MAP_NMS_RADIUS_CELLS * upsample, refine_peaks=True,
                          refine_on_cubic=upsample == 1, bilinear_paf=True, nms_strongest_first=True)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 BGR (H, W, 3) -> float32 (H, W, 3) as the network was trained: (pixel - 128) / 256."""
    return (image.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE


@dataclass(frozen=True)
class InputTransform:
    """How an image became a network input: resized by `ratio` (x and y), then padded by `pad` (top, left,
    bottom, right) to `padded_size` (height, width)."""

    ratio: float
    pad: tuple[int, int, int, int]
    padded_size: tuple[int, int]
    image_size: tuple[int, int]  # height, width of the original image

    def input_to_image(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network-input pixel coordinates (pixel centres at integers) to original-image coordinates."""
        return (x - self.pad[1] + 0.5) / self.ratio - 0.5, (y - self.pad[0] + 0.5) / self.ratio - 0.5

    def image_to_input(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Original-image coordinates to network-input pixel coordinates (the inverse of `input_to_image`)."""
        return (x + 0.5) * self.ratio - 0.5 + self.pad[1], (y + 0.5) * self.ratio - 0.5 + self.pad[0]


def prepare_input(image: np.ndarray, height_size: int, scale: float = 1.0, stride: int = STRIDE,
                  interpolation: int = cv2.INTER_CUBIC, min_width: int | None = None
                  ) -> tuple[np.ndarray, InputTransform]:
    """Resize so the height is `height_size * scale` and pad (centred, with the normalised value 0) to a
    multiple of the stride, at least `height_size` wide unless `min_width` says otherwise.
    Returns the CHW float32 input and its transform."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
    height, width = image.shape[:2]
    ratio = scale * height_size / height
    resized = cv2.resize(normalize_image(image), (0, 0), fx=ratio, fy=ratio, interpolation=interpolation)
    target_h = math.ceil(max(height_size, resized.shape[0]) / stride) * stride
    min_w = height_size if min_width is None else min_width
    target_w = math.ceil(max(min_w, resized.shape[1]) / stride) * stride
    top = (target_h - resized.shape[0]) // 2
    left = (target_w - resized.shape[1]) // 2
    pad = (top, left, target_h - resized.shape[0] - top, target_w - resized.shape[1] - left)
    padded = cv2.copyMakeBorder(resized, pad[0], pad[2], pad[1], pad[3], cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return np.ascontiguousarray(padded.transpose(2, 0, 1)), InputTransform(ratio, pad, (target_h, target_w),
                                                                             (height, width))


def _resize_channels(maps: np.ndarray, size: tuple[int, int] | None = None, factor: float | None = None
                     ) -> np.ndarray:
    """Cubic resize of a (C, H, W) stack, returned as a (C, H, W) view of an (H, W, C) array."""
    return _resize_hwc(np.ascontiguousarray(maps.transpose(1, 2, 0)), size, factor).transpose(2, 0, 1)


OPENCV_MAX_CHANNELS = 512  # cv2.resize and cv2.remap take at most this many channels at once


def _by_channel_chunks(hwc: np.ndarray, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`function` (an OpenCV operation on an (H, W, C) stack) applied in chunks of channels OpenCV accepts, the
    results joined again into one (H', W', C) stack (OpenCV drops the channel axis of a one-channel result)."""
    def run(part: np.ndarray) -> np.ndarray:
        out = function(part)
        return out.reshape(out.shape[0], out.shape[1], -1)

    if hwc.shape[2] <= OPENCV_MAX_CHANNELS:
        return run(hwc)
    return np.concatenate([run(np.ascontiguousarray(hwc[:, :, start:start + OPENCV_MAX_CHANNELS]))
                           for start in range(0, hwc.shape[2], OPENCV_MAX_CHANNELS)], axis=2)


def _resize_hwc(hwc: np.ndarray, size: tuple[int, int] | None = None, factor: float | None = None) -> np.ndarray:
    """Cubic resize of an (H, W, C) stack (rows may be a crop of a larger array) to `size` or by `factor`."""
    if size is not None:
        return _by_channel_chunks(hwc, lambda part: cv2.resize(part, (size[1], size[0]),
                                                                interpolation=cv2.INTER_CUBIC))
    return _by_channel_chunks(hwc, lambda part: cv2.resize(part, (0, 0), fx=factor, fy=factor,
                                                            interpolation=cv2.INTER_CUBIC))


def unflip_maps(heatmaps: np.ndarray, pafs: np.ndarray, keypoint_set: KeypointSet
                ) -> tuple[np.ndarray, np.ndarray]:
    """Maps predicted for a horizontally flipped image, turned back into maps of the original image. The PAFs of a
    limb without a mirror limb (KeypointSet.unmirrored_limbs) cannot be told from a flipped image: they are zero."""
    heatmaps = heatmaps[..., ::-1][keypoint_set.heatmap_flip_channels]
    channels, signs, _ = keypoint_set.paf_flip_partial
    pafs = pafs[..., ::-1][channels] * signs[:, None, None]
    return np.ascontiguousarray(heatmaps), np.ascontiguousarray(pafs)


@dataclass
class PoseEstimator:
    """People in images, from a backend (any callable from a normalised NCHW batch to heatmaps and PAFs) and the
    keypoint set it predicts (default: the backend's own `keypoint_set`). `from_checkpoint` makes one from a model
    file. The defaults are the fast path the demo runs: input height 256, decoding at map resolution; the
    reference's validation is `height_size=368, decode_at="image"`."""

    backend: Backend
    keypoint_set: KeypointSet | None = None
    height_size: int = 256
    scales: Sequence[float] = (1.0,)
    flip: bool = False
    decode_at: str = "map"  # "map" (fast) or "image" (maps resized to the image first, the reference's val)
    upsample: int = 1  # with decode_at="map": factor the stride-8 heatmaps are upsampled by before peaks are taken
    upsample_pafs: bool = False  # with decode_at="map": upsample the PAFs too (the reference demo's way; slower)
    grouping: GroupingParams | None = None  # None: the reference's for "image", map_grouping(upsample) for "map"
    resize_interpolation: int = cv2.INTER_CUBIC

    def __post_init__(self):
        if self.keypoint_set is None:
            self.keypoint_set = getattr(self.backend, "keypoint_set", None)
            if self.keypoint_set is None:
                raise ValueError("the backend does not say which keypoint set it predicts: give keypoint_set")
        if self.decode_at not in ("image", "map"):
            raise ValueError("decode_at must be 'image' or 'map'")
        if self.upsample < 1:
            raise ValueError("upsample must be >= 1")
        if self.grouping is None:
            self.grouping = GroupingParams() if self.decode_at == "image" else map_grouping(self.upsample)

    @classmethod
    def from_checkpoint(cls, model: str, backend: str = "auto", device: str = "cpu",
                        keypoint_set: "KeypointSet | str | dict | None" = None, threads: int | None = None,
                        half: bool = False, channels_last: bool = False, compile: bool = False,
                        performance_hint: str = "THROUGHPUT", **settings) -> "PoseEstimator":
        """An estimator running `model`: an lwpose checkpoint (.pth), an ONNX export (.onnx) or an OpenVINO IR
        (.xml), on `backend` (default: the fastest installed for the device: OpenVINO, then ONNX Runtime, then
        PyTorch on a CPU). Exports carry their keypoint set; `keypoint_set` (a set, a shipped name or a JSON path)
        is needed only for a model that carries none. `settings` are the estimator's own (height_size, flip,
        scales, decode_at, ...). Running an export needs neither torch nor anything of the training side."""
        from lwpose.inference.backends import make_backend

        engine = make_backend(backend, model, device, keypoint_set=keypoint_set, half=half,
                              channels_last=channels_last, compile=compile, threads=threads,
                              performance_hint=performance_hint)
        return cls(engine, engine.keypoint_set, **settings)

    @property
    def flip_note(self) -> str:
        """What flipping cannot do for this keypoint set ('' when it flips everything), for users to read."""
        if not self.flip or self.keypoint_set.can_flip:
            return ""
        limbs = ", ".join("-".join(self.keypoint_set.limbs[i]) for i in self.keypoint_set.unmirrored_limbs)
        return (f"flip: limb(s) {limbs} of keypoint set '{self.keypoint_set.name}' have no mirror limb; their PAFs "
                "come from the unflipped image only (heatmaps and the other limbs average both)")

    def _paf_divisors(self, items: int) -> np.ndarray:
        """(num_pafs,): how many maps each PAF channel's sum holds, out of `items` (flips of unmirrored limbs add
        zeros, not maps)."""
        _, _, flippable = self.keypoint_set.paf_flip_partial
        unflipped = items // 2 if self.flip else items
        return np.where(flippable, items, unflipped).astype(np.float32)

    # ------------------------------------------------------------------ maps
    def _network_maps(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmaps, pafs = self.backend(inputs)
        return np.asarray(heatmaps, np.float32), np.asarray(pafs, np.float32)

    def _inputs_for(self, image: np.ndarray) -> list[tuple[np.ndarray, InputTransform, bool]]:
        """Every (input, transform, flipped) the settings ask for."""
        items = []
        for scale in self.scales:
            inp, transform = prepare_input(image, self.height_size, scale, interpolation=self.resize_interpolation)
            items.append((inp, transform, False))
            if self.flip:
                items.append((np.ascontiguousarray(inp[..., ::-1]), transform, True))
        return items

    def image_maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps and PAFs resized to the full image, averaged over scales and flips (the reference's val).
        The stacks stay (H, W, C), OpenCV's layout, until one copy turns the result into contiguous (C, H, W):
        at image size each copy costs more than the resizing."""
        height, width = image.shape[:2]
        heat_sum = paf_sum = None
        items = self._inputs_for(image)
        for inp, transform, flipped in items:
            heatmaps, pafs = self._network_maps(inp[None])
            heatmaps, pafs = heatmaps[0], pafs[0]
            if flipped:
                heatmaps, pafs = unflip_maps(heatmaps, pafs, self.keypoint_set)
            heatmaps, pafs = (self._to_image(m, transform, (height, width)) for m in (heatmaps, pafs))
            heat_sum = heatmaps if heat_sum is None else heat_sum + heatmaps
            paf_sum = pafs if paf_sum is None else paf_sum + pafs
        if len(items) > 1:
            heat_sum /= len(items)
            paf_sum /= self._paf_divisors(len(items))
        return (np.ascontiguousarray(heat_sum.transpose(2, 0, 1)), np.ascontiguousarray(paf_sum.transpose(2, 0, 1)))

    @staticmethod
    def _to_image(maps: np.ndarray, transform: InputTransform, image_size: tuple[int, int]) -> np.ndarray:
        """(C, h, w) network maps -> (H, W, C) at image size: upsampled by the stride, the padding cut off, then
        resized to the image (two steps, as the reference)."""
        up = _resize_hwc(np.ascontiguousarray(maps.transpose(1, 2, 0)), factor=STRIDE)
        top, left, bottom, right = transform.pad
        return _resize_hwc(up[top:up.shape[0] - bottom, left:up.shape[1] - right], size=image_size)

    # ------------------------------------------------------------------ people
    def __call__(self, image: np.ndarray) -> People:
        return self.estimate(image)

    def estimate(self, image: np.ndarray) -> People:
        """People in one BGR image, coordinates in image pixels (pixel centres at integers)."""
        if self.decode_at == "image":
            heatmaps, pafs = self.image_maps(image)
            return decode_people(heatmaps, pafs, self.keypoint_set, self.grouping)
        return self.estimate_batch([image])[0]

    def estimate_batch(self, images: Sequence[np.ndarray]) -> list[People]:
        """People in several images; same-sized images go through the backend as one batch (map decoding)."""
        if self.decode_at == "image":
            return [self.estimate(image) for image in images]
        results: list[People | None] = [None] * len(images)
        by_size: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape, []).append(i)
        for indices in by_size.values():
            for i, people in zip(indices, self._estimate_same_size([images[i] for i in indices])):
                results[i] = people
        return results  # type: ignore[return-value]

    def _estimate_same_size(self, images: list[np.ndarray]) -> list[People]:
        base_scale = self.scales[0]
        accum_heat = accum_paf = None
        base_transform = None
        count = 0
        for scale in self.scales:
            prepared = [prepare_input(img, self.height_size, scale, interpolation=self.resize_interpolation)
                        for img in images]
            transform = prepared[0][1]
            batch = np.stack([p[0] for p in prepared])
            heatmaps, pafs = self._network_maps(batch)
            pairs = [(heatmaps, pafs)]
            if self.flip:
                fh, fp = self._network_maps(np.ascontiguousarray(batch[..., ::-1]))
                unflipped = [unflip_maps(fh[i], fp[i], self.keypoint_set) for i in range(len(images))]
                pairs.append((np.stack([u[0] for u in unflipped]), np.stack([u[1] for u in unflipped])))
            for heat, paf in pairs:
                if base_transform is None:
                    base_transform = transform
                elif scale != base_scale:  # other scales are brought onto the first scale's map grid
                    heat = self._regrid(heat, transform, base_transform)
                    paf = self._regrid(paf, transform, base_transform)
                accum_heat = heat if accum_heat is None else accum_heat + heat
                accum_paf = paf if accum_paf is None else accum_paf + paf
                count += 1
        accum_heat /= count
        accum_paf /= self._paf_divisors(count)[None, :, None, None]
        return [self.decode_maps(accum_heat[i], accum_paf[i], base_transform) for i in range(len(images))]

    # ------------------------------------------------------- video (one scale)
    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, InputTransform]:
        """The network input (CHW) for one image at the first scale, without flip: what a video frame needs."""
        return prepare_input(image, self.height_size, self.scales[0], interpolation=self.resize_interpolation)

    def decode_maps(self, heatmaps: np.ndarray, pafs: np.ndarray, transform: InputTransform) -> People:
        """People from one image's stride-8 maps (C, h, w) made from an input with `transform`, in image pixels."""
        heatmaps = heatmaps[:self.keypoint_set.num_keypoints]  # the background channel is never decoded
        heatmap_scale, map_upsample = self.upsample, 1
        if self.upsample > 1:
            heatmaps = _resize_channels(heatmaps, factor=self.upsample)
            if self.upsample_pafs:
                pafs = _resize_channels(pafs, factor=self.upsample)
                heatmap_scale, map_upsample = 1, self.upsample
        people = codec.decode(heatmaps, pafs, self.keypoint_set, self.grouping, heatmap_scale, map_upsample)
        return self._to_image_coordinates(people, transform)

    def warm_up(self) -> float:
        """Compile (or load from numba's cache) every decoding kernel on tiny maps; returns the seconds it took,
        so timings that follow measure decoding alone."""
        start = time.perf_counter()
        k, size = self.keypoint_set.num_keypoints, 2 * self.keypoint_set.num_keypoints + 4
        heatmaps = np.zeros((k + 1, size, size), np.float32)
        pafs = np.zeros((self.keypoint_set.num_pafs, size, size), np.float32)
        for i in range(k):  # a diagonal of peaks, every limb's field pointing along it: one person to group
            heatmaps[i, 2 * i + 2, 2 * i + 2] = 1.0
        pafs[:] = np.sqrt(0.5)
        transform = InputTransform(1.0, (0, 0, 0, 0), (size * STRIDE, size * STRIDE), (size * STRIDE, size * STRIDE))
        self.decode_maps(heatmaps, pafs, transform)
        return time.perf_counter() - start

    @staticmethod
    def _to_image_coordinates(people: People, transform: InputTransform) -> People:
        """People in input pixels -> the same people in the pixels of the image the input was made from."""
        keypoints = people.keypoints.copy()
        present = keypoints[..., 2] > 0
        x_img, y_img = transform.input_to_image(keypoints[..., 0], keypoints[..., 1])
        keypoints[..., 0] = np.where(present, x_img, -1)
        keypoints[..., 1] = np.where(present, y_img, -1)
        return people.with_keypoints(keypoints)

    @staticmethod
    def _regrid(maps: np.ndarray, source: InputTransform, target: InputTransform) -> np.ndarray:
        """Resample (N, C, h, w) stride-8 maps of one input transform onto the map grid of another."""
        out = []
        th, tw = target.padded_size[0] // STRIDE, target.padded_size[1] // STRIDE
        # target map cell centre -> target input pixel -> image pixel -> source input pixel -> source map cell
        ty, tx = np.mgrid[0:th, 0:tw].astype(np.float32)
        img_x, img_y = target.input_to_image(codec.cell_to_input(tx), codec.cell_to_input(ty))
        src_x, src_y = source.image_to_input(img_x, img_y)
        map_x = codec.input_to_cell(src_x).astype(np.float32)
        map_y = codec.input_to_cell(src_y).astype(np.float32)
        for sample in maps:
            hwc = np.ascontiguousarray(sample.transpose(1, 2, 0))
            out.append(_by_channel_chunks(hwc, lambda part: cv2.remap(part, map_x, map_y, cv2.INTER_LINEAR,
                                                                      borderMode=cv2.BORDER_CONSTANT))
                       .transpose(2, 0, 1))
        return np.stack(out)

"""Reading MPII annotations in the list format (mmpose's and HRNet's `mpii_*.json`) into the COCO reader's records.

Each entry is one person: `{"image": name, "joints": [[x, y] x 16], "joints_vis": [0/1 x 16], "center": [x, y],
"scale": s}`. What this format leaves out, and how it is filled:
- Coordinates are MATLAB's, 1-based (pixel centres at 1, 2, ...): x_lwpose = x - 1.
- `joints_vis` 1 means labelled; it does not say whether the joint is occluded, so a labelled joint gets v = 2.
  `joints_vis` 0 (coordinates -1) is not labelled: v = 0.
- There are no boxes. A person's box is the tight box of its labelled joints (MPII's joints include the head top
  and the ankles, so it spans the person as COCO's boxes do), widened by `JOINT_BOX_MARGIN` of its size on each side;
  a person with fewer than two labelled joints takes the square of side `scale * 200` (MPII's person height)
  around `center`. Its area is the box's.
- Image sizes are not in the file: they are read from the images' headers (JPEG, PNG; other files are decoded).
People of an image not annotated in the file are not known here; they are trained as background, as MPII is.
"""
from __future__ import annotations

import math
import os
import struct

import numpy as np
from tqdm import tqdm

from lwpose.datasets.coco_reader import AnnotationError, CocoImage, CocoKeypointFile, CocoPerson, read_annotation_json
from lwpose.evaluation.coco import GroundTruthError, image_path
from lwpose.images import ImageReadError
from lwpose.keypoints import KeypointSet

MPII_PIXEL_OFFSET = 1.0  # MATLAB indexing: the first pixel's centre is at 1
MPII_PERSON_HEIGHT = 200.0  # pixels per unit of `scale`
JOINT_BOX_MARGIN = 0.1
ENTRY_KEYS = ("image", "joints", "joints_vis")


def image_size(path: str) -> tuple[int, int] | None:
    """(height, width) from a JPEG's or PNG's header without decoding it; None when the file is neither."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        if head[:2] != b"\xff\xd8":
            return None
        f.seek(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            while marker[1] == 0xFF:  # fill bytes before a marker
                marker = marker[1:] + f.read(1)
            length_bytes = f.read(2)
            if len(length_bytes) < 2:
                return None
            length = struct.unpack(">H", length_bytes)[0]
            # Start-of-frame markers (baseline, progressive, ...) hold the size; C4, C8 and CC are not frames.
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                frame = f.read(5)
                if len(frame) < 5:
                    return None
                height, width = struct.unpack(">HH", frame[1:5])
                return height, width
            f.seek(length - 2, os.SEEK_CUR)


def _read_size(path: str) -> tuple[int, int]:
    size = image_size(path)
    if size is None or 0 in size:
        from lwpose.images import read_image

        size = read_image(path).shape[:2]
    return int(size[0]), int(size[1])


def _finite_numbers(values, count: int | None = None) -> bool:
    return isinstance(values, list) and (count is None or len(values) == count) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def person_box(keypoints: np.ndarray, center, scale) -> tuple[float, float, float, float]:
    """COCO-style [x, y, w, h] (pixel edges at integers) of a person in lwpose coordinates (module docstring)."""
    labelled = keypoints[keypoints[:, 2] > 0, :2]
    if len(labelled) >= 2:
        low, high = labelled.min(0) + 0.5, labelled.max(0) + 0.5
        margin = JOINT_BOX_MARGIN * (high - low)
        low, high = low - margin, high + margin
    else:
        side = scale * MPII_PERSON_HEIGHT
        middle = np.asarray(center, np.float64) - MPII_PIXEL_OFFSET + 0.5
        low, high = middle - side / 2, middle + side / 2
    return float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])


def read_mpii_keypoints(path: str, keypoint_set: KeypointSet, images_folder: str, progress: bool = False
                        ) -> tuple[CocoKeypointFile, list[str]]:
    """The file's people grouped by image, as the COCO reader's records, and the names of images missing from
    `images_folder` (their people are left out). An AnnotationError names the file and the entry."""
    data = read_annotation_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected MPII's list format (a JSON list of {{image, joints, joints_vis, "
                              f"center, scale}}), got a JSON {type(data).__name__}"
                              + (" (a COCO file? declare its format 'coco')" if isinstance(data, dict) else ""))
    count = keypoint_set.num_keypoints
    images: dict[str, CocoImage] = {}
    missing: list[str] = []
    for i, entry in enumerate(tqdm(data, desc="reading MPII entries", unit="person", disable=not progress,
                                   leave=False, dynamic_ncols=True)):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict) or any(k not in entry for k in ENTRY_KEYS):
            raise AnnotationError(f"{where}: needs {', '.join(ENTRY_KEYS)}")
        name = entry["image"]
        where = f"{where} (image {name})"
        joints, visible = entry["joints"], entry["joints_vis"]
        if not isinstance(joints, list) or len(joints) != count or not _finite_numbers(visible, len(joints)):
            got = len(joints) if isinstance(joints, list) else type(joints).__name__
            raise AnnotationError(f"{where}: has {got} joints, keypoint set '{keypoint_set.name}' has {count} "
                                  "(and 'joints_vis' needs one 0/1 per joint)")
        if not all(_finite_numbers(j, 2) for j in joints):
            raise AnnotationError(f"{where}: every joint must be [x, y] of finite numbers")
        if any(v not in (0, 1) for v in visible):
            raise AnnotationError(f"{where}: 'joints_vis' holds {sorted(set(visible) - {0, 1})}; expected 0 or 1")
        center, scale = entry.get("center", [-1, -1]), entry.get("scale", 0)
        if not _finite_numbers(center, 2) or not _finite_numbers([scale]) or scale < 0:
            raise AnnotationError(f"{where}: 'center' must be [x, y] and 'scale' a non-negative number")
        if not isinstance(name, str):
            raise AnnotationError(f"{where}: 'image' must be a file name")
        try:
            full_path = image_path(images_folder, name)
        except GroundTruthError as e:
            raise AnnotationError(f"{where}: {e}") from None
        if name not in images:
            if not os.path.isfile(full_path):
                if name not in missing:
                    missing.append(name)
                continue
            try:
                height, width = _read_size(full_path)
            except ImageReadError as e:  # its size is needed here, before training could skip it
                raise AnnotationError(f"{where}: {e}") from None
            images[name] = CocoImage(name, name, width, height)
        keypoints = np.zeros((count, 3))
        labelled = np.asarray(visible) > 0
        keypoints[labelled, :2] = np.asarray(joints, np.float64)[labelled] - MPII_PIXEL_OFFSET
        keypoints[labelled, 2] = 2
        box = person_box(keypoints, center, scale)
        images[name].people.append(CocoPerson(i, keypoints, box, box[2] * box[3], False))
    return CocoKeypointFile(path, keypoint_set, list(images.values())), missing

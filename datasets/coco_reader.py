"""Reading a COCO-format keypoint file into plain records, checked against the file's keypoint set.

Every problem is an AnnotationError naming the file and the annotation id (or image index) and what is wrong.
Coordinates are converted once, here: COCO puts pixel edges at integers, lwpose puts pixel centres at integers
(x_lwpose = x_coco - 0.5), so everything downstream shares the estimator's convention.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from lwpose.errors import LwposeError
from lwpose.evaluation.coco import COCO_COORDINATE_OFFSET, GroundTruthError, image_path
from lwpose.files import read_json
from lwpose.keypoints import KeypointSet, find_shipped_set_for_names, load_keypoint_set, shipped_set_names
from lwpose.labels.filled_file import PseudoLabelError, read_header, read_scores

# OpenCV refuses to decode larger images (CV_IO_MAX_IMAGE_PIXELS), and an ignore mask of a larger declared size
# would take gigabytes.
MAX_IMAGE_PIXELS = 2 ** 30


class AnnotationError(LwposeError, ValueError):
    """An annotation file that cannot be used; the message names the file and the entry."""


@dataclass
class CocoPerson:
    annotation_id: object
    keypoints: np.ndarray  # (K, 3) float64 in the source set: x, y (pixel centres at integers), visibility 0/1/2
    bbox: tuple[float, float, float, float]  # x, y, width, height as in the file (pixel edges at integers)
    area: float
    iscrowd: bool
    segmentation: object = None  # as in the file (polygons, RLE with compressed or uncompressed counts) or None
    pseudo: np.ndarray | None = None  # (K,) bool in a filled file (lwpose/labels/filled_file.py): pseudo-labels

    @property
    def num_labelled(self) -> int:
        """Keypoints the source labels for this person (pseudo-labels not counted)."""
        present = self.keypoints[:, 2] > 0
        return int(np.count_nonzero(present if self.pseudo is None else present & ~self.pseudo))


@dataclass
class CocoImage:
    image_id: object
    file_name: str
    width: int
    height: int
    people: list[CocoPerson] = field(default_factory=list)


@dataclass
class CocoKeypointFile:
    path: str
    keypoint_set: KeypointSet  # the set the file is labelled in
    images: list[CocoImage]
    # A filled file's keypoints its source labels (K,) bool (the rest: pseudo-labels or unlabelled); None otherwise.
    labelled: np.ndarray | None = None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value) -> bool:
    """COCO ids are numbers or strings; anything else (a list, null) cannot be looked up."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def detect_source_set(path: str, category_names: list[str] | None, target: KeypointSet,
                      source: str | KeypointSet | None = None) -> KeypointSet:
    """The keypoint set a file is labelled in: the one named, else the target set when the file's names spell it,
    else the shipped set they spell, else (no names in the file) the target set."""
    if source is not None:
        return load_keypoint_set(source)
    if not category_names or target.matches_names(category_names):
        return target
    shipped = find_shipped_set_for_names(category_names)
    if shipped is None:
        raise AnnotationError(
            f"{path}: the category's {len(category_names)} keypoint names ({', '.join(map(str, category_names))}) "
            f"match neither keypoint set '{target.name}' nor a shipped set; "
            f"{closest_set_difference(category_names, target)}; name the file's set (a shipped name or a JSON file)",
            settings=("source_keypoints",))
    return shipped


def closest_set_difference(names: list, target: KeypointSet) -> str:
    """Which of `names` keeps them from spelling the set closest to them (the target or a shipped set, the most
    names in the right place), in words."""
    candidates = [target] + [load_keypoint_set(n) for n in shipped_set_names() if n != target.name]

    def agreement(keypoint_set: KeypointSet) -> int:
        return sum(1 for i, name in enumerate(names[:keypoint_set.num_keypoints]) if keypoint_set.find(str(name)) == i)

    closest = max(candidates, key=lambda ks: (agreement(ks), -abs(ks.num_keypoints - len(names))))
    return f"closest is '{closest.name}', which differs: {_name_mismatch(closest, names, every=True)}"


def _name_mismatch(keypoint_set: KeypointSet, names: list, every: bool = False) -> str:
    """How a file's keypoint names differ from the set's: the count, or the first name in a wrong place (`every`:
    all of them, and the count)."""
    problems = []
    if len(names) != keypoint_set.num_keypoints:
        problems.append(f"lists {len(names)} keypoint names, keypoint set '{keypoint_set.name}' has "
                        f"{keypoint_set.num_keypoints}")
        if not every:
            return problems[0]
    for i, name in enumerate(names[:keypoint_set.num_keypoints]):
        if keypoint_set.find(str(name)) != i:
            problems.append(f"lists keypoint {i} as '{name}', keypoint set '{keypoint_set.name}' has "
                            f"'{keypoint_set.keypoints[i]}' there")
            if not every:
                break
    extra = [str(n) for n in names[keypoint_set.num_keypoints:]]
    if every and extra:
        problems.append(f"the file has more: {', '.join(extra)}")
    return "; ".join(problems)


def read_annotation_json(path: str):
    return read_json(path, "annotation file", AnnotationError)


def read_coco_keypoints(path: str, target: KeypointSet, source: str | KeypointSet | None = None,
                        data: object = None) -> CocoKeypointFile:
    """Read and check a COCO keypoint file. `target` is the set the labels will be converted to (used to detect
    the file's own set when `source` is not given). `data`: the file's content when the caller has read it already
    (errors still name `path`)."""
    if data is None:
        data = read_annotation_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories', got a "
                              f"JSON {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{path}: '{key}' is missing or not a list; not COCO format")

    categories = {}
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise AnnotationError(f"{path}: categories[{i}] needs an 'id' (a number or a string)")
        names = category.get("keypoints")
        if isinstance(names, list) and not all(isinstance(name, str) for name in names):
            raise AnnotationError(f"{path}: categories[{i}]: 'keypoints' must be a list of names (strings)")
        categories[category["id"]] = category
    named = [c for c in data["categories"] if isinstance(c.get("keypoints"), list)]
    keypoint_set = detect_source_set(path, named[0]["keypoints"] if named else None, target, source)
    mismatch_of_category = {cid: _name_mismatch(keypoint_set, c["keypoints"])
                            for cid, c in categories.items() if isinstance(c.get("keypoints"), list)}
    try:
        file_labelled = read_header(data, path, keypoint_set)
    except PseudoLabelError as e:
        raise AnnotationError(str(e)) from None

    images: dict = {}
    for i, info in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(info, dict) or not _is_id(info.get("id")) or not isinstance(info.get("file_name"), str):
            raise AnnotationError(f"{where} needs 'id' (a number or a string) and 'file_name'")
        if info["id"] in images:
            raise AnnotationError(f"{where} repeats image id {info['id']!r}")
        width, height = info.get("width"), info.get("height")
        if not (_finite(width) and _finite(height) and width > 0 and height > 0):
            raise AnnotationError(f"{where} (id {info['id']!r}): 'width' and 'height' must be positive numbers")
        if width * height > MAX_IMAGE_PIXELS:
            raise AnnotationError(f"{where} (id {info['id']!r}): {width:g} x {height:g} pixels is more than an image "
                                  f"can have here ({MAX_IMAGE_PIXELS} pixels, OpenCV's limit)")
        try:
            image_path(".", info["file_name"])
        except GroundTruthError as e:
            raise AnnotationError(f"{where} (id {info['id']!r}): {e}") from None
        images[info["id"]] = CocoImage(info["id"], info["file_name"], int(width), int(height))

    count = keypoint_set.num_keypoints
    seen_ids = set()
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        where = f"{path}: annotation {ann_id}"
        if not isinstance(ann, dict):
            raise AnnotationError(f"{where}: not an object")
        if not _is_id(ann.get("id")) or ann["id"] in seen_ids:
            raise AnnotationError(f"{where} (annotations[{i}]): missing, repeated or malformed annotation id")
        seen_ids.add(ann["id"])
        image = images.get(ann.get("image_id")) if _is_id(ann.get("image_id")) else None
        if image is None:
            raise AnnotationError(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
        if not _is_id(ann.get("category_id")) or ann["category_id"] not in categories:
            raise AnnotationError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories")
        mismatch = mismatch_of_category.get(ann["category_id"])
        if mismatch:
            raise AnnotationError(f"{where}: its category '{categories[ann['category_id']].get('name')}' {mismatch}")
        iscrowd = bool(ann.get("iscrowd", 0))
        keypoints = _read_keypoints(ann.get("keypoints"), count, keypoint_set, where, required=not iscrowd)
        bbox = _read_bbox(ann, keypoints, where)
        area = ann.get("area")
        if not _finite(area) or area < 0:
            area = bbox[2] * bbox[3]  # AIC and CrowdPose carry no area
        segmentation = ann.get("segmentation") or None
        pseudo = None if file_labelled is None else _read_pseudo(ann, keypoints, file_labelled, keypoint_set, where)
        image.people.append(CocoPerson(ann["id"], keypoints, bbox, float(area), iscrowd, segmentation, pseudo))
    return CocoKeypointFile(path, keypoint_set, list(images.values()), file_labelled)


def _read_pseudo(ann: dict, keypoints: np.ndarray, labelled: np.ndarray, keypoint_set: KeypointSet,
                 where: str) -> np.ndarray:
    """(K,) bool pseudo-labels of an annotation of a filled file; every keypoint the source does not label is either
    a pseudo-label (present) or unlabelled (v = 0)."""
    try:
        pseudo = read_scores(ann, len(keypoints), labelled, where) > 0
    except PseudoLabelError as e:
        raise AnnotationError(str(e)) from None
    present = keypoints[:, 2] > 0
    for j in np.flatnonzero(pseudo != (present & ~labelled)):
        state = "is marked as a pseudo-label but has v=0" if pseudo[j] else \
            "is not labelled by the source nor a pseudo-label, yet has v > 0"
        raise AnnotationError(f"{where}: keypoint {j} ('{keypoint_set.keypoints[j]}') {state}")
    return pseudo


def _read_keypoints(values, count: int, keypoint_set: KeypointSet, where: str, required: bool) -> np.ndarray:
    if values is None and not required:
        return np.zeros((count, 3))
    if not isinstance(values, list) or len(values) != 3 * count:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise AnnotationError(f"{where}: 'keypoints' must hold {3 * count} numbers ({count} keypoints of set "
                              f"'{keypoint_set.name}' x (x, y, v)), got {got}")
    if not all(_finite(v) for v in values):
        raise AnnotationError(f"{where}: 'keypoints' holds a value that is not a finite number")
    keypoints = np.asarray(values, np.float64).reshape(count, 3)
    visibility = keypoints[:, 2]
    bad = np.flatnonzero(~np.isin(visibility, (0.0, 1.0, 2.0)))  # Animal-Pose writes 2.0: fine; 1.5 is not
    if len(bad):
        j = int(bad[0])
        raise AnnotationError(f"{where}: keypoint {j} ('{keypoint_set.keypoints[j]}') has visibility "
                              f"{visibility[j]:g}; expected 0 (not labelled), 1 (occluded) or 2 (visible)")
    labelled = visibility > 0
    keypoints[labelled, :2] -= COCO_COORDINATE_OFFSET
    keypoints[~labelled, :2] = 0
    return keypoints


def _read_bbox(ann: dict, keypoints: np.ndarray, where: str) -> tuple[float, float, float, float]:
    bbox = ann.get("bbox")
    if bbox is None:
        labelled = keypoints[keypoints[:, 2] > 0]
        if not len(labelled):
            raise AnnotationError(f"{where}: no 'bbox' and no labelled keypoint to derive one from")
        low, high = labelled[:, :2].min(0) + COCO_COORDINATE_OFFSET, labelled[:, :2].max(0) + COCO_COORDINATE_OFFSET
        return float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
            and bbox[2] >= 0 and bbox[3] >= 0):
        raise AnnotationError(f"{where}: 'bbox' must be [x, y, width, height] with finite, non-negative size, "
                              f"got {bbox!r}")
    return tuple(float(v) for v in bbox)  # type: ignore[return-value]


def find_missing_images(coco: CocoKeypointFile, images_folder: str) -> list[str]:
    """File names of the images that are not in `images_folder`."""
    missing = []
    for image in coco.images:
        try:  # the names were checked when read; a symbolic link in the folder can still lead out of it
            full_path = image_path(images_folder, image.file_name)
        except GroundTruthError as e:
            raise AnnotationError(f"{coco.path}: image id {image.image_id!r}: {e}") from None
        if not os.path.isfile(full_path):
            missing.append(image.file_name)
    return missing


def as_coco_ground_truth(coco: CocoKeypointFile, category_name: str = "person") -> dict:
    """The records as a COCO keypoint file (pixel edges at integers again, integer image ids), e.g. to score MPII's
    list format with pycocotools."""
    images, annotations = [], []
    for image_id, image in enumerate(coco.images, start=1):
        images.append({"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for person in image.people:
            keypoints = person.keypoints.copy()
            labelled = keypoints[:, 2] > 0
            keypoints[labelled, :2] += COCO_COORDINATE_OFFSET
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "keypoints": [round(float(v), 2) for v in keypoints.ravel()],
                                "num_keypoints": int(labelled.sum()), "bbox": [float(v) for v in person.bbox],
                                "area": float(person.area), "iscrowd": int(person.iscrowd),
                                "source_id": person.annotation_id})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": category_name, "keypoints": list(coco.keypoint_set.keypoints),
                            "skeleton": []}]}

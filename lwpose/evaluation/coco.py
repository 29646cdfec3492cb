"""COCO keypoint evaluation with pycocotools, for any keypoint set (its own OKS sigmas, name mapping)."""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lwpose.errors import LwposeError
from lwpose.files import read_json
from lwpose.inference.grouping import People
from lwpose.keypoints import KeypointSet, find_shipped_set_for_names, load_keypoint_set

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
AREA_METRIC_NAMES = ("APm", "APl", "ARm", "ARl")  # medium and large people only

# COCO writes keypoints with pixel edges at integers; our coordinates put pixel centres at integers.
COCO_COORDINATE_OFFSET = 0.5


class GroundTruthError(LwposeError, ValueError):
    """A ground-truth file that is not COCO keypoint format; the message names the file and the entry."""


@dataclass
class KeypointGroundTruth:
    path: str
    data: dict
    keypoint_set: KeypointSet
    category_id: int

    @property
    def images(self) -> list[dict]:
        return self.data["images"]

    @cached_property
    def _annotations_by_image(self) -> dict:
        by_image: dict = {}
        for ann in self.data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        return by_image

    def annotations_of(self, image_id) -> list[dict]:
        return self._annotations_by_image.get(image_id, [])


def _finite_number(value) -> bool:
    # Integers beyond 64 bits would make pycocotools' arrays of Python objects.
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and abs(value) < 2 ** 63)


def _is_id(value) -> bool:
    """COCO ids are numbers or strings; anything else (a list, null) cannot be looked up."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def load_keypoint_ground_truth(path: str, keypoint_set: str | KeypointSet | None = None,
                               fallback_set: KeypointSet | None = None) -> KeypointGroundTruth:
    """Read and check a COCO-format keypoint file; fill what pycocotools needs and some datasets omit
    (`area` from the box, `iscrowd` = 0). The keypoint set is `keypoint_set`, else the shipped set whose names the
    category lists, else `fallback_set` when its keypoint count fits."""
    return keypoint_ground_truth(read_ground_truth_json(path), path, keypoint_set, fallback_set)


def read_ground_truth_json(path: str):
    """The parsed JSON of a ground-truth file, or GroundTruthError naming the file."""
    return read_json(path, "ground truth", GroundTruthError)


def keypoint_ground_truth(data, path: str, keypoint_set: str | KeypointSet | None = None,
                          fallback_set: KeypointSet | None = None) -> KeypointGroundTruth:
    """Check COCO keypoint ground truth already in memory (`path` names it in messages) and fill it as
    `load_keypoint_ground_truth` does."""
    if not isinstance(data, dict):
        raise GroundTruthError(f"ground truth {path}: expected a COCO object with 'images', 'annotations' and "
                               f"'categories', got a JSON {type(data).__name__}"
                               + (" (an MPII-style list? use a mix recipe with format 'mpii')"
                                  if isinstance(data, list) else ""))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise GroundTruthError(f"ground truth {path}: '{key}' is missing or not a list; not COCO format")
    categories = [c for c in data["categories"] if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if not categories:
        raise GroundTruthError(f"ground truth {path}: no category lists 'keypoints'; not a COCO keypoint file")
    names = categories[0]["keypoints"]
    if not all(isinstance(name, str) for name in names):
        raise GroundTruthError(f"ground truth {path}: category '{categories[0].get('name')}': 'keypoints' must be a "
                               "list of names (strings)")

    if keypoint_set is not None:
        gt_set = load_keypoint_set(keypoint_set)
    else:
        gt_set = find_shipped_set_for_names(names)
        if gt_set is None and fallback_set is not None and len(names) == fallback_set.num_keypoints:
            gt_set = fallback_set
        if gt_set is None:
            raise GroundTruthError(f"ground truth {path}: its {len(names)} keypoint names match no shipped keypoint "
                                   "set; name the set of this file (e.g. my_set.json)", settings=("gt_keypoints",))
    if len(names) != gt_set.num_keypoints:
        raise GroundTruthError(f"ground truth {path}: category '{categories[0].get('name')}' lists {len(names)} "
                               f"keypoints, keypoint set '{gt_set.name}' has {gt_set.num_keypoints}")

    image_ids = set()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not _is_id(image.get("id")) or not isinstance(image.get("file_name"), str):
            raise GroundTruthError(f"ground truth {path}: images[{i}] needs 'id' (a number or a string) and "
                                   "'file_name'")
        if image["id"] in image_ids:
            raise GroundTruthError(f"ground truth {path}: images[{i}] repeats image id {image['id']}")
        try:
            image_path(".", image["file_name"])
        except GroundTruthError as e:
            raise GroundTruthError(f"ground truth {path}: images[{i}] (id {image['id']!r}): {e}") from None
        image_ids.add(image["id"])
    category_ids = {c.get("id") for c in data["categories"] if isinstance(c, dict) and _is_id(c.get("id"))}
    annotation_ids = set()
    expected_len = 3 * gt_set.num_keypoints
    for i, ann in enumerate(data["annotations"]):
        where = f"ground truth {path}: annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'} (#{i})"
        if not isinstance(ann, dict):
            raise GroundTruthError(f"{where}: not an object")
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise GroundTruthError(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
        if not _is_id(ann.get("id")) or ann["id"] in annotation_ids:
            raise GroundTruthError(f"{where}: missing, repeated or malformed annotation id")
        annotation_ids.add(ann["id"])
        if not _is_id(ann.get("category_id")) or ann["category_id"] not in category_ids:
            raise GroundTruthError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories")
        ann.setdefault("iscrowd", 0)
        if ann["iscrowd"] not in (0, 1):
            raise GroundTruthError(f"{where}: 'iscrowd' is {ann['iscrowd']!r}; expected 0 or 1")
        if ann["iscrowd"] and "keypoints" not in ann:
            ann["keypoints"] = [0] * expected_len  # a crowd region has no keypoints; pycocotools still reads them
        keypoints = ann.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) != expected_len:
            raise GroundTruthError(f"{where}: 'keypoints' must hold {expected_len} numbers "
                                   f"({gt_set.num_keypoints} x (x, y, v)), got "
                                   f"{len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__}")
        if not all(_finite_number(v) for v in keypoints):
            raise GroundTruthError(f"{where}: 'keypoints' holds a value that is not a finite number")
        if not _finite_number(ann.get("num_keypoints")):
            ann["num_keypoints"] = int(sum(1 for v in keypoints[2::3] if v > 0))
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            raise GroundTruthError(f"{where}: 'bbox' must be [x, y, width, height] with finite, non-negative size")
        if not _finite_number(ann.get("area")):
            ann["area"] = float(bbox[2] * bbox[3])
    return KeypointGroundTruth(path, data, gt_set, categories[0]["id"])


def ground_truth_in_set(gt: KeypointGroundTruth, keypoint_set: KeypointSet) -> KeypointGroundTruth:
    """The ground truth with every person's keypoints converted into `keypoint_set` (by name, the sets' aliases and
    `keypoint_set`'s derived keypoints, as training labels are), scored with its sigmas. A keypoint the ground truth
    does not define is unlabelled (v=0), which OKS leaves out; a person left with none is ignored by pycocotools."""
    from lwpose.datasets.conversion import KeypointConversion

    conversion = KeypointConversion.by_name(gt.keypoint_set, keypoint_set)
    data = dict(gt.data)
    data["categories"] = [dict(c, keypoints=list(keypoint_set.keypoints), skeleton=[])
                          if c.get("id") == gt.category_id else c for c in gt.data["categories"]]
    annotations = []
    for ann in gt.data["annotations"]:
        keypoints = conversion.convert(np.asarray(ann["keypoints"], np.float64).reshape(-1, 3))
        annotations.append(dict(ann, keypoints=[float(v) for v in keypoints.ravel()],
                                num_keypoints=int(np.count_nonzero(keypoints[:, 2] > 0))))
    data["annotations"] = annotations
    return KeypointGroundTruth(f"{gt.path} (in keypoint set '{keypoint_set.name}')", data, keypoint_set,
                               gt.category_id)


def people_to_coco_results(people: People, image_id, model_set: KeypointSet, gt_set: KeypointSet,
                           category_id: int = 1, mapping: np.ndarray | None = None) -> list[dict]:
    """COCO result entries for one image, keypoints rearranged from the model's set into the ground truth's by
    name (keypoints the ground truth lacks, such as lwop18's neck, are dropped), or by `mapping`: for each ground
    truth keypoint, the model keypoint it is (-1: none)."""
    mapping = model_set.indices_in(gt_set) if mapping is None else mapping
    results = []
    for p in range(len(people)):
        keypoints = np.zeros((gt_set.num_keypoints, 3), np.float64)
        for j, src in enumerate(mapping):
            if src >= 0 and people.keypoints[p, src, 2] > 0:
                keypoints[j, 0] = people.keypoints[p, src, 0] + COCO_COORDINATE_OFFSET
                keypoints[j, 1] = people.keypoints[p, src, 1] + COCO_COORDINATE_OFFSET
                keypoints[j, 2] = 1
        if keypoints[:, 2].sum() == 0:
            continue
        results.append({"image_id": image_id, "category_id": category_id,
                        "keypoints": [round(float(v), 2) for v in keypoints.ravel()],
                        "score": float(people.scores[p])})
    return results


def evaluate_keypoints(gt: KeypointGroundTruth, results: list[dict], image_ids=None) -> dict:
    """pycocotools keypoint evaluation with the ground-truth set's sigmas; returns METRIC_NAMES -> value."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt.data
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = gt.keypoint_set.sigmas_array
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator.summarize()
    # pycocotools says -1 for an area range without ground truth: None there (not 0, which reads as "all missed").
    metrics = {name: None if v < 0 and name in AREA_METRIC_NAMES else float(max(0.0, v))
               for name, v in zip(METRIC_NAMES, evaluator.stats)}
    metrics["summary"] = summary.getvalue()
    return metrics


def format_metric(value: float | None) -> str:
    """A metric for one line of text: 'n/a' where the ground truth has no one it could measure."""
    return "n/a" if value is None else f"{value:.3f}"


def image_path(images_folder: str, file_name: str) -> str:
    """The path of an image named by an annotation file; names that would leave the folder are refused."""
    root = os.path.realpath(images_folder)
    if os.path.isabs(file_name):
        raise GroundTruthError(f"image file_name '{file_name}' is an absolute path; names must be relative to the "
                               "images folder")
    full = os.path.realpath(os.path.join(root, file_name))
    if os.path.commonpath([root, full]) != root:
        raise GroundTruthError(f"image file_name '{file_name}' points outside the images folder {images_folder}")
    return full

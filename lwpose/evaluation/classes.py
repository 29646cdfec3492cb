"""A multi-class model scored per class: each class against its own category of the ground truth, with its own
keypoints and OKS sigmas (pycocotools per category), from one pass of the estimator over the images."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lwpose.evaluation.coco import (METRIC_NAMES, GroundTruthError, KeypointGroundTruth, evaluate_keypoints,
                                    keypoint_ground_truth, people_to_coco_results,
                                    read_ground_truth_json)
from lwpose.evaluation.validation import estimate_images
from lwpose.inference.estimator import PoseEstimator
from lwpose.inference.grouping import People
from lwpose.keypoints import KeypointSet


@dataclass
class ClassGroundTruth:
    """One class of the model and its category of the ground truth: `mapping` gives, for each ground-truth
    keypoint, the model's channel it is scored with (-1: none)."""

    name: str
    class_index: int
    gt: KeypointGroundTruth
    mapping: np.ndarray


@dataclass
class ClassReport:
    rows: list[dict]  # one per class: class, keypoint_set, images, instances, the METRIC_NAMES, detections
    detections: list[dict]  # COCO results of every class, each with its class's category_id
    unreadable: list[str]
    num_images: int
    seconds: float
    unscored: list[str]  # classes of the model without a category in the ground truth

    def to_json(self) -> dict:
        return {"classes": {row["class"]: row for row in self.rows}, "num_images": self.num_images,
                "num_detections": len(self.detections), "unreadable_files": self.unreadable,
                "unscored_classes": self.unscored, "seconds": round(self.seconds, 2)}


def load_class_ground_truths(path: str, model_set: KeypointSet,
                             category_classes: dict[str, str] | None = None) -> tuple[list[ClassGroundTruth], list]:
    """Each category of a COCO keypoint file as the ground truth of a class of the multi-class `model_set` (by
    category name = class name, by its keypoint names, or `category_classes` {category: class}; several categories
    of one class are scored together);
    returns them and the classes no category stands for."""
    from lwpose.datasets.class_labels import categories_by_class, category_class_map

    data = read_ground_truth_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) \
            or not isinstance(data.get("annotations"), list):
        raise GroundTruthError(f"ground truth {path}: expected a COCO object with 'images', 'annotations' and "
                               "'categories'")
    category_of = category_class_map(path, data["categories"], model_set, category_classes)
    out = []
    for class_index, class_categories in categories_by_class(data["categories"], category_of).items():
        subject = model_set.classes[class_index]
        category = class_categories[0]
        ids = {c["id"] for c in class_categories}
        # One class's categories (AP-10K's species) list the same keypoints: scored together as the first one.
        part = {**data, "categories": [category],
                "annotations": [{**a, "category_id": category["id"]} for a in data["annotations"]
                                if isinstance(a, dict) and a.get("category_id") in ids]}
        own = subject.keypoint_set.matches_names(category["keypoints"])
        try:
            gt = keypoint_ground_truth(part, path, subject.keypoint_set if own else None,
                                       fallback_set=subject.keypoint_set)
        except GroundTruthError as e:
            raise GroundTruthError(f"{e} (category '{category.get('name')}', class '{subject.name}')") from None
        in_class = subject.keypoint_set.indices_in(gt.keypoint_set)
        mapping = np.where(in_class >= 0, subject.channels[np.maximum(in_class, 0)], -1)
        out.append(ClassGroundTruth(subject.name, subject.index, gt, mapping))
    scored = {c.class_index for c in out}
    return out, [c.name for c in model_set.classes if c.index not in scored]


def validate_classes(estimator: PoseEstimator, truths: list[ClassGroundTruth], images_folder: str,
                     unscored: list[str] = (), progress: bool = True,
                     max_images: int | None = None) -> ClassReport:
    """COCO AP of each class on its own category, the images decoded once."""
    start = time.perf_counter()
    images = truths[0].gt.images[:max_images] if max_images else truths[0].gt.images
    detections: dict[int, list[dict]] = {t.class_index: [] for t in truths}
    unreadable = []
    for info, people in estimate_images(estimator, images, images_folder, unreadable, progress):
        found = class_results(people, info["id"], estimator.keypoint_set, truths)
        for class_index, results in found.items():
            detections[class_index] += results
    return score_classes(truths, images, detections, unreadable, time.perf_counter() - start, unscored)


def class_results(people: People, image_id, model_set: KeypointSet, truths: list[ClassGroundTruth]) -> dict:
    """{class index: COCO results}: each class's instances of one image in its category's keypoints."""
    out = {}
    for truth in truths:
        own = people.select(np.flatnonzero(people.class_ids == truth.class_index))
        out[truth.class_index] = people_to_coco_results(own, image_id, model_set, truth.gt.keypoint_set,
                                                        truth.gt.category_id, truth.mapping)
    return out


def score_classes(truths: list[ClassGroundTruth], images: list[dict], detections: dict, unreadable: list[str] = (),
                  seconds: float = 0.0, unscored: list[str] = ()) -> ClassReport:
    """Each class's detections ({class index: COCO results}) scored on its own category with its own sigmas."""
    image_ids = [info["id"] for info in images]
    rows = []
    for truth in truths:
        metrics = evaluate_keypoints(truth.gt, detections[truth.class_index], image_ids=image_ids)
        instances = sum(1 for a in truth.gt.data["annotations"] if not a["iscrowd"] and a.get("num_keypoints", 0) > 0
                        and a["image_id"] in set(image_ids))
        rows.append({"class": truth.name, "keypoint_set": truth.gt.keypoint_set.name,
                     "category_id": truth.gt.category_id, "images": len(images), "instances": instances,
                     **{name: metrics[name] for name in METRIC_NAMES},
                     "num_detections": len(detections[truth.class_index])})
    every = [d for truth in truths for d in detections[truth.class_index]]
    return ClassReport(rows, every, list(unreadable), len(images), seconds, list(unscored))


def format_class_table(rows: list[dict]) -> str:
    """One row per class: its keypoints, instances, AP, AP50, AP75, AR."""
    columns = ("AP", "AP50", "AP75", "AR")
    header = ["class", "keypoints", "instances", *columns]
    lines = [[row["class"], row["keypoint_set"], str(row["instances"]),
              *("-" if row[c] is None else f"{row[c]:.3f}" for c in columns)] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def join(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([join(header), *(join(line) for line in lines)])

"""Run an estimator over a COCO-format ground truth and score it (used by val.py and by training)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from lwpose.coco_eval import (KeypointGroundTruth, evaluate_keypoints, image_path,
                              people_to_coco_results)
from lwpose.estimator import PoseEstimator
from lwpose.images import ImageReadError, read_image


@dataclass
class ValidationReport:
    metrics: dict
    detections: list[dict]
    unreadable: list[str] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        out = {k: v for k, v in self.metrics.items() if k != "summary"}
        out.update({"num_images": self.num_images, "num_detections": len(self.detections),
                    "unreadable_images": len(self.unreadable), "unreadable_files": self.unreadable,
                    "seconds": round(self.seconds, 2)})
        return out


def validate_coco(estimator: PoseEstimator, gt: KeypointGroundTruth, images_folder: str, progress: bool = True,
                  max_images: int | None = None) -> ValidationReport:
    images = gt.images[:max_images] if max_images else gt.images
    detections: list[dict] = []
    unreadable: list[str] = []
    evaluated_ids = []
    start = time.perf_counter()
    for image_info in tqdm(images, desc="validating", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            image = read_image(image_path(images_folder, image_info["file_name"]))
        except ImageReadError as e:
            unreadable.append(image_info["file_name"])
            tqdm.write(f"warning: {e}; counted as unreadable")
            continue
        people = estimator.estimate(image)
        detections.extend(people_to_coco_results(people, image_info["id"], estimator.keypoint_set,
                                                 gt.keypoint_set, gt.category_id))
        evaluated_ids.append(image_info["id"])
    # Unreadable images stay in the evaluation (their people count as missed), so a bad file cannot raise AP.
    image_ids = [im["id"] for im in images]
    metrics = evaluate_keypoints(gt, detections, image_ids=image_ids)
    return ValidationReport(metrics, detections, unreadable, len(images), time.perf_counter() - start)


def write_json(obj, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)

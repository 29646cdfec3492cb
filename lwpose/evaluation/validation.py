"""Run an estimator over a COCO-format ground truth and score it (used by val.py and by training)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from lwpose.evaluation.coco import KeypointGroundTruth, evaluate_keypoints, image_path, people_to_coco_results
from lwpose.evaluation.pck import PckCounts, add_image
from lwpose.images import ImageReadError, read_image
from lwpose.inference.estimator import PoseEstimator


@dataclass
class ValidationReport:
    metrics: dict
    detections: list[dict]
    unreadable: list[str] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    images_per_process: list[int] | None = None  # a sharded validation's share of each process

    def to_json(self) -> dict:
        out = {k: v for k, v in self.metrics.items() if k != "summary"}
        out.update({"num_images": self.num_images, "num_detections": len(self.detections),
                    "unreadable_images": len(self.unreadable), "unreadable_files": self.unreadable,
                    "seconds": round(self.seconds, 2)})
        return out


@dataclass
class ImageDetections:
    """What the estimator found on some of the images (one process's share): COCO results in image order, the files
    it could not read, and how many images it was given."""

    detections: list[dict]
    unreadable: list[str]
    num_images: int


def selected_images(gt: KeypointGroundTruth, max_images: int | None = None) -> list[dict]:
    return gt.images[:max_images] if max_images else gt.images


def estimate_images(estimator: PoseEstimator, images: list[dict], images_folder: str, unreadable: list[str],
                    progress: bool = True):
    """(image entry, People) for each of `images` (COCO image entries) that can be read; the file names of those
    that cannot are appended to `unreadable`, each with a warning (they count as missed, never as skipped)."""
    for image_info in tqdm(images, desc="validating", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            image = read_image(image_path(images_folder, image_info["file_name"]))
        except ImageReadError as e:
            unreadable.append(image_info["file_name"])
            tqdm.write(f"warning: {e}; counted as unreadable")
            continue
        yield image_info, estimator.estimate(image)


def detect_images(estimator: PoseEstimator, gt: KeypointGroundTruth, images_folder: str, images: list[dict],
                  mapping: np.ndarray | None = None, progress: bool = True,
                  class_index: int | None = None) -> ImageDetections:
    """Run the estimator over `images` (entries of gt.images). `mapping`: for each ground-truth keypoint, the model
    keypoint it is scored with (-1: none; default by name). `class_index`: a multi-class model's instances of that
    class only."""
    if mapping is None:
        mapping = estimator.keypoint_set.indices_in(gt.keypoint_set)
    detections: list[dict] = []
    unreadable: list[str] = []
    for image_info, people in estimate_images(estimator, images, images_folder, unreadable, progress):
        if class_index is not None:
            people = people.select(np.flatnonzero(people.class_ids == class_index))
        detections.extend(people_to_coco_results(people, image_info["id"], estimator.keypoint_set, gt.keypoint_set,
                                                 gt.category_id, mapping))
    return ImageDetections(detections, unreadable, len(images))


def score_detections(gt: KeypointGroundTruth, images: list[dict], found: ImageDetections,
                     evaluated_keypoints: np.ndarray | None = None, seconds: float = 0.0,
                     images_per_process: list[int] | None = None) -> ValidationReport:
    """COCO AP over `images` (and, given `evaluated_keypoints`, the ground-truth keypoints the model predicts: PCK
    and PCKh) of the detections found on them. Unreadable images stay in the evaluation (their people count as
    missed), so a bad file cannot raise AP."""
    image_ids = [im["id"] for im in images]
    metrics = evaluate_keypoints(gt, found.detections, image_ids=image_ids)
    if evaluated_keypoints is not None:
        pck_counts = PckCounts(gt.keypoint_set.keypoints)
        by_image: dict = {}
        for detection in found.detections:
            by_image.setdefault(detection["image_id"], []).append(detection)
        for image_id in image_ids:
            _add_pck(pck_counts, gt, image_id, by_image.get(image_id, []), evaluated_keypoints)
        metrics.update(pck_counts.metrics())
    return ValidationReport(metrics, found.detections, found.unreadable, len(images), seconds, images_per_process)


def validate_coco(estimator: PoseEstimator, gt: KeypointGroundTruth, images_folder: str, progress: bool = True,
                  max_images: int | None = None, mapping: np.ndarray | None = None,
                  pck: bool = False) -> ValidationReport:
    """COCO AP (and with `pck`, PCK and PCKh: lwpose/evaluation/pck.py) of the estimator on the ground truth.
    `mapping`: for each ground-truth keypoint, the model keypoint it is scored with (-1: none; default by name)."""
    return validate_coco_sharded(estimator, gt, images_folder, 0, 1, lambda value: [value], progress, max_images,
                                 mapping, pck)


def validate_coco_sharded(estimator: PoseEstimator, gt: KeypointGroundTruth, images_folder: str, rank: int,
                          world_size: int, gather: Callable[[ImageDetections], list | None], progress: bool = False,
                          max_images: int | None = None, mapping: np.ndarray | None = None,
                          pck: bool = False, class_index: int | None = None) -> ValidationReport | None:
    """validate_coco split over `world_size` processes: this one (`rank`) decodes every world_size-th image from its
    rank on, `gather` brings every rank's ImageDetections to rank 0 (in rank order; None on the others), and rank 0
    scores them in the images' own order, so the metrics and the detections are those of one process doing it all.
    `class_index`: a multi-class model's instances of that class only. Returns the report on rank 0, None elsewhere."""
    start = time.perf_counter()
    images = selected_images(gt, max_images)
    if mapping is None:
        mapping = estimator.keypoint_set.indices_in(gt.keypoint_set)
    found = detect_images(estimator, gt, images_folder, images[rank::world_size], mapping, progress, class_index)
    parts = gather(found)
    if parts is None:
        return None
    position = {im["id"]: i for i, im in enumerate(images)}
    detections = sorted((d for part in parts for d in part.detections), key=lambda d: position[d["image_id"]])
    order = {im["file_name"]: i for i, im in enumerate(images)}
    unreadable = sorted((name for part in parts for name in part.unreadable), key=lambda name: order.get(name, 0))
    merged = ImageDetections(detections, unreadable, len(images))
    return score_detections(gt, images, merged, mapping >= 0 if pck else None, time.perf_counter() - start,
                            [part.num_images for part in parts])


def _add_pck(counts: PckCounts, gt: KeypointGroundTruth, image_id, detections: list[dict],
             evaluated: np.ndarray) -> None:
    people = [a for a in gt.annotations_of(image_id) if not a["iscrowd"]]
    count = gt.keypoint_set.num_keypoints
    truth = np.asarray([a["keypoints"] for a in people], np.float64).reshape(-1, count, 3)
    predicted = np.asarray([d["keypoints"] for d in detections], np.float64).reshape(-1, count, 3)
    head = gt.keypoint_set.head_size_keypoints
    add_image(counts, truth, np.asarray([a["bbox"] for a in people], np.float64).reshape(-1, 4),
              np.asarray([a["area"] for a in people], np.float64), predicted, gt.keypoint_set.sigmas_array,
              evaluated, tuple(gt.keypoint_set.index[n] for n in head) if head else None)


def write_json(obj, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


# ------------------------------------------------------------ several datasets
TABLE_METRICS = ("AP", "PCK@0.05", "PCK@0.1", "PCKh@0.5")


def dataset_row(name: str, gt: KeypointGroundTruth, report: ValidationReport) -> dict:
    """One dataset's line of the table: its metrics, with the people it has as the weight of the mean."""
    people = sum(1 for a in gt.data["annotations"] if not a["iscrowd"] and a.get("num_keypoints", 0) > 0)
    row = {"dataset": name, "keypoint_set": gt.keypoint_set.name, "images": report.num_images, "people": people}
    row.update({k: v for k, v in report.metrics.items() if k != "summary"})
    row.update({"num_detections": len(report.detections), "unreadable_images": len(report.unreadable),
                "seconds": round(report.seconds, 2)})
    return row


def weighted_mean(rows: list[dict], keypoints: tuple[str, ...] = ()) -> dict:
    """Each metric averaged over the datasets that have it, weighted by their people."""
    mean = {"dataset": "weighted mean (by people)", "people": sum(r["people"] for r in rows)}
    for metric in TABLE_METRICS:
        having = [r for r in rows if r.get(metric) is not None]
        weight = sum(r["people"] for r in having)
        mean[metric] = sum(r[metric] * r["people"] for r in having) / weight if weight else None
    for name in keypoints:
        having = [(r["per_keypoint"][name]["PCK@0.1"], r["per_keypoint"][name]["PCK@0.1 count"]) for r in rows
                  if "PCK@0.1" in r.get("per_keypoint", {}).get(name, {})]
        count = sum(n for _, n in having)
        mean[f"PCK@0.1 {name}"] = sum(v * n for v, n in having) / count if count else None
    return mean


def format_dataset_table(rows: list[dict], mean: dict, keypoints: tuple[str, ...] = ()) -> str:
    """The per-dataset table val.py --mix prints: a row per dataset, then the weighted mean; '-' where a metric does
    not apply (PCKh needs the set's head_size_keypoints). `keypoints` adds a PCK@0.1 column for each of them."""
    extra = [f"PCK@0.1 {name}" for name in keypoints]
    header = ["dataset", "keypoints", "images", "people", *TABLE_METRICS, *extra]

    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = []
    for row in rows + [mean]:
        per_keypoint = row.get("per_keypoint", {})
        values = [row["dataset"], row.get("keypoint_set", ""), row.get("images", ""), row["people"]]
        values += [row.get(m) for m in TABLE_METRICS]
        values += [row.get(f"PCK@0.1 {n}", per_keypoint.get(n, {}).get("PCK@0.1")) for n in keypoints]
        lines.append([cell(v) for v in values])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for n, line in enumerate(lines):
        if n == len(lines) - 1:
            out.append("-" * len(out[0]))
        out.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))))
    return "\n".join(out)

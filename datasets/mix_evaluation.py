"""Validating on every dataset of a mix recipe, each on its own keypoints: what `val.py --mix` prints after training
and `train.py --val-mix` logs during it (one row per dataset: COCO OKS AP with the set's sigmas, PCK, and PCKh where
the set has head-size keypoints; then their mean weighted by people). Under torchrun every process decodes its share
of each dataset's images and rank 0 scores them (lwpose/evaluation/validation.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lwpose.datasets.mix_recipe import MixRecipe, evaluation_ground_truth, output_keypoint_indices
from lwpose.evaluation.best_metric import flatten_mix_metrics
from lwpose.evaluation.coco import METRIC_NAMES, KeypointGroundTruth, keypoint_ground_truth
from lwpose.evaluation.pck import PCK_THRESHOLDS, PCKH_THRESHOLD
from lwpose.evaluation.validation import (TABLE_METRICS, ValidationReport, dataset_row, validate_coco_sharded,
                                          weighted_mean)
from lwpose.inference.estimator import PoseEstimator
from lwpose.keypoints import KeypointSet


@dataclass
class EvaluationSet:
    """One dataset of a recipe as it is scored: its ground truth in its own keypoint set, its images, and for each
    of its keypoints the model keypoint scored against it (-1: none)."""

    name: str
    gt: KeypointGroundTruth
    images_folder: str
    mapping: np.ndarray
    class_index: int | None = None  # a multi-class model: only this class's instances are scored

    @property
    def unscored(self) -> list[str]:
        return [n for n, i in zip(self.gt.keypoint_set.keypoints, self.mapping) if i < 0]

    @property
    def metric_names(self) -> tuple[str, ...]:
        pck = tuple(f"PCK@{t:g}" for t in PCK_THRESHOLDS)
        head = (f"PCKh@{PCKH_THRESHOLD:g}",) if self.gt.keypoint_set.head_size_keypoints else ()
        return METRIC_NAMES + pck + head


def evaluation_sets(recipe: MixRecipe, model_set: KeypointSet) -> list[EvaluationSet]:
    """Every source of the recipe, ready to be scored (its validation labels where it names them); for a multi-class
    model, each class a source has a category for, on that class's instances only."""
    sets = []
    for source in recipe.sources:
        if model_set.num_classes > 1 and source.format == "coco":
            sets += class_evaluation_sets(source, recipe, model_set)
            continue
        data, images_folder = evaluation_ground_truth(source, recipe)
        gt = keypoint_ground_truth(data, source.val_labels or source.labels, source.keypoint_set)
        sets.append(EvaluationSet(source.name, gt, images_folder, output_keypoint_indices(source, model_set, recipe)))
    return sets


def class_evaluation_sets(source, recipe: MixRecipe, model_set: KeypointSet) -> list[EvaluationSet]:
    """A COCO source scored by a multi-class model: one set per class it has a category for, named after the source
    (`source-class` where it has several), each category in its class's own keypoints and sigmas."""
    from lwpose.datasets.coco_reader import AnnotationError
    from lwpose.evaluation.classes import load_class_ground_truths

    labels = source.val_labels or source.labels
    try:
        truths, _ = load_class_ground_truths(labels, model_set, source.category_classes)
    except AnnotationError as e:
        raise recipe.fail(source.entry, str(e)) from None
    images_folder = source.val_images_folder or source.images_folder
    return [EvaluationSet(source.name if len(truths) == 1 else f"{source.name}-{truth.name}", truth.gt,
                          images_folder, truth.mapping, truth.class_index) for truth in truths]


def mix_metric_names(sets: list[EvaluationSet]) -> list[str]:
    """The names a validation of these datasets reports: `dataset/metric` and `mean/metric`."""
    names = [f"{s.name}/{metric}" for s in sets for metric in s.metric_names]
    means = [m for m in TABLE_METRICS if any(m in s.metric_names for s in sets)]
    return names + [f"mean/{m}" for m in means]


@dataclass
class MixValidation:
    rows: list[dict]
    mean: dict
    reports: list[ValidationReport]

    @property
    def flat(self) -> dict:
        """Every metric by its name (`coco/AP`, `mean/PCK@0.1`, ...)."""
        names = tuple(dict.fromkeys(m for row in self.rows for m in METRIC_NAMES + TABLE_METRICS if m in row))
        return flatten_mix_metrics(self.rows, self.mean, names)


def validate_mix(estimator: PoseEstimator, sets: list[EvaluationSet], rank: int = 0, world_size: int = 1,
                 gather: Callable = lambda value: [value], progress: bool = True, max_images: int | None = None,
                 keypoints: tuple[str, ...] = ()) -> MixValidation | None:
    """Each dataset scored on its own keypoints (PCK counted too), their rows and weighted mean (`keypoints` adds
    their PCK@0.1 to it); the result on rank 0, None on the other processes."""
    rows, reports = [], []
    for evaluation in sets:
        report = validate_coco_sharded(estimator, evaluation.gt, evaluation.images_folder, rank, world_size, gather,
                                       progress, max_images, evaluation.mapping, pck=True,
                                       class_index=evaluation.class_index)
        if report is not None:
            rows.append(dataset_row(evaluation.name, evaluation.gt, report))
            reports.append(report)
    if rank != 0:
        return None
    return MixValidation(rows, weighted_mean(rows, keypoints), reports)

"""Validation during training, through the same estimator and scoring as val.py: on one COCO-format ground truth
(`--val-labels`), or on every dataset of a mix recipe, each on its own keypoints (`--val-mix`). Under torchrun every
process decodes its share of the images and rank 0 scores them all. A validator reports its metrics by name (the
names `--save-best` takes), with a line or a table for the log."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lwpose.keypoints import KeypointSet

if TYPE_CHECKING:
    from lwpose.modules.pose_network import PoseNetwork
    from lwpose.training.setup import ProcessGroup


def _estimator(network: "PoseNetwork", keypoint_set: KeypointSet, device: torch.device, height_size: int,
               decode_at: str):
    from lwpose.inference.estimator import PoseEstimator
    from lwpose.inference.torch_backend import TorchBackend

    return PoseEstimator(TorchBackend(network, device), keypoint_set, height_size=height_size, decode_at=decode_at)


def _shares(processes: "ProcessGroup | None"):
    """(rank, world size, gather) of this process's part in a sharded validation."""
    if processes is None:
        return 0, 1, lambda value: [value]
    return processes.rank, processes.world_size, processes.gather_to_main


class _NoCudnnSearch:
    """Every validation image has its own width: cuDNN's autotuning would search kernels for each of them."""

    def __enter__(self):
        self.benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False

    def __exit__(self, *exc):
        torch.backends.cudnn.benchmark = self.benchmark


class Validator:
    """COCO AP (and PCK) of the network on one ground-truth file."""

    default_metric = "AP"

    def __init__(self, labels: str, images_folder: str, height_size: int = 368, max_images: int | None = None,
                 decode_at: str = "image"):
        from lwpose.evaluation.coco import load_keypoint_ground_truth

        self.labels = labels
        self.images_folder = images_folder
        self.height_size = height_size
        self.max_images = max_images
        self.decode_at = decode_at
        self._ground_truth = load_keypoint_ground_truth(labels)

    @property
    def metric_names(self) -> list[str]:
        from lwpose.evaluation.coco import METRIC_NAMES
        from lwpose.evaluation.pck import PCK_THRESHOLDS

        return [*METRIC_NAMES, *(f"PCK@{t:g}" for t in PCK_THRESHOLDS)]

    def __call__(self, network: "PoseNetwork", keypoint_set: KeypointSet, device: torch.device,
                 processes: "ProcessGroup | None" = None) -> dict | None:
        """The metrics by name, with 'images_per_process' and 'summary' (a line for the log); on rank 0 only (None on
        the other processes)."""
        from lwpose.evaluation.validation import validate_coco_sharded

        rank, world_size, gather = _shares(processes)
        estimator = _estimator(network, keypoint_set, device, self.height_size, self.decode_at)
        with _NoCudnnSearch():
            report = validate_coco_sharded(estimator, self._ground_truth, self.images_folder, rank, world_size,
                                           gather, max_images=self.max_images, pck=True)
        if report is None:
            return None
        metrics = {k: v for k, v in report.metrics.items() if k not in ("summary", "per_keypoint")}
        shares = report.images_per_process or []
        metrics["images_per_process"] = shares
        metrics["summary"] = (f"val AP {metrics['AP']:.4f} (AP50 {metrics['AP50']:.3f}, AR {metrics['AR']:.3f}; "
                              f"{sum(shares)} images"
                              + (f" over {len(shares)} processes: {' + '.join(map(str, shares))}"
                                 if len(shares) > 1 else "") + ")")
        return metrics


class MixValidator:
    """Every dataset of a mix recipe scored on its own keypoints, as val.py --mix scores them: metrics named
    `dataset/metric` and `mean/metric` (the weighted mean by people)."""

    default_metric = "mean/AP"

    def __init__(self, recipe_path: str, model_set: KeypointSet, height_size: int = 368,
                 max_images: int | None = None, decode_at: str = "image"):
        from lwpose.datasets.mix_evaluation import evaluation_sets
        from lwpose.datasets.mix_recipe import load_mix_recipe

        self.recipe_path = recipe_path
        self.height_size = height_size
        self.max_images = max_images
        self.decode_at = decode_at
        self.sets = evaluation_sets(load_mix_recipe(recipe_path), model_set)

    @property
    def metric_names(self) -> list[str]:
        from lwpose.datasets.mix_evaluation import mix_metric_names

        return mix_metric_names(self.sets)

    def __call__(self, network: "PoseNetwork", keypoint_set: KeypointSet, device: torch.device,
                 processes: "ProcessGroup | None" = None) -> dict | None:
        from lwpose.datasets.mix_evaluation import validate_mix
        from lwpose.evaluation.validation import format_dataset_table

        rank, world_size, gather = _shares(processes)
        estimator = _estimator(network, keypoint_set, device, self.height_size, self.decode_at)
        with _NoCudnnSearch():
            result = validate_mix(estimator, self.sets, rank, world_size, gather, progress=False,
                                  max_images=self.max_images)
        if result is None:
            return None
        metrics = result.flat
        metrics["images_per_process"] = result.reports[0].images_per_process if result.reports else []
        metrics["summary"] = "val on the mix:\n" + format_dataset_table(result.rows, result.mean)
        return metrics

"""Validation that steers a mixed training run: train.py --val-mix scores every dataset of a recipe at each
validation and logs each metric, --save-best keeps the checkpoint best by the metric named (an unknown one is
refused before training, listing the valid ones), and under torchrun the table is val.py --mix's."""
import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import MMPOSE_SAMPLES, REPO_ROOT, require_shared
from lwpose.evaluation.best_metric import BestMetric, MetricError
from lwpose.interop.checkpoint import load_checkpoint

RECIPE = os.path.join(REPO_ROOT, "datasets", "recipes", "people_samples.json")
DATASETS = ("coco", "aic", "mpii", "crowdpose")
SHORT_RUN = ["--freeze", "model", "--freeze", "cpm", "--input-size", "128", "--batch-size", "8",
             "--num-workers", "0", "--device", "cpu", "--no-progress", "--val-height-size", "256",
             "--checkpoint-after", "100"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train(tmp_path, name, *extra, launcher=(sys.executable,), timeout=900):
    return subprocess.run([*launcher, "train.py", "--mix", RECIPE, "--experiments-folder", str(tmp_path),
                           "--experiment-name", name, *SHORT_RUN, *extra], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_mixed_run_logs_every_dataset_and_keeps_the_best_by_mpii_pckh(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    result = train(tmp_path, "steered", "--checkpoint-path", hpe_checkpoint, "--weights-only",
                   "--max-iterations", "3", "--val-after", "1", "--base-lr", "4e-4", "--val-mix", RECIPE,
                   "--save-best", "mpii/PCKh@0.5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_csv(tmp_path / "steered" / "val_log.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]  # every validation
    for row in rows:
        for dataset in DATASETS:
            assert float(row[f"{dataset}/AP"]) >= 0 and float(row[f"{dataset}/PCK@0.1"]) >= 0
        assert float(row["mpii/PCKh@0.5"]) >= 0 and row["mean/AP"] != ""
    assert "crowdpose/PCKh@0.5" not in rows[0]  # only where the set has head-size keypoints
    best_row = max(rows, key=lambda r: (float(r["mpii/PCKh@0.5"]), -int(r["iteration"])))  # the first of the best
    expected = f"best_mpii-PCKh@0.5_iter_{best_row['iteration']}.pth"
    checkpoints = tmp_path / "steered" / "checkpoints"
    assert sorted(p for p in os.listdir(checkpoints) if p.startswith("best_")) == [expected]
    assert os.path.realpath(checkpoints / "best.pth") == os.path.realpath(checkpoints / expected)
    best = load_checkpoint(str(checkpoints / "best.pth"))
    assert best["meta"]["best_metric"] == "mpii/PCKh@0.5"
    assert best["meta"]["best_value"] == pytest.approx(float(best_row["mpii/PCKh@0.5"]))
    assert float(rows[-1]["best mpii/PCKh@0.5"]) == pytest.approx(float(best_row["mpii/PCKh@0.5"]))
    assert "mean/PCK@0.1" in rows[0] and "coco" in result.stdout and "weighted mean" in result.stdout


def test_an_unknown_metric_is_refused_before_the_first_iteration(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    result = train(tmp_path, "refused", "--checkpoint-path", hpe_checkpoint, "--weights-only",
                   "--max-iterations", "3", "--val-mix", RECIPE, "--save-best", "mpii/PCKh@0.2")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "mpii/PCKh@0.2" in message and "mpii/PCKh@0.5" in message and "mean/AP" in message
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "refused" / "log.csv")  # nothing trained


def test_val_mix_under_torchrun_gives_val_py_mix_s_table(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    environment = dict(os.environ, **ONE_THREAD)
    result = subprocess.run([*launcher, "train.py", "--mix", RECIPE, "--experiments-folder", str(tmp_path),
                             "--experiment-name", "ddp", *SHORT_RUN, "--checkpoint-path",
                             hpe_checkpoint, "--weights-only", "--max-iterations", "1", "--val-after", "1",
                             "--val-mix", RECIPE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                            env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (logged,) = read_csv(tmp_path / "ddp" / "val_log.csv")
    metrics = tmp_path / "val.json"
    single = subprocess.run([sys.executable, "val.py", "--mix", RECIPE, "--checkpoint-path",
                             str(tmp_path / "ddp" / "checkpoints" / "best.pth"), "--backend", "torch",
                             "--height-size", "256", "--metrics-out", str(metrics), "--output-name",
                             str(tmp_path / "detections.json"), "--no-progress"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600, env=environment)
    assert single.returncode == 0, single.stderr[-3000:]
    table = json.loads(metrics.read_text())
    for dataset, row in table["datasets"].items():
        for metric in ("AP", "PCK@0.05", "PCK@0.1"):
            assert float(logged[f"{dataset}/{metric}"]) == pytest.approx(row[metric], abs=1e-9), (dataset, metric)
    assert float(logged["mean/AP"]) == pytest.approx(table["weighted_mean"]["AP"], abs=1e-9)
    # the table the run printed is val.py's
    printed = result.stdout[result.stdout.index("val on the mix:"):]
    for line in single.stdout.splitlines():
        if line.startswith(DATASETS):
            assert line in printed


def test_a_weighted_sum_of_metrics_is_read_and_checked():
    available = ["coco/AP", "mpii/PCKh@0.5", "mean/AP"]
    metric = BestMetric.parse("0.5*coco/AP+0.5*mpii/PCKh@0.5", available)
    assert metric.terms == ((0.5, "coco/AP"), (0.5, "mpii/PCKh@0.5"))
    assert metric.value({"coco/AP": 0.4, "mpii/PCKh@0.5": 0.8}) == pytest.approx(0.6)
    assert metric.value({"coco/AP": None, "mpii/PCKh@0.5": 0.8}) is None
    assert metric.file_label == "0.5xcoco-AP+0.5xmpii-PCKh@0.5"
    assert BestMetric.parse("mpii/PCKh@0.5", available).file_label == "mpii-PCKh@0.5"
    with pytest.raises(MetricError, match="coco/AP, mpii/PCKh@0.5, mean/AP"):
        BestMetric.parse("0.5*coco/AP+aic/AP", available)
    with pytest.raises(MetricError, match="cannot read"):
        BestMetric.parse("0.5**coco/AP", available)

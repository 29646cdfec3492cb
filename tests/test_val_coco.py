"""val.py end to end with real weights, real images and pycocotools: the reference's AP is reached, unreadable
images are reported and counted, and files that are not COCO keypoint ground truth fail clearly."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, MMPOSE_SAMPLES, REPO_ROOT, require_shared
from lwpose.evaluation.coco import GroundTruthError, load_keypoint_ground_truth

SAMPLES_COCO = os.path.join(MMPOSE_SAMPLES, "coco")
METRIC_KEYS = {"AP", "AP50", "AP75", "APm", "APl", "AR"}


def run_val(checkpoint, labels, images, tmp_path, *extra):
    metrics_path = tmp_path / "metrics.json"
    result = subprocess.run(
        [sys.executable, "val.py", "--labels", labels, "--images-folder", images, "--checkpoint-path", checkpoint,
         "--output-name", str(tmp_path / "dets.json"), "--metrics-out", str(metrics_path), "--no-progress", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(metrics_path.read_text()), result.stdout


def test_val_on_mmpose_coco_samples_reaches_the_reference_ap(hpe_checkpoint, tmp_path):
    require_shared(SAMPLES_COCO)
    metrics, stdout = run_val(hpe_checkpoint, os.path.join(SAMPLES_COCO, "test_coco.json"), SAMPLES_COCO, tmp_path)
    print(stdout)
    assert METRIC_KEYS <= set(metrics)
    assert metrics["AP"] >= 0.776
    detections = json.loads((tmp_path / "dets.json").read_text())
    assert detections and all(len(d["keypoints"]) == 17 * 3 for d in detections)  # neck dropped for COCO


@pytest.mark.slow
def test_val_on_coco_mini_train_reaches_the_reference_ap(hpe_checkpoint, tmp_path):
    require_shared(COCO_MINI_LABELS)
    metrics, stdout = run_val(hpe_checkpoint, COCO_MINI_LABELS, COCO_MINI_IMAGES, tmp_path)
    print(stdout)
    assert metrics["num_images"] == 80
    assert metrics["AP"] >= 0.322


def test_unreadable_images_are_reported_by_name_and_counted(hpe_checkpoint, tmp_path):
    require_shared(SAMPLES_COCO)
    images = tmp_path / "images"
    shutil.copytree(SAMPLES_COCO, images)
    (images / "000000040083.jpg").write_bytes(b"")  # zero bytes
    (images / "000000000785.jpg").write_bytes(open(os.path.join(SAMPLES_COCO, "000000000785.jpg"), "rb").read()[:500])
    metrics, stdout = run_val(hpe_checkpoint, str(images / "test_coco.json"), str(images), tmp_path)
    assert metrics["unreadable_images"] == 2
    assert set(metrics["unreadable_files"]) == {"000000040083.jpg", "000000000785.jpg"}
    assert "000000040083.jpg" in stdout and "2 of 4 images could not be read" in stdout
    assert metrics["num_images"] == 4


@pytest.mark.parametrize("content, message", [
    ("[1, 2, 3]", "expected a COCO object"),
    ("{\"images\": [], \"annotations\": []}", "'categories' is missing"),
    ("{\"images\": [], \"annotations\": [], \"categories\": [{\"id\": 1, \"name\": \"cat\"}]}",
     "no category lists 'keypoints'"),
    ("not json", "is not JSON"),
])
def test_ground_truth_that_is_not_coco_keypoints_fails_clearly(tmp_path, content, message):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(GroundTruthError) as error:
        load_keypoint_ground_truth(str(path))
    assert str(path) in str(error.value) and message in str(error.value)


def test_val_cli_reports_a_bad_ground_truth_without_a_traceback(hpe_checkpoint, tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("[]")
    result = subprocess.run([sys.executable, "val.py", "--labels", str(path), "--images-folder", str(tmp_path),
                             "--checkpoint-path", hpe_checkpoint], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(path) in result.stderr


def test_an_images_folder_that_does_not_exist_stops_val_at_start_up(hpe_checkpoint, tmp_path):
    """Not an AP of 0.000 with every image counted as missed: an error naming the folder, before any work."""
    require_shared(MMPOSE_SAMPLES)
    missing = tmp_path / "no_such_folder"
    labels = os.path.join(MMPOSE_SAMPLES, "coco", "test_coco.json")
    result = subprocess.run([sys.executable, "val.py", "--labels", labels, "--images-folder", str(missing),
                             "--checkpoint-path", hpe_checkpoint,
                             "--metrics-out", str(tmp_path / "metrics.json"), "--no-progress"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(missing) in result.stderr and "is not a folder" in result.stderr
    assert "AP" not in result.stdout and not (tmp_path / "metrics.json").exists()


def test_ground_truth_without_area_gets_it_from_the_box():
    require_shared(MMPOSE_SAMPLES)
    gt = load_keypoint_ground_truth(os.path.join(MMPOSE_SAMPLES, "aic", "test_aic.json"))
    assert gt.keypoint_set.name == "aic"
    for ann in gt.data["annotations"]:
        assert ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])

"""Files from strangers: a checkpoint whose unpickling would run code is refused before any of it runs, with how to
convert a trusted one; annotation file names that leave the images folder are refused by every reader."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from lwpose.datasets.coco_reader import AnnotationError, read_coco_keypoints
from lwpose.datasets.mpii_reader import read_mpii_keypoints
from lwpose.evaluation.coco import GroundTruthError, load_keypoint_ground_truth
from lwpose.interop.checkpoint import CheckpointError, load_checkpoint
from lwpose.interop.importers import import_reference_checkpoint
from lwpose.keypoints import load_keypoint_set


class WritesMarkerWhenUnpickled:
    """Unpickling this calls exec(): a stand-in for a malicious checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.fixture
def malicious_checkpoint(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": {"cpm.align.0.weight": torch.zeros(1)}, "iter": 370000,
                "optimizer": WritesMarkerWhenUnpickled(str(marker))}, path)
    return str(path), marker


def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(malicious_checkpoint):
    path, marker = malicious_checkpoint
    for load in (load_checkpoint, import_reference_checkpoint):
        with pytest.raises(CheckpointError) as refused:
            load(path)
        message = str(refused.value)
        assert path in message and "refused" in message
        assert "--trust-pickle" in message and "import_weights.py" in message  # how to convert a trusted one
    assert not marker.exists()


def test_demo_refuses_the_crafted_checkpoint_before_running_it(malicious_checkpoint, tmp_path):
    path, marker = malicious_checkpoint
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((32, 32, 3), np.uint8))
    result = subprocess.run([sys.executable, "demo.py", "--checkpoint-path", path, "--images",
                             str(tmp_path / "frame.png"), "--backend", "torch", "--no-progress"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


ESCAPING_NAMES = ["../outside.jpg", "sub/../../outside.jpg", "/etc/passwd"]


@pytest.fixture
def images_folder(tmp_path):
    """An images folder with a symbolic link that leads out of it, and a real image outside it."""
    folder = tmp_path / "images"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    cv2.imwrite(str(tmp_path / "outside.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "elsewhere" / "outside.jpg"), np.zeros((8, 8, 3), np.uint8))
    os.symlink(tmp_path / "elsewhere", folder / "link")
    return folder


def coco_file(path, file_name: str) -> str:
    names = list(load_keypoint_set("coco").keypoints)
    data = {"images": [{"id": 7, "file_name": file_name, "width": 8, "height": 8}],
            "categories": [{"id": 1, "name": "person", "keypoints": names}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16,
                             "keypoints": [1, 1, 2] * len(names)}]}
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("file_name", ESCAPING_NAMES)
def test_file_names_leaving_the_images_folder_are_refused_naming_file_and_entry(file_name, images_folder,
                                                                                 tmp_path):
    labels = coco_file(tmp_path / "labels.json", file_name)
    with pytest.raises(AnnotationError, match=r"labels\.json: images\[0\] \(id 7\)"):
        read_coco_keypoints(labels, load_keypoint_set("lwop18"))
    with pytest.raises(GroundTruthError, match=r"labels\.json: images\[0\] \(id 7\)"):
        load_keypoint_ground_truth(labels)
    mpii = tmp_path / "mpii.json"
    mpii.write_text(json.dumps([{"image": file_name, "joints": [[2, 2]] * 16, "joints_vis": [1] * 16}]))
    with pytest.raises(AnnotationError, match=r"mpii\.json: entry 0"):
        read_mpii_keypoints(str(mpii), load_keypoint_set("mpii"), str(images_folder))


def test_a_symbolic_link_leading_out_of_the_images_folder_stops_label_preparation_clearly(images_folder, tmp_path):
    labels = coco_file(tmp_path / "labels.json", "link/outside.jpg")
    result = subprocess.run([sys.executable, "scripts/prepare_train_labels.py", "--labels", labels, "--images-folder",
                             str(images_folder), "--output-name", str(tmp_path / "prepared.json")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "labels.json: image id 7" in result.stderr and "outside the images folder" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "prepared.json").exists()

"""scripts/channel_peaks.py: whether each keypoint channel peaks at its keypoint inside the instance's box, with no
grouping involved — the imported model's channels at the COCO samples' people, a freshly grown animal class at none
of the AP-10K samples' animals, and the verdict of one channel on maps drawn by hand."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import MMPOSE_SAMPLES, REPO_ROOT, require_shared
from training_data import run_tool

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

from channel_peaks import peak_found  # noqa: E402

COCO_SAMPLES = ("--labels", os.path.join(MMPOSE_SAMPLES, "coco", "test_coco.json"),
                "--images-folder", os.path.join(MMPOSE_SAMPLES, "coco"))
AP10K_SAMPLES = ("--labels", os.path.join(MMPOSE_SAMPLES, "ap10k", "test_ap10k.json"),
                 "--images-folder", os.path.join(MMPOSE_SAMPLES, "ap10k"))


@pytest.mark.parametrize("peak_at, value, expected", [((22, 31), 0.9, (True, True)),   # at the keypoint
                                                      ((26, 31), 0.9, (True, True)),   # 4 px off, box side 40
                                                      ((45, 52), 0.9, (True, False)),  # elsewhere in the box
                                                      ((22, 31), 0.1, (False, False)),  # not above the floor
                                                      ((70, 31), 0.9, (False, False))])  # outside the box only
def test_one_channel_is_found_only_where_its_peak_inside_the_box_is_near_the_keypoint(peak_at, value, expected):
    heatmap = np.zeros((80, 100), np.float32)
    heatmap[peak_at[1], peak_at[0]] = value
    box = (15.0, 20.0, 40.0, 35.0)  # x, y, w, h: the longer side is 40 px, so 0.1 of it is 4 px
    assert peak_found(heatmap, box, (22.0, 31.0), radius=0.1, min_peak=0.1) == expected


def test_the_imported_model_peaks_at_the_coco_samples_keypoints(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    output = tmp_path / "peaks.json"
    result = run_tool("scripts/channel_peaks.py", "--checkpoint-path", hpe_checkpoint, *COCO_SAMPLES,
                      "--output-json", output)
    assert result.returncode == 0, result.stdout + result.stderr
    peaks = json.loads(output.read_text())
    total = peaks["classes"]["lwop18"]
    assert total["found"] >= 0.85 * total["labelled"] and total["labelled"] > 100
    # COCO's keypoints by name on lwop18's channels: its neck is no COCO keypoint, so it is never labelled
    assert "neck" not in peaks["channels"] and "left_ankle" in peaks["channels"]
    for row in peaks["channels"].values():
        assert row["found"] <= row["peaked"] <= row["labelled"]
    assert "all of lwop18" in result.stdout


def test_a_freshly_grown_animal_class_peaks_nowhere(hpe_checkpoint, tmp_path):
    """The imported model grown into people_animals before any training: the animal channels are zero, so no
    animal keypoint of the AP-10K samples is found, while the person channels still find the COCO people."""
    require_shared(MMPOSE_SAMPLES)
    from lwpose.interop.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from lwpose.keypoints import load_keypoint_set
    from lwpose.modules.pose_network import Architecture
    from lwpose.training.growing import grow_network

    checkpoint = load_checkpoint(hpe_checkpoint)
    new_set = load_keypoint_set(os.path.join(REPO_ROOT, "datasets", "recipes", "people_animals.json"))
    grown = grow_network(checkpoint["state_dict"], Architecture.from_dict(checkpoint["architecture"]),
                         load_keypoint_set(checkpoint["keypoint_set"]), new_set)
    path = tmp_path / "grown.pth"
    save_checkpoint(make_checkpoint(grown.network.state_dict(), new_set, grown.architecture), str(path))
    animals = run_tool("scripts/channel_peaks.py", "--checkpoint-path", path, *AP10K_SAMPLES,
                       "--output-json", tmp_path / "animals.json")
    assert animals.returncode == 0, animals.stdout + animals.stderr
    animal_total = json.loads((tmp_path / "animals.json").read_text())["classes"]["animal"]
    assert animal_total["labelled"] > 20 and animal_total["peaked"] == 0 and animal_total["found"] == 0
    people = run_tool("scripts/channel_peaks.py", "--checkpoint-path", path, *COCO_SAMPLES,
                      "--output-json", tmp_path / "people.json")
    assert people.returncode == 0, people.stdout + people.stderr
    person_total = json.loads((tmp_path / "people.json").read_text())["classes"]["person"]
    assert person_total["found"] >= 0.85 * person_total["labelled"]


def test_a_category_no_class_stands_for_fails_naming_the_file(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    result = run_tool("scripts/channel_peaks.py", "--checkpoint-path", hpe_checkpoint, *COCO_SAMPLES,
                      "--category-class", "person=dog")
    assert result.returncode == 2
    assert "test_coco.json" in result.stderr and "Traceback" not in result.stderr

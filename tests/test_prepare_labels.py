"""scripts/prepare_train_labels.py on real COCO-format files: the reference's selection, ignore regions for crowds
and people without keypoints, a plain JSON format that records what each source labels, and clear errors."""
import json
import os
import shutil

import numpy as np
import pytest
from training_data import SHIPPED_SAMPLES, prepare, run_tool, sample_paths

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, MMPOSE_SAMPLES, require_shared
from lwpose.datasets.coco_reader import read_coco_keypoints
from lwpose.datasets.prepared_labels import SelectionSettings, build_prepared_labels, load_prepared_labels
from lwpose.keypoints import load_keypoint_set


def test_coco_mini_train_keeps_the_reference_samples_and_masks_crowds_and_unlabelled_people(tmp_path):
    require_shared(COCO_MINI_LABELS)
    output = tmp_path / "prepared.json"
    result = prepare(COCO_MINI_LABELS, COCO_MINI_IMAGES, "lwop18", output)
    # 72 people have >= 5 keypoints and area >= 32*32; 4 of them stand too close to one already kept.
    assert "training samples (main people): 68" in result.stdout
    assert "too close to a kept one: 4" in result.stdout
    assert "ignore regions: 5 crowd, 81 people without keypoints" in result.stdout
    text = output.read_text()
    data = json.loads(text)  # plain JSON, nothing to unpickle
    assert data["format"] == "lwpose-prepared-labels"
    labels = load_prepared_labels(str(output))
    assert len(labels) == 68
    reasons = [region["reason"] for im in labels.images for region in im.ignore]
    assert reasons.count("crowd") + reasons.count("no_keypoints") == labels.summary["ignore_regions_in_kept_images"]
    assert "crowd" in reasons and "no_keypoints" in reasons
    assert labels.sources[0].labelled.all()  # COCO labels every lwop18 keypoint (neck from the shoulders)


def test_neck_is_the_shoulders_midpoint_and_coordinates_put_pixel_centres_at_integers(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    labels_path, images = sample_paths("coco", "test_coco.json")
    target = load_keypoint_set("lwop18")
    coco = read_coco_keypoints(labels_path, target)
    labels = build_prepared_labels(coco, target)
    raw = json.load(open(labels_path))["annotations"]
    by_id = {a["id"]: np.asarray(a["keypoints"], float).reshape(-1, 3) for a in raw}
    coco_set = load_keypoint_set("coco")
    left, right = coco_set.index["left_shoulder"], coco_set.index["right_shoulder"]
    neck, nose = target.index["neck"], target.index["nose"]
    checked = 0
    for image in labels.images:
        for person_id, keypoints in zip(image.person_ids, image.keypoints):
            original = by_id[person_id]
            if original[coco_set.index["nose"], 2] > 0:
                assert keypoints[nose, :2] == pytest.approx(original[coco_set.index["nose"], :2] - 0.5)
            both = original[left, 2] > 0 and original[right, 2] > 0
            assert (keypoints[neck, 2] > 0) == both
            if both:
                expected = (original[left, :2] + original[right, :2]) / 2 - 0.5
                assert keypoints[neck, :2] == pytest.approx(expected, abs=0.01)
                checked += 1
    assert checked >= 5


def test_selection_thresholds_are_configurable(tmp_path):
    require_shared(COCO_MINI_LABELS)
    target = load_keypoint_set("lwop18")
    coco = read_coco_keypoints(COCO_MINI_LABELS, target)
    default = build_prepared_labels(coco, target)
    strict = build_prepared_labels(coco, target, SelectionSettings(min_keypoints=12, min_area=96 * 96))
    assert 0 < len(strict) < len(default)
    for image_index, person in strict.samples:
        image = strict.images[image_index]
        assert image.areas[person] >= 96 * 96


def test_a_source_that_lacks_target_keypoints_records_them_as_unlabelled(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    labels_path, images = sample_paths("aic", "test_aic.json")
    prepare(labels_path, images, "lwop18", tmp_path / "aic_as_lwop18.json")
    labels = load_prepared_labels(str(tmp_path / "aic_as_lwop18.json"))
    target = labels.keypoint_set
    unlabelled = {target.keypoints[j] for j in np.flatnonzero(~labels.sources[0].labelled)}
    assert unlabelled == {"nose", "right_eye", "left_eye", "right_ear", "left_ear"}  # AIC has no face keypoints
    assert labels.sources[0].keypoint_set.name == "aic"
    for image in labels.images:  # unlabelled keypoints are never targets
        assert not image.keypoints[:, ~labels.sources[0].labelled, 2].any()


def _bad_copy(tmp_path, edit):
    require_shared(MMPOSE_SAMPLES)
    labels_path, images = sample_paths("coco", "test_coco.json")
    data = json.load(open(labels_path))
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path, images


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][3].update(keypoints=d["annotations"][3]["keypoints"][:-3]),
     "'keypoints' must hold 51 numbers"),
    (lambda d: d["annotations"][3]["keypoints"].__setitem__(2, 7), "visibility 7; expected 0"),
    (lambda d: d["annotations"][3]["keypoints"].__setitem__(0, float("nan")), "not a finite number"),
    (lambda d: d["annotations"][3].update(image_id=-5), "image_id -5 is not among the images"),
])
def test_bad_annotations_fail_naming_the_file_and_the_annotation_id(tmp_path, edit, message):
    path, images = _bad_copy(tmp_path, edit)
    annotation_id = json.loads(path.read_text())["annotations"][3]["id"]
    result = run_tool("scripts/prepare_train_labels.py", "--labels", path, "--images-folder", images,
                      "--keypoints", "coco", "--output-name", tmp_path / "out.json")
    assert result.returncode == 2
    assert str(path) in result.stderr and f"annotation {annotation_id}" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.json").exists()


def test_a_category_whose_keypoint_names_differ_from_the_set_fails_naming_the_annotation(tmp_path):
    def second_category(data):
        category = dict(data["categories"][0], id=2, name="robot")
        category["keypoints"] = list(category["keypoints"])
        category["keypoints"][5], category["keypoints"][6] = "antenna", "right_shoulder"
        data["categories"].append(category)
        data["annotations"][2]["category_id"] = 2

    path, images = _bad_copy(tmp_path, second_category)
    annotation_id = json.loads(path.read_text())["annotations"][2]["id"]
    result = run_tool("scripts/prepare_train_labels.py", "--labels", path, "--images-folder", images,
                      "--keypoints", "coco", "--output-name", tmp_path / "out.json")
    assert result.returncode == 2
    assert f"annotation {annotation_id}" in result.stderr
    assert "'robot' lists keypoint 5 as 'antenna'" in result.stderr


def test_a_file_of_another_keypoint_count_fails_naming_the_set(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    labels_path, images = sample_paths("coco", "test_coco.json")
    result = run_tool("scripts/prepare_train_labels.py", "--labels", labels_path, "--images-folder", images,
                      "--keypoints", "coco", "--source-keypoints", "crowdpose", "--output-name", tmp_path / "o.json")
    assert result.returncode == 2
    assert "lists 17 keypoint names, keypoint set 'crowdpose' has 14" in result.stderr


def test_missing_images_are_listed_and_their_people_left_out(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    images = tmp_path / "images"
    shutil.copytree(os.path.join(MMPOSE_SAMPLES, "coco"), images)
    os.unlink(images / "000000197388.jpg")
    result = prepare(str(images / "test_coco.json"), images, "coco", tmp_path / "out.json")
    assert "1 of 4 images are missing" in result.stdout and "000000197388.jpg" in result.stdout
    labels = load_prepared_labels(str(tmp_path / "out.json"))
    assert "000000197388.jpg" not in {im.file_name for im in labels.images}
    assert labels.summary["missing_image_files"] == ["000000197388.jpg"]


@pytest.mark.parametrize("folder, file_name, keypoints", SHIPPED_SAMPLES)
def test_every_shipped_sample_prepares_in_its_own_set(tmp_path, folder, file_name, keypoints):
    require_shared(MMPOSE_SAMPLES)
    labels_path, images = sample_paths(folder, file_name)
    prepare(labels_path, images, keypoints, tmp_path / "out.json")
    labels = load_prepared_labels(str(tmp_path / "out.json"))
    assert len(labels) > 0
    assert labels.keypoint_set.name == keypoints and labels.sources[0].labelled.all()
    for image in labels.images:
        assert image.keypoints.shape[1:] == (labels.keypoint_set.num_keypoints, 3)
        assert set(np.unique(image.keypoints[..., 2])) <= {0.0, 1.0, 2.0}  # Animal-Pose's floats normalised

"""Synthetic people (scripts/synthetic_data.py): real files that the project's own readers and pycocotools accept,
labels that agree with the drawn pixels (visible on the figure, occluded under a nearer one, left/right by
anatomy), crowd regions that decode to their region, a readable video, and the same output for the same seed."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from conftest import REPO_ROOT
from lwpose.evaluation.coco import evaluate_keypoints, load_keypoint_ground_truth
from lwpose.keypoints import load_keypoint_set

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import synthetic_data as sd  # noqa: E402
from synthetic_figures import Build, Figure, Palette, Pose, figure_mask, project  # noqa: E402

VIDEO_FRAMES = 40


def run_generator(output_dir, *extra):
    return subprocess.run([sys.executable, os.path.join("scripts", "synthetic_data.py"), "--output-dir",
                           str(output_dir), "--no-progress", *extra], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    result = run_generator(out, "--train-images", "8", "--val-images", "4", "--mix-images", "6",
                           "--video-frames", str(VIDEO_FRAMES), "--workers", "2", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def scenes(count, seed=0, **config):
    config = sd.SceneConfig(**config)
    return [sd.make_scene(np.random.default_rng([seed, i]), config) for i in range(count)]


def ground_truth_as_detections(data):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
             "keypoints": [v if i % 3 < 2 else float(v > 0) for i, v in enumerate(a["keypoints"])]}
            for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]


@pytest.mark.parametrize("split, set_name", [("train", "coco"), ("val", "coco"), ("aic", "aic")])
def test_labels_load_by_their_keypoint_names_and_score_ap_one_against_themselves(generated, split, set_name):
    gt = load_keypoint_ground_truth(str(generated / split / "person_keypoints.json"))
    assert gt.keypoint_set.name == set_name
    keypoint_set = load_keypoint_set(set_name)
    category = gt.data["categories"][0]
    assert category["keypoints"] == list(keypoint_set.keypoints)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in keypoint_set.limb_keypoints.tolist()]
    for image in gt.images:
        on_disk = cv2.imread(str(generated / split / "images" / image["file_name"]))
        assert on_disk.shape[:2] == (image["height"], image["width"])
    for ann in gt.data["annotations"]:
        assert {"keypoints", "num_keypoints", "bbox", "area", "iscrowd", "segmentation"} <= set(ann)
        visibility = ann["keypoints"][2::3]
        assert ann["num_keypoints"] == sum(v > 0 for v in visibility)
        assert all(v in (0, 1, 2) for v in visibility)
        assert all(ann["keypoints"][3 * k:3 * k + 2] == [0, 0] for k, v in enumerate(visibility) if v == 0)
    detections = ground_truth_as_detections(gt.data)
    assert len(detections) >= len(gt.images)
    metrics = evaluate_keypoints(gt, detections)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR"] == pytest.approx(1.0)
    # Area ranges the split has nobody in are None (pycocotools' -1), not a score of 0.
    has_large = any(a["area"] > 96 ** 2 for a in gt.data["annotations"] if a["num_keypoints"] > 0)
    assert (metrics["APl"] is None) == (not has_large)
    assert metrics["APl"] is None or metrics["APl"] == pytest.approx(1.0)


def test_manifest_lists_every_split_and_the_video(generated):
    manifest = json.loads((generated / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert {name: split["images"] for name, split in manifest["splits"].items()} == {"train": 8, "val": 4, "aic": 6}
    for split in manifest["splits"].values():
        assert (generated / split["labels"]).is_file() and (generated / split["images_folder"]).is_dir()
    assert (generated / manifest["video"]["video"]).is_file()


@pytest.mark.parametrize("set_name", ["coco", "aic"])
def test_visible_keypoints_lie_on_their_figure_and_occluded_ones_under_a_nearer_figure(set_name):
    keypoint_set = load_keypoint_set(set_name)
    counts = {1: 0, 2: 0}
    for scene in scenes(6, people=(3, 5), partial_probability=0.3):
        height, width = scene.id_mask.shape
        alone = [figure_mask(figure, height, width) for figure in scene.figures]
        for index, ann in sd.scene_annotations(scene, keypoint_set):
            if index is None or ann["num_keypoints"] == 0:
                continue
            nearer = alone[index + 1:]
            for k, (x, y, v) in enumerate(np.reshape(ann["keypoints"], (-1, 3))):
                if v == 0:
                    continue
                col, row = int(np.floor(x)), int(np.floor(y))  # COCO coordinates: pixel edges at integers
                covered = any(mask[row, col] for mask in nearer)
                where = f"{keypoint_set.keypoints[k]} of figure {index} at ({x}, {y})"
                if v == 2:
                    assert alone[index][row, col] and not covered, where
                else:
                    assert covered, where
                counts[v] += 1
    assert counts[2] > counts[1] > 0


def test_keypoints_outside_the_image_are_unlabelled_at_zero():
    keypoint_set = load_keypoint_set("coco")
    outside = 0
    for scene in scenes(4, people=(2, 2), partial_probability=1.0):
        height, width = scene.id_mask.shape
        for index, ann in sd.scene_annotations(scene, keypoint_set):
            if index is None or scene.roles[index] != sd.PERSON:
                continue
            projected = project(scene.figures[index])
            for k, name in enumerate(keypoint_set.keypoints):
                x, y = projected.points[name]
                if not (-0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5):
                    assert ann["keypoints"][3 * k:3 * k + 3] == [0, 0, 0], name
                    outside += 1
    assert outside > 0


@pytest.mark.parametrize("back_view", [False, True])
def test_left_and_right_keypoints_follow_the_anatomy_not_the_image_side(back_view):
    """Facing the camera a person's left side is on the image's right; turned away, on its left."""
    keypoint_set = load_keypoint_set("coco")
    rigid = [k for k, name in enumerate(keypoint_set.keypoints)
             if keypoint_set.sides[k] == "left" and name.split("_")[-1] in ("shoulder", "hip", "eye", "ear")]
    checked = 0
    config = dict(max_yaw_degrees=30.0, back_view_probability=float(back_view), roll_degrees=0.0, people=(2, 3))
    for scene in scenes(5, seed=7, **config):
        for index, ann in sd.scene_annotations(scene, keypoint_set):
            if index is None or ann["num_keypoints"] == 0:
                continue
            keypoints = np.reshape(ann["keypoints"], (-1, 3))
            for left in rigid:
                right = keypoint_set.flip_permutation[left]
                if keypoints[left, 2] > 0 and keypoints[right, 2] > 0:
                    assert (keypoints[left, 0] < keypoints[right, 0]) == back_view, keypoint_set.keypoints[left]
                    checked += 1
    assert checked > 20


def test_left_limbs_are_drawn_lighter_than_right_limbs():
    grey = (128, 128, 128)
    figure = Figure(Build(), Pose(shoulder_abduction=(0.6, 0.6)), Palette(grey, grey, grey, grey, grey, True),
                    stature_px=200, origin=(100.0, 110.0))
    drawn = sd.draw_scene(np.zeros((240, 200, 3), np.uint8), [figure], [sd.PERSON]).image.astype(int).sum(axis=2)
    points = project(figure).points
    for segment in (("shoulder", "elbow"), ("hip", "knee")):
        left, right = ([(np.add(points[f"{side}_{segment[0]}"], points[f"{side}_{segment[1]}"]) / 2).round()
                        .astype(int) for side in ("left", "right")])
        assert drawn[left[1], left[0]] > drawn[right[1], right[0]] + 60, segment


@pytest.mark.parametrize("marker_shade", [0.0, 0.35])
def test_joint_centres_are_marked_by_contrasting_discs_when_asked(marker_shade):
    grey = (128, 128, 128)
    figure = Figure(Build(), Pose(shoulder_abduction=(0.6, 0.6), elbow=(0.8, 0.8)),
                    Palette(grey, grey, grey, grey, grey, True), stature_px=200, origin=(100.0, 110.0),
                    joint_marker_shade=marker_shade)
    drawn = sd.draw_scene(np.zeros((240, 200, 3), np.uint8), [figure], [sd.PERSON]).image.astype(int).sum(axis=2)
    points = project(figure).points
    for side in ("left", "right"):
        elbow = np.round(points[f"{side}_elbow"]).astype(int)
        upper_arm = np.round(np.add(points[f"{side}_shoulder"], points[f"{side}_elbow"]) / 2).astype(int)
        difference = abs(drawn[elbow[1], elbow[0]] - drawn[upper_arm[1], upper_arm[0]])
        assert (difference > 60) == (marker_shade > 0), (side, difference)


def test_crowd_region_decodes_to_its_region_and_covers_its_unlabelled_people():
    keypoint_set = load_keypoint_set("coco")
    for scene in scenes(3, seed=1, crowd_probability=1.0):
        annotations = sd.scene_annotations(scene, keypoint_set)
        crowd = [ann for index, ann in annotations if index is None]
        assert len(crowd) == 1 and crowd[0]["iscrowd"] == 1 and crowd[0]["num_keypoints"] == 0
        rle = crowd[0]["segmentation"]
        assert isinstance(rle["counts"], list)  # uncompressed, as COCO's own crowd entries
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"])).astype(bool)
        assert np.array_equal(decoded, scene.crowd_mask)
        assert crowd[0]["area"] == decoded.sum()
        x, y, w, h = crowd[0]["bbox"]
        rows, cols = np.nonzero(decoded)
        assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        members = [i for i, role in enumerate(scene.roles) if role == sd.CROWD]
        assert members and not {index for index, _ in annotations} & set(members)
        for i in members:
            assert decoded[scene.id_mask == i + 1].all()


def test_tiny_people_are_annotated_with_no_keypoints():
    keypoint_set = load_keypoint_set("coco")
    tiny = 0
    for scene in scenes(3, seed=2, small_people=(2, 2), small_height_px=(12.0, 20.0)):
        for index, ann in sd.scene_annotations(scene, keypoint_set):
            if index is not None and scene.roles[index] == sd.SMALL:
                assert ann["num_keypoints"] == 0 and not any(ann["keypoints"])
                assert 0 < ann["area"] < 32 * 32 and ann["segmentation"]
                tiny += 1
    assert tiny >= 3


def test_video_opens_with_the_promised_frames_and_walkers_cross(generated):
    manifest = json.loads((generated / "manifest.json").read_text())["video"]
    capture = cv2.VideoCapture(str(generated / manifest["video"]))
    assert capture.isOpened()
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape[:2] == (manifest["height"], manifest["width"])
        frames += 1
    capture.release()
    assert frames == manifest["frames"] == VIDEO_FRAMES
    lines = (generated / manifest["keypoints"]).read_text().splitlines()
    assert len(lines) == VIDEO_FRAMES
    keypoint_set = load_keypoint_set("coco")
    centre_x = {}  # track id -> {frame: mean x of its labelled keypoints}
    occluded = 0
    for t, line in enumerate(lines):
        record = json.loads(line)
        assert record["frame"] == t
        for person in record["people"]:
            keypoints = np.reshape(person["keypoints"], (-1, 3))
            assert len(keypoints) == keypoint_set.num_keypoints
            labelled = keypoints[:, 2] > 0
            centre_x.setdefault(person["track_id"], {})[t] = keypoints[labelled, 0].mean()
            occluded += int((keypoints[:, 2] == 1).sum())
    assert len(centre_x) == manifest["walkers"]
    # some pair of walkers swaps sides (crosses), and someone is hidden behind someone else meanwhile
    crossings = 0
    tracks = list(centre_x.values())
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:]:
            common = sorted(set(a) & set(b))
            signs = {np.sign(a[t] - b[t]) for t in common}
            crossings += {-1.0, 1.0} <= signs
    assert crossings >= 1 and occluded > 0


def test_same_seed_same_files_whatever_the_workers_and_another_seed_differs(tmp_path):
    keypoint_set = load_keypoint_set("coco")
    config = sd.SceneConfig(long_side=160)
    runs = {}
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        split_dir = tmp_path / name / "train"
        coco = sd.write_split(str(split_dir), 3, keypoint_set, config, seed, "train", progress=False,
                              workers=workers)
        images = [(split_dir / "images" / im["file_name"]).read_bytes() for im in coco["images"]]
        runs[name] = ((split_dir / "person_keypoints.json").read_text(), images)
    assert runs["a"] == runs["b"]
    assert runs["a"][1] != runs["c"][1]


def test_an_existing_dataset_is_not_overwritten_unless_asked(tmp_path):
    small = ("--train-images", "2", "--val-images", "1", "--mix-images", "0", "--video-frames", "0",
             "--workers", "1", "--image-size", "128")
    assert run_generator(tmp_path, *small).returncode == 0
    before = (tmp_path / "train" / "person_keypoints.json").read_bytes()
    again = run_generator(tmp_path, *small, "--seed", "9")
    assert again.returncode == 2
    assert str(tmp_path / "train") in again.stderr and "--overwrite" in again.stderr
    assert (tmp_path / "train" / "person_keypoints.json").read_bytes() == before
    assert run_generator(tmp_path, *small, "--seed", "9", "--overwrite").returncode == 0
    assert (tmp_path / "train" / "person_keypoints.json").read_bytes() != before


@pytest.mark.parametrize("set_name", ["coco", "lwop18", "aic", "mpii", "crowdpose"])
def test_human_keypoint_sets_can_be_placed_on_the_figure(set_name):
    keypoint_set = load_keypoint_set(set_name)
    assert len(sd.keypoint_sources(keypoint_set)) == keypoint_set.num_keypoints


def test_a_keypoint_the_figure_cannot_place_fails_naming_the_set_file_and_the_keypoint(tmp_path):
    custom = tmp_path / "with_tail.json"
    custom.write_text(json.dumps({"name": "with_tail", "keypoints": ["neck", "tail"], "root": ["neck"],
                                  "limbs": [["neck", "tail"]], "sigmas": [0.05, 0.05]}))
    result = run_generator(tmp_path / "out", "--keypoints", str(custom), "--workers", "1")
    assert result.returncode == 2
    assert str(custom) in result.stderr and "'tail'" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the check

"""Synthetic four-legged animals (scripts/synthetic_animals.py) in the generator's scenes: labels that agree with the
drawn pixels (on the animal, or v=1 under a nearer figure), left and right by anatomy and by shade, keypoints looked
up by name in the set's order, two COCO categories, and people-only output untouched by the animal options."""
import json
import math
import os
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import REPO_ROOT
from lwpose.keypoints import load_keypoint_set

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import synthetic_animals as sa  # noqa: E402
import synthetic_data as sd  # noqa: E402
from synthetic_figures import figure_mask  # noqa: E402

GREY = (128, 128, 128)


def scenes(count, seed=0, **config):
    config = sd.SceneConfig(**config)
    return [sd.make_scene(np.random.default_rng([seed, i]), config) for i in range(count)]


def alone_mask(figure, height, width):
    if isinstance(figure, sa.Animal):
        return sa.animal_mask(figure, height, width)
    return figure_mask(figure, height, width)


def grey_animal(yaw, **changes):
    build = sa.TEMPLATES[1]  # the dog
    pose = sa.Pose(paws=((0.0, 0.0, 0.03),) * 4)  # standing square, paws a little apart
    palette = sa.Palette(GREY, GREY, GREY, GREY, GREY, GREY)
    return sa.Animal(build, pose, palette, length_px=200.0, origin=(150.0, 130.0), yaw=yaw, elevation=0.0,
                     joint_marker_shade=0.0, **changes)


def generate(output_dir, *extra):
    small = ["--output-dir", str(output_dir), "--no-progress", "--train-images", "4", "--val-images", "2",
             "--mix-images", "0", "--video-frames", "0", "--image-size", "128", "--workers", "1", "--seed", "2"]
    return sd.main(small + list(extra))


def test_labelled_keypoints_lie_on_their_figure_or_under_a_nearer_one():
    """People and animals together: a v=2 keypoint lies on its own figure's pixels where no nearer figure is,
    a v=1 one under a nearer figure; each at the projected point of its name."""
    people_set, animal_set = load_keypoint_set("coco"), load_keypoint_set("ap10k")
    counts = {(category, v): 0 for category in (1, 2) for v in (1, 2)}
    for scene in scenes(10, people=(1, 3), animals=(2, 3), partial_probability=0.3, long_side=160):
        height, width = scene.id_mask.shape
        alone = [alone_mask(figure, height, width) for figure in scene.figures]
        for index, ann in sd.scene_annotations(scene, people_set, animal_set):
            if index is None or ann["num_keypoints"] == 0:
                continue
            keypoint_set = animal_set if ann["category_id"] == 2 else people_set
            assert ann["category_id"] == (2 if isinstance(scene.figures[index], sa.Animal) else 1)
            points = sd._project(scene.figures[index]).points
            nearer = alone[index + 1:]
            for k, (x, y, v) in enumerate(np.reshape(ann["keypoints"], (-1, 3))):
                if v == 0:
                    continue
                name = keypoint_set.keypoints[k]
                exact = points[name]
                # COCO coordinates (pixel edges at integers) of the point; its pixel as the labels round it
                assert (x, y) == pytest.approx(np.add(exact, sd.COCO_OFFSET), abs=0.006), name
                col, row = int(round(exact[0])), int(round(exact[1]))
                covered = any(mask[row, col] for mask in nearer)
                where = f"{name} of figure {index} at ({x}, {y})"
                if v == 2:
                    assert alone[index][row, col] and not covered, where
                else:
                    assert covered, where
                counts[ann["category_id"], v] += 1
    assert counts[2, 2] > counts[2, 1] > 0 and counts[1, 2] > 0


def test_keypoints_are_looked_up_by_name_in_the_sets_order(tmp_path):
    """A set of the animal's points in another order (and a subset) labels each by its name."""
    custom = tmp_path / "tail_first.json"
    names = ["root_of_tail", "right_back_paw", "nose", "left_eye", "neck"]
    custom.write_text(json.dumps({"name": "tail_first", "keypoints": names, "root": ["neck"],
                                  "limbs": [["neck", "root_of_tail"], ["root_of_tail", "right_back_paw"],
                                            ["neck", "nose"], ["nose", "left_eye"]],
                                  "sigmas": [0.05] * len(names)}))
    reordered, ap10k = load_keypoint_set(str(custom)), load_keypoint_set("ap10k")
    people_set = load_keypoint_set("coco")
    for scene in scenes(3, seed=4, people=(0, 0), animals=(1, 2), small_people=(0, 0), crowd_probability=0.0):
        full = dict(sd.scene_annotations(scene, people_set, ap10k))
        for index, ann in sd.scene_annotations(scene, people_set, reordered):
            assert ann["category_id"] == 2
            keypoints = np.reshape(ann["keypoints"], (-1, 3))
            reference = np.reshape(full[index]["keypoints"], (-1, 3))
            for k, name in enumerate(names):
                assert keypoints[k].tolist() == reference[ap10k.keypoints.index(name)].tolist(), name


def test_left_legs_are_drawn_lighter_than_right_legs():
    """Seen from the front (front legs) and from behind (back legs), each leg's upper and lower segment."""
    checked = 0
    for yaw, end in ((0.0, ("shoulder", "elbow", "front_paw")), (math.pi, ("hip", "knee", "back_paw"))):
        animal = grey_animal(yaw)
        drawn = sd.draw_scene(np.zeros((300, 300, 3), np.uint8), [animal], [sd.ANIMAL]).image.astype(int).sum(2)
        points = sa.project(animal).points
        for a, b in zip(end, end[1:]):
            left, right = (np.round(np.add(points[f"{side}_{a}"], points[f"{side}_{b}"]) / 2).astype(int)
                           for side in ("left", "right"))
            assert drawn[left[1], left[0]] > drawn[right[1], right[0]] + 60, (yaw, a, b)
            checked += 1
    assert checked == 4


@pytest.mark.parametrize("facing_right", [True, False])
def test_side_view_hides_the_far_eye_and_puts_the_far_legs_behind_the_trunk(facing_right):
    """Facing the image's right (yaw pi/2) the animal shows its right side: its left eye is unlabelled and its
    nose is right of its tail. Turned 20 degrees towards the camera from there, the pixels of the far legs' tops
    (inside the trunk) show the near side's shade, not the far legs'."""
    near, far, sign = ("right", "left", 1.0) if facing_right else ("left", "right", -1.0)
    animal_set, people_set = load_keypoint_set("ap10k"), load_keypoint_set("coco")
    for yaw in (sign * math.pi / 2, sign * (math.pi / 2 - 0.35)):
        animal = grey_animal(yaw)
        scene = sd.draw_scene(np.zeros((300, 300, 3), np.uint8), [animal], [sd.ANIMAL])
        ann = dict(sd.scene_annotations(scene, people_set, animal_set))[0]
        keypoints = {name: ann["keypoints"][3 * k:3 * k + 3] for k, name in enumerate(animal_set.keypoints)}
        assert keypoints[f"{near}_eye"][2] == 2
        assert (keypoints["nose"][0] > keypoints["root_of_tail"][0]) == facing_right
        if yaw == sign * math.pi / 2:
            assert keypoints[f"{far}_eye"] == [0, 0, 0]
            continue
        drawn = scene.image.astype(int).sum(axis=2)
        points = sa.project(animal).points
        near_shade = sum(sa._shade(GREY, 0.3 if near == "left" else -0.3))
        for top in ("shoulder", "hip"):
            col, row = np.round(points[f"{far}_{top}"]).astype(int)
            assert keypoints[f"{far}_{top}"][2] == 2  # on its own figure's pixels, as the people's hidden joints
            assert drawn[row, col] == near_shade, top


def test_animals_off_leaves_the_people_output_byte_identical(tmp_path, monkeypatch):
    """With --animals 0 0 no animal code runs (so no random number is drawn for animals), other animal options
    change no byte of the output, which records no animal setting; and a scene with animals holds the same people
    as the same seed's scene without."""
    def tripwire(*args, **kwargs):
        raise AssertionError("animals were drawn with --animals 0 0")

    monkeypatch.setattr(sa, "random_animals", tripwire)
    assert generate(tmp_path / "default") == 0
    assert generate(tmp_path / "off", "--animals", "0", "0", "--animal-height", "0.2", "0.3",
                    "--animal-keypoints", "ap10k") == 0
    files = sorted(str(p.relative_to(tmp_path / "default")) for p in (tmp_path / "default").rglob("*") if p.is_file())
    assert len(files) == 9  # per split (train 4 images, val 2) its labels and images, and the manifest
    for name in files:
        assert (tmp_path / "off" / name).read_bytes() == (tmp_path / "default" / name).read_bytes(), name
    labels = json.loads((tmp_path / "off" / "train" / sd.LABELS_NAME).read_text())
    assert [c["id"] for c in labels["categories"]] == [1]
    assert not set(sd.ANIMAL_FIELDS) & set(labels["info"]["scene_config"])

    people_only = scenes(4, seed=9, people=(2, 3))
    monkeypatch.undo()
    with_animals = scenes(4, seed=9, people=(2, 3), animals=(1, 2))
    for a, b in zip(people_only, with_animals):
        people_a = [f for f, role in zip(a.figures, a.roles) if role != sd.ANIMAL]
        people_b = [f for f, role in zip(b.figures, b.roles) if role != sd.ANIMAL]
        assert people_a == people_b and sd.ANIMAL in b.roles


def test_two_categories_with_their_own_keypoints_and_animals_alone(tmp_path):
    """People and animals: category 1 'person' (coco), 2 'animal' (ap10k, its skeleton); each annotation has its
    category's keypoints, and scores AP 1 against itself per category with that category's sigmas. With no
    people, only animals are annotated."""
    assert generate(tmp_path / "both", "--people", "1", "2", "--animals", "1", "2") == 0
    assert generate(tmp_path / "animals", "--people", "0", "0", "--small-people", "0", "0",
                    "--crowd-probability", "0", "--animals", "1", "2") == 0
    sets = {1: load_keypoint_set("coco"), 2: load_keypoint_set("ap10k")}
    for folder, expected in (("both", {1, 2}), ("animals", {2})):
        path = str(tmp_path / folder / "train" / sd.LABELS_NAME)
        labels = json.loads(open(path).read())
        categories = {c["id"]: c for c in labels["categories"]}
        assert {i: (c["name"], c["keypoints"]) for i, c in categories.items()} == {
            1: ("person", list(sets[1].keypoints)), 2: ("animal", list(sets[2].keypoints))}
        assert categories[2]["skeleton"] == [[a + 1, b + 1] for a, b in sets[2].limb_keypoints.tolist()]
        annotated = [a for a in labels["annotations"] if a["num_keypoints"] > 0]
        assert {a["category_id"] for a in annotated} == expected
        for ann in labels["annotations"]:
            assert len(ann["keypoints"]) == 3 * sets[ann["category_id"]].num_keypoints
            assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
            assert not ann["iscrowd"] or ann["category_id"] == 1
        manifest = json.loads((tmp_path / folder / "manifest.json").read_text())
        assert manifest["splits"]["train"]["animals"] == sum(a["category_id"] == 2 for a in annotated)
        ground_truth = COCO(path)
        for category in expected:
            detections = [{"image_id": a["image_id"], "category_id": category, "score": 1.0,
                           "keypoints": [v if i % 3 < 2 else float(v > 0) for i, v in enumerate(a["keypoints"])]}
                          for a in annotated if a["category_id"] == category]
            evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "keypoints")
            evaluation.params.catIds = [category]
            evaluation.params.kpt_oks_sigmas = sets[category].sigmas_array
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert evaluation.stats[0] == pytest.approx(1.0), (folder, category)


def test_same_seed_same_files_whatever_the_workers_and_another_seed_differs(tmp_path):
    people_set, animal_set = load_keypoint_set("coco"), load_keypoint_set("ap10k")
    config = sd.SceneConfig(long_side=128, animals=(1, 3))
    runs = {}
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        split_dir = tmp_path / name / "train"
        coco = sd.write_split(str(split_dir), 4, people_set, config, seed, "train", progress=False, workers=workers,
                              animal_set=animal_set)
        assert any(a["category_id"] == 2 for a in coco["annotations"])
        images = [(split_dir / "images" / im["file_name"]).read_bytes() for im in coco["images"]]
        runs[name] = ((split_dir / sd.LABELS_NAME).read_text(), images)
    assert runs["a"] == runs["b"]
    assert runs["a"][1] != runs["c"][1]


def test_an_animal_keypoint_it_cannot_place_fails_naming_the_file_and_the_keypoint(tmp_path, capsys):
    custom = tmp_path / "with_withers.json"
    custom.write_text(json.dumps({"name": "with_withers", "keypoints": ["neck", "withers"], "root": ["neck"],
                                  "limbs": [["neck", "withers"]], "sigmas": [0.05, 0.05]}))
    assert generate(tmp_path / "out", "--animals", "1", "2", "--animal-keypoints", str(custom)) == 2
    error = capsys.readouterr().err
    assert str(custom) in error and "'withers'" in error and "animal" in error
    assert not (tmp_path / "out").exists()  # nothing written before the check

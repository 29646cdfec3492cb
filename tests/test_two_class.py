"""People and animals in one model: on the maps of generated mixed scenes no person is ever assembled from an
animal's keypoints or the reverse, each class is scored on its own category with its own sigmas, and the two-class
quickstart (scripts/two_class_quickstart.py) runs end to end at a tiny size, val.py printing one row per class and
writing each class's category_id. The AP of so short a run means nothing; docs/synthetic-animals.md quotes the full
run's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

from lwpose import codec
from lwpose.datasets.class_labels import read_coco_classes
from lwpose.evaluation.classes import class_results, load_class_ground_truths, score_classes
from lwpose.inference.estimator import map_grouping
from lwpose.keypoints import load_keypoint_set

MAP_SCALE = 2  # the scenes' keypoints drawn on maps of twice the image's stride-8 size: fine enough to separate them


@pytest.fixture(scope="module")
def mixed_scenes(tmp_path_factory):
    """Generated scenes of 1-3 people and 1-2 animals (crowded: they stand beside and in front of each other), and the
    two-class set."""
    out = tmp_path_factory.mktemp("mixed")
    result = subprocess.run([sys.executable, "scripts/synthetic_data.py", "--output-dir", str(out / "data"),
                             "--train-images", "0", "--val-images", "24", "--mix-images", "0", "--video-frames", "0",
                             "--image-size", "160", "--people", "1", "3", "--animals", "1", "2",
                             "--partial-probability", "0", "--seed", "3", "--no-progress"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    set_path = out / "people_animals.json"
    result = subprocess.run([sys.executable, "scripts/make_keypoint_set.py", "--classes", "person=coco",
                             "animal=ap10k", "--output", str(set_path)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return str(out / "data" / "val" / "person_keypoints.json"), load_keypoint_set(str(set_path))


def ground_truth_maps(image, keypoint_set):
    """The heatmaps and PAFs of an image's instances (whole-set channels), on maps MAP_SCALE x the stride-8 size."""
    keypoints = np.array([p.keypoints for p in image.people if not p.iscrowd]).reshape(-1, keypoint_set.num_keypoints,
                                                                                        3)
    scaled = keypoints.copy()
    scaled[..., :2] *= MAP_SCALE
    size = (-(-image.height * MAP_SCALE // 8), -(-image.width * MAP_SCALE // 8))
    return codec.encode(scaled, keypoint_set, size), keypoints


# One shared channel (sharing both ends of a limb would make the classes' limbs one, which a set refuses).
SHARED_NOSE = [["person:nose", "animal:nose"]]


@pytest.mark.parametrize("shared", [False, True], ids=["own channels", "nose shared"])
def test_no_instance_is_assembled_from_another_class_on_mixed_scenes(mixed_scenes, shared):
    """Where the classes share the nose channel, its map holds both classes' noses: each instance still takes only
    its own class's."""
    labels, whole = mixed_scenes
    if shared:
        whole = load_keypoint_set({**whole.to_dict(), "shared": SHARED_NOSE})
        assert whole.num_keypoints == 33
    scenes = read_coco_classes(labels, whole).coco
    found_classes = set()
    decoded = 0
    for image in scenes.images:
        (heatmaps, pafs), truth = ground_truth_maps(image, whole)
        truth_class = [int(np.argmax([(t[c.channels, 2] > 0).sum() for c in whole.classes])) for t in truth]
        people = codec.decode(heatmaps, pafs, whole, map_grouping())
        for keypoints, class_id in zip(people.keypoints, people.class_ids):
            present = np.flatnonzero(keypoints[:, 2] > 0)
            # only its own class's channels ...
            assert set(present.tolist()) <= set(whole.classes[class_id].channels.tolist())
            # ... and every keypoint found on an instance of its own class, none on another class's
            points = keypoints[present, :2] / MAP_SCALE
            for point, channel in zip(points, present):
                distances = [np.hypot(*(t[channel, :2] - point)) if t[channel, 2] > 0 else np.inf for t in truth]
                nearest = int(np.argmin(distances))
                assert distances[nearest] < 4 and truth_class[nearest] == class_id
            decoded += 1
            found_classes.add(int(class_id))
    assert found_classes == {0, 1} and decoded >= len(scenes.images) * 2


@pytest.mark.parametrize("shared", [False, True], ids=["own channels", "nose shared"])
def test_one_pass_over_every_class_finds_what_each_class_alone_finds(mixed_scenes, shared):
    """The multi-class decoder finds peaks and limb candidates once for the whole set and assembles each class from
    its own limbs: the same instances as decoding each class's own maps with the class's own set."""
    labels, whole = mixed_scenes
    if shared:
        whole = load_keypoint_set({**whole.to_dict(), "shared": SHARED_NOSE})
    for image in read_coco_classes(labels, whole).coco.images:
        (heatmaps, pafs), _ = ground_truth_maps(image, whole)
        people = codec.decode(heatmaps, pafs, whole, map_grouping())
        for subject in whole.classes:
            alone = codec.decode(heatmaps[subject.channels], pafs[subject.paf_channels], subject.keypoint_set,
                                 map_grouping())
            mine = people.select(np.flatnonzero(people.class_ids == subject.index))
            assert len(mine) == len(alone) > 0
            np.testing.assert_array_equal(mine.keypoints[:, subject.channels], alone.keypoints)
            np.testing.assert_array_equal(mine.scores, alone.scores)
            others = np.setdiff1d(np.arange(whole.num_keypoints), subject.channels)
            assert (mine.keypoints[:, others, 2] == 0).all()


def test_each_class_is_scored_on_its_own_category_with_its_own_sigmas(mixed_scenes):
    labels, whole = mixed_scenes
    truths, unscored = load_class_ground_truths(labels, whole)
    assert [t.name for t in truths] == ["person", "animal"] and unscored == []
    person, animal = truths
    assert person.gt.keypoint_set.sigmas == load_keypoint_set("coco").sigmas
    assert animal.gt.keypoint_set.sigmas == load_keypoint_set("ap10k").sigmas
    assert (person.gt.category_id, animal.gt.category_id) == (1, 2)
    assert all(a["category_id"] == 2 for a in animal.gt.data["annotations"])
    scenes = read_coco_classes(labels, whole).coco
    detections = {0: [], 1: []}
    swapped = {0: [], 1: []}
    for image in scenes.images:
        (heatmaps, pafs), _ = ground_truth_maps(image, whole)
        people = codec.decode(heatmaps, pafs, whole, map_grouping())
        people.keypoints[..., :2] /= MAP_SCALE
        found = class_results(people, image.image_id, whole, truths)
        for class_index, results in found.items():
            assert all(r["category_id"] == truths[class_index].gt.category_id for r in results)
            detections[class_index] += results
            # the same detections filed under the other class's category
            other = truths[1 - class_index]
            swapped[1 - class_index] += [{**r, "category_id": other.gt.category_id} for r in results]
    report = score_classes(truths, truths[0].gt.images, detections)
    assert [row["class"] for row in report.rows] == ["person", "animal"]
    assert all(row["AP"] > 0.8 for row in report.rows), report.rows
    # an animal's detections are not a person's: scored against the other category they find nobody
    assert all(row["AP"] < 0.05 for row in score_classes(truths, truths[0].gt.images, swapped).rows)


def test_two_class_quickstart_end_to_end_at_a_tiny_size(tmp_path):
    result = subprocess.run([sys.executable, "scripts/two_class_quickstart.py", "--output-dir", str(tmp_path),
                             "--train-images", "12", "--val-images", "4", "--train-minutes", "0.05",
                             "--batch-size", "2", "--num-workers", "0", "--input-size", "64", "--image-size", "96",
                             "--no-progress"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["class", "keypoints", "instances"])
    assert [lines[header + 1].split()[0], lines[header + 2].split()[0]] == ["person", "animal"]
    with open(tmp_path / "validation.json") as f:
        metrics = json.load(f)
    assert set(metrics["classes"]) == {"person", "animal"}
    assert metrics["classes"]["animal"]["category_id"] == 2 and metrics["classes"]["animal"]["keypoint_set"] == "animal"
    with open(tmp_path / "detections.json") as f:
        detections = json.load(f)
    assert {d["category_id"] for d in detections} <= {1, 2}
    assert os.path.exists(tmp_path / "report.txt") and os.path.exists(tmp_path / "loss_curve.png")
    # val.py --mix with the multi-class model: one row per class of the source, named source-class
    checkpoint = (tmp_path / "report.txt").read_text().splitlines()[0].removeprefix("checkpoint: ")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"name": "scenes", "target": {"mode": "combine",
                                                               "keypoints": str(tmp_path / "people_animals.json")},
                                  "sources": [{"name": "scenes", "format": "coco",
                                               "labels": str(tmp_path / "data" / "val" / "person_keypoints.json"),
                                               "images_folder": str(tmp_path / "data" / "val" / "images")}]}))
    result = subprocess.run([sys.executable, "val.py", "--mix", str(recipe), "--checkpoint-path", checkpoint,
                             "--height-size", "64", "--metrics-out", str(tmp_path / "mix.json"), "--no-progress"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "mix.json") as f:
        rows = json.load(f)["datasets"]
    assert {name: row["keypoint_set"] for name, row in rows.items()} == {"scenes-person": "person",
                                                                          "scenes-animal": "animal"}


class GroundTruthMapsEstimator:
    """Stands in for a trained two-class network in the evaluation: decodes each image's ground-truth maps (found by
    its pixels), so every instance is found where it is labelled and the scores depend only on the evaluation."""

    def __init__(self, labels: str, images_folder: str, keypoint_set):
        from lwpose.images import read_image

        self.keypoint_set = keypoint_set
        self.by_pixels = {read_image(os.path.join(images_folder, image.file_name)).tobytes(): image
                          for image in read_coco_classes(labels, keypoint_set).coco.images}

    def estimate(self, image):
        return self.decode(self.by_pixels[image.tobytes()])

    def decode(self, scene):
        (heatmaps, pafs), _ = ground_truth_maps(scene, self.keypoint_set)
        people = codec.decode(heatmaps, pafs, self.keypoint_set, map_grouping())
        people.keypoints[..., :2] /= MAP_SCALE
        return people


def test_val_mix_scores_each_class_of_each_source_on_its_own_instances(mixed_scenes, tmp_path):
    """A multi-class recipe validated as val.py --mix does: one row per class a source has a category for (named
    `source-class` where it has several), each scoring only that class's instances with its own keypoints."""
    from lwpose.datasets.mix_evaluation import evaluation_sets, validate_mix
    from lwpose.datasets.mix_recipe import load_mix_recipe

    labels, whole = mixed_scenes
    images_folder = os.path.join(os.path.dirname(labels), "images")
    with open(labels) as f:
        data = json.load(f)
    animal_category = next(c["id"] for c in data["categories"] if c["name"] == "animal")
    animals_only = tmp_path / "animals_only.json"
    animals_only.write_text(json.dumps({**data, "categories": [c for c in data["categories"]
                                                               if c["id"] == animal_category],
                                        "annotations": [a for a in data["annotations"]
                                                        if a["category_id"] == animal_category]}))
    set_path = tmp_path / "people_animals.json"
    whole.save(str(set_path))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "name": "scenes", "target": {"mode": "combine", "keypoints": str(set_path)},
        "sources": [{"name": "scenes", "format": "coco", "labels": labels, "images_folder": images_folder},
                    {"name": "animals", "format": "coco", "labels": str(animals_only), "images_folder": images_folder,
                     "exhaustive": ["animal"]}]}))
    sets = evaluation_sets(load_mix_recipe(str(recipe)), whole)
    assert [(s.name, s.class_index, s.gt.keypoint_set.name) for s in sets] == [
        ("scenes-person", 0, "person"), ("scenes-animal", 1, "animal"), ("animals", 1, "animal")]
    oracle = GroundTruthMapsEstimator(labels, images_folder, whole)
    result = validate_mix(oracle, sets, progress=False)
    decoded = np.concatenate([oracle.decode(scene).class_ids for scene in oracle.by_pixels.values()])
    for row, evaluation in zip(result.rows, sets):
        assert row["AP"] > 0.8 and row["PCK@0.1"] > 0.8, row
        # only the instances of the row's class are scored, not the other class's
        assert row["num_detections"] == np.count_nonzero(decoded == evaluation.class_index), row
    assert {d["category_id"] for d in result.reports[1].detections} == {animal_category}

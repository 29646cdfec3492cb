"""Training data for a multi-class set: a COCO file's categories become its classes, each instance on its own class's
channels; a class a source does not label exhaustively is masked on every channel of that class and the background
is never trained there; prepare_train_labels.py and mix recipes take multi-class targets."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import MMPOSE_SAMPLES, REPO_ROOT, require_shared

from lwpose.datasets.augmentation import AugmentationConfig
from lwpose.datasets.class_labels import masks_background, read_coco_classes
from lwpose.datasets.coco_reader import AnnotationError
from lwpose.datasets.mix_recipe import RecipeError, load_mix_recipe, prepare_mixed_labels
from lwpose.datasets.pose_dataset import PoseTrainingDataset
from lwpose.datasets.prepared_labels import build_prepared_labels, load_prepared_labels
from lwpose.keypoints import load_keypoint_set

SIZE = 96


def two_classes():
    coco, ap10k = load_keypoint_set("coco").to_dict(), load_keypoint_set("ap10k").to_dict()
    return load_keypoint_set({"name": "people_animals", "classes": [{**coco, "name": "person"},
                                                                    {**ap10k, "name": "animal"}]})


def instance(keypoint_set, x0: float, seed: int) -> list:
    """Every keypoint labelled and visible, spread over a 30 x 60 px box from x0."""
    rng = np.random.default_rng(seed)
    points = np.column_stack([x0 + rng.uniform(0, 30, keypoint_set.num_keypoints),
                              rng.uniform(15, 75, keypoint_set.num_keypoints), np.full(keypoint_set.num_keypoints, 2)])
    return [round(float(v), 2) for v in points.ravel()]


def people_and_dogs(folder, dog_category: str = "dog", dog_keypoints: str = "ap10k") -> str:
    """One image, a person (coco) and an animal of category `dog_category` (keypoints of set `dog_keypoints`)."""
    os.makedirs(folder / "images", exist_ok=True)
    cv2.imwrite(str(folder / "images" / "a.jpg"), np.full((SIZE, SIZE, 3), 90, np.uint8))
    coco, ap10k = load_keypoint_set("coco"), load_keypoint_set(dog_keypoints)
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": SIZE, "height": SIZE}],
            "categories": [{"id": 1, "name": "person", "keypoints": list(coco.keypoints)},
                           {"id": 7, "name": dog_category, "keypoints": list(ap10k.keypoints)}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "keypoints": instance(coco, 10, 0),
                             "bbox": [10, 15, 30, 60], "area": 1800, "iscrowd": 0},
                            {"id": 11, "image_id": 1, "category_id": 7, "keypoints": instance(ap10k, 55, 1),
                             "bbox": [55, 15, 30, 60], "area": 1800, "iscrowd": 0}]}
    path = folder / "labels.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_each_category_lands_on_its_own_class_channels(tmp_path):
    whole = two_classes()
    person, animal = whole.classes
    path = people_and_dogs(tmp_path)
    read = read_coco_classes(path, whole, {"dog": "animal"})
    assert read.category_classes == {1: 0, 7: 1} and read.exhaustive == ("person", "animal")
    assert read.labelled.all()
    raw = json.loads(open(path).read())["annotations"]
    human, dog = read.coco.images[0].people
    # the person only on the person's channels, the animal only on the animal's, at their own coordinates
    assert (human.keypoints[animal.channels, 2] == 0).all() and (dog.keypoints[person.channels, 2] == 0).all()
    expected = np.asarray(raw[1]["keypoints"]).reshape(-1, 3)
    np.testing.assert_allclose(dog.keypoints[animal.channels, :2], expected[:, :2] - 0.5)
    assert not masks_background(whole, read.labelled)


def test_a_class_not_labelled_exhaustively_is_masked_and_never_background(tmp_path):
    whole = two_classes()
    person, animal = whole.classes
    path = people_and_dogs(tmp_path)
    read = read_coco_classes(path, whole, {"dog": "animal"}, exhaustive=["person"])
    assert read.labelled[person.channels].all() and not read.labelled[animal.channels].any()
    assert masks_background(whole, read.labelled)
    labels = build_prepared_labels(read.coco, whole, images_folder=str(tmp_path / "images"), labelled=read.labelled,
                                   conversion_note=read.describe())
    assert "not exhaustive: masked" in labels.sources[0].conversion
    dataset = PoseTrainingDataset(labels, augmentation=AugmentationConfig.off(64), progress=False)
    for index in range(len(dataset)):
        sample = dataset[index]
        heatmap_mask, paf_mask = sample["heatmap_channel_mask"], sample["paf_channel_mask"]
        assert (heatmap_mask[animal.channels] == 0).all() and (heatmap_mask[person.channels] == 1).all()
        assert (paf_mask[animal.paf_channels] == 0).all() and (paf_mask[person.paf_channels] == 1).all()
        # the background is masked everywhere: an unlabelled animal may stand anywhere
        assert heatmap_mask[whole.background_channel] == 0 and (sample["background_mask"] == 0).all()
    both = read_coco_classes(path, whole, {"dog": "animal"})
    dataset = PoseTrainingDataset(build_prepared_labels(both.coco, whole, images_folder=str(tmp_path / "images"),
                                                        labelled=both.labelled),
                                  augmentation=AugmentationConfig.off(64), progress=False)
    sample = dataset[0]
    assert (sample["heatmap_channel_mask"] == 1).all() and (sample["background_mask"] == 1).all()
    # both instances are drawn on their own channels
    assert sample["heatmaps"][person.channels].max() > 0.5 and sample["heatmaps"][animal.channels].max() > 0.5


def test_a_shared_channel_of_a_masked_class_is_masked(tmp_path):
    data = two_classes().to_dict()
    data["shared"] = [["person:nose", "animal:nose"]]
    whole = load_keypoint_set(data)
    read = read_coco_classes(people_and_dogs(tmp_path), whole, {"dog": "animal"}, exhaustive=["person"])
    assert not read.labelled[whole.index["nose"]]
    assert read.labelled[whole.index["left_eye"]]


@pytest.mark.parametrize("mapping, exhaustive, message", [
    (None, None, "category 'dog' is none of the classes"),  # Animal-Pose's names spell neither class
    ({"dog": "horse"}, None, "mapped to class 'horse'"),
    ({"cat": "animal"}, None, "no keypoint category is called 'cat'"),
    ({"dog": "person"}, None, "both class 'person'"),
    ({"dog": "animal"}, ["plant"], "class 'plant' declared exhaustive"),
])
def test_unmappable_categories_fail_naming_them(tmp_path, mapping, exhaustive, message):
    with pytest.raises(AnnotationError, match=message):
        read_coco_classes(people_and_dogs(tmp_path, dog_keypoints="animalpose"), two_classes(), mapping, exhaustive)


def test_categories_that_spell_a_class_or_are_mapped_by_star_join_it(tmp_path):
    """A category found by its keypoint names needs no mapping, whatever else the file holds; "*" maps every
    category not named otherwise (Animal-Pose's species), converted by the class's aliases."""
    whole = two_classes()
    person, animal = whole.classes
    spelled = read_coco_classes(people_and_dogs(tmp_path / "a"), whole)
    assert spelled.category_classes == {1: person.index, 7: animal.index}
    starred = read_coco_classes(people_and_dogs(tmp_path / "b", dog_keypoints="animalpose"), whole, {"*": "animal"})
    assert starred.category_classes == {1: person.index, 7: animal.index}
    dog = starred.coco.images[0].people[1].keypoints
    labelled = dog[:, 2] > 0
    assert not labelled[person.channels].any()
    # AP-10K's neck is the one joint Animal-Pose does not have
    assert [whole.keypoints[c] for c in animal.channels if not labelled[c]] == ["animal/neck"]


def species_file(folder, species: list[tuple[str, str]]) -> str:
    """One image with one animal per (category name, keypoint set) pair, each its own category."""
    os.makedirs(folder / "images", exist_ok=True)
    cv2.imwrite(str(folder / "images" / "a.jpg"), np.full((SIZE, SIZE, 3), 90, np.uint8))
    categories, annotations = [], []
    for i, (name, set_name) in enumerate(species):
        keypoint_set = load_keypoint_set(set_name)
        categories.append({"id": 20 + i, "name": name, "keypoints": list(keypoint_set.keypoints)})
        annotations.append({"id": 100 + i, "image_id": 1, "category_id": 20 + i, "area": 1800, "iscrowd": 0,
                            "keypoints": instance(keypoint_set, 5 + 30 * i, i), "bbox": [5 + 30 * i, 15, 30, 60]})
    path = folder / "labels.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": SIZE, "height": SIZE}],
                                "categories": categories, "annotations": annotations}))
    return str(path)


def test_several_species_are_one_class_and_scored_together(tmp_path):
    from lwpose.evaluation.classes import load_class_ground_truths, score_classes

    whole = two_classes()
    animal = whole.classes[1]
    path = species_file(tmp_path, [("antelope", "ap10k"), ("dog", "ap10k"), ("cat", "ap10k")])
    read = read_coco_classes(path, whole)
    assert set(read.category_classes.values()) == {animal.index}
    animals = read.coco.images[0].people
    assert len(animals) == 3 and all((a.keypoints[animal.channels, 2] > 0).all() for a in animals)
    truths, unscored = load_class_ground_truths(path, whole)
    assert [t.name for t in truths] == ["animal"] and unscored == ["person"]
    truth = truths[0]
    # The three labelled animals given back as detections: all three are ground truth of the one class.
    exact = [{"image_id": 1, "category_id": truth.gt.category_id, "keypoints": a["keypoints"], "score": 1.0}
             for a in json.load(open(path))["annotations"]]
    row, = score_classes(truths, truth.gt.images, {animal.index: exact}).rows
    assert row["instances"] == 3 and row["AP"] == pytest.approx(1.0)
    row, = score_classes(truths, truth.gt.images, {animal.index: exact[:1]}).rows
    assert row["AR"] == pytest.approx(1 / 3)


def test_one_class_from_categories_with_different_keypoints_fails_naming_both(tmp_path):
    path = species_file(tmp_path, [("dog", "ap10k"), ("cat", "animalpose")])
    with pytest.raises(AnnotationError, match="categories 'dog' and 'cat' are both class 'animal' but list "
                                              "different keypoints"):
        read_coco_classes(path, two_classes(), {"*": "animal"})


def test_the_ap10k_and_animal_pose_samples_read_into_the_animal_class():
    """The real files: AP-10K's 54 species by its keypoint names, Animal-Pose's through "*" and the aliases."""
    whole = two_classes()
    animal = whole.classes[1]
    ap10k = os.path.join(MMPOSE_SAMPLES, "ap10k", "test_ap10k.json")
    animal_pose = os.path.join(MMPOSE_SAMPLES, "animalpose", "test_animalpose.json")
    require_shared(ap10k, animal_pose)
    for labels, mapping, unlabelled in ((ap10k, None, 0), (animal_pose, {"*": "animal"}, 1)):
        read = read_coco_classes(labels, whole, mapping)
        assert set(read.category_classes.values()) == {animal.index}
        assert read.exhaustive == ("animal",)
        assert int((~read.conversions[animal.index].labelled).sum()) == unlabelled


def test_prepare_train_labels_and_a_mix_recipe_take_a_multi_class_set(tmp_path):
    path = people_and_dogs(tmp_path, dog_category="animal")
    set_path = tmp_path / "people_animals.json"
    two_classes().save(str(set_path))
    output = tmp_path / "prepared.json"
    result = subprocess.run([sys.executable, "scripts/prepare_train_labels.py", "--labels", path,
                             "--images-folder", str(tmp_path / "images"), "--keypoints", str(set_path),
                             "--exhaustive", "animal", "--min-keypoints", "1", "--output-name", str(output)],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    prepared = load_prepared_labels(str(output))
    person, animal = prepared.keypoint_set.classes
    # the masked person is no training sample (none of its keypoints counts), but stays in the image's instances
    assert prepared.keypoint_set.num_classes == 2 and len(prepared) == 1
    image_index, main = prepared.samples[0]
    assert (prepared.images[image_index].keypoints[main][animal.channels, 2] > 0).all()
    assert len(prepared.images[image_index].person_ids) == 2
    labelled = prepared.sources[0].labelled
    assert labelled[animal.channels].all() and not labelled[person.channels].any()

    recipe = {"name": "people_and_animals", "target": {"mode": "combine", "keypoints": str(set_path)},
              "sources": [{"name": "both", "format": "coco", "labels": path, "images_folder": str(tmp_path / "images"),
                           "source_ratio": 0.5},
                          {"name": "animals_only", "format": "coco", "labels": path,
                           "images_folder": str(tmp_path / "images"), "exhaustive": ["animal"], "source_ratio": 0.5}]}
    recipe_path = tmp_path / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    labels = prepare_mixed_labels(load_mix_recipe(str(recipe_path)), report=lambda line: None)
    assert [s.name for s in labels.sources] == ["both", "animals_only"]
    assert labels.sources[0].labelled.all()
    assert labels.sources[1].labelled[animal.channels].all() and not labels.sources[1].labelled[person.channels].any()

    recipe["sources"][1]["exhaustive"] = ["plant"]
    recipe_path.write_text(json.dumps(recipe))
    with pytest.raises(RecipeError, match=r"sources\[1\] \('animals_only'\)\.exhaustive"):
        load_mix_recipe(str(recipe_path))

"""Several kinds of subject in one keypoint set: classes load with every table derived per class, a malformed set
fails naming the entry, and grouping assembles each class from its own channels only."""
import copy

import numpy as np
import pytest

from lwpose import codec
from lwpose.inference.estimator import map_grouping
from lwpose.keypoints import KeypointSetError, load_keypoint_set


def two_classes() -> dict:
    person = load_keypoint_set("coco").to_dict()
    animal = load_keypoint_set("ap10k").to_dict()
    return {"name": "people_animals", "classes": [{**person, "name": "person"}, {**animal, "name": "animal"}]}


def test_classes_keep_their_own_names_limbs_and_flips():
    whole = load_keypoint_set(two_classes())
    person, animal = whole.classes
    coco, ap10k = load_keypoint_set("coco"), load_keypoint_set("ap10k")
    assert whole.num_classes == 2 and [c.name for c in whole.classes] == ["person", "animal"]
    assert whole.num_keypoints == coco.num_keypoints + ap10k.num_keypoints
    assert whole.num_limbs == coco.num_limbs + ap10k.num_limbs
    # the base class keeps its names, the others are named class/keypoint
    assert [whole.keypoints[c] for c in person.channels] == list(coco.keypoints)
    assert [whole.keypoints[c] for c in animal.channels] == [f"animal/{n}" for n in ap10k.keypoints]
    # the flip swaps left and right within each class, never across
    permutation = whole.flip_permutation
    for subject in whole.classes:
        own = subject.keypoint_set.flip_permutation
        assert list(permutation[subject.channels]) == list(subject.channels[own])
    # each class's PAF channels read its own limbs
    for subject in whole.classes:
        for limb, (x, y) in zip(subject.limbs, subject.keypoint_set.limb_paf_channels):
            assert list(whole.limb_paf_channels[limb]) == [subject.paf_channels[x], subject.paf_channels[y]]
    # what a checkpoint stores loads back the same
    again = load_keypoint_set(whole.to_dict())
    assert again.keypoints == whole.keypoints and again.limbs == whole.limbs and again.num_classes == 2


def test_single_class_sets_are_one_class_of_themselves():
    coco = load_keypoint_set("coco")
    assert coco.num_classes == 1 and coco.classes[0].name == "coco"
    assert list(coco.classes[0].channels) == list(range(coco.num_keypoints))
    assert "classes" not in coco.to_dict()


def test_a_shared_channel_is_one_channel_for_both_classes():
    data = two_classes()
    data["shared"] = [["person:nose", "animal:nose"]]
    whole = load_keypoint_set(data)
    person, animal = whole.classes
    nose = whole.index["nose"]
    assert person.channels[person.keypoint_set.index["nose"]] == nose
    assert animal.channels[animal.keypoint_set.index["nose"]] == nose
    assert "animal/nose" not in whole.keypoints


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["classes"][1]["limbs"].append(["nose", "person:left_eye"]), "classes[1] 'animal'"),
    (lambda d: d["classes"][1]["limbs"].remove(["neck", "root_of_tail"]), "cannot be reached from the root"),
    (lambda d: d.update(shared=[["person:left_eye", "animal:right_eye"]]), "different sides"),
    (lambda d: d.update(shared=[["person:nose", "animal:snout"]]), "has no keypoint 'snout'"),
    (lambda d: d["classes"][1].update(name="person"), "repeats classes[0]"),
    (lambda d: d.update(keypoints=["x"]), "unknown entries ['keypoints']"),
])
def test_a_malformed_multi_class_set_names_the_entry(break_it, message):
    data = copy.deepcopy(two_classes())
    break_it(data)
    with pytest.raises(KeypointSetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_keypoint_set(data)


def test_grouping_never_builds_an_instance_from_two_classes():
    """A person and an animal standing on each other's keypoints: each instance holds keypoints of one class."""
    whole = load_keypoint_set(two_classes())
    person, animal = whole.classes
    rng = np.random.default_rng(0)
    instances = np.zeros((4, whole.num_keypoints, 3))
    for i, subject in enumerate((person, animal, person, animal)):
        centre = np.array([120.0 + 90 * (i // 2), 140.0])  # each person overlaps an animal
        points = centre + rng.uniform(-60, 60, (len(subject.channels), 2))
        instances[i, subject.channels, :2] = points
        instances[i, subject.channels, 2] = 2
    heatmaps, pafs = codec.encode(instances, whole, (40, 48))
    found = codec.decode(heatmaps, pafs, whole, map_grouping())
    assert len(found) >= 2 and set(found.class_ids.tolist()) == {0, 1}
    for keypoints, class_id in zip(found.keypoints, found.class_ids):
        present = np.flatnonzero(keypoints[:, 2] > 0)
        assert set(present) <= set(whole.classes[class_id].channels.tolist())
    dicts = found.to_dicts()
    assert {d["class"] for d in dicts} == {"person", "animal"}
    animal_names = set(animal.keypoint_set.keypoints)
    assert all(set(d["keypoints"]) <= animal_names for d in dicts if d["class"] == "animal")

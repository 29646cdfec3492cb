"""Union keypoint sets (scripts/make_keypoint_set.py): the base set's channels stay where they were, equivalences
become aliases that carry every source into the union by name, flips and sigmas are derived, and a bad equivalence
fails naming its entry."""
import json
import os

import numpy as np
import pytest
from training_data import run_tool

from conftest import REPO_ROOT
from lwpose.datasets.conversion import KeypointConversion
from lwpose.keypoints import KeypointSetError, load_keypoint_set
from lwpose.keypoints.union import build_union_set

RECIPES = os.path.join(REPO_ROOT, "datasets", "recipes")
PEOPLE_UNION_ARGS = ["--sets", "lwop18", "aic", "mpii", "--same", "aic:head_top", "mpii:head_top",
                     "--same", "lwop18:neck", "mpii:thorax", "--drop", "mpii:pelvis", "mpii:upper_neck",
                     "--name", "lwop18_head_top"]
ANIMAL_EQUIVALENCES = [("root_of_tail", "tail_base"), ("left_shoulder", "left_front_elbow"),
                       ("right_shoulder", "right_front_elbow"), ("left_elbow", "left_front_knee"),
                       ("right_elbow", "right_front_knee"), ("left_hip", "left_back_elbow"),
                       ("right_hip", "right_back_elbow"), ("left_knee", "left_back_knee"),
                       ("right_knee", "right_back_knee")]
ANIMAL_UNION_ARGS = ["--sets", "ap10k", "animalpose", "--name", "animal_union"] + [
    arg for a, b in ANIMAL_EQUIVALENCES for arg in ("--same", f"ap10k:{a}", f"animalpose:{b}")]


def make_set(tmp_path, *args):
    output = tmp_path / "union.json"
    result = run_tool("scripts/make_keypoint_set.py", *args, "--output", output)
    assert result.returncode == 0, result.stdout + result.stderr
    return output, result.stdout


def test_lwop18_grows_head_top_with_its_own_channels_first(tmp_path):
    output, stdout = make_set(tmp_path, *PEOPLE_UNION_ARGS)
    assert "1 new: head_top" in stdout
    union, lwop, aic = load_keypoint_set(str(output)), load_keypoint_set("lwop18"), load_keypoint_set("aic")
    assert union.keypoints == lwop.keypoints + ("head_top",)
    assert union.limbs == lwop.limbs + (("neck", "head_top"),)  # carried from AIC; MPII's upper_neck is dropped
    # The released model's PAF channels keep their places; the new limb's two channels follow them.
    assert union.limb_paf_channels[:lwop.num_limbs].tolist() == lwop.limb_paf_channels.tolist()
    assert union.limb_paf_channels[-1].tolist() == [lwop.num_pafs, lwop.num_pafs + 1]
    assert union.sigmas[-1] == aic.sigmas[aic.index["head_top"]] and union.sigmas[:-1] == lwop.sigmas
    assert union.flip_permutation[:lwop.num_keypoints].tolist() == lwop.flip_permutation.tolist()
    assert union.flip_permutation[-1] == union.index["head_top"]
    assert union.aliases["neck"] == ("thorax",)
    assert union.derived_keypoints["neck"]["midpoint_of"] == ("left_shoulder", "right_shoulder")
    # Every source lands in the union by name alone: MPII's thorax is the neck, COCO's neck the shoulders' midpoint.
    mpii = KeypointConversion.by_name(load_keypoint_set("mpii"), union)
    assert mpii.first[union.index["neck"]] == load_keypoint_set("mpii").index["thorax"]
    coco = KeypointConversion.by_name(load_keypoint_set("coco"), union)
    assert coco.second[union.index["neck"]] >= 0 and not coco.labelled[union.index["head_top"]]


def test_shipped_recipe_sets_are_what_make_keypoint_set_writes(tmp_path):
    people_animals_args = ["--classes", "person=coco", "animal=ap10k", "--name", "people_animals"]
    for name, args in (("lwop18_head_top", PEOPLE_UNION_ARGS), ("animal_union", ANIMAL_UNION_ARGS),
                       ("people_animals", people_animals_args)):
        output, _ = make_set(tmp_path, *args)
        with open(os.path.join(RECIPES, f"{name}.json")) as f:
            assert json.loads(output.read_text()) == json.load(f), name


def test_animal_union_joins_equivalent_joints_and_derives_the_flip():
    union = build_union_set({"sets": ["ap10k", "animalpose"], "name": "animals",
                             "same": [[f"ap10k:{a}", f"animalpose:{b}"] for a, b in ANIMAL_EQUIVALENCES]})
    ap10k, animalpose = load_keypoint_set("ap10k"), load_keypoint_set("animalpose")
    assert union.keypoints == ap10k.keypoints + ("left_ear_base", "right_ear_base", "throat", "withers")
    conversion = KeypointConversion.by_name(animalpose, union)
    for a, b in ANIMAL_EQUIVALENCES:
        assert conversion.first[union.index[a]] == animalpose.index[b]
    assert not conversion.labelled[union.index["neck"]]  # Animal-Pose has no neck: unlabelled, not invisible
    swapped = union.flip_permutation
    assert swapped[union.index["left_ear_base"]] == union.index["right_ear_base"]
    assert swapped[union.index["throat"]] == union.index["throat"]
    assert union.can_flip
    # The new keypoints hang on Animal-Pose's limbs, so grouping reaches them from the root.
    assert ("withers", "throat") in union.limbs and ("left_eye", "left_ear_base") in union.limbs
    assert union.sigmas[union.index["throat"]] == animalpose.sigmas[animalpose.index["throat"]]


@pytest.mark.parametrize("spec, message", [
    ({"sets": ["lwop18", "aic"], "same": [["aic:head_tp", "lwop18:nose"]]},
     "same[0][0] = 'aic:head_tp': keypoint set 'aic' has no keypoint 'head_tp'"),
    ({"sets": ["lwop18", "aic"], "same": [["mpii:head_top", "aic:head_top"]]},
     "same[0][0] = 'mpii:head_top': 'mpii' is not one of the sets"),
    ({"sets": ["lwop18", "aic"], "drop": ["lwop18:nose"]}, "drop[0] = 'lwop18:nose': the base set 'lwop18' stays"),
    ({"sets": ["lwop18", "aic"], "limbs": [["neck", "crown"]]},
     "limbs[0] = ['neck', 'crown']: 'crown' is not a keypoint of the union"),
    ({"sets": ["lwop18", "aic"], "limbs": []}, "keypoint 'head_top' cannot be reached from the root"),
    ({"sets": ["lwop18", "aic"], "same": [["aic:neck", "aic:head_top"]]}, "would become one keypoint"),
])
def test_a_bad_union_fails_naming_the_entry(spec, message):
    with pytest.raises(KeypointSetError) as error:
        build_union_set(spec, where="spec.json")
    assert "spec.json" in str(error.value) and message in str(error.value)


def test_make_keypoint_set_reports_an_unknown_keypoint_without_a_traceback(tmp_path):
    result = run_tool("scripts/make_keypoint_set.py", "--sets", "lwop18", "aic", "--same", "aic:head_tp",
                      "lwop18:nose", "--output", tmp_path / "out.json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "same[0][0] = 'aic:head_tp'" in result.stderr and not (tmp_path / "out.json").exists()


def test_explicit_midpoints_and_limbs_for_new_keypoints():
    union = build_union_set({"sets": ["coco", "mpii"], "name": "coco_pelvis", "drop": ["mpii:thorax",
                                                                                        "mpii:upper_neck"],
                             "limbs": [["pelvis", "left_hip"], ["pelvis", "right_hip"], ["nose", "head_top"]],
                             "derived": {"pelvis": ["left_hip", "right_hip"]}})
    assert union.keypoints[-2:] == ("pelvis", "head_top")
    assert union.limbs[-3:] == (("pelvis", "left_hip"), ("pelvis", "right_hip"), ("nose", "head_top"))
    coco = load_keypoint_set("coco")
    conversion = KeypointConversion.by_name(coco, union)
    pelvis = union.index["pelvis"]
    assert {conversion.first[pelvis], conversion.second[pelvis]} == {coco.index["left_hip"], coco.index["right_hip"]}
    people = np.zeros((1, coco.num_keypoints, 3))
    people[0, coco.index["left_hip"]] = (10, 20, 2)
    people[0, coco.index["right_hip"]] = (30, 40, 1)
    assert conversion.convert(people)[0, pelvis].tolist() == [20, 30, 1]

"""Keypoint sets: shipped sets load, tables are derived (and equal the reference's hand-written ones for lwop18),
malformed sets fail at load naming the file and the entry."""
import json

import numpy as np
import pytest

from lwpose.keypoints import KeypointSetError, load_keypoint_set, shipped_set_names

# REFERENCE.md's tables for the released model, written out by hand here (and only here) to check the derivation.
REFERENCE_LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                   (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17)]
REFERENCE_PAF_CHANNELS = [(12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5),
                          (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19),
                          (26, 27)]
REFERENCE_FLIP = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]
EXPECTED_COUNTS = {"coco": 17, "lwop18": 18, "aic": 14, "mpii": 16, "crowdpose": 14, "ap10k": 17, "animalpose": 20}


def test_every_required_set_is_shipped_with_its_keypoint_count():
    assert set(EXPECTED_COUNTS) <= set(shipped_set_names())
    for name, count in EXPECTED_COUNTS.items():
        keypoint_set = load_keypoint_set(name)
        assert keypoint_set.num_keypoints == count
        assert keypoint_set.num_heatmaps == count + 1
        assert keypoint_set.num_pafs == 2 * keypoint_set.num_limbs
        assert len(keypoint_set.sigmas) == count


def test_lwop18_limbs_and_paf_channels_equal_the_reference_tables():
    lwop = load_keypoint_set("lwop18")
    assert lwop.limb_keypoints.tolist() == [list(p) for p in REFERENCE_LIMBS]
    assert lwop.limb_paf_channels.tolist() == [list(p) for p in REFERENCE_PAF_CHANNELS]
    assert lwop.num_heatmaps == 19 and lwop.num_pafs == 38
    # The two shoulder-ear limbs only fill in ears, and are assembled last.
    assert np.flatnonzero(lwop.fill_in_mask).tolist() == [17, 18]
    assert lwop.assembly_order.tolist() == list(range(19))


def test_lwop18_flip_permutation_equals_the_reference_swap():
    assert load_keypoint_set("lwop18").flip_permutation.tolist() == REFERENCE_FLIP


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_flip_tables_are_involutions_that_swap_sides(name):
    ks = load_keypoint_set(name)
    perm = ks.flip_permutation
    assert (perm[perm] == np.arange(ks.num_keypoints)).all()
    for i, j in enumerate(perm):
        if i != j:
            assert {ks.sides[i], ks.sides[j]} == {"left", "right"}
        else:
            assert ks.sides[i] == "center"
    channels, signs = ks.paf_flip_channels
    assert sorted(channels.tolist()) == list(range(ks.num_pafs))
    # Applying the PAF flip twice gives back the original channels with their original signs.
    assert (channels[channels] == np.arange(ks.num_pafs)).all()
    assert np.allclose(signs * signs[channels], 1)


# AI Challenger's constants were measured per keypoint, and MMPose's Animal-Pose list is kept as published, so
# neither is mirror-symmetric; every other shipped set's published sigmas are.
ASYMMETRIC_PUBLISHED_SIGMAS = {"aic", "animalpose"}


@pytest.mark.parametrize("name", sorted(set(EXPECTED_COUNTS) - ASYMMETRIC_PUBLISHED_SIGMAS))
def test_mirrored_keypoints_have_equal_oks_sigmas(name):
    # Sigmas are listed in each set's own keypoint order; a list copied in another order (pairs side by side where
    # the set lists one side's whole limb first) scores one side of every subject too harshly.
    ks = load_keypoint_set(name)
    for i, j in enumerate(ks.flip_permutation):
        assert ks.sigmas[i] == ks.sigmas[j], (name, ks.keypoints[i], ks.keypoints[j])


def test_paf_flip_negates_x_and_swaps_mirrored_limbs():
    lwop = load_keypoint_set("lwop18")
    channels, signs = lwop.paf_flip_channels
    r_elbow_wrist, l_elbow_wrist = lwop.limb_paf_channels[3], lwop.limb_paf_channels[5]
    assert channels[r_elbow_wrist[0]] == l_elbow_wrist[0] and signs[r_elbow_wrist[0]] == -1
    assert channels[r_elbow_wrist[1]] == l_elbow_wrist[1] and signs[r_elbow_wrist[1]] == 1


def write_set(tmp_path, **overrides):
    data = {"name": "tiny", "keypoints": ["head", "l_hand", "r_hand"], "root": ["head"],
            "limbs": [["head", "l_hand"], ["head", "r_hand"]], "sigmas": [0.05, 0.05, 0.05]}
    data.update(overrides)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_short_side_prefixes_are_paired_and_a_custom_set_round_trips(tmp_path):
    ks = load_keypoint_set(write_set(tmp_path))
    assert ks.flip_pairs == ((1, 2),)
    again = load_keypoint_set(ks.to_dict())
    assert again.flip_permutation.tolist() == ks.flip_permutation.tolist()
    assert again.limb_paf_channels.tolist() == ks.limb_paf_channels.tolist()


def test_explicit_flip_pairs_override_the_names(tmp_path):
    ks = load_keypoint_set(write_set(tmp_path, keypoints=["head", "port", "starboard"],
                                     limbs=[["head", "port"], ["head", "starboard"]],
                                     flip_pairs=[["port", "starboard"]]))
    assert ks.flip_permutation.tolist() == [0, 2, 1]


@pytest.mark.parametrize("overrides, expected", [
    ({"limbs": [["head", "l_hand"], ["head", "foot"]]}, "limbs[1] = ['head', 'foot']: unknown keypoint 'foot'"),
    ({"keypoints": ["head", "l_hand", "head"]}, "keypoints[2] = 'head' duplicates keypoints[0]"),
    ({"limbs": [["head", "l_hand"]]}, "keypoint 'r_hand' cannot be reached from the root"),
    ({"sigmas": [0.05, 0.05]}, "'sigmas' has 2 values for 3 keypoints"),
    ({"root": ["tail"]}, "root[0] = 'tail': unknown keypoint"),
    ({"fill_in_limbs": [["head", "r_hand"]]}, "keypoint 'r_hand' cannot be reached"),
    ({"paf_order": [["head", "l_hand"], ["l_hand", "head"]]}, "paf_order[1]"),
])
def test_malformed_sets_fail_at_load_naming_file_and_entry(tmp_path, overrides, expected):
    path = write_set(tmp_path, **overrides)
    with pytest.raises(KeypointSetError) as error:
        load_keypoint_set(path)
    assert path in str(error.value)
    assert expected in str(error.value)


def test_unknown_set_name_lists_the_shipped_sets():
    with pytest.raises(KeypointSetError, match="coco"):
        load_keypoint_set("no_such_set")


def test_annotation_names_match_through_aliases():
    assert load_keypoint_set("aic").matches_names(
        ["Right Shoulder", "Right Elbow", "Right Wrist", "Left Shoulder", "Left Elbow", "Left Wrist", "Right Hip",
         "Right Knee", "Right Ankle", "Left Hip", "Left Knee", "Left Ankle", "Head top", "Neck"])
    animal = load_keypoint_set("animalpose")
    assert animal.find("L_F_Paw") == animal.index["left_front_paw"]


def test_name_mapping_drops_keypoints_the_other_set_lacks():
    lwop, coco = load_keypoint_set("lwop18"), load_keypoint_set("coco")
    mapping = lwop.indices_in(coco)
    assert (mapping >= 0).all()
    assert lwop.index["neck"] not in mapping.tolist()
    assert [lwop.keypoints[i] for i in mapping] == list(coco.keypoints)

"""Grouping: people come back from ideal maps for any keypoint set, fill-in limbs never create people, and
degenerate maps give empty results."""
import numpy as np
import pytest
from synthetic_maps import render_maps, standing_person

from lwpose.inference.grouping import GroupingParams, decode_people
from lwpose.keypoints import load_keypoint_set


def match_people(decoded, truth):
    """For each true person, the decoded person whose present keypoints are closest on average."""
    matches = []
    for points in truth:
        present = ~np.isnan(points[:, 0])
        errors = [np.nanmean(np.where(d[present, 2] > 0, np.linalg.norm(d[present, :2] - points[present], axis=1),
                                      np.inf)) for d in decoded.keypoints]
        matches.append(int(np.argmin(errors)))
    return matches


@pytest.mark.parametrize("set_name", ["lwop18", "coco", "aic", "mpii", "crowdpose"])
def test_people_side_by_side_are_separated_for_any_human_set(set_name):
    ks = load_keypoint_set(set_name)
    truth = [standing_person(ks, 40, 10), standing_person(ks, 75, 14), standing_person(ks, 110, 8, scale=0.8)]
    heatmaps, pafs = render_maps(truth, ks, 100, 140)
    people = decode_people(heatmaps, pafs, ks)
    assert len(people) == 3
    matches = match_people(people, truth)
    assert sorted(matches) == [0, 1, 2]
    for points, m in zip(truth, matches):
        present = ~np.isnan(points[:, 0])
        found = people.keypoints[m]
        assert (found[present, 2] > 0).all(), "every labelled keypoint is found"
        assert np.abs(found[present, :2] - points[present]).max() <= 1.0
        assert (found[~present, 2] == 0).all()


def test_animal_skeleton_groups_two_animals():
    ks = load_keypoint_set("ap10k")
    rng = np.random.default_rng(0)
    truth = []
    for offset in (30, 90):
        base = {"nose": (-18, 0), "left_eye": (-16, -3), "right_eye": (-16, 3), "neck": (-10, 2),
                "root_of_tail": (20, 0), "left_shoulder": (-8, 6), "right_shoulder": (-6, 4), "left_elbow": (-8, 14),
                "right_elbow": (-5, 13), "left_front_paw": (-8, 24), "right_front_paw": (-4, 23),
                "left_hip": (18, 6), "right_hip": (20, 4), "left_knee": (18, 14), "right_knee": (21, 13),
                "left_back_paw": (18, 24), "right_back_paw": (22, 23)}
        truth.append(np.array([[offset + base[n][0] * 1.2, 20 + base[n][1] * 1.2] for n in ks.keypoints], np.float32)
                     + rng.uniform(-0.3, 0.3, (ks.num_keypoints, 2)).astype(np.float32))
    heatmaps, pafs = render_maps(truth, ks, 60, 130, sigma=1.5, paf_width=1.0)
    people = decode_people(heatmaps, pafs, ks)
    assert len(people) == 2
    for points, m in zip(truth, match_people(people, truth)):
        assert np.abs(people.keypoints[m, :, :2] - points).max() <= 1.0


def test_crossing_arms_of_close_people_follow_the_pafs():
    ks = load_keypoint_set("lwop18")
    left, right = standing_person(ks, 40, 10), standing_person(ks, 64, 10)
    # Each person reaches into the other's space: wrists end up past each other.
    left[ks.index["left_elbow"]] = (54, 26)
    left[ks.index["left_wrist"]] = (66, 30)
    right[ks.index["right_elbow"]] = (50, 30)
    right[ks.index["right_wrist"]] = (38, 36)
    heatmaps, pafs = render_maps([left, right], ks, 100, 110, paf_width=1.0)
    people = decode_people(heatmaps, pafs, ks)
    assert len(people) == 2
    for points, m in zip([left, right], match_people(people, [left, right])):
        assert np.abs(people.keypoints[m, :, :2] - points).max() <= 1.0


def test_fill_in_limbs_add_a_missing_ear_but_never_create_a_person():
    ks = load_keypoint_set("lwop18")
    person = standing_person(ks, 50, 10)
    for name in ("nose", "right_eye", "left_eye"):  # the ears can only be reached through the shoulders
        person[ks.index[name]] = np.nan
    lone = np.full_like(person, np.nan)  # a shoulder and an ear alone: only a fill-in limb joins them
    lone[ks.index["right_shoulder"]] = (100, 40)
    lone[ks.index["right_ear"]] = (104, 30)
    heatmaps, pafs = render_maps([person, lone], ks, 100, 130)
    people = decode_people(heatmaps, pafs, ks)
    assert len(people) == 1
    assert people.keypoints[0, ks.index["right_ear"], 2] > 0
    assert people.keypoints[0, ks.index["left_ear"], 2] > 0
    # fill-in keypoints do not count towards the person's keypoint number
    assert people.num_keypoints[0] == np.sum(~np.isnan(person[:, 0])) - 2


@pytest.mark.parametrize("fill", [0.0, 1.0, np.nan])
def test_degenerate_maps_give_no_people(fill):
    ks = load_keypoint_set("lwop18")
    heatmaps = np.full((ks.num_heatmaps, 40, 50), fill, np.float32)
    pafs = np.full((ks.num_pafs, 40, 50), fill, np.float32)
    assert len(decode_people(heatmaps, pafs, ks)) == 0


def test_maps_of_the_wrong_size_are_refused_with_the_set_named():
    ks = load_keypoint_set("coco")
    with pytest.raises(ValueError, match="coco"):
        decode_people(np.zeros((5, 10, 10), np.float32), np.zeros((4, 10, 10), np.float32), ks)


def test_sub_pixel_refinement_finds_peaks_between_cells():
    ks = load_keypoint_set("lwop18")
    person = standing_person(ks, 40.4, 10.3)
    heatmaps, pafs = render_maps([person], ks, 100, 80)
    refined = decode_people(heatmaps, pafs, ks, GroupingParams(refine_peaks=True))
    plain = decode_people(heatmaps, pafs, ks)
    present = ~np.isnan(person[:, 0])
    err_refined = np.abs(refined.keypoints[0, present, :2] - person[present]).mean()
    err_plain = np.abs(plain.keypoints[0, present, :2] - person[present]).mean()
    assert err_refined < 0.5 * err_plain

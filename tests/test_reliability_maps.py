"""Grouping on degenerate network output: flat, saturated, NaN- and inf-riddled maps and crowds of 500 peaks per
channel end within a generous bound (run in a child process that is killed if it hangs) with empty or sane people."""
import multiprocessing

import numpy as np
import pytest
from synthetic_maps import render_maps, standing_person

from lwpose.inference.grouping import GroupingParams, decode_people
from lwpose.keypoints import load_keypoint_set

HANG_SECONDS = 180  # generous: a crowd decodes in seconds; this only tells a hang from slowness
PEAKS_PER_CHANNEL = 500
PEAK_SPACING = 8  # map cells between peaks: more than the NMS radius, so every peak survives


def decode_in_child(heatmaps, pafs, set_name, params=GroupingParams()):
    """decode_people in a forked process; a hang fails the test instead of stalling the suite."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pending = pool.apply_async(decode_people, (heatmaps, pafs, load_keypoint_set(set_name), params))
        try:
            return pending.get(timeout=HANG_SECONDS)
        except multiprocessing.TimeoutError:
            pool.terminate()
            pytest.fail(f"grouping did not finish within {HANG_SECONDS} s")


def assert_sane(people, keypoint_set, height, width, at_most):
    assert len(people) <= at_most
    assert np.isfinite(people.keypoints).all() and np.isfinite(people.scores).all()
    found = people.keypoints[..., 2] > 0
    assert ((people.keypoints[..., 0][found] >= -1) & (people.keypoints[..., 0][found] <= width)).all()
    assert ((people.keypoints[..., 1][found] >= -1) & (people.keypoints[..., 1][found] <= height)).all()
    assert (people.num_keypoints <= keypoint_set.num_keypoints).all()


def crowded_maps(keypoint_set, paf_value):
    rows, cols = 20, PEAKS_PER_CHANNEL // 20
    height, width = rows * PEAK_SPACING, cols * PEAK_SPACING
    heatmaps = np.zeros((keypoint_set.num_heatmaps, height, width), np.float32)
    ys = np.arange(rows) * PEAK_SPACING + PEAK_SPACING // 2
    xs = np.arange(cols) * PEAK_SPACING + PEAK_SPACING // 2
    rng = np.random.default_rng(0)
    for channel in range(keypoint_set.num_keypoints):
        heatmaps[channel][np.ix_(ys, xs)] = rng.uniform(0.5, 1.0, (rows, cols))
    pafs = np.full((keypoint_set.num_pafs, height, width), paf_value, np.float32)
    return heatmaps, pafs


@pytest.mark.parametrize("paf_value", [1.0, 0.7], ids=["every-pair-connects", "diagonal-field"])
def test_500_peaks_per_channel_group_in_bounded_time_into_a_sane_crowd(paf_value):
    ks = load_keypoint_set("lwop18")
    heatmaps, pafs = crowded_maps(ks, paf_value)
    assert (heatmaps[0] > 0).sum() == PEAKS_PER_CHANNEL
    people = decode_in_child(heatmaps, pafs, "lwop18")
    assert_sane(people, ks, *heatmaps.shape[1:], at_most=PEAKS_PER_CHANNEL * ks.num_keypoints)
    assert len(people) > 0  # a crowd is found, not given up on


@pytest.mark.parametrize("fill", [0.0, 1.0, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("refine", [False, True], ids=["image-decoding", "map-decoding"])
def test_flat_maps_give_no_people(fill, refine):
    ks = load_keypoint_set("coco")
    heatmaps = np.full((ks.num_heatmaps, 40, 50), fill, np.float32)
    pafs = np.full((ks.num_pafs, 40, 50), fill, np.float32)
    params = GroupingParams(refine_peaks=refine, refine_on_cubic=refine, bilinear_paf=refine)
    assert len(decode_in_child(heatmaps, pafs, "coco", params)) == 0


@pytest.mark.parametrize("refine", [False, True], ids=["image-decoding", "map-decoding"])
def test_nan_and_inf_speckles_leave_a_real_person_found_with_finite_keypoints(refine):
    ks = load_keypoint_set("lwop18")
    person = standing_person(ks, 40, 10)
    heatmaps, pafs = render_maps([person], ks, 100, 80)
    rng = np.random.default_rng(1)
    for maps in (heatmaps, pafs):
        speckles = rng.random(maps.shape) < 0.02
        maps[speckles] = rng.choice([np.nan, np.inf, -np.inf], speckles.sum())
    params = GroupingParams(refine_peaks=refine, refine_on_cubic=refine, bilinear_paf=refine)
    people = decode_in_child(heatmaps, pafs, "lwop18", params)
    assert_sane(people, ks, 100, 80, at_most=3)
    assert len(people) >= 1

"""The fast decoding path (map resolution): limb scoring stops early without changing a verdict, PAFs are read
between cells, refined peaks of one blob collapse into one, heatmaps finer than the PAFs land on the right
coordinates, a crowd of 100 decodes completely, and the path the demo uses keeps the reference's COCO AP."""
import os

import cv2
import numpy as np
import pytest
from synthetic_maps import render_maps, standing_person
from test_val_coco import run_val

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, HPE_XML, MMPOSE_SAMPLES, require_shared
from lwpose.images import read_image
from lwpose.inference.estimator import PoseEstimator
from lwpose.inference.grouping import (REFINE_NONE, REFINE_PARABOLA, GroupingParams, _cubic_lattice, _limb_connections,
                                       _sample, decode_people, find_peaks)
from lwpose.inference.torch_backend import TorchBackend
from lwpose.interop.checkpoint import load_model
from lwpose.keypoints import load_keypoint_set

SAMPLES_COCO = os.path.join(MMPOSE_SAMPLES, "coco")


def limb_connections_sampling_every_point(peaks, a_rows, b_rows, paf_x, paf_y, n_samples, min_score, ratio,
                                          bilinear):
    """Oracle: every sample of every candidate, then the same greedy pick."""
    def value(paf, x, y):
        h, w = paf.shape
        if not bilinear:
            return paf[min(max(int(np.floor(y + 0.5)), 0), h - 1), min(max(int(np.floor(x + 0.5)), 0), w - 1)]
        x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
        x0, y0 = min(int(x), w - 2), min(int(y), h - 2)
        fx, fy = x - x0, y - y0
        return ((paf[y0, x0] * (1 - fx) + paf[y0, x0 + 1] * fx) * (1 - fy)
                + (paf[y0 + 1, x0] * (1 - fx) + paf[y0 + 1, x0 + 1] * fx) * fy)

    candidates = []
    for i in a_rows:
        for j in b_rows:
            d = peaks[j, :2].astype(np.float64) - peaks[i, :2]
            norm = np.hypot(*d)
            if norm < 1e-6:
                continue
            u = d / norm
            dots = [value(paf_x, *(peaks[i, :2] + t * d)) * u[0] + value(paf_y, *(peaks[i, :2] + t * d)) * u[1]
                    for t in np.linspace(0, 1, n_samples)]
            good = [v for v in dots if v > min_score]
            if good and np.mean(good) > 0 and len(good) > ratio * n_samples:
                candidates.append((i, j, np.mean(good)))
    candidates.sort(key=lambda c: -c[2])
    used_a, used_b, picked = set(), set(), []
    for i, j, score in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            picked.append((i, j, score))
    return picked


@pytest.mark.parametrize("bilinear", [False, True])
def test_limb_scoring_that_stops_early_keeps_every_verdict_of_full_sampling(bilinear):
    rng = np.random.default_rng(3)
    for _ in range(20):
        paf_x = rng.normal(0.3, 0.5, (24, 30)).astype(np.float32)
        paf_y = rng.normal(-0.2, 0.5, (24, 30)).astype(np.float32)
        peaks = np.zeros((14, 4), np.float32)
        peaks[:, 0] = rng.uniform(0, 29, 14)
        peaks[:, 1] = rng.uniform(0, 23, 14)
        peaks[:, 2] = rng.uniform(0.1, 1, 14)
        peaks[7:, 3] = 1
        got = _limb_connections(peaks, 0, 7, 7, 14, paf_x, paf_y, 10, 0.05, 0.8, bilinear)
        expected = limb_connections_sampling_every_point(peaks, range(7), range(7, 14), paf_x, paf_y, 10, 0.05,
                                                         0.8, bilinear)
        assert [(int(r[0]), int(r[1])) for r in got] == [(i, j) for i, j, _ in expected]
        np.testing.assert_allclose(got[:, 2], [s for _, _, s in expected], rtol=1e-5)



@pytest.mark.parametrize("bilinear", [False, True])
def test_crowd_limb_scoring_with_the_table_of_sure_misses_keeps_every_verdict(bilinear):
    """Enough pairs for the table of sure misses and the two-lookup precheck to switch on: field in a few bands
    pointing roughly along them (pairs inside a band pass), noisy blobs, and the rest of the map at zero or just
    under the threshold, where the precheck must not misjudge."""
    rng = np.random.default_rng(5)
    for _ in range(6):
        paf_x = np.zeros((20, 24), np.float32)
        paf_y = np.zeros((20, 24), np.float32)
        paf_x[rng.random((20, 24)) < 0.3] = 0.0499  # just too weak to count
        for _ in range(4):
            y, x = rng.integers(0, 17), rng.integers(0, 21)
            paf_x[y:y + 3, x:x + 3] = rng.normal(0.5, 0.5)
            paf_y[y:y + 3, x:x + 3] = rng.normal(0.0, 0.5)
        band_rows = rng.choice(np.arange(1, 18, 4), 3, replace=False)
        for y in band_rows:
            paf_x[y - 1:y + 2] = rng.uniform(0.3, 1.0, (3, 24))
            paf_y[y - 1:y + 2] = rng.normal(0.0, 0.1, (3, 24))
        count = 40
        peaks = np.zeros((2 * count, 4), np.float32)
        peaks[:, 0] = rng.uniform(0, 23, 2 * count)
        peaks[:, 1] = rng.uniform(0, 19, 2 * count)
        peaks[:20, 1] = rng.choice(band_rows, 20) + rng.uniform(-0.5, 0.5, 20)  # a ends inside the bands
        peaks[count:count + 20, 1] = rng.choice(band_rows, 20) + rng.uniform(-0.5, 0.5, 20)  # b ends too
        peaks[:, 2] = rng.uniform(0.1, 1, 2 * count)
        peaks[count:, 3] = 1
        assert count * count * 10 > paf_x.size  # the crowd path
        got = _limb_connections(peaks, 0, count, count, 2 * count, paf_x, paf_y, 10, 0.05, 0.8, bilinear)
        expected = limb_connections_sampling_every_point(peaks, range(count), range(count, 2 * count), paf_x, paf_y,
                                                         10, 0.05, 0.8, bilinear)
        assert len(expected) > 0
        assert [(int(r[0]), int(r[1])) for r in got] == [(i, j) for i, j, _ in expected]
        np.testing.assert_allclose(got[:, 2], [s for _, _, s in expected], rtol=1e-5)


def tiled_crowd(keypoint_set, count, columns, jitter, seed=0):
    """Small standing people on a grid (15 x 38 map cells each), each moved by up to `jitter` cells."""
    rng = np.random.default_rng(seed)
    return [standing_person(keypoint_set, 8 + 15 * (i % columns) + rng.uniform(-jitter, jitter),
                            2 + 38 * (i // columns) + rng.uniform(-jitter, jitter), scale=0.45) for i in range(count)]


def test_a_crowd_decoded_on_two_threads_is_the_crowd_decoded_on_one():
    ks = load_keypoint_set("lwop18")
    rng = np.random.default_rng(1)
    heatmaps, pafs = render_maps(tiled_crowd(ks, 40, 8, 3.0, seed=1), ks, 192, 128, sigma=1.0, paf_width=1.0)
    heatmaps += rng.uniform(0, 0.3, heatmaps.shape).astype(np.float32)  # clutter: spurious peaks everywhere
    one = GroupingParams(refine_peaks=True, refine_on_cubic=True, bilinear_paf=True, threads=1)
    two = GroupingParams(refine_peaks=True, refine_on_cubic=True, bilinear_paf=True, threads=2, threads_from_pairs=0)
    single, threaded = decode_people(heatmaps, pafs, ks, one), decode_people(heatmaps, pafs, ks, two)
    assert len(single) >= 15
    np.testing.assert_array_equal(threaded.keypoints, single.keypoints)
    np.testing.assert_array_equal(threaded.scores, single.scores)

def test_bilinear_paf_sampling_interpolates_between_cells_and_clamps_at_borders():
    ys, xs = np.mgrid[0:6, 0:8].astype(np.float32)
    paf_x, paf_y = 2 * xs + 3 * ys, xs - ys  # bilinear interpolation reproduces a linear field exactly
    assert _sample(paf_x, paf_y, 1.3, 2.6, True) == pytest.approx((2 * 1.3 + 3 * 2.6, 1.3 - 2.6), abs=1e-5)
    assert _sample(paf_x, paf_y, 6.75, 4.5, True) == pytest.approx((2 * 6.75 + 3 * 4.5, 6.75 - 4.5), abs=1e-5)
    assert _sample(paf_x, paf_y, -3.0, 10.0, True) == pytest.approx((paf_x[5, 0], paf_y[5, 0]))
    assert _sample(paf_x, paf_y, 1.3, 2.6, False) == (paf_x[3, 1], paf_y[3, 1])


def test_the_cubic_lattice_around_a_cell_is_what_a_2x_opencv_resize_gives_there():
    heatmap = np.random.default_rng(1).random((7, 9)).astype(np.float32)
    upsampled = cv2.resize(heatmap, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    lattice, rows = np.empty((4, 4)), np.empty((5, 4))
    for y, x in [(3, 4), (0, 0), (6, 8), (0, 5), (2, 8)]:  # inside, corners and edges (borders replicated)
        _cubic_lattice(heatmap, x, y, lattice, rows)
        # upsampled pixel j lies at (j + 0.5) / 2 - 0.5: pixels 2x - 1 .. 2x + 2 are x - 0.75 .. x + 0.75
        ys, xs = np.arange(2 * y - 1, 2 * y + 3), np.arange(2 * x - 1, 2 * x + 3)
        inside_y, inside_x = (ys >= 0) & (ys < 14), (xs >= 0) & (xs < 18)
        expected = upsampled[np.ix_(ys[inside_y], xs[inside_x])]
        np.testing.assert_allclose(lattice[np.ix_(inside_y, inside_x)], expected, atol=1e-5)


def test_refined_peaks_of_one_blob_collapse_into_one_but_two_blobs_stay_two():
    heatmaps = np.zeros((1, 20, 20), np.float32)
    # One blob stretched along a diagonal: two cells are local maxima of it, the true peak lies between them.
    heatmaps[0, 5, 5], heatmaps[0, 6, 6] = 1.0, 0.95
    heatmaps[0, 5, 6], heatmaps[0, 6, 5] = 0.8, 0.8
    # A second, separate blob two cells away from nothing else.
    heatmaps[0, 14, 12] = 0.9
    heatmaps[0, 14, 11] = heatmaps[0, 14, 13] = heatmaps[0, 13, 12] = heatmaps[0, 15, 12] = 0.4
    threshold, radius = np.float32(0.1), np.float32(1.0)
    refined = find_peaks(heatmaps, threshold, radius, REFINE_PARABOLA, True)
    plain = find_peaks(heatmaps, threshold, radius, REFINE_NONE, True)
    assert len(plain) == 3 and len(refined) == 2
    assert refined[0, 2] == pytest.approx(1.0)  # the stronger of the pair survives
    assert 5.0 < refined[0, 0] < 5.5 and 5.0 < refined[0, 1] < 5.5
    assert refined[1, :2] == pytest.approx((12.0, 14.0))


def test_heatmaps_finer_than_the_pafs_give_coordinates_in_paf_cells():
    ks = load_keypoint_set("lwop18")
    # (positions exactly between two cells are avoided: equal neighbours make no strict maximum, as in the reference)
    truth = [standing_person(ks, 20.37, 4.61, scale=0.6), standing_person(ks, 54.71, 6.23, scale=0.55)]
    heatmaps, pafs = render_maps(truth, ks, 60, 80, sigma=1.0, paf_width=1.0)
    finer = cv2.resize(heatmaps[:ks.num_keypoints].transpose(1, 2, 0), None, fx=2, fy=2,
                       interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
    params = GroupingParams(nms_radius=2.0, refine_peaks=True, bilinear_paf=True, nms_strongest_first=True)
    people = decode_people(finer, pafs, ks, params, heatmap_scale=2)
    assert len(people) == 2 and (people.keypoints[:, :, 2] > 0).all()
    for points in truth:
        errors = [np.abs(found[:, :2] - points).max() for found in people.keypoints]
        assert min(errors) < 0.05  # a twentieth of a stride-8 cell
    with pytest.raises(ValueError, match="2x the PAFs' size"):
        decode_people(heatmaps, pafs, ks, params, heatmap_scale=2)


def test_a_crowd_of_a_hundred_decodes_to_a_hundred_people():
    ks = load_keypoint_set("lwop18")
    truth = tiled_crowd(ks, 100, 10, 1.0)
    heatmaps, pafs = render_maps(truth, ks, 384, 152, sigma=1.0, paf_width=1.0)
    params = GroupingParams(nms_radius=1.0, refine_peaks=True, refine_on_cubic=True, bilinear_paf=True,
                            nms_strongest_first=True)
    people = decode_people(heatmaps, pafs, ks, params)
    assert len(people) == 100
    assert (people.keypoints[:, :, 2] > 0).all()
    for points in truth:
        assert min(np.abs(found[:, :2] - points).max() for found in people.keypoints) < 0.1


@pytest.fixture(scope="module")
def torch_estimators(hpe_checkpoint):
    network, keypoint_set, _ = load_model(hpe_checkpoint)
    backend = TorchBackend(network)
    return (PoseEstimator(backend, keypoint_set, height_size=368, decode_at="image"),
            PoseEstimator(backend, keypoint_set, height_size=368, decode_at="map"))


def test_map_path_finds_the_image_paths_keypoints_within_two_pixels(torch_estimators):
    require_shared(SAMPLES_COCO)
    reference, fast = torch_estimators
    image = read_image(os.path.join(SAMPLES_COCO, "000000196141.jpg"))
    slow_people, fast_people = reference.estimate(image), fast.estimate(image)
    assert len(fast_people) == len(slow_people) >= 3
    for person in slow_people.keypoints:
        present = person[:, 2] > 0
        # the share of this person's keypoints that the closest fast-path person has within 2 pixels
        agreement = max(((other[present, 2] > 0) & (np.linalg.norm(other[present, :2] - person[present, :2],
                                                                    axis=1) < 2.0)).mean()
                        for other in fast_people.keypoints)
        assert agreement >= 0.9


def test_val_with_the_demo_decoding_reaches_the_reference_ap_on_the_coco_samples(hpe_checkpoint, tmp_path):
    require_shared(SAMPLES_COCO)
    metrics, stdout = run_val(hpe_checkpoint, os.path.join(SAMPLES_COCO, "test_coco.json"), SAMPLES_COCO, tmp_path,
                              "--decode-at", "map", "--height-size", "368")
    print(stdout)
    assert metrics["decode_at"] == "map"
    assert metrics["AP"] >= 0.776


@pytest.mark.slow
def test_val_with_the_demo_decoding_reaches_the_reference_ap_on_coco_mini_train(hpe_checkpoint, tmp_path):
    require_shared(COCO_MINI_LABELS)
    metrics, stdout = run_val(hpe_checkpoint, COCO_MINI_LABELS, COCO_MINI_IMAGES, tmp_path,
                              "--decode-at", "map", "--height-size", "368")
    print(stdout)
    assert metrics["num_images"] == 80
    assert metrics["AP"] >= 0.322


def test_val_scores_the_int8_ir_the_demo_runs_fastest(hpe_checkpoint, tmp_path):
    """val.py --openvino-ir: the INT8 engine's maps through the demo's decoding keep the reference's AP within one
    keypoint's worth on the 4 samples (measured 0.775; 0.331 >= 0.322 on coco_mini_train, README)."""
    pytest.importorskip("openvino")
    require_shared(SAMPLES_COCO, HPE_XML)
    metrics, stdout = run_val(hpe_checkpoint, os.path.join(SAMPLES_COCO, "test_coco.json"), SAMPLES_COCO, tmp_path,
                              "--decode-at", "map", "--openvino-ir", HPE_XML)
    print(stdout)
    assert metrics["AP"] >= 0.765


def test_a_forked_child_decodes_a_crowd_after_its_parent_did():
    """The decoding threads of a parent do not exist in a forked child (multiprocessing's default on Linux): the
    child must start its own rather than wait on the parent's forever."""
    import multiprocessing

    ks = load_keypoint_set("lwop18")
    heatmaps, pafs = render_maps(tiled_crowd(ks, 40, 8, 0.0), ks, 192, 128, sigma=1.0, paf_width=1.0)
    params = GroupingParams(refine_peaks=True, refine_on_cubic=True, bilinear_paf=True, threads=2,
                            threads_from_pairs=0, threads_from_cells=0)
    in_parent = decode_people(heatmaps, pafs, ks, params)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        in_child = pool.apply_async(decode_people, (heatmaps, pafs, ks, params)).get(timeout=120)
    assert len(in_parent) == 40
    np.testing.assert_array_equal(in_child.keypoints, in_parent.keypoints)

"""PCK and PCKh of bottom-up predictions: people matched by OKS, distances normalised by the box or the head."""
import numpy as np
import pytest

from lwpose.evaluation.pck import PckCounts, add_image, match_people

SIGMAS = np.full(4, 0.05)
NAMES = ("upper_neck", "head_top", "left_wrist", "right_wrist")


def person(points, visibility=2):
    return np.array([[x, y, visibility] for x, y in points], float)


def test_each_ground_truth_person_gets_the_prediction_that_fits_it_best():
    gt = np.stack([person([(10, 10), (10, 0), (0, 30), (20, 30)]), person([(110, 10), (110, 0), (100, 30), (120, 30)])])
    predictions = np.stack([gt[1] + [1, 0, 0], gt[0] + [2, 0, 0], gt[0] + [30, 0, 0]])
    predictions[:, :, 2] = 1
    assert match_people(gt, np.array([900.0, 900.0]), predictions, SIGMAS).tolist() == [1, 0]
    assert match_people(gt, np.array([900.0, 900.0]), predictions[:0], SIGMAS).tolist() == [-1, -1]


def test_pck_normalises_by_the_box_and_pckh_by_the_head_segment():
    gt = person([(50, 20), (50, 0), (0, 100), (100, 100)])[None]  # head segment 20 px, box 100 x 120
    box = np.array([[0.0, 0.0, 100.0, 120.0]])
    shifts = np.array([[4, 0], [11, 0], [7, 0], [0, 0]])  # 4, 11, 7, 0 px off
    prediction = gt.copy()
    prediction[0, :, :2] += shifts
    prediction[0, :, 2] = 1
    counts = PckCounts(NAMES)
    add_image(counts, gt, box, np.array([12000.0]), prediction, SIGMAS, np.ones(4, bool), (0, 1))
    metrics = counts.metrics()
    # PCK@0.05 allows 6 px (0.05 x 120), PCK@0.1 12 px, PCKh@0.5 10 px (half the head segment).
    assert metrics["PCK@0.05"] == pytest.approx(2 / 4)
    assert metrics["PCK@0.1"] == pytest.approx(4 / 4)
    assert metrics["PCKh@0.5"] == pytest.approx(3 / 4)
    assert metrics["per_keypoint"]["head_top"] == {"PCK@0.05": 0.0, "PCK@0.05 count": 1, "PCK@0.1": 1.0,
                                                   "PCK@0.1 count": 1, "PCKh@0.5": 0.0, "PCKh@0.5 count": 1}


def test_missing_predictions_unlabelled_and_unscored_keypoints():
    gt = person([(50, 20), (50, 0), (0, 100), (100, 100)])[None]
    gt[0, 3, 2] = 0  # not labelled: never counted
    counts = PckCounts(NAMES)
    evaluated = np.array([True, True, True, False])
    add_image(counts, gt, np.array([[0.0, 0, 100, 120]]), np.array([12000.0]), np.zeros((0, 4, 3)), SIGMAS,
              evaluated, None)
    metrics = counts.metrics()
    assert metrics["PCK@0.1"] == 0.0 and counts.total["PCK@0.1"].tolist() == [1, 1, 1, 0]
    assert "PCKh@0.5" not in metrics  # no head keypoints named: no PCKh
    # A person without both head keypoints is left out of PCKh, not counted wrong.
    gt[0, 0, 2] = 0
    counts = PckCounts(NAMES)
    add_image(counts, gt, np.array([[0.0, 0, 100, 120]]), np.array([12000.0]), gt.copy(), SIGMAS,
              np.ones(4, bool), (0, 1))
    assert counts.metrics()["PCKh@0.5"] is None and counts.metrics()["PCK@0.1"] == 1.0

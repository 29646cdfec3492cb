"""One-Euro smoothing: a resting keypoint stops jittering, a moving one is followed with little lag (far less
than a plain low-pass of the same steadiness), a keypoint that comes back starts afresh, and people are
smoothed each with their own history."""
import numpy as np
import pytest

from lwpose.inference.grouping import People
from lwpose.inference.smoothing import OneEuroFilter, PoseSmoother

FPS = 30.0


def run(filt, signal):
    return np.array([filt(np.array([v]), i / FPS)[0] for i, v in enumerate(signal)])


def test_a_resting_keypoint_jitters_far_less():
    rng = np.random.default_rng(0)
    noisy = 100 + rng.normal(0, 2.0, 300)
    smoothed = run(OneEuroFilter(min_cutoff=1.0, beta=0.05), noisy)
    assert smoothed[30:].std() < 0.5 * noisy[30:].std()
    assert abs(smoothed[30:].mean() - 100) < 0.5


def test_a_moving_keypoint_is_followed_with_little_lag():
    speed = 300.0  # pixels per second
    truth = speed * np.arange(120) / FPS
    one_euro = run(OneEuroFilter(min_cutoff=1.0, beta=0.05), truth)
    low_pass = run(OneEuroFilter(min_cutoff=1.0, beta=0.0), truth)  # beta 0: a fixed low-pass filter
    lag = (truth - one_euro)[60:].mean()
    lag_low_pass = (truth - low_pass)[60:].mean()
    assert 0 <= lag < 0.2 * lag_low_pass
    assert lag < 0.5 * speed / FPS  # behind by less than half a frame's motion


def test_a_keypoint_that_reappears_starts_from_its_new_position():
    filt = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    for i in range(10):
        filt(np.array([[10.0, 10.0]]), i / FPS, np.array([[True]]))
    missing = filt(np.array([[-1.0, -1.0]]), 10 / FPS, np.array([[False]]))
    assert missing.tolist() == [[-1.0, -1.0]]  # a missing keypoint passes through untouched
    back = filt(np.array([[200.0, 50.0]]), 11 / FPS, np.array([[True]]))
    assert back.tolist() == [[200.0, 50.0]]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0)


def test_each_tracked_person_is_smoothed_with_their_own_history():
    smoother = PoseSmoother(min_cutoff=0.5, beta=0.0)
    rng = np.random.default_rng(0)

    def frame(order, t):
        keypoints = np.zeros((2, 3, 3), np.float32)
        keypoints[:, :, 2] = 1
        positions = {7: 10.0, 9: 500.0}
        for row, track_id in enumerate(order):
            keypoints[row, :, :2] = positions[track_id] + rng.normal(0, 1.0, (3, 2))
        return smoother(People(keypoints, np.ones(2, np.float32), np.full(2, 3, np.int32)), np.array(order), t)

    for i in range(20):
        order = [7, 9] if i % 2 else [9, 7]  # the detector lists them in any order
        result = frame(order, i / FPS)
        for row, track_id in enumerate(order):
            expected = 10.0 if track_id == 7 else 500.0
            assert np.abs(result.keypoints[row, :, :2] - expected).max() < 4.0

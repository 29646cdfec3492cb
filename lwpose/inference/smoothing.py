"""One-Euro filtering of keypoint coordinates (Casiez et al., CHI 2012): steady when a keypoint rests, quick
when it moves.

A low-pass filter whose cutoff frequency rises with the speed of the signal: at rest the cutoff is
`min_cutoff` (strong smoothing, no jitter); moving at speed v it is `min_cutoff + beta * v` (little lag).
Time comes from the frames' timestamps, so a 10 fps and a 30 fps video are smoothed alike.
"""
from __future__ import annotations

import math

import numpy as np

from lwpose.inference.grouping import People


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters an array of coordinates, element by element; elements marked invalid restart their history."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("One-Euro filter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.derivative: np.ndarray | None = None
        self.known: np.ndarray | None = None  # elements with a history
        self.time: float | None = None

    def __call__(self, value: np.ndarray, time: float, valid: np.ndarray | None = None) -> np.ndarray:
        value = np.asarray(value, np.float64)
        valid = np.ones(value.shape, bool) if valid is None else np.broadcast_to(valid, value.shape)
        if self.value is None or self.value.shape != value.shape or self.time is None or time <= self.time:
            self.value = value.copy()
            self.derivative = np.zeros_like(value)
            self.known = valid.copy()
            self.time = time
            return value.copy()
        dt = time - self.time
        fresh = valid & ~self.known  # first sighting (or back after a gap): start from the measurement
        derivative = np.where(self.known, (value - self.value) / dt, 0.0)
        a_d = _alpha(self.d_cutoff, dt)
        derivative = a_d * derivative + (1 - a_d) * self.derivative
        a = _alpha(self.min_cutoff + self.beta * np.abs(derivative), dt)
        filtered = a * value + (1 - a) * self.value
        filtered = np.where(fresh, value, filtered)
        self.value = np.where(valid, filtered, self.value)
        self.derivative = np.where(valid & ~fresh, derivative, 0.0)
        self.known = valid.copy()
        self.time = time
        return np.where(valid, filtered, value)


class PoseSmoother:
    """A One-Euro filter per tracked person over their keypoints' x and y; a person unseen for `forget_after`
    seconds starts afresh."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0,
                 forget_after: float = 1.0):
        self.params = (min_cutoff, beta, d_cutoff)
        self.forget_after = forget_after
        self.filters: dict[int, OneEuroFilter] = {}

    def __call__(self, people: People, ids: np.ndarray, time: float) -> People:
        keypoints = people.keypoints.copy()
        for p, track_id in enumerate(ids):
            track_id = int(track_id)
            filt = self.filters.get(track_id)
            if filt is None or (filt.time is not None and time - filt.time > self.forget_after):
                filt = self.filters[track_id] = OneEuroFilter(*self.params)
            present = keypoints[p, :, 2] > 0
            keypoints[p, :, :2] = filt(keypoints[p, :, :2], time, present[:, None]).astype(np.float32)
        for track_id in [t for t, f in self.filters.items() if time - (f.time or time) > self.forget_after]:
            del self.filters[track_id]
        return people.with_keypoints(keypoints)

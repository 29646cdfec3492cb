"""Stable person ids across video frames.

Each track remembers its person's last keypoints and how fast they moved. On a new frame every track predicts
where its keypoints are now (constant velocity), and detections are matched to predictions greedily by pose
similarity (keypoint distances relative to the person's size), best pairs first. Prediction is what keeps two
people who cross apart: at the crossing both stand in one place, but each track expects its person to keep going
its own way. A track that finds no match coasts on its prediction for `max_missed` frames before it is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lwpose.inference.grouping import People


@dataclass
class Track:
    id: int
    keypoints: np.ndarray  # (K, 3) x, y, score of the last match; score 0 where missing
    velocity: np.ndarray  # (2,) pixels per frame, smoothed
    last_frame: int
    hits: int = 1

    def predicted(self, frame: int) -> np.ndarray:
        keypoints = self.keypoints.copy()
        present = keypoints[:, 2] > 0
        keypoints[present, :2] += self.velocity * (frame - self.last_frame)
        return keypoints


def pose_similarity(a: np.ndarray, b: np.ndarray, tolerance: float, overlap_power: float = 0.5) -> np.ndarray:
    """How well people `a` (A, K, 3) agree with people `b` (B, K, 3): an (A, B) matrix in [0, 1]. For one pair,
    the mean over the keypoints both have of a Gaussian of their distance, whose width is `tolerance` times the
    larger person's size (the diagonal of its keypoints' box), times (shared keypoints / keypoints either has)
    ** `overlap_power`. Unlike COCO's OKS, every keypoint gets the same width: between frames the error is the
    motion, which an eye and an ankle share. The overlap term keeps a fragment (an arm found apart from its
    body) from taking over the whole person's track."""
    in_a, in_b = a[:, None, :, 2] > 0, b[None, :, :, 2] > 0
    both = in_a & in_b
    shared = both.sum(axis=2)
    width = tolerance * np.maximum(np.maximum(_sizes(a)[:, None], _sizes(b)[None, :]), 1.0)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(axis=3)
    closeness = np.where(both, np.exp(-d2 / (2 * width[..., None] ** 2)), 0.0).sum(axis=2) / np.maximum(shared, 1)
    overlap = shared / np.maximum((in_a | in_b).sum(axis=2), 1)
    return np.where(shared > 0, closeness * overlap ** overlap_power, 0.0)


def _sizes(people: np.ndarray) -> np.ndarray:
    """(N,) the diagonal of each person's keypoint box (0 with fewer than two keypoints)."""
    present = people[..., 2] > 0
    big, small = np.float32(1e9), np.float32(-1e9)
    low = np.where(present[..., None], people[..., :2], big).min(axis=1)
    high = np.where(present[..., None], people[..., :2], small).max(axis=1)
    return np.where(present.sum(axis=1) >= 2, np.linalg.norm(high - low, axis=1), 0.0)


class PoseTracker:
    """Gives every person of every frame an id that stays with them while they stay in view."""

    def __init__(self, min_similarity: float = 0.3, tolerance: float = 0.25, overlap_power: float = 0.5,
                 max_missed: int = 10, velocity_smoothing: float = 0.5):
        self.tolerance = tolerance
        self.overlap_power = overlap_power
        self.min_similarity = min_similarity
        self.max_missed = max_missed
        self.velocity_smoothing = velocity_smoothing
        self.tracks: list[Track] = []
        self.next_id = 0

    def update(self, people: People, frame: int) -> np.ndarray:
        """Ids (P,) of `people`, the detections of frame number `frame` (frames may be skipped)."""
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_missed]
        predictions = np.array([t.predicted(frame) for t in self.tracks]).reshape(-1, *people.keypoints.shape[1:])
        similarity = pose_similarity(predictions, people.keypoints, self.tolerance, self.overlap_power)
        ids = np.full(len(people), -1, np.int64)
        matched_tracks = set()
        # Greedy by similarity: with few people per frame this equals the optimal assignment almost always.
        for flat in np.argsort(-similarity, axis=None, kind="stable"):
            t, p = divmod(int(flat), len(people))
            if similarity[t, p] < self.min_similarity:
                break
            if t in matched_tracks or ids[p] >= 0:
                continue
            self._advance(self.tracks[t], people.keypoints[p], frame)
            matched_tracks.add(t)
            ids[p] = self.tracks[t].id
        for p in np.flatnonzero(ids < 0):
            track = Track(self.next_id, people.keypoints[p].copy(), np.zeros(2), frame)
            self.next_id += 1
            self.tracks.append(track)
            ids[p] = track.id
        return ids

    def _advance(self, track: Track, keypoints: np.ndarray, frame: int) -> None:
        both = (track.keypoints[:, 2] > 0) & (keypoints[:, 2] > 0)
        if both.any() and frame > track.last_frame:
            step = (keypoints[both, :2] - track.keypoints[both, :2]).mean(axis=0) / (frame - track.last_frame)
            weight = self.velocity_smoothing if track.hits > 1 else 1.0
            track.velocity = weight * step + (1 - weight) * track.velocity
        track.keypoints = keypoints.copy()
        track.last_frame = frame
        track.hits += 1

"""Tracking: people keep their ids through a crossing, through a short occlusion during it, and through
detection noise; people who appear get new ids and ids are never reused."""
import numpy as np
from synthetic_maps import standing_person

from lwpose.inference.grouping import People
from lwpose.inference.tracking import PoseTracker
from lwpose.keypoints import load_keypoint_set

KEYPOINT_SET = load_keypoint_set("lwop18")


def walker(center_x, top_y):
    """Everyone has the same pose: only where they are and where they go tells them apart."""
    return standing_person(KEYPOINT_SET, center_x, top_y, scale=1.5)


def people_of(poses, rng, noise=0.0):
    keypoints = np.zeros((len(poses), KEYPOINT_SET.num_keypoints, 3), np.float32)
    for p, points in enumerate(poses):
        keypoints[p, :, :2] = points + rng.normal(0, noise, points.shape)
        keypoints[p, :, 2] = 0.9
    order = rng.permutation(len(poses))  # detection order carries no identity
    return People(keypoints[order], np.ones(len(poses), np.float32), np.full(len(poses), 18, np.int32)), order


def crossing_sequence(frames=60, hidden=(), noise=0.5, seed=0):
    """Two people in the same pose walk towards each other along one line and pass through each other at
    frame 30 (3 pixels apart there, bodies overlapping for several frames); a third stands still. Yields
    (People, true identity of each detection)."""
    rng = np.random.default_rng(seed)
    for frame in range(frames):
        poses = {0: walker(40 + 6 * frame, 20), 1: walker(403 - 6 * frame, 21), 2: walker(500, 30)}
        if frame in hidden:
            del poses[1]
        identities = list(poses)
        people, order = people_of([poses[i] for i in identities], rng, noise)
        yield people, [identities[i] for i in order]


def id_switches(tracker, sequence):
    """How many times a true person's id differs from the one it had before."""
    last_id, switches = {}, 0
    for frame, (people, identities) in enumerate(sequence):
        ids = tracker.update(people, frame)
        assert len(set(ids.tolist())) == len(ids), "two people of one frame share an id"
        for identity, track_id in zip(identities, ids):
            if identity in last_id and last_id[identity] != track_id:
                switches += 1
            last_id[identity] = track_id
    return switches, last_id


def test_two_people_crossing_keep_their_ids():
    switches, ids = id_switches(PoseTracker(), crossing_sequence())
    assert switches == 0
    assert len(set(ids.values())) == 3


def test_a_person_hidden_during_the_crossing_gets_their_id_back():
    tracker = PoseTracker()
    switches, _ = id_switches(tracker, crossing_sequence(hidden=range(28, 33)))
    assert switches == 0
    assert tracker.next_id == 3  # nobody was taken for a newcomer


def test_crossing_under_heavier_detection_noise_keeps_ids():
    for seed in range(5):
        switches, _ = id_switches(PoseTracker(), crossing_sequence(noise=1.5, seed=seed))
        assert switches == 0, f"seed {seed}"


def test_without_motion_prediction_the_crossing_would_switch_ids(monkeypatch):
    """The sequence above is a real test of prediction: a tracker matching last positions fails it."""
    monkeypatch.setattr("lwpose.inference.tracking.Track.predicted", lambda track, frame: track.keypoints.copy())
    switches, _ = id_switches(PoseTracker(), crossing_sequence())
    assert switches > 0


def test_newcomers_get_new_ids_and_ids_of_people_gone_too_long_are_not_reused():
    tracker = PoseTracker(max_missed=3)
    rng = np.random.default_rng(1)
    first, _ = people_of([walker(50, 20)], rng)
    assert tracker.update(first, 0).tolist() == [0]
    both, order = people_of([walker(50, 20), walker(300, 20)], rng)
    ids = tracker.update(both, 1)
    assert ids[list(order).index(0)] == 0 and ids[list(order).index(1)] == 1
    tracker.update(People.empty(KEYPOINT_SET.num_keypoints), 2)
    back, _ = people_of([walker(50, 20)], rng)
    assert tracker.update(back, 3).tolist() == [0]  # missed 2 frames: still known
    assert tracker.update(back, 10).tolist() == [2]  # missed 7 frames: a new id, never an old one

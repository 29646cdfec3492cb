"""Augmentation and the data pipeline: keypoints follow the pixels through scale, rotation, crop and flip (with
left/right swapped), the reference's scale rule, reproducible samples by key in any worker, reduced JPEG decoding,
and a DataLoader that survives a low `ulimit -n`."""
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, REPO_ROOT, require_shared
from lwpose.datasets.augmentation import AugmentationConfig, AugmentParams, apply_colour_jitter, crop_matrix
from lwpose.datasets.coco_reader import read_coco_keypoints
from lwpose.datasets.loader import InfiniteBatchSampler, make_train_loader
from lwpose.datasets.pose_dataset import PoseTrainingDataset
from lwpose.datasets.prepared_labels import PreparedImage, PreparedLabels, Source, build_prepared_labels
from lwpose.keypoints import load_keypoint_set

LWOP18 = load_keypoint_set("lwop18")
PAINTED = {"nose": (150, 40), "right_shoulder": (120, 80), "left_shoulder": (185, 85), "right_wrist": (95, 160),
           "left_knee": (190, 230), "right_ankle": (130, 275)}


def painted_person_labels(folder) -> PreparedLabels:
    """One image with a dot of a distinct colour on each labelled keypoint."""
    image = np.full((300, 320, 3), 90, np.uint8)
    keypoints = np.zeros((1, LWOP18.num_keypoints, 3), np.float32)
    for n, (name, (x, y)) in enumerate(PAINTED.items()):
        colour = tuple(int(v) for v in ((n * 40) % 256, 255 - n * 30, 60 + n * 35))
        cv2.circle(image, (x, y), 6, colour, -1)
        keypoints[0, LWOP18.index[name]] = (x, y, 2)
    cv2.imwrite(os.path.join(folder, "painted.png"), image)
    source = Source("painted", "<test>", str(folder), LWOP18, np.ones(LWOP18.num_keypoints, bool))
    im = PreparedImage(0, 1, "painted.png", 320, 300, [1], np.array([[90.0, 30.0, 110.0, 250.0]]),
                       np.array([20000.0]), keypoints)
    return PreparedLabels(LWOP18, [source], [im], np.array([[0, 0]]))


@pytest.mark.parametrize("flip", [False, True])
def test_keypoints_follow_their_pixels_through_scale_rotation_crop_and_flip(tmp_path, flip):
    dataset = PoseTrainingDataset(painted_person_labels(tmp_path), augmentation=AugmentationConfig(input_size=256),
                                  progress=False)
    params = AugmentParams(scale_multiplier=0.9, rotation_degrees=33.0, offset_x=15.0, offset_y=-20.0, flip=flip)
    sample = dataset.make_sample(0, params)
    original = cv2.imread(str(tmp_path / "painted.png"))
    heatmaps = sample["heatmaps"]
    for name, (x, y) in PAINTED.items():
        colour = original[y, x].astype(int)
        # After a flip the painted left shoulder is seen as the right shoulder of the mirrored person.
        seen_as = LWOP18.keypoints[LWOP18.flip_permutation[LWOP18.index[name]]] if flip else name
        channel = heatmaps[LWOP18.index[seen_as]]
        cy, cx = np.unravel_index(channel.argmax(), channel.shape)
        px, py = int(round(cx * 8 + 3.5)), int(round(cy * 8 + 3.5))
        patch = sample["image"][py - 3:py + 5, px - 3:px + 5].reshape(-1, 3).astype(int)
        assert np.abs(patch - colour).sum(axis=1).min() < 12, (name, seen_as)


def test_the_person_is_scaled_to_0_6_of_the_crop_times_the_random_factor():
    config = AugmentationConfig()
    params = AugmentParams(scale_multiplier=0.75, offset_x=10.0, offset_y=-5.0)
    matrix = crop_matrix((200.0, 150.0), 230.0, params, config)
    top, bottom = matrix @ [200.0, 35.0, 1.0], matrix @ [200.0, 265.0, 1.0]
    assert bottom[1] - top[1] == pytest.approx(0.6 * 368 * 0.75)
    assert matrix @ [200.0, 150.0, 1.0] == pytest.approx([183.5 + 10.0, 183.5 - 5.0])


@pytest.fixture(scope="module")
def coco_mini_labels():
    require_shared(COCO_MINI_LABELS)
    return build_prepared_labels(read_coco_keypoints(COCO_MINI_LABELS, LWOP18), LWOP18,
                                 images_folder=COCO_MINI_IMAGES)


def test_a_key_always_makes_the_same_sample_in_any_worker(coco_mini_labels):
    dataset = PoseTrainingDataset(coco_mini_labels, augmentation=AugmentationConfig(input_size=128), progress=False)
    first, again, other_epoch = dataset[(3, 7)], dataset[(3, 7)], dataset[(3, 8)]
    assert all(np.array_equal(first[k], again[k]) for k in ("image", "heatmaps", "pafs", "mask"))
    assert not np.array_equal(first["image"], other_epoch["image"])
    sampler = InfiniteBatchSampler(len(dataset), 4, seed=5)
    in_process = next(iter(make_train_loader(dataset, sampler, num_workers=0)))
    in_workers = next(iter(make_train_loader(dataset, sampler, num_workers=2)))
    for key in ("image", "heatmaps", "pafs", "mask"):
        assert torch.equal(in_process[key], in_workers[key])


def test_the_sampler_resumes_mid_epoch_and_splits_batches_over_ranks():
    whole = InfiniteBatchSampler(10, 2, seed=3)
    stream = iter(whole)
    batches = [next(stream) for _ in range(12)]  # two and a half epochs of 5 batches
    resumed = iter(InfiniteBatchSampler(10, 2, seed=3, start_batch=7))
    assert [next(resumed) for _ in range(5)] == batches[7:12]
    assert sorted(i for b in batches[:5] for i, _ in b) == list(range(10))  # an epoch sees every sample once
    assert {e for b in batches[5:10] for _, e in b} == {1}
    ranks = [iter(InfiniteBatchSampler(10, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    epoch = [next(r) for _ in range(2) for r in ranks]
    assert sorted(i for b in epoch for i, _ in b) == sorted(whole.epoch_order(0)[:8].tolist())


def test_per_sample_decoding_at_reduced_size_matches_the_cached_full_image(coco_mini_labels):
    cached = PoseTrainingDataset(coco_mini_labels, image_cache="decoded", progress=False)
    per_sample = PoseTrainingDataset(coco_mini_labels, image_cache="none", progress=False)
    largest = int(np.argmax([coco_mini_labels.images[i].bboxes[p, 3] for i, p in coco_mini_labels.samples]))
    params = AugmentParams(scale_multiplier=0.5, rotation_degrees=10.0)
    _, reduction = per_sample.images.load(coco_mini_labels.samples[largest][0], 0.3)
    assert reduction == 2
    a = cached.make_sample(largest, params)["image"].astype(float)
    b = per_sample.make_sample(largest, params)["image"].astype(float)
    assert np.abs(a - b).mean() < 8.0  # same geometry, only resampling differs


def test_the_loader_survives_a_low_open_file_limit(tmp_path):
    """The reference's crash: worker tensors shared through file descriptors hit `ulimit -n`."""
    require_shared(COCO_MINI_LABELS)
    script = tmp_path / "many_batches.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {REPO_ROOT!r})
        from lwpose.datasets.augmentation import AugmentationConfig
        from lwpose.datasets.coco_reader import read_coco_keypoints
        from lwpose.datasets.loader import InfiniteBatchSampler, make_train_loader
        from lwpose.datasets.pose_dataset import PoseTrainingDataset
        from lwpose.datasets.prepared_labels import build_prepared_labels
        from lwpose.keypoints import load_keypoint_set
        target = load_keypoint_set("lwop18")
        labels = build_prepared_labels(read_coco_keypoints({COCO_MINI_LABELS!r}, target), target,
                                       images_folder={COCO_MINI_IMAGES!r})
        dataset = PoseTrainingDataset(labels, augmentation=AugmentationConfig(input_size=64), progress=False)
        batches = iter(make_train_loader(dataset, InfiniteBatchSampler(len(dataset), 2), num_workers=2,
                                         prefetch_factor=16))
        held = [next(batches) for _ in range(60)]  # many tensors alive at once, as a training loop may hold
        print("batches", len(held))
    """))
    result = subprocess.run(["bash", "-c", f"ulimit -n 48 && {sys.executable} {script}"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "batches 60" in result.stdout


def test_colour_jitter_changes_brightness_contrast_saturation_and_nothing_else():
    image = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    assert apply_colour_jitter(image, AugmentParams()) is image
    grey = apply_colour_jitter(image, AugmentParams(saturation=0.0, brightness=10.0))
    expected = np.clip(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(int) + 10, 0, 255)
    assert np.abs(grey.astype(int) - expected[..., None]).max() <= 1
    stretched = apply_colour_jitter(image, AugmentParams(contrast=2.0))
    assert stretched[image < 64].max() == 0 and stretched[image > 192].min() == 255
    assert stretched.shape == image.shape and stretched.dtype == np.uint8

"""Training targets and loss masks: the reference's Gaussians and PAFs at stride resolution (checked against a
plain numpy oracle written here), flip equivariance on every shipped dataset sample, zero loss weight for ignore
regions and unlabelled keypoints, and the imported real model agreeing with our targets."""
import math

import numpy as np
import pytest
import torch
from training_data import SHIPPED_SAMPLES, sample_paths

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, MMPOSE_SAMPLES, require_shared
from lwpose.codec import encode
from lwpose.datasets.augmentation import AugmentationConfig, AugmentParams
from lwpose.datasets.coco_reader import read_coco_keypoints
from lwpose.datasets.pose_dataset import PoseTrainingDataset
from lwpose.datasets.prepared_labels import build_prepared_labels
from lwpose.datasets.targets import channel_loss_masks
from lwpose.keypoints import load_keypoint_set
from lwpose.modules.loss import loss_masks, masked_l2, pose_loss

LWOP18 = load_keypoint_set("lwop18")


def oracle_heatmap(x, y, size, stride=8, sigma=7.0):
    cells = np.arange(size) * stride + stride / 2 - 0.5
    d2 = (cells[None, :] - x) ** 2 + (cells[:, None] - y) ** 2
    exponent = d2 / (2 * sigma ** 2)
    return np.where(exponent > 4.6052, 0.0, np.exp(-exponent))


def person(points: dict, keypoint_set=LWOP18):
    keypoints = np.zeros((keypoint_set.num_keypoints, 3))
    for name, (x, y) in points.items():
        keypoints[keypoint_set.index[name]] = (x, y, 2)
    return keypoints


def test_heatmaps_are_cut_gaussians_at_cell_centres_and_background_is_one_minus_max():
    people = np.stack([person({"nose": (100.3, 60.7), "neck": (107.0, 90.0)}), person({"nose": (110.0, 64.0)})])
    heatmaps, _ = encode(people, LWOP18, (32, 40), stride=8)
    nose = np.maximum(oracle_heatmap(100.3, 60.7, 40)[:32], oracle_heatmap(110.0, 64.0, 40)[:32])
    np.testing.assert_allclose(heatmaps[LWOP18.index["nose"]], nose, atol=1e-6)
    np.testing.assert_allclose(heatmaps[LWOP18.index["neck"]], oracle_heatmap(107.0, 90.0, 40)[:32], atol=1e-6)
    assert heatmaps[LWOP18.index["nose"]].max() <= 1.0
    np.testing.assert_allclose(heatmaps[-1], 1 - heatmaps[:-1].max(axis=0), atol=1e-6)
    # The cut: nothing below exp(-4.6052) = 0.01 survives.
    values = heatmaps[LWOP18.index["nose"]]
    assert values[values > 0].min() >= 0.01 - 1e-6


def test_pafs_are_unit_vectors_on_cells_within_one_cell_of_the_limb():
    a, b = (43.5, 43.5), (203.5, 123.5)  # cell centres (5, 5) and (25, 15)
    heatmaps, pafs = encode(person({"neck": a, "right_hip": b})[None], LWOP18, (32, 32), stride=8)
    limb = LWOP18.limbs.index(("neck", "right_hip"))
    cx, cy = LWOP18.limb_paf_channels[limb]
    direction = np.array([20.0, 10.0]) / math.hypot(20, 10)
    ys, xs = np.mgrid[0:32, 0:32]
    w = np.stack([xs - 5.0, ys - 5.0], -1)
    along = w @ direction
    across = np.abs(w[..., 0] * direction[1] - w[..., 1] * direction[0])
    distance = np.where(along < 0, np.hypot(*np.moveaxis(w, -1, 0)),
                        np.where(along > math.hypot(20, 10), np.hypot(xs - 25.0, ys - 15.0), across))
    inside = distance <= 1.0
    np.testing.assert_allclose(pafs[cx], np.where(inside, direction[0], 0), atol=1e-6)
    np.testing.assert_allclose(pafs[cy], np.where(inside, direction[1], 0), atol=1e-6)
    others = np.delete(pafs, [cx, cy], axis=0)
    assert not others.any()


def test_masked_l2_uses_the_reference_normalisation():
    prediction = torch.full((2, 3, 4, 4), 1.0)
    target = torch.zeros_like(prediction)
    mask = torch.ones_like(prediction)
    mask[:, 0] = 0
    # sum((1 - 0)^2 * mask) = 2 * 2 * 16 = 64; / 2 / batch 2 = 16
    assert masked_l2(prediction, target, mask).item() == pytest.approx(16.0)


def test_unlabelled_keypoints_get_zero_loss_weight_and_exactly_zero_gradient():
    labelled = np.ones(LWOP18.num_keypoints, bool)
    labelled[[LWOP18.index["nose"], LWOP18.index["left_ear"]]] = False  # a source without nose and left ear
    heatmap_channels, paf_channels = channel_loss_masks(LWOP18, labelled)
    assert heatmap_channels[LWOP18.index["nose"]] == 0 and heatmap_channels[LWOP18.index["left_ear"]] == 0
    assert heatmap_channels[LWOP18.background_channel] == 0
    assert heatmap_channels.sum() == LWOP18.num_keypoints - 2
    for limb, (a, b) in enumerate(LWOP18.limbs):
        expected = 0.0 if {"nose", "left_ear"} & {a, b} else 1.0
        assert (paf_channels[LWOP18.limb_paf_channels[limb]] == expected).all(), (a, b)

    size = 6
    outputs = [torch.randn(2, LWOP18.num_heatmaps, size, size, requires_grad=True),
               torch.randn(2, LWOP18.num_pafs, size, size, requires_grad=True)]
    heatmap_mask, paf_mask = loss_masks(torch.ones(2, size, size), torch.from_numpy(heatmap_channels).expand(2, -1),
                                        torch.from_numpy(paf_channels).expand(2, -1))
    loss, _ = pose_loss(outputs, torch.rand(2, LWOP18.num_heatmaps, size, size),
                        torch.rand(2, LWOP18.num_pafs, size, size), heatmap_mask, paf_mask)
    loss.backward()
    heat_grad, paf_grad = outputs[0].grad, outputs[1].grad
    assert (heat_grad[:, heatmap_channels == 0] == 0).all() and (paf_grad[:, paf_channels == 0] == 0).all()
    assert (heat_grad[:, heatmap_channels == 1] != 0).any() and (paf_grad[:, paf_channels == 1] != 0).any()


def unflip(maps: np.ndarray, channels, signs=None) -> np.ndarray:
    out = maps[channels][..., ::-1]
    return out * signs[:, None, None] if signs is not None else out


@pytest.mark.parametrize("folder, file_name, keypoints", SHIPPED_SAMPLES)
def test_targets_of_the_flipped_sample_are_the_flipped_targets(tmp_path, folder, file_name, keypoints):
    require_shared(MMPOSE_SAMPLES)
    labels_path, images = sample_paths(folder, file_name)
    keypoint_set = load_keypoint_set(keypoints)
    labels = build_prepared_labels(read_coco_keypoints(labels_path, keypoint_set), keypoint_set, images_folder=images)
    dataset = PoseTrainingDataset(labels, progress=False)
    keypoint_set = dataset.keypoint_set
    paf_channels, paf_signs = keypoint_set.paf_flip_channels
    for index in range(len(dataset)):
        params = AugmentParams(scale_multiplier=0.8, rotation_degrees=17.0, offset_x=-12.0, offset_y=25.0)
        plain = dataset.make_sample(index, params)
        flipped = dataset.make_sample(index, AugmentParams(**{**params.__dict__, "flip": True}))
        np.testing.assert_allclose(unflip(flipped["heatmaps"], keypoint_set.heatmap_flip_channels),
                                   plain["heatmaps"], atol=1e-5)
        np.testing.assert_allclose(unflip(flipped["pafs"], paf_channels, paf_signs), plain["pafs"], atol=1e-5)
        np.testing.assert_array_equal(flipped["mask"][:, ::-1], plain["mask"])
        assert plain["heatmaps"][:-1].max() > 0.5  # the sample has people in view
        # The image is the mirror too (one warp each, so allow interpolation rounding).
        difference = np.abs(flipped["image"][:, ::-1].astype(int) - plain["image"].astype(int))
        assert difference.mean() < 2.0


def test_crowds_and_people_without_keypoints_get_zero_loss_weight(tmp_path):
    require_shared(COCO_MINI_LABELS)
    target = LWOP18
    labels = build_prepared_labels(read_coco_keypoints(COCO_MINI_LABELS, target), target,
                                   images_folder=COCO_MINI_IMAGES)
    dataset = PoseTrainingDataset(labels, augmentation=AugmentationConfig.off(), progress=False)
    with_crowd = [n for n, (i, _) in enumerate(labels.samples)
                  if any(r["reason"] == "crowd" for r in labels.images[i].ignore)]
    assert with_crowd
    masked_cells = [(dataset.make_sample(n, AugmentParams())["mask"] < 0.5).sum() for n in with_crowd]
    assert max(masked_cells) > 20
    without = [n for n, (i, _) in enumerate(labels.samples) if not labels.images[i].ignore]
    assert (dataset.make_sample(without[0], AugmentParams())["mask"] == 1).all()


def test_the_imported_model_agrees_with_our_targets(hpe_checkpoint):
    """Channel order, PAF direction, pixel alignment and normalisation all have to match for the real model's
    predictions to sit much closer to our targets than empty maps do."""
    require_shared(COCO_MINI_LABELS)
    from lwpose.interop.checkpoint import load_model
    from lwpose.training.trainer import images_to_network_input

    network, keypoint_set, _ = load_model(hpe_checkpoint)
    labels = build_prepared_labels(read_coco_keypoints(COCO_MINI_LABELS, keypoint_set), keypoint_set,
                                   images_folder=COCO_MINI_IMAGES)
    dataset = PoseTrainingDataset(labels, augmentation=AugmentationConfig(), progress=False)
    batch = torch.utils.data.default_collate([dataset[(i, 0)] for i in range(0, len(dataset), 6)])
    with torch.no_grad():
        outputs = network(images_to_network_input(batch["image"], torch.device("cpu")))
    masks = loss_masks(batch["mask"], batch["heatmap_channel_mask"], batch["paf_channel_mask"])
    _, model_parts = pose_loss(outputs, batch["heatmaps"], batch["pafs"], *masks)
    empty = [torch.zeros_like(o) for o in outputs]
    for heatmaps in empty[::2]:
        heatmaps[:, keypoint_set.background_channel] = 1
    _, empty_parts = pose_loss(empty, batch["heatmaps"], batch["pafs"], *masks)
    reversed_pafs = [o if i % 2 == 0 else -o for i, o in enumerate(outputs)]
    _, reversed_parts = pose_loss(reversed_pafs, batch["heatmaps"], batch["pafs"], *masks)
    heatmap_ratio = model_parts[-2] / empty_parts[-2]
    paf_ratio = model_parts[-1] / empty_parts[-1]
    assert heatmap_ratio < 0.6 and paf_ratio < 0.75, (heatmap_ratio, paf_ratio)
    assert reversed_parts[-1] > 3 * model_parts[-1]

"""What a fine-tune from another keypoint set's weights starts from (lwpose/training/growing.py, head_fit.py): the old
heads kept as hidden heads, so that the refinement stage reads the maps it was trained on and the new set's maps
start as exactly the old ones, selected and composed; and the new and composed channels fitted by least squares."""
import os

import numpy as np
import pytest
import torch

from conftest import MMPOSE_SAMPLES, REPO_ROOT, require_shared
from lwpose.interop.checkpoint import load_checkpoint
from lwpose.keypoints import load_keypoint_set
from lwpose.modules.pose_network import Architecture, build_network
from lwpose.training.growing import channel_map, grow_network
from lwpose.training.head_fit import fit_channels

UPPER_BODY = os.path.join(REPO_ROOT, "docs", "upper_body.json")


def outputs_of(network, image: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return network.eval()(image)


def real_image(width=184, height=128) -> torch.Tensor:
    import cv2

    image = cv2.resize(cv2.imread(os.path.join(MMPOSE_SAMPLES, "coco", "000000196141.jpg")), (width, height))
    return torch.from_numpy((image.astype(np.float32) - 128) / 256).permute(2, 0, 1)[None]


def expected_new_maps(old_outputs, mapping) -> list[torch.Tensor]:
    """The old network's maps of every stage in the new set: heatmaps selected by name, PAFs composed."""
    expected = []
    for stage in range(0, len(old_outputs), 2):
        expected.append(old_outputs[stage][:, mapping.heatmaps])
        expected.append(torch.einsum("no,bohw->bnhw", torch.as_tensor(mapping.pafs, dtype=torch.float32),
                                     old_outputs[stage + 1]))
    return expected


def test_a_shrunk_network_keeps_the_old_heads_hidden_and_starts_from_the_old_maps(hpe_checkpoint):
    require_shared(MMPOSE_SAMPLES)
    checkpoint = load_checkpoint(hpe_checkpoint)
    old_set, new_set = load_keypoint_set(checkpoint["keypoint_set"]), load_keypoint_set(UPPER_BODY)
    old_architecture = Architecture.from_dict(checkpoint["architecture"])
    old = build_network(old_architecture)
    old.load_state_dict(checkpoint["state_dict"])
    image = real_image()
    expected = expected_new_maps(outputs_of(old, image), channel_map(old_set, new_set))

    grown = grow_network(checkpoint["state_dict"], old_architecture, old_set, new_set)
    assert (grown.architecture.hidden_heatmaps, grown.architecture.hidden_pafs) == (19, 38)
    assert "the old heads stay as hidden heads (19 heatmaps, 38 PAFs)" in grown.description
    outputs = outputs_of(grown.network, image)
    assert [tuple(o.shape[1:2]) for o in outputs] == [(6,), (12,), (6,), (12,)]  # the set's own channels only
    for got, want in zip(outputs, expected):  # every stage, the refined one too: it reads what it always read
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    # Without hidden heads the refinement stage reads only the 5 kept heatmaps and the composed PAFs: its maps move.
    lean = grow_network(checkpoint["state_dict"], old_architecture, old_set, new_set, hidden_heads=False)
    assert lean.architecture.hidden_heatmaps == 0
    lean_outputs = outputs_of(lean.network, image)
    torch.testing.assert_close(lean_outputs[0], expected[0], rtol=1e-4, atol=1e-5)
    assert (lean_outputs[3] - expected[3]).abs().max() > 0.05

    # The grown network's weights, taken again for the same set (train.py --weights-only from a fine-tune), keep
    # their hidden heads and give the same maps.
    again = grow_network(grown.network.state_dict(), grown.architecture, new_set, new_set)
    assert again.architecture == grown.architecture and again.new_channels == {}
    for got, want in zip(outputs_of(again.network, image), outputs):
        torch.testing.assert_close(got, want)


def test_the_new_channels_are_fitted_by_least_squares_and_nothing_else_moves():
    lwop18, upper_body = load_keypoint_set("lwop18"), load_keypoint_set(UPPER_BODY)
    architecture = Architecture(lwop18.num_heatmaps, lwop18.num_pafs, num_refinement_stages=1, num_channels=32,
                                backbone_width=0.25)
    torch.manual_seed(0)
    grown = grow_network(build_network(architecture).state_dict(), architecture, lwop18, upper_body)
    network = grown.network
    before = {k: v.clone() for k, v in network.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        maps = (3, 8, 8)
        mask = torch.ones(3, 8, 8)
        mask[0, :2] = 0  # an ignored region: the fit weighs cells as the loss does
        batches.append({"image": torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator),
                        "heatmaps": torch.rand(maps[0], upper_body.num_heatmaps, *maps[1:], generator=generator),
                        "pafs": torch.rand(maps[0], upper_body.num_pafs, *maps[1:], generator=generator) * 2 - 1,
                        "mask": mask, "heatmap_channel_mask": torch.ones(3, upper_body.num_heatmaps),
                        "paf_channel_mask": torch.ones(3, upper_body.num_pafs)})

    def paf_loss(stage_output: int) -> float:  # the fitted channels' training loss, per sample
        total = 0.0
        for batch in batches:
            image = (batch["image"].permute(0, 3, 1, 2).float() - 128) / 256
            prediction = outputs_of(network, image)[stage_output]
            total += float(((prediction - batch["pafs"]) ** 2 * batch["mask"][:, None]).sum()) / 2
        return total / 6

    loss_before = paf_loss(1) + paf_loss(3)
    report = fit_channels(network, batches, grown.composed_channels)
    # every PAF channel is composed (upper_body's limbs are none of lwop18's), in both stages; no heatmap is new
    assert report.samples == 6 and report.channels == 2 * upper_body.num_pafs
    assert report.layers == ["initial_stage.pafs.1.0", "refinement_stages.0.pafs.1.0"]
    loss_after = paf_loss(1) + paf_loss(3)
    assert report.loss_before == pytest.approx(loss_before, rel=1e-3)
    assert report.loss_after == pytest.approx(loss_after, rel=1e-3)
    assert loss_after < loss_before
    after = network.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{layer}.{kind}" for layer in report.layers for kind in ("weight", "bias")}
    # The fitted rows are the least-squares optimum: no step away from them, in any direction, lowers the loss.
    parameters = dict(network.named_parameters())
    for seed in range(4):
        step = torch.Generator().manual_seed(10 + seed)
        with torch.no_grad():
            for name in changed:
                rows = grown.composed_channels[name.rpartition(".")[0]]
                fitted = after[name][rows]
                parameters[name][rows] = fitted + 0.05 * fitted.abs().mean() * torch.randn(fitted.shape,
                                                                                           generator=step)
        assert paf_loss(1) + paf_loss(3) > loss_after


def test_the_imported_human_model_grows_an_animal_class_and_keeps_its_people(hpe_checkpoint):
    """lwop18 grown into people_animals (COCO's person, AP-10K's animal): every stage's person maps are the old maps
    selected and composed, and the animal channels start at zero."""
    require_shared(MMPOSE_SAMPLES)
    checkpoint = load_checkpoint(hpe_checkpoint)
    old_set = load_keypoint_set(checkpoint["keypoint_set"])
    new_set = load_keypoint_set(os.path.join(REPO_ROOT, "datasets", "recipes", "people_animals.json"))
    person, animal = new_set.classes
    old_architecture = Architecture.from_dict(checkpoint["architecture"])
    old = build_network(old_architecture)
    old.load_state_dict(checkpoint["state_dict"])
    image = real_image()
    mapping = channel_map(old_set, new_set)
    kept = np.flatnonzero(mapping.heatmaps >= 0)
    assert set(person.channels) < set(kept) and not set(animal.channels) & set(kept)
    old_outputs = outputs_of(old, image)

    grown = grow_network(checkpoint["state_dict"], old_architecture, old_set, new_set)
    outputs = outputs_of(grown.network, image)
    assert [o.shape[1] for o in outputs] == [new_set.num_heatmaps, new_set.num_pafs] * 2
    person_pafs = np.sort(person.paf_channels)
    for stage in range(0, len(outputs), 2):
        torch.testing.assert_close(outputs[stage][:, kept], old_outputs[stage][:, mapping.heatmaps[kept]],
                                   rtol=1e-4, atol=1e-5)
        composed = torch.einsum("no,bohw->bnhw", torch.as_tensor(mapping.pafs, dtype=torch.float32),
                                old_outputs[stage + 1])
        torch.testing.assert_close(outputs[stage + 1][:, person_pafs], composed[:, person_pafs], rtol=1e-4,
                                   atol=1e-5)
        assert outputs[stage][:, animal.channels].abs().max() == 0
        assert outputs[stage + 1][:, animal.paf_channels].abs().max() == 0

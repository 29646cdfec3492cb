"""Training on mixed datasets: channels a sample's source does not label contribute exactly zero gradient, a model of
a smaller set grows into a union keeping its old outputs, new channels can learn faster, and train.py / val.py run
recipes end to end (people from the imported weights, animals from scratch under torchrun)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mixing import (ANIMAL_UNION, PEOPLE_UNION, aic_source, coco_mini_source, mpii_source, people_recipe, sample_source,
                    write_recipe)
from training_data import run_tool

from conftest import COCO_MINI_LABELS, MMPOSE_SAMPLES, REPO_ROOT, require_shared
from lwpose.datasets.augmentation import AugmentationConfig
from lwpose.datasets.mix_recipe import load_mix_recipe, prepare_mixed_labels
from lwpose.datasets.pose_dataset import PoseTrainingDataset
from lwpose.interop.checkpoint import load_checkpoint, load_model
from lwpose.keypoints import KeypointSet, load_keypoint_set
from lwpose.modules.loss import loss_masks, pose_loss
from lwpose.modules.pose_network import Architecture, build_network
from lwpose.training.growing import grow_network


def samples_recipe(**ratios) -> dict:
    """COCO, AIC and MPII samples of mmpose combined into lwop18 + head_top."""
    return people_recipe([sample_source("coco", "coco", "test_coco.json", **ratios.get("coco", {})),
                          aic_source(**ratios.get("aic", {})), mpii_source(**ratios.get("mpii", {}))])


@pytest.fixture(scope="module")
def mixed_batch(tmp_path_factory):
    """One augmented 128x128 sample of each source (COCO lacks head_top, AIC and MPII the face) as a batch."""
    require_shared(MMPOSE_SAMPLES)
    recipe = load_mix_recipe(write_recipe(tmp_path_factory.mktemp("mix") / "recipe.json", samples_recipe()))
    labels = prepare_mixed_labels(recipe, report=lambda line: None)
    dataset = PoseTrainingDataset(labels, augmentation=AugmentationConfig(input_size=128), seed=4, progress=False)
    first = [int(np.flatnonzero([labels.images[i].source == s for i, _ in labels.samples])[0])
             for s in range(len(labels.sources))]
    batch = torch.utils.data.default_collate([dataset.sample_for_key((index, 0)) for index in first])
    return labels, batch


def parameter_gradients(network, batch, heatmaps, pafs) -> dict:
    network.zero_grad()
    images = (batch["image"].permute(0, 3, 1, 2).float() - 128) / 256
    masks = loss_masks(batch["mask"], batch["heatmap_channel_mask"], batch["paf_channel_mask"],
                       batch["background_mask"])
    loss, _ = pose_loss(network(images), heatmaps, pafs, *masks)
    loss.backward()
    return {name: p.grad.clone() for name, p in network.named_parameters()}


def test_unlabelled_channels_of_a_recipe_sample_contribute_exactly_zero_gradient(mixed_batch):
    labels, batch = mixed_batch
    target = labels.keypoint_set
    torch.manual_seed(0)
    network = build_network(Architecture(target.num_heatmaps, target.num_pafs, "lwop", 1, num_channels=32,
                                         backbone_width=0.25))
    heatmap_mask, paf_mask = loss_masks(batch["mask"], batch["heatmap_channel_mask"], batch["paf_channel_mask"],
                                        batch["background_mask"])
    # Each source leaves its own channels unlabelled: COCO head_top and its limb, AIC and MPII the face.
    for row, source in enumerate(labels.sources):
        for j, name in enumerate(target.keypoints):
            assert bool((heatmap_mask[row, j] == 0).all()) == (not source.labelled[j]), (source.name, name)
        for limb, (a, b) in enumerate(target.limbs):
            unlabelled = not (source.labelled[target.index[a]] and source.labelled[target.index[b]])
            assert bool((paf_mask[row, target.limb_paf_channels[limb]] == 0).all()) == unlabelled
        # The background is not trusted around the people (where an unlabelled keypoint may be), elsewhere it is.
        background = heatmap_mask[row, target.background_channel]
        assert (background == 0).any() and (background == 1).any(), source.name
    real = parameter_gradients(network, batch, batch["heatmaps"], batch["pafs"])
    noise = torch.Generator().manual_seed(1)
    garbage_heatmaps = torch.where(heatmap_mask == 0, torch.rand(batch["heatmaps"].shape, generator=noise) * 5,
                                   batch["heatmaps"])
    garbage_pafs = torch.where(paf_mask == 0, torch.randn(batch["pafs"].shape, generator=noise) * 5, batch["pafs"])
    assert (garbage_heatmaps != batch["heatmaps"]).sum() > 1000 and (garbage_pafs != batch["pafs"]).sum() > 1000
    garbage = parameter_gradients(network, batch, garbage_heatmaps, garbage_pafs)
    for name in real:
        assert torch.equal(real[name], garbage[name]), name  # bit for bit: those targets weigh exactly nothing
    # A labelled channel does count: the same change to AIC's neck moves the gradients.
    changed_heatmaps = batch["heatmaps"].clone()
    changed_heatmaps[1, target.index["neck"]] += 0.5
    changed = parameter_gradients(network, batch, changed_heatmaps, batch["pafs"])
    assert not torch.equal(real["initial_stage.heatmaps.1.0.weight"], changed["initial_stage.heatmaps.1.0.weight"])


def test_a_fully_labelled_source_keeps_its_whole_background(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    recipe = load_mix_recipe(write_recipe(tmp_path / "coco.json", people_recipe(
        [sample_source("coco", "coco", "test_coco.json")], target={"mode": "merge", "keypoints": "coco"})))
    labels = prepare_mixed_labels(recipe, report=lambda line: None)
    sample = PoseTrainingDataset(labels, augmentation=AugmentationConfig(input_size=128), progress=False)[(0, 0)]
    assert (sample["background_mask"] == 1).all() and sample["heatmap_channel_mask"].all()


def grown_imported_model(checkpoint_path: str, new_set: KeypointSet):
    network, old_set, checkpoint = load_model(checkpoint_path)
    grown = grow_network(checkpoint["state_dict"], Architecture.from_dict(checkpoint["architecture"]), old_set,
                         new_set)
    return network, old_set, grown


def outputs_of(network, image: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return network.eval()(image)


def test_a_grown_model_keeps_the_old_outputs_of_the_old_keypoints(hpe_checkpoint):
    require_shared(MMPOSE_SAMPLES)
    import cv2

    union = load_keypoint_set(PEOPLE_UNION)
    old, lwop, grown = grown_imported_model(hpe_checkpoint, union)
    image = cv2.resize(cv2.imread(os.path.join(MMPOSE_SAMPLES, "coco", "000000196141.jpg")), (184, 128))
    image = torch.from_numpy((image.astype(np.float32) - 128) / 256).permute(2, 0, 1)[None]
    heatmap_channels = np.r_[union.indices_in(lwop), union.background_channel]
    paf_channels = np.concatenate([union.limb_paf_channels[union.limbs.index(limb)] for limb in lwop.paf_order])
    new_heatmap, new_pafs = union.index["head_top"], union.limb_paf_channels[union.limbs.index(("neck", "head_top"))]

    def assert_old_outputs_kept(outputs_grown):
        for stage, (before, after) in enumerate(zip(outputs_of(old, image), outputs_grown)):
            channels = heatmap_channels if stage % 2 == 0 else paf_channels
            # Equal up to float summation order (the refinement input has more, zero-weighted, channels).
            torch.testing.assert_close(after[:, channels], before, rtol=1e-5, atol=1e-6)

    outputs = outputs_of(grown.network, image)
    assert_old_outputs_kept(outputs)
    assert outputs[0][:, new_heatmap].abs().max() == 0 and outputs[1][:, new_pafs].abs().max() == 0
    # Trained new output channels change nothing old as long as the new input weights stay zero.
    with torch.no_grad():
        for name, (dim, indices) in grown.new_channels.items():
            if dim == 0:
                dict(grown.network.named_parameters())[name][indices] = 0.3
    outputs = outputs_of(grown.network, image)
    assert outputs[-2][:, new_heatmap].abs().max() > 0
    assert_old_outputs_kept(outputs)
    refinement_input = grown.new_channels["refinement_stages.0.trunk.0.initial.0.weight"]
    assert refinement_input[0] == 1 and len(refinement_input[1]) == 3  # head_top's heatmap and its limb's PAFs


def test_a_limb_grown_the_other_way_round_takes_negated_weights(hpe_checkpoint):
    data = load_keypoint_set("lwop18").to_dict()
    reverse = lambda pairs: [["nose", "neck"] if p == ["neck", "nose"] else p for p in pairs]  # noqa: E731
    data.update(name="lwop18_reversed", limbs=reverse(data["limbs"]), paf_order=reverse(data["paf_order"]))
    reversed_set = KeypointSet.from_dict(data)
    old, lwop, grown = grown_imported_model(hpe_checkpoint, reversed_set)
    assert grown.new_channels == {}
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before, after = outputs_of(old, image), outputs_of(grown.network, image)
    limb = lwop.limb_paf_channels[lwop.limbs.index(("neck", "nose"))]
    for stage in (1, 3):
        torch.testing.assert_close(after[stage][:, limb], -before[stage][:, limb], rtol=1e-5, atol=1e-6)
        others = np.setdiff1d(np.arange(lwop.num_pafs), limb)
        torch.testing.assert_close(after[stage][:, others], before[stage][:, others], rtol=1e-5, atol=1e-6)


def read_csv(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_py_mix_grows_the_imported_model_and_val_py_scores_each_source(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    recipe = write_recipe(tmp_path / "recipe.json", samples_recipe(
        coco={"source_ratio": 0.5}, aic={"source_ratio": 0.25}, mpii={"source_ratio": 0.25}))
    result = run_tool("train.py", "--mix", recipe, "--checkpoint-path", hpe_checkpoint, "--weights-only",
                      "--experiments-folder", tmp_path, "--experiment-name", "grow", "--input-size", "128",
                      "--batch-size", "4", "--max-iterations", "2", "--checkpoint-after", "1", "--log-after", "1",
                      "--num-workers", "0", "--freeze", "model", "--new-channel-lr-mult", "10", "--no-progress",
                      "--device", "cpu")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every batch of 4 holds 2 coco, 1 aic, 1 mpii" in result.stdout
    assert "heads grown from 'lwop18' to 'lwop18_head_top'" in result.stdout and "1 new (head_top)" in result.stdout
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "grow" / "log.csv")] == [1, 2]
    # Adam's first step moves every weight with a gradient by its learning rate: the new channels 10 times as far.
    _, _, grown = grown_imported_model(hpe_checkpoint, load_keypoint_set(PEOPLE_UNION))
    start = grown.network.state_dict()
    after = load_checkpoint(str(tmp_path / "grow" / "checkpoints" / "checkpoint_iter_1.pth"))["state_dict"]
    name = "initial_stage.heatmaps.1.0.weight"
    step = (after[name] - start[name]).abs()
    new_rows = grown.new_channels[name][1]
    old_rows = np.setdiff1d(np.arange(step.shape[0]), new_rows)
    assert step[new_rows].max() / step[old_rows].max() == pytest.approx(10, rel=0.01)
    assert torch.equal(after["model.0.0.weight"], start["model.0.0.weight"])  # frozen backbone

    metrics_path = tmp_path / "metrics.json"
    result = run_tool("val.py", "--mix", recipe, "--checkpoint-path", tmp_path / "grow" / "checkpoints" /
                      "checkpoint_iter_2.pth", "--max-images", "1", "--pck-keypoints", "head_top", "--metrics-out",
                      metrics_path, "--output-name", tmp_path / "dets.json", "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PCK@0.1 head_top" in result.stdout and "weighted mean (by people)" in result.stdout
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics["datasets"]) == {"coco", "aic", "mpii"}
    assert metrics["datasets"]["mpii"]["PCKh@0.5"] is not None and "PCKh@0.5" not in metrics["datasets"]["coco"]


# The README's "Mixing datasets" run, shorter: only the refinement stage trains (the backbone, CPM and initial stage
# stay the imported ones), the new head_top channels step 25 times further than the old ones.
LEARN_HEAD_TOP = ["--freeze", "model", "--freeze", "cpm", "--freeze", "initial_stage", "--new-channel-lr-mult", "25",
                  "--input-size", "256", "--batch-size", "4", "--channels-last"]  # 1.4-2x faster steps on the CPU


@pytest.mark.slow
def test_the_imported_model_learns_head_top_from_aic_and_mpii_and_keeps_its_coco_ap(hpe_checkpoint, tmp_path):
    require_shared(COCO_MINI_LABELS, MMPOSE_SAMPLES)
    recipe = write_recipe(tmp_path / "recipe.json", people_recipe(
        [coco_mini_source(source_ratio=0.5), aic_source(source_ratio=0.25), mpii_source(source_ratio=0.25)]))
    iterations = 50
    result = run_tool("train.py", "--mix", recipe, "--checkpoint-path", hpe_checkpoint, "--weights-only",
                      *LEARN_HEAD_TOP, "--max-iterations", iterations, "--checkpoint-after", iterations,
                      "--experiments-folder", tmp_path, "--experiment-name", "head_top", "--num-workers", "0",
                      "--no-progress", "--device", "cpu", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics_path = tmp_path / "metrics.json"
    result = run_tool("val.py", "--mix", recipe, "--checkpoint-path",
                      tmp_path / "head_top" / "checkpoints" / f"checkpoint_iter_{iterations}.pth",
                      "--pck-keypoints", "head_top", "--metrics-out", metrics_path, "--output-name",
                      tmp_path / "dets.json", "--no-progress", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(result.stdout)
    rows = json.loads(metrics_path.read_text())["datasets"]
    assert rows["coco"]["images"] == 80 and rows["coco"]["AP"] >= 0.30  # imported: 0.322 (REFERENCE.md)
    # The grown head_top channel starts at zero (no peak anywhere); now it peaks at the head tops it was shown.
    head_top = {name: rows[name]["per_keypoint"]["head_top"]["PCK@0.1"] for name in ("aic", "mpii")}
    assert head_top["aic"] >= 0.4 and head_top["mpii"] >= 0.6, head_top
    assert rows["coco"]["per_keypoint"].get("head_top") is None  # COCO has none to score


@pytest.mark.slow
def test_val_py_mix_scores_coco_aic_mpii_and_crowdpose_on_their_own_keypoints(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_SAMPLES)
    recipe = os.path.join(REPO_ROOT, "datasets", "recipes", "people_samples.json")
    require_shared(*(source.labels for source in load_mix_recipe(recipe).sources))
    metrics_path = tmp_path / "metrics.json"
    result = run_tool("val.py", "--mix", recipe, "--checkpoint-path", hpe_checkpoint, "--metrics-out", metrics_path,
                      "--output-name", tmp_path / "dets.json", "--no-progress", "--pck-keypoints", "neck")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(result.stdout)
    table = result.stdout[result.stdout.index("dataset "):].splitlines()
    assert [line.split()[0] for line in table[1:5]] == ["coco", "aic", "mpii", "crowdpose"]
    assert table[-1].startswith("weighted mean (by people)")
    rows = json.loads(metrics_path.read_text())["datasets"]
    assert rows["coco"]["AP"] >= 0.776  # what val.py scores on this file alone (tests/test_val_coco.py)
    assert rows["aic"]["AP"] > 0.05 and rows["crowdpose"]["AP"] > 0.3  # scored with the area filled from the box
    assert rows["mpii"]["PCKh@0.5"] > 0.8 and "PCKh@0.5" not in rows["aic"]
    assert rows["aic"]["per_keypoint"]["neck"]["PCK@0.1"] > 0.5  # AIC's neck scored with the model's neck
    assert "head_top" not in {k for k, v in rows["aic"]["per_keypoint"].items() if v}  # not a model keypoint
    for row in rows.values():
        assert 0.5 < row["PCK@0.1"] <= 1 and row["PCK@0.05"] <= row["PCK@0.1"]


@pytest.mark.slow
def test_an_animal_recipe_prepares_trains_under_torchrun_and_evaluates(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    recipe = write_recipe(tmp_path / "animals.json", {
        "name": "animals", "target": {"mode": "combine", "keypoints": ANIMAL_UNION},
        "sources": [sample_source("ap10k", "ap10k", "test_ap10k.json", source_ratio=0.5),
                    sample_source("animalpose", "animalpose", "test_animalpose.json", source_ratio=0.5)]})
    prepared = tmp_path / "prepared.json"
    result = run_tool("scripts/prepare_train_labels.py", "--mix", recipe, "--output-name", prepared)
    assert result.returncode == 0, result.stderr
    assert "unlabelled in 'animal_union': neck" in result.stdout  # Animal-Pose has no neck
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
         "--mix", recipe, "--prepared-train-labels", prepared, "--experiments-folder", tmp_path,
         "--experiment-name", "animals", "--input-size", "64", "--batch-size", "2", "--max-iterations", "2",
         "--log-after", "1", "--num-workers", "0", "--no-progress", "--device", "cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every batch of 2 holds 1 ap10k, 1 animalpose" in result.stdout and "x 2 process(es)" in result.stdout
    checkpoint = tmp_path / "animals" / "checkpoints" / "checkpoint_iter_2.pth"
    assert load_checkpoint(str(checkpoint))["keypoint_set"]["name"] == "animal_union"
    metrics_path = tmp_path / "metrics.json"
    result = run_tool("val.py", "--mix", recipe, "--checkpoint-path", checkpoint, "--metrics-out", metrics_path,
                      "--output-name", tmp_path / "dets.json", "--height-size", "128", "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(metrics_path.read_text())["datasets"]
    assert set(rows) == {"ap10k", "animalpose"} and all(row["images"] == 2 for row in rows.values())

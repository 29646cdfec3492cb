"""train.py as users run it: overfitting a few real images from scratch, fine-tuning the imported weights without
losing AP, SIGKILL then --resume continuing the same loss sequence, torchrun with two CPU processes, ImageNet
MobileNet weights in the reference's layout, learning-rate multipliers and freezing, atomic checkpoints."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict

import pytest
import torch
from training_data import prepare, run_tool, single_person_subset

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, REPO_ROOT, require_shared
from lwpose.interop.checkpoint import atomic_torch_save, load_checkpoint
from lwpose.keypoints import load_keypoint_set
from lwpose.modules.pose_network import Architecture, build_network
from lwpose.training.setup import (OptimizerSettings, learning_rate_factor, optimizer_settings_from_config,
                                   parameter_groups, starting_network)

SMALL_RUN = ["--input-size", "64", "--batch-size", "2", "--log-after", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    """Prepared labels of 8 coco_mini_train images with one training-sized person each."""
    require_shared(COCO_MINI_LABELS)
    folder = tmp_path_factory.mktemp("eight")
    subset = single_person_subset(COCO_MINI_LABELS, 8, folder / "eight.json")
    prepare(subset, COCO_MINI_IMAGES, "lwop18", folder / "prepared.json")
    return str(folder / "prepared.json")


def train(prepared, experiments, name, *extra, timeout=900):
    result = run_tool("train.py", "--prepared-train-labels", prepared, "--experiments-folder", experiments,
                      "--experiment-name", name, *extra, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def read_log(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


LOSS_COLUMNS = ("iteration", "epoch", "loss", "stage0_heatmaps", "stage0_pafs", "stage1_heatmaps", "stage1_pafs")


@pytest.mark.slow
def test_training_from_scratch_overfits_eight_images(eight_images, tmp_path):
    train(eight_images, tmp_path, "overfit", "--no-augmentation", "--input-size", "128", "--batch-size", "8",
          "--base-lr", "1e-3", "--max-iterations", "22", "--log-after", "1", "--num-workers", "0",
          "--no-progress", "--device", "cpu")
    losses = [float(row["loss"]) for row in read_log(tmp_path / "overfit" / "log.csv")]
    assert len(losses) == 22
    final = sum(losses[-3:]) / 3
    assert losses[0] / final >= 5, losses


@pytest.mark.slow
def test_a_killed_run_resumes_with_exactly_the_same_losses(eight_images, tmp_path):
    common = [*SMALL_RUN, "--max-iterations", "8", "--checkpoint-after", "2", "--num-workers", "1",
              "--deterministic", "--seed", "3"]
    train(eight_images, tmp_path, "whole", *common)
    whole = read_log(tmp_path / "whole" / "log.csv")

    command = [sys.executable, "train.py", "--prepared-train-labels", eight_images, "--experiments-folder",
               str(tmp_path), "--experiment-name", "killed", *common]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    log = tmp_path / "killed" / "log.csv"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if log.exists() and len(read_log(log)) >= 5:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the trainer and its data workers, as a lost machine would
    process.wait()
    rows_at_kill = len(read_log(log))
    assert 5 <= rows_at_kill < 8

    folder = tmp_path / "killed" / "checkpoints"
    for name in (n for n in os.listdir(folder) if n.endswith(".pth")):  # a kill mid-write leaves only a .tmp
        state = torch.load(folder / name, weights_only=True)  # complete, and plain data only
        assert name == f"checkpoint_iter_{state['training']['iteration']}.pth"

    train(eight_images, tmp_path, "killed", *common, "--resume")
    resumed = read_log(log)
    assert len(resumed) == 8
    for row_whole, row_resumed in zip(whole, resumed):
        assert [row_whole[c] for c in LOSS_COLUMNS] == [row_resumed[c] for c in LOSS_COLUMNS]


def test_torchrun_trains_with_two_cpu_processes_for_a_time_budget(eight_images, tmp_path):
    """Two processes must agree on when the time is up and on the learning rate, or one would wait forever for the
    other's next step."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    budget_minutes, base_lr = 0.1, 1e-3
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
         "--prepared-train-labels", eight_images, "--experiments-folder", str(tmp_path), "--experiment-name", "ddp",
         *SMALL_RUN, "--max-minutes", str(budget_minutes), "--max-iterations", "100000", "--checkpoint-after", "3",
         "--num-workers", "0", "--base-lr", str(base_lr), "--lr-drop-epochs", "--lr-drop-progress", "0.5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "x 2 process(es)" in result.stdout
    assert result.stdout.count("done: iteration") == 1  # rank 0 reports, rank 1 trains quietly
    rows = read_log(tmp_path / "ddp" / "log.csv")
    last = int(rows[-1]["iteration"])
    assert [int(r["iteration"]) for r in rows] == list(range(1, last + 1)) and 3 < last < 100000
    checkpoint = load_checkpoint(str(tmp_path / "ddp" / "checkpoints" / f"checkpoint_iter_{last}.pth"))
    training = checkpoint["training"]
    assert training["world_size"] == 2 and training["data"]["batch_size"] == 2  # each step: 2 processes x 2
    budget = 60 * budget_minutes
    assert budget <= training["train_seconds"] < budget + 30
    # The learning rate drops once half the time has gone, by the windows' own clock (logged every step).
    elapsed, dropped_at = 0.0, None
    for row in rows:
        elapsed += float(row["seconds"])
        if dropped_at is None and float(row["lr"]) < base_lr:
            dropped_at = elapsed
        assert float(row["lr"]) == pytest.approx(base_lr if dropped_at is None else base_lr * 0.333)
    assert dropped_at is not None and budget / 2 <= dropped_at + 0.5 and float(rows[0]["lr"]) == base_lr


@pytest.mark.slow
def test_fine_tuning_the_imported_weights_keeps_val_ap(hpe_checkpoint, tmp_path):
    require_shared(COCO_MINI_LABELS)
    prepare(COCO_MINI_LABELS, COCO_MINI_IMAGES, "lwop18", tmp_path / "prepared.json")
    train(str(tmp_path / "prepared.json"), tmp_path, "finetune", "--checkpoint-path", hpe_checkpoint,
          "--weights-only", "--batch-size", "4", "--max-iterations", "6", "--log-after", "1", "--num-workers", "2",
          "--channels-last",
          "--val-after", "6", "--val-labels", COCO_MINI_LABELS, "--val-images-folder", COCO_MINI_IMAGES,
          "--no-progress", "--device", "cpu", timeout=1200)
    validation = read_log(tmp_path / "finetune" / "val_log.csv")
    assert len(validation) == 1 and float(validation[0]["AP"]) >= 0.30
    best = load_checkpoint(str(tmp_path / "finetune" / "checkpoints" / "best.pth"))
    assert best["meta"]["AP"] == pytest.approx(float(validation[0]["AP"]))
    assert best["architecture"]["variant"] == "omz"


def synthetic_imagenet_mobilenet(path) -> int:
    """A file in the layout of the reference's mobilenet_sgd_68.848.pth.tar (random values): DataParallel keys,
    conv_bn stem, 13 conv_dw blocks up to 1024 channels, and the classifier. Returns how many tensors our backbone
    should take from it (stem and the first 11 blocks)."""
    state = OrderedDict()

    def batch_norm(prefix, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{name}"] = torch.rand(channels) + 0.5

    state["module.model.0.0.weight"] = torch.randn(32, 3, 3, 3)
    batch_norm("module.model.0.1", 32)
    channels = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    for block in range(1, 14):
        cin, cout = channels[block - 1], channels[block]
        state[f"module.model.{block}.0.weight"] = torch.randn(cin, 1, 3, 3)
        batch_norm(f"module.model.{block}.1", cin)
        state[f"module.model.{block}.3.weight"] = torch.randn(cout, cin, 1, 1)
        batch_norm(f"module.model.{block}.4", cout)
    state["module.fc.weight"] = torch.randn(1000, 1024)
    state["module.fc.bias"] = torch.randn(1000)
    torch.save({"epoch": 150, "arch": "mobilenet", "state_dict": state, "best_prec1": 68.848}, path)
    return 5 + 11 * 10


def test_imagenet_mobilenet_weights_fill_the_backbone(tmp_path):
    expected = synthetic_imagenet_mobilenet(tmp_path / "mobilenet_sgd.pth.tar")
    start = starting_network(load_keypoint_set("lwop18"), "lwop", 1,
                             from_mobilenet=str(tmp_path / "mobilenet_sgd.pth.tar"))
    assert f"({expected} tensors loaded)" in start.description
    source = torch.load(tmp_path / "mobilenet_sgd.pth.tar", weights_only=True)["state_dict"]
    own = start.network.state_dict()
    assert torch.equal(own["model.11.3.weight"], source["module.model.11.3.weight"])
    assert torch.equal(own["model.6.1.running_var"], source["module.model.6.1.running_var"])
    assert not any(k.startswith("model.12") for k in own)


def test_lr_multipliers_and_freezing_come_from_a_config_file(tmp_path):
    config = {"base_lr": 1e-4, "lr_multipliers": {"model": 0.5, "refinement_stages": 4}, "freeze": ["cpm"],
              "bias_lr_multiplier": 2}
    settings = optimizer_settings_from_config(config, "config.json")
    network = build_network(Architecture(19, 38, "lwop", 1))
    groups = parameter_groups(network, settings)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(network.named_parameters())
    assert lr_of[id(params["model.3.3.weight"])] == pytest.approx(0.5e-4)
    assert lr_of[id(params["refinement_stages.0.heatmaps.1.0.bias"])] == pytest.approx(8e-4)
    assert lr_of[id(params["initial_stage.pafs.0.0.weight"])] == pytest.approx(1e-4)
    assert decay_of[id(params["initial_stage.pafs.0.0.weight"])] == settings.weight_decay
    assert decay_of[id(params["model.3.0.weight"])] == 0  # depthwise
    assert all(not p.requires_grad and id(p) not in lr_of for n, p in params.items() if n.startswith("cpm."))
    with pytest.raises(ValueError, match="'backbone' names no part of the network"):
        parameter_groups(network, OptimizerSettings(freeze=("backbone",)))
    with pytest.raises(ValueError, match="unknown entries"):
        optimizer_settings_from_config({"learning_rate": 1}, "config.json")
    # Drops at fractions of the run: after 3/4 of it one drop, after 9/10 two, epoch drops add to them.
    timed = optimizer_settings_from_config({"lr_drop_epochs": [5], "lr_drop_progress": [0.75, 0.9]}, "config.json")
    assert [learning_rate_factor(epoch, timed, progress) for epoch, progress in
            ((0, 0.0), (0, 0.75), (0, 0.95), (5, 0.95))] == pytest.approx([1, 0.333, 0.333 ** 2, 0.333 ** 3])
    with pytest.raises(ValueError, match="config.json: 'lr_drop_progress' holds fractions between 0 and 1"):
        optimizer_settings_from_config({"lr_drop_progress": [75]}, "config.json")


def test_a_frozen_backbone_stays_unchanged_under_bf16_autocast_with_tensorboard_logs(eight_images, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"lr_multipliers": {"initial_stage": 2}}))
    result = train(eight_images, tmp_path, "frozen", *SMALL_RUN, "--max-iterations", "2", "--checkpoint-after", "1",
                   "--keep-checkpoints", "2", "--num-workers", "0", "--freeze", "model", "--config",
                   str(tmp_path / "config.json"), "--lr-mult", "cpm=3", "--base-lr", "1e-3", "--amp", "bf16",
                   "--log-after", "2")
    assert "amp bf16: the network computed in bfloat16" in result.stdout  # autocast really ran in bf16
    first = load_checkpoint(str(tmp_path / "frozen" / "checkpoints" / "checkpoint_iter_1.pth"))
    second = load_checkpoint(str(tmp_path / "frozen" / "checkpoints" / "checkpoint_iter_2.pth"))
    changed = {k for k in first["state_dict"] if not torch.equal(first["state_dict"][k], second["state_dict"][k])}
    assert changed and not any(k.startswith("model.") for k in changed)
    assert any(k.startswith("cpm.") for k in changed)
    multipliers = sorted({g["lr_multiplier"] for g in second["training"]["optimizer"]["param_groups"]})
    assert multipliers == [2.0, 3.0, 4.0, 6.0, 8.0]  # refinement x4 (default) kept
    assert [int(r["iteration"]) for r in read_log(tmp_path / "frozen" / "log.csv")] == [2]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "frozen" / "tensorboard"))


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    atomic_torch_save({"weights": torch.arange(4)}, str(path))

    def crash_midway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"weights": torch.arange(8)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(4))
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_channels_last_training_takes_the_same_steps_and_saves_standard_weights(eight_images, tmp_path):
    common = [*SMALL_RUN, "--max-iterations", "3", "--checkpoint-after", "3", "--num-workers", "0",
              "--deterministic", "--seed", "3"]
    train(eight_images, tmp_path, "standard", *common)
    train(eight_images, tmp_path, "nhwc", *common, "--channels-last")
    standard, nhwc = (read_log(tmp_path / name / "log.csv") for name in ("standard", "nhwc"))
    assert len(standard) == len(nhwc) == 3
    # Other convolution kernels: the first step's losses equal up to rounding; Adam's sign-like first steps let
    # those roundings grow a little, so later steps agree to a percent.
    for column in LOSS_COLUMNS[2:]:
        assert float(nhwc[0][column]) == pytest.approx(float(standard[0][column]), rel=1e-4)
    for row_standard, row_nhwc in zip(standard[1:], nhwc[1:]):
        assert float(row_nhwc["loss"]) == pytest.approx(float(row_standard["loss"]), rel=1e-2)
    weights = load_checkpoint(str(tmp_path / "nhwc" / "checkpoints" / "checkpoint_iter_3.pth"))["state_dict"]
    assert all(tensor.is_contiguous() for tensor in weights.values())

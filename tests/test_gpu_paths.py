"""The paths a first run on GPUs and nodes takes, exercised on the CPU where their mechanism allows (issue 15):
validation sharded over torchrun processes scoring exactly as val.py, set-up failures and --resume agreed between
two "machines" (two torchrun launches on this one, each with its own disk folder), random states per rank, mixed
precision really computing in fp16/bf16 (GradScaler and fused Adam included), a full disk while checkpointing, the
minimum torch, and the choice of GPU per rank. What only a GPU can show is checked by scripts/gpu_check.py."""
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from reliability_data import write_tiny_training_set
from training_data import run_tool, single_person_subset

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, REPO_ROOT, require_shared
from lwpose.interop.checkpoint import load_checkpoint
from lwpose.keypoints import load_keypoint_set
from lwpose.modules.pose_network import Architecture, build_network
from lwpose.training.setup import (OptimizerSettings, ProcessGroup, ProcessSetupError, amp_problem,
                                   capture_rng_states, cuda_device_for_rank, cuda_rng_state_for, rng_states_of_rank)
from lwpose.training.trainer import RunSettings, Trainer

TINY_NETWORK = ["--backbone-width", "0.25", "--num-channels", "32", "--num-refinement-stages", "0"]
TINY_RUN = ["--input-size", "64", "--batch-size", "2", "--log-after", "1", "--num-workers", "0", "--no-progress",
            "--device", "cpu", *TINY_NETWORK]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_labels(tmp_path_factory):
    return write_tiny_training_set(tmp_path_factory.mktemp("tiny"))[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(node_rank: int, port: int, *train_args) -> subprocess.Popen:
    """One of two "machines": a torchrun launch of one train.py process, node `node_rank` of 2, meeting the other
    at 127.0.0.1:`port` as nodes meet at their master address."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node_rank}",
               "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}", "train.py", *train_args]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **ONE_THREAD))


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"still running after {timeout} s: {out[-2000:]} {err[-2000:]}")
    return process.returncode, out, err


def read_csv(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------ item 2: validation
def test_validation_under_torchrun_shards_the_images_and_scores_as_val_py(hpe_checkpoint, tmp_path):
    """Two gloo processes each decode half of the validation images; rank 0 scores them all with pycocotools and
    gets the AP val.py gets on the checkpoint validated."""
    require_shared(COCO_MINI_LABELS)
    subset = single_person_subset(COCO_MINI_LABELS, 6, tmp_path / "six.json")
    prepared = tmp_path / "prepared.json"
    result = run_tool("scripts/prepare_train_labels.py", "--labels", subset, "--images-folder", COCO_MINI_IMAGES,
                      "--keypoints", "lwop18", "--output-name", prepared)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
         "--prepared-train-labels", str(prepared), "--experiments-folder", str(tmp_path), "--experiment-name", "ddp",
         "--checkpoint-path", hpe_checkpoint, "--weights-only", "--base-lr", "1e-7", "--input-size", "64",
         "--batch-size", "2", "--max-iterations", "1", "--num-workers", "0", "--no-progress", "--device", "cpu",
         "--val-labels", subset, "--val-images-folder", COCO_MINI_IMAGES, "--val-height-size", "256",
         "--val-after", "1", "--dist-timeout-minutes", "5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ, **ONE_THREAD))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 images over 2 processes: 3 + 3" in result.stdout
    (validation,) = read_csv(tmp_path / "ddp" / "val_log.csv")
    assert float(validation["AP"]) > 0.2
    metrics_path = tmp_path / "val.json"
    result = subprocess.run(
        [sys.executable, "val.py", "--labels", subset, "--images-folder", COCO_MINI_IMAGES, "--checkpoint-path",
         str(tmp_path / "ddp" / "checkpoints" / "best.pth"), "--backend", "torch", "--height-size", "256",
         "--output-name", str(tmp_path / "detections.json"), "--metrics-out", str(metrics_path), "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, **ONE_THREAD))
    assert result.returncode == 0, result.stderr[-3000:]
    single = json.loads(metrics_path.read_text())
    assert float(validation["AP"]) == single["AP"] and float(validation["AR"]) == single["AR"]


def test_sharded_detections_are_scored_in_the_images_own_order(hpe_checkpoint):
    """The shards of three processes, gathered in rank order, give the report of one process doing it all:
    the same detections in the same order, the same AP, PCK counted from the same detections."""
    require_shared(COCO_MINI_LABELS)
    from lwpose.evaluation.coco import load_keypoint_ground_truth
    from lwpose.evaluation.validation import validate_coco, validate_coco_sharded
    from lwpose.inference.estimator import PoseEstimator

    gt = load_keypoint_ground_truth(COCO_MINI_LABELS)
    estimator = PoseEstimator.from_checkpoint(hpe_checkpoint, backend="torch", height_size=256, decode_at="map")
    whole = validate_coco(estimator, gt, COCO_MINI_IMAGES, progress=False, max_images=8, pck=True)
    shards = []
    for rank in range(3):  # each call hands its shard over; the last one plays the gathering end
        def gather(found, rank=rank):
            shards.append(found)
            return list(shards) if rank == 2 else None
        report = validate_coco_sharded(estimator, gt, COCO_MINI_IMAGES, rank, 3, gather, max_images=8, pck=True)
        assert (report is None) == (rank != 2)
    assert report.images_per_process == [3, 3, 2]
    assert report.detections == whole.detections and len(whole.detections) >= 6
    for name in ("AP", "AR", "PCK@0.1"):
        assert report.metrics[name] == whole.metrics[name]


# ------------------------------------------------------------------------- item 4: set-up and resume on nodes
def test_a_rank_failing_at_start_up_stops_every_rank_with_its_message(tiny_labels, tmp_path):
    port = free_port()
    common = ["--experiments-folder", str(tmp_path), "--experiment-name", "bad", *TINY_RUN, "--max-iterations", "2"]
    start = time.perf_counter()
    good = start_node(0, port, "--prepared-train-labels", tiny_labels, *common)
    bad = start_node(1, port, "--prepared-train-labels", str(tmp_path / "missing.json"), *common)
    (good_status, _, good_err), (bad_status, _, bad_err) = finish(good, 120), finish(bad, 120)
    assert time.perf_counter() - start < 60, "the ranks waited for each other"
    assert good_status != 0 and bad_status != 0
    assert "missing.json" in bad_err
    assert f"rank 1 (on {socket.gethostname()}) failed at start-up:" in good_err and "missing.json" in good_err
    assert "Traceback" not in good_err.split("failed at start-up:")[0]


def test_resume_on_two_machines_where_only_rank_0_has_the_checkpoints(tiny_labels, tmp_path):
    """Each "machine" writes to its own experiments folder (no shared filesystem): rank 0 finds the checkpoint and
    sends it; each rank's own random states go into the checkpoint and come back to it."""
    def run_both(*extra):
        port = free_port()
        nodes = [start_node(node, port, "--prepared-train-labels", tiny_labels, "--experiments-folder",
                            str(tmp_path / f"machine{node}"), "--experiment-name", "run", *TINY_RUN,
                            "--checkpoint-after", "2", "--seed", "4", *extra) for node in (0, 1)]
        for node, process in enumerate(nodes):
            status, out, err = finish(process)
            assert status == 0, f"machine {node}: {out[-2000:]} {err[-3000:]}"

    run_both("--max-iterations", "2")
    assert not (tmp_path / "machine1" / "run" / "checkpoints").exists()
    run_both("--max-iterations", "4", "--resume")
    iterations = [int(row["iteration"]) for row in read_csv(tmp_path / "machine0" / "run" / "log.csv")]
    assert iterations == [1, 2, 3, 4]
    rng = load_checkpoint(str(tmp_path / "machine0" / "run" / "checkpoints" / "checkpoint_iter_4.pth"))[
        "training"]["rng"]
    assert len(rng["per_rank"]) == 2
    assert not torch.equal(rng["per_rank"][0]["torch"], rng["per_rank"][1]["torch"])  # seeded per rank


# -------------------------------------------------------------------------------------- item 3: random states
def tiny_trainer(tmp_path, training_state=None, amp=None, rank=0) -> Trainer:
    keypoint_set = load_keypoint_set("lwop18")
    architecture = Architecture(keypoint_set.num_heatmaps, keypoint_set.num_pafs, "lwop", 0, 32, 0.25)
    settings = RunSettings(str(tmp_path), 10, 4, 2, amp=amp, progress=False)
    processes = ProcessGroup(rank, 1, 0, torch.device("cpu"))
    return Trainer(settings, build_network(architecture), architecture, keypoint_set, None, processes,
                   OptimizerSettings(), training_state=training_state)


def test_a_checkpoint_of_a_run_on_more_devices_restores_each_rank_its_own_states(tmp_path):
    """A checkpoint written by four processes on four GPUs (each rank's states with its own GPU's generator)
    resumes on this one CPU process: rank 0 takes rank 0's states, a rank the new run has and the old one did
    not keeps its seed, and a GPU takes only its own generator's state."""
    per_rank = []
    for rank in range(4):
        torch.manual_seed(100 + rank)
        states = capture_rng_states()
        states["cuda"] = torch.full((16,), rank, dtype=torch.uint8)  # a GPU generator's state: bytes
        per_rank.append(states)
    donor = tiny_trainer(tmp_path)
    state = donor.training_state(per_rank)
    assert state["rng"]["per_rank"] is per_rank
    torch.manual_seed(0)
    tiny_trainer(tmp_path, state)
    assert torch.equal(torch.get_rng_state(), per_rank[0]["torch"])
    assert rng_states_of_rank(state["rng"], 3) is per_rank[3] and rng_states_of_rank(state["rng"], 4) is None
    assert torch.equal(cuda_rng_state_for(per_rank[2], 0), per_rank[2]["cuda"])
    # Before per-rank states: rank 0's alone, with the generators of every GPU its machine had.
    old = dict(per_rank[0], cuda=[torch.full((16,), device, dtype=torch.uint8) for device in range(8)])
    assert rng_states_of_rank(old, 0) is old and rng_states_of_rank(old, 1) is None
    assert torch.equal(cuda_rng_state_for(old, 1), old["cuda"][1]) and cuda_rng_state_for(old, 8) is None


# ------------------------------------------------------------------------------------- item 1: one GPU per rank
def test_each_rank_gets_a_gpu_of_its_machine_or_a_clear_refusal():
    assert cuda_device_for_rank(None, 0, 1, 1) == 0 and cuda_device_for_rank(3, 0, 1, 4) == 3
    assert cuda_device_for_rank(None, 1, 2, 2) == 1
    with pytest.raises(ProcessSetupError, match=r"local rank 1 needs GPU 1, .* shows 1 GPU\(s\).*--nproc_per_node=1"):
        cuda_device_for_rank(None, 1, 2, 1)
    with pytest.raises(ProcessSetupError, match="GPU 1 was asked for"):
        cuda_device_for_rank(1, 0, 1, 1)


# --------------------------------------------------------------------------------------- item 5: mixed precision
@pytest.mark.parametrize("amp, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_mixed_precision_steps_compute_in_half_precision_with_loss_scaling_for_fp16(tmp_path, amp, dtype):
    trainer = tiny_trainer(tmp_path, amp=amp)
    assert trainer.optimizer.defaults["fused"]
    seen = []
    trainer.network.initial_stage.register_forward_hook(lambda module, inputs, output: seen.append(output[0].dtype))
    keypoint_set = trainer.keypoint_set
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8, generator=generator),
             "heatmaps": torch.rand(2, keypoint_set.num_heatmaps, 8, 8, generator=generator),
             "pafs": torch.rand(2, keypoint_set.num_pafs, 8, 8, generator=generator) - 0.5,
             "mask": torch.ones(2, 8, 8), "heatmap_channel_mask": torch.ones(2, keypoint_set.num_heatmaps),
             "paf_channel_mask": torch.ones(2, keypoint_set.num_pafs), "background_mask": torch.ones(2, 8, 8)}
    before = {name: p.detach().clone() for name, p in trainer.network.named_parameters()}
    trainer._set_train_mode()
    scale = trainer.scaler.get_scale() if amp == "fp16" else None
    assert scale in (None, 2.0 ** 16)
    for _ in range(12):
        parts = trainer.step(iter([batch]))
        assert parts is not None and torch.isfinite(parts).all() and parts.dtype == torch.float32
        changed = [name for name, p in trainer.network.named_parameters() if not torch.equal(p, before[name])]
        if amp == "bf16":
            break
        # fp16: a step whose scaled gradients overflowed is skipped by the scaler inside the fused Adam kernel,
        # weights untouched, and the scale halves; the first step that fits is applied at that scale
        previous, scale = scale, trainer.scaler.get_scale()
        assert scale == (previous if changed else previous / 2)
        if changed:
            break
    assert seen[0] == dtype and trainer.computed_dtype == dtype  # activations inside the network, under autocast
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    assert len(changed) == len(before)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.network.parameters())


def test_train_py_fp16_on_the_cpu_saves_the_loss_scale(tiny_labels, tmp_path):
    result = run_tool("train.py", "--prepared-train-labels", tiny_labels, "--experiments-folder", tmp_path,
                      "--experiment-name", "fp16", *TINY_RUN, "--max-iterations", "2", "--amp", "fp16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "amp fp16: the network computed in float16" in result.stdout
    scaler = load_checkpoint(str(tmp_path / "fp16" / "checkpoints" / "checkpoint_iter_2.pth"))["training"]["scaler"]
    assert 0 < scaler["scale"] <= 2.0 ** 16  # the scale in force (halved for each step that overflowed)


def test_bf16_on_a_gpu_without_bfloat16_is_refused_before_training():
    v100 = "Tesla V100-SXM2-16GB (compute capability 7.0)"
    problem = amp_problem("bf16", "cuda", bf16_supported=False, device_name=v100)
    assert v100 in problem and "use fp16" in problem
    assert amp_problem("bf16", "cuda", bf16_supported=True) is None
    assert amp_problem("bf16", "cpu", bf16_supported=False) is None  # CPUs compute bf16 (slowly without AMX)
    assert amp_problem("fp16", "cuda", bf16_supported=False) is None and amp_problem(None, "cuda") is None


# ------------------------------------------------------------------------------------------- item 7: full disk
def user_namespace_tmpfs_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_full_disk_while_checkpointing_says_so_in_one_line(tiny_labels, tmp_path, keep_going):
    """The experiments folder on a real 4 MB filesystem (tmpfs in a private mount namespace): the first checkpoint
    (2.7 MB) fits, the second does not."""
    if not user_namespace_tmpfs_available():
        pytest.skip("needs `unshare --user --mount` to mount a small tmpfs without root")
    inside, kept = tmp_path / "disk", tmp_path / "kept"
    inside.mkdir()
    command = [sys.executable, "train.py", "--prepared-train-labels", tiny_labels, "--experiments-folder",
               str(inside), "--experiment-name", "full", *TINY_RUN, "--max-iterations", "6", "--checkpoint-after", "2",
               *(["--keep-going-on-save-error"] if keep_going else [])]
    script = (f"mount -t tmpfs -o size=4m tmpfs {inside} || exit 99; {shlex.join(command)}; status=$?; "
              f"cp -r {inside} {kept}; exit $status")  # the filesystem ends with its namespace: keep what it held
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 99, result.stderr
    first = kept / "full" / "checkpoints" / "checkpoint_iter_2.pth"
    assert load_checkpoint(str(first))["training"]["iteration"] == 2  # intact
    assert sorted(os.listdir(kept / "full" / "checkpoints")) == ["checkpoint_iter_2.pth"]  # no partial file left
    assert "Traceback" not in result.stderr
    failed = str(inside / "full" / "checkpoints" / "checkpoint_iter_4.pth")
    intact = str(inside / "full" / "checkpoints" / "checkpoint_iter_2.pth")
    if keep_going:
        assert result.returncode == 0, result.stderr[-3000:]
        warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: checkpoint")]
        assert len(warnings) == 2 and failed in warnings[0] and "no space left" in warnings[0]
        assert "done: iteration 6" in result.stdout and f"2 checkpoint(s) could not be written (last complete one: " \
            f"{intact})" in result.stdout
        assert len(read_csv(kept / "full" / "log.csv")) == 6
    else:
        assert result.returncode == 1
        (line,) = [line for line in result.stderr.splitlines() if line.strip()]
        assert line.startswith(f"error: checkpoint {failed} could not be written: no space left on the device")
        assert "a checkpoint needs about 2." in line and f"{intact}, is intact" in line and "--resume" in line
        assert len(read_csv(kept / "full" / "log.csv")) == 4  # stopped at the failed save


# ------------------------------------------------------------------------------------------ item 8: minimum torch
def test_an_older_torch_is_named_at_start_up(tmp_path):
    """An environment whose torch is 2.4 (a stub package with its metadata, first on the path)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('__version__ = "2.4.1"\n')
    (tmp_path / "torch-2.4.1.dist-info").mkdir()
    (tmp_path / "torch-2.4.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.4.1\n")
    result = run_tool("train.py", "--help", env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode != 0
    assert result.stderr.strip() == ("error: lwpose needs torch 2.5 or later, this environment has torch 2.4.1: pip "
                                     "install --upgrade 'torch>=2.5' (or the matching build from pytorch.org)")

"""Interrupted training, with real train.py processes: SIGTERM and Ctrl-C save the last finished iteration and exit
cleanly; a NaN loss stops the run naming the iteration and the last good checkpoint, or is skipped when asked; and a
run SIGKILLed at several random moments, resumed each time, ends with exactly the weights of an uninterrupted run,
every iteration logged once."""
import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from reliability_data import write_tiny_training_set
from training_data import run_tool

from conftest import REPO_ROOT
from lwpose.interop.checkpoint import load_checkpoint
from lwpose.training.trainer import latest_checkpoint

TINY_RUN = ["--input-size", "64", "--batch-size", "2", "--log-after", "1", "--checkpoint-after", "1",
            "--keep-checkpoints", "2", "--num-workers", "0", "--no-progress", "--device", "cpu",
            "--deterministic", "--seed", "5"]
STARTUP_BOUND = 600  # seconds: generous on a loaded 2-core machine; only a hang exceeds it


@pytest.fixture(scope="module")
def tiny_labels(tmp_path_factory):
    return write_tiny_training_set(tmp_path_factory.mktemp("tiny"))[0]


def train_command(labels, experiments, name, *extra):
    return [sys.executable, "train.py", "--prepared-train-labels", labels, "--experiments-folder", str(experiments),
            "--experiment-name", name, *TINY_RUN, *extra]


def logged_iterations(log_path) -> list[int]:
    if not os.path.exists(log_path):
        return []
    with open(log_path, newline="") as f:
        return [int(row["iteration"]) for row in csv.DictReader(f)]


def start(command, **kwargs):
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


def wait_for_iterations(process, log_path, count: int) -> None:
    deadline = time.time() + STARTUP_BOUND
    while time.time() < deadline and process.poll() is None and len(logged_iterations(log_path)) < count:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the signal: " + process.communicate()[1][-2000:]
    assert len(logged_iterations(log_path)) >= count, "no progress within the bound"


def checkpoint_iteration(experiment) -> int:
    path = latest_checkpoint(str(experiment))
    return int(os.path.basename(path)[len("checkpoint_iter_"):-len(".pth")]) if path else 0


def wait_for_checkpoint_after(process, experiment, iteration: int) -> None:
    deadline = time.time() + STARTUP_BOUND
    while time.time() < deadline and process.poll() is None and checkpoint_iteration(experiment) <= iteration:
        time.sleep(0.005)  # finer than an iteration of the tiny run, on a fast machine too
    assert process.poll() is None, "the run ended before the kill: " + process.communicate()[1][-2000:]
    assert checkpoint_iteration(experiment) > iteration, "no progress within the bound"


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_sigterm_and_ctrl_c_save_the_last_finished_iteration_and_exit_cleanly(stop, tiny_labels, tmp_path):
    # 1000 iterations: the signal always arrives mid-run; checkpoints only at the end, so the saved one is the stop's
    process = start(train_command(tiny_labels, tmp_path, "stopped", "--max-iterations", "1000",
                                  "--checkpoint-after", "1000", "--num-workers", "1"))
    log = tmp_path / "stopped" / "log.csv"
    wait_for_iterations(process, log, 2)
    if stop == "SIGTERM":
        os.kill(process.pid, signal.SIGTERM)  # a scheduler's preemption: the trainer alone
    else:
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the data worker too
    _, stderr = process.communicate(timeout=STARTUP_BOUND)
    number = signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT
    assert process.returncode == 128 + number, stderr[-3000:]
    assert "Traceback" not in stderr
    saved = latest_checkpoint(str(tmp_path / "stopped"))
    assert saved is not None and f"saved {saved}" in stderr and "--resume" in stderr
    iteration = load_checkpoint(saved)["training"]["iteration"]
    assert logged_iterations(log) == list(range(1, iteration + 1))  # nothing finished was lost


@pytest.mark.slow
def test_a_nan_loss_stops_naming_the_iteration_and_the_last_good_checkpoint(tiny_labels, tmp_path):
    # Adam moves every weight by about the learning rate: 1e30 makes the second forward pass overflow.
    result = run_tool(*train_command(tiny_labels, tmp_path, "diverged", "--max-iterations", "4",
                                     "--base-lr", "1e30")[1:], timeout=STARTUP_BOUND)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    last_good = os.path.join(str(tmp_path), "diverged", "checkpoints", "checkpoint_iter_1.pth")
    assert "loss is NaN or inf at iteration 2" in message and f"Last good checkpoint: {last_good}" in message
    assert logged_iterations(tmp_path / "diverged" / "log.csv") == [1]
    assert latest_checkpoint(str(tmp_path / "diverged")) == last_good


@pytest.mark.slow
def test_nan_losses_are_skipped_and_counted_when_asked(tiny_labels, tmp_path):
    result = run_tool(*train_command(tiny_labels, tmp_path, "skipping", "--max-iterations", "4", "--base-lr", "1e30",
                                     "--skip-nonfinite-loss")[1:], timeout=STARTUP_BOUND)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "3 steps skipped (NaN or inf loss)" in result.stdout
    first = load_checkpoint(str(tmp_path / "skipping" / "checkpoints" / "checkpoint_iter_3.pth"))
    last = load_checkpoint(str(tmp_path / "skipping" / "checkpoints" / "checkpoint_iter_4.pth"))
    assert last["training"]["skipped_steps"] == 3
    assert all(torch.equal(first["state_dict"][k], last["state_dict"][k]) for k in last["state_dict"])


KILLS = 5
# Each kill comes within about one iteration of a checkpoint the resumed run wrote itself, so the five kills use up
# about ten iterations whatever the machine's speed; the rest is the margin that keeps the run from finishing first.
TOTAL_ITERATIONS = 30


@pytest.mark.slow
def test_random_sigkills_and_resumes_end_with_the_uninterrupted_weights(tiny_labels, tmp_path):
    whole = run_tool(*train_command(tiny_labels, tmp_path, "whole", "--max-iterations", str(TOTAL_ITERATIONS))[1:],
                     timeout=STARTUP_BOUND)
    assert whole.returncode == 0, whole.stderr[-2000:]
    with open(tmp_path / "whole" / "log.csv") as f:
        iteration_seconds = sorted(float(row["seconds"]) for row in csv.DictReader(f))[TOTAL_ITERATIONS // 2]

    rng = random.Random(int(os.environ.get("LWPOSE_KILL_SEED", "7")))
    log = tmp_path / "killed" / "log.csv"
    kills, resumes_from = 0, []
    command = train_command(tiny_labels, tmp_path, "killed", "--max-iterations", str(TOTAL_ITERATIONS))
    while True:
        before = latest_checkpoint(str(tmp_path / "killed"))
        start_iteration = load_checkpoint(before)["training"]["iteration"] if before else 0
        resumes_from.append(start_iteration)
        process = start(command + (["--resume"] if before else []))
        if kills == KILLS:
            _, stderr = process.communicate(timeout=STARTUP_BOUND)
            assert process.returncode == 0, stderr[-3000:]
            break
        # A random moment within an iteration after this run saved progress of its own: mid-step, mid-checkpoint-write
        # or mid-log (an iteration's time, measured on the uninterrupted run, keeps it so on any machine).
        wait_for_checkpoint_after(process, tmp_path / "killed", start_iteration)
        time.sleep(rng.uniform(0.0, iteration_seconds))
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        kills += 1
        latest = latest_checkpoint(str(tmp_path / "killed"))
        state = load_checkpoint(latest)  # whole, loadable, plain data
        assert state["training"]["iteration"] >= start_iteration  # never went back
        assert latest.endswith(f"checkpoint_iter_{state['training']['iteration']}.pth")

    assert kills >= 5
    assert resumes_from == sorted(resumes_from) and resumes_from[-1] < TOTAL_ITERATIONS
    assert logged_iterations(log) == list(range(1, TOTAL_ITERATIONS + 1))  # none lost, none repeated
    with open(tmp_path / "whole" / "log.csv") as a, open(log) as b:
        whole_losses = [row["loss"] for row in csv.DictReader(a)]
        killed_losses = [row["loss"] for row in csv.DictReader(b)]
    assert killed_losses == whole_losses
    final_whole = load_checkpoint(str(tmp_path / "whole" / "checkpoints" / f"checkpoint_iter_{TOTAL_ITERATIONS}.pth"))
    final_killed = load_checkpoint(str(tmp_path / "killed" / "checkpoints" /
                                       f"checkpoint_iter_{TOTAL_ITERATIONS}.pth"))
    for key, tensor in final_whole["state_dict"].items():
        assert torch.equal(tensor, final_killed["state_dict"][key]), key
    print(f"\nkill-and-resume: {kills} SIGKILLs, resumed from iterations {resumes_from[1:]}, "
          f"{TOTAL_ITERATIONS} iterations each logged once, final weights identical")

"""The quickstart (scripts/quickstart.py, `make quickstart`) end to end at a tiny size: synthetic data, labels,
train.py, val.py and demo.py all run for real, and every output it announces exists and opens (the annotated video
decodes with OpenCV, the loss-curve PNG loads, the poses JSON lines parse). The AP of so short a run means nothing
and is not checked; README quotes the full run's."""
import json
import os
import subprocess
import sys

import cv2
import pytest

from conftest import REPO_ROOT
from lwpose.constants import STRIDE

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import quickstart  # noqa: E402

# Training for a few seconds, as the full run trains for its minutes: the time, not an iteration count, ends it.
TINY = ["--train-images", "12", "--val-images", "4", "--video-frames", "8", "--train-minutes", "0.05",
        "--batch-size", "2", "--num-workers", "0", "--input-size", "64", "--image-size", "96", "--no-progress"]


def run_quickstart(output_dir, *extra, env=None):
    return subprocess.run([sys.executable, os.path.join("scripts", "quickstart.py"), "--output-dir", str(output_dir),
                           *TINY, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env)


def one_gpu_machine(folder) -> dict:
    """The environment of a machine with exactly one CUDA GPU, as far as torch tells every process started in it
    (a sitecustomize first on the path): "the quickstart needs no GPU" must hold where one is present, too."""
    (folder / "sitecustomize.py").write_text("import torch\n\ntorch.cuda.is_available = lambda: True\n"
                                             "torch.cuda.device_count = lambda: 1\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    # On a machine with one GPU: two training processes on the CPU, none asking for a second GPU (issue 15).
    result = run_quickstart(out, env=one_gpu_machine(tmp_path_factory.mktemp("one_gpu")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def only_checkpoint(out):
    checkpoints = list((out / "runs" / "quickstart" / "checkpoints").glob("checkpoint_iter_*.pth"))
    assert len(checkpoints) == 1, checkpoints
    return checkpoints[0]


@pytest.mark.parametrize("image_size", [96, 128, 200])
def test_training_shows_people_at_the_size_validation_sees_them(image_size):
    # The network input height val.py and demo.py get: the images enlarged, on the network's stride.
    height = quickstart.default_height_size(image_size)
    assert height % STRIDE == 0 and abs(height - image_size * quickstart.ENLARGEMENT) <= STRIDE / 2
    input_size = 96
    low, high = quickstart.training_scale_range(height, input_size)
    # train.py makes the crop's main person CROP_PERSON_HEIGHT of the crop times the factor: the scenes' tallest
    # people come out as tall as val.py sees them at that height, the shortest a little shorter (crouching).
    in_crop = quickstart.CROP_PERSON_HEIGHT * input_size
    assert high * in_crop == pytest.approx(quickstart.PERSON_HEIGHT[1] * height)
    assert low * in_crop < quickstart.PERSON_HEIGHT[0] * height


@pytest.mark.slow
def test_quickstart_writes_every_output_and_they_open(trained):
    out, stdout = trained
    assert "validation AP on the held-out synthetic split:" in stdout
    checkpoint = only_checkpoint(out)
    iterations = int(checkpoint.stem.rsplit("_", 1)[1])
    assert iterations > 1 and f"done: iteration {iterations} after " in stdout
    assert " on cpu (amp: off)" in stdout and "x 2 process(es)" in stdout  # the CPU, though torch saw a GPU
    curve = cv2.imread(str(out / "loss_curve.png"))
    assert curve is not None and curve.shape[0] > 100 and curve.std() > 5
    videos = list(out.glob("demo.*"))
    assert len(videos) == 1
    capture = cv2.VideoCapture(str(videos[0]))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames += 1
    assert frames == 8
    lines = (out / "demo_poses.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all("people" in json.loads(line) for line in lines)
    metrics = json.loads((out / "validation.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    report = (out / "validation.txt").read_text()
    assert "AP" in report and "train" in report
    assert f"trained: {iterations} iterations of 2 samples in 0.1 minutes" in report
    if os.path.exists("/proc/stat"):  # Linux: each step's wall time comes with the share the host took away
        assert "host steal" in report and "host steal" in stdout
    for path in ("loss_curve.png", "validation.txt", "demo_poses.jsonl", videos[0].name):
        assert str(out / path) in stdout


@pytest.mark.slow
def test_quickstart_with_a_checkpoint_skips_training(trained, tmp_path):
    out, _ = trained
    checkpoint = only_checkpoint(out)
    result = run_quickstart(tmp_path, "--checkpoint-path", checkpoint, "--height-size", "64")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== train" not in result.stdout
    assert not (tmp_path / "runs").exists()
    assert (tmp_path / "validation.json").is_file() and list(tmp_path.glob("demo.*"))


def test_quickstart_with_a_missing_checkpoint_fails_before_any_work(tmp_path):
    result = run_quickstart(tmp_path / "out", "--checkpoint-path", tmp_path / "nothing.pth")
    assert result.returncode == 2
    assert "nothing.pth" in result.stderr
    assert not (tmp_path / "out" / "data").exists()

"""demo.py on real videos and images: annotated video and JSON lines out, one summary line at the end, and when
the input is missing, absent, broken mid-way or interrupted, a clear message and outputs kept playable and
complete up to the last processed frame."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import pytest

from conftest import MMPOSE_SAMPLES, REPO_ROOT, SHARED_DATA, require_shared

VTEST = os.path.join(SHARED_DATA, "video", "vtest.avi")
MMPOSE_VIDEO = os.path.join(SHARED_DATA, "video", "mmpose_demo.mp4")
SUMMARY = re.compile(r"^processed (\d+) frames in [\d.]+ s: [\d.]+ fps \(network [\d.]+ ms, decoding [\d.]+ ms "
                     r"per frame\)$")


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    """ONNX exports of the demo runs go to one temporary cache (made once, reused by every run)."""
    return {**os.environ, "LWPOSE_CACHE": str(tmp_path_factory.mktemp("lwpose-cache"))}


def demo_command(checkpoint, *args):
    return [sys.executable, "demo.py", "--checkpoint-path", checkpoint, "--no-progress", *args]


def run_demo(checkpoint, env, *args, timeout=300):
    return subprocess.run(demo_command(checkpoint, *args), cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


def summary_frames(stdout: str) -> int:
    lines = stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    assert match, f"last line is not the summary: {lines[-1:] if lines else stdout!r}"
    assert sum(bool(SUMMARY.match(line)) for line in lines) == 1
    return int(match.group(1))


def video_frames(path) -> tuple[int, tuple]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not play"
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape
    capture.release()
    return count, size


def read_lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_video_to_annotated_video_and_json_lines_with_tracking(hpe_checkpoint, demo_env, tmp_path):
    require_shared(VTEST)
    out, poses = tmp_path / "out.mp4", tmp_path / "poses.jsonl"
    result = run_demo(hpe_checkpoint, demo_env, "--video", VTEST, "--max-frames", "25", "--track", "--smooth",
                      "--output", str(out), "--save-json", str(poses))
    assert result.returncode == 0, result.stderr
    assert summary_frames(result.stdout) == 25
    assert video_frames(out) == (25, (360, 480, 3))
    records = read_lines(poses)
    assert [r["frame"] for r in records] == list(range(25))
    assert records[1]["time"] == pytest.approx(0.1)  # the file's 10 fps
    people = [p for r in records for p in r["people"]]
    assert len(people) / 25 >= 2  # vtest shows several pedestrians at once
    assert all(isinstance(p["id"], int) and p["score"] > 0 for p in people)
    names = {name for p in people for name in p["keypoints"]}
    assert {"neck", "left_ankle", "right_shoulder"} <= names
    # the same people are seen frame after frame: ids recur instead of being renewed every frame
    ids = [p["id"] for p in people]
    assert len(set(ids)) < len(ids) / 3


@pytest.mark.parametrize("backend", ["torch", "openvino"])  # a worker thread, and OpenVINO's own requests
def test_each_way_of_running_the_network_gives_the_same_demo(backend, hpe_checkpoint, demo_env, tmp_path):
    require_shared(MMPOSE_VIDEO)
    if backend != "torch":
        pytest.importorskip(backend)
    poses = tmp_path / "poses.jsonl"
    env = {k: v for k, v in demo_env.items() if k != "DISPLAY"}
    result = run_demo(hpe_checkpoint, env, "--video", MMPOSE_VIDEO, "--backend", backend, "--save-json", str(poses),
                      "--display")
    assert result.returncode == 0, result.stderr
    assert "--display ignored" in result.stderr  # no screen here: said once, then carries on
    assert summary_frames(result.stdout) == 5
    records = read_lines(poses)
    assert len(records) == 5 and all(len(r["people"]) >= 2 for r in records)
    assert all(p["id"] is None for r in records for p in r["people"])  # no --track: no ids


def test_images_are_processed_in_order_and_an_unreadable_one_is_named_and_skipped(hpe_checkpoint, demo_env,
                                                                                   tmp_path):
    require_shared(MMPOSE_SAMPLES)
    folder = os.path.join(MMPOSE_SAMPLES, "coco")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    images = [os.path.join(folder, "000000000785.jpg"), str(broken), os.path.join(folder, "000000196141.jpg")]
    poses, out = tmp_path / "poses.jsonl", tmp_path / "out.avi"
    result = run_demo(hpe_checkpoint, demo_env, "--images", *images, "--save-json", str(poses), "--output", str(out),
                      "--backend", "torch")
    assert result.returncode == 0, result.stderr
    assert str(broken) in result.stderr and "skipped" in result.stderr
    assert summary_frames(result.stdout) == 2
    count, shape = video_frames(out)
    assert count == 2 and shape[1] == 640  # the second image (640x429) resized to the first's size (640x425)
    records = read_lines(poses)
    assert [(r["frame"], r["image"]) for r in records] == [(0, images[0]), (2, images[2])]
    assert len(records[1]["people"]) >= 3


@pytest.mark.parametrize("source, message", [
    (["--video", "no/such/video.mp4"], "video no/such/video.mp4 does not exist"),
    (["--video", "97"], "camera 97 cannot be opened"),
])
def test_a_missing_file_or_absent_camera_fails_clearly(hpe_checkpoint, demo_env, source, message):
    result = run_demo(hpe_checkpoint, demo_env, *source)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_undecodable_file_fails_clearly(hpe_checkpoint, demo_env, tmp_path):
    require_shared(MMPOSE_VIDEO)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(open(MMPOSE_VIDEO, "rb").read()[:4000])  # its index (moov atom) is lost
    result = run_demo(hpe_checkpoint, demo_env, "--video", str(damaged))
    assert result.returncode == 2
    assert f"video {damaged} cannot be opened" in result.stderr and "Traceback" not in result.stderr


def test_a_stream_that_breaks_mid_way_keeps_everything_written(hpe_checkpoint, demo_env, tmp_path):
    require_shared(VTEST)
    truncated = tmp_path / "truncated.avi"
    data = open(VTEST, "rb").read()
    truncated.write_bytes(data[:len(data) // 40])  # the header still announces 795 frames
    out, poses = tmp_path / "out.avi", tmp_path / "poses.jsonl"
    result = run_demo(hpe_checkpoint, demo_env, "--video", str(truncated), "--track", "--output", str(out),
                      "--save-json", str(poses))
    assert result.returncode == 1
    processed = summary_frames(result.stdout)
    assert 0 < processed < 795
    assert f"broke off after frame {processed - 1}" in result.stderr
    assert video_frames(out)[0] == processed
    assert [r["frame"] for r in read_lines(poses)] == list(range(processed))


def test_an_interrupted_run_finalizes_its_outputs(hpe_checkpoint, demo_env, tmp_path):
    require_shared(VTEST)
    out, poses = tmp_path / "out.mp4", tmp_path / "poses.jsonl"
    process = subprocess.Popen(demo_command(hpe_checkpoint, "--video", VTEST, "--track", "--smooth", "--output",
                                            str(out), "--save-json", str(poses)),
                               cwd=REPO_ROOT, env=demo_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if poses.exists() and len(poses.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the demo ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    processed = summary_frames(stdout)
    assert 5 <= processed < 795
    assert video_frames(out)[0] == processed
    assert [r["frame"] for r in read_lines(poses)] == list(range(processed))


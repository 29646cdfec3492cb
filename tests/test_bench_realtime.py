"""The real-time benchmarks run end to end through scripts/benchmark.py and report what the README quotes:
decoding on real video maps and synthetic crowds (every copied person found), the network per backend, and the
demo's summary per backend. Tiny settings: these check the benchmarks work, not how fast anything is."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import HPE_XML, REPO_ROOT, SHARED_DATA, require_shared

MMPOSE_VIDEO = os.path.join(SHARED_DATA, "video", "mmpose_demo.mp4")
INT8_IR = HPE_XML  # Open Model Zoo's FP16-INT8 IR: what the checkpoint of the tests is imported from


def benchmark(tmp_path, *args):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--json-out", str(out), *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LWPOSE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


def test_decode_benchmark_times_real_maps_and_crowds_where_everyone_is_found(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_VIDEO)
    result, stdout = benchmark(tmp_path, "decode", "--checkpoint-path", hpe_checkpoint, "--video", MMPOSE_VIDEO,
                               "--frames", "2", "--crowds", "1", "5", "--repeats", "1", "--no-cold-compile",
                               "--backend", "torch")
    assert [row[0] for row in result["rows"]] == ["mmpose_demo.mp4 (2 frames)", "synthetic crowd of 1",
                                                  "synthetic crowd of 5"]
    assert [float(row[2]) for row in result["rows"][1:]] == [1.0, 5.0]
    assert all(float(row[3]) > 0 for row in result["rows"])
    assert "load average" in result["title"] and "| synthetic crowd of 5" in stdout
    assert result["details"]["maps_from"] == "torch cpu"


def test_decode_benchmark_makes_its_maps_on_the_device_asked(hpe_checkpoint, tmp_path):
    """--device reaches the engine that makes the maps: a GPU asked for where there is none is refused clearly
    (it used to be ignored, the maps made on the CPU)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: scripts/gpu_check.py covers it")
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "decode", "--checkpoint-path", hpe_checkpoint,
                             "--device", "cuda", "--backend", "torch", "--frames", "1", "--no-cold-compile"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: --backend torch --device cuda:") and "no CUDA GPU" in result.stderr


def test_network_and_demo_benchmarks_report_every_backend_asked(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_VIDEO)
    network, _ = benchmark(tmp_path, "network", "--checkpoint-path", hpe_checkpoint, "--sizes", "64x96",
                           "--repeats", "1", "--warmup", "0")
    assert [row[0] for row in network["rows"]][:2] == ["torch eager", "torch channels_last"]
    assert all("fps" in row[1] or "unavailable" in row[1] for row in network["rows"])
    differences = network["details"]["max_abs_diff_vs_torch"]
    assert all(diff < 1e-4 for label, diff in differences.items() if "INT8" not in label)
    demo, _ = benchmark(tmp_path, "demo", "--checkpoint-path", hpe_checkpoint, "--video", MMPOSE_VIDEO,
                        "--frames", "3", "--backends", "torch")
    assert demo["rows"][0][2:4] == ["torch", "3"] and float(demo["rows"][0][8]) > 0  # CPU ms per frame
    if importlib.util.find_spec("openvino") and os.path.exists(INT8_IR):
        # Open Model Zoo's INT8 IR is timed too, in the network table and end to end, without being asked
        assert [row[0] for row in network["rows"]][-2:] == ["openvino INT8 IR latency",
                                                            "openvino INT8 IR throughput (2 in flight)"]
        assert all(diff < 0.5 for label, diff in differences.items() if "INT8" in label)  # quantisation error
        assert [row[2:4] for row in demo["rows"]] == [["torch", "3"], ["openvino INT8 IR", "3"]]
    else:
        assert len(demo["rows"]) == 1


def test_irs_to_time_are_labelled_as_given_or_by_their_folder_and_name():
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    from bench_realtime import ir_list

    omz = os.path.join("shared", "weights", "human-pose-estimation-0001", "FP16-INT8", "human-pose-estimation-0001.xml")
    assert ir_list([omz, "ours=out/model_int8.xml", os.path.join("out", "model_int8.xml"), ""]) == [
        ("INT8", omz), ("ours", "out/model_int8.xml"), ("model_int8", os.path.join("out", "model_int8.xml"))]
    assert ir_list([""]) == [] and ir_list(None) == []

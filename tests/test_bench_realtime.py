"""The real-time benchmarks run end to end through scripts/benchmark.py and report what the README quotes:
decoding on real video maps and synthetic crowds (every copied person found), the network per backend, and the
demo's summary per backend. Tiny settings: these check the benchmarks work, not how fast anything is."""
import json
import os
import subprocess
import sys

from conftest import REPO_ROOT, SHARED_DATA, require_shared

MMPOSE_VIDEO = os.path.join(SHARED_DATA, "video", "mmpose_demo.mp4")


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


def test_network_and_demo_benchmarks_report_every_backend_asked(hpe_checkpoint, tmp_path):
    require_shared(MMPOSE_VIDEO)
    network, _ = benchmark(tmp_path, "network", "--checkpoint-path", hpe_checkpoint, "--sizes", "64x96",
                           "--repeats", "1", "--warmup", "0")
    assert [row[0] for row in network["rows"]][:2] == ["torch eager", "torch channels_last"]
    assert all("fps" in row[1] or "unavailable" in row[1] for row in network["rows"])
    assert all(diff < 1e-4 for diff in network["details"]["max_abs_diff_vs_torch"].values())
    demo, _ = benchmark(tmp_path, "demo", "--checkpoint-path", hpe_checkpoint, "--video", MMPOSE_VIDEO,
                        "--frames", "3", "--backends", "torch")
    assert len(demo["rows"]) == 1 and demo["rows"][0][2:4] == ["torch", "3"]

"""scripts/gpu_check.py on a machine without a GPU: it says so, runs its training, torchrun and data checks at a
tiny size on the CPU (the machinery a GPU run relies on), writes its JSON, prints its table and exits 0."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import COCO_MINI_LABELS, REPO_ROOT, SHARED, SHARED_DATA, require_shared


@pytest.mark.slow
def test_gpu_check_without_a_gpu_says_so_and_passes_its_cpu_checks(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run scripts/gpu_check.py itself")
    require_shared(COCO_MINI_LABELS, os.path.join(SHARED_DATA, "video", "vtest.avi"))
    report_path = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "scripts/gpu_check.py", "--shared", SHARED, "--work-dir",
                             str(tmp_path / "work"), "--json-out", str(report_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert result.stdout.startswith("no CUDA GPU found")
    report = json.loads(report_path.read_text())
    assert report["gpu_found"] is False and report["passed"] is True
    names = [check["name"] for check in report["checks"]]
    assert names == ["environment", "train --amp fp16", "train --amp bf16", "training speed", "data pipeline",
                     "torchrun x2 + resume on fewer devices"]
    torchrun = report["checks"][-1]
    assert "over 2 processes: 2 + 2" in torchrun["summary"] and "resumed on 1 process" in torchrun["summary"]
    assert "| train --amp fp16" in result.stdout and "no GPU: CPU-side checks passed" in result.stdout

"""lwpose as an installed package: the wheel holds one top-level package, `lwpose`, with the network and the
training data code inside it and the keypoint sets as package data; installed elsewhere it runs the API, leaves the
name `datasets` to whoever owns it, and runs an ONNX export without importing torch."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import MMPOSE_SAMPLES, REPO_ROOT, require_shared


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel `pip wheel .` builds, installed into a folder of its own (dependencies come from this venv)."""
    folder = tmp_path_factory.mktemp("package")
    source, wheels, site = folder / "source", folder / "wheels", folder / "site"
    # the tracked files only, as a fresh clone has them (a build leaves a build/ folder where it runs)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if os.path.exists(os.path.join(REPO_ROOT, name)):
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(REPO_ROOT, name), source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("lwpose-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return wheel, site


def run_python(code: str, site, cwd) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


def test_the_wheel_holds_one_top_level_package_with_its_data(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"lwpose"}
    assert "lwpose/modules/pose_network.py" in names and "lwpose/datasets/coco_reader.py" in names
    assert {"lwpose/keypoints/sets/coco.json", "lwpose/keypoints/sets/lwop18.json"} <= set(names)
    assert any(name.startswith("lwpose/datasets/recipes/") for name in names)


def test_installed_elsewhere_it_finds_people_and_leaves_datasets_alone(installed, hpe_checkpoint, tmp_path):
    _, site = installed
    images = os.path.join(MMPOSE_SAMPLES, "coco")
    require_shared(images)
    code = f"""
import json, os, sys, cv2
import lwpose
assert lwpose.__file__.startswith({str(site)!r}), lwpose.__file__
estimator = lwpose.PoseEstimator.from_checkpoint({hpe_checkpoint!r})
found = {{}}
for name in sorted(os.listdir({images!r})):
    if name.endswith(".jpg"):
        found[name] = estimator(cv2.imread(os.path.join({images!r}, name))).to_dicts()
try:
    import datasets
    datasets_origin = getattr(datasets, "__file__", None) or "namespace"
except ImportError:
    datasets_origin = None
print(json.dumps({{"found": found, "datasets": datasets_origin, "sets": lwpose.load_keypoint_set("coco").name}}))
"""
    result = run_python(code, site, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["datasets"] is None or "site-packages" in report["datasets"]  # HuggingFace's, or nothing
    assert report["sets"] == "coco"
    people = [person for image in report["found"].values() for person in image]
    assert len(report["found"]) == 4 and len(people) >= 8
    assert all(set(person) == {"score", "keypoints"} and person["keypoints"] for person in people)
    assert all(len(xys) == 3 for person in people for xys in person["keypoints"].values())


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_an_export_runs_without_torch_or_the_training_side(backend, installed, hpe_checkpoint, tmp_path):
    pytest.importorskip(backend)
    from lwpose.interop.onnx_export import onnx_for_checkpoint

    _, site = installed
    onnx_path = onnx_for_checkpoint(hpe_checkpoint, str(tmp_path / "exports"))
    image = os.path.join(MMPOSE_SAMPLES, "coco", "000000196141.jpg")
    code = f"""
import sys, cv2
import lwpose
estimator = lwpose.PoseEstimator.from_checkpoint({onnx_path!r}, backend={backend!r})
people = estimator(cv2.imread({image!r}))
frames = list(lwpose.track([{image!r}, {image!r}], estimator, smooth=True))
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "lwpose.training", "lwpose.datasets",
                                                                        "lwpose.modules", "lwpose.interop.checkpoint")))
print(len(people), len(frames), loaded)
"""
    result = run_python(code, site, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    count, frames, loaded = result.stdout.strip().splitlines()[-1].split(" ", 2)
    assert int(count) >= 1 and int(frames) == 2
    assert loaded == "[]"

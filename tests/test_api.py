"""The Python API: three lines from a checkpoint to people as dicts, tracked video frames, one error base class,
and an import that costs nothing until it is used."""
import ast
import glob
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

import cv2
import numpy as np

import lwpose
from conftest import MMPOSE_SAMPLES, REPO_ROOT, SHARED_DATA, require_shared

VIDEO = os.path.join(SHARED_DATA, "video", "vtest.avi")


def test_three_lines_give_people_with_named_keypoints_inside_the_image(hpe_checkpoint):
    image_path = os.path.join(MMPOSE_SAMPLES, "coco", "000000196141.jpg")
    require_shared(image_path)
    estimator = lwpose.PoseEstimator.from_checkpoint(hpe_checkpoint, backend="torch")
    image = cv2.imread(image_path)
    people = estimator(image)
    assert estimator.decode_at == "map" and estimator.height_size == 256  # the demo's fast path by default
    dicts = people.to_dicts()
    assert len(dicts) == len(people) >= 2
    names = set(estimator.keypoint_set.keypoints)
    for person in dicts:
        assert person["score"] > 0 and set(person["keypoints"]) <= names
        for x, y, score in person["keypoints"].values():
            assert 0 <= x < image.shape[1] and 0 <= y < image.shape[0] and 0 < score <= 1.5
    rounded = people.to_dicts(ids=np.arange(len(people)), decimals=1)
    assert [p["id"] for p in rounded] == list(range(len(people)))


def test_track_follows_people_through_a_video_with_ids_and_smoothing(hpe_checkpoint):
    require_shared(VIDEO)
    estimator = lwpose.PoseEstimator.from_checkpoint(hpe_checkpoint, backend="torch")
    with lwpose.track(VIDEO, estimator, smooth=True, max_frames=12) as stream:
        frames = list(stream)
    assert [f.index for f in frames] == list(range(12))
    assert all(f.ids is not None and len(f.ids) == len(f.people) for f in frames)
    first, last = set(frames[0].ids.tolist()), set(frames[-1].ids.tolist())
    assert first & last  # the same people keep their ids from the first frame to the last
    untracked = list(lwpose.track(VIDEO, estimator, ids=False, max_frames=2))
    assert all(f.ids is None for f in untracked)


def _package_modules():
    for info in pkgutil.walk_packages(lwpose.__path__, "lwpose."):
        yield importlib.import_module(info.name)
    for name in ("lwpose.modules", "lwpose.datasets"):
        package = importlib.import_module(name)
        for info in pkgutil.iter_modules(package.__path__, name + "."):
            yield importlib.import_module(info.name)


def test_every_exception_lwpose_raises_derives_from_one_base():
    classes = {cls for module in _package_modules() for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, BaseException) and cls.__module__.startswith("lwpose")}
    assert len(classes) >= 15
    assert [cls.__qualname__ for cls in classes if not issubclass(cls, lwpose.LwposeError)] == []
    # the command-line tools' own errors too
    for path in glob.glob(os.path.join(REPO_ROOT, "scripts", "*.py")) + glob.glob(os.path.join(REPO_ROOT, "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", "").endswith(("Error", "Exception")) for base in node.bases):
                assert "LwposeError" in [getattr(b, "id", None) for b in node.bases], (path, node.name)


def test_importing_lwpose_loads_neither_torch_nor_numba_until_used():
    code = ("import sys, lwpose; lwpose.load_keypoint_set('coco'); "
            "print(sorted(m for m in ('torch', 'numba', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

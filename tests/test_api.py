"""The Python API: three lines from a checkpoint to people as dicts, tracked video frames, one error base class,
and an import that costs nothing until it is used."""
import ast
import glob
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

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


# A command written out for the user to run (another tool's flags), not a flag of the caller's own entry point.
OTHER_TOOL_COMMAND = re.compile(r"(scripts/\w+\.py|torchrun|pip install)[^\"]*$")


def test_library_messages_name_no_command_line_flag():
    """Library code names files and entries; which flag to change is the entry point's to say (flag_hint)."""
    found = []
    for folder in ("lwpose", "datasets", "modules"):
        for path in glob.glob(os.path.join(REPO_ROOT, folder, "**", "*.py"), recursive=True):
            tree = ast.parse(open(path).read())
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)}
            texts, in_fstrings = [], set()
            for node in ast.walk(tree):  # breadth first: an f-string comes before its pieces
                if isinstance(node, ast.JoinedStr):  # its pieces read as one text
                    in_fstrings.update(id(part) for part in node.values)
                    texts.append((node.lineno, "".join(part.value if isinstance(part, ast.Constant) else "{}"
                                                       for part in node.values)))
                elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings | in_fstrings):
                    texts.append((node.lineno, node.value))
            for line, text in texts:
                for flag in re.finditer(r"(?<![\w-])--[a-z][a-z-]+", text):
                    if not OTHER_TOOL_COMMAND.search(text[:flag.start()]):
                        found.append(f"{os.path.relpath(path, REPO_ROOT)}:{line}: {text.strip()}")
    assert found == []


def test_an_entry_point_turns_the_settings_an_error_names_into_its_flags(tmp_path):
    from lwpose.datasets.loader import InfiniteBatchSampler
    from lwpose.errors import SettingError, flag_hint

    with pytest.raises(SettingError) as caught:
        InfiniteBatchSampler(num_samples=5, batch_size=8)
    assert caught.value.settings == ("batch_size",) and "--" not in str(caught.value)
    assert flag_hint(caught.value) == " (see --batch-size)"
    require_shared(MMPOSE_SAMPLES)
    prepared = tmp_path / "prepared.json"
    subprocess.run([sys.executable, "scripts/prepare_train_labels.py", "--labels",
                    os.path.join(MMPOSE_SAMPLES, "coco", "test_coco.json"), "--images-folder",
                    os.path.join(MMPOSE_SAMPLES, "coco"), "--output-name", str(prepared)],
                   cwd=REPO_ROOT, check=True, capture_output=True)
    result = subprocess.run([sys.executable, "train.py", "--prepared-train-labels", str(prepared), "--batch-size",
                             "500", "--device", "cpu", "--num-workers", "0", "--experiments-folder", str(tmp_path),
                             "--no-progress"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "lower the batch size (see --batch-size)" in result.stderr, result.stderr[-2000:]


def test_importing_lwpose_loads_neither_torch_nor_numba_until_used():
    code = ("import sys, lwpose; lwpose.load_keypoint_set('coco'); "
            "print(sorted(m for m in ('torch', 'numba', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

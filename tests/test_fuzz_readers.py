"""Malformed annotation files fed to every reader: prepare_train_labels.py (COCO reading, conversion, ignore regions),
the MPII reader, the mix-recipe loader and val.py's ground-truth loading with pycocotools scoring.

Each input is a small valid file bent by hypothesis (a value replaced by NaN, inf, a negative number, a visibility of
3, a string, an RLE of the wrong size, a polygon of two points, an unknown id; an entry deleted, repeated or cut
short), or a broken file (empty, not JSON, JSON cut mid-way, a bare list or number). Every one must end in a clean
result or one error of our own classes that names the file; anything else (a traceback from numpy, numba or
pycocotools) or a hang fails. The distinct inputs tried are counted and printed (`pytest -s`).
"""
import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import math
import os
import resource
import signal

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT
from lwpose.datasets.coco_reader import AnnotationError
from lwpose.datasets.mix_recipe import RecipeError, load_mix_recipe, prepare_mixed_labels
from lwpose.datasets.mpii_reader import read_mpii_keypoints
from lwpose.datasets.prepared_labels import build_prepared_labels
from lwpose.evaluation.coco import GroundTruthError, evaluate_keypoints, load_keypoint_ground_truth
from lwpose.keypoints import KeypointSetError, load_keypoint_set

HANG_SECONDS = 30  # one small file taking this long is a hang, not slowness
MEMORY_HEADROOM = 2 << 30
IMAGE_HEIGHT, IMAGE_WIDTH = 48, 64
TRIED: dict[str, set] = {}

_spec = importlib.util.spec_from_file_location("prepare_train_labels",
                                               os.path.join(REPO_ROOT, "scripts", "prepare_train_labels.py"))
prepare_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_script)


# ------------------------------------------------------------------- valid starting points
def person_keypoints(keypoint_set, rng, labelled: int) -> list[float]:
    values = []
    for j in range(keypoint_set.num_keypoints):
        if j < labelled:
            values += [float(rng.integers(2, IMAGE_WIDTH - 2)), float(rng.integers(2, IMAGE_HEIGHT - 2)),
                       float(rng.choice([1, 2]))]
        else:
            values += [0.0, 0.0, 0.0]
    return values


def valid_coco() -> dict:
    """Two images; a person with keypoints and a polygon, a crowd (uncompressed RLE), a person without keypoints
    (compressed RLE), a person with no segmentation at all."""
    from pycocotools import mask as mask_utils

    coco = load_keypoint_set("coco")
    rng = np.random.default_rng(0)
    crowd = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    crowd[5:20, 30:60] = 1
    runs = mask_utils.encode(np.asfortranarray(crowd))
    counts, values = [], crowd.ravel(order="F")
    current, length = 0, 0
    for v in values:  # uncompressed RLE, as COCO writes for crowds
        if v != current:
            counts.append(length)
            current, length = v, 0
        length += 1
    counts.append(length)
    image = {"width": IMAGE_WIDTH, "height": IMAGE_HEIGHT}
    return {
        "images": [{"id": 1, "file_name": "a.jpg", **image}, {"id": 2, "file_name": "b.jpg", **image}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(coco.keypoints), "skeleton": []}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 9, "area": 900.0,
             "bbox": [2.0, 2.0, 40.0, 40.0], "keypoints": person_keypoints(coco, rng, 9),
             "segmentation": [[2, 2, 40, 2, 40, 40, 2, 40]]},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 1, "num_keypoints": 0, "area": 450.0,
             "bbox": [30.0, 5.0, 30.0, 15.0], "keypoints": [0] * (3 * coco.num_keypoints),
             "segmentation": {"size": [IMAGE_HEIGHT, IMAGE_WIDTH], "counts": counts}},
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 0, "num_keypoints": 0, "area": 100.0,
             "bbox": [1.0, 1.0, 10.0, 10.0], "keypoints": [0] * (3 * coco.num_keypoints),
             "segmentation": {"size": [IMAGE_HEIGHT, IMAGE_WIDTH], "counts": runs["counts"].decode("ascii")}},
            {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0, "num_keypoints": 12, "area": 1200.0,
             "bbox": [4.0, 3.0, 50.0, 40.0], "keypoints": person_keypoints(coco, rng, 12)},
        ],
    }


def valid_mpii() -> list:
    mpii = load_keypoint_set("mpii")
    rng = np.random.default_rng(1)
    entries = []
    for name in ("a.jpg", "b.jpg", "a.jpg"):
        joints = [[float(rng.integers(1, IMAGE_WIDTH)), float(rng.integers(1, IMAGE_HEIGHT))]
                  for _ in range(mpii.num_keypoints)]
        visible = [int(v) for v in rng.integers(0, 2, mpii.num_keypoints)]
        entries.append({"image": name, "joints": joints, "joints_vis": visible, "center": [30.0, 24.0],
                        "scale": 0.2})
    return entries


class FuzzFiles(dict):
    def __repr__(self) -> str:  # keeps hypothesis' failure reports to the input that failed
        return f"FuzzFiles({self['folder']})"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An images folder (two real images, a corrupt one), the valid starting files and a recipe over them."""
    folder = tmp_path_factory.mktemp("fuzz")
    images = folder / "images"
    images.mkdir()
    picture = np.random.default_rng(2).integers(0, 255, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.uint8)
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(images / name), picture)
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "empty.jpg").write_bytes(b"")
    (folder / "coco.json").write_text(json.dumps(valid_coco()))
    (folder / "mpii.json").write_text(json.dumps(valid_mpii()))
    recipe = {"name": "fuzz", "target": {"mode": "combine", "keypoints": os.path.join(
                  REPO_ROOT, "datasets", "recipes", "lwop18_head_top.json")},
              "sources": [{"name": "coco", "format": "coco", "keypoints": "coco", "labels": "coco.json",
                           "images_folder": "images", "source_ratio": 0.5},
                          {"name": "mpii", "format": "mpii", "keypoints": "mpii", "labels": "mpii.json",
                           "images_folder": "images", "source_ratio": 0.5, "keypoint_map": [["thorax", "neck"]]}],
              "selection": {"min_keypoints": 1, "min_area": 1, "min_center_distance": 0.3}}
    return FuzzFiles(folder=folder, images=str(images), coco=valid_coco(), mpii=valid_mpii(), recipe=recipe)


# ------------------------------------------------------------------- mutations
NASTY_NUMBERS = [math.nan, math.inf, -math.inf, -1, -0.5, 0, 1.5, 3, -3, 1e308, -1e308, 2 ** 63, -(2 ** 31), True]
NASTY_STRINGS = ["", "x", "a.jpg", "../a.jpg", "../../etc/passwd", "/etc/passwd", "corrupt.jpg", "empty.jpg",
                 "coco", "mpii", "lwop18", "no_such_set", "merge", "combine", "images", "coco.json", "mpii.json",
                 "\u00e9\u0000", "nose", "neck", "thorax"]
numbers = st.one_of(st.sampled_from(NASTY_NUMBERS), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10 ** 20, 10 ** 20))
rle_like = st.fixed_dictionaries({
    "size": st.one_of(st.just([IMAGE_HEIGHT, IMAGE_WIDTH]), st.lists(st.integers(-2, 100), max_size=3)),
    "counts": st.one_of(st.lists(st.integers(-5, IMAGE_HEIGHT * IMAGE_WIDTH), max_size=8),
                        st.text(alphabet="0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh",
                                max_size=12), numbers)})
polygons = st.lists(st.lists(numbers, max_size=10), max_size=3)
nasty_values = st.one_of(
    numbers, st.sampled_from(NASTY_STRINGS), st.none(), st.just([]), st.just({}), rle_like, polygons,
    st.lists(numbers, min_size=0, max_size=60), st.text(max_size=6), st.lists(st.sampled_from(NASTY_STRINGS),
                                                                              max_size=4))


def leaf_and_branch_paths(doc, prefix=()):
    """Every path into `doc` (tuples of keys and indices), the root's children included."""
    paths = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        paths.append(prefix + (key,))
        paths.extend(leaf_and_branch_paths(value, prefix + (key,)))
    return paths


def parent_of(doc, path):
    for key in path[:-1]:
        doc = doc[key]
    return doc


def mutate(data, doc):
    """Apply 1-3 random edits to `doc` (a deep copy is changed in place)."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        paths = leaf_and_branch_paths(doc)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent, key = parent_of(doc, path), path[-1]
        operation = data.draw(st.sampled_from(["replace", "replace", "number", "delete", "repeat", "cut"]),
                              label="operation")
        if operation == "replace":
            # a copy: st.just([]) hands out one shared list, which later edits must not grow across inputs
            parent[key] = copy.deepcopy(data.draw(nasty_values, label="value"))
        elif operation == "number":
            numeric = [p for p in paths if isinstance(parent_of(doc, p)[p[-1]], (int, float))]
            if numeric:
                p = data.draw(st.sampled_from(numeric), label="number path")
                parent_of(doc, p)[p[-1]] = data.draw(numbers, label="number")
        elif operation == "delete":
            del parent[key]
        elif operation == "repeat" and isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(parent[key])))
        elif operation == "cut" and isinstance(parent[key], list):
            parent[key] = parent[key][:data.draw(st.integers(0, max(0, len(parent[key]) - 1)), label="cut")]
    return doc


def malformed_file(data, valid) -> bytes:
    """The bytes of one malformed input derived from `valid`."""
    kind = data.draw(st.sampled_from(["edit"] * 8 + ["raw", "truncated"]), label="kind")
    if kind == "raw":
        return data.draw(st.one_of(st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b"42", b'"text"', b"\xff\xfe\x00",
                                                    b"{'single': 'quotes'}", b"NaN"]), st.binary(max_size=40)),
                         label="raw")
    text = json.dumps(mutate(data, json.loads(json.dumps(valid))))
    if kind == "truncated":
        return text[:data.draw(st.integers(0, len(text) - 1), label="cut at")].encode()
    return text.encode()


def write_input(folder, reader: str, content: bytes) -> str:
    digest = hashlib.sha1(content).hexdigest()
    TRIED.setdefault(reader, set()).add(digest)
    path = os.path.join(folder, f"{reader}_{digest[:16]}.json")
    with open(path, "wb") as f:
        f.write(content)
    return path


@contextlib.contextmanager
def hang_guard(path):
    """Fails on a hang (SIGALRM) and on a runaway allocation (address space capped at what is in use plus
    MEMORY_HEADROOM: a small file must never take gigabytes, on a machine shared with other work)."""
    def hang(signum, frame):
        raise TimeoutError(f"reading {path} took over {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hang)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + MEMORY_HEADROOM, limits[1]))
    signal.alarm(HANG_SECONDS)
    try:
        yield
    except MemoryError:
        pytest.fail(f"reading {path} tried to take more than {MEMORY_HEADROOM >> 30} GiB")
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, limits)
        signal.signal(signal.SIGALRM, previous)


def assert_clear_error(error: Exception, path: str) -> None:
    message = str(error)
    assert path in message, f"the error does not name the file: {message}"
    assert "Traceback" not in message


FUZZ = settings(max_examples=850, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------- the readers
@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_prepare_train_labels_survives_malformed_coco_files(files, data):
    path = write_input(files["folder"], "prepare", malformed_file(data, files["coco"]))
    output = path + ".prepared"
    stdout, stderr = io.StringIO(), io.StringIO()
    with hang_guard(path), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = prepare_script.main(["--labels", path, "--images-folder", files["images"], "--keypoints", "lwop18",
                                    "--output-name", output, "--min-keypoints", "1", "--min-area", "1"])
    if code == 0:
        assert os.path.isfile(output)
        os.unlink(output)
    else:
        lines = stderr.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr.getvalue()
        assert path in lines[0], lines[0]
        assert not os.path.exists(output)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_val_ground_truth_loading_and_scoring_survive_malformed_files(files, data):
    path = write_input(files["folder"], "val", malformed_file(data, files["coco"]))
    with hang_guard(path):
        try:
            gt = load_keypoint_ground_truth(path)
        except (GroundTruthError, KeypointSetError) as e:
            assert_clear_error(e, path)
            return
        # Score the ground truth's own people as detections: pycocotools must take whatever was accepted.
        results = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"],
                    "score": 1.0} for a in gt.data["annotations"] if not a.get("iscrowd")]
        metrics = evaluate_keypoints(gt, results, image_ids=[im["id"] for im in gt.images])
    assert all(0.0 <= metrics[name] <= 1.0 for name in ("AP", "AR"))


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_mpii_reader_survives_malformed_files(files, data):
    path = write_input(files["folder"], "mpii", malformed_file(data, files["mpii"]))
    mpii = load_keypoint_set("mpii")
    with hang_guard(path):
        try:
            coco, missing = read_mpii_keypoints(path, mpii, files["images"])
            build_prepared_labels(coco, load_keypoint_set("lwop18"))
        except AnnotationError as e:
            assert_clear_error(e, path)
            return
    assert all(image.width > 0 and image.height > 0 for image in coco.images)


@pytest.mark.slow
@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_mix_recipes_survive_malformed_files(files, data):
    path = write_input(files["folder"], "recipe", malformed_file(data, files["recipe"]))
    with hang_guard(path):
        try:
            recipe = load_mix_recipe(path)
            labels = prepare_mixed_labels(recipe, report=lambda line: None)
        except RecipeError as e:
            assert_clear_error(e, path)
            return
    assert len(labels) > 0


def test_zz_fuzz_figures(record_property):
    """Runs after the readers' fuzz tests (file order): the distinct inputs they tried."""
    if not TRIED:
        pytest.skip("the fuzz tests did not run in this session")
    total = sum(len(v) for v in TRIED.values())
    per_reader = ", ".join(f"{k} {len(v)}" for k, v in sorted(TRIED.items()))
    print(f"\nfuzz: {total} distinct malformed inputs tried ({per_reader})")
    record_property("fuzz_distinct_inputs", total)
    if len(TRIED) == 4:
        assert total >= 2000

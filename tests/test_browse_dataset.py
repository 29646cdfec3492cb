"""The dataset browser (scripts/browse_dataset.py) on real COCO images: every tile's keypoints are drawn where the
labels put them, in the colour of their side, and a mirrored tile shows the person's anatomical left still drawn as
left (the flip swapped left and right), which the test reads back from the PNG's pixels."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, REPO_ROOT, require_shared
from lwpose.datasets.prepared_labels import load_prepared_labels
from lwpose.inference.drawing import SIDE_COLOURS

OPPOSITE = {"left": "right", "right": "left"}


def run_script(name, *args):
    return subprocess.run([sys.executable, os.path.join("scripts", name), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def browsed(tmp_path_factory):
    require_shared(COCO_MINI_LABELS, COCO_MINI_IMAGES)
    out = tmp_path_factory.mktemp("browse")
    labels = out / "prepared.json"
    result = run_script("prepare_train_labels.py", "--labels", COCO_MINI_LABELS, "--images-folder", COCO_MINI_IMAGES,
                        "--output-name", labels)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_script("browse_dataset.py", "--prepared-train-labels", labels, "--output-dir", out / "grids",
                        "--samples", 8, "--random", "--draws", 2, "--rows-per-grid", 4, "--input-size", 256,
                        "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    return load_prepared_labels(str(labels)), out / "grids"


def drawn_side(pixel) -> str | None:
    for side in ("left", "right"):
        if np.abs(pixel.astype(int) - np.array(SIDE_COLOURS[side])).max() <= 30:
            return side
    return None


def side_tally(labels, grid_png, grid_json, kind):
    """For the tiles of `kind`: how many labelled left/right keypoints show, at the pixel their label maps to, the
    colour expected (their own side; the other side in a mirrored tile) and how many the opposite one."""
    image = cv2.imread(str(grid_png))
    tiles = [t for t in json.loads(grid_json.read_text())["tiles"] if t["kind"] == kind]
    sides = labels.keypoint_set.sides
    expected = opposite = 0
    for tile in tiles:
        info = labels.images[labels.samples[tile["sample"]][0]]
        matrix = np.array(tile["matrix"])
        for person in info.keypoints:
            for k, (x, y, v) in enumerate(person):
                if v <= 0 or sides[k] == "center":
                    continue
                tx, ty = np.round(matrix @ [x, y, 1.0]).astype(int)
                if not (3 <= tx < tile["width"] - 3 and 3 <= ty < tile["height"] - 3):
                    continue
                want = OPPOSITE[sides[k]] if kind == "mirrored" else sides[k]
                seen = drawn_side(image[tile["y"] + ty, tile["x"] + tx])
                expected += seen == want
                opposite += seen == OPPOSITE[want]
    return expected, opposite


@pytest.mark.parametrize("kind", ["original", "augmented", "mirrored"])
def test_keypoints_are_drawn_in_their_sides_colour_and_flips_swap_left_and_right(browsed, kind):
    labels, grids = browsed
    pngs = sorted(grids.glob("grid_*.png"))
    assert len(pngs) == 2
    expected = opposite = 0
    for png in pngs:
        e, o = side_tally(labels, png, png.with_suffix(".json"), kind)
        expected, opposite = expected + e, opposite + o
    # Discs of one person can cover another's; nearly all must still read as the expected side.
    assert expected >= 40, (expected, opposite)
    assert opposite <= 0.1 * expected, (expected, opposite)


def test_grid_shows_every_tile_kind_for_every_sample(browsed):
    _, grids = browsed
    records = [t for png in sorted(grids.glob("grid_*.png")) for t in json.loads(png.with_suffix(".json").read_text())[
        "tiles"]]
    per_sample = {}
    for record in records:
        per_sample.setdefault(record["sample"], []).append(record["kind"])
    assert len(per_sample) == 8
    for kinds in per_sample.values():
        assert sorted(kinds) == sorted(["original", "augmented", "mirrored", "augmented", "mirrored", "heatmaps",
                                        "pafs"])
    image = cv2.imread(str(sorted(grids.glob("grid_*.png"))[0]))
    heatmaps = next(t for t in records if t["kind"] == "heatmaps")
    tile = image[heatmaps["y"]:heatmaps["y"] + heatmaps["height"], heatmaps["x"]:heatmaps["x"] + heatmaps["width"]]
    assert tile.std() > 10  # an overlay was drawn, not an empty tile


def test_unknown_labels_file_fails_naming_it(tmp_path):
    result = run_script("browse_dataset.py", "--prepared-train-labels", tmp_path / "missing.json",
                        "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "missing.json" in result.stderr

"""The map codec: ground-truth people encoded as stride-8 maps and decoded by the estimator's map path come back
as the same people, so encoding and decoding agree on where a cell lies."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from lwpose import codec
from lwpose.evaluation.coco import (COCO_COORDINATE_OFFSET, evaluate_keypoints, keypoint_ground_truth,
                                    people_to_coco_results)
from lwpose.images import read_image
from lwpose.inference.estimator import PoseEstimator, prepare_input
from lwpose.keypoints import load_keypoint_set

# The quickstart's scenes and input height (128 px images enlarged 1.5x): its people at the size the network sees.
SCENES = ["--image-size", "128", "--people", "1", "2", "--person-height", "0.6", "0.9", "--small-people", "0", "0",
          "--crowd-probability", "0", "--partial-probability", "0", "--back-view-probability", "0"]
QUICKSTART_HEIGHT = 192
# The validation height: people 220-330 input pixels tall, every limb several cells long.
VAL_HEIGHT = 368


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("codec")
    subprocess.run([sys.executable, "scripts/synthetic_data.py", "--output-dir", str(out), "--train-images", "0",
                    "--val-images", "60", "--mix-images", "0", "--video-frames", "0", "--no-progress", *SCENES],
                   cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    return os.path.join(out, "val")


def round_trip(scenes, height: int):
    """Per image: its ground truth, and the people decoded from the maps its ground truth encodes to."""
    coco = load_keypoint_set("coco")
    with open(os.path.join(scenes, "person_keypoints.json")) as f:
        data = json.load(f)
    decoder = PoseEstimator(backend=None, keypoint_set=coco, height_size=height, decode_at="map")
    for image in data["images"]:
        people = [a for a in data["annotations"]
                  if a["image_id"] == image["id"] and not a["iscrowd"] and a["num_keypoints"] > 0]
        _, transform = prepare_input(read_image(os.path.join(scenes, "images", image["file_name"])), height)
        truth = np.array([a["keypoints"] for a in people], np.float64).reshape(-1, coco.num_keypoints, 3)
        x, y = transform.image_to_input(truth[..., 0] - COCO_COORDINATE_OFFSET, truth[..., 1] - COCO_COORDINATE_OFFSET)
        map_size = (transform.padded_size[0] // 8, transform.padded_size[1] // 8)
        heatmaps, pafs = codec.encode(np.stack([x, y, truth[..., 2]], axis=-1), coco, map_size)
        yield data, image, people, decoder.decode_maps(heatmaps, pafs, transform)


def oks(truth: dict, found: np.ndarray, sigmas: np.ndarray) -> float:
    keypoints = np.asarray(truth["keypoints"], np.float64).reshape(-1, 3)
    labelled = keypoints[:, 2] > 0
    d2 = ((found[:, :2] + COCO_COORDINATE_OFFSET - keypoints[:, :2]) ** 2).sum(axis=1)
    similarity = np.exp(-d2 / (2 * truth["area"] * (2 * sigmas) ** 2))
    similarity[found[:, 2] <= 0] = 0
    return float(similarity[labelled].mean())


def apart(person: dict, others: list[dict], margin: float = 8) -> bool:
    """No other person's box comes within `margin` image pixels of this one's."""
    x, y, w, h = person["bbox"]
    return all(not (x < ox + ow + margin and ox < x + w + margin and y < oy + oh + margin and oy < y + h + margin)
               for ox, oy, ow, oh in (o["bbox"] for o in others if o is not person))


def test_people_apart_come_back_from_their_maps(scenes):
    """Apart, and large enough that no limb is shorter than a cell: what the codec itself keeps or loses."""
    sigmas = load_keypoint_set("coco").sigmas_array
    scores = [max((oks(person, found, sigmas) for found in decoded.keypoints), default=0.0)
              for _, _, people, decoded in round_trip(scenes, VAL_HEIGHT) for person in people
              if apart(person, people)]
    assert len(scores) >= 30
    assert min(scores) >= 0.9, sorted(scores)[:5]


def test_ground_truth_maps_decode_to_a_high_ap_on_the_quickstart_scenes(scenes):
    """Overlapping people share cells at stride 8, so not all of them survive; the split as a whole scores high."""
    coco = load_keypoint_set("coco")
    results, data = [], None
    for data, image, _, decoded in round_trip(scenes, QUICKSTART_HEIGHT):
        results += people_to_coco_results(decoded, image["id"], coco, coco)
    gt = keypoint_ground_truth(data, os.path.join(scenes, "person_keypoints.json"), coco)
    metrics = evaluate_keypoints(gt, results)
    print(f"ground-truth maps decoded: AP {metrics['AP']:.3f}")
    assert metrics["AP"] >= 0.85


def test_a_cell_and_its_input_pixels_convert_both_ways():
    cells = np.array([0.0, 1.0, 2.5, 31.0])
    pixels = codec.cell_to_input(cells)
    np.testing.assert_allclose(pixels, cells * 8 + 3.5)
    np.testing.assert_allclose(codec.input_to_cell(pixels), cells)
    matrix = codec.input_to_cell_matrix()
    np.testing.assert_allclose(matrix @ np.array([pixels[2], pixels[3], 1.0]), [cells[2], cells[3]])

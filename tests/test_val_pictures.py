"""Looking at a validation: pictures of predictions beside the ground truth (a missed person outlined in red, a
false positive crossed out in red), a contact sheet of the worst images by OKS, and per-keypoint tables."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, REPO_ROOT, require_shared
from lwpose.evaluation.coco import keypoint_ground_truth
from lwpose.evaluation.per_keypoint import body_part, format_per_keypoint, grouped
from lwpose.evaluation.visualize import match_image, write_visualisations
from lwpose.keypoints import load_keypoint_set

COCO = load_keypoint_set("coco")
SIZE = 200


def standing_person(x: float, y: float, height: float = 120.0) -> np.ndarray:
    """(K, 3) COCO keypoints of a stick figure whose head is at (x, y), all labelled (v=2)."""
    rows = {"nose": (0, 0), "left_eye": (3, -3), "right_eye": (-3, -3), "left_ear": (6, -1), "right_ear": (-6, -1),
            "left_shoulder": (12, 20), "right_shoulder": (-12, 20), "left_elbow": (16, 45), "right_elbow": (-16, 45),
            "left_wrist": (18, 68), "right_wrist": (-18, 68), "left_hip": (8, 65), "right_hip": (-8, 65),
            "left_knee": (9, 92), "right_knee": (-9, 92), "left_ankle": (10, 118), "right_ankle": (-10, 118)}
    scale = height / 120.0
    return np.array([[x + dx * scale, y + dy * scale, 2] for dx, dy in (rows[n] for n in COCO.keypoints)])


def annotation(keypoints: np.ndarray, image_id: int, annotation_id: int) -> dict:
    x0, y0 = keypoints[:, :2].min(axis=0)
    x1, y1 = keypoints[:, :2].max(axis=0)
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "keypoints": keypoints.ravel().tolist(), "num_keypoints": len(keypoints),
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0))}


def detection(keypoints: np.ndarray, image_id: int, shift: float = 0.0) -> dict:
    moved = keypoints.copy()
    moved[:, :2] += shift
    moved[:, 2] = 1
    return {"image_id": image_id, "category_id": 1, "keypoints": moved.ravel().tolist(), "score": 1.0}


def scenes(folder):
    """Three images: 'missed' (one person found, one missed, one false positive), 'fine' (found exactly) and
    'off' (found 6 pixels off)."""
    left, right, alone = standing_person(50, 40), standing_person(150, 40), standing_person(100, 40)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person",
                                                             "keypoints": list(COCO.keypoints)}]}
    detections = []
    for image_id, name in enumerate(("missed", "fine", "off"), start=1):
        cv2.imwrite(os.path.join(folder, f"{name}.png"), np.full((SIZE, SIZE, 3), 90, np.uint8))
        data["images"].append({"id": image_id, "file_name": f"{name}.png", "width": SIZE, "height": SIZE})
    data["annotations"] += [annotation(left, 1, 1), annotation(right, 1, 2), annotation(alone, 2, 3),
                            annotation(alone, 3, 4)]
    false_positive = standing_person(100, 10, height=40)
    detections += [detection(left, 1), detection(false_positive, 1), detection(alone, 2), detection(alone, 3, 6.0)]
    return keypoint_ground_truth(data, os.path.join(folder, "gt.json"), COCO), detections, right, false_positive


def test_a_miss_and_a_false_positive_are_drawn_and_the_sheet_puts_the_worst_first(tmp_path):
    gt, detections, missed_person, false_positive = scenes(str(tmp_path))
    match = match_image(gt, gt.images[0], [d for d in detections if d["image_id"] == 1])
    assert match.matched.tolist() == [0, -1] and match.oks[0] > 0.99 and match.false_positives.tolist() == [1]

    report = write_visualisations(gt, detections, str(tmp_path), str(tmp_path / "pictures"), progress=False)
    assert [name for name, _ in report.worst] == ["missed.png", "off.png", "fine.png"]
    scores = [score for _, score in report.worst]
    assert scores == sorted(scores) and scores[0] < 0.5 and scores[-1] > 0.99
    picture = cv2.imread(str(tmp_path / "pictures" / "missed.jpg"))
    assert picture is not None and picture.shape[0] == SIZE and picture.shape[1] > 2 * SIZE
    right_panel = picture[:, picture.shape[1] - SIZE:]

    def red_pixels(panel, box) -> int:
        """Pixels of `panel` in `box` (x0, y0, x1, y1) that are plainly red (JPEG moves colours a little)."""
        x0, y0, x1, y1 = (int(v) for v in box)
        region = panel[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1].astype(int)
        blue, green, red = region[..., 0], region[..., 1], region[..., 2]
        return int(((red > 140) & (green < 90) & (blue < 90)).sum())

    left_panel, right_panel = picture[:, :SIZE], picture[:, picture.shape[1] - SIZE:]
    # the missed person is outlined in red on the ground-truth side, and nothing red is drawn for it on the other
    x0, y0 = missed_person[:, :2].min(axis=0) - 0.5
    x1, y1 = missed_person[:, :2].max(axis=0) - 0.5
    outline = red_pixels(left_panel, (x0 - 2, y0 - 2, x0 + 2, y1 + 2))  # its left edge
    assert outline >= (y1 - y0) and red_pixels(right_panel, (x0 - 2, y0 - 2, x0 + 2, y1 + 2)) == 0
    # the false positive is crossed out in red on the predicted side
    box = (*(false_positive[:, :2].min(axis=0) - 0.5), *(false_positive[:, :2].max(axis=0) - 0.5))
    assert red_pixels(right_panel, box) >= 20 and red_pixels(left_panel, box) == 0
    # a sheet that opens, holding all three
    sheet = cv2.imread(report.sheet)
    assert sheet is not None and sheet.shape[0] > 0 and len(report.worst) == 3


def test_val_writes_pictures_of_coco_mini_train_that_open(hpe_checkpoint, tmp_path):
    require_shared(COCO_MINI_LABELS)
    result = subprocess.run([sys.executable, "val.py", "--labels", COCO_MINI_LABELS, "--images-folder",
                             COCO_MINI_IMAGES, "--checkpoint-path", hpe_checkpoint, "--decode-at", "map",
                             "--max-images", "6", "--vis-dir", str(tmp_path / "vis"), "--vis-worst", "4",
                             "--per-keypoint", "--output-name", str(tmp_path / "detections.json"), "--no-progress"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(os.listdir(tmp_path / "vis"))
    with open(COCO_MINI_LABELS) as f:
        first = [os.path.splitext(image["file_name"])[0] + ".jpg" for image in json.load(f)["images"][:6]]
    assert set(first) | {"worst_images.jpg"} == set(written)
    for name in written:
        assert cv2.imread(str(tmp_path / "vis" / name)) is not None, name
    assert "per keypoint: coco" in result.stdout and "left_wrist" in result.stdout
    assert "wrist" in result.stdout.split("metric")[-1]  # the body-part table


def test_keypoint_names_say_their_body_part():
    assert [body_part(n) for n in ("nose", "left_eye", "r_ear", "head_top", "left_shoulder", "r_elb",
                                    "right_wrist", "left_hip", "r_knee", "left_ankle", "neck", "thorax")] == \
        ["head", "head", "head", "head", "shoulder", None, "wrist", "hip", "knee", "ankle", None, None]
    mpii = load_keypoint_set("mpii")
    parts = {body_part(n) for n in mpii.keypoints}
    assert {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"} <= parts


def test_body_part_rates_weigh_keypoints_by_their_labelled_count():
    per_keypoint = {"left_wrist": {"PCK@0.1": 1.0, "PCK@0.1 count": 3},
                    "right_wrist": {"PCK@0.1": 0.0, "PCK@0.1 count": 1},
                    "neck": {"PCK@0.1": 0.5, "PCK@0.1 count": 4}}
    rows = grouped(per_keypoint)
    assert rows["PCK@0.1"]["wrist"] == 0.75
    assert rows["PCK@0.1"]["mean"] == (3 + 0 + 2) / 8  # the neck counts in the mean, in no part
    table = format_per_keypoint(per_keypoint, "per keypoint: x")
    assert "0.750" in table and "right_wrist" in table and "0.625" in table

"""Does each keypoint channel peak where the keypoint is? For every labelled keypoint of every instance in a COCO
keypoint file: the strongest response of the model's channel for it inside the instance's box (the heatmaps at
image size, as val.py sees them), counted as found when it exceeds --min-peak and lies within --radius of the box's
longer side of the keypoint. Grouping plays no part, so this shows what a grown model's new channels have learnt
before they assemble whole instances (val.py's PCK needs the instance assembled).

    python scripts/channel_peaks.py --checkpoint-path CHECKPOINT --labels LABELS.json --images-folder IMAGES \\
        [--category-class '*=animal'] [--output-json peaks.json]

Each category is scored as the class val.py scores it with (the class of its name, of its keypoint names, or
--category-class; a one-class model scores every category). Prints one row per channel and one total per class.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.datasets.class_labels import EVERY_OTHER_CATEGORY, parse_category_classes  # noqa: E402
from lwpose.errors import LwposeError, flag_hint  # noqa: E402
from lwpose.evaluation.classes import load_class_ground_truths  # noqa: E402
from lwpose.evaluation.validation import write_json  # noqa: E402
from lwpose.images import read_image  # noqa: E402
from lwpose.inference.estimator import PoseEstimator  # noqa: E402
from lwpose.inference.grouping import GroupingParams  # noqa: E402

# The grouping's own floor for a heatmap peak: a maximum not above it is no peak at all.
DEFAULT_MIN_PEAK = GroupingParams().peak_threshold
DEFAULT_RADIUS = 0.1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-path", required=True, help="lwpose checkpoint, ONNX export or OpenVINO IR")
    parser.add_argument("--labels", required=True, help="COCO-format keypoint ground truth (JSON)")
    parser.add_argument("--images-folder", required=True, help="folder the ground truth's file_names are in")
    parser.add_argument("--category-class", nargs="+", action="extend", default=[], metavar="CATEGORY=CLASS",
                        help="score a category as this class of the model ('*=animal': every other category)")
    parser.add_argument("--height-size", type=int, default=368, help="network input height (default 368)")
    parser.add_argument("--radius", type=float, default=DEFAULT_RADIUS,
                        help=f"found within this share of the box's longer side (default {DEFAULT_RADIUS:g})")
    parser.add_argument("--min-peak", type=float, default=DEFAULT_MIN_PEAK,
                        help=f"a channel's maximum not above this is no peak (default {DEFAULT_MIN_PEAK:g})")
    parser.add_argument("--output-json", default=None, help="write the counts per channel and class here")
    return parser.parse_args(argv)


def peak_found(heatmap: np.ndarray, box, point, radius: float, min_peak: float) -> tuple[bool, bool]:
    """(the channel has a peak inside the box, that peak lies within radius x the box's longer side of point)."""
    x, y, w, h = box
    height, width = heatmap.shape
    x0, y0 = min(max(int(np.floor(x)), 0), width - 1), min(max(int(np.floor(y)), 0), height - 1)
    x1, y1 = max(min(int(np.ceil(x + w)) + 1, width), x0 + 1), max(min(int(np.ceil(y + h)) + 1, height), y0 + 1)
    inside = heatmap[y0:y1, x0:x1]
    row, column = np.unravel_index(int(np.argmax(inside)), inside.shape)
    if not inside[row, column] > min_peak:  # as the grouping takes peaks: strictly above its threshold
        return False, False
    distance = np.hypot(column + x0 - point[0], row + y0 - point[1])
    return True, bool(distance <= radius * max(w, h))


def channel_peaks(estimator: PoseEstimator, labels: str, images_folder: str, category_classes: dict,
                  radius: float = DEFAULT_RADIUS, min_peak: float = DEFAULT_MIN_PEAK) -> dict:
    """{"channels": {channel name: {class, labelled, peaked, found}}, "classes": {class: totals}, "images": n}."""
    model_set = estimator.keypoint_set
    if len(model_set.classes) == 1 and not category_classes:
        category_classes = {EVERY_OTHER_CATEGORY: model_set.classes[0].name}  # a one-class model: every category
    truths, _ = load_class_ground_truths(labels, model_set, category_classes)
    counts: dict = {}
    image_ids = sorted({a["image_id"] for t in truths for a in t.gt.data["annotations"]}, key=str)
    file_names = {i["id"]: i["file_name"] for t in truths for i in t.gt.images}
    for image_id in image_ids:
        heatmaps, _ = estimator.image_maps(read_image(os.path.join(images_folder, file_names[image_id])))
        for truth in truths:
            for annotation in truth.gt.annotations_of(image_id):
                if annotation.get("iscrowd"):
                    continue
                # the ground truth's reader has checked both: a bbox of non-negative size, keypoints of its set
                box = annotation["bbox"]
                if box[2] <= 0 or box[3] <= 0:
                    continue
                keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
                for j, channel in enumerate(truth.mapping):
                    if channel < 0 or keypoints[j, 2] <= 0:
                        continue
                    peaked, found = peak_found(heatmaps[channel], box, keypoints[j, :2], radius, min_peak)
                    row = counts.setdefault(model_set.keypoints[channel],
                                            {"class": truth.name, "labelled": 0, "peaked": 0, "found": 0})
                    row["labelled"] += 1
                    row["peaked"] += peaked
                    row["found"] += found
    counts = {name: counts[name] for name in model_set.keypoints if name in counts}  # in channel order
    totals: dict = {}
    for row in counts.values():
        total = totals.setdefault(row["class"], {"labelled": 0, "peaked": 0, "found": 0})
        for key in total:
            total[key] += row[key]
    return {"channels": counts, "classes": totals, "images": len(image_ids), "radius": radius, "min_peak": min_peak}


def format_peaks(result: dict) -> str:
    radius = result["radius"]
    lines = [f"{'channel':<28} {'class':<10} {'labelled':>8} {'peaked':>7} {'found':>6} {f'found@{radius:g}':>9}"]
    for name, row in result["channels"].items():
        lines.append(f"{name:<28} {row['class']:<10} {row['labelled']:>8} {row['peaked']:>7} {row['found']:>6} "
                     f"{row['found'] / row['labelled']:>9.3f}")
    lines.append("-" * len(lines[0]))
    for name, row in result["classes"].items():
        lines.append(f"{'all of ' + name:<28} {name:<10} {row['labelled']:>8} {row['peaked']:>7} {row['found']:>6} "
                     f"{row['found'] / max(row['labelled'], 1):>9.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        estimator = PoseEstimator.from_checkpoint(args.checkpoint_path, height_size=args.height_size)
        result = channel_peaks(estimator, args.labels, args.images_folder,
                               parse_category_classes(args.category_class), args.radius, args.min_peak)
    except LwposeError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    if not result["channels"]:
        print(f"error: {args.labels}: no labelled keypoint of any class of the model", file=sys.stderr)
        return 2
    print(f"{result['images']} images, heatmaps at image size; found: the channel's maximum inside the box is "
          f"above {args.min_peak:g} and within {args.radius:g} of the box's longer side of the keypoint")
    print(format_peaks(result))
    if args.output_json:
        write_json(result, args.output_json)
        print(f"wrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

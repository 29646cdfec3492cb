"""See what the network is trained on: PNG grids of original and augmented training samples.

    python scripts/browse_dataset.py --prepared-train-labels prepared_train_labels.json --output-dir browse
    python scripts/browse_dataset.py --mix datasets/recipes/people_samples.json --output-dir browse_mix

One row per sample (the first --samples, or --random ones), one tile per column, each captioned:

    original      the whole image, every labelled person's keypoints and skeleton, the main person's box (white),
                  ignore regions (crowds, people without keypoints) tinted red
    draw N        a random augmentation exactly as train.py makes it (scale, rotation, crop, colour jitter), with
                  the keypoints the targets come from; cells of zero loss weight tinted red
    draw N mirror the same draw flipped: the picture mirrored and left/right keypoints swapped, so the left side
                  (drawn in lwpose/inference/drawing.py's left colour) must still be the person's left
    heatmaps      draw 1's keypoint heatmaps (maximum over keypoints) over the crop
    PAFs          draw 1's part affinity fields over the crop (hue = direction, brightness = strength)

Each grid_NNN.png comes with grid_NNN.json: per tile its sample, kind, place in the grid and the map from the image
to the tile, so a tile's pixels can be checked against the labels.
"""
import argparse
import dataclasses
import json
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import flag_hint  # noqa: E402
from lwpose.datasets.augmentation import AugmentationConfig, compose, flip_matrix, sample_augment_params  # noqa: E402
from lwpose.datasets.mix_recipe import RecipeError, load_mix_recipe, prepare_mixed_labels  # noqa: E402
from lwpose.datasets.pose_dataset import PoseTrainingDataset, TargetConfig, ignore_fraction_map  # noqa: E402
from lwpose.datasets.prepared_labels import PreparedLabelsError, load_prepared_labels  # noqa: E402
from lwpose.images import ImageReadError  # noqa: E402
from lwpose.inference.drawing import PoseDrawer  # noqa: E402
from lwpose.inference.grouping import People  # noqa: E402
from lwpose.keypoints import KeypointSetError  # noqa: E402

CAPTION_HEIGHT = 16
IGNORE_TINT = np.array([0, 0, 255], np.float32)  # BGR red


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--prepared-train-labels", help="prepared labels (scripts/prepare_train_labels.py)")
    data.add_argument("--mix", metavar="RECIPE", help="a mix recipe, prepared on the fly")
    parser.add_argument("--train-images-folder", default=None,
                        help="images folder (default: the one recorded in the prepared labels)")
    parser.add_argument("--output-dir", default=os.path.join("outputs", "browse"))
    parser.add_argument("--samples", type=int, default=12, help="samples shown in all")
    parser.add_argument("--random", action="store_true", help="random samples instead of the first ones")
    parser.add_argument("--draws", type=int, default=2, help="augmented draws per sample (each also mirrored)")
    parser.add_argument("--rows-per-grid", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    defaults = AugmentationConfig()
    parser.add_argument("--input-size", type=int, default=defaults.input_size, help="square crop side")
    parser.add_argument("--scale-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                        default=(defaults.scale_min, defaults.scale_max))
    parser.add_argument("--max-rotate-degree", type=float, default=defaults.max_rotate_degree)
    parser.add_argument("--sigma", type=float, default=TargetConfig.sigma)
    parser.add_argument("--paf-thickness", type=float, default=TargetConfig.paf_thickness)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def labelled_people(keypoints: np.ndarray) -> People:
    """Ground-truth keypoints (P, K, 3; v > 0 labelled) as People for the drawer."""
    present = keypoints[..., 2] > 0
    drawn = np.where(present[..., None], np.concatenate([keypoints[..., :2], np.ones_like(keypoints[..., 2:])], -1),
                     np.array([-1.0, -1.0, 0.0]))
    return People(drawn.astype(np.float32), np.zeros(len(keypoints), np.float32), present.sum(-1).astype(np.int32))


def tint(image: np.ndarray, weight: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Blend `colour` into `image` by `weight` (H, W) in [0, 1]."""
    alpha = np.clip(weight, 0, 1)[..., None].astype(np.float32) * 0.5
    return (image.astype(np.float32) * (1 - alpha) + colour * alpha).astype(np.uint8)


def letterbox_matrix(height: int, width: int, size: int) -> np.ndarray:
    """2x3 map of an image into a size x size tile, whole and centred, pixel centres kept."""
    scale = size / max(height, width)
    offset_x, offset_y = (size - width * scale) / 2, (size - height * scale) / 2
    return np.array([[scale, 0, offset_x + (scale - 1) / 2], [0, scale, offset_y + (scale - 1) / 2]])


def original_tile(dataset: PoseTrainingDataset, index: int, drawer: PoseDrawer) -> tuple[np.ndarray, np.ndarray]:
    image_index, person_index = dataset.labels.samples[index]
    info = dataset.labels.images[image_index]
    size = dataset.augmentation.input_size
    image, _ = dataset.images.load(image_index, 1.0)
    matrix = letterbox_matrix(info.height, info.width, size)
    tile = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderValue=(0, 0, 0))
    ignore = ignore_fraction_map(info.ignore, info.height, info.width)
    if ignore is not None:
        sx, sy = info.width / ignore.shape[1], info.height / ignore.shape[0]
        reduced = np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2]])
        tile = tint(tile, cv2.warpAffine(ignore, compose(matrix, reduced), (size, size)), IGNORE_TINT)
    keypoints = info.keypoints.astype(np.float64).copy()
    labelled = keypoints[..., 2] > 0
    keypoints[..., :2] = np.where(labelled[..., None], keypoints[..., :2] @ matrix[:, :2].T + matrix[:, 2], 0)
    drawer.draw(tile, labelled_people(keypoints))
    x, y, w, h = info.bboxes[person_index]
    corners = np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]]) @ matrix[:, :2].T + matrix[:, 2]
    cv2.rectangle(tile, tuple(np.round(corners[0]).astype(int)), tuple(np.round(corners[1]).astype(int)),
                  (255, 255, 255), 1)
    return tile, matrix


def augmented_tiles(dataset: PoseTrainingDataset, index: int, params, crop: np.ndarray, drawer: PoseDrawer
                    ) -> tuple[np.ndarray, dict]:
    """The crop of one draw (`crop`: its `sample_crop_matrix`) with its keypoints and zero-weight cells drawn, and
    the sample itself."""
    sample = dataset.make_sample(index, params)
    size = dataset.augmentation.input_size
    tile = tint(sample["image"].copy(), 1.0 - cv2.resize(sample["mask"], (size, size),
                                                         interpolation=cv2.INTER_NEAREST), IGNORE_TINT)
    drawer.draw(tile, labelled_people(dataset.crop_keypoints(index, params, crop)))
    return tile, sample


def heatmap_tile(sample: dict, num_keypoints: int) -> np.ndarray:
    size = sample["image"].shape[0]
    peak = sample["heatmaps"][:num_keypoints].max(axis=0)
    coloured = cv2.applyColorMap((np.clip(cv2.resize(peak, (size, size)), 0, 1) * 255).astype(np.uint8),
                                 cv2.COLORMAP_JET)
    return cv2.addWeighted(sample["image"], 0.45, coloured, 0.55, 0)


def paf_tile(sample: dict, paf_channels: np.ndarray) -> np.ndarray:
    size = sample["image"].shape[0]
    x_sum = sample["pafs"][paf_channels[:, 0]].sum(axis=0)
    y_sum = sample["pafs"][paf_channels[:, 1]].sum(axis=0)
    x_sum, y_sum = cv2.resize(x_sum, (size, size)), cv2.resize(y_sum, (size, size))
    strength = np.clip(np.hypot(x_sum, y_sum), 0, 1)
    hue = ((np.arctan2(y_sum, x_sum) + np.pi) / (2 * np.pi) * 179).astype(np.uint8)
    hsv = np.stack([hue, np.full_like(hue, 255), (strength * 255).astype(np.uint8)], axis=-1)
    coloured = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return np.where(strength[..., None] > 0.05, cv2.addWeighted(sample["image"], 0.3, coloured, 0.7, 0),
                    (sample["image"] * 0.5).astype(np.uint8))


def captioned(tile: np.ndarray, caption: str) -> np.ndarray:
    strip = np.full((CAPTION_HEIGHT, tile.shape[1], 3), 32, np.uint8)
    cv2.putText(strip, caption, (3, CAPTION_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.vstack([strip, tile])


def sample_row(dataset: PoseTrainingDataset, index: int, draws: int, seed: int, drawer: PoseDrawer):
    """The tiles of one sample and what each is: (caption, tile, record)."""
    tile, matrix = original_tile(dataset, index, drawer)
    labels = dataset.labels
    source = labels.sources[labels.images[labels.samples[index][0]].source].name
    caption = f"original ({source})" if len(labels.sources) > 1 else "original"
    tiles = [(caption, tile, {"kind": "original", "source": source, "matrix": matrix.tolist()})]
    first_sample = None
    for draw in range(draws):
        rng = np.random.default_rng((seed, draw, index))
        params = sample_augment_params(rng, dataset.augmentation)
        crop = dataset.sample_crop_matrix(index, params)
        for mirrored in (False, True):
            tile, sample = augmented_tiles(dataset, index, dataclasses.replace(params, flip=mirrored), crop, drawer)
            if first_sample is None:
                first_sample = sample
            to_tile = compose(flip_matrix(dataset.augmentation.input_size), crop) if mirrored else crop
            tiles.append((f"draw {draw + 1}" + (" mirror" if mirrored else ""), tile,
                          {"kind": "mirrored" if mirrored else "augmented", "draw": draw + 1,
                           "matrix": np.asarray(to_tile)[:2].tolist()}))
    if first_sample is not None:
        keypoint_set = dataset.keypoint_set
        tiles.append(("heatmaps", heatmap_tile(first_sample, keypoint_set.num_keypoints), {"kind": "heatmaps"}))
        tiles.append(("PAFs", paf_tile(first_sample, keypoint_set.limb_paf_channels), {"kind": "pafs"}))
    return tiles


def write_grid(rows: list, path: str) -> list:
    """Rows of (sample index, tiles) as one PNG; returns the tile records with their place in it."""
    records, lines = [], []
    for row_number, (index, tiles) in enumerate(rows):
        line = []
        for column, (caption, tile, record) in enumerate(tiles):
            line.append(captioned(tile, f"#{index} {caption}"))
            height, width = tile.shape[:2]
            records.append({"sample": int(index), **record, "x": column * width,
                            "y": row_number * (height + CAPTION_HEIGHT) + CAPTION_HEIGHT,
                            "width": width, "height": height})
        lines.append(np.hstack(line))
    widest = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, widest - line.shape[1]), (0, 0))) for line in lines]
    if not cv2.imwrite(path, np.vstack(lines)):
        raise OSError(f"could not write {path}")
    return records


def load_labels(args):
    if args.mix:
        return prepare_mixed_labels(load_mix_recipe(args.mix), report=print)
    return load_prepared_labels(args.prepared_train_labels)


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("samples", "draws", "rows_per_grid"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        labels = load_labels(args)
        augmentation = AugmentationConfig(input_size=args.input_size, scale_min=args.scale_range[0],
                                          scale_max=args.scale_range[1], max_rotate_degree=args.max_rotate_degree)
        folders = [args.train_images_folder] * len(labels.sources) if args.train_images_folder else None
        dataset = PoseTrainingDataset(labels, folders, augmentation, TargetConfig(args.sigma, args.paf_thickness),
                                      seed=args.seed, image_cache="none", progress=False)
    except (PreparedLabelsError, RecipeError, KeypointSetError, ValueError, OSError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    if len(dataset) == 0:
        print("error: the labels hold no training sample", file=sys.stderr)
        return 2
    count = min(args.samples, len(dataset))
    indices = (np.sort(np.random.default_rng(args.seed).choice(len(dataset), count, replace=False))
               if args.random else np.arange(count))
    os.makedirs(args.output_dir, exist_ok=True)
    drawer = PoseDrawer(labels.keypoint_set)
    written = []
    chunks = [indices[i:i + args.rows_per_grid] for i in range(0, count, args.rows_per_grid)]
    try:
        for number, chunk in enumerate(tqdm(chunks, desc="grids", unit="grid", disable=args.no_progress), 1):
            rows = [(int(i), sample_row(dataset, int(i), args.draws, args.seed, drawer)) for i in chunk]
            path = os.path.join(args.output_dir, f"grid_{number:03d}.png")
            records = write_grid(rows, path)
            with open(os.path.splitext(path)[0] + ".json", "w") as f:
                json.dump({"keypoint_set": labels.keypoint_set.name, "tiles": records}, f, indent=1)
            written.append(path)
    except (ImageReadError, OSError) as e:
        print(f"error: {e}{flag_hint(e)} ({len(written)} grid(s) written before it)", file=sys.stderr)
        return 2
    print(f"{count} samples in {len(written)} grid(s): {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic multi-person keypoint data, for running the whole project with nothing downloaded.

    python scripts/synthetic_data.py --output-dir outputs/synthetic [--seed 0] [--train-images 600]

writes COCO-format keypoint datasets of drawn people (see scripts/synthetic_figures.py) and a video of walkers:

    OUT/train/images/000001.jpg ...   OUT/train/person_keypoints.json    (keypoint set --keypoints, default coco)
    OUT/val/...                                                          (held out: its own random stream)
    OUT/aic/...                                                          (labelled in --mix-keypoints, default aic)
    OUT/video/walk.mp4  OUT/video/walk_keypoints.jsonl                   (one JSON line of people per frame)
    OUT/train/person_keypoints_mpii.json ...   with --also-keypoints mpii: the same people of train and val labelled
                                               in another set too (same images, same annotation ids)
    OUT/manifest.json                                                    (what was generated, with which settings)

Scenes have several people occluding each other in depth order (a keypoint under a nearer figure is v=1, a
visible one v=2, one outside the image or on the far side of its own head v=0 at (0, 0)), people cut by the image
border, tiny people annotated with num_keypoints=0, and sometimes a crowd region (iscrowd=1, uncompressed RLE as in
COCO's own files) whose people are not annotated. Everything is a function of --seed.

With --animals MIN MAX, scenes also hold four-legged animals (scripts/synthetic_animals.py) among the people, in the
same depth order; the labels then have a second category, id 2 "animal", in --animal-keypoints (default ap10k).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from synthetic_figures import (  # noqa: E402
    Figure,
    draw_shapes,
    figure_shapes,
    known_point_names,
    project,
    random_build,
    random_palette,
    random_pose,
    unit_extent,
    walk_pose,
)

import synthetic_animals  # noqa: E402
from lwpose.errors import LwposeError, flag_hint  # noqa: E402
from lwpose.keypoints import KeypointSet, KeypointSetError, load_keypoint_set  # noqa: E402

LABELS_NAME = "person_keypoints.json"
# COCO keypoint coordinates put pixel edges at integers; the drawing puts pixel centres there.
COCO_OFFSET = 0.5
# Every split and the video draw from their own random stream of the one seed, so they never share images and
# each stays the same when the others' sizes change.
STREAMS = {"train": 0, "val": 1, "mix": 2, "video": 3}


class SyntheticDataError(LwposeError, ValueError):
    """Settings or an output folder the generator cannot use; the message says which and why."""


@dataclass(frozen=True)
class SceneConfig:
    long_side: int = 320  # image size in pixels (the other side follows a random aspect ratio)
    aspect_range: tuple = (0.75, 1.34)  # width / height
    people: tuple = (1, 4)  # annotated people per image (min, max)
    person_height: tuple = (0.35, 0.9)  # their stature as a share of the image height
    small_people: tuple = (0, 2)  # tiny people annotated with num_keypoints=0
    small_height_px: tuple = (10.0, 26.0)
    partial_probability: float = 0.15  # a person placed across the image border
    near_probability: float = 0.4  # a person placed close beside the previous one (overlaps)
    crowd_probability: float = 0.1  # an image gets a crowd region
    crowd_size: tuple = (6, 14)
    max_yaw_degrees: float = 70.0  # body turn from facing the camera
    back_view_probability: float = 0.1  # turned away instead
    roll_degrees: float = 10.0  # in-plane tilt
    side_shade: float = 0.3  # left side lighter, right side darker by this share
    joint_marker_shade: float = 0.35  # joints drawn as discs of a contrasting shade (0: none)
    animals: tuple = (0, 0)  # annotated animals per image (min, max)
    animal_height: tuple = (0.3, 0.7)  # their body length (nose to root of tail) as a share of the image height

    def check(self) -> None:
        def pair(name, low_bound, integer=False):
            low, high = getattr(self, name)
            if not (low_bound <= low <= high) or (integer and (int(low) != low or int(high) != high)):
                raise SyntheticDataError(f"{name} = {getattr(self, name)}: need {low_bound} <= min <= max"
                                         + (" (whole numbers)" if integer else ""))
        if self.long_side < 32:
            raise SyntheticDataError(f"image size {self.long_side}: need at least 32 pixels")
        pair("people", 0, True)
        pair("small_people", 0, True)
        pair("crowd_size", 1, True)
        pair("person_height", 0.01)
        pair("small_height_px", 1.0)
        pair("aspect_range", 0.1)
        pair("animals", 0, True)
        pair("animal_height", 0.01)
        for name in ("partial_probability", "near_probability", "crowd_probability", "back_view_probability",
                     "side_shade", "joint_marker_shade"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SyntheticDataError(f"{name} = {getattr(self, name)}: need a value in [0, 1]")


ANIMAL_FIELDS = ("animals", "animal_height")


def scene_config_record(config: SceneConfig) -> dict:
    """The settings as the labels and the manifest record them: the animal settings only where animals are drawn,
    so that people-only data does not depend on them."""
    record = asdict(config)
    if not config.animals[1]:
        for name in ANIMAL_FIELDS:
            del record[name]
    return record


# ------------------------------------------------------------------------------------------- backgrounds
def _background_colour(rng: np.random.Generator) -> np.ndarray:
    """Muted colours, so that the people (saturated, outlined) stand out."""
    pixel = np.uint8([[[rng.integers(0, 180), rng.uniform(0, 0.45) * 255, rng.uniform(0.2, 0.85) * 255]]])
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A gradient overlaid with some of: smooth noise, stripes, random shapes; then blurred. Drawn at half
    resolution (it is smooth anyway) and enlarged, which makes it four times cheaper."""
    full_size = (width, height)
    height, width = (height + 1) // 2, (width + 1) // 2
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle))
    ramp = (ramp - ramp.min()) / max(1e-6, np.ptp(ramp))
    image = (_background_colour(rng) * (1 - ramp[..., None]) + _background_colour(rng) * ramp[..., None])
    layers = rng.permutation(["noise", "stripes", "shapes"])[:rng.integers(1, 4)]
    for layer in layers:
        if layer == "noise":
            noise = np.zeros((height, width, 3), np.float32)
            for cells in (2, 4, 8, 16):
                channels = 3 if rng.uniform() < 0.5 else 1
                small = rng.standard_normal((max(2, height // cells), max(2, width // cells), channels),
                                            dtype=np.float32)
                up = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
                noise += (up.reshape(height, width, -1) if up.ndim == 3 else up[..., None]) * rng.uniform(4, 18)
            image += noise
        elif layer == "stripes":
            angle = rng.uniform(0, np.pi)
            period = rng.uniform(3, 24)
            wave = np.sin(2 * np.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period + rng.uniform(0, 7))
            if rng.uniform() < 0.5:
                wave = np.sign(wave)
            alpha = rng.uniform(0.15, 0.5) * (wave[..., None] * 0.5 + 0.5)
            image = image * (1 - alpha) + _background_colour(rng) * alpha
        else:
            canvas = image.copy()
            for _ in range(rng.integers(3, 16)):
                colour = tuple(float(c) for c in _background_colour(rng))
                centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
                size = (float(rng.uniform(2, width / 3)), float(rng.uniform(2, height / 3)))
                kind = rng.integers(0, 3)
                if kind == 0:
                    box = cv2.boxPoints((centre, size, float(rng.uniform(0, 180))))
                    cv2.fillPoly(canvas, [np.round(box).astype(np.int32)], colour, cv2.LINE_AA)
                elif kind == 1:
                    cv2.ellipse(canvas, (int(centre[0]), int(centre[1])), (int(size[0] / 2), int(size[1] / 2)),
                                float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
                else:
                    end = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
                    cv2.line(canvas, (int(centre[0]), int(centre[1])), end, colour, int(rng.integers(1, 3)),
                             cv2.LINE_AA)
            alpha = rng.uniform(0.4, 1.0)
            image = image * (1 - alpha) + canvas * alpha
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.15:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = cv2.resize(image, full_size, interpolation=cv2.INTER_LINEAR)
    return np.clip(image, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ scenes
PERSON, SMALL, CROWD, ANIMAL = "person", "small", "crowd", "animal"
ANIMAL_CATEGORY_ID = 2


@dataclass
class Scene:
    """A drawn image with what is needed to label it: the figures in drawing order (far to near), each one's
    role, and `id_mask` (0 = background, i + 1 = the figure `figures[i]` nearest the camera at that pixel)."""

    image: np.ndarray
    id_mask: np.ndarray
    figures: list
    roles: list

    @property
    def crowd_mask(self) -> np.ndarray | None:
        """The crowd's region: its people's visible pixels, gaps between them closed, minus anyone else's."""
        ids = [i + 1 for i, role in enumerate(self.roles) if role == CROWD]
        if not ids:
            return None
        members = np.isin(self.id_mask, ids).astype(np.uint8)
        closed = cv2.morphologyEx(members, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
        others = (self.id_mask > 0) & ~np.isin(self.id_mask, ids)
        return closed.astype(bool) & ~others


def _random_figure(rng: np.random.Generator, config: SceneConfig, stature_px: float) -> Figure:
    yaw = math.radians(rng.uniform(-config.max_yaw_degrees, config.max_yaw_degrees))
    if rng.uniform() < config.back_view_probability:
        yaw += math.pi
    return Figure(random_build(rng), random_pose(rng), random_palette(rng), stature_px, (0.0, 0.0), yaw,
                  math.radians(rng.uniform(-config.roll_degrees, config.roll_degrees)), config.side_shade,
                  config.joint_marker_shade)


def _place(rng: np.random.Generator, figure: Figure, width: int, height: int, partial: bool,
           near_x: float | None = None) -> Figure:
    """Put the figure's pelvis where its whole extent fits the image, or, if `partial`, where its extent
    crosses one image border (20-60 % of it outside)."""
    left, top, right, bottom = (v * figure.stature_px for v in unit_extent(figure))

    def inside(low, high, size):  # pelvis range keeping [low, high] (relative extent) within [0, size)
        a, b = -low, size - 1 - high
        return rng.uniform(min(a, b), max(a, b))

    x, y = inside(left, right, width), inside(top, bottom, height)
    if near_x is not None:
        x = float(np.clip(near_x + rng.normal(0, 0.15 * width), -left, width - 1 - right)) \
            if right - left < width else x
    if partial:
        border = rng.integers(0, 4)
        outside = rng.uniform(0.2, 0.6)
        if border == 0:
            x = -right + outside * (right - left)
        elif border == 1:
            x = width - 1 - left - outside * (right - left)
        elif border == 2:
            y = -bottom + outside * (bottom - top)
        else:
            y = height - 1 - top - outside * (bottom - top)
    return figure.moved(origin=(float(x), float(y)))


def _shapes(figure) -> list:
    if isinstance(figure, synthetic_animals.Animal):
        return synthetic_animals.animal_shapes(figure)
    return figure_shapes(figure)


def _project(figure):
    return synthetic_animals.project(figure) if isinstance(figure, synthetic_animals.Animal) else project(figure)


def draw_scene(background: np.ndarray, figures: list, roles: list) -> Scene:
    """Draw figures (far to near) on a copy of the background."""
    image = background.copy()
    id_mask = np.zeros(image.shape[:2], np.int32)
    for i, figure in enumerate(figures):
        draw_shapes(image, id_mask, i + 1, _shapes(figure))
    return Scene(image, id_mask, list(figures), list(roles))


def make_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    aspect = rng.uniform(*config.aspect_range)
    if aspect >= 1:
        width, height = config.long_side, max(16, round(config.long_side / aspect))
    else:
        width, height = max(16, round(config.long_side * aspect)), config.long_side
    background = random_background(rng, height, width)

    # (depth key, role, figure); smaller keys are further away and drawn first
    placed: list[tuple[float, str, Figure]] = []
    if rng.uniform() < config.crowd_probability:
        centre_x, centre_y = rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.6) * height
        spread = rng.uniform(0.25, 0.5) * width
        for _ in range(rng.integers(config.crowd_size[0], config.crowd_size[1] + 1)):
            figure = _random_figure(rng, config, rng.uniform(0.12, 0.22) * height)
            origin = (centre_x + rng.uniform(-0.5, 0.5) * spread, centre_y + rng.normal(0, 0.03 * height))
            placed.append((-2.0 + origin[1] / height, CROWD, figure.moved(origin=origin)))
    for _ in range(rng.integers(config.small_people[0], config.small_people[1] + 1)):
        figure = _random_figure(rng, config, rng.uniform(*config.small_height_px))
        figure = _place(rng, figure, width, height, partial=False)
        placed.append((-1.0 + figure.origin[1] / height, SMALL, figure))
    previous_x = None
    for _ in range(rng.integers(config.people[0], config.people[1] + 1)):
        figure = _random_figure(rng, config, rng.uniform(*config.person_height) * height)
        near = previous_x if previous_x is not None and rng.uniform() < config.near_probability else None
        figure = _place(rng, figure, width, height, rng.uniform() < config.partial_probability, near)
        previous_x = figure.origin[0]
        feet = figure.origin[1] + unit_extent(figure)[3] * figure.stature_px
        placed.append((feet / height + rng.normal(0, 0.05), PERSON, figure))
    if config.animals[1]:  # no random draws without animals: people-only scenes stay as they were
        people_x = [f.origin[0] for _, role, f in placed if role == PERSON]
        placed.extend((key, ANIMAL, animal)
                      for key, animal in synthetic_animals.random_animals(rng, config, width, height, people_x))
    placed.sort(key=lambda item: item[0])
    scene = draw_scene(background, [f for _, _, f in placed], [r for _, r, _ in placed])
    # camera softness and sensor noise over the whole picture
    sigma = rng.uniform(0.0, 0.8)
    image = cv2.GaussianBlur(scene.image, (0, 0), sigma) if sigma > 0.3 else scene.image
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0, 4)
    scene.image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return scene


# ----------------------------------------------------------------------------------------------- labels
def keypoint_sources(keypoint_set: KeypointSet, known_names=None, figure="figure") -> list[tuple[str, ...]]:
    """For each keypoint of the set, the figure's points it is (one) or the midpoint of (two): by name, then by
    the set's aliases, then by its derived-keypoint rules. `known_names`: the points the figure places (default
    the people's), `figure`: what it is called in the error."""
    known = set(known_point_names() if known_names is None else known_names)
    sources = []
    for name in keypoint_set.keypoints:
        candidates = (name, *keypoint_set.aliases.get(name, ()))
        found = next((c for c in candidates if c in known), None)
        if found is not None:
            sources.append((found,))
            continue
        parts = keypoint_set.derived_keypoints.get(name, {}).get("midpoint_of")
        if parts and all(p in known for p in parts):
            sources.append(tuple(parts))
            continue
        raise SyntheticDataError(f"keypoint set {keypoint_set.source}: keypoint '{name}' is not a point the "
                                 f"synthetic {figure} can place (it places: {', '.join(sorted(known))})")
    return sources


def figure_keypoints(scene: Scene, index: int, sources: list[tuple[str, ...]]) -> np.ndarray:
    """(K, 3) x, y, v of figure `index` in image pixels (pixel centres at integers): v=2 where the figure is
    the nearest at that pixel, v=1 where a nearer figure covers it, v=0 (x = y = 0) outside the image or on
    the far side of its own head."""
    projected = _project(scene.figures[index])
    height, width = scene.id_mask.shape
    out = np.zeros((len(sources), 3), np.float64)
    for k, names in enumerate(sources):
        if not all(projected.facing[n] for n in names):
            continue
        x = float(np.mean([projected.points[n][0] for n in names]))
        y = float(np.mean([projected.points[n][1] for n in names]))
        col, row = int(round(x)), int(round(y))
        if not (0 <= col < width and 0 <= row < height):
            continue
        nearest = scene.id_mask[row, col] - 1
        out[k] = (x, y, 1 if nearest > index else 2)
    return out


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons of a mask's outer outlines (pixel edges at integers); the box when too thin to outline."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [(c[:, 0, :].astype(np.float64) + COCO_OFFSET).ravel().round(1).tolist()
                for c in contours if len(c) >= 3]
    if not polygons:
        x, y, w, h = _mask_box(mask)
        polygons = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return polygons


def _mask_box(mask: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(mask)
    return [float(cols.min()), float(rows.min()), float(cols.max() - cols.min() + 1),
            float(rows.max() - rows.min() + 1)]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major pixels, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.uint8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def animal_keypoint_sources(keypoint_set: KeypointSet) -> list[tuple[str, ...]]:
    return keypoint_sources(keypoint_set, synthetic_animals.known_point_names(), "animal")


def scene_annotations(scene: Scene, keypoint_set: KeypointSet,
                      animal_set: KeypointSet | None = None) -> list[tuple[int | None, dict]]:
    """COCO annotations (without ids) of a scene, each with the index of its figure (None for the crowd); animals
    in category 2 with the keypoints of `animal_set`. Figures with no visible pixel are not annotated (nobody
    could have)."""
    from pycocotools import mask as mask_utils

    sources = keypoint_sources(keypoint_set)
    no_keypoints = [0] * (3 * keypoint_set.num_keypoints)
    if ANIMAL in scene.roles:
        if animal_set is None:
            raise SyntheticDataError("the scene has animals: their keypoint set is needed to label them")
        animal_sources = animal_keypoint_sources(animal_set)
    out = []
    for index, role in enumerate(scene.roles):
        if role == CROWD:
            continue
        visible = scene.id_mask == index + 1
        area = int(visible.sum())
        if area == 0:
            continue
        annotation = {"category_id": 1, "iscrowd": 0, "area": float(area), "bbox": _mask_box(visible),
                      "segmentation": mask_polygons(visible), "keypoints": no_keypoints, "num_keypoints": 0}
        if role == ANIMAL:
            annotation["category_id"] = ANIMAL_CATEGORY_ID
        if role in (PERSON, ANIMAL):
            keypoints = figure_keypoints(scene, index, sources if role == PERSON else animal_sources)
            labelled = keypoints[:, 2] > 0
            keypoints[labelled, :2] += COCO_OFFSET
            annotation["keypoints"] = [round(float(v), 2) if i % 3 < 2 else int(v)
                                       for i, v in enumerate(keypoints.ravel())]
            annotation["num_keypoints"] = int(labelled.sum())
        out.append((index, annotation))
    crowd = scene.crowd_mask
    if crowd is not None and crowd.any():
        rle = uncompressed_rle(crowd)
        compressed = mask_utils.frPyObjects(rle, *rle["size"])
        out.append((None, {"category_id": 1, "iscrowd": 1, "area": float(mask_utils.area(compressed)),
                           "bbox": [float(v) for v in mask_utils.toBbox(compressed)], "segmentation": rle,
                           "keypoints": no_keypoints, "num_keypoints": 0}))
    return out


def coco_category(keypoint_set: KeypointSet) -> dict:
    return {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(keypoint_set.keypoints),
            "skeleton": [[int(a) + 1, int(b) + 1] for a, b in keypoint_set.limb_keypoints]}


# ------------------------------------------------------------------------------------------------ splits
def _write_json_atomic(obj, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


def image_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """Each image's own generator: the same image for the same seed whatever the split's size."""
    return np.random.default_rng([seed, STREAMS[stream], index])


def _draw_image(index: int, images_dir: str, keypoint_set: KeypointSet, config: SceneConfig, seed: int,
                stream: str, image_format: str, animal_set: KeypointSet | None = None,
                also: tuple = ()) -> tuple[dict, list[dict]] | tuple[dict, list, list]:
    """Draw, save and label image `index` (ids start at 1); annotations come without their ids. With `also` (more
    keypoint sets), the annotations in each of them follow, one list per set, in the same order."""
    scene = make_scene(image_rng(seed, stream, index), config)
    file_name = f"{index + 1:06d}.{image_format}"
    path = os.path.join(images_dir, file_name)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(path, scene.image, params):
        raise SyntheticDataError(f"could not write image {path}")
    height, width = scene.image.shape[:2]
    image = {"id": index + 1, "file_name": file_name, "width": width, "height": height}
    labelled = [[{"image_id": index + 1, **annotation}
                 for _, annotation in scene_annotations(scene, labels_set, animal_set)]
                for labels_set in (keypoint_set, *also)]
    return (image, labelled[0]) if not also else (image, *labelled)


def write_split(split_dir: str, num_images: int, keypoint_set: KeypointSet, config: SceneConfig, seed: int,
                stream: str, image_format: str = "jpg", progress: bool = True, workers: int = 1,
                animal_set: KeypointSet | None = None, also: tuple = ()) -> dict:
    """Draw `num_images` scenes into split_dir/images and their labels into split_dir/person_keypoints.json,
    with `workers` processes (each image has its own random stream, so the result does not depend on them).
    Scenes with animals (config.animals) label them in `animal_set` (default ap10k), as category 2. Each set of
    `also` labels the same people again, into person_keypoints_<set name>.json."""
    if config.animals[1] and animal_set is None:
        animal_set = load_keypoint_set("ap10k")
    images_dir = os.path.join(split_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    name = os.path.basename(os.path.normpath(split_dir))
    draw = functools.partial(_draw_image, images_dir=images_dir, keypoint_set=keypoint_set, config=config,
                             seed=seed, stream=stream, image_format=image_format, animal_set=animal_set,
                             also=tuple(also))
    images, annotations = [], []
    also_annotations: list[list] = [[] for _ in also]
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            results = pool.imap(draw, range(num_images), chunksize=4)
        else:
            results = map(draw, range(num_images))
        for image, image_annotations, *also_image in tqdm(results, total=num_images, desc=f"synthetic {name}",
                                                          unit="img", disable=not progress, dynamic_ncols=True):
            images.append(image)
            first_id = len(annotations) + 1
            annotations.extend({"id": first_id + i, **a} for i, a in enumerate(image_annotations))
            for labelled, more in zip(also_annotations, also_image):
                labelled.extend({"id": first_id + i, **a} for i, a in enumerate(more))
    categories = [coco_category(keypoint_set)]
    if config.animals[1]:
        categories.append(synthetic_animals.coco_category(animal_set, ANIMAL_CATEGORY_ID))
    coco = {"info": {"description": f"lwpose synthetic people, split '{name}'", "seed": seed, "stream": stream,
                     "generator": "scripts/synthetic_data.py", "scene_config": scene_config_record(config)},
            "images": images, "annotations": annotations, "categories": categories}
    _write_json_atomic(coco, os.path.join(split_dir, LABELS_NAME))
    for labels_set, labelled in zip(also, also_annotations):
        also_categories = [coco_category(labels_set), *categories[1:]]
        _write_json_atomic({**coco, "annotations": labelled, "categories": also_categories},
                           os.path.join(split_dir, also_labels_name(labels_set)))
    return coco


def also_labels_name(keypoint_set: KeypointSet) -> str:
    """The file of a split's people labelled again in another set (--also-keypoints)."""
    return f"{os.path.splitext(LABELS_NAME)[0]}_{keypoint_set.name}.json"


# ------------------------------------------------------------------------------------------------- video
VIDEO_FORMATS = (("mp4v", ".mp4"), ("MJPG", ".avi"))  # tried in order: the first this OpenCV writes and reads


def open_video_writer(stem: str, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """A writer for `stem` + the first container this OpenCV build can write (size is width, height)."""
    for fourcc, extension in VIDEO_FORMATS:
        writer = cv2.VideoWriter(stem + extension, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, stem + extension
        writer.release()
    raise SyntheticDataError(f"this OpenCV build can write none of {[f for f, _ in VIDEO_FORMATS]} for {stem}")


@dataclass
class Walker:
    figure: Figure  # its pose, place and heading are set per frame
    ground_y: float  # where its feet are; further people are higher up and smaller
    x: float
    direction: int  # +1 walks right, -1 left
    speed: float  # pixels per frame
    phase: float
    turn: float  # how much the walker is turned towards the camera from a side view (radians)


def _walkers(rng: np.random.Generator, config: SceneConfig, width: int, height: int, frames: int,
             count: int) -> list[Walker]:
    """Walkers at different depths; the first two head towards each other and cross mid-video."""
    walkers = []
    for i in range(count):
        ground_y = rng.uniform(0.6, 0.97) * height
        stature = ground_y / height * rng.uniform(0.55, 0.75) * height
        speed = stature * rng.uniform(0.025, 0.04)
        direction = 1 if i % 2 == 0 else -1
        x = rng.uniform(0.1, 0.9) * width
        if i < 2:
            # both reach the middle around 40 % of the way through the video
            ground_y = (0.8 + 0.06 * i) * height
            stature = rng.uniform(0.5, 0.6) * height
            speed = min(stature * 0.035, 0.45 * width / (0.4 * frames))
            x = width / 2 - direction * speed * 0.4 * frames
        figure = _random_figure(rng, replace(config, back_view_probability=0.0), stature)
        walkers.append(Walker(figure, ground_y, x, direction, speed, rng.uniform(0, 2 * np.pi),
                              math.radians(rng.uniform(15, 50))))
    return walkers


def _walker_figure(walker: Walker) -> Figure:
    b = walker.figure.build
    stature = walker.figure.stature_px
    pelvis_y = walker.ground_y - stature * (b.thigh + b.shin + b.ankle_radius)
    return walker.figure.moved(pose=walk_pose(walker.phase), origin=(walker.x, pelvis_y),
                               yaw=walker.direction * (math.pi / 2 - walker.turn), roll=0.0)


def write_walk_video(video_dir: str, keypoint_set: KeypointSet, config: SceneConfig, seed: int, frames: int = 200,
                     fps: float = 20.0, num_walkers: int = 4, progress: bool = True) -> dict:
    """A video of people walking back and forth (a walk cycle, turning at the image borders) over a still
    background, and their ground-truth keypoints per frame as JSON lines."""
    rng = np.random.default_rng([seed, STREAMS["video"]])
    width = config.long_side
    height = int(round(width * 3 / 4))
    background = random_background(rng, height, width)
    walkers = _walkers(rng, config, width, height, frames, num_walkers)
    walkers.sort(key=lambda w: w.ground_y)  # far to near, fixed: walkers keep their lanes
    os.makedirs(video_dir, exist_ok=True)
    writer, video_path = open_video_writer(os.path.join(video_dir, "walk"), fps, (width, height))
    sources = keypoint_sources(keypoint_set)
    labels_path = os.path.join(video_dir, "walk_keypoints.jsonl")
    stride_cycle = 0.75  # statures walked per walk cycle (two steps)
    try:
        with open(labels_path + ".tmp", "w") as labels:
            for t in tqdm(range(frames), desc="synthetic video", unit="frame", disable=not progress,
                          dynamic_ncols=True):
                scene = draw_scene(background, [_walker_figure(w) for w in walkers], [PERSON] * len(walkers))
                people = []
                for index, walker in enumerate(walkers):
                    keypoints = figure_keypoints(scene, index, sources)
                    labelled = keypoints[:, 2] > 0
                    if not labelled.any():
                        continue
                    keypoints[labelled, :2] += COCO_OFFSET
                    visible = scene.id_mask == index + 1
                    people.append({"track_id": walkers.index(walker) + 1,
                                   "keypoints": [round(float(v), 2) for v in keypoints.ravel()],
                                   "num_keypoints": int(labelled.sum()),
                                   "bbox": _mask_box(visible) if visible.any() else None})
                labels.write(json.dumps({"frame": t, "time": round(t / fps, 4), "people": people}) + "\n")
                writer.write(scene.image)
                for walker in walkers:
                    walker.x += walker.direction * walker.speed
                    walker.phase += 2 * np.pi * walker.speed / (stride_cycle * walker.figure.stature_px)
                    # turn back once half outside, so people leave the frame partly and come back
                    if (walker.x < 0 and walker.direction < 0) or (walker.x > width - 1 and walker.direction > 0):
                        walker.direction = -walker.direction
        os.replace(labels_path + ".tmp", labels_path)
    finally:
        writer.release()
    return {"video": os.path.basename(video_path), "keypoints": os.path.basename(labels_path), "frames": frames,
            "fps": fps, "width": width, "height": height, "walkers": num_walkers,
            "keypoint_names": list(keypoint_set.keypoints)}


# ------------------------------------------------------------------------------------------ command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=os.path.join("outputs", "synthetic"),
                        help="where to write the splits (default outputs/synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--mix-images", type=int, default=100,
                        help="images of the split labelled in --mix-keypoints (0: none)")
    parser.add_argument("--keypoints", default="coco", help="keypoint set of train, val and video (default coco)")
    parser.add_argument("--mix-keypoints", default="aic",
                        help="keypoint set of the extra split, written to OUT/<set name> (default aic)")
    parser.add_argument("--also-keypoints", nargs="+", default=(), metavar="SET",
                        help="label the people of train and val in these sets too (same images and annotation ids; "
                             "person_keypoints_<set>.json beside person_keypoints.json)")
    parser.add_argument("--video-frames", type=int, default=200, help="frames of the walking video (0: none)")
    parser.add_argument("--video-fps", type=float, default=20.0)
    parser.add_argument("--video-walkers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=SceneConfig.long_side, help="long side in pixels")
    parser.add_argument("--people", type=int, nargs=2, default=SceneConfig.people, metavar=("MIN", "MAX"),
                        help="annotated people per image")
    parser.add_argument("--person-height", type=float, nargs=2, default=SceneConfig.person_height,
                        metavar=("MIN", "MAX"), help="their stature as a share of the image height")
    parser.add_argument("--small-people", type=int, nargs=2, default=SceneConfig.small_people,
                        metavar=("MIN", "MAX"), help="tiny people (num_keypoints=0) per image")
    parser.add_argument("--crowd-probability", type=float, default=SceneConfig.crowd_probability)
    parser.add_argument("--partial-probability", type=float, default=SceneConfig.partial_probability,
                        help="chance that a person is cut by the image border")
    parser.add_argument("--near-probability", type=float, default=SceneConfig.near_probability,
                        help="chance that a person or animal is placed close beside one already placed (overlapping)")
    parser.add_argument("--back-view-probability", type=float, default=SceneConfig.back_view_probability)
    parser.add_argument("--joint-marker-shade", type=float, default=SceneConfig.joint_marker_shade,
                        help="contrast of the discs drawn at joints (0: plain limbs)")
    parser.add_argument("--animals", type=int, nargs=2, default=SceneConfig.animals, metavar=("MIN", "MAX"),
                        help="annotated four-legged animals per image (default 0 0: people only)")
    parser.add_argument("--animal-height", type=float, nargs=2, default=SceneConfig.animal_height,
                        metavar=("MIN", "MAX"),
                        help="their body length (nose to root of tail) as a share of the image height")
    parser.add_argument("--animal-keypoints", default="ap10k",
                        help="keypoint set of the animals, category 2 of the labels (default ap10k)")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--overwrite", action="store_true", help="replace splits already in --output-dir")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes drawing images (default: one per CPU core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _prepare_split_dir(split_dir: str, overwrite: bool) -> None:
    if os.path.exists(os.path.join(split_dir, LABELS_NAME)) or os.path.exists(os.path.join(split_dir, "images")):
        if not overwrite:
            raise SyntheticDataError(f"{split_dir} already holds a dataset; pass --overwrite to replace it or "
                                     "choose another --output-dir")
        shutil.rmtree(os.path.join(split_dir, "images"), ignore_errors=True)


def generate(args) -> dict:
    config = SceneConfig(long_side=args.image_size, people=tuple(args.people),
                         person_height=tuple(args.person_height), small_people=tuple(args.small_people),
                         crowd_probability=args.crowd_probability, partial_probability=args.partial_probability,
                         near_probability=args.near_probability, back_view_probability=args.back_view_probability,
                         joint_marker_shade=args.joint_marker_shade, animals=tuple(args.animals),
                         animal_height=tuple(args.animal_height))
    config.check()
    if args.workers < 1:
        raise SyntheticDataError(f"--workers = {args.workers}: need at least 1")
    for name in ("train_images", "val_images", "mix_images", "video_frames", "video_walkers"):
        if getattr(args, name) < 0:
            raise SyntheticDataError(f"--{name.replace('_', '-')} = {getattr(args, name)}: need 0 or more")
    main_set = load_keypoint_set(args.keypoints)
    mix_set = load_keypoint_set(args.mix_keypoints)
    animal_set = load_keypoint_set(args.animal_keypoints)
    also_sets = tuple(load_keypoint_set(name) for name in args.also_keypoints)
    for keypoint_set in (main_set, mix_set, *also_sets):
        keypoint_sources(keypoint_set)  # fail on an unplaceable keypoint before writing
    animal_keypoint_sources(animal_set)
    if len({s.name for s in also_sets} | {main_set.name}) != len(also_sets) + 1:
        raise SyntheticDataError("--also-keypoints: each set needs its own name, other than --keypoints' set")
    out = args.output_dir
    if args.mix_images and mix_set.name in ("train", "val", "video"):
        raise SyntheticDataError(f"--mix-keypoints set '{mix_set.name}' would write over the split of that name")
    splits = [("train", "train", args.train_images, main_set), ("val", "val", args.val_images, main_set),
              (mix_set.name, "mix", args.mix_images, mix_set)]
    splits = [s for s in splits if s[2] > 0]
    for name, *_ in splits:
        _prepare_split_dir(os.path.join(out, name), args.overwrite)
    if args.video_frames and os.path.exists(os.path.join(out, "video")) and not args.overwrite:
        raise SyntheticDataError(f"{os.path.join(out, 'video')} already exists; pass --overwrite to replace it")
    manifest = {"seed": args.seed, "scene_config": scene_config_record(config), "splits": {}}
    for name, stream, count, keypoint_set in splits:
        split_dir = os.path.join(out, name)
        also = also_sets if stream in ("train", "val") else ()
        coco = write_split(split_dir, count, keypoint_set, config, args.seed, stream, args.image_format,
                           not args.no_progress, args.workers, animal_set, also)
        manifest["splits"][name] = {
            "labels": os.path.join(name, LABELS_NAME), "images_folder": os.path.join(name, "images"),
            "keypoint_set": keypoint_set.name, "images": len(coco["images"]),
            "people": sum(1 for a in coco["annotations"] if a["num_keypoints"] > 0 and a["category_id"] == 1),
            "crowd_regions": sum(a["iscrowd"] for a in coco["annotations"]),
            **({"also_labels": {s.name: os.path.join(name, also_labels_name(s)) for s in also}} if also else {})}
        if config.animals[1]:
            manifest["splits"][name].update(
                animal_keypoint_set=animal_set.name,
                animals=sum(1 for a in coco["annotations"]
                            if a["num_keypoints"] > 0 and a["category_id"] == ANIMAL_CATEGORY_ID))
    if args.video_frames:
        info = write_walk_video(os.path.join(out, "video"), main_set, config, args.seed, args.video_frames,
                                args.video_fps, args.video_walkers, not args.no_progress)
        info["video"] = os.path.join("video", info["video"])
        info["keypoints"] = os.path.join("video", info["keypoints"])
        manifest["video"] = info
    _write_json_atomic(manifest, os.path.join(out, "manifest.json"))
    return manifest


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = generate(args)
    except (SyntheticDataError, KeypointSetError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    for name, split in manifest["splits"].items():
        animals = f", {split['animals']} animals ({split['animal_keypoint_set']})" if "animals" in split else ""
        print(f"{name}: {split['images']} images, {split['people']} annotated people, {split['crowd_regions']} "
              f"crowd regions ({split['keypoint_set']}){animals} -> {os.path.join(args.output_dir, split['labels'])}")
    if "video" in manifest:
        video = manifest["video"]
        print(f"video: {video['frames']} frames at {video['fps']:g} fps -> "
              f"{os.path.join(args.output_dir, video['video'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pictures of a validation: what the model found beside the ground truth, one image each, and a contact sheet of
the worst images, so that a user sees at a glance which people were missed or badly placed.

Each picture puts the ground truth (left) beside the predictions (right). People are matched as PCK matches them
(greedy by OKS with the ground truth's sigmas, lwpose/evaluation/pck.py), and a pair counts where its OKS reaches
0.5, the lowest threshold COCO's AP counts a detection at: a matched pair shares a box colour and its OKS is written
on both; a ground-truth person without a match is outlined in red and marked MISSED; a prediction
without a person is crossed out in red and marked FALSE, unless it stands in a region COCO ignores (a crowd, or a
person labelled without keypoints), where it is outlined in grey. An image's score is the mean OKS over its people
and its false positives (a missed person and a false positive count 0), and the contact sheet shows the lowest first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from lwpose.evaluation.coco import COCO_COORDINATE_OFFSET, KeypointGroundTruth, image_path
from lwpose.evaluation.pck import match_people, oks_matrix
from lwpose.images import ImageReadError, read_image
from lwpose.inference.drawing import PoseDrawer, id_colour
from lwpose.inference.grouping import People

MISS_COLOUR = (0, 0, 255)  # BGR red
IGNORED_COLOUR = (160, 160, 160)
MATCH_OKS = 0.5  # below it COCO's AP counts a pair at no threshold: the person is missed, the prediction false
TILE_HEIGHT = 240  # the contact sheet's tiles: a side-by-side picture fits in twice this wide, this high
LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class ImageMatch:
    """One image's people matched: ground truth (G, K, 3) and predictions (P, K, 3) in image pixels (pixel centres at
    integers), the prediction matched to each person (-1: missed) and its OKS."""

    image_id: object
    file_name: str
    truth: np.ndarray
    boxes: np.ndarray  # (G, 4) x, y, w, h of the ground truth
    predictions: np.ndarray
    scores: np.ndarray  # (P,) the predictions' scores
    matched: np.ndarray  # (G,) prediction index or -1
    oks: np.ndarray  # (G,) OKS with the matched prediction, 0 where missed
    ignored: np.ndarray  # (P,) bool: an unmatched prediction inside a region the evaluation ignores

    @property
    def false_positives(self) -> np.ndarray:
        """Indices of the predictions no person took, outside the ignored regions."""
        unmatched = np.setdiff1d(np.arange(len(self.predictions)), self.matched[self.matched >= 0])
        return unmatched[~self.ignored[unmatched]]

    @property
    def score(self) -> float:
        """Mean OKS over the people and the false positives (each false positive 0); 1 for an image with neither."""
        count = len(self.truth) + len(self.false_positives)
        return float(self.oks.sum() / count) if count else 1.0


def match_image(gt: KeypointGroundTruth, image: dict, detections: list[dict]) -> ImageMatch:
    """Match one image's detections (COCO results in the ground truth's keypoint set) to its labelled people."""
    count = gt.keypoint_set.num_keypoints
    annotations = gt.annotations_of(image["id"])
    people = [a for a in annotations if not a["iscrowd"] and a.get("num_keypoints", 0) > 0]
    ignore_boxes = np.asarray([a["bbox"] for a in annotations if a["iscrowd"] or a.get("num_keypoints", 0) == 0],
                              np.float64).reshape(-1, 4)
    truth = np.asarray([a["keypoints"] for a in people], np.float64).reshape(-1, count, 3)
    boxes = np.asarray([a["bbox"] for a in people], np.float64).reshape(-1, 4)
    areas = np.asarray([a["area"] for a in people], np.float64)
    predictions = np.asarray([d["keypoints"] for d in detections], np.float64).reshape(-1, count, 3)
    scores = np.asarray([d["score"] for d in detections], np.float64)
    matched = match_people(truth, areas, predictions, gt.keypoint_set.sigmas_array)
    oks = np.zeros(len(truth))
    if len(predictions):
        similarity = oks_matrix(truth, areas, predictions, gt.keypoint_set.sigmas_array)
        oks[matched >= 0] = similarity[np.flatnonzero(matched >= 0), matched[matched >= 0]]
    matched[oks < MATCH_OKS] = -1
    oks[matched < 0] = 0.0
    ignored = np.array([_inside_any(p, ignore_boxes) for p in predictions], bool)
    # COCO coordinates put pixel centres at .5; drawing puts them at integers
    for points in (truth, predictions):
        points[..., :2] -= COCO_COORDINATE_OFFSET
    boxes = boxes - np.array([COCO_COORDINATE_OFFSET, COCO_COORDINATE_OFFSET, 0, 0])
    return ImageMatch(image["id"], image["file_name"], truth, boxes, predictions, scores, matched, oks, ignored)


def _inside_any(prediction: np.ndarray, boxes: np.ndarray) -> bool:
    """Whether the centre of a prediction's keypoints lies in one of `boxes` (x, y, w, h)."""
    present = prediction[:, 2] > 0
    if not present.any() or not len(boxes):
        return False
    x, y = prediction[present, :2].mean(axis=0)
    return bool(((boxes[:, 0] <= x) & (x <= boxes[:, 0] + boxes[:, 2])
                 & (boxes[:, 1] <= y) & (y <= boxes[:, 1] + boxes[:, 3])).any())


def _people(keypoints: np.ndarray, names: tuple[str, ...]) -> People:
    present = keypoints[..., 2] > 0
    drawn = np.where(present[..., None], keypoints, -1.0).astype(np.float32)
    drawn[..., 2] = present
    return People(drawn, np.zeros(len(keypoints), np.float32), present.sum(-1).astype(np.int32), names)


def _extent(keypoints: np.ndarray) -> tuple[int, int, int, int] | None:
    present = keypoints[:, 2] > 0
    if not present.any():
        return None
    x0, y0 = keypoints[present, :2].min(axis=0)
    x1, y1 = keypoints[present, :2].max(axis=0)
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


def _label(canvas: np.ndarray, text: str, x: int, y: int, colour, scale: float) -> None:
    y = max(y, int(14 * scale) + 2)
    cv2.putText(canvas, text, (x, y), LABEL_FONT, 0.45 * scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), LABEL_FONT, 0.45 * scale, colour, 1, cv2.LINE_AA)


def draw_match(image: np.ndarray, match: ImageMatch, drawer: PoseDrawer) -> np.ndarray:
    """The ground truth (left) beside the predictions (right), matched pairs in one colour with their OKS, missed
    people and false positives in red."""
    scale = max(1.0, min(image.shape[:2]) / 360)
    thickness = max(1, round(scale))
    names = drawer.keypoint_set.keypoints
    left, right = image.copy(), image.copy()
    drawer.draw(left, _people(match.truth, names))
    drawer.draw(right, _people(match.predictions, names))
    for g, (x, y, w, h) in enumerate(match.boxes):
        p = match.matched[g]
        top_left, bottom_right = (int(x), int(y)), (int(x + w), int(y + h))
        if p < 0:
            cv2.rectangle(left, top_left, bottom_right, MISS_COLOUR, thickness + 1)
            _label(left, "MISSED", int(x), int(y) - 4, MISS_COLOUR, scale)
            continue
        colour = id_colour(g)
        cv2.rectangle(left, top_left, bottom_right, colour, thickness)
        _label(left, f"OKS {match.oks[g]:.2f}", int(x), int(y) - 4, colour, scale)
        extent = _extent(match.predictions[p])
        if extent is not None:
            cv2.rectangle(right, extent[:2], extent[2:], colour, thickness)
            _label(right, f"OKS {match.oks[g]:.2f}", extent[0], extent[1] - 4, colour, scale)
    for p in np.flatnonzero(match.ignored):
        if p in match.matched:
            continue
        extent = _extent(match.predictions[p])
        if extent is not None:
            cv2.rectangle(right, extent[:2], extent[2:], IGNORED_COLOUR, thickness)
    for p in match.false_positives:
        extent = _extent(match.predictions[p])
        if extent is None:
            continue
        x0, y0, x1, y1 = extent
        cv2.rectangle(right, (x0, y0), (x1, y1), MISS_COLOUR, thickness + 1)
        cv2.line(right, (x0, y0), (x1, y1), MISS_COLOUR, thickness)
        cv2.line(right, (x0, y1), (x1, y0), MISS_COLOUR, thickness)
        _label(right, "FALSE", x0, y0 - 4, MISS_COLOUR, scale)
    _label(left, "ground truth", 4, 0, (255, 255, 255), scale)
    _label(right, f"predicted (image score {match.score:.2f})", 4, 0, (255, 255, 255), scale)
    gap = np.full((image.shape[0], max(2, thickness * 2), 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def contact_sheet(pictures: list[tuple[str, np.ndarray]], columns: int = 3,
                  tile_height: int = TILE_HEIGHT) -> np.ndarray:
    """Pictures in rows, each scaled to fit a tile twice `tile_height` wide and `tile_height` high, captioned."""
    caption_height, tile_width = 18, 2 * tile_height
    tiles = []
    for caption, picture in pictures:
        ratio = min(tile_width / picture.shape[1], tile_height / picture.shape[0])
        small = cv2.resize(picture, (max(1, round(picture.shape[1] * ratio)), max(1, round(picture.shape[0] * ratio))),
                           interpolation=cv2.INTER_AREA)
        tile = np.full((tile_height + caption_height, tile_width, 3), 32, np.uint8)
        tile[caption_height:caption_height + small.shape[0], :small.shape[1]] = small
        _label(tile, caption, 2, 13, (255, 255, 255), 0.9)
        tiles.append(tile)
    rows = []
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        row += [np.full_like(tiles[0], 32)] * (columns - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0) if rows else np.full((caption_height, tile_width, 3), 32, np.uint8)


@dataclass
class VisualisationReport:
    folder: str
    pictures: list[str]  # files written, one per image drawn
    worst: list[tuple[str, float]]  # (file name, score) of the contact sheet's images, worst first
    sheet: str | None  # the contact sheet's path
    unreadable: list[str]


def write_visualisations(gt: KeypointGroundTruth, detections: list[dict], images_folder: str, folder: str,
                         every: int = 1, worst: int = 16, progress: bool = True,
                         image_ids: list | None = None) -> VisualisationReport:
    """Pictures of the validated images into `folder`: every `every`-th image (0: none) as `<name>.jpg`, and
    `worst_images.jpg`, a contact sheet of the `worst` images with the lowest score (0: none)."""
    if every < 0 or worst < 0:
        raise ValueError("the picture interval and the number of worst images cannot be negative")
    os.makedirs(folder, exist_ok=True)
    drawer = PoseDrawer(gt.keypoint_set)
    by_image: dict = {}
    for detection in detections:
        by_image.setdefault(detection["image_id"], []).append(detection)
    images = gt.images if image_ids is None else [im for im in gt.images if im["id"] in set(image_ids)]
    matches = [match_image(gt, image, by_image.get(image["id"], [])) for image in images]
    # lowest score first; among equals, the images with more people (missed ones weigh more than false positives)
    ranked = sorted(range(len(matches)), key=lambda i: (matches[i].score, -len(matches[i].truth), i))[:worst]
    wanted = {i for i in range(len(matches)) if every and i % every == 0} | set(ranked)
    written, unreadable, pictures = [], [], {}
    for i in tqdm(sorted(wanted), desc="drawing", unit="img", disable=not progress, dynamic_ncols=True):
        match = matches[i]
        try:
            image = read_image(image_path(images_folder, match.file_name))
        except ImageReadError:
            unreadable.append(match.file_name)
            continue
        picture = draw_match(image, match, drawer)
        if i in ranked:
            pictures[i] = picture
        if every and i % every == 0:
            name = os.path.splitext(match.file_name.replace("/", "_").replace(os.sep, "_"))[0] + ".jpg"
            path = os.path.join(folder, name)
            cv2.imwrite(path, picture)
            written.append(path)
    sheet = None
    worst_list = [(matches[i].file_name, matches[i].score) for i in ranked if i in pictures]
    if worst and pictures:
        sheet = os.path.join(folder, "worst_images.jpg")
        cv2.imwrite(sheet, contact_sheet([(f"{matches[i].score:.2f} {matches[i].file_name}", pictures[i])
                                          for i in ranked if i in pictures]))
    return VisualisationReport(folder, written, worst_list, sheet, unreadable)

"""Prepared training labels: one JSON file (plain data, never pickle), written by scripts/prepare_train_labels.py.

Layout (format "lwpose-prepared-labels", version 1):

    keypoint_set   the target set (the model's), as a keypoint-set JSON object
    sources[]      one per annotation file: name, labels (path), images_folder (or null), keypoint_set (the
                   file's own set), labelled (one bool per target keypoint: does this source label it at all?),
                   conversion (how target keypoints were made from the source's, for people to read),
                   pseudo_weight (only for a filled file, lwpose/labels/filled_file.py: the loss weight of its
                   pseudo-labels)
    settings       the selection thresholds used (min_keypoints, min_area, min_center_distance)
    images[]       images with at least one training sample:
                   source (index into sources), id, file_name, width, height,
                   people[]: id, bbox [x, y, w, h] as in the source file (pixel edges at integers), area,
                             keypoints [[x, y, v] per target keypoint]: pixel centres at integers (COCO x - 0.5),
                             v = 2 visible, 1 labelled but occluded, 0 labelled as absent (COCO v=0; trained as
                             background). A keypoint the source does not label (labelled[j] false) is [0, 0, 0]
                             and gets no loss at all.
                             pseudo: (only where there are some) indices of the keypoints that are pseudo-labels
                             (filled by a model, not labelled: trained with the source's pseudo_weight)
                   ignore[]: id, reason ("crowd", "no_keypoints", "no_target_keypoints"), rle (COCO compressed
                             RLE: size [h, w], counts string): regions with zero loss weight
    samples[]      [image index, person index]: one training sample per main person (the crop is centred on
                   it; every person of the image gets targets)
    summary        counts written by the preparation (people kept, dropped and why, ignore regions)
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lwpose.datasets.coco_reader import AnnotationError, CocoKeypointFile, CocoPerson
from lwpose.datasets.conversion import KeypointConversion
from lwpose.errors import LwposeError
from lwpose.keypoints import KeypointSet, KeypointSetError, load_keypoint_set

FORMAT = "lwpose-prepared-labels"
FORMAT_VERSION = 2  # 2 adds pseudo-labels; files without any are still written as version 1
DEFAULT_PSEUDO_WEIGHT = 0.5


class PreparedLabelsError(LwposeError, ValueError):
    """A prepared-labels file that cannot be used; the message names the file and the entry."""


# A training sample's person needs this share of the target set's keypoints labelled, rounded up: 5 for COCO's 17 and
# lwop18's 18 (the reference's 5), 2 for a set of 5.
MIN_KEYPOINTS_SHARE = 0.25
# The preparation warns when its thresholds leave more than this share of the people with keypoints out of the
# training samples.
DROPPED_PEOPLE_WARNING_SHARE = 1 / 3


def default_min_keypoints(keypoint_set: KeypointSet) -> int:
    """A multi-class set's instance has only its own class's keypoints: the share of the smallest class's."""
    smallest = min(len(c.channels) for c in keypoint_set.classes)
    return max(1, math.ceil(MIN_KEYPOINTS_SHARE * smallest))


@dataclass(frozen=True)
class SelectionSettings:
    """Which people become training samples; the defaults are the reference's, with `min_keypoints` scaled to the
    target set (None: `default_min_keypoints`, counted in the target set)."""

    min_keypoints: int | None = None
    min_area: float = 32 * 32
    min_center_distance: float = 0.3  # skip a person whose box centre is this close (x the kept box's width)

    def for_set(self, keypoint_set: KeypointSet) -> "SelectionSettings":
        """These settings with `min_keypoints` filled in for `keypoint_set`."""
        if self.min_keypoints is not None:
            return self
        return SelectionSettings(default_min_keypoints(keypoint_set), self.min_area, self.min_center_distance)


@dataclass
class Source:
    name: str
    labels: str
    images_folder: str | None
    keypoint_set: KeypointSet
    labelled: np.ndarray  # (K_target,) bool
    conversion: str = ""
    pseudo_weight: float | None = None  # a filled file's: the loss weight of its pseudo-labels


@dataclass
class PreparedImage:
    source: int
    image_id: object
    file_name: str
    width: int
    height: int
    person_ids: list
    bboxes: np.ndarray  # (P, 4) float64, as in the source file
    areas: np.ndarray  # (P,)
    keypoints: np.ndarray  # (P, K, 3) float32, target set, pixel centres at integers
    ignore: list[dict] = field(default_factory=list)  # {"id", "reason", "rle": {"size", "counts"}}
    pseudo: np.ndarray | None = None  # (P, K) bool: pseudo-labels (a filled file's images only)


@dataclass
class PreparedLabels:
    keypoint_set: KeypointSet
    sources: list[Source]
    images: list[PreparedImage]
    samples: np.ndarray  # (N, 2) int64: image index, person index
    settings: SelectionSettings = field(default_factory=SelectionSettings)
    summary: dict = field(default_factory=dict)
    path: str = "<memory>"

    def __len__(self) -> int:
        return len(self.samples)

    # ---------------------------------------------------------------- writing
    def to_json(self) -> dict:
        with_pseudo = any(s.pseudo_weight is not None for s in self.sources)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if with_pseudo else 1,
            "keypoint_set": self.keypoint_set.to_dict(),
            "sources": [{"name": s.name, "labels": s.labels, "images_folder": s.images_folder,
                         "keypoint_set": s.keypoint_set.to_dict(), "labelled": [bool(v) for v in s.labelled],
                         "conversion": s.conversion,
                         **({} if s.pseudo_weight is None else {"pseudo_weight": s.pseudo_weight})}
                        for s in self.sources],
            "settings": {"min_keypoints": self.settings.min_keypoints, "min_area": self.settings.min_area,
                         "min_center_distance": self.settings.min_center_distance},
            "images": [{"source": im.source, "id": im.image_id, "file_name": im.file_name, "width": im.width,
                        "height": im.height,
                        "people": [{"id": pid, "bbox": [round(float(v), 2) for v in bbox],
                                    "area": round(float(area), 2),
                                    "keypoints": [[round(float(x), 2), round(float(y), 2), int(v)]
                                                  for x, y, v in kps],
                                    **({"pseudo": [int(j) for j in np.flatnonzero(im.pseudo[p])]}
                                       if im.pseudo is not None and im.pseudo[p].any() else {})}
                                   for p, (pid, bbox, area, kps) in enumerate(zip(im.person_ids, im.bboxes, im.areas,
                                                                                  im.keypoints))],
                        "ignore": im.ignore} for im in self.images],
            "samples": [[int(i), int(p)] for i, p in self.samples],
            "summary": self.summary,
        }

    def save(self, path: str) -> None:
        """Atomic write: a crash leaves the previous file or none, never half of one."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, separators=(",", ":"))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a labels file is not a secret
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.path = path


def load_prepared_labels(path: str) -> PreparedLabels:
    """Read and check a prepared-labels file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise PreparedLabelsError(f"prepared labels {path} do not exist (make them with "
                                  "scripts/prepare_train_labels.py)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PreparedLabelsError(f"prepared labels {path}: not JSON ({e}); an old pickle from the reference? "
                                  "prepare the labels again with scripts/prepare_train_labels.py") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PreparedLabelsError(f"prepared labels {path}: not an lwpose prepared-labels file (no "
                                  f"'format': '{FORMAT}')")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise PreparedLabelsError(f"prepared labels {path}: format version {data['format_version']} is newer than "
                                  f"this code reads ({FORMAT_VERSION})")

    def fail(where: str, message: str) -> PreparedLabelsError:
        return PreparedLabelsError(f"prepared labels {path}: {where}: {message}")

    try:
        keypoint_set = load_keypoint_set(data["keypoint_set"])
        count = keypoint_set.num_keypoints
        sources = []
        for i, s in enumerate(data["sources"]):
            labelled = np.asarray(s["labelled"], bool)
            if labelled.shape != (count,):
                raise fail(f"sources[{i}]", f"'labelled' has {labelled.size} entries for {count} keypoints")
            pseudo_weight = s.get("pseudo_weight")
            if pseudo_weight is not None and not (isinstance(pseudo_weight, (int, float)) and 0 <= pseudo_weight):
                raise fail(f"sources[{i}]", f"'pseudo_weight' {pseudo_weight!r} is not a weight (a number >= 0)")
            sources.append(Source(s["name"], s["labels"], s.get("images_folder"),
                                  load_keypoint_set(s["keypoint_set"]), labelled, s.get("conversion", ""),
                                  None if pseudo_weight is None else float(pseudo_weight)))
        images = []
        for i, im in enumerate(data["images"]):
            if not 0 <= im["source"] < len(sources):
                raise fail(f"images[{i}]", f"source {im['source']} does not exist")
            people = im["people"]
            keypoints = np.asarray([p["keypoints"] for p in people], np.float32).reshape(len(people), -1, 3) \
                if people else np.zeros((0, count, 3), np.float32)
            if keypoints.shape[1] != count:
                raise fail(f"images[{i}] ({im['file_name']})",
                           f"people have {keypoints.shape[1]} keypoints, keypoint set '{keypoint_set.name}' has "
                           f"{count}")
            if not np.isfinite(keypoints).all():
                raise fail(f"images[{i}] ({im['file_name']})", "a keypoint is not a finite number")
            pseudo = None
            if any("pseudo" in p for p in people):
                pseudo = np.zeros(keypoints.shape[:2], bool)
                for n, person in enumerate(people):
                    indices = np.asarray(person.get("pseudo", []), np.int64)
                    if ((indices < 0) | (indices >= count)).any() or sources[im["source"]].labelled[indices].any() \
                            or (keypoints[n, indices, 2] <= 0).any():
                        raise fail(f"images[{i}] ({im['file_name']}) person {n}",
                                   "'pseudo' must list keypoints the source does not label and the person has")
                    pseudo[n, indices] = True
                if sources[im["source"]].pseudo_weight is None:
                    raise fail(f"images[{i}] ({im['file_name']})", "pseudo-labels of a source without a "
                                                                   "'pseudo_weight'")
            images.append(PreparedImage(
                im["source"], im["id"], im["file_name"], int(im["width"]), int(im["height"]),
                [p["id"] for p in people], np.asarray([p["bbox"] for p in people], np.float64).reshape(-1, 4),
                np.asarray([p["area"] for p in people], np.float64), keypoints, list(im.get("ignore", [])), pseudo))
        samples = np.asarray(data["samples"], np.int64).reshape(-1, 2)
        for n, (i, p) in enumerate(samples):
            if not (0 <= i < len(images) and 0 <= p < len(images[i].person_ids)):
                raise fail(f"samples[{n}]", f"[{i}, {p}] points to no person")
        settings = SelectionSettings(**data.get("settings", {}))
    except (KeyError, TypeError, ValueError, KeypointSetError) as e:
        if isinstance(e, PreparedLabelsError):
            raise
        raise PreparedLabelsError(f"prepared labels {path}: malformed ({type(e).__name__}: {e})") from None
    return PreparedLabels(keypoint_set, sources, images, samples, settings, data.get("summary", {}), path)


# ------------------------------------------------------------------- building
def _ignore_rle(person: CocoPerson, height: int, width: int, where: str) -> dict:
    """A person's region (segmentation, else box) as one compressed RLE."""
    from pycocotools import mask as mask_utils

    segmentation = person.segmentation
    try:
        if isinstance(segmentation, dict) and "counts" in segmentation:
            size = segmentation.get("size")
            if size != [height, width]:
                raise AnnotationError(f"{where}: RLE size {size} differs from the image's [{height}, {width}]")
            if isinstance(segmentation["counts"], list):
                if sum(segmentation["counts"]) != height * width:
                    raise AnnotationError(f"{where}: RLE counts add up to {sum(segmentation['counts'])}, not "
                                          f"height x width = {height * width}")
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = {"size": size, "counts": segmentation["counts"].encode("ascii")}
        else:
            polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6] \
                if isinstance(segmentation, list) else []
            if polygons:
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            else:
                rle = mask_utils.frPyObjects(np.asarray([person.bbox], np.float64), height, width)[0]
        rle["counts"] = mask_utils.encode(np.asfortranarray(mask_utils.decode(rle)))["counts"]
    except AnnotationError:
        raise
    except Exception as e:  # pycocotools reports malformed masks in many ways
        raise AnnotationError(f"{where}: unreadable segmentation ({type(e).__name__}: {e})") from None
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def build_prepared_labels(coco: CocoKeypointFile, target: KeypointSet,
                          settings: SelectionSettings = SelectionSettings(),
                          images_folder: str | None = None, missing_images: set | frozenset = frozenset(),
                          source_name: str | None = None,
                          keypoint_map: Sequence[tuple[Sequence[str], str]] = (),
                          pseudo_weight: float | None = None, labelled: np.ndarray | None = None,
                          conversion_note: str | None = None) -> PreparedLabels:
    """Select training samples (the reference's rules, configurable), convert people to the target set (by name,
    after the explicit `keypoint_map` pairs), and turn crowds and people without keypoints into ignore regions.
    Images in `missing_images` are left out. A person's labelled keypoints are counted in the target set (after
    conversion; derived keypoints and pseudo-labels left out) against `settings.min_keypoints`. A filled file's
    pseudo-labels are kept apart from its labels, to be trained with `pseudo_weight` (default
    DEFAULT_PSEUDO_WEIGHT). `labelled` (K,) bool: the target keypoints the source labels (default: those its keypoint
    set has; a multi-class file read by datasets/class_labels.py gives the channels of the classes it labels
    exhaustively), with `conversion_note` saying how its classes were converted."""
    settings = settings.for_set(target)
    conversion = KeypointConversion.by_name(coco.keypoint_set, target, keypoint_map)
    if not conversion.labelled.any():
        raise AnnotationError(f"{coco.path}: keypoint set '{coco.keypoint_set.name}' shares no keypoint with "
                              f"'{target.name}'")
    labelled = conversion.labelled.copy() if labelled is None else np.asarray(labelled, bool).copy()
    if coco.labelled is not None:
        # A target keypoint is labelled where every source keypoint it is made of is; else, where a person has it,
        # it is a pseudo-label.
        for parts in (conversion.first, conversion.second):
            labelled &= (parts < 0) | coco.labelled[np.maximum(parts, 0)]
        pseudo_weight = DEFAULT_PSEUDO_WEIGHT if pseudo_weight is None else float(pseudo_weight)
    elif pseudo_weight is not None:
        raise AnnotationError(f"{coco.path}: a pseudo-label weight is given, but the file holds no pseudo-labels "
                              "(scripts/pseudo_label.py writes files that do)")
    # Keypoints a person has labelled, counted in the target set: those copied from the file (by name or alias) that
    # the source labels; a derived midpoint (lwop18's neck) restates two of them, a pseudo-label is no label.
    counted = (conversion.first >= 0) & (conversion.second < 0) & labelled
    counts = {"annotations": 0, "crowd_regions": 0, "people_without_keypoints": 0,
              "people_without_target_keypoints": 0, "people_with_keypoints": 0, "samples": 0,
              "dropped_too_few_keypoints": 0, "dropped_too_small": 0, "dropped_too_close": 0,
              "people_in_missing_images": 0, "images": len(coco.images), "images_missing": 0,
              "images_with_samples": 0}
    if coco.labelled is not None:
        counts["pseudo_keypoints"] = 0
    images, samples = [], []
    for image in coco.images:
        counts["annotations"] += len(image.people)
        if image.file_name in missing_images:
            counts["images_missing"] += 1
            counts["people_in_missing_images"] += len(image.people)
            continue
        people, ignore, kept_centers, main = [], [], [], []
        for person in image.people:
            where = f"{coco.path}: annotation {person.annotation_id}"
            if person.iscrowd:
                counts["crowd_regions"] += 1
                ignore.append({"id": person.annotation_id, "reason": "crowd",
                               "rle": _ignore_rle(person, image.height, image.width, where)})
                continue
            converted = conversion.convert(person.keypoints)
            if person.num_labelled == 0 or not (converted[:, 2] > 0).any():
                reason = "no_keypoints" if person.num_labelled == 0 else "no_target_keypoints"
                counts["people_without_keypoints" if reason == "no_keypoints" else
                       "people_without_target_keypoints"] += 1
                ignore.append({"id": person.annotation_id, "reason": reason,
                               "rle": _ignore_rle(person, image.height, image.width, where)})
                continue
            counts["people_with_keypoints"] += 1
            people.append((person, converted))
            if np.count_nonzero(converted[counted, 2] > 0) < settings.min_keypoints:
                counts["dropped_too_few_keypoints"] += 1
                continue
            if person.area < settings.min_area:
                counts["dropped_too_small"] += 1
                continue
            x, y, w, h = person.bbox
            center = np.array([x + w / 2, y + h / 2])
            if any(np.linalg.norm(center - c) < settings.min_center_distance * cw for c, cw in kept_centers):
                counts["dropped_too_close"] += 1
                continue
            kept_centers.append((center, w))
            main.append(len(people) - 1)
        if not main:
            continue
        index = len(images)
        keypoints = np.asarray([c for _, c in people], np.float32)
        pseudo = None
        if coco.labelled is not None:
            pseudo = (keypoints[..., 2] > 0) & ~labelled
            counts["pseudo_keypoints"] += int(pseudo.sum())
        images.append(PreparedImage(
            0, image.image_id, image.file_name, image.width, image.height, [p.annotation_id for p, _ in people],
            np.asarray([p.bbox for p, _ in people], np.float64), np.asarray([p.area for p, _ in people]),
            keypoints, ignore, pseudo))
        samples.extend([index, m] for m in main)
    counts["samples"] = len(samples)
    counts["images_with_samples"] = len(images)
    counts["ignore_regions_in_kept_images"] = sum(len(im.ignore) for im in images)
    source = Source(source_name or os.path.splitext(os.path.basename(coco.path))[0], os.path.abspath(coco.path),
                    os.path.abspath(images_folder) if images_folder else None, coco.keypoint_set,
                    labelled, conversion_note or conversion.describe(), pseudo_weight)
    return PreparedLabels(target, [source], images, np.asarray(samples, np.int64).reshape(-1, 2), settings,
                          counts)


def too_many_dropped(summary: dict) -> bool:
    """Whether the thresholds (too few keypoints, too small) left more than DROPPED_PEOPLE_WARNING_SHARE of the
    people with keypoints out of the training samples."""
    dropped = summary.get("dropped_too_few_keypoints", 0) + summary.get("dropped_too_small", 0)
    return dropped > DROPPED_PEOPLE_WARNING_SHARE * summary.get("people_with_keypoints", 0)


def combine_prepared_labels(parts: Sequence[PreparedLabels]) -> PreparedLabels:
    """One set of prepared labels with every source of `parts` (all in the same target set), in order: images and
    samples renumbered, each source's summary kept under its name."""
    target = parts[0].keypoint_set
    sources, images, samples, summary = [], [], [], {"sources": {}}
    for part in parts:
        if part.keypoint_set.keypoints != target.keypoints:
            raise ValueError(f"prepared labels {part.path} are in keypoint set '{part.keypoint_set.name}', not "
                             f"'{target.name}'")
        for source in part.sources:
            if source.name in summary["sources"]:
                raise ValueError(f"two sources are called '{source.name}'; give each its own name")
            summary["sources"][source.name] = part.summary
        source_offset, image_offset = len(sources), len(images)
        sources.extend(part.sources)
        for image in part.images:
            images.append(PreparedImage(**{**image.__dict__, "source": image.source + source_offset}))
        samples.append(part.samples + np.array([image_offset, 0]))
    return PreparedLabels(target, sources, images, np.concatenate(samples).reshape(-1, 2), parts[0].settings,
                          summary)

"""Mix recipes: one JSON file naming the datasets to train (and evaluate) together, the keypoint set they meet in,
and how batches mix them. Relative paths are relative to the recipe file.

    {
      "name": "people_head_top",
      "target": {"mode": "combine", "keypoints": "lwop18_head_top.json"},
      "sources": [
        {"name": "coco", "format": "coco", "labels": "person_keypoints_train2017.json", "images_folder": "train2017",
         "keypoints": "coco", "source_ratio": 0.5},
        {"name": "mpii", "format": "mpii", "labels": "mpii_train.json", "images_folder": "mpii/images",
         "keypoints": "mpii", "source_ratio": 0.5, "sample_ratio_factor": 2,
         "keypoint_map": [["thorax", "neck"]]}
      ],
      "selection": {"min_keypoints": 5, "min_area": 1024, "min_center_distance": 0.3}   (default min_keypoints: a
                                                                                     quarter of the target's)
    }

target: `mode` "merge" (the target is one source's own set; the others map into it and their extra joints are
  dropped) or "combine" (a union of the sources' sets: `keypoints` names a set made by scripts/make_keypoint_set.py,
  or `union` describes one inline, as lwpose/keypoints/union.py reads it).
sources[]: `format` "coco" (COCO keypoint JSON) or "mpii" (MPII's list format, datasets/mpii_reader.py);
  `keypoints` the set the file is labelled in (checked against the file); `keypoint_map` explicit [source, target]
  pairs tried before names (a source may be a pair of names: their midpoint, e.g. [["left_hip", "right_hip"],
  "pelvis"]); `source_ratio` the share of every batch taken from this source (all sources or none; they sum to 1;
  none: in proportion to each source's samples per epoch); `sample_ratio_factor` this source's samples per epoch
  as a multiple of its size (default 1); `output_keypoint_indices` which model keypoint each of the source's keypoints
  is scored with in val.py --mix (-1: none; default: the inverse of the conversion); `val_labels` and
  `val_images_folder` what val.py --mix scores (default: `labels` and `images_folder`); `pseudo_weight` the loss
  weight of the pseudo-labels of a filled file (scripts/pseudo_label.py; `labels` is then the filled file and
  `keypoints` the model's set it is written in; default 0.5; val.py --mix should get the source's own `val_labels`).
  With a multi-class target (scripts/make_keypoint_set.py --classes), a COCO source's categories are its classes
  (datasets/class_labels.py): `classes` maps a category name to a class where they differ ({"dog": "animal"}),
  `exhaustive` lists the classes the source labels exhaustively (default: every class it has a category for; the
  others are masked in its samples, never trained as background), and `keypoints` may be left out (each category is
  checked against its class's keypoints).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from lwpose.datasets.class_labels import read_coco_classes
from lwpose.datasets.coco_reader import (AnnotationError, CocoKeypointFile, as_coco_ground_truth, find_missing_images,
                                         read_annotation_json, read_coco_keypoints)
from lwpose.datasets.conversion import KeypointConversion
from lwpose.datasets.mpii_reader import read_mpii_keypoints
from lwpose.datasets.prepared_labels import (PreparedLabels, SelectionSettings, build_prepared_labels,
                                             combine_prepared_labels)
from lwpose.errors import LwposeError
from lwpose.keypoints import KeypointSet, KeypointSetError, load_keypoint_set, names_a_file
from lwpose.keypoints.union import build_union_set

FORMATS = ("coco", "mpii")
MODES = ("merge", "combine")
RECIPE_ENTRIES = ("name", "description", "target", "sources", "selection")
TARGET_ENTRIES = ("mode", "keypoints", "union")
SOURCE_ENTRIES = ("name", "format", "labels", "images_folder", "keypoints", "keypoint_map", "source_ratio",
                  "sample_ratio_factor", "output_keypoint_indices", "val_labels", "val_images_folder", "pseudo_weight",
                  "classes", "exhaustive")
RATIO_TOLERANCE = 1e-3


class RecipeError(LwposeError, ValueError):
    """A mix recipe that cannot be used; the message names the recipe file and the entry."""


@dataclass
class MixSource:
    name: str
    format: str
    labels: str
    images_folder: str
    keypoint_set: KeypointSet  # the set the file is labelled in
    keypoint_map: tuple = ()  # ((source names...), target name) pairs
    source_ratio: float | None = None
    sample_ratio_factor: float = 1.0
    output_keypoint_indices: tuple[int, ...] | None = None
    val_labels: str | None = None
    val_images_folder: str | None = None
    pseudo_weight: float | None = None  # loss weight of a filled file's pseudo-labels (None: the default)
    category_classes: dict | None = None  # a multi-class target's: {category name: class name}
    exhaustive: tuple[str, ...] | None = None  # a multi-class target's: classes labelled exhaustively (None: all)
    entry: str = ""  # where it stands in the recipe, for messages: "sources[1] ('aic')"


@dataclass
class MixRecipe:
    path: str
    name: str
    mode: str
    target: KeypointSet
    sources: list[MixSource]
    selection: SelectionSettings = field(default_factory=SelectionSettings)

    def fail(self, entry: str, message: str) -> RecipeError:
        return RecipeError(f"recipe {self.path}: {entry}: {message}")

    @property
    def source_ratios(self) -> list[float] | None:
        """The per-batch shares the recipe gives, or None (then in proportion to the samples per epoch)."""
        ratios = [s.source_ratio for s in self.sources]
        return None if ratios[0] is None else ratios


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_mix_recipe(path: str) -> MixRecipe:
    """Read and check a recipe: every entry, path, keypoint set, keypoint name and ratio, before anything is read
    from the datasets. Whether each file matches its declared set is checked when it is read."""
    def fail(entry: str, message: str) -> RecipeError:
        return RecipeError(f"recipe {path}: {entry}: {message}")

    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: expected a JSON object with 'target' and 'sources'")
    unknown = sorted(set(data) - set(RECIPE_ENTRIES))
    if unknown:
        raise fail("top level", f"unknown entries {unknown} (known: {', '.join(RECIPE_ENTRIES)})")
    folder = os.path.dirname(os.path.abspath(path))

    def resolve(value, entry: str, must_exist: str | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise fail(entry, "expected a path")
        full = value if os.path.isabs(value) else os.path.normpath(os.path.join(folder, value))
        if must_exist == "file" and not os.path.isfile(full):
            raise fail(entry, f"{full} does not exist")
        if must_exist == "folder" and not os.path.isdir(full):
            raise fail(entry, f"folder {full} does not exist")
        return full

    def keypoint_set(value, entry: str) -> KeypointSet:
        if not isinstance(value, str) or not value:
            raise fail(entry, f"{value!r}: expected a keypoint set (a shipped name or a JSON file)")
        try:
            if names_a_file(value):
                value = resolve(value, entry, "file")
            return load_keypoint_set(value)
        except KeypointSetError as e:
            raise fail(entry, str(e)) from None

    target_data = data.get("target")
    if not isinstance(target_data, dict):
        raise fail("target", "expected {'mode': 'merge' | 'combine', 'keypoints': SET} or {'mode': 'combine', "
                             "'union': {...}}")
    unknown = sorted(set(target_data) - set(TARGET_ENTRIES))
    if unknown:
        raise fail("target", f"unknown entries {unknown} (known: {', '.join(TARGET_ENTRIES)})")
    mode = target_data.get("mode")
    if mode not in MODES:
        raise fail("target.mode", f"{mode!r}: expected one of {', '.join(MODES)}")
    if ("keypoints" in target_data) == ("union" in target_data):
        raise fail("target", "give either 'keypoints' (a keypoint set) or 'union' (a union to build), not both")
    if "union" in target_data:
        if mode != "combine":
            raise fail("target.union", "a union is the target of mode 'combine'")
        union = dict(target_data["union"]) if isinstance(target_data["union"], dict) else target_data["union"]
        if isinstance(union, dict) and isinstance(union.get("sets"), list):
            union["sets"] = [resolve(s, f"target.union.sets[{i}]", "file")
                             if isinstance(s, str) and names_a_file(s) else s
                             for i, s in enumerate(union["sets"])]
        try:
            target = build_union_set(union, where=f"recipe {path}: target.union")
        except KeypointSetError as e:
            raise RecipeError(str(e)) from None
    else:
        target = keypoint_set(target_data["keypoints"], "target.keypoints")

    sources_data = data.get("sources")
    if not isinstance(sources_data, list) or not sources_data:
        raise fail("sources", "expected a non-empty list of sources")
    sources: list[MixSource] = []
    for i, entry_data in enumerate(sources_data):
        entry = f"sources[{i}]"
        if not isinstance(entry_data, dict):
            raise fail(entry, "expected an object with 'format', 'labels', 'images_folder' and 'keypoints'")
        if isinstance(entry_data.get("name"), str):
            entry = f"sources[{i}] ('{entry_data['name']}')"
        unknown = sorted(set(entry_data) - set(SOURCE_ENTRIES))
        if unknown:
            raise fail(entry, f"unknown entries {unknown} (known: {', '.join(SOURCE_ENTRIES)})")
        multi_class = target.num_classes > 1
        for key in ("format", "labels", "images_folder") + (() if multi_class else ("keypoints",)):
            if key not in entry_data:
                raise fail(entry, f"missing '{key}'")
        if not multi_class and ("classes" in entry_data or "exhaustive" in entry_data):
            raise fail(entry, f"'classes' and 'exhaustive' need a multi-class target; '{target.name}' has one class")
        if multi_class and entry_data["format"] != "coco":
            raise fail(f"{entry}.format", "a multi-class target reads COCO files, whose categories are its classes")
        if entry_data["format"] not in FORMATS:
            raise fail(f"{entry}.format", f"{entry_data['format']!r}: expected one of {', '.join(FORMATS)}")
        labels = resolve(entry_data["labels"], f"{entry}.labels", "file")
        name = entry_data.get("name") or os.path.splitext(os.path.basename(labels))[0]
        if not isinstance(name, str) or any(s.name == name for s in sources):
            raise fail(entry, f"name {name!r} is not a new name; each source needs its own")
        source = MixSource(name, entry_data["format"], labels,
                           resolve(entry_data["images_folder"], f"{entry}.images_folder", "folder"),
                           keypoint_set(entry_data["keypoints"], f"{entry}.keypoints")
                           if "keypoints" in entry_data else target, entry=entry)
        if multi_class:
            _class_entries(entry_data, source, target, fail)
            sources.append(source)
            continue
        source.keypoint_map = _keypoint_map(entry_data.get("keypoint_map", []), source, target, fail)
        _ratios(entry_data, source, fail)
        if "pseudo_weight" in entry_data:
            value = entry_data["pseudo_weight"]
            if not _number(value) or not 0 <= value <= 1:
                raise fail(f"{entry}.pseudo_weight", f"{value!r}: expected a loss weight between 0 and 1")
            if entry_data["format"] != "coco":
                raise fail(f"{entry}.pseudo_weight", "pseudo-labels come in filled COCO files (format 'coco')")
            source.pseudo_weight = float(value)
        indices = entry_data.get("output_keypoint_indices")
        if indices is not None:
            if not isinstance(indices, list) or len(indices) != source.keypoint_set.num_keypoints or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= -1 for v in indices):
                raise fail(f"{entry}.output_keypoint_indices",
                           f"expected {source.keypoint_set.num_keypoints} model keypoint indices (one per keypoint "
                           f"of '{source.keypoint_set.name}', -1 for none)")
            source.output_keypoint_indices = tuple(indices)
        if "val_labels" in entry_data:
            source.val_labels = resolve(entry_data["val_labels"], f"{entry}.val_labels", "file")
        if "val_images_folder" in entry_data:
            source.val_images_folder = resolve(entry_data["val_images_folder"], f"{entry}.val_images_folder",
                                               "folder")
        conversion = KeypointConversion.by_name(source.keypoint_set, target, source.keypoint_map)
        if not conversion.labelled.any():
            raise fail(entry, f"keypoint set '{source.keypoint_set.name}' shares no keypoint with the target "
                              f"'{target.name}' (add a 'keypoint_map', or equivalences to the union)")
        sources.append(source)

    _check_ratios(sources, fail)
    if mode == "merge" and not any(s.keypoint_set.keypoints == target.keypoints for s in sources):
        raise fail("target.mode", f"'merge' maps every source into one source's own keypoint set, and "
                                  f"'{target.name}' is none of the sources' sets "
                                  f"({', '.join(s.keypoint_set.name for s in sources)}); use 'combine' for a union")
    selection = data.get("selection") or {}
    if not isinstance(selection, dict) or not all(_number(v) and v >= 0 for v in selection.values()):
        raise fail("selection", f"{selection!r}: expected an object of non-negative numbers")
    try:
        selection = SelectionSettings(**selection)
    except TypeError as e:
        raise fail("selection", f"{e} (known: min_keypoints, min_area, min_center_distance)") from None
    return MixRecipe(os.path.abspath(path), str(data.get("name") or os.path.splitext(os.path.basename(path))[0]),
                     mode, target, sources, selection)


def _class_entries(entry_data: dict, source: MixSource, target: KeypointSet, fail) -> None:
    """A source's `classes` and `exhaustive` for a multi-class target, checked against the target's classes."""
    class_names = [c.name for c in target.classes]
    mapping = entry_data.get("classes", {})
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and v in class_names for k, v in mapping.items()):
        raise fail(f"{source.entry}.classes", f"{mapping!r}: expected {{category name: class}} with classes of "
                                              f"'{target.name}' ({', '.join(class_names)})")
    exhaustive = entry_data.get("exhaustive")
    if exhaustive is not None and not (isinstance(exhaustive, list) and all(c in class_names for c in exhaustive)):
        raise fail(f"{source.entry}.exhaustive", f"{exhaustive!r}: expected a list of classes of '{target.name}' "
                                                 f"({', '.join(class_names)})")
    _ratios(entry_data, source, fail)
    unsupported = sorted(set(entry_data) & {"keypoint_map", "pseudo_weight", "output_keypoint_indices"})
    if unsupported:
        raise fail(source.entry, f"{unsupported} do not apply to a multi-class target (each category is converted "
                                 "into its class by name)")
    source.category_classes = mapping
    source.exhaustive = None if exhaustive is None else tuple(exhaustive)


def _ratios(entry_data: dict, source: MixSource, fail) -> None:
    """A source's `source_ratio` and `sample_ratio_factor`, where given: positive numbers."""
    for key in ("source_ratio", "sample_ratio_factor"):
        if key in entry_data:
            value = entry_data[key]
            if not _number(value) or value <= 0:
                raise fail(f"{source.entry}.{key}", f"{value!r}: expected a positive number")
            setattr(source, key, float(value))


def _keypoint_map(value, source: MixSource, target: KeypointSet, fail) -> tuple:
    entry = f"{source.entry}.keypoint_map"
    if not isinstance(value, list):
        raise fail(entry, "expected a list of [source keypoint (or [a, b] for their midpoint), target keypoint]")
    pairs = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise fail(f"{entry}[{i}]", f"{pair!r}: expected [source keypoint, target keypoint]")
        parts = [pair[0]] if isinstance(pair[0], str) else pair[0]
        if not isinstance(parts, list) or len(parts) not in (1, 2) or not all(isinstance(p, str) for p in parts):
            raise fail(f"{entry}[{i}]", f"{pair[0]!r}: the source is one keypoint or a pair (their midpoint)")
        for part in parts:
            if source.keypoint_set.find(part) is None:
                raise fail(f"{entry}[{i}]", f"unknown keypoint '{part}' of the source's set "
                                            f"'{source.keypoint_set.name}' "
                                            f"({', '.join(source.keypoint_set.keypoints)})")
        if target.find(pair[1]) is None:
            raise fail(f"{entry}[{i}]", f"unknown keypoint '{pair[1]}' of the target set '{target.name}' "
                                        f"({', '.join(target.keypoints)})")
        pairs.append((tuple(parts), target.keypoints[target.find(pair[1])]))
    return tuple(pairs)


def _check_ratios(sources: list[MixSource], fail) -> None:
    given = [s for s in sources if s.source_ratio is not None]
    if given and len(given) != len(sources):
        lacking = next(s for s in sources if s.source_ratio is None)
        raise fail(f"{lacking.entry}.source_ratio", f"missing, while {given[0].entry} has one: give every source "
                                                    "a source_ratio, or none (then batches mix in proportion to "
                                                    "each source's samples)")
    total = sum(s.source_ratio for s in given)
    if given and abs(total - 1) > RATIO_TOLERANCE:
        shares = ", ".join(f"{s.name} {s.source_ratio:g}" for s in given)
        raise fail("sources[].source_ratio", f"the shares sum to {total:g} ({shares}); they must sum to 1")


# ------------------------------------------------------------------- reading
def read_source(source: MixSource, recipe: MixRecipe, labels: str | None = None, images_folder: str | None = None,
                progress: bool = False, data: object = None) -> tuple[CocoKeypointFile, list[str]]:
    """A source's annotations in its own keypoint set (the training file, or `labels`), and the images missing
    from its folder. A file that does not match the declared set fails naming the recipe entry. `data`: a COCO
    file's content, when already read."""
    labels = labels or source.labels
    images_folder = images_folder or source.images_folder
    try:
        if source.format == "mpii":
            return read_mpii_keypoints(labels, source.keypoint_set, images_folder, progress)
        coco = read_coco_keypoints(labels, recipe.target, source.keypoint_set, data)
        return coco, find_missing_images(coco, images_folder)
    except AnnotationError as e:
        raise _source_error(source, recipe, e) from None


def _source_error(source: MixSource, recipe: MixRecipe, error: AnnotationError):
    return recipe.fail(source.entry, f"{error} (declared: format '{source.format}', keypoints "
                                     f"'{source.keypoint_set.name}')")


def prepare_mixed_labels(recipe: MixRecipe, progress: bool = False, report=print) -> PreparedLabels:
    """Every source read, checked, converted to the target set and selected (the recipe's selection), as one set
    of prepared labels with a source each. Reports a line per source through `report`."""
    parts = []
    for source in recipe.sources:
        if recipe.target.num_classes > 1:
            parts.append(_prepare_class_source(source, recipe))
            report(f"source '{source.name}' (classes): {len(parts[-1])} samples in {len(parts[-1].images)} images; "
                   f"{parts[-1].sources[0].conversion}")
            continue
        coco, missing = read_source(source, recipe, progress=progress)
        if coco.images and len(missing) == len(coco.images):
            raise recipe.fail(source.entry, f"none of its {len(coco.images)} images is in {source.images_folder}")
        try:
            part = build_prepared_labels(coco, recipe.target, recipe.selection, source.images_folder, set(missing),
                                         source.name, source.keypoint_map, source.pseudo_weight)
        except AnnotationError as e:
            raise recipe.fail(source.entry, str(e)) from None
        parts.append(_checked_part(part, missing, source, recipe, "person"))
        report(describe_source(part, source, recipe))
    return combine_prepared_labels(parts)


def _prepare_class_source(source: MixSource, recipe: MixRecipe) -> PreparedLabels:
    """A COCO source of a multi-class target: each category into its class, the classes it does not label
    exhaustively masked."""
    try:
        classes = read_coco_classes(source.labels, recipe.target, source.category_classes, source.exhaustive)
        missing = find_missing_images(classes.coco, source.images_folder)
        if classes.coco.images and len(missing) == len(classes.coco.images):
            raise AnnotationError(f"none of its {len(classes.coco.images)} images is in {source.images_folder}")
        part = build_prepared_labels(classes.coco, recipe.target, recipe.selection, source.images_folder,
                                     set(missing), source.name, labelled=classes.labelled,
                                     conversion_note=classes.describe())
    except AnnotationError as e:
        raise recipe.fail(source.entry, str(e)) from None
    return _checked_part(part, missing, source, recipe, "instance")


def _checked_part(part: PreparedLabels, missing: list, source: MixSource, recipe: MixRecipe,
                  subject: str) -> PreparedLabels:
    """A source's prepared labels with its missing image files noted; an error if nobody became a sample."""
    if not len(part):
        raise recipe.fail(source.entry, f"no {subject} qualifies as a training sample (>= "
                                        f"{part.settings.min_keypoints} keypoints, area >= "
                                        f"{recipe.selection.min_area:g})")
    part.summary["missing_image_files"] = missing
    return part


def describe_source(part: PreparedLabels, source: MixSource, recipe: MixRecipe) -> str:
    converted = part.sources[0]
    unlabelled = [n for n, on in zip(recipe.target.keypoints, converted.labelled) if not on]
    conversion = KeypointConversion.by_name(source.keypoint_set, recipe.target, source.keypoint_map)
    used = set(conversion.first[conversion.first >= 0]) | set(conversion.second[conversion.second >= 0])
    dropped = [n for i, n in enumerate(source.keypoint_set.keypoints) if i not in used]
    line = (f"source '{source.name}' ({source.format}, keypoints '{source.keypoint_set.name}'): {len(part)} samples "
            f"in {len(part.images)} images")
    if part.summary.get("missing_image_files"):
        line += f", {len(part.summary['missing_image_files'])} images missing"
    line += f"; unlabelled in '{recipe.target.name}': {', '.join(unlabelled) or 'none'}"
    if dropped:
        line += f"; dropped: {', '.join(dropped)}"
    if "pseudo_keypoints" in part.summary:
        line += f"; {part.summary['pseudo_keypoints']} pseudo-labels (loss weight {converted.pseudo_weight:g})"
    return line


def evaluation_ground_truth(source: MixSource, recipe: MixRecipe) -> tuple[dict, str]:
    """The COCO-format ground truth val.py --mix scores this source on (in its own keypoint set) and its images
    folder: the COCO file as it is, or MPII's list converted."""
    labels = source.val_labels or source.labels
    images_folder = source.val_images_folder or source.images_folder
    if source.format == "coco":
        try:
            ground_truth = read_annotation_json(labels)
        except AnnotationError as e:
            raise _source_error(source, recipe, e) from None
        read_source(source, recipe, labels, images_folder, data=ground_truth)  # checks it against the declared set
        return ground_truth, images_folder
    coco, missing = read_source(source, recipe, labels, images_folder)
    if missing:
        print(f"note: {source.name}: {len(missing)} images missing from {images_folder} are not scored: "
              + ", ".join(missing[:10]))
    return as_coco_ground_truth(coco), images_folder


def output_keypoint_indices(source: MixSource, model_set: KeypointSet, recipe: MixRecipe) -> np.ndarray:
    """(K_source,) int: the model keypoint each of the source's keypoints is scored with, -1 for none. Given in the
    recipe, or the inverse of the conversion into the model's set (copies only: a midpoint has no inverse)."""
    if source.output_keypoint_indices is not None:
        indices = np.asarray(source.output_keypoint_indices, np.int64)
        if indices.max() >= model_set.num_keypoints:
            raise recipe.fail(f"{source.entry}.output_keypoint_indices",
                              f"index {indices.max()} is beyond the model's {model_set.num_keypoints} keypoints")
        return indices
    explicit = [(parts, name) for parts, name in source.keypoint_map if model_set.find(name) is not None]
    conversion = KeypointConversion.by_name(source.keypoint_set, model_set, explicit)
    indices = np.full(source.keypoint_set.num_keypoints, -1, np.int64)
    for model_index in range(model_set.num_keypoints):
        first, second = conversion.first[model_index], conversion.second[model_index]
        if first >= 0 and second < 0 and indices[first] < 0:
            indices[first] = model_index
    return indices

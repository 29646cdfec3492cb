"""COCO files with several categories, read into a multi-class target set (lwpose/keypoints/classes.py).

Each category that lists `keypoints` is one class of the target: the class named in an explicit mapping
({category name: class name}), else the class of the category's own name, else (a file with one keypoint category)
the class whose keypoint names the category spells. The category's annotations are read and checked as a file of
their own (datasets/coco_reader.py), converted by name into their class's own keypoints, and placed on that class's
channels of the whole set; the other classes' channels of the instance stay unlabelled.

What a source labels exhaustively is declared per class: a class it labels exhaustively is trained everywhere (its
absence is background), a class it does not (people in an animal dataset, dogs in COCO) is masked in the loss on
every channel of that class, shared channels included, and never trained as background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from lwpose.datasets.coco_reader import AnnotationError, CocoImage, CocoKeypointFile, CocoPerson, read_coco_keypoints
from lwpose.datasets.conversion import KeypointConversion
from lwpose.keypoints import KeypointSet


@dataclass
class ClassLabels:
    """A multi-category file in the whole target set: `coco` holds every instance on its class's channels,
    `labelled` (K,) the channels the source labels exhaustively, `category_classes` {category id: class index},
    `exhaustive` the names of the classes labelled exhaustively."""

    coco: CocoKeypointFile
    labelled: np.ndarray
    category_classes: dict
    exhaustive: tuple[str, ...]
    conversions: dict  # class index -> KeypointConversion from the category's set into the class's own set

    def describe(self) -> str:
        whole = self.coco.keypoint_set
        parts = []
        for class_index, conversion in self.conversions.items():
            name = whole.classes[class_index].name
            state = "exhaustive" if name in self.exhaustive else "not exhaustive: masked"
            parts.append(f"class '{name}' from keypoint set '{conversion.source.name}' ({state}; "
                         f"{conversion.describe()})")
        unlabelled = [c.name for c in whole.classes if c.index not in self.conversions]
        if unlabelled:
            parts.append(f"no category for {', '.join(unlabelled)}: masked")
        return "; ".join(parts)


EVERY_OTHER_CATEGORY = "*"


def category_class_map(path: str, categories: list, target: KeypointSet,
                       mapping: Mapping[str, str] | None = None) -> dict:
    """{category id: class index} for the categories that list keypoints: the class an explicit mapping names
    ({category name: class name}; the key "*" stands for every category not named otherwise), else the class of the
    category's own name, else the one class whose keypoint names the category spells. Several categories may be
    one class when they list the same keypoints (AP-10K's species are all one animal)."""
    class_index = {c.name: c.index for c in target.classes}
    mapping = dict(mapping or {})
    for category_name, class_name in mapping.items():
        if class_name not in class_index:
            raise AnnotationError(f"{path}: category '{category_name}' is mapped to class '{class_name}', which "
                                  f"keypoint set '{target.name}' does not have (classes: {', '.join(class_index)})",
                                  settings=("category_class",))
    named = [c for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    unknown = sorted(set(mapping) - {str(c.get("name")) for c in named} - {EVERY_OTHER_CATEGORY})
    if unknown:
        raise AnnotationError(f"{path}: no keypoint category is called {', '.join(map(repr, unknown))} (categories: "
                              f"{', '.join(str(c.get('name')) for c in named)})", settings=("category_class",))
    out: dict = {}
    for category in named:
        name = str(category.get("name"))
        spelled = [c.index for c in target.classes if c.keypoint_set.matches_names(category["keypoints"])]
        if name in mapping:
            out[category["id"]] = class_index[mapping[name]]
        elif name in class_index:
            out[category["id"]] = class_index[name]
        elif EVERY_OTHER_CATEGORY in mapping:
            out[category["id"]] = class_index[mapping[EVERY_OTHER_CATEGORY]]
        elif len(spelled) == 1:
            out[category["id"]] = spelled[0]
        else:
            raise AnnotationError(f"{path}: category '{name}' is none of the classes of keypoint set "
                                  f"'{target.name}' ({', '.join(class_index)}); map it to one",
                                  settings=("category_class",))
    if not out:
        raise AnnotationError(f"{path}: no category lists 'keypoints'; not a COCO keypoint file")
    first_of_class: dict = {}
    for category in named:
        index = out[category["id"]]
        first = first_of_class.setdefault(index, category)
        if list(first["keypoints"]) != list(category["keypoints"]):
            raise AnnotationError(f"{path}: categories '{first.get('name')}' and '{category.get('name')}' are both "
                                  f"class '{target.classes[index].name}' but list different keypoints; categories of "
                                  "one class list the same keypoints", settings=("category_class",))
    return out


def parse_category_classes(pairs: Iterable[str]) -> dict[str, str]:
    """{category name: class name} from CATEGORY=CLASS strings (`*=animal`: every category not named otherwise)."""
    mapping = {}
    for pair in pairs:
        category, separator, class_name = pair.partition("=")
        if not separator or not category or not class_name:
            raise AnnotationError(f"category mapping '{pair}': expected CATEGORY=CLASS (e.g. dog=animal, or "
                                  f"{EVERY_OTHER_CATEGORY}=animal for every category not named otherwise)",
                                  settings=("category_class",))
        mapping[category] = class_name
    return mapping


def categories_by_class(categories: list, category_classes: dict) -> dict:
    """{class index: [its categories, in file order]}."""
    out: dict = {}
    for category in categories:
        if isinstance(category, dict) and category.get("id") in category_classes:
            out.setdefault(category_classes[category["id"]], []).append(category)
    return out


def read_coco_classes(path: str, target: KeypointSet, mapping: Mapping[str, str] | None = None,
                      exhaustive: Iterable[str] | None = None, data: object = None) -> ClassLabels:
    """Read a COCO keypoint file with one category per class into the multi-class set `target`. `exhaustive`: the
    classes the file labels exhaustively (default: every class it has a category for)."""
    from lwpose.datasets.coco_reader import read_annotation_json

    if data is None:
        data = read_annotation_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise AnnotationError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories' lists")
    category_classes = category_class_map(path, data["categories"], target, mapping)
    class_names = [c.name for c in target.classes]
    present = tuple(class_names[i] for i in sorted(set(category_classes.values())))
    exhaustive = tuple(present if exhaustive is None else exhaustive)
    for name in exhaustive:
        if name not in class_names:
            raise AnnotationError(f"{path}: class '{name}' declared exhaustive is not a class of keypoint set "
                                  f"'{target.name}' ({', '.join(class_names)})", settings=("exhaustive",))
        if name not in present:
            raise AnnotationError(f"{path}: class '{name}' is declared exhaustive, but no category of the file is "
                                  "that class", settings=("exhaustive",))

    count = target.num_keypoints
    images: dict = {}
    labelled = np.zeros(count, bool)
    conversions = {}
    for class_index, class_categories in categories_by_class(data["categories"], category_classes).items():
        subject = target.classes[class_index]
        ids = {category["id"] for category in class_categories}
        names = ", ".join(f"'{category.get('name')}'" for category in class_categories)
        # One class's categories list the same keypoints: read together, as one file of the class.
        first_id = class_categories[0]["id"]
        part = {"images": data["images"], "categories": [class_categories[0]],
                "annotations": [{**a, "category_id": first_id} for a in data["annotations"]
                                if isinstance(a, dict) and a.get("category_id") in ids]}
        try:
            coco = read_coco_keypoints(path, subject.keypoint_set, data=part)
        except AnnotationError as e:
            label = "categories" if len(class_categories) > 1 else "category"
            raise AnnotationError(f"{e} ({label} {names}, class '{subject.name}')") from None
        conversion = KeypointConversion.by_name(coco.keypoint_set, subject.keypoint_set)
        if not conversion.labelled.any():
            raise AnnotationError(f"{path}: category {names} (keypoint set "
                                  f"'{coco.keypoint_set.name}') shares no keypoint with class '{subject.name}'")
        conversions[subject.index] = conversion
        if subject.name in exhaustive:
            labelled[subject.channels] |= conversion.labelled
        for image in coco.images:
            merged = images.setdefault(image.image_id, CocoImage(image.image_id, image.file_name, image.width,
                                                                 image.height))
            for person in image.people:
                keypoints = np.zeros((count, 3))
                keypoints[subject.channels] = conversion.convert(person.keypoints)
                merged.people.append(CocoPerson(person.annotation_id, keypoints, person.bbox, person.area,
                                                person.iscrowd, person.segmentation))
    # A channel shared with a class the file does not label exhaustively may hold that class's unlabelled instances.
    for subject in target.classes:
        if subject.name not in exhaustive:
            labelled[subject.channels] = False
    order = [im["id"] for im in data["images"] if isinstance(im, dict)]
    coco = CocoKeypointFile(path, target, [images[i] for i in order if i in images])
    return ClassLabels(coco, labelled, category_classes, exhaustive, conversions)


def masks_background(keypoint_set: KeypointSet, labelled: np.ndarray) -> bool:
    """Whether a source's background must go untrained everywhere: it leaves a class wholly unlabelled, whose
    instances may stand anywhere in its images (a class it labels in part, like AIC's missing keypoints, leaves
    the background only around its labelled instances)."""
    labelled = np.asarray(labelled, bool)
    return keypoint_set.num_classes > 1 and any(not labelled[c.channels].any() for c in keypoint_set.classes)

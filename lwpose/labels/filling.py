"""Filling the keypoints a source lacks with a model's predictions (scripts/pseudo_label.py).

Per image: the model's people are matched to the labelled people by OKS computed on the keypoints the source labels
(greedy, best first, one prediction per person, at least `min_oks`); each matched person gets a candidate for every
keypoint the source lacks that the prediction has, with the model's score. Candidates at `min_score` or above become
pseudo-labels. Keypoints the source labels are copied, never changed; people without a match keep the keypoints
the source lacks unlabelled. The file format is lwpose/labels/filled_file.py.

`hidden` runs the measured protocol: keypoints the source does label are hidden (treated as lacking), filled, and the
fill is scored against the hidden truth (lwpose/labels/hidden_evaluation.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from lwpose.datasets.conversion import KeypointConversion
from lwpose.evaluation.coco import COCO_COORDINATE_OFFSET, keypoint_ground_truth
from lwpose.evaluation.pck import oks_matrix
from lwpose.inference.grouping import GroupingParams
from lwpose.keypoints import KeypointSet
from lwpose.labels.filled_file import SCORES, PseudoLabelError, make_header
from lwpose.labels.guided import guided_candidates

# Chosen on coco_mini_train with the imported model (docs/label-completion.md): at 0.15 the fill of hidden eyes,
# ears, wrists and ankles has PCK@0.1 0.945 and covers 0.83 of them; higher thresholds trade coverage for little PCK.
DEFAULT_MIN_SCORE = 0.15
# A prediction whose OKS with a labelled person (on the labelled keypoints) is lower is not that person.
DEFAULT_MIN_OKS = 0.5
# Decimals written for the coordinates and scores of pseudo-labels.
COORDINATE_DECIMALS = 2
SCORE_DECIMALS = 3



@dataclass
class ImageEvidence:
    """What the model says about one image: its people (P, K, 3) x, y, score in image pixels (pixel centres at
    integers, score 0 where a keypoint is missing) and, when available, its maps at image size (heatmaps (K or K + 1,
    H, W), PAFs (2L, H, W)) for the guided fill (lwpose/labels/guided.py)."""

    people: np.ndarray
    heatmaps: np.ndarray | None = None
    pafs: np.ndarray | None = None


# The model's evidence about an image (its info from the labels file), or None when the image could not be read.
Predict = Callable[[dict], "ImageEvidence | None"]
GUIDED_MODES = ("off", "fallback", "first")


@dataclass(frozen=True)
class FillSettings:
    """`guided`: how the maps are used, where the evidence has them: "off" (the grouped people only), "fallback" (a
    keypoint the matched prediction lacks, or of a person without a match, is looked for from the person's labelled
    keypoints), "first" (every keypoint is looked for that way first, the grouped people fill the rest)."""

    min_score: float = DEFAULT_MIN_SCORE
    min_oks: float = DEFAULT_MIN_OKS
    guided: str = "fallback"
    grouping: GroupingParams = GroupingParams()


def match_by_labelled_oks(keypoints: np.ndarray, labelled: np.ndarray, areas: np.ndarray, predictions: np.ndarray,
                          sigmas: np.ndarray, min_oks: float) -> tuple[np.ndarray, np.ndarray]:
    """(G,) index of the prediction matched to each person (-1: none) and the OKS of the match: OKS on the keypoints
    `labelled` (K,) marks (and each person has, v > 0), greedy best first, one prediction per person."""
    matched = np.full(len(keypoints), -1, np.int64)
    similarity_of_match = np.zeros(len(keypoints))
    if len(keypoints) == 0 or len(predictions) == 0:
        return matched, similarity_of_match
    truth = keypoints.copy()
    truth[:, ~labelled, 2] = 0
    similarity = oks_matrix(truth, areas, predictions, sigmas)
    taken = np.zeros(len(predictions), bool)
    for flat in np.argsort(-similarity, axis=None, kind="stable"):
        g, p = divmod(int(flat), len(predictions))
        if similarity[g, p] < max(min_oks, 1e-12):
            break
        if matched[g] < 0 and not taken[p]:
            matched[g], taken[p] = p, True
            similarity_of_match[g] = similarity[g, p]
    return matched, similarity_of_match


def candidate_fills(keypoints: np.ndarray, labelled: np.ndarray, areas: np.ndarray, predictions: np.ndarray,
                    sigmas: np.ndarray, min_oks: float = DEFAULT_MIN_OKS) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (G, K, 3) x, y, score for the keypoints `labelled` (K,) leaves out, from the matched predictions
    (score 0: none), and the match (G,). `keypoints` (G, K, 3) and `predictions` (P, K, 3) share one coordinate
    convention and the keypoint set."""
    keypoints = np.asarray(keypoints, np.float64).reshape(len(keypoints), len(labelled), 3)
    predictions = np.asarray(predictions, np.float64).reshape(len(predictions), len(labelled), 3)
    matched, _ = match_by_labelled_oks(keypoints, labelled, areas, predictions, sigmas, min_oks)
    candidates = np.zeros_like(keypoints)
    has = matched >= 0
    candidates[has] = predictions[matched[has]]
    candidates[:, labelled] = 0
    candidates[candidates[..., 2] <= 0] = 0
    return candidates, matched


def apply_fill(keypoints: np.ndarray, candidates: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """People (G, K, 3) with every candidate scoring `min_score` or more filled in as [x, y, 2], and their scores
    (G, K) (0 elsewhere). Only keypoints without a candidate (score 0) can be labelled, so labels stay as they are."""
    take = (candidates[..., 2] > 0) & (candidates[..., 2] >= min_score)
    filled = np.array(keypoints, np.float64, copy=True)
    filled[take, 0] = candidates[take, 0]
    filled[take, 1] = candidates[take, 1]
    filled[take, 2] = 2
    return filled, np.where(take, candidates[..., 2], 0.0)


@dataclass
class FillResult:
    """What filling a file gave: the filled file (`data`), and for each labelled (non-crowd) person its truth and
    candidates in the model's set (COCO coordinates), for the per-keypoint table and the hidden-keypoint scores."""

    data: dict
    model_set: KeypointSet
    source_set: KeypointSet
    labelled: np.ndarray  # (K,) keypoints the fill treats as labelled (the source's, less the hidden ones)
    source_labelled: np.ndarray  # (K,) keypoints the source labels
    truth: np.ndarray  # (N, K, 3) the source's keypoints of each person in the model set (hidden ones included)
    candidates: np.ndarray  # (N, K, 3) x, y, score of each candidate fill (score 0: none)
    boxes: np.ndarray  # (N, 4) x, y, w, h
    matched: np.ndarray  # (N,) bool: the person was matched to a prediction
    min_score: float = 0.0
    unreadable: list = field(default_factory=list)

    @property
    def filled(self) -> np.ndarray:
        """(N, K) bool: the pseudo-labels written (candidates at min_score or more)."""
        return (self.candidates[..., 2] > 0) & (self.candidates[..., 2] >= self.min_score)

    def keypoint_table(self) -> list[dict]:
        """Per keypoint the fill could add (the model's keypoints outside `labelled`): people filled, people with
        a candidate below min_score, median score of the fills."""
        rows = []
        filled = self.filled
        for j in np.flatnonzero(~self.labelled):
            scores = self.candidates[filled[:, j], j, 2]
            rows.append({"keypoint": self.model_set.keypoints[j], "people": int(len(self.truth)),
                         "filled": int(filled[:, j].sum()),
                         "below_min_score": int(((self.candidates[:, j, 2] > 0) & ~filled[:, j]).sum()),
                         "median_score": float(np.median(scores)) if len(scores) else None})
        return rows


def format_keypoint_table(rows: list[dict], min_score: float) -> str:
    header = f"{'keypoint':<20} {'people filled':>13} {'of':>6} {'below min':>10} {'median score':>13}"
    lines = [header, "-" * len(header)]
    for row in rows:
        median = "-" if row["median_score"] is None else f"{row['median_score']:.3f}"
        lines.append(f"{row['keypoint']:<20} {row['filled']:>13} {row['people']:>6} {row['below_min_score']:>10} "
                     f"{median:>13}")
    lines.append(f"(filled: candidates scoring >= --min-score {min_score:g}; 'below min': matched people whose "
                 "candidate scored less)")
    return "\n".join(lines)


def source_conversion(source_set: KeypointSet, model_set: KeypointSet, path: str) -> KeypointConversion:
    conversion = KeypointConversion.by_name(source_set, model_set)
    if not conversion.labelled.any():
        raise PseudoLabelError(f"{path}: keypoint set '{source_set.name}' shares no keypoint with the model's "
                               f"'{model_set.name}'")
    return conversion


def hidden_mask(model_set: KeypointSet, source_labelled: np.ndarray, hidden: Sequence[str], path: str) -> np.ndarray:
    """(K,) bool of the model keypoints named in `hidden`; each must be one the source labels."""
    mask = np.zeros(model_set.num_keypoints, bool)
    for name in hidden:
        j = model_set.find(name)
        if j is None:
            raise PseudoLabelError(f"hidden keypoint '{name}' is not a keypoint of the model's set "
                                   f"'{model_set.name}' ({', '.join(model_set.keypoints)})")
        if not source_labelled[j]:
            raise PseudoLabelError(f"hidden keypoint '{name}': {path} does not label it, so there is no truth to "
                                   "score a fill against")
        mask[j] = True
    return mask


def fill_coco_labels(data: dict, path: str, source_set: KeypointSet, model_set: KeypointSet, predict: Predict,
                     settings: FillSettings = FillSettings(), hidden: Sequence[str] = (), progress: bool = True,
                     details: dict | None = None) -> FillResult:
    """Fill a COCO keypoint file (`data`, read from `path`, labelled in `source_set`) in `model_set` with the
    people `predict` finds in each image. `hidden`: model keypoints the source labels that are treated as lacking
    (the measured protocol); the written file then has them as pseudo-labels or unlabelled, never with their truth.
    `details` are recorded in the file's header."""
    checked = keypoint_ground_truth(copy.deepcopy(data), path, source_set)
    conversion = source_conversion(source_set, model_set, path)
    source_labelled = conversion.labelled.copy()
    labelled = source_labelled & ~hidden_mask(model_set, source_labelled, hidden, path)
    count = model_set.num_keypoints
    by_id = {ann["id"]: ann for ann in checked.data["annotations"]}
    out_annotations = []
    truths, candidates_all, boxes, matched_all, unreadable = [], [], [], [], []
    for image in tqdm(checked.images, desc="filling", unit="img", disable=not progress, dynamic_ncols=True):
        people = [a for a in checked.annotations_of(image["id"]) if not a["iscrowd"]]
        # Raw COCO values converted by name: copies are the very numbers of the file, so labels cannot change.
        raw = conversion.convert(np.asarray([a["keypoints"] for a in people], np.float64)
                                 .reshape(len(people), source_set.num_keypoints, 3))
        truth = raw.copy()
        raw[:, ~labelled] = 0  # hidden keypoints: as a source lacking them has them
        has_labels = (raw[..., 2] > 0).any(axis=1)
        candidates = np.zeros_like(raw)
        matched = np.full(len(people), -1, np.int64)
        if has_labels.any():
            evidence = predict(image)
            if evidence is None:
                unreadable.append(image["file_name"])
            else:
                index = np.flatnonzero(has_labels)
                candidates[index], matched[index] = _image_candidates(raw[index], labelled, np.asarray(
                    [people[i]["area"] for i in index], np.float64), evidence, model_set, settings)
        filled, scores = apply_fill(raw, candidates, settings.min_score)
        for i, ann in enumerate(people):
            out_annotations.append((ann["id"], filled[i], scores[i]))
        truths.append(truth)
        candidates_all.append(candidates)
        boxes.append(np.asarray([a["bbox"] for a in people], np.float64).reshape(-1, 4))
        matched_all.append(matched >= 0)
    written = {ann_id: (keypoints, scores) for ann_id, keypoints, scores in out_annotations}
    out = {key: value for key, value in data.items() if key not in ("annotations", "categories")}
    out["categories"] = [_category_in(category, model_set) for category in data["categories"]]
    out["annotations"] = []
    for ann in data["annotations"]:
        ann = dict(ann)
        if ann["id"] in written:
            keypoints, scores = written[ann["id"]]
            ann["keypoints"] = _keypoint_list(keypoints, scores)
            ann["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
            ann[SCORES] = [round(float(s), SCORE_DECIMALS) if s > 0 else 0 for s in scores]
        else:  # a crowd region: no keypoints of any set
            checked_ann = by_id[ann["id"]]
            ann["keypoints"] = [0] * (3 * count)
            ann["num_keypoints"] = 0
            ann[SCORES] = [0] * count
            ann.setdefault("iscrowd", checked_ann["iscrowd"])
        out["annotations"].append(ann)
    result = FillResult(out, model_set, source_set, labelled, source_labelled,
                        _stack(truths, count), _stack(candidates_all, count),
                        np.concatenate(boxes) if boxes else np.zeros((0, 4)),
                        np.concatenate(matched_all) if matched_all else np.zeros(0, bool), settings.min_score,
                        unreadable)
    summary = {row["keypoint"]: {"filled": row["filled"], "median_score": row["median_score"]}
               for row in result.keypoint_table()}
    out["pseudo_labels"] = make_header(model_set, source_set, labelled, min_score=settings.min_score,
                                       min_oks=settings.min_oks, hidden=list(hidden),
                                       people=int(len(result.truth)), matched=int(result.matched.sum()),
                                       summary=summary, **(details or {}))
    return result


def estimator_evidence(estimator, images_folder: str, maps: bool = True) -> Predict:
    """The evidence of a PoseEstimator (lwpose.PoseEstimator) on the images of a labels file: its maps resized to
    each image (averaged over its scales and flips, the reference's validation path) and the people grouped from
    them; `maps` keeps the maps for the guided fill. An unreadable image gives None (warned, its people unfilled)."""
    from lwpose.evaluation.coco import image_path
    from lwpose.images import ImageReadError, read_image
    from lwpose.inference.grouping import decode_people

    def predict(image_info: dict) -> ImageEvidence | None:
        try:
            image = read_image(image_path(images_folder, image_info["file_name"]))
        except ImageReadError as e:
            tqdm.write(f"warning: {e}; its people are left unfilled")
            return None
        heatmaps, pafs = estimator.image_maps(image)
        people = decode_people(heatmaps, pafs, estimator.keypoint_set, estimator.grouping)
        return ImageEvidence(people.keypoints, heatmaps if maps else None, pafs if maps else None)

    return predict


def detections_evidence(detections, keypoint_set: KeypointSet, path: str) -> Predict:
    """The evidence of a COCO results file (a list of {"image_id", "keypoints": [x, y, score] * K, ...}, as val.py
    writes them) in `keypoint_set`: each keypoint's third value is its score (val.py writes 1 for a keypoint found)."""
    if not isinstance(detections, list):
        raise PseudoLabelError(f"detections {path}: expected a JSON list of COCO results")
    count = keypoint_set.num_keypoints
    by_image: dict = {}
    for i, entry in enumerate(detections):
        keypoints = entry.get("keypoints") if isinstance(entry, dict) else None
        if not (isinstance(keypoints, list) and len(keypoints) == 3 * count
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in keypoints)
                and "image_id" in entry):
            raise PseudoLabelError(f"detections {path}: entry {i}: needs 'image_id' and 'keypoints' with {3 * count} "
                                   f"numbers (keypoint set '{keypoint_set.name}')")
        person = np.asarray(keypoints, np.float64).reshape(count, 3)
        if not np.isfinite(person).all():
            raise PseudoLabelError(f"detections {path}: entry {i}: 'keypoints' holds a value that is not finite")
        present = person[:, 2] > 0
        person[:, :2] = np.where(present[:, None], person[:, :2] - COCO_COORDINATE_OFFSET, -1)
        person[~present, 2] = 0
        by_image.setdefault(entry["image_id"], []).append(person)

    def predict(image_info: dict) -> ImageEvidence:
        people = by_image.get(image_info["id"], [])
        return ImageEvidence(np.asarray(people, np.float64).reshape(len(people), count, 3))

    return predict


def _image_candidates(raw: np.ndarray, labelled: np.ndarray, areas: np.ndarray, evidence: ImageEvidence,
                      model_set: KeypointSet, settings: FillSettings) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (G, K, 3) in COCO coordinates and the match (G,) of the labelled people `raw` (COCO coordinates,
    model set) of one image."""
    count = model_set.num_keypoints
    predictions = np.asarray(evidence.people, np.float64).reshape(-1, count, 3).copy()
    present = predictions[..., 2] > 0
    predictions[..., :2] = np.where(present[..., None], predictions[..., :2] + COCO_COORDINATE_OFFSET, 0)
    candidates, matched = candidate_fills(raw, labelled, areas, predictions, model_set.sigmas_array,
                                          settings.min_oks)
    if settings.guided == "off" or evidence.heatmaps is None or evidence.pafs is None:
        return candidates, matched
    known = raw.copy()
    known[..., :2] -= COCO_COORDINATE_OFFSET  # the maps' pixels: centres at integers
    known[:, ~labelled, 2] = 0
    wanted = np.broadcast_to(~labelled, raw.shape[:2])
    grouped = candidates[..., 2] > 0
    if settings.guided == "fallback":
        wanted = wanted & ~grouped
        known[grouped, :2] = candidates[grouped, :2] - COCO_COORDINATE_OFFSET  # the way on starts there too
        known[grouped, 2] = 1
    guided = guided_candidates(evidence.heatmaps, evidence.pafs, model_set, known, wanted, settings.grouping)
    found = guided[..., 2] > 0
    if settings.guided == "fallback":  # a peak grouping gave another person stays theirs
        for g, j in zip(*np.nonzero(found)):
            others = np.flatnonzero(grouped[:, j])
            near = np.hypot(*(candidates[others, j, :2] - COCO_COORDINATE_OFFSET - guided[g, j, :2]).T)
            if (near <= settings.grouping.nms_radius).any():
                found[g, j] = False
    guided[..., :2] += COCO_COORDINATE_OFFSET
    if settings.guided == "first":
        candidates = np.where(found[..., None], guided, candidates)
    else:
        candidates = np.where((found & (candidates[..., 2] <= 0))[..., None], guided, candidates)
    return candidates, matched


def _stack(arrays: list[np.ndarray], count: int) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros((0, count, 3))


def _keypoint_list(keypoints: np.ndarray, scores: np.ndarray) -> list:
    """A person's keypoints as a COCO list: labels with the very values read (whole numbers as integers),
    pseudo-labels rounded to COORDINATE_DECIMALS."""
    values: list = []
    for (x, y, v), score in zip(keypoints.tolist(), scores.tolist()):
        if score > 0:
            values += [round(x, COORDINATE_DECIMALS), round(y, COORDINATE_DECIMALS), int(v)]
        else:
            values += [_exact(x), _exact(y), _exact(v)]
    return values


def _exact(value: float):
    return int(value) if float(value).is_integer() else float(value)


def _category_in(category: dict, model_set: KeypointSet) -> dict:
    if not isinstance(category, dict) or not isinstance(category.get("keypoints"), list):
        return category
    return {**category, "keypoints": list(model_set.keypoints),
            "skeleton": [[int(a) + 1, int(b) + 1] for a, b in model_set.limb_keypoints]}

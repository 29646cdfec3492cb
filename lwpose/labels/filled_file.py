"""The filled-labels file: a source's COCO keypoint file rewritten in a model's keypoint set, with the keypoints the
source lacks filled in by the model where it is confident (scripts/pseudo_label.py writes it; a mix recipe source
or scripts/prepare_train_labels.py reads it).

It is a COCO keypoint file (any COCO tool reads it) with two additions:

    "pseudo_labels": {"format": "lwpose-pseudo-labels", "format_version": 1,
                      "keypoint_set": {...},          the model's keypoint set (the file's keypoints, in order)
                      "source_keypoint_set": "aic",   the set the source was labelled in
                      "labelled": [true, false, ...], per keypoint: does the source label it at all?
                      "min_score": 0.3, "model": "...", "hidden": [...], "summary": {...}}
    annotations[i]["pseudo_scores"]: [0, 0, 0.87, ...]   one number per keypoint

Per keypoint of a person, exactly one of:
- labelled (`labelled[j]` true): as in the source file, never changed (converted by name; a derived keypoint such as
  lwop18's neck is the midpoint of its labelled parts, as training converts it). v=0 stays "labelled as absent".
- pseudo-label (`pseudo_scores[j] > 0`, the model's confidence in it): [x, y, 2] in COCO's coordinates (pixel edges
  at integers). COCO's visibility says nothing here about occlusion: the flag is `pseudo_scores`, kept apart from it.
- unlabelled (neither): [0, 0, 0], exactly as a source that lacks the keypoint has it; training gives it no loss.
People the model found no match for keep every keypoint the source lacks unlabelled.
"""
from __future__ import annotations

import numpy as np

from lwpose.errors import LwposeError
from lwpose.keypoints import KeypointSet, KeypointSetError, load_keypoint_set

FORMAT = "lwpose-pseudo-labels"
FORMAT_VERSION = 1
HEADER = "pseudo_labels"  # the top-level entry
SCORES = "pseudo_scores"  # the per-annotation entry


class PseudoLabelError(LwposeError, ValueError):
    """A filled-labels file (or its making) that cannot be used; the message names the file and the entry."""


def make_header(model_set: KeypointSet, source_set: KeypointSet, labelled: np.ndarray, **details) -> dict:
    """The file's `pseudo_labels` entry; `details` (min_score, model, hidden, summary, ...) are recorded as given."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "keypoint_set": model_set.to_dict(),
            "source_keypoint_set": source_set.name, "labelled": [bool(v) for v in labelled], **details}


def read_header(data: dict, path: str, keypoint_set: KeypointSet) -> np.ndarray | None:
    """(K,) bool: the keypoints the file's source labels, when `data` is a filled file (None for a plain COCO file).
    `keypoint_set` is the set the file's annotations are in; the header must describe the same keypoints."""
    header = data.get(HEADER) if isinstance(data, dict) else None
    if header is None:
        return None

    def fail(message: str) -> PseudoLabelError:
        return PseudoLabelError(f"{path}: '{HEADER}': {message}")

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise fail(f"expected an object with 'format': '{FORMAT}' (written by scripts/pseudo_label.py)")
    if not isinstance(header.get("format_version"), int) or header["format_version"] > FORMAT_VERSION:
        raise fail(f"format version {header.get('format_version')!r} is not one this code reads ({FORMAT_VERSION})")
    try:
        header_set = load_keypoint_set(header.get("keypoint_set"))
    except (KeypointSetError, TypeError) as e:
        raise fail(f"'keypoint_set': {e}") from None
    if header_set.keypoints != keypoint_set.keypoints:
        raise fail(f"its keypoint set '{header_set.name}' ({header_set.num_keypoints} keypoints) is not the file's "
                   f"'{keypoint_set.name}' ({keypoint_set.num_keypoints})")
    labelled = header.get("labelled")
    if not (isinstance(labelled, list) and len(labelled) == keypoint_set.num_keypoints
            and all(isinstance(v, bool) for v in labelled)):
        raise fail(f"'labelled' must hold {keypoint_set.num_keypoints} booleans, one per keypoint")
    return np.asarray(labelled, bool)


def read_scores(annotation: dict, count: int, labelled: np.ndarray, where: str) -> np.ndarray:
    """(K,) float32 pseudo-label scores of one annotation of a filled file (zeros when it has none): checked to be
    finite, not negative, and 0 on every keypoint the source labels (a pseudo-label never stands in for a label)."""
    values = annotation.get(SCORES)
    if values is None:
        return np.zeros(count, np.float32)
    if not (isinstance(values, list) and len(values) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise PseudoLabelError(f"{where}: '{SCORES}' must hold {count} numbers, one per keypoint")
    scores = np.asarray(values, np.float64)
    if not np.isfinite(scores).all() or (scores < 0).any():
        raise PseudoLabelError(f"{where}: '{SCORES}' holds a negative or non-finite value")
    if (scores[labelled] > 0).any():
        j = int(np.flatnonzero(labelled & (scores > 0))[0])
        raise PseudoLabelError(f"{where}: keypoint {j} is labelled by the source and also marked as a pseudo-label")
    return scores.astype(np.float32)

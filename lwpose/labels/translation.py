"""Translation between keypoint sets: a small model that places one set's keypoints (B, e.g. MPII's head top, upper
neck, thorax and pelvis) from another's (A, e.g. COCO's 17), learnt from people labelled in both, or from A-predictions
paired with B-labels (scripts/translate_keypoints.py).

Each person is seen in its own frame: A's present keypoints span a box, whose centre becomes the origin and whose
longer side the unit, so the mapping learns a pose, not a place or a size. The input is each A keypoint's normalised
x, y (0 where missing) and a present flag; the output is every B keypoint's normalised x, y, mapped back through the
same box. Two models: ridge regression (closed form, one linear map) and a small MLP (two hidden layers, trained in
torch on the CPU in seconds; applied in numpy). Training sees each person also with some A keypoints dropped, as
detections and occlusion drop them. A translated keypoint's score is the mean score of the person's A keypoints times
the share of them present: a person seen whole and sure gives sure keypoints.

The model file is JSON (plain numbers, no pickle): the two sets, the method and its weights, and the held-out
figures `fit` measured.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from lwpose.errors import LwposeError
from lwpose.files import read_json
from lwpose.keypoints import KeypointSet, load_keypoint_set

FORMAT = "lwpose-keypoint-translator"
FORMAT_VERSION = 1
METHODS = ("ridge", "mlp")
DEFAULT_RIDGE = 1e-3  # the ridge's penalty per feature, relative to the number of people
DEFAULT_HIDDEN = 128
DEFAULT_STEPS = 1500
DEFAULT_DROP = 0.1  # share of A keypoints dropped in the augmented copies
PCK_THRESHOLDS = (0.05, 0.1)
PCKH_THRESHOLD = 0.5


class TranslationError(LwposeError, ValueError):
    """A translator or its data that cannot be used; the message names the file and the entry."""


def person_frames(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (N, 2) and unit (N,) of each person's frame: the box of its present keypoints (N, K, 3) (score > 0)."""
    present = keypoints[..., 2] > 0
    big = np.where(present[..., None], keypoints[..., :2], np.inf)
    low = big.min(axis=1)
    high = np.where(present[..., None], keypoints[..., :2], -np.inf).max(axis=1)
    empty = ~present.any(axis=1)
    low[empty], high[empty] = 0.0, 1.0
    centre = (low + high) / 2
    unit = np.maximum((high - low).max(axis=1), 1.0)
    return centre, unit


def input_features(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3 K_A) features of people (N, K_A, 3), with the frames' centres and units."""
    centre, unit = person_frames(keypoints)
    present = keypoints[..., 2] > 0
    normalised = (keypoints[..., :2] - centre[:, None]) / unit[:, None, None]
    normalised = np.where(present[..., None], normalised, 0.0)
    return np.concatenate([normalised.reshape(len(keypoints), -1), present.astype(np.float64)], axis=1), centre, unit


def drop_keypoints(keypoints: np.ndarray, share: float, rng: np.random.Generator, copies: int) -> np.ndarray:
    """`copies` copies of people (N, K, 3), each present keypoint dropped (score 0) with probability `share`."""
    out = np.repeat(keypoints[None], copies, axis=0).reshape(-1, *keypoints.shape[1:]).copy()
    drop = rng.random(out.shape[:2]) < share
    out[drop] = 0.0
    return out


@dataclass
class Translator:
    """A learnt mapping from keypoint set `source` (A) to `target` (B)."""

    source: KeypointSet
    target: KeypointSet
    method: str
    weights: list  # ridge: [W (F + 1, 2 K_B)]; mlp: [W1, b1, W2, b2, W3, b3]
    report: dict = field(default_factory=dict)

    def predict(self, keypoints: np.ndarray) -> np.ndarray:
        """B keypoints (N, K_B, 3) x, y, score of people whose A keypoints are (N, K_A, 3) (x, y, score; 0 missing),
        in the same coordinates. People without any A keypoint get none."""
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, self.source.num_keypoints, 3)
        features, centre, unit = input_features(keypoints)
        normalised = self._forward(features).reshape(len(keypoints), self.target.num_keypoints, 2)
        out = np.zeros((len(keypoints), self.target.num_keypoints, 3))
        out[..., :2] = normalised * unit[:, None, None] + centre[:, None]
        present = keypoints[..., 2] > 0
        mean_score = np.where(present, keypoints[..., 2], 0).sum(1) / np.maximum(present.sum(1), 1)
        out[..., 2] = (mean_score * present.mean(1))[:, None]
        out[~present.any(1)] = 0.0
        return out

    def _forward(self, features: np.ndarray) -> np.ndarray:
        if self.method == "ridge":
            (w,) = self.weights
            return np.concatenate([features, np.ones((len(features), 1))], axis=1) @ w
        hidden = features
        layers = list(zip(self.weights[0::2], self.weights[1::2]))
        for i, (w, b) in enumerate(layers):
            hidden = hidden @ w + b
            if i < len(layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        return hidden

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "source": self.source.to_dict(),
                "target": self.target.to_dict(), "method": self.method,
                "weights": [np.asarray(w).tolist() for w in self.weights], "report": self.report}

    @classmethod
    def from_dict(cls, data: dict, where: str = "<memory>") -> "Translator":
        def fail(message: str) -> TranslationError:
            return TranslationError(f"translator {where}: {message}")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise fail(f"not a keypoint translator (no 'format': '{FORMAT}'; scripts/translate_keypoints.py fit "
                       "writes them)")
        if data.get("method") not in METHODS:
            raise fail(f"'method' {data.get('method')!r}: expected one of {', '.join(METHODS)}")
        try:
            source, target = load_keypoint_set(data["source"]), load_keypoint_set(data["target"])
            weights = [np.asarray(w, np.float64) for w in data["weights"]]
        except (KeyError, TypeError, ValueError, LwposeError) as e:
            raise fail(f"malformed ({type(e).__name__}: {e})") from None
        inputs, outputs = 3 * source.num_keypoints, 2 * target.num_keypoints
        shapes = [w.shape for w in weights]
        expected_ok = (shapes == [(inputs + 1, outputs)] if data["method"] == "ridge" else
                       len(shapes) % 2 == 0 and len(shapes) >= 2 and shapes[0][0] == inputs
                       and shapes[-1] == (outputs,) and all(np.isfinite(w).all() for w in weights))
        if not expected_ok or not all(np.isfinite(w).all() for w in weights):
            raise fail(f"weights of shapes {shapes} do not map {source.num_keypoints} keypoints of "
                       f"'{source.name}' to {target.num_keypoints} of '{target.name}'")
        return cls(source, target, data["method"], weights, data.get("report", {}))

    def save(self, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)


def load_translator(path: str) -> Translator:
    return Translator.from_dict(read_json(path, "translator", TranslationError), path)


# ------------------------------------------------------------------------------------------------- fitting
def training_arrays(source_people: np.ndarray, target_people: np.ndarray, drop: float, copies: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, targets (normalised B x, y) and their mask (B keypoints labelled) of paired people, with `copies`
    extra copies whose A keypoints are dropped with probability `drop`."""
    source, target = source_people, target_people
    if copies and drop > 0:
        dropped = drop_keypoints(source_people, drop, np.random.default_rng(seed), copies)
        source = np.concatenate([source_people, dropped])
        target = np.concatenate([target_people, np.tile(target_people, (copies, 1, 1))])
    keep = (source[..., 2] > 0).any(axis=1)
    source, target = source[keep], target[keep]
    features, centre, unit = input_features(source)
    normalised = (target[..., :2] - centre[:, None]) / unit[:, None, None]
    mask = target[..., 2] > 0
    return features, normalised, mask


def fit_ridge(features: np.ndarray, targets: np.ndarray, mask: np.ndarray, penalty: float = DEFAULT_RIDGE) -> list:
    """One linear map per output keypoint, each on the people whose B keypoint is labelled: (F + 1, 2 K_B)."""
    design = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    weights = np.zeros((design.shape[1], 2 * targets.shape[1]))
    regulariser = penalty * np.eye(design.shape[1])
    regulariser[-1, -1] = 0.0  # the bias is free
    for j in range(targets.shape[1]):
        rows = mask[:, j]
        if rows.sum() == 0:
            continue
        x = design[rows]
        gram = x.T @ x + regulariser * len(x)
        weights[:, 2 * j:2 * j + 2] = np.linalg.solve(gram, x.T @ targets[rows, j])
    return [weights]


def fit_mlp(features: np.ndarray, targets: np.ndarray, mask: np.ndarray, hidden: int = DEFAULT_HIDDEN,
            steps: int = DEFAULT_STEPS, learning_rate: float = 3e-3, seed: int = 0) -> list:
    """Two hidden ReLU layers, trained full-batch with Adam on the masked squared error (torch, CPU)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = torch.nn.Sequential(torch.nn.Linear(features.shape[1], hidden), torch.nn.ReLU(),
                                      torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                      torch.nn.Linear(hidden, 2 * targets.shape[1]))
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(targets.reshape(len(targets), -1), dtype=torch.float32)
    m = torch.as_tensor(np.repeat(mask, 2, axis=1), dtype=torch.float32)
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    batch = min(len(x), 4096)
    for _ in range(steps):
        rows = torch.randint(0, len(x), (batch,), generator=generator) if batch < len(x) else slice(None)
        loss = ((network(x[rows]) - y[rows]) ** 2 * m[rows]).sum() / m[rows].sum().clamp(min=1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    weights = []
    for layer in network:
        if isinstance(layer, torch.nn.Linear):
            weights += [layer.weight.detach().double().numpy().T.copy(), layer.bias.detach().double().numpy().copy()]
    return weights


def fit_translator(source_set: KeypointSet, target_set: KeypointSet, source_people: np.ndarray,
                   target_people: np.ndarray, method: str = "mlp", drop: float = DEFAULT_DROP, copies: int = 2,
                   seed: int = 0, **options) -> Translator:
    """A translator from paired people: `source_people` (N, K_A, 3) and `target_people` (N, K_B, 3) in one
    coordinate frame (score or visibility > 0 where present/labelled)."""
    if method not in METHODS:
        raise TranslationError(f"method '{method}': expected one of {', '.join(METHODS)}")
    if len(source_people) < 2:
        raise TranslationError(f"{len(source_people)} people labelled in both '{source_set.name}' and "
                               f"'{target_set.name}': too few to learn from")
    features, targets, mask = training_arrays(source_people, target_people, drop, copies, seed)
    weights = fit_ridge(features, targets, mask, **options) if method == "ridge" else \
        fit_mlp(features, targets, mask, seed=seed, **options)
    return Translator(source_set, target_set, method, weights)


# ---------------------------------------------------------------------------------------------- scoring
def score_translation(predicted: np.ndarray, truth: np.ndarray, boxes: np.ndarray, target_set: KeypointSet) -> dict:
    """Per B keypoint and overall: PCK@0.05 and PCK@0.1 (of the larger side of each person's box), PCKh@0.5 (of the
    head size, where the set has head-size keypoints and the person both of them), and the mean error in box sizes,
    over the keypoints the truth labels."""
    labelled = truth[..., 2] > 0
    distance = np.linalg.norm(predicted[..., :2] - truth[..., :2], axis=-1)
    size = np.maximum(boxes[:, 2], boxes[:, 3])[:, None]
    error = distance / np.maximum(size, 1e-6)
    metrics: dict = {}
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for threshold in PCK_THRESHOLDS:
        columns[f"pck@{threshold:g}"] = (error <= threshold, labelled)
    head = target_set.head_size_keypoints
    if head is not None:
        a, b = (target_set.index[n] for n in head)
        has_head = labelled[:, a] & labelled[:, b]
        head_size = np.linalg.norm(truth[:, a, :2] - truth[:, b, :2], axis=-1)[:, None]
        columns[f"pckh@{PCKH_THRESHOLD:g}"] = (distance <= PCKH_THRESHOLD * head_size, labelled & has_head[:, None])
    per_keypoint = {}
    for j, name in enumerate(target_set.keypoints):
        entry = {"people": int(labelled[:, j].sum())}
        for metric, (correct, counted) in columns.items():
            entry[metric] = float((correct[:, j] & counted[:, j]).sum() / counted[:, j].sum()) \
                if counted[:, j].any() else None
        entry["mean_error"] = float(error[labelled[:, j], j].mean()) if labelled[:, j].any() else None
        per_keypoint[name] = entry
    for metric, (correct, counted) in columns.items():
        metrics[metric] = float((correct & counted).sum() / counted.sum()) if counted.any() else None
    metrics["mean_error"] = float(error[labelled].mean()) if labelled.any() else None
    metrics["people"] = int(len(truth))
    metrics["keypoints"] = per_keypoint
    return metrics


def format_translation_table(metrics: dict, title: str) -> str:
    names = [m for m in ("pck@0.05", "pck@0.1", "pckh@0.5") if m in metrics]
    header = f"{'keypoint':<18} {'people':>7} " + " ".join(f"{m.upper().replace('PCKH', 'PCKh'):>9}" for m in names) \
        + f" {'mean err':>9}"
    lines = [title, header, "-" * len(header)]

    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    for name, entry in metrics["keypoints"].items():
        lines.append(f"{name:<18} {entry['people']:>7} " + " ".join(f"{cell(entry[m]):>9}" for m in names)
                     + f" {cell(entry['mean_error']):>9}")
    lines.append("-" * len(header))
    lines.append(f"{'all':<18} {metrics['people']:>7} " + " ".join(f"{cell(metrics[m]):>9}" for m in names)
                 + f" {cell(metrics['mean_error']):>9}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ pairing
def split_held_out(keys: list, share: float, seed: int) -> np.ndarray:
    """(N,) bool: True for the held-out people, chosen by whole groups (`keys`, e.g. their images) so that no image
    is in both parts."""
    groups = sorted(set(keys), key=str)
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(len(groups))[:max(1, math.ceil(share * len(groups)))].tolist()) if share > 0 else set()
    held_groups = {groups[i] for i in held}
    return np.array([k in held_groups for k in keys], bool)


@dataclass
class PeopleOfImage:
    """One image's people of one file: annotation ids (None for detections), keypoints (P, K, 3), boxes (P, 4)."""

    ids: list
    keypoints: np.ndarray
    boxes: np.ndarray


def pair_people(source: dict, target: dict, source_set: KeypointSet, target_set: KeypointSet, by: str,
                min_oks: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """People seen in both files, as arrays: A keypoints (N, K_A, 3), B keypoints (N, K_B, 3), their boxes in A and
    in B (N, 4 each; A's are zeros for detections) and the image of each (N,). `source` and `target` map an image key
    (its file name) to its PeopleOfImage. `by`: "id" (the same annotation ids: one set of people labelled twice) or
    "oks" (a prediction is the labelled person it matches best, at least `min_oks`, on the keypoints the two sets
    share by name)."""
    from lwpose.datasets.conversion import KeypointConversion
    from lwpose.labels.filling import match_by_labelled_oks

    conversion = KeypointConversion.by_name(source_set, target_set)
    shared = conversion.labelled & (conversion.second < 0)
    if by == "oks" and not shared.any():
        raise TranslationError(f"keypoint sets '{source_set.name}' and '{target_set.name}' share no keypoint by "
                               "name: predictions cannot be matched to labelled people")
    pairs_a, pairs_b, a_boxes, boxes, images = [], [], [], [], []
    for key, b_people in target.items():
        a_people = source.get(key)
        if a_people is None or not len(b_people.keypoints) or not len(a_people.keypoints):
            continue
        if by == "id":
            index = {ann_id: i for i, ann_id in enumerate(a_people.ids)}
            matched = np.array([index.get(ann_id, -1) for ann_id in b_people.ids], np.int64)
        else:
            in_target_set = conversion.convert(a_people.keypoints)
            areas = b_people.boxes[:, 2] * b_people.boxes[:, 3]
            matched, _ = match_by_labelled_oks(b_people.keypoints, shared, areas, in_target_set,
                                               target_set.sigmas_array, min_oks)
        for g in np.flatnonzero(matched >= 0):
            pairs_a.append(a_people.keypoints[matched[g]])
            pairs_b.append(b_people.keypoints[g])
            a_boxes.append(a_people.boxes[matched[g]])
            boxes.append(b_people.boxes[g])
            images.append(key)
    if not pairs_a:
        return (np.zeros((0, source_set.num_keypoints, 3)), np.zeros((0, target_set.num_keypoints, 3)),
                np.zeros((0, 4)), np.zeros((0, 4)), [])
    return (np.asarray(pairs_a), np.asarray(pairs_b), np.asarray(a_boxes, np.float64), np.asarray(boxes, np.float64),
            images)

"""Decoding several kinds of subject: a two-class set (people and animals) against one class holding the same
keypoints and limbs.

    python scripts/benchmark.py decode-classes                       # people=coco animals=ap10k, 1, 3 and 8 of each

The maps are the ground-truth maps (lwpose/codec.py's encoding) of synthetic scenes with as many people as animals
(scripts/synthetic_data.py), at the network's stride-8 map size for the scene's size. The same maps are decoded twice:
- as the two-class set: each class grouped from its own channels and limbs (two groupings);
- as one class with the same keypoint channels and limbs, plus one limb joining a person's nose to an animal's neck
  (a single class must reach every keypoint from its root) whose PAF channels are zero, so it joins no one: the same
  peaks, the same candidates, one grouping.
The ratio is the cost of grouping per class.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from bench_realtime import _median_ms  # noqa: E402
from lwpose import codec  # noqa: E402
from lwpose.inference.estimator import map_grouping  # noqa: E402
from lwpose.keypoints import KeypointSet, load_keypoint_set  # noqa: E402

MAP_STRIDE = 8


def one_class_twin(whole: KeypointSet) -> KeypointSet:
    """The multi-class set's channels and limbs as a single class, its classes joined by one limb from the first
    class's first keypoint to each other class's root."""
    base = whole.classes[0]
    names = {}  # channel -> a single-class name; the flip partners are carried explicitly, whatever the names say
    for channel, name in enumerate(whole.keypoints):
        names[channel] = name.replace("/", "_")
    limbs = [[names[int(a)], names[int(b)]] for a, b in whole.limb_keypoints]
    for other in whole.classes[1:]:
        root = other.keypoint_set.index[other.keypoint_set.root[0]]
        limbs.append([names[int(base.channels[0])], names[int(other.channels[root])]])
    flip = whole.flip_permutation
    pairs = sorted({tuple(sorted((names[c], names[int(flip[c])]))) for c in range(whole.num_keypoints)
                    if flip[c] != c})
    return load_keypoint_set({
        "name": f"{whole.name}_as_one_class", "keypoints": [names[c] for c in range(whole.num_keypoints)],
        "limbs": limbs, "root": [names[int(base.channels[base.keypoint_set.index[r]])] for r in base.keypoint_set.root],
        "sigmas": [float(s) for s in whole.sigmas], "flip_pairs": [list(p) for p in pairs]})


def scene_maps(count: int, scenes: int, image_size: int, whole: KeypointSet, seed: int) -> list:
    """(heatmaps, pafs) of `scenes` synthetic scenes with `count` people and `count` animals each."""
    import subprocess

    from lwpose.datasets.class_labels import read_coco_classes

    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "scripts", "synthetic_data.py"), "--output-dir", folder,
             "--seed", str(seed), "--train-images", "0", "--val-images", str(scenes), "--mix-images", "0",
             "--video-frames", "0", "--image-size", str(image_size), "--people", str(count), str(count),
             "--animals", str(count), str(count), "--small-people", "0", "0", "--crowd-probability", "0",
             "--no-progress"], capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"error: synthetic_data.py failed: {result.stderr.strip()}")
        labels = read_coco_classes(os.path.join(folder, "val", "person_keypoints.json"), whole)
    maps = []
    for image in labels.coco.images:
        keypoints = np.array([p.keypoints for p in image.people]).reshape(-1, whole.num_keypoints, 3)
        size = (-(-image.height // MAP_STRIDE), -(-image.width // MAP_STRIDE))
        maps.append(codec.encode(keypoints, whole, size, stride=MAP_STRIDE))
    return maps


def run_decode_classes(args) -> dict:
    whole = load_keypoint_set(args.keypoints)
    if whole.num_classes < 2:
        raise SystemExit(f"error: --keypoints {args.keypoints}: keypoint set '{whole.name}' has one class")
    twin = one_class_twin(whole)
    params = map_grouping()
    rows, details = [], {"keypoints": whole.num_keypoints, "limbs": len(whole.limb_keypoints),
                         "classes": [c.name for c in whole.classes], "scenes": args.scenes}
    codec.decode(*scene_maps(1, 1, args.image_size, whole, args.seed)[0], whole, params)  # numba: load the cache
    for count in args.instances:
        maps = scene_maps(count, args.scenes, args.image_size, whole, args.seed)
        padded = [(h, np.concatenate([p, np.zeros((twin.num_pafs - p.shape[0], *p.shape[1:]), p.dtype)]))
                  for h, p in maps]
        found = statistics.mean(len(codec.decode(h, p, whole, params)) for h, p in maps)
        found_one = statistics.mean(len(codec.decode(h, p, twin, params)) for h, p in padded)
        classes_ms = statistics.mean(_median_ms(lambda: codec.decode(h, p, whole, params), args.repeats)
                                     for h, p in maps)
        one_ms = statistics.mean(_median_ms(lambda: codec.decode(h, p, twin, params), args.repeats)
                                 for h, p in padded)
        size = "x".join(map(str, maps[0][0].shape[1:]))
        rows.append([f"{count} people + {count} animals", size, f"{found:.1f}", f"{classes_ms:.3f}",
                     f"{found_one:.1f}", f"{one_ms:.3f}", f"{classes_ms / one_ms:.2f}"])
    return {"title": f"Decoding per frame (ms, mean over {args.scenes} scenes of the median of {args.repeats}): "
                     f"'{whole.name}' ({whole.num_keypoints} keypoints, {len(whole.limb_keypoints)} limbs) as "
                     f"{whole.num_classes} classes, and the same channels and limbs as one class",
            "columns": ["scenes", "map size", "instances", "classes ms", "one-class instances", "one class ms",
                        "ratio"],
            "rows": rows, "details": details}


def register(subparsers) -> None:
    classes = subparsers.add_parser("decode-classes", help="decoding a multi-class set against one class with the "
                                                           "same keypoints and limbs")
    classes.add_argument("--keypoints", default=os.path.join(ROOT, "datasets", "recipes", "people_animals.json"),
                         help="a multi-class keypoint set (default: COCO people and AP-10K animals)")
    classes.add_argument("--instances", type=int, nargs="+", default=[1, 3, 8],
                         help="people (and as many animals) per scene")
    classes.add_argument("--scenes", type=int, default=10)
    classes.add_argument("--image-size", type=int, default=368)
    classes.add_argument("--repeats", type=int, default=20)
    classes.add_argument("--seed", type=int, default=0)
    classes.set_defaults(run=run_decode_classes)

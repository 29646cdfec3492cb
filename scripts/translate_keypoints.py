"""Translate between keypoint sets: learn where set B's keypoints lie from set A's, and add them to people of A.

    python scripts/translate_keypoints.py fit --source-labels coco.json --source-keypoints coco \
        --target-labels mpii.json --target-keypoints mpii --output coco_to_mpii.json
    python scripts/translate_keypoints.py apply --translator coco_to_mpii.json --input detections.json \
        --output detections_mpii.json
    python scripts/translate_keypoints.py evaluate --translator coco_to_mpii.json --source-labels detections.json \
        --target-labels mpii.json --target-format mpii

fit: the people of both files are paired (the same annotation ids: one set of people labelled twice; or, when the
source is a detections list such as val.py writes, each prediction with the labelled person it matches by OKS on the
keypoints the two sets share), a share of the images is held out (--held-out), and ridge regression and a small MLP
(lwpose/labels/translation.py) are fitted A -> B, and B -> A when both files are labels (--reverse-output). Each is
scored on the held-out people: per keypoint PCK@0.05, PCK@0.1 (of the box) and PCKh@0.5 where B has head-size
keypoints. --method picks the one written (default: the better mean PCK@0.1 on the held-out people).
apply: each entry of a COCO results list or annotation file gets "translated_keypoints" (x, y, score per B keypoint,
COCO coordinates); an annotation file also gets a top-level "translated_keypoints" naming B's keypoints.
evaluate: the same scores on any pair of files (e.g. a COCO model's detections on MPII images against MPII's labels).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from lwpose.errors import LwposeError, flag_hint  # noqa: E402
from lwpose.files import read_json as read_json_file  # noqa: E402
from lwpose.evaluation.coco import keypoint_ground_truth  # noqa: E402
from lwpose.evaluation.validation import write_json  # noqa: E402
from lwpose.keypoints import KeypointSet, load_keypoint_set  # noqa: E402
from lwpose.labels.translation import (METHODS, PeopleOfImage, TranslationError, fit_translator,  # noqa: E402
                                       format_translation_table, load_translator, pair_people, score_translation,
                                       split_held_out)

FORMATS = ("coco", "mpii")


def read_json(path: str, what: str):
    return read_json_file(path, what, TranslationError)


def read_people(path: str, keypoint_set: KeypointSet, file_format: str = "coco",
                images_folder: str | None = None) -> tuple[dict, bool]:
    """image file name -> PeopleOfImage (COCO coordinates) of a labels file (COCO, or MPII's list format) or a COCO
    results list (detections: no ids, no boxes, keyed by image id); and whether it is a labels file."""
    if file_format == "mpii":
        from lwpose.datasets.coco_reader import AnnotationError, as_coco_ground_truth
        from lwpose.datasets.mpii_reader import read_mpii_keypoints

        if not images_folder:
            raise TranslationError(f"{path}: MPII's list format needs its images folder (image sizes)")
        try:
            data = as_coco_ground_truth(read_mpii_keypoints(path, keypoint_set, images_folder)[0])
        except AnnotationError as e:
            raise TranslationError(str(e)) from None
    else:
        data = read_json(path, "keypoints file")
    if isinstance(data, list):
        return _detections(data, keypoint_set, path), False
    checked = keypoint_ground_truth(data, path, keypoint_set)
    people = {}
    for image in checked.images:
        anns = [a for a in checked.annotations_of(image["id"]) if not a["iscrowd"] and a["num_keypoints"] > 0]
        people[image["file_name"]] = PeopleOfImage(
            [a["id"] for a in anns],
            np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), keypoint_set.num_keypoints, 3),
            np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4))
    return people, True


def _detections(data: list, keypoint_set: KeypointSet, path: str) -> dict:
    by_image: dict = {}
    for i, entry in enumerate(data):
        keypoints = entry.get("keypoints") if isinstance(entry, dict) else None
        if not (isinstance(keypoints, list) and len(keypoints) == 3 * keypoint_set.num_keypoints):
            raise TranslationError(f"detections {path}: entry {i}: needs 'keypoints' with "
                                   f"{3 * keypoint_set.num_keypoints} numbers (keypoint set '{keypoint_set.name}')")
        by_image.setdefault(entry.get("image_id"), []).append(np.asarray(keypoints, np.float64).reshape(-1, 3))
    return {key: PeopleOfImage([None] * len(p), np.asarray(p), np.zeros((len(p), 4))) for key, p in by_image.items()}


def keyed_like(detections: dict, labels_path: str, labels: dict, file_format: str) -> dict:
    """Detections keyed by image id, re-keyed by the labels' file names (their image ids, from the labels file)."""
    if file_format == "mpii":  # as_coco_ground_truth numbers the images from 1 in file order
        names = list(labels)
        return {names[key - 1]: value for key, value in detections.items() if isinstance(key, int)
                and 0 < key <= len(names)}
    data = read_json(labels_path, "labels")
    name_of = {im["id"]: im["file_name"] for im in data.get("images", [])}
    return {name_of[key]: value for key, value in detections.items() if key in name_of}


def model_people(args, source_set: KeypointSet, images: list[str]) -> dict:
    """image file name -> PeopleOfImage: a model's predictions on the target's images, in the source set (by name;
    COCO coordinates, each keypoint's score as its third value)."""
    from lwpose.datasets.conversion import KeypointConversion
    from lwpose.evaluation.coco import COCO_COORDINATE_OFFSET, image_path
    from lwpose.images import read_image
    from lwpose.inference.estimator import PoseEstimator

    if not args.images_folder:
        raise TranslationError("--checkpoint-path needs --images-folder (the target labels' images)")
    estimator = PoseEstimator.from_checkpoint(args.checkpoint_path, height_size=args.height_size, flip=True,
                                              decode_at="image")
    conversion = KeypointConversion.by_name(estimator.keypoint_set, source_set)
    people = {}
    for name in images:
        found = estimator(read_image(image_path(args.images_folder, name))).keypoints.astype(np.float64)
        present = found[..., 2] > 0
        found[..., :2] = np.where(present[..., None], found[..., :2] + COCO_COORDINATE_OFFSET, 0)
        converted = conversion.convert(found)
        people[name] = PeopleOfImage([None] * len(converted), converted, np.zeros((len(converted), 4)))
    return people


def load_pairs(args, source_set, target_set):
    target, target_is_labels = read_people(args.target_labels, target_set, args.target_format, args.images_folder)
    if not target_is_labels:
        raise TranslationError(f"--target-labels {args.target_labels}: the target must be labels (a COCO keypoint "
                               "file or MPII's list), not detections")
    if args.checkpoint_path:
        source, source_is_labels = model_people(args, source_set, list(target)), False
    else:
        source, source_is_labels = read_people(args.source_labels, source_set, args.source_format,
                                               args.images_folder)
        if not source_is_labels:
            source = keyed_like(source, args.target_labels, target, args.target_format)
    by = "id" if source_is_labels and target_is_labels and args.pair_by == "auto" else \
        ("oks" if args.pair_by == "auto" else args.pair_by)
    a, b, a_boxes, boxes, images = pair_people(source, target, source_set, target_set, by)
    if not len(a):
        raise TranslationError(f"no person of {args.source_labels or args.checkpoint_path} pairs with one of "
                               f"{args.target_labels} (paired by {by}); are they the same images?")
    return a, b, a_boxes, boxes, images, by, source_is_labels


def fit_direction(a, b, boxes, images, held_out, source_set, target_set, args, say) -> dict:
    """Both methods fitted on the training people, scored on the held-out ones; returns method -> (translator,
    metrics)."""
    results = {}
    train = ~held_out
    for method in METHODS:
        start, cpu = time.perf_counter(), time.process_time()
        translator = fit_translator(source_set, target_set, a[train], b[train], method, seed=args.seed)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        metrics = score_translation(translator.predict(a[held_out]), b[held_out], boxes[held_out], target_set)
        metrics.update({"fit_seconds": round(seconds, 2), "fit_cpu_seconds": round(cpu_seconds, 2),
                        "train_people": int(train.sum()), "held_out_people": int(held_out.sum())})
        translator.report = {"method": method, "held_out": metrics, "source_labels": args.source_labels,
                             "target_labels": args.target_labels}
        say(format_translation_table(metrics, f"\n{source_set.name} -> {target_set.name}, {method}: "
                                              f"{int(held_out.sum())} held-out people ({int(train.sum())} "
                                              f"to learn from, fitted in {seconds:.1f} s, CPU {cpu_seconds:.1f} s)"))
        results[method] = (translator, metrics)
    return results


def choose(results: dict, method: str | None):
    if method:
        return results[method][0]
    return max(results.values(), key=lambda r: r[1]["pck@0.1"] or 0.0)[0]


def run_fit(args) -> int:
    source_set, target_set = load_keypoint_set(args.source_keypoints), load_keypoint_set(args.target_keypoints)
    a, b, a_boxes, boxes, images, by, both_labels = load_pairs(args, source_set, target_set)
    held_out = split_held_out(images, args.held_out, args.seed)
    print(f"{len(a)} people in both files (paired by {by}) in {len(set(images))} images; "
          f"{int(held_out.sum())} held out ({len(set(np.asarray(images)[held_out]))} images)")
    summary = {"pairs": len(a), "paired_by": by, "held_out": int(held_out.sum())}
    forward = fit_direction(a, b, boxes, images, held_out, source_set, target_set, args, print)
    translator = choose(forward, args.method)
    translator.save(args.output)
    summary[f"{source_set.name}->{target_set.name}"] = {m: r[1] for m, r in forward.items()}
    print(f"\nwrote {args.output}: {source_set.name} -> {target_set.name}, {translator.method}")
    if both_labels:
        reverse = fit_direction(b, a, a_boxes, images, held_out, target_set, source_set, args, print)
        summary[f"{target_set.name}->{source_set.name}"] = {m: r[1] for m, r in reverse.items()}
        reverse_path = args.reverse_output or os.path.splitext(args.output)[0] + "_reverse.json"
        choose(reverse, args.method).save(reverse_path)
        print(f"wrote {reverse_path}: {target_set.name} -> {source_set.name}")
    if args.metrics_out:
        write_json(summary, args.metrics_out)
        print(f"metrics: {args.metrics_out}")
    return 0


def run_evaluate(args) -> int:
    translator = load_translator(args.translator)
    a, b, _, boxes, images, by, _ = load_pairs(args, translator.source, translator.target)
    metrics = score_translation(translator.predict(a), b, boxes, translator.target)
    print(format_translation_table(metrics, f"{translator.source.name} -> {translator.target.name} "
                                            f"({translator.method}) on {len(a)} people paired by {by}"))
    if args.metrics_out:
        write_json(metrics, args.metrics_out)
    return 0


def run_apply(args) -> int:
    translator = load_translator(args.translator)
    data = read_json(args.input, "input")
    entries = data if isinstance(data, list) else data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TranslationError(f"input {args.input}: expected a COCO results list or a COCO keypoint file")
    count = translator.source.num_keypoints
    added = 0
    for i, entry in enumerate(entries):
        keypoints = entry.get("keypoints") if isinstance(entry, dict) else None
        if keypoints is None and isinstance(entry, dict) and entry.get("iscrowd"):
            continue
        if not (isinstance(keypoints, list) and len(keypoints) == 3 * count):
            raise TranslationError(f"input {args.input}: entry {i}: 'keypoints' must hold {3 * count} numbers "
                                   f"(keypoint set '{translator.source.name}' of {args.translator})")
        people = np.asarray(keypoints, np.float64).reshape(1, count, 3)
        people[..., 2] = np.minimum(people[..., 2], 1.0) if isinstance(data, dict) else people[..., 2]
        translated = translator.predict(people)[0]
        entry["translated_keypoints"] = [round(float(v), 2) if k % 3 < 2 else round(float(v), 3)
                                         for k, v in enumerate(translated.ravel())]
        added += int(translated[:, 2].max() > 0)
    if isinstance(data, dict):
        data["translated_keypoints"] = {"keypoint_set": translator.target.to_dict(),
                                        "from": translator.source.name, "translator": os.path.abspath(args.translator),
                                        "method": translator.method}
    write_json(data, args.output)
    print(f"wrote {args.output}: {translator.target.name} keypoints added to {added} of {len(entries)} entries "
          f"(\"translated_keypoints\", x, y, score each; COCO coordinates)")
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def pair_arguments(command, with_sets: bool):
        sources = command.add_mutually_exclusive_group(required=True)
        sources.add_argument("--source-labels",
                             help="people in set A: COCO labels, or a COCO results list (detections)")
        sources.add_argument("--checkpoint-path", help="or a model predicting set A (by name): its people on the "
                                                       "target's images (--images-folder) are the source")
        command.add_argument("--height-size", type=int, default=368, help="with --checkpoint-path: input height")
        command.add_argument("--target-labels", required=True, help="the same people labelled in set B")
        if with_sets:
            command.add_argument("--source-keypoints", required=True, help="set A (shipped name or JSON file)")
            command.add_argument("--target-keypoints", required=True, help="set B")
        command.add_argument("--source-format", choices=FORMATS, default="coco")
        command.add_argument("--target-format", choices=FORMATS, default="coco")
        command.add_argument("--images-folder", default=None,
                             help="the target's images (for --checkpoint-path, and MPII's list format: image sizes)")
        command.add_argument("--pair-by", choices=("auto", "id", "oks"), default="auto",
                             help="pair people by annotation id (two label files of the same people) or by OKS on "
                                  "the shared keypoints (auto: id for two label files, else OKS)")
        command.add_argument("--metrics-out", default=None, help="the scores as JSON")

    fit = commands.add_parser("fit", help="learn A -> B (and B -> A) from people in both")
    pair_arguments(fit, True)
    fit.add_argument("--output", required=True, help="the translator A -> B (JSON)")
    fit.add_argument("--reverse-output", default=None, help="the translator B -> A (default: OUTPUT_reverse.json)")
    fit.add_argument("--method", choices=METHODS, default=None,
                     help="the method written (default: the better held-out PCK@0.1)")
    fit.add_argument("--held-out", type=float, default=0.2, help="share of the images held out for scoring")
    fit.add_argument("--seed", type=int, default=0)
    evaluate = commands.add_parser("evaluate", help="score a translator on a pair of files")
    evaluate.add_argument("--translator", required=True)
    pair_arguments(evaluate, False)
    apply = commands.add_parser("apply", help="add B's keypoints to a detections or annotations file of A")
    apply.add_argument("--translator", required=True)
    apply.add_argument("--input", required=True, help="COCO results list or COCO keypoint file in set A")
    apply.add_argument("--output", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return {"fit": run_fit, "evaluate": run_evaluate, "apply": run_apply}[args.command](args)
    except (LwposeError, ValueError, OSError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

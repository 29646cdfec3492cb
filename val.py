"""Validate a model on a COCO-format keypoint file with pycocotools (OKS with the keypoint set's sigmas).

    python val.py --labels person_keypoints_val2017.json --images-folder val2017 --checkpoint-path model.pth \
        --output-dir runs/val                                      # metrics.json and detections.json there
    python val.py --mix recipe.json --checkpoint-path model.pth     # every source of a mix recipe, one table

The model's keypoints meet the ground truth's by name, then through either set's aliases (a set saying
`"aliases": {"head": ["nose"]}` scores a model's `nose` as the ground truth's `head`, and the other way). A model
that predicts some of the ground truth's keypoints and nothing else (your own set trained from a COCO file) is scored
on its own keypoints: the ground truth is converted into its set as training labels are (`--score-on`).

A multi-class model (scripts/make_keypoint_set.py --classes) is scored per class: each class against the category of
its name (or the one --category-class maps to it) with its own keypoints and sigmas, one row per class; the
detections carry each class's category_id.
"""
import argparse
import os
import sys

from lwpose.datasets.mix_evaluation import evaluation_sets
from lwpose.datasets.mix_evaluation import validate_mix as validate_mix_sets
from lwpose.datasets.mix_recipe import load_mix_recipe
from lwpose.errors import LwposeError, flag_hint
from lwpose.evaluation.classes import format_class_table, load_class_ground_truths, validate_classes
from lwpose.evaluation.coco import (METRIC_NAMES, format_metric, ground_truth_in_set,
                                    load_keypoint_ground_truth)
from lwpose.evaluation.per_keypoint import format_per_keypoint
from lwpose.evaluation.validation import format_dataset_table, validate_coco, write_json
from lwpose.evaluation.visualize import write_visualisations
from lwpose.inference.estimator import PoseEstimator

MULTISCALE = (0.5, 1.0, 1.5, 2.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default=None, help="COCO-format keypoint ground truth (JSON)")
    parser.add_argument("--images-folder", default=None, help="folder the ground truth's file_names are in")
    parser.add_argument("--mix", default=None, metavar="RECIPE",
                        help="score every source of a mix recipe on its own keypoints instead (one table)")
    parser.add_argument("--pck-keypoints", nargs="+", default=(), metavar="NAME",
                        help="with --mix: add a PCK@0.1 column for each of these keypoints")
    parser.add_argument("--checkpoint-path", default=None, help="lwpose checkpoint (see scripts/import_weights.py)")
    parser.add_argument("--height-size", type=int, default=368, help="network input height (default 368)")
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--multiscale", action="store_true",
                        help=f"average over scales {', '.join(map(str, MULTISCALE))}")
    parser.add_argument("--decode-at", choices=("image", "map"), default="image",
                        help="decode on maps resized to the image (reference) or at map resolution (fast)")
    parser.add_argument("--upsample", type=int, default=1,
                        help="with --decode-at map: heatmap upsampling factor (default 1: peaks refined on the "
                             "stride-8 maps, as demo.py)")
    parser.add_argument("--gt-keypoints", default=None,
                        help="keypoint set of the ground truth (shipped name or JSON); found from its names if omitted")
    parser.add_argument("--category-class", nargs="+", action="extend", default=[], metavar="CATEGORY=CLASS",
                        help="a multi-class model: the class a ground-truth category whose name is not a class's "
                             "is scored as (*=CLASS: every category not named)")
    parser.add_argument("--score-on", default="auto", metavar="labels|model|SET",
                        help="the keypoints scored: 'labels' the ground truth's own (those the model lacks count as "
                             "missed), 'model' the model's (the ground truth converted into its set by name, aliases "
                             "and derived keypoints), or a keypoint set (name or JSON) both are brought into; 'auto' "
                             "(default): 'model' when the model predicts only keypoints the ground truth has, and "
                             "fewer, else 'labels'")
    parser.add_argument("--output-dir", default=None,
                        help="write metrics.json and detections.json into this folder")
    parser.add_argument("--output-name", default=None,
                        help="where to write the COCO detections (default: next to the metrics, or in --output-dir; "
                             "none without either)")
    parser.add_argument("--metrics-out", default=None, help="write the metrics as JSON here")
    parser.add_argument("--backend", default="auto",
                        help="inference engine: torch, onnxruntime, openvino, or auto (default) = the fastest "
                             "installed (the same maps within 2e-6)")
    parser.add_argument("--device", default="cpu", help="device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--openvino-ir", default=None,
                        help="score this OpenVINO IR instead (e.g. an INT8 one from scripts/quantize.py); one made "
                             "outside lwpose takes its keypoint set from --checkpoint-path")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--per-keypoint", action="store_true",
                        help="print PCK per keypoint, and per body part where the names say it (head, shoulder, ...)")
    parser.add_argument("--vis-dir", default=None, metavar="DIR",
                        help="write pictures of predictions beside the ground truth here (with --mix, a folder per "
                             "dataset), and worst_images.jpg, a contact sheet of the worst images by OKS")
    parser.add_argument("--vis-every", type=int, default=1, metavar="N",
                        help="with --vis-dir: a picture of every N-th image (default 1: all; 0: only the sheet)")
    parser.add_argument("--vis-worst", type=int, default=16, metavar="K",
                        help="with --vis-dir: the contact sheet shows the K worst images (default 16; 0: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.checkpoint_path is None and args.openvino_ir is None:
        parser.error("give the model: --checkpoint-path or --openvino-ir")
    if args.vis_every < 0 or args.vis_worst < 0:
        parser.error("--vis-every and --vis-worst cannot be negative")
    if args.output_dir:
        args.metrics_out = args.metrics_out or os.path.join(args.output_dir, "metrics.json")
        args.output_name = args.output_name or os.path.join(args.output_dir, "detections.json")
    elif args.metrics_out and not args.output_name:
        stem, _ = os.path.splitext(args.metrics_out)
        args.output_name = f"{stem}_detections.json"
    return args


def scored_ground_truth(gt, model_set, score_on: str):
    """The ground truth to score and a line saying what is scored: converted into the model's set (or another
    one) when asked or when 'auto' finds the model predicts a strict subset of the ground truth's keypoints."""
    from lwpose.datasets.conversion import KeypointConversion
    from lwpose.keypoints import load_keypoint_set

    if score_on == "auto":
        labelled = KeypointConversion.by_name(gt.keypoint_set, model_set).labelled
        subset = labelled.all() and (model_set.indices_in(gt.keypoint_set) < 0).any()
        score_on = "model" if subset else "labels"
    if score_on == "labels":
        return gt, None
    target = model_set if score_on == "model" else load_keypoint_set(score_on)
    conversion = KeypointConversion.by_name(gt.keypoint_set, target)
    renamed = [f"{name} <- {gt.keypoint_set.keypoints[first]}" for name, first, second
               in zip(target.keypoints, conversion.first, conversion.second)
               if first >= 0 and second < 0 and gt.keypoint_set.keypoints[first] != name]
    derived = [f"{name} = midpoint of {gt.keypoint_set.keypoints[first]}, {gt.keypoint_set.keypoints[second]}"
               for name, first, second in zip(target.keypoints, conversion.first, conversion.second) if second >= 0]
    unlabelled = [name for name, first in zip(target.keypoints, conversion.first) if first < 0]
    line = (f"scoring on the {target.num_keypoints} keypoints of '{target.name}'"
            + (" (the model's)" if target is model_set else "")
            + f": the ground truth's '{gt.keypoint_set.name}' converted by name"
            + (f", aliases ({', '.join(renamed)})" if renamed else "")
            + (f", derived ({'; '.join(derived)})" if derived else "")
            + (f"; not in the ground truth: {', '.join(unlabelled)}" if unlabelled else "")
            + f". --score-on labels scores all {gt.keypoint_set.num_keypoints} of '{gt.keypoint_set.name}' instead")
    return ground_truth_in_set(gt, target), line


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mix:
        return validate_mix(args)
    if not (args.labels and args.images_folder):
        print("error: give --labels and --images-folder, or --mix RECIPE", file=sys.stderr)
        return 2
    try:
        if not os.path.isdir(args.images_folder):
            raise ValueError(f"--images-folder {args.images_folder} is not a folder")
        estimator = make_estimator(args)
        keypoint_set = estimator.keypoint_set
        if keypoint_set.num_classes > 1:
            return validate_per_class(args, estimator)
        gt = load_keypoint_ground_truth(args.labels, args.gt_keypoints, fallback_set=keypoint_set)
        gt, scoring = scored_ground_truth(gt, keypoint_set, args.score_on)
    except (LwposeError, ValueError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    if scoring:
        print(f"note: {scoring}")
    if estimator.flip_note:
        print(f"note: --{estimator.flip_note}")
    mapping = keypoint_set.indices_in(gt.keypoint_set)
    missing = [n for n, i in zip(gt.keypoint_set.keypoints, mapping) if i < 0]
    matched = [f"{n} <- {keypoint_set.keypoints[i]}" for n, i in zip(gt.keypoint_set.keypoints, mapping)
               if i >= 0 and keypoint_set.keypoints[i] != n]
    if matched:
        print(f"note: scored through aliases: {', '.join(matched)} (ground truth <- model)")
    if len(missing) == gt.keypoint_set.num_keypoints:
        print(f"error: the model's keypoints ({keypoint_set.name}) share no name with the ground truth's "
              f"({gt.keypoint_set.name})", file=sys.stderr)
        return 2
    if missing:
        print(f"note: the model does not predict {missing}; they count as missed")
    report = validate_coco(estimator, gt, args.images_folder, progress=not args.no_progress,
                           max_images=args.max_images, mapping=mapping, pck=args.per_keypoint)
    if args.output_name:
        write_json(report.detections, args.output_name)
    look_closer(args, gt, report, args.images_folder, args.vis_dir, gt.keypoint_set.name)
    print(report.metrics["summary"] if "summary" in report.metrics else "no detections")
    if report.unreadable:
        print(f"{len(report.unreadable)} of {report.num_images} images could not be read and count as missed: "
              + ", ".join(report.unreadable[:10]) + (" ..." if len(report.unreadable) > 10 else ""))
    print(" ".join(f"{name} {format_metric(report.metrics[name])}" for name in METRIC_NAMES[:6])
          + f"  ({report.num_images} images, {len(report.detections)} detections, {report.seconds:.1f} s)")
    if args.metrics_out:
        write_json(report.to_json() | {"labels": args.labels, "scored_keypoint_set": gt.keypoint_set.name,
                                       **run_description(args)}, args.metrics_out)
    print(written_outputs(args))
    return 0


def validate_per_class(args, estimator: PoseEstimator) -> int:
    """A multi-class model: each class scored on its own category, one row per class."""
    from lwpose.datasets.class_labels import parse_category_classes

    truths, unscored = load_class_ground_truths(args.labels, estimator.keypoint_set,
                                                parse_category_classes(args.category_class))
    for name in unscored:
        print(f"note: the ground truth has no category for class '{name}'; it is not scored")
    report = validate_classes(estimator, truths, args.images_folder, unscored, progress=not args.no_progress,
                              max_images=args.max_images)
    if args.output_name:
        write_json(report.detections, args.output_name)
    print(format_class_table(report.rows))
    if report.unreadable:
        print(f"{len(report.unreadable)} of {report.num_images} images could not be read and count as missed: "
              + ", ".join(report.unreadable[:10]) + (" ..." if len(report.unreadable) > 10 else ""))
    print(f"({report.num_images} images, {len(report.detections)} detections, {report.seconds:.1f} s)")
    if args.metrics_out:
        write_json(report.to_json() | {"labels": args.labels, **run_description(args)}, args.metrics_out)
    print(written_outputs(args))
    return 0


def written_outputs(args) -> str:
    written = [f"metrics {args.metrics_out}" if args.metrics_out else "",
               f"detections {args.output_name}" if args.output_name else ""]
    written = [w for w in written if w]
    return ("wrote " + ", ".join(written)) if written else \
        "metrics and detections not written (--output-dir DIR keeps both)"


def look_closer(args, gt, report, images_folder: str, vis_dir: str | None, title: str) -> None:
    """What --per-keypoint and --vis-dir ask for, of one dataset's validation."""
    if args.per_keypoint:
        print(format_per_keypoint(report.metrics["per_keypoint"], f"per keypoint: {title}"))
    if vis_dir:
        images = gt.images[:args.max_images] if args.max_images else gt.images
        pictures = write_visualisations(gt, report.detections, images_folder, vis_dir, args.vis_every,
                                        args.vis_worst, progress=not args.no_progress,
                                        image_ids=[image["id"] for image in images])
        print(f"pictures: {len(pictures.pictures)} in {vis_dir}"
              + (f"; the {len(pictures.worst)} worst images by OKS in {pictures.sheet}" if pictures.sheet else ""))


def make_estimator(args) -> PoseEstimator:
    """The model and decoding the flags ask for, through the same API a Python user calls."""
    model = args.openvino_ir or args.checkpoint_path
    keypoint_set = None
    if args.openvino_ir and args.checkpoint_path:
        from lwpose.interop.checkpoint import load_checkpoint

        keypoint_set = load_checkpoint(args.checkpoint_path)["keypoint_set"]
    return PoseEstimator.from_checkpoint(model, "openvino" if args.openvino_ir else args.backend, args.device,
                                         keypoint_set=keypoint_set, height_size=args.height_size,
                                         scales=MULTISCALE if args.multiscale else (1.0,), flip=args.flip,
                                         decode_at=args.decode_at, upsample=args.upsample)


def run_description(args) -> dict:
    """What was scored and how, for the metrics file."""
    return {"checkpoint": args.checkpoint_path, "openvino_ir": args.openvino_ir, "height_size": args.height_size,
            "flip": args.flip, "multiscale": args.multiscale, "decode_at": args.decode_at}


def validate_mix(args) -> int:
    """Each source of the recipe scored on its own keypoints (its sigmas, its head size), one row each."""
    try:
        estimator = make_estimator(args)
        keypoint_set = estimator.keypoint_set
        sets = evaluation_sets(load_mix_recipe(args.mix), keypoint_set)
    except (LwposeError, ValueError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    if estimator.flip_note:
        print(f"note: --{estimator.flip_note}")
    for evaluation in sets:
        if evaluation.unscored:
            print(f"note: {evaluation.name}: the model has no keypoint for {evaluation.unscored}; they count as missed "
                  "in AP and are left out of PCK")
    result = validate_mix_sets(estimator, sets, progress=not args.no_progress, max_images=args.max_images,
                               keypoints=tuple(args.pck_keypoints))
    for evaluation, report in zip(sets, result.reports):
        look_closer(args, evaluation.gt, report, evaluation.images_folder,
                    args.vis_dir and os.path.join(args.vis_dir, evaluation.name), evaluation.name)
    if args.output_name:
        write_json({evaluation.name: report.detections for evaluation, report in zip(sets, result.reports)},
                   args.output_name)
    if args.metrics_out:
        write_json({"datasets": {row["dataset"]: row for row in result.rows}, "weighted_mean": result.mean,
                    "recipe": args.mix, "keypoint_set": keypoint_set.name, **run_description(args)},
                   args.metrics_out)
    print(written_outputs(args))
    print(format_dataset_table(result.rows, result.mean, tuple(args.pck_keypoints)))  # the table last, as read
    return 0


if __name__ == "__main__":
    sys.exit(main())

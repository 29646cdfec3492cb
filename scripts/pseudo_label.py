"""Fill the keypoints a dataset lacks with a model that predicts them (pseudo-labels), or measure how well it would.

    python scripts/pseudo_label.py --checkpoint-path union.pth --labels aic_train.json --images-folder aic/images \
        --output aic_filled.json                     # AIC people get the model's eyes, ears and nose
    python scripts/pseudo_label.py --checkpoint-path weights/hpe0001.pth --labels person_keypoints_train2017.json \
        --images-folder train2017 --evaluate-hidden left_eye right_eye left_ear right_ear left_wrist right_wrist \
        left_ankle right_ankle --metrics-out hidden.json          # hide known keypoints, fill them, score the fill

The model runs on every image with labelled people (input height --height-size, averaged with the mirrored image,
maps resized to the image: the reference's validation path, which places keypoints best). Its people are matched to
the labelled ones by OKS on the keypoints the source labels; a matched person gets the prediction's keypoints the
source lacks, and keypoints the prediction lacks (or all of them, for a person without a match) are looked for from
the person's labelled keypoints along the limbs' fields (--guided). Candidates scoring at least --min-score are
written as pseudo-labels. The output is the source's file in the model's keypoint set: labelled keypoints exactly as
they were, pseudo-labels flagged per keypoint in "pseudo_scores" (lwpose/labels/filled_file.py), everything else
unlabelled. Train on it from a mix recipe (source "labels": the filled file, "keypoints": the model's set,
"pseudo_weight": 0.5) or with scripts/prepare_train_labels.py --pseudo-weight.

--detections fills from a COCO results file instead of a model (any model's detections, e.g. val.py's output).
--evaluate-hidden NAME...: the named keypoints are hidden from the labels and filled; the fill is scored against them
(coverage and box-normalised PCK per keypoint, a table and a PNG curve against --min-score; docs/label-completion.md).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import LwposeError, flag_hint  # noqa: E402
from lwpose.files import read_json as read_json_file  # noqa: E402
from lwpose.evaluation.validation import write_json  # noqa: E402
from lwpose.inference.grouping import GroupingParams  # noqa: E402
from lwpose.keypoints import find_shipped_set_for_names, load_keypoint_set  # noqa: E402
from lwpose.labels.filled_file import PseudoLabelError  # noqa: E402
from lwpose.labels.filling import (DEFAULT_MIN_OKS, DEFAULT_MIN_SCORE, GUIDED_MODES, FillSettings,  # noqa: E402
                                   detections_evidence, estimator_evidence, fill_coco_labels, format_keypoint_table)
from lwpose.labels.hidden_evaluation import (format_curve_table, format_hidden_table, plot_curve,  # noqa: E402
                                             score_hidden)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-path", default=None, help="the model (an lwpose checkpoint, ONNX or IR)")
    parser.add_argument("--detections", default=None,
                        help="fill from this COCO results file instead of a model (needs --detections-keypoints)")
    parser.add_argument("--detections-keypoints", default=None,
                        help="keypoint set of --detections (a shipped name or a JSON file)")
    parser.add_argument("--labels", required=True, help="the source: a COCO-format keypoint file")
    parser.add_argument("--images-folder", default=None, help="folder the labels' file_names are in")
    parser.add_argument("--source-keypoints", default=None,
                        help="keypoint set the labels are in (default: found from the category's keypoint names)")
    parser.add_argument("--output", default=None, help="the filled labels to write (JSON)")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                        help=f"a candidate becomes a pseudo-label from this score on (default {DEFAULT_MIN_SCORE})")
    parser.add_argument("--min-oks", type=float, default=DEFAULT_MIN_OKS,
                        help="OKS (on the labelled keypoints) a prediction needs to be matched to a labelled person "
                             f"(default {DEFAULT_MIN_OKS})")
    parser.add_argument("--guided", choices=GUIDED_MODES, default="fallback",
                        help="look for keypoints from the labelled ones along the limbs' fields: for what the matched "
                             "prediction lacks (fallback, default), before the prediction (first), or never (off)")
    parser.add_argument("--height-size", type=int, default=368, help="network input height (default 368)")
    parser.add_argument("--no-flip", action="store_true", help="do not average with the mirrored image")
    parser.add_argument("--backend", default="auto", help="inference engine (torch, onnxruntime, openvino, auto)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--evaluate-hidden", nargs="+", default=None, metavar="NAME",
                        help="hide these keypoints (of the model's set, labelled by the source), fill them and score "
                             "the fill against them")
    parser.add_argument("--metrics-out", default=None, help="with --evaluate-hidden: the figures as JSON")
    parser.add_argument("--curve-png", default=None,
                        help="with --evaluate-hidden: the coverage and PCK curve against --min-score (default: "
                             "--metrics-out with .png, else hidden_keypoints_curve.png)")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if (args.checkpoint_path is None) == (args.detections is None):
        parser.error("give the model (--checkpoint-path) or its detections (--detections), one of them")
    if args.detections and not args.detections_keypoints:
        parser.error("--detections needs --detections-keypoints (the set its keypoints are in)")
    if args.checkpoint_path and not args.images_folder:
        parser.error("--checkpoint-path needs --images-folder")
    if not args.output and not args.evaluate_hidden:
        parser.error("give --output (the filled labels), or --evaluate-hidden to measure the fill")
    if args.metrics_out and not args.evaluate_hidden:
        parser.error("--metrics-out goes with --evaluate-hidden")
    return args


def read_json(path: str, what: str):
    return read_json_file(path, what, PseudoLabelError)


def source_set_of(data, args, model_set):
    if args.source_keypoints:
        return load_keypoint_set(args.source_keypoints)
    categories = [c for c in data.get("categories", []) if isinstance(c, dict) and isinstance(c.get("keypoints"),
                                                                                              list)]
    names = categories[0]["keypoints"] if categories else []
    if model_set.matches_names(names):
        return model_set
    found = find_shipped_set_for_names(names)
    if found is None:
        raise PseudoLabelError(f"{args.labels}: its {len(names)} keypoint names match no shipped keypoint set; name "
                               "its set with --source-keypoints")
    return found


def run(args) -> int:
    start, cpu_start = time.perf_counter(), time.process_time()
    data = read_json(args.labels, "labels")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise PseudoLabelError(f"labels {args.labels}: expected a COCO keypoint file (an object with 'images', "
                               "'annotations', 'categories')")
    if args.max_images:
        kept = {image.get("id") for image in data["images"][:args.max_images] if isinstance(image, dict)}
        data = {**data, "images": data["images"][:args.max_images],
                "annotations": [a for a in data.get("annotations", []) if isinstance(a, dict)
                                and a.get("image_id") in kept]}
    flip = not args.no_flip
    if args.checkpoint_path:
        from lwpose.inference.estimator import PoseEstimator

        estimator = PoseEstimator.from_checkpoint(args.checkpoint_path, args.backend, args.device,
                                                  height_size=args.height_size, flip=flip, decode_at="image")
        model_set = estimator.keypoint_set
        if not os.path.isdir(args.images_folder):
            raise PseudoLabelError(f"images folder {args.images_folder} does not exist")
        predict = estimator_evidence(estimator, args.images_folder, maps=args.guided != "off")
        model = {"model": os.path.abspath(args.checkpoint_path), "height_size": args.height_size, "flip": flip}
    else:
        model_set = load_keypoint_set(args.detections_keypoints)
        predict = detections_evidence(read_json(args.detections, "detections"), model_set, args.detections)
        model = {"detections": os.path.abspath(args.detections)}
    source_set = source_set_of(data, args, model_set)
    settings = FillSettings(args.min_score, args.min_oks, args.guided, GroupingParams())
    hidden = tuple(args.evaluate_hidden or ())
    result = fill_coco_labels(data, args.labels, source_set, model_set, predict, settings, hidden,
                              progress=not args.no_progress,
                              details={**model, "guided": args.guided, "labels": os.path.abspath(args.labels)})
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"source '{source_set.name}' -> model keypoints '{model_set.name}': {len(result.truth)} labelled people, "
          f"{int(result.matched.sum())} matched to the model's people (OKS >= {args.min_oks:g} on the labelled "
          f"keypoints); {seconds:.1f} s, CPU {cpu_seconds:.1f} s")
    if result.unreadable:
        print(f"{len(result.unreadable)} images could not be read; their people are left unfilled: "
              + ", ".join(result.unreadable[:10]))
    rows = result.keypoint_table()
    if rows:
        print(format_keypoint_table(rows, args.min_score))
    else:
        print("the source labels every keypoint of the model: nothing to fill")
    if args.output:
        write_json(result.data, args.output)
        print(f"wrote {args.output}: {sum(r['filled'] for r in rows)} pseudo-labels "
              f"(train with a recipe source {{\"labels\": \"{args.output}\", \"keypoints\": \"{model_set.name}\", "
              "\"pseudo_weight\": 0.5}})")
    if hidden:
        metrics = score_hidden(result, hidden)
        print("\nhidden keypoints, filled and scored against their labels (PCK among the filled, box-normalised):")
        print(format_hidden_table(metrics))
        print("\ncoverage and PCK (means over the hidden keypoints) against --min-score:")
        print(format_curve_table(metrics))
        metrics.update({"labels": os.path.abspath(args.labels), "hidden": list(hidden), "min_oks": args.min_oks,
                        "guided": args.guided, **model, "seconds": round(seconds, 1),
                        "cpu_seconds": round(cpu_seconds, 1)})
        png = args.curve_png or (os.path.splitext(args.metrics_out)[0] + ".png" if args.metrics_out
                                 else "hidden_keypoints_curve.png")
        plot_curve(metrics, png, f"{os.path.basename(args.labels)}: hidden {', '.join(hidden)}")
        print(f"curve: {png}")
        if args.metrics_out:
            write_json(metrics, args.metrics_out)
            print(f"metrics: {args.metrics_out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (LwposeError, ValueError, OSError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Labels for free, the closed loop, on nothing but a CPU: a union model fills what each dataset lacks, and a model
retrained on the filled labels is compared with it on people labelled in full.

    python scripts/label_loop.py                       # outputs/label_loop; about 15 minutes on 2 cores

Every step is the project's own entry point run as a subprocess (each command is printed):
  1. scripts/synthetic_data.py: a COCO-labelled split (no head top, no neck) and a smaller AIC-labelled split (no
     nose, eyes, ears) of different synthetic people, and a held-out split labelled in their union (coco_aic: all 19).
     The AIC split is a tenth of the data by default, as a dataset that alone labels a keypoint often is small: the
     union model sees head top and neck in a tenth of its samples, the filled files give them to every sample;
  2. scripts/prepare_train_labels.py --mix and train.py --mix: the union model, from scratch, each source's missing
     keypoints masked (the mixing this project already does);
  3. scripts/pseudo_label.py with the union model: each split's missing keypoints filled;
  4. the same training (same seed, same iterations) on the filled files, pseudo-labels at --pseudo-weight;
  5. both models scored on the held-out split: COCO AP over all 19 keypoints, AP over the completed keypoints only
     (the keypoints one source or the other lacked), and PCK@0.1 per completed keypoint.
The network, crops and scene settings are scripts/quickstart.py's (sized for a 2-core CPU); both trainings run for
the same --iterations, so the comparison holds however loaded the machine is. Outputs under --output-dir: data/,
recipes and prepared labels, runs/union and runs/filled (checkpoints), the filled files, loop.json (the figures)
and loop.txt (the report).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from quickstart import SCENE_ARGS, StepFailed, default_height_size, run_step, training_scale_range  # noqa: E402

from lwpose.keypoints.union import union_set_data  # noqa: E402
from lwpose.training.trainer import latest_checkpoint  # noqa: E402

UNION = {"name": "coco_aic", "sets": ["coco", "aic"]}
SOURCES = (("coco", "train", "coco"), ("aic", "aic", "aic"))  # (source name, split folder, keypoint set)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=os.path.join("outputs", "label_loop"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coco-images", type=int, default=1800, help="synthetic images of the COCO-labelled split")
    parser.add_argument("--aic-images", type=int, default=200, help="synthetic images of the AIC-labelled split")
    parser.add_argument("--source-ratios", type=float, nargs=2, default=None, metavar=("COCO", "AIC"),
                        help="shares of every batch (default: in proportion to each split's samples)")
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=4000, help="training iterations of each of the two models")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                        help="training processes (torchrun, one thread each)")
    parser.add_argument("--pseudo-weight", type=float, default=0.5, help="loss weight of the pseudo-labels")
    parser.add_argument("--min-score", type=float, default=None, help="scripts/pseudo_label.py --min-score")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def write_json(obj, path: str) -> str:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return path


def train(name: str, recipe: str, prepared: str, out: str, args, height: int, timings: list) -> str:
    """The quickstart's network and schedule for exactly --iterations (the same for both models)."""
    python = sys.executable
    run_step(f"prepare {name}", [python, "scripts/prepare_train_labels.py", "--mix", recipe, "--output-name", prepared],
             timings)
    experiment = os.path.join(out, "runs", name)
    if os.path.isdir(os.path.join(experiment, "checkpoints")):
        raise StepFailed(f"{experiment} holds a previous run; choose another --output-dir or remove it")
    input_size = 96
    launcher, env = ([python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}"],
                     {"OMP_NUM_THREADS": "1"}) if args.processes > 1 else ([python], None)
    run_step(f"train {name}", [
        *launcher, "train.py", "--mix", recipe, "--prepared-train-labels", prepared,
        "--experiments-folder", os.path.join(out, "runs"), "--experiment-name", name, "--input-size", str(input_size),
        "--scale-range", *(f"{f:.3g}" for f in training_scale_range(height, input_size)), "--max-rotate-degree", "20",
        "--backbone-width", "0.25", "--num-channels", "32", "--num-refinement-stages", "0", "--base-lr", "4e-3",
        "--weight-decay", "0", "--lr-drop-epochs", "--lr-drop-progress", "0.75", "0.9",
        "--batch-size", str(args.batch_size // args.processes), "--channels-last",
        "--max-iterations", str(args.iterations), "--num-workers", "1", "--seed", str(args.seed),
        "--log-after", "50", "--checkpoint-after", str(args.iterations), "--keep-checkpoints", "1",
        *(["--no-progress"] if args.no_progress else [])], timings, env=env)
    checkpoint = latest_checkpoint(experiment)
    if checkpoint is None:
        raise StepFailed(f"train.py wrote no checkpoint under {experiment}")
    return checkpoint


def score(checkpoint: str, labels: str, images: str, union_path: str, completed: list, height: int) -> dict:
    """AP over every keypoint, AP over the completed ones, PCK@0.1 of each completed keypoint (held-out split)."""
    import copy

    from lwpose.evaluation.coco import evaluate_keypoints, load_keypoint_ground_truth
    from lwpose.evaluation.validation import validate_coco
    from lwpose.inference.estimator import PoseEstimator

    estimator = PoseEstimator.from_checkpoint(checkpoint, height_size=height, flip=True, decode_at="map")
    gt = load_keypoint_ground_truth(labels, union_path)
    report = validate_coco(estimator, gt, images, progress=False, pck=True)
    # AP on the completed keypoints: the ground truth keeps only them (OKS over what a person has labelled).
    keep = np.array([name in completed for name in gt.keypoint_set.keypoints])
    restricted = copy.deepcopy(gt)
    for ann in restricted.data["annotations"]:
        keypoints = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        keypoints[~keep] = 0
        ann["keypoints"] = keypoints.ravel().tolist()
        ann["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
    completed_ap = evaluate_keypoints(restricted, report.detections)["AP"]
    pck = {name: report.metrics["per_keypoint"][name].get("PCK@0.1") for name in completed}
    return {"checkpoint": checkpoint, "AP": report.metrics["AP"], "AP completed keypoints": completed_ap,
            "PCK@0.1 completed keypoints": float(np.mean(list(pck.values()))), "PCK@0.1": pck,
            "PCK@0.1 all keypoints": report.metrics["PCK@0.1"]}


def loop(args) -> dict:
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data")
    python = sys.executable
    progress = ["--no-progress"] if args.no_progress else []
    timings: list = []
    union_data = union_set_data(UNION, "label loop union")
    union_data.pop("union_of")
    union_path = write_json(union_data, os.path.join(out, "coco_aic.json"))
    height = default_height_size(args.image_size)
    run_step("synthetic data", [
        python, "scripts/synthetic_data.py", "--output-dir", data, "--seed", str(args.seed),
        "--train-images", str(args.coco_images), "--mix-images", str(args.aic_images),
        "--val-images", str(args.val_images), "--keypoints", "coco", "--mix-keypoints", "aic",
        "--also-keypoints", union_path, "--video-frames", "0", "--image-size", str(args.image_size),
        *SCENE_ARGS, "--overwrite", *progress], timings)
    split = {name: (os.path.join(data, folder, "person_keypoints.json"), os.path.join(data, folder, "images"), kps)
             for name, folder, kps in SOURCES}
    target = {"mode": "combine", "keypoints": union_path}
    ratios = dict(zip(split, args.source_ratios)) if args.source_ratios else {}
    union_recipe = write_json({"name": "union", "target": target, "sources": [
        {"name": name, "format": "coco", "labels": labels, "images_folder": images, "keypoints": kps,
         **({"source_ratio": ratios[name]} if ratios else {})} for name, (labels, images, kps) in split.items()]},
        os.path.join(out, "recipe_union.json"))
    union_model = train("union", union_recipe, os.path.join(out, "prepared_union.json"), out, args, height, timings)

    filled = {}
    for name, (labels, images, _) in split.items():
        filled[name] = os.path.join(out, f"{name}_filled.json")
        run_step(f"pseudo-label {name}", [
            python, "scripts/pseudo_label.py", "--checkpoint-path", union_model, "--labels", labels,
            "--images-folder", images, "--height-size", str(height), "--output", filled[name],
            *(["--min-score", str(args.min_score)] if args.min_score is not None else []), *progress], timings)
    filled_recipe = write_json({"name": "filled", "target": target, "sources": [
        {"name": name, "format": "coco", "labels": filled[name], "images_folder": split[name][1],
         "keypoints": union_path, "pseudo_weight": args.pseudo_weight,
         **({"source_ratio": ratios[name]} if ratios else {})} for name in split]},
        os.path.join(out, "recipe_filled.json"))
    filled_model = train("filled", filled_recipe, os.path.join(out, "prepared_filled.json"), out, args, height,
                         timings)

    from lwpose.keypoints import load_keypoint_set

    union_set, coco, aic = (load_keypoint_set(s) for s in (union_path, "coco", "aic"))
    lacking = {"coco": [n for n in union_set.keypoints if n not in coco.index],
               "aic": [n for n in union_set.keypoints if n not in aic.index]}
    completed = [n for n in union_set.keypoints if n in lacking["coco"] or n in lacking["aic"]]
    val_labels = os.path.join(data, "val", f"person_keypoints_{union_set.name}.json")
    start, cpu_start = time.perf_counter(), time.process_time()
    results = {name: score(checkpoint, val_labels, os.path.join(data, "val", "images"), union_path, completed, height)
               for name, checkpoint in (("union model", union_model), ("retrained on pseudo-labels", filled_model))}
    for result in results.values():
        for source, names in lacking.items():
            result[f"PCK@0.1 lacking in {source}"] = float(np.mean([result["PCK@0.1"][n] for n in names]))
    timings.append({"step": "score both", "wall_s": round(time.perf_counter() - start, 1),
                    "cpu_s": round(time.process_time() - cpu_start, 1), "host_steal": None})
    return {"results": results, "lacking": lacking, "completed": completed, "timings": timings,
            "iterations": args.iterations, "pseudo_weight": args.pseudo_weight, "height_size": height,
            "val_labels": val_labels}


def report_lines(summary: dict) -> list[str]:
    results = summary["results"]
    names = list(results)
    lines = [f"keypoints completed: {', '.join(summary['lacking']['coco'])} (lacking in COCO); "
             f"{', '.join(summary['lacking']['aic'])} (lacking in AIC)",
             f"each model: {summary['iterations']} iterations; held-out split {summary['val_labels']}", "",
             f"{'':<30}" + "".join(f"{n:>28}" for n in names)]
    rows = [("AP (all 19 keypoints)", "AP"), ("AP (completed keypoints)", "AP completed keypoints"),
            ("PCK@0.1 (completed, mean)", "PCK@0.1 completed keypoints"),
            *((f"PCK@0.1 ({s.upper()} lacks, mean)",
               f"PCK@0.1 lacking in {s}") for s in summary["lacking"]),
            ("PCK@0.1 (all keypoints)", "PCK@0.1 all keypoints")]
    for label, key in rows:
        lines.append(f"{label:<30}" + "".join(f"{results[n][key]:>28.3f}" for n in names))
    for keypoint in summary["completed"]:
        lines.append(f"{'PCK@0.1 ' + keypoint:<30}" + "".join(f"{results[n]['PCK@0.1'][keypoint]:>28.3f}"
                                                              for n in names))
    lines += ["", "step                          wall s    CPU s"]
    lines += [f"{t['step']:<28} {t['wall_s']:>7.1f} {t['cpu_s']:>8.1f}" for t in summary["timings"]]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        summary = loop(args)
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    summary["cpu_s"] = round(sum(t["cpu_s"] for t in summary["timings"]), 1)
    out = os.path.abspath(args.output_dir)
    write_json(summary, os.path.join(out, "loop.json"))
    lines = report_lines(summary)
    lines.append(f"\nwhole loop: {summary['wall_s']:.0f} s, CPU {summary['cpu_s']:.0f} s")
    with open(os.path.join(out, "loop.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n== label loop\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole project on nothing but a CPU: synthetic data, labels, training, validation and a demo, end to end.

    python scripts/quickstart.py                                   # make quickstart
    python scripts/quickstart.py --checkpoint-path weights/hpe0001.pth   # skip training: validate and demo these

Every step is the project's own entry point run as a subprocess, exactly as a user would type it (each command is
printed): scripts/synthetic_data.py, scripts/prepare_train_labels.py, train.py, val.py, demo.py. The outputs, all
under --output-dir (default outputs/quickstart):

    data/                       synthetic train / val splits (COCO format) and the walking video
    prepared_train_labels.json  the training labels
    runs/quickstart/            train.py's experiment: checkpoints/, log.csv, tensorboard/
    loss_curve.png              training loss per stage against iterations
    validation.json, validation.txt   val.py's metrics on the held-out split, and the report with the AP
    demo.mp4 (or demo.avi), demo_poses.jsonl   demo.py on the synthetic video, tracked

The defaults are sized for a 2-core CPU: a small network (no refinement stage: its time buys more iterations of
the rest) trained from scratch for eleven minutes, however many iterations the machine does in them, by two
one-thread processes under torchrun (on so small a network they do about 1.6x the work of one process on two
threads), with activations in channels-last memory order and 96-pixel crops. The network sees the 128-pixel images
enlarged 1.5x (val.py and demo.py at height 192; training shows the people at that size): on the images' own size
its stride-8 maps are 16x16, too coarse for the keypoints of people 70-115 pixels tall. The scene settings make an
easier world than the generator's default (fewer, larger people, no crowds, nobody cut by the border); the held-out
split is drawn from the same settings with its own random stream, and validated with val.py --flip.
"""
import argparse
import csv
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lwpose.constants import STRIDE  # noqa: E402
from lwpose.datasets.augmentation import AugmentationConfig  # noqa: E402
from lwpose.errors import LwposeError  # noqa: E402
from lwpose.interop.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from lwpose.training.trainer import latest_checkpoint  # noqa: E402

EXPERIMENT = "quickstart"
# Training runs for a time, not a number of iterations: the other steps take 2-3 minutes, so the whole job ends
# within 15 minutes even when the host takes a share of the cores (README, "Two commands").
TRAIN_MINUTES = 11.0
CROP_PERSON_HEIGHT = AugmentationConfig.person_height
# The network runs on the images enlarged by this factor, and training shows the people at that size. Held-out AP of
# the full run against it (README, "Two commands"): 0.456 at 1 (the images' own size), 0.495 at 1.125, 0.502 at 1.25,
# 0.525 at 1.375, 0.544 at 1.5, 0.524 at 1.75, 0.420 at 2: finer maps per person, until a 96-pixel crop holds too
# little of one.
ENLARGEMENT = 1.5
# The world the quickstart trains on: the generator's figures, fewer and larger than its default scenes.
PERSON_HEIGHT = (0.6, 0.9)  # stature as a share of the image height
SCENE_ARGS = ["--people", "1", "2", "--person-height", *map(str, PERSON_HEIGHT), "--small-people", "0", "0",
              "--crowd-probability", "0", "--partial-probability", "0", "--back-view-probability", "0"]


class StepFailed(LwposeError, RuntimeError):
    pass


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=os.path.join("outputs", "quickstart"))
    parser.add_argument("--checkpoint-path", default=None,
                        help="an lwpose checkpoint (e.g. from scripts/import_weights.py): no training, validate and "
                             "demo this model")
    data = parser.add_argument_group("data")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--train-images", type=int, default=2000)
    data.add_argument("--val-images", type=int, default=200)
    data.add_argument("--video-frames", type=int, default=100)
    data.add_argument("--image-size", type=int, default=128, help="long side of the synthetic images")
    train = parser.add_argument_group("training (train.py's flags)")
    train.add_argument("--train-minutes", type=float, default=TRAIN_MINUTES,
                       help="train.py --max-minutes: the training time, whatever the machine's speed")
    train.add_argument("--iterations", type=int, default=None,
                       help="train.py --max-iterations: stop here even before --train-minutes run out")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--input-size", type=int, default=96,
                       help="training crop side: smaller than the images, so that a crop is mostly its person")
    train.add_argument("--backbone-width", type=float, default=0.25)
    train.add_argument("--num-channels", type=int, default=32)
    train.add_argument("--num-refinement-stages", type=int, default=0)
    train.add_argument("--base-lr", type=float, default=4e-3)
    train.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                       help="train.py --scale-range (default: the scenes' people at the size val.py sees them)")
    train.add_argument("--lr-drop-progress", type=float, nargs="+", default=[0.75, 0.9], metavar="FRACTION",
                       help="train.py --lr-drop-progress: Adam at a high rate from scratch, then drops near the end "
                            "settle the peaks")
    train.add_argument("--max-rotate-degree", type=float, default=20, help="train.py --max-rotate-degree")
    train.add_argument("--sigma", type=float, default=None, help="train.py --sigma (default: train.py's)")
    train.add_argument("--num-workers", type=int, default=1, help="data loader processes per training process")
    train.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                       help="training processes (torchrun, one thread each, the batch split between them): on a "
                            "small network two one-thread processes do 1.6x the work of one two-thread process")
    train.add_argument("--device", default="cpu",
                       help="train.py --device: the CPU (default), whatever GPUs the machine has, as the sizes above "
                            "are a CPU's; 'cuda' trains on the GPUs, one process per GPU (at most --processes)")
    parser.add_argument("--height-size", type=int, default=None,
                        help="network input height for val.py and demo.py, and the size training shows the people at "
                             f"(default: --image-size x {ENLARGEMENT:g}, a multiple of {STRIDE}; 368 with "
                             "--checkpoint-path)")
    parser.add_argument("--no-flip", action="store_true",
                        help="validate without val.py --flip (averaging with the mirrored image)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def host_steal_seconds() -> float | None:
    """CPU time the hypervisor gave to other guests since boot, summed over cores (Linux /proc/stat; None
    elsewhere): on a shared virtual machine the same work takes longer wall time while this grows."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


def run_step(name: str, command: list, timings: list, env: dict | None = None) -> str:
    """Run one entry point (with `env` added to the environment), its output shown as it comes; record its wall
    time and the CPU time of the processes it started. Returns what it printed on stdout."""
    shown_env = "".join(f"{key}={shlex.quote(value)} " for key, value in (env or {}).items())
    print(f"\n== {name}\n$ {shown_env}{shlex.join(command)}", flush=True)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    steal_before = host_steal_seconds()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, **env) if env else None)
    printed = []
    for line in process.stdout:
        print(line, end="", flush=True)
        printed.append(line)
    status = process.wait()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    wall = time.perf_counter() - start
    steal_after = host_steal_seconds()
    # The share of the machine's cores the host took away during the step.
    steal = None if steal_before is None or steal_after is None else \
        (steal_after - steal_before) / (wall * (os.cpu_count() or 1))
    timings.append({"step": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                    "host_steal": None if steal is None else round(steal, 3)})
    print(f"({name}: {wall:.0f} s, CPU {cpu:.0f} s" + ("" if steal is None else f", host steal {steal:.0%}") + ")",
          flush=True)
    if status != 0:
        raise StepFailed(f"step '{name}' failed with exit status {status}: {shlex.join(command)}")
    return "".join(printed)


def training_processes(device: str, wanted: int) -> int:
    """How many training processes torchrun starts: `wanted` on the CPU; on GPUs one per GPU, at most `wanted`
    (train.py gives each process the GPU of its local rank)."""
    if device == "cpu":
        return wanted
    import torch

    if not torch.cuda.is_available():
        raise StepFailed(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU")
    if ":" in device:
        return 1  # one named GPU: one process on it
    return max(1, min(wanted, torch.cuda.device_count()))


def default_height_size(image_size: int) -> int:
    """The network input height for the quickstart's own model: the images enlarged ENLARGEMENT times, rounded to
    the network's stride (val.py would pad the rest)."""
    return max(STRIDE, round(image_size * ENLARGEMENT / STRIDE) * STRIDE)


def training_scale_range(height_size: int, input_size: int) -> tuple[float, float]:
    """train.py's random factor on the crop's main person (whose box becomes CROP_PERSON_HEIGHT x the factor of
    the crop) that shows the scenes' people at the size val.py and demo.py see them at `height_size`; the low end
    a little lower, as a person's box is shorter than their stature when they crouch."""
    low, high = (share * height_size / (CROP_PERSON_HEIGHT * input_size) for share in PERSON_HEIGHT)
    return 0.9 * low, high


def plot_loss_curve(log_csv: str, png_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise StepFailed(f"{log_csv} holds no logged iteration to plot")
    iterations = [int(r["iteration"]) for r in rows]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot(iterations, [float(r["loss"]) for r in rows], label="total", linewidth=2)
    for column in rows[0]:
        if column.startswith("stage"):
            axes.plot(iterations, [float(r[column]) for r in rows], label=column, linewidth=1)
    axes.set_xlabel("iteration")
    axes.set_ylabel("masked L2 loss")
    axes.set_yscale("log")
    axes.set_title("training loss")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)


def write_report(metrics_path: str, val_output: str, report_path: str, timings: list,
                 training: str | None = None) -> float:
    with open(metrics_path) as f:
        metrics = json.load(f)
    ap = float(metrics["AP"])
    lines = [f"checkpoint: {metrics['checkpoint']}", *([training] if training else []),
             f"ground truth: {metrics['labels']}", f"input height: {metrics['height_size']}", "", "val.py:",
             val_output.rstrip(), "",
             "step                    wall s    CPU s" + ("" if timings[0]["host_steal"] is None else "   host steal")]
    lines += [f"{t['step']:<22} {t['wall_s']:>7.1f} {t['cpu_s']:>8.1f}"
              + ("" if t["host_steal"] is None else f"   {t['host_steal']:>9.0%}") for t in timings]
    lines += ["", f"AP {ap:.3f}"]
    with open(report_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ap


def quickstart(args) -> dict:
    out = os.path.abspath(args.output_dir)
    data = os.path.join(out, "data")
    python = sys.executable
    progress = ["--no-progress"] if args.no_progress else []
    timings: list = []
    if args.checkpoint_path:
        try:
            load_checkpoint(args.checkpoint_path)
        except CheckpointError as e:
            raise StepFailed(str(e)) from None
    run_step("synthetic data", [python, "scripts/synthetic_data.py", "--output-dir", data, "--seed", str(args.seed),
                                "--train-images", str(0 if args.checkpoint_path else args.train_images),
                                "--val-images", str(args.val_images), "--mix-images", "0",
                                "--video-frames", str(args.video_frames), "--image-size", str(args.image_size),
                                *SCENE_ARGS, "--overwrite", *progress], timings)
    checkpoint = os.path.abspath(args.checkpoint_path) if args.checkpoint_path else None
    training = None  # what the training did, for the report
    height = args.height_size or (368 if args.checkpoint_path else default_height_size(args.image_size))
    outputs = {}
    if checkpoint is None:
        labels = os.path.join(out, "prepared_train_labels.json")
        run_step("prepare labels", [python, "scripts/prepare_train_labels.py",
                                    "--labels", os.path.join(data, "train", "person_keypoints.json"),
                                    "--images-folder", os.path.join(data, "train", "images"),
                                    "--keypoints", "coco", "--output-name", labels], timings)
        experiment_dir = os.path.join(out, "runs", EXPERIMENT)
        if os.path.isdir(experiment_dir):  # a previous quickstart's run: start afresh, not resume into it
            for name in ("log.csv", "val_log.csv"):
                if os.path.exists(os.path.join(experiment_dir, name)):
                    os.remove(os.path.join(experiment_dir, name))
            # its checkpoints too: with a time budget, its last iteration may lie beyond this run's
            shutil.rmtree(os.path.join(experiment_dir, "checkpoints"), ignore_errors=True)
        scale_range = args.scale_range or training_scale_range(height, args.input_size)
        iterations = args.iterations  # None: train.py's epochs cap it, far beyond what the time allows on a CPU
        processes = training_processes(args.device, args.processes)
        if args.batch_size % processes:
            raise StepFailed(f"--batch-size {args.batch_size} does not split evenly over {processes} processes")
        # Several processes: torchrun, each process on one thread (the reason to split the work on a CPU).
        launcher, launch_env = ([python, "-m", "torch.distributed.run", "--standalone",
                                 f"--nproc_per_node={processes}"],
                                {"OMP_NUM_THREADS": "1"} if args.device == "cpu" else None) \
            if processes > 1 else ([python], None)
        run_step("train", [*launcher, "train.py", "--prepared-train-labels", labels,
                           "--experiments-folder", os.path.join(out, "runs"), "--experiment-name", EXPERIMENT,
                           "--input-size", str(args.input_size), "--scale-range", *(f"{f:.3g}" for f in scale_range),
                           "--max-rotate-degree", str(args.max_rotate_degree),
                           "--backbone-width", str(args.backbone_width), "--num-channels", str(args.num_channels),
                           "--num-refinement-stages", str(args.num_refinement_stages),
                           "--base-lr", str(args.base_lr), "--weight-decay", "0",
                           *(["--sigma", str(args.sigma)] if args.sigma else []),
                           "--lr-drop-epochs", "--lr-drop-progress", *map(str, args.lr_drop_progress),
                           *(["--lr-mult", "refinement_stages=1"] if args.num_refinement_stages else []),
                           "--batch-size", str(args.batch_size // processes), "--channels-last",
                           "--device", args.device,
                           *(["--max-iterations", str(iterations)] if iterations else []),
                           "--max-minutes", f"{args.train_minutes:g}",
                           "--num-workers", str(args.num_workers),
                           "--log-after", str(max(1, min(20, (iterations or 200) // 10))),
                           "--checkpoint-after", str(min(iterations or 200, 200)), "--keep-checkpoints", "1",
                           *progress],
                 timings, env=launch_env)
        checkpoint = latest_checkpoint(experiment_dir)
        if checkpoint is None:
            raise StepFailed(f"train.py wrote no checkpoint under {experiment_dir}")
        state = load_checkpoint(checkpoint)["training"]
        training = (f"trained: {state['iteration']} iterations of {args.batch_size} samples in "
                    f"{state['train_seconds'] / 60:.1f} minutes")
        outputs["loss curve"] = os.path.join(out, "loss_curve.png")
        plot_loss_curve(os.path.join(experiment_dir, "log.csv"), outputs["loss curve"])
        outputs["checkpoint"] = checkpoint
    metrics_path = os.path.join(out, "validation.json")
    val_output = run_step("validate", [python, "val.py", "--labels", os.path.join(data, "val", "person_keypoints.json"),
                          "--images-folder", os.path.join(data, "val", "images"), "--checkpoint-path", checkpoint,
                          "--height-size", str(height), *([] if args.no_flip else ["--flip"]),
                          # peaks refined to a fraction of a pixel on the stride-8 maps, as demo.py decodes: the
                          # reference's argmax on maps resized to the image snaps them to whole pixels
                          "--decode-at", "map",
                          "--output-name", os.path.join(out, "detections.json"),
                          "--metrics-out", metrics_path, *progress], timings)
    with open(os.path.join(data, "manifest.json")) as f:
        video = os.path.join(data, json.load(f)["video"]["video"])
    demo_video = os.path.join(out, "demo" + os.path.splitext(video)[1])
    outputs["annotated video"] = demo_video
    outputs["poses"] = os.path.join(out, "demo_poses.jsonl")
    run_step("demo", [python, "demo.py", "--checkpoint-path", checkpoint, "--video", video,
                      "--height-size", str(height), "--track", "--output", demo_video,
                      "--save-json", outputs["poses"], *progress], timings)
    outputs["validation report"] = os.path.join(out, "validation.txt")
    outputs["validation metrics"] = metrics_path
    ap = write_report(metrics_path, val_output, outputs["validation report"], timings, training)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(timings, f, indent=1)
    return {"ap": ap, "outputs": outputs, "timings": timings}


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        result = quickstart(args)
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    steal = [t["host_steal"] * t["wall_s"] for t in result["timings"] if t["host_steal"] is not None]
    print("\n== quickstart done in {:.0f} s (CPU {:.0f} s{})".format(
        wall, sum(t["cpu_s"] for t in result["timings"]),
        f", host steal {sum(steal) / wall:.0%} of the cores" if steal else ""))
    for name, path in result["outputs"].items():
        shown = os.path.relpath(path)
        print(f"  {name + ':':<20} {path if shown.startswith('..') else shown}")
    print(f"validation AP on the held-out synthetic split: {result['ap']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

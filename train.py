"""Train a pose network on prepared labels (scripts/prepare_train_labels.py), on a CPU, a GPU, or many (torchrun).

    python train.py --prepared-train-labels prepared_train_labels.json --train-images-folder train2017 \
        --from-mobilenet mobilenet_sgd_68.848.pth.tar --experiment-name coco --device cuda --amp bf16
    torchrun --nproc_per_node=8 train.py ...          # one process per GPU (DistributedDataParallel)
    python train.py --mix recipe.json ...             # several datasets at once (datasets/mix_recipe.py)
    python train.py ... --resume                      # continue the experiment from its latest checkpoint

Outputs go to runs/EXPERIMENT/: checkpoints/ (checkpoint_iter_N.pth; with --val-labels or --val-mix
best_<metric>_iter_N.pth, the best by --save-best, and best.pth linking to it), log.csv, val_log.csv, tensorboard/.
"""
import argparse
import json
import os
import shutil
import sys
import time
import traceback

try:
    import lwpose  # noqa: F401  (first: it checks the installed torch before anything needs a newer one)
except ImportError as e:
    sys.exit(f"error: {e}")

import torch

from lwpose.datasets.augmentation import AugmentationConfig
from lwpose.datasets.loader import InfiniteBatchSampler, make_train_loader
from lwpose.datasets.mix_recipe import load_mix_recipe, prepare_mixed_labels
from lwpose.datasets.mix_sampler import mixed_sampler_for
from lwpose.datasets.pose_dataset import CACHE_MODES, DEFAULT_MAX_BAD_IMAGE_SHARE, PoseTrainingDataset, TargetConfig
from lwpose.datasets.prepared_labels import PreparedLabels, PreparedLabelsError, load_prepared_labels
from lwpose.evaluation.best_metric import BestMetric, MetricError
from lwpose.evaluation.coco import GroundTruthError
from lwpose.errors import flag_hint
from lwpose.images import ImageReadError
from lwpose.interop.checkpoint import CheckpointError, load_checkpoint
from lwpose.keypoints import KeypointSetError
from lwpose.modules.pose_network import VARIANTS
from lwpose.training.growing import format_changes
from lwpose.training.head_fit import fit_batches, fit_channels
from lwpose.training.setup import (DEFAULT_DIST_TIMEOUT_MINUTES, FINE_TUNE_RECIPE, FineTuneRecipe, OptimizerSettings,
                                   ProcessGroup, ProcessSetupError, check_amp, describe_recipe, drop_fractions,
                                   init_processes, optimizer_settings_from_config, seed_everything, set_deterministic,
                                   starting_network)
from lwpose.training.trainer import (AMP_DTYPES, CheckpointSaveError, NonFiniteLossError, RunSettings, Trainer,
                                     TrainingInterrupted, latest_checkpoint)
from lwpose.training.validators import MixValidator, Validator

DEFAULT_OPTIMIZER = OptimizerSettings()
DEFAULT_AUGMENTATION = AugmentationConfig()
DEFAULT_EPOCHS = 280
DEFAULT_BATCH_SIZE = 80
# A default batch size shrinks until an epoch holds this many batches (a small dataset still takes many steps per
# pass over it: on the upper-body journey of docs/own-keypoints.md, batches of 4 instead of 9 gave 2.5 times the
# steps per minute); a batch size given explicitly is never changed.
MIN_BATCHES_PER_EPOCH = 16
MAX_DEFAULT_WORKERS = 8
# run outputs an earlier run of the same experiment name leaves (train.py --overwrite deletes exactly these)
RUN_OUTPUTS = ("checkpoints", "log.csv", "val_log.csv", "tensorboard")


# the flag that sets each item of the fine-tuning recipe
RECIPE_FLAGS = {"base_lr": "--base-lr", "new_channel_lr_multiplier": "--new-channel-lr-mult", "freeze": "--freeze",
                "warmup_iterations": "--warmup-iterations", "lr_drop_progress": "--lr-drop-progress"}


def describe_fine_tune_recipe() -> str:
    recipe = FINE_TUNE_RECIPE
    return (f"base lr {recipe.base_lr:g}, new channels x{recipe.new_channel_lr_multiplier:g}, frozen "
            f"{', '.join(recipe.freeze) or 'nothing'}, warm-up {recipe.warmup_iterations} iterations, composed limbs "
            f"fitted on {recipe.fit_samples} samples"
            + (f", lr drops at {', '.join(f'{p:.0%}' for p in recipe.lr_drop_progress)} of the run"
               if recipe.lr_drop_progress else "")).replace("%", "%%")


def default_num_workers() -> int:
    """The cores this process may use, shared by the training processes on this machine (torchrun's
    LOCAL_WORLD_SIZE), at most MAX_DEFAULT_WORKERS: DataLoader warns about more workers than cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_DEFAULT_WORKERS, cores // max(1, local_processes)))


def default_batch_size(samples: int, world_size: int) -> int:
    """DEFAULT_BATCH_SIZE, or less: at most what gives every process MIN_BATCHES_PER_EPOCH batches per epoch."""
    return max(1, min(DEFAULT_BATCH_SIZE, samples // (world_size * MIN_BATCHES_PER_EPOCH)))


def earlier_run(experiment_dir: str) -> list[str]:
    """What an earlier run left in the experiment folder: its checkpoints and logs (empty when none)."""
    found = []
    checkpoints = os.path.join(experiment_dir, "checkpoints")
    if os.path.isdir(checkpoints) and any(name.endswith(".pth") for name in os.listdir(checkpoints)):
        found.append("checkpoints/")
    for name in ("log.csv", "val_log.csv"):
        path = os.path.join(experiment_dir, name)
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            found.append(name)
    return found


def clear_earlier_run(experiment_dir: str) -> None:
    for name in RUN_OUTPUTS:
        path = os.path.join(experiment_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def given_optimizer_items(args) -> set:
    """The optimiser settings the user chose (flags or --config entries): the fine-tuning recipe leaves them."""
    given = set()
    if args.config:
        with open(args.config) as f:  # optimizer_settings() has read it already, so it is there and JSON
            given |= set(json.load(f))
    for item, value in (("base_lr", args.base_lr), ("new_channel_lr_multiplier", args.new_channel_lr_mult),
                        ("warmup_iterations", args.warmup_iterations), ("lr_drop_epochs", args.lr_drop_epochs),
                        ("lr_drop_progress", args.lr_drop_progress)):
        if value is not None:
            given.add(item)
    if args.freeze:
        given.add("freeze")
    return given


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--prepared-train-labels", default=None,
                      help="prepared labels (JSON); with --mix, the recipe's labels prepared beforehand "
                           "(scripts/prepare_train_labels.py --mix), else they are prepared at start-up")
    data.add_argument("--mix", default=None, metavar="RECIPE",
                      help="mix recipe (JSON): several datasets, their keypoint sets, per-batch source ratios")
    data.add_argument("--train-images-folder", default=None,
                      help="images folder (default: the one recorded in the prepared labels)")
    data.add_argument("--num-workers", type=int, default=None,
                      help="data loader processes per training process (0: in this process; default: the cores "
                           f"this process may use, shared by the processes on this machine, at most "
                           f"{MAX_DEFAULT_WORKERS})")
    data.add_argument("--image-cache", choices=CACHE_MODES, default="auto",
                      help="decode every image once into memory (auto: when they fit --image-cache-mb)")
    data.add_argument("--image-cache-mb", type=float, default=2048, help="memory budget of the image cache")
    data.add_argument("--max-bad-image-share", type=float, default=DEFAULT_MAX_BAD_IMAGE_SHARE,
                      help="unreadable training images are skipped with a warning (their samples replaced) up to "
                           f"this share of all; more stops the run (default {DEFAULT_MAX_BAD_IMAGE_SHARE})")
    data.add_argument("--input-size", type=int, default=DEFAULT_AUGMENTATION.input_size, help="square crop side")
    data.add_argument("--scale-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                      default=(DEFAULT_AUGMENTATION.scale_min, DEFAULT_AUGMENTATION.scale_max),
                      help="random factor on the person's height (0.6 of the crop)")
    data.add_argument("--max-rotate-degree", type=float, default=DEFAULT_AUGMENTATION.max_rotate_degree)
    data.add_argument("--center-perturb-max", type=float, default=DEFAULT_AUGMENTATION.center_perturb_max)
    data.add_argument("--flip-prob", type=float, default=DEFAULT_AUGMENTATION.flip_prob)
    data.add_argument("--no-colour-jitter", action="store_true", help="no brightness/contrast/saturation jitter")
    data.add_argument("--no-augmentation", action="store_true", help="centred crops only, nothing random")
    data.add_argument("--sigma", type=float, default=TargetConfig.sigma, help="heatmap Gaussian sigma, input px")
    data.add_argument("--paf-thickness", type=float, default=TargetConfig.paf_thickness,
                      help="PAF half-width, output cells")

    model = parser.add_argument_group("starting point")
    model.add_argument("--variant", choices=VARIANTS, default="lwop", help="network layout of a new network")
    model.add_argument("--num-refinement-stages", type=int, default=1, help="refinement stages of a new network")
    model.add_argument("--num-channels", type=int, default=128,
                       help="channels of a new network after the backbone (CPM and stages)")
    model.add_argument("--backbone-width", type=float, default=1.0,
                       help="MobileNet width multiplier of a new network (0.25 for a small CPU model)")
    model.add_argument("--from-mobilenet", default=None, metavar="PATH",
                       help="ImageNet MobileNet v1 weights (mobilenet_sgd_68.848.pth.tar layout) for the backbone")
    model.add_argument("--checkpoint-path", default=None,
                       help="lwpose checkpoint to continue (with its training state) or, with --weights-only, to "
                            "start from")
    model.add_argument("--weights-only", action="store_true",
                       help="take only the weights of --checkpoint-path (new optimiser, iteration 0)")
    model.add_argument("--resume", action="store_true", help="continue this experiment from its latest checkpoint")
    model.add_argument("--fit-composed-limbs", type=int, default=None, metavar="SAMPLES",
                       help="starting from another keypoint set's weights, fit the PAF output weights of the limbs "
                            "composed from old ones by least squares on this many training samples before the first "
                            f"step (0: off; default: {FINE_TUNE_RECIPE.fit_samples} with the fine-tuning recipe, "
                            "else 0)")
    model.add_argument("--no-fine-tune-recipe", action="store_true",
                       help="starting from another keypoint set's weights, do not apply the fine-tuning recipe "
                            f"(by default: {describe_fine_tune_recipe()}, each item unless given)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--config", default=None,
                       help="JSON with any of: base_lr, weight_decay, lr_multipliers {module: x}, "
                            "bias_lr_multiplier, freeze [modules], lr_drop_epochs, lr_drop_factor")
    optim.add_argument("--base-lr", type=float, default=None, help=f"default {DEFAULT_OPTIMIZER.base_lr}")
    optim.add_argument("--weight-decay", type=float, default=None, help=f"default {DEFAULT_OPTIMIZER.weight_decay}")
    optim.add_argument("--lr-mult", action="append", default=[], metavar="MODULE=X",
                       help="learning-rate multiplier of a module (dotted prefix, e.g. refinement_stages=4, "
                            "model=0.1); repeatable")
    optim.add_argument("--bias-lr-mult", type=float, default=None,
                       help=f"extra multiplier for biases (default {DEFAULT_OPTIMIZER.bias_lr_multiplier})")
    optim.add_argument("--freeze", action="append", default=[], metavar="MODULE",
                       help="do not train this module (e.g. model = the backbone); repeatable")
    optim.add_argument("--lr-drop-epochs", type=int, nargs="*", default=None,
                       help=f"epochs where lr is multiplied by --lr-drop-factor (default "
                            f"{' '.join(map(str, DEFAULT_OPTIMIZER.lr_drop_epochs))})")
    optim.add_argument("--lr-drop-progress", type=float, nargs="*", default=None, metavar="FRACTION",
                       help="fractions of the run where lr is multiplied by --lr-drop-factor; the run's fraction done "
                            "is of --max-iterations or of --max-minutes, whichever is further along (e.g. 0.75 0.9)")
    optim.add_argument("--lr-drop-factor", type=float, default=None)
    optim.add_argument("--new-channel-lr-mult", type=float, default=None,
                       help="channels a grown network gained (its keypoint set extends the checkpoint's) step this "
                            "many times further than the others (default 1)")
    optim.add_argument("--warmup-iterations", type=int, default=None,
                       help="raise the learning rate linearly over the first N iterations (default 0)")
    optim.add_argument("--batch-size", type=int, default=None,
                       help=f"samples per process per batch (default {DEFAULT_BATCH_SIZE}, less for a dataset too "
                            f"small for {MIN_BATCHES_PER_EPOCH} such batches per epoch)")
    optim.add_argument("--batches-per-iter", type=int, default=1, help="batches accumulated per optimiser step")
    optim.add_argument("--epochs", type=int, default=None,
                       help=f"epochs to train (default {DEFAULT_EPOCHS}; with --max-minutes: as many as the time "
                            "allows)")
    optim.add_argument("--max-iterations", type=int, default=None, help="stop after this many iterations in all")
    optim.add_argument("--max-minutes", type=float, default=None,
                       help="stop after this much training time (summed over resumes), even short of the iterations")
    optim.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                       help="mixed precision: bf16 (GPUs of compute capability 8.0 on, and CPUs) or fp16 (with loss "
                            "scaling; any GPU)")
    optim.add_argument("--channels-last", action="store_true",
                       help="keep activations in (N, H, W, C) memory order: faster CPU training of small networks")
    optim.add_argument("--skip-nonfinite-loss", action="store_true",
                       help="skip a step whose loss is NaN or inf (counted) instead of stopping the run")

    run = parser.add_argument_group("run")
    run.add_argument("--experiment-name", default="default",
                     help="outputs go to EXPERIMENTS_FOLDER/NAME; a name with an earlier run needs --resume or "
                          "--overwrite")
    run.add_argument("--overwrite", action="store_true",
                     help="delete the earlier run of this --experiment-name (its checkpoints and logs) and start anew")
    run.add_argument("--experiments-folder", default="runs")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--log-after", type=int, default=100, help="log every N iterations")
    run.add_argument("--checkpoint-after", type=int, default=5000, help="checkpoint every N iterations")
    run.add_argument("--keep-checkpoints", type=int, default=3, help="how many recent checkpoints to keep")
    run.add_argument("--keep-going-on-save-error", action="store_true",
                     help="a checkpoint that cannot be written (a full disk) only warns; without it the run stops")
    run.add_argument("--dist-timeout-minutes", type=float, default=DEFAULT_DIST_TIMEOUT_MINUTES,
                     help="under torchrun: how long a process waits for the others at any collective step before "
                          f"the run stops (default {DEFAULT_DIST_TIMEOUT_MINUTES:g})")
    run.add_argument("--val-after", type=int, default=5000, help="validate every N iterations")
    run.add_argument("--val-labels", default=None, help="COCO keypoint ground truth to validate on")
    run.add_argument("--val-mix", default=None, metavar="RECIPE",
                     help="validate on every dataset of this mix recipe instead, each on its own keypoints (as "
                          "val.py --mix): metrics per dataset (dataset/AP, dataset/PCK@0.1, dataset/PCKh@0.5, ...) "
                          "and their weighted mean (mean/AP, ...)")
    run.add_argument("--save-best", default=None, metavar="METRIC",
                     help="the metric that picks the best checkpoint (best_<metric>_iter_<N>.pth, best.pth links "
                          "to it): a name the validation reports (AP; with --val-mix mpii/PCKh@0.5, mean/AP, ...) "
                          "or a weighted sum, e.g. '0.5*coco/AP+0.5*mpii/PCKh@0.5' (default AP, or mean/AP)")
    run.add_argument("--val-images-folder", default=None)
    run.add_argument("--val-height-size", type=int, default=368)
    run.add_argument("--val-max-images", type=int, default=None)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--deterministic", action="store_true", help="reproducible run to run (slower on GPUs)")
    run.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def optimizer_settings(args) -> OptimizerSettings:
    if args.config:
        try:
            with open(args.config) as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"config {args.config}: {e}") from None
        settings = optimizer_settings_from_config(config, args.config)
    else:
        settings = OptimizerSettings()
    for name, value in (("base_lr", args.base_lr), ("weight_decay", args.weight_decay),
                        ("bias_lr_multiplier", args.bias_lr_mult), ("lr_drop_factor", args.lr_drop_factor),
                        ("new_channel_lr_multiplier", args.new_channel_lr_mult),
                        ("warmup_iterations", args.warmup_iterations)):
        if value is not None:
            setattr(settings, name, value)
    if args.lr_drop_epochs is not None:
        settings.lr_drop_epochs = tuple(args.lr_drop_epochs)
    if args.lr_drop_progress is not None:
        settings.lr_drop_progress = drop_fractions(args.lr_drop_progress, "--lr-drop-progress")
    for item in args.lr_mult:
        module, _, value = item.partition("=")
        try:
            settings.lr_multipliers[module.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--lr-mult {item}: expected MODULE=NUMBER") from None
    settings.freeze = tuple(settings.freeze) + tuple(args.freeze)
    return settings


def augmentation_config(args) -> AugmentationConfig:
    if args.no_augmentation:
        return AugmentationConfig.off(args.input_size)
    colour = {} if not args.no_colour_jitter else {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
                                                  "colour_balance": 0.0}
    return AugmentationConfig(input_size=args.input_size, scale_min=args.scale_range[0], scale_max=args.scale_range[1],
                              max_rotate_degree=args.max_rotate_degree, center_perturb_max=args.center_perturb_max,
                              flip_prob=args.flip_prob, **colour)


def training_labels(args, recipe, say) -> PreparedLabels:
    """The prepared labels to train on: the file given, or the recipe's sources prepared now."""
    if recipe is None:
        if not args.prepared_train_labels:
            raise ValueError("give --prepared-train-labels (scripts/prepare_train_labels.py) or --mix RECIPE")
        return load_prepared_labels(args.prepared_train_labels)
    if args.prepared_train_labels:
        labels = load_prepared_labels(args.prepared_train_labels)
        expected = [s.name for s in recipe.sources]
        if [s.name for s in labels.sources] != expected or labels.keypoint_set.keypoints != recipe.target.keypoints:
            raise ValueError(f"prepared labels {args.prepared_train_labels} hold sources "
                             f"{[s.name for s in labels.sources]} in keypoint set '{labels.keypoint_set.name}', the "
                             f"recipe {args.mix} names {expected} in '{recipe.target.name}'; prepare them again "
                             "(scripts/prepare_train_labels.py --mix)")
        return labels
    return prepare_mixed_labels(recipe, report=say)


SETUP_ERRORS = (PreparedLabelsError, CheckpointError, GroundTruthError, KeypointSetError, ValueError, OSError)


def describe_failure(error: BaseException) -> str:
    """One line for a set-up failure: ours say what is wrong; anything else also names its kind."""
    if isinstance(error, SETUP_ERRORS):
        return f"{error}{flag_hint(error)}"
    return f"{type(error).__name__}: {error}"


def stop_on_failures(processes: ProcessGroup, error: BaseException | None) -> bool:
    """Under torchrun, every rank learns whether any rank's set-up failed, so that all of them exit together with
    its message instead of waiting for the failed one until the distributed timeout. Returns True when the run must
    stop; each failed rank prints its own message, one process per machine the others'."""
    message = None if error is None else describe_failure(error)
    failures = processes.agree_on_failures(message)
    if not failures:
        return False
    if message is not None:
        if not isinstance(error, SETUP_ERRORS):
            traceback.print_exception(error)
        print(f"error: {message}", file=sys.stderr)
    elif processes.local_rank == 0:
        for rank, host, text in failures:
            print(f"error: rank {rank} (on {host}) failed at start-up: {text}", file=sys.stderr)
    if processes.distributed:
        torch.distributed.destroy_process_group()  # every rank is here: all leave the group together
    return True


def make_validator(args, keypoint_set):
    """The validation --val-labels or --val-mix asks for, and the metric --save-best names (checked now, before any
    training, against the names the validation reports)."""
    if args.val_labels and args.val_mix:
        raise ValueError("give --val-labels or --val-mix, not both")
    validator = None
    if args.val_labels:
        if not args.val_images_folder:
            raise ValueError("--val-labels needs --val-images-folder")
        validator = Validator(args.val_labels, args.val_images_folder, args.val_height_size, args.val_max_images)
    elif args.val_mix:
        validator = MixValidator(args.val_mix, keypoint_set, args.val_height_size, args.val_max_images)
    if validator is None:
        if args.save_best:
            raise ValueError("--save-best needs a validation: give --val-labels or --val-mix")
        return None, None
    text = args.save_best or validator.default_metric
    if args.val_mix and text in ("AP", "PCK@0.05", "PCK@0.1", "PCKh@0.5"):
        text = f"mean/{text}"  # over a mix, a plain name means the weighted mean
    try:
        return validator, BestMetric.parse(text, validator.metric_names)
    except MetricError as e:
        raise ValueError(f"--save-best: {e}") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    set_deterministic(args.deterministic)
    try:
        processes = init_processes(args.device, args.dist_timeout_minutes)
    except ProcessSetupError as e:
        print(f"error: --device {args.device}: {e}", file=sys.stderr)
        return 2
    say = print if processes.is_main else (lambda *a, **k: None)
    experiment_dir = os.path.join(args.experiments_folder, args.experiment_name)
    # Set-up runs in two local parts, each closed by all ranks agreeing that nobody failed; between them rank 0
    # sends the checkpoint to continue from, so that ranks on other machines need no copy of it.
    error = None
    checkpoint_path, weights_only, checkpoint = args.checkpoint_path, args.weights_only, None
    try:
        if args.resume and args.overwrite:
            raise ValueError("--resume continues the earlier run, --overwrite deletes it: give one of them")
        # rank 0 alone looks (the folder may be on its disk only); its refusal stops every rank
        earlier = [] if args.resume or not processes.is_main else earlier_run(experiment_dir)
        if earlier and not args.overwrite:
            raise ValueError(f"{experiment_dir} holds an earlier run ({', '.join(earlier)}); continue it with "
                             "--resume, delete it and start anew with --overwrite, or give another --experiment-name")
        recipe = load_mix_recipe(args.mix) if args.mix else None
        labels = training_labels(args, recipe, say)
        settings = optimizer_settings(args)
        if args.max_minutes is not None and args.max_minutes <= 0:
            raise ValueError(f"--max-minutes {args.max_minutes:g}: give a positive time")
        try:
            check_amp(args.amp, processes.device)
        except ValueError as e:
            raise ValueError(f"--amp {args.amp}: {e}") from None
        validator, best_metric = make_validator(args, labels.keypoint_set)
        dataset = PoseTrainingDataset(
            labels, [args.train_images_folder] * len(labels.sources) if args.train_images_folder else None,
            augmentation_config(args), TargetConfig(args.sigma, args.paf_thickness), seed=args.seed,
            image_cache=args.image_cache, cache_budget_mb=args.image_cache_mb,
            progress=processes.is_main and not args.no_progress, max_bad_image_share=args.max_bad_image_share)
        if processes.is_main:
            if args.resume:
                checkpoint_path, weights_only = latest_checkpoint(experiment_dir), False
                if checkpoint_path is None:
                    raise CheckpointError(f"--resume: no checkpoint in {experiment_dir}/checkpoints")
            if checkpoint_path:
                checkpoint = load_checkpoint(checkpoint_path)
    except Exception as e:  # any failure: the other ranks must hear of it
        error = e
    if stop_on_failures(processes, error):
        return 2
    if checkpoint_path or args.resume:
        checkpoint_path, checkpoint = processes.broadcast_from_main((checkpoint_path, checkpoint))
    try:
        seed_everything(args.seed + processes.rank)  # each rank its own random stream (DDP copies rank 0's weights)
        start = starting_network(labels.keypoint_set, args.variant, args.num_refinement_stages, checkpoint_path,
                                 weights_only, args.from_mobilenet, args.num_channels, args.backbone_width,
                                 checkpoint=checkpoint)
        del checkpoint
        given = given_optimizer_items(args)
        recipe_items = []
        if start.training_state is not None:  # a resumed run takes again what its start took from the recipe
            recipe_items = FineTuneRecipe.restore(settings, start.training_state.get("optimizer_settings", {}), given)
        elif start.reshaped and not args.no_fine_tune_recipe:
            recipe_items = FINE_TUNE_RECIPE.apply(settings, given)
        iteration = start.training_state["iteration"] if start.training_state else 0
        batch_note = None
        if args.batch_size is None:
            args.batch_size = max(len(labels.sources), default_batch_size(len(dataset), processes.world_size))
            if args.batch_size < DEFAULT_BATCH_SIZE:
                batch_note = (f"note: batch size {args.batch_size} per process (the default {DEFAULT_BATCH_SIZE} "
                              f"shrunk for {len(dataset)} samples: {MIN_BATCHES_PER_EPOCH} or more batches per "
                              "epoch where the data allows, more steps in a short run; --batch-size sets it)")
        if recipe is None:
            sampler = InfiniteBatchSampler(len(dataset), args.batch_size, args.seed,
                                           start_batch=iteration * args.batches_per_iter, rank=processes.rank,
                                           world_size=processes.world_size)
        else:
            sampler = mixed_sampler_for(labels, recipe.source_ratios, [s.sample_ratio_factor for s in recipe.sources],
                                        args.batch_size, args.seed, iteration * args.batches_per_iter,
                                        processes.rank, processes.world_size)
    except Exception as e:
        error = e
    if stop_on_failures(processes, error):
        return 2
    fit_seconds, fit_note = 0.0, None
    if start.composed_channels and start.training_state is None:
        fit_samples = args.fit_composed_limbs if args.fit_composed_limbs is not None else (
            FINE_TUNE_RECIPE.fit_samples if recipe_items else 0)
        if fit_samples > 0 and processes.is_main:  # DistributedDataParallel gives the other ranks rank 0's weights
            began = time.monotonic()
            report = fit_channels(start.network.to(processes.device),
                                  fit_batches(dataset, fit_samples, args.seed, not args.no_progress),
                                  start.composed_channels, processes.device)
            fit_seconds = time.monotonic() - began
            if report is not None:
                fit_note = (f"composed limbs' PAFs fitted by least squares on {report.samples} samples "
                            f"({report.channels} channels, {fit_seconds:.1f} s): their loss {report.loss_before:.2f} "
                            f"-> {report.loss_after:.2f} per sample (--fit-composed-limbs 0 leaves them as composed)")
        # the fit spends the time budget of every rank alike (each compares the same clock with its budget)
        fit_seconds = processes.broadcast_from_main(fit_seconds)
    if args.max_iterations:
        total = args.max_iterations
    elif args.max_minutes and args.epochs is None:  # the time budget alone ends the run
        total = sys.maxsize
    else:
        total = max(1, (args.epochs or DEFAULT_EPOCHS) * sampler.batches_per_epoch // args.batches_per_iter)
    run_settings = RunSettings(
        experiment_dir, total, sampler.batches_per_epoch, args.batch_size, args.batches_per_iter, args.amp,
        args.log_after, args.checkpoint_after, args.val_after, args.keep_checkpoints, not args.no_progress,
        data={"labels": os.path.abspath(args.prepared_train_labels or args.mix), "samples": len(dataset),
              "seed": args.seed,
              "batch_size": args.batch_size, "batches_per_iter": args.batches_per_iter,
              "world_size": processes.world_size, "augmentation": repr(dataset.augmentation),
              **({"mix": os.path.abspath(args.mix), "per_batch": sampler.counts} if recipe else {})},
        skip_nonfinite_loss=args.skip_nonfinite_loss, channels_last=args.channels_last,
        max_seconds=None if args.max_minutes is None else max(1.0, 60 * args.max_minutes - fit_seconds),
        keep_going_on_save_error=args.keep_going_on_save_error)
    num_workers = default_num_workers() if args.num_workers is None else args.num_workers
    loader = make_train_loader(dataset, sampler, num_workers, pin_memory=processes.device.type == "cuda")
    if earlier and processes.is_main:  # --overwrite: only now that everything else is known to start
        clear_earlier_run(experiment_dir)
        say(f"--overwrite: deleted the earlier run in {experiment_dir} ({', '.join(earlier)})")
    try:
        trainer = Trainer(run_settings, start.network, start.architecture, labels.keypoint_set, loader, processes,
                          settings, validator, start.training_state, start.new_channels, best_metric)
    except ValueError as e:  # the same on every rank: each stops with it
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    say(f"network: {start.architecture.variant}, {start.architecture.num_refinement_stages} refinement stage(s), "
        f"keypoint set '{labels.keypoint_set.name}'; {start.description}")
    if start.reshaped:
        say(format_changes(start.changes))
    if recipe_items or start.reshaped:
        say("fine-tuning " + ("recipe: " if recipe_items else "(--no-fine-tune-recipe or every item given): ")
            + describe_recipe(settings, recipe_items)
            + (f". Override with {', '.join(RECIPE_FLAGS[item] for item in recipe_items)}, or --no-fine-tune-recipe"
               if recipe_items else ""))
    if fit_note:
        say(fit_note)
    say(f"flip pairs of '{labels.keypoint_set.name}' (swapped by the flip augmentation): "
        f"{labels.keypoint_set.describe_flip_pairs()}")
    if batch_note:
        say(batch_note)
    say(f"data: {len(dataset)} samples, {sampler.batches_per_epoch} batches of {args.batch_size} per epoch x "
        f"{processes.world_size} process(es); images "
        + (f"decoded once into memory ({dataset.images.cache_megabytes:.0f} MB)" if dataset.images.cached
           else "decoded per sample"))
    if recipe is not None:
        say(f"mix '{recipe.name}' ({recipe.mode}): every batch of {args.batch_size} holds "
            + ", ".join(f"{count} {source.name}" for count, source in zip(sampler.counts, labels.sources)))
    say((f"training for {args.max_minutes:g} minutes" + ("" if total == sys.maxsize else
                                                          f" or to iteration {total}, whichever comes first")
         if args.max_minutes else f"training to iteration {total}")
        + f" on {processes.device} (amp: {args.amp or 'off'}), outputs in {experiment_dir}")
    all_ranks_finish = False  # every rank ends the run together, or one rank fails on its own
    try:
        result = trainer.run()
        all_ranks_finish = True
    except ImageReadError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    except CheckpointSaveError as e:
        all_ranks_finish = True  # a failed save is agreed on by all ranks before any acts on it
        if processes.is_main:
            print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 1
    except NonFiniteLossError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        all_ranks_finish = True  # the stop signal is agreed on by all ranks before any acts on it
        print(f"stopped: {e}{flag_hint(e)}", file=sys.stderr)
        return 128 + e.signal_number  # what a shell reports for a process ended by that signal
    finally:
        if processes.distributed:
            trainer.close_distributed(synchronise=all_ranks_finish)
    say(f"done: iteration {result['iteration']} after {result['train_seconds'] / 60:.1f} minutes of training, "
        f"loss {result['loss']:.4f}"
        + (f", {result['skipped_steps']} steps skipped (NaN or inf loss)" if result["skipped_steps"] else "")
        + (f", {result['failed_saves']} checkpoint(s) could not be written (last complete one: "
           f"{latest_checkpoint(experiment_dir)})" if result["failed_saves"] else "")
        + (f", best {result['best_metric']} {result['best_value']:.4f}" if result["best_value"] is not None else "")
        + (f"; amp {args.amp}: the network computed in {str(result['computed_dtype']).removeprefix('torch.')}"
           if args.amp and result["computed_dtype"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

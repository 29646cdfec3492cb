"""What a training run starts from: the network (from scratch, ImageNet MobileNet, or another checkpoint's weights),
the optimiser's parameter groups (per-module learning-rate multipliers, freezing), the learning-rate schedule,
processes (torchrun), and the random states a resumed run restores.

Everything stored in a checkpoint here is plain data (numbers, strings, lists, tensors), so checkpoints load with
`torch.load(weights_only=True)`: the schedule is a list of epochs, not a torch scheduler object.
"""
from __future__ import annotations

import datetime
import os
import random
import socket
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lwpose.errors import LwposeError
from lwpose.interop.checkpoint import CheckpointError, load_checkpoint, safe_torch_load
from lwpose.keypoints import KeypointSet, load_keypoint_set
from lwpose.modules.pose_network import Architecture, PoseNetwork, build_network
from lwpose.training.growing import grow_network

# The reference's optimiser settings (REFERENCE.md): Adam, lr 4e-5, weight decay 5e-4, refinement stages x4,
# biases x2, lr x0.333 at epochs 100, 200 and 260.
DEFAULT_LR_MULTIPLIERS = {"refinement_stages": 4.0}


@dataclass
class OptimizerSettings:
    base_lr: float = 4e-5
    weight_decay: float = 5e-4
    lr_multipliers: dict = field(default_factory=lambda: dict(DEFAULT_LR_MULTIPLIERS))
    bias_lr_multiplier: float = 2.0
    freeze: tuple = ()
    lr_drop_epochs: tuple = (100, 200, 260)
    # Drops at fractions of the run, for runs whose length is a time budget rather than a number of epochs: the
    # fraction is iterations done over --max-iterations, or training time over --max-minutes, whichever is larger.
    lr_drop_progress: tuple = ()
    lr_drop_factor: float = 0.333
    # Channels a grown network gained (lwpose/training/growing.py) step this many times further than the rest of
    # their tensor.
    new_channel_lr_multiplier: float = 1.0
    # The learning rate rises linearly from 1 / warmup_iterations of its value to all of it over these iterations.
    warmup_iterations: int = 0
    # The items above that train.py took from the fine-tuning recipe (FineTuneRecipe): a resumed run takes them again.
    fine_tune_recipe: tuple = ()

    def to_dict(self) -> dict:
        return {"base_lr": self.base_lr, "weight_decay": self.weight_decay,
                "lr_multipliers": dict(self.lr_multipliers), "bias_lr_multiplier": self.bias_lr_multiplier,
                "freeze": list(self.freeze), "lr_drop_epochs": list(self.lr_drop_epochs),
                "lr_drop_progress": list(self.lr_drop_progress), "lr_drop_factor": self.lr_drop_factor,
                "new_channel_lr_multiplier": self.new_channel_lr_multiplier,
                "warmup_iterations": self.warmup_iterations, "fine_tune_recipe": list(self.fine_tune_recipe)}


@dataclass(frozen=True)
class FineTuneRecipe:
    """What train.py sets, item by item where the user set nothing, when it starts from the weights of another
    keypoint set (heads grown, shrunk or composed: lwpose/training/growing.py). Measured on the journey of
    docs/own-keypoints.md (the imported weights fine-tuned to a 5-keypoint set for 3 CPU minutes)."""

    # The kept channels barely move (a higher rate undoes what the old model knew), the new and composed ones step at
    # 3e-3 (1e-3 learns them too slowly for a 3-minute run, 1e-2 overshoots).
    base_lr: float = 1e-5
    new_channel_lr_multiplier: float = 300.0
    freeze: tuple = ("model",)
    warmup_iterations: int = 0
    lr_drop_progress: tuple = ()
    # Training samples the composed limbs' PAF output weights are fitted on by least squares before the first step
    # (lwpose/training/head_fit.py; train.py --fit-composed-limbs).
    fit_samples: int = 256

    # the settings the recipe sets (each a flag of train.py and an entry of its config file)
    ITEMS = ("base_lr", "new_channel_lr_multiplier", "freeze", "warmup_iterations", "lr_drop_progress")

    def apply(self, settings: OptimizerSettings, given: set) -> list[str]:
        """Set every item of the recipe that is not in `given` (the items the user chose); returns those set."""
        applied = []
        for item in self.ITEMS:
            if item not in given:
                setattr(settings, item, getattr(self, item))
                applied.append(item)
        if "lr_drop_progress" in applied and "lr_drop_epochs" not in given and self.lr_drop_progress:
            settings.lr_drop_epochs = ()  # a fine-tune's schedule is its time budget's, not the epochs'
        settings.fine_tune_recipe = tuple(applied)
        return applied

    @staticmethod
    def restore(settings: OptimizerSettings, stored: dict, given: set) -> list[str]:
        """A resumed run: the items its first run took from the recipe (`stored`: the checkpoint's optimizer
        settings), taken again where the user gave nothing now; returns them."""
        restored = [item for item in stored.get("fine_tune_recipe", ()) if item not in given]
        for item in restored:
            value = stored[item]
            setattr(settings, item, tuple(value) if isinstance(value, list) else value)
        if restored and "lr_drop_epochs" not in given:
            settings.lr_drop_epochs = tuple(stored.get("lr_drop_epochs", settings.lr_drop_epochs))
        settings.fine_tune_recipe = tuple(restored)
        return restored


FINE_TUNE_RECIPE = FineTuneRecipe()


def describe_recipe(settings: OptimizerSettings, applied: list[str]) -> str:
    """The fine-tuning settings in use, the recipe's marked (train.py adds the flags that override them)."""
    values = {"base_lr": f"base lr {settings.base_lr:g}",
              "new_channel_lr_multiplier": f"new channels step x{settings.new_channel_lr_multiplier:g}",
              "freeze": f"frozen: {', '.join(settings.freeze) or 'nothing'}",
              "warmup_iterations": f"warm-up {settings.warmup_iterations} iterations",
              "lr_drop_progress": "lr x{:g} at {} of the run".format(
                  settings.lr_drop_factor, ", ".join(f"{p:.0%}" for p in settings.lr_drop_progress))
              if settings.lr_drop_progress else "no lr drop by progress"}
    parts = [text + (" (recipe)" if item in applied else " (yours)") for item, text in values.items()]
    return "; ".join(parts)


CONFIG_KEYS = set(OptimizerSettings().to_dict()) - {"fine_tune_recipe"}


def drop_fractions(values, what: str) -> tuple:
    """`lr_drop_progress` checked (fractions of the run, between 0 and 1); `what` names where they came from."""
    values = tuple(values)
    if not all(isinstance(f, (int, float)) and 0 < f < 1 for f in values):
        raise ValueError(f"{what} holds fractions between 0 and 1, not {' '.join(map(str, values))}")
    return values


def optimizer_settings_from_config(config: dict, path: str = "<config>") -> OptimizerSettings:
    """Settings from a JSON config's entries (any subset of OptimizerSettings' fields); `lr_multipliers` add to
    the defaults (refinement stages x4) rather than replace them."""
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"config {path}: unknown entries {sorted(unknown)} (known: {sorted(CONFIG_KEYS)})")
    settings = OptimizerSettings()
    for key, value in config.items():
        if key in ("freeze", "lr_drop_epochs", "lr_drop_progress"):
            value = tuple(value)
            if key == "lr_drop_progress":
                value = drop_fractions(value, f"config {path}: 'lr_drop_progress'")
        elif key == "lr_multipliers":
            if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
                raise ValueError(f"config {path}: 'lr_multipliers' must map module names to numbers")
            value = {**settings.lr_multipliers, **{str(k): float(v) for k, v in value.items()}}
        setattr(settings, key, value)
    return settings


def module_matches(name: str, prefix: str) -> bool:
    """Is `name` the module (or parameter) `prefix` or inside it? ('model' matches 'model.0.weight', not 'models')"""
    return name == prefix or name.startswith(prefix + ".")


def _check_prefixes(network: nn.Module, prefixes, what: str) -> None:
    names = [n for n, _ in network.named_parameters()]
    modules = sorted({n.split(".")[0] for n in names})
    for prefix in prefixes:
        if not any(module_matches(n, prefix) for n in names):
            raise ValueError(f"{what} '{prefix}' names no part of the network (top-level modules: "
                             f"{', '.join(modules)}; deeper parts by dotted path, e.g. 'refinement_stages.0')")


def parameter_groups(network: nn.Module, settings: OptimizerSettings) -> list[dict]:
    """Optimiser groups: each parameter's lr multiplier is its longest matching module prefix's (1 if none), times
    `bias_lr_multiplier` for biases; biases, normalisation and depthwise weights get no weight decay. Parameters
    under a frozen prefix stop requiring gradients and are left out."""
    _check_prefixes(network, settings.freeze, "frozen module")
    # The default multiplier of refinement stages has nothing to name in a network without any.
    _check_prefixes(network, [p for p in settings.lr_multipliers
                              if not (p in DEFAULT_LR_MULTIPLIERS
                                      and settings.lr_multipliers[p] == DEFAULT_LR_MULTIPLIERS[p])],
                    "lr multiplier module")
    no_decay = set()
    for module_name, module in network.named_modules():
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        for param_name, param in module.named_parameters(recurse=False):
            if param.ndim <= 1 or depthwise:
                no_decay.add(f"{module_name}.{param_name}" if module_name else param_name)
    groups: dict[tuple, dict] = {}
    for name, param in network.named_parameters():
        if any(module_matches(name, prefix) for prefix in settings.freeze):
            param.requires_grad_(False)
            continue
        param.requires_grad_(True)
        matching = [p for p in settings.lr_multipliers if module_matches(name, p)]
        multiplier = settings.lr_multipliers[max(matching, key=len)] if matching else 1.0
        if name.endswith(".bias"):
            multiplier *= settings.bias_lr_multiplier
        decay = 0.0 if name in no_decay else settings.weight_decay
        key = (multiplier, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": settings.base_lr * multiplier, "weight_decay": decay,
                           "lr_multiplier": multiplier}
        groups[key]["params"].append(param)
    if not groups:
        raise ValueError("every parameter is frozen: nothing to train")
    return list(groups.values())


def learning_rate_factor(epoch: int, settings: OptimizerSettings, progress: float = 0.0,
                         iteration: int | None = None) -> float:
    """`progress`: the share of the run done (0 to 1), for `lr_drop_progress`; `iteration` (the one about to run,
    from 0), for the warm-up."""
    drops = sum(1 for e in settings.lr_drop_epochs if epoch >= e) + sum(
        1 for p in settings.lr_drop_progress if progress >= p)
    warmup = 1.0
    if settings.warmup_iterations and iteration is not None:
        warmup = min(1.0, (iteration + 1) / settings.warmup_iterations)
    return settings.lr_drop_factor ** drops * warmup


def set_learning_rates(optimizer: torch.optim.Optimizer, epoch: int, settings: OptimizerSettings,
                       progress: float = 0.0, iteration: int | None = None) -> float:
    factor = learning_rate_factor(epoch, settings, progress, iteration)
    for group in optimizer.param_groups:
        group["lr"] = settings.base_lr * group["lr_multiplier"] * factor
    return settings.base_lr * factor


# ----------------------------------------------------------------- networks
def load_imagenet_mobilenet(network: PoseNetwork, path: str) -> int:
    """Copy an ImageNet MobileNet v1 (the layout of the reference's `mobilenet_sgd_68.848.pth.tar`: 'state_dict'
    with DataParallel's 'module.' prefix, `model.{i}.{j}` conv/BatchNorm tensors) into the backbone, tensor by
    tensor where key and shape match. Returns how many tensors were copied."""
    raw = safe_torch_load(path)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"MobileNet weights {path}: no state dict found")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    own = network.state_dict()
    copied = {k: v for k, v in state.items() if k.startswith("model.") and k in own and own[k].shape == v.shape}
    if not copied:
        raise CheckpointError(f"MobileNet weights {path}: no tensor matches the backbone by key and shape (expected "
                              "keys like 'module.model.1.0.weight'; the 'lwop' variant has the BatchNorm layout)")
    network.load_state_dict(copied, strict=False)
    return len(copied)


@dataclass
class StartingPoint:
    network: PoseNetwork
    architecture: Architecture
    description: str
    training_state: dict | None = None  # a checkpoint's training state, when resuming
    new_channels: dict = field(default_factory=dict)  # parameter name -> (dim, indices) of channels grown new
    changes: dict = field(default_factory=dict)  # keypoints and limbs kept, new, composed, dropped (growing.py)
    composed_channels: dict = field(default_factory=dict)  # PAF output layer -> its rows of composed limbs

    @property
    def reshaped(self) -> bool:
        """Whether the heads were grown, shrunk or composed into another keypoint set (not a plain copy)."""
        return any(names for kind, names in self.changes.items() if not kind.startswith("kept"))


def starting_network(keypoint_set: KeypointSet, variant: str = "lwop", num_refinement_stages: int = 1,
                     checkpoint_path: str | None = None, weights_only: bool = False,
                     from_mobilenet: str | None = None, num_channels: int = 128,
                     backbone_width: float = 1.0, checkpoint: dict | None = None) -> StartingPoint:
    """The network to train: a checkpoint (resumed with its training state, or its weights only), else a fresh
    network of `variant` (`num_channels` wide after the backbone, a backbone `backbone_width` times MobileNet's),
    optionally with an ImageNet MobileNet backbone. `checkpoint`: the file at `checkpoint_path` already loaded
    (under torchrun, rank 0 reads it and sends it to the ranks whose disks lack it)."""
    if checkpoint_path:
        if checkpoint is None:
            checkpoint = load_checkpoint(checkpoint_path)
        architecture = Architecture.from_dict(checkpoint["architecture"])
        own_set = load_keypoint_set(checkpoint["keypoint_set"])
        if not weights_only:
            if "training" not in checkpoint:
                raise CheckpointError(f"checkpoint {checkpoint_path} holds no training state to resume (imported "
                                      "weights?); start a new run from its weights only", settings=("weights_only",))
            if own_set.keypoints != keypoint_set.keypoints:
                raise CheckpointError(f"checkpoint {checkpoint_path} was trained for keypoint set '{own_set.name}', "
                                      f"the labels are in '{keypoint_set.name}'; resume needs the same set")
            network = build_network(architecture)
            network.load_state_dict(checkpoint["state_dict"])
            return StartingPoint(network, architecture, f"resumed from {checkpoint_path} at iteration "
                                 f"{checkpoint['training']['iteration']}", checkpoint["training"])
        try:
            grown = grow_network(checkpoint["state_dict"], architecture, own_set, keypoint_set)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {checkpoint_path}: {e}") from None
        note = f"weights of {checkpoint_path}"
        if own_set.to_dict() != keypoint_set.to_dict():
            note += f"; {grown.description}"
        return StartingPoint(grown.network, grown.architecture, note, new_channels=grown.new_channels,
                             changes=grown.changes, composed_channels=grown.composed_channels)
    architecture = Architecture(keypoint_set.num_heatmaps, keypoint_set.num_pafs, variant, num_refinement_stages,
                                num_channels, backbone_width)
    network = build_network(architecture)
    if from_mobilenet:
        count = load_imagenet_mobilenet(network, from_mobilenet)
        return StartingPoint(network, architecture, f"ImageNet MobileNet backbone from {from_mobilenet} "
                             f"({count} tensors loaded)")
    return StartingPoint(network, architecture, "from scratch")


# --------------------------------------------------------------- processes
DEFAULT_DIST_TIMEOUT_MINUTES = 30.0


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun), and the few collectives the set-up
    and the validation need (each one a no-op for a single process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather_to_main(self, value) -> list | None:
        """Every rank's `value` (any picklable object), in rank order, on rank 0; None on the others."""
        if not self.distributed:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast_from_main(self, value):
        """Rank 0's `value` on every rank (the others pass anything, e.g. None)."""
        if not self.distributed:
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]

    def agree_on_failures(self, message: str | None) -> list[tuple[int, str, str]]:
        """Each rank says whether its set-up failed (a message) or not (None); every rank gets the same list of
        (rank, host, message) of those that failed, so that all of them stop together instead of waiting for one
        that has gone."""
        if not self.distributed:
            return [(self.rank, socket.gethostname(), message)] if message is not None else []
        everyone = [None] * self.world_size
        torch.distributed.all_gather_object(everyone, (self.rank, socket.gethostname(), message))
        return [entry for entry in everyone if entry[2] is not None]


class ProcessSetupError(LwposeError, RuntimeError):
    """This process cannot take its place in the launch (no GPU for its rank, CUDA missing)."""


def cuda_device_for_rank(requested_index: int | None, local_rank: int, world_size: int, device_count: int) -> int:
    """The GPU of this process: under torchrun (world_size > 1) the one of its local rank, else the one asked for
    (0 when none was named); refused when this machine has no such GPU."""
    index = local_rank if world_size > 1 else (requested_index or 0)
    if index >= device_count:
        if world_size > 1:
            raise ProcessSetupError(
                f"local rank {local_rank} needs GPU {index}, but this machine shows {device_count} GPU(s): start at "
                f"most {device_count} process(es) per machine (torchrun --nproc_per_node={device_count}), or train "
                "on the CPU")
        raise ProcessSetupError(f"GPU {index} was asked for, but this machine shows {device_count} GPU(s)")
    return index


def init_processes(device: str, timeout_minutes: float = DEFAULT_DIST_TIMEOUT_MINUTES) -> ProcessGroup:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPUs); one GPU per local rank. A collective
    that waits longer than `timeout_minutes` for a rank stops the run."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        torch_device = torch.device(device)
    except RuntimeError as e:
        raise ProcessSetupError(f"device '{device}': {e}") from None
    if torch_device.type == "cuda":
        if not torch.cuda.is_available():
            raise ProcessSetupError(f"device '{device}': this torch ({torch.__version__}) sees no CUDA GPU")
        index = cuda_device_for_rank(torch_device.index, local_rank, world_size, torch.cuda.device_count())
        torch_device = torch.device("cuda", index)
        torch.cuda.set_device(torch_device)
    if timeout_minutes <= 0:
        raise ProcessSetupError(f"distributed timeout {timeout_minutes:g} minutes: give a positive time")
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch_device.type == "cuda" else "gloo",
                                             timeout=datetime.timedelta(minutes=timeout_minutes))
    return ProcessGroup(rank, world_size, local_rank, torch_device)


# ------------------------------------------------------------ mixed precision
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_problem(amp: str | None, device_type: str, bf16_supported: bool = True, device_name: str = "") -> str | None:
    """Why mixed precision `amp` cannot run on this device (None when it can): bf16 needs bfloat16 arithmetic on the
    GPU (compute capability 8.0 on: A100, H100, RTX 30xx/40xx, L4), which V100 and T4 lack."""
    if amp is None:
        return None
    if amp not in AMP_DTYPES:
        return f"mixed precision '{amp}' unknown (choose one of {', '.join(AMP_DTYPES)})"
    if amp == "bf16" and device_type == "cuda" and not bf16_supported:
        return (f"bf16 needs a GPU with bfloat16 arithmetic (compute capability 8.0 or later); "
                f"{device_name or 'this GPU'} has none: use fp16 (with loss scaling) instead")
    return None


def check_amp(amp: str | None, device: torch.device) -> None:
    """ValueError when `amp` cannot run on `device` (see amp_problem), before the first step finds out."""
    bf16_supported, name = True, ""
    if amp == "bf16" and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        name = f"{name} (compute capability {major}.{minor})"
        # without emulation: a V100 "supports" bf16 tensors, at a fraction of fp32's speed
        try:
            bf16_supported = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument
            bf16_supported = major >= 8
    problem = amp_problem(amp, device.type, bf16_supported, name)
    if problem:
        raise ValueError(problem)


# ------------------------------------------------------------ random states
def capture_rng_states(device: torch.device | None = None) -> dict:
    """This process's random states: Python's, NumPy's, torch's CPU generator and, on a GPU, its own device's."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    states = {"python": {"version": version, "state": list(state), "gauss": gauss},
              "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
              "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def rng_states_of_rank(saved: dict, rank: int) -> dict | None:
    """The states rank `rank` saved in a checkpoint's 'rng' entry ({'per_rank': [...]}, one per process of the run
    that wrote it); None for a rank that run did not have (it keeps its fresh seed). A checkpoint from before
    per-rank states holds rank 0's alone."""
    if "per_rank" in saved:
        per_rank = saved["per_rank"]
        return per_rank[rank] if rank < len(per_rank) else None
    return saved if rank == 0 else None


def cuda_rng_state_for(states: dict, device_index: int) -> torch.Tensor | None:
    """The CUDA generator state saved for this device: a rank's own (one tensor), or from a checkpoint of before
    per-rank states, the entry of this device in its list of every device the writer saw (None past its end: a run
    may resume on fewer GPUs, or on more)."""
    cuda = states.get("cuda")
    if cuda is None:
        return None
    if isinstance(cuda, torch.Tensor):
        return cuda
    return cuda[device_index] if device_index < len(cuda) else None


def restore_rng_states(states: dict, device: torch.device | None = None) -> None:
    """Restore one rank's states (see rng_states_of_rank); the CUDA state only onto this process's own GPU."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if device is not None and device.type == "cuda":
        cuda = cuda_rng_state_for(states, device.index or 0)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Same inputs, same results, run after run (slower on GPUs)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled

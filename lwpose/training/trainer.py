"""The training loop behind train.py: masked L2 over every stage, AMP, DistributedDataParallel, resumable
checkpoints, validation with the best checkpoint kept by AP, CSV and TensorBoard logs, a tqdm progress bar.

The loop takes batches from any iterable of dicts (see datasets/pose_dataset.py for the keys); it does not build
them, so this package does not depend on `datasets`. One iteration is one optimiser step over `batches_per_iter`
batches. Rank 0 writes every log and checkpoint; the others only train.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import glob
import math
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lwpose.constants import PIXEL_MEAN, PIXEL_SCALE
from lwpose.errors import LwposeError, SettingError
from lwpose.evaluation.best_metric import BestMetric
from lwpose.interop.checkpoint import make_checkpoint, save_checkpoint
from lwpose.keypoints import KeypointSet
from lwpose.modules.loss import loss_masks, pose_loss
from lwpose.modules.pose_network import Architecture, PoseNetwork
from lwpose.training.setup import (AMP_DTYPES, OptimizerSettings, ProcessGroup, capture_rng_states, module_matches,
                                   parameter_groups, restore_rng_states, rng_states_of_rank, set_learning_rates)

__all__ = ["AMP_DTYPES", "RunSettings", "Trainer", "latest_checkpoint", "TrainingInterrupted",
           "NonFiniteLossError", "CheckpointSaveError"]
# what a user can change when a checkpoint cannot be written: resume after making room, or keep going without it
SAVE_ERROR_SETTINGS = ("resume", "keep_going_on_save_error")
CHECKPOINT_PATTERN = re.compile(r"checkpoint_iter_(\d+)\.pth$")


@dataclass
class RunSettings:
    experiment_dir: str
    total_iterations: int
    batches_per_epoch: int
    batch_size: int  # per process
    batches_per_iter: int = 1
    amp: str | None = None
    log_after: int = 100
    checkpoint_after: int = 5000
    val_after: int = 5000
    keep_checkpoints: int = 3
    progress: bool = True
    skip_nonfinite_loss: bool = False  # skip a step whose loss is NaN or inf instead of stopping
    # Activations in (N, H, W, C) memory order: oneDNN's CPU convolutions run a small network's training steps
    # about 1.2-1.4x faster so (README, "Training on the CPU"); the weights saved are the same either way.
    channels_last: bool = False
    # A time budget: training stops once its loop has run this long (summed over resumes; start-up is not counted),
    # even short of total_iterations.
    max_seconds: float | None = None
    data: dict = field(default_factory=dict)  # what fixes the data order (seed, batch size, ...): kept for resume
    # A checkpoint that cannot be written (a full disk) stops the run, or with this, only warns and training goes on
    keep_going_on_save_error: bool = False

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.experiment_dir, "checkpoints")


class TrainingInterrupted(LwposeError):
    """SIGTERM or SIGINT arrived; the run saved a checkpoint of its last finished iteration and stopped."""

    def __init__(self, signal_number: int, iteration: int, checkpoint: str | None):
        self.signal_number = signal_number
        self.iteration = iteration
        self.checkpoint = checkpoint
        super().__init__(f"{signal.Signals(signal_number).name} at iteration {iteration}: "
                         + (f"saved {checkpoint}" if checkpoint else "no checkpoint written by this process")
                         + "; resume to continue", settings=("resume",))


class NonFiniteLossError(LwposeError, FloatingPointError):
    """A step's loss was NaN or inf; the step was not applied."""


class CheckpointSaveError(LwposeError, OSError):
    """A checkpoint could not be written (no space left, a file size limit, ...); the previous ones are intact."""


def _errno_of(error: BaseException) -> int | None:
    """The operating system's error number behind `error`: torch's serializer reports a failed write as a
    RuntimeError whose context holds the OSError."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error.errno
        error = error.__cause__ or error.__context__
    return None


def _megabytes(size: float) -> str:
    return f"{size / 2 ** 20:.1f} MB"


def tensor_bytes(value) -> int:
    """Bytes of every tensor inside a (nested) checkpoint dict: about what the file takes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def checkpoints_by_iteration(directory: str) -> list[tuple[int, str]]:
    """(iteration, path) of every checkpoint_iter_N.pth in `directory`, newest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "checkpoint_iter_*.pth")):
        match = CHECKPOINT_PATTERN.search(path)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_checkpoint(experiment_dir: str) -> str | None:
    """The experiment's checkpoint with the highest iteration, if any."""
    found = checkpoints_by_iteration(os.path.join(experiment_dir, "checkpoints"))
    return found[0][1] if found else None


def images_to_network_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, H, W, 3) BGR batch -> float (N, 3, H, W) normalised as the network expects; with `channels_last`
    its memory stays in the loader's (N, H, W, 3) order."""
    images = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return ((images - PIXEL_MEAN) * PIXEL_SCALE).contiguous(memory_format=layout)


class Trainer:
    def __init__(self, settings: RunSettings, network: PoseNetwork, architecture: Architecture,
                 keypoint_set: KeypointSet, batches, processes: ProcessGroup, optimizer_settings: OptimizerSettings,
                 validator=None, training_state: dict | None = None, new_channels: dict | None = None,
                 best_metric: BestMetric | None = None):
        self.settings = settings
        self.new_channels = dict(new_channels or {})  # parameter name -> (dim, indices) of channels grown new
        self.architecture = architecture
        self.keypoint_set = keypoint_set
        self.batches = batches
        self.processes = processes
        self.optimizer_settings = optimizer_settings
        # what validation reports (lwpose/training/validators.py) and the metric that picks the best checkpoint
        self.validator = validator
        self.best_metric = best_metric or (BestMetric.parse(validator.default_metric, validator.metric_names)
                                           if validator is not None else None)
        self.device = processes.device
        self.network = network.to(self.device)
        if settings.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        # fused: one kernel over all tensors instead of a loop of small ops per parameter (on the CPU, the
        # quickstart network's step is about 8% shorter)
        self.optimizer = torch.optim.Adam(parameter_groups(self.network, optimizer_settings),
                                          lr=optimizer_settings.base_lr, weight_decay=optimizer_settings.weight_decay,
                                          fused=True)
        if settings.amp is not None and settings.amp not in AMP_DTYPES:
            raise SettingError(f"mixed precision '{settings.amp}' unknown: choose one of {', '.join(AMP_DTYPES)}",
                               settings=("amp",))
        self.amp_dtype = AMP_DTYPES.get(settings.amp) if settings.amp else None
        self.computed_dtype: torch.dtype | None = None  # the dtype the network's outputs came in, once it ran
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.amp == "fp16")
        self.model = self.network
        if processes.distributed:
            self.model = DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.iteration = 0
        self.skipped_steps = 0
        self.train_seconds = 0.0  # time spent in the loop, agreed by all processes (the slowest one's)
        self.best_value: float | None = None  # the best metric's best value so far
        self.failed_saves = 0  # checkpoints that could not be written (only counted with keep_going_on_save_error)
        self._stop_signal: int | None = None
        # Collectives run on tensors the trainer keeps alive. A tensor Python frees while a gloo worker thread still
        # holds it makes that thread need the GIL to let go of it; if the process group is destroyed at that moment
        # (the main thread holds the GIL and joins the worker), the process never exits. CI hit exactly that.
        self._collective_buffers: dict[tuple, torch.Tensor] = {}
        if training_state is not None:
            self._restore(training_state)

    # ------------------------------------------------------------- state
    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        if self.best_metric is not None and state.get("best_metric", "AP") == self.best_metric.text:
            self.best_value = state.get("best_value", state.get("best_ap"))  # best_ap: the earlier format
        self.new_channels = {k: (int(dim), list(indices)) for k, (dim, indices) in
                             state.get("new_channels", self.new_channels).items()}
        own = rng_states_of_rank(state["rng"], self.processes.rank)
        if own is not None:  # a rank the writing run did not have keeps its fresh seed
            restore_rng_states(own, self.device)
        if self.processes.is_main:
            saved, now = state.get("data", {}), self.settings.data
            changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            if changed:
                tqdm.write(f"note: {', '.join(changed)} changed since the checkpoint; the data order will differ "
                           "from an uninterrupted run")

    def training_state(self, rng_per_rank: list | None = None) -> dict:
        """What a resume needs; `rng_per_rank`: every rank's random states (rank order), this rank's alone if not
        given."""
        if rng_per_rank is None:
            rng_per_rank = [capture_rng_states(self.device)]
        return {"iteration": self.iteration, "epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
                "scheduler": {"kind": "step", "lr_drop_epochs": list(self.optimizer_settings.lr_drop_epochs),
                              "lr_drop_progress": list(self.optimizer_settings.lr_drop_progress),
                              "lr_drop_factor": self.optimizer_settings.lr_drop_factor,
                              "base_lr": self.optimizer_settings.base_lr},
                "scaler": self.scaler.state_dict(), "rng": {"per_rank": rng_per_rank},
                "data": dict(self.settings.data),
                "best_metric": self.best_metric.text if self.best_metric else None, "best_value": self.best_value,
                "skipped_steps": self.skipped_steps, "train_seconds": self.train_seconds,
                "optimizer_settings": self.optimizer_settings.to_dict(),
                "new_channels": {k: [dim, list(indices)] for k, (dim, indices) in self.new_channels.items()},
                "world_size": self.processes.world_size}

    @property
    def progress(self) -> float:
        """The share of the run done: of its iterations or of its time budget, whichever is further along."""
        s = self.settings
        done = self.iteration / s.total_iterations if s.total_iterations else 1.0
        if s.max_seconds:
            done = max(done, self.train_seconds / s.max_seconds)
        return min(1.0, done)

    def _agree_on_signals_and_time(self, own_seconds: float) -> None:
        """After each step: under torchrun every process takes the others' stop signal and the slowest one's
        training time, so that all of them stop at the same iteration with the same learning rate (a process that
        went on alone would wait forever for the others)."""
        self.train_seconds = own_seconds
        if self.processes.distributed:
            shared = torch.tensor([float(self._stop_signal or 0), own_seconds], dtype=torch.float64,
                                  device=self.device)
            signal_number, self.train_seconds = self._all_reduce(shared, torch.distributed.ReduceOp.MAX).tolist()
            self._stop_signal = int(signal_number) or None

    def _out_of_time(self) -> bool:
        return bool(self.settings.max_seconds) and self.train_seconds >= self.settings.max_seconds

    @property
    def epoch(self) -> int:
        return self.iteration * self.settings.batches_per_iter // self.settings.batches_per_epoch

    def _checkpoint(self, training: bool, meta: dict | None = None, rng_per_rank: list | None = None) -> dict:
        return make_checkpoint(self.network.state_dict(), self.keypoint_set, self.architecture,
                               training=self.training_state(rng_per_rank) if training else None,
                               meta={"source": "train.py", "iteration": self.iteration, **(meta or {})})

    def save_checkpoint(self, rng_per_rank: list | None = None) -> str:
        """Write this iteration's checkpoint (rank 0) and keep the newest `keep_checkpoints`; CheckpointSaveError
        when it cannot be written (the older ones stay as they were)."""
        directory = self.settings.checkpoint_dir
        path = os.path.join(directory, f"checkpoint_iter_{self.iteration}.pth")
        self._write(self._checkpoint(training=True, rng_per_rank=rng_per_rank), path)
        for _, old in checkpoints_by_iteration(directory)[max(1, self.settings.keep_checkpoints):]:
            os.unlink(old)
        return path

    def _write(self, checkpoint: dict, path: str) -> None:
        """save_checkpoint, with a failed write told in one line: the file, why, what a checkpoint needs, and the
        newest checkpoint still intact."""
        try:
            save_checkpoint(checkpoint, path)
        except (OSError, RuntimeError) as e:
            raise CheckpointSaveError(self._save_failure(e, path, checkpoint),
                                      settings=SAVE_ERROR_SETTINGS) from e

    def _save_failure(self, error: BaseException, path: str, checkpoint: dict) -> str:
        directory = os.path.dirname(path) or "."
        needed = tensor_bytes(checkpoint)
        last = latest_checkpoint(self.settings.experiment_dir)
        if last is not None:
            needed = max(needed, os.path.getsize(last))
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = None
        number = _errno_of(error)
        if number in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < needed):
            why = "no space left on the device" + (f" ({_megabytes(free)} free)" if free is not None else "")
        elif number == errno.EFBIG:
            why = "larger than this process may write (its file size limit, ulimit -f)"
        else:
            why = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return (f"checkpoint {path} could not be written: {why}; a checkpoint needs about {_megabytes(needed)}. "
                + (f"The last complete checkpoint, {last}, is intact: make room, then resume from it"
                   if last else "No complete checkpoint of this run exists yet")
                + " (or keep going on save errors, with a warning each time)")

    def _save_collectively(self, write) -> str | None:
        """Run `write()` (a save) on rank 0 and let every rank know how it went: all of them stop on a failure
        (CheckpointSaveError), or with keep_going_on_save_error all go on and rank 0 warns. Returns the path written
        (rank 0) or None."""
        path, message = None, None
        if self.processes.is_main:
            try:
                path = write()
            except CheckpointSaveError as e:
                message = str(e)
        if self.processes.distributed:
            failed = self._all_reduce(torch.tensor([float(message is not None)], device=self.device),
                                      torch.distributed.ReduceOp.MAX)
            if failed.item() and message is None:
                message = "rank 0 could not write a checkpoint (its message says why)"
        if message is None:
            return path
        if not self.settings.keep_going_on_save_error:
            raise CheckpointSaveError(message, settings=SAVE_ERROR_SETTINGS)
        self.failed_saves += 1
        if self.processes.is_main:
            tqdm.write(f"warning: {message}; training goes on, as asked")
        return None

    def _save_training_checkpoint(self) -> str | None:
        """Every rank's random states gathered, then the checkpoint written by rank 0 (a collective: all ranks call
        it at the same iteration)."""
        rng_per_rank = self.processes.gather_to_main(capture_rng_states(self.device))
        return self._save_collectively(lambda: self.save_checkpoint(rng_per_rank))

    # ------------------------------------------------------------- logs
    def _open_logs(self):
        os.makedirs(self.settings.experiment_dir, exist_ok=True)
        self.log_path = os.path.join(self.settings.experiment_dir, "log.csv")
        self.val_log_path = os.path.join(self.settings.experiment_dir, "val_log.csv")
        for path in (self.log_path, self.val_log_path):
            _truncate_csv(path, self.iteration)  # a resumed run rewrites what came after its checkpoint
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(self.settings.experiment_dir, "tensorboard"),
                                        purge_step=self.iteration + 1)
        except ImportError:
            tqdm.write("note: tensorboard is not installed (pip install 'lwpose[train]'); CSV log only")

    def _log(self, values: dict, path: str) -> None:
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(values))
            if new:
                writer.writeheader()
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in values.items()})
        if self.writer is not None:
            prefix = "val" if path == self.val_log_path else "train"
            for key, value in values.items():
                if key not in ("iteration", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, values["iteration"])

    # ------------------------------------------------------------- loop
    def _set_train_mode(self) -> None:
        self.network.train()
        for name, module in self.network.named_modules():  # frozen parts keep their BatchNorm statistics too
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and any(
                    module_matches(name, p) for p in self.optimizer_settings.freeze):
                module.eval()

    def step(self, batch_iterator) -> torch.Tensor | None:
        """One optimiser step; returns the detached per-stage losses summed over the accumulated batches, or None
        when the loss was NaN or inf (on any process): then nothing is applied."""
        self.optimizer.zero_grad(set_to_none=True)
        # A skipped step must leave no trace, and the forward pass alone moves BatchNorm's running statistics.
        buffers = ([b.detach().clone() for b in self.network.buffers()] if self.settings.skip_nonfinite_loss
                   else None)
        total_parts = None
        for micro in range(self.settings.batches_per_iter):
            batch = next(batch_iterator)
            images = images_to_network_input(batch["image"], self.device, self.settings.channels_last)
            heatmaps = batch["heatmaps"].to(self.device, non_blocking=True)
            pafs = batch["pafs"].to(self.device, non_blocking=True)
            background = batch.get("background_mask")
            pseudo = [batch[name].to(self.device, non_blocking=True) if name in batch else None
                      for name in ("heatmap_weights", "paf_weights")]  # only with pseudo-labels
            heatmap_mask, paf_mask = loss_masks(batch["mask"].to(self.device, non_blocking=True),
                                                batch["heatmap_channel_mask"].to(self.device),
                                                batch["paf_channel_mask"].to(self.device),
                                                None if background is None else background.to(self.device), *pseudo)
            last = micro == self.settings.batches_per_iter - 1
            sync = self.model.no_sync() if self.processes.distributed and not last else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    outputs = self.model(images)
                self.computed_dtype = outputs[-1].dtype
                loss, parts = pose_loss(outputs, heatmaps, pafs, heatmap_mask, paf_mask)
                self.scaler.scale(loss / self.settings.batches_per_iter).backward()
            parts = torch.stack([p.detach() for p in parts]) / self.settings.batches_per_iter
            total_parts = parts if total_parts is None else total_parts + parts
        finite = torch.isfinite(total_parts).all().float()
        if self.processes.distributed:  # every process must agree, or they would step different weights
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not finite.item():
            self.optimizer.zero_grad(set_to_none=True)
            if buffers is not None:
                with torch.no_grad():
                    for buffer, saved in zip(self.network.buffers(), buffers):
                        buffer.copy_(saved)
            return None
        before = self._new_channel_values()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._amplify_new_channel_steps(before)
        return total_parts

    def _new_channel_values(self) -> list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]:
        """(parameter, dim, indices, values) of the grown channels, when they are to step further than the rest."""
        if self.optimizer_settings.new_channel_lr_multiplier == 1 or not self.new_channels:
            return []
        parameters = dict(self.network.named_parameters())
        values = []
        for name, (dim, indices) in self.new_channels.items():
            parameter = parameters.get(name)
            if parameter is not None and parameter.requires_grad:
                index = torch.as_tensor(indices, dtype=torch.long, device=parameter.device)
                values.append((parameter, dim, index, parameter.detach().index_select(dim, index)))
        return values

    @torch.no_grad()
    def _amplify_new_channel_steps(self, before) -> None:
        # Per-channel learning rates do not exist in torch's optimisers, and Adam's step ignores the gradient's scale,
        # so the grown channels' step itself is multiplied.
        multiplier = self.optimizer_settings.new_channel_lr_multiplier
        for parameter, dim, index, old in before:
            step = parameter.index_select(dim, index) - old
            parameter.index_copy_(dim, index, old + multiplier * step)

    def _all_reduce(self, values: torch.Tensor, op=torch.distributed.ReduceOp.SUM) -> torch.Tensor:
        key = (tuple(values.shape), values.dtype, values.device)
        buffer = self._collective_buffers.get(key)
        if buffer is None:
            buffer = self._collective_buffers[key] = torch.empty_like(values)
        buffer.copy_(values)
        torch.distributed.all_reduce(buffer, op=op)
        return buffer.clone()

    def _mean_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        if self.processes.distributed:
            values = self._all_reduce(values) / self.processes.world_size
        return values

    def close_distributed(self, synchronise: bool) -> None:
        """Leave the process group so that every process exits: wait for the others (only when all of them are known
        to get here: a failure on one rank leaves the others inside a collective), drop the DDP wrapper, then destroy
        the group while the collective buffers are still alive."""
        if not torch.distributed.is_initialized():
            return
        if synchronise:
            torch.distributed.barrier()
        self.model = self.network
        torch.distributed.destroy_process_group()

    def validate(self) -> dict | None:
        """Every rank decodes its share of the validation images; rank 0 scores them, logs every metric, and keeps
        the best checkpoint by the best metric (best_<metric>_iter_<N>.pth, with best.pth linking to it). Returns
        the metrics on rank 0 (None elsewhere)."""
        if self.validator is None:
            return None
        if self.processes.distributed:
            # BatchNorm's running statistics drift apart on each rank's own batches (DDP sends rank 0's only
            # before each training forward): validate everywhere with rank 0's, the ones its checkpoints hold.
            for buffer in self.network.buffers():
                torch.distributed.broadcast(buffer, src=0)
        metrics = self.validator(self.network, self.keypoint_set, self.device, self.processes)
        self._set_train_mode()
        improved = False
        if self.processes.is_main:
            value = self.best_metric.value(metrics)
            improved = value is not None and (self.best_value is None or value > self.best_value)
            if improved:
                self.best_value = value
            row = {"iteration": self.iteration, "epoch": self.epoch}
            row.update({name: (None if metrics.get(name) is None else float(metrics[name]))
                        for name in self.validator.metric_names})
            row[f"best {self.best_metric.text}"] = self.best_value
            self._log(row, self.val_log_path)
            tqdm.write(f"iteration {self.iteration}: {metrics['summary']}"
                       + (f"\n{self.best_metric.text} {value:.4f}" if value is not None else "")
                       + ("  new best" if improved else ""))
        improved = self.processes.broadcast_from_main(improved)
        if improved:
            self._save_collectively(lambda: self._save_best(metrics))
        return metrics

    def _save_best(self, metrics: dict) -> str:
        """The best checkpoint, named by its metric and iteration, and best.pth pointing at it (a link, or a copy
        where the filesystem has none); the previous best goes."""
        directory = self.settings.checkpoint_dir
        name = f"best_{self.best_metric.file_label}_iter_{self.iteration}.pth"
        path = os.path.join(directory, name)
        meta = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        meta.update({"best_metric": self.best_metric.text, "best_value": self.best_value})
        self._write(self._checkpoint(training=False, meta=meta), path)
        link = os.path.join(directory, "best.pth")
        temporary = link + ".new"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        try:
            os.symlink(name, temporary)
        except OSError:
            shutil.copyfile(path, temporary)
        os.replace(temporary, link)  # atomic: best.pth is always a whole checkpoint
        for old in glob.glob(os.path.join(directory, "best_*_iter_*.pth")):
            if os.path.basename(old) != name:
                os.unlink(old)
        return path

    def _request_stop(self, signal_number, frame) -> None:
        self._stop_signal = signal_number  # acted on between iterations, where the state is consistent

    def _install_stop_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {number: signal.signal(number, self._request_stop) for number in (signal.SIGTERM, signal.SIGINT)}

    def _stop(self, agreed: bool = True) -> None:
        """Save the last finished iteration (unless just saved) and raise TrainingInterrupted. `agreed`: every rank
        stops here at this iteration (the signal went through the per-step agreement), so they can gather their
        random states; otherwise rank 0 saves its own alone."""
        path = os.path.join(self.settings.checkpoint_dir, f"checkpoint_iter_{self.iteration}.pth")
        saved = self.processes.broadcast_from_main(os.path.exists(path)) if agreed else os.path.exists(path)
        if self.iteration > 0 and not saved:
            if agreed:
                self._save_training_checkpoint()
            elif self.processes.is_main:
                try:
                    self.save_checkpoint()
                except CheckpointSaveError as e:
                    tqdm.write(f"warning: {e}")
        raise TrainingInterrupted(self._stop_signal, self.iteration,
                                  path if self.processes.is_main and os.path.exists(path) else None)

    def _non_finite_loss(self) -> None:
        if self.settings.skip_nonfinite_loss:
            self.skipped_steps += 1
            if self.processes.is_main:
                tqdm.write(f"warning: loss is NaN or inf at iteration {self.iteration}; step skipped "
                           f"({self.skipped_steps} skipped so far, as asked)")
            return
        last = latest_checkpoint(self.settings.experiment_dir)
        raise NonFiniteLossError(
            f"loss is NaN or inf at iteration {self.iteration}; the step was not applied and the run stopped. "
            + (f"Last good checkpoint: {last}. " if last else "No checkpoint was written yet. ")
            + "Resume from it (a lower base learning rate may help), or let training skip such steps",
            settings=("resume", "base_lr", "skip_nonfinite_loss"))

    def run(self) -> dict:
        previous_handlers = self._install_stop_handlers()
        try:
            return self._run()
        finally:
            for number, handler in previous_handlers.items():
                signal.signal(number, handler)

    def _run(self) -> dict:
        s = self.settings
        main = self.processes.is_main
        if main:
            self._open_logs()
        self._set_train_mode()
        batch_iterator = iter(self.batches)
        window_parts, window_count, window_start = None, 0, time.perf_counter()
        last_loss = math.nan
        # a time budget's bar counts its seconds; the iterations show beside it
        timed = bool(s.max_seconds)
        bar = tqdm(total=round(s.max_seconds) if timed else s.total_iterations,
                   initial=int(self.train_seconds) if timed else self.iteration, desc="training",
                   unit="s" if timed else "it", disable=not (main and s.progress), dynamic_ncols=True,
                   # seconds per second is no rate to show
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if timed else None)
        try:
            seconds_before, loop_start = self.train_seconds, time.perf_counter()
            # the iteration whose checkpoint is on disk: a start on the checkpoint grid counts as saved (as a
            # resume from one is), any other start as not
            saved_at = self.iteration if self.iteration % s.checkpoint_after == 0 else None
            out_of_time = self._out_of_time()  # a resumed run whose budget was already spent
            while self.iteration < s.total_iterations and not out_of_time:
                lr = set_learning_rates(self.optimizer, self.epoch, self.optimizer_settings, self.progress,
                                        self.iteration)
                try:
                    parts = self.step(batch_iterator)
                except Exception:
                    if self._stop_signal is None:  # e.g. Ctrl-C also reached the data workers: not an error
                        raise
                    self._stop(agreed=False)
                self.iteration += 1
                self._agree_on_signals_and_time(seconds_before + time.perf_counter() - loop_start)
                out_of_time = self._out_of_time()
                if parts is None:
                    self._non_finite_loss()
                else:
                    window_parts = parts if window_parts is None else window_parts + parts
                    window_count += 1
                bar.update(min(int(self.train_seconds), bar.total) - bar.n if timed else 1)
                if window_count and (self.iteration % s.log_after == 0 or self.iteration == s.total_iterations
                                     or out_of_time):
                    mean_parts = (self._mean_over_processes(window_parts) / window_count).cpu()
                    last_loss = float(mean_parts.sum())
                    elapsed = time.perf_counter() - window_start
                    samples = window_count * s.batches_per_iter * s.batch_size * self.processes.world_size
                    if main:
                        row = {"iteration": self.iteration, "epoch": self.epoch, "loss": last_loss}
                        for stage in range(len(mean_parts) // 2):
                            row[f"stage{stage}_heatmaps"] = float(mean_parts[2 * stage])
                            row[f"stage{stage}_pafs"] = float(mean_parts[2 * stage + 1])
                        row.update({"lr": lr, "samples_per_second": samples / elapsed if elapsed > 0 else 0.0,
                                    "seconds": elapsed})
                        self._log(row, self.log_path)
                        bar.set_postfix(loss=f"{last_loss:.2f}", samples_s=f"{row['samples_per_second']:.1f}",
                                        epoch=self.epoch, **({"it": self.iteration} if timed else {}))
                    window_parts, window_count, window_start = None, 0, time.perf_counter()
                    if not math.isfinite(last_loss):
                        raise FloatingPointError(f"loss is {last_loss} at iteration {self.iteration}")
                if self._stop_signal is not None:
                    self._stop()
                if self.iteration % s.checkpoint_after == 0 or out_of_time:
                    self._save_training_checkpoint()
                    saved_at = self.iteration
                if self.iteration % s.val_after == 0:
                    self.validate()
            if saved_at != self.iteration:
                self._save_training_checkpoint()
            if self.validator is not None and self.iteration % s.val_after != 0:
                self.validate()
        finally:
            bar.close()
            if main and self.writer is not None:
                self.writer.close()
        return {"iteration": self.iteration, "loss": last_loss, "best_value": self.best_value,
                "best_metric": self.best_metric.text if self.best_metric else None,
                "skipped_steps": self.skipped_steps, "train_seconds": self.train_seconds,
                "failed_saves": self.failed_saves, "computed_dtype": self.computed_dtype}


def _truncate_csv(path: str, iteration: int) -> None:
    """Keep the header and the rows up to `iteration`; a run starting at 0 starts an empty log."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= iteration] if iteration > 0 else []
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)

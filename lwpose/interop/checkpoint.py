"""Self-describing checkpoints: weights + keypoint set + architecture (+ training state), plain data only.

Everything in a checkpoint is a tensor, number, string, list or dict, so it loads with
`torch.load(..., weights_only=True)`: a file from a stranger cannot run code on load. Writes are atomic.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any, Mapping

import torch

from lwpose.errors import LwposeError
from lwpose.keypoints import KeypointSet, load_keypoint_set
from lwpose.modules.pose_network import Architecture, PoseNetwork, build_network

FORMAT = "lwpose-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(LwposeError, ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def make_checkpoint(state_dict: Mapping[str, torch.Tensor], keypoint_set: KeypointSet,
                    architecture: Architecture, training: dict | None = None, meta: dict | None = None) -> dict:
    if architecture.num_heatmaps != keypoint_set.num_heatmaps or architecture.num_pafs != keypoint_set.num_pafs:
        raise CheckpointError(
            f"architecture heads ({architecture.num_heatmaps} heatmaps, {architecture.num_pafs} PAFs) do not fit "
            f"keypoint set '{keypoint_set.name}' ({keypoint_set.num_heatmaps} heatmaps, {keypoint_set.num_pafs} PAFs)")
    checkpoint = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture.to_dict(),
        "keypoint_set": keypoint_set.to_dict(),
        # Standard-layout weights whatever memory order they were trained in (train.py --channels-last).
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "meta": dict(meta or {}),
    }
    if training is not None:
        checkpoint["training"] = training
    return checkpoint


def atomic_torch_save(obj: Any, path: str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename: a reader (or a crash) never sees
    a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_checkpoint(checkpoint: dict, path: str) -> None:
    atomic_torch_save(checkpoint, path)


def safe_torch_load(path: str, map_location="cpu") -> Any:
    """torch.load restricted to plain data; refuses (with how to proceed) anything that would run code."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path} was refused: loading it would need arbitrary unpickling, which can run code "
            f"({str(e).splitlines()[0][:200]}). If you trust where it came from, convert it once with "
            f"`python scripts/import_weights.py --reference-checkpoint {path} --trust-pickle --output converted.pth`"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a PyTorch file?): {e}") from None


def load_checkpoint(path: str, map_location="cpu") -> dict:
    checkpoint = safe_torch_load(path, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        hint = ""
        if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
            hint = (" It looks like a reference (Lightweight OpenPose) checkpoint: wrap it with "
                    f"`python scripts/import_weights.py --reference-checkpoint {path} --output converted.pth`.")
        raise CheckpointError(f"checkpoint {path} is not an lwpose checkpoint.{hint}")
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {checkpoint['format_version']}, newer than "
                              f"this code reads ({FORMAT_VERSION}); update lwpose")
    for key in ("architecture", "keypoint_set", "state_dict"):
        if key not in checkpoint:
            raise CheckpointError(f"checkpoint {path} lacks '{key}'")
    return checkpoint


def network_from_checkpoint(checkpoint: dict, path: str = "<checkpoint>") -> tuple[PoseNetwork, KeypointSet]:
    try:
        keypoint_set = load_keypoint_set(checkpoint["keypoint_set"])
        architecture = Architecture.from_dict(checkpoint["architecture"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    network = build_network(architecture)
    missing, unexpected = network.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: weights do not fit its architecture "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return network, keypoint_set


def load_model(path: str, device: str | torch.device = "cpu") -> tuple[PoseNetwork, KeypointSet, dict]:
    """The network (in eval mode, on `device`), its keypoint set, and the checkpoint dict."""
    checkpoint = load_checkpoint(path)
    network, keypoint_set = network_from_checkpoint(checkpoint, path)
    return network.to(device).eval(), keypoint_set, checkpoint

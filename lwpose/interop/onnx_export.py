"""Export a checkpoint's network to ONNX (dynamic batch, height and width), and find or make the cached export
the ONNX Runtime and OpenVINO backends run.

The exported graph takes the same input as the PyTorch network (BGR, `(pixel - 128) / 256`, NCHW float32) and
returns only the last stage's `heatmaps` and `pafs`. The keypoint set and architecture travel in the model's
metadata, so an ONNX file alone is enough to decode what it predicts.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from typing import TYPE_CHECKING

from lwpose.constants import STRIDE
from lwpose.errors import LwposeError
from lwpose.keypoints import KeypointSet, load_keypoint_set

if TYPE_CHECKING:  # exporting needs torch; finding a cached export or its keypoint set does not
    from lwpose.modules.pose_network import PoseNetwork

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES = ("heatmaps", "pafs")
# Bumped whenever the exported graph changes, so stale cached exports are not reused.
EXPORT_VERSION = 1
CACHE_ENV = "LWPOSE_CACHE"
KEYPOINT_SET_METADATA = "lwpose_keypoint_set"  # the export's metadata entry holding its keypoint set (JSON)


class ExportError(LwposeError, RuntimeError):
    """An export or an ONNX file that cannot be used; the message names the file."""


def export_onnx(network: PoseNetwork, keypoint_set: KeypointSet, path: str, example_size: tuple[int, int] = (256, 456),
                opset: int = OPSET) -> None:
    """Write `network` as ONNX to `path` (atomically); height and width stay free (multiples of the stride)."""
    import torch

    class LastStage(torch.nn.Module):
        def __init__(self, network: PoseNetwork):
            super().__init__()
            self.network = network

        def forward(self, x):
            outputs = self.network(x)
            return outputs[-2], outputs[-1]

    if example_size[0] % STRIDE or example_size[1] % STRIDE:
        raise ValueError(f"example size {example_size} must be a multiple of the stride {STRIDE}")
    network = network.float().eval().cpu()
    example = torch.zeros(1, 3, *example_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs `onnxscript`; this
            # plain convolutional graph exports identically through either, and this one needs nothing extra.
            warnings.simplefilter("ignore")
            torch.onnx.export(LastStage(network), (example,), tmp_path, input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAMES[0]: dynamic,
                                            OUTPUT_NAMES[1]: dynamic})
        _add_metadata(tmp_path, {KEYPOINT_SET_METADATA: json.dumps(keypoint_set.to_dict()),
                                 "lwpose_architecture": json.dumps(network.architecture.to_dict()),
                                 "lwpose_export_version": str(EXPORT_VERSION)})
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)


def _add_metadata(path: str, entries: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:  # the metadata is a convenience; the graph is complete without it
        return
    model = onnx.load(path)
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, path)


def onnx_keypoint_set(path: str) -> KeypointSet:
    """The keypoint set stored in an ONNX file written by `export_onnx`."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"reading the keypoint set of {path} needs the 'onnx' package: pip install onnx "
                          "(or give the checkpoint it was exported from)", settings=("checkpoint_path",)) from None
    if not os.path.exists(path):
        raise ExportError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, ... depending on the damage
        raise ExportError(f"ONNX model {path} cannot be read: {e}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if KEYPOINT_SET_METADATA not in meta:
        raise ExportError(f"ONNX model {path} carries no keypoint set (not written by scripts/export_onnx.py); "
                          "give the checkpoint it was exported from too", settings=("checkpoint_path",))
    return load_keypoint_set(json.loads(meta[KEYPOINT_SET_METADATA]))


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "lwpose")


def cached_onnx_path(checkpoint_path: str, directory: str | None = None) -> str:
    """Where the export of this checkpoint's exact content lives in the cache (a changed file gets a new one)."""
    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"export {EXPORT_VERSION} opset {OPSET}".encode())
    stem = os.path.splitext(os.path.basename(checkpoint_path))[0]
    return os.path.join(directory or os.path.join(cache_dir(), "onnx"), f"{stem}-{digest.hexdigest()[:16]}.onnx")


def onnx_for_checkpoint(checkpoint_path: str, directory: str | None = None) -> str:
    """The cached ONNX export of a checkpoint, exported now if it is not there yet."""
    path = cached_onnx_path(checkpoint_path, directory)
    if not os.path.exists(path):
        from lwpose.interop.checkpoint import load_model

        network, keypoint_set, _ = load_model(checkpoint_path)
        export_onnx(network, keypoint_set, path)
    return path

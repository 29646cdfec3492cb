"""lwpose: fast bottom-up multi-person pose estimation (Part Affinity Fields on a MobileNet) for any keypoint set.

    import lwpose
    estimator = lwpose.PoseEstimator.from_checkpoint("weights/hpe0001.pth")  # fastest engine, map decoding
    people = estimator(image)                      # a BGR uint8 array
    people.to_dicts()                              # [{"score": s, "keypoints": {"nose": [x, y, score], ...}}, ...]
    for frame in lwpose.track("video.mp4", estimator, smooth=True): ...    # track ids, One-Euro smoothing
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys


def _map_checkout_folders() -> None:
    """The network (`modules/`) and the training data code (`datasets/`) are the repository's top-level folders;
    an install puts them inside this package (pyproject.toml's package-dir), and in a checkout they are attached
    here under the same names, so that `lwpose.modules` and `lwpose.datasets` mean the same code either way and
    nothing claims the top-level names `modules` and `datasets` (HuggingFace's `datasets` stays importable)."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(package_dir)
    for name in ("modules", "datasets"):
        qualified = f"{__name__}.{name}"
        folder = os.path.join(checkout, name)
        if qualified in sys.modules or os.path.isdir(os.path.join(package_dir, name)):
            continue  # an install: the folder is inside the package
        if not os.path.isdir(folder):
            continue  # an editable install elsewhere maps it (its finder answers for the name)
        # The folder beside this package, even where an editable install of another checkout would answer.
        spec = importlib.machinery.ModuleSpec(qualified, None, is_package=True)
        spec.submodule_search_locations = [folder]
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        globals()[name] = module


_map_checkout_folders()


from lwpose.errors import LwposeError  # noqa: E402  (after the mapping: nothing here imports those folders)

# The oldest torch with everything used here: torch.onnx.export(dynamo=False) (2.5), fused Adam on the CPU (2.4),
# torch.amp.GradScaler for any device (2.3). pyproject.toml states the same.
MINIMUM_TORCH = (2, 5)


class TorchTooOld(LwposeError, ImportError):
    """The installed torch is older than lwpose needs."""


def _torch_version() -> str | None:
    """The installed torch's version, without importing torch (the ONNX Runtime and OpenVINO paths never need it);
    None when torch is not installed."""
    if "torch" in sys.modules and hasattr(sys.modules["torch"], "__version__"):
        return str(sys.modules["torch"].__version__)
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _check_torch_version() -> None:
    version = _torch_version()
    match = re.match(r"(\d+)\.(\d+)", version or "")
    if match and (int(match.group(1)), int(match.group(2))) < MINIMUM_TORCH:
        needed = ".".join(map(str, MINIMUM_TORCH))
        raise TorchTooOld(f"lwpose needs torch {needed} or later, this environment has torch {version}: "
                          f"pip install --upgrade 'torch>={needed}' (or the matching build from pytorch.org)")


_check_torch_version()
from lwpose.keypoints import KeypointSet, load_keypoint_set  # noqa: E402

# The rest loads on first use: `import lwpose` stays quick, and nothing pulls in numba, OpenCV or torch before a
# caller needs them.
_LAZY = {"PoseEstimator": "lwpose.inference.estimator", "People": "lwpose.inference.grouping",
         "GroupingParams": "lwpose.inference.grouping", "track": "lwpose.inference.video",
         "PoseDrawer": "lwpose.inference.drawing"}

__all__ = ["LwposeError", "KeypointSet", "load_keypoint_set", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lwpose' has no attribute '{name}'")

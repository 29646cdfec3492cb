"""The network in PyTorch as an inference engine (CPU or GPU). Kept apart from the other engines so that running an
ONNX export or an OpenVINO IR never imports torch."""
from __future__ import annotations

import numpy as np
import torch

from lwpose.inference.backends import Backend, BackendUnavailable
from lwpose.modules.pose_network import PoseNetwork


class TorchBackend(Backend):
    """The network in PyTorch, on CPU or GPU; optional fp16 (GPU), channels_last memory layout and torch.compile
    (on a GPU its `reduce-overhead` mode replays CUDA graphs, which removes per-layer launch costs)."""

    name = "torch"

    def __init__(self, network: PoseNetwork, device: str | torch.device = "cpu", half: bool = False,
                 channels_last: bool = False, compile: bool = False):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"device '{device}' was asked for, but this torch ({torch.__version__}) "
                                     "sees no CUDA GPU")
        if half and self.device.type != "cuda":
            raise BackendUnavailable("half precision (fp16) runs on a CUDA GPU, not on the CPU")
        self.half = half
        self.channels_last = channels_last
        network = network.to(self.device).eval()
        if self.half:
            network = network.half()
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.compiled = compile
        self._forward = network
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._forward = torch.compile(network, mode=mode, dynamic=False)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = self._forward(x)
        heatmaps, pafs = outputs[-2], outputs[-1]
        return heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()

    def describe(self) -> str:
        extras = [e for e, on in (("fp16", self.half), ("channels_last", self.channels_last),
                                  ("compiled", self.compiled)) if on]
        return f"torch {self.device}" + (f" ({', '.join(extras)})" if extras else "")

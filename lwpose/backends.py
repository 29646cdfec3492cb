"""Inference backends: a callable from a normalised NCHW float32 batch to (heatmaps, PAFs) numpy arrays."""
from __future__ import annotations

import numpy as np
import torch

from modules.pose_network import PoseNetwork


class TorchBackend:
    """The network in PyTorch, on CPU or GPU; optional fp16 (GPU) and channels_last memory layout."""

    name = "torch"

    def __init__(self, network: PoseNetwork, device: str | torch.device = "cpu", half: bool = False,
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.half = half and self.device.type == "cuda"
        self.channels_last = channels_last
        network = network.to(self.device).eval()
        if self.half:
            network = network.half()
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = self.network(x)
        heatmaps, pafs = outputs[-2], outputs[-1]
        return heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()

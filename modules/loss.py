"""Masked L2 loss over every stage, normalised as the reference: sum((pred - target)^2 * mask) / 2 / batch."""
from __future__ import annotations

from typing import Sequence

import torch


def masked_l2(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`mask` broadcasts to the prediction; a weight of 0 gives exactly zero gradient to that element."""
    return ((prediction.float() - target) ** 2 * mask).sum() / 2 / prediction.shape[0]


def pose_loss(outputs: Sequence[torch.Tensor], heatmaps: torch.Tensor, pafs: torch.Tensor,
              heatmap_mask: torch.Tensor, paf_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Total loss and the per-stage losses [heatmaps_0, pafs_0, heatmaps_1, ...] for the network's outputs
    [heatmaps_0, pafs_0, heatmaps_1, pafs_1, ...]."""
    parts = []
    for stage in range(0, len(outputs), 2):
        parts.append(masked_l2(outputs[stage], heatmaps, heatmap_mask))
        parts.append(masked_l2(outputs[stage + 1], pafs, paf_mask))
    return torch.stack(parts).sum(), parts


def loss_masks(mask: torch.Tensor, heatmap_channel_mask: torch.Tensor, paf_channel_mask: torch.Tensor,
               background_mask: torch.Tensor | None = None, heatmap_weights: torch.Tensor | None = None,
               paf_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element weights (N, C, h, w) from the spatial weight map (N, h, w) and per-channel weights (N, C).
    `background_mask` (N, h, w): where the background channel (the last) keeps its weight even though its channel
    weight is 0 (a source with unlabelled keypoints: away from its people). `heatmap_weights` and `paf_weights`
    (N, C, h, w): weights per channel and cell that multiply the rest (a source with pseudo-labels)."""
    spatial = mask[:, None]
    heatmap_mask = spatial * heatmap_channel_mask[:, :, None, None]
    if background_mask is not None:
        background = torch.maximum(heatmap_channel_mask[:, -1, None, None], background_mask)
        heatmap_mask = torch.cat([heatmap_mask[:, :-1], mask[:, None] * background[:, None]], dim=1)
    paf_mask = spatial * paf_channel_mask[:, :, None, None]
    if heatmap_weights is not None:
        heatmap_mask = heatmap_mask * heatmap_weights
    if paf_weights is not None:
        paf_mask = paf_mask * paf_weights
    return heatmap_mask, paf_mask

"""A least-squares start for the PAF channels of a grown network's composed limbs.

A composed limb starts at the sum of the old limbs' weights along a path between its ends (lwpose/training/growing.py),
which is right only where the path is straight: shoulder-to-hip through the neck gives a field along the two old
limbs, not along the new one. Each PAF channel is the output of a head's last layer, a 1x1 convolution: a linear
function of the head's hidden activations, which the old weights already compute well. The weights that best predict
the training targets from those activations are one weighted ridge regression away, so `fit_channels` solves it on
a few hundred training samples before the first step, and training goes on from there. (On the upper-body journey of
docs/own-keypoints.md the fit takes the grown network from AP 0.289 to 0.345 before any step.)

A new keypoint or limb, which starts at zero, is left to training: its targets are peaks or fields the old network
was never asked for, and the samples that label it may be few.

The regression uses the loss's own weights (masks, channel masks, pseudo-label weights: modules/loss.py), so it
minimises the training loss of those channels; the ridge term pulls towards the weights they had, so a channel the
samples say little about keeps its start.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from lwpose.modules.loss import loss_masks
from lwpose.modules.pose_network import PoseNetwork

# Ridge strength, relative to the mean diagonal of each channel's weighted Gram matrix.
DEFAULT_RIDGE = 1e-3


@dataclass
class _ChannelSystem:
    gram: torch.Tensor  # (D + 1, D + 1): sum of w x x^T over cells, x = (activations, 1)
    moment: torch.Tensor  # (D + 1,): sum of w y x
    target_energy: float = 0.0  # sum of w y^2


@dataclass
class FitReport:
    samples: int
    channels: int
    loss_before: float  # the fitted channels' share of the training loss on the samples, per sample
    loss_after: float
    layers: list = field(default_factory=list)


def _output_layers(network: PoseNetwork) -> dict[str, str]:
    """Head output layer name -> which targets it predicts ('heatmaps' or 'pafs')."""
    layers = network.channel_layers()
    return {**{name: "heatmaps" for name in layers["heatmap_outputs"]},
            **{name: "pafs" for name in layers["paf_outputs"]}}


def _to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    from lwpose.training.trainer import images_to_network_input  # the trainer's own normalisation

    return images_to_network_input(images, device)


@torch.no_grad()
def fit_channels(network: PoseNetwork, batches: Iterable[dict], rows_by_layer: dict[str, list[int]],
                 device: torch.device | str = "cpu", ridge: float = DEFAULT_RIDGE) -> FitReport | None:
    """Set the output rows of heads' last layers listed in `rows_by_layer` (layer name -> rows, as
    GrownNetwork.composed_channels gives them) to the weighted ridge regression of the batches' targets on that
    layer's input. Returns what it did, or None when there is nothing to fit."""
    device = torch.device(device)
    modules = dict(network.named_modules())
    kinds = _output_layers(network)
    unknown = set(rows_by_layer) - set(kinds)
    if unknown:
        raise ValueError(f"not head output layers of this network: {', '.join(sorted(unknown))}")
    rows = {layer: list(r) for layer, r in rows_by_layer.items() if len(r)}
    if not rows:
        return None
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[layer].register_forward_hook(
        lambda module, inputs, output, layer=layer: captured.__setitem__(layer, inputs[0]))
        for layer in rows]
    systems: dict[tuple[str, int], _ChannelSystem] = {}
    was_training = network.training
    network.eval()
    samples = 0
    try:
        for batch in batches:
            network(_to_input(batch["image"], device))
            masks = dict(zip(("heatmaps", "pafs"), loss_masks(
                batch["mask"].to(device), batch["heatmap_channel_mask"].to(device),
                batch["paf_channel_mask"].to(device),
                batch["background_mask"].to(device) if "background_mask" in batch else None,
                batch["heatmap_weights"].to(device) if "heatmap_weights" in batch else None,
                batch["paf_weights"].to(device) if "paf_weights" in batch else None)))
            samples += batch["image"].shape[0]
            for layer, layer_rows in rows.items():
                kind = kinds[layer]
                activations = captured[layer].double()
                cells = activations.permute(0, 2, 3, 1).reshape(-1, activations.shape[1])
                cells = torch.cat([cells, torch.ones_like(cells[:, :1])], dim=1)
                targets, weights = batch[kind].to(device).double(), masks[kind].double()
                gram_of_weights: list[tuple[torch.Tensor, torch.Tensor]] = []
                for row in layer_rows:
                    w = weights[:, row].reshape(-1)
                    y = targets[:, row].reshape(-1)
                    # channels with the same weights (usually all of a layer's) share one Gram matrix
                    gram = next((g for known, g in gram_of_weights if torch.equal(known, w)), None)
                    if gram is None:
                        gram = cells.T @ (cells * w[:, None])
                        gram_of_weights.append((w, gram))
                    system = systems.get((layer, row))
                    if system is None:
                        system = systems[(layer, row)] = _ChannelSystem(torch.zeros_like(gram),
                                                                        torch.zeros_like(gram[0]))
                    system.gram += gram
                    system.moment += cells.T @ (w * y)
                    system.target_energy += float((w * y * y).sum())
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    if samples == 0:
        return None
    before = after = 0.0
    for (layer, row), system in systems.items():
        conv = modules[layer]
        current = torch.cat([conv.weight[row].reshape(-1), conv.bias[row].reshape(1)]).double()
        size = system.gram.shape[0]
        strength = ridge * max(float(system.gram.diagonal().mean()), 1e-12)
        solution = torch.linalg.solve(system.gram + strength * torch.eye(size, dtype=torch.float64, device=device),
                                      system.moment + strength * current)

        def loss(w):  # sum of weight * (prediction - target)^2 / 2, as the training loss counts it
            return float(w @ system.gram @ w - 2 * w @ system.moment + system.target_energy) / 2

        before += loss(current)
        after += loss(solution)
        conv.weight[row] = solution[:-1].reshape(conv.weight[row].shape).to(conv.weight.dtype)
        conv.bias[row] = solution[-1].to(conv.bias.dtype)
    return FitReport(samples, len(systems), before / samples, after / samples, sorted(rows))


def fit_batches(dataset, count: int, seed: int, progress: bool = True, batch_size: int = 8):
    """Up to `count` training samples of `dataset` (a seeded choice, augmented as training augments them), in
    batches as the training loader gives them."""
    import numpy as np
    from torch.utils.data import default_collate
    from tqdm import tqdm

    chosen = np.random.default_rng(seed).permutation(len(dataset))[:count]
    starts = range(0, len(chosen), batch_size)
    for start in tqdm(starts, desc="fitting new channels", unit="batch", disable=not progress, leave=False):
        yield default_collate([dataset[(int(i), 0)] for i in chosen[start:start + batch_size]])

"""Growing a trained network into another keypoint set (a union of its own and more): every channel that follows the
keypoint set keeps its weights by keypoint and limb name, new channels start at zero.

The channels that follow the keypoint set (PoseNetwork.channel_layers): the output channels of each stage's heatmap
and PAF heads, and the input channels of each refinement stage's first convolution, which reads the concatenation of
features, heatmaps and PAFs in the variant's order. A heatmap channel goes where its keypoint's name is (the
background stays last), a limb's two PAF channels where the limb is (a limb stored the other way round has its
weights negated, which negates its field exactly). New output channels have zero weights and biases, so they predict
0 (no keypoint, no field) until trained; new input columns are zero, so the old channels' outputs stay exactly what
they were. Keypoints and limbs the new set lacks are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lwpose.keypoints import KeypointSet
from lwpose.modules.pose_network import Architecture, PoseNetwork, build_network


@dataclass
class ChannelMap:
    """For each channel of the new set's maps, the old channel it comes from (-1: new) and the sign it takes."""

    heatmaps: np.ndarray  # (K_new + 1,)
    pafs: np.ndarray  # (2 L_new,)
    paf_signs: np.ndarray  # (2 L_new,) +1, or -1 for a limb the old set stores the other way round

    def channels(self, part: str, old_architecture: Architecture) -> tuple[np.ndarray, np.ndarray]:
        if part == "heatmaps":
            return self.heatmaps, np.ones(len(self.heatmaps))
        if part == "pafs":
            return self.pafs, self.paf_signs
        identity = np.arange(old_architecture.num_channels)
        return identity, np.ones(len(identity))


def channel_map(old: KeypointSet, new: KeypointSet) -> ChannelMap:
    heatmaps = np.full(new.num_heatmaps, -1, np.int64)
    for j, name in enumerate(new.keypoints):
        found = old.find(name)
        for alias in new.aliases.get(name, ()):
            found = found if found is not None else old.find(alias)
        heatmaps[j] = -1 if found is None else found
    heatmaps[new.background_channel] = old.background_channel
    old_limbs = {(int(a), int(b)): i for i, (a, b) in enumerate(old.limb_keypoints)}
    pafs = np.full(new.num_pafs, -1, np.int64)
    signs = np.ones(new.num_pafs)
    for limb, (a, b) in enumerate(new.limb_keypoints):
        ends = (int(heatmaps[a]), int(heatmaps[b]))
        for pair, sign in ((ends, 1.0), (ends[::-1], -1.0)):
            if pair in old_limbs:
                pafs[new.limb_paf_channels[limb]] = old.limb_paf_channels[old_limbs[pair]]
                signs[new.limb_paf_channels[limb]] = sign
                break
    return ChannelMap(heatmaps, pafs, signs)


@dataclass
class GrownNetwork:
    network: PoseNetwork
    architecture: Architecture
    new_channels: dict  # parameter name -> (dim, [indices]): the weights that start at zero
    description: str


def _select(tensor: torch.Tensor, dim: int, sources: np.ndarray, signs: np.ndarray, size: int) -> torch.Tensor:
    """`size` slices along `dim`: slice i is `tensor`'s slice sources[i] times signs[i], zero where sources[i] < 0."""
    shape = list(tensor.shape)
    shape[dim] = size
    out = torch.zeros(shape, dtype=tensor.dtype)
    for i, (source, sign) in enumerate(zip(sources, signs)):
        if source >= 0:
            out.select(dim, i).copy_(tensor.select(dim, int(source)) * sign)
    return out


def grow_network(state_dict: dict, old_architecture: Architecture, old_set: KeypointSet,
                 new_set: KeypointSet) -> GrownNetwork:
    """A network of `old_architecture`'s layout with heads for `new_set`, its weights from `state_dict` (module
    docstring for how each channel is placed)."""
    architecture = Architecture(new_set.num_heatmaps, new_set.num_pafs, old_architecture.variant,
                                old_architecture.num_refinement_stages, old_architecture.num_channels,
                                old_architecture.backbone_width)
    network = build_network(architecture)
    mapping = channel_map(old_set, new_set)
    layers = network.channel_layers()
    own = network.state_dict()
    grown, new_channels = {}, {}
    for key, value in own.items():
        layer, _, kind = key.rpartition(".")
        old = state_dict.get(key)
        if old is None:
            raise ValueError(f"the weights lack '{key}'; they are not of architecture {old_architecture}")
        if layer in layers["heatmap_outputs"] or layer in layers["paf_outputs"]:
            sources, signs = (mapping.heatmaps, np.ones(new_set.num_heatmaps)) \
                if layer in layers["heatmap_outputs"] else (mapping.pafs, mapping.paf_signs)
            grown[key] = _select(old, 0, sources, signs, value.shape[0])
            new_channels[key] = (0, np.flatnonzero(sources < 0).tolist())
        elif layer in layers["stage_inputs"] and kind == "weight":
            sources, signs = [], []
            offset = 0
            sizes = {"features": old_architecture.num_channels, "heatmaps": old_architecture.num_heatmaps,
                     "pafs": old_architecture.num_pafs}
            old_offsets = {}
            for part in network.stage_input_order:
                old_offsets[part] = offset
                offset += sizes[part]
            for part in network.stage_input_order:
                part_sources, part_signs = mapping.channels(part, old_architecture)
                sources.extend(np.where(part_sources >= 0, part_sources + old_offsets[part], -1))
                signs.extend(part_signs)
            sources = np.asarray(sources)
            grown[key] = _select(old, 1, sources, np.asarray(signs), value.shape[1])
            new_channels[key] = (1, np.flatnonzero(sources < 0).tolist())
        else:
            if old.shape != value.shape:
                raise ValueError(f"'{key}' has shape {tuple(old.shape)} in the weights, {tuple(value.shape)} in "
                                 "the network; only the heads may differ")
            grown[key] = old
    network.load_state_dict(grown)
    new_channels = {k: v for k, v in new_channels.items() if v[1]}
    added = [n for n, source in zip(new_set.keypoints, mapping.heatmaps) if source < 0]
    added_limbs = sum(1 for c in mapping.pafs[::2] if c < 0)
    kept = int(np.count_nonzero(mapping.heatmaps[:-1] >= 0))
    description = (f"heads grown from '{old_set.name}' to '{new_set.name}': {kept} keypoints kept by name, "
                   f"{len(added)} new ({', '.join(added) or 'none'}), {added_limbs} new limbs; new channels start "
                   "at zero")
    return GrownNetwork(network, architecture, new_channels, description)

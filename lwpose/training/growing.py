"""Growing (or shrinking) a trained network into another keypoint set: every channel that follows the keypoint set
keeps its weights by keypoint and limb name, a limb between two old keypoints is composed from the old limbs joining
them, anything else starts at zero.

The channels that follow the keypoint set (PoseNetwork.channel_layers): the output channels of each stage's heatmap
and PAF heads, and the input channels of each refinement stage's first convolution, which reads the concatenation of
features, heatmaps and PAFs in the variant's order.

- A heatmap channel goes where its keypoint's name (or one of the new set's aliases for it) is; the background stays
  last. A keypoint the old set lacks is new: zero weights and bias, it predicts 0 until trained.
- A limb's two PAF channels go where the limb is; a limb stored the other way round has its weights negated, which
  negates its field exactly.
- A limb the old set lacks between two keypoints it has is *composed*: its PAF weights are the signed sum of those
  of the old limbs on the shortest path between its ends (a PAF is a unit vector along the limb, so the fields of
  the path's limbs, each turned to run from the new limb's first end to its second, add up to the new limb's field
  where the path is straight: exactly for shoulder-neck-shoulder, roughly for a bent path). It starts near the
  answer instead of at zero.
- A limb with an end the old set lacks is new: zero, like a new keypoint.
- The refinement stages' input columns take the old columns through the pseudo-inverse of the old-to-new channel
  map, so a stage reads the new maps as closely as it read the old ones (exactly where the old maps can be told back
  from the new: every kept channel keeps its column; new channels' columns are zero, so the old channels' outputs
  stay what they were until the new weights are trained).
- Keypoints and limbs the new set lacks are dropped.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from lwpose.keypoints import KeypointSet
from lwpose.modules.pose_network import Architecture, PoseNetwork, build_network


@dataclass
class ChannelMap:
    """How each channel of the new set's maps is made from the old set's: heatmaps by index, PAFs as signed sums."""

    heatmaps: np.ndarray  # (K_new + 1,) the old channel each new heatmap copies, -1: new
    pafs: np.ndarray  # (2 L_new, 2 L_old) new PAF channel = pafs @ old PAF channels (a row of zeros: new)
    limb_origins: list = field(default_factory=list)  # per new limb: ("kept", old limb, sign), ("composed", path)
    #                                                   of (old limb, sign) or ("new",)

    def matrix(self, part: str, old_architecture: Architecture) -> np.ndarray:
        """(new channels, old channels) of one part of a refinement stage's input."""
        if part == "heatmaps":
            selection = np.zeros((len(self.heatmaps), old_architecture.num_heatmaps))
            for i, source in enumerate(self.heatmaps):
                if source >= 0:
                    selection[i, source] = 1.0
            return selection
        if part == "pafs":
            return self.pafs
        return np.eye(old_architecture.num_channels)

    @property
    def composed_pafs(self) -> np.ndarray:
        """PAF channels of composed limbs (a signed sum of two or more old channels)."""
        return np.flatnonzero(np.count_nonzero(self.pafs, axis=1) >= 2)

    @property
    def grown_pafs(self) -> np.ndarray:
        """New PAF channels that do not simply copy one old channel (composed or new): they train further."""
        return np.flatnonzero(np.count_nonzero(self.pafs, axis=1) != 1)


def _old_limb_path(old: KeypointSet, start: int, end: int) -> list[tuple[int, float]] | None:
    """The shortest chain of old limbs from keypoint `start` to `end`, each with +1 where the chain runs along the
    limb's direction and -1 against it (the first found among equally short ones, limbs in grouping order)."""
    neighbours: dict[int, list[tuple[int, int, float]]] = {}
    for limb, (a, b) in enumerate(old.limb_keypoints):
        neighbours.setdefault(int(a), []).append((int(b), limb, 1.0))
        neighbours.setdefault(int(b), []).append((int(a), limb, -1.0))
    previous: dict[int, tuple[int, int, float] | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == end:
            break
        for there, limb, sign in neighbours.get(here, []):
            if there not in previous:
                previous[there] = (here, limb, sign)
                queue.append(there)
    if end not in previous:
        return None
    path, here = [], end
    while previous[here] is not None:
        here, limb, sign = previous[here]
        path.append((limb, sign))
    return path[::-1]


def channel_map(old: KeypointSet, new: KeypointSet) -> ChannelMap:
    heatmaps = np.full(new.num_heatmaps, -1, np.int64)
    for j, name in enumerate(new.keypoints):
        found = old.find(name)
        for alias in new.aliases.get(name, ()):
            found = found if found is not None else old.find(alias)
        heatmaps[j] = -1 if found is None else found
    heatmaps[new.background_channel] = old.background_channel
    old_limbs = {(int(a), int(b)): i for i, (a, b) in enumerate(old.limb_keypoints)}
    pafs = np.zeros((new.num_pafs, old.num_pafs))
    origins = []
    for limb, (a, b) in enumerate(new.limb_keypoints):
        ends = (int(heatmaps[a]), int(heatmaps[b]))
        if ends in old_limbs or ends[::-1] in old_limbs:
            path = [(old_limbs[ends], 1.0)] if ends in old_limbs else [(old_limbs[ends[::-1]], -1.0)]
            origins.append(("kept", *path[0]))
        else:
            path = _old_limb_path(old, *ends) if min(ends) >= 0 else None
            origins.append(("composed", path) if path else ("new",))
        for old_limb, sign in path or ():
            for axis in range(2):
                pafs[new.limb_paf_channels[limb][axis], old.limb_paf_channels[old_limb][axis]] += sign
    return ChannelMap(heatmaps, pafs, origins)


@dataclass
class GrownNetwork:
    network: PoseNetwork
    architecture: Architecture
    new_channels: dict  # parameter name -> (dim, [indices]): channels grown new or composed, which train further
    description: str
    changes: dict = field(default_factory=dict)  # what describe_changes() lists, by kind
    composed_channels: dict = field(default_factory=dict)  # PAF output layer -> its rows of composed limbs


def _select(tensor: torch.Tensor, dim: int, sources: np.ndarray, size: int) -> torch.Tensor:
    """`size` slices along `dim`: slice i is `tensor`'s slice sources[i], zero where sources[i] < 0."""
    shape = list(tensor.shape)
    shape[dim] = size
    out = torch.zeros(shape, dtype=tensor.dtype)
    for i, source in enumerate(sources):
        if source >= 0:
            out.select(dim, i).copy_(tensor.select(dim, int(source)))
    return out


def _combine(tensor: torch.Tensor, dim: int, matrix: np.ndarray) -> torch.Tensor:
    """Slices along `dim` replaced by `matrix` @ slices: (new, old) x (..., old, ...) -> (..., new, ...)."""
    moved = tensor.movedim(dim, 0)
    combined = torch.tensordot(torch.as_tensor(matrix, dtype=tensor.dtype), moved, dims=([1], [0]))
    return combined.movedim(0, dim).contiguous()


def _pseudo_inverse(matrix: np.ndarray) -> np.ndarray:
    """pinv(matrix); exactly its transpose where it only picks channels (each row one +-1 in a column of its own),
    so copied columns stay bit-exact and new ones exactly zero."""
    nonzero = matrix != 0
    if (nonzero.sum(axis=1) <= 1).all() and (nonzero.sum(axis=0) <= 1).all() and (np.abs(matrix[nonzero]) == 1).all():
        return matrix.T.copy()
    return np.linalg.pinv(matrix)


def describe_changes(old_set: KeypointSet, new_set: KeypointSet, mapping: ChannelMap) -> dict:
    """Keypoints and limbs of `new_set` kept from `old_set`, new, composed, and those of `old_set` dropped."""
    def limb_name(keypoint_set, limb):
        return "-".join(keypoint_set.limbs[limb])

    kept_keypoints, new_keypoints = [], []
    for name, source in zip(new_set.keypoints, mapping.heatmaps):
        if source < 0:
            new_keypoints.append(name)
        else:
            old_name = old_set.keypoints[source]
            kept_keypoints.append(name if old_name == name else f"{name} (was {old_name})")
    used = set(mapping.heatmaps[:-1][mapping.heatmaps[:-1] >= 0].tolist())
    kept_limbs, composed, new_limbs, used_limbs = [], [], [], set()
    for limb, origin in enumerate(mapping.limb_origins):
        name = limb_name(new_set, limb)
        if origin[0] == "kept":
            kept_limbs.append(name)
            used_limbs.add(origin[1])
        elif origin[0] == "composed":
            composed.append(f"{name} (from {' + '.join(limb_name(old_set, i) for i, _ in origin[1])})")
        else:
            new_limbs.append(name)
    return {"kept keypoints": kept_keypoints, "new keypoints": new_keypoints,
            "dropped keypoints": [n for i, n in enumerate(old_set.keypoints) if i not in used],
            "kept limbs": kept_limbs, "composed limbs": composed, "new limbs": new_limbs,
            "dropped limbs": [limb_name(old_set, i) for i in range(old_set.num_limbs) if i not in used_limbs]}


def format_changes(changes: dict) -> str:
    """One line per kind of change, for the start-up summary."""
    lines = []
    for kind, names in changes.items():
        if names or kind.startswith("kept"):
            lines.append(f"  {kind} ({len(names)}): {', '.join(names) or 'none'}")
    return "\n".join(lines)


def keeps_every_input(changes: dict) -> bool:
    """Whether the new maps hold everything the old ones did (nothing dropped or composed), so that a refinement
    stage reading them reads exactly what it read before."""
    return not any(changes[kind] for kind in ("dropped keypoints", "dropped limbs", "composed limbs"))


def grow_network(state_dict: dict, old_architecture: Architecture, old_set: KeypointSet,
                 new_set: KeypointSet, hidden_heads: bool = True) -> GrownNetwork:
    """A network of `old_architecture`'s layout with heads for `new_set`, its weights from `state_dict` (module
    docstring for how each channel is placed).

    Where the new set drops or composes anything, and `hidden_heads` is on, the old heads stay in the network as
    hidden heads (modules/pose_network.py): every stage still predicts the old maps, the refinement stages read them
    with their old weights and read the new maps through zero weights, so the network's old outputs are exactly what
    they were, and the new ones start from them (selected and composed)."""
    mapping = channel_map(old_set, new_set)
    changes = describe_changes(old_set, new_set, mapping)
    keep_old_heads = hidden_heads and not keeps_every_input(changes)
    old_heatmaps, old_pafs = old_architecture.num_heatmaps, old_architecture.num_pafs
    if keep_old_heads:  # the new hidden heads: the old heads whole, own then hidden
        hidden = (old_architecture.head_heatmaps, old_architecture.head_pafs)
    else:
        hidden = (old_architecture.hidden_heatmaps, old_architecture.hidden_pafs)
    architecture = Architecture(new_set.num_heatmaps, new_set.num_pafs, old_architecture.variant,
                                old_architecture.num_refinement_stages, old_architecture.num_channels,
                                old_architecture.backbone_width, *hidden)
    network = build_network(architecture)
    layers = network.channel_layers()
    own = network.state_dict()
    grown, new_channels, composed_channels = {}, {}, {}
    new_heatmaps = np.flatnonzero(mapping.heatmaps < 0)

    def with_hidden(old: torch.Tensor, dim: int, own_part: torch.Tensor, old_own_size: int) -> torch.Tensor:
        """The new set's slices, then the hidden ones: all of the old slices, or the old hidden ones."""
        kept = old if keep_old_heads else old.narrow(dim, old_own_size, old.shape[dim] - old_own_size)
        return torch.cat([own_part, kept], dim=dim)

    for key, value in own.items():
        layer, _, kind = key.rpartition(".")
        old = state_dict.get(key)
        if old is None:
            raise ValueError(f"the weights lack '{key}'; they are not of architecture {old_architecture}")
        if layer in layers["heatmap_outputs"]:
            grown[key] = with_hidden(old, 0, _select(old.narrow(0, 0, old_heatmaps), 0, mapping.heatmaps,
                                                     new_set.num_heatmaps), old_heatmaps)
            new_channels[key] = (0, new_heatmaps.tolist())
        elif layer in layers["paf_outputs"]:
            grown[key] = with_hidden(old, 0, _combine(old.narrow(0, 0, old_pafs), 0, mapping.pafs), old_pafs)
            new_channels[key] = (0, mapping.grown_pafs.tolist())
            if len(mapping.composed_pafs):
                composed_channels[layer] = mapping.composed_pafs.tolist()
        elif layer in layers["stage_inputs"] and kind == "weight":
            parts = []
            offset = 0
            sizes = {"features": (old_architecture.num_channels, 0),
                     "heatmaps": (old_heatmaps, old_architecture.hidden_heatmaps),
                     "pafs": (old_pafs, old_architecture.hidden_pafs)}
            grown_columns, new_offset = [], 0
            for part in network.stage_input_order:
                own_size, hidden_size = sizes[part]
                columns = old.narrow(1, offset, own_size + hidden_size)
                if part == "features":
                    parts.append(columns)
                    new_columns = []
                elif keep_old_heads:
                    # The old maps are read as before, the new ones through zero weights that train at the base rate
                    # (stepping them as far as the new channels' own weights undid the old reading: measured).
                    new_size = new_set.num_heatmaps if part == "heatmaps" else new_set.num_pafs
                    parts.append(with_hidden(columns, 1, columns.new_zeros(columns.shape[0], new_size,
                                                                          *columns.shape[2:]), own_size))
                    new_columns = []
                else:
                    matrix = mapping.matrix(part, old_architecture)
                    # Columns read the new maps as the old columns read the old ones: W_new = W_old pinv(M).
                    parts.append(with_hidden(columns, 1, _combine(columns.narrow(1, 0, own_size), 1,
                                                                  _pseudo_inverse(matrix).T), own_size))
                    new_columns = new_heatmaps if part == "heatmaps" else mapping.grown_pafs
                grown_columns.extend(new_offset + np.asarray(new_columns, np.int64))
                offset += own_size + hidden_size
                new_offset += parts[-1].shape[1]
            grown[key] = torch.cat(parts, dim=1)
            new_channels[key] = (1, [int(c) for c in grown_columns])
        else:
            if old.shape != value.shape:
                raise ValueError(f"'{key}' has shape {tuple(old.shape)} in the weights, {tuple(value.shape)} in "
                                 "the network; only the heads may differ")
            grown[key] = old
    network.load_state_dict(grown)
    new_channels = {k: v for k, v in new_channels.items() if v[1]}
    counts = ", ".join(f"{len(names)} {kind.split()[0]}"
                       + (f" ({', '.join(names)})" if kind == "new keypoints" and names else "")
                       for kind, names in changes.items() if kind.endswith("keypoints"))
    limb_counts = ", ".join(f"{len(names)} {kind.split()[0]}" for kind, names in changes.items()
                            if kind.endswith("limbs"))
    description = (f"heads grown from '{old_set.name}' to '{new_set.name}': keypoints {counts}; limbs "
                   f"{limb_counts}")
    if keep_old_heads:
        description += (f"; the old heads stay as hidden heads ({architecture.hidden_heatmaps} heatmaps, "
                        f"{architecture.hidden_pafs} PAFs) that the refinement stages read")
    return GrownNetwork(network, architecture, new_channels, description, changes, composed_channels)

"""The Lightweight OpenPose network: MobileNet backbone, CPM, an initial stage and refinement stages.

Two variants share one structure:
- `lwop`: the reference PyTorch layout (BatchNorm in backbone and refinement blocks); a reference
  `checkpoint_iter_370000.pth` state dict loads into it with no key renaming.
- `omz`: the layout of Intel's `human-pose-estimation-0001` (BatchNorm folded into biases, ELU after the CPM
  alignment, an extra 1x1 `red` conv before the CPM trunk, refinement input ordered PAFs, heatmaps, features).

Both take a BGR image normalised as `(pixel - 128) / 256` and return a list with, per stage, heatmaps
(keypoints + background) and PAFs (2 channels per limb), at stride 8.

A network grown from another keypoint set's weights may keep that set's heads as *hidden heads*
(lwpose/training/growing.py): each stage's heads predict the hidden channels after its own, the refinement stages
read both, and only the own channels are returned. The refinement stage then reads the maps it was trained on,
whatever the new set dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

VARIANTS = ("lwop", "omz")
# What a refinement stage's input concatenates, in order: the reference's layout, and Open Model Zoo's.
STAGE_INPUT_ORDERS = {"lwop": ("features", "heatmaps", "pafs"), "omz": ("pafs", "heatmaps", "features")}


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a network, stored in every checkpoint."""

    num_heatmaps: int
    num_pafs: int
    variant: str = "lwop"
    num_refinement_stages: int = 1
    num_channels: int = 128
    backbone_width: float = 1.0
    # Heatmap and PAF channels predicted after the set's own and read only by the refinement stages (module docstring).
    hidden_heatmaps: int = 0
    hidden_pafs: int = 0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown architecture variant '{self.variant}' (known: {', '.join(VARIANTS)})")
        if self.num_refinement_stages < 0:
            raise ValueError("num_refinement_stages must be >= 0")
        if self.num_heatmaps < 2 or self.num_pafs < 2 or self.num_pafs % 2:
            raise ValueError(f"bad head sizes: {self.num_heatmaps} heatmaps, {self.num_pafs} PAFs")
        if self.hidden_heatmaps < 0 or self.hidden_pafs < 0 or self.hidden_pafs % 2:
            raise ValueError(f"bad hidden head sizes: {self.hidden_heatmaps} heatmaps, {self.hidden_pafs} PAFs")

    @property
    def head_heatmaps(self) -> int:
        """Heatmap channels each stage's head predicts: the set's, then the hidden ones."""
        return self.num_heatmaps + self.hidden_heatmaps

    @property
    def head_pafs(self) -> int:
        return self.num_pafs + self.hidden_pafs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _conv(in_channels, out_channels, kernel_size=3, stride=1, dilation=1, batch_norm=True, activation="relu",
          bias=True, groups=1) -> list[nn.Module]:
    padding = dilation * (kernel_size // 2)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                                         groups=groups, bias=bias)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    if activation == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif activation == "elu":
        layers.append(nn.ELU(inplace=True))
    return layers


def _depthwise_separable(in_channels, out_channels, stride=1, dilation=1, folded=False,
                         activation="relu") -> nn.Sequential:
    """3x3 depthwise then 1x1 pointwise; with BatchNorm (reference) or with biases instead (folded)."""
    return nn.Sequential(
        *_conv(in_channels, in_channels, 3, stride, dilation, batch_norm=not folded, activation=activation,
               bias=folded, groups=in_channels),
        *_conv(in_channels, out_channels, 1, batch_norm=not folded, activation=activation, bias=folded),
    )


def _width(channels: int, multiplier: float) -> int:
    return max(8, int(round(channels * multiplier / 8)) * 8)


class MobileNetBackbone(nn.Sequential):
    """MobileNet v1 up to conv5_5, with stride 8 (conv5_1 dilated instead of strided)."""

    # (out channels, stride, dilation) of each depthwise-separable block after the first conv.
    BLOCKS = ((64, 1, 1), (128, 2, 1), (128, 1, 1), (256, 2, 1), (256, 1, 1), (512, 1, 1),
              (512, 1, 2), (512, 1, 1), (512, 1, 1), (512, 1, 1), (512, 1, 1))

    def __init__(self, folded: bool, width: float = 1.0):
        first = _width(32, width)
        layers = [nn.Sequential(*_conv(3, first, 3, stride=2, batch_norm=not folded, bias=folded))]
        channels = first
        for out, stride, dilation in self.BLOCKS:
            out = _width(out, width)
            layers.append(_depthwise_separable(channels, out, stride, dilation, folded=folded))
            channels = out
        super().__init__(*layers)
        self.out_channels = channels


class Cpm(nn.Module):
    """Convolutional pose machine adapter: align the backbone's channels, refine with a residual trunk."""

    def __init__(self, in_channels: int, out_channels: int, variant: str):
        super().__init__()
        omz = variant == "omz"
        self.align = nn.Sequential(*_conv(in_channels, out_channels, 1, batch_norm=False,
                                          activation="elu" if omz else "relu"))
        self.red = nn.Sequential(*_conv(out_channels, out_channels, 1, batch_norm=False, activation="elu")) \
            if omz else None
        self.trunk = nn.Sequential(*[
            _depthwise_separable(out_channels, out_channels, folded=True, activation="elu") if omz else
            nn.Sequential(*_conv(out_channels, out_channels, 3, batch_norm=False, activation="elu", bias=False,
                                 groups=out_channels),
                          *_conv(out_channels, out_channels, 1, batch_norm=False, activation="elu", bias=False))
            for _ in range(3)])
        self.conv = nn.Sequential(*_conv(out_channels, out_channels, 3, batch_norm=False))

    def forward(self, x):
        aligned = self.align(x)
        branch = self.red(aligned) if self.red is not None else aligned
        return self.conv(aligned + self.trunk(branch))


def _head(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Sequential(*_conv(in_channels, hidden, 1, batch_norm=False)),
                         nn.Sequential(*_conv(hidden, out_channels, 1, batch_norm=False, activation=None)))


class InitialStage(nn.Module):
    def __init__(self, channels: int, num_heatmaps: int, num_pafs: int):
        super().__init__()
        self.trunk = nn.Sequential(*[nn.Sequential(*_conv(channels, channels, 3, batch_norm=False))
                                     for _ in range(3)])
        self.heatmaps = _head(channels, 512, num_heatmaps)
        self.pafs = _head(channels, 512, num_pafs)

    def forward(self, x):
        features = self.trunk(x)
        return self.heatmaps(features), self.pafs(features)


class RefinementBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, folded: bool):
        super().__init__()
        self.initial = nn.Sequential(*_conv(in_channels, out_channels, 1, batch_norm=False))
        self.trunk = nn.Sequential(
            nn.Sequential(*_conv(out_channels, out_channels, 3, batch_norm=not folded)),
            nn.Sequential(*_conv(out_channels, out_channels, 3, dilation=2, batch_norm=not folded)))

    def forward(self, x):
        initial = self.initial(x)
        return initial + self.trunk(initial)


class RefinementStage(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_heatmaps: int, num_pafs: int, folded: bool):
        super().__init__()
        self.trunk = nn.Sequential(RefinementBlock(in_channels, channels, folded),
                                   *[RefinementBlock(channels, channels, folded) for _ in range(4)])
        self.heatmaps = _head(channels, channels, num_heatmaps)
        self.pafs = _head(channels, channels, num_pafs)

    def forward(self, x):
        features = self.trunk(x)
        return self.heatmaps(features), self.pafs(features)


class PoseNetwork(nn.Module):
    """Returns [heatmaps_0, pafs_0, heatmaps_1, pafs_1, ...]: one pair per stage, the last is the refined one."""

    def __init__(self, architecture: Architecture):
        super().__init__()
        self.architecture = architecture
        a = architecture
        folded = a.variant == "omz"
        self.model = MobileNetBackbone(folded=folded, width=a.backbone_width)
        self.cpm = Cpm(self.model.out_channels, a.num_channels, a.variant)
        self.initial_stage = InitialStage(a.num_channels, a.head_heatmaps, a.head_pafs)
        stage_inputs = a.num_channels + a.head_heatmaps + a.head_pafs
        self.refinement_stages = nn.ModuleList([
            RefinementStage(stage_inputs, a.num_channels, a.head_heatmaps, a.head_pafs, folded)
            for _ in range(a.num_refinement_stages)])
        self.stage_input_order = STAGE_INPUT_ORDERS[a.variant]

    def forward(self, x):
        features = self.cpm(self.model(x))
        heatmaps, pafs = self.initial_stage(features)
        outputs = self._own(heatmaps, pafs)
        for stage in self.refinement_stages:
            parts = {"features": features, "heatmaps": heatmaps, "pafs": pafs}
            heatmaps, pafs = stage(torch.cat([parts[name] for name in self.stage_input_order], dim=1))
            outputs.extend(self._own(heatmaps, pafs))
        return outputs

    def _own(self, heatmaps, pafs) -> list:
        """A stage's maps without its hidden channels."""
        a = self.architecture
        if a.hidden_heatmaps or a.hidden_pafs:
            return [heatmaps[:, :a.num_heatmaps], pafs[:, :a.num_pafs]]
        return [heatmaps, pafs]

    def channel_layers(self) -> dict[str, list[str]]:
        """Names of the convolutions whose channels follow the keypoint set: the heads' last layers (output
        channels: heatmaps, PAFs, each the set's then the hidden ones) and the refinement stages' first layers (input
        channels: the concatenation of features, heatmaps and PAFs in `stage_input_order`)."""
        refinement = [f"refinement_stages.{i}" for i in range(len(self.refinement_stages))]
        stages = ["initial_stage", *refinement]
        return {"heatmap_outputs": [f"{name}.heatmaps.1.0" for name in stages],
                "paf_outputs": [f"{name}.pafs.1.0" for name in stages],
                "stage_inputs": [f"{name}.trunk.0.initial.0" for name in refinement]}

    @property
    def num_stages(self) -> int:
        return 1 + len(self.refinement_stages)


def build_network(architecture: Architecture | dict) -> PoseNetwork:
    if isinstance(architecture, dict):
        architecture = Architecture.from_dict(architecture)
    return PoseNetwork(architecture)

"""Turn weights from elsewhere into lwpose checkpoints: OpenVINO IR (`omz` variant) and reference checkpoints."""
from __future__ import annotations

import re

import numpy as np
import torch

from lwpose.interop.checkpoint import CheckpointError, make_checkpoint, safe_torch_load
from lwpose.interop.openvino_ir import IRError, OpenVinoIR
from lwpose.keypoints import KeypointSet, load_keypoint_set
from lwpose.modules.pose_network import Architecture, build_network

# Backbone layer names of the IR, in the order of our MobileNet blocks (after conv1).
_BACKBONE_BLOCKS = ("conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2",
                    "conv5_1", "conv5_2", "conv5_3", "conv5_4", "conv5_5")
_CPM_LAYERS = {"al": "cpm.align.0", "red": "cpm.red.0", "dw1": "cpm.trunk.0.0", "dw1/1x1": "cpm.trunk.0.2",
               "dw2": "cpm.trunk.1.0", "dw2/1x1": "cpm.trunk.1.2", "dw3": "cpm.trunk.2.0", "inc": "cpm.trunk.2.2"}


def omz_layer_to_key(name: str) -> str | None:
    """The `omz` state-dict prefix of an IR convolution layer, by the layer names of human-pose-estimation-0001."""
    if name == "conv1":
        return "model.0.0"
    match = re.fullmatch(r"(conv\d_\d)/(dw|sep)", name)
    if match and match.group(1) in _BACKBONE_BLOCKS:
        block = _BACKBONE_BLOCKS.index(match.group(1)) + 1
        return f"model.{block}.{0 if match.group(2) == 'dw' else 2}"
    match = re.fullmatch(r"conv4_3_CPM/(.+)", name)
    if match and match.group(1) in _CPM_LAYERS:
        return _CPM_LAYERS[match.group(1)]
    if name == "conv4_4_CPM":
        return "cpm.conv.0"
    match = re.fullmatch(r"conv5_([1-5])_CPM_L([12])", name)
    if match:
        index, branch = int(match.group(1)), match.group(2)
        if index <= 3:
            return None if branch == "2" else f"initial_stage.trunk.{index - 1}.0"
        head = "pafs" if branch == "1" else "heatmaps"
        return f"initial_stage.{head}.{index - 4}.0"
    match = re.fullmatch(r"Mconv(\d)_stage(\d+)_L([12])(?:/(sq|3x3|3x3/2))?", name)
    if match:
        index, stage, branch, part = int(match.group(1)), int(match.group(2)) - 2, match.group(3), match.group(4)
        prefix = f"refinement_stages.{stage}"
        if index <= 5 and part is not None:
            return f"{prefix}.trunk.{index - 1}." + {"sq": "initial.0", "3x3": "trunk.0.0", "3x3/2": "trunk.1.0"}[part]
        if index in (6, 7) and part is None:
            head = "pafs" if branch == "1" else "heatmaps"
            return f"{prefix}.{head}.{index - 6}.0"
    return None


def import_openvino_ir(xml_path: str, keypoint_set: str | KeypointSet = "lwop18") -> dict:
    """An `omz` checkpoint from an OpenVINO IR of the Lightweight OpenPose network (float weights)."""
    keypoint_set = load_keypoint_set(keypoint_set)
    ir = OpenVinoIR(xml_path)
    weights: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for conv in ir.convolutions():
        key = omz_layer_to_key(conv.name)
        if key is None:
            raise IRError(f"{xml_path}: convolution '{conv.name}' is not part of the known "
                          "human-pose-estimation layout (omz variant)")
        weights[key] = (conv.weight, conv.bias)
    stages = {int(k.split(".")[1]) for k in weights if k.startswith("refinement_stages.")}
    num_heatmaps = weights["initial_stage.heatmaps.1.0"][0].shape[0]
    num_pafs = weights["initial_stage.pafs.1.0"][0].shape[0]
    if num_heatmaps != keypoint_set.num_heatmaps or num_pafs != keypoint_set.num_pafs:
        raise IRError(f"{xml_path}: the network predicts {num_heatmaps} heatmaps and {num_pafs} PAFs, keypoint set "
                      f"'{keypoint_set.name}' needs {keypoint_set.num_heatmaps} and {keypoint_set.num_pafs}")
    architecture = Architecture(num_heatmaps=num_heatmaps, num_pafs=num_pafs, variant="omz",
                                num_refinement_stages=len(stages),
                                num_channels=weights["cpm.align.0"][0].shape[0])
    network = build_network(architecture)
    state = network.state_dict()

    # Our networks take (pixel - 128) / 256; the IR takes raw pixels and scales them itself. With
    # pixel = 256 u + 128, conv1(pixel * s + t) = conv1'(u) where W' = 256 s W and b' = b + W . (128 s + t).
    scale, shift = ir.input_affine()
    conv1_weight, conv1_bias = weights["model.0.0"]
    conv1_weight = conv1_weight.astype(np.float64)
    offset = 128.0 * scale + shift
    folded_bias = (conv1_bias.astype(np.float64) if conv1_bias is not None else 0.0) + \
        np.einsum("oikl,i->o", conv1_weight, offset)
    weights["model.0.0"] = ((conv1_weight * (256.0 * scale)[None, :, None, None]).astype(np.float32),
                            folded_bias.astype(np.float32))

    for key, (weight, bias) in weights.items():
        if key + ".weight" not in state:
            raise IRError(f"{xml_path}: layer for '{key}' has no place in the omz network")
        if tuple(state[key + ".weight"].shape) != weight.shape:
            raise IRError(f"{xml_path}: '{key}' has weights {weight.shape}, the network expects "
                          f"{tuple(state[key + '.weight'].shape)}")
        state[key + ".weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        if bias is not None:
            state[key + ".bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    missing = sorted({k.rsplit(".", 1)[0] for k in state} - set(weights))
    if missing:
        raise IRError(f"{xml_path}: no weights found for {missing[:5]}")
    return make_checkpoint(state, keypoint_set, architecture,
                           meta={"source": f"openvino-ir:{xml_path}", "note": "weights de-quantised to float32"})


def import_reference_checkpoint(path: str, keypoint_set: str | KeypointSet = "lwop18",
                                trust_pickle: bool = False, num_channels: int = 128) -> dict:
    """Wrap a reference (`checkpoint_iter_370000.pth`-layout) checkpoint as an `lwop` lwpose checkpoint."""
    keypoint_set = load_keypoint_set(keypoint_set)
    if trust_pickle:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    else:
        raw = safe_torch_load(path)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path}: no state dict of tensors found")
    # DataParallel-trained files prefix every key with 'module.'.
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    stages = {int(k.split(".")[1]) for k in state if k.startswith("refinement_stages.")}
    try:
        architecture = Architecture(num_heatmaps=state["initial_stage.heatmaps.1.0.weight"].shape[0],
                                    num_pafs=state["initial_stage.pafs.1.0.weight"].shape[0], variant="lwop",
                                    num_refinement_stages=len(stages),
                                    num_channels=state["cpm.align.0.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"checkpoint {path}: not a Lightweight OpenPose state dict (no {e})") from None
    if architecture.num_heatmaps != keypoint_set.num_heatmaps or architecture.num_pafs != keypoint_set.num_pafs:
        raise CheckpointError(
            f"checkpoint {path}: {architecture.num_heatmaps} heatmaps and {architecture.num_pafs} PAFs do not fit "
            f"keypoint set '{keypoint_set.name}' ({keypoint_set.num_heatmaps}, {keypoint_set.num_pafs}); "
            "give the set the model was trained with", settings=("keypoints",))
    network = build_network(architecture)
    result = network.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"checkpoint {path}: state dict does not match the reference layout "
                              f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    meta = {"source": f"reference-checkpoint:{path}"}
    if isinstance(raw, dict) and isinstance(raw.get("iter"), int):
        meta["reference_iteration"] = raw["iter"]
    return make_checkpoint(network.state_dict(), keypoint_set, architecture, meta=meta)

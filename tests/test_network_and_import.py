"""The network in both variants, the OpenVINO IR importer (checked against the OpenVINO runtime's own outputs),
and wrapping a reference checkpoint."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HPE_XML, REPO_ROOT, SHARED_DATA, require_shared
from lwpose.interop.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from lwpose.interop.importers import import_reference_checkpoint
from lwpose.keypoints import load_keypoint_set
from lwpose.modules.pose_network import Architecture, build_network

GOLDEN = os.path.join(SHARED_DATA, "golden", "hpe0001_fp16int8_openvino_196141.npz")
REFERENCE_KEYS = os.path.join(SHARED_DATA, "golden", "reference_checkpoint_keys.txt")


def read_reference_keys():
    keys = {}
    with open(REFERENCE_KEYS) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, shape = line.split(" ", 1)
                keys[name] = tuple(int(s) for s in shape.strip("()\n ").split(",") if s.strip())
    return keys


def test_lwop_state_dict_has_exactly_the_reference_keys_and_shapes():
    require_shared(REFERENCE_KEYS)
    lwop = load_keypoint_set("lwop18")
    network = build_network(Architecture(lwop.num_heatmaps, lwop.num_pafs, "lwop"))
    ours = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    assert ours == read_reference_keys()


@pytest.mark.parametrize("variant", ["lwop", "omz"])
@pytest.mark.parametrize("set_name, stages", [("coco", 1), ("animalpose", 2), ("mpii", 0)])
def test_heads_are_sized_from_the_keypoint_set(variant, set_name, stages):
    ks = load_keypoint_set(set_name)
    network = build_network(Architecture(ks.num_heatmaps, ks.num_pafs, variant, num_refinement_stages=stages,
                                         num_channels=64, backbone_width=0.5)).eval()
    with torch.no_grad():
        outputs = network(torch.zeros(2, 3, 64, 96))
    assert len(outputs) == 2 * (stages + 1)
    for heatmaps, pafs in zip(outputs[::2], outputs[1::2]):
        assert heatmaps.shape == (2, ks.num_heatmaps, 8, 12)
        assert pafs.shape == (2, ks.num_pafs, 8, 12)


def test_imported_ir_reproduces_the_openvino_runtime_outputs(hpe_checkpoint):
    require_shared(GOLDEN)
    golden = np.load(GOLDEN)
    network, keypoint_set, _ = load_model(hpe_checkpoint)
    x = torch.from_numpy((golden["input_bgr_uint8"].astype(np.float32) - 128) / 256)
    with torch.no_grad():
        outputs = network(x)
    heatmaps, pafs = outputs[-2].numpy(), outputs[-1].numpy()
    heat_corr = np.corrcoef(heatmaps.ravel(), golden["heatmaps"].ravel())[0, 1]
    paf_corr = np.corrcoef(pafs.ravel(), golden["pafs"].ravel())[0, 1]
    print(f"Pearson correlation with OpenVINO: heatmaps {heat_corr:.5f}, PAFs {paf_corr:.5f}")
    assert heat_corr >= 0.999
    assert paf_corr >= 0.99


def test_import_cli_writes_a_checkpoint_that_loads_with_weights_only(tmp_path):
    require_shared(HPE_XML)
    out = tmp_path / "hpe.pth"
    result = subprocess.run([sys.executable, "scripts/import_weights.py", "--openvino-xml", HPE_XML,
                             "--output", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    raw = torch.load(out, weights_only=True)
    assert raw["architecture"]["variant"] == "omz"
    assert raw["keypoint_set"]["name"] == "lwop18"
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_reference_checkpoint_is_wrapped_with_keys_unchanged(tmp_path):
    lwop = load_keypoint_set("lwop18")
    network = build_network(Architecture(lwop.num_heatmaps, lwop.num_pafs, "lwop"))
    torch.manual_seed(0)
    for p in network.parameters():
        torch.nn.init.normal_(p, std=0.01)
    # Saved the way the reference trainer saves (DataParallel prefix, optimiser state, iteration).
    reference_file = tmp_path / "checkpoint_iter_370000.pth"
    optimizer = torch.optim.Adam(network.parameters(), lr=4e-5)
    torch.save({"state_dict": {"module." + k: v for k, v in network.state_dict().items()},
                "optimizer": optimizer.state_dict(), "iter": 370000, "current_epoch": 280}, reference_file)
    converted = tmp_path / "converted.pth"
    save_checkpoint(import_reference_checkpoint(str(reference_file)), str(converted))
    loaded, keypoint_set, checkpoint = load_model(str(converted))
    assert checkpoint["architecture"]["variant"] == "lwop"
    assert checkpoint["meta"]["reference_iteration"] == 370000
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_loading_a_reference_file_directly_explains_how_to_convert_it(tmp_path):
    path = tmp_path / "ref.pth"
    torch.save({"state_dict": {"model.0.0.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="import_weights.py --reference-checkpoint"):
        load_checkpoint(str(path))

"""Inference backends: the ONNX export (free height and width) gives PyTorch's outputs through ONNX Runtime and
OpenVINO, exports are cached per checkpoint content, pipelined submissions come back matched to their inputs,
and a missing optional package or device fails with what to install."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import HPE_XML, MMPOSE_SAMPLES, REPO_ROOT, require_shared
from lwpose.images import read_image
from lwpose.inference.backends import BackendUnavailable, MissingKeypointSet, make_backend
from lwpose.inference.estimator import prepare_input
from lwpose.inference.torch_backend import TorchBackend
from lwpose.interop.checkpoint import load_model
from lwpose.interop.onnx_export import CACHE_ENV, cached_onnx_path, onnx_for_checkpoint
from lwpose.keypoints import load_keypoint_set

# fp32 engines order the same sums differently: measured max differences are about 2e-6 (README, "Demo and
# real-time"); a wrong export (a layer or an axis off) is off by 1e-1 or more.
OUTPUT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cache_folder(tmp_path_factory):
    """Exports go to a temporary cache, not the user's."""
    folder = str(tmp_path_factory.mktemp("lwpose-cache"))
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = folder
    yield folder
    if previous is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="module")
def real_input():
    """A real photo prepared as the demo prepares frames: 256 high, not the export's 256x456."""
    require_shared(MMPOSE_SAMPLES)
    image = read_image(os.path.join(MMPOSE_SAMPLES, "coco", "000000197388.jpg"))
    network_input, _ = prepare_input(image, 256)
    assert network_input.shape[1:] != (256, 456)
    return network_input[None]


@pytest.fixture(scope="module")
def torch_outputs(hpe_checkpoint, real_input):
    network, _, _ = load_model(hpe_checkpoint)
    return TorchBackend(network)(real_input)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_onnx_engines_reproduce_torch_outputs_at_a_size_other_than_the_export(name, hpe_checkpoint, cache_folder,
                                                                              real_input, torch_outputs):
    pytest.importorskip(name)
    backend = make_backend(name, hpe_checkpoint)
    heatmaps, pafs = backend(real_input)
    assert heatmaps.shape == torch_outputs[0].shape and pafs.shape == torch_outputs[1].shape
    diff = max(np.abs(heatmaps - torch_outputs[0]).max(), np.abs(pafs - torch_outputs[1]).max())
    print(f"{name}: max abs difference from torch {diff:.2e}")
    assert diff < OUTPUT_TOLERANCE
    assert backend.keypoint_set.name == "lwop18"
    backend.close()


def test_export_script_reports_the_difference_from_torch(hpe_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    output = tmp_path / "model.onnx"
    result = subprocess.run([sys.executable, "scripts/export_onnx.py", "--checkpoint-path", hpe_checkpoint,
                             "--output", str(output)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    line = [l for l in result.stdout.splitlines() if "max abs difference" in l]
    assert line, result.stdout
    assert float(line[0].rsplit(" ", 1)[1]) < OUTPUT_TOLERANCE
    # the ONNX file alone is enough: it carries its keypoint set
    for name in ("onnxruntime", "openvino"):
        backend = make_backend(name, str(output))
        assert backend.keypoint_set.num_keypoints == 18


def test_exports_are_cached_per_checkpoint_content(hpe_checkpoint, tmp_path):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(open(hpe_checkpoint, "rb").read())
    first = onnx_for_checkpoint(str(checkpoint), str(tmp_path / "cache"))
    stamp = os.path.getmtime(first)
    assert onnx_for_checkpoint(str(checkpoint), str(tmp_path / "cache")) == first
    assert os.path.getmtime(first) == stamp  # reused, not exported again
    with open(checkpoint, "ab") as f:
        f.write(b"\0")  # different content (torch ignores trailing bytes), so a different cache entry
    assert cached_onnx_path(str(checkpoint), str(tmp_path / "cache")) != first


def test_openvino_pipelined_requests_each_return_their_own_frame(hpe_checkpoint, cache_folder, real_input):
    pytest.importorskip("openvino")
    backend = make_backend("openvino", hpe_checkpoint, performance_hint="THROUGHPUT")
    frames = [real_input * scale for scale in (1.0, 0.5, -0.5, 0.25, 0.8)]
    futures = [backend.submit(frame) for frame in frames]
    for frame, future in zip(frames, futures):
        heatmaps, pafs, seconds = future.result(timeout=120)
        expected_heatmaps, expected_pafs = backend(frame)
        assert np.array_equal(heatmaps, expected_heatmaps) and np.array_equal(pafs, expected_pafs)
        assert seconds > 0
    backend.close()


def test_the_int8_ir_takes_the_normalised_input_and_agrees_with_torch(hpe_checkpoint, cache_folder, real_input,
                                                                       torch_outputs):
    """Open Model Zoo's IR scales raw pixels itself; fed our (pixel - 128) / 256 through the prepended conversion
    it must predict what the float import does, up to its int8 activations (a wrong conversion decorrelates)."""
    pytest.importorskip("openvino")
    require_shared(HPE_XML)
    backend = make_backend("auto", HPE_XML, keypoint_set=load_keypoint_set("lwop18"))
    assert backend.quantized and "int8" in backend.describe()
    heatmaps, pafs = backend(real_input)
    assert heatmaps.shape == torch_outputs[0].shape and pafs.shape == torch_outputs[1].shape
    heatmap_correlation = np.corrcoef(heatmaps.ravel(), torch_outputs[0].ravel())[0, 1]
    paf_correlation = np.corrcoef(pafs.ravel(), torch_outputs[1].ravel())[0, 1]
    largest = max(np.abs(heatmaps - torch_outputs[0]).max(), np.abs(pafs - torch_outputs[1]).max())
    print(f"INT8 IR vs torch: correlation {heatmap_correlation:.5f} (heatmaps), {paf_correlation:.5f} (PAFs), "
          f"max abs difference {largest:.3f}")
    assert heatmap_correlation > 0.999 and paf_correlation > 0.995
    heatmaps_again, _, _ = backend.submit(real_input).result(timeout=120)
    np.testing.assert_array_equal(heatmaps_again, heatmaps)  # the pipelined path reads the same outputs
    backend.close()


def test_an_ir_made_elsewhere_needs_its_keypoint_set_and_runs_only_on_openvino(hpe_checkpoint):
    pytest.importorskip("openvino")
    require_shared(HPE_XML)
    with pytest.raises(MissingKeypointSet, match="carries no keypoint set"):
        make_backend("openvino", HPE_XML)
    with pytest.raises(BackendUnavailable, match="runs with the openvino backend, not 'onnxruntime'"):
        make_backend("onnxruntime", HPE_XML)
    with pytest.raises(BackendUnavailable, match="missing.xml does not exist"):
        make_backend("openvino", "missing.xml")


@pytest.mark.parametrize("option", ["half", "channels_last", "compile"])
@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_torch_only_options_are_refused_by_the_other_engines(name, option, hpe_checkpoint):
    pytest.importorskip(name)
    with pytest.raises(BackendUnavailable, match=f"{option} appl"):
        make_backend(name, hpe_checkpoint, **{option: True})


def test_half_precision_on_the_cpu_is_refused(hpe_checkpoint):
    with pytest.raises(BackendUnavailable, match="CUDA GPU"):
        make_backend("torch", hpe_checkpoint, half=True)


def test_auto_on_a_gpu_takes_an_engine_that_runs_there(hpe_checkpoint, monkeypatch):
    from lwpose.inference import backends

    monkeypatch.setattr(backends, "installed_backends", lambda: ["openvino", "onnxruntime", "torch"])
    assert backends._fastest_for("checkpoint", "cuda") == "torch"
    assert backends._fastest_for("checkpoint", "cuda:1") == "torch"
    assert backends._fastest_for("onnx", "cuda") == "onnxruntime"
    assert backends._fastest_for("checkpoint", "cpu") == "openvino"


@pytest.mark.parametrize("name, package", [("openvino", "openvino"), ("onnxruntime", "onnxruntime")])
def test_a_missing_engine_names_the_package_to_install(name, package, hpe_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # what Python does when the package is not installed
    with pytest.raises(BackendUnavailable, match=f"pip install {package}"):
        make_backend(name, hpe_checkpoint)


def test_a_gpu_asked_for_where_there_is_none_is_refused_clearly(hpe_checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailable, match="sees no CUDA GPU"):
        make_backend("torch", hpe_checkpoint, device="cuda")


def test_unknown_backend_lists_the_known_ones(hpe_checkpoint):
    with pytest.raises(BackendUnavailable, match="onnxruntime"):
        make_backend("tensorrt", hpe_checkpoint)

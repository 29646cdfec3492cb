"""Post-training INT8 quantization of an lwpose checkpoint into an OpenVINO IR, with its accuracy measured.

The network quantized is the checkpoint's ONNX export (lwpose/interop/onnx_export.py), read by OpenVINO. NNCF
(OpenVINO's compression toolkit) puts weights and activations in int8, their ranges calibrated on real inputs
prepared exactly as the demo and val.py prepare them (`prepare_input`: the same height, padding and normalisation).
Given validation data, NNCF's accuracy-controlled quantization returns layers to float, those whose int8 outputs
differ most from float first, until the COCO AP lost is within a bound. The IR carries its keypoint set in its
runtime info (`("lwpose", "keypoint_set")`, where the OpenVINO backend reads it), so demo.py and val.py run it
without the checkpoint.

Everything here needs the optional packages `nncf` and `openvino` (pip install "lwpose[int8]").
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from lwpose.errors import LwposeError
from lwpose.evaluation.coco import (GroundTruthError, KeypointGroundTruth, evaluate_keypoints, image_path,
                                    load_keypoint_ground_truth, people_to_coco_results)
from lwpose.images import ImageReadError, read_image
from lwpose.inference.estimator import PoseEstimator, prepare_input
from lwpose.keypoints import KeypointSet

DEFAULT_NUM_SAMPLES = 300  # NNCF's own default subset for range statistics
# Fewer readable calibration images than this (or than asked for, if less) is refused: ranges from a handful of
# images clip the activations of the next one.
MIN_CALIBRATION_SAMPLES = 10
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# What an lwpose IR carries in its runtime info besides its keypoint set (lwpose/inference/backends.py reads that).
IR_ARCHITECTURE_PATH = ("lwpose", "architecture")
IR_QUANTIZATION_PATH = ("lwpose", "quantization")
PRESETS = ("mixed", "performance")  # NNCF: asymmetric activations, or symmetric ones (a few % faster, less exact)
# The default: human-pose-estimation-0001 calibrated on coco_mini_train and vtest.avi (300 samples) lost 0.004 AP
# (val.py --decode-at map) with asymmetric activations and 0.012 with symmetric ones, whose demo ran 4 % faster
# (docs/int8.md).
DEFAULT_PRESET = "mixed"
# Layers whose int8 form is reported: the ones that carry weights and do the work.
WEIGHTED_LAYER_TYPES = ("Convolution", "GroupConvolution", "MatMul")


class QuantizationError(LwposeError, RuntimeError):
    """A quantization that cannot be done (calibration data, checkpoint, toolkit); the message names the file."""


def require_toolkit():
    """(nncf, openvino), or QuantizationError saying what to install."""
    try:
        import nncf
        import openvino
    except ImportError as e:
        raise QuantizationError(f"INT8 quantization needs NNCF and OpenVINO ({e.name} is missing): "
                                "pip install nncf openvino (or pip install \"lwpose[int8]\")") from None
    return nncf, openvino


# --------------------------------------------------------------------------------------------- calibration
@dataclass
class _Source:
    path: str
    kind: str  # "images" (a folder or one file), "labels" (COCO file + images folder), "video"
    items: list  # image paths, or for a video its frame count as [count]

    @property
    def count(self) -> int:
        return self.items[0] if self.kind == "video" else len(self.items)


@dataclass
class CalibrationSet:
    """Network inputs (1, 3, H, W) prepared as the demo prepares frames, and where each came from."""

    inputs: list[np.ndarray]
    names: list[str]
    skipped: list[str] = field(default_factory=list)  # unreadable images: the file and why
    height_size: int = 256

    def __len__(self) -> int:
        return len(self.inputs)


def _open_source(path: str, images_folder: str | None) -> _Source:
    if not os.path.exists(path):
        raise QuantizationError(f"calibration data {path} does not exist")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
        if not files:
            raise QuantizationError(f"calibration folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return _Source(path, "images", files)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return _Source(path, "images", [path])
    if suffix == ".json":
        return _Source(path, "labels", _labelled_images(path, images_folder))
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise QuantizationError(f"calibration data {path} is neither a folder of images, an image, a COCO labels "
                                    "file (.json) nor a video OpenCV can open")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # a container without a frame count: count by reading through
            count = 0
            while capture.grab():
                count += 1
    finally:
        capture.release()
    if count == 0:
        raise QuantizationError(f"calibration video {path} gave no frame (empty or damaged)")
    return _Source(path, "video", [count])


def _labelled_images(path: str, images_folder: str | None) -> list[str]:
    """The image files a COCO-format labels file names, in its order."""
    if images_folder is None:
        raise QuantizationError(f"calibration labels {path}: the folder its images are in is needed too")
    if not os.path.isdir(images_folder):
        raise QuantizationError(f"calibration labels {path}: images folder {images_folder} is not a folder")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QuantizationError(f"calibration labels {path} cannot be read as JSON: {e}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise QuantizationError(f"calibration labels {path}: no 'images' list (not a COCO-format file)")
    files = []
    for i, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            raise QuantizationError(f"calibration labels {path}: images[{i}] has no 'file_name'")
        try:
            files.append(image_path(images_folder, image["file_name"]))
        except GroundTruthError as e:
            raise QuantizationError(f"calibration labels {path}: images[{i}]: {e}") from None
    return files


def share_samples(counts: Sequence[int], total: int) -> list[int]:
    """How many samples each source gives: an equal share of `total`, a source with fewer items giving all it has
    and the rest going to the others."""
    shares = [0] * len(counts)
    remaining, open_sources = total, sorted(range(len(counts)), key=lambda i: counts[i])
    while open_sources and remaining > 0:
        share = remaining // len(open_sources)
        i = open_sources.pop(0)
        shares[i] = min(counts[i], max(share, 1 if remaining else 0))
        remaining -= shares[i]
    return shares


def _evenly_spaced(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over `count` items (all of them when wanted >= count)."""
    if wanted >= count:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, wanted)})


def calibration_set(paths: Sequence[str], height_size: int = 256, num_samples: int = DEFAULT_NUM_SAMPLES,
                    images_folder: str | None = None, progress: bool = True) -> CalibrationSet:
    """Calibration inputs from folders of images, image files, videos and COCO labels files (whose images lie in
    `images_folder`): `num_samples` in all, shared equally between the sources and spread evenly over each
    (videos: frames from start to end), prepared at `height_size` as the demo prepares frames."""
    if not paths:
        raise QuantizationError("no calibration data given (a folder of images, a video or a COCO labels file)")
    if num_samples < 1:
        raise QuantizationError(f"the number of calibration samples must be at least 1, not {num_samples}")
    sources = [_open_source(path, images_folder) for path in paths]
    shares = share_samples([s.count for s in sources], num_samples)
    result = CalibrationSet([], [], height_size=height_size)
    bar = tqdm(total=sum(shares), desc="calibration images", unit="img", disable=not progress, dynamic_ncols=True)

    def add(image: np.ndarray, name: str) -> None:
        result.inputs.append(prepare_input(image, height_size)[0][None])
        result.names.append(name)
        bar.update(1)

    for source, share in zip(sources, shares):
        chosen = _evenly_spaced(source.count, share)
        if source.kind == "video":
            _read_frames(source.path, chosen, add)
            continue
        for index in chosen:
            try:
                image = read_image(source.items[index])
            except ImageReadError as e:
                result.skipped.append(str(e))
                bar.update(1)
                continue
            add(image, source.items[index])
    bar.close()
    needed = min(num_samples, MIN_CALIBRATION_SAMPLES)
    if len(result) < needed:
        unreadable = f"; {len(result.skipped)} could not be read, e.g. {result.skipped[0]}" if result.skipped else ""
        raise QuantizationError(f"only {len(result)} readable calibration images in {', '.join(paths)} (at least "
                                f"{needed} are needed for activation ranges that hold on other images){unreadable}")
    return result


def _read_frames(path: str, indices: list[int], add) -> None:
    wanted = set(indices)
    capture = cv2.VideoCapture(path)
    try:
        index = 0
        while wanted and capture.grab():
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok and frame is not None:
                    add(frame, f"{path}#{index}")
                wanted.discard(index)
            index += 1
    finally:
        capture.release()


# ---------------------------------------------------------------------------------------------- validation
@dataclass
class ValidationData:
    """Images with COCO keypoint ground truth, scored as val.py --decode-at map scores them at `height_size`
    (with `flip`, averaged with the mirrored image)."""

    gt: KeypointGroundTruth
    images: list[tuple[object, np.ndarray]]  # (image id, BGR image); unreadable ones are missing, and count as missed
    model_set: KeypointSet
    height_size: int = 368
    flip: bool = False
    image_ids: list = field(default_factory=list)  # every image scored, readable or not

    def estimator(self, backend) -> PoseEstimator:
        return PoseEstimator(backend, self.model_set, height_size=self.height_size, flip=self.flip, decode_at="map")

    def network_input(self, index: int) -> np.ndarray:
        """The unflipped network input of image `index`, as the estimator prepares it."""
        return prepare_input(self.images[index][1], self.height_size)[0][None]

    def average_precision(self, backend, indices: Sequence[int] | None = None, record=None) -> float:
        """COCO AP of the backend's maps on these images (all, or those at `indices`: then only they are scored);
        `record(index)` is called after each image."""
        estimator = self.estimator(backend)
        mapping = self.model_set.indices_in(self.gt.keypoint_set)
        chosen = range(len(self.images)) if indices is None else indices
        detections = []
        for index in chosen:
            image_id, image = self.images[index]
            people = estimator.estimate(image)
            detections.extend(people_to_coco_results(people, image_id, self.model_set, self.gt.keypoint_set,
                                                     self.gt.category_id, mapping))
            if record is not None:
                record(index)
        image_ids = self.image_ids if indices is None else [self.images[i][0] for i in chosen]
        return float(evaluate_keypoints(self.gt, detections, image_ids=image_ids)["AP"])


def validation_data(labels: str, images_folder: str, model_set: KeypointSet, height_size: int = 368,
                    flip: bool = False, max_images: int | None = None, progress: bool = True) -> ValidationData:
    """The images of a COCO keypoint file read into memory (each validation of a quantization trial reuses them)."""
    try:
        gt = load_keypoint_ground_truth(labels, fallback_set=model_set)
    except GroundTruthError as e:
        raise QuantizationError(str(e)) from None
    if not os.path.isdir(images_folder):
        raise QuantizationError(f"validation images folder {images_folder} is not a folder")
    if not any(name in model_set.index for name in gt.keypoint_set.keypoints):
        raise QuantizationError(f"validation labels {labels}: the model's keypoints ({model_set.name}) share no name "
                                f"with the ground truth's ({gt.keypoint_set.name})")
    infos = gt.images[:max_images] if max_images else gt.images
    images = []
    for info in tqdm(infos, desc="validation images", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            images.append((info["id"], read_image(image_path(images_folder, info["file_name"]))))
        except (ImageReadError, GroundTruthError) as e:
            tqdm.write(f"warning: {e}; its people count as missed")
    if not images:
        raise QuantizationError(f"validation labels {labels}: none of its images could be read from {images_folder}")
    return ValidationData(gt, images, model_set, height_size, flip, [info["id"] for info in infos])


class CompiledModelBackend:
    """An estimator backend over an OpenVINO compiled model whose outputs are named `heatmaps` and `pafs` (the
    project's exports); keeps the raw outputs of the last `keep` calls (NNCF compares them between trials)."""

    def __init__(self, compiled_model, keypoint_set: KeypointSet):
        self.compiled = compiled_model
        self.keypoint_set = keypoint_set
        names = [output.get_names() for output in compiled_model.outputs]
        try:
            self.heatmaps_index = next(i for i, n in enumerate(names) if "heatmaps" in n)
            self.pafs_index = next(i for i, n in enumerate(names) if "pafs" in n)
        except StopIteration:
            raise QuantizationError(f"the model's outputs {names} are not named 'heatmaps' and 'pafs' (not an lwpose "
                                    "export)") from None
        self.request = compiled_model.create_infer_request()
        self.calls: list[list[np.ndarray]] = []

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        outputs = [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]
        self.calls.append(outputs)
        return outputs[self.heatmaps_index], outputs[self.pafs_index]


# -------------------------------------------------------------------------------------------- quantization
@dataclass
class QuantizationReport:
    output_path: str
    onnx_path: str
    calibration_samples: int
    weighted_layers: int
    float_layers: list[str]  # weighted layers left in float (accuracy control, or not quantizable)
    fp32_ap: float | None = None
    int8_ap: float | None = None
    timing: dict = field(default_factory=dict)  # engine -> {"wall_ms", "cpu_ms", "input"}
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"output": self.output_path, "onnx": self.onnx_path, "calibration_samples": self.calibration_samples,
                "weighted_layers": self.weighted_layers, "float_layers": self.float_layers, "fp32_ap": self.fp32_ap,
                "int8_ap": self.int8_ap, "timing": self.timing, "seconds": round(self.seconds, 1)}


def export_for_quantization(checkpoint_path: str) -> tuple[str, KeypointSet, dict]:
    """The checkpoint's cached ONNX export, its keypoint set and architecture; QuantizationError naming the
    checkpoint when it cannot be loaded or exported."""
    from lwpose.interop.checkpoint import CheckpointError, load_checkpoint
    from lwpose.interop.onnx_export import ExportError, onnx_for_checkpoint
    from lwpose.keypoints import load_keypoint_set

    try:
        checkpoint = load_checkpoint(checkpoint_path)
        keypoint_set = load_keypoint_set(checkpoint["keypoint_set"])
        onnx_path = onnx_for_checkpoint(checkpoint_path)
    except (CheckpointError, ExportError) as e:
        raise QuantizationError(str(e)) from None
    except Exception as e:  # the exporter's own errors (an operator it cannot write, a malformed state dict)
        raise QuantizationError(f"checkpoint {checkpoint_path} cannot be exported to ONNX for quantization: "
                                f"{type(e).__name__}: {str(e).strip()[:300]}") from None
    return onnx_path, keypoint_set, dict(checkpoint["architecture"])


def layer_precisions(model) -> tuple[list[str], list[str]]:
    """(int8, float) names of the model's weighted layers: int8 where the data input arrives quantized (through a
    FakeQuantize, or a Concat of quantized inputs: the layer then runs on int8 instructions), float otherwise."""
    int8, floating = [], []
    for op in model.get_ordered_ops():
        if op.get_type_name() in WEIGHTED_LAYER_TYPES:
            (int8 if _arrives_quantized(op.input_value(0).get_node()) else floating).append(readable_layer_name(op))
    return int8, floating


# Ops that move or pick int8 values without computing on them: what comes out is as quantized as what went in.
_PASS_THROUGH = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "StridedSlice", "Split", "VariadicSplit")


def _arrives_quantized(node) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Concat":
        return all(_arrives_quantized(value.get_node()) for value in node.input_values())
    if kind in _PASS_THROUGH:
        return _arrives_quantized(node.input_value(0).get_node())
    return False


def readable_layer_name(op) -> str:
    """The network module a layer of the export comes from, as PyTorch names it
    (`/network/refinement_stages.0/trunk/trunk.0/initial/initial.0/Conv` -> `refinement_stages.0.trunk.0.initial.0`),
    or the op's own name for one that is not the export's."""
    parts = [p for p in op.get_friendly_name().split("/") if p]
    if parts and parts[-1] == "WithoutBiases":  # OpenVINO splits a convolution's bias into an Add of its own
        parts.pop()
    if len(parts) < 3 or parts[0] != "network":
        return op.get_friendly_name()
    path: list[str] = []
    for part in parts[1:-1]:  # TorchScript scopes: a container's child repeats the container's name plus ".index"
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def advanced_parameters():
    """Activation ranges from the global minimum and maximum over the calibration images, not NNCF's default
    average of each image's: that default clips the rarer large activations of this network, and the maps move
    more (human-pose-estimation-0001, 300 images: INT8 maps correlate with float at 0.9978 at least with global
    ranges, 0.9910 with averaged ones; docs/int8.md)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def _quantize(nncf, model, calibration_dataset, settings: dict, keypoint_set: KeypointSet,
              validation: ValidationData | None, max_ap_drop: float):
    """NNCF's post-training quantization of `model`; with `validation`, its accuracy-controlled form."""
    if validation is None:
        return nncf.quantize(model, calibration_dataset, advanced_parameters=advanced_parameters(), **settings)

    def validate(compiled_model, items) -> tuple[float, list[list[np.ndarray]]]:
        """The AP on the items (image indices), and per image the raw outputs of its unflipped input: NNCF
        ranks layers by how far their int8 form moves those."""
        backend = CompiledModelBackend(compiled_model, keypoint_set)
        per_image = []

        def record(_index):
            per_image.append(backend.calls[0])  # the first call of an image is its unflipped input
            backend.calls.clear()

        indices = list(items)
        ap = validation.average_precision(backend, None if len(indices) == len(validation.images) else indices,
                                          record)
        return ap, per_image

    validation_dataset = nncf.Dataset(list(range(len(validation.images))), validation.network_input)
    return nncf.quantize_with_accuracy_control(model, calibration_dataset, validation_dataset, validate,
                                               max_drop=max_ap_drop, drop_type=nncf.DropType.ABSOLUTE,
                                               advanced_quantization_parameters=advanced_parameters(), **settings)


def quantize_checkpoint(checkpoint_path: str, calibration: CalibrationSet, output_path: str,
                        validation: ValidationData | None = None, max_ap_drop: float = 0.01,
                        preset: str = DEFAULT_PRESET, timing_frames: int = 30,
                        progress: bool = True) -> QuantizationReport:
    """Quantize the checkpoint's network to INT8 and write it as an OpenVINO IR (`output_path`, .xml + .bin).
    With `validation`, layers return to float until its AP (decoded as val.py --decode-at map) is within
    `max_ap_drop` of the float model's; the report holds both APs. `timing_frames` > 0 also times both models
    (wall and CPU time per frame, OpenVINO on one calibration input, one request at a time). `progress` False
    hides NNCF's progress bars (its log messages still show)."""
    started = time.perf_counter()
    nncf, ov = require_toolkit()
    if preset not in PRESETS:
        raise QuantizationError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    if not output_path.lower().endswith(".xml"):
        raise QuantizationError(f"the IR is written as .xml + .bin: {output_path} should end in .xml")
    onnx_path, keypoint_set, architecture = export_for_quantization(checkpoint_path)
    try:
        # convert_model, not read_model: it folds the shape arithmetic OpenVINO's ONNX reader puts before each
        # depthwise convolution's weights (Reshape of a ShapeOf), so that the weights are constants NNCF stores in
        # int8 and the CPU plugin runs those layers on int8 kernels (after read_model they ran in f32).
        model = ov.convert_model(onnx_path)
    except Exception as e:
        raise QuantizationError(f"OpenVINO cannot read the export {onnx_path} of {checkpoint_path}: {e}") from None
    inputs = calibration.inputs
    calibration_dataset = nncf.Dataset(inputs)
    settings = dict(subset_size=len(inputs), target_device=nncf.TargetDevice.CPU,
                    preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance"
                    else nncf.QuantizationPreset.MIXED)
    # NNCF draws its bars with rich, on whatever sys.stdout is while they run; its logger keeps the stream it
    # started with, so its messages still show.
    bars = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    with bars:
        quantized = _quantize(nncf, model, calibration_dataset, settings, keypoint_set, validation, max_ap_drop)
    int8_layers, float_layers = layer_precisions(quantized)
    report = QuantizationReport(output_path, onnx_path, len(inputs), len(int8_layers) + len(float_layers),
                                float_layers)
    save_ir(quantized, output_path, keypoint_set, architecture,
            {"checkpoint": os.path.basename(checkpoint_path), "calibration_samples": len(inputs),
             "height_size": calibration.height_size, "preset": preset, "float_layers": float_layers,
             "max_ap_drop": max_ap_drop if validation is not None else None})
    if validation is not None:
        report.fp32_ap = validation.average_precision(_engine(onnx_path))
        report.int8_ap = validation.average_precision(_engine(output_path))
        _add_quality(output_path, report, validation)
    if timing_frames > 0:
        report.timing = compare_cpu_time({"fp32": onnx_path, "int8": output_path}, inputs[0], timing_frames)
    report.seconds = time.perf_counter() - started
    return report


def _engine(model_path: str, performance_hint: str = "LATENCY"):
    """The project's own OpenVINO engine on a model, as val.py and demo.py run it."""
    from lwpose.inference.backends import make_backend

    return make_backend("openvino", model_path, performance_hint=performance_hint)


def save_ir(model, output_path: str, keypoint_set: KeypointSet, architecture: dict, quantization: dict) -> None:
    """Write the model as an IR carrying its keypoint set, architecture and how it was quantized (runtime info)."""
    from lwpose.inference.backends import IR_KEYPOINT_SET_PATH

    model.set_rt_info(json.dumps(keypoint_set.to_dict()), list(IR_KEYPOINT_SET_PATH))
    model.set_rt_info(json.dumps(architecture), list(IR_ARCHITECTURE_PATH))
    model.set_rt_info(json.dumps(quantization), list(IR_QUANTIZATION_PATH))
    _write_ir(model, output_path)


def _write_ir(model, output_path: str) -> None:
    """The .bin first, then the .xml, each renamed into place: a reader never sees half an IR."""
    import openvino as ov

    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".quantize-") as tmp:
        tmp_xml = os.path.join(tmp, os.path.basename(output_path))
        # Float layers keep float32 weights: fp16 storage would move the maps of the layers kept for accuracy.
        ov.save_model(model, tmp_xml, compress_to_fp16=False)
        os.replace(os.path.splitext(tmp_xml)[0] + ".bin", os.path.splitext(output_path)[0] + ".bin")
        os.replace(tmp_xml, output_path)


def _add_quality(output_path: str, report: QuantizationReport, validation: ValidationData) -> None:
    """Record the measured APs in the IR's runtime info (they describe this file)."""
    import openvino as ov

    model = ov.Core().read_model(output_path)
    info = json.loads(model.get_rt_info(list(IR_QUANTIZATION_PATH)).astype(str))
    info.update({"fp32_ap": report.fp32_ap, "int8_ap": report.int8_ap, "validation_labels":
                 os.path.basename(validation.gt.path), "validation_images": len(validation.image_ids),
                 "validation_height_size": validation.height_size, "validation_flip": validation.flip})
    model.set_rt_info(json.dumps(info), list(IR_QUANTIZATION_PATH))
    _write_ir(model, output_path)


def compare_cpu_time(models: dict[str, str], network_input: np.ndarray, frames: int = 30,
                     rounds: int = 3) -> dict[str, dict]:
    """Wall and CPU time per frame of each model on one input, run by the project's OpenVINO engine one request
    at a time; the models take turns in `rounds` rounds so that a change of load hits them alike. CPU time is
    that of every thread of this process: what a frame costs whatever else the machine runs."""
    engines = {name: _engine(path) for name, path in models.items()}
    for engine in engines.values():
        for _ in range(3):
            engine(network_input)
    wall = {name: 0.0 for name in engines}
    cpu = {name: 0.0 for name in engines}
    per_round = max(1, math.ceil(frames / rounds))
    for _ in range(rounds):
        for name, engine in engines.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                engine(network_input)
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - cpu_start
    count = per_round * rounds
    size = "x".join(map(str, network_input.shape[2:]))
    return {name: {"wall_ms": round(1000 * wall[name] / count, 2), "cpu_ms": round(1000 * cpu[name] / count, 2),
                   "input": size, "frames": count} for name in engines}

"""Inference backends: a callable from a normalised NCHW float32 batch to (heatmaps, PAFs) numpy arrays.

Three engines run the same network: PyTorch (CPU or GPU, optional fp16, channels_last, torch.compile; in
lwpose/inference/torch_backend.py, the only one that imports torch), ONNX Runtime and OpenVINO (both optional
packages, fed an ONNX export, made once from a checkpoint into the cache, or for OpenVINO an IR such as an INT8 one,
which runs on the CPU's int8 instructions). Every backend can also `submit` a batch and return a future, so a video
loop keeps the network busy while it decodes the previous frame; OpenVINO runs several requests at once there.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from lwpose.errors import LwposeError
from lwpose.interop.onnx_export import KEYPOINT_SET_METADATA, cache_dir
from lwpose.keypoints import KeypointSet, load_keypoint_set

BACKEND_NAMES = ("torch", "onnxruntime", "openvino")
# `auto` takes the first of these that is installed: the fastest on a CPU first (README, "Demo and real-time").
FASTEST_FIRST = ("openvino", "onnxruntime", "torch")
PIP_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "onnx": "onnx"}
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "onnx": "onnx"}  # pyproject.toml's extra that brings each


class BackendUnavailable(LwposeError, RuntimeError):
    """A backend that cannot run here (missing package, no such device); the message says what to install."""


def require_package(module: str, backend: str):
    """Import an optional package, or fail naming the pip package that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(f"the {backend} backend needs the '{PIP_PACKAGES[module]}' package: "
                                 f"pip install {PIP_PACKAGES[module]} (or pip install \"lwpose[{EXTRAS[module]}]\")"
                                 ) from None


class Backend:
    """Common part: synchronous `__call__` (subclasses) and `submit` for pipelined use."""

    name = "backend"
    keypoint_set = None  # set by make_backend: the keypoint set the model predicts
    max_in_flight = 1  # batches that run at the same time

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def submit(self, batch: np.ndarray) -> "Future[tuple[np.ndarray, np.ndarray, float]]":
        """Run `batch` in the background; the future gives (heatmaps, PAFs, seconds the inference took)."""
        if getattr(self, "_executor", None) is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-network")
        return self._executor.submit(self._timed_call, batch)

    def _timed_call(self, batch):
        start = time.perf_counter()
        heatmaps, pafs = self(batch)
        return heatmaps, pafs, time.perf_counter() - start

    def close(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
            self._executor = None

    def describe(self) -> str:
        return self.name


class OnnxRuntimeBackend(Backend):
    """An ONNX export run by ONNX Runtime (CPU, or CUDA when its GPU package is installed)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str, device: str = "cpu", threads: int | None = None,
                 keypoint_set: KeypointSet | None = None):
        ort = require_package("onnxruntime", self.name)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        providers: list = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("onnxruntime here has no CUDA provider: pip install onnxruntime-gpu")
            # 'cuda:1' is the second GPU; ONNX Runtime takes the index as a provider option
            index = int(str(device).partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            self.session = ort.InferenceSession(onnx_path, options, providers=providers)
        except Exception as e:  # ORT raises its own Fail / InvalidGraph / NoSuchFile types
            raise BackendUnavailable(f"onnxruntime cannot load {onnx_path}: {e}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.device = device
        if keypoint_set is None:
            stored = self.session.get_modelmeta().custom_metadata_map.get(KEYPOINT_SET_METADATA)
            keypoint_set = _stored_keypoint_set(stored, onnx_path)
        self.keypoint_set = keypoint_set

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return outputs[-2], outputs[-1]

    def describe(self) -> str:
        return f"onnxruntime {self.session.get_providers()[0]}"


class OpenVinoBackend(Backend):
    """An ONNX export (or IR) compiled by OpenVINO, one compiled model per input shape (video frames share one).

    `performance_hint` "LATENCY" gives one request all cores; "THROUGHPUT" splits the cores into streams that run
    requests side by side, so `submit` keeps several frames in flight (the fastest video setting on 2 cores)."""

    name = "openvino"

    def __init__(self, model_path: str, device: str = "CPU", performance_hint: str = "THROUGHPUT",
                 threads: int | None = None, cache_dir: str | None = None, keypoint_set: KeypointSet | None = None):
        ov = require_package("openvino", self.name)
        self._ov = ov
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(model_path)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with its own text
            raise BackendUnavailable(f"openvino cannot read {model_path}: {e}") from None
        self.model_path = model_path
        self.quantized = any(op.get_type_name() == "FakeQuantize" for op in self.model.get_ops())
        if keypoint_set is None:
            keypoint_set = _stored_keypoint_set(self._stored_keypoint_set_json(), model_path)
        self.keypoint_set = keypoint_set
        self._heatmaps_output, self._pafs_output = self._output_indices(keypoint_set)
        if model_path.lower().endswith(".xml"):
            self._feed_normalised_input(model_path)
        self.device = device
        # OpenVINO runs float layers in bf16 by default on CPUs that have bf16 instructions (AVX-512 BF16, AMX),
        # which moves the maps by about 0.03; float layers stay float32 here, so every engine gives the same people
        # (an INT8 model's quantized layers still run in int8).
        self.config = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        if cache_dir:
            self.config["CACHE_DIR"] = cache_dir
        self.performance_hint = performance_hint
        self._compiled: dict[tuple, object] = {}
        self._sync_requests: dict[tuple, object] = {}
        self._async_requests: dict[tuple, list] = {}
        self._idle: dict[tuple, queue.Queue] = {}
        self._num_requests = 2 if performance_hint == "THROUGHPUT" else 1
        self._lock = threading.Lock()

    def _stored_keypoint_set_json(self) -> str | None:
        """The keypoint set the model carries: an lwpose IR in its runtime info, an ONNX export in the metadata
        OpenVINO reads into the runtime info's 'framework' section."""
        for path in (list(IR_KEYPOINT_SET_PATH), ["framework", KEYPOINT_SET_METADATA]):
            if self.model.has_rt_info(path):
                return self.model.get_rt_info(path).astype(str)
        return None

    def _output_indices(self, keypoint_set: KeypointSet) -> tuple[int, int]:
        """Which output is the heatmaps and which the PAFs: our exports name them; an IR made elsewhere is told
        apart by channel counts, checked against the keypoint set the caller decodes with."""
        outputs = self.model.outputs
        names = [output.get_names() for output in outputs]
        if len(outputs) == 2 and "heatmaps" in names[0] and "pafs" in names[1]:
            return 0, 1
        channels = [output.get_partial_shape()[1] for output in outputs]
        heatmaps = [i for i, c in enumerate(channels) if c.is_static and c.get_length() == keypoint_set.num_heatmaps]
        pafs = [i for i, c in enumerate(channels) if c.is_static and c.get_length() == keypoint_set.num_pafs]
        if len(outputs) != 2 or len(heatmaps) != 1 or len(pafs) != 1 or heatmaps == pafs:
            raise BackendUnavailable(
                f"{self.model_path}: expected two outputs with {keypoint_set.num_heatmaps} (heatmaps) and "
                f"{keypoint_set.num_pafs} (PAFs) channels for keypoint set '{keypoint_set.name}', the model has "
                f"{len(outputs)} with {[str(c) for c in channels]} channels")
        return heatmaps[0], pafs[0]

    def _feed_normalised_input(self, xml_path: str) -> None:
        """An IR that scales raw pixels itself (Open Model Zoo's does: pixel * s + t before the first
        convolution) gets `pixel = 256 u + 128` prepended inside the graph, so it takes the same normalised input
        `u = (pixel - 128) / 256` as every other backend."""
        from lwpose.interop.openvino_ir import OpenVinoIR

        scale, shift = OpenVinoIR(xml_path).input_affine()
        if np.allclose(scale, 1.0) and np.allclose(shift, 0.0):
            return
        preprocess = self._ov.preprocess.PrePostProcessor(self.model)
        # PrePostProcessor's scale(v) divides by v and mean(m) subtracts m: u / (1/256) - (-128) = 256 u + 128
        preprocess.input().preprocess().scale(1.0 / 256.0).mean(-128.0)
        self.model = preprocess.build()

    def _compiled_for(self, shape: tuple):
        with self._lock:
            if shape not in self._compiled:
                model = self.model.clone()
                model.reshape({model.inputs[0].get_any_name(): self._ov.PartialShape(list(shape))})
                compiled = self.core.compile_model(model, self.device, self.config)
                self._compiled[shape] = compiled
                self._sync_requests[shape] = compiled.create_infer_request()
                self._num_requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
                self._async_requests[shape] = [compiled.create_infer_request() for _ in range(self._num_requests)]
                idle = queue.Queue()
                for request in self._async_requests[shape]:
                    idle.put(request)
                self._idle[shape] = idle
            return self._compiled[shape]

    @property
    def max_in_flight(self) -> int:
        return self._num_requests

    def prepare(self, shape: tuple) -> None:
        """Compile for one input shape now (a second or so), so the first frame's timing does not include it."""
        self._compiled_for(tuple(shape))

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._compiled_for(batch.shape)
        request = self._sync_requests[batch.shape]
        request.infer({0: batch})
        return self._outputs(request)

    def _outputs(self, request) -> tuple[np.ndarray, np.ndarray]:
        return (request.get_output_tensor(self._heatmaps_output).data.copy(),
                request.get_output_tensor(self._pafs_output).data.copy())

    def submit(self, batch: np.ndarray) -> "Future[tuple[np.ndarray, np.ndarray, float]]":
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._compiled_for(batch.shape)
        idle = self._idle[batch.shape]
        request = idle.get()  # waits while every request is busy
        future: Future = Future()
        future.set_running_or_notify_cancel()  # running from now on: it cannot be cancelled, only awaited
        started = time.perf_counter()

        def done(_userdata):
            try:
                future.set_result((*self._outputs(request), time.perf_counter() - started))
            except BaseException as e:  # surface it to the waiting loop instead of losing it in OpenVINO's thread
                future.set_exception(e)
            finally:
                idle.put(request)

        request.set_callback(done, None)
        try:
            request.start_async({0: batch})
        except BaseException:
            idle.put(request)
            raise
        return future

    def close(self) -> None:
        """Wait for requests still running (their futures complete)."""
        for requests in self._async_requests.values():
            for request in requests:
                request.wait()

    def describe(self) -> str:
        precision = ", int8" if self.quantized else ""
        return f"openvino {self.device} ({self.performance_hint.lower()}{precision})"


def installed_backends() -> list[str]:
    import importlib.util

    return [name for name in FASTEST_FIRST if name == "torch" or importlib.util.find_spec(name) is not None]


CHECKPOINT_SUFFIXES = (".pth", ".pt")


def model_kind(path: str) -> str:
    """'checkpoint', 'onnx' or 'ir' (OpenVINO), from the file's suffix."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".xml":
        return "ir"
    raise BackendUnavailable(f"model {path}: unknown kind of file '{suffix}' (an lwpose checkpoint .pth, an ONNX "
                             "export .onnx, or an OpenVINO IR .xml)")


def make_backend(name: str = "auto", model: str | None = None, device: str = "cpu", *,
                 keypoint_set: "KeypointSet | str | dict | None" = None, half: bool = False,
                 channels_last: bool = False, compile: bool = False, threads: int | None = None,
                 performance_hint: str = "THROUGHPUT") -> Backend:
    """The engine `name` ('auto' = the fastest installed for the device) running `model`: an lwpose checkpoint
    (ONNX Runtime and OpenVINO run its export, made once into the cache), an ONNX export, or an OpenVINO IR. Its
    `keypoint_set` says what the model predicts: the one the model carries, or `keypoint_set` for a model that
    carries none (Open Model Zoo's IR; a set, a shipped name, a JSON path or a checkpoint's dict). Only the torch
    engine and reading a checkpoint import torch."""
    if keypoint_set is not None:
        keypoint_set = load_keypoint_set(keypoint_set)
    if model is None:
        raise BackendUnavailable("a backend needs a model: an lwpose checkpoint, an ONNX export or an OpenVINO IR")
    kind = model_kind(model)
    if not os.path.isfile(model):
        raise BackendUnavailable(f"model {model} does not exist")
    if name == "auto":
        name = _fastest_for(kind, device)
    if name not in BACKEND_NAMES:
        raise BackendUnavailable(f"unknown backend '{name}' (known: auto, {', '.join(BACKEND_NAMES)})")
    torch_only = [option for option, on in (("half", half), ("channels_last", channels_last), ("compile", compile))
                  if on]
    if torch_only and name != "torch":
        raise BackendUnavailable(f"{', '.join(torch_only)} apply to the torch backend only, not to {name}")
    if kind == "ir" and name != "openvino":
        raise BackendUnavailable(f"an OpenVINO IR ({model}) runs with the openvino backend, not '{name}'")
    if name == "torch":
        if kind != "checkpoint":
            raise BackendUnavailable(f"the torch backend runs lwpose checkpoints, not {model} (ONNX exports run with "
                                     "onnxruntime or openvino)")
        from lwpose.inference.torch_backend import TorchBackend
        from lwpose.interop.checkpoint import load_model

        network, own_set, _ = load_model(model)
        if threads:
            import torch

            torch.set_num_threads(threads)
        backend: Backend = TorchBackend(network, device, half=half, channels_last=channels_last, compile=compile)
        backend.keypoint_set = keypoint_set or own_set
        return backend
    # Fail on a missing package before spending seconds on an export.
    require_package(name, name)
    if kind == "checkpoint":
        from lwpose.interop.checkpoint import load_checkpoint
        from lwpose.interop.onnx_export import onnx_for_checkpoint

        keypoint_set = keypoint_set or load_keypoint_set(load_checkpoint(model)["keypoint_set"])
        model = onnx_for_checkpoint(model)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model, device, threads, keypoint_set=keypoint_set)
    _require_cpu_for_openvino(device)
    return OpenVinoBackend(model, "CPU", performance_hint, threads, cache_dir=os.path.join(cache_dir(), "openvino"),
                           keypoint_set=keypoint_set)


# Where an lwpose IR keeps its keypoint set (JSON) in its runtime info.
IR_KEYPOINT_SET_PATH = ("lwpose", "keypoint_set")


class MissingKeypointSet(BackendUnavailable):
    """A model that does not say which keypoint set it predicts (an IR or ONNX file made outside lwpose)."""


def _stored_keypoint_set(stored: str | None, model_path: str) -> KeypointSet:
    if stored is None:
        raise MissingKeypointSet(f"model {model_path} carries no keypoint set (it was not exported by lwpose); "
                                 "give the checkpoint of the model it was made from, which carries it",
                                 settings=("checkpoint_path",))
    try:
        return load_keypoint_set(json.loads(stored))
    except (ValueError, TypeError) as e:
        raise BackendUnavailable(f"model {model_path}: the keypoint set it carries cannot be read: {e}") from None


def _fastest_for(kind: str, device: str) -> str:
    """The fastest installed engine that runs this kind of model on this device: on a CPU OpenVINO, then ONNX
    Runtime, then torch; on a CUDA GPU torch (a checkpoint) or ONNX Runtime's CUDA provider (an export)."""
    installed = installed_backends()
    if kind == "ir":
        return "openvino"
    if str(device).startswith("cuda"):
        return "torch" if kind == "checkpoint" else "onnxruntime"
    candidates = [n for n in installed if kind == "checkpoint" or n != "torch"]
    if not candidates:
        raise BackendUnavailable("no engine installed runs an ONNX export: pip install openvino (or onnxruntime)")
    return candidates[0]


def _require_cpu_for_openvino(device: str) -> None:
    if device != "cpu":
        raise BackendUnavailable(f"the openvino backend runs on the CPU here, not on '{device}'; "
                                 "a CUDA GPU runs the torch backend")

"""Inference backends: a callable from a normalised NCHW float32 batch to (heatmaps, PAFs) numpy arrays.

Three engines run the same network: PyTorch (CPU or GPU, optional fp16, channels_last, torch.compile), ONNX
Runtime and OpenVINO (both optional packages, fed a cached ONNX export of the checkpoint, or for OpenVINO an IR such
as Open Model Zoo's INT8 `human-pose-estimation-0001`, which runs on the CPU's int8 instructions). Every backend can also
`submit` a batch and return a future, so a video loop keeps the network busy while it decodes the previous frame;
OpenVINO runs several requests at once there.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from lwpose.checkpoint import load_checkpoint, load_model
from lwpose.keypoints import KeypointSet, load_keypoint_set
from lwpose.onnx_export import cache_dir, onnx_for_checkpoint, onnx_keypoint_set
from modules.pose_network import PoseNetwork

BACKEND_NAMES = ("torch", "onnxruntime", "openvino")
# `auto` takes the first of these that is installed: the fastest on a CPU first (README, "Demo and real-time").
FASTEST_FIRST = ("openvino", "onnxruntime", "torch")
PIP_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "onnx": "onnx"}


class BackendUnavailable(RuntimeError):
    """A backend that cannot run here (missing package, no such device); the message says what to install."""


def require_package(module: str, backend: str):
    """Import an optional package, or fail naming the pip package that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(f"the {backend} backend needs the '{PIP_PACKAGES[module]}' package: "
                                 f"pip install {PIP_PACKAGES[module]} (or pip install -r requirements-extras.txt)"
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


class TorchBackend(Backend):
    """The network in PyTorch, on CPU or GPU; optional fp16 (GPU), channels_last memory layout and torch.compile
    (on a GPU its `reduce-overhead` mode replays CUDA graphs, which removes per-layer launch costs)."""

    name = "torch"

    def __init__(self, network: PoseNetwork, device: str | torch.device = "cpu", half: bool = False,
                 channels_last: bool = False, compile: bool = False):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"device '{device}' was asked for, but this torch ({torch.__version__}) "
                                     "sees no CUDA GPU")
        self.half = half and self.device.type == "cuda"
        self.channels_last = channels_last
        network = network.to(self.device).eval()
        if self.half:
            network = network.half()
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.compiled = compile
        self._forward = network
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._forward = torch.compile(network, mode=mode, dynamic=False)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = self._forward(x)
        heatmaps, pafs = outputs[-2], outputs[-1]
        return heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()

    def describe(self) -> str:
        extras = [e for e, on in (("fp16", self.half), ("channels_last", self.channels_last),
                                  ("compiled", self.compiled)) if on]
        return f"torch {self.device}" + (f" ({', '.join(extras)})" if extras else "")


class OnnxRuntimeBackend(Backend):
    """An ONNX export run by ONNX Runtime (CPU, or CUDA when its GPU package is installed)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str, device: str = "cpu", threads: int | None = None):
        ort = require_package("onnxruntime", self.name)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("onnxruntime here has no CUDA provider: pip install onnxruntime-gpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(onnx_path, options, providers=providers)
        except Exception as e:  # ORT raises its own Fail / InvalidGraph / NoSuchFile types
            raise BackendUnavailable(f"onnxruntime cannot load {onnx_path}: {e}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.device = device

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

    def _output_indices(self, keypoint_set: KeypointSet | None) -> tuple[int, int]:
        """Which output is the heatmaps and which the PAFs: our exports name them; an IR made elsewhere is told
        apart by channel counts, checked against the keypoint set the caller decodes with."""
        outputs = self.model.outputs
        names = [output.get_names() for output in outputs]
        if len(outputs) == 2 and "heatmaps" in names[0] and "pafs" in names[1]:
            return 0, 1
        if keypoint_set is None:
            raise BackendUnavailable(f"{self.model_path}: outputs {names} are not named heatmaps/pafs; give the "
                                     "keypoint set (--checkpoint-path of the same model) to tell them apart")
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
        from lwpose.openvino_ir import OpenVinoIR

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


def make_backend(name: str, checkpoint_path: str | None = None, onnx_path: str | None = None, device: str = "cpu",
                 half: bool = False, channels_last: bool = False, compile: bool = False, threads: int | None = None,
                 performance_hint: str = "THROUGHPUT", openvino_ir: str | None = None) -> Backend:
    """A backend by name ('auto' = the fastest installed), from a checkpoint (exported to ONNX on the fly into the
    cache for ONNX Runtime and OpenVINO) or an ONNX file; its `keypoint_set` says what the model predicts.
    `openvino_ir`: an OpenVINO IR (.xml) of the checkpoint's network to run instead, e.g. an INT8 one; it carries
    no keypoint set, so the checkpoint gives it."""
    if openvino_ir is not None:
        return _openvino_ir_backend(name, openvino_ir, checkpoint_path, device, threads, performance_hint)
    if name == "auto":
        name = installed_backends()[0]
    if name not in BACKEND_NAMES:
        raise BackendUnavailable(f"unknown backend '{name}' (known: auto, {', '.join(BACKEND_NAMES)})")
    if checkpoint_path is None and onnx_path is None:
        raise ValueError("a backend needs a checkpoint or an ONNX model")
    if name == "torch":
        if checkpoint_path is None:
            raise BackendUnavailable("the torch backend needs --checkpoint-path (an ONNX file runs with "
                                     "--backend onnxruntime or openvino)")
        network, keypoint_set, _ = load_model(checkpoint_path)
        if threads:
            torch.set_num_threads(threads)
        backend: Backend = TorchBackend(network, device, half=half, channels_last=channels_last, compile=compile)
        backend.keypoint_set = keypoint_set
        return backend
    # Fail on a missing package before spending seconds on an export.
    require_package(name, name)
    if checkpoint_path is not None:
        keypoint_set = load_keypoint_set(load_checkpoint(checkpoint_path)["keypoint_set"])
        if onnx_path is None:
            onnx_path = onnx_for_checkpoint(checkpoint_path)
    else:
        keypoint_set = onnx_keypoint_set(onnx_path)
    if name == "onnxruntime":
        backend = OnnxRuntimeBackend(onnx_path, device, threads)
    else:
        _require_cpu_for_openvino(device)
        backend = OpenVinoBackend(onnx_path, "CPU", performance_hint, threads,
                                  cache_dir=os.path.join(cache_dir(), "openvino"))
    backend.keypoint_set = keypoint_set
    return backend


def _require_cpu_for_openvino(device: str) -> None:
    if device != "cpu":
        raise BackendUnavailable(f"the openvino backend runs on the CPU here, not on '{device}'; "
                                 "use --backend torch for a CUDA GPU")


def _openvino_ir_backend(name: str, xml_path: str, checkpoint_path: str | None, device: str, threads: int | None,
                         performance_hint: str) -> Backend:
    if name not in ("auto", "openvino"):
        raise BackendUnavailable(f"an OpenVINO IR ({xml_path}) runs with --backend openvino, not '{name}'")
    if checkpoint_path is None:
        raise BackendUnavailable(f"the OpenVINO IR {xml_path} carries no keypoint set: give --checkpoint-path of "
                                 "the same model (e.g. the checkpoint scripts/import_weights.py made from it)")
    if not os.path.isfile(xml_path):
        raise BackendUnavailable(f"OpenVINO IR {xml_path} does not exist")
    require_package("openvino", "openvino")
    _require_cpu_for_openvino(device)
    keypoint_set = load_keypoint_set(load_checkpoint(checkpoint_path)["keypoint_set"])
    backend = OpenVinoBackend(xml_path, "CPU", performance_hint, threads,
                              cache_dir=os.path.join(cache_dir(), "openvino"), keypoint_set=keypoint_set)
    backend.keypoint_set = keypoint_set
    return backend

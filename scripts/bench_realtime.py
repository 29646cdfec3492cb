"""Benchmarks of the real-time path, as subcommands of scripts/benchmark.py:

    python scripts/benchmark.py decode  --checkpoint-path hpe0001.pth   # decoding per frame, and in crowds
    python scripts/benchmark.py network --checkpoint-path hpe0001.pth   # the network per backend and input size
    python scripts/benchmark.py demo    --checkpoint-path hpe0001.pth   # demo.py end to end, per backend
    python scripts/benchmark.py demo    --checkpoint-path hpe0001.pth --openvino-ir omz=OMZ.xml ours=int8.xml
                                        # ... and OpenVINO on each IR (INT8 ones: docs/int8.md), a row each

Times are wall-clock medians on whatever else the machine is doing: quote them with the machine's load.
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lwpose.codec import input_to_cell  # noqa: E402
from lwpose.images import read_image  # noqa: E402
from lwpose.inference.backends import BackendUnavailable, installed_backends, make_backend  # noqa: E402
from lwpose.inference.estimator import InputTransform, PoseEstimator  # noqa: E402
from lwpose.inference.grouping import GroupingParams  # noqa: E402
from lwpose.interop.checkpoint import load_checkpoint  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SHARED_DATA = os.path.join(SHARED, "data")
DEFAULT_VIDEO = os.path.join(SHARED_DATA, "video", "vtest.avi")
# One person alone, large and fully visible: the model of every person of the synthetic crowds.
DEFAULT_CROWD_IMAGE = os.path.join(SHARED_DATA, "mmpose_samples", "coco", "000000000785.jpg")
# Open Model Zoo's INT8 IR of the same network: the fastest engine on a CPU with int8 instructions.
DEFAULT_INT8_IR = os.path.join(SHARED, "weights", "human-pose-estimation-0001", "FP16-INT8",
                               "human-pose-estimation-0001.xml")
REFERENCE_DEMO_FPS = 10.3  # REFERENCE.md section 3: the reference demo on vtest.avi, this machine type
SUMMARY = re.compile(r"processed (\d+) frames in ([\d.]+) s: ([\d.]+) fps \(network ([\d.]+) ms, "
                     r"decoding ([\d.]+) ms per frame\)")
CPU_TIME = re.compile(r"CPU time ([\d.]+) ms per frame")


def _median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _with_load(title: str, details: dict) -> str:
    """Timings on a shared machine mean little without its load: the title carries it."""
    return f"{title} [1-min load average {details['load_before']} before, {details['load_after']} after]"


# ------------------------------------------------------------------------------------------------------ decode
def read_frames(video: str, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(video)
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise SystemExit(f"error: video {video} gave no frame")
    return frames


def numba_cold_compile_seconds() -> float:
    """Compile every decoding kernel from scratch (empty numba cache, fresh process): what a first run costs."""
    code = ("import time; from lwpose.inference.estimator import PoseEstimator; "
            "from lwpose.keypoints import load_keypoint_set;"
            "ks = load_keypoint_set('lwop18'); start = time.perf_counter();"
            "PoseEstimator(None, ks, decode_at='map').warm_up(); print(time.perf_counter() - start)")
    with tempfile.TemporaryDirectory() as cache:
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "NUMBA_CACHE_DIR": cache})
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return float(result.stdout.strip().splitlines()[-1])


def crowd_maps(heatmaps: np.ndarray, pafs: np.ndarray, box: tuple[int, int, int, int], count: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """`count` copies of the maps inside `box` (x0, y0, x1, y1 in map cells), tiled in a near-square grid on an
    empty background: a crowd of real network output."""
    x0, y0, x1, y1 = box
    tile_h, tile_w = y1 - y0, x1 - x0
    columns = max(1, round(math.sqrt(count * tile_h / tile_w)))
    rows = math.ceil(count / columns)
    crowd_heat = np.zeros((heatmaps.shape[0], rows * tile_h, columns * tile_w), np.float32)
    crowd_heat[-1] = 1.0  # background channel: nobody
    crowd_paf = np.zeros((pafs.shape[0], rows * tile_h, columns * tile_w), np.float32)
    for i in range(count):
        r, c = divmod(i, columns)
        crowd_heat[:, r * tile_h:(r + 1) * tile_h, c * tile_w:(c + 1) * tile_w] = heatmaps[:, y0:y1, x0:x1]
        crowd_paf[:, r * tile_h:(r + 1) * tile_h, c * tile_w:(c + 1) * tile_w] = pafs[:, y0:y1, x0:x1]
    return crowd_heat, crowd_paf


def person_box(estimator: PoseEstimator, heatmaps, pafs, transform, margin: int = 2):
    """The map-cell box around the best person decoded from these maps, widened by `margin` cells."""
    people = estimator.decode_maps(heatmaps, pafs, transform)
    if not len(people):
        raise SystemExit("error: no person found in the crowd model image")
    best = people.keypoints[int(np.argmax(people.scores))]
    points = best[best[:, 2] > 0, :2]
    x_in, y_in = transform.image_to_input(points[:, 0], points[:, 1])
    stride = transform.padded_size[0] // heatmaps.shape[1]
    cx, cy = input_to_cell(x_in, stride), input_to_cell(y_in, stride)
    height, width = heatmaps.shape[1:]
    return (max(0, int(cx.min()) - margin), max(0, int(cy.min()) - margin),
            min(width, int(math.ceil(cx.max())) + margin + 1), min(height, int(math.ceil(cy.max())) + margin + 1))


def run_decode(args) -> dict:
    try:  # the engine that makes the maps (not timed) runs on --device
        backend = make_backend(args.backend, args.checkpoint_path, device=args.device)
    except BackendUnavailable as e:
        raise SystemExit(f"error: --backend {args.backend} --device {args.device}: {e}") from None
    keypoint_set = backend.keypoint_set
    ours = PoseEstimator(backend, keypoint_set, height_size=args.height_size, decode_at="map")
    # The reference demo's decoding: every map upsampled 4x (cubic), the reference's grouping settings.
    reference = PoseEstimator(backend, keypoint_set, height_size=args.height_size, decode_at="map", upsample=4,
                              upsample_pafs=True, grouping=GroupingParams())
    cold = None if args.no_cold_compile else numba_cold_compile_seconds()
    warm = ours.warm_up() + reference.warm_up()
    rows, details = [], {"numba_compile_s": None if cold is None else round(cold, 2),
                         "numba_cache_load_s": round(warm, 3), "load_before": _load(),
                         "maps_from": backend.describe()}

    def measure(case, maps):
        ours_ms = statistics.mean(_median_ms(lambda: ours.decode_maps(*m), args.repeats) for m in maps)
        reference_ms = statistics.mean(_median_ms(lambda: reference.decode_maps(*m), args.repeats) for m in maps)
        people = statistics.mean(len(ours.decode_maps(*m)) for m in maps)
        reference_people = statistics.mean(len(reference.decode_maps(*m)) for m in maps)
        size = "x".join(map(str, maps[0][0].shape[1:]))
        rows.append([case, size, f"{people:.1f}", f"{ours_ms:.2f}", f"{reference_people:.1f}", f"{reference_ms:.2f}"])

    frames = read_frames(args.video, args.frames)
    maps = []
    for frame in frames:
        network_input, transform = ours.prepare(frame)
        heatmaps, pafs = backend(network_input[None])
        maps.append((heatmaps[0], pafs[0], transform))
    measure(f"{os.path.basename(args.video)} ({len(frames)} frames)", maps)

    model = read_image(args.crowd_image)
    model_estimator = PoseEstimator(backend, keypoint_set, height_size=args.crowd_height, decode_at="map")
    network_input, transform = model_estimator.prepare(model)
    heatmaps, pafs = (m[0] for m in backend(network_input[None]))
    box = person_box(model_estimator, heatmaps, pafs, transform)
    details["crowd_person_cells"] = [box[3] - box[1], box[2] - box[0]]
    for count in args.crowds:
        crowd_heat, crowd_paf = crowd_maps(heatmaps, pafs, box, count)
        size = (crowd_heat.shape[1] * 8, crowd_heat.shape[2] * 8)
        crowd_transform = InputTransform(1.0, (0, 0, 0, 0), size, size)
        measure(f"synthetic crowd of {count}", [(crowd_heat, crowd_paf, crowd_transform)])
    details["load_after"] = _load()
    compiled = "not measured" if cold is None else f"{cold:.1f} s"
    return {"title": _with_load(f"Decoding per frame (ms, median of {args.repeats}; numba compile {compiled} "
                                "once, excluded); ours = at map resolution, reference = every map upsampled x4 "
                                "(cubic) + the reference's grouping", details),
            "columns": ["maps", "map size", "people", "ours ms", "reference people", "reference ms"],
            "rows": rows, "details": details}


# ----------------------------------------------------------------------------------------------------- network
def network_variants(args) -> list[tuple[str, dict]]:
    if args.device.startswith("cuda"):
        return [("torch fp32", dict(name="torch", device=args.device)),
                ("torch fp16", dict(name="torch", device=args.device, half=True)),
                ("torch fp16 channels_last", dict(name="torch", device=args.device, half=True, channels_last=True)),
                ("torch fp16 channels_last compiled (CUDA graphs)",
                 dict(name="torch", device=args.device, half=True, channels_last=True, compile=True)),
                ("onnxruntime CUDA", dict(name="onnxruntime", device=args.device))]
    variants = [("torch eager", dict(name="torch")), ("torch channels_last", dict(name="torch", channels_last=True)),
                ("onnxruntime", dict(name="onnxruntime")),
                ("openvino latency", dict(name="openvino", performance_hint="LATENCY")),
                ("openvino throughput (2 in flight)", dict(name="openvino", performance_hint="THROUGHPUT"))]
    for label, path in ir_list(args.openvino_ir):
        variants += [(f"openvino {label} IR latency", dict(name="openvino", model=path, performance_hint="LATENCY")),
                     (f"openvino {label} IR throughput (2 in flight)",
                      dict(name="openvino", model=path, performance_hint="THROUGHPUT"))]
    return variants


def ir_list(specs) -> list[tuple[str, str]]:
    """(label, path) of each IR given as PATH or LABEL=PATH ('' gives none); a bare path is labelled INT8 when it
    lies in an INT8 precision folder (Open Model Zoo's layout, <name>/FP16-INT8/<name>.xml), else by its file name."""
    result = []
    for spec in specs or []:
        if not spec:
            continue
        label, sep, path = spec.partition("=")
        if not sep or not label or os.sep in label:
            path = spec
            folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
            label = "INT8" if "INT8" in folder.upper() else os.path.splitext(os.path.basename(path))[0]
        result.append((label, path))
    return result


def _sync_cuda(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_network(args) -> dict:
    rows, details = [], {"load_before": _load(), "max_abs_diff_vs_torch": {}}
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    rng = np.random.default_rng(0)
    inputs = {size: rng.uniform(-0.5, 0.5, (1, 3, *size)).astype(np.float32) for size in sizes}
    reference_outputs = {}
    variants = network_variants(args)
    checkpoint_set = load_checkpoint(args.checkpoint_path)["keypoint_set"]  # for an IR that carries none
    for label, options in variants:
        name = options.pop("name")
        try:
            model = options.pop("model", args.checkpoint_path)
            backend = make_backend(name, model, keypoint_set=checkpoint_set if model != args.checkpoint_path else None,
                                   **options)
        except BackendUnavailable as e:
            rows.append([label] + ["unavailable"] * len(sizes) + [str(e)[:80]])
            continue
        cells = []
        for size in sizes:
            batch = inputs[size]
            # Every call goes through submit(), the demo's way: one thread runs the network (compiled CUDA
            # graphs are tied to the thread that recorded them).
            for _ in range(args.warmup):
                backend.submit(batch).result()
            _sync_cuda(args.device)
            latency = _median_ms(lambda: backend.submit(batch).result(), args.repeats)
            # Throughput with frames kept in flight, as the demo runs it; CPU time (all threads of this process)
            # is what a frame costs whatever else the machine runs.
            start, cpu_start = time.perf_counter(), time.process_time()
            pending = []
            for _ in range(args.repeats):
                if len(pending) > backend.max_in_flight:
                    pending.pop(0).result()
                pending.append(backend.submit(batch))
            for future in pending:
                future.result()
            throughput = args.repeats / (time.perf_counter() - start)
            cpu_ms = 1000 * (time.process_time() - cpu_start) / args.repeats
            heatmaps, pafs, _ = backend.submit(batch).result()
            if label == variants[0][0]:
                reference_outputs[size] = (heatmaps, pafs)
            elif size in reference_outputs:
                diff = max(float(np.abs(heatmaps - reference_outputs[size][0]).max()),
                           float(np.abs(pafs - reference_outputs[size][1]).max()))
                details["max_abs_diff_vs_torch"][f"{label} {size[0]}x{size[1]}"] = round(diff, 6)
            cells.append(f"{latency:.1f} ms / {throughput:.1f} fps / {cpu_ms:.0f} ms")
        backend.close()
        rows.append([label] + cells + [backend.describe()])
    details["load_after"] = _load()
    return {"title": _with_load(f"Network alone, 1 frame per call on {args.device}: median latency / throughput "
                                f"with frames in flight / CPU time per frame in flight ({args.repeats} runs)",
                                details),
            "columns": ["backend"] + [f"{h}x{w}" for h, w in sizes] + ["engine"], "rows": rows, "details": details}


# -------------------------------------------------------------------------------------------------------- demo
def widescreen_copy(video: str, frames: int, folder: str) -> str:
    """The first frames of `video` resized to 16:9 (960x540), so inputs become 256x456 / 368x656 as a
    widescreen camera gives them."""
    path = os.path.join(folder, "widescreen.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (960, 540))
    for frame in read_frames(video, frames):
        writer.write(cv2.resize(frame, (960, 540), interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


def demo_variants(args) -> list[tuple[str, list[str]]]:
    """(label, demo.py engine flags) per engine to time: every installed backend on the checkpoint (on a GPU,
    torch), and OpenVINO on each IR given (INT8 ones: Open Model Zoo's, scripts/quantize.py's)."""
    backends = args.backends or (["torch"] if args.device.startswith("cuda") else installed_backends())
    variants = [(backend, ["--backend", backend]) for backend in backends]
    if not args.device.startswith("cuda") and "openvino" in installed_backends():
        variants += [(f"openvino {label} IR", ["--backend", "openvino", "--openvino-ir", path])
                     for label, path in ir_list(args.openvino_ir)]
    return variants


def run_demo(args) -> dict:
    rows, details = [], {"load_before": _load(), "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        videos = [(args.video, args.height_size)]
        if args.device.startswith("cuda"):
            wide = widescreen_copy(args.video, args.frames, folder)
            videos = [(wide, 256), (wide, 368)]
        for video, height in videos:
            for label, engine in demo_variants(args):
                command = [sys.executable, "demo.py", "--checkpoint-path", args.checkpoint_path, "--video", video,
                           "--height-size", str(height), "--max-frames", str(args.frames), "--track", "--smooth",
                           "--output", os.path.join(folder, "out.mp4"), "--no-progress",
                           "--device", args.device] + engine + (["--half", "--channels-last"] if
                                                                args.device.startswith("cuda") else [])
                load = _load()
                result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                match, cpu = SUMMARY.search(result.stdout), CPU_TIME.search(result.stderr)
                details["runs"].append({"command": " ".join(command), "load_before": load, "load_after": _load(),
                                        "stderr_tail": result.stderr[-500:]})
                if result.returncode not in (0, 1) or not match:
                    rows.append([os.path.basename(video), height, label, "failed", "", "", "", "", "", ""])
                    continue
                frames, seconds, fps, network_ms, decoding_ms = match.groups()
                rows.append([os.path.basename(video), height, label, frames, fps,
                             f"{float(fps) / REFERENCE_DEMO_FPS:.1f}x", network_ms, decoding_ms,
                             cpu.group(1) if cpu else "", f"{load} / {_load()}"])
    details["load_after"] = _load()
    return {"title": _with_load("demo.py end to end (--track --smooth --output, no display); reference demo: "
                                f"{REFERENCE_DEMO_FPS} fps on vtest.avi on this machine type", details),
            "columns": ["video", "height", "engine", "frames", "fps", "vs reference", "network ms/frame",
                        "decoding ms/frame", "CPU ms/frame", "load before / after"],
            "rows": rows, "details": details}


# ---------------------------------------------------------------------------------------------------- register
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-path", required=True, help="lwpose checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: fp16, channels_last, compiled)")


def _int8_ir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--openvino-ir", nargs="*", metavar="[LABEL=]XML",
                        default=[DEFAULT_INT8_IR] if os.path.exists(DEFAULT_INT8_IR) else [],
                        help="also time OpenVINO on these IRs of the checkpoint's network, each a row labelled "
                             "LABEL or by its file name, e.g. an INT8 one from scripts/quantize.py (default: Open "
                             "Model Zoo's INT8 human-pose-estimation-0001 in ../shared when present; none with the "
                             "flag alone or '')")


def register(subparsers) -> None:
    decode = subparsers.add_parser("decode", help="decoding time per frame: real video maps and synthetic crowds")
    _common(decode)
    decode.add_argument("--video", default=DEFAULT_VIDEO)
    decode.add_argument("--frames", type=int, default=100)
    decode.add_argument("--height-size", type=int, default=256)
    decode.add_argument("--backend", default="auto", help="what makes the maps (not timed)")
    decode.add_argument("--crowds", type=int, nargs="+", default=[1, 5, 20, 50, 100])
    decode.add_argument("--crowd-image", default=DEFAULT_CROWD_IMAGE)
    decode.add_argument("--crowd-height", type=int, default=160,
                        help="input height for the crowd's model person (160: about 16 cells tall)")
    decode.add_argument("--repeats", type=int, default=20)
    decode.add_argument("--no-cold-compile", action="store_true",
                        help="skip timing a compilation from an empty numba cache (a fresh process, 10-30 s)")
    decode.set_defaults(run=run_decode)

    network = subparsers.add_parser("network", help="the network alone, per backend and input size")
    _common(network)
    network.add_argument("--sizes", nargs="+", default=["256x456", "368x656"], help="input HxW")
    network.add_argument("--repeats", type=int, default=20)
    network.add_argument("--warmup", type=int, default=3)
    _int8_ir(network)
    network.set_defaults(run=run_network)

    demo = subparsers.add_parser("demo", help="demo.py end to end on a video, per backend")
    _common(demo)
    demo.add_argument("--video", default=DEFAULT_VIDEO)
    demo.add_argument("--frames", type=int, default=300)
    demo.add_argument("--height-size", type=int, default=256)
    demo.add_argument("--backends", nargs="+", default=None, help="default: every installed one (CPU), torch (GPU)")
    _int8_ir(demo)
    demo.set_defaults(run=run_demo)


if __name__ == "__main__":
    sys.exit("run it through the benchmark entry point: python scripts/benchmark.py decode|network|demo "
             "--checkpoint-path C.pth")

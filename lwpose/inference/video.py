"""Video in, people out: frame sources (files, cameras, image lists), writers (annotated video, JSON lines), and
the pipelined loop that keeps reading, the network and decoding busy at the same time.

Pipeline: a reader thread decodes frames and prepares network inputs; the backend runs `backend.max_in_flight`
frames at once (OpenVINO's requests in its own threads, PyTorch and ONNX Runtime in a worker thread; all release
the GIL) with one more submitted and waiting, so it never idles; the caller's thread decodes people (numba
kernels, GIL released) and does whatever it wants with each result (tracking, drawing, writing) while the next
frames are in the network. Results come out in frame order.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import cv2
import numpy as np

from lwpose.errors import LwposeError
from lwpose.images import ImageReadError, read_image
from lwpose.inference.grouping import People

if TYPE_CHECKING:  # only named in annotations: opening a video should not wait for torch to load
    from lwpose.inference.backends import Backend
    from lwpose.inference.estimator import InputTransform, PoseEstimator

DEFAULT_CAMERA_FPS = 30.0


class VideoError(LwposeError, OSError):
    """A source or an output that cannot be used; the message names it."""


@dataclass
class Frame:
    index: int  # position in the source (images that cannot be read keep their position)
    image: np.ndarray
    time: float  # seconds from the start of the source
    name: str | None = None  # the file of an image list


class FrameSource:
    """Iterates `Frame`s. `frame_count` is None when unknown (cameras); `problems` collects what went wrong
    on the way (a stream that broke, images that could not be read), for the caller to report."""

    description = "source"
    frame_count: int | None = None
    fps: float = DEFAULT_CAMERA_FPS

    def __init__(self):
        self.problems: list[str] = []
        self.broken = False  # the source ended before its last frame

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class VideoSource(FrameSource):
    """A video file or a camera (by index) read with OpenCV."""

    def __init__(self, spec: str | int):
        super().__init__()
        self.camera = isinstance(spec, int)
        self.description = f"camera {spec}" if self.camera else f"video {spec}"
        if not self.camera:
            if not os.path.exists(spec):
                raise VideoError(f"{self.description} does not exist")
            if os.path.isdir(spec):
                raise VideoError(f"{self.description} is a folder (give its images as images)", settings=("images",))
        self.capture = cv2.VideoCapture(spec)
        if not self.capture.isOpened():
            self.capture.release()
            raise VideoError(f"{self.description} cannot be opened"
                             + (" (no such camera, or it is in use)" if self.camera
                                else " (not a video OpenCV can decode, or damaged)"))
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.camera else None
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else DEFAULT_CAMERA_FPS

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        started = time.monotonic()
        while True:
            try:
                ok, image = self.capture.read()
            except cv2.error as e:
                ok, image = False, None
                self.problems.append(f"{self.description}: frame {index} cannot be decoded ({e})")
            if not ok or image is None:
                break
            # a file's frames are evenly spaced; a camera's arrive when they arrive
            yield Frame(index, image, time.monotonic() - started if self.camera else index / self.fps)
            index += 1
        if index == 0:
            self.broken = True
            self.problems.append(f"{self.description} gave no frame"
                                 + (" (camera absent or not delivering)" if self.camera else " (empty or damaged)"))
        elif self.camera:  # a camera has no last frame: it stopped (unplugged, taken by another program)
            self.broken = True
            self.problems.append(f"{self.description} stopped delivering frames after frame {index - 1}")
        elif self.frame_count is not None and index < self.frame_count:
            self.broken = True
            self.problems.append(f"{self.description} broke off after frame {index - 1}: {index} of the "
                                 f"{self.frame_count} frames its header announces could be read (truncated or "
                                 "damaged file)")

    def close(self) -> None:
        self.capture.release()


class ImageListSource(FrameSource):
    """Still images in the order given; one that cannot be read is reported by name and skipped."""

    def __init__(self, paths: Sequence[str], fps: float = DEFAULT_CAMERA_FPS):
        super().__init__()
        if not paths:
            raise VideoError("no images given")
        self.paths = list(paths)
        self.description = f"{len(self.paths)} images"
        self.frame_count = len(self.paths)
        self.fps = fps

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                image = read_image(path)
            except ImageReadError as e:
                self.problems.append(f"{e}; skipped")
                continue
            yield Frame(index, image, index / self.fps, name=path)


def open_source(video: str | None = None, images: Sequence[str] | None = None) -> FrameSource:
    """`video`: a file, or a camera index ('0'); `images`: image files (a folder is expanded, sorted)."""
    if (video is None) == (images is None):
        raise VideoError("give either a video (or camera index) or a list of images")
    if video is not None:
        if video.isdigit() and not os.path.exists(video):
            return VideoSource(int(video))
        return VideoSource(video)
    paths: list[str] = []
    for path in images:
        if os.path.isdir(path):
            paths.extend(sorted(os.path.join(path, f) for f in os.listdir(path)
                                if os.path.splitext(f)[1].lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")))
        else:
            paths.append(path)
    return ImageListSource(paths)


# ----------------------------------------------------------------------------------------------------- writers
JSON_DECIMALS = 3  # a thousandth of a pixel and of a score
FOURCC_BY_EXTENSION = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoWriter:
    """An annotated video, opened on the first frame (its size is known then; a later frame of another size, as
    images of a list may be, is resized to it). `close` finalizes the file, so whatever was written before an
    error or an interruption stays playable."""

    def __init__(self, path: str, fps: float):
        extension = os.path.splitext(path)[1].lower()
        if extension not in FOURCC_BY_EXTENSION:
            raise VideoError(f"output video {path}: unknown extension '{extension}' "
                             f"(known: {', '.join(FOURCC_BY_EXTENSION)})")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise VideoError(f"output video {path}: folder {directory} does not exist")
        self.path, self.fps, self.fourcc = path, fps, FOURCC_BY_EXTENSION[extension]
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            height, width = image.shape[:2]
            self.size = (width, height)
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise VideoError(f"output video {self.path} cannot be written (codec {self.fourcc} unavailable or "
                                 "the folder is not writable)")
        if (image.shape[1], image.shape[0]) != self.size:  # OpenCV would drop it silently
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class JsonLinesWriter:
    """One JSON object per frame and line: frame index, time, people with id, score and keypoints by name.
    Each line is flushed as it is written, so the file is complete up to the last processed frame."""

    def __init__(self, path: str):
        try:
            self.file = open(path, "w")
        except OSError as e:
            raise VideoError(f"poses file {path} cannot be written: {e.strerror}") from None
        self.path = path

    def write(self, frame: Frame, people: People, ids: np.ndarray | None) -> None:
        entries = [{"id": None, **person} for person in people.to_dicts(ids, decimals=JSON_DECIMALS)]
        record = {"frame": frame.index, "time": round(frame.time, 4), "people": entries}
        if frame.name is not None:
            record["image"] = frame.name
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------------------------------------------- pipeline
@dataclass
class FrameResult:
    frame: Frame
    people: People
    network_seconds: float
    decode_seconds: float


@dataclass
class StreamTimes:
    """Per-frame totals of the loop, filled as it goes; `started` is when the first frame entered the timed
    pipeline (after the network was prepared for the frame size), `cpu_started` the process's CPU time then (all
    threads: on a machine shared with other work, CPU time per frame is what the pipeline costs, where wall-clock
    fps also depends on what else runs)."""

    frames: int = 0
    network: float = 0.0
    decoding: float = 0.0
    started: float | None = None
    cpu_started: float | None = None
    warm_up: float = 0.0


_END = object()


def _read_ahead(source: FrameSource, estimator: PoseEstimator, out: queue.Queue, stop: threading.Event,
                max_frames: int | None) -> None:
    try:
        for frame in source:
            if stop.is_set() or (max_frames is not None and frame.index >= max_frames):
                break
            network_input, transform = estimator.prepare(frame.image)
            while not stop.is_set():
                try:
                    out.put((frame, network_input, transform), timeout=0.1)
                    break
                except queue.Full:
                    continue
    except BaseException as e:  # handed to the consumer, which reports it after what was already done
        out.put(e)
    out.put(_END)


def estimate_stream(source: FrameSource, estimator: PoseEstimator, backend: Backend, times: StreamTimes,
                    max_frames: int | None = None, read_ahead: int = 4) -> Iterator[FrameResult]:
    """People in every frame of `source`, in order, with the reading, network and decoding of different
    frames overlapping. Stops early when the consumer stops iterating (the reader thread is stopped too)."""
    frames: queue.Queue = queue.Queue(maxsize=read_ahead)
    stop = threading.Event()
    reader = threading.Thread(target=_read_ahead, args=(source, estimator, frames, stop, max_frames),
                              name="frame-reader", daemon=True)
    reader.start()
    pending: deque[tuple[Frame, InputTransform, object]] = deque()

    def finish_oldest() -> FrameResult:
        frame, transform, future = pending.popleft()
        heatmaps, pafs, network_seconds = future.result()
        start = time.perf_counter()
        people = estimator.decode_maps(heatmaps[0], pafs[0], transform)
        decode_seconds = time.perf_counter() - start
        times.frames += 1
        times.network += network_seconds
        times.decoding += decode_seconds
        return FrameResult(frame, people, network_seconds, decode_seconds)

    try:
        first = True
        while True:
            item = frames.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            frame, network_input, transform = item
            batch = network_input[None]
            if first:
                # Compile for this frame size (OpenVINO) or warm caches (torch) before the clock starts.
                start = time.perf_counter()
                backend.submit(batch).result()  # the thread that will run every frame (CUDA graphs care)
                times.warm_up = time.perf_counter() - start
                times.started = time.perf_counter()
                times.cpu_started = time.process_time()
                first = False
            if len(pending) > backend.max_in_flight:  # all running and one waiting: take the oldest out
                yield finish_oldest()
            pending.append((frame, transform, backend.submit(batch)))
        while pending:
            yield finish_oldest()
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                frames.get(timeout=0.05)
            except queue.Empty:
                pass
        for _, _, future in pending:
            if not future.cancel():  # already running: let it finish before the backend is closed
                future.exception()


# ------------------------------------------------------------------------------------------------------- track
@dataclass
class TrackedFrame:
    """One frame's result: the frame itself (`index`, `time`, `image`, and `name` for an image list), the people
    in image pixels, and their track ids (None when tracking is off)."""

    index: int
    time: float
    image: np.ndarray
    people: People
    ids: np.ndarray | None
    name: str | None = None


class PoseStream:
    """The people of every frame of a video, a camera or a list of images, tracked and smoothed as asked:
    `track(...)` makes one. Iterating runs the pipelined loop once; `source` tells what was read (`frame_count`,
    `fps`, and `problems` met on the way), `times` what it cost."""

    def __init__(self, source: FrameSource, estimator: PoseEstimator, track: bool = True, smooth: bool = False,
                 max_frames: int | None = None):
        from lwpose.inference.smoothing import PoseSmoother
        from lwpose.inference.tracking import PoseTracker

        self.source = source
        self.estimator = estimator
        self.max_frames = max_frames
        self.times = StreamTimes()
        self.tracker = PoseTracker() if (track or smooth) else None
        self.smoother = PoseSmoother() if smooth else None

    def __iter__(self) -> Iterator[TrackedFrame]:
        for result in estimate_stream(self.source, self.estimator, self.estimator.backend, self.times,
                                      self.max_frames):
            frame, people = result.frame, result.people
            ids = self.tracker.update(people, frame.index) if self.tracker else None
            if self.smoother:
                people = self.smoother(people, ids, frame.time)
            yield TrackedFrame(frame.index, frame.time, frame.image, people, ids, frame.name)

    @property
    def frame_count(self) -> int | None:
        """How many frames iterating gives at most (None for a camera)."""
        total = self.source.frame_count
        if total is not None and self.max_frames is not None:
            total = min(total, self.max_frames)
        return total

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "PoseStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(source: "str | int | Sequence[str] | FrameSource", estimator: PoseEstimator, smooth: bool = False,
          ids: bool = True, max_frames: int | None = None) -> PoseStream:
    """People frame by frame: `source` is a video file, a camera index, a list of image files or folders, or a
    FrameSource. Each frame's people get track `ids` that stay with them across frames (unless `ids=False`), and
    with `smooth` One-Euro filtered keypoints. Reading, the network and decoding of different frames overlap.

        for frame in lwpose.track("street.mp4", estimator, smooth=True):
            print(frame.index, frame.ids, frame.people.to_dicts())
    """
    if not isinstance(source, FrameSource):
        if isinstance(source, int):
            source = open_source(video=str(source))
        elif isinstance(source, (str, os.PathLike)):
            source = open_source(video=os.fspath(source))
        else:
            source = open_source(images=[os.fspath(p) for p in source])
    return PoseStream(source, estimator, track=ids, smooth=smooth, max_frames=max_frames)

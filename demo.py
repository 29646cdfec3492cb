"""Poses in a video, a camera or images: annotated video and/or one JSON line per frame out.

    python demo.py --checkpoint-path hpe0001.pth --video street.mp4 --track --smooth --output out.mp4
    python demo.py --checkpoint-path hpe0001.pth --video 0 --display            # camera 0
    python demo.py --checkpoint-path hpe0001.pth --images photos/ --save-json poses.jsonl
    python demo.py --checkpoint-path hpe0001.pth --images photos/ --output-dir annotated/   # an image per image

Ends with one line: `processed N frames in T s: X fps (network A ms, decoding B ms per frame)`, where T runs
from the first frame to the last (model loading, ONNX export and kernel compilation before it are reported
separately), A is the network time of one frame (frames overlap, so A can exceed 1000 / X) and B the decoding.
Exit status: 0 done, 1 the input broke off or was interrupted (what was written so far is kept, playable and
complete up to the last processed frame), 2 nothing could start (the message says why).
"""
import argparse
import os
import signal
import sys
import time

from tqdm import tqdm

from lwpose.inference.drawing import PoseDrawer

DISPLAY_WINDOW = "lwpose"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-path", help="lwpose checkpoint (see scripts/import_weights.py)")
    parser.add_argument("--onnx", help="an ONNX export to run (scripts/export_onnx.py) instead of exporting the "
                                       "checkpoint on the fly; enough on its own for onnxruntime/openvino")
    parser.add_argument("--openvino-ir", help="an OpenVINO IR (.xml) to run instead, e.g. an INT8 one "
                                              "(scripts/quantize.py); one made outside lwpose (Open Model Zoo's "
                                              "human-pose-estimation-0001) takes its keypoint set from "
                                              "--checkpoint-path")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file, or camera index (0, 1, ...)")
    source.add_argument("--images", nargs="+", help="image files or folders, processed in order")
    parser.add_argument("--height-size", type=int, default=256, help="network input height (default 256)")
    parser.add_argument("--track", action="store_true", help="give people ids that stay with them across frames")
    parser.add_argument("--smooth", action="store_true", help="One-Euro filtering of keypoints (implies --track)")
    parser.add_argument("--output", help="annotated video to write (.mp4, .avi, ...)")
    parser.add_argument("--output-dir", help="write each annotated frame as an image here, at its own size: an image "
                                             "list's under their own names, a video's as frame_000000.png, ...")
    parser.add_argument("--save-json", help="poses to write, one JSON line per frame (.jsonl)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--backend", default="auto",
                        help="inference engine: torch, onnxruntime, openvino, or auto (default) = the fastest "
                             "installed (openvino, then onnxruntime, then torch)")
    parser.add_argument("--device", default="cpu", help="torch/onnxruntime device (cpu, cuda, cuda:1)")
    parser.add_argument("--half", action="store_true", help="torch on a GPU: fp16")
    parser.add_argument("--channels-last", action="store_true", help="torch: channels_last memory layout")
    parser.add_argument("--compile", action="store_true", help="torch: torch.compile (CUDA graphs on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the engine's)")
    parser.add_argument("--upsample", type=int, default=1,
                        help="heatmap upsampling before peaks (default 1: refined around each peak instead)")
    parser.add_argument("--display", action="store_true", help="show the frames in a window (q or Esc quits)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.checkpoint_path is None and args.onnx is None and args.openvino_ir is None:
        parser.error("give the model: --checkpoint-path, --onnx or --openvino-ir")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class StopRequest:
    """Ctrl+C or SIGTERM while frames flow: the frame in hand is finished (drawn, written to the video and the
    JSON lines alike) and the loop stops after it; a second signal interrupts at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class ImageFolderWriter:
    """Annotated frames as image files in one folder: an image keeps its file name (the type too, where OpenCV
    writes it; else PNG), a name met twice gets its frame index in front, a video frame is frame_NNNNNN.png."""

    def __init__(self, folder: str):
        import cv2

        self._cv2 = cv2
        self.folder = folder
        self.written = 0
        self._names: set[str] = set()
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            from lwpose.inference.video import VideoError

            raise VideoError(f"--output-dir {folder}: cannot make the folder ({e.strerror})") from None

    def _file_name(self, frame) -> str:
        if frame.name is None:
            return f"frame_{frame.index:06d}.png"
        name = os.path.basename(frame.name)
        stem, extension = os.path.splitext(name)
        if not self._cv2.haveImageWriter(name):
            name = stem + ".png"
        if name in self._names:
            name = f"{frame.index:06d}_{name}"
        return name

    def write(self, frame) -> None:
        name = self._file_name(frame)
        path = os.path.join(self.folder, name)
        if not self._cv2.imwrite(path, frame.image):
            from lwpose.inference.video import VideoError

            raise VideoError(f"cannot write {path}")
        self._names.add(name)
        self.written += 1

    def close(self) -> None:
        pass


class Display:
    """A window when asked for and possible; otherwise says why once and stays off."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def show(self, image) -> bool:
        """False when the user asked to quit."""
        if not self.enabled:
            return True
        import cv2

        try:
            cv2.imshow(DISPLAY_WINDOW, image)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            print("warning: no display available (headless OpenCV or no screen); --display ignored",
                  file=sys.stderr)
            self.enabled = False
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            import cv2

            cv2.destroyAllWindows()


def main(argv=None) -> int:
    args = parse_args(argv)
    # `kill` finalizes the outputs like Ctrl+C does; Ctrl+C is set explicitly because a process started in the
    # background by a shell inherits SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    setup_start = time.perf_counter()
    from lwpose.errors import LwposeError, flag_hint
    from lwpose.inference.video import JsonLinesWriter, VideoError, VideoWriter, open_source, track

    try:
        source = open_source(args.video, args.images)
    except VideoError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    # The model loads only once the input is known to open, so a mistyped path fails at once.
    try:
        estimator = make_estimator(args)
        video_writer = VideoWriter(args.output, source.fps) if args.output else None
        image_writer = ImageFolderWriter(args.output_dir) if args.output_dir else None
        json_writer = JsonLinesWriter(args.save_json) if args.save_json else None
    except (LwposeError, ValueError) as e:
        source.close()
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    keypoint_set, backend = estimator.keypoint_set, estimator.backend
    compile_seconds = estimator.warm_up()
    print(f"{source.description}: {backend.describe()}, height {args.height_size}; set up in "
          f"{time.perf_counter() - setup_start:.1f} s (numba kernels {compile_seconds:.2f} s)", file=sys.stderr)

    stream = track(source, estimator, smooth=args.smooth, ids=args.track or args.smooth, max_frames=args.max_frames)
    display = Display(args.display)
    drawer = PoseDrawer(keypoint_set) if (video_writer or image_writer or display.enabled) else None
    times = stream.times
    status = 0
    frames_done = 0  # drawn and written (the stream's count includes a frame estimated when a second signal came)
    finished = finished_cpu = None
    total = stream.frame_count
    progress = tqdm(total=total, unit="frame", disable=args.no_progress or total is None, dynamic_ncols=True)
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for frame in stream:
            if drawer:
                drawer.draw(frame.image, frame.people, frame.ids)
            if video_writer:
                video_writer.write(frame.image)
            if image_writer:
                image_writer.write(frame)
            if json_writer:
                json_writer.write(frame, frame.people, frame.ids)
            progress.update()
            frames_done += 1
            if stop.requested:
                raise KeyboardInterrupt
            if not display.show(frame.image):
                break
        finished, finished_cpu = time.perf_counter(), time.process_time()
    except KeyboardInterrupt:
        finished, finished_cpu = time.perf_counter(), time.process_time()
        status = 1
        progress.write("interrupted: keeping what was written so far", file=sys.stderr)
    except VideoError as e:
        finished, finished_cpu = time.perf_counter(), time.process_time()
        status = 2
        progress.write(f"error: {e}{flag_hint(e)}", file=sys.stderr)
    finally:
        progress.close()
        for closable in (video_writer, image_writer, json_writer, stream, backend, display):
            if closable is not None:
                closable.close()
    for problem in source.problems:
        print(f"warning: {problem}", file=sys.stderr)
        status = max(status, 1 if source.broken else 0)
    if video_writer and video_writer.frames:
        print(f"wrote {video_writer.frames} frames to {args.output}", file=sys.stderr)
    if image_writer and image_writer.written:
        print(f"wrote {image_writer.written} annotated images to {args.output_dir}", file=sys.stderr)
    if json_writer:
        print(f"wrote poses of {frames_done} frames to {args.save_json}", file=sys.stderr)
    elapsed = finished - times.started if times.started is not None and finished is not None else 0.0
    if times.cpu_started is not None and finished_cpu is not None and times.frames:
        cpu_ms = 1000 * (finished_cpu - times.cpu_started) / times.frames
        print(f"CPU time {cpu_ms:.1f} ms per frame (all threads; {os.cpu_count()} cores allow at most "
              f"{1000 * os.cpu_count() / cpu_ms:.1f} fps at this cost)", file=sys.stderr)
    per_frame = 1000.0 / max(times.frames, 1)
    fps = frames_done / elapsed if elapsed > 0 else 0.0
    print(f"processed {frames_done} frames in {elapsed:.1f} s: {fps:.1f} fps "
          f"(network {times.network * per_frame:.1f} ms, decoding {times.decoding * per_frame:.1f} ms per frame)")
    return status


def make_estimator(args):
    """The model the flags name, through the same API a Python user calls: an OpenVINO IR or an ONNX export
    (with the checkpoint's keypoint set when one is given too), or the checkpoint itself."""
    from lwpose.inference.estimator import PoseEstimator

    model = args.openvino_ir or args.onnx or args.checkpoint_path
    keypoint_set = None
    if model != args.checkpoint_path and args.checkpoint_path:
        from lwpose.interop.checkpoint import load_checkpoint

        keypoint_set = load_checkpoint(args.checkpoint_path)["keypoint_set"]
    return PoseEstimator.from_checkpoint(model, args.backend, args.device, keypoint_set=keypoint_set,
                                         threads=args.threads, half=args.half, channels_last=args.channels_last,
                                         compile=args.compile, height_size=args.height_size, decode_at="map",
                                         upsample=args.upsample)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # during set-up, before anything was written
        print("interrupted", file=sys.stderr)
        sys.exit(130)

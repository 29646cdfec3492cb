"""Turn an lwpose checkpoint into an INT8 OpenVINO IR (post-training quantization with NNCF), its accuracy measured.

    python scripts/quantize.py --checkpoint-path model.pth --calibration frames/ street.mp4 --output model_int8.xml
    python scripts/quantize.py --checkpoint-path model.pth --calibration train.json --images-folder train/ \\
        --val-labels val.json --val-images-folder val/ --max-ap-drop 0.01 --output model_int8.xml

Calibration images (folders of images, image files, videos, COCO labels files with --images-folder) are prepared
as demo.py prepares frames; use what the model will see. With --val-labels, the layers whose int8 form costs the
most are kept in float until the AP lost (val.py --decode-at map at --val-height-size) is at most --max-ap-drop.
The IR carries the keypoint set: `demo.py --openvino-ir model_int8.xml` and `val.py --openvino-ir model_int8.xml`
need no checkpoint. docs/int8.md has the figures.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import LwposeError  # noqa: E402
from lwpose.interop.quantize import (DEFAULT_NUM_SAMPLES, DEFAULT_PRESET, PRESETS, QuantizationError,  # noqa: E402
                                     calibration_set, export_for_quantization, quantize_checkpoint, validation_data)

DEMO_HEIGHT = 256  # demo.py's --height-size default


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-path", required=True, help="lwpose checkpoint to quantize")
    parser.add_argument("--calibration", required=True, nargs="+", metavar="PATH",
                        help="folders of images, image files, videos, or COCO labels files (with --images-folder); "
                             "the samples are shared equally between them")
    parser.add_argument("--images-folder", default=None, help="folder the images of a COCO labels file are in")
    parser.add_argument("--output", required=True, help="the IR to write (.xml, with its .bin beside it)")
    parser.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES,
                        help=f"calibration images in all (default {DEFAULT_NUM_SAMPLES})")
    parser.add_argument("--height-size", type=int, default=DEMO_HEIGHT,
                        help=f"network input height of the calibration images (default {DEMO_HEIGHT}, the demo's)")
    parser.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                        help=f"NNCF preset: asymmetric activation ranges (mixed) or symmetric ones (performance: a "
                             f"few %% faster, less exact); default {DEFAULT_PRESET}")
    accuracy = parser.add_argument_group("accuracy control")
    accuracy.add_argument("--val-labels", default=None, help="COCO keypoint ground truth to measure AP on")
    accuracy.add_argument("--val-images-folder", default=None, help="folder the --val-labels images are in")
    accuracy.add_argument("--max-ap-drop", type=float, default=0.01,
                          help="AP the INT8 model may lose against the float one (default 0.01)")
    accuracy.add_argument("--val-height-size", type=int, default=None,
                          help="input height for the AP (default: --height-size)")
    accuracy.add_argument("--val-flip", action="store_true", help="average with the mirrored image, as val.py --flip")
    accuracy.add_argument("--val-max-images", type=int, default=None, help="score only the first N images")
    parser.add_argument("--timing-frames", type=int, default=30,
                        help="frames each model runs to compare CPU time per frame (0: no timing)")
    parser.add_argument("--report", default=None, help="also write the report here (JSON)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if bool(args.val_labels) != bool(args.val_images_folder):
        parser.error("accuracy control needs both --val-labels and --val-images-folder")
    if any(path.lower().endswith(".json") for path in args.calibration) and not args.images_folder:
        parser.error("a COCO labels file in --calibration needs --images-folder")
    if not 0 <= args.max_ap_drop < 1:
        parser.error("--max-ap-drop is an AP difference between 0 and 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    try:
        # The checkpoint first: a file that cannot be exported fails before any image is read.
        _, keypoint_set, _ = export_for_quantization(args.checkpoint_path)
        calibration = calibration_set(args.calibration, args.height_size, args.num_samples, args.images_folder,
                                      progress)
        validation = None
        if args.val_labels:
            validation = validation_data(args.val_labels, args.val_images_folder, keypoint_set,
                                         args.val_height_size or args.height_size, args.val_flip,
                                         args.val_max_images, progress)
        for problem in calibration.skipped:
            print(f"warning: {problem}; skipped", file=sys.stderr)
        print(f"calibrating on {len(calibration)} images at height {args.height_size}", flush=True)
        report = quantize_checkpoint(args.checkpoint_path, calibration, args.output, validation, args.max_ap_drop,
                                     args.preset, args.timing_frames, progress=not args.no_progress)
    except QuantizationError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    except LwposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nwrote {report.output_path} (+ .bin): {report.weighted_layers - len(report.float_layers)} of "
          f"{report.weighted_layers} weighted layers in int8, calibrated on {report.calibration_samples} images "
          f"({report.seconds:.0f} s)")
    print("layers kept in float: " + (", ".join(report.float_layers) if report.float_layers else "none"))
    if report.fp32_ap is not None:
        print(f"AP on {args.val_labels} (height {validation.height_size}{', flip' if validation.flip else ''}, "
              f"decoded at map resolution): fp32 {report.fp32_ap:.3f}, INT8 {report.int8_ap:.3f} "
              f"({report.int8_ap - report.fp32_ap:+.3f})")
    for name, timing in report.timing.items():
        print(f"{name}: {timing['wall_ms']:.1f} ms wall, CPU time {timing['cpu_ms']:.1f} ms per frame "
              f"(OpenVINO, input {timing['input']}, {timing['frames']} frames)")
    if len(report.timing) == 2:
        fp32, int8 = report.timing["fp32"], report.timing["int8"]
        print(f"INT8 / fp32: {int8['wall_ms'] / fp32['wall_ms']:.2f}x wall, {int8['cpu_ms'] / fp32['cpu_ms']:.2f}x CPU "
              "time per frame")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    return 0


def flag_hint(error: Exception) -> str:
    text = str(error)
    if "readable calibration images" in text or "calibration data" in text or "calibration folder" in text:
        return " (--calibration)"
    if text.startswith("checkpoint") or "cannot be exported" in text:
        return " (--checkpoint-path)"
    if "validation" in text or "ground truth" in text:
        return " (--val-labels / --val-images-folder)"
    return ""


if __name__ == "__main__":
    sys.exit(main())

"""Export a checkpoint's network to ONNX, with dynamic batch, height and width, and check it against PyTorch.

    python scripts/export_onnx.py --checkpoint-path hpe0001.pth --output hpe0001.onnx

The model takes the network's input (BGR, (pixel - 128) / 256, NCHW float32, height and width multiples of 8)
and returns `heatmaps` and `pafs` of the last stage; the keypoint set rides along in its metadata. Unless
--no-check is given, ONNX Runtime runs it on an input of another size than the export's and the largest
difference from PyTorch is printed.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import flag_hint  # noqa: E402
from lwpose.inference.backends import BackendUnavailable, OnnxRuntimeBackend  # noqa: E402
from lwpose.inference.torch_backend import TorchBackend  # noqa: E402
from lwpose.interop.checkpoint import CheckpointError, load_model  # noqa: E402
from lwpose.interop.onnx_export import OPSET, export_onnx  # noqa: E402

CHECK_SIZE = (368, 496)  # differs from the export's size on purpose: the axes must really be free


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-path", required=True, help="lwpose checkpoint")
    parser.add_argument("--output", required=True, help="ONNX file to write")
    parser.add_argument("--height", type=int, default=256, help="height of the example input traced (default 256)")
    parser.add_argument("--width", type=int, default=456, help="width of the example input traced (default 456)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    args = parser.parse_args(argv)
    try:
        network, keypoint_set, _ = load_model(args.checkpoint_path)
        export_onnx(network, keypoint_set, args.output, (args.height, args.width), args.opset)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: input NCHW with free batch, height and width; outputs heatmaps "
          f"({keypoint_set.num_heatmaps} channels) and pafs ({keypoint_set.num_pafs} channels), keypoint set "
          f"'{keypoint_set.name}'")
    if args.no_check:
        return 0
    try:
        onnx_backend = OnnxRuntimeBackend(args.output)
    except BackendUnavailable as e:
        print(f"not checked: {e}")
        return 0
    batch = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 3, *CHECK_SIZE)).astype(np.float32)
    expected = TorchBackend(network)(batch)
    got = onnx_backend(batch)
    diff = max(float(np.abs(e - g).max()) for e, g in zip(expected, got))
    print(f"checked with onnxruntime on a 2x3x{CHECK_SIZE[0]}x{CHECK_SIZE[1]} input: max abs difference from "
          f"PyTorch {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

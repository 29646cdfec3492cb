"""Import pretrained weights as an lwpose checkpoint (weights + keypoint set + architecture).

    python scripts/import_weights.py --openvino-xml human-pose-estimation-0001.xml --output hpe0001.pth
    python scripts/import_weights.py --reference-checkpoint checkpoint_iter_370000.pth --output lwop.pth
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import flag_hint  # noqa: E402
from lwpose.interop.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from lwpose.interop.importers import import_openvino_ir, import_reference_checkpoint  # noqa: E402
from lwpose.interop.openvino_ir import IRError  # noqa: E402
from lwpose.keypoints import KeypointSetError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--openvino-xml", help="OpenVINO IR .xml (its .bin beside it)")
    source.add_argument("--reference-checkpoint", help="Lightweight OpenPose checkpoint (state_dict layout)")
    parser.add_argument("--output", required=True, help="lwpose checkpoint to write")
    parser.add_argument("--keypoints", default="lwop18", help="keypoint set of the model (default lwop18)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a reference checkpoint that needs full unpickling (only for files you trust)")
    args = parser.parse_args(argv)
    try:
        if args.openvino_xml:
            checkpoint = import_openvino_ir(args.openvino_xml, args.keypoints)
        else:
            checkpoint = import_reference_checkpoint(args.reference_checkpoint, args.keypoints, args.trust_pickle)
        save_checkpoint(checkpoint, args.output)
    except (IRError, CheckpointError, KeypointSetError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    arch = checkpoint["architecture"]
    print(f"wrote {args.output}: variant {arch['variant']}, {arch['num_refinement_stages']} refinement stage(s), "
          f"keypoint set '{checkpoint['keypoint_set']['name']}' ({arch['num_heatmaps']} heatmaps, "
          f"{arch['num_pafs']} PAFs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

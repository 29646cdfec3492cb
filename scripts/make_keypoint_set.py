"""Build a union keypoint set from several sets and write it as a keypoint-set JSON file every command accepts.

    python scripts/make_keypoint_set.py --sets lwop18 aic mpii \
        --same aic:head_top mpii:head_top --same lwop18:neck mpii:thorax \
        --drop mpii:pelvis mpii:upper_neck --name lwop18_head_top --output lwop18_head_top.json
    python scripts/make_keypoint_set.py --spec union.json --output union_set.json
    python scripts/make_keypoint_set.py --classes person=coco animal=ap10k --output people_animals.json

The first set is the base: its keypoints, limbs and PAF channels come first and unchanged (so a model of it can grow
into the union). Keypoints with the same name are one keypoint; `--same` makes differently named ones one (the first
name is kept, the others become aliases); `--drop` leaves keypoints of the other sets out. The limbs joining the new
keypoints are carried from the sets they come from unless `--limb` lists them. Left/right flip pairs are derived from
the names (or carried from the sets), each keypoint keeps the OKS sigma of the first set that has it.

`--classes NAME=SET ...` builds a multi-class set instead (lwpose/keypoints/classes.py): one class per pair, each with
the set's own keypoints, limbs, root and sigmas; the first class keeps its channel names, the others' channels are
named `class/keypoint`. `--share A:KP B:KP` makes two classes' keypoints one channel.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import flag_hint  # noqa: E402
from lwpose.keypoints import KeypointSet, KeypointSetError, load_keypoint_set  # noqa: E402
from lwpose.keypoints.union import union_set_data  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=None,
                        help="keypoint sets to combine (shipped names or JSON files), the base first")
    parser.add_argument("--same", nargs="+", action="append", default=[], metavar="SET:KEYPOINT",
                        help="keypoints of different sets that are one point; repeatable")
    parser.add_argument("--drop", nargs="+", action="extend", default=[], metavar="SET:KEYPOINT",
                        help="keypoints of the other sets to leave out of the union")
    parser.add_argument("--limb", nargs=2, action="append", default=None, metavar=("A", "B"),
                        help="a limb joining new keypoints (repeatable); default: carried from their sets")
    parser.add_argument("--midpoint", nargs=3, action="append", default=[], metavar=("NAME", "A", "B"),
                        help="NAME may be taken as the midpoint of A and B where a source lacks it; repeatable")
    parser.add_argument("--spec", default=None, help="the union as JSON ({'sets', 'same', 'drop', 'limbs', "
                                                      "'derived', 'name'}, as in a mix recipe), instead of the flags")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME=SET",
                        help="a multi-class set instead: one class per NAME=SET (a shipped name or a JSON file), "
                             "the base first")
    parser.add_argument("--share", nargs="+", action="append", default=[], metavar="CLASS:KEYPOINT",
                        help="with --classes: keypoints of different classes that are one channel; repeatable")
    parser.add_argument("--name", default=None, help="name of the new set (default: the sets' names joined)")
    parser.add_argument("--output", required=True, help="keypoint-set JSON file to write")
    return parser.parse_args(argv)


def spec_from_args(args) -> tuple[dict, str]:
    if args.spec:
        try:
            with open(args.spec) as f:
                spec = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise KeypointSetError(f"union spec {args.spec}: {e}") from None
        if args.name and isinstance(spec, dict):
            spec["name"] = args.name
        return spec, f"union spec {args.spec}"
    if not args.sets:
        raise KeypointSetError("give --sets (two or more keypoint sets) or --spec")
    spec = {"sets": args.sets, "same": args.same, "drop": args.drop}
    if args.limb is not None:
        spec["limbs"] = args.limb
    if args.midpoint:
        spec["derived"] = {name: [a, b] for name, a, b in args.midpoint}
    if args.name:
        spec["name"] = args.name
    return spec, "make_keypoint_set.py arguments (--same, --drop, --limb as 'same', 'drop', 'limbs')"


def classes_from_args(args) -> dict:
    """The multi-class set description `--classes NAME=SET ...` (and `--share`) ask for."""
    classes = []
    for pair in args.classes:
        name, separator, set_spec = pair.partition("=")
        if not separator or not name or not set_spec:
            raise KeypointSetError(f"--classes {pair}: expected NAME=SET (e.g. person=coco)")
        classes.append({**load_keypoint_set(set_spec).to_dict(), "name": name})
    data = {"name": args.name or "_".join(c["name"] for c in classes), "classes": classes}
    if args.share:
        data["shared"] = args.share
    return data


def write_classes(args) -> int:
    try:
        data = classes_from_args(args)
        keypoint_set = KeypointSet.from_dict(data, source="make_keypoint_set.py --classes")
    except KeypointSetError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    keypoint_set.save(args.output)
    print(f"wrote {args.output}: keypoint set '{keypoint_set.name}', {keypoint_set.num_classes} classes ("
          + ", ".join(f"{c.name}: {len(c.channels)} keypoints, {len(c.limbs)} limbs" for c in keypoint_set.classes)
          + f"), {keypoint_set.num_heatmaps} heatmaps, {keypoint_set.num_pafs} PAFs")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.classes:
        return write_classes(args)
    try:
        spec, where = spec_from_args(args)
        data = union_set_data(spec, where)
        keypoint_set = KeypointSet.from_dict(data, source=where)
    except KeypointSetError as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    directory = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(directory, exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    new = keypoint_set.keypoints[load_keypoint_set(spec["sets"][0]).num_keypoints:]
    print(f"wrote {args.output}: keypoint set '{keypoint_set.name}', {keypoint_set.num_keypoints} keypoints "
          f"({len(new)} new: {', '.join(new) or 'none'}), {keypoint_set.num_limbs} limbs "
          f"({keypoint_set.num_heatmaps} heatmaps, {keypoint_set.num_pafs} PAFs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

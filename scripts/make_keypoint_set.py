"""Look at a keypoint set's derived tables, or build a union keypoint set from several sets.

    python scripts/make_keypoint_set.py --show coco                            # every table derived from a set
    python scripts/make_keypoint_set.py --show my_set.json --picture my_set.png  # and its skeleton drawn
    python scripts/make_keypoint_set.py --sets lwop18 aic mpii \
        --same aic:head_top mpii:head_top --same lwop18:neck mpii:thorax \
        --drop mpii:pelvis mpii:upper_neck --name lwop18_head_top --output lwop18_head_top.json
    python scripts/make_keypoint_set.py --spec union.json --output union_set.json
    python scripts/make_keypoint_set.py --classes person=coco animal=ap10k --output people_animals.json

`--show` prints what the code derives from a set file: the heatmap channels (with sides, sigmas, aliases and flip
partners), the limbs with their PAF channels, the flip pairs and permutation, the order people are assembled in, the
fill-in limbs and the limbs with no mirror. `--picture` draws the skeleton as grouping walks it: the root on top, each
row one limb further from it, keypoints and limbs in drawing.py's side colours (the person's left on the picture's
right, as a person facing the camera), fill-in limbs dashed, limbs without a mirror marked.

Building: the first set is the base: its keypoints, limbs and PAF channels come first and unchanged (so a model of it
can grow into the union). Keypoints with the same name are one keypoint; `--same` makes differently named ones one
(the first name is kept, the others become aliases); `--drop` leaves keypoints of the other sets out. The limbs
joining the new keypoints are carried from the sets they come from unless `--limb` lists them. Left/right flip pairs
are derived from the names (or carried from the sets), each keypoint keeps the OKS sigma of the first set that has it.

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
    parser.add_argument("--show", default=None, metavar="SET_OR_JSON",
                        help="print every table derived from this keypoint set (a shipped name or a JSON file)")
    parser.add_argument("--picture", default=None, metavar="PNG",
                        help="with --show: draw the skeleton into this image file")
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
    parser.add_argument("--output", default=None, help="keypoint-set JSON file to write (building a union)")
    args = parser.parse_args(argv)
    if args.show is None and args.output is None:
        parser.error("give --show SET (look at a set) or --output FILE (build a union, or with --classes a "
                     "multi-class set)")
    if args.picture and args.show is None:
        parser.error("--picture draws the set given with --show")
    return args


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


# ------------------------------------------------------------------- --show
def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [[str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return lines


def limb_name(keypoint_set: KeypointSet, limb: int) -> str:
    a, b = keypoint_set.limbs[limb]
    return f"{a}-{b}"


def describe_set(ks: KeypointSet) -> str:
    """Every table the code derives from the set, as text."""
    partner = {a: b for a, b in ks.flip_pairs} | {b: a for a, b in ks.flip_pairs}
    aliases = {name: ", ".join(v) for name, v in ks.aliases.items()}
    derived = {name: " + ".join(rule.get("midpoint_of", ())) for name, rule in ks.derived_keypoints.items()}
    lines = [f"keypoint set '{ks.name}' ({ks.source})" + (f": {ks.description}" if ks.description else ""),
             f"{ks.num_keypoints} keypoints, {ks.num_limbs} limbs: the network predicts {ks.num_heatmaps} heatmaps "
             f"(the keypoints, then the background) and {ks.num_pafs} PAF channels (x and y per limb)",
             f"root (grouping starts here): {', '.join(ks.root)}", "",
             "heatmap channels:"]
    rows = [[i, name, ks.sides[i], f"{ks.sigmas[i]:g}", ks.keypoints[partner[i]] if i in partner else "-",
             aliases.get(name, "-"), f"midpoint of {derived[name]}" if name in derived else "-"]
            for i, name in enumerate(ks.keypoints)]
    rows.append([ks.background_channel, "(background)", "-", "-", "-", "-", "-"])
    lines += _table(["channel", "keypoint", "side", "sigma", "flips to", "aliases", "derived"], rows)
    lines += ["", "limbs (grouping order; the PAF points from the first keypoint to the second):"]
    step = {int(limb): n for n, limb in enumerate(ks.assembly_order)}
    rows = []
    for i, (a, b) in enumerate(ks.limbs):
        mirror, direction = ks.mirror_limbs[i]
        mirror_text = "none" if mirror < 0 else limb_name(ks, mirror) + (" (reversed)" if direction < 0 else "")
        rows.append([i, f"{a} -> {b}", f"{ks.limb_paf_channels[i][0]}, {ks.limb_paf_channels[i][1]}",
                     "yes" if ks.fill_in_mask[i] else "-", mirror_text, step[i]])
    lines += _table(["limb", "keypoints", "PAF channels (x, y)", "fill-in", "mirror limb", "assembly step"], rows)
    lines += ["", "flip pairs (channels swapped by a horizontal flip):"]
    lines += [f"  ({a}, {b}) {ks.keypoints[a]} <-> {ks.keypoints[b]}" for a, b in ks.flip_pairs] or \
        ["  none (no keypoint is named as one side of a pair; add 'flip_pairs' to the set if some are)"]
    lines.append(f"flip permutation (keypoint i of a flipped image is keypoint perm[i]): "
                 f"{ks.flip_permutation.tolist()}")
    if ks.can_flip:
        channels, signs = ks.paf_flip_channels
        lines.append(f"PAF flip (channel i of a flipped image is sign x channel source): source "
                     f"{channels.tolist()}, sign {[int(s) for s in signs]}")
    lines += ["", "assembly order (limbs in the order people are put together, from the root; fill-in limbs last):"]
    lines += [f"  {n + 1}. {limb_name(ks, int(limb))}" + (" (fill-in)" if ks.fill_in_mask[limb] else "")
              for n, limb in enumerate(ks.assembly_order)]
    fill_in = [limb_name(ks, i) for i in range(ks.num_limbs) if ks.fill_in_mask[i]]
    lines.append("fill-in limbs (only add a missing keypoint to a person, never start or join people): "
                 + (", ".join(fill_in) or "none"))
    unmirrored = [limb_name(ks, i) for i in ks.unmirrored_limbs]
    lines.append("limbs with no mirror: " + (", ".join(unmirrored) + " (val.py --flip takes their PAFs from the "
                                             "unflipped image only)" if unmirrored else "none (flipping is exact)"))
    return "\n".join(lines)


def skeleton_layout(ks: KeypointSet) -> dict[int, tuple[float, int]]:
    """(x, row) per keypoint: rows are limbs away from the root along the limbs grouping walks (fill-in limbs
    last); the person's right side to the left of the centre line and the left side to its right, mirror pairs
    level and symmetric."""
    row = {ks.index[name]: 0 for name in ks.root}
    parent = {}
    for limb in ks.assembly_order:
        a, b = (int(v) for v in ks.limb_keypoints[limb])
        for here, there in ((a, b), (b, a)):
            if here in row and there not in row:
                row[there], parent[there] = row[here] + 1, here
    partner = {a: b for a, b in ks.flip_pairs} | {b: a for a, b in ks.flip_pairs}
    x: dict[int, float] = {}
    for level in range(max(row.values()) + 1):
        members = sorted((k for k in row if row[k] == level), key=lambda k: (x.get(parent.get(k), 0.0), k))
        centre = [k for k in members if ks.sides[k] == "center"]
        for i, k in enumerate(centre):
            x[k] = i - (len(centre) - 1) / 2
        edge = (len(centre) - 1) / 2 if centre else -0.5
        # the person's left keypoints by how far right their parents are; each mirror partner opposite
        lefts = sorted((k for k in members if ks.sides[k] == "left"), key=lambda k: (abs(x.get(parent.get(k), 0)), k))
        for k in lefts:
            edge += 1
            x[k] = edge
            if partner.get(k) in members:
                x[partner[k]] = -edge
        for k in members:
            if k not in x:  # a right keypoint whose partner is on another row
                edge += 1
                x[k] = -edge
    return {k: (x[k], row[k]) for k in row}


def draw_skeleton(ks: KeypointSet, path: str) -> tuple[int, int]:
    """The skeleton as a PNG (or any image type OpenCV writes, by the extension); returns its (height, width)."""
    import cv2
    import numpy as np

    from lwpose.inference.drawing import SIDE_COLOURS, limb_colours

    layout = skeleton_layout(ks)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    labels = [f"{k} {name}" + (" (root)" if name in ks.root else "") for k, name in enumerate(ks.keypoints)]
    column = max(cv2.getTextSize(label, font, scale, 1)[0][0] for label in labels) + 24
    row_height, margin, legend = 90, 70, 70
    xs = [x for x, _ in layout.values()]
    rows = max(r for _, r in layout.values()) + 1
    width = int(max(2 * max(abs(v) for v in xs) * column, 560) + 2 * margin)
    height = (rows - 1) * row_height + 2 * margin + legend
    image = np.full((height, width, 3), 255, np.uint8)
    points = {k: np.array([width / 2 + x * column, margin + r * row_height]) for k, (x, r) in layout.items()}

    def limb_path(a: int, b: int) -> np.ndarray:
        """A straight line, or an arc where the line would run through another keypoint."""
        start, end = points[a], points[b]
        t = np.linspace(0, 1, 40)[:, None]
        line = start + (end - start) * t
        others = [p for k, p in points.items() if k not in (a, b)]
        if not others or min(np.min(np.linalg.norm(line - p, axis=1)) for p in others) > 14:
            return line
        normal = np.array([-(end - start)[1], (end - start)[0]]) / max(np.linalg.norm(end - start), 1)
        control = (start + end) / 2 + normal * 0.35 * max(np.linalg.norm(end - start), row_height)
        return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end

    unmirrored = set(ks.unmirrored_limbs)
    for limb, ((a, b), colour) in enumerate(zip(ks.limb_keypoints, limb_colours(ks))):
        curve = limb_path(int(a), int(b)).round().astype(np.int32)
        pieces = list(zip(curve[:-1], curve[1:]))
        if ks.fill_in_mask[limb]:  # dashed
            pieces = pieces[::2]
        for p, q in pieces:
            cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, 3, cv2.LINE_AA)
        if limb in unmirrored:
            middle = curve[len(curve) // 2]
            cv2.putText(image, "no mirror", (int(middle[0]) + 4, int(middle[1]) - 4), font, scale * 0.9,
                        (0, 0, 200), 1, cv2.LINE_AA)

    def point(k):
        return tuple(int(round(v)) for v in points[k])

    for k, name in enumerate(ks.keypoints):
        centre = point(k)
        cv2.circle(image, centre, 8, SIDE_COLOURS[ks.sides[k]], -1, cv2.LINE_AA)
        if name in ks.root:
            cv2.circle(image, centre, 13, (0, 0, 0), 2, cv2.LINE_AA)
        label = labels[k]
        (text_width, _), _ = cv2.getTextSize(label, font, scale, 1)
        cv2.putText(image, label, (centre[0] - text_width // 2, centre[1] + 26), font, scale, (40, 40, 40), 1,
                    cv2.LINE_AA)
    cv2.putText(image, f"keypoint set '{ks.name}': {ks.num_keypoints} keypoints, {ks.num_limbs} limbs",
                (10, 22), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    x = 10
    for text, colour in (("person's left", SIDE_COLOURS["left"]), ("right", SIDE_COLOURS["right"]),
                         ("centre", SIDE_COLOURS["center"])):
        cv2.circle(image, (x + 8, height - legend // 2), 8, colour, -1, cv2.LINE_AA)
        cv2.putText(image, text, (x + 22, height - legend // 2 + 5), font, scale, (40, 40, 40), 1, cv2.LINE_AA)
        x += 40 + cv2.getTextSize(text, font, scale, 1)[0][0]
    cv2.putText(image, "ringed: root; dashed: fill-in limb", (x, height - legend // 2 + 5), font, scale,
                (40, 40, 40), 1, cv2.LINE_AA)
    if not cv2.imwrite(path, image):
        raise OSError(f"cannot write the picture {path} (an image extension such as .png?)")
    return height, width


def show(args) -> int:
    try:
        keypoint_set = load_keypoint_set(args.show)
    except KeypointSetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe_set(keypoint_set))
    if args.picture:
        directory = os.path.dirname(os.path.abspath(args.picture))
        os.makedirs(directory, exist_ok=True)
        try:
            height, width = draw_skeleton(keypoint_set, args.picture)
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"\nwrote {args.picture}: the skeleton, {width}x{height}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.classes:
        return write_classes(args)
    if args.show:
        return show(args)
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

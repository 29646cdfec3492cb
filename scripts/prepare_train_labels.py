"""Turn a COCO-format keypoint file into prepared training labels (JSON; see datasets/prepared_labels.py).

    python scripts/prepare_train_labels.py --labels person_keypoints_train2017.json --images-folder train2017 \
        --keypoints lwop18 --output-name prepared_train_labels.json

One training sample per person with enough keypoints of the target set (default: a quarter of them, rounded up) and
area (default >= 32*32), carrying the other people of its image; crowd regions and people without keypoints become
ignore regions (zero loss weight).
The file's keypoints are converted to the target set by name (plus the set's derived keypoints, e.g. lwop18's neck).

    python scripts/prepare_train_labels.py --mix recipe.json --output-name prepared_mix.json

prepares every source of a mix recipe (several datasets, any keypoint sets) into one file with a source each.

    python scripts/prepare_train_labels.py --labels people_and_animals.json --images-folder images \
        --keypoints people_animals.json --exhaustive person animal

With a multi-class target set (scripts/make_keypoint_set.py --classes), each category of the file is one class: the
class of the category's name, or the one --category-class maps it to. --exhaustive names the classes the file labels
exhaustively (default: every class it has a category for); the others are masked in the loss, never background.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lwpose.errors import flag_hint  # noqa: E402
from lwpose.datasets.class_labels import parse_category_classes, read_coco_classes  # noqa: E402
from lwpose.datasets.coco_reader import AnnotationError, find_missing_images, read_coco_keypoints  # noqa: E402
from lwpose.datasets.mix_recipe import RecipeError, load_mix_recipe, prepare_mixed_labels  # noqa: E402
from lwpose.datasets.prepared_labels import (DEFAULT_PSEUDO_WEIGHT, DROPPED_PEOPLE_WARNING_SHARE,  # noqa: E402
                                             MIN_KEYPOINTS_SHARE, SelectionSettings, build_prepared_labels,
                                             default_min_keypoints, too_many_dropped)
from lwpose.keypoints import KeypointSetError, load_keypoint_set  # noqa: E402

DEFAULTS = SelectionSettings()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default=None, help="COCO-format keypoint annotations (JSON)")
    parser.add_argument("--mix", default=None, metavar="RECIPE",
                        help="prepare every source of a mix recipe (datasets/mix_recipe.py) into one file instead; "
                             "the recipe gives the sets, paths and selection")
    parser.add_argument("--keypoints", default="lwop18",
                        help="target keypoint set, the model's (shipped name or JSON file; default lwop18)")
    parser.add_argument("--source-keypoints", default=None,
                        help="keypoint set the file is labelled in (default: found from its category's names)")
    parser.add_argument("--images-folder", default=None,
                        help="folder of the images: checked for missing files and recorded for train.py")
    parser.add_argument("--output-name", default="prepared_train_labels.json", help="prepared labels to write")
    parser.add_argument("--min-keypoints", type=int, default=None,
                        help="keypoints of the target set a training sample's person needs labelled (default: "
                             f"{MIN_KEYPOINTS_SHARE * 100:g}%% of the set's keypoints, rounded up: "
                             f"{default_min_keypoints(load_keypoint_set('coco'))} for COCO's)")
    parser.add_argument("--min-area", type=float, default=DEFAULTS.min_area,
                        help=f"area a training sample's person needs, in pixels (default {DEFAULTS.min_area:g})")
    parser.add_argument("--min-center-distance", type=float, default=DEFAULTS.min_center_distance,
                        help="skip a person whose box centre is closer than this times an already kept person's "
                             f"box width (default {DEFAULTS.min_center_distance})")
    parser.add_argument("--source-name", default=None, help="name of this source (default: the labels file's)")
    parser.add_argument("--category-class", nargs="+", action="extend", default=[], metavar="CATEGORY=CLASS",
                        help="with a multi-class --keypoints set: the class of a category whose name is not a class's "
                             "(and whose keypoint names are not one class's); *=CLASS: every category not named")
    parser.add_argument("--exhaustive", nargs="+", default=None, metavar="CLASS",
                        help="with a multi-class --keypoints set: the classes the file labels exhaustively (default: "
                             "every class it has a category for); the others are masked, never trained as background")
    parser.add_argument("--pseudo-weight", type=float, default=None,
                        help="loss weight of the pseudo-labels of a filled file (scripts/pseudo_label.py; default "
                             f"{DEFAULT_PSEUDO_WEIGHT})")
    return parser.parse_args(argv)



def format_summary(summary: dict, keypoint_set, source, settings: SelectionSettings) -> str:
    s = summary
    keypoint_set_name = keypoint_set.name
    lines = [
        f"source '{source.name}' (keypoint set '{source.keypoint_set.name}') -> '{keypoint_set_name}': "
        f"{source.conversion}",
        f"flip pairs of '{keypoint_set_name}' (swapped by the flip augmentation): "
        f"{keypoint_set.describe_flip_pairs()}",
        f"annotations: {s['annotations']} in {s['images']} images",
        f"  people with keypoints:          {s['people_with_keypoints']}",
        f"  training samples (main people): {s['samples']} in {s['images_with_samples']} images",
        f"  not a main person, too few keypoints (< {settings.min_keypoints} of '{keypoint_set_name}'): "
        f"{s['dropped_too_few_keypoints']} (still trained as other people)",
        f"  not a main person, too small (area < {settings.min_area:g}): {s['dropped_too_small']}"
        " (still trained as other people)",
        f"  not a main person, too close to a kept one: {s['dropped_too_close']} (still trained as other people)",
        f"ignore regions: {s['crowd_regions']} crowd, {s['people_without_keypoints']} people without keypoints, "
        f"{s['people_without_target_keypoints']} people without keypoints of '{keypoint_set_name}'",
    ]
    if "pseudo_keypoints" in s:
        lines.append(f"pseudo-labels: {s['pseudo_keypoints']} keypoints, trained with weight {source.pseudo_weight:g}")
    if too_many_dropped(s):
        causes = [f"{s['dropped_too_few_keypoints']} with fewer than {settings.min_keypoints} keypoints "
                  f"(--min-keypoints)" if s["dropped_too_few_keypoints"] else "",
                  f"{s['dropped_too_small']} smaller than {settings.min_area:g} pixels (--min-area)"
                  if s["dropped_too_small"] else ""]
        dropped = s["dropped_too_few_keypoints"] + s["dropped_too_small"]
        lines.append(f"warning: {dropped} of the {s['people_with_keypoints']} people with keypoints (more than "
                     f"{DROPPED_PEOPLE_WARNING_SHARE:.0%}) are no training sample: "
                     + " and ".join(c for c in causes if c) + "; lower the flag to train on more of them")
    if s["images_missing"]:
        lines.append(f"images missing from disk: {s['images_missing']} ({s['people_in_missing_images']} annotations "
                     "dropped)")
    return "\n".join(lines)


def prepare_mix(args) -> int:
    try:
        recipe = load_mix_recipe(args.mix)
        labels = prepare_mixed_labels(recipe, progress=True)
    except (RecipeError, KeypointSetError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    labels.save(args.output_name)
    print(f"wrote {args.output_name}: {len(labels)} samples of {len(labels.sources)} sources in keypoint set "
          f"'{labels.keypoint_set.name}' (train with: train.py --mix {args.mix} --prepared-train-labels "
          f"{args.output_name})")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mix:
        return prepare_mix(args)
    if not args.labels:
        print("error: give --labels (a COCO-format file) or --mix (a recipe)", file=sys.stderr)
        return 2
    try:
        target = load_keypoint_set(args.keypoints)
        settings = SelectionSettings(args.min_keypoints, args.min_area, args.min_center_distance).for_set(target)
        classes = None
        if target.num_classes > 1:
            classes = read_coco_classes(args.labels, target, parse_category_classes(args.category_class),
                                        args.exhaustive)
            coco = classes.coco
        elif args.category_class or args.exhaustive:
            raise AnnotationError(f"--category-class and --exhaustive need a multi-class --keypoints set; "
                                  f"'{target.name}' has one class")
        else:
            coco = read_coco_keypoints(args.labels, target, args.source_keypoints)
        missing = []
        if args.images_folder:
            if not os.path.isdir(args.images_folder):
                raise AnnotationError(f"images folder {args.images_folder} does not exist")
            missing = find_missing_images(coco, args.images_folder)
            if missing:
                print(f"{len(missing)} of {len(coco.images)} images are missing from {args.images_folder}; their "
                      f"people are left out: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
            if coco.images and len(missing) == len(coco.images):
                raise AnnotationError(f"{args.labels}: none of its {len(coco.images)} images is in "
                                      f"{args.images_folder}; wrong --images-folder?")
        else:
            print("note: no --images-folder given, images were not checked; pass --train-images-folder to train.py")
        if args.pseudo_weight is not None and args.pseudo_weight < 0:
            raise AnnotationError(f"--pseudo-weight {args.pseudo_weight:g}: a loss weight is not negative")
        labels = build_prepared_labels(coco, target, settings, args.images_folder, set(missing), args.source_name,
                                       pseudo_weight=args.pseudo_weight,
                                       labelled=None if classes is None else classes.labelled,
                                       conversion_note=None if classes is None else classes.describe())
        labels.summary["missing_image_files"] = missing
    except (AnnotationError, KeypointSetError) as e:
        print(f"error: {e}{flag_hint(e)}", file=sys.stderr)
        return 2
    if not len(labels):
        print(f"error: {args.labels}: no person qualifies as a training sample (>= {settings.min_keypoints} "
              f"keypoints, area >= {settings.min_area:g}); nothing written", file=sys.stderr)
        return 2
    labels.save(args.output_name)
    print(format_summary(labels.summary, target, labels.sources[0], settings))
    print(f"wrote {args.output_name}: {len(labels)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drawing people on frames: limbs coloured by body side (from the keypoint set's left/right naming) and, in a
multi-class set, by class too (each class its own side colours), keypoints as dots, and with tracking each person's
id in a colour of its own."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from lwpose.inference.grouping import People
from lwpose.keypoints import KeypointSet

SIDE_COLOURS = {"left": (255, 160, 0), "right": (0, 120, 255), "center": (0, 220, 220)}  # BGR
# The side colours of the second and later classes of a multi-class set (the first class takes SIDE_COLOURS).
CLASS_SIDE_COLOURS = ({"left": (60, 210, 60), "right": (200, 60, 220), "center": (235, 235, 235)},
                      {"left": (210, 210, 60), "right": (60, 60, 230), "center": (150, 150, 150)})


def side_colours(class_index: int) -> dict[str, tuple[int, int, int]]:
    """The side colours of a class of a keypoint set: the first class's are SIDE_COLOURS."""
    if class_index == 0:
        return SIDE_COLOURS
    return CLASS_SIDE_COLOURS[(class_index - 1) % len(CLASS_SIDE_COLOURS)]


def limb_colours(keypoint_set: KeypointSet) -> list[tuple[int, int, int]]:
    """One colour per limb: the side both ends share (a centre keypoint takes its partner's side), else centre, in
    the colours of the limb's class."""
    class_of_limb = np.zeros(keypoint_set.num_limbs, np.int64)
    for subject in keypoint_set.classes:
        class_of_limb[subject.limbs] = subject.index
    colours = []
    for (a, b), class_index in zip(keypoint_set.limb_keypoints, class_of_limb):
        palette = side_colours(int(class_index))
        sides = {keypoint_set.sides[a], keypoint_set.sides[b]} - {"center"}
        colours.append(palette[sides.pop()] if len(sides) == 1 else palette["center"])
    return colours


def point_colours(keypoint_set: KeypointSet) -> list[tuple[int, int, int]]:
    """One colour per keypoint: its side's, in its class's colours (a shared channel takes the first class's)."""
    class_of_keypoint = np.zeros(keypoint_set.num_keypoints, np.int64)
    for subject in reversed(keypoint_set.classes):
        class_of_keypoint[subject.channels] = subject.index
    return [side_colours(int(c))[side] for c, side in zip(class_of_keypoint, keypoint_set.sides)]


def id_colour(track_id: int) -> tuple[int, int, int]:
    """A bright colour per id, far from its neighbours' (golden-ratio steps round the hue circle)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


class PoseDrawer:
    def __init__(self, keypoint_set: KeypointSet, thickness: int | None = None):
        self.keypoint_set = keypoint_set
        self.limbs = keypoint_set.limb_keypoints
        self.colours = limb_colours(keypoint_set)
        self.point_colours = point_colours(keypoint_set)
        self.thickness = thickness

    def draw(self, image: np.ndarray, people: People, ids: np.ndarray | None = None) -> np.ndarray:
        """Draw on `image` in place (and return it)."""
        thickness = self.thickness or max(1, round(min(image.shape[:2]) / 240))
        for p in range(len(people)):
            keypoints = people.keypoints[p]
            present = keypoints[:, 2] > 0
            points = np.round(keypoints[:, :2]).astype(np.int32)
            for (a, b), colour in zip(self.limbs, self.colours):
                if present[a] and present[b]:
                    cv2.line(image, tuple(points[a]), tuple(points[b]), colour, thickness, cv2.LINE_AA)
            for k in np.flatnonzero(present):
                cv2.circle(image, tuple(points[k]), thickness + 1, self.point_colours[k], -1, cv2.LINE_AA)
            if ids is not None and present.any():
                colour = id_colour(int(ids[p]))
                x0, y0 = points[present].min(axis=0)
                x1, y1 = points[present].max(axis=0)
                cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), colour, 1)
                cv2.putText(image, str(int(ids[p])), (int(x0), max(int(y0) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.35 * thickness, colour, 1, cv2.LINE_AA)
        return image

"""Synthetic four-legged animals: a trunk, a neck, a head with eyes, ears and a muzzle, four two-segment legs with
paws, and a tail, in proportions anywhere between a cat, a dog and a horse, posed standing, walking or sitting,
seen from any side by an orthographic camera and drawn as filled, outlined parts like the people of
synthetic_figures.py (whose drawing primitives and id mask this module shares).

The animal lives in its own frame (X = the animal's left, Y = up, Z = the way it faces; unit = its body length, from
the nose to the root of the tail as it stands with its head relaxed; origin = the middle of the trunk). Legs reach
for paw positions on a common ground (two-bone inverse kinematics: elbows bend backwards, knees forwards), so the
four paws stand, step or sit plausibly whatever the proportions. The camera turns the animal by `yaw` (0 = facing
the camera, so its left side is on the image's right; pi/2 = facing the image's right, its right side towards the
camera), looks down on it by `elevation`, tilts it by `roll`, scales it to `length_px` and puts the trunk's middle
at `origin`.

Named points are what the animal can place; a keypoint set's keypoints are looked up here by name, in the set's own
order (scripts/synthetic_data.py), so no keypoint table lives in this file. Left legs are drawn lighter and right
legs darker, as the people's left and right limbs are, so that left and right can be learned from the pixels.

    python scripts/synthetic_animals.py --output docs/images/synthetic_animals.jpg

draws a contact sheet of scenes with people and animals and their keypoints.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from synthetic_figures import (  # noqa: E402
    MIN_PART_RADIUS_PX,
    SIDES,
    UP,
    Projected,
    Shape,
    _contrast,
    _hsv_to_bgr,
    _rot_x,
    _rot_y,
    _rot_z,
    _shade,
    capsule_polygon,
    disc_polygon,
    draw_shapes,
)

FORWARD = np.array([0.0, 0.0, 1.0])
LEGS = (("front", "shoulder", "elbow", "front_paw"), ("back", "hip", "knee", "back_paw"))  # (end, top, middle, paw)
# An eye whose depth (towards the camera, in skull radii from the skull's centre) is below this is on the far side
# of the head: it is neither drawn nor labelled.
EYE_HIDDEN_DEPTH = -0.2
# A side-on view shows the four legs apart; this share of the animals is seen within about 30 degrees of one.
SIDE_VIEW_PROBABILITY = 0.5
# Animals with longer front legs (in body lengths: a cat's are 0.46, a dog's 0.53, a horse's 0.58) do not sit.
LONGEST_SITTING_FRONT_LEG = 0.555


@dataclass(frozen=True)
class Build:
    """Body dimensions (lengths in body lengths, angles in degrees) of one animal."""

    trunk: float  # shoulder joints to hip joints, along the spine
    chest_half_height: float
    chest_half_width: float
    rump_half_height: float
    rump_half_width: float
    belly_tuck: float  # height of the waist relative to chest and rump (a ratio, not a length)
    neck: float
    neck_radius: float
    neck_rise: float  # the neck's angle above the horizontal, relaxed
    skull_radius: float
    muzzle: float  # skull centre to the muzzle's end
    muzzle_radius: float
    head_dip: float  # the muzzle's angle below the horizontal, relaxed
    ear: float
    ear_width: float
    ear_droop: float  # 0 = pricked, 1 = hanging (a ratio)
    front_upper: float  # shoulder to elbow
    front_lower: float  # elbow to paw
    hind_upper: float  # hip to knee
    hind_lower: float  # knee to paw
    leg_radius: float  # at the elbows and knees
    shoulder_radius: float  # the front legs' tops
    thigh_radius: float  # the hind legs' tops
    paw_radius: float
    tail: float
    tail_radius: float
    tail_tip_radius: float
    tail_carriage: float  # the tail's angle above the horizontal, relaxed (a horse's hangs)


NOT_LENGTHS = frozenset({"belly_tuck", "neck_rise", "head_dip", "ear_droop", "tail_carriage"})
ANGLES = frozenset({"neck_rise", "head_dip", "tail_carriage"})

# Three kinds of quadruped in metres; each animal blends them, so the whole range between them occurs.
CAT = Build(trunk=0.26, chest_half_height=0.07, chest_half_width=0.045, rump_half_height=0.055, rump_half_width=0.045,
            belly_tuck=0.85, neck=0.06, neck_radius=0.035, neck_rise=35, skull_radius=0.045, muzzle=0.04,
            muzzle_radius=0.022, head_dip=5, ear=0.04, ear_width=0.018, ear_droop=0.0, front_upper=0.09,
            front_lower=0.10, hind_upper=0.10, hind_lower=0.12, leg_radius=0.013, shoulder_radius=0.03,
            thigh_radius=0.035, paw_radius=0.015, tail=0.28, tail_radius=0.012, tail_tip_radius=0.009,
            tail_carriage=20)
DOG = Build(trunk=0.45, chest_half_height=0.14, chest_half_width=0.09, rump_half_height=0.11, rump_half_width=0.085,
            belly_tuck=0.7, neck=0.18, neck_radius=0.06, neck_rise=40, skull_radius=0.075, muzzle=0.12,
            muzzle_radius=0.035, head_dip=10, ear=0.09, ear_width=0.035, ear_droop=0.6, front_upper=0.2,
            front_lower=0.24, hind_upper=0.22, hind_lower=0.27, leg_radius=0.025, shoulder_radius=0.055,
            thigh_radius=0.065, paw_radius=0.028, tail=0.35, tail_radius=0.022, tail_tip_radius=0.012,
            tail_carriage=25)
HORSE = Build(trunk=1.05, chest_half_height=0.35, chest_half_width=0.27, rump_half_height=0.32,
              rump_half_width=0.27, belly_tuck=0.9, neck=0.75, neck_radius=0.15, neck_rise=50, skull_radius=0.14,
              muzzle=0.42, muzzle_radius=0.09, head_dip=55, ear=0.14, ear_width=0.05, ear_droop=0.0,
              front_upper=0.5, front_lower=0.72, hind_upper=0.55, hind_lower=0.75, leg_radius=0.05,
              shoulder_radius=0.16, thigh_radius=0.2, paw_radius=0.06, tail=0.8, tail_radius=0.08,
              tail_tip_radius=0.11, tail_carriage=-60)


@dataclass(frozen=True)
class Pose:
    """Angles in radians, paw positions in body lengths. Per-leg values are in the order of `leg_names()`."""

    trunk_pitch: float = 0.0  # front up (sitting: follows from the legs)
    neck_rise: float = 0.0  # added to the build's
    neck_turn: float = 0.0  # towards the animal's left
    head_dip: float = 0.0  # added to the build's
    head_turn: float = 0.0  # beyond the neck's turn
    head_tilt: float = 0.0
    # each paw's place relative to its leg's top: (forward, height above the ground, outwards)
    paws: tuple = ((0.0, 0.0, 0.0),) * 4
    reach: float = 0.93  # the standing legs' extension: height of the lowest reaching leg top over its length
    sitting: bool = False
    tail_rise: float = 0.0  # added to the build's carriage
    tail_wag: float = 0.0  # sideways, towards the animal's left
    tail_curl: float = 0.0  # upwards bend per tail segment


def leg_names() -> tuple[tuple[str, str, str, str], ...]:
    """(side, top joint, middle joint, paw) per leg: front legs, then back legs, left before right."""
    return tuple((side, f"{side}_{top}", f"{side}_{middle}", f"{side}_{paw}")
                 for _, top, middle, paw in LEGS for side, _ in SIDES)


def _scaled(build: Build, factor: float) -> Build:
    return replace(build, **{f.name: getattr(build, f.name) * factor for f in fields(Build)
                             if f.name not in NOT_LENGTHS})


def _triangular(rng: np.random.Generator, low: float, mode: float, high: float) -> float:
    return math.radians(rng.triangular(low, mode, high))


# ----------------------------------------------------------------------------------------------- skeleton
@dataclass(frozen=True)
class Skeleton3D:
    """Joints, the trunk's surface (rings of points) and the head's frame in the animal's own 3D frame."""

    joints: dict  # name -> (3,) position
    trunk_rings: np.ndarray  # (stations, points, 3)
    trunk: np.ndarray  # rotation of the trunk
    head: np.ndarray  # rotation of the head (its Z along the muzzle)


def _trunk_rings(b: Build, segments: int = 16) -> np.ndarray:
    """Elliptic cross-sections of the trunk from the chest's front to the rump's back (in the trunk's frame)."""
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    front, back = b.trunk / 2, -b.trunk / 2
    waist_height = b.belly_tuck * (b.chest_half_height + b.rump_half_height) / 2
    stations = (  # (z, half width, half height, centre height)
        (front + 0.75 * b.chest_half_height, 0.55 * b.chest_half_width, 0.6 * b.chest_half_height,
         0.15 * b.chest_half_height),
        (front, b.chest_half_width, b.chest_half_height, 0.0),
        (0.0, 0.9 * (b.chest_half_width + b.rump_half_width) / 2, waist_height,
         (b.chest_half_height + b.rump_half_height) / 2 - waist_height),
        (back, b.rump_half_width, b.rump_half_height, 0.05 * b.rump_half_height),
        (back - 0.7 * b.rump_half_height, 0.6 * b.rump_half_width, 0.6 * b.rump_half_height,
         0.15 * b.rump_half_height))
    return np.array([np.stack([w * np.cos(t), c + h * np.sin(t), np.full_like(t, z)], axis=1)
                     for z, w, h, c in stations])


def _leg_tops(b: Build) -> dict[str, np.ndarray]:
    """Where the legs join the trunk (in the trunk's frame), inside it: the top joints lie on the trunk's pixels."""
    tops = {}
    for side, sign in SIDES:
        tops[f"{side}_shoulder"] = np.array([sign * 0.55 * b.chest_half_width, -0.15 * b.chest_half_height,
                                             b.trunk / 2])
        tops[f"{side}_hip"] = np.array([sign * 0.55 * b.rump_half_width, 0.0, -b.trunk / 2])
    return tops


def _two_bone(top: np.ndarray, target: np.ndarray, upper: float, lower: float,
              bend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The middle joint and the end of a two-segment limb from `top` reaching for `target` (as near as its
    lengths allow), the middle joint pushed towards `bend`."""
    offset = target - top
    distance = float(np.linalg.norm(offset))
    along = offset / distance if distance > 1e-9 else -UP
    reach = float(np.clip(distance, abs(upper - lower) * 1.05 + 1e-6, (upper + lower) * 0.999))
    end = top + along * reach
    a = (upper ** 2 - lower ** 2 + reach ** 2) / (2 * reach)
    h = math.sqrt(max(0.0, upper ** 2 - a ** 2))
    side = bend - np.dot(bend, along) * along
    if np.linalg.norm(side) < 1e-9:
        side = np.cross(along, np.array([1.0, 0.0, 0.0]))
    side /= np.linalg.norm(side)
    return top + along * a + side * h, end


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


# the middle joint's direction: elbows point backwards, knees forwards (and up when the leg folds, as in sitting)
ELBOW_BEND = _unit([0.0, 0.3, -1.0])
KNEE_BEND = _unit([0.0, 0.6, 1.0])


def _sitting_pitch(b: Build, reach: float) -> float:
    """The trunk's pitch at which the front legs, `reach` extended, stand on the ground the rump sits on (between
    10 and 80 degrees: long front legs then reach forwards)."""
    rings = _trunk_rings(b)[-2:].reshape(-1, 3)
    shoulder = _leg_tops(b)["left_shoulder"]
    front_leg = b.front_upper + b.front_lower

    def height(pitch):  # of the shoulder over the rump's lowest point
        trunk = _rot_x(-pitch)
        return (trunk @ shoulder)[1] - (rings @ trunk.T)[:, 1].min()

    low, high = math.radians(10), math.radians(80)
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if height(mid) < reach * front_leg else (low, mid)
    return low


@functools.lru_cache(maxsize=256)
def skeleton_3d(build: Build, pose: Pose) -> Skeleton3D:
    """(Cached: an animal is placed, drawn and labelled from the same skeleton; callers do not change it.)"""
    b = build
    joints: dict[str, np.ndarray] = {}
    pitch = _sitting_pitch(b, pose.reach) if pose.sitting else pose.trunk_pitch
    trunk = _rot_x(-pitch)
    rings = _trunk_rings(b) @ trunk.T
    joints["trunk_centre"] = np.zeros(3)
    neck_base = trunk @ np.array([0.0, 0.5 * b.chest_half_height, b.trunk / 2 + 0.35 * b.chest_half_height])
    joints["neck"] = neck_base
    joints["root_of_tail"] = trunk @ np.array([0.0, 0.65 * b.rump_half_height,
                                               -b.trunk / 2 - 0.55 * b.rump_half_height])

    # legs: paws on one ground, the highest leg top reaching down `reach` of its length (sitting: the rump on it)
    tops = {name: trunk @ point for name, point in _leg_tops(b).items()}
    lengths = {"front": (b.front_upper, b.front_lower), "back": (b.hind_upper, b.hind_lower)}
    legs = [(end, side, top, middle, paw) for (end, *_), (side, top, middle, paw) in zip(
        [leg for leg in LEGS for _ in SIDES], leg_names())]
    if pose.sitting:
        ground = rings[-2:, :, 1].min()
    else:
        ground = max(tops[top][1] - pose.reach * sum(lengths[end]) for end, _, top, _, _ in legs)
    for (end, side, top, middle, paw), (forward, lift, outwards) in zip(legs, pose.paws):
        upper, lower = lengths[end]
        start = tops[top]
        if pose.sitting and end == "front":
            # front legs nearly straight, as far forward as the height of the shoulders leaves them
            drop = start[1] - ground
            forward += math.sqrt(max(0.0, (pose.reach * (upper + lower)) ** 2 - drop ** 2))
        sign = 1.0 if side == "left" else -1.0
        target = np.array([start[0] + sign * outwards, ground + lift, start[2] + forward])
        joints[top] = start
        bend = ELBOW_BEND if end == "front" else KNEE_BEND
        joints[middle], joints[paw] = _two_bone(start, target, upper, lower, bend)
        joints[f"{paw}_toe"] = joints[paw] + FORWARD * b.paw_radius * 1.3

    # neck and head: their angles are the world's (a sitting animal still holds its head up)
    neck_rise = np.clip(math.radians(b.neck_rise) + pose.neck_rise, math.radians(-10), math.radians(85))
    neck_direction = _rot_y(pose.neck_turn) @ _rot_x(-neck_rise) @ FORWARD
    skull = neck_base + neck_direction * b.neck
    head = (_rot_y(pose.neck_turn + pose.head_turn) @ _rot_x(math.radians(b.head_dip) + pose.head_dip)
            @ _rot_z(pose.head_tilt))
    joints["skull"] = skull
    joints["muzzle"] = skull + head @ FORWARD * b.muzzle
    # just inside the muzzle's end, so the point lies on the drawn head
    joints["nose"] = skull + head @ FORWARD * (b.muzzle + 0.6 * b.muzzle_radius)
    for side, sign in SIDES:
        joints[f"{side}_eye"] = skull + head @ _unit([sign * 0.5, 0.45, 0.75]) * 0.9 * b.skull_radius
        ear_base = skull + head @ _unit([sign * 0.55, 0.7, -0.3]) * 0.85 * b.skull_radius
        ear_direction = _unit((1 - b.ear_droop) * _unit([sign * 0.25, 1.0, -0.15])
                              + b.ear_droop * _unit([sign * 0.45, -0.9, -0.2]))
        joints[f"{side}_ear_base"] = ear_base
        joints[f"{side}_ear_tip"] = ear_base + head @ ear_direction * b.ear

    # tail: three segments from the root, each bent a little further up (or down)
    rise = math.radians(b.tail_carriage) + pose.tail_rise
    point = joints["root_of_tail"]
    for i in range(1, 4):
        direction = _rot_y(pose.tail_wag) @ _rot_x(rise + (i - 1) * pose.tail_curl) @ -FORWARD
        point = point + direction * b.tail / 3
        point[1] = max(point[1], ground + b.tail_radius)  # a low tail lies on the ground
        joints[f"tail_{i}"] = point
    return Skeleton3D(joints, rings, trunk, head)


def _body_length(build: Build) -> float:
    joints = skeleton_3d(build, Pose()).joints
    return float(joints["nose"][2] - joints["root_of_tail"][2])


TEMPLATES = tuple(_scaled(t, 1.0 / _body_length(t)) for t in (CAT, DOG, HORSE))


def random_build(rng: np.random.Generator) -> Build:
    """A blend of the cat, the dog and the horse (random weights), each length then varied by +-12 % and each
    angle by +-8 degrees, scaled to a body length of 1."""
    weights = rng.dirichlet([0.5, 0.5, 0.5])
    values = {}
    for f in fields(Build):
        value = float(sum(w * getattr(t, f.name) for w, t in zip(weights, TEMPLATES)))
        if f.name in ANGLES:
            value += rng.uniform(-8, 8)
        elif f.name not in NOT_LENGTHS:
            value *= rng.uniform(0.88, 1.12)
        values[f.name] = value
    build = Build(**values)
    return _scaled(build, 1.0 / _body_length(build))


def random_pose(rng: np.random.Generator, build: Build) -> Pose:
    """Standing (40 %), walking (40 %) or sitting (20 %, not on a horse's long legs), the head turned and the tail
    carried within an animal's ranges (degrees below)."""
    head = dict(neck_rise=_triangular(rng, -30, 0, 25), neck_turn=_triangular(rng, -60, 0, 60),
                head_dip=_triangular(rng, -25, 0, 35), head_turn=_triangular(rng, -35, 0, 35),
                head_tilt=_triangular(rng, -15, 0, 15), tail_wag=_triangular(rng, -50, 0, 50),
                tail_curl=_triangular(rng, -15, 5, 35))
    kind = rng.choice(["stand", "walk", "sit"], p=[0.4, 0.4, 0.2])
    if kind == "sit" and build.front_upper + build.front_lower > LONGEST_SITTING_FRONT_LEG:
        kind = "stand"
    leg_length = (build.front_upper + build.front_lower + build.hind_upper + build.hind_lower) / 2
    if kind == "sit":
        paws = tuple((rng.normal(0, 0.02), 0.0, rng.uniform(0.0, 0.03)) for _ in range(2)) \
            + tuple((rng.uniform(0.1, 0.45) * build.hind_upper * 2, 0.0, rng.uniform(0.0, 0.05)) for _ in range(2))
        return Pose(sitting=True, reach=rng.uniform(0.85, 0.97),
                    paws=paws, tail_rise=_triangular(rng, -40, -20, 10), **head)
    if kind == "walk":
        phase, stride = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.45) * leg_length
        lift = rng.uniform(0.08, 0.2) * leg_length
        paws = []
        # a walk's footfalls: left hind, left fore, right hind, right fore, a quarter cycle apart
        for leg_phase in (0.25, 0.75, 0.0, 0.5):
            angle = phase + 2 * np.pi * leg_phase
            paws.append((-stride / 2 * math.cos(angle), lift * max(0.0, math.sin(angle)) ** 1.5,
                         rng.uniform(0.0, 0.02)))
        return Pose(trunk_pitch=_triangular(rng, -4, 0, 4), paws=tuple(paws), reach=rng.uniform(0.9, 0.97),
                    tail_rise=_triangular(rng, -25, 0, 30), **head)
    paws = tuple((rng.normal(0.02, 0.04), 0.0, rng.uniform(-0.01, 0.04)) for _ in range(2)) \
        + tuple((rng.normal(-0.03, 0.04), 0.0, rng.uniform(-0.01, 0.04)) for _ in range(2))
    return Pose(trunk_pitch=_triangular(rng, -6, 0, 10), paws=paws, reach=rng.uniform(0.86, 0.98),
                tail_rise=_triangular(rng, -30, 0, 40), **head)


# -------------------------------------------------------------------------------------------------- colours
@dataclass(frozen=True)
class Palette:
    """Colours (BGR) of one animal."""

    coat: tuple
    muzzle: tuple
    ears: tuple
    paws: tuple
    tail: tuple
    iris: tuple


def random_palette(rng: np.random.Generator) -> Palette:
    """Coats of natural browns, greys and blacks mostly, any hue sometimes (so that colour alone does not tell an
    animal from a person); muzzle, ears, paws and tail like the coat or marked lighter or darker."""
    kind = rng.uniform()
    if kind < 0.55:
        coat = _hsv_to_bgr(rng.uniform(0.02, 0.11), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.9))
    elif kind < 0.8:
        coat = _hsv_to_bgr(0.0, rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.95))
    else:
        coat = _hsv_to_bgr(rng.uniform(), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.9))

    def marking():
        return coat if rng.uniform() < 0.5 else _shade(coat, rng.choice([-1, 1]) * rng.uniform(0.2, 0.6))

    iris = _hsv_to_bgr(rng.uniform(0.05, 0.3), rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.8))
    return Palette(coat, marking(), marking(), marking(), marking(), iris)


# ------------------------------------------------------------------------------------------------ the animal
@dataclass(frozen=True)
class Animal:
    """A posed animal placed in an image."""

    build: Build
    pose: Pose
    palette: Palette
    length_px: float  # body length in pixels
    origin: tuple  # the trunk's middle (x, y) in image pixels
    yaw: float = math.pi / 2
    elevation: float = 0.0  # the camera looks down on the animal by this angle
    roll: float = 0.0
    side_shade: float = 0.3  # left parts lightened, right parts darkened by this share: left/right is visible
    joint_marker_shade: float = 0.35  # shoulders, elbows, hips and knees drawn as discs of a contrasting shade

    def moved(self, **changes) -> "Animal":
        return replace(self, **changes)


def camera_rotation(animal: Animal) -> np.ndarray:
    return _rot_z(animal.roll) @ _rot_x(animal.elevation) @ _rot_y(animal.yaw)


def project(animal: Animal, skeleton: Skeleton3D | None = None) -> Projected:
    """Each named point's image position, depth (towards the camera, in body lengths) and whether it can be seen
    from the camera's side of the head (eyes on the far side of the skull, a nose behind it, cannot)."""
    skeleton = skeleton or skeleton_3d(animal.build, animal.pose)
    camera = camera_rotation(animal)
    ox, oy = animal.origin
    out = Projected()
    for name, point in skeleton.joints.items():
        x, y, z = camera @ point
        out.points[name] = (ox + animal.length_px * x, oy - animal.length_px * y)
        out.depth[name] = z
        out.facing[name] = True
    skull_r = animal.build.skull_radius
    for side, _ in SIDES:
        eye = f"{side}_eye"
        out.facing[eye] = (out.depth[eye] - out.depth["skull"]) / skull_r > EYE_HIDDEN_DEPTH
    nose_from_skull = np.hypot(*np.subtract(out.points["nose"], out.points["skull"])) / animal.length_px
    out.facing["nose"] = out.depth["nose"] > out.depth["skull"] or nose_from_skull > skull_r
    return out


POINT_NAMES = tuple(skeleton_3d(TEMPLATES[1], Pose()).joints)


def known_point_names() -> tuple[str, ...]:
    return POINT_NAMES


# --------------------------------------------------------------------------------------------------- drawing
def animal_shapes(animal: Animal, projected: Projected | None = None) -> list[Shape]:
    """The animal as shapes in drawing order (far to near). Parts are ordered by their depth as the camera turns
    the animal, before it looks down on it: the legs of the far side stay behind the trunk, the near ones before
    it, whatever the elevation."""
    skeleton = skeleton_3d(animal.build, animal.pose)
    projected = projected or project(animal, skeleton)
    p, b, pal, joints = projected.points, animal.build, animal.palette, skeleton.joints
    px = animal.length_px
    camera = camera_rotation(animal)
    turn = _rot_y(animal.yaw)
    turned_depth = dict(zip(joints, (np.array(list(joints.values())) @ turn[2]).tolist()))

    def depth(*names) -> float:
        return sum(turned_depth[n] for n in names) / len(names)

    def radius(r):
        return max(MIN_PART_RADIUS_PX, r * px)

    shapes: list[Shape] = []

    def limb(a, b_, ra, rb, colour, bias=0.0) -> float:
        d = depth(a, b_) + bias
        shapes.append(Shape(d, capsule_polygon(p[a], radius(ra), p[b_], radius(rb)), colour))
        return d

    def joint_marker(name, r, colour, *limb_depths):
        """Just in front of the limbs meeting there, so both ends lie under it."""
        if animal.joint_marker_shade > 0:
            shapes.append(Shape(max(limb_depths) + 1e-4, disc_polygon(p[name], 0.7 * radius(r), 12),
                                _contrast(colour, animal.joint_marker_shade), outline=False))

    # Trunk halves: convex hulls of each side's half of the cross-sections, each shaded like its side's legs, and
    # between the legs of the two sides in depth (the legs' tops lie further out than these depths).
    rings = skeleton.trunk_rings
    for side, sign in SIDES:
        half = rings[(sign * rings[..., 0] >= -1e-9)]
        cam = half @ camera.T
        xy = np.stack([animal.origin[0] + px * cam[:, 0], animal.origin[1] - px * cam[:, 1]], axis=1)
        hull = cv2.convexHull(xy.astype(np.float32))[:, 0, :]
        side_direction = skeleton.trunk @ np.array([sign * 0.4 * b.chest_half_width, 0.0, 0.0])
        shade = animal.side_shade if side == "left" else -animal.side_shade
        shapes.append(Shape(float((turn @ side_direction)[2]), hull, _shade(pal.coat, shade)))

    for side, top, middle, paw in leg_names():
        front = paw.endswith("front_paw")
        shade = animal.side_shade if side == "left" else -animal.side_shade
        coat, paw_colour = _shade(pal.coat, shade), _shade(pal.paws, shade)
        top_radius = b.shoulder_radius if front else b.thigh_radius
        upper = limb(top, middle, top_radius, b.leg_radius, coat)
        lower = limb(middle, paw, b.leg_radius, 0.8 * b.leg_radius, _shade(coat, -0.06))
        limb(paw, f"{paw}_toe", b.paw_radius, 0.8 * b.paw_radius, paw_colour, bias=1e-4)
        joint_marker(top, 0.6 * top_radius, coat, upper)
        joint_marker(middle, b.leg_radius, coat, upper, lower)

    for i, (a, b_) in enumerate((("root_of_tail", "tail_1"), ("tail_1", "tail_2"), ("tail_2", "tail_3"))):
        r0 = b.tail_radius + (b.tail_tip_radius - b.tail_radius) * i / 3
        r1 = b.tail_radius + (b.tail_tip_radius - b.tail_radius) * (i + 1) / 3
        limb(a, b_, r0, r1, pal.tail)

    # Neck, then the head (skull and muzzle as one outline), ears by their depth, then the features facing us.
    limb("neck", "skull", 1.3 * b.neck_radius, b.neck_radius, pal.coat, bias=-0.01)
    head = depth("skull")
    shapes.append(Shape(head, capsule_polygon(p["skull"], radius(b.skull_radius), p["muzzle"],
                                              radius(b.muzzle_radius), 12), pal.coat))
    muzzle_back = 0.35 * np.asarray(p["skull"]) + 0.65 * np.asarray(p["muzzle"])
    shapes.append(Shape(head + 1e-4, capsule_polygon(muzzle_back, 0.85 * radius(b.muzzle_radius), p["muzzle"],
                                                     0.85 * radius(b.muzzle_radius)), pal.muzzle, outline=False))
    for side, _ in SIDES:
        shade = animal.side_shade if side == "left" else -animal.side_shade
        limb(f"{side}_ear_base", f"{side}_ear_tip", b.ear_width, 0.35 * b.ear_width * (1 + b.ear_droop),
             _shade(pal.ears, shade))
    feature = head + 2e-4
    for side, _ in SIDES:
        eye = f"{side}_eye"
        if projected.facing[eye]:
            shapes.append(Shape(feature, disc_polygon(p[eye], max(1.0, 0.24 * radius(b.skull_radius)), 10),
                                pal.iris, outline=False))
            shapes.append(Shape(feature + 1e-5, disc_polygon(p[eye], max(0.6, 0.13 * radius(b.skull_radius)), 8),
                                (20, 20, 20), outline=False))
    if projected.facing["nose"]:
        shapes.append(Shape(feature, disc_polygon(p["nose"], max(1.0, 0.55 * radius(b.muzzle_radius)), 10),
                            (35, 30, 30), outline=False))
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i].depth, i))
    return [shapes[i] for i in order]


def animal_mask(animal: Animal, height: int, width: int) -> np.ndarray:
    """The pixels the animal covers when drawn alone (bool)."""
    mask = np.zeros((height, width), np.uint8)
    draw_shapes(None, mask, 1, animal_shapes(animal))
    return mask.astype(bool)


def unit_extent(animal: Animal) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the drawn animal relative to its origin, per pixel of body length: how much
    room it needs around the middle of its trunk."""
    scale = 1000.0
    polygons = np.concatenate([s.polygon for s in animal_shapes(animal.moved(length_px=scale, origin=(0.0, 0.0)))])
    (left, top), (right, bottom) = polygons.min(axis=0) / scale, polygons.max(axis=0) / scale
    return float(left), float(top), float(right), float(bottom)


# ---------------------------------------------------------------------------------------------------- scenes
def random_animal(rng: np.random.Generator, length_px: float, roll_degrees: float = 10.0, side_shade: float = 0.3,
                  joint_marker_shade: float = 0.35) -> Animal:
    """An animal at the image's origin, seen from any side (side-on views more often), from level to looking
    down 25 degrees."""
    build = random_build(rng)
    if rng.uniform() < SIDE_VIEW_PROBABILITY:
        yaw = rng.choice([-1.0, 1.0]) * math.pi / 2 + math.radians(rng.uniform(-30, 30))
    else:
        yaw = rng.uniform(0, 2 * np.pi)
    return Animal(build, random_pose(rng, build), random_palette(rng), length_px, (0.0, 0.0), float(yaw),
                  math.radians(rng.uniform(-5, 25)), math.radians(rng.uniform(-roll_degrees, roll_degrees)),
                  side_shade, joint_marker_shade)


def place(rng: np.random.Generator, animal: Animal, width: int, height: int, partial: bool,
          near_x: float | None = None, extent: tuple | None = None) -> Animal:
    """Put the animal where all of it fits the image (near `near_x` if given), or, if `partial`, across one image
    border (20-60 % of its extent outside). `extent`: its unit_extent, if known."""
    left, top, right, bottom = (v * animal.length_px for v in (extent or unit_extent(animal)))

    def inside(low, high, size):  # origin range keeping [low, high] (relative extent) within [0, size)
        a, b = -low, size - 1 - high
        return rng.uniform(min(a, b), max(a, b))

    x, y = inside(left, right, width), inside(top, bottom, height)
    if near_x is not None and right - left < width:
        x = float(np.clip(near_x + rng.normal(0, 0.2 * width), -left, width - 1 - right))
    if partial:
        border, outside = rng.integers(0, 4), rng.uniform(0.2, 0.6)
        if border == 0:
            x = -right + outside * (right - left)
        elif border == 1:
            x = width - 1 - left - outside * (right - left)
        elif border == 2:
            y = -bottom + outside * (bottom - top)
        else:
            y = height - 1 - top - outside * (bottom - top)
    return animal.moved(origin=(float(x), float(y)))


def random_animals(rng: np.random.Generator, config, width: int, height: int,
                   near_xs: list[float]) -> list[tuple[float, Animal]]:
    """The animals of one scene, each with its depth key (where its lowest point stands, as a share of the image
    height, plus noise: the same key as the people's, so that nearer ones of either kind are drawn later).
    `config` is synthetic_data.SceneConfig: its `animals`, `animal_height` (body length as a share of the image
    height), partial and near probabilities, roll, side and marker shades apply."""
    out = []
    for _ in range(rng.integers(config.animals[0], config.animals[1] + 1)):
        animal = random_animal(rng, rng.uniform(*config.animal_height) * height, config.roll_degrees,
                               config.side_shade, config.joint_marker_shade)
        near = near_xs[rng.integers(0, len(near_xs))] if near_xs and rng.uniform() < config.near_probability else None
        extent = unit_extent(animal)
        animal = place(rng, animal, width, height, rng.uniform() < config.partial_probability, near, extent)
        near_xs = near_xs + [animal.origin[0]]
        bottom = animal.origin[1] + extent[3] * animal.length_px
        out.append((bottom / height + rng.normal(0, 0.05), animal))
    return out


def coco_category(keypoint_set, category_id: int = 2) -> dict:
    return {"id": category_id, "name": "animal", "supercategory": "animal", "keypoints": list(keypoint_set.keypoints),
            "skeleton": [[int(a) + 1, int(b) + 1] for a, b in keypoint_set.limb_keypoints]}


# ------------------------------------------------------------------------------------------ a contact sheet
def contact_sheet(seed: int = 0, scenes: int = 6, columns: int = 3, image_size: int = 256,
                  people: tuple = (1, 2), animals: tuple = (1, 2)) -> np.ndarray:
    """Scenes of people and animals (synthetic_data's, without crowds and tiny people) with their labelled
    keypoints drawn: limbs coloured by side, points under a nearer figure as white rings."""
    import synthetic_data
    from lwpose.inference.drawing import SIDE_COLOURS, limb_colours
    from lwpose.keypoints import load_keypoint_set

    sets = {1: load_keypoint_set("coco"), 2: load_keypoint_set("ap10k")}
    config = synthetic_data.SceneConfig(long_side=image_size, people=people, animals=animals, small_people=(0, 0),
                                        crowd_probability=0.0)
    gap = 4
    rows = (scenes + columns - 1) // columns
    sheet = np.full((rows * (image_size + gap) - gap, columns * (image_size + gap) - gap, 3), 255, np.uint8)
    for i in range(scenes):
        scene = synthetic_data.make_scene(synthetic_data.image_rng(seed, "train", i), config)
        image = scene.image.copy()
        for _, annotation in synthetic_data.scene_annotations(scene, sets[1], sets[2]):
            keypoint_set = sets[annotation["category_id"]]
            keypoints = np.reshape(annotation["keypoints"], (-1, 3))
            points = np.round(keypoints[:, :2] - synthetic_data.COCO_OFFSET).astype(np.int32)
            for (a, b), colour in zip(keypoint_set.limb_keypoints, limb_colours(keypoint_set)):
                if keypoints[a, 2] and keypoints[b, 2]:
                    cv2.line(image, tuple(points[a]), tuple(points[b]), colour, 1, cv2.LINE_AA)
            for k in np.flatnonzero(keypoints[:, 2]):
                if keypoints[k, 2] == 2:
                    cv2.circle(image, tuple(points[k]), 2, SIDE_COLOURS[keypoint_set.sides[k]], -1, cv2.LINE_AA)
                else:
                    cv2.circle(image, tuple(points[k]), 2, (255, 255, 255), 1, cv2.LINE_AA)
        height, width = image.shape[:2]
        top, left = (i // columns) * (image_size + gap), (i % columns) * (image_size + gap)
        top += (image_size - height) // 2
        left += (image_size - width) // 2
        sheet[top:top + height, left:left + width] = image
    return sheet


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the contact sheet (.jpg or .png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=256, help="long side of each scene in pixels")
    parser.add_argument("--people", type=int, nargs=2, default=(1, 2), metavar=("MIN", "MAX"))
    parser.add_argument("--animals", type=int, nargs=2, default=(1, 2), metavar=("MIN", "MAX"))
    args = parser.parse_args(argv)
    sheet = contact_sheet(args.seed, args.scenes, args.columns, args.image_size, tuple(args.people),
                          tuple(args.animals))
    if os.path.dirname(args.output):
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
    if not cv2.imwrite(args.output, sheet, [cv2.IMWRITE_JPEG_QUALITY, 85]):
        print(f"error: could not write {args.output}", file=sys.stderr)
        return 2
    print(f"{args.output}: {args.scenes} scenes, {os.path.getsize(args.output) // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

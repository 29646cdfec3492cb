"""Synthetic people: an articulated body with human proportions, posed within human joint ranges, seen by an
orthographic camera and drawn as filled, outlined parts, with a mask of which figure owns each pixel.

The body lives in its own frame (X = the figure's left, Y = up, Z = the way it faces; unit = its stature, origin =
the pelvis). A pose is a set of joint angles; forward kinematics gives 3D joints; the camera turns the figure by
`yaw` (0 = facing the camera, so its left side is on the image's right) and `roll`, scales it to `stature_px` and
puts the pelvis at `origin`. Image coordinates put pixel centres at integers (OpenCV's convention).

Named joints are what the figure can place: the keypoints of a keypoint set are looked up here by name, in the
set's own order, so no keypoint table lives in this file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

SIDES = (("left", 1.0), ("right", -1.0))  # the sign is the side's X direction in the body frame

# A face point whose depth (towards the camera, in head radii from the head's centre) is below this is behind
# the head: it is neither drawn nor labelled.
FACE_HIDDEN_DEPTH = -0.25
# Sub-pixel precision of OpenCV's polygon filling (coordinates times 2**4).
DRAW_SHIFT = 4


@dataclass(frozen=True)
class Build:
    """Body dimensions as fractions of stature (anthropometric averages, varied per figure)."""

    torso: float = 0.29  # pelvis to the base of the neck
    shoulder_half_width: float = 0.115
    hip_half_width: float = 0.065
    waist_half_width: float = 0.085
    torso_half_depth: float = 0.06
    upper_arm: float = 0.175
    forearm: float = 0.155
    thigh: float = 0.245
    shin: float = 0.24
    neck: float = 0.045
    head_radius: float = 0.064
    foot: float = 0.07
    upper_arm_radius: float = 0.032
    forearm_radius: float = 0.026
    hand_radius: float = 0.024
    thigh_radius: float = 0.05
    knee_radius: float = 0.037
    ankle_radius: float = 0.026
    neck_radius: float = 0.028


def random_build(rng: np.random.Generator) -> Build:
    """Proportions within about +-10 %, girth (limb radii, torso width) within -15 % to +30 %."""
    base = Build()
    girth = rng.uniform(0.85, 1.3)
    values = {}
    for name in base.__dataclass_fields__:
        value = getattr(base, name) * rng.uniform(0.9, 1.1)
        if name.endswith("radius") and name != "head_radius" or name.endswith("width") or name.endswith("depth"):
            value *= girth
        values[name] = value
    return Build(**values)


@dataclass(frozen=True)
class Pose:
    """Joint angles in radians. Per-side values are (left, right)."""

    torso_lean: float = 0.0  # forward
    torso_bend: float = 0.0  # sideways
    torso_twist: float = 0.0  # upper body about the spine
    head_yaw: float = 0.0
    head_pitch: float = 0.0  # down
    head_roll: float = 0.0
    shoulder_abduction: tuple[float, float] = (0.15, 0.15)  # arm away from the body, sideways
    shoulder_flexion: tuple[float, float] = (0.0, 0.0)  # arm forwards
    arm_twist: tuple[float, float] = (0.0, 0.0)  # turns the plane the elbow bends in
    elbow: tuple[float, float] = (0.1, 0.1)
    hip_flexion: tuple[float, float] = (0.0, 0.0)  # thigh forwards
    hip_abduction: tuple[float, float] = (0.05, 0.05)
    knee: tuple[float, float] = (0.05, 0.05)
    pelvis_rise: float = 0.0  # vertical bob of the walk, in statures


def _triangular(rng: np.random.Generator, low: float, mode: float, high: float) -> float:
    return math.radians(rng.triangular(low, mode, high))


def random_pose(rng: np.random.Generator) -> Pose:
    """Angles drawn within human ranges (degrees below), most likely near a relaxed stance."""
    def per_side(low, mode, high):
        return (_triangular(rng, low, mode, high), _triangular(rng, low, mode, high))

    return Pose(
        torso_lean=_triangular(rng, -10, 0, 35),
        torso_bend=_triangular(rng, -15, 0, 15),
        torso_twist=_triangular(rng, -30, 0, 30),
        head_yaw=_triangular(rng, -60, 0, 60),
        head_pitch=_triangular(rng, -25, 0, 30),
        head_roll=_triangular(rng, -20, 0, 20),
        shoulder_abduction=per_side(-5, 10, 150),
        shoulder_flexion=per_side(-45, 0, 160),
        arm_twist=per_side(-60, 0, 90),
        elbow=per_side(0, 20, 145),
        hip_flexion=per_side(-25, 0, 110),
        hip_abduction=per_side(-10, 5, 45),
        knee=per_side(0, 5, 130),
    )


def walk_pose(phase: float, arm_swing: float = 1.0, stride: float = 1.0) -> Pose:
    """A walk cycle: `phase` in radians (2 pi = two steps); legs swing in opposition, each arm with the other
    side's leg, the knee bends in the swing phase and the pelvis bobs twice per cycle."""
    def leg(offset):
        swing = math.sin(phase + offset)
        hip = math.radians(22 * stride) * swing
        # the knee flexes most while the leg swings forward (just before its hip is most flexed)
        knee = math.radians(8 + 50 * stride * max(0.0, math.sin(phase + offset + 0.9)) ** 2)
        return hip, knee

    (left_hip, left_knee), (right_hip, right_knee) = leg(0.0), leg(math.pi)
    left_arm = -math.radians(25 * arm_swing) * math.sin(phase)
    return Pose(
        torso_lean=math.radians(4),
        torso_twist=math.radians(6) * math.sin(phase),
        head_pitch=math.radians(5),
        shoulder_abduction=(math.radians(8), math.radians(8)),
        shoulder_flexion=(left_arm, -left_arm),
        elbow=(math.radians(20) + max(0.0, left_arm), math.radians(20) + max(0.0, -left_arm)),
        hip_flexion=(left_hip, right_hip),
        knee=(left_knee, right_knee),
        pelvis_rise=0.008 * math.cos(2 * phase),
    )


def _rot_x(a: float) -> np.ndarray:  # tilts +Y towards +Z
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:  # turns +Z towards +X
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:  # turns +X towards +Y
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


DOWN = np.array([0.0, -1.0, 0.0])
UP = -DOWN


@dataclass(frozen=True)
class Skeleton3D:
    """Joints and the body's frames in the figure's own 3D frame."""

    joints: dict  # name -> (3,) position
    upper_body: np.ndarray  # rotation of the chest
    head: np.ndarray  # rotation of the head


def skeleton_3d(build: Build, pose: Pose) -> Skeleton3D:
    b = build
    joints: dict[str, np.ndarray] = {}
    pelvis = np.array([0.0, pose.pelvis_rise, 0.0])
    chest = _rot_y(pose.torso_twist) @ _rot_z(pose.torso_bend) @ _rot_x(pose.torso_lean)
    neck_base = pelvis + chest @ (UP * b.torso)
    head = chest @ _rot_y(pose.head_yaw) @ _rot_x(-pose.head_pitch) @ _rot_z(pose.head_roll)
    head_centre = neck_base + chest @ (UP * b.neck) + head @ (UP * b.head_radius * 0.9)
    joints["pelvis"] = pelvis
    joints["thorax"] = neck_base
    joints["neck"] = neck_base + chest @ (UP * b.neck * 0.4)
    joints["upper_neck"] = neck_base + chest @ (UP * b.neck)
    joints["head_centre"] = head_centre
    # just inside the head's outline, so the point lies on the drawn head
    joints["head_top"] = head_centre + head @ (UP * b.head_radius * 0.9)
    for side, sign in SIDES:
        i = 0 if side == "left" else 1
        shoulder = neck_base + chest @ np.array([sign * b.shoulder_half_width, -0.025, 0.0])
        arm = _rot_x(-pose.shoulder_flexion[i]) @ _rot_z(sign * pose.shoulder_abduction[i])
        elbow = shoulder + chest @ arm @ (DOWN * b.upper_arm)
        forearm = arm @ _rot_y(sign * pose.arm_twist[i]) @ _rot_x(-pose.elbow[i])
        wrist = elbow + chest @ forearm @ (DOWN * b.forearm)
        joints[f"{side}_shoulder"], joints[f"{side}_elbow"], joints[f"{side}_wrist"] = shoulder, elbow, wrist
        joints[f"{side}_hand"] = wrist + chest @ forearm @ (DOWN * b.hand_radius * 1.2)

        hip = pelvis + np.array([sign * b.hip_half_width, 0.0, 0.0])
        thigh = _rot_x(-pose.hip_flexion[i]) @ _rot_z(sign * pose.hip_abduction[i])
        knee = hip + thigh @ (DOWN * b.thigh)
        shin = thigh @ _rot_x(pose.knee[i])
        ankle = knee + shin @ (DOWN * b.shin)
        joints[f"{side}_hip"], joints[f"{side}_knee"], joints[f"{side}_ankle"] = hip, knee, ankle
        joints[f"{side}_toe"] = ankle + shin @ _rot_x(-math.radians(80)) @ (DOWN * b.foot)
    for name, point in _face_points(build).items():
        joints[name] = head_centre + head @ point
    return Skeleton3D(joints, chest, head)


def _face_points(build: Build) -> dict[str, np.ndarray]:
    """Facial keypoints on the head sphere, in the head's frame."""
    r = build.head_radius
    points = {"nose": np.array([0.0, -0.15, 1.0]) * r}
    for side, sign in SIDES:
        points[f"{side}_eye"] = np.array([sign * 0.38, 0.12, 0.88]) * r
        points[f"{side}_ear"] = np.array([sign * 0.97, 0.0, 0.05]) * r
    return points


FACE_POINTS = tuple(_face_points(Build()))
BODY_POINTS = tuple(skeleton_3d(Build(), Pose()).joints)


@dataclass(frozen=True)
class Palette:
    """Colours (BGR) of one figure."""

    skin: tuple
    hair: tuple
    shirt: tuple
    trousers: tuple
    shoes: tuple
    long_sleeves: bool


def _hsv_to_bgr(h: float, s: float, v: float) -> tuple:
    pixel = np.uint8([[[round(h * 179) % 180, round(s * 255), round(v * 255)]]])
    return tuple(int(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0])


def random_palette(rng: np.random.Generator) -> Palette:
    """Clothes of any hue, mostly saturated; skin tones from pale to dark; dark shoes."""
    skin = _hsv_to_bgr(rng.uniform(0.02, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    hair = _hsv_to_bgr(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.55))
    shirt = _hsv_to_bgr(rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.4, 1.0))
    trousers = _hsv_to_bgr(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.25, 0.85))
    shoes = _hsv_to_bgr(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.05, 0.3))
    return Palette(skin, hair, shirt, trousers, shoes, bool(rng.uniform() < 0.5))


@dataclass(frozen=True)
class Figure:
    """A posed body placed in an image."""

    build: Build
    pose: Pose
    palette: Palette
    stature_px: float
    origin: tuple  # pelvis (x, y) in image pixels
    yaw: float = 0.0
    roll: float = 0.0
    side_shade: float = 0.3  # left parts lightened, right parts darkened by this share: left/right is visible
    # Joints drawn as discs in a contrasting shade (an artist's mannequin): a joint's centre is then visible,
    # which is what lets a small network place keypoints precisely after little training. 0 = no discs.
    joint_marker_shade: float = 0.35

    def moved(self, **changes) -> "Figure":
        return replace(self, **changes)


@dataclass
class Projected:
    """A figure in image pixels: each named point's (x, y), its depth (towards the camera, in statures) and
    whether it can be seen from the camera's side of the head (face points only; body points always can)."""

    points: dict = field(default_factory=dict)
    depth: dict = field(default_factory=dict)
    facing: dict = field(default_factory=dict)


def camera_rotation(figure: Figure) -> np.ndarray:
    return _rot_z(figure.roll) @ _rot_y(figure.yaw)


def project(figure: Figure, skeleton: Skeleton3D | None = None) -> Projected:
    skeleton = skeleton or skeleton_3d(figure.build, figure.pose)
    camera = camera_rotation(figure)
    ox, oy = figure.origin
    out = Projected()
    head_centre_z = (camera @ skeleton.joints["head_centre"])[2]
    for name, point in skeleton.joints.items():
        x, y, z = camera @ point
        out.points[name] = (ox + figure.stature_px * x, oy - figure.stature_px * y)
        out.depth[name] = z
        out.facing[name] = (name not in FACE_POINTS
                            or (z - head_centre_z) / figure.build.head_radius > FACE_HIDDEN_DEPTH)
    return out


def unit_extent(figure: Figure) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the figure's joints relative to its origin, per pixel of stature, padded by
    the head radius: how much room the figure needs around its pelvis."""
    unit = project(figure.moved(stature_px=1.0, origin=(0.0, 0.0)))
    xy = np.array(list(unit.points.values()))
    pad = figure.build.head_radius
    return xy[:, 0].min() - pad, xy[:, 1].min() - pad, xy[:, 0].max() + pad, xy[:, 1].max() + pad


# ----------------------------------------------------------------------------------------------- drawing
def _shade(colour: tuple, amount: float) -> tuple:
    """Lighten (amount > 0) towards white or darken (< 0) towards black."""
    if amount > 0:
        return tuple(int(round(c + (255 - c) * amount)) for c in colour)
    return tuple(int(round(c * (1 + amount))) for c in colour)


def _contrast(colour: tuple, amount: float) -> tuple:
    """Darken a light colour, lighten a dark one."""
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    return _shade(colour, -amount if luminance > 110 else amount)


def _unit_arc(start: float, stop: float, points: int) -> np.ndarray:
    angles = np.linspace(start, stop, points, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


_CIRCLES: dict[int, np.ndarray] = {}


def disc_polygon(centre, radius: float, segments: int = 16) -> np.ndarray:
    if segments not in _CIRCLES:
        _CIRCLES[segments] = _unit_arc(0, 2 * np.pi, segments)
    return np.asarray(centre, np.float64) + radius * _CIRCLES[segments]


_HALF_CIRCLES: dict[int, np.ndarray] = {}


def capsule_polygon(p0, r0: float, p1, r1: float, segments: int = 8) -> np.ndarray:
    """A segment with rounded ends of radius r0 at p0 and r1 at p1 (a tapered limb)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    if np.hypot(*d) < 1e-6:
        return disc_polygon(p0, max(r0, r1), 2 * segments)
    if segments not in _HALF_CIRCLES:
        _HALF_CIRCLES[segments] = _unit_arc(-np.pi / 2, np.pi / 2 * (1 + 2 / segments), segments + 1)
    half = _HALF_CIRCLES[segments]  # around +x, from -y to +y
    c, s = d / np.hypot(*d)
    turned = half @ np.array([[c, s], [-s, c]])  # around the limb's direction
    return np.concatenate([p1 + r1 * turned, p0 - r0 * turned])


@dataclass
class Shape:
    """One filled polygon of a figure; shapes are drawn far to near."""

    depth: float
    polygon: np.ndarray  # (N, 2) image pixels
    colour: tuple
    outline: bool = True


# Smallest radius a part is drawn with, in pixels, so every joint lies on its figure's pixels however small.
MIN_PART_RADIUS_PX = 1.5


def figure_shapes(figure: Figure, projected: Projected | None = None) -> list[Shape]:
    """The figure as shapes in drawing order (far to near; ties keep the body's natural layering)."""
    skeleton = skeleton_3d(figure.build, figure.pose)
    projected = projected or project(figure, skeleton)
    p, z, b, pal = projected.points, projected.depth, figure.build, figure.palette
    px = figure.stature_px
    camera = camera_rotation(figure)

    def radius(r):
        return max(MIN_PART_RADIUS_PX, r * px)

    shapes: list[Shape] = []

    def limb(a, b_, ra, rb, colour, bias=0.0) -> float:
        depth = (z[a] + z[b_]) / 2 + bias
        shapes.append(Shape(depth, capsule_polygon(p[a], radius(ra), p[b_], radius(rb)), colour))
        return depth

    def joint_marker(name, r, colour, *limb_depths):
        """Just in front of the limbs meeting there, so both ends lie under it."""
        if figure.joint_marker_shade > 0:
            shapes.append(Shape(max(limb_depths) + 1e-4, disc_polygon(p[name], 0.75 * radius(r), 12),
                                _contrast(colour, figure.joint_marker_shade), outline=False))

    # Torso halves: convex hulls of a box's corners from the shoulders down to the hips, so the torso keeps its
    # depth when seen from the side. Each half is shaded like its side's limbs.
    chest, joints = skeleton.upper_body, skeleton.joints
    for side, sign in SIDES:
        shade = figure.side_shade if side == "left" else -figure.side_shade
        corners = []
        for width, frame, centre in (
                (b.shoulder_half_width + 0.6 * b.upper_arm_radius, chest, joints["thorax"] + chest @ (DOWN * 0.035)),
                (b.waist_half_width, chest, joints["pelvis"] + chest @ (UP * b.torso * 0.45)),
                (b.hip_half_width + 0.6 * b.thigh_radius, np.eye(3), joints["pelvis"] + DOWN * 0.03)):
            for x in (0.0, sign * width):
                for depth in (-b.torso_half_depth, b.torso_half_depth):
                    corners.append(centre + frame @ np.array([x, 0.0, depth]))
        cam = (camera @ np.array(corners).T).T
        xy = np.stack([figure.origin[0] + px * cam[:, 0], figure.origin[1] - px * cam[:, 1]], axis=1)
        hull = cv2.convexHull(xy.astype(np.float32))[:, 0, :]
        # a little further than the limbs' axes, which lie inside the body at the same depth
        shapes.append(Shape(float(cam[:, 2].mean()) - 0.03, hull, _shade(pal.shirt, shade)))

    limb("thorax", "upper_neck", b.neck_radius, b.neck_radius, pal.skin, bias=-0.02)
    for side, sign in SIDES:
        shade = figure.side_shade if side == "left" else -figure.side_shade
        shirt, trousers = _shade(pal.shirt, shade), _shade(pal.trousers, shade)
        skin, shoes = _shade(pal.skin, shade * 0.5), _shade(pal.shoes, shade)
        sleeve = shirt if pal.long_sleeves else _shade(skin, -0.08)
        shin = _shade(trousers, -0.1)
        upper_arm = limb(f"{side}_shoulder", f"{side}_elbow", b.upper_arm_radius, b.upper_arm_radius * 0.9, shirt)
        forearm = limb(f"{side}_elbow", f"{side}_wrist", b.forearm_radius, b.forearm_radius * 0.85, sleeve)
        hand = limb(f"{side}_wrist", f"{side}_hand", b.hand_radius * 0.8, b.hand_radius, skin)
        thigh = limb(f"{side}_hip", f"{side}_knee", b.thigh_radius, b.knee_radius, trousers)
        lower_leg = limb(f"{side}_knee", f"{side}_ankle", b.knee_radius, b.ankle_radius, shin)
        foot = limb(f"{side}_ankle", f"{side}_toe", b.ankle_radius, b.ankle_radius * 0.8, shoes)
        joint_marker(f"{side}_shoulder", b.upper_arm_radius, shirt, upper_arm)
        joint_marker(f"{side}_elbow", b.forearm_radius, sleeve, upper_arm, forearm)
        joint_marker(f"{side}_wrist", b.forearm_radius * 0.85, skin, forearm, hand)
        joint_marker(f"{side}_hip", b.knee_radius, trousers, thigh)
        joint_marker(f"{side}_knee", b.knee_radius, shin, thigh, lower_leg)
        joint_marker(f"{side}_ankle", b.ankle_radius, shoes, lower_leg, foot)

    # Head: hair all round, the face where the head turns to the camera, then the features that face it.
    head_r = radius(b.head_radius)
    head_z = z["head_centre"]
    centre = p["head_centre"]
    shapes.append(Shape(head_z, disc_polygon(centre, head_r, 24), pal.hair))
    face_centre = camera @ skeleton.head @ np.array([0.0, -0.25, 0.55])
    if face_centre[2] > -0.2:
        face = (centre[0] + face_centre[0] * head_r, centre[1] - face_centre[1] * head_r)
        shapes.append(Shape(head_z + 1e-4, disc_polygon(face, 0.82 * head_r, 24), pal.skin, outline=False))
    feature = head_z + 2e-4
    for side, _ in SIDES:
        ear = f"{side}_ear"
        if projected.facing[ear]:
            shapes.append(Shape(feature, disc_polygon(p[ear], max(1.0, 0.26 * head_r), 10), _shade(pal.skin, -0.15)))
    for side, _ in SIDES:
        eye = f"{side}_eye"
        if projected.facing[eye]:
            shapes.append(Shape(feature, disc_polygon(p[eye], max(1.0, 0.2 * head_r), 10), (235, 235, 235),
                                outline=False))
            shapes.append(Shape(feature + 1e-5, disc_polygon(p[eye], max(0.6, 0.1 * head_r), 8), (30, 25, 20),
                                outline=False))
    if projected.facing["nose"]:
        shapes.append(Shape(feature, disc_polygon(p["nose"], max(1.0, 0.16 * head_r), 10), _shade(pal.skin, -0.3),
                            outline=False))
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i].depth, i))
    return [shapes[i] for i in order]


def _fixed_point(polygon: np.ndarray) -> np.ndarray:
    return np.round(polygon * (1 << DRAW_SHIFT)).astype(np.int32)


def draw_shapes(image: np.ndarray | None, id_mask: np.ndarray | None, figure_id: int, shapes: list[Shape]) -> None:
    """Paint shapes into a BGR image (anti-aliased, outlined) and `figure_id` into an id mask (hard edges)."""
    for shape in shapes:
        polygon = _fixed_point(shape.polygon)
        if image is not None:
            cv2.fillPoly(image, [polygon], shape.colour, cv2.LINE_AA, shift=DRAW_SHIFT)
            if shape.outline:
                cv2.polylines(image, [polygon], True, _shade(shape.colour, -0.55), 1, cv2.LINE_AA, shift=DRAW_SHIFT)
        if id_mask is not None:
            cv2.fillPoly(id_mask, [polygon], int(figure_id), cv2.LINE_8, shift=DRAW_SHIFT)


def figure_mask(figure: Figure, height: int, width: int) -> np.ndarray:
    """The pixels the figure covers when drawn alone (bool)."""
    mask = np.zeros((height, width), np.uint8)
    draw_shapes(None, mask, 1, figure_shapes(figure))
    return mask.astype(bool)


def known_point_names() -> tuple[str, ...]:
    return BODY_POINTS

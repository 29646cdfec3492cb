"""Render ideal heatmaps and PAFs for known people (a test oracle, independent of the training targets code)."""
import numpy as np


def render_maps(people, keypoint_set, height, width, sigma=2.0, paf_width=1.5):
    """people: list of (K, 2) arrays in map pixels, NaN where a keypoint is absent."""
    k = keypoint_set.num_keypoints
    heatmaps = np.zeros((k + 1, height, width), np.float32)
    pafs = np.zeros((keypoint_set.num_pafs, height, width), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for points in people:
        points = np.asarray(points, np.float32)
        for j in range(k):
            if np.isnan(points[j]).any():
                continue
            g = np.exp(-((xs - points[j, 0]) ** 2 + (ys - points[j, 1]) ** 2) / (2 * sigma ** 2))
            heatmaps[j] = np.maximum(heatmaps[j], g)
        for limb, (a, b) in enumerate(keypoint_set.limb_keypoints):
            pa, pb = points[a], points[b]
            if np.isnan(pa).any() or np.isnan(pb).any():
                continue
            v = pb - pa
            length = np.linalg.norm(v)
            u = v / length
            rel_x, rel_y = xs - pa[0], ys - pa[1]
            along = rel_x * u[0] + rel_y * u[1]
            across = np.abs(rel_x * u[1] - rel_y * u[0])
            # like training targets, the field reaches paf_width past both ends of the segment
            inside = (along >= -paf_width) & (along <= length + paf_width) & (across <= paf_width)
            cx, cy = keypoint_set.limb_paf_channels[limb]
            pafs[cx][inside] = u[0]
            pafs[cy][inside] = u[1]
    heatmaps[k] = 1 - heatmaps[:k].max(axis=0)
    return heatmaps, pafs


def standing_person(keypoint_set, center_x, top_y, scale=1.0):
    """A frontal human figure for sets whose names are COCO-like (missing names stay NaN)."""
    layout = {
        "nose": (0, 0), "left_eye": (2, -2), "right_eye": (-2, -2), "left_ear": (4, 0), "right_ear": (-4, 0),
        "neck": (0, 8), "left_shoulder": (8, 8), "right_shoulder": (-8, 8), "left_elbow": (10, 20),
        "right_elbow": (-10, 20), "left_wrist": (11, 31), "right_wrist": (-11, 31), "left_hip": (5, 34),
        "right_hip": (-5, 34), "left_knee": (6, 50), "right_knee": (-6, 50), "left_ankle": (6, 66),
        "right_ankle": (-6, 66), "head_top": (0, -8), "thorax": (0, 8), "upper_neck": (0, 5), "pelvis": (0, 34),
    }
    # image x grows to the right; a person facing the camera has their left side on the image's right
    points = np.full((keypoint_set.num_keypoints, 2), np.nan, np.float32)
    for i, name in enumerate(keypoint_set.keypoints):
        if name in layout:
            dx, dy = layout[name]
            points[i] = (center_x + dx * scale, top_y + (dy + 8) * scale)
    return points

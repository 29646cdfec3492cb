"""Drawing: limb colours come from the keypoint set's sides, limbs are drawn where the people are, and missing
keypoints draw nothing."""
import numpy as np
from synthetic_maps import standing_person

from lwpose.inference.drawing import SIDE_COLOURS, PoseDrawer, id_colour, limb_colours
from lwpose.inference.grouping import People
from lwpose.keypoints import load_keypoint_set


def colour_of(keypoint_set, a, b):
    return limb_colours(keypoint_set)[keypoint_set.limbs.index((a, b))]


def test_limb_colours_follow_the_body_side_of_any_set():
    lwop = load_keypoint_set("lwop18")
    assert colour_of(lwop, "left_shoulder", "left_elbow") == SIDE_COLOURS["left"]
    assert colour_of(lwop, "right_knee", "right_ankle") == SIDE_COLOURS["right"]
    assert colour_of(lwop, "neck", "left_shoulder") == SIDE_COLOURS["left"]  # a centre keypoint joins a side
    assert colour_of(lwop, "neck", "nose") == SIDE_COLOURS["center"]
    coco = load_keypoint_set("coco")
    assert colour_of(coco, "left_hip", "right_hip") == SIDE_COLOURS["center"]  # across the body
    animal = load_keypoint_set("ap10k")
    assert len(limb_colours(animal)) == animal.num_limbs


def test_people_are_drawn_where_they_are_and_missing_keypoints_draw_nothing():
    ks = load_keypoint_set("lwop18")
    points = standing_person(ks, 100, 20, scale=2.0)
    keypoints = np.concatenate([points, np.ones((ks.num_keypoints, 1))], axis=1).astype(np.float32)
    keypoints[ks.index["left_wrist"]] = (-1, -1, 0)  # missing: no limb towards (-1, -1)
    people = People(keypoints[None], np.ones(1, np.float32), np.ones(1, np.int32))
    image = np.zeros((200, 200, 3), np.uint8)
    PoseDrawer(ks, thickness=3).draw(image, people, ids=np.array([4]))
    elbow = np.round(points[ks.index["left_elbow"]]).astype(int)
    shoulder = np.round(points[ks.index["left_shoulder"]]).astype(int)
    middle = (elbow + shoulder) // 2
    assert tuple(image[middle[1], middle[0]]) == SIDE_COLOURS["left"]
    assert not image[:10, :10].any()
    assert (image == id_colour(4)).all(axis=2).any()  # the id's box and label
    assert id_colour(4) != id_colour(5)


def test_a_multi_class_set_colours_each_class_by_side_in_its_own_colours():
    from lwpose.inference.drawing import side_colours

    person, animal = load_keypoint_set("coco").to_dict(), load_keypoint_set("ap10k").to_dict()
    whole = load_keypoint_set({"name": "both", "classes": [{**person, "name": "person"}, {**animal, "name": "animal"}]})
    assert colour_of(whole, "left_shoulder", "left_elbow") == SIDE_COLOURS["left"]
    assert colour_of(whole, "animal/left_shoulder", "animal/left_elbow") == side_colours(1)["left"]
    assert colour_of(whole, "animal/right_hip", "animal/right_knee") == side_colours(1)["right"]
    assert side_colours(1)["left"] not in SIDE_COLOURS.values()

"""A tiny real training set made on the spot (random-texture images, one labelled person each), so that the
reliability tests of train.py need nothing from ../shared and start fast."""
import json

import cv2
import numpy as np

from lwpose.datasets.coco_reader import read_coco_keypoints
from lwpose.datasets.prepared_labels import build_prepared_labels
from lwpose.keypoints import load_keypoint_set

IMAGE_SIZE = 96


def person_keypoints(keypoint_set, rng) -> list[float]:
    """A person filling most of the image, every keypoint visible, at random places around a vertical axis."""
    values = []
    for j in range(keypoint_set.num_keypoints):
        y = 10 + (IMAGE_SIZE - 20) * j / max(1, keypoint_set.num_keypoints - 1)
        values += [float(rng.uniform(25, IMAGE_SIZE - 25)), float(y), 2.0]
    return values


def write_tiny_training_set(folder, num_images: int = 6, seed: int = 0) -> tuple[str, str]:
    """Images in folder/images, COCO labels and prepared lwop18 labels; returns (prepared labels, images folder)."""
    rng = np.random.default_rng(seed)
    coco = load_keypoint_set("coco")
    images_folder = folder / "images"
    images_folder.mkdir(parents=True, exist_ok=True)
    data = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "person", "keypoints": list(coco.keypoints)}]}
    for i in range(num_images):
        name = f"{i:03d}.jpg"
        cv2.imwrite(str(images_folder / name), rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
        data["images"].append({"id": i + 1, "file_name": name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        data["annotations"].append({"id": 100 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                    "bbox": [15.0, 5.0, IMAGE_SIZE - 30.0, IMAGE_SIZE - 10.0],
                                    "area": float((IMAGE_SIZE - 30) * (IMAGE_SIZE - 10)),
                                    "keypoints": person_keypoints(coco, rng)})
    labels_path = folder / "labels.json"
    labels_path.write_text(json.dumps(data))
    target = load_keypoint_set("lwop18")
    prepared = build_prepared_labels(read_coco_keypoints(str(labels_path), target), target,
                                     images_folder=str(images_folder))
    prepared.save(str(folder / "prepared.json"))
    return str(folder / "prepared.json"), str(images_folder)

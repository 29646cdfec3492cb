"""Helpers for the mixing tests: recipes over the real samples in ../shared, written with absolute paths."""
import json
import os

from conftest import COCO_MINI_IMAGES, COCO_MINI_LABELS, MMPOSE_SAMPLES, REPO_ROOT

RECIPES = os.path.join(REPO_ROOT, "datasets", "recipes")
PEOPLE_UNION = os.path.join(RECIPES, "lwop18_head_top.json")
ANIMAL_UNION = os.path.join(RECIPES, "animal_union.json")


def sample_source(name: str, keypoints: str, file_name: str, fmt: str = "coco", **extra) -> dict:
    folder = os.path.join(MMPOSE_SAMPLES, name)
    return {"name": name, "format": fmt, "keypoints": keypoints, "labels": os.path.join(folder, file_name),
            "images_folder": folder, **extra}


def coco_mini_source(**extra) -> dict:
    return {"name": "coco", "format": "coco", "keypoints": "coco", "labels": COCO_MINI_LABELS,
            "images_folder": COCO_MINI_IMAGES, **extra}


def aic_source(**extra) -> dict:
    return sample_source("aic", "aic", "test_aic.json", **extra)


def mpii_source(**extra) -> dict:
    return sample_source("mpii", "mpii", "test_mpii.json", fmt="mpii", **extra)


def people_recipe(sources: list[dict], target: dict | None = None) -> dict:
    return {"name": "people", "target": target or {"mode": "combine", "keypoints": PEOPLE_UNION}, "sources": sources}


def write_recipe(path, recipe: dict) -> str:
    with open(path, "w") as f:
        json.dump(recipe, f, indent=1)
    return str(path)

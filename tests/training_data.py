"""Helpers for the training tests: running the real command-line tools and making small real label files."""
import json
import os
import subprocess
import sys
from collections import Counter

from conftest import MMPOSE_SAMPLES, REPO_ROOT

# Each shipped set's sample in ../shared/data/mmpose_samples: (folder, annotation file, keypoint set).
SHIPPED_SAMPLES = [("coco", "test_coco.json", "coco"), ("ochuman", "test_ochuman.json", "coco"),
                   ("crowdpose", "test_crowdpose.json", "crowdpose"), ("aic", "test_aic.json", "aic"),
                   ("ap10k", "test_ap10k.json", "ap10k"), ("animalpose", "test_animalpose.json", "animalpose")]


def sample_paths(folder: str, file_name: str) -> tuple[str, str]:
    return os.path.join(MMPOSE_SAMPLES, folder, file_name), os.path.join(MMPOSE_SAMPLES, folder)


def run_tool(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    """A script or entry point of the repository, run as a user runs it."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def prepare(labels: str, images: str, keypoints: str, output, *extra) -> subprocess.CompletedProcess:
    result = run_tool("scripts/prepare_train_labels.py", "--labels", labels, "--images-folder", images,
                      "--keypoints", keypoints, "--output-name", output, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def single_person_subset(labels: str, count: int, output) -> str:
    """A copy of a COCO file with only its first `count` images that hold exactly one training-sized person."""
    with open(labels) as f:
        data = json.load(f)
    sized = Counter(a["image_id"] for a in data["annotations"]
                    if not a["iscrowd"] and a["num_keypoints"] >= 5 and a["area"] >= 32 * 32)
    keep = set(sorted(i for i, n in sized.items() if n == 1)[:count])
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    with open(output, "w") as f:
        json.dump(data, f)
    return str(output)

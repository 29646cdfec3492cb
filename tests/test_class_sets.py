"""Multi-class keypoint sets built from shipped sets by scripts/make_keypoint_set.py --classes."""
import json
import os
import subprocess
import sys

from conftest import REPO_ROOT

from lwpose.keypoints import load_keypoint_set


def make_set(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "make_keypoint_set.py"), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT)


def test_classes_from_shipped_sets(tmp_path):
    output = str(tmp_path / "people_animals.json")
    result = make_set("--classes", "person=coco", "animal=ap10k", "--output", output)
    assert result.returncode == 0, result.stderr
    whole = load_keypoint_set(output)
    assert [c.name for c in whole.classes] == ["person", "animal"]
    coco, ap10k = load_keypoint_set("coco"), load_keypoint_set("ap10k")
    person, animal = whole.classes
    # each class is its shipped set: names, limbs and sigmas; the base keeps its channel names
    assert person.keypoint_set.keypoints == coco.keypoints and animal.keypoint_set.keypoints == ap10k.keypoints
    assert person.keypoint_set.limbs == coco.limbs and animal.keypoint_set.sigmas == ap10k.sigmas
    assert whole.keypoints[:coco.num_keypoints] == coco.keypoints
    assert whole.keypoints[coco.num_keypoints:] == tuple(f"animal/{name}" for name in ap10k.keypoints)
    assert whole.num_limbs == coco.num_limbs + ap10k.num_limbs
    with open(output) as f:
        assert [c["name"] for c in json.load(f)["classes"]] == ["person", "animal"]


def test_shared_channel_and_malformed_classes_fail_clearly(tmp_path):
    output = str(tmp_path / "shared.json")
    result = make_set("--classes", "person=coco", "animal=ap10k", "--share", "person:nose", "animal:nose",
                      "--output", output)
    assert result.returncode == 0, result.stderr
    whole = load_keypoint_set(output)
    assert whole.num_keypoints == 33 and whole.classes[1].channels[2] == whole.index["nose"]

    bad = make_set("--classes", "person=coco", "animal", "--output", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "--classes animal: expected NAME=SET" in bad.stderr
    sides = make_set("--classes", "person=coco", "animal=ap10k", "--share", "person:nose", "animal:left_eye",
                     "--output", str(tmp_path / "bad.json"))
    assert sides.returncode == 2 and "shared[0]" in sides.stderr and "different sides" in sides.stderr
    assert not os.path.exists(tmp_path / "bad.json")

"""Translation between keypoint sets (scripts/translate_keypoints.py): learnt on synthetic people labelled in COCO
and MPII at once, it places MPII's head top, upper neck, thorax and pelvis from COCO's keypoints; the reverse is
reported; a round trip stays within the reported errors; apply adds the keypoints the translator predicts."""
import json
import os

import numpy as np
import pytest
from training_data import run_tool

from conftest import REPO_ROOT

from lwpose.keypoints import load_keypoint_set
from lwpose.labels.translation import (TranslationError, Translator, fit_translator, load_translator, pair_people,
                                       score_translation, split_held_out)

MPII_EXTRAS = ("head_top", "upper_neck", "thorax", "pelvis")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Synthetic people labelled in COCO and MPII (the same figures), and the translators fit learns from them."""
    folder = tmp_path_factory.mktemp("translation")
    data = folder / "data"
    result = run_tool("scripts/synthetic_data.py", "--output-dir", data, "--train-images", 300, "--val-images", 0,
                      "--mix-images", 0, "--video-frames", 0, "--image-size", 160, "--also-keypoints", "mpii",
                      "--seed", 5, "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    coco, mpii = data / "train" / "person_keypoints.json", data / "train" / "person_keypoints_mpii.json"
    output, metrics = folder / "coco_to_mpii.json", folder / "metrics.json"
    result = run_tool("scripts/translate_keypoints.py", "fit", "--source-labels", coco, "--source-keypoints", "coco",
                      "--target-labels", mpii, "--target-keypoints", "mpii", "--output", output,
                      "--metrics-out", metrics)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(metrics) as f:
        return {"coco": str(coco), "mpii": str(mpii), "forward": str(output),
                "reverse": str(folder / "coco_to_mpii_reverse.json"), "metrics": json.load(f),
                "stdout": result.stdout, "folder": folder}


def test_coco_to_mpii_places_head_top_neck_thorax_and_pelvis_within_half_a_head(fitted):
    forward = load_translator(fitted["forward"])
    assert (forward.source.name, forward.target.name) == ("coco", "mpii")
    held_out = forward.report["held_out"]
    assert held_out["held_out_people"] >= 50
    for name in MPII_EXTRAS:
        assert held_out["keypoints"][name]["pckh@0.5"] >= 0.9, (name, held_out["keypoints"][name])
    # Both methods are fitted and reported, both directions.
    for direction in ("coco->mpii", "mpii->coco"):
        for method in ("ridge", "mlp"):
            assert fitted["metrics"][direction][method]["pck@0.1"] > 0.8, (direction, method)
    assert "PCKh@0.5" in fitted["stdout"] and "mpii -> coco" in fitted["stdout"]
    reverse = load_translator(fitted["reverse"])
    assert (reverse.source.name, reverse.target.name) == ("mpii", "coco")
    assert "pckh@0.5" not in reverse.report["held_out"]  # COCO has no head-size keypoints


def held_out_people(fitted):
    from translate_keypoints import read_people

    coco, mpii = load_keypoint_set("coco"), load_keypoint_set("mpii")
    source, _ = read_people(fitted["coco"], coco)
    target, _ = read_people(fitted["mpii"], mpii)
    a, b, a_boxes, b_boxes, images = pair_people(source, target, coco, mpii, "id")
    held = split_held_out(images, 0.2, 0)  # fit's defaults: the same people it held out
    return a[held], b[held], a_boxes[held], b_boxes[held]


def test_a_round_trip_stays_within_the_reported_errors(fitted, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO_ROOT, "scripts"))
    forward, reverse = load_translator(fitted["forward"]), load_translator(fitted["reverse"])
    a, b, a_boxes, b_boxes = held_out_people(fitted)
    assert len(a) == forward.report["held_out"]["held_out_people"]
    # The saved translator scores what fit reported.
    again = score_translation(forward.predict(a), b, b_boxes, forward.target)
    assert again["mean_error"] == pytest.approx(forward.report["held_out"]["mean_error"], rel=1e-9)
    back = score_translation(reverse.predict(forward.predict(a)), a, a_boxes, reverse.target)
    budget = forward.report["held_out"]["mean_error"] + reverse.report["held_out"]["mean_error"]
    assert back["mean_error"] <= budget, (back["mean_error"], budget)
    assert back["pck@0.1"] > 0.9


def test_apply_adds_the_translated_keypoints_to_detections_and_annotations(fitted):
    forward = load_translator(fitted["forward"])
    with open(fitted["coco"]) as f:
        labels = json.load(f)
    detections = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                  for a in labels["annotations"] if a["num_keypoints"] > 0][:20]
    folder = fitted["folder"]
    with open(folder / "detections.json", "w") as f:
        json.dump(detections, f)
    for source, output in ((folder / "detections.json", folder / "detections_mpii.json"),
                           (fitted["coco"], folder / "labels_mpii.json")):
        result = run_tool("scripts/translate_keypoints.py", "apply", "--translator", fitted["forward"],
                          "--input", source, "--output", output)
        assert result.returncode == 0, result.stdout + result.stderr
        with open(output) as f:
            written = json.load(f)
        entries = written if isinstance(written, list) else written["annotations"]
        with_people = [e for e in entries if e.get("num_keypoints", 1) > 0 and not e.get("iscrowd")]
        for entry in with_people[:20]:
            people = np.asarray(entry["keypoints"], np.float64).reshape(1, -1, 3)
            expected = forward.predict(np.minimum(people, [np.inf, np.inf, 1.0]))[0]
            got = np.asarray(entry["translated_keypoints"]).reshape(-1, 3)
            assert np.allclose(got[:, :2], expected[:, :2], atol=0.006) and (got[:, 2] > 0).all()
        if isinstance(written, dict):
            assert written["translated_keypoints"]["keypoint_set"]["keypoints"] == list(forward.target.keypoints)


def test_a_translator_file_is_checked(tmp_path):
    coco, mpii = load_keypoint_set("coco"), load_keypoint_set("mpii")
    rng = np.random.default_rng(0)
    people = np.concatenate([rng.uniform(0, 100, (10, 17, 2)), np.ones((10, 17, 1))], axis=2)
    translator = fit_translator(coco, mpii, people, people[:, :16], "ridge")
    translator.save(str(tmp_path / "t.json"))
    assert isinstance(load_translator(str(tmp_path / "t.json")), Translator)
    data = translator.to_dict()
    data["weights"][0] = data["weights"][0][:-1]
    with pytest.raises(TranslationError, match="do not map 17 keypoints"):
        Translator.from_dict(data, "t.json")
    with pytest.raises(TranslationError, match="not a keypoint translator"):
        Translator.from_dict({"format": "other"}, "t.json")

"""Mix recipes on the real samples: MPII's list format read with its conventions, sources converted into a merged or
a combined keypoint set (unlabelled kept apart from labelled-but-absent), batches that keep each source's share on
every process, and invalid recipes failing before training, naming the recipe entry."""
import json
import os

import cv2
import numpy as np
import pytest
from mixing import RECIPES, aic_source, coco_mini_source, mpii_source, people_recipe, sample_source, write_recipe
from training_data import run_tool

from conftest import COCO_MINI_LABELS, MMPOSE_SAMPLES, require_shared
from lwpose.datasets.mix_recipe import RecipeError, load_mix_recipe, prepare_mixed_labels
from lwpose.datasets.mix_sampler import MixedBatchSampler, mixed_sampler_for, per_batch_counts
from lwpose.datasets.mpii_reader import image_size, read_mpii_keypoints
from lwpose.datasets.prepared_labels import load_prepared_labels
from lwpose.datasets.targets import channel_loss_masks
from lwpose.keypoints import load_keypoint_set

MPII_FILE = os.path.join(MMPOSE_SAMPLES, "mpii", "test_mpii.json")


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """The recipe mixing coco_mini_train, AIC and MPII into lwop18 + head_top, and its prepared labels."""
    require_shared(COCO_MINI_LABELS, MMPOSE_SAMPLES)
    folder = tmp_path_factory.mktemp("people")
    recipe = load_mix_recipe(write_recipe(folder / "recipe.json", people_recipe(
        [coco_mini_source(source_ratio=0.5), aic_source(source_ratio=0.25), mpii_source(source_ratio=0.25)])))
    return recipe, prepare_mixed_labels(recipe, report=lambda line: None)


def test_mpii_list_format_becomes_people_with_one_based_coordinates_and_joint_boxes():
    require_shared(MPII_FILE)
    mpii = load_keypoint_set("mpii")
    coco, missing = read_mpii_keypoints(MPII_FILE, mpii, os.path.dirname(MPII_FILE))
    assert not missing and len(coco.images) == 5
    entries = {e["image"]: e for e in json.load(open(MPII_FILE))}
    for image in coco.images:
        assert (image.height, image.width) == cv2.imread(os.path.join(os.path.dirname(MPII_FILE),
                                                                      image.file_name)).shape[:2]
        (person,) = image.people
        entry = entries[image.file_name]
        labelled = np.asarray(entry["joints_vis"]) > 0
        np.testing.assert_allclose(person.keypoints[labelled, :2], np.asarray(entry["joints"])[labelled] - 1)
        assert (person.keypoints[labelled, 2] == 2).all() and (person.keypoints[~labelled] == 0).all()
        x, y, w, h = person.bbox
        inside = person.keypoints[labelled, :2] + 0.5
        assert (inside[:, 0] > x).all() and (inside[:, 0] < x + w).all()
        assert (inside[:, 1] > y).all() and (inside[:, 1] < y + h).all()
        assert person.area == pytest.approx(w * h)
        # The head top to the ankles spans most of the box's height.
        assert np.ptp(inside[:, 1]) > 0.8 * h


def test_image_sizes_come_from_jpeg_and_png_headers(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.jpg"), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    (tmp_path / "c.txt").write_text("not an image")
    assert image_size(str(tmp_path / "a.png")) == (37, 53)
    assert image_size(str(tmp_path / "b.jpg")) == (37, 53)
    assert image_size(str(tmp_path / "c.txt")) is None


def test_combined_sources_keep_unlabelled_apart_from_labelled_but_absent(people):
    recipe, labels = people
    target = labels.keypoint_set
    assert [s.name for s in labels.sources] == ["coco", "aic", "mpii"]
    labelled = {s.name: {n for n, on in zip(target.keypoints, s.labelled) if not on} for s in labels.sources}
    assert labelled == {"coco": {"head_top"}, "aic": {"nose", "left_eye", "right_eye", "left_ear", "right_ear"},
                        "mpii": {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}}
    mpii_index = [s.name for s in labels.sources].index("mpii")
    ankle = target.index["right_ankle"]
    absent_ankles = [im.keypoints[0, ankle] for im in labels.images if im.source == mpii_index
                     and im.keypoints[0, ankle, 2] == 0]
    assert len(absent_ankles) == 2  # two MPII people have no ankles labelled: v = 0, trained as background
    heatmap_mask, _ = channel_loss_masks(target, labels.sources[mpii_index].labelled)
    assert heatmap_mask[ankle] == 1 and heatmap_mask[target.index["nose"]] == 0  # nose: no loss at all
    # MPII's thorax became the neck through the union's alias; its head top is labelled.
    mpii_images = [im for im in labels.images if im.source == mpii_index]
    assert all(im.keypoints[0, target.index["neck"], 2] > 0 and im.keypoints[0, target.index["head_top"], 2] > 0
               for im in mpii_images)


def test_merge_maps_sources_into_one_sources_set_with_explicit_midpoints(tmp_path):
    require_shared(MMPOSE_SAMPLES)
    recipe = load_mix_recipe(write_recipe(tmp_path / "merge.json", people_recipe(
        [mpii_source(), sample_source("coco", "coco", "test_coco.json",
                                      keypoint_map=[[["left_hip", "right_hip"], "pelvis"],
                                                    [["left_shoulder", "right_shoulder"], "thorax"]])],
        target={"mode": "merge", "keypoints": "mpii"})))
    lines = []
    labels = prepare_mixed_labels(recipe, report=lines.append)
    mpii = load_keypoint_set("mpii")
    assert labels.keypoint_set.keypoints == mpii.keypoints
    coco_line = next(line for line in lines if line.startswith("source 'coco'"))
    assert "dropped: nose, left_eye, right_eye, left_ear, right_ear" in coco_line
    assert "unlabelled in 'mpii': upper_neck, head_top" in coco_line
    raw = {a["id"]: np.asarray(a["keypoints"], float).reshape(-1, 3)
           for a in json.load(open(recipe.sources[1].labels))["annotations"]}
    coco_set = load_keypoint_set("coco")
    hips = [coco_set.index["left_hip"], coco_set.index["right_hip"]]
    checked = 0
    for image in (im for im in labels.images if im.source == 1):
        for person_id, keypoints in zip(image.person_ids, image.keypoints):
            original = raw[person_id]
            if (original[hips, 2] > 0).all():
                expected = original[hips, :2].mean(0) - 0.5
                np.testing.assert_allclose(keypoints[mpii.index["pelvis"], :2], expected, atol=0.01)
                checked += 1
    assert checked >= 3


def broken(tmp_path, edit) -> str:
    recipe = people_recipe([coco_mini_source(source_ratio=0.5), aic_source(source_ratio=0.25),
                            mpii_source(source_ratio=0.25)])
    edit(recipe)
    return write_recipe(tmp_path / "bad.json", recipe)


def inline_union(recipe, same):
    recipe["target"] = {"mode": "combine", "union": {"sets": ["lwop18", "aic", "mpii"], "same": same,
                                                     "drop": ["mpii:pelvis", "mpii:upper_neck"]}}


BAD_RECIPES = [
    (lambda r: inline_union(r, [["aic:head_top", "mpii:head_tp"]]),
     ["target.union: same[0][1] = 'mpii:head_tp': keypoint set 'mpii' has no keypoint 'head_tp'"]),
    (lambda r: r["sources"][2].update(keypoint_map=[["thorx", "neck"]]),
     ["sources[2] ('mpii').keypoint_map[0]: unknown keypoint 'thorx' of the source's set 'mpii'"]),
    (lambda r: r["sources"][1].update(source_ratio=0.5), ["the shares sum to 1.25 (coco 0.5, aic 0.5, mpii 0.25)"]),
    (lambda r: r["sources"][1].pop("source_ratio"), ["sources[1] ('aic').source_ratio: missing"]),
    (lambda r: r["sources"][1].update(keypoints="crowdpose"),
     ["sources[1] ('aic'): ", "lists keypoint 0 as 'Right Shoulder', keypoint set 'crowdpose' has 'left_shoulder'"]),
    (lambda r: r["sources"][2].update(keypoints="coco"), ["sources[2] ('mpii'): ", "has 16 joints, keypoint set "
                                                                                   "'coco' has 17"]),
    (lambda r: r["sources"][2].update(format="coco"), ["sources[2] ('mpii'): ", "expected a COCO object"]),
    (lambda r: r["sources"][1].update(format="mpii"), ["sources[1] ('aic'): ", "expected MPII's list format"]),
    (lambda r: r.update(target={"mode": "merge", "keypoints": "lwop18"}),
     ["target.mode: 'merge' maps every source into one source's own keypoint set"]),
    (lambda r: r["sources"][0].update(source_ration=0.5), ["sources[0] ('coco'): unknown entries ['source_ration']"]),
]


@pytest.mark.parametrize("edit, messages", BAD_RECIPES)
def test_an_invalid_recipe_fails_naming_the_entry(tmp_path, edit, messages):
    require_shared(COCO_MINI_LABELS, MMPOSE_SAMPLES)
    path = broken(tmp_path, edit)
    with pytest.raises(RecipeError) as error:
        prepare_mixed_labels(load_mix_recipe(path), report=lambda line: None)
    assert str(error.value).startswith(f"recipe {path}: ")
    for message in messages:
        assert message in str(error.value)


# The three kinds of mistake in the issue: an unknown keypoint in an equivalence, ratios that do not match the sources,
# a file that is not what its entry declares (found only when the file is read, the last check before training).
@pytest.mark.parametrize("mistake", [0, 2, 4])
def test_train_py_stops_on_an_invalid_recipe_before_training(tmp_path, mistake):
    require_shared(COCO_MINI_LABELS, MMPOSE_SAMPLES)
    edit, messages = BAD_RECIPES[mistake]
    path = broken(tmp_path, edit)
    result = run_tool("train.py", "--mix", path, "--experiments-folder", tmp_path / "runs", "--device", "cpu",
                      "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert all(m in result.stderr for m in messages), result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("world_size, batch_size, counts", [(1, 8, [4, 2, 2]), (2, 8, [4, 2, 2]),
                                                              (3, 4, [2, 1, 1]), (4, 12, [6, 3, 3])])
def test_every_batch_of_every_process_keeps_the_source_ratio(people, world_size, batch_size, counts):
    recipe, labels = people
    factors = [s.sample_ratio_factor for s in recipe.sources]
    ranks = [mixed_sampler_for(labels, recipe.source_ratios, factors, batch_size, seed=1, rank=r,
                               world_size=world_size) for r in range(world_size)]
    image_source = np.array([im.source for im in labels.images])
    source_of = image_source[labels.samples[:, 0]]
    assert all(sampler.counts == counts for sampler in ranks)
    expected = [s for s, count in enumerate(counts) for _ in range(count)]
    streams = {0: [], 1: [], 2: []}
    for batch in range(12):
        for rank, sampler in enumerate(ranks):
            keys = sampler.batch(batch)
            sources = source_of[[index for index, _ in keys]]
            assert sources.tolist() == expected, (rank, batch)
            for source in range(3):
                streams[source].extend(keys[j] for j in np.flatnonzero(sources == source))
    # Each source's stream, read across batches and processes, is a permutation of its samples per round: no
    # process sees a sample twice in a round, and none is left out.
    for source, keys in streams.items():
        size = int((source_of == source).sum())
        for start in range(0, len(keys) - size + 1, size):
            round_keys = keys[start:start + size]
            assert sorted(i for i, _ in round_keys) == sorted(np.flatnonzero(source_of == source).tolist())
            assert len({r for _, r in round_keys}) == 1
    resumed = mixed_sampler_for(labels, recipe.source_ratios, factors, batch_size, seed=1, start_batch=5,
                                rank=world_size - 1, world_size=world_size)
    assert next(iter(resumed)) == ranks[-1].batch(5)


def test_batches_without_ratios_follow_the_samples_per_epoch(people):
    recipe, labels = people
    even = mixed_sampler_for(labels, None, [1, 1, 1], 41)
    assert even.counts == [34, 5, 2]  # 68, 9 and 5 samples per epoch out of 82
    assert even.batches_per_epoch == 2
    boosted = mixed_sampler_for(labels, None, [0.25, 2, 4], 8)
    assert boosted.counts == [2, 3, 3] and boosted.batches_per_epoch == (17 + 18 + 20) // 8  # 2.47, 2.62, 2.91
    with pytest.raises(ValueError, match="source 'mpii' would get no sample in a batch of 4"):
        per_batch_counts([0.7, 0.25, 0.05], 4, ["coco", "aic", "mpii"])


def test_a_sampler_of_a_single_source_is_a_plain_permutation():
    sampler = MixedBatchSampler([np.arange(10, 16)], [3], [6], seed=2)
    first_round = sampler.batch(0) + sampler.batch(1)
    assert sorted(i for i, _ in first_round) == list(range(10, 16)) and {r for _, r in first_round} == {0}
    assert {r for _, r in sampler.batch(2)} == {1}


def test_prepare_train_labels_writes_every_source_of_a_recipe(people, tmp_path):
    recipe, labels = people
    result = run_tool("scripts/prepare_train_labels.py", "--mix", recipe.path, "--output-name", tmp_path / "p.json")
    assert result.returncode == 0, result.stderr
    assert "source 'mpii' (mpii, keypoints 'mpii'): 5 samples in 5 images" in result.stdout
    written = load_prepared_labels(str(tmp_path / "p.json"))
    assert [s.name for s in written.sources] == ["coco", "aic", "mpii"] and len(written) == len(labels)
    assert [s.keypoint_set.name for s in written.sources] == ["coco", "aic", "mpii"]
    assert all((a.labelled == b.labelled).all() for a, b in zip(written.sources, labels.sources))


def test_shipped_recipes_load():
    require_shared(os.path.join(RECIPES, "..", "..", "..", "shared", "data", "mmpose_samples"))
    for name in ("people_head_top", "people_samples", "animals"):
        recipe = load_mix_recipe(os.path.join(RECIPES, f"{name}.json"))
        assert recipe.mode == "combine" and len(recipe.sources) >= 2


def test_each_source_is_scored_with_the_model_keypoints_it_corresponds_to(people, tmp_path):
    from lwpose.datasets.mix_recipe import output_keypoint_indices

    recipe, _ = people
    mpii = next(s for s in recipe.sources if s.name == "mpii")
    mpii_set, lwop = mpii.keypoint_set, load_keypoint_set("lwop18")
    # The union model knows MPII's thorax as its neck (an alias); the plain lwop18 model has no such name.
    indices = output_keypoint_indices(mpii, recipe.target, recipe)
    assert indices[mpii_set.index["thorax"]] == recipe.target.index["neck"]
    assert indices[mpii_set.index["head_top"]] == recipe.target.index["head_top"]
    assert indices[mpii_set.index["pelvis"]] == -1
    indices = output_keypoint_indices(mpii, lwop, recipe)
    assert indices[mpii_set.index["thorax"]] == -1 and indices[mpii_set.index["head_top"]] == -1
    assert indices[mpii_set.index["left_wrist"]] == lwop.index["left_wrist"]
    # A recipe may say it itself, e.g. to score MPII's thorax with lwop18's neck.
    explicit = [lwop.index.get(name, -1) for name in mpii_set.keypoints]
    explicit[mpii_set.index["thorax"]] = lwop.index["neck"]
    path = write_recipe(tmp_path / "explicit.json", people_recipe([mpii_source(output_keypoint_indices=explicit)]))
    recipe = load_mix_recipe(path)
    assert output_keypoint_indices(recipe.sources[0], lwop, recipe).tolist() == explicit
    with pytest.raises(RecipeError, match=r"sources\[0\] \('mpii'\).output_keypoint_indices: index 40 is beyond"):
        explicit[0] = 40
        bad = load_mix_recipe(write_recipe(tmp_path / "bad.json", people_recipe(
            [mpii_source(output_keypoint_indices=explicit)])))
        output_keypoint_indices(bad.sources[0], lwop, bad)
    with pytest.raises(RecipeError, match=r"output_keypoint_indices: expected 16 model keypoint indices"):
        load_mix_recipe(write_recipe(tmp_path / "short.json", people_recipe(
            [mpii_source(output_keypoint_indices=[0, 1])])))

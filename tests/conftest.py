"""Shared fixtures. Real data comes from ../shared/data; without it those tests skip (listed by reason), or fail
when LWPOSE_REQUIRE_SHARED=1 (as CI sets), so a missing data folder can never pass silently."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

SHARED = os.environ.get("LWPOSE_SHARED", os.path.join(os.path.dirname(REPO_ROOT), "shared"))
SHARED_DATA = os.path.join(SHARED, "data")
HPE_XML = os.path.join(SHARED, "weights", "human-pose-estimation-0001", "FP16-INT8", "human-pose-estimation-0001.xml")
COCO_MINI = os.path.join(SHARED_DATA, "coco_mini_train")
COCO_MINI_LABELS = os.path.join(COCO_MINI, "annotations", "person_keypoints_train2017.json")
COCO_MINI_IMAGES = os.path.join(COCO_MINI, "train2017")
MMPOSE_SAMPLES = os.path.join(SHARED_DATA, "mmpose_samples")


def require_shared(*paths: str) -> None:
    """Skip (or fail, under LWPOSE_REQUIRE_SHARED=1) when shared data is missing."""
    missing = [p for p in paths if not os.path.exists(p)]
    if not missing:
        return
    message = f"needs ../shared data: {', '.join(os.path.relpath(p, os.path.dirname(REPO_ROOT)) for p in missing)}"
    if os.environ.get("LWPOSE_REQUIRE_SHARED") == "1":
        pytest.fail(message + " (LWPOSE_REQUIRE_SHARED=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def hpe_checkpoint(tmp_path_factory) -> str:
    """The Open Model Zoo weights imported once per test session."""
    require_shared(HPE_XML)
    from lwpose.interop.checkpoint import save_checkpoint
    from lwpose.interop.importers import import_openvino_ir

    path = str(tmp_path_factory.mktemp("weights") / "hpe0001.pth")
    save_checkpoint(import_openvino_ir(HPE_XML, "lwop18"), path)
    return path

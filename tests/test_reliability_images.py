"""Bad images: every reader turns grayscale, RGBA and 16-bit files into 8-bit BGR and refuses missing, empty,
corrupt and decompression-bomb files naming them; training skips unusable images with a warning and a count, and
stops when more than the allowed share is bad. (Validation and the demo: tests/test_val_coco.py and
tests/test_demo.py name, count and skip unreadable images and survive broken streams.)"""
import struct
import zlib

import cv2
import numpy as np
import pytest
from reliability_data import write_tiny_training_set
from training_data import run_tool

from lwpose.images import ImageReadError, read_image


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header announcing a huge image, followed by almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def write_odd_images(folder) -> dict:
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (20, 30, 3), np.uint8)
    cv2.imwrite(str(folder / "gray.png"), colour[..., 0])
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([colour, np.full((20, 30), 128, np.uint8)]))
    cv2.imwrite(str(folder / "deep.png"), colour.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "colour.jpg"), colour)
    jpeg = (folder / "colour.jpg").read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "garbage.jpg").write_bytes(b"GIF89a but not really" * 10)
    (folder / "header_only.jpg").write_bytes(jpeg[:20])
    (folder / "huge.png").write_bytes(png_declaring(200_000, 200_000))
    return {"colour": colour}


def test_grayscale_rgba_and_16_bit_images_become_8_bit_bgr(tmp_path):
    colour = write_odd_images(tmp_path)["colour"]
    read = read_image
    for name in ("gray.png", "rgba.png", "deep.png"):
        image = read(str(tmp_path / name))
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3), name
    assert np.array_equal(read(str(tmp_path / "deep.png")), colour)  # 16 bits scaled down, not clipped
    assert np.array_equal(read(str(tmp_path / "rgba.png")), colour)


@pytest.mark.parametrize("reduction", [1, 2], ids=["full_size", "training_reduced"])
@pytest.mark.parametrize("name", ["missing.jpg", "empty.jpg", "garbage.jpg", "header_only.jpg", "huge.png"])
def test_unusable_images_are_refused_naming_the_file(reduction, name, tmp_path):
    write_odd_images(tmp_path)
    with pytest.raises(ImageReadError, match=name):
        read_image(str(tmp_path / name), reduction)


TINY_RUN = ["--input-size", "64", "--batch-size", "2", "--log-after", "1", "--num-workers", "0", "--no-progress",
            "--device", "cpu", "--max-iterations", "3", "--image-cache", "none"]


@pytest.mark.slow
def test_training_skips_bad_images_with_a_warning_and_stops_when_too_many_are_bad(tmp_path):
    prepared, images = write_tiny_training_set(tmp_path / "data", num_images=8)
    image_files = sorted((tmp_path / "data" / "images").iterdir())
    image_files[0].write_bytes(b"")  # found before training starts
    image_files[1].write_bytes(b"\xff\xd8\xff\xe0 not a JPEG" * 20)  # found when a sample first needs it
    colour = cv2.imread(str(image_files[2]))
    cv2.imwrite(str(image_files[2]), cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 90])

    # 8 samples over 3 iterations of 2: every sample is drawn, the corrupt one included
    trained = run_tool("train.py", "--prepared-train-labels", prepared, "--experiments-folder", tmp_path,
                       "--experiment-name", "skipping", *TINY_RUN, "--max-iterations", "4",
                       "--max-bad-image-share", "0.3", "--no-augmentation", timeout=900)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    output = trained.stdout + trained.stderr
    assert "1 of 8 training images cannot be used" in output and image_files[0].name in output
    assert image_files[1].name in output and "unusable images so far" in output
    assert "done: iteration 4" in trained.stdout

    stopped = run_tool("train.py", "--prepared-train-labels", prepared, "--experiments-folder", tmp_path,
                       "--experiment-name", "stopping", *TINY_RUN, "--max-bad-image-share", "0.1", timeout=900)
    assert stopped.returncode == 2
    assert "1 of 8 training images cannot be used (12.5%, more than the allowed 10.0%" in stopped.stderr
    assert "Traceback" not in stopped.stderr

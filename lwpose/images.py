"""Reading images the way every entry point needs them: 8-bit BGR, whatever the file holds."""
from __future__ import annotations

import os

import cv2
import numpy as np

from lwpose.errors import LwposeError


class ImageReadError(LwposeError, OSError):
    """An image that cannot be used; the message names the file and why."""


# cv2.imread flags that decode at 1, 1/2 or 1/4 of the size (training reads large images reduced, see
# datasets/pose_dataset.py); every one converts grayscale, alpha and 16-bit files to 8-bit BGR
READ_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def read_image(path: str, reduction: int = 1) -> np.ndarray:
    """An 8-bit BGR image (grayscale, alpha and 16-bit files converted, EXIF orientation applied, as the
    reference reads them), decoded at 1/`reduction` of its size (1, 2 or 4), or ImageReadError naming the file."""
    if reduction not in READ_FLAGS:
        raise ValueError(f"image {path}: reduction {reduction} unknown (known: {', '.join(map(str, READ_FLAGS))})")
    if not os.path.exists(path):
        raise ImageReadError(f"image {path} does not exist")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"image {path} is empty (0 bytes)")
    try:
        image = cv2.imread(path, READ_FLAGS[reduction])
    except cv2.error as e:  # a header declaring more pixels than OpenCV allows (a decompression bomb)
        raise ImageReadError(f"image {path} cannot be decoded: {str(e).strip().splitlines()[-1]}") from None
    if image is None:
        raise ImageReadError(f"image {path} cannot be decoded (truncated, too large or not an image)")
    if reduction == 1 and (image.shape[0] < 2 or image.shape[1] < 2):
        raise ImageReadError(f"image {path} is only {image.shape[1]}x{image.shape[0]} pixels")
    return image

"""The one door every image passes before a face detector sees it (MediaPipe, dlib, OpenCV's Haar cascade).

The detectors want a grey, BGR or BGRA ``uint8`` array with pixels in it. Anything else fails deep inside
them with messages that do not name the image or the fix (MediaPipe: ``Unsupported image format: SRGB
(expected VEC32F1 ...)`` for float pixels, a ``ZeroDivisionError`` for a 0×0 image). :func:`detector_image`
(one image) and :func:`detector_images` (a batch) convert the cases that have one reading and refuse the
rest with a ValueError naming the image, the problem and the fix:

- ``uint8`` of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4): returned as it is, the same array (results
  and cache keys on good data do not change);
- ``bool``: False/True → 0/255;
- other depths by :func:`to_uint8`, the rule the loaders of :mod:`fer_lib.data` apply to image files too:
  integers holding only 0..255 as 8-bit values, 16-bit ones beyond that by 0..65535 (0..32767 signed),
  float by 0..1 or 0..255; negative, NaN or infinite values and any other range (a normalised image) are
  refused.

A batch is judged as a whole (one scale for all its images, so a dark image in a 0..255 batch is not read
as 0..1), and a problem is reported with the image's index and id.
"""
from __future__ import annotations

import numpy as np

#: the channel counts a detector accepts on an (H, W, C) image: grey, BGR, BGRA
CHANNELS = (1, 3, 4)

_FIX_SHAPE = ("give one image as (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA pixels with at least one pixel "
              "each way (a batch as (N, H, W) or (N, H, W, C))")


def describe(index: int, ids=None, where: str = "image") -> str:
    """How an error names image ``index`` of a batch (with its id when the batch has ids)."""
    # str(), not repr(): numpy 2 shows an id as np.str_(...)
    return f"{where} {index}" + (f" (id '{ids[index]}')" if ids is not None else "")


def _check_shape(shape: tuple, where: str) -> None:
    height_width = shape[:2]
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in CHANNELS):
        raise ValueError(f"{where}: an image of shape {shape} is not grey, BGR or BGRA; {_FIX_SHAPE}")
    if min(height_width) < 1:
        raise ValueError(f"{where}: the image is empty (shape {shape}); {_FIX_SHAPE}. An empty image usually "
                         "comes from a crop box outside the frame or a file that did not decode: check the source")


def to_uint8(pixels: np.ndarray) -> tuple[np.ndarray | None, str]:
    """``(uint8 pixels, how)`` by the range of the pixels' type (``how`` is ``""`` for uint8, kept as
    is), or ``(None, why)`` when no rule maps them. Unsigned and non-negative integers holding only
    0..255 are taken as 8-bit grey levels (an 8-bit picture stored wider: PIL's ``I;16``, a numpy
    int64 array); 16-bit ones beyond it scale by 0..65535 (0..32767 signed); floats by 0..1, or as
    0..255 when they exceed 1. Negative, non-finite and wider-than-16-bit values beyond 255 have no
    agreed range, so they are refused rather than guessed."""
    if pixels.dtype == np.uint8:
        return pixels, ""
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255, "boolean image as 0 / 255"
    if pixels.dtype.kind not in "uif":
        return None, f"{pixels.dtype} values"
    if pixels.size == 0:
        return pixels.astype(np.uint8), ""
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        return None, "NaN or infinite values"
    low, high = pixels.min(), pixels.max()
    if low < 0:
        return None, f"negative values (down to {low:g})"
    if pixels.dtype.kind == "f":
        if high <= 1:
            return np.round(pixels * 255).astype(np.uint8), f"{pixels.dtype} image scaled from 0..1"
        if high <= 255:
            return np.round(pixels).astype(np.uint8), f"{pixels.dtype} image taken as 0..255"
        return None, f"float values above 255 (up to {high:g})"
    if high <= 255:
        return pixels.astype(np.uint8), f"{pixels.dtype} image holding 8-bit values"
    if pixels.dtype.itemsize == 2:
        full = np.iinfo(pixels.dtype).max
        return np.round(pixels * (255 / full)).astype(np.uint8), f"{pixels.dtype} image scaled from 0..{full}"
    return None, f"{pixels.dtype} values above 255 (up to {high})"


def _to_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """``pixels`` as uint8 by :func:`to_uint8`, judged over the whole array, or a ValueError naming ``where``,
    the problem and the fix."""
    converted, how = to_uint8(pixels)
    if converted is not None:
        return converted
    if pixels.dtype.kind not in "uifb":
        raise ValueError(f"{where}: pixels of dtype {pixels.dtype} are not an image; pass a uint8 array "
                         "(e.g. as cv2.imread or a loader of fer_lib.data returns it)")
    if "NaN" in how:
        raise ValueError(f"{where}: {int((~np.isfinite(pixels)).sum())} pixels are NaN or infinite; pass the image "
                         "before whatever step produced them, or replace them (np.nan_to_num) knowingly")
    low, high = pixels.min(), pixels.max()
    raise ValueError(f"{where}: {pixels.dtype} pixels range over {low:.4g}..{high:.4g} ({how}), neither 0..1 nor "
                     "0..255 nor a 16-bit image's 0..65535; pass the uint8 image from before normalisation, or rescale "
                     "to 0..255 and cast with .astype(np.uint8)")


def detector_image(image, where: str = "image") -> np.ndarray:
    """One image as the detectors take it: a uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array; a valid
    uint8 image is returned unchanged (the same object). ``where`` names the image in the error messages."""
    image = np.asarray(image)
    _check_shape(image.shape, where)
    return _to_uint8(image, where)


def detector_images(images, ids=None, where: str = "image"):
    """A batch for the detectors: an (N, H, W) or (N, H, W, C) array is checked and converted as a whole (a
    uint8 one is returned as it is: the same object); a list or tuple image by image, as a list. Errors name
    the image (``where``, its index and, with ``ids``, its id)."""
    if isinstance(images, np.ndarray) and images.dtype != object:
        if images.ndim not in (3, 4):
            raise ValueError(f"a batch of images must be (N, H, W) or (N, H, W, C), got shape {images.shape} "
                             "(for one image use detector_image, or pass image[None])")
        if len(images):
            _check_shape(images.shape[1:], f"{where}s ({len(images)} of shape {images.shape[1:]})")
        if images.dtype == np.uint8:
            return images
        try:
            return _to_uint8(images, f"{where}s ({images.dtype}, {len(images)} images)")
        except ValueError:  # name the first image that is wrong on its own (one always is)
            for index, image in enumerate(images):
                _to_uint8(image, describe(index, ids, where))
            raise
    return [detector_image(image, describe(index, ids, where)) for index, image in enumerate(images)]

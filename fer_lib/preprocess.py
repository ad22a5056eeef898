"""Preprocessing steps of the 3DFER study's plan, each a plain function applied identically at training
and inference time: colour unification, face crop (three detectors), eye-line alignment, CLAHE, resize.

Deterministic image work happens here, in NumPy/OpenCV, once per image. Augmentation and pixel
normalisation live in Keras layers (:mod:`fer_lib.layers`), so a saved model carries them and
inference cannot forget them.

A detector that finds no face never loses the image: :func:`detect_faces` falls back to the whole
frame (FER2013's faces are already roughly cropped) and records that it did.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from . import progress
from .images import describe, detector_image, detector_images
from .native import NativeResource
from .paths import dlib_shape_predictor_path, face_landmarker_path


@dataclass(frozen=True)
class Detection:
    """A face box ``(x0, y0, x1, y1)`` in the input image's pixels, and the eye centres when known."""

    box: tuple[float, float, float, float]
    left_eye: tuple[float, float] | None = None  # the eye on the image's left
    right_eye: tuple[float, float] | None = None


def to_gray(image: np.ndarray) -> np.ndarray:
    """Unify colour: any grey, BGR or BGRA uint8 image to one grey channel."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"cannot make a grey image from an array of shape {image.shape}")


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W) grey images as (N, H, W, channels): 1 for grey models, 3 for ImageNet-style ones."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return np.repeat(images[..., None], channels, axis=-1)


# --------------------------------------------------------------------------------------------------
# Detectors: each takes a grey uint8 image and returns the largest face, or None. Each checks its input with
# fer_lib.images.detector_image first: a float, 16-bit or empty image gets an error naming it and the fix
# (or, where the reading is unambiguous, is converted), never the detector's own cryptic failure.


class Detector(NativeResource):
    """Base of the detectors: ``detect(gray) -> Detection | None``; usable as a context manager, and
    :meth:`close` may be called any number of times."""

    name = "detector"

    def detect(self, gray: np.ndarray) -> Detection | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release native resources (MediaPipe's graph); a no-op for the others."""


def _largest(boxes):
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if len(boxes) else None


class HaarDetector(Detector):
    """OpenCV's Viola-Jones frontal-face cascade (ships with opencv-contrib-python 4.x).

    ``upscale_to`` (pixels of the longer side; small images only) and ``padding`` (a replicated border, in
    pixels of the upscaled image) help it on tightly cropped small faces such as FER2013's and CK+48's,
    whose face fills the frame the cascade's window needs around it. The box is in the input's pixels.
    """

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 3, min_size: int = 20,
                 upscale_to: int | None = None, padding: int = 0):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise FileNotFoundError(f"{path} did not load: is opencv-contrib-python 4.x installed (5.x lacks it)?")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.upscale_to, self.padding = upscale_to, padding

    def detect(self, gray: np.ndarray) -> Detection | None:
        gray = detector_image(gray)  # OpenCV's cascade reads grey, BGR and BGRA as they are
        scale = max(1.0, self.upscale_to / max(gray.shape[:2])) if self.upscale_to else 1.0
        image = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else gray
        pad = self.padding
        if pad:
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = self.cascade.detectMultiScale(image, self.scale_factor, self.min_neighbors,
                                              minSize=(self.min_size, self.min_size))
        box = _largest([(x, y, x + w, y + h) for x, y, w, h in faces])
        return None if box is None else Detection(tuple(float(v - pad) / scale for v in box))


class DlibHogDetector(Detector):
    """dlib's HOG + linear SVM detector on the image upscaled to ``upscale_to`` pixels (the study used 80).

    Its sliding window is 80x80, so a 48x48 face must be enlarged to be found; larger images are
    left at their size.

    With ``eyes=True`` the 68-point shape predictor adds the eye centres (points 36-41 and 42-47).
    """

    name = "dlib_hog"

    def __init__(self, upscale_to: int = 80, upsample: int = 0, eyes: bool = False):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_shape_predictor_path())) if eyes else None
        self.upscale_to, self.upsample = upscale_to, upsample

    def detect(self, gray: np.ndarray) -> Detection | None:
        gray = detector_image(gray)
        if gray.ndim == 3 and gray.shape[2] != 3:  # dlib reads grey and 3-channel images only
            gray = to_gray(gray)
        scale = max(1.0, self.upscale_to / max(gray.shape[:2]))
        big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else gray
        faces = list(self.detector(big, self.upsample))
        if not faces:
            return None
        face = max(faces, key=lambda r: r.area())
        box = tuple(v / scale for v in (face.left(), face.top(), face.right(), face.bottom()))
        if self.predictor is None:
            return Detection(box)
        shape = self.predictor(big, face)
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=float) / scale
        return Detection(box, tuple(points[36:42].mean(0)), tuple(points[42:48].mean(0)))


#: MediaPipe face-mesh indices of the outer and inner corners of each eye (image-left eye first).
_MP_LEFT_EYE = (33, 133)
_MP_RIGHT_EYE = (362, 263)
#: MediaPipe's own ``min_face_presence_confidence``, which the detector keeps (the mesh extractor sets its own)
MEDIAPIPE_PRESENCE = 0.5


def mediapipe_detection(points: np.ndarray) -> Detection:
    """The box around MediaPipe's landmarks (N, 2 or 3) and the centres of its eye corners."""
    x0, y0 = points[:, :2].min(0)
    x1, y1 = points[:, :2].max(0)
    left = points[list(_MP_LEFT_EYE), :2].mean(0)
    right = points[list(_MP_RIGHT_EYE), :2].mean(0)
    return Detection((x0, y0, x1, y1), tuple(left), tuple(right))


class MediaPipeDetector(Detector):
    """MediaPipe Tasks FaceLandmarker (the vendored ``face_landmarker.task``): box and eyes from the mesh.

    48x48 faces are small for it; ``input_size`` and ``padding`` (black border, in pixels of the
    resized image) change how many it finds, and are parameters for that reason.
    """

    name = "mediapipe"

    def __init__(self, input_size: int = 192, padding: int = 24, min_confidence: float = 0.3):
        from .face_mesh import mediapipe_tasks

        _, BaseOptions, vision = mediapipe_tasks()
        self.landmarker = None  # close() works on a half-made detector
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(face_landmarker_path())),
            num_faces=1, min_face_detection_confidence=min_confidence, min_face_presence_confidence=MEDIAPIPE_PRESENCE,
        )
        self.landmarker = vision.FaceLandmarker.create_from_options(options)
        self.input_size, self.padding = input_size, padding

    def landmarks(self, gray: np.ndarray) -> np.ndarray | None:
        """The 478 (x, y, z) landmarks in the input image's pixels (z in the same scale as x), or None."""
        from .face_mesh import Attempt, mediapipe_tasks, prepare, to_original_pixels

        if self.landmarker is None:
            raise RuntimeError("this MediaPipeDetector is closed; make a new one (with MediaPipeDetector(...) as ...)")
        mp = mediapipe_tasks()[0]
        gray = to_gray(detector_image(gray))  # the cascade's image is made from one grey channel
        attempt = Attempt(self.input_size, self.padding)
        rgb, scale = prepare(gray, attempt)
        result = self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not result.face_landmarks:
            return None
        return to_original_pixels(result.face_landmarks[0], rgb.shape, attempt, scale)

    def detect(self, gray: np.ndarray) -> Detection | None:
        points = self.landmarks(gray)
        return None if points is None else mediapipe_detection(points)

    def close(self):
        landmarker, self.landmarker = self.landmarker, None
        if landmarker is not None:
            landmarker.close()


DETECTORS = {"haar": HaarDetector, "dlib_hog": DlibHogDetector, "mediapipe": MediaPipeDetector}


def make_detector(name: str, **options):
    if name not in DETECTORS:
        raise KeyError(f"Unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](**options)


def detect_faces(images: np.ndarray, detector, ids=None) -> pd.DataFrame:
    """Run a detector on every image: one row each with found, box (whole frame when not found) and ms.

    Nothing is dropped: a miss keeps the image, with ``fallback=True`` and the whole frame as its box.
    """
    rows = []
    for index, image in enumerate(images):
        image = detector_image(image, describe(index, ids))
        started = time.perf_counter()
        detection = detector.detect(to_gray(image))
        rows.append(detection_row(ids[index] if ids is not None else index, detection, image.shape,
                                  (time.perf_counter() - started) * 1000))
    return pd.DataFrame(rows)


def detection_row(image_id, detection: Detection | None, shape, ms: float) -> dict:
    """One row of :func:`detect_faces`' table: a miss keeps the whole frame (``shape``: the image's) as its box."""
    height, width = shape[:2]
    found = detection is not None
    box = detection.box if found else (0.0, 0.0, float(width), float(height))
    eyes = (detection.left_eye, detection.right_eye) if found and detection.left_eye is not None else (None, None)
    return {"id": image_id, "found": found, "fallback": not found, "x0": box[0], "y0": box[1], "x1": box[2],
            "y1": box[3], "left_eye": eyes[0], "right_eye": eyes[1], "ms": ms}


# --------------------------------------------------------------------------------------------------
# Geometric and photometric steps


def align_eyes(image: np.ndarray, left_eye, right_eye) -> np.ndarray:
    """Rotate about the eyes' midpoint so the eye line is horizontal (same size, border replicated)."""
    (lx, ly), (rx, ry) = left_eye, right_eye
    angle = np.degrees(np.arctan2(ry - ly, rx - lx))
    centre = ((lx + rx) / 2, (ly + ry) / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    height, width = image.shape[:2]
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size``x``size``: area averaging when shrinking, bicubic when enlarging."""
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def crop(image: np.ndarray, box, margin: float = 0.1, size: int = 48) -> np.ndarray:
    """The box grown by ``margin`` of its size on each side, clipped to the image, resized to ``size``²."""
    x0, y0, x1, y1 = box
    grow_x, grow_y = (x1 - x0) * margin, (y1 - y0) * margin
    height, width = image.shape[:2]
    x0, y0 = int(max(0, np.floor(x0 - grow_x))), int(max(0, np.floor(y0 - grow_y)))
    x1, y1 = int(min(width, np.ceil(x1 + grow_x))), int(min(height, np.ceil(y1 + grow_y)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"box {box} leaves no image to crop from a {width}x{height} frame")
    return resize(image[y0:y1, x0:x1], size)


def clahe(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (clipLimit 2, 8x8 tiles, as the 3D-CNN study)."""
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(to_gray(image))


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic pipeline: detect -> (align by eyes) -> crop -> (CLAHE) -> resize.

    ``detector=None`` skips detection and alignment (the raw frame, resized). Alignment needs eye
    centres, so it applies only where the detector found a face and gave eyes.
    """

    detector: str | None = None
    align: bool = False
    use_clahe: bool = False
    size: int = 48
    margin: float = 0.1

    def apply(self, images: np.ndarray, detections: pd.DataFrame | None = None) -> np.ndarray:
        """(N, size, size) uint8 faces; ``detections`` from :func:`detect_faces` (needed with a detector)."""
        if self.detector is not None and detections is None:
            raise ValueError(f"Preprocessing with detector {self.detector!r} needs detect_faces(...) results")
        out = np.empty((len(images), self.size, self.size), dtype=np.uint8)
        for index, image in enumerate(images):
            gray = to_gray(image)
            if self.detector is None:
                face = resize(gray, self.size)
            else:
                row = detections.iloc[index]
                if self.align and row["left_eye"] is not None:
                    gray = align_eyes(gray, row["left_eye"], row["right_eye"])
                face = crop(gray, (row["x0"], row["y0"], row["x1"], row["y1"]), self.margin, self.size)
            out[index] = clahe(face) if self.use_clahe else face
        return out


# --------------------------------------------------------------------------------------------------
# Whole datasets: parallel over processes, cached on disk


def _detect_chunk(images, ids, name, options):
    with make_detector(name, **options) as detector:  # built in the worker: detectors do not pickle
        return detect_faces(images, detector, ids)


def detect_dataset(dataset, name: str, n_jobs: int = -1, cache: bool = True, *, executor=None,
                   **options) -> pd.DataFrame:
    """:func:`detect_faces` over a whole :class:`~fer_lib.data.FaceDataset`, one process per core.

    Results are cached in ``cache/detections/`` keyed by the detector, its options and the exact image
    ids and pixels, so a rerun (or the next chapter) reads them instead of detecting again. The ``ms``
    column is the time measured when the cache was written. ``executor``: a
    :class:`concurrent.futures.Executor` (e.g. a Dask client's ``client.get_executor()``, see
    :mod:`fer_lib.executors`) that runs the same chunks instead of joblib's ``n_jobs`` processes.
    """
    import hashlib
    import json

    from joblib import Parallel, delayed

    from .paths import repo_root, written_atomically

    key = hashlib.sha256()
    key.update(json.dumps([name, sorted(options.items())], default=str).encode())
    key.update("\n".join(map(str, dataset.ids)).encode())
    key.update(dataset.images.tobytes())
    path = repo_root() / "cache" / "detections" / f"{dataset.name}-{name}-{key.hexdigest()[:16]}.pkl"
    if cache and path.is_file():
        progress.note("extraction", computed=False)
        return pd.read_pickle(path)
    progress.note("extraction", computed=True)
    detector_images(dataset.images, dataset.ids, f"{dataset.name} image")  # refused here, not in a worker
    chunks = [c for c in np.array_split(np.arange(len(dataset)), max(1, min(len(dataset) // 500, 64))) if len(c)]
    if executor is None:
        jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_detect_chunk)(dataset.images[c], dataset.ids[c], name, options) for c in chunks
        )
    else:
        from .executors import results

        jobs = results(executor, _detect_chunk, ((dataset.images[c], dataset.ids[c], name, options) for c in chunks))
    parts = list(progress.bar(jobs, total=len(chunks), desc=f"{name} on {dataset.name}", unit="chunk"))
    table = pd.concat(parts, ignore_index=True)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(path) as temporary:
            table.to_pickle(temporary, compression=None)
    return table

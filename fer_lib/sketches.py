"""The emotion-sketch representation (the ES study): dlib's 68 landmarks redrawn as a normalised line drawing.

The study detects a face with OpenCV's Haar cascade, crops it, rescales it to 250×250, places dlib's 68
landmarks, normalises them so that every face fills the same frame, and redraws eyebrows, eyes and
mouth as thick white lines on a black 250×250 canvas, so that faces of different ages and
ethnicities look alike and a CNN can read the drawing as it would read a character.

- Geometry (:class:`SketchStyle`, :func:`normalise`, :func:`shift_parts`, :func:`draw`, :func:`render`):
  the study's normalisation exactly — FL0 → x = 10, FL16 → x = 240, FL27 → y = 70, FL33 → y = 210 by
  x' = (x16'·(x − x0) + x0'·(x16 − x)) / (x16 − x0) (and the same in y), then eye and eyebrow points
  50 px down, mouth points 70 px up, joined by 7-pixel lines.
- Landmarks (:class:`Dlib68`, :func:`landmark_dataset`): the face box from the study's Haar cascade
  first and chapter 2's detectors as fallbacks; dlib's predictor on the box rescaled to 250×250. Faces
  no box was found for take the 68 points from MediaPipe's 478 (:func:`from_mediapipe`, a fixed index
  map derived by :func:`derive_index_map`). A face with no landmarks from any source is kept, with NaN
  points and source ``"lost"``: counted and reported, never dropped.
- Models (:func:`vgg11`, :func:`resnet50`, :func:`capsnet`) and transfer learning from a character
  data set (:func:`digits`, :func:`transfer_weights`, :func:`load_weights_file`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pandas as pd

from . import progress
from .data import PerImageColumns
from .images import detector_image, detector_images
from .native import NativeResource
from .paths import PACKAGE_DIR, dlib_shape_predictor_path, repo_root, sha256, written_atomically

N_POINTS = 68
# dlib's 68-point scheme (iBUG 300-W), by face part. "Right" and "left" are the subject's.
JAW = tuple(range(0, 17))
RIGHT_BROW, LEFT_BROW = tuple(range(17, 22)), tuple(range(22, 27))
NOSE_BRIDGE, NOSE_BASE = tuple(range(27, 31)), tuple(range(31, 36))
RIGHT_EYE, LEFT_EYE = tuple(range(36, 42)), tuple(range(42, 48))
OUTER_MOUTH, INNER_MOUTH = tuple(range(48, 60)), tuple(range(60, 68))
#: the points the sketch keeps and moves: eyebrows and eyes (down), mouth (up)
EYE_PARTS = RIGHT_BROW + LEFT_BROW + RIGHT_EYE + LEFT_EYE
MOUTH_PARTS = OUTER_MOUTH + INNER_MOUTH
#: the strokes of a sketch: (points in drawing order, closed contour?)
STROKES = ((RIGHT_BROW, False), (LEFT_BROW, False), (RIGHT_EYE, True), (LEFT_EYE, True),
           (OUTER_MOUTH, True), (INNER_MOUTH, True))
#: where each landmark source comes from, in the order a face tries them
SOURCES = ("haar", "dlib_hog", "mediapipe")
LOST = "lost"


# --------------------------------------------------------------------------------------------------
# Geometry: normalise, shift, draw


@dataclass(frozen=True)
class SketchStyle:
    """The study's sketch: a ``size``² canvas, FL0/FL16 sent to ``x_targets`` and FL27/FL33 to ``y_targets``,
    eye and eyebrow points moved ``eye_shift`` px down, mouth points ``mouth_shift`` px (negative: up),
    strokes ``line_width`` px wide. The defaults are the study's values."""

    size: int = 250
    line_width: int = 7
    x_targets: tuple[float, float] = (10.0, 240.0)
    y_targets: tuple[float, float] = (70.0, 210.0)
    eye_shift: float = 50.0
    mouth_shift: float = -70.0

    def scaled(self, size: int) -> "SketchStyle":
        """The same sketch on a ``size``² canvas (targets, shifts and line width scaled; width at least 1)."""
        f = size / self.size
        return SketchStyle(size, max(1, round(self.line_width * f)), tuple(v * f for v in self.x_targets),
                           tuple(v * f for v in self.y_targets), self.eye_shift * f, self.mouth_shift * f)


class DegenerateLandmarks(ValueError):
    """The reference points coincide (FL0 = FL16 in x or FL27 = FL33 in y): the face cannot be normalised."""


def normalise(points, style: SketchStyle = SketchStyle()) -> np.ndarray:
    """The study's normalisation of (68, 2) points (or (N, 68, 2)): per axis, the linear map sending FL0 and
    FL16 to ``style.x_targets`` and FL27 and FL33 to ``style.y_targets``. Raises :class:`DegenerateLandmarks`
    when a reference pair coincides (and for NaN points)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (N_POINTS, 2):
        raise ValueError(f"need (68, 2) or (N, 68, 2) dlib points, got shape {points.shape}")
    out = np.empty_like(points)
    for axis, (first, second), (t0, t1) in ((0, (0, 16), style.x_targets), (1, (27, 33), style.y_targets)):
        a, b = points[..., first, axis, None], points[..., second, axis, None]
        span = b - a
        if not np.all(np.abs(span) > 1e-6):
            raise DegenerateLandmarks(f"FL{first} and FL{second} coincide (or are NaN) in {'xy'[axis]}: "
                                      "the face cannot be normalised")
        value = points[..., axis]
        out[..., axis] = (t1 * (value - a) + t0 * (b - value)) / span  # the study's formula
    return out


def shift_parts(normalised, style: SketchStyle = SketchStyle()) -> np.ndarray:
    """Normalised points with eyes and eyebrows moved ``eye_shift`` down and the mouth ``mouth_shift``
    (the study's 50 px down and 70 px up); the jaw and nose are left where they are (they are not drawn)."""
    shifted = np.array(normalised, dtype=np.float64, copy=True)
    shifted[..., list(EYE_PARTS), 1] += style.eye_shift
    shifted[..., list(MOUTH_PARTS), 1] += style.mouth_shift
    return shifted


_SUBPIXEL = 4  # OpenCV's fixed-point bits: polygon corners at 1/16 px


def _strokes(shifted, strokes, size: int, width: int) -> np.ndarray:
    """``strokes`` of shifted points as white lines ``width`` px wide on a black size² canvas: each segment
    a filled rectangle ``width`` wide, each joint a disk of that diameter. (OpenCV's own ``thickness=t``
    draws lines about t + 2 px wide, and less across diagonals: not the width the study states.)"""
    canvas = np.zeros((size, size), np.uint8)
    points = np.asarray(shifted, dtype=np.float64)
    # OpenCV fills a shape's boundary pixels too: a band of half-width (w - 1) / 2 covers w pixel rows
    half, scale = (width - 1) / 2, 1 << _SUBPIXEL
    if half <= 0:
        for part, closed in strokes:
            cv2.polylines(canvas, [np.round(points[list(part)]).astype(np.int32)], closed, 255, 1, cv2.LINE_8)
        return canvas
    for part, closed in strokes:
        line = points[list(part) + ([part[0]] if closed else [])]
        for p, q in zip(line[:-1], line[1:]):
            along = q - p
            length = np.hypot(*along)
            if length > 1e-9:
                normal = np.array([-along[1], along[0]]) / length * half
                corners = np.array([p + normal, q + normal, q - normal, p - normal])
                cv2.fillConvexPoly(canvas, np.round(corners * scale).astype(np.int32), 255, cv2.LINE_8, _SUBPIXEL)
        for p in line:
            cv2.circle(canvas, tuple(np.round(p * scale).astype(int)), int(round(half * scale)), 255, -1, cv2.LINE_8,
                       _SUBPIXEL)
    return canvas


def draw(shifted, style: SketchStyle = SketchStyle()) -> np.ndarray:
    """The strokes of one face's shifted points: white ``line_width`` px lines on a black ``size``² canvas."""
    return _strokes(shifted, STROKES, style.size, style.line_width)


def render(points, style: SketchStyle = SketchStyle(), output_size: int | None = None) -> np.ndarray:
    """The sketch of dlib points (68, 2) → (output_size, output_size) uint8; or of (N, 68, 2) points →
    (N, output_size, output_size). Drawn at ``style.size`` and shrunk by area averaging (the networks'
    input resolution is a parameter; the strokes stay the study's width relative to the face)."""
    points = np.asarray(points)
    if points.ndim == 3:
        return np.stack([render(p, style, output_size) for p in points]) if len(points) else \
            np.zeros((0, output_size or style.size, output_size or style.size), np.uint8)
    sketch = draw(shift_parts(normalise(points, style), style), style)
    if output_size and output_size != style.size:
        sketch = cv2.resize(sketch, (output_size, output_size), interpolation=cv2.INTER_AREA)
    return sketch


# --------------------------------------------------------------------------------------------------
# Landmarks: dlib's 68 points on the first face box found, MediaPipe's 478 mapped to 68 for the rest

#: The face-box cascade the chapter uses unless it passes its own: the study's Haar cascade, on the face
#: upscaled to 96 px with a replicated border (tightly cropped 48-px faces need the room; faces under 48 px
#: of that are not searched), then chapter 2's dlib HOG detector upscaled to 100 px. On 1,500 FER2013 faces
#: the Haar setting finds 77 % in 4.8 ms (chapter 2's 48-px setting: 37 %), HOG at 100 px 75 % in 0.7 ms.
DEFAULT_DETECTORS: dict[str, dict[str, Any]] = {
    "haar": {"scale_factor": 1.1, "min_neighbors": 3, "min_size": 48, "upscale_to": 96, "padding": 16},
    "dlib_hog": {"upscale_to": 100, "upsample": 0},
}


@lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(dlib_shape_predictor_path()))


@dataclass
class Found:
    """One face's 68 points (input pixels), where they came from, the face box and the time per stage."""

    points: np.ndarray
    source: str
    box: tuple[float, float, float, float]
    detect_ms: float
    landmark_ms: float


class Dlib68(NativeResource):
    """The study's landmarking: the face box from the first detector that finds one (``detectors``, in
    order: names of :data:`fer_lib.preprocess.DETECTORS` with their options), the box rescaled to
    ``crop_size``² (the study: 250), dlib's 68-point predictor on it, the points mapped back to the input."""

    def __init__(self, detectors: dict[str, dict[str, Any]] | None = None, crop_size: int = 250):
        from .preprocess import make_detector

        detectors = DEFAULT_DETECTORS if detectors is None else detectors
        unknown = set(detectors) - set(SOURCES[:-1])
        if unknown:
            raise KeyError(f"face-box detectors {sorted(unknown)} are not among {SOURCES[:-1]} "
                           "(MediaPipe is the landmark fallback, not a box detector here)")
        self.detectors = []
        self.crop_size = crop_size
        try:  # what fails to build closes the detectors built before it
            for name, options in detectors.items():
                self.detectors.append((name, make_detector(name, **(options or {}))))
            self.predictor = _predictor()
        except BaseException:
            self.close()
            raise

    def close(self):
        """Close the detectors now (a second call does nothing)."""
        detectors, self.detectors = self.detectors, []
        for _, detector in detectors:
            detector.close()

    def predict(self, gray: np.ndarray, box) -> np.ndarray:
        """dlib's 68 points (input pixels) for the face in ``box``, predicted on the box rescaled to crop_size²."""
        import dlib

        x0, y0, x1, y1 = box
        size = self.crop_size
        sx, sy = size / max(x1 - x0, 1e-6), size / max(y1 - y0, 1e-6)
        # one warp crops, rescales and pads (a box may reach past the image: the border is replicated)
        matrix = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])
        crop = cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        shape = self.predictor(crop, dlib.rectangle(0, 0, size - 1, size - 1))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return points / [sx, sy] + [x0, y0]

    def landmarks(self, gray: np.ndarray) -> Found | None:
        """The 68 points of the face in an image (grey, BGR or BGRA uint8; or any image
        :func:`fer_lib.images.detector_image` converts), or None when no detector finds a face."""
        from .preprocess import to_gray

        gray = to_gray(detector_image(gray))
        started = time.perf_counter()
        for name, detector in self.detectors:
            detection = detector.detect(gray)
            if detection is not None:
                detected = time.perf_counter()
                points = self.predict(gray, detection.box)
                return Found(points, name, detection.box, (detected - started) * 1000,
                             (time.perf_counter() - detected) * 1000)
        return None


@lru_cache(maxsize=1)
def default_index_map() -> np.ndarray:
    """(68,) the MediaPipe landmark standing in for each dlib point (``models/dlib68_from_mediapipe.json``,
    made by :func:`derive_index_map`; see the file's ``derived_from``)."""
    return np.asarray(json.loads((PACKAGE_DIR / "models" / "dlib68_from_mediapipe.json").read_text())["index"])


def inter_ocular(points) -> np.ndarray:
    """Distance between the eye centres of dlib points (68, 2) or (N, 68, 2): the scale errors are quoted in."""
    points = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(points[..., RIGHT_EYE, :].mean(-2) - points[..., LEFT_EYE, :].mean(-2), axis=-1)


def derive_index_map(dlib_points, mediapipe_points, chunk: int = 256) -> np.ndarray:
    """(68,) for each dlib point a distinct MediaPipe landmark (of 478): the one-to-one assignment that
    minimises the summed mean distance between each dlib point and its landmark over the faces both
    sources found; distances in units of the face's inter-ocular distance, so large and small faces
    weigh alike. ``dlib_points`` (N, 68, 2) and ``mediapipe_points`` (N, 478, 2 or 3) in the same pixels."""
    from scipy.optimize import linear_sum_assignment

    dlib_points = np.asarray(dlib_points, dtype=np.float64)
    mediapipe_points = np.asarray(mediapipe_points, dtype=np.float64)[..., :2]
    if len(dlib_points) != len(mediapipe_points) or not len(dlib_points):
        raise ValueError(f"need the same faces from both sources, got {len(dlib_points)} and {len(mediapipe_points)}")
    if np.isnan(dlib_points).any() or np.isnan(mediapipe_points).any():
        raise ValueError("pass only faces both sources found (NaN points given)")
    scale = inter_ocular(dlib_points)
    total = np.zeros((N_POINTS, mediapipe_points.shape[1]))
    for start in range(0, len(dlib_points), chunk):
        part = slice(start, start + chunk)
        distance = np.linalg.norm(dlib_points[part, :, None] - mediapipe_points[part, None], axis=-1)
        total += (distance / scale[part, None, None]).sum(0)
    # distinct landmarks: two dlib points never collapse onto one (the nearest-only map merges two brow points)
    return linear_sum_assignment(total)[1]


def from_mediapipe(landmarks, index_map=None) -> np.ndarray:
    """dlib-style 68 points (…, 68, 2) from MediaPipe's 478 (…, 478, 2 or 3) by a fixed index map."""
    index_map = default_index_map() if index_map is None else np.asarray(index_map)
    return np.asarray(landmarks)[..., index_map, :2]


def map_error(dlib_points, mediapipe_points, index_map=None) -> pd.DataFrame:
    """Per face: the mean distance between dlib's points and the mapped MediaPipe points, in pixels and
    as a fraction of the inter-ocular distance."""
    dlib_points = np.asarray(dlib_points, dtype=np.float64)
    mapped = from_mediapipe(mediapipe_points, index_map)
    error = np.linalg.norm(dlib_points - mapped, axis=-1).mean(-1)
    return pd.DataFrame({"mean error px": error, "mean error / inter-ocular": error / inter_ocular(dlib_points)})


@dataclass
class SketchLandmarks(PerImageColumns):
    """dlib-style 68 points of every image of a dataset, aligned with its ``ids``. ``source`` says which
    detector's box the points were predicted in (``haar``, ``dlib_hog``), ``mediapipe`` when they were
    mapped from MediaPipe's mesh, ``lost`` when no source found the face (NaN points: counted, not dropped)."""

    ids: np.ndarray
    points: np.ndarray        # (N, 68, 2) input pixels; NaN for a lost face
    source: np.ndarray        # (N,) one of SOURCES or LOST
    box: np.ndarray           # (N, 4) x0, y0, x1, y1 of the face (from the mapped points for mediapipe)
    detect_ms: np.ndarray     # (N,) face-box detection, all detectors tried (NaN: not measured here)
    landmark_ms: np.ndarray   # (N,) crop, rescale and dlib's predictor (NaN for mediapipe and lost)

    PER_IMAGE: ClassVar[tuple[str, ...]] = ("ids", "points", "source", "box", "detect_ms", "landmark_ms")
    MADE_BY: ClassVar[str] = "landmark_dataset"

    @property
    def found(self) -> np.ndarray:
        return self.source != LOST

    @property
    def coverage(self) -> float:
        return float(self.found.mean()) if len(self) else 0.0

    def coverage_table(self, dataset, by: str = "split") -> pd.DataFrame:
        """Images per source (columns) and ``by`` (rows: ``split``, ``class`` or ``emotion``), with coverage."""
        self.check_aligned(dataset)
        rows = {"split": dataset.split, "class": dataset.label_names, "emotion": dataset.emotions}[by]
        table = pd.crosstab(pd.Series(rows, name=by), pd.Categorical(self.source, categories=[*SOURCES, LOST]),
                            dropna=False)
        table.columns = list(table.columns)
        table.loc["all"] = table.sum()
        table["images"] = table.sum(axis=1)
        table["coverage"] = 1 - table[LOST] / table["images"].clip(lower=1)
        return table

    def split_arrays(self, inputs, dataset, split_names=None):
        """:class:`~fer_lib.experiment.SplitArrays` of ``inputs`` (one row per image of ``dataset``) for the
        faces a sketch could be drawn for; ``n_split`` keeps the lost ones (coverage, misses counted wrong)."""
        from .experiment import SplitArrays

        self.check_aligned(dataset)
        return SplitArrays.for_found(inputs, dataset, self.found, split_names)

    def lost(self, dataset) -> pd.DataFrame:
        """Every image no source found a face in: id, split, emotion."""
        self.check_aligned(dataset)
        missing = ~self.found
        return pd.DataFrame({"id": dataset.ids[missing], "split": dataset.split[missing],
                             "emotion": dataset.emotions[missing]})


def _landmark_chunk(images, detectors, crop_size, ids=None):
    from .preprocess import to_gray

    images = detector_images(images, ids)
    n = len(images)
    out = {"points": np.full((n, N_POINTS, 2), np.nan, np.float32), "source": np.full(n, LOST, dtype=object),
           "box": np.full((n, 4), np.nan, np.float32), "detect_ms": np.zeros(n, np.float32),
           "landmark_ms": np.full(n, np.nan, np.float32)}
    with Dlib68(detectors, crop_size) as landmarker:  # built in the worker: detectors do not pickle
        for index, image in enumerate(images):
            started = time.perf_counter()
            found = landmarker.landmarks(to_gray(image))
            if found is None:
                out["detect_ms"][index] = (time.perf_counter() - started) * 1000
                continue
            out["points"][index], out["source"][index], out["box"][index] = found.points, found.source, found.box
            out["detect_ms"][index], out["landmark_ms"][index] = found.detect_ms, found.landmark_ms
    return out


@lru_cache(maxsize=1)
def _predictor_digest() -> str:
    return sha256(dlib_shape_predictor_path())[:16]


def landmark_dataset(dataset, detectors: dict[str, dict] | None = None, *, crop_size: int = 250,
                     mediapipe="extract", index_map=None, n_jobs: int = -1, chunk_size: int = 500,
                     cache: bool = True, cache_dir=None, executor=None) -> SketchLandmarks:
    """:class:`SketchLandmarks` for every image of ``dataset``: :class:`Dlib68` (one process per core,
    cached in ``cache/sketch_landmarks``), then MediaPipe for the faces no detector found.

    ``mediapipe``: ``"extract"`` runs :func:`fer_lib.face_mesh.extract_dataset` on those faces only (cached
    like every extraction); a :class:`~fer_lib.face_mesh.FaceMeshFeatures` of ``dataset`` (e.g. a chapter's
    cached extraction) is used as it is; ``None`` leaves them lost. ``index_map``: see :func:`from_mediapipe`.
    ``executor``: a :class:`concurrent.futures.Executor` (e.g. a Dask client's ``client.get_executor()``, see
    :mod:`fer_lib.executors`) that runs the same chunks (and the MediaPipe extraction) instead of joblib.
    """
    from joblib import Parallel, delayed

    from .face_mesh import FaceMeshFeatures, extract_dataset

    detectors = DEFAULT_DETECTORS if detectors is None else detectors
    key = hashlib.sha256()
    key.update(json.dumps([detectors, crop_size, _predictor_digest()], sort_keys=True, default=str).encode())
    key.update("\n".join(map(str, dataset.ids)).encode())
    key.update(np.ascontiguousarray(dataset.images).tobytes())
    path = Path(cache_dir or repo_root() / "cache" / "sketch_landmarks") / f"{dataset.name}-{key.hexdigest()[:16]}.npz"
    progress.note("extraction", computed=not (cache and path.is_file()))
    if cache and path.is_file():
        arrays = dict(np.load(path, allow_pickle=True))
    else:
        detector_images(dataset.images, dataset.ids, f"{dataset.name} image")  # refused here, not in a worker
        chunks = [np.arange(s, min(s + chunk_size, len(dataset))) for s in range(0, len(dataset), chunk_size)]
        calls = ((dataset.images[c], detectors, crop_size, np.asarray(dataset.ids)[c]) for c in chunks)
        if executor is None:
            jobs = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_landmark_chunk)(*c) for c in calls)
        else:
            from .executors import results

            jobs = results(executor, _landmark_chunk, calls)
        parts = list(progress.bar(jobs, total=len(chunks), desc=f"dlib-68 on {dataset.name}", unit="chunk"))
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else \
            _landmark_chunk(dataset.images[:0], detectors, crop_size)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            with written_atomically(path) as temporary, open(temporary, "wb") as file:
                np.savez(file, **arrays)
    result = SketchLandmarks(ids=np.asarray(dataset.ids), **arrays)
    missed = np.flatnonzero(~result.found)
    if mediapipe is None or not len(missed):
        return result
    if isinstance(mediapipe, FaceMeshFeatures):
        features = mediapipe.for_dataset(dataset.subset(missed))
    elif mediapipe == "extract":
        features = extract_dataset(dataset.subset(missed), n_jobs=n_jobs, progress=False, cache=cache,
                                   executor=executor)
    else:
        raise ValueError(f"mediapipe must be 'extract', a FaceMeshFeatures or None, got {mediapipe!r}")
    rescued = missed[features.detected]
    points = from_mediapipe(features.landmarks[features.detected], index_map)
    result.points[rescued], result.source[rescued] = points, "mediapipe"
    result.box[rescued] = np.concatenate([points.min(1), points.max(1)], axis=1)
    result.detect_ms[rescued] += features.ms[features.detected]  # MediaPipe's time, when it was measured
    return result


def model_inputs(landmarks: SketchLandmarks, style: SketchStyle = SketchStyle(), size: int = 48) -> np.ndarray:
    """(N, size, size, 1) float32 sketches (0..255) of every image, one row per image; a lost face's row is
    black (select the found faces with ``landmarks.split_arrays`` or ``landmarks.found``)."""
    out = np.zeros((len(landmarks), size, size, 1), np.float32)
    out[landmarks.found, ..., 0] = render(landmarks.points[landmarks.found], style, size)
    return out


def photo_inputs(dataset, landmarks: SketchLandmarks, size: int = 48, margin: float = 0.1) -> np.ndarray:
    """(N, size, size, 1) float32 photos of the same faces, cropped to the box the sketch's landmarks came
    from (grown by ``margin``): what chapter 3's 2D CNN sees, for the sketch-against-photo comparison.
    A lost face keeps its whole frame."""
    from .preprocess import crop, resize, to_gray

    landmarks.check_aligned(dataset)
    out = np.empty((len(dataset), size, size, 1), np.float32)
    for index, image in enumerate(dataset.images):
        gray = to_gray(image)
        box = landmarks.box[index]
        out[index, ..., 0] = crop(gray, box, margin, size) if landmarks.found[index] else resize(gray, size)
    return out


#: the stroke groups a heat map is summed over (Grad-CAM on sketches)
PARTS = {"eyebrows": RIGHT_BROW + LEFT_BROW, "eyes": RIGHT_EYE + LEFT_EYE, "mouth": MOUTH_PARTS}


def part_masks(points, style: SketchStyle = SketchStyle(), size: int = 48) -> np.ndarray:
    """(N, len(PARTS), size, size) bool: the pixels of each face's ``size``² sketch (as :func:`render` makes
    it) that belong to each group of strokes — eyebrows, eyes, mouth."""
    masks = np.zeros((len(points), len(PARTS), size, size), bool)
    for face, face_points in enumerate(np.asarray(points)):
        shifted = shift_parts(normalise(face_points, style), style)
        for number, part in enumerate(PARTS.values()):
            strokes = [(stroke, closed) for stroke, closed in STROKES if set(stroke) <= set(part)]
            drawn = _strokes(shifted, strokes, style.size, style.line_width)
            masks[face, number] = cv2.resize(drawn, (size, size), interpolation=cv2.INTER_AREA) > 0
    return masks


def outside_canvas(points, style: SketchStyle = SketchStyle()) -> np.ndarray:
    """(N,) whether any drawn point of a face falls off the canvas after the shifts (a wide-open mouth
    sits below FL33 and can pass the bottom edge once moved up only 70 px): its stroke is cut there."""
    shifted = shift_parts(normalise(points, style), style)
    drawn = shifted[:, list(EYE_PARTS + MOUTH_PARTS)]
    return ((drawn < 0) | (drawn > style.size - 1)).any(axis=(1, 2))


def subject_datasets(data_dir, label_set: str = "valence4", size: int = 256):
    """JAFFE, CK+48 and the two combined, as the study combined its sources, under ``label_set``. CK+48's
    48×48 crops are upscaled (bicubic) to JAFFE's ``size`` so the two share one image array, and dlib sees
    both at a size it was made for. The combination keeps each image's subject (subject-grouped folds
    stay subject-independent) and its source in ``meta["source"]``."""
    from dataclasses import replace as with_fields

    from .data import concatenate, load_ckplus, load_jaffe
    from .preprocess import resize

    jaffe, ckplus = load_jaffe(data_dir).relabel(label_set), load_ckplus(data_dir).relabel(label_set)
    jaffe = with_fields(jaffe, images=np.stack([resize(image, size) for image in jaffe.images])) \
        if jaffe.images.shape[1:] != (size, size) else jaffe
    ckplus = with_fields(ckplus, images=np.stack([resize(image, size) for image in ckplus.images]))
    combined = concatenate([with_fields(jaffe, meta={}), with_fields(ckplus, meta={})], name="jaffe+ckplus48")
    combined.meta = {"source": np.repeat([jaffe.name, ckplus.name], [len(jaffe), len(ckplus)])}
    return jaffe, ckplus, combined


# --------------------------------------------------------------------------------------------------
# Networks. Each takes the (input_size, input_size, 1) sketch in 0..255 — drawn at that size by render(), so
# no network resizes — and carries its augmentation and pixel normalisation as layers, so a saved model is
# complete (as the 2D models of fer_lib.pixels).


def _sketch_input(input_size: int, augmentation: dict | None, seed: int):
    import keras

    from .layers import augmentation as augmentation_block

    inputs = keras.Input((input_size, input_size, 1), name="sketch")
    return inputs, (augmentation_block(**augmentation, seed=seed)(inputs) if augmentation else inputs)


def _with_weights(model, weights):
    """``model`` with the layers of a weights file that fit it (see :func:`load_weights_file`)."""
    if weights:
        load_weights_file(model, weights)
    return model


#: VGG11 (Simonyan and Zisserman's configuration A): 8 convolutions ("M": 2×2 max pooling) and 3 dense layers;
#: numbers are multiples of ``width`` (the original: width 64, dense 4096).
VGG11_LAYOUT = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


def vgg11(n_classes: int, *, input_size: int = 48, width: int = 16, dense_units: int = 256, dropout: float = 0.5,
          bn_momentum: float = 0.9, normalisation: str = "standard", augmentation: dict | None = None, weights=None,
          seed: int = 0):
    """The study's VGG11: the 11 weight layers of configuration A, with batch norm after each convolution
    (it trains from scratch in a fraction of the epochs), widths scaled by ``width`` for a CPU.
    ``bn_momentum`` 0.9 rather than Keras' 0.99: a fold of a few hundred sketches is a few steps per
    epoch, too few for slow moving statistics (with 0.99 the digits' validation accuracy stays at chance
    for 4 epochs while training accuracy passes 90 %).
    ``weights``: a weights file of a VGG11 built here (e.g. pretrained on characters) — every layer
    whose name and shapes match is loaded (the class layer of another label set is not)."""
    import keras
    from keras import layers

    from .layers import PerImageNormalisation

    inputs, x = _sketch_input(input_size, augmentation, seed)
    x = PerImageNormalisation(normalisation)(x)
    number = 0
    for step in VGG11_LAYOUT:
        if step == "M":
            x = layers.MaxPooling2D(padding="same")(x)
            continue
        number += 1
        x = layers.Conv2D(step * width, 3, padding="same", use_bias=False, name=f"conv{number}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"conv{number}_bn")(x)
        x = layers.ReLU(name=f"conv{number}_relu")(x)
    x = layers.Flatten()(x)
    for dense in (1, 2):
        x = layers.Dense(dense_units, activation="relu", name=f"fc{dense}")(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return _with_weights(keras.Model(inputs, outputs, name="vgg11"), weights)


def resnet50(n_classes: int, *, input_size: int = 32, bn_momentum: float = 0.9, normalisation: str = "standard",
             augmentation: dict | None = None, dropout: float = 0.3, weights=None, seed: int = 0):
    """Keras Applications' ResNet50 on the sketch repeated to three channels (``input_size`` at least 32,
    Keras' minimum), its batch norms set to ``bn_momentum`` (see :func:`vgg11`). ``weights``: ``None``
    (from scratch), ``"imagenet"`` (downloaded by Keras), a ResNet50 no-top weights file in Keras
    Applications' format (``.h5``: ImageNet scaling, as for ``"imagenet"``), or a ``.keras`` /
    ``.weights.h5`` file of a model built here (matching layers loaded)."""
    import keras
    from keras import layers

    from .layers import PerImageNormalisation

    own = isinstance(weights, (str, Path)) and str(weights).endswith((".keras", ".weights.h5"))
    imagenet = bool(weights) and not own
    inputs, x = _sketch_input(input_size, augmentation, seed)
    x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    if imagenet:  # "caffe" scaling, as Keras' ResNet50 weights expect
        x = layers.Rescaling(1.0, offset=[-103.939, -116.779, -123.68], name="imagenet_scaling")(x)
    else:
        x = PerImageNormalisation(normalisation)(x)
    backbone = keras.applications.ResNet50(include_top=False, weights=str(weights) if imagenet else None,
                                           input_shape=(input_size, input_size, 3), pooling="avg")
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum  # saved with the model (part of each layer's config)
    x = layers.Dropout(dropout)(backbone(x))
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return _with_weights(keras.Model(inputs, outputs, name="resnet50"), weights if own else None)


def capsnet(n_classes: int, *, input_size: int = 28, conv_filters: int = 128, kernel_size: int = 9,
            primary_capsules: int = 32, primary_dim: int = 8, class_dim: int = 16, routings: int = 3,
            normalisation: str = "minmax", augmentation: dict | None = None, weights=None, seed: int = 0):
    """CapsNet (Sabour et al., 2017) as the study configured it: a 9×9 convolution with 128 filters, primary
    capsules (a 9×9 stride-2 convolution giving ``primary_capsules`` maps of ``primary_dim``-D capsules),
    class capsules of ``class_dim`` by dynamic routing (``routings``: the study used 3 while pre-training
    and 5 while fine-tuning), and capsule lengths as class scores, trained with the margin loss
    (``TrainConfig(loss="margin")``). MNIST's 28×28 input by default. No reconstruction decoder.
    ``weights``: a weights file of a CapsNet built here; the class capsules of another label set are not loaded."""
    import keras
    from keras import layers

    from .capsules import CapsuleLength, ClassCapsules, Squash
    from .layers import PerImageNormalisation

    inputs, x = _sketch_input(input_size, augmentation, seed)
    x = PerImageNormalisation(normalisation)(x)
    x = layers.Conv2D(conv_filters, kernel_size, activation="relu", name="conv1")(x)
    x = layers.Conv2D(primary_capsules * primary_dim, kernel_size, strides=2, name="primary_conv")(x)
    x = Squash(name="primary_capsules")(layers.Reshape((-1, primary_dim), name="primary_reshape")(x))
    x = ClassCapsules(n_classes, class_dim, routings, name="class_capsules")(x)
    outputs = CapsuleLength(name="emotion")(x)
    return _with_weights(keras.Model(inputs, outputs, name="capsnet"), weights)


MODELS = {"vgg11": vgg11, "resnet50": resnet50, "capsnet": capsnet}


def build(name: str, n_classes: int, **options):
    """Build a sketch network by name (:data:`MODELS`) with its options."""
    if name not in MODELS:
        raise KeyError(f"Unknown sketch network {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, **options)


# --------------------------------------------------------------------------------------------------
# Transfer learning: weights files, and a character data set that ships with scikit-learn


def transfer_weights(source, target) -> list[str]:
    """Copy into ``target`` the weights of every layer of ``source`` with the same name and weight shapes
    (a nested backbone counts as one layer); returns the names copied. The class layer of a model
    trained on other classes has other shapes and is left as initialised."""
    copied = []
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            other = source.get_layer(layer.name).get_weights()
        except ValueError:
            continue
        if [w.shape for w in other] == [w.shape for w in weights]:
            layer.set_weights(other)
            copied.append(layer.name)
    return copied


def load_weights_file(model, path) -> list[str]:
    """Load into ``model`` the layers of a weights file that fit it; returns the names of those layers.

    ``.keras``: a whole saved model (e.g. the character-pretrained one), matched by layer name and shape
    (:func:`transfer_weights`). ``.weights.h5``: Keras weights of a model of the same architecture; layers
    whose shapes differ (the class layer of another label set) are skipped. A file that fits no layer is
    an error, never a silent from-scratch model."""
    from .training import load_model

    path = Path(path)
    if not path.is_absolute() and not path.is_file():
        path = repo_root() / path  # the chapters name files relative to the book's root
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.name.endswith(".keras"):
        copied = transfer_weights(load_model(path, compile=False), model)
    elif path.name.endswith(".weights.h5"):
        before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
        model.load_weights(path, skip_mismatch=True)
        copied = [layer.name for layer in model.layers if before[layer.name] and any(
            not np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))]
    else:
        raise ValueError(f"{path.name}: give a .keras model or a .weights.h5 file (ResNet50's ImageNet .h5 "
                         "goes through resnet50(weights=...))")
    if not copied:
        raise ValueError(f"no layer of {path.name} fits model {model.name!r}: is it a weights file of the same network?")
    return copied


def digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits (1,797 images of 8×8, 0–16) as white-on-black (N, size, size, 1)
    images in 0..255 and their labels: the character data set that ships inside an installable package,
    standing in for MNIST (70,000 images of 28×28), which cannot be downloaded here."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images * (255.0 / 16.0)).astype(np.float32)
    big = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC) for image in images])
    return np.clip(big, 0, 255)[..., None].astype(np.float32), data.target.astype(np.int64)


def pretrain_on_digits(name: str, options: dict[str, Any], config, *, val_fraction: float = 0.2,
                       max_images: int | None = None, seed: int = 0, store=None):
    """Pre-train network ``name`` (built with ``options``, ``input_size`` among them) on :func:`digits`
    (a stratified ``max_images`` of them, or all), early-stopping on a stratified ``val_fraction``; cached
    like every :func:`fer_lib.training.fit`. The saved model (``result.run_dir / "model.keras"``) is the
    weights file fine-tuning starts from. ``store``: a committed folder mirroring the fit
    (:func:`fer_lib.training.fit`)."""
    from sklearn.model_selection import train_test_split

    from .training import fit

    x, y = digits(options.get("input_size", 48))
    if max_images is not None and max_images < len(y):
        keep, _ = train_test_split(np.arange(len(y)), train_size=max_images, stratify=y, random_state=seed)
        x, y = x[keep], y[keep]
    fit_index, val_index = train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=seed)
    return fit(lambda: build(name, 10, **options), x[fit_index], y[fit_index], x[val_index], y[val_index], config,
               name=f"sketch-pretrain-{name}", options={"model": name, **options}, verbose=0, store=store)

"""MediaPipe face analysis of whole datasets: 478×3 landmarks, 52 blendshapes, the pose matrix.

One module serves the landmarks, voxel, mesh and blendshape chapters. :func:`extract_dataset` runs
MediaPipe Tasks' FaceLandmarker (the vendored ``face_landmarker.task``) on every image, one process
per core, and returns :class:`FaceMeshFeatures`: for each image a detected flag, the landmarks in the
original image's pixels (z on the x scale), the 52 blendshape scores by name, the 4×4 facial
transformation matrix, which attempt found the face and the time it took.

48×48 faces are small for MediaPipe, so each image goes through a cascade of :class:`Attempt` s
(upscaled size, black padding, optional CLAHE, optionally the mirrored image) until one finds a face; a miss is kept with
``detected=False`` and NaN features — counted and reported, never dropped. Results are cached in
``cache/face_mesh/<dataset>-<digest>/`` one chunk at a time (the digest covers the images, the
attempts and the model file's hash), so an interrupted extraction resumes with the chunks not yet done.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pandas as pd

from .data import PerImageColumns
from .images import detector_image, detector_images
from .native import NativeResource
from .paths import PACKAGE_DIR, face_landmarker_path, repo_root, sha256, written_atomically

N_LANDMARKS = 478
N_BLENDSHAPES = 52


@dataclass(frozen=True)
class Attempt:
    """One way of showing a small face to MediaPipe: upscale to ``input_size``, pad, maybe CLAHE, maybe
    mirrored (MediaPipe's detector is not left-right symmetric: on FER2013 the mirrored image finds
    faces the original misses; the results are mirrored back, see :func:`unmirror`)."""

    input_size: int = 192
    padding: int = 24
    clahe: bool = False
    mirror: bool = False


#: The cascade used unless a chapter passes its own. The first four attempts found 98.43 % of FER2013
#: (the first is chapter 2's detector setting); the mirrored ones, chosen greedily on the 562 faces the
#: first four missed (benchmarks/face_mesh_speed.py records the counts), bring it above 99 %.
DEFAULT_ATTEMPTS = (
    Attempt(192, 24), Attempt(256, 64), Attempt(128, 8), Attempt(192, 24, clahe=True),
    Attempt(224, 48, mirror=True), Attempt(128, 8, clahe=True, mirror=True), Attempt(384, 128, mirror=True),
    Attempt(128, 8, mirror=True), Attempt(128, 32, clahe=True), Attempt(192, 24, clahe=True, mirror=True),
)


@lru_cache(maxsize=1)
def mirror_permutation() -> np.ndarray:
    """(478,) landmark i of a mirrored face is landmark ``mirror[i]`` of the face (left/right swapped)."""
    # beside the package, not in $FER_MODELS_DIR: it is this project's file, not a vendored model
    return np.asarray(json.loads((PACKAGE_DIR / "models" / "mediapipe_mirror.json").read_text())["mirror"])


def _swap_sides(name: str) -> str:
    return re.sub("Left|Right", lambda side: {"Left": "Right", "Right": "Left"}[side.group()], name)


def unmirror(points: np.ndarray, blendshapes: dict, matrix: np.ndarray, width: float):
    """Results of MediaPipe on a mirrored image as results on the image itself: x reflected back,
    left/right landmarks and blendshapes swapped, the pose matrix reflected (S M S, S = diag(-1, 1, 1, 1))."""
    points = points[mirror_permutation()].copy()
    points[:, 0] = width - points[:, 0]
    swapped = {_swap_sides(name): score for name, score in blendshapes.items()}
    blendshapes = {name: swapped[name] for name in blendshapes}  # MediaPipe's usual name order
    reflect = np.diag([-1.0, 1.0, 1.0, 1.0])
    return points, blendshapes, reflect @ matrix @ reflect


def derive_mirror_permutation(images, attempt: Attempt = Attempt(192, 24)) -> np.ndarray:
    """Re-derive :func:`mirror_permutation` from real faces (how ``models/mediapipe_mirror.json`` was made).

    The mean shape of the faces (similarity-aligned, proper rotations only) is reflected (x → −x) and
    matched to itself by a one-to-one assignment of nearest points, re-aligning once the match is known.
    """
    from scipy.optimize import linear_sum_assignment

    from .preprocess import to_gray

    def unit(x):
        x = x - x.mean(0)
        return x / np.sqrt((x ** 2).sum(1).mean())

    def rotate_onto(x, ref):  # orthogonal Procrustes without reflections: a mirror must stay a mirror
        u, _, vt = np.linalg.svd(x.T @ ref)
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        return x @ (u @ d @ vt)

    with FaceMeshExtractor((attempt,)) as extractor:
        shapes = [unit(found[0]) for image in images if (found := extractor.extract_one(to_gray(image), attempt))]
    if len(shapes) < 10:
        raise ValueError(f"MediaPipe found only {len(shapes)} faces; give at least 10 clear faces")
    mean = shapes[0]
    for _ in range(3):
        mean = unit(np.mean([rotate_onto(shape, mean) for shape in shapes], axis=0))
    mirrored = mean * [-1, 1, 1]
    target, permutation = mirrored, None  # first match without rotating: a rotation could fake the mirror
    for _ in range(5):
        distances = np.linalg.norm(mean[:, None] - target[None], axis=2)
        previous, permutation = permutation, linear_sum_assignment(distances)[1]
        if previous is not None and np.array_equal(previous, permutation):
            break
        target = np.empty_like(mirrored)
        target[permutation] = rotate_onto(mirrored[permutation] - mirrored.mean(0), mean)
    return permutation


def detected_landmarks(landmarks, n_points: int | None = N_LANDMARKS) -> np.ndarray:
    """``landmarks`` as an (N, n_points, 3) array, or a ValueError saying what is wrong: another shape,
    or faces MediaPipe missed (NaN rows), which every representation must leave out and count."""
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[-1] != 3 or (n_points and landmarks.shape[1] != n_points):
        raise ValueError(f"landmarks must be (N, {n_points or 'points'}, 3), got shape {landmarks.shape} "
                         "(for one face pass landmarks[None])")
    missing = np.isnan(landmarks).any(axis=(1, 2))
    if missing.any():
        raise ValueError(f"{int(missing.sum())} of {len(landmarks)} faces have NaN landmarks (faces MediaPipe did "
                         "not detect); pass only detected faces, e.g. features.landmarks[features.detected] "
                         "or landmarks.split_arrays")
    return landmarks


def prepare(gray: np.ndarray, attempt: Attempt) -> tuple[np.ndarray, float]:
    """The RGB image MediaPipe sees for ``attempt`` and the scale from the original image to it."""
    if attempt.clahe:
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    scale = attempt.input_size / max(gray.shape)
    big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    pad = attempt.padding
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return np.ascontiguousarray(np.repeat(big[:, :, None], 3, axis=2)), scale


def to_original_pixels(landmarks, rgb_shape, attempt: Attempt, scale: float) -> np.ndarray:
    """MediaPipe's normalised landmarks of the prepared image as (478, 3) pixels of the original image
    (padding removed, scale undone; z on the x scale)."""
    height, width = rgb_shape[:2]
    points = np.array([(p.x * width, p.y * height, p.z * width) for p in landmarks])
    points[:, :2] -= attempt.padding
    return points / scale


@lru_cache(maxsize=1)
def mediapipe_tasks():
    """``(mediapipe, BaseOptions, vision)``, imported once. MediaPipe keeps the error of its optional audio
    import (``audio_record.sd_error``: no PortAudio here) with its traceback, which holds every frame of the
    stack that first imported it: the first extractor of a process, a local of that stack, then outlived
    its last reference and was closed only by the garbage collector or at exit. The traceback is dropped
    (the error itself, raised if audio is ever used, is kept)."""
    import mediapipe
    from mediapipe.tasks.python import BaseOptions, vision

    try:
        from mediapipe.tasks.python.audio.core import audio_record
    except ImportError:  # pragma: no cover - a MediaPipe without the audio tasks
        audio_record = None
    error = getattr(audio_record, "sd_error", None)
    if isinstance(error, BaseException):
        error.__traceback__ = None
    return mediapipe, BaseOptions, vision


class FaceMeshExtractor(NativeResource):
    """FaceLandmarker with blendshapes and transformation matrices. Close it: ``with FaceMeshExtractor(...) as
    extractor:`` or :meth:`close` (idempotent); an extractor left to the garbage collector closes MediaPipe's
    graph at an arbitrary point, inside another extraction or at exit."""

    def __init__(self, attempts=DEFAULT_ATTEMPTS, min_confidence: float = 0.3, min_presence: float | None = None):
        """``min_confidence``: MediaPipe's face detection and (unless ``min_presence`` is given) face
        presence thresholds."""
        _, BaseOptions, vision = mediapipe_tasks()

        self.landmarker = None  # close() works on a half-made extractor
        if not attempts:
            raise ValueError("give at least one Attempt")
        self.attempts = tuple(Attempt(**a) if isinstance(a, dict) else a for a in attempts)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(face_landmarker_path())),
            num_faces=1, min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence if min_presence is None else min_presence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True,
        )
        self.landmarker = vision.FaceLandmarker.create_from_options(options)

    def close(self) -> None:
        """Close MediaPipe's graph now (a second call does nothing)."""
        landmarker, self.landmarker = self.landmarker, None
        if landmarker is not None:
            landmarker.close()

    def extract_one(self, gray: np.ndarray, attempt: Attempt, *, where: str = "image"):
        """(landmarks (478, 3) in the original pixels, blendshapes {name: score}, matrix (4, 4)) or None.
        ``gray``: any image :func:`fer_lib.images.detector_image` accepts (``where`` names it in its errors)."""
        from .preprocess import to_gray

        if self.landmarker is None:
            raise RuntimeError("this FaceMeshExtractor is closed; make a new one (with FaceMeshExtractor(...) as ...)")
        mp = mediapipe_tasks()[0]
        gray = to_gray(detector_image(gray, where))  # a grey uint8 image is passed on as it is
        rgb, scale = prepare(np.ascontiguousarray(gray[:, ::-1]) if attempt.mirror else gray, attempt)
        result = self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not result.face_landmarks:
            return None
        points = to_original_pixels(result.face_landmarks[0], rgb.shape, attempt, scale)
        blendshapes = {c.category_name: c.score for c in result.face_blendshapes[0]}
        matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=float).reshape(4, 4)
        if attempt.mirror:
            return unmirror(points, blendshapes, matrix, gray.shape[1])
        return points, blendshapes, matrix

    def extract(self, images, *, ids=None, first_found=None) -> dict[str, np.ndarray]:
        """Arrays for a batch of images: each goes through the attempts until one finds a face. The batch is
        checked first (:func:`fer_lib.images.detector_images`; ``ids`` name the images in its errors).
        ``first_found``: per image, the first attempt's :meth:`extract_one` result when another graph has
        found it already (one with the same first attempt that finds a subset of this one's faces with the
        same outputs: ``fer_lib.predict``'s shared pass), else None — that image runs every attempt here."""
        from .preprocess import to_gray

        images = detector_images(images, ids)
        n = len(images)
        out = {
            "detected": np.zeros(n, bool), "attempt": np.full(n, -1, np.int16), "ms": np.zeros(n, np.float32),
            "landmarks": np.full((n, N_LANDMARKS, 3), np.nan, np.float32),
            "blendshapes": np.full((n, N_BLENDSHAPES), np.nan, np.float32),
            "matrix": np.full((n, 4, 4), np.nan, np.float32),
        }
        names = None
        for index, image in enumerate(images):
            gray = to_gray(image)
            started = time.perf_counter()
            for number, attempt in enumerate(self.attempts):
                known = first_found[index] if first_found is not None and number == 0 else None
                found = known if known is not None else self.extract_one(gray, attempt)
                if found is not None:
                    points, blendshapes, matrix = found
                    names = names or list(blendshapes)
                    if list(blendshapes) != names:
                        raise RuntimeError("MediaPipe returned blendshapes in a different order between images")
                    out["landmarks"][index], out["matrix"][index] = points, matrix
                    out["blendshapes"][index] = list(blendshapes.values())
                    out["detected"][index], out["attempt"][index] = True, number
                    break
            out["ms"][index] = (time.perf_counter() - started) * 1000
        out["blendshape_names"] = np.array(names or [], dtype=object)
        return out


@dataclass
class FaceMeshFeatures(PerImageColumns):
    """MediaPipe's view of every image of a dataset, aligned with its ``ids`` (misses: NaN features)."""

    ids: np.ndarray
    detected: np.ndarray
    landmarks: np.ndarray          # (N, 478, 3), original image pixels, z on the x scale
    blendshapes: np.ndarray        # (N, 52)
    blendshape_names: list[str]
    matrix: np.ndarray             # (N, 4, 4) facial transformation matrices
    attempt: np.ndarray            # index into ``attempts`` that found the face, -1 for a miss
    ms: np.ndarray                 # ms per image when extracted (all attempts tried)
    attempts: tuple[Attempt, ...] = field(default=DEFAULT_ATTEMPTS)

    #: the fields holding one entry per image (the rest describe the extraction)
    PER_IMAGE: ClassVar[tuple[str, ...]] = ("ids", "detected", "landmarks", "blendshapes", "matrix", "attempt", "ms")
    MADE_BY: ClassVar[str] = "extract_dataset"

    @property
    def coverage(self) -> float:
        return float(self.detected.mean()) if len(self) else 0.0

    def coverage_table(self, dataset) -> pd.DataFrame:
        """Images, faces found and coverage per split and overall."""
        self.check_aligned(dataset)
        rows = {s: (int((dataset.split == s).sum()), int(self.detected[dataset.split == s].sum())) for s in dataset.splits}
        rows["all"] = (len(self), int(self.detected.sum()))
        table = pd.DataFrame(rows, index=["images", "faces found"]).T
        table["coverage"] = table["faces found"] / table["images"].clip(lower=1)
        return table

    @classmethod
    def concatenate(cls, parts: list["FaceMeshFeatures"]) -> "FaceMeshFeatures":
        """Features of several extractions as one, in order (see ``data.concatenate``)."""
        names = next((p.blendshape_names for p in parts if len(p.blendshape_names)), [])
        if any(len(p.blendshape_names) and list(p.blendshape_names) != list(names) for p in parts):
            raise ValueError("the extractions name their blendshapes differently")
        join = {key: np.concatenate([getattr(p, key) for p in parts]) for key in cls.PER_IMAGE}
        return cls(blendshape_names=list(names), attempts=parts[0].attempts, **join)

    def split_arrays(self, inputs, dataset, split_names=None):
        """:class:`~fer_lib.experiment.SplitArrays` of ``inputs`` (one row per image of ``dataset``, which
        these features describe) for the faces MediaPipe found, per split (default: all of the dataset's).
        ``n_split`` keeps every image of a split, so coverage and misses-counted-wrong accuracy are right;
        a representation cannot see the missed faces (``misses_table`` counts them)."""
        from .experiment import SplitArrays

        self.check_aligned(dataset)
        return SplitArrays.for_found(inputs, dataset, self.detected, split_names)

    def misses_table(self, dataset) -> pd.DataFrame:
        """Images without a face per class (rows) and split (columns), with totals and percentages."""
        self.check_aligned(dataset)
        missed = pd.DataFrame({"class": pd.Categorical(dataset.label_names, categories=dataset.class_names),
                               "split": pd.Categorical(dataset.split, categories=dataset.splits),
                               "missed": ~self.detected})
        table = missed.pivot_table(index="class", columns="split", values="missed", aggfunc="sum", observed=False)
        table["total"] = table.sum(axis=1)
        table["% of class"] = (100 * table["total"] / missed.groupby("class", observed=False).size()).round(2)
        return table.astype({c: int for c in table.columns if c != "% of class"})

    def attempts_table(self) -> pd.DataFrame:
        """How many faces each attempt of the cascade found (and how many nothing found)."""
        rows = [{"attempt": str(i), **asdict(a), "images": int((self.attempt == i).sum())}
                for i, a in enumerate(self.attempts)]
        rows.append({"attempt": "none found", "images": int((~self.detected).sum())})
        return pd.DataFrame(rows).set_index("attempt")


def _extract_chunk(number, images, attempts, min_confidence, ids=None):
    with FaceMeshExtractor(attempts, min_confidence) as extractor:  # built in the worker: it does not pickle
        return number, extractor.extract(images, ids=ids)


def _cache_folder(dataset, attempts, min_confidence, cache_dir=None) -> Path:
    key = hashlib.sha256()
    key.update(json.dumps([[asdict(a) for a in attempts], min_confidence]).encode())
    key.update(sha256(face_landmarker_path()).encode())
    key.update("\n".join(map(str, dataset.ids)).encode())
    key.update(np.ascontiguousarray(dataset.images).tobytes())
    return Path(cache_dir or repo_root() / "cache" / "face_mesh") / f"{dataset.name}-{key.hexdigest()[:16]}"


def extract_dataset(dataset, attempts=DEFAULT_ATTEMPTS, *, min_confidence: float = 0.3, n_jobs: int = -1,
                    chunk_size: int = 500, cache: bool = True, cache_dir=None,
                    progress: bool = True, executor=None) -> FaceMeshFeatures:
    """:class:`FaceMeshFeatures` for every image of ``dataset`` (parallel, cached per chunk, resumable).

    ``cache_dir`` defaults to ``<book>/cache/face_mesh``. ``executor``: a :class:`concurrent.futures.Executor`
    (e.g. a Dask client's ``client.get_executor()``, see :mod:`fer_lib.executors`) that runs the same chunks
    instead of joblib's ``n_jobs`` processes; the features and the cache are the same either way.
    """
    from joblib import Parallel, delayed

    from . import progress as bars

    attempts = tuple(Attempt(**a) if isinstance(a, dict) else a for a in attempts)
    folder = _cache_folder(dataset, attempts, min_confidence, cache_dir)
    chunks = [np.arange(start, min(start + chunk_size, len(dataset))) for start in range(0, len(dataset), chunk_size)]
    paths = [folder / f"chunk_{number:04d}.npz" for number in range(len(chunks))]
    todo = [number for number, path in enumerate(paths) if not (cache and path.is_file())]
    bars.note("extraction", computed=bool(todo))
    if todo:
        detector_images(dataset.images, dataset.ids, f"{dataset.name} image")  # refused here, not in a worker
        folder.mkdir(parents=True, exist_ok=True)
        calls = ((n, dataset.images[chunks[n]], attempts, min_confidence, np.asarray(dataset.ids)[chunks[n]])
                 for n in todo)  # lazy, as before: joblib copies out a chunk only when a worker is free for it
        if executor is None:
            jobs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(_extract_chunk)(*c) for c in calls)
        else:
            from .executors import results

            jobs = results(executor, _extract_chunk, calls, ordered=False)
        with bars.bar(total=sum(len(chunks[n]) for n in todo), desc=f"MediaPipe on {dataset.name}", unit="image",
                      disable=not progress) as shown:
            for number, arrays in jobs:
                if cache:  # one file per finished chunk: an interruption loses at most the chunks in flight
                    with written_atomically(paths[number]) as temporary, open(temporary, "wb") as file:
                        np.savez(file, **arrays)
                else:
                    paths[number] = arrays
                shown.update(len(chunks[number]))
    parts = [dict(np.load(p, allow_pickle=True)) if isinstance(p, Path) else p for p in paths]
    names = next((list(p["blendshape_names"]) for p in parts if len(p["blendshape_names"])), [])
    join = {key: np.concatenate([p[key] for p in parts]) if parts else np.empty(0)
            for key in FaceMeshFeatures.PER_IMAGE if key != "ids"}  # chunks hold no ids: the dataset's are used
    return FaceMeshFeatures(ids=np.asarray(dataset.ids), blendshape_names=names, attempts=attempts, **join)


def for_chapter(P) -> tuple:
    """A representation chapter's FER2013 (the profile's protocol subset) and MediaPipe's features of
    it, with the profile's cascade (``P.face_mesh``: ``attempts`` or null for the default,
    ``min_confidence``) — cached on disk, so every chapter after the first reads them back."""
    import fer_lib

    from .paths import resolve_data_dir

    faces = fer_lib.load_fer2013(resolve_data_dir(P.data_dir)).protocol_subset(P.train_per_class, P.eval_per_class, P.seed)
    return faces, extract_for_chapter(faces, P)


def extract_for_chapter(dataset, P) -> FaceMeshFeatures:
    """:func:`extract_dataset` with a chapter's cascade settings (``P.face_mesh``) and ``P.n_jobs``."""
    attempts = tuple(Attempt(**a) for a in P.face_mesh["attempts"]) if P.face_mesh.get("attempts") else DEFAULT_ATTEMPTS
    return extract_dataset(dataset, attempts, min_confidence=P.face_mesh["min_confidence"], n_jobs=P.n_jobs)

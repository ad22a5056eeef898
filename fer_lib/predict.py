"""Emotions of the faces in any photo, by the book's packaged models (:mod:`fer_lib.zoo`), offline.

    python -m fer_lib.predict PHOTO_OR_FOLDER [--representation pixels_2d,landmarks_3d,…] [--format table|json|csv]
    python -m fer_lib.predict PHOTO --correct LABEL [--face N] [--who NAME] [--store PATH]   # a correction (fer_lib.feedback)

Each face found in the photo (MediaPipe's face landmarker on the whole image, any size, colour or
grey; an image of at most 64 px a side is taken as one face crop already, like FER2013's) is cut out as FER2013 shows faces — a square around the face, grey, 48×48 — and then goes through
exactly the pipelines the chapters trained on: chapter 3's detection, alignment, crop and CLAHE for the
2D model; MediaPipe's 478 landmarks (normalised, then as voxels or mesh features) or its 52 blendshapes
for the others. Every model gives its class probabilities; the fusion is their equal-weight average
over the models that could read the face (chapter 10's fixed rule). A face a model cannot read (MediaPipe
finds no mesh in the 48-px crop) is reported as such for that model, never silently dropped.

From Python: ``Predictor(...).predict_image(image)`` (one row per face) or ``predict_faces(faces48)``
(48×48 grey faces, e.g. a dataset's images: what the cross-dataset test uses).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import zoo
from .native import NativeResource
from .preprocess import resize, to_gray

#: photo file types a folder is searched for
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm")
FUSION = "fusion"
#: images no larger than this (a side, px) are face crops already, as FER2013's 48×48 images
CROP_SIZE = 64


class PredictError(Exception):
    """Bad input with a message that names the problem and the fix (the CLI prints it and exits 2)."""


@dataclass
class Faces:
    """Faces found in one image: boxes (x0, y0, x1, y1) in its pixels and the 48×48 grey crops."""

    boxes: np.ndarray
    crops: np.ndarray

    def __len__(self):
        return len(self.boxes)


class FaceFinder(NativeResource):
    """MediaPipe's face landmarker on a whole photo: a box per face, square, grown by ``margin`` of its
    side on every side (FER2013's faces include the forehead and some background), cut out grey at 48 px."""

    def __init__(self, max_faces: int = 8, margin: float = 0.2, min_confidence: float = 0.5, size: int = 48):
        from .face_mesh import mediapipe_tasks
        from .paths import face_landmarker_path

        _, BaseOptions, vision = mediapipe_tasks()  # imported as the extractors do: no graph outlives its finder
        options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(face_landmarker_path())),
                                               num_faces=max_faces, min_face_detection_confidence=min_confidence)
        self.landmarker = vision.FaceLandmarker.create_from_options(options)
        self.margin, self.size = margin, size

    def close(self) -> None:
        """Close MediaPipe's graph now (idempotent), not whenever the garbage collector gets to it."""
        if self.landmarker is not None:
            self.landmarker.close()
            self.landmarker = None

    def find(self, image: np.ndarray) -> Faces:
        import cv2
        import mediapipe as mp

        from .images import detector_image

        if self.landmarker is None:
            raise RuntimeError("this FaceFinder is closed; make a new one")
        gray = to_gray(detector_image(image))  # a float, 16-bit or empty image: a clear error, not MediaPipe's
        rgb = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
        result = self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        height, width = gray.shape
        boxes, crops = [], []
        for landmarks in result.face_landmarks:
            xy = np.array([(p.x * width, p.y * height) for p in landmarks])
            (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
            side = max(x1 - x0, y1 - y0) * (1 + 2 * self.margin)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
            # outside the photo the square is filled with the border's pixels, so a face at the edge keeps its
            # framing; then shrunk by area averaging (or enlarged bicubically), as the preprocessing resizes
            pad = int(np.ceil(side))
            padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0i, y0i = int(round(box[0])) + pad, int(round(box[1])) + pad
            square = padded[y0i:y0i + int(round(side)), x0i:x0i + int(round(side))]
            crops.append(resize(square, self.size))
            boxes.append(np.clip(box, 0, [width, height, width, height]))
        return Faces(np.array(boxes, float).reshape(-1, 4), np.array(crops, np.uint8).reshape(-1, self.size, self.size))


def dataset_faces(images: np.ndarray, finder: FaceFinder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """48×48 grey faces of a dataset's images and which images gave one: 48-px images (FER2013, CK+48)
    as they are, larger ones (JAFFE's 256-px photos) cut out by ``finder`` as a photo's faces are (the
    largest face of each; an image with none is marked, not dropped)."""
    images = np.asarray(images)
    if images.shape[1:3] == (48, 48):
        return np.asarray([to_gray(i) for i in images], np.uint8), np.ones(len(images), bool)
    own = finder is None
    finder = finder or FaceFinder(max_faces=1)
    try:
        crops, found = np.zeros((len(images), 48, 48), np.uint8), np.zeros(len(images), bool)
        for index, image in enumerate(images):
            faces = finder.find(image)
            if len(faces):
                largest = int(np.argmax((faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])))
                crops[index], found[index] = faces.crops[largest], True
        return crops, found
    finally:
        if own:
            finder.close()


# --------------------------------------------------------------------------------------------------
# From 48×48 faces to each model's input, as the chapters made them


def pixel_detector_needed(spec_input: dict[str, Any]) -> bool:
    """Whether a 2D spec's preprocessing runs a face detector (MediaPipe's: the only one the zoo uses)."""
    from .preprocess import Preprocessing

    detector = Preprocessing(**spec_input["preprocessing"]).detector
    if detector not in (None, "mediapipe"):
        raise ValueError(f"zoo 2D inputs are made with MediaPipe's detector, not {detector!r}")
    return detector is not None


def pixel_inputs(faces48: np.ndarray, spec_input: dict[str, Any], detector=None,
                 detections: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chapter 3's 2D input (detector box → alignment → crop → CLAHE; a face the detector misses keeps
    the whole frame, as in training): (N, 48, 48, 1) float32, and every face usable. ``detector``: an open
    ``MediaPipeDetector`` with the spec's options (default: one made for this call); ``detections``: its
    ``detect_faces`` table for these faces, when it has been run already."""
    from .preprocess import MediaPipeDetector, Preprocessing, detect_faces

    preprocessing = Preprocessing(**spec_input["preprocessing"])
    if detections is None and pixel_detector_needed(spec_input):
        if detector is None:
            with MediaPipeDetector(**spec_input["detector_options"]) as own:
                detections = detect_faces(faces48, own)
        else:
            detections = detect_faces(faces48, detector)
    return preprocessing.apply(faces48, detections)[..., None].astype("float32"), np.ones(len(faces48), bool)


def mesh_attempts(spec_input: dict[str, Any]) -> tuple:
    """A mesh spec's attempt cascade as ``Attempt``s (none given: ``face_mesh.DEFAULT_ATTEMPTS``)."""
    from .face_mesh import DEFAULT_ATTEMPTS, Attempt

    return tuple(Attempt(**a) if isinstance(a, dict) else a for a in spec_input.get("attempts") or DEFAULT_ATTEMPTS)


def mesh_extractor(spec_input: dict[str, Any]):
    """A FaceMeshExtractor with the spec's attempt cascade and confidence (close it, or use ``with``)."""
    from .face_mesh import FaceMeshExtractor

    return FaceMeshExtractor(mesh_attempts(spec_input), min_confidence=spec_input["min_confidence"])


def mesh_inputs(extraction: dict[str, np.ndarray], spec_input: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Chapters 4–6: the normalised landmarks of the faces MediaPipe read, then the chapter's transform:
    ``none`` (chapter 4's points), a voxel grid of chapter 5 (:data:`fer_lib.voxels.METHODS`, with the
    spec's ``transform_options``) or one of chapter 6's :data:`fer_lib.mesh.INPUTS`."""
    from . import landmarks, mesh, voxels

    found = extraction["detected"]
    steps = spec_input["normalisation"]
    steps = landmarks.NORMALISATIONS[steps] if isinstance(steps, str) else steps
    points = landmarks.normalise(extraction["landmarks"][found], extraction["matrix"][found], **steps)
    transform = spec_input.get("transform", "none")
    grids = {"occupancy": voxels.occupancy, "gaussian": voxels.gaussian_splat}
    if transform == "none":
        return points, found
    if transform in grids:
        return grids[transform](points, **spec_input.get("transform_options", {})), found
    if transform in mesh.INPUTS:
        return mesh.INPUTS[transform](points), found
    raise ValueError(f"mesh transform {transform!r} is not one of {['none', *grids, *mesh.INPUTS]}")


def blendshape_inputs(extraction: dict[str, np.ndarray], spec_input: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Chapter 7: the chosen blendshape columns of the faces MediaPipe read."""
    found = extraction["detected"]
    return extraction["blendshapes"][found][:, np.asarray(spec_input["columns"])].astype(np.float32), found


def model_scores(model, x: np.ndarray, spec_input: dict[str, Any]) -> np.ndarray:
    """Class probabilities of a zoo model on its prepared inputs: scikit-learn's ``predict_proba``, Keras'
    ``predict``, or with chapter 3's test-time augmentation (the mean over shifted, mirrored views) when the
    spec names it."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    if spec_input.get("tta"):
        from .pixels import predict_tta

        return predict_tta(model, x, **spec_input["tta"])[0]
    return model.predict(x, verbose=0, batch_size=256)


# --------------------------------------------------------------------------------------------------


def shares_first_attempt(pixel_input: dict[str, Any], mesh_input: dict[str, Any]) -> bool:
    """Whether one MediaPipe call serves a 2D model's face detector and a mesh cascade's first attempt: the
    same image preparation (``Attempt(input_size, padding)``, no CLAHE, no mirror) and detection threshold,
    and a mesh presence threshold no higher than the detector's (MediaPipe's default). The call, made at
    the detector's presence threshold, then finds a subset of the faces the mesh's first attempt finds,
    with the same landmarks, blendshapes and matrix (``tests/test_predict.py`` checks both on FER2013)."""
    from .face_mesh import Attempt
    from .preprocess import MEDIAPIPE_PRESENCE, MediaPipeDetector

    defaults = {name: p.default for name, p in inspect.signature(MediaPipeDetector).parameters.items()}
    options = {**defaults, **pixel_input["detector_options"]}
    return (mesh_attempts(mesh_input)[0] == Attempt(options["input_size"], options["padding"])
            and options["min_confidence"] == mesh_input["min_confidence"] <= MEDIAPIPE_PRESENCE)


class _FirstAttemptDetector:
    """A detector for ``detect_faces`` made of a mesh extractor's first attempt: the box and eyes of the
    landmarks it finds, each extraction kept (``found``, in call order) for the mesh cascade."""

    def __init__(self, extractor, attempt):
        self.extractor, self.attempt, self.found = extractor, attempt, []

    def detect(self, gray: np.ndarray):
        from .preprocess import mediapipe_detection

        self.found.append(self.extractor.extract_one(gray, self.attempt))
        return None if self.found[-1] is None else mediapipe_detection(self.found[-1][0])


class _MediaPipeRun:
    """The MediaPipe passes (``{pass key: model input spec}``) on one thread's share of the faces, with the
    graphs ``graph(key, make)`` gives it."""

    def __init__(self, passes: dict[str, dict[str, Any]], graph):
        self.passes, self.graph = passes, graph

    def __call__(self, faces48: np.ndarray) -> dict[str, Any]:
        from .face_mesh import FaceMeshExtractor
        from .preprocess import MEDIAPIPE_PRESENCE, MediaPipeDetector, detect_faces

        out: dict[str, Any] = {}
        meshes = {key: spec for key, spec in self.passes.items() if spec["kind"] != "pixels"}
        for key, spec in self.passes.items():
            if spec["kind"] != "pixels":
                continue
            options = spec["detector_options"]
            mesh_key = next((k for k, m in meshes.items() if k not in out and shares_first_attempt(spec, m)), None)
            if mesh_key is None:
                out[key] = detect_faces(faces48, self.graph(key, lambda: MediaPipeDetector(**options)))
                continue
            # the detector's call as a mesh extractor's (presence at the detector's threshold): it gives the
            # detector's landmarks and the cascade's first attempt on the faces it finds
            attempt = mesh_attempts(meshes[mesh_key])[0]
            shared = _FirstAttemptDetector(self.graph(f"shared {key}", lambda: FaceMeshExtractor(
                (attempt,), min_confidence=meshes[mesh_key]["min_confidence"], min_presence=MEDIAPIPE_PRESENCE)), attempt)
            out[key] = detect_faces(faces48, shared)
            extractor = self.graph(mesh_key, lambda: mesh_extractor(meshes[mesh_key]))
            out[mesh_key] = extractor.extract(faces48, first_found=shared.found)
        for key, spec in meshes.items():
            if key not in out:
                out[key] = self.graph(key, lambda: mesh_extractor(spec)).extract(faces48)
        return out


def _concatenate(parts: list) -> Any:
    """One pass's results on consecutive shares of the faces, as one: detection tables (ids renumbered) or
    extraction dicts (per-face arrays joined; the blendshape names of any share that has them)."""
    if isinstance(parts[0], pd.DataFrame):
        table = pd.concat(parts, ignore_index=True)
        table["id"] = np.arange(len(table))
        return table
    names = next((p["blendshape_names"] for p in parts if len(p["blendshape_names"])), parts[0]["blendshape_names"])
    return {**{key: np.concatenate([p[key] for p in parts]) for key in parts[0] if key != "blendshape_names"},
            "blendshape_names": names}


class Predictor(NativeResource):
    """The zoo's models (all, or those whose name or representation is in ``names``), ready to predict."""

    def __init__(self, names=None, zoo_dir=None, max_faces: int = 8, margin: float = 0.2, workers: int | None = None):
        available = zoo.entries(zoo_dir)
        if not available:
            raise PredictError(f"no models in the zoo ({zoo_dir or zoo.default_dir()}): a zoo folder holds a "
                               "spec.json and a model per model (fer_lib.zoo.export writes them); pass --zoo FOLDER")
        if names:
            unknown = [n for n in names if n not in available and n not in {e.representation for e in available.values()}]
            if unknown:
                choices = sorted(set(available) | {e.representation for e in available.values()})
                raise PredictError(f"unknown representation {', '.join(map(repr, unknown))}; choose from {', '.join(choices)}")
            available = {k: e for k, e in available.items() if k in names or e.representation in names}
        orders = {tuple(e.class_order) for e in available.values()}
        if len(orders) > 1:
            raise PredictError(f"the chosen models predict different label sets ({sorted(orders)}): choose one set")
        self.entries = available
        self.class_order = list(next(iter(orders)))
        self.models = {name: zoo.load_model(entry) for name, entry in available.items()}
        self.max_faces, self.margin = max_faces, margin
        self.workers = workers or os.cpu_count() or 1  # threads for MediaPipe's passes over a batch of faces
        self._finder = None
        self._graphs: dict[str, Any] = {}  # MediaPipe graphs kept open between calls (each costs ~0.1 s to build)

    def _graph(self, key: str, make):
        if key not in self._graphs:
            self._graphs[key] = make()
        return self._graphs[key]

    @staticmethod
    def _pass_key(spec_input: dict[str, Any]) -> str | None:
        """The MediaPipe pass a model's input needs (models with the same key share it), or None."""
        if spec_input["kind"] == "pixels":
            if not pixel_detector_needed(spec_input):
                return None
            return f"detector {json.dumps(spec_input['detector_options'], sort_keys=True)}"
        return f"mesh {json.dumps([spec_input.get('attempts'), spec_input['min_confidence']], default=str)}"

    def _mediapipe_passes(self, faces48: np.ndarray) -> dict[str, Any]:
        """Every MediaPipe pass the models need, by :meth:`_pass_key`: the 2D detector's boxes (a
        ``detect_faces`` table) and the mesh cascade's extraction (which serves every mesh and blendshape
        model). Where the 2D detector's call is the cascade's first attempt (:func:`shares_first_attempt`)
        one call serves both. The faces are split between threads, one per core, each with its own graphs
        (MediaPipe runs outside the GIL; a graph is never used by two threads at once)."""
        from concurrent.futures import ThreadPoolExecutor

        passes = {}
        for entry in self.entries.values():
            key = self._pass_key(entry.spec["input"])
            if key is not None:
                passes.setdefault(key, entry.spec["input"])
        if not passes:
            return {}
        parts = np.array_split(np.arange(len(faces48)), max(1, min(self.workers, len(faces48) // 8)))
        # each thread makes its own graphs (keys prefixed by its number) on first use; the predictor keeps
        # them for the next batch and closes them all
        runs = [_MediaPipeRun(passes, lambda key, make, worker=worker: self._graph(f"{worker} {key}", make))
                for worker in range(len(parts))]
        if len(parts) == 1:
            return runs[0](faces48)
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="mediapipe") as pool:
            results = list(pool.map(lambda run, part: run(faces48[part]), runs, parts))
        return {key: _concatenate([result[key] for result in results]) for key in passes}

    def predict_faces(self, faces48: np.ndarray) -> dict[str, np.ndarray]:
        """Class probabilities (N, classes) per model and the fusion; NaN rows for faces a model cannot read."""
        faces48 = np.asarray([to_gray(f) for f in faces48], np.uint8)
        if faces48.ndim != 3 or faces48.shape[1:] != (48, 48):
            raise PredictError(f"predict_faces takes 48×48 grey faces, not an array of shape {faces48.shape}")
        passes = self._mediapipe_passes(faces48)
        out = {}
        for name, entry in self.entries.items():
            spec_input = entry.spec["input"]
            found = passes.get(self._pass_key(spec_input))
            if spec_input["kind"] == "pixels":
                x, present = pixel_inputs(faces48, spec_input, detections=found)
            else:
                make = mesh_inputs if spec_input["kind"] == "mesh" else blendshape_inputs
                x, present = make(found, spec_input)
            probabilities = np.full((len(faces48), len(self.class_order)), np.nan)
            if present.any():
                probabilities[present] = model_scores(self.models[name], x, spec_input)
            out[name] = probabilities
        stacked = np.stack(list(out.values()))
        read = ~np.isnan(stacked[:, :, 0])
        out[FUSION] = np.where(read.any(0)[:, None], np.nansum(stacked, axis=0) / np.maximum(1, read.sum(0))[:, None], np.nan)
        return out

    def find_faces(self, image: np.ndarray) -> Faces:
        """The faces of a photo; an image of at most :data:`CROP_SIZE` px a side is taken as one face crop
        already (FER2013's and CK+48's images are), since MediaPipe finds few faces that small in a frame."""
        gray = to_gray(image)
        if max(gray.shape) <= CROP_SIZE:
            return Faces(np.array([[0, 0, gray.shape[1], gray.shape[0]]], float), resize(gray, 48)[None])
        if self._finder is None:
            self._finder = FaceFinder(self.max_faces, self.margin)
        return self._finder.find(gray)

    def predict_image(self, image: np.ndarray) -> pd.DataFrame:
        """One row per face: its box, and for each model and the fusion the predicted emotion and its
        probabilities (``<model>:<class>`` columns); no rows when no face is found."""
        faces = self.find_faces(image)
        if not len(faces):
            return pd.DataFrame(columns=["face", "x0", "y0", "x1", "y1"])
        return self.rows(faces, self.predict_faces(faces.crops))

    def rows(self, faces: Faces, probabilities: dict[str, np.ndarray]) -> pd.DataFrame:
        """The table of :meth:`predict_image` for ``faces`` and their :meth:`predict_faces` output."""
        rows = []
        for index, box in enumerate(faces.boxes):
            row: dict[str, Any] = {"face": index, **dict(zip(("x0", "y0", "x1", "y1"), np.round(box).astype(int)))}
            for name, p in probabilities.items():
                row[name] = self.class_order[int(np.argmax(p[index]))] if not np.isnan(p[index, 0]) else "no face read"
                row.update({f"{name}:{c}": float(v) for c, v in zip(self.class_order, p[index])})
            rows.append(row)
        return pd.DataFrame(rows)

    def close(self):
        """Close the face finder and every detector or extractor graph the predictions opened (idempotent)."""
        finder, self._finder = self._finder, None
        if finder is not None:
            finder.close()
        graphs, self._graphs = self._graphs, {}
        for graph in graphs.values():
            graph.close()


def read_image(path: Path) -> np.ndarray:
    """An image file as an array (any size; colour or grey), or a PredictError naming the problem."""
    import cv2

    if not path.exists():
        raise PredictError(f"{path}: no such file or folder")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise PredictError(f"{path}: not an image OpenCV can read (is it a {', '.join(IMAGE_SUFFIXES)} file?)")
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    return image


def images_in(target: Path) -> list[Path]:
    if target.is_dir():
        found = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise PredictError(f"{target}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return found
    if not target.exists():
        raise PredictError(f"{target}: no such file or folder")
    return [target]


def predict_paths(predictor: Predictor, target: Path, progress: bool = True, chunk: int = 128) -> pd.DataFrame:
    """One row per face of every image (a folder: recursively), plus a row per image with no face or
    that cannot be read (``status`` says which): nothing is left out. Faces are predicted ``chunk``
    images at a time, so each model runs on batches."""
    from .progress import bar as progress_bar

    paths = images_in(target)
    tables = []
    with progress_bar(total=len(paths), desc="predict", unit="image",
                      disable=not progress or len(paths) == 1) as bar:
        for start in range(0, len(paths), chunk):
            found: list[tuple[Path, Faces | None, str]] = []
            for path in paths[start:start + chunk]:
                try:
                    faces = predictor.find_faces(read_image(path))
                    found.append((path, faces, "ok" if len(faces) else "no face found"))
                except PredictError as error:
                    found.append((path, None, str(error)))
            crops = [faces.crops for _, faces, _ in found if faces is not None and len(faces)]
            probabilities = predictor.predict_faces(np.concatenate(crops)) if crops else {}
            offset = 0
            for path, faces, status in found:
                if faces is not None and len(faces):
                    part = {name: p[offset:offset + len(faces)] for name, p in probabilities.items()}
                    offset += len(faces)
                    table = predictor.rows(faces, part)
                else:
                    table = pd.DataFrame([{"face": None}])
                table.insert(0, "image", str(path))
                table.insert(1, "status", status)
                tables.append(table)
            bar.update(len(found))
    return pd.concat(tables, ignore_index=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lib.predict", description=__doc__.split("\n")[0])
    parser.add_argument("target", type=Path, help="a photo, or a folder of photos (searched recursively)")
    parser.add_argument("--representation", help="comma-separated zoo model names or representations (default: all)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--zoo", type=Path, help="zoo folder (default: the packaged fer_lib/models/zoo)")
    parser.add_argument("--max-faces", type=int, default=8)
    feedback = parser.add_argument_group("corrections (fer_lib.feedback)")
    feedback.add_argument("--correct", metavar="LABEL", help="record that the photo's face shows LABEL (an emotion of the "
                          "models' label set), with the models' prediction, in the feedback store")
    feedback.add_argument("--face", type=int, help="with --correct: which face (the table's face column) when the photo has several")
    feedback.add_argument("--who", help="with --correct: who corrects (default: the login name)")
    feedback.add_argument("--store", type=Path, help="with --correct: the store (default: $FER_FEEDBACK_STORE, else "
                          "cache/feedback/corrections.db in the book)")
    args = parser.parse_args(argv)
    if args.correct is None and (args.face is not None or args.who or args.store):
        print("error: --face, --who and --store go with --correct LABEL", file=sys.stderr)
        return 2
    if args.correct is not None and args.target.is_dir():
        print(f"error: --correct records one face of one photo; {args.target} is a folder: name one of its photos",
              file=sys.stderr)
        return 2
    try:
        names = [n.strip() for n in args.representation.split(",") if n.strip()] if args.representation else None
        predictor = Predictor(names, zoo_dir=args.zoo, max_faces=args.max_faces)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.correct is not None:
        return _correct(predictor, args)
    try:
        table = predict_paths(predictor, args.target)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        predictor.close()  # MediaPipe's graph, before the interpreter shuts down
    if args.format == "json":
        print(table.to_json(orient="records", indent=1))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        labels = [c for c in table.columns if ":" not in c]
        confidence = {name: table[[c for c in table.columns if c.startswith(f"{name}:")]].max(axis=1)
                      for name in [*predictor.entries, FUSION] if f"{name}:{predictor.class_order[0]}" in table}
        shown = table[labels].copy()
        for name, value in confidence.items():
            shown[name] = [f"{label} ({p:.0%})" if p == p else (label if isinstance(label, str) else "")
                           for label, p in zip(table[name], value)]
        print(shown.to_string(index=False))
    failed = table[table.status != "ok"].image.nunique()
    if failed:
        print(f"{failed} of {table.image.nunique()} image(s) without a face: see the status column", file=sys.stderr)
    return 1 if failed == table.image.nunique() else 0  # nothing predicted at all (a broken file, no face): fail


def _correct(predictor: Predictor, args) -> int:
    """``--correct``: store the correction of one face (exit 0), 1 when the photo has no face, 2 for bad input."""
    from . import feedback

    try:
        store = feedback.Store(args.store) if args.store else feedback.Store()
        with store:
            done = feedback.correct(predictor, args.target, args.correct, store, face=args.face, who=args.who, source="cli")
    except feedback.NoFaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except PredictError as error:  # FeedbackError too: an unknown label, several faces, a broken store
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        predictor.close()
    said = f"{done.model} said {done.predicted!r}" if done.predicted else f"{done.model} could not read it"
    print(f"stored correction {done.id} in {store.path}: face {done.face_index} of {done.image_id}; {said}, "
          f"corrected to {done.corrected!r} by {done.who}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

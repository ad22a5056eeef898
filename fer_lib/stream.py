"""Emotion over time: a trained blendshape model run frame by frame, and how much its output flickers.

- :class:`FrameClassifier` turns one frame (or one face's 52 blendshape scores) at a time into class
  probabilities: MediaPipe, the model's blendshape columns, the model. A recurrent model built
  ``stateful=True`` keeps its state from frame to frame (:meth:`FrameClassifier.reset` between
  videos); ``smoothing`` adds an exponential moving average of the probabilities, the plain
  engineering answer to flicker, to compare the LSTM's state with.
- :func:`classify_video` runs a FrameClassifier over a video file or a camera (OpenCV ``VideoCapture``),
  after :func:`open_video` has checked that the source is a video, and says how many of the frames the
  file announces could not be read (a truncated or damaged file).
- :func:`build_streams` makes synthetic test videos from still faces: ``n_frames`` jittered views of
  one face (small shifts, rotations, brightness changes and sensor noise, as a held camera gives),
  and transitions that cut from one face to another half way; :func:`stream_metrics` measures the
  flip rate (label changes per frame) and the frames a model needs to settle after a cut.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .face_mesh import DEFAULT_ATTEMPTS, FaceMeshExtractor
from .images import detector_image
from .native import NativeResource


def jittered_frames(image: np.ndarray, n_frames: int, rng: np.random.Generator, shift: float = 2.0,
                    rotation: float = 5.0, brightness: float = 15.0, noise: float = 4.0) -> np.ndarray:
    """``n_frames`` views of one grey face: each shifted by up to ±``shift`` pixels, rotated by up to
    ±``rotation`` degrees, brightened by up to ±``brightness`` grey levels, plus Gaussian noise (σ
    ``noise``). Draws are independent per frame, like a hand-held camera's jitter."""
    height, width = image.shape[:2]
    frames = np.empty((n_frames, height, width), np.uint8)
    for t in range(n_frames):
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), rng.uniform(-rotation, rotation), 1.0)
        matrix[:, 2] += rng.uniform(-shift, shift, size=2)
        moved = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        frame = moved.astype(np.float32) + rng.uniform(-brightness, brightness) + rng.normal(0, noise, moved.shape)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


def build_streams(dataset, n_static: int, n_transitions: int, n_frames: int = 30, seed: int = 0, **jitter):
    """Synthetic videos from the still faces of ``dataset``: ``n_static`` streams of one face and
    ``n_transitions`` streams that cut from one face to a face of another class at frame
    ``n_frames // 2``. Returns the frames as a dataset (ids ``s<stream>f<frame>``, each frame labelled
    with the face it shows; meta ``stream`` and ``frame``) and one row per stream."""
    if n_frames < 2:
        raise ValueError(f"a stream needs at least 2 frames, got {n_frames}")
    rng = np.random.default_rng(seed)
    n_static, n_transitions = min(n_static, len(dataset)), n_transitions if len(set(dataset.labels.tolist())) > 1 else 0
    sources = [(int(i), None) for i in rng.choice(len(dataset), size=n_static, replace=False)]
    for _ in range(n_transitions):
        first = int(rng.integers(len(dataset)))
        second = int(rng.choice(np.flatnonzero(dataset.labels != dataset.labels[first])))
        sources.append((first, second))
    switch = n_frames // 2
    frames, index, rows = [], [], []
    for stream, (first, second) in enumerate(sources):
        views = jittered_frames(dataset.images[first], n_frames, rng, **jitter)
        shown = np.full(n_frames, first)
        if second is not None:
            views[switch:] = jittered_frames(dataset.images[second], n_frames - switch, rng, **jitter)
            shown[switch:] = second
        frames.append(views)
        index.append(shown)
        rows.append({"stream": stream, "kind": "static" if second is None else "transition",
                     "first": dataset.ids[first], "second": None if second is None else dataset.ids[second],
                     "first_label": int(dataset.labels[first]),
                     "second_label": None if second is None else int(dataset.labels[second]),
                     "switch": None if second is None else switch})
    shown = np.concatenate(index)
    stream_of = np.repeat(np.arange(len(sources)), n_frames)
    frame_of = np.tile(np.arange(n_frames), len(sources))
    frames_set = replace(
        dataset.subset(shown), name=f"{dataset.name}-streams", images=np.concatenate(frames), report=None,
        ids=np.array([f"s{s:04d}f{f:02d}" for s, f in zip(stream_of, frame_of)], dtype=object),
        meta={**{k: v[shown] for k, v in dataset.meta.items()}, "stream": stream_of, "frame": frame_of})
    return frames_set, pd.DataFrame(rows)


class FrameClassifier(NativeResource):
    """Class probabilities for one frame at a time (see the module doc).

    ``model``: a Keras model on the blendshape ``columns`` (indices into MediaPipe's 52 scores); a model
    with stateful layers carries its state between calls. ``smoothing`` α in [0, 1): output
    α·previous + (1 − α)·current. ``attempts``: how MediaPipe is shown a frame (the default cascade
    suits 48-pixel faces; for a webcam frame pass ``(Attempt(input_size=<frame width>, padding=0),)``).
    :meth:`step` opens a MediaPipe graph that :meth:`close` (idempotent) closes: use ``with FrameClassifier(...)
    as classifier:`` or call it (:func:`classify_video` does at the end of a video).
    """

    def __init__(self, model, columns, class_names, *, smoothing: float | None = None,
                 attempts=DEFAULT_ATTEMPTS, min_confidence: float = 0.3):
        if smoothing is not None and not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.model, self.columns, self.class_names = model, np.asarray(columns), tuple(class_names)
        self.smoothing, self.attempts, self.min_confidence = smoothing, attempts, min_confidence
        self.stateful = any(getattr(layer, "stateful", False) for layer in getattr(model, "layers", ()))
        self._extractor = None
        self.reset()

    @classmethod
    def from_zoo(cls, name: str = "blendshapes", zoo_dir=None, **options) -> "FrameClassifier":
        """The packaged blendshape model ``name`` of :mod:`fer_lib.zoo` (a Keras model or a forest), with its
        columns, classes and MediaPipe settings; ``options`` (smoothing, attempts) as for the constructor."""
        from . import zoo

        entries = zoo.entries(zoo_dir)
        if name not in entries:
            raise KeyError(f"no zoo model {name!r}; the zoo has {sorted(entries) or 'none'}")
        entry = entries[name]
        if entry.spec["input"]["kind"] != "blendshapes":
            raise ValueError(f"zoo model {name!r} reads {entry.spec['input']['kind']}, not blendshapes: a frame "
                             "classifier needs a blendshape model")
        spec_input = entry.spec["input"]
        options.setdefault("min_confidence", spec_input["min_confidence"])
        return cls(zoo.load_model(entry), spec_input["columns"], entry.class_order, **options)

    def reset(self) -> None:
        """Forget the previous frames (a new video)."""
        for layer in getattr(self.model, "layers", ()):
            if getattr(layer, "stateful", False):
                layer.reset_state()
        self._previous = None

    def step_features(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities for one face's 52 blendshape scores."""
        x = np.asarray(scores, np.float32)[self.columns][None]
        probabilities = (self.model.predict_proba(x) if hasattr(self.model, "predict_proba")
                         else np.asarray(self.model(x, training=False)))[0]
        if self.smoothing is not None and self._previous is not None:
            probabilities = self.smoothing * self._previous + (1 - self.smoothing) * probabilities
        self._previous = probabilities
        return probabilities

    def step(self, frame: np.ndarray) -> np.ndarray | None:
        """Probabilities for one frame (grey or BGR), or None when MediaPipe finds no face (the state is kept)."""
        from .preprocess import to_gray

        gray = to_gray(detector_image(frame, "frame"))  # refused before a MediaPipe graph is opened for it
        if self._extractor is None:
            self._extractor = FaceMeshExtractor(self.attempts, self.min_confidence)
        found = self._extractor.extract([gray])
        return self.step_features(found["blendshapes"][0]) if found["detected"][0] else None

    def run_features(self, scores: np.ndarray) -> np.ndarray:
        """(T, classes) probabilities for one video's (T, 52) scores (NaN rows: no face, NaN output), from a
        reset state. Without state or smoothing, frames are independent and predicted in one batch."""
        scores = np.asarray(scores, np.float32)
        found = ~np.isnan(scores).any(axis=1)
        out = np.full((len(scores), len(self.class_names)), np.nan, np.float32)
        self.reset()
        if not self.stateful and self.smoothing is None:
            if found.any():
                x = scores[found][:, self.columns]
                out[found] = (self.model.predict_proba(x) if hasattr(self.model, "predict_proba")
                              else self.model.predict(x, verbose=0, batch_size=256))
            return out
        for t in np.flatnonzero(found):
            out[t] = self.step_features(scores[t])
        return out

    def close(self) -> None:
        """Close the MediaPipe graph :meth:`step` opened (a second call does nothing; a later step opens one)."""
        extractor, self._extractor = self._extractor, None
        if extractor is not None:
            extractor.close()


#: git's rule for telling text from binary: a NUL byte in the first 8000 bytes. Every video container has
#: NUL bytes in its header; a text file has none, yet FFmpeg "decodes" one (its tty demuxer draws the
#: characters as 640×400 frames of codec ``ansi``).
_SNIFF_BYTES = 8000


def _fourcc(capture) -> str:
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\0") or "unknown"


def open_video(source):
    """``(capture, info)``: an opened ``cv2.VideoCapture`` of a video file (a path; or a URL or an image
    sequence pattern OpenCV reads) or a camera (an integer index), and what the source announces (``source``,
    ``fourcc``, ``fps``, ``frames_announced``: None when unknown, as for a camera or a stream). A ValueError
    names the source, why it is not a video and what to give instead: a missing file, a text file, a file
    OpenCV's FFmpeg cannot open."""
    camera = isinstance(source, (int, np.integer))
    path = None if camera else Path(source)
    if path is not None and path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
        if not head:
            raise ValueError(f"video file {source!r} is empty (0 bytes): give a video file that was written completely")
        if b"\0" not in head:
            raise ValueError(f"{source!r} is a text file, not a video (no NUL byte in its first {len(head)} bytes, "
                             "as in every video container); give a video file (e.g. .mp4, .avi) or a camera index")
    capture = cv2.VideoCapture(int(source) if camera else str(source))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open video source {source!r}: give an existing video file or a camera index")
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    info = {"source": str(source), "fourcc": _fourcc(capture), "fps": float(capture.get(cv2.CAP_PROP_FPS)),
            "frames_announced": int(count) if not camera and count > 0 else None}
    return capture, info


def classify_video(source, classifier: FrameClassifier, max_frames: int | None = None) -> pd.DataFrame:
    """Run ``classifier`` over a video file (path) or a camera (an integer index) frame by frame, from a
    reset state. One row per frame read: ``frame``, ``face_found``, ``label`` (None without a face) and
    the probability of each class.

    The source is checked first (:func:`open_video`); a video whose first frame cannot be decoded is an
    error. ``table.attrs["video"]`` holds what the source announced and ``frames_read`` / ``frames_missing``:
    a file that ends before the frames its container announces (truncated, damaged) also gives a warning
    with the count. The classifier's MediaPipe graph is closed at the end (:meth:`FrameClassifier.close`)."""
    capture, info = open_video(source)
    classifier.reset()
    rows = []
    try:
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"no frame of video source {source!r} could be decoded (codec {info['fourcc']}, "
                             f"{info['frames_announced'] or 'unknown'} frames announced): the file is damaged or "
                             "its codec is not one OpenCV's FFmpeg reads; re-encode it, e.g. "
                             "ffmpeg -i IN -c:v libx264 OUT.mp4")
        while max_frames is None or len(rows) < max_frames:
            if rows:  # the first frame is the one read above
                ok, frame = capture.read()
                if not ok:
                    break
            probabilities = classifier.step(frame)
            row = {"frame": len(rows), "face_found": probabilities is not None,
                   "label": None if probabilities is None else classifier.class_names[int(np.argmax(probabilities))]}
            row.update({name: (np.nan if probabilities is None else float(p))
                        for name, p in zip(classifier.class_names, probabilities if probabilities is not None
                                           else [None] * len(classifier.class_names))})
            rows.append(row)
    finally:
        capture.release()
        classifier.close()
    table = pd.DataFrame(rows, columns=["frame", "face_found", "label", *classifier.class_names])
    announced, stopped = info["frames_announced"], max_frames is not None and len(rows) >= max_frames
    missing = announced - len(rows) if announced is not None and not stopped and len(rows) < announced else 0
    table.attrs["video"] = {**info, "frames_read": len(rows), "frames_missing": missing}
    if missing:
        warnings.warn(f"video {source!r}: read {len(rows)} of the {announced} frames its container announces; "
                      f"{missing} frames missing (a truncated or damaged file): the table has the frames read only. "
                      "Re-copy or re-encode the file to classify all of it", stacklevel=2)
    return table


def flips(labels: np.ndarray) -> tuple[int, int]:
    """(label changes, frame pairs) along a stream, over the frames with a face (label ≥ 0)."""
    seen = np.asarray(labels)[np.asarray(labels) >= 0]
    return int((seen[1:] != seen[:-1]).sum()), max(0, len(seen) - 1)


def settle_frames(labels: np.ndarray, switch: int) -> int | None:
    """Frames after the cut at ``switch`` until the label stops changing for good (0: the first frame
    after the cut already shows the final label); None without a face after the cut."""
    after = np.asarray(labels)[switch:]
    seen = np.flatnonzero(after >= 0)
    if not len(seen):
        return None
    changes = np.flatnonzero(after[seen][1:] != after[seen][:-1])
    return 0 if not len(changes) else int(seen[changes[-1] + 1])


def stream_metrics(labels: np.ndarray, streams: pd.DataFrame) -> pd.DataFrame:
    """Per stream: flip rate and, for transitions, frames to settle and whether the final label is the
    second face's class. ``labels``: (streams, frames), −1 where no face was found."""
    rows = []
    for (_, stream), seq in zip(streams.iterrows(), labels):
        changes, pairs = flips(seq)
        row = {"stream": stream["stream"], "kind": stream["kind"], "flips": changes,
               "flip rate": changes / pairs if pairs else np.nan, "frames without face": int((seq < 0).sum())}
        if stream["kind"] == "transition":
            seen = seq[seq >= 0]
            row["frames to settle"] = settle_frames(seq, int(stream["switch"]))
            row["ends on the second face's class"] = bool(len(seen) and seen[-1] == stream["second_label"])
        rows.append(row)
    return pd.DataFrame(rows)

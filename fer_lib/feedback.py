"""The user-feedback loop: people correct the packaged models' predictions, the corrections are kept, and a
zoo model is fine-tuned on them.

- :class:`Store` keeps corrections in SQLite (the standard library's ``sqlite3``) in WAL mode. It is
  append-only — rows are only ever inserted, and triggers refuse an UPDATE or DELETE from any client —
  with one transaction per correction, so a writer killed mid-write loses nothing already committed,
  and several processes may write to one store at once. Each row holds the face crop the model saw (a
  48×48 grey PNG, checked against its SHA-256 when read), the image's id and hash, the model (name and
  file hash) and representation, what it predicted, the corrected label, who and when.
- Corrections come from ``python -m fer_lib.predict PHOTO --correct LABEL [--face N] [--who NAME]
  [--store PATH]``, from Python (:func:`correct` for a photo, :meth:`Store.add` for a face crop), and
  from :func:`panel`, a small ipywidgets panel for JupyterLab: a face, the prediction, a button per label.
- :func:`fine_tune` fine-tunes a zoo 2D model on the accumulated corrections together with a replay
  sample of its original training data (FER2013 Training, against forgetting), through the book's one
  training loop (:func:`fer_lib.training.fit`), and writes the result as a new version folder
  (``<zoo>/versions/<name>@v<N>/``, a zoo entry of its own) — never over the model it started from.

Every face goes through exactly the predictor's pipeline (:mod:`fer_lib.predict`): a photo's faces are
found and cut out by ``Predictor.find_faces``, and the stored crop becomes the model's input through
``predict.pixel_inputs``, as when it is predicted.
"""
from __future__ import annotations

import functools
import getpass
import hashlib
import html
import json
import os
import sqlite3
import uuid
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import zoo
from .labels import EMOTION7, canonical_emotion
from .predict import FUSION, Faces, PredictError, Predictor, dataset_faces, images_in, pixel_inputs, read_image

#: the schema this module writes and reads (stored in the ``schema_version`` table)
SCHEMA_VERSION = 1
#: environment variable naming the default store
STORE_ENV = "FER_FEEDBACK_STORE"
#: the labels a correction may carry when no class order is given: FER2013's seven
DEFAULT_LABELS: tuple[str, ...] = EMOTION7.classes
#: the side of the face crops kept (what the predictor cuts out and the 2D models read)
CROP = 48
SOURCES = ("cli", "python", "panel", "simulated")


class FeedbackError(PredictError):
    """Bad input to the feedback loop, with a message naming the problem and the fix (the CLI exits 2)."""


class NoFaceError(FeedbackError):
    """The photo holds no face to correct (the CLI exits 1, as when nothing could be predicted)."""


def default_store_path() -> Path:
    """``$FER_FEEDBACK_STORE``, else ``cache/feedback/corrections.db`` in the book, else under ``~/.cache``."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    try:
        from .paths import repo_root

        return repo_root() / "cache" / "feedback" / "corrections.db"
    except FileNotFoundError:  # an installed fer_lib used outside the book
        return Path.home() / ".cache" / "fer-book" / "corrections.db"


def check_label(label: str, allowed: Sequence[str]) -> str:
    """``label`` as one of ``allowed`` (aliases such as ``Happiness`` accepted), or a FeedbackError listing them."""
    try:
        name = canonical_emotion(label)
    except KeyError:  # not an emotion name (a label set's "unknown", say): taken as written
        name = str(label).strip().lower()
    if name not in allowed:
        raise FeedbackError(f"unknown label {label!r}: the model's labels are {', '.join(allowed)}")
    return name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an image array's shape, dtype and pixels (an image that has no file)."""
    array = np.ascontiguousarray(array)
    return _sha256(f"{array.shape}{array.dtype}".encode() + array.tobytes())


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime: float) -> str:  # size and mtime: a changed file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime)


def _face_crop(face) -> np.ndarray:
    """The 48×48 grey uint8 face a correction keeps, or a FeedbackError saying what is wrong with ``face``."""
    from .preprocess import to_gray

    if not isinstance(face, np.ndarray):
        raise FeedbackError(f"a face crop is a 48×48 grey image array, not {type(face).__name__}: pass a photo to "
                            "feedback.correct (it finds the faces) or a crop from Predictor.find_faces")
    if face.dtype != np.uint8 or face.size == 0:
        raise FeedbackError(f"a face crop must be a uint8 image (0..255), not a {face.dtype} array of shape {face.shape}")
    try:
        gray = to_gray(face)
    except ValueError as error:
        raise FeedbackError(f"not an image: {error}") from None
    if gray.shape != (CROP, CROP):
        raise FeedbackError(f"a face crop is {CROP}×{CROP} (what the predictor cuts out), not {gray.shape[1]}×{gray.shape[0]}: "
                            "pass the whole photo to feedback.correct, or a crop from Predictor.find_faces")
    return np.ascontiguousarray(gray)


def _png(crop: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", crop)
    if not ok:
        raise FeedbackError("OpenCV could not encode the face crop as PNG")
    return encoded.tobytes()


@dataclass(frozen=True)
class Correction:
    """One stored correction (its face crop: :meth:`Store.faces`)."""

    id: int
    uid: str
    created: str
    who: str
    source: str
    image_id: str | None
    image_sha256: str
    face_index: int | None
    box: tuple[float, ...] | None
    model: str
    model_sha256: str | None
    representation: str
    predicted: str | None
    corrected: str
    class_order: tuple[str, ...]
    probabilities: tuple[float, ...] | None
    crop_sha256: str


_COLUMNS = [name for name in Correction.__dataclass_fields__]
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, created TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS corrections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL,
        who TEXT NOT NULL,
        source TEXT NOT NULL,
        image_id TEXT,
        image_sha256 TEXT NOT NULL,
        face_index INTEGER,
        box TEXT,
        model TEXT NOT NULL,
        model_sha256 TEXT,
        representation TEXT NOT NULL,
        predicted TEXT,
        corrected TEXT NOT NULL,
        class_order TEXT NOT NULL,
        probabilities TEXT,
        crop_sha256 TEXT NOT NULL,
        crop_png BLOB NOT NULL CHECK (length(crop_png) > 0))""",
    # append-only for every client, not only this module: a correction, once committed, is never changed
    """CREATE TRIGGER IF NOT EXISTS corrections_never_updated BEFORE UPDATE ON corrections
       BEGIN SELECT RAISE(ABORT, 'the feedback store is append-only: corrections are never changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS corrections_never_deleted BEFORE DELETE ON corrections
       BEGIN SELECT RAISE(ABORT, 'the feedback store is append-only: corrections are never deleted'); END""",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Store:
    """An append-only store of corrections at ``path`` (created when missing; default :func:`default_store_path`).

    One connection per Store and process (open a Store in each process that writes; do not share one
    across a fork). Writers wait up to ``timeout`` seconds for one another."""

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_store_path()
        if self.path.is_dir():
            raise FeedbackError(f"{self.path} is a folder: a feedback store is one SQLite file (e.g. {self.path / 'corrections.db'})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below is its own BEGIN IMMEDIATE … COMMIT
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise FeedbackError(f"{self.path}: SQLite would not use WAL mode here (journal mode {mode!r}); "
                                    "keep the store on a local disk")
            self._db.execute("PRAGMA synchronous = FULL")  # a commit is on disk before add() returns
            self._create_or_check()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise FeedbackError(f"{self.path} is not a feedback store ({error}): name a new file or an existing store") from None
        except BaseException:
            self._db.close()
            raise

    def _create_or_check(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # two processes creating one store: the second waits, then sees it
        try:
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_version" in tables:
                versions = [row[0] for row in self._db.execute("SELECT version FROM schema_version")]
                if versions and max(versions) != SCHEMA_VERSION:
                    raise FeedbackError(f"{self.path} has schema version {max(versions)}; this fer_lib reads version "
                                        f"{SCHEMA_VERSION}: use a fer_lib of that version, or a new store")
            elif tables - {"sqlite_sequence"}:
                raise FeedbackError(f"{self.path} is an SQLite database but not a feedback store (tables: "
                                    f"{', '.join(sorted(tables))}): name a new file")
            for statement in _SCHEMA:
                self._db.execute(statement)
            if not self._db.execute("SELECT 1 FROM schema_version").fetchone():
                self._db.execute("INSERT INTO schema_version (version, created) VALUES (?, ?)", (SCHEMA_VERSION, _now()))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writing: INSERT only

    def add(self, face: np.ndarray, corrected: str, *, model: str, representation: str, predicted: str | None = None,
            class_order: Sequence[str] | None = None, who: str | None = None, image_id: str | None = None,
            image_sha256: str | None = None, face_index: int | None = None, box=None, probabilities=None,
            model_sha256: str | None = None, source: str = "python", uid: str | None = None) -> Correction:
        """Record that ``face`` (the 48×48 grey crop the model saw) shows ``corrected``; one transaction.

        ``corrected`` and ``predicted`` must be among ``class_order`` (default: FER2013's seven). Returns
        the stored row. ``uid`` (default: a new UUID) is unique in the store: a retried write with the same
        uid fails instead of storing the correction twice."""
        class_order = tuple(class_order or DEFAULT_LABELS)
        corrected = check_label(corrected, class_order)
        predicted = check_label(predicted, class_order) if predicted is not None else None
        if source not in SOURCES:
            raise FeedbackError(f"source {source!r} is not one of {SOURCES}")
        crop = _face_crop(face)
        if probabilities is not None:
            probabilities = tuple(float(p) for p in np.asarray(probabilities, float).ravel())
            if len(probabilities) != len(class_order):
                raise FeedbackError(f"{len(probabilities)} probabilities for {len(class_order)} classes")
        row = {"uid": uid or uuid.uuid4().hex, "created": _now(), "who": who or _user(), "source": source,
               "image_id": None if image_id is None else str(image_id),
               "image_sha256": image_sha256 or array_sha256(crop), "face_index": None if face_index is None else int(face_index),
               "box": None if box is None else json.dumps([float(v) for v in np.asarray(box).ravel()]),
               "model": str(model), "model_sha256": model_sha256, "representation": str(representation),
               "predicted": predicted, "corrected": corrected, "class_order": json.dumps(list(class_order)),
               "probabilities": None if probabilities is None else json.dumps(probabilities),
               "crop_sha256": array_sha256(crop), "crop_png": sqlite3.Binary(_png(crop))}
        names = ", ".join(row)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(f"INSERT INTO corrections ({names}) VALUES ({', '.join('?' * len(row))})",
                                      tuple(row.values()))
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as error:
            self._db.execute("ROLLBACK")
            raise FeedbackError(f"correction {row['uid']} not stored: {error}") from None
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return self.corrections(ids=[cursor.lastrowid])[0]

    # ------------------------------------------------------------------ reading

    def corrections(self, *, ids: Iterable[int] | None = None, who: str | None = None, model: str | None = None,
                    representation: str | None = None, first: int | None = None) -> list[Correction]:
        """Stored corrections in the order they were committed, filtered; ``first``: only the first n of those."""
        where, values = [], []
        if ids is not None:
            ids = [int(i) for i in ids]
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            values += ids
        for column, value in (("who", who), ("model", model), ("representation", representation)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        query = f"SELECT {', '.join(_COLUMNS)} FROM corrections"
        query += f" WHERE {' AND '.join(where)}" if where else ""
        query += " ORDER BY id" + (f" LIMIT {int(first)}" if first is not None else "")
        return [_correction(row) for row in self._db.execute(query, values)]

    def table(self, **filters) -> pd.DataFrame:
        """The corrections as a table, one row each (no crops)."""
        rows = [asdict(c) for c in self.corrections(**filters)]
        return pd.DataFrame(rows, columns=_COLUMNS).set_index("id")

    def faces(self, ids: Sequence[int]) -> np.ndarray:
        """The stored face crops of corrections ``ids`` (N, 48, 48) uint8, in that order; each checked against
        its hash, so a damaged row is reported, never trained on."""
        import cv2

        ids = [int(i) for i in ids]
        found = {row[0]: row[1:] for row in self._db.execute(
            f"SELECT id, crop_png, crop_sha256 FROM corrections WHERE id IN ({', '.join('?' * len(ids))})", ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise FeedbackError(f"{self.path} has no correction {missing[0]} ({len(missing)} missing)")
        crops = []
        for i in ids:
            png, digest = found[i]
            crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            if crop is None or array_sha256(crop) != digest:
                raise FeedbackError(f"correction {i} in {self.path}: its face crop is damaged (checksum mismatch)")
            crops.append(crop)
        return np.asarray(crops, np.uint8).reshape(-1, CROP, CROP)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0])

    def check(self) -> str:
        """SQLite's integrity check of the file: ``'ok'`` when sound."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {len(self)} corrections)"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "unknown"


def _correction(row) -> Correction:
    values = dict(zip(_COLUMNS, row))
    values["class_order"] = tuple(json.loads(values["class_order"]))
    for key in ("box", "probabilities"):
        values[key] = tuple(json.loads(values[key])) if values[key] is not None else None
    return Correction(**values)


def _as_store(store) -> Store:
    return store if isinstance(store, Store) else Store(store)


# --------------------------------------------------------------------------------------------------
# Recording a correction of a predictor's prediction


def as_predictor(predictor_or_model) -> Predictor:
    """A Predictor from itself, a zoo Entry, or a zoo model folder (one holding ``spec.json``)."""
    if isinstance(predictor_or_model, Predictor):
        return predictor_or_model
    entry = resolve_entry(predictor_or_model)
    return Predictor([entry.name], zoo_dir=entry.folder.parent)


def shown_model(predictor: Predictor, model: str | None = None) -> str:
    """Whose prediction a correction answers: ``model``, else the predictor's only model, else the fusion."""
    if model is not None:
        if model not in predictor.entries and model != FUSION:
            raise FeedbackError(f"model {model!r} is not among the predictor's: {', '.join([*predictor.entries, FUSION])}")
        return model
    return next(iter(predictor.entries)) if len(predictor.entries) == 1 else FUSION


def _model_fields(predictor: Predictor, name: str) -> dict[str, Any]:
    if name == FUSION:
        return {"model": f"{FUSION}({'+'.join(predictor.entries)})", "representation": FUSION, "model_sha256": None}
    entry = predictor.entries[name]
    return {"model": name, "representation": entry.representation, "model_sha256": file_sha256(entry.model_path)}


def record(store: Store, predictor: Predictor, faces: Faces, index: int, label: str, probabilities: dict[str, np.ndarray],
           *, model: str | None = None, who: str | None = None, image_id: str | None = None,
           image_sha256: str | None = None, source: str = "python") -> Correction:
    """Store ``label`` for face ``index`` of ``faces`` with the prediction ``probabilities`` (a
    ``Predictor.predict_faces`` output for ``faces.crops``) of ``model`` (see :func:`shown_model`)."""
    name = shown_model(predictor, model)
    label = check_label(label, predictor.class_order)  # before anything is written
    p = np.asarray(probabilities[name][index], float)
    read = not np.isnan(p).any()
    return store.add(faces.crops[index], label, predicted=predictor.class_order[int(np.argmax(p))] if read else None,
                     class_order=predictor.class_order, probabilities=p if read else None, who=who, image_id=image_id,
                     image_sha256=image_sha256, face_index=index, box=faces.boxes[index], source=source,
                     **_model_fields(predictor, name))


def pick_face(faces: Faces, face: int | None, where: str) -> int:
    """The face a correction is for: the only one, or number ``face`` (0-based, as in the prediction table)."""
    if not len(faces):
        raise NoFaceError(f"{where}: no face found, so there is nothing to correct")
    if face is None:
        if len(faces) > 1:
            raise FeedbackError(f"{where}: {len(faces)} faces found; say which one the label is for with --face N "
                                f"(Python: face=N), N from 0 to {len(faces) - 1} as in the prediction table's face column")
        return 0
    if not 0 <= int(face) < len(faces):
        raise FeedbackError(f"{where}: face {face} does not exist; {len(faces)} face(s) found, numbered 0 to {len(faces) - 1}")
    return int(face)


def _load_image(image, image_id: str | None) -> tuple[np.ndarray, str, str]:
    """(array, id, sha256): a path is read (its file's hash), an array taken as it is (its pixels' hash)."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        array = read_image(path)  # a PredictError naming the problem for a missing or unreadable file
        return array, image_id or str(path), file_sha256(path)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise FeedbackError(f"an image is a file path or a uint8 array (grey or colour), not "
                            f"{type(image).__name__}{getattr(image, 'shape', '')}")
    return image, image_id or f"array {array_sha256(image)[:12]}", array_sha256(image)


def correct(predictor_or_model, image, label: str, store=None, *, face: int | None = None, model: str | None = None,
            who: str | None = None, image_id: str | None = None, source: str = "python") -> Correction:
    """Record that a face of ``image`` (a photo's path or array; a ≤64-px image is one face crop already)
    shows ``label``: the face is found and cut out by the predictor, predicted, and stored with that
    prediction. ``face`` picks one of several faces; ``store``: a Store or a path (default store if None)."""
    predictor = as_predictor(predictor_or_model)
    check_label(label, predictor.class_order)  # a wrong label fails before any work
    store = _as_store(store if store is not None else default_store_path())
    array, image_id, sha = _load_image(image, image_id)
    faces = predictor.find_faces(array)
    index = pick_face(faces, face, image_id)
    probabilities = predictor.predict_faces(faces.crops)
    return record(store, predictor, faces, index, label, probabilities, model=model, who=who, image_id=image_id,
                  image_sha256=sha, source=source)


# --------------------------------------------------------------------------------------------------
# The JupyterLab panel


def _panel_images(images) -> list[tuple[Any, str | None]]:
    """(image, id) pairs from a path (file or folder), a FaceDataset, one image array, or a sequence (or
    (N, H, W) stack) of paths and arrays."""
    from .data import FaceDataset

    if isinstance(images, FaceDataset):
        return list(zip(images.images, images.ids.astype(str)))
    if isinstance(images, (str, os.PathLike)):
        return [(path, str(path)) for path in images_in(Path(images))]
    if isinstance(images, np.ndarray) and (images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (3, 4))):
        return [(images, None)]  # one grey or colour image
    return [(image, None) for image in images]


@functools.cache
def _panel_class():
    import ipywidgets as widgets

    class FeedbackPanel(widgets.VBox):
        """One face at a time: the face, the model's prediction, a button per label and *skip*. A click on a
        label stores a correction (the label may equal the prediction: a confirmation) and shows the next face.
        ``buttons`` (label → Button), ``skip``, ``recorded`` (the Corrections stored), ``skipped`` (images
        without a face or unreadable, with why) are attributes, so the panel can be driven from code."""

        def __init__(self, predictor, images, store, who, model, size, image_width):
            self.predictor, self.store, self.who = predictor, store, who
            self.model = shown_model(predictor, model)
            self._pending = iter(_panel_images(images))
            self._queue: list[tuple] = []  # faces of the current image still to show
            self.current = None
            self.recorded: list[Correction] = []
            self.skipped: list[tuple[str, str]] = []
            self.n_shown = 0
            self.image = widgets.Image(format="png", width=image_width)
            self.caption = widgets.HTML()
            self.status = widgets.HTML()
            self.buttons = {label: widgets.Button(description=label, layout=widgets.Layout(width="auto"))
                            for label in predictor.class_order}
            for label, button in self.buttons.items():
                button.on_click(functools.partial(self._clicked, label))
            self.skip = widgets.Button(description="skip", layout=widgets.Layout(width="auto"))
            self.skip.on_click(lambda _: self._advance())
            self._size = size
            super().__init__([self.image, self.caption, widgets.HBox([*self.buttons.values(), self.skip]), self.status])
            self._advance()

        def _next_face(self):
            while not self._queue:
                try:
                    image, image_id = next(self._pending)
                except StopIteration:
                    return None
                try:
                    array, image_id, sha = _load_image(image, image_id)
                except PredictError as error:
                    self.skipped.append((str(image_id or image), str(error)))
                    continue
                faces = self.predictor.find_faces(array)
                if not len(faces):
                    self.skipped.append((image_id, "no face found"))
                    continue
                probabilities = self.predictor.predict_faces(faces.crops)
                self._queue = [(image_id, sha, faces, i, probabilities) for i in range(len(faces))]
            return self._queue.pop(0)

        def _advance(self):
            import cv2

            self.current = self._next_face()
            if self.current is None:
                for button in (*self.buttons.values(), self.skip):
                    button.disabled = True
                self.caption.value = (f"<b>All {self.n_shown} face(s) reviewed</b>: {len(self.recorded)} correction(s) "
                                      f"stored in <code>{html.escape(str(self.store.path))}</code>"
                                      + (f"; {len(self.skipped)} image(s) without a usable face" if self.skipped else ""))
                return
            self.n_shown += 1
            image_id, _, faces, index, probabilities = self.current
            p = probabilities[self.model][index]
            said = (f"<b>{self.predictor.class_order[int(np.argmax(p))]}</b> ({np.max(p):.0%})" if not np.isnan(p).any()
                    else "<i>could not read this face</i>")
            self.caption.value = (f"{html.escape(str(image_id))}, face {index + 1} of {len(faces)} — {self.model} says {said}. "
                                  "Click the right emotion:")
            for label, button in self.buttons.items():
                button.button_style = "info" if not np.isnan(p).any() and label == self.predictor.class_order[int(np.argmax(p))] else ""
            face = cv2.resize(faces.crops[index], (self._size, self._size), interpolation=cv2.INTER_NEAREST)
            self.image.value = _png(face)

        def _clicked(self, label, _button=None):
            if self.current is None:
                return
            image_id, sha, faces, index, probabilities = self.current
            try:
                correction = record(self.store, self.predictor, faces, index, label, probabilities, model=self.model,
                                    who=self.who, image_id=image_id, image_sha256=sha, source="panel")
            except (PredictError, sqlite3.Error) as error:  # shown in the panel: a callback's exception would only be logged
                self.status.value = f"<b>not stored</b>: {html.escape(str(error))}"
                return
            self.recorded.append(correction)
            self.status.value = (f"stored correction {correction.id}: {correction.predicted or 'unread'} → "
                                 f"<b>{correction.corrected}</b>")
            self._advance()

    return FeedbackPanel


def panel(predictor_or_model, images, store=None, *, who: str | None = None, model: str | None = None,
          size: int = 192, image_width: int = 192):
    """An ipywidgets panel for JupyterLab that shows each face of ``images`` (a photo or folder path, a
    FaceDataset, or a list of paths and arrays) with the prediction of ``predictor_or_model`` (a
    Predictor, a zoo Entry or model folder) and a button per label; a click stores a correction in
    ``store`` (a Store or path; default :func:`default_store_path`). Returns the widget (display it)."""
    predictor = as_predictor(predictor_or_model)
    return _panel_class()(predictor, images, _as_store(store if store is not None else default_store_path()),
                          who, model, size, image_width)


# --------------------------------------------------------------------------------------------------
# Fine-tuning a zoo model on the corrections


def resolve_entry(model, zoo_dir: str | os.PathLike | None = None) -> zoo.Entry:
    """A zoo Entry from itself, a model folder (holding ``spec.json``) or a name in ``zoo_dir``."""
    if isinstance(model, zoo.Entry):
        return model
    path = Path(model)
    if (path / "spec.json").is_file():
        return zoo.Entry(path.name, path, json.loads((path / "spec.json").read_text()))
    available = zoo.entries(zoo_dir)
    if str(model) in available:
        return available[str(model)]
    raise FeedbackError(f"no zoo model {str(model)!r}: pass a zoo Entry, a model folder holding spec.json, or one of "
                        f"{', '.join(available) or '(none: the zoo at ' + str(zoo_dir or zoo.default_dir()) + ' is empty)'}")


def versions(folder: str | os.PathLike) -> dict[str, zoo.Entry]:
    """The fine-tuned versions in a versions folder, by name (``pixels_2d@v2``, …)."""
    return {name: entry for name, entry in zoo.entries(folder).items() if "version" in entry.spec}


def _base_and_number(entry: zoo.Entry) -> tuple[str, int]:
    version = entry.spec.get("version") or {}
    return version.get("base", entry.name.split("@")[0]), int(version.get("number", 1))


#: how a fine-tune trains unless told otherwise: Adam at a tenth of the usual rate, a few epochs
DEFAULT_TRAINING = {"optimizer": "adam", "learning_rate": 1e-4, "weight_decay": 0.0, "batch_size": 32, "epochs": 10,
                    "patience": 10, "reduce_lr_patience": None}


@dataclass
class FineTuned:
    """A fine-tune's outcome: the new version (a zoo Entry), its parent, the fit, and whether an identical
    earlier fine-tune (same parent, corrections, replay and settings) was found and returned instead."""

    entry: zoo.Entry
    parent: zoo.Entry
    fit: Any
    reused: bool

    @property
    def version(self) -> dict[str, Any]:
        return self.entry.spec["version"]


def _freeze_batchnorm(model) -> None:
    """BatchNormalization layers (nested ones too) in inference mode: their FER2013 statistics stay, rather
    than drift to a few dozen faces of one new domain."""
    import keras

    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        _freeze_batchnorm(layer)


def _labels_in(class_names, labels, class_order) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, indices in class_order) for labels indexing ``class_names``, matched by name."""
    names = np.asarray(class_names, dtype=object)[np.asarray(labels)]
    keep = np.isin(names, list(class_order))
    return keep, np.array([list(class_order).index(n) for n in names[keep]], np.int64)


def fine_tune(model, store, *, replay=None, replay_size: int | None = None, replay_ratio: float = 4.0,
              training: dict[str, Any] | None = None, epochs: int | None = None, val_fraction: float = 0.2,
              first: int | None = None, who: str | None = None, ids: Sequence[int] | None = None,
              versions_dir: str | os.PathLike | None = None, freeze_batchnorm: bool = True, seed: int = 0,
              data_dir=None, detector=None, cache_dir: str | os.PathLike | None = None, reuse: bool = True,
              verbose: int = 0) -> FineTuned:
    """Fine-tune zoo model ``model`` (an Entry, a model folder, or a name in the packaged zoo) on the
    corrections of ``store`` (all, or those of ``who`` / ``ids`` / the ``first`` n) mixed with a replay
    sample of its original training data, and save the result as a new version; the original is only read.

    - ``replay``: the images to replay (a FaceDataset; its Training split when it has one; default:
      FER2013 Training from ``data_dir``), ``replay_size`` of them (default ``replay_ratio`` per
      correction), drawn with ``seed``; labels are matched to the model's classes by name.
    - Validation (the epoch kept is the one of lowest validation loss, :func:`fer_lib.training.fit`):
      ``val_fraction`` of the corrections and of the replay sample, held out of training. With fewer than
      5 corrections (or ``val_fraction=0``) nothing is held out and the epoch is chosen on the training loss.
    - ``training``: a TrainConfig or its params block, over :data:`DEFAULT_TRAINING` (``epochs`` overrides);
      ``freeze_batchnorm`` keeps batch-norm statistics fixed.
    - The new version goes to ``versions_dir`` (default ``<the model's zoo>/versions``) as
      ``<name>@v<N>``, N one more than any version of that model there; its ``spec.json`` gains a
      ``version`` block: parent (name, folder, model hash), corrections and replay images used (counts,
      ids), training settings and how the fit ended. ``reuse``: if a version of the same parent trained on
      exactly the same inputs and settings exists, it is returned (``reused=True``) rather than duplicated.
    - ``cache_dir``: where the fit's run folder goes (default ``<versions_dir>/.runs``).
    """
    from . import training as trainer
    from .data import TRAIN, load_fer2013
    from .preprocess import MediaPipeDetector

    parent = resolve_entry(model)
    spec_input = parent.spec["input"]
    if spec_input["kind"] != "pixels":
        raise FeedbackError(f"fine_tune trains the 2D pixel models (input kind 'pixels'); {parent.name!r} has "
                            f"input kind {spec_input['kind']!r}")
    if parent.spec["model_file"].endswith(".joblib"):
        raise FeedbackError(f"{parent.name!r} is a scikit-learn model: fine_tune trains Keras models")
    if not 0 <= val_fraction < 1:
        raise FeedbackError(f"val_fraction must be in [0, 1), got {val_fraction}")
    store = _as_store(store)
    class_order = parent.class_order
    rows = store.corrections(ids=ids, who=who, first=first)
    if first is not None and len(rows) < first:
        raise FeedbackError(f"asked for the first {first} corrections, but {store.path} holds {len(rows)} that match")
    usable = [r for r in rows if r.corrected in class_order]
    if len(usable) < len(rows):
        warnings.warn(f"{len(rows) - len(usable)} corrections carry labels {parent.name!r} does not predict "
                      f"({sorted({r.corrected for r in rows} - set(class_order))}); left out", stacklevel=2)
    if not usable:
        raise FeedbackError(f"{store.path} holds no corrections for {parent.name!r} to learn from"
                            + (" among those selected" if (ids, who, first) != (None, None, None) else "")
                            + ": record some first (python -m fer_lib.predict PHOTO --correct LABEL, feedback.correct or feedback.panel)")
    rng = np.random.default_rng(seed)
    faces_c = store.faces([r.id for r in usable])
    y_c = np.array([class_order.index(r.corrected) for r in usable], np.int64)

    # the replay sample: the model's own kind of training faces, drawn at random, through the same pipeline
    pool = replay if replay is not None else load_fer2013(data_dir)
    if TRAIN in pool.splits:
        pool = pool.select_split(TRAIN)
    keep, pool_y = _labels_in(pool.class_names, pool.labels, class_order)
    pool_index = np.flatnonzero(keep)
    n_replay = int(round(replay_ratio * len(usable))) if replay_size is None else int(replay_size)
    if n_replay > len(pool_index):
        warnings.warn(f"replay: {n_replay} images asked for, the pool ({pool.name}) has {len(pool_index)}; all used", stacklevel=2)
        n_replay = len(pool_index)
    drawn = np.sort(rng.choice(len(pool_index), size=n_replay, replace=False)) if n_replay else np.zeros(0, int)
    faces_r, found_r = dataset_faces(pool.images[pool_index[drawn]]) if n_replay else (np.zeros((0, CROP, CROP), np.uint8), np.zeros(0, bool))
    drawn, faces_r = drawn[found_r], faces_r[found_r]
    y_r, replay_ids = pool_y[drawn], pool.ids[pool_index[drawn]].astype(str)

    own_detector = detector is None and spec_input["preprocessing"].get("detector") == "mediapipe"
    if own_detector:
        detector = MediaPipeDetector(**spec_input["detector_options"])
    try:
        x, _ = pixel_inputs(np.concatenate([faces_c, faces_r]), spec_input, detector)
    finally:
        if own_detector:
            detector.close()
    x_c, x_r = x[:len(faces_c)], x[len(faces_c):]

    n_val_c = max(1, int(round(val_fraction * len(usable)))) if val_fraction > 0 and len(usable) >= 5 else 0
    n_val_r = int(round(val_fraction * len(y_r))) if n_val_c else 0
    val_c = np.zeros(len(usable), bool)
    val_c[rng.choice(len(usable), size=n_val_c, replace=False)] = True
    val_r = np.zeros(len(y_r), bool)
    val_r[rng.choice(len(y_r), size=n_val_r, replace=False)] = True
    x_train = np.concatenate([x_c[~val_c], x_r[~val_r]])
    y_train = np.concatenate([y_c[~val_c], y_r[~val_r]])
    if n_val_c:
        x_val, y_val = np.concatenate([x_c[val_c], x_r[val_r]]), np.concatenate([y_c[val_c], y_r[val_r]])
    else:  # too few corrections to hold any out: the epoch of lowest training loss is kept
        x_val, y_val = x_train, y_train

    if isinstance(training, trainer.TrainConfig):
        training = asdict(training)
    config = trainer.TrainConfig.from_params({**DEFAULT_TRAINING, **(training or {}), **({"epochs": epochs} if epochs else {}),
                                              "seed": seed})
    base, number = _base_and_number(parent)
    folder = Path(versions_dir) if versions_dir is not None else parent.folder.parent / "versions"
    parent_sha = file_sha256(parent.model_path)
    # the parent's weights enter the cache key: a re-exported parent is fine-tuned anew
    options = {"fine_tune_of": parent.name, "parent_model_sha256": parent_sha, "freeze_batchnorm": freeze_batchnorm}
    name = f"feedback-{base}"
    digest = trainer.fit_key(name, options, config, x_train, y_train, x_val, y_val)
    if reuse:
        for existing in versions(folder).values():
            if existing.spec["version"].get("digest") == digest:
                from . import progress

                progress.note("fit", computed=False)  # for the runner's line: a fit read back, not trained
                return FineTuned(existing, parent, None, reused=True)

    parent_model = zoo.load_model(parent)

    def build():
        import keras

        copy = keras.models.clone_model(parent_model)
        copy.set_weights(parent_model.get_weights())
        if freeze_batchnorm:
            _freeze_batchnorm(copy)
        return copy

    fitted = trainer.fit(build, x_train, y_train, x_val, y_val, config, name=name, options=options,
                         cache_dir=cache_dir or folder / ".runs", verbose=verbose)
    version = {
        "base": base, "parent": parent.name, "parent_folder": str(parent.folder), "parent_model_sha256": parent_sha,
        "parent_version": number, "digest": digest, "created": _now(),
        "corrections": {"train": int((~val_c).sum()), "validation": int(n_val_c), "store": str(store.path),
                        "ids": [r.id for r in usable], "uids": [r.uid for r in usable],
                        "validation_ids": [r.id for r, v in zip(usable, val_c) if v],
                        "labels": dict(Counter(r.corrected for r in usable))},
        "replay": {"train": int((~val_r).sum()), "validation": int(n_val_r), "source": pool.name, "ids": replay_ids.tolist()},
        "training": asdict(config), "freeze_batchnorm": freeze_batchnorm,
        "fit": {k: v for k, v in fitted.summary.items()},
    }
    return FineTuned(_save_version(fitted.model, parent, folder, version), parent, fitted, reused=False)


def _save_version(model, parent: zoo.Entry, folder: Path, version: dict[str, Any]) -> zoo.Entry:
    """Write the version into a private temporary folder, then rename it to the first free
    ``<base>@v<N>``: a rename onto an existing version fails, so a concurrent fine-tune takes the next
    number and nothing is ever overwritten."""
    import shutil

    base = version["base"]
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".partial-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        record = {"model": f"{parent.spec['record'].get('model', parent.name)} fine-tuned on "
                           f"{version['corrections']['train']} corrections",
                  "representation": parent.representation, "dataset": f"{parent.spec['record'].get('dataset', '?')} + corrections",
                  "label_set": parent.spec["record"].get("label_set"), "profile": parent.spec["record"].get("profile"),
                  "created": version["created"]}
        taken = [int(name.rsplit("@v", 1)[1]) for name in os.listdir(folder)
                 if name.startswith(f"{base}@v") and name.rsplit("@v", 1)[1].isdigit()]
        number = max([version["parent_version"], *taken]) + 1
        while True:
            name = f"{base}@v{number}"
            entry = zoo.export(name, model, representation=parent.representation, class_order=parent.class_order,
                               input=parent.spec["input"], record=record, zoo_dir=staging)
            spec = {**entry.spec, "version": {**version, "number": number}}
            (entry.folder / "spec.json").write_text(json.dumps(spec, indent=1, default=zoo._plain) + "\n")
            try:
                os.rename(entry.folder, folder / name)  # fails when that version exists (a non-empty folder)
            except OSError:
                shutil.rmtree(entry.folder)
                number += 1
                continue
            return zoo.Entry(name, folder / name, spec)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""One dataset object for every source: FER2013, CK+48 and JAFFE, from every layout users have.

Every loader returns a :class:`FaceDataset` with uint8 images, labels under canonical emotion names,
the split, the subject id where the dataset has one, and a stable per-image id that survives
subsetting and relabelling, so that an error in a results table can be traced back to its image.

Nothing is dropped silently: rows or files that cannot be used are skipped, counted by reason in the
dataset's :class:`LoadReport`, and announced with a warning. The rules for unusual input:

- an image (or row) of an emotion outside the dataset's label set (``contempt/`` in a FER2013 tree,
  ``neutral/`` in CK+48, JAFFE's ``.CO``) is a counted skip naming the file and the label set;
- image ids are unique: a second file with the same stem in one folder (``a.png`` beside ``a.jpg``)
  and any later image with an id already taken are counted skips naming the one kept (the first in
  sorted order); ids of good data are unchanged;
- the folder layouts are flat (``<class>/<image>``, JAFFE's one folder): files in nested folders are
  not read, and each is a counted skip by path; hidden entries and .txt / .md notes are passed over;
- images of other depths become uint8 by their range (16-bit by 0..65535, or as 8-bit values when
  they use only 0..255; float by 0..1, or 0..255 when larger), counted under ``converted`` and
  announced; values no rule maps (negative, non-finite, float above 255) are skipped (a file) or
  refused (an archive). An alpha channel is ignored (the grey of the colour channels is kept, as
  OpenCV decodes it), noted when some pixels are transparent;
- a FER2013 load without one of its three splits warns, naming the split;
- a damaged .npz, an empty or header-only csv, or a source without a single usable image is refused
  with an error naming the file and the fix.
"""
from __future__ import annotations

import csv
import re
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from .labels import CKPLUS7, EMOTION7, LSTM_TRAINING_CAPS, LabelSet, canonical_emotion, get_label_set
from .images import to_uint8 as _to_uint8  # one pixel rule for loaders and detectors
from .paths import resolve_data_dir

#: FER2013's split names, in protocol order: train on Training, select on PublicTest, report on PrivateTest.
FER2013_SPLITS = ("Training", "PublicTest", "PrivateTest")
TRAIN, VAL, TEST = FER2013_SPLITS
#: The standard split sizes: a full FER2013 load must reproduce them exactly.
FER2013_STANDARD_SIZES = {TRAIN: 28709, VAL: 3589, TEST: 3589}
#: Split name for datasets without an official split (CK+, JAFFE: use subject-independent folds).
UNSPLIT = "all"

#: How many problem examples a report keeps verbatim (the counts are always complete).
_MAX_LISTED = 50


@dataclass
class LoadReport:
    """What a loader read, and everything it could not use, counted by reason."""

    source: str
    n_loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: images kept but changed to fit (another bit depth or range), counted by how; examples listed
    converted: Counter = field(default_factory=Counter)
    conversions: list[str] = field(default_factory=list)

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(f"{reason}: {detail}")

    def convert(self, how: str, detail: str) -> None:
        """Count an image kept after a conversion (noted verbatim up to the listing limit)."""
        self.converted[how] += 1
        if len(self.conversions) < _MAX_LISTED:
            self.conversions.append(f"{how}: {detail}")

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """``skipped N (reasons)`` and, where any, ``converted M (how)``: one line for messages."""
        text = f"skipped {self.n_skipped}"
        if self.n_skipped:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common()) + ")"
        if self.converted:
            text += (f", converted {sum(self.converted.values())} ("
                     + ", ".join(f"{n} {how}" for how, n in self.converted.most_common()) + ")")
        return text

    def announce(self) -> None:
        """Warn about skips and conversions so they show in notebooks and logs, not only in the report."""
        if self.n_skipped or self.converted:
            listed = "\n  ".join(self.problems + self.conversions)
            warnings.warn(f"{self.source}: loaded {self.n_loaded}, {self.summary()}.\n  {listed}", stacklevel=3)

    def __str__(self) -> str:
        lines = [f"source: {self.source}", f"loaded: {self.n_loaded}", f"skipped: {self.n_skipped}"]
        lines += [f"  {reason}: {n}" for reason, n in self.skipped.most_common()]
        lines += [f"converted {n}: {how}" for how, n in self.converted.most_common()]
        lines += [f"  {example}" for example in self.conversions]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


class PerImageColumns:
    """For dataclasses holding one row per image of a dataset (an extraction's results), keyed by image
    ``ids``: the fields listed in ``PER_IMAGE`` follow :meth:`subset` and :meth:`for_dataset`, and
    :meth:`check_aligned` refuses a dataset of other images. ``MADE_BY`` names the function that makes
    the rows, for the error messages."""

    PER_IMAGE: ClassVar[tuple[str, ...]] = ("ids",)
    MADE_BY: ClassVar[str] = "the extraction"

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index):
        """The rows of some images (a boolean mask or an index array), as ``FaceDataset.subset`` does."""
        index = np.asarray(index)
        return replace(self, **{key: getattr(self, key)[index] for key in self.PER_IMAGE})

    def for_dataset(self, dataset):
        """The rows of ``dataset``'s images, looked up by id (``dataset`` drawn from the one these describe)."""
        position = pd.Index(self.ids).get_indexer(dataset.ids)
        if (position < 0).any():
            raise KeyError(f"{int((position < 0).sum())} images of {dataset.name} were not extracted "
                           f"(first: {dataset.ids[position < 0][0]}); run {self.MADE_BY} on them")
        return self.subset(position)

    def check_aligned(self, dataset) -> None:
        """Raise unless these rows describe ``dataset``'s images, in the same order."""
        if len(dataset) != len(self) or not np.array_equal(np.asarray(dataset.ids).astype(str), self.ids.astype(str)):
            raise ValueError(f"{type(self).__name__} and {dataset.name} are not aligned: use for_dataset({dataset.name}) "
                             f"or run {self.MADE_BY} on it")


@dataclass
class FaceDataset:
    """Face images with labels, split, subject and a stable id per image.

    ``labels`` index ``class_names``; ``label_set`` names the target the labels belong to
    (a dataset loads under its own: ``emotion7`` for FER2013 and JAFFE, ``ckplus7`` for CK+). ``emotions`` keeps each image's original
    canonical emotion through relabelling, and ``meta`` holds any further per-image columns
    (CK+'s sequence and frame numbers).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    split: np.ndarray
    subject: np.ndarray
    ids: np.ndarray
    emotions: np.ndarray
    label_set: str
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    report: LoadReport | None = None

    #: the fields holding one entry per image (``meta`` holds more)
    PER_IMAGE: ClassVar[tuple[str, ...]] = ("images", "labels", "split", "subject", "ids", "emotions")

    def __post_init__(self):
        n = len(self.images)
        columns = {**{key: getattr(self, key) for key in self.PER_IMAGE if key != "images"}, **self.meta}
        for key, column in columns.items():
            if len(column) != n:
                raise ValueError(f"{self.name}: {key} has {len(column)} entries for {n} images")
        if self.images.dtype != np.uint8:
            raise TypeError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if n and self.labels.max() >= len(self.class_names):
            raise ValueError(f"{self.name}: label {self.labels.max()} outside class_names {self.class_names}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape[1:]))
        splits = ", ".join(f"{s} {n}" for s, n in Counter(self.split.tolist()).items())
        return f"FaceDataset({self.name}, {len(self)} images {shape}, {self.label_set} {self.class_names}, {splits})"

    @property
    def label_names(self) -> np.ndarray:
        """Each image's class name under the current label set."""
        return np.asarray(self.class_names, dtype=object)[self.labels]

    @property
    def splits(self) -> list[str]:
        present = set(self.split.tolist())
        ordered = [s for s in (*FER2013_SPLITS, UNSPLIT) if s in present]
        return ordered + sorted(present - set(ordered))

    def subset(self, index) -> "FaceDataset":
        """Images selected by a boolean mask or an index array (ids, labels and meta follow)."""
        index = np.asarray(index)
        if index.dtype == bool and len(index) != len(self):
            raise ValueError(f"mask has {len(index)} entries for {len(self)} images")
        return replace(self, **{key: getattr(self, key)[index] for key in self.PER_IMAGE},
                       meta={k: v[index] for k, v in self.meta.items()})

    def select_split(self, *names: str) -> "FaceDataset":
        unknown = set(names) - set(self.splits)
        if unknown:
            raise KeyError(f"{self.name} has no split {sorted(unknown)}; it has {self.splits}")
        return self.subset(np.isin(self.split, names))

    def counts(self) -> pd.DataFrame:
        """Images per class (rows, in class order) and split (columns), with totals."""
        table = pd.crosstab(
            pd.Categorical(self.label_names, categories=self.class_names),
            pd.Categorical(self.split, categories=self.splits),
            rownames=["class"], colnames=["split"], dropna=False,
        )
        table["total"] = table.sum(axis=1)
        table.loc["total"] = table.sum(axis=0)
        return table

    def relabel(self, label_set: str | LabelSet) -> "FaceDataset":
        """The same images under another label set; images of emotions outside it are dropped and counted."""
        label_set = get_label_set(label_set)
        targets = np.array([label_set.mapping.get(e) for e in self.emotions], dtype=object)
        keep = targets != None  # noqa: E711 - element-wise comparison on an object array
        if not keep.all():
            dropped = Counter(self.emotions[~keep].tolist())
            warnings.warn(
                f"{self.name}: {int((~keep).sum())} images have emotions outside label set "
                f"{label_set.name} and were left out: {dict(dropped)}",
                stacklevel=2,
            )
        kept = self.subset(keep)
        index = {name: i for i, name in enumerate(label_set.classes)}
        labels = np.array([index[t] for t in targets[keep]], dtype=np.int16)
        return replace(kept, labels=labels, class_names=label_set.classes, label_set=label_set.name)

    def stratified_indices(self, per_class: int, seed: int = 0, splits: tuple[str, ...] | None = None) -> np.ndarray:
        """Sorted indices of at most ``per_class`` images of each class in each split (all if fewer)."""
        rng = np.random.default_rng(seed)
        chosen = []
        for split_name in splits or self.splits:
            for label in range(len(self.class_names)):
                members = np.flatnonzero((self.split == split_name) & (self.labels == label))
                chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
        return np.sort(np.concatenate(chosen))

    def stratified_subset(self, per_class: int, seed: int = 0, splits: tuple[str, ...] | None = None) -> "FaceDataset":
        """At most ``per_class`` images of each class in each split (all of a class if it has fewer)."""
        return self.subset(self.stratified_indices(per_class, seed, splits))

    def protocol_subset(self, train_per_class: int | None, eval_per_class: int | None, seed: int = 0) -> "FaceDataset":
        """A profile's share of FER2013: at most ``train_per_class`` Training images and
        ``eval_per_class`` PublicTest / PrivateTest images per class (None keeps a split whole). Every
        chapter draws it the same way, so chapters of one profile evaluate on the same images."""
        keep = np.ones(len(self), bool)
        if train_per_class is not None:
            keep &= (self.split != TRAIN) | np.isin(np.arange(len(self)), self.stratified_indices(train_per_class, seed, (TRAIN,)))
        if eval_per_class is not None:
            keep &= (self.split == TRAIN) | np.isin(np.arange(len(self)), self.stratified_indices(eval_per_class, seed, (VAL, TEST)))
        return self if keep.all() else self.subset(np.flatnonzero(keep))

    def cap_classes(self, caps: dict[str, int | None], split: str = TRAIN, seed: int = 0) -> "FaceDataset":
        """Keep at most ``caps[emotion]`` random images of each original emotion in ``split``.

        ``None`` keeps every image; emotions missing from ``caps`` are kept whole as well. Other
        splits are untouched (the studies cap only what they train on).
        """
        rng = np.random.default_rng(seed)
        keep = self.split != split
        for emotion in np.unique(self.emotions):
            members = np.flatnonzero((self.split == split) & (self.emotions == emotion))
            cap = caps.get(emotion)
            if cap is not None and len(members) > cap:
                members = rng.choice(members, size=cap, replace=False)
            keep[members] = True
        return self.subset(keep)


def concatenate(datasets: list[FaceDataset], name: str | None = None) -> FaceDataset:
    """Datasets under the same label set as one (e.g. originals and their augmented copies); image ids
    must stay unique, so every image can still be traced."""
    first = datasets[0]
    for other in datasets[1:]:
        if (other.class_names, other.label_set, sorted(other.meta)) != (first.class_names, first.label_set, sorted(first.meta)):
            raise ValueError(f"cannot concatenate {first.name} and {other.name}: label sets, classes or meta columns differ")
    joined = {key: np.concatenate([getattr(d, key) for d in datasets]) for key in FaceDataset.PER_IMAGE}
    duplicated = pd.Index(joined["ids"]).duplicated()
    if duplicated.any():
        raise ValueError(f"{int(duplicated.sum())} image ids occur twice (first: {joined['ids'][duplicated][0]}); "
                         "give copies their own ids")
    meta = {key: np.concatenate([d.meta[key] for d in datasets]) for key in first.meta}
    return replace(first, name=name or "+".join(d.name for d in datasets), meta=meta, report=None, **joined)


def lstm_study_three_classes(dataset: FaceDataset, seed: int = 0) -> FaceDataset:
    """The LSTM study's target: training caps on the original emotions, then happy / sad / unknown."""
    return dataset.cap_classes(LSTM_TRAINING_CAPS, split=TRAIN, seed=seed).relabel("happy_sad_unknown")


# --------------------------------------------------------------------------------------------------
# Building datasets


def _native(name: str, label_set: LabelSet, images, emotions, split, subject, ids, report: LoadReport,
            meta=None, *, sources=None, expected_splits: dict[str, str] | None = None) -> FaceDataset:
    """A dataset under its own label set (FER2013 and JAFFE: emotion7; CK+: ckplus7).

    The boundary every loader passes through, so its rules hold for every layout: images of emotions
    outside ``label_set`` and images whose id is already taken are counted skips, named by ``sources``
    (a file or csv line per image; the id where not given); pixels become uint8 by :func:`_to_uint8`;
    splits of ``expected_splits`` (split -> where it comes from) that have no image are warned about;
    a source left without a single image is refused.
    """
    emotions = np.asarray([canonical_emotion(e) for e in emotions], dtype=object)
    ids = np.asarray(ids, dtype=object)
    sources = np.asarray([f"id {i}" for i in ids] if sources is None else sources, dtype=object)
    classes = label_set.classes
    outside = ~np.isin(emotions, classes)
    for i in np.flatnonzero(outside):
        report.skip(f"emotion not in label set {label_set.name} ({', '.join(classes)})", f"{sources[i]}: {emotions[i]}")
    duplicate = np.zeros(len(ids), bool)
    inside = np.flatnonzero(~outside)
    duplicate[inside] = pd.Index(ids[inside]).duplicated(keep="first")
    if duplicate.any():
        first: dict = {}
        for i in inside:
            first.setdefault(ids[i], i)
        for i in np.flatnonzero(duplicate):
            report.skip("image id already taken", f"{sources[i]}: id {ids[i]} is taken by {sources[first[ids[i]]]}")
    keep = ~(outside | duplicate)
    images = np.asarray(images)
    if not keep.all():
        images, emotions, ids = images[keep], emotions[keep], ids[keep]
        split, subject = np.asarray(split, dtype=object)[keep], np.asarray(subject, dtype=object)[keep]
        meta = {key: np.asarray(column)[keep] for key, column in (meta or {}).items()}
    if not keep.any():
        listed = "".join(f"\n  {p}" for p in report.problems[:10])
        raise ValueError(f"{report.source}: not one usable {name} image ({report.summary()}).{listed}\n"
                         "Fix or replace the files named, or point the loader at another copy of the data.")
    pixels, how = _to_uint8(images)
    if pixels is None:
        raise ValueError(f"{report.source}: images are {images.dtype} with {how}, which no rule maps to 0..255 grey; "
                         "re-export them as uint8 0..255 (or re-download the archive)")
    if how:
        report.convert(how, f"all {len(pixels)} images of the archive")
    missing = [s for s in (expected_splits or {}) if s not in set(np.asarray(split).tolist())]
    if missing:
        note = (f"{name} from {report.source} has no {', '.join(missing)} images (expected "
                + "; ".join(f"{s}: {expected_splits[s]}" for s in missing)
                + "); chapters that train, select or report on a missing split will fail")
        report.notes.append(note)
        warnings.warn(note, stacklevel=3)
    index = {c: i for i, c in enumerate(classes)}
    report.n_loaded = len(pixels)
    report.announce()
    return FaceDataset(
        name=name,
        images=np.ascontiguousarray(pixels, dtype=np.uint8),
        labels=np.array([index[e] for e in emotions], dtype=np.int16),
        class_names=classes,
        split=np.asarray(split, dtype=object),
        subject=np.asarray(subject, dtype=object),
        ids=np.asarray(ids, dtype=object),
        emotions=emotions,
        label_set=label_set.name,
        meta=meta or {},
        report=report,
    )


#: Formats without an alpha channel, spared the second decode that looks for one.
_NO_ALPHA = {".jpg", ".jpeg"}


def _read_gray(path: Path, report: LoadReport, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """A grey-scale uint8 image, or ``None`` (counted in the report) when the file cannot be used.

    8-bit files decode exactly as ``cv2.IMREAD_GRAYSCALE`` always gave them; other depths keep their
    values (``IMREAD_ANYDEPTH``) and become uint8 by their range (:func:`_to_uint8`), counted as
    conversions. An alpha channel is ignored; transparent pixels are noted.
    """
    import cv2  # imported here: loading an .npz or .csv needs no OpenCV

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if image is None:
        report.skip("unreadable image", str(path))
        return None
    if image.dtype != np.uint8:
        if image.dtype == np.uint16 and image.max() > 255:
            # a true 16-bit image: the codec's own reduction to 8 bits, the one IMREAD_GRAYSCALE gave
            image, how = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), "16-bit image reduced to 8 bits"
        else:
            image, how = _to_uint8(image)  # e.g. 8-bit values in a 16-bit file, which the codec made black
        if image is None:
            report.skip("pixel values without a 0..255 rule", f"{path}: {how}")
            return None
        report.convert(how, str(path))
    if path.suffix.lower() not in _NO_ALPHA:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 3 and raw.shape[2] in (2, 4):
            alpha = raw[..., -1]
            opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1.0
            if (alpha < opaque).any():
                report.convert("transparent pixels (alpha ignored, grey of the colour channels kept)", str(path))
    if size is not None and image.shape != size:
        report.notes.append(f"resized {path.name} from {image.shape} to {size}")
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    return image


def _missing(dataset: str, where: Path, expected: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"No {dataset} data found at {where}.\nExpected one of:\n{expected}\n"
        "Point the chapter's `data_dir` parameter or $FER_DATA_DIR at the folder holding them, "
        "or run with the `sample` profile to use the small sample committed in data/sample."
    )


_NPZ_FIX = ("re-download it (where the archives come with SHA256SUMS, `sha256sum -c SHA256SUMS` finds a damaged "
            "copy) or re-export it (`python -m fer_lib.sample` rebuilds the committed sample)")
#: What a damaged archive raises, from the zip layer, the decompressor or numpy's array header.
_DAMAGED = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _load_npz(path: Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, each read once (see data README); a damaged archive, or one
    without the ``required`` arrays, is refused with an error naming the path and the fix."""
    with open(path, "rb") as handle:  # ours to close: numpy leaves its own open when the file is damaged
        try:
            archive = np.load(handle, allow_pickle=False)
        except _DAMAGED as error:
            raise ValueError(f"{path} cannot be read as an .npz archive ({type(error).__name__}: {error}); "
                             f"it is probably truncated or damaged: {_NPZ_FIX}") from error
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not an .npz archive of named arrays: {_NPZ_FIX}")
        missing = [key for key in required if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks the array(s) {missing} (it has {archive.files}): {_NPZ_FIX}")
        try:
            return {key: archive[key] for key in archive.files}
        except _DAMAGED as error:
            raise ValueError(f"{path}: an array in the archive is damaged ({type(error).__name__}: {error}): "
                             f"{_NPZ_FIX}") from error
        finally:
            archive.close()


def _archive_emotions(path: Path, labels: np.ndarray, names) -> list[str]:
    """Each label's class name; a label outside ``names`` (negative ones would wrap around) is refused."""
    names = [str(n) for n in names]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"{path}: labels run {labels.min()}..{labels.max()} but class_names has {len(names)} "
                         f"entries {names}: {_NPZ_FIX}")
    return [names[i] for i in labels]


def _locate(dataset: str, path, npz_name: str, subfolders: tuple[str, ...], is_folder_layout, expected: str):
    """``('npz', file)`` or ``('folders', folder)`` for a dataset at ``path``; else a FileNotFoundError."""
    path = resolve_data_dir(path)
    if path.is_file() and path.suffix == ".npz":
        return "npz", path
    if (path / npz_name).is_file():
        return "npz", path / npz_name
    for folder in (path / sub for sub in subfolders):
        if folder.is_dir() and is_folder_layout(folder):
            return "folders", folder
    raise _missing(dataset, path, expected)


#: Files a data folder may hold beside its images, passed over: notes, not data.
_NOTES = {".txt", ".md"}


def _passed_over(entry: Path) -> bool:
    """Hidden entries (``.DS_Store``, ``.ipynb_checkpoints``: the system's or a tool's) and notes."""
    return entry.name.startswith(".") or (entry.suffix.lower() in _NOTES and entry.is_file())


def _files_under(folder: Path) -> list[Path]:
    """Every file at any depth below ``folder``, sorted, less what :func:`_passed_over` passes over."""
    return [file for file in sorted(folder.rglob("*"))
            if file.is_file() and not any(_passed_over(Path(part)) for part in file.relative_to(folder).parts)]


def _folder_files(folder: Path, report: LoadReport, pattern: re.Pattern, misnamed: str):
    """``(file, match)`` for each file directly in ``folder`` whose name matches ``pattern``, sorted.

    Counted skips: names that do not match (reason ``misnamed``); every file in a nested folder, by
    path (the layouts are flat, and a nested folder is as likely a copy or an augmentation of the
    images beside it as more of them, so it is not read); a file whose stem is taken by one before it
    (``a.png`` after ``a.jpg``: ids are stems, so the first in sorted order is kept).
    """
    taken: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if _passed_over(entry):
            continue
        if entry.is_dir():
            for file in _files_under(entry):
                report.skip("file in a nested folder (not read: the layout is flat)", str(file))
            continue
        match = pattern.match(entry.name)
        if match is None:
            report.skip(misnamed, str(entry))
            continue
        if entry.stem in taken:
            report.skip("same name as another image in its folder", f"{entry} (kept {taken[entry.stem].name})")
            continue
        taken[entry.stem] = entry
        yield entry, match


def _class_folder_files(root: Path, report: LoadReport, pattern: re.Pattern, misnamed: str):
    """``(emotion, file, match)`` for each image file in ``root/<class>/`` (see :func:`_folder_files`).

    Files of unknown class folders and files directly in ``root`` are counted skips.
    """
    for entry in sorted(root.iterdir()):
        if _passed_over(entry):
            continue
        if not entry.is_dir():
            report.skip("file outside a class folder", str(entry))
            continue
        try:
            emotion = canonical_emotion(entry.name)
        except KeyError:
            for file in _files_under(entry):
                report.skip("unknown class folder", str(file))
            continue
        for file, match in _folder_files(entry, report, pattern, misnamed):
            yield emotion, file, match


# --------------------------------------------------------------------------------------------------
# FER2013

FER2013_NPZ = "fer2013_images_48x48.npz"
FER2013_CSV = "fer2013.csv"
_FER2013_EXPECTED = (
    f"  - {FER2013_NPZ} (the project's archive: images, labels, usage, file_id, class_names)\n"
    f"  - {FER2013_CSV} (Kaggle 'Challenges in Representation Learning: Facial Expression Recognition "
    "Challenge': columns emotion, pixels, Usage)\n"
    "  - train/<class>/Training_*.jpg and test/<class>/{PublicTest,PrivateTest}_*.jpg "
    "(the Kaggle image-folder edition, e.g. msambare/fer2013)"
)
#: FER2013's numeric emotion codes (csv and the project's archive).
FER2013_CODES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_FER2013_FILE = re.compile(r"^(Training|PublicTest|PrivateTest)_(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def locate_fer2013(path: str | Path | None = None) -> tuple[str, Path]:
    """Which FER2013 layout is at ``path`` and where: ``('npz'|'csv'|'folders', location)``.

    Raises FileNotFoundError naming the files it expects when none is there.
    """
    path = resolve_data_dir(path)
    if path.is_file():
        if path.suffix in (".npz", ".csv"):
            return path.suffix[1:], path
        raise ValueError(f"{path}: FER2013 is read from .npz, .csv or an image folder, not {path.suffix}")
    for folder in (path, path / "fer2013"):
        if (folder / FER2013_NPZ).is_file():
            return "npz", folder / FER2013_NPZ
        if (folder / FER2013_CSV).is_file():
            return "csv", folder / FER2013_CSV
        if (folder / "train").is_dir() or (folder / "test").is_dir():
            return "folders", folder  # one split folder is enough to load; the missing splits are warned about
    raise _missing("FER2013", path, _FER2013_EXPECTED)


def load_fer2013(path: str | Path | None = None) -> FaceDataset:
    """FER2013 from a folder (any of the three layouts) or from a given ``.npz`` / ``.csv`` file.

    ``path=None`` resolves the data folder as ``$FER_DATA_DIR`` then ``data/``.
    """
    layout, location = locate_fer2013(path)
    reader = {"npz": _fer2013_from_npz, "csv": _fer2013_from_csv, "folders": _fer2013_from_folders}[layout]
    return reader(location)


def fer2013_ids(usage, numbers, emotions) -> list[str]:
    """Stable ids from the image-folder file names: ``Training_3908``.

    The image-folder edition reuses two names in two class folders for different pictures
    (``Training_8475486`` in angry and surprise, ``Training_52789098`` in surprise and neutral), so a
    name that occurs more than once gets its class appended (``Training_8475486_angry``) to stay unique.
    """
    names = [f"{u}_{n}" for u, n in zip(usage, numbers)]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    return [f"{name}_{e}" if name in repeated else name for name, e in zip(names, emotions)]


def _fer2013_from_npz(path: Path) -> FaceDataset:
    arrays = _load_npz(path, required=("images", "labels", "usage", "file_id"))
    usage = arrays["usage"].astype(str)
    emotions = [canonical_emotion(e) for e in _archive_emotions(path, arrays["labels"], arrays.get("class_names", FER2013_CODES))]
    return _native(
        "fer2013", EMOTION7,
        arrays["images"],
        emotions,
        usage,
        np.full(len(usage), "", dtype=object),  # FER2013 has no subject ids
        fer2013_ids(usage, arrays["file_id"], emotions),
        LoadReport(str(path)),
        expected_splits={s: f"entries with usage {s}" for s in FER2013_SPLITS},
    )


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _fer2013_from_csv(path: Path) -> FaceDataset:
    """Kaggle's fer2013.csv, read with the standard csv module so that every problem row is a counted
    skip under the line number an editor shows (blank lines included), rather than a parser error."""
    report = LoadReport(str(path))
    fix = ("re-download fer2013.csv (Kaggle 'Challenges in Representation Learning: Facial Expression "
           "Recognition Challenge'), or remove it to use another layout of the folder")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the download or copy did not finish; {fix}")
    # utf-8-sig: a byte-order mark would otherwise become part of the first column's name; undecodable
    # bytes become U+FFFD, so their row fails the checks below and is counted, not a decode error.
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next((fields for fields in reader if "".join(fields).strip()), None)  # the first non-blank line
        if header is None:
            raise ValueError(f"{path} holds only blank lines, not even the header emotion,pixels,Usage; {fix}")
        missing = {"emotion", "pixels", "Usage"} - set(header)
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {sorted(missing)}; the Kaggle fer2013.csv has emotion, pixels, Usage "
                f"(found {header})"
            )
        column = {name: header.index(name) for name in ("emotion", "pixels", "Usage")}
        images, emotions, usage, ids, lines = [], [], [], [], []
        row, end = -1, reader.line_num  # row: index among the data records; end: last line read
        while True:
            line = end + 1  # 1-based, as an editor shows it: the record starts after the last one read
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # e.g. a field beyond the csv module's size limit; reading goes on
                end, row = reader.line_num, row + 1
                report.skip("malformed csv record", f"line {line}: {error}")
                continue
            end = reader.line_num
            if len(fields) <= 1 and not "".join(fields).strip():
                continue  # a blank (or all-space) line is no record, as pandas read it: ids keep their rows
            row += 1
            if len(fields) != len(header):
                report.skip("wrong number of fields", f"line {line}: {len(fields)} fields, the header has {len(header)}")
                continue
            emotion, pixels, split = (fields[column[name]] for name in ("emotion", "pixels", "Usage"))
            # ASCII digits only: int() and numpy also read other scripts' digits ('٣' is 3) and fail on '³'
            if not _ASCII_DIGITS.fullmatch(emotion.strip()) or int(emotion) >= len(FER2013_CODES):
                report.skip("unknown label", f"line {line}: emotion={emotion!r}")
                continue
            if split not in FER2013_SPLITS:
                report.skip("unknown usage", f"line {line}: Usage={split!r}")
                continue
            values = pixels.split()
            if len(values) != 48 * 48:
                report.skip("wrong pixel count", f"line {line}: {len(values)} values, expected 2304")
                continue
            try:
                if not pixels.isascii():
                    raise ValueError("non-ASCII characters")
                image = np.array(values, dtype=np.int32)
            except ValueError:
                report.skip("non-numeric pixels", f"line {line}")
                continue
            if image.min() < 0 or image.max() > 255:
                report.skip("pixel out of 0..255", f"line {line}")
                continue
            images.append(image.astype(np.uint8).reshape(48, 48))
            emotions.append(FER2013_CODES[int(emotion)])
            usage.append(split)
            ids.append(f"csv_row{row:05d}")  # row in the original csv: stable for the standard file
            lines.append(f"line {line}")
    if row < 0:
        raise ValueError(f"{path} has its header but no data rows (the Kaggle file has 35887); {fix}")
    return _native("fer2013", EMOTION7, np.stack(images) if images else np.zeros((0, 48, 48), np.uint8),
                   emotions, usage, [""] * len(usage), ids, report, sources=lines,
                   expected_splits={s: f"rows with Usage {s}" for s in FER2013_SPLITS})


#: Where each split lives in the image-folder edition.
_FER2013_FOLDER_SPLITS = {TRAIN: "train/<class>/Training_*", VAL: "test/<class>/PublicTest_*",
                          TEST: "test/<class>/PrivateTest_*"}


def _fer2013_from_folders(root: Path) -> FaceDataset:
    report = LoadReport(str(root))
    images, emotions, usage, numbers, files = [], [], [], [], []
    for top in ("train", "test"):
        if not (root / top).is_dir():
            continue  # a missing split folder: its splits are warned about below
        for emotion, file, match in _class_folder_files(
                root / top, report, _FER2013_FILE, "file name without Training_/PublicTest_/PrivateTest_ prefix"):
            split, number = match.group(1), match.group(2)
            if (top == "train") != (split == TRAIN):
                report.skip("split prefix contradicts its folder", str(file))
                continue
            image = _read_gray(file, report, size=(48, 48))
            if image is None:
                continue
            images.append(image)
            emotions.append(emotion)
            usage.append(split)
            numbers.append(number)
            files.append(str(file))
    if not images and not report.n_skipped:
        raise _missing("FER2013", root, _FER2013_EXPECTED)
    ids = fer2013_ids(usage, numbers, emotions)
    return _native("fer2013", EMOTION7, np.stack(images) if images else np.zeros((0, 48, 48), np.uint8),
                   emotions, usage, [""] * len(usage), ids, report, sources=files,
                   expected_splits=_FER2013_FOLDER_SPLITS)


# --------------------------------------------------------------------------------------------------
# CK+48

CKPLUS_NPZ = "ckplus48_images.npz"
_CKPLUS_EXPECTED = (
    f"  - {CKPLUS_NPZ} (the project's archive: images, labels, subject, sequence, frame, filename)\n"
    "  - CK+48/<class>/S###_###_########.png (the 48x48 'CK+48' edition: anger, contempt, disgust, "
    "fear, happy, sadness, surprise)"
)
_CKPLUS_FILE = re.compile(r"^S(\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)


def load_ckplus(path: str | Path | None = None) -> FaceDataset:
    """CK+48: the last three frames of CK+'s 327 labelled sequences, with subject ids."""
    layout, where = _locate("CK+48", path, CKPLUS_NPZ, ("CK+48", "ck+48", ""),
                            lambda folder: any((folder / c).is_dir() for c in ("anger", "happy", "surprise")),
                            _CKPLUS_EXPECTED)
    return _ckplus_from_npz(where) if layout == "npz" else _ckplus_from_folders(where)


def _ckplus_dataset(images, emotions, subject, sequence, frame, filenames, report, sources=None) -> FaceDataset:
    subject = np.asarray(subject, dtype=np.int32)
    return _native(
        "ckplus48", CKPLUS7, images, emotions, [UNSPLIT] * len(images),
        [f"S{s:03d}" for s in subject],
        [Path(f).stem for f in filenames],
        report,
        meta={"sequence": np.asarray(sequence, dtype=np.int32), "frame": np.asarray(frame, dtype=np.int32)},
        sources=sources,
    )


def _ckplus_from_npz(path: Path) -> FaceDataset:
    a = _load_npz(path, required=("images", "labels", "class_names", "subject", "sequence", "frame", "filename"))
    return _ckplus_dataset(a["images"], _archive_emotions(path, a["labels"], a["class_names"]), a["subject"],
                           a["sequence"], a["frame"], a["filename"].astype(str), LoadReport(str(path)))


def _ckplus_from_folders(root: Path) -> FaceDataset:
    report = LoadReport(str(root))
    images, emotions, subject, sequence, frame, names, files = [], [], [], [], [], [], []
    for emotion, file, match in _class_folder_files(root, report, _CKPLUS_FILE, "file name not S###_###_########.png"):
        image = _read_gray(file, report, size=(48, 48))
        if image is None:
            continue
        images.append(image)
        emotions.append(emotion)
        subject.append(int(match.group(1)))
        sequence.append(int(match.group(2)))
        frame.append(int(match.group(3)))
        names.append(file.name)
        files.append(str(file))
    if not images and not report.n_skipped:
        raise _missing("CK+48", root, _CKPLUS_EXPECTED)
    return _ckplus_dataset(np.stack(images) if images else np.zeros((0, 48, 48), np.uint8), emotions, subject,
                           sequence, frame, names, report, sources=files)


# --------------------------------------------------------------------------------------------------
# JAFFE

JAFFE_NPZ = "jaffe_256x256.npz"
_JAFFE_EXPECTED = (
    f"  - {JAFFE_NPZ} (the project's archive: images, labels, subject, filename, class_names)\n"
    "  - a folder (e.g. jaffe/) of the original files named like KA.AN1.39.tiff "
    "(subject . expression code + repeat . number)"
)
_JAFFE_FILE = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d)\.(\d+)\.tiff?$", re.IGNORECASE)


def load_jaffe(path: str | Path | None = None) -> FaceDataset:
    """JAFFE: 213 posed images of 10 subjects, 256x256 grey."""
    layout, where = _locate("JAFFE", path, JAFFE_NPZ, ("jaffe", "JAFFE", ""),
                            lambda folder: any(_JAFFE_FILE.match(f.name) for f in folder.iterdir()),
                            _JAFFE_EXPECTED)
    return _jaffe_from_npz(where) if layout == "npz" else _jaffe_from_folder(where)


def _jaffe_from_npz(path: Path) -> FaceDataset:
    a = _load_npz(path, required=("images", "labels", "class_names", "subject", "filename"))
    filenames = a["filename"].astype(str)
    return _native("jaffe", EMOTION7, a["images"], _archive_emotions(path, a["labels"], a["class_names"]),
                   [UNSPLIT] * len(filenames), a["subject"].astype(str), [Path(f).stem for f in filenames],
                   LoadReport(str(path)))


def _jaffe_from_folder(root: Path) -> FaceDataset:
    report = LoadReport(str(root))
    images, emotions, subject, ids, files = [], [], [], [], []
    for file, match in _folder_files(root, report, _JAFFE_FILE, "file name not like KA.AN1.39.tiff"):
        try:
            emotion = canonical_emotion(match.group(2))
        except KeyError:
            report.skip("unknown expression code", str(file))
            continue
        image = _read_gray(file, report, size=(256, 256))
        if image is None:
            continue
        images.append(image)
        emotions.append(emotion)
        subject.append(match.group(1).upper())
        ids.append(Path(file.name).stem)
        files.append(str(file))
    if not images and not report.n_skipped:
        raise _missing("JAFFE", root, _JAFFE_EXPECTED)
    return _native("jaffe", EMOTION7, np.stack(images) if images else np.zeros((0, 256, 256), np.uint8), emotions,
                   [UNSPLIT] * len(ids), subject, ids, report, sources=files)


LOADERS = {"fer2013": load_fer2013, "ckplus": load_ckplus, "ckplus48": load_ckplus, "jaffe": load_jaffe}


def load_dataset(name: str, path: str | Path | None = None) -> FaceDataset:
    """Load ``fer2013``, ``ckplus`` or ``jaffe`` from ``path`` (default: ``$FER_DATA_DIR``, then ``data/``)."""
    if name not in LOADERS:
        raise KeyError(f"Unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](path)

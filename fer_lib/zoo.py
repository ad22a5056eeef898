"""The book's trained models, packaged so anyone can run them: one folder per model under
``fer_lib/models/zoo/`` (committed, installed with the package), each holding the model file and a
``spec.json`` that says everything needed to feed it a face:

- ``representation`` (as the records name it), ``class_order``;
- ``input``: how a 48×48 grey face becomes the model's input — ``{"kind": "pixels", "preprocessing":
  {...}, "detector_options": {...}}`` (chapter 3's pipeline), ``{"kind": "mesh", "attempts": [...],
  "min_confidence": …, "normalisation": {...}, "transform": "none" | "occupancy" | "gaussian" | "edges" |
  "xyz" | …}`` (chapters 4–6: MediaPipe's 478 landmarks, normalised, then a voxel grid or mesh
  features), or ``{"kind": "blendshapes", "attempts": [...], "min_confidence": …, "columns": [...]}``
  (chapter 7);
- ``record``: the results record it came from (chapter, model, accuracy with its CI, profile, date),
  so a prediction can always be traced to a measured number.

Keras models are saved for inference (no optimizer state); scikit-learn models with joblib (load only
zoo folders you trust: joblib files are pickles). :func:`export` writes a folder, :func:`entries`
lists them, :func:`load_model` reads one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the input kinds fer_lib.predict can build
INPUT_KINDS = ("pixels", "mesh", "blendshapes")
#: what a zoo spec keeps of its results record
RECORD_FIELDS = ("chapter", "model", "representation", "dataset", "label_set", "split", "accuracy", "accuracy_ci95",
                 "macro_f1", "coverage", "n_eval", "profile", "created")


def default_dir() -> Path:
    return Path(__file__).resolve().parent / "models" / "zoo"


@dataclass(frozen=True)
class Entry:
    """One packaged model: its folder and spec."""

    name: str
    folder: Path
    spec: dict[str, Any]

    @property
    def representation(self) -> str:
        return self.spec["representation"]

    @property
    def class_order(self) -> list[str]:
        return list(self.spec["class_order"])

    @property
    def model_path(self) -> Path:
        return self.folder / self.spec["model_file"]

    @property
    def megabytes(self) -> float:
        return sum(p.stat().st_size for p in self.folder.iterdir()) / 1e6


def _check_input(spec_input: dict[str, Any]) -> None:
    kind = spec_input.get("kind")
    if kind not in INPUT_KINDS:
        raise ValueError(f"input kind {kind!r} is not one of {INPUT_KINDS}")
    needed = {"pixels": ("preprocessing", "detector_options"), "mesh": ("attempts", "min_confidence", "normalisation"),
              "blendshapes": ("attempts", "min_confidence", "columns")}[kind]
    missing = [key for key in needed if key not in spec_input]
    if missing:
        raise ValueError(f"a {kind!r} input needs {missing}")


def export(name: str, model, *, representation: str, class_order, input: dict[str, Any], record: dict[str, Any],
           zoo_dir: str | Path | None = None) -> Entry:
    """Write ``model`` (a Keras model or a scikit-learn estimator) and its spec to ``<zoo_dir>/<name>/``,
    replacing an earlier export of that name."""
    _check_input(input)
    folder = Path(zoo_dir or default_dir()) / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if hasattr(model, "predict_proba"):  # scikit-learn
        import joblib

        model_file = "model.joblib"
        joblib.dump(model, folder / model_file, compress=3)
    else:
        model_file = "model.keras"
        _inference_copy(model).save(folder / model_file)
    spec = {"name": name, "representation": representation, "class_order": list(class_order), "input": input,
            "model_file": model_file, "record": {k: record.get(k) for k in RECORD_FIELDS if k in record}}
    (folder / "spec.json").write_text(json.dumps(spec, indent=1, default=_plain) + "\n")
    return Entry(name, folder, spec)


def _plain(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} into a zoo spec")


def _inference_copy(model):
    """The model without its optimizer state (a third of the file for Adam): an uncompiled clone with the
    same weights."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def entries(zoo_dir: str | Path | None = None) -> dict[str, Entry]:
    """Every packaged model, by name (an empty dict when the zoo folder is missing)."""
    root = Path(zoo_dir or default_dir())
    found = {}
    for spec_path in sorted(root.glob("*/spec.json")):
        spec = json.loads(spec_path.read_text())
        _check_input(spec["input"])
        found[spec_path.parent.name] = Entry(spec_path.parent.name, spec_path.parent, spec)
    return found


def load_model(entry: Entry):
    """The entry's model, ready to predict (Keras: ``predict``; scikit-learn: ``predict_proba``)."""
    if not entry.model_path.is_file():
        raise FileNotFoundError(f"{entry.model_path} is missing: re-export zoo model {entry.name!r}")
    if entry.spec["model_file"].endswith(".joblib"):
        import joblib

        return joblib.load(entry.model_path)
    from .training import load_model as load_keras

    return load_keras(entry.model_path, compile=False)

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


def profile_dir(P) -> Path:
    """The zoo a profile's chapters export to and read: its ``zoo_dir`` (relative to the book's root; the
    full profile's is the packaged ``fer_lib/models/zoo``, the others' are under ``cache/``)."""
    from .paths import book_folder

    return book_folder(P, "zoo_dir") or default_dir()


def mesh_input(face_mesh: dict[str, Any], kind: str = "mesh", **fields) -> dict[str, Any]:
    """A ``mesh`` or ``blendshapes`` input spec with a chapter's MediaPipe settings (its ``face_mesh``
    parameters: ``attempts`` — None for the default cascade — and ``min_confidence``) and ``fields``."""
    from dataclasses import asdict

    from .face_mesh import DEFAULT_ATTEMPTS

    attempts = face_mesh.get("attempts") or [asdict(a) for a in DEFAULT_ATTEMPTS]
    return {"kind": kind, "attempts": list(attempts), "min_confidence": face_mesh["min_confidence"], **fields}


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

    def summary(self) -> str:
        """One sentence for a chapter: what was packaged, where, how big, and its measured accuracy."""
        r = self.spec["record"]
        ci = r.get("accuracy_ci95") or [float("nan")] * 2
        return (f"Packaged **{r.get('model')}** as zoo model `{self.name}` ({self.megabytes:.1f} MB, {self.spec['input']['kind']} "
                f"input): {r.get('accuracy', float('nan')):.1%} on {r.get('split')} (95 % CI {ci[0]:.1%}–{ci[1]:.1%}) "
                f"in its {r.get('profile')} run.")


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


#: the largest model file a zoo entry may have (the mesh chapter's distance CNN, 5.5 M parameters, is 22 MB);
#: the whole zoo is committed and should stay within 40 MB (chapter 10 shows its size)
MAX_MB = 25.0


def export_best(runs: dict, spec_for, *, name: str, zoo_dir: str | Path | None = None, within: float = 0.01,
                max_mb: float = MAX_MB) -> Entry | None:
    """Export a chapter's best single model as zoo entry ``name``: among its runs (name → experiment.Trained)
    with a model (ensembles left out) and an input spec (``spec_for(run_name, run)``, None: not packageable),
    those within ``within`` of the best PublicTest accuracy, smallest first (a forest of millions of nodes
    is not worth a point), and of equal size the fastest (a model with test-time augmentation runs ten
    views of a face: not worth less than a point either); the first whose file fits ``max_mb``.
    PrivateTest plays no part in the choice. Returns None, printing why, when no run qualifies."""
    candidates = []
    for run_name, run in runs.items():
        model = getattr(run, "estimator", None) or (run.fitted.model if run.fitted is not None else None)
        spec_input = spec_for(run_name, run) if model is not None else None
        if spec_input is not None and not run.record.get("members"):
            candidates.append((run.record["val_accuracy"], (run.record.get("n_params") or 0,
                                                            run.record.get("infer_ms_per_image") or 0.0),
                               run_name, model, spec_input))
    if not candidates:
        print(f"zoo {name!r}: no single model with a packageable input among {sorted(runs)}")
        return None
    best = max(c[0] for c in candidates)
    for accuracy, size, run_name, model, spec_input in sorted((c for c in candidates if c[0] >= best - within),
                                                              key=lambda c: (c[1], -c[0])):
        run = runs[run_name]
        entry = export(name, model, representation=run.record["representation"], class_order=run.record["class_order"],
                       input=spec_input, record=run.record, zoo_dir=zoo_dir)
        if entry.megabytes <= max_mb:
            return entry
        print(f"zoo {name!r}: {run_name} is {entry.megabytes:.0f} MB, over {max_mb:.0f} MB; trying the next")
        shutil.rmtree(entry.folder)
    print(f"zoo {name!r}: every candidate within {within:.0%} of the best is over {max_mb:.0f} MB")
    return None


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

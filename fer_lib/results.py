"""One metric function and one results schema for every chapter.

Each evaluated model writes one JSON record to ``results/<profile>/<chapter>__<model>.json``. The
comparison chapter reads only these files, so every chapter must evaluate through :func:`evaluate`
and save through :func:`write_record`.
"""
from __future__ import annotations

import json
import math
import platform
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from . import tracking
from .paths import results_dir

#: Keys every record must carry (the schema of the foundation issue).
REQUIRED_KEYS = (
    "chapter", "representation", "model", "dataset", "label_set", "split",
    "n_eval", "n_split", "coverage",
    "accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "macro_auc_roc",
    "per_class", "confusion", "class_order",
    "train_seconds", "extract_ms_per_image", "infer_ms_per_image", "n_params",
    "profile", "seed", "created",
)
SCHEMA_VERSION = 1
#: a name that becomes part of a file name (profile, chapter, model): letters, digits, '_', '.', '-', not
#: starting with '.' or '-' and without '..', so no name can climb out of results/<profile>/
_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: rates every record carries, each in [0, 1]
RATES = ("coverage", "accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall")
#: rates a record may carry (or hold null): checked in [0, 1] when present
OPTIONAL_RATES = ("accuracy_all_faces", "macro_auc_roc", "val_accuracy", "fold_accuracy_mean")
#: [low, high] bootstrap intervals of rates (or null)
INTERVALS = ("accuracy_ci95", "macro_f1_ci95")
#: what a record measured: a rerun of the same thing may replace its file, a different thing may not
IDENTITY = ("dataset", "label_set", "split")


def safe_name(kind: str, name) -> str:
    """``name`` if it is safe as one path component under ``results/`` (see ``_NAME``), else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} cannot name a results file: use letters, digits, '_', '.' and '-', "
                         f"not starting with '.' or '-' and without '..'")
    return name


def plain(value, where: str = "record"):
    """``value`` as plain JSON data: numpy scalars and arrays as Python numbers and lists, tuples as lists,
    paths as strings, NaN and infinities as None (JSON has none of them). Any other type is a TypeError
    naming where it is."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(plain(k, where))): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r:.80}), which a JSON record cannot hold; "
                    "store a number, string, list or dict")


def _is_rate(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def _confusion_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of a stack of confusion matrices (..., C, C); F1 of an absent class is 0."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    predicted = cm.sum(axis=-2)
    actual = cm.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), 0.0)
    present = actual > 0  # macro over the classes present in the evaluated labels, like sklearn's report
    accuracy = tp.sum(-1) / cm.sum(axis=(-2, -1))
    macro_f1 = (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)
    return accuracy, macro_f1


def bootstrap_ci(y_true, y_pred, n_classes: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap intervals of accuracy and macro-F1 (images resampled with replacement).

    ``n_boot=0`` skips the bootstrap (intervals are None), for quick internal evaluations.
    """
    if n_boot == 0:
        return {"accuracy_ci95": None, "macro_f1_ci95": None}
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rng = np.random.default_rng(seed)
    cells = y_true * n_classes + y_pred
    draws = rng.integers(0, len(cells), size=(n_boot, len(cells)))
    # One bincount per resample, vectorised: offset each resample's cells into its own block.
    offsets = (np.arange(n_boot) * n_classes * n_classes)[:, None]
    cms = np.bincount((cells[draws] + offsets).ravel(), minlength=n_boot * n_classes * n_classes)
    cms = cms.reshape(n_boot, n_classes, n_classes)
    accuracy, macro_f1 = _confusion_scores(cms)
    tail = (1 - level) / 2 * 100
    return {
        "accuracy_ci95": np.percentile(accuracy, [tail, 100 - tail]).tolist(),
        "macro_f1_ci95": np.percentile(macro_f1, [tail, 100 - tail]).tolist(),
    }


def evaluate(
    y_true,
    y_score,
    class_names,
    *,
    n_split: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of the results schema from true labels and scores.

    ``y_score`` is either class probabilities (N, C), which also gives the one-vs-rest AUC-ROC, or
    predicted class indices (N,), for which the AUC is ``None``. ``n_split`` is the size of the split
    before any face was lost (detector misses); coverage = n_eval / n_split, and
    ``accuracy_all_faces`` counts every lost face as an error, the fair number to compare
    representations whose extractors lose different faces.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_score = np.asarray(y_score)
    n_classes = len(class_names)
    if len(y_true) == 0:
        raise ValueError("evaluate() got no samples: nothing was predicted")
    if y_score.ndim == 2:
        if y_score.shape != (len(y_true), n_classes):
            raise ValueError(f"scores have shape {y_score.shape}, expected ({len(y_true)}, {n_classes})")
        y_pred = y_score.argmax(axis=1)
    else:
        y_pred = y_score.astype(int)
    labels = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    n_eval = len(y_true)
    n_split = n_eval if n_split is None else int(n_split)
    if n_split < n_eval:
        raise ValueError(f"n_split ({n_split}) is smaller than the number evaluated ({n_eval})")
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    accuracy = float((y_true == y_pred).mean())
    record = {
        "n_eval": n_eval,
        "n_split": n_split,
        "coverage": n_eval / n_split,
        "accuracy": accuracy,
        "accuracy_all_faces": accuracy * n_eval / n_split,
        "macro_f1": float(f1[present].mean()),
        "weighted_f1": float(np.average(f1, weights=support)),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_auc_roc": _macro_auc(y_true, y_score, labels) if y_score.ndim == 2 else None,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion": cm.tolist(),
        "class_order": list(class_names),
    }
    record.update(bootstrap_ci(y_true, y_pred, n_classes, n_boot=n_boot, seed=seed))
    return record


def one_vs_rest_table(record: dict[str, Any]) -> pd.DataFrame:
    """Per class, from a record's confusion matrix: TP, TN, FP, FN, one-vs-rest accuracy, precision, recall
    and F1 (the emotion-sketch study's Table V), and a ``macro`` row averaging the rates."""
    cm = np.asarray(record["confusion"], dtype=float)
    total = cm.sum()
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = total - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    counts = {"TP": tp, "TN": tn, "FP": fp, "FN": fn}
    table = pd.DataFrame({**counts, "accuracy": (tp + tn) / max(total, 1), "precision": precision, "recall": recall,
                          "F1": f1}, index=record["class_order"])
    present = (tp + fn) > 0  # macro over the classes present, as evaluate() does
    table.loc["macro"] = [np.nan] * 4 + table.loc[present, ["accuracy", "precision", "recall", "F1"]].mean().tolist()
    return table.astype({name: "Int64" for name in counts})  # counts stay integers; the macro row has none


def _macro_auc(y_true, y_prob, labels) -> float | None:
    """One-vs-rest macro AUC over the classes present in ``y_true`` (None if fewer than two)."""
    present = [c for c in labels if (y_true == c).any() and (y_true != c).any()]
    if len(present) < 2:
        return None
    aucs = [roc_auc_score(y_true == c, y_prob[:, c]) for c in present]
    return float(np.mean(aucs))


def make_record(
    metrics: dict[str, Any],
    *,
    chapter: str,
    representation: str,
    model: str,
    dataset: str,
    label_set: str,
    split: str,
    profile: str,
    seed: int,
    train_seconds: float | None,
    extract_ms_per_image: float | None,
    infer_ms_per_image: float | None,
    n_params: int | None,
    **extra,
) -> dict[str, Any]:
    """A complete results record: metrics from :func:`evaluate` plus what was run, where and how fast."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "chapter": chapter, "representation": representation, "model": model,
        "dataset": dataset, "label_set": label_set, "split": split,
        **metrics,
        "train_seconds": train_seconds, "extract_ms_per_image": extract_ms_per_image,
        "infer_ms_per_image": infer_ms_per_image, "n_params": n_params,
        "profile": profile, "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
        "cpu": cpu_description(),
        **extra,
    }
    validate_record(record)
    return record


def cpu_description() -> str:
    """The CPU's model name and its widest vector instructions, e.g. 'Intel(R) Xeon(R) Processor (AVX-512, AMX)':
    the book's machines share a model name but not their speed (chapter 3's VGG-11 took 108 s an epoch on one,
    36 s on another) nor MediaPipe's rounding, so a time or a speed is read with it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return platform.processor() or "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    widest = [name for name, flag in (("AVX-512", "avx512f"), ("AMX", "amx_tile")) if flag in flags] \
        or [name for name, flag in (("AVX2", "avx2"), ("AVX", "avx")) if flag in flags][:1]
    return f"{model} ({', '.join(widest)})" if widest else model


def validate_record(record: dict[str, Any]) -> None:
    """Raise ValueError naming every missing key or inconsistent value of a record.

    Checked: the required keys; names safe as file names; every rate in [0, 1] (NaN is not); intervals
    ordered within [0, 1]; the confusion matrix square over ``class_order``, summing to ``n_eval``, its
    trace / sum equal to ``accuracy`` (to 1e-6) and its rows to the per-class supports. numpy values are
    accepted (:func:`plain` makes them JSON when the record is written)."""
    record = plain(record)
    problems = [f"missing {key!r}" for key in REQUIRED_KEYS if key not in record]
    if not problems:
        for key in ("profile", "chapter", "model"):
            try:
                safe_name(key, record[key])
            except ValueError:
                problems.append(f"{key}={record[key]!r} must use letters, digits, '_', '.', '-' (it names a file; "
                                "no leading '.' or '-', no '..')")
        for key in RATES:
            if not _is_rate(record[key]):
                problems.append(f"{key}={record[key]!r} is not a fraction in [0, 1]")
        for key in OPTIONAL_RATES:
            if record.get(key) is not None and not _is_rate(record[key]):
                problems.append(f"{key}={record[key]!r} is not a fraction in [0, 1] (or null)")
        for key in INTERVALS:
            value = record.get(key)
            if value is not None and not (isinstance(value, list) and len(value) == 2 and all(map(_is_rate, value))
                                          and value[0] <= value[1]):
                problems.append(f"{key}={value!r} is not an interval [low, high] within [0, 1] (or null)")
        counts = [record[key] for key in ("n_eval", "n_split")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            problems.append(f"n_eval {counts[0]!r} and n_split {counts[1]!r} must be counts (integers >= 0)")
        elif record["n_eval"] > record["n_split"]:
            problems.append(f"n_eval {record['n_eval']} > n_split {record['n_split']}")
        problems += _confusion_problems(record)
    if problems:
        raise ValueError("Invalid results record: " + "; ".join(problems))


def _confusion_problems(record: dict[str, Any]) -> list[str]:
    """The confusion matrix against the record's own class order, counts, accuracy and per-class supports."""
    n = len(record["class_order"])
    try:
        cm = np.asarray(record["confusion"], dtype=float)
    except (TypeError, ValueError):
        return ["confusion is not a matrix of counts"]
    if cm.shape != (n, n):
        return [f"confusion is not {n}x{n}"]
    if not (np.isfinite(cm).all() and (cm >= 0).all() and (cm == np.round(cm)).all()):
        return ["confusion holds values that are not counts"]
    problems = []
    total = int(cm.sum())
    if total != record["n_eval"]:
        problems.append(f"confusion sums to {total}, not n_eval {record['n_eval']}")
    if total and _is_rate(record["accuracy"]) and abs(np.trace(cm) / total - record["accuracy"]) > 1e-6:
        problems.append(f"accuracy {record['accuracy']} is not the confusion matrix's trace / sum "
                        f"({int(np.trace(cm))} / {total} = {np.trace(cm) / total:.6f})")
    per_class = record["per_class"]
    if not isinstance(per_class, dict) or set(per_class) != set(record["class_order"]):
        problems.append(f"per_class names {sorted(per_class) if isinstance(per_class, dict) else per_class!r}, "
                        f"not the class_order {record['class_order']}")
        return problems
    for row, name in zip(cm, record["class_order"]):
        scores = per_class[name] if isinstance(per_class[name], dict) else {}
        bad = [k for k in ("precision", "recall", "f1") if not _is_rate(scores.get(k))]
        if bad:
            problems.append(f"per_class.{name}: {', '.join(bad)} not fractions in [0, 1]")
        if scores.get("support") != int(row.sum()):
            problems.append(f"per_class.{name}.support {scores.get('support')!r} is not its confusion row's sum {int(row.sum())}")
    return problems


def record_path(profile: str, chapter: str, model: str) -> Path:
    return results_dir(safe_name("profile", profile)) / f"{safe_name('chapter', chapter)}__{safe_name('model', model)}.json"


def write_record(record: dict[str, Any]) -> Path:
    """Write a validated record to ``results/<profile>/<chapter>__<model>.json`` as strict JSON (numpy values
    as numbers, NaN as null: :func:`plain`). A rerun of the same thing overwrites it; a record of another
    dataset, label set or split under the same chapter and model name is refused (it would silently
    replace a result). With ``$FER_MLFLOW_URI`` set, also log it to MLflow (:mod:`fer_lib.tracking`)."""
    record = plain(record)
    validate_record(record)
    path = record_path(record["profile"], record["chapter"], record["model"])
    _refuse_replacing_another(path, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n"
    temporary = path.with_name(path.name + ".partial")  # renamed over the old file: never half written
    temporary.write_text(text)
    temporary.replace(path)
    tracking.log_record(record, path)
    return path


def _refuse_replacing_another(path: Path, record: dict[str, Any]) -> None:
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # unreadable: nothing it says can be lost; replaced, said so
        warnings.warn(f"{path} was not a readable record ({type(error).__name__}: {error}); it is replaced",
                      stacklevel=3)
        return
    if not isinstance(old, dict):
        return
    before, after = ({key: r.get(key) for key in IDENTITY} for r in (old, record))
    if before != after:
        raise ValueError(
            f"{path} holds {record['model']!r} of chapter {record['chapter']} on {before}; the new record is on "
            f"{after}. Writing it would replace that result: give the new record its own model name (e.g. "
            f"with the split or label set as a suffix), or delete {path} if the old result is obsolete")


def load_records(profile: str) -> pd.DataFrame:
    """Every record of a profile as one table (one row per model), for comparison chapters."""
    rows = []
    for path in sorted(results_dir(profile).glob("*__*.json")):
        record = json.loads(path.read_text())
        validate_record(record)
        rows.append(record)
    return pd.DataFrame(rows)


#: the split a record is evaluated on writes ``<chapter>__<model>.predictions.csv``; the selection split
#: (FER2013's PublicTest) writes ``<chapter>__<model>.selection.predictions.csv`` beside it, so fusion
#: weights and ensemble members can be chosen without looking at the reported split
SELECTION = "selection"


def predictions_path(profile: str, chapter: str, model: str, split: str | None = None) -> Path:
    """Where a model's per-image predictions are: on its record's split (``split`` None) or, with
    ``split=SELECTION``, on the split that chose it."""
    suffix = "" if split is None else f".{safe_name('split', split)}"
    return record_path(profile, chapter, model).with_name(f"{chapter}__{model}{suffix}.predictions.csv")


def write_predictions(record: dict[str, Any], ids, y_true, probabilities, split: str | None = None) -> Path:
    """Per-image predictions of a recorded model (id, true class, predicted class, probabilities), beside
    its record: later chapters compare models on exactly the same images with them. ``split=SELECTION``
    writes the predictions on the selection split (PublicTest) instead of the reported one."""
    probabilities = np.asarray(probabilities)
    if len(ids) != len(y_true) or probabilities.shape != (len(ids), len(record["class_order"])):
        raise ValueError(f"{len(ids)} ids, {len(y_true)} labels and probabilities of shape {probabilities.shape} "
                         f"do not describe the same {len(record['class_order'])}-class predictions")
    table = pd.DataFrame({"id": np.asarray(ids), "y_true": np.asarray(y_true, int),
                          "y_pred": probabilities.argmax(1)})
    for number, name in enumerate(record["class_order"]):
        table[f"p_{name}"] = probabilities[:, number].round(5)
    path = predictions_path(record["profile"], record["chapter"], record["model"], split)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def load_predictions(profile: str, chapter: str, model: str, split: str | None = None) -> pd.DataFrame:
    """A model's per-image predictions on its record's split, or with ``split=SELECTION`` on PublicTest."""
    path = predictions_path(profile, chapter, model, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run chapter {chapter} with profile {profile!r} first "
                                f"(it writes the per-image predictions of {model}"
                                f"{' on the selection split' if split else ''})")
    return pd.read_csv(path, dtype={"id": str})


def paired_difference(y_true, pred_a, pred_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Accuracy of two models on the same images, the difference (a − b) with a paired bootstrap CI,
    and the exact McNemar test p-value on the images where exactly one of them is right."""
    from scipy.stats import binomtest

    y_true, pred_a, pred_b = (np.asarray(v, int) for v in (y_true, pred_a, pred_b))
    right_a, right_b = pred_a == y_true, pred_b == y_true
    draws = np.random.default_rng(seed).integers(0, len(y_true), size=(n_boot, len(y_true)))
    differences = right_a[draws].mean(1) - right_b[draws].mean(1)
    tail = (1 - level) / 2 * 100
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    return {
        "n": len(y_true), "accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean()),
        "difference": float(right_a.mean() - right_b.mean()),
        "difference_ci95_low": float(np.percentile(differences, tail)),
        "difference_ci95_high": float(np.percentile(differences, 100 - tail)),
        "only_a_right": only_a, "only_b_right": only_b,
        "mcnemar_p": float(binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0,
    }

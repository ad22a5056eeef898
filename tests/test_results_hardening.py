"""Results records are self-consistent, strict JSON, named safely and never replace a result of another
dataset, label set or split. Records are made from a committed model's real per-image predictions and
written under a scratch book root; the committed records are only read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_lib import results

ROOT = Path(__file__).resolve().parents[1]
# the full profile's are committed (smoke and sample results are rebuilt by each run, not committed)
PREDICTIONS = ROOT / "results" / "full" / "03_rq1_2d__study_cnn.predictions.csv"
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))  # results/<profile>/ is looked up under the book root
    return tmp_path


def record(split="PrivateTest", model="study_cnn", **extra):
    """A record (under the smoke profile, in the scratch root) of chapter 3's study CNN from its committed
    full-profile PrivateTest predictions."""
    table = pd.read_csv(PREDICTIONS)
    probabilities = table[[f"p_{name}" for name in CLASSES]].to_numpy()
    metrics = results.evaluate(table["y_true"].to_numpy(), probabilities, CLASSES, n_boot=50)
    return results.make_record(
        metrics, chapter="03_rq1_2d", representation="pixels_2d", model=model, dataset="fer2013",
        label_set="emotion7", split=split, profile="smoke", seed=0, train_seconds=1.0,
        extract_ms_per_image=None, infer_ms_per_image=0.5, n_params=1000, **extra)


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_numpy_values_and_nan_are_written_as_strict_json(scratch):
    base = record()
    numpy_record = {**base, "accuracy": np.float32(base["accuracy"]), "n_eval": np.int64(base["n_eval"]),
                    "n_params": np.int64(1000), "confusion": np.asarray(base["confusion"]),
                    "val_accuracy": np.float64(0.5), "fold_accuracy_std": float("nan"),
                    "epochs_per_fold": np.array([3, 4]), "converged": np.bool_(True)}
    path = results.write_record(numpy_record)
    written = strict_json(path)  # bare NaN would fail here
    assert written["fold_accuracy_std"] is None
    assert written["n_eval"] == base["n_eval"] and written["epochs_per_fold"] == [3, 4] and written["converged"] is True
    assert written["accuracy"] == pytest.approx(base["accuracy"], abs=1e-7)
    assert written["confusion"] == base["confusion"]
    assert len(results.load_records("smoke")) == 1


def test_an_object_json_cannot_hold_is_named(scratch):
    with pytest.raises(TypeError, match=r"record.options.callback is a function"):
        results.write_record({**record(), "options": {"callback": record}})


@pytest.mark.parametrize("change, message", [
    ({"accuracy": float("nan")}, "accuracy=None is not a fraction"),
    ({"macro_precision": 1.2}, "macro_precision=1.2 is not a fraction"),
    ({"weighted_f1": -0.1}, "weighted_f1=-0.1 is not a fraction"),
    ({"val_accuracy": 71.5}, "val_accuracy=71.5 is not a fraction in [0, 1] (or null)"),
    ({"accuracy_ci95": [0.6, 0.4]}, "accuracy_ci95=[0.6, 0.4] is not an interval"),
    ({"macro_auc_roc": True}, "macro_auc_roc=True is not a fraction"),
])
def test_every_rate_is_checked(change, message):
    with pytest.raises(ValueError) as error:
        results.validate_record({**record(), **change})
    assert message in str(error.value)


def test_accuracy_must_be_its_confusion_matrix_trace_over_sum():
    good = record()
    cm = np.asarray(good["confusion"])
    right = int(np.trace(cm))
    results.validate_record({**good, "accuracy": right / cm.sum()})  # the same number, recomputed: fine
    with pytest.raises(ValueError, match=rf"accuracy .* is not the confusion matrix's trace / sum \({right} / {cm.sum()}"):
        results.validate_record({**good, "accuracy": (right + 1) / cm.sum()})  # one image more than the matrix says


def test_per_class_supports_must_be_the_confusion_rows():
    good = record()
    per_class = json.loads(json.dumps(good["per_class"]))
    per_class["happy"]["support"] += 1
    with pytest.raises(ValueError, match=r"per_class.happy.support \d+ is not its confusion row's sum"):
        results.validate_record({**good, "per_class": per_class})
    per_class = {k: v for k, v in good["per_class"].items() if k != "happy"}
    with pytest.raises(ValueError, match="per_class names"):
        results.validate_record({**good, "per_class": per_class})


@pytest.mark.parametrize("field, name", [("profile", "../x"), ("profile", ".."), ("chapter", "../../etc"),
                                         ("model", "a/b"), ("model", ".hidden"), ("model", "x..y"), ("model", "m\n")])
def test_names_cannot_leave_the_results_folder(scratch, field, name):
    with pytest.raises(ValueError, match=field):
        results.write_record({**record(), field: name})
    assert not any(scratch.rglob("*.json"))  # nothing written, inside results/ or out of it
    with pytest.raises(ValueError, match="cannot name a results file"):
        results.record_path(*[name if key == field else "ok" for key in ("profile", "chapter", "model")])
    with pytest.raises(ValueError, match="cannot name a results file"):
        results.predictions_path(*[name if key == field else "ok" for key in ("profile", "chapter", "model")])


def test_a_rerun_replaces_its_record_but_another_split_is_refused(scratch):
    first = results.write_record(record(val_accuracy=0.2))
    rerun = results.write_record(record(val_accuracy=0.3))  # the same model, dataset, label set and split
    assert rerun == first and strict_json(first)["val_accuracy"] == 0.3
    with pytest.raises(ValueError) as error:
        results.write_record(record(split="PublicTest"))
    message = str(error.value)
    assert "'split': 'PrivateTest'" in message and "'split': 'PublicTest'" in message and str(first) in message
    assert strict_json(first)["split"] == "PrivateTest"  # the old result is still there
    assert not list(first.parent.glob("*.partial"))


def test_an_unreadable_old_record_is_replaced_and_said_so(scratch):
    path = results.record_path("smoke", "03_rq1_2d", "study_cnn")
    path.parent.mkdir(parents=True)
    path.write_text('{"chapter": "03_rq1_2d", "accur')  # an interrupted write of the old code
    with pytest.warns(UserWarning, match="not a readable record"):
        results.write_record(record())
    assert strict_json(path)["model"] == "study_cnn"


def committed_records():
    return sorted((ROOT / "results").glob("*/*__*.json"))


def test_every_committed_record_validates_and_sits_where_its_names_say():
    paths = committed_records()
    assert len(list((ROOT / "results" / "full").glob("*__*.json"))) >= 40  # the full profile's records are committed
    for path in paths:
        stored = strict_json(path)
        results.validate_record(stored)
        assert path == results.record_path(stored["profile"], stored["chapter"], stored["model"]), path

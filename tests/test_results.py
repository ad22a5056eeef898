"""The one metric function and the results schema."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from fer_lib import results

CLASSES = ("angry", "happy", "sad")


def _scores(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y_true] += 1.5  # a better-than-chance classifier
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y_true, probs


def test_metrics_agree_with_sklearn():
    y_true, probs = _scores()
    y_pred = probs.argmax(1)
    metrics = results.evaluate(y_true, probs, CLASSES, n_boot=100)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert metrics["macro_auc_roc"] == pytest.approx(roc_auc_score(y_true, probs, multi_class="ovr"))
    assert metrics["per_class"]["happy"]["support"] == int((y_true == 1).sum())
    assert np.sum(metrics["confusion"]) == len(y_true)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_data():
    y_true, probs = _scores(n=200)
    small = results.evaluate(y_true, probs, CLASSES, n_boot=400)
    y_big, p_big = _scores(n=5000)
    big = results.evaluate(y_big, p_big, CLASSES, n_boot=400)
    low, high = small["accuracy_ci95"]
    assert low < small["accuracy"] < high
    assert low < small["macro_f1"] + 0.05 and small["macro_f1_ci95"][0] < small["macro_f1"] < small["macro_f1_ci95"][1]
    assert np.diff(big["accuracy_ci95"])[0] < np.diff(small["accuracy_ci95"])[0] / 2


def test_coverage_and_accuracy_counting_lost_faces():
    y_true, probs = _scores(n=90)
    metrics = results.evaluate(y_true, probs, CLASSES, n_split=100, n_boot=10)
    assert metrics["coverage"] == pytest.approx(0.9)
    assert metrics["accuracy_all_faces"] == pytest.approx(metrics["accuracy"] * 0.9)
    with pytest.raises(ValueError, match="n_split"):
        results.evaluate(y_true, probs, CLASSES, n_split=50)


def test_predicted_labels_without_scores_give_no_auc():
    y_true, probs = _scores()
    metrics = results.evaluate(y_true, probs.argmax(1), CLASSES, n_boot=10)
    assert metrics["macro_auc_roc"] is None


def _record(profile="smoke", model="cnn"):
    y_true, probs = _scores()
    metrics = results.evaluate(y_true, probs, CLASSES, n_split=320, n_boot=50)
    return results.make_record(
        metrics, chapter="99_test", representation="pixels", model=model, dataset="fer2013",
        label_set="emotion7", split="PrivateTest", profile=profile, seed=0, train_seconds=1.5,
        extract_ms_per_image=None, infer_ms_per_image=0.2, n_params=1234,
    )


def test_record_round_trip_through_results_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "results_dir", lambda profile: tmp_path / profile)
    path = results.write_record(_record(model="cnn"))
    results.write_record(_record(model="vgg16"))
    assert path == tmp_path / "smoke" / "99_test__cnn.json"
    assert set(results.REQUIRED_KEYS) <= set(json.loads(path.read_text()))
    table = results.load_records("smoke")
    assert sorted(table["model"]) == ["cnn", "vgg16"]


def test_invalid_records_are_refused_with_every_reason():
    record = _record()
    del record["seed"]
    with pytest.raises(ValueError, match="missing 'seed'"):
        results.validate_record(record)
    record = _record()
    record["model"] = "my model/v2"
    record["accuracy"] = 1.2
    with pytest.raises(ValueError, match=r"model=.*accuracy=1.2"):
        results.validate_record(record)


def test_a_record_names_the_cpu_its_times_were_measured_on(monkeypatch, tmp_path):
    """Machines with one model name differ threefold in speed: the record says which vector units it had."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx avx2 avx512f amx_tile\n")
    real_path = results.Path
    monkeypatch.setattr(results, "Path", lambda p, *a: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p, *a))
    assert results.cpu_description() == "Intel(R) Xeon(R) Processor (AVX-512, AMX)"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2\n")
    assert results.cpu_description() == "Some CPU (AVX2)"
    assert _record()["cpu"] == "Some CPU (AVX2)"

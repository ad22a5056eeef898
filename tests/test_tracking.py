"""MLflow tracking of results records: off by default (mlflow never imported), and with a tracking URI a
record becomes a child run of its execution's parent, read back here from a real SQLite store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fer_lib import results, tracking

ROOT = Path(__file__).resolve().parents[1]


def _record(model: str, seed: int = 0) -> dict:
    """A real record: evaluate() on 40 predictions of 3 classes, then make_record() with training settings."""
    rng = np.random.default_rng(seed)
    y_true = np.repeat([0, 1, 2], [15, 15, 10])
    scores = rng.dirichlet(np.ones(3), size=len(y_true))
    scores[np.arange(len(y_true))[::2], y_true[::2]] += 1  # every other image right: accuracy well above chance
    metrics = results.evaluate(y_true, scores / scores.sum(1, keepdims=True), ["happy", "sad", "unknown"],
                               n_split=44, n_boot=200)
    return results.make_record(
        metrics, chapter="99_tracking", representation="pixels", model=model, dataset="fer2013",
        label_set="lstm3", split="PrivateTest", profile="smoke", seed=seed, train_seconds=12.5,
        extract_ms_per_image=None, infer_ms_per_image=0.8, n_params=1234,
        training={"optimizer": "sgd", "learning_rate": 0.01, "epochs": 3}, options={"width": 8}, n_train=120)


def test_params_and_metrics_split_a_record():
    record = _record("split")
    params, metrics = tracking.params_and_metrics(record)
    assert params["training.learning_rate"] == "0.01" and params["options.width"] == "8"
    assert params["dataset"] == "fer2013" and params["seed"] == "0" and params["n_train"] == "120"
    assert metrics["accuracy"] == pytest.approx(record["accuracy"])
    assert metrics["accuracy_ci95_low"] == pytest.approx(record["accuracy_ci95"][0])
    assert metrics["macro_f1_ci95_high"] == pytest.approx(record["macro_f1_ci95"][1])
    assert metrics["coverage"] == pytest.approx(40 / 44) and metrics["n_params"] == 1234
    assert metrics["f1.sad"] == pytest.approx(record["per_class"]["sad"]["f1"])
    assert "extract_ms_per_image" not in metrics and "extract_ms_per_image" not in params  # None: not logged
    assert not {"confusion", "class_order", "per_class"} & (set(params) | set(metrics))


def test_nothing_is_logged_and_mlflow_not_imported_without_a_uri(tmp_path):
    """A fresh interpreter writes a record with FER_MLFLOW_URI unset: no run, no mlruns folder, no mlflow."""
    (tmp_path / "params").mkdir()
    (tmp_path / "_config.yml").write_text("title: t\n")
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from tests.test_tracking import _record
        from fer_lib import results, tracking
        path = results.write_record(_record("off"))
        print(path.is_file(), tracking.log_record(_record("off"), path), "mlflow" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != tracking.URI_ENV}
    env["FER_BOOK_ROOT"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", script, str(ROOT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "None", "False"]
    assert (tmp_path / "results" / "smoke" / "99_tracking__off.json").is_file()
    assert not (tmp_path / "mlruns").exists()


def test_records_are_logged_to_a_sqlite_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (see requirements.txt)")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))
    monkeypatch.setenv(tracking.URI_ENV, uri)
    monkeypatch.setenv(tracking.RUN_ENV, "99_tracking-smoke-test")
    monkeypatch.chdir(tmp_path)  # artifacts of a sqlite store go to ./mlruns
    first, second = _record("first"), _record("second", seed=1)
    results.write_record(first)
    results.write_record(second)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fer-book/smoke")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"99_tracking [smoke]", "first", "second"}
    parent = runs["99_tracking [smoke]"]
    assert parent.data.tags[tracking.EXECUTION_TAG] == "99_tracking-smoke-test:99_tracking"
    for name, record in (("first", first), ("second", second)):
        run = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id  # one parent for the execution
        assert run.data.params["training.optimizer"] == "sgd" and run.data.params["label_set"] == "lstm3"
        assert run.data.metrics["accuracy"] == pytest.approx(record["accuracy"])
        assert run.data.metrics["macro_f1"] == pytest.approx(record["macro_f1"])
        assert run.data.metrics["accuracy_ci95_high"] == pytest.approx(record["accuracy_ci95"][1])
        assert run.data.metrics["train_seconds"] == pytest.approx(12.5)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {f"99_tracking__{name}.json", "confusion.png"}
        local = Path(client.download_artifacts(run.info.run_id, f"99_tracking__{name}.json", str(tmp_path)))
        assert json.loads(local.read_text()) == json.loads(json.dumps(record))
        png = Path(client.download_artifacts(run.info.run_id, "confusion.png", str(tmp_path)))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

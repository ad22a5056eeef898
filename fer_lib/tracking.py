"""Optional MLflow tracking of every results record (off unless ``$FER_MLFLOW_URI`` is set).

:func:`fer_lib.results.write_record` calls :func:`log_record` after writing a record. With a tracking URI
set (e.g. ``FER_MLFLOW_URI=sqlite:///mlruns.db``), each record becomes one MLflow run in the experiment
``fer-book/<profile>``: the record's settings as parameters (``training.learning_rate``, ``options.width``,
``dataset``, ...), its measured numbers as metrics (accuracy, macro F1, their bootstrap interval bounds,
coverage, times, per-class F1), and the record JSON and its confusion matrix (PNG) as artifacts. The runs
of one chapter execution are children of one parent run, keyed by ``$FER_RUN_ID`` (the runner sets it
per execution; without it, per process). Without the variable nothing is logged and mlflow is not imported.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

URI_ENV = "FER_MLFLOW_URI"
RUN_ENV = "FER_RUN_ID"
EXECUTION_TAG = "fer.execution"
#: integer fields that are measurements (the other integers of a record — seed, n_train — are settings)
INT_METRICS = ("n_eval", "n_split", "n_params", "epochs_run", "best_epoch", "n_folds")
#: fields that are neither: logged only inside the record artifact (and, for per_class, as f1.<class>)
NOT_LOGGED = ("per_class", "confusion", "class_order", "created", "schema_version")
_PROCESS = uuid.uuid4().hex[:12]  # the parent run's key for records written outside the runner
_parents: dict[tuple[str, str, str], str] = {}


def enabled() -> bool:
    return bool(os.environ.get(URI_ENV, "").strip())


def _key(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)[:250]  # the characters MLflow accepts in a key


def _flatten(prefix: str, value, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def params_and_metrics(record: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """A record split as MLflow wants it: ``params`` (settings, as strings, nested dicts flattened with dots)
    and ``metrics`` (finite numbers: floats, the measured integers, CI bounds as ``<name>_low/_high``,
    ``f1.<class>``)."""
    params, metrics = {}, {}
    for name, value in record.items():
        if name in NOT_LOGGED or value is None:
            continue
        if isinstance(value, bool) or isinstance(value, str):
            params[name] = str(value)
        elif isinstance(value, float) or (isinstance(value, int) and name in INT_METRICS):
            metrics[name] = float(value)
        elif isinstance(value, int):
            params[name] = str(value)
        elif name.endswith("_ci95") and isinstance(value, (list, tuple)) and len(value) == 2:
            metrics[f"{name}_low"], metrics[f"{name}_high"] = float(value[0]), float(value[1])
        elif isinstance(value, dict):
            flat: dict[str, Any] = {}
            _flatten(name, value, flat)
            params.update({key: json.dumps(v) if isinstance(v, (list, tuple)) else str(v) for key, v in flat.items()})
        else:
            params[name] = json.dumps(value, default=str)
    for name, scores in (record.get("per_class") or {}).items():
        metrics[f"f1.{name}"] = float(scores["f1"])
    params = {_key(k): v[:500] for k, v in params.items()}  # 500: the shortest limit of MLflow servers
    metrics = {_key(k): v for k, v in metrics.items() if math.isfinite(v)}
    return params, metrics


def _client():
    try:
        import mlflow  # noqa: F401 - imported only when tracking is on
    except ImportError:
        raise RuntimeError(f"${URI_ENV} is set but mlflow is not installed: pip install mlflow-skinny "
                           f"(or unset {URI_ENV})") from None
    import logging

    from mlflow.tracking import MlflowClient

    logger = logging.getLogger("mlflow")
    if logger.level in (logging.NOTSET, logging.INFO):  # its "Creating initial MLflow database tables..." lines
        logger.setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=os.environ[URI_ENV].strip())


def _experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _parent(client, experiment_id: str, record: dict[str, Any]) -> str:
    """The parent run of this chapter execution: found by its tag, else created."""
    execution = f"{os.environ.get(RUN_ENV) or _PROCESS}:{record['chapter']}"
    cached = (client.tracking_uri, experiment_id, execution)
    if cached not in _parents:
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{EXECUTION_TAG}` = '{execution}'",
                                  max_results=1)
        if runs:
            _parents[cached] = runs[0].info.run_id
        else:
            run = client.create_run(experiment_id, run_name=f"{record['chapter']} [{record['profile']}]",
                                    tags={EXECUTION_TAG: execution, "fer.chapter": record["chapter"],
                                          "fer.profile": record["profile"]})
            _parents[cached] = run.info.run_id
    return _parents[cached]


def log_record(record: dict[str, Any], path: str | os.PathLike) -> str | None:
    """Log a written record (``path``: its JSON file) as a child run of this execution's parent run;
    returns the run id, or None when tracking is off. A tracking server that cannot be reached is a
    warning, not an error: the record is on disk already."""
    if not enabled():
        return None
    client = _client()
    try:
        return _log(client, record, Path(path))
    except Exception as error:  # noqa: BLE001 - any failure of the store: the chapter goes on, said so
        warnings.warn(f"MLflow ({os.environ[URI_ENV]}): could not log {Path(path).name}: "
                      f"{type(error).__name__}: {error}", stacklevel=3)
        return None


def _log(client, record: dict[str, Any], path: Path) -> str:
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric, Param

    from .plots import confusion_matrices

    experiment_id = _experiment(client, f"fer-book/{record['profile']}")
    parent = _parent(client, experiment_id, record)
    run = client.create_run(experiment_id, run_name=record["model"], tags={
        "mlflow.parentRunId": parent, "fer.chapter": record["chapter"], "fer.profile": record["profile"],
        "fer.representation": str(record.get("representation")), "fer.split": str(record.get("split"))})
    run_id = run.info.run_id
    params, metrics = params_and_metrics(record)
    now = int(1000 * time.time())
    items = list(params.items())
    for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + 100]])
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    client.log_artifact(run_id, str(path))
    figure = confusion_matrices({record["model"]: record}, ncols=1)
    try:
        client.log_figure(run_id, figure, "confusion.png")
    finally:
        plt.close(figure)  # never shown in the chapter's cell
    client.set_terminated(run_id)
    client.set_terminated(parent)  # the parent ends with its latest record
    return run_id

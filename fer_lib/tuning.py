"""Hyper-parameter search with keras-tuner, for any model the training module can fit.

:func:`grid_search` runs keras-tuner's ``GridSearch`` over training hyper-parameters (the fields of
:class:`~fer_lib.training.TrainConfig`: batch size, learning rate, weight decay, momentum, ...) as the
3DFER study's grid did. Trials are kept in ``cache/tuning/<name>-<digest>/`` so an interrupted search
resumes and a rerun reads the finished grid. The objective is a validation metric, never the test split.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, fields
from typing import Any, Callable

import pandas as pd

from .paths import repo_root
from .training import TrainConfig, array_digest, compile_model


def _hypermodel(build: Callable[[], Any], grid: dict[str, list], base: TrainConfig):
    import keras_tuner as kt

    class TrainingGrid(kt.HyperModel):
        """Builds the model and trains it with the trial's TrainConfig (batch size is a fit argument)."""

        def config(self, hp) -> TrainConfig:
            return base.with_(**{name: hp.Choice(name, values) for name, values in grid.items()})

        def build(self, hp):
            return compile_model(build(), self.config(hp))

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, batch_size=self.config(hp).batch_size, **kwargs)

    return TrainingGrid()


def grid_search(
    build: Callable[[], Any],
    grid: dict[str, list],
    x_train, y_train, x_val, y_val,
    base: TrainConfig,
    *,
    name: str,
    epochs: int,
    objective: str = "val_accuracy",
    options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    verbose: int = 0,
) -> tuple[pd.DataFrame, TrainConfig]:
    """Every combination of ``grid`` (TrainConfig field -> values), ``epochs`` each.

    Trials live in ``cache_dir`` (default ``<book>/cache/tuning``). Returns one row per trial (its values, best ``objective`` over its epochs, seconds) sorted best
    first, and the base configuration with the best trial's values.
    """
    import keras
    import keras_tuner as kt

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ValueError(f"grid names {unknown} are not TrainConfig fields; use some of {sorted(known)}")
    if not grid or any(not values for values in grid.values()):
        raise ValueError(f"every grid entry needs at least one value, got {grid}")
    key = hashlib.sha256(json.dumps(
        [name, grid, asdict(base), epochs, objective, options or {}, array_digest(x_train, y_train, x_val, y_val)],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    keras.utils.set_random_seed(base.seed)
    tuner = kt.GridSearch(
        _hypermodel(build, grid, base), objective=objective, seed=base.seed,
        directory=str(cache_dir or repo_root() / "cache" / "tuning"), project_name=f"{name}-{key}", overwrite=False,
    )
    started = time.perf_counter()
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, verbose=verbose)
    search_seconds = time.perf_counter() - started
    direction = tuner.oracle.objective.direction
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.score is None:
            continue
        row = {name: trial.hyperparameters.get(name) for name in grid}
        row[objective] = trial.metrics.get_best_value(objective)
        for metric in ("val_loss", "val_accuracy"):
            if metric != objective and trial.metrics.exists(metric):
                row[metric] = trial.metrics.get_best_value(metric)
        rows.append(row)
    if not rows:
        raise RuntimeError(f"grid search {name!r} finished no trial; see the keras-tuner log above")
    table = pd.DataFrame(rows).sort_values(objective, ascending=(direction == "min"), ignore_index=True)
    table.attrs["search_seconds"] = search_seconds  # this call's time; 0-ish when read from the cache
    best = base.with_(**{name: _native(table[name].iloc[0]) for name in grid})  # per column: keeps ints
    return table, best


def _native(value):
    """numpy scalars from the table back to Python numbers (TrainConfig is JSON-serialised)."""
    return value.item() if hasattr(value, "item") else value

"""Hyper-parameter search with keras-tuner, for any model the training module can fit.

:func:`grid_search` runs keras-tuner's ``GridSearch`` over training hyper-parameters (the fields of
:class:`~fer_lib.training.TrainConfig`: batch size, learning rate, weight decay, momentum, ...) as the
3DFER study's grid did. :func:`random_search` runs ``RandomSearch`` over ranges of training
hyper-parameters *and* model options (units, activation, L2, ...) as the LSTM study did. Trials are kept in ``cache/tuning/<name>-<digest>/`` so an interrupted search
resumes and a rerun reads the finished grid. The objective is a validation metric, never the test split.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import fields
from typing import Any, Callable

import pandas as pd

from . import progress
from .paths import repo_root
from .training import TrainConfig, array_digest, compile_model, config_key


TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def hyperparameter(hp, name: str, spec):
    """One keras-tuner hyper-parameter from a params entry: a list is a ``Choice``; ``{min, max}`` is an
    ``Int`` when both are integers (``step``), else a ``Float`` (``sampling: log`` for ranges spanning
    decades)."""
    if isinstance(spec, (list, tuple)):
        return hp.Choice(name, list(spec))
    if not isinstance(spec, dict) or not {"min", "max"} <= set(spec):
        raise ValueError(f"hyper-parameter {name!r}: give a list of values or {{min, max[, step, sampling]}}, got {spec!r}")
    if isinstance(spec["min"], int) and isinstance(spec["max"], int):
        return hp.Int(name, spec["min"], spec["max"], step=spec.get("step", 1))
    return hp.Float(name, float(spec["min"]), float(spec["max"]), sampling=spec.get("sampling", "linear"))


def _hypermodel(build: Callable[[dict[str, Any]], Any], space: dict[str, Any], base: TrainConfig):
    """Builds the model with the trial's model options and trains it with the trial's TrainConfig
    (``space`` names that are TrainConfig fields; batch size is a fit argument)."""
    import keras_tuner as kt

    class SearchModel(kt.HyperModel):
        def values(self, hp) -> dict[str, Any]:
            return {name: hyperparameter(hp, name, spec) for name, spec in space.items()}

        def config(self, hp) -> TrainConfig:
            return base.with_(**{k: v for k, v in self.values(hp).items() if k in TRAIN_FIELDS})

        def build(self, hp):
            options = {k: v for k, v in self.values(hp).items() if k not in TRAIN_FIELDS}
            return compile_model(build(options), self.config(hp))

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, batch_size=self.config(hp).batch_size, **kwargs)

    return SearchModel()


def _search(tuner, total: int, *fit_args, **fit_kwargs) -> None:
    """``tuner.search`` with a bar over its trials on the terminal, noting how many it ran (the rest were
    read back from ``cache/tuning``)."""
    finished = sum(1 for trial in tuner.oracle.trials.values() if trial.score is not None)
    ran = 0
    with progress.bar(total=total, initial=finished, desc=tuner.project_name, unit="trial") as shown:
        trial_ended = tuner.on_trial_end

        def on_trial_end(trial):  # keras-tuner's hook after every trial it runs
            nonlocal ran
            trial_ended(trial)
            ran += 1
            shown.update(1)

        tuner.on_trial_end = on_trial_end
        try:
            tuner.search(*fit_args, **fit_kwargs)
        finally:
            del tuner.on_trial_end
    progress.note("trial", computed=True, count=ran)
    progress.note("trial", computed=False, count=finished)


def _trial_table(tuner, names, objective: str) -> pd.DataFrame:
    """One row per finished trial: its values, best ``objective`` (and val loss / accuracy), best first."""
    rows = []
    for trial_id, trial in tuner.oracle.trials.items():
        if trial.score is None:
            continue
        row = {"trial": trial_id, **{name: trial.hyperparameters.get(name) for name in names}}
        row[objective] = trial.metrics.get_best_value(objective)
        for metric in ("val_loss", "val_accuracy"):
            if metric != objective and trial.metrics.exists(metric):
                row[metric] = trial.metrics.get_best_value(metric)
        rows.append(row)
    if not rows:
        raise RuntimeError(f"search {tuner.project_name!r} finished no trial; see the keras-tuner log above")
    return pd.DataFrame(rows).sort_values(objective, ascending=tuner.oracle.objective.direction == "min",
                                          ignore_index=True)


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

    unknown = sorted(set(grid) - TRAIN_FIELDS)
    if unknown:
        raise ValueError(f"grid names {unknown} are not TrainConfig fields; use some of {sorted(TRAIN_FIELDS)}")
    if not grid or any(not values for values in grid.values()):
        raise ValueError(f"every grid entry needs at least one value, got {grid}")
    key = hashlib.sha256(json.dumps(
        [name, grid, config_key(base), epochs, objective, options or {}, array_digest(x_train, y_train, x_val, y_val)],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    keras.utils.set_random_seed(base.seed)
    tuner = kt.GridSearch(
        _hypermodel(lambda _options: build(), grid, base), objective=objective, seed=base.seed,
        directory=str(cache_dir or repo_root() / "cache" / "tuning"), project_name=f"{name}-{key}", overwrite=False,
    )
    started = time.perf_counter()
    _search(tuner, math.prod(len(values) for values in grid.values()),
            x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, verbose=verbose)
    table = _trial_table(tuner, grid, objective).drop(columns="trial")
    table.attrs["search_seconds"] = time.perf_counter() - started  # this call's time; 0-ish when read from the cache
    best = base.with_(**{name: _native(table[name].iloc[0]) for name in grid})  # per column: keeps ints
    return table, best


def random_search(
    build: Callable[[dict[str, Any]], Any],
    space: dict[str, Any],
    x_train, y_train, x_val, y_val,
    base: TrainConfig,
    *,
    name: str,
    max_trials: int,
    epochs: int,
    patience: int | None = None,
    objective: str = "val_accuracy",
    options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    verbose: int = 0,
) -> tuple[pd.DataFrame, TrainConfig, dict[str, Any]]:
    """keras-tuner ``RandomSearch``: ``max_trials`` draws from ``space`` (name -> spec, see
    :func:`hyperparameter`), each trained up to ``epochs`` (early-stopped on validation loss after
    ``patience`` epochs without improvement, when given).

    Names that are TrainConfig fields set training; the others are passed to ``build(options)``, merged
    over ``options``. Trials live in ``cache_dir`` (default ``<book>/cache/tuning``), so an interrupted
    search resumes. Returns the trial table (best first), the best trial's TrainConfig and its model options.
    """
    import keras
    import keras_tuner as kt

    fixed = dict(options or {})
    key = hashlib.sha256(json.dumps(
        [name, space, config_key(base), max_trials, epochs, patience, objective, fixed,
         array_digest(x_train, y_train, x_val, y_val)], sort_keys=True, default=str).encode()).hexdigest()[:16]
    keras.utils.set_random_seed(base.seed)
    tuner = kt.RandomSearch(
        _hypermodel(lambda drawn: build({**fixed, **drawn}), space, base), objective=objective,
        max_trials=max_trials, seed=base.seed, directory=str(cache_dir or repo_root() / "cache" / "tuning"),
        project_name=f"{name}-{key}", overwrite=False,
    )
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)] if patience else []
    started = time.perf_counter()
    _search(tuner, max_trials, x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, callbacks=callbacks,
            verbose=verbose)
    table = _trial_table(tuner, space, objective)
    table.attrs["search_seconds"] = time.perf_counter() - started  # this call's time; 0-ish when read from the cache
    values = {name: _native(table[name].iloc[0]) for name in space}
    best_config = base.with_(**{k: v for k, v in values.items() if k in TRAIN_FIELDS})
    return table, best_config, {**fixed, **{k: v for k, v in values.items() if k not in TRAIN_FIELDS}}


def _native(value):
    """numpy scalars from the table back to Python numbers (TrainConfig is JSON-serialised)."""
    return value.item() if hasattr(value, "item") else value

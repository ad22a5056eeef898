"""Hyper-parameter search with keras-tuner, for any model the training module can fit.

:func:`grid_search` runs keras-tuner's ``GridSearch`` over training hyper-parameters (the fields of
:class:`~fer_lib.training.TrainConfig`: batch size, learning rate, weight decay, momentum, ...) as the
3DFER study's grid did. :func:`random_search` runs ``RandomSearch`` over ranges of training
hyper-parameters *and* model options (units, activation, L2, ...) as the LSTM study did. Trials are kept in ``cache/tuning/<name>-<digest>/`` so an interrupted search
resumes and a rerun reads the finished grid. The objective is a validation metric, never the test split.

A chapter's search also runs on several processes or machines with keras-tuner's distributed mode:
``python -m fer_lib.tuning chief --chapter 07 --profile full`` serves the oracle (:func:`serve`) in the
chapter's own trial folder, and ``python -m fer_lib.tuning worker --chapter 07 --profile full --oracle
HOST:PORT --worker-id N`` runs trials (:func:`work`) until the search is done; the chapter then reads the
finished trials. :class:`Search` holds a search call as data, so all three build the same tuner.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import progress
from .paths import repo_root, written_atomically
from .training import TrainConfig, array_digest, array_fingerprint, compile_model, config_key, same_data


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
    """One row per finished trial: its values, best ``objective`` (and val loss / accuracy), best first;
    tied trials in the order they were created. keras-tuner reloads trials in the file system's order (and
    a chief records them as workers finish), so without that a rerun could pick another best among ties,
    and every model trained with the best values would miss its cache."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):  # ids are zero-padded: creation order
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
                                          kind="stable", ignore_index=True)


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
    store: str | os.PathLike | None = None,
    verbose: int = 0,
) -> tuple[pd.DataFrame, TrainConfig]:
    """Every combination of ``grid`` (TrainConfig field -> values), ``epochs`` each.

    Trials live in ``cache_dir`` (default ``<book>/cache/tuning``). Returns one row per trial (its values, best ``objective`` over its epochs, seconds) sorted best
    first, and the base configuration with the best trial's values.
    """
    _refuse_distributed_env()
    return _run_here(_grid_tuner(build, grid, x_train, y_train, x_val, y_val, base, name=name, epochs=epochs,
                                 objective=objective, options=options, cache_dir=cache_dir, store=store, verbose=verbose))


def _run_here(prepared: "_Prepared"):
    """Run a prepared search in this process (the chapters' way) and return its function's result."""
    started = time.perf_counter()
    try:
        _search(prepared.tuner, prepared.total, *prepared.fit_args, **prepared.fit_kwargs)
    finally:  # an interrupted search keeps the trials it finished
        keep_trials(prepared.store, Path(prepared.tuner.project_dir))
    return prepared.finish(prepared.tuner, started)


def _trial_files(project: Path) -> list[Path]:
    """A search folder's state, relative to it, without the trials' weights: the oracle's and the tuner's
    files and each trial's record (values, metrics, status) and build config. Enough for keras-tuner to
    reload a search and skip its finished trials; the chapters retrain the best values with training.fit."""
    names = [Path(n) for n in ("oracle.json", "tuner0.json", "search.json") if (project / n).is_file()]
    return names + sorted(p.relative_to(project) for pattern in ("trial_*/trial.json", "trial_*/build_config.json")
                          for p in project.glob(pattern))


def keep_trials(store, project: Path) -> None:
    """Copy a search folder's :func:`_trial_files` (a few kB a trial) into ``<store>/<project name>/``, each
    written to a temporary name and renamed. Nothing when ``store`` is None."""
    if store is None or not project.is_dir():
        return
    import shutil

    for name in _trial_files(project):
        target = Path(store) / project.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(target) as temporary:
            shutil.copyfile(project / name, temporary)


def restore_trials(store, project: Path, kept: Path | None = None) -> None:
    """Before a tuner opens ``project``: on a machine that lacks it (no ``oracle.json``), the trials kept in
    ``<store>/<project name>/`` by :func:`keep_trials` (or in ``kept``, a twin: :func:`_stored_twin`), so the
    search reloads them instead of running them."""
    kept = kept or (Path(store) / project.name if store is not None else None)
    if kept is None or not (kept / "oracle.json").is_file() or (project / "oracle.json").is_file():
        return
    import shutil

    for name in _trial_files(kept):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(project / name) as temporary:
            shutil.copyfile(kept / name, temporary)


@dataclass
class _Prepared:
    """A constructed tuner with what its ``search`` takes, and how its finished trials become the search
    function's result; shared by the chapters' in-process searches and the chief / workers below."""
    tuner: Any
    total: int
    fit_args: tuple
    fit_kwargs: dict
    finish: Callable[[Any, float], tuple]
    store: str | os.PathLike | None = None  # a committed folder keeping the finished trials (keep_trials)


def _search_key(what: list, x_train, y_train, x_val, y_val) -> tuple[str, dict[str, Any]]:
    """A search's project key — ``what`` defines it (name, space, training, …) and the arrays' exact digest —
    and its ``search.json``: the digest of ``what`` alone and the arrays' fingerprint
    (:func:`fer_lib.training.array_fingerprint`), by which another CPU's rounding of the same arrays finds it."""
    key = hashlib.sha256(json.dumps([*what, array_digest(x_train, y_train, x_val, y_val)], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    search = {"what": hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16],
              "fingerprint": json.loads(json.dumps(array_fingerprint(x_train, y_train, x_val, y_val)))}
    return key, search


def _stored_twin(store, name: str, search: dict[str, Any]) -> Path | None:
    """A kept search of the same ``what`` whose arrays differ from these only in float round-off
    (:func:`fer_lib.training.same_data`); the one with most trials when several."""
    prefix = f"{name}-"
    twins = [kept for kept in sorted(Path(store).glob(prefix + "*")) if len(kept.name) == len(prefix) + 16
             and (kept / "oracle.json").is_file() and (kept / "search.json").is_file()
             and (theirs := json.loads((kept / "search.json").read_text()))["what"] == search["what"]
             and same_data(theirs["fingerprint"], search["fingerprint"])]
    return max(twins, key=lambda kept: len(list(kept.glob("trial_*"))), default=None)


def _project(cache_dir, store, name: str, key: str, search: dict[str, Any]) -> Path:
    """The tuners' folder (``cache_dir``, default ``<book>/cache/tuning``) after its project ``<name>-<key>``
    got back the trials a store keeps (:func:`restore_trials`) — under this key, or a twin's — and its
    ``search.json`` (:func:`_search_key`)."""
    directory = Path(cache_dir or repo_root() / "cache" / "tuning")
    project = directory / f"{name}-{key}"
    twin = None
    if store is not None and not (Path(store) / project.name / "oracle.json").is_file() \
            and not (project / "oracle.json").is_file():
        twin = _stored_twin(store, name, search)
    if twin is not None:
        print(f"{project.name}: reloading the trials of {twin.name} from the store, the same search on arrays that "
              "differ from these only in float round-off (training.same_data)", flush=True)
    restore_trials(store, project, kept=twin)
    project.mkdir(parents=True, exist_ok=True)
    (project / "search.json").write_text(json.dumps(search, sort_keys=True, indent=1))
    return directory


def _grid_tuner(build, grid, x_train, y_train, x_val, y_val, base, *, name, epochs, objective="val_accuracy",
                options=None, cache_dir=None, store=None, verbose=0) -> _Prepared:
    import keras
    import keras_tuner as kt

    unknown = sorted(set(grid) - TRAIN_FIELDS)
    if unknown:
        raise ValueError(f"grid names {unknown} are not TrainConfig fields; use some of {sorted(TRAIN_FIELDS)}")
    if not grid or any(not values for values in grid.values()):
        raise ValueError(f"every grid entry needs at least one value, got {grid}")
    key, search = _search_key([name, grid, config_key(base), epochs, objective, options or {}],
                              x_train, y_train, x_val, y_val)
    keras.utils.set_random_seed(base.seed)
    directory = _project(cache_dir, store, name, key, search)
    tuner = kt.GridSearch(
        _hypermodel(lambda _options: build(), grid, base), objective=objective, seed=base.seed,
        directory=str(directory), project_name=f"{name}-{key}", overwrite=False,
    )

    def finish(tuner, started):
        table = _trial_table(tuner, grid, objective).drop(columns="trial")
        table.attrs["search_seconds"] = time.perf_counter() - started  # this call's time; 0-ish when read from the cache
        best = base.with_(**{name: _native(table[name].iloc[0]) for name in grid})  # per column: keeps ints
        return table, best

    return _Prepared(tuner, math.prod(len(values) for values in grid.values()), (x_train, y_train),
                     dict(validation_data=(x_val, y_val), epochs=epochs, verbose=verbose), finish, store)


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
    store: str | os.PathLike | None = None,
    verbose: int = 0,
) -> tuple[pd.DataFrame, TrainConfig, dict[str, Any]]:
    """keras-tuner ``RandomSearch``: ``max_trials`` draws from ``space`` (name -> spec, see
    :func:`hyperparameter`), each trained up to ``epochs`` (early-stopped on validation loss after
    ``patience`` epochs without improvement, when given).

    Names that are TrainConfig fields set training; the others are passed to ``build(options)``, merged
    over ``options``. Trials live in ``cache_dir`` (default ``<book>/cache/tuning``), so an interrupted
    search resumes. Returns the trial table (best first), the best trial's TrainConfig and its model options.
    """
    _refuse_distributed_env()
    return _run_here(_random_tuner(build, space, x_train, y_train, x_val, y_val, base, name=name, max_trials=max_trials,
                                   epochs=epochs, patience=patience, objective=objective, options=options,
                                   cache_dir=cache_dir, store=store, verbose=verbose))


def _random_tuner(build, space, x_train, y_train, x_val, y_val, base, *, name, max_trials, epochs, patience=None,
                  objective="val_accuracy", options=None, cache_dir=None, store=None, verbose=0) -> _Prepared:
    import keras
    import keras_tuner as kt

    fixed = dict(options or {})
    key, search = _search_key([name, space, config_key(base), max_trials, epochs, patience, objective, fixed],
                              x_train, y_train, x_val, y_val)
    keras.utils.set_random_seed(base.seed)
    directory = _project(cache_dir, store, name, key, search)
    tuner = kt.RandomSearch(
        _hypermodel(lambda drawn: build({**fixed, **drawn}), space, base), objective=objective,
        max_trials=max_trials, seed=base.seed, directory=str(directory),
        project_name=f"{name}-{key}", overwrite=False,
    )
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)] if patience else []

    def finish(tuner, started):
        table = _trial_table(tuner, space, objective)
        table.attrs["search_seconds"] = time.perf_counter() - started  # this call's time; 0-ish when read from the cache
        values = {name: _native(table[name].iloc[0]) for name in space}
        best_config = base.with_(**{k: v for k, v in values.items() if k in TRAIN_FIELDS})
        return table, best_config, {**fixed, **{k: v for k, v in values.items() if k not in TRAIN_FIELDS}}

    return _Prepared(tuner, max_trials, (x_train, y_train),
                     dict(validation_data=(x_val, y_val), epochs=epochs, callbacks=callbacks, verbose=verbose), finish,
                     store)


def _native(value):
    """numpy scalars from the table back to Python numbers (TrainConfig is JSON-serialised)."""
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------------------------------
# Scaling out: keras-tuner's distributed mode (a chief serving the oracle, workers running trials)

#: keras-tuner's own switches for its distributed mode (``keras_tuner/src/distribute/utils.py``).
KT_TUNER_ID, KT_ORACLE_IP, KT_ORACLE_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"


def _refuse_distributed_env() -> None:
    """A chapter's search runs in its own process. With keras-tuner's variables set it would silently turn
    into a chief (blocking, keeping its state where the chapter never looks) or a worker (no table)."""
    if os.environ.get(KT_ORACLE_IP):
        raise RuntimeError(
            f"${KT_ORACLE_IP} is set ({os.environ[KT_ORACLE_IP]!r}): keras-tuner would make this search a distributed "
            f"chief or worker. Unset {KT_TUNER_ID}, {KT_ORACLE_IP} and {KT_ORACLE_PORT} in this process, and run "
            "the chief and workers with `python -m fer_lib.tuning chief|worker` (README, 'Scaling out').")


@dataclass(frozen=True)
class Search:
    """One search call as data — :func:`random_search` (``kind="random"``) or :func:`grid_search` with its
    arguments — so that a chapter (:meth:`run`), a chief (:func:`serve`) and workers (:func:`work`) build
    the very same tuner: the same project folder under ``cache/tuning``, hence the same trials."""
    kind: str
    args: tuple
    kwargs: dict

    def __post_init__(self):
        if self.kind not in _SEARCH_KINDS:
            raise ValueError(f"search kind {self.kind!r}: use one of {sorted(_SEARCH_KINDS)}")

    def run(self):
        """The search in this process, as the chapter runs it: the functions' own result."""
        return _SEARCH_KINDS[self.kind][0](*self.args, **self.kwargs)

    def prepare(self) -> _Prepared:
        return _SEARCH_KINDS[self.kind][1](*self.args, **self.kwargs)


_SEARCH_KINDS = {"random": (random_search, _random_tuner), "grid": (grid_search, _grid_tuner)}


# The chapters' searches. Each chapter should call these (see the README's 'Scaling out'), so that the
# command line's chief and workers compute exactly the chapter's data, space and folder.

@dataclass
class LSTMStudyInputs:
    """Chapter 7's data up to its search: the profile's FER2013 and MediaPipe's features of it, the
    augmented Training copies, the study's three-class protocol over both, the relevance rule's table,
    the kept columns, and the blendshape arrays per split (kept ones, and all 52)."""
    faces: Any
    features: Any
    copies: Any
    copy_features: Any
    study: Any
    study_copies: Any
    study_features: Any
    classes: list
    train_scores: Any
    relevance: pd.DataFrame
    columns: Any
    kept: Any
    all52: Any


def lstm_study_inputs(P) -> LSTMStudyInputs:
    """Chapter 7 (``07_blendshapes``): the study's protocol on the profile's FER2013 (extractions read
    back from ``cache/face_mesh``), as the chapter's first cells compute it."""
    import numpy as np

    from . import blendshapes, face_mesh
    from .data import TRAIN, concatenate, lstm_study_three_classes
    from .face_mesh import FaceMeshFeatures

    faces, features = face_mesh.for_chapter(P)
    copies, copy_features = blendshapes.training_copies(faces, P)
    # the study's target; ``training_caps: study`` also applies its Training caps
    originals = (lstm_study_three_classes(faces, seed=P.seed) if P.training_caps == "study"
                 else faces.relabel("happy_sad_unknown"))
    kept_copies = np.isin(copies.ids, [f"{i}~aug" for i in originals.ids[originals.split == TRAIN]])
    study_copies = copies.subset(kept_copies).relabel("happy_sad_unknown")
    study = concatenate([originals, study_copies], name="fer2013-lstm-study")
    study_features = FaceMeshFeatures.concatenate([features.for_dataset(originals), copy_features.for_dataset(study_copies)])
    R = P.relevance
    train_scores = study_features.blendshapes[(study.split == TRAIN) & study_features.detected]
    relevance = blendshapes.relevance(train_scores, study_features.blendshape_names, R["threshold"], R["min_images"])
    columns = blendshapes.kept_columns(relevance)
    return LSTMStudyInputs(faces, features, copies, copy_features, study, study_copies, study_features,
                           study.class_names, train_scores, relevance, columns,
                           blendshapes.split_arrays(study_features, study, columns),
                           blendshapes.split_arrays(study_features, study))


def search_store(P) -> Path | None:
    """Where a profile keeps its chapters' finished trials: ``tuning/`` in its model store
    (:func:`fer_lib.training.model_store`), or None."""
    from .training import model_store

    store = model_store(P)
    return store / "tuning" if store is not None else None


def lstm_study_search(P, inputs: LSTMStudyInputs) -> Search:
    """Chapter 7's random search of the study's LSTM (``search`` in the profile) on the kept blendshapes."""
    from . import blendshapes
    from .data import TRAIN, VAL

    S, kept = P.search, inputs.kept
    n_classes, n_features = len(inputs.classes), len(inputs.columns)
    base = TrainConfig.from_params(P.training, seed=P.seed)
    return Search("random", (
        lambda options: blendshapes.build("study_lstm", n_classes, n_features, seed=P.seed, **options), S["space"],
        kept.x[TRAIN], kept.y[TRAIN], kept.x[VAL], kept.y[VAL], base.with_(epochs=S["epochs"])),
        dict(name="07_blendshapes-lstm", max_trials=S["max_trials"], epochs=S["epochs"], patience=S["patience"],
             options=S.get("options") or {}, store=search_store(P)))


def rq1_chosen_input(profile: str) -> str:
    """The input chapter 3's ablation chose (best mean PublicTest accuracy, rounded as the chapter's
    summary table), read from the table the chapter writes before its grid search."""
    from .paths import results_dir

    path = results_dir(profile) / "03_rq1_2d__ablation.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: chapter 03's grid search trains on the input its ablation chose. Execute chapter 03 "
            "once (it writes that table before its search), or name the input: --input raw|preprocessed.")
    return pd.read_csv(path).groupby("input")["PublicTest accuracy"].mean().round(4).idxmax()


def rq1_grid_search(P, rq1=None, chosen_input: str | None = None) -> Search:
    """Chapter 3's grid search (``tuning`` in the profile): the study CNN on a class-capped Training subset
    of ``chosen_input`` (default: the ablation's choice, :func:`rq1_chosen_input`), ranked on PublicTest."""
    from . import pixels
    from .data import TRAIN, VAL

    rq1 = rq1 or pixels.rq1_inputs(P)
    chosen_input = chosen_input or rq1_chosen_input(P.profile)
    if chosen_input not in rq1.inputs:
        raise ValueError(f"chapter 03 input {chosen_input!r}: choose one of {sorted(rq1.inputs)}")
    T, split, faces = P.tuning, rq1.split, rq1.faces
    train = (split[TRAIN] if T["train_per_class"] is None
             else split[TRAIN][faces.subset(split[TRAIN]).stratified_indices(T["train_per_class"], P.seed)])
    x, y, n_classes = rq1.inputs[chosen_input], faces.labels, len(faces.class_names)
    return Search("grid", (
        lambda: pixels.build(T["model"], n_classes, augmentation=P.augmentation, seed=P.seed), T["grid"],
        x[train], y[train], x[split[VAL]], y[split[VAL]], TrainConfig.from_params(P.training, seed=P.seed)),
        dict(name=f"rq1-grid-{chosen_input}", epochs=T["epochs"], options={"model": T["model"], "augmentation": P.augmentation},
             store=search_store(P)))


def _chapter_07(profile: str, data_dir=None) -> Search:
    from .params import load_params

    P = load_params(profile, chapter="07_blendshapes", data_dir=data_dir)
    return lstm_study_search(P, lstm_study_inputs(P))


def _chapter_03(profile: str, data_dir=None, input: str | None = None) -> Search:
    from .params import load_params

    return rq1_grid_search(load_params(profile, chapter="03_rq1_2d", data_dir=data_dir), chosen_input=input)


#: The chapters that tune with keras-tuner, and the function giving each one's search.
CHAPTER_SEARCHES: dict[str, Callable[..., Search]] = {"03_rq1_2d": _chapter_03, "07_blendshapes": _chapter_07}


def chapter_name(chapter: str) -> str:
    """A tuning chapter's full name from its name or number (``07`` or ``7``: ``07_blendshapes``)."""
    matches = [name for name in CHAPTER_SEARCHES if name == chapter or name.split("_")[0] == chapter.zfill(2)]
    if len(matches) != 1:
        raise KeyError(f"chapter {chapter!r} has no keras-tuner search; choose one of {sorted(CHAPTER_SEARCHES)} "
                       "(chapter 09 searches with Optuna: python -m fer_lib.video search)")
    return matches[0]


def chapter_search(chapter: str, profile: str, data_dir=None, **options) -> Search:
    """The search of ``chapter`` (its full name or its number) under ``profile``; ``options``: the
    chapter's own (chapter 03: ``input``)."""
    return CHAPTER_SEARCHES[chapter_name(chapter)](profile, data_dir, **options)


def _search_finished(oracle, total: int) -> bool:
    """All ``total`` trials of a search have ended (what a rerun reads back without training)."""
    from keras_tuner.src.engine.trial import TrialStatus

    return (len(oracle.trials) >= total
            and all(trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED) for trial in oracle.trials.values()))


def serve(search: Search, host: str = "localhost", port: int = 8000, *, poll_s: float = 0.5,
          announce: Callable[[str], None] = print):
    """Be keras-tuner's chief: serve ``search``'s oracle on ``host:port`` (port 0: a free one, announced)
    until the oracle has told every worker that asked for a trial that the search is done and no trial is
    running, then return the search function's result (the chapter's table) read from the finished trials.

    The tuner is the chapter's own (same folder, same state file, ``tuner0.json``), so a later run of the
    chapter reads these trials instead of training them, and a chief restarted on an interrupted search
    resumes it (trials that were running are handed out again). This is keras-tuner's ``search()`` on a
    chief (its servicer, its stopping rule) with two changes: a bind failure names the fix, and the stopping
    rule is checked every ``poll_s`` seconds instead of every 20 s. An already finished search returns at once.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    _refuse_distributed_env()  # the chief's tuner is the chapter's: keras-tuner's variables must not shape it
    prepared = search.prepare()
    tuner, oracle = prepared.tuner, prepared.tuner.oracle
    started = time.perf_counter()
    if _search_finished(oracle, prepared.total):
        announce(f"{tuner.project_name}: all {len(oracle.trials)} trials finished already ({tuner.project_dir})")
        return prepared.finish(tuner, started)
    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # one thread, as keras-tuner's chief
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise OSError(f"the chief cannot serve on {host}:{port} ({error}): the port is in use, or {host} is not an "
                      "address of this machine. Pass another --oracle host:port (0.0.0.0:PORT serves every "
                      "interface).") from None
    server.start()
    try:
        announce(f"oracle of {tuner.project_name} serving on {host}:{bound} "
                 f"({len(oracle.trials)} trials in {tuner.project_dir}); start workers with: "
                 f"python -m fer_lib.tuning worker --oracle <this host>:{bound} --worker-id N ...")
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_s)
    finally:
        server.stop(grace=None).wait()  # finish shutting down here, not at interpreter exit
    tuner.save()
    result = prepared.finish(tuner, started)
    announce(f"search done: {len(result[0])} finished trials in {tuner.project_dir}")
    return result


def _space(hyperparameters) -> dict:
    """A space's hyper-parameters as compared between a worker and its chief: both as they come out of
    keras-tuner's protocol (which fills in defaults, e.g. an ``Int``'s to its minimum)."""
    return {hp.name: hp.get_config() for hp in type(hyperparameters).from_proto(hyperparameters.to_proto()).space}


def work(search: Search, host: str, port: int, tuner_id: str, *, announce: Callable[[str], None] = print) -> list[str]:
    """Be a keras-tuner worker named ``tuner_id``: ask the chief at ``host:port`` for trials and run them
    until it says the search is done (it waits for a chief that is not up yet, up to keras-tuner's hour).
    Returns the ids of the trials this worker ran. A worker restarted with the same id gets back the trial
    it was running; two live workers must never share an id (the chief would hand both the same trials)."""
    if "chief" in tuner_id:
        raise ValueError(f"worker id {tuner_id!r}: keras-tuner takes any id containing 'chief' for the chief; "
                         "name workers worker0, worker1, ...")
    import keras_tuner as kt

    os.environ.update({KT_TUNER_ID: tuner_id, KT_ORACLE_IP: host, KT_ORACLE_PORT: str(port)})
    prepared = search.prepare()  # with the variables set, keras-tuner wraps the oracle in its gRPC client
    tuner = prepared.tuner
    declared = kt.HyperParameters()
    tuner.hypermodel.values(declared)  # this worker's space (a restarted worker's tuner reloads none)
    local, remote = _space(declared), _space(tuner.oracle.get_space())
    if local != remote:  # a worker on other params would add its names to the chief's space
        raise ValueError(f"worker {tuner_id}: this search space differs from the chief's on {host}:{port} "
                         f"(here {sorted(local)}, chief {sorted(remote)}); run the chief and every worker with the "
                         "same --chapter/--search, --profile and params/<profile>.yml")
    announce(f"worker {tuner_id} joined {tuner.project_name} at {host}:{port}")
    ran = []
    trial_ended = tuner.on_trial_end

    def on_trial_end(trial):
        trial_ended(trial)
        ran.append(trial.trial_id)
        announce(f"worker {tuner_id}: trial {trial.trial_id} {trial.status.lower()}")

    tuner.on_trial_end = on_trial_end
    tuner.search(*prepared.fit_args, **prepared.fit_kwargs)
    progress.note("trial", computed=True, count=len(ran))
    announce(f"worker {tuner_id} done: ran {len(ran)} trial(s): {json.dumps(ran)}")
    return ran


def _oracle_address(text: str | None) -> tuple[str, int]:
    """``host:port`` from ``--oracle``, else keras-tuner's variables, else localhost:8000."""
    if text is None:
        if os.environ.get(KT_ORACLE_IP):
            text = f"{os.environ[KT_ORACLE_IP]}:{os.environ.get(KT_ORACLE_PORT, '')}"
        else:
            return "localhost", 8000
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"oracle address {text!r}: give host:port, e.g. localhost:8000 or 0.0.0.0:8000 on the chief "
                         f"(or set ${KT_ORACLE_IP} and ${KT_ORACLE_PORT})")
    return host.strip("[]"), int(port)


def _custom_search(spec: str, profile: str, data_dir=None) -> Search:
    """``module:function`` returning a :class:`Search` from (profile, data_dir): a search of your own."""
    import importlib

    module, _, function = spec.partition(":")
    if not module or not function:
        raise ValueError(f"--search {spec!r}: give module:function, e.g. mypackage.searches:my_search")
    search = getattr(importlib.import_module(module), function)(profile, data_dir)
    if not isinstance(search, Search):
        raise TypeError(f"--search {spec}: returned {type(search).__name__}, not fer_lib.tuning.Search")
    return search


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fer_lib.tuning",
        description="A chapter's keras-tuner search on several processes or machines: one chief serves the "
                    "oracle, workers run the trials (README, 'Scaling out').")
    parser.add_argument("role", choices=("chief", "worker"))
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--chapter", help=f"the chapter whose search to run: {', '.join(CHAPTER_SEARCHES)} (or 03, 07)")
    which.add_argument("--search", help="module:function returning a fer_lib.tuning.Search (a search of your own)")
    parser.add_argument("--profile", default="sample", help="params/<profile>.yml (default sample)")
    parser.add_argument("--data-dir", help="data folder (default: the profile's data_dir, then $FER_DATA_DIR)")
    parser.add_argument("--oracle", help="host:port the chief serves on and workers call "
                                         f"(default ${KT_ORACLE_IP}:${KT_ORACLE_PORT}, else localhost:8000)")
    parser.add_argument("--worker-id", type=int, help="this worker's number, unique among live workers "
                                                      f"(default: ${KT_TUNER_ID})")
    parser.add_argument("--input", choices=("raw", "preprocessed"),
                        help="chapter 03 only: the grid's input (default: the one its ablation chose)")
    args = parser.parse_args(argv)
    try:
        host, port = _oracle_address(args.oracle)
        tuner_id = None
        if args.role == "worker":
            tuner_id = f"worker{args.worker_id}" if args.worker_id is not None else os.environ.get(KT_TUNER_ID)
            if not tuner_id or args.worker_id is not None and args.worker_id < 0:
                raise ValueError("give each worker its own --worker-id N (0, 1, ...): the chief hands a worker's "
                                 "unfinished trial back to the worker of that id, so workers sharing one would run "
                                 "the same trials")
            if port == 0:
                raise ValueError("a worker calls the chief's port: pass the one the chief announced, --oracle host:PORT")
        for name in (KT_TUNER_ID, KT_ORACLE_IP, KT_ORACLE_PORT):  # read above; the search sets what it needs
            os.environ.pop(name, None)
        if args.input and (args.search or chapter_name(args.chapter) != "03_rq1_2d"):
            raise ValueError("--input is chapter 03's option (its grid's input); drop it for other searches")
        search = (_custom_search(args.search, args.profile, args.data_dir) if args.search else
                  chapter_search(args.chapter, args.profile, args.data_dir,
                                 **({"input": args.input} if args.input else {})))
    except (ValueError, KeyError, FileNotFoundError, TypeError) as error:
        parser.error(str(error).strip("'\""))
    if args.role == "chief":
        table = serve(search, host, port, announce=lambda line: print(line, flush=True))[0]
        print(table.to_string(), flush=True)
    else:
        work(search, host, port, tuner_id, announce=lambda line: print(line, flush=True))
    # TensorFlow's object graph makes the interpreter's garbage collections at exit take 4-10 s per process;
    # nothing is left to collect, so exclude what exists from them (everything is written and flushed)
    gc.freeze()
    return 0


if __name__ == "__main__":
    import sys

    from fer_lib.tuning import main as _main  # the package's module, so Search is one class (not __main__'s)

    sys.exit(_main())

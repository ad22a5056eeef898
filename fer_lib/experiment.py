"""One experiment step for every representation chapter: train, predict, evaluate, record.

A chapter prepares its model inputs as :class:`SplitArrays` (Training / PublicTest / PrivateTest, with
the image ids and how many images each split had before an extractor lost some), then calls
:func:`train_and_evaluate` once per model. It fits with :func:`fer_lib.training.fit` (cache, resume,
time budget), predicts PublicTest and PrivateTest, evaluates PrivateTest with
:func:`fer_lib.results.evaluate`, and — unless it is an ablation run — writes the results record and
the per-image predictions. :func:`versus_2d` then answers the RQ2 questions: the best model of a
representation beside the best 2D model on exactly the same PrivateTest images.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import progress, results, training
from .data import TEST, TRAIN, VAL
from .paths import written_atomically


@dataclass
class SplitArrays:
    """Model inputs ``x``, labels ``y`` and image ``ids`` per split name, and ``n_split``: the images each
    split had before any were lost (a face the extractor missed counts against coverage)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    n_split: dict[str, int]

    @classmethod
    def from_indices(cls, inputs, dataset, index: dict[str, np.ndarray], n_split: dict[str, int] | None = None,
                     input_index: dict[str, np.ndarray] | None = None) -> "SplitArrays":
        """``inputs[input_index[split]]`` (default: ``index``) for the dataset's images ``index[split]``."""
        input_index = input_index or index
        return cls(x={s: inputs[input_index[s]] for s in index}, y={s: dataset.labels[i] for s, i in index.items()},
                   ids={s: np.asarray(dataset.ids)[i] for s, i in index.items()},
                   n_split=n_split or {s: len(i) for s, i in index.items()})

    @classmethod
    def for_found(cls, inputs, dataset, found, split_names=None) -> "SplitArrays":
        """``inputs`` (one row per image of ``dataset``) of the images an extractor ``found`` (a mask), per
        split (default: all of the dataset's); ``n_split`` keeps every image of a split, so coverage and
        misses-counted-wrong accuracy stay right."""
        split_names = split_names or dataset.splits
        index = {s: np.flatnonzero((dataset.split == s) & found) for s in split_names}
        return cls.from_indices(inputs, dataset, index, n_split={s: int((dataset.split == s).sum()) for s in split_names})

    def with_x(self, transform: Callable[[np.ndarray], np.ndarray]) -> "SplitArrays":
        """The same images and labels with every split's inputs transformed (e.g. landmarks → voxels)."""
        return SplitArrays({s: transform(x) for s, x in self.x.items()}, self.y, self.ids, self.n_split)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"images used": {s: len(y) for s, y in self.y.items()},
                             "images in split": self.n_split,
                             "coverage": {s: len(y) / max(1, self.n_split[s]) for s, y in self.y.items()}})


@dataclass
class Trained:
    record: dict[str, Any]
    fitted: training.FitResult | None   # None for an ensemble of trained models, or a scikit-learn model
    val_probabilities: np.ndarray
    test_probabilities: np.ndarray
    estimator: Any = None               # the fitted scikit-learn model of train_classical

    @property
    def row(self) -> dict[str, Any]:
        """One line of a chapter's results table."""
        r = self.record
        ci = r.get("accuracy_ci95")
        return {"model": r["model"], "PrivateTest accuracy": r["accuracy"],
                "95% CI": f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
                "accuracy, misses counted wrong": r["accuracy_all_faces"], "macro F1": r["macro_f1"],
                "AUC-ROC (OvR)": r["macro_auc_roc"], "PublicTest accuracy": r["val_accuracy"],
                "train min": r["train_seconds"] / 60, "epochs": r.get("epochs_run"), "stopped by": r.get("stopped_by"),
                "infer ms/image": r["infer_ms_per_image"], "parameters": r["n_params"]}


def train_and_evaluate(build: Callable[[], Any], data: SplitArrays, config: training.TrainConfig, *,
                       cache_name: str, options: dict[str, Any], class_names, record: dict[str, Any] | None,
                       x_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
                       n_boot: int = 1000, verbose: int = 2, log_path=None, store=None) -> Trained:
    """Fit ``build()`` on Training (or the given ``x_train``/``y_train``, e.g. a SMOTE-resampled or
    class-capped set), early-stop on PublicTest, evaluate PrivateTest.

    ``record``: the identifying fields of the results record (chapter, representation, model, dataset,
    label_set, profile, seed, extract_ms_per_image, plus any extra keys); the record and the per-image
    predictions are written. ``None`` for ablation runs: metrics only, nothing written. ``store``: a
    committed folder mirroring the fit (:func:`fer_lib.training.fit`), so it resumes or reloads on a fresh clone.
    """
    x_train = data.x[TRAIN] if x_train is None else x_train
    y_train = data.y[TRAIN] if y_train is None else y_train
    fitted = training.fit(build, x_train, y_train, data.x[VAL], data.y[VAL], config, name=cache_name,
                          options=options, verbose=verbose, log_path=log_path, store=store)
    val_probabilities, _ = training.predict(fitted.model, data.x[VAL])
    test_probabilities, infer_ms = training.predict(fitted.model, data.x[TEST])
    summary = {k: v for k, v in fitted.summary.items() if k in ("epochs_run", "best_epoch", "stopped_by", "device")}
    # "run": the model store's (and cache/models') folder of the fit, so the model can be found from its record
    extra = {"training": asdict(config), "n_train": int(len(y_train)), "run": fitted.stored_run or fitted.run_dir.name,
             **summary}
    timing = {"train_seconds": fitted.train_seconds, "infer_ms_per_image": infer_ms,
              "n_params": int(fitted.model.count_params()),
              # images through training per second (epochs × training set / time; validation passes included)
              "train_images_per_s": len(y_train) * fitted.epochs_run / fitted.train_seconds if fitted.train_seconds else None}
    return _evaluated(fitted, val_probabilities, test_probabilities, data, class_names, record, {**timing, **extra},
                      n_boot, config.seed)


def _evaluated(fitted, val_probabilities, test_probabilities, data: SplitArrays, class_names,
               record: dict[str, Any] | None, fields: dict[str, Any], n_boot: int, seed: int) -> Trained:
    """Evaluate PrivateTest, add the PublicTest accuracy and ``fields``; with ``record``, write the
    record and the per-image predictions."""
    metrics = results.evaluate(data.y[TEST], test_probabilities, class_names, n_split=data.n_split[TEST],
                               n_boot=n_boot, seed=seed)
    fields = {"val_accuracy": float((val_probabilities.argmax(1) == data.y[VAL]).mean()), **fields}
    if record is None:
        full = {**metrics, **fields}
    else:
        full = results.make_record(metrics, split=TEST, **fields, **record)
        results.write_record(full)
        results.write_predictions(full, data.ids[TEST], data.y[TEST], test_probabilities)
        results.write_predictions(full, data.ids[VAL], data.y[VAL], val_probabilities, split=results.SELECTION)
    return Trained(full, fitted, val_probabilities, test_probabilities)


def train_classical(estimator, data: SplitArrays, *, class_names, record: dict[str, Any] | None,
                    n_boot: int = 1000, seed: int = 0) -> Trained:
    """:func:`train_and_evaluate` for a scikit-learn classifier (fit on Training, no early stopping):
    same evaluation, record and predictions. Its ``n_params`` counts tree nodes for a forest."""
    import time

    started = time.perf_counter()
    estimator.fit(data.x[TRAIN], data.y[TRAIN])
    train_seconds = time.perf_counter() - started
    val_probabilities = estimator.predict_proba(data.x[VAL])
    started = time.perf_counter()
    test_probabilities = estimator.predict_proba(data.x[TEST])
    infer_ms = (time.perf_counter() - started) * 1000 / max(1, len(data.x[TEST]))
    n_params = sum(tree.tree_.node_count for tree in getattr(estimator, "estimators_", []))
    fields = {"train_seconds": train_seconds, "infer_ms_per_image": infer_ms, "n_params": int(n_params),
              "n_train": int(len(data.y[TRAIN])), "estimator": repr(estimator), "device": "CPU (scikit-learn)"}
    trained = _evaluated(None, val_probabilities, test_probabilities, data, class_names, record, fields, n_boot, seed)
    trained.estimator = estimator
    return trained


def best_record(profile: str, representation: str, label_set: str = "emotion7", dataset: str = "fer2013",
                split: str = TEST, single_models: bool = True) -> dict[str, Any]:
    """The recorded model of a representation (under ``label_set``, on ``dataset``'s ``split``) with the
    best PublicTest accuracy (selection never looks at PrivateTest). Cross-validated records (other
    datasets and splits) never compete with FER2013's. ``single_models``: leave out ensembles — their
    members were chosen on PublicTest, so their PublicTest accuracy is not a fair ground for choosing."""
    table = results.load_records(profile)
    rows = table[(table.representation == representation) & (table.label_set == label_set)
                 & (table.dataset == dataset) & (table.split == split)] if len(table) else table
    if single_models and "members" in rows:
        rows = rows[rows["members"].isna()]
    if not len(rows):
        raise FileNotFoundError(f"no {representation} records under {label_set} on {dataset} {split} in "
                                f"results/{profile}: run its chapter first")
    return rows.loc[rows.val_accuracy.idxmax()].to_dict()


def versus_2d(profile: str, name: str, ids, y_true, y_pred, n_split: int, n_boot: int = 2000,
              seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """The RQ2 answer: this representation's best model (``name``; its PrivateTest ``ids``, labels and
    predictions) beside the best 2D model (chapter 3, chosen on PublicTest).

    Returns a table — the 2D model on every PrivateTest image, the 2D model and this model on the
    images where this representation has a face, and this model with its misses counted wrong — and
    the paired comparison on the shared images (difference this − 2D, bootstrap CI, McNemar p).
    """
    best = best_record(profile, "pixels_2d")
    pixels = results.load_predictions(profile, best["chapter"], best["model"]).set_index("id")
    ids = np.asarray(ids).astype(str)
    missing = np.setdiff1d(ids, pixels.index)
    if len(missing):
        raise ValueError(f"{len(missing)} of these PrivateTest images have no 2D prediction (first: {missing[0]}); "
                         "run both chapters with the same profile")
    shared = pixels.loc[ids]
    if not np.array_equal(shared.y_true.to_numpy(), np.asarray(y_true)):
        raise ValueError("the 2D predictions disagree with these labels for the same image ids")
    paired = results.paired_difference(y_true, y_pred, shared.y_pred.to_numpy(), n_boot=n_boot, seed=seed)
    pixel_all = float((pixels.y_pred == pixels.y_true).mean())
    rows = [
        {"model": f"{best['model']} (2D)", "images": f"all PrivateTest ({len(pixels)})", "accuracy": pixel_all},
        {"model": f"{best['model']} (2D)", "images": f"where {name} has a face ({len(ids)})",
         "accuracy": paired["accuracy_b"]},
        {"model": name, "images": f"where {name} has a face ({len(ids)})", "accuracy": paired["accuracy_a"]},
        {"model": name, "images": f"all PrivateTest ({n_split}), misses counted wrong",
         "accuracy": paired["accuracy_a"] * len(ids) / n_split},
    ]
    return pd.DataFrame(rows), {"best_2d": best["model"], **paired}


def run_models(specs: dict[str, dict[str, Any]], *, build: Callable[[str, dict, int], Callable[[], Any]],
               inputs: dict[str, SplitArrays], base: training.TrainConfig, cache_prefix: str,
               record: dict[str, Any], class_names, x_train=None, y_train=None,
               ensemble: bool = False, log_path=None, store=None) -> dict[str, Trained]:
    """Train, evaluate and record every model of a chapter's ``models`` block (and, with ``ensemble``,
    the average of them all as one more model, ``"ensemble"``: see :func:`average_models`).

    A spec is ``{model: <builder name, default the label>, input: <key of inputs, default the only
    one>, options: {...}, training: {<TrainConfig fields that differ from base>}, time_budget_min:
    <minutes or null>}``; each label becomes a record's ``model``. ``build(model, options, seed)``
    returns the zero-argument builder ``fit`` calls. ``log_path``: a progress line per epoch there.
    ``store``: a committed folder mirroring every fit (see :func:`train_and_evaluate`).
    """
    runs = {}
    for label, spec in specs.items():
        model = spec.get("model", label)
        input_name = spec.get("input") or (next(iter(inputs)) if len(inputs) == 1 else None)
        if input_name not in inputs:
            raise KeyError(f"model {label!r}: input {spec.get('input')!r} is not one of {sorted(inputs)}")
        options = dict(spec.get("options") or {})
        minutes = spec.get("time_budget_min")
        config = base.with_(**(spec.get("training") or {}), time_budget_s=None if minutes is None else 60 * minutes)
        runs[label] = train_and_evaluate(
            build(model, options, base.seed), inputs[input_name], config,
            cache_name=f"{cache_prefix}-{label}-{input_name}", options={"model": model, "input": input_name, **options},
            class_names=class_names, x_train=x_train, y_train=y_train, verbose=0,  # the summary line follows
            record={**record, "model": label, "input": input_name, "options": options}, log_path=log_path, store=store)
        fitted = runs[label].fitted
        print(f"{label}: {fitted.summary}{' (read back: cache/models or the store)' if fitted.from_cache else ''}")
    if ensemble and len(runs) > 1:  # every input holds the same images: any gives the labels and ids
        runs["ensemble"] = average_models(runs, next(iter(inputs.values())), class_names,
                                          record={**record, "model": "ensemble"}, seed=base.seed)
    return runs


def average_models(runs: dict[str, Trained], data: SplitArrays, class_names, record: dict[str, Any] | None,
                   n_boot: int = 1000, seed: int = 0, weights: dict[str, float] | None = None) -> Trained:
    """The trained models of ``runs`` as one: their class probabilities averaged, with ``weights`` (default
    equal; e.g. from :func:`select_ensemble`) — no training. Its record sums the members' training time,
    inference time and parameters and names the members (and their weights)."""
    weights = {name: 1.0 for name in runs} if weights is None else {k: float(w) for k, w in weights.items() if w > 0}
    unknown = set(weights) - set(runs)
    if unknown or not weights:
        raise ValueError(f"ensemble weights name no run or unknown runs {sorted(unknown)}; runs: {sorted(runs)}")
    members = {name: runs[name] for name in weights}
    total = sum(weights.values())
    val = sum(weights[n] * run.val_probabilities for n, run in members.items()) / total
    test = sum(weights[n] * run.test_probabilities for n, run in members.items()) / total
    fields = {key: float(sum(run.record[key] for run in members.values())) for key in ("train_seconds", "infer_ms_per_image")}
    fields.update(n_params=int(sum(run.record["n_params"] for run in members.values())), members=list(members),
                  device=next(iter(members.values())).record.get("device"))
    if len(set(weights.values())) > 1:
        fields["member_weights"] = {name: round(w / total, 4) for name, w in weights.items()}
    return _evaluated(None, val, test, data, class_names, record, fields, n_boot, seed)


def select_ensemble(val_probabilities: dict[str, np.ndarray], y_val, rounds: int = 25) -> dict[str, float]:
    """Ensemble selection (Caruana et al., 2004) on the selection split only: starting from nothing, add
    — with replacement — the model whose addition gives the average with the lowest log-loss on
    ``y_val``, ``rounds`` times (a model that helps no more is simply not picked again). Returns each
    picked model's weight (picks / rounds). Log-loss rather than accuracy: it rewards calibrated
    probabilities and does not stall on ties."""
    y_val = np.asarray(y_val)
    names = list(val_probabilities)
    if not names:
        raise ValueError("no models to select an ensemble from")
    picks: list[str] = []
    total = np.zeros_like(next(iter(val_probabilities.values())), dtype=float)

    def log_loss(probabilities):
        return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y_val)), y_val], 1e-12, 1))))

    for _ in range(rounds):
        losses = {name: log_loss((total + val_probabilities[name]) / (len(picks) + 1)) for name in names}
        best = min(losses, key=losses.get)
        picks.append(best)
        total += val_probabilities[best]
    return {name: picks.count(name) / rounds for name in names if name in picks}


def test_time_augmented(run: Trained, model_name: str, predict: Callable[[np.ndarray], tuple[np.ndarray, float]],
                        data: SplitArrays, class_names, record: dict[str, Any] | None, n_boot: int = 1000,
                        seed: int = 0) -> Trained:
    """A trained model evaluated again with test-time augmentation: ``predict(x)`` returns averaged
    probabilities and ms per image (e.g. :func:`fer_lib.pixels.predict_tta`). The record keeps the
    model's training fields and replaces its predictions and inference time; ``model_name`` names it."""
    val, _ = predict(data.x[VAL])
    test, infer_ms = predict(data.x[TEST])
    inherited = ("train_seconds", "n_params", "training", "n_train", "epochs_run", "best_epoch", "stopped_by", "device")
    fields = {k: run.record[k] for k in inherited if k in run.record}
    fields.update(infer_ms_per_image=infer_ms, base_model=run.record["model"])
    record = None if record is None else {**record, "model": model_name}
    return _evaluated(run.fitted, val, test, data, class_names, record, fields, n_boot, seed)


def results_sentence(runs: dict[str, Trained]) -> str:
    """'name on input **acc** (95 % CI …, macro F1 …, minutes, epochs, stopped by …)' for each model."""
    parts = []
    for name, run in runs.items():
        r = run.record
        on = f" on {r['input']}" if r.get("input") and r["input"] != name else ""
        if "members" in r:
            how = f"average of {', '.join(r['members'])}"
        elif "epochs_run" in r:
            how = f"{r['epochs_run']} epochs, stopped by {r['stopped_by'].replace('_', ' ')}"
        else:
            how = "fitted once (scikit-learn)"
        parts.append(f"{name}{on} **{r['accuracy']:.1%}** (95 % CI {r['accuracy_ci95'][0]:.1%}–{r['accuracy_ci95'][1]:.1%}, "
                     f"macro F1 {r['macro_f1']:.3f}, {r['train_seconds'] / 60:.1f} min, {how})")
    return ", ".join(parts)


def _show_figure(figure) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(figure)
    plt.close(figure)  # shown once, here, in order (not again at the end of the cell)


# A chapter calls the three parts of show_results from three cells when it captions the figures: a cell's
# figure caption (its `mystnb` metadata) numbers the figure only when the figure is the cell's one output.
def show_learning_curves(runs: dict[str, Trained]) -> None:
    """Training and PublicTest loss and accuracy per epoch of every trained model (one figure)."""
    from . import plots

    _show_figure(plots.learning_curves({name: run.fitted.history for name, run in runs.items() if run.fitted},
                                       title="Training (dashed) and PublicTest (solid) per epoch"))


def show_results_tables(runs: dict[str, Trained], title: str = "PrivateTest") -> pd.DataFrame:
    """The results table and per-class precision / recall / F1, titled ``title``; returns the results table."""
    from IPython.display import display

    table = pd.DataFrame([{**run.row, "input": run.record.get("input")} for run in runs.values()]).set_index("model")
    display(table.style.format(precision=3, na_rep="–").set_caption(f"{title}: every model of this chapter"))
    per_class = pd.concat({name: pd.DataFrame(run.record["per_class"]).T[["precision", "recall", "f1"]]
                           for name, run in runs.items()}, axis=1)
    display(per_class.style.format(precision=3, na_rep="–").set_caption(f"{title}: precision, recall and F1 per class"))
    return table


def show_confusion_matrices(runs: dict[str, Trained]) -> None:
    """The confusion matrix of every model (one figure)."""
    from . import plots

    _show_figure(plots.confusion_matrices({name: run.record for name, run in runs.items()}))


def show_results(runs: dict[str, Trained], title: str = "PrivateTest") -> pd.DataFrame:
    """A chapter's model results, in order: learning curves, the results table, per-class precision /
    recall / F1 and the confusion matrices. Returns the table."""
    show_learning_curves(runs)
    table = show_results_tables(runs, title)
    show_confusion_matrices(runs)
    return table


def answer_rq(profile: str, chapter: str, runs: dict[str, Trained], data: SplitArrays, what: str,
              seed: int = 0) -> dict[str, Any]:
    """The RQ2 comparison of a chapter: its model with the best PublicTest accuracy against the best 2D
    model (:func:`versus_2d`), shown as a table and a sentence and saved to
    ``results/<profile>/<chapter>__versus_2d.csv``. ``what`` names the representation in the sentence."""
    from IPython.display import Markdown, display

    from .paths import results_dir

    best = max(runs, key=lambda name: runs[name].record["val_accuracy"])
    comparison, paired = versus_2d(profile, best, data.ids[TEST], data.y[TEST],
                                   runs[best].test_probabilities.argmax(1), data.n_split[TEST], seed=seed)
    display(comparison.style.format({"accuracy": "{:.2%}"})
            .set_caption(f"The best {what} model (chosen on PublicTest) against the best 2D model, PrivateTest"))
    display(Markdown(
        f"On the {paired['n']} PrivateTest faces both can see, **{best}** is right on {paired['accuracy_a']:.1%} and "
        f"**{paired['best_2d']}** (2D) on {paired['accuracy_b']:.1%}: a difference of **{paired['difference']:+.1%}** "
        f"(95 % CI {paired['difference_ci95_low']:+.1%} to {paired['difference_ci95_high']:+.1%}; McNemar p = "
        f"{paired['mcnemar_p']:.2g}; only the {what} model right on {paired['only_a_right']} faces, only the 2D model "
        f"on {paired['only_b_right']})."))
    results_dir(profile).mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"model": best, **paired}]).to_csv(results_dir(profile) / f"{chapter}__versus_2d.csv", index=False)
    return {"model": best, **paired}


# --------------------------------------------------------------------------------------------------
# Cross-validation by subject: datasets without an official split (JAFFE, CK+)


def subject_folds(groups, y, scheme: str | int, seed: int = 0) -> list[np.ndarray]:
    """Test indices of each fold, no subject on both sides: ``"loso"`` (one fold per subject, in sorted
    order) or ``k`` (scikit-learn's StratifiedGroupKFold: k folds of whole subjects, classes balanced
    as well as subjects allow)."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups, y = np.asarray(groups).astype(str), np.asarray(y)
    if scheme == "loso":
        return [np.flatnonzero(groups == g) for g in np.unique(groups)]
    k = int(scheme)
    if not 2 <= k <= len(np.unique(groups)):
        raise ValueError(f"{k} folds need between 2 and {len(np.unique(groups))} (the number of subjects)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(y)), y, groups)]


def inner_validation(train, groups, y, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``train`` split into (fit, validation) by whole subjects, about ``fraction`` of them for validation
    (early stopping and the best epoch are chosen on it, so the test fold never informs training)."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups, y = np.asarray(groups).astype(str)[train], np.asarray(y)[train]
    n_groups = len(np.unique(groups))
    splits = min(n_groups, max(2, round(1 / fraction)))
    if n_groups < 2:
        raise ValueError("inner validation needs at least two subjects in the training folds")
    fit, val = next(StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed).split(
        np.zeros(len(y)), y, groups))
    return train[fit], train[val]


@dataclass
class FoldOutcome:
    """What a cross-validation keeps of one trained fold: the test images' class scores and how the fit went
    (what the record and the per-fold table need, without the model)."""

    probabilities: np.ndarray
    val_accuracy: float
    epochs_run: int
    best_epoch: int
    stopped_by: str
    train_seconds: float
    infer_ms: float
    n_params: int
    device: str

    @classmethod
    def of(cls, fitted: training.FitResult, x_test, x_val, y_val) -> "FoldOutcome":
        probabilities, infer_ms = training.predict(fitted.model, x_test)
        val_accuracy = float((training.predict(fitted.model, x_val)[0].argmax(1) == np.asarray(y_val)).mean())
        return cls(probabilities, val_accuracy, fitted.epochs_run, fitted.best_epoch, fitted.stopped_by,
                   fitted.train_seconds, infer_ms, int(fitted.model.count_params()), fitted.device)

    @staticmethod
    def path(store, cache_name: str, number: int, key: str) -> Path:
        """One file per fold and fit key: two cross-validations that share a name but not their training
        (chapter 9's learning-rate ablation and its tuned network) keep their folds side by side."""
        return Path(store) / cache_name / f"fold{number:03d}-{key}.json"

    def write(self, store, cache_name: str, number: int, key: str, test_ids, parts: dict | None = None) -> None:
        """Atomically (a temporary file renamed), so an interrupted run never leaves half a fold. ``parts``
        (:func:`fer_lib.training.fit_key_parts`) adds the fit's identity and its arrays' fingerprint, by
        which a machine that rounds the same arrays otherwise finds the fold (:meth:`read`)."""
        path = self.path(store, cache_name, number, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = {k: v for k, v in asdict(self).items() if k != "probabilities"}
        same = {"identity": training.fit_identity(parts), "fingerprint": parts["fingerprint"]} if parts else {}
        text = json.dumps({"key": key, "test_ids": [str(i) for i in test_ids], **same, **fields,
                           "probabilities": np.round(self.probabilities, 6).tolist()}, indent=0)
        with written_atomically(path) as temporary:
            temporary.write_text(text)

    @classmethod
    def read(cls, store, cache_name: str, number: int, key: str, test_ids,
             parts: dict | None = None) -> "FoldOutcome | None":
        """The stored outcome of this fold if it was trained with this fit key on these test images — or,
        given ``parts``, with this fit's identity on arrays that differ only in float round-off
        (:func:`fer_lib.training.same_data`: another CPU's extraction) — else None."""
        ids = [str(i) for i in test_ids]
        path = cls.path(store, cache_name, number, key)
        candidates = [path] if path.is_file() else []
        if not candidates and parts:
            candidates = sorted(path.parent.glob(f"fold{number:03d}-*.json"))
        for candidate in candidates:
            stored = json.loads(candidate.read_text())
            identity, fingerprint = stored.pop("identity", None), stored.pop("fingerprint", None)
            if stored.pop("test_ids") != ids:
                continue
            if stored.pop("key") != key and not (parts and identity == training.fit_identity(parts)
                                                 and training.same_data(fingerprint, parts["fingerprint"])):
                continue
            return cls(**{**stored, "probabilities": np.asarray(stored["probabilities"], dtype=float)})
        return None


@dataclass
class CrossValidated:
    """A model evaluated on folds: the record over every image (each predicted once, by the model that did
    not train on its subject), the per-fold table, and the out-of-fold scores."""

    record: dict[str, Any]
    folds: pd.DataFrame
    probabilities: np.ndarray
    fits: list  # each fold's training.FitResult; None for a fold read from a fold store


def cross_validate(build: Callable[[], Any], x, y, groups, ids, folds: list[np.ndarray], config: training.TrainConfig, *,
                   cache_name: str, options: dict[str, Any], class_names, record: dict[str, Any] | None,
                   n_split: int | None = None, val_fraction: float = 0.15, n_boot: int = 1000,
                   augment: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
                   after_fold: Callable[[int, float], None] | None = None,
                   callbacks: Callable[[], list] | None = None,
                   fold_store: str | Path | None = None) -> CrossValidated:
    """Train ``build()`` once per fold on the images outside it (early stopping on a subject-disjoint part of
    them, :func:`inner_validation`), predict the fold, and evaluate the pooled out-of-fold predictions with
    :func:`fer_lib.results.evaluate` (bootstrap CIs over images). Each fold's model is cached and resumes
    like any :func:`fer_lib.training.fit`. With ``record`` (its identifying fields, ``split`` naming the
    protocol), the record and the per-image predictions of the tested images are written. ``n_split``:
    images the protocol tests before the extractor lost some (coverage; default: the tested images).

    Folds that do not cover every image (a single query set) test only theirs; an image in two folds
    is an error. ``probabilities`` has NaN rows for untested images.

    ``augment(x, y, seed)`` enlarges each fold's training part only (never its validation or test
    images), e.g. the video study's per-class copies. ``after_fold(fold, accuracy)`` is called after each
    fold with the accuracy on the images tested so far (an Optuna trial reports it and may stop there).
    ``callbacks()`` makes fresh extra Keras callbacks for each fold's fit (e.g. Lookahead); they do not
    enter the cache key, so what they change must be in ``options``.

    ``fold_store``: a folder (committed with a profile's results) that keeps each finished fold's outcome
    — its test predictions, validation accuracy, epochs, time — as ``<fold_store>/<cache_name>/foldNNN-<key>.json``,
    under the fold's fit key (:func:`fer_lib.training.fit_key`). A fold whose stored key matches is read
    from there without training or a model; so a long cross-validation (118 LOSO folds) resumes on a fresh
    machine whose ``cache/models`` is empty, and any change of data, options or training retrains it."""
    x, y, groups, ids = np.asarray(x), np.asarray(y), np.asarray(groups).astype(str), np.asarray(ids)
    tested = np.concatenate(folds) if len(folds) else np.empty(0, int)
    if len(np.unique(tested)) != len(tested):
        raise ValueError("an image is in more than one test fold: folds must not overlap")
    tested = np.sort(tested)
    probabilities = np.full((len(y), len(class_names)), np.nan)
    rows, fits = [], []
    for number, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        fit_index, val_index = inner_validation(train, groups, y, val_fraction, seed=config.seed + number)
        x_fit, y_fit = x[fit_index], y[fit_index]
        if augment is not None:
            x_fit, y_fit = augment(x_fit, y_fit, config.seed + number)
        name = f"{cache_name}-fold{number:02d}"
        parts = training.fit_key_parts(name, options, config, x_fit, y_fit, x[val_index], y[val_index]) \
            if fold_store else None
        key = training.digest_of_parts(parts) if fold_store else None
        stored = FoldOutcome.read(fold_store, cache_name, number, key, ids[test], parts) if fold_store else None
        if stored is None:
            fitted = training.fit(build, x_fit, y_fit, x[val_index], y[val_index], config, name=name, options=options,
                                  verbose=0, callbacks=callbacks() if callbacks else None)
            outcome = FoldOutcome.of(fitted, x[test], x[val_index], y[val_index])
            if fold_store:
                outcome.write(fold_store, cache_name, number, key, ids[test], parts)
        else:
            fitted, outcome = None, stored
            progress.note("fit", computed=False)  # read from the fold store: a cached fit without its model
        probabilities[test] = outcome.probabilities
        fits.append(fitted)
        rows.append({"fold": number, "test subjects": ", ".join(np.unique(groups[test])[:3]) +
                     (f" … ({len(np.unique(groups[test]))})" if len(np.unique(groups[test])) > 3 else ""),
                     "test images": len(test), "accuracy": float((probabilities[test].argmax(1) == y[test]).mean()),
                     "validation accuracy": outcome.val_accuracy, "epochs": outcome.epochs_run,
                     "best epoch": outcome.best_epoch, "stopped by": outcome.stopped_by, "train s": outcome.train_seconds,
                     "infer ms/image": outcome.infer_ms, "n params": outcome.n_params, "device": outcome.device,
                     "from cache": "fold store" if fitted is None else ("cache/models" if fitted.from_cache else "trained")})
        if after_fold is not None:
            done = np.concatenate(folds[:number + 1])
            after_fold(number, float((probabilities[done].argmax(1) == y[done]).mean()))
    table = pd.DataFrame(rows)
    metrics = results.evaluate(y[tested], probabilities[tested], class_names, n_split=n_split, n_boot=n_boot,
                               seed=config.seed)
    fields = {"train_seconds": float(table["train s"].sum()), "infer_ms_per_image": float(table["infer ms/image"].mean()),
              "n_params": int(table["n params"].iloc[0]), "n_folds": len(folds),
              "fold_accuracy_mean": float(table.accuracy.mean()), "fold_accuracy_std": float(table.accuracy.std(ddof=0)),
              "val_accuracy": float(table["validation accuracy"].mean()), "epochs_run": int(table.epochs.sum()),
              "stopped_by": table["stopped by"].value_counts().to_dict(), "device": table["device"].iloc[0],
              "training": asdict(config)}
    if record is None:
        full = {**metrics, **fields}
    else:
        record = dict(record)
        full = results.make_record(metrics, split=record.pop("split"), **fields, **record)
        results.write_record(full)
        results.write_predictions(full, ids[tested], y[tested], probabilities[tested])
    return CrossValidated(full, table.drop(columns=["n params", "device"]), probabilities, fits)


def compare_folds(a: CrossValidated, b: CrossValidated, y, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Two models cross-validated on the same folds: the mean of the per-fold accuracy differences (a − b)
    with the Wilcoxon signed-rank p-value across folds (zero differences split), and the pooled paired
    comparison over every tested image (bootstrap CI, McNemar p; :func:`fer_lib.results.paired_difference`)."""
    from scipy.stats import wilcoxon

    if len(a.folds) != len(b.folds) or not np.array_equal(a.folds["test images"], b.folds["test images"]):
        raise ValueError("the two models were not cross-validated on the same folds")
    tested = ~np.isnan(a.probabilities[:, 0])
    if not np.array_equal(tested, ~np.isnan(b.probabilities[:, 0])):
        raise ValueError("the two models tested different images")
    y = np.asarray(y)
    differences = a.folds.accuracy.to_numpy() - b.folds.accuracy.to_numpy()
    p_folds = float(wilcoxon(differences, zero_method="zsplit").pvalue) if np.any(differences) else 1.0
    pooled = results.paired_difference(y[tested], a.probabilities[tested].argmax(1), b.probabilities[tested].argmax(1),
                                       n_boot=n_boot, seed=seed)
    return {"fold_difference_mean": float(differences.mean()), "folds_a_better": int((differences > 0).sum()),
            "folds_b_better": int((differences < 0).sum()), "wilcoxon_p": p_folds, **pooled}

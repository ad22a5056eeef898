"""Every representation side by side on FER2013 PrivateTest, from the results records and per-image
predictions alone (nothing is retrained): the comparison chapter's logic.

- :func:`best_models` — each representation's best single model, chosen on PublicTest
  (:func:`fer_lib.experiment.best_record`); representations with no record are listed, not dropped.
- :func:`comparison_table` — accuracy and macro F1 with their bootstrap CIs, AUC, coverage, accuracy with
  missed faces counted wrong, cost per image, training time and size, the seeds' numbers beside.
- :func:`aligned_predictions` — their per-image predictions, indexed by image id (a representation that
  lost a face has no row for it).
- :func:`pairwise_tests`, :func:`error_correlation`, :func:`always_wrong` — paired differences with
  McNemar p, how often two representations fail on the same faces, the faces every one gets wrong; each
  on the images both (or all) classify.
- :func:`pareto_front` — the models no other beats on both accuracy and cost.
- :func:`late_fusion` — a weighted average of the representations' class probabilities, the weights
  chosen on PublicTest (ensemble selection), applied to PrivateTest; an image a representation has no face
  for is fused from the others.
- :func:`cross_dataset` — the packaged FER2013 models (:class:`fer_lib.predict.Predictor`) on another
  dataset, its labels mapped by name, through the same pipelines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import anchors, experiment, results

#: representation (as records name it) -> how the book names it
REPRESENTATIONS = {"pixels_2d": "2D pixels", "landmarks_3d": "landmarks (478×3)", "voxels_3d": "voxel grid",
                   "mesh_3d": "landmark mesh", "blendshapes": "blendshapes (52)", "sketch": "emotion sketch"}
#: the seed result each representation's row is shown beside (study, result in anchors.SEED_RESULTS)
SEED_OF = {"pixels_2d": ("3DFER", "2D CNN"), "landmarks_3d": ("3DFER", "landmark 1D-CNN"),
           "voxels_3d": ("3DFER", "voxel 3D-CNN"), "mesh_3d": ("3DFER", "mesh-distance CNN"),
           "blendshapes": ("LSTM on blendshapes", "random forest, 7 classes")}
#: the chapter that writes each representation's records (what to run when one is missing)
CHAPTER_OF = {"pixels_2d": "03_rq1_2d", "landmarks_3d": "04_rq2_1_landmarks", "voxels_3d": "05_rq2_2_voxels",
              "mesh_3d": "06_rq2_3_mesh", "blendshapes": "07_blendshapes", "sketch": "08_sketches"}


def best_models(profile: str, label_set: str = "emotion7",
                representations=tuple(REPRESENTATIONS)) -> tuple[dict[str, dict], dict[str, str]]:
    """Each representation's best single model on FER2013 (by PublicTest accuracy), and for each
    representation without a record the reason (which chapter to run)."""
    found, missing = {}, {}
    for representation in representations:
        try:
            found[representation] = experiment.best_record(profile, representation, label_set)
        except FileNotFoundError:
            missing[representation] = (f"no {label_set} FER2013 record: execute chapter "
                                       f"{CHAPTER_OF.get(representation, '?')} under profile {profile!r}")
    return found, missing


def comparison_table(best: dict[str, dict]) -> pd.DataFrame:
    """One row per representation: its best model's PrivateTest numbers, cost and size, and the seed's."""
    rows = []
    for representation, r in best.items():
        study, result = SEED_OF.get(representation, (None, None))
        extract = r.get("extract_ms_per_image") or 0.0
        rows.append({
            "representation": REPRESENTATIONS.get(representation, representation), "model": r["model"],
            "accuracy": r["accuracy"], "accuracy 95% CI": _interval(r.get("accuracy_ci95")),
            "macro F1": r["macro_f1"], "macro F1 95% CI": _interval(r.get("macro_f1_ci95")),
            "AUC-ROC": r.get("macro_auc_roc"), "coverage": r["coverage"],
            "accuracy, misses wrong": r.get("accuracy_all_faces", r["accuracy"] * r["coverage"]),
            "ms per image": extract + (r.get("infer_ms_per_image") or 0.0),
            "training min": (r.get("train_seconds") or 0.0) / 60, "parameters": r.get("n_params"),
            "seed's accuracy": anchors.SEED_RESULTS[study][result][0] if study else np.nan,
        })
    return pd.DataFrame(rows).set_index("representation")


def _interval(bounds) -> str:
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds is not None and len(bounds) == 2 else "–"


def aligned_predictions(profile: str, best: dict[str, dict], split: str | None = None) -> dict[str, pd.DataFrame]:
    """Each model's per-image predictions (``split``: None for PrivateTest, ``results.SELECTION`` for
    PublicTest), indexed by image id. Raises if two representations disagree on an image's label."""
    tables = {rep: results.load_predictions(profile, r["chapter"], r["model"], split).set_index("id")
              for rep, r in best.items()}
    labels = pd.concat([t.y_true.rename(rep) for rep, t in tables.items()], axis=1)
    disagree = labels.nunique(axis=1, dropna=True) > 1
    if disagree.any():
        raise ValueError(f"{int(disagree.sum())} images have different labels in different representations' "
                         f"predictions (first: {labels.index[disagree][0]}): were they run on the same data?")
    return tables


def pairwise_tests(predictions: dict[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every ordered pair (row − column) on the images both classify: the accuracy difference, its
    bootstrap 95 % CI, the exact McNemar p-value and the number of shared images."""
    names = list(predictions)
    out = {key: pd.DataFrame(np.nan, index=names, columns=names, dtype=object if key == "95% CI" else float)
           for key in ("difference", "95% CI", "McNemar p", "shared images")}
    for a in names:
        for b in names:
            if a == b:
                continue
            shared = predictions[a].index.intersection(predictions[b].index)
            pa, pb = predictions[a].loc[shared], predictions[b].loc[shared]
            paired = results.paired_difference(pa.y_true, pa.y_pred, pb.y_pred, n_boot=n_boot, seed=seed)
            out["difference"].loc[a, b] = paired["difference"]
            out["95% CI"].loc[a, b] = f"[{paired['difference_ci95_low']:+.3f}, {paired['difference_ci95_high']:+.3f}]"
            out["McNemar p"].loc[a, b] = paired["mcnemar_p"]
            out["shared images"].loc[a, b] = len(shared)
    return out


def errors(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """1 where a representation is wrong on an image, 0 where right, NaN where it has no face for it."""
    return pd.concat([(t.y_pred != t.y_true).astype(float).rename(rep) for rep, t in predictions.items()], axis=1)


def error_correlation(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The phi coefficient (Pearson's r of the 0/1 error indicators) of every pair, on the images both
    classify: 1 means they fail on exactly the same faces, 0 that their failures are unrelated."""
    return errors(predictions).corr(min_periods=2)


def always_wrong(predictions: dict[str, pd.DataFrame]) -> pd.Index:
    """Ids of the images every representation classifies and every one gets wrong."""
    wrong = errors(predictions).dropna()
    return wrong.index[(wrong == 1).all(axis=1)]


def pareto_front(accuracy, cost) -> np.ndarray:
    """True for the points no other point beats on both (higher accuracy, lower cost; ties beat no one)."""
    accuracy, cost = np.asarray(accuracy, float), np.asarray(cost, float)
    dominated = [(((accuracy >= a) & (cost <= c)) & ((accuracy > a) | (cost < c))).any()
                 for a, c in zip(accuracy, cost)]
    return ~np.asarray(dominated, bool)


@dataclass
class Fusion:
    """Late fusion of representations: the weights (chosen on PublicTest), the fused PrivateTest
    probabilities of every image at least one member classifies, and the members each image was fused from."""

    weights: dict[str, float]
    ids: pd.Index
    y_true: np.ndarray
    probabilities: np.ndarray
    members_per_image: pd.Series

    @property
    def y_pred(self) -> np.ndarray:
        return self.probabilities.argmax(1)


def fuse(tables: dict[str, pd.DataFrame], weights: dict[str, float], class_names) -> Fusion:
    """The ``weights``-averaged class probabilities of ``tables`` (per-image predictions by id); on an image
    some members have no face for, the others' weights are renormalised."""
    columns = [f"p_{c}" for c in class_names]
    members = [rep for rep, w in weights.items() if w > 0]
    ids = pd.Index(sorted(set().union(*(tables[rep].index for rep in members))))
    total = np.zeros((len(ids), len(columns)))
    weight_sum = np.zeros(len(ids))
    labels = pd.Series(np.nan, index=ids)
    count = pd.Series(0, index=ids)
    for rep in members:
        table = tables[rep].reindex(ids)
        present = table.y_true.notna().to_numpy()
        total[present] += weights[rep] * table.loc[present, columns].to_numpy()
        weight_sum[present] += weights[rep]
        labels[present] = table.y_true[present]
        count[present] += 1
    return Fusion(dict(weights), ids, labels.to_numpy(int), total / weight_sum[:, None], count)


def late_fusion(selection: dict[str, pd.DataFrame], test: dict[str, pd.DataFrame], class_names,
                rounds: int = 25) -> Fusion:
    """Weights by ensemble selection (:func:`fer_lib.experiment.select_ensemble`, log-loss) on the PublicTest
    images every member classifies, then the PrivateTest fusion with those weights. PrivateTest never
    takes part in choosing."""
    shared = sorted(set.intersection(*(set(t.index) for t in selection.values())))
    if not shared:
        raise ValueError("no PublicTest image is classified by every representation: nothing to choose weights on")
    columns = [f"p_{c}" for c in class_names]
    y_val = next(iter(selection.values())).loc[shared, "y_true"].to_numpy(int)
    weights = experiment.select_ensemble({rep: t.loc[shared, columns].to_numpy() for rep, t in selection.items()},
                                         y_val, rounds=rounds)
    return fuse(test, weights, class_names)


def cross_dataset(predictor, dataset, n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Accuracy and macro F1 (bootstrap 95 % CIs) of every model of ``predictor`` and the fusion on
    ``dataset``, whose classes are matched to the models' by name. Images of classes the models do not
    know (CK+'s contempt) are left out and counted; an image with no face (or none a model can read)
    counts as that model's miss: accuracy on the faces it read, and with misses counted wrong.
    Returns the table and the counts of what was left out."""
    from .predict import dataset_faces

    known = [name in predictor.class_order for name in dataset.class_names]
    keep = np.asarray(known)[dataset.labels]
    y = np.array([predictor.class_order.index(dataset.class_names[label]) for label in dataset.labels[keep]])
    faces, found = dataset_faces(dataset.images[keep])
    probabilities = predictor.predict_faces(faces)
    rows = []
    for name, p in probabilities.items():
        read = found & ~np.isnan(p[:, 0])
        if not read.any():
            rows.append({"model": name, "images": int(keep.sum()), "faces read": 0})
            continue
        metrics = results.evaluate(y[read], p[read], predictor.class_order, n_boot=n_boot, seed=seed)
        rows.append({"model": name, "images": int(keep.sum()), "faces read": int(read.sum()),
                     "accuracy": metrics["accuracy"], "accuracy 95% CI": _interval(metrics["accuracy_ci95"]),
                     "macro F1": metrics["macro_f1"], "macro F1 95% CI": _interval(metrics["macro_f1_ci95"]),
                     "accuracy, misses wrong": metrics["accuracy"] * read.sum() / keep.sum()})
    left_out = {f"{dataset.class_names[i]} images (no such class in the models)": int((dataset.labels == i).sum())
                for i, k in enumerate(known) if not k}
    left_out["images with no face found"] = int((~found).sum())
    return pd.DataFrame(rows).set_index("model"), left_out

"""The 52 ARKit blendshape scores MediaPipe gives a face, as a representation (the LSTM study's pipeline).

- :func:`augmented_copies`: the study's augmentation of *training images before extraction* (random
  horizontal flip, random rotation of up to ±0.2·180°), as new images with their own ids, appended to
  the originals.
- :func:`relevance`: in how many training images each blendshape scores above a threshold; the study
  kept a blendshape when its score exceeded 0.4 in more than 100 images.
- :func:`split_arrays`: the chosen blendshape columns of the detected faces per split, with the
  split sizes before MediaPipe lost any (coverage counts against a model).
- Models: :func:`study_lstm` (stacked LSTM layers and a softmax head; a face is one timestep, so a
  video is a sequence the LSTM reads with its state, see :mod:`fer_lib.stream`), :func:`study_dense`
  (the study's Dense ablation: the same layers as dense ones), :func:`blendshape_mlp` (this book's:
  wider, batch norm, dropout, input noise) and :func:`random_forest` (the classical baseline).
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pandas as pd

from .data import FaceDataset
from .experiment import SplitArrays


def augment_images(images: np.ndarray, seed: int = 0, flip: float = 0.5, rotation: float = 0.2) -> np.ndarray:
    """Each image flipped left-right with probability ``flip`` and rotated by an angle drawn uniformly
    from ±``rotation``·180° about its centre (edges reflected, so no black corners appear)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        if rng.random() < flip:
            image = image[:, ::-1]
        height, width = image.shape[:2]
        angle = rng.uniform(-rotation, rotation) * 180.0
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
        out[i] = cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
    return out


def augmented_copies(dataset: FaceDataset, seed: int = 0, flip: float = 0.5, rotation: float = 0.2) -> FaceDataset:
    """One augmented copy of every image (:func:`augment_images`), id ``<id>~aug``; labels, split and
    subject follow the original, so copies stay in the split they came from."""
    return replace(dataset, name=f"{dataset.name}-augmented", images=augment_images(dataset.images, seed, flip, rotation),
                   ids=np.array([f"{i}~aug" for i in dataset.ids], dtype=object), report=None)


def training_copies(faces: FaceDataset, P):
    """Augmented copies of a chapter's Training images (``P.augmentation``: flip, rotation) and
    MediaPipe's features of them, extracted like the originals and cached the same way."""
    from .data import TRAIN
    from .face_mesh import extract_for_chapter

    copies = augmented_copies(faces.select_split(TRAIN), seed=P.seed, **P.augmentation)
    return copies, extract_for_chapter(copies, P)


def unread_table(dataset: FaceDataset, features) -> pd.DataFrame:
    """Images MediaPipe could not read per original emotion (rows) and part of the data (columns:
    each split; augmented training copies, ids ending ``~aug``, apart), with totals."""
    features.check_aligned(dataset)
    copy = np.char.endswith(dataset.ids.astype(str), "~aug")
    part = np.where(copy, np.char.add(dataset.split.astype(str), " (augmented copies)"), dataset.split.astype(str))
    table = pd.crosstab(pd.Series(dataset.emotions, name="emotion"), pd.Series(part, name="part"),
                        values=~features.detected, aggfunc="sum").fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    return table


def relevance(scores: np.ndarray, names, threshold: float = 0.4, min_images: int = 100) -> pd.DataFrame:
    """Per blendshape: images scoring above ``threshold``, mean and maximum score, and ``kept`` (more
    than ``min_images`` images above the threshold: the study's rule). ``scores``: (N, 52), detected faces."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(f"scores must be (faces, {len(names)}) for {len(names)} names, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN rows (faces MediaPipe missed): pass features.blendshapes[features.detected]")
    above = (scores > threshold).sum(axis=0)
    return pd.DataFrame({"blendshape": list(names), f"images > {threshold}": above, "mean score": scores.mean(0),
                         "max score": scores.max(0), "kept": above > min_images})


def kept_columns(table: pd.DataFrame) -> np.ndarray:
    """Indices of the blendshapes :func:`relevance` kept."""
    kept = np.flatnonzero(table["kept"].to_numpy())
    if not len(kept):
        raise ValueError("no blendshape passes the relevance rule: lower min_images or the threshold")
    return kept


def split_arrays(features, dataset: FaceDataset, columns=None) -> SplitArrays:
    """The blendshape ``columns`` (default all 52) of every detected face per split; ``n_split`` holds
    the split sizes before MediaPipe lost any."""
    columns = np.arange(features.blendshapes.shape[1]) if columns is None else np.asarray(columns)
    return features.split_arrays(features.blendshapes[:, columns].astype(np.float32), dataset)


def _regulariser(l2: float):
    import keras

    return keras.regularizers.L2(l2) if l2 else None


def _inputs(n_features: int, stateful: bool):
    import keras

    # a stateful copy (for streams) reads one face at a time and keeps its state between calls
    return keras.Input(batch_shape=(1, n_features)) if stateful else keras.Input((n_features,))


def study_lstm(n_classes: int, n_features: int, units: int = 32, layers: int = 2, activation: str = "tanh",
               l2: float = 0.0, stateful: bool = False, seed: int = 0):
    """The study's LSTM: ``layers`` stacked LSTM layers of ``units`` (``activation``, L2 on kernels) and a
    softmax head. A face is one timestep; ``stateful=True`` builds the copy that carries the state from
    frame to frame (load the trained weights into it)."""
    import keras

    inputs = _inputs(n_features, stateful)
    x = keras.layers.Reshape((1, n_features))(inputs)
    for i in range(layers):
        x = keras.layers.LSTM(units, activation=activation, return_sequences=i < layers - 1, stateful=stateful,
                              kernel_regularizer=_regulariser(l2), recurrent_regularizer=_regulariser(l2),
                              seed=seed + i)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=_regulariser(l2))(x)
    return keras.Model(inputs, outputs, name="study_lstm")


def study_dense(n_classes: int, n_features: int, units: int = 32, layers: int = 2, activation: str = "tanh",
                l2: float = 0.0, stateful: bool = False, seed: int = 0):
    """The study's Dense ablation: :func:`study_lstm` with each LSTM layer replaced by a Dense layer.
    (``stateful`` is accepted so both build the same way; a Dense model has no state.)"""
    import keras

    x = inputs = _inputs(n_features, stateful)
    for _ in range(layers):
        x = keras.layers.Dense(units, activation=activation, kernel_regularizer=_regulariser(l2))(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=_regulariser(l2))(x)
    return keras.Model(inputs, outputs, name="study_dense")


def blendshape_mlp(n_classes: int, n_features: int, units=(256, 256, 128), dropout: float = 0.3,
                   noise: float = 0.02, stateful: bool = False, seed: int = 0):
    """This book's model: Gaussian input noise (scores are 0..1), then dense blocks with batch norm, ReLU
    and dropout."""
    import keras

    x = inputs = _inputs(n_features, stateful)
    x = keras.layers.GaussianNoise(noise, seed=seed)(x)
    for width in units:
        x = keras.layers.Dense(width, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.Dropout(dropout, seed=seed)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="blendshape_mlp")


def random_forest(n_estimators: int = 300, min_samples_leaf: int = 1, class_weight=None, n_jobs: int = -1,
                  seed: int = 0):
    """The classical baseline (scikit-learn), on the same inputs as the networks."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                  class_weight=class_weight, n_jobs=n_jobs, random_state=seed)


def stateful_copy(model, name: str, n_classes: int, n_features: int, options: dict, seed: int = 0):
    """The trained ``model`` rebuilt to read one frame per call and keep its state (for streams)."""
    copy = build(name, n_classes, n_features, seed=seed, stateful=True, **options)
    copy.set_weights(model.get_weights())
    return copy


MODELS = {"study_lstm": study_lstm, "study_dense": study_dense, "blendshape_mlp": blendshape_mlp}


def build(name: str, n_classes: int, n_features: int, seed: int = 0, **options):
    """A Keras blendshape model by name (``MODELS``); ``options`` go to its builder."""
    if name not in MODELS:
        raise KeyError(f"Unknown blendshape model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, n_features, seed=seed, **options)

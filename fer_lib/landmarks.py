"""The landmark representation (RQ2.1): MediaPipe's 478×3 point cloud of a face, and its models.

Inputs come from :mod:`fer_lib.face_mesh` (landmarks in the original image's pixels, z on the x
scale; missed faces are NaN rows and must be left out by the caller —
``FaceMeshFeatures.split_arrays`` does it and keeps them counted). :func:`normalise` removes what says nothing about the expression — where the face
is (centre), how big it is (scale) and, optionally, how the head is turned (pose, undone with
MediaPipe's facial transformation matrix) — each step a switch, so the chapter can ablate them.

Models, all on (478, 3) inputs:

- :func:`study_mlp` — the 3DFER landmark MLP: the flattened cloud through 4 dense layers (51 %).
- :func:`study_cnn1d` — the 3DFER landmark CNN: 6 Conv1D layers over the landmark sequence, 2
  max-pools, 2 dense layers (55 %).
- :func:`landmark_mlp` — this book's stronger MLP: batch norm and dropout, and augmentation made for
  point clouds (:class:`LandmarkAugmentation`: a mirrored face with left and right landmarks swapped,
  small rotations, scale jitter, jitter of each point).

:func:`smote` is the study's oversampling trick: flatten the clouds, SMOTE, reshape back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

if TYPE_CHECKING:
    from .experiment import SplitArrays

N_LANDMARKS = 478

#: Normalisation variants of the chapter's ablation, from none to all three steps.
NORMALISATIONS = {
    "none": {"centre": False, "scale": False, "remove_pose": False},
    "centre": {"centre": True, "scale": False, "remove_pose": False},
    "centre+scale": {"centre": True, "scale": True, "remove_pose": False},
    "centre+scale+pose": {"centre": True, "scale": True, "remove_pose": True},
}

# MediaPipe's pose matrix lives in a right-handed metric space with y up and the camera looking down
# −z; the landmarks are image pixels with y down and z growing away from the camera.
_IMAGE_FROM_METRIC = np.diag([1.0, -1.0, -1.0])


def pose_rotations(matrix: np.ndarray) -> np.ndarray:
    """(N, 3, 3) head rotations in image axes from MediaPipe's (N, 4, 4) transformation matrices."""
    rotation = np.asarray(matrix, dtype=np.float64)[:, :3, :3]
    scale = np.cbrt(np.linalg.det(rotation))[:, None, None]  # MediaPipe's matrices may carry a scale
    return _IMAGE_FROM_METRIC @ (rotation / scale) @ _IMAGE_FROM_METRIC


def normalise(landmarks: np.ndarray, matrix: np.ndarray | None = None, *, centre: bool = True,
              scale: bool = True, remove_pose: bool = False) -> np.ndarray:
    """(N, 478, 3) float32 landmarks: centred on their mean, divided by their RMS distance to it, and
    rotated back to a frontal head (``remove_pose`` needs the (N, 4, 4) ``matrix``)."""
    from .face_mesh import detected_landmarks

    points = detected_landmarks(landmarks).astype(np.float64)
    if centre or remove_pose:
        points = points - points.mean(axis=1, keepdims=True)
    if remove_pose:
        if matrix is None:
            raise ValueError("remove_pose needs the facial transformation matrices (FaceMeshFeatures.matrix)")
        # row vectors: p_image = R p_frontal, so p_frontal = R^T p_image, i.e. p_image @ R
        points = points @ pose_rotations(matrix)
    if scale:
        offsets = points - points.mean(axis=1, keepdims=True)
        points = points / np.sqrt((offsets ** 2).sum(axis=2).mean(axis=1))[:, None, None]
    return points.astype(np.float32)


def split_arrays(features, dataset, normalisation: str | dict = "centre+scale") -> "SplitArrays":
    """Normalised landmarks of the detected faces of each FER2013 split as :class:`SplitArrays`
    (``n_split`` keeps every image of the split, so coverage and misses-counted-wrong accuracy are right)."""
    from .data import FER2013_SPLITS

    steps = NORMALISATIONS[normalisation] if isinstance(normalisation, str) else dict(normalisation)
    features.check_aligned(dataset)
    found = np.flatnonzero(features.detected & np.isin(dataset.split, FER2013_SPLITS))
    points = np.full(features.landmarks.shape, np.nan, np.float32)
    points[found] = normalise(features.landmarks[found], features.matrix[found], **steps)
    return features.split_arrays(points, dataset, FER2013_SPLITS)


def smote(x: np.ndarray, y: np.ndarray, seed: int = 0, k_neighbors: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The study's SMOTE on point clouds: flatten (N, 478, 3) to (N, 1434), oversample every minority
    class to the majority count with imbalanced-learn's SMOTE, reshape back. Synthetic faces are
    interpolations between a face and one of its ``k_neighbors`` nearest same-class faces."""
    from imblearn.over_sampling import SMOTE

    shape = x.shape[1:]
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    if smallest < 2:
        raise ValueError("SMOTE needs at least 2 faces of every class present; one class has only 1")
    # a class with fewer faces than k_neighbors + 1 interpolates between the faces it has
    sampler = SMOTE(random_state=seed, k_neighbors=min(k_neighbors, smallest - 1))
    flat, y_new = sampler.fit_resample(x.reshape(len(x), -1), y)
    return flat.reshape((-1, *shape)).astype(x.dtype), y_new


@keras.saving.register_keras_serializable(package="fer_lib")
class LandmarkAugmentation(keras.layers.Layer):
    """Training-time augmentation of (batch, 478, 3) normalised point clouds; identity at inference.

    ``mirror``: with probability 1/2 the face is reflected (x → −x) and its landmarks renumbered with
    MediaPipe's left/right permutation, so a mirrored face is still a valid MediaPipe face. ``rotation``:
    uniform angles (radians) about each axis; ``scale``: uniform factor 1 ± scale; ``jitter``: Gaussian
    noise per coordinate (in units of the normalised face).
    """

    def __init__(self, mirror: bool = True, rotation: float = 0.1, scale: float = 0.05, jitter: float = 0.01,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        from .face_mesh import mirror_permutation

        self.mirror, self.rotation, self.scale, self.jitter, self.seed = mirror, rotation, scale, jitter, seed
        self.permutation = mirror_permutation().astype("int32")
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        x = inputs
        batch = ops.shape(x)[0]
        if self.mirror:
            flipped = ops.take(x, self.permutation, axis=1) * ops.convert_to_tensor([-1.0, 1.0, 1.0])
            coin = keras.random.uniform((batch, 1, 1), seed=self.generator) < 0.5
            x = ops.where(coin, flipped, x)
        if self.rotation:
            angles = keras.random.uniform((batch, 3), -self.rotation, self.rotation, seed=self.generator)
            x = ops.einsum("bij,bnj->bni", _rotation_matrices(angles), x)
        if self.scale:
            x = x * keras.random.uniform((batch, 1, 1), 1 - self.scale, 1 + self.scale, seed=self.generator)
        if self.jitter:
            x = x + keras.random.normal(ops.shape(x), stddev=self.jitter, seed=self.generator)
        return x

    def get_config(self):
        return {**super().get_config(), "mirror": self.mirror, "rotation": self.rotation, "scale": self.scale,
                "jitter": self.jitter, "seed": self.seed}


def _rotation_matrices(angles):
    """(batch, 3, 3) rotations R_z R_y R_x from (batch, 3) angles."""
    cos, sin = ops.cos(angles), ops.sin(angles)
    one, zero = ops.ones_like(cos[:, 0]), ops.zeros_like(cos[:, 0])

    def matrix(rows):
        return ops.stack([ops.stack(row, axis=-1) for row in rows], axis=1)

    rx = matrix([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = matrix([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = matrix([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return ops.matmul(rz, ops.matmul(ry, rx))


def _inputs(augmentation: dict | None, seed: int):
    inputs = keras.Input((N_LANDMARKS, 3), name="landmarks")
    x = LandmarkAugmentation(**augmentation, seed=seed)(inputs) if augmentation else inputs
    return inputs, x


def _dense_stack(x, units, dropout: float, batch_norm: bool):
    from keras import layers

    for width in units:
        x = layers.Dense(width, use_bias=not batch_norm)(x)
        if batch_norm:  # momentum 0.9: moving statistics settle within an epoch of small data too
            x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return x


def study_mlp(n_classes: int, *, units=(512, 256, 128), dropout: float = 0.3, augmentation: dict | None = None,
              seed: int = 0):
    """The 3DFER landmark MLP: flattened 478×3 cloud, 3 hidden dense layers + the softmax (4 dense)."""
    from keras import layers

    inputs, x = _inputs(augmentation, seed)
    x = _dense_stack(layers.Flatten()(x), units, dropout, batch_norm=False)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="study_mlp")


def study_cnn1d(n_classes: int, *, filters=(32, 32, 64, 64, 128, 128), kernel_size: int = 3, dense_units: int = 256,
                dropout: float = 0.3, augmentation: dict | None = None, seed: int = 0):
    """The 3DFER landmark CNN: 6 Conv1D layers along the landmark index (xyz as 3 channels), a max-pool
    after the 2nd and 4th, then a dense layer and the softmax (2 dense)."""
    from keras import layers

    if len(filters) != 6:
        raise ValueError(f"the study's CNN has 6 conv layers; got {len(filters)} filter counts")
    inputs, x = _inputs(augmentation, seed)
    for number, width in enumerate(filters, start=1):
        x = layers.Conv1D(width, kernel_size, padding="same", activation="relu", name=f"conv{number}")(x)
        if number in (2, 4):
            x = layers.MaxPooling1D(2)(x)
    x = layers.Flatten()(x)
    x = _dense_stack(x, (dense_units,), dropout, batch_norm=False)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="study_cnn1d")


def landmark_mlp(n_classes: int, *, units=(1024, 512, 256), dropout: float = 0.4, augmentation: dict | None = None,
                 seed: int = 0):
    """This book's landmark MLP: the study's shape, wider, with batch norm, dropout and (usually)
    :class:`LandmarkAugmentation`."""
    from keras import layers

    inputs, x = _inputs(augmentation, seed)
    x = _dense_stack(layers.Flatten()(x), units, dropout, batch_norm=True)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="landmark_mlp")


MODELS = {"study_mlp": study_mlp, "study_cnn1d": study_cnn1d, "landmark_mlp": landmark_mlp}


def build(name: str, n_classes: int, **options: Any):
    """Build a landmark model by name with its options (the names of :data:`MODELS`)."""
    if name not in MODELS:
        raise KeyError(f"Unknown landmark model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, **options)

"""The voxel representation: MediaPipe's 478×3 landmarks written into a k×k×k grid, and its 3D-CNNs.

The 3DFER study (RQ2.2) normalised each face's landmarks into [0, k) and set a cell of a k×k×k
occupancy grid to 1 wherever a landmark falls, then classified the grids with a 3D-CNN (3 conv3d
layers, 1 pooling layer, 3 dense layers): 43 % on FER2013's 7 classes, below every other
representation. The grid turns a point list into an image, so convolutions can see local shape, but
at small k many of the 478 points fall into the same cell (eyes, lips and brows are dense) and every
point is moved to its cell's centre: exactly where expressions differ, the grid loses information.
:func:`collisions` and :func:`describe` measure that loss.

- :func:`to_grid_coordinates` — per face, one common scale so the longest axis spans 0..k-1 and the
  face keeps its aspect ratio; the shorter axes are centred in the grid.
- :func:`occupancy` — the study's binary grid (a landmark in a cell sets it to 1).
- :func:`gaussian_splat` — the "rescue" variant: each landmark adds a small 3D Gaussian at its
  sub-voxel position, so the grid keeps sub-cell positions and how many points crowd a region.
- :func:`study_cnn3d` (the study's shape) and :func:`voxel_cnn` (a better-regularised, faster
  variant), by name through :data:`MODELS` and :func:`build`. Both take the grids as they are,
  (N, k, k, k) uint8 or float16, and cast them and add the channel axis inside the model.

Grid axis order: landmark axes (x, y, z) map to array indices ``grid[i_x, i_y, i_z]``. MediaPipe's x
runs to the image's right, y down the image (small ``i_y`` is the forehead) and z is depth on the x
scale (small ``i_z`` is nearest the camera).
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

DEFAULT_K = 32
METHODS = ("occupancy", "gaussian")
# Faces per chunk are chosen so that a chunk's grid holds about this many cells (2**23 float32 = 32 MB):
# temporaries stay small whatever N, and a chunk is still large enough for numpy to be efficient.
_CHUNK_CELLS = 2 ** 23


def _check_landmarks(landmarks) -> np.ndarray:
    from .face_mesh import detected_landmarks

    return detected_landmarks(landmarks, n_points=None)  # any number of points: the grid does not care


def _check_k(k: int) -> int:
    if int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k}")
    return int(k)


def _chunks(n: int, k: int):
    size = max(1, _CHUNK_CELLS // k ** 3)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def to_grid_coordinates(landmarks, k: int = DEFAULT_K) -> np.ndarray:
    """Landmarks as continuous grid coordinates in [0, k-1], one common scale per face.

    Parameters
    ----------
    landmarks : (N, P, 3) array
        Landmarks of detected faces (any units, any position).
    k : int
        Grid size.

    Returns
    -------
    (N, P, 3) float64 array. Per face the longest axis spans exactly 0..k-1; the other axes are
    scaled by the same factor (aspect ratio kept) and centred, so cell ``round(c)`` is in the grid.

    Raises
    ------
    ValueError
        If a face has NaN landmarks (a missed detection).
    """
    landmarks = _check_landmarks(landmarks)
    k = _check_k(k)
    points = landmarks.astype(np.float64)
    low = points.min(axis=1, keepdims=True)
    extent = points.max(axis=1, keepdims=True) - low
    scale = extent.max(axis=2, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)  # all points identical: put them at the centre, not NaN
    # one scale for all three axes: a wide face stays wide, so shape survives the normalisation
    coords = (points - low) / scale * (k - 1)
    coords += (k - 1) * (1.0 - extent / scale) / 2.0
    return coords


def _cell_indices(landmarks, k: int) -> np.ndarray:
    """(N, P) flat index of the nearest cell of every landmark, ``(i_x * k + i_y) * k + i_z``."""
    # floor(c + 0.5) rounds halves up, the same way on every axis (np.rint would round halves to even)
    cells = np.floor(to_grid_coordinates(landmarks, k) + 0.5).astype(np.intp)
    np.clip(cells, 0, k - 1, out=cells)
    return (cells[..., 0] * k + cells[..., 1]) * k + cells[..., 2]


def occupancy(landmarks, k: int = DEFAULT_K, dtype=np.uint8) -> np.ndarray:
    """The study's binary grid: 1 in every cell holding at least one landmark (nearest cell), else 0.

    Parameters
    ----------
    landmarks : (N, P, 3) array
        Landmarks of detected faces.
    k : int
        Grid size.
    dtype : numpy dtype
        Output dtype; uint8 keeps 33,000 faces at k=32 to 1 GB.

    Returns
    -------
    (N, k, k, k) array indexed ``[face, i_x, i_y, i_z]``.
    """
    landmarks = _check_landmarks(landmarks)
    k = _check_k(k)
    n = len(landmarks)
    grids = np.zeros((n, k, k, k), dtype)
    cells = k ** 3
    for part in _chunks(n, k):
        index = _cell_indices(landmarks[part], k)
        index += (np.arange(part.stop - part.start) * cells)[:, None]
        grids[part].reshape(-1)[index.ravel()] = 1  # a view: the chunk is contiguous
    return grids


def collisions(landmarks, k: int = DEFAULT_K) -> np.ndarray:
    """(N,) fraction of each face's landmarks that land in an already occupied cell (lost in the grid).

    Equals ``(P - occupied cells) / P`` for the :func:`occupancy` grid at the same ``k``.
    """
    landmarks = _check_landmarks(landmarks)
    k = _check_k(k)
    n, p = landmarks.shape[:2]
    out = np.zeros(n)
    if p == 0:
        return out
    for part in _chunks(n, k):
        index = np.sort(_cell_indices(landmarks[part], k), axis=1)
        distinct = 1 + (np.diff(index, axis=1) != 0).sum(axis=1)
        out[part] = (p - distinct) / p
    return out


def gaussian_splat(landmarks, k: int = DEFAULT_K, sigma: float = 1.0, dtype=np.float16) -> np.ndarray:
    """Smooth density grid: each landmark adds a 3D Gaussian (std ``sigma`` cells) at its sub-voxel position.

    Each landmark is scattered into its 8 surrounding cells with trilinear weights (which keeps its
    continuous position: the weights' centre of mass is the point), then the grid is convolved with a
    Gaussian truncated at 3 sigma (``scipy.ndimage.gaussian_filter``, zero outside the grid), and each
    face's grid is divided by its maximum. The trilinear step widens the Gaussian slightly (at most
    0.5 cell of std in quadrature, i.e. sigma 1 acts as about 1.1).

    Parameters
    ----------
    landmarks : (N, P, 3) array
        Landmarks of detected faces.
    k : int
        Grid size.
    sigma : float
        Gaussian standard deviation in cells, > 0.
    dtype : numpy dtype
        Output dtype; float16 keeps 33,000 faces at k=32 to about 2 GB.

    Returns
    -------
    (N, k, k, k) array in [0, 1] indexed ``[face, i_x, i_y, i_z]``, maximum 1 per face.
    """
    from scipy.ndimage import gaussian_filter

    landmarks = _check_landmarks(landmarks)
    k = _check_k(k)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 cells, got {sigma}")
    n = len(landmarks)
    grids = np.zeros((n, k, k, k), dtype)
    if n == 0 or landmarks.shape[1] == 0:
        return grids
    cells = k ** 3
    for part in _chunks(n, k):
        m = part.stop - part.start
        coords = to_grid_coordinates(landmarks[part], k)
        base = np.floor(coords).astype(np.intp)
        frac = coords - base
        offset = (np.arange(m) * cells)[:, None]
        index, weight = [], []
        for corner in np.ndindex(2, 2, 2):
            corner = np.array(corner)
            # at c = k-1 the upper corner is outside the grid but has weight 0: clipping is harmless
            at = np.minimum(base + corner, k - 1)
            index.append(((at[..., 0] * k + at[..., 1]) * k + at[..., 2] + offset).ravel())
            weight.append(np.where(corner, frac, 1.0 - frac).prod(axis=-1).ravel())
        # bincount sums repeated indices (unlike fancy assignment) and is much faster than np.add.at
        density = np.bincount(np.concatenate(index), np.concatenate(weight), minlength=m * cells)
        density = density.astype(np.float32).reshape(m, k, k, k)
        # sigma 0 on the face axis: faces are filtered together but never blurred into each other
        density = gaussian_filter(density, sigma=(0, sigma, sigma, sigma), mode="constant", truncate=3.0)
        # Per-face maximum rather than clipping at 1: clipping saturates the crowded regions (eyes, lips)
        # and would throw away the density that occupancy loses to collisions; faces share one topology
        # and one scale, so the densest region, and with it the divisor, is similar from face to face.
        peak = density.reshape(m, -1).max(axis=1)
        density /= np.where(peak > 0, peak, 1.0)[:, None, None, None]
        grids[part] = density
    return grids


def voxelise(landmarks, method: str = "occupancy", k: int = DEFAULT_K, sigma: float = 1.0) -> np.ndarray:
    """(N, k, k, k) grids by method: ``"occupancy"`` (the study's, uint8) or ``"gaussian"`` (float16).

    ``sigma`` (cells) is used by the Gaussian method only.
    """
    if method == "occupancy":
        return occupancy(landmarks, k)
    if method == "gaussian":
        return gaussian_splat(landmarks, k, sigma)
    raise ValueError(f"Unknown voxel method {method!r}; choose one of {list(METHODS)}")


def describe(grids, n_landmarks: int = 478) -> dict[str, float]:
    """Summary numbers of a stack of grids (N, k, k, k) for a chapter to print.

    Returns
    -------
    dict with ``faces``, ``k``, ``occupied_cells`` (mean non-zero cells per face, and their
    ``_min``/``_max``), ``fill_fraction`` (occupied share of the k³ cells) and, for binary
    (occupancy) grids, ``collision_fraction``: the mean share of the ``n_landmarks`` points lost to
    an already occupied cell, ``(n_landmarks - occupied) / n_landmarks`` (NaN for Gaussian grids,
    where non-zero cells do not count points).
    """
    grids = np.asarray(grids)
    if grids.ndim != 4 or not grids.shape[1] == grids.shape[2] == grids.shape[3]:
        raise ValueError(f"grids must be (N, k, k, k), got shape {grids.shape}")
    n, k = grids.shape[:2]
    occupied = np.zeros(n, np.int64)
    binary = True
    for part in _chunks(n, k):
        flat = grids[part].reshape(part.stop - part.start, -1)
        occupied[part] = np.count_nonzero(flat, axis=1)
        binary = binary and bool(np.all((flat == 0) | (flat == 1)))
    if n == 0:
        return {"faces": 0, "k": k, "occupied_cells": np.nan, "occupied_cells_min": np.nan,
                "occupied_cells_max": np.nan, "fill_fraction": np.nan, "collision_fraction": np.nan}
    return {
        "faces": n,
        "k": k,
        "occupied_cells": float(occupied.mean()),
        "occupied_cells_min": int(occupied.min()),
        "occupied_cells_max": int(occupied.max()),
        "fill_fraction": float(occupied.mean() / k ** 3),
        "collision_fraction": float(np.mean((n_landmarks - occupied) / n_landmarks)) if binary else np.nan,
    }


def voxel_augmentation(mirror: bool = True, shift: int = 1, seed: int | None = None):
    """Training-time augmentation of (batch, k, k, k) grids, identity at inference (a Keras layer).

    ``mirror``: with probability 1/2 per face the x axis is reversed — the grid of the mirrored face,
    since a voxel grid, unlike the landmark list, does not know which point is which. ``shift``: the
    whole batch moved by up to ± ``shift`` cells along each axis (one draw per batch; cells pushed out
    wrap around, and the border cells are empty)."""
    return VoxelAugmentation(mirror=mirror, shift=shift, seed=seed)


@keras.saving.register_keras_serializable(package="fer_lib")
class VoxelAugmentation(keras.layers.Layer):
    """See :func:`voxel_augmentation`."""

    def __init__(self, mirror: bool = True, shift: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.mirror, self.shift, self.seed = mirror, int(shift), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        x = inputs
        if self.mirror:
            coin = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.generator) < 0.5
            x = ops.where(coin, ops.flip(x, axis=1), x)
        if self.shift:
            steps = keras.random.randint((3,), -self.shift, self.shift + 1, seed=self.generator)
            for axis in range(3):
                x = ops.roll(x, steps[axis], axis=axis + 1)
        return x

    def get_config(self):
        return {**super().get_config(), "mirror": self.mirror, "shift": self.shift, "seed": self.seed}


def _voxel_input(k: int, augmentation: dict | None = None, seed: int = 0):
    import keras
    from keras import layers

    # float32 input: uint8 occupancy and float16 Gaussian grids are cast on the way in, and the grids
    # are passed as-is (N, k, k, k); the channel axis is added inside the model
    inputs = keras.Input((k, k, k), dtype="float32", name="voxels")
    x = voxel_augmentation(**augmentation, seed=seed)(inputs) if augmentation else inputs
    return inputs, layers.Reshape((k, k, k, 1), name="add_channel")(x)


def study_cnn3d(n_classes: int, *, k: int = DEFAULT_K, filters=(32, 64, 128), strides=(2, 2, 1),
                dense_units=(256, 128), dropout: float = 0.3, seed: int = 0):
    """The 3DFER 3D-CNN: 3 Conv3D (3×3×3, ReLU), 1 max-pool, dense-ReLU ×2, softmax (3 dense layers).

    The study does not give strides; these keep the dense layer trainable on a CPU. With stride 1
    everywhere the single pool leaves 16³×128 = 524k features and 134M weights in the first dense
    layer at k=32; strides (2, 2, 1) leave 4³×128 features (2.1M weights) and cut the convolutions'
    cost, and a 3×3×3 kernel at stride 2 still covers every cell, so no landmark is skipped.
    """
    import keras
    from keras import layers

    inputs, x = _voxel_input(k)
    for i, (width, stride) in enumerate(zip(filters, strides, strict=True)):
        x = layers.Conv3D(width, 3, strides=stride, padding="same", activation="relu", name=f"conv{i + 1}",
                          kernel_initializer=keras.initializers.GlorotUniform(seed + i))(x)
    x = layers.MaxPooling3D(2, name="pool")(x)
    x = layers.Flatten()(x)
    for i, units in enumerate(dense_units):
        x = layers.Dense(units, activation="relu", name=f"dense{i + 1}",
                         kernel_initializer=keras.initializers.GlorotUniform(seed + 10 + i))(x)
        x = layers.Dropout(dropout, seed=seed + 20 + i)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="study_cnn3d")


def voxel_cnn(n_classes: int, *, k: int = DEFAULT_K, width: int = 16, dense_units: int = 128,
              dropout: float = 0.3, augmentation: dict | None = None, seed: int = 0):
    """A better-regularised 3D-CNN: 3 Conv3D-BN-ReLU blocks (widths w, 2w, 4w), the first two followed by
    max-pooling, then flatten, dropout, dense-BN-ReLU, dropout, softmax. ``k`` must be a multiple of 8.

    The first convolution has stride 2: a 3×3×3 kernel at stride 2 still sees every cell, so sub-cell
    detail survives in its channels, while convolving, normalising and pooling the almost empty full
    grid (at k=32 under 2 % of cells hold a landmark) made a training step over 10 times slower.
    Blocks 1 and 2 then pool, leaving a (k/8)³ map that is flattened rather than globally pooled, to
    keep *where* in the face a feature fires, which is what separates the expressions.
    ``augmentation``: options of :func:`voxel_augmentation` (mirrored faces, small shifts), or None.
    """
    import keras
    from keras import layers

    if k % 8:
        raise ValueError(f"voxel_cnn needs k to be a multiple of 8, got {k}")
    inputs, x = _voxel_input(k, augmentation, seed)
    for i, filters in enumerate([width, 2 * width, 4 * width]):
        x = layers.Conv3D(filters, 3, strides=2 if i == 0 else 1, padding="same", use_bias=False,
                          name=f"conv{i + 1}", kernel_initializer=keras.initializers.HeNormal(seed + i))(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(name=f"conv{i + 1}_relu")(x)
        if i < 2:
            x = layers.MaxPooling3D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout, seed=seed + 10)(x)
    x = layers.Dense(dense_units, use_bias=False, name="dense1",
                     kernel_initializer=keras.initializers.HeNormal(seed + 11))(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout, seed=seed + 12)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="voxel_cnn")


MODELS = {"study_cnn3d": study_cnn3d, "voxel_cnn": voxel_cnn}


def build(name: str, n_classes: int, **options: Any):
    """Build a voxel model by name with its options (the names of :data:`MODELS`)."""
    if name not in MODELS:
        raise KeyError(f"Unknown voxel model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, **options)

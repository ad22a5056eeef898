"""Keras layers shared by the models: training-time augmentation and per-image pixel normalisation.

Both sit inside the model, on 0..255 pixels, so the exact same normalisation runs at training and at
inference time, and augmentation is active only while training.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer_lib")
class LinearContrast(keras.layers.Layer):
    """Draw α ~ U[lower, upper] per image and map v -> 127 + α (v - 127), clipped to 0..255; training only."""

    def __init__(self, lower: float = 0.22, upper: float = 2.2, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 < lower <= upper:
            raise ValueError(f"need 0 < lower <= upper, got {lower}, {upper}")
        self.lower, self.upper, self.seed = lower, upper, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        alpha = keras.random.uniform(shape, self.lower, self.upper, seed=self.generator)
        return ops.clip(127.0 + alpha * (inputs - 127.0), 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer_lib")
class PixelNoise(keras.layers.Layer):
    """Additive Gaussian noise with ``stddev`` in grey levels, clipped to 0..255; training only.

    (Keras' GaussianNoise takes a standard deviation of at most 1, i.e. for data already scaled to 0..1.)
    """

    def __init__(self, stddev: float = 8.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stddev, self.seed = stddev, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        noise = keras.random.normal(ops.shape(inputs), stddev=self.stddev, seed=self.generator)
        return ops.clip(inputs + noise, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer_lib")
class PerImageNormalisation(keras.layers.Layer):
    """``standard``: zero mean and unit variance per image; ``minmax``: each image stretched to [0, 1].

    Per image, so there are no dataset statistics to fit, store or forget; a blank frame stays finite.
    """

    METHODS = ("standard", "minmax")

    def __init__(self, method: str = "standard", **kwargs):
        super().__init__(**kwargs)
        if method not in self.METHODS:
            raise ValueError(f"Unknown normalisation {method!r}; choose one of {self.METHODS}")
        self.method = method

    def call(self, inputs):
        axes = tuple(range(1, len(inputs.shape)))
        if self.method == "standard":
            mean = ops.mean(inputs, axis=axes, keepdims=True)
            std = ops.std(inputs, axis=axes, keepdims=True)
            return (inputs - mean) / ops.maximum(std, 1.0)
        low = ops.min(inputs, axis=axes, keepdims=True)
        high = ops.max(inputs, axis=axes, keepdims=True)
        return (inputs - low) / ops.maximum(high - low, 1.0)

    def get_config(self):
        return {**super().get_config(), "method": self.method}


def augmentation(flip: bool = True, rotation: float = 0.1, contrast: tuple[float, float] | None = (0.22, 2.2),
                 noise: float = 8.0, shift: float | None = None, zoom: float | None = None,
                 seed: int = 0) -> keras.Sequential:
    """Training-time augmentation on 0..255 pixels: horizontal flip, rotation (fraction of a full turn),
    shift (fraction of the side, both axes), zoom (fraction, in and out), linear contrast
    127 + α(v − 127), Gaussian noise (std in grey levels). Inactive at inference."""
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="nearest", seed=seed))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="nearest", seed=seed))
    if contrast:
        layers.append(LinearContrast(*contrast, seed=seed))
    if noise:
        layers.append(PixelNoise(noise, seed=seed))
    return keras.Sequential(layers, name="augmentation")


@keras.saving.register_keras_serializable(package="fer_lib")
def margin_loss(y_true, y_pred, m_plus: float = 0.9, m_minus: float = 0.1, down_weight: float = 0.5):
    """CapsNet's margin loss on one-hot targets and class-capsule lengths: a present class is pushed above
    ``m_plus``, an absent one below ``m_minus`` (its term down-weighted), summed over classes."""
    present = y_true * ops.square(ops.relu(m_plus - y_pred))
    absent = down_weight * (1.0 - y_true) * ops.square(ops.relu(y_pred - m_minus))
    return ops.sum(present + absent, axis=-1)


#: losses of this package that OneHotLoss accepts by name beside Keras' own
_OWN_LOSSES = {"margin": margin_loss}


@keras.saving.register_keras_serializable(package="fer_lib")
class OneHotLoss(keras.losses.Loss):
    """A Keras loss on one-hot targets (``categorical_crossentropy``, ``categorical_focal_crossentropy``,
    ``mean_squared_error``, or CapsNet's ``margin``) applied to integer labels: every chapter keeps its
    labels as class indices, so the loss ablations change only this, not the data."""

    def __init__(self, loss: str = "categorical_crossentropy", label_smoothing: float = 0.0, name: str | None = None,
                 **kwargs):
        super().__init__(name=name or f"onehot_{loss}", **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.loss, self.label_smoothing = loss, label_smoothing
        self.inner = _OWN_LOSSES.get(loss) or keras.losses.get(loss)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        n_classes = ops.shape(y_pred)[-1]
        targets = ops.one_hot(labels, n_classes)
        if self.label_smoothing:  # (1 − ε) on the true class plus ε spread over all classes
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / ops.cast(n_classes, targets.dtype)
        return self.inner(targets, y_pred)

    def get_config(self):
        return {**super().get_config(), "loss": self.loss, "label_smoothing": self.label_smoothing}

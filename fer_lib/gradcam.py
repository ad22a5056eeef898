"""Grad-CAM (Selvaraju et al., 2017): where a convolutional model looks for the class it scores.

The heat map of a class is the ReLU of the last convolutional feature maps weighted by the mean
gradient of the class probability with respect to each map, upsampled to the input size and scaled
to 0..1 per image. :func:`region_shares` summarises maps per face region so a chapter can say in
numbers whether a pattern appears (e.g. mouth for happy, eyes and brows for surprise).
"""
from __future__ import annotations

import numpy as np


def last_conv_layer(model) -> str:
    """Name of the last layer with a 4D (N, H, W, C) output: the deepest spatial feature maps."""
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Conv2D) or (
            len(getattr(layer.output, "shape", ())) == 4 and "conv" in layer.name
        ):
            return layer.name
    raise ValueError(f"model {model.name!r} has no convolutional layer for Grad-CAM")


def gradcam(model, images, class_index=None, layer: str | None = None, batch_size: int = 64) -> np.ndarray:
    """(N, H, W) heat maps in 0..1 for ``class_index`` (per image or one int; default: the predicted class)."""
    import keras
    import tensorflow as tf

    images = np.asarray(images, dtype="float32")
    layer = layer or last_conv_layer(model)
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        with tf.GradientTape() as tape:
            features, probabilities = probe(batch, training=False)
            if class_index is None:
                target = tf.argmax(probabilities, axis=1)
            elif np.ndim(class_index) == 0:
                target = tf.fill([tf.shape(batch)[0]], tf.cast(class_index, tf.int64))
            else:
                target = tf.convert_to_tensor(np.asarray(class_index)[start:start + batch_size], tf.int64)
            score = tf.gather(probabilities, target, axis=1, batch_dims=1)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        maps.append(cam / np.where(peak > 0, peak, 1.0)[:, None, None])
    return np.concatenate(maps)


#: Face regions of an aligned, cropped 48×48 face, as fractions of (rows, columns).
REGIONS = {"eyes and brows": (0.15, 0.50), "nose and cheeks": (0.50, 0.68), "mouth and chin": (0.68, 1.0)}


def region_shares(heatmaps: np.ndarray, regions: dict[str, tuple[float, float]] = REGIONS) -> np.ndarray:
    """(N, len(regions)) share of each map's total heat inside each horizontal band of the face."""
    heatmaps = np.asarray(heatmaps, dtype=float)
    height = heatmaps.shape[1]
    total = heatmaps.sum(axis=(1, 2))
    total = np.where(total > 0, total, 1.0)
    shares = [heatmaps[:, int(top * height):int(bottom * height)].sum(axis=(1, 2)) / total
              for top, bottom in regions.values()]
    return np.stack(shares, axis=1)

"""The 2D-pixel representation: model inputs from faces, and the RQ1 models.

Every model takes the 48×48×1 face (0..255 grey levels) and carries its own augmentation and pixel
normalisation as layers, so training and inference apply identical steps and a saved model is
complete. 3-channel backbones repeat the grey channel inside the model.

- :func:`study_cnn` — the 3DFER study's CNN: 6 conv layers (batch norm, ReLU), pooling and dropout
  after each pair, 2 dense layers.
- :func:`resnet50`, :func:`vgg16` — Keras Applications backbones. ``weights=None`` trains from scratch
  (what this book can do offline); ``weights="imagenet"`` or a path to a weights file gives transfer
  learning for readers who can download them, with the backbone's own input scaling.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .preprocess import Preprocessing

INPUT_SIZE = 48


def model_inputs(dataset, preprocessing: Preprocessing, detections=None) -> np.ndarray:
    """(N, size, size, 1) float32 faces in 0..255 after the deterministic preprocessing steps."""
    faces = preprocessing.apply(dataset.images, detections)
    return faces[..., None].astype("float32")


def _stem(inputs, augmentation: dict | None, seed: int):
    from .layers import augmentation as augmentation_block

    x = inputs
    if augmentation:
        x = augmentation_block(**augmentation, seed=seed)(x)
    return x


def study_cnn(n_classes: int, *, input_size: int = INPUT_SIZE, width: int = 32, dense_units: int = 256,
              dropout: float = 0.25, dense_dropout: float = 0.5, bn_momentum: float = 0.99,
              normalisation: str = "standard", augmentation: dict | None = None, seed: int = 0):
    """The 3DFER CNN: [conv-BN-ReLU ×2, max-pool, dropout] × 3 with widths w, 2w, 4w; dense-BN-ReLU; softmax.

    ``bn_momentum``: Keras' 0.99 suits FER2013's 450 steps per epoch; a small cross-validation fold (a few
    steps per epoch) needs faster moving statistics, e.g. 0.9."""
    import keras
    from keras import layers

    from .layers import PerImageNormalisation

    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = PerImageNormalisation(normalisation)(_stem(inputs, augmentation, seed))
    for block, filters in enumerate([width, 2 * width, 4 * width]):
        for conv in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{2 * block + conv + 1}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum)(x)
            x = layers.ReLU(name=f"conv{2 * block + conv + 1}_relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dense_dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="study_cnn")


def _application(name: str, n_classes: int, *, input_size: int, resize_to: int | None, weights,
                 normalisation: str, augmentation: dict | None, dropout: float, seed: int):
    """A Keras Applications backbone on the grey face, with global average pooling and a softmax head."""
    import keras
    from keras import layers

    from .layers import PerImageNormalisation

    backbone = {"resnet50": keras.applications.ResNet50, "vgg16": keras.applications.VGG16}[name]
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = _stem(inputs, augmentation, seed)
    if resize_to and resize_to != input_size:
        x = layers.Resizing(resize_to, resize_to, interpolation="bilinear")(x)
    x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    # Pretrained ResNet50/VGG16 weights expect "caffe" scaling (ImageNet BGR means subtracted; the grey
    # channels are equal, so the order does not matter); from scratch, per-image standardisation.
    if weights:
        x = layers.Rescaling(1.0, offset=[-103.939, -116.779, -123.68], name="imagenet_scaling")(x)
    else:
        x = PerImageNormalisation(normalisation)(x)
    base = backbone(include_top=False, weights=weights, input_tensor=x, pooling="avg")
    x = layers.Dropout(dropout)(base.output)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"{name}_{'transfer' if weights else 'scratch'}")


def resnet50(n_classes: int, *, input_size: int = INPUT_SIZE, resize_to: int | None = None, weights=None,
             normalisation: str = "standard", augmentation: dict | None = None, dropout: float = 0.3, seed: int = 0):
    """ResNet50 (3-channel input made from the grey face); from scratch unless ``weights`` is given."""
    return _application("resnet50", n_classes, input_size=input_size, resize_to=resize_to, weights=weights,
                        normalisation=normalisation, augmentation=augmentation, dropout=dropout, seed=seed)


def vgg16(n_classes: int, *, input_size: int = INPUT_SIZE, resize_to: int | None = None, weights=None,
          normalisation: str = "standard", augmentation: dict | None = None, dropout: float = 0.3, seed: int = 0):
    """VGG16 (3-channel input made from the grey face); from scratch unless ``weights`` is given
    (``"imagenet"`` or a VGGFace/ImageNet weights file: transfer learning as the 3DFER study)."""
    return _application("vgg16", n_classes, input_size=input_size, resize_to=resize_to, weights=weights,
                        normalisation=normalisation, augmentation=augmentation, dropout=dropout, seed=seed)


MODELS = {"study_cnn": study_cnn, "resnet50": resnet50, "vgg16": vgg16}


def build(name: str, n_classes: int, **options: Any):
    """Build a 2D model by name with its options (the names of :data:`MODELS`)."""
    if name not in MODELS:
        raise KeyError(f"Unknown 2D model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, **options)

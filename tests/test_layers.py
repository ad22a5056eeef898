"""Augmentation and normalisation layers: active when they should be, exact where they claim to be."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from fer_lib import layers  # noqa: E402


def _batch(fer_sample, n=8):
    return fer_sample.images[:n, :, :, None].astype("float32")


def test_augmentation_is_identity_at_inference_and_changes_images_in_training(fer_sample):
    x = _batch(fer_sample)
    augment = layers.augmentation(seed=3)
    np.testing.assert_allclose(np.asarray(augment(x, training=False)), x)
    trained = np.asarray(augment(x, training=True))
    assert trained.shape == x.shape and not np.allclose(trained, x)


def test_linear_contrast_maps_pixels_around_127_with_alpha_in_range():
    layer = layers.LinearContrast(0.22, 2.2, seed=1)
    x = np.full((64, 4, 4, 1), 147.0, dtype="float32")  # 20 grey levels above the pivot
    y = np.asarray(layer(x, training=True))
    alpha = (y[:, 0, 0, 0] - 127.0) / 20.0
    assert (alpha >= 0.22 - 1e-5).all() and (alpha <= 2.2 + 1e-5).all()
    assert np.allclose(y, y[:, :1, :1, :])  # one alpha per image
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    with pytest.raises(ValueError):
        layers.LinearContrast(2.0, 1.0)


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_per_image_normalisation(method, fer_sample):
    x = _batch(fer_sample)
    x[0] = 0.0  # a blank frame must stay finite
    y = np.asarray(layers.PerImageNormalisation(method)(x))
    assert np.isfinite(y).all()
    if method == "standard":
        np.testing.assert_allclose(y[1:].mean(axis=(1, 2, 3)), 0, atol=1e-4)
        np.testing.assert_allclose(y[1:].std(axis=(1, 2, 3)), 1, atol=1e-3)
    else:
        np.testing.assert_allclose(y[1:].min(axis=(1, 2, 3)), 0, atol=1e-6)
        np.testing.assert_allclose(y[1:].max(axis=(1, 2, 3)), 1, atol=1e-6)


def test_a_model_with_the_layers_saves_and_reloads(tmp_path, fer_sample):
    inputs = keras.Input((48, 48, 1))
    x = layers.augmentation(seed=0)(inputs)
    x = layers.PerImageNormalisation("standard")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = _batch(fer_sample, 4)
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)

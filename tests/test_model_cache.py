"""A cached model is reloaded only while its builder still makes the same architecture: the cache key
covers the builder's options, not its code, so a changed builder with the same name and options would
otherwise get the old model back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fer_lib import training
from fer_lib.data import TRAIN, VAL


@pytest.fixture(scope="module")
def small(fer_sample):
    """Real faces of the committed sample, shrunk to 8x8 so a Dense model trains in a second."""
    def arrays(split, per_class):
        faces = fer_sample.stratified_subset(per_class, splits=(split,))
        x = faces.images[:, ::6, ::6].reshape(len(faces), -1).astype("float32") / 255
        return x, faces.labels
    (x, y), (xv, yv) = arrays(TRAIN, 6), arrays(VAL, 2)
    return x, y, xv, yv, len(fer_sample.class_names)


def dense_builder(units: int, n_classes: int, n_inputs: int):
    def build():
        import keras

        inputs = keras.Input((n_inputs,))
        hidden = keras.layers.Dense(units, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(hidden))
    return build


CONFIG = training.TrainConfig(optimizer="adam", learning_rate=0.01, batch_size=16, epochs=1, patience=1,
                              reduce_lr_patience=None, weight_decay=0.0)


def test_a_changed_builder_retrains_and_the_same_builder_loads(small, tmp_path, capsys):
    x, y, xv, yv, n = small

    def fit(units):  # same name, options and data each time: the same cache key
        return training.fit(dense_builder(units, n, x.shape[1]), x, y, xv, yv, CONFIG, name="tiny",
                            options={"kind": "dense"}, cache_dir=tmp_path, verbose=0)

    first = fit(4)
    assert not first.from_cache
    again = fit(4)  # built anew (other auto-numbered layer names), same architecture: loaded
    assert again.from_cache and again.run_dir == first.run_dir
    assert "retraining" not in capsys.readouterr().out

    changed = fit(8)  # the builder's code changed, its options did not
    assert not changed.from_cache and changed.run_dir == first.run_dir  # key unchanged
    assert changed.model.layers[1].units == 8
    note = capsys.readouterr().out
    assert "retraining" in note and "4 cached, 8 now" in note
    aside = first.run_dir.with_name(first.run_dir.name + ".stale")
    assert (aside / "model.keras").is_file()  # the old run is kept, not overwritten
    assert json.loads((first.run_dir / "fit.json").read_text())["epochs_run"] == 1

    assert fit(8).from_cache  # the retrained model is the cache now


def test_a_stale_model_in_the_store_is_replaced_by_the_retrained_one(small, tmp_path, capsys):
    x, y, xv, yv, n = small
    store = tmp_path / "store"

    def fit(units, machine):
        return training.fit(dense_builder(units, n, x.shape[1]), x, y, xv, yv, CONFIG, name="stored",
                            cache_dir=tmp_path / machine, store=store, verbose=0)

    fit(4, "machine1")
    stored = store / fit(4, "machine1").run_dir.name
    assert (stored / "model.keras").is_file()
    retrained = fit(8, "machine2")  # a fresh machine reads the store's model back: stale, so retrained
    assert not retrained.from_cache and "retraining" in capsys.readouterr().out
    assert training.load_model(stored / "model.keras").layers[1].units == 8
    assert fit(8, "machine3").from_cache


def test_architecture_ignores_auto_numbered_names_and_sees_every_configured_value(small):
    _, _, _, _, n = small
    a, b = dense_builder(4, n, 64)(), dense_builder(4, n, 64)()
    assert [layer.name for layer in a.layers] != [layer.name for layer in b.layers]  # dense_1 vs dense_3 ...
    assert training.architecture(a) == training.architecture(b)
    assert training.stale_architecture(a, dense_builder(4, n, 64)) is None
    assert "units" in training.stale_architecture(a, dense_builder(5, n, 64))
    assert "shape" in training.stale_architecture(a, dense_builder(4, n, 65))
    state = np.random.get_state()[1].copy()
    training.stale_architecture(a, dense_builder(4, n, 64))
    assert (np.random.get_state()[1] == state).all()  # the check does not move the global random state

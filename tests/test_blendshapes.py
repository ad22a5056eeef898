"""The blendshape representation on real sample faces: augmentation before extraction, the relevance
rule, split arrays, the study's models (and their stateful copies), losses on integer labels, class
weights and keras-tuner's random search."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")
from fer_lib import blendshapes, experiment, face_mesh, training, tuning  # noqa: E402
from fer_lib.data import TEST, TRAIN, VAL, concatenate, lstm_study_three_classes  # noqa: E402
from fer_lib.face_mesh import FaceMeshFeatures  # noqa: E402


@pytest.fixture(scope="module")
def study(fer_sample, tmp_path_factory):
    """The sample under the LSTM study's three classes, its augmented Training copies appended, and
    MediaPipe's features of both."""
    faces = lstm_study_three_classes(fer_sample.stratified_subset(4, seed=1))
    copies = blendshapes.augmented_copies(faces.select_split(TRAIN), seed=0)
    cache = tmp_path_factory.mktemp("face_mesh")
    features = [face_mesh.extract_dataset(d, n_jobs=1, cache_dir=cache, progress=False) for d in (faces, copies)]
    return concatenate([faces, copies]), FaceMeshFeatures.concatenate(features)


def test_augmentation_flips_and_rotates_reproducibly(fer_sample):
    images = fer_sample.images[:6]
    np.testing.assert_array_equal(blendshapes.augment_images(images, flip=1.0, rotation=0.0), images[:, :, ::-1])
    np.testing.assert_array_equal(blendshapes.augment_images(images, flip=0.0, rotation=0.0), images)
    rotated = blendshapes.augment_images(images, seed=3)
    assert rotated.dtype == np.uint8 and rotated.shape == images.shape and not np.array_equal(rotated, images)
    np.testing.assert_array_equal(rotated, blendshapes.augment_images(images, seed=3))


def test_copies_keep_labels_and_split_under_their_own_ids(fer_sample):
    train = fer_sample.select_split(TRAIN)
    copies = blendshapes.augmented_copies(train)
    assert all(c == f"{i}~aug" for c, i in zip(copies.ids, train.ids))
    np.testing.assert_array_equal(copies.labels, train.labels)
    assert set(copies.split) == {TRAIN}
    both = concatenate([train, copies])
    assert len(both) == 2 * len(train)
    with pytest.raises(ValueError, match="occur twice"):
        concatenate([train, train])


def test_features_follow_their_images_through_subset_lookup_and_concatenation(study):
    dataset, features = study
    features.check_aligned(dataset)
    picked = dataset.subset(np.arange(len(dataset))[::3])
    looked_up = features.for_dataset(picked)
    np.testing.assert_array_equal(looked_up.ids, picked.ids)
    np.testing.assert_array_equal(looked_up.blendshapes, features.blendshapes[::3])
    with pytest.raises(KeyError, match="not extracted"):
        features.for_dataset(blendshapes.augmented_copies(dataset.select_split(TEST)))


def test_relevance_keeps_blendshapes_above_the_threshold_in_more_than_min_images():
    scores = np.zeros((300, 3))
    scores[:101, 0] = 0.5      # 101 images above 0.4: kept
    scores[:100, 1] = 0.9      # exactly 100: not kept ("more than")
    scores[:, 2] = 0.4         # never *above* 0.4
    table = blendshapes.relevance(scores, ["a", "b", "c"], threshold=0.4, min_images=100)
    assert table["kept"].tolist() == [True, False, False]
    assert blendshapes.kept_columns(table).tolist() == [0]
    with pytest.raises(ValueError, match="no blendshape"):
        blendshapes.kept_columns(blendshapes.relevance(scores, ["a", "b", "c"], min_images=1000))
    with pytest.raises(ValueError, match="NaN"):
        blendshapes.relevance(np.full((2, 3), np.nan), ["a", "b", "c"])


def test_split_arrays_hold_detected_faces_and_count_the_rest(study):
    dataset, features = study
    columns = [0, 5, 9]
    data = blendshapes.split_arrays(features, dataset, columns)
    for split in (TRAIN, VAL, TEST):
        members = dataset.split == split
        assert data.n_split[split] == members.sum()
        assert len(data.y[split]) == (members & features.detected).sum()
        assert data.x[split].shape[1] == 3 and not np.isnan(data.x[split]).any()
    first = np.flatnonzero((dataset.split == TEST) & features.detected)[0]
    np.testing.assert_allclose(data.x[TEST][0], features.blendshapes[first, columns])
    unread = blendshapes.unread_table(dataset, features)
    assert unread["total"].sum() == (~features.detected).sum()
    assert set(unread.columns) <= {TRAIN, VAL, TEST, f"{TRAIN} (augmented copies)", "total"}


def test_the_lstm_is_stacked_lstms_and_its_dense_ablation_has_none():
    lstm = blendshapes.build("study_lstm", 3, 27, units=14, layers=2, activation="selu")
    dense = blendshapes.build("study_dense", 3, 27, units=14, layers=2, activation="selu")
    assert [type(layer).__name__ for layer in lstm.layers].count("LSTM") == 2
    assert "LSTM" not in [type(layer).__name__ for layer in dense.layers]
    assert lstm.output_shape == dense.output_shape == (None, 3)
    with pytest.raises(KeyError, match="choose one of"):
        blendshapes.build("transformer", 3, 27)


def test_the_stateful_copy_carries_state_between_frames_until_reset():
    model = blendshapes.build("study_lstm", 3, 8, units=10)
    copy = blendshapes.stateful_copy(model, "study_lstm", 3, 8, {"units": 10})
    frame = np.random.default_rng(0).random((1, 8)).astype("float32")
    fresh = np.asarray(copy(frame))
    np.testing.assert_allclose(fresh, model.predict(frame, verbose=0), atol=1e-6)
    assert not np.allclose(np.asarray(copy(frame)), fresh)   # same frame, state now carried
    for layer in copy.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()
    np.testing.assert_allclose(np.asarray(copy(frame)), fresh, atol=1e-6)


@pytest.mark.parametrize("loss", training.LOSSES)
def test_one_hot_losses_train_on_integer_labels(loss, tmp_path):
    import keras

    from fer_lib.layers import OneHotLoss, margin_loss

    y = np.array([0, 2, 1, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.0, 0.5]], "float32")
    inner = margin_loss if loss == "margin" else keras.losses.get(loss)  # CapsNet's, not one of Keras' own
    expected = inner(np.eye(3)[y].astype("float32"), p)
    assert float(OneHotLoss(loss)(y, p)) == pytest.approx(float(np.mean(expected)), rel=1e-5)
    x = np.random.default_rng(0).random((24, 5)).astype("float32")
    labels = np.arange(24) % 3
    config = training.TrainConfig(optimizer="adamw", amsgrad=True, global_clipnorm=1.0, epochs=2, batch_size=8, loss=loss)
    fitted = training.fit(lambda: blendshapes.build("study_dense", 3, 5), x, labels, x, labels, config, name="loss",
                          cache_dir=tmp_path, verbose=0)
    assert fitted.epochs_run == 2 and np.isfinite(fitted.history[-1]["loss"])
    reloaded = training.fit(lambda: None, x, labels, x, labels, config, name="loss", cache_dir=tmp_path, verbose=0)
    assert reloaded.from_cache   # a saved model with the custom loss loads back


def test_config_fields_added_later_leave_old_cache_keys_alone_and_validate():
    plain = training.TrainConfig()
    later = {"amsgrad", "global_clipnorm", "class_weight", "jit_compile", "nesterov", "label_smoothing", "schedule",
             "warmup_epochs", "pipeline"}
    assert set(training.config_key(plain)) == set(training.TrainConfig.__dataclass_fields__) - later
    assert training.config_key(plain.with_(amsgrad=True))["amsgrad"] is True
    assert training.config_key(plain.with_(jit_compile=True))["jit_compile"] is True
    assert training.config_key(plain.with_(schedule="onecycle"))["schedule"] == "onecycle"
    assert training.class_weights(np.array([0, 0, 0, 1]), plain) is None
    weights = training.class_weights(np.array([0, 0, 0, 1]), plain.with_(class_weight="balanced"))
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    with pytest.raises(ValueError, match="class_weight"):
        training.TrainConfig(class_weight="inverse")
    with pytest.raises(ValueError, match="loss"):
        training.TrainConfig(loss="hinge")


def test_random_search_draws_model_options_and_training_values(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((60, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype(int)
    space = {"units": {"min": 4, "max": 12, "step": 4}, "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
             "activation": ["tanh", "relu"]}
    table, config, options = tuning.random_search(
        lambda o: blendshapes.build("study_dense", 2, 6, **o), space, x, y, x, y,
        training.TrainConfig(optimizer="adamw", batch_size=16), name="rs", max_trials=3, epochs=2, patience=1,
        options={"layers": 1}, cache_dir=tmp_path)
    assert len(table) == 3 and table.val_accuracy.is_monotonic_decreasing
    assert options["layers"] == 1 and options["units"] in (4, 8, 12) and options["activation"] in ("tanh", "relu")
    assert "learning_rate" not in options and 1e-4 <= config.learning_rate <= 1e-2
    assert config.learning_rate == table.learning_rate.iloc[0]
    with pytest.raises(ValueError, match="list of values"):
        tuning.random_search(lambda o: None, {"units": 8}, x, y, x, y, training.TrainConfig(), name="bad",
                             max_trials=1, epochs=1, cache_dir=tmp_path)


def test_a_random_forest_is_evaluated_and_recorded_like_the_networks(study, tmp_path, monkeypatch):
    from fer_lib import results

    (tmp_path / "params").mkdir()
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))
    dataset, features = study
    data = blendshapes.split_arrays(features, dataset)
    fields = {"chapter": "07_blendshapes", "representation": "blendshapes", "dataset": "fer2013",
              "label_set": dataset.label_set, "profile": "smoke", "seed": 0, "extract_ms_per_image": 1.0, "model": "rf"}
    run = experiment.train_classical(blendshapes.random_forest(n_estimators=5, n_jobs=1), data,
                                     class_names=dataset.class_names, record=fields, n_boot=50)
    assert run.record["n_eval"] == len(data.y[TEST]) and run.record["n_split"] == data.n_split[TEST]
    assert run.record["n_params"] > 0 and "fitted once (scikit-learn)" in experiment.results_sentence({"rf": run})
    saved = results.load_predictions("smoke", "07_blendshapes", "rf")
    assert (saved.y_pred == run.test_probabilities.argmax(1)).all()
    assert experiment.best_record("smoke", "blendshapes", label_set="happy_sad_unknown")["model"] == "rf"
    with pytest.raises(FileNotFoundError, match="emotion7"):
        experiment.best_record("smoke", "blendshapes")

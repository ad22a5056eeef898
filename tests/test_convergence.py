"""2D models trained to convergence (RQ1 revisited): the CPU-sized architectures, learning-rate
schedules, label smoothing, the tf.data pipeline, test-time augmentation and ensemble selection,
on real sample faces with tiny settings so each test takes seconds."""
from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from fer_lib import experiment, layers, pixels, training  # noqa: E402
from fer_lib.data import TEST, TRAIN, VAL  # noqa: E402


def test_mini_xception_has_the_published_size_and_shape():
    model = pixels.mini_xception(7)
    # Arriaga et al.'s mini-Xception for FER2013's 7 classes: 58,423 parameters
    assert model.count_params() == 58_423
    assert len([l for l in model.layers if isinstance(l, keras.layers.SeparableConv2D)]) == 8
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)


@pytest.mark.parametrize("name, options, n_convs", [("resnet18", {}, 1 + 16 + 3), ("vgg", {"depth": 11}, 8),
                                                    ("vgg", {"depth": 13}, 10)])
def test_cpu_sized_resnet_and_vgg_keep_the_imagenet_block_structure(name, options, n_convs):
    model = pixels.build(name, 7, **options)
    convs = [l for l in model.layers if type(l) is keras.layers.Conv2D]
    assert len(convs) == n_convs  # ResNet-18: stem + 8 blocks × 2 + 3 projections; VGG-11/13: 8/10
    assert model.output_shape == (None, 7) and model.count_params() < 1_000_000


def test_multiply_adds_count_convolutions_and_dense_layers():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)                   # 8·8·4·9·1 = 2,304
    x = keras.layers.SeparableConv2D(6, 3, padding="same")(x)               # 8·8·4·(9 + 6) = 3,840
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))                    # 384·5 = 1,920
    assert pixels.multiply_adds(keras.Model(inputs, x)) == 2304 + 3840 + 1920
    wider = pixels.study_cnn(7, width=64)
    assert pixels.multiply_adds(wider) > 3.5 * pixels.multiply_adds(pixels.study_cnn(7, width=32))


def test_schedules_warm_up_peak_and_decay():
    cosine = training.TrainConfig(learning_rate=0.1, epochs=10, schedule="cosine", warmup_epochs=2)
    assert training.learning_rate_at(cosine, 0.0) == 0.0
    assert training.learning_rate_at(cosine, 0.1) == pytest.approx(0.05)   # half-way through the warm-up
    assert training.learning_rate_at(cosine, 0.2) == pytest.approx(0.1)    # the peak, then half a cosine
    assert training.learning_rate_at(cosine, 0.6) == pytest.approx(0.05)
    assert training.learning_rate_at(cosine, 1.0) == pytest.approx(0.0, abs=1e-12)
    onecycle = cosine.with_(schedule="onecycle")
    assert training.learning_rate_at(onecycle, 0.0) == pytest.approx(0.1 / 25)
    assert training.learning_rate_at(onecycle, 0.3) == pytest.approx(0.1)
    assert training.learning_rate_at(onecycle, 1.0) == pytest.approx(0.1 / 25 / 1e4)
    with pytest.raises(ValueError, match="schedule"):
        training.TrainConfig(schedule="step")


def test_label_smoothing_matches_keras_categorical_cross_entropy():
    y = np.array([0, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], "float32")
    ours = layers.OneHotLoss("categorical_crossentropy", label_smoothing=0.1)(y, p)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], p)
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    assert float(ours) > float(keras.losses.SparseCategoricalCrossentropy()(y, p))  # smoothing penalises confidence
    config = training.TrainConfig(label_smoothing=0.1)
    assert isinstance(training.make_loss(config), layers.OneHotLoss)
    with pytest.raises(ValueError, match="cross-entropy"):
        training.TrainConfig(label_smoothing=0.1, loss="mean_squared_error")


def test_a_scheduled_tf_data_fit_follows_the_curve_and_resumes_on_it(tiny, tmp_path):
    """SGD with Nesterov momentum, label smoothing and a cosine schedule, fed by the tf.data pipeline:
    the logged learning rate is the curve's at each epoch's end, also after an interrupted fit resumes."""
    x, y, xv, yv, _ = tiny
    config = training.TrainConfig(epochs=4, batch_size=20, patience=10, schedule="cosine", warmup_epochs=1,
                                  nesterov=True, label_smoothing=0.1, pipeline="tf.data", learning_rate=0.05)
    build = lambda: pixels.vgg(7, depth=11, width=4, dense_units=8)  # noqa: E731

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.fit(build, x, y, xv, yv, config, name="s", cache_dir=tmp_path, verbose=0, callbacks=[Interrupt()])
    log = tmp_path / "progress.log"
    fitted = training.fit(build, x, y, xv, yv, config, name="s", cache_dir=tmp_path, verbose=0, log_path=log)
    steps = math.ceil(len(y) / config.batch_size)
    expected = [training.learning_rate_at(config, ((e + 1) * steps - 1) / (config.epochs * steps)) for e in range(4)]
    assert [row["learning_rate"] for row in fitted.history] == pytest.approx(expected, rel=1e-5)
    assert fitted.epochs_run == 4 and fitted.stopped_by == "schedule_end"
    assert [line.split(" epoch ")[1].split("/")[0] for line in log.read_text().splitlines()] == ["3", "4"]


def test_tta_views_shift_and_mirror_the_faces(fer_sample):
    x = fer_sample.images[:3, :, :, None].astype("float32")
    views = pixels.tta_views(x, flip=True, shift=2)
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1][:, 2:, 2:], x[:, :-2, :-2])    # moved down and right by 2 px
    np.testing.assert_array_equal(views[4][:, :-2, :-2], x[:, 2:, 2:])    # moved up and left
    np.testing.assert_array_equal(views[5], x[:, :, ::-1])                # the mirror image
    assert len(pixels.tta_views(x, flip=False, shift=0)) == 1


def test_ensemble_selection_picks_on_the_selection_split_and_skips_a_useless_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8                     # right, confidently
    complementary = np.full((300, 3), 1 / 3)
    complementary[:150] = good[:150]                  # right on half, unsure on the rest
    noise = rng.dirichlet(np.ones(3), 300)            # knows nothing
    weights = experiment.select_ensemble({"good": good, "half": complementary, "noise": noise}, y, rounds=10)
    assert "noise" not in weights and weights["good"] >= 0.5 and sum(weights.values()) == pytest.approx(1.0)


def test_weighted_ensemble_and_tta_rows_are_evaluated_like_any_model(fer_sample, tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))
    index = {s: np.flatnonzero(fer_sample.split == s) for s in (TRAIN, VAL, TEST)}
    data = experiment.SplitArrays.from_indices(fer_sample.images[..., None].astype("float32"), fer_sample, index)
    fields = {"chapter": "03_rq1_2d", "representation": "pixels_2d", "dataset": "fer2013", "label_set": "emotion7",
              "profile": "smoke", "seed": 0, "extract_ms_per_image": 0.0}
    specs = {"xception": {"model": "mini_xception", "options": {"widths": [4, 8]}},
             "resnet": {"model": "resnet18", "options": {"width": 4, "blocks": [1, 1]}}}
    runs = experiment.run_models(specs, build=lambda model, options, seed: lambda: pixels.build(model, 7, **options),
                                 inputs={"raw": data}, base=training.TrainConfig(epochs=1, batch_size=32),
                                 cache_prefix="test", class_names=fer_sample.class_names, record=fields)
    weighted = experiment.average_models(runs, data, fer_sample.class_names, record={**fields, "model": "ens"},
                                         weights={"xception": 3, "resnet": 1}, n_boot=20)
    expected = 0.75 * runs["xception"].test_probabilities + 0.25 * runs["resnet"].test_probabilities
    np.testing.assert_allclose(weighted.test_probabilities, expected, rtol=1e-6)
    assert weighted.record["member_weights"] == {"xception": 0.75, "resnet": 0.25}
    model = runs["xception"].fitted.model
    tta = experiment.test_time_augmented(runs["xception"], "xception_tta",
                                         lambda x: pixels.predict_tta(model, x, flip=True, shift=1), data,
                                         fer_sample.class_names, record=fields, n_boot=20)
    views = pixels.tta_views(data.x[TEST], flip=True, shift=1)
    np.testing.assert_allclose(tta.test_probabilities, np.mean([model.predict(v, verbose=0) for v in views], 0), atol=1e-5)
    assert tta.record["base_model"] == "xception" and tta.record["train_seconds"] == runs["xception"].record["train_seconds"]
    with pytest.raises(ValueError, match="unknown"):
        experiment.average_models(runs, data, fer_sample.class_names, record=None, weights={"vgg": 1})


@pytest.mark.parametrize("chapter", ["03_rq1_2d", "04_rq2_1_landmarks", "05_rq2_2_voxels", "06_rq2_3_mesh",
                                     "07_blendshapes", "08_sketches"])
def test_every_training_chapter_keeps_its_fits_in_the_committed_store_under_full_only(chapter):
    from fer_lib.params import load_params
    from fer_lib.paths import repo_root

    for profile in ("smoke", "sample"):  # CI's and the sample's fits stay in cache/
        assert training.model_store(load_params(profile, chapter)) is None
    store = training.model_store(load_params("full", chapter))
    assert store is not None and store.is_relative_to(repo_root()) and not store.is_relative_to(repo_root() / "cache")


def test_convergence_goals_compare_the_records_and_the_benchmark_with_the_targets(tmp_path):
    import json

    def record(accuracy, stopped_by="schedule_end"):
        return {"accuracy": accuracy, "accuracy_ci95": [accuracy - 0.01, accuracy + 0.01], "epochs_run": 40,
                "stopped_by": stopped_by}

    goals = {"best_single": 0.665, "ensemble": 0.70, "resnet_vgg": 0.62, "resnet_vgg_models": ["vgg11_w16", "resnet18_w16"],
             "study_cnn_speedup": 2.0}
    records = {"vgg11_w16": record(0.67), "resnet18_w16": record(0.64, stopped_by="time_budget")}
    bench = tmp_path / "pixels_speed.results.jsonl"
    assert pixels.study_cnn_speedup(bench) is None
    table = pixels.convergence_goals(goals, records, "vgg11_w16", record(0.69), bench)
    assert table["met"].tolist() == [True, False, True, False, False]  # ResNet: above 62 % but ended by its budget
    assert "not benchmarked" in table["measured"].iloc[-1] and "67.0%" in table["measured"].iloc[0]
    rows = [{"architecture": "study_cnn", "train_images_per_s_arrays": 40.0, "train_images_per_s_tf_data": 70.0},
            {"architecture": "vgg11_w16", "train_images_per_s_arrays": 100.0, "train_images_per_s_tf_data": 300.0},
            {"architecture": "study_cnn", "train_images_per_s_arrays": 50.0, "train_images_per_s_tf_data": 110.0}]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pixels.study_cnn_speedup(bench)["ratio"] == pytest.approx(2.2)  # the latest study-CNN row
    table = pixels.convergence_goals(goals, records, "vgg11_w16", record(0.71), bench)
    assert table["met"].tolist() == [True, True, True, False, True]


def test_the_study_cnn_speed_up_uses_each_paths_fastest_timing_when_the_benchmark_kept_them(tmp_path):
    import json

    row = {"architecture": "study_cnn", "train_images_per_s_arrays": 88.7, "train_images_per_s_tf_data": 50.0,
           "train_images_per_s_best": {"arrays": 96.9, "tf_data": 99.0}}  # bimodal timings: medians mislead
    bench = tmp_path / "pixels_speed.results.jsonl"
    bench.write_text(json.dumps(row) + "\n")
    speed = pixels.study_cnn_speedup(bench)
    assert speed["statistic"] == "fastest" and speed["ratio"] == pytest.approx(99.0 / 96.9)

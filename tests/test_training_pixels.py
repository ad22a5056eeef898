"""The 2D models, the shared training loop (cache, budget, resume), the grid search and Grad-CAM,
on real sample faces with tiny models so each test takes seconds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")
from fer_lib import gradcam, pixels, preprocess, training, tuning  # noqa: E402


def _small_cnn(n_classes):
    return lambda: pixels.study_cnn(n_classes, width=4, dense_units=8)


def test_study_cnn_has_the_studys_layers():
    model = pixels.study_cnn(7)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == 6 and len(dense) == 2 and len(norms) == 7
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_backbones_from_scratch_take_the_grey_face_and_feed_three_channels(name):
    model = pixels.build(name, 7)
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    assert model.get_layer("grey_to_rgb").output.shape[-1] == 3
    assert model.name == f"{name}_scratch"


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="resnet50"):
        pixels.build("alexnet", 7)


def test_model_inputs_are_float_faces_in_grey_levels(fer_sample):
    x = pixels.model_inputs(fer_sample.subset(np.arange(5)), preprocess.Preprocessing())
    assert x.shape == (5, 48, 48, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], fer_sample.images[:5])


def test_fit_keeps_the_best_epoch_and_rereads_from_cache(tiny, tmp_path):
    x, y, xv, yv, n = tiny
    config = training.TrainConfig(epochs=3, batch_size=16, patience=10, seed=1)
    first = training.fit(_small_cnn(n), x, y, xv, yv, config, name="t", cache_dir=tmp_path, verbose=0)
    assert not first.from_cache and first.epochs_run == 3 and first.stopped_by == "max_epochs"
    val_losses = [row["val_loss"] for row in first.history]
    assert first.best_epoch == int(np.argmin(val_losses)) + 1
    # the kept weights are the best epoch's: evaluating them reproduces its validation loss
    loss = first.model.evaluate(xv, yv, verbose=0)[0]
    assert loss == pytest.approx(min(val_losses), rel=1e-3)
    again = training.fit(_small_cnn(n), x, y, xv, yv, config, name="t", cache_dir=tmp_path, verbose=0)
    assert again.from_cache and again.run_dir == first.run_dir
    np.testing.assert_allclose(again.model.predict(xv, verbose=0), first.model.predict(xv, verbose=0), rtol=1e-5)
    other = training.fit(_small_cnn(n), x, y, xv, yv, config.with_(learning_rate=0.001), name="t",
                         cache_dir=tmp_path, verbose=0)
    assert not other.from_cache and other.run_dir != first.run_dir


def test_time_budget_stops_training_and_says_so(tiny, tmp_path):
    x, y, xv, yv, n = tiny
    config = training.TrainConfig(epochs=5, batch_size=16, time_budget_s=1e-3)
    result = training.fit(_small_cnn(n), x, y, xv, yv, config, name="b", cache_dir=tmp_path, verbose=0)
    assert result.stopped_by == "time_budget" and result.epochs_run == 1


def _interrupted_after(last_epoch: int):
    """A callback that ends the fit with an error once epoch ``last_epoch`` is recorded (a session's end)."""
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == last_epoch:
                raise RuntimeError("simulated interruption")

    return Interrupt()


def test_an_interrupted_fit_resumes_from_its_last_epoch(tiny, tmp_path):
    x, y, xv, yv, n = tiny

    config = training.TrainConfig(epochs=4, batch_size=16, patience=10)
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(_small_cnn(n), x, y, xv, yv, config, name="r", cache_dir=tmp_path,
                     callbacks=[_interrupted_after(1)], verbose=0)
    resumed = training.fit(_small_cnn(n), x, y, xv, yv, config, name="r", cache_dir=tmp_path, verbose=0)
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2, 3]  # no epoch twice, none lost
    assert resumed.epochs_run == 4 and resumed.train_seconds > 0


def test_early_stopping_counts_its_patience_over_the_epochs_of_earlier_sessions():
    previous = [{"epoch": i, "val_loss": v} for i, v in enumerate([1.0, 0.8, 0.9, 0.85, 0.95])]
    assert training.early_stopping_state(previous) == (0.8, 3)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    early = training.ResumedEarlyStopping(previous, patience=4)
    early.set_model(model)
    model.stop_training = False
    early.on_train_begin()
    early.on_epoch_end(5, {"val_loss": 0.9})  # the 4th epoch without beating 0.8: stop, as one run would
    assert model.stop_training and early.best_epoch == 1


def test_the_plateau_rule_resumes_where_keras_own_callback_stood():
    """Feed Keras' ReduceLROnPlateau some epochs (it cuts the rate), record them as a history, and the
    resumed callback replayed from that history is in the very same state: best, wait, cooldown."""
    losses = [1.0, 0.9, 0.95, 0.97, 0.96, 0.99, 0.8, 0.85, 0.86, 0.87, 0.9]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    straight = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5, patience=2, min_lr=1e-5,
                                                 cooldown=1)
    straight.set_model(model)
    straight.on_train_begin()
    history = []
    for epoch, loss in enumerate(losses):
        logs = {"val_loss": loss}
        straight.on_epoch_end(epoch, logs)
        history.append({"epoch": epoch, "val_loss": loss, "learning_rate": logs["learning_rate"]})
    assert float(model.optimizer.learning_rate) < 0.1  # the run did cut the rate
    resumed = training.ResumedPlateau(history, patience=2, factor=0.5, min_lr=1e-5)
    resumed.cooldown = 1
    resumed.set_model(model)
    resumed.on_train_begin()
    assert (resumed.best, resumed.wait, resumed.cooldown_counter) == (straight.best, straight.wait, straight.cooldown_counter)


def test_a_fit_whose_patience_ran_out_before_an_interruption_is_not_resumed(tiny, tmp_path, capsys):
    x, y, xv, yv, n = tiny

    config = training.TrainConfig(epochs=8, batch_size=16, patience=2)
    with pytest.raises(RuntimeError, match="simulated"):
        training.fit(_small_cnn(n), x, y, xv, yv, config, name="p", cache_dir=tmp_path, callbacks=[_interrupted_after(2)],
                     verbose=0)
    (run_dir,) = tmp_path.iterdir()
    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) == 3
    history["val_loss"] = [1.0, 2.0, 3.0]  # the best at the first epoch: the patience of 2 is spent
    history.to_csv(run_dir / "history.csv", index=False)
    result = training.fit(_small_cnn(n), x, y, xv, yv, config, name="p", cache_dir=tmp_path, verbose=0)
    assert "not resumed" in capsys.readouterr().out
    assert (result.epochs_run, result.best_epoch, result.stopped_by) == (3, 1, "early_stopping")


def test_a_fit_mirrored_in_a_store_resumes_and_reloads_on_a_fresh_machine(tiny, tmp_path):
    """A session ends mid-training; the next session's machine has an empty cache/ but the committed store:
    training resumes at the first unfinished epoch, and a third machine reads the finished model back."""
    x, y, xv, yv, n = tiny
    store = tmp_path / "store"

    class EndOfSession(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("simulated end of session")

    class Epochs(keras.callbacks.Callback):
        seen: list = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(epoch)

    config = training.TrainConfig(epochs=4, batch_size=16, patience=10)
    name = "s-kept blendshapes, all Training"  # chapter 7 names its fits like this
    with pytest.raises(RuntimeError, match="end of session"):
        training.fit(_small_cnn(n), x, y, xv, yv, config, name=name, cache_dir=tmp_path / "machine1", store=store,
                     callbacks=[EndOfSession()], verbose=0)
    (run,) = store.iterdir()
    assert run.name.startswith("s-kept_blendshapes__all_Training-")  # no quoting needed in git or a shell
    assert (run / "backup" / "latest.weights.h5").is_file() and not (run / "model.keras").exists()
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 2  # header + the two finished epochs
    counter = Epochs()
    resumed = training.fit(_small_cnn(n), x, y, xv, yv, config, name=name, cache_dir=tmp_path / "machine2", store=store,
                           callbacks=[counter], verbose=0)
    assert counter.seen == [2, 3] and [row["epoch"] for row in resumed.history] == [0, 1, 2, 3]
    assert sorted(p.name for p in run.iterdir()) == ["fit.json", "key.json", "model.keras"]  # finished: the model alone
    # kept for inference: without the optimizer's state, smaller than the cached model
    assert (run / "model.keras").stat().st_size < (resumed.run_dir / "model.keras").stat().st_size
    again = training.fit(_small_cnn(n), x, y, xv, yv, config, name=name, cache_dir=tmp_path / "machine3", store=store,
                         verbose=0)
    assert again.from_cache and again.epochs_run == 4
    np.testing.assert_allclose(again.model.predict(xv, verbose=0), resumed.model.predict(xv, verbose=0), rtol=1e-5)
    # a run over the size limit is not copied
    assert not training.sync_run(resumed.run_dir, tmp_path / "elsewhere", limit_mb=1e-6)
    assert not (tmp_path / "elsewhere").exists()


def test_a_store_miss_says_which_part_of_the_key_differs(tiny, tmp_path, capsys):
    """A fresh machine whose extraction gives other floats misses every stored run: the fit says that the
    arrays differ (not the options or the training), instead of retraining silently."""
    x, y, xv, yv, n = tiny
    store, config = tmp_path / "store", training.TrainConfig(epochs=1, batch_size=16)
    training.fit(_small_cnn(n), x, y, xv, yv, config, name="m", cache_dir=tmp_path / "one", store=store, verbose=0)
    (run,) = store.iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["fit.json", "key.json", "model.keras"]
    capsys.readouterr()
    brighter = np.clip(x * 1.1, 0, 1)  # another preprocessing of the same faces: other data
    training.fit(_small_cnn(n), brighter, y, xv, yv, config, name="m", cache_dir=tmp_path / "two", store=store, verbose=0)
    said = capsys.readouterr().out
    assert f"which holds {run.name}: other arrays; training anew" in said
    training.fit(_small_cnn(n), x, y, xv, yv, config.with_(learning_rate=0.5), name="m", cache_dir=tmp_path / "three",
                 store=store, verbose=0)
    assert "other training" in capsys.readouterr().out


def test_train_config_rejects_unknown_optimizers_and_converts_minutes():
    with pytest.raises(ValueError, match="optimizer"):
        training.TrainConfig(optimizer="rmsprop")
    assert training.TrainConfig.from_params({"time_budget_min": 2, "epochs": 3}).time_budget_s == 120


def test_grid_search_tries_every_combination_and_returns_the_best(tiny, tmp_path):
    x, y, xv, yv, n = tiny
    grid = {"batch_size": [16, 32], "learning_rate": [0.01, 0.001]}
    base = training.TrainConfig(epochs=1)
    table, best = tuning.grid_search(_small_cnn(n), grid, x, y, xv, yv, base, name="g", epochs=1, cache_dir=tmp_path)
    assert len(table) == 4
    assert set(map(tuple, table[["batch_size", "learning_rate"]].to_numpy().tolist())) == {
        (16, 0.01), (16, 0.001), (32, 0.01), (32, 0.001)}
    assert table["val_accuracy"].is_monotonic_decreasing
    assert isinstance(best.batch_size, int)
    assert (best.batch_size, best.learning_rate) == (int(table.batch_size[0]), float(table.learning_rate[0]))
    with pytest.raises(ValueError, match="not TrainConfig fields"):
        tuning.grid_search(_small_cnn(n), {"units": [8]}, x, y, xv, yv, base, name="g", epochs=1, cache_dir=tmp_path)


def test_a_search_kept_in_a_store_is_read_back_on_a_fresh_machine_without_training(tiny, tmp_path):
    x, y, xv, yv, n = tiny
    grid, base, store = {"learning_rate": [0.01, 0.001]}, training.TrainConfig(epochs=1), tmp_path / "store"
    first, best = tuning.grid_search(_small_cnn(n), grid, x, y, xv, yv, base, name="g", epochs=1,
                                     cache_dir=tmp_path / "machine1", store=store)
    (kept,) = store.iterdir()
    assert (kept / "oracle.json").is_file() and len(list(kept.glob("trial_*/trial.json"))) == 2
    assert not list(kept.rglob("*.h5"))  # the trials' weights stay out of git

    def no_training():
        raise AssertionError("a finished trial was trained again")

    again, best_again = tuning.grid_search(no_training, grid, x, y, xv, yv, base, name="g", epochs=1,
                                           cache_dir=tmp_path / "machine2", store=store)
    pd.testing.assert_frame_equal(again, first)
    assert best_again == best
    # a third machine's CPU rounds the extraction otherwise: other bytes, another project key, the same trials
    rounded = (x + np.random.default_rng(0).normal(0, 1e-6, x.shape)).astype(x.dtype)
    third, best_third = tuning.grid_search(no_training, grid, rounded, y, xv, yv, base, name="g", epochs=1,
                                           cache_dir=tmp_path / "machine3", store=store)
    pd.testing.assert_frame_equal(third, first)
    assert best_third == best and [p.name for p in (tmp_path / "machine3").iterdir()] != [kept.name]
    # other data is another search: it trains
    with pytest.raises(AssertionError, match="trained again"):
        tuning.grid_search(no_training, grid, np.clip(x * 1.1, 0, 1), y, xv, yv, base, name="g", epochs=1,
                           cache_dir=tmp_path / "machine4", store=store)


def _brightness_model():
    """Class 1's score grows with mean brightness through one 1x1 conv: Grad-CAM must follow the light."""
    inputs = keras.Input((48, 48, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(pooled)
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.array([[-0.01, 0.01]], "float32"), np.zeros(2, "float32")])
    return model


def test_gradcam_heat_follows_the_evidence_for_the_class():
    image = np.zeros((1, 48, 48, 1), "float32")
    image[0, 34:, 10:38] = 200.0  # light only in the mouth band
    model = _brightness_model()
    assert gradcam.last_conv_layer(model) == "conv"
    heat = gradcam.gradcam(model, image, class_index=1)
    assert heat.shape == (1, 48, 48) and heat.max() == pytest.approx(1.0)
    assert heat[0, 40, 20] > 0.9 and heat[0, 10, 20] < 0.05
    shares = gradcam.region_shares(heat)[0]
    assert shares[2] > 0.9  # mouth and chin
    # the other class is scored against brightness: no positive evidence anywhere
    assert gradcam.gradcam(model, image, class_index=0).max() == 0


def test_gradcam_needs_a_convolution():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no convolutional layer"):
        gradcam.last_conv_layer(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def test_load_model_imports_every_module_that_registers_keras_layers():
    """A zoo or cached model with a mesh, voxel or video layer must load in a fresh process: load_model
    imports each module whose source registers layers (found here by reading the sources)."""
    from pathlib import Path

    package = Path(training.__file__).parent
    registering = {p.stem for p in package.glob("*.py") if "register_keras_serializable" in p.read_text()}
    assert registering == set(training.LAYER_MODULES)


def test_the_running_clock_leaves_out_the_time_a_process_was_stopped():
    """A fold's training time is a reported cost and a budget: a process paused with SIGSTOP (to free
    the CPU for CI) must not count the pause, and one that was never stopped counts its wall time."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import time, sys; from fer_lib.training import RunningClock\n"
              "clock = RunningClock(tick=0.05, gap=0.3); wall, running = time.perf_counter(), clock.now()\n"
              "print('ready', flush=True); sys.stdin.readline()\n"
              "print(time.perf_counter() - wall, clock.now() - running, flush=True)\n")
    results = []
    for pause in (0.0, 2.0):
        child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        if pause:
            child.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            child.send_signal(signal.SIGCONT)
            time.sleep(0.3)  # the watcher wakes and counts the gap
        out, _ = child.communicate("go\n", timeout=30)
        results.append(tuple(map(float, out.split())))
    (wall, running), (paused_wall, paused_running) = results
    assert wall - running < 0.2  # never stopped: running time is wall time
    assert paused_wall > 2.5 and abs((paused_wall - paused_running) - 2.0) < 0.4


def test_a_stored_fit_is_read_back_on_arrays_that_differ_only_in_float_round_off(tiny, tmp_path, capsys):
    """Another CPU rounds MediaPipe's floats otherwise: the arrays' bytes (and the fit's key) change, but their
    fingerprint does not, so the stored model is read back instead of retrained. A changed face is other data."""
    x, y, xv, yv, n = tiny
    store, config = tmp_path / "store", training.TrainConfig(epochs=1, batch_size=16)
    first = training.fit(_small_cnn(n), x, y, xv, yv, config, name="m", cache_dir=tmp_path / "one", store=store, verbose=0)
    (run,) = store.iterdir()
    rounded = (x + np.random.default_rng(0).normal(0, 1e-6, x.shape)).astype(x.dtype)
    assert training.array_digest(rounded) != training.array_digest(x)
    assert training.same_data(training.array_fingerprint(x, y, xv, yv), training.array_fingerprint(rounded, y, xv, yv))
    capsys.readouterr()
    again = training.fit(_small_cnn(n), rounded, y, xv, yv, config, name="m", cache_dir=tmp_path / "two", store=store,
                         verbose=0)
    assert again.from_cache and f"using {run.name} from the store" in capsys.readouterr().out
    assert again.stored_run == run.name and again.run_dir.name != run.name  # the record names the committed folder
    np.testing.assert_allclose(again.model.predict(xv, verbose=0), first.model.predict(xv, verbose=0), rtol=1e-5)
    assert [p.name for p in store.iterdir()] == [run.name]  # no second copy
    other_face = x.copy()
    other_face[0] = x[-1]
    assert not training.same_data(training.array_fingerprint(x, y, xv, yv), training.array_fingerprint(other_face, y, xv, yv))
    relabelled = y.copy()
    relabelled[0] = (relabelled[0] + 1) % n
    assert not training.same_data(training.array_fingerprint(x, y, xv, yv), training.array_fingerprint(x, relabelled, xv, yv))

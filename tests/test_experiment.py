"""The shared experiment step: train → evaluate → record → per-image predictions → paired comparison
with the best 2D model, on real sample faces."""
from __future__ import annotations

import numpy as np
import pytest

from fer_lib import experiment, pixels, results, training
from fer_lib.data import TEST, TRAIN, VAL


def test_paired_difference_counts_discordant_images_and_bounds_the_difference():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    a = y.copy()
    a[[0, 1]] = 9                      # a wrong on 2 images
    b = y.copy()
    b[[2, 3, 4, 5, 0]] = 9             # b wrong on 5 images, one of them shared with a
    out = results.paired_difference(y, a, b, n_boot=500)
    assert (out["accuracy_a"], out["accuracy_b"]) == (0.8, 0.5)
    assert (out["only_a_right"], out["only_b_right"]) == (4, 1)
    assert out["difference"] == pytest.approx(0.3)
    assert out["difference_ci95_low"] <= 0.3 <= out["difference_ci95_high"]
    assert 0 < out["mcnemar_p"] < 1
    same = results.paired_difference(y, a, a, n_boot=100)
    assert same["difference"] == 0 and same["mcnemar_p"] == 1.0


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A throwaway book root: records, predictions and model caches go there, not into the repo."""
    (tmp_path / "params").mkdir()
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))
    return tmp_path


def _pixel_arrays(fer_sample):
    index = {s: np.flatnonzero(fer_sample.split == s) for s in (TRAIN, VAL, TEST)}
    return experiment.SplitArrays.from_indices(fer_sample.images[..., None].astype("float32"), fer_sample, index)


def test_train_and_evaluate_writes_a_record_and_predictions_that_versus_2d_compares(fer_sample, book):
    data = _pixel_arrays(fer_sample)
    config = training.TrainConfig(epochs=1, batch_size=32)
    fields = {"chapter": "03_rq1_2d", "representation": "pixels_2d", "dataset": "fer2013", "label_set": "emotion7",
              "profile": "smoke", "seed": 0, "extract_ms_per_image": 0.0}
    runs = experiment.run_models(
        {"tiny_cnn": {"model": "study_cnn", "options": {"width": 4, "dense_units": 8}, "time_budget_min": None}},
        build=lambda model, options, seed: lambda: pixels.build(model, 7, seed=seed, **options),
        inputs={"raw": data}, base=config, cache_prefix="test", class_names=fer_sample.class_names, record=fields)
    record = runs["tiny_cnn"].record
    assert record["n_eval"] == record["n_split"] == len(data.y[TEST]) and record["n_train"] == len(data.y[TRAIN])
    saved = results.load_predictions("smoke", "03_rq1_2d", "tiny_cnn")
    assert list(saved.id) == list(data.ids[TEST]) and (saved.y_true.to_numpy() == data.y[TEST]).all()
    assert (saved.y_pred == runs["tiny_cnn"].test_probabilities.argmax(1)).all()
    # PublicTest predictions beside them, so fusion weights can be chosen without PrivateTest
    selection = results.load_predictions("smoke", "03_rq1_2d", "tiny_cnn", split=results.SELECTION)
    assert list(selection.id) == list(data.ids[VAL]) and (selection.y_true.to_numpy() == data.y[VAL]).all()
    np.testing.assert_allclose(selection.filter(like="p_").to_numpy(), runs["tiny_cnn"].val_probabilities, atol=1e-5)
    assert experiment.best_record("smoke", "pixels_2d")["model"] == "tiny_cnn"

    # another representation that lost the first third of PrivateTest: compared on the rest only
    kept = np.arange(len(data.y[TEST]))[len(data.y[TEST]) // 3:]
    guesses = np.zeros(len(kept), int)
    table, paired = experiment.versus_2d("smoke", "guess_angry", data.ids[TEST][kept], data.y[TEST][kept], guesses,
                                         n_split=len(data.y[TEST]))
    assert paired["n"] == len(kept) and paired["best_2d"] == "tiny_cnn"
    assert paired["accuracy_a"] == pytest.approx((data.y[TEST][kept] == 0).mean())
    assert paired["accuracy_b"] == pytest.approx((saved.y_pred.to_numpy()[kept] == data.y[TEST][kept]).mean())
    assert table.accuracy.iloc[-1] == pytest.approx(paired["accuracy_a"] * len(kept) / len(data.y[TEST]))
    with pytest.raises(ValueError, match="disagree"):
        experiment.versus_2d("smoke", "x", data.ids[TEST][kept], (data.y[TEST][kept] + 1) % 7, guesses, len(data.y[TEST]))


def test_run_models_names_a_missing_input(fer_sample, book):
    data = _pixel_arrays(fer_sample)
    with pytest.raises(KeyError, match="voxels"):
        experiment.run_models({"m": {"model": "study_cnn", "input": "voxels"}}, build=None,
                              inputs={"raw": data, "other": data}, base=training.TrainConfig(), cache_prefix="t",
                              class_names=fer_sample.class_names, record={})


def test_versus_2d_without_2d_results_says_which_chapter_to_run(book):
    with pytest.raises(FileNotFoundError, match="pixels_2d"):
        experiment.versus_2d("smoke", "m", ["a"], [0], [0], 1)


def test_ensemble_averages_the_members_probabilities_and_sums_their_costs(fer_sample, book):
    data = _pixel_arrays(fer_sample)
    specs = {f"cnn_{width}": {"model": "study_cnn", "options": {"width": width, "dense_units": 8}} for width in (4, 6)}
    fields = {"chapter": "03_rq1_2d", "representation": "pixels_2d", "dataset": "fer2013", "label_set": "emotion7",
              "profile": "smoke", "seed": 0, "extract_ms_per_image": 0.0}
    runs = experiment.run_models(specs, build=lambda model, options, seed: lambda: pixels.build(model, 7, **options),
                                 inputs={"raw": data}, base=training.TrainConfig(epochs=1, batch_size=32),
                                 cache_prefix="test", class_names=fer_sample.class_names, record=fields)
    both = experiment.average_models(runs, data, fer_sample.class_names, record={**fields, "model": "ensemble"}, n_boot=50)
    mean = (runs["cnn_4"].test_probabilities + runs["cnn_6"].test_probabilities) / 2
    np.testing.assert_allclose(both.test_probabilities, mean)
    assert both.record["accuracy"] == pytest.approx((mean.argmax(1) == data.y[TEST]).mean())
    assert both.record["n_params"] == runs["cnn_4"].record["n_params"] + runs["cnn_6"].record["n_params"]
    assert both.record["members"] == ["cnn_4", "cnn_6"] and both.fitted is None
    assert (results.load_predictions("smoke", "03_rq1_2d", "ensemble").y_pred == mean.argmax(1)).all()
    assert "average of cnn_4, cnn_6" in experiment.results_sentence({"ensemble": both})
    # an ensemble never stands for "the best 2D model", whatever its PublicTest accuracy
    assert experiment.best_record("smoke", "pixels_2d")["model"] in ("cnn_4", "cnn_6")


def test_fold_store_resumes_a_cross_validation_without_models_and_retrains_on_any_change(ck_sample, book, monkeypatch):
    """A fresh machine has no cache/models: the committed fold outcomes alone rebuild the same record, and
    folds not yet stored (or stored under another fit key) are the only ones trained."""
    dataset = ck_sample.relabel("valence4")
    x = np.random.default_rng(0).uniform(0, 255, (len(dataset), 48, 48, 1)).astype("float32")
    folds = experiment.subject_folds(dataset.subject, dataset.labels, 3)
    config = training.TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=1, batch_size=16)
    store = book / "results" / "folds"

    def tiny_network():
        import keras
        return keras.Sequential([keras.Input((48, 48, 1)), keras.layers.AveragePooling2D(8), keras.layers.Flatten(),
                                 keras.layers.Dense(4, activation="softmax")])

    def run(options, cache_name="cv", images=x):
        return experiment.cross_validate(tiny_network, images, dataset.labels,
                                         dataset.subject, dataset.ids, folds, config, cache_name=cache_name,
                                         options=options, class_names=dataset.class_names, record=None, n_boot=0,
                                         fold_store=store)

    first = run({"width": 2})
    assert sorted(p.name.split("-")[0] for p in (store / "cv").iterdir()) == ["fold000", "fold001", "fold002"]
    assert (first.folds["from cache"] == "trained").all()

    # cache/models gone (a fresh clone): the stored outcomes give the same predictions, record and table
    import shutil
    shutil.rmtree(book / "cache" / "models")
    real_fit = training.fit
    trained = []
    monkeypatch.setattr(training, "fit", lambda *a, **k: trained.append(k["name"]) or real_fit(*a, **k))
    again = run({"width": 2})
    assert trained == [] and (again.folds["from cache"] == "fold store").all()
    np.testing.assert_allclose(again.probabilities, first.probabilities, atol=1e-6)
    assert again.record["accuracy"] == first.record["accuracy"] and again.record["n_params"] == first.record["n_params"]
    assert again.fits == [None, None, None]

    # an interrupted run: one fold missing trains just that fold
    next((store / "cv").glob("fold001-*.json")).unlink()
    run({"width": 2})
    assert trained == ["cv-fold01"]
    # other options are another fit key: every fold retrains, beside (not over) the first run's folds, so the
    # two cross-validations under one name (as chapter 9's learning-rate ablation and its tuned network) both resume
    run({"width": 3})
    assert trained == ["cv-fold01", "cv-fold00", "cv-fold01", "cv-fold02"]
    assert len(list((store / "cv").iterdir())) == 6
    run({"width": 2}), run({"width": 3})
    assert len(trained) == 4
    # a fold whose test images differ (other folds) is not read from the store
    import json
    key = json.loads(next((store / "cv").glob("fold000-*.json")).read_text())["key"]
    assert experiment.FoldOutcome.read(store, "cv", 0, key, dataset.ids[folds[0]]) is not None
    assert experiment.FoldOutcome.read(store, "cv", 0, key, dataset.ids[folds[1]]) is None
    # another CPU's rounding of the same images: other bytes and fit keys, the same folds, read back
    rounded = (x + np.random.default_rng(1).normal(0, 1e-4, x.shape)).astype("float32")
    assert training.fit_key("cv-fold00", {}, config, rounded, dataset.labels, x, dataset.labels) != \
        training.fit_key("cv-fold00", {}, config, x, dataset.labels, x, dataset.labels)
    read_back = run({"width": 2}, images=rounded)
    assert len(trained) == 4 and (read_back.folds["from cache"] == "fold store").all()
    np.testing.assert_allclose(read_back.probabilities, again.probabilities, atol=1e-6)
    run({"width": 2}, images=np.clip(x * 1.1, 0, 255))  # other images: every fold trains
    assert len(trained) == 7

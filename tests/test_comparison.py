"""The comparison chapter's logic on records and predictions written the way the chapters write them, for
the sample's real PrivateTest/PublicTest faces, with predictions made to fail in known ways."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_lib import comparison, results
from fer_lib.data import TEST, VAL

CHAPTERS = {"pixels_2d": "03_rq1_2d", "landmarks_3d": "04_rq2_1_landmarks", "blendshapes": "07_blendshapes"}


@pytest.fixture
def book(tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))
    return tmp_path


def _scores(y, right, n_classes, rng, confidence=0.6):
    """Class probabilities whose argmax is the label where ``right``, another class elsewhere."""
    predicted = np.where(right, y, (y + 1 + rng.integers(0, n_classes - 1, len(y))) % n_classes)
    p = rng.uniform(0, 0.1, (len(y), n_classes))
    p[np.arange(len(y)), predicted] = confidence
    return p / p.sum(1, keepdims=True)


def _write(representation, model, faces, right, kept, rng, val_accuracy, cost_ms):
    """A record and both prediction files as a chapter writes them: PrivateTest (``right``: which are
    correct; ``kept``: which have a face) and PublicTest."""
    test, val = np.flatnonzero(faces.split == TEST), np.flatnonzero(faces.split == VAL)
    n = len(faces.class_names)
    y_test = faces.labels[test][kept]
    p_test = _scores(y_test, right[kept], n, rng)
    metrics = results.evaluate(y_test, p_test, faces.class_names, n_split=len(test), n_boot=50)
    record = results.make_record(metrics, chapter=CHAPTERS[representation], representation=representation,
                                 model=model, dataset="fer2013", label_set="emotion7", split=TEST, profile="smoke",
                                 seed=0, extract_ms_per_image=cost_ms, infer_ms_per_image=0.5, train_seconds=60.0,
                                 n_params=1000, val_accuracy=val_accuracy)
    results.write_record(record)
    results.write_predictions(record, faces.ids[test][kept], y_test, p_test)
    y_val = faces.labels[val]
    results.write_predictions(record, faces.ids[val], y_val, _scores(y_val, rng.random(len(val)) < 0.6, n, rng),
                              split=results.SELECTION)
    return record


def test_the_comparison_reads_each_representations_best_model_and_compares_on_shared_faces(book, fer_sample):
    rng = np.random.default_rng(0)
    n_test = int((fer_sample.split == TEST).sum())
    everyone = np.ones(n_test, bool)
    pixels_right = rng.random(n_test) < 0.7
    _write("pixels_2d", "good_cnn", fer_sample, pixels_right, everyone, rng, 0.70, 0.0)
    _write("pixels_2d", "weak_cnn", fer_sample, rng.random(n_test) < 0.3, everyone, rng, 0.30, 0.0)
    # landmarks fail on the same faces as the 2D model, and lose the last 5 faces
    landmarks_kept = np.arange(n_test) < n_test - 5
    _write("landmarks_3d", "mlp", fer_sample, pixels_right, landmarks_kept, rng, 0.60, 10.0)
    # blendshapes are right exactly where the 2D model is wrong
    _write("blendshapes", "forest", fer_sample, ~pixels_right, everyone, rng, 0.40, 5.0)

    best, missing = comparison.best_models("smoke")
    assert {rep: r["model"] for rep, r in best.items()} == {"pixels_2d": "good_cnn", "landmarks_3d": "mlp",
                                                            "blendshapes": "forest"}
    assert set(missing) == {"voxels_3d", "mesh_3d", "sketch"} and "05_rq2_2_voxels" in missing["voxels_3d"]

    table = comparison.comparison_table(best)
    assert table.loc["landmarks (478×3)", "coverage"] == pytest.approx((n_test - 5) / n_test)
    assert table.loc["2D pixels", "seed's accuracy"] == 0.62 and table.loc["blendshapes (52)", "ms per image"] == 5.5

    test = comparison.aligned_predictions("smoke", best)
    pairs = comparison.pairwise_tests(test, n_boot=100)
    assert pairs["shared images"].loc["pixels_2d", "landmarks_3d"] == n_test - 5
    assert pairs["difference"].loc["pixels_2d", "blendshapes"] == pytest.approx(2 * pixels_right.mean() - 1)
    assert pairs["difference"].loc["blendshapes", "pixels_2d"] == pytest.approx(1 - 2 * pixels_right.mean())
    assert pairs["McNemar p"].loc["pixels_2d", "landmarks_3d"] == 1.0  # never only one of them right

    correlation = comparison.error_correlation(test)
    assert correlation.loc["pixels_2d", "landmarks_3d"] == pytest.approx(1.0)
    assert correlation.loc["pixels_2d", "blendshapes"] == pytest.approx(-1.0)
    assert len(comparison.always_wrong(test)) == 0  # blendshapes are right wherever the others fail

    # fusion: weights from PublicTest only; PrivateTest images a member lacks are fused from the others
    selection = comparison.aligned_predictions("smoke", best, split=results.SELECTION)
    fusion = comparison.late_fusion(selection, test, fer_sample.class_names, rounds=10)
    assert sum(fusion.weights.values()) == pytest.approx(1.0)
    assert len(fusion.ids) == n_test and fusion.members_per_image.min() >= 1
    lacking = fusion.ids.isin(test["pixels_2d"].index.difference(test["landmarks_3d"].index))
    expected = (fusion.members_per_image[lacking] == sum(w > 0 for r, w in fusion.weights.items() if r != "landmarks_3d"))
    assert expected.all()
    np.testing.assert_allclose(fusion.probabilities.sum(1), 1.0, atol=1e-4)


def test_fusing_one_member_returns_its_own_predictions_and_labels(book, fer_sample):
    rng = np.random.default_rng(1)
    n_test = int((fer_sample.split == TEST).sum())
    _write("pixels_2d", "cnn", fer_sample, rng.random(n_test) < 0.5, np.ones(n_test, bool), rng, 0.5, 0.0)
    best, _ = comparison.best_models("smoke", representations=("pixels_2d",))
    test = comparison.aligned_predictions("smoke", best)
    fused = comparison.fuse(test, {"pixels_2d": 1.0}, fer_sample.class_names)
    assert (fused.y_pred == test["pixels_2d"].loc[fused.ids, "y_pred"].to_numpy()).all()
    assert (fused.y_true == test["pixels_2d"].loc[fused.ids, "y_true"].to_numpy()).all()


def test_labels_that_disagree_between_representations_are_an_error(book, fer_sample):
    rng = np.random.default_rng(2)
    n_test = int((fer_sample.split == TEST).sum())
    for representation in ("pixels_2d", "landmarks_3d"):
        _write(representation, "m", fer_sample, rng.random(n_test) < 0.5, np.ones(n_test, bool), rng, 0.5, 0.0)
    path = results.predictions_path("smoke", "04_rq2_1_landmarks", "m")
    table = pd.read_csv(path, dtype={"id": str})
    table.loc[0, "y_true"] = (table.loc[0, "y_true"] + 1) % 7
    table.to_csv(path, index=False)
    best, _ = comparison.best_models("smoke", representations=("pixels_2d", "landmarks_3d"))
    with pytest.raises(ValueError, match="different labels"):
        comparison.aligned_predictions("smoke", best)


def test_the_pareto_front_keeps_only_undominated_models():
    accuracy = [0.70, 0.60, 0.65, 0.50, 0.70]
    cost = [10.0, 1.0, 20.0, 1.0, 10.0]
    # 0.65 at 20 ms is beaten by 0.70 at 10 ms; 0.50 at 1 ms by 0.60 at 1 ms; the two equal points stay
    assert comparison.pareto_front(accuracy, cost).tolist() == [True, True, False, False, True]

"""The emotion sketch on real sample faces: normalisation targets, shifts, strokes, the 68-from-478 map,
lost faces, the networks (CapsNet round trip, weights files) and the subject-wise folds."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fer_lib import experiment, face_mesh, results, sketches, training
from fer_lib.capsules import ClassCapsules
from fer_lib.paths import repo_root


@pytest.fixture(scope="module")
def jaffe_marks(jaffe_sample):
    """dlib's points of the JAFFE sample faces (every one is found by the Haar box)."""
    marks = sketches.landmark_dataset(jaffe_sample, mediapipe=None, n_jobs=1, cache=False)
    assert marks.found.all() and set(marks.source) == {"haar"}
    return marks


def test_normalisation_sends_the_reference_points_to_the_studys_targets(jaffe_marks):
    normalised = sketches.normalise(jaffe_marks.points)
    assert np.allclose(normalised[:, 0, 0], 10) and np.allclose(normalised[:, 16, 0], 240)
    assert np.allclose(normalised[:, 27, 1], 70) and np.allclose(normalised[:, 33, 1], 210)
    # one face alone gives the same as the batch, and another style moves the targets with it
    assert np.allclose(sketches.normalise(jaffe_marks.points[3]), normalised[3])
    small = sketches.normalise(jaffe_marks.points[3], sketches.SketchStyle().scaled(50))
    assert np.allclose(small[[0, 16], 0], [2, 48]) and np.allclose(small[[27, 33], 1], [14, 42])


def test_normalisation_is_the_studys_formula_per_axis(jaffe_marks):
    points = jaffe_marks.points[0]
    x0, x16 = points[0, 0], points[16, 0]
    x = points[48, 0]  # a mouth corner
    expected = (240 * (x - x0) + 10 * (x16 - x)) / (x16 - x0)
    assert sketches.normalise(points)[48, 0] == pytest.approx(expected)


def test_degenerate_or_missing_points_are_refused():
    flat = np.zeros((68, 2))
    with pytest.raises(sketches.DegenerateLandmarks, match="FL0 and FL16"):
        sketches.normalise(flat)
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        sketches.normalise(np.zeros((5, 2)))


def test_shifts_move_eyes_down_and_mouth_up_and_leave_the_rest(jaffe_marks):
    normalised = sketches.normalise(jaffe_marks.points)
    shifted = sketches.shift_parts(normalised)
    delta = shifted - normalised
    assert np.allclose(delta[:, list(sketches.EYE_PARTS), 1], 50)
    assert np.allclose(delta[:, list(sketches.MOUTH_PARTS), 1], -70)
    untouched = [i for i in range(68) if i not in sketches.EYE_PARTS + sketches.MOUTH_PARTS]
    assert np.allclose(delta[:, untouched], 0) and np.allclose(delta[..., 0], 0)


def _width_across(sketch, p, q):
    """How wide the stroke from p to q is, measured along its normal through the segment's middle."""
    middle, direction = (p + q) / 2, (q - p) / np.linalg.norm(q - p)
    normal = np.array([-direction[1], direction[0]])
    steps = np.arange(-12, 12.01, 0.1)
    samples = np.round(middle + steps[:, None] * normal).astype(int)
    inside = sketch[samples[:, 1], samples[:, 0]] > 0
    assert inside[len(steps) // 2], "the stroke should cover its own segment"
    return inside.sum() * 0.1


@pytest.mark.parametrize("width", [7, 3])
def test_strokes_have_the_line_width(jaffe_marks, width):
    style = sketches.SketchStyle(line_width=width)
    for points in jaffe_marks.points[:5]:
        sketch = sketches.render(points, style)
        assert sketch.shape == (250, 250) and sketch.dtype == np.uint8 and set(np.unique(sketch)) == {0, 255}
        shifted = np.round(sketches.shift_parts(sketches.normalise(points, style), style))
        # across the middle of an eyebrow segment (eyebrows stand apart from every other stroke)
        for a, b in ((18, 19), (24, 25)):
            assert width - 1 <= _width_across(sketch, shifted[a], shifted[b]) <= width + 1.5
        # nothing is drawn on the nose: it is not part of the sketch
        nose = shifted[30].astype(int)
        assert not (0 <= nose[1] < 250) or sketch[nose[1], nose[0]] == 0


def test_render_shrinks_to_the_networks_size(jaffe_marks):
    small = sketches.render(jaffe_marks.points[:4], output_size=48)
    assert small.shape == (4, 48, 48) and small.max() > 128
    inputs = sketches.model_inputs(jaffe_marks, size=32)
    assert inputs.shape == (len(jaffe_marks), 32, 32, 1) and inputs.dtype == np.float32


def test_part_masks_cover_their_strokes(jaffe_marks):
    masks = sketches.part_masks(jaffe_marks.points[:3], size=48)
    sketch = sketches.render(jaffe_marks.points[:3], output_size=48) > 0
    assert masks.shape == (3, 3, 48, 48)
    union = masks.any(axis=1)
    assert (union & sketch).sum() / sketch.sum() > 0.9  # the three groups are the whole drawing
    assert not (masks[:, 0] & masks[:, 2]).any()  # eyebrows and mouth never overlap


@pytest.fixture(scope="module")
def both_sources(jaffe_sample, ck_sample):
    """dlib's and MediaPipe's points of the sample faces both find (JAFFE, and CK+ upscaled as the chapter does)."""
    from dataclasses import replace

    from fer_lib.preprocess import resize

    big_ck = replace(ck_sample, images=np.stack([resize(image, 256) for image in ck_sample.images]))
    dlib_points, mp_points = [], []
    for dataset in (jaffe_sample, big_ck):
        marks = sketches.landmark_dataset(dataset, mediapipe=None, n_jobs=1, cache=False)
        features = face_mesh.extract_dataset(dataset, n_jobs=1, cache=False, progress=False)
        both = marks.found & features.detected
        dlib_points.append(marks.points[both])
        mp_points.append(features.landmarks[both])
    return np.concatenate(dlib_points), np.concatenate(mp_points)


def test_68_from_478_map_rederived_from_sample_faces(both_sources):
    dlib_points, mp_points = both_sources
    assert len(dlib_points) >= 60
    derived = sketches.derive_index_map(dlib_points, mp_points)
    packaged = sketches.default_index_map()
    assert derived.shape == (68,) and len(set(derived.tolist())) == 68  # one landmark per point
    assert len(set(packaged.tolist())) == 68 and packaged.max() < face_mesh.N_LANDMARKS
    # the packaged map (derived on the full JAFFE and CK+48) fits these faces nearly as well as their own map,
    # and both place the mapped points within a tenth of the eye distance of dlib's on average
    own = sketches.map_error(dlib_points, mp_points, derived)["mean error / inter-ocular"].mean()
    shipped = sketches.map_error(dlib_points, mp_points, packaged)["mean error / inter-ocular"].mean()
    assert shipped < 0.1 and own <= shipped + 1e-9 and shipped < own * 1.25
    # most points map to the same landmark whichever faces the map is derived from
    assert (derived == packaged).sum() >= 40
    # a mapped sketch normalises like dlib's: eye corners and mouth corners land near dlib's
    mapped = sketches.normalise(sketches.from_mediapipe(mp_points))
    own_points = sketches.normalise(dlib_points)
    corners = [36, 45, 48, 54]
    assert np.abs(mapped[:, corners] - own_points[:, corners]).mean() < 12  # px of the 250-px canvas


def test_derive_index_map_refuses_mismatched_or_missing_faces(both_sources):
    dlib_points, mp_points = both_sources
    with pytest.raises(ValueError, match="same faces"):
        sketches.derive_index_map(dlib_points[:3], mp_points[:4])
    broken = mp_points[:3].copy()
    broken[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sketches.derive_index_map(dlib_points[:3], broken)


def test_a_face_with_no_landmarks_is_counted_lost_with_its_id(fer_sample, tmp_path):
    # FER2013's blank frames (kept in the sample) have no face for any source
    blank = np.flatnonzero(fer_sample.images.reshape(len(fer_sample), -1).std(1) < 1)
    assert len(blank) >= 1
    picks = np.concatenate([blank, np.arange(6)])
    small = fer_sample.subset(picks)
    marks = sketches.landmark_dataset(small, n_jobs=1, cache=True, cache_dir=tmp_path)  # MediaPipe on the misses
    assert list(marks.source[: len(blank)]) == [sketches.LOST] * len(blank)
    assert np.isnan(marks.points[: len(blank)]).all()
    lost = marks.lost(small)
    assert set(fer_sample.ids[blank]) <= set(lost.id)
    table = marks.coverage_table(small)
    assert table.loc["all", sketches.LOST] == len(lost) and table.loc["all", "images"] == len(small)
    assert table.loc["all", "coverage"] == pytest.approx(1 - len(lost) / len(small))
    # the lost faces stay out of the model inputs, but count against coverage
    data = marks.split_arrays(sketches.model_inputs(marks, size=48), small)
    assert sum(len(y) for y in data.y.values()) == int(marks.found.sum())
    assert sum(data.n_split.values()) == len(small)
    # a second call reads the dlib stage back from the cache
    again = sketches.landmark_dataset(small, n_jobs=1, cache=True, cache_dir=tmp_path)
    assert np.array_equal(again.source, marks.source) and len(list(tmp_path.glob("*.npz"))) == 1


def test_mediapipe_rescues_faces_the_dlib_cascade_misses(fer_sample):
    marks = sketches.landmark_dataset(fer_sample, n_jobs=1, cache=False)
    dlib_only = sketches.landmark_dataset(fer_sample, mediapipe=None, n_jobs=1, cache=False)
    rescued = (dlib_only.source == sketches.LOST) & (marks.source == "mediapipe")
    assert rescued.any() and marks.coverage > dlib_only.coverage
    assert np.array_equal(marks.points[dlib_only.found], dlib_only.points[dlib_only.found])
    boxes = marks.box[rescued]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_capsnet_saves_and_loads_with_its_routing(tmp_path):
    import keras

    model = sketches.capsnet(4, input_size=28, conv_filters=8, primary_capsules=2, primary_dim=4, class_dim=4, routings=5)
    x = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)).astype("float32")
    before = model.predict(x, verbose=0)
    assert before.shape == (3, 4) and (before >= 0).all() and (before < 1).all()  # capsule lengths
    path = tmp_path / "capsnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert np.allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    assert loaded.get_layer("class_capsules").routings == 5
    # A cached CapsNet is read back by a fresh process (a chapter resumed from cache/models) that never
    # imported fer_lib.capsules: training.load_model must register the capsule layers itself.
    script = (f"import numpy as np; from fer_lib import training; m = training.load_model({str(path)!r}); "
              f"print(m.get_layer('class_capsules').routings)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo_root())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "5"


def test_routing_changes_the_output_and_margin_loss_trains():
    import keras

    capsules = np.random.default_rng(1).normal(size=(2, 6, 4)).astype("float32")
    one, three = ClassCapsules(3, 5, routings=1), ClassCapsules(3, 5, routings=3)
    one.build(capsules.shape)
    three.build(capsules.shape)
    three.set_weights(one.get_weights())
    v1, v3 = np.asarray(one(capsules)), np.asarray(three(capsules))
    assert v1.shape == (2, 3, 5) and not np.allclose(v1, v3)
    assert (np.linalg.norm(v3, axis=-1) < 1).all()
    with pytest.raises(ValueError, match="routings"):
        ClassCapsules(3, routings=0)
    loss = training.make_loss(training.TrainConfig(loss="margin"))
    right = loss(np.array([0]), np.array([[0.95, 0.05, 0.05]], "float32"))
    wrong = loss(np.array([0]), np.array([[0.05, 0.95, 0.05]], "float32"))
    assert float(right) == pytest.approx(0.0, abs=1e-7) and float(wrong) > 0.5
    assert isinstance(keras.losses.deserialize(keras.losses.serialize(loss)), type(loss))


def test_weights_files_load_the_layers_that_fit(tmp_path):
    source = sketches.vgg11(10, width=2, dense_units=8)
    path = tmp_path / "digits_vgg11.weights.h5"
    source.save_weights(path)
    target = sketches.vgg11(4, width=2, dense_units=8, weights=path)
    assert np.array_equal(target.get_layer("conv1").get_weights()[0], source.get_layer("conv1").get_weights()[0])
    assert np.array_equal(target.get_layer("fc2").get_weights()[0], source.get_layer("fc2").get_weights()[0])
    assert target.get_layer("emotion").get_weights()[0].shape == (8, 4)  # its own class layer
    # a whole saved model works the same way, by layer name
    source.save(tmp_path / "digits_vgg11.keras")
    copied = sketches.load_weights_file(sketches.vgg11(4, width=2, dense_units=8), tmp_path / "digits_vgg11.keras")
    assert "conv8" in copied and "emotion" not in copied
    # a file of another network fits nothing: an error, not a silent from-scratch model
    with pytest.raises(ValueError, match="no layer"):
        sketches.load_weights_file(sketches.capsnet(4, conv_filters=4, primary_capsules=2, primary_dim=2, class_dim=2),
                                   tmp_path / "digits_vgg11.keras")
    with pytest.raises(FileNotFoundError):
        sketches.vgg11(4, weights=tmp_path / "missing.weights.h5")


def test_resnet50_loads_an_imagenet_style_no_top_file(tmp_path):
    import keras

    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    scratch = sketches.resnet50(4, input_size=32)
    assert "imagenet_scaling" not in [layer.name for layer in scratch.layers]
    # Keras Applications' own format (what its ImageNet download is: a legacy HDF5 file of the no-top
    # backbone) goes to Keras Applications, with ImageNet's pixel scaling
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    legacy = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(legacy, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    model = sketches.resnet50(4, input_size=32, weights=legacy)
    assert "imagenet_scaling" in [layer.name for layer in model.layers]
    loaded = model.get_layer("resnet50").get_layer("conv1_conv").get_weights()[0]
    assert np.array_equal(loaded, backbone.get_layer("conv1_conv").get_weights()[0])


def test_digits_are_white_characters_on_black():
    x, y = sketches.digits(28)
    assert x.shape == (1797, 28, 28, 1) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and sorted(set(y.tolist())) == list(range(10))
    assert x[:, :3].mean() < x[:, 10:18, 10:18].mean()  # ink in the middle, background at the edge


def test_subject_folds_never_share_a_subject(ck_sample):
    subjects, labels = ck_sample.subject, ck_sample.labels
    loso = experiment.subject_folds(subjects, labels, "loso")
    assert len(loso) == len(set(subjects)) and all(len(set(subjects[f])) == 1 for f in loso)
    folds = experiment.subject_folds(subjects, labels, 5, seed=0)
    everything = np.sort(np.concatenate(folds))
    assert np.array_equal(everything, np.arange(len(subjects)))  # each image in exactly one fold
    for fold in folds:
        assert not set(subjects[fold]) & set(np.delete(subjects, fold))
        fit, val = experiment.inner_validation(np.setdiff1d(np.arange(len(subjects)), fold), subjects, labels, 0.2)
        assert not set(subjects[fit]) & set(subjects[val]) and not set(fold) & (set(fit) | set(val))
    with pytest.raises(ValueError, match="folds need"):
        experiment.subject_folds(subjects, labels, 1000)


def test_cross_validate_predicts_each_image_once_and_records_it(monkeypatch, tmp_path, ck_sample):
    monkeypatch.setattr(results, "results_dir", lambda profile: tmp_path / profile)
    dataset = ck_sample.relabel("valence4")
    x = np.random.default_rng(0).uniform(0, 255, (len(dataset), 48, 48, 1)).astype("float32")
    folds = experiment.subject_folds(dataset.subject, dataset.labels, 3)
    config = training.TrainConfig(optimizer="adamw", learning_rate=1e-3, epochs=1, batch_size=16)
    run = experiment.cross_validate(
        lambda: sketches.vgg11(4, width=2, dense_units=8), x, dataset.labels, dataset.subject, dataset.ids, folds, config,
        cache_name="test-cv", options={"width": 2}, class_names=dataset.class_names, n_split=len(dataset) + 2,
        record={"chapter": "test", "representation": "sketch", "model": "tiny", "dataset": "ckplus48",
                "label_set": "valence4", "split": "3fold", "profile": "smoke", "seed": 0, "extract_ms_per_image": 1.0})
    monkeypatch.undo()
    assert len(run.folds) == 3 and run.folds["test images"].sum() == len(dataset)
    assert not np.isnan(run.probabilities).any()
    assert run.record["split"] == "3fold" and run.record["n_eval"] == len(dataset)
    assert run.record["coverage"] == pytest.approx(len(dataset) / (len(dataset) + 2))
    written = (tmp_path / "smoke" / "test__tiny.predictions.csv").read_text().splitlines()
    assert len(written) == len(dataset) + 1
    # a single query set tests only its images; overlapping folds are refused
    query = experiment.cross_validate(
        lambda: sketches.vgg11(4, width=2, dense_units=8), x, dataset.labels, dataset.ids, dataset.ids, [np.arange(5)],
        config, cache_name="test-query", options={}, class_names=dataset.class_names, record=None, n_boot=0)
    assert query.record["n_eval"] == 5 and np.isnan(query.probabilities[5:]).all()
    with pytest.raises(ValueError, match="more than one test fold"):
        experiment.cross_validate(lambda: None, x, dataset.labels, dataset.ids, dataset.ids, [np.arange(3), np.arange(2, 4)],
                                  config, cache_name="x", options={}, class_names=dataset.class_names, record=None)


def test_one_vs_rest_table_counts_every_image_once_per_class():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2, 3])
    record = results.evaluate(y_true, y_pred, ("positive", "negative", "awe", "neutral"), n_boot=0)
    table = results.one_vs_rest_table(record)
    rows = table.drop(index="macro")
    assert ((rows[["TP", "TN", "FP", "FN"]].sum(axis=1)) == len(y_true)).all()
    assert rows.loc["positive", ["TP", "FP", "FN"]].tolist() == [1, 1, 1]
    assert rows.loc["awe", "recall"] == pytest.approx(2 / 3)
    assert rows.precision.tolist() == pytest.approx([record["per_class"][c]["precision"] for c in rows.index])
    assert table.loc["macro", "F1"] == pytest.approx(record["macro_f1"])

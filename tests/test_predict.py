"""The zoo and the predictor: packaged models give, through fer_lib.predict, exactly the predictions they
give on the chapters' own inputs; faces are found in whole photos; bad input is reported, never a traceback."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")
from fer_lib import landmarks, pixels, predict, preprocess, zoo  # noqa: E402
from fer_lib.data import TEST  # noqa: E402
from fer_lib.face_mesh import Attempt, FaceMeshExtractor  # noqa: E402

PIXELS = {"kind": "pixels", "preprocessing": {"detector": "mediapipe", "align": True, "use_clahe": True, "margin": 0.1},
          "detector_options": {"input_size": 192, "padding": 24, "min_confidence": 0.3}}
ATTEMPTS = [{"input_size": 192, "padding": 24}, {"input_size": 256, "padding": 64}]
MESH = {"kind": "mesh", "attempts": ATTEMPTS, "min_confidence": 0.3, "normalisation": "centre+scale", "transform": "none"}
BLENDSHAPES = {"kind": "blendshapes", "attempts": ATTEMPTS, "min_confidence": 0.3, "columns": list(range(0, 52, 2))}
RECORD = {"chapter": "test", "model": "tiny", "accuracy": 0.5, "accuracy_ci95": [0.4, 0.6], "profile": "smoke"}


@pytest.fixture(scope="module")
def faces(fer_sample):
    """2 PrivateTest faces per class of the sample."""
    return fer_sample.stratified_subset(2, splits=(TEST,)).images


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory, fer_sample, faces):
    """A zoo of three small models (untrained Keras ones and a forest fitted on sample blendshapes)."""
    from sklearn.ensemble import RandomForestClassifier

    folder = tmp_path_factory.mktemp("zoo")
    classes = list(fer_sample.class_names)
    keras.utils.set_random_seed(0)
    zoo.export("pixels_2d", pixels.build("study_cnn", 7, width=4, dense_units=8), representation="pixels_2d",
               class_order=classes, input=PIXELS, record=RECORD, zoo_dir=folder)
    mesh_model = keras.Sequential([keras.Input((478, 3)), keras.layers.Flatten(), keras.layers.Dense(7, activation="softmax")])
    zoo.export("landmarks_3d", mesh_model, representation="landmarks_3d", class_order=classes, input=MESH,
               record=RECORD, zoo_dir=folder)
    train = fer_sample.stratified_subset(6, splits=("Training",))
    with FaceMeshExtractor(tuple(Attempt(**a) for a in ATTEMPTS)) as extractor:
        extracted = extractor.extract(train.images)
    found = extracted["detected"]
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(
        extracted["blendshapes"][found][:, BLENDSHAPES["columns"]], train.labels[found])
    assert len(forest.classes_) == 7, "MediaPipe should read a face of every class among 6 per class"
    zoo.export("blendshapes", forest, representation="blendshapes", class_order=classes, input=BLENDSHAPES,
               record=RECORD, zoo_dir=folder)
    return folder


def test_exported_models_predict_through_the_predictor_exactly_as_on_the_chapters_inputs(tiny_zoo, faces):
    predictor = predict.Predictor(zoo_dir=tiny_zoo)
    out = predictor.predict_faces(faces)
    assert set(out) == {"pixels_2d", "landmarks_3d", "blendshapes", predict.FUSION}

    # chapter 3's inputs: the detector's boxes, then Preprocessing (misses keep the whole frame)
    with preprocess.MediaPipeDetector(**PIXELS["detector_options"]) as detector:
        detections = preprocess.detect_faces(faces, detector)
    x2d = preprocess.Preprocessing(**PIXELS["preprocessing"]).apply(faces, detections)[..., None].astype("float32")
    expected = predictor.models["pixels_2d"].predict(x2d, verbose=0)
    np.testing.assert_allclose(out["pixels_2d"], expected, rtol=1e-5, atol=1e-6)

    # chapters 4 and 7: MediaPipe's landmarks (normalised) and blendshape columns, for the faces it reads
    with FaceMeshExtractor(tuple(Attempt(**a) for a in ATTEMPTS)) as extractor:
        extracted = extractor.extract(faces)
    found = extracted["detected"]
    assert found.sum() >= 10
    points = landmarks.normalise(extracted["landmarks"][found], extracted["matrix"][found])
    np.testing.assert_allclose(out["landmarks_3d"][found], predictor.models["landmarks_3d"].predict(points, verbose=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["blendshapes"][found], predictor.models["blendshapes"].predict_proba(
        extracted["blendshapes"][found][:, BLENDSHAPES["columns"]]))
    assert np.isnan(out["landmarks_3d"][~found]).all()  # a face MediaPipe cannot read is marked, not guessed
    # the fusion: the mean over the models that read each face
    readers = [out[n] for n in ("pixels_2d", "landmarks_3d", "blendshapes")]
    np.testing.assert_allclose(out[predict.FUSION][found], np.mean([r[found] for r in readers], axis=0), rtol=1e-6)
    if (~found).any():
        np.testing.assert_allclose(out[predict.FUSION][~found], out["pixels_2d"][~found], rtol=1e-6)


def _photo_with_a_face(face48, size=(480, 640), at=(140, 300), side=200):
    """A 640×480 grey photo: a gradient background with a FER2013 face enlarged at (row, column)."""
    photo = np.tile(np.linspace(60, 200, size[1], dtype=np.float32), (size[0], 1)).astype(np.uint8)
    photo[at[0]:at[0] + side, at[1]:at[1] + side] = cv2.resize(face48, (side, side), interpolation=cv2.INTER_CUBIC)
    return photo


def test_faces_are_found_in_a_whole_photo_in_colour_or_grey_and_an_empty_one_has_none(tiny_zoo, faces):
    photo = _photo_with_a_face(faces[0])
    with predict.Predictor(["pixels_2d"], zoo_dir=tiny_zoo) as predictor:
        for image in (photo, cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR)):
            table = predictor.predict_image(image)
            assert len(table) == 1
            x0, y0, x1, y1 = table.loc[0, ["x0", "y0", "x1", "y1"]]
            assert x0 < 300 + 100 < x1 and y0 < 140 + 100 < y1 and 150 < x1 - x0 < 400  # around the pasted face
            assert table.loc[0, "pixels_2d"] in predictor.class_order
            assert sum(table.loc[0, f"pixels_2d:{c}"] for c in predictor.class_order) == pytest.approx(1, abs=1e-4)
        assert len(predictor.predict_image(np.full((480, 640), 128, np.uint8))) == 0
        finder, graphs = predictor._finder, list(predictor._graphs.values())
        assert finder is not None and graphs  # the photo's face finder and the 2D model's face detector
    # leaving the block closed every MediaPipe graph the predictions opened; a second close does nothing
    assert predictor._finder is None and predictor._graphs == {}
    assert finder.landmarker is None and all(graph.landmarker is None for graph in graphs)
    predictor.close()


def test_the_command_line_reports_every_image_and_bad_input_without_a_traceback(tiny_zoo, faces, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_face.png"), _photo_with_a_face(faces[1]))
    cv2.imwrite(str(folder / "blank.jpg"), np.full((100, 120, 3), 200, np.uint8))
    (folder / "broken.png").write_bytes(b"not a png")
    assert predict.main([str(folder), "--zoo", str(tiny_zoo), "--format", "json", "--representation", "pixels_2d"]) == 0
    rows = pd.DataFrame(json.loads(capsys.readouterr().out))
    status = rows.groupby("image").status.first()
    assert status[str(folder / "a_face.png")] == "ok" and status[str(folder / "blank.jpg")] == "no face found"
    assert "not an image" in status[str(folder / "broken.png")]

    assert predict.main([str(folder / "broken.png"), "--zoo", str(tiny_zoo)]) == 1  # nothing predicted: a failure
    assert "1 of 1 image(s) without a face" in capsys.readouterr().err
    assert predict.main([str(tmp_path / "missing.jpg"), "--zoo", str(tiny_zoo)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert predict.main([str(folder), "--zoo", str(tiny_zoo), "--representation", "pixels_2d,telepathy"]) == 2
    assert "unknown representation 'telepathy'" in capsys.readouterr().err
    assert predict.main([str(folder), "--zoo", str(tmp_path / "empty_zoo")]) == 2
    assert "no models in the zoo" in capsys.readouterr().err


def test_a_zoo_spec_names_what_its_input_lacks(tmp_path):
    with pytest.raises(ValueError, match="needs \\['columns'\\]"):
        zoo.export("x", None, representation="blendshapes", class_order=["a"],
                   input={k: v for k, v in BLENDSHAPES.items() if k != "columns"}, record=RECORD, zoo_dir=tmp_path)
    with pytest.raises(ValueError, match="input kind"):
        zoo.export("x", None, representation="r", class_order=["a"], input={"kind": "smell"}, record=RECORD, zoo_dir=tmp_path)


def test_cross_dataset_maps_labels_by_name_and_counts_what_it_leaves_out(tiny_zoo, ck_sample, jaffe_sample):
    from fer_lib import comparison

    predictor = predict.Predictor(["pixels_2d"], zoo_dir=tiny_zoo)
    table, left_out = comparison.cross_dataset(predictor, ck_sample, n_boot=50)
    contempt = int((ck_sample.labels == ck_sample.class_names.index("contempt")).sum())
    assert contempt > 0 and left_out["contempt images (no such class in the models)"] == contempt
    assert table.loc["pixels_2d", "images"] == len(ck_sample) - contempt == table.loc["pixels_2d", "faces read"]
    assert 0 <= table.loc["pixels_2d", "accuracy"] <= 1
    # JAFFE's 256-px photos: each face is found and cut out first
    faces, found = predict.dataset_faces(jaffe_sample.images[:4])
    assert faces.shape == (4, 48, 48) and found.all()


def test_the_stream_classifier_runs_a_zoo_blendshape_model_frame_by_frame(tiny_zoo, faces):
    from fer_lib import stream

    classifier = stream.FrameClassifier.from_zoo("blendshapes", zoo_dir=tiny_zoo, attempts=tuple(Attempt(**a) for a in ATTEMPTS))
    try:
        frames = [classifier.step(face) for face in faces[:4]]
    finally:
        classifier.close()
    read = [f for f in frames if f is not None]
    assert read and all(f.shape == (7,) and f.sum() == pytest.approx(1) for f in read)
    # the same faces through the predictor give the same probabilities
    out = predict.Predictor(["blendshapes"], zoo_dir=tiny_zoo).predict_faces(faces[:4])["blendshapes"]
    np.testing.assert_allclose(np.array(read), out[~np.isnan(out[:, 0])], rtol=1e-6)
    with pytest.raises(ValueError, match="not blendshapes"):
        stream.FrameClassifier.from_zoo("pixels_2d", zoo_dir=tiny_zoo)


def test_export_best_takes_the_smallest_model_within_a_point_on_publictest_and_skips_what_cannot_be_packaged(tmp_path):
    from sklearn.dummy import DummyClassifier

    from fer_lib import experiment

    def run(val_accuracy, n_params, model=None, estimator=None, members=None):
        record = {"model": "m", "representation": "landmarks_3d", "class_order": list("abc"), "val_accuracy": val_accuracy,
                  "n_params": n_params, "accuracy": 0.5, "accuracy_ci95": [0.4, 0.6], "split": "PrivateTest", "members": members}
        fitted = None if model is None else type("Fit", (), {"model": model})()
        return experiment.Trained(record, fitted, np.zeros((1, 3)), np.zeros((1, 3)), estimator=estimator)

    def dense(units):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units), keras.layers.Dense(3, activation="softmax")])

    forest = DummyClassifier().fit(np.zeros((3, 4)), [0, 1, 2])
    runs = {"best_big": run(0.600, 10_000, dense(64)), "close_small": run(0.595, 300, dense(2)),
            "far_smaller": run(0.50, 10, dense(1)), "ensemble": run(0.70, 1, dense(1), members=["a", "b"]),
            "no_spec": run(0.65, 5, dense(1)), "forest": run(0.598, 5_000, estimator=forest)}
    spec = {"kind": "mesh", "attempts": [], "min_confidence": 0.3, "normalisation": "centre+scale"}
    entry = zoo.export_best(runs, lambda name, r: None if name == "no_spec" else spec, name="lm", zoo_dir=tmp_path)
    assert entry.model_path.suffix == ".keras" and zoo.load_model(entry).count_params() == runs["close_small"].fitted.model.count_params()
    # without the small network, the next smallest within a point: the forest
    entry = zoo.export_best(runs, lambda name, r: None if name in ("no_spec", "close_small") else spec, name="lm",
                            zoo_dir=tmp_path)
    assert entry.model_path.suffix == ".joblib"
    # of two equal networks within a point, the one without test-time augmentation's ten views
    views = {"plain": run(0.600, 300, dense(2)), "plain_tta": run(0.605, 300, dense(2))}
    views["plain"].record["infer_ms_per_image"], views["plain_tta"].record["infer_ms_per_image"] = 1.3, 13.0
    chosen = zoo.export_best(views, lambda name, r: {**spec, **({"tta": {"flip": True}} if name.endswith("_tta") else {})},
                             name="lm", zoo_dir=tmp_path)
    assert "tta" not in chosen.spec["input"]
    views["plain_tta"].record["val_accuracy"] = 0.62  # two points better: worth its views
    chosen = zoo.export_best(views, lambda name, r: {**spec, **({"tta": {"flip": True}} if name.endswith("_tta") else {})},
                             name="lm", zoo_dir=tmp_path)
    assert chosen.spec["input"]["tta"] == {"flip": True}
    assert zoo.export_best(runs, lambda name, r: spec, name="lm", zoo_dir=tmp_path, max_mb=1e-9) is None
    assert not (tmp_path / "lm").exists()
    assert list(zoo.entries(tmp_path)) == []


def test_a_small_image_is_one_face_crop_already(tiny_zoo, faces):
    predictor = predict.Predictor(["pixels_2d"], zoo_dir=tiny_zoo)
    table = predictor.predict_image(faces[0])
    assert len(table) == 1 and table.loc[0, ["x0", "y0", "x1", "y1"]].tolist() == [0, 0, 48, 48]
    np.testing.assert_allclose([table.loc[0, f"pixels_2d:{c}"] for c in predictor.class_order],
                               predictor.predict_faces(faces[:1])["pixels_2d"][0], rtol=1e-6)


def test_mesh_inputs_make_each_chapters_transform_and_name_the_choices_for_an_unknown_one():
    from fer_lib import mesh, voxels

    rng = np.random.default_rng(0)
    points = rng.normal(size=(3, 478, 3))
    extraction = {"detected": np.array([True, False, True]), "landmarks": points,
                  "matrix": np.repeat(np.eye(4)[None], 3, axis=0)}
    spec = {"normalisation": "centre+scale"}
    normalised = landmarks.normalise(points[[0, 2]], extraction["matrix"][[0, 2]], **landmarks.NORMALISATIONS["centre+scale"])
    x, found = predict.mesh_inputs(extraction, spec)
    assert found.tolist() == [True, False, True] and np.allclose(x, normalised)
    x, _ = predict.mesh_inputs(extraction, {**spec, "transform": "occupancy", "transform_options": {"k": 16}})
    np.testing.assert_array_equal(x, voxels.occupancy(normalised, k=16))
    for name, make in mesh.INPUTS.items():
        np.testing.assert_array_equal(predict.mesh_inputs(extraction, {**spec, "transform": name})[0], make(normalised))
    with pytest.raises(ValueError, match="'curvature' is not one of.*'gaussian'.*'xyz_laplacian'"):
        predict.mesh_inputs(extraction, {**spec, "transform": "curvature"})


def test_one_mediapipe_call_serves_the_2d_detector_and_the_mesh_cascade_with_the_same_predictions(
        tiny_zoo, fer_sample, monkeypatch):
    faces = fer_sample.stratified_subset(3, splits=(TEST,)).images  # 21 faces: two threads' shares
    assert predict.shares_first_attempt(PIXELS, MESH)
    assert not predict.shares_first_attempt({**PIXELS, "detector_options": {"input_size": 192, "padding": 32,
                                                                            "min_confidence": 0.3}}, MESH)
    assert not predict.shares_first_attempt(PIXELS, {**MESH, "min_confidence": 0.6})  # would find faces the 2D detector misses
    with predict.Predictor(zoo_dir=tiny_zoo, workers=2) as predictor:
        shared = predictor.predict_faces(faces)
        assert any(key.startswith("1 ") for key in predictor._graphs)  # the second thread had its own graphs
    monkeypatch.setattr(predict, "shares_first_attempt", lambda *_: False)
    with predict.Predictor(zoo_dir=tiny_zoo, workers=1) as predictor:
        separate = predictor.predict_faces(faces)
        assert not any(key.startswith("0 shared") for key in predictor._graphs)
    for name in separate:
        np.testing.assert_array_equal(shared[name], separate[name], err_msg=name)
    assert not np.isnan(shared["landmarks_3d"][:, 0]).all()  # MediaPipe read some of the faces


def test_the_committed_example_photo_is_rebuilt_exactly_from_the_sample():
    from fer_lib import sample
    from fer_lib.paths import sample_data_dir

    committed = cv2.imread(str(sample_data_dir() / sample.EXAMPLE_PHOTO), cv2.IMREAD_GRAYSCALE)
    assert committed is not None and committed.shape == (480, 640)
    np.testing.assert_array_equal(committed, sample.example_photo())
    with pytest.raises(ValueError, match="JAFFE's classes"):
        sample.example_photo(labels=("contempt",))


def test_the_readme_example_is_spliced_between_its_markers_only():
    from fer_lib import readme_example as example

    readme = f"# Use\n\n    {' '.join(example.COMMAND)}\n\n{example.START}\nold output\n{example.END}\n\n## Next\n"
    once = example.splice(readme, "face  pixels_2d\n1     happy (90%)\n")
    assert "old output" not in once and "1     happy (90%)" in once and once.endswith(f"{example.END}\n\n## Next\n")
    assert example.splice(once, "face  pixels_2d\n1     happy (90%)\n") == once  # rerunning changes nothing
    with pytest.raises(ValueError, match="in this order"):
        example.splice("# no markers\n", "x")

"""The feedback loop on real sample faces: the append-only store survives a writer killed mid-run and two
writers at once; corrections from Python, the command line and the panel hold the predictor's own crop
and prediction; fine-tuning writes a new version that loads and predicts and never touches the original."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_lib import feedback
from fer_lib.labels import EMOTION7

from .conftest import ROOT, SAMPLE

LABELS = EMOTION7.classes

# A writer process: commits one correction per loop turn (a sample face and a label fixed by its number)
# and prints its uid once committed, so the parent knows exactly what was committed before any kill.
WRITER = r"""
import os, sys, time
import fer_lib
from fer_lib.feedback import Store
from fer_lib.labels import EMOTION7

path, data, who, count, go, other = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
faces = fer_lib.load_fer2013(data).images
store = Store(path)
print("ready", flush=True)
while go != "-" and not os.path.exists(go):  # start together with the other writer
    time.sleep(0.005)
seq = 0
while count < 0 or seq < count:
    if other != "-" and seq == count // 2:
        # halfway, wait for the other writer's first row: on a fast or unevenly loaded machine one writer
        # could otherwise finish before the other starts, and the test would not see two writers at once
        deadline = time.monotonic() + 60
        while not store.corrections(who=other) and time.monotonic() < deadline:
            time.sleep(0.005)
    c = store.add(faces[seq % len(faces)], EMOTION7.classes[seq % 7], model="writer", representation="pixels_2d",
                  who=who, image_id=f"{who}-{seq}", uid=f"{who}-{seq}", source="python")
    print(c.uid, flush=True)
    seq += 1
"""


def _writer(path, who, count, go="-", other="-"):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(SAMPLE), who, str(count), str(go), other],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FER_BOOK_ROOT": str(ROOT)})


def _expected_face(fer_sample, seq):
    return fer_sample.images[seq % len(fer_sample)]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# The store


def test_a_correction_is_stored_whole_and_read_back_exactly(tmp_path, fer_sample):
    face = fer_sample.images[3]
    with feedback.Store(tmp_path / "c.db") as store:
        stored = store.add(face, "Happiness", model="pixels_2d", representation="pixels_2d", predicted="sad",
                           probabilities=np.full(7, 1 / 7), who="ana", image_id="Training_1", face_index=0, box=(0, 0, 48, 48))
        assert stored.corrected == "happy" and stored.predicted == "sad"  # an alias is stored by its canonical name
        assert (stored.who, stored.image_id, stored.source, stored.class_order) == ("ana", "Training_1", "python", LABELS)
        assert stored.probabilities == pytest.approx([1 / 7] * 7) and stored.box == (0, 0, 48, 48)
    with feedback.Store(tmp_path / "c.db") as again:  # reopened: the same row and the same pixels
        assert again.corrections() == [stored] and len(again) == 1
        np.testing.assert_array_equal(again.faces([stored.id])[0], face)
        assert again.table().loc[stored.id, "corrected"] == "happy"
        assert again.check() == "ok"
        assert sqlite3.connect(tmp_path / "c.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_input_is_refused_with_what_to_do(tmp_path, fer_sample):
    store = feedback.Store(tmp_path / "c.db")
    face = fer_sample.images[0]
    with pytest.raises(feedback.FeedbackError, match="unknown label 'joy': the model's labels are angry, disgust, fear"):
        store.add(face, "joy", model="m", representation="pixels_2d")
    with pytest.raises(feedback.FeedbackError, match="unknown label 'contempt'"):  # an emotion, but not the model's
        store.add(face, "contempt", model="m", representation="pixels_2d")
    with pytest.raises(feedback.FeedbackError, match="48×48"):
        store.add(cv2.resize(face, (96, 96)), "sad", model="m", representation="pixels_2d")
    with pytest.raises(feedback.FeedbackError, match="uint8"):
        store.add(face.astype(float), "sad", model="m", representation="pixels_2d")
    with pytest.raises(feedback.FeedbackError, match="not str"):
        store.add("face.png", "sad", model="m", representation="pixels_2d")
    assert len(store) == 0  # nothing half-written
    stored = store.add(face, "sad", model="m", representation="pixels_2d", uid="once")
    with pytest.raises(feedback.FeedbackError, match="not stored"):  # a retried write cannot store it twice
        store.add(face, "sad", model="m", representation="pixels_2d", uid="once")
    assert store.corrections() == [stored]
    store.close()

    (tmp_path / "notes.db").write_text("not a database at all, just some text " * 20)
    with pytest.raises(feedback.FeedbackError, match="is not a feedback store"):
        feedback.Store(tmp_path / "notes.db")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    with pytest.raises(feedback.FeedbackError, match="not a feedback store \\(tables: t\\)"):
        feedback.Store(tmp_path / "other.db")
    raw = sqlite3.connect(tmp_path / "c.db")
    raw.execute("UPDATE schema_version SET version = 99")
    raw.commit()
    with pytest.raises(feedback.FeedbackError, match="schema version 99; this fer_lib reads version 1"):
        feedback.Store(tmp_path / "c.db")


def test_the_store_is_append_only_for_any_client(tmp_path, fer_sample):
    with feedback.Store(tmp_path / "c.db") as store:
        stored = store.add(fer_sample.images[0], "fear", model="m", representation="pixels_2d")
    raw = sqlite3.connect(tmp_path / "c.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE corrections SET corrected = 'happy'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM corrections")
    raw.rollback()
    with feedback.Store(tmp_path / "c.db") as store:
        assert store.corrections() == [stored]


def test_a_writer_killed_mid_run_loses_nothing_it_committed(tmp_path, fer_sample):
    path = tmp_path / "c.db"
    writer = _writer(path, "killed", -1)
    assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
    committed = []
    while len(committed) < 40:  # it writes as fast as it can; killed at some point of a write
        committed.append(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    committed += [line.strip() for line in writer.stdout.read().splitlines() if line.strip()]

    with feedback.Store(path) as store:  # reopened after the crash
        assert store.check() == "ok"
        rows = store.corrections()
        uids = [r.uid for r in rows]
        assert uids[:len(committed)] == committed  # every committed row, in order
        assert len(rows) <= len(committed) + 1  # at most the one whose uid it had no time to print
        assert uids == [f"killed-{i}" for i in range(len(rows))]  # none lost in between, none twice
        for row, crop in zip(rows, store.faces([r.id for r in rows])):
            seq = int(row.uid.split("-")[1])
            np.testing.assert_array_equal(crop, _expected_face(fer_sample, seq))
            assert row.corrected == LABELS[seq % 7]
        after = store.add(fer_sample.images[0], "sad", model="m", representation="pixels_2d")  # still writable
        assert after.id > rows[-1].id


def test_two_processes_writing_at_once_store_every_row_once(tmp_path, fer_sample):
    path, go, n = tmp_path / "shared.db", tmp_path / "go", 100
    pair = {"left": "right", "right": "left"}
    writers = {who: _writer(path, who, n, go, other) for who, other in pair.items()}  # both create the store at once
    for who, writer in writers.items():
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
    go.touch()
    for who, writer in writers.items():
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert out.split() == [f"{who}-{i}" for i in range(n)]
    with feedback.Store(path) as store:
        rows = store.corrections()
        assert len(rows) == 2 * n and len({r.uid for r in rows}) == 2 * n
        for who in writers:
            mine = [r for r in rows if r.who == who]
            assert [r.uid for r in mine] == [f"{who}-{i}" for i in range(n)]  # each writer's rows, in its order
            for row, crop in zip(mine, store.faces([r.id for r in mine])):
                np.testing.assert_array_equal(crop, _expected_face(fer_sample, int(row.uid.split("-")[1])))
        order = [r.who for r in rows]
        assert order != sorted(order) and order != sorted(order, reverse=True), "the two writers never interleaved"


# --------------------------------------------------------------------------------------------------
# Corrections from Python, the command line and the panel

keras = pytest.importorskip("keras")
from fer_lib import pixels, predict, zoo  # noqa: E402

PIXELS = {"kind": "pixels", "preprocessing": {"detector": "mediapipe", "align": True, "use_clahe": True, "margin": 0.1},
          "detector_options": {"input_size": 192, "padding": 24, "min_confidence": 0.3}}
RECORD = {"chapter": "test", "model": "tiny", "representation": "pixels_2d", "dataset": "fer2013",
          "label_set": "emotion7", "accuracy": 0.2, "profile": "smoke"}


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """A zoo holding one small untrained 2D model (chapter 3's study CNN, narrow), with chapter 3's input."""
    folder = tmp_path_factory.mktemp("zoo")
    keras.utils.set_random_seed(0)
    zoo.export("pixels_2d", pixels.build("study_cnn", 7, width=4, dense_units=8), representation="pixels_2d",
               class_order=LABELS, input=PIXELS, record=RECORD, zoo_dir=folder)
    return folder


@pytest.fixture(scope="module")
def predictor(tiny_zoo):
    p = predict.Predictor(["pixels_2d"], zoo_dir=tiny_zoo)
    yield p
    p.close()


def _two_faces(jaffe_sample):
    """Two JAFFE photos side by side: a photo with two faces."""
    return np.hstack([jaffe_sample.images[0], jaffe_sample.images[5]])


def test_correct_stores_the_predictors_own_crop_and_prediction(tmp_path, predictor, jaffe_sample, fer_sample):
    store = feedback.Store(tmp_path / "c.db")
    photo = tmp_path / "ka.png"
    cv2.imwrite(str(photo), jaffe_sample.images[0])
    done = feedback.correct(predictor, photo, "surprise", store, who="ana")
    faces = predictor.find_faces(jaffe_sample.images[0])
    p = predictor.predict_faces(faces.crops)["pixels_2d"][0]
    assert len(faces) == 1 and done.face_index == 0
    np.testing.assert_array_equal(store.faces([done.id])[0], faces.crops[0])  # exactly what the model saw
    assert done.predicted == LABELS[int(np.argmax(p))] and done.probabilities == pytest.approx(p.tolist(), rel=1e-5)
    assert (done.model, done.representation, done.image_id) == ("pixels_2d", "pixels_2d", str(photo))
    assert done.image_sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert done.model_sha256 == hashlib.sha256(predictor.entries["pixels_2d"].model_path.read_bytes()).hexdigest()
    assert done.box == pytest.approx(tuple(faces.boxes[0]))

    two = _two_faces(jaffe_sample)
    assert len(predictor.find_faces(two)) == 2
    with pytest.raises(feedback.FeedbackError, match="2 faces found; say which one the label is for with --face N"):
        feedback.correct(predictor, two, "happy", store)
    with pytest.raises(feedback.FeedbackError, match="face 2 does not exist"):
        feedback.correct(predictor, two, "happy", store, face=2)
    second = feedback.correct(predictor, two, "happy", store, face=1, image_id="pair")
    np.testing.assert_array_equal(store.faces([second.id])[0], predictor.find_faces(two).crops[1])
    with pytest.raises(feedback.NoFaceError, match="no face found"):
        feedback.correct(predictor, np.full((300, 400), 128, np.uint8), "sad", store)
    with pytest.raises(feedback.FeedbackError, match="unknown label 'bored'"):
        feedback.correct(predictor, fer_sample.images[0], "bored", store)
    with pytest.raises(predict.PredictError, match="no such file"):
        feedback.correct(predictor, tmp_path / "missing.jpg", "sad", store)
    assert [c.id for c in store.corrections()] == [done.id, second.id]


def test_the_command_line_records_a_correction_and_refuses_bad_input(tmp_path, tiny_zoo, jaffe_sample, capsys):
    photo, pair, db = tmp_path / "one.png", tmp_path / "pair.png", tmp_path / "c.db"
    cv2.imwrite(str(photo), jaffe_sample.images[0])
    cv2.imwrite(str(pair), _two_faces(jaffe_sample))
    common = ["--zoo", str(tiny_zoo), "--store", str(db)]
    assert predict.main([str(photo), "--correct", "Sadness", "--who", "ben", *common]) == 0
    assert "stored correction 1" in capsys.readouterr().out
    assert predict.main([str(pair), "--correct", "sad", *common]) == 2
    assert "2 faces found" in capsys.readouterr().err
    assert predict.main([str(pair), "--correct", "fear", "--face", "1", *common]) == 0
    assert predict.main([str(photo), "--correct", "joy", *common]) == 2
    assert "unknown label 'joy': the model's labels are angry" in capsys.readouterr().err
    assert predict.main([str(tmp_path), "--correct", "sad", *common]) == 2
    assert "is a folder" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 400), 128, np.uint8))
    assert predict.main([str(blank), "--correct", "sad", *common]) == 1  # nothing to correct, as nothing predicted
    assert predict.main([str(photo), "--face", "0", "--zoo", str(tiny_zoo)]) == 2
    assert "go with --correct" in capsys.readouterr().err
    with feedback.Store(db) as store:
        rows = store.corrections()
    assert [(r.corrected, r.who, r.source, r.face_index, r.image_id) for r in rows] == [
        ("sad", "ben", "cli", 0, str(photo)), ("fear", rows[1].who, "cli", 1, str(pair))]


def test_the_panel_stores_a_correction_per_click_and_walks_through_every_face(tmp_path, predictor, fer_sample, jaffe_sample):
    pytest.importorskip("ipywidgets")
    photo = tmp_path / "ka.png"
    cv2.imwrite(str(photo), jaffe_sample.images[0])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    images = [photo, tmp_path / "broken.png", fer_sample.images[7], np.full((300, 400), 128, np.uint8),
              _two_faces(jaffe_sample)]
    store = feedback.Store(tmp_path / "c.db")
    widget = feedback.panel(predictor, images, store, who="cleo")
    assert set(widget.buttons) == set(LABELS) and str(photo) in widget.caption.value
    first = predictor.find_faces(jaffe_sample.images[0])
    shown = LABELS[int(np.argmax(predictor.predict_faces(first.crops)["pixels_2d"][0]))]
    assert f"says <b>{shown}</b>" in widget.caption.value and widget.buttons[shown].button_style == "info"
    assert cv2.imdecode(np.frombuffer(widget.image.value, np.uint8), cv2.IMREAD_GRAYSCALE).shape == (192, 192)

    widget.buttons["disgust"].click()  # the photo's face: stored, then the 48-px crop is shown
    rows = store.corrections()
    assert [(r.corrected, r.predicted, r.who, r.source, r.image_id) for r in rows] == [("disgust", shown, "cleo", "panel", str(photo))]
    np.testing.assert_array_equal(store.faces([rows[0].id])[0], first.crops[0])
    widget.skip.click()  # the FER2013 crop: skipped, nothing stored
    assert len(store) == 1 and "face 1 of 2" in widget.caption.value
    widget.buttons["happy"].click()
    widget.buttons["angry"].click()  # the pair's second face; then nothing is left
    assert [r.corrected for r in store.corrections()] == ["disgust", "happy", "angry"]
    assert [r.face_index for r in store.corrections()] == [0, 0, 1]
    assert widget.buttons["sad"].disabled and "All 4 face(s) reviewed" in widget.caption.value
    assert [why for _, why in widget.skipped][0].endswith("is it a .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp, .pgm file?)")
    assert widget.skipped[1][1] == "no face found"
    widget.buttons["sad"].click()  # a click after the end stores nothing
    assert len(store) == 3 and len(widget.recorded) == 3


# --------------------------------------------------------------------------------------------------
# Fine-tuning


@pytest.fixture()
def corrections(tmp_path, ck_sample, predictor):
    """A store of 12 corrections: two CK+48 faces of each class FER2013 shares with it, with their true labels
    (matched by name; CK+'s contempt has no FER2013 class)."""
    store = feedback.Store(tmp_path / "c.db")
    names = ck_sample.label_names
    keep = [i for label in LABELS for i in np.flatnonzero(names == label)[:2]]
    assert len(keep) == 12
    for i in np.random.default_rng(0).permutation(keep):
        feedback.correct(predictor, ck_sample.images[i], names[i], store, image_id=ck_sample.ids[i], who="sim")
    return store


def test_fine_tune_writes_a_new_version_and_leaves_the_original_byte_identical(tmp_path, tiny_zoo, corrections, fer_sample):
    original = zoo.entries(tiny_zoo)["pixels_2d"]
    before = _tree_digest(original.folder)
    versions = tmp_path / "versions"
    tuned = feedback.fine_tune(original, corrections, replay=fer_sample, replay_ratio=2, epochs=2, versions_dir=versions,
                               training={"batch_size": 8})
    assert _tree_digest(original.folder) == before
    assert tuned.entry.name == "pixels_2d@v2" and tuned.entry.folder == versions / "pixels_2d@v2" and not tuned.reused
    v = tuned.version
    assert v["parent"] == "pixels_2d" and v["parent_model_sha256"] == hashlib.sha256(original.model_path.read_bytes()).hexdigest()
    assert v["corrections"]["train"] + v["corrections"]["validation"] == 12 and v["corrections"]["validation"] == 2
    assert v["replay"]["train"] + v["replay"]["validation"] == 24 and v["replay"]["source"] == "fer2013"
    assert all(i.startswith("Training_") for i in v["replay"]["ids"])  # replay from Training only
    assert v["fit"]["epochs_run"] >= 1 and tuned.entry.spec["input"] == original.spec["input"]

    # the version is a zoo entry of its own: it loads and predicts through the predictor
    p = predict.Predictor([tuned.entry.name], zoo_dir=versions)
    out = p.predict_faces(fer_sample.images[:5])[tuned.entry.name]
    p.close()
    assert out.shape == (5, 7) and np.allclose(out.sum(1), 1, atol=1e-4)
    parent_weights, new_weights = zoo.load_model(original).get_weights(), zoo.load_model(tuned.entry).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(parent_weights, new_weights))  # it did train

    again = feedback.fine_tune(original, corrections, replay=fer_sample, replay_ratio=2, epochs=2, versions_dir=versions,
                               training={"batch_size": 8})
    assert again.reused and again.entry.name == "pixels_2d@v2"  # the same inputs and settings: no duplicate
    v2 = _tree_digest(tuned.entry.folder)
    third = feedback.fine_tune(original, corrections, replay=fer_sample, replay_ratio=2, epochs=2, versions_dir=versions,
                               first=6, training={"batch_size": 8})
    assert third.entry.name == "pixels_2d@v3" and third.version["corrections"]["train"] == 5
    child = feedback.fine_tune(tuned.entry, corrections, replay=fer_sample, replay_size=0, epochs=1, versions_dir=versions)
    assert child.entry.name == "pixels_2d@v4" and child.version["parent"] == "pixels_2d@v2" and child.version["replay"]["train"] == 0
    assert _tree_digest(tuned.entry.folder) == v2 and _tree_digest(original.folder) == before
    assert sorted(feedback.versions(versions)) == ["pixels_2d@v2", "pixels_2d@v3", "pixels_2d@v4"]
    assert "pixels_2d@v2" not in zoo.entries(tiny_zoo)  # versions stay out of the zoo the predictor lists by default


def test_fine_tuning_learns_the_corrections(tmp_path, tiny_zoo, corrections, fer_sample):
    """On the corrected faces themselves (no replay, nothing held out) a few epochs must fit them better."""
    original = zoo.entries(tiny_zoo)["pixels_2d"]
    rows = corrections.corrections()
    crops = corrections.faces([r.id for r in rows])
    y = np.array([LABELS.index(r.corrected) for r in rows])
    x, _ = predict.pixel_inputs(crops, original.spec["input"])
    tuned = feedback.fine_tune(original, corrections, replay_size=0, replay=fer_sample, val_fraction=0, epochs=40,
                               versions_dir=tmp_path / "v", training={"learning_rate": 1e-2, "batch_size": 4, "patience": 40})
    before = (zoo.load_model(original).predict(x, verbose=0).argmax(1) == y).mean()
    after = (zoo.load_model(tuned.entry).predict(x, verbose=0).argmax(1) == y).mean()
    history = tuned.fit.history
    assert history[-1]["loss"] < history[0]["loss"]
    assert after >= before + 0.4, (before, after)


def test_fine_tune_says_what_is_missing(tmp_path, tiny_zoo, fer_sample):
    original = zoo.entries(tiny_zoo)["pixels_2d"]
    empty = feedback.Store(tmp_path / "empty.db")
    with pytest.raises(feedback.FeedbackError, match="holds no corrections .* record some first"):
        feedback.fine_tune(original, empty, replay=fer_sample, versions_dir=tmp_path / "v")
    empty.add(fer_sample.images[0], "sad", model="m", representation="pixels_2d")
    with pytest.raises(feedback.FeedbackError, match="asked for the first 5 corrections, but .* holds 1"):
        feedback.fine_tune(original, empty, first=5, replay=fer_sample, versions_dir=tmp_path / "v")
    with pytest.raises(feedback.FeedbackError, match="no zoo model 'pixels_3d'"):
        feedback.fine_tune("pixels_3d", empty)
    blend = {"kind": "blendshapes", "attempts": [{"input_size": 192, "padding": 24}], "min_confidence": 0.3, "columns": [0, 1]}
    mesh_model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(7, activation="softmax")])
    entry = zoo.export("blendshapes", mesh_model, representation="blendshapes", class_order=LABELS, input=blend,
                       record=RECORD, zoo_dir=tmp_path / "zoo")
    with pytest.raises(feedback.FeedbackError, match="input kind 'blendshapes'"):
        feedback.fine_tune(entry, empty)

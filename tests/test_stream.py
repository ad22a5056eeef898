"""Frame-by-frame classification: synthetic streams from real faces, flicker metrics, the stateful
LSTM and smoothing, and a trained model over a real video file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mediapipe")
from fer_lib import blendshapes, stream  # noqa: E402
from fer_lib.data import TEST, lstm_study_three_classes  # noqa: E402


@pytest.fixture(scope="module")
def test_faces(fer_sample):
    return lstm_study_three_classes(fer_sample).select_split(TEST)


def test_jittered_frames_are_small_reproducible_changes_of_the_face(fer_sample):
    face = fer_sample.images[np.argmax(fer_sample.images.reshape(len(fer_sample), -1).std(1))]
    frames = stream.jittered_frames(face, 5, np.random.default_rng(0))
    again = stream.jittered_frames(face, 5, np.random.default_rng(0))
    assert frames.shape == (5, *face.shape) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, again)
    assert not np.array_equal(frames[0], frames[1])
    still = stream.jittered_frames(face, 2, np.random.default_rng(0), shift=0, rotation=0, brightness=0, noise=0)
    np.testing.assert_array_equal(still[0], face)


def test_transition_streams_cut_to_a_face_of_another_class(test_faces):
    frames, streams = stream.build_streams(test_faces, n_static=2, n_transitions=3, n_frames=8, seed=1)
    assert len(frames) == 5 * 8 and list(streams.kind) == ["static"] * 2 + ["transition"] * 3
    labels = frames.labels.reshape(5, 8)
    assert (labels[:2] == labels[:2, :1]).all()
    for row, seq in zip(streams.itertuples(), labels):
        if row.kind == "transition":
            assert row.first_label != row.second_label
            assert (seq[:4] == row.first_label).all() and (seq[4:] == row.second_label).all()
    assert frames.ids[9] == "s0001f01" and (frames.meta["frame"][:8] == np.arange(8)).all()


def test_flips_and_settling_are_counted_over_frames_with_a_face():
    assert stream.flips(np.array([0, 0, 1, 1, 0])) == (2, 4)
    assert stream.flips(np.array([0, -1, 0, 0])) == (0, 2)      # a frame without a face is skipped, not a flip
    assert stream.settle_frames(np.array([0, 0, 0, 1, 1, 1]), switch=3) == 0
    assert stream.settle_frames(np.array([0, 0, 0, 0, 2, 1, 1]), switch=3) == 2
    assert stream.settle_frames(np.array([0, 0, 0, -1, -1]), switch=3) is None
    streams = pd.DataFrame(
        [{"stream": 0, "kind": "static", "switch": None, "second_label": None},
         {"stream": 1, "kind": "transition", "switch": 2, "second_label": 1}])
    table = stream.stream_metrics(np.array([[0, 0, 1, 0], [0, 0, 2, 1]]), streams)
    assert table["flips"].tolist() == [2, 2] and table.loc[0, "flip rate"] == pytest.approx(2 / 3)
    assert table.loc[1, "frames to settle"] == 1 and bool(table.loc[1, "ends on the second face's class"])


def test_frame_classifier_state_and_smoothing_change_the_output_as_designed():
    model = blendshapes.build("study_lstm", 3, 4, units=10)
    columns = [0, 3, 7, 11]
    scores = np.random.default_rng(2).random((6, 52)).astype("float32")
    scores[2] = np.nan                                            # no face on frame 2
    plain = stream.FrameClassifier(model, columns, ("a", "b", "c")).run_features(scores)
    expected = model.predict(scores[:, columns][[0, 1, 3, 4, 5]], verbose=0)
    np.testing.assert_allclose(plain[[0, 1, 3, 4, 5]], expected, atol=1e-6)
    assert np.isnan(plain[2]).all()
    stateful = stream.FrameClassifier(blendshapes.stateful_copy(model, "study_lstm", 3, 4, {"units": 10}), columns, "abc")
    carried = stateful.run_features(scores)
    np.testing.assert_allclose(carried[0], plain[0], atol=1e-6)       # the first frame starts from a reset state
    assert not np.allclose(carried[3:], plain[3:], atol=1e-4)
    np.testing.assert_allclose(stateful.run_features(scores), carried, atol=1e-6)   # run_features resets
    smooth = stream.FrameClassifier(model, columns, "abc", smoothing=0.5).run_features(scores)
    np.testing.assert_allclose(smooth[1], 0.5 * plain[0] + 0.5 * plain[1], atol=1e-6)
    np.testing.assert_allclose(smooth[3], 0.5 * smooth[1] + 0.5 * plain[3], atol=1e-6)
    with pytest.raises(ValueError, match="smoothing"):
        stream.FrameClassifier(model, columns, "abc", smoothing=1.0)


def test_classify_video_reads_a_video_file_frame_by_frame(jaffe_sample, tmp_path):
    import cv2

    frames = jaffe_sample.images[:4]
    path = tmp_path / "faces.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, frames.shape[1:][::-1], False)
    for image in [*frames, np.zeros_like(frames[0])]:           # four faces, then a blank frame
        writer.write(image)
    writer.release()
    classifier = stream.FrameClassifier(blendshapes.build("study_dense", 3, 52), np.arange(52), ("happy", "sad", "unknown"))
    table = stream.classify_video(str(path), classifier)
    classifier.close()
    assert table.frame.tolist() == [0, 1, 2, 3, 4]
    assert table.face_found.tolist() == [True, True, True, True, False]
    assert table.label[:4].isin(["happy", "sad", "unknown"]).all() and pd.isna(table.label[4])
    np.testing.assert_allclose(table.loc[:3, ["happy", "sad", "unknown"]].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot open"):
        stream.classify_video(str(tmp_path / "missing.avi"), classifier)

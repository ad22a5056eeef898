"""What reaches a face detector: the validated-image boundary (fer_lib.images), deterministic closing of the
extractors (no hang after a rejected image) and the checks on a video source (stream.open_video)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_lib import images, preprocess

pytest.importorskip("mediapipe")
from fer_lib import face_mesh, sketches, stream  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ONE = (face_mesh.Attempt(192, 24),)


@pytest.fixture(scope="module")
def faces(jaffe_sample):
    return jaffe_sample.subset(np.arange(2))


class _Constant:
    """A stand-in blendshape model with scikit-learn's predict_proba: the tests here are about frames, not classes."""

    def predict_proba(self, x):
        return np.tile([0.25, 0.75], (len(x), 1))


# --------------------------------------------------------------------------------------------------
# The boundary itself


def test_uint8_passes_unchanged_and_other_depths_are_converted_by_the_loaders_rule(fer_sample):
    gray = fer_sample.images[0]
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    for image in (gray, bgr, gray[:, :, None], cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)):
        assert images.detector_image(image) is image  # the same array: results and cache keys cannot change
    assert images.detector_images(fer_sample.images) is fer_sample.images
    unit = gray.astype(np.float32) / 255
    for converted in (unit, gray.astype(np.float64), gray.astype(np.uint16) * 257, gray.astype(np.int64),
                      gray.astype(np.uint16)):  # 8-bit values in a 16-bit type, as fer_lib.data reads such files
        np.testing.assert_array_equal(images.detector_image(converted), gray)
    np.testing.assert_array_equal(images.detector_image(gray > 127), np.where(gray > 127, 255, 0))
    # a batch is judged as a whole: a dark image (max <= 1) among 0..255 ones is not read as 0..1
    batch = fer_sample.images[:3].astype(np.float32)
    batch[1] = np.minimum(batch[1], 1)
    np.testing.assert_array_equal(images.detector_images(batch), batch.astype(np.uint8))


@pytest.mark.parametrize("image, problem", [
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.zeros((48, 0, 3), np.uint8), "empty"),
    (np.zeros((48, 48, 2), np.uint8), "not grey, BGR or BGRA"),
    (np.zeros((2, 48, 48, 3), np.uint8), "not grey, BGR or BGRA"),
    (np.linspace(-1, 1, 48 * 48, dtype=np.float32).reshape(48, 48), "neither 0..1 nor 0..255"),
    (np.full((48, 48), np.nan, np.float32), "NaN"),
    (np.full((48, 48), 300, np.int32), "range over 300..300"),
    (np.full((48, 48), -3, np.int16), "negative"),
    (np.zeros((48, 48), np.complex64), "not an image"),
])
def test_a_bad_image_is_refused_with_the_problem_and_a_fix(image, problem):
    with pytest.raises(ValueError, match=problem) as refused:
        images.detector_image(image, where="frame 7")
    message = str(refused.value)
    assert message.startswith("frame 7:") and ("pass" in message or "give" in message)


def test_a_batch_names_the_first_bad_image_by_index_and_id(fer_sample):
    batch = fer_sample.images[:4].astype(np.float32)
    batch[2, 0, 0] = -5.0  # a normalised pixel in image 2 only
    with pytest.raises(ValueError, match=rf"image 2 \(id '{fer_sample.ids[2]}'\).*neither 0..1 nor 0..255"):
        images.detector_images(batch, fer_sample.ids[:4])


# --------------------------------------------------------------------------------------------------
# Every detector checks its input first, and a converted image gives the uint8 image's results


def test_every_detector_refuses_a_float_image_before_it_runs_and_reads_a_0_to_1_image_as_uint8(faces):
    face = faces.images[0]
    bad, unit = face.astype(np.float32) * 4, face.astype(np.float32) / 255
    with face_mesh.FaceMeshExtractor(ONE) as extractor:
        with pytest.raises(ValueError, match=rf"image 1 \(id '{faces.ids[1]}'\).*range"):
            extractor.extract([face, bad], ids=faces.ids)
        with pytest.raises(ValueError, match="empty"):
            extractor.extract_one(np.zeros((0, 0), np.uint8), ONE[0])
        np.testing.assert_array_equal(extractor.extract([unit])["landmarks"], extractor.extract([face])["landmarks"])
    for name in ("haar", "dlib_hog", "mediapipe"):
        with preprocess.make_detector(name) as detector:
            with pytest.raises(ValueError, match="range"):
                detector.detect(bad)
            assert detector.detect(unit) == detector.detect(face)
            with pytest.raises(ValueError, match=rf"image 0 \(id 'a'\): the image is empty"):
                preprocess.detect_faces([np.zeros((0, 0), np.uint8)], detector, ids=["a"])
    with sketches.Dlib68() as landmarker:
        with pytest.raises(ValueError, match="range"):
            landmarker.landmarks(bad)
        np.testing.assert_array_equal(landmarker.landmarks(unit).points, landmarker.landmarks(face).points)
    with stream.FrameClassifier(_Constant(), np.arange(52), ("a", "b"), attempts=ONE) as classifier:
        with pytest.raises(ValueError, match="frame: .*range"):
            classifier.step(bad)
        assert classifier._extractor is None  # refused before a MediaPipe graph was opened for it


def test_dataset_extractions_refuse_empty_images_before_starting_a_worker(faces, tmp_path):
    empty = replace(faces, images=np.zeros((len(faces), 0, 0), np.uint8))
    with pytest.raises(ValueError, match=f"{faces.name} images .*empty"):
        face_mesh.extract_dataset(empty, ONE, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.npz"))  # nothing was cached for it
    with pytest.raises(ValueError, match="empty"):
        sketches.landmark_dataset(empty, n_jobs=1, cache=False, mediapipe=None)
    with pytest.raises(ValueError, match="empty"):
        preprocess.detect_dataset(empty, "haar", n_jobs=1, cache=False)


def test_extractors_close_once_and_refuse_work_after_it():
    extractor = face_mesh.FaceMeshExtractor(ONE)
    extractor.close()
    extractor.close()
    with pytest.raises(RuntimeError, match="closed"):
        extractor.extract_one(np.zeros((48, 48), np.uint8), ONE[0])
    detector = preprocess.MediaPipeDetector()
    detector.close()
    detector.close()
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect(np.zeros((48, 48), np.uint8))
    landmarker = sketches.Dlib68()
    landmarker.close()
    landmarker.close()
    assert landmarker.detectors == []
    classifier = stream.FrameClassifier(_Constant(), np.arange(52), ("a", "b"), attempts=ONE)
    classifier.step(np.zeros((48, 48), np.uint8))  # opens the graph (no face: None)
    classifier.close()
    classifier.close()
    assert classifier._extractor is None


# --------------------------------------------------------------------------------------------------
# No hang: a rejected image, an extractor nobody closed, then a new extraction (in a fresh interpreter)

_AFTER_A_REJECTION = textwrap.dedent("""
    import gc, tempfile, weakref
    import numpy as np
    import fer_lib
    from fer_lib import face_mesh, stream

    faces = fer_lib.load_fer2013("data/sample")
    one = (face_mesh.Attempt(192, 24),)

    def reject():
        extractor = face_mesh.FaceMeshExtractor(one)  # not closed, not in a with block
        try:
            extractor.extract([faces.images[0].astype(np.float32) * 4])
        except ValueError as error:
            return error, weakref.ref(extractor)

    error, first = reject()
    print("REJECTED", error, flush=True)
    cycle = [error]
    cycle.append(cycle)  # the traceback holds the extractor, kept by a cycle (as a notebook's last error)
    del error, cycle
    second = face_mesh.FaceMeshExtractor(one)
    dropped = weakref.ref(second)
    del second  # dropped without close(): freed now, not by a later garbage collection
    print("DROPPED FREED", dropped() is None, flush=True)
    classifier = stream.FrameClassifier(None, np.arange(52), ("a", "b"), attempts=one)
    try:
        classifier.step(np.zeros((0, 0), np.uint8))
    except ValueError as error:
        print("FRAME REJECTED", error, flush=True)
    gc.set_threshold(5)  # the collector now runs often, inside the next extraction and MediaPipe's threads
    features = face_mesh.extract_dataset(faces.subset(np.arange(4)), one, n_jobs=1, cache_dir=tempfile.mkdtemp(),
                                         progress=False)
    print("EXTRACTED", len(features), int(features.detected.sum()), "first freed", first() is None, flush=True)
""")


def test_a_rejected_image_then_a_new_extraction_finishes_and_leaves_no_graph_to_the_collector():
    done = subprocess.run([sys.executable, "-c", _AFTER_A_REJECTION], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # a generous hang guard: the script takes seconds
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REJECTED image 0: float32 pixels range over" in done.stdout
    assert "DROPPED FREED True" in done.stdout
    assert "FRAME REJECTED frame: the image is empty" in done.stdout
    assert "EXTRACTED 4 4 first freed True" in done.stdout
    # MediaPipe's __del__ complains at exit about a graph nobody closed: there must be none
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# Video sources


@pytest.fixture(scope="module")
def video(jaffe_sample, tmp_path_factory):
    """A real 6-frame MJPG video of sample faces, written with OpenCV."""
    frames = jaffe_sample.images[:6]
    path = tmp_path_factory.mktemp("video") / "faces.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, frames.shape[1:][::-1], False)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_a_whole_video_is_read_with_no_frame_missing(video):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file must not warn
        table = stream.classify_video(str(video), stream.FrameClassifier(_Constant(), np.arange(52), ("a", "b"),
                                                                         attempts=ONE))
    info = table.attrs["video"]
    assert len(table) == info["frames_read"] == info["frames_announced"] == 6 and info["frames_missing"] == 0
    assert info["fourcc"] == "MJPG" and info["fps"] == 5.0


def test_a_truncated_video_says_how_many_frames_are_missing(video, tmp_path):
    truncated = tmp_path / "truncated.avi"
    data = video.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    classifier = stream.FrameClassifier(_Constant(), np.arange(52), ("a", "b"), attempts=ONE)
    with pytest.warns(UserWarning, match=r"read \d of the 6 frames .* frames missing"):
        table = stream.classify_video(str(truncated), classifier)
    info = table.attrs["video"]
    assert 0 < len(table) < 6 and info["frames_missing"] == 6 - len(table) and info["frames_announced"] == 6
    assert classifier._extractor is None  # the graph was closed at the end of the video
    # a run stopped on purpose (max_frames) is not a missing-frames report
    assert stream.classify_video(str(video), classifier, max_frames=2).attrs["video"]["frames_missing"] == 0


def test_a_text_file_or_an_empty_file_is_not_a_video(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a text file that FFmpeg would draw as frames of codec 'ansi'\n" * 50)
    assert cv2.VideoCapture(str(notes)).isOpened()  # why the check is needed: OpenCV opens it
    classifier = stream.FrameClassifier(_Constant(), np.arange(52), ("a", "b"), attempts=ONE)
    with pytest.raises(ValueError, match="is a text file, not a video.*give a video file"):
        stream.classify_video(str(notes), classifier)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        stream.classify_video(str(empty), classifier)
    with pytest.raises(ValueError, match="cannot open"):
        stream.classify_video(str(tmp_path / "missing.avi"), classifier)

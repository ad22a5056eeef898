"""Preprocessing steps on real faces from the committed sample."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_lib import preprocess


@pytest.fixture(scope="module")
def mediapipe_detector():
    detector = preprocess.MediaPipeDetector()
    yield detector
    detector.close()


def _eye_angle(detection):
    (lx, ly), (rx, ry) = detection.left_eye, detection.right_eye
    return np.degrees(np.arctan2(ry - ly, rx - lx))


def test_colour_is_unified_to_one_grey_channel(jaffe_sample):
    gray = jaffe_sample.images[0]
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    bgra = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)
    for image in (gray, gray[:, :, None], bgr, bgra):
        np.testing.assert_array_equal(preprocess.to_gray(image), gray)
    with pytest.raises(ValueError, match="shape"):
        preprocess.to_gray(np.zeros((4, 4, 2), np.uint8))
    assert preprocess.to_channels(jaffe_sample.images[:2], 3).shape == (2, 256, 256, 3)


@pytest.mark.parametrize("name", ["haar", "dlib_hog", "mediapipe"])
def test_each_detector_finds_the_face_in_a_jaffe_portrait(name, jaffe_sample):
    with preprocess.make_detector(name) as detector:
        detection = detector.detect(jaffe_sample.images[0])
    assert detection is not None
    x0, y0, x1, y1 = detection.box
    # JAFFE portraits are centred: the face box covers the image centre and is a sensible size.
    assert x0 < 128 < x1 and y0 < 128 < y1
    assert 60 < x1 - x0 < 256


def test_mediapipe_eyes_are_left_and_right_inside_the_upper_face(mediapipe_detector, jaffe_sample):
    detection = mediapipe_detector.detect(jaffe_sample.images[0])
    (lx, ly), (rx, ry) = detection.left_eye, detection.right_eye
    x0, y0, x1, y1 = detection.box
    assert x0 < lx < rx < x1
    assert y0 < ly < (y0 + y1) / 2 + 10 and y0 < ry < (y0 + y1) / 2 + 10


def test_alignment_levels_a_tilted_face(mediapipe_detector, jaffe_sample):
    face = jaffe_sample.images[0]
    tilt = cv2.getRotationMatrix2D((128, 128), 12, 1.0)
    tilted = cv2.warpAffine(face, tilt, (256, 256), borderMode=cv2.BORDER_REPLICATE)
    before = mediapipe_detector.detect(tilted)
    assert abs(_eye_angle(before)) > 8
    aligned = preprocess.align_eyes(tilted, before.left_eye, before.right_eye)
    after = mediapipe_detector.detect(aligned)
    assert abs(_eye_angle(after)) < 2


def test_detect_faces_keeps_every_image_and_marks_fallbacks(fer_sample):
    images = fer_sample.images[:40]
    table = preprocess.detect_faces(images, preprocess.HaarDetector(), ids=fer_sample.ids[:40])
    assert len(table) == 40 and list(table["id"]) == list(fer_sample.ids[:40])
    assert (table["fallback"] == ~table["found"]).all()
    misses = table[table["fallback"]]
    assert len(misses) > 0  # Haar misses many 48x48 faces: the fallback is exercised on real data
    assert (misses[["x0", "y0", "x1", "y1"]].to_numpy() == [0, 0, 48, 48]).all()
    faces = preprocess.Preprocessing(detector="haar").apply(images, table)
    assert faces.shape == (40, 48, 48) and faces.dtype == np.uint8


def test_dlib_on_the_upscaled_frame_finds_most_fer_faces(fer_sample):
    table = preprocess.detect_faces(fer_sample.images, preprocess.DlibHogDetector(upscale_to=80))
    assert table["found"].mean() > 0.5


def test_crop_grows_the_box_clips_to_the_frame_and_refuses_empty_boxes(jaffe_sample):
    image = jaffe_sample.images[0]
    face = preprocess.crop(image, (200, 200, 260, 260), margin=0.5, size=48)
    assert face.shape == (48, 48)
    with pytest.raises(ValueError, match="no image"):
        preprocess.crop(image, (300, 300, 400, 400))


def test_clahe_raises_local_contrast_of_a_flat_face(fer_sample):
    flat = (fer_sample.images[5].astype(float) * 0.2 + 100).astype(np.uint8)  # a washed-out copy
    equalised = preprocess.clahe(flat)
    assert equalised.std() > 2 * flat.std()


def test_pipeline_without_detector_only_resizes_and_with_one_needs_detections(fer_sample):
    raw = preprocess.Preprocessing(size=64).apply(fer_sample.images[:3])
    assert raw.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="detect_faces"):
        preprocess.Preprocessing(detector="haar").apply(fer_sample.images[:3])


def test_detect_dataset_runs_in_worker_processes_and_caches(fer_sample, tmp_path, monkeypatch):
    import fer_lib.paths

    monkeypatch.setattr(fer_lib.paths, "repo_root", lambda: tmp_path)
    small = fer_sample.subset(np.arange(12))
    first = preprocess.detect_dataset(small, "haar", n_jobs=2, min_neighbors=3)
    cached = list((tmp_path / "cache" / "detections").glob("fer2013-haar-*.pkl"))
    assert len(cached) == 1 and list(first["id"]) == list(small.ids)
    direct = preprocess.detect_faces(small.images, preprocess.HaarDetector(min_neighbors=3), small.ids)
    assert (first["found"] == direct["found"]).all()
    again = preprocess.detect_dataset(small, "haar", n_jobs=2, min_neighbors=3)
    assert again.equals(first)  # read back from the cache, timings included
    other = preprocess.detect_dataset(small, "haar", n_jobs=1, min_neighbors=5)
    assert len(list((tmp_path / "cache" / "detections").glob("*.pkl"))) == 2  # new options, new entry
    assert other["found"].sum() <= first["found"].sum()

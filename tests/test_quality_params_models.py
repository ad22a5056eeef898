"""Data-quality checks, profiles, and the vendored models, on real files."""
from __future__ import annotations

import numpy as np
import pytest

from fer_lib import paths, quality
from fer_lib.params import PROFILES, load_params


def test_blank_images_are_found_and_only_they(fer_sample):
    blanks = quality.blank_images(fer_sample)
    assert len(blanks) == 2  # the sample keeps two of FER2013's blank frames
    flat = fer_sample.images.reshape(len(fer_sample), -1)
    others = ~np.isin(fer_sample.ids, blanks["id"])
    assert flat[others].std(axis=1).min() > 5  # every other face has real contrast


def test_duplicate_groups_are_pixel_identical_and_complete(fer_sample):
    groups = quality.duplicate_groups(fer_sample)
    position = {image_id: i for i, image_id in enumerate(fer_sample.ids)}
    for _, members in groups.groupby("group"):
        images = fer_sample.images[[position[i] for i in members["id"]]]
        assert len(members) >= 2 and (images == images[0]).all()
    # No twin was missed: every image outside the table is unique.
    outside = [i for i in range(len(fer_sample)) if fer_sample.ids[i] not in set(groups["id"])]
    keys = {fer_sample.images[i].tobytes() for i in outside}
    assert len(keys) == len(outside)
    summary = quality.duplicate_summary(groups)
    assert summary["redundant copies (images beyond the first of each group)"] == len(groups) - groups["group"].nunique()


def test_planted_duplicate_is_found_with_its_splits(fer_sample):
    twin = fer_sample.subset(np.r_[np.arange(len(fer_sample)), [5]])  # image 5 twice
    twin.ids[-1] = "PrivateTest_copy"
    twin.split[-1] = "PrivateTest"
    groups = quality.duplicate_groups(twin)
    found = groups[groups["id"] == "PrivateTest_copy"]["group"]
    assert len(found) == 1
    members = groups[groups["group"] == found.iloc[0]]
    assert fer_sample.ids[5] in set(members["id"])


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_file_loads_with_chapter_overrides(profile):
    params = load_params(profile, chapter="01_data")
    assert params.profile == profile and "per_class" in params and "seed" in params
    overridden = load_params(profile, chapter="01_data", data_dir="/elsewhere", seed=None)
    assert overridden.data_dir == "/elsewhere" and overridden.seed == params.seed


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="smoke"):
        load_params("huge")


def test_vendored_face_landmarker_is_intact_and_detects_a_real_face(jaffe_sample):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    model = paths.face_landmarker_path()
    assert paths.sha256(model) == paths.FACE_LANDMARKER_SHA256
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model)),
        output_face_blendshapes=True, num_faces=1,
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        rgb = np.repeat(jaffe_sample.images[0][:, :, None], 3, axis=2)
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
    assert len(result.face_landmarks) == 1 and len(result.face_landmarks[0]) == 478
    assert len(result.face_blendshapes[0]) == 52


def test_models_dir_override_names_the_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="face_landmarker.task"):
        paths.face_landmarker_path()


def test_dlib_68_point_predictor_places_68_points_on_a_real_face(jaffe_sample):
    import dlib

    image = np.ascontiguousarray(jaffe_sample.images[0])
    faces = dlib.get_frontal_face_detector()(image, 1)
    assert len(faces) == 1
    shape = dlib.shape_predictor(str(paths.dlib_shape_predictor_path()))(image, faces[0])
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)])
    assert points.shape == (68, 2)
    box = faces[0]
    inside = (points[:, 0] >= box.left() - 10) & (points[:, 0] <= box.right() + 10)
    assert inside.mean() > 0.9  # the landmarks sit on the detected face

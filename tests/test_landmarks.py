"""Landmark representation on real MediaPipe landmarks of sample faces: normalisation, pose removal,
SMOTE, augmentation and the models."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe")
from fer_lib import face_mesh, landmarks  # noqa: E402


@pytest.fixture(scope="module")
def jaffe_features(jaffe_sample, tmp_path_factory):
    faces = jaffe_sample.subset(np.arange(6))
    return faces, face_mesh.extract_dataset(faces, n_jobs=1, chunk_size=6, cache_dir=tmp_path_factory.mktemp("fm"),
                                            progress=False)


def test_normalise_removes_position_and_size(jaffe_features):
    _, features = jaffe_features
    points = features.landmarks
    moved = points * 1.7 + np.array([12.0, -30.0, 4.0])
    a, b = (landmarks.normalise(p, centre=True, scale=True) for p in (points, moved))
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt((a ** 2).sum(axis=2).mean(axis=1)), 1, atol=1e-5)
    # without centring, position stays
    assert not np.allclose(landmarks.normalise(points, centre=False, scale=False), landmarks.normalise(moved, centre=False, scale=False))


def test_pose_removal_undoes_a_tilted_head(jaffe_features):
    """Rotate real faces in the image plane by 20°: after pose removal the clouds agree far better than before."""
    faces, features = jaffe_features
    tilted_images = []
    for image in faces.images:
        centre = (image.shape[1] / 2, image.shape[0] / 2)
        tilted_images.append(cv2.warpAffine(image, cv2.getRotationMatrix2D(centre, 20, 1.0), image.shape[::-1],
                                            borderMode=cv2.BORDER_REPLICATE))
    tilted = face_mesh.FaceMeshExtractor((face_mesh.Attempt(192, 24),))
    with tilted as extractor:
        found = [extractor.extract_one(image, face_mesh.Attempt(192, 24)) for image in tilted_images]
    assert all(f is not None for f in found)
    t_points, t_matrix = np.stack([f[0] for f in found]), np.stack([f[2] for f in found])
    before = np.abs(landmarks.normalise(t_points) - landmarks.normalise(features.landmarks)).mean()
    after = np.abs(landmarks.normalise(t_points, t_matrix, remove_pose=True)
                   - landmarks.normalise(features.landmarks, features.matrix, remove_pose=True)).mean()
    assert after < 0.4 * before
    # the rotation found is about the viewing axis and about 20°
    roll = np.degrees(np.arctan2(landmarks.pose_rotations(t_matrix)[:, 1, 0], landmarks.pose_rotations(t_matrix)[:, 0, 0]))
    reference = np.degrees(np.arctan2(landmarks.pose_rotations(features.matrix)[:, 1, 0],
                                      landmarks.pose_rotations(features.matrix)[:, 0, 0]))
    np.testing.assert_allclose(np.abs(roll - reference), 20, atol=4)


def test_missed_faces_are_refused_with_a_clear_message(jaffe_features):
    _, features = jaffe_features
    points = features.landmarks.copy()
    points[2] = np.nan
    with pytest.raises(ValueError, match="1 of 6 faces have NaN landmarks"):
        landmarks.normalise(points)
    with pytest.raises(ValueError, match="matrices"):
        landmarks.normalise(features.landmarks, remove_pose=True)


def test_split_arrays_keep_only_found_faces(jaffe_features):
    faces, features = jaffe_features
    features.detected[1] = False
    try:
        parts = features.split_arrays(np.arange(len(faces)), faces).x
        assert sum(len(v) for v in parts.values()) == len(faces) - 1 and 1 not in np.concatenate(list(parts.values()))
    finally:
        features.detected[1] = True


def test_smote_balances_classes_with_interpolated_faces(jaffe_features):
    _, features = jaffe_features
    x = landmarks.normalise(np.concatenate([features.landmarks] * 3))
    y = np.array([0] * 14 + [1] * 4)
    x_new, y_new = landmarks.smote(x, y, k_neighbors=3)
    assert x_new.shape[1:] == (478, 3) and np.bincount(y_new).tolist() == [14, 14]
    synthetic = x_new[len(x):]
    # each synthetic face lies inside the range of the minority faces, coordinate by coordinate
    minority = x[y == 1]
    assert (synthetic >= minority.min(0) - 1e-5).all() and (synthetic <= minority.max(0) + 1e-5).all()


def test_mirror_augmentation_gives_the_mirrored_face(jaffe_features):
    faces, features = jaffe_features
    x = landmarks.normalise(features.landmarks)
    mirrored_images = [np.ascontiguousarray(image[:, ::-1]) for image in faces.images]
    with face_mesh.FaceMeshExtractor((face_mesh.Attempt(192, 24),)) as extractor:
        found = np.stack([extractor.extract_one(i, face_mesh.Attempt(192, 24))[0] for i in mirrored_images])
    layer = landmarks.LandmarkAugmentation(mirror=True, rotation=0, scale=0, jitter=0, seed=1)
    outputs = np.stack([np.asarray(layer(x, training=True)) for _ in range(8)])
    real_mirror = landmarks.normalise(found)
    # every output is either the face itself or (close to) MediaPipe's landmarks of the mirrored image
    to_self = np.abs(outputs - x).mean(axis=(2, 3))
    to_mirror = np.abs(outputs - real_mirror).mean(axis=(2, 3))
    assert (np.minimum(to_self, to_mirror) < 0.05).all()
    assert (to_self < 1e-6).any() and (to_mirror < 0.05).any()
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


@pytest.mark.parametrize("name", sorted(landmarks.MODELS))
def test_models_learn_a_real_landmark_difference(name, jaffe_features, tmp_path):
    import keras

    _, features = jaffe_features
    x = landmarks.normalise(features.landmarks)
    opened = x.copy()
    opened[:, :, 1] *= 1.25  # class 1: taller faces (stretched vertically), a real geometric change
    x_train = np.concatenate([x, opened] * 8)
    y_train = np.array(([0] * len(x) + [1] * len(x)) * 8)
    keras.utils.set_random_seed(0)
    model = landmarks.build(name, 2, augmentation={"mirror": True, "rotation": 0.05, "scale": 0.0, "jitter": 0.005})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=25, batch_size=16, verbose=0)
    probabilities = model.predict(np.concatenate([x, opened]), verbose=0)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    assert (probabilities.argmax(1) == [0] * len(x) + [1] * len(x)).mean() >= 0.9
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="study_mlp"):
        landmarks.build("transformer", 7)

"""MediaPipe extraction on real sample faces: shapes, names, geometry, cascade, cache and resume."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")
from fer_lib import face_mesh  # noqa: E402


@pytest.fixture(scope="module")
def jaffe_faces(jaffe_sample):
    return jaffe_sample.subset(np.arange(4))


def test_extraction_gives_landmarks_blendshapes_and_pose_inside_the_face(jaffe_faces, tmp_path):
    features = face_mesh.extract_dataset(jaffe_faces, n_jobs=1, chunk_size=2, cache_dir=tmp_path, progress=False)
    assert features.detected.all() and features.coverage == 1.0
    assert features.landmarks.shape == (4, 478, 3) and features.blendshapes.shape == (4, 52)
    assert len(features.blendshape_names) == 52 and "jawOpen" in features.blendshape_names
    assert ((features.blendshapes >= 0) & (features.blendshapes <= 1)).all()
    height, width = jaffe_faces.images.shape[1:3]
    xy = features.landmarks[..., :2]
    assert (xy[..., 0] > 0).all() and (xy[..., 0] < width).all() and (xy[..., 1] > 0).all() and (xy[..., 1] < height).all()
    rotation = features.matrix[:, :3, :3]
    # a pose matrix: rotation part orthonormal (up to MediaPipe's scale), last row (0, 0, 0, 1)
    scale = np.cbrt(np.linalg.det(rotation))
    np.testing.assert_allclose(rotation @ rotation.transpose(0, 2, 1) / scale[:, None, None] ** 2,
                               np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-3)
    np.testing.assert_allclose(features.matrix[:, 3], np.broadcast_to([0, 0, 0, 1], (4, 4)), atol=1e-6)
    np.testing.assert_array_equal(features.ids, jaffe_faces.ids)
    assert (features.attempt == 0).all()


def test_a_blank_frame_is_a_counted_miss_with_nan_features(fer_sample, tmp_path):
    blank = np.flatnonzero(fer_sample.images.reshape(len(fer_sample), -1).std(axis=1) < 1.0)[:1]
    faces = fer_sample.subset(blank)
    features = face_mesh.extract_dataset(faces, n_jobs=1, cache_dir=tmp_path, progress=False)
    assert not features.detected.any() and (features.attempt == -1).all()
    assert np.isnan(features.landmarks).all() and np.isnan(features.blendshapes).all()
    assert features.attempts_table().loc["none found", "images"] == 1
    assert features.misses_table(faces)["total"].sum() == 1


def test_extraction_resumes_only_the_missing_chunks(jaffe_faces, tmp_path):
    first = face_mesh.extract_dataset(jaffe_faces, n_jobs=1, chunk_size=2, cache_dir=tmp_path, progress=False)
    chunks = sorted(tmp_path.rglob("chunk_*.npz"))
    assert len(chunks) == 2
    kept_mtime = chunks[0].stat().st_mtime_ns
    chunks[1].unlink()  # as if interrupted before the second chunk was written
    again = face_mesh.extract_dataset(jaffe_faces, n_jobs=1, chunk_size=2, cache_dir=tmp_path, progress=False)
    assert chunks[1].is_file() and chunks[0].stat().st_mtime_ns == kept_mtime
    np.testing.assert_allclose(again.landmarks, first.landmarks, atol=1e-4)


def test_a_chunk_interrupted_while_written_is_absent_not_half_there(jaffe_faces, tmp_path, monkeypatch):
    """Killed inside ``np.savez``, the cache must not keep that chunk: the next run would take a half-written
    file for a finished one and fail on it, and a second process filling the same cache could read it."""
    real_savez = np.savez

    def killed_before_the_write_ends(file, **arrays):
        real_savez(file, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(face_mesh.np, "savez", killed_before_the_write_ends)
    with pytest.raises(KeyboardInterrupt):
        face_mesh.extract_dataset(jaffe_faces, n_jobs=1, chunk_size=2, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.rglob("*chunk_*")) == []  # neither the chunk nor its temporary file
    monkeypatch.setattr(face_mesh.np, "savez", real_savez)
    again = face_mesh.extract_dataset(jaffe_faces, n_jobs=1, chunk_size=2, cache_dir=tmp_path, progress=False)
    assert again.detected.all() and len(sorted(tmp_path.rglob("chunk_*.npz"))) == 2


def test_misaligned_dataset_is_refused(jaffe_faces, jaffe_sample, tmp_path):
    features = face_mesh.extract_dataset(jaffe_faces, n_jobs=1, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="not aligned"):
        features.misses_table(jaffe_sample)


def test_mirror_permutation_is_a_left_right_swap_that_the_sample_faces_reproduce(jaffe_sample, fer_sample):
    mirror = face_mesh.mirror_permutation()
    assert sorted(mirror) == list(range(478)) and (mirror[mirror] == np.arange(478)).all()  # swap twice: identity
    # landmarks 33/263 are the outer eye corners, 61/291 the mouth corners, 1 the nose tip
    assert mirror[33] == 263 and mirror[61] == 291 and mirror[1] == 1
    derived = face_mesh.derive_mirror_permutation(list(jaffe_sample.images) + list(fer_sample.images[:60]))
    assert (derived == mirror).mean() > 0.98


def test_mirrored_attempt_gives_the_same_face_as_the_plain_one(jaffe_faces):
    plain, mirrored = face_mesh.Attempt(192, 24), face_mesh.Attempt(192, 24, mirror=True)
    with face_mesh.FaceMeshExtractor((plain,)) as extractor:
        for image in jaffe_faces.images:
            points, blendshapes, matrix = extractor.extract_one(image, plain)
            m_points, m_blendshapes, m_matrix = extractor.extract_one(image, mirrored)
            face_size = np.ptp(points[:, 0])
            # same landmark, same place (a few % of the face), instead of its left/right twin
            assert np.abs(m_points[:, :2] - points[:, :2]).mean() < 0.03 * face_size
            assert list(m_blendshapes) == list(blendshapes)
            # the side-specific scores follow their side: compare left-right differences, not raw values
            left = np.array([blendshapes[n] for n in blendshapes if "Left" in n])
            m_left = np.array([m_blendshapes[n] for n in blendshapes if "Left" in n])
            assert np.abs(m_left - left).mean() < 0.1
            np.testing.assert_allclose(m_matrix[:3, :3], matrix[:3, :3], atol=0.15)


def test_coverage_table_counts_found_faces_per_split(fer_sample, tmp_path):
    faces = fer_sample.stratified_subset(1, seed=0)
    features = face_mesh.extract_dataset(faces, (face_mesh.Attempt(192, 24),), n_jobs=1, cache_dir=tmp_path, progress=False)
    features.detected[0] = False  # one more miss than MediaPipe gave: the table must count it
    table = features.coverage_table(faces)
    assert table.loc["all", "images"] == len(faces) and table.loc["all", "faces found"] == features.detected.sum()
    split = faces.split[0]
    assert table.loc[split, "faces found"] == features.detected[faces.split == split].sum() < (faces.split == split).sum()
    with pytest.raises(ValueError, match="not aligned"):
        features.coverage_table(fer_sample)

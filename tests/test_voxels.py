"""Voxel grids of real MediaPipe landmarks (4 JAFFE faces): normalisation, occupancy and its collisions,
Gaussian splats, and the two 3D-CNNs learning a separable problem made from the same faces."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")
keras = pytest.importorskip("keras")
from fer_lib import face_mesh, voxels


@pytest.fixture(scope="module")
def landmarks(jaffe_sample, tmp_path_factory):
    """(4, 478, 3) landmarks of 4 real faces, extracted once for the module."""
    faces = jaffe_sample.subset(np.arange(4))
    features = face_mesh.extract_dataset(faces, n_jobs=1, chunk_size=4, cache_dir=tmp_path_factory.mktemp("mesh"),
                                         progress=False)
    assert features.detected.all() and features.landmarks.shape == (4, 478, 3)
    return features.landmarks


def _centre_of_mass(grids):
    k = grids.shape[1]
    weights = grids.reshape(len(grids), -1).astype(np.float64)
    cells = np.indices((k, k, k)).reshape(3, -1).T
    return weights @ cells / weights.sum(axis=1, keepdims=True)


def test_grid_coordinates_fill_the_longest_axis_and_keep_the_aspect_ratio(landmarks):
    k = 32
    coords = voxels.to_grid_coordinates(landmarks, k)
    assert coords.shape == landmarks.shape
    assert coords.min() >= 0 and coords.max() <= k - 1
    extent_before = np.ptp(landmarks, axis=1)
    extent_after = np.ptp(coords, axis=1)
    np.testing.assert_allclose(extent_after.max(axis=1), k - 1)
    np.testing.assert_allclose(extent_after / (k - 1), extent_before / extent_before.max(axis=1, keepdims=True),
                               rtol=1e-5)
    # the shorter axes are centred: equal margins on both sides
    np.testing.assert_allclose(coords.min(axis=1), (k - 1) - coords.max(axis=1), atol=1e-9)


def test_occupancy_sets_the_nearest_cells_in_x_y_z_order():
    # a 10×4×2 box in a k=11 grid: x spans 0..10, y (extent 4) is centred at 3..7, z (extent 2) at 4..6
    points = np.array([[[0, 0, 0], [10, 0, 0], [0, 4, 0], [0, 0, 2]]], float)
    grid = voxels.occupancy(points, k=11)
    assert grid.shape == (1, 11, 11, 11) and grid.dtype == np.uint8
    assert {tuple(cell) for cell in np.argwhere(grid[0])} == {(0, 3, 4), (10, 3, 4), (0, 7, 4), (0, 3, 6)}


def test_occupancy_is_binary_and_counts_the_cells_that_collisions_miss(landmarks):
    k = 32
    grids = voxels.occupancy(landmarks, k)
    assert grids.shape == (4, k, k, k) and set(np.unique(grids)) == {0, 1}
    occupied = grids.reshape(4, -1).sum(axis=1)
    # an independent count: distinct rounded cells per face
    cells = np.floor(voxels.to_grid_coordinates(landmarks, k) + 0.5).astype(int)
    np.testing.assert_array_equal(occupied, [len({tuple(c) for c in face}) for face in cells])
    assert (occupied <= 478).all()
    np.testing.assert_allclose(occupied, 478 * (1 - voxels.collisions(landmarks, k)))


def test_collisions_fall_as_the_grid_gets_finer(landmarks):
    coarse, fine = voxels.collisions(landmarks, 16), voxels.collisions(landmarks, 64)
    assert (fine < coarse).all()
    assert coarse.min() > 0.2  # the study's problem: at small k a large share of the points is lost
    summary = voxels.describe(voxels.occupancy(landmarks, 16))
    assert summary["faces"] == 4 and summary["k"] == 16
    assert summary["collision_fraction"] == pytest.approx(coarse.mean())
    assert summary["occupied_cells"] == pytest.approx(478 * (1 - coarse.mean()))


def test_occupancy_ignores_position_and_size(landmarks):
    moved = landmarks * 2.0 + np.array([37.0, -12.0, 5.0])
    np.testing.assert_array_equal(voxels.occupancy(moved, 32), voxels.occupancy(landmarks, 32))


def test_gaussian_grid_is_a_normalised_density_centred_on_the_landmarks(landmarks):
    k = 32
    grids = voxels.gaussian_splat(landmarks, k, sigma=1.0)
    assert grids.shape == (4, k, k, k) and grids.dtype == np.float16
    assert grids.min() >= 0 and grids.max() <= 1
    np.testing.assert_allclose(grids.reshape(4, -1).max(axis=1), 1.0)
    mean = voxels.to_grid_coordinates(landmarks, k).mean(axis=1)
    assert np.abs(_centre_of_mass(grids) - mean).max() < 0.5
    summary = voxels.describe(grids)
    assert np.isnan(summary["collision_fraction"]) and summary["occupied_cells"] > 478


def test_wider_gaussians_cover_more_cells(landmarks):
    def covered(sigma):
        return np.count_nonzero(voxels.gaussian_splat(landmarks, 32, sigma=sigma).reshape(4, -1), axis=1)
    narrow, wide = covered(0.5), covered(2.0)
    assert (wide > narrow).all()


def test_gaussian_grid_keeps_a_sub_cell_move_that_occupancy_loses(landmarks):
    k = 32
    face = landmarks[:1].copy()
    coords = voxels.to_grid_coordinates(face, k)[0]
    low, high = face[0].min(axis=0), face[0].max(axis=0)
    inside = ((face[0] > low + 1e-3) & (face[0] < high - 1e-3)).all(axis=1)  # moving it keeps the bounding box
    frac = coords[:, 0] - np.floor(coords[:, 0])
    point = np.flatnonzero(inside & (frac > 0.1) & (frac < 0.3))[0]
    cell = (high - low).max() / (k - 1)
    moved = face.copy()
    moved[0, point, 0] += 0.15 * cell  # stays in its cell
    np.testing.assert_array_equal(voxels.occupancy(moved, k), voxels.occupancy(face, k))
    assert np.abs(voxels.gaussian_splat(moved, k).astype(float) - voxels.gaussian_splat(face, k)).max() > 1e-3


def test_missed_faces_are_refused_with_a_reason(landmarks):
    missed = landmarks.copy()
    missed[2] = np.nan
    for make in (voxels.to_grid_coordinates, voxels.occupancy, voxels.gaussian_splat, voxels.voxelise):
        with pytest.raises(ValueError, match=r"1 of 4 faces.*detected faces"):
            make(missed)


def test_voxelise_dispatches_and_names_its_methods(landmarks):
    np.testing.assert_array_equal(voxels.voxelise(landmarks, "occupancy", k=16), voxels.occupancy(landmarks, 16))
    np.testing.assert_array_equal(voxels.voxelise(landmarks, "gaussian", k=16, sigma=1.5),
                                  voxels.gaussian_splat(landmarks, 16, sigma=1.5))
    with pytest.raises(ValueError, match="gaussian"):
        voxels.voxelise(landmarks, "mesh")


def test_study_cnn3d_has_the_studys_layers_and_a_cpu_sized_dense_layer():
    model = voxels.study_cnn3d(7)
    kinds = [type(layer) for layer in model.layers]
    assert kinds.count(keras.layers.Conv3D) == 3 and kinds.count(keras.layers.MaxPooling3D) == 1
    assert kinds.count(keras.layers.Dense) == 3
    assert model.input_shape == (None, 32, 32, 32) and model.count_params() < 3_000_000


@pytest.mark.parametrize("name", sorted(voxels.MODELS))
def test_models_take_both_grids_as_they_are_and_output_probabilities(name, landmarks):
    model = voxels.build(name, 7, k=16)
    assert model.input_shape == (None, 16, 16, 16) and model.output_shape == (None, 7)
    for grids in (voxels.occupancy(landmarks, 16), voxels.gaussian_splat(landmarks, 16)):
        probabilities = model.predict(grids, verbose=0)
        assert probabilities.shape == (4, 7)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="voxel_cnn"):
        voxels.build("nope", 7)


def _upright_or_upside_down(landmarks, copies, rng):
    """Jittered copies of the real faces (small in-plane rotation, 1 px noise): class 0 as they are,
    class 1 flipped upside down (y mirrored)."""
    faces = np.repeat(landmarks, copies, axis=0)
    angle = rng.uniform(-0.15, 0.15, len(faces))
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x, y = faces[..., 0].copy(), faces[..., 1].copy()
    faces[..., 0], faces[..., 1] = cos * x - sin * y, sin * x + cos * y
    faces = faces + rng.normal(0, 1.0, faces.shape)
    flipped = faces * np.array([1.0, -1.0, 1.0])
    labels = np.repeat([0, 1], len(faces))
    return voxels.occupancy(np.concatenate([faces, flipped]), 16), labels


@pytest.mark.parametrize("name", sorted(voxels.MODELS))
def test_models_learn_upright_from_upside_down_faces(name, landmarks):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = _upright_or_upside_down(landmarks, 8, rng)
    x_test, y_test = _upright_or_upside_down(landmarks, 4, rng)
    model = voxels.build(name, 2, k=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    before = model.evaluate(x_test, y_test, verbose=0)[1]
    model.fit(x, y, batch_size=16, epochs=4, shuffle=True, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy >= 0.85, (before, accuracy)


def test_voxel_augmentation_mirrors_and_shifts_only_while_training(landmarks):
    from fer_lib.voxels import VoxelAugmentation

    grids = voxels.occupancy(landmarks, 16).astype("float32")
    mirror_only = VoxelAugmentation(mirror=True, shift=0, seed=3)
    outputs = np.stack([np.asarray(mirror_only(grids, training=True)) for _ in range(6)])
    flipped = grids[:, ::-1]
    same = (outputs == grids).all(axis=(2, 3, 4))
    mirrored = (outputs == flipped).all(axis=(2, 3, 4))
    assert (same | mirrored).all() and same.any() and mirrored.any()
    shifted = np.asarray(VoxelAugmentation(mirror=False, shift=2, seed=0)(grids, training=True))
    assert shifted.sum() == grids.sum()  # cells move, none appear or vanish
    np.testing.assert_array_equal(np.asarray(mirror_only(grids, training=False)), grids)


def test_augmented_voxel_cnn_survives_save_and_load(landmarks, tmp_path):
    import keras

    grids = voxels.occupancy(landmarks, 16)
    model = voxels.build("voxel_cnn", 7, k=16, width=4, dense_units=8, augmentation={"mirror": True, "shift": 1})
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(grids, verbose=0), model.predict(grids, verbose=0), atol=1e-6)

"""The mesh representation on MediaPipe's own topology and real JAFFE landmarks: topology facts,
invariances of the edge lengths, the normalised adjacency, normals, GraphConv numerics and saving,
and both mesh models learning a mouth opening."""
from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pytest

pytest.importorskip("mediapipe")
keras = pytest.importorskip("keras")
from mediapipe.tasks.python.vision import FaceLandmarksConnections  # noqa: E402
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import connected_components  # noqa: E402

from fer_lib import face_mesh, mesh  # noqa: E402

TESSELATION = np.array([(c.start, c.end) for c in FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION])


@pytest.fixture(scope="module")
def landmarks(jaffe_sample, tmp_path_factory):
    """(4, 478, 3) real landmarks of the first 4 JAFFE faces (all found)."""
    features = face_mesh.extract_dataset(jaffe_sample.subset(np.arange(4)), n_jobs=1, chunk_size=4,
                                         cache_dir=tmp_path_factory.mktemp("fm"), progress=False)
    assert features.detected.all()
    return features.landmarks


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _components(n, pairs):
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[0]


# --- topology -------------------------------------------------------------------------------------

def test_module_imports_mediapipe_only_inside_functions():
    tree = ast.parse(inspect.getsource(mesh))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
    assert not any(name.startswith("mediapipe") for name in names)


def test_edges_are_the_unique_undirected_tesselation_edges():
    e = mesh.edges()
    assert e.ndim == 2 and e.shape[1] == 2 and (e[:, 0] < e[:, 1]).all()
    assert len(np.unique(e, axis=0)) == len(e)
    np.testing.assert_array_equal(e, e[np.lexsort((e[:, 1], e[:, 0]))])  # sorted by (i, j)
    assert len(e) == len({frozenset(pair) for pair in TESSELATION.tolist()}) == 1322
    assert set(e.ravel().tolist()) == set(range(mesh.N_SURFACE))  # every surface vertex, no iris


def test_iris_edges_give_every_landmark_a_neighbour():
    face, full = mesh.edges(), mesh.edges(include_iris=True)
    extra = np.array(sorted(set(map(tuple, full.tolist())) - set(map(tuple, face.tolist()))))
    assert set(map(tuple, face.tolist())) <= set(map(tuple, full.tolist()))
    assert (extra >= mesh.N_SURFACE).all()  # the irises only, no edge into the face
    assert np.bincount(full.ravel(), minlength=mesh.N_VERTICES).min() >= 1
    for connections in (FaceLandmarksConnections.FACE_LANDMARKS_LEFT_IRIS,
                        FaceLandmarksConnections.FACE_LANDMARKS_RIGHT_IRIS):
        for c in connections:
            assert (min(c.start, c.end), max(c.start, c.end)) in set(map(tuple, extra.tolist()))


def test_triangles_are_the_closed_consecutive_triples_of_the_tesselation():
    tri = mesh.triangles()
    # the rule triangles() relies on: connection 3k+m ends where 3k+m+1 starts, and the third closes
    triples = TESSELATION.reshape(-1, 3, 2)
    np.testing.assert_array_equal(triples[:, :, 1], np.roll(triples[:, :, 0], -1, axis=1))
    np.testing.assert_array_equal(tri, triples[:, :, 0])
    assert len(tri) == len(TESSELATION) // 3 and len(np.unique(np.sort(tri, axis=1), axis=0)) == len(tri)
    edge_set = set(map(tuple, mesh.edges().tolist()))
    for a, b, c in tri.tolist():
        assert {tuple(sorted(p)) for p in ((a, b), (b, c), (c, a))} <= edge_set
    # the fallback rule (3-cliques of the edge graph less the nostril-wing rims) finds the same faces
    np.testing.assert_array_equal(mesh._triangles_from_edges(mesh.edges()), np.unique(np.sort(tri, axis=1), axis=0))


def test_the_face_mesh_is_one_orientable_genus_0_surface_with_holes():
    tri, e = mesh.triangles(), mesh.edges()
    directed = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    # manifold and consistently wound: each directed edge once; an inner edge once each way
    assert len(np.unique(directed, axis=0)) == len(directed)
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    np.testing.assert_array_equal(undirected, e)
    assert set(counts.tolist()) == {1, 2}
    boundary = undirected[counts == 1]
    # each border vertex has two border edges, so the border is disjoint loops: count them
    assert (np.bincount(boundary.ravel())[np.unique(boundary)] == 2).all()
    loops = _components(mesh.N_SURFACE, boundary) - (mesh.N_SURFACE - len(np.unique(boundary)))
    assert _components(mesh.N_SURFACE, e) == 1
    euler = mesh.N_SURFACE - len(e) + len(tri)
    assert euler == 2 - loops  # χ = 2 − 2g − b with genus g = 0
    assert loops == 4  # the face outline, two eyes, the mouth


# --- edge lengths ---------------------------------------------------------------------------------

def test_edge_lengths_are_positive_and_normalised_per_face(landmarks):
    lengths = mesh.edge_lengths(landmarks)
    assert lengths.shape == (4, len(mesh.edges())) and lengths.dtype == np.float32
    assert (lengths > 0).all()
    np.testing.assert_allclose(lengths.mean(axis=1), 1.0, rtol=1e-5)
    assert mesh.edge_lengths(landmarks, include_iris=True).shape == (4, len(mesh.edges(include_iris=True)))


def test_normalised_edge_lengths_ignore_rotation_translation_and_scale(landmarks):
    moved = 2.7 * landmarks.astype(np.float64) @ _rotation(0).T + np.array([13.0, -40.0, 7.5])
    np.testing.assert_allclose(mesh.edge_lengths(moved), mesh.edge_lengths(landmarks), rtol=1e-5)
    raw = mesh.edge_lengths(landmarks, normalise=False)
    np.testing.assert_allclose(mesh.edge_lengths(moved, normalise=False), 2.7 * raw, rtol=1e-5)


def test_moving_one_vertex_changes_exactly_its_edges(landmarks):
    vertex = 14  # on the lower lip
    moved = landmarks.copy()
    moved[:, vertex] += np.array([0.5, 3.0, -1.0])
    changed = ~np.isclose(mesh.edge_lengths(moved, normalise=False),
                          mesh.edge_lengths(landmarks, normalise=False), rtol=0, atol=1e-6)
    incident = (mesh.edges() == vertex).any(axis=1)
    assert incident.sum() >= 3
    np.testing.assert_array_equal(changed, np.broadcast_to(incident, changed.shape))


def test_missed_faces_are_refused_with_a_count(landmarks):
    with_miss = landmarks.copy()
    with_miss[2] = np.nan
    for function in (mesh.edge_lengths, mesh.vertex_normals, mesh.node_features):
        with pytest.raises(ValueError, match="1 of 4 faces.*only detected faces"):
            function(with_miss)
    with pytest.raises(ValueError, match="shape"):
        mesh.edge_lengths(landmarks[0])


# --- adjacency, normals, node features -----------------------------------------------------------

def test_adjacency_is_the_symmetric_normalised_one():
    a = mesh.adjacency()
    assert a.shape == (478, 478) and a.dtype == np.float32
    np.testing.assert_array_equal(a, a.T)
    eigenvalues = np.linalg.eigvalsh(a.astype(np.float64))
    assert eigenvalues.min() >= -1 - 1e-6 and eigenvalues.max() == pytest.approx(1.0, abs=1e-5)
    e = mesh.edges(include_iris=True)
    degree = np.bincount(e.ravel(), minlength=478) + 1  # + the self-loop
    i, j = e[0]
    assert a[i, j] == pytest.approx(1 / np.sqrt(degree[i] * degree[j]))
    assert a[i, i] == pytest.approx(1 / degree[i])
    assert np.count_nonzero(a) == 2 * len(e) + 478
    # without the irises their vertices keep only the self-loop; without self-loops the diagonal is 0
    assert mesh.adjacency(include_iris=False)[470, 470] == 1.0
    assert np.count_nonzero(mesh.adjacency(include_iris=False)[470]) == 1
    assert not np.diag(mesh.adjacency(self_loops=False)).any()
    with pytest.raises(ValueError, match="n_vertices"):
        mesh.adjacency(400)


def test_vertex_normals_are_unit_rotate_with_the_face_and_face_the_camera(landmarks):
    normals = mesh.vertex_normals(landmarks)
    assert normals.shape == (4, 478, 3) and normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normals[:, :mesh.N_SURFACE], axis=-1), 1.0, atol=1e-5)
    assert not normals[:, mesh.N_SURFACE:].any()  # irises: in no triangle, zero
    # MediaPipe's z: smaller is closer to the camera; the winding makes the face's normals point at it
    assert (normals[:, :mesh.N_SURFACE, 2].mean(axis=1) < -0.5).all()
    rotation = _rotation(1)
    turned = mesh.vertex_normals(3.0 * landmarks @ rotation.T + 5.0)
    np.testing.assert_allclose(turned, normals @ rotation.T, atol=1e-4)


def test_node_features_are_centred_unit_rms_and_carry_normals(landmarks):
    xyz = mesh.node_features(landmarks)
    assert xyz.shape == (4, 478, 3) and xyz.dtype == np.float32
    np.testing.assert_allclose(xyz.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt((xyz ** 2).sum(axis=-1).mean(axis=1)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(mesh.node_features(0.5 * landmarks - 20.0), xyz, atol=1e-5)
    both = mesh.node_features(landmarks, normals=True)
    assert both.shape == (4, 478, 6)
    np.testing.assert_allclose(both[..., :3], xyz)
    np.testing.assert_allclose(both[..., 3:], mesh.vertex_normals(landmarks))


# --- GraphConv and the models ----------------------------------------------------------------------

@pytest.mark.parametrize("features, units", [(3, 5), (8, 4)])  # both product orders: (ÂX)W and Â(XW)
def test_graph_conv_computes_a_hat_x_w_plus_b(features, units):
    x = np.random.default_rng(2).normal(size=(2, 478, features)).astype("float32")
    layer = mesh.GraphConv(units, activation="relu")
    layer.build(x.shape)
    kernel = np.random.default_rng(3).normal(size=(features, units)).astype("float32")
    bias = np.linspace(-1, 1, units).astype("float32")
    layer.set_weights([kernel, bias])
    expected = np.maximum(np.einsum("uv,bvf,fk->buk", mesh.adjacency().astype(np.float64), x, kernel) + bias, 0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-4)
    assert layer.compute_output_shape((None, 478, features)) == (None, 478, units)


def test_a_gcn_saves_and_reloads_with_identical_predictions(landmarks, tmp_path):
    model = mesh.gcn(7, features=6, units=(8, 8), dense_units=8)
    assert len(json.dumps(model.get_layer("graph_conv1").get_config())) < 2000  # settings, not Â
    x = mesh.node_features(landmarks, normals=True)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.get_layer("graph_conv2"), mesh.GraphConv)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_both_models_have_their_shape_and_give_probabilities(landmarks):
    cnn = mesh.build("study_distance_cnn", 7)
    assert cnn.input_shape == (None, len(mesh.edges())) and cnn.output_shape == (None, 7)
    assert sum(isinstance(layer, keras.layers.Conv1D) for layer in cnn.layers) == 3
    assert sum(isinstance(layer, keras.layers.Dense) for layer in cnn.layers) == 3
    graph = mesh.build("gcn", 7)
    assert graph.input_shape == (None, 478, 3) and graph.output_shape == (None, 7)
    assert sum(isinstance(layer, mesh.GraphConv) for layer in graph.layers) == 3
    assert [layer.name for layer in graph.layers if layer.name.startswith("residual")] == ["residual2"]
    for model, x in ((cnn, mesh.edge_lengths(landmarks)), (graph, mesh.node_features(landmarks))):
        probabilities = model.predict(x, verbose=0)
        assert probabilities.shape == (4, 7)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_model_or_pooling_names_the_choices():
    with pytest.raises(KeyError, match="gcn"):
        mesh.build("nope", 7)
    with pytest.raises(ValueError, match="mean"):
        mesh.gcn(7, pooling="sum")


def _open_mouths(landmarks, copies=6, seed=0):
    """Class 0: the real faces; class 1: the same faces with the lower lip pulled down by 6 % of the
    face height. Each face is repeated with a little landmark noise (0.3 px)."""
    lips = np.unique([v for c in FaceLandmarksConnections.FACE_LANDMARKS_LIPS for v in (c.start, c.end)])
    opened = landmarks.copy()
    for face, points in zip(opened, landmarks, strict=True):
        lower = lips[points[lips, 1] > points[lips, 1].mean()]  # image y grows downwards
        face[lower, 1] += 0.06 * np.ptp(points[:, 1])
    rng = np.random.default_rng(seed)
    faces = np.concatenate([landmarks, opened] * copies)
    faces = faces + rng.normal(scale=0.3, size=faces.shape)
    labels = np.tile(np.repeat([0, 1], len(landmarks)), copies)
    return faces, labels


@pytest.mark.parametrize("name", ["study_distance_cnn", "gcn"])
def test_models_learn_an_open_mouth(name, landmarks):
    faces, labels = _open_mouths(landmarks, seed=0)
    if name == "gcn":
        # with normals: on xyz alone a low-pass GCN with global pooling sees the lip move only as a
        # slight shift of the point cloud, and does not pick it up in a few epochs
        x, options = mesh.node_features(faces, normals=True), {"features": 6, "units": (16, 16), "dense_units": 16}
    else:
        x, options = mesh.edge_lengths(faces), {"filters": (8, 8, 8), "dense_units": (16, 8)}
    keras.utils.set_random_seed(0)
    model = mesh.build(name, 2, dropout=0.0, **options)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, labels, batch_size=16, epochs=15, verbose=0).history
    # training accuracy (batch statistics): after 45 steps the batch norms' moving averages are not
    # yet settled, so inference-mode accuracy would test Keras' momentum, not what the model learnt
    assert history["accuracy"][-1] > 0.75  # chance is 0.5
    assert history["loss"][-1] < 0.8 * history["loss"][0]


def test_laplacian_coordinates_are_local_shape_invariant_to_translation(landmarks):
    points = landmarks.astype(np.float64)
    delta = mesh.laplacian_coordinates(points)
    np.testing.assert_allclose(mesh.laplacian_coordinates(points + [5.0, -3.0, 2.0]), delta, atol=1e-3)
    # by hand for one vertex: itself minus the mean of its neighbours in the edge list
    pairs = mesh.edges(include_iris=True)
    neighbours = np.concatenate([pairs[pairs[:, 0] == 1, 1], pairs[pairs[:, 1] == 1, 0]])
    np.testing.assert_allclose(delta[:, 1], points[:, 1] - points[:, neighbours].mean(axis=1), rtol=1e-4, atol=1e-4)
    # a bump: pushing one vertex out changes its own differential coordinate by the push
    bumped = points.copy()
    bumped[:, 1, 2] -= 3.0
    np.testing.assert_allclose(mesh.laplacian_coordinates(bumped)[:, 1, 2] - delta[:, 1, 2], -3.0, atol=1e-3)
    assert mesh.node_features(points, normals=True, laplacian=True).shape == (len(points), 478, 9)


def test_distance_cnn_from_landmarks_measures_the_same_edges_and_reloads(landmarks, tmp_path):
    import keras

    x = mesh.node_features(landmarks)
    layer = mesh.EdgeLengths()
    np.testing.assert_allclose(np.asarray(layer(x)), mesh.edge_lengths(x), rtol=1e-4, atol=1e-5)
    model = mesh.build("study_distance_cnn", 7, from_landmarks=True,
                       augmentation={"mirror": True, "rotation": 0.1, "scale": 0.05, "jitter": 0.01})
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="from_landmarks"):
        mesh.build("study_distance_cnn", 7, augmentation={"mirror": True})

"""The mesh representation (3DFER RQ2.3): MediaPipe's 478×3 landmarks as a triangulated surface.

The mesh's vertices are the landmarks, its edges MediaPipe's ``FACE_LANDMARKS_TESSELATION``
connections and its faces the triangles of that tesselation. A point cloud (the landmarks
chapter) says where the points are; the mesh adds which points are neighbours on the skin, so an
expression becomes a local deformation: a smile stretches the edges around the mouth, a frown
shortens those between the brows. Two models read it:

- :func:`study_distance_cnn` — the 3DFER study's model: the vector of edge lengths
  (:func:`edge_lengths`) through 3 Conv1D + 3 dense layers (57 % on FER2013, 7 classes). Edge
  lengths do not change when a face is moved or turned, and after dividing by the mean edge
  length not when it is scaled either, so the model sees shape, not pose or size.
- :func:`gcn` — a graph convolution network (Kipf & Welling 2017) over the mesh graph itself:
  :class:`GraphConv` layers mix each vertex's features (:func:`node_features`: normalised xyz,
  optionally :func:`vertex_normals`) with its neighbours' through the normalised adjacency
  (:func:`adjacency`), so the convolution follows the skin rather than an arbitrary edge order.

Topology, as checked by ``tests/test_mesh.py`` on MediaPipe's own lists: the tesselation's 2,556
connections are its 852 triangles' edges, three per triangle in order (each consecutive triple is
a closed 3-cycle, all consistently wound), so :func:`triangles` takes the triples as they are. They
share 1,322 unique edges over vertices 0..467: 1,234 inside two triangles, 88 on the border of
only one. The 88 border edges close into 4 loops (the face's outline, the two eyes and the mouth),
and V − E + F = 468 − 1,322 + 852 = −2 = 2 − 4: a sphere with four holes, i.e. the face is one
open genus-0 surface with its eyes and mouth cut out. The winding makes triangle normals point
towards the camera (−z in MediaPipe's coordinates, where smaller z is closer).

The 10 iris landmarks (468–477: centre then 4 ring points, right iris first) are in no triangle
and in no tesselation edge. :func:`edges` leaves them out by default, as the study's edge vector
does (1,322 lengths of the face surface); ``include_iris=True`` adds MediaPipe's two iris rings
plus a spoke from each centre to its ring (MediaPipe connects the rings only, which would leave
the centres isolated): 16 more edges, every vertex has a neighbour. The GCN's :func:`adjacency`
includes them by default, so no vertex of its 478 is cut off from the graph (the irises still
form two small components of their own: gaze reaches the rest of the face through the pooling).

MediaPipe is imported lazily, so this module imports without it; the topology is computed once
(``functools.cache``) and handed out as read-only arrays.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

N_VERTICES = 478   # landmarks MediaPipe returns
N_SURFACE = 468    # vertices of the tesselation (the face surface); 468..477 are the irises
IRIS_CENTRES = {468: (469, 470, 471, 472), 473: (474, 475, 476, 477)}  # right, left


def _frozen(array: np.ndarray) -> np.ndarray:
    """Cached arrays are shared between callers: make them read-only so no caller edits another's."""
    array.flags.writeable = False
    return array


@functools.cache
def _connections(name: str) -> np.ndarray:
    """MediaPipe's connection list ``name`` as an (n, 2) int array, in its order."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections

    return _frozen(np.array([(c.start, c.end) for c in getattr(FaceLandmarksConnections, name)], dtype=np.int64))


def _unique_undirected(pairs: np.ndarray) -> np.ndarray:
    return np.unique(np.sort(pairs, axis=1), axis=0)


@functools.cache
def edges(include_iris: bool = False) -> np.ndarray:
    """(E, 2) unique undirected edges (i < j), sorted: the tesselation's 1,322 edges, plus the 16 iris
    edges (rings and centre spokes) with ``include_iris=True`` (see the module docstring)."""
    pairs = [_connections("FACE_LANDMARKS_TESSELATION")]
    if include_iris:
        pairs += [_connections("FACE_LANDMARKS_RIGHT_IRIS"), _connections("FACE_LANDMARKS_LEFT_IRIS"),
                  np.array([(centre, r) for centre, ring in IRIS_CENTRES.items() for r in ring])]
    return _frozen(_unique_undirected(np.concatenate(pairs)))


@functools.cache
def triangles() -> np.ndarray:
    """(T, 3) triangles of the tesselation, in MediaPipe's order and winding (852 of them).

    MediaPipe lists each triangle as three consecutive connections a→b, b→c, c→a; this is checked,
    not assumed (it holds for all 852 triples). Should a MediaPipe release break that layout, the
    triangles are recovered from the edge graph instead (:func:`_triangles_from_edges`), which gives
    the same 852 triangles but not their winding (the sign of the normals), hence the check first.
    """
    connections = _connections("FACE_LANDMARKS_TESSELATION")
    if len(connections) % 3 == 0:
        triples = connections.reshape(-1, 3, 2)
        if np.array_equal(triples[:, :, 1], np.roll(triples[:, :, 0], -1, axis=1)):  # b = next a, c→a closes
            return _frozen(triples[:, :, 0].copy())
    warnings.warn("MediaPipe's tesselation is not in consecutive triangle triples: triangles recovered "
                  "from the edge graph, normals' sign may be inconsistent", stacklevel=2)
    return _frozen(_triangles_from_edges(edges()))


def _triangles_from_edges(pairs: np.ndarray) -> np.ndarray:
    """(T, 3) sorted triangles of a triangulated surface from its (i < j) edges: the 3-cliques of the
    edge graph, less those that are not faces. On the face mesh the edge graph has 854 3-cliques; the
    2 extra ones are the rims of the nostril wings (vertices 102 and 331 have exactly three
    neighbours, which form a 3-cycle around their fan of 3 triangles), so a 3-clique that is the
    whole neighbourhood of a degree-3 vertex is dropped."""
    neighbours: dict[int, set[int]] = {}
    for i, j in pairs.tolist():
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    cliques = {(i, j, k) for i in neighbours for j in neighbours[i] if j > i
               for k in neighbours[i] & neighbours[j] if k > j}
    rims = {tuple(sorted(ring)) for ring in neighbours.values() if len(ring) == 3}
    return np.array(sorted(cliques - rims), dtype=np.int64).reshape(-1, 3)


def _check_landmarks(landmarks) -> np.ndarray:
    from .face_mesh import detected_landmarks

    return detected_landmarks(landmarks, n_points=N_VERTICES)


def edge_lengths(landmarks, normalise: bool = True, *, include_iris: bool = False,
                 chunk_size: int = 4096) -> np.ndarray:
    """(N, E) float32 Euclidean lengths of the :func:`edges` of each face (landmarks: (N, 478, 3)).

    ``normalise`` divides each face's lengths by their mean: FER2013 faces come at different sizes,
    and the expression is in the proportions, not in the pixels.
    """
    landmarks = _check_landmarks(landmarks)
    pairs = edges(include_iris)
    out = np.empty((len(landmarks), len(pairs)), dtype=np.float32)
    for start in range(0, len(landmarks), chunk_size):  # chunks: (N, E, 3) differences of 27k faces are ~1 GB
        faces = landmarks[start:start + chunk_size].astype(np.float64)
        lengths = np.linalg.norm(faces[:, pairs[:, 0]] - faces[:, pairs[:, 1]], axis=-1)
        if normalise:
            lengths /= lengths.mean(axis=1, keepdims=True)
        out[start:start + chunk_size] = lengths
    return out


def adjacency(n_vertices: int = N_VERTICES, self_loops: bool = True, *, include_iris: bool = True) -> np.ndarray:
    """The symmetric normalised adjacency D^-1/2 (A + I) D^-1/2 (Kipf & Welling) as a dense float32
    (n_vertices, n_vertices) array; D counts the self-loop. Without ``self_loops``, D^-1/2 A D^-1/2.

    The self-loop keeps each vertex's own feature in the mix; the symmetric normalisation keeps the
    eigenvalues in [-1, 1], so stacked layers neither blow up nor vanish. A vertex with no edge and no
    self-loop gets an all-zero row.
    """
    pairs = edges(include_iris)
    if n_vertices <= pairs.max():
        raise ValueError(f"n_vertices={n_vertices} but the edges reach vertex {pairs.max()}")
    a = np.zeros((n_vertices, n_vertices))
    a[pairs[:, 0], pairs[:, 1]] = a[pairs[:, 1], pairs[:, 0]] = 1.0
    if self_loops:
        a += np.eye(n_vertices)
    degree = a.sum(axis=1)
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    return (scale[:, None] * a * scale[None, :]).astype(np.float32)


@functools.cache
def _incidence() -> np.ndarray:
    """(478, T) 0/1 matrix: vertex v is a corner of triangle t."""
    tri = triangles()
    matrix = np.zeros((N_VERTICES, len(tri)))
    matrix[tri, np.arange(len(tri))[:, None]] = 1.0
    return _frozen(matrix)


def vertex_normals(landmarks, *, chunk_size: int = 1024) -> np.ndarray:
    """(N, 478, 3) float32 unit vertex normals, area-weighted over each vertex's triangles.

    The sum of the (unnormalised) cross products of the triangles at a vertex weights each by its
    area, so a sliver triangle does not tilt the normal as much as a large one. With MediaPipe's
    winding they point towards the camera (negative z). Vertices in no triangle — the 10 iris
    points — have no surface to be normal to and get the zero vector (as does a fully degenerate
    neighbourhood), which reads as "no orientation" to a model rather than an invented one.
    """
    landmarks = _check_landmarks(landmarks)
    tri, incidence = triangles(), _incidence()
    out = np.empty(landmarks.shape, dtype=np.float32)
    for start in range(0, len(landmarks), chunk_size):
        faces = landmarks[start:start + chunk_size].astype(np.float64)
        corners = faces[:, tri]  # (n, T, 3 corners, xyz): chunks keep this at ~60 MB
        face_normals = np.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
        normals = incidence @ face_normals  # a BLAS product: ~8x faster than the same sum as np.einsum
        norm = np.linalg.norm(normals, axis=-1, keepdims=True)
        out[start:start + chunk_size] = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 1e-12)
    return out


def laplacian_coordinates(landmarks) -> np.ndarray:
    """(N, 478, 3) float32: each vertex minus the mean of its mesh neighbours (iris spokes included).

    The "differential coordinates" of a mesh: zero on a flat patch, large where the skin bends, and
    unchanged when the face moves. A graph convolution averages neighbours (a low-pass filter), so it
    struggles to compute such differences from xyz itself; given as input, they hand it the local
    shape — the bulge of a raised cheek, the crease of a frown — directly.
    """
    landmarks = _check_landmarks(landmarks)
    return (landmarks - _neighbour_mean() @ landmarks).astype(np.float32)  # BLAS, not np.einsum's loop


@functools.cache
def _neighbour_mean() -> np.ndarray:
    pairs = edges(include_iris=True)
    a = np.zeros((N_VERTICES, N_VERTICES))
    a[pairs[:, 0], pairs[:, 1]] = a[pairs[:, 1], pairs[:, 0]] = 1.0
    return _frozen(a / a.sum(axis=1, keepdims=True))


def node_features(landmarks, normals: bool = False, laplacian: bool = False) -> np.ndarray:
    """(N, 478, 3, 6 or 9) float32 GCN inputs: each face's xyz centred on its mean landmark and divided
    by its RMS distance from it (position and size removed, as for the edge lengths; rotation kept:
    the GCN sees the head pose), then the :func:`vertex_normals` with ``normals=True`` and the
    :func:`laplacian_coordinates` of the scaled face with ``laplacian=True``."""
    landmarks = _check_landmarks(landmarks).astype(np.float64)
    centred = landmarks - landmarks.mean(axis=1, keepdims=True)
    rms = np.sqrt((centred ** 2).sum(axis=-1).mean(axis=1))[:, None, None]
    features = [centred / rms]
    if normals:
        features.append(vertex_normals(landmarks))
    if laplacian:
        features.append(laplacian_coordinates(centred / rms))
    return np.concatenate(features, axis=-1).astype(np.float32)


#: chapter 6's model inputs from normalised landmarks (N, 478, 3), by the names its records and the zoo's
#: specs use: the study's edge-length vector and the GCN's node features
INPUTS = {
    "edges": functools.partial(edge_lengths, normalise=True),
    "xyz": functools.partial(node_features, normals=False),
    "xyz_normals": functools.partial(node_features, normals=True),
    "xyz_laplacian": functools.partial(node_features, laplacian=True),
}


@keras.saving.register_keras_serializable(package="fer_lib")
class GraphConv(keras.layers.Layer):
    """Graph convolution Â X W (+ b) over the face mesh (Kipf & Welling 2017), inputs (batch, V, F).

    Â is :func:`adjacency` (``n_vertices``, ``self_loops``, ``include_iris``), a constant rebuilt in
    :meth:`build` from the topology, so the saved config holds three settings, not a 478×478 matrix.
    The product is taken in the cheaper order: (Â X) W when F ≤ units, else Â (X W).
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True, *, n_vertices: int = N_VERTICES,
                 self_loops: bool = True, include_iris: bool = True, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.units, self.use_bias = int(units), use_bias
        self.activation = keras.activations.get(activation)
        self.n_vertices, self.self_loops, self.include_iris = n_vertices, self_loops, include_iris
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if input_shape[-2] is not None and input_shape[-2] != self.n_vertices:
            raise ValueError(f"GraphConv over {self.n_vertices} vertices got inputs of shape {input_shape}")
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        # a constant tensor, not a weight: nothing to train, nothing to save
        self._a_hat = ops.convert_to_tensor(adjacency(self.n_vertices, self.self_loops, include_iris=self.include_iris))

    def _propagate(self, x):
        # Â (V, V) applied to every graph of the batch: one 2D matmul over (V, batch·F) columns
        batch, features = ops.shape(x)[0], ops.shape(x)[2]
        columns = ops.reshape(ops.transpose(x, (1, 0, 2)), (self.n_vertices, -1))
        mixed = ops.matmul(ops.cast(self._a_hat, x.dtype), columns)
        return ops.transpose(ops.reshape(mixed, (self.n_vertices, batch, features)), (1, 0, 2))

    def call(self, inputs):
        if inputs.shape[-1] is not None and inputs.shape[-1] <= self.units:
            x = ops.matmul(self._propagate(inputs), self.kernel)
        else:
            x = self._propagate(ops.matmul(inputs, self.kernel))
        if self.bias is not None:
            x = x + self.bias
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation), "n_vertices": self.n_vertices,
                "self_loops": self.self_loops, "include_iris": self.include_iris,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="fer_lib")
class EdgeLengths(keras.layers.Layer):
    """(batch, 478, 3) landmarks → (batch, E) lengths of the mesh's :func:`edges`, each face's divided
    by their mean — :func:`edge_lengths` inside a model, so augmentation can act on the landmarks
    first (a mirrored face has exactly the mirrored face's edge lengths)."""

    def __init__(self, include_iris: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.include_iris = include_iris
        pairs = edges(include_iris)
        self.starts, self.ends = pairs[:, 0].astype("int32"), pairs[:, 1].astype("int32")

    def call(self, inputs):
        difference = ops.take(inputs, self.starts, axis=1) - ops.take(inputs, self.ends, axis=1)
        lengths = ops.sqrt(ops.sum(difference * difference, axis=-1) + 1e-12)
        return lengths / ops.mean(lengths, axis=1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "include_iris": self.include_iris}


def study_distance_cnn(n_classes: int, *, n_edges: int | None = None, filters=(32, 64, 128),
                       dense_units=(256, 128), pool_size: int = 2, dropout: float = 0.3, standardise: bool = True,
                       from_landmarks: bool = False, augmentation: dict | None = None, seed: int = 0):
    """The 3DFER mesh model: edge lengths (E,) → 3 × [Conv1D(kernel 3, ReLU), max-pool] → flatten →
    dense 256 → dense 128 → softmax (3 dense layers counting the output).

    ``standardise`` puts a batch norm on the input: each edge is standardised by its own mean and
    spread over the training faces, so the model reads how far an edge is from its typical length
    (the expression) rather than the typical lengths themselves (the average face, the same for
    every class). Like the pixel models' per-image normalisation it is part of the model; on a toy
    mouth-opening problem it made the difference between learning in a few epochs and not.

    ``n_edges`` defaults to the tesselation's (:func:`edges`). The edges are ordered by vertex index
    (:func:`edges` sorts them), which is not a spatial order: neighbouring positions of the vector
    are not, in general, neighbouring edges on the face, so the 1D convolution's locality is
    arbitrary. That is the study's design, kept for comparison; :func:`gcn` convolves over the mesh.

    ``from_landmarks``: the model takes (478, 3) landmarks and measures the edges itself
    (:class:`EdgeLengths`), after ``augmentation`` (:class:`fer_lib.landmarks.LandmarkAugmentation`
    options: mirrored faces, rotations, scale, jitter) — the same regularisation as the landmark MLP.
    """
    from keras import layers

    n_edges = len(edges()) if n_edges is None else n_edges
    if from_landmarks:
        from .landmarks import LandmarkAugmentation

        inputs = keras.Input((N_VERTICES, 3), name="landmarks")
        x = LandmarkAugmentation(**augmentation, seed=seed)(inputs) if augmentation else inputs
        x = EdgeLengths(name="edge_lengths")(x)
    elif augmentation:
        raise ValueError("augmentation acts on landmarks: use it with from_landmarks=True")
    else:
        inputs = x = keras.Input((n_edges,), name="edge_lengths")
    x = layers.BatchNormalization(name="edge_standardisation")(x) if standardise else x
    x = layers.Reshape((n_edges, 1))(x)
    for number, width in enumerate(filters, start=1):
        x = layers.Conv1D(width, 3, padding="same", activation="relu", name=f"conv{number}")(x)
        x = layers.MaxPooling1D(pool_size)(x)  # shortens the sequence: keeps the flatten→dense weights in check
    x = layers.Flatten()(x)
    for units in dense_units:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(dropout, seed=seed)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="study_distance_cnn")


def gcn(n_classes: int, *, features: int = 3, units=(64, 64, 128), dense_units: int = 128, dropout: float = 0.3,
        pooling: str = "mean+max", include_iris: bool = True, seed: int = 0):
    """GCN over the 478-vertex mesh: inputs (478, features) from :func:`node_features` (3: xyz, 6: with
    normals) → [GraphConv, batch norm, ReLU] per ``units`` (with a residual connection where the
    width does not change) → global ``pooling`` over vertices ("mean", "max" or "mean+max",
    concatenated) → dense ReLU → dropout → softmax.

    Mean pooling summarises the whole face's deformation, max pooling keeps the strongest local
    response (a raised brow corner), which an average over 478 vertices would dilute.

    Prefer ``features=6`` (``node_features(..., normals=True)``). Kipf's Â is a low-pass filter and
    the pooling forgets which vertex is which, so on xyz alone the network sees a local deformation
    only as a slight change of the point cloud: on a toy problem (the same faces with the lower lip
    pulled down) it stayed at chance after 60 epochs, while with normals, which turn where the skin
    bends, it was perfect on the training faces within 10.
    """
    from keras import layers

    poolers = {"mean": layers.GlobalAveragePooling1D, "max": layers.GlobalMaxPooling1D}
    kinds = pooling.split("+")
    if not kinds or any(kind not in poolers for kind in kinds):
        raise ValueError(f"Unknown pooling {pooling!r}; use 'mean', 'max' or 'mean+max'")
    inputs = keras.Input((N_VERTICES, features), name="node_features")
    x = inputs
    for number, width in enumerate(units, start=1):
        # no bias: batch norm's shift replaces it
        h = GraphConv(width, use_bias=False, include_iris=include_iris, name=f"graph_conv{number}")(x)
        h = layers.BatchNormalization(name=f"graph_conv{number}_bn")(h)
        h = layers.ReLU(name=f"graph_conv{number}_relu")(h)
        x = layers.Add(name=f"residual{number}")([x, h]) if x.shape[-1] == width else h
    pooled = [poolers[kind](name=f"{kind}_pool")(x) for kind in kinds]
    x = layers.Concatenate(name="pooled")(pooled) if len(pooled) > 1 else pooled[0]
    if dense_units:
        x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dropout, seed=seed)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="gcn")


MODELS = {"study_distance_cnn": study_distance_cnn, "gcn": gcn}


def build(name: str, n_classes: int, **options: Any):
    """Build a mesh model by name with its options (the names of :data:`MODELS`)."""
    if name not in MODELS:
        raise KeyError(f"Unknown mesh model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, **options)

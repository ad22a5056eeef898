"""The extractions' chunks on a Dask cluster (``executor=client.get_executor()``) give the local pool's results."""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

pytest.importorskip("mediapipe")
distributed = pytest.importorskip("distributed")
from fer_lib import executors, face_mesh, preprocess, sketches  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on this machine: the chunks cross process boundaries as on a cluster."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as connected:
            yield connected


#: a plain and a mirrored attempt: both code paths of the cascade, at a fraction of the default's time
CASCADE = (face_mesh.Attempt(192, 24), face_mesh.Attempt(224, 48, mirror=True))


@pytest.fixture(scope="module")
def faces(fer_sample):
    return fer_sample.subset(np.arange(16))


def test_mediapipe_features_on_dask_are_the_local_pools_bit_for_bit(faces, client, tmp_path):
    local = face_mesh.extract_dataset(faces, CASCADE, n_jobs=1, chunk_size=4, cache_dir=tmp_path / "local",
                                      progress=False)
    on_dask = face_mesh.extract_dataset(faces, CASCADE, chunk_size=4, cache_dir=tmp_path / "dask", progress=False,
                                        executor=client.get_executor())
    assert 0 < local.detected.sum() and local.coverage == on_dask.coverage
    # every feature, NaN rows of misses included, is identical: same chunks, same model, same CPU kernels
    for key in ("ids", "detected", "attempt", "landmarks", "blendshapes", "matrix"):
        np.testing.assert_array_equal(getattr(on_dask, key), getattr(local, key), err_msg=key)
    assert on_dask.blendshape_names == local.blendshape_names
    # the cache is the same too: one folder under the same key, one file per chunk
    (local_folder,), (dask_folder,) = (tmp_path / "local").iterdir(), (tmp_path / "dask").iterdir()
    assert local_folder.name == dask_folder.name and len(list(dask_folder.glob("chunk_*.npz"))) == 4


def test_dlib_landmarks_and_face_boxes_on_dask_are_the_local_pools(faces, client, tmp_path, monkeypatch):
    import fer_lib.paths

    executor, faces = client.get_executor(), faces.subset(np.arange(8))
    local = sketches.landmark_dataset(faces, n_jobs=1, chunk_size=4, cache=False, mediapipe=None)
    on_dask = sketches.landmark_dataset(faces, chunk_size=4, cache=False, mediapipe=None, executor=executor)
    for key in ("ids", "points", "source", "box"):
        np.testing.assert_array_equal(getattr(on_dask, key), getattr(local, key), err_msg=key)
    monkeypatch.setattr(fer_lib.paths, "repo_root", lambda: tmp_path)
    boxes = preprocess.detect_dataset(faces, "haar", n_jobs=1, cache=False)
    boxes_on_dask = preprocess.detect_dataset(faces, "haar", cache=False, executor=executor)
    assert boxes_on_dask.drop(columns="ms").equals(boxes.drop(columns="ms"))  # ms: the time each run measured


def _square_or_fail(x):
    if x == 3:
        raise ValueError("chunk 3 failed")
    return x * x


def test_results_come_in_order_or_as_finished_and_a_failure_is_raised():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(executors.results(pool, _square_or_fail, [(0,), (1,), (2,)])) == [0, 1, 4]
        assert sorted(executors.results(pool, _square_or_fail, [(0,), (1,), (2,)], ordered=False)) == [0, 1, 4]
        with pytest.raises(ValueError, match="chunk 3 failed"):
            list(executors.results(pool, _square_or_fail, [(x,) for x in range(5)]))
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        list(executors.results(object(), _square_or_fail, [(1,)]))

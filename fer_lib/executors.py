"""Chunks of a dataset extraction on any :class:`concurrent.futures.Executor` (a Dask cluster, a process pool).

The extractions (:func:`fer_lib.face_mesh.extract_dataset`, :func:`fer_lib.sketches.landmark_dataset`,
:func:`fer_lib.preprocess.detect_dataset`) run their chunks with joblib on this machine's cores unless
given ``executor=``; then :func:`results` submits the same chunk calls to it. A Dask ``distributed``
cluster is one ``client.get_executor()`` away::

    from dask.distributed import Client
    with Client("tcp://scheduler:8786") as client:       # or Client(LocalCluster(n_workers=4))
        features = face_mesh.extract_dataset(faces, executor=client.get_executor())

The workers need this environment (``requirements.txt`` + ``pip install -e .``) and the model files at the
paths :mod:`fer_lib.paths` resolves there (set ``FER_MODELS_DIR`` on them if the book is elsewhere); the
caches stay where the calling process writes them.
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator


def results(executor: concurrent.futures.Executor, function: Callable, calls: Iterable[tuple], *,
            ordered: bool = True) -> Iterator:
    """``function(*call)`` for every call, submitted at once to ``executor``; the results in submission order,
    or (``ordered=False``) as they finish. A failed call raises here and cancels the calls not yet started, as
    does leaving the loop early (an interruption does not leave the cluster working for nobody)."""
    if not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor (e.g. a Dask client's "
                        f"client.get_executor()), got {type(executor).__name__}")
    futures = [executor.submit(function, *call) for call in calls]
    try:
        for future in (futures if ordered else concurrent.futures.as_completed(futures)):
            yield future.result()
    finally:
        for future in futures:
            future.cancel()

"""Benchmark: MediaPipe extraction throughput (images/s) on Dask workers, 1 and 2 local workers by default.

    python benchmarks/scale_out.py 400                     # first 400 images of the committed sample, 1 and 2 workers
    python benchmarks/scale_out.py 400 --out benchmarks/scale_out.results.jsonl   # also append the result there
    python benchmarks/scale_out.py 5000 --data-dir /work/shared/data --workers 1 2 4 --joblib 2   # + the local pool
    python benchmarks/scale_out.py 20000 --data-dir /data/fer --scheduler tcp://10.0.0.5:8786

Each local run starts a ``LocalCluster`` of single-threaded worker processes, warms every worker (MediaPipe's
import pulls in TensorFlow: seconds per process, reported as ``startup_s``, not counted in the speed), then
times :func:`fer_lib.face_mesh.extract_dataset` with ``executor=client.get_executor()`` and no cache. Every
run must give the first run's features bit for bit (``identical`` in the table).

A real cluster: start a scheduler (``dask scheduler``) and workers (``dask worker tcp://HOST:8786
--nthreads 1 --nworkers N``) on machines with this environment (``pip install -r requirements.txt -c
constraints.txt && pip install -e .``; the MediaPipe model is found as :mod:`fer_lib.paths` says, set
``FER_MODELS_DIR`` on the workers if it is elsewhere), then pass ``--scheduler tcp://HOST:8786``: the run uses
the workers the scheduler has, as they are (one row). The images travel from this process to the workers
inside the tasks; the results come back here. The images are FER2013's, read here from ``--data-dir``
(default: the sample committed in ``data/sample``, 456 images; the full data for larger N).

Speed depends on what else the machine runs: the 1-minute load before the runs is recorded beside it. Run
with ``--out`` on a quiet machine only (chapter 12 shows the last line of
``benchmarks/scale_out.results.jsonl``); speed is reported here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import record

import fer_lib
from fer_lib import face_mesh
from fer_lib.paths import resolve_data_dir, sample_data_dir


def _warm():
    """Import MediaPipe and open one graph in a worker, so the timed run measures extraction only."""
    with face_mesh.FaceMeshExtractor((face_mesh.Attempt(),)):
        return True


def _run(client, faces, chunk_size: int) -> tuple[dict, face_mesh.FaceMeshFeatures]:
    started = time.perf_counter()
    client.run(_warm)  # every worker
    startup = time.perf_counter() - started
    started = time.perf_counter()
    features = face_mesh.extract_dataset(faces, chunk_size=chunk_size, cache=False, progress=False,
                                         executor=client.get_executor())
    seconds = time.perf_counter() - started
    workers = client.scheduler_info()["workers"].values()
    return {"workers": len(workers), "threads": sum(w["nthreads"] for w in workers),
            "startup_s": round(startup, 1), "seconds": round(seconds, 2),
            "images_per_s": round(len(faces) / seconds, 2), "coverage": round(features.coverage, 5)}, features


def _run_joblib(faces, chunk_size: int, n_jobs: int) -> tuple[dict, face_mesh.FaceMeshFeatures]:
    """The same extraction on this machine's joblib pool (no executor): what the chapters use by default.
    Its start-up (the pool's processes importing MediaPipe) is inside the time: joblib starts them per call."""
    started = time.perf_counter()
    features = face_mesh.extract_dataset(faces, chunk_size=chunk_size, cache=False, progress=False, n_jobs=n_jobs)
    seconds = time.perf_counter() - started
    return {"workers": n_jobs, "threads": n_jobs, "startup_s": None, "seconds": round(seconds, 2),
            "images_per_s": round(len(faces) / seconds, 2), "coverage": round(features.coverage, 5)}, features


def _same(a: face_mesh.FaceMeshFeatures, b: face_mesh.FaceMeshFeatures) -> bool:
    return all(np.array_equal(getattr(a, key), getattr(b, key), equal_nan=key in ("landmarks", "blendshapes", "matrix"))
               for key in ("detected", "attempt", "landmarks", "blendshapes", "matrix"))


def main(argv=None):
    from dask.distributed import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=int, help="the first N FER2013 images")
    parser.add_argument("--data-dir", default=None, help="folder with FER2013 (default: the committed data/sample)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker processes per run")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://HOST:8786): "
                                                          "one run on its workers instead of local clusters")
    parser.add_argument("--joblib", type=int, default=None, metavar="N_JOBS",
                        help="also time the default local joblib pool with N_JOBS processes (no Dask), for reference")
    parser.add_argument("--chunk-size", type=int, default=50, help="images per task (the same for every run)")
    parser.add_argument("--out", default=None, help="append the result to this JSON-lines file "
                                                    "(benchmarks/scale_out.results.jsonl is what chapter 12 reads)")
    args = parser.parse_args(argv)

    data_dir = resolve_data_dir(args.data_dir) if args.data_dir else sample_data_dir()
    fer = fer_lib.load_fer2013(data_dir)
    if not 0 < args.images <= len(fer):
        parser.error(f"images must be in 1..{len(fer)} (the FER2013 images in {data_dir}; --data-dir for more)")
    faces = fer.subset(np.arange(args.images))
    load_before = record.load_average()
    rows, first = [], None
    if args.scheduler:
        runs = [("scheduler", lambda: Client(args.scheduler))]
    else:
        # a Client given cluster options starts its own LocalCluster and closes it with itself
        runs = [(f"local x{n}", lambda n=n: Client(n_workers=n, threads_per_worker=1, processes=True,
                                                   dashboard_address=None)) for n in args.workers]
    for name, connect in runs:
        with connect() as client:
            row, features = _run(client, faces, args.chunk_size)
        first = features if first is None else first
        rows.append({"run": name, **row, "identical": _same(features, first)})
    if args.joblib:
        row, features = _run_joblib(faces, args.chunk_size, args.joblib)
        rows.append({"run": f"joblib x{args.joblib}", **row, "identical": _same(features, first)})
    table = pd.DataFrame(rows).set_index("run")
    base = table["images_per_s"].iloc[0]
    table["speed-up"] = (table["images_per_s"] / base).round(2)
    print(f"MediaPipe extraction of {len(faces)} FER2013 images, {args.chunk_size} per task "
          f"(load average before: {load_before})")
    print(table.to_string())
    if args.out:
        result = {"images": len(faces), "data_dir": str(data_dir), "chunk_size": args.chunk_size,
                  "scheduler": args.scheduler, "date": time.strftime("%Y-%m-%d"),
                  "runs": json.loads(table.reset_index().to_json(orient="records")), **record.machine(load_before)}
        record.emit(result, args.out)
    if not table["identical"].all():
        raise SystemExit("the runs gave different features: see the 'identical' column")


if __name__ == "__main__":
    main()

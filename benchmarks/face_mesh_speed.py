"""Benchmark: MediaPipe extraction speed (images/s) and coverage on FER2013, without the cache.

    python benchmarks/face_mesh_speed.py                      # all 35,887 images, one process per core
    python benchmarks/face_mesh_speed.py --limit 2000 --n-jobs 2

Prints one JSON line (images, seconds, images/s, coverage, faces found by each attempt of the
cascade, machine) and, with --out, appends it to a JSON-lines file so runs on different machines can
be compared (recorded runs: benchmarks/face_mesh_speed.results.jsonl). Speed is reported here, never asserted
in a test.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import record

import fer_lib
from fer_lib import face_mesh
from fer_lib.paths import resolve_data_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with FER2013 (default: $FER_DATA_DIR, then data/)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (default: all)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="processes (-1: one per core)")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--out", default=None, help="append the result to this JSON-lines file")
    args = parser.parse_args(argv)

    fer = fer_lib.load_fer2013(resolve_data_dir(args.data_dir))
    if args.limit:
        fer = fer.subset(np.arange(min(args.limit, len(fer))))
    load_before = record.load_average()
    started = time.perf_counter()
    features = face_mesh.extract_dataset(fer, n_jobs=args.n_jobs, chunk_size=args.chunk_size, cache=False)
    seconds = time.perf_counter() - started
    result = {
        "images": len(fer), "seconds": round(seconds, 1), "images_per_s": round(len(fer) / seconds, 1),
        "coverage": round(features.coverage, 5), "n_jobs": args.n_jobs,
        "attempts": [vars(a) for a in features.attempts],
        "found_by_attempt": {str(k): int(v) for k, v in features.attempts_table()["images"].items()},
        **record.machine(load_before),
    }
    record.emit(result, args.out)


if __name__ == "__main__":
    main()

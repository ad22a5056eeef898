"""Benchmark: time per emotion sketch, per stage, beside the ES study's Table I, and whole datasets in parallel.

    python benchmarks/sketch_speed.py                          # JAFFE and FER2013, stages on one core + whole sets
    python benchmarks/sketch_speed.py --limit 500 --no-whole   # stages only, on 500 images per dataset

Stages, on one core (OpenCV's own threads off), per image: face-box detection (all detectors of the
cascade tried until one finds the face), landmarks (crop, rescale to 250×250, dlib's predictor),
normalisation (the study's formula and the shifts) and drawing (the 250×250 sketch, shrunk to the
networks' size). "After detection" is landmarks + normalisation + drawing: the book's goal is ≤ 5 ms.
Then, unless --no-whole, each dataset sketched whole with ``sketches.landmark_dataset`` (one process
per core, no cache, MediaPipe run on the faces dlib misses) and drawn, timed end to end.

Prints one JSON line per dataset and, with --out, appends them to a JSON-lines file (recorded runs:
benchmarks/sketch_speed.results.jsonl). Speed is reported here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import numpy as np
import record

import fer_lib
from fer_lib import anchors, sketches
from fer_lib.paths import resolve_data_dir
from fer_lib.preprocess import to_gray


def stage_times(dataset, n: int, output_size: int, seed: int = 0) -> dict:
    """Mean ms per stage over ``n`` random images, on one core."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)
    style = sketches.SketchStyle()
    times = {"detection": [], "landmarks": [], "normalisation": [], "drawing": []}
    missed = 0
    with sketches.Dlib68() as landmarker:
        for index in picks:
            found = landmarker.landmarks(to_gray(dataset.images[index]))
            if found is None:
                missed += 1
                continue
            started = time.perf_counter()
            shifted = sketches.shift_parts(sketches.normalise(found.points, style), style)
            normalised = time.perf_counter()
            sketch = sketches.draw(shifted, style)
            cv2.resize(sketch, (output_size, output_size), interpolation=cv2.INTER_AREA)
            drawn = time.perf_counter()
            times["detection"].append(found.detect_ms)
            times["landmarks"].append(found.landmark_ms)
            times["normalisation"].append((normalised - started) * 1000)
            times["drawing"].append((drawn - normalised) * 1000)
    ms = {stage: round(float(np.mean(values)), 3) for stage, values in times.items()}
    ms["after_detection"] = round(ms["landmarks"] + ms["normalisation"] + ms["drawing"], 3)
    ms["total"] = round(ms["after_detection"] + ms["detection"], 3)
    return {"images_timed": len(times["drawing"]), "missed_by_dlib_cascade": missed, "ms_per_image_one_core": ms}


def whole_dataset(dataset, n_jobs: int, output_size: int) -> dict:
    """Every image landmarked (MediaPipe on dlib's misses) and drawn, no cache, timed end to end."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        marks = sketches.landmark_dataset(dataset, n_jobs=n_jobs, cache=False, cache_dir=scratch)
    landmarked = time.perf_counter()
    sketches.render(marks.points[marks.found], output_size=output_size)
    seconds = time.perf_counter() - started
    return {"images": len(dataset), "seconds": round(seconds, 1), "landmark_seconds": round(landmarked - started, 1),
            "draw_seconds": round(seconds - (landmarked - started), 1), "images_per_s": round(len(dataset) / seconds, 1),
            "coverage": round(marks.coverage, 5),
            "by_source": {s: int((marks.source == s).sum()) for s in (*sketches.SOURCES, sketches.LOST)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with the datasets (default: $FER_DATA_DIR, then data/)")
    parser.add_argument("--datasets", nargs="+", default=["jaffe", "fer2013"])
    parser.add_argument("--limit", type=int, default=1000, help="images timed per stage (random draw)")
    parser.add_argument("--output-size", type=int, default=48, help="sketch size the networks see")
    parser.add_argument("--n-jobs", type=int, default=-1, help="processes for whole datasets (-1: one per core)")
    parser.add_argument("--no-whole", action="store_true", help="skip sketching whole datasets")
    parser.add_argument("--out", default=None, help="append the results to this JSON-lines file")
    args = parser.parse_args(argv)

    for name in args.datasets:
        dataset = fer_lib.load_dataset(name, resolve_data_dir(args.data_dir))
        load_before = record.load_average()
        result = {"dataset": name, **stage_times(dataset, args.limit, args.output_size)}
        if not args.no_whole:
            result["whole"] = {**whole_dataset(dataset, args.n_jobs, args.output_size), "n_jobs": args.n_jobs}
        result.update({"output_size": args.output_size, "detectors": sketches.DEFAULT_DETECTORS,
                       "study_table_I_s": anchors.SKETCH_STUDY_TABLE_I_S, **record.machine(load_before)})
        record.emit(result, args.out)


if __name__ == "__main__":
    main()

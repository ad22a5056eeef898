"""Benchmark: how fast `python -m fer_lib.predict` is with a zoo's models loaded — one 640×480 photo with
one face (all models and the fusion), and a folder of FER2013 images (48×48: each image one face crop),
per model and all together.

    python benchmarks/predict_speed.py                                   # the packaged zoo, FER2013 from data/sample
    python benchmarks/predict_speed.py --zoo cache/zoo/smoke --images 1000 --data-dir $FER_DATA_DIR \\
        --out benchmarks/predict_speed.results.jsonl

The photo is one JAFFE sample face (256 px) on a 640×480 grey frame (``fer_lib.sample.example_photo``); the folder is the first ``--images`` FER2013
PrivateTest images written as PNG files, run through ``predict.predict_paths`` as the command line runs
them (reading, face finding, every pipeline). One warm-up, then medians of ``--repeats`` runs. Prints one
JSON line per measurement and, with --out, appends it. Speed is reported here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import record

import fer_lib
from fer_lib import predict, sample
from fer_lib.data import TEST
from fer_lib.paths import resolve_data_dir, sample_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", help="zoo folder (default: the packaged one)")
    parser.add_argument("--data-dir", help="folder with FER2013 (default: data/sample)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    load = record.load_average()
    data_dir = resolve_data_dir(args.data_dir) if args.data_dir else sample_data_dir()
    fer = fer_lib.load_fer2013(data_dir)
    test = np.flatnonzero(fer.split == TEST)[:args.images]
    common = {"benchmark": "predict_speed", "zoo": args.zoo or "packaged", **record.machine(load)}

    everything = predict.Predictor(zoo_dir=args.zoo)
    photo = sample.example_photo(labels=("happy",))  # one face, as the goal says
    everything.predict_image(photo)  # warm-up: graphs, first batches
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        table = everything.predict_image(photo)
        seconds.append(time.perf_counter() - started)
    record.emit({**common, "measure": "photo 640x480, one face, every model + fusion", "faces": int(len(table)),
                 "models": sorted(everything.entries), "ms": round(1000 * float(np.median(seconds)), 1)}, args.out)

    with tempfile.TemporaryDirectory() as folder:
        for index in test:
            cv2.imwrite(str(Path(folder) / f"{fer.ids[index]}.png"), fer.images[index])
        groups = {"every model + fusion": None, **{name: [name] for name in everything.entries}}
        for label, names in groups.items():
            predictor = everything if names is None else predict.Predictor(names, zoo_dir=args.zoo)
            predict.predict_paths(predictor, Path(folder) / f"{fer.ids[test[0]]}.png", progress=False)  # warm-up
            rates = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                rows = predict.predict_paths(predictor, Path(folder), progress=False)
                rates.append(len(test) / (time.perf_counter() - started))
            record.emit({**common, "measure": f"folder of FER2013 images, {label}", "images": len(test),
                         "faces_read": int((rows.status == "ok").sum()),
                         "images_per_s": round(float(np.median(rates)), 1)}, args.out)
            if predictor is not everything:
                predictor.close()
    everything.close()


if __name__ == "__main__":
    main()

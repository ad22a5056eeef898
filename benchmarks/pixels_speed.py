"""Benchmark: where a 2D model's training epoch goes on this CPU, and images per second per architecture.

    python benchmarks/pixels_speed.py                                   # every architecture, both pipelines
    python benchmarks/pixels_speed.py --models study_cnn --threads 1 2 --out benchmarks/pixels_speed.results.jsonl

Per architecture (random 48×48 faces, 0..255, the chapters' augmentation: flip + rotation 0.05):

- the parts of a training epoch, each timed alone: the input pipeline (iterating the batches, no
  model), the augmentation layers (on batches, training mode), the forward pass (inference, same
  batch size) and the whole training epoch (forward + backward + update);
- training images per second for chapter 3's path as executed ("arrays": NumPy arrays to
  ``model.fit``), for the tf.data pipeline (``TrainConfig(pipeline="tf.data")``) and for tf.data with
  the network compiled by XLA (``TrainConfig(jit_compile=True)``), and for tf.data in mixed bfloat16 (Keras' dtype policy
  ``mixed_bfloat16``: float32 weights, bfloat16 arithmetic; fast only where the CPU has bf16 units);
- inference images per second (batch 256) and multiply-adds per image.

This shared 2-core machine changes speed from one minute to the next: some runs are capped at one rate
(about half the others; a throttle outside the VM, steal time stays ≤ 1 %). So every figure is the
median of ``--repeats`` timings, the two pipelines are timed alternately (arrays, tf.data, arrays, …)
so both see the same conditions, every timing is kept (``train_images_per_s_samples``), and each path's
fastest timing is recorded as its cost (``train_images_per_s_best``: noise only slows a run, as
``timeit`` takes the minimum). ``--threads`` reruns the script in a
subprocess per intra-op thread count (TensorFlow fixes its thread pools at start-up). Prints one JSON
line per architecture and setting; with --out, appends them (recorded runs:
benchmarks/pixels_speed.results.jsonl). Speed is reported here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import record

#: architecture name → builder options: the sizes chapter 3's full profile trains
ARCHITECTURES = {
    "study_cnn": {"model": "study_cnn", "options": {"width": 32}},
    "mini_xception": {"model": "mini_xception", "options": {}},
    "resnet18_w16": {"model": "resnet18", "options": {"width": 16, "stem_stride": 2}},
    "resnet18_w16_s1": {"model": "resnet18", "options": {"width": 16, "stem_stride": 1}},
    "resnet18_w32": {"model": "resnet18", "options": {"width": 32, "stem_stride": 2}},
    "vgg11_w16": {"model": "vgg", "options": {"depth": 11, "width": 16}},
    "vgg13_w32": {"model": "vgg", "options": {"depth": 13, "width": 32}},
    "resnet50": {"model": "resnet50", "options": {"weights": None}},
    "vgg16": {"model": "vgg16", "options": {"weights": None}},
}
AUGMENTATION = {"flip": True, "rotation": 0.05, "contrast": None, "noise": None}


def _timed(function, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def measure(name: str, n_images: int, batch_size: int, repeats: int) -> dict:
    import keras
    import tensorflow as tf

    from fer_lib import pixels, training

    spec = ARCHITECTURES[name]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_images, 48, 48, 1)).astype("float32")
    y = rng.integers(0, 7, n_images)
    keras.utils.set_random_seed(0)
    model = pixels.build(spec["model"], 7, augmentation=AUGMENTATION, **spec["options"])
    config = training.TrainConfig(batch_size=batch_size)
    training.compile_model(model, config)
    dataset = training.batches(x, y, batch_size, seed=0, shuffle=True)

    def epoch_arrays():
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)

    def epoch_tf_data():
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)

    # the same network compiled by XLA (TrainConfig.jit_compile), on the tf.data pipeline
    keras.utils.set_random_seed(0)
    jitted = training.compile_model(pixels.build(spec["model"], 7, augmentation=AUGMENTATION, **spec["options"]),
                                    config.with_(jit_compile=True))

    def epoch_xla():
        jitted.fit(dataset, epochs=1, verbose=0, shuffle=False)

    # the same network in mixed bfloat16 (float32 weights, bfloat16 compute), on the tf.data pipeline: what
    # a CPU with AMX or AVX-512 BF16 units would give; not (yet) a TrainConfig option of the chapters
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        half = training.compile_model(pixels.build(spec["model"], 7, augmentation=AUGMENTATION, **spec["options"]), config)
    finally:
        keras.config.set_dtype_policy("float32")

    def epoch_bf16():
        half.fit(dataset, epochs=1, verbose=0, shuffle=False)

    epoch_arrays(), epoch_tf_data(), epoch_xla(), epoch_bf16()  # warm-up: tracing, XLA compilation, thread pools
    arrays, tf_data, xla, bf16 = [], [], [], []
    for _ in range(repeats):  # alternate, so every variant sees the machine in the same states
        arrays.append(_timed(epoch_arrays, 1))
        tf_data.append(_timed(epoch_tf_data, 1))
        xla.append(_timed(epoch_xla, 1))
        bf16.append(_timed(epoch_bf16, 1))

    augmentation = model.get_layer("augmentation")
    augment = tf.function(lambda batch: augmentation(batch, training=True))
    forward = tf.function(lambda batch: model(batch, training=False))
    batches = [x[i:i + batch_size] for i in range(0, n_images, batch_size)]
    augment(batches[0]), forward(batches[0])

    def pipeline_only():
        for _ in dataset:
            pass

    parts = {"pipeline_s": _timed(pipeline_only, repeats),
             "augmentation_s": _timed(lambda: [augment(b) for b in batches], repeats),
             "forward_s": _timed(lambda: [forward(b) for b in batches], repeats)}
    model.predict(x[:256], batch_size=256, verbose=0)
    infer = _timed(lambda: model.predict(x, batch_size=256, verbose=0), repeats)
    half.predict(x[:256], batch_size=256, verbose=0)
    infer_bf16 = _timed(lambda: half.predict(x, batch_size=256, verbose=0), repeats)
    arrays_s, tf_data_s = float(np.median(arrays)), float(np.median(tf_data))
    return {
        "architecture": name, **spec, "parameters": int(model.count_params()),
        "mega_multiply_adds": round(pixels.multiply_adds(model) / 1e6, 1), "images": n_images, "batch_size": batch_size,
        "train_images_per_s_arrays": round(n_images / arrays_s, 1),
        "train_images_per_s_tf_data": round(n_images / tf_data_s, 1),
        "train_images_per_s_tf_data_xla": round(n_images / float(np.median(xla)), 1),
        "train_images_per_s_tf_data_bf16": round(n_images / float(np.median(bf16)), 1),
        # Keras falls back to plain graphs when a layer cannot be compiled (RandomRotation): then the "xla"
        # timings are the tf.data path again
        "xla_applied": bool(getattr(jitted, "jit_compile", False)),
        # every timing, in the order taken: this machine's speed is bimodal (some runs cap at one rate)
        "train_images_per_s_samples": {"arrays": [round(n_images / t, 1) for t in arrays],
                                       "tf_data": [round(n_images / t, 1) for t in tf_data],
                                       "tf_data_bf16": [round(n_images / t, 1) for t in bf16]},
        # noise here only slows a run, so each path's fastest timing is its cost (timeit's minimum)
        "train_images_per_s_best": {"arrays": round(n_images / min(arrays), 1), "tf_data": round(n_images / min(tf_data), 1),
                                    "tf_data_bf16": round(n_images / min(bf16), 1)},
        "train_images_per_s_range": [round(n_images / max(arrays + tf_data + xla), 1),
                                     round(n_images / min(arrays + tf_data + xla), 1)],
        "infer_images_per_s": round(n_images / infer, 1), "infer_ms_per_image": round(1000 * infer / n_images, 3),
        "infer_images_per_s_bf16": round(n_images / infer_bf16, 1),
        # shares of the (tf.data) training epoch spent in each part when run alone; the rest is the backward
        # pass and the update
        **{f"share_{k[:-2]}": round(v / tf_data_s, 3) for k, v in parts.items()},
        "fer2013_epoch_minutes": round(28709 / (n_images / tf_data_s) / 60, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", help="intra-op thread counts, one subprocess each "
                        "(default: TensorFlow's choice, in this process)")
    parser.add_argument("--out", help="append the JSON lines to this file")
    parser.add_argument("--_intra", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    load = record.load_average()
    if args.threads:
        for threads in args.threads:
            command = [sys.executable, __file__, "--models", *args.models, "--images", str(args.images),
                       "--batch-size", str(args.batch_size), "--repeats", str(args.repeats), "--_intra", str(threads)]
            if args.out:
                command += ["--out", args.out]
            subprocess.run(command, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        return
    if args._intra:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args._intra)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    for name in args.models:
        result = {"benchmark": "pixels_speed", **measure(name, args.images, args.batch_size, args.repeats),
                  "intra_op_threads": args._intra or "default", **record.machine(load)}
        record.emit(result, args.out)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

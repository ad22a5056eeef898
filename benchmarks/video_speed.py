"""Benchmark: training and inference ms per clip of the video study's 3D-CNN, Keras' Conv3D + 3D pooling
layers against this book's frame-wise equivalents (``video.SpatioTemporalConv`` / ``video.Pool3D``,
same arithmetic), per clip length and widths.

    python benchmarks/video_speed.py                                  # clip lengths 3 and 10, widths 8-64
    python benchmarks/video_speed.py --clip-lengths 10 --widths 16 32 64 128 --out benchmarks/video_speed.results.jsonl
    python benchmarks/video_speed.py --clip-lengths 3 --temporal-kernels 1 3 7 --second-conv   # the search's costliest choices

Random clips of CK+48's size (48×48); batch 30, as the study. One warm-up epoch, then ``--repeats`` timed
epochs of ``--clips`` clips for training and timed predictions of the same clips (medians reported). Prints one JSON line per
(implementation, clip length) and, with --out, appends them (recorded runs:
benchmarks/video_speed.results.jsonl). Speed is reported here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import record

from fer_lib import video


def keras3d_network(n_classes: int, clip_length: int, frame_size: int, widths, temporal_kernel: int = 3,
                    second_conv: bool = False) -> keras.Model:
    """The same network as ``video.study_cnn3d`` (max pooling) built from Keras' Conv3D and MaxPooling3D."""
    inputs = keras.Input((clip_length, frame_size, frame_size, 1))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for block, (filters, (temporal_pool, temporal_stride)) in enumerate(zip(widths, video.BLOCK_POOLING)):
        for _ in range(2 if second_conv and block < 2 else 1):  # the study's second convolution: first two blocks
            x = keras.layers.Conv3D(filters, (temporal_kernel, 3, 3), padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=video.KERAS_BN_MOMENTUM)(x)
            x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling3D((temporal_pool, 2, 2), strides=(temporal_stride, 2, 2), padding="same")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


def time_network(model, x, y, batch_size: int, repeats: int = 3) -> dict:
    """Median over ``repeats`` timed epochs (and predictions): this shared 2-core machine's speed drifts
    from one minute to the next, and a single epoch can be off by a factor of two."""
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x[:batch_size * 2], y[:batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)
    train, infer = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        train.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.predict(x, batch_size=256, verbose=0)
        infer.append(time.perf_counter() - started)
    return {"train_ms_per_clip": round(1000 * float(np.median(train)) / len(x), 2),
            "train_ms_per_clip_range": [round(1000 * min(train) / len(x), 2), round(1000 * max(train) / len(x), 2)],
            "infer_ms_per_clip": round(1000 * float(np.median(infer)) / len(x), 3), "repeats": repeats,
            "parameters": int(model.count_params())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip-lengths", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--temporal-kernels", type=int, nargs="+", default=[3])
    parser.add_argument("--second-conv", action="store_true", help="two convolutions in the first two blocks")
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per network (the median is reported)")
    parser.add_argument("--out", help="append the JSON lines to this file")
    args = parser.parse_args()
    load = record.load_average()
    rng = np.random.default_rng(0)
    for clip_length in args.clip_lengths:
        x = rng.uniform(0, 255, size=(args.clips, clip_length, 48, 48, 1)).astype("float32")
        y = rng.integers(0, 7, size=args.clips)
        for kt in args.temporal_kernels:
            builders = {
                "keras Conv3D + MaxPooling3D": lambda: keras3d_network(7, clip_length, 48, args.widths, kt, args.second_conv),
                "fer_lib SpatioTemporalConv + Pool3D": lambda: video.study_cnn3d(
                    7, clip_length=clip_length, widths=tuple(args.widths), temporal_kernel=kt, second_conv=args.second_conv)}
            for name, build in builders.items():
                keras.utils.set_random_seed(0)
                result = {"benchmark": "video_speed", "implementation": name, "clip_length": clip_length,
                          "temporal_kernel": kt, "second_conv": args.second_conv, "frame_size": 48,
                          "widths": args.widths, "batch_size": args.batch_size, "clips": args.clips,
                          **time_network(build(), x, y, args.batch_size, args.repeats), **record.machine(load)}
                record.emit(result, args.out)


if __name__ == "__main__":
    main()

"""The 2D-pixel representation: model inputs from faces, and the RQ1 models.

Every model takes the 48×48×1 face (0..255 grey levels) and carries its own augmentation and pixel
normalisation as layers, so training and inference apply identical steps and a saved model is
complete. 3-channel backbones repeat the grey channel inside the model.

- :func:`study_cnn` — the 3DFER study's CNN: 6 conv layers (batch norm, ReLU), pooling and dropout
  after each pair, 2 dense layers.
- :func:`resnet50`, :func:`vgg16` — Keras Applications backbones. ``weights=None`` trains from scratch
  (what this book can do offline); ``weights="imagenet"`` or a path to a weights file gives transfer
  learning for readers who can download them, with the backbone's own input scaling.
- :func:`mini_xception` — Arriaga et al. (2017)'s ~60 k-parameter FER model as published: two plain
  convolutions, four depthwise-separable residual modules, a convolutional classifier.
- :func:`resnet18`, :func:`vgg` — ResNet-18 and VGG-11/13 sized for 48×48 faces on a CPU: the same
  block structure as the ImageNet networks, with a width and (ResNet) stem stride as parameters, so an
  epoch of FER2013 costs about a minute on 2 cores instead of the ImageNet shapes' ten.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .preprocess import Preprocessing

INPUT_SIZE = 48


def model_inputs(dataset, preprocessing: Preprocessing, detections=None) -> np.ndarray:
    """(N, size, size, 1) float32 faces in 0..255 after the deterministic preprocessing steps."""
    faces = preprocessing.apply(dataset.images, detections)
    return faces[..., None].astype("float32")


def _stem(inputs, augmentation: dict | None, seed: int):
    from .layers import augmentation as augmentation_block

    x = inputs
    if augmentation:
        x = augmentation_block(**augmentation, seed=seed)(x)
    return x


def _normalised(x, method: str):
    """``scale``: 0..255 → [−1, 1] (mini-Xception's published input); ``standard`` / ``minmax``: per image
    (:class:`fer_lib.layers.PerImageNormalisation`)."""
    from keras import layers

    from .layers import PerImageNormalisation

    if method == "scale":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit")(x)
    return PerImageNormalisation(method)(x)


def study_cnn(n_classes: int, *, input_size: int = INPUT_SIZE, width: int = 32, dense_units: int = 256,
              dropout: float = 0.25, dense_dropout: float = 0.5, bn_momentum: float = 0.99,
              normalisation: str = "standard", augmentation: dict | None = None, seed: int = 0):
    """The 3DFER CNN: [conv-BN-ReLU ×2, max-pool, dropout] × 3 with widths w, 2w, 4w; dense-BN-ReLU; softmax.

    ``bn_momentum``: Keras' 0.99 suits FER2013's 450 steps per epoch; a small cross-validation fold (a few
    steps per epoch) needs faster moving statistics, e.g. 0.9."""
    import keras
    from keras import layers

    from .layers import PerImageNormalisation

    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = PerImageNormalisation(normalisation)(_stem(inputs, augmentation, seed))
    for block, filters in enumerate([width, 2 * width, 4 * width]):
        for conv in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{2 * block + conv + 1}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum)(x)
            x = layers.ReLU(name=f"conv{2 * block + conv + 1}_relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dense_dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="study_cnn")


def _application(name: str, n_classes: int, *, input_size: int, resize_to: int | None, weights,
                 normalisation: str, augmentation: dict | None, dropout: float, seed: int):
    """A Keras Applications backbone on the grey face, with global average pooling and a softmax head."""
    import keras
    from keras import layers

    from .layers import PerImageNormalisation

    backbone = {"resnet50": keras.applications.ResNet50, "vgg16": keras.applications.VGG16}[name]
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = _stem(inputs, augmentation, seed)
    if resize_to and resize_to != input_size:
        x = layers.Resizing(resize_to, resize_to, interpolation="bilinear")(x)
    x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    # Pretrained ResNet50/VGG16 weights expect "caffe" scaling (ImageNet BGR means subtracted; the grey
    # channels are equal, so the order does not matter); from scratch, per-image standardisation.
    if weights:
        x = layers.Rescaling(1.0, offset=[-103.939, -116.779, -123.68], name="imagenet_scaling")(x)
    else:
        x = PerImageNormalisation(normalisation)(x)
    base = backbone(include_top=False, weights=weights, input_tensor=x, pooling="avg")
    x = layers.Dropout(dropout)(base.output)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"{name}_{'transfer' if weights else 'scratch'}")


def resnet50(n_classes: int, *, input_size: int = INPUT_SIZE, resize_to: int | None = None, weights=None,
             normalisation: str = "standard", augmentation: dict | None = None, dropout: float = 0.3, seed: int = 0):
    """ResNet50 (3-channel input made from the grey face); from scratch unless ``weights`` is given."""
    return _application("resnet50", n_classes, input_size=input_size, resize_to=resize_to, weights=weights,
                        normalisation=normalisation, augmentation=augmentation, dropout=dropout, seed=seed)


def vgg16(n_classes: int, *, input_size: int = INPUT_SIZE, resize_to: int | None = None, weights=None,
          normalisation: str = "standard", augmentation: dict | None = None, dropout: float = 0.3, seed: int = 0):
    """VGG16 (3-channel input made from the grey face); from scratch unless ``weights`` is given
    (``"imagenet"`` or a VGGFace/ImageNet weights file: transfer learning as the 3DFER study)."""
    return _application("vgg16", n_classes, input_size=input_size, resize_to=resize_to, weights=weights,
                        normalisation=normalisation, augmentation=augmentation, dropout=dropout, seed=seed)


def mini_xception(n_classes: int, *, input_size: int = INPUT_SIZE, l2: float = 0.01,
                  widths: tuple[int, ...] = (16, 32, 64, 128), normalisation: str = "scale",
                  augmentation: dict | None = None, seed: int = 0):
    """mini-Xception (Arriaga, Valdenegro-Toro & Plöger, 2017) as published: conv(8)-BN-ReLU ×2 (valid
    padding); per module of ``widths``: [separable conv-BN-ReLU, separable conv-BN, 3×3 max-pool stride
    2] added to a strided 1×1 conv-BN shortcut; a 3×3 convolution to the classes, global average
    pooling, softmax. L2 ``l2`` on the convolution kernels, inputs scaled to [−1, 1]. About 58 k
    parameters for 7 classes."""
    import keras
    from keras import layers, regularizers

    regulariser = regularizers.L2(l2) if l2 else None
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = _normalised(_stem(inputs, augmentation, seed), normalisation)
    for index in range(2):
        x = layers.Conv2D(8, 3, use_bias=False, kernel_regularizer=regulariser, name=f"entry_conv{index + 1}")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    for module, filters in enumerate(widths, start=1):
        shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"module{module}_shortcut")(x)
        shortcut = layers.BatchNormalization()(shortcut)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, depthwise_regularizer=regulariser,
                                   pointwise_regularizer=regulariser, name=f"module{module}_sepconv1")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, depthwise_regularizer=regulariser,
                                   pointwise_regularizer=regulariser, name=f"module{module}_sepconv2")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add(name=f"module{module}_add")([x, shortcut])
    x = layers.Conv2D(n_classes, 3, padding="same", name="class_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="mini_xception")


def resnet18(n_classes: int, *, input_size: int = INPUT_SIZE, width: int = 16, stem_stride: int = 2,
             blocks: tuple[int, ...] = (2, 2, 2, 2), dropout: float = 0.2, weight_decay_l2: float = 0.0,
             normalisation: str = "standard", augmentation: dict | None = None, seed: int = 0):
    """ResNet-18 for 48×48 faces: a 3×3 stem (``stem_stride`` 2 halves the face to 24×24 first, no max
    pool), four stages of ``blocks`` basic residual blocks with widths w, 2w, 4w, 8w (stages 2-4 start
    with stride 2 and a 1×1 projection shortcut), global average pooling, dropout, softmax.
    ``width`` 64 and stride 1 is the usual CIFAR-style ResNet-18 (11 M parameters, ~16× the
    multiply-adds of width 16 at stride 2)."""
    import keras
    from keras import layers, regularizers

    regulariser = regularizers.L2(weight_decay_l2) if weight_decay_l2 else None

    def conv(x, filters, kernel, stride, name):
        return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                             kernel_regularizer=regulariser, name=name)(x)

    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = _normalised(_stem(inputs, augmentation, seed), normalisation)
    x = layers.ReLU()(layers.BatchNormalization()(conv(x, width, 3, stem_stride, "stem_conv")))
    for stage, n_blocks in enumerate(blocks):
        filters = width * 2 ** stage
        for block in range(n_blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"stage{stage + 1}_block{block + 1}"
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = layers.BatchNormalization()(conv(x, filters, 1, stride, f"{name}_projection"))
            y = layers.ReLU()(layers.BatchNormalization()(conv(x, filters, 3, stride, f"{name}_conv1")))
            y = layers.BatchNormalization()(conv(y, filters, 3, 1, f"{name}_conv2"))
            x = layers.ReLU(name=f"{name}_out")(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"resnet{2 + 2 * sum(blocks)}_w{width}")


#: VGG configurations (Simonyan & Zisserman, 2015): convolutions per stage; five stages of widths w, 2w, 4w, 8w, 8w
VGG_STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3)}


def vgg(n_classes: int, *, depth: int = 13, input_size: int = INPUT_SIZE, width: int = 16, dense_units: int = 256,
        dropout: float = 0.5, normalisation: str = "standard", augmentation: dict | None = None, seed: int = 0):
    """VGG-``depth`` (11, 13 or 16) with batch norm for 48×48 faces: the ImageNet network's stages of 3×3
    convolutions, each stage ending in a 2×2 max pool (48 → 24 → 12 → 6 → 3 → 1), widths w, 2w, 4w, 8w,
    8w instead of 64…512, and one hidden dense layer instead of two 4096-unit ones."""
    import keras
    from keras import layers

    if depth not in VGG_STAGES:
        raise ValueError(f"VGG depth {depth} is not one of {sorted(VGG_STAGES)}")
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = _normalised(_stem(inputs, augmentation, seed), normalisation)
    for stage, n_convs in enumerate(VGG_STAGES[depth]):
        filters = width * 2 ** min(stage, 3)
        for index in range(n_convs):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{stage + 1}_conv{index + 1}")(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPooling2D(padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"vgg{depth}_w{width}")


MODELS = {"study_cnn": study_cnn, "resnet50": resnet50, "vgg16": vgg16, "mini_xception": mini_xception,
          "resnet18": resnet18, "vgg": vgg}


def tta_views(x: np.ndarray, flip: bool = True, shift: int = 2) -> list[np.ndarray]:
    """The views test-time augmentation averages over: the faces, each moved ``shift`` pixels along the
    four diagonals (edge pixels repeated, like the training shifts' fill), and, with ``flip``, the mirror
    image of each (1 + 4 views, doubled by the flip)."""
    x = np.asarray(x)
    views = [x]
    if shift:
        padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        size_y, size_x = x.shape[1:3]
        for dy in (0, 2 * shift):
            for dx in (0, 2 * shift):
                views.append(padded[:, dy:dy + size_y, dx:dx + size_x])
    if flip:
        views += [view[:, :, ::-1] for view in views]
    return views


def predict_tta(model, x, flip: bool = True, shift: int = 2, batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Class probabilities averaged over :func:`tta_views`, and the inference time in ms per face (all
    views; after one warm-up batch)."""
    import time

    views = tta_views(x, flip, shift)
    model.predict(views[0][:batch_size], batch_size=batch_size, verbose=0)
    started = time.perf_counter()
    probabilities = np.mean([model.predict(view, batch_size=batch_size, verbose=0) for view in views], axis=0)
    return probabilities, (time.perf_counter() - started) * 1000 / max(1, len(x))


def multiply_adds(model) -> int:
    """Multiply-adds of one forward pass through the model's convolutions and dense layers (the work that
    sets a CPU's speed; batch norm, pooling and activations are left out)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.SeparableConv2D):
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            k = int(np.prod(layer.kernel_size))
            total += height * width * in_channels * (k * layer.depth_multiplier + out_channels * layer.depth_multiplier)
        elif isinstance(layer, layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            total += height * width * out_channels * int(np.prod(layer.kernel_size)) * layer.input.shape[-1] // layer.groups
        elif isinstance(layer, layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
        elif hasattr(layer, "layers"):  # a nested model (Keras Applications backbones)
            total += multiply_adds(layer)
    return int(total)


def build(name: str, n_classes: int, **options: Any):
    """Build a 2D model by name with its options (the names of :data:`MODELS`)."""
    if name not in MODELS:
        raise KeyError(f"Unknown 2D model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_classes, **options)


# --------------------------------------------------------------------------------------------------
# Chapter 3's inputs and its models trained to convergence, shared by the chapter and the background
# trainer (`python -m fer_lib.pixels train`), so both make the same fits and the chapter reads the
# trainer's models from the cache.


@dataclass
class RQ1Inputs:
    """FER2013 (the profile's subset) as chapter 3's models see it: ``inputs`` "raw" and "preprocessed"
    (N, 48, 48, 1), the image indices of each ``split``, the ``detections`` behind the preprocessing and
    the extraction cost per image of each input."""

    faces: Any
    inputs: dict[str, np.ndarray]
    split: dict[str, np.ndarray]
    detections: Any
    extract_ms: dict[str, float]
    steps_ms: float
    _arrays: dict = field(default_factory=dict, repr=False)

    def arrays(self, name: str):
        """Input ``name`` cut into the splits, made once (the split copies of 35,887 faces are ~300 MB;
        the trainer and the chapter's test-time augmentation share them)."""
        from .experiment import SplitArrays

        if name not in self._arrays:
            self._arrays[name] = SplitArrays.from_indices(self.inputs[name], self.faces, self.split)
        return self._arrays[name]


def rq1_inputs(P) -> RQ1Inputs:
    """Load the profile's FER2013 subset and make both inputs (MediaPipe detections are cached on disk)."""
    import time

    from . import preprocess
    from .data import TEST, TRAIN, VAL, load_fer2013
    from .paths import resolve_data_dir

    faces = load_fer2013(resolve_data_dir(P.data_dir)).protocol_subset(P.train_per_class, P.eval_per_class, P.seed)
    detections = preprocess.detect_dataset(faces, P.preprocessed["detector"], n_jobs=P.n_jobs, **P.detector_options)
    started = time.perf_counter()
    inputs = {"preprocessed": model_inputs(faces, preprocess.Preprocessing(**P.preprocessed), detections)}
    steps_ms = (time.perf_counter() - started) * 1000 / len(faces)
    inputs["raw"] = model_inputs(faces, preprocess.Preprocessing())
    return RQ1Inputs(faces, inputs, {name: np.flatnonzero(faces.split == name) for name in (TRAIN, VAL, TEST)},
                     detections, {"raw": 0.0, "preprocessed": float(detections["ms"].mean()) + steps_ms}, steps_ms)


def converged_runs(P, rq1: RQ1Inputs, only=None, log_path=None):
    """Train (or read from the cache), evaluate and record the models of the profile's ``converged`` block:
    each trained until early stopping or the end of its schedule, on ``converged.input``, with
    ``converged.training`` and the model's own ``training`` changes. ``only``: a subset of the labels.
    The profile's ``model_store`` (:func:`fer_lib.training.model_store`): every fit mirrored there after each
    epoch, so training spread over sessions on fresh machines resumes, and the chapter reads the models back."""
    from . import experiment, training

    C = P.converged
    specs = {label: spec for label, spec in C["models"].items() if only is None or label in only}
    unknown = set(only or ()) - set(C["models"])
    if unknown:
        raise KeyError(f"no converged model {sorted(unknown)} in params/{P.profile}.yml; choose from {sorted(C['models'])}")
    base = training.TrainConfig.from_params(C["training"], seed=P.seed)
    augmentation = C["augmentation"]
    record = {"chapter": "03_rq1_2d", "representation": "pixels_2d", "dataset": "fer2013",
              "label_set": rq1.faces.label_set, "profile": P.profile, "seed": P.seed,
              "extract_ms_per_image": rq1.extract_ms[C["input"]], "augmentation": augmentation}
    return experiment.run_models(
        {label: {**spec, "input": C["input"]} for label, spec in specs.items()},
        build=lambda model, options, seed: lambda: build(model, len(rq1.faces.class_names), augmentation=augmentation,
                                                         seed=seed, **options),
        inputs={C["input"]: rq1.arrays(C["input"])}, base=base, cache_prefix="rq1-converged",
        record=record, class_names=rq1.faces.class_names, log_path=log_path,
        store=training.model_store(P))


#: how a fit ended that counts as converged: early stopping said so, or the schedule reached its end
CONVERGED_STOPS = ("early_stopping", "schedule_end")


def study_cnn_speedup(benchmark_path) -> dict | None:
    """From ``benchmarks/pixels_speed.py``'s records: the latest study-CNN row's training images per second
    on chapter 3's path ("arrays") and on the tf.data pipeline, timed alternately in one run, and their ratio
    (None when the file has no such row). Each path's fastest timing when the row has them (this machine's
    speed is bimodal, and noise only slows a run), else the medians."""
    import json
    from pathlib import Path

    path = Path(benchmark_path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [r for r in rows if r.get("architecture") == "study_cnn" and r.get("train_images_per_s_arrays")
            and r.get("train_images_per_s_tf_data")]
    if not rows:
        return None
    row = rows[-1]
    best = row.get("train_images_per_s_best")
    arrays, tf_data = (best["arrays"], best["tf_data"]) if best else (row["train_images_per_s_arrays"],
                                                                      row["train_images_per_s_tf_data"])
    return {"arrays": arrays, "tf_data": tf_data, "ratio": tf_data / arrays, "statistic": "fastest" if best else "median",
            "range": row.get("train_images_per_s_range"), "load": row.get("load_average_1min_before")}


def convergence_goals(goals: dict, records: dict[str, dict], best_single: str, ensemble: dict,
                      benchmark_path) -> "pd.DataFrame":
    """Chapter 3's goals for its converged models (params ``converged.goals``) against the records: the
    best single model (chosen on PublicTest), the ensemble, each ResNet/VGG row (and whether it ended
    converged, not on a budget), and the study CNN's training speed-up from the benchmark's records."""
    import pandas as pd

    def accuracy(record):
        low, high = record["accuracy_ci95"]
        return f"{record['accuracy']:.1%} (95 % CI {low:.1%}–{high:.1%})"

    best = records[best_single]
    rows = [{"goal": f"best single 2D model ≥ {goals['best_single']:.1%}", "measured": f"{best_single}: {accuracy(best)}",
             "met": best["accuracy"] >= goals["best_single"]},
            {"goal": f"2D ensemble with test-time augmentation ≥ {goals['ensemble']:.0%}", "measured": accuracy(ensemble),
             "met": ensemble["accuracy"] >= goals["ensemble"]}]
    for name in goals["resnet_vgg_models"]:
        record = records.get(name)
        if record is None:
            rows.append({"goal": f"{name} converged, ≥ {goals['resnet_vgg']:.0%}", "measured": "not trained", "met": False})
            continue
        ended = record.get("stopped_by", "?")
        rows.append({"goal": f"{name} converged, ≥ {goals['resnet_vgg']:.0%}",
                     "measured": f"{accuracy(record)}; {record.get('epochs_run')} epochs, ended by {ended.replace('_', ' ')}",
                     "met": record["accuracy"] >= goals["resnet_vgg"] and ended in CONVERGED_STOPS})
    speed = study_cnn_speedup(benchmark_path)
    rows.append({"goal": f"study CNN training ≥ {goals['study_cnn_speedup']:g}× chapter 3's images/s",
                 "measured": "not benchmarked (benchmarks/pixels_speed.py --out benchmarks/pixels_speed.results.jsonl)"
                 if speed is None else f"{speed['ratio']:.2f}× ({speed['arrays']:.0f} → {speed['tf_data']:.0f} images/s, "
                 f"{speed['statistic']} of the benchmark's timings)",
                 "met": speed is not None and speed["ratio"] >= goals["study_cnn_speedup"]})
    return pd.DataFrame(rows).set_index("goal")


def main(argv=None) -> None:
    """``python -m fer_lib.pixels train --profile full [--models a b] [--log PATH]``: train chapter 3's
    converged models (params ``03_rq1_2d.converged``) with a progress line per epoch in the log; a
    model interrupted resumes from its last finished epoch, a finished one is read from the cache.
    Run it in the background (``make train PROFILE=full``) and execute the chapter when it is done."""
    from pathlib import Path

    from .params import load_params
    from .paths import repo_root

    parser = argparse.ArgumentParser(prog="python -m fer_lib.pixels", description=main.__doc__.split(";")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train chapter 3's converged models")
    train.add_argument("--profile", default="sample")
    train.add_argument("--models", nargs="+", help="labels of params 03_rq1_2d.converged.models (default: all)")
    train.add_argument("--data-dir")
    train.add_argument("--log", help="progress log (default: cache/logs/03_rq1_2d-<profile>.log)")
    args = parser.parse_args(argv)
    P = load_params(args.profile, chapter="03_rq1_2d", data_dir=args.data_dir)
    log = Path(args.log or repo_root() / "cache" / "logs" / f"03_rq1_2d-{args.profile}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"training chapter 3's converged models ({args.profile}); progress: {log}", flush=True)
    runs = converged_runs(P, rq1_inputs(P), only=args.models, log_path=log)
    for label, run in runs.items():
        line = (f"{label}: PrivateTest {run.record['accuracy']:.4f}, PublicTest {run.record['val_accuracy']:.4f}, "
                f"{run.record['epochs_run']} epochs, stopped by {run.record['stopped_by']}")
        print(line, flush=True)
        with open(log, "a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()

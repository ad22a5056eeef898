"""Short video clips and the 3D-CNN video study (Haddad, Lézoray & Hamel, ISVC 2020): clips, the study's
per-class augmentation, its network and its 10-choice Optuna TPE search, persisted so that many workers
can share one search.

- :func:`ckplus_clips` — one clip per labelled CK+ sequence, frames in order, padded to ``clip_length``
  by repeating the last frame (the study's rule for short sequences); :func:`load_oulu_casia` reads
  Oulu-CASIA's ``VL/Strong/<subject>/<expression>/*.jpeg`` layout into the same :class:`Clips`.
- :func:`augment_clips` — the study's quasi-balancing copies per class (flips, rotations within ±30°,
  linear contrast 127 + α(v − 127)), one random transform per clip applied to every frame. Only ever
  applied to a fold's training part (``experiment.cross_validate(augment=...)``).
- :func:`study_cnn3d` — Conv3D blocks with batch norm, pooling (1,2,2) → (2,2,2) → (2,2,2) → (1,2,2)
  with stride (2,2,2). The (kt,3,3) convolutions and the poolings are computed as 2D operations over
  frames (:class:`SpatioTemporalConv`, :func:`pool3d`): the same arithmetic as ``Conv3D`` /
  ``MaxPooling3D`` with "same" padding (tested), and faster on a CPU, where TensorFlow's 3D
  pooling gradient dominates a training step (``benchmarks/video_speed.py`` times both).
- :class:`VideoConfig` / :func:`suggest` — the study's 10 searched choices; :func:`run_search` — one
  worker of an Optuna study in any storage (SQLite or a journal file in ``cache/`` by default, any
  database URL for many machines); ``python -m fer_lib.video search --storage URL --trials N``.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import progress
from .labels import CKPLUS7
# the 10 searched choices live in a module without Keras or OpenCV (param_schema reads them)
from .video_space import ACTIVATIONS, SEARCH_SPACE, VideoConfig, config_from_params, suggest  # noqa: F401

# --------------------------------------------------------------------------------------------------
# Clips


@dataclass
class Clips:
    """``frames`` (N, T, S, S) uint8 clips with labels (indices into ``class_names``), subject and clip ids,
    and ``n_real``: how many of each clip's frames are real (the rest repeat the last one)."""

    frames: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    subject: np.ndarray
    ids: np.ndarray
    n_real: np.ndarray
    name: str = "clips"

    def __post_init__(self):
        n = len(self.frames)
        for key in ("labels", "subject", "ids", "n_real"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{self.name}: {key} has {len(getattr(self, key))} entries for {n} clips")
        if self.frames.ndim != 4 or self.frames.dtype != np.uint8:
            raise ValueError(f"{self.name}: frames must be uint8 (clips, time, height, width), got "
                             f"{self.frames.dtype} {self.frames.shape}")

    def __len__(self):
        return len(self.frames)

    def subset(self, index) -> "Clips":
        index = np.asarray(index)
        return replace(self, frames=self.frames[index], labels=self.labels[index], subject=self.subject[index],
                       ids=self.ids[index], n_real=self.n_real[index])

    @property
    def last_frames(self) -> np.ndarray:
        """(N, S, S) the last real frame of each clip: the still image a 2D model sees."""
        return self.frames[np.arange(len(self)), self.n_real - 1]

    def counts(self):
        import pandas as pd

        return pd.Series(np.bincount(self.labels, minlength=len(self.class_names)), index=self.class_names)


def pad_clip(frames: np.ndarray, clip_length: int) -> np.ndarray:
    """The last ``clip_length`` frames; a shorter sequence padded by repeating its last frame (the study's rule)."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        raise ValueError("a clip needs at least one frame")
    if len(frames) >= clip_length:
        return frames[-clip_length:]
    return np.concatenate([frames, np.repeat(frames[-1:], clip_length - len(frames), axis=0)])


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Frames (…, H, W) uint8 resized to size×size (bicubic up, area down); unchanged at their size."""
    import cv2

    if frames.shape[-1] == size and frames.shape[-2] == size:
        return frames
    flat = frames.reshape(-1, *frames.shape[-2:])
    interpolation = cv2.INTER_CUBIC if size > flat.shape[-1] else cv2.INTER_AREA
    out = np.stack([cv2.resize(f, (size, size), interpolation=interpolation) for f in flat])
    return out.reshape(*frames.shape[:-2], size, size)


def ckplus_clips(dataset, clip_length: int = 10, frame_size: int = 48) -> Clips:
    """One clip per labelled CK+ sequence of a CK+48 dataset (``fer_lib.load_ckplus``): its frames in frame
    order, padded to ``clip_length`` by repeating the last one, resized to ``frame_size``. A sequence
    whose frames disagree on the label is an error (it would mean a corrupted archive)."""
    if "sequence" not in dataset.meta or "frame" not in dataset.meta:
        raise ValueError(f"{dataset.name} has no sequence/frame columns: clips need CK+'s sequences")
    subject = np.asarray(dataset.subject).astype(str)
    sequence, frame = np.asarray(dataset.meta["sequence"]), np.asarray(dataset.meta["frame"])
    keys = np.char.add(np.char.add(subject, "_"), np.char.zfill(sequence.astype(str), 3))
    clips, labels, subjects, ids, n_real = [], [], [], [], []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        members = members[np.argsort(frame[members], kind="stable")]
        if len(np.unique(dataset.labels[members])) != 1:
            raise ValueError(f"sequence {key} has frames with different labels: {sorted(set(dataset.label_names[members]))}")
        clips.append(pad_clip(dataset.images[members], clip_length))
        labels.append(int(dataset.labels[members[0]]))
        subjects.append(subject[members[0]])
        ids.append(str(key))
        n_real.append(min(len(members), clip_length))
    frames = resize_frames(np.stack(clips), frame_size)
    return Clips(frames, np.asarray(labels, np.int16), tuple(dataset.class_names), np.asarray(subjects),
                 np.asarray(ids), np.asarray(n_real), name=f"{dataset.name} clips")


#: Oulu-CASIA's expression folder names → this book's emotion names (six classes, no neutral or contempt)
OULU_EXPRESSIONS = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happiness": "happy",
                    "sadness": "sad", "surprise": "surprise"}
OULU_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp")


def load_oulu_casia(root, clip_length: int = 10, frame_size: int = 48, lighting: str = "VL/Strong") -> Clips:
    """Oulu-CASIA sequences as clips: ``<root>/<lighting>/<subject>/<expression>/*.jpeg`` (e.g. the
    database's ``OriginalImg/VL/Strong/P001/Anger/000.jpeg``), frames in file-name order, the last
    ``clip_length`` kept (padded when shorter), converted to grey and resized to ``frame_size``.

    A subject folder without expression folders, an unknown expression name, or a sequence whose frames
    cannot be read is counted and printed, never silently dropped; no readable sequence at all is an error
    that says which layout was expected. (Faces are not cropped: crop first, as the study did.)"""
    import cv2

    base = Path(root) / lighting
    expected = (f"expected {Path(root) / lighting}/<subject>/<expression>/*.jpeg with expressions "
                f"{sorted(OULU_EXPRESSIONS)} (Oulu-CASIA's layout)")
    if not base.is_dir():
        raise FileNotFoundError(f"no Oulu-CASIA folder at {base}: {expected}")
    clips, labels, subjects, ids, n_real = [], [], [], [], []
    skipped: dict[str, list[str]] = {}
    for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for expression_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            emotion = OULU_EXPRESSIONS.get(expression_dir.name.lower())
            where = f"{subject_dir.name}/{expression_dir.name}"
            if emotion is None:
                skipped.setdefault("unknown expression folder", []).append(where)
                continue
            files = sorted(f for f in expression_dir.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
            frames = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
            if not frames or any(f is None for f in frames):
                skipped.setdefault("no readable frames" if not frames else "unreadable frame", []).append(where)
                continue
            frames = np.stack([resize_frames(f, frame_size) for f in frames])
            clips.append(pad_clip(frames, clip_length))
            labels.append(OULU_CLASSES.index(emotion))
            subjects.append(subject_dir.name)
            ids.append(where)
            n_real.append(min(len(frames), clip_length))
    for reason, where in skipped.items():
        print(f"Oulu-CASIA: skipped {len(where)} sequence(s), {reason}: {', '.join(where[:5])}"
              + (" …" if len(where) > 5 else ""))
    if not clips:
        raise FileNotFoundError(f"no readable Oulu-CASIA sequence under {base}: {expected}")
    return Clips(np.stack(clips), np.asarray(labels, np.int16), OULU_CLASSES, np.asarray(subjects), np.asarray(ids),
                 np.asarray(n_real), name="oulu_casia clips")


# --------------------------------------------------------------------------------------------------
# The study's per-class augmentation (training folds only)

#: copies per original clip: (horizontal flips, rotations, linear-contrast changes), per CK+ class —
#: the study's table, which brings CK+'s 18-83 sequences per class to a quasi-balanced set
STUDY_AUGMENTATION = {"contempt": (1, 7, 4), "fear": (1, 4, 4), "sad": (1, 4, 3), "angry": (1, 2, 1),
                      "happy": (1, 1, 1), "disgust": (1, 1, 1), "surprise": (1, 1, 0)}


def rotate_clip(frames: np.ndarray, degrees: float) -> np.ndarray:
    """Every frame of a clip rotated by the same angle about its centre (edge pixels repeated)."""
    import cv2

    size = frames.shape[-1]
    matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), degrees, 1.0)
    return np.stack([cv2.warpAffine(f, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for f in frames])


def contrast_clip(frames: np.ndarray, alpha: float) -> np.ndarray:
    """127 + α (v − 127), clipped to 0..255: the linear contrast change of chapter 3's augmentation."""
    changed = np.clip(127.0 + alpha * (frames.astype(np.float32) - 127.0), 0, 255)
    return (np.rint(changed) if np.issubdtype(frames.dtype, np.integer) else changed).astype(frames.dtype)


def augment_clips(x: np.ndarray, y: np.ndarray, class_names, seed: int = 0, table: dict | None = None,
                  max_degrees: float = 30.0, contrast: tuple[float, float] = (0.22, 2.2)) -> tuple[np.ndarray, np.ndarray]:
    """The originals plus, per clip of class c, ``table[c]`` = (flips, rotations, contrast changes) copies:
    a flip mirrors every frame; a rotation draws one angle in ±``max_degrees``; a contrast change draws one
    α in ``contrast``. One draw per copy, the same for all its frames. ``x`` is (N, T, S, S[, 1]) in 0..255
    (uint8 or float); classes missing from the table get no copies. Deterministic given ``seed``."""
    table = STUDY_AUGMENTATION if table is None else table
    rng = np.random.default_rng(seed)
    squeeze = x.ndim == 5
    frames = x[..., 0] if squeeze else x
    out_x, out_y = [frames], [np.asarray(y)]
    for clip, label in zip(frames, y):
        flips, rotations, contrasts = table.get(class_names[int(label)], (0, 0, 0))
        copies = [clip[..., ::-1]] * flips
        copies += [rotate_clip(clip, rng.uniform(-max_degrees, max_degrees)) for _ in range(rotations)]
        copies += [contrast_clip(clip, rng.uniform(*contrast)) for _ in range(contrasts)]
        if copies:
            out_x.append(np.stack(copies).astype(frames.dtype))
            out_y.append(np.full(len(copies), label, dtype=np.asarray(y).dtype))
    augmented, labels = np.concatenate(out_x), np.concatenate(out_y)
    return (augmented[..., None] if squeeze else augmented), labels


def augment_frames(x: np.ndarray, y: np.ndarray, class_names, seed: int = 0, table: dict | None = None):
    """:func:`augment_clips` for still images (N, S, S[, 1]): the same copies per class, for the 2D baseline."""
    clips, labels = augment_clips(x[:, None], y, class_names, seed=seed, table=table)
    return clips[:, 0], labels


def clahe_frames(frames: np.ndarray, clip_limit: float = 2.0, tiles: int = 4) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of every frame (uint8), the study's CLAHE choice;
    4×4 tiles suit 48-px faces (8×8 at 112 px are the same 12-14 px tiles)."""
    import cv2

    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    flat = frames.reshape(-1, *frames.shape[-2:])
    return np.stack([clahe.apply(f) for f in flat]).reshape(frames.shape)


def model_inputs(clips: Clips, clahe: bool) -> np.ndarray:
    """(N, T, S, S, 1) float32 in 0..255, with CLAHE on every frame when ``clahe``."""
    frames = clahe_frames(clips.frames) if clahe else clips.frames
    return frames[..., None].astype(np.float32)


# --------------------------------------------------------------------------------------------------
# The network

import keras  # noqa: E402 - below the numpy-only helpers, which tests use without building a model
from keras import layers, ops  # noqa: E402


@keras.saving.register_keras_serializable(package="fer_lib")
class SpatioTemporalConv(keras.layers.Layer):
    """A (``temporal_kernel``, 3, 3) 3D convolution with "same" (zero) padding, computed as one 2D
    convolution of each frame stacked with its temporal neighbours on the channel axis: identical to
    ``keras.layers.Conv3D(filters, (kt, 3, 3), padding="same")`` (tested), and faster on a CPU."""

    def __init__(self, filters: int, temporal_kernel: int = 3, kernel_initializer="glorot_uniform",
                 use_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and positive (it keeps the clip's length), got {temporal_kernel}")
        self.filters, self.temporal_kernel, self.use_bias = filters, temporal_kernel, use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias,
                                  kernel_initializer=self.kernel_initializer)

    def build(self, input_shape):
        self.conv.build((None, input_shape[2], input_shape[3], input_shape[4] * self.temporal_kernel))

    def call(self, x):
        t, h, w, c = x.shape[1:]
        half = self.temporal_kernel // 2
        # A tap more than t − 1 frames from every output frame only ever multiplies the zero padding
        # (a 7-frame kernel on a 3-frame clip, or any kernel after the poolings leave one frame): leave
        # such taps out of the sum. Same output, same weights; the work shrinks with the clip.
        reach = min(half, t - 1)
        taps = range(half - reach, half + reach + 1)
        padded = ops.pad(x, [[0, 0], [reach, reach], [0, 0], [0, 0], [0, 0]]) if reach else x
        # channel block i of frame t holds frame t - half + i: Conv3D's kernel order along time
        stacked = ops.concatenate([padded[:, i:i + t] for i in range(len(taps))], axis=-1)
        kernel = self.conv.kernel[:, :, taps.start * c:taps.stop * c, :]
        out = ops.conv(ops.reshape(stacked, (-1, h, w, c * len(taps))), kernel, padding="same")
        if self.use_bias:
            out = out + self.conv.bias
        return ops.reshape(out, (-1, t, h, w, self.filters))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:4], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "temporal_kernel": self.temporal_kernel,
                "use_bias": self.use_bias, "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="fer_lib")
class Pool3D(keras.layers.Layer):
    """3D max or average pooling with "same" padding, as a 2D pooling of each frame followed by a
    reduction over pairs of frames: ``pool_size`` (pt, 2, 2) with pt in {1, 2}, ``temporal_stride`` 1
    or 2 (pt 1 with stride 2 keeps every second frame, the study's last pooling). Equals Keras'
    ``MaxPooling3D`` / ``AveragePooling3D`` for these shapes (tested)."""

    def __init__(self, temporal_pool: int = 1, temporal_stride: int = 1, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "average") or temporal_pool not in (1, 2) or temporal_stride not in (1, 2):
            raise ValueError(f"Pool3D supports mode max/average and temporal pool and stride 1 or 2, got "
                             f"{mode}, {temporal_pool}, {temporal_stride}")
        if temporal_pool == 2 and temporal_stride == 1:
            raise ValueError("a temporal pool of 2 needs a temporal stride of 2")
        self.temporal_pool, self.temporal_stride, self.mode = temporal_pool, temporal_stride, mode
        pooling = layers.MaxPooling2D if mode == "max" else layers.AveragePooling2D
        self.pool = pooling(2, padding="same")

    def call(self, x):
        t, h, w, c = x.shape[1:]
        y = self.pool(ops.reshape(x, (-1, h, w, c)))
        h, w = y.shape[1:3]
        y = ops.reshape(y, (-1, t, h, w, c))
        if self.temporal_stride == 1:
            return y
        if t % 2:  # "same" padding: the odd last frame pools with itself (max and valid-only mean alike)
            y = ops.concatenate([y, y[:, -1:]], axis=1)
            t += 1
        pairs = ops.reshape(y, (-1, t // 2, 2, h, w, c))
        if self.temporal_pool == 1:
            return pairs[:, :, 0]
        return ops.max(pairs, axis=2) if self.mode == "max" else ops.mean(pairs, axis=2)

    def compute_output_shape(self, input_shape):
        t = input_shape[1] if self.temporal_stride == 1 else (input_shape[1] + 1) // 2
        return (input_shape[0], t, (input_shape[2] + 1) // 2, (input_shape[3] + 1) // 2, input_shape[4])

    def get_config(self):
        return {**super().get_config(), "temporal_pool": self.temporal_pool, "temporal_stride": self.temporal_stride,
                "mode": self.mode}


#: the study's pooling after each block: (temporal pool, temporal stride)
BLOCK_POOLING = ((1, 1), (2, 2), (2, 2), (1, 2))

#: PyTorch's BatchNorm momentum 0.1 updates running = 0.9 · running + 0.1 · batch; Keras' momentum is
#: the weight of the running value, so the same update is Keras momentum 0.9.
KERAS_BN_MOMENTUM = 1 - 0.1


def _activation(name: str):
    if name == "prelu":
        return layers.PReLU(shared_axes=[1, 2, 3])   # one slope per channel, as torch.nn.PReLU(channels)
    if name == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.01)  # PyTorch's default slope
    if name in ("relu", "elu", "mish"):
        return layers.Activation(name)
    raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")


def study_cnn3d(n_classes: int, *, clip_length: int = 10, frame_size: int = 48, widths=(8, 16, 32, 64),
                activation: str = "relu", temporal_kernel: int = 3, initializer: str = "glorot_uniform",
                pooling: str = "max", second_conv: bool = False, dropout: float = 0.0, normalise: bool = True,
                name: str = "study_cnn3d"):
    """The video study's 3D-CNN: four blocks of [(kt,3,3) conv, batch norm, activation] (twice in the first
    two blocks with ``second_conv``), each followed by the study's pooling (:data:`BLOCK_POOLING`), then
    dropout and a softmax layer. Inputs are clips in 0..255, scaled in the model to [−1, 1]
    (``normalise``) or to [0, 1] (PyTorch's ``ToTensor``, the study's alternative)."""
    inputs = keras.Input((clip_length, frame_size, frame_size, 1), name="clip")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs) if normalise else layers.Rescaling(1 / 255)(inputs)
    for block, (filters, (temporal_pool, temporal_stride)) in enumerate(zip(widths, BLOCK_POOLING)):
        for conv in range(2 if second_conv and block < 2 else 1):
            x = SpatioTemporalConv(filters, temporal_kernel, kernel_initializer=initializer,
                                   name=f"conv{block + 1}{'ab'[conv]}")(x)
            x = layers.BatchNormalization(momentum=KERAS_BN_MOMENTUM)(x)
            x = _activation(activation)(x)
        x = Pool3D(temporal_pool, temporal_stride, mode=pooling, name=f"pool{block + 1}")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", kernel_initializer=initializer, name="emotion")(x)
    return keras.Model(inputs, outputs, name=name)


class Lookahead(keras.callbacks.Callback):
    """Lookahead (Zhang et al., 2019) around the compiled optimizer: every ``k`` steps the slow weights move
    ``alpha`` of the way to the fast ones and the fast weights restart from there. Keras has no Lookahead
    optimizer; as a callback it wraps any optimizer unchanged. (A resumed fit restarts the slow weights
    from the restored ones.)"""

    def __init__(self, k: int = 5, alpha: float = 0.5):
        super().__init__()
        self.k, self.alpha, self.step, self.slow = k, alpha, 0, None

    def on_train_begin(self, logs=None):
        self.slow = [np.array(ops.convert_to_numpy(v)) for v in self.model.trainable_weights]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.k:
            return
        for variable, slow in zip(self.model.trainable_weights, self.slow):
            slow += self.alpha * (ops.convert_to_numpy(variable) - slow)
            variable.assign(slow)


# --------------------------------------------------------------------------------------------------
# Cross-validating one configuration


@dataclass
class VideoExperiment:
    """Everything a configuration's cross-validation needs beyond the configuration: the clips, the network
    widths, the training settings (the study's: Adam 1e-4, batch 30, ≤ 16 epochs, best epoch), the inner
    validation fraction and the augmentation table (``None``: the study's)."""

    clips: Clips
    training: dict[str, Any] = field(default_factory=lambda: {"optimizer": "adam", "learning_rate": 1e-4,
                                                              "batch_size": 30, "epochs": 16, "patience": 4,
                                                              "reduce_lr_patience": None, "weight_decay": 0.0})
    widths: tuple[int, ...] = (8, 16, 32, 64)
    val_fraction: float = 0.15
    augmentation: dict | None = None
    seed: int = 0
    fold_store: str | Path | None = None  # experiment.cross_validate's committed per-fold outcomes (None: cache/models only)
    _inputs: dict = field(default_factory=dict, repr=False)

    def variant(self, config: VideoConfig, change: dict[str, Any], dataset=None) -> tuple["VideoExperiment", VideoConfig]:
        """This experiment and ``config`` with a params ``change`` applied: ``config`` (searched choices),
        ``training`` (settings) and ``clips`` (clip length / frame size: rebuilt from ``dataset``, the
        subjects kept the same)."""
        unknown = set(change) - {"config", "training", "clips"}
        if unknown:
            raise ValueError(f"an ablation changes config, training or clips, not {sorted(unknown)}")
        changed = self
        if change.get("training"):
            changed = replace(changed, training={**self.training, **change["training"]}, _inputs={})
        if change.get("clips"):
            if dataset is None:
                raise ValueError("changing the clips needs the CK+ dataset they are cut from")
            t, s = self.clips.frames.shape[1:3]
            sizes = {"clip_length": t, "frame_size": s, **change["clips"]}
            clips = ckplus_clips(dataset, **sizes)
            clips = clips.subset(np.flatnonzero(np.isin(clips.ids, self.clips.ids)))
            if not np.array_equal(clips.ids, self.clips.ids):
                raise ValueError("the re-cut clips are not the same sequences in the same order")
            changed = replace(changed, clips=clips, _inputs={})
        return changed, replace(config, **(change.get("config") or {}))

    def inputs(self, clahe: bool) -> np.ndarray:
        if clahe not in self._inputs:
            self._inputs[clahe] = model_inputs(self.clips, clahe)
        return self._inputs[clahe]

    def train_config(self, config: VideoConfig):
        from .training import TrainConfig

        return TrainConfig.from_params(self.training, seed=self.seed,
                                       class_weight="balanced" if config.class_weighted else None)

    def builder(self, config: VideoConfig) -> Callable[[], Any]:
        n_classes, (t, s) = len(self.clips.class_names), self.clips.frames.shape[1:3]
        return lambda: study_cnn3d(n_classes, clip_length=t, frame_size=s, widths=tuple(self.widths),
                                   **config.model_options())

    def augment(self, x, y, seed):
        return augment_clips(x, y, self.clips.class_names, seed=seed, table=self.augmentation)

    def cross_validate(self, config: VideoConfig, folds, *, cache_name: str, record: dict[str, Any] | None = None,
                       after_fold=None, n_boot: int = 1000):
        """``experiment.cross_validate`` of ``config`` on ``folds``, the study's copies added to each fold's
        training part, Lookahead as a callback when chosen."""
        from . import experiment

        config_dict = asdict(config)
        options = {"network": "study_cnn3d", "widths": list(self.widths), **config_dict,
                   "augmentation": self.augmentation or "study"}
        return experiment.cross_validate(
            self.builder(config), self.inputs(config.clahe), self.clips.labels, self.clips.subject, self.clips.ids,
            folds, self.train_config(config), cache_name=cache_name, options=options,
            class_names=self.clips.class_names, record=record, val_fraction=self.val_fraction, n_boot=n_boot,
            augment=self.augment, after_fold=after_fold, fold_store=self.fold_store,
            callbacks=(lambda: [Lookahead()]) if config.lookahead else None)



# --------------------------------------------------------------------------------------------------
# The search: one Optuna study, any number of workers


def storage(location: str | os.PathLike, heartbeat_s: int = 60):
    """An Optuna storage many processes can share: a database URL (``sqlite:///…``, ``postgresql://…``,
    ``mysql://…``) as an RDB storage with heartbeats, so a trial whose worker died is failed and retried
    by the next worker; a path ending ``.db`` as SQLite there; any other path as a journal file (Optuna's
    lock-file journal, safe on one machine's or a shared file system)."""
    import optuna
    import warnings

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    location = str(location)
    if location.endswith(".db") and "://" not in location:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        location = f"sqlite:///{Path(location).resolve()}"
    if "://" in location:
        engine = {"connect_args": {"timeout": 120}} if location.startswith("sqlite") else {}
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and exactly what is needed
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(location, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(location))


def trial_seeded_tpe(seed: int | None):
    """Optuna's TPE sampler whose random draws depend on (``seed``, trial number), not on the worker's
    history. A plain seeded TPESampler starts its random stream afresh in every process, so a resumed
    worker (or two workers started together) proposes the configurations of trials 0, 1, … again;
    reseeding before each trial from its number gives every trial its own draw, and the same draws
    again for the same trial numbers, whichever worker runs them."""
    import optuna

    class TrialSeededTPESampler(optuna.samplers.TPESampler):
        def before_trial(self, study, trial):
            if seed is not None:  # TPE's own stream and that of its random start-up sampler (Optuna 5 internals)
                derived = (seed * 1_000_003 + trial.number) % 2 ** 32
                self._rng.rng.seed(derived)
                self._random_sampler._rng.rng.seed(derived)
            super().before_trial(study, trial)

    return TrialSeededTPESampler(seed=seed)


def open_study(location, study_name: str, seed: int | None = 0, pruner_startup: int = 4):
    """The study (created by the first worker, loaded by the others): TPE (seeded per trial, see
    :func:`trial_seeded_tpe`), maximising cross-validated accuracy, median pruning on the running
    accuracy after each fold."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(5):
        try:
            return optuna.create_study(storage=storage(location), study_name=study_name, direction="maximize",
                                       load_if_exists=True, sampler=trial_seeded_tpe(seed),
                                       pruner=optuna.pruners.MedianPruner(n_startup_trials=pruner_startup, n_warmup_steps=0))
        except (IntegrityError, OperationalError):
            # Two workers initialising a fresh database at once (tables, Alembic's version stamp): one loses
            # the race, and finds the schema there when it tries again.
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)


FINISHED = ("COMPLETE", "PRUNED")


class SurplusTrial(Exception):
    """A trial started while the other workers' trials already make up the requested total."""


def run_search(experiment: VideoExperiment, study, n_trials: int, folds, *, worker: str | None = None,
               cache_prefix: str = "video-search", log: Callable[[str], None] | None = print) -> int:
    """One worker: run trials of ``study`` until ``n_trials`` trials are finished (complete or pruned) across
    all workers; returns how many this worker finished. Each trial cross-validates its configuration on
    ``folds`` (reporting the running accuracy after each fold so the median pruner can stop it) and keeps,
    as user attributes, every clip's out-of-fold prediction (−1: not tested), the fold accuracies, its
    time and the worker that ran it. Optuna's ``optimize`` loop keeps the storage's heartbeats, so a trial
    whose worker died is failed and retried by the next worker (database storages). A trial that starts
    while earlier trials already make up the total (two workers starting at once) is failed unrun, marked
    ``surplus``. Fold fits are cached by configuration: a retried trial (or one TPE proposes twice) reuses
    the folds already trained."""
    import optuna

    worker = worker or f"{os.uname().nodename}:{os.getpid()}"
    ran = 0

    def objective(trial):
        nonlocal ran
        earlier = sum(1 for t in study.get_trials(deepcopy=False)
                      if t.state.name in (*FINISHED, "RUNNING") and t.number < trial.number)
        if earlier >= n_trials:
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number}: {n_trials} trials already finished or running")
        trial.set_user_attr(f"run_by:{worker}", time.time())
        config = suggest(trial)
        started = time.perf_counter()
        predictions = np.full(len(experiment.clips), -1)

        def report(fold, accuracy):
            trial.report(accuracy, step=fold)
            if trial.should_prune():
                trial.set_user_attr("seconds", time.perf_counter() - started)
                ran_one("pruned", None, started, trial.number)
                raise optuna.TrialPruned()

        run = experiment.cross_validate(config, folds, cache_name=f"{cache_prefix}-{config.key()}", after_fold=report)
        tested = ~np.isnan(run.probabilities[:, 0])
        predictions[tested] = run.probabilities[tested].argmax(1)
        trial.set_user_attr("predictions", predictions.tolist())
        trial.set_user_attr("fold_accuracies", run.folds.accuracy.round(4).tolist())
        trial.set_user_attr("fold_train_s", run.folds["train s"].round(1).tolist())
        trial.set_user_attr("seconds", time.perf_counter() - started)
        ran_one("complete", run.record["accuracy"], started, trial.number)
        return run.record["accuracy"]

    finished = _finished(study)
    shown = progress.bar(total=n_trials, initial=min(finished, n_trials), desc=f"search {study.study_name}", unit="trial")

    def ran_one(state, value, started, number):
        nonlocal ran
        ran += 1
        shown.update(1)
        if log:
            log(f"trial {number}: {state}" + (f", accuracy {value:.3f}" if value is not None else "")
                + f", {time.perf_counter() - started:.0f} s")

    with shown:
        if finished < n_trials:
            study.optimize(objective, n_trials=n_trials, catch=(SurplusTrial,), gc_after_trial=True,
                           callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                                       optuna.trial.TrialState.PRUNED))])
    progress.note("trial", computed=True, count=ran)
    progress.note("trial", computed=False, count=min(finished, n_trials))
    return ran


def _finished(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED)


def trials_table(study) -> "pd.DataFrame":
    """One row per trial: number, state, cross-validated accuracy, seconds, the worker and the 10 choices."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        workers = [k.split(":", 1)[1] for k in t.user_attrs if k.startswith("run_by:")]
        rows.append({"trial": t.number, "state": t.state.name.lower(), "accuracy": t.value,
                     "seconds": t.user_attrs.get("seconds"), "worker": ", ".join(workers),
                     "surplus": bool(t.user_attrs.get("surplus")), **t.params})
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def selection(study, clips: Clips, search_subjects) -> "pd.DataFrame":
    """For each complete trial, its out-of-fold accuracy on all clips (the study's criterion: the subjects
    it reports inform the choice), on the clips of ``search_subjects`` only, and on the other (reporting)
    subjects' clips — so the two selection protocols can be compared on the same reporting clips."""
    import pandas as pd

    search = np.isin(clips.subject, np.asarray(search_subjects))
    rows = []
    for t in study.get_trials(deepcopy=False, states=None):
        if t.state.name != "COMPLETE" or "predictions" not in t.user_attrs:
            continue
        predicted = np.asarray(t.user_attrs["predictions"])
        right = predicted == clips.labels
        rows.append({"trial": t.number, "all subjects": right.mean(), "search subjects": right[search].mean(),
                     "reporting subjects": right[~search].mean()})
    return pd.DataFrame(rows).set_index("trial")


def multiply_adds(config: VideoConfig, clip_length: int, frame_size: int, widths=(8, 16, 32, 64)) -> int:
    """Multiply-adds of the convolutions of ``study_cnn3d`` for one clip, as this book computes them:
    taps of the temporal kernel that only ever see padding are left out (:class:`SpatioTemporalConv`).
    A configuration's cost on a CPU, independent of what else the machine was doing when it ran."""
    total, frames, size, channels = 0, clip_length, frame_size, 1
    for block, (filters, (_, temporal_stride)) in enumerate(zip(widths, BLOCK_POOLING)):
        for _ in range(2 if config.second_conv and block < 2 else 1):
            taps = 2 * min(config.temporal_kernel // 2, frames - 1) + 1
            total += frames * size * size * 9 * channels * taps * filters
            channels = filters
        size, frames = -(-size // 2), -(-frames // temporal_stride)
    return int(total)


def choose(scores: "pd.Series", cost: "pd.Series", n_clips: int, rule: str = "best") -> int:
    """The trial a selection rule picks from ``scores`` (trial → accuracy on ``n_clips`` clips):
    ``best``: the highest score (the study's rule); ``one_se``: among the trials within one standard
    error (√(p(1−p)/n) at the best score p) of the best, the one with the lowest ``cost`` — the
    one-standard-error rule (Breiman et al., 1984): differences that small are the noise of the clips
    the scores were counted on, so the cheaper network is as good a choice."""
    if rule == "best":
        return int(scores.idxmax())
    if rule != "one_se":
        raise ValueError(f"selection rule {rule!r} is not 'best' or 'one_se'")
    best = float(scores.max())
    tolerance = np.sqrt(best * (1 - best) / n_clips)
    within = scores.index[scores >= best - tolerance]
    return int(min(within, key=lambda trial: (cost[trial], -scores[trial])))


# --------------------------------------------------------------------------------------------------
# The command line: a search worker


def experiment_from_params(P) -> tuple[VideoExperiment, list[np.ndarray]]:
    """The chapter's experiment and search folds from its parameter block (``P``: ``load_params(profile,
    "09_video")``), exactly as the chapter builds them, so a worker started from the shell joins the
    chapter's study."""
    from . import experiment as experiments
    from .data import load_ckplus
    from .paths import book_folder, resolve_data_dir

    dataset = load_ckplus(resolve_data_dir(P.data_dir))
    clips = ckplus_clips(dataset, clip_length=P.clips["clip_length"], frame_size=P.clips["frame_size"])
    if P.get("subjects"):
        clips = clips.subset(np.flatnonzero(np.isin(clips.subject, np.unique(clips.subject)[:P.subjects])))
    video = VideoExperiment(clips, training=dict(P.training), widths=tuple(P.widths), val_fraction=P.inner_validation,
                            augmentation=P.get("augmentation"), seed=P.seed,
                            fold_store=book_folder(P, "fold_store"))
    folds = experiments.subject_folds(clips.subject, clips.labels, P.search["folds"], seed=P.seed)
    return video, folds


def storage_location(setting: str | None, profile: str) -> str:
    """Where a profile's search lives: a URL as given; a path relative to the book's root (the full
    profile keeps its study in ``results/full/`` so a fresh clone resumes or re-reads the search);
    ``None``: ``cache/video_search/<profile>.db``."""
    from .paths import repo_root

    if setting and "://" in str(setting):
        return str(setting)
    return str(repo_root() / (setting or Path("cache") / "video_search" / f"{profile}.db"))


def main(argv=None) -> None:
    from .params import load_params

    parser = argparse.ArgumentParser(prog="python -m fer_lib.video", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="run one search worker (start several to share the search)")
    search.add_argument("--profile", default="sample", help="params/<profile>.yml: clips, network, folds (default sample)")
    search.add_argument("--storage", help="database URL (sqlite:///…, postgresql://…), a .db path, or a journal-file "
                                          "path (default: cache/video_search/<profile>.db)")
    search.add_argument("--trials", type=int, help="trials to finish across all workers (default: the profile's)")
    search.add_argument("--study", help="study name (default: the profile's)")
    search.add_argument("--seed", type=int, help="this worker's sampler seed (default: a fresh one per worker)")
    search.add_argument("--data-dir", help="folder with ckplus48_images.npz (default: the profile's data_dir)")
    args = parser.parse_args(argv)
    P = load_params(args.profile, chapter="09_video", data_dir=args.data_dir)
    experiment, folds = experiment_from_params(P)
    study = open_study(args.storage or storage_location(P.search["storage"], args.profile), args.study or P.search["study_name"],
                       seed=args.seed, pruner_startup=P.search["pruner_startup_trials"])
    ran = run_search(experiment, study, args.trials or P.search["trials"], folds)
    print(f"worker done: ran {ran} trial(s); the study has {_finished(study)} finished")


if __name__ == "__main__":
    main()

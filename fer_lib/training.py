"""One training loop for every Keras model in the book: fit, resume, budget, cache, predict.

Every chapter that trains a network calls :func:`fit`, so early stopping, checkpoints, the
time budget and the on-disk cache behave the same everywhere:

- early stopping on validation loss, and the weights of the epoch with the lowest validation loss
  are the ones kept (also when training ends by budget or epoch limit);
- ``cache/models/<name>-<digest>/`` holds the finished model and ``fit.json`` (config, history,
  time, device, why it stopped). The digest covers the model options, the training configuration
  and the exact arrays, so a rerun of a chapter reloads instead of retraining, and any change retrains.
  It cannot cover the builder's code: a cached model is loaded only if its architecture is the one
  ``build()`` makes now (:func:`stale_architecture`), else it is set aside and the model retrained;
- an interrupted fit resumes from its last finished epoch (``keras.callbacks.BackupAndRestore``),
  and the time already spent counts against the budget;
- ``time_budget_s`` stops training before an epoch would overrun the budget (running time: a stopped
  process spends none, :class:`RunningClock`) — how the ``full``
  profile fits big models on a 2-core CPU. ``fit.json`` says whether a model stopped by early
  stopping (converged), by the budget or by the epoch limit, and chapters print it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import progress
from .paths import book_folder, repo_root, written_atomically


class _NoRetracingWarnings(logging.Filter):
    """Chapters build several models in a loop, which makes TensorFlow warn that it traced functions
    again: expected there, and pages of it would bury a chapter's output. Every other warning stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoRetracingWarnings())

OPTIMIZERS = ("sgd", "adamw", "adam")
#: Losses on one-hot targets, applied to the integer labels every chapter uses (see layers.OneHotLoss).
LOSSES = ("categorical_crossentropy", "categorical_focal_crossentropy", "mean_squared_error", "margin")
#: TrainConfig fields added after models were cached: left out of the cache key at their default.
_LATER_FIELDS = {"amsgrad": False, "global_clipnorm": None, "class_weight": None, "jit_compile": False,
                 "nesterov": False, "label_smoothing": 0.0, "schedule": "plateau", "warmup_epochs": 0,
                 "pipeline": "arrays"}
#: learning-rate schedules: halve on a validation plateau (ReduceLROnPlateau), or a fixed curve over
#: ``epochs`` set per batch (:class:`ScheduledLearningRate`): linear warm-up then cosine decay, or one-cycle
SCHEDULES = ("plateau", "cosine", "onecycle")
PIPELINES = ("arrays", "tf.data")


def config_key(config: "TrainConfig") -> dict[str, Any]:
    """The configuration as it enters cache keys (later fields only when set)."""
    return {k: v for k, v in asdict(config).items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. ``weight_decay`` is decoupled (applied by the optimizer)."""

    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 60
    patience: int = 8               # early stopping on validation loss
    reduce_lr_patience: int | None = 3  # halve the learning rate when validation loss stalls
    time_budget_s: float | None = None
    seed: int = 0
    loss: str = "sparse_categorical_crossentropy"  # or one of LOSSES, on the same integer labels
    # Added for the blendshape chapter; at their defaults they stay out of the cache key, so models
    # cached before they existed are still found.
    amsgrad: bool = False           # AdamW / Adam: the AMSGrad variant
    global_clipnorm: float | None = None  # clip the global gradient norm
    class_weight: str | None = None  # "balanced": weight each class by n / (k * n_class) in the loss
    # Added for the sketch chapter. Keras turns XLA off on a CPU-only machine; on this CPU it trains
    # ResNet50 about 3-4x faster and a small VGG slightly slower, so it is a per-model choice. A model
    # with a layer XLA cannot compile (RandomRotation) falls back to plain graphs, with Keras' warning.
    jit_compile: bool = False
    # Added for 2D training to convergence (RQ1 revisited). ``schedule`` other than "plateau" sets the
    # learning rate per batch along a curve that ends at ``epochs`` (the schedule, not a plateau,
    # decides when training has converged; early stopping still guards against divergence).
    nesterov: bool = False          # SGD: Nesterov momentum
    label_smoothing: float = 0.0    # cross-entropy on (1 − ε)·one-hot + ε/k
    schedule: str = "plateau"       # one of SCHEDULES
    warmup_epochs: float = 0        # cosine: linear warm-up from 0 over these epochs
    # "arrays": Keras' own slicing of NumPy arrays (chapters 3-9 as executed); "tf.data": a cached,
    # shuffled, prefetched tf.data pipeline (see benchmarks/pixels_speed.py for what it changes)
    pipeline: str = "arrays"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.loss != "sparse_categorical_crossentropy" and self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not sparse_categorical_crossentropy or one of {sorted(LOSSES)}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be null or 'balanced', got {self.class_weight!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline {self.pipeline!r} is not one of {PIPELINES}")
        if self.label_smoothing and self.loss not in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            raise ValueError(f"label_smoothing applies to cross-entropy, not to loss {self.loss!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be positive, got {self.batch_size}, {self.epochs}")

    def with_(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (unknown names raise)."""
        return replace(self, **changes)

    @classmethod
    def from_params(cls, values: dict[str, Any] | None, **overrides) -> "TrainConfig":
        """From a params block; ``time_budget_min`` is accepted for readability and converted."""
        values = {**(values or {}), **overrides}
        minutes = values.pop("time_budget_min", None)
        if minutes is not None:
            values["time_budget_s"] = float(minutes) * 60
        return cls(**values)


@dataclass
class FitResult:
    model: Any
    history: list[dict[str, float]]  # one row per epoch (across resumes)
    train_seconds: float
    epochs_run: int
    best_epoch: int                  # 1-based epoch whose weights were kept
    stopped_by: str                  # early_stopping | time_budget | max_epochs | schedule_end
    device: str
    run_dir: Path
    from_cache: bool
    stored_run: str | None = None    # the store's folder when it is a twin's, named by another key (stored_twin)

    @classmethod
    def from_meta(cls, model, meta: dict[str, Any], run_dir: Path, from_cache: bool,
                  stored_run: str | None = None) -> "FitResult":
        """From a model and its ``fit.json`` contents."""
        fields = ("history", "train_seconds", "epochs_run", "best_epoch", "stopped_by", "device")
        return cls(model=model, run_dir=run_dir, from_cache=from_cache, stored_run=stored_run,
                   **{k: meta[k] for k in fields})

    @property
    def summary(self) -> dict[str, Any]:
        best = self.history[self.best_epoch - 1] if self.history else {}
        return {
            "epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "stopped_by": self.stopped_by,
            "train_minutes": round(self.train_seconds / 60, 1), "device": self.device,
            "best_val_loss": best.get("val_loss"), "best_val_accuracy": best.get("val_accuracy"),
        }


def device_description() -> str:
    """'GPU: <name>' when TensorFlow sees one, else 'CPU (<n> cores)'."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return f"CPU ({os.cpu_count()} cores)"


def make_optimizer(config: TrainConfig):
    import keras

    clip = {"global_clipnorm": config.global_clipnorm} if config.global_clipnorm else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum, nesterov=config.nesterov,
                                    weight_decay=config.weight_decay or None, **clip)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay,
                                      amsgrad=config.amsgrad, **clip)
    return keras.optimizers.Adam(config.learning_rate, amsgrad=config.amsgrad, **clip)


def make_loss(config: TrainConfig):
    from .layers import OneHotLoss

    if config.label_smoothing:  # Keras' sparse cross-entropy has no smoothing: smooth the one-hot targets
        return OneHotLoss("categorical_crossentropy", label_smoothing=config.label_smoothing)
    return config.loss if config.loss == "sparse_categorical_crossentropy" else OneHotLoss(config.loss)


def compile_model(model, config: TrainConfig, metrics=("accuracy",)):
    model.compile(optimizer=make_optimizer(config), loss=make_loss(config), metrics=list(metrics),
                  jit_compile=config.jit_compile)
    return model


def class_weights(y, config: TrainConfig) -> dict[int, float] | None:
    """Keras ``class_weight`` for ``config.class_weight`` ("balanced": n / (k · n_class), as scikit-learn)."""
    if config.class_weight is None:
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(y)
    return {int(c): float(w) for c, w in zip(classes, compute_class_weight("balanced", classes=classes, y=y))}


def array_digest(*arrays) -> str:
    """A short digest of arrays' shapes, dtypes and bytes (what a cached model was trained on)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


#: how far two fingerprints (:func:`array_fingerprint`) may differ, as a fraction of the arrays' spread, and
#: still be the same data. Float round-off of one extraction on two CPUs moves a block mean by far less; on
#: chapter 3's FER2013 inputs a real change moves it by much more: a crop margin of 0.12 instead of 0.1 by 27
#: times this, no alignment by 70 times, no CLAHE by 250 times. Five of 28,709 training faces swapped for
#: others stay within it (half of it): a handful of faces that one machine's detector finds and another's
#: misses is the same data for this purpose
FINGERPRINT_TOLERANCE = 1e-3


def _summary(x, groups: int = 64) -> dict[str, Any]:
    """Float64 means of ``x`` (rows = samples) over ``groups`` blocks of features and ``groups`` blocks of
    rows, and its standard deviation: what :func:`array_fingerprint` compares."""
    flat = np.asarray(x).reshape(len(x), -1)
    total, squares = 0.0, 0.0
    for start in range(0, len(flat), 4096):  # float64 sums without a float64 copy of the whole array
        chunk = flat[start:start + 4096].astype(np.float64)
        total, squares = total + chunk.sum(), squares + np.square(chunk).sum()
    mean = total / max(flat.size, 1)
    columns, rows = flat.mean(axis=0, dtype=np.float64), flat.mean(axis=1, dtype=np.float64)
    return {"std": float(np.sqrt(max(squares / max(flat.size, 1) - mean * mean, 0.0))),
            "columns": [float(block.mean()) for block in np.array_split(columns, min(groups, len(columns))) if len(block)],
            "rows": [float(block.mean()) for block in np.array_split(rows, min(groups, len(rows))) if len(block)]}


def array_fingerprint(x_train, y_train, x_val, y_val) -> dict[str, Any]:
    """What a fit's inputs are, beyond their exact bytes (:func:`array_digest`): shapes, dtypes, the labels'
    digest and block means of the features (:func:`_summary`). Two machines whose CPUs round MediaPipe's
    floats differently make arrays with other digests but the same fingerprint (:func:`same_data`), and a
    model stored on one is the model the other would train (chapter 3's stored models score the same
    accuracies to the image on both)."""
    return {"shapes": [list(np.shape(a)) for a in (x_train, y_train, x_val, y_val)],
            "dtypes": [str(np.asarray(a).dtype) for a in (x_train, y_train, x_val, y_val)],
            "labels": array_digest(y_train, y_val), "x_train": _summary(x_train), "x_val": _summary(x_val)}


def same_data(one: dict[str, Any] | None, other: dict[str, Any] | None,
              tolerance: float = FINGERPRINT_TOLERANCE) -> bool:
    """Whether two fingerprints (:func:`array_fingerprint`) describe the same data up to float round-off: equal shapes,
    dtypes and labels, and every block mean within ``tolerance`` × the features' spread."""
    if not one or not other or any(one.get(k) != other.get(k) for k in ("shapes", "dtypes", "labels")):
        return False
    for name in ("x_train", "x_val"):
        a, b = one[name], other[name]
        scale = tolerance * max(a["std"], b["std"], 1e-12)
        if abs(a["std"] - b["std"]) > scale or any(
                len(a[part]) != len(b[part]) or np.max(np.abs(np.subtract(a[part], b[part])), initial=0.0) > scale
                for part in ("columns", "rows")):
            return False
    return True


class RunningClock:
    """Seconds of this process's running time: wall-clock time less the time it was stopped.

    A fit's time is a cost the book reports (and a budget it spends), but a process stopped with SIGSTOP —
    paused so that a CI run or a benchmark has the CPU, or a suspended laptop — keeps counting wall-clock
    time. One daemon thread per process wakes every ``tick`` seconds; a wake-up later than ``tick + gap``
    means every thread was stopped, and the excess is counted as paused. (A busy CPU delays a wake-up by
    milliseconds, not by ``gap``.) :meth:`now` is ``time.perf_counter()`` minus every pause so far, so the
    difference of two readings is running time."""

    _lock = threading.Lock()
    _shared: "RunningClock | None" = None

    def __init__(self, tick: float = 1.0, gap: float = 10.0):
        self.tick, self.gap, self.paused = tick, gap, 0.0
        threading.Thread(target=self._watch, name="running-clock", daemon=True).start()

    def _watch(self) -> None:
        last = time.perf_counter()
        while True:
            time.sleep(self.tick)
            current = time.perf_counter()
            if current - last > self.tick + self.gap:
                self.paused += current - last - self.tick
            last = current

    def now(self) -> float:
        return time.perf_counter() - self.paused

    @classmethod
    def shared(cls) -> "RunningClock":
        """The process's clock (started on first use)."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared


class TimeBudget:
    """Keras callback factory: stop before the next epoch would overrun ``seconds`` of training.

    The time spent is kept in ``state_path`` so a resumed fit counts the time before the interruption.
    Time is the process's running time (:class:`RunningClock`): a pause spends no budget.
    """

    def __new__(cls, seconds: float | None, state_path: Path):
        import keras

        class _TimeBudget(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds, self.state_path = seconds, Path(state_path)
                state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
                self.spent_before = float(state.get("spent_s", 0.0))
                self.exhausted = False
                self.clock = RunningClock.shared()

            @property
            def spent(self) -> float:
                return self.spent_before + (self.clock.now() - self.started)

            def on_train_begin(self, logs=None):
                self.started = self.epoch_started = self.clock.now()

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_started = self.clock.now()

            def on_epoch_end(self, epoch, logs=None):
                last_epoch = self.clock.now() - self.epoch_started
                self.state_path.write_text(json.dumps({"spent_s": self.spent}))
                if self.seconds is not None and self.spent + last_epoch > self.seconds:
                    self.exhausted = True
                    self.model.stop_training = True

        return _TimeBudget()


def learning_rate_at(config: TrainConfig, progress: float) -> float:
    """The learning rate of ``config.schedule`` at ``progress`` (0 → 1 over ``config.epochs``).

    ``cosine``: linear warm-up from 0 over ``warmup_epochs``, then half a cosine down to 0.
    ``onecycle`` (Smith & Topin, 2019, as PyTorch's OneCycleLR with cosine annealing): from lr/25 up to
    ``learning_rate`` over the first 30 %, then down to lr/25/10⁴. The momentum is not cycled: Keras'
    SGD compiles it as a constant."""
    import math

    peak, progress = config.learning_rate, min(max(progress, 0.0), 1.0)
    if config.schedule == "cosine":
        warmup = config.warmup_epochs / config.epochs
        if progress < warmup:
            return peak * progress / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / max(1e-12, 1 - warmup)))
    if config.schedule == "onecycle":
        start, end, rise = peak / 25, peak / 25 / 1e4, 0.3

        def anneal(a, b, t):  # cosine from a to b as t goes 0 → 1
            return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))

        return anneal(start, peak, progress / rise) if progress < rise else anneal(peak, end, (progress - rise) / (1 - rise))
    raise ValueError(f"schedule {config.schedule!r} sets no learning rate per batch")


def ScheduledLearningRate(config: TrainConfig):
    """Keras callback: set the optimizer's learning rate before every batch from :func:`learning_rate_at`.
    Progress is computed from the epoch Keras reports, so a fit resumed by BackupAndRestore continues
    the curve where the interrupted one stopped."""
    import keras

    class _Scheduled(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps = max(1, int(self.params.get("steps") or 1))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            progress = (self.epoch * self.steps + batch) / (config.epochs * self.steps)
            self.model.optimizer.learning_rate = learning_rate_at(config, progress)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    return _Scheduled()


def early_stopping_state(previous: list[dict[str, float]], monitor: str = "val_loss") -> tuple[float | None, int]:
    """Where early stopping stood after the epochs of ``previous`` (a resumed fit's history): the best
    ``monitor`` value and the epochs since it, as one uninterrupted fit would have counted them."""
    best, wait = None, 0
    for row in previous:
        current = row.get(monitor)
        if current is None or current != current:
            continue
        wait += 1
        if best is None or current < best:
            best, wait = current, 0
    return best, wait


def ResumedEarlyStopping(previous: list[dict[str, float]], patience: int, monitor: str = "val_loss"):
    """``keras.callbacks.EarlyStopping`` that starts from the epochs a resumed fit already ran (its history):
    Keras' own restarts its patience at every ``fit`` call, so a fit spread over several sessions would
    stop later than the same fit run in one go."""
    import keras

    class _Resumed(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.best, self.wait = early_stopping_state(previous, monitor)
            self.best_epoch = next((i for i, row in enumerate(previous) if row.get(monitor) == self.best), 0)

    return _Resumed(monitor=monitor, mode="min", patience=patience)


def ResumedPlateau(previous: list[dict[str, float]], patience: int, factor: float = 0.5, min_lr: float = 1e-5,
                   monitor: str = "val_loss"):
    """``keras.callbacks.ReduceLROnPlateau`` whose counters continue from a resumed fit's history (the
    learning rate itself comes back with the optimizer's state): the epochs are replayed through Keras'
    rule, a recorded rate above ``min_lr`` counting as a cut made when the patience ran out."""
    import keras

    class _Resumed(keras.callbacks.ReduceLROnPlateau):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.monitor_op is None:
                self._set_monitor_op()
            for row in previous:
                current = row.get(self.monitor)
                if current is None or current != current:
                    continue
                if self.in_cooldown():
                    self.cooldown_counter -= 1
                    self.wait = 0
                if self._is_improvement(current, self.best):
                    self.best, self.wait = current, 0
                elif not self.in_cooldown():
                    self.wait += 1
                    if self.wait >= self.patience and row.get("learning_rate", float("inf")) > np.float32(self.min_lr):
                        self.cooldown_counter, self.wait = self.cooldown, 0

    return _Resumed(monitor=monitor, mode="min", factor=factor, patience=patience, min_lr=min_lr)


def ProgressLog(path, name: str, epochs: int):
    """Keras callback: one line per finished epoch appended to ``path`` (a background training's log)."""
    import keras

    clock = RunningClock.shared()

    class _Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = clock.now()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            scores = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            with open(path, "a") as handle:
                handle.write(f"{time.strftime('%H:%M:%S')} {name} epoch {epoch + 1}/{epochs} {scores} "
                             f"({clock.now() - self.epoch_started:.0f} s)\n")

    return _Progress()


def batches(x, y, batch_size: int, seed: int, shuffle: bool):
    """A tf.data pipeline over in-memory arrays: shuffled anew each epoch (seeded), batched, prefetched so
    the next batch is ready while the current one trains."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y)))
    if shuffle:
        dataset = dataset.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _read_history(csv_path: Path) -> list[dict[str, float]]:
    import pandas as pd

    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return []
    table = pd.read_csv(csv_path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return [{k: float(v) for k, v in row.items()} for row in table.to_dict("records")]


#: every module of fer_lib that registers Keras layers; load_model imports them all (a model with a layer
#: of a module not imported fails to load with "Could not locate class ...")
LAYER_MODULES = ("capsules", "landmarks", "layers", "mesh", "video", "voxels")


def load_model(path, compile: bool = True):
    """A saved ``.keras`` model of this book. Registers ``fer_lib``'s custom layers first (Keras finds a
    custom class only once its module is imported), so a cached CapsNet or mesh model loads in a fresh
    process that never built one."""
    import keras

    import importlib

    for module in LAYER_MODULES:
        importlib.import_module(f"{__package__}.{module}")

    return keras.saving.load_model(path, compile=compile)


#: what a committed run store keeps of a run folder: the finished model, or the state a resumed fit needs
STORED_FILES = ("key.json", "model.keras", "fit.json", "history.csv", "budget.json", "best.weights.h5",
                "backup/latest.weights.h5", "backup/training_metadata.json")
#: what a finished run keeps: the model for inference, how it was fitted, and what its key was made of
FINISHED_FILES = ("key.json", "model.keras", "fit.json")
#: runs larger than this are not copied into a store (git is no place for big binaries)
STORE_LIMIT_MB = 25.0


def model_store(P) -> Path | None:
    """The profile's committed run store, or None: ``model_store`` at the top of ``params/<profile>.yml``, a
    folder under the book. Every chapter passes it to its fits (``store=``), so a run finished or half done
    on one machine is read back or resumed on a fresh clone whose ``cache/`` is empty."""
    return book_folder(P, "model_store")


def stored_name(run_name: str) -> str:
    """A run folder's name in a store: what git and every shell handle without quoting (chapter 7's
    cache names hold spaces and commas); letters, digits and ``_.+-`` are kept as they are."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", run_name)


def _epochs_in(run_dir: Path) -> int:
    """Finished epochs recorded in a run folder (0 when none); a finished model counts as done."""
    if (run_dir / "model.keras").is_file() and (run_dir / "fit.json").is_file():
        return 1 << 30
    return len(_read_history(run_dir / "history.csv"))


def sync_run(source: Path, target: Path, limit_mb: float = STORE_LIMIT_MB) -> bool:
    """Copy a run folder's :data:`STORED_FILES` from ``source`` to ``target`` (each file written to a
    temporary name and renamed, so an interrupted copy leaves the old file whole). Of a finished run only
    :data:`FINISHED_FILES` are copied (the model only unless ``target`` has it already: :func:`store_finished`
    wrote a slimmer one), and ``target``'s resume state goes. Returns False, copying nothing, when the files
    exceed ``limit_mb``."""
    import shutil

    finished = (source / "model.keras").is_file() and (source / "fit.json").is_file()
    names = tuple(n for n in FINISHED_FILES if n != "model.keras" or not (target / "model.keras").is_file()) \
        if finished else STORED_FILES
    files = [name for name in names if (source / name).is_file()]
    if sum((source / name).stat().st_size for name in files) > limit_mb * 1e6:
        return False
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(destination) as temporary:
            shutil.copyfile(source / name, temporary)
    if finished:  # the resume state is no longer needed
        for name in set(STORED_FILES) - set(FINISHED_FILES):
            (target / name).unlink(missing_ok=True)
        if (target / "backup").is_dir() and not any((target / "backup").iterdir()):
            (target / "backup").rmdir()
    return True


def store_finished(model, build: Callable[[], Any], run_dir: Path, stored: Path,
                   limit_mb: float = STORE_LIMIT_MB) -> bool:
    """Keep a finished run in the store: its model for inference (the weights in a fresh, uncompiled
    ``build()``, so without the optimizer's state: a third of the cached file for Adam) and ``fit.json``;
    the resume state goes. Returns False, keeping nothing new, when the model exceeds ``limit_mb``."""
    stored.mkdir(parents=True, exist_ok=True)
    slim = build()
    slim.set_weights(model.get_weights())
    temporary = stored / "model.partial.keras"
    slim.save(temporary)
    if temporary.stat().st_size > limit_mb * 1e6:
        temporary.unlink()
        return False
    temporary.replace(stored / "model.keras")
    sync_run(run_dir, stored)  # fit.json (the model is already there, whole), then the resume state goes
    return True


class StoreRun:
    """Keras callback factory: after every epoch (and at the end) copy the run folder's resume state into
    the committed store, so a fit spread over several sessions on fresh machines resumes where it was."""

    def __new__(cls, run_dir: Path, stored: Path):
        import keras

        class _StoreRun(keras.callbacks.Callback):
            too_large = False

            def on_epoch_end(self, epoch, logs=None):
                if not self.too_large and not sync_run(run_dir, stored):
                    self.too_large = True
                    print(f"{run_dir.name}: larger than {STORE_LIMIT_MB:.0f} MB, not kept in {stored.parent}")

        return _StoreRun()


def fit_key_parts(name: str, options: dict[str, Any] | None, config: "TrainConfig", x_train, y_train, x_val,
                  y_val) -> dict[str, Any]:
    """What :func:`fit_key` digests, one entry per reason a fit trains anew: the name, the builder's options,
    the training configuration, the exact arrays (their digest) and the Keras version; and, outside the
    digest, the arrays' ``fingerprint`` (:func:`array_fingerprint`) that :func:`stored_twin` compares."""
    import keras

    return {"name": name, "options": options or {}, "training": config_key(config),
            "arrays": array_digest(x_train, y_train, x_val, y_val), "keras": keras.__version__,
            "fingerprint": array_fingerprint(x_train, y_train, x_val, y_val)}


def digest_of_parts(parts: dict[str, Any]) -> str:
    """The fit key of :func:`fit_key_parts` (the fingerprint stays outside it)."""
    return hashlib.sha256(json.dumps([parts["name"], parts["options"], parts["training"], parts["arrays"], parts["keras"]],
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def fit_identity(parts: dict[str, Any]) -> str:
    """The digest of what defines a fit apart from its arrays (name, options, training, Keras version): two
    fits with one identity and the same data (:func:`same_data`) are the same fit on any machine."""
    return hashlib.sha256(json.dumps([parts["name"], parts["options"], parts["training"], parts["keras"]],
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def fit_key(name: str, options: dict[str, Any] | None, config: "TrainConfig", x_train, y_train, x_val, y_val) -> str:
    """The digest that names a fit in the cache: the name, the builder's options, the training
    configuration, the exact arrays and the Keras version (any change trains anew)."""
    return digest_of_parts(fit_key_parts(name, options, config, x_train, y_train, x_val, y_val))


def _stored_runs(store: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    """The runs of fit ``name`` in a store, each with its ``key.json``."""
    prefix = stored_name(name) + "-"
    return [(run, json.loads((run / "key.json").read_text())) for run in sorted(Path(store).glob(prefix + "*"))
            if len(run.name) == len(prefix) + 16 and (run / "key.json").is_file()]


def stored_twin(store: Path, parts: dict[str, Any]) -> Path | None:
    """A stored run of the same fit — name, options, training and Keras version — on arrays whose bytes
    differ but whose fingerprint says they are the same data (:func:`same_data`): another machine's
    extraction, rounded otherwise. None when there is none; the furthest-trained one when several."""
    mine = json.loads(json.dumps(parts, sort_keys=True, default=str))
    twins = [run for run, theirs in _stored_runs(store, parts["name"])
             if all(theirs.get(part) == mine[part] for part in ("options", "training", "keras"))
             and same_data(theirs.get("fingerprint"), mine["fingerprint"])]
    return max(twins, key=_epochs_in, default=None)


def why_not_stored(store: Path, parts: dict[str, Any]) -> str | None:
    """Why ``store`` holds no run for this fit although it holds others of the same name: which of the
    key's parts (:func:`fit_key_parts`, kept in each stored run's ``key.json``) differ, e.g. the input
    arrays when another machine's extraction gave other floats. None when the store has no such run."""
    others = _stored_runs(store, parts["name"])
    if not others:
        return None
    mine = json.loads(json.dumps(parts, sort_keys=True, default=str))
    reasons = []
    for run, theirs in others:
        differ = [part for part in ("options", "training", "arrays", "keras") if theirs.get(part) != mine[part]]
        reasons.append(f"{run.name}: other {', '.join(differ) or 'key'}")
    return "; ".join(reasons)


def architecture(model) -> Any:
    """``model.get_config()`` without what differs between two builds of the same architecture: layer names
    (Keras numbers them per process: dense, dense_1, ...) become their order of appearance, wherever they
    are referenced; ``trainable`` flags (training may freeze or unfreeze layers) are left out; tuples are
    lists, as after a save and load. What remains: layer classes, their order and connections, shapes,
    units, filters, kernel sizes and every other configured value."""
    config = model.get_config()
    names: dict[str, str] = {}
    if isinstance(config.get("name"), str):
        names[config["name"]] = "<model>"

    def collect(node):
        if isinstance(node, dict):
            for layer in node.get("layers") if isinstance(node.get("layers"), list) else ():
                name = (layer.get("config") or {}).get("name", layer.get("name")) if isinstance(layer, dict) else None
                if isinstance(name, str):
                    names.setdefault(name, f"<layer {len(names)}>")
            for value in node.values():
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)

    def rename(node):
        if isinstance(node, dict):
            return {key: rename(value) for key, value in node.items() if key != "trainable"}
        if isinstance(node, (list, tuple)):
            return [rename(value) for value in node]
        return names.get(node, node) if isinstance(node, str) else node

    collect(config)
    return rename(config)


def _first_difference(a, b, where: str = "config") -> str | None:
    """Where two normalised configs first differ, for the note (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{where}.{key} only in the {'cached' if key in a else 'new'} model"
            found = _first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} entries cached, {len(b)} now"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} cached, {b!r} now"


def stale_architecture(model, build: Callable[[], Any]) -> str | None:
    """How a cached ``model`` differs from a fresh, untrained ``build()`` (:func:`architecture`), or None
    when they agree — or when either cannot be described (then the cached model is trusted, as before).
    The fresh build leaves Python's and NumPy's global random state as it found it."""
    import random

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return _first_difference(architecture(model), architecture(build()))
    except Exception as error:  # noqa: BLE001 - e.g. a builder that downloads weights, offline: keep the cache
        print(f"could not compare the cached model with its builder ({type(error).__name__}: {error}); "
              "using the cached model", flush=True)
        return None
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _set_aside(run_dir: Path, stored: Path | None) -> Path:
    """Move a stale run folder to ``<run>.stale`` (replacing an older one) and drop a store's stale finished
    model, so the retraining starts from nothing and the store mirrors it. Returns the stale folder."""
    import shutil

    aside = run_dir.with_name(run_dir.name + ".stale")
    if aside.exists():
        shutil.rmtree(aside)
    run_dir.rename(aside)
    if stored is not None:
        for name in ("model.keras", "fit.json"):
            (stored / name).unlink(missing_ok=True)
    return aside


def fit(
    build: Callable[[], Any],
    x_train, y_train, x_val, y_val,
    config: TrainConfig,
    *,
    name: str,
    options: dict[str, Any] | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    callbacks: list | None = None,
    verbose: int = 2,
    log_path: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
) -> FitResult:
    """Train ``build()`` on (x_train, y_train), early-stopping on (x_val, y_val); see the module doc.

    ``options`` are the builder's arguments: they enter the cache key, so changing the model retrains.
    ``cache_dir`` defaults to ``<book>/cache/models``; extra ``callbacks`` run after the built-in ones
    (they do not enter the cache key). ``log_path``: append a progress line per epoch to this file.
    ``store``: a committed folder that mirrors this run (:func:`sync_run`: the finished model, or while
    training the state to resume from, after every epoch), so a run finished — or half done — on
    another machine is read back or resumed on a fresh clone whose ``cache/`` is empty.
    """
    import keras

    parts = fit_key_parts(name, options, config, x_train, y_train, x_val, y_val)
    key = digest_of_parts(parts)
    run_dir = Path(cache_dir or repo_root() / "cache" / "models") / f"{name}-{key}"
    stored = Path(store) / stored_name(f"{name}-{key}") if store else None
    twin = stored_twin(Path(store), parts) if stored is not None and cache and not stored.is_dir() else None
    if twin is not None:  # the same fit, stored from another machine's rounding of the same extraction
        print(f"{stored.name}: using {twin.name} from the store, the same fit on arrays that differ from these "
              "only in float round-off (same shapes, labels and block means: training.same_data)", flush=True)
        stored = twin
    if stored is not None and cache and _epochs_in(stored) > _epochs_in(run_dir):
        if run_dir.exists():  # an older attempt here: the store's is further along
            import shutil
            shutil.rmtree(run_dir)
        sync_run(stored, run_dir, limit_mb=float("inf"))
    model_path, meta_path = run_dir / "model.keras", run_dir / "fit.json"
    if cache and model_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        model = load_model(model_path)
        changed = stale_architecture(model, build)
        if changed is None:
            if stored is not None and _epochs_in(stored) < _epochs_in(run_dir):
                store_finished(model, build, run_dir, stored)  # trained before the store was named: keep it there too
            progress.note("fit", computed=False)
            return FitResult.from_meta(model, meta, run_dir, from_cache=True, stored_run=twin and twin.name)
        # the key covers the builder's options, not its code: a changed builder has the same key
        aside = _set_aside(run_dir, stored)
        print(f"{run_dir.name}: the cached model's architecture is not what the builder makes now ({changed}); "
              f"retraining (the old run is kept in {aside.name})", flush=True)
        del model
    progress.note("fit", computed=True)
    if stored is not None and _epochs_in(run_dir) == 0 and (reason := why_not_stored(Path(store), parts)):
        print(f"{stored.name}: not in the store, which holds {reason}; training anew", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if twin is None:  # a twin's run keeps the key it was stored under (its folder's name)
        (run_dir / "key.json").write_text(json.dumps(parts, sort_keys=True, default=str, indent=1))
    history_path, best_path = run_dir / "history.csv", run_dir / "best.weights.h5"
    previous = _read_history(history_path)  # epochs of an interrupted earlier attempt
    best_so_far = min((row["val_loss"] for row in previous), default=None)

    keras.utils.set_random_seed(config.seed)
    model = compile_model(build(), config)
    budget = TimeBudget(config.time_budget_s, run_dir / "budget.json")
    early = ResumedEarlyStopping(previous, config.patience)  # patience counted over every session's epochs
    extra_callbacks = list(callbacks or [])
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_loss", save_best_only=True,
                                        save_weights_only=True, initial_value_threshold=best_so_far),
        early,
        keras.callbacks.CSVLogger(str(history_path), append=True),
        budget,
        *extra_callbacks,
    ]
    if config.schedule != "plateau":
        callbacks.insert(2, ScheduledLearningRate(config))
    elif config.reduce_lr_patience:
        callbacks.insert(2, ResumedPlateau(previous, config.reduce_lr_patience, factor=0.5, min_lr=1e-5))
    if log_path is not None:
        callbacks.append(ProgressLog(log_path, name, config.epochs))
    if progress.active():  # a bar on the runner's terminal (none in the notebook)
        callbacks.append(progress.epoch_bar(name, config.epochs))
    if stored is not None:
        callbacks.append(StoreRun(run_dir, stored))  # last: after the backup, history and budget are written
    if previous and early_stopping_state(previous)[1] >= config.patience:
        # an earlier session ran out the patience (a fit interrupted at its last epoch): it has converged
        print(f"{run_dir.name}: early stopping's patience ({config.patience} epochs) ran out in the {len(previous)} "
              "epochs already run; not resumed", flush=True)
    elif config.pipeline == "tf.data":
        model.fit(batches(x_train, y_train, config.batch_size, config.seed, shuffle=True),
                  validation_data=batches(x_val, y_val, 256, config.seed, shuffle=False),
                  epochs=config.epochs, callbacks=callbacks, verbose=verbose, shuffle=False,  # the pipeline shuffles
                  class_weight=class_weights(y_train, config))
    else:
        model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=config.batch_size,
                  epochs=config.epochs, callbacks=callbacks, verbose=verbose, shuffle=True,
                  class_weight=class_weights(y_train, config))
    if best_path.is_file():
        model.load_weights(best_path)
    history = _read_history(history_path)
    epochs_run = len(history)
    best_epoch = int(np.argmin([row["val_loss"] for row in history])) + 1 if history else 0
    if budget.exhausted:
        stopped_by = "time_budget"
    elif epochs_run < config.epochs:
        stopped_by = "early_stopping"
    else:  # a schedule's curve ends at `epochs`: that is its end, not a cap that cut it short
        stopped_by = "max_epochs" if config.schedule == "plateau" else "schedule_end"
    spent = json.loads((run_dir / "budget.json").read_text())["spent_s"] if (run_dir / "budget.json").is_file() else 0.0
    meta = {"name": name, "options": options or {}, "config": asdict(config), "history": history,
            "train_seconds": spent, "epochs_run": epochs_run, "best_epoch": best_epoch,
            "stopped_by": stopped_by, "device": device_description()}
    model.save(model_path)
    meta_path.write_text(json.dumps(meta, indent=1, default=str))
    if stored is not None and not store_finished(model, build, run_dir, stored):
        print(f"{run_dir.name}: larger than {STORE_LIMIT_MB:.0f} MB, not kept in {stored.parent}")
    return FitResult.from_meta(model, meta, run_dir, from_cache=False, stored_run=twin and twin.name)


def predict(model, x, batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Class probabilities and the inference time in ms per image (batched, after one warm-up batch)."""
    x = np.asarray(x)
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
    started = time.perf_counter()
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    return probabilities, (time.perf_counter() - started) * 1000 / max(1, len(x))

"""Progress bars on the terminal and a count of what a chapter computed, for the runner.

Two things every long step of the library reports, through this one module:

- :func:`bar` — a tqdm progress bar (MediaPipe and dlib extraction, training epochs, searches). Inside a
  chapter executed by :mod:`fer_lib.runner` it is drawn on the runner's terminal (a file descriptor the
  runner hands the kernel, named in ``$FER_PROGRESS_FD``), never in the notebook; in a notebook opened by
  hand there is none (it would clutter the cell's output); in a plain Python process it goes to stderr.
  Like tqdm, a bar is drawn only on a terminal; ``FER_PROGRESS=1`` draws it anyway, ``0`` never.
- :func:`note` — one line per cached step (``fit``, ``extraction``, ``trial``) saying whether it was
  computed or read back from a cache, appended to ``$FER_STATUS_FILE`` when the runner set it.
  :func:`summary` turns them into the runner's "computed (3 fits, 1 extraction)" / "from caches (…)".
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

PROGRESS_FD_ENV = "FER_PROGRESS_FD"  # "<fd>:<st_dev>:<st_ino>" of the runner's stderr, inherited by the kernel
PROGRESS_ENV = "FER_PROGRESS"        # 1: draw bars even when not on a terminal; 0: never
STATUS_ENV = "FER_STATUS_FILE"       # where note() appends its lines (the runner reads them afterwards)


def handoff(fd: int) -> str:
    """The ``$FER_PROGRESS_FD`` value naming ``fd``: its number and the identity of the file it is open
    on, so a process that inherits the variable but not the descriptor (a joblib worker, where the same
    number may be another file) draws nothing rather than writing into that file."""
    stat = os.fstat(fd)
    return f"{fd}:{stat.st_dev}:{stat.st_ino}"


def _stream():
    """Where bars go now (see the module doc), or None."""
    spec = os.environ.get(PROGRESS_FD_ENV)
    if spec:
        try:
            fd, dev, ino = (int(part) for part in spec.split(":"))
            stat = os.fstat(fd)
        except (ValueError, OSError):
            return None
        if (stat.st_dev, stat.st_ino) != (dev, ino):
            return None
        return open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    if type(sys.stderr).__module__.startswith("ipykernel"):  # a notebook run by hand
        return None
    return sys.stderr


def _enabled(stream) -> bool:
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if stream is None or forced == "0":
        return False
    if forced == "1":
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def active() -> bool:
    """Whether a bar would be drawn now (callers skip per-batch work for bars nobody sees)."""
    return _enabled(_stream())


def bar(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", initial: int = 0,
        disable: bool = False, **options):
    """A tqdm bar on the terminal (disabled where there is none, or with ``disable``: it then only passes
    ``iterable`` through). It disappears when done (``leave=False``): the runner's line per chapter stays."""
    from tqdm import tqdm

    stream = _stream()
    try:
        sized = os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        sized = False
    # follow the terminal's width; a pipe, or a terminal reporting 0 columns (where tqdm would draw an
    # empty bar), gets 100
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream,
                disable=disable or not _enabled(stream), leave=False, dynamic_ncols=sized,
                ncols=None if sized else 100, **options)


def epoch_bar(name: str, epochs: int):
    """Keras callback: a bar over each epoch's batches (``name epoch k/N``), with the last epoch's losses."""
    import keras

    class _EpochBar(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar, self.last = None, {}

        def on_epoch_begin(self, epoch, logs=None):
            self.close()
            self.bar = bar(total=self.params.get("steps"), desc=f"{name} epoch {epoch + 1}/{epochs}", unit="batch")
            if self.last:
                self.bar.set_postfix(self.last, refresh=False)

        def on_train_batch_end(self, batch, logs=None):
            if self.bar is not None:
                self.bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            self.last = {k: f"{v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "val_loss", "val_accuracy")}

        def on_train_end(self, logs=None):
            self.close()

        def close(self):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return _EpochBar()


def note(kind: str, computed: bool, count: int = 1) -> None:
    """Record that ``count`` steps of ``kind`` (``fit``, ``extraction``, ``trial``) were computed, or read
    from a cache (``computed=False``), for the runner's line per chapter; nothing outside a runner's run."""
    path = os.environ.get(STATUS_ENV)
    if path and count:
        with open(path, "a") as handle:  # one short appended line per step: safe for several writers
            handle.write(json.dumps({"kind": kind, "computed": bool(computed), "count": int(count)}) + "\n")


def read_notes(path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _counted(counts: Counter) -> str:
    return ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items())


def summary(notes: list[dict]) -> str:
    """``computed (3 fits, 1 extraction)``, ``from caches (4 fits)``, both joined, or ``no cached steps``."""
    computed, cached = Counter(), Counter()
    for entry in notes:
        (computed if entry["computed"] else cached)[entry["kind"]] += entry["count"]
    parts = ([f"computed ({_counted(computed)})"] if computed else []) + \
        ([f"from caches ({_counted(cached)})"] if cached else [])
    return ", ".join(parts) or "no cached steps"

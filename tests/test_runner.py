"""The runner's terminal: one line per chapter (cached or computed), native log lines kept out of the
terminal and the notebook (unless VERBOSE=1), progress bars on the terminal only, one line for a failure.

The chapters here are tiny books in a temporary folder (FER_BOOK_ROOT), executed by ``python -m
fer_lib.runner`` in a subprocess as ``make chapter`` does, so what reaches its stdout and stderr is what a
reader's terminal shows."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_lib import progress, runner

ROOT = Path(__file__).resolve().parents[1]
HEADER = (ROOT / "book" / "01_data.py").read_text().split("# ---\n", 2)
HEADER = "# ---\n" + HEADER[1] + "# ---\n"  # the chapters' jupytext header (format and python3 kernelspec)
#: a line as absl / glog write them (TensorFlow's and MediaPipe's C++ logging), or absl's preamble
NATIVE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]|^WARNING: All log messages before absl|"
                    r"^WARNING: Logging before InitGoogle|^INFO: Created TensorFlow Lite", re.M)
FAKE_NATIVE = "W0000 00:00:1796125221.363044   21294 fake_native.cc:121] written on file descriptor 2"

NOISY = """
# %% tags=["parameters"]
profile = "smoke"

# %%
import os
import warnings

import tensorflow as tf  # its C++ start-up lines (CUDA probing, CPU features) go to the kernel's stderr

tf.constant(1.0) + 1
os.write(2, b"FAKE\\n")  # what a C++ library logging to stderr does
os.write(1, b"INFO: native output on file descriptor 1\\n")
warnings.warn("a warning the reader needs")
print("python output")

# %%
from fer_lib import progress

for _ in progress.bar(range(3), desc="tiny steps"):
    pass
progress.note("fit", computed=True)
progress.note("fit", computed=True)
progress.note("extraction", computed=False)
""".replace("FAKE", FAKE_NATIVE)

FAILING = """
# %% tags=["parameters"]
profile = "smoke"

# %%
print("fine")

# %%
def check(x):
    raise ValueError(f"bad value {x}\\nsecond line of the message")


check(3)

# %%
print("never reached")
"""


def _book(tmp_path: Path, name: str, body: str) -> Path:
    (tmp_path / "params").mkdir(exist_ok=True)
    (tmp_path / "_config.yml").write_text("title: tiny\n")
    (tmp_path / "book").mkdir(exist_ok=True)
    (tmp_path / "book" / f"{name}.py").write_text(HEADER + body)
    return tmp_path


def _run(root: Path, chapter: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   # a run as from a shell: pytest's marker would change ipykernel's behaviour
                   if k not in ("PYTEST_CURRENT_TEST", runner.VERBOSE_ENV, progress.PROGRESS_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    environment.update(FER_BOOK_ROOT=str(root), **env)
    return subprocess.run([sys.executable, "-m", "fer_lib.runner", "execute", "--profile", "smoke", "--chapter", chapter],
                          cwd=root, env=environment, capture_output=True, text=True, timeout=600)


def _streams(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(out.get("text", "")) for cell in cells for out in cell.get("outputs", []))


def test_default_run_prints_one_line_and_keeps_native_logs_in_the_kernel_log(tmp_path):
    root = _book(tmp_path, "01_tiny", NOISY)
    done = _run(root, "01", **{progress.PROGRESS_ENV: "1"})  # bars drawn although stderr is a pipe here
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"01_tiny \[smoke\] \d+\.\d s, computed \(2 fits\), from caches \(1 extraction\) "
                        r"-> book/executed/smoke/01_tiny\.ipynb\n", done.stdout), done.stdout
    assert not NATIVE.search(done.stdout + done.stderr), done.stdout + done.stderr
    assert "fd 2" not in done.stderr and "native output" not in done.stdout + done.stderr
    assert "tiny steps" in done.stderr  # the bar reached the terminal ...
    log = (root / "cache" / "logs" / "01_tiny-smoke.kernel.log").read_text()
    assert FAKE_NATIVE in log and "native output on file descriptor 1" in log  # ... the native lines the log
    cells = _streams(root / "book" / "executed" / "smoke" / "01_tiny.ipynb")
    assert "python output" in cells and "a warning the reader needs" in cells  # Python's output stays
    assert not NATIVE.search(cells) and "tiny steps" not in cells  # neither native lines nor bars in the book
    assert not (root / "cache" / "logs" / "01_tiny-smoke.status.jsonl").exists()


def test_verbose_lets_the_native_lines_through_to_the_terminal_only(tmp_path):
    root = _book(tmp_path, "01_tiny", NOISY.replace("import tensorflow as tf", "").replace("tf.constant(1.0) + 1", ""))
    log = root / "cache" / "logs" / "01_tiny-smoke.kernel.log"
    log.parent.mkdir(parents=True)
    log.write_text("an earlier run's log\n")
    done = _run(root, "01_tiny", **{runner.VERBOSE_ENV: "1"})
    assert done.returncode == 0, done.stderr
    assert FAKE_NATIVE in done.stderr and "INFO: native output on file descriptor 1" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("01_tiny [smoke] ")
    assert "tiny steps" not in done.stderr  # not a terminal and not forced: no bar
    assert not log.exists()  # not left to pass for this run's
    cells = _streams(root / "book" / "executed" / "smoke" / "01_tiny.ipynb")
    assert "python output" in cells and not NATIVE.search(cells)


def test_a_failing_cell_is_one_line_and_a_non_zero_exit(tmp_path):
    root = _book(tmp_path, "02_fail", FAILING)
    done = _run(root, "02")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == ("FAILED 02_fail [smoke] cell 4: ValueError: bad value 3 "
                                   "-> book/executed/smoke/02_fail.ipynb")
    notebook = json.loads((root / "book" / "executed" / "smoke" / "02_fail.ipynb").read_text())
    failed = [cell for cell in notebook["cells"] if cell.get("execution_count") == 4]
    assert [out["ename"] for out in failed[0]["outputs"] if out["output_type"] == "error"] == ["ValueError"]


def test_a_dead_kernel_names_the_last_line_of_its_log(tmp_path):
    """A native crash (absl's fatal "Check failed", then the process gone) is reported with that line."""
    root = _book(tmp_path, "03_dead", """
# %% tags=["parameters"]
profile = "smoke"

# %%
import os
import signal

os.write(2, b"F0000 00:00:1796125221.363044   21294 check.cc:7] Check failed: native invariant\\n")
os.kill(os.getpid(), signal.SIGKILL)
""")
    done = _run(root, "03")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "FAILED 03_dead [smoke]: the kernel died (cache/logs/03_dead-smoke.kernel.log ends: "
        "F0000 00:00:1796125221.363044   21294 check.cc:7] Check failed: native invariant) "
        "-> book/executed/smoke/03_dead.ipynb")


def test_summary_and_duration_wording():
    notes = [{"kind": "fit", "computed": True, "count": 3}, {"kind": "extraction", "computed": True, "count": 1},
             {"kind": "fit", "computed": False, "count": 2}]
    assert progress.summary(notes) == "computed (3 fits, 1 extraction), from caches (2 fits)"
    assert progress.summary(notes[2:]) == "from caches (2 fits)"
    assert progress.summary([]) == "no cached steps"
    assert [runner._duration(s) for s in (4.24, 125, 3725)] == ["4.2 s", "2 min 05 s", "1 h 02 min"]


def test_a_bar_draws_only_on_the_file_the_runner_handed_over(tmp_path, monkeypatch):
    """A joblib worker inherits FER_PROGRESS_FD but not the descriptor: where the number names another
    file, no bar is drawn into it."""
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    terminal, other = open(tmp_path / "terminal", "w"), open(tmp_path / "other", "w")
    fd = os.dup(terminal.fileno())
    try:
        monkeypatch.setenv(progress.PROGRESS_FD_ENV, progress.handoff(fd))
        for _ in progress.bar(range(2), desc="handed over"):
            pass
        assert "handed over" in (tmp_path / "terminal").read_text()
        os.dup2(other.fileno(), fd)  # the same number, now another file
        assert not progress.active()
        for _ in progress.bar(range(2), desc="elsewhere"):
            pass
        assert (tmp_path / "other").read_text() == ""
    finally:
        os.close(fd)
        terminal.close()
        other.close()


def test_fit_draws_epochs_and_notes_computed_then_cached(tmp_path, monkeypatch, capsys):
    import keras

    from fer_lib import training

    status = tmp_path / "status.jsonl"
    monkeypatch.setenv(progress.STATUS_ENV, str(status))
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    monkeypatch.delenv(progress.PROGRESS_FD_ENV, raising=False)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)

    def build():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])

    config = training.TrainConfig(optimizer="adam", learning_rate=0.01, batch_size=8, epochs=2, patience=5)
    first = training.fit(build, x, y, x, y, config, name="tiny", cache_dir=tmp_path, verbose=0)
    assert "tiny epoch 2/2" in capsys.readouterr().err
    again = training.fit(build, x, y, x, y, config, name="tiny", cache_dir=tmp_path, verbose=0)
    assert not first.from_cache and again.from_cache
    assert [(n["kind"], n["computed"]) for n in progress.read_notes(status)] == [("fit", True), ("fit", False)]

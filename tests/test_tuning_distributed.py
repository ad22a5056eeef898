"""keras-tuner's distributed mode through ``python -m fer_lib.tuning``: a chief and two workers on
localhost run a small random search on faces of the committed sample, every trial exactly once, and the
chapter's own call then reads the finished trials instead of training them. Plus the errors a wrong
setup gets (a taken port, a worker on another search space, keras-tuner's variables leaking into a
chapter, a worker without an id)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_lib import training, tuning
from fer_lib.data import TRAIN, VAL

ROOT = Path(__file__).resolve().parents[1]
DIR_ENV = "FER_TEST_TUNING_DIR"  # where the searches below keep their trials (the test's tmp_path)
KT_ENV = (tuning.KT_TUNER_ID, tuning.KT_ORACLE_IP, tuning.KT_ORACLE_PORT)
WORKERS = 2
MAX_TRIALS = 4
HANG_GUARD_S = 180  # generous: three TensorFlow processes start on a shared 2-core machine
BUILDS: list[dict] = []  # every model this process builds for a trial (the rerun must build none)


def _faces():
    """28 Training and 14 PublicTest faces (4 and 2 per class) of the committed sample, flattened."""
    import fer_lib

    fer = fer_lib.load_fer2013(ROOT / "data" / "sample")
    train, val = fer.stratified_subset(4, splits=(TRAIN,)), fer.stratified_subset(2, splits=(VAL,))
    flat = lambda faces: faces.images.reshape(len(faces.labels), -1).astype("float32") / 255
    return flat(train), train.labels, flat(val), val.labels, len(fer.class_names)


def _wait_for_every_worker():
    """A worker's first build (in its tuner's constructor, before it asks for a trial) waits for the
    other: keras-tuner hands trials first come, first served, so a worker that imported TensorFlow a few
    seconds sooner could run all four; this way both ask the chief at once."""
    me = os.environ.get(tuning.KT_TUNER_ID)
    if not me:  # the chief, and this process
        return
    ready = Path(os.environ[DIR_ENV]) / "ready"
    ready.mkdir(exist_ok=True)
    (ready / me).touch()
    deadline = time.monotonic() + HANG_GUARD_S
    while len(list(ready.iterdir())) < WORKERS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{me}: the other worker never started")
        time.sleep(0.05)


def _search(space: dict, barrier: bool) -> tuning.Search:
    x, y, x_val, y_val, n_classes = _faces()

    def build(options):
        import keras

        if barrier:
            _wait_for_every_worker()
        BUILDS.append(options)
        return keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(options["units"], activation="relu"),
                                 keras.layers.Dense(n_classes, activation="softmax")])

    return tuning.Search("random", (build, space, x, y, x_val, y_val, training.TrainConfig(batch_size=16)),
                         dict(name="tiny", max_trials=MAX_TRIALS, epochs=1, cache_dir=os.environ[DIR_ENV]))


def tiny_search(profile, data_dir=None) -> tuning.Search:
    """``--search tests.test_tuning_distributed:tiny_search``: 4 of 8 configurations of a tiny Dense network."""
    return _search({"units": [4, 8, 16, 32], "learning_rate": [1e-3, 1e-2]}, barrier=True)


def _port_in(log: Path, deadline: float) -> int:
    """The port the chief announces once its oracle serves (it asked for a free one: no race)."""
    while time.monotonic() < deadline:
        found = re.search(r"serving on 127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.2)
    raise AssertionError(f"the chief never served:\n{log.read_text()}")


def test_a_chief_and_two_workers_run_every_trial_once_and_the_chapter_reads_them(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in KT_ENV}
    env.update({DIR_ENV: str(tmp_path), "FER_BOOK_ROOT": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"})  # three processes share the cores
    command = [sys.executable, "-m", "fer_lib.tuning"]
    search = ["--search", "tests.test_tuning_distributed:tiny_search", "--profile", "smoke"]
    deadline = time.monotonic() + HANG_GUARD_S
    processes, logs = {}, {}

    def start(name, *role):
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "w") as log:
            processes[name] = subprocess.Popen([*command, *role, *search], cwd=ROOT, env=env, stdout=log,
                                               stderr=subprocess.STDOUT)

    try:
        start("chief", "chief", "--oracle", "127.0.0.1:0")
        port = _port_in(logs["chief"], deadline)
        for n in range(WORKERS):
            start(f"worker{n}", "worker", "--oracle", f"127.0.0.1:{port}", "--worker-id", str(n))

        # meanwhile, a worker on another search space is turned away before it runs anything
        monkeypatch.setenv(DIR_ENV, str(tmp_path / "other"))
        for name in KT_ENV:  # work() sets them in this process: restored at teardown
            monkeypatch.setenv(name, "")
        with pytest.raises(ValueError, match="differs from the chief's"):
            tuning.work(_search({"units": [4, 8]}, barrier=False), "127.0.0.1", port, "worker9", announce=lambda _: None)
        for name in KT_ENV:
            monkeypatch.delenv(name)

        for name, process in processes.items():
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("the distributed search hung:\n" + "\n".join(f"--- {n}\n{p.read_text()}" for n, p in logs.items()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    text = {name: path.read_text() for name, path in logs.items()}
    assert all(p.returncode == 0 for p in processes.values()), "\n".join(f"--- {n}\n{t}" for n, t in text.items())

    ran = {name: json.loads(re.search(r"done: ran \d+ trial\(s\): (\[.*\])", text[name]).group(1))
           for name in text if name != "chief"}
    trials = sorted(sum(ran.values(), []))
    assert len(trials) == len(set(trials)) == MAX_TRIALS, ran  # every trial ran, none twice
    assert all(ran.values()), ran  # both workers asked at once (see _wait_for_every_worker): both got trials

    # the chapter's own call, in this process: it reads the chief's trials and trains none
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    BUILDS.clear()
    table, config, options = tiny_search("smoke").run()
    assert BUILDS == []
    assert sorted(table.trial) == trials and table.val_accuracy.notna().all()
    assert options["units"] in (4, 8, 16, 32) and config.learning_rate in (1e-3, 1e-2)
    assert f"search done: {MAX_TRIALS} finished trials" in text["chief"]


def test_a_rerun_picks_the_same_best_among_tied_trials_whatever_order_keras_tuner_reloads_them(tmp_path, monkeypatch):
    """The best trial's values become the chapter's training configuration (and its models' cache keys),
    so reading trials back in another order (keras-tuner globs the trial files; a chief records them as
    workers finish) must not change which of several tied trials comes first."""
    import keras
    from keras_tuner.src.backend import io

    x, y, x_val, y_val, n_classes = _faces()

    def constant(options):  # zero weights never moved (learning rate 0): the same output for every trial
        return keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(
            n_classes, kernel_initializer="zeros", activation="softmax")])

    search = tuning.Search("random", (constant, {"units": [4, 8, 16]}, x, y, x_val, y_val,
                                      training.TrainConfig(learning_rate=0.0)),
                           dict(name="ties", max_trials=3, epochs=1, cache_dir=tmp_path))
    first, _, first_options = search.run()
    assert first.val_accuracy.nunique() == 1 and list(first.trial) == ["0", "1", "2"]
    files = io.glob
    monkeypatch.setattr(io, "glob", lambda pattern: sorted(files(pattern), reverse=True))  # another file order
    again, _, again_options = search.run()
    assert list(again.trial) == ["0", "1", "2"] and again_options == first_options


def test_a_taken_port_is_refused_with_the_option_to_change(tmp_path, monkeypatch):
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="--oracle host:port"):
            tuning.serve(_search({"units": [4]}, barrier=False), "127.0.0.1", taken.getsockname()[1],
                         announce=lambda _: None)


def test_keras_tuner_variables_do_not_silently_turn_a_chapter_search_distributed(tmp_path, monkeypatch):
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    monkeypatch.setenv(tuning.KT_ORACLE_IP, "127.0.0.1")
    with pytest.raises(RuntimeError, match="KERASTUNER_ORACLE_IP.*python -m fer_lib.tuning"):
        _search({"units": [4]}, barrier=False).run()
    assert not list(tmp_path.iterdir())  # refused before any tuner was made


@pytest.mark.parametrize("arguments, message", [
    (["worker", "--chapter", "07"], "--worker-id"),
    (["worker", "--chapter", "07", "--worker-id", "0", "--oracle", "localhost:0"], "the chief announced"),
    (["chief", "--chapter", "07", "--oracle", "localhost"], "host:port"),
    (["chief", "--chapter", "09"], "Optuna"),
    (["chief", "--chapter", "07", "--input", "raw"], "chapter 03's option"),
])
def test_the_command_line_names_the_fix_for_a_wrong_setup(arguments, message, capsys, monkeypatch):
    for name in KT_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        tuning.main(arguments)
    assert message in capsys.readouterr().err

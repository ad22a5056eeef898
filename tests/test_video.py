"""The video chapter's library: clips, the study's augmentation, the 3D layers against Keras' own, the
search storage shared by worker processes, and the folds it evaluates on."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from fer_lib import experiment, video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(ck_sample):
    return video.ckplus_clips(ck_sample, clip_length=10, frame_size=48)


def test_one_clip_per_sequence_in_frame_order_padded_with_the_last_frame(ck_sample, clips):
    assert len(clips) == len(ck_sample) // 3  # CK+48: three frames per sequence
    first = clips.ids[0]
    subject, sequence = first.split("_")
    members = np.flatnonzero((ck_sample.subject == subject) & (ck_sample.meta["sequence"] == int(sequence)))
    in_order = ck_sample.images[members[np.argsort(ck_sample.meta["frame"][members])]]
    assert np.array_equal(clips.frames[0, :3], in_order)
    assert all(np.array_equal(clips.frames[0, t], in_order[-1]) for t in range(3, 10))
    assert clips.n_real.tolist() == [3] * len(clips)
    assert np.array_equal(clips.last_frames[0], in_order[-1])
    assert clips.labels[0] == ck_sample.labels[members[0]]
    short = video.ckplus_clips(ck_sample, clip_length=2, frame_size=24)
    assert short.frames.shape[1:] == (2, 24, 24)
    assert np.array_equal(short.frames[0], video.resize_frames(in_order[-2:], 24))


def test_sequences_with_two_labels_are_refused(ck_sample):
    broken = ck_sample.subset(np.arange(len(ck_sample)))
    broken.labels = broken.labels.copy()
    broken.labels[0] = (broken.labels[0] + 1) % len(broken.class_names)
    with pytest.raises(ValueError, match="different labels"):
        video.ckplus_clips(broken)


def test_the_study_augmentation_adds_its_copies_per_class_with_one_transform_per_clip(clips):
    x, y = clips.frames, clips.labels
    augmented, labels = video.augment_clips(x, y, clips.class_names, seed=3)
    for index, name in enumerate(clips.class_names):
        copies = sum(video.STUDY_AUGMENTATION[name])
        assert (labels == index).sum() == (y == index).sum() * (1 + copies)
    assert np.array_equal(augmented[:len(x)], x)  # the originals first, untouched
    contempt = int(np.flatnonzero(y == clips.class_names.index("contempt"))[0])
    offset = len(x) + sum(sum(video.STUDY_AUGMENTATION[clips.class_names[label]]) for label in y[:contempt])
    flip, first_rotation = augmented[offset], augmented[offset + 1]
    assert np.array_equal(flip, x[contempt][..., ::-1])
    # the three real frames differ, the padded ones are copies: one rotation for the whole clip keeps that
    assert all(np.array_equal(first_rotation[t], first_rotation[2]) for t in range(3, 10))
    assert not np.array_equal(first_rotation[0], x[contempt][0])
    again, _ = video.augment_clips(x, y, clips.class_names, seed=3)
    assert np.array_equal(again, augmented)
    with_channel, _ = video.augment_clips(x[..., None].astype("float32"), y, clips.class_names, seed=3)
    assert np.abs(with_channel[..., 0] - augmented).max() <= 1  # the same draws; uint8 copies are rounded


@pytest.mark.parametrize("frames", [5, 3, 1])
@pytest.mark.parametrize("temporal_kernel", [1, 3, 5, 7, 9])
def test_spatiotemporal_conv_equals_keras_conv3d(temporal_kernel, frames):
    """Also where the kernel is longer than the clip (its outer taps see only padding and are skipped)."""
    x = np.random.default_rng(0).normal(size=(2, frames, 8, 8, 3)).astype("float32")
    ours = video.SpatioTemporalConv(4, temporal_kernel)
    ours.build(x.shape)
    reference = keras.layers.Conv3D(4, (temporal_kernel, 3, 3), padding="same", use_bias=False)
    reference.build(x.shape)
    kernel = ours.conv.kernel.numpy().reshape(3, 3, temporal_kernel, 3, 4)
    reference.kernel.assign(np.transpose(kernel, (2, 0, 1, 3, 4)))
    assert np.allclose(np.asarray(ours(x)), np.asarray(reference(x)), atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        video.SpatioTemporalConv(4, 2)


@pytest.mark.parametrize("mode,layer", [("max", keras.layers.MaxPooling3D), ("average", keras.layers.AveragePooling3D)])
@pytest.mark.parametrize("frames", [3, 4, 10])
def test_pool3d_equals_keras_pooling(mode, layer, frames):
    x = np.random.default_rng(1).normal(size=(2, frames, 6, 6, 2)).astype("float32")
    for temporal_pool, temporal_stride in video.BLOCK_POOLING:
        ours = np.asarray(video.Pool3D(temporal_pool, temporal_stride, mode=mode)(x))
        reference = np.asarray(layer((temporal_pool, 2, 2), strides=(temporal_stride, 2, 2), padding="same")(x))
        assert ours.shape == reference.shape
        assert np.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("options", [
    {"activation": "prelu", "second_conv": True, "pooling": "average", "temporal_kernel": 5, "normalise": False},
    {"activation": "mish", "initializer": "glorot_normal", "dropout": 0.5, "temporal_kernel": 1},
])
def test_study_cnn3d_builds_predicts_and_reloads(tmp_path, options):
    from fer_lib import training

    model = video.study_cnn3d(7, clip_length=3, frame_size=48, **options)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 3, 48, 48, 1)).astype("float32")
    before = model.predict(x, verbose=0)
    assert before.shape == (2, 7) and np.allclose(before.sum(1), 1, atol=1e-5)
    model.save(tmp_path / "m.keras")
    assert np.allclose(training.load_model(tmp_path / "m.keras").predict(x, verbose=0), before, atol=1e-6)
    assert video.KERAS_BN_MOMENTUM == 0.9


def test_lookahead_pulls_the_weights_back_towards_the_slow_copy():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    start = [w.numpy().copy() for w in model.trainable_weights]
    x, y = np.ones((5, 2), "float32"), np.full((5, 1), 10.0, "float32")
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    plain.compile(keras.optimizers.SGD(0.1), "mse")
    plain.fit(x, y, batch_size=1, epochs=1, verbose=0, shuffle=False)
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, shuffle=False, callbacks=[video.Lookahead(k=5, alpha=0.5)])
    moved_plain = np.abs(plain.get_weights()[0] - start[0]).sum()
    moved = np.abs(model.get_weights()[0] - start[0]).sum()
    assert 0 < moved < moved_plain  # five fast steps, then half-way back to the start


def test_oulu_casia_layout_is_read_and_bad_sequences_are_counted(tmp_path, capsys):
    base = tmp_path / "VL" / "Strong"
    rng = np.random.default_rng(0)
    for subject, expression, n in (("P001", "Anger", 4), ("P001", "Happiness", 12), ("P002", "Surprise", 2)):
        folder = base / subject / expression
        folder.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:03d}.jpeg"), rng.integers(0, 255, (60, 50, 3), dtype=np.uint8))
    (base / "P002" / "Bored").mkdir()
    (base / "P002" / "Fear").mkdir()  # no frames
    clips = video.load_oulu_casia(tmp_path, clip_length=10, frame_size=32)
    assert clips.frames.shape == (3, 10, 32, 32)
    assert [clips.class_names[i] for i in clips.labels] == ["angry", "happy", "surprise"]
    assert clips.n_real.tolist() == [4, 10, 2]
    assert clips.subject.tolist() == ["P001", "P001", "P002"]
    out = capsys.readouterr().out
    assert "unknown expression folder: P002/Bored" in out and "no readable frames: P002/Fear" in out
    with pytest.raises(FileNotFoundError, match="VL/Strong"):
        video.load_oulu_casia(tmp_path / "elsewhere")


def test_folds_never_share_a_subject_and_variants_keep_the_clips(ck_sample, clips):
    for scheme in ("loso", 3):
        folds = experiment.subject_folds(clips.subject, clips.labels, scheme)
        assert sorted(np.concatenate(folds).tolist()) == list(range(len(clips)))
        for fold in folds:
            assert not set(clips.subject[fold]) & set(np.delete(clips.subject, fold))
    base = video.VideoExperiment(clips.subset(np.arange(10)))
    longer, config = base.variant(video.VideoConfig(), {"clips": {"clip_length": 4}, "config": {"clahe": True}},
                                  dataset=ck_sample)
    assert longer.clips.frames.shape[1] == 4 and np.array_equal(longer.clips.ids, base.clips.ids)
    assert config.clahe and not video.VideoConfig().clahe
    with pytest.raises(ValueError, match="config, training or clips"):
        base.variant(video.VideoConfig(), {"epochs": 3})


def test_compare_folds_pairs_fold_accuracies_and_clips():
    import pandas as pd

    y = np.array([0, 1, 0, 1, 0, 1])
    folds = pd.DataFrame({"test images": [3, 3], "accuracy": [1.0, 1 / 3]})
    a = experiment.CrossValidated({}, folds, np.eye(2)[y], [])
    b_pred = np.array([0, 1, 1, 1, 0, 0])
    b = experiment.CrossValidated({}, folds.assign(accuracy=[2 / 3, 2 / 3]), np.eye(2)[b_pred], [])
    compared = experiment.compare_folds(a, b, y)
    assert compared["accuracy_a"] == 1.0 and compared["accuracy_b"] == pytest.approx(4 / 6)
    assert compared["folds_a_better"] == 1 and compared["folds_b_better"] == 1
    with pytest.raises(ValueError, match="same folds"):
        experiment.compare_folds(a, experiment.CrossValidated({}, folds.iloc[:1], np.eye(2)[y], []), y)


def test_journal_and_sqlite_locations_open_the_same_kind_of_study(tmp_path):
    import optuna

    for location in (tmp_path / "search.log", tmp_path / "search.db"):
        study = video.open_study(location, "s", seed=0)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        again = video.open_study(location, "s", seed=0)
        assert len(again.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in again.trials)


def test_a_resumed_worker_draws_new_configurations_and_the_same_ones_as_an_uninterrupted_run(tmp_path):
    """A plain seeded TPESampler restarts its random stream in every process, so a resumed search proposed
    trials 0, 1, … again; the trial-seeded sampler draws by (seed, trial number)."""

    def search(location, n_trials):
        study = video.open_study(location, "s", seed=0)  # a new sampler, as in a new process
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("k", 1, 9), n_trials=n_trials)
        return [tuple(t.params.values()) for t in study.trials]

    search(tmp_path / "resumed.db", 2)
    resumed = search(tmp_path / "resumed.db", 2)
    assert len(resumed) == 4 and len(set(resumed)) == 4
    assert search(tmp_path / "straight.db", 4) == resumed


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    """Two `python -m fer_lib.video search` workers on one SQLite study finish the requested trials between
    them: each trial finished once, by one worker, none left running or lost; a surplus one is marked."""
    import optuna

    storage, n_trials = f"sqlite:///{tmp_path / 'shared.db'}", 2
    command = [sys.executable, "-m", "fer_lib.video", "search", "--profile", "smoke", "--storage", storage,
               "--trials", str(n_trials), "--study", "two-workers"]
    env = {**os.environ, "FER_BOOK_ROOT": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [subprocess.Popen(command + ["--seed", str(seed)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), "\n----\n".join(o[-2500:] for o in outputs)
    study = optuna.load_study(study_name="two-workers", storage=storage)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.number for t in finished) == list(range(n_trials))
    for trial in finished:
        assert len([k for k in trial.user_attrs if k.startswith("run_by:")]) == 1  # run once, by one worker
        if trial.state.name == "COMPLETE":
            assert len(trial.user_attrs["predictions"]) == 21  # every sample clip has a slot
    for trial in study.trials:
        if trial not in finished:
            assert trial.state.name == "FAIL" and trial.user_attrs.get("surplus"), trial
    ran = sum(int(output.rsplit("ran ", 1)[1].split(" ")[0]) for output in outputs)
    assert ran == n_trials


def test_multiply_adds_count_only_the_taps_that_see_frames():
    # 3 frames of 4x4, widths 2: block sizes (T, side) = (3, 4), (3, 2), (2, 1), (1, 1)
    one = video.multiply_adds(video.VideoConfig(temporal_kernel=1), 3, 4, widths=(2, 2, 2, 2))
    assert one == 3 * 16 * 9 * 1 * 2 + 3 * 4 * 9 * 2 * 2 + 2 * 1 * 9 * 2 * 2 + 1 * 1 * 9 * 2 * 2
    five = video.multiply_adds(video.VideoConfig(temporal_kernel=5), 3, 4, widths=(2, 2, 2, 2))
    assert five == 5 * 3 * 16 * 9 * 2 + 5 * 3 * 4 * 9 * 4 + 3 * 2 * 9 * 4 + 1 * 9 * 4  # taps 5, 5, 3, 1
    nine = video.multiply_adds(video.VideoConfig(temporal_kernel=9), 3, 4, widths=(2, 2, 2, 2))
    assert nine == five  # on 3 frames a 9-frame kernel reaches no further than a 5-frame one
    second = video.multiply_adds(video.VideoConfig(temporal_kernel=1, second_conv=True), 3, 4, widths=(2, 2, 2, 2))
    assert second == one + 3 * 16 * 9 * 2 * 2 + 3 * 4 * 9 * 2 * 2  # one more 2→2 convolution in blocks 1 and 2


def test_selection_rules_best_and_one_standard_error():
    import pandas as pd

    scores = pd.Series({0: 0.80, 1: 0.85, 2: 0.84, 3: 0.70})
    cost = pd.Series({0: 1.0, 1: 10.0, 2: 3.0, 3: 0.5})
    assert video.choose(scores, cost, 300, "best") == 1
    # one standard error at 0.85 on 300 clips is 2.1 points: trials 1 and 2 qualify, 2 is cheaper
    assert video.choose(scores, cost, 300, "one_se") == 2
    assert video.choose(scores, cost, 100_000, "one_se") == 1  # many clips: only the best is within reach
    with pytest.raises(ValueError, match="one_se"):
        video.choose(scores, cost, 300, "cheapest")

"""The intro's results at a glance, generated from records written to a scratch book root."""
from __future__ import annotations

import numpy as np
import pytest

from fer_lib import glance, results

PROFILE = "glancetest"


def write(chapter, representation, model, *, correct, val_accuracy, dataset="fer2013", label_set="emotion7",
          split="PrivateTest", n=40, n_split=None, **extra):
    """A record whose accuracy is correct/n on n faces of 2 classes, with the given selection accuracy."""
    y_true = np.arange(n) % 2
    y_pred = np.where(np.arange(n) < correct, y_true, 1 - y_true)
    metrics = results.evaluate(y_true, y_pred, ["a", "b"], n_split=n_split, n_boot=50)
    results.write_record(results.make_record(
        metrics, chapter=chapter, representation=representation, model=model, dataset=dataset, label_set=label_set,
        split=split, profile=PROFILE, seed=0, train_seconds=1.0, extract_ms_per_image=0.0, infer_ms_per_image=0.1,
        n_params=10, val_accuracy=val_accuracy, **extra))


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))  # results/<profile>/ is looked up under the book root
    return tmp_path


def test_no_records_says_so(scratch_root):
    text = glance.at_a_glance(PROFILE)
    assert "No results are recorded" in text and "|" not in text


def test_rows_are_chosen_on_the_selection_split_and_link_only_to_present_chapters(scratch_root):
    # the higher PrivateTest accuracy loses: PublicTest (val_accuracy) chooses
    write("03_rq1_2d", "pixels_2d", "big_cnn", correct=36, val_accuracy=0.50)
    write("03_rq1_2d", "pixels_2d", "small_cnn", correct=30, val_accuracy=0.60)
    write("04_rq2_1_landmarks", "landmarks_3d", "landmark_mlp", correct=20, val_accuracy=0.55, n_split=50)
    write("04_rq2_1_landmarks", "landmarks_3d", "ensemble", correct=40, val_accuracy=0.99, members=["a", "b"])
    # the video protocol only lets the study's configuration compete, not its ablations
    write("09_video", "video_clip", "study_cnn3d_10fold", correct=34, val_accuracy=0.70, dataset="ckplus48",
          label_set="ckplus7", split="10fold", n_folds=3)
    write("09_video", "video_clip", "ablation_x_10fold", correct=10, val_accuracy=0.90, dataset="ckplus48",
          label_set="ckplus7", split="10fold")
    # folds of clips put a subject on both sides: not the study's subject-grouped protocol
    write("09_video", "video_clip", "study_cnn3d_10fold_clips", correct=39, val_accuracy=0.95, dataset="ckplus48",
          label_set="ckplus7", split="10fold_clips")
    text = glance.at_a_glance(PROFILE, chapters=["03_rq1_2d"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    pixels = next(row for row in rows if "2D pixels" in row)
    assert "small_<wbr>cnn" in pixels and "75.0 %" in pixels and "big" not in text
    assert pixels.startswith("| {doc}`2D pixels <03_rq1_2d>`") and "62 % (3DFER, 2D CNN)" in pixels
    landmarks = next(row for row in rows if "landmarks" in row)
    assert "landmark_<wbr>mlp" in landmarks and "{doc}" not in landmarks  # chapter 4 is not in this book
    assert "50.0 %" in landmarks and "80.0 %" in landmarks  # accuracy on the faces found; coverage 40 of 50
    video = next(row for row in rows if "3D-CNN on video" in row)
    assert "study_<wbr>cnn3d_<wbr>10fold" in video and "85.0 %" in video and "100 %" in video
    assert "3 subject-grouped folds" in video  # the record's own number of folds, not the protocol's name
    assert "ablation" not in text and "ensemble" not in text and "clips)" not in text
    assert f"the **{PROFILE}** profile's numbers" in text  # not the full profile: says the numbers are no results
    assert "voxel grid" in text and "execute chapter 05_rq2_2_voxels" in text  # missing representations are named
    assert text.count("```{table}") == 2 and text.count("\n```\n") == 2

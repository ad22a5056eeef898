"""The data layer on real images: every layout users have gives the same dataset, and bad input is counted."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

import fer_lib
from fer_lib.data import FER2013_CODES, FER2013_STANDARD_SIZES, locate_fer2013

from .conftest import SAMPLE, full_data_dir


def test_sample_archives_load_with_canonical_labels(fer_sample, ck_sample, jaffe_sample):
    assert fer_sample.images.shape[1:] == (48, 48) and fer_sample.images.dtype == np.uint8
    assert fer_sample.class_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert fer_sample.splits == ["Training", "PublicTest", "PrivateTest"]
    assert ck_sample.class_names == ("angry", "contempt", "disgust", "fear", "happy", "sad", "surprise")
    assert jaffe_sample.images.shape[1:] == (256, 256)
    for dataset in (fer_sample, ck_sample, jaffe_sample):
        assert len(set(dataset.ids)) == len(dataset), f"{dataset.name} ids are not unique"
        assert dataset.report.n_skipped == 0


def test_jaffe_labels_are_mapped_by_name_not_index(jaffe_sample):
    # JAFFE's own index 0 is neutral; its file names carry the expression code (KA.NE1.26 is neutral).
    codes = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad", "SU": "surprise"}
    for image_id, label in zip(jaffe_sample.ids, jaffe_sample.label_names):
        assert codes[image_id.split(".")[1][:2]] == label


def test_ckplus_subject_sequence_and_frame_come_from_file_names(ck_sample):
    for image_id, subject, sequence, frame in zip(ck_sample.ids, ck_sample.subject,
                                                  ck_sample.meta["sequence"], ck_sample.meta["frame"]):
        s, q, f = image_id.split("_")
        assert subject == s and int(q) == sequence and int(f) == frame
    # The sample keeps whole sequences: three frames each.
    per_sequence = pd.Series(list(zip(ck_sample.subject, ck_sample.meta["sequence"]))).value_counts()
    assert set(per_sequence) == {3}


def _write_kaggle_csv(dataset, path, extra_rows=()):
    inverse = {name: code for code, name in enumerate(FER2013_CODES)}
    rows = [
        (str(inverse[label]), " ".join(map(str, image.ravel())), split)
        for image, label, split in zip(dataset.images, dataset.label_names, dataset.split)
    ]
    table = pd.DataFrame([*rows, *extra_rows], columns=["emotion", "pixels", "Usage"])
    table.to_csv(path, index=False)


def test_kaggle_csv_reads_the_same_images_and_counts_bad_rows(fer_sample, tmp_path):
    good = " ".join(["7"] * 2304)
    bad_rows = [
        ("3", " ".join(["7"] * 2000), "Training"),  # wrong pixel count
        ("9", good, "PublicTest"),  # unknown label
        ("2", good, "Validation"),  # unknown usage
        ("4", good.replace("7", "x", 1), "PrivateTest"),  # non-numeric pixel
    ]
    _write_kaggle_csv(fer_sample, tmp_path / "fer2013.csv", bad_rows)
    with pytest.warns(UserWarning, match="skipped 4"):
        from_csv = fer_lib.load_fer2013(tmp_path)
    np.testing.assert_array_equal(from_csv.images, fer_sample.images)
    np.testing.assert_array_equal(from_csv.label_names, fer_sample.label_names)
    np.testing.assert_array_equal(from_csv.split, fer_sample.split)
    assert dict(from_csv.report.skipped) == {
        "wrong pixel count": 1, "unknown label": 1, "unknown usage": 1, "non-numeric pixels": 1,
    }
    # Problems name the csv line an editor shows (header is line 1).
    assert any(p.startswith(f"wrong pixel count: line {len(fer_sample) + 2}") for p in from_csv.report.problems)


def test_csv_with_wrong_columns_says_what_it_expects(tmp_path):
    (tmp_path / "fer2013.csv").write_text("label,image\n0,1 2 3\n")
    with pytest.raises(ValueError, match="emotion, pixels, Usage"):
        fer_lib.load_fer2013(tmp_path)


def test_image_folders_read_split_from_prefix_and_list_bad_files(fer_sample, tmp_path):
    for image, label, image_id, split in zip(fer_sample.images, fer_sample.label_names, fer_sample.ids, fer_sample.split):
        folder = tmp_path / ("train" if split == "Training" else "test") / label
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{image_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (tmp_path / "test" / "happy" / "PrivateTest_1.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(tmp_path / "test" / "sad" / "face.jpg"), fer_sample.images[0])
    with pytest.warns(UserWarning, match="skipped 2"):
        from_folders = fer_lib.load_fer2013(tmp_path)
    order = np.argsort(from_folders.ids)
    expected = np.argsort(fer_sample.ids)
    np.testing.assert_array_equal(from_folders.ids[order], fer_sample.ids[expected])
    np.testing.assert_array_equal(from_folders.split[order], fer_sample.split[expected])
    np.testing.assert_array_equal(from_folders.label_names[order], fer_sample.label_names[expected])
    # JPEG is lossy: pixels agree to a couple of grey levels on average.
    difference = np.abs(from_folders.images[order].astype(int) - fer_sample.images[expected]).mean()
    assert difference < 3
    assert from_folders.report.skipped["unreadable image"] == 1
    assert from_folders.report.skipped["file name without Training_/PublicTest_/PrivateTest_ prefix"] == 1
    assert any("PrivateTest_1.jpg" in p for p in from_folders.report.problems)


def test_ckplus_folder_layout_matches_the_archive(ck_sample, tmp_path):
    for image, label, image_id in zip(ck_sample.images, ck_sample.label_names, ck_sample.ids):
        folder = tmp_path / "CK+48" / {"angry": "anger", "sad": "sadness"}.get(label, label)
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{image_id}.png"), image)
    from_folders = fer_lib.load_ckplus(tmp_path)
    order, expected = np.argsort(from_folders.ids), np.argsort(ck_sample.ids)
    np.testing.assert_array_equal(from_folders.images[order], ck_sample.images[expected])  # PNG: lossless
    np.testing.assert_array_equal(from_folders.label_names[order], ck_sample.label_names[expected])
    np.testing.assert_array_equal(from_folders.subject[order], ck_sample.subject[expected])


def test_jaffe_tiff_folder_matches_the_archive(jaffe_sample, tmp_path):
    folder = tmp_path / "jaffe"
    folder.mkdir()
    for image, image_id in zip(jaffe_sample.images, jaffe_sample.ids):
        cv2.imwrite(str(folder / f"{image_id}.tiff"), image)
    (folder / "README.txt").write_text("not an image: ignored")
    (folder / "KA.XX1.99.tiff").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1"):
        from_folder = fer_lib.load_jaffe(tmp_path)
    order, expected = np.argsort(from_folder.ids), np.argsort(jaffe_sample.ids)
    np.testing.assert_array_equal(from_folder.images[order], jaffe_sample.images[expected])
    np.testing.assert_array_equal(from_folder.label_names[order], jaffe_sample.label_names[expected])
    assert from_folder.report.skipped["unknown expression code"] == 1


@pytest.mark.parametrize("loader, expected", [
    (fer_lib.load_fer2013, "fer2013.csv"), (fer_lib.load_ckplus, "CK+48"), (fer_lib.load_jaffe, "KA.AN1.39.tiff"),
])
def test_missing_data_names_the_expected_files_and_the_fix(loader, expected, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        loader(tmp_path / "nowhere")
    message = str(error.value)
    assert expected in message and "FER_DATA_DIR" in message and "sample" in message


def test_data_location_parameter_then_environment_then_data_folder(monkeypatch, tmp_path, fer_sample):
    _write_kaggle_csv(fer_sample.subset(np.arange(10)), tmp_path / "fer2013.csv")
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path))
    assert locate_fer2013(None) == ("csv", tmp_path / "fer2013.csv")
    assert locate_fer2013(SAMPLE)[0] == "npz"  # an explicit parameter wins over the environment
    monkeypatch.delenv("FER_DATA_DIR")
    with pytest.raises(FileNotFoundError, match=r"data"):
        locate_fer2013(None)  # data/ holds only the sample folder


def test_subset_keeps_ids_aligned_and_stratifies(fer_sample):
    small = fer_sample.stratified_subset(per_class=2, seed=1)
    assert (small.counts().drop(index="total").drop(columns="total").to_numpy() == 2).all()
    position = {image_id: i for i, image_id in enumerate(fer_sample.ids)}
    for image, label, image_id in zip(small.images, small.labels, small.ids):
        np.testing.assert_array_equal(image, fer_sample.images[position[image_id]])
        assert label == fer_sample.labels[position[image_id]]


@pytest.mark.skipif(full_data_dir() is None, reason="full FER2013 not available ($FER_DATA_DIR)")
def test_full_fer2013_has_the_standard_split():
    fer = fer_lib.load_fer2013(full_data_dir())
    totals = fer.counts().loc["total"].drop("total").to_dict()
    assert totals == FER2013_STANDARD_SIZES
    assert fer.counts()["Training"].drop("total").to_dict() == {
        "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171, "neutral": 4965,
    }
    assert len(set(fer.ids)) == len(fer)


def test_fer2013_ids_stay_unique_when_two_class_folders_reuse_a_file_name():
    from fer_lib.data import fer2013_ids

    ids = fer2013_ids(["Training", "Training", "PrivateTest"], [8475486, 8475486, 8475486],
                      ["angry", "surprise", "angry"])
    assert ids == ["Training_8475486_angry", "Training_8475486_surprise", "PrivateTest_8475486"]


def test_stratified_indices_cap_each_class_per_split_and_stay_integer(fer_sample):
    from fer_lib.data import TRAIN

    index = fer_sample.stratified_indices(5, seed=1, splits=(TRAIN,))
    assert index.dtype.kind == "i" and (np.diff(index) > 0).all()
    assert (fer_sample.split[index] == TRAIN).all()
    assert np.bincount(fer_sample.labels[index], minlength=7).tolist() == [5] * 7
    np.testing.assert_array_equal(index, fer_sample.stratified_indices(5, seed=1, splits=(TRAIN,)))

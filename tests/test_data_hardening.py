"""The loaders on damaged and unusual inputs, each built in tmp_path from the committed sample: one bad
item is a counted skip naming it, a bad source is refused naming the file and the fix, and unusual
pixels come out as the picture they hold."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fer_lib
from fer_lib.data import FER2013_CODES, FER2013_NPZ, JAFFE_NPZ

from .conftest import SAMPLE

FOLDER = {"angry": "anger", "sad": "sadness"}  # CK+48's folder names


def _loaded(loader, path):
    """Load, returning the dataset and the text of every warning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = loader(path)
    return dataset, "\n".join(str(w.message) for w in caught)


def _fer_folders(dataset, root, extension="png"):
    for image, label, image_id, split in zip(dataset.images, dataset.label_names, dataset.ids, dataset.split):
        folder = root / ("train" if split == "Training" else "test") / label
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{image_id}.{extension}"), image)


def _ck_folders(dataset, root):
    for image, label, image_id in zip(dataset.images, dataset.label_names, dataset.ids):
        folder = root / "CK+48" / FOLDER.get(label, label)
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{image_id}.png"), image)
    return root / "CK+48"


def _jaffe_folder(dataset, root):
    folder = root / "jaffe"
    folder.mkdir(parents=True)
    for image, image_id in zip(dataset.images, dataset.ids):
        cv2.imwrite(str(folder / f"{image_id}.tiff"), image)
    return folder


@pytest.fixture(scope="module")
def fer_small(fer_sample):
    return fer_sample.stratified_subset(2, seed=3)  # 2 per class and split: 42 faces


def _write_csv(dataset, path):
    inverse = {name: code for code, name in enumerate(FER2013_CODES)}
    pd.DataFrame(
        [(str(inverse[label]), " ".join(map(str, image.ravel())), split)
         for image, label, split in zip(dataset.images, dataset.label_names, dataset.split)],
        columns=["emotion", "pixels", "Usage"],
    ).to_csv(path, index=False)


# --- an emotion outside the dataset's label set: one counted skip per file, not an abort -----------

def test_emotion_outside_the_label_set_is_a_counted_skip_naming_the_file(fer_small, ck_sample, jaffe_sample, tmp_path):
    _fer_folders(fer_small, tmp_path / "fer")
    (tmp_path / "fer" / "train" / "contempt").mkdir()
    cv2.imwrite(str(tmp_path / "fer" / "train" / "contempt" / "Training_1.png"), fer_small.images[0])
    fer, said = _loaded(fer_lib.load_fer2013, tmp_path / "fer")
    assert len(fer) == len(fer_small) and "contempt" not in fer.emotions
    assert any("contempt/Training_1.png: contempt" in p and "label set emotion7 (angry, disgust" in p
               for p in fer.report.problems), fer.report.problems
    assert "skipped 1" in said

    ck_root = _ck_folders(ck_sample.subset(np.arange(12)), tmp_path / "ck")
    (ck_root / "neutral").mkdir()
    cv2.imwrite(str(ck_root / "neutral" / "S010_001_00000001.png"), ck_sample.images[0])
    ck, _ = _loaded(fer_lib.load_ckplus, tmp_path / "ck")
    assert len(ck) == 12 and ck.report.n_skipped == 1
    assert "neutral/S010_001_00000001.png: neutral" in ck.report.problems[0] and "ckplus7" in ck.report.problems[0]

    folder = _jaffe_folder(jaffe_sample, tmp_path / "jf")
    cv2.imwrite(str(folder / "KA.CO1.99.tiff"), jaffe_sample.images[0])
    jaffe, _ = _loaded(fer_lib.load_jaffe, tmp_path / "jf")
    assert len(jaffe) == len(jaffe_sample) and jaffe.report.n_skipped == 1
    assert "KA.CO1.99.tiff: contempt" in jaffe.report.problems[0]


def test_a_source_without_one_usable_image_is_refused_with_the_reasons(fer_small, tmp_path):
    folder = tmp_path / "train" / "contempt"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "Training_1.png"), fer_small.images[0])
    with pytest.raises(ValueError, match=r"not one usable fer2013 image .*emotion not in label set emotion7"):
        fer_lib.load_fer2013(tmp_path)


# --- the csv: every bad row a counted skip at its real line; a bad file refused ----------------------

def test_csv_rows_that_break_the_parser_are_counted_at_their_real_line_numbers(fer_small, tmp_path):
    path = tmp_path / "fer2013.csv"
    _write_csv(fer_small, path)
    lines = path.read_text().splitlines(keepends=True)
    good = lines[1].rstrip("\n")
    lines[3:3] = ["\n", "   \n"]  # blank lines: pandas dropped them and every later line number drifted
    lines.insert(6, good + ",extra\n")  # a row with an extra field (pandas: ParserError naming no file)
    lines.insert(7, "٣" + good[1:] + "\n")  # Arabic-Indic three: int() reads it as 3
    lines.insert(8, "³" + good[1:] + "\n")  # superscript three: isdigit() but int() raises
    emotion, pixels, usage = good.split(",")
    lines.insert(9, ",".join([emotion, "٣" + pixels[pixels.index(" "):], usage]) + "\n")  # a non-ASCII pixel digit
    path.write_text("".join(lines))
    csv_data, said = _loaded(fer_lib.load_fer2013, tmp_path)
    assert len(csv_data) == len(fer_small)
    assert dict(csv_data.report.skipped) == {"wrong number of fields": 1, "unknown label": 2, "non-numeric pixels": 1}
    # the line numbers an editor shows (header = line 1), blank lines counted
    assert csv_data.report.problems == [
        "wrong number of fields: line 7: 4 fields, the header has 3",
        "unknown label: line 8: emotion='٣'", "unknown label: line 9: emotion='³'", "non-numeric pixels: line 10"]
    # the good rows keep their ids: rows count data records, not lines
    assert csv_data.ids[:3].tolist() == ["csv_row00000", "csv_row00001", "csv_row00002"]
    np.testing.assert_array_equal(csv_data.images, fer_small.images)
    assert "skipped 4" in said


@pytest.mark.parametrize("content, message", [
    ("", r"is empty \(0 bytes\).*re-download fer2013.csv"),
    ("\n\n  \n", r"only blank lines.*re-download"),
    ("emotion,pixels,Usage\n", r"header but no data rows.*re-download"),
])
def test_an_empty_or_header_only_csv_is_refused_naming_the_file(content, message, tmp_path):
    (tmp_path / "fer2013.csv").write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        fer_lib.load_fer2013(tmp_path)
    assert str(tmp_path / "fer2013.csv") in str(error.value)


# --- a damaged archive: refused naming the path and the fix -----------------------------------------

def test_a_damaged_npz_is_refused_naming_the_path_and_the_fix(tmp_path):
    whole = (SAMPLE / JAFFE_NPZ).read_bytes()
    cases = {
        "truncated": whole[: len(whole) // 2],
        "corrupted": whole[:2000] + bytes(200) + whole[2200:],  # inside the first member's data
        "not a zip": b"definitely not numpy",
    }
    (tmp_path / "one array").mkdir()
    np.save(tmp_path / "one array" / JAFFE_NPZ, np.zeros(3))  # a plain .npy under the archive's name
    (tmp_path / "one array" / (JAFFE_NPZ + ".npy")).rename(tmp_path / "one array" / JAFFE_NPZ)
    with pytest.raises(ValueError, match=r"holds a single array, not an .npz archive"):
        fer_lib.load_jaffe(tmp_path / "one array")
    for name, content in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / JAFFE_NPZ).write_bytes(content)
        with pytest.raises(ValueError, match=r"re-download it .* or re-export it") as error:
            fer_lib.load_jaffe(tmp_path / name)
        assert str(tmp_path / name / JAFFE_NPZ) in str(error.value), name
    arrays = dict(np.load(SAMPLE / FER2013_NPZ))
    del arrays["usage"]
    np.savez(tmp_path / FER2013_NPZ, **arrays)
    with pytest.raises(ValueError, match=r"lacks the array\(s\) \['usage'\]"):
        fer_lib.load_fer2013(tmp_path / FER2013_NPZ)


# --- pixels of other depths and ranges: the picture they hold, counted as conversions ----------------

def test_images_of_other_depths_and_ranges_load_as_the_picture_they_hold(ck_sample, jaffe_sample, tmp_path):
    few = ck_sample.subset(np.arange(6))
    root = _ck_folders(few, tmp_path / "ck")
    ids, images = few.ids, few.images
    files = [root / FOLDER.get(label, label) / f"{image_id}.png" for image_id, label in zip(ids, few.label_names)]
    Image.fromarray(images[0]).convert("I;16").save(files[0])  # 8-bit values in 16 bits: loaded all black
    cv2.imwrite(str(files[1]), images[1].astype(np.uint16) * 257)  # full-range 16-bit
    bgra = cv2.cvtColor(images[2], cv2.COLOR_GRAY2BGRA)
    bgra[:6, :, 3] = 0  # transparent top rows
    cv2.imwrite(str(files[2]), bgra)
    Image.fromarray(images[3]).convert("P").save(files[3])  # palette
    ck, said = _loaded(fer_lib.load_ckplus, tmp_path / "ck")
    np.testing.assert_array_equal(ck.images, images)  # sorted file order is the archive's here
    assert ck.report.converted == {"uint16 image holding 8-bit values": 1, "16-bit image reduced to 8 bits": 1,
                                   "transparent pixels (alpha ignored, grey of the colour channels kept)": 1}
    assert ck.report.n_skipped == 0 and "converted 3" in said

    # float TIFFs: 0..1 (OpenCV's 8-bit decode could not read them), 0..255, and a range no rule maps
    folder = _jaffe_folder(jaffe_sample.subset(np.arange(3)), tmp_path / "jf")
    for k, scale in enumerate((1 / 255, 1.0, -1 / 255)):
        cv2.imwrite(str(folder / f"{jaffe_sample.ids[k]}.tiff"), jaffe_sample.images[k].astype(np.float32) * scale)
    jaffe, _ = _loaded(fer_lib.load_jaffe, tmp_path / "jf")
    np.testing.assert_array_equal(jaffe.images, jaffe_sample.images[:2])
    assert jaffe.report.converted == {"float32 image scaled from 0..1": 1, "float32 image taken as 0..255": 1}
    assert jaffe.report.skipped == {"pixel values without a 0..255 rule": 1}
    assert f"{jaffe_sample.ids[2]}.tiff: negative values" in jaffe.report.problems[0]


def test_an_archive_of_float_images_is_scaled_or_refused(tmp_path):
    arrays = dict(np.load(SAMPLE / JAFFE_NPZ))
    np.savez(tmp_path / JAFFE_NPZ, **{**arrays, "images": arrays["images"] / np.float32(255)})
    jaffe, said = _loaded(fer_lib.load_jaffe, tmp_path)
    np.testing.assert_array_equal(jaffe.images, arrays["images"])
    assert jaffe.report.converted == {"float32 image scaled from 0..1": 1} and "converted 1" in said
    np.savez(tmp_path / JAFFE_NPZ, **{**arrays, "images": arrays["images"] * np.float32(2)})
    with pytest.raises(ValueError, match=r"float values above 255 .*re-export them as uint8"):
        fer_lib.load_jaffe(tmp_path)


# --- ids stay unique ---------------------------------------------------------------------------------

def test_two_files_with_one_name_give_one_image_and_a_counted_skip(ck_sample, jaffe_sample, tmp_path):
    root = _ck_folders(ck_sample.subset(np.arange(6)), tmp_path / "ck")
    first = ck_sample.ids[0]
    folder = root / FOLDER.get(ck_sample.label_names[0], ck_sample.label_names[0])
    cv2.imwrite(str(folder / f"{first}.PNG"), ck_sample.images[5])  # same stem, other extension
    other = root / "surprise"
    other.mkdir(exist_ok=True)
    cv2.imwrite(str(other / f"{first}.png"), ck_sample.images[0])  # the same frame filed under two classes
    ck, _ = _loaded(fer_lib.load_ckplus, tmp_path / "ck")
    assert len(ck) == 6 and len(set(ck.ids)) == 6
    assert ck.report.skipped == {"same name as another image in its folder": 1, "image id already taken": 1}
    assert any(f"{first}.png (kept {first}.PNG)" in p for p in ck.report.problems), ck.report.problems

    folder = _jaffe_folder(jaffe_sample, tmp_path / "jf")
    cv2.imwrite(str(folder / f"{jaffe_sample.ids[0]}.tif"), jaffe_sample.images[1])
    jaffe, _ = _loaded(fer_lib.load_jaffe, tmp_path / "jf")
    assert len(jaffe) == len(jaffe_sample) and len(set(jaffe.ids)) == len(jaffe)
    assert jaffe.report.skipped == {"same name as another image in its folder": 1}


# --- the flat layouts: what a nested folder holds is counted file by file ----------------------------

def test_a_nested_folder_is_not_read_and_each_of_its_files_is_counted(fer_small, jaffe_sample, tmp_path):
    _fer_folders(fer_small, tmp_path / "fer")
    nested = tmp_path / "fer" / "train" / "happy" / "augmented" / "flipped"
    nested.mkdir(parents=True)
    for k in range(3):
        cv2.imwrite(str(nested / f"Training_9{k}.png"), fer_small.images[k])
    (tmp_path / "fer" / "train" / "happy" / ".ipynb_checkpoints").mkdir()  # a tool's, passed over
    (tmp_path / "fer" / "train" / "stray.png").write_bytes(b"")  # not in any class folder
    fer, said = _loaded(fer_lib.load_fer2013, tmp_path / "fer")
    assert len(fer) == len(fer_small)
    assert fer.report.skipped == {"file in a nested folder (not read: the layout is flat)": 3,
                                  "file outside a class folder": 1}
    assert sum("augmented/flipped/Training_9" in p for p in fer.report.problems) == 3 and "skipped 4" in said

    folder = _jaffe_folder(jaffe_sample, tmp_path / "jf")
    (folder / "more").mkdir()
    cv2.imwrite(str(folder / "more" / "KA.HA9.99.tiff"), jaffe_sample.images[0])
    jaffe, _ = _loaded(fer_lib.load_jaffe, tmp_path / "jf")
    assert jaffe.report.skipped == {"file in a nested folder (not read: the layout is flat)": 1}


# --- a FER2013 image-folder tree without a split: loads, and says which split is missing -------------

@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_an_empty_or_missing_split_folder_is_warned_about_by_split(damage, fer_small, tmp_path):
    _fer_folders(fer_small.select_split("Training"), tmp_path)
    if damage == "empty":
        (tmp_path / "test").mkdir()
    fer, said = _loaded(fer_lib.load_fer2013, tmp_path)
    assert fer.splits == ["Training"] and len(fer) == 14
    assert "no PublicTest, PrivateTest images" in said and "test/<class>/PrivateTest_*" in said
    assert any("PrivateTest" in note for note in fer.report.notes)
    # the committed sample has all three splits: no such warning
    assert "no PublicTest" not in _loaded(fer_lib.load_fer2013, SAMPLE)[1]

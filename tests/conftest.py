"""Shared fixtures: the committed sample (real FER2013, CK+48 and JAFFE images) and helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import fer_lib
from fer_lib.paths import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(autouse=True)
def _book_root(monkeypatch):
    """Tests resolve the book root and data as a chapter does, whatever the working directory."""
    monkeypatch.setenv("FER_BOOK_ROOT", str(ROOT))


@pytest.fixture(scope="session")
def fer_sample():
    return fer_lib.load_fer2013(SAMPLE)


@pytest.fixture(scope="session")
def ck_sample():
    return fer_lib.load_ckplus(SAMPLE)


@pytest.fixture(scope="session")
def jaffe_sample():
    return fer_lib.load_jaffe(SAMPLE)


def full_data_dir() -> Path | None:
    """The full archives when this machine has them ($FER_DATA_DIR), else None."""
    path = os.environ.get(DATA_ENV)
    if path and (Path(path) / "fer2013_images_48x48.npz").is_file():
        return Path(path)
    return None


@pytest.fixture(scope="session")
def tiny(fer_sample):
    """Raw 48x48 model inputs: 10 Training and 4 PublicTest faces per class from the committed sample,
    as (x, y, x_val, y_val, n_classes)."""
    from fer_lib import pixels, preprocess
    from fer_lib.data import TRAIN, VAL

    faces = fer_sample.stratified_subset(10, splits=(TRAIN,))
    val = fer_sample.stratified_subset(4, splits=(VAL,))
    raw = preprocess.Preprocessing()
    return (pixels.model_inputs(faces, raw), faces.labels, pixels.model_inputs(val, raw), val.labels,
            len(faces.class_names))

"""Build the small stratified sample committed in ``data/sample`` (used by the sample/smoke profiles and tests).

The sample keeps the archives' exact file names and keys, so the loaders read it exactly as they read
the full data. It deliberately keeps a few of FER2013's known defects (blank frames, duplicate
groups) so the data-quality checks have something real to find on a fresh clone.

    python -m fer_lib.sample --source ../shared/data --out data/sample
    python -m fer_lib.sample --example-photo      # data/sample/example_photo.png, from the sample itself

The example photo (README's "Use the book's models", ``benchmarks/predict_speed.py``) is two JAFFE
sample faces, happy and surprised, on a 640×480 grey frame: a photo of the size a webcam gives, with
more than one face, made from the committed sample so that it is rebuilt exactly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .data import CKPLUS_NPZ, FER2013_NPZ, JAFFE_NPZ, _load_npz
from .quality import BLANK_MAX_STD

#: Images per class in each FER2013 split, CK+ sequences per class, JAFFE images per class.
FER2013_PER_CLASS = {"Training": 40, "PublicTest": 12, "PrivateTest": 12}
CKPLUS_SEQUENCES_PER_CLASS = 3
JAFFE_PER_CLASS = 3
FER2013_DEFECTS = {"blank": 2, "duplicate_groups": 3}
#: the example photo's file in the sample folder, and its faces (a JAFFE class each, left to right)
EXAMPLE_PHOTO = "example_photo.png"
EXAMPLE_LABELS = ("happy", "surprise")


def _fer2013_indices(a: dict, rng: np.random.Generator) -> np.ndarray:
    chosen = []
    for split, per_class in FER2013_PER_CLASS.items():
        for label in np.unique(a["labels"]):
            members = np.flatnonzero((a["usage"] == split) & (a["labels"] == label))
            chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    flat = a["images"].reshape(len(a["images"]), -1)
    blank = np.flatnonzero(flat.std(axis=1) < BLANK_MAX_STD)
    chosen.append(rng.choice(blank, size=FER2013_DEFECTS["blank"], replace=False))
    # Whole pairs of pixel-identical, non-blank images, so the duplicate finder has real groups to find.
    keys = np.ascontiguousarray(flat).view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    blank_groups = set(inverse[blank].tolist())
    pairs = [g for g in rng.permutation(np.flatnonzero(counts == 2)) if g not in blank_groups]
    for group in pairs[: FER2013_DEFECTS["duplicate_groups"]]:
        chosen.append(np.flatnonzero(inverse == group))
    return np.unique(np.concatenate(chosen))


def _ckplus_indices(a: dict, rng: np.random.Generator) -> np.ndarray:
    chosen = []
    sequences = a["subject"].astype(np.int64) * 1000 + a["sequence"]
    for label in np.unique(a["labels"]):
        candidates = np.unique(sequences[a["labels"] == label])
        for seq in rng.choice(candidates, size=min(CKPLUS_SEQUENCES_PER_CLASS, len(candidates)), replace=False):
            chosen.append(np.flatnonzero(sequences == seq))  # all frames of the sequence
    return np.unique(np.concatenate(chosen))


def _jaffe_indices(a: dict, rng: np.random.Generator) -> np.ndarray:
    chosen = []
    for label in np.unique(a["labels"]):
        members = np.flatnonzero(a["labels"] == label)
        # Prefer different subjects, so the sample still supports subject-independent folds.
        _, first_per_subject = np.unique(a["subject"][members], return_index=True)
        spread = rng.permutation(members[first_per_subject])
        chosen.append(spread[:JAFFE_PER_CLASS])
    return np.unique(np.concatenate(chosen))


def build_sample(source: Path, out: Path, seed: int = 2013) -> dict[str, int]:
    """Write the three sample archives to ``out``; returns the number of images in each."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, pick in ((FER2013_NPZ, _fer2013_indices), (CKPLUS_NPZ, _ckplus_indices), (JAFFE_NPZ, _jaffe_indices)):
        arrays = _load_npz(source / name)
        index = pick(arrays, rng)
        n = len(arrays["images"])
        sampled = {k: (v[index] if v.ndim and len(v) == n else v) for k, v in arrays.items()}
        np.savez_compressed(out / name, **sampled)
        sizes[name] = len(index)
    return sizes


def example_photo(labels=EXAMPLE_LABELS, sample_dir: Path | None = None) -> np.ndarray:
    """A 640×480 grey photo holding the first JAFFE sample image of each of ``labels`` (256×256 each), side
    by side, on a mid-grey frame."""
    from .data import load_jaffe
    from .paths import sample_data_dir

    jaffe = load_jaffe(sample_dir or sample_data_dir())
    unknown = [label for label in labels if label not in jaffe.class_names]
    if unknown or not 1 <= len(labels) <= 2:
        raise ValueError(f"one or two of JAFFE's classes {jaffe.class_names}, not {list(labels)}")
    photo = np.full((480, 640), 120, np.uint8)
    for slot, label in enumerate(labels):
        face = jaffe.images[np.flatnonzero(jaffe.labels == jaffe.class_names.index(label))[0]]
        left = 192 if len(labels) == 1 else 40 + 304 * slot
        photo[112:112 + face.shape[0], left:left + face.shape[1]] = face
    return photo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="folder with the full .npz archives")
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--example-photo", action="store_true",
                        help=f"write {EXAMPLE_PHOTO} to --out from the sample there (no --source needed)")
    args = parser.parse_args(argv)
    if args.example_photo:
        import cv2

        path = args.out / EXAMPLE_PHOTO
        cv2.imwrite(str(path), example_photo(sample_dir=args.out))
        print(f"{path}: {', '.join(EXAMPLE_LABELS)} on a 640×480 frame")
        return
    if args.source is None:
        parser.error("--source (the folder with the full archives) is needed to build the sample")
    for name, size in build_sample(args.source, args.out, args.seed).items():
        print(f"{name}: {size} images, {(args.out / name).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

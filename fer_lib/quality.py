"""Data-quality checks: exact duplicate images and blank images.

FER2013 was scraped from image search; it holds groups of pixel-identical images (sometimes across
splits, which leaks test images into training, and sometimes with different labels) and a few blank
frames. Chapter 01 counts them; later chapters can exclude them by id.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .data import FaceDataset

#: A frame whose pixel standard deviation is below this is blank. The shared FER2013 copy is JPEG,
#: so a constant frame comes back with about ±1 grey level of noise: std 0 would miss it.
BLANK_MAX_STD = 1.0


def blank_images(dataset: FaceDataset, max_std: float = BLANK_MAX_STD) -> pd.DataFrame:
    """One row per blank image: id, split, class, mean and standard deviation of its pixels."""
    flat = dataset.images.reshape(len(dataset), -1).astype(np.float32)
    std = flat.std(axis=1)
    hits = np.flatnonzero(std < max_std)
    return pd.DataFrame({
        "id": dataset.ids[hits], "split": dataset.split[hits], "class": dataset.label_names[hits],
        "mean": flat[hits].mean(axis=1).round(1), "std": std[hits].round(2),
    })


def duplicate_groups(dataset: FaceDataset) -> pd.DataFrame:
    """Every image that has a pixel-identical twin: one row per image with its group number.

    Groups are numbered in order of first appearance. Blank images are duplicates of each other too;
    use :func:`blank_images` to tell them apart.
    """
    flat = np.ascontiguousarray(dataset.images.reshape(len(dataset), -1))
    # Compare whole images as single opaque values: far faster than np.unique(axis=0) on rows.
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    in_group = counts[inverse] > 1
    members = np.flatnonzero(in_group)
    order = np.argsort(first)  # renumber groups by the position of their first image
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    table = pd.DataFrame({
        "group": rank[inverse[members]],
        "id": dataset.ids[members], "split": dataset.split[members], "class": dataset.label_names[members],
    })
    table["group"] = pd.factorize(table["group"], sort=True)[0]
    return table.sort_values(["group", "id"]).reset_index(drop=True)


def duplicate_summary(groups: pd.DataFrame) -> pd.Series:
    """Counts that matter for a protocol: groups, redundant copies, cross-split leaks, label conflicts."""
    per_group = groups.groupby("group")
    n_splits = per_group["split"].nunique()
    n_labels = per_group["class"].nunique()
    train_test = per_group["split"].agg(lambda s: "Training" in set(s) and "PrivateTest" in set(s))
    return pd.Series({
        "duplicate groups": int(per_group.ngroups),
        "images in groups": int(len(groups)),
        "redundant copies (images beyond the first of each group)": int(len(groups) - per_group.ngroups),
        "groups spanning more than one split": int((n_splits > 1).sum()),
        "groups with a Training and a PrivateTest copy (test leak)": int(train_test.sum()),
        "groups whose copies disagree on the label": int((n_labels > 1).sum()),
    })

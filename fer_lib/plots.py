"""Figures shared by the chapters."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data import FaceDataset


def image_grid_per_class(dataset: FaceDataset, per_class: int = 8, seed: int = 0, title: str | None = None):
    """One row per class, ``per_class`` random images each, titled with their ids (traceable)."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = len(dataset.class_names), per_class
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.45 * n_rows), squeeze=False)
    for row, name in enumerate(dataset.class_names):
        members = np.flatnonzero(dataset.labels == row)
        picks = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for col in range(n_cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if col < len(picks):
                index = picks[col]
                ax.imshow(dataset.images[index], cmap="gray", vmin=0, vmax=255)
                ax.set_title(str(dataset.ids[index]), fontsize=5)
            if col == 0:
                ax.set_ylabel(f"{name}\n(n={len(members)})", fontsize=8)
    fig.suptitle(title or f"{dataset.name}: {per_class} random images per class", fontsize=10)
    fig.tight_layout()
    return fig


def class_distribution(counts: pd.DataFrame, title: str):
    """Bar chart of a ``FaceDataset.counts()`` table (totals removed), one bar group per class."""
    table = counts.drop(index="total", columns="total", errors="ignore")
    ax = table.plot.bar(figsize=(8, 3.2), width=0.8)
    ax.set_ylabel("images")
    ax.set_xlabel("")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=0)
    ax.figure.tight_layout()
    return ax.figure


def image_strip(dataset: FaceDataset, indices, captions=None, ncols: int = 8, title: str | None = None):
    """The given images in rows of ``ncols``, each captioned (default: id, split and class)."""
    indices = list(indices)
    if captions is None:
        captions = [f"{dataset.ids[i]}\n{dataset.split[i]}\n{dataset.label_names[i]}" for i in indices]
    n_rows = max(1, -(-len(indices) // ncols))
    fig, axes = plt.subplots(n_rows, ncols, figsize=(1.35 * ncols, 1.75 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index, caption in zip(axes.ravel(), indices, captions):
        ax.imshow(dataset.images[index], cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=5.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

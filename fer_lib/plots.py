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


def learning_curves(histories: dict[str, list[dict]], title: str = "Learning curves"):
    """Training and validation loss and accuracy per epoch, one colour per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for index, (name, history) in enumerate(histories.items()):
        table = pd.DataFrame(history)
        if table.empty:
            continue
        epochs = np.arange(1, len(table) + 1)
        colour = f"C{index}"
        for ax, metric in zip(axes, ("loss", "accuracy")):
            ax.plot(epochs, table[metric], color=colour, linestyle="--", alpha=0.6)
            ax.plot(epochs, table[f"val_{metric}"], color=colour, label=name)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
    axes[1].legend(fontsize=7, title="solid: validation, dashed: training", title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrices(records: dict[str, dict], ncols: int = 3):
    """Row-normalised confusion matrices (recall on the diagonal) from results records."""
    import seaborn as sns

    nrows = int(np.ceil(len(records) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    for ax, (name, record) in zip(axes.flat, records.items()):
        cm = np.asarray(record["confusion"], dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        sns.heatmap(cm, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=record["class_order"], yticklabels=record["class_order"], annot_kws={"size": 7})
        ax.set_title(f"{name}: accuracy {record['accuracy']:.3f}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    for ax in list(axes.flat)[len(records):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def heatmap_gallery(images, heatmaps, labels, predictions, class_names, per_class: int = 6,
                    mean_maps: np.ndarray | None = None, title: str | None = None):
    """One row per class: ``per_class`` faces with their Grad-CAM overlaid (titled with the prediction),
    and, when given, the class's mean map in the last column."""
    images, heatmaps = np.asarray(images), np.asarray(heatmaps)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    ncols = per_class + (mean_maps is not None)
    fig, axes = plt.subplots(len(class_names), ncols, figsize=(1.3 * ncols, 1.4 * len(class_names)), squeeze=False)
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(members):
                index = members[col]
                ax.imshow(images[index].squeeze(), cmap="gray", vmin=0, vmax=255)
                ax.imshow(heatmaps[index], cmap="jet", alpha=0.4, vmin=0, vmax=1)
                ax.set_title(f"→ {class_names[predictions[index]]}", fontsize=6,
                             color="black" if predictions[index] == row else "red")
        axes[row, 0].text(-4, 24, name, ha="right", va="center", fontsize=8)
        if mean_maps is not None:
            ax = axes[row, -1]
            ax.imshow(mean_maps[row], cmap="jet", vmin=0, vmax=1)
            ax.set_title("mean map", fontsize=6)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def landmark_overlay(images, points, captions, ncols: int = 6, title: str | None = None, size: float = 2.0):
    """Faces with their MediaPipe landmarks (image pixels) drawn on top, for checking the extraction."""
    n_rows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(n_rows, ncols, figsize=(size * ncols, (size + 0.3) * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, cloud, caption in zip(axes.ravel(), images, points, captions):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.scatter(cloud[:, 0] - 0.5, cloud[:, 1] - 0.5, s=0.4, c=cloud[:, 2], cmap="coolwarm")  # pixel centres at .5
        ax.set_title(caption, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def voxel_projections(grids: dict[str, np.ndarray], title: str | None = None):
    """One face's voxel grids (name -> (k, k, k), indexed [x, y, z]) as maximum projections onto the
    three planes: what a 3D-CNN gets to see, flattened for the eye."""
    planes = {"front (x–y)": 2, "side (z–y)": 0, "top (x–z)": 1}
    fig, axes = plt.subplots(len(grids), len(planes), figsize=(2.4 * len(planes), 2.4 * len(grids)), squeeze=False)
    for row, (name, grid) in enumerate(grids.items()):
        for col, (plane, axis) in enumerate(planes.items()):
            image = np.asarray(grid, dtype=float).max(axis=axis)
            # picture rows: y for the front and side views (image y points down), z for the top view
            image = image if axis == 0 else image.T
            axes[row, col].imshow(image, cmap="magma", interpolation="nearest")
            axes[row, col].set_title(f"{name}: {plane}", fontsize=7)
            axes[row, col].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def mesh_overlay(images, points, edges, captions, title: str | None = None, size: float = 3.0):
    """Faces with their mesh drawn on top: ``edges`` (E, 2) vertex pairs of ``points`` (N, V, 3) pixels."""
    from matplotlib.collections import LineCollection

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.4), squeeze=False)
    for ax, image, cloud, caption in zip(axes[0], images, points, captions):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        segments = cloud[:, :2][np.asarray(edges)] - 0.5  # pixel centres at .5
        ax.add_collection(LineCollection(segments, linewidths=0.3, colors="cyan", alpha=0.8))
        ax.set_title(caption, fontsize=7)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def blendshape_scores(scores, table: pd.DataFrame, threshold: float, sample: int = 2000, seed: int = 0):
    """The scores of every blendshape (a sample of faces, one dot each), ordered by how many faces
    exceed ``threshold``; kept blendshapes (``table.kept``, see ``blendshapes.relevance``) in colour."""
    scores = np.asarray(scores)
    rng = np.random.default_rng(seed)
    shown = scores[rng.choice(len(scores), size=min(sample, len(scores)), replace=False)]
    order = np.argsort(-table.iloc[:, 1].to_numpy(), kind="stable")
    fig, ax = plt.subplots(figsize=(13, 4.5))
    for position, column in enumerate(order):
        kept = bool(table["kept"].iloc[column])
        ax.scatter(position + rng.uniform(-0.3, 0.3, len(shown)), shown[:, column], s=1.5, alpha=0.25,
                   color="tab:blue" if kept else "tab:grey", rasterized=True)
    ax.axhline(threshold, color="tab:red", lw=1, ls="--", label=f"threshold {threshold}")
    ax.set_xticks(range(len(order)), table["blendshape"].to_numpy()[order], rotation=90, fontsize=7)
    ax.set_ylabel("score")
    ax.set_title(f"52 blendshape scores of {len(shown)} training faces; blue: kept ({int(table['kept'].sum())}), "
                 f"grey: dropped", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def stream_traces(probabilities: dict[str, np.ndarray], class_names, true_labels, title: str | None = None):
    """One stream's class probabilities per frame for each model (rows), with the true class shaded."""
    n = len(probabilities)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.6 * n), sharex=True, squeeze=False)
    for ax, (name, p) in zip(axes[:, 0], probabilities.items()):
        for c, cls in enumerate(class_names):
            ax.plot(p[:, c], label=cls, lw=1.2)
        for t, label in enumerate(true_labels):
            ax.axvspan(t - 0.5, t + 0.5, color=f"C{label}", alpha=0.08, lw=0)
        ax.set_ylim(0, 1)
        ax.set_ylabel(name, fontsize=8)
    axes[0, 0].legend(fontsize=7, ncol=len(class_names), loc="upper right")
    axes[-1, 0].set_xlabel("frame (background: true class)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

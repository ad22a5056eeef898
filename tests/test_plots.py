"""Figures: one panel per thing they claim to show, built from real sample data and records."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from fer_lib import evaluate, plots  # noqa: E402


def test_confusion_matrices_are_row_normalised_one_panel_per_record(fer_sample):
    y = fer_sample.labels
    records = {"perfect": evaluate(y, y, fer_sample.class_names, n_boot=0),
               "shifted": evaluate(y, (y + 1) % 7, fer_sample.class_names, n_boot=0)}
    fig = plots.confusion_matrices(records, ncols=2)
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 2
    perfect = axes[0].collections[0].get_array().reshape(7, 7)
    np.testing.assert_allclose(perfect, np.eye(7))
    assert "accuracy 1.000" in axes[0].get_title() and "accuracy 0.000" in axes[1].get_title()


def test_heatmap_gallery_shows_each_class_row_and_marks_wrong_predictions(fer_sample):
    faces = fer_sample.stratified_subset(2, splits=("Training",))
    heat = np.random.default_rng(0).random((len(faces), 48, 48))
    predictions = faces.labels.copy()
    predictions[0] = (predictions[0] + 1) % 7
    fig = plots.heatmap_gallery(faces.images, heat, faces.labels, predictions, faces.class_names,
                                per_class=2, mean_maps=np.zeros((7, 48, 48)))
    assert len(fig.axes) == 7 * 3
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title().startswith("→")]
    assert len(colours) == len(faces) and colours.count("red") == 1


def test_learning_curves_plot_training_and_validation_per_model():
    history = [{"loss": 2 - e / 10, "val_loss": 2.1 - e / 10, "accuracy": e / 10, "val_accuracy": e / 11}
               for e in range(4)]
    fig = plots.learning_curves({"a": history, "b": history[:2]})
    loss_axis = fig.axes[0]
    assert len(loss_axis.lines) == 4 and len(loss_axis.lines[0].get_xdata()) == 4


def test_voxel_projections_show_the_occupied_cells_of_each_view():
    grid = np.zeros((8, 8, 8))
    grid[1, 5, 6] = 1  # x=1, y=5, z=6
    fig = plots.voxel_projections({"one cell": grid})
    front, side, top = (ax.images[0].get_array() for ax in fig.axes)
    # front view: rows y, columns x; side view: rows y, columns z; top view: rows z, columns x
    assert np.argwhere(front).tolist() == [[5, 1]]
    assert np.argwhere(side).tolist() == [[5, 6]]
    assert np.argwhere(top).tolist() == [[6, 1]]


def test_mesh_and_landmark_overlays_draw_every_edge_and_point(fer_sample):
    points = np.random.default_rng(0).uniform(5, 40, size=(2, 10, 3))
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    fig = plots.mesh_overlay(fer_sample.images[:2], points, edges, ["a", "b"])
    assert [len(ax.collections[0].get_segments()) for ax in fig.axes] == [3, 3]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_segments()[0], points[0, [0, 1], :2] - 0.5)
    fig = plots.landmark_overlay(fer_sample.images[:2], points, ["a", "b"], ncols=2)
    assert [len(ax.collections[0].get_offsets()) for ax in fig.axes] == [10, 10]

"""Capsule layers (Sabour, Frosst and Hinton, 2017: "Dynamic routing between capsules") as Keras 3 layers.

A capsule is a vector whose length says how likely an entity is present and whose direction describes
it. :class:`Squash` keeps lengths in [0, 1); :class:`ClassCapsules` lets every lower capsule predict each
class capsule through its own weight matrix and routes those predictions by agreement for
``routings`` iterations; :class:`CapsuleLength` turns class capsules into class scores, which the
margin loss (:func:`fer_lib.layers.margin_loss`) trains. All three save and load with the model.
"""
from __future__ import annotations

import keras
from keras import ops


def squash(vectors, axis: int = -1, epsilon: float = 1e-7):
    """v · |v|² / (1 + |v|²) / |v|: the direction kept, the length squeezed into [0, 1)."""
    squared = ops.sum(ops.square(vectors), axis=axis, keepdims=True)
    return vectors * squared / (1.0 + squared) / ops.sqrt(squared + epsilon)


@keras.saving.register_keras_serializable(package="fer_lib")
class Squash(keras.layers.Layer):
    """The squashing non-linearity over the last axis (capsule vectors)."""

    def call(self, inputs):
        return squash(inputs)


@keras.saving.register_keras_serializable(package="fer_lib")
class ClassCapsules(keras.layers.Layer):
    """``n_classes`` capsules of ``dim`` from (batch, n_in, d_in) lower capsules by dynamic routing.

    Each lower capsule i predicts class capsule j as û_j|i = W_ij u_i; coupling coefficients
    c_ij = softmax_j(b_ij) start uniform, and each of the ``routings`` iterations raises b_ij by the
    agreement û_j|i · v_j with the current output v_j = squash(Σ_i c_ij û_j|i).
    """

    def __init__(self, n_classes: int, dim: int = 16, routings: int = 3, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if routings < 1:
            raise ValueError(f"routings must be at least 1, got {routings}")
        self.n_classes, self.dim, self.routings = n_classes, dim, routings
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        n_in, d_in = input_shape[-2], input_shape[-1]
        if n_in is None or d_in is None:
            raise ValueError(f"ClassCapsules needs a known number and size of input capsules, got {input_shape}")
        self.kernel = self.add_weight(shape=(n_in, self.n_classes, self.dim, d_in), name="kernel",
                                      initializer=self.kernel_initializer)

    def call(self, inputs):
        predictions = ops.einsum("bid,ijkd->bijk", inputs, self.kernel)  # (batch, n_in, classes, dim)
        logits = ops.zeros_like(predictions[..., 0])                      # (batch, n_in, classes)
        for iteration in range(self.routings):
            coupling = ops.softmax(logits, axis=2)
            outputs = squash(ops.einsum("bij,bijk->bjk", coupling, predictions))
            if iteration < self.routings - 1:
                logits = logits + ops.einsum("bijk,bjk->bij", predictions, outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_classes, self.dim)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "dim": self.dim, "routings": self.routings,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="fer_lib")
class CapsuleLength(keras.layers.Layer):
    """(batch, classes, dim) capsules → (batch, classes) lengths: the class scores (each in [0, 1), not a
    distribution: they need not sum to 1)."""

    def call(self, inputs):
        return ops.sqrt(ops.sum(ops.square(inputs), axis=-1) + keras.backend.epsilon())

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

"""The video study's search space: its 10 searched choices (Table 2) as one frozen dataclass.

Kept apart from :mod:`fer_lib.video` (which builds the networks with Keras and reads clips with OpenCV)
so that :mod:`fer_lib.param_schema` can check a profile's video ablations against these fields and
options without importing either; :mod:`fer_lib.video` re-exports every name.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

#: the activations the study searched (video._activation builds each)
ACTIVATIONS = ("relu", "elu", "prelu", "leaky_relu", "mish")


@dataclass(frozen=True)
class VideoConfig:
    """One point of the study's search space (its Table 2), plus the fixed sizes of this book's network."""

    lookahead: bool = False
    clahe: bool = False
    normalise: bool = True
    activation: str = "relu"
    class_weighted: bool = False
    temporal_kernel: int = 3
    initializer: str = "glorot_uniform"
    pooling: str = "max"
    second_conv: bool = False
    dropout: float = 0.0

    def model_options(self) -> dict[str, Any]:
        return {"activation": self.activation, "temporal_kernel": self.temporal_kernel, "initializer": self.initializer,
                "pooling": self.pooling, "second_conv": self.second_conv, "dropout": round(float(self.dropout), 4),
                "normalise": self.normalise}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:10]


#: The study's search space (its Table 2): choice → options ("dropout": a float range).
SEARCH_SPACE: dict[str, Any] = {
    "lookahead": [True, False], "clahe": [True, False], "normalise": [True, False],
    "activation": list(ACTIVATIONS), "class_weighted": [True, False], "temporal_kernel": [1, 3, 5, 7, 9],
    "initializer": ["glorot_uniform", "glorot_normal"], "pooling": ["average", "max"],
    "second_conv": [True, False], "dropout": (0.0, 0.95),  # the study's [0, 1); a rate of 1 zeroes the layer
}


def suggest(trial) -> VideoConfig:
    """A configuration drawn by an Optuna trial from :data:`SEARCH_SPACE`."""
    values = {name: (trial.suggest_float(name, *options) if name == "dropout" else
                     trial.suggest_categorical(name, options)) for name, options in SEARCH_SPACE.items()}
    return VideoConfig(**values)


def config_from_params(values: dict[str, Any]) -> VideoConfig:
    """A :class:`VideoConfig` from a trial's ``params`` (unknown names raise)."""
    return VideoConfig(**values)

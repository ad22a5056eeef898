"""Run profiles: ``params/<profile>.yml`` says how much data and compute each chapter uses.

A profile file has top-level keys shared by every chapter (``data_dir``, ``seed``, ...) and a
``chapters:`` section with one block per chapter. :func:`load_params` merges the two for a chapter,
then applies the notebook's own overrides (papermill ``-p`` values), so the same chapter runs as a
seconds-long smoke test, on the embedded sample, or as the full experiment.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import yaml

from .paths import repo_root

PROFILES = ("smoke", "sample", "full")
DEFAULT_PROFILE = "sample"


class Params(Mapping):
    """Read-only chapter parameters with attribute access (``P.seed``) and a readable repr."""

    def __init__(self, values: dict[str, Any]):
        self._values = MappingProxyType(dict(values))

    def __getitem__(self, key):
        return self._values[key]

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no parameter {key!r}; parameters are {sorted(self._values)}") from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return "\n".join(f"{k:>20}: {v!r}" for k, v in self._values.items())


def profile_path(profile: str):
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {PROFILES} (params/<profile>.yml)")
    return repo_root() / "params" / f"{profile}.yml"


def load_profile(profile: str) -> dict[str, Any]:
    with open(profile_path(profile)) as handle:
        values = yaml.safe_load(handle) or {}
    if values.get("profile", profile) != profile:
        raise ValueError(f"params/{profile}.yml says profile: {values['profile']!r}")
    return values


def load_params(profile: str = DEFAULT_PROFILE, chapter: str | None = None, **overrides) -> Params:
    """Parameters for ``chapter`` under ``profile``; ``overrides`` whose value is not None win.

    Overrides let a notebook's papermill parameters (``-p data_dir /my/fer2013``) replace the
    profile's values without editing the profile file.
    """
    values = load_profile(profile)
    chapters = values.pop("chapters", {}) or {}
    merged = {**values, "profile": profile}
    if chapter is not None:
        merged["chapter"] = chapter
        merged.update(chapters.get(chapter, {}) or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Params(merged)

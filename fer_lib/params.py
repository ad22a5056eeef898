"""Run profiles: ``params/<profile>.yml`` says how much data and compute each chapter uses.

A profile file has top-level keys shared by every chapter (``data_dir``, ``seed``, ...) and a
``chapters:`` section with one block per chapter. :func:`load_params` merges the two for a chapter,
then applies the notebook's own overrides (papermill ``-p`` values), so the same chapter runs as a
seconds-long smoke test, on the embedded sample, or as the full experiment.

Both are validated on loading against :mod:`fer_lib.param_schema` (types, required and unknown keys);
a problem raises :class:`ParamsError` naming the file, chapter, field, value and expected type, before
the chapter computes anything. The values themselves are returned exactly as the YAML gives them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import yaml

from .paths import repo_root

PROFILES = ("smoke", "sample", "full")
DEFAULT_PROFILE = "sample"


class ParamsError(ValueError):
    """A profile file (or a chapter's override) that does not fit its schema; the message names the file,
    the chapter, each field, its value and what was expected."""


class ProfileLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers with an exponent as floats, as YAML 1.2 does.

    PyYAML implements YAML 1.1, whose floats need a dot and a signed exponent: ``1e-3``, ``5e4`` and
    ``1.0e3`` come back as *strings*, which pass every check until Keras builds the optimizer. One extra
    implicit resolver fixes that class of value everywhere in a profile (free-form builder options and
    search spaces included) instead of coercing field by field. Only scalars with an exponent are
    affected, so every value the 1.1 rules already read keeps its type (tests/test_params_schema.py
    checks the committed profiles load identically with ``yaml.safe_load``)."""


ProfileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def read_yaml(text_or_stream) -> Any:
    """YAML as a profile is read (:class:`ProfileLoader`): ``1e-3`` is a float."""
    return yaml.load(text_or_stream, Loader=ProfileLoader)  # noqa: S506 - a SafeLoader subclass


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
    """A profile file as written, its top level checked (``param_schema.ProfileFile``) and its chapter
    blocks' names checked against the book's chapters."""
    from . import param_schema

    with open(profile_path(profile)) as handle:
        values = read_yaml(handle) or {}
    where = f"params/{profile}.yml"
    if not isinstance(values, dict):
        raise ParamsError(f"{where}: the file is a {type(values).__name__}, expected a mapping of keys to values")
    if values.get("profile", profile) != profile:
        raise ParamsError(f"{where} says profile: {values['profile']!r}; it must say profile: {profile}")
    problems = _problems(param_schema.ProfileFile, values)
    unknown = sorted(set(values.get("chapters") or {}) - set(param_schema.CHAPTER_SCHEMAS))
    if unknown:
        problems.append(f"chapters: unknown chapter block(s) {unknown}; chapters are {list(param_schema.CHAPTER_SCHEMAS)}")
    if problems:
        raise ParamsError(_report(where, None, problems))
    return values


def _problems(schema, values: dict[str, Any], prefix: str = "") -> list[str]:
    """One line per problem of ``values`` against a ``param_schema`` model: field, value, expectation."""
    from pydantic import ValidationError

    try:
        schema.model_validate(values)
        return []
    except ValidationError as error:
        found: dict[str, list[str]] = {}
        shown: dict[str, Any] = {}
        for item in error.errors():
            path, value = _data_path(values, item["loc"])
            name = prefix + ".".join(map(str, path))
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "missing":
                message = "missing: this key is required"
            elif item["type"] == "extra_forbidden":
                message = f"unknown key; allowed keys are {_allowed_keys(schema, path[:-1])}"
            elif message.startswith("Input should be "):
                message = "expected " + message.removeprefix("Input should be ")
                shown[name] = value
            found.setdefault(name, [])
            if message not in found[name]:
                found[name].append(message)
        lines = []
        for name, messages in found.items():  # a union's alternatives: one line, "expected a or b"
            expected = [m.removeprefix("expected ") for m in messages if m.startswith("expected ")]
            other = [m for m in messages if not m.startswith("expected ")]
            got = f" = {shown[name]!r}" if name in shown else ""
            if expected:
                lines.append(f"{name or '(block)'}{got}: expected {' or '.join(expected)}")
            lines += [f"{name or '(block)'}: {m}" for m in other]
        return lines


def _data_path(values, loc) -> tuple[list, Any]:
    """The part of a pydantic error location that addresses ``values`` (union members' tags such as
    ``"constrained-int"`` or ``"literal['loso']"`` left out), and the value found there (None if absent)."""
    path, here, present = [], values, True
    for part in loc:
        if present and isinstance(here, dict) and part in here:
            here = here[part]
        elif present and isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            here = here[part]
        elif isinstance(part, str) and (part[:1].isupper() or any(c in part for c in "[-'")
                                        or part in ("int", "float", "str", "bool", "list", "dict", "none")):
            continue
        else:  # a missing or unknown key: named, nothing to show
            present, here = False, None
        path.append(part)
    return path, here


def _allowed_keys(schema, path) -> list[str]:
    """The keys the block at ``path`` of ``schema`` accepts (for an unknown key's message)."""
    import typing

    from pydantic import BaseModel

    def models_in(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    def descend(model, parts):
        if not parts:
            return model
        for name, info in model.model_fields.items():
            if parts[0] in (name, info.alias):
                annotation, rest = info.annotation, parts[1:]
                while True:  # through dicts and lists: their key or index is the next part
                    origin = typing.get_origin(annotation)
                    args = [a for a in typing.get_args(annotation) if a is not type(None)]
                    if origin in (dict, list) and rest:
                        annotation, rest = args[-1], rest[1:]
                    elif origin is typing.Union and len(args) == 1:
                        annotation = args[0]
                    elif origin is typing.Annotated:
                        annotation = args[0]
                    else:
                        break
                for candidate in models_in(annotation):
                    found = descend(candidate, rest)
                    if found is not None:
                        return found
        return None

    model = descend(schema, list(path))
    return sorted((info.alias or name) for name, info in model.model_fields.items()) if model else []


def _report(where: str, chapter: str | None, problems: list[str]) -> str:
    head = f"{where}" + (f", chapter {chapter}" if chapter else "")
    return (f"{head}: {len(problems)} invalid parameter(s) — fix them in {where}:\n  "
            + "\n  ".join(problems))


def load_params(profile: str = DEFAULT_PROFILE, chapter: str | None = None, **overrides) -> Params:
    """Parameters for ``chapter`` under ``profile``; ``overrides`` whose value is not None win.

    Overrides let a notebook's papermill parameters (``-p data_dir /my/fer2013``) replace the
    profile's values without editing the profile file.
    """
    from . import param_schema

    if chapter is not None and chapter not in param_schema.CHAPTER_SCHEMAS:
        raise ParamsError(f"Unknown chapter {chapter!r}; chapters are {list(param_schema.CHAPTER_SCHEMAS)} "
                          f"(each has a block under chapters: in params/<profile>.yml)")
    values = load_profile(profile)
    chapters = values.pop("chapters", {}) or {}
    given = {k: v for k, v in overrides.items() if v is not None}
    top_keys = set(param_schema.ProfileFile.model_fields) - {"chapters"}
    block = dict(chapters.get(chapter, {}) or {}) if chapter is not None else {}
    chapter_keys = set(param_schema.CHAPTER_SCHEMAS[chapter].model_fields) if chapter is not None else set()
    unknown = sorted(set(given) - top_keys - chapter_keys)
    if unknown:
        raise ParamsError(f"load_params got override(s) {unknown}, which params/{profile}.yml does not define "
                          f"for {chapter or 'its top level'}; overridable: {sorted(top_keys | chapter_keys)}")
    # the overrides are checked where they land: a top-level key in the top level, a chapter key in its block
    problems = _problems(param_schema.ProfileFile, {**values, "chapters": {}, **{k: v for k, v in given.items() if k in top_keys}})
    if chapter is not None:
        if chapter not in chapters:
            problems.append(f"chapters: no block for {chapter}; add one (see the other profiles' {chapter})")
        else:
            block.update({k: v for k, v in given.items() if k in chapter_keys and k not in top_keys})
            problems += _problems(param_schema.CHAPTER_SCHEMAS[chapter], block)
    if problems:
        raise ParamsError(_report(f"params/{profile}.yml", chapter, problems))
    merged = {**values, "profile": profile}
    if chapter is not None:
        merged["chapter"] = chapter
        merged.update(chapters.get(chapter, {}) or {})
    merged.update(given)
    return Params(merged)

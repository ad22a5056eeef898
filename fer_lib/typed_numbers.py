"""Numbers typed into a chapter's prose that its executed outputs no longer give: the stale-number check.

A chapter's narrative ("Reading the results", "What this chapter found") quotes its measurements in
typed Markdown. When the chapter is executed again — a retrained model lands on another epoch, a budget
ends elsewhere — its tables change and its prose does not. Every percentage and decimal typed into a
Markdown cell is traced to where the earlier execution (``--since REV``, a git revision) showed it: a
field of one of the chapter's records in ``results/<profile>/``, else a position in a cell's output
(same cell source, same output, same token). If no such place gives it any more, it is listed with what
those places say now. Typed 53.6 % is given by 0.5362 or 53.61, at the precision it was typed with.

    python -m fer_lib.typed_numbers book/executed/full/04_rq2_1_landmarks.ipynb --since HEAD   # exit 1 if any

Without ``--since`` it lists the typed numbers that nothing the chapter shows, records, cites from the
seeds (:mod:`fer_lib.anchors`) or sets in its parameters gives — a weaker check: a large notebook shows
so many numbers that a stale one can match another by chance. A listed number may still be right (a
difference of two shown numbers, worked out in the prose); each is named with its line for a person.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

#: a typed number: digits with an optional decimal part, then an optional per cent sign (spaces allowed)
TYPED = re.compile(r"(?<![\w.\-+/])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?%)?(?![\w.]\d)")
#: any number in an output (plain, HTML or generated Markdown), scientific notation included
SHOWN = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_INTERVAL = re.compile(r"\s*(?:CI|confidence)")
_STYLE = re.compile(r"<style.*?</style>", re.S)
_TAGS = re.compile(r"<[^>]*>")
#: Markdown that quotes no measurement: inline code, roles and links' targets, headings' numbers
_SKIP = re.compile(r"`[^`]*`|\{[a-z:]+\}`[^`]*`|\]\([^)]*\)|^#+\s*[\d.]*", re.M)


@dataclass(frozen=True)
class Typed:
    """A number typed into a Markdown cell: its text, value, decimals, whether a percentage, and where."""

    text: str
    value: Decimal
    decimals: int
    percent: bool
    cell: int
    line: str


def typed_numbers(markdown: str, cell: int = 0) -> list[Typed]:
    """The percentages and decimals of one Markdown cell (plain integers are left out: counts, epochs and
    years are too often right by construction to be worth a person's look)."""
    found = []
    for line in markdown.splitlines():
        text = _SKIP.sub(" ", line)
        for match in TYPED.finditer(text):
            whole, fraction, percent = match.group(1), match.group(2) or "", bool(match.group(3))
            if not fraction and not percent or _INTERVAL.match(text, match.end()):
                continue  # a count, an epoch, a year; or "95 % CI", the interval's name
            found.append(Typed(match.group(0).strip(), Decimal(whole.replace(",", "") + fraction),
                               len(fraction) - 1 if fraction else 0, percent, cell, line.strip()))
    return found


def _numbers_in(value: Any) -> Iterable[float]:
    """Every number in a JSON-like value or a text."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, str):
        for token in SHOWN.findall(value):
            try:
                yield float(token.replace(",", ""))
            except ValueError:
                continue
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers_in(item)


def shown_numbers(notebook: dict) -> set[float]:
    """Every number a notebook's code cells show: outputs' text, HTML and Markdown (tables, generated prose)."""
    shown: set[float] = set()
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else ():
            texts = [output.get("text", "")]
            data = output.get("data", {})
            texts += [data.get(kind, "") for kind in ("text/plain", "text/html", "text/markdown", "text/latex")]
            for text in texts:
                shown.update(_numbers_in("".join(text) if isinstance(text, list) else text))
    return shown


def _matches(typed: Typed, known: set[float]) -> bool:
    """Whether a known number, rounded as the typed one was, gives it: on the same scale, and as a
    fraction (53.6 % from 0.5362; a CI typed "75.7–78.5" after its per cent sign too); a decimal also as
    a percentage (0.52 from 52.1)."""
    value, half_step = float(typed.value), 0.5 * 10.0 ** -typed.decimals + 1e-9
    readings = [(value, half_step), (value / 100, half_step / 100)]
    if not typed.percent:
        readings.append((value * 100, half_step * 100))
    return any(abs(number - target) <= tolerance for target, tolerance in readings for number in known)


def _record_fields(folder: Path, read=None) -> dict[str, float]:
    """Every number of the records (``*.json``) in ``folder``, by ``file.key.path``; ``read(name)`` gives a
    record's text (default: the file's; a record missing there, e.g. at an older revision, is skipped)."""
    folder = Path(folder)
    read = read or (lambda name: (folder / name).read_text())
    names = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
    fields: dict[str, float] = {}

    def walk(value, where):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            fields[where] = float(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list) and len(value) <= 64:  # a CI or a few per-class values, not a history
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    for name in names:
        try:
            walk(json.loads(read(name)), name)
        except (OSError, ValueError, KeyError, subprocess.CalledProcessError):
            continue  # a record the earlier revision did not have
    return fields


def _output_tokens(notebook: dict) -> dict[tuple, float]:
    """Every number each code cell shows, by (the cell's source, its occurrence, output, kind, token):
    positions that survive a re-execution, as long as the cell and its table keep their shape."""
    tokens: dict[tuple, float] = {}
    seen: dict[str, int] = {}
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        occurrence = seen[source] = seen.get(source, -1) + 1
        for o, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            for kind in ("text/markdown", "text/html", "text/plain", "text"):
                text = data.get(kind) if kind != "text" else output.get("text")
                if text:
                    text = "".join(text) if isinstance(text, list) else text
                    if kind == "text/html":  # a Styler's table ids and CSS carry run-to-run numbers: cells only
                        text = _TAGS.sub(" ", _STYLE.sub(" ", text))
                    for t, number in enumerate(_numbers_in(text)):
                        tokens[(source, occurrence, o, kind, t)] = number
                    break
    return tokens


def _gives(typed: Typed, number: float) -> bool:
    return _matches(typed, {number})


def _markdown_numbers(notebook: dict) -> list[Typed]:
    out = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            out += typed_numbers(source, index)
    return out


@dataclass(frozen=True)
class Stale:
    """A typed number no place that gave it gives any more: where it was found, and what is there now."""

    typed: Typed
    places: tuple[str, ...]
    now: tuple[str, ...]


def stale_numbers(notebook_path: Path, since: str = "HEAD", profile: str | None = None,
                  results: Path | None = None) -> list[Stale]:
    """The typed numbers of an executed notebook that the places which gave them at git revision ``since``
    (its records' fields, else its outputs' positions, else other chapters' records) no longer give.
    ``results``: the records' folder (default ``results/<profile>/``), in the same git repository."""
    from .paths import results_dir

    notebook_path = Path(notebook_path).resolve()
    chapter, profile = notebook_path.stem, profile or notebook_path.parent.name
    folder = Path(results or results_dir(profile)).resolve()
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=notebook_path.parent,
                               capture_output=True, text=True, check=True).stdout.strip())

    def at_revision(path: Path) -> str:
        return subprocess.run(["git", "show", f"{since}:{path.relative_to(root).as_posix()}"], cwd=root,
                              capture_output=True, text=True, check=True).stdout

    try:
        old = json.loads(at_revision(notebook_path))
    except subprocess.CalledProcessError as error:
        raise FileNotFoundError(f"{notebook_path.name} is not in git revision {since!r}: {error.stderr.strip()}") from None
    new = json.loads(notebook_path.read_text())
    old_fields = _record_fields(folder, read=lambda name: at_revision(folder / name))
    new_fields = _record_fields(folder)
    own = f"{chapter}__"
    old_tokens, new_tokens = _output_tokens(old), _output_tokens(new)
    found = []
    for typed in _markdown_numbers(new):
        # where it came from: the chapter's own records, else its outputs, else another chapter's records
        for before, current, mine in ((old_fields, new_fields, True), (old_tokens, new_tokens, None),
                                      (old_fields, new_fields, False)):
            places = [key for key, number in before.items() if _gives(typed, number)
                      and (mine is None or str(key).startswith(own) == mine)]
            if places:
                break
        if not places or any(key in current and _gives(typed, current[key]) for key in places):
            continue  # nothing gave it before (see unmatched), or something still does
        found.append(Stale(typed, tuple(f"{_where(key)} = {before[key]:.4g}" for key in places[:3]),
                           tuple(f"{_where(key)} = {current[key]:.4g}" if key in current else f"{_where(key)}: gone"
                                 for key in places[:3])))
    return found


def _where(key) -> str:
    """A record field as it is; an output position as its cell's first line of code, output and token."""
    if isinstance(key, str):
        return key
    source, _, output, _, token = key
    line = next((l for l in source.splitlines() if l.strip() and not l.startswith("#")), source[:40])
    return f"the output {output} of cell {line.strip()[:50]!r}, number {token}"


def known_numbers(notebook_path: Path, profile: str | None = None) -> set[float]:
    """What a chapter's typed numbers may quote: its shown numbers, its records, the seeds', its params."""
    from . import anchors
    from .params import load_profile
    from .paths import results_dir

    notebook = json.loads(Path(notebook_path).read_text())
    known = shown_numbers(notebook)
    chapter = Path(notebook_path).stem
    profile = profile or Path(notebook_path).parent.name
    known.update(_record_fields(results_dir(profile)).values())  # every chapter's: prose compares across chapters
    known.update(_numbers_in({study: {k: v[0] for k, v in rows.items()} for study, rows in anchors.SEED_RESULTS.items()}))
    try:
        known.update(_numbers_in(load_profile(profile).get(chapter, {})))
    except (FileNotFoundError, KeyError, ValueError):
        pass
    return known


def unmatched(notebook_path: Path, profile: str | None = None) -> list[Typed]:
    """The typed numbers of an executed notebook that no known number (:func:`known_numbers`) gives."""
    notebook = json.loads(Path(notebook_path).read_text())
    known = known_numbers(notebook_path, profile)
    return [typed for typed in _markdown_numbers(notebook) if not _matches(typed, known)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lib.typed_numbers", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="executed notebooks (book/executed/<profile>/*.ipynb)")
    parser.add_argument("--since", metavar="REV", help="the git revision of the earlier execution (e.g. HEAD): "
                        "list typed numbers the places that gave them there no longer give")
    parser.add_argument("--profile", help="whose records and params (default: the notebook's folder name)")
    args = parser.parse_args(argv)
    total = 0
    for path in args.notebooks:
        if not path.is_file():
            print(f"error: {path}: no such notebook (execute the chapter first)", file=sys.stderr)
            return 2
        stale: list[Stale] = []
        try:
            stale = stale_numbers(path, args.since, args.profile) if args.since else []
            alone = [] if args.since else unmatched(path, args.profile)
        except FileNotFoundError as error:  # a chapter executed for the first time: nothing to compare with
            print(f"{path.name}: not compared ({error}); checked against itself", file=sys.stderr)
            alone = unmatched(path, args.profile)
        for item in stale:
            print(f"{path.name} cell {item.typed.cell}: {item.typed.text!r} was {'; '.join(item.places)}; now "
                  f"{'; '.join(item.now)}\n    in: {item.typed.line[:160]}")
        for typed in alone:
            print(f"{path.name} cell {typed.cell}: {typed.text!r} in: {typed.line[:160]}")
        total += len(stale) + len(alone)
    what = f"no longer given where they were at {args.since} (or, in a new chapter, given by nothing)" if args.since \
        else "that no output, record, seed or parameter of the chapter gives"
    print(f"{total} typed number(s) {what}", file=sys.stderr)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

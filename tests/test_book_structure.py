"""The rendered book's conventions, checked on the chapters' sources and their smoke executions: every
figure captioned and named once, every table titled, every cross-reference and citation resolvable."""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.py"))
ROLE = re.compile(r"\{(numref|cite:p|cite:t|cite)\}`([^`]+)`")


def figure(cell) -> dict | None:
    return (cell.metadata.get("mystnb") or {}).get("figure")


def test_figure_names_are_unique_and_every_numref_finds_its_figure_in_its_chapter():
    seen = {}
    for path in CHAPTERS:
        notebook = jupytext.read(path)
        names = [figure(c)["name"] for c in notebook.cells if figure(c)]
        for name in names:
            assert name.startswith("fig-"), f"{path.name}: figure name {name!r} should start with 'fig-'"
            assert name not in seen, f"figure name {name!r} is in {seen.get(name)} and {path.name}"
            seen[name] = path.name
        assert all(figure(c).get("caption") for c in notebook.cells if figure(c)), f"{path.name}: a figure without caption"
        text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
        for role, target in ROLE.findall(text):
            if role == "numref":
                # within the chapter: a chapter left out of a partly executed book must not break another's links
                assert target in names, f"{path.name}: {{numref}}`{target}` names no figure of this chapter"


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(), re.M))
    sources = [*CHAPTERS, ROOT / "book" / "intro.md"]
    cited = {key.strip() for path in sources for role, targets in ROLE.findall(path.read_text())
             if role.startswith("cite") for key in targets.split(",")}
    assert cited, "no citations found: the chapters cite with {cite:p}`key`"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def _code(cells) -> list[str]:
    return [c.source for c in cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def executed(profiles=("smoke", "sample")):
    """The chapters executed under these profiles whose code is the chapter's current code (stale ones are
    skipped: `make test` executes chapter 01 under smoke; `make book` executes the rest)."""
    found = []
    for profile in profiles:
        for path in CHAPTERS:
            notebook_path = ROOT / "book" / "executed" / profile / f"{path.stem}.ipynb"
            if notebook_path.is_file():
                notebook = nbformat.read(notebook_path, as_version=4)
                if _code(notebook.cells) == _code(jupytext.read(path).cells):
                    found.append(pytest.param(notebook, id=f"{profile}-{path.stem}"))
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="no current execution: make chapter CH=..."))]


@pytest.mark.parametrize("notebook", executed())
def test_executed_figures_are_captioned_one_per_cell_and_tables_titled(notebook):
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        shown = [o for o in cell.get("outputs", []) if o.output_type in ("display_data", "execute_result")]
        images = [o for o in shown if "image/png" in o.get("data", {})]
        where = f"cell {number} ({cell.source.strip().splitlines()[0][:60]!r})"
        if figure(cell):
            # MyST-NB wraps every display output of a captioned cell in the figure: one output, or labels repeat
            assert len(shown) <= 1 and len(images) == len(shown), f"{where}: a captioned cell shows {len(shown)} outputs"
        else:
            assert not images, f"{where}: {len(images)} figure(s) without a caption (mystnb metadata on its # %% line)"
        for output in shown:
            html = output.get("data", {}).get("text/html", "")
            assert "<table" not in html or "<caption" in html, f"{where}: a table without a title (Styler.set_caption)"


def _make_variable(name: str) -> list[str]:
    match = re.search(rf"^{name} := (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile defines no {name}"
    return match.group(1).split()


def test_make_test_runs_each_chapter_after_the_chapters_it_reads():
    """`make test` runs the smoke notebooks in parallel waves: a chapter that reads chapter 3's 2D
    predictions must not share chapter 3's wave, and one that reads every chapter's records or the zoo
    must come last. The calls that read them decide the wave each chapter needs."""
    waves = {name: 2 for name in _make_variable("NBVAL_WAVE2")} | {name: 3 for name in _make_variable("NBVAL_WAVE3")}
    reads = {2: ("answer_rq(", "best_record(", "versus_2d("),              # chapter 3's best 2D model
             3: ("comparison.best_models(", "load_records(", "zoo.entries(")}  # every chapter's results
    names = [path.stem for path in CHAPTERS]
    assert set(waves) <= set(names), f"Makefile waves name no chapter: {sorted(set(waves) - set(names))}"
    for path in CHAPTERS:
        source = path.read_text()
        needed = max([wave for wave, calls in reads.items() if any(call in source for call in calls)], default=1)
        assert waves.get(path.stem, 1) == needed, (
            f"{path.stem} reads what wave {needed - 1} writes: list it in NBVAL_WAVE{needed} of the Makefile"
            if needed > 1 else f"{path.stem} reads no other chapter's results: take it out of the later waves")

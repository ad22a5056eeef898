"""Execute chapters headlessly with papermill and render the executed notebooks into a Jupyter Book.

Chapters are Jupytext py:percent files ``book/NN_name.py``. Executing one converts it to a notebook,
injects ``profile`` (and any ``-p key=value``) into its ``parameters`` cell, runs it on the machine's
``python3`` kernel and writes ``book/executed/<profile>/NN_name.ipynb``. Rendering stages the book's
pages with one profile's executed notebooks in ``_build/<profile>/src`` and runs ``jupyter-book build``
there, so the sample book and the full book never mix.

    python -m fer_lib.runner execute --profile full --chapter 01_data
    python -m fer_lib.runner render --profile full
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .params import DEFAULT_PROFILE, PROFILES
from .paths import ROOT_ENV, executed_dir, repo_root


def chapters() -> list[str]:
    """Chapter names (``01_data``, ...) in reading order: every ``book/NN_*.py``."""
    return sorted(p.stem for p in (repo_root() / "book").glob("[0-9][0-9]_*.py"))


def _chapter_name(name: str) -> str:
    found = [c for c in chapters() if c == name or c.split("_", 1)[0] == name]
    if len(found) != 1:
        raise SystemExit(f"No single chapter matches {name!r}; chapters are: {', '.join(chapters())}")
    return found[0]


def execute(chapter: str, profile: str = DEFAULT_PROFILE, parameters: dict | None = None,
            kernel: str | None = None, log_output: bool = False) -> Path:
    """Run one chapter under a profile; returns the executed notebook's path."""
    import jupytext
    import papermill

    if profile not in PROFILES:
        raise SystemExit(f"Unknown profile {profile!r}; choose one of {PROFILES}")
    chapter = _chapter_name(chapter)
    root = repo_root()
    notebook = jupytext.read(root / "book" / f"{chapter}.py")
    out = executed_dir(profile) / f"{chapter}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(ROOT_ENV, str(root))  # the kernel inherits it, whatever its working dir
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ info lines out of the book
    # Figures must be captured into the notebook: a headless MPLBACKEND=Agg (CI sets it) inherited by
    # the kernel would leave only "<Figure ...>" text, so the kernel always gets the inline backend.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    started = time.perf_counter()
    papermill.execute_notebook(
        notebook, str(out),
        parameters={"profile": profile, **(parameters or {})},
        kernel_name=kernel or os.environ.get("FER_KERNEL", "python3"),
        cwd=str(root / "book"),
        progress_bar=False,
        log_output=log_output,
    )
    print(f"executed {chapter} [{profile}] in {time.perf_counter() - started:.1f} s -> {out.relative_to(root)}")
    return out


def render(profile: str = DEFAULT_PROFILE, strict: bool = False) -> Path:
    """Build the HTML book from ``profile``'s executed notebooks; returns the path of index.html.

    Chapters with no executed notebook under this profile are left out of the table of contents and
    listed, so a partly executed book still renders and says what it lacks.
    """
    root = repo_root()
    staging = root / "_build" / profile / "src"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for page in (root / "book").glob("*.md"):
        shutil.copy2(page, staging / page.name)

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    missing = []

    def available(entries):
        """Entries whose page exists: a markdown page of book/ or an executed notebook of this profile."""
        kept = []
        for entry in entries:
            name = entry["file"]
            executed = executed_dir(profile) / f"{name}.ipynb"
            if (root / "book" / f"{name}.md").is_file():
                kept.append(entry)
            elif executed.is_file():
                shutil.copy2(executed, staging / executed.name)
                kept.append(entry)
            else:
                missing.append(name)
        return kept

    if "parts" in toc:
        for part in toc["parts"]:
            part["chapters"] = available(part.get("chapters", []))
        toc["parts"] = [part for part in toc["parts"] if part["chapters"]]
    else:
        toc["chapters"] = available(toc.get("chapters", []))
    if missing:
        print(f"render [{profile}]: no executed notebook for {', '.join(missing)} "
              f"(run: make chapter CH=<name> PROFILE={profile}); left out of this book")
    (staging / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))

    config = yaml.safe_load((root / "_config.yml").read_text())
    config["title"] = f"{config.get('title', 'fer-book')} [{profile} profile]"
    (staging / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    builder = Path(sys.executable).with_name("jupyter-book")
    command = [str(builder) if builder.exists() else "jupyter-book", "build", str(staging),
               "--path-output", str(root / "_build" / profile), "--all"]
    if strict:
        command += ["-W", "--keep-going"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    index = root / "_build" / profile / "_build" / "html" / "index.html"
    print(f"rendered the {profile} book in {time.perf_counter() - started:.1f} s -> {index.relative_to(root)}")
    return index


def _parse_parameters(pairs: list[str]) -> dict:
    parameters = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p takes key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        parameters[key] = yaml.safe_load(value)  # numbers, booleans and null as YAML reads them
    return parameters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("execute", help="execute chapters with papermill")
    run.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    run.add_argument("--chapter", action="append", help="chapter name or number (repeatable; default: all)")
    run.add_argument("-p", "--parameter", action="append", default=[], help="key=value passed to the chapter")
    run.add_argument("--kernel", help="Jupyter kernel name (default $FER_KERNEL or python3)")
    run.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    book = commands.add_parser("render", help="build the HTML book from executed notebooks")
    book.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    book.add_argument("--strict", action="store_true", help="fail on Sphinx warnings")
    commands.add_parser("list", help="list the chapters in reading order")
    commands.add_parser("has-full-data", help="exit 0 if full FER2013 is at $FER_DATA_DIR (or data/), else 1")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(chapters()))
    elif args.command == "has-full-data":
        from .data import locate_fer2013

        try:
            layout, location = locate_fer2013(None)
        except FileNotFoundError:
            print("no full FER2013 at $FER_DATA_DIR or data/")
            raise SystemExit(1) from None
        print(f"full FER2013 ({layout}) at {location}")
    elif args.command == "execute":
        for chapter in args.chapter or chapters():
            execute(chapter, args.profile, _parse_parameters(args.parameter), args.kernel, args.log_output)
    else:
        render(args.profile, args.strict)


if __name__ == "__main__":
    main()

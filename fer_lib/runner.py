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
import uuid
from pathlib import Path

import yaml

from . import progress, tracking
from .params import DEFAULT_PROFILE, PROFILES, read_yaml
from .paths import ROOT_ENV, executed_dir, repo_root


def chapters() -> list[str]:
    """Chapter names (``01_data``, ...) in reading order: every ``book/NN_*.py``."""
    return sorted(p.stem for p in (repo_root() / "book").glob("[0-9][0-9]_*.py"))


def _chapter_name(name: str) -> str:
    found = [c for c in chapters() if c == name or c.split("_", 1)[0] == name]
    if len(found) != 1:
        raise SystemExit(f"No single chapter matches {name!r}; chapters are: {', '.join(chapters())}")
    return found[0]


def check_params(names: list[str], profile: str) -> None:
    """Validate the profile's parameter block of every chapter about to run (``params.load_params``), so a
    typo in chapter 9's block stops ``execute`` before chapter 1 spends its hour. Chapters without a
    schema (a test's tiny book) have no block to check."""
    from .param_schema import CHAPTER_SCHEMAS
    from .params import ParamsError, load_params

    problems = []
    for name in names:
        if name in CHAPTER_SCHEMAS:
            try:
                load_params(profile, name)
            except (ParamsError, FileNotFoundError) as error:
                problems.append(str(error))
    if problems:
        raise SystemExit("\n".join(problems))


#: ``VERBOSE=1`` (``make book VERBOSE=1``): the kernel's own output — TensorFlow's, absl's and MediaPipe's C++
#: log lines, ipykernel's start-up warnings — on the terminal instead of in ``cache/logs/<chapter>-<profile>.kernel.log``
VERBOSE_ENV = "VERBOSE"


class ChapterFailed(RuntimeError):
    """A chapter's execution failed; the message is the one line the runner prints."""


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def kernel_log_path(chapter: str, profile: str) -> Path:
    return repo_root() / "cache" / "logs" / f"{chapter}-{profile}.kernel.log"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _kernel_manager(env: dict[str, str], output, pass_fds: tuple[int, ...]):
    """A kernel manager class whose kernels get ``env`` on top of the usual environment, ``output`` (a file,
    or None: inherited) as their stdout and stderr, and the descriptors ``pass_fds``. The kernel's own
    stderr is where C++ libraries log: environment variables silence only part of it (see README)."""
    from jupyter_client.manager import AsyncKernelManager

    class ChapterKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):  # jupyter_client's hook for how kernels start
            kw["env"] = {**(kw.get("env") or os.environ), **env}
            if output is not None:
                kw["stdout"] = kw["stderr"] = output
            kw["pass_fds"] = tuple(kw.get("pass_fds", ())) + pass_fds
            await super()._async_launch_kernel(kernel_cmd, **kw)

    return ChapterKernelManager


def _chapter_notebook(chapter: str, profile: str):
    """``(chapter's full name, its notebook read from book/<chapter>.py)``, after checking the profile."""
    import jupytext

    if profile not in PROFILES:
        raise SystemExit(f"Unknown profile {profile!r}; choose one of {PROFILES}")
    chapter = _chapter_name(chapter)
    return chapter, jupytext.read(repo_root() / "book" / f"{chapter}.py")


def execute(chapter: str, profile: str = DEFAULT_PROFILE, parameters: dict | None = None,
            kernel: str | None = None, log_output: bool = False) -> Path:
    """Run one chapter under a profile; returns the executed notebook's path and prints one line: the
    chapter, its time, and whether it computed (fits, extractions, trials) or read everything from caches.

    The kernel's native output goes to ``cache/logs/<chapter>-<profile>.kernel.log`` (the terminal with
    ``VERBOSE=1``), and never into the notebook: ipykernel's capture of file-descriptor output is off, so
    only what Python code prints — results, warnings, errors — is in the cells. Progress bars
    (:mod:`fer_lib.progress`) are drawn on this process's stderr. A failing cell raises
    :class:`ChapterFailed` naming the cell and the error; papermill has saved the notebook up to it.
    """
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    chapter, notebook = _chapter_notebook(chapter, profile)
    root = repo_root()
    out = executed_dir(profile) / f"{chapter}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(ROOT_ENV, str(root))  # the kernel inherits it, whatever its working dir
    log_path = kernel_log_path(chapter, profile)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    status = log_path.with_name(f"{chapter}-{profile}.status.jsonl")
    status.unlink(missing_ok=True)
    env = {
        # Figures must be captured into the notebook: a headless MPLBACKEND=Agg (CI sets it) inherited by
        # the kernel would leave only "<Figure ...>" text, so the kernel always gets the inline backend.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        progress.STATUS_ENV: str(status),
        tracking.RUN_ENV: f"{chapter}-{profile}-{uuid.uuid4().hex[:12]}",  # one parent MLflow run per execution
    }
    quiet = not verbose()
    if quiet and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # most of TensorFlow's C++ info and warning lines: not even logged
    terminal = None
    try:
        terminal = os.dup(sys.__stderr__.fileno())  # the bars' way to this terminal, past the kernel's log
        env[progress.PROGRESS_FD_ENV] = progress.handoff(terminal)
    except (AttributeError, OSError, ValueError):  # no stderr to draw on
        pass
    if not quiet:
        log_path.unlink(missing_ok=True)  # an earlier run's log would pass for this one's
    output = open(log_path, "w") if quiet else None
    if output is not None:
        output.write(f"# kernel of {chapter} [{profile}], {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        output.flush()
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            notebook, str(out),
            parameters={"profile": profile, **(parameters or {})},
            kernel_name=kernel or os.environ.get("FER_KERNEL", "python3"),
            cwd=str(root / "book"),
            progress_bar=False,
            log_output=log_output,
            kernel_manager_class=_kernel_manager(env, output, () if terminal is None else (terminal,)),
            extra_arguments=["--IPKernelApp.capture_fd_output=False"],
        )
    except PapermillExecutionError as error:
        message = (str(error.evalue).strip().splitlines() or [""])[0]
        message = message if len(message) <= 300 else message[:297] + "..."
        raise ChapterFailed(f"FAILED {chapter} [{profile}] cell {error.exec_count}: {error.ename}"
                            f"{': ' + message if message else ''} -> {out.relative_to(root)}") from None
    except DeadKernelError:
        where = "its last output is above"
        if quiet:  # a native crash says why in its last line (e.g. absl's "F... Check failed: ...")
            output.flush()
            last = ([line for line in log_path.read_text(errors="replace").splitlines() if line.strip()] or [""])[-1]
            where = f"{log_path.relative_to(root)} ends: {last[:200]}"
        raise ChapterFailed(f"FAILED {chapter} [{profile}]: the kernel died ({where}) -> {out.relative_to(root)}") from None
    finally:
        if terminal is not None:
            os.close(terminal)
        if output is not None:
            output.close()
        notes = progress.read_notes(status)
        status.unlink(missing_ok=True)
    done = progress.summary(notes)
    print(f"{chapter} [{profile}] {_duration(time.perf_counter() - started)}, {done} -> {out.relative_to(root)}",
          flush=True)
    return out


def prepare(chapter: str, profile: str, out_dir: str | Path, parameters: dict | None = None) -> Path:
    """Write ``chapter`` as a notebook with the profile's parameters injected, *not* executed.

    ``make test`` gives these to ``pytest --nbval-lax``, which then executes each chapter once: running it
    with papermill first and letting nbval run it again cost CI a second execution of every chapter.
    """
    import papermill

    chapter, notebook = _chapter_notebook(chapter, profile)
    out = Path(out_dir) / f"{chapter}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(notebook, str(out),
                               parameters={"profile": profile, **(parameters or {})}, prepare_only=True,
                               progress_bar=False)
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
    if (root / "book" / "_static").is_dir():  # the book's own static files (favicon)
        shutil.copytree(root / "book" / "_static", staging / "_static")

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
    # the intro's results table, from this profile's records (book/intro.md includes the file)
    from .glance import at_a_glance

    pages = [entry["file"] for part in toc.get("parts", [toc]) for entry in part.get("chapters", [])]
    (staging / "at_a_glance.md").write_text(at_a_glance(profile, pages))

    config = yaml.safe_load((root / "_config.yml").read_text())
    for bibfile in config.get("bibtex_bibfiles", []):  # sphinxcontrib-bibtex reads them beside _config.yml
        shutil.copy2(root / bibfile, staging / bibfile)
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
        parameters[key] = read_yaml(value)  # numbers (1e-3 too), booleans and null as a profile reads them
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
    ready = commands.add_parser("prepare", help="write chapters as parameterised, unexecuted notebooks (for nbval)")
    ready.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    ready.add_argument("--out", required=True, help="folder for the notebooks")
    ready.add_argument("--except", dest="skip", action="append", default=[], help="chapter to leave out (repeatable)")
    ready.add_argument("-p", "--parameter", action="append", default=[], help="key=value passed to the chapter")
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
        names = [_chapter_name(name) for name in args.chapter or chapters()]  # all resolved before any runs
        check_params(names, args.profile)
        for chapter in names:
            try:
                execute(chapter, args.profile, _parse_parameters(args.parameter), args.kernel, args.log_output)
            except ChapterFailed as failure:  # one line, no traceback: the saved notebook has it
                print(failure, file=sys.stderr, flush=True)
                raise SystemExit(1) from None
    elif args.command == "prepare":
        skipped = {_chapter_name(name) for name in args.skip}
        for chapter in chapters():
            if chapter not in skipped:
                prepare(chapter, args.profile, args.out, _parse_parameters(args.parameter))
    else:
        render(args.profile, args.strict)


if __name__ == "__main__":
    main()

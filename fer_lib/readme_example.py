"""Keep the README's "Use the book's models" example true: run the command the README shows on the
committed example photo (``data/sample/example_photo.png``, :func:`fer_lib.sample.example_photo`) with
the packaged zoo, and write what it printed between the README's two markers.

    make readme-example          # python -m fer_lib.readme_example [--readme README.md]

Run it after the full profile's chapters have exported the zoo (``fer_lib/models/zoo``), and commit
the README with the models: the example then shows what a fresh clone prints.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .paths import repo_root
from .sample import EXAMPLE_PHOTO

#: the command the README shows (run from the book's root), and the markers around its output there
COMMAND = ("python", "-m", "fer_lib.predict", f"data/sample/{EXAMPLE_PHOTO}")
START = "<!-- readme_example: the output of the command above, written by `make readme-example` -->"
END = "<!-- end of readme_example -->"


def splice(text: str, output: str) -> str:
    """``text`` with everything between :data:`START` and :data:`END` replaced by ``output`` in a code block."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the README needs the two lines {START!r} and {END!r}, in this order, around the example's "
                         "output: put them under the command")
    return f"{text[:start + len(START)]}\n```text\n{output.rstrip()}\n```\n{text[end:]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=repo_root() / "README.md")
    args = parser.parse_args(argv)
    done = subprocess.run([sys.executable, *COMMAND[1:]], cwd=repo_root(), capture_output=True, text=True)
    if done.returncode != 0:
        print(f"error: `{' '.join(COMMAND)}` failed (exit {done.returncode}); the README is unchanged:\n{done.stderr}",
              file=sys.stderr)
        return 2
    try:
        args.readme.write_text(splice(args.readme.read_text(), done.stdout))
    except ValueError as error:
        print(f"error: {args.readme}: {error}", file=sys.stderr)
        return 2
    print(f"{args.readme}: the example's output written ({len(done.stdout.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

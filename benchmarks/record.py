"""What every benchmark script records beside its speeds, and how it reports them (imported by the
scripts in this folder: ``python benchmarks/<script>.py`` puts the folder on the path)."""
from __future__ import annotations

import json
import os
import platform


def load_average() -> float:
    """The machine's 1-minute load before a run: other work slows it, so it is recorded beside the speed."""
    return round(os.getloadavg()[0], 2)


def machine(load_before: float) -> dict:
    from fer_lib.results import cpu_description

    return {"cores": os.cpu_count(), "load_average_1min_before": load_before,
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}", "cpu": cpu_description()}


def emit(result: dict, out: str | None) -> None:
    """Print the result as one JSON line and, with ``out``, append it to that JSON-lines file."""
    print(json.dumps(result))
    if out:
        with open(out, "a") as handle:
            handle.write(json.dumps(result) + "\n")

"""Running what the bench times in processes of their own, as operators run them: each one's
seconds and its own peak RSS. The database URL goes through the environment, never the
command line, so that its password is not in any process list."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from qsnap_gui.tools.bench.strategies import URL_VARIABLE


@dataclass
class ChildRun:
    seconds: float  # the child's own timing line if it prints one, else wall time
    peak_rss_mb: float
    output: str


def run_child(args: list[str], url: str, what: str) -> ChildRun:
    """Run ``args`` with the URL in its environment; its peak RSS comes from wait4, so no
    other process is counted."""
    env = {**os.environ, URL_VARIABLE: url, "QSNAP_DATABASE_URL": url}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise RuntimeError(f"{what} failed (exit {code}): {err.read().strip()[-400:]}")
        output = out.read()
    timing = [line for line in output.splitlines() if line.startswith("seconds ")]
    seconds = float(timing[-1].split()[1]) if timing else wall
    return ChildRun(seconds, usage.ru_maxrss / 1024, output)


def strategy_command(strategy: str, band_ids: list[int]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qsnap_gui.tools.bench",
        "--strategy",
        strategy,
        *map(str, band_ids),
    ]


def qsnap_command(*args: str) -> list[str]:
    """A qsnap command line; the database comes from QSNAP_DATABASE_URL."""
    return [sys.executable, "-m", "qsnap_gui.cli", *args]


def process_start(url: str) -> float:
    """Seconds a qsnap process takes to start and exit (``qsnap --version``: its imports),
    which every command timed by wall clock includes."""
    return run_child(qsnap_command("--version"), url, "qsnap --version").seconds

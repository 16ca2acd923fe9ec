"""Printing for the command line: progress on stderr, tables and summaries on stdout."""

from __future__ import annotations

import argparse
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import datetime

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.domain.jobs import ACTIVE_STATES, BandResult, JobState, Progress
from qsnap_gui.domain.words import plural
from qsnap_gui.store.db import (
    Database,
)

Handler = Callable[[argparse.Namespace, Database], int]

# progress and log lines share stderr under one lock, so neither is written into the middle of
# the other; the progress line a terminal redraws in place is cleared before a log line and
# drawn again under it (stream id -> (stream, that line))
OUTPUT_LOCK = threading.RLock()
_drawn: dict[int, tuple[object, str]] = {}
CLEAR_LINE = "\r\033[K"


class ProgressPrinter:
    """Band progress on stderr: one redrawn line on a terminal, plain lines otherwise.

    The terminal line is drawn at most every ``REDRAW_SECONDS`` (and by ``done``); with more
    than ``BANDS_SHOWN`` bands it sums them up instead of naming each. A log (no terminal)
    names each band's running and success lines up to ``LOG_BANDS`` bands; beyond, they are
    summed up in one line at most every ``LOG_SECONDS`` (and by ``done``), while every other
    state (waiting, retrying, failed, cancelled) keeps its own line: 15,000 small bands wrote
    30,000 lines.
    """

    REDRAW_SECONDS = 0.1
    BANDS_SHOWN = 4
    LOG_BANDS = 20
    LOG_SECONDS = 5.0

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.lock = OUTPUT_LOCK
        self.state: dict[int, Progress] = {}
        self.last_step: dict[int, int] = {}
        self.drawn_at: float | None = None
        self.pending = False

    def __call__(self, p: Progress) -> None:
        with self.lock:
            self.state[p.band_id] = p
            if self.tty:
                now = time.monotonic()
                self.pending = True
                if self.drawn_at is None or now - self.drawn_at >= self.REDRAW_SECONDS:
                    self.drawn_at = now
                    self._draw()
                return
            if len(self.state) > self.LOG_BANDS and p.state in _SUMMED:
                now = time.monotonic()
                self.pending = True
                if self.drawn_at is None or now - self.drawn_at >= self.LOG_SECONDS:
                    self.drawn_at = now
                    self.pending = False
                    self.stream.write(self._summary() + "\n")
                return
            if p.state is JobState.RUNNING and p.batches and self._worth_a_line(p):
                self.stream.write(
                    f"band {p.band_id}: batch {p.batch}/{p.batches} "
                    f"({p.rows_done}/{p.rows_total} rows)\n"
                )
            elif p.state is not JobState.RUNNING:
                detail = f": {p.message}" if p.message and p.message != str(p.state) else ""
                self.stream.write(f"band {p.band_id}: {p.state}{detail}\n")

    def _draw(self) -> None:
        self.pending = False
        if len(self.state) <= self.BANDS_SHOWN:
            parts = []
            for band_id, q in sorted(self.state.items()):
                pct = 100 * q.rows_done // q.rows_total if q.rows_total else 0
                parts.append(f"band {band_id} {_bar(pct)} {pct:3d}% {q.state}")
            line = "  ".join(parts)[:200]
        else:
            line = self._summary()
        self.stream.write(CLEAR_LINE + line)
        self.stream.flush()
        _drawn[id(self.stream)] = (self.stream, line)

    def _summary(self) -> str:
        done = total = ended = 0
        for q in self.state.values():
            done += q.rows_done
            total += q.rows_total
            ended += q.state not in ACTIVE_STATES
        pct = 100 * done // total if total else 0
        return (
            f"{len(self.state):,} bands {_bar(pct)} {pct:3d}%: {ended:,} ended, "
            f"{done:,}/{total:,} rows"
        )

    def _worth_a_line(self, p: Progress) -> bool:
        """The first and last batch and every 5% between, so logs stay readable."""
        step = p.batch * 20 // p.batches
        if p.batch in (1, p.batches) or step != self.last_step.get(p.band_id):
            self.last_step[p.band_id] = step
            return True
        return False

    def done(self) -> None:
        with self.lock:
            if self.pending and self.tty:
                self._draw()
            elif self.pending:
                self.stream.write(self._summary() + "\n")
            if _drawn.pop(id(self.stream), None) is not None:
                self.stream.write("\n")


# the states a log sums up once it follows many bands
_SUMMED = frozenset({JobState.RUNNING, JobState.SUCCEEDED})


def _bar(pct: int) -> str:
    return "[" + "#" * (pct // 10) + "." * (10 - pct // 10) + "]"


def say(line: str) -> None:
    """A log line on stderr, written whole; a progress line on a terminal stays under it."""
    stream = sys.stderr
    with OUTPUT_LOCK:
        drawn = _drawn.get(id(stream))
        if drawn is None:
            stream.write(line + "\n")
        else:
            stream.write(f"{CLEAR_LINE}{line}\n{drawn[1]}")
        stream.flush()


def require_write(args: argparse.Namespace, db: Database, action: str, needed: tuple) -> None:
    """Refuse a write up front (exit 2, nothing written): read-only session or role too weak.

    With ``--engine oban`` the writes are the job rows, which oban.require checks.
    """
    if db.server_read_only:
        raise UsageError(
            f"{action} writes to the database, but the database (or session) is read-only "
            "(transaction_read_only is on: default_transaction_read_only, or a standby)"
        )
    if db.read_only:
        raise UsageError(f"{action} writes to the database: connect without --read-only")
    if getattr(args, "engine", "local") != "local":
        return
    from qsnap_gui.store.db import missing_privileges

    missing = missing_privileges(db, *needed)
    if missing:
        raise UsageError(f"{action}: your database role lacks {', '.join(missing)}")


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def display_width(text: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks and other
    zero-width characters none, so that columns line up under titles in any script."""
    if text.isascii():  # one column each: the common case, at once for thousands of rows
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def visible(text: str) -> str:
    """Control characters escaped as Python writes them (a title holding ESC[2K and CR must
    not rewrite the operator's terminal line)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch
        for ch in text
    )


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [["" if c is None else visible(str(c)) for c in row] for row in rows]
    widths = [
        max(display_width(h), *(display_width(r[i]) for r in cells)) if cells else len(h)
        for i, h in enumerate(headers)
    ]

    def line(values: list[str]) -> str:
        padded = (v + " " * (w - display_width(v)) for v, w in zip(values, widths, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, cells)])


def print_summary(results: list[BandResult]) -> int:
    failed = 0
    for r in results:
        written = plural(r.rows_written, "row")
        line = f"band {r.band_id}: {r.state}, {written} written in {r.elapsed:.2f}s"
        if r.attempts > 1:
            line += f" ({r.attempts} attempts)"
        if r.error and r.state is JobState.FAILED:
            line += f": {r.error}"
        print(line)
        failed += r.state is not JobState.SUCCEEDED
    total = plural(sum(r.rows_written for r in results), "row")
    outcome = (
        f"{len(results) - failed} of {len(results)} bands succeeded" if results else "no bands"
    )
    print(f"total: {total} written, {outcome}")
    return 1 if failed else 0

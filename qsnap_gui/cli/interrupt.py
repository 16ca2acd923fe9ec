"""Ctrl+C and SIGTERM stop the jobs, not the process: the batches in flight finish, nothing
else is written, and the command says what to run next."""

from __future__ import annotations

import signal
import threading

from qsnap_gui.cli.output import say
from qsnap_gui.domain.jobs import CancelFlag

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupts:
    """While active, SIGINT and SIGTERM set ``cancel`` (the flag the job runner watches)."""

    def __init__(self) -> None:
        self.cancel = CancelFlag()
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame) -> None:
        if self.signal is None:
            name = signal.Signals(signum).name
            say(f"qsnap: {name}: stopping after the batches in flight…")
        self.signal = signum
        self.cancel.cancel()

    def exit_code(self, next_step: str) -> int | None:
        """130 or 143 after a signal, having said what to run next; None when none came."""
        if self.signal is None:
            return None
        say(f"qsnap: interrupted; {next_step}")
        return EXIT_CODES[self.signal]
